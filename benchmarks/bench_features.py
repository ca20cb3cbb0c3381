"""Featurization throughput: the Ray Data pipeline with 1 and 2 workers vs a plain single-process loop.

    python benchmarks/bench_features.py [--symbols 50 200 500] [--days 2520] [--json out.jsonl]

For each universe size: synthetic bars are ingested (not timed), then
  * baseline: one process runs the Ray tasks' own function symbol by symbol (pandas-ta warm-up timed apart);
  * ray-N: a fresh local Ray with N CPUs runs ``build_features`` (wall time includes Ray start-up);
  * job-N: a Ray head with N CPUs is started apart (``ray start``), then fresh driver processes run
    ``build_features`` one after another, as jobs submitted to a running cluster do; the wall time counts from the
    driver's ``ray.init`` (connecting) to the published dataset. The first job on a new cluster also starts Ray
    Data's detached helper actors, which later jobs find running; the table reports a later job and notes the first.
Peak memory is the machine's used memory above what it was before the step, sampled every 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil


class PeakMemory:
    """Samples system-wide used memory in a thread; ``peak_gb`` is the rise above the starting level."""

    def __enter__(self):
        self.start = psutil.virtual_memory().used
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, psutil.virtual_memory().used)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def peak_gb(self) -> float:
        return (self.peak - self.start) / 1e9


def baseline(cfg) -> dict:
    """The Ray tasks' own per-symbol work (read a symbol's file, compute its features), symbol by symbol, no Ray."""
    import pandas as pd

    from raycast.data.store import current_version_dir, list_symbols
    from raycast.features.pipeline import featurize_symbols
    from raycast.features.spec import check_feature_names

    symbols = list_symbols(cfg.storage)
    kwargs = {"market_dir": str(current_version_dir(cfg.storage)), "horizon": cfg.features.horizon,
              "features": check_feature_names(cfg.features.features)}  # fmt: skip
    t0 = time.perf_counter()
    featurize_symbols(pd.DataFrame({"symbol": symbols[:1]}), **kwargs)  # pandas-ta's imports and numba kernels load
    warmup = time.perf_counter() - t0
    rows = 0
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        for sym in symbols:
            rows += len(featurize_symbols(pd.DataFrame({"symbol": [sym]}), **kwargs))
        wall = time.perf_counter() - t0
    return {"mode": "baseline", "workers": 1, "wall_s": wall, "warmup_s": warmup, "rows": rows,
            "symbols": len(symbols), "peak_gb": mem.peak_gb}  # fmt: skip


def with_ray(cfg, workers: int) -> dict:
    import ray

    from raycast.features.pipeline import build_features

    with PeakMemory() as mem:
        t0 = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR")
        started = time.perf_counter() - t0
        summary = build_features(cfg)
        wall = time.perf_counter() - t0
    ray.shutdown()
    return {"mode": "ray", "workers": workers, "wall_s": wall, "ray_start_s": started, "rows": summary["n_rows"],
            "symbols": summary["n_symbols"], "peak_gb": mem.peak_gb}  # fmt: skip


# Every run gives a task a whole CPU; symbols_per_task is the pipeline's default, about 3 tasks per CPU.
FEATURES = {"num_cpus_per_task": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_jobs(cfg, workers: int, jobs: int = 2) -> dict:
    """Start a Ray head with ``workers`` CPUs, run ``jobs`` featurizing drivers in turn, stop the head."""
    bin_dir = Path(sys.executable).parent
    env = os.environ | {"RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="raycast-bench-head-") as temp_dir:
        cmd = [str(bin_dir / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
               f"--num-cpus={workers}", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}",
               f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
               f"--runtime-env-agent-port={_free_port()}", f"--metrics-export-port={_free_port()}"]  # fmt: skip
        head = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            address = f"127.0.0.1:{port}"
            status = [str(bin_dir / "ray"), "status", f"--address={address}"]
            deadline = time.time() + 120
            while subprocess.run(status, check=False, env=env, capture_output=True).returncode != 0:
                if time.time() > deadline or head.poll() is not None:
                    raise RuntimeError(f"the benchmark's Ray head did not come up: {' '.join(cmd)}")
                time.sleep(1)
            runs = []
            for _ in range(jobs):
                with PeakMemory() as mem:
                    job = [sys.executable, __file__, "--job", address, "--storage", str(cfg.storage)]
                    done = subprocess.run(job, env=env, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"featurizing job failed ({done.returncode}):\n{done.stderr[-3000:]}")
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]) | {"peak_gb": mem.peak_gb})
        finally:
            os.killpg(head.pid, signal.SIGTERM)  # this head only, by its process group; never `ray stop`
            try:
                head.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait()
    last = runs[-1]
    return {"mode": "job", "workers": workers, "wall_s": last["wall_s"], "first_job_s": runs[0]["wall_s"],
            "rows": last["rows"], "symbols": last["symbols"], "peak_gb": max(r["peak_gb"] for r in runs)}  # fmt: skip


def run_job(address: str, storage: str) -> None:
    """One featurizing driver on a running cluster (``--job``): prints its timing as a JSON line."""
    import ray

    from raycast.config import parse_config
    from raycast.features.pipeline import build_features

    cfg = parse_config({"storage": storage, "features": FEATURES})
    t0 = time.perf_counter()
    ray.init(address=address, logging_level="ERROR")
    summary = build_features(cfg)
    wall = time.perf_counter() - t0
    print(json.dumps({"wall_s": wall, "rows": summary["n_rows"], "symbols": summary["n_symbols"]}))


def main() -> None:
    from raycast.config import parse_config
    from raycast.data.ingest import ingest

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, nargs="+", default=[50, 200, 500])
    parser.add_argument("--days", type=int, default=2520, help="business days (2520 = 10 years)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", type=Path, default=None, help="append results as JSON lines")
    parser.add_argument("--no-jobs", action="store_true", help="skip the runs as jobs on a running Ray head")
    parser.add_argument("--job", metavar="ADDRESS", help=argparse.SUPPRESS)  # internal: one driver of as_jobs()
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        return run_job(args.job, args.storage)

    results = []
    for n in args.symbols:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = parse_config({
                "storage": tmp,
                "ingest": {"source": "synthetic", "synthetic": {"n_symbols": n, "n_days": args.days}},
                "features": FEATURES,
            })  # fmt: skip
            ingest(cfg)
            results.append({"universe": n} | baseline(cfg))
            for w in args.workers:
                results.append({"universe": n} | with_ray(cfg, w))
            for w in [] if args.no_jobs else args.workers:
                results.append({"universe": n} | as_jobs(cfg, w))
            print(f"done {n} symbols", flush=True)

    print(f"\nfeaturization, {args.days} business days per symbol, 40 features ({psutil.cpu_count()} CPUs)")
    header = f"{'symbols':>7} {'mode':>9} {'wall s':>7} {'rows/s':>9} {'sym/s':>6} {'vs 1 proc':>9} {'peak GB':>7}  notes"
    print(header + "\n" + "-" * len(header))
    for n in args.symbols:
        rows = [r for r in results if r["universe"] == n]
        base = next(r for r in rows if r["mode"] == "baseline")
        base_rate = base["symbols"] / base["wall_s"]
        for r in rows:
            rate = r["symbols"] / r["wall_s"]
            mode = "1 proc" if r["mode"] == "baseline" else f"{r['mode']} x{r['workers']}"
            per_worker = rate / r["workers"] / base_rate
            if r["mode"] == "baseline":
                note = f"pandas-ta warm-up {r['warmup_s']:.1f} s apart"
            elif r["mode"] == "ray":
                warm_rate = r["symbols"] / (r["wall_s"] - r["ray_start_s"])
                note = (f"fresh local Ray, its start {r['ray_start_s']:.1f} s included; per worker {per_worker:.0%} "
                        f"of 1 proc ({warm_rate / r['workers'] / base_rate:.0%} without the Ray start)")  # fmt: skip
            else:
                note = f"job on a running head; per worker {per_worker:.0%} of 1 proc; first job {r['first_job_s']:.1f} s"
            print(f"{n:>7} {mode:>9} {r['wall_s']:>7.1f} {r['rows'] / r['wall_s']:>9,.0f} {rate:>6.1f} "
                  f"{rate / base_rate:>8.2f}x {r['peak_gb']:>7.2f}  {note}")  # fmt: skip
        by_mode = {(r["mode"], r["workers"]): r for r in rows}
        if ("ray", 1) in by_mode and ("ray", 2) in by_mode:
            one, two = by_mode["ray", 1], by_mode["ray", 2]
            warm = (one["wall_s"] - one["ray_start_s"]) / (two["wall_s"] - two["ray_start_s"])
            print(f"{'':>7} 2 workers vs 1, fresh local Ray: {one['wall_s'] / two['wall_s']:.2f}x "
                  f"({warm:.2f}x without the Ray start)")  # fmt: skip
        if ("job", 1) in by_mode and ("job", 2) in by_mode:
            print(f"{'':>7} 2 workers vs 1, jobs on a running head: "
                  f"{by_mode['job', 1]['wall_s'] / by_mode['job', 2]['wall_s']:.2f}x")
    if args.json:
        with args.json.open("a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
