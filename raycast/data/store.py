"""The published market dataset: versioned directories switched atomically.

Layout under ``<storage>/market/``::

    CURRENT                      one line: the name of the published version directory
    v-<utc timestamp>-<uuid>/
        symbol=<SYM>/data.parquet    canonical bars of one symbol, sorted by date (see symbol_dir_name)
        symbol=<SYM>/data-<v>.parquet  bars an append added after them (see below), one file per append
        rejected.parquet             rejected rows (original values as text, reason, source, row)
        manifest.json                what is in the version (see :func:`build_manifest`)

A version is written into a hidden ``.tmp-...`` directory, fsynced, renamed to ``v-...`` and only then published
by replacing ``CURRENT`` (temp file + ``os.replace``). A crash at any point before that replace leaves the
previous version current and intact. Afterwards everything but the new and the previously current version is
pruned, except the versions registered models were trained on (:mod:`raycast.lineage`). Writers serialize on an
``fcntl`` lock, so a leftover ``.tmp-...`` seen while holding it is debris from a killed writer and is removed.

On an object store (``s3://...``) there is neither rename nor lock: a version is written straight under its
``v-...`` prefix, which no reader looks at until the single PUT of ``CURRENT`` names it (atomic per object).
Pruning then removes the versions older than the new one except the previously current one and the registered
models' ones, which also clears the debris of killed writers. Run one ingest at a time there.

An append (:func:`append_market_data`) publishes a new version the same way without rewriting the symbols it
does not change: their files are hard links to the previous version's (a server-side copy on an object store).
A symbol that only gains later dates keeps its files too and gets one more, ``data-<version>.parquet``, with the
new bars; a symbol whose stored bars change (a corrected bar, a back-filled gap, a split adjusted by the quality
policy, a new symbol) is rewritten as one ``data.parquet``, and so is one that would exceed
:data:`MAX_FILES_PER_SYMBOL` files. Readers read every ``*.parquet`` of a symbol's directory, in date order.

Nothing here embeds a wall-clock time in the files, so the same input yields byte-identical Parquet files and
manifest; only the version directory name carries the time.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shutil
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from raycast import fs
from raycast.data.errors import DataError
from raycast.data.schema import VALUE_COLUMNS, canonical_bars, combine_hashes, empty_bars, symbol_hashes
from raycast.data.validate import REJECTED_COLUMNS, reason_counts
from raycast.lineage import referenced_versions

CURRENT = "CURRENT"
MANIFEST = "manifest.json"
REJECTED = "rejected.parquet"
DATA_FILE = "data.parquet"
APPENDED_PREFIX = "data-"
MAX_FILES_PER_SYMBOL = 32
"""An append that would leave a symbol with more files than this rewrites it as one (reads stay few and large)."""

BAR_SCHEMA = pa.schema(
    [("symbol", pa.string()), ("date", pa.timestamp("ns"))] + [(c, pa.float64()) for c in VALUE_COLUMNS]
)
REJECTED_SCHEMA = pa.schema([(c, pa.int64() if c == "row" else pa.string()) for c in REJECTED_COLUMNS])


_UNSAFE_IN_PATH = re.compile(r"[^A-Za-z0-9._-]")
_ENCODED = re.compile(r"~([0-9A-F]{2})")


def symbol_dir_name(symbol: str) -> str:
    """``symbol=<SYM>`` with every byte a path or URI might mangle written as ``~XX``: ``RDS/A`` -> ``RDS~2FA``.

    Letters, digits and ``. - _`` stay as they are (``BRK.B``, ``BF-B``, ``0700.HK``). ``~`` rather than ``%``:
    object-store URIs are percent-decoded on the way to the filesystem, which would turn ``%2F`` back into a
    slash. The prefix keeps ``.`` and ``..`` from naming the directory itself or its parent.
    """
    return "symbol=" + _UNSAFE_IN_PATH.sub(lambda m: "".join(f"~{b:02X}" for b in m.group().encode()), symbol)


def symbol_from_dir_name(name: str) -> str | None:
    """The symbol a partition directory holds, or None for a name that is not a partition."""
    prefix, sep, encoded = name.partition("=")
    if not sep or prefix != "symbol":
        return None
    return _ENCODED.sub(lambda m: chr(int(m.group(1), 16)), encoded).encode("latin-1").decode("utf-8")


def market_dir(storage: str) -> fs.Location:
    """``<storage>/market``: where market data versions live (a ``Path`` for local storage)."""
    return fs.join(storage, "market")


def build_manifest(bars: pd.DataFrame, rejected: pd.DataFrame, base: dict | None = None) -> dict:
    """``base`` (``sources``, ``synthetic``, ``quality``) completed with the fields derived from the data."""
    base = dict(base or {})
    per_symbol = bars.groupby("symbol", sort=True).size()
    counts = reason_counts(rejected)
    hashes = symbol_hashes(bars)
    return {
        "sources": list(base.get("sources", [])),
        "symbols": [str(s) for s in per_symbol.index],
        "n_symbols": int(len(per_symbol)),
        "date_min": bars["date"].min().date().isoformat() if len(bars) else None,
        "date_max": bars["date"].max().date().isoformat() if len(bars) else None,
        "rows": int(len(bars)),
        "rows_per_symbol": {str(k): int(v) for k, v in per_symbol.items()},
        "rejected": counts,
        "rejected_total": int(sum(counts.values())),
        "synthetic": base.get("synthetic"),
        "quality": base.get("quality"),
        "symbol_hashes": hashes,
        "content_hash": combine_hashes(hashes),
    }


def write_market_data(storage: str, bars: pd.DataFrame, rejected: pd.DataFrame, manifest: dict) -> fs.Location:
    """Write a new version, publish it via ``CURRENT``, prune old versions; returns the version directory.

    ``manifest`` supplies ``sources`` and ``synthetic``; the data-derived fields are (re)computed here so the
    manifest always matches the files.
    """
    bars = canonical_bars(bars)
    if bars.empty:
        raise DataError("refusing to publish an empty market dataset")
    rejected = rejected.reindex(columns=list(REJECTED_COLUMNS))
    full = build_manifest(bars, rejected, manifest)
    root = market_dir(storage)
    if fs.is_remote(root):
        return _write_remote(root, bars, rejected, full, referenced_versions(storage, "market"))
    root.mkdir(parents=True, exist_ok=True)
    with _writer_lock(root):
        for debris in root.glob(".tmp-*"):
            shutil.rmtree(debris, ignore_errors=True)
        name = new_version_name()
        tmp = root / f".tmp-{name}"
        tmp.mkdir()
        try:
            _write_version(tmp, bars, rejected, full)
            os.rename(tmp, root / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(root)
        previous = _current_name(root)
        _switch_current(root, name)
        keep = {name, previous, *referenced_versions(storage, "market")}  # registered models' data stays
        for old in root.glob("v-*"):
            if old.is_dir() and old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)
    return root / name


@dataclass
class AppendPlan:
    """What an append changes, planned on the version it is applied to (see :func:`append_market_data`).

    ``histories`` holds the whole new history of every symbol the append touches (canonical bars); ``extended`` the
    ones among them whose stored bars stay exactly as they were, with the number of bars added after them.
    """

    histories: pd.DataFrame
    extended: dict[str, int]
    rejected: pd.DataFrame  # the append's rejected rows, added to the version's
    sources: list[str]
    quality: dict | None  # the new version's whole quality report
    summary: dict  # the append's own counts, stored as the manifest's ``append``
    unchanged: bool = False  # nothing to publish: the append repeats what is stored
    manifest: dict = field(default_factory=dict)  # filled in by append_market_data


def new_version_name() -> str:
    return f"v-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}"


def append_market_data(storage: str, plan: Callable[[fs.Location, dict], AppendPlan]) -> tuple[fs.Location | None, AppendPlan]:
    """Publish ``plan(current version directory, its manifest)`` as a new version; (its directory, the plan).

    The plan is made while holding the writer lock, on the version that is current then, so an append never
    builds on a version another writer is replacing. When the plan finds nothing new, nothing is published and
    the directory is None. Untouched symbols' files are linked, not rewritten (see the module docstring).
    """
    root = market_dir(storage)
    if fs.is_remote(root):
        previous = current_version_dir(storage)
        return _append(storage, root, previous, plan, fs.join(root, new_version_name()))
    with _writer_lock(root):
        for debris in root.glob(".tmp-*"):
            shutil.rmtree(debris, ignore_errors=True)
        previous = current_version_dir(storage)
        name = new_version_name()
        tmp = root / f".tmp-{name}"
        tmp.mkdir()
        try:
            _, planned = _append(storage, root, previous, plan, tmp)
            if planned.unchanged:
                shutil.rmtree(tmp, ignore_errors=True)
                return None, planned
            os.rename(tmp, root / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(root)
        _switch_current(root, name)
        keep = {name, previous.name, *referenced_versions(storage, "market")}
        for old in root.glob("v-*"):
            if old.is_dir() and old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)
    return root / name, planned


def _append(
    storage: str, root: fs.Location, previous: fs.Location, plan: Callable, out: fs.Location
) -> tuple[fs.Location | None, AppendPlan]:
    old = json.loads(fs.read_text(fs.join(previous, MANIFEST)))
    planned = plan(previous, old)
    if planned.unchanged:
        return None, planned
    histories = canonical_bars(planned.histories, check=False)
    sizes = histories.groupby("symbol", sort=True).size()
    starts = dict(zip(sizes.index, np.r_[0, np.cumsum(sizes.to_numpy())[:-1]]))
    table = _to_arrow(histories, BAR_SCHEMA)  # one conversion, zero-copy slices per symbol
    symbols = sorted(set(_symbols(previous)) | set(sizes.index))
    hashes = dict(old.get("symbol_hashes") or {}) | symbol_hashes(histories)
    rows = dict(old["rows_per_symbol"]) | {str(s): int(n) for s, n in sizes.items()}
    tag = fs.name(out).removeprefix(".tmp-")
    for symbol in symbols:
        src, dst = fs.join(previous, symbol_dir_name(symbol)), fs.join(out, symbol_dir_name(symbol))
        fs.makedirs(dst)
        files = _symbol_files(src) if symbol in old["rows_per_symbol"] else []
        if symbol not in starts:  # untouched: the same files
            for f in files:
                fs.link(fs.join(src, f), fs.join(dst, f))
            if symbol not in hashes:  # a manifest written before per-symbol hashes
                hashes |= symbol_hashes(read_symbol_bars(previous, symbol))
            continue
        history = table.slice(starts[symbol], int(sizes[symbol]))
        added = planned.extended.get(symbol)
        if added is not None and files and len(files) < MAX_FILES_PER_SYMBOL:
            for f in files:
                fs.link(fs.join(src, f), fs.join(dst, f))
            if added:
                _write_parquet(history.slice(history.num_rows - added), fs.join(dst, f"{APPENDED_PREFIX}{tag}.parquet"))
        else:
            _write_parquet(history, fs.join(dst, DATA_FILE))
    previous_rejected = _read_table(fs.join(previous, REJECTED)).to_pandas()
    new_rejected = planned.rejected.reindex(columns=list(REJECTED_COLUMNS))
    rejected = pd.concat([previous_rejected, new_rejected], ignore_index=True) if len(new_rejected) else previous_rejected
    _write_parquet(_to_arrow(rejected, REJECTED_SCHEMA), fs.join(out, REJECTED))
    firsts, lasts = [histories["date"].min()], [histories["date"].max()]
    counts = reason_counts(rejected)
    manifest = {
        "sources": list(dict.fromkeys([*old.get("sources", []), *planned.sources])),
        "symbols": symbols,
        "n_symbols": len(symbols),
        # per-symbol ranges are not stored: an append that cuts a symbol's start leaves date_min as it was
        "date_min": min([old["date_min"], *(d.date().isoformat() for d in firsts)]),
        "date_max": max([old["date_max"], *(d.date().isoformat() for d in lasts)]),
        "rows": int(sum(rows[s] for s in symbols)),
        "rows_per_symbol": {s: int(rows[s]) for s in symbols},
        "rejected": counts,
        "rejected_total": int(sum(counts.values())),
        "synthetic": old.get("synthetic"),
        "quality": planned.quality,
        "symbol_hashes": {s: hashes[s] for s in symbols},
        "content_hash": combine_hashes({s: hashes[s] for s in symbols}),
        "append": planned.summary | {"previous_version": fs.name(previous)},
    }
    fs.write_text(fs.join(out, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if not fs.is_remote(out):
        _fsync_dir(out)
    else:  # the CURRENT PUT publishes it (see the module docstring)
        fs.write_text(fs.join(root, CURRENT), fs.name(out) + "\n")
    planned.manifest = manifest
    return out, planned


def _write_remote(root: str, bars: pd.DataFrame, rejected: pd.DataFrame, manifest: dict, referenced: set[str]) -> str:
    # See the module docstring: no rename on an object store, the CURRENT PUT is the publication.
    name = new_version_name()
    try:
        _write_version(fs.join(root, name), bars, rejected, manifest)
    except BaseException:
        fs.delete_dir(fs.join(root, name))
        raise
    previous = _current_name(root)
    fs.write_text(fs.join(root, CURRENT), name + "\n")
    for old in fs.list_names(root, dirs_only=True):
        # Only older ones: a writer that started after this one may still be filling its version.
        if old.startswith("v-") and old < name and old != previous and old not in referenced:
            fs.delete_dir(fs.join(root, old))
    return fs.join(root, name)


def _write_version(out: fs.Location, bars: pd.DataFrame, rejected: pd.DataFrame, manifest: dict) -> None:
    # One conversion to Arrow, then zero-copy slices per symbol (bars are sorted by symbol).
    table = _to_arrow(bars, BAR_SCHEMA)
    start = 0
    for symbol, size in bars.groupby("symbol", sort=True).size().items():
        sym_dir = fs.join(out, symbol_dir_name(symbol))
        fs.makedirs(sym_dir)
        _write_parquet(table.slice(start, size), fs.join(sym_dir, DATA_FILE))
        start += size
    _write_parquet(_to_arrow(rejected, REJECTED_SCHEMA), fs.join(out, REJECTED))
    fs.write_text(fs.join(out, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if not fs.is_remote(out):
        _fsync_dir(out)


def _to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    # No pandas metadata: the files are plain, library-version-independent tables.
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False).replace_schema_metadata(None)


def _write_parquet(table: pa.Table, path: fs.Location) -> None:
    if fs.is_remote(path):
        filesystem, inner = fs.resolve(path)
        pq.write_table(table, inner, filesystem=filesystem)  # one PUT
        return
    pq.write_table(table, path)
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _writer_lock(root: Path) -> Iterator[None]:
    with open(root / ".lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _current_name(root: fs.Location) -> str | None:
    pointer = fs.join(root, CURRENT)
    return fs.read_text(pointer).strip() if fs.is_file(pointer) else None


def _switch_current(root: Path, name: str) -> None:
    fs.write_text(root / CURRENT, name + "\n")  # temp file, fsync, os.replace
    _fsync_dir(root)  # and the rename itself made durable


def current_version_dir(storage: str) -> fs.Location:
    """The published version directory; FileNotFoundError telling the user to ingest when there is none."""
    root = market_dir(storage)
    name = _current_name(root)
    if name is None:
        raise FileNotFoundError(f"no market data under {fs.display(root)}: run `raycast ingest` first")
    path = fs.join(root, name)
    if not fs.is_dir(path):
        raise FileNotFoundError(
            f"{fs.display(fs.join(root, CURRENT))} names {name}, which is missing: run `raycast ingest` again"
        )
    return path


def _symbols(version: fs.Location) -> list[str]:
    names = (symbol_from_dir_name(n) for n in fs.list_names(version, dirs_only=True))
    return [s for s in names if s is not None]


def list_symbols(storage: str) -> list[str]:
    """The symbols of the current version, sorted."""
    return sorted(_symbols(current_version_dir(storage)))


def symbol_file(storage: str, symbol: str) -> fs.Location:
    """The Parquet file holding ``symbol``'s bars as the full ingest wrote them (KeyError for an unknown symbol); an
    append may have added more files beside it: :func:`read_symbol_bars` reads them all."""
    path = fs.join(current_version_dir(storage), symbol_dir_name(symbol), DATA_FILE)
    if not fs.is_file(path):
        raise KeyError(f"no market data for symbol {symbol!r}; available: {', '.join(list_symbols(storage))}")
    return path


def read_bars(storage: str, symbols: list[str] | None = None) -> pd.DataFrame:
    """Canonical bars of the current version, for all symbols or the given ones."""
    version = current_version_dir(storage)  # resolved once, so all files come from one version
    available = sorted(_symbols(version))
    wanted = available if symbols is None else sorted(set(symbols))
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise KeyError(f"no market data for symbol(s) {', '.join(unknown)}; available: {', '.join(available)}")
    if not wanted:
        return empty_bars()
    tables = [read_symbol_table(version, s) for s in wanted]
    return canonical_bars(pa.concat_tables(tables).to_pandas(), check=False)


def _symbol_files(symbol_dir: fs.Location) -> list[str]:
    """The Parquet files of one symbol's directory: ``data.parquet`` first, then the appended ones in order."""
    names = [n for n in fs.list_names(symbol_dir) if n.endswith(".parquet") and not n.startswith(".")]
    return sorted(names, key=lambda n: (n != DATA_FILE, n))


def read_symbol_table(version: fs.Location, symbol: str) -> pa.Table:
    """One symbol's bars in ``version`` as an Arrow table sorted by date (all of its files; see the docstring)."""
    directory = fs.join(version, symbol_dir_name(symbol))
    # Read file by file: pyarrow would otherwise parse 'symbol=' in the path as a second symbol column.
    tables = [_read_table(fs.join(directory, name)) for name in _symbol_files(directory)]
    if not tables:
        raise FileNotFoundError(f"no bars for {symbol!r} in {fs.display(version)}")
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    return table if len(tables) == 1 else table.sort_by("date")


def read_symbol_bars(version: fs.Location, symbol: str) -> pd.DataFrame:
    """:func:`read_symbol_table` as a canonical bars frame."""
    return canonical_bars(read_symbol_table(version, symbol).to_pandas(), check=False)


def read_manifest(storage: str) -> dict:
    """The manifest of the current version."""
    return json.loads(fs.read_text(fs.join(current_version_dir(storage), MANIFEST)))


def read_rejected(storage: str) -> pd.DataFrame:
    """The rows the current version's ingest rejected, with ``reason``, ``source`` and ``row``."""
    return _read_table(fs.join(current_version_dir(storage), REJECTED)).to_pandas()


def _read_table(path: fs.Location) -> pa.Table:
    filesystem, inner = fs.resolve(path)
    return pq.read_table(inner, filesystem=filesystem, partitioning=None)


__all__ = [
    "AppendPlan",
    "append_market_data",
    "build_manifest",
    "current_version_dir",
    "list_symbols",
    "market_dir",
    "read_bars",
    "read_manifest",
    "read_rejected",
    "read_symbol_bars",
    "read_symbol_table",
    "symbol_dir_name",
    "symbol_file",
    "symbol_from_dir_name",
    "write_market_data",
]
