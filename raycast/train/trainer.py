"""Fitting the base models with Ray Train: all of them in turn in one trainer, or one trainer each at once.

Ray Data shards the training symbols across the workers (``get_dataset_shard``); each worker reads its symbols'
training rows straight from Parquet, and the whole validation period. Checkpoints, early stopping and restarts
after a worker failure are Ray Train's (``CheckpointConfig``, ``FailureConfig``).
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from raycast import fs
from raycast.config import RaycastConfig
from raycast.features.normalize import Normalizer
from raycast.features.splits import Split
from raycast.features.store import read_feature_dataset, read_training_rows
from raycast.train.loop import CHECKPOINT_FILE, TrainJob, train_fn_per_worker
from raycast.train.timeline import WORKER_DIR, Timeline


@dataclass
class FitResult:
    """A fitted base model: its best weights, the metrics of that epoch, and the whole training curve."""

    name: str
    state_dict: dict
    best_metrics: dict
    history: list[dict] = field(default_factory=list)
    path: str = ""


def target_stats(features_dir: fs.Location, split: Split) -> tuple[float, float]:
    """Mean and standard deviation of the target over the training period: the target is standardized with them."""
    table = read_training_rows(features_dir, split, ["target"])
    y = table.column("target").to_numpy(zero_copy_only=False)
    y = y[np.isfinite(y)]
    return float(y.mean()), float(max(y.std(), 1e-8))


def _until(end: pd.Timestamp):
    """A Ray Data batch filter keeping rows dated on or before ``end``."""

    def keep(batch):
        dates = batch["date"]
        return batch.filter(pc.less_equal(dates, pa.scalar(end.to_datetime64()).cast(dates.type)))

    return keep


def training_dataset(features_dir: fs.Location, split: Split):
    """The training period as a Ray Data dataset; Ray Train shards it across the workers."""
    ds = read_feature_dataset(features_dir)
    return ds.map_batches(_until(split.train.end), batch_format="pyarrow", batch_size=None)


def training_symbols(features_dir: fs.Location, split: Split):
    """The symbols with training rows, one Ray Data block each: Ray Train shards them across the workers."""
    import ray

    symbols = read_training_rows(features_dir, split, ["symbol"]).column("symbol").unique().to_pylist()
    if not symbols:
        raise ValueError(f"no feature rows on or before the training period's end {split.train.end.date()}")
    return ray.data.from_items([{"symbol": str(s)} for s in sorted(symbols)], override_num_blocks=len(symbols))


def symbol_shards():
    """Ray Train's ``DataConfig`` with the training symbols split whole and none dropped.

    The default streaming split with ``equal=True`` would balance rows by dropping some, here whole symbols; a
    static split of the small symbol dataset also saves the split coordinator's start-up.
    """
    from ray.train import DataConfig

    class SymbolShards(DataConfig):
        def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
            symbols = datasets["train"]
            if symbols.count() < world_size:
                raise ValueError(f"{symbols.count()} training symbols cannot be shared by {world_size} workers")
            return [{"train": part.iterator()} for part in symbols.split(world_size, equal=False)]

    return SymbolShards(datasets_to_split=["train"])


def data_parallel_trainer(train_fn, scaling_config, **kwargs):
    """Ray Train's trainer for ``scaling_config``: a ``TorchTrainer`` (DDP) for several workers, else the plain
    ``DataParallelTrainer`` it is built on.

    A lone worker has nobody to synchronize gradients with, yet a ``TorchTrainer`` would set up a one-process
    gloo group for it and, through its backend config, make the run's controller import torch and Ray Train's
    torch support before it starts the worker group: 1-1.3 s of the controller's start on 2 CPU cores
    (docs/performance.md, "Training stage").
    Checkpoints, ``FailureConfig`` restarts, dataset shards and callbacks are the same either way.
    """
    if scaling_config.num_workers > 1:
        from ray.train.torch import TorchTrainer

        return TorchTrainer(train_fn, scaling_config=scaling_config, **kwargs)
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    return DataParallelTrainer(train_fn, scaling_config=scaling_config, **kwargs)


def fit_base_model(
    cfg: RaycastConfig,
    name: str,
    features_dir: fs.Location,
    split: Split,
    normalizer: Normalizer,
    window: int,
    run_dir: fs.Location,
    target: tuple[float, float] | None = None,
    timeline: Timeline | None = None,
) -> FitResult:
    """Fit one base model with a trainer of its own and return its best epoch's weights."""
    return fit_in_one_trainer(cfg, [name], features_dir, split, normalizer, window, run_dir, target, timeline)[name]


def fit_in_one_trainer(
    cfg: RaycastConfig,
    names: list[str],
    features_dir: fs.Location,
    split: Split,
    normalizer: Normalizer,
    window: int,
    run_dir: fs.Location,
    target: tuple[float, float] | None = None,
    timeline: Timeline | None = None,
) -> dict[str, FitResult]:
    """Fit base models ``names`` in turn in one trainer: one worker group start and one shard pull for all.

    ``target`` is the training period's (mean, std) of the target; read from the features when not given. The
    phases of the fit are added to ``timeline`` when given (the worker records its own in the run directory).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

    from raycast.console.train_callbacks import train_progress

    started = time.time()
    tc = cfg.train
    label = "+".join(names)
    worker_dir = fs.join(fs.absolute(run_dir), WORKER_DIR, label)
    mean, std = target or target_stats(features_dir, split)
    jobs = [
        TrainJob(
            cfg=cfg,
            model=name,
            split=split.to_json(),
            normalizer=normalizer.to_json(),
            window=window,
            target_mean=mean,
            target_std=std,
            features_dir=str(fs.absolute(features_dir)),  # workers do not share the driver's directory
            timeline_dir=str(worker_dir),
            shard="symbols",
        ).model_dump(mode="json")
        for name in names
    ]
    resources = {"CPU": tc.cpus_per_worker} | ({"GPU": tc.gpus_per_worker} if tc.use_gpu else {})
    trainer = data_parallel_trainer(
        train_fn_per_worker,
        train_loop_config={"jobs": jobs},
        scaling_config=ScalingConfig(num_workers=tc.num_workers, use_gpu=tc.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=label,
            **fs.ray_storage(fs.join(run_dir, "ray")),  # checkpoints on shared storage: any node can restore
            # the latest checkpoints: each carries the best weights so far of every model it has fitted
            checkpoint_config=CheckpointConfig(num_to_keep=tc.keep_checkpoints),
            failure_config=FailureConfig(max_failures=tc.max_failures),
            callbacks=train_progress(label, tc.epochs),  # each epoch's report to the driver's progress display
        ),
        # Ray Data shards the symbols across the workers, each reads its symbols' training rows from Parquet;
        # the validation rows are read whole by every worker
        datasets={"train": training_symbols(features_dir, split)},
        dataset_config=symbol_shards(),
    )
    fit_start = time.time()
    result = trainer.fit()
    fit_end = time.time()
    if result.checkpoint is None:
        raise RuntimeError(f"training {label} produced no checkpoint")
    with result.checkpoint.as_directory() as d:
        finished = torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)["finished"]
    fits = {}
    for name in names:
        done = finished[name]
        history = json.loads(done["history"])
        best_metrics = next(h for h in history if h["epoch"] == done["epoch"])
        weights = done["model"]
        if tc.loss == "ic":  # a scale-free loss: put the outputs in the label's units (see calibrate_output)
            weights = calibrated(cfg, name, weights, normalizer, window, best_metrics["val_slope"], best_metrics["val_intercept"])
        best_metrics |= {"target_mean": mean, "target_std": std}
        fits[name] = FitResult(name, weights, best_metrics, history, str(result.checkpoint.path))
    if timeline is not None:
        timeline.add(label, "trainer setup (driver)", "setup", started, fit_start)
        timeline.add_trainer(label, fit_start, fit_end, worker_dir)
        timeline.add(label, "best weights (driver)", "finish", fit_end, time.time())
    return fits


def calibrated(cfg: RaycastConfig, name: str, weights: dict, normalizer: Normalizer, window: int, slope: float,
               intercept: float) -> dict:  # fmt: skip
    """``weights`` of base model ``name`` with the line ``slope * output + intercept`` folded into them."""
    from raycast.models import build_model
    from raycast.train.loop import calibrate_output

    model = build_model(name, len(normalizer.features), window, getattr(cfg.models, name).model_dump())
    model.load_state_dict(weights)
    calibrate_output(model, slope, intercept)
    return model.state_dict()


def fit_base_models(
    cfg: RaycastConfig,
    features_dir: fs.Location,
    split: Split,
    normalizer: Normalizer,
    window: int,
    run_dir: fs.Location,
    target: tuple[float, float] | None = None,
    timeline: Timeline | None = None,
) -> dict[str, FitResult]:
    """Fit every configured base model, one after another or concurrently (``train.concurrent``)."""
    from raycast.console import progress

    target = target or target_stats(features_dir, split)

    def fit(name: str) -> FitResult:
        return fit_base_model(cfg, name, features_dir, split, normalizer, window, run_dir, target, timeline)

    at_once = concurrent_trainers(cfg)
    with progress.session() as shown:
        for name in cfg.train.models:  # every model's row from the start, in the configured order
            shown.update(name, kind="train", label=name, epochs=cfg.train.epochs, status="waiting")
        if at_once > 1:
            with ThreadPoolExecutor(at_once) as pool:
                return dict(zip(cfg.train.models, pool.map(fit, cfg.train.models), strict=True))
        # in turn: one worker group fits them all, so its start and the shard pull are paid once
        return fit_in_one_trainer(cfg, list(cfg.train.models), features_dir, split, normalizer, window, run_dir,
                                  target, timeline)  # fmt: skip


def concurrent_trainers(cfg: RaycastConfig) -> int:
    """How many base-model trainers run at once: all of them with ``train.concurrent``, as many as leave a CPU
    free for Ray Data's reads (three trainers of 0.5 CPU on 2 CPUs waited forever); the others wait their turn."""
    from raycast.runtime import slots_leaving_a_cpu

    tc = cfg.train
    if not tc.concurrent or len(tc.models) < 2:
        return 1
    per_trainer = tc.num_workers * tc.cpus_per_worker
    fit, cpus = slots_leaving_a_cpu(per_trainer)
    if fit < len(tc.models):
        print(
            f"[raycast] warning: {len(tc.models)} concurrent trainers of {per_trainer:g} CPUs would leave less than "
            f"one of the cluster's {cpus:g} CPUs to read their data; running {fit} at a time",
            file=sys.stderr,
            flush=True,
        )
    return min(fit, len(tc.models))
