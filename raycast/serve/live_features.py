"""New market days served without a redeploy: which feature dataset a served model can be fed, and the watcher that
swaps a replica's stored rows when a newer one is published.

A model is fed rows normalized with its own statistics (those its training used). Any feature dataset built with the
same feature settings as the model's own (feature names, window, horizon, label delay and gap, feature spec
version) holds the same rows for the dates both have (an incremental build repeats a full one row for row) and, after
``raycast ingest --append`` and ``raycast features --incremental``, the new dates too: serving reads the newest such
dataset, normalized with the model's statistics. A dataset built otherwise is not served: the replica keeps the rows
it has and logs a warning once per published version.

The watcher polls one small file (the feature store's ``CURRENT`` pointer) every ``reload_interval_s``; only when it
names a new version does it read that version's ``meta.json`` and, if the model can be fed from it, load the rows in
its own thread. The new :class:`StoredFeatures` replaces the old one in a single reference assignment: a request
reads the reference once, so one in flight finishes on the rows it started with.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

from raycast import fs
from raycast.features.store import features_base
from raycast.lineage import model_features_dir
from raycast.serve.feature_rows import StoredFeatures
from raycast.storage import CURRENT

log = logging.getLogger("ray.serve")

COMPATIBLE_KEYS = ("features", "window", "horizon", "label_delay", "max_label_gap_days", "spec_version")
"""Feature settings a dataset must share with the model's own for the model to be fed from it."""


def published_features_version(storage: str) -> str | None:
    """The name of the published feature dataset (one small file read), or None when there is none."""
    pointer = fs.join(features_base(storage), CURRENT)
    return fs.read_text(pointer).strip() if fs.is_file(pointer) else None


def _meta(path: fs.Location) -> dict:
    return json.loads(fs.read_text(fs.join(path, "meta.json")))


def incompatibility(meta: dict, own: dict) -> str | None:
    """Why a dataset with ``meta`` cannot feed a model trained on a dataset with ``own`` meta; None when it can."""
    differs = [key for key in COMPATIBLE_KEYS if meta.get(key) != own.get(key)]
    return f"built with other {', '.join(differs)} than the model's own dataset" if differs else None


def newest_features_dir(storage: str, spec: dict) -> tuple[fs.Location, str | None]:
    """The feature dataset to serve ``spec`` from, and why the published one is not it (None when it is).

    The published dataset when it fits the model and reaches at least as far as the model's own; otherwise the
    model's own dataset.
    """
    own = model_features_dir(storage, spec)
    name = published_features_version(storage)
    if name is None or name == fs.name(own):
        return own, None
    path = fs.join(features_base(storage), name)
    try:
        meta, own_meta = _meta(path), _meta(own)
    except FileNotFoundError:
        return own, f"{name} has no meta.json"
    why = incompatibility(meta, own_meta)
    if why is None and str(meta.get("date_max")) < str(own_meta.get("date_max")):
        why = f"it ends ({meta.get('date_max')}) before the model's own dataset ({own_meta.get('date_max')})"
    return (own, why) if why else (path, None)


class LiveFeatures:
    """One replica's stored feature rows, replaced by a newer fitting dataset's as soon as one is published.

    ``interval_s`` of 0 serves the model's own dataset, read once. ``on_swap`` gets each newly loaded
    :class:`StoredFeatures` (the service points its requests at it).
    """

    def __init__(self, storage: str, spec: dict, interval_s: float, on_swap: Callable[[StoredFeatures], None] | None = None):
        self.storage, self.spec, self.interval_s = storage, spec, interval_s
        self.on_swap = on_swap
        self._seen = published_features_version(storage)
        if interval_s > 0:
            path, why = newest_features_dir(storage, spec)
            if why:
                self._warn(self._seen, why)
        else:
            path = model_features_dir(storage, spec)
        self.features = StoredFeatures.load(storage, spec, features_dir=path)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LiveFeatures:
        if self.interval_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="feature-reload", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def check(self) -> bool:
        """Swap in the published feature dataset if it is new and fits the model; True when it was swapped."""
        name = published_features_version(self.storage)
        if name is None or name == self._seen:
            return False
        path, why = newest_features_dir(self.storage, self.spec)
        if why:
            self._seen = name  # warned once per published version, not at every check
            self._warn(name, why)
            return False
        if fs.name(path) == self.features.version:
            self._seen = name
            return False
        features = StoredFeatures.load(self.storage, self.spec, features_dir=path)  # a failure retries next check
        self._seen = name
        self.features = features
        if self.on_swap is not None:
            self.on_swap(features)
        log.info("serving feature dataset %s (latest date %s) with model %s", features.version, features.latest,
                 self.spec.get("version"))  # fmt: skip
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the replica keeps serving the rows it has
                log.exception("checking for a new feature dataset failed; still serving %s", self.features.version)

    def _warn(self, name: str | None, why: str) -> None:
        log.warning("feature dataset %s is not served with model %s: %s; serving %s", name, self.spec.get("version"),
                    why, getattr(getattr(self, "features", None), "version", "the model's own dataset"))  # fmt: skip
