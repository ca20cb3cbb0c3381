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
from raycast.memory import release_free_memory
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

    ``rows`` is a pandas frame or a pyarrow table. :meth:`read` builds the blocks straight from the Parquet files
    instead, a file and a few columns at a time, so that reading holds the blocks and a slice of one file rather
    than every row twice (once in Arrow, once in the blocks). Either way each row is sent to its (symbol, date)
    place, and symbols are kept as codes into one sorted array of names (:attr:`symbol_names`;
    :meth:`symbols_at` names the rows asked for).
    """

    NORMALIZE_ROWS = 1 << 16  # rows normalized at once: bounds the temporaries to a few MB
    READ_COLUMNS = 24  # columns :meth:`read` takes from a file at once: about half of a file in memory at a time

    def __init__(self, rows: pd.DataFrame | pa.Table, normalizer: Normalizer, window: int):
        self._fill([lambda columns: rows], _names(rows), normalizer, window, release=False)

    @classmethod
    def read(
        cls, features_dir: fs.Location, normalizer: Normalizer, window: int, columns: list[str] | None = None,
        symbols: list[str] | None = None, filters: list | None = None,
    ) -> FeatureBlocks:
        """Blocks of the feature rows (``columns`` of them, optionally some symbols, or rows matching pyarrow
        ``filters``) read file by file: a first pass reads each file's symbols and dates, which say where its rows
        go; a second reads its other columns, a few at a time, into their places."""
        import pyarrow.dataset as ds

        path, filesystem, filters = _rows_source(features_dir, symbols, filters)
        # symbols as a dictionary, as they are stored: codes into a few names instead of a string per row
        parquet = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=["symbol"]))
        dataset = ds.dataset(path, filesystem=filesystem, format=parquet, partitioning="hive")
        expression = pq.filters_to_expression(filters) if filters else None
        names = set(dataset.schema.names if columns is None else columns)

        def part(fragment):
            return lambda wanted: fragment.to_table(columns=wanted, filter=expression)

        blocks = cls.__new__(cls)
        blocks._fill([part(f) for f in dataset.get_fragments(filter=expression)], names, normalizer, window, release=True)
        return blocks

    def _fill(self, parts: list, names: set[str], normalizer: Normalizer, window: int, release: bool) -> None:
        """Build the blocks from ``parts``, each a function of the columns wanted that returns some of the rows.
        ``release``: hand the reads' freed memory back to the system between the passes and after them."""
        self.window = window
        self.features = list(normalizer.features)
        codes, dates, self.symbol_names, counts = _keys(parts)
        order = np.lexsort((dates, codes))  # stable: by symbol, then date
        self.symbol_codes, self.dates = codes[order], dates[order]
        place = np.empty(len(order), dtype=np.int32 if len(order) < 2**31 else np.int64)
        place[order] = np.arange(len(order), dtype=place.dtype)  # where each row, in the parts' order, goes
        del order, codes, dates
        if release:  # the first pass's garbage would otherwise sit under the blocks
            release_free_memory()
        n = len(place)
        self.x = np.empty((n, len(self.features)), dtype=np.float32)
        self.y = np.empty(n, dtype=np.float32)
        self.t = np.empty(n, dtype=np.int32)
        self.raw_return = np.empty(n, dtype=np.float32) if "return_1d" in names else None
        self.market = {c: np.empty(n) for c in MARKET_COLUMNS if c in names}
        arrays = {"target": self.y, "t": self.t} | self.market
        if self.raw_return is not None:
            arrays["return_1d"] = self.raw_return  # often a feature too: then both are filled from it
        feature_at = {name: j for j, name in enumerate(self.features)}
        wanted = list(dict.fromkeys([*self.features, *arrays]))

        def store(name: str, to: np.ndarray, values: np.ndarray) -> None:
            if name == "date":
                if not np.array_equal(values.astype("datetime64[ns]", copy=False), self.dates[to]):
                    raise RuntimeError("a Parquet file gave its rows in another order on its second read")
            if name in feature_at:
                self.x[to, feature_at[name]] = values
            if name in arrays:
                arrays[name][to] = values

        start = 0
        for load, count in zip(parts, counts, strict=True):
            to = place[start : start + count]
            start += count
            # a few columns at a time: what a file's read holds beside the matrix is a fraction of its rows
            for first in range(0, len(wanted) if count else 0, self.READ_COLUMNS):
                group = (["date"] if first == 0 else []) + wanted[first : first + self.READ_COLUMNS]
                rows = load(group)
                column = _column_reader(rows)
                for name in group:
                    store(name, to, column(name))
                del rows, column
                if release:  # else each read's freed buffers stay resident a while
                    pa.default_memory_pool().release_unused()
        del place
        for i in range(0, n, self.NORMALIZE_ROWS):
            self.x[i : i + self.NORMALIZE_ROWS] = normalizer.transform(self.x[i : i + self.NORMALIZE_ROWS])
        if release:
            release_free_memory()

    def __len__(self) -> int:
        return len(self.y)

    @property
    def symbols(self) -> np.ndarray:
        """Every row's symbol name (an object array built on each call: :meth:`symbols_at` for a few rows)."""
        return self.symbol_names[self.symbol_codes]

    def symbols_at(self, rows: np.ndarray) -> np.ndarray:
        """The symbol names of ``rows``."""
        return self.symbol_names[self.symbol_codes[rows]]

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


def _names(rows: pd.DataFrame | pa.Table) -> set[str]:
    return set(rows.column_names if isinstance(rows, pa.Table) else rows.columns)


def _keys(parts: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Every row's symbol code and date, the parts' rows one after another; the sorted symbol names; each part's
    row count. A code is a row's symbol's place among the names of all the parts."""
    # each list starts with an empty array, so that no parts (or only empty ones) still give typed empty arrays
    codes, names = [np.empty(0, dtype=np.int32)], [np.empty(0, dtype=object)]
    dates = [np.empty(0, dtype="datetime64[ns]")]
    for load in parts:
        rows = load(["symbol", "date"])
        if len(rows):  # an empty pandas frame may lack the columns
            part_codes, part_names = _symbol_codes(rows)
            codes.append(part_codes)
            names.append(part_names)
            dates.append(_column_reader(rows)("date").astype("datetime64[ns]", copy=False))
        else:
            codes.append(codes[0])
            names.append(names[0])
    every_name = np.unique(np.concatenate(names))
    # a part's codes point into its own names: map them into every part's names
    codes = [np.searchsorted(every_name, n).astype(np.int32)[c] for c, n in zip(codes, names, strict=True)]
    return np.concatenate(codes), np.concatenate(dates), every_name.astype(object), [len(c) for c in codes[1:]]


def _column_reader(rows: pd.DataFrame | pa.Table):
    """name -> numpy array of that column in the rows' own order."""
    if isinstance(rows, pa.Table):
        # a null float becomes NaN; a column in several chunks is joined once, here
        return lambda name: rows.column(name).to_numpy()
    return lambda name: rows[name].to_numpy()


def _symbol_codes(rows: pd.DataFrame | pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Each row's symbol as a code into the sorted array of the symbols' names."""
    if isinstance(rows, pa.Table):
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(rows.column("symbol").combine_chunks())
        names = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
        rank = np.empty(len(names), dtype=np.int32)
        rank[np.argsort(names)] = np.arange(len(names), dtype=np.int32)
        return rank[encoded.indices.to_numpy(zero_copy_only=False)], np.sort(names)
    codes, names = pd.factorize(rows["symbol"].astype(str), sort=True)
    return codes, np.asarray(names, dtype=object)
