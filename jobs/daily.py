"""Ray job: the trading day's cycle (raycast.daily): append the day's bars, incremental features, score the new
dates, monitor; on decay retrain a candidate and roll it out only if it beats the served version.

    ray job submit --working-dir . -- python jobs/daily.py --config configs/gpu-cluster.yaml /data/bars/2026-12-03.csv
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shipped working dir holds the package

from raycast.jobs import run_job  # noqa: E402

if __name__ == "__main__":
    from raycast.daily import run_daily

    run_job(__doc__, run_daily, files="the day's new bars: CSV/Parquet file(s) or per-symbol directories, in order")
