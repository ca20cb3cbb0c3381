"""The hook through which Ray Train feeds the progress display (:mod:`raycast.console.progress`).

It runs in each training run's controller, so this module imports only Ray Train's callback base: the
controller never has to load Ray Tune or torch for it (Ray Tune's hook is :mod:`raycast.console.tune_callbacks`).
"""

from __future__ import annotations

from ray.train import UserCallback

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
