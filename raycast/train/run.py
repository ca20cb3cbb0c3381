"""``raycast train``: base models with Ray Train, then the ensemble head, then a registry version."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass

import pandas as pd
import ray
import torch

from raycast import credentials, fs
from raycast.config import RaycastConfig
from raycast.features.normalize import Normalizer
from raycast.features.splits import Split
from raycast.features.store import FeatureBlocks, current_features_dir, load_meta, read_feature_frame
from raycast.registry import HEAD, build_base, head_state, save_version
from raycast.train.ensemble import base_outputs, fit_ensemble_head
from raycast.train.trainer import FitResult, fit_base_models, target_stats


@dataclass
class TrainedEnsemble:
    """What one training run produced: the fitted bases, the ensemble head and the registry spec."""

    run_id: str
    run_dir: fs.Location
    fits: dict[str, FitResult]
    bases: dict[str, torch.nn.Module]
    ensemble: torch.nn.Module
    ensemble_history: list[dict]
    spec: dict
    version: str | None = None


def new_run_dir(storage: str) -> tuple[str, fs.Location]:
    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
    path = fs.join(fs.absolute(storage), "runs", run_id)
    fs.makedirs(path)
    return run_id, path


def period_blocks(features_dir: fs.Location, split: Split, normalizer: Normalizer, window: int, start: pd.Timestamp) -> FeatureBlocks:
    """Feature rows from a little before ``start`` (so its first windows are complete) to the end."""
    lookback = start - pd.tseries.offsets.BDay(2 * window + 10)
    frame = read_feature_frame(features_dir)
    return FeatureBlocks(frame[frame["date"] >= lookback], normalizer, window)


@ray.remote(num_cpus=0.5)
def _fit_ensemble_task(cfg_data: dict, bases: dict, outputs, target, dates):
    # A Ray task, so that on a cluster the (small) ensemble stage runs on a worker rather than the driver.
    ensemble, history = fit_ensemble_head(RaycastConfig.model_validate(cfg_data), bases, outputs, target, dates)
    return head_state(ensemble), history


def fit_ensemble(
    cfg: RaycastConfig,
    features_dir: fs.Location,
    split: Split,
    normalizer: Normalizer,
    window: int,
    fits: dict[str, FitResult],
    run_id: str,
    run_dir: fs.Location,
    target: tuple[float, float],
) -> TrainedEnsemble:
    """Freeze the fitted bases and fit the ensemble head on their validation-period outputs."""
    from raycast.models import create_ensemble_model

    members = [m for m in cfg.models.ensemble.members if m in fits]
    if not members:
        raise ValueError(f"models.ensemble.members {cfg.models.ensemble.members} names no trained model ({list(fits)})")
    spec_stub = {"features": {"features": normalizer.features, "window": window}, "models": cfg.models.model_dump()}
    bases = {n: build_base(spec_stub, n, fits[n].state_dict) for n in members}
    mean, std = target
    horizon = load_meta(features_dir).horizon  # the targets' horizon is the dataset's, whatever the config says now
    blocks = period_blocks(features_dir, split, normalizer, window, split.val.start)
    val_ends = blocks.ends(split.val)
    outputs = base_outputs(bases, blocks.x, val_ends, window)
    target = (blocks.y[val_ends] - mean) / std
    head, history = ray.get(
        _fit_ensemble_task.remote(cfg.model_dump(mode="json"), bases, outputs, target, blocks.dates[val_ends])
    )
    ensemble = create_ensemble_model(bases, cfg.models.ensemble)
    ensemble.load_state_dict(head, strict=False)
    spec = {
        "name": cfg.name,
        "run_id": run_id,
        "members": members,
        "models": cfg.models.model_dump(),
        "train": cfg.train.model_dump(),
        "target": {"mean": mean, "std": std, "horizon": horizon},
        "features": {
            "features": normalizer.features,
            "window": window,
            "horizon": horizon,
            "normalizer": normalizer.to_json(),
            "features_version": fs.name(features_dir),
        },
        "split": split.to_json(),
        "training": {n: {"best": f.best_metrics, "epochs": len(f.history)} for n, f in fits.items()}
        | {"ensemble": {"epochs": len(history), "best_val_loss": min(h["val_loss"] for h in history)}},
    }
    return TrainedEnsemble(run_id, run_dir, fits, bases, ensemble.eval(), history, spec)


def train(
    cfg: RaycastConfig,
    split: Split | None = None,
    normalizer: Normalizer | None = None,
    register: bool = True,
    features_dir: fs.Location | None = None,
) -> TrainedEnsemble:
    """Fit the configured base models and the ensemble; register the result unless ``register`` is False.

    ``features_dir`` defaults to the current feature dataset, ``split`` and ``normalizer`` to that dataset's own;
    walk-forward folds pass theirs.
    """
    from raycast.runtime import init_ray

    features_dir = features_dir or current_features_dir(cfg.storage)
    meta = load_meta(features_dir)
    split = split or meta.split
    normalizer = normalizer or meta.normalizer
    init_ray(cfg.ray)
    run_id, run_dir = new_run_dir(cfg.storage)
    config = credentials.redact_data(cfg.model_dump(mode="json"))
    fs.write_text(fs.join(run_dir, "config.json"), json.dumps(config, indent=2))
    print(f"[raycast] run {run_id}: training {', '.join(cfg.train.models)} on {split.train.start.date()}..{split.train.end.date()}", flush=True)
    target = target_stats(features_dir, split)  # one read of the training targets for every stage below
    fits = fit_base_models(cfg, features_dir, split, normalizer, meta.window, run_dir, target)
    trained = fit_ensemble(cfg, features_dir, split, normalizer, meta.window, fits, run_id, run_dir, target)
    fs.write_text(
        fs.join(run_dir, "history.json"),
        json.dumps({n: f.history for n, f in fits.items()} | {"ensemble": trained.ensemble_history}, indent=2),
    )
    if register:
        weights = {n: fits[n].state_dict for n in trained.bases} | {HEAD: head_state(trained.ensemble)}
        trained.version = save_version(cfg.storage, trained.spec, weights)
        print(f"[raycast] registered model version {trained.version}", flush=True)
    return trained
