"""Tests for raycast.evaluate: metrics, backtest, baselines, walk-forward aggregation and the report."""

from __future__ import annotations

import math
from pathlib import Path
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from raycast.evaluate.backtest import (
    SUMMARY_KEYS,
    backtest_table,
    cost_sensitivity,
    extreme_days,
    holding_bands,
    long_short_backtest,
    quantile_weights,
)
from raycast.evaluate.baselines import fit_ridge, momentum_baseline, ridge_baseline, zero_baseline
from raycast.evaluate.metrics import SUMMARY_COLUMNS, daily_ic, direction_accuracy, summarize
from raycast.evaluate.report import PLOT_FILES, ReportInputs, write_report
from raycast.evaluate.tables import ensemble_vs_members, markdown_table
from raycast.evaluate.walk_forward import aggregate_folds, format_folds


def random_frame(n_symbols=40, n_days=60, seed=0, signal=0.0) -> pd.DataFrame:
    """A predictions frame with a random target, a ``model`` column with ``signal`` x target in it, and zero."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2020-01-01", periods=n_days)
    frame = pd.DataFrame(
        {
            "symbol": np.tile([f"S{i:03d}" for i in range(n_symbols)], n_days),
            "date": np.repeat(dates, n_symbols),
        }
    )
    frame["target"] = rng.normal(0, 0.02, len(frame))
    frame["model"] = signal * frame["target"] + rng.normal(0, 0.02, len(frame))
    frame["zero"] = 0.0
    return frame


def hand_frame() -> pd.DataFrame:
    """3 dates x 4 symbols, with predictions and targets chosen for the hand-computed backtest."""
    dates = pd.to_datetime(["2021-01-04", "2021-01-05", "2021-01-06"])
    pred = [[4, 3, 2, 1], [1, 4, 3, 2], [1, 4, 2, 3]]
    target = [[0.02, 0.01, -0.01, -0.03], [0.01, -0.02, 0.0, 0.03], [-0.01, 0.04, 0.02, 0.0]]
    return pd.DataFrame(
        {
            "symbol": list("ABCD") * 3,
            "date": np.repeat(dates, 4),
            "target": np.ravel(target),
            "pred": np.ravel(pred).astype(float),
        }
    )


# --------------------------------------------------------------------------------------------- metrics


def test_perfect_and_reversed_predictors_have_ic_plus_and_minus_one():
    frame = random_frame()
    frame["perfect"] = 3.0 * frame["target"] + 1.0  # any increasing affine map keeps IC 1
    frame["reversed"] = -frame["target"]
    for method in ("pearson", "spearman"):
        assert np.allclose(daily_ic(frame, "perfect", method), 1.0)
        assert np.allclose(daily_ic(frame, "reversed", method), -1.0)
    summary = summarize(frame, ["perfect", "reversed"])
    assert summary.loc["perfect", "ic"] == pytest.approx(1.0)
    assert summary.loc["reversed", "rank_ic"] == pytest.approx(-1.0)
    # 3t + 1 is always > 0 here, so its direction is right exactly where the target is up
    assert summary.loc["perfect", "direction_accuracy"] == pytest.approx((frame["target"] > 0).mean())
    assert summary.loc["reversed", "direction_accuracy"] == pytest.approx(0.0)
    assert summary.loc["reversed", "mse"] == pytest.approx(np.mean((2 * frame["target"]) ** 2))


def test_random_predictor_has_ic_near_zero():
    n_symbols, n_days = 50, 200
    frame = random_frame(n_symbols, n_days, seed=1)
    ic = daily_ic(frame, "model")
    assert len(ic) == n_days and ic.notna().all()
    # each daily IC has sd ~ 1/sqrt(n_symbols - 1), so their mean has sd ~ 1/sqrt(n_days * (n_symbols - 1))
    tolerance = 4 / math.sqrt(n_days * (n_symbols - 1))
    assert abs(ic.mean()) < tolerance
    assert ic.std() == pytest.approx(1 / math.sqrt(n_symbols - 1), rel=0.25)


def test_signal_predictor_has_positive_ic():
    frame = random_frame(50, 100, seed=2, signal=1.0)  # corr(model, target) = 1/sqrt(2)
    assert daily_ic(frame, "model").mean() == pytest.approx(1 / math.sqrt(2), abs=0.05)


def test_constant_predictor_gives_nan_not_an_error():
    frame = random_frame(10, 20)
    frame["const"] = 0.1  # a non-zero constant: its demeaned values can be off by rounding, not exactly 0
    for col in ("zero", "const"):
        for method in ("pearson", "spearman"):
            ic = daily_ic(frame, col, method)
            assert len(ic) == 20 and ic.isna().all() and np.isnan(ic.mean())
    summary = summarize(frame, ["zero", "model"])
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    zero = summary.loc["zero"]
    assert np.isnan(zero["ic"]) and np.isnan(zero["rank_ic"]) and np.isnan(zero["icir"])
    assert np.isnan(zero["direction_accuracy"])
    assert zero["n_dates"] == 0 and zero["n_rows"] == len(frame)
    assert zero["mse"] == pytest.approx(np.mean(frame["target"] ** 2))
    assert summary.loc["model", "n_dates"] == 20


def test_small_dates_nan_and_constant_target_dates_are_skipped():
    frame = random_frame(5, 4, seed=3)
    first, second, third = frame["date"].unique()[:3]
    frame = frame[~((frame["date"] == first) & frame["symbol"].isin(["S000", "S001", "S002"]))]  # 2 left
    frame.loc[frame["date"] == second, "model"] = np.nan  # no prediction at all on that date
    frame.loc[frame["date"] == third, "target"] = 0.01  # constant target
    frame.loc[frame.index[-1], "model"] = np.inf  # one bad row on the last date: 4 usable rows remain
    ic = daily_ic(frame, "model")
    assert ic.isna().tolist() == [True, True, True, False]
    last = frame[frame["date"] == frame["date"].max()].iloc[:-1]
    assert ic.iloc[-1] == pytest.approx(np.corrcoef(last["model"], last["target"])[0, 1])


def test_rank_ic_matches_scipy_spearman_per_date_with_ties():
    frame = random_frame(25, 15, seed=4)
    frame["target"] = frame["target"].round(2)  # many ties in the target
    frame["model"] = frame["model"].round(2)  # and in the prediction
    ic = daily_ic(frame, "model", "spearman")
    for date, day in frame.groupby("date"):
        expected = stats.spearmanr(day["model"], day["target"]).statistic
        assert ic.loc[date] == pytest.approx(expected, abs=1e-12)
    pearson = daily_ic(frame, "model", "pearson")
    for date, day in frame.groupby("date"):
        assert pearson.loc[date] == pytest.approx(stats.pearsonr(day["model"], day["target"]).statistic)


def test_direction_accuracy_hand_computed():
    frame = pd.DataFrame(
        {
            "symbol": list("ABCDEF"),
            "date": pd.to_datetime(["2021-01-04"] * 6),
            "pred": [1.0, -1.0, 0.0, 2.0, 3.0, np.nan],
            "target": [0.5, 0.5, 1.0, -1.0, 0.0, 1.0],
        }
    )
    # counted: A (+,+) right, B (-,+) wrong, D (+,-) wrong; C has no prediction side, E no return, F no pred
    assert direction_accuracy(frame, "pred") == pytest.approx(1 / 3)
    assert summarize(frame, ["pred"]).loc["pred", "direction_accuracy"] == pytest.approx(1 / 3)


def test_unknown_column_and_method_raise():
    frame = random_frame(5, 5)
    with pytest.raises(KeyError, match="nope"):
        daily_ic(frame, "nope")
    with pytest.raises(ValueError, match="kendall"):
        daily_ic(frame, "model", "kendall")


# -------------------------------------------------------------------------------------------- backtest


def test_backtest_hand_computed_returns_turnover_and_cost():
    result = long_short_backtest(hand_frame(), "pred", quantile=0.25, cost_bps=10.0)
    # date 1: long A, short D -> .02 + .03; date 2: long B, short A -> -.02 - .01; date 3: same book -> .04 + .01
    assert result.gross.tolist() == pytest.approx([0.05, -0.03, 0.05])
    # opening 2; then A +1 -> -1 (2), B 0 -> +1 (1), D -1 -> 0 (1); then nothing changes
    assert result.turnover.tolist() == pytest.approx([2.0, 4.0, 0.0])
    assert result.returns.tolist() == pytest.approx([0.048, -0.034, 0.05])
    assert result.equity.tolist() == pytest.approx([1.048, 1.048 * 0.966, 1.048 * 0.966 * 1.05])
    expected_weights = [[1, 0, 0, -1], [-1, 1, 0, 0], [-1, 1, 0, 0]]
    assert result.weights.to_numpy().tolist() == expected_weights
    s = result.summary
    assert set(s) == set(SUMMARY_KEYS)
    net = np.array([0.048, -0.034, 0.05])
    assert s["annualized_return"] == pytest.approx(net.mean() * 252)
    assert s["annualized_vol"] == pytest.approx(net.std(ddof=1) * math.sqrt(252))
    assert s["sharpe"] == pytest.approx(net.mean() / net.std(ddof=1) * math.sqrt(252))
    assert s["max_drawdown"] == pytest.approx(-0.034)
    assert s["mean_turnover"] == pytest.approx(2.0)
    assert s["hit_rate"] == pytest.approx(2 / 3)
    assert s["n_days"] == 3 and s["n_active_days"] == 3


def test_backtest_symbols_are_aligned_not_positional():
    frame = hand_frame()
    shuffled = frame.sample(frac=1.0, random_state=0)  # row order must not matter
    a = long_short_backtest(frame, "pred", quantile=0.25, cost_bps=10.0)
    b = long_short_backtest(shuffled, "pred", quantile=0.25, cost_bps=10.0)
    pd.testing.assert_series_equal(a.returns, b.returns)
    pd.testing.assert_series_equal(a.turnover, b.turnover)


def test_ties_share_slots_and_constant_predictions_do_not_trade():
    frame = pd.DataFrame(
        {
            "symbol": list("ABCD") * 2,
            "date": np.repeat(pd.to_datetime(["2021-01-04", "2021-01-05"]), 4),
            "target": [0.01, 0.02, 0.03, -0.01, 0.01, 0.02, 0.03, -0.01],
            "pred": [1.0, 1.0, 1.0, 0.0, 5.0, 5.0, 5.0, 5.0],
        }
    )
    w = quantile_weights(frame, "pred", 0.25)
    # day 1: A, B, C tie for the single long slot (1/3 each); D is the short. Day 2: everything tied.
    assert w.iloc[0].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, -1.0])
    assert w.iloc[1].tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0])
    result = long_short_backtest(frame, "pred", quantile=0.25, cost_bps=0.0)
    assert result.gross.iloc[0] == pytest.approx(0.02 + 0.01)
    assert result.turnover.iloc[1] == pytest.approx(2.0)  # closing the book
    zero = long_short_backtest(random_frame(10, 30), "zero")
    assert (zero.returns == 0).all() and (zero.turnover == 0).all()
    assert zero.summary["n_active_days"] == 0 and np.isnan(zero.summary["sharpe"])


def test_dates_with_too_few_symbols_stay_flat():
    frame = hand_frame()
    frame = frame[~((frame["date"] == frame["date"].iloc[4]) & (frame["symbol"] != "A"))]  # date 2: A only
    result = long_short_backtest(frame, "pred", quantile=0.25, cost_bps=0.0)
    assert len(result.returns) == 3
    assert result.gross.iloc[1] == 0.0
    assert (result.weights.iloc[1] == 0).all()
    assert result.turnover.tolist() == pytest.approx([2.0, 2.0, 2.0])  # open, close, reopen
    assert result.summary["n_active_days"] == 2


def test_quantile_sets_the_number_of_positions():
    frame = random_frame(10, 3, seed=5)
    w = quantile_weights(frame, "model", 0.2)  # k = 2 of 10 on each side
    assert ((w > 0).sum(axis=1) == 2).all() and ((w < 0).sum(axis=1) == 2).all()
    assert np.allclose(w.sum(axis=1), 0.0) and np.allclose(w.abs().sum(axis=1), 2.0)
    with pytest.raises(ValueError, match="quantile"):
        long_short_backtest(frame, "model", quantile=0.6)


def test_perfect_foresight_has_high_sharpe_and_costs_lower_returns_monotonically():
    frame = random_frame(30, 120, seed=6)
    frame["oracle"] = frame["target"]
    results = [long_short_backtest(frame, "oracle", 0.2, cost_bps) for cost_bps in (0.0, 5.0, 20.0, 100.0)]
    assert results[0].summary["sharpe"] > 10
    assert results[0].summary["hit_rate"] == 1.0
    annual = [r.summary["annualized_return"] for r in results]
    assert all(a > b for a, b in zip(annual, annual[1:], strict=False))
    for r in results[1:]:  # every day's net return drops by exactly turnover x cost
        assert (r.returns <= results[0].returns + 1e-15).all()
        pd.testing.assert_series_equal(r.gross, results[0].gross)
    random_sharpe = long_short_backtest(frame, "model", 0.2, 0.0).summary["sharpe"]
    assert random_sharpe < results[0].summary["sharpe"] / 3


def band_frame(drop: tuple[str, str] | None = None) -> pd.DataFrame:
    """3 dates x 5 symbols whose ranks drift, so that a holding band keeps names the daily book trades away."""
    dates = pd.to_datetime(["2021-01-04", "2021-01-05", "2021-01-06"])
    pred = [[5, 4, 3, 2, 1], [4, 5, 3, 1, 2], [3, 4, 5, 2, 1]]
    frame = pd.DataFrame({"symbol": list("ABCDE") * 3, "date": np.repeat(dates, 5),
                          "target": np.linspace(-0.02, 0.02, 15), "pred": np.ravel(pred).astype(float)})  # fmt: skip
    if drop:
        frame = frame[~((frame["symbol"] == drop[0]) & (frame["date"] == pd.Timestamp(drop[1])))]
    return frame


def test_a_holding_band_keeps_names_until_they_leave_it():
    # quantile 0.2 of 5: one name enters each side; hold 0.4: a name stays while it ranks in the top (bottom) two
    daily = long_short_backtest(band_frame(), "pred", quantile=0.2, cost_bps=0.0)
    band = long_short_backtest(band_frame(), "pred", quantile=0.2, cost_bps=0.0, hold_quantile=0.4)
    assert daily.weights.to_numpy().tolist() == [[1, 0, 0, 0, -1], [0, 1, 0, -1, 0], [0, 0, 1, 0, -1]]
    # date 2: A slipped to second and stays beside the new top B; E slipped to second-lowest and stays beside D.
    # date 3: A fell to third and is sold; B (second) stays beside the new top C; D and E stay at the bottom.
    half = 0.5
    assert band.weights.to_numpy().tolist() == [[1, 0, 0, 0, -1], [half, half, 0, -half, -half],
                                                [0, half, half, -half, -half]]  # fmt: skip
    assert daily.turnover.tolist() == pytest.approx([2.0, 4.0, 4.0])
    assert band.turnover.tolist() == pytest.approx([2.0, 2.0, 1.0])
    # a held name without a row on a date cannot be traded that day: it is closed, and the band works on the rest
    gone = long_short_backtest(band_frame(drop=("B", "2021-01-06")), "pred", 0.2, 0.0, hold_quantile=0.4)
    assert gone.weights.iloc[2].tolist() == [0, 0, 1, 0, -1]  # of A, C, D, E: one name a side, D no longer kept


def test_a_band_as_wide_as_the_quantile_is_the_daily_book_and_a_narrower_one_is_refused():
    from raycast.config import EvaluateConfig

    frame = random_frame(25, 40, seed=3, signal=0.5)
    daily = long_short_backtest(frame, "model", 0.2, 10.0)
    same = long_short_backtest(frame, "model", 0.2, 10.0, hold_quantile=0.2)
    pd.testing.assert_frame_equal(daily.weights, same.weights)
    pd.testing.assert_series_equal(daily.returns, same.returns)
    with pytest.raises(ValueError, match="hold_quantile"):
        long_short_backtest(frame, "model", 0.2, 10.0, hold_quantile=0.1)
    with pytest.raises(ValueError, match="hold_quantile .0.1. is below evaluate.quantile .0.2."):
        EvaluateConfig(hold_quantile=0.1)
    with pytest.raises(ValueError, match="hold_quantiles"):
        EvaluateConfig(hold_quantiles=[0.3, 0.7])


def test_a_holding_band_keeps_a_lasting_edge_that_daily_trading_gives_to_costs():
    # a signal that lasts weeks (an AR(1) score per symbol), seen through daily noise: the daily book chases the
    # noise and pays for it; a band keeps the names whose edge is still there
    rng = np.random.default_rng(4)
    n_symbols, n_days = 50, 250
    score = np.zeros((n_days, n_symbols))
    for t in range(1, n_days):
        score[t] = 0.97 * score[t - 1] + rng.normal(0, 0.25, n_symbols)
    frame = pd.DataFrame({"symbol": np.tile([f"S{i:02d}" for i in range(n_symbols)], n_days),
                          "date": np.repeat(pd.bdate_range("2020-01-01", periods=n_days), n_symbols)})  # fmt: skip
    frame["target"] = 0.002 * score.ravel() + rng.normal(0, 0.02, score.size)
    frame["model"] = score.ravel() + rng.normal(0, 1.0, score.size)
    frame["spread_bps"] = 10.0
    table = holding_bands(frame, ["model"], [0.3, 0.5, 0.1], quantile=0.2, cost_bps=5.0, spread_col="spread_bps")
    assert list(table.columns) == ["sharpe daily", "turnover daily", "sharpe hold 0.3", "turnover hold 0.3",
                                   "sharpe hold 0.5", "turnover hold 0.5"]  # fmt: skip
    row = table.loc["model"]
    assert row["turnover daily"] > row["turnover hold 0.3"] > row["turnover hold 0.5"]
    assert row["sharpe hold 0.5"] > row["sharpe daily"] + 2  # 3.1 against 0.1 with this seed
    one = long_short_backtest(frame, "model", 0.2, 5.0, spread_col="spread_bps", hold_quantile=0.5)
    assert row["sharpe hold 0.5"] == pytest.approx(one.summary["sharpe"])
    daily = long_short_backtest(frame, "model", 0.2, 5.0, 1, "spread_bps")
    assert row["sharpe daily"] == pytest.approx(daily.summary["sharpe"])
    # the band's book keeps more of its edge per unit traded: its breakeven cost is higher
    breakeven = [cost_sensitivity(frame, ["model"], [0.0], 0.2, hold_quantile=h).loc["model", "breakeven_bps"]
                 for h in (None, 0.5)]  # fmt: skip
    assert breakeven[1] > breakeven[0]


def test_horizon_above_one_warns_and_does_not_overlap():
    frame = random_frame(10, 20, seed=7)
    with pytest.warns(UserWarning, match="overlap"):
        result = long_short_backtest(frame, "model", horizon=5)
    assert len(result.returns) == 4  # dates 0, 5, 10, 15
    assert result.returns.index.equals(pd.DatetimeIndex(frame["date"].unique()[::5], name="date"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        long_short_backtest(frame, "model", horizon=1)


def test_backtest_table_has_one_row_per_predictor():
    frame = random_frame(10, 20)
    table = backtest_table({c: long_short_backtest(frame, c) for c in ("model", "zero")})
    assert list(table.index) == ["model", "zero"] and list(table.columns) == list(SUMMARY_KEYS)


# ------------------------------------------------------------------------------------------- baselines


def test_zero_and_momentum_baselines_align_to_the_frame():
    frame = random_frame(5, 4).set_index(pd.RangeIndex(100, 120))
    frame["return_1d"] = np.arange(20) / 100
    zero = zero_baseline(frame)
    assert zero.index.equals(frame.index) and (zero == 0).all()
    momentum = momentum_baseline(frame)
    assert momentum.index.equals(frame.index) and momentum.tolist() == pytest.approx(frame["return_1d"].tolist())
    with pytest.raises(KeyError, match="return_1d"):
        momentum_baseline(frame.drop(columns="return_1d"))


def test_ridge_recovers_known_coefficients():
    rng = np.random.default_rng(8)
    coef = np.array([0.5, -1.0, 0.0, 2.0])
    X = rng.normal(size=(5000, 4))
    y = X @ coef + 0.3 + rng.normal(0, 0.01, 5000)
    model = fit_ridge(X, y, alpha=0.0)
    assert model.coef == pytest.approx(coef, abs=1e-3)
    assert model.intercept == pytest.approx(0.3, abs=1e-3)
    assert model.predict(X[:3]) == pytest.approx(X[:3] @ coef + 0.3, abs=1e-2)

    # windows: only the last day of each window is used, earlier days are noise
    windows = rng.normal(size=(5000, 6, 4))
    windows[:, -1, :] = X
    assert fit_ridge(windows, y, alpha=0.0).coef == pytest.approx(coef, abs=1e-3)

    # the penalty shrinks the slope but not the intercept; it matches the centered normal equations
    shrunk = fit_ridge(X, y, alpha=5000.0)
    xc, yc = X - X.mean(0), y - y.mean()
    assert shrunk.coef == pytest.approx(np.linalg.solve(xc.T @ xc + 5000 * np.eye(4), xc.T @ yc))
    assert np.linalg.norm(shrunk.coef) < np.linalg.norm(model.coef)
    assert shrunk.intercept == pytest.approx(y.mean() - X.mean(0) @ shrunk.coef)

    # rows with NaN are ignored in training; predictions are a Series aligned to the given index
    y_nan = y.copy()
    y_nan[:10] = np.nan
    series = ridge_baseline(X, y_nan, X[:5], alpha=0.0, index=pd.Index(list("abcde")))
    assert list(series.index) == list("abcde") and series.name == "ridge"
    with pytest.raises(ValueError, match="features"):
        model.predict(X[:, :3])


# ---------------------------------------------------------------------------------------- walk-forward


def test_aggregate_folds_mean_and_std():
    fold1 = pd.DataFrame({"ic": [0.1, np.nan], "mse": [1.0, 2.0], "n_dates": [10, 0]}, index=["lstm", "zero"])
    fold2 = pd.DataFrame({"ic": [0.3, np.nan], "mse": [3.0, 4.0], "n_dates": [12, 0]}, index=["lstm", "zero"])
    fold3 = pd.DataFrame({"ic": [0.2], "mse": [5.0], "n_dates": [8]}, index=["lstm"])
    agg = aggregate_folds([fold1, fold2, fold3])
    assert list(agg.index) == ["lstm", "zero"]
    assert list(agg.columns) == ["ic_mean", "ic_std", "mse_mean", "mse_std", "n_dates_mean", "n_dates_std",
                                 "n_folds"]
    assert agg.loc["lstm", "ic_mean"] == pytest.approx(0.2)
    assert agg.loc["lstm", "ic_std"] == pytest.approx(0.1)
    assert agg.loc["lstm", "mse_mean"] == pytest.approx(3.0)
    assert agg.loc["zero", "mse_std"] == pytest.approx(np.std([2.0, 4.0], ddof=1))
    assert np.isnan(agg.loc["zero", "ic_mean"])
    assert agg["n_folds"].tolist() == [3, 2]
    text = format_folds(agg)
    assert "0.2 ± 0.1" in text and "| predictor |" in text
    with pytest.raises(ValueError):
        aggregate_folds([])


def test_aggregate_real_summaries():
    summaries = [summarize(random_frame(10, 20, seed=s, signal=1.0), ["model", "zero"]) for s in range(3)]
    agg = aggregate_folds(summaries)
    ics = [s.loc["model", "ic"] for s in summaries]
    assert agg.loc["model", "ic_mean"] == pytest.approx(np.mean(ics))
    assert agg.loc["model", "ic_std"] == pytest.approx(np.std(ics, ddof=1))
    assert "rank_ic_mean" in agg.columns


def test_markdown_table_formatting():
    df = pd.DataFrame({"a": [1.23456789, np.nan], "b": ["x|y", "z"], "n": [3, 4]}, index=["r1", "r2"])
    df.index.name = "row"
    lines = markdown_table(df, digits=3).splitlines()
    assert lines[0] == "| row | a | b | n |"
    assert lines[1] == "| --- | ---: | --- | ---: |"
    assert lines[2] == "| r1 | 1.23 | x\\|y | 3 |"
    assert lines[3] == "| r2 | - | z | 4 |"


# ---------------------------------------------------------------------------------------------- report


def test_report_writes_markdown_and_plots(tmp_path):
    frame = random_frame(20, 60, seed=9, signal=0.5)
    frame["momentum"] = np.random.default_rng(0).normal(0, 0.02, len(frame))
    cols = ["model", "momentum", "zero"]
    history = {
        "lstm": [{"train_loss": 1.0, "val_loss": 1.1, "val_ic": 0.01}, {"train_loss": 0.9, "val_loss": 1.0}],
        "attention": [  # as read back from JSON: an epoch number, and a None where a metric was missing
            {"epoch": 1, "train_loss": 1.0, "val_ic": None},
            {"epoch": 2, "train_loss": 0.8, "val_ic": 0.1},
        ],
        "cnn": [{"train_loss": 1.2, "val_loss": 1.3, "val_ic": 0.02}],
    }
    weights = frame[["symbol", "date"]].assign(w_lstm=0.2, w_cnn=0.3, w_attention=0.5)
    attention = np.random.default_rng(1).dirichlet(np.ones(30), size=30)
    inputs = ReportInputs(
        val_metrics=summarize(frame, cols),
        test_metrics=summarize(frame, cols),
        backtests={c: long_short_backtest(frame, c) for c in cols},
        quantile=0.2,
        cost_bps=5.0,
        walk_forward=aggregate_folds([summarize(frame, cols), summarize(frame.iloc[::2], cols)]),
        test_predictions=frame,
        data_range=(pd.Timestamp("2020-01-01"), "2020-03-24"),
        splits={"train": "2020-01-01 .. 2020-02-01", "val": "a", "test": "b"},
        canary="planted signal recovered: IC 0.12 > 0.05",
        training_history=history,
        ensemble_weights=weights,
        attention=attention,
    )
    path = write_report(tmp_path / "run", inputs)
    assert path == tmp_path / "run" / "report.md"
    text = path.read_text()
    for needle in ("rank_ic", "icir", "direction_accuracy", "sharpe", "max_drawdown", "mean_turnover",
                   "Metrics on validation", "Metrics on test", "Walk-forward", "±", "Canary",
                   "planted signal recovered", "2020-01-01 .. 2020-03-24", "| train |"):
        assert needle in text, needle
    for name in PLOT_FILES.values():
        png = tmp_path / "run" / name
        assert png.is_file() and png.stat().st_size > 1000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in text


def test_ensemble_against_its_best_member_per_fold_and_overall(tmp_path):
    ic = {  # fold -> predictor -> test IC: the best member changes between folds
        0: {"lstm": 0.05, "cnn": 0.03, "ensemble": 0.06, "ridge": 0.04, "lightgbm": 0.045, "zero": np.nan},
        1: {"lstm": 0.02, "cnn": 0.07, "ensemble": 0.05, "ridge": 0.03, "lightgbm": 0.02, "zero": np.nan},
    }
    per_fold = pd.DataFrame([{"fold": k, "predictor": p, "ic": v} for k, row in ic.items() for p, v in row.items()])
    table = ensemble_vs_members(per_fold, ["lstm", "cnn", "attention"])  # a member without scores is skipped
    assert list(table.index) == [0, 1, "overall"]
    assert list(table["best member"]) == ["lstm", "cnn", "cnn"]  # overall: cnn's mean 0.05 beats lstm's 0.035
    assert table["ensemble - best"].tolist() == pytest.approx([0.01, -0.02, 0.055 - 0.05])
    assert table["ensemble >= best"].tolist() == ["True", "False", "1 of 2 folds"]
    assert table.loc["overall", "ridge"] == pytest.approx(0.035)
    assert table.loc["overall", "lightgbm"] == pytest.approx(0.0325)
    with pytest.raises(ValueError, match="ensemble"):
        ensemble_vs_members(per_fold[per_fold.predictor != "ensemble"], ["lstm"])

    frame = random_frame(10, 20)
    text = write_report(tmp_path, ReportInputs(test_metrics=summarize(frame, ["model"]), ensemble_vs_best=table)).read_text()
    assert "## Ensemble against its best member (test IC)" in text
    assert "| overall | 0.055 | cnn | 0.05 | 0.005 | 0.035 | 0.0325 | 1 of 2 folds |" in text


def test_report_skips_missing_sections(tmp_path):
    frame = random_frame(10, 20)
    path = write_report(tmp_path, ReportInputs(test_metrics=summarize(frame, ["model"])))
    text = path.read_text()
    assert "Metrics on test" in text and "rank_ic" in text
    for absent in ("Metrics on validation", "backtest", "Walk-forward", "Canary", "## Plots", "best member"):
        assert absent not in text
    assert not list(tmp_path.glob("*.png"))


# ------------------------------------------------------------------------------------ a tradable evaluation


def market_frame() -> pd.DataFrame:
    """6 rows on one date, each failing one universe rule or none; market columns as the feature rows carry them."""
    return pd.DataFrame(
        {
            "symbol": list("ABCDEF"),
            "date": pd.to_datetime(["2021-01-04"] * 6),
            "target": [0.01, 0.02, -0.01, 0.0, np.nan, 0.03],
            "close": [10.0, 0.5, 10.0, 10.0, 0.5, np.nan],
            "volume": [1e5, 1e5, 0.0, 1e5, 1e5, 1e5],
            "dollar_volume_20d": [2e6, 2e6, 2e6, 5e5, 2e6, 2e6],
            "entry_volume": [1e5, 1e5, 1e5, 1e5, 1e5, np.nan],
        }
    )


def test_tradable_rows_count_each_reason_and_keep_only_tradable_rows():
    from raycast.config import UniverseConfig
    from raycast.evaluate.universe import tradable_rows

    result = tradable_rows(market_frame(), UniverseConfig(min_price=1.0, min_dollar_volume=1e6))
    # A passes; B is a penny stock; C did not trade at t; D is illiquid; E has no target (not counted);
    # F has no known close and no entry-day volume
    assert result.mask.tolist() == [True, False, False, False, False, False]
    assert result.counts == {"rows": 5, "price": 2, "liquidity": 1, "zero_volume": 1, "entry_volume": 1,
                             "excluded": 4, "tradable": 1}  # fmt: skip
    loose = tradable_rows(market_frame(), UniverseConfig(min_price=0, min_dollar_volume=0, skip_zero_volume=False))
    assert loose.mask.tolist() == [True, True, True, True, False, True] and loose.counts["excluded"] == 0
    old = tradable_rows(market_frame()[["symbol", "date", "target"]], UniverseConfig())
    assert old.unchecked == ("price", "liquidity", "zero_volume", "entry_volume") and old.mask.sum() == 5


def test_spread_buckets_and_their_cost_in_the_backtest():
    from raycast.config import EvaluateConfig, SpreadBucket
    from raycast.evaluate.universe import spread_bps

    buckets = [SpreadBucket(min_dollar_volume=0, bps=30), SpreadBucket(min_dollar_volume=1e7, bps=10),
               SpreadBucket(min_dollar_volume=1e8, bps=2)]  # fmt: skip
    assert spread_bps(np.array([5e6, 1e7, 5e7, 2e8, np.nan]), buckets).tolist() == [30, 10, 10, 2, 30]
    assert spread_bps(np.array([1.0]), []).tolist() == [0.0]
    with pytest.raises(ValueError, match="ascending"):
        EvaluateConfig(spread=[{"min_dollar_volume": 1e7, "bps": 1}, {"min_dollar_volume": 0, "bps": 2}])

    frame = hand_frame()
    frame["spread_bps"] = np.tile([10.0, 20.0, 30.0, 40.0], 3)  # A..D
    result = long_short_backtest(frame, "pred", quantile=0.25, cost_bps=5.0, spread_col="spread_bps")
    # day 1 opens A (+1) and D (-1): 1 x (5 + 10) + 1 x (5 + 40); day 2: A 2 x 15, B 1 x 25, D 1 x 45; day 3 none
    assert (result.gross - result.returns).tolist() == pytest.approx([60e-4, 100e-4, 0.0])


def test_a_book_that_loses_everything_stops_at_zero():
    frame = hand_frame()
    frame.loc[(frame["date"] == frame["date"].iloc[4]) & (frame["symbol"] == "B"), "target"] = -1.5  # a bad tick
    result = long_short_backtest(frame, "pred", quantile=0.25, cost_bps=0.0)
    assert result.returns.tolist() == pytest.approx([0.05, -1.0, 0.0])
    assert result.equity.tolist() == pytest.approx([1.05, 0.0, 0.0])  # never below zero
    assert result.stopped_at == frame["date"].iloc[4]
    assert result.summary["wiped_out"] and result.summary["max_drawdown"] == pytest.approx(-1.0)
    assert (result.weights.iloc[2] == 0).all() and result.turnover.iloc[2] == 0.0
    days = extreme_days(result, threshold=0.1)
    assert list(days.index) == [frame["date"].iloc[4]]
    assert days["symbols"].iloc[0].startswith("B -1.5")  # the symbol behind the loss comes first

    calm = long_short_backtest(hand_frame(), "pred", quantile=0.25, cost_bps=0.0)
    assert not calm.summary["wiped_out"] and calm.stopped_at is None
    assert len(extreme_days(calm, threshold=0.1)) == 0 and len(extreme_days(calm, threshold=0.04)) == 2


def test_cost_sensitivity_falls_with_cost_and_breakeven_zeroes_the_mean_return():
    frame = random_frame(30, 120, seed=11, signal=0.3)
    table = cost_sensitivity(frame, ["model"], [0.0, 5.0, 20.0, 50.0], quantile=0.2)
    sharpe = table.loc["model", ["sharpe @ 0 bps", "sharpe @ 5 bps", "sharpe @ 20 bps", "sharpe @ 50 bps"]]
    assert sharpe.is_monotonic_decreasing and sharpe.iloc[0] > 0
    assert sharpe.iloc[0] == pytest.approx(long_short_backtest(frame, "model", 0.2, 0.0).summary["sharpe"])
    breakeven = table.loc["model", "breakeven_bps"]
    assert breakeven > 0
    assert long_short_backtest(frame, "model", 0.2, breakeven).returns.mean() == pytest.approx(0.0, abs=1e-12)


def test_implausible_numbers_get_a_warning_box_with_causes():
    from raycast.evaluate.sanity import RunContext, implausible, warning_box

    metrics = pd.DataFrame({"ic": [0.18, 0.03, np.nan], "rank_ic": [0.17, 0.02, np.nan]},
                           index=["ridge", "lstm", "zero"])  # fmt: skip
    findings = implausible(metrics, {"ridge": {"sharpe": 14.0}, "lstm": {"sharpe": 1.2, "wiped_out": True}}, 0.1, 3.0)
    assert len(findings) == 4
    assert any("ridge" in f and "Sharpe 14" in f for f in findings)
    assert any("lstm" in f and "lost everything" in f for f in findings)
    assert not any("lstm" in f and "ic" in f for f in findings)
    box = "\n".join(warning_box(findings, RunContext(label_delay=0, symbols_per_date=4, flagged_days=3,
                                                     flag_threshold=0.1, universe="close >= 1")))  # fmt: skip
    assert box.startswith("> **Warning")
    for needle in ("label_delay is 0", "Untradable", "3 book day(s)", "median of 4 tradable symbols", "(tiny)"):
        assert needle in box, needle
    assert warning_box(implausible(metrics.iloc[1:], {"lstm": {"sharpe": 1.2}}, 0.1, 3.0), RunContext()) == []


def test_bid_ask_bounce_is_skill_at_the_same_close_and_none_at_the_next():
    """Bounce on printed closes makes the same-close return revert: a label traded at the signal's own close
    (label_delay 0) shows skill that a label entered one close later (the default) does not have."""
    from raycast.config import SyntheticConfig
    from raycast.data.synthetic import generate_synthetic
    from raycast.features.normalize import fit_normalizer
    from raycast.features.spec import ALL_FEATURES, compute_symbol_features

    n_symbols = 40
    bars = generate_synthetic(SyntheticConfig(n_symbols=n_symbols, n_days=300, signal_strength=0.0, bounce_bps=60)).bars
    results = {}
    for delay in (0, 1):
        rows = pd.concat(
            [compute_symbol_features(b, label_delay=delay) for _, b in bars.groupby("symbol")], ignore_index=True
        )
        rows["reversal"] = -rows["return_1d"]
        dates = np.sort(rows["date"].unique())
        train, test = rows[rows["date"] < dates[len(dates) // 2]], rows[rows["date"] > dates[len(dates) // 2 + 2]]
        train = train[train["target"].notna()]
        normalizer = fit_normalizer(train[list(ALL_FEATURES)].to_numpy(), list(ALL_FEATURES))
        ridge = fit_ridge(normalizer.transform(train[list(ALL_FEATURES)].to_numpy(np.float32)), train["target"])
        test = test.assign(ridge=ridge.predict(normalizer.transform(test[list(ALL_FEATURES)].to_numpy(np.float32))))
        results[delay] = (summarize(test, ["reversal", "ridge"]),
                          long_short_backtest(test, "reversal", cost_bps=0.0).summary)  # fmt: skip
    noise = 1 / math.sqrt(results[1][0].loc["reversal", "n_dates"] * (n_symbols - 1))  # sd of a mean daily IC
    same_close, next_close = results[0][0], results[1][0]
    assert same_close.loc["reversal", "ic"] > 5 * noise and same_close.loc["ridge", "ic"] > 5 * noise
    assert results[0][1]["annualized_return"] > 0 and results[0][1]["sharpe"] > 2
    for name in ("reversal", "ridge"):
        assert abs(next_close.loc[name, "ic"]) < 3 * noise, (name, next_close.loc[name, "ic"], noise)
    assert results[1][1]["sharpe"] < results[0][1]["sharpe"] / 3


def lagged_signal_blocks(n_symbols=20, n_days=250, window=10, seed=12):
    """Feature rows (sorted by symbol, date) whose target is feature 0 two rows earlier: only a lag-2 model sees it."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_symbols * n_days, 3)).astype(np.float32)
    y = np.full(len(x), np.nan, dtype=np.float32)
    for s in range(n_symbols):
        rows = np.arange(s * n_days, (s + 1) * n_days)
        y[rows[2:]] = 0.01 * x[rows[:-2], 0] + rng.normal(0, 0.01, n_days - 2)
    dates = np.tile(np.arange(n_days), n_symbols)
    ends = np.concatenate([np.arange(s * n_days + window - 1, (s + 1) * n_days) for s in range(n_symbols)])
    return x, y, dates, ends, window


def test_lightgbm_sees_lagged_days_and_is_deterministic():
    from raycast.config import LightGBMConfig
    from raycast.evaluate.lightgbm_baseline import fit_lightgbm

    x, y, dates, ends, window = lagged_signal_blocks()
    train, val, test = (ends[(dates[ends] >= a) & (dates[ends] < b)] for a, b in ((0, 150), (152, 200), (202, 250)))

    def test_ic(cfg):
        model = fit_lightgbm(x, y, train, val, dates[val], cfg, window)
        frame = pd.DataFrame({"symbol": test // 250, "date": pd.to_datetime(dates[test], unit="D"),
                              "target": y[test], "lgb": model.predict(x, test)})  # fmt: skip
        return summarize(frame, ["lgb"]).loc["lgb", "ic"], model

    cfg = LightGBMConfig(lags=[1, 2], num_boost_round=60, min_data_in_leaf=20, early_stopping_rounds=10)
    ic, model = test_ic(cfg)
    assert ic > 0.4 and model.train_seconds > 0 and 1 <= model.best_iteration <= 60
    again = fit_lightgbm(x, y, train, val, dates[val], cfg, window)
    assert np.array_equal(again.predict(x, test), model.predict(x, test))  # same seed, same trees
    blind, _ = test_ic(cfg.model_copy(update={"lags": []}))  # the last day alone holds nothing
    assert abs(blind) < 0.1
    l2_ic, _ = test_ic(cfg.model_copy(update={"early_stop_metric": "l2"}))
    assert l2_ic > 0.4
    with pytest.raises(ValueError, match="shorter than the window"):
        fit_lightgbm(x, y, train, val, dates[val], LightGBMConfig(lags=[10]), window)
    with pytest.raises(ValueError, match="distinct positive"):
        LightGBMConfig(lags=[0, 1])


# ---------------------------------------------------------------------------------------- end to end


def test_evaluate_version_scores_tradable_rows_beside_lightgbm(registered_model):
    import json

    from raycast.evaluate.evaluate import evaluate_version
    from raycast.registry import load_predictor

    cfg = registered_model
    frame = pd.read_parquet(next((Path(cfg.storage) / "features").glob("v-*/rows")))
    liquidity = float(frame["dollar_volume_20d"].median())  # about half the rows are too illiquid to trade
    cfg = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={
        "universe": cfg.evaluate.universe.model_copy(update={"min_dollar_volume": liquidity}),
        "lightgbm": cfg.evaluate.lightgbm.model_copy(update={"num_boost_round": 20}),
    })})  # fmt: skip
    report = evaluate_version(cfg)
    text = Path(report).read_text()
    for needle in ("## Tradable universe", "| liquidity |", "### Cost sensitivity", "sharpe @ 50 bps",
                   "breakeven_bps", "| lightgbm |", "## Baseline training", "half-spread", "### Book days",
                   "## Ensemble against its best member", "| test |", "## Skill against noise (test)",
                   "- ensemble: test IC", "against its best member", "against lightgbm", "long-short Sharpe",
                   "### Holding band", "sharpe hold 0.4", "Picked for the ensemble on the validation period"):
        assert needle in text, needle
    spec = load_predictor(cfg.storage, cfg.serve.version).spec
    metrics = spec["metrics"]
    noise = metrics["significance"]
    assert "zero" not in noise and noise["ensemble"]["n_dates"] == metrics["test"]["ensemble"]["n_dates"]
    assert noise["lightgbm"]["ic"] == pytest.approx(metrics["test"]["lightgbm"]["ic"])
    test = metrics["test"]
    assert noise["cnn"]["ensemble - it"] == pytest.approx(test["ensemble"]["ic"] - test["cnn"]["ic"])
    universe = metrics["universe"]
    assert 0 < universe["liquidity"] < universe["rows"]
    assert universe["tradable"] == universe["rows"] - universe["excluded"]
    assert metrics["test"]["lightgbm"]["n_rows"] == universe["tradable"]  # metrics see tradable rows only
    assert metrics["baseline_training"]["lightgbm"]["train_seconds"] > 0
    bands = metrics["holding_bands"]
    assert bands["ensemble"]["sharpe daily"] == pytest.approx(metrics["backtest"]["ensemble"]["sharpe"])
    assert bands["ensemble"]["turnover hold 0.5"] < bands["ensemble"]["turnover daily"]
    picked = metrics["holding_band_on_validation"]
    assert picked["band"] in {"daily", "hold 0.3", "hold 0.4", "hold 0.5"}
    column = "sharpe daily" if picked["band"] == "daily" else f"sharpe {picked['band']}"
    assert picked["test_sharpe"] == pytest.approx(bands["ensemble"][column])
    saved = pd.read_parquet(Path(report).parent / "test_predictions.parquet")
    assert saved["tradable"].sum() == universe["tradable"]
    assert (saved.loc[saved["tradable"], "dollar_volume_20d"] >= liquidity).all()
    json.dumps(metrics)  # the registry holds plain JSON


def test_walk_forward_folds_default_to_three_and_follow_the_datasets_label():
    from raycast.config import RaycastConfig
    from raycast.evaluate.evaluate import DEFAULT_FOLDS, walk_forward_folds

    dates = pd.Series(pd.bdate_range("2015-01-01", periods=900))
    cfg = RaycastConfig()
    assert cfg.evaluate.mode == "walk_forward" and cfg.features.walk_forward.folds == 0
    folds = walk_forward_folds(cfg, dates, {"label_delay": 1, "horizon": 1})
    assert len(folds) == DEFAULT_FOLDS == 3
    for a, b in zip(folds, folds[1:], strict=False):
        assert a.test.end < b.test.start and a.train.start == b.train.start and a.train.end < b.train.end
    # the embargo spans the dataset's own label: delay 3 + horizon 1 dates between a fold's periods
    wide = walk_forward_folds(cfg, dates, {"label_delay": 3, "horizon": 1})[0]
    between = dates[(dates > wide.val.end) & (dates < wide.test.start)]
    assert len(between) == 4
    two = cfg.model_copy(update={"features": cfg.features.model_copy(update={
        "walk_forward": cfg.features.walk_forward.model_copy(update={"folds": 2})})})  # fmt: skip
    assert len(walk_forward_folds(two, dates, {})) == 2
    five = two.model_copy(update={"evaluate": two.evaluate.model_copy(update={"folds": 5})})
    assert len(walk_forward_folds(five, dates, {})) == 5


@pytest.mark.slow
def test_raycast_evaluate_reports_walk_forward_by_default(ray_session, tmp_path):
    """`raycast evaluate` with no mode flag retrains on the folds and reports them; fold models stay unregistered."""
    from conftest import small_config
    from typer.testing import CliRunner

    from raycast.cli import app
    from raycast.config import dump_config
    from raycast.data.ingest import ingest
    from raycast.features.pipeline import build_features
    from raycast.registry import list_versions

    cfg = small_config(
        tmp_path,
        ingest={"synthetic": {"n_symbols": 12, "n_days": 500, "signal_strength": 0.5}},
        features={"walk_forward": {"folds": 2, "val_days": 40, "test_days": 40}},
        train={"models": ["cnn"], "epochs": 1, "max_steps_per_epoch": 10, "ensemble_epochs": 3},
        evaluate={"lightgbm": {"num_boost_round": 20}},
    )
    ingest(cfg)
    build_features(cfg)
    config = tmp_path / "config.yaml"
    dump_config(cfg, config)
    result = CliRunner().invoke(app, ["evaluate", "-c", str(config)])
    assert result.exit_code == 0, result.output
    (report,) = (Path(line[len("report: "):]) for line in result.output.splitlines() if line.startswith("report: "))
    assert report.parent.name == "walk_forward" and "± " in result.output and "| lightgbm |" in result.output
    assert "[raycast] Picked for the ensemble on each fold's validation period" in result.output
    assert "- fold 1: the " in result.output.split("Picked for the ensemble", 1)[1]
    folds = pd.read_csv(report.parent / "folds.csv", parse_dates=["test_start", "test_end"])
    assert list(dict.fromkeys(folds.predictor)) == ["cnn", "ensemble", "zero", "momentum", "ridge", "lightgbm"]
    first, second = (folds[folds.fold == k].iloc[0] for k in (0, 1))
    assert first.test_end < second.test_start  # forward in time, test periods disjoint
    for name in ("cnn", "ensemble", "momentum", "ridge", "lightgbm"):
        per_fold = folds.loc[folds.predictor == name, ["ic", "sharpe"]]
        assert len(per_fold) == 2 and per_fold.notna().all().all(), name
        assert f"| {name} | {per_fold['ic'].mean():.4g} ± {per_fold['ic'].std(ddof=1):.4g} |" in result.output
    text = report.read_text()
    for needle in ("## Walk-forward", "## Tradable universe", "stitched", "### Cost sensitivity",
                   "## Baseline training", "equity_curves.png", "Walk-forward wall time",
                   "## Ensemble against its best member", "| overall |", "## Skill against noise (the folds'",
                   "- ensemble: test IC", "- Market data version v-", "- History checks at ingest: nothing to report.",
                   "### Holding band", "on each fold's validation period, before its test period", "- fold 1: the "):
        assert needle in text, needle
    # a strong planted signal on 12 names is too good to be true for equities, and the report says so and why
    assert "> **Warning" in text and "A planted signal" in text and "(tiny)" in text
    assert list_versions(cfg.storage) == []

    both = CliRunner().invoke(app, ["evaluate", "-c", str(config), "--walk-forward", "2", "--split"])
    assert both.exit_code == 2 and "cannot be combined" in both.output
