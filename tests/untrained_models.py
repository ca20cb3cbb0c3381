"""An untrained ensemble registered against the current feature dataset: the API working without a training run.

Tests and the serving benchmark need a registry version in seconds, not minutes: the models are built with the
configured architecture and seeded random weights, and the spec has exactly the shape ``raycast train`` writes
(see ``raycast.train.run.fit_ensemble``), so everything downstream (loading, normalization, windows, the
ensemble head) runs the real code. Predictions are meaningless; latency and plumbing are not.
"""

from __future__ import annotations

import torch

from raycast import fs
from raycast.config import RaycastConfig
from raycast.registry import HEAD, build_base, head_state, save_version


def register_untrained_version(cfg: RaycastConfig, seed: int = 0) -> str:
    """Register a randomly initialized ensemble over ``cfg.storage``'s current features; returns its version."""
    from raycast.features.store import current_features_dir, load_meta
    from raycast.models import create_ensemble_model
    from raycast.train.trainer import target_stats

    features_dir = current_features_dir(cfg.storage)
    meta = load_meta(features_dir)
    members = list(cfg.models.ensemble.members)
    torch.manual_seed(seed)
    spec_stub = {"features": {"features": meta.normalizer.features, "window": meta.window}, "models": cfg.models.model_dump()}
    bases = {n: build_base(spec_stub, n) for n in members}
    ensemble = create_ensemble_model(bases, cfg.models.ensemble).eval()
    mean, std = target_stats(features_dir, meta.split)
    spec = {
        "name": cfg.name,
        "run_id": f"untrained-seed{seed}",
        "members": members,
        "models": cfg.models.model_dump(),
        "train": cfg.train.model_dump(),
        "target": {"mean": mean, "std": std, "horizon": meta.horizon},
        "features": {
            "features": meta.normalizer.features,
            "window": meta.window,
            "horizon": meta.horizon,
            "normalizer": meta.normalizer.to_json(),
            "features_version": fs.name(features_dir),
        },
        "split": meta.split.to_json(),
        "training": {"untrained": True, "seed": seed},
    }
    weights = {n: bases[n].state_dict() for n in members} | {HEAD: head_state(ensemble)}
    return save_version(cfg.storage, spec, weights)
