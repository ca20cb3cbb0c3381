"""Walk-forward aggregation: how stable is each predictor's metric across folds?

One fold's number can be luck; the spread over folds says how much. Each fold yields a summary frame (from
:func:`raycast.evaluate.metrics.summarize` or :func:`raycast.evaluate.backtest.backtest_table`): one row per
predictor, one numeric column per metric. This module reduces a list of them to mean and std per cell.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from raycast.evaluate.tables import format_value, markdown_table

DEFAULT_METRICS = ("ic", "rank_ic", "icir", "rank_icir", "direction_accuracy", "mse", "sharpe", "annualized_return")


def aggregate_folds(summaries: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Mean and sample std over folds of every numeric metric, per predictor.

    Returns one row per predictor (in order of first appearance; index ``predictor``) with columns
    ``{metric}_mean`` and ``{metric}_std`` for each metric, in the metrics' original order, and ``n_folds``
    (folds where the predictor appears). NaN values (e.g. the zero baseline's IC) are skipped, so a metric
    that is NaN in every fold stays NaN; the std of a single fold is NaN, not 0.
    """
    if not summaries:
        raise ValueError("aggregate_folds needs at least one fold summary")
    folds = [s.select_dtypes(include="number").rename_axis("predictor") for s in summaries]
    long = pd.concat(folds, keys=range(len(folds)), names=["fold", "predictor"])
    order = list(dict.fromkeys(p for f in folds for p in f.index))
    metrics = list(dict.fromkeys(c for f in folds for c in f.columns))
    grouped = long.groupby(level="predictor", sort=False)
    mean, std = grouped.mean(), grouped.std(ddof=1)
    columns = {}
    for m in metrics:
        columns[f"{m}_mean"] = mean[m]
        columns[f"{m}_std"] = std[m]
    out = pd.DataFrame(columns).reindex(order)
    out["n_folds"] = grouped.size().reindex(order).astype("int64")
    out.index.name = "predictor"
    return out


def format_folds(
    aggregated: pd.DataFrame, metrics: Sequence[str] | None = None, digits: int = 4
) -> str:
    """A markdown table of ``mean ± std`` per predictor and metric, from :func:`aggregate_folds` output.

    ``metrics`` defaults to those of :data:`DEFAULT_METRICS` present in the frame.
    """
    if metrics is None:
        metrics = [m for m in DEFAULT_METRICS if f"{m}_mean" in aggregated.columns]
    cells = {}
    for m in metrics:
        mean, std = aggregated[f"{m}_mean"], aggregated[f"{m}_std"]
        cells[m] = [
            format_value(a, digits) + ("" if not np.isfinite(b) else f" ± {format_value(b, digits)}")
            for a, b in zip(mean, std, strict=True)
        ]
    table = pd.DataFrame(cells, index=aggregated.index)
    if "n_folds" in aggregated.columns:
        table["folds"] = aggregated["n_folds"].to_numpy()
    return markdown_table(table, digits=digits)
