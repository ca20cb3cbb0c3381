"""``raycast train``: base models with Ray Train, then the ensemble head, then a registry version."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import ray
import torch

from raycast import credentials, fs
from raycast.config import RaycastConfig
from raycast.features.normalize import Normalizer
from raycast.features.splits import Period, Split
from raycast.features.store import ROWS_DIR, FeatureBlocks, current_features_dir, load_meta
from raycast.registry import HEAD, build_base, head_state, save_version
from raycast.train.ensemble import StackingPeriods, base_outputs, fit_ensemble_head, stacking_periods
from raycast.train.loop import cross_sectional_ic
from raycast.train.timeline import Timeline
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
    timeline: Timeline | None = None  # where the stage's seconds went (also the run directory's timeline.json)


def new_run_dir(storage: str) -> tuple[str, fs.Location]:
    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
    path = fs.join(fs.absolute(storage), "runs", run_id)
    fs.makedirs(path)
    return run_id, path


def period_blocks(features_dir: fs.Location, split: Split, normalizer: Normalizer, window: int, start: pd.Timestamp) -> FeatureBlocks:
    """Feature rows from a little before ``start`` (so its first windows are complete) to the end."""
    lookback = start - pd.tseries.offsets.BDay(2 * window + 10)
    return FeatureBlocks.read(features_dir, normalizer, window, filters=[("date", ">=", lookback.to_pydatetime())])


def period_dates(features_dir: fs.Location, period: Period) -> np.ndarray:
    """The dates of the feature rows inside ``period`` (only the date column is read)."""
    filesystem, path = fs.resolve(fs.join(features_dir, ROWS_DIR))
    filters = [("date", ">=", period.start.to_pydatetime()), ("date", "<=", period.end.to_pydatetime())]
    table = pq.read_table(path, columns=["date"], filters=filters, filesystem=filesystem)
    return table.column("date").to_numpy()


def validation_parts(features_dir: fs.Location, split: Split, stacking_fraction: float) -> StackingPeriods:
    """The validation period cut in two, a label span apart: the bases select their epoch on the first part
    (``periods.base_split(split)``), the ensemble head learns on the second (``periods.stacking``)."""
    return stacking_periods(period_dates(features_dir, split.val), stacking_fraction, label_span(features_dir))


def label_span(features_dir: fs.Location) -> int:
    """Dates a label reaches past its own date, as the feature dataset built it."""
    meta = load_meta(features_dir)
    return int(meta.raw.get("label_delay", 0)) + meta.horizon


@ray.remote(num_cpus=0.5)
def _fit_ensemble_task(cfg_data: dict, bases: dict, outputs, target, dates, embargo: int):
    # A Ray task, so that on a cluster the (small) ensemble stage runs on a worker rather than the driver.
    cfg = RaycastConfig.model_validate(cfg_data)
    ensemble, history, summary = fit_ensemble_head(cfg, bases, outputs, target, dates, embargo)
    return head_state(ensemble), history, summary


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
    periods: StackingPeriods | None = None,
) -> TrainedEnsemble:
    """Freeze the fitted bases and fit the ensemble head on their outputs over the stacking part of validation.

    ``periods`` are the parts the bases were selected on and the head learns on; by default the validation
    period is cut as ``train.stacking_fraction`` says.
    """
    from raycast.models import create_ensemble_model
    from raycast.train.labels import process_labels

    members = [m for m in cfg.models.ensemble.members if m in fits]
    if not members:
        raise ValueError(f"models.ensemble.members {cfg.models.ensemble.members} names no trained model ({list(fits)})")
    spec_stub = {"features": {"features": normalizer.features, "window": window}, "models": cfg.models.model_dump()}
    bases = {n: build_base(spec_stub, n, fits[n].state_dict) for n in members}
    mean, std = target
    horizon = load_meta(features_dir).horizon  # the targets' horizon is the dataset's, whatever the config says now
    tc = cfg.train
    if periods is None:
        periods = validation_parts(features_dir, split, tc.stacking_fraction)
    blocks = period_blocks(features_dir, split, normalizer, window, periods.stacking.start)
    ends = blocks.ends(periods.stacking)
    dates = blocks.dates[ends]
    outputs = base_outputs(bases, blocks.x, ends, window)
    target = process_labels(blocks.y[ends], dates, tc.label_transform, mean, std, tc.label_clip)
    head, history, summary = ray.get(
        _fit_ensemble_task.remote(cfg.model_dump(mode="json"), bases, outputs, target, dates, periods.embargo)
    )
    raw = blocks.y[ends]  # ICs against raw returns, as evaluation computes them
    stacking_ic = {n: cross_sectional_ic(dates, outputs[:, i], raw)[0] for i, n in enumerate(bases)}
    stacking_ic["equal_weights"] = cross_sectional_ic(dates, outputs.mean(axis=1), raw)[0]
    ensemble = create_ensemble_model(bases, cfg.models.ensemble)
    ensemble.load_state_dict(head, strict=False)
    spec = {
        "name": cfg.name,
        "run_id": run_id,
        "members": members,
        "models": cfg.models.model_dump(),
        "train": cfg.train.model_dump(),
        # outputs are in the processed label's units (label_transform) times std plus mean
        "target": {"mean": mean, "std": std, "horizon": horizon, "label_transform": tc.label_transform},
        "features": {
            "features": normalizer.features,
            "window": window,
            "horizon": horizon,
            "normalizer": normalizer.to_json(),
            "features_version": fs.name(features_dir),
        },
        "split": split.to_json(),
        # Every figure here is on validation dates: "best" on the selection part the bases were chosen on,
        # "stacking" on the later part nothing was chosen on: "ic", each member's and the equal-weight average's
        # IC against raw returns over the whole part; "stop_label_ic", the same and the kept head's against the
        # processed label on the head's held-out stop dates (the only dates where the head is out-of-sample too).
        "stacking": periods.to_json() | {"ic": stacking_ic} | summary,
        "training": {n: {"best": f.best_metrics, "epochs": len(f.history), "stacking_ic": stacking_ic.get(n)}
                     for n, f in fits.items()}
        | {"ensemble": {"epochs": len(history), "kept": summary["kept"],
                        "stop_label_ic": summary["stop_label_ic"]["ensemble"]}},
    }  # fmt: skip
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

    timeline = Timeline()
    features_dir = features_dir or current_features_dir(cfg.storage)
    meta = load_meta(features_dir)
    split = split or meta.split
    normalizer = normalizer or meta.normalizer
    init_ray(cfg.ray)
    run_id, run_dir = new_run_dir(cfg.storage)
    config = credentials.redact_data(cfg.model_dump(mode="json"))
    fs.write_text(fs.join(run_dir, "config.json"), json.dumps(config, indent=2))
    print(f"[raycast] run {run_id}: training {', '.join(cfg.train.models)} on {split.train.start.date()}..{split.train.end.date()}", flush=True)
    timeline.add("stage", "ray, run directory", "start", timeline.started, timeline.now())
    with timeline.phase("target stats, stacking periods", "setup"):
        target = target_stats(features_dir, split)  # one read of the training targets for every stage below
        periods = validation_parts(features_dir, split, cfg.train.stacking_fraction)
    window = cfg.train.window or meta.window
    with timeline.phase("base models", "trainers"):
        fits = fit_base_models(cfg, features_dir, periods.base_split(split), normalizer, window, run_dir, target, timeline)
    with timeline.phase("ensemble", "ensemble"):
        trained = fit_ensemble(cfg, features_dir, split, normalizer, window, fits, run_id, run_dir, target, periods)
        fs.write_text(
            fs.join(run_dir, "history.json"),
            json.dumps({n: f.history for n, f in fits.items()} | {"ensemble": trained.ensemble_history}, indent=2),
        )
    if register:
        with timeline.phase("registry", "registry"):
            weights = {n: fits[n].state_dict for n in trained.bases} | {HEAD: head_state(trained.ensemble)}
            trained.version = save_version(cfg.storage, trained.spec, weights)
        print(f"[raycast] registered model version {trained.version}", flush=True)
    timeline.finish()
    timeline.write(run_dir)
    trained.timeline = timeline
    return trained
