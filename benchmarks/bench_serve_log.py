"""What the prediction log costs a request: sequential p50 of the stored ``/v1/predict`` path with the log on and off.

Two copies of the application run side by side on one Serve instance, same model, same storage, same settings but
``prediction_log`` (on: the defaults, a file every 5 s or 1000 rows): ``/on`` and ``/off`` behind
the same proxy. Requests go one at a time, alternating between the two, in a few blocks (on a shared machine
conditions drift more than the difference measured); each block's p50 and p99 are printed, then the rows the log
holds, to show it was written. Load only against 127.0.0.1.

    python benchmarks/bench_serve_log.py [--storage DIR] [--requests 500] [--blocks 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import prepare_storage  # noqa: E402
from loadgen import encode_request, sequential, wait_ready  # noqa: E402

HOST = "127.0.0.1"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", help="raycast storage with a registered model (default: a fresh synthetic one)")
    p.add_argument("--symbols", type=int, default=50, help="synthetic universe size")
    p.add_argument("--requests", type=int, default=500, help="sequential requests per app per block")
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--port", type=int, default=8795)
    a = p.parse_args()
    storage = a.storage or tempfile.mkdtemp(prefix="raycast-bench-log-")
    cfg = prepare_storage(storage, a.symbols, 400)

    import pandas as pd
    import ray
    from ray import serve

    from raycast.data.store import list_symbols
    from raycast.registry import resolve_version
    from raycast.runtime import init_ray
    from raycast.serve.app import ServeArgs, build_app, serve_env

    version = resolve_version(cfg.storage, None)
    log_dir = Path(cfg.storage) / "predictions" / version
    logged_before = sum(len(pd.read_parquet(f)) for f in log_dir.glob("served-*.parquet"))
    init_ray(cfg.ray)
    args = ServeArgs.from_config(cfg).model_copy(update={"version": version})
    serve.start(http_options={"host": HOST, "port": a.port}, controller_options={"runtime_env": {"env_vars": serve_env(args)}})
    try:
        for name, on in (("on", True), ("off", False)):
            serve.run(build_app(args.model_copy(update={"prediction_log": on})), name=name, route_prefix=f"/{name}")
            wait_ready(HOST, a.port, f"/{name}/v1/health")
        symbols = list_symbols(cfg.storage)
        rng = random.Random(0)
        bodies = [json.dumps({"symbol": s}).encode() for s in rng.sample(symbols, len(symbols))]
        targets = {name: (HOST, a.port, [encode_request("POST", f"/{name}/v1/predict", b) for b in bodies]) for name in ("on", "off")}
        load_before, started = os.getloadavg()[0], time.time()
        blocks, sent = [], 0
        for _ in range(a.blocks):
            seq = sequential(targets, a.requests, warmup=20)
            sent += a.requests + 20
            row = {k: {"p50_ms": r.pct(50), "p99_ms": r.pct(99), "errors": r.errors, "first_error": r.first_error} for k, r in seq.items()}
            blocks.append(row)
            print(f"[bench] block {len(blocks)}: log on p50 {row['on']['p50_ms']:.2f} ms (p99 {row['on']['p99_ms']:.1f}), "
                  f"log off p50 {row['off']['p50_ms']:.2f} ms (p99 {row['off']['p99_ms']:.1f}), "
                  f"on - off {row['on']['p50_ms'] - row['off']['p50_ms']:+.2f} ms; errors {row['on']['errors']}/{row['off']['errors']}",
                  flush=True)  # fmt: skip
        seconds = time.time() - started
    finally:
        for name in ("on", "off"):
            if name in serve.status().applications:
                serve.delete(name)  # the log-on replica writes what still waits as it stops
        serve.shutdown()
        ray.shutdown()
    logged = sum(len(pd.read_parquet(f)) for f in log_dir.glob("served-*.parquet")) - logged_before
    on = statistics.median(b["on"]["p50_ms"] for b in blocks)
    off = statistics.median(b["off"]["p50_ms"] for b in blocks)
    print(f"\n{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {dt.date.today()}; load "
          f"average before {load_before:.1f}, after {os.getloadavg()[0]:.1f}; {seconds:.0f} s; universe of {len(symbols)} "
          f"symbols; {a.blocks} blocks of {a.requests} sequential requests per app, through Serve's proxy")  # fmt: skip
    print(f"median of the blocks' p50: log on {on:.2f} ms, log off {off:.2f} ms, difference {on - off:+.2f} ms")
    print(f"log rows written by the log-on app: {logged} of {sent} requests")


if __name__ == "__main__":
    main()
