"""``raycast ingest``: load the configured source, validate it, publish a new market dataset version."""

from __future__ import annotations

import json
import logging

import pandas as pd

from raycast import fs
from raycast.config import IngestConfig, RaycastConfig
from raycast.data.errors import DataError
from raycast.data.quality import apply_quality_policies, quality_summary
from raycast.data.store import MANIFEST, write_market_data
from raycast.data.validate import validate_bars

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
