"""Evaluation of predictions: metrics, a long-short backtest, baselines, walk-forward aggregation, the report.

Everything works on a *predictions frame*: one row per (symbol, date) with ``symbol``, ``date`` (the date t a
prediction is made at), ``target`` (the return realized from t to t + horizon) and one float column per
predictor. The submodules are imported explicitly (``from raycast.evaluate.metrics import summarize``); this
package imports nothing itself so that importing it never pulls in matplotlib.

- :mod:`raycast.evaluate.metrics`: daily IC, rank IC, :func:`~raycast.evaluate.metrics.summarize`
- :mod:`raycast.evaluate.backtest`: :func:`~raycast.evaluate.backtest.long_short_backtest`
- :mod:`raycast.evaluate.baselines`: zero, momentum and ridge predictors
- :mod:`raycast.evaluate.walk_forward`: mean and std of metrics over folds
- :mod:`raycast.evaluate.report`: ``report.md`` with tables and plots
- :mod:`raycast.evaluate.tables`: markdown tables without ``tabulate``
"""
