"""The feature spec: 34 pandas-ta indicators and 6 price/volume features per day.

One model is trained across hundreds of tickers, so every feature is scale-free: price-level indicators are
expressed relative to the close, volume-level ones relative to the symbol's own average volume, cumulative ones
(OBV, A/D) as 20-day changes in units of average daily volume. Every feature at date t uses bars up to t only.
Rows before every indicator has warmed up are dropped, never back-filled.

Besides the features, each row carries the label (``target``) and a few raw market columns
(:data:`MARKET_COLUMNS`) that evaluation needs to decide whether a row could have been traded; they are never
model inputs.
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

LIQUIDITY_BARS = 20
MARKET_COLUMNS: tuple[str, ...] = ("close", "volume", "dollar_volume_20d", "entry_volume")
"""Raw columns kept beside the features for the tradable-universe filter: the close and volume of day t, the mean
traded value (close x volume) over the last 20 bars, and the volume of the day the label's position is entered
(t + label_delay; NaN when that day is not in the data yet). Not features: no model sees them."""


def min_history_bars(window: int, horizon: int, label_delay: int) -> int:
    """Bars a symbol needs for one full training window with a known label: warm-up + window + label span."""
    return WARMUP_BARS + window + label_delay + horizon


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


class _NaNOnFailure:
    """pandas-ta with every indicator call made total: ``None`` (pandas-ta's answer to a series shorter than the
    indicator's length, or one it cannot compute) becomes all-NaN of the input's length, so a short, constant or
    zero-volume history yields NaN rows, which the warm-up cut and the NaN filter below remove, instead of an
    ``AttributeError`` somewhere downstream."""

    MULTI_OUTPUT = frozenset({"macd", "stoch", "trix", "bbands", "kc", "adx"})

    def __init__(self, ta, index: pd.Index):
        self._ta, self._index = ta, index

    def __getattr__(self, name: str):
        fn = getattr(self._ta, name)

        def call(*args, **kwargs):
            out = fn(*args, **kwargs)
            if out is not None:
                return out
            if name in self.MULTI_OUTPUT:  # enough columns for any of their .iloc[:, k]
                return pd.DataFrame(np.nan, index=self._index, columns=range(8))
            return pd.Series(np.nan, index=self._index)

        return call


def _indicators(df: pd.DataFrame) -> dict[str, pd.Series]:
    import pandas_ta  # imported here: its numba set-up costs seconds, not to be paid at import time

    ta = _NaNOnFailure(pandas_ta, df.index)
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
    bars: pd.DataFrame,
    horizon: int = 1,
    features: list[str] | None = None,
    label_delay: int = 1,
    max_label_gap_days: int | None = None,
) -> pd.DataFrame:
    """Features, label and market columns for one symbol's bars (sorted by date).

    Returns columns ``symbol, date, t, <features>, target, <MARKET_COLUMNS>`` (``t``: the bar's number within the
    symbol). ``target`` is the return a position entered at the close ``label_delay`` bars after t and held for
    ``horizon`` bars earns: ``close[t+d+h] / close[t+d] - 1``. It is NaN for the last ``d + h`` rows (kept:
    serving predicts from them) and, when ``max_label_gap_days`` is set, for labels whose bars t .. t+d+h span more
    than ``d + h + max_label_gap_days`` business days (a halt inside the label: nobody could have traded it at
    those prices on those days). Rows inside the warm-up are dropped. A symbol with too little history yields an
    empty frame.
    """
    names = check_feature_names(features)
    if len(bars) <= WARMUP_BARS:
        columns = ["symbol", "date", "t", *names, "target", *MARKET_COLUMNS]
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
    volume = bars["volume"].to_numpy(dtype="float64")
    dates = bars["date"].to_numpy(dtype="datetime64[ns]")
    target = _label(close, dates, horizon, label_delay, max_label_gap_days)
    market = np.column_stack(
        [close, volume, _trailing_mean(close * volume, LIQUIDITY_BARS), _shifted(volume, label_delay)]
    )
    t = np.arange(len(bars), dtype=np.int32)  # bar number: windows check contiguity with it
    x, target, t, market = x[WARMUP_BARS:], target[WARMUP_BARS:], t[WARMUP_BARS:], market[WARMUP_BARS:]
    # A feature can still be undefined after warm-up (e.g. zero volume makes volume_ratio 0/0). Carry the last
    # value forward within this symbol only; what is still missing is dropped with the row.
    x = _forward_fill(x)
    keep = ~np.isnan(x).any(axis=1)
    x, target, t, market = x[keep].astype(np.float32), target[keep].astype(np.float32), t[keep], market[keep]
    out = pd.DataFrame(x, columns=names)
    out.insert(0, "t", t)
    out.insert(0, "date", dates[WARMUP_BARS:][keep])
    out.insert(0, "symbol", bars["symbol"].astype(str).to_numpy()[WARMUP_BARS:][keep])
    out["target"] = target
    for i, name in enumerate(MARKET_COLUMNS):
        out[name] = market[:, i]
    return out


def _label(
    close: np.ndarray, dates: np.ndarray, horizon: int, delay: int, max_gap_days: int | None
) -> np.ndarray:
    """``close[t+delay+horizon] / close[t+delay] - 1`` per bar t; NaN where the bars run out or span a halt."""
    span = delay + horizon
    target = np.full(len(close), np.nan)
    if len(close) <= span:
        return target
    target[:-span] = close[span:] / close[delay : len(close) - horizon] - 1.0
    if max_gap_days is not None:
        days = dates.astype("datetime64[D]")
        elapsed = np.busday_count(days[:-span], days[span:])
        target[:-span][elapsed > span + max_gap_days] = np.nan
    return target


def _trailing_mean(x: np.ndarray, length: int) -> np.ndarray:
    """Mean of the last ``length`` values up to and including each position (NaN before ``length`` values)."""
    out = np.full(len(x), np.nan)
    if len(x) >= length:
        csum = np.cumsum(np.r_[0.0, x])
        out[length - 1 :] = (csum[length:] - csum[:-length]) / length
    return out


def _shifted(x: np.ndarray, ahead: int) -> np.ndarray:
    """``x[t + ahead]`` at t (NaN past the end)."""
    out = np.full(len(x), np.nan)
    out[: len(x) - ahead] = x[ahead:]
    return out


def _forward_fill(x: np.ndarray) -> np.ndarray:
    """Each column's NaNs replaced by the column's last earlier finite value (leading NaNs stay NaN)."""
    rows = np.arange(len(x))[:, None]
    last_seen = np.where(np.isnan(x), 0, rows)
    np.maximum.accumulate(last_seen, axis=0, out=last_seen)
    return x[last_seen, np.arange(x.shape[1])]
