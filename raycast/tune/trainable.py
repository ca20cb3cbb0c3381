"""Tune function trainables: one trial = one process running the shared epoch loop, no Ray Train around it.

A TorchTrainer per trial pays a fixed start-up (worker group, placement group, dataset shards) that is many
times the training time of a small model (see ``benchmarks/bench_tune.py``); a function trainable runs
``raycast.train.loop.fit_epochs`` directly in the trial's actor. Multi-worker trials go through
``raycast.tune.torch_trial`` instead (``tune.trainer: torch``).

Walk-forward folds run sequentially inside a trial, in lock-step: epoch e of every fold, then one report of the
mean over folds, so ASHA compares trials on the same fold-averaged curve. Parallelism comes from running many
trials at once; a fold that stops early (patience) keeps its last metrics in the mean.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from raycast.config import RaycastConfig
from raycast.tune.data import Fold, HeadData, fold_frames, fold_job
from raycast.tune.space import apply_params

REPORTED = ("train_loss", "val_loss", "val_ic", "val_rank_ic", "samples_per_s")
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

    from raycast.train.loop import fit_epochs, load_state, save_state

    cfg = trial_config(cfg_data, config)
    esm = cfg.train.early_stop_metric
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

    while not all(done):
        for k, run in enumerate(runs):
            if done[k]:
                continue
            metrics, states[k] = next(run)
            done[k] = bool(metrics["stop"])
            last[k] = {key: v for key, v in metrics.items() if key != "stop"}
            best[k] = kept(best[k], last[k], esm)
        with tempfile.TemporaryDirectory() as d:
            for k, state in enumerate(states):
                if state is not None and not done[k]:
                    Path(d, f"fold{k}").mkdir()
                    save_state(state, Path(d, f"fold{k}"))
            Path(d, PROGRESS_FILE).write_text(json.dumps({"done": done, "last": last, "best": best}))
            tune.report(fold_report(last, best, cfg.tune.metric), checkpoint=tune.Checkpoint.from_directory(d))


def ensemble_trial(config: dict, *, cfg_data: dict, head: HeadData) -> None:
    """Tune function trainable for the ensemble head, on cached base outputs (bases are never run here).

    Mirrors ``raycast.train.ensemble.fit_ensemble_head``: the earlier 75% of validation dates fit the head, the
    rest score it; the head's epochs are ``train.ensemble_epochs`` and it stops on ``train.patience``.
    """
    from ray import tune

    from raycast.models import create_ensemble_model
    from raycast.train.loop import cross_sectional_ic

    cfg = trial_config(cfg_data, config)
    tc, ec = cfg.train, cfg.models.ensemble
    members = [m for m in ec.members if m in head.members]  # as training does: the members that exist
    if not members:
        raise ValueError(f"models.ensemble.members {ec.members} names no base of registry version {head.version}")
    torch.manual_seed(tc.seed)
    cols = [head.members.index(m) for m in members]
    # The head only ever sees the (rows, members) matrix: placeholders stand in for the frozen bases.
    ensemble = create_ensemble_model({m: torch.nn.Identity() for m in members}, ec)
    unique = np.unique(head.dates)
    cut = unique[int(len(unique) * 0.75)] if len(unique) > 4 else unique[-1]
    fit_rows, stop_rows = np.flatnonzero(head.dates < cut), np.flatnonzero(head.dates >= cut)
    x, y = torch.as_tensor(head.outputs[:, cols]), torch.as_tensor(head.target)
    params = [p for p in ensemble.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=tc.ensemble_lr)
    loss_fn = torch.nn.MSELoss()
    rng = np.random.default_rng(tc.seed)
    batch = min(tc.batch_size, len(fit_rows))
    best, bad, kept_metrics = float("inf"), 0, {}
    for epoch in range(tc.ensemble_epochs):
        ensemble.train()
        order, total, steps = rng.permutation(fit_rows), 0.0, 0
        for i in range(0, len(order) - batch + 1, batch):  # full batches only: BatchNorm needs > 1 row
            idx = torch.as_tensor(order[i : i + batch])
            loss = loss_fn(ensemble.forward_from_base_predictions(x[idx])[0].reshape(-1), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
        ensemble.eval()
        with torch.no_grad():
            pred = ensemble.forward_from_base_predictions(x[stop_rows])[0].reshape(-1)
        val_loss = float(loss_fn(pred, y[stop_rows]))
        ic, rank_ic = cross_sectional_ic(head.dates[stop_rows], pred.numpy(), head.target[stop_rows])
        metrics = {"epoch": epoch, "train_loss": total / max(steps, 1), "val_loss": val_loss}
        metrics |= {"val_ic": ic, "val_rank_ic": rank_ic}
        if val_loss < best:  # the head keeps its best val_loss epoch, as in training
            best, bad, kept_metrics = val_loss, 0, metrics
        else:
            bad += 1
        tune.report(metrics | {"score": kept_metrics[cfg.tune.metric]})
        if bad >= tc.patience:
            break
