"""Forecast skill against what a quant tries first: the ensemble vs its best member, a ridge and LightGBM.

For each planted strength (and the null universe, strength 0) and each seed, a synthetic universe is ingested,
featurized, trained by ``raycast train`` (Ray Train, the shipped loss and labels, :data:`TRAIN`'s epochs and
steps, models that keep the reference shapes at a width this CPU can train in minutes) and scored by
``raycast evaluate``'s split mode on its test period. Every IC is the mean per-date Pearson correlation with
the tradable label over the same test rows; the oracle IC is the generator's (what the planted signal allows).
A bad-tick universe, the strength-0.1 universe with a few x100 prints in the training period, ingested as a
user's file with ``ingest.quality.bad_ticks: flag`` (so that the prints reach the labels rather than being
dropped at ingest, the default), checks that training shrugs them off.

    python benchmarks/bench_skill.py all [--quick] [--out skill.jsonl]   # every universe, then the table
    python benchmarks/bench_skill.py run --strength 0.1 --seed 0 [--bad-ticks] [--quick | --symbols N --days N] \
        [--set train.lr=0.001 ...] --out skill.jsonl
    python benchmarks/bench_skill.py table skill.jsonl [more.jsonl ...]
    python benchmarks/bench_skill.py ceiling DIR   # from kept predictions: the best fixed weights in hindsight
    python benchmarks/bench_skill.py member --strength 0.05 --model attention [--set ...] --out curves.jsonl
    python benchmarks/bench_skill.py reach --strength 0.05 [--symbols N]   # what the bars let a model reach

``run`` appends one JSON line per universe, so the runs can be spread over time (or machines) and ``table``
reads them back; ``--set`` overrides a setting (a dotted key, a YAML value; recorded in the row) for an
experiment against the shipped defaults; each run's test predictions are kept (``--keep-predictions``) for a
closer look at the members and the combiner. Each row also records the best fixed weights of the members on
the test period itself: no combiner that learns elsewhere beats them, so they show how much any head could add
to these members. ``reach`` needs no training: on each seed's test period it scores the planted expected return
itself and the same pattern rebuilt from the bars alone (the generator's volatility replaced by one the features
carry), so the gap between a member and the oracle splits into what the inputs lack and what the model has not
learned. This is a printed table, not a timed test.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

STRENGTHS = (0.05, 0.1, 0.0)
SEEDS = (0, 1, 2)
BAD_TICKS = 6
BAD_TICK_STRENGTH = 0.1
# 400 symbols x 6 years: hundreds of tickers, what raycast is for, and about 6-7 minutes a run on 2 CPU cores. At
# 100 symbols the members learn less and further apart (docs/performance.md, "Forecast skill"); --symbols 100
# runs that universe. Strength 0.05 needs about four times the data to reach 0.7 of the oracle: --symbols 800
# --days 3024 --set train.epochs=24 --set train.patience=24 (61-72 minutes a run, three runs sharing 2 cores).
UNIVERSE = {"n_symbols": 400, "n_days": 1512}
BOOKS = ("ensemble", "ridge", "lightgbm")
"""Predictors whose books after costs (daily and in holding bands) each run records."""
QUICK_UNIVERSE = {"n_symbols": 40, "n_days": 800}
MODELS = {
    "lstm": {"hidden_size": 32, "fc_size": 32, "dropout": 0.1},
    "cnn": {"filters": [16, 32, 64], "fc_sizes": [64, 32]},
    # No dropout: with 0.1 the two-block encoder fit nothing in one seed (training IC 0.02 after 12 epochs)
    "attention": {"hidden_size": 32, "num_heads": 4, "ff_size": 64, "fc_size": 32, "dropout": 0.0},
}
# 12 epochs and no early stop (patience = epochs; the best validation epoch is still the one kept): at 100 symbols
# the selection part of validation is noisy enough that patience 3 ended the LSTM and the transformer after a
# lucky first epoch. lr: the shipped default, 0.001; at 0.002 the transformer learned a third as much
# (docs/performance.md, "Forecast skill").
TRAIN = {"concurrent": True, "epochs": 12, "patience": 12, "max_steps_per_epoch": 200, "batch_size": 256, "lr": 0.001}


def universe_size(quick: bool, days: int | None = None, symbols: int | None = None) -> dict:
    """Symbols and days of the universes: the quick or the full size, ``symbols`` and ``days`` overriding it."""
    size = QUICK_UNIVERSE if quick else UNIVERSE
    return size | ({"n_days": days} if days else {}) | ({"n_symbols": symbols} if symbols else {})


def config(root: Path, strength: float, seed: int, quick: bool, files: Path | None = None, size: dict | None = None,
           overrides: dict | None = None):
    from raycast.config import parse_config, set_by_path

    universe = (size or universe_size(quick)) | {"signal_strength": strength, "seed": seed}
    # the bad prints are kept (flagged, not dropped at ingest) so that they reach the labels: what is measured is
    # what they do to training
    source = ({"source": "files", "files": {"path": str(files)}, "quality": {"bad_ticks": "flag"}} if files
              else {"source": "synthetic"})  # fmt: skip
    train = TRAIN | ({"epochs": 3, "max_steps_per_epoch": 60} if quick else {}) | {"seed": seed}
    data = {
        "storage": str(root / "store"),
        "ray": {"num_cpus": 4},  # logical: three 1-CPU trainers and Ray Data share the cores
        "ingest": source | {"synthetic": universe},
        "features": {"num_cpus_per_task": 0.5},
        "train": train,
        "models": MODELS,
        "evaluate": {"mode": "split"},
    }  # fmt: skip
    for key, value in (overrides or {}).items():
        set_by_path(data, key, value)
    return parse_config(data)


def with_bad_ticks(bars, n: int, seed: int):
    """``n`` symbols get one day in the first half of the history printed 100 times too high (a bad tick)."""
    rng = np.random.default_rng(seed)
    bars = bars.copy()
    dates = np.sort(bars["date"].unique())
    for symbol in rng.choice(bars["symbol"].unique(), n, replace=False):
        row = (bars["symbol"] == symbol) & (bars["date"] == dates[rng.integers(len(dates) // 5, len(dates) // 2)])
        bars.loc[row, ["open", "high", "low", "close"]] *= 100.0
    return bars


def run_one(strength: float, seed: int, bad_ticks: bool, size: dict, quick: bool = False, keep: Path | None = None,
            overrides: dict | None = None) -> dict:
    """Ingest, featurize, train and evaluate one universe; its test ICs. ``keep``: a folder where the run's test
    predictions (every member, the ensemble, the baselines, the target) and the members' outputs on the stacking
    part (``-stacking.npz``) are copied for a closer look at the combiner."""
    from raycast.data.ingest import ingest
    from raycast.data.synthetic import generate_synthetic
    from raycast.evaluate.evaluate import evaluate_version
    from raycast.features.pipeline import build_features
    from raycast.registry import load_spec
    from raycast.train.run import train

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = config(root, strength, seed, quick, size=size, overrides=overrides)
        oracle = None
        if bad_ticks:
            universe = generate_synthetic(cfg.ingest.synthetic, cfg.features.label_delay)
            oracle = universe.oracle_ic
            path = root / "bars.parquet"
            with_bad_ticks(universe.bars, BAD_TICKS, seed).to_parquet(path)
            cfg = config(root, strength, seed, quick, files=path, size=size, overrides=overrides)
        manifest = ingest(cfg)
        oracle = oracle if oracle is not None else manifest["synthetic"]["oracle_ic"]
        build_features(cfg)
        trained = train(cfg)
        evaluate_version(cfg, trained.version)
        spec = load_spec(cfg.storage, trained.version)
        predictions = Path(spec["metrics"]["report"]).parent / "test_predictions.parquet"
        ceiling = hindsight_row(predictions, list(trained.bases))
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            name = f"s{strength:g}-seed{seed}{'-bad' if bad_ticks else ''}{'-quick' if quick else ''}.parquet"
            shutil.copy(predictions, keep / name)
            # and the members' outputs on the stacking part, where the head learned its weights
            from raycast.tune.data import load_head_data

            head = load_head_data(cfg)
            np.savez(keep / name.replace(".parquet", "-stacking.npz"), members=np.array(head.members),
                     outputs=head.outputs, target=head.target, dates=head.dates)  # fmt: skip
    test = spec["metrics"]["test"]
    members = list(trained.bases)
    row = {
        "strength": strength,
        "seed": seed,
        "bad_ticks": BAD_TICKS if bad_ticks else 0,
        "quick": quick,
        **size,
        "oracle_ic": oracle,
        "ic": {n: test[n]["ic"] for n in [*members, "ensemble", "ridge", "lightgbm", "momentum"] if n in test},
        "ic_std": test["ensemble"].get("ic_std"),
        "n_dates": test["ensemble"].get("n_dates"),
        "head_kept": trained.spec["stacking"]["kept"],
        "stacking_ic": trained.spec["stacking"]["ic"],
        "hindsight": ceiling,
        # the ensemble's and the baselines' books after costs, daily and in holding bands, and the band the
        # ensemble's validation period picks (what a trader could have chosen before the test period)
        "books": {n: b for n, b in spec["metrics"].get("holding_bands", {}).items() if n in BOOKS},
        "band_on_validation": spec["metrics"].get("holding_band_on_validation"),
        "seconds": round(time.perf_counter() - started, 1),
    } | ({"overrides": overrides} if overrides else {})
    return row


def member_curve(strength: float, seed: int, model: str, size: dict, overrides: dict | None = None) -> dict:
    """One base model fitted in this process, one thread, on a planted universe with the benchmark's settings
    (``overrides`` on top): after every epoch its IC on the selection part of validation (what picks the epoch
    kept) and on the test period (over every test window; a ``run`` scores the tradable ones), and the mean
    per-date correlation of its test output with each part of the pattern rebuilt from the bars (``reach``).
    Shows how a member learns: how many epochs it sits at zero before it finds the signal, which part of it
    it finds, and whether more would help."""
    import torch

    from raycast.data.ingest import ingest
    from raycast.features.pipeline import build_features
    from raycast.features.store import FeatureBlocks, current_features_dir, load_meta, read_feature_frame
    from raycast.models import autocast_context, build_model
    from raycast.train.loop import TrainJob, cross_sectional_ic, fit_epochs, predict_blocks
    from raycast.train.run import validation_parts
    from raycast.train.trainer import target_stats

    torch.set_num_threads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp), strength, seed, False, size=size, overrides=overrides)
        oracle = ingest(cfg)["synthetic"]["oracle_ic"]
        build_features(cfg)
        features = current_features_dir(cfg.storage)
        meta = load_meta(features)
        split, normalizer, window = meta.split, meta.normalizer, meta.window
        # the bases' split in `raycast train`: they select their epoch on the validation period's first part
        base_split = validation_parts(features, split, cfg.train.stacking_fraction).base_split(split)
        mean, std = target_stats(features, split)
        frame = read_feature_frame(features)
    job = TrainJob(cfg=cfg, model=model, split=base_split.to_json(), normalizer=normalizer.to_json(), window=window,
                   target_mean=mean, target_std=std)  # fmt: skip
    train_blocks = FeatureBlocks(frame[frame["date"] <= split.train.end], normalizer, window)
    val_blocks = FeatureBlocks(frame[frame["date"] <= base_split.val.end], normalizer, window)
    test_blocks = FeatureBlocks(frame, normalizer, window)
    test_ends, x = test_blocks.ends(split.test), torch.as_tensor(test_blocks.x)
    test_dates = test_blocks.dates[test_ends]
    # the rebuilt pattern's parts on the test windows: which of them the member's output follows
    keys = pd.DataFrame({"symbol": test_blocks.symbols_at(test_ends).astype(str), "date": test_dates})
    parts = keys.merge(rebuilt_terms(cfg)[1], on=["symbol", "date"], how="left")
    net = build_model(model, len(normalizer.features), window, getattr(cfg.models, model).model_dump())
    selection, test, follows = [], [], {name: [] for name in REACH_PARTS}
    for metrics, state in fit_epochs(job, train_blocks, val_blocks, "cpu"):
        net.load_state_dict(state["model"])
        net.eval()
        pred = predict_blocks(net, x, test_ends, window, 1024, lambda: autocast_context("cpu", False))
        selection.append(round(metrics["val_ic"], 4))
        test.append(round(cross_sectional_ic(test_dates, pred, test_blocks.y[test_ends])[0], 4))
        for name in REACH_PARTS:
            follows[name].append(round(cross_sectional_ic(test_dates, pred, parts[name].to_numpy())[0], 3))
        print(f"[bench_skill] {model} epoch {metrics['epoch']}: selection IC {selection[-1]:+.4f}, "
              f"test IC {test[-1]:+.4f}, correlation with the pattern's parts "
              + ", ".join(f"{name} {v[-1]:+.3f}" for name, v in follows.items()), flush=True)  # fmt: skip
    kept = int(np.argmax(selection))
    return {"member": model, "strength": strength, "seed": seed, **size, "oracle_ic": oracle, "selection_ic": selection,
            "test_ic": test, "kept_epoch": kept, "kept_test_ic": test[kept],
            "part_correlation": follows,
            "seconds": round(time.perf_counter() - started, 1)} | ({"overrides": overrides} if overrides else {})  # fmt: skip


# The planted pattern's terms by what a model needs to see them: the last day's features, or the window itself.
REACH_PARTS = {"last day": ("reversal", "volume"), "window only": ("lagged",)}


def rebuilt_terms(cfg) -> tuple[object, pd.DataFrame]:
    """(the universe, [symbol, date, planted mu, rebuilt pattern, one rebuilt column per :data:`REACH_PARTS`])."""
    from raycast.data.synthetic import PATTERN_TERMS, generate_synthetic, observable_terms

    universe = generate_synthetic(cfg.ingest.synthetic, cfg.features.label_delay)
    frame = universe.expected_return.merge(observable_terms(universe.bars))
    frame["rebuilt"] = frame[list(PATTERN_TERMS)].sum(axis=1, skipna=False)
    for name, terms in REACH_PARTS.items():
        frame[name] = frame[list(terms)].sum(axis=1, skipna=False)
    return universe, frame


def reach_row(strength: float, seed: int, size: dict) -> dict:
    """Test-period ICs of the planted expected return, of its rebuild from the bars and of the rebuild's parts
    (no model involved), scored like a member: the mean per-date Pearson IC with the tradable label (the return
    from the close after the signal's date to the next) on the benchmark's test period."""
    from raycast.evaluate.metrics import daily_ic
    from raycast.features.spec import WARMUP_BARS
    from raycast.features.splits import make_split

    cfg = config(Path(tempfile.gettempdir()), strength, seed, False, size=size)
    universe, frame = rebuilt_terms(cfg)
    close = universe.bars.pivot(index="date", columns="symbol", values="close")
    delay, horizon = cfg.features.label_delay, cfg.features.horizon
    label = close.shift(-delay - horizon) / close.shift(-delay) - 1  # the features' target, from the closes
    frame = frame.merge(label.stack(future_stack=True).rename("target").reset_index())
    # the features' dates start once every indicator has warmed up; the split is cut from them
    test = make_split(close.index[WARMUP_BARS:].to_numpy(), cfg.features).test
    frame = frame[test.mask(frame["date"].to_numpy())]
    daily = {name: daily_ic(frame, name) for name in ["mu", "rebuilt", *REACH_PARTS]}
    rebuilt = daily["rebuilt"]  # defined at strength 0 too, where the planted mu is all zeros
    return {"strength": strength, "seed": seed, **size, "oracle_ic": universe.oracle_ic,
            "planted_test_ic": float(daily["mu"].mean()) if strength else 0.0,
            "rebuilt_test_ic": {name: float(daily[name].mean()) for name in ["rebuilt", *REACH_PARTS]},
            "se": float(2 * rebuilt.std() / np.sqrt(rebuilt.count()))}  # fmt: skip


def reach_table(rows: list[dict]) -> str:
    parts = list(REACH_PARTS)
    lines = [
        "| seed | oracle IC | planted, test IC | rebuilt from the bars | rebuilt / planted | "
        + " | ".join(f"its {p} part" for p in parts) + " | 2 se |",
        "|---|---|---|---|---|" + "---|" * len(parts) + "---|",
    ]  # fmt: skip
    for r in rows:
        ic, planted = r["rebuilt_test_ic"], r["planted_test_ic"]
        ratio = ic["rebuilt"] / planted if planted else float("nan")
        lines.append(f"| {r['seed']} | {r['oracle_ic']:.4f} | {planted:.4f} | {ic['rebuilt']:.4f} | {ratio:.2f} | "
                     + " | ".join(f"{ic[p]:.4f}" for p in parts) + f" | {r['se']:.4f} |")  # fmt: skip
    return "\n".join(lines)


def simplex_grid(k: int, steps: int = 50) -> np.ndarray:
    """Every weight vector of ``k`` non-negative weights in multiples of 1/``steps`` that sum to 1, (points, k)."""
    # Stars and bars: k - 1 bars among steps + k - 1 slots; the gaps between bars are the weights' steps.
    combos = list(itertools.combinations(range(steps + k - 1), k - 1))
    bars = np.array(combos, dtype=int).reshape(len(combos), k - 1)
    edges = np.column_stack([np.full(len(bars), -1), bars, np.full(len(bars), steps + k - 1)])
    return (np.diff(edges, axis=1) - 1) / steps


def hindsight_weights(frame, members: list[str]) -> tuple[float, dict[str, float]]:
    """The best fixed average of the members *on this period itself*: its mean per-date IC and the weights.

    No combiner that learns its weights elsewhere can beat it, so it bounds what the ensemble's head can add to
    its members: when it barely clears the best member, what is missing is in the members, not the weights.
    Members are z-scored within each date (an IC does not see a member's scale) and the weights searched on a
    1/50 grid over the simplex; ``frame`` has ``date``, ``target`` and one column per member.
    """
    from raycast.evaluate.metrics import MIN_SYMBOLS

    covs = []
    for _, day in frame.groupby("date", sort=False):
        z = day[members].to_numpy(float)
        z = (z - z.mean(0)) / np.where(z.std(0) > 0, z.std(0), 1.0)
        y = day["target"].to_numpy(float)
        if len(y) < MIN_SYMBOLS or y.std() == 0:
            continue
        y = (y - y.mean()) / y.std()
        covs.append(np.cov(np.column_stack([z, y]), rowvar=False, bias=True))
    cov = np.stack(covs)  # (dates, k + 1, k + 1)
    grid = simplex_grid(len(members))
    num = np.einsum("gk,dk->gd", grid, cov[:, :-1, -1])
    var = np.einsum("gk,dkl,gl->gd", grid, cov[:, :-1, :-1], grid)
    ic = (num / np.sqrt(np.where(var > 0, var, np.nan))).mean(axis=1)
    best = int(np.nanargmax(ic))
    return float(ic[best]), dict(zip(members, grid[best].round(2).tolist(), strict=True))


def hindsight_row(predictions: Path, members: list[str]) -> dict:
    """:func:`hindsight_weights` over a test predictions file's tradable rows (the rows every IC is scored on)."""
    frame = pd.read_parquet(predictions)
    ic, weights = hindsight_weights(frame[frame["tradable"]], members)
    return {"ic": ic, "weights": weights}


def ceiling_table(paths: list[Path]) -> str:
    """Per kept test predictions file: the members', the ensemble's and the best fixed weights' test ICs."""
    from raycast.evaluate.metrics import daily_ic

    files = sorted(f for p in paths for f in ([p] if p.is_file() else p.glob("*.parquet")))
    lines = ["| run | members' IC | ensemble IC | best fixed weights in hindsight: IC (weights) | minus best member |",
             "|---|---|---|---|---|"]  # fmt: skip
    for f in files:
        frame = pd.read_parquet(f)
        members = [c.removeprefix("w_") for c in frame if c.startswith("w_")]
        frame = frame[frame["tradable"]]
        ic = {n: daily_ic(frame, n).mean() for n in [*members, "ensemble"]}
        best_ic, weights = hindsight_weights(frame, members)
        lines.append(
            f"| {f.stem} | {', '.join(f'{m} {ic[m]:.4f}' for m in members)} | {ic['ensemble']:.4f} "
            f"| {best_ic:.4f} ({', '.join(f'{w:.2f}' for w in weights.values())}) "
            f"| {best_ic - max(ic[m] for m in members):+.4f} |"
        )
    return "\n".join(lines)


def _ms(values) -> str:
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "-"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def _kind(row: dict) -> tuple:
    """What makes runs seeds of one line: bad ticks, strength, universe size and the settings they overrode."""
    size = (row.get("n_symbols", 0), row.get("n_days", 0))
    settings = ", ".join(f"{k}={v}" for k, v in sorted((row.get("overrides") or {}).items()))
    return row["bad_ticks"], row["strength"], size, settings


def table(rows: list[dict]) -> str:
    """The skill table: one line per universe kind, mean ± std over seeds.

    "best member IC" is each seed's best member on the test period, picked after the fact (a different one in
    each seed, the hardest bar); "member best in the mean" is the one member with the highest mean over the seeds,
    as the report's overall row reads its folds.
    """
    lines = [
        "| universe | seeds | oracle IC | ensemble IC | ensemble / oracle | best member IC | member best in the mean "
        "| ridge IC | LightGBM IC | ensemble >= best member, ridge, LightGBM (seeds) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    kinds = sorted({_kind(r) for r in rows}, key=lambda k: (k[0], -k[1], k[2:]))
    for kind in kinds:
        bad, strength, (n_symbols, n_days), settings = kind
        group = sorted((r for r in rows if _kind(r) == kind), key=lambda r: r["seed"])
        ens = [r["ic"]["ensemble"] for r in group]
        members = [max(v for k, v in r["ic"].items() if k in r["stacking_ic"]) for r in group]
        names = set.intersection(*(set(r["stacking_ic"]) & set(r["ic"]) for r in group))
        member_means = {m: np.mean([r["ic"][m] for r in group]) for m in names}
        top = max(member_means, key=member_means.get) if member_means else None
        steady = f"{top} {member_means[top]:.4f}" if top else "-"
        ridge = [r["ic"].get("ridge") for r in group]
        lgbm = [r["ic"].get("lightgbm") for r in group]
        wins = [sum(e >= b for e, b in zip(ens, other, strict=True) if b is not None) for other in (members, ridge, lgbm)]
        name = f"strength {strength:g}" + (f" + {bad} bad ticks" if bad else "") if strength else "null (strength 0)"
        details = [f"{n_symbols} x {n_days}"] if n_symbols else []
        name += f" ({', '.join(details + ([settings] if settings else []))})" if details or settings else ""
        ratio = [r["ic"]["ensemble"] / r["oracle_ic"] for r in group] if strength else []
        lines.append(
            f"| {name} | {len(group)} | {_ms([r['oracle_ic'] for r in group])} | {_ms(ens)} | {_ms(ratio)} "
            f"| {_ms(members)} | {steady} | {_ms(ridge)} | {_ms(lgbm)} "
            f"| {wins[0]}, {wins[1]}, {wins[2]} of {len(group)} |"
        )
    ceiling = [(k, r) for k in kinds for r in rows if _kind(r) == k and "hindsight" in r]
    if ceiling:
        lines.append("")
        lines.append("The best fixed weights of the members on the test period itself (in hindsight: no combiner beats "
                     "them), test IC minus the best member's:")
        for (bad, strength, *_), r in ceiling:
            best = max(v for k, v in r["ic"].items() if k in r["hindsight"]["weights"])
            weights = ", ".join(f"{k} {w:.2f}" for k, w in r["hindsight"]["weights"].items())
            lines.append(f"- strength {strength:g}{' + bad ticks' if bad else ''}, seed {r['seed']}: "
                         f"{r['hindsight']['ic'] - best:+.4f} ({weights})")
    null = [r for r in rows if r["strength"] == 0 and not r["bad_ticks"]]
    if null:
        lines.append("")
        lines.append("Null universe, ensemble |IC| against two standard errors of its daily ICs:")
        for r in null:
            se = r["ic_std"] / np.sqrt(r["n_dates"])
            lines.append(f"- seed {r['seed']}: |IC| {abs(r['ic']['ensemble']):.4f}, 2 se {2 * se:.4f}")
    # a bad-tick run pairs with the clean run of its seed, universe and settings
    bad = {(r["seed"], *_kind(r)[2:]): r for r in rows if r["bad_ticks"]}
    clean = {(r["seed"], *_kind(r)[2:]): r for r in rows if not r["bad_ticks"] and r["strength"] == BAD_TICK_STRENGTH}
    paired = sorted(set(bad) & set(clean))
    if paired:
        lines.append("")
        universes = {k[1:] for k in paired}
        same = [r["ic"]["ensemble"] for k, r in clean.items() if k[1:] in universes]
        std = np.std(same, ddof=1) if len(same) > 1 else float("nan")
        diffs = [bad[s]["ic"]["ensemble"] - clean[s]["ic"]["ensemble"] for s in paired]
        lines.append(f"Bad ticks minus clean, ensemble test IC per seed: {', '.join(f'{d:+.4f}' for d in diffs)}, "
                     f"mean {np.mean(diffs):+.4f} (std of the clean runs {std:.4f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run", help="one universe, appended to --out")
    one.add_argument("--strength", type=float, required=True)
    one.add_argument("--seed", type=int, default=0)
    one.add_argument("--bad-ticks", action="store_true")
    one.add_argument("--quick", action="store_true")
    one.add_argument("--days", type=int, help="days of history (default: the full universe's)")
    one.add_argument("--symbols", type=int, help="symbols (default: the full universe's)")
    one.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a setting (dotted key, YAML value), e.g. features.normalization=robust")
    one.add_argument("--out", type=Path, required=True)
    one.add_argument("--keep-predictions", type=Path, default=Path(tempfile.gettempdir()) / "bench_skill_predictions",
                     help="folder for each run's test predictions")  # fmt: skip
    curve = sub.add_parser("member", help="one member fitted in this process: its selection and test IC by epoch")
    curve.add_argument("--strength", type=float, required=True)
    curve.add_argument("--seed", type=int, default=0)
    curve.add_argument("--model", choices=list(MODELS), required=True)
    curve.add_argument("--symbols", type=int, help="symbols (default: the full universe's)")
    curve.add_argument("--days", type=int, help="days of history (default: the full universe's)")
    curve.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    curve.add_argument("--out", type=Path, required=True)
    every = sub.add_parser("all", help="every universe and seed, then the table")
    every.add_argument("--quick", action="store_true", help="small universes and short training (a smoke run)")
    every.add_argument("--out", type=Path, default=Path("skill.jsonl"))
    show = sub.add_parser("table", help="the table of --out files (the rows of all of them together)")
    show.add_argument("results", type=Path, nargs="+")
    reach = sub.add_parser("reach", help="the planted signal and its rebuild from the bars, on the test period")
    reach.add_argument("--strength", type=float, required=True)
    reach.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    reach.add_argument("--symbols", type=int, help="symbols (default: the full universe's)")
    reach.add_argument("--days", type=int, help="days of history (default: the full universe's)")
    bound = sub.add_parser("ceiling", help="the best fixed weights in hindsight, from kept test predictions")
    bound.add_argument("predictions", type=Path, nargs="+", help="files or folders of --keep-predictions")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

    if args.command == "ceiling":
        print(ceiling_table(args.predictions))
        return
    if args.command == "reach":
        size = universe_size(False, args.days, args.symbols)
        print(reach_table([reach_row(args.strength, seed, size) for seed in args.seeds]))
        return
    if args.command == "table":
        rows = [json.loads(line) for path in args.results for line in path.read_text().splitlines() if line.strip()]
        print(table(rows))
        return
    overrides = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in getattr(args, "set", []))}
    if args.command == "member":
        row = member_curve(args.strength, args.seed, args.model, universe_size(False, args.days, args.symbols), overrides)
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[bench_skill] {json.dumps(row)}", flush=True)
        return
    plan = [(args.strength, args.seed, args.bad_ticks)] if args.command == "run" else [
        *((s, seed, False) for s in STRENGTHS for seed in SEEDS), *((BAD_TICK_STRENGTH, seed, True) for seed in SEEDS)
    ]  # fmt: skip
    for strength, seed, bad in plan:
        size = universe_size(args.quick, getattr(args, "days", None), getattr(args, "symbols", None))
        row = run_one(strength, seed, bad, size, args.quick, getattr(args, "keep_predictions", None), overrides)
        row["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[bench_skill] {json.dumps(row)}", flush=True)
    if args.command == "all":
        print(table([json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]))


if __name__ == "__main__":
    main()
