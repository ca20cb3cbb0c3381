"""The Serve deployments behind the HTTP API, in the order a request meets them, and how they load a model version.

    HTTP -> Ingress (http_api: validation, feature windows) -> Ensemble (weights + meta-learner)
         -> one deployment per base model (lstm / cnn / attention): the forward passes

What crosses a handle is a numpy array of normalized windows and a version string, never JSON: over gRPC
when small, by reference (the object store) when large (:class:`Route`). Each stage batches with
:class:`~raycast.serve.coalescer.Coalescer` (no added wait, batches grow with load); the base models use
``@serve.batch`` instead when given a wait to fill batches. Every call names its model version, so a rollout
never mixes one version's bases with another's head (:class:`VersionCache`, at the end).
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

import numpy as np
import torch
from ray import serve
from ray.serve.handle import DeploymentHandle

from raycast.registry import HEAD, Predictor, build_base, load_spec, load_weights
from raycast.serve.coalescer import Coalescer
from raycast.serve.feature_rows import StoredFeatures
from raycast.serve.http_api import PredictionService, Unavailable, create_api
from raycast.serve.live_features import LiveFeatures
from raycast.serve.prediction_log import PredictionLog

log = logging.getLogger("ray.serve")

RETRIES = 3  # a call that reached a dead replica is retried; the router sends it to a live or restarted one
PASSES_PER_CALL = 16  # a base-model call carries up to this many forward passes: a universe costs one call


class IngressServer:
    """The HTTP API: stored features cached in memory, candles featurized here, scores from the ensemble.

    With ``reload_interval_s`` the stored rows follow newly published feature datasets (:mod:`.live_features`);
    with ``prediction_log`` every answer is logged off the request path (:mod:`.prediction_log`).
    """

    def __init__(self, storage: str, version: str, ensemble: DeploymentHandle, api_key: str | None,
                 max_body_bytes: int, max_batch_size: int, max_concurrent_batches: int, reload_interval_s: float = 0.0,
                 prediction_log: bool = False, log_flush_rows: int = 1000, log_flush_s: float = 5.0):  # fmt: skip
        spec = load_spec(storage, version)
        self.version = version
        self.ensemble = Route(ensemble)
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.batcher = Coalescer(self._score_many, max_batch_size * PASSES_PER_CALL, max_concurrent_batches, size=len)
        self.live = LiveFeatures(storage, spec, reload_interval_s, on_swap=self._use_features)
        self.log = PredictionLog(storage, version, log_flush_rows, log_flush_s) if prediction_log else None
        self.service = PredictionService(spec, self.live.features, self.batcher.submit, self.log.add if self.log else None)
        self.service.candles.warm_up()
        self.live.start()

    def _use_features(self, features: StoredFeatures) -> None:
        self.service.features = features  # one assignment: requests in flight keep the rows they read

    def __del__(self):
        # Serve calls this once the replica has drained: no request adds rows after the last flush.
        if hasattr(self, "live"):
            self.live.stop()
        if getattr(self, "log", None) is not None:
            self.log.close()

    async def _score_many(self, items: list[np.ndarray]) -> list[dict]:
        # Concurrent requests share one ensemble call: one handle round trip for many HTTP requests.
        x = items[0] if len(items) == 1 else np.concatenate(items)
        scores = await call_with_retry(lambda: self.ensemble.to(x).predict.remote(x, self.version), "ensemble")
        return split_scores(scores, [len(w) for w in items])

    def transports(self) -> dict[str, str]:
        """How this replica reaches the ensemble deployment: ``grpc`` or ``actor`` (Ray actor calls)."""
        return {"ensemble": self.ensemble.transport}

    def __serve_build_asgi_app__(self):
        return create_api(self.service, self.api_key, self.max_body_bytes)


class EnsembleServer:
    """Fans windows out to the base deployments and combines their outputs with the ensemble head."""

    def __init__(self, storage: str, version: str, bases: dict[str, DeploymentHandle], max_batch_size: int,
                 max_concurrent_batches: int, torch_threads: int):  # fmt: skip
        _set_threads(torch_threads)
        self.bases = {name: Route(h) for name, h in bases.items()}
        self.chunk = max_batch_size * PASSES_PER_CALL  # windows per base call: what one base batch holds
        self.slots = max_concurrent_batches
        self.heads = VersionCache(lambda v: load_head(storage, v))
        self.heads.get(version)
        self.batchers: dict[str, Coalescer] = {}

    def transports(self) -> dict[str, str]:
        """How this replica reaches each base deployment: ``grpc`` or ``actor`` (Ray actor calls)."""
        return {name: route.transport for name, route in self.bases.items()}

    async def predict(self, windows: np.ndarray, version: str) -> dict:
        """Scores (see ``raycast.serve.http_api.Scores``) of (n, window, features) windows under ``version``."""
        if version not in self.batchers:  # one per version: a batch must not mix versions
            self.batchers[version] = Coalescer(
                lambda items, v=version: self._score_many(items, v), self.chunk, self.slots, size=len
            )
        return await self.batchers[version].submit(windows)

    async def _score_many(self, items: list[np.ndarray], version: str) -> list[dict]:
        x = items[0] if len(items) == 1 else np.concatenate(items)
        chunks = [x[i : i + self.chunk] for i in range(0, len(x), self.chunk)]
        head = self.heads.get(version)
        members = list(head.bases)  # this version's members only; the other base deployments stay idle
        calls = [
            call_with_retry(lambda r=self.bases[name], c=chunk: r.to(c).predict.remote(c, version), f"{name} model")
            for name in members
            for chunk in chunks
        ]
        results = await asyncio.gather(*calls)
        n = len(chunks)
        outputs = {name: np.concatenate(results[j * n : (j + 1) * n]) for j, name in enumerate(members)}
        # Columns in the head's member order: the weight predictor and meta-learner are positional.
        combined = head.combine(np.column_stack([outputs[m] for m in head.bases]).astype(np.float32))
        return split_scores(combined | {"model_version": version}, [len(w) for w in items])


class BaseModelServer:
    """One base model (LSTM, CNN or attention) of the registry, batching windows across requests."""

    def __init__(self, storage: str, name: str, version: str, num_gpus: float, max_batch_size: int,
                 batch_wait_timeout_s: float, torch_threads: int):  # fmt: skip
        _set_threads(torch_threads)
        # Windows sent by reference arrive as read-only views of the object store; the models only read them.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        self.device = serving_device(num_gpus)
        self.models = VersionCache(lambda v: load_base(storage, v, name, self.device))
        spec = load_spec(storage, version)
        if name in spec["members"]:  # otherwise this replica only answers an older version's calls in a rollout
            # One forward pass now: the first request should not pay for lazy initialization.
            shape = (1, int(spec["features"]["window"]), len(spec["features"]["features"]))
            run_base(self.models.get(version), np.zeros(shape, dtype=np.float32), self.device)
        self.forward_windows = max_batch_size
        # No wait (the default): batch what queued during the last forward pass, which costs a sequential request
        # nothing measurable where @serve.batch adds about 1 ms. A wait (to fill batches from many callers, as
        # on a GPU) is what @serve.batch does.
        self.timed = batch_wait_timeout_s > 0
        self.batcher = Coalescer(self._forward_items, max_batch_size * PASSES_PER_CALL, slots=1, size=lambda it: len(it[0]))
        self.predict_timed.set_max_batch_size(max_batch_size * PASSES_PER_CALL)
        self.predict_timed.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def predict(self, windows: np.ndarray, version: str) -> np.ndarray:
        """(n,) standardized outputs for (n, window, features) windows under ``version``."""
        if self.timed:
            return await self.predict_timed(windows, version)
        return await self.batcher.submit((windows, version))

    async def _forward_items(self, items: list[tuple[np.ndarray, str]]) -> list[np.ndarray]:
        return self._forward([w for w, _ in items], [v for _, v in items])

    # Sizes are set per replica in __init__; a batch is counted in windows, not requests.
    @serve.batch(max_batch_size=1024, batch_wait_timeout_s=0.0, batch_size_fn=lambda items: sum(map(len, items)))
    async def predict_timed(self, windows: list[np.ndarray], versions: list[str]) -> list[np.ndarray]:
        return self._forward(windows, versions)

    def _forward(self, windows: list[np.ndarray], versions: list[str]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(windows)
        for version in dict.fromkeys(versions):  # one version, or two during a rollout
            idx = [i for i, v in enumerate(versions) if v == version]
            x = windows[idx[0]] if len(idx) == 1 else np.concatenate([windows[i] for i in idx])
            model, step = self.models.get(version), self.forward_windows
            y = np.concatenate([run_base(model, x[a : a + step], self.device) for a in range(0, len(x), step)])
            for i, part in zip(idx, split_rows(y, [len(windows[i]) for i in idx]), strict=True):
                out[i] = part
        return out


# The classes are plain, so the serving benchmark can also run them as Ray actors; Serve gets them here.
BaseModel = serve.deployment(BaseModelServer)
Ensemble = serve.deployment(EnsembleServer)
# The FastAPI app is built per replica, in __serve_build_asgi_app__, around that replica's state.
Ingress = serve.deployment(serve.ingress()(IngressServer))


# Between the stages: retries, splitting a batch's scores, the transport of a handle.


async def call_with_retry(make_call, what: str):
    """Await ``make_call()``, retrying when the replica it reached died (safe: a prediction is a read)."""
    import ray.exceptions
    from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError

    for attempt in range(RETRIES):
        try:
            return await make_call()
        except (ray.exceptions.RayActorError, ReplicaUnavailableError, DeploymentUnavailableError) as err:
            log.warning("%s failed (%s), attempt %d of %d", what, type(err).__name__, attempt + 1, RETRIES)
            if attempt == RETRIES - 1:
                raise Unavailable(f"{what}: {type(err).__name__}") from err
            await asyncio.sleep(0.2 * (attempt + 1))


def split_rows(values: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(values, np.cumsum(sizes)[:-1])


def split_scores(scores: dict, sizes: list[int]) -> list[dict]:
    """One scores dict per request, from the scores of their concatenated windows."""
    bounds = np.cumsum([0, *sizes])
    return [
        {
            "prediction": scores["prediction"][a:b],
            "base_predictions": {n: v[a:b] for n, v in scores["base_predictions"].items()},
            "weights": {n: v[a:b] for n, v in scores["weights"].items()},
            "model_version": scores["model_version"],
        }
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]


LARGE_BYTES = 1 << 20  # arrays above this cross a handle by reference, whatever the declared transport


def on_declared_transport(handle: DeploymentHandle) -> DeploymentHandle:
    """``handle`` on the transport this replica's Serve settings declare (gRPC under ``SERVE_ENV``).

    A handle passed to a deployment was built where the application was built (``raycast serve``'s driver, the
    ``serve run`` CLI, a ``serve deploy`` build task), with that process's settings, and keeps them when pickled:
    a driver without ``RAY_SERVE_USE_GRPC_BY_DEFAULT`` would give every replica actor-call handles. A plain Ray
    actor handle (these classes also run as actors, without Serve, in the serving benchmark) is returned as is.
    """
    from ray.serve._private.constants import RAY_SERVE_USE_GRPC_BY_DEFAULT

    if not isinstance(handle, DeploymentHandle):
        return handle
    return handle.options(_by_reference=not RAY_SERVE_USE_GRPC_BY_DEFAULT)


class Route:
    """A deployment's handle on the declared transport, and by reference for arrays of over ``LARGE_BYTES``.

    gRPC suits small requests (one hop, no object store) but copies the payload into one message, capped at
    4 MiB (``RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH``): a coalesced batch of windows goes through the object
    store instead, as Ray actor calls send it.
    """

    def __init__(self, handle: DeploymentHandle):
        self.declared = on_declared_transport(handle)
        self.by_reference = handle.options(_by_reference=True) if isinstance(handle, DeploymentHandle) else handle

    def to(self, x: np.ndarray) -> DeploymentHandle:
        return self.by_reference if x.nbytes > LARGE_BYTES else self.declared

    @property
    def transport(self) -> str:
        return "actor" if self.declared.handle_options._by_reference else "grpc"


def _set_threads(threads: int) -> None:
    # Several replicas share few cores: torch's default of one intra-op thread per core oversubscribes them.
    torch.set_num_threads(threads)


# Loading a registry version: one base model, or the ensemble head alone, cached by version.
#
# During a rollout an old ingress replica can reach a new base-model replica (deployment names stay the same
# across versions), which then loads the old version on demand instead of mixing one version's bases with
# another's head. Only a couple of versions are kept.


T = TypeVar("T")


class VersionCache(Generic[T]):
    """``load(version)`` results, the ``keep`` most recently used versions only."""

    def __init__(self, load: Callable[[str], T], keep: int = 2):
        self._load = load
        self._keep = keep
        self._items: OrderedDict[str, T] = OrderedDict()

    def get(self, version: str) -> T:
        if version in self._items:
            self._items.move_to_end(version)
        else:
            self._items[version] = self._load(version)
            while len(self._items) > self._keep:
                self._items.popitem(last=False)
        return self._items[version]


def serving_device(num_gpus: float) -> torch.device:
    """CUDA when the replica was given a GPU share and one is visible, else the CPU."""
    return torch.device("cuda") if num_gpus > 0 and torch.cuda.is_available() else torch.device("cpu")


def load_base(storage: str, version: str, name: str, device: torch.device) -> torch.nn.Module:
    """One base model of a registry version, in eval mode on ``device``."""
    spec = load_spec(storage, version)
    return build_base(spec, name, load_weights(storage, version, name)).to(device)


def load_head(storage: str, version: str) -> Predictor:
    """A :class:`Predictor` with the ensemble head only: ``combine`` works, the bases live in other replicas.

    The bases are stand-ins (``nn.Identity``) that give the head its member names and order; the head's own
    weights are loaded strictly, so a mismatch with the spec is an error, not silently wrong predictions.
    """
    from raycast.config import EnsembleConfig
    from raycast.models import create_ensemble_model

    spec = load_spec(storage, version)
    stand_ins = {n: torch.nn.Identity() for n in spec["members"]}
    ensemble = create_ensemble_model(stand_ins, EnsembleConfig.model_validate(spec["models"]["ensemble"]))
    ensemble.load_state_dict(load_weights(storage, version, HEAD), strict=True)
    return Predictor(spec, stand_ins, ensemble.eval(), torch.device("cpu"))


@torch.no_grad()
def run_base(model: torch.nn.Module, windows: np.ndarray, device: torch.device) -> np.ndarray:
    """(n,) standardized outputs of one base model, as ``Predictor.base_outputs`` computes them."""
    x = torch.as_tensor(np.asarray(windows, dtype=np.float32), device=device)
    return model(x).float().reshape(-1).cpu().numpy()
