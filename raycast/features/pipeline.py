"""``raycast features``: per-symbol features computed across Ray workers with Ray Data.

The market dataset is already partitioned by symbol, so no shuffle is needed: a dataset of symbol names is
split into batches of ``symbols_per_task`` symbols (by default about three tasks per CPU), each Ray Data task
reads its symbols' Parquet files, computes their features with pandas-ta and emits one block of whole symbols.
Windows are not built here: the feature dataset keeps each day once, and windows are cut on the fly when the
data is consumed.

The same task writes its block (``FeatureRowsSink``, fused with the featurizing map) and returns per-date
statistics of it, from which the driver fits the training-period normalization: the rows are written once and
never read back (except for ``robust`` normalization, whose quantiles do not merge).
"""

from __future__ import annotations

import json
import math

import pandas as pd

from raycast import fs
from raycast.config import RaycastConfig
from raycast.features.normalize import MERGEABLE, merge_partial_stats
from raycast.features.spec import FEATURE_SPEC_VERSION, check_feature_names, compute_symbol_features
from raycast.features.splits import make_split, make_walk_forward
from raycast.features.store import ROWS_DIR, features_base, fit_fold_normalizer
from raycast.storage import new_version_dir, publish


def featurize_symbols(batch: pd.DataFrame, market_dir: str, horizon: int, features: list[str]) -> pd.DataFrame:
    """Ray Data batch function: symbol names in, their feature rows out (whole symbols, date-sorted)."""
    frames = []
    for symbol in batch["symbol"]:
        filesystem, path = fs.resolve(fs.join(market_dir, f"symbol={symbol}", "data.parquet"))
        bars = pd.read_parquet(path, filesystem=filesystem)
        bars["symbol"] = symbol
        frames.append(compute_symbol_features(bars, horizon=horizon, features=features))
    return pd.concat(frames, ignore_index=True)


# Each Ray Data task costs a few hundred milliseconds of scheduling and hand-over beyond its work, so tasks
# should be few and large; a few per CPU still lets a fast worker take over a slow one's share at the end.
TASKS_PER_CPU = 3


def auto_symbols_per_task(n_symbols: int, cpus: float) -> int:
    """Symbols per task for about ``TASKS_PER_CPU`` tasks per CPU (500 symbols on 2 CPUs: 6 tasks of 84)."""
    return max(1, math.ceil(n_symbols / max(1, round(cpus * TASKS_PER_CPU))))


def build_features(cfg: RaycastConfig) -> dict:
    """Featurize the current market dataset and publish a new feature dataset; returns its summary."""
    import ray

    from raycast.data.store import current_version_dir, list_symbols
    from raycast.features.sink import FeatureRowsSink
    from raycast.runtime import init_ray

    fc = cfg.features
    names = check_feature_names(fc.features)
    market_dir = current_version_dir(cfg.storage)  # resolved once: a concurrent ingest cannot mix versions
    symbols = list_symbols(cfg.storage)
    init_ray(cfg.ray)

    out_dir = new_version_dir(features_base(cfg.storage))
    rows_dir = fs.join(out_dir, ROWS_DIR)
    fs.makedirs(rows_dir)
    sink = FeatureRowsSink(str(rows_dir), names, fc.normalization)
    per_task = fc.symbols_per_task or auto_symbols_per_task(len(symbols), ray.cluster_resources().get("CPU", 1))
    # One fused operator (featurize + write) has no other operator to reserve resources from; with reservation
    # on, Ray Data runs a single task until the first one finishes (measured: the second CPU idled ~1.2 s).
    context = ray.data.DataContext.get_current()
    reservation, context.op_resource_reservation_enabled = context.op_resource_reservation_enabled, False
    try:
        ds = ray.data.from_items([{"symbol": s} for s in symbols], override_num_blocks=math.ceil(len(symbols) / per_task))
        ds = ds.map_batches(
            featurize_symbols,
            fn_kwargs={"market_dir": str(market_dir), "horizon": fc.horizon, "features": names},
            # One block, one task. A batch size would bundle blocks up to it: 83-symbol blocks with a batch size of
            # 84 ran as 166-symbol tasks, half as many as planned.
            batch_size=None,
            batch_format="pandas",
            num_cpus=fc.num_cpus_per_task,
        )
        ds.write_datasink(sink)
    finally:
        context.op_resource_reservation_enabled = reservation

    # Splits and normalization statistics come from the training period only.
    stats = sink.stats
    if stats is None or stats["n"].sum() == 0:
        raise ValueError(
            f"no feature rows: every symbol has fewer bars than the indicator warm-up ({fs.display(market_dir)})"
        )
    dates = stats["date"].to_numpy()
    split = make_split(dates, fc)
    if fc.normalization in MERGEABLE:
        in_train = stats["date"] <= split.train.end
        normalizer = merge_partial_stats(stats[in_train], names, fc.normalization, fc.clip)
    else:  # quantiles do not merge: read the training rows back
        normalizer = fit_fold_normalizer(out_dir, split, names, fc.normalization, fc.clip)
    folds = [f.to_json() for f in make_walk_forward(dates, fc)]

    meta = {
        "spec_version": FEATURE_SPEC_VERSION,
        "features": names,
        "window": fc.window,
        "horizon": fc.horizon,
        "market_version": fs.name(market_dir),
        "symbols": symbols,
        "n_rows": int(stats["n"].sum()),
        "date_min": str(pd.Timestamp(dates.min()).date()),
        "date_max": str(pd.Timestamp(dates.max()).date()),
        "split": split.to_json(),
        "walk_forward": folds,
        "normalizer": normalizer.to_json(),
    }
    fs.write_text(fs.join(out_dir, "meta.json"), json.dumps(meta, indent=2))
    publish(features_base(cfg.storage), out_dir)
    return {k: meta[k] for k in ("spec_version", "n_rows", "date_min", "date_max", "split", "market_version")} | {
        "n_symbols": len(symbols),
        "n_features": len(names),
        "path": fs.display(out_dir),
    }
