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
