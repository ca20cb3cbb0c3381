"""Tune function trainables: one trial = one process running the shared epoch loop, no Ray Train around it.

A TorchTrainer per trial pays a fixed start-up (worker group, placement group, dataset shards) that is many
times the training time of a small model (see ``benchmarks/bench_tune.py``); a function trainable runs
``raycast.train.loop.fit_epochs`` directly in the trial's actor. Multi-worker trials go through
``raycast.tune.torch_trial`` instead (``tune.trainer: torch``).

Walk-forward folds run inside a trial in lock-step: epoch e of every fold, then one report of the mean over folds,
so ASHA compares trials on the same fold-averaged curve. A trial with several CPUs (``tune.cpus_per_trial``) trains
that many folds side by side in threads (PyTorch releases the GIL in its kernels); a fold that stops early
(patience) keeps its last metrics in the mean. A trial's window is ``train.window`` when the space samples it.
"""

from __future__ import annotations

import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from raycast.config import RaycastConfig
from raycast.tune.data import Fold, HeadData, fold_frames, fold_job
from raycast.tune.space import apply_params

REPORTED = ("train_loss", "val_loss", "val_ic", "val_rank_ic", "samples_per_s", "train_windows")
PROGRESS_FILE = "folds.json"


def trial_config(cfg_data: dict, params: dict) -> RaycastConfig:
    """The search's base config with this trial's sampled params applied."""
    cfg = RaycastConfig.model_validate(cfg_data)
    return apply_params(cfg, cfg.tune.model, params)


def trial_device() -> torch.device:
    import ray

    # A trial sees only the GPU (share) Tune gave it; with gpus_per_trial 0 it trains on its CPUs.
    return torch.device("cuda") if ray.get_gpu_ids() and torch.cuda.is_available() else torch.device("cpu")


def kept(previous: dict | None, metrics: dict, early_stop_metric: str) -> dict:
    """The metrics of the epoch ``raycast train`` would keep: the best ``early_stop_metric`` so far."""
    if previous is None or metrics[early_stop_metric] == metrics["best_score"]:
        return metrics
    return previous


def fold_report(last: list[dict], best: list[dict], metric: str) -> dict:
    """What Tune sees: each metric's mean over folds at the latest epoch, and ``score``.

    ``score`` is the objective (``tune.metric``) at the epoch training would keep, averaged over folds: the
    number to rank trials by, since ``raycast train`` keeps the best checkpoint rather than the last.
    """
    out = {k: float(np.mean([m[k] for m in last])) for k in REPORTED}
    out["epoch"] = max(m["epoch"] for m in last)
    out["score"] = float(np.mean([m[metric] for m in best]))
    if len(last) > 1:
        out["score_std"] = float(np.std([m[metric] for m in best], ddof=1))
        out |= {f"fold{k}_score": m[metric] for k, m in enumerate(best)}
    return out


def base_trial(config: dict, *, cfg_data: dict, folds: list[Fold], frame: pd.DataFrame, window: int) -> None:
    """Tune function trainable for a base model: fit every fold, report the fold mean after each epoch."""
    from ray import tune

    from raycast.train.loop import fit_epochs, load_state

    cfg = trial_config(cfg_data, config)
    esm = cfg.train.early_stop_metric
    window = cfg.train.window or window
    device = trial_device()
    n = len(folds)
    states: list[dict | None] = [None] * n
    done, last, best = [False] * n, [None] * n, [None] * n
    checkpoint = tune.get_checkpoint()
    if checkpoint:  # a resumed trial: every fold continues after its last saved epoch
        with checkpoint.as_directory() as d:
            progress = json.loads((Path(d) / PROGRESS_FILE).read_text())
            done, last, best = progress["done"], progress["last"], progress["best"]
            states = [None if done[k] else load_state(Path(d) / f"fold{k}", device) for k in range(n)]
    runs = []
    for k, fold in enumerate(folds):
        train_frame, val_frame = fold_frames(frame, fold, window)
        job = fold_job(cfg, cfg.tune.model, fold, window)
        runs.append(None if done[k] else fit_epochs(job, train_frame, val_frame, device, states[k]))

    side_by_side = max(1, min(n, int(cfg.tune.cpus_per_trial)))
    with ThreadPoolExecutor(side_by_side) as pool:
        while not all(done):
            running = [k for k in range(n) if not done[k]]
            for k, (metrics, state) in zip(running, pool.map(lambda k: next(runs[k]), running), strict=True):
                states[k] = state
                done[k] = bool(metrics["stop"])
                last[k] = {key: v for key, v in metrics.items() if key != "stop"}
                best[k] = kept(best[k], last[k], esm)
            _save_and_report(states, done, last, best, cfg.tune.metric)


def _save_and_report(states: list, done: list[bool], last: list, best: list, metric: str) -> None:
    """One Tune report of the fold means, with every unfinished fold's state as the trial's checkpoint."""
    from ray import tune

    from raycast.train.loop import save_state

    with tempfile.TemporaryDirectory() as d:
        for k, state in enumerate(states):
            if state is not None and not done[k]:
                Path(d, f"fold{k}").mkdir()
                save_state(state, Path(d, f"fold{k}"))
        Path(d, PROGRESS_FILE).write_text(json.dumps({"done": done, "last": last, "best": best}))
        tune.report(fold_report(last, best, metric), checkpoint=tune.Checkpoint.from_directory(d))


def ensemble_trial(config: dict, *, cfg_data: dict, head: HeadData) -> None:
    """Tune function trainable for the ensemble head, on cached base outputs (bases are never run here).

    Runs ``raycast.train.ensemble.fit_ensemble_head`` itself, on the stacking part the registered head learned
    on: every epoch is reported, with ``score`` the objective of the state the head would keep so far (the
    weighted-average start until an epoch beats it on the held-out dates).
    """
    from ray import tune

    from raycast.train.ensemble import fit_ensemble_head

    cfg = trial_config(cfg_data, config)
    members = [m for m in cfg.models.ensemble.members if m in head.members]  # as training does: the members that exist
    if not members:
        raise ValueError(
            f"models.ensemble.members {cfg.models.ensemble.members} names no base of registry version {head.version}"
        )
    cols = [head.members.index(m) for m in members]
    # The head only ever sees the (rows, members) matrix: placeholders stand in for the frozen bases.
    bases = {m: torch.nn.Identity() for m in members}

    def report(metrics: dict, kept_metrics: dict) -> None:
        tune.report(metrics | {"score": kept_metrics[cfg.tune.metric]})

    fit_ensemble_head(cfg, bases, head.outputs[:, cols], head.target, head.dates, head.embargo, on_epoch=report)
