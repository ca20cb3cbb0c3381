"""The user's own daily bars: one long-format file, or a directory with one file per symbol.

Accepted inputs (``.csv``, ``.csv.gz``, ``.parquet`` or ``.pq``):

(a) one long-format file with columns symbol (or ticker), date, open, high, low, close, volume;
(b) a directory of per-symbol files in the Yahoo Finance export layout (``Date,Open,High,Low,Close,Adj Close,
    Volume``); the symbol is the upper-cased file name stem (``aapl.csv`` -> ``AAPL``). A file in the directory
    that has its own symbol column is read as long format instead. Hidden files and subdirectories are skipped;
    any other file type is an error, so a stray file is noticed rather than ignored.

CSV fields may be separated by ``,``, ``;``, tabs or ``|`` (read from the header line); in a ``;``-separated file
the decimal mark is the comma (``12,5``), as in the spreadsheets that write them. A Parquet frame saved with
its dates (or symbols and dates) as its index has them as columns. Column names are case-insensitive,
surrounding spaces are ignored and spaces/dashes count as underscores.
Aliases: ``Date``/``Datetime``/``Timestamp``/``trade_date`` -> date, ``Ticker``/``Symbol``/``ts_code``/
``instrument`` -> symbol, ``Vol`` -> volume, ``Adj Close``/``adj_close``/``AdjClose``/``Adjusted Close``/
``adjusted`` -> adj_close, and akshare's Chinese headers (日期, 开盘, 最高, 最低, 收盘, 成交量, 代码 or 股票代码).
Other columns are ignored.

Adj Close: prices are taken as given and NOT adjusted; Adj Close is ignored (a file without Close is an error
even when it has Adj Close). With ``FilesConfig.adjust`` (``adjust=True``) and an Adj Close column, open/high/
low/close are scaled by ``adj_close / close`` and volume by its inverse (see :mod:`raycast.data.validate`); a
file without one is taken as given, and the console names it rather than leaving the request silently unmet.

Symbols are stripped and upper-cased. Values are read as text (CSV) or as stored (Parquet) and parsed by the
validator, which reports bad rows instead of failing; the raw frame carries ``source`` (the file) and ``row``
(0-based data row in that file) so rejected rows can be found. Missing required columns, unreadable or empty
inputs and unknown extensions raise :class:`DataError` naming the file.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

from raycast.data.columns import normalize_columns, require_columns
from raycast.data.errors import DataError
from raycast.data.schema import VALUE_COLUMNS

SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in SUFFIXES if name.endswith(s)), None)


def _stem(path: Path) -> str:
    return path.name[: -len(_suffix(path) or "")].strip().upper()


def _read_table(path: Path) -> tuple[pd.DataFrame, str]:
    """The file's frame and its decimal mark (``,`` in a ``;``-separated CSV, else ``.``)."""
    suffix = _suffix(path)
    if suffix is None:
        raise DataError(f"{path}: unsupported file type (expected one of {', '.join(SUFFIXES)})")
    try:
        if suffix in (".csv", ".csv.gz"):
            # Text in, so nothing is lost before validation (and 'NA' stays a valid ticker).
            sep = _delimiter(path)
            frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, skipinitialspace=True)
            return frame, "," if sep == ";" else "."
        frame = pd.read_parquet(path)
        # a frame saved with its dates (or symbols and dates) as the index: they are columns here
        return (frame.reset_index() if any(name is not None for name in frame.index.names) else frame), "."
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: cannot read: {err}") from None


def _delimiter(path: Path) -> str:
    """The header line's field separator: ``,`` unless ``;``, a tab or ``|`` splits it into more fields (a
    spreadsheet's export in a locale whose decimal mark is a comma uses ``;``)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        header = f.readline()
    counts = {sep: header.count(sep) for sep in (",", ";", "\t", "|")}
    return max(counts, key=counts.get) if max(counts.values()) else ","  # the first of equals: the comma


def _read_one(path: Path, symbol: str | None, adjust: bool) -> pd.DataFrame:
    """One file as a raw frame; ``symbol`` (from the file name) is used when the file has no symbol column."""
    table, decimal = _read_table(path)
    frame = normalize_columns(table, str(path))
    if decimal == ",":  # 12,5 is twelve and a half here; a value with a '.' as well (1.234,5) is left to be rejected
        for col in frame.columns.intersection([*VALUE_COLUMNS, "adj_close"]):
            text = frame[col].astype(str)
            frame[col] = text.where(text.str.contains(".", regex=False), text.str.replace(",", ".", regex=False))
    has_symbol = "symbol" in frame.columns
    require_columns(frame, str(path), need_symbol=symbol is None)
    if not has_symbol:
        frame.insert(0, "symbol", symbol)
    frame["symbol"] = frame["symbol"].astype("string").str.strip().str.upper()
    if not adjust:
        frame = frame.drop(columns=["adj_close"], errors="ignore")
    frame["source"] = str(path)
    frame["row"] = np.arange(len(frame), dtype="int64")
    return frame


def data_files(path: str | Path) -> list[Path]:
    """The files :func:`read_user_files` reads for ``path`` (DataError when there are none)."""
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: no such file or directory")
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"{path}: directory holds no data files (expected one {'/'.join(SUFFIXES)} per symbol)")
    return files


def read_user_files(path: str | Path, adjust: bool = False) -> pd.DataFrame:
    """Raw bars (canonical column names plus ``source`` and ``row``) from a long file or a per-symbol directory."""
    path = Path(path).expanduser()
    files = data_files(path)
    if path.is_file():
        frames = [_read_one(path, None, adjust)]
    else:
        for f in files:  # check every name before reading anything
            if _suffix(f) is None:
                raise DataError(f"{f}: unsupported file type in {path} (expected one of {', '.join(SUFFIXES)})")
        frames = [_read_one(f, _stem(f), adjust) for f in files]
    unadjusted = [f.name for f, frame in zip(files, frames, strict=True) if adjust and "adj_close" not in frame]
    for frame in frames:
        if adjust and "adj_close" not in frame:
            frame["adj_close"] = frame["close"]  # nothing to adjust by: factor 1 rather than a missing value
    if unadjusted:
        shown = ", ".join(unadjusted[:5]) + (f" and {len(unadjusted) - 5} more" if len(unadjusted) > 5 else "")
        print(f"[raycast] files: adjust is set, but {len(unadjusted)} file(s) have no adjusted close column "
              f"({shown}): their prices are taken as given", flush=True)  # fmt: skip
    return pd.concat(frames, ignore_index=True)
