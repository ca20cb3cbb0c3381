"""The bare baseline for ``bench_serve.py``: one uvicorn + FastAPI process with the three models and the ensemble.

Same API code as the Serve ingress (``raycast.serve.api.create_api`` around a ``PredictionService``), but the
score function runs the whole ensemble in this process: no Ray, no handles, no batching. What the benchmark
measures between the two is therefore the cost (or gain) of the Serve composition alone.

    python benchmarks/serve_baseline.py --storage .raycast [--version V] [--port 8001]
"""

from __future__ import annotations

import argparse

import numpy as np


def build_baseline_app(storage: str, version: str | None = None, threads: int | None = None):
    import torch

    from raycast.registry import load_predictor
    from raycast.serve.api import create_api
    from raycast.serve.features import StoredFeatures
    from raycast.serve.service import PredictionService

    if threads:
        torch.set_num_threads(threads)
    predictor = load_predictor(storage, version)

    async def score(windows: np.ndarray) -> dict:
        # In the event loop on purpose: one process, one model at a time, as a plain FastAPI server would do it.
        return predictor.predict_windows(windows) | {"model_version": predictor.version}

    service = PredictionService(predictor.spec, StoredFeatures.load(storage, predictor.spec), score)
    service.candles.warm_up()
    predictor.predict_windows(np.zeros((1, predictor.window, len(predictor.spec["features"]["features"])), np.float32))
    return create_api(service)


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", required=True)
    p.add_argument("--version")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own)")
    a = p.parse_args()
    app = build_baseline_app(a.storage, a.version, a.threads)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
