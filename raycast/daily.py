"""``raycast daily``: one trading day's cycle, what ``jobs/daily.py`` runs on a schedule.

1. Append the new bars file(s) (:func:`~raycast.data.ingest.append_bars`: a re-sent day publishes nothing).
2. Update the features incrementally (:func:`~raycast.features.incremental.update_features`).
3. Score the universe with the served version on every date after the last one scored (or after the previous
   market data's last date): a signal file under ``<storage>/predictions/<version>/``, the monitor's log.
4. Monitor the served version (:func:`~raycast.evaluate.monitor.run_monitor`): realized Rank IC band against 0
   and against the Rank IC the version showed at evaluation, drift.
5. When a rule fires and ``daily.retrain_on_decay``: train a candidate on the data up to now whose test period is
   the recent window (the last ``daily.recent_days`` dates with realized labels, an embargo after its validation
   period), evaluate it, and score it and the served version on that window's tradable rows, the same
   (symbol, date) pairs for both. The window is out of sample for both: the candidate stopped learning an embargo
   before it, and the served version's validation period must end an embargo before it too (otherwise nothing is
   compared and nothing rolls out). The candidate is rolled out only when its daily Rank IC beats the served
   one's with confidence (:func:`rollout_rule`, by more than ``daily.min_improvement``): the registry's served
   version moves (:func:`~raycast.registry.set_served`) and a running Serve application is redeployed on it.
   A candidate that does not win stays registered, unserved. Once a candidate was trained (rolled out or not), an
   alert in the next ``daily.retrain_cooldown_days`` market days trains no other (:func:`cooldown_decision`, from
   ``<storage>/daily/last_candidate.json``); the summary says so.

The day's summary goes to ``<storage>/daily/<newest market date>.json`` and is printed as a few lines.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import numpy as np
import pandas as pd

from raycast import fs
from raycast.config import RaycastConfig


def daily_dir(storage: str) -> fs.Location:
    return fs.join(storage, "daily")


def _market_date_max(storage: str) -> pd.Timestamp | None:
    from raycast.data.store import MANIFEST, current_version_dir

    try:
        manifest = json.loads(fs.read_text(fs.join(current_version_dir(storage), MANIFEST)))
    except FileNotFoundError:
        return None
    return pd.Timestamp(manifest["date_max"])


def _last_scored(storage: str, version: str) -> pd.Timestamp | None:
    from raycast.evaluate.monitor import logged_versions, read_prediction_log

    if version not in logged_versions(storage):
        return None
    return pd.Timestamp(read_prediction_log(storage, version)["date"].max())


LAST_CANDIDATE = "last_candidate.json"


def last_candidate(storage: str) -> dict | None:
    """What the cycle recorded when it last trained a candidate (``daily/last_candidate.json``): ``candidate``,
    ``served``, ``market_date`` (the newest market date it was trained on) and ``rolled_out``; None before the first."""
    path = fs.join(daily_dir(storage), LAST_CANDIDATE)
    return json.loads(fs.read_text(path)) if fs.is_file(path) else None


def record_candidate(storage: str, decision: dict, market_date) -> None:
    """Remember the candidate of ``decision``, trained on the market data up to ``market_date``."""
    fs.makedirs(daily_dir(storage))
    record = {"candidate": decision["candidate"], "served": decision["served"], "market_date": _day(market_date),
              "rolled_out": bool(decision["rolled_out"])}  # fmt: skip
    fs.write_text(fs.join(daily_dir(storage), LAST_CANDIDATE), json.dumps(record, indent=2))


def cooldown_left(last_date, today, market_dates, cooldown_days: int) -> int:
    """Market days still to wait before another candidate: ``cooldown_days`` less the market dates after
    ``last_date`` up to ``today`` (0 when no candidate was trained yet, or without a cooldown)."""
    if last_date is None or cooldown_days <= 0:
        return 0
    dates = pd.DatetimeIndex(pd.unique(pd.DatetimeIndex(market_dates)))
    elapsed = int(((dates > pd.Timestamp(last_date)) & (dates <= pd.Timestamp(today))).sum())
    return max(cooldown_days - elapsed, 0)


def cooldown_decision(storage: str, cooldown_days: int, today, market_dates) -> dict | None:
    """None when an alert may train a candidate on the market data up to ``today``; else the day's retrain
    decision saying that none is trained, and why (the last candidate, how long ago, how long still)."""
    last = last_candidate(storage)
    left = cooldown_left(last and last["market_date"], today, market_dates, cooldown_days)
    if not left:
        return None
    return {"cooling_down": True, "rolled_out": False, "last_candidate": last, "cooldown_days_left": left,
            "reason": f"no candidate trained: {last['candidate']} was trained on the market data up to "
                      f"{last['market_date']}, {cooldown_days - left} market day(s) ago, within "
                      f"daily.retrain_cooldown_days={cooldown_days} ({left} more to wait)"}  # fmt: skip


def _market_dates(storage: str) -> pd.DatetimeIndex:
    """The dates of the current feature dataset (one per market day)."""
    import pyarrow.parquet as pq

    from raycast.features.store import ROWS_DIR, current_features_dir

    filesystem, path = fs.resolve(fs.join(current_features_dir(storage), ROWS_DIR))
    dates = pq.read_table(path, columns=["date"], filesystem=filesystem).column("date").to_pandas()
    return pd.DatetimeIndex(pd.unique(dates)).sort_values()


def run_daily(cfg: RaycastConfig, files: list[str]) -> dict:
    """The cycle in the module docstring; returns (and writes) the day's summary."""
    from raycast.data.ingest import append_bars
    from raycast.evaluate.monitor import run_monitor
    from raycast.features.incremental import update_features
    from raycast.registry import resolve_version
    from raycast.serve.offline import predict_universe

    started = time.perf_counter()
    summary: dict = {"files": list(files)}
    before = _market_date_max(cfg.storage)
    summary["appended"] = [{"file": f} | _appended(append_bars(cfg, f)) for f in files]
    after = _market_date_max(cfg.storage)
    summary["market_dates"] = {"before": _day(before), "after": _day(after)}
    summary["features"] = _pick(update_features(cfg), ("published", "incremental", "date_max", "n_rows", "reason"))

    served = resolve_version(cfg.storage, cfg.serve.version)
    summary["served_version"] = served
    # the new dates, and any the served version has not scored since a missed day
    scored_until = _last_scored(cfg.storage, served)
    since = before if scored_until is None or before is None else min(before, scored_until)
    start = (since + pd.Timedelta(days=1)).date() if since is not None else None
    if after is not None and (start is None or start <= after.date()):
        scoring = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"version": served})})
        out = predict_universe(scoring, str(start) if start else None, str(after.date()))
        summary["scored"] = _pick(out, ("output", "rows", "symbols", "date_min", "date_max"))
    else:
        summary["scored"] = {"rows": 0, "reason": "no new dates"}

    summary["monitor"] = _monitor(cfg, served, run_monitor)
    decision = None
    if summary["monitor"]["alerts"] and cfg.daily.retrain_on_decay:
        cooldown = cfg.daily.retrain_cooldown_days
        if cooldown and last_candidate(cfg.storage) is not None and after is not None:
            decision = cooldown_decision(cfg.storage, cooldown, after, _market_dates(cfg.storage))
        if decision is None:
            decision = retrain_and_decide(cfg, served)
            if decision.get("candidate"):
                record_candidate(cfg.storage, decision, after)
    summary["retrain"] = decision
    summary["seconds"] = round(time.perf_counter() - started, 1)
    fs.makedirs(daily_dir(cfg.storage))
    out = fs.join(daily_dir(cfg.storage), f"{_day(after) or dt.date.today()}.json")
    fs.write_text(out, json.dumps(_plain(summary), indent=2, default=str))
    summary["summary_file"] = fs.display(out)
    for line in summary_lines(summary):
        print(f"[raycast] {line}", flush=True)
    return summary


def _monitor(cfg: RaycastConfig, version: str, run_monitor) -> dict:
    if _last_scored(cfg.storage, version) is None:
        return {"alerts": [], "note": f"nothing logged for {version} yet"}
    report = run_monitor(cfg, version).versions[version]
    return {
        "alerts": list(report.alerts),
        "counts": report.counts,
        "rolling_rank_ic": report.latest("rank_ic_mean"),
        "rolling_rank_ic_band": [report.latest("rank_ic_lo"), report.latest("rank_ic_hi")],
        "evaluated_rank_ic": report.evaluated_rank_ic,
        "drifted_features": list(report.drifted(cfg.monitor.psi_threshold).index),
    }


def recent_window(storage: str, features_dir: fs.Location, days: int, val_days: int, embargo: int):
    """The candidate's split over the dataset's dates: test = the last ``days`` dates with a realized label,
    validation the ``val_days`` before it and training everything earlier, an ``embargo`` between each."""
    import pyarrow.parquet as pq

    from raycast.features.splits import Period, Split
    from raycast.features.store import ROWS_DIR

    filesystem, path = fs.resolve(fs.join(features_dir, ROWS_DIR))
    table = pq.read_table(path, columns=["date", "target"], filesystem=filesystem).to_pandas()
    labeled = np.sort(table.loc[np.isfinite(table["target"]), "date"].unique())
    n = len(labeled)
    test_start, val_end = n - days, n - days - 1 - embargo
    val_start = val_end - val_days + 1
    train_end = val_start - 1 - embargo
    if train_end < val_days:
        raise ValueError(
            f"{n} dates with labels are too few for a candidate: a {days}-date recent window, {val_days} validation "
            f"dates and an embargo of {embargo} leave {max(train_end + 1, 0)} training dates"
        )
    d = pd.DatetimeIndex(labeled)
    return Split(Period(d[0], d[train_end]), Period(d[val_start], d[val_end]), Period(d[test_start], d[-1]))


def score_window(cfg: RaycastConfig, versions: list[str], features_dir: fs.Location, period) -> pd.DataFrame:
    """Each version's prediction on the tradable rows of ``period`` that every version can score (the same
    (symbol, date) pairs for all): ``symbol, date, target`` and one column per version."""
    from raycast.evaluate.evaluate import tradable_frame
    from raycast.features.store import FeatureBlocks, read_feature_frame
    from raycast.registry import load_predictor

    frame = read_feature_frame(features_dir)
    out = None
    for version in versions:
        predictor = load_predictor(cfg.storage, version)
        blocks = FeatureBlocks(frame, predictor.normalizer, predictor.window)
        ends = blocks.ends(period)
        x, _ = blocks.windows(ends)
        scored = pd.DataFrame({"symbol": blocks.symbols_at(ends), "date": blocks.dates[ends], "target": blocks.y[ends],
                               version: predictor.predict_windows(x)["prediction"] if len(ends) else []})  # fmt: skip
        if out is None:
            for column, values in blocks.market.items():
                scored[column] = values[ends]
            out = scored
        else:
            out = out.merge(scored[["symbol", "date", version]], on=["symbol", "date"], how="inner")
    tradable, _ = tradable_frame(cfg, out)
    return tradable[["symbol", "date", "target", *versions]]


def _feedable(spec: dict, meta) -> bool:
    """Whether a feature dataset holds what ``spec``'s model reads, computed the same way."""
    ours, theirs = spec["features"].get("spec_version"), meta.raw.get("spec_version")
    return set(spec["features"]["features"]) <= set(meta.features) and (ours is None or ours == theirs)


def retrain_and_decide(cfg: RaycastConfig, served: str) -> dict:
    """Step 5 of the module docstring: the candidate, both versions' figures on the recent window, the decision."""
    from raycast.evaluate.evaluate import evaluate_version
    from raycast.evaluate.metrics import daily_ic, summarize
    from raycast.features.splits import Split
    from raycast.features.store import current_features_dir, fit_fold_normalizer, load_meta
    from raycast.registry import load_spec, served_version, set_served
    from raycast.train.run import train

    dc = cfg.daily
    features_dir = current_features_dir(cfg.storage)
    meta = load_meta(features_dir)
    embargo = int(meta.raw.get("label_delay", 1)) + meta.horizon
    days = dc.recent_days or cfg.monitor.window
    split = recent_window(cfg.storage, features_dir, days, dc.val_days, embargo)
    decision: dict = {"served": served, "window": {"start": _day(split.test.start), "end": _day(split.test.end)},
                      "candidate_split": split.to_json(), "rolled_out": False}  # fmt: skip
    spec = load_spec(cfg.storage, served)
    served_val_end = Split.from_json(spec["split"]).val.end
    # the served model must not have been selected on the window (nor on the label span before it) either
    if not _feedable(spec, meta) or served_val_end > split.val.end:
        decision["reason"] = (f"the served version cannot be scored out of sample on the window (its validation "
                              f"ends {served_val_end.date()}) or from this feature dataset: nothing to compare")  # fmt: skip
        return decision
    print(f"[raycast] retraining a candidate on {_day(split.train.start)}..{_day(split.val.end)}, "
          f"recent window {decision['window']['start']}..{decision['window']['end']}", flush=True)  # fmt: skip
    if served_version(cfg.storage) is None:  # registering the candidate must not change what is served
        set_served(cfg.storage, served, "served when the first candidate was trained")
    normalizer = fit_fold_normalizer(features_dir, split, meta.features, cfg.features.normalization, cfg.features.clip)
    candidate = train(cfg, split=split, normalizer=normalizer, features_dir=features_dir).version
    decision["candidate"] = candidate
    decision["report"] = fs.display(evaluate_version(cfg, candidate))

    rows = score_window(cfg, [served, candidate], features_dir, split.test)
    figures = summarize(rows, [served, candidate])[["rank_ic", "ic", "n_dates", "n_rows"]]
    decision["figures"] = {v: figures.loc[v].to_dict() for v in (served, candidate)}
    rule = rollout_rule(daily_ic(rows, served, "spearman"), daily_ic(rows, candidate, "spearman"),
                        dc.min_improvement, cfg.monitor.confidence_z)  # fmt: skip
    decision |= rule
    if rule["roll_out"]:
        set_served(cfg.storage, candidate, f"beat {served} by {rule['rank_ic_gain']:+.4f} Rank IC on {decision['window']}")
        decision["rolled_out"] = True
        decision["serving"] = roll_out_serving(cfg, candidate)
    decision["reason"] = (
        f"candidate's daily Rank IC gain {_num(rule['rank_ic_gain'])} (band {_num(rule['gain_lo'])} .. "
        f"{_num(rule['gain_hi'])}, z={cfg.monitor.confidence_z:g}) "
        + ("lies above" if rule["roll_out"] else "does not lie above") + f" {dc.min_improvement:g}"
    )
    return decision


def rollout_rule(served: pd.Series, candidate: pd.Series, min_improvement: float, z: float) -> dict:
    """Roll out only a candidate that beats the served version with confidence: the band of the mean per-date
    Rank IC difference (candidate minus served, on the same dates), ``mean +/- z * std / sqrt(dates)``, lies wholly
    above ``min_improvement``. A tie, a noisy edge or a worse candidate keeps the served version."""
    diff = (candidate - served).dropna()
    n = len(diff)
    gain = float(diff.mean()) if n else np.nan
    half = float(z * diff.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan
    lo, hi = gain - half, gain + half
    return {"rank_ic_gain": gain, "gain_lo": lo, "gain_hi": hi, "dates": n,
            "roll_out": bool(n > 1 and np.isfinite(lo) and lo > min_improvement)}  # fmt: skip


def roll_out_serving(cfg: RaycastConfig, version: str) -> str:
    """Redeploy a running Serve application on ``version`` (replicas replaced without failing a request); says
    what it did. Nothing to do when this process's Ray runs no raycast application."""
    import ray

    if not ray.is_initialized():
        return "no Ray here: no running application to update"
    from ray import serve

    from raycast.serve.app import ServeArgs, build_app
    from raycast.serve.run import APP_NAME

    if APP_NAME not in serve.status().applications:
        return "no Serve application running"
    args = ServeArgs.from_config(cfg).model_copy(update={"version": version})
    serve.run(build_app(args), name=APP_NAME, route_prefix="/")
    return f"Serve application {APP_NAME!r} now serves {version}"


def summary_lines(summary: dict) -> list[str]:
    """The day in a few printed lines."""
    appended = summary["appended"]
    lines = [
        f"daily: market {summary['market_dates']['before']} -> {summary['market_dates']['after']}; "
        + ", ".join(f"{a['file']}: {a.get('new_rows', 0)} new, {a.get('corrected_rows', 0)} corrected rows"
                    + ("" if a.get("published") else " (nothing new)") for a in appended),
    ]  # fmt: skip
    s = summary["scored"]
    lines.append(f"scored {s.get('rows', 0)} rows with {summary['served_version']}"
                 + (f" ({s['date_min']}..{s['date_max']}) -> {s['output']}" if s.get("rows") else f": {s.get('reason')}"))  # fmt: skip
    m = summary["monitor"]
    if "rolling_rank_ic" in m:
        lo, hi = m["rolling_rank_ic_band"]
        lines.append(f"monitor: rolling Rank IC {_num(m['rolling_rank_ic'])} (band {_num(lo)} .. {_num(hi)}; "
                     f"{_num(m.get('evaluated_rank_ic'))} at evaluation), "
                     f"{len(m['drifted_features'])} drifted features, {len(m['alerts'])} alert(s)")  # fmt: skip
    lines += [f"ALERT {a}" for a in m["alerts"]]
    r = summary.get("retrain")
    if r and r.get("cooling_down"):
        lines.append(r["reason"])
    elif r:
        for version, f in (r.get("figures") or {}).items():
            role = "candidate" if version == r.get("candidate") else "served"
            lines.append(f"{role} {version} on {r['window']['start']}..{r['window']['end']}: "
                         f"Rank IC {_num(f['rank_ic'])}, IC {_num(f['ic'])} ({f['n_dates']} dates, {f['n_rows']} rows)")  # fmt: skip
        lines.append(("ROLLED OUT " if r["rolled_out"] else "kept the served version: ") + r["reason"])
    return lines


def _num(value) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:+.4f}"


def _appended(out: dict) -> dict:
    return _pick(out, ("published", "new_rows", "corrected_rows", "date_max"))


def _pick(data: dict, keys: tuple[str, ...]) -> dict:
    return {k: data[k] for k in keys if k in data}


def _day(value) -> str | None:
    return None if value is None else str(pd.Timestamp(value).date())


def _plain(value):
    from raycast.evaluate.monitor import _plain as plain

    return plain(value)
