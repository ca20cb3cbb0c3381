"""Date splits with an embargo, and walk-forward folds.

A training target at date t is the return realized from t + label_delay to t + label_delay + horizon. An embargo
of at least that span between the end of one period and the start of the next keeps every training target out of
the period after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from raycast.config import FeatureConfig


@dataclass(frozen=True)
class Period:
    start: pd.Timestamp
    end: pd.Timestamp  # inclusive

    def mask(self, dates: np.ndarray | pd.Series) -> np.ndarray:
        d = pd.DatetimeIndex(dates)
        return np.asarray((d >= self.start) & (d <= self.end))


@dataclass(frozen=True)
class Split:
    train: Period
    val: Period
    test: Period

    def to_json(self) -> dict:
        return {k: {"start": str(p.start.date()), "end": str(p.end.date())} for k, p in self.periods().items()}

    def periods(self) -> dict[str, Period]:
        return {"train": self.train, "val": self.val, "test": self.test}

    @classmethod
    def from_json(cls, data: dict) -> Split:
        return cls(**{k: Period(pd.Timestamp(v["start"]), pd.Timestamp(v["end"])) for k, v in data.items()})


def label_span(cfg: FeatureConfig) -> int:
    """Dates after t that a label at t reaches into."""
    return cfg.label_delay + cfg.horizon


def _embargo(cfg: FeatureConfig) -> int:
    span = label_span(cfg)
    embargo = span if cfg.split.embargo_days is None else cfg.split.embargo_days
    if embargo < span:
        raise ValueError(
            f"features.split.embargo_days={embargo} is shorter than the label's span {span} (label_delay "
            f"{cfg.label_delay} + horizon {cfg.horizon}): training targets would reach into the validation period"
        )
    return embargo


def _periods(dates: pd.DatetimeIndex, bounds: list[tuple[int, int]]) -> Split:
    train, val, test = (Period(dates[a], dates[b]) for a, b in bounds)
    return Split(train, val, test)


def make_split(dates: np.ndarray | pd.Series, cfg: FeatureConfig) -> Split:
    """Train / validation / test periods over the sorted unique ``dates``, separated by the embargo."""
    d = pd.DatetimeIndex(pd.unique(pd.DatetimeIndex(dates))).sort_values()
    n, embargo = len(d), _embargo(cfg)
    s = cfg.split
    if s.train_end is not None:
        train_end = int(d.searchsorted(pd.Timestamp(s.train_end), side="right")) - 1
    else:
        train_end = int(n * s.train_frac) - 1
    if s.val_end is not None:
        val_end = int(d.searchsorted(pd.Timestamp(s.val_end), side="right")) - 1
    else:
        val_end = train_end + embargo + int(n * s.val_frac)
    val_start = train_end + 1 + embargo
    test_start = val_end + 1 + embargo
    if train_end < 0 or val_start > val_end or test_start > n - 1:
        raise ValueError(
            f"cannot split {n} dates ({d[0].date()}..{d[-1].date()}) into train/val/test with embargo "
            f"{embargo}: adjust features.split"
        )
    return _periods(d, [(0, train_end), (val_start, val_end), (test_start, n - 1)])


def make_walk_forward(dates: np.ndarray | pd.Series, cfg: FeatureConfig) -> list[Split]:
    """K expanding-window folds that end at the last date, each with its own train / val / test periods."""
    d = pd.DatetimeIndex(pd.unique(pd.DatetimeIndex(dates))).sort_values()
    n, embargo, wf = len(d), _embargo(cfg), cfg.walk_forward
    folds = []
    step = wf.test_days  # successive folds' test periods tile the end of the history
    for k in range(wf.folds):
        test_end = n - 1 - (wf.folds - 1 - k) * step
        test_start = test_end - wf.test_days + 1
        val_end = test_start - 1 - embargo
        val_start = val_end - wf.val_days + 1
        train_end = val_start - 1 - embargo
        if train_end < wf.val_days:
            raise ValueError(
                f"{wf.folds} walk-forward folds of {wf.val_days}+{wf.test_days} days do not fit in {n} dates"
            )
        folds.append(_periods(d, [(0, train_end), (val_start, val_end), (test_start, test_end)]))
    return folds
