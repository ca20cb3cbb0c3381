"""Offline scoring (``raycast predict``): score the whole universe with Ray Data and write the daily signal file.

The (symbol, date) pairs to score come from the same in-memory index the HTTP API uses
(:class:`~raycast.serve.feature_rows.StoredFeatures`), and each model actor cuts the same windows and runs the same
``Predictor``; the file therefore holds what ``POST /v1/predict`` would answer for each pair. Actors get a GPU
when the cluster has one.
"""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pandas as pd

from raycast import fs
from raycast.config import RaycastConfig


class ScoreBatch:
    """A Ray Data model actor: loads the predictor and feature rows once, then scores batches of (symbol, date)."""

    def __init__(self, storage: str, version: str, features_dir: str, since: dt.date, device: str):
        from raycast.registry import load_predictor
        from raycast.serve.feature_rows import StoredFeatures

        self.predictor = load_predictor(storage, version, device=device)
        self.features = StoredFeatures.load(storage, self.predictor.spec, since=since, features_dir=features_dir)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = [self.features.end_row(s, d.date())[0] for s, d in zip(batch["symbol"], pd.to_datetime(batch["date"]), strict=True)]
        scores = self.predictor.predict_windows(self.features.windows(rows))
        out = batch[["symbol", "date"]].copy()
        out["prediction"] = scores["prediction"].astype(np.float64)
        for name, values in scores["base_predictions"].items():
            out[f"base_{name}"] = np.asarray(values, dtype=np.float64)
        for name, values in scores["weights"].items():
            out[f"weight_{name}"] = np.asarray(values, dtype=np.float64)
        out["model_version"] = self.predictor.version
        return out


def _parse_date(value: str | dt.date | None, what: str) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a date (YYYY-MM-DD)") from None


def predict_universe(cfg: RaycastConfig, date: str | None = None, end_date: str | None = None, output: str | None = None) -> dict:
    """Predict every stored symbol on ``date`` (default: the latest date) or every date up to ``end_date``.

    Writes one Parquet file (``symbol, date, prediction, base_<model>, weight_<model>, model_version``, and the
    prediction log's ``predicted_at, source, features_version``) to ``output`` or
    ``<storage>/predictions/<version>/<date>[_<end_date>].parquet``, the prediction log, which also gets a copy when
    ``output`` is elsewhere (unless ``serve.prediction_log`` is off); returns a summary.

    The feature dataset is the one serving reads: with ``serve.reload_interval_s`` the newest one the model can be
    fed (:func:`~raycast.serve.live_features.newest_features_dir`), so the latest date is the latest published day.
    """
    import ray

    from raycast.features.store import load_meta
    from raycast.lineage import model_features_dir
    from raycast.registry import load_spec, resolve_version
    from raycast.runtime import init_ray
    from raycast.serve.feature_rows import StoredFeatures
    from raycast.serve.live_features import newest_features_dir
    from raycast.serve.prediction_log import log_dir, write_frame

    started = time.time()
    start, end = _parse_date(date, "--date"), _parse_date(end_date, "--end-date")
    version = resolve_version(cfg.storage, cfg.serve.version)
    spec = load_spec(cfg.storage, version)
    # What serving reads: the model's own dataset, or a newer one built with the same settings.
    if cfg.serve.reload_interval_s > 0:
        features_dir = newest_features_dir(cfg.storage, spec)[0]
    else:
        features_dir = model_features_dir(cfg.storage, spec)
    index = StoredFeatures.load(cfg.storage, spec, since=start, features_dir=features_dir)
    if start is None:  # the newest date any symbol has
        start = max((index.date_range(s)[1] for s in index.symbols), default=None)
    end = end or start
    if start is not None and end < start:
        raise ValueError(f"--end-date {end} is before --date {start}")
    symbols, _, dates = index.rows_between(start, end) if start is not None else ([], None, None)
    if not symbols:
        meta = load_meta(features_dir).raw
        raise ValueError(
            f"no stored feature windows between {start} and {end}: the feature data covers "
            f"{meta.get('date_min')} to {meta.get('date_max')}, less its first {index.window - 1} rows per symbol"
        )
    del index  # the actors hold their own copy

    init_ray(cfg.ray)
    gpus = cfg.serve.num_gpus or (1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0)
    pairs = pd.DataFrame({"symbol": symbols, "date": dates})
    ds = ray.data.from_pandas(pairs).map_batches(
        ScoreBatch,
        fn_constructor_kwargs={"storage": str(fs.absolute(cfg.storage)), "version": version,
                               "features_dir": str(fs.absolute(features_dir)),  # actors run in another directory
                               "since": start, "device": "cuda" if gpus else "cpu"},  # fmt: skip
        batch_size=4096,
        batch_format="pandas",
        concurrency=cfg.serve.predict_concurrency,  # a class UDF: a pool of this many model actors
        num_cpus=1,
        num_gpus=gpus,
    )
    table = ds.to_pandas().sort_values(["date", "symbol"], ignore_index=True)
    table["predicted_at"] = pd.Timestamp.now(tz="UTC")
    table["source"] = "offline"
    table["features_version"] = fs.name(features_dir)
    logged = fs.join(log_dir(cfg.storage, version), f"{start}.parquet" if start == end else f"{start}_{end}.parquet")
    path = fs.location(output) if output else logged
    write_frame(table, path)  # a trading process polling for the file never reads a half-written one
    if cfg.serve.prediction_log and fs.display(path) != fs.display(logged):
        write_frame(table, logged)
    return {
        "output": fs.display(path),
        "model_version": version,
        "rows": len(table),
        "symbols": int(table["symbol"].nunique()),
        "date_min": str(pd.Timestamp(table["date"].min()).date()),
        "date_max": str(pd.Timestamp(table["date"].max()).date()),
        "seconds": round(time.time() - started, 2),
    }

