"""Ray Train vs bare PyTorch on the same loop, the data path's windows/s, and a trainer's fixed start-up cost.

    python benchmarks/bench_train.py [--device cpu|cuda] [--model lstm] [--batch 512] [--steps 100] [--bf16]

One synthetic universe is featurized; then
  * bare: the training loop in this process (windows cut by index from a feature block on the device);
  * ray: the same loop function inside a Ray Train worker (one worker: the trainer ``raycast train`` builds for
    it), fed by ``get_dataset_shard``;
  * data path: windows/s that cutting by index delivers (numpy on CPU, torch gather on the device) next to the
    samples/s the model consumes.
Targets: in-loop samples/s ratio ray/bare >= 0.9; the data path >= 50% of the raw training rate.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def timed_loop(x: torch.Tensor, y: torch.Tensor, ends: np.ndarray, model_name: str, window: int, batch: int,
               steps: int, bf16: bool) -> dict:  # fmt: skip
    """The training loop of ``raycast.train.loop`` reduced to its hot path; returns in-loop samples/s."""
    from raycast.models import autocast_context, build_model

    device = x.device
    model = build_model(model_name, x.shape[1], window).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.MSELoss()
    offsets = torch.arange(1 - window, 1, device=device)
    rng = np.random.default_rng(0)
    ends_t = torch.as_tensor(ends, device=device)

    def step():
        idx = ends_t[torch.as_tensor(rng.integers(0, len(ends), batch), device=device)]
        with autocast_context(device, bf16):
            loss = loss_fn(model(x[idx[:, None] + offsets]).float().reshape(-1), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(5):  # warm-up: allocator, kernels, autotuning
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"samples_per_s": steps * batch / seconds, "loop_s": seconds}


def blocks_to_tensors(frame, normalizer, window, device):
    from raycast.features.store import FeatureBlocks

    blocks = FeatureBlocks(frame, normalizer, window)
    ends = blocks.ends()
    return torch.as_tensor(blocks.x, device=device), torch.as_tensor(np.nan_to_num(blocks.y), device=device), ends


def ray_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    from raycast.features.normalize import Normalizer
    from raycast.train.loop import collect_frame

    device = ray.train.torch.get_device()
    frame = collect_frame(ray.train.get_dataset_shard("train"))
    x, y, ends = blocks_to_tensors(frame, Normalizer.from_json(config["normalizer"]), config["window"], device)
    out = timed_loop(x, y, ends, config["model"], config["window"], config["batch"], config["steps"], config["bf16"])
    # Train V2 keeps in Result.metrics only what is reported together with a checkpoint
    with tempfile.TemporaryDirectory() as d:
        Path(d, "metrics.json").write_text(json.dumps(out))
        ray.train.report(out, checkpoint=ray.train.Checkpoint.from_directory(d))


def data_path_rate(x, ends, window: int, batch: int, repeats: int = 50) -> dict:
    from raycast.features.windows import cut_windows

    rng = np.random.default_rng(0)
    picks = [rng.choice(ends, batch) for _ in range(repeats)]
    x_np = x.cpu().numpy()
    t0 = time.perf_counter()
    for p in picks:
        cut_windows(x_np, p, window)
    numpy_rate = repeats * batch / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for p in picks:
        cut_windows(x, p, window)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    device_rate = repeats * batch / (time.perf_counter() - t0)
    return {"numpy_windows_per_s": numpy_rate, "device_windows_per_s": device_rate}


def main(argv: list[str] | None = None) -> None:
    import ray
    from ray.train import RunConfig, ScalingConfig

    from raycast.config import parse_config
    from raycast.data.ingest import ingest
    from raycast.features.pipeline import build_features
    from raycast.features.store import current_features_dir, load_meta, read_feature_dataset, read_feature_frame

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="lstm", choices=["lstm", "cnn", "attention"])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--days", type=int, default=1260)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--storage", default=None, help="an existing raycast store with features: skip ingest")
    parser.add_argument("--cpus", type=int, default=2, help="Ray CPUs (featurizing)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the Ray worker gets 1 CPU: compare like with like

    with tempfile.TemporaryDirectory() as tmp:
        storage = args.storage or tmp
        ray.init(num_cpus=args.cpus, num_gpus=1 if args.device == "cuda" else 0, include_dashboard=False,
                 logging_level="ERROR")  # fmt: skip
        if not args.storage:
            cfg = parse_config({"storage": tmp, "ray": {"num_cpus": args.cpus},
                                "ingest": {"source": "synthetic", "synthetic": {"n_symbols": args.symbols, "n_days": args.days}},
                                "features": {"symbols_per_task": 10, "num_cpus_per_task": 1}})  # fmt: skip
            ingest(cfg)
            build_features(cfg)
        fdir = current_features_dir(storage)
        meta = load_meta(fdir)
        device = torch.device(args.device)
        x, y, ends = blocks_to_tensors(read_feature_frame(fdir), meta.normalizer, meta.window, device)
        bare = timed_loop(x, y, ends, args.model, meta.window, args.batch, args.steps, args.bf16)
        data = data_path_rate(x, ends, meta.window, max(args.batch, 4096))

        use_gpu = args.device == "cuda"
        from raycast.train.trainer import data_parallel_trainer  # the trainer raycast train builds

        trainer = data_parallel_trainer(
            ray_worker,
            train_loop_config={"normalizer": meta.normalizer.to_json(), "window": meta.window, "model": args.model,
                               "batch": args.batch, "steps": args.steps, "bf16": args.bf16},  # fmt: skip
            scaling_config=ScalingConfig(num_workers=1, use_gpu=use_gpu, resources_per_worker={"CPU": 1}),
            run_config=RunConfig(storage_path=str(Path(tmp) / "ray")),
            datasets={"train": read_feature_dataset(fdir)},
        )
        t0 = time.perf_counter()
        result = trainer.fit()
        fit_wall = time.perf_counter() - t0
        in_ray = result.metrics or {}
        ray.shutdown()

    ratio = in_ray.get("samples_per_s", float("nan")) / bare["samples_per_s"]
    rows = [
        ("bare PyTorch loop", f"{bare['samples_per_s']:,.0f} samples/s"),
        ("Ray Train loop (same function)", f"{in_ray.get('samples_per_s', float('nan')):,.0f} samples/s"),
        ("ratio ray / bare (target >= 0.9)", f"{ratio:.2f}"),
        ("Ray Train fit() fixed cost beyond the loop", f"{fit_wall - in_ray.get('loop_s', 0):.1f} s"),
        ("data path, numpy index gather", f"{data['numpy_windows_per_s']:,.0f} windows/s"),
        (f"data path, torch gather on {args.device}", f"{data['device_windows_per_s']:,.0f} windows/s"),
        ("data path / model consumption (target >= 0.5)", f"{data['device_windows_per_s'] / bare['samples_per_s']:.1f}x"),
    ]
    print(f"\n{args.model}, batch {args.batch}, {args.steps} steps, device {args.device}, bf16={args.bf16}")
    for name, value in rows:
        print(f"  {name:<48} {value}")
    if args.json:
        with args.json.open("a") as f:
            f.write(json.dumps({"model": args.model, "device": args.device, "batch": args.batch, "bf16": args.bf16,
                                "bare": bare, "ray": in_ray, "fit_wall_s": fit_wall, "data": data}) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
