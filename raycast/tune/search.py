"""``raycast tune``: a Ray Tune search over one model's hyperparameters, then the winner re-run with fresh seeds.

Everything lands in ``<storage>/tune/<model>-<time>/``: ``config.yaml`` (the search's own config, which
``--resume`` reads back), the Tune experiments ``search/`` and ``seeds/``, ``results.csv`` (every trial),
``results.md`` (top-k and seed table, also printed), ``best_config.yaml`` (a full config for
``raycast train --config``) and ``summary.json``. An interrupted search resumes with ``Tuner.restore``: finished
trials are kept as they are, unfinished ones continue from their last epoch checkpoint.

With walk-forward folds (``features.walk_forward.folds`` > 0) a base-model trial's score is its mean over the
folds. The ensemble head is tuned on the newest registered version's bases, on that version's validation period.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid

from raycast import credentials, fs
from raycast.config import RaycastConfig, dump_config, load_config
from raycast.tune.report import format_report, seeds_summary, trials_frame
from raycast.tune.space import apply_params, resolve_search_space, to_tune_space

CONFIG_FILE = "config.yaml"
SEARCH, SEEDS = "search", "seeds"


def search_config(cfg: RaycastConfig) -> RaycastConfig:
    """The config trials start from: the user's, trained for ``tune.max_epochs`` epochs."""
    epochs_key = "ensemble_epochs" if cfg.tune.model == "ensemble" else "epochs"
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={epochs_key: cfg.tune.max_epochs})})


def new_search_dir(cfg: RaycastConfig) -> fs.Location:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    path = fs.join(fs.absolute(cfg.storage), "tune", f"{cfg.tune.model}-{stamp}-{uuid.uuid4().hex[:4]}")
    fs.makedirs(path)
    return path


def resolve_resume(path: str) -> fs.Location:
    """The search directory of ``path`` (the directory itself or its ``search/`` experiment)."""
    p = fs.absolute(path)
    for candidate in (p, fs.parent(p)):
        if fs.is_file(fs.join(candidate, CONFIG_FILE)) and fs.is_dir(fs.join(candidate, SEARCH)):
            return candidate
    raise FileNotFoundError(
        f"{fs.display(path)} is not a raycast tune directory (no {CONFIG_FILE} and {SEARCH}/ in it)"
    )


def build_trainable(cfg: RaycastConfig, out_dir: fs.Location):
    """The trial function with its data attached (object store) and its per-trial resources."""
    from ray import tune

    from raycast.tune import trainable as fns

    data = cfg.model_dump(mode="json")
    tu = cfg.tune
    if tu.model == "ensemble":
        from raycast.tune.data import load_head_data

        fn = tune.with_parameters(fns.ensemble_trial, cfg_data=data, head=load_head_data(cfg))
    elif tu.trainer == "torch":
        from raycast.features.store import current_features_dir
        from raycast.tune.data import load_base_data
        from raycast.tune.torch_trial import DRIVER_CPUS, torch_trial

        _, folds, window = load_base_data(cfg)
        fn = tune.with_parameters(
            torch_trial, cfg_data=data, folds=folds, window=window,
            features_dir=str(current_features_dir(cfg.storage)), storage_path=str(fs.join(out_dir, "train_runs")),
        )  # fmt: skip
        return tune.with_resources(fn, {"cpu": DRIVER_CPUS})  # the workers ask for cpus/gpus_per_trial
    else:
        from raycast.tune.data import load_base_data

        frame, folds, window = load_base_data(cfg)
        fn = tune.with_parameters(fns.base_trial, cfg_data=data, folds=folds, frame=frame, window=window)
    return tune.with_resources(fn, {"cpu": tu.cpus_per_trial, "gpu": tu.gpus_per_trial})


def build_tuner(
    trainable, cfg: RaycastConfig, out_dir: fs.Location, name: str, param_space: dict, searching: bool,
    verbose: int | None = None,
):  # fmt: skip
    """A Tuner for experiment ``out_dir/name``: restored when it exists, else new (ASHA and the search
    algorithm only when ``searching``; the seed re-runs are a plain grid).

    ``verbose`` is Tune's own console output: by default its trial table only when Ray's output is on the console
    (``--verbose``); raycast's progress display (:class:`~raycast.console.tune_callbacks.TuneProgress`) shows the trials
    either way.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    from raycast.console import logs
    from raycast.console.tune_callbacks import TuneProgress

    tu = cfg.tune
    verbose = (0 if logs.quiet() else 1) if verbose is None else verbose
    experiment = fs.ray_storage(fs.join(out_dir, name))
    path, filesystem = experiment["storage_path"], experiment.get("storage_filesystem")
    if tune.Tuner.can_restore(path, storage_filesystem=filesystem):
        return tune.Tuner.restore(path, trainable, resume_errored=True, storage_filesystem=filesystem)
    mode = "min" if tu.metric == "val_loss" else "max"
    asha = searching and tu.scheduler == "asha"
    label, noun, trials = ("tune", "trials", tu.num_samples) if searching else ("seeds", "seed runs", tu.seeds)
    shown = TuneProgress(f"tune {name}", label, noun, trials, tu.max_epochs, tu.metric, mode, asha)
    if asha:
        scheduler = ASHAScheduler(
            max_t=tu.max_epochs, grace_period=min(tu.grace_period, tu.max_epochs), reduction_factor=tu.reduction_factor
        )
    else:
        scheduler = FIFOScheduler()
    limit = max_concurrent_trials(cfg)
    if searching and tu.search_alg == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(seed=cfg.train.seed)  # Tune wraps it in a ConcurrencyLimiter
    else:
        # Tune ignores TuneConfig.max_concurrent_trials for a generator passed in: it takes the limit itself.
        search_alg, limit = BasicVariantGenerator(random_state=cfg.train.seed, max_concurrent=limit or 0), None
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric="score",
            mode=mode,
            num_samples=tu.num_samples if searching else 1,
            scheduler=scheduler,
            search_alg=search_alg,
            max_concurrent_trials=limit,
            # A new trial reuses a finished trial's actor: no process start and imports per trial.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            **fs.ray_storage(out_dir),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=verbose,  # 1: Tune's progress table of trials, their params and latest metrics
            callbacks=[shown],
        ),
    )


def max_concurrent_trials(cfg: RaycastConfig) -> int | None:
    """``tune.max_concurrent_trials``, capped in torch mode so that Ray Data keeps a whole CPU
    (see :func:`raycast.runtime.slots_leaving_a_cpu`)."""
    from raycast.runtime import slots_leaving_a_cpu
    from raycast.tune.torch_trial import DRIVER_CPUS

    tu = cfg.tune
    if tu.trainer != "torch" or tu.model == "ensemble":
        return tu.max_concurrent_trials
    per_trial = DRIVER_CPUS + max(cfg.features.walk_forward.folds, 1) * cfg.train.num_workers * tu.cpus_per_trial
    fit, cpus = slots_leaving_a_cpu(per_trial)
    if per_trial > cpus - 1:
        print(
            f"[raycast] warning: a torch-mode trial takes {per_trial:g} of {cpus:g} CPUs, leaving less than one "
            "to read its data; lower tune.cpus_per_trial (per worker) or train.num_workers",
            file=sys.stderr,
            flush=True,
        )
    return min(fit, tu.max_concurrent_trials or fit)


def run_search(cfg: RaycastConfig, resume: str | None = None, print_table: bool = True) -> dict:
    """Search ``cfg.tune.model``'s space, re-run the best config with ``cfg.tune.seeds`` seeds, write the outputs.

    ``resume`` is the directory of an interrupted search; its own ``config.yaml`` is used, not ``cfg``. The
    results table (``results.md``) is printed too unless ``print_table`` is False.
    Returns a summary: paths, best params and score, the seeds' mean and std, trial counts.
    """
    from ray import tune

    from raycast.console import logs, progress
    from raycast.runtime import init_ray

    out_dir = resolve_resume(resume) if resume else None
    if out_dir is not None:
        saved = load_config(fs.join(out_dir, CONFIG_FILE))
        # The saved storage URI has no credentials: take those of the path given, else of the caller's storage.
        storage = credentials.borrow_credentials(saved.storage, str(resume))
        cfg = saved.model_copy(update={"storage": credentials.borrow_credentials(storage, cfg.storage)})
    space = resolve_search_space(cfg)  # before Ray starts: a bad entry fails fast, naming its key
    base = search_config(cfg)
    if out_dir is None:
        out_dir = new_search_dir(cfg)
        dump_config(cfg, fs.join(out_dir, CONFIG_FILE))
    init_ray(cfg.ray)
    tu = cfg.tune
    mode = "min" if tu.metric == "val_loss" else "max"
    plan = f"{tu.num_samples} trials, {tu.scheduler}/{tu.search_alg}, {mode} {tu.metric}"
    print(f"[raycast] tune {tu.model}: {plan} -> {fs.display(out_dir)}", flush=True)

    trainable = build_trainable(base, out_dir)
    with progress.session(), logs.ray_prints("tune"):
        results = build_tuner(trainable, base, out_dir, SEARCH, to_tune_space(space), searching=True).fit()
    _check_complete(results, tu.num_samples, out_dir)
    trials = trials_frame(results, list(space), mode)
    ok = trials[trials["status"] == "ok"].dropna(subset=["score"])
    if ok.empty:
        raise RuntimeError(
            f"no trial of {fs.display(fs.join(out_dir, SEARCH))} finished with a score; see the trial errors there"
        )
    best_params = {k: _plain(results.get_best_result(scope="last").config[k]) for k in space}

    seeds = [base.train.seed + 1 + i for i in range(tu.seeds)]  # fresh seeds: the winner's own is luckiest
    seed_space = best_params | {"seed": tune.grid_search(seeds)}
    with progress.session(), logs.ray_prints("tune"):
        seed_results = build_tuner(trainable, base, out_dir, SEEDS, seed_space, searching=False).fit()
    _check_complete(seed_results, tu.seeds, out_dir)
    seed_trials = trials_frame(seed_results, ["seed"], mode).sort_values("seed")
    summary = seeds_summary(seed_trials)

    best_cfg = apply_params(base, tu.model, best_params)
    dump_config(best_cfg, fs.join(out_dir, "best_config.yaml"))
    fs.write_text(fs.join(out_dir, "results.csv"), trials.to_csv(index=False))
    fs.write_text(fs.join(out_dir, "seeds.csv"), seed_trials.to_csv(index=False))
    title = f"raycast tune {tu.model}: {tu.metric} ({mode}), {tu.scheduler}, {tu.search_alg}"
    table = format_report(title, trials, tu.top_k, seed_trials, summary)
    fs.write_text(fs.join(out_dir, "results.md"), table)
    if print_table:
        print(table, flush=True)
    out = {
        "dir": fs.display(out_dir),
        "best_config": fs.display(fs.join(out_dir, "best_config.yaml")),
        "best_params": best_params,
        "best_score": float(ok["score"].iloc[0]),
        "metric": tu.metric,
        "seeds": {"seeds": seeds, **summary["score"]},
        "trials": len(trials),
        "errored": int((trials["status"] == "error").sum()),
        "stopped_early": int((ok["epochs"] < tu.max_epochs).sum()),
    }
    fs.write_text(fs.join(out_dir, "summary.json"), json.dumps(out, indent=2))
    return out


class SearchInterrupted(KeyboardInterrupt):
    """The search stopped before every trial finished (Ctrl-C); its state is saved for ``--resume``."""


def _check_complete(results, expected: int, out_dir: fs.Location) -> None:
    # Ctrl-C makes Tuner.fit() save its state and return early: stop like a KeyboardInterrupt, with the way
    # to continue, instead of reporting on a partial search.
    finished = results.num_terminated + results.num_errors
    if len(results) < expected or finished < len(results):
        hint = (
            f"tune search interrupted ({finished} of {expected} trials finished); "
            f"continue with: raycast tune --resume {fs.display(out_dir)}"
        )
        print(f"[raycast] {hint}", file=sys.stderr, flush=True)
        raise SearchInterrupted(hint)


def _plain(value):
    # numpy scalars from Tune's samplers -> plain Python, so the YAML and JSON stay readable
    return value.item() if hasattr(value, "item") else value
