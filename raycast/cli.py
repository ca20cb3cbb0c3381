"""The ``raycast`` command: one subcommand per stage, each reading a YAML config.

Options given on the command line override the config file; ``--set section.key=value`` overrides any key.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from raycast import credentials, fs
from raycast.config import ConfigError, RaycastConfig, load_config, parse_overrides

app = typer.Typer(help="Train and serve next-day-return models over many tickers on Ray.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry.", no_args_is_help=True)
app.add_typer(models_app, name="models")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file (defaults apply without one).")]
StorageOpt = Annotated[str | None, typer.Option(help="Storage location for data, runs and the registry.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override any key: --set train.epochs=3 (repeatable).")]


_console = {"verbose": False, "command": "raycast"}  # set by the options before the command, read by _load


@app.callback()
def _options(
    ctx: typer.Context,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show Ray's own output on the console (else only in the log file).")
    ] = False,
) -> None:
    """Train and serve next-day-return models over many tickers on Ray."""
    _console.update(verbose=verbose, command=ctx.invoked_subcommand or "raycast")


def _load(config: Path | None, sets: list[str] | None, **overrides: Any) -> RaycastConfig:
    from raycast.console import logs

    try:
        # an option left unset (None) must not erase a --set of the same key
        given = {key: value for key, value in overrides.items() if value is not None}
        cfg = load_config(config, {**parse_overrides(sets), **given})
    except ConfigError as err:
        _fail(str(err))
    # Ray's output goes to <storage>/logs/<time>-<command>.log once Ray starts (see raycast.console.logs)
    logs.configure(cfg.storage, _console["command"], _console["verbose"])
    return cfg


def _fail(message: str) -> None:
    typer.echo(f"error: {credentials.redact(message)}", err=True)
    raise typer.Exit(2)


def _print(data: Any) -> None:
    typer.echo(credentials.redact(json.dumps(data, indent=2, default=str)))


def _run(fn, *args):
    """Run a stage, turning the errors users cause (bad data, missing inputs) into one clear line."""
    from raycast.data.errors import DataError

    try:
        return fn(*args)
    except (DataError, FileNotFoundError, ValueError) as err:
        _fail(str(_cause(err)))


def _cause(err: BaseException) -> BaseException:
    """The user's error behind a Ray task's (whose text is a worker traceback): what ``_run`` prints."""
    from ray.exceptions import RayTaskError

    while isinstance(err, RayTaskError) and err.cause is not None and err.cause is not err:
        err = err.cause
    return err


@app.command()
def ingest(
    config: ConfigOpt = None,
    storage: StorageOpt = None,
    source: Annotated[str | None, typer.Option(help="synthetic, sample or files.")] = None,
    path: Annotated[str | None, typer.Option(help="The user's file or directory (source 'files').")] = None,
    symbols: Annotated[int | None, typer.Option(help="Synthetic: number of symbols.")] = None,
    days: Annotated[int | None, typer.Option(help="Synthetic: business days of history.")] = None,
    signal_strength: Annotated[float | None, typer.Option(help="Synthetic: planted oracle IC (0 = nothing to predict).")] = None,
    append: Annotated[
        str | None, typer.Option(help="Add this file's (or per-symbol directory's) bars to the current version.")
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Load market data, validate it and write the Parquet dataset partitioned by symbol."""
    from raycast.data.ingest import append_bars, ingest as run_ingest

    if append is not None:
        _print(_run(append_bars, _load(config, set_, storage=storage), append))
        return
    cfg = _load(config, set_, storage=storage, **{
        "ingest.source": source, "ingest.files.path": path, "ingest.synthetic.n_symbols": symbols,
        "ingest.synthetic.n_days": days, "ingest.synthetic.signal_strength": signal_strength,
    })  # fmt: skip
    manifest = _run(run_ingest, cfg)
    summary = {k: manifest[k] for k in ("sources", "n_symbols", "date_min", "date_max", "rows", "rejected", "rejected_total")}
    if manifest.get("synthetic"):
        summary["oracle_ic"] = manifest["synthetic"].get("oracle_ic")
    _print(summary)


@app.command()
def features(
    config: ConfigOpt = None,
    storage: StorageOpt = None,
    incremental: Annotated[
        bool, typer.Option(help="Compute only what new market bars change; keep the previous split and normalization.")
    ] = False,
    set_: SetOpt = None,
) -> None:
    """Compute the 40 features per day with Ray Data and fit normalization on the training period."""
    from raycast.features.incremental import update_features
    from raycast.features.pipeline import build_features

    _print(_run(update_features if incremental else build_features, _load(config, set_, storage=storage)))


@app.command()
def train(
    config: ConfigOpt = None,
    storage: StorageOpt = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per base model.")] = None,
    workers: Annotated[int | None, typer.Option(help="Ray Train workers per model (DDP when > 1).")] = None,
    gpu: Annotated[bool | None, typer.Option("--gpu/--cpu", help="Train on CUDA workers.")] = None,
    evaluate: Annotated[bool, typer.Option(help="Evaluate and write the report after training.")] = True,
    profile: Annotated[bool, typer.Option(help="Print where the stage's seconds and the workers' memory went (also in the run's timeline.json).")] = False,
    set_: SetOpt = None,
) -> None:
    """Fit the base models with Ray Train, then the ensemble; register the result."""
    from raycast.train.run import train as run_train

    cfg = _load(config, set_, storage=storage, **{"train.epochs": epochs, "train.num_workers": workers, "train.use_gpu": gpu})
    trained = _run(run_train, cfg)
    if profile:
        typer.echo(trained.timeline.table())
    out = {"run_id": trained.run_id, "version": trained.version, "run_dir": fs.display(trained.run_dir)}
    if evaluate:
        from raycast.evaluate.evaluate import evaluate_version

        out["report"] = str(_run(evaluate_version, cfg, trained.version))
    _print(out)


@app.command()
def evaluate(
    config: ConfigOpt = None,
    storage: StorageOpt = None,
    version: Annotated[
        str | None, typer.Option(help="Score this registered version on its own split (implies --split).")
    ] = None,
    walk_forward: Annotated[
        int | None, typer.Option(help="Walk-forward folds (the default mode): retrain and score each.")
    ] = None,
    split: Annotated[
        bool, typer.Option("--split", help="Score the newest registered model on its split instead.")
    ] = False,
    set_: SetOpt = None,
) -> None:
    """Metrics, baselines, costs and backtest on tradable rows: walk-forward folds by default, or one model's split."""
    from raycast.evaluate.evaluate import evaluate_version, evaluate_walk_forward

    if walk_forward is not None and (split or version):
        _fail("--walk-forward retrains on folds; it cannot be combined with --split or --version")
    mode = "split" if split or version else ("walk_forward" if walk_forward else None)
    cfg = _load(config, set_, storage=storage, **{"evaluate.mode": mode, "evaluate.folds": walk_forward})
    if cfg.evaluate.mode == "walk_forward":
        from raycast.evaluate.walk_forward import format_folds

        table, report = _run(evaluate_walk_forward, cfg)
        typer.echo(f"{format_folds(table)}\nreport: {fs.display(report)}")
    else:
        typer.echo(f"report: {fs.display(_run(evaluate_version, cfg, version))}")


@app.command()
def tune(
    config: ConfigOpt = None,
    storage: StorageOpt = None,
    model: Annotated[str | None, typer.Option(help="lstm, cnn, attention or ensemble.")] = None,
    samples: Annotated[int | None, typer.Option(help="Number of trials.")] = None,
    resume: Annotated[str | None, typer.Option(help="Path of an interrupted search to continue.")] = None,
    set_: SetOpt = None,
) -> None:
    """Search a model's hyperparameters with Ray Tune (ASHA); writes the best config as YAML."""
    from raycast.tune.search import run_search

    cfg = _load(config, set_, storage=storage, **{"tune.model": model, "tune.num_samples": samples})
    _print(_run(run_search, cfg, resume))


@app.command()
def serve(
    config: ConfigOpt = None,
    storage: StorageOpt = None,
    version: Annotated[str | None, typer.Option(help="Registry version (default: the newest).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port.")] = None,
    set_: SetOpt = None,
) -> None:
    """Serve the ensemble over HTTP with Ray Serve until Ctrl-C."""
    from raycast.serve.run import serve_forever

    cfg = _load(config, set_, storage=storage, **{"serve.version": version, "serve.port": port})
    _run(serve_forever, cfg)


@app.command()
def predict(
    config: ConfigOpt = None,
    storage: StorageOpt = None,
    date: Annotated[str | None, typer.Option(help="Date to score (default: the latest).")] = None,
    end_date: Annotated[str | None, typer.Option(help="Score every date from --date to this one.")] = None,
    version: Annotated[str | None, typer.Option(help="Registry version (default: the newest).")] = None,
    output: Annotated[str | None, typer.Option(help="Parquet file to write.")] = None,
    set_: SetOpt = None,
) -> None:
    """Score the whole universe offline with Ray Data and write a Parquet signal file."""
    from raycast.serve.offline import predict_universe

    cfg = _load(config, set_, storage=storage, **{"serve.version": version})
    _print(_run(predict_universe, cfg, date, end_date, output))


@app.command()
def monitor(
    config: ConfigOpt = None,
    storage: StorageOpt = None,
    version: Annotated[str | None, typer.Option(help="Only this model version (default: every logged one).")] = None,
    window: Annotated[int | None, typer.Option(help="Dates in the rolling IC and the drift check.")] = None,
    set_: SetOpt = None,
) -> None:
    """Realized IC, hit rate and feature drift of the logged predictions; exits 1 when a decay rule fires."""
    from raycast.evaluate.monitor import format_table, run_monitor

    cfg = _load(config, set_, storage=storage, **{"monitor.window": window})
    result = _run(run_monitor, cfg, version)
    typer.echo(f"{format_table(result)}\nreport: {fs.display(result.report)}")
    if result.alerts:
        typer.echo("\n".join(f"ALERT {a}" for a in result.alerts), err=True)
        raise typer.Exit(1)


@app.command()
def daily(
    files: Annotated[list[str], typer.Argument(help="The day's new bars: file(s) or per-symbol directories.")],
    config: ConfigOpt = None,
    storage: StorageOpt = None,
    retrain: Annotated[
        bool | None, typer.Option("--retrain/--no-retrain", help="Retrain a candidate when a decay rule fires.")
    ] = None,
    set_: SetOpt = None,
) -> None:
    """The trading day: append, incremental features, score the new dates, monitor; on decay retrain a candidate
    and roll it out only if it beats the served version out of sample."""
    from raycast.daily import run_daily

    cfg = _load(config, set_, storage=storage, **{"daily.retrain_on_decay": retrain})
    summary = _run(run_daily, cfg, files)
    typer.echo(f"summary: {summary['summary_file']}")


@app.command()
def pipeline(config: ConfigOpt = None, storage: StorageOpt = None, set_: SetOpt = None) -> None:
    """Ingest, features, train, evaluate (and tune if configured) in one go."""
    from raycast.pipeline import run_pipeline

    _print(_run(run_pipeline, _load(config, set_, storage=storage)))


@models_app.command("list")
def models_list(config: ConfigOpt = None, storage: StorageOpt = None) -> None:
    """List registered model versions, oldest first."""
    from raycast.registry import list_versions

    cfg = _load(config, None, storage=storage)
    rows = list_versions(cfg.storage)
    if not rows:
        typer.echo(f"no models registered in {fs.display(cfg.storage)}")
    for spec in rows:
        test = (spec.get("metrics") or {}).get("test", {}).get("ensemble", {})
        ic = f"test IC {test['ic']:+.4f}" if "ic" in test else "not evaluated"
        typer.echo(f"{spec['version']}  {spec['created']}  {'+'.join(spec['members'])}  {ic}")


@models_app.command("show")
def models_show(version: str, config: ConfigOpt = None, storage: StorageOpt = None) -> None:
    """Show one registered version: hyperparameters, features, data range, metrics."""
    from raycast.registry import load_spec

    cfg = _load(config, None, storage=storage)
    _print(_run(load_spec, cfg.storage, version))


def main() -> None:  # pragma: no cover - console entry point
    app(sys.argv[1:])
