"""The prediction log: every served and batch-scored prediction, as Parquet under ``<storage>/predictions/<version>/``.

``raycast monitor`` reads these files (``symbol, date, prediction``) and scores them against the labels that
realize later. Each row also carries ``base_<model>`` and ``weight_<model>`` (what the API answers), ``model_version``,
``predicted_at`` (UTC time the prediction was made), ``source`` (``predict``, ``batch``, ``offline``) and
``features_version`` (the feature dataset the window came from).

An ingress replica never writes on the request path: a request appends its answer rows to an in-memory list (a
lock and a list append), and a background thread writes what waits every ``flush_s`` seconds, as soon as
``flush_rows`` rows wait, and once more when the replica stops. Files are named
``served-<UTC time>-<replica tag>-<n>.parquet``: they sort by the time they were written and never collide across
replicas, and each appears whole (written aside, then renamed). ``raycast predict`` writes its rows as one file,
``<date>.parquet``, in the same directory.

Predictions from candles sent with a request are logged under ``<version>/candles/``: the symbol's history is the
client's, so they say nothing about how the model does on the stored universe and the monitor does not read them.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import threading
import time
import uuid

import pandas as pd

from raycast import fs

log = logging.getLogger("ray.serve")

CANDLES_DIR = "candles"
"""Subdirectory of a version's log holding predictions from request candles (not read by the monitor)."""


def log_dir(storage: str, version: str) -> fs.Location:
    return fs.join(storage, "predictions", version)


def log_frame(batches: list[tuple[list[dict], str, str | None, float]]) -> pd.DataFrame:
    """The log rows of ``(answer rows, source, features version, unix time)`` batches (rows as the API answers)."""
    records = []
    for rows, source, features_version, at in batches:
        for r in rows:
            record = {"symbol": r["symbol"], "date": r["as_of"], "prediction": r["prediction"]}
            record.update({f"base_{n}": v for n, v in r["base_predictions"].items()})
            record.update({f"weight_{n}": v for n, v in r["weights"].items()})
            record.update(model_version=r["model_version"], predicted_at=at, source=source, features_version=features_version)
            records.append(record)
    frame = pd.DataFrame.from_records(records)
    frame["date"] = pd.to_datetime(frame["date"])
    frame["predicted_at"] = pd.to_datetime(frame["predicted_at"], unit="s", utc=True)
    return frame


def write_frame(frame: pd.DataFrame, path: fs.Location) -> None:
    """One Parquet file, whole or not at all (a reader polling the directory never sees half a file)."""
    fs.makedirs(fs.parent(path))
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    fs.write_bytes(path, buffer.getvalue())


class PredictionLog:
    """Buffers answer rows in memory; a background thread writes them as Parquet files (see the module docstring)."""

    def __init__(self, storage: str, version: str, flush_rows: int = 1000, flush_s: float = 5.0):
        self.directory = log_dir(storage, version)
        self.flush_rows, self.flush_s = flush_rows, flush_s
        self.tag = uuid.uuid4().hex[:8]  # this replica's files
        self.files = 0
        self._batches: list[tuple[list[dict], str, str | None, float]] = []
        self._waiting = 0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one writer at a time: the thread, or close()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def add(self, rows: list[dict], source: str, features_version: str | None = None) -> None:
        """Queue answer rows (the request path's whole cost: a lock and an append)."""
        if not rows:
            return
        with self._lock:
            self._batches.append((rows, source, features_version, time.time()))
            self._waiting += len(rows)
            full = self._waiting >= self.flush_rows
        if full:
            self._wake.set()

    def flush(self) -> int:
        """Write what waits now; returns the rows written."""
        with self._flush_lock:
            with self._lock:
                batches, self._batches, self._waiting = self._batches, [], 0
            if not batches:
                return 0
            frame = log_frame(batches)
            from_candles = frame["source"] == "candles"
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
            for part, where in ((frame[~from_candles], self.directory), (frame[from_candles], fs.join(self.directory, CANDLES_DIR))):
                if len(part):
                    self.files += 1
                    write_frame(part, fs.join(where, f"served-{stamp}-{self.tag}-{self.files:06d}.parquet"))
            return len(frame)

    def close(self) -> None:
        """Stop the thread and write what still waits."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=60)
        self.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - a failed write must not stop serving; those rows are lost
                log.exception("writing the prediction log under %s failed", fs.display(self.directory))
