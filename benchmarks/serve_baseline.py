"""The bare peer for ``bench_serve.py``: one uvicorn + FastAPI process with the three models and the ensemble.

Same API code as the Serve ingress (``raycast.serve.http_api.create_api`` around a ``PredictionService``), but the
score function runs the whole ensemble in this process: no Ray, no handles. By default it has one torch thread
(a process per core is how such a server scales; torch's default of a thread per core makes a single busy process
fight its own threads and the client for the cores) and scores each request on its own, in the event loop, as a
plain FastAPI server does. ``--batch`` adds what Serve's ingress does: concurrent requests share one forward pass
(:class:`raycast.serve.coalescer.Coalescer`), run off the event loop so requests keep being parsed meanwhile.
``--noop`` serves ``POST /noop`` only: the HTTP server alone, the floor of any endpoint.

    python benchmarks/serve_baseline.py --storage .raycast [--version V] [--port 8001] [--threads 1] [--batch]
"""

from __future__ import annotations

import argparse
import asyncio

import numpy as np


def build_baseline_app(storage: str, version: str | None = None, threads: int = 1, batch: bool = False):
    import torch

    from raycast.registry import load_predictor
    from raycast.serve.coalescer import Coalescer
    from raycast.serve.deployments import PASSES_PER_CALL, split_scores
    from raycast.serve.feature_rows import StoredFeatures
    from raycast.serve.http_api import PredictionService, create_api

    torch.set_num_threads(threads)
    predictor = load_predictor(storage, version)

    def predict(windows: np.ndarray) -> dict:
        return predictor.predict_windows(windows) | {"model_version": predictor.version}

    async def score(windows: np.ndarray) -> dict:
        return predict(windows)  # in the event loop: one request at a time, as a plain FastAPI server does it

    async def score_many(items: list[np.ndarray]) -> list[dict]:
        x = items[0] if len(items) == 1 else np.concatenate(items)
        return split_scores(await asyncio.to_thread(predict, x), [len(w) for w in items])

    batcher = Coalescer(score_many, 64 * PASSES_PER_CALL, slots=1, size=len)
    service = PredictionService(predictor.spec, StoredFeatures.load(storage, predictor.spec),
                                batcher.submit if batch else score)  # fmt: skip
    service.candles.warm_up()
    predict(np.zeros((1, predictor.window, len(predictor.spec["features"]["features"])), np.float32))
    return create_api(service)


def build_noop_app():
    import fastapi

    app = fastapi.FastAPI()

    @app.post("/noop")
    async def noop() -> dict:
        return {"y": 0.0}

    return app


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage")
    p.add_argument("--version")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--batch", action="store_true", help="concurrent requests share a forward pass, off the loop")
    p.add_argument("--noop", action="store_true", help="serve POST /noop only (no models)")
    a = p.parse_args()
    if not a.noop and not a.storage:
        p.error("--storage is required (or --noop)")
    app = build_noop_app() if a.noop else build_baseline_app(a.storage, a.version, a.threads, a.batch)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
