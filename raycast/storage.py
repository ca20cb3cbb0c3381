"""Versioned directories published atomically.

A dataset is written into a fresh ``v-...`` directory next to the published ones; only when it is complete does
a one-line ``CURRENT`` file (replaced atomically with ``os.replace``) point readers at it. A crash at any moment
before that leaves the previous version current and intact.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from pathlib import Path

CURRENT = "CURRENT"


def new_version_dir(base: str | Path) -> Path:
    """A new, empty, not yet published version directory under ``base``."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    path = base / f"v-{stamp}-{uuid.uuid4().hex[:6]}"
    path.mkdir()
    return path


def publish(base: str | Path, version_dir: str | Path, keep: int = 2) -> None:
    """Point ``base/CURRENT`` at ``version_dir`` atomically, then prune all but the newest ``keep`` versions."""
    base, version_dir = Path(base), Path(version_dir)
    tmp = base / f".{CURRENT}.{uuid.uuid4().hex}"
    tmp.write_text(version_dir.name + "\n")
    with open(tmp) as f:
        os.fsync(f.fileno())
    os.replace(tmp, base / CURRENT)
    versions = sorted(p for p in base.glob("v-*") if p.is_dir() and p.name != version_dir.name)
    for old in versions[: max(0, len(versions) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)


def current_version_dir(base: str | Path, what: str = "dataset", hint: str = "") -> Path:
    """The published version under ``base``; a clear error when there is none."""
    pointer = Path(base) / CURRENT
    if not pointer.is_file():
        raise FileNotFoundError(f"no {what} at {base}" + (f": {hint}" if hint else ""))
    path = Path(base) / pointer.read_text().strip()
    if not path.is_dir():
        raise FileNotFoundError(f"{pointer} points at {path.name}, which does not exist")
    return path
