"""What the serving composition costs with no work in it: the floor under /v1/predict's sequential latency.

Deployments of raycast's shape that do nothing (HTTP -> FastAPI ingress -> ensemble -> three base deployments
called concurrently, a (1, 30, 40) float32 window crossing each handle, zeros coming back), deployed with the
application's own settings: ``raycast.serve.app.serve_env`` for the replicas and the controller, the same CPU
shares, and handles on the transport the replicas declare (``on_declared_transport``). In the same run: the
ingress alone (``/noop``), the reference design's naive shape (the ingress fanning out to the three bases
itself), the composed shape with one setting undone (replicas at Ray's nice 15; Ray actor calls instead of gRPC)
and a bare uvicorn no-op, each through Serve's proxy and, with ``--direct-ingress``, from the ingress replicas'
own ports.
Sequential requests from one client over keep-alive, interleaved, 127.0.0.1 only.

    python benchmarks/bench_serve_hops.py [--requests 300] [--direct-ingress]

``bench_serve.py`` deploys the same composition beside the real application and reports it with its targets.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import encode_request, sequential, wait_ready  # noqa: E402

HOST = "127.0.0.1"
PATHS = {"noop": "the ingress alone", "naive": "ingress -> 3 bases", "composed": "ingress -> ensemble -> 3 bases"}
# The composition again with one setting undone, to show what each is worth.
VARIANTS = {
    "": {},
    "nice 15 (Ray's default)": {"RAY_worker_niceness": "15"},
    "Ray actor calls between deployments": {"RAY_SERVE_USE_GRPC_BY_DEFAULT": "0"},
}


def build_noop_composition(args, env: dict[str, str] | None = None):
    """The no-op application of raycast's shape, with ``args``' (a ``ServeArgs``) replica settings (``env`` over
    its environment)."""
    import fastapi
    import numpy as np
    from ray import serve

    from raycast.serve.app import serve_env
    from raycast.serve.deployments import on_declared_transport

    app = fastapi.FastAPI()
    options = {
        "ray_actor_options": {"num_cpus": args.num_cpus, "runtime_env": {"env_vars": serve_env(args) | (env or {})}},
        "max_ongoing_requests": args.max_ongoing_requests,
        "logging_config": {"enable_access_log": args.access_log},
    }

    @serve.deployment(**options)
    class Base:
        async def predict(self, x):
            return np.zeros(len(x), np.float32)

    @serve.deployment(**options)
    class Ensemble:
        def __init__(self, *bases):
            self.bases = [on_declared_transport(b) for b in bases]

        async def predict(self, x):
            return np.stack(await asyncio.gather(*[b.predict.remote(x) for b in self.bases])).mean(axis=0)

    @serve.deployment(**options)
    @serve.ingress(app)
    class Ingress:
        def __init__(self, ensemble, *bases):
            self.ensemble = on_declared_transport(ensemble)
            self.bases = [on_declared_transport(b) for b in bases]

        @app.post("/composed")
        async def composed(self):  # raycast's shape: ingress -> ensemble -> 3 bases
            return {"y": float((await self.ensemble.predict.remote(np.zeros((1, 30, 40), np.float32)))[0])}

        @app.post("/naive")
        async def naive(self):  # the reference design's shape: ingress -> 3 bases
            outs = await asyncio.gather(*[b.predict.remote(np.zeros((1, 30, 40), np.float32)) for b in self.bases])
            return {"y": float(np.mean(outs))}

        @app.post("/noop")
        async def noop(self):  # the ingress alone
            return {"y": 0.0}

    bases = [Base.options(name=f"noop-base{i}").bind() for i in range(3)]
    return Ingress.options(name="noop-ingress").bind(Ensemble.options(name="noop-ensemble").bind(*bases), *bases)


def start_bare_noop(port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(Path(__file__).with_name("serve_baseline.py")), "--noop",
                             "--host", HOST, "--port", str(port)])  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--port", type=int, default=8777)
    ap.add_argument("--bare-port", type=int, default=8778)
    ap.add_argument("--direct-ingress", action="store_true", help="Serve's direct ingress, as serve.direct_ingress")
    a = ap.parse_args()

    import ray
    from ray import serve

    from raycast.serve.app import ServeArgs, serve_env
    from raycast.serve.run import direct_ingress_urls

    args = ServeArgs(storage=".", direct_ingress=a.direct_ingress)  # the defaults serve_config.yaml ships
    bare = start_bare_noop(a.bare_port)
    ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR")
    try:
        serve.start(http_options={"host": HOST, "port": a.port},
                    controller_options={"runtime_env": {"env_vars": serve_env(args)}})  # fmt: skip
        wait_ready(HOST, a.bare_port, "/noop", method="POST")
        targets = {"bare uvicorn /noop": (HOST, a.bare_port, [encode_request("POST", "/noop")])}
        for k, (variant, env) in enumerate(VARIANTS.items()):
            name = f"hops{k}"
            serve.run(build_noop_composition(args, env), name=name, route_prefix=f"/{name}")
            suffix = f", {variant}" if variant else ""
            for path in PATHS if not variant else ["composed"]:
                targets[f"proxy /{path}{suffix}"] = (HOST, a.port, [encode_request("POST", f"/{name}/{path}")])
            if a.direct_ingress:
                port = int(direct_ingress_urls(HOST, a.port, name)[0].rsplit(":", 1)[1])
                for path in PATHS if not variant else ["composed"]:
                    targets[f"direct /{path}{suffix}"] = (HOST, port, [encode_request("POST", f"/{name}/{path}")])
        rows = sequential(targets, a.requests, warmup=50)
    finally:
        bare.terminate()
        serve.shutdown()
        ray.shutdown()
    print(f"\nno-op compositions with raycast's Serve settings, {os.cpu_count()} CPUs, {a.requests} sequential "
          f"requests each, interleaved")  # fmt: skip
    print("| entry /path | shape | p50 ms | p99 ms |\n|---|---|---|---|")
    for name, r in rows.items():
        shape = "uvicorn alone" if name.startswith("bare") else PATHS[name.split("/", 1)[1].split(",")[0]]
        print(f"| {name} | {shape} | {r.pct(50):.1f} | {r.pct(99):.1f} |")


if __name__ == "__main__":
    main()
