"""Serving: real Ray Serve on 127.0.0.1 queried over HTTP, compared with the offline predictor and batch inference.

One application is started for the module; the tests that change it (rollout, replica kill) run last.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import socket
import threading
import time
from functools import cache
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from raycast.features.spec import compute_symbol_features
from raycast.features.store import FeatureBlocks, current_features_dir, read_feature_frame
from raycast.features.windows import cut_windows, window_ends
from raycast.registry import load_predictor
from raycast.serve.batching import Coalescer

pytestmark = pytest.mark.slow
KEY = "test-key"
TOL = {"rtol": 1e-5, "atol": 1e-7}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_serve(cfg, **serve):
    return cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"port": free_port(), **serve})})


def offline(cfg, version: str, symbol: str, date: str | None = None) -> tuple[dict, str]:
    """The offline ensemble on the stored window of (symbol, date), cut with the training code path."""
    predictor = load_predictor(cfg.storage, version)
    frame = read_feature_frame(current_features_dir(cfg.storage), [symbol])
    blocks = FeatureBlocks(frame, predictor.normalizer, predictor.window)
    ends = blocks.ends(require_target=False)
    end = ends[-1] if date is None else ends[blocks.dates[ends] == np.datetime64(date, "ns")][0]
    out = predictor.predict_windows(cut_windows(blocks.x, np.array([end]), predictor.window))
    return out, str(pd.Timestamp(blocks.dates[end]).date())


def assert_matches(body: dict, out: dict, i: int = 0) -> None:
    np.testing.assert_allclose(body["prediction"], out["prediction"][i], **TOL)
    for name, values in out["base_predictions"].items():
        np.testing.assert_allclose(body["base_predictions"][name], values[i], **TOL)
        np.testing.assert_allclose(body["weights"][name], out["weights"][name][i], **TOL)


def candles_of(cfg, symbol: str, n: int | None = None) -> list[dict]:
    from raycast.data.store import read_bars

    bars = read_bars(cfg.storage, [symbol])
    bars = bars if n is None else bars.tail(n)
    return [{"date": str(r.date.date()), "open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}
            for r in bars.itertuples()]  # fmt: skip


# ------------------------------------------------------------------------------------------- no Serve


def test_coalescer_batches_what_queued_while_busy():
    calls = []

    async def fn(items):
        calls.append(list(items))
        await asyncio.sleep(0.01)
        return [x * 10 for x in items]

    async def main():
        c = Coalescer(fn, max_items=8, slots=1)
        return await asyncio.gather(*(c.submit(i) for i in range(20)))

    assert asyncio.run(main()) == [i * 10 for i in range(20)]
    assert calls[0] == [0] and max(map(len, calls)) == 8 and sum(map(len, calls)) == 20  # no wait for the first


def test_serve_config_builds_the_app(registered_model):
    from ray.serve import Application
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema

    from raycast.serve.app import SERVE_ENV, build_app

    config = ServeDeploySchema.model_validate(yaml.safe_load((Path(__file__).parents[1] / "serve_config.yaml").read_text()))
    assert config.http_options.host == "127.0.0.1" and config.controller_options.runtime_env["env_vars"] == SERVE_ENV
    app_cfg = config.applications[0]
    assert app_cfg.import_path == "raycast.serve.app:build_app"
    app = call_user_app_builder_with_args_if_necessary(build_app, {**app_cfg.args, "storage": registered_model.storage})
    assert isinstance(app, Application)
    with pytest.raises(Exception, match="not_a_key"):
        call_user_app_builder_with_args_if_necessary(build_app, {"storage": registered_model.storage, "not_a_key": 1})


def test_serve_forever_runs_until_interrupted(registered_model, ray_session):
    """`raycast serve`: serves, and a signal stops it cleanly (the app is deleted; this Ray keeps running)."""
    from ray import serve

    from raycast.serve.run import serve_forever

    cfg = with_serve(registered_model)
    seen = {}

    def poke():  # waits for the API to answer, then presses Ctrl-C (after 5 minutes: anyway)
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{cfg.serve.port}/v1/health", timeout=5)
                if r.status_code == 200:
                    seen["health"] = r.json()
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=poke, daemon=True).start()
    try:
        serve_forever(cfg)
        assert seen["health"]["model_version"] == cfg.serve.version
        assert "raycast" not in serve.status().applications
    finally:
        serve.shutdown()  # Serve's proxy keeps its first port: the module's app starts its own


# ---------------------------------------------------------------------------------------- one app


@pytest.fixture(scope="module")
def served(registered_model, ray_session):
    from ray import serve

    from raycast.serve.run import start_app

    cfg = with_serve(registered_model, api_key=KEY, max_body_bytes=200_000)
    start_app(cfg)
    with httpx.Client(base_url=f"http://127.0.0.1:{cfg.serve.port}", headers={"X-API-Key": KEY}, timeout=120) as client:
        yield cfg, client
    serve.shutdown()


def test_health_models_symbols_and_docs(served):
    cfg, client = served
    health = httpx.get(f"http://127.0.0.1:{cfg.serve.port}/v1/health").json()  # no key needed
    assert health == {"status": "ok", "model_version": cfg.serve.version, "symbols": 12}
    models = client.get("/v1/models").json()
    assert models["version"] == cfg.serve.version and models["members"] == ["lstm", "cnn", "attention"]
    assert models["training_range"]["start"] < models["training_range"]["end"] and models["candles_needed"] == 90
    symbols = client.get("/v1/symbols").json()
    assert symbols["count"] == 12 and symbols["symbols"][0]["first"] < symbols["symbols"][0]["last"]
    assert client.get("/docs").status_code == 200
    assert {"/v1/predict", "/v1/predict/batch", "/v1/health"} <= set(client.get("/openapi.json").json()["paths"])


def test_api_key_is_required(served):
    cfg, client = served
    for headers in ({}, {"X-API-Key": "wrong"}):
        r = httpx.post(f"http://127.0.0.1:{cfg.serve.port}/v1/predict", json={"symbol": "SYN000"}, headers=headers)
        assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]


def test_served_prediction_equals_offline(served):
    cfg, client = served
    latest = client.post("/v1/predict", json={"symbol": "SYN003"}).json()
    out, date = offline(cfg, cfg.serve.version, "SYN003")
    assert latest["as_of"] == date and latest["model_version"] == cfg.serve.version and latest["symbol"] == "SYN003"
    assert_matches(latest, out)
    assert abs(sum(latest["weights"].values()) - 1) < 1e-5
    first = client.get("/v1/symbols").json()["symbols"][3]["first"]
    body = client.post("/v1/predict", json={"symbol": "SYN003", "as_of": first}).json()
    out, date = offline(cfg, cfg.serve.version, "SYN003", first)
    assert body["as_of"] == date == first
    assert_matches(body, out)


def test_candles_prediction_equals_offline(served):
    cfg, client = served
    candles = candles_of(cfg, "SYN005", 120)
    body = client.post("/v1/predict", json={"symbol": "XYZ", "candles": candles}).json()
    predictor = load_predictor(cfg.storage, cfg.serve.version)
    bars = pd.DataFrame(candles).assign(symbol="XYZ", date=lambda f: pd.to_datetime(f["date"]))
    rows = compute_symbol_features(bars, features=predictor.spec["features"]["features"])
    x = predictor.normalizer.transform(rows[predictor.normalizer.features].to_numpy(np.float32))
    end = window_ends(rows["t"].to_numpy(), predictor.window)[-1:]
    assert body["symbol"] == "XYZ" and body["as_of"] == candles[-1]["date"]
    assert_matches(body, predictor.predict_windows(cut_windows(x, end, predictor.window)))
    # The whole history as candles gives the stored-feature prediction: same features, same statistics.
    full = client.post("/v1/predict", json={"symbol": "SYN005", "candles": candles_of(cfg, "SYN005")}).json()
    stored = client.post("/v1/predict", json={"symbol": "SYN005"}).json()
    np.testing.assert_allclose(full["prediction"], stored["prediction"], rtol=1e-4, atol=1e-6)


def test_batch_equals_single_predictions(served):
    cfg, client = served
    batch = client.post("/v1/predict/batch", json={}).json()
    assert batch["count"] == 12 and batch["skipped"] == [] and batch["model_version"] == cfg.serve.version
    single = client.post("/v1/predict", json={"symbol": batch["predictions"][7]["symbol"]}).json()
    np.testing.assert_allclose(batch["predictions"][7]["prediction"], single["prediction"], **TOL)
    some = client.post("/v1/predict/batch", json={"symbols": ["SYN001", "SYN002"], "as_of": single["as_of"]}).json()
    assert [p["symbol"] for p in some["predictions"]] == ["SYN001", "SYN002"]
    sunday = dt.date.fromisoformat(single["as_of"]) - dt.timedelta(days=dt.date.fromisoformat(single["as_of"]).isoweekday() % 7)
    none = client.post("/v1/predict/batch", json={"symbols": ["SYN001"], "as_of": str(sunday)}).json()
    assert none["count"] == 0 and "not a trading day" in none["skipped"][0]["detail"]


def _bad_candles(cfg, change):
    candles = candles_of(cfg, "SYN000", 100)
    change(candles)
    return {"symbol": "SYN000", "candles": candles}


BAD = {
    "malformed JSON": (lambda cfg: b'{"symbol": "SYN000",', 422, "JSON"),
    "missing field": (lambda cfg: {"as_of": "2016-01-04"}, 422, "symbol"),
    "unknown field": (lambda cfg: {"symbol": "SYN000", "horizon": 5}, 422, "horizon"),
    "wrong type": (lambda cfg: {"symbol": 123}, 422, "string"),
    "empty body": (lambda cfg: b"", 422, "required"),
    "NaN": (lambda cfg: json.dumps(_bad_candles(cfg, lambda c: c[50].update(close=float("nan")))).encode(), 422, "finite"),
    "infinity": (lambda cfg: json.dumps(_bad_candles(cfg, lambda c: c[50].update(volume=float("inf")))).encode(), 422, "finite"),
    "non-positive price": (lambda cfg: _bad_candles(cfg, lambda c: c[60].update(low=-1.0)), 422, "non_positive_price"),
    "high below low": (lambda cfg: _bad_candles(cfg, lambda c: c[61].update(high=c[61]["low"] / 2)), 422, "high_below_low"),
    "unsorted dates": (lambda cfg: _bad_candles(cfg, lambda c: c.insert(70, c.pop(10))), 422, "out of order"),
    "duplicate dates": (lambda cfg: _bad_candles(cfg, lambda c: c.insert(70, dict(c[69]))), 422, "duplicate"),
    "too few candles": (lambda cfg: {"symbol": "SYN000", "candles": candles_of(cfg, "SYN000", 40)}, 422, "need at least 90"),
    "as_of with candles": (lambda cfg: _bad_candles(cfg, lambda c: None) | {"as_of": "2016-01-04"}, 422, "not both"),
    "unknown symbol": (lambda cfg: {"symbol": "NOPE"}, 404, "unknown symbol"),
    "as_of outside the data": (lambda cfg: {"symbol": "SYN000", "as_of": "1990-01-02"}, 422, "outside"),
    "as_of not a trading day": (lambda cfg: {"symbol": "SYN000", "as_of": "2016-01-03"}, 422, "not a trading day"),
    "oversized body": (lambda cfg: b'{"symbol": "' + b"A" * 300_000 + b'"}', 413, "exceeds the limit"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_4xx_naming_the_problem(served, case):
    cfg, client = served
    make, status, words = BAD[case]
    payload = make(cfg)
    r = client.post("/v1/predict", content=payload, headers={"Content-Type": "application/json"}) \
        if isinstance(payload, bytes) else client.post("/v1/predict", json=payload)  # fmt: skip
    assert r.status_code == status, r.text
    assert words.lower() in r.text.lower(), r.text
    if case == "non-positive price":
        assert candles_of(cfg, "SYN000", 100)[60]["date"] in r.text  # names the offending date


def test_other_bad_requests(served):
    cfg, client = served
    r = client.post("/v1/predict/batch", json={"symbols": ["SYN000", "NOPE"]})
    assert r.status_code == 404 and "NOPE" in r.text

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        yield b'{"symbol": "'
        for _ in range(30):
            yield b"A" * 10_000
        yield b'"}'

    r = client.post("/v1/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert client.get("/v1/health").status_code == 200  # still up


def test_predict_universe_equals_http(served, tmp_path):
    from raycast.serve.batch import predict_universe

    cfg, client = served
    last = client.get("/v1/symbols").json()["symbols"][0]["last"]
    summary = predict_universe(cfg, last, None, str(tmp_path / "signals.parquet"))
    table = pd.read_parquet(summary["output"])
    assert summary["rows"] == len(table) == 12 and summary["model_version"] == cfg.serve.version
    assert {"symbol", "date", "prediction", "base_lstm", "weight_cnn", "model_version"} <= set(table.columns)
    http = client.post("/v1/predict/batch", json={"as_of": last}).json()["predictions"]
    by_symbol = table.set_index("symbol")
    for p in http:
        row = by_symbol.loc[p["symbol"]]
        assert str(row["date"].date()) == p["as_of"] == last and row["model_version"] == p["model_version"]
        np.testing.assert_allclose(row["prediction"], p["prediction"], **TOL)
        for name in ("lstm", "cnn", "attention"):
            np.testing.assert_allclose(row[f"base_{name}"], p["base_predictions"][name], **TOL)
            np.testing.assert_allclose(row[f"weight_{name}"], p["weights"][name], **TOL)
    days = sorted(set(pd.bdate_range(end=last, periods=5).date))
    summary = predict_universe(cfg, str(days[0]), last, str(tmp_path / "range.parquet"))
    assert summary["rows"] == 12 * 5 and summary["date_min"] == str(days[0])


# ------------------------------------------------------------------------- changing the running app


class Load:
    """A few client threads sending stored-feature predictions until stopped; counts outcomes."""

    def __init__(self, base_url: str, threads: int = 3):
        self.base_url, self.stop, self.ok, self.failed, self.versions = base_url, threading.Event(), 0, [], []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i: int) -> None:
        with httpx.Client(base_url=self.base_url, headers={"X-API-Key": KEY}, timeout=180) as client:
            while not self.stop.is_set():
                try:
                    r = client.post("/v1/predict", json={"symbol": f"SYN00{i}"})
                    if r.status_code == 200:
                        self.ok += 1
                        self.versions.append((i, r.json()))
                    else:
                        self.failed.append(f"HTTP {r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as err:
                    self.failed.append(repr(err))
                time.sleep(0.05)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=200)


def roll_out_under_load(cfg, client, version: str) -> "Load":
    """Redeploy the app on ``version`` while a client keeps requesting; returns the finished load's record."""
    from ray import serve

    from raycast.serve.app import ServeArgs, build_app

    with Load(f"http://127.0.0.1:{cfg.serve.port}") as load:
        time.sleep(1)
        args = ServeArgs.from_config(cfg).model_copy(update={"version": version})
        serve.run(build_app(args), name="raycast", route_prefix="/")  # returns once every replica is replaced
        deadline = time.time() + 60
        while client.get("/v1/health").json()["model_version"] != version and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(1)
    return load


def test_rollout_of_a_new_version_under_load_fails_no_request(served):
    from raycast.serve.untrained import register_untrained_version

    cfg, client = served
    old = cfg.serve.version
    new = register_untrained_version(cfg, seed=1)
    load = roll_out_under_load(cfg, client, new)
    assert load.failed == [] and load.ok > 10
    assert {body["model_version"] for _, body in load.versions} == {old, new}
    # Every answer is one version's, whole: never one version's bases under the other's head.
    expected = cache(lambda version, i: offline(cfg, version, f"SYN00{i}")[0])
    for i, body in load.versions:
        assert_matches(body, expected(body["model_version"], i))


def test_rollout_to_a_version_with_other_members_fails_no_request(served):
    """The new version drops the attention model: old ensemble replicas still reach it until they are replaced."""
    from raycast.serve.untrained import register_untrained_version

    cfg, client = served
    old = client.get("/v1/health").json()["model_version"]
    two = cfg.models.model_copy(update={"ensemble": cfg.models.ensemble.model_copy(update={"members": ["lstm", "cnn"]})})
    new = register_untrained_version(cfg.model_copy(update={"models": two}), seed=2)
    load = roll_out_under_load(cfg, client, new)
    assert load.failed == [] and load.ok > 10
    assert {body["model_version"] for _, body in load.versions} == {old, new}
    expected = cache(lambda version, i: offline(cfg, version, f"SYN00{i}")[0])
    for i, body in load.versions:
        members = {"lstm", "cnn"} if body["model_version"] == new else {"lstm", "cnn", "attention"}
        assert set(body["base_predictions"]) == set(body["weights"]) == members
        assert_matches(body, expected(body["model_version"], i))


def test_base_replica_killed_under_load_recovers(served):
    import ray
    from ray import serve

    cfg, client = served

    def lstm_replicas() -> set[str]:
        return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "#lstm#" in a["name"]}

    (victim,) = lstm_replicas()
    with Load(f"http://127.0.0.1:{cfg.serve.port}") as load:
        time.sleep(1)
        before = load.ok
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        deadline = time.time() + 120
        while time.time() < deadline and not (lstm_replicas() - {victim} and load.ok > before + 20):
            time.sleep(0.5)
    assert lstm_replicas() - {victim}, "no new lstm replica"
    assert load.ok > before + 20, "the service did not recover"
    assert len(load.failed) <= 3, load.failed  # only requests in flight on the killed replica may fail
    assert serve.status().applications["raycast"].status == "RUNNING"
    assert client.post("/v1/predict", json={"symbol": "SYN000"}).status_code == 200
