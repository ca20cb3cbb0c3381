"""Ray job: ingest market data. `ray job submit --working-dir . -- python jobs/ingest.py --config configs/demo.yaml`"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shipped working dir holds the package

from raycast.data.ingest import ingest  # noqa: E402
from raycast.jobs import run_job  # noqa: E402

if __name__ == "__main__":
    run_job(__doc__, ingest)
