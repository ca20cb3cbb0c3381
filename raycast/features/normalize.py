"""Feature normalization fit on training rows only (the seed's three options).

The statistics are plain lists so they can be saved next to the features and in the model registry; serving
applies exactly the transform training used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


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
    return _normalizer(method, features, center, scale, clip)


def _normalizer(method: str, features: list[str], center: np.ndarray, scale: np.ndarray, clip: float) -> Normalizer:
    scale = np.where(scale > 1e-12, scale, 1.0)  # a constant feature stays finite instead of dividing by zero
    return Normalizer(method, list(features), center.tolist(), scale.tolist(), float(clip))


# --------------------------------------------------------------------------- statistics merged across blocks
# The feature pipeline's tasks each hold some symbols' rows; the training period is only known once every
# task has finished. So each task reports per-date statistics of its rows, and the driver merges those of the
# training dates: no second pass over the rows. z-score and min-max merge exactly; robust (quantiles) does not,
# and is fit from the rows themselves.

MERGEABLE = ("zscore", "minmax")  # per-date mean and m2, or min and max, merge exactly


def partial_stats(table: pa.Table, features: list[str], method: str) -> pd.DataFrame:
    """Per-date row count ``n`` and, for a mergeable ``method``, each feature's statistics over that date's rows.

    ``m2`` is the sum of squared deviations from the date's own mean (merged with Chan et al.'s formula, which
    stays accurate where a plain sum of squares would cancel).
    """
    aggs: list = [("date", "count")]
    for f in features:
        if method == "zscore":
            aggs += [(f, "mean"), (f, "variance", pc.VarianceOptions(ddof=0))]
        elif method == "minmax":
            aggs += [(f, "min"), (f, "max")]
    grouped = table.group_by("date").aggregate(aggs).to_pandas()
    out = {"date": grouped["date"], "n": grouped["date_count"].astype(np.int64)}
    for f in features:
        if method == "zscore":
            out[f"mean:{f}"] = grouped[f"{f}_mean"]
            out[f"m2:{f}"] = grouped[f"{f}_variance"] * out["n"]
        elif method == "minmax":
            out[f"min:{f}"], out[f"max:{f}"] = grouped[f"{f}_min"], grouped[f"{f}_max"]
    return pd.DataFrame(out)


def merge_partial_stats(stats: pd.DataFrame, features: list[str], method: str, clip: float = 5.0) -> Normalizer:
    """The normalizer :func:`fit_normalizer` would fit on the rows that ``stats`` (from :func:`partial_stats`)
    describe; select the training dates' statistics first."""
    if method not in MERGEABLE:
        raise ValueError(f"normalization {method!r} cannot be merged from partial statistics")
    n = stats["n"].to_numpy(np.float64)
    if n.sum() < 2:
        raise ValueError(f"need at least 2 training rows of {len(features)} features, got {int(n.sum())}")
    if method == "zscore":
        mean = stats[[f"mean:{f}" for f in features]].to_numpy(np.float64)
        m2 = stats[[f"m2:{f}" for f in features]].to_numpy(np.float64)
        center = (n[:, None] * mean).sum(axis=0) / n.sum()
        total_m2 = m2.sum(axis=0) + (n[:, None] * (mean - center) ** 2).sum(axis=0)
        scale = np.sqrt(total_m2 / n.sum())
    else:
        lo = stats[[f"min:{f}" for f in features]].to_numpy(np.float64).min(axis=0)
        hi = stats[[f"max:{f}" for f in features]].to_numpy(np.float64).max(axis=0)
        center, scale = lo, hi - lo
    return _normalizer(method, features, center, scale, clip)
