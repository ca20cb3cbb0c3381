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
    return read_rows_table(features_dir, columns, filters=[("date", "<=", split.train.end.to_pydatetime())])


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
    path, filesystem, filters = _rows_source(features_dir, symbols, filters)
    return pd.read_parquet(path, filters=filters, filesystem=filesystem)


def fit_columns(features: list[str]) -> list[str]:
    """What a model fit needs of the rows: symbol, date, bar number, ``features`` and the target (no market data)."""
    return ["symbol", "date", "t", *features, "target"]


def read_rows_table(
    features_dir: fs.Location, columns: list[str] | None = None, symbols: list[str] | None = None,
    filters: list | None = None,
) -> pa.Table:
    """Feature rows (``columns`` of them, optionally some symbols, or rows matching pyarrow ``filters``) as a
    pyarrow table: no pandas copy, and :class:`FeatureBlocks` reads it column by column."""
    path, filesystem, filters = _rows_source(features_dir, symbols, filters)
    return pq.read_table(path, columns=columns, filters=filters, filesystem=filesystem)


def _rows_source(features_dir: fs.Location, symbols: list[str] | None, filters: list | None):
    """(path, filesystem, pyarrow filters) of the feature rows, the symbols folded into the filters."""
    if symbols:
        filters = [*(filters or []), ("symbol", "in", symbols)]
    filesystem, path = fs.resolve(fs.join(features_dir, ROWS_DIR))
    return path, filesystem, filters or None


class FeatureBlocks:
    """Feature rows held once in memory, sorted by (symbol, date); windows are cut from them by index.

    ``x`` is the normalized (rows, features) float32 matrix, ``y`` the raw target (return units). ``market`` holds
    the raw market columns (:data:`~raycast.features.spec.MARKET_COLUMNS`) the rows have, as float64 arrays;
    evaluation decides from them which rows could have been traded. Memory grows with rows, not rows x window.

    ``rows`` is a pandas frame or a pyarrow table (what a Parquet read gives, without a pandas copy). The matrix
    is filled one column at a time in (symbol, date) order, so building it holds the rows plus the matrix, not
    the several whole-frame copies a sort and a column selection would make; symbols are kept as codes into one
    array of names (``symbols`` points into it rather than holding a string object per row).
    """

    NORMALIZE_ROWS = 1 << 16  # rows normalized at once: bounds the temporaries to a few MB

    def __init__(self, rows: pd.DataFrame | pa.Table, normalizer: Normalizer, window: int):
        column, names = _column_reader(rows)
        self.window = window
        self.features = list(normalizer.features)
        codes, self.symbol_names = _symbol_codes(rows)
        dates = column("date").astype("datetime64[ns]", copy=False)
        order = np.lexsort((dates, codes))  # stable: by symbol, then date
        self.symbol_codes = codes[order]
        self.symbols = self.symbol_names[self.symbol_codes]
        self.dates = dates[order]
        self.x = np.empty((len(order), len(self.features)), dtype=np.float32)
        for j, name in enumerate(self.features):
            self.x[:, j] = column(name)[order]
        for i in range(0, len(order), self.NORMALIZE_ROWS):
            self.x[i : i + self.NORMALIZE_ROWS] = normalizer.transform(self.x[i : i + self.NORMALIZE_ROWS])
        self.y = column("target")[order].astype(np.float32, copy=False)
        self.raw_return = column("return_1d")[order].astype(np.float32, copy=False) if "return_1d" in names else None
        self.t = column("t")[order].astype(np.int64, copy=False)
        self.market = {c: column(c)[order].astype(np.float64, copy=False) for c in MARKET_COLUMNS if c in names}

    def __len__(self) -> int:
        return len(self.y)

    def ends(self, period: Period | None = None, require_target: bool = True) -> np.ndarray:
        """Rows that end a full window, inside ``period`` (by the window's last date), with a known target."""
        ends = window_ends(self.t, self.window, self.symbol_codes)
        keep = np.ones(len(ends), dtype=bool)
        if period is not None:
            keep &= period.mask(self.dates[ends])
        if require_target:
            keep &= np.isfinite(self.y[ends])
        return ends[keep]

    def windows(self, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return cut_windows(self.x, ends, self.window, self.y)


def _column_reader(rows: pd.DataFrame | pa.Table):
    """(name -> numpy array of that column in the rows' own order, the set of column names)."""
    if isinstance(rows, pa.Table):
        # a null float becomes NaN; a column in several chunks is joined once, here
        return (lambda name: rows.column(name).to_numpy()), set(rows.column_names)
    return (lambda name: rows[name].to_numpy()), set(rows.columns)


def _symbol_codes(rows: pd.DataFrame | pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Each row's symbol as a code into the sorted array of the symbols' names."""
    if isinstance(rows, pa.Table):
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(rows.column("symbol").combine_chunks())
        names = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
        rank = np.empty(len(names), dtype=np.int64)
        rank[np.argsort(names)] = np.arange(len(names))
        return rank[encoded.indices.to_numpy(zero_copy_only=False)], np.sort(names)
    codes, names = pd.factorize(rows["symbol"].astype(str), sort=True)
    return codes, np.asarray(names, dtype=object)
