"""Ingestion layer: sources, validation, the versioned store and crash safety."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raycast.config import SampleConfig, SyntheticConfig, parse_config
from raycast.data import DataError
from raycast.data.files import read_user_files
from raycast.data.ingest import ingest
from raycast.data.sample import load_sample
from raycast.data.store import (
    current_version_dir,
    list_symbols,
    market_dir,
    read_bars,
    read_manifest,
    read_rejected,
    symbol_file,
)
from raycast.data.synthetic import generate_synthetic, observable_pattern
from raycast.data.validate import REASONS, validate_bars

BAR_COLUMNS = ["symbol", "date", "open", "high", "low", "close", "volume"]
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ helpers


def _cfg(storage: Path, **ingest) -> object:
    return parse_config({"storage": str(storage), "ingest": ingest})


def _bars(symbol: str = "AAA", n: int = 5, start: str = "2021-01-04") -> pd.DataFrame:
    dates = pd.bdate_range(start, periods=n)
    close = 10.0 + np.arange(n)
    return pd.DataFrame(
        {
            "symbol": symbol,
            "date": dates.strftime("%Y-%m-%d"),
            "open": close - 0.5,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": 1000.0 + np.arange(n),
        }
    )


def _per_date_ic(signal: pd.DataFrame, returns_next: pd.DataFrame) -> np.ndarray:
    """Per-date cross-sectional Pearson correlation of two (date x symbol) frames, NaN rows dropped."""
    x, y = signal.to_numpy(), returns_next.to_numpy()
    keep = ~(np.isnan(x).any(1) | np.isnan(y).any(1))
    x, y = x[keep], y[keep]
    x, y = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    return (x * y).sum(1) / np.sqrt((x * x).sum(1) * (y * y).sum(1))


def _symbols_of(bars: pd.DataFrame) -> list[str]:
    return sorted(bars["symbol"].unique())


def _wide(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    return frame.pivot(index="date", columns="symbol", values=column)


@pytest.fixture(scope="module")
def universe_02():
    return generate_synthetic(SyntheticConfig(n_symbols=100, n_days=756, signal_strength=0.2, seed=7))


@pytest.fixture(scope="module")
def universe_0():
    return generate_synthetic(SyntheticConfig(n_symbols=100, n_days=756, signal_strength=0.0, seed=7))


# ---------------------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_canonical():
    cfg = SyntheticConfig(n_symbols=12, n_days=150, n_sectors=3, seed=3)
    a, b = generate_synthetic(cfg), generate_synthetic(cfg)
    pd.testing.assert_frame_equal(a.bars, b.bars)
    pd.testing.assert_frame_equal(a.expected_return, b.expected_return)
    assert a.oracle_ic == b.oracle_ic and a.info == b.info
    c = generate_synthetic(cfg.model_copy(update={"seed": 4}))
    assert not np.allclose(a.bars["close"], c.bars["close"])

    bars = a.bars
    assert list(bars.columns) == BAR_COLUMNS
    assert bars["date"].dtype == "datetime64[ns]"
    assert all(bars[c].dtype == "float64" for c in BAR_COLUMNS[2:])
    assert not bars.duplicated(["symbol", "date"]).any()
    assert bars.equals(bars.sort_values(["symbol", "date"], ignore_index=True))
    assert sorted(bars["symbol"].unique()) == [f"SYN{i:03d}" for i in range(12)]
    assert bars["date"].iloc[0] == pd.Timestamp(cfg.start)
    assert (bars["date"].dt.dayofweek < 5).all() and (bars["date"] == bars["date"].dt.normalize()).all()
    assert len(bars) == 12 * 150
    assert list(a.expected_return.columns) == ["symbol", "date", "mu"]
    assert set(a.info["sectors"].values()) == {0, 1, 2}


def test_synthetic_ohlc_consistent_and_positive(universe_02):
    b = universe_02.bars
    assert (b[["open", "high", "low", "close", "volume"]] > 0).all().all()
    assert (b["high"] >= b[["open", "close"]].max(axis=1)).all()
    assert (b["low"] <= b[["open", "close"]].min(axis=1)).all()
    first = b.groupby("symbol")["close"].first()
    assert first.between(20, 200).all()
    vol = _wide(b, "close").pct_change().std() * np.sqrt(252)
    assert vol.between(0.15, 0.5).all()  # annualized total vol in a plausible equity range


def test_synthetic_volume_rises_with_abs_return_and_vol_clusters(universe_02):
    b = universe_02.bars
    r = _wide(b, "close").pct_change().iloc[1:]
    z = (r / r.std()).abs()
    logv = np.log(_wide(b, "volume")).iloc[1:]
    corr = [np.corrcoef(z[s], logv[s])[0, 1] for s in r.columns]
    assert np.median(corr) > 0.2
    # Volatility clustering: |r| is positively autocorrelated (GARCH), at lag 1 and still at lag 5.
    absr = r.abs()
    ac1 = np.mean([absr[s].autocorr(1) for s in r.columns])
    ac5 = np.mean([absr[s].autocorr(5) for s in r.columns])
    assert ac1 > 0.04 and ac5 > 0.02, (ac1, ac5)


def test_synthetic_oracle_ic_matches_realized(universe_02):
    """The signal is planted on the tradable label (entered one close after the signal): the oracle IC is its IC.
    The same-close return into t+1 only sees what mu_t shares with mu_(t-1)."""
    u = universe_02
    returns = _wide(u.bars, "close").pct_change()
    mu = _wide(u.expected_return, "mu")
    ic = _per_date_ic(mu, returns.shift(-2))
    assert _per_date_ic(mu, returns.shift(-1)).mean() < 0.5 * ic.mean()
    assert len(ic) == 754
    # Per-date ICs are independent given mu (fresh noise every day); 4 standard errors plus the oracle's own
    # Monte Carlo error (well under 0.002 here) bound the gap.
    tol = 4 * ic.std() / np.sqrt(len(ic)) + 0.002
    assert abs(ic.mean() - u.oracle_ic) < tol, (ic.mean(), u.oracle_ic, tol)
    assert 0.15 < u.oracle_ic < 0.25


def test_synthetic_strength_zero_has_nothing_to_predict(universe_0, universe_02):
    assert universe_0.oracle_ic == 0.0
    assert (universe_0.expected_return["mu"] == 0).all()
    # Same seed, same shocks: only the planted component differs. The pattern rebuilt from the bars alone
    # predicts the tradable label only where something was planted, and then nearly as well as the planted mu.
    for u, expect_signal in ((universe_0, False), (universe_02, True)):
        r_next = _wide(u.bars, "close").pct_change().shift(-2)  # the tradable label
        ic = _per_date_ic(_wide(observable_pattern(u.bars), "mu"), r_next)
        se = ic.std() / np.sqrt(len(ic))
        if expect_signal:
            assert ic.mean() > 4 * se
            planted = _per_date_ic(_wide(u.expected_return, "mu"), r_next).mean()
            assert ic.mean() > 0.9 * planted, (ic.mean(), planted)
        else:
            assert abs(ic.mean()) < 4 * se, (ic.mean(), se)


# ------------------------------------------------------------------------------------------- sample


def test_sample_loads_real_aapl():
    raw = load_sample(SampleConfig(symbols=["aapl"]))
    bars, rejected = validate_bars(raw, "sample")
    assert rejected.empty and len(bars) == 3270
    assert bars["date"].min() == pd.Timestamp("2000-03-01") and bars["date"].max() == pd.Timestamp("2013-03-01")
    ret = bars["close"].pct_change()
    # Adjusted (the default): the 2:1 split on 2005-02-28 is not a return; the real 2000-09-29 crash (-52%) is.
    assert ret[bars["date"] == "2005-02-28"].abs().item() < 0.05
    assert ret.min() == pytest.approx(-0.5187, abs=1e-3)
    unadjusted, _ = validate_bars(load_sample(SampleConfig(symbols=["AAPL"], adjust=False)), "sample")
    row = unadjusted.set_index("date").loc["2005-02-25"]
    assert (row["open"], row["close"], row["volume"]) == (89.62, 88.99, 16348400.0)


def test_sample_unknown_symbol_lists_available():
    with pytest.raises(DataError, match=r"unknown sample symbol\(s\): TSLA; available: AAPL, .*MSFT"):
        load_sample(SampleConfig(symbols=["AAPL", "TSLA"]))


# -------------------------------------------------------------------------------------------- files


def test_long_csv_and_parquet(tmp_path):
    long = pd.concat([_bars("AAA"), _bars("BBB", 3)], ignore_index=True)
    long.to_csv(tmp_path / "bars.csv", index=False)
    long.assign(date=pd.to_datetime(long["date"])).to_parquet(tmp_path / "bars.parquet")
    for name in ("bars.csv", "bars.parquet"):
        bars, rejected = validate_bars(read_user_files(tmp_path / name), "files")
        assert rejected.empty, name
        assert list(bars.columns) == BAR_COLUMNS and len(bars) == 8
        assert bars.groupby("symbol").size().to_dict() == {"AAA": 5, "BBB": 3}
        assert bars["date"].dtype == "datetime64[ns]" and bars["close"].iloc[0] == 10.0


def test_aliases_case_insensitivity_and_adj_close(tmp_path):
    src = _bars("aaa ").rename(
        columns={"symbol": "Ticker", "date": "DATETIME", "open": "Open", "high": " HIGH", "low": "low",
                 "close": "Close", "volume": "Vol"}
    )
    src["Adj Close"] = src["Close"] / 2
    src["Dividends"] = 0.0  # unknown columns are ignored
    src.to_csv(tmp_path / "x.csv", index=False)
    bars, _ = validate_bars(read_user_files(tmp_path / "x.csv"), "files")
    assert bars["symbol"].unique().tolist() == ["AAA"]
    assert bars["close"].tolist() == src["Close"].tolist()  # Adj Close ignored by default
    adjusted, _ = validate_bars(read_user_files(tmp_path / "x.csv", adjust=True), "files")
    assert np.allclose(adjusted["close"], src["Close"] / 2)
    assert np.allclose(adjusted["volume"], src["Vol"] * 2)  # dollar volume unchanged
    src.rename(columns={"DATETIME": "Timestamp", "Ticker": "SYMBOL"}).to_parquet(tmp_path / "y.parquet")
    assert len(read_user_files(tmp_path / "y.parquet")) == 5
    # China's vendors: tushare's names (with its yyyymmdd dates) and akshare's Chinese headers
    tushare = _bars("600000.SH").assign(date=lambda f: f["date"].str.replace("-", "")).rename(
        columns={"symbol": "ts_code", "date": "trade_date", "volume": "vol"}
    )
    tushare.assign(amount=1.0).to_csv(tmp_path / "tushare.csv", index=False)
    akshare = _bars("000001").rename(columns={"symbol": "股票代码", "date": "日期", "open": "开盘", "high": "最高",
                                              "low": "最低", "close": "收盘", "volume": "成交量"})  # fmt: skip
    akshare.assign(成交额=1.0).to_csv(tmp_path / "akshare.csv", index=False)
    for name, symbol in (("tushare.csv", "600000.SH"), ("akshare.csv", "000001")):
        bars, rejected = validate_bars(read_user_files(tmp_path / name), "files")
        assert rejected.empty and bars["symbol"].unique().tolist() == [symbol], name
        expected = validate_bars(_bars(), "unit")[0].drop(columns="symbol")
        pd.testing.assert_frame_equal(bars.drop(columns="symbol"), expected)


def test_adjust_reads_an_adjusted_column_and_names_files_without_one(tmp_path, capsys):
    folder = tmp_path / "bars"
    folder.mkdir()
    src = _bars("AAA")
    src.assign(adjusted=src["close"] / 4).to_csv(folder / "aaa.csv", index=False)  # quantmod / pytimetk's name
    src.assign(symbol="BBB").to_csv(folder / "bbb.csv", index=False)
    bars, _ = validate_bars(read_user_files(folder, adjust=True), "files")
    by = dict(tuple(bars.groupby("symbol")))
    assert np.allclose(by["AAA"]["close"], src["close"] / 4)
    assert np.allclose(by["BBB"]["close"], src["close"])  # nothing to adjust by: taken as given ...
    out = capsys.readouterr().out
    assert "1 file(s) have no adjusted close column (bbb.csv)" in out  # ... and said so
    read_user_files(folder / "aaa.csv", adjust=True)
    read_user_files(folder / "bbb.csv")  # not asked to adjust: nothing to say
    assert "adjusted close" not in capsys.readouterr().out


def test_yahoo_directory(tmp_path):
    yahoo = tmp_path / "yahoo"
    yahoo.mkdir()
    for stem in ("msft", "IBM"):
        df = _bars(stem).drop(columns="symbol")
        df.columns = ["Date", "Open", "High", "Low", "Close", "Volume"]
        df.insert(5, "Adj Close", df["Close"])
        df.to_csv(yahoo / f"{stem}.csv", index=False)
    # Yahoo writes 'null' for missing values: a counted rejection, not a crash.
    with open(yahoo / "msft.csv", "a") as f:
        f.write("2021-01-11,null,null,null,null,null,null\n")
    _bars("X").drop(columns="symbol").to_parquet(yahoo / "goog.parquet")
    (yahoo / ".DS_Store").write_text("ignored")
    raw = read_user_files(yahoo)
    bars, rejected = validate_bars(raw, "files")
    assert _symbols_of(bars) == ["GOOG", "IBM", "MSFT"]
    assert rejected["reason"].tolist() == ["missing_value"]
    assert rejected["source"].item().endswith("msft.csv") and rejected["row"].item() == 5


def test_malformed_inputs_raise_clear_errors(tmp_path):
    _bars().drop(columns=["close", "volume"]).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(DataError, match=r"short\.csv: missing required column\(s\): close, volume"):
        read_user_files(tmp_path / "short.csv")
    _bars().drop(columns="symbol").to_csv(tmp_path / "nosym.csv", index=False)
    with pytest.raises(DataError, match=r"nosym\.csv: missing required column\(s\): symbol \(or ticker\)"):
        read_user_files(tmp_path / "nosym.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: directory holds no data files"):
        read_user_files(tmp_path / "empty")
    (tmp_path / "bars.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"bars\.xlsx: unsupported file type"):
        read_user_files(tmp_path / "bars.xlsx")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _bars().to_csv(mixed / "AAA.csv", index=False)
    (mixed / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"notes\.txt: unsupported file type"):
        read_user_files(mixed)
    with pytest.raises(DataError, match=r"nope: no such file or directory"):
        read_user_files(tmp_path / "nope")
    (tmp_path / "zero.csv").write_text("")
    with pytest.raises(DataError, match=r"zero\.csv: file is empty"):
        read_user_files(tmp_path / "zero.csv")
    _bars().assign(Timestamp=1).to_csv(tmp_path / "two_dates.csv", index=False)
    with pytest.raises(DataError, match=r"two_dates\.csv: columns 'date' and 'Timestamp' both mean 'date'"):
        read_user_files(tmp_path / "two_dates.csv")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"broken\.parquet: cannot read"):
        read_user_files(tmp_path / "broken.parquet")


# --------------------------------------------------------------------------------------- validation

# One good row and, per reason, a row that fails exactly that check (as text, the way CSV arrives).
GOOD = {"symbol": "AAA", "date": "2021-01-04", "open": "10", "high": "12", "low": "9", "close": "11", "volume": "100"}
BAD_ROWS = {
    "unparsable_date": {"date": "2021-13-45"},
    "missing_value": {"close": ""},
    "unparsable_number": {"open": "ten"},
    "invalid_symbol": {"symbol": "A B"},
    "non_finite": {"high": "inf"},
    "non_positive_price": {"low": "0"},
    "negative_volume": {"volume": "-5"},
    "high_below_low": {"high": "8.5", "low": "9.5", "open": "9", "close": "9"},
    "ohlc_inconsistent": {"close": "12.5"},
    "duplicate": {"date": "2021-01-04"},
}


ROW_REASONS = [r for r in REASONS if r != "intraday"]  # a row's own failings; intraday takes two rows of a day


@pytest.mark.parametrize("reason", ROW_REASONS)
def test_each_rejection_reason(reason):
    bad = {**GOOD, "date": "2021-01-05", **BAD_ROWS[reason]}
    raw = pd.DataFrame([GOOD, bad])
    clean, rejected = validate_bars(raw, "unit")
    assert len(clean) == 1 and clean["date"].item() == pd.Timestamp("2021-01-04")
    assert rejected["reason"].tolist() == [reason]
    assert rejected["row"].tolist() == [1] and rejected["source"].tolist() == ["unit"]
    # Original values are kept as text.
    for col, value in BAD_ROWS[reason].items():
        assert rejected[col].item() == value


def test_rejected_accounting_and_first_reason_wins():
    rows = [GOOD]
    for i, reason in enumerate(ROW_REASONS):
        date = "2021-01-04" if reason == "duplicate" else f"2021-02-{i + 1:02d}"
        rows.append({**GOOD, "date": date, **BAD_ROWS[reason]})
        if reason == "duplicate":
            continue
        rows.append({**GOOD, "date": date, **BAD_ROWS[reason], "volume": "-1", "symbol": ""})  # several failures
    rows += [{**GOOD, "date": "2021-01-05T00:00:00-05:00"}, {**GOOD, "date": "01/06/2021", "symbol": " BBB "}]
    raw = pd.DataFrame(rows)
    clean, rejected = validate_bars(raw, "unit")
    assert len(clean) + len(rejected) == len(raw)
    assert rejected["row"].is_unique and rejected["row"].between(0, len(raw) - 1).all()
    counts = rejected["reason"].value_counts().to_dict()
    assert counts["unparsable_date"] == 2  # a bad date wins over everything after it
    assert counts["missing_value"] == 9  # the empty symbol comes next for the others
    assert clean[["symbol", "date"]].astype(str).values.tolist() == [
        ["AAA", "2021-01-04"], ["AAA", "2021-01-05"], ["BBB", "2021-01-06"]
    ]


def _dates_read(dates: list[str], order: str = "auto") -> tuple[list[str], list[str]]:
    raw = pd.DataFrame([{**GOOD, "date": d} for d in dates])
    clean, rejected = validate_bars(raw, "unit", order)
    return clean["date"].dt.strftime("%Y-%m-%d").tolist(), rejected["reason"].tolist()


def test_all_number_dates_read_in_one_order_for_the_whole_input(capsys):
    # a day-first export: its 13th of February says so, and its 1st of February and 5th of March read alike
    assert _dates_read(["01/02/2021", "13/02/2021", "05/03/2021"]) == (["2021-02-01", "2021-02-13", "2021-03-05"], [])
    # a month-first one, with '.' and two-digit years and a time of day
    assert _dates_read(["01.02.21", "02.13.21 16:00:00"]) == (["2021-01-02", "2021-02-13"], [])
    assert capsys.readouterr().out == ""
    # nothing decides: month first, and the console says how to pin the other order
    assert _dates_read(["01/02/2021", "02/03/2021"]) == (["2021-01-02", "2021-02-03"], [])
    assert "ingest.files.date_order to day_first" in capsys.readouterr().out
    assert _dates_read(["01/02/2021", "02/03/2021"], "day_first") == (["2021-02-01", "2021-03-02"], [])
    # both orders in one input: the date the chosen order cannot read is rejected, none is swapped
    assert _dates_read(["13/02/2021", "02/13/2021", "2 Jan 2021", "2021-01-04"]) == (
        ["2021-01-02", "2021-01-04", "2021-02-13"], ["unparsable_date"]
    )
    assert _dates_read(["31/02/2021", "30/01/2021"]) == (["2021-01-30"], ["unparsable_date"])  # no 31 February


def test_intraday_bars_are_rejected_not_sampled(tmp_path):
    dates = ["2021-01-04 10:00", "2021-01-04 11:00", "2021-01-05 16:00", "2021-01-05 16:00", "2021-01-06 16:00"]
    assert _dates_read(dates) == (["2021-01-05", "2021-01-06"], ["intraday", "intraday", "duplicate"])
    hourly = pd.concat([_bars().assign(date=lambda f, h=h: f["date"] + f" {h}:00") for h in (10, 11, 12)])
    hourly.to_csv(tmp_path / "hourly.csv", index=False)
    with pytest.raises(DataError, match=r"rejected: \{'intraday': 15\}.*aggregate intraday bars to days first"):
        ingest(_cfg(tmp_path / "s", source="files", files={"path": str(tmp_path / "hourly.csv")}))


def test_semicolon_and_tab_files_and_a_parquet_frame_indexed_by_date(tmp_path):
    long = pd.concat([_bars("AAA"), _bars("BBB", 3)], ignore_index=True)
    long = long.assign(close=long["close"] + 0.25, volume=long["volume"] * 1000)
    expected, _ = validate_bars(long.astype(str), "unit")
    # a spreadsheet's export where the comma is the decimal mark
    long.to_csv(tmp_path / "euro.csv", sep=";", decimal=",", index=False)
    long.to_csv(tmp_path / "tabs.csv", sep="\t", index=False)
    long.assign(date=pd.to_datetime(long["date"])).set_index("date").to_parquet(tmp_path / "by_date.parquet")
    long.assign(date=pd.to_datetime(long["date"])).set_index(["symbol", "date"]).to_parquet(tmp_path / "multi.parquet")
    for name in ("euro.csv", "tabs.csv", "by_date.parquet", "multi.parquet"):
        bars, rejected = validate_bars(read_user_files(tmp_path / name), "files")
        assert rejected.empty, name
        pd.testing.assert_frame_equal(bars, expected, obj=name)
    # a thousands separator is not guessed at: rejected, and the error shows the value
    long.astype(str).assign(volume="1,000").to_csv(tmp_path / "thousands.csv", index=False)
    with pytest.raises(DataError, match=r"volume='1,000'.*no thousands separators"):
        ingest(_cfg(tmp_path / "s", source="files", files={"path": str(tmp_path / "thousands.csv")}))


def test_validation_of_typed_frames_clamps_float_noise():
    raw = pd.DataFrame(
        {
            "symbol": ["A", "A", "A"],
            "date": pd.to_datetime(["2021-01-04 16:00", "2021-01-05 00:00", None]).tz_localize("America/New_York"),
            "open": [10.0, 10.0, 10.0],
            "high": [11.0, 10.0 * (1 - 1e-12), 11.0],
            "low": [9.0, 9.0, np.nan],
            "close": [10.5, 9.5, 10.0],
            "volume": [0.0, 5.0, 1.0],
        }
    )
    clean, rejected = validate_bars(raw, "typed")
    assert clean["date"].tolist() == [pd.Timestamp("2021-01-04"), pd.Timestamp("2021-01-05")]
    assert (clean["high"] >= clean[["open", "close"]].max(axis=1)).all()
    assert rejected["reason"].tolist() == ["missing_value"]


# ------------------------------------------------------------------------------------ store + ingest


def _messy_csv(path: Path) -> Path:
    long = pd.concat([_bars("AAA", 30), _bars("BBB", 30)], ignore_index=True).astype(str)
    long.loc[3, "close"] = "oops"
    long.loc[40, "high"] = "1"
    long = pd.concat([long, long.iloc[[5]]], ignore_index=True)
    long.to_csv(path, index=False)
    return path


def test_ingest_roundtrip_and_manifest(tmp_path):
    storage = tmp_path / "store"
    with pytest.raises(FileNotFoundError, match="raycast ingest"):
        current_version_dir(str(storage))
    manifest = ingest(_cfg(storage, source="files", files={"path": str(_messy_csv(tmp_path / "m.csv"))}))
    assert manifest == read_manifest(str(storage))
    assert manifest["symbols"] == ["AAA", "BBB"] == list_symbols(str(storage))
    assert manifest["rows"] == 58 and manifest["rows_per_symbol"] == {"AAA": 29, "BBB": 29}
    assert manifest["rejected"] == {"duplicate": 1, "high_below_low": 1, "unparsable_number": 1}
    assert manifest["rejected_total"] == 3 and manifest["synthetic"] is None
    assert manifest["date_min"] == "2021-01-04" and manifest["sources"] == [str(tmp_path / "m.csv")]
    bars = read_bars(str(storage))
    assert list(bars.columns) == BAR_COLUMNS and len(bars) == 58 and bars["date"].dtype == "datetime64[ns]"
    assert read_bars(str(storage), ["BBB"])["symbol"].unique().tolist() == ["BBB"]
    with pytest.raises(KeyError, match="available: AAA, BBB"):
        read_bars(str(storage), ["ZZZ"])
    direct = pd.read_parquet(symbol_file(str(storage), "AAA"))  # what the feature pipeline does
    assert list(direct.columns) == BAR_COLUMNS and direct["date"].is_monotonic_increasing
    assert len(read_rejected(str(storage))) == 3
    assert current_version_dir(str(storage)).parent == market_dir(str(storage))


def test_ingest_synthetic_and_sample(tmp_path):
    m = ingest(_cfg(tmp_path, source="synthetic", synthetic={"n_symbols": 5, "n_days": 130, "seed": 1}))
    assert m["rows"] == 650 and m["rejected_total"] == 0
    assert m["synthetic"]["oracle_ic"] > 0 and m["synthetic"]["seed"] == 1
    m = ingest(_cfg(tmp_path, source="sample", sample={"symbols": ["IBM", "GOOG"]}))
    assert m["rows_per_symbol"] == {"GOOG": 2148, "IBM": 3270} and m["synthetic"] is None


def test_ingest_is_idempotent_and_prunes(tmp_path):
    storage = tmp_path / "store"
    cfg = _cfg(storage, source="files", files={"path": str(_messy_csv(tmp_path / "m.csv"))})
    versions = []
    for _ in range(3):
        ingest(cfg)
        versions.append(current_version_dir(str(storage)))
    assert len(set(versions)) == 3
    assert sorted(p.name for p in market_dir(str(storage)).glob("v-*")) == sorted(v.name for v in versions[1:])
    files = sorted(p.relative_to(versions[1]) for p in versions[1].rglob("*") if p.is_file())
    assert [str(f) for f in files] == [
        "manifest.json", "rejected.parquet", "symbol=AAA/data.parquet", "symbol=BBB/data.parquet", "tails.parquet"
    ]
    for f in files:
        assert (versions[1] / f).read_bytes() == (versions[2] / f).read_bytes(), f


def test_empty_input_is_an_error(tmp_path):
    df = _bars().astype(str)
    df["close"] = "nan"
    df.to_csv(tmp_path / "bad.csv", index=False)
    # the counts, the first rejected row as read, and what the reason asks of the file
    with pytest.raises(DataError, match=r"no valid rows .*missing_value.*bad\.csv row 0 \(missing_value\): "
                                        r"symbol='AAA', .*close='nan'.*every row needs"):  # fmt: skip
        ingest(_cfg(tmp_path / "s", source="files", files={"path": str(tmp_path / "bad.csv")}))


# ------------------------------------------------------------------------------------- crash safety

# An ingest in its own process, halted at a stage by wrapping the store function that marks it: it prints the
# stage's name and waits to be killed there.
_HALTED_INGEST = """
import json, sys, threading
from raycast.config import parse_config
from raycast.data import store
from raycast.data.ingest import ingest

def halt(stage):
    print(stage, flush=True)
    threading.Event().wait()

stage = sys.argv[2]
if stage == "mid_write":  # the first symbol's file is written, the others are not
    write = store._write_parquet
    def write_then_halt(table, path):
        write(table, path)
        halt(stage)
    store._write_parquet = write_then_halt
else:  # before_switch: the version is complete and renamed, CURRENT still names the previous one
    store._switch_current = lambda root, name: halt(stage)
ingest(parse_config(json.loads(sys.argv[1])))
"""


def _halted_writer(config: dict, stage: str, timeout: float = 60.0) -> subprocess.Popen:
    """An ingest process stopped at ``stage``; fails if it ends or does not get there within ``timeout``."""
    cmd = [sys.executable, "-c", _HALTED_INGEST, json.dumps(config), stage]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    line = None
    while line != "" and select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
        line = proc.stdout.readline()  # "" once the writer has ended
        if line.strip() == stage:
            return proc
    proc.kill()
    _, err = proc.communicate()
    raise AssertionError(f"the writer did not reach {stage}:\n{err[-2000:]}")


@pytest.mark.parametrize("stage", ["mid_write", "before_switch"])
def test_killed_ingest_leaves_previous_dataset_intact(tmp_path, stage):
    storage = str(tmp_path / "store")
    first = ingest(_cfg(storage, source="synthetic", synthetic={"n_symbols": 4, "n_days": 130, "seed": 0}))
    root = market_dir(storage)
    current_before = (root / "CURRENT").read_bytes()
    bars_before = read_bars(storage)

    config = {"storage": storage, "ingest": {"source": "synthetic", "synthetic": {"n_symbols": 6, "seed": 1}}}
    proc = _halted_writer(config, stage)
    try:
        # the writer really is at the stage: part of a new version on disk, or all of it beside the current one
        if stage == "mid_write":
            assert len(list(root.glob(".tmp-*/symbol=*/data.parquet"))) == 1
        else:
            assert len(list(root.glob("v-*"))) == 2 and not list(root.glob(".tmp-*"))
    finally:
        proc.kill()
        proc.communicate()

    assert (root / "CURRENT").read_bytes() == current_before
    assert read_manifest(storage) == first
    pd.testing.assert_frame_equal(read_bars(storage), bars_before)
    # The next ingest clears the debris of the killed one and publishes normally.
    ingest(_cfg(storage, source="synthetic", synthetic={"n_symbols": 3, "n_days": 130}))
    assert not list(root.glob(".tmp-*")) and len(list(root.glob("v-*"))) == 2
    assert list_symbols(storage) == ["SYN000", "SYN001", "SYN002"]


# ------------------------------------------------------------------------------------ history quality


@pytest.fixture(scope="module")
def messy():
    from raycast.data.messy import make_messy

    return make_messy(SyntheticConfig(n_symbols=16, n_days=300, signal_strength=0.2, seed=5))


def test_quality_policies_count_and_handle_every_planted_oddity(messy):
    from raycast.config import QualityConfig
    from raycast.data.quality import apply_quality_policies

    bars, rejected = validate_bars(messy.bars, "messy")
    e = messy.expected
    assert rejected["reason"].tolist() == ["duplicate"] * e["duplicates"]
    assert set(e["odd_tickers"]) <= set(bars["symbol"])  # dots, dashes, suffixes and slashes are valid symbols

    flagged, report = apply_quality_policies(bars, QualityConfig(splits="flag", bad_ticks="flag"))
    assert flagged.equals(bars)  # flag changes nothing
    assert report["splits"]["symbols"] == {e["split"]: 1} and report["halts"]["symbols"] == {e["halted"]: 1}
    assert report["zero_volume"]["symbols"] == report["stale"]["symbols"] == {e["constant_stub"]: 1, e["stale"]: 1}
    assert report["splits"]["found"][0]["ratio"] == 2.0
    assert report["bad_ticks"]["symbols"] == {e["bad_tick"]: 1}
    (found,) = report["bad_ticks"]["found"]
    assert found["symbol"] == e["bad_tick"] and found["date"] == e["bad_tick_date"]
    assert found["close"] == pytest.approx(100 * found["previous_close"], rel=0.2)

    # the default drops the bad bar itself, and nothing else
    dropped, report = apply_quality_policies(bars, QualityConfig(splits="flag"))
    gone = bars.merge(dropped, how="left", indicator=True).query("_merge == 'left_only'")
    assert gone[["symbol", "date"]].astype(str).values.tolist() == [[e["bad_tick"], e["bad_tick_date"]]]
    assert report["bad_ticks"]["rows_cut"] == 1 and report["bad_ticks"]["policy"] == "drop"

    def closes(frame, symbol):
        return frame.loc[frame["symbol"] == symbol, "close"].to_numpy()

    adjusted, report = apply_quality_policies(bars, QualityConfig(splits="adjust", bad_ticks="flag"))
    raw, fixed = closes(bars, e["split"]), closes(adjusted, e["split"])
    assert np.abs(np.diff(np.log(raw))).max() > np.log(1.9)  # the jump is there before...
    assert np.abs(np.diff(np.log(fixed))).max() < np.log(1.3)  # ...and gone after
    half = len(raw) // 2
    np.testing.assert_allclose(fixed[half:], raw[half:])  # post-split prices are the ones that trade today
    np.testing.assert_allclose(fixed[: half - 1], raw[: half - 1] / 2.0)
    assert len(adjusted) == len(bars) and report["splits"]["rows_cut"] == 0

    cut, report = apply_quality_policies(bars, QualityConfig(splits="cut", halts="cut", stale="cut", bad_ticks="cut"))
    removed = len(bars) - len(cut)
    assert removed == sum(entry["rows_cut"] for entry in report.values()) > 0  # every removed row is counted
    misprinted = cut.loc[cut["symbol"] == e["bad_tick"], "date"]
    assert misprinted.min() > pd.Timestamp(e["bad_tick_date"])  # the history starts after the bad bar
    halted = cut.loc[cut["symbol"] == e["halted"], "date"]
    assert np.busday_count(halted.to_numpy("datetime64[D]")[:-1], halted.to_numpy("datetime64[D]")[1:]).max() <= 1


def test_whole_frame_event_scan_finds_exactly_the_symbols_the_per_symbol_checks_do(messy):
    """The quality stage visits only symbols the whole-frame scan picks: it must pick every symbol with an event
    and no symbol whose streaks only add up across the boundary with its neighbour."""
    from raycast.config import QualityConfig
    from raycast.data.quality import _symbols_with_events, find_events

    bars, _ = validate_bars(messy.bars, "messy")
    cfg = QualityConfig()
    # 3 zero-volume and 3 unchanged bars at the end of one symbol, 3 more at the start of the next: 6 in a row
    # across the boundary, never 5 within a symbol
    a, b = _bars("AAA", 20), _bars("AAB", 20, start="2021-02-01")
    a.loc[17:, "volume"], b.loc[:2, "volume"] = 0.0, 0.0
    a.loc[17:, ["open", "high", "low", "close"]] = 9.0
    b.loc[:2, ["open", "high", "low", "close"]] = 9.0
    pair, _ = validate_bars(pd.concat([a, b]), "pair")
    for frame in (bars, pair):
        per_symbol = {s for s, g in frame.groupby("symbol") if any(find_events(g.reset_index(drop=True), cfg).values())}
        assert _symbols_with_events(frame, cfg) == per_symbol
    assert _symbols_with_events(pair, cfg) == set() and len(_symbols_with_events(bars, cfg)) >= 4


def test_a_bar_printed_off_is_a_bad_tick_and_a_real_move_or_split_is_not():
    """One bar far off, the bars on both sides agreeing, is a bad tick; so is a bar off by a split ratio that the
    next bar undoes (it would otherwise read as a split and its reversal). A jump that stays, a split, a big move
    that half reverts and a bad bar at the very end (nothing to confirm it yet) are not."""
    from raycast.config import QualityConfig
    from raycast.data.quality import _symbols_with_events, apply_quality_policies, find_bad_ticks, find_splits

    cfg = QualityConfig()
    base = _bars("AAA", 40)

    def closes(*changes):
        bars = base.copy()
        for index, factor in changes:
            bars.loc[index, ["open", "high", "low", "close"]] *= factor
        return bars

    assert find_bad_ticks(closes((10, 100.0)), cfg) == [10]  # x100
    assert find_bad_ticks(closes((10, 0.01)), cfg) == [10]  # /100
    halved = closes((10, 0.5))  # a whole bar at half the price: gap 2:1 in, 1:2 out
    assert find_bad_ticks(halved, cfg) == [10] and find_splits(halved, cfg) == []
    assert find_bad_ticks(closes((10, 3.0)), cfg) == [10]  # x3: a split ratio, undone the next bar
    assert find_bad_ticks(closes((10, 1.3)), cfg) == []  # +30% and back: a move (no split ratio, under 5x)
    split = base.copy()  # a real 2-for-1 split at bar 10: the level stays
    split.loc[:9, ["open", "high", "low", "close"]] *= 2.0
    assert find_bad_ticks(split, cfg) == [] and find_splits(split, cfg) == [(10, 2.0)]
    assert find_bad_ticks(closes((39, 100.0)), cfg) == []  # the last bar: nothing after it yet
    moved = base.copy()
    moved.loc[10:, ["open", "high", "low", "close"]] *= 6.0  # x6 then halfway back: a move, not a print
    moved.loc[11:, ["open", "high", "low", "close"]] /= 2.5
    assert find_bad_ticks(moved, cfg) == []
    # two symbols side by side: the last bar of one, x100, between bars of the same level is no bad tick (the bar
    # after it is another symbol's), not in the whole-frame scan either
    after = base.assign(symbol="AAB")
    after[["open", "high", "low", "close"]] += 38.0  # starts where AAA's last good bar stands
    pair, _ = validate_bars(pd.concat([closes((39, 100.0)), after]), "pair")
    _, report = apply_quality_policies(pair, cfg)
    assert report["bad_ticks"]["events"] == 0 and _symbols_with_events(pair, cfg) == set()
    one, _ = validate_bars(closes((10, 100.0)), "one")
    out, report = apply_quality_policies(one, cfg)
    assert len(out) == 39 and one["date"].iloc[10] not in set(out["date"]) and report["bad_ticks"]["rows_cut"] == 1


def test_split_detector_finds_nothing_in_an_ordinary_universe(universe_02):
    from raycast.config import QualityConfig
    from raycast.data.quality import apply_quality_policies

    _, report = apply_quality_policies(universe_02.bars, QualityConfig())
    assert all(entry["events"] == 0 for entry in report.values()), report


def test_odd_tickers_survive_the_store(tmp_path, messy):
    m = ingest(_cfg(tmp_path, source="synthetic", synthetic={"n_symbols": 16, "n_days": 300, "seed": 5, "messy": True}))
    assert set(messy.expected["odd_tickers"]) <= set(m["symbols"]) == set(list_symbols(str(tmp_path)))
    assert m["rejected"] == {"duplicate": 5} and m["quality"]["splits"]["events"] == 1
    bars = read_bars(str(tmp_path), ["RDS/A", "BRK.B"])
    assert sorted(bars["symbol"].unique()) == ["BRK.B", "RDS/A"] and len(bars) == 2 * 300
    assert any(p.name == "symbol=RDS~2FA" for p in current_version_dir(str(tmp_path)).iterdir())


# ------------------------------------------------------------------------------------------ appends


def _universe_csvs(tmp_path: Path, cut: int = 5) -> tuple[pd.DataFrame, Path, Path]:
    """Synthetic bars as text: (all bars, a CSV of all but the last ``cut`` days, a CSV of those days)."""
    bars = generate_synthetic(SyntheticConfig(n_symbols=4, n_days=130, seed=3)).bars
    last = np.sort(bars["date"].unique())[-cut:]
    head, tail = tmp_path / "head.csv", tmp_path / "tail.csv"
    bars[~bars["date"].isin(last)].to_csv(head, index=False)
    bars[bars["date"].isin(last)].to_csv(tail, index=False)
    return bars, head, tail


def test_append_adds_days_and_symbols_and_equals_a_full_ingest(tmp_path):
    from raycast.data.ingest import append_bars

    bars, head, tail = _universe_csvs(tmp_path)
    storage = tmp_path / "store"
    ingest(_cfg(storage, source="files", files={"path": str(head)}))
    before = current_version_dir(str(storage))
    # the tail days of three symbols, a new symbol and one bad row
    extra = pd.read_csv(tail, dtype=str)
    extra = extra[extra["symbol"] != "SYN003"]
    newcomer = _bars("NEW", 3, start="2015-07-01")
    bad = extra.iloc[[0]].assign(close="oops")
    pd.concat([extra, newcomer, bad]).to_csv(tmp_path / "day.csv", index=False)

    summary = append_bars(_cfg(storage), str(tmp_path / "day.csv"))
    after = current_version_dir(str(storage))
    assert summary["published"] and after != before and before.exists()  # the previous version is kept
    assert summary["new_rows"] == len(extra) + 3 and summary["corrected_rows"] == 0
    assert summary["new_symbols"] == ["NEW"] and summary["rejected"] == {"unparsable_number": 1}

    # what a full ingest of the same bars publishes, file for file in content
    full_storage = tmp_path / "full"
    everything = pd.concat([pd.read_csv(head, dtype=str), extra, newcomer])
    everything.to_csv(tmp_path / "all.csv", index=False)
    full = ingest(_cfg(full_storage, source="files", files={"path": str(tmp_path / "all.csv")}))
    pd.testing.assert_frame_equal(read_bars(str(storage)), read_bars(str(full_storage)))
    manifest = read_manifest(str(storage))
    for key in ("symbols", "rows", "rows_per_symbol", "date_min", "date_max", "symbol_hashes", "content_hash"):
        assert manifest[key] == full[key], key
    assert manifest["rejected_total"] == 1 and len(read_rejected(str(storage))) == 1
    assert manifest["append"]["previous_version"] == before.name

    # nothing unchanged was rewritten: the untouched symbol's file and the extended symbols' old files are the
    # previous version's (hard links), the extended ones got one more file with just the new days
    def inode(version, symbol, name="data.parquet"):
        return (version / f"symbol={symbol}" / name).stat().st_ino

    for symbol in ("SYN000", "SYN001", "SYN002", "SYN003"):
        assert inode(after, symbol) == inode(before, symbol), symbol
    added = sorted((after / "symbol=SYN000").glob("data-*.parquet"))
    assert len(added) == 1 and len(pd.read_parquet(added[0])) == 5
    assert sorted(p.name for p in (after / "symbol=SYN003").iterdir()) == ["data.parquet"]


def test_appends_planned_on_tails_equal_a_full_ingest_across_hash_blocks(tmp_path):
    """Appends of 10, 10 and 40 days onto 240 bars: each symbol's hash chain crosses a block boundary (256 bars),
    a stale streak starts in the stored bars and ends in the new ones, and the last append starts from a version
    without tails (as one written before they were kept). Each time, what is stored hashes and reads as a full
    ingest of the same bars does."""
    from raycast.data.ingest import append_bars
    from raycast.data.schema import HASH_BLOCK, symbol_hashes
    from raycast.data.store import TAIL_BARS, TAILS

    bars = generate_synthetic(SyntheticConfig(n_symbols=3, n_days=300, seed=4)).bars
    assert 240 < HASH_BLOCK < 260 and 240 > TAIL_BARS
    streak = (bars["symbol"] == "SYN001") & bars["date"].isin(np.sort(bars["date"].unique())[237:243])
    flat = bars.loc[streak, "close"].iloc[0]
    bars.loc[streak, ["open", "high", "low", "close"]] = flat  # 6 bars at one price: a stale stretch (5)
    days = np.sort(bars["date"].unique())
    chunks = [days[:240], days[240:250], days[250:260], days[260:]]
    storage = tmp_path / "store"
    for i, chunk in enumerate(chunks):
        path = tmp_path / f"chunk{i}.csv"
        bars[bars["date"].isin(chunk)].to_csv(path, index=False)
        if i == 0:
            ingest(_cfg(storage, source="files", files={"path": str(path)}))
            continue
        if i == 3:
            (current_version_dir(str(storage)) / TAILS).unlink()
        summary = append_bars(_cfg(storage), str(path))
        assert summary["published"] and summary["symbols_rewritten"] == 0 and summary["new_rows"] == 3 * len(chunk)
        stored = read_bars(str(storage))
        expected = bars[bars["date"] <= chunk[-1]].reset_index(drop=True)
        pd.testing.assert_frame_equal(stored, expected)
        manifest = read_manifest(str(storage))
        assert manifest["symbol_hashes"] == symbol_hashes(expected), i
        assert manifest["quality"]["stale"]["symbols"] == {"SYN001": 1}, i  # found once, in the first append
    bars.to_csv(tmp_path / "all.csv", index=False)
    full = ingest(_cfg(tmp_path / "full", source="files", files={"path": str(tmp_path / "all.csv")}))
    assert full["content_hash"] == read_manifest(str(storage))["content_hash"]
    assert full["quality"]["stale"]["symbols"] == {"SYN001": 1}


def test_a_month_of_daily_appends_keeps_each_symbol_to_a_few_files(tmp_path):
    """Day after day, a symbol's appended files are merged into one (from its tail) once there are MERGE_FILES of
    them, so an append links a few files per symbol, not one per day so far; the bars stay a full ingest's."""
    from raycast.data.ingest import append_bars
    from raycast.data.schema import symbol_hashes
    from raycast.data.store import MERGE_FILES

    bars, head, _ = _universe_csvs(tmp_path, cut=2 * MERGE_FILES + 3)
    storage = tmp_path / "store"
    ingest(_cfg(storage, source="files", files={"path": str(head)}))
    days = np.sort(bars["date"].unique())[-(2 * MERGE_FILES + 3) :]
    most = 0
    for i, day in enumerate(days):
        bars[bars["date"] == day].to_csv(tmp_path / f"day{i}.csv", index=False)
        assert append_bars(_cfg(storage), str(tmp_path / f"day{i}.csv"))["symbols_rewritten"] == 0
        files = sorted(p.name for p in (current_version_dir(str(storage)) / "symbol=SYN001").iterdir())
        assert "data.parquet" in files and len(files) <= MERGE_FILES + 1, files
        most = max(most, len(files))
    assert most == MERGE_FILES + 1 and len(files) < most  # it grew to the bound and was merged
    expected = bars[bars["date"] <= days[-1]].reset_index(drop=True)
    pd.testing.assert_frame_equal(read_bars(str(storage)), expected)
    assert read_manifest(str(storage))["symbol_hashes"] == symbol_hashes(expected)


def test_a_resent_day_is_idempotent_and_a_correction_is_counted(tmp_path):
    from raycast.data.ingest import append_bars

    bars, head, tail = _universe_csvs(tmp_path)
    storage = tmp_path / "store"
    ingest(_cfg(storage, source="files", files={"path": str(head)}))
    assert append_bars(_cfg(storage), str(tail))["published"]
    version, manifest = current_version_dir(str(storage)), read_manifest(str(storage))

    again = append_bars(_cfg(storage), str(tail))  # the same rows once more
    assert not again["published"] and again["new_rows"] == 0 and again["unchanged_rows"] == len(pd.read_csv(tail))
    assert current_version_dir(str(storage)) == version and read_manifest(str(storage)) == manifest

    fixed = pd.read_csv(tail, dtype=str)
    fixed = fixed[(fixed["symbol"] == "SYN001")].iloc[[2]]
    fixed["close"] = str(float(fixed["close"].iloc[0]) * 1.01)
    fixed["high"] = str(max(float(fixed["high"].iloc[0]), float(fixed["close"].iloc[0])))
    fixed.to_csv(tmp_path / "fix.csv", index=False)
    out = append_bars(_cfg(storage), str(tmp_path / "fix.csv"))
    assert out["published"] and out["corrected_rows"] == 1 and out["new_rows"] == 0
    date = str(pd.Timestamp(fixed["date"].iloc[0]).date())
    assert out["corrections"] == [{"symbol": "SYN001", "date": date}]
    assert read_manifest(str(storage))["append"]["corrected_rows"] == 1
    stored = read_bars(str(storage), ["SYN001"]).set_index("date")
    assert stored.loc[date, "close"] == pytest.approx(float(fixed["close"].iloc[0]), rel=1e-15)
    assert len(stored) == 130
    # a corrected symbol is rewritten as one file; the others keep theirs
    current = current_version_dir(str(storage))
    assert [p.name for p in (current / "symbol=SYN001").iterdir()] == ["data.parquet"]
    assert len(list((current / "symbol=SYN002").iterdir())) == 2


def test_append_adjusts_a_split_in_the_new_bars_and_counts_it_once(tmp_path):
    from raycast.data.ingest import append_bars

    bars, head, tail = _universe_csvs(tmp_path)
    storage = tmp_path / "store"
    first = ingest(_cfg(storage, source="files", files={"path": str(head)}))
    assert first["quality"]["splits"]["events"] == 0
    day = pd.read_csv(tail, dtype=str)
    split = day["symbol"] == "SYN002"
    for col in ("open", "high", "low", "close"):
        day.loc[split, col] = (day.loc[split, col].astype(float) / 2).astype(str)
    day.to_csv(tmp_path / "split.csv", index=False)
    out = append_bars(_cfg(storage), str(tmp_path / "split.csv"))
    manifest = read_manifest(str(storage))
    assert manifest["quality"]["splits"]["symbols"] == {"SYN002": 1}
    closes = read_bars(str(storage), ["SYN002"])["close"].to_numpy()
    assert np.abs(np.diff(np.log(closes))).max() < np.log(1.3)  # history scaled to the post-split prices
    assert out["symbols_rewritten"] == 1  # only the split symbol: its stored bars changed
    # the split is not counted again by the next append of the same symbol
    nxt = _bars("SYN002", 1, start=str((pd.Timestamp(day["date"].max()) + pd.offsets.BDay()).date()))
    nxt[["open", "high", "low", "close"]] = closes[-1]
    nxt["high"] = closes[-1] * 1.01
    nxt.to_csv(tmp_path / "next.csv", index=False)
    append_bars(_cfg(storage), str(tmp_path / "next.csv"))
    assert read_manifest(str(storage))["quality"]["splits"]["events"] == 1


def test_append_drops_a_bad_tick_once_the_next_bar_confirms_it(tmp_path):
    """A bar printed x100 on the last day of an append cannot be told from a real move yet; the next append's bar
    confirms it, and it is dropped from the stored history and counted once: the store then equals one ingest of
    all the bars."""
    from raycast.data.ingest import append_bars

    _, head, tail = _universe_csvs(tmp_path)
    days = pd.read_csv(tail, dtype=str)
    dates = sorted(days["date"].unique())
    tick = (days["symbol"] == "SYN001") & (days["date"] == dates[1])
    for col in ("open", "high", "low", "close"):
        days.loc[tick, col] = (days.loc[tick, col].astype(float) * 100).astype(str)
    days[days["date"] <= dates[1]].to_csv(tmp_path / "first.csv", index=False)
    days[days["date"] > dates[1]].to_csv(tmp_path / "rest.csv", index=False)
    storage = tmp_path / "store"
    ingest(_cfg(storage, source="files", files={"path": str(head)}))
    append_bars(_cfg(storage), str(tmp_path / "first.csv"))
    assert read_manifest(str(storage))["quality"]["bad_ticks"]["events"] == 0  # nothing after it yet
    assert pd.Timestamp(dates[1]) in set(read_bars(str(storage), ["SYN001"])["date"])

    out = append_bars(_cfg(storage), str(tmp_path / "rest.csv"))
    manifest = read_manifest(str(storage))
    assert manifest["quality"]["bad_ticks"]["symbols"] == {"SYN001": 1} and "1 bad ticks dropped" in out["quality"]
    assert [(f["symbol"], f["date"]) for f in manifest["quality"]["bad_ticks"]["found"]] == [("SYN001", dates[1])]
    stored = read_bars(str(storage), ["SYN001"])
    assert pd.Timestamp(dates[1]) not in set(stored["date"])
    assert np.abs(np.diff(np.log(stored["close"].to_numpy()))).max() < np.log(2)

    pd.concat([pd.read_csv(head, dtype=str), days]).to_csv(tmp_path / "all.csv", index=False)
    full = ingest(_cfg(tmp_path / "full", source="files", files={"path": str(tmp_path / "all.csv")}))
    pd.testing.assert_frame_equal(read_bars(str(storage)), read_bars(str(tmp_path / "full")))
    assert manifest["content_hash"] == full["content_hash"] and full["quality"]["bad_ticks"]["events"] == 1


def test_cli_append(tmp_path):
    from typer.testing import CliRunner

    from raycast.cli import app

    _, head, tail = _universe_csvs(tmp_path)
    storage = str(tmp_path / "store")
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", "--storage", storage, "--source", "files", "--path", str(head)]).exit_code == 0
    result = runner.invoke(app, ["ingest", "--storage", storage, "--append", str(tail)])
    assert result.exit_code == 0, result.output
    assert '"published": true' in result.output and '"new_rows": 20' in result.output
    missing = runner.invoke(app, ["ingest", "--storage", storage, "--append", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2 and "no such file" in missing.output
