"""Storage on an object store: the real pipeline against an S3 server (moto's, on localhost).

Ingest, features, training (Ray Train checkpoints included), a tune search, the registry and the evaluation report
all go through ``s3://...`` storage; nothing may land on the local disk under a path named like the URI. Credentials
travel in the URI (``key:secret@bucket``, or ``?access_key=...&secret_key=...``): the suite's Ray is started once
per session, before this module, so its worker processes would not see AWS_* variables set here. The secret itself
must never be written anywhere (bucket, local files, Ray's session logs) nor printed.
"""

from __future__ import annotations

import binascii
import json
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import small_config
from typer.testing import CliRunner

from raycast import credentials, fs
from raycast.cli import app as cli_app
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


def _keys(client, under: str = "", prefix: str = f"{PREFIX}/") -> list[str]:
    """Every object key under ``prefix + under`` (relative to ``prefix``)."""
    keys, token = [], None
    while True:
        page = client.list_objects_v2(
            Bucket=BUCKET, Prefix=f"{prefix}{under}", **({"ContinuationToken": token} if token else {})
        )
        keys += [o["Key"].removeprefix(prefix) for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return keys
        token = page["NextContinuationToken"]


def query_form(uri: str) -> str:
    """The same storage with its credentials as query options instead of user info."""
    return uri.replace(f"{KEY}:{SECRET}@", "") + f"&access_key={KEY}&secret_key={SECRET}"


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("s3://AK:SE%2FCRET@b/p?endpoint_override=h:1&scheme=http", "s3://b/p?endpoint_override=h:1&scheme=http"),
        ("s3://AK:SE/CRET@b/p", "s3://b/p"),  # an unescaped "/" in the secret must not leak half of it
        ("s3://b/p?access_key=AK&secret_key=SECRET", "s3://b/p"),
        ("s3://b/p?region=x&secret_key=SECRET&scheme=http", "s3://b/p?region=x&scheme=http"),
        ("s3://b/p?session_token=T&x=1#f", "s3://b/p?x=1#f"),
        ("abfs://account:ACCOUNTKEY@container/p", "abfs://container/p"),
        ("https://acct.blob.core.windows.net/c?sv=2022&sig=SIGNATURE", "https://acct.blob.core.windows.net/c?sv=2022"),
        ("failed: s3://AK:SECRET@b/p timed out; see s3://b/q?x=1", "failed: s3://b/p timed out; see s3://b/q?x=1"),
        ("/data/raycast@2024", "/data/raycast@2024"),  # a local path is not a URI
    ],
)
def test_redact_drops_user_info_and_credential_options(text, redacted):
    assert credentials.redact(text) == redacted
    assert credentials.has_credentials(text) == (text != redacted)


def test_redact_data_reaches_nested_strings():
    data = {"storage": f"s3://{KEY}:{SECRET}@b/p", "runs": [{"dir": f"s3://b/p?secret_key={SECRET}"}], "n": 3}
    assert SECRET not in str(credentials.redact_data(data)) and credentials.redact_data(data)["n"] == 3


def test_unsupported_and_unreachable_uris_are_clear_errors():
    with pytest.raises(fs.StorageError, match="unsupported storage URI nosuch://bucket/x"):
        fs.read_text("nosuch://bucket/x/CURRENT")
    # nothing listens on port 9 of localhost; the credentials must not appear in the message
    uri = f"s3://{KEY}:{SECRET}@bucket/x?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1"
    for form in (uri, query_form(uri)):
        with pytest.raises(fs.StorageError, match=r"cannot reach storage s3://bucket/x/CURRENT\?endpoint_") as err:
            fs.is_file(fs.join(form, "CURRENT"))
        assert SECRET not in str(err.value)
    with pytest.raises(fs.StorageError, match="give both access_key and secret_key") as err:
        fs.is_file(f"s3://bucket/x?secret_key={SECRET}")
    assert SECRET not in str(err.value)


def test_both_credential_forms_reach_the_store_and_ray_gets_a_filesystem_without_them(s3):
    client, uri = s3
    for i, form in enumerate((uri, query_form(uri))):
        fs.write_text(fs.join(form, "probe", f"{i}.txt"), "hello")
        assert fs.read_text(fs.join(uri, "probe", f"{i}.txt")) == "hello"
        storage = fs.ray_storage(fs.join(form, "probe"))
        pickled = pickle.dumps(storage["storage_filesystem"])
        assert SECRET.encode() not in pickled and binascii.hexlify(SECRET.encode()) not in pickled.hex().encode()
        # unpickled in this process, it still reaches the bucket (Ray workers get the credentials from Ray's KV)
        restored = pickle.loads(pickled)
        with restored.open_input_stream(f"{storage['storage_path']}/{i}.txt") as f:
            assert f.read() == b"hello"

def test_a_redacted_uri_borrows_the_credentials_given_for_the_same_store():
    uri = f"s3://{KEY}:{SECRET}@bucket/x?endpoint_override=h:1"
    assert credentials.borrow_credentials(credentials.redact(uri), query_form(uri)) == uri
    assert credentials.borrow_credentials("s3://bucket/x/tune/a", uri) == f"s3://{KEY}:{SECRET}@bucket/x/tune/a"
    assert credentials.borrow_credentials("s3://other/x", uri) == "s3://other/x"  # another bucket: not its keys


def assert_secret_nowhere(client, texts: list[str], dirs: list[Path]) -> int:
    """The secret (as text or hex, as Ray writes pickles into its JSON state) in no object of the bucket, no file
    under ``dirs`` and none of ``texts``; returns the number of files checked."""
    needles = (SECRET.encode(), binascii.hexlify(SECRET.encode()))
    checked = 0
    for key in _keys(client, "", prefix=""):
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert not any(n in body or n in key.encode() for n in needles), f"secret in s3://{BUCKET}/{key}"
        checked += 1
    for base in dirs:
        for path in (p for p in Path(base).rglob("*") if p.is_file() and not p.is_symlink()):
            assert not any(n in path.read_bytes() for n in needles), f"secret in {path}"
            checked += 1
    for text in texts:
        assert SECRET not in text, text[-2000:]
    return checked


@pytest.mark.slow
def test_pipeline_on_s3_storage(ray_session, s3, tmp_path, monkeypatch, capfd):
    from raycast.data.ingest import ingest
    from raycast.data.store import list_symbols, read_manifest
    from raycast.evaluate.evaluate import evaluate_version
    from raycast.features.pipeline import build_features
    from raycast.features.store import FeatureBlocks, current_features_dir, load_meta, read_feature_frame
    from raycast.registry import list_versions, load_predictor
    from raycast.serve.feature_rows import StoredFeatures
    from raycast.train.run import train

    client, uri = s3
    monkeypatch.chdir(tmp_path)  # a URI mistaken for a relative local path would show up here
    cfg = small_config(
        tmp_path,
        storage=uri,
        ingest={"synthetic": {"n_symbols": 8, "n_days": 300}},
        train={"models": ["cnn"], "epochs": 1, "max_steps_per_epoch": 5, "ensemble_epochs": 2},
        tune={"model": "cnn", "num_samples": 1, "max_epochs": 1, "seeds": 1, "search_space": {}},
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

    # a tune search with the credentials as query options: Ray Tune pickles its storage filesystem into the
    # experiment state it keeps in the bucket, and the best config is a file users keep and share
    from raycast.tune.search import run_search

    tuned = run_search(cfg.model_copy(update={"storage": query_form(uri)}))
    assert tuned["trials"] == 1 and tuned["errored"] == 0 and SECRET not in str(tuned)
    tune_keys = _keys(client, "tune/")
    assert any(k.endswith("/search/tuner.pkl") for k in tune_keys) and any("/checkpoint_" in k for k in tune_keys)
    best_key = next(k for k in tune_keys if k.endswith("/best_config.yaml"))
    best = yaml.safe_load(client.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{best_key}")["Body"].read())
    run_config = json.loads(client.get_object(Bucket=BUCKET, Key=f"{PREFIX}/runs/{run_id}/config.json")["Body"].read())
    options = uri[uri.index("?") :]
    assert best["storage"] == run_config["storage"] == credentials.redact(uri) == f"s3://{BUCKET}/{PREFIX}{options}"

    shown = CliRunner().invoke(cli_app, ["models", "show", version, "--storage", uri])
    assert shown.exit_code == 0 and version in shown.output

    # nothing written locally under a path named like the URI (cwd here, the repository, the session's cwd)
    for base in (tmp_path, ROOT, Path(os.environ.get("PWD", ROOT))):
        assert not (base / "s3:").exists(), base  # what Path(uri) would have created
    assert not list(tmp_path.glob(f"**/{BUCKET}*"))

    # and the secret is nowhere: not in the bucket, local files, Ray's session logs (workers' output), the output
    captured = capfd.readouterr()
    ray_logs = Path(ray_session._private.worker._global_node.get_session_dir_path())
    checked = assert_secret_nowhere(client, [captured.out, captured.err, shown.output], [tmp_path, ray_logs])
    assert checked > 100 and len(captured.out) > 1000  # the check saw the run's files and output
