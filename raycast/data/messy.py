"""A messy universe: a synthetic one with what real vendor files hold, each oddity planted on a known symbol.

Late listings, delistings, a halt, histories too short to featurize, an unadjusted split, a bad tick (one bar
printed a hundred times too high), a constant-price stub, a stale stretch with no volume, tickers with dots,
dashes, suffixes and slashes, duplicated rows and rows out of order. ``expected`` says which symbol carries which
oddity, so a test can check that every stage counts and handles each one; ``ingest.synthetic.messy: true``
ingests it like any synthetic universe.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from raycast.config import SyntheticConfig
from raycast.data.synthetic import SyntheticUniverse, generate_synthetic

ODD_TICKERS = ("BRK.B", "BF-B", "0700.HK", "RDS/A")
SHORT_BARS = 40  # well under any window's warm-up: skipped by the feature stage
HALT_DAYS = 12
SPLIT_RATIO = 2.0
BAD_TICK = 100.0
DUPLICATES = 5


@dataclass(frozen=True)
class MessyUniverse:
    bars: pd.DataFrame  # raw: duplicated rows and shuffled order included, as a vendor file might hold them
    expected: dict[str, list[str] | str | int]
    synthetic: SyntheticUniverse


def make_messy(cfg: SyntheticConfig, label_delay: int = 1) -> MessyUniverse:
    """The universe of ``cfg`` (at least 13 symbols) with the oddities in the module docstring planted."""
    if cfg.n_symbols < 13:
        raise ValueError(f"a messy universe needs at least 13 symbols to plant its oddities on, not {cfg.n_symbols}")
    universe = generate_synthetic(cfg, label_delay)
    bars = universe.bars.copy()
    rng = np.random.default_rng(cfg.seed + 1)
    dates = np.sort(bars["date"].unique())
    n = len(dates)
    symbols = sorted(bars["symbol"].unique())
    rename = dict(zip(symbols[:4], ODD_TICKERS, strict=True))
    late, delisted, halted, split, stub, stale, short_a, short_b, misprinted = symbols[4:13]
    by_symbol = bars["symbol"]

    drop = np.zeros(len(bars), dtype=bool)
    drop |= (by_symbol == late) & (bars["date"] < dates[int(n * 0.4)])  # listed 40% of the way in
    drop |= (by_symbol == delisted) & (bars["date"] > dates[int(n * 0.7)])  # delisted 70% of the way in
    halt_start = int(n * 0.5)
    drop |= (by_symbol == halted) & bars["date"].between(dates[halt_start], dates[halt_start + HALT_DAYS - 1])
    for short in (short_a, short_b):
        drop |= (by_symbol == short) & (bars["date"] < dates[n - SHORT_BARS])
    bars = bars[~drop].copy()

    # An unadjusted 2-for-1 split half-way: the earlier bars at twice the price and half the volume.
    before = (bars["symbol"] == split) & (bars["date"] < dates[n // 2])
    bars.loc[before, ["open", "high", "low", "close"]] *= SPLIT_RATIO
    bars.loc[before, "volume"] /= SPLIT_RATIO
    # A bad tick: one bar, 30% of the way in, printed a hundred times too high.
    tick_day = dates[int(n * 0.3)]
    tick = (bars["symbol"] == misprinted) & (bars["date"] == tick_day)
    bars.loc[tick, ["open", "high", "low", "close"]] *= BAD_TICK
    # A constant stub: one price and no trades for its whole history. Nothing can be computed from it.
    is_stub = bars["symbol"] == stub
    bars.loc[is_stub, ["open", "high", "low", "close"]] = 10.0
    bars.loc[is_stub, "volume"] = 0.0
    # A stale stretch: ten bars at the last traded price with no volume, then trading resumes.
    lo = int(n * 0.6)
    stretch = (bars["symbol"] == stale) & bars["date"].between(dates[lo], dates[lo + 9])
    last_close = bars.loc[(bars["symbol"] == stale) & (bars["date"] == dates[lo - 1]), "close"].iloc[0]
    bars.loc[stretch, ["open", "high", "low", "close"]] = last_close
    bars.loc[stretch, "volume"] = 0.0

    bars["symbol"] = bars["symbol"].replace(rename)
    duplicated = bars.sample(DUPLICATES, random_state=int(rng.integers(1 << 31)))
    raw = pd.concat([bars, duplicated], ignore_index=True)
    raw = raw.sample(frac=1.0, random_state=int(rng.integers(1 << 31))).reset_index(drop=True)  # out of order
    expected = {
        "odd_tickers": list(ODD_TICKERS),
        "late_listing": late,
        "delisted": delisted,
        "halted": halted,
        "split": split,
        "bad_tick": misprinted,
        "bad_tick_date": str(pd.Timestamp(tick_day).date()),
        "constant_stub": stub,
        "stale": stale,
        "too_few_bars": [short_a, short_b],
        "duplicates": DUPLICATES,
    }
    return MessyUniverse(raw, expected, universe)
