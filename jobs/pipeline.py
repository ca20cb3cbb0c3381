"""Ray job: the whole pipeline (cfg.pipeline.stages).

    ray job submit --working-dir . -- python jobs/pipeline.py --config configs/synthetic-500.yaml
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shipped working dir holds the package

from raycast.jobs import run_job  # noqa: E402
from raycast.pipeline import run_pipeline  # noqa: E402

if __name__ == "__main__":
    run_job(__doc__, run_pipeline)
