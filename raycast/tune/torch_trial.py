"""Trials that each run Ray Train TorchTrainers (``tune.trainer: torch``): multi-worker, DDP trials.

Ray Train V2 runs inside a Tune function: the trial is only the driver of its TorchTrainers (Ray's
``train_driver_fn`` pattern), whose workers take their own resources (``train.num_workers`` x
``tune.cpus_per_trial`` / ``tune.gpus_per_trial``). Walk-forward folds run as concurrent TorchTrainers. Their
per-epoch results come back through a Train callback into a queue, the same path as Ray's own
``ray.tune.integration.ray_train.TuneReportCallback``, which forwards one run's results only; here the trial
waits for epoch e of every fold and reports their mean. Checkpoints stay with the Train runs, named by trial
and fold, so a resumed trial's TorchTrainers pick up their own latest checkpoints.
"""

from __future__ import annotations

import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


from raycast import fs
from raycast.train.loop import train_fn_per_worker
from raycast.tune.data import Fold, fold_job
from raycast.tune.trainable import PROGRESS_FILE, fold_report, kept, trial_config

DRIVER_CPUS = 0.1
"""Logical CPUs a torch-mode trial holds for itself: it only waits on its TorchTrainers."""


def _fold_reporter(queue, fold: int):
    from ray.train.v2.api.callback import UserCallback

    class FoldReporter(UserCallback):
        """Runs in the Train controller: hands each epoch's rank-0 metrics to the trial, tagged with the fold."""

        def after_report(self, run_context, metrics, checkpoint):
            queue.put((fold, dict(metrics[0])))

    return FoldReporter()


def _build_trainer(cfg, fold: Fold, k: int, window: int, features_dir: str, storage_path: str, name: str, queue):
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig

    from raycast.features.splits import Split
    from raycast.train.trainer import data_parallel_trainer, training_dataset

    tc, tu = cfg.train, cfg.tune
    split = Split.from_json(fold.split)
    use_gpu = tu.gpus_per_trial > 0
    return data_parallel_trainer(
        train_fn_per_worker,
        train_loop_config=fold_job(cfg, tu.model, fold, window, features_dir).model_dump(mode="json"),
        scaling_config=ScalingConfig(
            num_workers=tc.num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": tu.cpus_per_trial} | ({"GPU": tu.gpus_per_trial} if use_gpu else {}),
        ),
        run_config=RunConfig(
            name=name,
            **fs.ray_storage(storage_path),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            failure_config=FailureConfig(max_failures=tc.max_failures),
            callbacks=[_fold_reporter(queue, k)],
        ),
        datasets={"train": training_dataset(features_dir, split)},
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )


def torch_trial(
    config: dict, *, cfg_data: dict, folds: list[Fold], features_dir: str, window: int, storage_path: str
) -> None:
    """Tune function trainable: one TorchTrainer per fold, concurrently; the fold mean reported every epoch."""
    from ray import tune
    from ray.util.queue import Empty, Queue

    import ray.data

    cfg = trial_config(cfg_data, config)
    ray.data.DataContext.get_current().enable_progress_bars = cfg.ray.data_progress_bars  # the trial's own context
    n, esm = len(folds), cfg.train.early_stop_metric
    last, best = [None] * n, [None] * n
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            progress = json.loads((Path(d) / PROGRESS_FILE).read_text())
            last, best = progress["last"], progress["best"]
    queue = Queue(actor_options={"num_cpus": 0})
    trial_id = tune.get_context().get_trial_id()
    window = cfg.train.window or window  # a sampled window, else the feature dataset's
    trainers = [
        _build_trainer(cfg, f, k, window, features_dir, storage_path, f"{trial_id}-fold{k}", queue)
        for k, f in enumerate(folds)
    ]
    pending: list[list[dict]] = [[] for _ in folds]
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(t.fit) for t in trainers]
        while True:
            all_done = all(f.done() for f in futures)  # read before draining: a finished run has queued all
            try:
                while True:
                    k, metrics = queue.get(block=not any(pending) and not all_done, timeout=1.0)
                    pending[k].append(metrics)
            except Empty:
                pass
            for f in futures:
                if f.done() and f.exception() is not None:
                    raise f.exception()
            # A round: one new epoch from every fold still running (finished folds keep their last metrics).
            while any(pending) and all(pending[k] or futures[k].done() for k in range(n)):
                for k in range(n):
                    if pending[k]:
                        metrics = {key: v for key, v in pending[k].pop(0).items() if key != "stop"}
                        last[k], best[k] = metrics, kept(best[k], metrics, esm)
                _report(last, best, cfg.tune.metric)
            if all_done and not any(pending):
                return


def _report(last: list, best: list, metric: str) -> None:
    from ray import tune

    if any(m is None for m in last):
        return
    with tempfile.TemporaryDirectory() as d:
        Path(d, PROGRESS_FILE).write_text(json.dumps({"done": [False] * len(last), "last": last, "best": best}))
        tune.report(fold_report(last, best, metric), checkpoint=tune.Checkpoint.from_directory(d))
