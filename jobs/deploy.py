"""Ray job: deploy the registered ensemble with Ray Serve (the app outlives the job).

    ray job submit --working-dir . -- python jobs/deploy.py --config configs/gpu-cluster.yaml
(`serve deploy serve_config.yaml` does the same from the Serve config file.)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shipped working dir holds the package

from raycast.config import RaycastConfig  # noqa: E402
from raycast.jobs import run_job  # noqa: E402


def deploy(cfg: RaycastConfig) -> dict:
    from raycast.registry import resolve_version
    from raycast.serve.run import start_app

    start_app(cfg)
    return {"version": resolve_version(cfg.storage, cfg.serve.version), "url": f"http://{cfg.serve.host}:{cfg.serve.port}/v1"}


if __name__ == "__main__":
    run_job(__doc__, deploy)
