"""Ray job: hyperparameter search with Ray Tune. `ray job submit --working-dir . -- python jobs/tune.py --config C`"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shipped working dir holds the package

from raycast.jobs import run_job  # noqa: E402
from raycast.tune.search import run_search  # noqa: E402

if __name__ == "__main__":
    run_job(__doc__, lambda cfg: run_search(cfg, None))
