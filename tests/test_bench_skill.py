"""The skill benchmark's hindsight bound: the best fixed weights of the members on the period they are scored on."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raycast.evaluate.metrics import daily_ic

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_skill  # noqa: E402


def _frame(n_dates: int = 300, n_symbols: int = 60, seed: int = 0) -> pd.DataFrame:
    """A signal, a target that carries it, and members that see it through independent noise (or not at all)."""
    rng = np.random.default_rng(seed)
    shape = (n_dates, n_symbols)
    signal = rng.standard_normal(shape)
    target = 0.1 * signal + rng.standard_normal(shape)
    return pd.DataFrame({
        "date": np.repeat(pd.bdate_range("2020-01-01", periods=n_dates), n_symbols),
        "target": target.ravel(),
        "a": (signal + rng.standard_normal(shape)).ravel(),
        "b": (signal + rng.standard_normal(shape)).ravel(),
        "noise": rng.standard_normal(shape).ravel(),
    })  # fmt: skip


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_the_grid_covers_the_simplex(k):
    grid = bench_skill.simplex_grid(k, steps=10)
    assert np.allclose(grid.sum(axis=1), 1) and (grid >= 0).all()
    assert len({tuple(row) for row in grid.round(9)}) == len(grid)  # no point twice
    assert np.isclose(grid, 1).any(axis=0).all()  # every member alone is a point


def test_two_members_with_independent_noise_share_the_weight_and_beat_each():
    frame = _frame()
    ic, weights = bench_skill.hindsight_weights(frame, ["a", "b"])
    assert 0.35 <= weights["a"] <= 0.65
    assert ic > max(daily_ic(frame, m).mean() for m in ("a", "b")) + 0.005


def test_a_member_without_signal_gets_no_weight_and_adds_nothing():
    frame = _frame(seed=1)
    ic, weights = bench_skill.hindsight_weights(frame, ["a", "noise"])
    assert weights["noise"] <= 0.1
    # The bound is taken on the scored period itself, so it is never below the best member alone.
    assert daily_ic(frame, "a").mean() - 1e-9 <= ic <= daily_ic(frame, "a").mean() + 0.002


def test_the_table_reads_several_results_files_together(tmp_path, capsys):
    """Clean runs in one file and bad-tick runs in another: one table, and each bad-tick seed against its clean run."""
    import json

    def row(seed: int, bad: int, ensemble: float) -> dict:
        ic = {"lstm": 0.03, "cnn": 0.04, "attention": 0.05, "ensemble": ensemble, "ridge": 0.01, "lightgbm": 0.02}
        return {"strength": 0.1, "seed": seed, "bad_ticks": bad, "quick": False, "n_symbols": 40, "n_days": 800,
                "oracle_ic": 0.1, "ic": ic, "ic_std": 0.07, "n_dates": 100,
                "stacking_ic": {"lstm": 0.03, "cnn": 0.04, "attention": 0.05}}  # fmt: skip

    clean, bad = tmp_path / "clean.jsonl", tmp_path / "bad.jsonl"
    clean.write_text("".join(json.dumps(row(s, 0, 0.06 + 0.01 * s)) + "\n" for s in (0, 1)))
    bad.write_text("".join(json.dumps(row(s, 6, 0.05 + 0.01 * s)) + "\n" for s in (0, 1)))
    # a bigger universe trained longer is a line of its own, and no bad-tick run's pair
    bigger = tmp_path / "bigger.jsonl"
    bigger.write_text(json.dumps(row(0, 0, 0.2) | {"n_symbols": 80, "overrides": {"train.epochs": 24}}) + "\n")
    bench_skill.main(["table", str(clean), str(bad), str(bigger)])
    out = capsys.readouterr().out
    assert "| strength 0.1 (40 x 800) | 2 |" in out and "| strength 0.1 + 6 bad ticks (40 x 800) | 2 |" in out
    assert "| strength 0.1 (80 x 800, train.epochs=24) | 1 | 0.1000 | 0.2000 |" in out
    assert "Bad ticks minus clean, ensemble test IC per seed: -0.0100, -0.0100, mean -0.0100 (std of the clean runs 0.0071)" in out


def test_reach_splits_the_planted_signal_into_what_the_last_day_and_the_window_show(capsys):
    """Rebuilt from the bars, the pattern scores about what the planted mu scores on the test period; its
    window-only part (the lagged return) carries most of it; with nothing planted, the rebuild has no skill."""
    size = {"n_symbols": 80, "n_days": 900}
    strong = bench_skill.reach_row(0.3, 0, size)
    planted, rebuilt = strong["planted_test_ic"], strong["rebuilt_test_ic"]
    assert planted > 2 * strong["se"]
    assert rebuilt["rebuilt"] > 0.9 * planted
    assert rebuilt["window only"] > rebuilt["last day"] > 0
    null = bench_skill.reach_row(0.0, 0, size)
    assert abs(null["rebuilt_test_ic"]["rebuilt"]) < null["se"]
    bench_skill.main(["reach", "--strength", "0.3", "--seeds", "0", "--symbols", "80", "--days", "900"])
    assert f"| 0 | {strong['oracle_ic']:.4f} | {planted:.4f} | {rebuilt['rebuilt']:.4f} |" in capsys.readouterr().out


def test_the_table_names_the_member_best_in_the_mean_beside_each_seeds_best(tmp_path, capsys):
    """Each seed's best member, picked after the fact, may be a different one; the member best in the mean is one."""
    import json

    members = [{"lstm": 0.06, "cnn": 0.04, "attention": 0.05}, {"lstm": 0.02, "cnn": 0.04, "attention": 0.05}]
    rows = [{"strength": 0.1, "seed": seed, "bad_ticks": 0, "quick": False, "n_symbols": 40, "n_days": 800,
             "oracle_ic": 0.1, "ic": ic | {"ensemble": 0.052, "ridge": 0.01, "lightgbm": 0.02}, "ic_std": 0.07,
             "n_dates": 100, "stacking_ic": ic | {"equal_weights": 0.05}}
            for seed, ic in enumerate(members)]  # fmt: skip
    results = tmp_path / "skill.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench_skill.main(["table", str(results)])
    out = capsys.readouterr().out
    # each seed's best: 0.06 (the LSTM), 0.05 (the transformer); in the mean the transformer (0.05) leads
    assert "| 0.0550 ± 0.0071 | attention 0.0500 | 0.0100 ± 0.0000 | 0.0200 ± 0.0000 | 1, 2, 2 of 2 |" in out
