"""Real daily bars shipped offline by the ``bokeh-sampledata`` package.

The package bundles Quandl WIKI prices (public domain) for AAPL, FB, GOOG, IBM and MSFT, ending 2013-03-01
(AAPL, IBM, MSFT from 2000-03-01; GOOG from 2004-08-19; FB from 2012-05-18). Its open/high/low/close/volume are
unadjusted, so raw AAPL shows -50% "returns" on split days. With ``SampleConfig.adjust`` (the default) the
``adj_close`` column is kept and :func:`raycast.data.validate.validate_bars` scales the bars by
``adj_close / close`` (split- and dividend-adjusted prices, dollar volume unchanged).

The CSV is read straight from the installed package directory; nothing is downloaded and ``bokeh`` itself is
not needed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from raycast.config import SampleConfig
from raycast.data.columns import normalize_columns, require_columns
from raycast.data.errors import DataError

PACKAGE = "bokeh_sampledata"
FILE = "stocks.csv.gz"


def sample_file() -> Path:
    """Path of the bundled stocks CSV (DataError when the package is missing)."""
    # find_spec locates the package without importing it, so nothing in it runs.
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the sample source needs the 'bokeh-sampledata' package: pip install bokeh-sampledata")
    for base in spec.submodule_search_locations:
        if (Path(base) / "_data" / FILE).is_file():
            return Path(base) / "_data" / FILE
        found = sorted(Path(base).rglob(FILE))  # in case a later release moves the data directory
        if found:
            return found[0]
    raise DataError(f"{FILE} not found in the installed bokeh-sampledata package ({spec.origin})")


def available_symbols() -> list[str]:
    """The symbols the sample holds."""
    frame = pd.read_csv(sample_file(), usecols=["Ticker"], dtype=str)
    return sorted(frame["Ticker"].unique())


def load_sample(cfg: SampleConfig) -> pd.DataFrame:
    """The configured symbols' raw bars (canonical column names, not yet validated; ``adj_close`` if adjusting)."""
    path = sample_file()
    frame = normalize_columns(pd.read_csv(path, dtype={"Ticker": str, "Date": str}), str(path))
    require_columns(frame, str(path), need_symbol=True)
    available = sorted(frame["symbol"].unique())
    wanted = [s.strip().upper() for s in cfg.symbols]
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise DataError(f"unknown sample symbol(s): {', '.join(unknown)}; available: {', '.join(available)}")
    frame = frame[frame["symbol"].isin(wanted)].reset_index(drop=True)
    if not cfg.adjust:
        frame = frame.drop(columns=["adj_close"], errors="ignore")
    return frame
