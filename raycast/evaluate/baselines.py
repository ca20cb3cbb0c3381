"""Baseline predictors every model has to beat: zero, yesterday's return, and a ridge on the last day.

A deep model that cannot beat "predict nothing" (zero), "tomorrow repeats today" (momentum) or a linear model
on the most recent features has learned nothing worth its cost; the report shows all three next to the models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def zero_baseline(frame: pd.DataFrame) -> pd.Series:
    """A prediction of 0 for every row, aligned to ``frame.index``.

    Its MSE is the target's raw second moment (the bar for any regression); its IC is undefined (NaN).
    """
    return pd.Series(0.0, index=frame.index, name="zero")


def momentum_baseline(frame: pd.DataFrame, last_return_col: str = "return_1d") -> pd.Series:
    """Yesterday's return as the prediction: the raw (unnormalized) ``return_1d`` at date t, aligned to the frame.

    ``return_1d`` at t is close[t] / close[t-1] - 1, known at t, so this uses no future information. The
    column must hold raw returns: a z-scored column would give the same IC but a meaningless MSE.
    """
    if last_return_col not in frame.columns:
        raise KeyError(
            f"momentum baseline needs column {last_return_col!r} (the raw last return at date t); "
            f"frame has {list(frame.columns)}"
        )
    return frame[last_return_col].astype(np.float64).rename("momentum")


def last_step(X: np.ndarray) -> np.ndarray:
    """The last day's features of (samples, window, features) windows; 2-D input is returned as is."""
    X = np.asarray(X)
    if X.ndim == 3:
        return X[:, -1, :]
    if X.ndim == 2:
        return X
    raise ValueError(f"expected (samples, features) or (samples, window, features), got shape {X.shape}")


@dataclass(frozen=True)
class RidgeModel:
    """A fitted linear model ``y = X @ coef + intercept`` on the last day's features."""

    coef: np.ndarray
    intercept: float
    alpha: float

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions for (samples, features) rows or (samples, window, features) windows; NaN rows give NaN."""
        x = last_step(X).astype(np.float64, copy=False)
        if x.shape[1] != len(self.coef):
            raise ValueError(f"ridge was fit on {len(self.coef)} features, got {x.shape[1]}")
        return x @ self.coef + self.intercept


def fit_ridge(train_X: np.ndarray, train_y: np.ndarray, alpha: float = 1.0) -> RidgeModel:
    """Closed-form ridge regression with an unpenalized intercept, in numpy.

    ``train_X`` is (samples, features) or (samples, window, features), in which case only the last day of each
    window is used. Rows with any non-finite feature or target are dropped. X and y are centered first, so
    that the penalty ``alpha * |coef|^2`` does not shrink the intercept, then ``(Xc'Xc + alpha I) coef = Xc'yc``
    is solved in float64 (least squares when the system is singular, e.g. alpha = 0 with collinear features).
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, not {alpha}")
    x = last_step(train_X).astype(np.float64)
    y = np.asarray(train_y, dtype=np.float64).reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"train_X has {len(x)} samples but train_y has {len(y)}")
    keep = np.isfinite(x).all(axis=1) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(y) == 0:
        raise ValueError("no finite training rows for the ridge baseline")
    x_mean, y_mean = x.mean(axis=0), y.mean()
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc + alpha * np.eye(x.shape[1])
    rhs = xc.T @ yc
    try:
        coef = np.linalg.solve(gram, rhs)
    except np.linalg.LinAlgError:
        coef = np.linalg.lstsq(gram, rhs, rcond=None)[0]
    return RidgeModel(coef=coef, intercept=float(y_mean - x_mean @ coef), alpha=float(alpha))


def ridge_baseline(
    train_X: np.ndarray, train_y: np.ndarray, X: np.ndarray, alpha: float = 1.0, index: pd.Index | None = None
) -> pd.Series:
    """Fit :func:`fit_ridge` on the training windows and predict ``X``; a Series named ``ridge``.

    ``index`` aligns the result to the predictions frame whose rows ``X`` was cut for.
    """
    return pd.Series(fit_ridge(train_X, train_y, alpha).predict(X), index=index, name="ridge")
