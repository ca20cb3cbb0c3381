"""The HTTP API through real Ray Serve on 127.0.0.1: endpoints, parity with offline predictions, bad input."""

from __future__ import annotations

import math
import shlex
import socket
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from raycast.features.store import FeatureBlocks, current_features_dir, read_feature_frame
from raycast.registry import load_predictor

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(registered_model):  # every test using it is marked slow
    from ray import serve

    from raycast.serve.run import start_app

    cfg = registered_model.model_copy(
        update={"serve": registered_model.serve.model_copy(update={"port": _free_port()})}
    )
    start_app(cfg)
    with httpx.Client(base_url=f"http://127.0.0.1:{cfg.serve.port}", timeout=60) as client:
        yield cfg, client
    serve.shutdown()


def test_serve_config_yaml_matches_serves_schema_and_the_builder():
    from ray.serve.schema import ServeDeploySchema

    from raycast.config import ServeConfig
    from raycast.serve.app import ServeArgs

    data = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(data)
    app = schema.applications[0]
    assert app.import_path == "raycast.serve.app:build_app" and data["http_options"]["host"] == "127.0.0.1"
    ServeArgs.model_validate(app.args)
    # every setting is spelled out; those raycast's own config has too at its defaults (storage is the demo's)
    assert set(app.args) == set(ServeArgs.model_fields), set(ServeArgs.model_fields) ^ set(app.args)
    for key in set(app.args) & set(ServeConfig.model_fields) - {"storage"}:
        assert app.args[key] == getattr(ServeConfig(), key), key
    with pytest.raises(Exception, match="replicaz"):
        ServeArgs.model_validate(app.args | {"replicaz": 2})


def test_serve_run_after_make_demo_serves_the_demos_model():
    """The README's sequence, ``make demo`` then ``serve run serve_config.yaml``: both name the same storage."""
    from raycast.config import load_config, parse_overrides
    from raycast.demo import build_parser

    recipe = (ROOT / "Makefile").read_text().split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    (command,) = [line.strip() for line in recipe.splitlines() if "raycast.demo" in line]
    demo_args = build_parser().parse_args(shlex.split(command.split("raycast.demo", 1)[1]))
    demo_storage = load_config(ROOT / demo_args.config, parse_overrides(demo_args.set)).storage
    served = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"][0]["args"]["storage"]
    # both are resolved from the repository root, where `make` and `serve run` are started
    assert (ROOT / served).resolve() == (ROOT / demo_storage).resolve(), (served, demo_storage)
    assert "serve run serve_config.yaml" in (ROOT / "README.md").read_text()


@pytest.mark.slow
def test_health_models_symbols(served):
    cfg, client = served
    assert client.get("/v1/health").status_code == 200
    models = client.get("/v1/models").json()
    assert cfg.serve.version in str(models)
    symbols = client.get("/v1/symbols").json()["symbols"]
    assert len(symbols) == cfg.ingest.synthetic.n_symbols and {"symbol", "first", "last"} <= set(symbols[0])
    assert client.get("/docs").status_code == 200


@pytest.mark.slow
def test_served_prediction_equals_the_offline_ensemble(served):
    cfg, client = served
    predictor = load_predictor(cfg.storage, cfg.serve.version)
    fdir = current_features_dir(cfg.storage)
    blocks = FeatureBlocks(read_feature_frame(fdir), predictor.normalizer, predictor.window)
    ends = blocks.ends(require_target=False)
    symbol = blocks.symbols[ends[-1]]
    mine = ends[blocks.symbols[ends] == symbol]
    end = mine[-10]
    as_of = str(blocks.dates[end])[:10]
    got = client.post("/v1/predict", json={"symbol": symbol, "as_of": as_of})
    assert got.status_code == 200, got.text
    body = got.json()
    x, _ = blocks.windows(np.array([end]))
    want = predictor.predict_windows(x)
    assert body["symbol"] == symbol and body["as_of"] == as_of and body["model_version"] == cfg.serve.version
    assert math.isclose(body["prediction"], float(want["prediction"][0]), rel_tol=1e-4, abs_tol=1e-7)
    for name, value in want["base_predictions"].items():
        assert math.isclose(body["base_predictions"][name], float(value[0]), rel_tol=1e-4, abs_tol=1e-7)
    assert math.isclose(sum(body["weights"].values()), 1.0, rel_tol=1e-5)
    # the latest stored date is the default, and the batch endpoint scores many symbols in one call
    assert client.post("/v1/predict", json={"symbol": symbol}).status_code == 200
    batch = client.post("/v1/predict/batch", json={"symbols": sorted(set(blocks.symbols.tolist()))})
    assert batch.status_code == 200, batch.text
    assert batch.json()["count"] == len(set(blocks.symbols.tolist()))


@pytest.mark.slow
def test_bad_input_gets_a_4xx_that_names_the_problem(served):
    cfg, client = served
    symbol = client.get("/v1/symbols").json()["symbols"][0]["symbol"]
    cases = [
        (client.post("/v1/predict", content=b"{not json", headers={"content-type": "application/json"}), 422, ""),
        (client.post("/v1/predict", json={}), 422, "symbol"),
        (client.post("/v1/predict", json={"symbol": symbol, "colour": "red"}), 422, "colour"),
        (client.post("/v1/predict", json={"symbol": "NOPE"}), 404, "NOPE"),
        (client.post("/v1/predict", json={"symbol": symbol, "as_of": "1990-01-01"}), None, "1990-01-01"),
        (client.post("/v1/predict", json={"symbol": "XYZ", "candles": [
            {"date": "2020-01-02", "open": 1, "high": 1, "low": 1, "close": 1, "volume": 1}]}), 422, "candles"),
        (client.post("/v1/predict", content=b"x" * (cfg.serve.max_body_bytes + 10),
                     headers={"content-type": "application/json"}), 413, ""),
    ]  # fmt: skip
    for response, status, needle in cases:
        assert 400 <= response.status_code < 500, response.text
        if status:
            assert response.status_code == status, response.text
        assert needle.lower() in response.text.lower(), response.text
    # and the service is still up
    assert client.get("/v1/health").status_code == 200
