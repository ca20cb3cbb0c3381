"""Loading registry versions for serving: one base model, or the ensemble head alone, cached by version.

Every request names the model version it was started under. During a rollout an old ingress replica can reach a
new base-model replica (deployment names stay the same across versions), which then loads the old version on
demand instead of mixing one version's bases with another's head. Only a couple of versions are kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

import numpy as np
import torch

from raycast.registry import HEAD, Predictor, build_base, load_spec, load_weights

T = TypeVar("T")


class VersionCache(Generic[T]):
    """``load(version)`` results, the ``keep`` most recently used versions only."""

    def __init__(self, load: Callable[[str], T], keep: int = 2):
        self._load = load
        self._keep = keep
        self._items: OrderedDict[str, T] = OrderedDict()

    def get(self, version: str) -> T:
        if version in self._items:
            self._items.move_to_end(version)
        else:
            self._items[version] = self._load(version)
            while len(self._items) > self._keep:
                self._items.popitem(last=False)
        return self._items[version]


def serving_device(num_gpus: float) -> torch.device:
    """CUDA when the replica was given a GPU share and one is visible, else the CPU."""
    return torch.device("cuda") if num_gpus > 0 and torch.cuda.is_available() else torch.device("cpu")


def load_base(storage: str, version: str, name: str, device: torch.device) -> torch.nn.Module:
    """One base model of a registry version, in eval mode on ``device``."""
    spec = load_spec(storage, version)
    return build_base(spec, name, load_weights(storage, version, name)).to(device)


def load_head(storage: str, version: str) -> Predictor:
    """A :class:`Predictor` with the ensemble head only: ``combine`` works, the bases live in other replicas.

    The bases are stand-ins (``nn.Identity``) that give the head its member names and order; the head's own
    weights are loaded strictly, so a mismatch with the spec is an error, not silently wrong predictions.
    """
    from raycast.config import EnsembleConfig
    from raycast.models import create_ensemble_model

    spec = load_spec(storage, version)
    stand_ins = {n: torch.nn.Identity() for n in spec["members"]}
    ensemble = create_ensemble_model(stand_ins, EnsembleConfig.model_validate(spec["models"]["ensemble"]))
    ensemble.load_state_dict(load_weights(storage, version, HEAD), strict=True)
    return Predictor(spec, stand_ins, ensemble.eval(), torch.device("cpu"))


@torch.no_grad()
def run_base(model: torch.nn.Module, windows: np.ndarray, device: torch.device) -> np.ndarray:
    """(n,) standardized outputs of one base model, as ``Predictor.base_outputs`` computes them."""
    x = torch.as_tensor(np.asarray(windows, dtype=np.float32), device=device)
    return model(x).float().reshape(-1).cpu().numpy()
