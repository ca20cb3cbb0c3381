"""Ray Serve composition vs a bare single-process FastAPI server, same models, same API, same run.

For ``/v1/predict`` (stored features and candles) and ``/v1/predict/batch`` (the whole universe): latency p50/p99
of sequential requests, and throughput at concurrency 1, 16, 32 and 64; load only against 127.0.0.1, each point
bounded in time. The bare baseline is ``serve_baseline.py`` (uvicorn, the ensemble in process).

    python benchmarks/bench_serve.py [--quick] [--storage DIR] [--seconds 4] [--json out.json]

Without ``--storage`` (or with an empty one) a synthetic universe is built and an untrained ensemble with the
default (full-size) architecture is registered: latency does not depend on what the weights learned.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import encode_request, measure  # noqa: E402

from raycast.config import RaycastConfig, parse_config  # noqa: E402

HOST = "127.0.0.1"
CONCURRENCY = (1, 16, 32, 64)
# Anchors (ANCHORS.md section 2, 2-core CPU machine, stored-feature-like JSON path): naive Serve vs bare FastAPI.
ANCHOR = "naive Serve: seq p50 19 ms, 49 req/s at c1, 91 at c16 | bare FastAPI: p50 3.0 ms, 280 at c1, 456 at c16, 290 at c64"


def prepare_storage(storage: str, n_symbols: int, n_days: int) -> RaycastConfig:
    """A config over ``storage``, with a registered model (built here when the registry is empty)."""
    from raycast.registry import list_versions

    cfg = parse_config({
        "storage": storage, "ray": {"num_cpus": max(4, os.cpu_count() or 1)},
        "ingest": {"source": "synthetic", "synthetic": {"n_symbols": n_symbols, "n_days": n_days}},
        "features": {"symbols_per_task": 10, "num_cpus_per_task": 1},
    })  # fmt: skip
    if not list_versions(storage):
        from raycast.data.ingest import ingest
        from raycast.features.pipeline import build_features
        from raycast.serve.untrained import register_untrained_version

        print(f"[bench] building a synthetic universe of {n_symbols} symbols x {n_days} days in {storage}", flush=True)
        ingest(cfg)
        build_features(cfg)
        register_untrained_version(cfg, seed=0)
    return cfg


def payloads(cfg: RaycastConfig, candles: int) -> dict[str, list[bytes]]:
    """Pre-encoded request bodies per endpoint: stored (every symbol), candles (a few symbols), batch (all)."""
    from raycast.data.store import list_symbols, read_bars

    symbols = list_symbols(cfg.storage)
    rng = random.Random(0)
    stored = [encode_request("POST", "/v1/predict", json.dumps({"symbol": s}).encode()) for s in rng.sample(symbols, len(symbols))]
    with_candles = []
    for s in symbols[:8]:
        bars = read_bars(cfg.storage, [s]).tail(candles)
        rows = [{"date": str(d.date()), "open": o, "high": h, "low": lo, "close": c, "volume": v}
                for d, o, h, lo, c, v in bars[["date", "open", "high", "low", "close", "volume"]].itertuples(index=False)]  # fmt: skip
        with_candles.append(encode_request("POST", "/v1/predict", json.dumps({"symbol": s, "candles": rows}).encode()))
    batch = [encode_request("POST", "/v1/predict/batch", b"{}")]
    return {"predict (stored)": stored, "predict (candles)": with_candles, "predict/batch (universe)": batch}


def wait_ready(port: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"http://{HOST}:{port}/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"no server on {HOST}:{port} after {timeout} s")


def bench_point(port: int, requests: list[bytes], concurrency: int, seconds: float) -> dict:
    measure(HOST, port, requests, concurrency, min(0.5, seconds / 4))  # warm connections and batch queues
    r = measure(HOST, port, requests, concurrency, seconds)
    return {"rps": r.rps, "p50_ms": r.pct(50), "p99_ms": r.pct(99), "ok": r.ok, "errors": r.errors, "first_error": r.first_error}


def print_table(results: dict) -> None:
    head = f"| endpoint | server | seq p50 ms | seq p99 ms | {' | '.join(f'req/s c{c}' for c in CONCURRENCY)} | p99 ms c32 | errors |"
    print("\n" + head + "\n|" + "---|" * (head.count("|") - 1))
    for endpoint, servers in results.items():
        for server, points in servers.items():
            seq = points[1]
            rps = " | ".join(f"{points[c]['rps']:.0f}" for c in CONCURRENCY)
            errors = sum(p["errors"] for p in points.values())
            print(f"| {endpoint} | {server} | {seq['p50_ms']:.1f} | {seq['p99_ms']:.1f} | {rps} | {points[32]['p99_ms']:.0f} | {errors} |")
        if {"serve", "bare"} <= servers.keys():
            s, b = servers["serve"], servers["bare"]
            print(f"| {endpoint} | serve vs bare | {s[1]['p50_ms'] - b[1]['p50_ms']:+.1f} | | "
                  + " | ".join(f"{s[c]['rps'] / b[c]['rps']:.0%}" if b[c]["rps"] else "-" for c in CONCURRENCY) + " | | |")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", help="raycast storage with a registered model (default: a fresh synthetic one)")
    p.add_argument("--quick", action="store_true", help="short points, smaller universe")
    p.add_argument("--seconds", type=float, help="seconds per measurement point")
    p.add_argument("--symbols", type=int, help="synthetic universe size (batch endpoint scores all of them)")
    p.add_argument("--serve-port", type=int, default=8765)
    p.add_argument("--bare-port", type=int, default=8766)
    p.add_argument("--json", help="write the raw results here")
    a = p.parse_args()
    seconds = a.seconds or (1.5 if a.quick else 4.0)
    storage = a.storage or tempfile.mkdtemp(prefix="raycast-bench-")
    cfg = prepare_storage(storage, a.symbols or (50 if a.quick else 200), 400 if a.quick else 600)
    cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"port": a.serve_port, "host": HOST})})

    from ray import serve

    from raycast.serve.run import start_app

    bare = subprocess.Popen([sys.executable, str(Path(__file__).with_name("serve_baseline.py")), "--storage", cfg.storage,
                             "--port", str(a.bare_port), "--host", HOST])  # fmt: skip
    try:
        start_app(cfg)
        wait_ready(a.serve_port)
        wait_ready(a.bare_port)
        bodies = payloads(cfg, candles=120)
        ports = {"bare": a.bare_port, "serve": a.serve_port}
        results: dict = {}
        load = os.getloadavg()
        started = time.time()
        for endpoint, requests in bodies.items():
            results[endpoint] = {name: {} for name in ports}
            for c in CONCURRENCY:
                for name, port in ports.items():  # interleaved: both servers see the same machine conditions
                    results[endpoint][name][c] = bench_point(port, requests, c, seconds)
                    pt = results[endpoint][name][c]
                    print(f"[bench] {endpoint:26s} {name:5s} c{c:<3d} {pt['rps']:7.1f} req/s  p50 {pt['p50_ms']:6.1f} ms  "
                          f"p99 {pt['p99_ms']:7.1f} ms  errors {pt['errors']} {pt['first_error'][:120]}", flush=True)  # fmt: skip
        print(f"\n{os.cpu_count()} CPUs; load average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f}; "
              f"{time.time() - started:.0f} s of load; {seconds} s per point; universe of {len(bodies['predict (stored)'])} symbols")  # fmt: skip
        print_table(results)
        print(f"\nanchors (ANCHORS.md, 2-core CPU): {ANCHOR}")
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=2))
    finally:
        bare.terminate()
        bare.wait(timeout=30)
        serve.shutdown()


if __name__ == "__main__":
    main()
