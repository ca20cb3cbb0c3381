"""Property-based tests of the HTTP API: Schemathesis generates requests from the live Serve application's own
``/openapi.json`` (valid requests and invalid ones) and checks every answer against that schema.

No request may get a 5xx, every response must be one the schema documents (status, content type, body), and the
service must still answer afterwards. A fixed budget of examples per endpoint, derandomized, keeps the run short
and the same on every run. The hand-written matrix of messages lives in test_serve.py and test_serve_api.py.
"""

from __future__ import annotations

import socket
from collections import Counter

import httpx
import numpy as np
import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.slow
KEY = "schema-test-key"
EXAMPLES = 100  # generated requests per endpoint
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
OPERATIONS = [
    ("GET", "/v1/health"),
    ("GET", "/v1/models"),
    ("GET", "/v1/symbols"),
    ("POST", "/v1/predict"),
    ("POST", "/v1/predict/batch"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def base_url(registered_model):
    from ray import serve

    from raycast.serve.run import start_app

    serve_cfg = registered_model.serve.model_copy(update={"port": _free_port(), "api_key": KEY})
    cfg = registered_model.model_copy(update={"serve": serve_cfg})
    start_app(cfg)
    yield f"http://127.0.0.1:{cfg.serve.port}"
    serve.shutdown()


@pytest.fixture(scope="module")
def api_schema(base_url):
    config = schemathesis.Config()
    config.projects.default.update(base_url=base_url)
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config, timeout=30)


@pytest.fixture(scope="module")
def stored_symbols(base_url) -> list[str]:
    body = httpx.get(f"{base_url}/v1/symbols", headers={"X-API-Key": KEY}, timeout=30).json()
    return [s["symbol"] for s in body["symbols"]]


def test_the_schema_documents_exactly_the_operations_tested(api_schema):
    operations = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert operations == set(OPERATIONS)


def with_stored_symbols(case, data, symbols: list[str]) -> None:
    # Generated tickers are never stored ones, so every request would stop at the 404. Half the time a stored
    # ticker goes in, and the generated dates and candles reach the code behind the lookup.
    body = case.body
    if not isinstance(body, dict) or not data.draw(st.booleans(), label="stored symbol"):
        return
    if isinstance(body.get("symbol"), str):
        body["symbol"] = data.draw(st.sampled_from(symbols), label="symbol")
    if isinstance(body.get("symbols"), list):
        body["symbols"] = data.draw(st.lists(st.sampled_from(symbols), max_size=4), label="symbols")


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_every_answer_is_documented_and_none_is_a_server_error(api_schema, stored_symbols, method, path):
    operation = api_schema[path][method]
    # Valid requests and invalid ones (wrong types, missing or extra fields...). The key is fixed so that the
    # requests reach the endpoints; the 401 path is tested below with keys no generator would try.
    modes = [operation.as_strategy(mode, headers={"X-API-Key": KEY}) for mode in GenerationMode]
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,  # the same requests on every run
        database=None,
        deadline=None,
        phases=[Phase.generate],  # no shrinking: a failure shows the request as generated
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(modes), data=st.data())
    def property_run(case, data):
        with_stored_symbols(case, data, stored_symbols)
        response = case.call_and_validate(checks=CHECKS, timeout=60)
        statuses[response.status_code] += 1

    property_run()
    # a GET without parameters is one request; every body-taking endpoint gets the full budget
    assert sum(statuses.values()) == (1 if method == "GET" else EXAMPLES), statuses
    print(f"{method} {path}: {dict(sorted(statuses.items()))}")


def test_the_service_still_answers_after_the_property_run(base_url):
    health = httpx.get(f"{base_url}/v1/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    symbols = httpx.get(f"{base_url}/v1/symbols", headers={"X-API-Key": KEY}, timeout=30).json()["symbols"]
    answer = httpx.post(f"{base_url}/v1/predict", json={"symbol": symbols[0]["symbol"]}, headers={"X-API-Key": KEY})
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    "key",
    [
        "clé-secrète".encode(),  # UTF-8 bytes: the server reads them as latin-1 text
        "schema-test-kéy".encode("latin-1"),
        b"\xff\xfe",
        KEY.encode() + b"\x80",  # the right key with one byte more
    ],
)
def test_a_non_ascii_api_key_is_a_401(base_url, key):
    response = httpx.post(f"{base_url}/v1/predict", json={"symbol": "SYN000"}, headers={"X-API-Key": key})
    assert response.status_code == 401, response.text
    assert "X-API-Key" in response.json()["detail"]


def _candles(n: int, first_date: str) -> list[dict]:
    """``n`` plausible daily bars on business days, the first one dated ``first_date``."""
    days = pd.bdate_range("2020-01-01", periods=n)
    close = 100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, n)))
    bars = [{"date": str(d.date()), "open": c, "high": c * 1.01, "low": c * 0.99, "close": c, "volume": 1e6}
            for d, c in zip(days, close, strict=True)]  # fmt: skip
    bars[0]["date"] = first_date
    return bars


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/v1/predict", {"symbol": "SYN000", "as_of": "0001-01-01"}, ["body", "as_of"]),
        ("/v1/predict", {"symbol": "SYN000", "as_of": "9999-12-31"}, ["body", "as_of"]),
        ("/v1/predict/batch", {"as_of": "1500-06-01"}, ["body", "as_of"]),
        ("/v1/predict", {"symbol": "XYZ", "candles": "first of enough candles"}, ["body", "candles", 0, "date"]),
    ],
)
def test_a_date_outside_the_timestamp_range_is_a_422_naming_it(base_url, path, body, loc):
    if body.get("candles"):
        needed = httpx.get(f"{base_url}/v1/models", headers={"X-API-Key": KEY}, timeout=30).json()["candles_needed"]
        body = body | {"candles": _candles(needed + 5, "0001-01-01")}
    response = httpx.post(f"{base_url}{path}", json=body, headers={"X-API-Key": KEY}, timeout=30)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == loc and "outside the supported range 1678-01-01..2261-12-31" in error["msg"], error
