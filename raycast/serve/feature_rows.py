"""A request's model inputs: normalized feature windows, from stored feature rows or from the request's candles.

Both roads end in :func:`raycast.features.windows.cut_windows`, the function training and evaluation use, so
served inputs cannot drift from trained ones.

- :class:`StoredFeatures`: a replica loads a feature dataset the served model can be fed (its own, or a newer one
  built with the same settings: :mod:`raycast.serve.live_features`), normalizes it with the model's statistics
  (the ones training used) and keeps, per symbol, the rows that end a full window. A request for (symbol, as_of)
  is then a dict lookup and a binary search.
- :class:`CandleFeaturizer`: candles sent in a request go through the ingest validator (``validate_bars``), the
  feature spec (``compute_symbol_features``), the model's normalizer and ``cut_windows``: the same four steps a
  stored window went through. Indicators such as EMAs depend on all earlier bars, so a prediction from candles
  equals the stored-feature prediction for the same date only when the same history is sent.

Input that cannot be used raises :class:`RequestError`, which the HTTP API answers as a 4xx naming the problem.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd

from raycast import fs
from raycast.data.validate import validate_bars
from raycast.features.normalize import Normalizer
from raycast.features.spec import WARMUP_BARS, compute_symbol_features
from raycast.features.store import FeatureBlocks, read_feature_frame
from raycast.features.windows import cut_windows, window_ends
from raycast.lineage import model_features_dir


class RequestError(Exception):
    """A client error (4xx) whose message names the problem; the API turns it into ``{"detail": message}``."""

    def __init__(self, status_code: int, detail: str):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


# Stored feature rows: the model's own dataset, normalized once per replica.


class StoredFeatures:
    """Normalized feature rows and, per symbol, the rows (and dates) that end a complete window."""

    def __init__(self, frame: pd.DataFrame, normalizer: Normalizer, window: int, skipped: dict[str, str] | None = None):
        missing = [f for f in normalizer.features if f not in frame.columns]
        if missing:
            raise ValueError(f"the feature dataset lacks the model's feature(s) {missing}: rebuild features")
        blocks = FeatureBlocks(frame, normalizer, window)
        self.window = window
        self.x = blocks.x
        ends = blocks.ends(require_target=False)  # the newest rows have no target yet: they are what we predict
        symbols, dates = blocks.symbols_at(ends), blocks.dates[ends]
        # Rows are sorted by (symbol, date), so each symbol's ends form one contiguous, date-sorted run.
        starts = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]]) if len(ends) else np.empty(0, dtype=int)
        bounds = np.r_[starts, len(ends)]
        self._index: dict[str, tuple[np.ndarray, np.ndarray]] = {
            str(symbols[a]): (ends[a:b], dates[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        }
        self.symbols: list[str] = sorted(self._index)
        self.skipped = dict(skipped or {})  # symbols the feature stage could not featurize, with the reason
        self.version: str | None = None  # the feature dataset's version, when loaded from one
        self.latest: dt.date | None = _to_date(dates.max()) if len(dates) else None  # newest date any symbol has

    @classmethod
    def load(cls, storage: str, spec: dict, since: dt.date | None = None, features_dir: fs.Location | None = None) -> StoredFeatures:
        """``spec``'s own feature dataset (rows from a little before ``since`` when given), normalized for it."""
        window = int(spec["features"]["window"])
        features_dir = features_dir or model_features_dir(storage, spec)
        filters = None
        if since is not None:
            # Enough earlier rows for the first window ending on ``since``, with room for holidays.
            start = pd.Timestamp(since) - pd.tseries.offsets.BDay(2 * window + 10)
            filters = [("date", ">=", start.to_pydatetime())]
        frame = read_feature_frame(features_dir, filters=filters)
        skipped = json.loads(fs.read_text(fs.join(features_dir, "meta.json"))).get("skipped", {})
        stored = cls(frame, Normalizer.from_json(spec["features"]["normalizer"]), window, skipped)
        stored.version = fs.name(features_dir)
        return stored

    def __contains__(self, symbol: str) -> bool:
        return symbol in self._index

    def unknown_message(self, symbols: list[str]) -> str:
        """Why these symbols cannot be predicted: skipped by the feature stage (with its reason), or never seen."""
        parts = [f"{s!r} (skipped by the feature stage: {self.skipped[s]})" for s in symbols if s in self.skipped][:10]
        unknown = [repr(s) for s in symbols if s not in self.skipped]
        if unknown:
            more = f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else ""
            parts.append(f"unknown symbol(s) {', '.join(unknown[:10])}{more}")
        return f"no stored features for {'; '.join(parts)} (GET /v1/symbols lists the served ones)"

    def date_range(self, symbol: str) -> tuple[dt.date, dt.date]:
        """First and last dates ``symbol`` can be predicted for."""
        dates = self._index[symbol][1]
        return _to_date(dates[0]), _to_date(dates[-1])

    def end_row(self, symbol: str, as_of: dt.date | None = None) -> tuple[int, dt.date]:
        """The row whose window ends on ``as_of`` (default: the symbol's latest date), and that date.

        ``as_of`` must be a date the symbol has a row for: a weekend or holiday is an error naming the nearest
        earlier date, rather than a silently older prediction.
        """
        if symbol not in self._index:
            raise RequestError(404, self.unknown_message([symbol]))
        rows, dates = self._index[symbol]
        if as_of is None:
            return int(rows[-1]), _to_date(dates[-1])
        first, last = _to_date(dates[0]), _to_date(dates[-1])
        if not first <= as_of <= last:
            raise RequestError(
                422, f"as_of {as_of} is outside the stored data for {symbol}: predictions exist from {first} to {last}"
            )
        i = int(np.searchsorted(dates, np.datetime64(as_of, "ns"), side="right")) - 1
        if _to_date(dates[i]) != as_of:
            raise RequestError(
                422, f"as_of {as_of} is not a trading day in the stored data for {symbol}; nearest earlier: {_to_date(dates[i])}"
            )
        return int(rows[i]), as_of

    def rows_between(self, start: dt.date, end: dt.date, symbols: list[str] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(symbol per row, end rows, dates) of every window ending in [start, end], symbol by symbol."""
        lo, hi = np.datetime64(start, "ns"), np.datetime64(end, "ns")
        out_symbols, out_rows, out_dates = [], [], []
        for symbol in symbols or self.symbols:
            rows, dates = self._index.get(symbol, (np.empty(0, dtype=np.int64), np.empty(0, dtype="datetime64[ns]")))
            keep = (dates >= lo) & (dates <= hi)
            out_symbols += [symbol] * int(keep.sum())
            out_rows.append(rows[keep])
            out_dates.append(dates[keep])
        if not out_rows:
            return [], np.empty(0, dtype=np.int64), np.empty(0, dtype="datetime64[ns]")
        return out_symbols, np.concatenate(out_rows), np.concatenate(out_dates)

    def windows(self, rows: np.ndarray | list[int]) -> np.ndarray:
        """Normalized float32 windows (len(rows), window, n_features) ending at ``rows``."""
        return cut_windows(self.x, np.asarray(rows, dtype=np.int64), self.window)


def _to_date(value: np.datetime64) -> dt.date:
    return pd.Timestamp(value).date()


# Candles sent with a request: featurized with the code and statistics training used.

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
