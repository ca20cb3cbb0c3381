"""Skill or noise: the standard errors and the plain-words reading the evaluation report leads with."""

from __future__ import annotations

import numpy as np
import pandas as pd

from raycast.evaluate.significance import T_SKILL, ic_against_noise, mean_and_se, sharpe_se, verdict


def _frame(columns: dict[str, np.ndarray], target: np.ndarray) -> pd.DataFrame:
    n_dates, n_symbols = target.shape
    dates = np.repeat(pd.bdate_range("2020-01-01", periods=n_dates), n_symbols)
    return pd.DataFrame({"date": dates, "target": target.ravel(), **{k: v.ravel() for k, v in columns.items()}})


def _overlapping_null(seed: int, horizon: int = 5, n_dates: int = 250, n_symbols: int = 30) -> pd.DataFrame:
    """A ``horizon``-day label (overlapping sums of daily noise) and a slow predictor with no skill at all."""
    rng = np.random.default_rng(seed)
    daily = rng.standard_normal((n_dates + horizon, n_symbols))
    target = np.stack([daily[t + 1 : t + 1 + horizon].sum(axis=0) for t in range(n_dates)])
    pred = np.repeat(rng.standard_normal((n_dates // horizon + 1, n_symbols)), horizon, axis=0)[:n_dates]
    return _frame({"p": pred}, target)


def test_without_lags_the_error_is_the_std_over_root_n():
    x = pd.Series(np.random.default_rng(0).standard_normal(400))
    mean, se, n = mean_and_se(x)
    assert n == 400 and np.isclose(mean, x.mean())
    assert np.isclose(se, x.std(ddof=1) / np.sqrt(400))
    assert np.isnan(mean_and_se(pd.Series([1.0]))[1])


def test_overlapping_labels_widen_the_error_so_noise_is_not_called_skill():
    # Plain errors on overlapping labels call a skill-less predictor skilled far more often than 5% of the time.
    draws = [_overlapping_null(seed) for seed in range(100)]
    naive = np.mean([abs(ic_against_noise(f, ["p"], horizon=1).loc["p", "ic_t"]) >= T_SKILL for f in draws])
    lagged = np.mean([abs(ic_against_noise(f, ["p"], horizon=5).loc["p", "ic_t"]) >= T_SKILL for f in draws])
    assert naive >= 0.15
    assert lagged <= 0.12 and lagged < naive / 2


def test_the_paired_difference_resolves_what_two_separate_errors_cannot():
    rng = np.random.default_rng(0)
    shape = (250, 50)
    signal, member_noise = rng.standard_normal(shape), 3 * rng.standard_normal(shape)
    target = 0.1 * signal + rng.standard_normal(shape)
    table = ic_against_noise(_frame({"member": signal + member_noise, "ensemble": signal + 0.8 * member_noise}, target),
                             ["member", "ensemble"])  # fmt: skip
    member, ensemble = table.loc["member"], table.loc["ensemble"]
    separate_t = (ensemble["ic"] - member["ic"]) / np.hypot(ensemble["ic_se"], member["ic_se"])
    assert separate_t < T_SKILL < member["t of the difference"]
    assert np.isclose(member["ensemble - it"], ensemble["ic"] - member["ic"])
    assert np.isnan(ensemble["ensemble - it"])  # nothing to compare the reference with on its own row


def test_the_reading_names_skill_noise_and_a_tiny_cross_section():
    rng = np.random.default_rng(1)
    shape = (300, 40)
    signal = rng.standard_normal(shape)
    target = 0.15 * signal + rng.standard_normal(shape)
    frame = _frame({"ensemble": signal + rng.standard_normal(shape), "ridge": rng.standard_normal(shape),
                    "lstm": rng.standard_normal(shape)}, target)  # fmt: skip
    table = ic_against_noise(frame, ["lstm", "ensemble", "ridge"])
    lines = verdict(table, ["lstm"], ["ridge"], {"ensemble": {"sharpe": 2.0, "n_days": 300}}, symbols_per_date=12)
    text = "\n".join(lines)
    assert "ensemble: test IC" in lines[0] and "distinguishable from no skill" in lines[0] and "not" not in lines[0]
    assert "against its best member (lstm)" in text and "against ridge" in text and "ahead beyond noise" in text
    assert f"Sharpe 2.00 ± {sharpe_se(2.0, 300, 252):.2f}" in text
    assert "12 tradable symbols per date" in text

    silent = ic_against_noise(_frame({"ensemble": rng.standard_normal(shape)}, target), ["ensemble"])
    assert abs(silent.loc["ensemble", "ic_t"]) < T_SKILL  # pure noise, and this draw looks like it
    reading = verdict(silent, [], [], symbols_per_date=40)
    assert "**not distinguishable from no skill**" in reading[0]
    assert len(reading) == 1  # no members, baselines, book or tiny cross-section to speak of

    against = ic_against_noise(_frame({"ensemble": -signal}, target), ["ensemble"])
    assert "**reliably negative**" in verdict(against, [], [])[0]


def test_a_sharpe_error_shrinks_with_the_square_root_of_the_periods():
    assert np.isclose(sharpe_se(0.0, 252, 252), 1.0)  # one year of daily returns: about one unit of Sharpe
    assert np.isclose(sharpe_se(0.0, 4 * 252, 252), 0.5)
    assert sharpe_se(3.0, 252, 252) > sharpe_se(0.0, 252, 252)
    assert np.isnan(sharpe_se(float("nan"), 252, 252))
