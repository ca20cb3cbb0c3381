"""``raycast monitor`` on hand-written signal files whose skill is known: the rules fire when they should only.

Two untrained versions are registered on the small synthetic universe; their logged predictions are the feature
dataset's own target (a perfect ranker) and its negative (a perfectly wrong one). The monitor computes its labels
from the market bars, so a Rank IC of exactly +1 / -1 also shows that those labels are the training targets.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from raycast import fs
from raycast.evaluate.drift import feature_psi, psi
from raycast.evaluate.monitor import assess, predictions_dir, run_monitor
from raycast.features.store import ROWS_DIR, read_feature_frame
from raycast.lineage import model_features_dir
from raycast.registry import load_spec

LOGGED_DATES = 60


@pytest.fixture(scope="module")
def logged(registered_model, tmp_path_factory):
    """A copy of the registered universe with a good and a bad version's signal files for its last 60 dates."""
    from untrained_models import register_untrained_version

    root = tmp_path_factory.mktemp("monitor")
    # without what earlier tests' servers logged there: this module's signal files are the whole log
    shutil.copytree(registered_model.storage, root / "store", ignore=shutil.ignore_patterns("predictions"))
    cfg = registered_model.model_copy(update={"storage": str(root / "store")})
    good, bad = cfg.serve.version, register_untrained_version(cfg, seed=1)
    rows = read_feature_frame(model_features_dir(cfg.storage, load_spec(cfg.storage, good)))
    recent = rows[rows["date"].isin(np.sort(rows["date"].unique())[-LOGGED_DATES:])]
    for version, sign in ((good, 1.0), (bad, -1.0)):
        signal = recent[["symbol", "date"]].assign(prediction=sign * recent["target"].fillna(0.0), model_version=version)
        out = fs.join(predictions_dir(cfg.storage), version)
        fs.makedirs(out)
        dates = np.sort(signal["date"].unique())
        # two overlapping runs: a pair scored twice is counted once
        signal[signal["date"] <= dates[40]].to_parquet(fs.join(out, f"{pd.Timestamp(dates[0]).date()}.parquet"))
        signal[signal["date"] >= dates[30]].to_parquet(fs.join(out, f"{pd.Timestamp(dates[30]).date()}.parquet"))
    return cfg, good, bad, recent


def test_realized_skill_is_exact_and_only_the_decayed_version_alerts(logged):
    cfg, good, bad, recent = logged
    result = assess(cfg)
    pending = int(recent["target"].isna().sum())
    assert pending > 0  # the last dates' labels lie beyond the data
    for version, sign in ((good, 1.0), (bad, -1.0)):
        report = result.versions[version]
        assert report.counts == {"realized": len(recent) - pending, "pending": pending, "unlabeled": 0}
        rank_ic = report.daily["rank_ic"].dropna()
        assert len(rank_ic) == recent.loc[recent["target"].notna(), "date"].nunique()
        np.testing.assert_allclose(rank_ic, sign, atol=1e-9)
        np.testing.assert_allclose(report.latest("rank_ic_mean"), sign, atol=1e-9)
        assert report.summary["hit_rate"] == (1.0 if sign > 0 else 0.0)
        assert report.checked
    rank_alerts = {v: [a for a in r.alerts if "Rank IC" in a] for v, r in result.versions.items()}
    assert rank_alerts[good] == []
    assert len(rank_alerts[bad]) == 1 and "below 0 with confidence" in rank_alerts[bad][0]


def test_rank_ic_band_needs_confidence():
    """A predictor right on half the dates and wrong on the other half has a band across 0: no alert."""
    from raycast.evaluate.monitor import rolling_band

    dates = pd.bdate_range("2024-01-01", periods=40)
    alternating = pd.Series(np.where(np.arange(40) % 2, 0.3, -0.3), index=dates)
    band = rolling_band(alternating, 20, 1.96).iloc[-1]
    assert band["lo"] < 0 < band["hi"]
    assert rolling_band(alternating - 0.5, 20, 1.96).iloc[-1]["hi"] < 0
    assert rolling_band(alternating, 20, 1.96).iloc[:19].isna().all().all()  # no band before 20 values


def test_cli_exits_non_zero_only_when_a_rule_fires(logged):
    from typer.testing import CliRunner

    from raycast.cli import app

    cfg, good, bad, _ = logged
    runner = CliRunner()
    # both rules as configured: the drift rule must not fire on this stationary universe (see the drift test)
    quiet = runner.invoke(app, ["monitor", "--storage", cfg.storage, "--version", good])
    assert quiet.exit_code == 0, quiet.output
    fired = runner.invoke(app, ["monitor", "--storage", cfg.storage])
    assert fired.exit_code == 1, fired.output
    assert f"ALERT {bad}: rolling 20-date Rank IC" in fired.stderr
    assert f"ALERT {good}" not in fired.stderr
    report = fs.location(fired.stdout.strip().splitlines()[-1].removeprefix("report: "))
    assert f"{bad}: rolling 20-date Rank IC" in report.read_text()
    for version in (good, bad):
        assert (report.parent / f"rolling_rank_ic_{version}.png").stat().st_size > 1000


def test_psi_is_zero_against_itself_and_large_for_a_shifted_feature(logged):
    cfg, good, _, _ = logged
    rows = read_feature_frame(model_features_dir(cfg.storage, load_spec(cfg.storage, good)))
    features = ["rsi_14", "return_5d", "volatility_20d"]
    assert feature_psi(rows, rows, features).max() == pytest.approx(0.0, abs=1e-12)
    shifted = rows.assign(rsi_14=rows["rsi_14"] + rows["rsi_14"].std())
    drift = feature_psi(rows, shifted, features)
    assert drift["rsi_14"] > 0.25 and drift.drop("rsi_14").max() < 1e-12
    assert np.isnan(psi(np.array([1.0, 2.0]), np.array([np.nan])))


def test_drift_rule_fires_when_recent_features_shift(logged, tmp_path):
    """Three features that were stable move far outside their training range: exactly they join the drifted set.

    On this stationary universe the last 20 dates already have many features with a PSI above 0.25 (slow ones such
    as TRIX: 20 dates of 12 co-moving symbols are a narrow slice of the training range), yet no more than 20-date
    windows of the training period itself show; those are not drifted and the rule, as configured, stays quiet.
    """
    cfg, good, _, _ = logged
    shutil.copytree(cfg.storage, tmp_path / "store")
    cfg = cfg.model_copy(update={"storage": str(tmp_path / "store")})
    threshold = cfg.monitor.psi_threshold
    before = run_monitor(cfg, good).versions[good]
    above = set(before.psi[before.psi > threshold].index)
    drifted = set(before.drifted(threshold).index)
    assert len(above) >= 5 > cfg.monitor.psi_features > len(drifted)  # the raw threshold alone would fire
    assert before.alerts == []
    assert (before.psi_chance > threshold).sum() >= 5  # what chance gives inside the training period
    moved = list(before.psi[before.psi < 0.1].index[:3])
    assert len(moved) == 3
    rows_dir = fs.join(model_features_dir(cfg.storage, load_spec(cfg.storage, good)), ROWS_DIR)
    files = sorted(rows_dir.glob("*.parquet"))
    recent = np.sort(pd.concat(pd.read_parquet(f, columns=["date"]) for f in files)["date"].unique())[-20:]
    for f in files:
        frame = pd.read_parquet(f)
        late = frame["date"].isin(recent)
        frame.loc[late, moved] += 10 * frame[moved].std()
        frame.to_parquet(f, index=False)
    report = run_monitor(cfg, good).versions[good]
    assert set(report.drifted(threshold).index) == drifted | set(moved)
    assert len(report.alerts) == 1 and f"{len(drifted) + 3} features drifted" in report.alerts[0]


def test_window_psi_max_is_what_windows_of_the_series_reach():
    from raycast.evaluate.drift import window_psi_max

    rng = np.random.default_rng(0)
    dates = np.repeat(pd.bdate_range("2024-01-01", periods=200).to_numpy(), 10)
    iid = rng.standard_normal(len(dates))
    slow = np.repeat(np.cumsum(rng.standard_normal(200)), 10) + 0.1 * iid  # a persistent feature, shared by all
    assert window_psi_max(iid, dates, 20) < 0.25 < window_psi_max(slow, dates, 20)
    day = pd.DatetimeIndex(dates)
    by_hand = max(psi(slow, slow[(day >= day.unique()[i]) & (day <= day.unique()[i + 19])]) for i in range(0, 181, 5))
    assert window_psi_max(slow, dates, 20) == pytest.approx(by_hand, rel=1e-9)
    assert np.isnan(window_psi_max(iid[:100], dates[:100], 20))  # 10 dates: no window of 20


def _report_on(rank_ic: pd.Series, evaluated: float):
    """A version report over hand-built daily Rank ICs, banded as the monitor bands them."""
    from raycast.evaluate.monitor import VersionReport, rolling_band

    daily = pd.DataFrame({"rank_ic": rank_ic})
    daily[["rank_ic_mean", "rank_ic_lo", "rank_ic_hi"]] = rolling_band(rank_ic, 20, 1.96).to_numpy()
    return VersionReport("v", daily, {}, {}, rank_ic.index[-1], pd.Series(dtype=np.float64), evaluated_rank_ic=evaluated)


def test_fade_rule_compares_realized_skill_with_what_evaluation_showed():
    """Realized Rank IC around 0 (its band across 0, so the below-0 rule is quiet) against an evaluated 0.2: the
    band's top lies below half of it and the fade rule fires; as skilled as evaluated, or never skilled: quiet."""
    from raycast.config import MonitorConfig
    from raycast.evaluate.monitor import _rules

    mc = MonitorConfig()
    dates = pd.bdate_range("2024-01-01", periods=40)
    wobble = np.where(np.arange(40) % 2, 0.05, -0.05)
    faded = pd.Series(wobble, index=dates)
    lo, hi = _report_on(faded, 0.2).latest("rank_ic_lo"), _report_on(faded, 0.2).latest("rank_ic_hi")
    assert lo < 0 < hi < 0.5 * 0.2
    (alert,) = _rules(_report_on(faded, 0.2), mc)
    assert alert.startswith("rolling 20-date Rank IC +0.0000 faded") and "+0.2000" in alert and "+0.1000" in alert
    assert f"{hi:+.4f}" in alert and str(dates[-1].date()) in alert
    assert _rules(_report_on(faded + 0.2, 0.2), mc) == []  # realized what evaluation showed
    for evaluated in (0.0, -0.05, np.nan):  # no skill at evaluation (or never evaluated): nothing to fade from
        assert _rules(_report_on(faded, evaluated), mc) == []
    assert _rules(_report_on(faded, 0.2), mc.model_copy(update={"fade_fraction": 0.0})) == []  # turned off
    assert _rules(_report_on(faded.iloc[:19], 0.2), mc) == []  # no band before 20 dates
    # a model whose skill turned against it is flagged once, by the below-0 rule
    (below,) = _rules(_report_on(faded - 0.2, 0.2), mc)
    assert "below 0 with confidence" in below


def test_evaluated_rank_ic_is_the_ensembles_on_its_test_period():
    from raycast.evaluate.monitor import evaluated_rank_ic

    test = {"ensemble": {"rank_ic": 0.12}, "cnn": {"rank_ic": 0.3}}
    spec = {"metrics": {"val": {"ensemble": {"rank_ic": 0.5}}, "test": test}}
    assert evaluated_rank_ic(spec) == 0.12
    assert np.isnan(evaluated_rank_ic({}))
    assert np.isnan(evaluated_rank_ic({"metrics": {"test": {"ensemble": {"rank_ic": None}}}}))


def test_fade_rule_reads_the_evaluated_rank_ic_from_the_registry(logged, tmp_path):
    """The good version's log replaced by a seeded ranking without skill: quiet while the registry holds no
    evaluation of it, flagged as faded once its recorded test Rank IC is one the realized band falls short of."""
    from raycast.registry import update_metrics

    cfg, good, _, recent = logged
    shutil.copytree(cfg.storage, tmp_path / "store")
    cfg = cfg.model_copy(update={"storage": str(tmp_path / "store")})
    out = fs.join(predictions_dir(cfg.storage), good)
    shutil.rmtree(out)
    fs.makedirs(out)
    # a ranking without skill, by construction rather than by a draw that could land below 0: exactly right on
    # every other realized date and exactly wrong on the rest, so any 20 consecutive dates average a Rank IC of 0
    realized = np.sort(recent.loc[recent["target"].notna(), "date"].unique())
    flip = recent["date"].isin(realized[1::2]).map({True: -1.0, False: 1.0})
    guess = flip * recent["target"].fillna(0.0)
    recent[["symbol", "date"]].assign(prediction=guess, model_version=good).to_parquet(fs.join(out, "flip.parquet"))
    # never evaluated: the session's registered model may have been evaluated by an earlier test in the suite
    update_metrics(cfg.storage, good, {})
    quiet = assess(cfg, good).versions[good]
    assert np.isnan(quiet.evaluated_rank_ic) and quiet.alerts == []
    assert abs(quiet.latest("rank_ic_mean")) < 1e-9 and -0.5 < quiet.latest("rank_ic_lo") < 0 < quiet.latest("rank_ic_hi") < 0.5
    update_metrics(cfg.storage, good, {"test": {"ensemble": {"rank_ic": 1.0}}})
    faded = assess(cfg, good).versions[good]
    assert faded.evaluated_rank_ic == 1.0
    assert len(faded.alerts) == 1 and "faded" in faded.alerts[0] and "+0.5000" in faded.alerts[0], faded.alerts
