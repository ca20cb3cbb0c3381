"""The ensemble stage: the weight predictor and meta-learner fit on base predictions no base was chosen on.

The bases are fit on the training period and early-stopped on the earlier part of the validation period (the
selection part). Their outputs there were picked for looking good on those very dates, so the head learns only on
the later part (the stacking part), a label span after the selection part ends: there the bases' outputs are as
out-of-sample as they will be on the test period. Inside the stacking part the head fits on the earlier dates and
stops on the later ones, again a label span apart.

The head starts as a fixed weighted average (no meta-learner correction) whose weights maximize the IC of the
average on the fit dates, from the members' ICs shrunk toward equal (:func:`prior_weights`): when the members
differ by no more than the noise in their ICs (thin data) the weights are equal, when they differ clearly the
best member leads, and more so when the others only echo it; a member that learned nothing fades out.
Its output layers pay an L2 penalty toward that start which fades with the amount of data
(``train.ensemble_shrinkage``), and the start is itself a candidate: a trained head that does not beat it clearly
on the held-out dates is not kept. A fitted combiner of noisy members rarely beats a simple average.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from raycast.config import RaycastConfig
from raycast.features.splits import Period, Split

MIN_STACKING_DATES = 6
"""Fewest dates a stacking part may have: the head's fit and stop parts each need a few whole dates."""


@dataclass(frozen=True)
class StackingPeriods:
    """The validation period cut in two: where the bases are selected, and where the head learns."""

    selection: Period
    stacking: Period
    embargo: int

    def base_split(self, split: Split) -> Split:
        """``split`` with its validation period narrowed to the selection part (what the bases early-stop on)."""
        return Split(split.train, self.selection, split.test)

    def to_json(self) -> dict:
        return {
            "selection": {"start": str(self.selection.start.date()), "end": str(self.selection.end.date())},
            "stacking": {"start": str(self.stacking.start.date()), "end": str(self.stacking.end.date())},
            "embargo_days": self.embargo,
        }


def _sorted_dates(dates: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.unique(pd.DatetimeIndex(dates))).sort_values()


def stacking_periods(val_dates: np.ndarray, fraction: float, embargo: int) -> StackingPeriods:
    """The later ``fraction`` of the validation dates for the head, the rest (less ``embargo`` dates) for the bases."""
    d = _sorted_dates(val_dates)
    n_stack = int(round(len(d) * fraction))
    n_select = len(d) - n_stack - embargo
    if n_stack < MIN_STACKING_DATES or n_select < 2:
        raise ValueError(
            f"the validation period has {len(d)} dates: too few to give the bases' selection part (>= 2 dates), "
            f"an embargo of {embargo} and the ensemble's stacking part (train.stacking_fraction {fraction}: "
            f"{n_stack} dates, >= {MIN_STACKING_DATES} needed); lengthen features.split.val_frac or "
            "features.walk_forward.val_days"
        )
    return StackingPeriods(Period(d[0], d[n_select - 1]), Period(d[-n_stack], d[-1]), embargo)


def fit_and_stop_rows(dates: np.ndarray, embargo: int, stop_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the head's fit part (earlier dates) and stop part (the last ``stop_fraction``), ``embargo`` apart."""
    d = _sorted_dates(dates)
    n_stop = max(2, int(round(len(d) * stop_fraction)))
    n_fit = len(d) - n_stop - embargo
    if n_fit < 2:
        raise ValueError(f"the stacking part has {len(d)} dates: too few to fit the ensemble head and stop it")
    day = pd.DatetimeIndex(dates)
    return np.flatnonzero(day <= d[n_fit - 1]), np.flatnonzero(day >= d[-n_stop])


def base_outputs(bases: dict[str, torch.nn.Module], x: np.ndarray, ends: np.ndarray, window: int, batch: int = 4096) -> np.ndarray:
    """(len(ends), n_bases) standardized outputs of each base on the windows ending at ``ends``."""
    from contextlib import nullcontext

    from raycast.train.loop import predict_blocks

    blocks_x = torch.as_tensor(x)
    out = np.empty((len(ends), len(bases)), dtype=np.float32)
    for j, model in enumerate(bases.values()):
        out[:, j] = predict_blocks(model, blocks_x, ends, window, batch, nullcontext)
    return out


def output_layers(ensemble: torch.nn.Module) -> list[torch.nn.Linear]:
    """The layers that set the head's fixed weights (``EnsembleModel``'s weight predictor) and its correction."""
    layers = [ensemble.meta_learner[-1]]
    if hasattr(ensemble, "weight_predictor"):
        layers.append(next(m for m in reversed(ensemble.weight_predictor) if isinstance(m, torch.nn.Linear)))
    return layers


def prior_weights(outputs: np.ndarray, target: np.ndarray, dates: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """Member weights that maximize the IC of their weighted average, from skill estimates shrunk toward equal.

    Each member's mean daily IC is shrunk toward the members' mean (James-Stein): it keeps ``1 - 2 noise /
    spread`` of its distance (none when that is negative), ``spread`` being the variance of the ICs across
    members and ``noise`` the mean squared standard error of each member's IC relative to the members' mean IC
    of the same dates. Paired by date, because a day that is hard for every member moves all their ICs alike
    and leaves the spread alone. Twice the noise, like the two standard errors a trained head must clear: with
    three members the spread is itself a rough estimate, and members that differ by noise alone clear twice it
    on about one draw in twenty.

    The IC of an average is ``w'ic / sqrt(w'Cw)`` (``C``: the members' mean daily correlation with each other),
    largest at ``w`` proportional to ``inverse(C) ic``: two members that predict the same thing count once. ``C``
    is pulled toward the identity as far as the ICs are shrunk, so when the members cannot be told apart
    the weights are equal, not tilted toward the member least like the others (often one that learned
    nothing). Weights are kept non-negative (a member whose solved weight is negative is dropped and the rest
    solved again); one that learned nothing keeps only ``floor``.
    """
    from raycast.evaluate.metrics import daily_ic_arrays

    n = outputs.shape[1]
    codes = pd.factorize(pd.DatetimeIndex(dates))[0]
    daily = np.column_stack([daily_ic_arrays(codes, outputs[:, i], target) for i in range(n)])
    daily = daily[np.isfinite(daily).all(axis=1)]
    if len(daily) < 2:
        return np.full(n, 1.0 / n)
    ics = daily.mean(axis=0)
    relative = daily - daily.mean(axis=1, keepdims=True)  # n / (n - 1): a deviation from a mean of n shrinks
    noise = float((relative.var(axis=0, ddof=1) / len(daily)).mean()) * n / (n - 1) if n > 1 else 0.0
    spread = float(np.var(ics))
    keep = max(0.0, 1.0 - 2 * noise / spread) if spread > 0 else 0.0
    shrunk = ics.mean() + keep * (ics - ics.mean())
    corr = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            corr[i, j] = corr[j, i] = np.nanmean(daily_ic_arrays(codes, outputs[:, i], outputs[:, j]))
    weights = _non_negative_solve(keep * corr + (1 - keep) * np.eye(n), np.maximum(shrunk, 0.0))
    weights = weights / weights.sum() if weights.sum() > 0 else np.full(n, 1.0 / n)
    weights = np.maximum(weights, floor)
    return weights / weights.sum()


def _non_negative_solve(matrix: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``inverse(matrix) rhs`` with members whose share comes out negative dropped (zero) and the rest solved again."""
    active = list(np.flatnonzero(rhs > 0))
    while active:
        weights = np.zeros(len(rhs))
        weights[active] = np.linalg.solve(matrix[np.ix_(active, active)], rhs[active])
        if (weights >= 0).all():
            return weights
        active = [i for i in active if weights[i] > 0]
    return np.zeros(len(rhs))


def start_at_weights(ensemble: torch.nn.Module, weights: np.ndarray) -> None:
    """A fixed average: the weight predictor's last layer outputs log(weights) whatever its input (so its softmax
    gives ``weights``), and the meta-learner's last layer is zeroed (no correction): half the weighted mean."""
    with torch.no_grad():
        for layer in output_layers(ensemble):
            layer.weight.zero_()
            layer.bias.zero_()
        if hasattr(ensemble, "weight_predictor"):
            output_layers(ensemble)[1].bias.copy_(torch.as_tensor(np.log(weights), dtype=torch.float32))


def _ic(pred: np.ndarray, target: np.ndarray, dates: np.ndarray) -> float:
    from raycast.train.loop import cross_sectional_ic

    return cross_sectional_ic(dates, pred, target)[0]


def _scores(pred: np.ndarray, target: np.ndarray, dates: np.ndarray) -> dict:
    from raycast.train.loop import cross_sectional_ic

    ic, rank_ic = cross_sectional_ic(dates, pred, target)
    return {"val_ic": ic, "val_rank_ic": rank_ic, "val_loss": float(np.mean((pred - target) ** 2))}


def beats_clearly(pred: np.ndarray, baseline: np.ndarray, target: np.ndarray, dates: np.ndarray) -> bool:
    """Whether ``pred``'s per-date IC beats ``baseline``'s by more than two standard errors of the difference.

    Paired by date, so the noise both share (a hard day for every predictor) cancels. Two standard errors, not
    one: ``pred`` is the best of several epochs on these very dates, so a bare win is expected by chance alone.
    """
    from raycast.evaluate.metrics import daily_ic

    frame = pd.DataFrame({"date": dates, "target": target, "pred": pred, "base": baseline})
    diff = (daily_ic(frame, "pred") - daily_ic(frame, "base")).dropna()
    if len(diff) < 3:
        return False
    return bool(diff.mean() > 2 * diff.std(ddof=1) / np.sqrt(len(diff)))


def fit_ensemble_head(
    cfg: RaycastConfig,
    bases: dict[str, torch.nn.Module],
    outputs: np.ndarray,
    target: np.ndarray,
    dates: np.ndarray,
    embargo: int = 0,
    on_epoch: Callable[[dict, dict], None] | None = None,
) -> tuple[torch.nn.Module, list[dict], dict]:
    """Train the head on (n, n_bases) base outputs and processed targets of the stacking part; bases stay frozen.

    The head starts at :func:`prior_weights` from the fit dates. The epoch with the best IC on the stop dates is
    kept only if it beats that start there by more than two standard errors (:func:`beats_clearly`); otherwise
    the head stays at the start. Returns the head, its per-epoch history, and a summary on the held-out stop
    dates: each member's IC against ``target``, the equal-weight average's, the start's and the kept head's
    (``kept`` says which epoch, or ``prior``), with the prior weights.
    ``on_epoch(metrics, kept_metrics)`` is called after every epoch with its stop-date scores and those of the
    best state so far (a Tune trial reports them).
    """
    from raycast.models import create_ensemble_model
    from raycast.train.labels import DateBatches
    from raycast.train.loop import make_loss

    torch.manual_seed(cfg.train.seed)
    tc = cfg.train
    ensemble = create_ensemble_model(bases, cfg.models.ensemble)
    fit_rows, stop_rows = fit_and_stop_rows(dates, embargo)
    prior = prior_weights(outputs[fit_rows], target[fit_rows], dates[fit_rows])
    start_at_weights(ensemble, prior)
    start = [p.detach().clone() for layer in output_layers(ensemble) for p in (layer.weight, layer.bias)]
    x = torch.tensor(outputs)  # a copy: arrays that arrive through Ray's object store are read-only
    y = torch.as_tensor(target, dtype=torch.float32)
    params = [p for p in ensemble.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=tc.ensemble_lr)
    loss_fn = make_loss(tc.loss)
    penalty = tc.ensemble_shrinkage / len(fit_rows)
    rng = np.random.default_rng(tc.seed)
    batches = DateBatches(fit_rows, dates[fit_rows], tc.batch_size)
    stop_dates, stop_target = dates[stop_rows], target[stop_rows]

    def stop_predictions() -> np.ndarray:
        ensemble.eval()
        with torch.no_grad():
            return ensemble.forward_from_base_predictions(x[stop_rows])[0].reshape(-1).numpy()

    prior_state, prior_pred = copy.deepcopy(ensemble.state_dict()), stop_predictions()
    best_metrics = {"epoch": -1} | _scores(prior_pred, stop_target, stop_dates)
    best, best_state, best_pred, kept, bad, history = best_metrics["val_ic"], prior_state, prior_pred, "prior", 0, []
    for epoch in range(tc.ensemble_epochs):
        ensemble.train()
        total, steps = 0.0, 0
        for rows, groups in batches.epoch(rng, batches.steps):
            if len(rows) < 2:  # BatchNorm needs more than one row
                continue
            idx = torch.as_tensor(rows)
            pred, _ = ensemble.forward_from_base_predictions(x[idx])
            loss = loss_fn(pred.reshape(-1), y[idx], torch.as_tensor(groups))
            now = [p for layer in output_layers(ensemble) for p in (layer.weight, layer.bias)]
            shrink = sum(((p - p0) ** 2).sum() for p, p0 in zip(now, start, strict=True))
            optimizer.zero_grad(set_to_none=True)
            (loss + penalty * shrink).backward()
            torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
        pred = stop_predictions()
        metrics = {"epoch": epoch, "train_loss": total / max(steps, 1)} | _scores(pred, stop_target, stop_dates)
        history.append(metrics)
        if metrics["val_ic"] > best:
            best, best_state, best_pred, kept, bad = metrics["val_ic"], copy.deepcopy(ensemble.state_dict()), pred, epoch, 0
            best_metrics = metrics
        else:
            bad += 1
        if on_epoch is not None:
            on_epoch(metrics, best_metrics)
        if bad >= tc.patience:
            break
    if kept != "prior" and not beats_clearly(best_pred, prior_pred, stop_target, stop_dates):
        best, best_state, kept = _ic(prior_pred, stop_target, stop_dates), prior_state, "prior"
    ensemble.load_state_dict(best_state)
    members = {n: _ic(outputs[stop_rows, i], stop_target, stop_dates) for i, n in enumerate(bases)}
    summary = {
        "stop_label_ic": {"members": members, "equal_weights": _ic(outputs[stop_rows].mean(axis=1), stop_target, stop_dates),
                          "prior": _ic(prior_pred, stop_target, stop_dates), "ensemble": best},
        "prior_weights": {n: float(w) for n, w in zip(bases, prior, strict=True)},
        "kept": kept,
        "fit_windows": int(len(fit_rows)),
        "stop_windows": int(len(stop_rows)),
        "penalty": penalty,
    }  # fmt: skip
    return ensemble.eval(), history, summary
