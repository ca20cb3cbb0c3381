"""The epoch loop (``fit_epochs``) and the per-worker function Ray Train runs with it (``train_fn_per_worker``).

Each worker pulls its shard of the feature dataset once, keeps the rows as one normalized float32 matrix on its
device, and cuts windows from it by index every step (shuffled, or grouped into whole dates for the IC loss): the
data path costs an index gather, not a trip through the object store per batch. The labels the loss sees are
processed per date first (``train.label_transform``, :mod:`raycast.train.labels`). Validation runs on the whole validation period on every worker, so all
ranks see the same metric and take the same early-stopping decision. A Ray Tune trial runs the same
``fit_epochs`` in its own process (``raycast.tune.trainable``), without a Ray Train worker group around it.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from raycast.config import RaycastConfig
from raycast.features.normalize import Normalizer
from raycast.features.splits import Split
from raycast.features.store import FeatureBlocks
from raycast.train.labels import DateBatches
from raycast.train.timeline import peak_memory_mb

CHECKPOINT_FILE = "state.pt"


class TrainJob(BaseModel):
    """Everything one base-model fit needs, passed to the workers as plain data and re-validated there."""

    model_config = ConfigDict(extra="forbid")

    cfg: RaycastConfig
    model: str
    split: dict
    normalizer: dict
    window: int
    target_mean: float
    target_std: float
    features_dir: str | None = Field(None, description="where a Ray Train worker reads the validation rows")
    timeline_dir: str | None = Field(None, description="where the rank-0 worker writes its phases' timestamps")
    shard: Literal["rows", "symbols"] = Field(
        "rows", description="what the Ray Data training shard holds: the rows themselves, or the worker's symbols, "
        "whose training rows it then reads straight from Parquet"
    )


def validation_blocks(features_dir: str, split: Split, normalizer: Normalizer, window: int) -> FeatureBlocks:
    """The validation period's rows, with enough history before it for its first windows.

    Every worker needs all of them, so they are read straight from Parquet (date filters pushed down) rather than
    through a second Ray Data dataset, whose executor costs ~10 s per trainer on a small machine.
    """
    from raycast.features.store import fit_columns

    lookback = split.val.start - pd.tseries.offsets.BDay(2 * window + 10)
    dates = [("date", ">=", lookback.to_pydatetime()), ("date", "<=", split.val.end.to_pydatetime())]
    return FeatureBlocks.read(features_dir, normalizer, window, fit_columns(normalizer.features), filters=dates)


def training_blocks(features_dir: str, split: Split, shard, normalizer: Normalizer, window: int) -> FeatureBlocks:
    """The training rows of the symbols in a Ray Data shard of symbol names, read straight from Parquet.

    Ray Data decides which worker fits which symbols; the rows themselves skip Ray Data's executor (a streaming
    split of the rows cost ~9 s per trainer on a small machine, this read ~0.1 s for 50 symbols x 5 years).
    """
    from raycast.features.store import fit_columns

    symbols = [str(s) for batch in shard.iter_batches(batch_size=None, batch_format="numpy") for s in batch["symbol"]]
    if not symbols:
        return FeatureBlocks(pd.DataFrame(), normalizer, window)
    train_end = [("date", "<=", split.train.end.to_pydatetime())]
    return FeatureBlocks.read(features_dir, normalizer, window, fit_columns(normalizer.features), symbols, train_end)


def collect_frame(shard) -> pd.DataFrame:
    """Drain a Ray Data shard into one pandas frame (done once per run, not per epoch)."""
    frames = list(shard.iter_batches(batch_size=None, batch_format="pandas", prefetch_batches=2))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def cross_sectional_ic(dates: np.ndarray, pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Mean per-date IC and Rank IC across symbols (what a quant reads, unlike the pooled MSE)."""
    from raycast.evaluate.metrics import daily_ic

    frame = pd.DataFrame({"date": dates, "target": target, "pred": pred})
    ic, rank_ic = daily_ic(frame, "pred").mean(), daily_ic(frame, "pred", method="spearman").mean()
    return float(ic) if np.isfinite(ic) else 0.0, float(rank_ic) if np.isfinite(rank_ic) else 0.0


def make_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss(pred, target, date_groups)``; only the IC loss reads the groups."""
    from raycast.train.labels import ic_loss

    if name == "ic":
        return ic_loss
    pointwise = torch.nn.HuberLoss(delta=1.0) if name == "huber" else torch.nn.MSELoss()
    return lambda pred, target, groups: pointwise(pred, target)


def training_labels(job: TrainJob, blocks: FeatureBlocks, ends: np.ndarray) -> np.ndarray:
    """Per-row labels the loss sees (``train.label_transform``), filled in at ``ends`` (NaN elsewhere).

    Processed over the windows this worker holds: under DDP each rank ranks its own shard of a date's symbols.
    """
    from raycast.train.labels import process_labels

    tc = job.cfg.train
    y = np.full(len(blocks), np.nan, dtype=np.float32)
    y[ends] = process_labels(
        blocks.y[ends], blocks.dates[ends], tc.label_transform, job.target_mean, job.target_std, tc.label_clip
    )
    return y


def label_line(pred: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of the least-squares line from predictions to labels (NaN labels left out)."""
    keep = np.isfinite(label) & np.isfinite(pred)
    p, y = pred[keep].astype(np.float64), label[keep].astype(np.float64)
    var = float(np.var(p)) if len(p) > 1 else 0.0
    slope = float(np.mean((p - p.mean()) * (y - y.mean())) / var) if var > 0 else 0.0
    return slope, float(y.mean() - slope * p.mean()) if len(p) else 0.0


def calibrate_output(model: torch.nn.Module, slope: float, intercept: float) -> None:
    """Fold ``output -> slope * output + intercept`` into the model's final linear layer.

    A model trained with the IC loss ranks well but its outputs have no scale of their own; the line fit on the
    validation windows puts them in the label's units, so the ensemble head averages comparable numbers and the
    registry's return-unit predictions mean something.
    """
    layer = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        layer.weight.mul_(slope)
        layer.bias.mul_(slope).add_(intercept)


def predict_batch(device) -> int:
    """Windows per validation forward pass. A GPU wants large batches; on a CPU the reference transformer and LSTM
    ran no faster at 4096 windows than at 1024 but held ~0.4 GB more activations in each worker at once."""
    return 4096 if torch.device(device).type == "cuda" else 1024


@torch.no_grad()
def predict_blocks(model, blocks_x: torch.Tensor, ends: np.ndarray, window: int, batch: int, autocast) -> np.ndarray:
    """Model outputs (standardized units) for the windows ending at ``ends``; ``blocks_x`` is on the device.

    The outputs are copied into one array as they come: keeping each batch's small output tensor alive between
    the large activations freed around it fragmented a CPU worker's heap, which grew by 3 GB over 246,000
    windows of the reference transformer (none with the copy).
    """
    from raycast.features.windows import cut_windows

    model.eval()
    out = np.empty(len(ends), dtype=np.float32)
    for i in range(0, len(ends), batch):
        with autocast():
            pred = model(cut_windows(blocks_x, ends[i : i + batch], window))
        pred = pred[0] if isinstance(pred, tuple) else pred
        out[i : i + batch] = pred.float().reshape(-1).cpu().numpy()
        del pred
    return out


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _all_ranks(value: float, op: str, device) -> float:
    """``value`` reduced over the DDP ranks with ``op`` (min, max or sum); ``value`` itself without DDP."""
    import torch.distributed as dist

    if not _distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op={"min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX, "sum": dist.ReduceOp.SUM}[op])
    return float(t.item())


def _replica_spread(model: torch.nn.Module, device) -> float:
    """How far the ranks' weights drifted apart (max - min of a checksum over ranks): 0 when DDP keeps them in sync."""
    checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    return _all_ranks(checksum, "max", device) - _all_ranks(checksum, "min", device)


def save_state(state: dict, directory: str | Path) -> None:
    """Write a checkpoint state from :func:`fit_epochs` into ``directory``."""
    torch.save(state, Path(directory) / CHECKPOINT_FILE)


def load_state(directory: str | Path, device) -> dict:
    """Read a checkpoint state written by :func:`save_state`."""
    return torch.load(Path(directory) / CHECKPOINT_FILE, map_location=device, weights_only=True)


def fit_epochs(
    job: TrainJob,
    train_frame: pd.DataFrame | FeatureBlocks,
    val_frame: pd.DataFrame | FeatureBlocks,
    device,
    state: dict | None = None,
    rank: int = 0,
    wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
) -> Iterator[tuple[dict, dict | None]]:
    """Fit one base model, yielding ``(metrics, checkpoint_state)`` after every epoch.

    The one epoch loop behind both a Ray Train worker (``train_fn_per_worker``) and a Tune trial: the caller
    decides where metrics and checkpoints go. ``state`` (from a checkpoint) resumes after its epoch;
    ``wrap_model`` is ``ray.train.torch.prepare_model`` under DDP. The checkpoint state is built on rank 0 only
    (None elsewhere) and holds references to live tensors: save it before advancing the iterator. The
    iterator ends after the epoch whose metrics say ``stop`` (patience or last epoch).
    """
    from raycast.models import autocast_context, build_model

    tc = job.cfg.train
    torch.manual_seed(tc.seed + rank)
    rng = np.random.default_rng(tc.seed + rank)
    split = Split.from_json(job.split)
    normalizer = Normalizer.from_json(job.normalizer)

    # blocks built by the caller are shared by the models it fits in turn (same rows, normalizer and window)
    train_blocks = train_frame if isinstance(train_frame, FeatureBlocks) else FeatureBlocks(train_frame, normalizer, job.window)
    val_blocks = val_frame if isinstance(val_frame, FeatureBlocks) else FeatureBlocks(val_frame, normalizer, job.window)
    train_ends, val_ends = train_blocks.ends(split.train), val_blocks.ends(split.val)
    x_train = torch.as_tensor(train_blocks.x, device=device)
    y_train = torch.as_tensor(training_labels(job, train_blocks, train_ends), device=device)
    x_val = torch.as_tensor(val_blocks.x, device=device)
    y_val_loss = training_labels(job, val_blocks, val_ends)[val_ends]  # val_loss in the loss's own units

    model_params = getattr(job.cfg.models, job.model).model_dump()
    model = build_model(job.model, len(normalizer.features), job.window, model_params)
    model = wrap_model(model) if wrap_model is not None else model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    if tc.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=tc.epochs)
    elif tc.lr_schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
    else:
        scheduler = None
    loss_fn = make_loss(tc.loss)
    autocast = lambda: autocast_context(device, tc.bf16)  # noqa: E731

    start_epoch, best, bad_epochs, history = 0, None, 0, []
    if state is not None:
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        start_epoch, best, bad_epochs = state["epoch"] + 1, state["best"], state["bad_epochs"]
        history = json.loads(state["history"])

    # DDP needs the same number of steps on every rank, whatever the size of each shard.
    by_date = DateBatches(train_ends, train_blocks.dates[train_ends], tc.batch_size) if tc.batch_sampling == "date" else None
    steps = by_date.steps if by_date is not None else max(1, len(train_ends) // tc.batch_size)
    steps = int(_all_ranks(steps, "min", device))
    workers = torch.distributed.get_world_size() if _distributed() else 1
    train_windows = int(_all_ranks(len(train_ends), "sum", device))  # each rank holds a disjoint shard
    if tc.max_steps_per_epoch:
        steps = min(steps, tc.max_steps_per_epoch)
    higher_is_better = tc.early_stop_metric != "val_loss"
    offsets = torch.arange(1 - job.window, 1, device=device)  # a window's rows relative to its last day

    for epoch in range(start_epoch, tc.epochs):
        started, start_peak_mb = time.perf_counter(), peak_memory_mb()
        model.train()
        total = torch.zeros((), device=device)  # summed on the device: a float() per step would sync the GPU
        windows = 0
        for ends, groups in _batches(by_date, train_ends, tc.batch_size, steps, rng):
            ends = torch.as_tensor(ends, device=device)
            xb = x_train[ends[:, None] + offsets]
            with autocast():
                loss = loss_fn(model(xb).float().reshape(-1), y_train[ends], torch.as_tensor(groups, device=device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            optimizer.step()
            total += loss.detach()
            windows += len(ends)

        train_seconds = time.perf_counter() - started
        train_peak_mb = peak_memory_mb()
        pred = predict_blocks(model, x_val, val_ends, job.window, predict_batch(device), autocast)
        y_val = (val_blocks.y[val_ends] - job.target_mean) / job.target_std
        ic, rank_ic = cross_sectional_ic(val_blocks.dates[val_ends], pred, y_val)
        slope, intercept = label_line(pred, y_val_loss)
        # the IC loss leaves the outputs' scale free: their loss is scored after the line that fixes it
        scored = slope * pred + intercept if tc.loss == "ic" else pred
        metrics = {
            "epoch": epoch,
            "train_loss": float(total) / steps,
            "val_loss": float(np.nanmean((scored - y_val_loss) ** 2)) if len(pred) else float("nan"),
            "val_ic": ic,
            "val_rank_ic": rank_ic,
            "val_slope": slope,  # the line from outputs to labels on the validation windows
            "val_intercept": intercept,
            "lr": optimizer.param_groups[0]["lr"],
            "train_seconds": train_seconds,
            "val_seconds": time.perf_counter() - started - train_seconds,
            "samples_per_s": windows * workers / max(train_seconds, 1e-9),
            "workers": workers,
            "train_windows": train_windows,
            "steps": steps,  # optimizer steps per epoch (the same on every rank)
            "val_windows": len(val_ends),
            "replica_spread": _replica_spread(model, device),
            # this worker's peak resident memory by the epoch's first step and by its last
            "start_peak_mb": start_peak_mb,
            "train_peak_mb": train_peak_mb,
        }
        score = metrics[tc.early_stop_metric]
        improved = best is None or (score > best if higher_is_better else score < best)
        best, bad_epochs = (score, 0) if improved else (best, bad_epochs + 1)
        metrics["best_score"], metrics["stop"] = best, bad_epochs >= tc.patience or epoch == tc.epochs - 1
        history.append({k: v for k, v in metrics.items() if k != "stop"})
        if scheduler is not None:
            scheduler.step(metrics["val_loss"]) if tc.lr_schedule == "plateau" else scheduler.step()

        checkpoint_state = None
        if rank == 0:
            checkpoint_state = {
                "improved": improved,
                "model": _unwrap(model).state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else {},
                "epoch": epoch,
                "best": best,
                "bad_epochs": bad_epochs,
                "history": json.dumps(history),
            }
        stop = metrics["stop"]  # read before yielding: the caller owns the dict from then on
        yield metrics, checkpoint_state
        if stop:
            return


def _batches(by_date, ends: np.ndarray, batch_size: int, steps: int, rng: np.random.Generator):
    """One epoch of (window ends, date group per window) batches: whole dates, or random windows."""
    if by_date is not None:
        yield from by_date.epoch(rng, steps)
        return
    order = rng.permutation(ends)
    for step in range(steps):
        chunk = order[step * batch_size : (step + 1) * batch_size]
        yield chunk, np.zeros(len(chunk), dtype=np.int64)


def train_fn_per_worker(config: dict) -> None:
    """Fit base models in turn in this worker group; report metrics and a checkpoint every epoch; resume.

    ``config`` is one :class:`TrainJob` or ``{"jobs": [...]}``, several jobs of one stage (same split, normalizer
    and window): the worker group starts and reads its shard once, then fits the models one after another. Every
    checkpoint holds the model in progress (resumed after its epoch) and, for the models already done, their best
    weights and curves; the best weights of the one in progress ride along, so retention can simply keep the
    latest checkpoints. Reports do not wait for the controller to commit their checkpoint: a restart resumes from
    the latest committed checkpoint, so a committed epoch never runs twice (only epochs reported after it may).
    """
    import ray.train
    import ray.train.torch

    from raycast.memory import release_free_memory
    from raycast.train.timeline import WorkerMarks

    jobs = [TrainJob.model_validate(j) for j in config["jobs"]] if "jobs" in config else [TrainJob.model_validate(config)]
    rank = ray.train.get_context().get_world_rank()
    marks = WorkerMarks(jobs[0].timeline_dir if rank == 0 else None)
    device = ray.train.torch.get_device()
    # DDP only with company: a lone worker runs under a plain DataParallelTrainer, with no process group
    wrap = ray.train.torch.prepare_model if ray.train.get_context().get_world_size() > 1 else None
    state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = load_state(d, device)
        marks.mark("checkpoint restore", "checkpoint")
    normalizer, window = Normalizer.from_json(jobs[0].normalizer), jobs[0].window
    split, shard = Split.from_json(jobs[0].split), ray.train.get_dataset_shard("train")
    if jobs[0].shard == "symbols":
        train_blocks = training_blocks(jobs[0].features_dir, split, shard, normalizer, window)
    else:
        train_blocks = FeatureBlocks(collect_frame(shard), normalizer, window)
    marks.mark("training blocks", "data")  # the shard's symbols, then their rows
    val_blocks = validation_blocks(jobs[0].features_dir, split, normalizer, window)  # hands freed pages back
    marks.mark("validation blocks", "data", write=True)
    finished: dict = state.get("finished", {}) if state else {}
    for job in jobs:
        if job.model in finished:
            continue
        resume = state if state is not None and state.get("name") == job.model else None
        best_model = resume.get("best_model") if resume else None
        best_epoch = resume.get("best_epoch") if resume else None
        epochs = fit_epochs(job, train_blocks, val_blocks, device, resume, rank, wrap)
        first = True
        for metrics, checkpoint_state in epochs:
            now, epoch, name = time.time(), metrics["epoch"], job.model
            if first:  # from the previous mark to this model's first epoch: blocks, tensors, model
                first = False
                marks.mark(f"{name} setup", "setup", at=now - metrics["train_seconds"] - metrics["val_seconds"],
                           peak_mb=metrics["start_peak_mb"])  # fmt: skip
            marks.mark(f"{name} epoch {epoch} train", "train", at=now - metrics["val_seconds"],
                       peak_mb=metrics["train_peak_mb"])  # fmt: skip
            marks.mark(f"{name} epoch {epoch} validation", "validation", at=now)
            with tempfile.TemporaryDirectory() as d:
                ckpt = None
                if checkpoint_state is not None:
                    if checkpoint_state["improved"]:
                        best_model = {k: v.detach().to("cpu", copy=True) for k, v in checkpoint_state["model"].items()}
                        best_epoch = epoch
                    if metrics["stop"]:
                        finished[name] = {"model": best_model, "epoch": best_epoch, "history": checkpoint_state["history"]}
                    checkpoint_state |= {"name": name, "best_model": best_model, "best_epoch": best_epoch,
                                         "finished": finished}  # fmt: skip
                    save_state(checkpoint_state, d)
                    ckpt = ray.train.Checkpoint.from_directory(d)
                # several models in one run: say whose epoch this is (the controller's callbacks read it)
                ray.train.report(metrics | ({"model": name} if len(jobs) > 1 else {}), checkpoint=ckpt)
            marks.mark(f"{name} epoch {epoch} checkpoint", "checkpoint", write=True)
        release_free_memory()  # the next model's activations start from what this worker holds, not its peak


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model
