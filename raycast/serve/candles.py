"""A window computed from candles sent in a request, with the code and statistics training used.

The candles go through the ingest validator (``validate_bars``), the feature spec
(``compute_symbol_features``), the model's normalizer and ``cut_windows``: the same four steps a stored window
went through. Indicators such as EMAs depend on all earlier bars, so a prediction from candles equals the
stored-feature prediction for the same date only when the same history is sent.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from raycast.data.validate import validate_bars
from raycast.features.normalize import Normalizer
from raycast.features.spec import WARMUP_BARS, compute_symbol_features
from raycast.features.windows import cut_windows, window_ends
from raycast.serve.errors import RequestError

MAX_LISTED_DATES = 5  # an error lists this many offending dates, then a count


def candles_needed(window: int) -> int:
    """Candles a request must send: the indicator warm-up plus one full window."""
    return WARMUP_BARS + window


class CandleFeaturizer:
    """Turns one symbol's candles into the normalized window ending on the last candle."""

    def __init__(self, spec: dict):
        self.window = int(spec["features"]["window"])
        self.horizon = int(spec["features"]["horizon"])
        self.features = list(spec["features"]["features"])
        self.normalizer = Normalizer.from_json(spec["features"]["normalizer"])

    def warm_up(self) -> None:
        """Compile pandas-ta's numba kernels now (seconds), not on the first request."""
        n = candles_needed(self.window)
        close = 100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, n)))
        dates = pd.bdate_range("2020-01-01", periods=n)
        bars = pd.DataFrame({"symbol": "WARMUP", "date": dates, "open": close, "high": close * 1.01,
                             "low": close * 0.99, "close": close, "volume": 1e6})  # fmt: skip
        compute_symbol_features(bars, horizon=self.horizon, features=self.features)

    def window_for(self, symbol: str, candles: list[dict]) -> tuple[np.ndarray, dt.date]:
        """(window (1, window, n_features), date of the last candle); RequestError(422) naming any problem."""
        need = candles_needed(self.window)
        if len(candles) < need:
            raise RequestError(
                422,
                f"too few candles: got {len(candles)}, need at least {need} "
                f"(a {self.window}-day window plus the {WARMUP_BARS}-day indicator warm-up)",
            )
        raw = pd.DataFrame(candles)
        _check_order(raw["date"])
        raw.insert(0, "symbol", symbol)
        bars, rejected = validate_bars(raw, "request")
        if len(rejected):
            raise RequestError(422, "invalid candles: " + _describe_rejects(rejected))
        rows = compute_symbol_features(bars, horizon=self.horizon, features=self.features)
        last = pd.Timestamp(bars["date"].iloc[-1])
        if rows.empty or pd.Timestamp(rows["date"].iloc[-1]) != last:
            raise RequestError(422, f"the features for the last candle ({last.date()}) are undefined (e.g. zero volume)")
        x = self.normalizer.transform(rows[self.features].to_numpy(dtype=np.float32))
        ends = window_ends(rows["t"].to_numpy(), self.window)
        if not len(ends) or ends[-1] != len(rows) - 1:
            raise RequestError(
                422, f"fewer than {self.window} complete feature rows end on {last.date()}: send more candles"
            )
        return cut_windows(x, ends[-1:], self.window), last.date()


def _check_order(dates: pd.Series) -> None:
    """Dates strictly increasing: duplicates and out-of-order candles are errors, never silently re-sorted."""
    d = pd.to_datetime(dates).to_numpy()
    step = np.diff(d).astype("int64")
    dup, back = np.flatnonzero(step == 0) + 1, np.flatnonzero(step < 0) + 1
    problems = []
    if len(dup):
        problems.append("duplicate date(s) " + _list_dates(d[dup]))
    if len(back):
        problems.append("date(s) out of order " + _list_dates(d[back]))
    if problems:
        raise RequestError(422, "candles must have strictly increasing dates: " + "; ".join(problems))


def _describe_rejects(rejected: pd.DataFrame) -> str:
    parts = []
    for reason, group in rejected.groupby("reason", sort=True):
        parts.append(f"{reason} on " + _list_dates(pd.to_datetime(group["date"], errors="coerce").to_numpy(), raw=group["date"]))
    return "; ".join(parts)


def _list_dates(dates: np.ndarray, raw: pd.Series | None = None) -> str:
    text = [str(pd.Timestamp(d).date()) if not pd.isna(d) else str(r) for d, r in zip(dates, raw if raw is not None else dates, strict=True)]
    more = f" (+{len(text) - MAX_LISTED_DATES} more)" if len(text) > MAX_LISTED_DATES else ""
    return ", ".join(text[:MAX_LISTED_DATES]) + more
