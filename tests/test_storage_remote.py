"""Storage on an object store: the real pipeline against an S3 server (moto's, on localhost).

Ingest, features, training (Ray Train checkpoints included), the registry and the evaluation report all go through
``s3://...`` storage; nothing may land on the local disk under a path named like the URI. Credentials travel in
the URI (``key:secret@bucket``): the suite's Ray is started once per session, before this module, so its worker
processes would not see AWS_* variables set here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import small_config

from raycast import fs
from raycast.registry import Predictor

BUCKET = "raycast-test"
PREFIX = "team/raycast"
KEY, SECRET = "testing", "testing-secret"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free localhost port with one empty bucket; yields (boto3 client, storage URI)."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    client = boto3.client(
        "s3", endpoint_url=f"http://{host}:{port}", aws_access_key_id=KEY, aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )  # fmt: skip
    client.create_bucket(Bucket=BUCKET)
    uri = f"s3://{KEY}:{SECRET}@{BUCKET}/{PREFIX}?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    yield client, uri
    server.stop()


def _keys(client, under: str = "") -> list[str]:
    """Every object key under ``PREFIX/under`` (relative to PREFIX)."""
    keys, token = [], None
    while True:
        page = client.list_objects_v2(
            Bucket=BUCKET, Prefix=f"{PREFIX}/{under}", **({"ContinuationToken": token} if token else {})
        )
        keys += [o["Key"].removeprefix(f"{PREFIX}/") for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return keys
        token = page["NextContinuationToken"]


def test_unsupported_and_unreachable_uris_are_clear_errors():
    with pytest.raises(fs.StorageError, match="unsupported storage URI nosuch://bucket/x"):
        fs.read_text("nosuch://bucket/x/CURRENT")
    # nothing listens on port 9 of localhost; the credentials must not appear in the message
    uri = f"s3://{KEY}:{SECRET}@bucket/x?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1"
    with pytest.raises(fs.StorageError, match=r"cannot reach storage s3://bucket/x/CURRENT\?endpoint_override") as err:
        fs.is_file(fs.join(uri, "CURRENT"))
    assert SECRET not in str(err.value)


@pytest.mark.slow
def test_pipeline_on_s3_storage(ray_session, s3, tmp_path, monkeypatch):
    from raycast.data.ingest import ingest
    from raycast.data.store import list_symbols, read_manifest
    from raycast.evaluate.evaluate import evaluate_version
    from raycast.features.pipeline import build_features
    from raycast.features.store import FeatureBlocks, current_features_dir, load_meta, read_feature_frame
    from raycast.registry import list_versions, load_predictor
    from raycast.serve.features import StoredFeatures
    from raycast.train.run import train

    client, uri = s3
    monkeypatch.chdir(tmp_path)  # a URI mistaken for a relative local path would show up here
    cfg = small_config(
        tmp_path,
        storage=uri,
        ingest={"synthetic": {"n_symbols": 8, "n_days": 300}},
        train={"models": ["cnn"], "epochs": 1, "max_steps_per_epoch": 5, "ensemble_epochs": 2},
    )

    manifest = ingest(cfg)
    assert read_manifest(uri) == manifest and list_symbols(uri) == manifest["symbols"]
    market = _keys(client, "market/")
    assert "market/CURRENT" in market and any(k.endswith("/symbol=SYN000/data.parquet") for k in market)

    summary = build_features(cfg)
    assert summary["path"].startswith(f"s3://{BUCKET}/{PREFIX}/features/v-") and SECRET not in summary["path"]
    assert any(k.startswith("features/v-") and k.endswith(".parquet") for k in _keys(client, "features/"))

    trained = train(cfg)
    version, run_id = trained.version, trained.run_id
    registry = _keys(client, f"registry/{version}/")
    assert {f"registry/{version}/{f}" for f in ("model.json", "weights/cnn.pt", "weights/ensemble_head.pt")} <= set(registry)
    runs = _keys(client, f"runs/{run_id}/")
    assert {f"runs/{run_id}/history.json", f"runs/{run_id}/config.json"} <= set(runs)
    assert any(k.startswith(f"runs/{run_id}/ray/cnn/") for k in runs), "Ray Train checkpoints are not in the bucket"
    assert [v["version"] for v in list_versions(uri)] == [version]

    # the registered ensemble, read back from the bucket, predicts exactly what the trained one does
    predictor = load_predictor(uri, version)
    meta = load_meta(current_features_dir(uri))
    blocks = FeatureBlocks(read_feature_frame(current_features_dir(uri)), predictor.normalizer, meta.window)
    x, _ = blocks.windows(blocks.ends(meta.split.test)[:200])
    in_memory = Predictor(trained.spec | {"version": version}, trained.bases, trained.ensemble, torch.device("cpu"))
    np.testing.assert_array_equal(predictor.predict_windows(x)["prediction"], in_memory.predict_windows(x)["prediction"])
    # what a Serve replica loads: the stored features, indexed for the served version
    stored = StoredFeatures.load(uri, predictor.spec)
    assert stored.symbols == manifest["symbols"]

    report = evaluate_version(cfg, version)
    assert isinstance(report, str) and fs.name(report) == "report.md"
    assert "Metrics on test" in fs.read_text(report)
    runs = set(_keys(client, f"runs/{run_id}/"))
    for name in ("report.md", "test_predictions.parquet", "ic_per_date.png", "equity_curves.png"):
        assert f"runs/{run_id}/{name}" in runs, name
    assert any(k.startswith(f"runs/{run_id}/tensorboard/") for k in runs)
    (spec,) = list_versions(uri)
    assert spec["metrics"]["report"] == fs.display(report) and SECRET not in spec["metrics"]["report"]

    # nothing written locally under a path named like the URI (cwd here, the repository, the session's cwd)
    for base in (tmp_path, ROOT, Path(os.environ.get("PWD", ROOT))):
        assert not (base / "s3:").exists(), base  # what Path(uri) would have created
    assert not list(tmp_path.glob(f"**/{BUCKET}*"))
