"""Where a training stage's seconds go: consecutive phases per trainer, written to the run directory.

The driver times what it sees (the stage's own steps, each ``TorchTrainer.fit()`` call); each Ray Train worker
of rank 0 records its own phases (reading its rows, every epoch's training, validation and checkpoint) in a small JSON
file next to the run's checkpoints, and the driver merges them into the trainer's span. Phases are consecutive:
a trainer's phases add up to its ``fit()`` call, the stage's top-level phases to the stage's wall time.

A worker's phase also carries the worker's peak resident memory by its end (a high-water mark: the phase where
it rises is the one that needed the memory).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from raycast import fs

TIMELINE_FILE = "timeline.json"
WORKER_DIR = "timeline"
STAGE = "stage"

# What each kind of phase is, for the summary: the loop's own seconds against everything around it.
IN_LOOP = ("train", "validation")


@dataclass
class Phase:
    trainer: str  # "stage" for the stage's own steps, else the base model's name
    name: str
    kind: str  # start, data, setup, train, validation, checkpoint, finish, ensemble, registry, ...
    start: float  # seconds since the epoch (time.time()): the driver and the workers share a clock
    end: float
    peak_mb: float | None = None  # the rank-0 worker's peak resident memory by the phase's end; None: driver

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Timeline:
    """Phases of one training stage, in the order they started."""

    started: float = field(default_factory=time.time)
    ended: float | None = None
    phases: list[Phase] = field(default_factory=list)

    def add(self, trainer: str, name: str, kind: str, start: float, end: float, peak_mb: float | None = None) -> None:
        self.phases.append(Phase(trainer, name, kind, start, max(start, end), peak_mb))

    @contextmanager
    def phase(self, name: str, kind: str, trainer: str = STAGE) -> Iterator[None]:
        start = time.time()
        try:
            yield
        finally:
            self.add(trainer, name, kind, start, time.time())

    @staticmethod
    def now() -> float:
        return time.time()

    def finish(self) -> None:
        self.ended = time.time()

    @property
    def wall_s(self) -> float:
        return (self.ended or time.time()) - self.started

    def of(self, trainer: str) -> list[Phase]:
        return sorted((p for p in self.phases if p.trainer == trainer), key=lambda p: p.start)

    def trainers(self) -> list[str]:
        return list(dict.fromkeys(p.trainer for p in self.phases if p.trainer != STAGE))

    def in_loop_s(self, trainer: str | None = None) -> float:
        """Seconds spent inside the epoch loop (training steps and validation), one trainer's or all of them."""
        return sum(p.seconds for p in self.phases if p.kind in IN_LOOP and (trainer is None or p.trainer == trainer))

    def add_trainer(self, trainer: str, fit_start: float, fit_end: float, worker_dir: fs.Location) -> None:
        """The phases of one ``fit()`` call: the rank-0 worker's own, and the controller's around them."""
        attempts = read_worker_marks(worker_dir)
        if not attempts:
            self.add(trainer, "fit (no worker timeline)", "start", fit_start, fit_end)
            return
        last = fit_start
        for i, attempt in enumerate(attempts):
            process, marks = attempt["process_start"], attempt["marks"]
            fn_start = marks[0]["at"]
            if i == 0 and process is not None and fit_start < process < fn_start:  # a fresh worker process: the controller's part ends there
                self.add(trainer, "controller start", "start", last, process)
                last = process
            self.add(trainer, "worker group start" if i == 0 else "restart", "start", last, fn_start, marks[0].get("peak_mb"))
            last = fn_start
            for mark in marks[1:]:
                self.add(trainer, mark["name"], mark["kind"], last, mark["at"], mark.get("peak_mb"))
                last = mark["at"]
        self.add(trainer, "finish (last commit, worker group shutdown)", "finish", last, fit_end)

    def to_json(self) -> dict:
        return {
            "started": self.started,
            "wall_s": self.wall_s,
            "in_loop_s": self.in_loop_s(),
            "phases": [asdict(p) | {"seconds": p.seconds} for p in sorted(self.phases, key=lambda p: p.start)],
        }

    def write(self, run_dir: fs.Location) -> None:
        fs.write_text(fs.join(run_dir, TIMELINE_FILE), json.dumps(self.to_json(), indent=2))

    def table(self) -> str:
        """The stage's phases as a text table: offset from the stage's start, seconds, then a summary."""
        rows = [("trainer", "phase", "at s", "seconds", "worker peak MB")]
        for p in sorted(self.phases, key=lambda p: (p.start, p.trainer != STAGE)):
            peak = f"{p.peak_mb:,.0f}" if p.peak_mb is not None else ""
            rows.append((p.trainer, p.name, f"{p.start - self.started:.2f}", f"{p.seconds:.2f}", peak))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                 for r in rows]  # fmt: skip
        lines.insert(1, "  ".join("-" * w for w in widths))
        in_loop = self.in_loop_s()
        lines.append(f"stage wall {self.wall_s:.2f} s, in-loop train + validation {in_loop:.2f} s"
                     + (f" (wall / in-loop {self.wall_s / in_loop:.2f})" if in_loop > 0 else ""))  # fmt: skip
        for name in self.trainers():
            phases = self.of(name)
            span = phases[-1].end - phases[0].start
            lines.append(f"  {name}: fit {span:.2f} s, in-loop {self.in_loop_s(name):.2f} s, "
                         f"fixed cost {span - self.in_loop_s(name):.2f} s")  # fmt: skip
        return "\n".join(lines)


class WorkerMarks:
    """A Ray Train worker's clock: each mark ends a phase that began at the previous mark.

    Written (whole, small) to ``directory`` after every mark, so a worker killed mid-run leaves what it did.
    """

    def __init__(self, directory: str | None):
        self.path = None
        if directory:
            fs.makedirs(directory)
            self.path = fs.join(directory, f"attempt-{time.time():.6f}-{os.getpid()}.json")
        self.process_start = _process_start()
        self.marks = [{"name": "train function start", "kind": "start", "at": time.time(), "peak_mb": peak_memory_mb()}]

    def mark(self, name: str, kind: str, at: float | None = None, write: bool = False,
             peak_mb: float | None = None) -> None:  # fmt: skip
        """End a phase ``at`` (default now); ``peak_mb``: the peak memory by then, when it was read earlier."""
        self.marks.append({"name": name, "kind": kind, "at": time.time() if at is None else at,
                           "peak_mb": peak_memory_mb() if peak_mb is None else peak_mb})  # fmt: skip
        if write:
            self.write()

    def write(self) -> None:
        if self.path is not None:
            fs.write_text(self.path, json.dumps({"process_start": self.process_start, "marks": self.marks}))


def read_worker_marks(directory: fs.Location) -> list[dict]:
    """The worker marks written under ``directory``, one per attempt (a restart is a new attempt), oldest first."""
    attempts = [json.loads(fs.read_text(fs.join(directory, name))) for name in fs.list_names(directory)
                if name.startswith("attempt-") and name.endswith(".json")]  # fmt: skip
    return sorted(attempts, key=lambda a: a["marks"][0]["at"])


def peak_memory_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports kilobytes, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _process_start() -> float | None:
    """When this worker process started (the end of the controller's part of a trainer's start)."""
    import ray  # noqa: F401  (puts the psutil Ray ships on the path)

    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process().create_time()
