"""Stored feature rows held in memory, normalized once, so a prediction's window is an index lookup.

A replica loads the feature dataset the served model was trained on (not necessarily the current one) at start,
normalizes it with the model's statistics (the ones training used) and keeps, per symbol, the rows that end a
full window. A request for (symbol, as_of) is then a dict lookup and a binary search; the window itself is cut
by :func:`raycast.features.windows.cut_windows`, the function training and evaluation use, so served inputs
cannot drift from trained ones.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd

from raycast import fs
from raycast.features.normalize import Normalizer
from raycast.features.store import FeatureBlocks, read_feature_frame
from raycast.features.windows import cut_windows
from raycast.lineage import model_features_dir
from raycast.serve.errors import RequestError


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
        symbols, dates = blocks.symbols[ends], blocks.dates[ends]
        # Rows are sorted by (symbol, date), so each symbol's ends form one contiguous, date-sorted run.
        starts = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]]) if len(ends) else np.empty(0, dtype=int)
        bounds = np.r_[starts, len(ends)]
        self._index: dict[str, tuple[np.ndarray, np.ndarray]] = {
            str(symbols[a]): (ends[a:b], dates[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        }
        self.symbols: list[str] = sorted(self._index)
        self.skipped = dict(skipped or {})  # symbols the feature stage could not featurize, with the reason

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
        return cls(frame, Normalizer.from_json(spec["features"]["normalizer"]), window, skipped)

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
