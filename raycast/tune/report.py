"""The search's results as tables: every trial (CSV), the top-k and the seed re-runs (markdown)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from raycast.evaluate.tables import format_value, markdown_table

METRICS = ("score", "val_rank_ic", "val_ic", "val_loss")


def trials_frame(results, params: list[str], mode: str) -> pd.DataFrame:
    """One row per trial (its last report), best ``score`` first; ``epochs`` says where ASHA stopped it."""
    rows = []
    for r in results:
        m = r.metrics or {}
        row = {"trial_id": m.get("trial_id") or r.path.rsplit("/", 1)[-1]}
        row |= {p: r.config.get(p) for p in params}
        row |= {k: m.get(k, np.nan) for k in METRICS}
        row["epochs"] = int(m.get("training_iteration", 0))
        row["seconds"] = float(m.get("time_total_s", np.nan))
        row["status"] = "error" if r.error else "ok"
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values("score", ascending=mode == "min", na_position="last").reset_index(drop=True)


def seeds_summary(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Mean and sample std (None when undefined) over the seed re-runs of every metric."""
    out = {}
    for k in METRICS:
        values = frame[k].dropna().to_numpy(dtype=float)
        # None rather than NaN where undefined (one seed has no spread): summary.json stays valid JSON
        out[k] = {
            "mean": float(values.mean()) if len(values) else None,
            "std": float(values.std(ddof=1)) if len(values) > 1 else None,
        }
    return out


def format_report(
    title: str, trials: pd.DataFrame, top_k: int, seeds: pd.DataFrame | None, summary: dict | None
) -> str:
    """The markdown printed at the end of a search and saved as ``results.md``."""
    top = f"Top {min(top_k, len(trials))} of {len(trials)} trials (score = objective at the kept epoch):"
    lines = [f"# {title}", "", top, ""]
    lines.append(markdown_table(trials.head(top_k).set_index("trial_id"), digits=4))
    if seeds is not None and summary is not None:
        lines += ["", f"Best configuration re-run with {len(seeds)} seeds:", ""]
        cols = ["seed", *[k for k in METRICS if k in seeds.columns], "epochs", "seconds"]
        lines.append(markdown_table(seeds[cols], digits=4, index=False))
        lines += ["", "mean +/- std: " + ", ".join(
            f"{k} {format_value(v['mean'])} +/- {format_value(v['std'])}" for k, v in summary.items()
        )]  # fmt: skip
    return "\n".join(lines) + "\n"
