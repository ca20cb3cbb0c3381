"""The hook through which Ray Tune feeds the progress display (:mod:`raycast.console.progress`).

Imported only where a tuner is built: this module imports Ray Tune.
"""

from __future__ import annotations

from ray.tune import Callback

from raycast.console import progress


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
