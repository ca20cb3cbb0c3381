"""Versioned directories published atomically.

A dataset is written into a fresh ``v-...`` directory next to the published ones; only when it is complete does
a one-line ``CURRENT`` file (replaced atomically: ``os.replace`` locally, a single PUT on an object store) point
readers at it. A crash at any moment before that leaves the previous version current and intact. ``base`` is any
location of :mod:`raycast.fs`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection

from raycast import fs
from raycast.fs import Location

CURRENT = "CURRENT"


def new_version_dir(base: Location) -> Location:
    """A new, empty, not yet published version directory under ``base``."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    path = fs.join(base, f"v-{stamp}-{uuid.uuid4().hex[:6]}")
    fs.makedirs(path)
    return path


def publish(base: Location, version_dir: Location, keep: int = 2, protected: Collection[str] = ()) -> None:
    """Point ``base/CURRENT`` at ``version_dir`` atomically, then prune all but the newest ``keep`` versions.

    Versions named in ``protected`` (those registered models were trained on) are never pruned, nor counted.
    """
    current = fs.name(version_dir)
    fs.write_text(fs.join(base, CURRENT), current + "\n")
    versions = [
        n for n in fs.list_names(base, dirs_only=True) if n.startswith("v-") and n != current and n not in protected
    ]
    for old in versions[: max(0, len(versions) - (keep - 1))]:
        fs.delete_dir(fs.join(base, old))


def current_version_dir(base: Location, what: str = "dataset", hint: str = "") -> Location:
    """The published version under ``base``; a clear error when there is none."""
    pointer = fs.join(base, CURRENT)
    if not fs.is_file(pointer):
        raise FileNotFoundError(f"no {what} at {fs.display(base)}" + (f": {hint}" if hint else ""))
    path = fs.join(base, fs.read_text(pointer).strip())
    if not fs.is_dir(path):
        raise FileNotFoundError(f"{fs.display(pointer)} points at {fs.name(path)}, which does not exist")
    return path
