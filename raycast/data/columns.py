"""Column-name normalization shared by the sample and file readers."""

from __future__ import annotations

import pandas as pd

from raycast.data.errors import DataError

# Normalized name (lower case, spaces and dashes as underscores) -> canonical name.
ALIASES = {
    "symbol": "symbol",
    "ticker": "symbol",
    "date": "date",
    "datetime": "date",
    "timestamp": "date",
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "volume": "volume",
    "vol": "volume",
    "adj_close": "adj_close",
    "adjclose": "adj_close",
    "adjusted_close": "adj_close",
    "adjusted": "adj_close",  # quantmod / tidyquant / pytimetk
    # tushare (ts_code, trade_date, vol), Qlib (instrument), akshare's Chinese headers
    "ts_code": "symbol",
    "instrument": "symbol",
    "trade_date": "date",
    "代码": "symbol",
    "股票代码": "symbol",
    "日期": "date",
    "开盘": "open",
    "最高": "high",
    "最低": "low",
    "收盘": "close",
    "成交量": "volume",
}
REQUIRED = ("date", "open", "high", "low", "close", "volume")


def normalize_columns(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """Rename known columns to canonical names (case-insensitive, aliases) and drop the others.

    Two columns mapping to one name (``Date`` and ``Timestamp``) raise :class:`DataError` naming ``where``.
    """
    mapping: dict[str, str] = {}
    seen: dict[str, str] = {}
    for col in frame.columns:
        key = str(col).strip().lower().replace(" ", "_").replace("-", "_")
        canon = ALIASES.get(key)
        if canon is None:
            continue
        if canon in seen:
            raise DataError(f"{where}: columns {seen[canon]!r} and {col!r} both mean {canon!r}; keep one")
        seen[canon] = str(col)
        mapping[col] = canon
    return frame.loc[:, list(mapping)].rename(columns=mapping)


def require_columns(frame: pd.DataFrame, where: str, need_symbol: bool) -> None:
    """Raise :class:`DataError` naming ``where`` and every missing required column."""
    need = (*(("symbol",) if need_symbol else ()), *REQUIRED)
    missing = [c for c in need if c not in frame.columns]
    if missing:
        names = ["symbol (or ticker)" if c == "symbol" else c for c in missing]
        raise DataError(f"{where}: missing required column(s): {', '.join(names)}")
