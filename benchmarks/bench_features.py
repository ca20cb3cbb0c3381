"""Featurization throughput: the Ray Data pipeline with 1 and 2 workers vs a plain single-process loop.

    python benchmarks/bench_features.py [--symbols 50 200 500] [--days 2520] [--json out.jsonl]

For each universe size: synthetic bars are ingested (not timed), then
  * baseline: one process calls the same feature function symbol by symbol (pandas-ta warm-up timed apart);
  * ray-N: a fresh local Ray with N CPUs runs ``build_features`` (wall time includes Ray start-up).
Peak memory is the machine's used memory above what it was before the step, sampled every 50 ms.
"""

from __future__ import annotations

import argparse
import json
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


def baseline(storage: str) -> dict:
    from raycast.data.store import list_symbols, read_bars
    from raycast.features.spec import compute_symbol_features

    symbols = list_symbols(storage)
    first = read_bars(storage, symbols[:1])
    t0 = time.perf_counter()
    compute_symbol_features(first)  # numba compiles pandas-ta's kernels on the first call
    warmup = time.perf_counter() - t0
    rows = 0
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        for sym in symbols:
            rows += len(compute_symbol_features(read_bars(storage, [sym])))
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


def main() -> None:
    from raycast.config import parse_config
    from raycast.data.ingest import ingest

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, nargs="+", default=[50, 200, 500])
    parser.add_argument("--days", type=int, default=2520, help="business days (2520 = 10 years)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", type=Path, default=None, help="append results as JSON lines")
    args = parser.parse_args()

    results = []
    for n in args.symbols:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = parse_config({
                "storage": tmp,
                "ingest": {"source": "synthetic", "synthetic": {"n_symbols": n, "n_days": args.days}},
                "features": {"num_cpus_per_task": 1},  # symbols_per_task: the pipeline's default, ~3 tasks per CPU
            })  # fmt: skip
            ingest(cfg)
            results.append({"universe": n} | baseline(tmp))
            for w in args.workers:
                results.append({"universe": n} | with_ray(cfg, w))
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
            mode = "1 proc" if r["mode"] == "baseline" else f"ray x{r['workers']}"
            if r["mode"] == "baseline":
                note = f"pandas-ta warm-up {r['warmup_s']:.1f} s apart"
            else:
                warm_rate = r["symbols"] / (r["wall_s"] - r["ray_start_s"])  # Ray already up, as on a cluster
                note = (f"incl. Ray start {r['ray_start_s']:.1f} s; per worker {rate / r['workers'] / base_rate:.0%} "
                        f"of 1 proc ({warm_rate / r['workers'] / base_rate:.0%} without the Ray start)")  # fmt: skip
            print(f"{n:>7} {mode:>9} {r['wall_s']:>7.1f} {r['rows'] / r['wall_s']:>9,.0f} {rate:>6.1f} "
                  f"{rate / base_rate:>8.2f}x {r['peak_gb']:>7.2f}  {note}")  # fmt: skip
        ray_rows = {r["workers"]: r for r in rows if r["mode"] == "ray"}
        if 1 in ray_rows and 2 in ray_rows:
            one, two = ray_rows[1], ray_rows[2]
            warm = (one["wall_s"] - one["ray_start_s"]) / (two["wall_s"] - two["ray_start_s"])
            print(f"{'':>7} 2 workers vs 1: {one['wall_s'] / two['wall_s']:.2f}x ({warm:.2f}x without the Ray start)")
    if args.json:
        with args.json.open("a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
