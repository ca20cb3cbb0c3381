"""Reading the feature dataset back: metadata, Ray Data datasets and in-memory feature blocks."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from raycast import fs
from raycast.features.normalize import Normalizer, fit_normalizer
from raycast.features.spec import MARKET_COLUMNS
from raycast.features.splits import Period, Split
from raycast.features.windows import cut_windows, window_ends
from raycast.storage import current_version_dir

ROWS_DIR = "rows"


def features_base(storage: str) -> fs.Location:
    return fs.join(storage, "features")


def current_features_dir(storage: str) -> fs.Location:
    return current_version_dir(features_base(storage), "feature dataset", "run `raycast features` first")


@dataclass(frozen=True)
class FeatureMeta:
    """What a feature dataset was built with; the registry copies it so serving repeats it exactly."""

    features: list[str]
    window: int
    horizon: int
    normalizer: Normalizer
    split: Split
    walk_forward: list[Split]
    raw: dict

    @classmethod
    def from_json(cls, data: dict) -> FeatureMeta:
        return cls(
            features=list(data["features"]),
            window=int(data["window"]),
            horizon=int(data["horizon"]),
            normalizer=Normalizer.from_json(data["normalizer"]),
            split=Split.from_json(data["split"]),
            walk_forward=[Split.from_json(f) for f in data.get("walk_forward", [])],
            raw=data,
        )


def load_meta(features_dir: fs.Location) -> FeatureMeta:
    return FeatureMeta.from_json(json.loads(fs.read_text(fs.join(features_dir, "meta.json"))))


def read_training_rows(features_dir: fs.Location, split: Split, columns: list[str]) -> pa.Table:
    """``columns`` of the rows in ``split``'s training period (the date filter is pushed down to Parquet)."""
    filesystem, path = fs.resolve(fs.join(features_dir, ROWS_DIR))
    filters = [("date", "<=", split.train.end.to_pydatetime())]
    return pq.read_table(path, columns=columns, filters=filters, filesystem=filesystem)


def fit_fold_normalizer(features_dir: fs.Location, split: Split, features: list[str], method: str, clip: float) -> Normalizer:
    """Normalization statistics from this split's training rows only (walk-forward folds each get their own)."""
    table = read_training_rows(features_dir, split, features)
    return fit_normalizer(np.column_stack([table.column(n).to_numpy() for n in features]), features, method, clip)


def read_feature_dataset(features_dir: fs.Location, columns: list[str] | None = None):
    """The feature rows as a Ray Data dataset (one block per featurize task, whole symbols per block)."""
    import ray

    filesystem, path = fs.resolve(fs.join(features_dir, ROWS_DIR))
    return ray.data.read_parquet(path, columns=columns, filesystem=filesystem)


def read_feature_frame(
    features_dir: fs.Location, symbols: list[str] | None = None, filters: list | None = None
) -> pd.DataFrame:
    """All feature rows (optionally some symbols, or rows matching pyarrow ``filters``) as one pandas frame."""
    if symbols:
        filters = [*(filters or []), ("symbol", "in", symbols)]
    filesystem, path = fs.resolve(fs.join(features_dir, ROWS_DIR))
    return pd.read_parquet(path, filters=filters or None, filesystem=filesystem)


class FeatureBlocks:
    """Feature rows held once in memory, sorted by (symbol, date); windows are cut from them by index.

    ``x`` is the normalized (rows, features) float32 matrix, ``y`` the raw target (return units). ``market`` holds
    the raw market columns (:data:`~raycast.features.spec.MARKET_COLUMNS`) the dataset has, as float64 arrays;
    evaluation decides from them which rows could have been traded. Memory grows with rows, not rows x window.
    """

    def __init__(self, frame: pd.DataFrame, normalizer: Normalizer, window: int):
        frame = frame.sort_values(["symbol", "date"], kind="stable").reset_index(drop=True)
        self.window = window
        self.features = list(normalizer.features)
        self.symbols = frame["symbol"].astype(str).to_numpy()
        self.dates = frame["date"].to_numpy(dtype="datetime64[ns]")
        self.x = normalizer.transform(frame[self.features].to_numpy(dtype=np.float32))
        self.y = frame["target"].to_numpy(dtype=np.float32)
        self.raw_return = frame["return_1d"].to_numpy(dtype=np.float32) if "return_1d" in frame else None
        self.t = frame["t"].to_numpy(dtype=np.int64)
        self.market = {c: frame[c].to_numpy(dtype=np.float64) for c in MARKET_COLUMNS if c in frame}

    def __len__(self) -> int:
        return len(self.y)

    def ends(self, period: Period | None = None, require_target: bool = True) -> np.ndarray:
        """Rows that end a full window, inside ``period`` (by the window's last date), with a known target."""
        ends = window_ends(self.t, self.window, self.symbols)
        keep = np.ones(len(ends), dtype=bool)
        if period is not None:
            keep &= period.mask(self.dates[ends])
        if require_target:
            keep &= np.isfinite(self.y[ends])
        return ends[keep]

    def windows(self, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return cut_windows(self.x, ends, self.window, self.y)
