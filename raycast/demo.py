"""``make demo``: the whole system on the real sample, end to end, on a laptop's CPU.

ingest -> features -> train (3 bases + ensemble) -> short tune -> evaluate + report -> Serve on 127.0.0.1 ->
one HTTP query printed -> clean shutdown.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from raycast.config import load_config, parse_overrides


def _stage(name: str):
    print(f"\n=== {name} " + "=" * (60 - len(name)), flush=True)
    return time.perf_counter()


def run_demo(config: str, overrides: dict | None = None, verbose: bool = False) -> dict:
    """Run every stage; returns what was produced (report path, model version, the HTTP answer).

    Ray's own output goes to a log file under the storage's ``logs/`` unless ``verbose``.
    """
    import httpx
    import ray
    from ray import serve

    from raycast.runtime import init_ray
    from raycast.pipeline import run_pipeline

    from raycast.console import logs

    cfg = load_config(config, overrides)
    started = time.perf_counter()
    logs.configure(cfg.storage, "demo", verbose)
    init_ray(cfg.ray)
    t = _stage("ingest, features, train, evaluate")
    summary = run_pipeline(cfg.model_copy(update={"pipeline": cfg.pipeline.model_copy(
        update={"stages": ["ingest", "features", "train", "evaluate"]})}))  # fmt: skip
    print(f"[demo] pipeline done in {time.perf_counter() - t:.0f} s", flush=True)

    t = _stage(f"tune ({cfg.tune.model}, {cfg.tune.num_samples} trials)")
    from raycast.tune.search import run_search

    tuned = run_search(cfg, None, print_table=False)  # the progress lines said how it went; the table is a file
    best = f"{tuned['metric']} {tuned['best_score']:+.4f} with {json.dumps(tuned['best_params'], default=str)}"
    print(f"[demo] tune done in {time.perf_counter() - t:.0f} s: best {best}", flush=True)
    print(f"[demo] trials and seeds: {Path(tuned['dir']).resolve() / 'results.md'}", flush=True)

    t = _stage("serve and query")
    from raycast.serve.run import start_app

    logs.capture_ray_output()  # Serve sets up its driver-side logger when it starts: its INFO lines go to the file
    start_app(cfg)
    url = f"http://{cfg.serve.host}:{cfg.serve.port}"
    headers = {"X-API-Key": cfg.serve.api_key} if cfg.serve.api_key else {}
    with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
        symbol = client.get("/v1/symbols").json()["symbols"][0]["symbol"]
        answer = client.post("/v1/predict", json={"symbol": symbol}).json()
    print(f"$ curl -X POST {url}/v1/predict -H 'Content-Type: application/json' -d '{{\"symbol\": \"{symbol}\"}}'")
    print(json.dumps(answer, indent=2), flush=True)
    serve.shutdown()
    ray.shutdown()

    report = summary["evaluate"]["report"]
    print(f"\n[demo] finished in {time.perf_counter() - started:.0f} s")
    print(f"[demo] model version: {summary['train']['version']}")
    print(f"[demo] report: {Path(report).resolve()}")
    return {"report": report, "version": summary["train"]["version"], "answer": answer, "tune": tuned}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "-c", default="configs/demo.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--verbose", "-v", action="store_true", help="show Ray's own output on the console")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    run_demo(args.config, parse_overrides(args.set), args.verbose)


if __name__ == "__main__":
    main()
