"""Storage locations: a local path or any URI pyarrow understands, behind one small set of functions.

``cfg.storage`` is either a local (or locally mounted: NFS, EFS) path or a URI for
``pyarrow.fs.FileSystem.from_uri``, such as ``s3://bucket/prefix`` with query options for S3-compatible servers
(``?endpoint_override=host:port&scheme=http``). A *location* is that storage joined with more parts: a ``Path``
for local storage, so local callers keep every ``Path`` operation, and a URI string otherwise (query options
travel along, so a location alone is enough to reach the data from any Ray worker).

Local writes keep their local guarantees: a temp file, fsync, then ``os.replace``. On an object store a single
PUT is already atomic per object, so a write is one PUT; there is no rename, so callers that publish a set of
files write the one file that makes the set visible (a pointer, a manifest) last.
"""

from __future__ import annotations

import functools
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import pyarrow.fs as pafs

from raycast import credentials

Location = str | Path


class StorageError(OSError):
    """A storage URI that pyarrow cannot open or reach; the message names the URI (without credentials)."""


def is_remote(location: Location) -> bool:
    """True for a URI other than ``file://``: storage that is reached through a pyarrow filesystem."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def location(storage: Location) -> Location:
    """``storage`` as a location: a ``Path`` for local storage (``file://`` URIs included), the URI otherwise."""
    text = str(storage)
    if text.startswith("file://"):
        return Path(unquote(urlsplit(text).path))
    return text if is_remote(text) else Path(storage)


def absolute(storage: Location) -> Location:
    """Local storage made absolute (Ray workers and Serve replicas do not share the caller's directory)."""
    loc = location(storage)
    return loc if isinstance(loc, str) else loc.expanduser().resolve()


def join(base: Location, *parts: str) -> Location:
    """``base / part / ...``; for a URI the parts go into its path and its query options are kept."""
    loc = location(base)
    if isinstance(loc, Path):
        return loc.joinpath(*parts)
    scheme, netloc, path, query, fragment = urlsplit(loc)
    return urlunsplit((scheme, netloc, posixpath.join(path.rstrip("/") or "/", *parts), query, fragment))


def join_all(base: Location, names: list[str]) -> list[Location]:
    """``join(base, name)`` for each name; plain strings for local storage, which is cheap when there are
    thousands (an append links every stored file of every symbol)."""
    loc = location(base)
    if isinstance(loc, Path):
        text = str(loc)
        return [os.path.join(text, n) for n in names]
    return [join(loc, n) for n in names]


def name(loc: Location) -> str:
    """The last component of a location (a version directory's name, a file's name)."""
    loc = location(loc)
    return loc.name if isinstance(loc, Path) else posixpath.basename(urlsplit(loc).path.rstrip("/"))


def parent(loc: Location) -> Location:
    loc = location(loc)
    if isinstance(loc, Path):
        return loc.parent
    scheme, netloc, path, query, fragment = urlsplit(loc)
    return urlunsplit((scheme, netloc, posixpath.dirname(path.rstrip("/")), query, fragment))


def display(loc: Location) -> str:
    """A location to print or store in a result: a URI's credentials are left out (see :mod:`raycast.credentials`)."""
    return credentials.redact(str(location(loc)))


# ------------------------------------------------------------------------------------------ resolving


def resolve(loc: Location) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the path inside it, for ``filesystem=`` arguments (Parquet, Ray Data, Ray Train)."""
    loc = location(loc)
    if isinstance(loc, Path):
        return pafs.LocalFileSystem(), str(loc.expanduser().absolute())
    fs, path = _from_uri(loc)
    _check_reachable(loc, fs, path)
    return fs, path


@functools.lru_cache(maxsize=512)
def _from_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        return pafs.FileSystem.from_uri(credentials.for_pyarrow(uri))
    except (ValueError, OSError) as err:  # ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise StorageError(credentials.redact(f"unsupported storage URI {uri}: {err}")) from None


_REACHED: set[str] = set()  # bucket (or host) URIs, with their options, that this process has reached


def _check_reachable(uri: str, fs: pafs.FileSystem, path: str) -> None:
    # One probe per bucket: a wrong endpoint or credentials fail here, naming the URI, instead of deep inside a
    # Ray task with only a key in the message. The probe is the location itself, not the bucket: credentials
    # limited to a prefix may not read the bucket's own metadata.
    scheme, netloc, _, query, _ = urlsplit(uri)
    root = urlunsplit((scheme, netloc, "", query, ""))
    if root in _REACHED:
        return
    try:
        fs.get_file_info(path)
    except OSError as err:
        raise StorageError(credentials.redact(f"cannot reach storage {uri}: {err}")) from None
    _REACHED.add(root)


def _info(loc: Location) -> pafs.FileInfo:
    fs, path = resolve(loc)
    return fs.get_file_info(path)


# ------------------------------------------------------------------------------------------ queries


def exists(loc: Location) -> bool:
    loc = location(loc)
    return loc.exists() if isinstance(loc, Path) else _info(loc).type != pafs.FileType.NotFound


def is_file(loc: Location) -> bool:
    loc = location(loc)
    return loc.is_file() if isinstance(loc, Path) else _info(loc).type == pafs.FileType.File


def is_dir(loc: Location) -> bool:
    """On an object store: whether any object lies under the prefix."""
    loc = location(loc)
    return loc.is_dir() if isinstance(loc, Path) else _info(loc).type == pafs.FileType.Directory


def list_names(loc: Location, dirs_only: bool = False) -> list[str]:
    """Sorted names of the entries directly under ``loc`` (none when it does not exist)."""
    loc = location(loc)
    if isinstance(loc, Path):
        if not loc.is_dir():
            return []
        with os.scandir(loc) as entries:  # no stat per entry unless directories are asked for
            return sorted(e.name for e in entries if not dirs_only or e.is_dir())
    fs, path = resolve(loc)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory or not dirs_only)


# ------------------------------------------------------------------------------------------ reading and writing


def read_bytes(loc: Location) -> bytes:
    loc = location(loc)
    if isinstance(loc, Path):
        return loc.read_bytes()
    fs, path = resolve(loc)
    with fs.open_input_stream(path) as f:
        return f.read()


def read_text(loc: Location) -> str:
    return read_bytes(loc).decode()


def write_bytes(loc: Location, data: bytes) -> None:
    """Replace ``loc`` atomically: a local temp file fsynced and renamed over it, or one PUT to an object store."""
    loc = location(loc)
    if isinstance(loc, Path):
        tmp = loc.with_name(f".{loc.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, loc)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return
    fs, path = resolve(loc)
    with fs.open_output_stream(path) as f:
        f.write(data)


def write_text(loc: Location, text: str) -> None:
    write_bytes(loc, text.encode())


def link(src: Location, dst: Location) -> None:
    """``dst`` holding the same bytes as ``src`` without writing them again: a hard link, or a server-side copy."""
    if is_remote(src):
        filesystem, inner = resolve(src)
        filesystem.copy_file(inner, resolve(dst)[1])
        return
    os.link(src, dst)


def makedirs(loc: Location) -> None:
    """Create a local directory (and its parents); object stores have no directories, so nothing to do there."""
    loc = location(loc)
    if isinstance(loc, Path):
        loc.mkdir(parents=True, exist_ok=True)


def delete_dir(loc: Location) -> None:
    """Remove a directory and everything under it; a missing one is not an error."""
    loc = location(loc)
    if isinstance(loc, Path):
        shutil.rmtree(loc, ignore_errors=True)
        return
    fs, path = resolve(loc)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def upload_dir(local: str | Path, loc: Location) -> None:
    """Copy the local directory ``local`` into ``loc`` (files already there with the same names are replaced)."""
    loc = location(loc)
    if isinstance(loc, Path):
        if Path(local).resolve() != loc.resolve():
            shutil.copytree(local, loc, dirs_exist_ok=True)
        return
    fs, path = resolve(loc)
    pafs.copy_files(str(Path(local).resolve()), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


@contextmanager
def local_dir(loc: Location) -> Iterator[Path]:
    """A local directory whose files end up in ``loc``: ``loc`` itself when local, else a temp directory that is
    uploaded when the block finishes without error. For writers that only know local files (plots, TensorBoard)."""
    loc = location(loc)
    if isinstance(loc, Path):
        loc.mkdir(parents=True, exist_ok=True)
        yield loc
        return
    with tempfile.TemporaryDirectory(prefix="raycast-upload-") as tmp:
        yield Path(tmp)
        upload_dir(tmp, loc)


def ray_storage(loc: Location) -> dict:
    """``storage_path`` (and ``storage_filesystem`` for a URI) for a Ray Train or Tune ``RunConfig``."""
    loc = location(loc)
    if isinstance(loc, Path):
        return {"storage_path": str(loc.expanduser().resolve())}
    _, path = resolve(loc)  # checks the storage is reachable
    # Ray keeps a pickle of the filesystem next to the results: one that pickles without the credentials.
    return {"storage_path": path, "storage_filesystem": credentials.sealed_filesystem(loc)}
