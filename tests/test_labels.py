"""Label processing, the IC loss, whole-date batches and the ensemble head's stacking split: fast, no Ray."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import small_config

from raycast.config import ConfigError, parse_config
from raycast.evaluate.metrics import daily_ic
from raycast.train.ensemble import fit_and_stop_rows, fit_ensemble_head, prior_weights, stacking_periods
from raycast.train.labels import DateBatches, ic_loss, process_labels


def _panel(n_dates: int = 30, n_symbols: int = 25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    dates = np.repeat(pd.bdate_range("2020-01-01", periods=n_dates).to_numpy(), n_symbols)
    market = np.repeat(rng.normal(0, 0.01, n_dates), n_symbols)  # a common move: noise for a ranking
    return market + rng.normal(0, 0.02, n_dates * n_symbols), dates


@pytest.mark.parametrize("method", ["rank_norm", "zscore", "winsorize"])
def test_per_date_labels_have_zero_mean_and_unit_spread_on_every_date(method):
    y, dates = _panel()
    z = pd.Series(process_labels(y, dates, method)).groupby(dates)
    np.testing.assert_allclose(z.mean(), 0.0, atol=1e-5)
    # rank normal scores of 25 symbols have a spread a little under 1; the others are exactly 1
    np.testing.assert_allclose(z.std(ddof=0), 1.0, atol=0.1 if method == "rank_norm" else 1e-4)


def test_rank_norm_keeps_each_dates_order_and_ignores_how_extreme_a_return_is():
    y, dates = _panel()
    dirty = y.copy()
    dirty[7] = 99.0  # a x100 print: the day's top return, nothing more
    clean_z, dirty_z = process_labels(y, dates, "rank_norm"), process_labels(dirty, dates, "rank_norm")
    first = dates == dates[0]
    assert dirty_z[7] == pytest.approx(dirty_z[first].max())
    assert dirty_z[7] < 2.5  # the normal score of the top rank out of 25, not 99 standard deviations
    others = np.flatnonzero(first & (np.arange(len(y)) != 7))
    assert np.argsort(dirty_z[others]).tolist() == np.argsort(y[others]).tolist()
    np.testing.assert_array_equal(clean_z[~first], dirty_z[~first])  # other dates untouched


def test_winsorize_clips_an_absurd_return_and_zscore_does_not():
    y, dates = _panel()
    y[3] = 99.0
    assert process_labels(y, dates, "winsorize", clip=3.0)[3] < 5.0
    assert process_labels(y, dates, "zscore")[3] > 4.5  # one value dominates its date's standard deviation


def test_none_standardizes_by_the_training_statistics_and_nan_labels_stay_nan():
    y, dates = _panel()
    y[5] = np.nan
    np.testing.assert_allclose(process_labels(y, dates, "none", mean=0.01, std=0.02), (y - 0.01) / 0.02, rtol=1e-5)
    for method in ("rank_norm", "zscore", "winsorize"):
        out = process_labels(y, dates, method)
        assert np.isnan(out[5]) and np.isfinite(np.delete(out, 5)).all(), method


def test_unknown_label_transform_is_named():
    with pytest.raises(ValueError, match="unknown label transform 'ranks'"):
        process_labels(np.zeros(3), np.zeros(3, dtype="datetime64[ns]"), "ranks")


def test_ic_loss_is_minus_the_mean_per_date_correlation():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(4), 10)
    pred, target = rng.normal(size=40), rng.normal(size=40)
    expected = -np.mean([np.corrcoef(pred[groups == g], target[groups == g])[0, 1] for g in range(4)])
    got = ic_loss(torch.tensor(pred), torch.tensor(target), torch.tensor(groups))
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # scale-free per date: multiplying one date's predictions changes nothing
    scaled = pred.copy()
    scaled[groups == 2] *= 50
    assert float(ic_loss(torch.tensor(scaled), torch.tensor(target), torch.tensor(groups))) == pytest.approx(expected)


def test_ic_loss_leaves_out_dates_too_small_to_rank():
    pred = torch.tensor([1.0, 2.0, 3.0, 1.0, 2.0])
    target = torch.tensor([1.0, 2.0, 3.0, 2.0, 1.0])
    groups = torch.tensor([0, 0, 0, 1, 1])  # date 1 has two rows: a correlation of -1 that says nothing
    assert float(ic_loss(pred, target, groups)) == pytest.approx(-1.0)


def test_date_batches_hold_whole_dates_and_cover_each_date_once_per_epoch():
    _, dates = _panel(n_dates=40, n_symbols=25)
    ends = np.arange(len(dates)) + 1000
    batches = DateBatches(ends, dates, batch_size=100)
    assert batches.dates_per_batch == 4 and batches.steps == 10
    seen = []
    for rows, groups in batches.epoch(np.random.default_rng(0), batches.steps):
        batch_dates = dates[rows - 1000]
        assert len(np.unique(batch_dates)) == 4
        for g in np.unique(groups):  # a group code is one date, with every symbol of that date
            assert len(np.unique(batch_dates[groups == g])) == 1 and (groups == g).sum() == 25
        seen.extend(np.unique(batch_dates))
    assert sorted(seen) == sorted(np.unique(dates))


def test_ic_loss_needs_whole_dates_in_a_batch():
    with pytest.raises(ConfigError, match="batch_sampling: date"):
        parse_config({"train": {"loss": "ic", "batch_sampling": "random"}})
    assert parse_config({"train": {"loss": "ic", "batch_sampling": "date"}}).train.loss == "ic"


def test_stacking_part_follows_the_selection_part_after_the_embargo():
    dates = pd.bdate_range("2021-01-01", periods=100)
    periods = stacking_periods(np.repeat(dates.to_numpy(), 3), fraction=0.4, embargo=2)
    assert periods.stacking.start == dates[60] and periods.stacking.end == dates[99]
    assert periods.selection.start == dates[0] and periods.selection.end == dates[57]  # 58, 59: the embargo
    with pytest.raises(ValueError, match="stacking_fraction"):
        stacking_periods(dates[:8].to_numpy(), fraction=0.5, embargo=2)


def test_head_fit_and_stop_dates_are_an_embargo_apart():
    dates = np.repeat(pd.bdate_range("2021-01-01", periods=40).to_numpy(), 5)
    fit, stop = fit_and_stop_rows(dates, embargo=3)
    last_fit, first_stop = pd.Timestamp(dates[fit].max()), pd.Timestamp(dates[stop].min())
    assert len(pd.bdate_range(last_fit, first_stop)) - 2 == 3  # three dates strictly between
    assert len(np.unique(dates[stop])) == 10


def _head_data(n_dates: int, n_symbols: int, strength: float = 0.3, seed: int = 0):
    """Three members: a good one, a weaker one and pure noise, on a planted per-date target."""
    rng = np.random.default_rng(seed)
    dates = np.repeat(pd.bdate_range("2021-01-01", periods=n_dates).to_numpy(), n_symbols)
    signal = rng.normal(size=len(dates))
    target = strength * signal + rng.normal(size=len(dates))
    outputs = np.column_stack([signal + 0.3 * rng.normal(size=len(dates)), signal + 2.0 * rng.normal(size=len(dates)),
                               rng.normal(size=len(dates))]).astype(np.float32)  # fmt: skip
    return outputs, process_labels(target, dates, "rank_norm"), dates


def _bases():
    return {n: torch.nn.Identity() for n in ("lstm", "cnn", "attention")}


def test_head_stays_near_equal_weights_when_the_data_is_thin(tmp_path):
    outputs, target, dates = _head_data(n_dates=12, n_symbols=6, strength=0.05)  # realistic IC, few dates
    cfg = small_config(tmp_path, train={"ensemble_epochs": 5, "batch_size": 64})
    head, _, summary = fit_ensemble_head(cfg, _bases(), outputs, target, dates, embargo=2)
    weights = head.forward_from_base_predictions(torch.as_tensor(outputs))[1]["weights"].detach().numpy()
    assert summary["kept"] == "prior"  # a trained head cannot show it is better on three held-out dates
    np.testing.assert_allclose(weights, np.broadcast_to(weights[:1], weights.shape))  # the same on every row
    # a few dates' ICs are mostly noise: their standard error holds the weights near a third each
    np.testing.assert_allclose(weights[0], 1 / 3, atol=0.12)
    np.testing.assert_allclose(weights[0], list(summary["prior_weights"].values()), rtol=1e-5)


def test_prior_weights_follow_the_members_skill_when_the_data_is_ample():
    outputs, target, dates = _head_data(n_dates=120, n_symbols=50)
    weights = prior_weights(outputs, target, dates)
    assert weights[0] > weights[1] > weights[2] and weights[2] < 0.1  # the noise member nearly drops out
    assert weights.sum() == pytest.approx(1.0)


def test_prior_weights_count_two_members_that_echo_each_other_once():
    """Two members echo one signal, a third carries another half as strong: an IC-proportional average would
    give the first signal four times the second's weight; the average with the best IC gives it twice (a:b)."""
    rng = np.random.default_rng(0)
    n_dates, n_symbols = 240, 50
    dates = np.repeat(pd.bdate_range("2021-01-01", periods=n_dates).to_numpy(), n_symbols)
    first, second = rng.normal(size=(2, len(dates)))
    target = 0.3 * first + 0.15 * second + rng.normal(size=len(dates))
    outputs = np.column_stack([first + 0.1 * rng.normal(size=len(dates)), first + 0.1 * rng.normal(size=len(dates)),
                               second + 0.1 * rng.normal(size=len(dates))]).astype(np.float32)  # fmt: skip
    fit, fresh = dates < dates[len(dates) // 2], dates >= dates[len(dates) // 2]
    weights = prior_weights(outputs[fit], target[fit], dates[fit])
    assert (weights[0] + weights[1]) / weights[2] == pytest.approx(2.0, rel=0.25)

    def fresh_ic(w: np.ndarray) -> float:
        return daily_ic(pd.DataFrame({"date": dates[fresh], "target": target[fresh], "pred": outputs[fresh] @ w}),
                        "pred").mean()  # fmt: skip

    ic_proportional = np.array([0.3, 0.3, 0.15]) / 0.75
    assert fresh_ic(weights) > fresh_ic(ic_proportional)


def test_head_learns_to_trust_the_better_member_when_the_data_is_ample(tmp_path):
    outputs, target, dates = _head_data(n_dates=120, n_symbols=50)
    cfg = small_config(tmp_path, train={"ensemble_epochs": 20, "batch_size": 500, "ensemble_lr": 0.01})
    head, _, summary = fit_ensemble_head(cfg, _bases(), outputs, target, dates, embargo=2)
    stop = summary["stop_label_ic"]
    assert stop["ensemble"] > stop["equal_weights"] + 0.02, stop  # better than a plain average of the three
    assert stop["ensemble"] >= stop["members"]["lstm"] - 0.01, stop  # and as good as the best member


def test_prior_weights_see_through_days_that_are_hard_for_every_member():
    """The signal's strength swings from day to day, moving every member's daily IC alike; the members' order
    is the same on every day. Compared by date, the better member stands out; its IC's own noise alone, which
    is mostly the shared swing, would hold the weights at equal."""
    rng = np.random.default_rng(3)
    n_dates, n_symbols = 120, 50  # passes in 19 of 20 seeds; by the member's own noise, in none
    dates = np.repeat(pd.bdate_range("2021-01-01", periods=n_dates).to_numpy(), n_symbols)
    strength = np.repeat(rng.normal(0.3, 0.6, n_dates), n_symbols)  # some days the signal even reverses
    signal = rng.normal(size=len(dates))
    target = strength * signal + rng.normal(size=len(dates))
    outputs = np.column_stack([signal + 0.2 * rng.normal(size=len(dates)), signal + 1.5 * rng.normal(size=len(dates)),
                               signal + 1.5 * rng.normal(size=len(dates))]).astype(np.float32)  # fmt: skip
    weights = prior_weights(outputs, process_labels(target, dates, "rank_norm"), dates)
    assert weights[0] > 0.5 and weights[0] > 2 * max(weights[1], weights[2])
