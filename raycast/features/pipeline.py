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

import numpy as np
import pandas as pd

from raycast import fs
from raycast.config import FeatureConfig, RaycastConfig
from raycast.features.normalize import MERGEABLE, Normalizer, merge_partial_stats
from raycast.features.spec import (
    FEATURE_SPEC_VERSION,
    WARMUP_BARS,
    check_feature_names,
    compute_symbol_features,
    min_history_bars,
)
from raycast.features.splits import Split, make_split, make_walk_forward
from raycast.features.store import ROWS_DIR, features_base, fit_fold_normalizer
from raycast.lineage import referenced_versions
from raycast.storage import new_version_dir, publish


SKIP_COLUMN = "skip_reason"
"""Set on the one placeholder row a symbol that could not be featurized emits; the sink counts and drops it."""
PENDING_COLUMN = "label_pending"
"""True on the rows among a symbol's last label-span bars (their label waits for later bars); the sink writes them
to a file of their own and drops the column."""


def featurize_symbols(
    batch: pd.DataFrame,
    market_dir: str,
    features: list[str],
    progress=None,
    pending_span: int | None = None,
    start_t: dict[str, int] | None = None,
    **label,
) -> pd.DataFrame:
    """Ray Data batch function: symbol names in, their feature rows out (whole symbols, date-sorted).

    A symbol whose features cannot be computed does not fail the task (and with it the job): it emits a
    placeholder row naming the reason, so the stage finishes and reports it. ``label`` holds the label settings
    of :func:`compute_symbol_features`. ``progress`` is the driver's progress board: each symbol done is counted
    there. With ``pending_span`` the rows of the last that many bars are marked in :data:`PENDING_COLUMN`; with
    ``start_t`` only a symbol's rows from that bar number on are returned (an incremental build: the indicators
    still run over the whole history, see :mod:`raycast.features.incremental`).
    """
    from raycast.data.store import read_symbol_bars

    frames, counted = [], None
    for symbol in batch["symbol"]:
        try:
            bars = read_symbol_bars(market_dir, symbol)  # every file of the symbol (an append adds some)
            rows = compute_symbol_features(bars, features=features, **label)
            reason = None if len(rows) else "no complete feature row (an indicator is undefined on every bar)"
            if pending_span is not None:
                rows[PENDING_COLUMN] = rows["t"].to_numpy() >= len(bars) - pending_span
            if start_t is not None and reason is None:
                rows = rows[rows["t"].to_numpy() >= start_t.get(symbol, 0)].reset_index(drop=True)
        except Exception as err:  # noqa: BLE001 - any failure is this symbol's, reported with its name
            rows, reason = None, f"features failed: {type(err).__name__}: {err}"
        if reason is not None:
            rows = _placeholder(symbol, features)
            if pending_span is not None:
                rows[PENDING_COLUMN] = False
        frames.append(rows.assign(**{SKIP_COLUMN: reason}))
        if progress is not None:
            counted = progress.push.remote("features", {"kind": "features", "advance": 1})
    if counted is not None:  # the board has this task's count before the stage can end
        import ray

        ray.get(counted)
    return pd.concat(frames, ignore_index=True)


def _placeholder(symbol: str, features: list[str]) -> pd.DataFrame:
    """One row with the feature rows' columns and dtypes (so the batch keeps its schema), standing for ``symbol``."""
    empty = compute_symbol_features(pd.DataFrame(columns=["date", "open", "high", "low", "close", "volume"]), features=features)
    row = empty.reindex([0])  # one all-missing row: floats NaN, the date NaT
    return row.assign(symbol=symbol, t=np.int32(-1)).astype(empty.dtypes.to_dict() | {"symbol": "str"})


# Each Ray Data task costs a few hundred milliseconds of scheduling and hand-over beyond its work, so tasks
# should be few and large; a few per CPU still lets a fast worker take over a slow one's share at the end.
TASKS_PER_CPU = 3


def auto_symbols_per_task(n_symbols: int, cpus: float) -> int:
    """Symbols per task for about ``TASKS_PER_CPU`` tasks per CPU (500 symbols on 2 CPUs: 6 tasks of 84)."""
    return max(1, math.ceil(n_symbols / max(1, round(cpus * TASKS_PER_CPU))))


def plan_symbols(rows_per_symbol: dict[str, int], need: int) -> tuple[list[str], dict[str, str]]:
    """(symbols to featurize, {symbol: reason} for those skipped because their history is too short)."""
    short = {s: f"too few bars ({n} < {need})" for s, n in rows_per_symbol.items() if n < need}
    return sorted(s for s in rows_per_symbol if s not in short), short


def skip_summary(n_done: int, skipped: dict[str, str], shown: int = 8) -> str:
    """One line for the console: ``featurized 480 symbols, skipped 20: too few bars (12): A, B, ...; ...``."""
    line = f"featurized {n_done} symbols"
    if not skipped:
        return line
    by_reason: dict[str, list[str]] = {}
    for symbol, reason in sorted(skipped.items()):
        by_reason.setdefault(_reason_kind(reason), []).append(symbol)
    parts = [
        f"{kind} ({len(syms)}): {', '.join(syms[:shown])}{', ...' if len(syms) > shown else ''}"
        for kind, syms in by_reason.items()
    ]
    return f"{line}, skipped {len(skipped)}: " + "; ".join(parts)


def _reason_kind(reason: str) -> str:
    """A reason without its per-symbol details: ``too few bars (12 < 95)`` -> ``too few bars``."""
    return reason.split(" (")[0].split(":")[0]


def training_normalizer(
    stats: pd.DataFrame, split: Split, features_dir: fs.Location, names: list[str], fc: FeatureConfig
) -> Normalizer:
    """The normalization of ``split``'s training rows only, from the write tasks' per-date ``stats`` (see
    :func:`~raycast.features.normalize.partial_stats`) where the method merges, else from the training rows read
    back from ``features_dir``."""
    if fc.normalization in MERGEABLE:
        in_train = stats["date"] <= split.train.end
        return merge_partial_stats(stats[in_train], names, fc.normalization, fc.clip)
    return fit_fold_normalizer(features_dir, split, names, fc.normalization, fc.clip)  # quantiles do not merge


def build_features(cfg: RaycastConfig) -> dict:
    """Featurize the current market dataset and publish a new feature dataset; returns its summary.

    Symbols that cannot give one training window (too short a history) are skipped before any work, symbols whose
    features fail are skipped by the task that tried them; both are listed with their reason in the dataset's
    ``meta.json`` and counted in the summary, and neither stops the stage.
    """
    import ray

    from raycast.data.store import MANIFEST, current_version_dir
    from raycast.data.errors import DataError
    from raycast.console import progress
    from raycast.features.sink import FeatureRowsSink
    from raycast.runtime import init_ray

    fc = cfg.features
    names = check_feature_names(fc.features)
    market_dir = current_version_dir(cfg.storage)  # resolved once: a concurrent ingest cannot mix versions
    market_manifest = json.loads(fs.read_text(fs.join(market_dir, MANIFEST)))
    bars_per_symbol = market_manifest["rows_per_symbol"]
    need = fc.min_history_bars or min_history_bars(fc.window, fc.horizon, fc.label_delay)
    symbols, skipped = plan_symbols(bars_per_symbol, need)
    if not symbols:
        raise DataError(
            f"no symbol has the {need} bars the features need (warm-up {WARMUP_BARS} + window {fc.window} + label "
            f"{fc.label_delay + fc.horizon}); the longest history has {max(bars_per_symbol.values(), default=0)} "
            f"({fs.display(market_dir)})"
        )
    init_ray(cfg.ray)

    out_dir = new_version_dir(features_base(cfg.storage))
    rows_dir = fs.join(out_dir, ROWS_DIR)
    fs.makedirs(rows_dir)
    sink = FeatureRowsSink(str(rows_dir), names, fc.normalization, SKIP_COLUMN, PENDING_COLUMN)
    per_task = fc.symbols_per_task or auto_symbols_per_task(len(symbols), ray.cluster_resources().get("CPU", 1))
    label = {"horizon": fc.horizon, "label_delay": fc.label_delay, "max_label_gap_days": fc.max_label_gap_days}
    # One fused operator (featurize + write) has no other operator to reserve resources from; with reservation
    # on, Ray Data runs a single task until the first one finishes (measured: the second CPU idled ~1.2 s).
    context = ray.data.DataContext.get_current()
    reservation, context.op_resource_reservation_enabled = context.op_resource_reservation_enabled, False
    try:
        with progress.session() as shown:
            shown.update("features", kind="features", label="features", total=len(symbols), done=0)
            blocks = math.ceil(len(symbols) / per_task)
            ds = ray.data.from_items([{"symbol": s} for s in symbols], override_num_blocks=blocks)
            ds = ds.map_batches(
                featurize_symbols,
                fn_kwargs={"market_dir": str(market_dir), "features": names, "progress": shown.board(),
                           "pending_span": fc.label_delay + fc.horizon, **label},  # fmt: skip
                # One block, one task. A batch size would bundle blocks up to it: 83-symbol blocks with a batch
                # size of 84 ran as 166-symbol tasks, half as many as planned.
                batch_size=None,
                batch_format="pandas",
                num_cpus=fc.num_cpus_per_task,
            )
            ds.write_datasink(sink)
    finally:
        context.op_resource_reservation_enabled = reservation

    skipped |= sink.skipped
    featurized = sorted(sink.rows_per_symbol)
    # Splits and normalization statistics come from the training period only.
    stats = sink.stats
    if stats is None or stats["n"].sum() == 0:
        raise DataError(f"no feature rows: {skip_summary(0, skipped)} ({fs.display(market_dir)})")
    dates = stats["date"].to_numpy()
    split = make_split(dates, fc)
    normalizer = training_normalizer(stats, split, out_dir, names, fc)
    folds = [f.to_json() for f in make_walk_forward(dates, fc)]

    counts: dict[str, int] = {}
    for reason in skipped.values():
        counts[_reason_kind(reason)] = counts.get(_reason_kind(reason), 0) + 1
    meta = {
        "spec_version": FEATURE_SPEC_VERSION,
        "features": names,
        "window": fc.window,
        "horizon": fc.horizon,
        "label_delay": fc.label_delay,
        "max_label_gap_days": fc.max_label_gap_days,
        "min_history_bars": need,
        "market_version": fs.name(market_dir),
        "symbols": featurized,
        "skipped": dict(sorted(skipped.items())),
        "skipped_counts": counts,
        "n_rows": int(stats["n"].sum()),
        "date_min": str(pd.Timestamp(dates.min()).date()),
        "date_max": str(pd.Timestamp(dates.max()).date()),
        "split": split.to_json(),
        "walk_forward": folds,
        "normalizer": normalizer.to_json(),
        # what an incremental build compares the next market version with (raycast.features.incremental)
        "bars_per_symbol": bars_per_symbol,
        "market_hashes": market_manifest.get("symbol_hashes"),
    }
    fs.write_text(fs.join(out_dir, "meta.json"), json.dumps(meta, indent=2))
    publish(features_base(cfg.storage), out_dir, protected=referenced_versions(cfg.storage, "features"))
    print(f"[raycast] {skip_summary(len(featurized), skipped)}", flush=True)
    return {k: meta[k] for k in ("spec_version", "n_rows", "date_min", "date_max", "split", "market_version")} | {
        "n_symbols": len(featurized),
        "n_skipped": len(skipped),
        "skipped_counts": counts,
        "n_features": len(names),
        "path": fs.display(out_dir),
    }
