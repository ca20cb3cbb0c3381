"""Prediction quality: information coefficients per date, and one summary row per predictor.

The IC is the cross-sectional correlation of prediction and realized target on one date; a model that ranks
stocks well on every date has a high mean IC whatever the overall level of its predictions. Everything here is
vectorized over dates with integer group codes and ``np.bincount`` (500 symbols x 2,500 dates takes well under
a second per predictor) instead of a Python loop over dates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

MIN_SYMBOLS = 3
"""Fewest symbols a date needs for its IC: with two, any correlation is +-1 and says nothing."""

SUMMARY_COLUMNS = (
    "mse",
    "ic",
    "ic_std",
    "icir",
    "rank_ic",
    "rank_ic_std",
    "rank_icir",
    "direction_accuracy",
    "n_dates",
    "n_rows",
)
"""The columns of :func:`summarize`, in order."""


@dataclass(frozen=True)
class _Prepared:
    """One predictor's usable rows as arrays: date code per row (into ``dates``), prediction, target."""

    dates: pd.DatetimeIndex  # every date of the frame, sorted
    codes: np.ndarray
    pred: np.ndarray
    target: np.ndarray


def _date_codes(frame: pd.DataFrame) -> tuple[np.ndarray, pd.DatetimeIndex]:
    codes, dates = pd.factorize(pd.DatetimeIndex(frame["date"]), sort=True)
    return codes, pd.DatetimeIndex(dates, name="date")


def _prepare(frame: pd.DataFrame, pred_col: str, date_codes=None) -> _Prepared:
    """The rows where both the prediction and the target are finite (NaN or inf rows take no part).

    ``date_codes`` (from :func:`_date_codes`) can be passed in so that several predictors share one factorize.
    """
    if pred_col not in frame.columns:
        raise KeyError(f"predictions frame has no column {pred_col!r}; columns: {list(frame.columns)}")
    codes, dates = date_codes if date_codes is not None else _date_codes(frame)
    pred = frame[pred_col].to_numpy(dtype=np.float64, na_value=np.nan)
    target = frame["target"].to_numpy(dtype=np.float64, na_value=np.nan)
    keep = np.isfinite(pred) & np.isfinite(target)
    return _Prepared(dates, codes[keep], pred[keep], target[keep])


def grouped_tie_ranks(codes: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest 1-based rank of each value's tie group within its group ``codes``.

    Their mean is the "average" rank Spearman uses; the backtest uses both ends to share tied slots. Two
    argsorts over all rows replace a pandas ``groupby().rank()`` per date, which is several times slower.
    ``values`` must be finite.
    """
    n = len(values)
    # sort by (group, value) with two plain argsorts: lexsort, or a stable sort by group, is several times
    # slower. The global value rank is unique, so group * n + rank is a unique integer key.
    global_rank = np.empty(n, dtype=np.int64)
    global_rank[np.argsort(values)] = np.arange(n)
    order = np.argsort(np.asarray(codes, dtype=np.int64) * n + global_rank)
    c, v = codes[order], values[order]
    new_group = np.r_[True, c[1:] != c[:-1]]
    new_block = new_group | np.r_[True, v[1:] != v[:-1]]  # a block is a run of equal values in one group
    group_first = np.flatnonzero(new_group)
    position = np.arange(n) - group_first[np.cumsum(new_group) - 1] + 1  # 1-based position in the group
    block_starts = np.flatnonzero(new_block)
    block_id = np.cumsum(new_block) - 1
    block_lo = position[block_starts]
    block_hi = position[np.r_[block_starts[1:], n] - 1]
    lo, hi = np.empty(n, dtype=np.float64), np.empty(n, dtype=np.float64)
    lo[order], hi[order] = block_lo[block_id], block_hi[block_id]
    return lo, hi


def _constant_groups(codes: np.ndarray, n_groups: int, values: np.ndarray) -> np.ndarray:
    """True for each group whose values are all equal (max == min); empty groups count as constant."""
    constant = np.ones(n_groups, dtype=bool)
    if len(codes) == 0:
        return constant
    order = np.argsort(codes, kind="stable")
    c, v = codes[order], values[order]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    constant[c[starts]] = np.maximum.reduceat(v, starts) == np.minimum.reduceat(v, starts)
    return constant


def _grouped_corr(codes: np.ndarray, n_groups: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of ``x`` and ``y`` within each group; NaN for groups too small or constant.

    Constancy is tested exactly (max == min) rather than with a variance threshold: the mean of a constant
    column is not always bit-identical to its value, so a "zero variance" test on demeaned data can be fooled
    by rounding, while max == min cannot.
    """
    n = np.bincount(codes, minlength=n_groups).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        # demean first: sum(x*y) - n*mean_x*mean_y cancels catastrophically for returns around 1e-3
        dx = x - (np.bincount(codes, x, n_groups) / n)[codes]
        dy = y - (np.bincount(codes, y, n_groups) / n)[codes]
        sxy = np.bincount(codes, dx * dy, n_groups)
        sxx = np.bincount(codes, dx * dx, n_groups)
        syy = np.bincount(codes, dy * dy, n_groups)
        corr = sxy / np.sqrt(sxx * syy)
    constant = _constant_groups(codes, n_groups, x) | _constant_groups(codes, n_groups, y)
    corr[(n < MIN_SYMBOLS) | constant] = np.nan
    return np.clip(corr, -1.0, 1.0)  # rounding can push a perfect correlation a hair past 1


def _ic(p: _Prepared, method: str) -> pd.Series:
    """Daily IC from prepared arrays; see :func:`daily_ic`."""
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', not {method!r}")
    corr = np.full(len(p.dates), np.nan)
    if len(p.codes):
        x, y = p.pred, p.target
        if method == "spearman":
            x = np.add(*grouped_tie_ranks(p.codes, x)) / 2  # average ranks, as scipy.stats.rankdata
            y = np.add(*grouped_tie_ranks(p.codes, y)) / 2
        corr = _grouped_corr(p.codes, len(p.dates), x, y)
    return pd.Series(corr, index=p.dates, dtype=np.float64)


def daily_ic(
    frame: pd.DataFrame, pred_col: str, method: Literal["pearson", "spearman"] = "pearson"
) -> pd.Series:
    """Cross-sectional correlation of ``frame[pred_col]`` with ``frame["target"]`` on each date.

    ``method="spearman"`` ranks prediction and target within each date (average ranks for ties) and takes the
    Pearson correlation of the ranks, which is exactly Spearman's rho per date.

    Returns a float Series indexed by every date in the frame (sorted), named ``pred_col``. A date is NaN when
    it has fewer than :data:`MIN_SYMBOLS` rows with a finite prediction and target, or when either column is
    constant on it; so a constant predictor (the ``zero`` baseline) gives an all-NaN Series and a NaN mean,
    never an error. Keeping the skipped dates as NaN keeps Series of different predictors aligned for plots.
    """
    return _ic(_prepare(frame, pred_col), method).rename(pred_col)


def daily_ic_arrays(date_codes: np.ndarray, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Daily Pearson IC from plain arrays: ``date_codes`` numbers each row's date 0..n-1; one IC per code.

    For callers without a frame, such as a LightGBM evaluation callback run every boosting round.
    """
    codes = np.asarray(date_codes, dtype=np.int64)
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    keep = np.isfinite(pred) & np.isfinite(target)
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    return _grouped_corr(codes[keep], n_groups, pred[keep], target[keep])


def _mean_std_ir(ic: pd.Series) -> tuple[float, float, float]:
    """Mean, sample std and their ratio (the IR) of an IC Series, NaN where undefined."""
    ic = ic.dropna()
    mean = float(ic.mean()) if len(ic) else np.nan
    std = float(ic.std(ddof=1)) if len(ic) > 1 else np.nan
    ir = mean / std if np.isfinite(std) and std > 0 else np.nan
    return mean, std, ir


def _direction_accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    keep = (pred != 0) & (target != 0)
    if not keep.any():
        return np.nan
    return float(np.mean(np.sign(pred[keep]) == np.sign(target[keep])))


def direction_accuracy(frame: pd.DataFrame, pred_col: str) -> float:
    """Share of rows where the prediction has the sign of the target.

    Only rows where both are finite and non-zero count: a zero prediction takes no side and a zero return has
    no direction, so neither can be right or wrong. A predictor that is zero everywhere therefore scores NaN
    rather than a meaningless 0 or 0.5.
    """
    p = _prepare(frame, pred_col)
    return _direction_accuracy(p.pred, p.target)


def summarize_one(frame: pd.DataFrame, pred_col: str, date_codes=None) -> dict[str, float]:
    """One predictor's row of :func:`summarize`, as a dict keyed by :data:`SUMMARY_COLUMNS`."""
    p = _prepare(frame, pred_col, date_codes)
    ic = _ic(p, "pearson")
    ic_mean, ic_std, icir = _mean_std_ir(ic)
    ric_mean, ric_std, ric_ir = _mean_std_ir(_ic(p, "spearman"))
    err = p.pred - p.target
    return {
        "mse": float(np.mean(err * err)) if len(err) else np.nan,
        "ic": ic_mean,
        "ic_std": ic_std,
        "icir": icir,
        "rank_ic": ric_mean,
        "rank_ic_std": ric_std,
        "rank_icir": ric_ir,
        "direction_accuracy": _direction_accuracy(p.pred, p.target),
        "n_dates": int(ic.notna().sum()),  # dates that contributed an IC, not dates in the frame
        "n_rows": len(p.pred),
    }


def summarize(frame: pd.DataFrame, pred_cols: Sequence[str]) -> pd.DataFrame:
    """One row per predictor (index named ``predictor``) with the columns in :data:`SUMMARY_COLUMNS`.

    - ``mse``: mean squared error over rows with a finite prediction and target
    - ``ic`` / ``ic_std`` / ``icir``: mean, sample std and mean/std of the daily Pearson IC (the IR is per
      day, not annualized)
    - ``rank_ic`` / ``rank_ic_std`` / ``rank_icir``: the same for the daily Spearman IC
    - ``direction_accuracy``: see :func:`direction_accuracy`
    - ``n_dates``: dates with a defined IC; ``n_rows``: rows with a finite prediction and target
    """
    date_codes = _date_codes(frame)  # shared by every predictor
    rows = {col: summarize_one(frame, col, date_codes) for col in pred_cols}
    out = pd.DataFrame.from_dict(rows, orient="index", columns=list(SUMMARY_COLUMNS))
    out.index.name = "predictor"
    return out.astype({"n_dates": "int64", "n_rows": "int64"})
