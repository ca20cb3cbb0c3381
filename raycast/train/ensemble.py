"""The ensemble stage: the weight predictor and meta-learner fit on base predictions the bases never trained on.

The bases are fit on the training period; their outputs on the validation period are out-of-sample, and that is
what the ensemble head learns from (the earlier part of the period to fit, the later part to stop early).
Fitting on the bases' own training predictions would teach the head to trust overfit outputs.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from raycast.config import RaycastConfig


@torch.no_grad()
def base_outputs(bases: dict[str, torch.nn.Module], x: np.ndarray, ends: np.ndarray, window: int, batch: int = 4096) -> np.ndarray:
    """(len(ends), n_bases) standardized outputs of each base on the windows ending at ``ends``."""
    from raycast.features.windows import cut_windows

    cols = []
    for model in bases.values():
        model.eval()
        out = [model(torch.as_tensor(cut_windows(x, ends[i : i + batch], window))).reshape(-1).numpy()
               for i in range(0, len(ends), batch)]  # fmt: skip
        cols.append(np.concatenate(out) if out else np.empty(0, dtype=np.float32))
    return np.column_stack(cols).astype(np.float32)


def fit_ensemble_head(
    cfg: RaycastConfig,
    bases: dict[str, torch.nn.Module],
    outputs: np.ndarray,
    target: np.ndarray,
    dates: np.ndarray,
) -> tuple[torch.nn.Module, list[dict]]:
    """Train the ensemble head on (n, n_bases) base outputs and standardized targets; bases stay frozen."""
    from raycast.models import create_ensemble_model

    torch.manual_seed(cfg.train.seed)
    tc = cfg.train
    ensemble = create_ensemble_model(bases, cfg.models.ensemble)
    unique = np.unique(dates)
    cut = unique[int(len(unique) * 0.75)] if len(unique) > 4 else unique[-1]
    fit_rows, stop_rows = np.flatnonzero(dates < cut), np.flatnonzero(dates >= cut)
    if len(fit_rows) < 8 or len(stop_rows) < 2:
        raise ValueError(f"the validation period has too few windows ({len(dates)}) to fit the ensemble head")
    x = torch.tensor(outputs)  # a copy: arrays that arrive through Ray's object store are read-only
    y = torch.as_tensor(target, dtype=torch.float32)
    params = [p for p in ensemble.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=tc.ensemble_lr)
    loss_fn = torch.nn.MSELoss()
    rng = np.random.default_rng(tc.seed)
    best, best_state, bad, history = float("inf"), None, 0, []
    batch = min(tc.batch_size, len(fit_rows))
    for epoch in range(tc.ensemble_epochs):
        ensemble.train()
        order = rng.permutation(fit_rows)
        total, steps = 0.0, 0
        for i in range(0, len(order) - batch + 1, batch):  # full batches only: BatchNorm needs > 1 row
            idx = torch.as_tensor(order[i : i + batch])
            pred, _ = ensemble.forward_from_base_predictions(x[idx])
            loss = loss_fn(pred.reshape(-1), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
        ensemble.eval()
        with torch.no_grad():
            pred, _ = ensemble.forward_from_base_predictions(x[stop_rows])
            val_loss = float(loss_fn(pred.reshape(-1), y[stop_rows]))
        history.append({"epoch": epoch, "train_loss": total / max(steps, 1), "val_loss": val_loss})
        if val_loss < best:
            best, best_state, bad = val_loss, copy.deepcopy(ensemble.state_dict()), 0
        else:
            bad += 1
            if bad >= tc.patience:
                break
    ensemble.load_state_dict(best_state)
    return ensemble.eval(), history
