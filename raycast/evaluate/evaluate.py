"""``raycast evaluate``: score the ensemble, its bases and the baselines on the same rows, as a quant would.

Two modes (``evaluate.mode``). ``walk_forward`` (the default) retrains bases, head and baselines on K expanding
folds, each with its own normalization and label statistics, scores each fold's test period, and backtests the
folds' test periods stitched into one out-of-sample history. ``split`` scores one registered model on the
validation and test periods of its own split, never its training period.

Every predictor is scored on exactly the same (symbol, date) windows, and only on the rows that could have been
traded (:mod:`raycast.evaluate.universe`). Baselines: zero, yesterday's return, a ridge regression on the last
day's features and LightGBM on the last day's and a few lagged days' features, fit on the training period.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from raycast import fs
from raycast.config import RaycastConfig
from raycast.evaluate.backtest import (
    TRADING_DAYS,
    BacktestResult,
    backtest_table,
    cost_sensitivity,
    extreme_days,
    holding_bands,
    long_short_backtest,
)
from raycast.evaluate.baselines import RidgeModel, fit_ridge, last_step
from raycast.evaluate.lightgbm_baseline import LightGBMModel, fit_lightgbm
from raycast.evaluate.metrics import summarize
from raycast.evaluate.report import ReportInputs, describe_band_choices, write_report
from raycast.evaluate.sanity import RunContext, implausible, warning_box
from raycast.evaluate.significance import ic_against_noise, verdict
from raycast.evaluate.tables import ensemble_vs_members
from raycast.evaluate.universe import Tradable, add_counts, describe_spread, spread_bps, tradable_rows
from raycast.evaluate.walk_forward import aggregate_folds
from raycast.features.splits import Period, Split, make_walk_forward
from raycast.features.store import FeatureBlocks, current_features_dir, load_meta, read_feature_frame
from raycast.lineage import model_features_dir
from raycast.registry import Predictor, load_predictor, update_metrics

BASELINES = ("zero", "momentum", "ridge", "lightgbm")
DEFAULT_FOLDS = 3
"""Walk-forward folds when neither evaluate.folds nor features.walk_forward.folds sets them."""


@dataclass
class Baselines:
    """The baselines fit on one split's training period, and how long each took to fit."""

    ridge: RidgeModel
    lightgbm: LightGBMModel | None
    ridge_seconds: float

    @property
    def names(self) -> list[str]:
        return [n for n in BASELINES if n != "lightgbm" or self.lightgbm is not None]

    def training(self) -> pd.DataFrame:
        """One row per fitted baseline: training seconds, and boosting rounds kept for LightGBM."""
        rows = {"ridge": {"train_seconds": self.ridge_seconds, "rounds": np.nan}}
        if self.lightgbm is not None:
            rows["lightgbm"] = {"train_seconds": self.lightgbm.train_seconds, "rounds": self.lightgbm.best_iteration}
        out = pd.DataFrame.from_dict(rows, orient="index")
        out.index.name = "baseline"
        return out


def fit_baselines(cfg: RaycastConfig, blocks: FeatureBlocks, split: Split) -> Baselines:
    """Ridge and (unless disabled) LightGBM on ``split``'s training windows; LightGBM stops early on validation."""
    started = time.perf_counter()
    ridge = fit_ridge_baseline(blocks, split, cfg.evaluate.ridge_alpha)
    ridge_seconds = time.perf_counter() - started
    lightgbm = None
    if cfg.evaluate.lightgbm.enabled:
        train_ends, val_ends = blocks.ends(split.train), blocks.ends(split.val)
        lightgbm = fit_lightgbm(
            blocks.x, blocks.y, train_ends, val_ends, blocks.dates[val_ends], cfg.evaluate.lightgbm, blocks.window
        )
    return Baselines(ridge, lightgbm, ridge_seconds)


def predictions_frame(
    predictor: Predictor, blocks: FeatureBlocks, period: Period, baselines: Baselines, chunk: int = 4096
) -> pd.DataFrame:
    """One row per window ending in ``period``: target, every base, the ensemble, its weights, the baselines, and
    the raw market columns of the row (close, volume, traded value) that decide whether it was tradable."""
    ends = blocks.ends(period)
    parts = []
    for i in range(0, len(ends), chunk):
        chunk_ends = ends[i : i + chunk]
        x, _ = blocks.windows(chunk_ends)
        out = predictor.predict_windows(x)
        part = {"ensemble": out["prediction"], **out["base_predictions"]}
        part |= {f"w_{n}": w for n, w in out["weights"].items()}
        part["ridge"] = baselines.ridge.predict(last_step(x))
        if baselines.lightgbm is not None:
            part["lightgbm"] = baselines.lightgbm.predict(blocks.x, chunk_ends)
        parts.append(pd.DataFrame(part))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    frame.insert(0, "symbol", blocks.symbols_at(ends))
    frame.insert(1, "date", blocks.dates[ends])
    frame.insert(2, "target", blocks.y[ends])
    frame["zero"] = 0.0
    frame["momentum"] = blocks.raw_return[ends]  # yesterday's (t-1 -> t) return, unnormalized
    for column, values in blocks.market.items():
        frame[column] = values[ends]
    return frame


def tradable_frame(cfg: RaycastConfig, frame: pd.DataFrame) -> tuple[pd.DataFrame, Tradable]:
    """The rows of ``frame`` that could have been traded, each with its half-spread (``spread_bps``)."""
    tradable = tradable_rows(frame, cfg.evaluate.universe)
    out = frame[tradable.mask].reset_index(drop=True)
    liquidity = out["dollar_volume_20d"] if "dollar_volume_20d" in out else np.full(len(out), np.nan)
    out["spread_bps"] = spread_bps(liquidity, cfg.evaluate.spread)
    return out, tradable


def run_backtests(cfg: RaycastConfig, frame: pd.DataFrame, names: list[str], horizon: int) -> dict:
    """The cost-aware long-short backtest of every predictor but the zero baseline (a constant ranks nothing).

    Costs are ``evaluate.cost_bps`` plus each row's half-spread when the frame has a ``spread_bps`` column; the
    book rebalances daily, or holds names within ``evaluate.hold_quantile``.
    """
    ev = cfg.evaluate
    spread = "spread_bps" if "spread_bps" in frame else None
    return {
        n: long_short_backtest(frame, n, ev.quantile, ev.cost_bps, horizon, spread, ev.hold_quantile)
        for n in names
        if n != "zero"
    }


def band_table(cfg: RaycastConfig, frame: pd.DataFrame, names: list[str], horizon: int) -> pd.DataFrame:
    """Every predictor's book after costs, daily and in each of ``evaluate.hold_quantiles`` (see holding_bands)."""
    ev = cfg.evaluate
    spread = "spread_bps" if "spread_bps" in frame else None
    names = [n for n in names if n != "zero"]
    return holding_bands(frame, names, ev.hold_quantiles, ev.quantile, ev.cost_bps, horizon, spread)


def band_on_validation(val_bands: pd.DataFrame, test_bands: pd.DataFrame, predictor: str = "ensemble") -> dict | None:
    """The holding band with the best validation Sharpe after costs for ``predictor``, and its test Sharpe.

    A band picked on the test table would be picked on the period it is scored on; this one is picked before the
    test period is looked at, as a trader would have had to. None when the predictor has no finite Sharpe.
    """
    if predictor not in val_bands.index or predictor not in test_bands.index:
        return None
    sharpe = val_bands.loc[predictor, [c for c in val_bands.columns if c.startswith("sharpe ")]].astype(float)
    if not np.isfinite(sharpe).any():
        return None
    column = sharpe.idxmax()
    return {
        "predictor": predictor,
        "band": column.removeprefix("sharpe "),
        "val_sharpe": float(sharpe[column]),
        "test_sharpe": float(test_bands.loc[predictor, column]),
        "test_sharpe_daily": float(test_bands.loc[predictor, "sharpe daily"]),
    }


def universe_rule(cfg: RaycastConfig) -> str:
    u = cfg.evaluate.universe
    rule = f"close >= {u.min_price:g}, mean daily traded value over 20 bars >= {u.min_dollar_volume:,.0f}"
    return rule + (", volume > 0 at t and on the entry day" if u.skip_zero_volume else "")


@dataclass
class Scrutiny:
    """What the report adds around the headline numbers: cost sensitivity, holding bands, extreme days, the warning
    box."""

    sensitivity: pd.DataFrame
    bands: pd.DataFrame
    extremes: dict[str, pd.DataFrame]
    warning: list[str]


def scrutinize(
    cfg: RaycastConfig,
    tradable: pd.DataFrame,
    metrics: pd.DataFrame,
    backtests: dict[str, BacktestResult],
    horizon: int,
    context: RunContext,
) -> Scrutiny:
    """Cost sensitivity, holding bands, flagged book days and the warning box for the tradable rows of one scored
    period."""
    ev = cfg.evaluate
    names = list(backtests)
    sensitivity = cost_sensitivity(tradable, names, ev.cost_sensitivity_bps, ev.quantile, horizon, ev.hold_quantile)
    extremes = {n: extreme_days(b, ev.flag_day_return) for n, b in backtests.items()}
    per_date = tradable.groupby("date").size()
    context = RunContext(
        **{
            **context.__dict__,
            "symbols_per_date": float(per_date.median()) if len(per_date) else None,
            "flagged_days": sum(len(e) for e in extremes.values()),
            "flag_threshold": ev.flag_day_return,
        }
    )
    findings = implausible(metrics, {n: b.summary for n, b in backtests.items()}, ev.plausible_ic, ev.plausible_sharpe)
    return Scrutiny(sensitivity, band_table(cfg, tradable, names, horizon), extremes, warning_box(findings, context))


def fit_ridge_baseline(blocks: FeatureBlocks, split: Split, alpha: float):
    ends = blocks.ends(split.train)
    return fit_ridge(blocks.x[ends], blocks.y[ends], alpha)


def _market_manifest(storage: str, market_version: str | None) -> dict | None:
    """The manifest of the market data version a model was trained on (None when unknown or since pruned)."""
    from raycast.data.store import MANIFEST, market_dir

    if not market_version:
        return None
    manifest = fs.join(market_dir(storage), market_version, MANIFEST)
    return json.loads(fs.read_text(manifest)) if fs.is_file(manifest) else None


def _synthetic_info(market: dict | None) -> dict | None:
    """The generator's record (oracle IC and settings) when the market data a model saw is a synthetic universe."""
    return (market or {}).get("synthetic") or None


def data_lineage(market: dict | None, features_meta: dict) -> list[str]:
    """What the report says of where its rows came from, so that a reader can ask "could I have traded that?" of
    the data too: the market version, the rows ingest rejected, what its quality checks found and did (split
    adjustments, dropped bad ticks, halts), and the symbols the feature stage skipped."""
    from raycast.data.quality import describe_quality

    version = features_meta.get("market_version")
    if market is None:
        return [f"Market data version {version}: its manifest is gone, so what ingest did is not shown."] * bool(version)
    lines = [f"Market data version {version}: {market.get('n_symbols', '?')} symbols, {market.get('rows', 0):,} bars."]
    rejected = market.get("rejected") or {}
    if rejected:
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in sorted(rejected.items(), key=lambda kv: -kv[1]))
        lines.append(f"Rows rejected at ingest: {market.get('rejected_total', sum(rejected.values())):,} ({reasons}).")
    if market.get("quality"):
        lines.append(f"History checks at ingest: {describe_quality(market['quality'])}.")
        found = market["quality"].get("bad_ticks", {}).get("found", [])
        if found:
            shown = ", ".join(f"{f['symbol']} {f['date']} ({f['close']:.4g} after {f['previous_close']:.4g})"
                              for f in found[:5])  # fmt: skip
            lines.append(f"Bad ticks: {shown}" + (f" and {len(found) - 5} more." if len(found) > 5 else "."))
    skipped = features_meta.get("skipped_counts") or {}
    if skipped:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items(), key=lambda kv: -kv[1]))
        lines.append(f"Symbols the feature stage skipped: {sum(skipped.values())} ({reasons}).")
    return lines


def _backtest_terms(cfg: RaycastConfig, checks: Scrutiny) -> dict:
    """What every report says about how its backtests were costed and which days it flagged."""
    return {
        "quantile": cfg.evaluate.quantile,
        "cost_bps": cfg.evaluate.cost_bps,
        "spread": describe_spread(cfg.evaluate.spread),
        "cost_sensitivity": checks.sensitivity,
        "holding_bands": checks.bands,
        "hold_quantile": cfg.evaluate.hold_quantile,
        "extreme_days": checks.extremes,
        "flag_threshold": cfg.evaluate.flag_day_return,
    }


def _canary(synthetic: dict | None, ic: float, what: str = "ensemble test IC") -> str | None:
    """For synthetic data the generator knows the best achievable IC: say how close the ensemble came."""
    if not synthetic:
        return None
    return f"synthetic universe: planted oracle IC {synthetic['oracle_ic']:.4f}; {what} {ic:.4f}"


def _run_context(cfg: RaycastConfig, meta_raw: dict, synthetic: dict | None, unchecked: tuple[str, ...]) -> RunContext:
    return RunContext(
        label_delay=meta_raw.get("label_delay"),
        universe=universe_rule(cfg),
        universe_unchecked=unchecked,
        oracle_ic=synthetic.get("oracle_ic") if synthetic else None,
    )


def _attention_map(predictor: Predictor, blocks: FeatureBlocks, period: Period) -> np.ndarray | None:
    model = predictor.bases.get("attention")
    ends = blocks.ends(period)
    if model is None or not len(ends):
        return None
    x, _ = blocks.windows(ends[-1:])
    with torch.no_grad():
        weights = model.get_attention_weights(torch.as_tensor(x))
    weights = weights[-1] if isinstance(weights, list | tuple) else weights
    return weights[0].float().cpu().numpy()


def evaluate_version(cfg: RaycastConfig, version: str | None = None) -> fs.Location:
    """Evaluate a registered version on its validation and test periods; write the report and metrics.

    Returns where ``report.md`` is: a ``Path`` for local storage, a URI otherwise.
    """
    predictor = load_predictor(cfg.storage, version or cfg.serve.version)
    spec = predictor.spec
    split = Split.from_json(spec["split"])
    # The model's own feature dataset: a later rebuild (another horizon, say) must not change its targets.
    features_dir = model_features_dir(cfg.storage, spec)
    meta = load_meta(features_dir)
    blocks = FeatureBlocks.read(features_dir, predictor.normalizer, predictor.window)
    baselines = fit_baselines(cfg, blocks, split)
    names = [*predictor.bases, "ensemble", *baselines.names]
    horizon = spec["target"]["horizon"]
    val = predictions_frame(predictor, blocks, split.val, baselines)
    test = predictions_frame(predictor, blocks, split.test, baselines)
    val_tradable, _ = tradable_frame(cfg, val)
    test_tradable, universe = tradable_frame(cfg, test)
    test["tradable"] = universe.mask
    val_metrics, test_metrics = summarize(val_tradable, names), summarize(test_tradable, names)
    backtests = run_backtests(cfg, test_tradable, names, horizon)
    market = _market_manifest(cfg.storage, spec["features"].get("market_version"))  # the data the model saw
    synthetic = _synthetic_info(market)
    context = _run_context(cfg, meta.raw, synthetic, universe.unchecked)
    checks = scrutinize(cfg, test_tradable, test_metrics, backtests, horizon, context)
    band = band_on_validation(band_table(cfg, val_tradable, ["ensemble"], horizon), checks.bands)  # its band only
    significance, reading = against_noise(test_tradable, names, list(predictor.bases), backtests, horizon)
    run_dir = fs.join(fs.absolute(cfg.storage), "runs", spec["run_id"])
    history_file = fs.join(run_dir, "history.json")
    history = json.loads(fs.read_text(history_file)) if fs.is_file(history_file) else None
    ensemble_ic = test_metrics.loc["ensemble", "ic"] if "ensemble" in test_metrics.index else float("nan")
    # Plots and TensorBoard only write local files: they go to a local directory uploaded into run_dir at the end.
    with fs.local_dir(run_dir) as local_run_dir:
        test.to_parquet(local_run_dir / "test_predictions.parquet")
        report = write_report(
            local_run_dir,
            ReportInputs(
                title=f"raycast evaluation: model {spec['version']}",
                warning=checks.warning,
                universe=universe.counts,
                universe_rule=universe_rule(cfg),
                val_metrics=val_metrics,
                test_metrics=test_metrics,
                ensemble_vs_best=_ensemble_vs_best(test_metrics.reset_index().assign(fold="test"), list(predictor.bases)),
                backtests=backtests,
                **_backtest_terms(cfg, checks),
                band_choices=[band] if band else [],
                baseline_training=baselines.training(),
                test_predictions=test_tradable[["symbol", "date", "target", *names]],
                data_range=(str(blocks.dates.min())[:10], str(blocks.dates.max())[:10]),
                splits={k: f"{v['start']} .. {v['end']}" for k, v in spec["split"].items()},
                lineage=data_lineage(market, meta.raw),
                canary=_canary(synthetic, ensemble_ic),
                significance=significance,
                verdict=reading,
                training_history={k: v for k, v in (history or {}).items() if k != "ensemble"} or None,
                ensemble_weights=test_tradable[["symbol", "date", *[c for c in test_tradable if c.startswith("w_")]]],
                attention=_attention_map(predictor, blocks, split.test),
            ),
        )
        _log_tensorboard(local_run_dir, history, test_metrics)
    report = fs.join(run_dir, report.name)
    metrics = {
        "val": val_metrics.to_dict(orient="index"),
        "test": test_metrics.to_dict(orient="index"),
        "backtest": {n: b.summary for n, b in backtests.items()},
        "universe": universe.counts,
        "significance": significance.to_dict(orient="index"),
        "cost_sensitivity": checks.sensitivity.to_dict(orient="index"),
        "holding_bands": checks.bands.to_dict(orient="index"),
        "holding_band_on_validation": band,
        "baseline_training": baselines.training().to_dict(orient="index"),
        "warnings": [line.removeprefix("> - ") for line in checks.warning if line.startswith("> - ")],
        "report": fs.display(report),
    }
    update_metrics(cfg.storage, spec["version"], json.loads(json.dumps(metrics, default=float)))
    headline = test_metrics[["ic", "rank_ic", "direction_accuracy", "mse"]].to_string()
    print(f"[raycast] test metrics (tradable rows):\n{headline}", flush=True)
    _print_reading("test", reading, [band] if band else [])
    return report


def _print_reading(period: str, reading: list[str], bands: list[dict]) -> None:
    """The report's skill-against-noise lines and its holding-band pick on the console, without markdown."""
    if reading:
        plain = "\n".join(reading).replace("**", "")
        print(f"[raycast] skill against noise ({period}):\n{plain}", flush=True)
    if lines := [line for line in describe_band_choices(bands) if line]:
        print("[raycast] " + "\n".join(lines), flush=True)


def against_noise(
    tradable: pd.DataFrame,
    names: list[str],
    members: list[str],
    backtests: dict[str, BacktestResult],
    horizon: int,
) -> tuple[pd.DataFrame, list[str]]:
    """The scored rows' ICs with their standard errors, and the report's reading of the ensemble's in words."""
    table = ic_against_noise(tradable, [n for n in names if n != "zero"], horizon=horizon)
    per_date = tradable.groupby("date").size()
    reading = verdict(
        table,
        members,
        [n for n in names if n in BASELINES],
        {n: b.summary for n, b in backtests.items()},
        periods_per_year=TRADING_DAYS / horizon,
        symbols_per_date=float(per_date.median()) if len(per_date) else None,
    )
    return table, reading


def _ensemble_vs_best(per_fold: pd.DataFrame, members: list[str]) -> pd.DataFrame | None:
    """The report's ensemble-against-best-member table, or None when there is no ensemble or no member to compare."""
    if "ensemble" not in set(per_fold["predictor"]) or not set(members) & set(per_fold["predictor"]):
        return None
    return ensemble_vs_members(per_fold, members)


def _log_tensorboard(run_dir: Path, history: dict | None, test_metrics: pd.DataFrame) -> None:
    """Training curves and final metrics as TensorBoard scalars (``tensorboard --logdir <storage>/runs``)."""
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(run_dir / "tensorboard")) as writer:
        for model, epochs in (history or {}).items():
            for h in epochs:
                for key in ("train_loss", "val_loss", "val_ic", "val_rank_ic"):
                    if key in h and h[key] is not None:
                        writer.add_scalar(f"{model}/{key}", h[key], h["epoch"])
        for name, row in test_metrics.iterrows():
            for key in ("ic", "rank_ic", "direction_accuracy"):
                if np.isfinite(row[key]):
                    writer.add_scalar(f"test/{name}/{key}", row[key], 0)


def fold_summary(cfg: RaycastConfig, test: pd.DataFrame, names: list[str], horizon: int) -> pd.DataFrame:
    """One fold's test metrics and cost-aware backtest, one row per predictor (``test``: its tradable rows)."""
    return summarize(test, names).join(backtest_table(run_backtests(cfg, test, names, horizon)))


def walk_forward_folds(cfg: RaycastConfig, dates: pd.Series, meta_raw: dict) -> list[Split]:
    """The evaluation's folds: ``evaluate.folds``, else ``features.walk_forward.folds``, else :data:`DEFAULT_FOLDS`;
    the embargo from the dataset's own label (its delay and horizon, whatever the config says now)."""
    fc = cfg.features
    folds = cfg.evaluate.folds or fc.walk_forward.folds or DEFAULT_FOLDS
    fc = fc.model_copy(
        update={
            "walk_forward": fc.walk_forward.model_copy(update={"folds": folds}),
            "label_delay": int(meta_raw.get("label_delay", fc.label_delay)),
            "horizon": int(meta_raw.get("horizon", fc.horizon)),
        }
    )
    return make_walk_forward(dates, fc)


def evaluate_walk_forward(cfg: RaycastConfig) -> tuple[pd.DataFrame, fs.Location]:
    """Retrain on each walk-forward fold; return every metric as mean and std over the folds, and the report.

    Each fold gets its own normalization statistics and target scaling from its own training rows, and its own
    baselines: nothing of a later period reaches an earlier fold's models. The folds' test periods follow each
    other without overlap, so their tradable rows are also stitched into one out-of-sample history for the
    backtest, its cost sensitivity, the flagged days and the equity plot.
    """
    from raycast.train.run import train
    from raycast.features.store import fit_fold_normalizer

    features_dir = current_features_dir(cfg.storage)  # resolved once: every fold trains and scores on this one
    meta = load_meta(features_dir)
    frame = read_feature_frame(features_dir)
    folds = walk_forward_folds(cfg, frame["date"], meta.raw)
    names = meta.features
    started = time.perf_counter()
    summaries, rows, tested, training, bands = [], [], [], [], []
    universe: dict[str, int] = {}
    unchecked: tuple[str, ...] = ()
    for k, fold in enumerate(folds):
        print(f"[raycast] walk-forward fold {k + 1}/{len(folds)}: test {fold.test.start.date()}..{fold.test.end.date()}", flush=True)
        normalizer = fit_fold_normalizer(
            features_dir, fold, names, cfg.features.normalization, cfg.features.clip
        )
        trained = train(cfg, split=fold, normalizer=normalizer, register=False, features_dir=features_dir)
        predictor = Predictor(trained.spec | {"version": f"fold-{k}"}, trained.bases, trained.ensemble, torch.device("cpu"))
        blocks = FeatureBlocks(frame, normalizer, predictor.window)
        baselines = fit_baselines(cfg, blocks, fold)
        predictors = [*predictor.bases, "ensemble", *baselines.names]
        test, tradable = tradable_frame(cfg, predictions_frame(predictor, blocks, fold.test, baselines))
        universe, unchecked = add_counts(universe, tradable.counts), tradable.unchecked
        summary = fold_summary(cfg, test, predictors, meta.horizon)
        # the ensemble's holding band, picked on this fold's validation period before its test period is seen
        val, _ = tradable_frame(cfg, predictions_frame(predictor, blocks, fold.val, baselines))
        picked = band_on_validation(*(band_table(cfg, f, ["ensemble"], meta.horizon) for f in (val, test)))
        bands += [picked | {"fold": k}] if picked else []
        summaries.append(summary)
        rows.append(summary.assign(fold=k, test_start=fold.test.start, test_end=fold.test.end).reset_index())
        tested.append(test[["symbol", "date", "target", "spread_bps", *predictors]])
        training.append(baselines.training().assign(fold=k))
    seconds = time.perf_counter() - started
    table = aggregate_folds(summaries)
    stitched = pd.concat(tested, ignore_index=True)
    backtests = run_backtests(cfg, stitched, predictors, meta.horizon)
    market = _market_manifest(cfg.storage, meta.raw.get("market_version"))
    synthetic = _synthetic_info(market)
    context = _run_context(cfg, meta.raw, synthetic, unchecked)
    fold_ic = table[["ic_mean", "rank_ic_mean"]].rename(columns={"ic_mean": "ic", "rank_ic_mean": "rank_ic"})
    checks = scrutinize(cfg, stitched, fold_ic, backtests, meta.horizon, context)
    significance, reading = against_noise(stitched, predictors, list(predictor.bases), backtests, meta.horizon)
    first, last = folds[0].test.start.date(), folds[-1].test.end.date()
    out_dir = fs.join(fs.absolute(cfg.storage), "runs", "walk_forward")
    with fs.local_dir(out_dir) as local_out_dir:
        pd.concat(rows, ignore_index=True).to_csv(local_out_dir / "folds.csv", index=False)  # every fold's own numbers
        report = write_report(
            local_out_dir,
            ReportInputs(
                title=f"raycast walk-forward ({len(folds)} folds)",
                warning=checks.warning,
                data_range=(str(frame["date"].min())[:10], str(frame["date"].max())[:10]),
                splits={f"fold {k} {p}": f"{v.start.date()} .. {v.end.date()}"
                        for k, f in enumerate(folds) for p, v in f.periods().items()},  # fmt: skip
                lineage=data_lineage(market, meta.raw),
                universe=universe,
                universe_rule=universe_rule(cfg),
                walk_forward=table,
                ensemble_vs_best=_ensemble_vs_best(pd.concat(rows, ignore_index=True), list(predictor.bases)),
                backtests=backtests,
                backtest_period=f"the folds' test periods stitched, {first} .. {last}",
                **_backtest_terms(cfg, checks),
                band_choices=bands,
                baseline_training=pd.concat(training)[["fold", "train_seconds", "rounds"]],
                test_predictions=stitched[["symbol", "date", "target", *predictors]],
                canary=_canary(
                    synthetic,
                    table.loc["ensemble", "ic_mean"] if "ensemble" in table.index else np.nan,
                    "ensemble test IC (mean over folds)",
                ),
                significance=significance,
                verdict=reading,
                significance_period=f"the folds' test periods stitched, {first} .. {last}",
                notes=[f"Walk-forward wall time (training and scoring every fold): {seconds:.0f} s."],
            ),
        )
    print(f"[raycast] walk-forward: {len(folds)} folds in {seconds:.0f} s", flush=True)
    _print_reading("the folds' test periods", reading, bands)
    return table, fs.join(out_dir, report.name)
