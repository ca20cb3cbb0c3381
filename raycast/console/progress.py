"""Live progress of a stage on the driver, fed by what the workers report.

A stage opens a :func:`session`; what runs inside it reports rows of progress by key: a base model's epoch,
loss and validation IC (from Ray Train's controller, :class:`~raycast.console.train_callbacks.TrainProgress`), a
search's trials (from Tune's driver-side callback, :class:`~raycast.console.tune_callbacks.TuneProgress`), the
symbols a feature task has finished (from the Ray Data task itself). Reporters that run in other processes push
to a small Ray actor (:class:`Board`) that the driver drains twice a second; reporters on the driver update the
session directly.

On a terminal the rows are a ``rich`` live display that ends showing each row's final state. When stdout is not a
terminal (a ``ray job submit`` log, CI, a test's captured output) each update worth keeping becomes one plain
line: one per epoch of each base model, one per finished trial, a few per feature stage.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PREFIX = "[raycast]"
POLL_SECONDS = 0.5
FEATURE_LINES = 4  # plain lines a feature stage prints at most (each quarter of the symbols)


class Board:
    """A Ray actor (made by :meth:`Session.board`) holding what remote reporters pushed until the driver drains it."""

    def __init__(self) -> None:
        self._events: list[tuple[str, dict]] = []

    def push(self, key: str, fields: dict) -> None:
        self._events.append((key, fields))

    def drain(self) -> list[tuple[str, dict]]:
        events, self._events = self._events, []
        return events


class Session:
    """The rows of one stage's progress and their display (live on a terminal, plain lines otherwise)."""

    def __init__(self, stream=None) -> None:
        from rich.console import Console

        self.console = Console(file=stream or sys.stdout)
        self.live = self.console.is_terminal and not self.console.is_dumb_terminal
        self.rows: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._board = None
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self._display = None
        self._tasks: dict[str, Any] = {}
        if self.live:
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._display = Progress(
                SpinnerColumn(finished_text="[green]✓"),
                TextColumn("{task.description:<10}"),
                BarColumn(bar_width=16),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=self.console,
                redirect_stdout=True,
                redirect_stderr=True,
            )

    # ---------------------------------------------------------------------------------------------- reporting

    def update(self, key: str, **fields: Any) -> None:
        """Merge ``fields`` into row ``key`` (created on first use; ``kind`` says how it reads)."""
        with self._lock:
            row = self.rows.setdefault(key, {"key": key, "started": time.time()})
            line = _merge(row, fields)
            if self._display is not None:
                self._show(key, row)
            elif line:
                print(f"{PREFIX} {row.get('label', key):<10} {describe(row)}", file=self.console.file, flush=True)

    def board(self):
        """The actor remote reporters push to (``board.push.remote(key, fields)``), created on first use."""
        import ray

        with self._lock:
            if self._board is None:
                self._board = ray.remote(num_cpus=0)(Board).remote()
                self._poller = threading.Thread(target=self._poll, name="raycast-progress", daemon=True)
                self._poller.start()
            return self._board

    def _poll(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.drain()

    def drain(self) -> None:
        """Apply what remote reporters pushed so far."""
        import ray

        if self._board is None:
            return
        try:
            events = ray.get(self._board.drain.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - progress must never stop the work it reports on
            return
        for key, fields in events:
            self.update(key, **fields)

    # ------------------------------------------------------------------------------------------------ display

    def _show(self, key: str, row: dict) -> None:
        total, done = progress_fraction(row)
        task = self._tasks.get(key)
        if task is None:
            task = self._tasks[key] = self._display.add_task(row.get("label", key), total=total, info="")
        self._display.update(task, total=total, completed=done, info=describe(row))
        if row.get("status") in ("done", "failed"):
            self._display.stop_task(task)

    def __enter__(self) -> Session:
        if self._display is not None:
            self._display.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
        self.drain()  # the updates pushed just before the stage ended
        if self._board is not None:
            try:
                import ray

                ray.kill(self._board)
            except Exception:  # noqa: BLE001 - Ray may be shutting down already
                pass
        if self._display is not None:
            self._display.stop()


_current: Session | None = None
_current_lock = threading.Lock()


def current() -> Session | None:
    """The session of the stage running now, if any."""
    return _current


@contextmanager
def session() -> Iterator[Session]:
    """A progress session for a stage; inside another one (a stage run by a bigger stage) that one is reused."""
    global _current
    with _current_lock:
        outer = _current
        if outer is None:
            _current = Session()
    if outer is not None:
        yield outer
        return
    try:
        with _current as s:
            yield s
    finally:
        with _current_lock:
            _current = None


# ------------------------------------------------------------------------------------------------ row formats


def _merge(row: dict, fields: dict) -> bool:
    """Merge an update into a row; True when the update deserves a plain line of its own."""
    kind = fields.get("kind", row.get("kind"))
    if kind == "features" and "advance" in fields:
        before = row.get("done", 0)
        row["done"] = before + fields.pop("advance")
        row.update(fields)
        total = max(row.get("total", 1), 1)
        step = math.ceil(total / FEATURE_LINES)
        return row["done"] >= total or before // step != row["done"] // step
    if kind == "train" and "epoch" in fields:
        row.setdefault("epoch_seconds", []).append(fields.pop("epoch_seconds", 0.0))
        row.update(fields)
        return True
    line = bool(fields.pop("line", False))
    row.update(fields)
    return line


def progress_fraction(row: dict) -> tuple[float, float]:
    """(total, completed) for the row's bar."""
    kind = row.get("kind")
    if kind == "train":
        return float(row.get("epochs", 1)), float(row["epoch"] + 1 if "epoch" in row else 0)
    if kind == "tune":
        return float(row.get("total", 1)), float(row.get("finished", 0) + row.get("errored", 0))
    return float(row.get("total", 1)), float(row.get("done", 0))


def describe(row: dict) -> str:
    """The row as one line of text: what a person wants to know about it now."""
    kind = row.get("kind")
    if kind == "train":
        return _describe_train(row)
    if kind == "tune":
        return _describe_tune(row)
    if kind == "features":
        return _describe_features(row)
    return str(row.get("status", ""))


def _describe_train(row: dict) -> str:
    epochs = row.get("epochs", 0)
    if "epoch" not in row:
        return f"epoch 0/{epochs}  {row.get('status', 'starting')}"
    k = row["epoch"] + 1
    parts = [f"epoch {k}/{epochs}"]
    if row.get("steps"):
        parts.append(f"step {k * row['steps']}/{epochs * row['steps']}")
    parts += [
        f"loss {row['train_loss']:.4f}",
        f"val IC {row['val_ic']:+.4f}",
        f"Rank IC {row['val_rank_ic']:+.4f}",
        f"{row['samples_per_s']:,.0f} samples/s",
    ]
    if row.get("status") == "failed":
        parts.append("failed")
    elif row.get("stop") or k >= epochs:
        parts.append("done" if k >= epochs else "stopped early (no better for train.patience epochs)")
    else:
        seconds = row["epoch_seconds"]
        parts.append(f"ETA {_clock(sum(seconds) / len(seconds) * (epochs - k))}")
    return "  ".join(parts)


def _describe_tune(row: dict) -> str:
    text = (
        f"{row.get('finished', 0) + row.get('errored', 0)}/{row.get('total', 0)} {row.get('noun', 'trials')}: "
        f"{row.get('running', 0)} running, {row.get('finished', 0)} finished"
    )
    if row.get("asha"):
        text += f" ({row.get('stopped', 0)} stopped by ASHA)"
    if row.get("errored"):
        text += f", {row['errored']} errored"
    if row.get("best") is not None:
        text += f"  best {row.get('metric', 'score')} {row['best']:+.4f}"
    return text


def _describe_features(row: dict) -> str:
    done, total = row.get("done", 0), row.get("total", 0)
    text = f"{done}/{total} symbols"
    if 0 < done < total:
        elapsed = time.time() - row["started"]
        text += f"  ETA {_clock(elapsed / done * (total - done))}"
    return text


def _clock(seconds: float) -> str:
    seconds = int(round(max(seconds, 0)))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"
