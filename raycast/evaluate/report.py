"""``report.md`` for one run: metric tables, backtest summaries, walk-forward spread and plots.

Every input except the run directory is optional; a missing one drops its section (and its plot) rather than
failing, so a partial run (no ensemble, no walk-forward) still gets a report. Plots are drawn on standalone
``matplotlib.figure.Figure`` objects with the Agg canvas, which never touches pyplot's global backend or state,
so this is safe to call from a worker, a test or a notebook alike.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raycast.evaluate.backtest import BacktestResult, backtest_table
from raycast.evaluate.metrics import daily_ic
from raycast.evaluate.tables import format_value, markdown_table
from raycast.evaluate.walk_forward import format_folds

BASELINES = ("zero", "momentum", "ridge", "lightgbm")
"""Predictor names drawn dashed in the plots, to set them apart from the models."""

MAX_FLAGGED_ROWS = 10
"""Flagged book days listed per predictor; the rest are counted."""

PLOT_FILES = {
    "training": "training_curves.png",
    "ic": "ic_per_date.png",
    "equity": "equity_curves.png",
    "weights": "ensemble_weights.png",
    "attention": "attention_heatmap.png",
}


@dataclass
class ReportInputs:
    """Everything :func:`write_report` can show; leave a field ``None`` (or empty) to skip its section.

    - ``val_metrics`` / ``test_metrics``: :func:`~raycast.evaluate.metrics.summarize` frames
    - ``warning``: the lines of a warning box shown under the title (:func:`raycast.evaluate.sanity.warning_box`)
    - ``universe``: counts of rows per exclusion reason (:class:`raycast.evaluate.universe.Tradable` counts),
      described by ``universe_rule``
    - ``backtests``: predictor -> :class:`~raycast.evaluate.backtest.BacktestResult` (models and baselines),
      described by ``backtest_period`` (e.g. ``"test"``), ``quantile``, ``cost_bps`` and ``spread`` (in words)
    - ``cost_sensitivity``: a :func:`~raycast.evaluate.backtest.cost_sensitivity` frame
    - ``holding_bands``: a :func:`~raycast.evaluate.backtest.holding_bands` frame; ``band_choices``: the
      ensemble's band picked on a validation period and its test Sharpe, one per fold (with ``fold``) or one for a
      split (:func:`~raycast.evaluate.evaluate.band_on_validation`); ``hold_quantile``: the backtest's own band
    - ``extreme_days``: predictor -> :func:`~raycast.evaluate.backtest.extreme_days` frame, beyond
      ``flag_threshold``
    - ``baseline_training``: one row per fitted baseline (training seconds, boosting rounds)
    - ``walk_forward``: an :func:`~raycast.evaluate.walk_forward.aggregate_folds` frame
    - ``ensemble_vs_best``: a :func:`~raycast.evaluate.tables.ensemble_vs_members` frame (per fold and overall)
    - ``test_predictions``: a predictions frame; gives the rolling IC plot for ``ic_predictors`` (default: every
      float column other than ``target``)
    - ``data_range``: (first date, last date) of the data; ``splits``: name -> text, e.g.
      ``{"train": "2015-01-02 .. 2017-06-30", ...}``; ``lineage``: lines on where the rows came from (what ingest
      rejected and its history checks did, what the feature stage skipped), listed under them
    - ``canary``: one line on the planted-signal sanity check, shown verbatim
    - ``significance``: an :func:`~raycast.evaluate.significance.ic_against_noise` frame, read in words by
      ``verdict`` (:func:`~raycast.evaluate.significance.verdict` lines); ``significance_period`` names what
      was scored
    - ``training_history``: model -> list of per-epoch dicts with ``train_loss``, ``val_loss``, ``val_ic``
    - ``ensemble_weights``: frame with ``symbol``, ``date`` and ``w_<model>`` columns
    - ``attention``: a (seq, seq) attention matrix of one window, and ``attention_title`` to name it
    - ``notes``: extra markdown lines appended at the end
    """

    title: str = "raycast evaluation report"
    val_metrics: pd.DataFrame | None = None
    test_metrics: pd.DataFrame | None = None
    backtests: Mapping[str, BacktestResult] | None = None
    backtest_period: str = "test"
    quantile: float | None = None
    cost_bps: float | None = None
    spread: str | None = None
    warning: list[str] = field(default_factory=list)
    universe: Mapping[str, int] | None = None
    universe_rule: str | None = None
    cost_sensitivity: pd.DataFrame | None = None
    holding_bands: pd.DataFrame | None = None
    band_choices: Sequence[Mapping[str, Any]] = ()
    hold_quantile: float | None = None
    extreme_days: Mapping[str, pd.DataFrame] | None = None
    flag_threshold: float | None = None
    baseline_training: pd.DataFrame | None = None
    walk_forward: pd.DataFrame | None = None
    ensemble_vs_best: pd.DataFrame | None = None
    test_predictions: pd.DataFrame | None = None
    ic_predictors: Sequence[str] | None = None
    rolling_days: int = 21
    data_range: tuple[Any, Any] | None = None
    splits: Mapping[str, str] | None = None
    lineage: list[str] | None = None
    canary: str | None = None
    significance: pd.DataFrame | None = None
    verdict: list[str] = field(default_factory=list)
    significance_period: str = "test"
    training_history: Mapping[str, Sequence[Mapping[str, float]]] | None = None
    ensemble_weights: pd.DataFrame | None = None
    attention: np.ndarray | None = None
    attention_title: str = "attention weights of one window"
    baselines: Sequence[str] = BASELINES
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ plots


def _figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (9, 4.5)):
    """A standalone figure on the Agg canvas (no pyplot, so no global backend is set or needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _style(name: str, baselines: Sequence[str]) -> dict:
    return {"linestyle": "--", "linewidth": 1.0} if name in baselines else {"linewidth": 1.5}


def plot_training_curves(history: Mapping[str, Sequence[Mapping[str, float]]], path: Path) -> Path:
    """Train and validation loss (left) and validation IC (right) per epoch, one colour per model."""
    fig, axes = _figure(1, 2)
    loss_ax, ic_ax = axes[0]
    for i, (model, epochs) in enumerate(history.items()):
        color = f"C{i}"
        # histories come from JSON: keys may be missing or None on some epochs, so coerce each to float/NaN
        frame = pd.DataFrame(list(epochs)).apply(pd.to_numeric, errors="coerce").astype(float)
        x = frame["epoch"].to_numpy() if "epoch" in frame else np.arange(1, len(frame) + 1)
        if "train_loss" in frame:
            loss_ax.plot(x, frame["train_loss"].to_numpy(), color=color, linestyle="--", label=f"{model} train")
        if "val_loss" in frame:
            loss_ax.plot(x, frame["val_loss"].to_numpy(), color=color, label=f"{model} val")
        if "val_ic" in frame:
            ic_ax.plot(x, frame["val_ic"].to_numpy(), color=color, marker="o", markersize=3, label=model)
    loss_ax.set(title="loss", xlabel="epoch")
    ic_ax.set(title="validation IC", xlabel="epoch")
    ic_ax.axhline(0.0, color="grey", linewidth=0.8)
    for ax in (loss_ax, ic_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    return path


def plot_rolling_ic(
    frame: pd.DataFrame, predictors: Sequence[str], path: Path, window: int = 21, baselines=BASELINES
) -> Path:
    """The rolling ``window``-date mean of each predictor's daily IC; predictors with no IC are left out."""
    fig, axes = _figure()
    ax = axes[0][0]
    for name in predictors:
        ic = daily_ic(frame, name)
        if ic.notna().any():
            ax.plot(ic.index, ic.rolling(window, min_periods=max(1, window // 2)).mean(), label=name,
                    **_style(name, baselines))
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set(title=f"daily IC, rolling {window}-date mean", ylabel="IC")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, ncols=2)
    fig.savefig(path, dpi=100)
    return path


def plot_equity(results: Mapping[str, BacktestResult], path: Path, baselines=BASELINES) -> Path:
    """Net equity curve (cumprod of 1 + daily net return) of each predictor's long-short backtest, on a log scale.

    On a log scale equal percentage moves look equal, so a decade of compounding does not flatten the early
    years; a book that lost everything ends where its curve stops.
    """
    fig, axes = _figure()
    ax = axes[0][0]
    for name, result in results.items():
        equity = result.equity.to_numpy()
        ax.plot(result.equity.index, np.where(equity > 0, equity, np.nan), label=name, **_style(name, baselines))
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_yscale("log")
    ax.set(title="long-short equity, net of costs (log scale)", ylabel="equity")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, ncols=2)
    fig.savefig(path, dpi=100)
    return path


def plot_ensemble_weights(weights: pd.DataFrame, path: Path) -> Path:
    """Each member's ensemble weight averaged over symbols, per date."""
    cols = [c for c in weights.columns if c.startswith("w_")]
    mean = weights.groupby("date", sort=True)[cols].mean()
    fig, axes = _figure()
    ax = axes[0][0]
    for c in cols:
        ax.plot(mean.index, mean[c].to_numpy(), label=c.removeprefix("w_"))
    ax.set(title="ensemble weights, mean over symbols", ylabel="weight")
    if cols:
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    return path


def plot_attention(attention: np.ndarray, path: Path, title: str = "attention weights") -> Path:
    """A (query x key) heatmap of one window's attention matrix."""
    attention = np.asarray(attention, dtype=np.float64)
    if attention.ndim != 2:
        raise ValueError(f"attention must be a 2-D (seq, seq) array, got shape {attention.shape}")
    fig, axes = _figure(size=(5.5, 4.5))
    ax = axes[0][0]
    image = ax.imshow(attention, cmap="viridis", aspect="auto", origin="upper")
    fig.colorbar(image, ax=ax)
    ax.set(title=title, xlabel="key (day in window)", ylabel="query (day in window)")
    fig.savefig(path, dpi=100)
    return path


# --------------------------------------------------------------------------------------------- markdown


def _date_text(value: Any) -> str:
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date, np.datetime64)):
        return str(pd.Timestamp(value).date())
    return str(value)


def _float_predictors(frame: pd.DataFrame) -> list[str]:
    skip = {"symbol", "date", "target"}
    return [c for c in frame.columns if c not in skip and pd.api.types.is_float_dtype(frame[c])]


def _table_section(title: str, table: pd.DataFrame | None, caption: str) -> list[str]:
    """A titled table with the caption that says how to read it; nothing when there is no table."""
    if table is None or not len(table):
        return []
    return [title, "", markdown_table(table), "", caption, ""]


def describe_band_choices(choices: Sequence[Mapping[str, Any]]) -> list[str]:
    """The holding band a trader could have picked before each test period, and what it made there, in words."""
    if not choices:
        return []

    def one(c: Mapping[str, Any]) -> str:
        text = f"the {c['band']} book (validation Sharpe {c['val_sharpe']:.2f} after costs) had {c['test_sharpe']:.2f} "
        daily = f", the daily book {c['test_sharpe_daily']:.2f}" if c["band"] != "daily" else ""
        return text + "on the test period" + daily

    if len(choices) == 1 and "fold" not in choices[0]:
        return [f"Picked for the {choices[0]['predictor']} on the validation period, before the test period is seen: "
                f"{one(choices[0])}.", ""]  # fmt: skip
    lines = [f"Picked for the {choices[0]['predictor']} on each fold's validation period, before its test period "
             "is seen:", ""]  # fmt: skip
    return lines + [f"- fold {c['fold']}: {one(c)}" for c in choices] + [""]


def write_report(run_dir: Path, sections: ReportInputs) -> Path:
    """Write ``run_dir/report.md`` and its PNG plots next to it; return the path of ``report.md``.

    The markdown links the plots by relative file name, so the run directory can be moved or copied as a
    whole. Sections whose inputs are missing are skipped.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    s = sections
    md: list[str] = [f"# {s.title}", "", *s.warning]

    if s.data_range is not None or s.splits:
        md += ["## Data", ""]
        if s.data_range is not None:
            md += [f"Data range: {_date_text(s.data_range[0])} .. {_date_text(s.data_range[1])}", ""]
        if s.splits:
            split_table = pd.DataFrame({"period": list(s.splits.values())}, index=list(s.splits.keys()))
            split_table.index.name = "split"
            md += [markdown_table(split_table), ""]
        if s.lineage:
            md += [*(f"- {line}" for line in s.lineage), ""]
    if s.canary:
        md += [f"**Canary:** {s.canary}", ""]
    if s.significance is not None and len(s.significance):
        md += [f"## Skill against noise ({s.significance_period})", "", *s.verdict]
        md += ["", markdown_table(s.significance), ""]
        md += [
            "ic_se: standard error of the mean daily IC (Newey-West over the label's overlapping days); ic_t: "
            "ic / ic_se; ensemble - it: the ensemble's daily IC minus this predictor's, averaged over the same "
            "dates, and its t. Beyond |t| 2 a figure is distinguishable from zero.",
            "",
        ]

    if s.universe:
        counts = pd.DataFrame({"rows": list(s.universe.values())}, index=list(s.universe.keys()))
        counts.index.name = "count"
        md += ["## Tradable universe", ""]
        if s.universe_rule:
            md += [f"Metrics and backtests use tradable rows only: {s.universe_rule}.", ""]
        md += [markdown_table(counts), ""]
        md += [
            "rows: rows with a known target; price / liquidity / zero_volume / entry_volume: rows each rule "
            "excludes (a row can fail several); excluded: rows failing any rule.",
            "",
        ]

    for label, table in (("validation", s.val_metrics), ("test", s.test_metrics)):
        if table is not None and len(table):
            md += [f"## Metrics on {label}", "", markdown_table(table), ""]
    if s.val_metrics is not None or s.test_metrics is not None:
        md += [
            "mse: mean squared error; ic / rank_ic: mean daily cross-sectional Pearson / Spearman correlation "
            "of prediction and target; icir / rank_icir: mean / std of the daily IC (not annualized); "
            "direction_accuracy: sign agreement over rows where neither prediction nor target is zero; "
            "n_dates: dates with a defined IC. A dash is undefined (e.g. the IC of a constant predictor).",
            "",
        ]

    if s.walk_forward is not None and len(s.walk_forward):
        md += ["## Walk-forward (mean ± std over folds)", "", format_folds(s.walk_forward), ""]

    md += _table_section(
        "## Ensemble against its best member (test IC)",
        s.ensemble_vs_best,
        "Per fold, the best member is the member with the highest test IC in that fold, chosen in hindsight "
        "(the hardest member to beat); overall, every figure is the mean over folds and the best member the "
        "one with the highest mean.",
    )

    if s.backtests:
        in_band = s.hold_quantile is not None  # then the quantile is named with the band
        details = ", ".join(
            text
            for text in (
                f"top/bottom {format_value(s.quantile)} quantile" if s.quantile is not None and not in_band else "",
                f"{format_value(s.cost_bps)} bps cost per unit turnover" if s.cost_bps is not None else "",
                f"plus a half-spread by 20-day traded value ({s.spread})" if s.spread else "",
            )
            if text
        )
        md += [f"## Long-short backtest ({s.backtest_period})", ""]
        if in_band:
            rebalance = (f"Bought in the top/bottom {format_value(s.quantile)} quantile and held until they leave the "
                         f"top/bottom {format_value(s.hold_quantile)} (a holding band)")  # fmt: skip
        else:
            rebalance = "Daily rebalanced"
        if details:
            md += [f"{rebalance}, equal-weighted, dollar neutral; {details}.", ""]
        md += [markdown_table(backtest_table(s.backtests)), ""]
        md += [
            "annualized_return: mean daily net return x 252; sharpe: annualized_return / annualized_vol; "
            "max_drawdown: worst peak-to-trough fall of the net equity curve (a negative fraction); "
            "mean_turnover: mean daily sum of absolute weight changes (2 = opening or closing the whole book, "
            "4 = replacing it); hit_rate: share of days with a position that made money; wiped_out: the book "
            "lost everything and stopped.",
            "",
        ]
    md += _table_section(
        "### Cost sensitivity",
        s.cost_sensitivity,
        "Sharpe at flat one-way costs per unit turnover (no spread); breakeven_bps: the flat cost at which "
        "the mean daily net return is zero.",
    )
    if s.holding_bands is not None and len(s.holding_bands):
        md += _table_section(
            "### Holding band",
            s.holding_bands,
            "A name bought in the top (sold in the bottom) quantile is kept until it leaves the band's top (bottom) "
            "fraction, which trades less; daily: rebalanced to the quantile every day. Sharpe after the backtest's "
            "costs; turnover: mean daily. A band picked from this table is picked on the period it scores.",
        )
        md += describe_band_choices(s.band_choices)
    if s.extreme_days is not None:
        flagged = {k: v for k, v in s.extreme_days.items() if len(v)}
        limit = f" beyond ±{format_value(s.flag_threshold)}" if s.flag_threshold is not None else ""
        md += [f"### Book days{limit}", ""]
        if not flagged:
            md += ["None.", ""]
        for name, days in flagged.items():
            md += [f"{name}: {len(days)} day(s); the largest symbol contributions (weight x target) of each", ""]
            md += [markdown_table(days.head(MAX_FLAGGED_ROWS)), ""]
            if len(days) > MAX_FLAGGED_ROWS:
                md += [f"... and {len(days) - MAX_FLAGGED_ROWS} more.", ""]

    if s.baseline_training is not None and len(s.baseline_training):
        md += ["## Baseline training", "", markdown_table(s.baseline_training), ""]

    plots: list[tuple[str, Path]] = []
    if s.training_history:
        path = plot_training_curves(s.training_history, run_dir / PLOT_FILES["training"])
        plots.append(("Training curves", path))
    if s.test_predictions is not None and len(s.test_predictions):
        names = list(s.ic_predictors) if s.ic_predictors is not None else _float_predictors(s.test_predictions)
        path = plot_rolling_ic(s.test_predictions, names, run_dir / PLOT_FILES["ic"], s.rolling_days, s.baselines)
        plots.append((f"IC per date (rolling {s.rolling_days}-date mean)", path))
    if s.backtests:
        plots.append(("Equity curves", plot_equity(s.backtests, run_dir / PLOT_FILES["equity"], s.baselines)))
    if s.ensemble_weights is not None and len(s.ensemble_weights):
        path = plot_ensemble_weights(s.ensemble_weights, run_dir / PLOT_FILES["weights"])
        plots.append(("Ensemble weights", path))
    if s.attention is not None:
        path = plot_attention(s.attention, run_dir / PLOT_FILES["attention"], s.attention_title)
        plots.append(("Attention heatmap", path))
    if plots:
        md += ["## Plots", ""]
        for caption, path in plots:
            md += [f"### {caption}", "", f"![{caption}]({path.name})", ""]

    if s.notes:
        md += ["## Notes", "", *s.notes, ""]

    out = run_dir / "report.md"
    out.write_text("\n".join(md))
    return out
