"""What the HTTP API does, apart from how the models run: inputs to windows, scores to response rows.

``PredictionService`` is given an async ``score(windows) -> scores`` function. Under Ray Serve that function
sends the windows, as one numpy array, through a ``DeploymentHandle`` to the ensemble deployment; in the bare
benchmark baseline it runs the models in process. Everything else, request validation included, is this one code
path, so the two are compared like for like.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable

import numpy as np

from raycast.serve.candles import CandleFeaturizer, candles_needed
from raycast.serve.errors import RequestError
from raycast.serve.features import StoredFeatures
from raycast.serve.schemas import BatchRequest, PredictRequest

Scores = dict
"""``{"prediction": (n,), "base_predictions": {name: (n,)}, "weights": {name: (n,)}, "model_version": str}``."""

ScoreFn = Callable[[np.ndarray], Awaitable[Scores]]


def score_rows(scores: Scores, symbols: list[str], dates: list[dt.date]) -> list[dict]:
    """One response row per window, in input order (plain floats: JSON has no float32)."""
    pred = np.asarray(scores["prediction"], dtype=np.float64)
    bases = {n: np.asarray(v, dtype=np.float64) for n, v in scores["base_predictions"].items()}
    weights = {n: np.asarray(v, dtype=np.float64) for n, v in scores["weights"].items()}
    version = scores["model_version"]
    return [
        {
            "symbol": s,
            "as_of": d,
            "prediction": float(pred[i]),
            "base_predictions": {n: float(v[i]) for n, v in bases.items()},
            "weights": {n: float(v[i]) for n, v in weights.items()},
            "model_version": version,
        }
        for i, (s, d) in enumerate(zip(symbols, dates, strict=True))
    ]


class PredictionService:
    """The API's logic over one model version's stored features and candle featurizer."""

    def __init__(self, spec: dict, features: StoredFeatures, score: ScoreFn):
        self.spec = spec
        self.features = features
        self.candles = CandleFeaturizer(spec)
        self.score = score

    @property
    def version(self) -> str:
        return self.spec["version"]

    async def predict(self, req: PredictRequest) -> dict:
        if req.candles is not None:
            candles = [c.model_dump() for c in req.candles]
            # Featurizing is pandas work of a few ms: off the event loop, so stored-feature requests keep flowing.
            windows, as_of = await asyncio.to_thread(self.candles.window_for, req.symbol, candles)
        else:
            row, as_of = self.features.end_row(req.symbol, req.as_of)
            windows = self.features.windows([row])
        return score_rows(await self.score(windows), [req.symbol], [as_of])[0]

    async def predict_batch(self, req: BatchRequest) -> dict:
        symbols = self.features.symbols if req.symbols is None else list(dict.fromkeys(req.symbols))
        unknown = [s for s in symbols if s not in self.features]
        if unknown:
            raise RequestError(404, self.features.unknown_message(unknown))
        rows, dates, found, skipped = [], [], [], []
        for symbol in symbols:
            try:
                row, as_of = self.features.end_row(symbol, req.as_of)
            except RequestError as err:  # not traded on as_of: skipped, like `raycast predict`
                skipped.append({"symbol": symbol, "detail": err.detail})
                continue
            rows.append(row)
            dates.append(as_of)
            found.append(symbol)
        predictions = score_rows(await self.score(self.features.windows(rows)), found, dates) if rows else []
        return {"model_version": self.version, "count": len(predictions), "predictions": predictions, "skipped": skipped}

    def model_info(self) -> dict:
        spec = self.spec
        split = spec.get("split", {})
        return {
            "version": spec["version"],
            "created": spec.get("created"),
            "run_id": spec.get("run_id"),
            "members": spec["members"],
            "window": spec["features"]["window"],
            "horizon": spec["features"]["horizon"],
            "features": len(spec["features"]["features"]),
            "features_version": spec["features"].get("features_version"),
            "candles_needed": candles_needed(int(spec["features"]["window"])),
            "training_range": split.get("train"),
            "split": split,
            "test_metrics": (spec.get("metrics") or {}).get("test"),
            "code_version": spec.get("code_version"),
        }

    def symbols_info(self) -> dict:
        rows = []
        for s in self.features.symbols:
            first, last = self.features.date_range(s)
            rows.append({"symbol": s, "first": first, "last": last})
        return {"count": len(rows), "symbols": rows}
