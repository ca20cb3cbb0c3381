"""Serving's data over time, without Serve: the feature dataset a replica swaps in, and the prediction log.

The same classes the ingress replica runs (:class:`LiveFeatures`, :class:`PredictionLog`) on real files; the
tests in test_serve.py run them inside the application under load.
"""

from __future__ import annotations

import json
import logging
import shutil

import pandas as pd
import polling
import pytest

from raycast import fs
from raycast.evaluate.monitor import read_prediction_log
from raycast.features.store import current_features_dir, features_base
from raycast.storage import new_version_dir, publish


def wait_for(condition, what: str):
    return polling.wait_for(condition, what, timeout=30.0, every=0.02)


class Captured(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def republish(storage: str, source, change=None) -> str:
    """Publish a copy of feature dataset ``source``, its meta.json changed by ``change``; returns its name."""
    target = new_version_dir(features_base(storage))
    shutil.rmtree(target)
    shutil.copytree(source, target)
    meta = json.loads(fs.read_text(fs.join(target, "meta.json")))
    fs.write_text(fs.join(target, "meta.json"), json.dumps(change(meta) if change else meta))
    publish(features_base(storage), target, keep=10)
    return fs.name(target)


def test_live_features_swap_in_a_fitting_dataset_and_refuse_another_once(registered_model, tmp_path):
    from raycast.registry import load_spec
    from raycast.serve.live_features import LiveFeatures

    storage = str(tmp_path / "store")
    shutil.copytree(registered_model.storage, storage, ignore=shutil.ignore_patterns("predictions"))
    spec = load_spec(storage, registered_model.serve.version)
    swapped = []
    live = LiveFeatures(storage, spec, interval_s=60, on_swap=swapped.append)  # checked by hand below
    own = live.features
    assert own.version == spec["features"]["features_version"] and own.latest is not None
    assert not live.check()  # nothing new published

    captured = Captured()
    logging.getLogger("ray.serve").addHandler(captured)
    try:
        other = republish(storage, current_features_dir(storage), lambda m: m | {"horizon": m["horizon"] + 1})
        assert not live.check() and not live.check()
        assert live.features is own and swapped == []
        assert len([m for m in captured.messages if other in m]) == 1 and "horizon" in captured.messages[0]
    finally:
        logging.getLogger("ray.serve").removeHandler(captured)

    fitting = republish(storage, fs.join(features_base(storage), own.version))
    assert live.check()
    assert live.features.version == fitting and swapped == [live.features] and live.features is not own
    assert live.features.symbols == own.symbols and live.features.latest == own.latest
    # Off (interval 0): the model's own dataset, whatever is published.
    assert LiveFeatures(storage, spec, interval_s=0).features.version == own.version


def answer(symbol: str, date: str, value: float, source_version: str = "v-model") -> dict:
    return {"symbol": symbol, "as_of": pd.Timestamp(date).date(), "prediction": value,
            "base_predictions": {"lstm": value / 2, "cnn": value * 2}, "weights": {"lstm": 0.25, "cnn": 0.75},
            "model_version": source_version}  # fmt: skip


def test_prediction_log_flushes_by_rows_by_time_and_at_close(tmp_path):
    from raycast.serve.prediction_log import CANDLES_DIR, PredictionLog

    storage, version = str(tmp_path / "store"), "v-model"
    directory = tmp_path / "store" / "predictions" / version
    files = lambda: sorted(p.name for p in directory.glob("*.parquet"))  # noqa: E731

    log = PredictionLog(storage, version, flush_rows=3, flush_s=600)
    log.add([answer("AAA", "2024-01-02", 0.01), answer("BBB", "2024-01-02", -0.02)], "batch", "v-f1")
    log.add([answer("XYZ", "2024-01-03", 0.5)], "candles")  # third row: a flush
    wait_for(lambda: (directory / CANDLES_DIR).is_dir() and files(), "file once 3 rows waited")
    log.add([answer("AAA", "2024-01-03", 0.03)], "predict", "v-f2")
    log.close()  # writes what waits
    first, second = files()
    assert first < second and first.startswith("served-") and len(list((directory / CANDLES_DIR).iterdir())) == 1

    timed = PredictionLog(storage, version, flush_rows=1000, flush_s=0.05)
    timed.add([answer("BBB", "2024-01-03", 0.04)], "predict", "v-f2")
    wait_for(lambda: len(files()) == 3, "file written by time")
    timed.close()
    assert len(files()) == 3  # nothing waited at close

    got = read_prediction_log(storage, version)  # the monitor's reader: candles are not read
    assert got[["symbol", "prediction"]].values.tolist() == [["AAA", 0.01], ["BBB", -0.02], ["AAA", 0.03], ["BBB", 0.04]]
    raw = pd.read_parquet(directory / first)
    assert list(raw.columns) == ["symbol", "date", "prediction", "base_lstm", "base_cnn", "weight_lstm", "weight_cnn",
                                 "model_version", "predicted_at", "source", "features_version"]  # fmt: skip
    assert raw["base_cnn"].tolist() == [0.02, -0.04] and raw["source"].tolist() == ["batch", "batch"]
    assert str(raw["predicted_at"].dt.tz) == "UTC" and raw["features_version"].tolist() == ["v-f1", "v-f1"]
