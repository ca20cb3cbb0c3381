"""``raycast evaluate``: score a registered ensemble, its bases and the baselines on the same rows.

Every predictor is evaluated on exactly the same (symbol, date) windows: validation and test periods of the
model's own split, never its training period. Baselines: zero, yesterday's return, and a ridge regression on the
last day's features fit on the training period.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from raycast import fs
from raycast.config import RaycastConfig
from raycast.evaluate.backtest import backtest_table, long_short_backtest
from raycast.evaluate.baselines import fit_ridge, last_step
from raycast.evaluate.metrics import summarize
from raycast.evaluate.report import ReportInputs, write_report
from raycast.evaluate.walk_forward import aggregate_folds
from raycast.features.splits import Period, Split, make_walk_forward
from raycast.features.store import FeatureBlocks, current_features_dir, load_meta, read_feature_frame
from raycast.lineage import model_features_dir
from raycast.registry import Predictor, load_predictor, update_metrics

BASELINES = ("zero", "momentum", "ridge")


def predictions_frame(predictor: Predictor, blocks: FeatureBlocks, period: Period, ridge, chunk: int = 4096) -> pd.DataFrame:
    """One row per window ending in ``period``: target, every base, the ensemble, its weights, the baselines."""
    ends = blocks.ends(period)
    parts = []
    for i in range(0, len(ends), chunk):
        x, _ = blocks.windows(ends[i : i + chunk])
        out = predictor.predict_windows(x)
        part = {"ensemble": out["prediction"], **out["base_predictions"]}
        part |= {f"w_{n}": w for n, w in out["weights"].items()}
        part["ridge"] = ridge.predict(last_step(x))
        parts.append(pd.DataFrame(part))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    frame.insert(0, "symbol", blocks.symbols[ends])
    frame.insert(1, "date", blocks.dates[ends])
    frame.insert(2, "target", blocks.y[ends])
    frame["zero"] = 0.0
    frame["momentum"] = blocks.raw_return[ends]  # yesterday's (t-1 -> t) return, unnormalized
    return frame


def run_backtests(cfg: RaycastConfig, frame: pd.DataFrame, names: list[str], horizon: int) -> dict:
    """The cost-aware long-short backtest of every predictor but the zero baseline (a constant ranks nothing)."""
    return {
        n: long_short_backtest(frame, n, cfg.evaluate.quantile, cfg.evaluate.cost_bps, horizon)
        for n in names
        if n != "zero"
    }


def fit_ridge_baseline(blocks: FeatureBlocks, split: Split, alpha: float):
    ends = blocks.ends(split.train)
    return fit_ridge(blocks.x[ends], blocks.y[ends], alpha)


def _canary(storage: str, market_version: str | None, test: pd.DataFrame) -> str | None:
    """For synthetic data the generator knows the best achievable IC: say how close the ensemble came."""
    from raycast.data.store import MANIFEST, market_dir

    if not market_version:
        return None
    manifest = fs.join(market_dir(storage), market_version, MANIFEST)  # the data the model was trained on
    if not fs.is_file(manifest):
        return None
    synthetic = json.loads(fs.read_text(manifest)).get("synthetic")
    if not synthetic:
        return None
    ic = test.loc["ensemble", "ic"] if "ensemble" in test.index else float("nan")
    return f"synthetic universe: planted oracle IC {synthetic['oracle_ic']:.4f}; ensemble test IC {ic:.4f}"


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
    blocks = FeatureBlocks(read_feature_frame(model_features_dir(cfg.storage, spec)), predictor.normalizer, predictor.window)
    ridge = fit_ridge_baseline(blocks, split, cfg.evaluate.ridge_alpha)
    names = [*predictor.bases, "ensemble", *BASELINES]
    val = predictions_frame(predictor, blocks, split.val, ridge)
    test = predictions_frame(predictor, blocks, split.test, ridge)
    val_metrics, test_metrics = summarize(val, names), summarize(test, names)
    backtests = run_backtests(cfg, test, names, spec["target"]["horizon"])
    run_dir = fs.join(fs.absolute(cfg.storage), "runs", spec["run_id"])
    history_file = fs.join(run_dir, "history.json")
    history = json.loads(fs.read_text(history_file)) if fs.is_file(history_file) else None
    # Plots and TensorBoard only write local files: they go to a local directory uploaded into run_dir at the end.
    with fs.local_dir(run_dir) as local_run_dir:
        test.to_parquet(local_run_dir / "test_predictions.parquet")
        report = write_report(
            local_run_dir,
            ReportInputs(
                title=f"raycast evaluation: model {spec['version']}",
                val_metrics=val_metrics,
                test_metrics=test_metrics,
                backtests=backtests,
                quantile=cfg.evaluate.quantile,
                cost_bps=cfg.evaluate.cost_bps,
                test_predictions=test[["symbol", "date", "target", *names]],
                data_range=(str(blocks.dates.min())[:10], str(blocks.dates.max())[:10]),
                splits={k: f"{v['start']} .. {v['end']}" for k, v in spec["split"].items()},
                canary=_canary(cfg.storage, spec["features"].get("market_version"), test_metrics),
                training_history={k: v for k, v in (history or {}).items() if k != "ensemble"} or None,
                ensemble_weights=test[["symbol", "date", *[c for c in test if c.startswith("w_")]]],
                attention=_attention_map(predictor, blocks, split.test),
            ),
        )
        _log_tensorboard(local_run_dir, history, test_metrics)
    report = fs.join(run_dir, report.name)
    metrics = {
        "val": val_metrics.to_dict(orient="index"),
        "test": test_metrics.to_dict(orient="index"),
        "backtest": {n: b.summary for n, b in backtests.items()},
        "report": fs.display(report),
    }
    update_metrics(cfg.storage, spec["version"], json.loads(json.dumps(metrics, default=float)))
    print(f"[raycast] test metrics:\n{test_metrics[['ic', 'rank_ic', 'direction_accuracy', 'mse']].to_string()}", flush=True)
    return report


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
    """One fold's test metrics and cost-aware backtest, one row per predictor."""
    return summarize(test, names).join(backtest_table(run_backtests(cfg, test, names, horizon)))


def evaluate_walk_forward(cfg: RaycastConfig) -> tuple[pd.DataFrame, fs.Location]:
    """Retrain on each walk-forward fold; return every metric as mean and std over the folds, and the report.

    Each fold gets its own normalization statistics and target scaling from its own training rows: nothing of a
    later period reaches an earlier fold's model.
    """
    from raycast.train.run import train
    from raycast.features.store import fit_fold_normalizer

    features_dir = current_features_dir(cfg.storage)  # resolved once: every fold trains and scores on this one
    meta = load_meta(features_dir)
    frame = read_feature_frame(features_dir)
    folds = make_walk_forward(frame["date"], cfg.features)
    names = meta.features
    summaries, rows = [], []
    for k, fold in enumerate(folds):
        print(f"[raycast] walk-forward fold {k + 1}/{len(folds)}: test {fold.test.start.date()}..{fold.test.end.date()}", flush=True)
        normalizer = fit_fold_normalizer(
            features_dir, fold, names, cfg.features.normalization, cfg.features.clip
        )
        trained = train(cfg, split=fold, normalizer=normalizer, register=False, features_dir=features_dir)
        predictor = Predictor(trained.spec | {"version": f"fold-{k}"}, trained.bases, trained.ensemble, torch.device("cpu"))
        blocks = FeatureBlocks(frame, normalizer, predictor.window)
        ridge = fit_ridge_baseline(blocks, fold, cfg.evaluate.ridge_alpha)
        test = predictions_frame(predictor, blocks, fold.test, ridge)
        summary = fold_summary(cfg, test, [*predictor.bases, "ensemble", *BASELINES], meta.horizon)
        summaries.append(summary)
        rows.append(summary.assign(fold=k, test_start=fold.test.start, test_end=fold.test.end).reset_index())
    table = aggregate_folds(summaries)
    out_dir = fs.join(fs.absolute(cfg.storage), "runs", "walk_forward")
    with fs.local_dir(out_dir) as local_out_dir:
        pd.concat(rows, ignore_index=True).to_csv(local_out_dir / "folds.csv", index=False)  # every fold's own numbers
        report = write_report(
            local_out_dir, ReportInputs(title=f"raycast walk-forward ({len(folds)} folds)", walk_forward=table)
        )
    return table, fs.join(out_dir, report.name)
