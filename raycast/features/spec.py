"""The feature spec: 34 pandas-ta indicators and 6 price/volume features per day.

One model is trained across hundreds of tickers, so every feature is scale-free: price-level indicators are
expressed relative to the close, volume-level ones relative to the symbol's own average volume, cumulative ones
(OBV, A/D) as 20-day changes in units of average daily volume. Every feature at date t uses bars up to t only.
Rows before every indicator has warmed up are dropped, never back-filled.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FEATURE_SPEC_VERSION = "1.0"

INDICATOR_FEATURES: tuple[str, ...] = (
    # trend
    "sma_10_rel", "sma_20_rel", "sma_50_rel", "ema_12_rel", "ema_26_rel",
    "macd_rel", "macd_signal_rel", "macd_hist_rel",
    # momentum
    "rsi_14", "stoch_k", "stoch_d", "cci_20", "roc_10", "trix_30", "trix_signal",
    # volatility
    "atr_14_rel", "bb_lower_rel", "bb_upper_rel", "bb_bandwidth", "bb_percent",
    "kc_lower_rel", "kc_basis_rel", "kc_upper_rel",
    # volume
    "obv_change_20", "ad_change_20", "mfi_14", "vwap_rel",
    # price-based
    "return_1d", "log_return_1d", "hl_range", "oc_range",
    # volume-based
    "volume_sma_rel", "volume_ratio",
    # trend strength
    "adx_14",
)  # fmt: skip

PRICE_VOLUME_FEATURES: tuple[str, ...] = (
    "gap", "upper_shadow", "lower_shadow", "return_5d", "return_20d", "volatility_20d",
)  # fmt: skip

ALL_FEATURES: tuple[str, ...] = INDICATOR_FEATURES + PRICE_VOLUME_FEATURES

# Bars a symbol needs before its first complete feature row: SMA-50 / volume SMA-50 need 50 bars, TRIX(30, 9)
# needs 38 and MACD 33; we take the longest and keep a margin so that the EMAs have settled.
WARMUP_BARS = 60


def check_feature_names(names: list[str] | None) -> list[str]:
    """Validate a configured feature subset, keeping the spec's order."""
    if names is None:
        return list(ALL_FEATURES)
    unknown = sorted(set(names) - set(ALL_FEATURES))
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; the spec (v{FEATURE_SPEC_VERSION}) has {list(ALL_FEATURES)}")
    if not names:
        raise ValueError("features: the list must not be empty")
    return [n for n in ALL_FEATURES if n in set(names)]


def _cci(ta, high: pd.Series, low: pd.Series, close: pd.Series, length: int) -> pd.Series:
    """Commodity Channel Index from pandas-ta's parts.

    pandas-ta 0.4.71b0's ``ta.cci`` computes ``tp - sma / (c * mad)`` (an operator-precedence bug), which is
    neither CCI nor scale-free, and its rolling ``mad`` is a slow Python apply; the mean absolute deviation is
    taken here over a strided window view instead.
    """
    tp = ta.hlc3(high, low, close)
    mean = ta.sma(tp, length=length)
    x = tp.to_numpy(dtype="float64")
    mad = np.full(len(x), np.nan)
    if len(x) >= length:
        win = np.lib.stride_tricks.sliding_window_view(x, length)
        mad[length - 1 :] = np.abs(win - win.mean(axis=1, keepdims=True)).mean(axis=1)
    return (tp - mean) / (0.015 * pd.Series(mad, index=tp.index))


def _indicators(df: pd.DataFrame) -> dict[str, pd.Series]:
    import pandas_ta as ta  # imported here: its numba set-up costs seconds, not to be paid at import time

    o, h, l, c, v = (df[k] for k in ("open", "high", "low", "close", "volume"))
    macd = ta.macd(c, fast=12, slow=26, signal=9)
    stoch = ta.stoch(h, l, c, k=14, d=3, smooth_k=3)
    trix = ta.trix(c, length=30, signal=9)
    bb = ta.bbands(c, length=20, std=2.0)
    kc = ta.kc(h, l, c, length=20, scalar=2)
    adx = ta.adx(h, l, c, length=14)
    vol_sma_20 = ta.sma(v, length=20)
    vol_sma_50 = ta.sma(v, length=50)
    obv = ta.obv(c, v)
    ad = ta.ad(h, l, c, v)
    ret = ta.percent_return(c, length=1)

    def rel(x: pd.Series) -> pd.Series:
        return x / c - 1.0

    return {
        "sma_10_rel": rel(ta.sma(c, length=10)),
        "sma_20_rel": rel(ta.sma(c, length=20)),
        "sma_50_rel": rel(ta.sma(c, length=50)),
        "ema_12_rel": rel(ta.ema(c, length=12)),
        "ema_26_rel": rel(ta.ema(c, length=26)),
        "macd_rel": macd.iloc[:, 0] / c,
        "macd_signal_rel": macd.iloc[:, 2] / c,
        "macd_hist_rel": macd.iloc[:, 1] / c,
        "rsi_14": ta.rsi(c, length=14) / 100.0,
        "stoch_k": stoch.iloc[:, 0] / 100.0,
        "stoch_d": stoch.iloc[:, 1] / 100.0,
        "cci_20": _cci(ta, h, l, c, length=20) / 100.0,
        "roc_10": ta.roc(c, length=10) / 100.0,
        "trix_30": trix.iloc[:, 0],
        "trix_signal": trix.iloc[:, 1],
        "atr_14_rel": ta.atr(h, l, c, length=14) / c,
        "bb_lower_rel": rel(bb.iloc[:, 0]),
        "bb_upper_rel": rel(bb.iloc[:, 2]),
        "bb_bandwidth": bb.iloc[:, 3] / 100.0,
        "bb_percent": bb.iloc[:, 4],
        "kc_lower_rel": rel(kc.iloc[:, 0]),
        "kc_basis_rel": rel(kc.iloc[:, 1]),
        "kc_upper_rel": rel(kc.iloc[:, 2]),
        "obv_change_20": (obv - obv.shift(20)) / (20.0 * vol_sma_20),
        "ad_change_20": (ad - ad.shift(20)) / (20.0 * vol_sma_20),
        "mfi_14": ta.mfi(h, l, c, v, length=14) / 100.0,
        # Weekly-anchored VWAP: a daily-anchored one is just the typical price on daily bars.
        "vwap_rel": rel(ta.vwap(h, l, c, v, anchor="W")),
        "return_1d": ret,
        "log_return_1d": ta.log_return(c, length=1),
        "hl_range": (h - l) / c,
        "oc_range": (c - o) / o,
        "volume_sma_rel": vol_sma_20 / vol_sma_50 - 1.0,
        "volume_ratio": v / vol_sma_20,
        "adx_14": adx.iloc[:, 0] / 100.0,
        # price/volume features
        "gap": o / c.shift(1) - 1.0,
        "upper_shadow": (h - np.maximum(o, c)) / c,
        "lower_shadow": (np.minimum(o, c) - l) / c,
        "return_5d": c / c.shift(5) - 1.0,
        "return_20d": c / c.shift(20) - 1.0,
        "volatility_20d": ret.rolling(20).std(),
    }


def compute_symbol_features(
    bars: pd.DataFrame, horizon: int = 1, features: list[str] | None = None
) -> pd.DataFrame:
    """Features and target for one symbol's bars (sorted by date).

    Returns columns ``symbol, date, t, <features>, target`` (``t``: the bar's number within the symbol) where ``target`` is the close-to-close return from
    date t to t+horizon (NaN for the last ``horizon`` rows, which are kept: serving predicts from them).
    Rows inside the warm-up are dropped. A symbol with too little history yields an empty frame.
    """
    names = check_feature_names(features)
    if len(bars) <= WARMUP_BARS:
        columns = ["symbol", "date", "t", *names, "target"]
        return pd.DataFrame({c: pd.Series(dtype="float32") for c in columns}).astype(
            {"symbol": "str", "date": "datetime64[ns]", "t": "int32"}
        )
    bars = bars.sort_values("date").reset_index(drop=True)
    # pandas-ta's VWAP needs a DatetimeIndex to find its weekly anchor.
    indexed = bars.set_index(pd.DatetimeIndex(bars["date"]))
    values = _indicators(indexed)
    # The rest is plain numpy on one (rows, features) matrix: per-column pandas operations cost as much as the
    # indicators themselves.
    x = np.column_stack([values[name].to_numpy(dtype="float64") for name in names])
    x[np.isinf(x)] = np.nan
    close = bars["close"].to_numpy(dtype="float64")
    target = np.full(len(bars), np.nan)
    target[:-horizon] = close[horizon:] / close[:-horizon] - 1.0
    t = np.arange(len(bars), dtype=np.int32)  # bar number: windows check contiguity with it
    x, target, t = x[WARMUP_BARS:], target[WARMUP_BARS:], t[WARMUP_BARS:]
    # A feature can still be undefined after warm-up (e.g. zero volume makes volume_ratio 0/0). Carry the last
    # value forward within this symbol only; what is still missing is dropped with the row.
    x = _forward_fill(x)
    keep = ~np.isnan(x).any(axis=1)
    x, target, t = x[keep].astype(np.float32), target[keep].astype(np.float32), t[keep]
    out = pd.DataFrame(x, columns=names)
    out.insert(0, "t", t)
    out.insert(0, "date", bars["date"].to_numpy()[WARMUP_BARS:][keep])
    out.insert(0, "symbol", bars["symbol"].astype(str).to_numpy()[WARMUP_BARS:][keep])
    out["target"] = target
    return out


def _forward_fill(x: np.ndarray) -> np.ndarray:
    """Each column's NaNs replaced by the column's last earlier finite value (leading NaNs stay NaN)."""
    rows = np.arange(len(x))[:, None]
    last_seen = np.where(np.isnan(x), 0, rows)
    np.maximum.accumulate(last_seen, axis=0, out=last_seen)
    return x[last_seen, np.arange(x.shape[1])]
