"""Training end to end on Ray: skill on a planted signal, none on the null universe, fault tolerance, registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import small_config

from raycast.data.ingest import ingest
from raycast.evaluate.evaluate import evaluate_version
from raycast.features.pipeline import build_features
from raycast.features.store import FeatureBlocks, current_features_dir, load_meta, read_feature_frame
from raycast.registry import list_versions, load_predictor, load_weights
from raycast.train.run import train
from raycast.train.trainer import fit_base_model

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

# Deep models need data: 60 symbols x 4 years gives ~35k training windows, enough for the CNN to reach ~85% of the
# oracle IC in 600 CPU steps (measured), while a regression on the last day's features reaches about half of it.
UNIVERSE = {"n_symbols": 60, "n_days": 1000}
TRAIN = {
    "models": ["lstm", "cnn", "attention"],
    "concurrent": True,
    "epochs": 4,
    "batch_size": 256,
    "lr": 0.002,
    "max_steps_per_epoch": 150,
    "patience": 3,
    "early_stop_metric": "val_ic",
    "ensemble_epochs": 20,
}
MODELS = {"lstm": {"hidden_size": 32, "dropout": 0.1}}


def _pipeline(tmp_path, strength: float, **train_overrides):
    cfg = small_config(
        tmp_path, ingest={"synthetic": UNIVERSE | {"signal_strength": strength}}, train=TRAIN | train_overrides, models=MODELS
    )
    manifest = ingest(cfg)
    build_features(cfg)
    trained = train(cfg)
    evaluate_version(cfg, trained.version)
    spec = next(v for v in list_versions(cfg.storage) if v["version"] == trained.version)
    return cfg, manifest, trained, spec["metrics"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return _pipeline(tmp_path_factory.mktemp("planted"), strength=0.5)


def test_ensemble_learns_the_planted_signal_and_beats_the_baselines(planted):
    _, manifest, _, metrics = planted
    oracle = manifest["synthetic"]["oracle_ic"]
    test = metrics["test"]
    ens = test["ensemble"]["ic"]
    assert ens >= 0.5 * oracle, f"ensemble test IC {ens:.3f} < half the oracle IC {oracle:.3f}"
    for baseline in ("momentum", "ridge", "lightgbm"):
        assert ens > test[baseline]["ic"], f"ensemble IC {ens:.3f} <= {baseline} IC {test[baseline]['ic']:.3f}"
    assert test["zero"]["ic"] is None or not np.isfinite(test["zero"]["ic"])  # a constant ranks nothing
    assert test["ensemble"]["direction_accuracy"] > 0.5
    # the ensemble stage never trains on the period it is tested on, and the backtest pays costs
    assert metrics["backtest"]["ensemble"]["annualized_return"] > metrics["backtest"]["momentum"]["annualized_return"]


def test_the_head_learns_where_no_base_was_selected(planted):
    """The bases early-stop on the selection part of validation; the head learns only after it, an embargo later."""
    import pandas as pd

    from raycast.features.splits import Period

    cfg, _, trained, _ = planted
    spec = trained.spec
    stacking, val = spec["stacking"], spec["split"]["val"]
    selection, part = stacking["selection"], stacking["stacking"]
    assert val["start"] == selection["start"] and part["end"] == val["end"]
    gap = pd.bdate_range(selection["end"], part["start"])[1:-1]  # business days strictly between the two parts
    assert len(gap) >= stacking["embargo_days"] == 2  # label_delay 1 + horizon 1
    meta = load_meta(current_features_dir(cfg.storage))
    blocks = FeatureBlocks(read_feature_frame(current_features_dir(cfg.storage)), meta.normalizer, meta.window)
    selection_windows = len(blocks.ends(Period(pd.Timestamp(selection["start"]), pd.Timestamp(selection["end"]))))
    for name, fit in trained.fits.items():  # every epoch of every base was scored on the selection part only
        assert {h["val_windows"] for h in fit.history} == {selection_windows}, name
        assert spec["training"][name]["stacking_ic"] == stacking["ic"][name]
    # what the report shows per member and for the equal-weight average, on dates no base was chosen on
    assert set(stacking["ic"]) == {*trained.fits, "equal_weights"}
    assert set(stacking["stop_label_ic"]["members"]) == set(trained.fits)
    assert stacking["kept"] == "prior" or isinstance(stacking["kept"], int)
    assert sum(stacking["prior_weights"].values()) == pytest.approx(1.0)


def test_ensemble_stage_leaves_the_bases_unchanged(planted):
    cfg, _, trained, _ = planted
    for name, fit in trained.fits.items():
        for key, value in fit.state_dict.items():
            assert torch.equal(trained.ensemble.bases[name].state_dict()[key], value), f"{name}.{key} changed"
            assert torch.equal(load_weights(cfg.storage, trained.version, name)[key], value)


def test_registry_round_trip_reproduces_predictions_exactly(planted):
    cfg, _, trained, _ = planted
    predictor = load_predictor(cfg.storage, trained.version)
    assert predictor.version == trained.version and list(predictor.bases) == ["lstm", "cnn", "attention"]
    meta = load_meta(current_features_dir(cfg.storage))
    blocks = FeatureBlocks(read_feature_frame(current_features_dir(cfg.storage)), predictor.normalizer, meta.window)
    x, _ = blocks.windows(blocks.ends(meta.split.test)[:300])
    got = predictor.predict_windows(x)
    with torch.no_grad():
        pred, details = trained.ensemble(torch.as_tensor(x))
    std, mean = trained.spec["target"]["std"], trained.spec["target"]["mean"]
    np.testing.assert_array_equal(got["prediction"], pred.reshape(-1).numpy() * std + mean)
    assert set(got["weights"]) == {"lstm", "cnn", "attention"}
    np.testing.assert_allclose(sum(got["weights"].values()), 1.0, rtol=1e-5)
    # what the registry promises serving: spec, normalizer, data range and code version are all there
    spec = predictor.spec
    assert spec["features"]["features"] == meta.features and spec["split"]["test"]["end"]
    assert spec["code_version"] and spec["metrics"]["test"]["ensemble"]["ic"] is not None


def test_null_universe_shows_no_skill(tmp_path, capsys):
    """The leakage canary: with nothing to predict, every model's test IC must be indistinguishable from 0.

    Its training run also shows the progress a person reads when stdout is not a terminal: one line per epoch.
    """
    # Fewer steps than the planted run: a leak of future returns shows up in the first steps (and in the ridge).
    # One base model: a leak lives in the data path (features, splits, normalization, the ensemble's period),
    # which every model shares; the architectures only ever see the window they are given.
    cfg, manifest, trained, metrics = _pipeline(
        tmp_path, strength=0.0, epochs=2, max_steps_per_epoch=60, models=["cnn"]
    )
    _check_progress_lines(capsys.readouterr().out, "cnn", trained.fits["cnn"].history, epochs=2)
    assert manifest["synthetic"]["oracle_ic"] == 0.0
    test = metrics["test"]
    assert {"cnn", "ensemble", "ridge", "momentum"} <= set(test)
    for name, m in test.items():
        if m["ic"] is None or not np.isfinite(m["ic"]):  # a constant (the zero baseline) ranks nothing
            continue
        # Symbols share market and sector moves, so a date's IC is not an average of independent symbols: the
        # standard error of the mean IC is measured, from the spread of the per-date ICs. Four of them: a leak of
        # future returns into the features would give IC far above this.
        threshold = 4.0 * m["ic_std"] / np.sqrt(m["n_dates"])
        assert abs(m["ic"]) < threshold, f"{name} shows skill on the null universe: IC {m['ic']:.4f} > {threshold:.4f}"


def _check_progress_lines(printed: str, model: str, history: list[dict], epochs: int) -> None:
    """One plain line per epoch of ``model``, each with what the workers reported for that epoch (``history``)."""
    import re

    lines = [ln for ln in printed.splitlines() if re.match(rf"\[raycast\] {model}\s+epoch ", ln)]
    assert len(lines) == len(history), printed[-3000:]
    for line, h in zip(lines, history, strict=True):
        k, steps = h["epoch"] + 1, h["steps"]
        assert f"epoch {k}/{epochs}  step {k * steps}/{epochs * steps}  loss {h['train_loss']:.4f}" in line, line
        assert f"val IC {h['val_ic']:+.4f}  Rank IC {h['val_rank_ic']:+.4f}" in line, line
        assert f"{h['samples_per_s']:,.0f} samples/s" in line, line
        assert line.endswith("done") if k == epochs else re.search(r"ETA \d+:\d\d$", line), line


def _checkpoint_epochs(path) -> list[int]:
    """Epochs of the checkpoints on disk (uploaded by the worker, committed or not)."""
    from raycast.train.loop import load_state

    return sorted(load_state(d, "cpu")["epoch"] for d in path.glob("checkpoint_*") if d.is_dir())


def _committed_epochs(path) -> list[int]:
    """Epochs of the checkpoints Ray Train's controller has committed (what a restart resumes from)."""
    import json

    snapshot = path / "checkpoint_manager_snapshot.json"
    if not snapshot.is_file():
        return []
    try:
        results = json.loads(snapshot.read_text())["checkpoint_results"]
    except (ValueError, KeyError):  # caught mid-write
        return []
    return sorted(r["metrics"]["epoch"] for r in results)


def _controller_modules(path: Path):
    """A Ray Train callback writing which heavy modules the run's controller has loaded by each report. Defined in
    a function, so Ray pickles it by value and the controller needs nothing of the tests to run it."""
    from ray.train import UserCallback

    class ControllerModules(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            import sys

            loaded = [m for m in ("torch", "ray.train.torch", "ray.tune") if m in sys.modules]
            with open(path, "w") as f:
                f.write(",".join(loaded) or "none")

    return ControllerModules()


def test_a_killed_worker_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    """SIGKILL the training worker mid-run: Ray Train restarts it from the last checkpoint; no epoch repeats.
    The lone worker runs under a plain DataParallelTrainer, whose controller never loads torch or Ray Tune."""
    import os
    import signal
    import threading
    import time

    import psutil

    cfg = small_config(
        tmp_path, train={"models": ["cnn"], "epochs": 6, "max_steps_per_epoch": 40, "max_failures": 2,
                         "keep_checkpoints": 20, "patience": 6}
    )  # fmt: skip
    ingest(cfg)
    build_features(cfg)
    fdir = current_features_dir(cfg.storage)
    meta = load_meta(fdir)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    probe = tmp_path / "controller-modules"
    from raycast.console.train_callbacks import TrainProgress

    # the progress callback rides along (its pushes to a board that is not there fail quietly), as in `raycast train`
    monkeypatch.setattr("raycast.console.train_callbacks.train_progress",
                        lambda label, epochs: [TrainProgress(None, [label]), _controller_modules(probe)])  # fmt: skip
    out: dict = {}
    fit = threading.Thread(target=lambda: out.setdefault(
        "result", fit_base_model(cfg, "cnn", fdir, meta.split, meta.normalizer, meta.window, run_dir)))
    fit.start()
    ckpt_dir = run_dir / "ray" / "cnn"
    deadline = time.time() + 300
    while time.time() < deadline and len(_committed_epochs(ckpt_dir)) < 2:
        time.sleep(0.1)
    # Ray titles each worker process after its actor: find the training worker the way an operator would, among
    # this test's own Ray processes (another Ray on the machine has workers of its own)
    def titled(process: psutil.Process) -> str:
        try:
            return " ".join(process.cmdline())
        except psutil.Error:  # ended between the listing and the look
            return ""

    workers = [p for p in psutil.Process().children(recursive=True) if "ray::RayTrainWorker" in titled(p)]
    assert len(workers) == 1, workers
    killed_after = _committed_epochs(ckpt_dir)[-1]
    os.kill(workers[0].pid, signal.SIGKILL)
    fit.join(600)
    result = out["result"]
    on_disk = _checkpoint_epochs(ckpt_dir)
    assert killed_after < 5, "the kill came after the run had finished"
    # no completed (committed) epoch ran twice: the restart resumed after the last checkpoint, not from scratch;
    # only the epoch in flight at the kill may have been redone
    assert [e for e in on_disk if e <= killed_after] == list(range(killed_after + 1)), on_disk
    assert _committed_epochs(ckpt_dir) == list(range(6))
    assert [h["epoch"] for h in result.history] == list(range(6))
    assert all(np.isfinite(h["val_loss"]) for h in result.history)
    assert probe.read_text() == "none"


def test_ddp_workers_share_the_training_windows_and_stay_in_sync(tmp_path):
    """Two Ray Train workers: each trains on its own shard of the windows; DDP keeps their weights identical."""
    cfg = small_config(tmp_path, train={"models": ["cnn"], "epochs": 2, "max_steps_per_epoch": 10, "num_workers": 2})
    ingest(cfg)
    build_features(cfg)
    fdir = current_features_dir(cfg.storage)
    meta = load_meta(fdir)
    result = fit_base_model(cfg, "cnn", fdir, meta.split, meta.normalizer, meta.window, tmp_path / "run")
    everything = len(FeatureBlocks(read_feature_frame(fdir), meta.normalizer, meta.window).ends(meta.split.train))
    for epoch in result.history:
        assert epoch["workers"] == 2
        # the shards are disjoint: together they hold the training windows once (a symbol cut between two shards
        # loses the few windows that would straddle the cut), not twice
        assert 0.9 * everything <= epoch["train_windows"] <= everything, (epoch["train_windows"], everything)
        # gradients were averaged across the ranks: different data, same weights
        assert epoch["replica_spread"] == pytest.approx(0.0, abs=1e-6)
    assert [h["epoch"] for h in result.history] == [0, 1] and np.isfinite(result.best_metrics["val_loss"])


@pytest.mark.parametrize(("cpus_per_worker", "expected"), [(1.0, 3), (1.5, 2), (3.5, 1)])
def test_concurrent_trainers_leave_a_cpu_for_their_data(tmp_path, cpus_per_worker, expected):
    from raycast.train.trainer import concurrent_trainers

    # ray_session has 4 CPUs: trainers may take 3 of them, Ray Data's read tasks need the 4th
    cfg = small_config(tmp_path, train={"models": ["lstm", "cnn", "attention"], "concurrent": True,
                                        "cpus_per_worker": cpus_per_worker})  # fmt: skip
    assert concurrent_trainers(cfg) == expected
    assert concurrent_trainers(cfg.model_copy(update={"train": cfg.train.model_copy(update={"concurrent": False})})) == 1


def test_the_timeline_accounts_for_the_stage_in_order(tmp_path):
    """Two base models in turn in one trainer: the run directory's timeline has every phase, in order, end to end."""
    import json

    from raycast import fs
    from raycast.train.timeline import TIMELINE_FILE

    cfg = small_config(tmp_path, train={"models": ["cnn", "lstm"], "epochs": 2, "max_steps_per_epoch": 5})
    ingest(cfg)
    build_features(cfg)
    trained = train(cfg)
    saved = json.loads(fs.read_text(fs.join(trained.run_dir, TIMELINE_FILE)))
    timeline = trained.timeline
    assert saved["wall_s"] == pytest.approx(timeline.wall_s) and len(saved["phases"]) == len(timeline.phases)

    stage = timeline.of("stage")
    assert [p.name for p in stage] == ["ray, run directory", "target stats, stacking periods", "base models",
                                       "ensemble", "registry"]  # fmt: skip
    for before, after in zip(stage, stage[1:], strict=False):
        assert before.end <= after.start + 1e-3, (before, after)
    # the stage's own phases leave nothing of its wall time out but the few prints between them
    assert sum(p.seconds for p in stage) == pytest.approx(timeline.wall_s, rel=0.02, abs=0.2)

    assert timeline.trainers() == ["cnn+lstm"]  # one trainer, one worker group for both models
    phases = timeline.of("cnn+lstm")
    names = [p.name for p in phases]
    expected = ["trainer setup (driver)", "worker group start", "training blocks", "validation blocks",
                "cnn setup",
                "cnn epoch 0 train", "cnn epoch 0 validation", "cnn epoch 0 checkpoint", "cnn epoch 1 train",
                "lstm setup", "lstm epoch 1 checkpoint", "finish (last commit, worker group shutdown)",
                "best weights (driver)"]  # fmt: skip
    assert all(n in names for n in expected), names
    assert [names.index(n) for n in expected] == sorted(names.index(n) for n in expected), names
    for before, after in zip(phases, phases[1:], strict=False):  # consecutive: each starts where the last ended
        assert after.start == pytest.approx(before.end, abs=1e-3), (before, after)
    base_models = next(p for p in stage if p.name == "base models")
    assert base_models.start <= phases[0].start and phases[-1].end <= base_models.end + 1e-3
    assert sum(p.seconds for p in phases) == pytest.approx(base_models.seconds, rel=0.05, abs=0.5)
    # the loop's seconds are the ones its history reports
    history = sum(h["train_seconds"] + h["val_seconds"] for f in trained.fits.values() for h in f.history)
    assert timeline.in_loop_s() == pytest.approx(history, rel=0.05, abs=0.1)
    assert "training blocks" in timeline.table() and "wall / in-loop" in timeline.table()
    # the worker's phases carry its peak memory, a high-water mark, from a running process (a Python with torch
    # imported is well over 100 MB); the driver's own phases carry none
    worker = [p for p in phases if p.kind in ("data", "setup", "train", "validation", "checkpoint")
              and "(driver)" not in p.name]  # fmt: skip
    peaks = [(p.name, p.peak_mb) for p in worker]
    assert len(worker) >= 10 and all(peak is not None and peak > 100 for _, peak in peaks), peaks
    assert [peak for _, peak in peaks] == sorted(peak for _, peak in peaks), peaks
    assert all(p.peak_mb is None for p in stage) and "worker peak MB" in timeline.table()
    assert all("peak_mb" in p for p in saved["phases"])
