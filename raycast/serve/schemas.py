"""The HTTP API's request and response bodies (version 1).

Requests forbid unknown fields and non-finite numbers, so a typo or a NaN is a 422 that names the field instead
of a prediction from garbage. Price sanity (positive, high >= low, ...) is left to the ingest validator, which
reports it per candle.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

# Any ticker ingest accepts (BRK.B, BF-B, 0700.HK, RDS/A): no whitespace or control characters, at most 64.
SYMBOL = Field(min_length=1, max_length=64, pattern=r"^[^\s\x00-\x1f\x7f]+$", description="ticker, e.g. AAPL or BRK.B")

# pandas' nanosecond timestamps span 1677-09-21..2262-04-11; the ingest validator keeps whole years inside that.
EARLIEST, LATEST = dt.date(1678, 1, 1), dt.date(2261, 12, 31)


def _in_range(day: dt.date) -> dt.date:
    if not EARLIEST <= day <= LATEST:
        raise ValueError(f"date {day} is outside the supported range {EARLIEST}..{LATEST}")
    return day


Day = Annotated[dt.date, AfterValidator(_in_range), Field(description=f"ISO date, {EARLIEST}..{LATEST}")]
"""A date the feature code can hold (an ISO date between EARLIEST and LATEST)."""


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Candle(Request):
    """One daily bar."""

    date: Day
    open: float
    high: float
    low: float
    close: float
    volume: float


class PredictRequest(Request):
    """A stored symbol (latest date or ``as_of``), or any symbol with its own candles."""

    symbol: str = SYMBOL
    as_of: Day | None = Field(None, description="date whose window to use (default: the latest stored date)")
    candles: list[Candle] | None = Field(
        None, max_length=20_000, description="daily bars, oldest first: at least the window plus the indicator warm-up"
    )

    @model_validator(mode="after")
    def _one_source(self) -> PredictRequest:
        if self.candles is not None and self.as_of is not None:
            raise ValueError("give either as_of (stored features) or candles, not both: the candles' last date is the as_of")
        return self


class BatchRequest(Request):
    """Many stored symbols at once (default: the whole universe), on their latest dates or on ``as_of``."""

    symbols: list[str] | None = Field(None, max_length=20_000, description="default: every stored symbol")
    as_of: Day | None = None


class Prediction(BaseModel):
    symbol: str
    as_of: dt.date = Field(
        description="the date t of the window's last row (bars up to the close of t); the prediction is for the "
        "return from the close of t+label_delay to the close of t+label_delay+horizon (by default the next trading "
        "day's close to the one after)"
    )
    prediction: float = Field(description=r"predicted return over that span (0.01 = +1%)")
    base_predictions: dict[str, float]
    weights: dict[str, float] = Field(description="the ensemble's per-sample weights over the base models")
    model_version: str


class Skipped(BaseModel):
    symbol: str
    detail: str


class BatchResponse(BaseModel):
    model_version: str
    count: int
    predictions: list[Prediction]
    skipped: list[Skipped] = Field(description="symbols with no stored row on as_of (not traded that day)")


class Health(BaseModel):
    status: str
    model_version: str
    symbols: int


class SymbolInfo(BaseModel):
    symbol: str
    first: dt.date
    last: dt.date


class Symbols(BaseModel):
    count: int
    symbols: list[SymbolInfo]


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx: ``detail`` is one message, or for a malformed request one entry per offending field."""

    detail: str | list[FieldError]
