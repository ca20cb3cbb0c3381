"""The hooks through which Ray Train and Ray Tune feed the progress display (:mod:`raycast.console.progress`).

Imported only where a trainer or a tuner is built: this module imports Ray Train and Ray Tune.
"""

from __future__ import annotations

from ray.train import UserCallback
from ray.tune import Callback

from raycast.console import progress

EPOCH_FIELDS = ("epoch", "steps", "train_loss", "val_ic", "val_rank_ic", "samples_per_s", "stop")


class TrainProgress(UserCallback):
    """Ray Train callback: every epoch the workers report becomes an update of the progress row of its model.

    The row is the report's ``model`` when one trainer fits several models in turn, else the trainer's only one.
    It runs in the run's controller process, so it pushes to the session's board actor; waiting for the push
    means the last epoch is on the board before ``trainer.fit()`` returns.
    """

    def __init__(self, board, names: list[str]) -> None:
        self.board, self.names = board, names

    def _push(self, key: str, fields: dict) -> None:
        import ray

        try:
            ray.get(self.board.push.remote(key, fields), timeout=10)
        except Exception:  # noqa: BLE001 - progress must never fail a training run
            pass

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        reported = metrics[0] if metrics else {}  # rank 0's: every rank validates on the same rows
        if "epoch" not in reported:
            return
        fields = {k: reported[k] for k in EPOCH_FIELDS if k in reported}
        seconds = reported.get("train_seconds", 0.0) + reported.get("val_seconds", 0.0)
        status = "done" if reported.get("stop") else "training"
        key = reported.get("model", self.names[0])
        self._push(key, fields | {"kind": "train", "status": status, "epoch_seconds": seconds})

    def after_exception(self, run_context, worker_exceptions: dict) -> None:
        for key in self.names:
            self._push(key, {"kind": "train", "status": "a worker failed; Ray Train restarts it (train.max_failures)"})


def train_progress(label: str, epochs: int) -> list[TrainProgress]:
    """The callbacks of the trainer fitting ``label`` (a model, or models in turn joined by ``+``): one reporting
    to the running session, none without one."""
    session = progress.current()
    if session is None:
        return []
    names = label.split("+")
    for i, name in enumerate(names):  # models in one trainer run in turn
        status = "starting workers, reading data" if i == 0 else f"waiting for {names[i - 1]}"
        session.update(name, kind="train", label=name, epochs=epochs, status=status)
    return [TrainProgress(session.board(), names)]


class TuneProgress(Callback):
    """Ray Tune callback (on the driver): trials running, finished, stopped early by ASHA, errored; best score.

    A trial counts as stopped by ASHA when Tune marks its result done before ``max_t`` epochs: Tune sets ``done``
    on the result only when the scheduler stops a trial (a trial that ends by itself sends no further result).
    Holds no reference to the session (Tune saves its callbacks with the experiment), only counters.
    """

    def __init__(
        self, key: str, label: str, noun: str, total: int, max_t: int, metric: str, mode: str, asha: bool
    ) -> None:
        self.key, self.label, self.noun, self.total, self.max_t = key, label, noun, total, max_t
        self.metric, self.mode, self.asha = metric, mode, asha
        self.running: set[str] = set()
        self.finished: set[str] = set()
        self.stopped: set[str] = set()
        self.errored: set[str] = set()
        self.best: float | None = None

    def _update(self, line: bool = False) -> None:
        session = progress.current()
        if session is None:
            return
        session.update(
            self.key, kind="tune", label=self.label, noun=self.noun, total=self.total, running=len(self.running),
            finished=len(self.finished), stopped=len(self.stopped), errored=len(self.errored), best=self.best,
            metric=self.metric, asha=self.asha, line=line,
        )  # fmt: skip

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.running.add(trial.trial_id)
        self._update()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        score = result.get("score")
        if score is not None and score == score:  # NaN never leads
            better = self.best is None or (score > self.best if self.mode == "max" else score < self.best)
            self.best = float(score) if better else self.best
        if self.asha and result.get("done") and result.get("training_iteration", self.max_t) < self.max_t:
            self.stopped.add(trial.trial_id)
        self._update()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.running.discard(trial.trial_id)
        self.finished.add(trial.trial_id)
        self._update(line=True)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.running.discard(trial.trial_id)
        self.errored.add(trial.trial_id)
        self._update(line=True)
