"""What trials train on, prepared once on the driver and shared through the object store.

Base models: the feature rows as one frame, plus one :class:`Fold` per split (the feature dataset's own split,
or each walk-forward fold with its own normalizer and target statistics). Every trial slices its periods out of
the shared frame instead of reading Parquet again. The ensemble head: the registered bases' outputs on the
stacking part of its validation period, computed once (:class:`HeadData`); trials only fit the small head on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from raycast import fs
from raycast.config import RaycastConfig
from raycast.features.splits import Split
from raycast.train.loop import TrainJob


@dataclass(frozen=True)
class Fold:
    """One split a trial is scored on: periods, normalizer and target statistics from its training rows."""

    split: dict
    normalizer: dict
    target_mean: float
    target_std: float


@dataclass(frozen=True)
class HeadData:
    """Base outputs (rows, members) on the stacking part, with processed targets, dates and the label's embargo."""

    members: list[str]
    outputs: np.ndarray
    target: np.ndarray
    dates: np.ndarray
    version: str
    embargo: int = 0


def load_base_data(cfg: RaycastConfig) -> tuple[pd.DataFrame, list[Fold], int]:
    """The feature frame, the folds to score on, and the window length of the current feature dataset."""
    from raycast.features.splits import make_walk_forward
    from raycast.features.store import current_features_dir, fit_columns, load_meta, read_rows_table
    from raycast.features.store import fit_fold_normalizer
    from raycast.train.trainer import target_stats

    features_dir = current_features_dir(cfg.storage)
    meta = load_meta(features_dir)
    frame = read_rows_table(features_dir, fit_columns(meta.features)).to_pandas()  # no market columns read
    fc = cfg.features
    n_folds = fc.walk_forward.folds if cfg.tune.folds is None else cfg.tune.folds
    if n_folds:
        folds = []
        walk_forward = fc.model_copy(update={"walk_forward": fc.walk_forward.model_copy(update={"folds": n_folds})})
        for split in make_walk_forward(frame["date"], walk_forward):
            normalizer = fit_fold_normalizer(features_dir, split, meta.features, fc.normalization, fc.clip)
            folds.append(Fold(split.to_json(), normalizer.to_json(), *target_stats(features_dir, split)))
    else:
        folds = [Fold(meta.split.to_json(), meta.normalizer.to_json(), *target_stats(features_dir, meta.split))]
    return frame, folds, meta.window


def fold_frames(frame: pd.DataFrame, fold: Fold, window: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training rows and validation rows (with enough history before the period for its first windows)."""
    split = Split.from_json(fold.split)
    lookback = split.val.start - pd.tseries.offsets.BDay(2 * window + 10)
    dates = frame["date"]
    return frame[dates <= split.train.end], frame[(dates >= lookback) & (dates <= split.val.end)]


def fold_job(cfg: RaycastConfig, model: str, fold: Fold, window: int, features_dir: str | None = None) -> TrainJob:
    return TrainJob(
        cfg=cfg,
        model=model,
        split=fold.split,
        normalizer=fold.normalizer,
        window=window,
        target_mean=fold.target_mean,
        target_std=fold.target_std,
        features_dir=str(fs.absolute(features_dir)) if features_dir is not None else None,
    )


def load_head_data(cfg: RaycastConfig) -> HeadData:
    """Outputs of the newest registered version's bases on its stacking part (what its head trained on)."""
    from raycast.lineage import model_features_dir
    from raycast.registry import load_predictor
    from raycast.features.splits import Period
    from raycast.train.ensemble import base_outputs
    from raycast.train.labels import process_labels
    from raycast.train.run import period_blocks

    predictor = load_predictor(cfg.storage)
    spec = predictor.spec
    features_dir = model_features_dir(cfg.storage, spec)
    split = Split.from_json(spec["split"])
    stacking = spec.get("stacking")  # versions trained before the stacking split learned on the whole period
    period = Period(**{k: pd.Timestamp(v) for k, v in stacking["stacking"].items()}) if stacking else split.val
    blocks = period_blocks(features_dir, split, predictor.normalizer, predictor.window, period.start)
    ends = blocks.ends(period)
    outputs = base_outputs(predictor.bases, blocks.x, ends, predictor.window)
    dates = blocks.dates[ends]
    t, tc = spec["target"], cfg.train
    target = process_labels(blocks.y[ends], dates, tc.label_transform, t["mean"], t["std"], tc.label_clip)
    embargo = int(stacking["embargo_days"]) if stacking else 0
    return HeadData(list(predictor.bases), outputs, target, dates, spec["version"], embargo)
