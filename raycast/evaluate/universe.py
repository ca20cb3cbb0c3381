"""The tradable universe and the spread a trade pays, from the raw market columns of the predictions frame.

A row (symbol, date t) is tradable when its close is at least ``min_price``, its mean daily traded value over the
last 20 bars (``dollar_volume_20d``) at least ``min_dollar_volume``, and, with ``skip_zero_volume``, the symbol
traded on day t and on the entry day t + label_delay (``volume``, ``entry_volume``). Every reason is counted on
its own (a row can fail several), so the report shows what each filter removed.

The spread is a proxy: a half-spread in bps by liquidity bucket of ``dollar_volume_20d``, paid per unit of
turnover on top of the flat ``cost_bps``. Illiquid names pay more to trade, which is where a same-close or
bounce-driven edge dies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from raycast.config import SpreadBucket, UniverseConfig

REASONS = ("price", "liquidity", "zero_volume", "entry_volume")
"""Why a row is untradable: close below the minimum, too little traded value, no volume at t, none on entry."""

NEEDED = {"price": "close", "liquidity": "dollar_volume_20d", "zero_volume": "volume", "entry_volume": "entry_volume"}


@dataclass(frozen=True)
class Tradable:
    """Which rows of a predictions frame could be traded, and how many each reason excluded.

    ``counts`` maps each of :data:`REASONS` (that was checked) to the rows it excludes, plus ``rows`` (all rows
    with a known target), ``excluded`` (rows failing at least one check) and ``tradable``. ``unchecked`` names the
    checks the frame had no column for (a feature dataset built without market columns).
    """

    mask: np.ndarray
    counts: dict[str, int]
    unchecked: tuple[str, ...] = ()


def tradable_rows(frame: pd.DataFrame, cfg: UniverseConfig) -> Tradable:
    """The tradable rows of ``frame`` by the rules in the module docstring; rows without a target are not counted."""
    with_target = np.isfinite(frame["target"].to_numpy(dtype=np.float64, na_value=np.nan))
    checks: dict[str, np.ndarray] = {}
    unchecked = []
    active = {
        "price": cfg.min_price > 0,
        "liquidity": cfg.min_dollar_volume > 0,
        "zero_volume": cfg.skip_zero_volume,
        "entry_volume": cfg.skip_zero_volume,
    }
    for reason in REASONS:
        if not active[reason]:
            continue
        column = NEEDED[reason]
        if column not in frame:
            unchecked.append(reason)
            continue
        values = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            if reason == "price":
                bad = ~(values >= cfg.min_price)  # NaN fails too: an unknown price cannot be checked
            elif reason == "liquidity":
                bad = ~(values >= cfg.min_dollar_volume)
            else:
                bad = ~(values > 0)
        checks[reason] = bad & with_target
    excluded = np.zeros(len(frame), dtype=bool)
    for bad in checks.values():
        excluded |= bad
    counts = {"rows": int(with_target.sum())}
    counts |= {reason: int(bad.sum()) for reason, bad in checks.items()}
    counts |= {"excluded": int(excluded.sum()), "tradable": int((with_target & ~excluded).sum())}
    return Tradable(mask=with_target & ~excluded, counts=counts, unchecked=tuple(unchecked))


def add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    """Two :attr:`Tradable.counts` summed key by key (walk-forward folds add up)."""
    return {k: a.get(k, 0) + b.get(k, 0) for k in dict.fromkeys([*a, *b])}


def spread_bps(dollar_volume: np.ndarray, buckets: list[SpreadBucket]) -> np.ndarray:
    """The half-spread in bps of each row from its 20-day traded value; unknown traded value pays the widest."""
    dollar_volume = np.asarray(dollar_volume, dtype=np.float64)
    if not buckets:
        return np.zeros(len(dollar_volume))
    bounds = np.array([b.min_dollar_volume for b in buckets])
    bps = np.array([b.bps for b in buckets])
    index = np.searchsorted(bounds, np.nan_to_num(dollar_volume, nan=0.0), side="right") - 1
    return bps[np.clip(index, 0, len(bps) - 1)]


def describe_spread(buckets: list[SpreadBucket]) -> str:
    """One line naming each bucket, e.g. ``>= 0: 25 bps; >= 1e+07: 10 bps``."""
    if not buckets:
        return "no spread"
    return "; ".join(f"traded value >= {b.min_dollar_volume:,.0f}: {b.bps:g} bps" for b in buckets)
