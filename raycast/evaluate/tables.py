"""Markdown tables from DataFrames, without ``tabulate`` (which ``DataFrame.to_markdown`` needs and we lack)."""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd


def format_value(value, digits: int = 4) -> str:
    """A cell as text: integers plainly, floats with ``digits`` significant digits, NaN as an empty-ish dash."""
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        if not np.isfinite(value):
            return "-" if np.isnan(value) else ("inf" if value > 0 else "-inf")
        return f"{value:.{digits}g}"
    if isinstance(value, pd.Timestamp):
        return str(value.date()) if value == value.normalize() else str(value)
    return str(value)


def _escape(text: str) -> str:
    # a pipe inside a cell would end the cell
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, digits: int = 4, index: bool = True) -> str:
    """``df`` as a GitHub-flavoured markdown table; the index becomes the first column when ``index``."""
    headers = [str(c) for c in df.columns]
    rows = [[format_value(v, digits) for v in row] for row in df.itertuples(index=False, name=None)]
    if index:
        headers = [str(df.index.name or "")] + headers
        rows = [[format_value(i, digits)] + r for i, r in zip(df.index, rows, strict=True)]
    numeric = [False] * len(headers)
    if index:
        numeric[1:] = [pd.api.types.is_numeric_dtype(t) for t in df.dtypes]
    else:
        numeric = [pd.api.types.is_numeric_dtype(t) for t in df.dtypes]
    lines = [
        "| " + " | ".join(_escape(h) for h in headers) + " |",
        "| " + " | ".join("---:" if n else "---" for n in numeric) + " |",
    ]
    lines += ["| " + " | ".join(_escape(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def ensemble_vs_members(
    per_fold: pd.DataFrame,
    members: list[str],
    baselines: tuple[str, ...] = ("ridge", "lightgbm"),
    metric: str = "ic",
) -> pd.DataFrame:
    """The ensemble against its best member (and the baselines), per fold and overall.

    ``per_fold``: one row per fold and predictor, with ``fold``, ``predictor`` and ``metric`` columns (one fold
    for a single split). Per fold the best member is the one with the highest ``metric`` in that fold (in
    hindsight: the hardest member to beat); overall every figure is the mean over folds, the best member is the
    member with the highest mean, and ``ensemble >= best`` counts the folds where the ensemble was at least that
    fold's best member. Rows: the folds, then ``overall``.
    """
    missing = {"fold", "predictor", metric} - set(per_fold.columns)
    if missing:
        raise ValueError(f"ensemble_vs_members needs the columns {sorted(missing)}")
    wide = per_fold.pivot_table(index="fold", columns="predictor", values=metric, aggfunc="first")
    members = [m for m in members if m in wide.columns]
    if "ensemble" not in wide.columns or not members:
        raise ValueError(f"ensemble_vs_members needs the ensemble and a member among {list(wide.columns)}")
    baselines = tuple(b for b in baselines if b in wide.columns)
    best = wide[members].idxmax(axis=1)
    rows = pd.DataFrame(
        {
            "ensemble": wide["ensemble"],
            "best member": best,
            f"best member {metric}": wide[members].max(axis=1),
        },
        index=wide.index.astype(object),
    )
    rows["ensemble - best"] = rows["ensemble"] - rows[f"best member {metric}"]
    for b in baselines:
        rows[b] = wide[b]
    wins = rows["ensemble - best"] >= 0
    rows["ensemble >= best"] = [str(bool(w)) for w in wins]
    mean = wide.mean()
    top = mean[members].idxmax()
    overall = {"ensemble": mean["ensemble"], "best member": top, f"best member {metric}": mean[top],
               "ensemble - best": mean["ensemble"] - mean[top], **{b: mean[b] for b in baselines},
               "ensemble >= best": f"{int(wins.sum())} of {len(wins)} folds"}  # fmt: skip
    out = pd.concat([rows, pd.DataFrame([overall], index=["overall"])])
    out.index.name = "fold"
    return out
