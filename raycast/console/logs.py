"""Ray's own output in a log file, the console left to raycast's lines, warnings and errors.

Ray speaks on the driver in three ways: Python loggers under ``ray`` (Ray Data's execution plans, Serve's INFO
lines, the token-authentication warning), the stdout/stderr of every worker and actor that the driver's log
thread prints (the Train controller's resource lines and TrainingReport reprs, PreemptionWatcher and
PlacementGroupCleaner messages, deduplication notices) and the raylet's warnings (worker-start counts). Once an
entry point has called :func:`configure`, :func:`capture_ray_output` (run by ``init_ray``) sends all three to
``<storage>/logs/<time>-<command>.log`` and prints that path once. ``--verbose`` leaves Ray's output where Ray
puts it.

What still reaches the console: raycast's own lines, including ``[raycast]`` lines printed inside workers, errors
that Ray's driver-side loggers raise, and any exception that stops a command (with its traceback). Library use
without :func:`configure` (tests, notebooks) changes nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from raycast import fs

RAYCAST_PREFIX = "[raycast]"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WORKER_LOGGER = "raycast.ray_workers"  # the file's name for lines forwarded from Ray's workers and the raylet


@dataclass
class _Settings:
    directory: Path
    command: str
    verbose: bool
    handler: logging.FileHandler | None = None


_settings: _Settings | None = None
_lock = threading.Lock()


def log_directory(storage: str) -> Path:
    """``<storage>/logs`` for local storage; a local temporary directory when storage is remote (a log file is
    appended to line by line, which object stores do not do)."""
    if fs.is_remote(storage):
        return Path(tempfile.gettempdir()) / "raycast-logs"
    return Path(fs.absolute(storage)) / "logs"


def configure(storage: str, command: str, verbose: bool = False) -> None:
    """Decide, before Ray starts, where its output goes for this process (see the module docstring)."""
    global _settings
    with _lock:
        if _settings is not None and _settings.handler is not None:
            return  # already capturing: the first command's file keeps everything
        _settings = _Settings(log_directory(storage), command, verbose)


def quiet() -> bool:
    """Whether Ray's output is being kept off the console (an entry point configured it without ``--verbose``)."""
    return _settings is not None and not _settings.verbose


def log_file() -> Path | None:
    """The file Ray's output goes to, once :func:`capture_ray_output` has opened it."""
    return Path(_settings.handler.baseFilename) if _settings is not None and _settings.handler is not None else None


def capture_ray_output() -> None:
    """Route Ray's loggers, its workers' output and the raylet's warnings to the log file (idempotent).

    Called before ``ray.init`` (for what it logs itself) and after (the worker-log thread exists only then);
    calling it again picks up loggers Ray created since (Serve and Ray Data configure theirs lazily).
    """
    if not quiet():
        return
    with _lock:
        handler = _open_file()
    _route_loggers(handler)
    _route_worker_output()


def _open_file() -> logging.FileHandler:
    if _settings.handler is None:
        _settings.directory.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = _settings.directory / f"{stamp}-{_settings.command}.log"
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter(FORMAT))  # Ray sets its own format on the ray loggers' handlers
        _settings.handler = handler
        # the workers' lines carry their own origin, and a handler of their own keeps them out of Ray's format
        lines = logging.FileHandler(path, encoding="utf-8")
        lines.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        workers = logging.getLogger(WORKER_LOGGER)
        workers.addHandler(lines)
        workers.setLevel(logging.INFO)
        workers.propagate = False
        print(f"{RAYCAST_PREFIX} Ray's own log: {path} (-v shows it here)", file=sys.stderr, flush=True)
    return _settings.handler


def _route_loggers(handler: logging.FileHandler) -> None:
    """Every ``ray`` logger that writes to the console writes to the file instead; its errors still reach the
    console."""
    loggers = [logging.getLogger("ray")] + [
        lg for name, lg in logging.root.manager.loggerDict.items()
        if name.startswith("ray.") and isinstance(lg, logging.Logger)
    ]  # fmt: skip
    for lg in loggers:
        consoles = [h for h in lg.handlers if _is_console(h)]
        if not consoles:
            continue
        for h in consoles:
            h.setLevel(logging.ERROR)
        if handler not in lg.handlers:
            lg.addHandler(handler)


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


def _route_worker_output() -> None:
    """Swap the driver's printer of worker output (and of the raylet's warnings) for one writing to the file.

    Ray has no public switch that keeps this output without printing it (``log_to_driver=False`` drops it from
    the driver altogether), so the printer Ray registers on its stdstream dispatcher is replaced by name.
    """
    import ray._private.worker as ray_worker
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    if ray_worker.print_to_stdstream is _to_log_file:
        return
    # the raylet's warnings are printed by the error-listener thread through this module-level function
    ray_worker.print_to_stdstream = _to_log_file
    if ray_worker.global_worker.connected:
        dispatcher.remove_handler("ray_print_logs")
        dispatcher.add_handler("ray_print_logs", _to_log_file)


def _to_log_file(data: dict, ignore_prefix: bool = False) -> None:
    workers = logging.getLogger(WORKER_LOGGER)
    pid = data.get("pid")
    source = data.get("actor_name") or data.get("task_name")
    prefix = f"({source} pid={pid})" if source else (f"({pid})" if pid in ("raylet", "autoscaler") else f"(pid={pid})")
    for line in data.get("lines", []):
        workers.info("%s %s", prefix, line)
        if line.startswith(RAYCAST_PREFIX):  # raycast's own word from inside a worker stays on the console
            print(line, file=sys.stderr if data.get("is_err") else sys.stdout, flush=True)


@contextlib.contextmanager
def ray_prints(source: str) -> Iterator[None]:
    """Inside, what Ray prints straight to stdout goes to the log file (when Ray's output is kept off the console).

    For Tune, whose experiment banner ("Configuration for experiment", "View detailed results here") is printed
    at every verbosity. raycast's progress lines are unaffected: a progress session holds the stdout it started on.
    """
    if not quiet() or _settings.handler is None:
        yield
        return
    with contextlib.redirect_stdout(_LogLines(source)):
        yield


class _LogLines(io.TextIOBase):
    """A text stream whose lines become lines of the log file."""

    def __init__(self, source: str) -> None:
        self.source, self._partial = source, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            logging.getLogger(WORKER_LOGGER).info("(%s) %s", self.source, line)
        return len(text)

    def flush(self) -> None:
        if self._partial:
            self.write("\n")
