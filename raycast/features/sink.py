"""The feature pipeline's Ray Data sink: each write task's rows go to one Parquet file, their statistics back.

The sink runs in the same task as the featurizing map (Ray Data fuses them), so a block is written where it
was computed; what the task returns is small: per-date row counts and the statistics the configured
normalization merges (see ``raycast.features.normalize.partial_stats``), the rows written per symbol, and the
symbols that could not be featurized with their reasons (placeholder rows, never written).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data import Datasink
from ray.data.block import BlockAccessor

from raycast import fs
from raycast.features.normalize import partial_stats


PENDING_PREFIX = "pending-"
"""File name prefix of the rows whose label waits for later bars."""


class FeatureRowsSink(Datasink):
    """Writes each write task's feature rows as one Parquet file and returns their per-date statistics."""

    def __init__(
        self,
        rows_dir: str,
        features: list[str],
        normalization: str,
        skip_column: str,
        pending_column: str | None = None,
        prefix: str = "part",
    ):
        self.rows_dir, self.features, self.normalization = rows_dir, features, normalization
        self.skip_column, self.pending_column, self.prefix = skip_column, pending_column, prefix
        # set on the driver once every task has written
        self.stats: pd.DataFrame | None = None
        self.rows_per_symbol: dict[str, int] = {}
        self.skipped: dict[str, str] = {}

    def write(self, blocks, ctx) -> dict:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        table = pa.concat_tables(tables, promote_options="default") if tables else None
        empty = pd.DataFrame({"date": pd.Series(dtype="datetime64[ns]"), "n": pd.Series(dtype=np.int64)})
        if table is None or table.num_rows == 0:
            return {"stats": empty, "rows": {}, "skipped": {}}
        skipped = {}
        if self.skip_column in table.column_names:
            reasons = table.column(self.skip_column)
            placeholder = pc.is_valid(reasons)
            marked = table.filter(placeholder)
            skipped = dict(zip(marked.column("symbol").to_pylist(), marked.column(self.skip_column).to_pylist()))
            table = table.filter(pc.invert(placeholder)).drop_columns([self.skip_column])
        if table.num_rows == 0:
            return {"stats": empty, "rows": {}, "skipped": skipped}
        # Rows whose label is still pending (the last label-span bars of a symbol) go to a file of their own: an
        # incremental build replaces them once later bars arrive, and links the files of settled rows unchanged.
        parts = {f"{self.prefix}-{ctx.task_idx:05d}.parquet": table}
        if self.pending_column and self.pending_column in table.column_names:
            pending = table.column(self.pending_column)
            settled = table.filter(pc.invert(pending)).drop_columns([self.pending_column])
            parts = {f"{self.prefix}-{ctx.task_idx:05d}.parquet": settled,
                     f"{PENDING_PREFIX}{self.prefix}-{ctx.task_idx:05d}.parquet": table.filter(pending).drop_columns([self.pending_column])}  # fmt: skip
            table = table.drop_columns([self.pending_column])
        for name, part in parts.items():
            if part.num_rows == 0:
                continue
            filesystem, path = fs.resolve(fs.join(self.rows_dir, name))
            # Dictionary-encode the symbol only: pyarrow's default tries it on every float column too, which made
            # the write 5x slower and the file 45% larger for these never-repeating values. A retried task rewrites
            # the same file.
            pq.write_table(part, path, filesystem=filesystem, use_dictionary=["symbol"])
        counts = pc.value_counts(table.column("symbol")).to_pylist()
        rows = {str(c["values"]): int(c["counts"]) for c in counts}
        return {"stats": partial_stats(table, self.features, self.normalization), "rows": rows, "skipped": skipped}

    def on_write_complete(self, write_result) -> None:
        results = write_result.write_returns
        self.stats = pd.concat([r["stats"] for r in results], ignore_index=True)
        for r in results:
            self.rows_per_symbol |= r["rows"]
            self.skipped |= r["skipped"]
