"""The whole workflow as one library call: what ``raycast pipeline`` and ``jobs/pipeline.py`` run."""

from __future__ import annotations

import time

from raycast import fs
from raycast.config import RaycastConfig


def run_pipeline(cfg: RaycastConfig) -> dict:
    """Run ``cfg.pipeline.stages`` in order; returns each stage's summary and its wall time."""
    summary: dict = {}
    version, tuned = None, None
    for stage in cfg.pipeline.stages:
        started = time.perf_counter()
        print(f"[raycast] stage {stage} ...", flush=True)
        if stage == "ingest":
            from raycast.data.ingest import ingest

            manifest = ingest(cfg)
            out = {k: manifest[k] for k in ("n_symbols", "date_min", "date_max", "rows", "rejected_total")}
        elif stage == "features":
            from raycast.features.pipeline import build_features

            out = build_features(cfg)
        elif stage == "train":
            from raycast.train.run import train

            trained = train(train_config(cfg, tuned))
            version = trained.version
            out = {"run_id": trained.run_id, "version": version, "run_dir": fs.display(trained.run_dir)}
            if tuned and cfg.pipeline.train_tuned:
                out["tuned_params"] = tuned
        elif stage == "evaluate":
            from raycast.evaluate.evaluate import evaluate_version

            out = {"report": fs.display(evaluate_version(cfg, version))}
        elif stage == "tune":
            from raycast.tune.search import run_search

            out = run_search(cfg, None)
            tuned = out["best_params"]
        elif stage == "predict":
            from raycast.serve.offline import predict_universe

            out = predict_universe(cfg, None, None, None)
        else:  # pragma: no cover - the config's Literal rules this out
            raise ValueError(f"unknown pipeline stage {stage!r}")
        out["seconds"] = round(time.perf_counter() - started, 1)
        print(f"[raycast] stage {stage} done in {out['seconds']} s", flush=True)
        summary[stage] = out
    return summary


def train_config(cfg: RaycastConfig, tuned: dict | None) -> RaycastConfig:
    """The config the train stage uses: the pipeline's own, with the tune stage's best parameters when it ran.

    Only the searched keys change (e.g. the LSTM's hidden size, the learning rate): epochs, workers and data stay
    the pipeline's, not the shortened ones the trials ran with.
    """
    if not tuned or not cfg.pipeline.train_tuned:
        return cfg
    from raycast.tune.space import apply_params

    print(f"[raycast] training {cfg.tune.model} with the tuned parameters {tuned}", flush=True)
    return apply_params(cfg, cfg.tune.model, tuned)
