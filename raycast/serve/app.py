"""The Serve application builder: ``import_path: raycast.serve.app:build_app`` in ``serve_config.yaml``.

Serve validates the config's ``args:`` into :class:`ServeArgs` before calling :func:`build_app`, so a typo in the
config is an error naming the key. The model version is resolved here, once, so every deployment of one
application serves the same version even if a newer one is registered while replicas start.
"""

# No ``from __future__ import annotations`` here: Serve reads build_app's annotation at run time to validate
# the config's args into ServeArgs, and a string annotation would silently skip that.
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from raycast.config import MODEL_NAMES, RaycastConfig

# Serve's latency-lean settings (the ones RAY_SERVE_THROUGHPUT_OPTIMIZED turns on, minus direct ingress), as
# environment variables of every Serve process: replicas get them through their runtime_env, the controller
# and its proxies through ``controller_options``. On 2 busy cores they cut a handle call from ~5 ms to ~2 ms:
# user code and the router run on the replica's own event loop instead of hopping between threads, handles
# talk to replicas over gRPC directly, and the start-up heap is frozen out of the garbage collector's way.
SERVE_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_FREEZE_GC_ON_STARTUP": "1",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    "RAY_SERVE_LOG_TO_STDERR": "0",
}


def serve_env(args: "ServeArgs") -> dict[str, str]:
    """The environment of every Serve process of the app: the replicas (their runtime_env, set by
    :func:`build_app`) and the controller with its proxies (``controller_options``, set by whoever starts Serve).

    Both must agree: the controller decides whether ingress replicas are published as direct-ingress targets and
    how long a stopping one may drain, the replica whether it opens its own HTTP port.
    """
    env = dict(SERVE_ENV) if args.lean else {}
    # Ray starts workers at nice 15 (behind everything else on the node); a serving process waits less at 0.
    env["RAY_worker_niceness"] = str(args.worker_niceness)
    env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = f"{args.draining_period_s:g}"
    if args.direct_ingress:
        env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"
    return env


class ServeArgs(BaseModel):
    """Everything the application needs: where the registry is, which version, and how to size the replicas."""

    model_config = ConfigDict(extra="forbid")

    storage: str = Field(description="raycast storage (registry and feature data); local paths are made absolute")
    version: str | None = Field(None, description="registry version; None = the newest")
    replicas: int = Field(1, ge=1, description="replicas of each deployment")
    num_cpus: float = Field(0.25, gt=0, description="CPUs per replica: fractional, so all five fit on 2 cores")
    num_gpus: float = Field(0.0, ge=0, description="GPU share per base-model replica (e.g. 0.25)")
    max_batch_size: int = Field(64, ge=1, description="windows per base-model forward pass")
    batch_wait_timeout_s: float = Field(
        0.0, ge=0, description="base models: wait this long to fill a batch (@serve.batch); 0: batch what queued meanwhile"
    )
    max_concurrent_batches: int = Field(2, ge=1, description="ingress and ensemble batches in flight per replica")
    max_ongoing_requests: int = Field(256, ge=1, description="per replica; Serve's default of 5 caps batching")
    torch_threads: int = Field(1, ge=1, description="intra-op threads per replica")
    api_key: str | None = Field(None, description="when set, /v1 endpoints except health need X-API-Key")
    max_body_bytes: int = Field(4_000_000, ge=1024)
    access_log: bool = Field(False, description="Serve's per-request log lines (a measurable cost at high rates)")
    lean: bool = Field(True, description="run replicas with SERVE_ENV (see above)")
    direct_ingress: bool = Field(False, description="ingress replicas serve HTTP on their own ports, not via the proxy")
    draining_period_s: float = Field(2.0, ge=0, description="direct ingress: a stopping ingress replica answers this long")
    worker_niceness: int = Field(0, ge=0, le=19, description="nice value of the serving processes (Ray's default: 15)")
    reload_interval_s: float = Field(
        30.0, ge=0, description="check for a newer feature dataset this often (0: serve the model's own dataset)"
    )
    prediction_log: bool = Field(True, description="log every answer under <storage>/predictions/<version>/")
    log_flush_rows: int = Field(1000, ge=1, description="prediction log: write once this many rows wait")
    log_flush_s: float = Field(5.0, gt=0, description="prediction log: write what waits at least this often")

    @classmethod
    def from_config(cls, cfg: RaycastConfig) -> "ServeArgs":
        s = cfg.serve
        return cls(
            storage=cfg.storage, version=s.version, replicas=s.replicas, num_cpus=s.num_cpus, num_gpus=s.num_gpus,
            max_batch_size=s.max_batch_size, batch_wait_timeout_s=s.batch_wait_timeout_s,
            max_concurrent_batches=s.max_concurrent_batches, max_ongoing_requests=s.max_ongoing_requests, torch_threads=s.torch_threads, api_key=s.api_key,
            max_body_bytes=s.max_body_bytes, direct_ingress=s.direct_ingress, draining_period_s=s.draining_period_s,
            worker_niceness=s.worker_niceness, reload_interval_s=s.reload_interval_s, prediction_log=s.prediction_log,
            log_flush_rows=s.log_flush_rows, log_flush_s=s.log_flush_s,
        )  # fmt: skip


def absolute_storage(storage: str) -> str:
    # Replicas do not share the caller's working directory: a relative path must not reach them.
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def build_app(args: ServeArgs) -> Application:
    """Ingress -> Ensemble -> one deployment per base model, composed through DeploymentHandles."""
    from raycast.lineage import model_features_dir
    from raycast.registry import load_spec, resolve_version
    from raycast.serve.deployments import BaseModel as BaseDeployment
    from raycast.serve.deployments import Ensemble, Ingress

    storage = absolute_storage(args.storage)
    version = resolve_version(storage, args.version)
    spec = load_spec(storage, version)
    model_features_dir(storage, spec)  # a model whose data is gone fails here, with its name, not in a replica
    common = {
        "num_replicas": args.replicas,
        "max_ongoing_requests": args.max_ongoing_requests,
        "logging_config": {"enable_access_log": args.access_log},
        # A dead replica is noticed within seconds, not Serve's default 10 s.
        "health_check_period_s": 2.0,
        # During a rollout an old replica drains its requests while the new ones start (imports and weights
        # take a while on small machines): it must not be killed before they are done.
        "graceful_shutdown_timeout_s": 120.0,
    }
    env = {"runtime_env": {"env_vars": serve_env(args)}}
    cpu_only = {"num_cpus": args.num_cpus, **env}
    # A deployment for every base model kind, members of this version or not: during a rollout to a version with
    # other members, the old version's ensemble replicas still call the old members, so none may disappear. A
    # non-member replica stays idle (no GPU share) and loads weights only if an old version's request reaches it.
    bases = {
        name: BaseDeployment.options(
            name=name, ray_actor_options={"num_cpus": args.num_cpus, "num_gpus": gpus, **env}, **common
        ).bind(storage, name, version, gpus, args.max_batch_size, args.batch_wait_timeout_s, args.torch_threads)
        for name in MODEL_NAMES
        for gpus in [args.num_gpus if name in spec["members"] else 0.0]
    }
    ensemble = Ensemble.options(name="ensemble", ray_actor_options=cpu_only, **common).bind(
        storage, version, bases, args.max_batch_size, args.max_concurrent_batches, args.torch_threads
    )
    return Ingress.options(name="ingress", ray_actor_options=cpu_only, **common).bind(
        storage, version, ensemble, args.api_key, args.max_body_bytes, args.max_batch_size, args.max_concurrent_batches,
        args.reload_interval_s, args.prediction_log, args.log_flush_rows, args.log_flush_s,
    )

