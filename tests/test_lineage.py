"""Lineage: a registered model keeps evaluating, serving and scoring on the data it was trained on.

A model is registered, then the market data is re-ingested (another seed) and the features rebuilt with another
horizon, twice: its metrics must be bit-identical, its batch signal and served answers unchanged, its datasets kept
through pruning, and a model whose data is gone must fail before it is served, naming what is missing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil

import pandas as pd
import pytest
from conftest import small_config

from raycast import fs
from raycast.data.store import current_version_dir, market_dir
from raycast.features.store import current_features_dir, features_base, load_meta, read_feature_frame
from raycast.lineage import model_features_dir
from raycast.storage import new_version_dir, publish

slow = pytest.mark.slow  # ingest, features, evaluation and batch scoring end to end (no training)


def with_version(cfg, version: str, **features):
    return cfg.model_copy(
        update={
            "serve": cfg.serve.model_copy(update={"version": version}),
            "features": cfg.features.model_copy(update=features),
        }
    )


def versions(base) -> set[str]:
    return {n for n in fs.list_names(base, dirs_only=True) if n.startswith("v-")}


def without_timings(value):
    """Everything evaluation measured about the predictions; wall-clock times are not that."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not k.endswith("seconds") and k != "report"}
    return [without_timings(v) for v in value] if isinstance(value, list) else value


def registered_metrics(cfg, version: str) -> str:
    from raycast.registry import load_spec

    # JSON text: floats compared by their exact repr, NaN (the constant baseline's IC) equal to itself
    return json.dumps(without_timings(load_spec(cfg.storage, version)["metrics"]), sort_keys=True)


def served_answers(cfg, version: str) -> list[dict]:
    """What the HTTP ingress answers for every symbol's latest window: its service, scored in process."""
    from raycast.registry import load_predictor, load_spec
    from raycast.serve.feature_rows import StoredFeatures
    from raycast.serve.http_api import BatchRequest, PredictionService

    spec = load_spec(cfg.storage, version)
    predictor = load_predictor(cfg.storage, version)

    async def score(windows):
        return predictor.predict_windows(windows) | {"model_version": version}

    service = PredictionService(spec, StoredFeatures.load(cfg.storage, spec), score)  # as the ingress builds it
    return asyncio.run(service.predict_batch(BatchRequest()))["predictions"]


def batch_signal(cfg, tmp_path, name: str) -> pd.DataFrame:
    from raycast.serve.offline import predict_universe

    signal = pd.read_parquet(predict_universe(cfg, output=str(tmp_path / f"{name}.parquet"))["output"])
    return signal.drop(columns="predicted_at")  # when it was scored: not what was scored


@pytest.fixture(scope="module")
def rebuilt(ray_session, tmp_path_factory):
    """A model registered on (market M1, features F1); then two re-ingests and rebuilds at horizon 2."""
    from raycast.data.ingest import ingest
    from raycast.evaluate.evaluate import evaluate_version
    from raycast.features.pipeline import build_features
    from untrained_models import register_untrained_version

    tmp = tmp_path_factory.mktemp("lineage")
    cfg = small_config(tmp, ingest={"synthetic": {"n_symbols": 8, "n_days": 300}})
    ingest(cfg)
    build_features(cfg)
    market_v1, features_v1 = fs.name(current_version_dir(cfg.storage)), fs.name(current_features_dir(cfg.storage))
    version = register_untrained_version(cfg, seed=1)
    cfg = with_version(cfg, version)
    evaluate_version(cfg, version)
    before = {
        "metrics": registered_metrics(cfg, version),
        "signal": batch_signal(cfg, tmp, "before"),
        "served": served_answers(cfg, version),
    }

    later = small_config(tmp, ingest={"synthetic": {"n_symbols": 8, "n_days": 300, "seed": 7}}, features={"horizon": 2})
    for _ in range(2):  # two publications: without protection, the first versions would be pruned by now
        ingest(later)
        build_features(later)
    later = with_version(later, version, horizon=2)
    return {"cfg": later, "version": version, "market_v1": market_v1, "features_v1": features_v1, "before": before, "tmp": tmp}


@slow
def test_registered_version_records_its_lineage(rebuilt):
    from raycast.registry import load_spec

    cfg, version = rebuilt["cfg"], rebuilt["version"]
    recorded = load_spec(cfg.storage, version)["features"]
    meta = load_meta(fs.join(features_base(cfg.storage), rebuilt["features_v1"])).raw
    assert recorded["features_version"] == rebuilt["features_v1"]
    assert recorded["market_version"] == meta["market_version"] == rebuilt["market_v1"]
    assert (recorded["spec_version"], recorded["window"], recorded["horizon"]) == (meta["spec_version"], meta["window"], 1)


@slow
def test_rebuilt_data_really_differs(rebuilt):
    """Guards the tests below: after the rebuild, the current data would give other targets and other windows."""
    cfg = rebuilt["cfg"]
    current = current_features_dir(cfg.storage)
    assert fs.name(current) != rebuilt["features_v1"] and load_meta(current).horizon == 2
    old = read_feature_frame(fs.join(features_base(cfg.storage), rebuilt["features_v1"]))
    new = read_feature_frame(current)
    assert not old["target"].equals(new["target"]) and not old["return_1d"].equals(new["return_1d"])


@slow
def test_old_model_metrics_are_bit_identical_after_rebuild(rebuilt):
    from raycast.evaluate.evaluate import evaluate_version

    cfg, version = rebuilt["cfg"], rebuilt["version"]
    evaluate_version(cfg, version)
    assert registered_metrics(cfg, version) == rebuilt["before"]["metrics"]


@slow
def test_old_model_batch_signal_and_served_answers_are_unchanged(rebuilt):
    cfg, version = rebuilt["cfg"], rebuilt["version"]
    pd.testing.assert_frame_equal(batch_signal(cfg, rebuilt["tmp"], "after"), rebuilt["before"]["signal"], check_exact=True)
    assert served_answers(cfg, version) == rebuilt["before"]["served"]


@slow
def test_pruning_keeps_the_versions_registered_models_use(rebuilt):
    storage = rebuilt["cfg"].storage
    # three publications each, pruning keeps the current and previous ones: the third is the registered model's
    assert len(versions(features_base(storage))) == 3 and rebuilt["features_v1"] in versions(features_base(storage))
    assert len(versions(market_dir(storage))) == 3 and rebuilt["market_v1"] in versions(market_dir(storage))


def test_publish_prunes_all_but_the_newest_and_the_protected(tmp_path):
    base = tmp_path / "features"
    made = [fs.name(new_version_dir(base)) for _ in range(5)]
    publish(base, base / made[-1], keep=2, protected={made[0]})
    assert versions(base) == {made[0], made[3], made[4]}


def test_registration_refuses_a_spec_its_dataset_contradicts(tmp_path):
    from raycast.lineage import with_lineage

    storage = str(tmp_path / "store")
    dataset = fs.join(features_base(storage), "v-1")
    fs.makedirs(dataset)
    meta = {"spec_version": "1.0", "window": 30, "horizon": 1, "market_version": "v-m"}
    fs.write_text(fs.join(dataset, "meta.json"), json.dumps(meta))
    spec = {"features": {"features_version": "v-1", "window": 30, "horizon": 1}}
    assert with_lineage(storage, spec)["features"] == {"features_version": "v-1", **meta}
    with pytest.raises(ValueError, match=r"disagrees with feature dataset v-1: horizon 2 \(dataset: 1\)"):
        with_lineage(storage, {"features": spec["features"] | {"horizon": 2}})
    with pytest.raises(ValueError, match="features.features_version"):
        with_lineage(storage, {"features": {"window": 30, "horizon": 1}})
    with pytest.raises(FileNotFoundError, match="feature dataset v-2 is missing"):
        with_lineage(storage, {"features": spec["features"] | {"features_version": "v-2"}})


@slow
def test_legacy_entry_without_lineage_uses_current_features_only_when_they_match(rebuilt, caplog):
    cfg = rebuilt["cfg"]
    current = current_features_dir(cfg.storage)
    meta = load_meta(current)
    legacy = {"version": "old-1", "features": {"features": meta.features, "window": meta.window, "horizon": meta.horizon}}
    with caplog.at_level(logging.WARNING, logger="raycast.lineage"):
        assert model_features_dir(cfg.storage, legacy) == current
    assert "old-1 does not record its feature dataset" in caplog.text
    mismatched = legacy | {"features": legacy["features"] | {"horizon": meta.horizon + 1}}
    with pytest.raises(FileNotFoundError, match=r"old-1 does not record .* differs in horizon"):
        model_features_dir(cfg.storage, mismatched)


@slow
def test_model_whose_data_is_gone_fails_before_serving_naming_it(rebuilt):
    """Runs last in this module: it deletes the model's feature dataset."""
    from raycast.evaluate.evaluate import evaluate_version
    from raycast.serve.app import ServeArgs, build_app
    from raycast.serve.offline import predict_universe

    cfg, version, gone = rebuilt["cfg"], rebuilt["version"], rebuilt["features_v1"]
    path = fs.join(features_base(cfg.storage), gone)
    shutil.rmtree(path)
    message = rf"model {version} was trained on feature dataset {gone}, which is missing \({path}\)"
    with pytest.raises(FileNotFoundError, match=message):
        build_app(ServeArgs.from_config(cfg))
    with pytest.raises(FileNotFoundError, match=message):
        evaluate_version(cfg, version)
    with pytest.raises(FileNotFoundError, match=message):
        predict_universe(cfg)
