"""``raycast serve``: run the application on a local (or joined) Ray until Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import threading
import time

from raycast.config import RaycastConfig

APP_NAME = "raycast"


def start_app(cfg: RaycastConfig, name: str = APP_NAME):
    """Start Serve's HTTP proxy on ``cfg.serve.host:port`` and deploy the app; returns the ingress handle.

    With ``serve.direct_ingress`` the ingress replicas also answer HTTP on ports of their own
    (:func:`ingress_urls`); the proxy keeps answering on ``cfg.serve.port``, one hop longer.
    """
    from ray import serve

    from raycast.runtime import init_ray
    from raycast.serve.app import ServeArgs, build_app, serve_env

    init_ray(cfg.ray)
    args = ServeArgs.from_config(cfg)
    serve.start(
        http_options={"host": cfg.serve.host, "port": cfg.serve.port},
        controller_options={"runtime_env": {"env_vars": serve_env(args)}},  # reaches the controller's proxies too
    )
    return serve.run(build_app(args), name=name, route_prefix="/")


def ingress_urls(host: str, name: str = APP_NAME) -> list[str]:
    """Where to send HTTP for application ``name`` now: Serve's published targets for it, as URLs.

    Under direct ingress: one per running ingress replica; otherwise (or while an application has no running
    ingress replica, as during part of a rollout) the proxies. These are the target groups that Serve's REST API
    (``GET /api/serve/applications/`` on the dashboard) publishes for a load balancer. Serve reports node IPs;
    servers bound to a loopback ``host`` are reached on it instead.
    """
    from ray.serve.context import _get_global_client

    groups = _get_global_client().get_serve_details().get("target_groups", [])
    loopback = host in ("127.0.0.1", "localhost", "::1")
    return [
        f"http://{host if loopback else target['ip']}:{target['port']}"
        for group in groups
        if group["protocol"] == "HTTP" and group.get("app_name") == name
        for target in group["targets"]
    ]


def direct_ingress_urls(host: str, proxy_port: int, name: str = APP_NAME, wait_s: float = 30.0) -> list[str]:
    """The ingress replicas' own addresses, once Serve publishes them (until their ports open it lists the
    proxy); the proxy's if none is published within ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while (not (urls := ingress_urls(host, name)) or all(u.endswith(f":{proxy_port}") for u in urls)) \
            and time.monotonic() < deadline:  # fmt: skip
        time.sleep(0.2)
    return urls


def where_served(cfg: RaycastConfig, version: str) -> str:
    """One line saying where the running application answers."""
    proxy = f"http://{cfg.serve.host}:{cfg.serve.port}"
    if not cfg.serve.direct_ingress:
        return f"serving model {version} at {proxy}/v1 (API docs: {proxy}/docs)"
    urls = direct_ingress_urls(cfg.serve.host, cfg.serve.port)
    return (f"serving model {version} at {', '.join(f'{u}/v1' for u in urls)} (direct ingress: one address per "
            f"ingress replica, new ones after a rollout; the proxy answers too, one hop longer: {proxy}/v1)")  # fmt: skip


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
        print(f"[raycast] {where_served(cfg, version)}; Ctrl-C to stop", flush=True)
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
