"""raycast on Ray Serve against its peers, same models, same API, same run, and the serving targets side by side.

Servers, all up at once and measured interleaved (on a shared machine conditions drift more than the
differences measured):

- ``serve``: the application as ``raycast serve`` deploys it, with direct ingress (requests go to the ingress
  replica's own port, found in Serve's published targets) and, the same deployment, ``serve via proxy``;
- ``ray actors``: the same classes as plain Ray actors without Serve (``serve_actors.py``): what Serve costs;
- ``bare``: one uvicorn process with the whole ensemble and one torch thread (``serve_baseline.py``), each request
  on its own; ``bare batched``: the same, batching concurrent requests as Serve's ingress does;
- the no-op composition of the application's shape (``bench_serve_hops.py``), deployed with the same settings,
  against a bare uvicorn no-op: the floor of the shape.

For ``/v1/predict`` (stored features, candles) and ``/v1/predict/batch`` (the universe): sequential p50/p99
(requests interleaved across servers) and throughput at concurrency 1, 16, 32 and 64, each point bounded in time;
then a rollout to a new model version under load, through the proxy and through the published targets. Load
only against 127.0.0.1.

    python benchmarks/bench_serve.py [--quick] [--storage DIR] [--seconds 2] [--json out.json]

Without ``--storage`` (or with an empty one) a synthetic universe is built and an untrained ensemble with the
default (full-size) architecture is registered: latency does not depend on what the weights learned.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # untrained_models: a model in seconds
from bench_serve_hops import build_noop_composition, start_bare_noop  # noqa: E402
from loadgen import encode_request, measure, sequential, wait_ready  # noqa: E402
from serve_actors import start_actor_peer  # noqa: E402

from raycast.config import RaycastConfig, parse_config  # noqa: E402

HOST = "127.0.0.1"
CONCURRENCY = (1, 16, 32, 64)
BARE = "bare"


def prepare_storage(storage: str, n_symbols: int, n_days: int) -> RaycastConfig:
    """A config over ``storage``, with a registered model (built here when the registry is empty)."""
    from raycast.registry import list_versions

    cfg = parse_config({
        # Logical CPUs for the three compositions' fractional shares, and a rollout's new replicas beside the old.
        "storage": storage, "ray": {"num_cpus": 8},
        "ingest": {"source": "synthetic", "synthetic": {"n_symbols": n_symbols, "n_days": n_days}},
        "features": {"symbols_per_task": 25, "num_cpus_per_task": 1},
    })  # fmt: skip
    if not list_versions(storage):
        from raycast.data.ingest import ingest
        from raycast.features.pipeline import build_features
        from untrained_models import register_untrained_version

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


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def bench_point(port: int, requests: list[bytes], concurrency: int, seconds: float) -> dict:
    measure(HOST, port, requests, concurrency, min(0.5, seconds / 4))  # warm connections and batch queues
    r = measure(HOST, port, requests, concurrency, seconds)
    return {"rps": r.rps, "p50_ms": r.pct(50), "p99_ms": r.pct(99), "ok": r.ok, "errors": r.errors, "first_error": r.first_error}


def rollout_under_load(cfg: RaycastConfig, requests: list[bytes], concurrency: int) -> dict:
    """Roll the application out to a new version while clients keep sending, through the proxy and through the
    published direct-ingress targets at once; returns both loads' results."""
    from ray import serve

    from raycast.serve.app import ServeArgs, build_app
    from raycast.serve.run import ingress_urls
    from untrained_models import register_untrained_version

    version = register_untrained_version(cfg, seed=1)
    stop, results = threading.Event(), {}

    def follow() -> tuple[str, int]:
        return HOST, port_of(random.choice(ingress_urls(HOST)))

    def load(name: str, **where) -> None:
        r = measure(HOST, cfg.serve.port, requests, concurrency, 600, stop=stop, **where)
        results[name] = {"rps": r.rps, "p50_ms": r.pct(50), "p99_ms": r.pct(99), "ok": r.ok, "errors": r.errors,
                         "first_error": r.first_error}  # fmt: skip

    threads = [threading.Thread(target=load, args=("serve",), kwargs={"follow": follow}),
               threading.Thread(target=load, args=("serve via proxy",))]  # fmt: skip
    for t in threads:
        t.start()
    started = time.perf_counter()
    try:
        time.sleep(1)
        serve.run(build_app(ServeArgs.from_config(cfg).model_copy(update={"version": version})), name="raycast",
                  route_prefix="/")  # fmt: skip
        time.sleep(3)  # past the old ingress replica's draining period
    finally:
        stop.set()
        for t in threads:
            t.join()
    results["seconds"] = time.perf_counter() - started
    return results


def print_tables(results: dict, servers: list[str]) -> None:
    head = f"| endpoint | server | seq p50 ms | seq p99 ms | {' | '.join(f'req/s c{c}' for c in CONCURRENCY)} | p99 ms c32 | errors |"
    print("\n" + head + "\n|" + "---|" * (head.count("|") - 1))
    for endpoint, by_server in results["load"].items():
        for server in servers:
            seq, points = results["sequential"][endpoint][server], by_server[server]
            rps = " | ".join(f"{points[c]['rps']:.0f}" for c in CONCURRENCY)
            errors = seq["errors"] + sum(p["errors"] for p in points.values())
            print(f"| {endpoint} | {server} | {seq['p50_ms']:.1f} | {seq['p99_ms']:.1f} | {rps} | {points[32]['p99_ms']:.0f} | {errors} |")
    print("\n| no-op composition (ingress -> ensemble -> 3 bases) | seq p50 ms | seq p99 ms |\n|---|---|---|")
    for name, r in results["noop"].items():
        print(f"| {name} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")


def targets_table(results: dict) -> list[tuple[str, str, str, str]]:
    """(figure, target, measured, met or the floor that stops it) for each of the serving targets."""
    seq, load, noop = results["sequential"], results["load"], results["noop"]
    stored = seq["predict (stored)"]
    shape = noop["serve"]["p50_ms"] - noop[BARE]["p50_ms"]  # what the composition alone adds over a bare server
    rows = []
    gap = stored["serve"]["p50_ms"] - stored[BARE]["p50_ms"]
    rows.append((
        "stored /v1/predict, sequential p50", f"<= {BARE} + 12 ms",
        f"{stored['serve']['p50_ms']:.1f} ms = {BARE} {stored[BARE]['p50_ms']:.1f} {gap:+.1f} (via proxy "
        f"{stored['serve via proxy']['p50_ms'] - stored[BARE]['p50_ms']:+.1f}; ray actors "
        f"{stored['ray actors']['p50_ms'] - stored[BARE]['p50_ms']:+.1f})",
        "met" if gap <= 12 else f"not met; floor: the no-op shape adds {shape:.1f} ms over a bare no-op",
    ))  # fmt: skip
    rows.append((
        "no-op composition of the required shape, p50", "<= 17 ms",
        f"{noop['serve']['p50_ms']:.1f} ms (via proxy {noop['serve via proxy']['p50_ms']:.1f}; bare no-op "
        f"{noop[BARE]['p50_ms']:.1f})",
        "met" if noop["serve"]["p50_ms"] <= 17 else "not met (see the hop costs in docs/performance.md)",
    ))  # fmt: skip
    for endpoint in ("predict (stored)", "predict/batch (universe)"):
        s, b = load[endpoint]["serve"][32]["rps"], load[endpoint][BARE][32]["rps"]
        actors = load[endpoint]["ray actors"][32]["rps"]
        batched = load[endpoint]["bare batched"][32]["rps"]
        rows.append((
            f"QPS at c32, {endpoint}", f">= 1.0 x {BARE}",
            f"{s:.0f} req/s = {s / b:.2f} x {BARE} {b:.0f} (bare batched {batched:.0f}, ray actors {actors:.0f})",
            "met" if s >= b else f"not met; without Serve the same composition gets {actors / b:.2f} x",
        ))  # fmt: skip
    errors = sum(
        p["errors"] for by_server in load.values() for points in by_server.values() for p in points.values()
    ) + sum(r["errors"] for by_server in seq.values() for r in by_server.values())
    roll = {k: v for k, v in results["rollout"].items() if k != "seconds"}
    rollout_errors = sum(r["errors"] for r in roll.values())
    rows.append((
        "errors under every load point, rollout included", "0",
        f"{errors} in the load points; {rollout_errors} in the rollout ("
        + ", ".join(f"{k}: {r['ok']} ok" for k, r in roll.items()) + ")",
        "met" if errors + rollout_errors == 0 else "not met",
    ))  # fmt: skip
    rows.append(("GPU serving: p50 and QPS at c1/c32/c64, fractional num_gpus", "measured", "not measured",
                 "no GPU on this machine" if not _cuda() else "run gpu_check.py"))  # fmt: skip
    return rows


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", help="raycast storage with a registered model (default: a fresh synthetic one)")
    p.add_argument("--quick", action="store_true", help="short points, smaller universe, fewer sequential requests")
    p.add_argument("--seconds", type=float, help="seconds per throughput point")
    p.add_argument("--symbols", type=int, help="synthetic universe size (batch endpoint scores all of them)")
    p.add_argument("--sequential", type=int, help="sequential requests per server for the stored path")
    p.add_argument("--port", type=int, default=8765, help="first of five ports (proxy, bare, bare batched, bare no-op, actors)")
    p.add_argument("--json", help="write the raw results here")
    a = p.parse_args()
    seconds = a.seconds or (1.0 if a.quick else 2.0)
    n_seq = a.sequential or (60 if a.quick else 300)
    storage = a.storage or tempfile.mkdtemp(prefix="raycast-bench-")
    cfg = prepare_storage(storage, a.symbols or (50 if a.quick else 200), 400 if a.quick else 600)
    cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"port": a.port, "host": HOST, "direct_ingress": True})})
    proxy, bare_port, batched_port, noop_port, actors_port = range(a.port, a.port + 5)

    import ray
    from ray import serve

    from raycast.registry import resolve_version
    from raycast.serve.app import ServeArgs
    from raycast.serve.run import direct_ingress_urls, start_app

    baseline = str(Path(__file__).with_name("serve_baseline.py"))
    bare = [subprocess.Popen([sys.executable, baseline, "--storage", cfg.storage, "--host", HOST, "--port", str(port), *extra])
            for port, extra in ((bare_port, []), (batched_port, ["--batch"]))]  # fmt: skip
    bare.append(start_bare_noop(noop_port))
    actors = []
    try:
        start_app(cfg)
        serve.run(build_noop_composition(ServeArgs.from_config(cfg)), name="hops", route_prefix="/hops")
        version = resolve_version(cfg.storage, cfg.serve.version)
        actors = start_actor_peer(cfg.storage, version, HOST, actors_port)
        direct = port_of(direct_ingress_urls(HOST, proxy)[0])
        noop_direct = port_of(direct_ingress_urls(HOST, proxy, "hops")[0])
        ports = {"serve": direct, "serve via proxy": proxy, "ray actors": actors_port, BARE: bare_port,
                 "bare batched": batched_port}  # fmt: skip
        for port in ports.values():
            wait_ready(HOST, port)
        wait_ready(HOST, noop_port, "/noop", method="POST")
        bodies = payloads(cfg, candles=120)
        results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
                         "date": dt.date.today().isoformat(), "sequential": {}, "load": {}}  # fmt: skip
        load_before = os.getloadavg()
        started = time.time()

        noop = encode_request("POST", "/hops/composed")
        seq = sequential({"serve": (HOST, noop_direct, [noop]), "serve via proxy": (HOST, proxy, [noop]),
                          BARE: (HOST, noop_port, [encode_request("POST", "/noop")])}, n_seq)  # fmt: skip
        results["noop"] = {k: {"p50_ms": r.pct(50), "p99_ms": r.pct(99), "errors": r.errors} for k, r in seq.items()}
        print(f"[bench] no-op composition p50: " + ", ".join(f"{k} {v['p50_ms']:.1f} ms" for k, v in results["noop"].items()), flush=True)

        rounds = {"predict (stored)": n_seq, "predict (candles)": max(20, n_seq // 5), "predict/batch (universe)": max(10, n_seq // 10)}
        for endpoint, requests in bodies.items():
            seq = sequential({name: (HOST, port, requests) for name, port in ports.items()}, rounds[endpoint], warmup=5)
            results["sequential"][endpoint] = {
                k: {"p50_ms": r.pct(50), "p99_ms": r.pct(99), "errors": r.errors, "first_error": r.first_error}
                for k, r in seq.items()
            }
            print(f"[bench] {endpoint} sequential p50: " + ", ".join(
                f"{k} {v['p50_ms']:.1f} ms" for k, v in results["sequential"][endpoint].items()), flush=True)  # fmt: skip

        for endpoint, requests in bodies.items():
            results["load"][endpoint] = {name: {} for name in ports}
            for c in CONCURRENCY:
                for name, port in ports.items():  # interleaved: every server sees the same machine conditions
                    pt = results["load"][endpoint][name][c] = bench_point(port, requests, c, seconds)
                    print(f"[bench] {endpoint:26s} {name:15s} c{c:<3d} {pt['rps']:7.1f} req/s  p50 {pt['p50_ms']:6.1f} ms  "
                          f"p99 {pt['p99_ms']:7.1f} ms  errors {pt['errors']} {pt['first_error'][:120]}", flush=True)  # fmt: skip

        results["rollout"] = rollout_under_load(cfg, bodies["predict (stored)"], 16)
        print(f"[bench] rollout under load (c16 each): {results['rollout']}", flush=True)
        results["load_average"] = [load_before[0], os.getloadavg()[0]]
        print(f"\n{results['machine']}, {results['date']}; load average before {load_before[0]:.1f}, after "
              f"{os.getloadavg()[0]:.1f}; {time.time() - started:.0f} s of load; {seconds} s per point; universe of "
              f"{len(bodies['predict (stored)'])} symbols; {n_seq} sequential stored requests per server")  # fmt: skip
        print_tables(results, list(ports))
        rows = targets_table(results)
        print("\n| figure | target | measured | verdict |\n|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        results["targets"] = rows
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=2))
    finally:
        for proc in bare:
            proc.terminate()
            proc.wait(timeout=30)
        for actor in actors:
            ray.kill(actor)
        serve.shutdown()


if __name__ == "__main__":
    main()
