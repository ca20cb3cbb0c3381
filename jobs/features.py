"""Ray job: build features with Ray Data. `ray job submit --working-dir . -- python jobs/features.py --config C`"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shipped working dir holds the package

from raycast.features.pipeline import build_features  # noqa: E402
from raycast.jobs import run_job  # noqa: E402

if __name__ == "__main__":
    run_job(__doc__, build_features)
