"""Operations: cluster.yaml and configs validate, and a pipeline job runs through `ray job submit`."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from raycast.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_cluster_yaml_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(cfg)))
    assert cfg["docker"]["image"].startswith("rayproject/ray:2.60") and "py312" in cfg["docker"]["image"]
    # nothing but SSH is opened, and the dashboard binds to loopback only
    rules = cfg["provider"]["security_group"]["IpPermissions"]
    assert [(r["FromPort"], r["ToPort"]) for r in rules] == [(22, 22)]
    assert all(ip["CidrIp"] != "0.0.0.0/0" for r in rules for ip in r["IpRanges"])
    assert "--dashboard-host=127.0.0.1" in " ".join(cfg["head_start_ray_commands"])
    broken = copy.deepcopy(cfg)
    broken["available_node_types"]["gpu_worker"]["min_workerz"] = 1
    with pytest.raises(Exception, match="min_workerz"):
        validate_config(prepare_config(broken))


@pytest.mark.parametrize("name", ["demo", "synthetic-500", "gpu-cluster"])
def test_shipped_configs_validate(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg.name == name


def test_config_errors_name_the_key_and_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert "train.epochz" in str(err.value) and str(bad) in str(err.value)
    bad.write_text("train:\n  epochs: many\n")
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(bad)
    # command-line overrides win over the file
    good = tmp_path / "good.yaml"
    good.write_text("train:\n  epochs: 3\n")
    assert load_config(good, {"train.epochs": 7}).train.epochs == 7


def test_cli_help_for_every_subcommand():
    from typer.testing import CliRunner

    from raycast.cli import app

    runner = CliRunner()
    for cmd in (["--help"], ["ingest", "--help"], ["features", "--help"], ["train", "--help"], ["evaluate", "--help"],
                ["tune", "--help"], ["serve", "--help"], ["predict", "--help"], ["pipeline", "--help"],
                ["models", "list", "--help"], ["models", "show", "--help"]):  # fmt: skip
        result = runner.invoke(app, cmd)
        assert result.exit_code == 0 and "Usage" in result.output, cmd
    bad = runner.invoke(app, ["ingest", "--set", "ingest.sourze=sample"])
    assert bad.exit_code == 2 and "ingest.sourze" in bad.output


def test_every_job_entrypoint_explains_itself():
    """What `ray job submit -- python jobs/X.py --help` prints, and the daily job's files are a required argument."""
    for job in sorted((ROOT / "jobs").glob("*.py")):
        done = subprocess.run([sys.executable, str(job), "--help"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "--config" in done.stdout, (job.name, done.stderr[-2000:])
        assert "ray job submit" in done.stdout, job.name  # the docstring's example, kept as written
    daily = [sys.executable, str(ROOT / "jobs" / "daily.py"), "--config", str(ROOT / "configs" / "demo.yaml")]
    done = subprocess.run(daily, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "FILE" in done.stderr, done.stderr[-2000:]
    assert "FILE [FILE ...]" in subprocess.run([*daily, "--help"], capture_output=True, text=True).stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    """A real Ray head on 127.0.0.1 (its own temp dir, so the suite's local Ray never joins it)."""
    port, dash = _free_port(), _free_port()
    # Every agent port is chosen free too: the suite's own local Ray (started earlier in the same pytest run) already
    # holds the default agent ports, and a head whose job agent cannot bind them answers "No available agent".
    agent_ports = [f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
                   f"--runtime-env-agent-port={_free_port()}", f"--metrics-export-port={_free_port()}"]  # fmt: skip
    env = os.environ | {"PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    temp_dir = Path("/tmp") / f"raycast-head-{os.getpid()}"
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true", "--num-cpus=4",
           f"--temp-dir={temp_dir}", "--disable-usage-stats", *agent_ports]  # fmt: skip
    head = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 120
    while time.time() < deadline:
        ok = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=env, capture_output=True)
        if ok.returncode == 0:
            break
        time.sleep(2)
    else:
        os.killpg(head.pid, signal.SIGKILL)
        pytest.fail("the Ray head did not come up within 120 s")
    yield address, env
    # Stop this head only, by its process group; never `ray stop`. `ray start --block` does not exit on SIGTERM
    # within 30 s (it is still running when the wait ends), so the grace period is short.
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(10)


@pytest.mark.slow
def test_pipeline_job_submitted_to_a_ray_head(ray_head, tmp_path):
    address, env = ray_head
    storage = tmp_path / "store"
    sets = [
        f"storage={storage}", "ray.address=auto", "ingest.source=synthetic", "ingest.synthetic.n_symbols=8",
        "ingest.synthetic.n_days=300", "features.symbols_per_task=4", "train.models=[cnn]", "train.epochs=1",
        "train.max_steps_per_epoch=5", "train.concurrent=false", "train.ensemble_epochs=2",
        # a two-trial search of the CNN before training: the train stage must train the winner's parameters
        "pipeline.stages=[ingest,features,tune,train,evaluate]", "tune.model=cnn", "tune.num_samples=2",
        "tune.max_epochs=2", "tune.seeds=1", "tune.cpus_per_trial=1",
    ]  # fmt: skip
    runtime_env = json.dumps({"excludes": [".venv", ".git", ".raycast", "runs", ".gpu", ".site"]})
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(ROOT),
           "--runtime-env-json", runtime_env, "--", "python", "jobs/pipeline.py", "--config", "configs/demo.yaml"]
    for s in sets:
        cmd += ["--set", s]
    for _ in range(10):  # the head answers `ray job list` a little before its job agent takes submissions
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent" not in done.stderr + done.stdout:
            break
        time.sleep(5)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    printed = done.stdout + done.stderr
    assert "succeeded" in printed.lower()
    # the job's log reads as raycast's: one progress line per epoch and per trial, while the Train controller's
    # lines (forwarded from its actor) are in the log file the job names, not in the job's output
    assert len(re.findall(r"\[raycast\] cnn\s+epoch 1/1 ", printed)) == 1, printed[-3000:]
    assert len(re.findall(r"\[raycast\] tune\s+\d/2 trials", printed)) == 2, printed[-3000:]
    assert "TrainController" not in printed and "TrainingReport" not in printed, printed[-3000:]
    (log,) = re.findall(r"\[raycast\] Ray's own log: (\S+)", printed)
    assert Path(log).parent == storage / "logs" and "TrainController" in Path(log).read_text()
    # the job's outputs: a feature dataset, a registry entry and a report
    from raycast.features.store import current_features_dir, load_meta
    from raycast.registry import list_versions

    assert len(load_meta(current_features_dir(str(storage))).features) == 40
    versions = list_versions(str(storage))
    assert len(versions) == 1 and versions[0]["members"] == ["cnn"]
    report = Path(versions[0]["metrics"]["report"])
    assert report.is_file() and "IC" in report.read_text()
    (best_file,) = (storage / "tune").glob("cnn-*/best_config.yaml")
    best = load_config(best_file)
    assert versions[0]["models"]["cnn"] == best.models.cnn.model_dump(mode="json")
    assert (versions[0]["train"]["lr"], versions[0]["train"]["batch_size"]) == (best.train.lr, best.train.batch_size)
    assert versions[0]["train"]["epochs"] == 1  # the pipeline's own epochs, not the trials' max_epochs


def test_ray_train_polls_its_workers_at_raycasts_interval(ray_session):
    """Ray Train's controller runs in a Ray worker: the poll interval raycast sets must be what a worker sees."""
    from raycast.config import RayConfig
    from raycast.runtime import TRAIN_POLL_ENV

    @ray_session.remote(num_cpus=0.1)
    def seen() -> str | None:
        return os.environ.get(TRAIN_POLL_ENV)

    assert float(ray_session.get(seen.remote())) == RayConfig().train_poll_interval_s < 2.0


def test_a_data_error_inside_a_ray_task_reaches_the_cli_as_one_line(ray_session, capsys):
    """The user sees the data's message, not the worker's traceback that Ray wraps around it."""
    import typer

    from raycast.cli import _run
    from raycast.data.errors import DataError

    @ray_session.remote(num_cpus=0.25)
    def featurize():
        raise DataError("BRK.B: 12 bars, the features need 92")

    with pytest.raises(typer.Exit):
        _run(lambda: ray_session.get(featurize.remote()))
    assert capsys.readouterr().err == "error: BRK.B: 12 bars, the features need 92\n"
