"""Connecting to Ray: a local instance sized from the config, or a running cluster."""

from __future__ import annotations

import os

from raycast.config import RayConfig

TRAIN_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"  # read by Ray Train's controller where it runs


def slots_leaving_a_cpu(per_slot: float) -> tuple[int, float]:
    """How many holders of ``per_slot`` CPUs fit at once (at least 1) with one CPU left over, and the cluster's CPUs.

    Trainers hold their workers' CPUs for their whole run while their Ray Data shards still need a whole CPU per
    read task: with less than one left over, every trainer waits for data that never comes.
    """
    import ray

    cpus = ray.cluster_resources().get("CPU", 1.0)
    return max(1, int((cpus - 1) // per_slot)), cpus


def init_ray(cfg: RayConfig | None = None) -> None:
    """Start or join Ray once per process. Inside ``ray job submit`` the job's cluster is joined.

    Where Ray's own output goes (a log file, or the console with ``--verbose``): :mod:`raycast.console.logs`.
    """
    import ray
    import ray.data

    from raycast.console import logs

    cfg = cfg or RayConfig()
    logs.capture_ray_output()  # before ray.init for what it logs itself; again for loggers Ray created since
    if ray.is_initialized():
        ray.data.DataContext.get_current().enable_progress_bars = cfg.data_progress_bars
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    # Ray's INFO lines only when they go to the log file, not to the console
    kwargs: dict = {"include_dashboard": False, "logging_level": "INFO" if logs.quiet() else "WARNING"}
    if address is None:
        if cfg.num_cpus is not None:
            kwargs["num_cpus"] = cfg.num_cpus
        # The local Ray's processes inherit this process's environment. A trainer's fit() only returns at the
        # controller's next poll of its workers: Ray's 2 s default cost ~2.4 s per fit (measured, no-op loop).
        os.environ.setdefault(TRAIN_POLL_ENV, str(cfg.train_poll_interval_s))
    ray.init(address=address, **kwargs)
    logs.capture_ray_output()  # the driver's printer of worker output exists from here on
    ray.data.DataContext.get_current().enable_progress_bars = cfg.data_progress_bars
