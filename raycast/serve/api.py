"""The versioned HTTP API (FastAPI), built per replica around a :class:`PredictionService`.

Bad input is always a 4xx whose message names the problem: 422 for malformed JSON, missing, unknown or
non-finite fields and invalid candles; 404 for an unknown symbol; 413 for a body over the limit; 401 for a
missing or wrong API key (when one is configured). A model replica that is gone even after a retry is a 503.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from raycast.serve.errors import RequestError
from raycast.serve.schemas import (
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    Health,
    Prediction,
    PredictRequest,
    Symbols,
)
from raycast.serve.service import PredictionService

API_KEY_HEADER = "X-API-Key"


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
        return {"status": "ok", "model_version": service.version, "symbols": len(service.features.symbols)}

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
