"""The training stage's fixed costs: stage wall time against the loop's own seconds, one trainer's start-up and
shutdown, and the training workers' peak memory.

    python benchmarks/bench_train_stage.py [--baseline-rev REV] [--symbols 50] [--days 1260] [--epochs 3]
                                           [--steps 20] [--batch 512] [--cpus 2] [--fits 3]

One synthetic universe is ingested and featurized; then, for this checkout and (with ``--baseline-rev``) for the
code of an earlier git revision, each in a fresh process on the same data and the same Ray size:
  * stage: ``raycast.train.run.train`` with the reference base models (lstm, cnn, attention) in turn, ``epochs``
    epochs of ``steps`` steps of ``batch`` windows: its wall time over the in-loop train + validation seconds its
    history reports (the registry write and the ensemble head included, Ray's own start not);
  * fit: one trainer fitting the cnn alone: ``fit_base_model``'s wall time beyond its loop, the median of
    ``--fits`` fits one after another;
  * memory: the peak resident memory of any Ray Train worker during the stage (sampled every 0.2 s), all of it
    (RSS) and its own pages (USS: without the object store pages it maps); the same for an idle worker that
    imported the training code; and the peak beyond the idle worker next to the float32 size of the training
    rows (rows x features x 4 bytes). The worker's own timeline splits it: its peak once the feature blocks
    stand, beyond its peak when its train function started, is what the data steps cost; the rest is the
    training steps' activations, which depend on the batch and the models' widths, not on the rows.
With ``--data-steps`` each side instead runs a training worker's data steps alone, in one process without Ray
(all the training symbols in one worker, then the validation rows, into feature blocks): its peak resident
memory beyond its start (Linux's high-water mark, reset once the code is imported) and what it holds after,
against the float32 size of the training rows, and the seconds they take.
Targets: stage wall / in-loop <= 1.5; one trainer's fixed cost <= 8 s; a worker's memory beyond an idle one
<= 2 x the training rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = ["lstm", "cnn", "attention"]


def config(storage: str, args) -> dict:
    return {
        "storage": storage,
        "ray": {"num_cpus": args.cpus},
        "ingest": {"source": "synthetic", "synthetic": {"n_symbols": args.symbols, "n_days": args.days}},
        "features": {"symbols_per_task": 10, "num_cpus_per_task": 1},
        "train": {"models": MODELS, "epochs": args.epochs, "max_steps_per_epoch": args.steps,
                  "batch_size": args.batch, "patience": args.epochs},  # fmt: skip
    }


class WorkerMemory:
    """Peak resident memory of the Ray Train worker processes, sampled from outside (any code version).

    Only this process's own Ray (its descendants) is sampled: another Ray job on the machine is not measured."""

    def __init__(self, every: float = 0.2):
        self.peak, self.peak_uss, self.every, self._stop = 0, 0, every, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(self.every):
            for p in me.children(recursive=True):
                try:
                    if "ray::RayTrainWorker" not in " ".join(p.cmdline()):
                        continue
                except psutil.Error:
                    continue
                try:  # uss: pages the worker alone holds (rss also counts Ray's shared object store pages it maps)
                    full = p.memory_full_info()
                except psutil.Error:
                    continue
                self.peak, self.peak_uss = max(self.peak, full.rss), max(self.peak_uss, full.uss)

    def __enter__(self) -> WorkerMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _idle_worker(config: dict) -> None:
    import time

    import raycast.train.loop  # noqa: F401  what a training worker imports before it sees any data

    time.sleep(2.0)  # a few samples of the settled process


def idle_worker_memory(storage: str) -> WorkerMemory:
    """The memory of a Ray Train worker that imported the training code and holds no data: what the stage's peak
    is measured beyond, since the runtime (Python, torch, Ray) is no copy of the data."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    with WorkerMemory() as memory:  # a TorchTrainer: the code measured may predate raycast's own trainer helper
        TorchTrainer(_idle_worker, scaling_config=ScalingConfig(num_workers=1),
                     run_config=RunConfig(storage_path=str(Path(storage, "idle-runs")))).fit()  # fmt: skip
    return memory


def phase_peak(timeline, name: str) -> float | None:
    """The highest worker peak (MB) a phase of this name carries in the stage's timeline (None: none carries one)."""
    peaks = [p.peak_mb for p in getattr(timeline, "phases", []) if p.name == name and p.peak_mb is not None]
    return max(peaks) if peaks else None


def in_loop(history: list[dict]) -> float:
    return sum(h["train_seconds"] + h["val_seconds"] for h in history)


def child(args) -> None:
    """One side of the comparison: runs in a fresh process whose ``raycast`` is the code being measured."""
    import ray

    import raycast
    from raycast.config import parse_config
    from raycast.features.store import current_features_dir, load_meta, read_training_rows
    from raycast.train.run import train
    from raycast.train.trainer import fit_base_model

    from raycast.runtime import init_ray

    cfg = parse_config(config(args.storage, args))
    init_ray(cfg.ray.model_copy(update={"num_cpus": args.cpus}))  # Ray as `raycast train` starts it, settings and all
    fdir = current_features_dir(cfg.storage)
    meta = load_meta(fdir)
    rows = read_training_rows(fdir, meta.split, ["date"]).num_rows
    idle = idle_worker_memory(args.storage)
    with WorkerMemory() as memory:
        t0 = time.perf_counter()
        trained = train(cfg)
        stage_s = time.perf_counter() - t0
    stage_loop = sum(in_loop(f.history) for f in trained.fits.values())
    fixed = []  # one fit's start-up and shutdown vary by a second or two: time a few, one after another
    for _ in range(args.fits):
        with tempfile.TemporaryDirectory() as run_dir:
            t0 = time.perf_counter()
            fit = fit_base_model(cfg, "cnn", fdir, meta.split, meta.normalizer, meta.window, run_dir)
            fit_s = time.perf_counter() - t0
        fixed.append(fit_s - in_loop(fit.history))
    out = {
        "code": str(Path(raycast.__file__).parents[1]),
        "stage_s": stage_s,
        "stage_in_loop_s": stage_loop,
        "fit_s": fit_s,
        "fit_in_loop_s": in_loop(fit.history),
        "fit_fixed_s": fixed,
        "peak_worker_rss": memory.peak,
        "peak_worker_uss": memory.peak_uss,
        "idle_worker_uss": idle.peak_uss,
        "rows_float32": rows * len(meta.features) * 4,
        # the worker's own peak (its timeline) when its train function started and once its feature blocks stood
        "worker_start_mb": phase_peak(trained.timeline, "worker group start"),
        "worker_blocks_mb": phase_peak(trained.timeline, "validation blocks") or phase_peak(trained.timeline, "feature blocks"),
        "timeline": trained.timeline.table() if getattr(trained, "timeline", None) else None,
    }
    print("RESULT " + json.dumps(out), flush=True)
    ray.shutdown()


class SymbolShard:
    """What a worker's Ray Data shard of symbol names gives when iterated: one batch of them."""

    def __init__(self, symbols: list[str]):
        self.symbols = symbols

    def iter_batches(self, **_):
        import numpy as np

        yield {"symbol": np.asarray(self.symbols, dtype=object)}


def _status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: resident now, VmHWM: its peak), in MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key + ":"))


def data_steps_child(args) -> None:
    """One side of ``--data-steps``: a worker's reading steps in this process, whichever way its code does them."""
    import raycast
    import raycast.train.loop as loop
    from raycast.features.store import FeatureBlocks, current_features_dir, load_meta, read_training_rows

    try:
        from raycast.memory import release_free_memory
    except ImportError:  # the code before it moved out of raycast.train
        from raycast.train.memory import release_free_memory

    fdir = current_features_dir(args.storage)
    meta = load_meta(fdir)
    shard = SymbolShard(sorted(set(read_training_rows(fdir, meta.split, ["symbol"]).column("symbol").to_pylist())))
    release_free_memory()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the high-water mark starts again from what the process holds now
    start = _status_mb("VmRSS")
    t0 = time.perf_counter()
    if hasattr(loop, "training_blocks"):
        train = loop.training_blocks(fdir, meta.split, shard, meta.normalizer, meta.window)
        val = loop.validation_blocks(fdir, meta.split, meta.normalizer, meta.window)
    else:  # the code before the blocks were read file by file: whole Arrow reads, then blocks from them
        rows = loop.symbol_rows(fdir, meta.split, shard, meta.features)
        val_rows = loop.validation_frame(fdir, meta.split, meta.window, meta.features)
        train, val = FeatureBlocks(rows, meta.normalizer, meta.window), FeatureBlocks(val_rows, meta.normalizer, meta.window)
        del rows, val_rows
    release_free_memory()
    out = {"code": str(Path(raycast.__file__).parents[1]), "data_s": time.perf_counter() - t0,
           "data_peak_mb": _status_mb("VmHWM") - start, "data_held_mb": _status_mb("VmRSS") - start,
           "train_rows": len(train), "val_rows": len(val),
           "rows_float32": len(train) * len(meta.features) * 4}  # fmt: skip
    print("RESULT " + json.dumps(out), flush=True)


def data_steps_table(sides: dict[str, dict]) -> str:
    mb = 2**20
    first = next(iter(sides.values()))
    rows = [("figure", *sides, "target"),
            ("training rows (validation rows)", *(f"{s['train_rows']:,} ({s['val_rows']:,})" for s in sides.values()), ""),
            ("training rows float32 MB", *(f"{s['rows_float32'] / mb:.1f}" for s in sides.values()), ""),
            ("data steps s", *(f"{s['data_s']:.1f}" for s in sides.values()), ""),
            ("peak beyond the start MB", *(f"{s['data_peak_mb']:.0f}" for s in sides.values()), ""),
            ("peak beyond the start / training rows",
             *(f"{s['data_peak_mb'] * mb / s['rows_float32']:.2f}" for s in sides.values()), "<= 2"),
            ("held after (the blocks) / training rows",
             *(f"{s['data_held_mb'] * mb / s['rows_float32']:.2f}" for s in sides.values()), "")]  # fmt: skip
    assert all(s["train_rows"] == first["train_rows"] for s in sides.values()), "the sides read different rows"
    return _markdown(rows)


def run_side(code_root: Path, storage: str, args) -> dict:
    env = os.environ | {"PYTHONPATH": str(code_root), "RAY_TRAIN_V2_ENABLED": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--storage", storage,
           *(["--data-steps"] if args.data_steps else []),
           *(f"--{k}={getattr(args, k)}" for k in ("symbols", "days", "epochs", "steps", "batch", "cpus", "fits"))]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=code_root, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"the run with the code in {code_root} failed ({proc.returncode})")
    result = json.loads(lines[-1][len("RESULT ") :])
    if Path(result["code"]).resolve() != code_root.resolve():
        raise SystemExit(f"the run meant for the code in {code_root} imported {result['code']}")
    return result


def build_data(storage: str, args) -> None:
    import ray

    from raycast.config import parse_config
    from raycast.data.ingest import ingest
    from raycast.features.pipeline import build_features

    cfg = parse_config(config(storage, args))
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR")
    ingest(cfg)
    build_features(cfg)
    ray.shutdown()


def baseline_code(rev: str, tmp: Path) -> Path:
    """The ``raycast`` package of git revision ``rev``, unpacked under ``tmp``."""
    code = tmp / "baseline"
    code.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "raycast"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
    return code


def _fixed(side: dict) -> str:
    """The median fixed cost of a side's one-trainer fits, each fit's in brackets."""
    fixed = side.get("fit_fixed_s") or [side["fit_s"] - side["fit_in_loop_s"]]
    return f"{statistics.median(fixed):.1f} ({', '.join(f'{f:.1f}' for f in fixed)})"


def table(sides: dict[str, dict]) -> str:
    rows = [("figure", *sides, "target")]
    mb = 2**20
    rows.append(("stage wall s", *(f"{s['stage_s']:.1f}" for s in sides.values()), ""))
    rows.append(("stage in-loop train + validation s", *(f"{s['stage_in_loop_s']:.1f}" for s in sides.values()), ""))
    rows.append(("stage wall / in-loop", *(f"{s['stage_s'] / s['stage_in_loop_s']:.2f}" for s in sides.values()),
                 "<= 1.5"))  # fmt: skip
    rows.append(("one trainer (cnn): the last fit() s", *(f"{s['fit_s']:.1f}" for s in sides.values()), ""))
    rows.append(("one trainer: fixed cost beyond its loop s (median of the fits)",
                 *(_fixed(s) for s in sides.values()), "<= 8"))  # fmt: skip
    rows.append(("peak worker memory MB", *(f"{s['peak_worker_rss'] / mb:.0f}" for s in sides.values()), ""))
    rows.append(("peak worker memory, its own pages (USS) MB",
                 *(f"{s.get('peak_worker_uss', 0) / mb:.0f}" for s in sides.values()), ""))  # fmt: skip
    rows.append(("idle worker (training code imported, no data), USS MB",
                 *(f"{s.get('idle_worker_uss', 0) / mb:.0f}" for s in sides.values()), ""))  # fmt: skip
    rows.append(("training rows float32 MB", *(f"{s['rows_float32'] / mb:.1f}" for s in sides.values()), ""))
    rows.append(("peak worker USS beyond an idle worker / training rows",
                 *(f"{(s['peak_worker_uss'] - s['idle_worker_uss']) / s['rows_float32']:.1f}" if "idle_worker_uss" in s
                   else "" for s in sides.values()), "<= 2"))  # fmt: skip
    rows.append(("data steps: worker peak by its feature blocks, beyond its start / training rows",
                 *(f"{(s['worker_blocks_mb'] - s['worker_start_mb']) * mb / s['rows_float32']:.1f}"
                   if s.get("worker_blocks_mb") and s.get("worker_start_mb") else "" for s in sides.values()), ""))  # fmt: skip
    return _markdown(rows)


def _markdown(rows: list[tuple]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-rev", default=None, help="also measure the code of this git revision")
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--days", type=int, default=1260)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--fits", type=int, default=3, help="one-trainer fits to time (the median is reported)")
    parser.add_argument("--storage", default=None, help="an existing store with features: skip building them")
    parser.add_argument("--data-steps", action="store_true", help="measure a worker's data steps alone (no Ray)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        (data_steps_child if args.data_steps else child)(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        storage = args.storage or str(Path(tmp, "store"))
        if not args.storage:
            build_data(storage, args)
        if args.data_steps:
            sides = {}
            if args.baseline_rev:
                sides[f"at {args.baseline_rev}"] = run_side(baseline_code(args.baseline_rev, Path(tmp)), storage, args)
            sides["this checkout"] = run_side(REPO, storage, args)
            print(f"a training worker's data steps, all the training symbols, no Ray; store: {storage}")
            print(data_steps_table(sides))
            return
        sides: dict[str, dict] = {}
        if args.baseline_rev:
            sides[f"at {args.baseline_rev}"] = run_side(baseline_code(args.baseline_rev, Path(tmp)), storage, args)
        sides["this checkout"] = run_side(REPO, storage, args)
    print(f"{args.symbols} synthetic symbols x {args.days} days, {'/'.join(MODELS)} in turn, {args.epochs} epochs of "
          f"{args.steps} steps of {args.batch}, Ray with {args.cpus} CPUs")  # fmt: skip
    print(table(sides))
    timeline = sides["this checkout"]["timeline"]
    if timeline:
        print(f"\nthis checkout's stage, phase by phase:\n{timeline}")


if __name__ == "__main__":
    main()
