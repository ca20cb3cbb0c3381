"""What the serving composition costs with no work in it: the floor under /v1/predict's sequential latency.

Deployments of raycast's shape that do nothing (HTTP -> FastAPI ingress -> ensemble -> three base deployments
called concurrently, a (1, 30, 40) float32 window crossing each handle, zeros coming back), with raycast's
Serve settings (``raycast.serve.app.SERVE_ENV``) and fractional CPUs as ``serve_config.yaml`` has them; and, in
the same run, the ingress alone (``/noop``) and the anchors' naive shape (ingress fanning out to the three bases
itself, no ensemble deployment). Sequential requests from one client over keep-alive, 127.0.0.1 only.

    python benchmarks/bench_serve_hops.py [--requests 300] [--direct-ingress]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time


def build(serve, fastapi, np):
    app = fastapi.FastAPI()

    @serve.deployment(ray_actor_options={"num_cpus": 0.25})
    class Base:
        async def predict(self, x):
            return np.zeros(len(x), np.float32)

    @serve.deployment(ray_actor_options={"num_cpus": 0.25})
    class Ensemble:
        def __init__(self, *bases):
            self.bases = bases

        async def predict(self, x):
            return np.stack(await asyncio.gather(*[b.predict.remote(x) for b in self.bases])).mean(axis=0)

    @serve.deployment(ray_actor_options={"num_cpus": 0.25})
    @serve.ingress(app)
    class Ingress:
        def __init__(self, ensemble, *bases):
            self.ensemble, self.bases = ensemble, bases

        @app.post("/composed")
        async def composed(self):  # raycast's shape: ingress -> ensemble -> 3 bases
            return {"y": float((await self.ensemble.predict.remote(np.zeros((1, 30, 40), np.float32)))[0])}

        @app.post("/naive")
        async def naive(self):  # the anchors' shape: ingress -> 3 bases
            outs = await asyncio.gather(*[b.predict.remote(np.zeros((1, 30, 40), np.float32)) for b in self.bases])
            return {"y": float(np.mean(outs))}

        @app.post("/noop")
        async def noop(self):  # the proxy and the ingress alone
            return {"y": 0.0}

    bases = [Base.options(name=f"base{i}").bind() for i in range(3)]
    return Ingress.bind(Ensemble.bind(*bases), *bases)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--port", type=int, default=8777)
    ap.add_argument("--direct-ingress", action="store_true", help="also set RAY_SERVE_THROUGHPUT_OPTIMIZED=1")
    args = ap.parse_args()

    from raycast.serve.app import SERVE_ENV

    env = dict(SERVE_ENV) | ({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"} if args.direct_ingress else {})
    os.environ.update(env)  # the controller and proxy are started from this process's Ray
    import fastapi
    import httpx
    import numpy as np
    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", runtime_env={"env_vars": env})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        serve.run(build(serve, fastapi, np), blocking=False)
        rows = []
        with httpx.Client() as client:
            for path in ("noop", "naive", "composed"):
                lat = []
                for _ in range(args.requests + 50):
                    t0 = time.perf_counter()
                    client.post(f"http://127.0.0.1:{args.port}/{path}").raise_for_status()
                    lat.append(1e3 * (time.perf_counter() - t0))
                lat = sorted(lat[50:])  # the first 50 warm connections and replicas
                rows.append((path, statistics.median(lat), lat[int(0.99 * (len(lat) - 1))]))
    finally:
        serve.shutdown()
        ray.shutdown()
    print(f"\nno-op Serve compositions, {os.cpu_count()} CPUs, {args.requests} sequential requests each"
          f"{', direct ingress' if args.direct_ingress else ''}")  # fmt: skip
    print("| path | shape | p50 ms | p99 ms |\n|---|---|---|---|")
    shapes = {"noop": "proxy -> ingress", "naive": "ingress -> 3 bases", "composed": "ingress -> ensemble -> 3 bases"}
    for path, p50, p99 in rows:
        print(f"| /{path} | {shapes[path]} | {p50:.1f} | {p99:.1f} |")


if __name__ == "__main__":
    main()
