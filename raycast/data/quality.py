"""The oddities of real histories, found per symbol and handled by a configured policy (``ingest.quality``).

Validation (``raycast.data.validate``) judges one row at a time; these checks need a symbol's whole history:

* ``splits``: an unadjusted split, an overnight gap (previous close to open) within ``split_tolerance`` of a common
  split ratio (2:1, 3:1, 3:2, ... or a reverse split) whose day closes within four times that of the same ratio. ``adjust`` divides
  the earlier prices by the ratio (and multiplies their volume), ``cut`` starts the history at the split, ``flag``
  only counts it. A real crash that happens to halve a price overnight looks the same; ``flag`` is there for
  vendors whose files are already adjusted.
* ``bad_ticks``: one bar printed far off: its close ``bad_tick_ratio`` times (5 by default) above or below the
  closes on both sides, which agree with each other within half of that (in log terms); or a bar whose overnight
  gap matches a split ratio that the next bar's gap undoes (a split is never reversed the next day). ``drop``
  removes the bar, ``cut`` starts the history after it, ``flag`` only counts it. A bad bar at the end of a history
  cannot be told from a real move until the next bar comes; an append finds it then.
* ``halts``: ``halt_days`` or more business days missing between two bars. Features run on over a halt (an
  indicator sees bar after bar); labels that span one are dropped by the feature stage
  (``features.max_label_gap_days``).
* ``zero_volume``: ``zero_volume_days`` or more bars in a row without a trade.
* ``stale``: ``stale_days`` or more bars in a row with the same close (a quote nobody updated).

``flag`` keeps the bars; ``cut`` drops the history up to the end of the last occurrence, so the symbol restarts
after it. Every occurrence is counted per symbol in the market manifest's ``quality`` section, with the rows a
policy removed (splits and bad ticks are listed one by one), so nothing disappears unaccounted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from raycast.config import QualityConfig
from raycast.data.schema import PRICE_COLUMNS, canonical_bars

CHECKS = ("splits", "bad_ticks", "halts", "zero_volume", "stale")


def _run_ends(mask: np.ndarray, min_length: int) -> np.ndarray:
    """Indices one past the end of every run of True at least ``min_length`` long."""
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return ends[ends - starts >= min_length]


def _split_gaps(bars: pd.DataFrame, cfg: QualityConfig, first: np.ndarray) -> np.ndarray:
    """Per bar, the split ratio its overnight gap from the bar before matches (old price / new price), 0 where none
    or where the bar starts its symbol (``first``)."""
    close, open_ = bars["close"].to_numpy(), bars["open"].to_numpy()
    matched = np.zeros(len(close))
    if len(close) < 2:
        return matched
    ratios = np.array(sorted({*cfg.split_ratios, *(1.0 / r for r in cfg.split_ratios)}))
    by_close, by_open = close[:-1] / close[1:], close[:-1] / open_[1:]
    nearest = ratios[np.abs(np.log(by_open)[:, None] - np.log(ratios)[None, :]).argmin(axis=1)]
    hit = (np.abs(by_open / nearest - 1) < cfg.split_tolerance) & (np.abs(by_close / nearest - 1) < 4 * cfg.split_tolerance)
    matched[1:] = np.where(hit & ~first[1:], nearest, 0.0)
    return matched


def _splits_and_bad_ticks(bars: pd.DataFrame, cfg: QualityConfig, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Of sorted bars whose symbols begin where ``first`` is True: each bar's split ratio (0 where it starts no
    split) and whether it is a bad tick."""
    matched = _split_gaps(bars, cfg, first)
    # a gap that the next bar's gap undoes is one bar printed off by that ratio, not a split and its reversal
    undone = (matched[:-1] > 0) & np.isclose(matched[:-1] * matched[1:], 1.0)
    splits = matched.copy()
    splits[:-1][undone] = 0.0
    splits[1:][undone] = 0.0
    bad = np.zeros(len(matched), dtype=bool)
    bad[:-1] = undone
    close = bars["close"].to_numpy()
    if len(close) >= 3:
        jump = np.log(cfg.bad_tick_ratio)
        step = np.diff(np.log(close))
        up, down = step[:-1], step[1:]  # into bar i from the one before, out of it to the one after
        inside = ~first[1:-1] & ~first[2:]  # both neighbours belong to the bar's symbol
        spike = (np.abs(up) >= jump) & (np.abs(down) >= jump) & (np.abs(up + down) <= jump / 2)
        bad[1:-1] |= spike & inside
    return splits, bad


def _first_of(bars: pd.DataFrame) -> np.ndarray:
    """One symbol's sorted bars: only the first begins it."""
    return np.arange(len(bars)) == 0


def find_splits(bars: pd.DataFrame, cfg: QualityConfig) -> list[tuple[int, float]]:
    """(bar index of the first post-split bar, ratio) for each unadjusted split in one symbol's sorted bars.

    The ratio is old price / new price: 2.0 for a 2-for-1 split, 0.1 for a 1-for-10 reverse split.
    """
    splits, _ = _splits_and_bad_ticks(bars, cfg, _first_of(bars))
    return [(int(i), float(splits[i])) for i in np.flatnonzero(splits)]


def find_bad_ticks(bars: pd.DataFrame, cfg: QualityConfig) -> list[int]:
    """Bar indices of the bad ticks in one symbol's sorted bars."""
    _, bad = _splits_and_bad_ticks(bars, cfg, _first_of(bars))
    return np.flatnonzero(bad).tolist()


def find_events(bars: pd.DataFrame, cfg: QualityConfig) -> dict[str, list[int]]:
    """Per check, the bar index each occurrence ends at (the first bar a ``cut`` keeps)."""
    return {
        "splits": [i for i, _ in find_splits(bars, cfg)],
        "bad_ticks": [i + 1 for i in find_bad_ticks(bars, cfg)],
        **_gaps_and_streaks(bars, cfg),
    }


def _gaps_and_streaks(bars: pd.DataFrame, cfg: QualityConfig) -> dict[str, list[int]]:
    """:func:`find_events` for the checks that do not look at price levels: halts, zero-volume and stale runs."""
    days = bars["date"].to_numpy("datetime64[D]")
    missing = np.busday_count(days[:-1], days[1:]) - 1 if len(days) > 1 else np.zeros(0, dtype=int)
    close = bars["close"].to_numpy()
    unchanged = np.r_[False, close[1:] == close[:-1]]
    return {
        "halts": (np.flatnonzero(missing >= cfg.halt_days) + 1).tolist(),
        "zero_volume": _run_ends(bars["volume"].to_numpy() == 0, cfg.zero_volume_days).tolist(),
        # a run of k unchanged closes is k + 1 bars at one price
        "stale": _run_ends(unchanged, cfg.stale_days - 1).tolist(),
    }


def _adjust_splits(bars: pd.DataFrame, splits: list[tuple[int, float]]) -> pd.DataFrame:
    factor = np.ones(len(bars))
    for index, ratio in splits:
        factor[:index] /= ratio
    out = bars.copy()
    for col in PRICE_COLUMNS:
        out[col] = out[col].to_numpy() * factor
    out["volume"] = out["volume"].to_numpy() / factor
    return out


def _long_runs(mask: np.ndarray, first: np.ndarray, min_length: int) -> np.ndarray:
    """Rows in runs of True at least ``min_length`` long, a run broken where a symbol's rows begin (``first``)."""
    begins = mask & (~np.r_[False, mask[:-1]] | first)
    run = np.cumsum(begins)
    lengths = np.bincount(run[mask], minlength=run[-1] + 1 if len(run) else 1)
    return mask & (lengths[run] >= min_length)


def _symbols_with_events(bars: pd.DataFrame, cfg: QualityConfig) -> set[str]:
    """The symbols of sorted canonical bars where any check fires, found on the whole frame at once so that the
    per-symbol pass only visits them (on a clean universe, none)."""
    symbol = bars["symbol"].to_numpy()
    if not len(symbol):
        return set()
    first = np.r_[True, symbol[1:] != symbol[:-1]]
    splits, bad = _splits_and_bad_ticks(bars, cfg, first)
    hit = (splits > 0) | bad
    days = bars["date"].to_numpy("datetime64[D]")
    hit[1:] |= np.busday_count(days[:-1], days[1:]) - 1 >= cfg.halt_days
    hit &= ~first  # a pair of bars across two symbols is no event
    hit |= _long_runs(bars["volume"].to_numpy() == 0, first, cfg.zero_volume_days)
    close = bars["close"].to_numpy()
    unchanged = np.r_[False, close[1:] == close[:-1]] & ~first
    hit |= _long_runs(unchanged, first, cfg.stale_days - 1)
    return set(symbol[hit].tolist())


def apply_quality_policies(
    bars: pd.DataFrame, cfg: QualityConfig, since: dict[str, pd.Timestamp] | None = None
) -> tuple[pd.DataFrame, dict]:
    """Canonical bars with the configured policies applied, and the report for the manifest.

    The report has, per check: ``policy``, ``events`` (occurrences), ``symbols`` ({symbol: occurrences}),
    ``rows_cut`` (bars the policy removed: a ``cut``'s history, a ``drop``'s bars); splits also list ``{symbol,
    date, ratio}`` and bad ticks ``{symbol, date, close, previous_close}`` under ``found``.

    ``since`` (an append: each symbol's stored history joined with its new bars) counts only the occurrences that
    end on or after the symbol's first new bar; earlier ones were counted when those bars were ingested.
    """
    policy = {"splits": cfg.splits, "bad_ticks": cfg.bad_ticks, "halts": cfg.halts, "zero_volume": cfg.zero_volume,
              "stale": cfg.stale}  # fmt: skip
    report = {c: {"policy": policy[c], "events": 0, "symbols": {}, "rows_cut": 0} for c in CHECKS}
    report["splits"]["found"], report["bad_ticks"]["found"] = [], []
    bars = canonical_bars(bars, check=False)
    suspects = _symbols_with_events(bars, cfg)
    to_check = bars["symbol"].isin(suspects).to_numpy()
    parts = [bars[~to_check]]
    for symbol, group in bars[to_check].groupby("symbol", sort=True):
        group = group.reset_index(drop=True)
        first_new = 0 if since is None or symbol not in since else int(group["date"].searchsorted(since[symbol]))
        ratio, is_bad = _splits_and_bad_ticks(group, cfg, _first_of(group))
        splits = [(int(i), float(ratio[i])) for i in np.flatnonzero(ratio)]
        bad = np.flatnonzero(is_bad).tolist()
        date, close = group["date"], group["close"].to_numpy()
        report["splits"]["found"] += [
            {"symbol": str(symbol), "date": str(date.iloc[i].date()), "ratio": round(r, 4)}
            for i, r in splits
            if i >= first_new
        ]
        report["bad_ticks"]["found"] += [
            {"symbol": str(symbol), "date": str(date.iloc[i].date()), "close": float(close[i]),
             "previous_close": float(close[i - 1])}  # fmt: skip
            for i in bad
            if i + 1 >= first_new
        ]
        if splits and cfg.splits == "adjust":
            group = _adjust_splits(group, splits)
        # splits and bad ticks as found before any adjustment (which leaves the bars where they are)
        events = {"splits": [i for i, _ in splits], "bad_ticks": [i + 1 for i in bad], **_gaps_and_streaks(group, cfg)}
        start = 0
        for check, ends in events.items():
            if not ends:
                continue
            entry = report[check]
            counted = sum(1 for end in ends if end >= first_new)
            if counted:
                entry["events"] += counted
                entry["symbols"][str(symbol)] = counted
            if policy[check] == "cut" and ends[-1] > start:
                entry["rows_cut"] += ends[-1] - start
                start = ends[-1]
        keep = np.arange(len(group)) >= start
        if cfg.bad_ticks == "drop":
            dropped = [i for i in bad if i >= start]
            keep[dropped] = False
            report["bad_ticks"]["rows_cut"] += len(dropped)
        parts.append(group[keep])
    return canonical_bars(pd.concat(parts, ignore_index=True), check=False), report


def quality_summary(report: dict) -> str:
    """One line for the console: ``quality: 3 splits adjusted (2 symbols), 5 halts flagged (4 symbols), ...``."""
    return "quality: " + describe_quality(report)


def describe_quality(report: dict) -> str:
    """What the checks found and did, in words: ``3 splits adjusted (2 symbols), ...`` or ``nothing to report``."""
    done = {"flag": "flagged", "cut": "cut", "adjust": "adjusted", "drop": "dropped"}
    name = {"bad_ticks": "bad ticks"}
    parts = [
        f"{entry['events']} {name.get(check, check.replace('_', '-'))} {done[entry['policy']]} "
        f"({len(entry['symbols'])} symbols)"
        + (f", {entry['rows_cut']} rows cut" if entry["rows_cut"] and entry["policy"] == "cut" else "")
        for check, entry in report.items()
        if entry["events"]
    ]
    return ", ".join(parts) if parts else "nothing to report"
