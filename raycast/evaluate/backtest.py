"""A daily long-short quantile backtest of one predictor, with turnover and transaction costs.

Each date the symbols are ranked by prediction; the top ``quantile`` fraction is held long and the bottom
fraction short, equal-weighted, +1 long and -1 short in total (gross exposure 2, dollar neutral). The day's
gross return is ``sum(w * target)``; turnover is ``sum(|w_t - w_prev|)`` over symbols; the cost of a day is
``sum(|w_t - w_prev| * (cost_bps + spread_bps)) / 1e4``, a flat rate plus each symbol's half-spread (0 without a
spread column), and is subtracted from the gross return. A book that loses everything stops: equity never goes
below zero.

A holding band (``hold_quantile`` above ``quantile``) trades less: a name enters the long book in the top
``quantile`` and stays until it leaves the top ``hold_quantile`` (the short book likewise at the bottom), each
side equal-weighted over the names it holds. A daily book re-buys nearly the whole top fifth every day when the
signal is short-lived; a name that slipped from the top fifth to the top third still has most of its edge, and
keeping it saves two trades. :func:`holding_bands` compares bands on one period.

Simplifications, stated so nobody mistakes this for an execution simulator: weights are reset to target every
rebalance (intraday drift of the held weights is ignored in turnover), there is no borrow cost and no market
impact beyond the spread proxy, and a symbol that leaves the tradable universe is closed at its target return.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from raycast.evaluate.metrics import grouped_tie_ranks

TRADING_DAYS = 252
MIN_SYMBOLS = 2
"""Fewest symbols a date needs to hold one long and one short; dates with fewer stay flat."""

SUMMARY_KEYS = (
    "annualized_return",
    "annualized_vol",
    "sharpe",
    "max_drawdown",
    "total_return",
    "mean_turnover",
    "hit_rate",
    "n_days",
    "n_active_days",
    "wiped_out",
)


@dataclass
class BacktestResult:
    """The outcome of :func:`long_short_backtest`; all Series are indexed by rebalance date.

    ``returns`` is net of costs, ``gross`` before costs, ``turnover`` the sum of absolute weight changes on each
    date (the first date counts the opening trades from cash, so it is 2 for a full book). ``weights`` is the
    (date x symbol) weight matrix, kept for inspection and plots; ``contributions`` each symbol's weight x target
    (a row sums to ``gross``). ``summary`` holds :data:`SUMMARY_KEYS` and ``wiped_out``; ``stopped_at`` is the date
    the book lost everything, if it did.
    """

    pred_col: str
    returns: pd.Series
    gross: pd.Series
    turnover: pd.Series
    weights: pd.DataFrame
    summary: dict[str, float] = field(default_factory=dict)
    contributions: pd.DataFrame | None = None
    stopped_at: pd.Timestamp | None = None

    @property
    def equity(self) -> pd.Series:
        """Net equity curve starting from 1: ``cumprod(1 + returns)``; 0 from the day the book lost everything."""
        return (1.0 + self.returns).cumprod().rename("equity")


def _member_share(lo: np.ndarray, hi: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Share of a tie group's rank positions ``[lo, hi]`` that fall inside the slots ``[first, last]``."""
    overlap = np.minimum(hi, last) - np.maximum(lo, first) + 1
    return np.clip(overlap, 0, None) / (hi - lo + 1)


def _layout(frame: pd.DataFrame, pred_col: str) -> tuple[pd.DatetimeIndex, pd.Index, np.ndarray, np.ndarray]:
    """Predictions and targets as dense (date x symbol) arrays, NaN where a row is missing or unusable.

    Every date of the frame gets a row, even one with no usable prediction, so that a skipped date shows up as
    a flat day instead of silently vanishing from the return series.
    """
    pred = frame[pred_col].to_numpy(dtype=np.float64, na_value=np.nan)
    target = frame["target"].to_numpy(dtype=np.float64, na_value=np.nan)
    keep = np.isfinite(pred) & np.isfinite(target)  # a row without a realized return cannot be traded
    date_codes, dates = pd.factorize(pd.DatetimeIndex(frame["date"]), sort=True)
    sym_codes, symbols = pd.factorize(frame["symbol"].astype(str), sort=True)
    if pd.Series(date_codes * len(symbols) + sym_codes).duplicated().any():
        raise ValueError("predictions frame has duplicate (date, symbol) rows")
    P = np.full((len(dates), len(symbols)), np.nan)
    T = np.full_like(P, np.nan)
    P[date_codes[keep], sym_codes[keep]] = pred[keep]
    T[date_codes[keep], sym_codes[keep]] = target[keep]
    return pd.DatetimeIndex(dates, name="date"), pd.Index(symbols, name="symbol"), P, T


def _weights_from(P: np.ndarray, quantile: float) -> np.ndarray:
    """Long-short weights from a (date x symbol) prediction array (NaN = not tradable); see quantile_weights."""
    if not 0 < quantile <= 0.5:
        raise ValueError(f"quantile must be in (0, 0.5], not {quantile}")
    W = np.zeros_like(P)
    d, s = np.nonzero(np.isfinite(P))
    if len(d) == 0:
        return W
    lo, hi = grouped_tie_ranks(d, P[d, s])
    n = np.bincount(d, minlength=len(P)).astype(np.float64)[d]
    k = np.maximum(1.0, np.floor(quantile * n + 1e-9))  # 1e-9: 0.2 * 10 must give 2, not 1.9999
    w = (_member_share(lo, hi, n - k + 1, n) - _member_share(lo, hi, np.ones_like(n), k)) / k
    w[n < MIN_SYMBOLS] = 0.0
    W[d, s] = w
    return W


def _band_weights(P: np.ndarray, quantile: float, hold: float) -> np.ndarray:
    """Long-short weights with a holding band from a (date x symbol) prediction array (NaN = not tradable).

    Each date with n >= :data:`MIN_SYMBOLS` usable rows ranks them (ties by their average rank); a name enters
    the long side in the top ``max(1, floor(quantile * n))`` and stays while it is in the top
    ``max(1, floor(hold * n))``, the short side mirrored at the bottom. A name without a usable row is closed
    (it cannot be traded that day), and a date with fewer rows or an empty side closes the whole book. With
    ``hold == quantile`` and no ties this is the daily book of :func:`_weights_from`.
    """
    if not 0 < quantile <= hold <= 0.5:
        raise ValueError(f"hold_quantile must be in [quantile, 0.5] = [{quantile}, 0.5], not {hold}")
    ranks = pd.DataFrame(P).rank(axis=1, method="average").to_numpy()  # 1 = lowest; NaN stays NaN
    W = np.zeros_like(P)
    long = np.zeros(P.shape[1], dtype=bool)
    short = np.zeros_like(long)
    for t, rank in enumerate(ranks):
        usable = np.isfinite(rank)
        n = int(usable.sum())
        enter = max(1.0, np.floor(quantile * n + 1e-9))  # 1e-9 as in _weights_from
        keep = max(1.0, np.floor(hold * n + 1e-9))
        with np.errstate(invalid="ignore"):  # NaN ranks compare False: those names are closed
            long = usable & ((rank > n - enter) | (long & (rank > n - keep)))
            short = usable & ((rank <= enter) | (short & (rank <= keep)))
        if n < MIN_SYMBOLS or not long.any() or not short.any():
            long[:] = short[:] = False
            continue
        W[t, long] = 1.0 / long.sum()
        W[t, short] = -1.0 / short.sum()
    return W


def quantile_weights(frame: pd.DataFrame, pred_col: str, quantile: float) -> pd.DataFrame:
    """Long-short target weights per (date, symbol), as a date x symbol frame (0 where not held).

    Each date with n >= :data:`MIN_SYMBOLS` usable rows (finite prediction and target) holds
    ``k = max(1, floor(quantile * n))`` slots on each side. Ties are shared, not broken by row order: a group
    of tied predictions occupying rank positions lo..hi gets the fraction of those positions that lie in the
    top (bottom) k, spread evenly over its members. Without ties this is exactly +1/k for each of the top k
    and -1/k for each of the bottom k; with ties each side still sums to +1 / -1, and a date where every
    prediction is equal nets to zero weight everywhere (so the constant ``zero`` baseline never trades, rather
    than trading on row order).
    """
    dates, symbols, P, _ = _layout(frame, pred_col)
    return pd.DataFrame(_weights_from(P, quantile), index=dates, columns=symbols)


def _summary(net: pd.Series, turnover: pd.Series, active: pd.Series, periods_per_year: float) -> dict:
    """Annualized statistics of a daily net-return Series (arithmetic annualization, as Sharpe uses)."""
    n = len(net)
    mean = float(net.mean()) if n else np.nan
    std = float(net.std(ddof=1)) if n > 1 else np.nan
    ann_ret = mean * periods_per_year
    ann_vol = std * math.sqrt(periods_per_year)
    equity = np.r_[1.0, (1.0 + net.to_numpy()).cumprod()]  # the leading 1 lets a first-day loss count
    drawdown = equity / np.maximum.accumulate(equity) - 1.0
    return {
        "annualized_return": ann_ret,
        "annualized_vol": ann_vol,
        "sharpe": ann_ret / ann_vol if np.isfinite(ann_vol) and ann_vol > 0 else np.nan,
        "max_drawdown": float(drawdown.min()),  # <= 0: the worst peak-to-trough loss as a fraction
        "total_return": float(equity[-1] - 1.0),
        "mean_turnover": float(turnover.mean()) if n else np.nan,
        "hit_rate": float((net[active] > 0).mean()) if active.any() else np.nan,  # over days with a position
        "n_days": n,
        "n_active_days": int(active.sum()),
    }


@dataclass(frozen=True)
class _Book:
    """One predictor's daily target weights with the targets and half-spreads they trade at (date x symbol)."""

    pred_col: str
    dates: pd.DatetimeIndex
    symbols: pd.Index
    P: np.ndarray  # the predictions the weights came from, for another band without a second layout
    W: np.ndarray
    T: np.ndarray
    S: np.ndarray  # half-spread in bps, carried forward so closing a position that left the frame still pays one
    periods_per_year: float


def _spread_layout(
    frame: pd.DataFrame, spread_col: str | None, dates: pd.DatetimeIndex, symbols: pd.Index
) -> np.ndarray:
    S = np.zeros((len(dates), len(symbols)))
    if spread_col is None:
        return S
    # placed by index lookups, not a pivot table: this runs once per predictor and band on every evaluation
    rows = dates.get_indexer(pd.DatetimeIndex(frame["date"]))
    cols = symbols.get_indexer(frame["symbol"].astype(str))
    S = np.full((len(dates), len(symbols)), np.nan)
    S[rows, cols] = frame[spread_col].to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.DataFrame(S).ffill().bfill().fillna(0.0).to_numpy()


def _book(
    frame: pd.DataFrame,
    pred_col: str,
    quantile: float,
    horizon: int,
    spread_col: str | None,
    hold_quantile: float | None = None,
    stacklevel: int = 3,
) -> _Book:
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, not {horizon}")
    if missing := {"symbol", "date", "target", pred_col, *([spread_col] if spread_col else [])} - set(frame.columns):
        raise KeyError(f"predictions frame lacks columns {sorted(missing)}")
    if horizon > 1:
        warnings.warn(
            f"target horizon is {horizon} days: daily rebalancing would overlap returns, so the backtest "
            f"rebalances every {horizon}th date only and annualizes with {TRADING_DAYS}/{horizon} periods",
            stacklevel=stacklevel,
        )
        dates = pd.DatetimeIndex(pd.unique(frame["date"])).sort_values()[::horizon]
        frame = frame[frame["date"].isin(dates)]
    dates, symbols, P, T = _layout(frame, pred_col)
    W = _weights_from(P, quantile) if hold_quantile is None else _band_weights(P, quantile, hold_quantile)
    S = _spread_layout(frame, spread_col, dates, symbols)
    return _Book(pred_col, dates, symbols, P, W, T, S, TRADING_DAYS / horizon)


def _settle(book: _Book, cost_bps: float) -> BacktestResult:
    """Returns, turnover and costs of a book; a book whose equity reaches zero stops there (it has nothing left)."""
    if cost_bps < 0:
        raise ValueError(f"cost_bps must be >= 0, not {cost_bps}")
    W = book.W.copy()
    contributions = W * np.nan_to_num(book.T)
    gross = contributions.sum(axis=1)
    # turnover against the previous date's book, aligned on symbol; the first date trades from cash
    trades = np.abs(np.diff(W, axis=0, prepend=0.0))
    net = gross - (trades * (cost_bps + book.S)).sum(axis=1) / 1e4
    stopped_at = None
    if (wiped := np.flatnonzero(np.cumprod(np.maximum(1.0 + net, 0.0)) <= 0.0)).size:
        day = int(wiped[0])
        stopped_at = book.dates[day]
        net[day] = -1.0  # it loses what it had, no more: equity cannot go below zero
        net[day + 1 :] = gross[day + 1 :] = 0.0
        W[day + 1 :] = 0.0
        contributions[day + 1 :] = 0.0
        trades[day + 1 :] = 0.0
    index = book.dates
    turnover = pd.Series(trades.sum(axis=1), index=index, name="turnover")
    active = pd.Series(np.abs(W).sum(axis=1) > 0, index=index)
    net_series = pd.Series(net, index=index, name=book.pred_col)
    summary = _summary(net_series, turnover, active, book.periods_per_year)
    summary["wiped_out"] = stopped_at is not None
    return BacktestResult(
        book.pred_col,
        net_series,
        pd.Series(gross, index=index, name="gross"),
        turnover,
        pd.DataFrame(W, index=index, columns=book.symbols),
        summary,
        contributions=pd.DataFrame(contributions, index=index, columns=book.symbols),
        stopped_at=stopped_at,
    )


def long_short_backtest(
    frame: pd.DataFrame,
    pred_col: str,
    quantile: float = 0.2,
    cost_bps: float = 5.0,
    horizon: int = 1,
    spread_col: str | None = None,
    hold_quantile: float | None = None,
) -> BacktestResult:
    """Backtest a daily long-short quantile portfolio built from ``frame[pred_col]``; see the module doc.

    ``frame`` is a predictions frame (``symbol``, ``date``, ``target``, ``pred_col``). ``cost_bps`` is the
    one-way cost in basis points per unit of turnover. ``spread_col`` names a column of per-row half-spreads in
    bps (see :func:`raycast.evaluate.universe.spread_bps`) paid per unit of turnover on top of ``cost_bps``; a
    position closed on a date its symbol has no row pays the symbol's last known spread. Dates with fewer than two
    usable symbols hold nothing and return 0 (closing an earlier book on such a date still costs its turnover).
    A day that loses the whole book ends it: its return is -1, every later return 0 (``stopped_at``).
    ``hold_quantile`` (at least ``quantile``, at most 0.5) holds a name until it leaves that top or bottom
    fraction (see the module doc); None rebalances to the top and bottom ``quantile`` every date.

    ``horizon`` is the target horizon. With horizon h > 1, ``target`` is an h-day return, and rebalancing
    every date would stack h overlapping positions whose summed returns overstate the strategy. The backtest
    is meant for horizon 1; for h > 1 it warns and rebalances only on every h-th date (non-overlapping h-day
    holding periods), annualizing with 252 / h periods per year.
    """
    return _settle(_book(frame, pred_col, quantile, horizon, spread_col, hold_quantile), cost_bps)


def cost_sensitivity(
    frame: pd.DataFrame,
    pred_cols: list[str],
    levels_bps: list[float],
    quantile: float = 0.2,
    horizon: int = 1,
    hold_quantile: float | None = None,
) -> pd.DataFrame:
    """Sharpe of each predictor's book at flat one-way costs ``levels_bps`` (no spread), and its breakeven cost.

    ``breakeven_bps`` is the flat cost per unit of turnover at which the mean daily net return is zero: mean
    gross return over mean turnover. Below it the edge survives costs, above it costs eat it. One row per
    predictor (index ``predictor``); columns ``sharpe @ <c> bps`` for each level, then ``breakeven_bps``.
    """
    rows = {}
    for name in pred_cols:
        book = _book(frame, name, quantile, horizon, None, hold_quantile, stacklevel=2)
        row = {f"sharpe @ {c:g} bps": _settle(book, c).summary["sharpe"] for c in levels_bps}
        gross = (book.W * np.nan_to_num(book.T)).sum(axis=1)
        turnover = np.abs(np.diff(book.W, axis=0, prepend=0.0)).sum(axis=1).mean() if len(book.W) else np.nan
        row["breakeven_bps"] = gross.mean() / turnover * 1e4 if turnover > 0 else np.nan
        rows[name] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "predictor"
    return out


def holding_bands(
    frame: pd.DataFrame,
    pred_cols: list[str],
    holds: list[float],
    quantile: float = 0.2,
    cost_bps: float = 5.0,
    horizon: int = 1,
    spread_col: str | None = None,
) -> pd.DataFrame:
    """Each predictor's book after costs with the daily rebalance and with each holding band in ``holds``.

    One row per predictor (index ``predictor``); for the daily book (``quantile`` itself) and each band above
    it, ``sharpe <band>`` (after ``cost_bps`` and the spread) and ``turnover <band>`` (mean daily), where
    ``<band>`` is ``daily`` or ``hold 0.4``. Bands at or below ``quantile`` are the daily book and are skipped.
    """
    bands = [None, *sorted({h for h in holds if h > quantile})]
    rows = {}
    for name in pred_cols:
        row = {}
        daily = _book(frame, name, quantile, horizon, spread_col, stacklevel=2)
        for hold in bands:
            label = "daily" if hold is None else f"hold {hold:g}"
            book = daily if hold is None else replace(daily, W=_band_weights(daily.P, quantile, hold))
            summary = _settle(book, cost_bps).summary
            row[f"sharpe {label}"] = summary["sharpe"]
            row[f"turnover {label}"] = summary["mean_turnover"]
        rows[name] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "predictor"
    return out


def extreme_days(result: BacktestResult, threshold: float, top: int = 3) -> pd.DataFrame:
    """The dates whose net return is beyond +/- ``threshold``, with the ``top`` symbols that moved the book most.

    One row per flagged date (index ``date``): ``return`` (net) and ``symbols``, e.g. ``"XYZ +0.31, ABC -0.05"``
    (each symbol's weight x target on that date). A bad tick or an unadjusted split shows up here first.
    """
    flagged = result.returns.index[np.abs(result.returns.to_numpy()) > threshold]
    rows = []
    for date in flagged:
        contrib = result.contributions.loc[date]
        largest = contrib[contrib != 0].abs().sort_values(ascending=False).index[:top]
        rows.append({"date": date, "return": float(result.returns.loc[date]),
                     "symbols": ", ".join(f"{s} {contrib[s]:+.3g}" for s in largest)})  # fmt: skip
    return pd.DataFrame(rows, columns=["date", "return", "symbols"]).set_index("date")


def backtest_table(results: Mapping[str, BacktestResult]) -> pd.DataFrame:
    """The summaries of several backtests as one frame, one row per predictor (index ``predictor``)."""
    out = pd.DataFrame.from_dict({k: r.summary for k, r in results.items()}, orient="index")
    out = out.reindex(columns=list(SUMMARY_KEYS))
    out.index.name = "predictor"
    return out
