"""Feature normalization fit on training rows only (the seed's three options).

The statistics are plain lists so they can be saved next to the features and in the model registry; serving
applies exactly the transform training used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Normalizer:
    method: str
    features: list[str]
    center: list[float]
    scale: list[float]
    clip: float

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(rows, features) raw values -> normalized float32, clipped to +/- clip."""
        c = np.asarray(self.center, dtype=np.float32)
        s = np.asarray(self.scale, dtype=np.float32)
        out = (np.asarray(x, dtype=np.float32) - c) / s
        return np.clip(out, -self.clip, self.clip, out=out)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Normalizer:
        return cls(**data)


def fit_normalizer(train_rows: np.ndarray, features: list[str], method: str = "zscore", clip: float = 5.0) -> Normalizer:
    """Fit on training-period rows only. ``method`` is ``zscore``, ``minmax`` or ``robust`` (median / IQR)."""
    x = np.asarray(train_rows, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(features) or len(x) < 2:
        raise ValueError(f"need at least 2 training rows of {len(features)} features, got shape {x.shape}")
    if method == "zscore":
        center, scale = x.mean(axis=0), x.std(axis=0)
    elif method == "minmax":
        # Map the training range to [0, 1]; later values outside it are clipped with the rest.
        lo, hi = x.min(axis=0), x.max(axis=0)
        center, scale = lo, hi - lo
    elif method == "robust":
        q25, q50, q75 = np.percentile(x, [25, 50, 75], axis=0)
        center, scale = q50, q75 - q25
    else:
        raise ValueError(f"unknown normalization {method!r}; use zscore, minmax or robust")
    scale = np.where(scale > 1e-12, scale, 1.0)  # a constant feature stays finite instead of dividing by zero
    return Normalizer(method, list(features), center.tolist(), scale.tolist(), float(clip))
