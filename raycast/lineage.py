"""Lineage: the dataset versions a registered model was trained on, kept for as long as it is registered.

A registry version records under ``features`` the feature dataset it was trained on (``features_version``), that
dataset's feature spec version, window and horizon, and the market data version its features were computed from
(``market_version``). Evaluating a version reads that dataset, never the current one: rebuilding features leaves
an older model's metrics unchanged. Serving and batch-scoring read the newest dataset built with the same feature
settings (:mod:`raycast.serve.live_features`), so days appended since training are scored; one built with another
horizon or window is never used.
Publishing a new feature or market dataset never prunes a version a registered model names.

Versions registered without ``features_version`` predate lineage: they are read from the current feature dataset,
with a warning, and only when its features, window and horizon are the ones the model was trained with.

Nothing here imports torch: ingest and featurization consult it before pruning.
"""

from __future__ import annotations

import json
import logging

from raycast import fs

LINEAGE_FIELDS = ("features_version", "spec_version", "window", "horizon", "market_version")
DATASET_KEYS = {"features": "features_version", "market": "market_version"}

log = logging.getLogger(__name__)


def registry_dir(storage: str) -> fs.Location:
    return fs.join(storage, "registry")


def list_versions(storage: str) -> list[dict]:
    """Every version's model.json, oldest first."""
    base = registry_dir(storage)
    specs = (fs.join(base, name, "model.json") for name in fs.list_names(base, dirs_only=True) if not name.startswith("."))
    return [json.loads(fs.read_text(path)) for path in specs if fs.is_file(path)]


def referenced_versions(storage: str, dataset: str) -> set[str]:
    """The ``dataset`` ("features" or "market") versions that registered models were trained on."""
    key = DATASET_KEYS[dataset]
    return {spec["features"][key] for spec in list_versions(storage) if spec.get("features", {}).get(key)}


def features_version_dir(storage: str, features_version: str) -> fs.Location:
    from raycast.features.store import features_base

    return fs.join(features_base(storage), features_version)


def dataset_lineage(storage: str, features_version: str) -> dict:
    """What a model trained on feature dataset ``features_version`` records about it (see the module docstring)."""
    path = features_version_dir(storage, features_version)
    meta_file = fs.join(path, "meta.json")
    if not fs.is_file(meta_file):
        raise FileNotFoundError(f"feature dataset {features_version} is missing: no {fs.display(meta_file)}")
    meta = json.loads(fs.read_text(meta_file))
    return {
        "features_version": features_version,
        "spec_version": meta.get("spec_version"),
        "window": int(meta["window"]),
        "horizon": int(meta["horizon"]),
        "market_version": meta.get("market_version"),
    }


def with_lineage(storage: str, spec: dict) -> dict:
    """``spec`` with its feature dataset's lineage recorded; refuses a spec that disagrees with that dataset."""
    features = spec["features"]
    if not features.get("features_version"):
        raise ValueError("a model spec must name the feature dataset it was trained on (features.features_version)")
    recorded = dataset_lineage(storage, features["features_version"])
    conflicts = [
        f"{key} {features[key]} (dataset: {recorded[key]})"
        for key in ("window", "horizon")
        if key in features and int(features[key]) != recorded[key]
    ]
    if conflicts:
        raise ValueError(f"model spec disagrees with feature dataset {recorded['features_version']}: {', '.join(conflicts)}")
    return spec | {"features": features | recorded}


def model_features_dir(storage: str, spec: dict) -> fs.Location:
    """The feature dataset registered version ``spec`` was trained on; a clear error when it is gone."""
    version = spec.get("version", "?")
    features_version = spec["features"].get("features_version")
    if not features_version:
        return _legacy_features_dir(storage, spec)
    path = features_version_dir(storage, features_version)
    if not fs.is_file(fs.join(path, "meta.json")):
        raise FileNotFoundError(
            f"model {version} was trained on feature dataset {features_version}, which is missing "
            f"({fs.display(path)}): restore that directory, or train a new model on the current features"
        )
    return path


def _legacy_features_dir(storage: str, spec: dict) -> fs.Location:
    from raycast.features.store import current_features_dir, load_meta

    version = spec.get("version", "?")
    path = current_features_dir(storage)
    meta = load_meta(path)
    features = spec["features"]
    differences = [
        what
        for what, ours, theirs in (
            ("window", int(features["window"]), meta.window),
            ("horizon", int(features["horizon"]), meta.horizon),
            ("features", list(features["features"]), meta.features),
        )
        if ours != theirs
    ]
    if differences:
        raise FileNotFoundError(
            f"model {version} does not record its feature dataset, and the current one ({fs.name(path)}) differs in "
            f"{', '.join(differences)}: train a new model on the current features"
        )
    log.warning(
        "model %s does not record its feature dataset; using the current one (%s), which has the same features, "
        "window and horizon", version, fs.name(path),
    )  # fmt: skip
    return path
