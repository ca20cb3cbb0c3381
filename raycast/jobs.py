"""What every ``jobs/*.py`` entrypoint shares: ``--config`` and ``--set`` parsing, then joining Ray."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from raycast import credentials
from raycast.config import ConfigError, RaycastConfig, load_config, parse_overrides


def run_job(
    description: str, stage: Callable[..., object], argv: list[str] | None = None, files: str | None = None
) -> None:
    """Parse ``--config PATH [--set key=value ...]``, join the job's Ray cluster, run ``stage``, print its result.

    With ``files`` (their help text) the job also takes one or more file arguments, and ``stage`` is called as
    ``stage(cfg, files)``.
    """
    from raycast.console import logs
    from raycast.runtime import init_ray

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "-c", required=True, help="YAML config (see configs/)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--verbose", "-v", action="store_true", help="show Ray's own output in the job's log too")
    if files is not None:
        parser.add_argument("files", nargs="+", metavar="FILE", help=files)
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = load_config(args.config, parse_overrides(args.set))
    except ConfigError as err:
        sys.exit(f"error: {credentials.redact(str(err))}")
    logs.configure(cfg.storage, parser.prog.removesuffix(".py"), args.verbose)
    init_ray(cfg.ray)
    result = stage(cfg, args.files) if files is not None else stage(cfg)
    print(credentials.redact(json.dumps(result, indent=2, default=str)), flush=True)
