"""Turn a raw bars frame into the canonical bars frame plus every rejected row with its reason.

Nothing is dropped silently: ``len(clean) + len(rejected) == len(raw)``. A row gets the first failing reason of
:data:`REASONS`, checked in this order:

* ``unparsable_date``: a non-empty date that does not parse (ISO 8601 first, then the layouts below).
  Time-zone offsets are dropped, keeping the local calendar date; times are floored to midnight. Numeric (epoch)
  dates are not interpreted and dates outside 1678-2261 cannot be stored: both land here. All-number dates
  such as ``03/04/2021`` (``/``, ``.`` or ``-``, two- or four-digit years) are read in one order for the whole
  input (``ingest.files.date_order``; ``auto``: month first, unless that fails for some dates and day first
  reads more of them, so an export with a ``13/01/2021`` is day first throughout); the dates that order cannot
  read land here, never swapped silently. Dates with a month's name (``2 Jan 2021``) are read by dateutil.
* ``missing_value``: an empty or missing symbol, date, price or volume (NaN, ``""``, ``null``, ``NA``, ``N/A``...).
* ``unparsable_number``: a price or volume that is present but is not a number (``"12,5"``, ``"abc"``).
* ``invalid_symbol``: a symbol with whitespace or control characters inside, or longer than 64 characters. Dots,
  dashes, slashes and suffixes are fine (``BRK.B``, ``BF-B``, ``0700.HK``, ``RDS/A``): partition directories
  percent-encode what a path cannot hold.
* ``non_finite``: an infinite price or volume.
* ``non_positive_price``: open, high, low or close <= 0 (or adj_close <= 0, when present).
* ``negative_volume``: volume < 0 (zero volume is allowed: a quiet day).
* ``high_below_low``: high < low.
* ``ohlc_inconsistent``: high < max(open, close) or low > min(open, close). A relative slack of 1e-9 absorbs
  float noise (e.g. from adjustment); accepted rows are then clamped so high >= max(open, close) >= ... holds
  exactly.
* ``intraday``: several valid rows of one symbol on one day at different times of day (hourly or minute bars):
  raycast takes one bar per symbol and day, and the first bar of a day is not that day's bar, so every bar of
  such a day is rejected rather than one kept.
* ``duplicate``: a second (symbol, date) among the otherwise valid rows; the first one in input order is kept.

Adjustment: when the raw frame has an ``adj_close`` column (readers keep it only when adjustment is asked for),
open/high/low/close are multiplied by ``adj_close / close`` and volume divided by it, so returns carry no
split jumps and dollar volume is unchanged. ``adj_close`` is then validated like the prices.

Optional raw columns ``source`` and ``row`` say where each row came from (file, row number); they are copied to
the rejected frame, whose value columns hold the original values as text.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from raycast.data.errors import DataError
from raycast.data.schema import (
    BAR_COLUMNS,
    PRICE_COLUMNS,
    VALUE_COLUMNS,
    canonical_bars,
    empty_bars,
    symbol_date_key,
)

REASONS = (
    "unparsable_date",
    "missing_value",
    "unparsable_number",
    "invalid_symbol",
    "non_finite",
    "non_positive_price",
    "negative_volume",
    "high_below_low",
    "ohlc_inconsistent",
    "intraday",
    "duplicate",
)
HINTS = {
    "unparsable_date": "dates must read as a day (2021-03-04, 03/04/2021, 4 Mar 2021), all-number ones in one order",
    "unparsable_number": "numbers must use '.' for decimals, with no thousands separators or currency signs",
    "intraday": "raycast takes daily bars, one per symbol and day: aggregate intraday bars to days first",
    "missing_value": "every row needs a symbol, a date, open, high, low, close and volume",
}
DateOrder = Literal["auto", "month_first", "day_first"]
REJECTED_VALUE_COLUMNS = (*BAR_COLUMNS, "adj_close")
REJECTED_COLUMNS = (*REJECTED_VALUE_COLUMNS, "reason", "source", "row")
NA_TOKENS = frozenset({"", "nan", "na", "n/a", "#n/a", "null", "none", "nat", "<na>", "-"})
OHLC_SLACK = 1e-9
_TZ_SUFFIX = re.compile(r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(?:Z|[+-]\d{2}:?\d{2})$")
_BAD_SYMBOL = re.compile(r"[\s\x00-\x1f\x7f]")
# day or month, month or day, year, then a time of day or nothing (RE2 syntax: pyarrow runs it)
_NUMERIC_DATE = r"^(?P<first>\d{1,2})[/.-](?P<second>\d{1,2})[/.-](?P<year>\d{4}|\d{2})(?P<rest>(?:[^\d/.-].*)?)$"


def _text(values: pd.Series) -> pd.Series:
    """Values as stripped text; missing values (None, NaN, NA, NaT) become ''."""
    missing = values.isna().to_numpy()
    return values.astype(str).str.strip().where(~missing, "")


def _is_blank(text: pd.Series) -> np.ndarray:
    return text.str.lower().isin(NA_TOKENS).to_numpy()


def _parse_dates(values: pd.Series, order: DateOrder = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(datetime64[ns] midnight dates with NaT where unusable, missing mask, time of day in ns).

    All-number dates are read in ``order`` (``auto``: see the module docstring).
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        parsed = values.dt.tz_localize(None)  # wall-clock time in the data's zone: its calendar date
        missing = parsed.isna().to_numpy()
    elif pd.api.types.is_datetime64_dtype(values.dtype):
        parsed, missing = values, values.isna().to_numpy()
    else:
        text = _text(values)
        missing = _is_blank(text)
        text = text.str.replace(_TZ_SUFFIX, r"\1", regex=True).where(~missing, None)
        parsed = _to_us(pd.to_datetime(text, errors="coerce", format="ISO8601"))
        retry = parsed.isna().to_numpy() & ~missing
        if retry.any():  # all-number dates (03/04/2021): one order for the whole input, then ISO 8601 again
            numeric = _numeric_parts(text[retry])
            is_numeric = numeric["first"].notna().to_numpy()
            if is_numeric.any():
                where = np.flatnonzero(retry)[is_numeric]
                iso = _iso_text(numeric[is_numeric], order)
                parsed.iloc[where] = _to_us(pd.to_datetime(iso, errors="coerce", format="ISO8601")).to_numpy()
                retry[where] = False
        if retry.any():  # month names (2 Jan 2021): slow element-wise parsing, only where needed
            parsed[retry] = _to_us(pd.to_datetime(text[retry], errors="coerce", format="mixed"))
    parsed = _to_us(pd.Series(parsed))
    midnight = parsed.dt.normalize()
    time_of_day = (parsed - midnight).to_numpy().view("i8")
    # Dates outside the datetime64[ns] range (years 1678-2261) cannot be stored: treat them as unparsable.
    in_range = (midnight >= pd.Timestamp("1678-01-01")) & (midnight <= pd.Timestamp("2261-12-31"))
    return midnight.where(in_range).astype("datetime64[ns]").to_numpy(), missing, time_of_day


def _numeric_parts(text: pd.Series) -> pd.DataFrame:
    """The parts of all-number dates (columns first, second, year, rest; missing where a date is not one)."""
    parts = pc.extract_regex(pa.array(text.to_numpy(dtype=object), type=pa.string()), _NUMERIC_DATE)
    fields = {f.name: pc.struct_field(parts, f.name).to_numpy(zero_copy_only=False) for f in parts.type}
    return pd.DataFrame(fields, index=text.index)  # a date that does not match: None in every field


def _iso_text(parts: pd.DataFrame, order: DateOrder) -> pd.Series:
    """All-number dates (``parts``: first and second number, year, rest) as ISO text, in one order for all.

    ``auto``: month first (the US layout) unless that fails for some dates and day first reads more of them; a
    date the chosen order cannot read becomes empty text, so it is rejected as unparsable. When every date reads
    either way the console says so, naming the setting that pins the order.
    """
    first, second = parts["first"].astype(int).to_numpy(), parts["second"].astype(int).to_numpy()
    year = parts["year"].astype(int).to_numpy()
    year = np.where(parts["year"].str.len().to_numpy() == 2, np.where(year < 69, 2000 + year, 1900 + year), year)
    month_first_ok = (first <= 12) & (second <= 31)
    day_first_ok = (second <= 12) & (first <= 31)
    if order == "auto":
        either = month_first_ok.all() and day_first_ok.all()
        if either and (first != second).any():
            print(f"[raycast] files: every all-number date reads as month first or day first (e.g. "
                  f"{first[0]:02d}/{second[0]:02d}/{year[0]}); read month first: set "
                  "ingest.files.date_order to day_first if they are day first", flush=True)  # fmt: skip
        month_first = month_first_ok.all() or month_first_ok.sum() >= day_first_ok.sum()
    else:
        month_first = order == "month_first"
    month, day = (first, second) if month_first else (second, first)
    padded = [pc.utf8_lpad(pa.array(v).cast(pa.string()), width, "0") for v, width in ((year, 4), (month, 2), (day, 2))]
    rest = pa.array(parts["rest"].str.rstrip().to_numpy(dtype=object), type=pa.string())
    text = pc.binary_join_element_wise(pc.binary_join_element_wise(*padded, "-"), rest, "")
    return pd.Series(text.to_numpy(zero_copy_only=False), index=parts.index).where(
        month_first_ok if month_first else day_first_ok, ""
    )


def _to_us(dates: pd.Series) -> pd.Series:
    """Naive datetime64[us]: a unit wide enough for any parsed year, so out-of-range dates can be masked."""
    if isinstance(dates.dtype, pd.DatetimeTZDtype):
        dates = dates.dt.tz_localize(None)
    if dates.dtype == object:  # mixed offsets survive as objects; none remain after the suffix is stripped
        dates = pd.to_datetime(dates, errors="coerce", utc=True).dt.tz_localize(None)
    return dates.astype("datetime64[us]")


def _parse_numbers(values: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float64 values, missing mask, unparsable mask)."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        out = pd.to_numeric(values).to_numpy(dtype="float64", na_value=np.nan)
        return out, np.isnan(out), np.zeros(len(values), dtype=bool)
    text = _text(values)
    missing = _is_blank(text)
    out = pd.to_numeric(text.where(~missing, None), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return out, missing, np.isnan(out) & ~missing


def _first_reasons(checks: list[tuple[str, np.ndarray]], n: int) -> np.ndarray:
    """Per row, the first reason whose mask is set (None where none is)."""
    reason = np.full(n, None, dtype=object)
    for name, mask in checks:
        reason[mask & (reason == None)] = name  # noqa: E711 - elementwise comparison on an object array
    return reason


def validate_bars(raw: pd.DataFrame, source: str, date_order: DateOrder = "auto") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``raw`` into (canonical clean bars, rejected rows with ``reason``, ``source`` and ``row``).

    ``date_order`` is how all-number dates such as 03/04/2021 read: ``auto`` (module docstring), ``month_first``
    or ``day_first``.
    """
    missing_cols = [c for c in BAR_COLUMNS if c not in raw.columns]
    if missing_cols:
        raise DataError(f"{source}: raw bars lack column(s): {', '.join(missing_cols)}")
    raw = raw.reset_index(drop=True)
    n = len(raw)
    if n == 0:
        return empty_bars(), _rejected(raw, np.zeros(0, dtype=object), source)

    symbol = _text(raw["symbol"])
    sym_missing = (symbol == "").to_numpy()
    date, date_missing, time_of_day = _parse_dates(raw["date"], date_order)
    date_bad = np.isnat(date) & ~date_missing

    number_cols = [*VALUE_COLUMNS, *(["adj_close"] if "adj_close" in raw.columns else [])]
    values, missing, unparsable = {}, sym_missing | date_missing, np.zeros(n, dtype=bool)
    for col in number_cols:
        values[col], miss, bad = _parse_numbers(raw[col])
        missing |= miss
        unparsable |= bad
    with np.errstate(invalid="ignore", divide="ignore"):
        non_finite = np.zeros(n, dtype=bool)
        for col in number_cols:
            non_finite |= np.isinf(values[col])
        prices = [c for c in (*PRICE_COLUMNS, "adj_close") if c in values]
        non_positive = np.any([values[c] <= 0 for c in prices], axis=0)
        if "adj_close" in values:
            factor = values["adj_close"] / values["close"]
            for col in PRICE_COLUMNS:
                values[col] = values[col] * factor
            values["volume"] = values["volume"] / factor
        o, h, lo, c = (values[k] for k in PRICE_COLUMNS)
        high_below_low = h < lo * (1 - OHLC_SLACK)
        inconsistent = (h < np.maximum(o, c) * (1 - OHLC_SLACK)) | (lo > np.minimum(o, c) * (1 + OHLC_SLACK))
        negative_volume = values["volume"] < 0
    # Checked once per distinct symbol: there are few symbols and many rows.
    codes, uniques = pd.factorize(symbol)
    uniques = pd.Series(uniques, dtype=str)
    bad_unique = (uniques.str.contains(_BAD_SYMBOL) | (uniques.str.len() > 64)).to_numpy(dtype=bool)
    invalid_symbol = bad_unique[codes] & ~sym_missing

    reason = _first_reasons(
        [
            ("unparsable_date", date_bad),
            ("missing_value", missing),
            ("unparsable_number", unparsable),
            ("invalid_symbol", invalid_symbol),
            ("non_finite", non_finite),
            ("non_positive_price", non_positive),
            ("negative_volume", negative_volume),
            ("high_below_low", high_below_low),
            ("ohlc_inconsistent", inconsistent),
        ],
        n,
    )
    frame = pd.DataFrame({"symbol": symbol.to_numpy(), "date": date, **{k: values[k] for k in VALUE_COLUMNS}})
    ok = reason == None  # noqa: E711
    key = pd.Series(symbol_date_key(frame["symbol"][ok], date[ok]))
    intraday, dup = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    times = time_of_day[ok]
    if len(times) and (times != times[0]).any():  # daily bars share one time of day (midnight, or the close)
        intraday[ok] = (pd.Series(times).groupby(key.to_numpy()).transform("nunique") > 1).to_numpy()
    reason[intraday] = "intraday"
    dup[ok] = key.duplicated(keep="first").to_numpy() & ~intraday[ok]
    reason[dup] = "duplicate"
    ok &= ~intraday
    ok &= ~dup

    clean = frame.loc[ok]
    clean = clean.assign(
        high=np.maximum.reduce([clean["high"], clean["open"], clean["close"]]),
        low=np.minimum.reduce([clean["low"], clean["open"], clean["close"]]),
    )
    return canonical_bars(clean), _rejected(raw, reason, source)


def _rejected(raw: pd.DataFrame, reason: np.ndarray, source: str) -> pd.DataFrame:
    """The rejected rows with their original values as text, in input order."""
    bad = np.flatnonzero(reason != None)  # noqa: E711
    rows = raw.iloc[bad]
    out = {c: (_text(rows[c]) if c in rows.columns else pd.Series([""] * len(rows))) for c in REJECTED_VALUE_COLUMNS}
    out = {c: s.to_numpy(dtype=object) for c, s in out.items()}
    out["reason"] = reason[bad]
    out["source"] = _text(rows["source"]).to_numpy(dtype=object) if "source" in rows else [source] * len(bad)
    out["row"] = rows["row"].to_numpy(dtype="int64") if "row" in rows else bad.astype("int64")
    frame = pd.DataFrame(out, columns=list(REJECTED_COLUMNS))
    return frame.astype({c: str for c in REJECTED_COLUMNS if c != "row"}).astype({"row": "int64"})


def no_valid_rows(sources: list[str], n_read: int, rejected: pd.DataFrame) -> DataError:
    """The error for an input none of whose rows is valid: the counts by reason, the first rejected row as it was
    read, and what the commonest reason asks of the file."""
    counts = reason_counts(rejected)
    message = f"no valid rows in {', '.join(sources)} ({n_read} rows read; rejected: {counts})"
    if len(rejected):
        first = rejected.iloc[0]
        values = ", ".join(f"{c}={first[c]!r}" for c in BAR_COLUMNS)
        message += f"; e.g. {first['source']} row {first['row']} ({first['reason']}): {values}"
        top = max(counts, key=counts.get)
        if top in HINTS:
            message += f". {HINTS[top]}"
    return DataError(message)


def reason_counts(rejected: pd.DataFrame) -> dict[str, int]:
    """{reason: count} for the reasons that occur, in :data:`REASONS` order."""
    counts = rejected["reason"].value_counts()
    return {r: int(counts[r]) for r in REASONS if r in counts.index}
