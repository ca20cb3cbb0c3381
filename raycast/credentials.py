"""Credentials inside storage URIs: used for I/O, left out of everything raycast writes or prints.

pyarrow takes S3 (and Azure) credentials from a URI's user info, ``s3://KEY:SECRET@bucket/prefix``; raycast also
accepts them as query options, ``s3://bucket/prefix?access_key=KEY&secret_key=SECRET``, and hands pyarrow the user
info form. Either way the URI is the credential, and it travels to every Ray worker as part of the config.

Whatever leaves a process (a file, a log line, a CLI answer, an error message) goes through :func:`redact` or
:func:`redact_data`, which drop the user info and every credential-like query option (``*secret*``, ``*token*``,
``*password*``, ``*key``, ``sig``...). A redacted URI still names the same storage: read back (a run's
``config.json``, a tune's ``best_config.yaml``), it reaches the data with the environment's credentials
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, an instance role).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pyarrow.fs as pafs

# Everything between "scheme://" and the last "@" before the path's query or fragment: the user info, even when
# the secret holds an unescaped "/" (which no parser would read as intended, but which must not leak either).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s?#\"'<>@]*(?:@[^\s?#\"'<>@]*)*@")
_SECRET_NAME = r"[\w.-]*(?:secret|token|passw(?:or)?d|credential|signature)[\w.-]*|[\w.-]*key|sig"
_SECRET_OPTION = re.compile(rf"(?P<sep>[?&])(?:{_SECRET_NAME})=[^&#\s\"'<>]*", re.IGNORECASE)
_EMPTY_QUERY = re.compile(r"\?&+|\?(?=[#\s\"'<>]|$)")
_QUERY_CREDENTIALS = ("access_key", "secret_key")


def redact(text: str) -> str:
    """``text`` (a URI, or a message holding URIs) without user info or credential query options."""
    text = _USERINFO.sub(r"\g<scheme>", text)
    text = _SECRET_OPTION.sub(lambda m: "?" if m["sep"] == "?" else "", text)
    return _EMPTY_QUERY.sub(lambda m: "?" if m[0].startswith("?&") else "", text)


def redact_data(value: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, strings) with every string redacted, e.g. a dumped config."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_data(v) for v in value)
    return value


def has_credentials(text: str) -> bool:
    return redact(text) != text


def for_pyarrow(uri: str) -> str:
    """``uri`` with ``access_key``/``secret_key`` query options moved into the user info, where pyarrow reads them."""
    parts = urlsplit(uri)
    found, rest = {}, []
    for option in filter(None, parts.query.split("&")):
        name, _, value = option.partition("=")
        if name in _QUERY_CREDENTIALS:
            found[name] = unquote(value)  # not unquote_plus: a "+" in a secret key is a plus
        else:
            rest.append(option)
    if not found:
        return uri
    if set(found) != set(_QUERY_CREDENTIALS) or "@" in parts.netloc:
        raise ValueError(
            f"storage URI {redact(uri)}: give both access_key and secret_key, and not also KEY:SECRET@ before the host"
        )
    userinfo = f"{quote(found['access_key'], safe='')}:{quote(found['secret_key'], safe='')}"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}", query="&".join(rest)))


def borrow_credentials(uri: str, source: str) -> str:
    """``uri`` with ``source``'s credentials, when ``uri`` has none and both name the same store (scheme and host).

    A redacted URI read back from a file gets the credentials of the URI the user gave on this run.
    """
    if has_credentials(uri) or not has_credentials(source):
        return uri
    src, dst = urlsplit(for_pyarrow(source)), urlsplit(uri)
    userinfo, _, host = src.netloc.rpartition("@")
    if (src.scheme, host) != (dst.scheme, dst.netloc):
        return uri
    return urlunsplit(dst._replace(netloc=f"{userinfo}@{dst.netloc}"))


# ------------------------------------------------------------------------------------------ filesystems Ray keeps

_KV_NAMESPACE = "raycast-credentials"
_known: dict[str, str] = {}  # redacted URI -> the URI with its credentials, in this process


def sealed_filesystem(uri: str) -> pafs.FileSystem:
    """The pyarrow filesystem of ``uri``, for Ray Train and Tune, whose pickle holds no credentials.

    Ray pickles a run's ``storage_filesystem`` into the files it keeps next to the results (``tuner.pkl``, the
    experiment and search-algorithm state), and a pickled ``S3FileSystem`` holds its secret key. This one pickles
    as the redacted URI; the credentials go into Ray's in-memory key-value store (GCS), where every process of the
    cluster unpickling it finds them. Without Ray, or in a new cluster that has not seen them, it falls back to the
    environment's credentials.
    """
    return pafs.PyFileSystem(_SealedHandler(uri))


def _reopen(redacted: str) -> _SealedHandler:
    # Unpickling: PyFileSystem's pickle holds its handler, and this rebuilds the handler.
    return _SealedHandler(_known.get(redacted) or _kv_get(redacted) or redacted)


def _kv_put(redacted: str, uri: str) -> None:
    # Ray's internal KV: the one store every process of a cluster reaches that is not a file (GCS memory).
    from ray.experimental import internal_kv

    if internal_kv._internal_kv_initialized():
        internal_kv._internal_kv_put(redacted, uri, overwrite=True, namespace=_KV_NAMESPACE)


def _kv_get(redacted: str) -> str | None:
    from ray.experimental import internal_kv

    if not internal_kv._internal_kv_initialized():
        return None
    value = internal_kv._internal_kv_get(redacted, namespace=_KV_NAMESPACE)
    return value.decode() if value else None


class _SealedHandler(pafs.FileSystemHandler):
    """Delegates every call to the real filesystem; pickles as the redacted URI (see :func:`sealed_filesystem`)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.fs = pafs.FileSystem.from_uri(for_pyarrow(uri))[0]
        if has_credentials(uri):
            _known[redact(uri)] = uri

    def __reduce__(self):
        redacted = redact(self.uri)
        if redacted != self.uri:
            _kv_put(redacted, self.uri)
        return _reopen, (redacted,)

    def __eq__(self, other) -> bool:
        return isinstance(other, _SealedHandler) and self.fs.equals(other.fs)

    def get_type_name(self) -> str:
        return f"sealed+{self.fs.type_name}"

    def normalize_path(self, path):
        return self.fs.normalize_path(path)

    def get_file_info(self, paths):
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.fs.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        self.fs.delete_dir_contents("/", accept_root_dir=True)

    def delete_file(self, path):
        self.fs.delete_file(path)

    def move(self, src, dest):
        self.fs.move(src, dest)

    def copy_file(self, src, dest):
        self.fs.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.fs.open_input_stream(path)

    def open_input_file(self, path):
        return self.fs.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return self.fs.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path, metadata):
        return self.fs.open_append_stream(path, metadata=metadata)
