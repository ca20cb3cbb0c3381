"""What the models learn against: per-date label processing, the IC loss, and batches of whole dates.

A quant ranks stocks within a day, so the part of a return that matters is its place in that day's cross-section.
Raw returns also carry the market's move (the same for every stock that day, so noise for a ranking) and, in real
files, a few absurd prints (a bad tick, an unadjusted split) whose squared error can outweigh thousands of
ordinary days. Processing the label per date removes both before the loss sees it:

* ``rank_norm``: each date's returns are ranked and mapped to normal scores (Qlib's ``CSRankNorm``): the shape
  of a day's distribution is gone, and a x100 move is merely that day's top rank.
* ``zscore``: each date demeaned and scaled by its own standard deviation (keeps magnitudes, not robust).
* ``winsorize``: each date clipped at ``clip`` robust standard deviations (median absolute deviation) around its
  median, then z-scored.
* ``none``: the raw target standardized by the training period's mean and standard deviation.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch

LabelTransform = Literal["rank_norm", "zscore", "winsorize", "none"]

MAD_TO_STD = 1.4826  # the MAD of a normal distribution times this is its standard deviation


def date_codes(dates: np.ndarray) -> np.ndarray:
    """Integer code per row, the same for rows of one date (codes follow the dates' order)."""
    return pd.factorize(pd.DatetimeIndex(dates), sort=True)[0].astype(np.int64)


def process_labels(
    y: np.ndarray,
    dates: np.ndarray,
    method: LabelTransform,
    mean: float = 0.0,
    std: float = 1.0,
    clip: float = 3.0,
) -> np.ndarray:
    """``y`` (raw returns, NaN allowed) processed per date of ``dates`` by ``method``, as float32.

    ``mean`` and ``std`` (the training period's) are used by ``none`` only. NaN labels stay NaN and take no part
    in their date's statistics; a date whose labels are all equal gets zeros.
    """
    y = np.asarray(y, dtype=np.float64)
    if method == "none":
        return ((y - mean) / std).astype(np.float32)
    if method not in ("rank_norm", "zscore", "winsorize"):
        raise ValueError(f"unknown label transform {method!r}; expected rank_norm, zscore, winsorize or none")
    frame = pd.DataFrame({"d": date_codes(dates), "y": y})
    by_date = frame.groupby("d")["y"]
    if method == "rank_norm":
        from scipy.special import ndtri

        ranks = by_date.rank(method="average").to_numpy()
        count = by_date.transform("count").to_numpy()
        return ndtri((ranks - 0.5) / count).astype(np.float32)
    if method == "winsorize":
        median = by_date.transform("median").to_numpy()
        frame["dev"] = np.abs(y - median)
        spread = frame.groupby("d")["dev"].transform("median").to_numpy() * MAD_TO_STD
        frame["y"] = np.clip(y, median - clip * spread, median + clip * spread)
        by_date = frame.groupby("d")["y"]
    centered = frame["y"].to_numpy() - by_date.transform("mean").to_numpy()
    scale = by_date.transform("std", ddof=0).to_numpy()
    out = np.divide(centered, scale, out=np.zeros_like(centered), where=scale > 0)
    out[~np.isfinite(y)] = np.nan
    return out.astype(np.float32)


def ic_loss(pred: torch.Tensor, target: torch.Tensor, groups: torch.Tensor, min_size: int = 3) -> torch.Tensor:
    """Minus the mean per-group (per-date) Pearson correlation of ``pred`` and ``target``.

    ``groups`` holds a code per row in ``[0, n_groups)``; groups with fewer than ``min_size`` rows take no part,
    since their correlation says nothing. Scale-free: only each date's ranking of the predictions counts.
    """
    n = int(groups.max()) + 1 if len(groups) else 0
    zeros = torch.zeros(n, dtype=pred.dtype, device=pred.device)
    count = zeros.index_add(0, groups, torch.ones_like(pred))
    safe = count.clamp(min=1)
    p = pred - (zeros.index_add(0, groups, pred) / safe)[groups]
    t = target - (zeros.index_add(0, groups, target) / safe)[groups]
    cov = zeros.index_add(0, groups, p * t)
    var = zeros.index_add(0, groups, p * p) * zeros.index_add(0, groups, t * t)
    corr = cov / torch.sqrt(var + 1e-12)
    keep = count >= min_size
    if not bool(keep.any()):
        return (pred * 0).sum()  # nothing to rank: a zero that keeps the graph
    return -corr[keep].mean()


class DateBatches:
    """Batches made of whole dates: every date's windows land in one batch, so a loss sees full cross-sections.

    ``ends`` are window-end rows and ``dates`` their dates. Each batch takes ``dates_per_batch`` dates, chosen so a
    batch holds about ``batch_size`` windows; dates are shuffled every epoch.
    """

    def __init__(self, ends: np.ndarray, dates: np.ndarray, batch_size: int):
        codes = date_codes(dates)
        order = np.argsort(codes, kind="stable")
        self.ends = np.asarray(ends)[order]
        self.codes = codes[order]
        self.starts = np.searchsorted(self.codes, np.arange(self.codes.max() + 1 if len(codes) else 0))
        self.stops = np.append(self.starts[1:], len(self.codes))
        n_dates = len(self.starts)
        per_date = len(self.ends) / max(n_dates, 1)
        self.dates_per_batch = int(max(1, round(batch_size / max(per_date, 1.0))))
        self.steps = max(1, n_dates // self.dates_per_batch)

    def epoch(self, rng: np.random.Generator, steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """``steps`` batches of (window ends, group code within the batch) in a fresh random date order."""
        dates = rng.permutation(len(self.starts))
        out = []
        for step in range(steps):
            chosen = dates[(step * self.dates_per_batch) % len(dates) :][: self.dates_per_batch]
            parts = [np.arange(self.starts[d], self.stops[d]) for d in chosen]
            rows = np.concatenate(parts)
            groups = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
            out.append((self.ends[rows], groups))
        return out
