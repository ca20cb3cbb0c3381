"""``raycast serve``: run the application on a local (or joined) Ray until Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import threading

from raycast.config import RaycastConfig

APP_NAME = "raycast"


def start_app(cfg: RaycastConfig, name: str = APP_NAME):
    """Start Serve's HTTP proxy on ``cfg.serve.host:port`` and deploy the app; returns the ingress handle."""
    from ray import serve

    from raycast.runtime import init_ray
    from raycast.serve.app import SERVE_ENV, ServeArgs, build_app

    init_ray(cfg.ray)
    serve.start(
        http_options={"host": cfg.serve.host, "port": cfg.serve.port},
        controller_options={"runtime_env": {"env_vars": SERVE_ENV}},  # reaches the controller's proxies too
    )
    return serve.run(build_app(ServeArgs.from_config(cfg)), name=name, route_prefix="/")


def serve_forever(cfg: RaycastConfig) -> None:
    """Serve until interrupted, then delete the application (replicas drain in-flight requests).

    When this call started Ray, Serve and Ray are stopped too; on a joined or already running Ray only this
    application goes.
    """
    import ray
    from ray import serve

    from raycast.registry import resolve_version

    version = resolve_version(cfg.storage, cfg.serve.version)  # fail fast, before Ray starts, on an empty registry
    # A Ray this call starts is stopped with it; a joined cluster or a Ray already running here keeps running.
    owns_ray = not ray.is_initialized() and not (cfg.ray.address or os.environ.get("RAY_ADDRESS"))
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        start_app(cfg)
        url = f"http://{cfg.serve.host}:{cfg.serve.port}"
        print(f"[raycast] serving model {version} at {url}/v1 (API docs: {url}/docs); Ctrl-C to stop", flush=True)
        while not stop.wait(1.0):
            pass
        print("[raycast] shutting down", flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if ray.is_initialized():
            serve.delete(APP_NAME)
            if owns_ray:
                serve.shutdown()
                ray.shutdown()
