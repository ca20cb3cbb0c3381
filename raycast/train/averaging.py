"""A base model's final weights as the average of the epochs that validated best (a uniform "soup" of one run).

The epoch kept is chosen on a validation part of a few hundred dates, whose IC moves by about its standard error
from one epoch to the next: the best of a dozen epochs is partly the luckiest. The epochs of one run lie along
one path through the weights, close enough that their average is a model of its own (as in stochastic weight
averaging), and averaging the ``k`` best smooths the choice instead of betting on one. Which epochs, and that
their average is kept, is fixed before it is seen: the average is then validated once, for its line to the
labels and its figures, not compared with the best epoch on the dates that picked them.
"""

from __future__ import annotations

import torch


def _cpu_copy(state: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


class TopEpochs:
    """The ``k`` best-scoring epochs' weights of one fit, kept on the CPU; their average at the end."""

    def __init__(self, k: int, higher_is_better: bool, kept: list[dict] | None = None) -> None:
        self.k, self.higher_is_better = k, higher_is_better
        self.kept: list[dict] = list(kept or [])  # {"score", "epoch", "model"}, best first

    def __len__(self) -> int:
        return len(self.kept)

    def offer(self, score: float, epoch: int, model_state: dict) -> None:
        """Keep this epoch's weights if it is among the ``k`` best so far (an earlier epoch wins a tie)."""
        if self.k < 2:
            return
        sign = 1.0 if self.higher_is_better else -1.0
        place = sum(1 for e in self.kept if sign * e["score"] >= sign * score)
        if place >= self.k:
            return
        self.kept.insert(place, {"score": float(score), "epoch": int(epoch), "model": _cpu_copy(model_state)})
        del self.kept[self.k :]

    @property
    def epochs(self) -> list[int]:
        return sorted(e["epoch"] for e in self.kept)

    def average(self) -> dict:
        """The kept weights averaged; integer buffers (BatchNorm's batch count) are the best epoch's."""
        states = [e["model"] for e in self.kept]
        out = {}
        for key, best in states[0].items():
            if torch.is_floating_point(best):
                out[key] = torch.stack([s[key].double() for s in states]).mean(dim=0).to(best.dtype)
            else:
                out[key] = best.clone()
        return out

    def to_state(self) -> list[dict]:
        """What a checkpoint keeps so that a resumed fit averages the same epochs."""
        return self.kept
