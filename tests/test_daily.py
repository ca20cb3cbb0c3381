"""``raycast daily`` over a synthetic market whose planted signal switches off partway.

A CNN is trained on the early days (signal on) and evaluated. The later days arrive as bars files: first 25 days
with the signal still on (the day's cycle scores and logs them, the monitor stays quiet), then 25 days, in two
files, after the signal switched off (strength 0): the realized Rank IC of the served model falls to about 0, its
95% band over the monitor's 20-date window straddles 0 (the below-0 rule cannot see this) but its top lies below
half the Rank IC the model showed on its test period at evaluation, so the fade rule fires, and the cycle
retrains a candidate whose test period is that window, scores both on it and rolls the candidate out only if it
wins with confidence.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import small_config

from raycast.config import SyntheticConfig
from raycast.data.synthetic import generate_synthetic

HEAD_DAYS, ON_DAYS, OFF_DAYS = 280, 25, 25
UNIVERSE = {"n_symbols": 30, "n_days": HEAD_DAYS + ON_DAYS + OFF_DAYS, "signal_strength": 0.5,
            "signal_strength_after": 0.0, "seed": 3}  # fmt: skip


def test_signal_switches_off_or_reverses_at_its_date():
    base = SyntheticConfig(n_symbols=8, n_days=160, signal_strength=0.3)
    change = pd.bdate_range(base.start, periods=160)[100].date()
    on = generate_synthetic(base).expected_return
    off = generate_synthetic(base.model_copy(update={"signal_change": change}))
    flipped = generate_synthetic(base.model_copy(update={"signal_change": change, "signal_strength_after": -0.3}))
    before = off.expected_return["date"] < pd.Timestamp(change)
    assert (off.expected_return.loc[~before, "mu"] == 0).all()
    np.testing.assert_array_equal(off.expected_return.loc[before, "mu"], on.loc[before, "mu"])
    assert off.info["oracle_ic_after"] == 0.0 and off.info["oracle_ic_before"] > 0.2
    # on the first two dates the paths are still the same (a change reaches returns a label delay later): the
    # planted component is exactly reversed there
    first = on["date"].isin(pd.bdate_range(change, periods=2))
    np.testing.assert_allclose(flipped.expected_return.loc[first, "mu"], -on.loc[first, "mu"], rtol=1e-12)
    assert on.loc[first, "mu"].abs().min() > 0
    # the oracle knows the reversed component too: both regimes are as predictable, by opposite rules
    assert min(flipped.info["oracle_ic_before"], flipped.info["oracle_ic_after"]) > 0.2


def test_rollout_rule_needs_a_confident_gain():
    from raycast.daily import rollout_rule

    dates = pd.bdate_range("2024-01-01", periods=20)
    served = pd.Series(np.where(np.arange(20) % 2, 0.1, -0.1), index=dates)
    assert rollout_rule(served, served + 0.05, 0.0, 1.96)["roll_out"]  # better on every date
    assert not rollout_rule(served, served + 0.05, 0.06, 1.96)["roll_out"]  # not by the minimum improvement
    assert not rollout_rule(served, served - 0.05, 0.0, 1.96)["roll_out"]  # worse
    noisy = served + np.where(np.arange(20) % 3, 0.2, -0.35)  # better on average, not with confidence
    rule = rollout_rule(served, noisy, 0.0, 1.96)
    assert rule["rank_ic_gain"] > 0 > rule["gain_lo"] and not rule["roll_out"]


def test_retrain_cooldown_counts_market_days_since_the_last_candidate(tmp_path):
    """After a candidate, alerts within daily.retrain_cooldown_days market days train none; the summary says so."""
    from raycast.daily import cooldown_decision, cooldown_left, last_candidate, record_candidate, summary_lines

    storage = str(tmp_path / "store")
    dates = pd.bdate_range("2024-01-01", periods=20)
    assert last_candidate(storage) is None and cooldown_decision(storage, 5, dates[3], dates) is None  # none yet
    record_candidate(storage, {"candidate": "v2", "served": "v1", "rolled_out": False}, dates[10])
    assert last_candidate(storage) == {"candidate": "v2", "served": "v1", "market_date": str(dates[10].date()),
                                       "rolled_out": False}  # fmt: skip
    assert [cooldown_left(dates[10], dates[10 + k], dates, 5) for k in range(7)] == [5, 4, 3, 2, 1, 0, 0]
    assert cooldown_left(dates[10], dates[12], dates.delete(11), 5) == 4  # a day without trading does not count
    assert cooldown_left(dates[10], dates[12], dates, 0) == 0
    waiting = cooldown_decision(storage, 5, dates[12], dates)
    assert waiting["cooling_down"] and not waiting["rolled_out"] and waiting["cooldown_days_left"] == 3
    assert "v2" in waiting["reason"] and str(dates[10].date()) in waiting["reason"]
    assert "2 market day(s) ago" in waiting["reason"] and "3 more" in waiting["reason"]
    assert cooldown_decision(storage, 5, dates[15], dates) is None  # the cooldown is over
    assert cooldown_decision(storage, 0, dates[10], dates) is None  # no cooldown
    summary = {"appended": [], "market_dates": {"before": None, "after": None}, "served_version": "v1",
               "scored": {"rows": 0, "reason": "no new dates"}, "monitor": {"alerts": ["faded"]},
               "retrain": waiting}  # fmt: skip
    assert summary_lines(summary)[-1] == waiting["reason"]


@pytest.fixture(scope="module")
def market(ray_session, tmp_path_factory):
    """The early days ingested, featurized, trained on and evaluated; the later days as bars files."""
    from raycast.data.ingest import ingest
    from raycast.evaluate.evaluate import evaluate_version
    from raycast.features.pipeline import build_features
    from raycast.train.run import train

    root = tmp_path_factory.mktemp("daily")
    days = pd.bdate_range(SyntheticConfig().start, periods=UNIVERSE["n_days"])
    synthetic = UNIVERSE | {"signal_change": str(days[HEAD_DAYS + ON_DAYS].date())}
    cfg = small_config(
        root,
        ingest={"source": "files", "files": {"path": str(root / "head.parquet")}, "synthetic": synthetic},
        train={"models": ["cnn"], "epochs": 3, "max_steps_per_epoch": 40, "lr": 0.002, "ensemble_epochs": 3},
        models={"ensemble": {"members": ["cnn"]}},
        evaluate={"lightgbm": {"enabled": False}},
        daily={"val_days": 40},
    )
    universe = generate_synthetic(cfg.ingest.synthetic, cfg.features.label_delay)
    bars = universe.bars
    bars[bars["date"] < days[HEAD_DAYS]].to_parquet(root / "head.parquet", index=False)
    chunks = {"on.parquet": (HEAD_DAYS, HEAD_DAYS + ON_DAYS), "off-1.parquet": (HEAD_DAYS + ON_DAYS, HEAD_DAYS + ON_DAYS + 12),
              "off-2.parquet": (HEAD_DAYS + ON_DAYS + 12, len(days))}  # fmt: skip
    for name, (a, b) in chunks.items():
        bars[bars["date"].isin(days[a:b])].to_parquet(root / name, index=False)
    ingest(cfg)
    build_features(cfg)
    served = train(cfg).version
    evaluate_version(cfg, served)  # the test-period Rank IC the fade rule compares the realized skill with
    return cfg, root, served, days, universe


@pytest.mark.slow
def test_daily_cycle_scores_quietly_then_notices_the_fade_and_never_rolls_out_a_worse_model(market):
    from typer.testing import CliRunner

    from raycast import fs
    from raycast.cli import app
    from raycast.config import dump_config
    from raycast.daily import last_candidate, run_daily
    from raycast.evaluate.monitor import read_prediction_log
    from raycast.registry import list_versions, resolve_version, served_version

    cfg, root, served, days, universe = market
    # (b) the signal is still on: the new dates are appended, scored and logged; no rule fires (through the CLI)
    dump_config(cfg, root / "config.yaml")
    out = CliRunner().invoke(app, ["daily", "-c", str(root / "config.yaml"), str(root / "on.parquet")])
    assert out.exit_code == 0, out.output
    assert "[raycast] monitor: rolling Rank IC" in out.stdout and "ALERT" not in out.stdout
    quiet = json.loads(fs.location(out.stdout.strip().splitlines()[-1].removeprefix("summary: ")).read_text())
    assert quiet["market_dates"] == {"before": str(days[HEAD_DAYS - 1].date()), "after": str(days[HEAD_DAYS + ON_DAYS - 1].date())}
    assert quiet["scored"]["rows"] == UNIVERSE["n_symbols"] * ON_DAYS
    assert (quiet["scored"]["date_min"], quiet["scored"]["date_max"]) == (str(days[HEAD_DAYS].date()), quiet["market_dates"]["after"])
    assert quiet["monitor"]["alerts"] == [], quiet["monitor"]
    assert quiet["monitor"]["rolling_rank_ic_band"][0] > 0  # the model's skill, with confidence
    assert quiet["retrain"] is None

    # (a) the signal switched off: two files of later days; the fade is noticed, a candidate trained and judged
    decayed = run_daily(cfg, [str(root / "off-1.parquet"), str(root / "off-2.parquet")])
    assert [a["new_rows"] for a in decayed["appended"]] == [UNIVERSE["n_symbols"] * 12, UNIVERSE["n_symbols"] * 13]
    assert decayed["scored"]["date_min"] == str(days[HEAD_DAYS + ON_DAYS].date())  # only the new dates
    log = read_prediction_log(cfg.storage, served)
    assert log["date"].nunique() == ON_DAYS + OFF_DAYS and len(log) == UNIVERSE["n_symbols"] * (ON_DAYS + OFF_DAYS)
    monitor = decayed["monitor"]
    evaluated = monitor["evaluated_rank_ic"]
    lo, hi = monitor["rolling_rank_ic_band"]
    assert evaluated > 0 and lo < 0 and hi < cfg.monitor.fade_fraction * evaluated, monitor  # the skill is gone
    # flagged once: as faded while the band still reaches above 0 (seen: -0.128 .. +0.044 against +0.300 at
    # evaluation), by the below-0 rule should chance put the band's top under 0
    (skill,) = [a for a in monitor["alerts"] if "Rank IC" in a]
    assert ("faded" if hi >= 0 else "below 0 with confidence") in skill, monitor

    decision = decayed["retrain"]
    candidate = decision["candidate"]
    window = decision["window"]
    labeled_end = days[len(days) - 1 - 2]  # the last date whose label (delay 1, horizon 1) is realized
    assert window["end"] == str(labeled_end.date())
    split = decision["candidate_split"]
    # no look-ahead: the candidate learned (and stopped) before the window, the embargo apart
    assert pd.Timestamp(split["val"]["end"]) < pd.Timestamp(window["start"]) and split["test"]["start"] == window["start"]
    spec = next(s for s in list_versions(cfg.storage) if s["version"] == candidate)
    assert spec["split"] == split
    figures = decision["figures"]
    assert figures[served]["n_rows"] == figures[candidate]["n_rows"] > 0  # the same rows for both
    assert figures[served]["rank_ic"] < cfg.monitor.fade_fraction * evaluated
    # never a worse model: rolled out exactly when the candidate won with confidence, and the registry follows
    assert decision["rolled_out"] == (decision["gain_lo"] > cfg.daily.min_improvement)
    if decision["rolled_out"]:
        assert figures[candidate]["rank_ic"] > figures[served]["rank_ic"]
    assert resolve_version(cfg.storage) == (candidate if decision["rolled_out"] else served) == served_version(cfg.storage)
    assert resolve_version(cfg.storage, "latest") == candidate  # registered either way
    # remembered for the retrain cooldown: an alert in the next daily.retrain_cooldown_days market days trains none
    assert last_candidate(cfg.storage) == {"candidate": candidate, "served": served, "market_date": str(days[-1].date()),
                                           "rolled_out": decision["rolled_out"]}  # fmt: skip

    written = json.loads((root / "store" / "daily" / f"{days[-1].date()}.json").read_text())
    assert written["retrain"]["candidate"] == candidate and written["monitor"]["alerts"] == monitor["alerts"]

    # (c) the day's job run again (a scheduler's retry): nothing new is published or scored, the skill alert still
    # fires, and the cooldown trains no second candidate
    registered = len(list_versions(cfg.storage))
    retry = run_daily(cfg, [str(root / "off-2.parquet")])
    assert [a["published"] for a in retry["appended"]] == [False] and retry["scored"]["rows"] == 0
    assert [a for a in retry["monitor"]["alerts"] if "Rank IC" in a] == [skill]
    held = retry["retrain"]
    assert held["cooling_down"] and not held["rolled_out"] and held["last_candidate"]["candidate"] == candidate
    assert held["cooldown_days_left"] == cfg.daily.retrain_cooldown_days and candidate in held["reason"]
    assert len(list_versions(cfg.storage)) == registered and served_version(cfg.storage) == resolve_version(cfg.storage)


def test_the_served_version_is_what_a_config_without_one_resolves_to(registered_model, tmp_path):
    """Registering a candidate does not change what is served once a version was chosen; "latest" is the newest."""
    import shutil
    import time

    from untrained_models import register_untrained_version

    from raycast.daily import roll_out_serving
    from raycast.registry import resolve_version, served_version, set_served

    shutil.copytree(registered_model.storage, tmp_path / "store", ignore=shutil.ignore_patterns("predictions"))
    cfg = registered_model.model_copy(update={"storage": str(tmp_path / "store")})
    first = cfg.serve.version
    assert served_version(cfg.storage) is None
    time.sleep(1.1)  # version names order by the second they were registered in
    second = register_untrained_version(cfg, seed=5)
    assert resolve_version(cfg.storage) == second  # none chosen: the newest, as before
    set_served(cfg.storage, first, "test")
    time.sleep(1.1)
    third = register_untrained_version(cfg, seed=6)
    assert resolve_version(cfg.storage) == first == served_version(cfg.storage)
    assert resolve_version(cfg.storage, "latest") == third
    assert roll_out_serving(cfg, third) == "no Serve application running"  # Ray runs here, no app: nothing to do
    with pytest.raises(FileNotFoundError, match="unknown model version"):
        set_served(cfg.storage, "no-such-version")
