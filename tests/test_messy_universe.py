"""A messy universe through every stage: ingest, features, train, evaluate, serve over HTTP, and the signal file.

The universe (``raycast.data.messy``) holds what real vendor files do: late listings, delistings, a halt, short
histories, an unadjusted split, a bad tick, a constant stub, a stale stretch, tickers with dots, dashes, suffixes
and a slash, duplicated and shuffled rows. No stage may fail on it, every oddity is counted, every surviving symbol
is predictable, and a skipped one is refused with its reason.
"""

from __future__ import annotations

import httpx
import pandas as pd
import pytest
from conftest import small_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def messy_run(ray_session, tmp_path_factory):
    from raycast.data.ingest import ingest
    from raycast.features.pipeline import build_features
    from raycast.train.run import train

    tmp = tmp_path_factory.mktemp("messy")
    cfg = small_config(
        tmp,
        ingest={"synthetic": {"n_symbols": 16, "n_days": 320, "seed": 5, "messy": True}},
        # one base model is enough to carry the universe through every stage; the others train the same way
        train={"models": ["cnn"], "epochs": 1, "max_steps_per_epoch": 5, "ensemble_epochs": 2},
        models={"ensemble": {"members": ["cnn"]}},
        evaluate={"mode": "split"},
    )
    manifest = ingest(cfg)
    features = build_features(cfg)
    trained = train(cfg)
    return cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"version": trained.version})}), manifest, features


def test_every_oddity_is_counted(messy_run):
    cfg, manifest, features = messy_run
    expected = manifest["synthetic"]["messy"]
    assert manifest["rejected"] == {"duplicate": expected["duplicates"]}
    quality = manifest["quality"]
    assert quality["splits"]["symbols"] == {expected["split"]: 1}
    assert quality["halts"]["symbols"] == {expected["halted"]: 1}
    assert quality["bad_ticks"]["symbols"] == {expected["bad_tick"]: 1} and quality["bad_ticks"]["rows_cut"] == 1
    assert set(quality["stale"]["symbols"]) == {expected["constant_stub"], expected["stale"]}
    assert features["skipped_counts"] == {"too few bars": 2, "no complete feature row": 1}
    assert features["n_symbols"] == 16 - 3


def test_evaluate_runs_on_the_surviving_symbols(messy_run):
    from raycast.evaluate.evaluate import evaluate_version

    cfg, manifest, _ = messy_run
    report = evaluate_version(cfg)
    text = report.read_text()
    assert "ensemble" in text and "ridge" in text
    # the report says what ingest and the feature stage did to the data it scores
    expected = manifest["synthetic"]["messy"]
    assert f"bars.\n- Rows rejected at ingest: {expected['duplicates']} (duplicate {expected['duplicates']})." in text
    assert "1 bad ticks dropped (1 symbols)" in text and "1 splits adjusted (1 symbols)" in text
    assert f"- Bad ticks: {expected['bad_tick']} {expected['bad_tick_date']} (" in text
    assert "- Symbols the feature stage skipped: 3 (too few bars 2, no complete feature row 1)." in text


def test_served_and_signal_file_cover_every_surviving_symbol(messy_run, tmp_path):
    from ray import serve

    from raycast.features.store import current_features_dir, load_meta
    from raycast.serve.offline import predict_universe
    from raycast.serve.run import start_app
    from test_serve import free_port

    cfg, manifest, _ = messy_run
    cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"port": free_port()})})
    meta = load_meta(current_features_dir(cfg.storage)).raw
    survivors, skipped = meta["symbols"], meta["skipped"]
    assert {"BRK.B", "BF-B", "0700.HK", "RDS/A"} <= set(survivors)

    signals = predict_universe(cfg, None, None, str(tmp_path / "signals.parquet"))
    table = pd.read_parquet(signals["output"])
    # the signal file scores the latest date: every survivor still listed then, the delisted one not
    delisted = manifest["synthetic"]["messy"]["delisted"]
    assert sorted(table["symbol"]) == sorted(set(survivors) - {delisted}) and table["prediction"].notna().all()

    start_app(cfg)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{cfg.serve.port}", timeout=120) as client:
            for symbol in survivors:
                r = client.post("/v1/predict", json={"symbol": symbol})
                assert r.status_code == 200, (symbol, r.text)
                if symbol == delisted:  # answered for its own last trading day
                    assert r.json()["as_of"] < signals["date_min"]
                    continue
                row = table[table["symbol"] == symbol].iloc[0]
                assert r.json()["as_of"] == str(row["date"].date())
                assert abs(r.json()["prediction"] - row["prediction"]) < 1e-5
            for symbol, reason in skipped.items():
                r = client.post("/v1/predict", json={"symbol": symbol})
                assert r.status_code == 404 and reason in r.json()["detail"], r.text
            r = client.post("/v1/predict/batch", json={"symbols": ["RDS/A", expected_short(manifest)]})
            assert r.status_code == 404 and "too few bars" in r.text
    finally:
        serve.shutdown()


def expected_short(manifest: dict) -> str:
    return manifest["synthetic"]["messy"]["too_few_bars"][0]
