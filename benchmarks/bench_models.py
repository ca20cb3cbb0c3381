"""Raw-PyTorch throughput of raycast's models, beside reference figures (anchors) for the same architectures.

For each model: forward (inference) and training-step (Adam + MSE) throughput in samples/s on random tensors
already on the device, at several batch sizes, plus batch-1 inference latency (p50); fp32, and bf16 autocast
on CUDA. The ensemble trains its combiner only (bases frozen), as in the anchors.

    python benchmarks/bench_models.py [--device cpu|cuda] [--quick] [--json out.jsonl]

Every measurement is bounded by a time budget, so a CPU run takes a couple of minutes and ``--quick`` well
under one.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from raycast.models import MODELS, autocast_context, build_model, create_ensemble_model

N_FEATURES, SEQ = 40, 30

# Anchor figures: the raw-PyTorch limit of the reference models, the same architectures in a plain PyTorch loop.
# Keys: (metric, batch, precision). "train"/"infer" are samples/s, "*_p50_ms" are milliseconds.
# "gpu" rows were measured on one NVIDIA H200 (torch 2.11, eager); "cpu" rows on the 2-core CI machine.
ANCHORS: dict[str, dict[str, dict[tuple[str, int, str], float]]] = {
    "gpu": {
        "lstm": {("train", 512, "fp32"): 108e3, ("train", 4096, "fp32"): 178e3, ("train", 4096, "bf16"): 512e3,
                 ("train", 16384, "bf16"): 795e3, ("infer_p50_ms", 1, "fp32"): 0.63,
                 ("infer_p50_ms", 1024, "fp32"): 3.5},
        "cnn": {("train", 512, "fp32"): 110e3, ("train", 4096, "fp32"): 910e3, ("train", 4096, "bf16"): 806e3,
                ("train", 16384, "bf16"): 1737e3, ("infer_p50_ms", 1, "fp32"): 0.60,
                ("infer_p50_ms", 1024, "fp32"): 0.62},
        "attention": {("train", 512, "fp32"): 72e3, ("train", 4096, "fp32"): 194e3,
                      ("train", 4096, "bf16"): 360e3, ("train", 16384, "bf16"): 409e3,
                      ("infer_p50_ms", 1, "fp32"): 1.08, ("infer_p50_ms", 1024, "fp32"): 1.7},
        "ensemble": {("train", 512, "fp32"): 75e3, ("train", 4096, "fp32"): 199e3,
                     ("train", 4096, "bf16"): 352e3, ("train", 16384, "bf16"): 615e3,
                     ("infer_p50_ms", 1, "fp32"): 3.0, ("infer_p50_ms", 1024, "fp32"): 5.2},
    },
    "cpu": {
        "lstm": {("train", 512, "fp32"): 1.6e3},
        "cnn": {("train", 512, "fp32"): 22.6e3},
        "attention": {("train", 512, "fp32"): 1.1e3},
        "ensemble": {("infer", 512, "fp32"): 3.7e3, ("infer_p50_ms", 1, "fp32"): 1.9},
    },
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], device: torch.device, budget_s: float, min_iters: int, warmup: int) -> list[float]:
    """Per-call seconds: ``warmup`` untimed calls, then calls until both ``min_iters`` and ``budget_s`` are met."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_iters or (time.perf_counter() - start < budget_s and len(times) < 10_000):
        t0 = time.perf_counter()
        fn()
        sync(device)  # per-call sync: also right for latency, and a no-op on CPU
        times.append(time.perf_counter() - t0)
    return times


def make_model(name: str, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "ensemble":
        return create_ensemble_model({n: build_model(n, N_FEATURES, SEQ, None) for n in MODELS}, device=device)
    return build_model(name, N_FEATURES, SEQ, None).to(device)


def bench_model(name: str, device: torch.device, precision: str, batches: list[int], args) -> list[dict]:
    model = make_model(name, device)
    bf16 = precision == "bf16"
    out: list[dict] = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        with autocast_context(device, bf16):
            pred = model(x)
        return pred[0] if isinstance(pred, tuple) else pred

    def record(metric: str, batch: int, value: float) -> None:
        out.append({"model": name, "precision": precision, "batch": batch, "metric": metric, "value": value})

    # CUDA needs a few calls for cuDNN autotuning and the allocator; CPU one (first-call allocations).
    warmup = 3 if device.type == "cuda" else 1
    for batch in batches:
        x = torch.randn(batch, SEQ, N_FEATURES, device=device)
        y = torch.randn(batch, 1, device=device)
        model.eval()
        with torch.inference_mode():
            t = timed(lambda x=x: forward(x), device, args.budget, args.min_iters, warmup)
        record("infer", batch, batch / statistics.median(t))
        record("infer_p50_ms", batch, 1e3 * statistics.median(t))

        model.train()
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

        def step(x=x, y=y, opt=opt) -> None:
            loss = F.mse_loss(forward(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        t = timed(step, device, args.budget, args.min_iters, warmup)
        record("train", batch, batch / statistics.median(t))

    # Batch-1 latency: what a single-request server sees.
    model.eval()
    x1 = torch.randn(1, SEQ, N_FEATURES, device=device)
    with torch.inference_mode():
        t = timed(lambda: forward(x1), device, args.budget, max(args.min_iters, 20), warmup)
    record("infer_p50_ms", 1, 1e3 * statistics.median(t))
    return out


def fmt(v: float | None, ms: bool = False) -> str:
    if v is None:
        return "-"
    if ms:
        return f"{v:.2f} ms"
    return f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"


def print_table(rows: list[dict], anchors: dict, where: str) -> None:
    def get(model, prec, batch, metric):
        return next((r["value"] for r in rows if (r["model"], r["precision"], r["batch"], r["metric"])
                     == (model, prec, batch, metric)), None)

    keys = sorted({(r["model"], r["precision"], r["batch"]) for r in rows if r["batch"] > 1},
                  key=lambda k: (list(ANCHORS["gpu"]).index(k[0]), k[1] != "fp32", k[2]))
    print(f"\nthroughput, samples/s (anchor: {where})")
    cols = ("model", "prec", "batch", "infer", "anchor", "train", "anchor", "ratio")
    header = " ".join(f"{c:<10}" if c == "model" else f"{c:<5}" if c == "prec" else f"{c:>{w}}"
                      for c, w in zip(cols, (10, 5, 6, 9, 8, 9, 8, 6)))
    print(header + "\n" + "-" * len(header))
    for model, prec, batch in keys:
        a = anchors.get(model, {})
        tr, ta = get(model, prec, batch, "train"), a.get(("train", batch, prec))
        inf, ia = get(model, prec, batch, "infer"), a.get(("infer", batch, prec))
        ratio = f"{tr / ta:.2f}" if tr and ta else "-"
        print(f"{model:<10} {prec:<5} {batch:>6} {fmt(inf):>9} {fmt(ia):>8} {fmt(tr):>9} {fmt(ta):>8} {ratio:>6}")
    print("\nbatch-1 inference latency p50")
    print(f"{'model':<10} {'prec':<5} {'p50':>10} {'anchor':>10}")
    for model, prec in sorted({k[:2] for k in keys}, key=lambda k: (list(ANCHORS["gpu"]).index(k[0]), k[1])):
        a = anchors.get(model, {}).get(("infer_p50_ms", 1, prec))
        print(f"{model:<10} {prec:<5} {fmt(get(model, prec, 1, 'infer_p50_ms'), ms=True):>10} {fmt(a, ms=True):>10}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="short run: smaller time budget per measurement")
    p.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=[32, 512, 4096])
    p.add_argument("--models", type=lambda s: s.split(","), default=[*MODELS, "ensemble"])
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's own; use 1 on a shared, busy machine)")
    p.add_argument("--json", default=None, help="append one JSON line per measurement to this path")
    p.add_argument("--budget", type=float, default=None, help="seconds of timed calls per measurement")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    # Seconds of timed calls per measurement; a slow call still runs min_iters times.
    budget, args.min_iters = (0.3, 1) if args.quick else (1.5, 3)
    args.budget = args.budget or budget
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
        where = f"{torch.cuda.get_device_name(device)}; anchors from an H200"
    else:
        cpu = platform.processor() or platform.machine()
        where = f"CPU {cpu}, {torch.get_num_threads()} threads; anchors from the 2-core CI machine"
    precisions = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]

    rows: list[dict] = []
    start = time.perf_counter()
    for name in args.models:
        for prec in precisions:
            t0 = time.perf_counter()
            rows += bench_model(name, device, prec, args.batches, args)
            print(f"  {name} {prec}: {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    anchors = ANCHORS["gpu" if device.type == "cuda" else "cpu"]
    print_table(rows, anchors, where)
    print(f"\n(torch {torch.__version__}, {time.perf_counter() - start:.0f}s)")

    if args.json:
        meta = {"device": where, "torch": torch.__version__, "quick": args.quick}
        with open(args.json, "a") as f:
            for r in rows:
                a = anchors.get(r["model"], {}).get((r["metric"], r["batch"], r["precision"]))
                f.write(json.dumps({**r, "anchor": a, **meta}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
