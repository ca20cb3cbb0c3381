"""What an operator sees: Ray's own output in a log file, raycast's progress on the console, ``-v`` for everything.

The commands run as a user runs them (a ``raycast`` process whose stdout is not a terminal), each starting its own
local Ray.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import small_config

from raycast.config import dump_config
from raycast.console import progress

BIN = Path(sys.executable).parent
RAY_DATA_PLAN = "Execution plan of Dataset"  # Ray Data's INFO line on the driver, printed at every execution


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
    """A config file whose storage holds a small synthetic market dataset (no features yet)."""
    from raycast.data.ingest import ingest

    tmp = tmp_path_factory.mktemp("console")
    cfg = small_config(tmp)
    ingest(cfg)
    path = tmp / "config.yaml"
    dump_config(cfg, path)
    return path


def _raycast(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray of its own
    done = subprocess.run([str(BIN / "raycast"), *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.mark.slow
def test_ray_output_goes_to_the_log_file_and_verbose_brings_it_back(ingested):
    quiet = _raycast("features", "--config", str(ingested))
    assert RAY_DATA_PLAN not in quiet, quiet
    (path,) = re.findall(r"^\[raycast\] Ray's own log: (\S+)", quiet, flags=re.M)  # printed once
    log = Path(path)
    assert log.parent == ingested.parent / "store" / "logs"
    assert RAY_DATA_PLAN in log.read_text()
    # the progress the workers reported: symbols done out of the 12, the last line all of them
    counts = re.findall(r"^\[raycast\] features\s+(\d+)/12 symbols", quiet, flags=re.M)
    assert counts and counts[-1] == "12" and [int(c) for c in counts] == sorted(int(c) for c in counts), quiet

    verbose = _raycast("-v", "features", "--config", str(ingested))
    assert RAY_DATA_PLAN in verbose and "Ray's own log" not in verbose, verbose


def test_plain_lines_count_each_quarter_of_the_symbols(capsys):
    with progress.session() as shown:
        shown.update("features", kind="features", label="features", total=10, done=0)
        for _ in range(10):
            shown.update("features", kind="features", advance=1)
    lines = capsys.readouterr().out.splitlines()
    assert [re.search(r"(\d+)/10 symbols", ln).group(1) for ln in lines] == ["3", "6", "9", "10"], lines


def test_a_session_inside_a_session_is_the_same_one():
    with progress.session() as outer, progress.session() as inner:
        assert inner is outer and progress.current() is outer
    assert progress.current() is None
