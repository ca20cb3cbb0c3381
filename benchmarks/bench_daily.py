"""The daily append against a full ingest: adding one day for every symbol to a long market, in the same run.

    python benchmarks/bench_daily.py [--symbols 500] [--days 2520] [--appends 21]

A synthetic universe (not timed) is written as one Parquet file without its last ``--appends`` days, and each of
those days as a file of its own, as a data vendor delivers them. Timed, in this order:
  * full ingest: ``raycast ingest`` of the history file (read, validate, quality policies, write every symbol);
  * append: ``raycast ingest --append`` of each day file in turn (read and validate the day, compare it with the
    version's tails and run the quality policies over tail and day, write one small file per symbol, link the
    rest);
  * full ingest of history + days: what re-ingesting everything each day would cost instead.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--days", type=int, default=2520, help="business days of history (2520: ten years)")
    parser.add_argument(
        "--appends", type=int, default=21, help="days appended one by one, each timed (21: a trading month, long "
        "enough for the symbols' appended files to be merged)"
    )
    args = parser.parse_args()

    import numpy as np

    from raycast.config import SyntheticConfig, parse_config
    from raycast.data.ingest import append_bars, ingest
    from raycast.data.synthetic import generate_synthetic

    bars = generate_synthetic(SyntheticConfig(n_symbols=args.symbols, n_days=args.days, seed=0)).bars
    days = np.sort(bars["date"].unique())
    tail = days[-args.appends :]
    with tempfile.TemporaryDirectory(prefix="bench-daily-") as tmp:
        tmp = Path(tmp)
        bars[~bars["date"].isin(tail)].to_parquet(tmp / "history.parquet", index=False)
        bars.to_parquet(tmp / "everything.parquet", index=False)
        day_files = []
        for i, day in enumerate(tail):
            day_files.append(tmp / f"day-{i}.parquet")
            bars[bars["date"] == day].to_parquet(day_files[-1], index=False)

        def cfg(storage: str, path: Path | None = None):
            source = {"source": "files", "files": {"path": str(path)}} if path else {}
            return parse_config({"storage": str(tmp / storage), "ingest": source})

        started = time.perf_counter()
        ingest(cfg("store", tmp / "history.parquet"))
        full = time.perf_counter() - started
        appends = []
        for f in day_files:
            started = time.perf_counter()
            out = append_bars(cfg("store"), str(f))
            appends.append(time.perf_counter() - started)
            assert out["published"] and out["new_rows"] == args.symbols, out
        started = time.perf_counter()
        ingest(cfg("again", tmp / "everything.parquet"))
        full_again = time.perf_counter() - started

    rows = len(bars) - args.appends * args.symbols
    append = statistics.median(appends)
    print(f"\n{args.symbols} symbols x {args.days} business days ({rows:,} bars), appending one day of "
          f"{args.symbols} bars, {args.appends} days in turn")
    print(f"{'step':<44}{'seconds':>10}{'vs full ingest':>16}")
    print(f"{'full ingest of the history':<44}{full:>10.2f}{1.0:>15.2f}x")
    for label, value in (("median", append), ("mean", statistics.mean(appends)), ("slowest", max(appends))):
        print(f"{f'append one day ({label})':<44}{value:>10.2f}{value / full:>15.3f}x")
    print(f"  each append: {', '.join(f'{a:.2f}' for a in appends)}")
    print(f"{'full ingest of history + appended days':<44}{full_again:>10.2f}{full_again / full:>15.2f}x")


if __name__ == "__main__":
    main()
