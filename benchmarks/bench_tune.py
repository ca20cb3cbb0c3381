"""What Ray Tune costs per trial here, and a function trainable vs a TorchTrainer per trial.

N identical short trials (one LSTM config, seeds 1..N) run three ways on a small synthetic universe:

- bare: the trials' training loops alone (``raycast.train.loop.fit_epochs``), one after another in this
  process on one thread, as a Tune trial gets (Ray sets one intra-op thread per CPU of the trial);
- Tune function trainables (``tune.trainer: function``, raycast's default), one at a time and two at a time;
- Tune trials that each run a Ray Train TorchTrainer (``tune.trainer: torch``), one at a time.

Per-trial overhead = (Tune wall time - the sum of the bare loops) / trials, at one trial at a time; it includes
the search's fixed costs (starting the trial actors, which later trials reuse) spread over the trials. Data
loading happens once per search (before the clock starts) and is not counted. Packing small trials onto a
shared GPU (``tune.gpus_per_trial`` < 1) needs a GPU: without one it is reported as skipped.

    python benchmarks/bench_tune.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

TRIAL = {"hidden_size": 16, "num_layers": 1, "dropout": 0.1, "lr": 1e-3, "batch_size": 256}


def make_store(root: Path, quick: bool):
    """Ingest and featurize a synthetic universe; the config every measurement starts from."""
    from raycast.config import parse_config
    from raycast.data.ingest import ingest
    from raycast.features.pipeline import build_features

    universe = {"n_symbols": 12, "n_days": 400} if quick else {"n_symbols": 40, "n_days": 756}
    cfg = parse_config({
        "storage": str(root / "store"),
        "ray": {"num_cpus": os.cpu_count()},
        "ingest": {"source": "synthetic", "synthetic": universe},
        "features": {"symbols_per_task": 8, "num_cpus_per_task": 0.5},
        "train": {"models": ["lstm"], "max_steps_per_epoch": 10 if quick else 30, "patience": 100},
        "tune": {"model": "lstm", "max_epochs": 2 if quick else 3, "scheduler": "fifo", "cpus_per_trial": 1},
    })  # fmt: skip
    ingest(cfg)
    build_features(cfg)
    return cfg


def bare_seconds(cfg, seeds: list[int]) -> list[float]:
    """Each trial's training loop alone, in this process, on one thread."""
    import torch

    from raycast.train.loop import fit_epochs
    from raycast.tune.data import fold_frames, fold_job, load_base_data
    from raycast.tune.search import search_config
    from raycast.tune.space import apply_params

    frame, folds, window = load_base_data(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = []
    try:
        for seed in seeds:
            trial = apply_params(search_config(cfg), "lstm", TRIAL | {"seed": seed})
            started = time.perf_counter()
            for fold in folds:
                train_frame, val_frame = fold_frames(frame, fold, window)
                for _ in fit_epochs(fold_job(trial, "lstm", fold, window), train_frame, val_frame, torch.device("cpu")):
                    pass
            out.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return out


def tune_seconds(cfg, seeds: list[int], out_dir: Path, name: str, **tune) -> float:
    """Wall time of a Tune run of one trial per seed (data already loaded: only the trials are timed)."""
    from ray import tune as ray_tune

    from raycast.tune.search import build_trainable, build_tuner, search_config

    cfg = search_config(cfg.model_copy(update={"tune": cfg.tune.model_copy(update=tune)}))
    trainable = build_trainable(cfg, out_dir)
    space = TRIAL | {"seed": ray_tune.grid_search(seeds)}
    tuner = build_tuner(trainable, cfg, out_dir, name, space, searching=False, verbose=0)  # no progress tables
    started = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - started
    if results.num_errors:
        raise RuntimeError(f"{results.num_errors} trials of {name} failed: {results.errors[0]}")
    return wall


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter trials on a smaller universe (~2 min)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    import ray
    import torch

    n, k = (4, 2) if args.quick else (8, 3)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = make_store(root, args.quick)
        from raycast.runtime import init_ray

        init_ray(cfg.ray)
        seeds = list(range(1, n + 1))
        bare = bare_seconds(cfg, seeds)
        fn_1 = tune_seconds(cfg, seeds, root / "tune", "function-1", max_concurrent_trials=1)
        fn_2 = tune_seconds(cfg, seeds, root / "tune", "function-2", max_concurrent_trials=2)
        # Half a CPU per worker: with the trial's driver, a whole CPU stays free for Ray Data to feed the workers.
        torch_1 = tune_seconds(
            cfg, seeds[:k], root / "tune", "torch-1", max_concurrent_trials=1, trainer="torch", cpus_per_trial=0.5
        )
        cpus = ray.cluster_resources().get("CPU", 0)
        ray.shutdown()

    fn_overhead = (fn_1 - sum(bare)) / n
    torch_overhead = (torch_1 - sum(bare[:k])) / k
    figures = {
        "trials": n, "epochs": cfg.tune.max_epochs, "steps_per_epoch": cfg.train.max_steps_per_epoch,
        "bare_loop_s_mean": sum(bare) / n, "bare_loop_s_sum": sum(bare),
        "function_1_wall_s": fn_1, "function_overhead_s_per_trial": fn_overhead,
        "function_1_trials_per_min": n / fn_1 * 60,
        "function_2_wall_s": fn_2, "function_2_trials_per_min": n / fn_2 * 60,
        "bare_trials_per_min": n / sum(bare) * 60,
        "torch_trials": k, "torch_1_wall_s": torch_1, "torch_overhead_s_per_trial": torch_overhead,
        "cpus": cpus, "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "gpu_packing": "needs a GPU: skipped" if not torch.cuda.is_available() else "not measured by this script",
    }  # fmt: skip
    rows = [
        ("trials x epochs (LSTM, hidden 16)", f"{n} x {figures['epochs']} ({figures['steps_per_epoch']} steps/epoch)"),
        ("bare training loop, mean per trial", f"{figures['bare_loop_s_mean']:.2f} s"),
        ("Tune function trainables, 1 at a time: wall", f"{fn_1:.1f} s"),
        ("per-trial overhead, function trainable", f"{fn_overhead:.2f} s"),
        ("Tune function trainables, 2 at a time: wall", f"{fn_2:.1f} s"),
        ("trials per minute, 1 at a time", f"{figures['function_1_trials_per_min']:.1f}"),
        ("trials per minute, 2 at a time", f"{figures['function_2_trials_per_min']:.1f}"),
        ("trials per minute, bare loops 1 at a time (no Ray)", f"{figures['bare_trials_per_min']:.1f}"),
        (f"Tune + TorchTrainer per trial, 1 at a time: wall ({k} trials)", f"{torch_1:.1f} s"),
        ("per-trial overhead, TorchTrainer per trial", f"{torch_overhead:.2f} s"),
        ("TorchTrainer / function overhead", f"{torch_overhead / max(fn_overhead, 1e-9):.1f}x"),
        ("small trials sharing one GPU (gpus_per_trial < 1)", figures["gpu_packing"]),
    ]  # fmt: skip
    print(f"\nRay Tune per-trial cost on {figures['machine']} (Ray logical CPUs {cpus:g})\n")
    print("| measurement | value |\n| --- | ---: |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    sys.exit(main())
