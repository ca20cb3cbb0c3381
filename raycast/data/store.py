"""The published market dataset: versioned directories switched atomically.

Layout under ``<storage>/market/``::

    CURRENT                      one line: the name of the published version directory
    v-<utc timestamp>-<uuid>/
        symbol=<SYM>/data.parquet    canonical bars of one symbol, sorted by date (see symbol_dir_name)
        symbol=<SYM>/data-<v>.rows<n>.parquet  n bars appends added after them (see below)
        rejected.parquet             rejected rows (original values as text, reason, source, row)
        tails.parquet                the last bars of every symbol and its hash chain state (see :class:`Tails`)
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
A symbol that only gains later dates keeps its files too and gets one more, ``data-<version>.rows<n>.parquet``,
with the new bars; once it has :data:`MERGE_FILES` of those, the next append writes them as one file instead,
taken from the symbol's tail (no read), so a day's append links a few files per symbol however many days came
before. A symbol whose stored bars change (a corrected bar, a back-filled gap, a split adjusted by the quality
policy, a new symbol) is rewritten as one ``data.parquet``, and so is one that would exceed
:data:`MAX_FILES_PER_SYMBOL` files (its appended bars outgrew the tail). Readers read every ``*.parquet`` of a
symbol's directory, in date order.
An append plans on the version's tails rather than on whole histories, so a day's bars for every symbol cost one
small read instead of one per symbol; a symbol whose stored bars would change is read whole.

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
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from raycast import fs
from raycast.data.errors import DataError
from raycast.data.schema import (
    VALUE_COLUMNS,
    bar_arrays,
    canonical_bars,
    combine_hashes,
    empty_bars,
    finish_hash,
    hash_chain,
    symbol_bounds,
    symbol_hashes,
)
from raycast.data.validate import REJECTED_COLUMNS, reason_counts
from raycast.lineage import referenced_versions

CURRENT = "CURRENT"
MANIFEST = "manifest.json"
REJECTED = "rejected.parquet"
TAILS = "tails.parquet"
TAIL_BARS = 128
WRITE_THREADS = 8
DATA_FILE = "data.parquet"
APPENDED_PREFIX = "data-"
MERGE_FILES = 8
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


def build_manifest(
    bars: pd.DataFrame, rejected: pd.DataFrame, base: dict | None = None, hashes: dict[str, str] | None = None
) -> dict:
    """``base`` (``sources``, ``synthetic``, ``quality``) completed with the fields derived from the data
    (``hashes``: the bars' :func:`symbol_hashes`, when already known)."""
    base = dict(base or {})
    per_symbol = bars.groupby("symbol", sort=True).size()
    counts = reason_counts(rejected)
    hashes = symbol_hashes(bars) if hashes is None else hashes
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
    tails, hashes = Tails.of(bars)
    full = build_manifest(bars, rejected, manifest, hashes)
    root = market_dir(storage)
    if fs.is_remote(root):
        return _write_remote(root, bars, rejected, full, tails, referenced_versions(storage, "market"))
    root.mkdir(parents=True, exist_ok=True)
    with _writer_lock(root):
        for debris in root.glob(".tmp-*"):
            shutil.rmtree(debris, ignore_errors=True)
        name = new_version_name()
        tmp = root / f".tmp-{name}"
        tmp.mkdir()
        try:
            _write_version(tmp, bars, rejected, full, tails)
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
class Tails:
    """The last bars of every symbol of a version and where each symbol's hash chain stands.

    An append plans on these instead of whole histories: a quality check looks back a few bars (a split or a halt
    one, a streak ``zero_volume_days`` or ``stale_days``), a re-sent or corrected bar is compared with the stored
    one on its date, and a symbol's hash goes on from its chain state (see :func:`raycast.data.schema.hash_chain`).
    Each symbol keeps its last :data:`TAIL_BARS` bars (all, when it has fewer) and at least every bar after its
    chain state.
    """

    bars: pd.DataFrame  # canonical
    chain: dict[str, tuple[int, str]]  # symbol -> (bars chained, chain state as hex)

    @classmethod
    def of(cls, histories: pd.DataFrame) -> tuple[Tails, dict[str, str]]:
        """The tails of whole canonical histories, and their symbol hashes."""
        arrays = bar_arrays(histories)
        keep, chain, hashes = [], {}, {}
        for symbol, a, b in symbol_bounds(histories):
            consumed, state = hash_chain(arrays, a, b)
            hashes[symbol] = finish_hash(state, arrays, a + consumed, b, b - a)
            chain[symbol] = (consumed, state.hex())
            keep.append(np.arange(max(a, b - max(TAIL_BARS, b - a - consumed)), b))
        rows = np.concatenate(keep) if keep else np.zeros(0, dtype=int)
        return cls(histories.iloc[rows].reset_index(drop=True), chain), hashes

    def extend(self, added: pd.DataFrame, stored_rows: dict[str, int]) -> tuple[Tails, dict[str, str]]:
        """The tails after ``added`` (canonical bars dated after every stored bar of their symbols, which hold
        ``stored_rows`` bars) and the extended symbols' hashes; only those symbols are returned."""
        symbols = set(added["symbol"].unique())
        both = canonical_bars(pd.concat([self.bars[self.bars["symbol"].isin(symbols)], added]), check=False)
        arrays = bar_arrays(both)
        n_tail = self.bars[self.bars["symbol"].isin(symbols)].groupby("symbol").size()
        n_added = added.groupby("symbol").size()
        keep, chain, hashes = [], {}, {}
        for symbol, a, b in symbol_bounds(both):
            chained, state = self.chain[symbol]
            first_stored = stored_rows[symbol] - int(n_tail[symbol])  # the tail's first bar, counted in the history
            consumed, next_state = hash_chain(arrays, a + chained - first_stored, b, bytes.fromhex(state))
            chained += consumed
            n_bars = stored_rows[symbol] + int(n_added[symbol])
            hashes[symbol] = finish_hash(next_state, arrays, b - (n_bars - chained), b, n_bars)
            chain[symbol] = (chained, next_state.hex())
            keep.append(np.arange(max(a, b - max(TAIL_BARS, n_bars - chained)), b))
        rows = np.concatenate(keep) if keep else np.zeros(0, dtype=int)
        return Tails(both.iloc[rows].reset_index(drop=True), chain), hashes

    def without(self, symbols: set[str]) -> Tails:
        kept = self.bars[~self.bars["symbol"].isin(symbols)]
        return Tails(kept, {s: c for s, c in self.chain.items() if s not in symbols})

    @staticmethod
    def merge(parts: list[Tails]) -> Tails:
        bars = canonical_bars(pd.concat([p.bars for p in parts], ignore_index=True), check=False)
        return Tails(bars, {s: c for p in parts for s, c in p.chain.items()})

    def write(self, version: fs.Location) -> None:
        chain = json.dumps({s: list(c) for s, c in sorted(self.chain.items())}, separators=(",", ":"))
        table = _to_arrow(self.bars, BAR_SCHEMA).replace_schema_metadata({b"raycast.hash_chain": chain.encode()})
        _write_parquet(table, fs.join(version, TAILS))

    @classmethod
    def read(cls, version: fs.Location) -> Tails | None:
        """The version's tails; None for a version written before they were kept."""
        path = fs.join(version, TAILS)
        if not fs.exists(path):
            return None
        table = _read_table(path)
        chain = json.loads(table.schema.metadata[b"raycast.hash_chain"])
        return cls(canonical_bars(table.to_pandas(), check=False), {s: (int(n), h) for s, (n, h) in chain.items()})


@dataclass
class AppendPlan:
    """What an append changes, planned on the version it is applied to (see :func:`append_market_data`).

    ``histories`` holds the whole new history of every symbol the append rewrites (canonical bars); ``added`` the
    bars of the symbols that only gain later dates, whose stored bars stay exactly as they were.
    """

    histories: pd.DataFrame
    added: pd.DataFrame
    rejected: pd.DataFrame  # the append's rejected rows, added to the version's
    sources: list[str]
    quality: dict | None  # the new version's whole quality report
    summary: dict  # the append's own counts, stored as the manifest's ``append``
    unchanged: bool = False  # nothing to publish: the append repeats what is stored
    manifest: dict = field(default_factory=dict)  # filled in by append_market_data


def new_version_name() -> str:
    return f"v-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}"


def append_market_data(
    storage: str, plan: Callable[[fs.Location, dict, Tails], AppendPlan]
) -> tuple[fs.Location | None, AppendPlan]:
    """Publish ``plan(current version directory, its manifest, its tails)`` as a new version; (its directory, the
    plan).

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
    tails = Tails.read(previous)
    if tails is None:  # a version written before tails were kept: made once from its files
        tails, _ = Tails.of(read_bars_of(previous, sorted(old["rows_per_symbol"])))
    planned = plan(previous, old, tails)
    if planned.unchanged:
        return None, planned
    histories = canonical_bars(planned.histories, check=False)
    added = canonical_bars(planned.added, check=False)
    rewritten_tails, rewritten_hashes = Tails.of(histories)
    extended_tails, extended_hashes = tails.extend(added, old["rows_per_symbol"])
    sizes = histories.groupby("symbol", sort=True).size()
    n_added = added.groupby("symbol", sort=True).size()
    starts = dict(zip(sizes.index, np.r_[0, np.cumsum(sizes.to_numpy())[:-1]]))
    added_starts = dict(zip(n_added.index, np.r_[0, np.cumsum(n_added.to_numpy())[:-1]]))
    table = _to_arrow(histories, BAR_SCHEMA)  # one conversion, zero-copy slices per symbol
    added_table = _to_arrow(added, BAR_SCHEMA)
    symbols = sorted(set(_symbols(previous)) | set(sizes.index))
    hashes = dict(old.get("symbol_hashes") or {}) | rewritten_hashes | extended_hashes
    rows = dict(old["rows_per_symbol"]) | {str(s): int(n) for s, n in sizes.items()}
    rows |= {str(s): int(old["rows_per_symbol"][s] + n) for s, n in n_added.items()}
    tag = fs.name(out).removeprefix(".tmp-")
    new_tails = _to_arrow(extended_tails.bars, BAR_SCHEMA)
    new_tail_rows = {symbol: (a, b) for symbol, a, b in symbol_bounds(extended_tails.bars)}

    def place(symbol: str) -> dict[str, str]:
        """Link or write one symbol's files into the new version; its hash when the old manifest lacks it."""
        src, dst = fs.join(previous, symbol_dir_name(symbol)), fs.join(out, symbol_dir_name(symbol))
        fs.makedirs(dst)
        files = _symbol_files(src) if symbol in old["rows_per_symbol"] else []
        if symbol in starts:
            _write_parquet(table.slice(starts[symbol], int(sizes[symbol])), fs.join(dst, DATA_FILE))
            return {}
        if symbol not in added_starts:  # untouched: the same files
            for old_file, new_file in zip(fs.join_all(src, files), fs.join_all(dst, files)):
                fs.link(old_file, new_file)
        else:
            new_rows = added_table.slice(added_starts[symbol], int(n_added[symbol]))
            appended = [f for f in files if f != DATA_FILE]
            counts = [_rows_in_name(f) for f in appended]
            a, b = new_tail_rows[symbol]
            merged = sum(counts) + new_rows.num_rows if None not in counts else None
            if len(appended) >= MERGE_FILES and merged is not None and merged <= b - a:  # all in the tail
                files, new_rows = [f for f in files if f == DATA_FILE], new_tails.slice(b - merged, merged)
            elif len(files) >= MAX_FILES_PER_SYMBOL:  # compacted into one file
                whole = pa.concat_tables([read_symbol_table(previous, symbol), new_rows])
                _write_parquet(whole, fs.join(dst, DATA_FILE))
                return {}
            for old_file, new_file in zip(fs.join_all(src, files), fs.join_all(dst, files)):  # the same files ...
                fs.link(old_file, new_file)
            # ... and one more with the new bars
            _write_parquet(new_rows, fs.join(dst, f"{APPENDED_PREFIX}{tag}.rows{new_rows.num_rows}.parquet"))
            return {}
        if symbol not in hashes:  # a manifest written before per-symbol hashes
            return symbol_hashes(read_symbol_bars(previous, symbol))
        return {}

    # Threads: most of a symbol's time is waiting on fsync (or on the object store), which releases the GIL.
    with ThreadPoolExecutor(max_workers=WRITE_THREADS) as pool:
        for found in pool.map(place, symbols):
            hashes |= found
    changed = set(sizes.index) | set(n_added.index)
    Tails.merge([tails.without(changed), rewritten_tails, extended_tails]).write(out)
    previous_rejected = _read_table(fs.join(previous, REJECTED)).to_pandas()
    new_rejected = planned.rejected.reindex(columns=list(REJECTED_COLUMNS))
    rejected = pd.concat([previous_rejected, new_rejected], ignore_index=True) if len(new_rejected) else previous_rejected
    _write_parquet(_to_arrow(rejected, REJECTED_SCHEMA), fs.join(out, REJECTED))
    firsts = [f["date"].min() for f in (histories, added) if len(f)]
    lasts = [f["date"].max() for f in (histories, added) if len(f)]
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


def _write_remote(
    root: str, bars: pd.DataFrame, rejected: pd.DataFrame, manifest: dict, tails: Tails, referenced: set[str]
) -> str:
    # See the module docstring: no rename on an object store, the CURRENT PUT is the publication.
    name = new_version_name()
    try:
        _write_version(fs.join(root, name), bars, rejected, manifest, tails)
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


def _write_version(out: fs.Location, bars: pd.DataFrame, rejected: pd.DataFrame, manifest: dict, tails: Tails) -> None:
    # One conversion to Arrow, then zero-copy slices per symbol (bars are sorted by symbol).
    table = _to_arrow(bars, BAR_SCHEMA)
    start = 0
    for symbol, size in bars.groupby("symbol", sort=True).size().items():
        sym_dir = fs.join(out, symbol_dir_name(symbol))
        fs.makedirs(sym_dir)
        _write_parquet(table.slice(start, size), fs.join(sym_dir, DATA_FILE))
        start += size
    _write_parquet(_to_arrow(rejected, REJECTED_SCHEMA), fs.join(out, REJECTED))
    tails.write(out)
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
    return read_bars_of(version, wanted)


def read_bars_of(version: fs.Location, symbols: list[str]) -> pd.DataFrame:
    """Canonical bars of the given symbols of one version."""
    if not symbols:
        return empty_bars()
    tables = [read_symbol_table(version, s) for s in symbols]
    return canonical_bars(pa.concat_tables(tables).to_pandas(), check=False)


def _rows_in_name(name: str) -> int | None:
    """The bar count an appended file's name carries (``data-<version>.rows<n>.parquet``); None without one."""
    _, found, rest = name.partition(".rows")
    return int(rest.removesuffix(".parquet")) if found and rest.removesuffix(".parquet").isdigit() else None


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
    "Tails",
    "append_market_data",
    "build_manifest",
    "current_version_dir",
    "list_symbols",
    "market_dir",
    "read_bars",
    "read_bars_of",
    "read_manifest",
    "read_rejected",
    "read_symbol_bars",
    "read_symbol_table",
    "symbol_dir_name",
    "symbol_file",
    "symbol_from_dir_name",
    "write_market_data",
]
