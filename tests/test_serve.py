"""Serving: real Ray Serve on 127.0.0.1 queried over HTTP, compared with the offline predictor and batch inference.

One application is started for the module; the tests that change it (rollout, replica kill) run last.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from raycast import fs
from raycast.features.spec import compute_symbol_features
from raycast.features.store import FeatureBlocks, current_features_dir, read_feature_frame
from raycast.features.windows import cut_windows, window_ends
from raycast.registry import load_predictor
from raycast.serve.coalescer import Coalescer

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


def test_base_model_batches_concurrent_calls(registered_model):
    """Concurrent calls of two versions share forward passes (one per version), each answer its own windows'.

    The class outside Serve, without a wait (the default); the module's app runs its @serve.batch path."""
    from raycast.serve.deployments import BaseModelServer
    from raycast.serve.deployments import load_base, run_base
    from untrained_models import register_untrained_version

    cfg = registered_model
    version, other = cfg.serve.version, register_untrained_version(cfg, seed=3)
    base = BaseModelServer(cfg.storage, "cnn", version, 0.0, 8, 0.0, 1)
    calls = []
    forward = base._forward
    base._forward = lambda windows, versions: calls.append(list(versions)) or forward(windows, versions)
    predictor = load_predictor(cfg.storage, version)
    rng = np.random.default_rng(0)
    shape = (predictor.window, len(predictor.spec["features"]["features"]))
    windows = [rng.standard_normal((n, *shape), dtype=np.float32) for n in (1, 5, 20, 3, 2)]
    versions = [version, version, other, version, other]

    async def main():
        return await asyncio.gather(*(base.predict(w, v) for w, v in zip(windows, versions, strict=True)))

    for out, w, v in zip(asyncio.run(main()), windows, versions, strict=True):
        np.testing.assert_allclose(out, run_base(load_base(cfg.storage, v, "cnn", torch_cpu()), w, torch_cpu()), **TOL)
    assert calls == [[version], [version, other, version, other]]  # the first at once, then what queued


def torch_cpu():
    import torch

    return torch.device("cpu")


def test_serve_config_builds_the_app(registered_model):
    from ray.serve import Application
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema

    from raycast.serve.app import ServeArgs, build_app, serve_env

    config = ServeDeploySchema.model_validate(yaml.safe_load((Path(__file__).parents[1] / "serve_config.yaml").read_text()))
    app_cfg = config.applications[0]
    # The controller and proxy get what the builder gives the replicas for the same args.
    controller_env = config.controller_options.runtime_env["env_vars"]
    assert config.http_options.host == "127.0.0.1" and controller_env == serve_env(ServeArgs.model_validate(app_cfg.args))
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
def served(registered_model, ray_session, tmp_path_factory):
    from ray import serve

    from raycast.serve.run import start_app

    # A copy of the registered storage: a test below appends market days to it while the app serves.
    storage = tmp_path_factory.mktemp("served") / "store"
    shutil.copytree(registered_model.storage, storage, ignore=shutil.ignore_patterns("predictions"))
    # With a wait, the base models batch with @serve.batch; the direct-ingress app below runs the default. New
    # feature datasets are looked for and the prediction log written every fraction of a second.
    cfg = with_serve(registered_model.model_copy(update={"storage": str(storage)}), api_key=KEY, max_body_bytes=200_000,
                     batch_wait_timeout_s=0.002, reload_interval_s=0.25, log_flush_s=0.2)  # fmt: skip
    start_app(cfg)
    with httpx.Client(base_url=f"http://127.0.0.1:{cfg.serve.port}", headers={"X-API-Key": KEY}, timeout=120) as client:
        yield cfg, client
    serve.shutdown()


def test_health_models_symbols_and_docs(served):
    cfg, client = served
    health = httpx.get(f"http://127.0.0.1:{cfg.serve.port}/v1/health").json()  # no key needed
    latest = client.get("/v1/symbols").json()["symbols"][0]["last"]
    assert health == {"status": "ok", "model_version": cfg.serve.version, "symbols": 12,
                      "features_version": fs.name(current_features_dir(cfg.storage)), "latest_date": latest}  # fmt: skip
    models = client.get("/v1/models").json()
    assert models["version"] == cfg.serve.version and models["members"] == ["lstm", "cnn", "attention"]
    assert models["training_range"]["start"] < models["training_range"]["end"] and models["candles_needed"] == 90
    symbols = client.get("/v1/symbols").json()
    assert symbols["count"] == 12 and symbols["symbols"][0]["first"] < symbols["symbols"][0]["last"]
    assert client.get("/docs").status_code == 200
    assert {"/v1/predict", "/v1/predict/batch", "/v1/health"} <= set(client.get("/openapi.json").json()["paths"])


def test_replicas_run_the_declared_transport_and_niceness(served):
    """Handles built in this (plain) driver would be Ray actor calls at nice 15; the replicas use gRPC, at nice 0."""
    import psutil
    from ray import serve

    from raycast.config import MODEL_NAMES

    assert serve.get_app_handle("raycast").transports.remote().result() == {"ensemble": "grpc"}
    ensemble = serve.get_deployment_handle("ensemble", "raycast")
    assert ensemble.transports.remote().result() == dict.fromkeys(MODEL_NAMES, "grpc")
    nice = {}
    for proc in psutil.process_iter(["cmdline", "nice"]):
        title = " ".join(proc.info["cmdline"] or [])
        if title.startswith(("ray::ServeReplica:raycast:", "ray::ServeController", "ray::ProxyActor")):
            nice[title] = proc.info["nice"]
    assert len(nice) == 2 + 2 + len(MODEL_NAMES), nice  # controller, proxy, ingress, ensemble, bases
    assert set(nice.values()) == {0}, nice


def test_windows_too_large_for_a_grpc_message_are_scored(served):
    """2048 windows: each of the ensemble's base calls would be a ~5 MB gRPC message, over gRPC's 4 MiB cap."""
    from ray import serve

    cfg, _ = served
    predictor = load_predictor(cfg.storage, cfg.serve.version)
    shape = (2048, predictor.window, len(predictor.spec["features"]["features"]))
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    scores = serve.get_deployment_handle("ensemble", "raycast").predict.remote(x, cfg.serve.version).result()
    np.testing.assert_allclose(scores["prediction"], predictor.predict_windows(x)["prediction"], rtol=1e-4, atol=1e-6)


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
    from raycast.serve.offline import predict_universe

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


from polling import wait_for  # noqa: E402


def test_prediction_log_holds_every_answer(served):
    """Stored, as_of, batch and candle answers are logged as the API gave them, in files the monitor reads."""
    from raycast.evaluate.monitor import read_prediction_log
    from raycast.serve.prediction_log import CANDLES_DIR

    cfg, client = served
    first = client.get("/v1/symbols").json()["symbols"][1]["first"]
    since = pd.Timestamp.now(tz="UTC")  # earlier tests asked some of the same: only rows logged from now on
    answers = {
        "predict": [client.post("/v1/predict", json={"symbol": "SYN001", "as_of": first}).json(),
                    client.post("/v1/predict", json={"symbol": "SYN002"}).json()],
        "batch": client.post("/v1/predict/batch", json={"symbols": ["SYN003", "SYN004"]}).json()["predictions"],
        "candles": [client.post("/v1/predict", json={"symbol": "XYZ", "candles": candles_of(cfg, "SYN005", 120)}).json()],
    }  # fmt: skip
    directory = Path(cfg.storage) / "predictions" / cfg.serve.version

    def logged() -> dict | None:
        """The log row per (symbol, date, source) logged since, once every answer's is there."""
        files = sorted([*directory.glob("served-*.parquet"), *(directory / CANDLES_DIR).glob("served-*.parquet")])
        rows = {(r["symbol"], str(r["date"].date()), r["source"]): r
                for f in files for r in pd.read_parquet(f).to_dict("records") if r["predicted_at"] >= since}  # fmt: skip
        return rows if all((a["symbol"], a["as_of"], s) in rows for s, group in answers.items() for a in group) else None

    rows = wait_for(logged, "log rows of the answers")
    for source, group in answers.items():
        for a in group:
            row = rows[(a["symbol"], a["as_of"], source)]
            assert row["model_version"] == a["model_version"] == cfg.serve.version
            assert row["predicted_at"].tzname() == "UTC" and row["prediction"] == a["prediction"]
            for name in ("lstm", "cnn", "attention"):
                assert row[f"base_{name}"] == a["base_predictions"][name] and row[f"weight_{name}"] == a["weights"][name]
            # candles rows have no feature version: a null that a candles-only file may read back as NaN
            expected = None if source == "candles" else fs.name(current_features_dir(cfg.storage))
            assert pd.isna(row["features_version"]) if expected is None else row["features_version"] == expected
    monitor = read_prediction_log(cfg.storage, cfg.serve.version).set_index(["symbol", "date"])["prediction"]
    for a in answers["predict"] + answers["batch"]:
        np.testing.assert_allclose(monitor[(a["symbol"], pd.Timestamp(a["as_of"]))], a["prediction"], **TOL)
    assert "XYZ" not in monitor.index.get_level_values("symbol")  # candles' history is the client's: not monitored


# ------------------------------------------------------------------------- changing the running app


def test_new_market_days_are_served_without_a_redeploy(served, tmp_path):
    """`raycast ingest --append` and `raycast features --incremental` while clients keep requesting: no request
    fails, and the answers move to the new latest date, equal to the offline predictor's on the new rows."""
    from raycast.data.ingest import append_bars
    from raycast.data.store import read_bars
    from raycast.features.incremental import update_features

    cfg, client = served
    old = client.get("/v1/health").json()
    bars = read_bars(cfg.storage)
    days = pd.bdate_range(bars["date"].max() + pd.offsets.BDay(1), periods=3)
    new = bars.sort_values(["symbol", "date"]).groupby("symbol").tail(len(days)).copy()  # the last days again, later
    new["date"] = np.tile(days, new["symbol"].nunique())
    new[["open", "high", "low", "close"]] *= 1.01
    new[["symbol", "date", "open", "high", "low", "close", "volume"]].to_parquet(tmp_path / "days.parquet", index=False)
    latest = str(days[-1].date())
    with Load(entry(cfg)) as load:
        load.wait_until(lambda ld: ld.ok >= ANSWERS, f"{ANSWERS} answers before the new days")
        assert append_bars(cfg, str(tmp_path / "days.parquet"))["published"]
        assert update_features(cfg)["published"]
        load.wait_until(lambda ld: sum(b["as_of"] == latest for _, b in ld.versions) >= ANSWERS, f"{ANSWERS} answers for {latest}")
    assert load.failed == []
    assert {body["as_of"] for _, body in load.versions} == {old["latest_date"], latest}
    health = client.get("/v1/health").json()
    assert health["latest_date"] == latest and health["model_version"] == old["model_version"]
    assert health["features_version"] == fs.name(current_features_dir(cfg.storage)) != old["features_version"]
    expected = cache(lambda i: offline(cfg, cfg.serve.version, f"SYN00{i}"))
    for i, body in load.versions:
        if body["as_of"] == latest:
            assert expected(i)[1] == latest
            assert_matches(body, expected(i)[0])




class Targets:
    """What a load balancer in front of direct ingress does: send to a target Serve currently publishes.

    The target list is re-read every ``period`` s; a stopping replica keeps answering for the draining period,
    so requests never reach a closed port.
    """

    def __init__(self, host: str, period: float = 0.2):
        self.host, self.period, self.lock, self.read, self.urls = host, period, threading.Lock(), 0.0, []

    def __call__(self) -> str:
        from raycast.serve.run import ingress_urls

        with self.lock:
            if time.monotonic() - self.read > self.period or not self.urls:
                self.urls, self.read = ingress_urls(self.host), time.monotonic()
            return random.choice(self.urls)


def entry(cfg) -> str | Targets:
    """Where clients send requests: the proxy, or (direct ingress) the ingress replicas Serve publishes."""
    return Targets(cfg.serve.host) if cfg.serve.direct_ingress else f"http://127.0.0.1:{cfg.serve.port}"


class Load:
    """A few client threads sending stored-feature predictions until stopped; counts outcomes."""

    def __init__(self, base_url: str | Callable[[], str], threads: int = 3):
        self.base_url, self.stop, self.ok, self.failed, self.versions = base_url, threading.Event(), 0, [], []
        self.answered = threading.Condition()  # notified at every outcome
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def wait_until(self, done: Callable[[Load], bool], what: str, timeout: float = 120) -> None:
        """Block until ``done(self)`` holds; fail naming ``what`` after ``timeout`` seconds."""
        with self.answered:
            if not self.answered.wait_for(lambda: done(self), timeout):
                pytest.fail(f"no {what} within {timeout:g} s: {self.ok} answered, failures {self.failed[:3]}")

    def answers_from(self, version: str) -> int:
        return sum(body["model_version"] == version for _, body in self.versions)

    def _run(self, i: int) -> None:
        with httpx.Client(headers={"X-API-Key": KEY}, timeout=180) as client:
            while not self.stop.is_set():
                try:
                    url = self.base_url() if callable(self.base_url) else self.base_url
                    r = client.post(f"{url}/v1/predict", json={"symbol": f"SYN00{i}"})
                    outcome = (i, r.json()) if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as err:
                    outcome = repr(err)
                with self.answered:
                    if isinstance(outcome, tuple):
                        self.ok += 1
                        self.versions.append(outcome)
                    else:
                        self.failed.append(outcome)
                    self.answered.notify_all()
                time.sleep(0.05)  # pacing: the load must not starve the replicas of the machine's CPUs

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=200)


ANSWERS = 10
"""Answers the load must have had before a change to the running app (and, after a rollout, from the new version)."""


def roll_out_under_load(cfg, client, version: str) -> "Load":
    """Redeploy the app on ``version`` while a client keeps requesting; returns the finished load's record.

    The redeploy is the daily cycle's rollout (``raycast.daily.roll_out_serving``), what runs when a retrained
    candidate wins.
    """
    from raycast.daily import roll_out_serving

    with Load(entry(cfg)) as load:
        load.wait_until(lambda ld: ld.ok >= ANSWERS, f"{ANSWERS} answers before the rollout")
        said = roll_out_serving(cfg, version)  # returns once every replica is replaced
        assert said == f"Serve application 'raycast' now serves {version}", said
        load.wait_until(lambda ld: ld.answers_from(version) >= ANSWERS, f"{ANSWERS} answers from {version}")
    assert client.get("/v1/health").json()["model_version"] == version
    return load


def rollout_of_a_new_version_fails_no_request(served):
    from untrained_models import register_untrained_version

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


def rollout_to_other_members_fails_no_request(served):
    """The new version drops the attention model: old ensemble replicas still reach it until they are replaced."""
    from untrained_models import register_untrained_version

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


def base_replica_killed_under_load_recovers(served):
    import ray
    from ray import serve

    cfg, client = served

    def lstm_replicas() -> set[str]:
        return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "#lstm#" in a["name"]}

    (victim,) = lstm_replicas()
    with Load(entry(cfg)) as load:
        load.wait_until(lambda ld: ld.ok >= ANSWERS, f"{ANSWERS} answers before the kill")
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


def test_rollout_of_a_new_version_under_load_fails_no_request(served):
    rollout_of_a_new_version_fails_no_request(served)


def test_rollout_to_a_version_with_other_members_fails_no_request(served):
    rollout_to_other_members_fails_no_request(served)


def test_base_replica_killed_under_load_recovers(served):
    base_replica_killed_under_load_recovers(served)


# ---------------------------------------------------------------------------- direct ingress (runs last)


@pytest.fixture(scope="module")
def served_direct(served):
    """The module's app again, under direct ingress: Serve restarts, as its controller reads the mode at start."""
    from ray import serve

    from raycast.serve.run import start_app

    serve.shutdown()
    cfg = with_serve(served[0], direct_ingress=True, batch_wait_timeout_s=0.0)
    start_app(cfg)
    with httpx.Client(base_url=f"http://127.0.0.1:{cfg.serve.port}", headers={"X-API-Key": KEY}, timeout=120) as client:
        yield cfg, client
    serve.shutdown()


def test_direct_ingress_replicas_answer_on_their_own_ports(served_direct):
    import psutil

    from raycast.serve.run import ingress_urls, where_served

    cfg, client = served_direct
    (url,) = ingress_urls(cfg.serve.host)  # one ingress replica, on a port of its own
    assert url.startswith("http://127.0.0.1:") and not url.endswith(f":{cfg.serve.port}")
    assert f"at {url}/v1 (direct ingress" in where_served(cfg, cfg.serve.version)  # what `raycast serve` prints
    direct = httpx.post(f"{url}/v1/predict", json={"symbol": "SYN004"}, headers={"X-API-Key": KEY}, timeout=60)
    assert direct.status_code == 200, direct.text
    assert direct.json() == client.post("/v1/predict", json={"symbol": "SYN004"}).json()  # the proxy still answers
    for proc in psutil.process_iter(["cmdline"]):  # a stopping ingress replica drains 2 s, not Serve's 30 s
        if " ".join(proc.info["cmdline"] or []).startswith(("ray::ServeReplica:raycast:ingress", "ray::ServeController")):
            assert proc.environ()["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "2"


def test_direct_ingress_rollout_of_a_new_version_fails_no_request(served_direct):
    rollout_of_a_new_version_fails_no_request(served_direct)


def test_direct_ingress_rollout_to_other_members_fails_no_request(served_direct):
    rollout_to_other_members_fails_no_request(served_direct)


def test_direct_ingress_base_replica_killed_recovers(served_direct):
    base_replica_killed_under_load_recovers(served_direct)


def test_direct_ingress_app_stops_without_a_30_s_drain(served_direct):
    from ray import serve

    started = time.monotonic()
    serve.delete("raycast")
    assert time.monotonic() - started < 20
