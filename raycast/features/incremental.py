"""``raycast features --incremental``: a new feature dataset from the previous one plus what the new market bars change.

The previous feature dataset records the market data it was built from: each symbol's bar count and content hash
(``bars_per_symbol``, ``market_hashes`` in ``meta.json``). Against the current market version a symbol is

* unchanged: same hash. Its rows stay as they are.
* extended: its previous bars are, hash for hash, the first bars of its new history (an append added later days).
  Features at a date use bars up to that date only, so its rows stay too, except those of its last
  ``label_delay + horizon`` previous bars, whose label (and entry volume) waited for the new bars: those and the
  new dates' rows are computed.
* rewritten: anything else (a corrected or back-filled bar, a split adjusted into its history, a new symbol, one
  that now has enough history): all its rows are computed again.

The rows whose label is still pending are kept apart by the feature sink (``pending-*.parquet``), so the files of
settled rows are hard-linked into the new version; only a file that holds a rewritten symbol's rows is rewritten
without them. The indicators of a computed symbol run over its whole history: pandas' rolling windows and
cumulative sums carry float rounding from the first bar, so starting later would not reproduce a full build's
values bit for bit; what is saved is writing, reading back and fitting anything for the unchanged rows.

Normalization, split and walk-forward folds are the previous dataset's: the training period does not move with new
bars, so models trained on it keep being fed what they were trained on. The rows are identical, row for row, to
those a full ``raycast features`` on the same market version writes.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raycast import fs
from raycast.config import RaycastConfig

LINEAGE_KEYS = ("features", "window", "horizon", "label_delay", "max_label_gap_days")


def update_features(cfg: RaycastConfig) -> dict:
    """Publish the feature dataset of the current market version incrementally (see the module docstring).

    Falls back to a full :func:`~raycast.features.pipeline.build_features` when there is no previous dataset, when
    it was built with other feature settings, or when it predates the records an increment needs.
    """
    import ray

    from raycast.data.schema import symbol_hash
    from raycast.data.store import MANIFEST, current_version_dir, read_symbol_bars
    from raycast.features.pipeline import (
        PENDING_COLUMN,
        SKIP_COLUMN,
        _reason_kind,
        auto_symbols_per_task,
        build_features,
        featurize_symbols,
        skip_summary,
    )
    from raycast.features.sink import PENDING_PREFIX, FeatureRowsSink
    from raycast.features.spec import check_feature_names, min_history_bars
    from raycast.features.store import ROWS_DIR, current_features_dir, features_base
    from raycast.lineage import referenced_versions
    from raycast.runtime import init_ray
    from raycast.storage import new_version_dir, publish

    fc = cfg.features
    names = check_feature_names(fc.features)
    try:
        previous = current_features_dir(cfg.storage)
    except FileNotFoundError:
        return build_features(cfg) | {"incremental": False, "reason": "no previous feature dataset"}
    meta = json.loads(fs.read_text(fs.join(previous, "meta.json")))
    wanted = {"features": names, "window": fc.window, "horizon": fc.horizon, "label_delay": fc.label_delay,
              "max_label_gap_days": fc.max_label_gap_days}  # fmt: skip
    differs = [k for k in LINEAGE_KEYS if meta.get(k) != wanted[k]]
    market_dir = current_version_dir(cfg.storage)
    manifest = json.loads(fs.read_text(fs.join(market_dir, MANIFEST)))
    if differs or not meta.get("market_hashes") or not manifest.get("symbol_hashes"):
        why = f"settings differ: {', '.join(differs)}" if differs else "the previous dataset predates incremental builds"
        return build_features(cfg) | {"incremental": False, "reason": why}
    if meta["market_version"] == fs.name(market_dir):
        return {"incremental": True, "published": False, "path": fs.display(previous),
                "reason": f"already built from market version {meta['market_version']}"}  # fmt: skip

    span = fc.label_delay + fc.horizon
    need = int(meta["min_history_bars"]) if fc.min_history_bars is None else fc.min_history_bars
    had_rows = set(meta["symbols"])
    old_bars, old_hashes = meta["bars_per_symbol"], meta["market_hashes"]
    start_t: dict[str, int] = {}  # symbols to compute, from this bar number on
    skipped: dict[str, str] = {s: r for s, r in meta["skipped"].items() if manifest["symbol_hashes"].get(s) == old_hashes.get(s)}
    for symbol, n in manifest["rows_per_symbol"].items():
        new_hash = manifest["symbol_hashes"][symbol]
        if new_hash == old_hashes.get(symbol):
            continue  # unchanged: rows (or the reason it was skipped) stay
        if n < need:
            skipped[symbol] = f"too few bars ({n} < {need})"
            continue
        start_t[symbol] = 0
        n_old = old_bars.get(symbol, 0)
        if symbol in had_rows and 0 < n_old < n:
            head = read_symbol_bars(market_dir, symbol).iloc[:n_old]
            if symbol_hash(head) == old_hashes[symbol]:
                start_t[symbol] = max(0, n_old - span)  # extended: only its pending rows and the new ones
    gone = set(meta["symbols"]) - set(manifest["rows_per_symbol"])
    rewritten = {s for s, t in start_t.items() if t == 0} | (had_rows & (set(skipped) | gone))
    extended = set(start_t) - rewritten

    out_dir = new_version_dir(features_base(cfg.storage))
    rows_dir = fs.join(out_dir, ROWS_DIR)
    fs.makedirs(rows_dir)
    tag = fs.name(out_dir)
    removed = _carry_rows(fs.join(previous, ROWS_DIR), rows_dir, rewritten, rewritten | extended, PENDING_PREFIX, tag)

    written: dict[str, int] = {}
    dates_min, dates_max = [pd.Timestamp(meta["date_min"])], [pd.Timestamp(meta["date_max"])]
    if start_t:
        init_ray(cfg.ray)
        symbols = sorted(start_t)
        sink = FeatureRowsSink(str(rows_dir), names, "none", SKIP_COLUMN, PENDING_COLUMN, prefix=f"part-{tag}")
        per_task = fc.symbols_per_task or auto_symbols_per_task(len(symbols), ray.cluster_resources().get("CPU", 1))
        label = {"horizon": fc.horizon, "label_delay": fc.label_delay, "max_label_gap_days": fc.max_label_gap_days}
        ds = ray.data.from_items([{"symbol": s} for s in symbols], override_num_blocks=math.ceil(len(symbols) / per_task))
        ds = ds.map_batches(
            featurize_symbols,
            fn_kwargs={"market_dir": str(market_dir), "features": names, "pending_span": span, "start_t": start_t,
                       **label},  # fmt: skip
            batch_size=None,
            batch_format="pandas",
            num_cpus=fc.num_cpus_per_task,
        )
        ds.write_datasink(sink)
        skipped |= sink.skipped
        written = sink.rows_per_symbol
        if sink.stats is not None and len(sink.stats):
            dates_min.append(pd.Timestamp(sink.stats["date"].min()))
            dates_max.append(pd.Timestamp(sink.stats["date"].max()))
    symbols_now = sorted((had_rows - rewritten - gone) | set(written))
    counts: dict[str, int] = {}
    skipped = {s: r for s, r in skipped.items() if s not in symbols_now}
    for reason in skipped.values():
        counts[_reason_kind(reason)] = counts.get(_reason_kind(reason), 0) + 1
    new_meta = meta | {
        "market_version": fs.name(market_dir),
        "symbols": symbols_now,
        "skipped": dict(sorted(skipped.items())),
        "skipped_counts": counts,
        "n_rows": int(meta["n_rows"]) - removed + int(sum(written.values())),
        "date_min": str(min(dates_min).date()),
        "date_max": str(max(dates_max).date()),
        "bars_per_symbol": manifest["rows_per_symbol"],
        "market_hashes": manifest["symbol_hashes"],
        "incremental": {
            "previous_version": fs.name(previous),
            "symbols_extended": len(extended),
            "symbols_rewritten": len(rewritten),
            "rows_removed": removed,
            "rows_written": int(sum(written.values())),
        },
    }
    fs.write_text(fs.join(out_dir, "meta.json"), json.dumps(new_meta, indent=2))
    publish(features_base(cfg.storage), out_dir, protected=referenced_versions(cfg.storage, "features"))
    print(f"[raycast] {skip_summary(len(written), {s: r for s, r in skipped.items() if s in start_t})}", flush=True)
    return {
        "incremental": True,
        "published": True,
        "n_rows": new_meta["n_rows"],
        "date_min": new_meta["date_min"],
        "date_max": new_meta["date_max"],
        "market_version": new_meta["market_version"],
        "n_symbols": len(symbols_now),
        "n_skipped": len(skipped),
        "path": fs.display(out_dir),
    } | new_meta["incremental"]


def _carry_rows(
    source: fs.Location, target: fs.Location, rewritten: set[str], recomputed: set[str], pending_prefix: str, tag: str
) -> int:
    """Bring the previous rows that stay into ``target``; returns how many previous rows were left out.

    Files of settled rows are linked, or rewritten without the ``rewritten`` symbols' rows when they hold any; the
    pending rows of symbols not ``recomputed`` are gathered into one file.
    """
    removed = 0
    pending: list[pa.Table] = []
    for name in fs.list_names(source):
        if not name.endswith(".parquet"):
            continue
        src, dst = fs.join(source, name), fs.join(target, name)
        filesystem, inner = fs.resolve(src)
        if name.startswith(pending_prefix):
            table = pq.read_table(inner, filesystem=filesystem, partitioning=None)
            keep = pc.invert(pc.is_in(table.column("symbol"), pa.array(sorted(recomputed), pa.string())))
            pending.append(table.filter(keep))
            removed += table.num_rows - pending[-1].num_rows
            continue
        symbols = pq.read_table(inner, columns=["symbol"], filesystem=filesystem, partitioning=None).column("symbol")
        drop = pc.is_in(symbols, pa.array(sorted(rewritten), pa.string()))
        if not pc.any(drop).as_py():
            fs.link(src, dst)
            continue
        table = pq.read_table(inner, filesystem=filesystem, partitioning=None).filter(pc.invert(drop))
        removed += len(symbols) - table.num_rows
        if table.num_rows:
            _write(table, dst)
    kept = [t for t in pending if t.num_rows]
    if kept:
        _write(pa.concat_tables(kept), fs.join(target, f"{pending_prefix}kept-{tag}.parquet"))
    return removed


def _write(table: pa.Table, path: fs.Location) -> None:
    filesystem, inner = fs.resolve(path)
    pq.write_table(table, inner, filesystem=filesystem, use_dictionary=["symbol"])
