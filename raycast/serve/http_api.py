"""The versioned HTTP API: request and response bodies, what each route does, and the FastAPI app.

Read top to bottom, this is the first stage of ``POST /v1/predict``: the body is validated into a
:class:`PredictRequest`, :class:`PredictionService` turns it into normalized windows (:mod:`raycast.serve.feature_rows`)
and awaits its ``score`` function for them, and the scores become a :class:`Prediction`. Under Ray Serve ``score``
sends the windows, as one numpy array, through a ``DeploymentHandle`` to the ensemble deployment
(:mod:`raycast.serve.deployments`); in the bare benchmark baseline it runs the models in process. Everything else,
request validation included, is this one code path, so the two are compared like for like.

Bad input is always a 4xx whose message names the problem: 422 for malformed JSON, missing, unknown or
non-finite fields and invalid candles; 404 for an unknown symbol; 413 for a body over the limit; 401 for a
missing or wrong API key (when one is configured). A model replica that is gone even after a retry is a 503.
Requests forbid unknown fields and non-finite numbers, so a typo or a NaN is a 422 that names the field instead
of a prediction from garbage. Price sanity (positive, high >= low, ...) is left to the ingest validator, which
reports it per candle.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from raycast.serve.feature_rows import CandleFeaturizer, RequestError, StoredFeatures, candles_needed

API_KEY_HEADER = "X-API-Key"


# Request and response bodies (version 1).

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


class StrictBody(BaseModel):
    """A request body: unknown fields and non-finite numbers are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Candle(StrictBody):
    """One daily bar."""

    date: Day
    open: float
    high: float
    low: float
    close: float
    volume: float


class PredictRequest(StrictBody):
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


class BatchRequest(StrictBody):
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
    features_version: str | None = Field(None, description="the feature dataset stored-feature predictions come from")
    latest_date: dt.date | None = Field(None, description="the newest date a stored-feature prediction can be for")


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


# What the API does, apart from how the models run: inputs to windows, scores to response rows.

Scores = dict
"""``{"prediction": (n,), "base_predictions": {name: (n,)}, "weights": {name: (n,)}, "model_version": str}``."""

ScoreFn = Callable[[np.ndarray], Awaitable[Scores]]

LogFn = Callable[[list[dict], str, str | None], None]
"""Receives each answer's rows, where they came from (``predict``, ``candles``, ``batch``) and the feature version."""


def score_rows(scores: Scores, symbols: list[str], dates: list[dt.date]) -> list[dict]:
    """One response row per window, in input order (plain floats: JSON has no float32)."""
    pred = np.asarray(scores["prediction"], dtype=np.float64)
    bases = {n: np.asarray(v, dtype=np.float64) for n, v in scores["base_predictions"].items()}
    weights = {n: np.asarray(v, dtype=np.float64) for n, v in scores["weights"].items()}
    version = scores["model_version"]
    return [
        {
            "symbol": s,
            "as_of": d,
            "prediction": float(pred[i]),
            "base_predictions": {n: float(v[i]) for n, v in bases.items()},
            "weights": {n: float(v[i]) for n, v in weights.items()},
            "model_version": version,
        }
        for i, (s, d) in enumerate(zip(symbols, dates, strict=True))
    ]


class PredictionService:
    """The API's logic over one model version's stored features and candle featurizer."""

    def __init__(self, spec: dict, features: StoredFeatures, score: ScoreFn, log: LogFn | None = None):
        self.spec = spec
        # Replaced whole when a newer feature dataset is loaded: a request reads it once and keeps its copy.
        self.features = features
        self.candles = CandleFeaturizer(spec)
        self.score = score
        self.log = log

    @property
    def version(self) -> str:
        return self.spec["version"]

    async def predict(self, req: PredictRequest) -> dict:
        if req.candles is not None:
            candles = [c.model_dump() for c in req.candles]
            # Featurizing is pandas work of a few ms: off the event loop, so stored-feature requests keep flowing.
            windows, as_of = await asyncio.to_thread(self.candles.window_for, req.symbol, candles)
            source, features_version = "candles", None
        else:
            features = self.features
            row, as_of = features.end_row(req.symbol, req.as_of)
            windows = features.windows([row])
            source, features_version = "predict", features.version
        rows = score_rows(await self.score(windows), [req.symbol], [as_of])
        if self.log is not None:
            self.log(rows, source, features_version)
        return rows[0]

    async def predict_batch(self, req: BatchRequest) -> dict:
        features = self.features
        symbols = features.symbols if req.symbols is None else list(dict.fromkeys(req.symbols))
        unknown = [s for s in symbols if s not in features]
        if unknown:
            raise RequestError(404, features.unknown_message(unknown))
        rows, dates, found, skipped = [], [], [], []
        for symbol in symbols:
            try:
                row, as_of = features.end_row(symbol, req.as_of)
            except RequestError as err:  # not traded on as_of: skipped, like `raycast predict`
                skipped.append({"symbol": symbol, "detail": err.detail})
                continue
            rows.append(row)
            dates.append(as_of)
            found.append(symbol)
        predictions = score_rows(await self.score(features.windows(rows)), found, dates) if rows else []
        if self.log is not None:
            self.log(predictions, "batch", features.version)
        return {"model_version": self.version, "count": len(predictions), "predictions": predictions, "skipped": skipped}

    def model_info(self) -> dict:
        spec = self.spec
        split = spec.get("split", {})
        return {
            "version": spec["version"],
            "created": spec.get("created"),
            "run_id": spec.get("run_id"),
            "members": spec["members"],
            "window": spec["features"]["window"],
            "horizon": spec["features"]["horizon"],
            "features": len(spec["features"]["features"]),
            "features_version": spec["features"].get("features_version"),
            "candles_needed": candles_needed(int(spec["features"]["window"])),
            "training_range": split.get("train"),
            "split": split,
            "test_metrics": (spec.get("metrics") or {}).get("test"),
            "code_version": spec.get("code_version"),
        }

    def health(self) -> dict:
        features = self.features
        return {"status": "ok", "model_version": self.version, "symbols": len(features.symbols),
                "features_version": features.version, "latest_date": features.latest}  # fmt: skip

    def symbols_info(self) -> dict:
        rows = []
        features = self.features
        for s in features.symbols:
            first, last = features.date_range(s)
            rows.append({"symbol": s, "first": first, "last": last})
        return {"count": len(rows), "symbols": rows}


# The FastAPI app, built per replica around a PredictionService.


class Unavailable(Exception):
    """The models could not be reached (a replica died and no other answered): a 503, worth retrying."""


class BodyLimit:
    """Pure ASGI middleware: a 413 for a body over ``limit`` bytes, by Content-Length or as it streams in."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            response = JSONResponse({"detail": self._message(int(declared))}, status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # a chunked body has no Content-Length: count it as it arrives
                # FastAPI passes an HTTPException raised while reading the body through unchanged.
                raise HTTPException(413, self._message(seen, at_least=True))
            return message

        return await self.app(scope, limited_receive, send)

    def _message(self, size: int, at_least: bool = False) -> str:
        return f"request body of {'more than ' if at_least else ''}{size} bytes exceeds the limit of {self.limit} bytes"


ERRORS = {
    400: "the body could not be read (e.g. bytes that are not UTF-8)",
    401: "missing or wrong X-API-Key (when the server has a key)",
    404: "unknown symbol, or no stored row on as_of",
    413: "request body over the limit",
    422: "malformed request: the detail names each offending field or candle",
    503: "the models are unreachable for now; retry (Retry-After)",
}


def error_responses(*codes: int) -> dict[int | str, dict]:
    """OpenAPI entries for the errors a route answers, all with the one :class:`ErrorResponse` body."""
    return {code: {"model": ErrorResponse, "description": ERRORS[code]} for code in codes}


def create_api(service: PredictionService, api_key: str | None = None, max_body_bytes: int = 4_000_000) -> FastAPI:
    """The FastAPI app: ``/v1/predict``, ``/v1/predict/batch``, ``/v1/health``, ``/v1/models``, ``/v1/symbols``."""
    app = FastAPI(
        title="raycast",
        version="1",
        description="Next-day return predictions from an ensemble of LSTM, CNN and attention models.",
    )

    expected_key = api_key.encode() if api_key is not None else None

    def require_key(x_api_key: str | None = Header(None, description="required when the server has a key")) -> None:
        # compare_digest: the time taken does not leak how much of a guessed key was right. It compares bytes:
        # on str it raises for non-ASCII text, and a header arrives as its raw bytes decoded as latin-1.
        if expected_key is None:
            return
        if not (x_api_key and secrets.compare_digest(x_api_key.encode("latin-1"), expected_key)):
            raise HTTPException(401, f"missing or invalid {API_KEY_HEADER} header")

    v1 = APIRouter(prefix="/v1", responses=error_responses(413))
    guarded = APIRouter(
        prefix="/v1", dependencies=[Depends(require_key)], responses=error_responses(400, 401, 404, 413, 422, 503)
    )

    @v1.get("/health", response_model=Health)
    async def health() -> dict:
        return service.health()

    @guarded.post("/predict", response_model=Prediction)
    async def predict(req: PredictRequest) -> dict:
        """Predict one symbol's next-day return from stored features (latest or ``as_of``) or from ``candles``."""
        return await service.predict(req)

    @guarded.post("/predict/batch", response_model=BatchResponse)
    async def predict_batch(req: BatchRequest) -> dict:
        """Predict many stored symbols (default: all) in one call."""
        return await service.predict_batch(req)

    @guarded.get("/models", response_model=dict[str, Any])
    async def models() -> dict:
        """The served model: version, training range, test metrics."""
        return service.model_info()

    @guarded.get("/symbols", response_model=Symbols)
    async def symbols() -> dict:
        """Stored symbols and the dates each can be predicted for."""
        return service.symbols_info()

    app.include_router(v1)
    app.include_router(guarded)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, err: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes each offending input back, and a NaN there cannot be written as JSON
        # (a 500). The location and message name the problem; the input is the client's own.
        detail = []
        for e in err.errors():
            msg = e["msg"]
            if "error" in (e.get("ctx") or {}) and str(e["ctx"]["error"]) not in msg:
                msg += f": {e['ctx']['error']}"
            detail.append({"loc": list(e["loc"]), "msg": msg, "type": e["type"]})
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(RequestError)
    async def request_error(_: Request, err: RequestError) -> JSONResponse:
        return JSONResponse({"detail": err.detail}, status_code=err.status_code)

    @app.exception_handler(Unavailable)
    async def unavailable(_: Request, err: Unavailable) -> JSONResponse:
        return JSONResponse({"detail": f"model temporarily unavailable: {err}"}, status_code=503, headers={"Retry-After": "1"})

    app.add_middleware(BodyLimit, limit=max_body_bytes)
    return app
