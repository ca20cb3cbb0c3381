"""``raycast monitor``: how the logged predictions have done since, per model version, and whether it is decaying.

Every signal file under ``<storage>/predictions/<version>/`` is joined, row by row, with the label its (symbol,
date) has realized in the current market data, computed exactly as the features compute ``target``:
``close[t+d+h] / close[t+d] - 1`` with the label delay d and horizon h of the model's own feature dataset. A row
whose later bars have not arrived yet is *pending*; one whose label cannot exist (a halt inside the label span, a
date or symbol the market data does not hold) is *unlabeled*; both are counted, neither is scored.

Per version the report holds the realized daily IC and Rank IC (:func:`raycast.evaluate.metrics.daily_ic`), their
rolling mean over ``monitor.window`` dates with a band of ``mean +/- z * std / sqrt(window)``, the hit rate of the
long-short quantile book (:func:`raycast.evaluate.backtest.long_short_backtest`, before costs) and the PSI of each
feature: the latest ``window`` dates of feature rows against the model's training period.

Three rules flag a version: its latest rolling Rank IC band lies wholly below 0 (the skill turned against it);
else the band's upper end lies below ``monitor.fade_fraction`` of the Rank IC the version showed on its own test
period at evaluation (the skill faded: a signal that switched off leaves the band around 0, which the first rule
never flags; a version never evaluated, or evaluated without a positive Rank IC, has nothing to fade from); or at
least ``monitor.psi_features`` features drifted: a PSI above ``monitor.psi_threshold`` and above the largest PSI
that any stretch of ``window`` dates of the training period shows against the whole of it (what a window reaches
by chance: slow features and co-moving symbols put a few dates' rows in a narrow slice of the training range, so on
a stationary 12-symbol universe most 20-date windows have a dozen features above 0.25). They are checked for the
versions still being logged (whose newest prediction is the newest in the log) or for the one version asked for;
older versions are reported only.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from raycast import fs
from raycast.config import MonitorConfig, RaycastConfig

PREDICTION_COLUMNS = ("symbol", "date", "prediction")
STATUSES = ("realized", "pending", "unlabeled")


def predictions_dir(storage: str) -> fs.Location:
    return fs.join(storage, "predictions")


def monitor_dir(storage: str) -> fs.Location:
    return fs.join(storage, "monitor")


def logged_versions(storage: str) -> list[str]:
    """The model versions with at least one signal file, sorted."""
    base = predictions_dir(storage)
    if not fs.is_dir(base):
        return []
    return sorted(v for v in fs.list_names(base, dirs_only=True) if _signal_files(fs.join(base, v)))


def _signal_files(directory: fs.Location) -> list[str]:
    return sorted(n for n in fs.list_names(directory) if n.endswith(".parquet") and not n.startswith("."))


def read_prediction_log(storage: str, version: str) -> pd.DataFrame:
    """Every logged ``symbol, date, prediction`` of ``version``, one row per (symbol, date).

    A pair scored in several files keeps the prediction of the file that sorts last (files are named by date, so
    the newest run wins).
    """
    directory = fs.join(predictions_dir(storage), version)
    frames = []
    for name in _signal_files(directory):
        path = fs.join(directory, name)
        filesystem, inner = fs.resolve(path)
        frame = pd.read_parquet(inner, filesystem=filesystem)
        missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"signal file {fs.display(path)} lacks column(s) {missing}; it has {list(frame.columns)}")
        frames.append(frame[list(PREDICTION_COLUMNS)])
    if not frames:
        raise FileNotFoundError(f"no signal files under {fs.display(directory)}")
    log = pd.concat(frames, ignore_index=True)
    log["symbol"] = log["symbol"].astype(str)
    log["date"] = pd.to_datetime(log["date"]).astype("datetime64[ns]")
    log["prediction"] = log["prediction"].astype(np.float64)
    log = log.drop_duplicates(["symbol", "date"], keep="last")
    return log.sort_values(["date", "symbol"], ignore_index=True)


def realized_labels(bars: pd.DataFrame, horizon: int, label_delay: int, max_gap_days: int | None) -> pd.DataFrame:
    """``symbol, date, target, bars_after`` for every bar: the label as the features define it, NaN until realized."""
    # the features' own label function, so a realized label is bit-for-bit the training target
    from raycast.features.spec import _label

    out = []
    for symbol, group in bars.sort_values(["symbol", "date"]).groupby("symbol", sort=False):
        dates = group["date"].to_numpy(dtype="datetime64[ns]")
        target = _label(group["close"].to_numpy(dtype=np.float64), dates, horizon, label_delay, max_gap_days)
        out.append(pd.DataFrame({"symbol": str(symbol), "date": dates, "target": target,
                                 "bars_after": np.arange(len(dates))[::-1]}))  # fmt: skip
    if not out:
        return pd.DataFrame({"symbol": [], "date": pd.to_datetime([]), "target": [], "bars_after": []})
    return pd.concat(out, ignore_index=True)


def join_labels(log: pd.DataFrame, labels: pd.DataFrame, span: int) -> pd.DataFrame:
    """The log with ``target`` and ``status`` (see :data:`STATUSES`): realized, pending (later bars still to
    come, ``span`` = label delay + horizon of them) or unlabeled (a halt inside the span, or no such bar)."""
    frame = log.merge(labels, on=["symbol", "date"], how="left")
    last_bar = labels.groupby("symbol")["date"].max()
    beyond_data = frame["date"] > frame["symbol"].map(last_bar).fillna(pd.Timestamp.max)
    waiting = (frame["bars_after"] < span) | (frame["bars_after"].isna() & beyond_data & frame["symbol"].isin(last_bar.index))
    frame["status"] = np.where(np.isfinite(frame["target"]), "realized", np.where(waiting, "pending", "unlabeled"))
    return frame.drop(columns="bars_after")


def rolling_band(ic: pd.Series, window: int, z: float) -> pd.DataFrame:
    """Rolling mean of the last ``window`` defined daily values, with ``mean +/- z * std / sqrt(window)``.

    Dates without a value (too few symbols) are skipped rather than counted, and the band starts once ``window``
    values exist: a band over fewer dates would claim a confidence it does not have.
    """
    values = ic.dropna()
    rolling = values.rolling(window, min_periods=window)
    mean, half = rolling.mean(), z * rolling.std(ddof=1) / np.sqrt(window)
    band = pd.DataFrame({"mean": mean, "lo": mean - half, "hi": mean + half})
    return band.reindex(ic.index)


@dataclass
class VersionReport:
    """What ``raycast monitor`` found for one model version."""

    version: str
    daily: pd.DataFrame  # per date: ic, rank_ic and their rolling mean and band (ic_mean, ic_lo, ic_hi, rank_ic_...)
    summary: dict  # raycast.evaluate.metrics.summarize over the realized rows, plus hit_rate
    counts: dict[str, int]  # rows per status
    last_date: pd.Timestamp  # the newest date it predicted
    psi: pd.Series
    alerts: list[str] = field(default_factory=list)
    checked: bool = False  # whether the rules were applied (still logged, or asked for)
    psi_chance: pd.Series | None = None  # per feature: the largest PSI a training-period window shows by chance
    evaluated_rank_ic: float = np.nan  # the ensemble's Rank IC on its own test period at evaluation (registry)

    def drifted(self, threshold: float) -> pd.Series:
        """The PSI of the features that drifted (above ``threshold`` and above what chance gives), largest first."""
        bound = threshold
        if self.psi_chance is not None:
            bound = np.maximum(threshold, self.psi_chance.reindex(self.psi.index).fillna(0.0))
        return self.psi[self.psi > bound].sort_values(ascending=False)

    def latest(self, column: str) -> float:
        values = self.daily[column].dropna()
        return float(values.iloc[-1]) if len(values) else np.nan


@dataclass
class MonitorResult:
    versions: dict[str, VersionReport]
    report: fs.Location | None = None

    @property
    def alerts(self) -> list[str]:
        return [f"{v}: {a}" for v, r in self.versions.items() for a in r.alerts]


def evaluated_rank_ic(spec: dict) -> float:
    """The ensemble's mean daily Rank IC on the version's test period, as evaluation recorded it in the registry
    (``metrics.test.ensemble.rank_ic`` of ``model.json``); NaN for a version never evaluated."""
    value = ((spec.get("metrics") or {}).get("test") or {}).get("ensemble", {}).get("rank_ic")
    return float(value) if value is not None else np.nan


def _skill(frame: pd.DataFrame, horizon: int, mc: MonitorConfig, quantile: float) -> tuple[pd.DataFrame, dict]:
    from raycast.evaluate.backtest import long_short_backtest
    from raycast.evaluate.metrics import daily_ic, summarize

    realized = frame[frame["status"] == "realized"]
    daily = pd.DataFrame({"ic": daily_ic(realized, "prediction"), "rank_ic": daily_ic(realized, "prediction", "spearman")})
    for name in ("ic", "rank_ic"):
        band = rolling_band(daily[name], mc.window, mc.confidence_z)
        daily[[f"{name}_mean", f"{name}_lo", f"{name}_hi"]] = band.to_numpy()
    summary = summarize(realized, ["prediction"]).iloc[0].to_dict()
    summary["hit_rate"] = np.nan
    if len(realized):
        with warnings.catch_warnings():  # its overlapping-horizon warning is about annualized returns, unused here
            warnings.simplefilter("ignore")
            book = long_short_backtest(realized, "prediction", quantile=quantile, cost_bps=0.0, horizon=horizon)
        summary["hit_rate"] = book.summary["hit_rate"]
    return daily, summary


def _drift(cfg: RaycastConfig, spec: dict) -> tuple[pd.Series, pd.Series]:
    """PSI per feature: the latest ``window`` dates of feature rows against the model's training period; and
    the largest PSI a stretch of ``window`` training dates shows against the training period.

    The recent rows come from the newest feature dataset when it holds the model's features (it is where new
    bars are featurized), else from the model's own dataset.
    """
    from raycast.features.splits import Split
    from raycast.features.store import ROWS_DIR, current_features_dir, load_meta, read_feature_frame, read_training_rows
    from raycast.lineage import model_features_dir
    from raycast.evaluate.drift import feature_psi, window_psi_max

    features = list(spec["features"]["features"])
    own = model_features_dir(cfg.storage, spec)
    train = read_training_rows(own, Split.from_json(spec["split"]), ["date", *features]).to_pandas()
    dates = train["date"].to_numpy()
    mc = cfg.monitor
    chance = pd.Series({f: window_psi_max(train[f].to_numpy(), dates, mc.window, mc.psi_bins) for f in features},
                       name="psi_chance", dtype=np.float64)  # fmt: skip
    try:
        current = current_features_dir(cfg.storage)
        recent_dir = current if set(features) <= set(load_meta(current).features) else own
    except FileNotFoundError:
        recent_dir = own
    filesystem, rows = fs.resolve(fs.join(recent_dir, ROWS_DIR))
    dates = pd.DatetimeIndex(pd.unique(pd.read_parquet(rows, columns=["date"], filesystem=filesystem)["date"]))
    since = dates.sort_values()[-cfg.monitor.window :][0].to_pydatetime()
    recent = read_feature_frame(recent_dir, filters=[("date", ">=", since)])
    return feature_psi(train, recent, features, cfg.monitor.psi_bins), chance


def _rules(report: VersionReport, mc: MonitorConfig) -> list[str]:
    alerts = []
    rows = report.daily.dropna(subset=["rank_ic_hi"])
    evaluated = report.evaluated_rank_ic
    if len(rows):
        last, day = rows.iloc[-1], rows.index[-1].date()
        band = f"band {last['rank_ic_lo']:+.4f} .. {last['rank_ic_hi']:+.4f}, z={mc.confidence_z:g}"
        if last["rank_ic_hi"] < 0:
            alerts.append(f"rolling {mc.window}-date Rank IC {last['rank_ic_mean']:+.4f} is below 0 with confidence "
                          f"({band}) as of {day}")  # fmt: skip
        elif mc.fade_fraction > 0 and np.isfinite(evaluated) and evaluated > 0:
            bar = mc.fade_fraction * evaluated
            if last["rank_ic_hi"] < bar:
                alerts.append(
                    f"rolling {mc.window}-date Rank IC {last['rank_ic_mean']:+.4f} faded: its band's top "
                    f"{last['rank_ic_hi']:+.4f} lies below {bar:+.4f}, {mc.fade_fraction:g} x the {evaluated:+.4f} "
                    f"it showed on its test period at evaluation ({band}) as of {day}"
                )
    drifted = report.drifted(mc.psi_threshold)
    if len(drifted) >= mc.psi_features:
        listed = ", ".join(f"{name} {value:.2f}" for name, value in drifted.head(8).items())
        alerts.append(
            f"{len(drifted)} features drifted (PSI > {mc.psi_threshold:g} and above any {mc.window}-date window of "
            f"the training period, the rule needs {mc.psi_features}): {listed}"
        )
    return alerts


def assess(cfg: RaycastConfig, version: str | None = None) -> MonitorResult:
    """Score every logged version (or ``version``) against the realized labels; see the module docstring."""
    from raycast.data.store import list_symbols, read_bars
    from raycast.features.store import load_meta
    from raycast.lineage import model_features_dir
    from raycast.registry import load_spec

    available = logged_versions(cfg.storage)
    if not available:
        raise FileNotFoundError(
            f"no logged predictions under {fs.display(predictions_dir(cfg.storage))}: run `raycast predict` first"
        )
    if version is not None and version not in available:
        raise FileNotFoundError(f"no logged predictions for model version {version!r}; logged: {', '.join(available)}")
    versions = [version] if version else available
    logs = {v: read_prediction_log(cfg.storage, v) for v in versions}
    symbols = sorted(set().union(*(set(log["symbol"]) for log in logs.values())) & set(list_symbols(cfg.storage)))
    bars = read_bars(cfg.storage, symbols)
    newest = max(log["date"].max() for log in logs.values())
    reports = {}
    for v, log in logs.items():
        spec = load_spec(cfg.storage, v)
        meta = load_meta(model_features_dir(cfg.storage, spec)).raw
        horizon, delay = int(meta["horizon"]), int(meta.get("label_delay", 1))
        labels = realized_labels(bars, horizon, delay, meta.get("max_label_gap_days"))
        frame = join_labels(log, labels, delay + horizon)
        daily, summary = _skill(frame, horizon, cfg.monitor, cfg.evaluate.quantile)
        counts = {s: int((frame["status"] == s).sum()) for s in STATUSES}
        psi, chance = _drift(cfg, spec)
        report = VersionReport(v, daily, summary, counts, log["date"].max(), psi, psi_chance=chance,
                               evaluated_rank_ic=evaluated_rank_ic(spec))  # fmt: skip
        report.checked = version is not None or report.last_date == newest
        if report.checked:
            report.alerts = _rules(report, cfg.monitor)
        reports[v] = report
    return MonitorResult(reports)


def format_table(result: MonitorResult) -> str:
    """One line per version: rows by status, mean and latest rolling Rank IC with its band, hit rate, drift."""
    rows = []
    for v, r in result.versions.items():
        rows.append({
            "version": v,
            "realized": r.counts["realized"],
            "pending": r.counts["pending"],
            "unlabeled": r.counts["unlabeled"],
            "ic": r.summary["ic"],
            "rank_ic": r.summary["rank_ic"],
            "evaluated_rank_ic": r.evaluated_rank_ic,
            "rolling_rank_ic": r.latest("rank_ic_mean"),
            "band_lo": r.latest("rank_ic_lo"),
            "band_hi": r.latest("rank_ic_hi"),
            "hit_rate": r.summary["hit_rate"],
            "max_psi": float(r.psi.max()) if r.psi.notna().any() else np.nan,
            "status": "ALERT" if r.alerts else ("ok" if r.checked else "not live"),
        })  # fmt: skip
    return pd.DataFrame(rows).set_index("version").to_string(float_format=lambda x: f"{x:+.4f}")


def plot_rolling_rank_ic(report: VersionReport, window: int, path) -> None:
    """Daily Rank IC (dots) and its rolling mean with the confidence band."""
    from raycast.evaluate.report import _figure

    fig, axes = _figure()
    ax = axes[0][0]
    daily = report.daily
    ax.plot(daily.index, daily["rank_ic"], ".", color="grey", alpha=0.4, markersize=3, label="daily Rank IC")
    ax.plot(daily.index, daily["rank_ic_mean"], color="C0", label=f"rolling {window}-date mean")
    ax.fill_between(daily.index, daily["rank_ic_lo"], daily["rank_ic_hi"], color="C0", alpha=0.2, label="band")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set(title=f"{report.version}: realized Rank IC", ylabel="Rank IC")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)


def _markdown(result: MonitorResult, mc: MonitorConfig) -> str:
    lines = ["# Monitor", "", f"Rolling window {mc.window} dates, band z={mc.confidence_z:g}; fade: the band's top below "
             f"{mc.fade_fraction:g} x the evaluated test Rank IC; drift: PSI over {mc.psi_bins} training-period quantile "
             f"bins, threshold {mc.psi_threshold:g} on {mc.psi_features} features.", ""]  # fmt: skip
    alerts = result.alerts
    lines += ["## Alerts", "", *([f"- {a}" for a in alerts] or ["none"]), "", "## Versions", "", "```",
              format_table(result), "```", ""]  # fmt: skip
    for v, r in result.versions.items():
        top = r.psi.sort_values(ascending=False).head(10)
        lines += [f"## {v}", "", f"Predictions up to {r.last_date.date()}; rows {r.counts}.", "",
                  f"![rolling Rank IC]({_plot_name(v)})", "", "Highest feature PSI:", "", "| feature | PSI |",
                  "|---|---|", *(f"| {k} | {val:.3f} |" for k, val in top.items()), ""]  # fmt: skip
    return "\n".join(lines)


def _plot_name(version: str) -> str:
    return f"rolling_rank_ic_{version}.png"


def write_monitor_report(cfg: RaycastConfig, result: MonitorResult) -> fs.Location:
    """``report.md``, ``summary.json`` and one plot per version under ``<storage>/monitor/<newest logged date>/``."""
    newest = max(r.last_date for r in result.versions.values())
    out = fs.join(monitor_dir(cfg.storage), str(newest.date()))
    with fs.local_dir(out) as local:
        for v, r in result.versions.items():
            plot_rolling_rank_ic(r, cfg.monitor.window, local / _plot_name(v))
    summary = {
        v: {"counts": r.counts, "summary": r.summary, "rolling_rank_ic": r.latest("rank_ic_mean"),
            "rolling_rank_ic_band": [r.latest("rank_ic_lo"), r.latest("rank_ic_hi")],
            "evaluated_rank_ic": r.evaluated_rank_ic, "psi": r.psi.to_dict(), "checked": r.checked, "alerts": r.alerts, "last_date": str(r.last_date.date())}
        for v, r in result.versions.items()
    }  # fmt: skip
    fs.write_text(fs.join(out, "summary.json"), json.dumps(_plain(summary), indent=2))
    fs.write_text(fs.join(out, "report.md"), _markdown(result, cfg.monitor))
    result.report = fs.join(out, "report.md")
    return result.report


def _plain(value):
    """JSON-ready: numpy scalars as Python numbers, NaN as null (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def run_monitor(cfg: RaycastConfig, version: str | None = None) -> MonitorResult:
    """:func:`assess` and :func:`write_monitor_report`: what ``raycast monitor`` runs."""
    result = assess(cfg, version)
    write_monitor_report(cfg, result)
    return result
