"""What every ``jobs/*.py`` entrypoint shares: ``--config`` and ``--set`` parsing, then joining Ray."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from raycast import credentials
from raycast.config import ConfigError, RaycastConfig, load_config, parse_overrides


def run_job(description: str, stage: Callable[[RaycastConfig], object], argv: list[str] | None = None) -> None:
    """Parse ``--config PATH [--set key=value ...]``, join the job's Ray cluster, run ``stage``, print its result."""
    from raycast.console import logs
    from raycast.runtime import init_ray

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", "-c", required=True, help="YAML config (see configs/)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--verbose", "-v", action="store_true", help="show Ray's own output in the job's log too")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, parse_overrides(args.set))
    except ConfigError as err:
        sys.exit(f"error: {credentials.redact(str(err))}")
    logs.configure(cfg.storage, parser.prog.removesuffix(".py"), args.verbose)
    init_ray(cfg.ray)
    print(credentials.redact(json.dumps(stage(cfg), indent=2, default=str)), flush=True)
