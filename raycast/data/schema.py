"""The canonical bars frame shared by every source, the validator and the store.

Canonical bars: columns ``symbol`` (str), ``date`` (datetime64[ns], midnight, no tz) and ``open, high, low,
close, volume`` (float64), sorted by symbol then date, unique (symbol, date).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from raycast.data.errors import DataError

PRICE_COLUMNS = ("open", "high", "low", "close")
VALUE_COLUMNS = (*PRICE_COLUMNS, "volume")
BAR_COLUMNS = ("symbol", "date", *VALUE_COLUMNS)


def empty_bars() -> pd.DataFrame:
    """A canonical bars frame with no rows."""
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in BAR_COLUMNS})
    frame["symbol"] = frame["symbol"].astype(str)
    frame["date"] = frame["date"].astype("datetime64[ns]")
    return frame


def canonical_bars(frame: pd.DataFrame, check: bool = True) -> pd.DataFrame:
    """Return ``frame`` with exactly the canonical columns and dtypes, sorted by symbol then date.

    With ``check`` the frame must already be valid (unique keys, midnight dates); a violation raises
    :class:`DataError` rather than being fixed, because fixing here would bypass the validator's accounting.
    """
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"bars frame lacks column(s): {', '.join(missing)}")
    if frame.empty:
        return empty_bars()
    # Convert only what needs converting: astype on a column that already has the dtype is free.
    out = frame.loc[:, list(BAR_COLUMNS)].reset_index(drop=True)
    out["symbol"] = out["symbol"].astype(str)
    if out["date"].dtype != "datetime64[ns]":
        out["date"] = pd.to_datetime(out["date"]).astype("datetime64[ns]")
    out = out.astype({c: "float64" for c in VALUE_COLUMNS})
    if not _is_sorted(out):
        out = out.sort_values(["symbol", "date"], kind="stable", ignore_index=True)
    if check:
        if pd.Series(symbol_date_key(out["symbol"], out["date"].to_numpy())).duplicated().any():
            raise DataError("bars frame has duplicate (symbol, date) rows")
        if (out["date"] != out["date"].dt.normalize()).any():
            raise DataError("bars frame has dates that are not at midnight")
    return out


def _is_sorted(bars: pd.DataFrame) -> bool:
    """Whether rows are ordered by symbol then date (cheaper than sorting an already sorted frame)."""
    codes, _ = pd.factorize(bars["symbol"], sort=True)  # codes follow symbol order
    date = bars["date"].to_numpy().view("i8")
    step_code, step_date = np.diff(codes), np.diff(date)
    return bool(np.all((step_code > 0) | ((step_code == 0) & (step_date >= 0))))


def symbol_date_key(symbol: pd.Series, date: np.ndarray) -> np.ndarray:
    """One int64 per (symbol, date), equal exactly when both are: hashing ints beats hashing string pairs."""
    codes, _ = pd.factorize(symbol)
    days = date.astype("datetime64[D]").view("i8")  # midnight dates: the day number is exact
    return (codes.astype("i8") << 32) | (days - days.min()) if len(days) else codes.astype("i8")


# A symbol's hash is a chain over blocks of HASH_BLOCK bars, so an append can go on from the state after the last
# whole block (kept with the version's tails, see raycast.data.store) instead of rehashing the whole history, and
# still get exactly what a full ingest of the same bars gets.
HASH_BLOCK = 256
HASH_START = hashlib.sha256(b"raycast-bars-v3:" + ",".join(BAR_COLUMNS).encode()).digest()


def bar_arrays(bars: pd.DataFrame) -> list[np.ndarray]:
    """The dates (as int64 nanoseconds) and values of canonical bars as contiguous little-endian arrays: what a
    symbol's hash is computed over, sliced by row."""
    arrays = [np.ascontiguousarray(bars["date"].to_numpy("datetime64[ns]").view("<i8"))]
    return arrays + [np.ascontiguousarray(bars[c].to_numpy(), dtype="<f8") for c in VALUE_COLUMNS]


def _bar_bytes(arrays: list[np.ndarray], start: int, stop: int) -> bytes:
    return b"".join(a[start:stop].tobytes() for a in arrays)  # column after column


def hash_chain(arrays: list[np.ndarray], start: int, stop: int, state: bytes = HASH_START) -> tuple[int, bytes]:
    """(rows consumed, state) after chaining every whole block of rows ``start:stop`` onto ``state``; a leftover
    of fewer than :data:`HASH_BLOCK` rows is not consumed."""
    whole = (stop - start) // HASH_BLOCK * HASH_BLOCK
    for at in range(start, start + whole, HASH_BLOCK):
        state = hashlib.sha256(state + _bar_bytes(arrays, at, at + HASH_BLOCK)).digest()
    return whole, state


def finish_hash(state: bytes, arrays: list[np.ndarray], start: int, stop: int, n_bars: int) -> str:
    """The hash of a symbol's ``n_bars`` bars from its chain ``state`` and its rows ``start:stop`` after it."""
    return hashlib.sha256(state + _bar_bytes(arrays, start, stop) + int(n_bars).to_bytes(8, "little")).hexdigest()


def symbol_bounds(bars: pd.DataFrame) -> list[tuple[str, int, int]]:
    """(symbol, first row, one past its last row) for each symbol of a frame sorted by symbol."""
    symbols = bars["symbol"].to_numpy()
    if not len(symbols):
        return []
    edges = np.flatnonzero(symbols[1:] != symbols[:-1]) + 1
    starts, stops = np.r_[0, edges], np.r_[edges, len(symbols)]
    return [(str(symbols[a]), int(a), int(b)) for a, b in zip(starts, stops)]


def symbol_hash(part: pd.DataFrame) -> str:
    """SHA-256 chain over one symbol's canonical bars (its dates and values, in date order)."""
    arrays = bar_arrays(part)
    consumed, state = hash_chain(arrays, 0, len(part))
    return finish_hash(state, arrays, consumed, len(part), len(part))


def symbol_hashes(bars: pd.DataFrame) -> dict[str, str]:
    """:func:`symbol_hash` of every symbol of a canonical bars frame."""
    arrays = bar_arrays(bars)
    out = {}
    for symbol, a, b in symbol_bounds(bars):
        consumed, state = hash_chain(arrays, a, b)
        out[symbol] = finish_hash(state, arrays, a + consumed, b, b - a)
    return out


def combine_hashes(per_symbol: dict[str, str]) -> str:
    """The dataset's hash from its symbols' hashes: an append that rehashes only the symbols it touched gets the
    same value as a full ingest of the same bars."""
    h = hashlib.sha256(b"raycast-bars-v3")
    for symbol in sorted(per_symbol):
        h.update(b"\0" + symbol.encode() + b"\0" + per_symbol[symbol].encode())
    return h.hexdigest()


def content_hash(bars: pd.DataFrame) -> str:
    """SHA-256 over the values of a canonical bars frame (independent of Parquet encoding or library versions)."""
    return combine_hashes(symbol_hashes(bars))
