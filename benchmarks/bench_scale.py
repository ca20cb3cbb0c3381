"""The scale check: the synthetic-500 config (500 tickers x 10 years) through ingest, features and one short
training epoch of each base model, on this machine.

    python benchmarks/bench_scale.py [--config configs/synthetic-500.yaml] [--steps 30] [--json out.jsonl]

Each stage is timed as a user runs it (Ray start-up inside the first Ray stage). Training runs one epoch of
``--steps`` steps per model through the real ``TorchTrainer`` path: the worker pulls its shard of the whole
training period, cuts windows on the fly, trains, then scores every validation window. The table splits a fit
into its parts (fixed cost, training steps, validation pass), so a full epoch's time can be read off at any size.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_features import PeakMemory  # noqa: E402


def main() -> None:
    from raycast.config import load_config
    from raycast.data.ingest import ingest
    from raycast.features.pipeline import build_features
    from raycast.features.store import FeatureBlocks, current_features_dir, load_meta, read_feature_frame
    from raycast.runtime import init_ray
    from raycast.train.trainer import fit_base_model, target_stats

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/synthetic-500.yaml")
    p.add_argument("--steps", type=int, default=30, help="training steps of the one short epoch, per model")
    p.add_argument("--models", nargs="+", default=["cnn", "lstm", "attention"])
    p.add_argument("--json", type=Path, help="append the results as JSON lines")
    args = p.parse_args()

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as storage:
        cfg = load_config(args.config, {
            "storage": storage, "ray.num_cpus": psutil.cpu_count(), "train.epochs": 1,
            "train.max_steps_per_epoch": args.steps, "train.concurrent": False,
        })  # fmt: skip
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            manifest = ingest(cfg)
        rows.append({"stage": "ingest", "seconds": time.perf_counter() - t0, "peak_gb": mem.peak_gb,
                     "detail": f"{manifest['n_symbols']} symbols, {manifest['rows']:,} bars"})  # fmt: skip
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            init_ray(cfg.ray)
            ray_start = time.perf_counter() - t0
            summary = build_features(cfg)
        rows.append({"stage": "features", "seconds": time.perf_counter() - t0, "peak_gb": mem.peak_gb,
                     "detail": f"{summary['n_rows']:,} rows x {summary['n_features']} features; "
                               f"Ray start {ray_start:.1f} s included"})  # fmt: skip

        fdir = current_features_dir(cfg.storage)
        meta = load_meta(fdir)
        n_train = len(FeatureBlocks(read_feature_frame(fdir), meta.normalizer, meta.window).ends(meta.split.train))
        target = target_stats(fdir, meta.split)
        for name in args.models:
            with PeakMemory() as mem:
                t0 = time.perf_counter()
                fit = fit_base_model(cfg, name, fdir, meta.split, meta.normalizer, meta.window,
                                     Path(storage) / "runs" / name, target)  # fmt: skip
                wall = time.perf_counter() - t0
            h = fit.history[-1]
            full_epoch = n_train / h["samples_per_s"]
            rows.append({
                "stage": f"train {name}", "seconds": wall, "peak_gb": mem.peak_gb,
                "train_s": h["train_seconds"], "val_s": h["val_seconds"], "samples_per_s": h["samples_per_s"],
                "fixed_s": wall - h["train_seconds"] - h["val_seconds"], "full_epoch_s": full_epoch,
                "detail": f"{args.steps} steps x {cfg.train.batch_size}: {h['samples_per_s']:,.0f} windows/s; "
                          f"validation {h['val_seconds']:.1f} s; fixed {wall - h['train_seconds'] - h['val_seconds']:.1f} s; "
                          f"a full epoch ({n_train:,} windows) ~{full_epoch / 60:.1f} min",
            })  # fmt: skip
            print(f"[bench] {rows[-1]['stage']}: {rows[-1]['detail']}", flush=True)

    print(f"\nscale check: {args.config} on {psutil.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / 1e9:.0f} GB")  # fmt: skip
    print("| stage | wall s | peak memory GB | detail |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['seconds']:.1f} | {r['peak_gb']:.2f} | {r['detail']} |")
    if args.json:
        with args.json.open("a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
