"""Hyperparameter search: search spaces, an ASHA search end to end, the best config into `raycast train`,
resume after a crash, and the ensemble head's search on a registered version."""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import small_config
from typer.testing import CliRunner

from raycast.cli import app
from raycast.config import SearchDimension, WalkForwardConfig, dump_config, load_config
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


def test_window_and_label_processing_are_searchable(tmp_path):
    cfg = tune_config(tmp_path, search_space={"window": {"type": "choice", "values": [20, 30, 60]}})
    assert resolve_search_space(cfg)["window"].values == [20, 30, 60]
    trial = apply_params(cfg, "lstm", {"window": 60, "label_transform": "zscore"})
    assert trial.train.window == 60 and trial.train.label_transform == "zscore"
    with pytest.raises(ValueError, match="tune.search_space.window: value 1 is not accepted"):
        resolve_search_space(tune_config(tmp_path, search_space={"window": {"type": "choice", "values": [1, 20]}}))


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


PRINTED: dict[str, str] = {}  # what a search printed, by fixture (stdout is not a terminal: plain progress lines)


@pytest.fixture(scope="module")
def lstm_search(store):
    """6 LSTM trials under ASHA, one at a time (so every trial after the first meets a filled rung)."""
    import contextlib
    import io

    from raycast.tune.search import run_search

    cfg = with_tune(store, num_samples=6, max_concurrent_trials=1)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        out = run_search(cfg)
    PRINTED["lstm_search"] = printed.getvalue()
    return cfg, out


def test_search_completes_and_asha_stops_trials(lstm_search):
    _, out = lstm_search
    run = Path(out["dir"])
    reports = _trial_reports(run / "search")  # what each trial reported to Tune, epoch by epoch
    assert len(reports) == 6
    epochs = {name: len(r) for name, r in reports.items()}
    # ASHA (grace 1, reduction 2, max 3): some trials stop at a rung, at least one runs every epoch. Patience (3)
    # cannot stop a 3-epoch trial, so a trial with fewer epochs was stopped by ASHA.
    assert any(e < EPOCHS for e in epochs.values()) and any(e == EPOCHS for e in epochs.values()), epochs
    assert out["stopped_early"] == sum(e < EPOCHS for e in epochs.values())
    # the progress a person read: one line per finished trial, the last one with the counts and the best score
    lines = re.findall(r"^\[raycast\] tune +\d/6 trials.*$", PRINTED["lstm_search"], flags=re.M)
    assert len(lines) == 6, PRINTED["lstm_search"][-3000:]
    stopped = sum(e < EPOCHS for e in epochs.values())
    best = max(report["score"] for r in reports.values() for report in r)
    assert lines[-1].split(None, 2)[2] == (
        f"6/6 trials: 0 running, 6 finished ({stopped} stopped by ASHA)  best val_rank_ic {best:+.4f}"
    ), lines
    # the winner is the trial whose last report scores best (val_rank_ic, maximized): its params and its score
    last = {name: r[-1]["score"] for name, r in reports.items()}
    winner = max(last, key=last.get)
    params = json.loads((run / "search" / winner / "params.json").read_text())
    assert out["best_score"] == pytest.approx(last[winner])
    assert out["best_params"] == pytest.approx({k: params[k] for k in out["best_params"]})
    trials = pd.read_csv(run / "results.csv").set_index("trial_id")
    assert (trials["status"] == "ok").all()
    for r in reports.values():
        row = trials.loc[r[-1]["trial_id"]]
        assert row["epochs"] == len(r) and row["score"] == pytest.approx(r[-1]["score"])
    # the winner re-run with fresh seeds, each to the end; its spread from what the seed trials reported
    seed_scores = [r[-1]["score"] for r in _trial_reports(run / "seeds").values()]
    assert len(seed_scores) == 3 and all(len(r) == EPOCHS for r in _trial_reports(run / "seeds").values())
    assert sorted(pd.read_csv(run / "seeds.csv")["seed"]) == [1, 2, 3]
    assert out["seeds"]["mean"] == pytest.approx(statistics.mean(seed_scores))
    assert out["seeds"]["std"] == pytest.approx(statistics.stdev(seed_scores))
    assert "mean +/- std" in (run / "results.md").read_text()


def _trial_reports(experiment: Path) -> dict[str, list[dict]]:
    """Every trial's reports as Tune logged them (its ``result.json``), by trial directory."""
    results = _trial_results(experiment)
    return {name: [json.loads(line) for line in text.splitlines()] for name, text in results.items()}


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


def test_trials_search_the_window_on_walk_forward_folds_side_by_side(store):
    """tune.folds scores trials on walk-forward folds (two at once with two CPUs a trial); each trial reads the
    window it sampled, and the winner's window lands in the best config."""
    from raycast.tune.search import run_search

    wf = store.features.model_copy(update={"walk_forward": WalkForwardConfig(folds=0, val_days=40, test_days=40)})
    cfg = with_tune(store.model_copy(update={"features": wf}), num_samples=2, max_epochs=1, scheduler="fifo", seeds=1,
                    folds=2, cpus_per_trial=2, search_space={"window": SearchDimension(type="choice", values=[10, 20])})  # fmt: skip
    out = run_search(cfg)
    assert out["trials"] == 2 and out["errored"] == 0
    reports = {}
    for trial in (Path(out["dir"]) / "search").glob("*/result.json"):
        report = json.loads(trial.read_text().splitlines()[-1])
        assert report["score"] == pytest.approx((report["fold0_score"] + report["fold1_score"]) / 2)
        reports[report["config"]["window"]] = report
    assert sorted(reports) == [10, 20]  # the search's seed samples both
    # each symbol's first window-1 rows end no window: the longer window trains on fewer of them
    assert reports[10]["train_windows"] > reports[20]["train_windows"]
    assert load_config(out["best_config"]).train.window == out["best_params"]["window"]


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
            folds = [r["fold0_score"], r["fold1_score"]]
            assert folds[0] != folds[1]
            assert r["score"] == pytest.approx(statistics.mean(folds))
            assert r["score_std"] == pytest.approx(statistics.stdev(folds))


def test_torch_trials_fit_each_fold_in_a_ray_train_run(store):
    """``tune.trainer: torch``: a trial drives one Ray Train run per walk-forward fold, side by side, and reports
    their mean every epoch; each fold's run keeps its own checkpoints."""
    from raycast.tune.search import run_search

    folds = store.features.model_copy(update={"walk_forward": WalkForwardConfig(folds=2, val_days=40, test_days=40)})
    cfg = store.model_copy(update={"features": folds})
    out = run_search(with_tune(cfg, trainer="torch", num_samples=1, max_epochs=2, scheduler="fifo", seeds=1))
    assert out["trials"] == 1 and out["errored"] == 0
    (text,) = _trial_results(Path(out["dir"]) / "search").values()
    reports = [json.loads(line) for line in text.splitlines()]
    assert [r["training_iteration"] for r in reports] == [1, 2]
    for r in reports:
        assert r["score"] == pytest.approx(statistics.mean([r["fold0_score"], r["fold1_score"]]))
    # the search's trial and the winner's seed re-run: each ran both folds, each fold's run with its checkpoints
    runs = sorted((Path(out["dir"]) / "train_runs").iterdir())
    by_trial: dict[str, list[str]] = {}
    for run in runs:
        trial, fold = run.name.rsplit("-", 1)
        by_trial.setdefault(trial, []).append(fold)
    assert list(by_trial.values()) == [["fold0", "fold1"]] * 2, runs
    assert all(list(p.glob("checkpoint_*")) for p in runs), runs


def _trial_results(search_dir: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in sorted(search_dir.glob("*/result.json"))}


def _two_finished_with_results(search_dir: Path) -> bool:
    """At least two trials are recorded as finished and every finished one's result file is complete on disk
    (the experiment state can be saved a moment before a trial's last result line is flushed)."""
    terminated = _terminated(search_dir)
    complete = set()
    for text in _trial_results(search_dir).values():
        lines = text.splitlines()
        try:
            if len(lines) == EPOCHS:
                complete.add(json.loads(lines[-1])["trial_id"])
        except (ValueError, KeyError):  # caught mid-write
            pass
    return len(terminated) >= 2 and terminated <= complete


def _terminated(experiment: Path) -> set[str]:
    """Ids of the trials the experiment's newest saved state records as finished."""
    states = sorted(experiment.glob("experiment_state-*.json"))
    if not states:
        return set()
    try:
        trials = [json.loads(state) for state, _ in json.loads(states[-1].read_text())["trial_data"]]
    except (ValueError, KeyError):  # caught mid-write
        return set()
    return {t["trial_id"] for t in trials if t["status"] == "TERMINATED"}


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
        # Crash once the saved experiment state records two finished trials: what a restore must keep as it is.
        while time.monotonic() < deadline:
            searches = [d for d in tune_dir.glob("lstm-*") if (d / "search").is_dir() and d.name not in older]
            if len(searches) == 1 and _two_finished_with_results(searches[0] / "search"):
                break
            assert proc.poll() is None, "the search ended before it could be interrupted"
            time.sleep(0.2)
        else:
            pytest.fail("two trials did not finish in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # a crash: the driver, its Ray and its trials all die at once
        proc.wait()
    (run,) = searches
    terminated = _terminated(run / "search")
    before = _trial_results(run / "search")
    trial_ids = {name: json.loads(text.splitlines()[-1])["trial_id"] for name, text in before.items() if text}
    finished = {name: before[name] for name, trial_id in trial_ids.items() if trial_id in terminated}
    iterations = {n[:22]: [json.loads(x)["training_iteration"] for x in t.splitlines()] for n, t in before.items()}
    assert 2 <= len(finished) == len(terminated) < 4, iterations
    assert all(len(text.splitlines()) == EPOCHS for text in finished.values()), iterations

    out = run_search(cfg, resume=str(run))
    after = _trial_results(run / "search")
    assert out["trials"] == 4 and out["errored"] == 0 and len(after) == 4
    assert set(before) <= set(after)  # the same trials, continued
    for name, text in finished.items():
        assert after[name] == text  # finished trials were not run again
    for text in after.values():
        assert json.loads(text.splitlines()[-1])["training_iteration"] == EPOCHS
    assert Path(out["best_config"]).is_file()

