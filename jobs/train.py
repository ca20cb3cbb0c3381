"""Ray job: train, register and evaluate. `ray job submit --working-dir . -- python jobs/train.py --config C`"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shipped working dir holds the package

from raycast.config import RaycastConfig  # noqa: E402
from raycast.jobs import run_job  # noqa: E402


def train_and_evaluate(cfg: RaycastConfig) -> dict:
    from raycast.evaluate.evaluate import evaluate_version
    from raycast.train.run import train

    trained = train(cfg)
    return {"version": trained.version, "report": str(evaluate_version(cfg, trained.version))}


if __name__ == "__main__":
    run_job(__doc__, train_and_evaluate)
