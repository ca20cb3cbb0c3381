"""Hyperparameter search: search spaces, an ASHA search end to end, the best config into `raycast train`,
resume after a crash, and the ensemble head's search on a registered version."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import small_config
from typer.testing import CliRunner

from raycast.cli import app
from raycast.config import WalkForwardConfig, dump_config, load_config
from raycast.tune.space import apply_params, resolve_search_space

TINY_LSTM = {"hidden_size": {"type": "choice", "values": [8, 16]}, "num_layers": {"type": "choice", "values": [1, 2]}}
EPOCHS = 3


def tune_config(tmp_path, **tune):
    """The small test config, training only the LSTM, with a tiny search over it."""
    section = {"model": "lstm", "max_epochs": EPOCHS, "seeds": 3, "search_space": TINY_LSTM} | tune
    return small_config(tmp_path, train={"models": ["lstm"]}, tune=section)


def with_tune(cfg, **tune):
    return cfg.model_copy(update={"tune": cfg.tune.model_copy(update=tune)})


# ------------------------------------------------------------------------------------------ no Ray


def test_space_is_the_default_overridden_and_extended(tmp_path):
    cfg = tune_config(tmp_path, search_space=TINY_LSTM | {"weight_decay": {"type": "choice", "values": [0.0, 1e-4]}})
    space = resolve_search_space(cfg)
    assert space["hidden_size"].values == [8, 16]  # overridden
    assert space["weight_decay"].values == [0.0, 1e-4]  # added (a training key)
    assert {"lr", "dropout", "batch_size"} <= set(space)  # the model's defaults stay
    trial = apply_params(cfg, "lstm", {"hidden_size": 8, "lr": 0.01, "batch_size": 512})
    assert (trial.models.lstm.hidden_size, trial.train.lr, trial.train.batch_size) == (8, 0.01, 512)


@pytest.mark.parametrize(
    ("model", "key", "dim", "match"),
    [
        ("lstm", "hiden_size", {"type": "choice", "values": [8]}, "search_space.hiden_size: not a field of the lstm"),
        ("cnn", "num_heads", {"type": "choice", "values": [2]}, "tune.search_space.num_heads"),
        ("ensemble", "loss", {"type": "choice", "values": ["huber"]}, "tune.search_space.loss"),
        ("lstm", "dropout", {"type": "uniform", "low": 0.5, "high": 1.5}, "tune.search_space.dropout: value"),
        ("lstm", "loss", {"type": "choice", "values": ["mae"]}, "tune.search_space.loss: value 'mae'"),
    ],
)
def test_bad_search_space_entry_is_named(tmp_path, model, key, dim, match):
    cfg = tune_config(tmp_path, model=model, search_space={key: dim})
    with pytest.raises(ValueError, match=match):
        resolve_search_space(cfg)


def test_cli_names_a_bad_entry_before_starting_ray(tmp_path):
    path = tmp_path / "cfg.yaml"
    dump_config(tune_config(tmp_path), path)
    bad = "tune.search_space={bogus: {type: choice, values: [1]}}"
    result = CliRunner().invoke(app, ["tune", "--config", str(path), "--set", bad])
    assert result.exit_code == 2
    assert "tune.search_space.bogus" in result.output
    assert not (tmp_path / "store" / "tune").exists()  # failed before creating anything


def test_ensemble_lr_tunes_the_head(tmp_path):
    cfg = tune_config(tmp_path, model="ensemble", search_space={})
    trial = apply_params(cfg, "ensemble", {"lr": 0.02, "weight_hidden": 8, "meta_hidden": [4]})
    assert trial.train.ensemble_lr == 0.02 and trial.train.lr == cfg.train.lr
    assert trial.models.ensemble.weight_hidden == 8 and trial.models.ensemble.meta_hidden == [4]


# --------------------------------------------------------------------------------------- with Ray


@pytest.fixture(scope="module")
def store(ray_session, tmp_path_factory):
    """A tiny synthetic universe with its features; searches below get their own directories in it."""
    from raycast.data.ingest import ingest
    from raycast.features.pipeline import build_features

    cfg = tune_config(tmp_path_factory.mktemp("tune"))
    ingest(cfg)
    build_features(cfg)
    return cfg


@pytest.fixture(scope="module")
def lstm_search(store):
    """6 LSTM trials under ASHA, one at a time (so every trial after the first meets a filled rung)."""
    from raycast.tune.search import run_search

    cfg = with_tune(store, num_samples=6, max_concurrent_trials=1)
    return cfg, run_search(cfg)


def test_search_completes_and_asha_stops_trials(lstm_search):
    _, out = lstm_search
    run = Path(out["dir"])
    trials = pd.read_csv(run / "results.csv")
    assert len(trials) == 6 and (trials["status"] == "ok").all()
    # ASHA (grace 1, reduction 2, max 3): some trials stop at a rung, at least one runs every epoch.
    assert (trials["epochs"] < EPOCHS).any() and (trials["epochs"] == EPOCHS).any()
    assert out["stopped_early"] == int((trials["epochs"] < EPOCHS).sum())
    assert trials["score"].is_monotonic_decreasing  # best first (val_rank_ic is maximized)
    assert out["best_score"] == pytest.approx(trials["score"].iloc[0])
    seeds = pd.read_csv(run / "seeds.csv")
    assert list(seeds["seed"]) == [1, 2, 3] and (seeds["epochs"] == EPOCHS).all()
    assert out["seeds"]["mean"] == pytest.approx(seeds["score"].mean())
    assert out["seeds"]["std"] == pytest.approx(seeds["score"].std(ddof=1))
    assert "mean +/- std" in (run / "results.md").read_text()


@pytest.fixture(scope="module")
def trained_best(lstm_search):
    """`raycast train` on the written best config, unchanged but for one epoch; registers a version."""
    _, out = lstm_search
    args = ["train", "--config", out["best_config"], "--set", "train.epochs=1", "--no-evaluate"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = result.output
    summary, _ = json.JSONDecoder().raw_decode(text, text.rindex('{\n  "run_id"'))  # amid Ray's log lines
    return out, summary


def test_best_config_round_trips_into_train(lstm_search, trained_best):
    from raycast.tune.search import search_config

    cfg, out = lstm_search
    best = load_config(out["best_config"])
    assert best == apply_params(search_config(cfg), "lstm", out["best_params"])  # the user's config + the winner
    assert best.models.lstm.hidden_size == out["best_params"]["hidden_size"]
    assert best.train.lr == pytest.approx(out["best_params"]["lr"]) and best.train.epochs == EPOCHS
    _, trained = trained_best
    assert trained["version"]


def test_ensemble_head_optuna_search_on_the_registered_version(store, trained_best):
    from raycast.tune.search import run_search

    out = run_search(with_tune(store, model="ensemble", num_samples=4, search_space={}, search_alg="optuna"))
    best = load_config(out["best_config"])
    assert best.train.ensemble_lr == pytest.approx(out["best_params"]["lr"])
    assert best.models.ensemble.weight_hidden == out["best_params"]["weight_hidden"]
    assert best.train.ensemble_epochs == EPOCHS and out["trials"] == 4 and out["errored"] == 0


def test_walk_forward_trials_score_the_mean_over_folds(store):
    from raycast.tune.search import run_search

    folds = store.features.model_copy(update={"walk_forward": WalkForwardConfig(folds=2, val_days=40, test_days=40)})
    cfg = store.model_copy(update={"features": folds})
    out = run_search(with_tune(cfg, num_samples=2, max_epochs=2, scheduler="fifo", seeds=1))
    assert out["trials"] == 2 and out["errored"] == 0
    for text in _trial_results(Path(out["dir"]) / "search").values():
        reports = [json.loads(line) for line in text.splitlines()]
        assert [r["training_iteration"] for r in reports] == [1, 2]  # both folds advance together, one report
        for r in reports:
            assert r["score"] == pytest.approx((r["fold0_score"] + r["fold1_score"]) / 2)
            assert r["fold0_score"] != r["fold1_score"] and r["score_std"] > 0


def _trial_results(search_dir: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in sorted(search_dir.glob("*/result.json"))}


def test_crashed_search_resumes_without_rerunning_finished_trials(store, tmp_path):
    from raycast.tune.search import run_search

    cfg = with_tune(store, num_samples=4, max_concurrent_trials=1, scheduler="fifo", seeds=1)
    path = tmp_path / "search.yaml"
    dump_config(cfg, path)
    code = "import sys\nfrom raycast.config import load_config\nfrom raycast.tune.search import run_search\n"
    code += "run_search(load_config(sys.argv[1]))"
    # Its own Ray; experiment state saved at every step so the crash loses nothing that had finished.
    env = os.environ | {"TUNE_GLOBAL_CHECKPOINT_S": "0"}
    tune_dir = Path(cfg.storage) / "tune"
    older = {d.name for d in tune_dir.glob("*")}  # the module's other searches share the store
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 150
    try:
        while time.monotonic() < deadline:
            searches = [d for d in tune_dir.glob("lstm-*") if (d / "search").is_dir() and d.name not in older]
            done = [t for s in searches for t in _trial_results(s / "search").values() if len(t.splitlines()) == EPOCHS]
            if len(done) >= 2:
                break
            assert proc.poll() is None, "the search ended before it could be interrupted"
            time.sleep(0.2)
        else:
            pytest.fail("two trials did not finish in time")
        time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # a crash: the driver, its Ray and its trials all die at once
        proc.wait()
    (run,) = searches
    before = _trial_results(run / "search")
    finished = {name: text for name, text in before.items() if len(text.splitlines()) == EPOCHS}
    iterations = {n[:22]: [json.loads(x)["training_iteration"] for x in t.splitlines()] for n, t in before.items()}
    assert 2 <= len(finished) < 4, iterations

    out = run_search(cfg, resume=str(run))
    after = _trial_results(run / "search")
    assert out["trials"] == 4 and out["errored"] == 0 and len(after) == 4
    assert set(before) <= set(after)  # the same trials, continued
    for name, text in finished.items():
        assert after[name] == text  # finished trials were not run again
    for text in after.values():
        assert json.loads(text.splitlines()[-1])["training_iteration"] == EPOCHS
    assert Path(out["best_config"]).is_file()

