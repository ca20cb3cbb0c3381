"""The model registry: one versioned directory per trained ensemble, and the predictor that serving loads.

A version holds everything needed to reproduce a prediction: the weights (plain tensors, read back with
``torch.load(weights_only=True)`` so nothing arbitrary is ever unpickled), the feature spec and normalization
statistics, model hyperparameters, target standardization, metrics, the data range, the code version and the
dataset versions it was trained on (see :mod:`raycast.lineage`).

    registry/<version>/model.json
    registry/<version>/weights/{lstm,cnn,attention,ensemble_head}.pt
    registry/served.json          the served version, once one is chosen (see :func:`set_served`)

Locally a version is written into a temp directory renamed into place. On an object store (no rename) the weights
are written first and ``model.json`` last: a version is listed only once its ``model.json`` exists.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from raycast import fs
from raycast.features.normalize import Normalizer
from raycast.lineage import list_versions, registry_dir, with_lineage

HEAD = "ensemble_head"


def code_version() -> str:
    """The git commit of the code that trained the model, or the package version outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
        if out.returncode == 0:
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import version

    return f"raycast-{version('raycast')}"


def save_version(storage: str, spec: dict, weights: dict[str, dict[str, torch.Tensor]]) -> str:
    """Write a new registry version atomically (see the module docstring); returns its name.

    The spec's feature dataset lineage is recorded from that dataset's own metadata (:mod:`raycast.lineage`).
    """
    spec = with_lineage(storage, spec)
    base = registry_dir(storage)
    version = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    tmp = fs.join(base, version if fs.is_remote(base) else f".tmp-{version}")
    fs.makedirs(fs.join(tmp, "weights"))
    for name, state in weights.items():
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in state.items()}, buffer)
        fs.write_bytes(fs.join(tmp, "weights", f"{name}.pt"), buffer.getvalue())
    spec = spec | {"version": version, "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    spec.setdefault("code_version", code_version())
    fs.write_text(fs.join(tmp, "model.json"), json.dumps(spec, indent=2, default=str))
    if not fs.is_remote(base):
        os.rename(tmp, fs.join(base, version))
    return version


def update_metrics(storage: str, version: str, metrics: dict) -> None:
    """Attach evaluation metrics to a version (model.json is replaced atomically: temp file + rename, or one PUT)."""
    path = fs.join(registry_dir(storage), version, "model.json")
    spec = json.loads(fs.read_text(path))
    spec["metrics"] = metrics
    fs.write_text(path, json.dumps(spec, indent=2, default=str))


SERVED = "served.json"


def served_version(storage: str) -> str | None:
    """The version chosen to be served (``registry/served.json``), or None while none was chosen."""
    path = fs.join(registry_dir(storage), SERVED)
    return json.loads(fs.read_text(path))["version"] if fs.is_file(path) else None


def set_served(storage: str, version: str, reason: str = "") -> None:
    """Make ``version`` the served one: what a configuration without ``serve.version`` serves and scores from now
    on. A candidate registered later is not served until it is chosen here."""
    version = resolve_version(storage, version)
    record = {"version": version, "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "reason": reason}
    fs.write_text(fs.join(registry_dir(storage), SERVED), json.dumps(record, indent=2))


def resolve_version(storage: str, version: str | None = None) -> str:
    """``version`` checked against the registry; None: the served version (:func:`set_served`), or the newest
    while none was chosen; ``"latest"``: the newest."""
    versions = [v["version"] for v in list_versions(storage)]
    if not versions:
        raise FileNotFoundError(f"no trained model in {fs.display(registry_dir(storage))}: run `raycast train` first")
    if version is None:
        served = served_version(storage)
        version = served if served in versions else "latest"
    if version == "latest":
        return versions[-1]
    if version not in versions:
        raise FileNotFoundError(f"unknown model version {version!r}; known: {', '.join(versions)}")
    return version


def load_spec(storage: str, version: str | None = None) -> dict:
    version = resolve_version(storage, version)
    return json.loads(fs.read_text(fs.join(registry_dir(storage), version, "model.json")))


def load_weights(storage: str, version: str, name: str) -> dict[str, torch.Tensor]:
    data = fs.read_bytes(fs.join(registry_dir(storage), version, "weights", f"{name}.pt"))
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def build_base(spec: dict, name: str, state: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    from raycast.models import build_model

    model = build_model(name, len(spec["features"]["features"]), spec["features"]["window"], spec["models"][name])
    if state is not None:
        model.load_state_dict(state)
    return model.eval()


@dataclass
class Predictor:
    """A registered ensemble ready to predict, in return units. Windows are normalized (n, window, features)."""

    spec: dict
    bases: dict[str, torch.nn.Module]
    ensemble: torch.nn.Module
    device: torch.device

    @property
    def version(self) -> str:
        return self.spec["version"]

    @property
    def normalizer(self) -> Normalizer:
        return Normalizer.from_json(self.spec["features"]["normalizer"])

    @property
    def window(self) -> int:
        return int(self.spec["features"]["window"])

    def _to_returns(self, z: np.ndarray) -> np.ndarray:
        return z * self.spec["target"]["std"] + self.spec["target"]["mean"]

    @torch.no_grad()
    def base_outputs(self, name: str, windows: np.ndarray) -> np.ndarray:
        """One base model's output in standardized target units (what the ensemble head consumes)."""
        x = torch.as_tensor(np.asarray(windows, dtype=np.float32), device=self.device)
        return self.bases[name](x).float().reshape(-1).cpu().numpy()

    @torch.no_grad()
    def combine(self, base_outputs: np.ndarray) -> dict:
        """Ensemble head on (n, n_bases) standardized base outputs -> predictions in return units."""
        z = torch.as_tensor(np.asarray(base_outputs, dtype=np.float32), device=self.device)
        pred, details = self.ensemble.forward_from_base_predictions(z)
        names = list(self.bases)
        weights = details.get("weights")
        return {
            "prediction": self._to_returns(pred.float().reshape(-1).cpu().numpy()),
            "base_predictions": {n: self._to_returns(base_outputs[:, i]) for i, n in enumerate(names)},
            "weights": {n: weights[:, i].float().cpu().numpy() for i, n in enumerate(names)} if weights is not None else {},
        }

    def predict_windows(self, windows: np.ndarray) -> dict:
        outs = np.column_stack([self.base_outputs(n, windows) for n in self.bases])
        return self.combine(outs)


def load_predictor(storage: str, version: str | None = None, device: str = "cpu") -> Predictor:
    """Load a registered ensemble (weights only, never arbitrary pickles) onto ``device``."""
    from raycast.config import EnsembleConfig
    from raycast.models import create_ensemble_model

    spec = load_spec(storage, version)
    dev = torch.device(device)
    bases = {n: build_base(spec, n, load_weights(storage, spec["version"], n)).to(dev) for n in spec["members"]}
    ensemble = create_ensemble_model(bases, EnsembleConfig.model_validate(spec["models"]["ensemble"]), device=str(dev))
    missing, unexpected = ensemble.load_state_dict(load_weights(storage, spec["version"], HEAD), strict=False)
    if unexpected or any(not k.startswith("bases.") for k in missing):
        raise ValueError(f"registry version {spec['version']}: ensemble head does not match its spec")
    return Predictor(spec, bases, ensemble.eval(), dev)


def head_state(ensemble: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The ensemble's own parameters (weight predictor and meta-learner), without the frozen bases."""
    return {k: v for k, v in ensemble.state_dict().items() if not k.startswith("bases.")}
