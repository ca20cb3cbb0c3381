"""Ray job: the trading day's cycle (raycast.daily): append the day's bars, incremental features, score the new
dates, monitor; on decay retrain a candidate and roll it out only if it beats the served version.

    ray job submit --working-dir . -- python jobs/daily.py --config configs/gpu-cluster.yaml /data/bars/2026-12-03.csv
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shipped working dir holds the package

from raycast.config import RaycastConfig  # noqa: E402
from raycast.jobs import run_job  # noqa: E402


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the bars files, the options run_job parses)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("files", nargs="*")
    parser.add_argument("--config", "-c")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--verbose", "-v", action="store_true")
    args, _ = parser.parse_known_intermixed_args(argv)
    options = (["--config", args.config] if args.config else []) + [x for s in args.set for x in ("--set", s)]
    return args.files, options + (["--verbose"] if args.verbose else []) + (["--help"] if "--help" in argv else [])


if __name__ == "__main__":
    from raycast.daily import run_daily

    files, options = split_argv(sys.argv[1:])

    def daily(cfg: RaycastConfig) -> dict:
        return run_daily(cfg, files)

    run_job(__doc__, daily, options)
