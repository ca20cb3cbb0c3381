"""Shared fixtures: one local Ray instance per test session, and tiny datasets built from the real config."""

from __future__ import annotations

import os

import pytest

from raycast.config import RaycastConfig, parse_config

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray sized for this 2-core machine (logical CPUs over-subscribed so fractional tasks fit)."""
    import ray

    from raycast.config import RayConfig
    from raycast.runtime import TRAIN_POLL_ENV

    if not ray.is_initialized():
        os.environ.setdefault(TRAIN_POLL_ENV, str(RayConfig().train_poll_interval_s))  # as raycast's own init does
        ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def small_config(tmp_path, **sections) -> RaycastConfig:
    """The real default config shrunk to seconds: few symbols, short history, one or two epochs on CPU."""
    data = {
        "storage": str(tmp_path / "store"),
        "ray": {"num_cpus": 4},
        "ingest": {"source": "synthetic", "synthetic": {"n_symbols": 12, "n_days": 400, "signal_strength": 0.3}},
        "features": {"symbols_per_task": 4, "num_cpus_per_task": 0.5},
        "train": {"epochs": 2, "batch_size": 256, "max_steps_per_epoch": 20, "cpus_per_worker": 1, "ensemble_epochs": 5},
        "models": {"lstm": {"hidden_size": 16}, "attention": {"hidden_size": 16, "num_heads": 2, "ff_size": 32}},
    }
    return parse_config(deep_merge(data, sections))


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture(scope="session")
def registered_model(ray_session, tmp_path_factory) -> RaycastConfig:
    """A small synthetic universe with features and one registered (untrained, seeded) ensemble version.

    Built in seconds without training: the models have the small config's architecture and random weights, and the
    spec has the shape training writes. ``serve.version`` is pinned to that version, so versions registered later
    (e.g. by a rollout test) do not change what users of this fixture load.
    """
    from raycast.data.ingest import ingest
    from raycast.features.pipeline import build_features
    from untrained_models import register_untrained_version

    cfg = small_config(tmp_path_factory.mktemp("registered"))
    ingest(cfg)
    build_features(cfg)
    version = register_untrained_version(cfg, seed=0)
    return cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"version": version})})
