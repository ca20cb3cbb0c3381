"""Feature drift: the population stability index (PSI) of recent feature values against the training period.

The training period's values of a feature are cut into quantile bins; PSI compares the share of recent values in
each bin with the training share: ``sum((recent - train) * ln(recent / train))``. 0 means the same distribution;
the usual reading is below 0.1 stable, 0.1-0.25 a moderate shift, above 0.25 a shift the model never saw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

MIN_SHARE = 1e-4
"""Floor on a bin's share: an empty bin would make the log infinite, while one stray value says little."""


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """PSI of ``actual`` against ``expected`` over ``bins`` quantile bins of ``expected``; NaN when either is empty.

    Non-finite values are ignored. Bins are the distinct quantile edges of ``expected``, so a feature with few
    distinct values gets fewer, wider bins rather than empty ones; values beyond the training range fall into the
    outermost bins.
    """
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    expected, actual = expected[np.isfinite(expected)], actual[np.isfinite(actual)]
    if not len(expected) or not len(actual):
        return np.nan
    inner = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
    # side="right": a value equal to an edge lands in the bin above it in both samples alike
    train_share = np.bincount(np.searchsorted(inner, expected, side="right"), minlength=len(inner) + 1) / len(expected)
    recent_share = np.bincount(np.searchsorted(inner, actual, side="right"), minlength=len(inner) + 1) / len(actual)
    train_share, recent_share = np.maximum(train_share, MIN_SHARE), np.maximum(recent_share, MIN_SHARE)
    return float(np.sum((recent_share - train_share) * np.log(recent_share / train_share)))


def _bins(expected: np.ndarray, bins: int) -> np.ndarray:
    return np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))


def window_psi_max(values: np.ndarray, dates: np.ndarray, window: int, bins: int = 10, stride: int | None = None) -> float:
    """The largest PSI that a stretch of ``window`` consecutive dates of ``values`` shows against all of them.

    This is the PSI a recent window reaches by chance: features that move slowly (a 30-day trend, a volatility)
    and symbols that move together make a few dates' rows a narrow slice of the training distribution, so a
    stationary market already shows PSIs far above the textbook 0.25 window after window. Windows start every
    ``stride`` dates (default: a quarter of ``window``); NaN when fewer than two windows fit.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    values, dates = values[finite], np.asarray(dates)[finite]
    unique = np.unique(dates)
    if len(unique) < window + 1 or not len(values):
        return np.nan
    inner = _bins(values, bins)
    cells = np.searchsorted(inner, values, side="right")
    k = len(inner) + 1
    train_share = np.maximum(np.bincount(cells, minlength=k) / len(values), MIN_SHARE)
    day = np.searchsorted(unique, dates)
    per_day = np.zeros((len(unique), k))
    np.add.at(per_day, (day, cells), 1.0)
    cumulative = np.vstack([np.zeros(k), np.cumsum(per_day, axis=0)])
    step = stride or max(1, window // 4)
    starts = np.arange(0, len(unique) - window + 1, step)
    counts = cumulative[starts + window] - cumulative[starts]
    share = np.maximum(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0), MIN_SHARE)
    return float(np.max(np.sum((share - train_share) * np.log(share / train_share), axis=1)))


def feature_psi(train: pd.DataFrame, recent: pd.DataFrame, features: Sequence[str], bins: int = 10) -> pd.Series:
    """PSI of each feature in ``features``: ``recent`` rows against ``train`` rows; a Series named ``psi``."""
    missing = [f for f in features if f not in train.columns or f not in recent.columns]
    if missing:
        raise KeyError(f"feature rows lack column(s) {missing}")
    values = {f: psi(train[f].to_numpy(), recent[f].to_numpy(), bins) for f in features}
    return pd.Series(values, name="psi", dtype=np.float64).rename_axis("feature")
