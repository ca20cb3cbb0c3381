"""``raycast ingest``: load the configured source, validate it, publish a new market dataset version.

``raycast ingest --append FILE`` adds the bars of one file (or per-symbol directory) to the current version
instead: new dates, new symbols and corrected bars, validated as a full ingest validates them (see
:func:`append_bars`).
"""

from __future__ import annotations

import json
import logging

import pandas as pd

from raycast import fs
from raycast.config import IngestConfig, RaycastConfig
from raycast.data.errors import DataError
from raycast.data.quality import CHECKS, apply_quality_policies, quality_summary
from raycast.data.schema import VALUE_COLUMNS
from raycast.data.store import MANIFEST, AppendPlan, append_market_data, read_symbol_bars, write_market_data
from raycast.data.validate import reason_counts, validate_bars

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
    bars, rejected = validate_bars(raw, label)
    if bars.empty:
        reasons = rejected["reason"].value_counts().to_dict()
        raise DataError(f"no valid rows in {', '.join(sources)} ({len(raw)} rows read; rejected: {reasons})")
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
    touched symbol's stored history joined with its new bars, so a split in the new bars is adjusted as a full
    ingest would.
    """
    from functools import partial

    from raycast.data.files import read_user_files

    raw = read_user_files(path, adjust=cfg.ingest.files.adjust)
    bars, rejected = validate_bars(raw, "files")
    sources = sorted(raw["source"].unique().tolist()) if len(raw) else [str(path)]
    if bars.empty:
        reasons = rejected["reason"].value_counts().to_dict()
        raise DataError(f"no valid rows in {', '.join(sources)} ({len(raw)} rows read; rejected: {reasons})")
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
    new: pd.DataFrame, rejected: pd.DataFrame, sources: list[str], quality_cfg, previous_dir, old: dict
) -> AppendPlan:
    """The :class:`AppendPlan` of validated bars ``new`` on the version at ``previous_dir`` (manifest ``old``)."""
    known = set(old["rows_per_symbol"])
    touched, since, stored_len = {}, {}, {}
    clean_extension: set[str] = set()  # only later dates, nothing corrected: the stored files can stay
    counts = {"new_rows": 0, "corrected_rows": 0, "unchanged_rows": 0}
    corrections, new_symbols = [], []
    for symbol, rows in new.groupby("symbol", sort=True):
        rows = rows.set_index("date")
        if symbol not in known:
            new_symbols.append(str(symbol))
            counts["new_rows"] += len(rows)
            touched[symbol], since[symbol] = rows, rows.index.min()
            continue
        stored = read_symbol_bars(previous_dir, symbol).set_index("date")
        common = rows.index.intersection(stored.index)
        values = list(VALUE_COLUMNS)
        same = (stored.loc[common, values].to_numpy() == rows.loc[common, values].to_numpy()).all(axis=1)
        corrected, fresh = common[~same], rows.index.difference(stored.index)
        counts["unchanged_rows"] += int(same.sum())
        counts["corrected_rows"] += len(corrected)
        counts["new_rows"] += len(fresh)
        corrections += [{"symbol": str(symbol), "date": str(d.date())} for d in corrected]
        if not len(corrected) and not len(fresh):
            continue
        combined = stored.copy()
        combined.loc[corrected, values] = rows.loc[corrected, values]
        combined = pd.concat([combined, rows.loc[fresh]]).sort_index()
        touched[symbol] = combined
        since[symbol] = min([*corrected, *fresh])
        stored_len[symbol] = len(stored)
        if not len(corrected) and fresh.min() > stored.index.max():
            clean_extension.add(symbol)
    summary = {
        "sources": sources,
        **counts,
        "corrections": corrections[:MAX_LISTED_CORRECTIONS],
        "new_symbols": new_symbols,
        "symbols_touched": len(touched),
        "rejected": reason_counts(rejected),
    }
    if not touched:
        return AppendPlan({}, {}, rejected, sources, old.get("quality"), summary, unchanged=True)
    frame = pd.concat([t.reset_index().assign(symbol=s) for s, t in touched.items()], ignore_index=True)
    adjusted, fresh_report = apply_quality_policies(frame, quality_cfg, since)
    histories, extended = {}, {}
    for symbol, history in adjusted.groupby("symbol", sort=True):
        history = history.reset_index(drop=True)
        histories[symbol] = history
        n_old = stored_len.get(symbol, 0)
        if symbol in clean_extension and len(history) > n_old:
            head = history.iloc[:n_old].set_index("date")[list(VALUE_COLUMNS)]
            stored = touched[symbol].iloc[:n_old][list(VALUE_COLUMNS)]
            if head.index.equals(stored.index) and (head.to_numpy() == stored.to_numpy()).all():
                extended[symbol] = len(history) - n_old  # the policies left the stored bars as they were
    summary["symbols_rewritten"] = len(histories) - len(extended)
    summary["quality"] = quality_summary(fresh_report)
    return AppendPlan(histories, extended, rejected, sources, _merge_quality(old.get("quality"), fresh_report), summary)


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
    out["splits"]["found"] = list((previous or {}).get("splits", {}).get("found", [])) + fresh["splits"]["found"]
    return out
