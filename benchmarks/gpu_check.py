"""One bounded GPU check: what the 2-core CPU machine cannot measure, written as JSON lines.

    python benchmarks/gpu_check.py [--out DIR] [--sections store,models,tune,train,pipeline] [--budget 530]

Each section runs in its own process with a time limit taken from what is left of ``--budget``, so a hang
costs only that section; every section appends its figures to ``DIR/gpu.jsonl`` as it goes, and a line
``{"section": ..., "status": ok|failed|timeout, "seconds": ...}`` when it ends.

  store     ingest + featurize a synthetic universe once (100 symbols x 4 years); the later sections read it
  models    bench_models.py on CUDA: fp32 and bf16, batch 32 to 16384, batch-1 latency
  tune      k trials at 1/k GPU each, at once, through raycast's own Tune trainable: per-trial and
            summed samples/s as k grows
  train     bench_train.py: the bare loop vs the same loop in a TorchTrainer on the GPU, the
            window data path, the trainer's fixed cost (LSTM, bf16, batch 4096)
  pipeline  ``raycast train`` on the GPU: three base models concurrently on one GPU, the ensemble,
            then the evaluation report
  stage     (only when named) synthetic-500 x 10 years at strength 0.05: the three base models in turn on
            the whole GPU, 10 epochs each: the stage's wall time over its in-loop seconds, and the test ICs

Without CUDA (the CI machine) the script still runs every section on CPU with tiny settings: ``--cpu-smoke``.

On a GPU machine without a package index (Python 3.12 and torch present, Ray and pandas-ta not), install what
it lacks into a folder on a machine with an index and the same Python and platform, carry the folder over, and
import the project through PYTHONPATH::

    pip install --target .site 'ray[data,train,tune,serve]==2.60.*' pandas-ta==0.4.71b0 ...  # pyproject's, less torch
    PYTHONPATH=$PWD/.site:$PWD RAY_AUTH_MODE=disabled python3 benchmarks/gpu_check.py --out $OUT --budget 520

On one NVIDIA H100 (2026-11-27) every section took 517 s; ``--sections store,tune,pipeline`` 276 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SECTIONS = ("store", "models", "tune", "train", "pipeline")
SECTIONS = (*DEFAULT_SECTIONS, "stage")  # stage: a check of its own, about as long as the others together
# Seconds each section may take at most (less when the overall budget runs short).
LIMITS = {"store": 75, "models": 70, "tune": 160, "train": 90, "pipeline": 140, "stage": 480}


def emit(out: Path, record: dict) -> None:
    line = json.dumps(record, default=str)
    print(line, flush=True)
    with (out / "gpu.jsonl").open("a") as f:
        f.write(line + "\n")


def smoke() -> bool:
    return os.environ.get("RAYCAST_GPU_CHECK_SMOKE") == "1"


def base_config(store: Path) -> dict:
    n_symbols, n_days = (12, 400) if smoke() else (100, 1008)
    return {
        "storage": str(store),
        "ray": {"num_cpus": os.cpu_count()},  # a local Ray finds the GPU itself
        "ingest": {"source": "synthetic", "synthetic": {"n_symbols": n_symbols, "n_days": n_days, "seed": 0}},
        "features": {"symbols_per_task": 10, "num_cpus_per_task": 1},
    }


# ------------------------------------------------------------------------------------------------ sections


def section_store(store: Path, out: Path) -> None:
    from raycast.config import parse_config
    from raycast.data.ingest import ingest
    from raycast.features.pipeline import build_features
    from raycast.runtime import init_ray

    cfg = parse_config(base_config(store))
    t0 = time.perf_counter()
    manifest = ingest(cfg)
    init_ray(cfg.ray)
    summary = build_features(cfg)
    emit(out, {"section": "store", "symbols": manifest["n_symbols"], "rows": manifest["rows"],
               "seconds": time.perf_counter() - t0, "features": {k: v for k, v in summary.items() if k != "features"}})  # fmt: skip


def section_models(store: Path, out: Path) -> None:
    sys.path.insert(0, str(HERE))
    import bench_models

    if smoke():
        argv = ["--device", "cpu", "--quick", "--batches", "32", "--models", "cnn", "--threads", "1"]
    else:
        argv = ["--device", "cuda", "--batches", "32,512,4096,16384", "--budget", "0.3"]
    bench_models.main([*argv, "--json", str(out / "gpu.jsonl")])


def section_train(store: Path, out: Path) -> None:
    sys.path.insert(0, str(HERE))
    import bench_train

    if smoke():
        argv = ["--device", "cpu", "--model", "cnn", "--batch", "64", "--steps", "5"]
    else:
        argv = ["--device", "cuda", "--model", "lstm", "--batch", "4096", "--steps", "200", "--bf16"]
    bench_train.main([*argv, "--storage", str(store), "--cpus", str(os.cpu_count()), "--json", str(out / "gpu.jsonl")])


def section_tune(store: Path, out: Path) -> None:
    """k identical trials (seeds 1..k) of one model at 1/k GPU each, all at once, for k in ``--tune-trials``.

    The trials are raycast's own Tune function trainable (the default ``tune.trainer``), reference
    hyperparameters, batch 512, fp32; each reports the in-loop samples/s of its last epoch, so trial start-up and
    validation do not dilute it. The epochs are long enough (several seconds) for the k trials to overlap.
    """
    from ray import tune

    from raycast.config import parse_config
    from raycast.runtime import init_ray
    from raycast.tune.search import build_trainable, build_tuner, search_config

    steps, epochs = (5, 2) if smoke() else (300, 2)
    levels = [int(k) for k in os.environ["RAYCAST_GPU_CHECK_TUNE_TRIALS"].split(",")]
    models = os.environ["RAYCAST_GPU_CHECK_TUNE_MODELS"].split(",")
    base = base_config(store)
    init_ray(parse_config(base).ray)
    shutil.rmtree(store / "tune_packing", ignore_errors=True)  # a rerun must not restore the last run's trials
    for k in levels:  # k first: the most telling points come first if the section runs out of time
        for model in models:
            cfg = search_config(parse_config(base | {
                "train": {"models": [model], "max_steps_per_epoch": steps, "patience": 100, "batch_size": 512},
                "tune": {"model": model, "max_epochs": epochs, "scheduler": "fifo", "cpus_per_trial": 1,
                         "gpus_per_trial": 0 if smoke() else 1 / k, "max_concurrent_trials": k},
            }))  # fmt: skip
            trainable = build_trainable(cfg, store / "tune_packing")
            name = f"{model}-k{k}"
            tuner = build_tuner(trainable, cfg, store / "tune_packing", name,
                                {"seed": tune.grid_search(list(range(1, k + 1)))}, searching=False, verbose=0)  # fmt: skip
            t0 = time.perf_counter()
            results = tuner.fit()
            wall = time.perf_counter() - t0
            rates = [r.metrics.get("samples_per_s") for r in results if r.metrics and not r.error]
            emit(out, {"section": "tune", "model": model, "trials": k, "gpu_per_trial": 1 / k, "wall_s": wall,
                       "errors": results.num_errors, "per_trial_samples_per_s": rates,
                       "mean_per_trial": sum(rates) / max(len(rates), 1), "summed": sum(rates)})  # fmt: skip


def section_pipeline(store: Path, out: Path) -> None:
    from raycast.config import parse_config
    from raycast.evaluate.evaluate import evaluate_version
    from raycast.train.run import train

    gpu = not smoke()
    cfg = parse_config(base_config(store) | {
        "train": {"models": ["lstm", "cnn", "attention"], "concurrent": gpu,  # 2 CPUs: one trainer at a time
                  "use_gpu": gpu, "gpus_per_worker": 0.3,
                  "cpus_per_worker": 2 if gpu else 0.5, "bf16": gpu, "epochs": 2 if smoke() else 3,
                  "batch_size": 1024 if gpu else 64, "max_steps_per_epoch": 3 if smoke() else None, "patience": 10,
                  "ensemble_epochs": 3},
    })  # fmt: skip
    t0 = time.perf_counter()
    trained = train(cfg)
    train_s = time.perf_counter() - t0
    for name, fit in trained.fits.items():
        last = fit.history[-1]
        emit(out, {"section": "pipeline", "model": name, "epochs": len(fit.history),
                   "samples_per_s_by_epoch": [h["samples_per_s"] for h in fit.history],
                   "train_windows": last["train_windows"], "val_ic": last["val_ic"],
                   "train_seconds": last["train_seconds"], "val_seconds": last["val_seconds"]})  # fmt: skip
    t1 = time.perf_counter()
    report = evaluate_version(cfg, trained.version)
    shutil.copy(report, out / "report.md")
    emit(out, {"section": "pipeline", "train_wall_s": train_s, "evaluate_wall_s": time.perf_counter() - t1,
               "version": trained.version, "report": str(report),
               "training": trained.spec.get("training")})  # fmt: skip


def section_stage(store: Path, out: Path) -> None:
    """The training stage at scale, on a store of its own: synthetic-500 x 10 years at planted strength 0.05, the
    reference base models in turn on the whole GPU for 10 epochs each, then the ensemble; the stage's wall time
    over its in-loop seconds, its timeline, and the test ICs against the oracle's and the baselines'."""
    from raycast.config import parse_config
    from raycast.data.ingest import ingest
    from raycast.evaluate.evaluate import evaluate_version
    from raycast.features.pipeline import build_features
    from raycast.registry import load_spec
    from raycast.runtime import init_ray
    from raycast.train.run import train

    gpu = not smoke()
    n_symbols, n_days, epochs = (12, 400, 2) if smoke() else (500, 2520, 10)
    universe = {"n_symbols": n_symbols, "n_days": n_days, "seed": 0, "signal_strength": 0.05}
    cfg = parse_config(base_config(store / "stage") | {
        "ingest": {"source": "synthetic", "synthetic": universe},
        "train": {"models": ["lstm", "cnn", "attention"], "use_gpu": gpu, "gpus_per_worker": 1,
                  "cpus_per_worker": 2 if gpu else 0.5, "bf16": gpu, "epochs": epochs, "patience": epochs,
                  "batch_size": 1024 if gpu else 64, "max_steps_per_epoch": 3 if smoke() else None},
        "evaluate": {"mode": "split"},
    })  # fmt: skip
    shutil.rmtree(store / "stage", ignore_errors=True)
    t0 = time.perf_counter()
    manifest = ingest(cfg)
    init_ray(cfg.ray)
    build_features(cfg)
    t1 = time.perf_counter()
    trained = train(cfg)
    stage_s, in_loop = time.perf_counter() - t1, trained.timeline.in_loop_s()
    emit(out, {"section": "stage", "symbols": n_symbols, "days": n_days, "epochs": epochs,
               "data_s": t1 - t0, "stage_wall_s": stage_s, "in_loop_s": in_loop, "wall_over_in_loop": stage_s / in_loop,
               "timeline": trained.timeline.table()})  # fmt: skip
    evaluate_version(cfg, trained.version)
    test = load_spec(cfg.storage, trained.version)["metrics"]["test"]
    emit(out, {"section": "stage", "oracle_ic": manifest["synthetic"]["oracle_ic"],
               "test_ic": {n: test[n]["ic"] for n in ("lstm", "cnn", "attention", "ensemble", "ridge", "lightgbm")
                           if n in test}})  # fmt: skip


# ------------------------------------------------------------------------------------------------ driver


def run_section(section: str, store: Path, out: Path, limit: float) -> str:
    """Run one section in a child process (its own session, so a timeout kills Ray's children too)."""
    cmd = [sys.executable, __file__, "--child", section, "--store", str(store), "--out", str(out)]
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        return "ok" if proc.wait(timeout=limit) == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return "timeout"
    finally:
        # A killed section can leave Ray's processes holding GPU memory: the next one starts clean. `ray stop` ends
        # every Ray process of the machine, so run the check on a GPU machine that runs nothing else on Ray.
        if not smoke():
            subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True, timeout=60)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/gpu_check")))
    ap.add_argument("--store", type=Path, default=None, help="where the synthetic store lives (default OUT/../)")
    ap.add_argument("--sections", default=",".join(DEFAULT_SECTIONS), help=f"any of {','.join(SECTIONS)}")
    ap.add_argument("--budget", type=float, default=530, help="seconds for all sections together")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny settings on CPU: check the script itself")
    ap.add_argument("--tune-trials", default="1,4,8,2", help="tune section: trials sharing the GPU, in this order")
    ap.add_argument("--tune-models", default="lstm,cnn,attention", help="tune section: the models")
    ap.add_argument("--child", choices=SECTIONS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.child:  # the sections read their options from the environment they inherit
        os.environ["RAYCAST_GPU_CHECK_TUNE_TRIALS"] = "1,2" if args.cpu_smoke else args.tune_trials
        os.environ["RAYCAST_GPU_CHECK_TUNE_MODELS"] = "cnn" if args.cpu_smoke else args.tune_models
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.store or Path("/tmp/raycast-gpu-check")
    if args.cpu_smoke:
        os.environ["RAYCAST_GPU_CHECK_SMOKE"] = "1"
    if args.child:
        globals()[f"section_{args.child}"](store, args.out)
        return 0

    import torch

    emit(args.out, {"section": "env", "torch": torch.__version__, "cuda": torch.version.cuda,
                    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                    "cpus": os.cpu_count(), "python": sys.version.split()[0]})  # fmt: skip
    deadline = time.monotonic() + args.budget
    for section in args.sections.split(","):
        left = deadline - time.monotonic()
        if left < 20:
            emit(args.out, {"section": section, "status": "skipped", "reason": "budget spent"})
            continue
        t0 = time.monotonic()
        status = run_section(section, store, args.out, min(LIMITS[section], left))
        emit(args.out, {"section": section, "status": status, "seconds": round(time.monotonic() - t0, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
