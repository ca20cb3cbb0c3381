"""The tabular bar: LightGBM on the last day's features and a few lagged days.

Gradient-boosted trees on hand-made features are what a quant runs first (Qlib's LightGBM on Alpha158 is the
reference on CSI300); a deep sequence model has to beat them to earn its cost. The trees see the same normalized
features as the deep models, at the last day of each window and at ``lags`` days before it, and train on the same
training windows, stopping early on the validation period.

Training is deterministic for a given seed (LightGBM's ``deterministic`` mode, row-wise histograms, a fixed thread
count), so two runs of the same evaluation give the same numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from raycast.config import LightGBMConfig
from raycast.evaluate.metrics import daily_ic_arrays

TARGET_CLIP_QUANTILE = 0.005
"""Training targets are clipped to their 0.5% / 99.5% quantiles: one bad tick must not shape the trees."""


def lagged_rows(x: np.ndarray, ends: np.ndarray, lags: list[int]) -> np.ndarray:
    """(len(ends), features x (1 + len(lags))): row ``e`` of ``x`` beside rows ``e - lag`` for each lag.

    ``ends`` end full windows (:meth:`~raycast.features.store.FeatureBlocks.ends`), so every lag shorter than the
    window stays inside the same symbol's contiguous history.
    """
    return np.concatenate([x[ends], *(x[ends - lag] for lag in lags)], axis=1)


def _ic_eval(date_codes: np.ndarray):
    """A LightGBM ``feval``: the mean daily Pearson IC of the predictions on the validation rows."""

    def feval(preds, data):
        ic = daily_ic_arrays(date_codes, preds, data.get_label())
        return "ic", float(np.nanmean(ic)) if np.isfinite(ic).any() else 0.0, True

    return feval


@dataclass
class LightGBMModel:
    """A fitted booster and what it needs to predict: the lags, and the target scaling it was trained in."""

    booster: object
    lags: list[int]
    target_mean: float
    target_std: float
    best_iteration: int
    train_seconds: float

    def predict(self, x: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Predictions in return units for the windows ending at rows ``ends`` of the feature matrix ``x``."""
        if not len(ends):
            return np.empty(0)
        raw = self.booster.predict(lagged_rows(x, ends, self.lags), num_iteration=self.best_iteration)
        return raw * self.target_std + self.target_mean


def fit_lightgbm(
    x: np.ndarray,
    y: np.ndarray,
    train_ends: np.ndarray,
    val_ends: np.ndarray,
    val_dates: np.ndarray,
    cfg: LightGBMConfig,
    window: int,
) -> LightGBMModel:
    """Fit on the windows ending at ``train_ends``, stopping early on those ending at ``val_ends``.

    ``x`` is the normalized (rows, features) matrix, ``y`` the raw target per row, ``val_dates`` the date of each
    validation window (the IC is taken per date). The target is standardized with the training rows' statistics
    (after clipping its tails) and predictions are mapped back to return units, so the MSE stays comparable.
    """
    import lightgbm as lgb

    if cfg.lags and max(cfg.lags) >= window:
        raise ValueError(f"evaluate.lightgbm.lags {cfg.lags} must be shorter than the window ({window} days)")
    if not len(train_ends) or not len(val_ends):
        raise ValueError("the LightGBM baseline needs training and validation windows with known targets")
    started = time.perf_counter()
    y_train = y[train_ends].astype(np.float64)
    lo, hi = np.quantile(y_train, [TARGET_CLIP_QUANTILE, 1 - TARGET_CLIP_QUANTILE])
    y_train = np.clip(y_train, lo, hi)
    mean, std = float(y_train.mean()), float(y_train.std()) or 1.0
    params = {
        "objective": "regression",
        "metric": "None" if cfg.early_stop_metric == "ic" else "l2",
        "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves,
        "min_data_in_leaf": cfg.min_data_in_leaf,
        "feature_fraction": cfg.feature_fraction,
        "bagging_fraction": cfg.bagging_fraction,
        "bagging_freq": 1 if cfg.bagging_fraction < 1 else 0,
        "lambda_l2": cfg.lambda_l2,
        "num_threads": cfg.num_threads,
        "seed": cfg.seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }
    train_set = lgb.Dataset(lagged_rows(x, train_ends, cfg.lags), (y_train - mean) / std, free_raw_data=True)
    y_val = (y[val_ends].astype(np.float64) - mean) / std
    val_set = lgb.Dataset(lagged_rows(x, val_ends, cfg.lags), y_val, reference=train_set)
    codes = np.unique(val_dates, return_inverse=True)[1]
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=cfg.num_boost_round,
        valid_sets=[val_set],
        feval=_ic_eval(codes) if cfg.early_stop_metric == "ic" else None,
        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, first_metric_only=True, verbose=False)],
    )
    return LightGBMModel(
        booster=booster,
        lags=list(cfg.lags),
        target_mean=mean,
        target_std=std,
        best_iteration=int(booster.best_iteration or booster.current_iteration()),
        train_seconds=time.perf_counter() - started,
    )
