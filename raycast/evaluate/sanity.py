"""Numbers too good to be true: which ones, and what usually causes them.

An honest daily cross-sectional model on equities reaches a mean IC of a few hundredths and a long-short Sharpe
of one or two after costs. Far above that, the first suspects are the data and the set-up, not the model: a
label traded at the close that produced the signal (bid-ask bounce), names nobody could trade, bad ticks or
unadjusted splits, or a universe too small for a cross-section. The report puts the findings and these causes,
with this run's own figures, in a warning box at the top.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

TINY_UNIVERSE = 30
"""Fewer symbols per date than this make a noisy cross-section whose IC and Sharpe swing widely."""


@dataclass(frozen=True)
class RunContext:
    """What the warning box says about this run's set-up."""

    label_delay: int | None = None
    symbols_per_date: float | None = None  # median tradable symbols per date in the scored period
    universe: str | None = None  # the tradable-universe rule, in words
    universe_unchecked: tuple[str, ...] = ()
    flagged_days: int = 0  # book days beyond the flag threshold, over all predictors
    flag_threshold: float | None = None
    oracle_ic: float | None = None  # synthetic data: the planted signal's IC


def implausible(
    metrics: pd.DataFrame | None,
    backtests: Mapping[str, Mapping[str, float]] | None,
    max_ic: float,
    max_sharpe: float,
) -> list[str]:
    """One line per predictor and number beyond the plausible: mean IC or rank IC above ``max_ic``, Sharpe above
    ``max_sharpe``, or a book that lost everything. ``metrics`` is a summarize frame, ``backtests`` summaries."""
    found = []
    if metrics is not None:
        for name, row in metrics.iterrows():
            for key, label in (("ic", "IC"), ("rank_ic", "rank IC")):
                value = row.get(key, np.nan)
                if np.isfinite(value) and value > max_ic:
                    found.append(f"{name}: mean daily {label} {value:.3f} (plausible: up to {max_ic:g})")
    for name, summary in (backtests or {}).items():
        sharpe = summary.get("sharpe", np.nan)
        if np.isfinite(sharpe) and sharpe > max_sharpe:
            found.append(f"{name}: backtest Sharpe {sharpe:.2f} (plausible: up to {max_sharpe:g})")
        if summary.get("wiped_out"):
            found.append(f"{name}: the long-short book lost everything and stopped")
    return found


def likely_causes(ctx: RunContext) -> list[str]:
    """The usual causes, each with what this run shows about it."""
    if ctx.label_delay is None:
        delay = "the label's delay is unknown"
    elif ctx.label_delay == 0:
        delay = "here features.label_delay is 0: the label trades the very close that produced the signal"
    else:
        delay = f"here features.label_delay is {ctx.label_delay}: the label starts {ctx.label_delay} close(s) later"
    if ctx.universe_unchecked:
        universe = f"not checked here ({', '.join(ctx.universe_unchecked)}): the feature dataset has no market columns"
    else:
        universe = f"here {ctx.universe}" if ctx.universe else "no universe rule was applied"
    ticks = (
        f"{ctx.flagged_days} book day(s) moved more than {ctx.flag_threshold:g} (listed below)"
        if ctx.flagged_days and ctx.flag_threshold
        else "no book day moved beyond the flag threshold"
    )
    size = (
        f"a median of {ctx.symbols_per_date:g} tradable symbols per date"
        if ctx.symbols_per_date is not None
        else "the universe size is unknown"
    )
    tiny = " (tiny)" if ctx.symbols_per_date is not None and ctx.symbols_per_date < TINY_UNIVERSE else ""
    causes = [
        f"**Same-close label**: bid-ask bounce in illiquid names looks like reversal skill; {delay}.",
        f"**Untradable names**: penny stocks, names that barely trade or did not trade that day; {universe}.",
        f"**Bad ticks or unadjusted splits**: one wrong price moves a whole book; {ticks}.",
        f"**A tiny universe**: a handful of names make a noisy cross-section; {size}{tiny}.",
    ]
    if ctx.oracle_ic:  # a null universe (oracle IC 0) plants nothing
        causes.append(
            f"**A planted signal**: this synthetic universe was generated with an oracle IC of {ctx.oracle_ic:.3f}; "
            "numbers near it are the generator's, not the market's."
        )
    return causes


def warning_box(findings: list[str], ctx: RunContext) -> list[str]:
    """The markdown lines of the warning box (a blockquote), or none when nothing is implausible."""
    if not findings:
        return []
    lines = ["> **Warning: too good to be true for daily equities.** An honest daily model reaches a mean IC of "
             "a few hundredths and a Sharpe of one or two after costs.", ">"]  # fmt: skip
    lines += [f"> - {f}" for f in findings]
    lines += [">", "> Likely causes:", ">"]
    lines += [f"> - {c}" for c in likely_causes(ctx)]
    return lines + [""]
