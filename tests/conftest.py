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

    if not ray.is_initialized():
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
