"""``raycast ingest``: load the configured source, validate it, publish a new market dataset version.

``raycast ingest --append FILE`` adds the bars of one file (or per-symbol directory) to the current version
instead: new dates, new symbols and corrected bars, validated as a full ingest validates them (see
:func:`append_bars`).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from raycast import fs
from raycast.config import IngestConfig, RaycastConfig
from raycast.data.quality import CHECKS, apply_quality_policies, quality_summary
from raycast.data.schema import VALUE_COLUMNS
from raycast.data.store import MANIFEST, AppendPlan, append_market_data, write_market_data
from raycast.data.validate import no_valid_rows, reason_counts, validate_bars

log = logging.getLogger(__name__)


def load_source(cfg: IngestConfig, label_delay: int = 1) -> tuple[pd.DataFrame, str, list[str], dict | None]:
    """(raw bars, source label, source list for the manifest, synthetic generator info or None).

    ``label_delay`` is the features': a synthetic universe plants its signal on the label they will train on.
    """
    if cfg.source == "synthetic":
        from raycast.data.synthetic import generate_synthetic

        if cfg.synthetic.messy:
            from raycast.data.messy import make_messy

            messy = make_messy(cfg.synthetic, label_delay)
            return messy.bars, "synthetic", ["synthetic:messy"], messy.synthetic.info | {"messy": messy.expected}
        universe = generate_synthetic(cfg.synthetic, label_delay)
        return universe.bars, "synthetic", ["synthetic"], universe.info
    if cfg.source == "sample":
        from raycast.data.sample import load_sample, sample_file

        raw = load_sample(cfg.sample)
        return raw, "sample", [f"sample:bokeh-sampledata:{sample_file().name}"], None
    from raycast.data.files import read_user_files

    raw = read_user_files(cfg.files.path, adjust=cfg.files.adjust)
    return raw, "files", sorted(raw["source"].unique().tolist()) if len(raw) else [str(cfg.files.path)], None


def ingest(cfg: RaycastConfig) -> dict:
    """Ingest ``cfg.ingest.source`` into ``cfg.storage``; returns the published manifest."""
    raw, label, sources, synthetic = load_source(cfg.ingest, cfg.features.label_delay)
    bars, rejected = validate_bars(raw, label, cfg.ingest.files.date_order)
    if bars.empty:
        raise no_valid_rows(sources, len(raw), rejected)
    bars, quality = apply_quality_policies(bars, cfg.ingest.quality)
    print(f"[raycast] {quality_summary(quality)}", flush=True)
    version = write_market_data(
        cfg.storage, bars, rejected, {"sources": sources, "synthetic": synthetic, "quality": quality}
    )
    manifest = json.loads(fs.read_text(fs.join(version, MANIFEST)))
    log.info(
        "ingested %d rows for %d symbols (%s to %s) into %s; %d rows rejected",
        manifest["rows"],
        manifest["n_symbols"],
        manifest["date_min"],
        manifest["date_max"],
        fs.display(version),
        manifest["rejected_total"],
    )
    return manifest


MAX_LISTED_CORRECTIONS = 100


def append_bars(cfg: RaycastConfig, path: str) -> dict:
    """Add the bars in ``path`` (a file or per-symbol directory, as ``ingest.files`` reads) to the current market
    version; returns the append's summary with ``published`` and the resulting manifest's fields.

    A bar on a (symbol, date) that is already stored with the same values changes nothing, so re-sending a day
    publishes no new version; one with other values is a correction, counted (and listed) in the manifest's
    ``append`` section. Rejected rows are added to the version's rejected rows. The quality policies run on each
    touched symbol's stored bars joined with its new ones (its last bars, or its whole history when the append
    changes stored bars: see :func:`plan_append`), so a split in the new bars is adjusted as a full ingest would.
    """
    from functools import partial

    from raycast.data.files import read_user_files

    raw = read_user_files(path, adjust=cfg.ingest.files.adjust)
    bars, rejected = validate_bars(raw, "files", cfg.ingest.files.date_order)
    sources = sorted(raw["source"].unique().tolist()) if len(raw) else [str(path)]
    if bars.empty:
        raise no_valid_rows(sources, len(raw), rejected)
    planner = partial(plan_append, bars, rejected, sources, cfg.ingest.quality)
    version, plan = append_market_data(cfg.storage, planner)
    summary = dict(plan.summary)
    summary["published"] = version is not None
    if version is None:
        log.info("append of %s changes nothing: no new market version", ", ".join(sources))
        return summary
    manifest = plan.manifest
    print(f"[raycast] {summary['quality']}", flush=True)
    log.info(
        "appended %d new and %d corrected rows (%d symbols touched) into %s",
        summary["new_rows"],
        summary["corrected_rows"],
        summary["symbols_touched"],
        fs.display(version),
    )
    return summary | {k: manifest[k] for k in ("n_symbols", "date_min", "date_max", "rows", "rejected_total")}


def plan_append(
    new: pd.DataFrame, rejected: pd.DataFrame, sources: list[str], quality_cfg, previous_dir, old: dict, tails
) -> AppendPlan:
    """The :class:`AppendPlan` of validated bars ``new`` on the version at ``previous_dir`` (manifest ``old``,
    :class:`~raycast.data.store.Tails` ``tails``).

    Planned on each touched symbol's tail, which holds every stored bar a new one can be compared with or a quality
    check looks back on, as long as the new bars come after the tail's start. A symbol whose new bars reach further
    back, or whose stored bars the append changes (a correction, a back-filled gap, a split adjusted into them, a
    cut), is planned again on its whole history. Whole-frame operations throughout: an append touches every symbol
    of the universe on a normal day.
    """
    from raycast.data.schema import BAR_COLUMNS, canonical_bars, empty_bars
    from raycast.data.store import read_bars_of

    values = list(VALUE_COLUMNS)
    known = {s for s in new["symbol"].unique() if s in old["rows_per_symbol"]}
    stored = tails.bars[tails.bars["symbol"].isin(known)]
    n_tail = stored.groupby("symbol").size()
    partial = {s for s in known if n_tail[s] < old["rows_per_symbol"][s]}  # a tail, not the whole history
    look_back = max(quality_cfg.stale_days, quality_cfg.zero_volume_days) + 1
    reach = new.groupby("symbol")["date"].min()
    tail_start = stored.groupby("symbol")["date"].min()
    whole = {s for s in partial if reach[s] < tail_start[s] or n_tail[s] < look_back}

    def with_histories(stored: pd.DataFrame, symbols: set[str]) -> pd.DataFrame:
        if not symbols:
            return stored
        full = read_bars_of(previous_dir, sorted(symbols))
        return canonical_bars(pd.concat([stored[~stored["symbol"].isin(symbols)], full]), check=False)

    stored, partial = with_histories(stored, whole), partial - whole
    merged = new.merge(stored, on=["symbol", "date"], how="left", suffixes=("", "_old"))
    has_old = merged["open_old"].notna().to_numpy()
    same = has_old & np.logical_and.reduce([(merged[c] == merged[f"{c}_old"]).to_numpy() for c in values])
    corrected, fresh = has_old & ~same, ~has_old
    changed = merged.loc[corrected | fresh, list(BAR_COLUMNS)]
    new_symbols = sorted(set(new["symbol"].unique()) - known)
    summary = {
        "sources": sources,
        "new_rows": int(fresh.sum()),
        "corrected_rows": int(corrected.sum()),
        "unchanged_rows": int(same.sum()),
        "corrections": [
            {"symbol": str(r.symbol), "date": str(r.date.date())}
            for r in merged.loc[corrected, ["symbol", "date"]].head(MAX_LISTED_CORRECTIONS).itertuples()
        ],
        "new_symbols": [str(s) for s in new_symbols],
        "symbols_touched": int(changed["symbol"].nunique()),
        "rejected": reason_counts(rejected),
    }
    if changed.empty:
        return AppendPlan(empty_bars(), empty_bars(), rejected, sources, old.get("quality"), summary, unchanged=True)

    touched = set(changed["symbol"].unique())
    corrected_keys = merged.loc[corrected, ["symbol", "date"]].assign(_corrected=True)
    since = changed.groupby("symbol")["date"].min()
    bad = set(merged.loc[corrected, "symbol"])
    while True:
        base = stored[stored["symbol"].isin(touched)]
        base = base.merge(corrected_keys, on=["symbol", "date"], how="left")
        base = base[base["_corrected"].isna()].drop(columns="_corrected")
        combined = canonical_bars(pd.concat([base, changed], ignore_index=True))
        # extensions: only dates after the stored ones, nothing corrected; the stored files can stay as they are
        last_stored = stored.groupby("symbol")["date"].max()
        n_stored = stored.groupby("symbol").size()
        clean = {s for s in touched & set(last_stored.index) if s not in bad and since[s] > last_stored[s]}
        adjusted, fresh_report = apply_quality_policies(combined, quality_cfg, since.to_dict())
        # ... unless a quality policy changed the stored bars (a split adjusted into them, a cut)
        kept = adjusted[adjusted["symbol"].isin(clean)].merge(stored, on=["symbol", "date"], suffixes=("", "_old"))
        equal = np.logical_and.reduce([(kept[c] == kept[f"{c}_old"]).to_numpy() for c in values])
        untouched_rows = kept[equal].groupby("symbol").size()
        per_symbol = adjusted.groupby("symbol").size()
        extended = {
            s for s in clean if untouched_rows.get(s, 0) == n_stored[s] and per_symbol.get(s, 0) > n_stored[s]
        }
        redo = (touched & partial) - extended  # a rewrite needs the whole history
        if not redo:
            break
        stored, partial = with_histories(stored, redo), partial - redo
    is_extended = adjusted["symbol"].isin(extended).to_numpy()
    after = adjusted["date"].to_numpy() > adjusted["symbol"].map(last_stored).to_numpy()
    summary["symbols_rewritten"] = len(touched) - len(extended)
    summary["quality"] = quality_summary(fresh_report)
    return AppendPlan(
        adjusted[~is_extended],
        adjusted[is_extended & after],
        rejected,
        sources,
        _merge_quality(old.get("quality"), fresh_report),
        summary,
    )


def _merge_quality(previous: dict | None, fresh: dict) -> dict:
    """The previous version's quality report plus the occurrences an append found (each counted once)."""
    out = {}
    for check in CHECKS:
        before = (previous or {}).get(check) or {"events": 0, "symbols": {}, "rows_cut": 0}
        now = fresh[check]
        symbols = dict(before.get("symbols", {}))
        for symbol, n in now["symbols"].items():
            symbols[symbol] = symbols.get(symbol, 0) + n
        out[check] = {
            "policy": now["policy"],
            "events": int(before.get("events", 0)) + now["events"],
            "symbols": dict(sorted(symbols.items())),
            "rows_cut": int(before.get("rows_cut", 0)) + now["rows_cut"],
        }
    for check in ("splits", "bad_ticks"):  # the ones listed one by one
        out[check]["found"] = list((previous or {}).get(check, {}).get("found", [])) + fresh[check]["found"]
    return out
