"""The Serve deployments: one per base model, the ensemble that combines them, and the FastAPI ingress.

    HTTP -> Ingress (features, validation) -> Ensemble (weights + meta-learner) -> lstm / cnn / attention

What crosses a handle is a numpy array of normalized windows and a version string, never JSON. Each stage
batches: the ingress and the ensemble with :class:`~raycast.serve.batching.Coalescer` (no added wait, batches
grow with load), the base models with ``@serve.batch``. Every call names its model version, so a rollout
never mixes one version's bases with another's head (see :mod:`raycast.serve.models`).
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from raycast.registry import load_spec
from raycast.serve.api import Unavailable, create_api
from raycast.serve.batching import Coalescer
from raycast.serve.features import StoredFeatures
from raycast.serve.models import VersionCache, load_base, load_head, run_base, serving_device
from raycast.serve.service import PredictionService

log = logging.getLogger("ray.serve")

RETRIES = 3  # a call that reached a dead replica is retried; the router sends it to a live or restarted one
PASSES_PER_CALL = 16  # a base-model call carries up to this many forward passes: a universe costs one call


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


def _set_threads(threads: int) -> None:
    # Several replicas share few cores: torch's default of one intra-op thread per core oversubscribes them.
    import torch

    torch.set_num_threads(threads)


@serve.deployment
class BaseModel:
    """One base model (LSTM, CNN or attention) of the registry, batching windows across requests."""

    def __init__(self, storage: str, name: str, version: str, num_gpus: float, max_batch_size: int,
                 batch_wait_timeout_s: float, torch_threads: int):  # fmt: skip
        _set_threads(torch_threads)
        self.device = serving_device(num_gpus)
        self.models = VersionCache(lambda v: load_base(storage, v, name, self.device))
        spec = load_spec(storage, version)
        if name in spec["members"]:  # otherwise this replica only answers an older version's calls in a rollout
            # One forward pass now: the first request should not pay for lazy initialization.
            shape = (1, int(spec["features"]["window"]), len(spec["features"]["features"]))
            run_base(self.models.get(version), np.zeros(shape, dtype=np.float32), self.device)
        self.forward_windows = max_batch_size
        self.predict.set_max_batch_size(max_batch_size * PASSES_PER_CALL)
        self.predict.set_batch_wait_timeout_s(batch_wait_timeout_s)

    # Sizes are set per replica in __init__; a batch is counted in windows, not requests.
    @serve.batch(max_batch_size=1024, batch_wait_timeout_s=0.0, batch_size_fn=lambda items: sum(map(len, items)))
    async def predict(self, windows: list[np.ndarray], versions: list[str]) -> list[np.ndarray]:
        """(n_i,) standardized outputs for each request's (n_i, window, features) windows."""
        out: list[np.ndarray | None] = [None] * len(windows)
        for version in dict.fromkeys(versions):  # one version, or two during a rollout
            idx = [i for i, v in enumerate(versions) if v == version]
            x = np.concatenate([windows[i] for i in idx])
            model, step = self.models.get(version), self.forward_windows
            y = np.concatenate([run_base(model, x[a : a + step], self.device) for a in range(0, len(x), step)])
            for i, part in zip(idx, split_rows(y, [len(windows[i]) for i in idx]), strict=True):
                out[i] = part
        return out


@serve.deployment
class Ensemble:
    """Fans windows out to the base deployments and combines their outputs with the ensemble head."""

    def __init__(self, storage: str, version: str, bases: dict[str, DeploymentHandle], max_batch_size: int,
                 max_concurrent_batches: int, torch_threads: int):  # fmt: skip
        _set_threads(torch_threads)
        self.bases = bases
        self.chunk = max_batch_size * PASSES_PER_CALL  # windows per base call: what one base batch holds
        self.slots = max_concurrent_batches
        self.heads = VersionCache(lambda v: load_head(storage, v))
        self.heads.get(version)
        self.batchers: dict[str, Coalescer] = {}

    async def predict(self, windows: np.ndarray, version: str) -> dict:
        """Scores (see ``raycast.serve.service.Scores``) of (n, window, features) windows under ``version``."""
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
            call_with_retry(lambda h=self.bases[name], c=chunk: h.predict.remote(c, version), f"{name} model")
            for name in members
            for chunk in chunks
        ]
        results = await asyncio.gather(*calls)
        n = len(chunks)
        outputs = {name: np.concatenate(results[j * n : (j + 1) * n]) for j, name in enumerate(members)}
        # Columns in the head's member order: the weight predictor and meta-learner are positional.
        combined = head.combine(np.column_stack([outputs[m] for m in head.bases]).astype(np.float32))
        return split_scores(combined | {"model_version": version}, [len(w) for w in items])


@serve.deployment
@serve.ingress()  # the FastAPI app is built per replica, in __serve_build_asgi_app__, around this replica's state
class Ingress:
    """The HTTP API: stored features cached in memory, candles featurized here, scores from the ensemble."""

    def __init__(self, storage: str, version: str, ensemble: DeploymentHandle, api_key: str | None,
                 max_body_bytes: int, max_batch_size: int, max_concurrent_batches: int):  # fmt: skip
        spec = load_spec(storage, version)
        self.version = version
        self.ensemble = ensemble
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.batcher = Coalescer(self._score_many, max_batch_size * PASSES_PER_CALL, max_concurrent_batches, size=len)
        self.service = PredictionService(spec, StoredFeatures.load(storage, spec), self.batcher.submit)
        self.service.candles.warm_up()

    async def _score_many(self, items: list[np.ndarray]) -> list[dict]:
        # Concurrent requests share one ensemble call: one handle round trip for many HTTP requests.
        x = items[0] if len(items) == 1 else np.concatenate(items)
        scores = await call_with_retry(lambda: self.ensemble.predict.remote(x, self.version), "ensemble")
        return split_scores(scores, [len(w) for w in items])

    def __serve_build_asgi_app__(self):
        return create_api(self.service, self.api_key, self.max_body_bytes)
