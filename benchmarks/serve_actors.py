"""The Serve-less peer for ``bench_serve.py``: raycast's composition as plain Ray actors, to show what Serve costs.

The same classes the Serve deployments wrap (``raycast.serve.deployments.IngressServer``, ``EnsembleServer``,
``BaseModelServer``), each in a Ray actor with the same CPU share, torch threads, niceness and batching; the ingress
actor runs the same FastAPI app under uvicorn on its own port (what Serve's direct ingress does), and the stages
call each other with Ray actor calls. Missing, next to Serve: replica management, health checks, rollouts,
autoscaling, routing across replicas, retries on a dead replica.
"""

from __future__ import annotations


def start_actor_peer(storage: str, version: str, host: str, port: int, num_cpus: float = 0.25,
                     torch_threads: int = 1, max_batch_size: int = 64, max_concurrent_batches: int = 2,
                     niceness: int = 0) -> list:  # fmt: skip
    """Start the actors and the HTTP server on ``host:port``; returns the actors (kill them to stop)."""
    import ray

    from raycast.registry import load_spec
    from raycast.serve.deployments import BaseModelServer, EnsembleServer, IngressServer

    @ray.remote
    class HttpIngress(IngressServer):
        async def serve_http(self, host: str, port: int) -> None:
            import uvicorn

            config = uvicorn.Config(self.__serve_build_asgi_app__(), host=host, port=port, log_level="warning",
                                    access_log=False)  # fmt: skip
            await uvicorn.Server(config).serve()

    options = {
        "num_cpus": num_cpus,
        "max_concurrency": 1000,  # async actors; Serve's max_ongoing_requests is 256 per replica
        "runtime_env": {"env_vars": {"RAY_worker_niceness": str(niceness)}},
    }
    members = load_spec(storage, version)["members"]
    bases = {
        name: ray.remote(BaseModelServer).options(**options).remote(
            storage, name, version, 0.0, max_batch_size, 0.0, torch_threads
        )
        for name in members
    }
    ensemble = ray.remote(EnsembleServer).options(**options).remote(
        storage, version, bases, max_batch_size, max_concurrent_batches, torch_threads
    )
    ingress = HttpIngress.options(**options).remote(
        storage, version, ensemble, None, 4_000_000, max_batch_size, max_concurrent_batches
    )
    ray.get([ingress.__ray_ready__.remote(), ensemble.__ray_ready__.remote()])
    ingress.serve_http.remote(host, port)  # runs until the actor is killed
    return [ingress, ensemble, *bases.values()]
