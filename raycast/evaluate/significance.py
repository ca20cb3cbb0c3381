"""Skill or noise: standard errors for the numbers a report leads with.

A mean daily IC averages one correlation per date, so its standard error comes from the spread of the daily ICs.
With a label spanning ``horizon`` days, neighbouring dates share returns and their ICs move together: the error
is then taken with Newey-West weights over ``horizon - 1`` lags (for a one-day label, the plain std / sqrt(n)).
Two predictors scored on the same dates are compared date by date, on the mean of their daily IC differences:
a day that was hard for both cancels out, so the comparison is sharper than setting two means side by side.
A Sharpe ratio's standard error over n non-overlapping periods is ``sqrt((1 + SR_p^2 / 2) / n)`` in per-period
units (Lo, 2002, for returns without serial correlation), scaled to a year like the ratio itself.

``t`` is the figure over its standard error; beyond ``T_SKILL`` (about two standard errors) a figure is called
distinguishable from zero. The report states this for the ensemble in words, so a small IC or a high Sharpe on
a few hundred dates is read as what it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from raycast.evaluate.metrics import daily_ic
from raycast.evaluate.sanity import TINY_UNIVERSE

T_SKILL = 2.0
"""|t| beyond which a figure counts as distinguishable from zero (two standard errors: about 95%)."""


def mean_and_se(series: pd.Series, lags: int = 0) -> tuple[float, float, int]:
    """Mean, its standard error (Newey-West with ``lags`` lags; plain when 0) and the count of finite values."""
    x = series.dropna().to_numpy(dtype=float)
    n = len(x)
    if n < 2:
        return (float(x.mean()) if n else math.nan), math.nan, n
    d = x - x.mean()
    var = d @ d / n
    for k in range(1, min(lags, n - 1) + 1):
        var += 2 * (1 - k / (lags + 1)) * (d[k:] @ d[:-k]) / n
    return float(x.mean()), math.sqrt(max(var, 0.0) / (n - 1)), n


def sharpe_se(sharpe: float, periods: int, periods_per_year: float) -> float:
    """Standard error of an annualized Sharpe ratio measured over ``periods`` non-overlapping periods."""
    if not (np.isfinite(sharpe) and periods > 1):
        return math.nan
    per_period = sharpe / math.sqrt(periods_per_year)
    return math.sqrt(periods_per_year) * math.sqrt((1 + per_period**2 / 2) / periods)


def ic_against_noise(
    frame: pd.DataFrame, predictors: Sequence[str], reference: str = "ensemble", horizon: int = 1
) -> pd.DataFrame:
    """Per predictor: mean daily IC, its standard error and t; and ``reference`` minus it, paired by date.

    ``frame`` is a scored period's tradable rows (``date``, ``target`` and one column per predictor). Rows follow
    ``predictors``; the paired columns are NaN on the reference's own row or when it is not in ``frame``.
    """
    daily = {name: daily_ic(frame, name) for name in predictors if name in frame}
    rows = {}
    for name, ic in daily.items():
        mean, se, n = mean_and_se(ic, horizon - 1)
        row = {"ic": mean, "ic_se": se, "ic_t": mean / se if se > 0 else math.nan, "n_dates": n}
        if reference in daily and name != reference:
            diff, diff_se, _ = mean_and_se(daily[reference] - ic, horizon - 1)
            row |= {f"{reference} - it": diff, "t of the difference": diff / diff_se if diff_se > 0 else math.nan}
        rows[name] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "predictor"
    return out


def verdict(
    table: pd.DataFrame,
    members: Sequence[str],
    baselines: Sequence[str],
    backtests: Mapping[str, Mapping[str, float]] | None = None,
    periods_per_year: float = 252.0,
    symbols_per_date: float | None = None,
    reference: str = "ensemble",
) -> list[str]:
    """The report's plain-words reading of :func:`ic_against_noise` for ``reference`` (markdown bullet lines)."""
    if reference not in table.index or not np.isfinite(table.loc[reference, "ic_t"]):
        return []
    row = table.loc[reference]
    if row["ic_t"] >= T_SKILL:
        reading = "distinguishable from no skill"
    elif row["ic_t"] <= -T_SKILL:
        reading = "**reliably negative**: it ranks the symbols against what followed"
    else:
        reading = "**not distinguishable from no skill**"
    lines = [f"- {reference}: test IC {row['ic']:.4f} ± {row['ic_se']:.4f} (one standard error), "
             f"t {row['ic_t']:.1f} over {int(row['n_dates'])} dates: {reading}."]  # fmt: skip
    scored = [m for m in members if m in table.index and m != reference]
    if scored:
        best = max(scored, key=lambda m: table.loc[m, "ic"])
        lines.append(_against(table, reference, best, f"its best member ({best})"))
    scored_baselines = [b for b in baselines if b in table.index and np.isfinite(table.loc[b, "ic"])]
    lines += [_against(table, reference, b, b) for b in scored_baselines]
    book = (backtests or {}).get(reference)
    if book is not None and np.isfinite(book.get("sharpe", np.nan)):
        se = sharpe_se(book["sharpe"], int(book.get("n_days", 0)), periods_per_year)
        lines.append(f"- {reference} long-short Sharpe {book['sharpe']:.2f} ± {se:.2f} (one standard error) over "
                     f"{int(book.get('n_days', 0))} periods.")  # fmt: skip
    if symbols_per_date is not None and symbols_per_date < TINY_UNIVERSE:
        lines.append(f"- A median of {symbols_per_date:g} tradable symbols per date: a cross-section this small makes "
                     "every IC and Sharpe above swing widely from one period to the next.")  # fmt: skip
    return lines


def _against(table: pd.DataFrame, reference: str, other: str, label: str) -> str:
    diff, t = table.loc[other, f"{reference} - it"], table.loc[other, "t of the difference"]
    if not np.isfinite(t):
        return f"- against {label}: {diff:+.4f} per date."
    if abs(t) < T_SKILL:
        reading = "within noise"
    else:
        reading = "ahead beyond noise" if diff > 0 else "behind beyond noise"
    return f"- against {label}: {diff:+.4f} per date (t {t:.1f}): {reading}."
