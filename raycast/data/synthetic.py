"""A seeded synthetic universe with a planted, known-strength predictable component.

Daily close-to-close return of symbol i from t to t+1::

    r[i,t+1] = beta_i * m[t+1] + gamma_i * s[k(i),t+1] + mu[i,t-d] + sigma[i,t] * eps[i,t+1]

``d`` is the label delay (:attr:`FeatureConfig.label_delay`): what is known at the close of t predicts the return
from the close of t+d to the close of t+d+1, the one a signal computed after the close of t can trade. With the
default d = 1 the return into the next close is pure noise given the past, so a model can only show skill on the
tradable label.

* ``m`` is a market factor, ``s`` one factor per sector (symbols are spread evenly over ``n_sectors``);
  betas and sector loadings are drawn around 1.
* ``sigma[i,t]`` is the idiosyncratic volatility for the next day, a GARCH(1,1) recursion (volatility
  clustering); idiosyncratic annualized vol is 15-30%, total vol about 22-35%.
* ``mu[i,t] = c * sigma[i,t] * g[i,t]`` is the planted expected return of the label at t, known at t. ``g`` is a nonlinear function
  of what a 30-day feature window sees: short-term reversal ``-0.5 tanh(sum of last 5 returns / (sigma sqrt 5))``,
  continuation of one lagged day ``tanh(1.5 r[t-7] / sigma)`` (visible inside the window, but blurred in any
  single day's features: a sequence model can beat a regression on the last day), and a volume-confirmed move
  ``0.5 tanh(log(volume_t / mean volume of last 20 days)) sign(r_t)``, divided by a constant so it has roughly
  unit standard deviation.
* ``c`` is chosen from ``signal_strength`` so the oracle IC is close to it; strength 0 gives ``mu = 0``.
  With ``signal_change`` set, ``c`` is chosen from ``signal_strength_after`` for the dates from it on: 0 switches
  the signal off there (``mu = 0``), a negative strength reverses it (``c < 0``: the same pattern, opposite move).

The oracle IC (the expected per-date cross-sectional Pearson correlation between ``mu_t`` and ``r_{t+d+1}``,
averaged over dates) is computed semi-analytically: for every date the generator's own ``mu_t``, ``sigma_t``,
loadings and factor variances are combined with fresh draws of the factor and idiosyncratic shocks from their
known distributions (a separate random stream). Realized returns are never looked at.

Prices are cumulated returns (starting between 20 and 200); returns are floored at -50% so prices stay
positive even for extreme strengths (it never binds at realistic ones). The open gaps from the previous close,
high/low extend beyond open and close, and volume is lognormal around a per-symbol base and rises with
``|r_t| / sigma``. A burn-in of ``BURN_IN`` days is simulated and dropped, so every output date has full windows.

``bounce_bps`` adds bid-ask bounce: each printed close is the true price times ``exp(b z)`` with fresh noise every
day, so the same-close return reverses the last one (predictable from the last bar, at the very close that
printed it) while the tradable label, entered one close later, cannot see it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from raycast.config import SyntheticConfig
from raycast.data.schema import canonical_bars

BURN_IN = 60
TRADING_DAYS = 252
MARKET_VOL = 0.15  # annualized
SECTOR_VOL = 0.08
IDIO_VOL = (0.15, 0.30)
GARCH_ALPHA, GARCH_BETA = 0.08, 0.90
VOLUME_SENSITIVITY = 0.35  # d log(volume) / d (|r| / sigma)
VOLUME_NOISE = 0.25
G_SCALE = 0.96  # empirical std of the raw signal; makes g roughly unit-variance
LAG = 7  # the lagged return in g: a sequence model sees it in the window, the last day's features barely do
# Part of g moves with the market (a market-wide move shifts everyone's 5-day sum), so its cross-sectional
# variance, which is what the IC sees, is only about this fraction of its total variance (measured).
G_CROSS_SECTION_VAR = 0.70
MAX_STRENGTH = 0.99  # strength 1 would need an infinitely large planted component
RETURN_FLOOR = -0.5
ORACLE_DRAWS_BUDGET = 4_000_000  # simulated (date, draw, symbol) cells for the oracle IC


@dataclass(frozen=True)
class SyntheticUniverse:
    """Generated bars plus the ground truth that produced them."""

    bars: pd.DataFrame
    expected_return: pd.DataFrame  # [symbol, date, mu]: planted expected next-day return known at date
    oracle_ic: float
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Params:
    sector: np.ndarray
    beta: np.ndarray
    gamma: np.ndarray
    h_bar: np.ndarray  # long-run idiosyncratic daily variance
    p0: np.ndarray
    v0: np.ndarray
    sigma_m: float
    sigma_s: float


def _draw_params(rng: np.random.Generator, n: int, k: int) -> _Params:
    daily = np.sqrt(TRADING_DAYS)
    return _Params(
        sector=rng.permutation(np.arange(n) % k),
        beta=np.clip(rng.normal(1.0, 0.2, n), 0.5, 1.5),
        gamma=np.clip(rng.normal(1.0, 0.2, n), 0.5, 1.5),
        h_bar=(rng.uniform(*IDIO_VOL, n) / daily) ** 2,
        p0=np.exp(rng.uniform(np.log(20.0), np.log(200.0), n)),
        v0=np.exp(rng.normal(np.log(1e6), 1.0, n)),
        sigma_m=MARKET_VOL / daily,
        sigma_s=SECTOR_VOL / daily,
    )


def _factor_dispersion(p: _Params, k: int) -> float:
    """Expected cross-sectional variance (ddof 0) of the factor part of a day's returns."""
    n = len(p.beta)
    market = p.sigma_m**2 * np.var(p.beta)
    per_sector = np.bincount(p.sector, weights=p.gamma, minlength=k)
    sector = p.sigma_s**2 * (np.mean(p.gamma**2) - np.sum(per_sector**2) / n**2)
    return float(market + sector)


def _signal_scale(s: float, p: _Params, k: int) -> float:
    """``c`` such that ``c q / sqrt(c^2 q^2 + 1 + f) ~= s``.

    ``q^2`` is the cross-sectional variance of g and ``f`` the factor-to-idiosyncratic variance ratio; the exact
    oracle IC is computed afterwards, this only aims the strength.
    """
    if s <= 0:
        return 0.0
    s = min(s, MAX_STRENGTH)
    n = len(p.beta)
    f = _factor_dispersion(p, k) / (np.mean(p.h_bar) * (1 - 1 / n))
    return float(s * np.sqrt((1 + f) / G_CROSS_SECTION_VAR) / np.sqrt(1 - s * s))


PATTERN_TERMS = ("reversal", "lagged", "volume")


def planted_terms(
    ret5: np.ndarray, lagged: np.ndarray, volume_ratio: np.ndarray, last: np.ndarray, sig: np.ndarray
) -> dict[str, np.ndarray]:
    """The three terms of the raw ``g`` (:data:`PATTERN_TERMS`), from the last 5 returns' sum, the return ``LAG``
    days back, today's volume over its 20-day mean, today's return and the volatility they are measured in."""
    return {
        "reversal": -0.5 * np.tanh(ret5 / (sig * np.sqrt(5))),  # short-term reversal: seen by the last day's features
        "lagged": np.tanh(1.5 * lagged / sig),  # one lagged day: seen only inside the window
        "volume": 0.5 * np.tanh(np.log(volume_ratio)) * np.sign(last),  # volume-confirmed move
    }


def planted_pattern(
    ret5: np.ndarray, lagged: np.ndarray, volume_ratio: np.ndarray, last: np.ndarray, sig: np.ndarray
) -> np.ndarray:
    """The raw ``g``, the sum of :func:`planted_terms` (``/ G_SCALE`` makes it roughly unit-variance)."""
    terms = planted_terms(ret5, lagged, volume_ratio, last, sig)
    return terms["reversal"] + terms["lagged"] + terms["volume"]


def observable_terms(bars: pd.DataFrame) -> pd.DataFrame:
    """The planted pattern's terms rebuilt from the bars alone: [symbol, date, *PATTERN_TERMS], each term times
    the volatility, so their sum is the planted expected return up to the scale ``c``.

    What a model could learn at best from what it sees. The generator's ``sigma`` (the idiosyncratic GARCH
    volatility, not in the bars) is replaced by the 20-day standard deviation of close-to-close returns, which
    the features carry; everything else the pattern reads is in the bars. Dates without 20 returns are NaN.
    """
    wide = bars.pivot(index="date", columns="symbol", values=["close", "volume"])
    close, volume = wide["close"], wide["volume"]
    r = close.pct_change(fill_method=None)
    sig = r.rolling(20).std()
    terms = planted_terms(
        r.rolling(5).sum().to_numpy(), r.shift(LAG).to_numpy(),
        (volume / volume.rolling(20).mean()).to_numpy(), r.to_numpy(), sig.to_numpy(),
    )  # fmt: skip
    columns = {name: pd.DataFrame(sig.to_numpy() * t, index=close.index, columns=close.columns).stack(future_stack=True)
               for name, t in terms.items()}  # fmt: skip
    return pd.DataFrame(columns).rename_axis(["date", "symbol"]).reset_index()[["symbol", "date", *PATTERN_TERMS]]


def observable_pattern(bars: pd.DataFrame, terms: tuple[str, ...] = PATTERN_TERMS) -> pd.DataFrame:
    """[symbol, date, mu]: the sum of some of :func:`observable_terms` (all of them: the whole pattern)."""
    unknown = set(terms) - set(PATTERN_TERMS)
    if unknown or not terms:
        raise ValueError(f"terms must be some of {PATTERN_TERMS}, got {terms}")
    frame = observable_terms(bars)
    return frame[["symbol", "date"]].assign(mu=frame[list(terms)].sum(axis=1, skipna=False))


def _simulate(
    p: _Params, c: float, rng: np.random.Generator, t_total: int, k: int, delay: int,
    change: tuple[int, float] | None = None,
) -> dict[str, np.ndarray]:
    """Run the recursion day by day, vectorized over symbols; returns (t_total, n) arrays.

    ``change`` = (t, c'): from step t on the planted component is scaled by c' instead of c.
    """
    n = len(p.beta)
    # Every shock is drawn up front, so the same seed gives the same shocks at any signal strength.
    m = rng.standard_normal(t_total) * p.sigma_m
    s = rng.standard_normal((t_total, k)) * p.sigma_s
    eps = rng.standard_normal((t_total, n))
    vnoise = rng.standard_normal((t_total, n))
    r = np.zeros((t_total, n))
    h = np.empty((t_total, n))
    vol = np.empty((t_total, n))
    mu = np.zeros((t_total, n))
    h[0] = p.h_bar
    vol[0] = p.v0 * np.exp(VOLUME_NOISE * vnoise[0])
    omega = p.h_bar * (1 - GARCH_ALPHA - GARCH_BETA)
    for t in range(t_total):
        sig = np.sqrt(h[t])
        if change is not None and t == change[0]:
            c = change[1]
        if c:
            ret5 = r[max(0, t - 4) : t + 1].sum(axis=0)
            vratio = vol[t] / vol[max(0, t - 19) : t + 1].mean(axis=0)
            mu[t] = c * sig * planted_pattern(ret5, r[max(0, t - LAG)], vratio, r[t], sig) / G_SCALE
        if t + 1 == t_total:
            break
        z = eps[t + 1]
        planted = mu[t - delay] if t >= delay else 0.0
        ret = p.beta * m[t + 1] + p.gamma * s[t + 1, p.sector] + planted + sig * z
        r[t + 1] = np.maximum(ret, RETURN_FLOOR)
        h[t + 1] = omega + GARCH_ALPHA * h[t] * z * z + GARCH_BETA * h[t]
        vol[t + 1] = p.v0 * np.exp(VOLUME_SENSITIVITY * (np.abs(r[t + 1]) / sig - 1.0) + VOLUME_NOISE * vnoise[t + 1])
    return {"r": r, "h": h, "vol": vol, "mu": mu}


def _oracle_ic(mu: np.ndarray, h: np.ndarray, p: _Params, k: int, rng: np.random.Generator) -> tuple[float, int]:
    """Expected mean per-date corr(mu_t, r_{t+1}) from fresh draws of the known noise model.

    ``mu`` and ``h`` are the (dates, symbols) arrays for the dates that have a next day.
    """
    n_dates, n = mu.shape
    if not np.any(mu):
        return 0.0, 0
    draws = int(np.clip(ORACLE_DRAWS_BUDGET // (n_dates * n), 4, 64))
    total, count = 0.0, 0
    chunk = max(1, 1_000_000 // (draws * n))
    for lo in range(0, n_dates, chunk):
        mu_c, sig_c = mu[lo : lo + chunk, None, :], np.sqrt(h[lo : lo + chunk, None, :])
        rows = mu_c.shape[0]
        m = rng.standard_normal((rows, draws, 1)) * p.sigma_m
        s = rng.standard_normal((rows, draws, k)) * p.sigma_s
        noise = p.beta * m + p.gamma * s[:, :, p.sector] + sig_c * rng.standard_normal((rows, draws, n))
        ret = mu_c + noise
        a = mu_c - mu_c.mean(axis=-1, keepdims=True)
        b = ret - ret.mean(axis=-1, keepdims=True)
        denom = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
        corr = np.divide((a * b).sum(-1), denom, out=np.zeros_like(denom), where=denom > 0)
        total += corr.sum()
        count += corr.size
    return float(total / count), draws


def _ohlcv(
    p: _Params, sim: dict[str, np.ndarray], rng: np.random.Generator, bounce: float, bounce_rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Consistent, positive OHLC and volume for the output days (the rows after the burn-in)."""
    r, h = sim["r"], sim["h"]
    growth = np.cumprod(1 + r, axis=0)
    close_all = p.p0 * growth / growth[BURN_IN]
    if bounce:  # its own stream: a bounce changes nothing else about the universe
        close_all = close_all * np.exp(bounce * bounce_rng.standard_normal(close_all.shape))
    close, prev = close_all[BURN_IN:], close_all[BURN_IN - 1 : -1]
    sig = np.sqrt(h[BURN_IN - 1 : -1])  # vol known at the previous close
    shape = close.shape
    open_ = prev * np.exp(0.25 * sig * rng.standard_normal(shape))
    high = np.maximum(open_, close) * np.exp(np.abs(0.5 * sig * rng.standard_normal(shape)))
    low = np.minimum(open_, close) * np.exp(-np.abs(0.5 * sig * rng.standard_normal(shape)))
    return {"open": open_, "high": high, "low": low, "close": close, "volume": sim["vol"][BURN_IN:]}


def _long(values: dict[str, np.ndarray], symbols: list[str], dates: pd.DatetimeIndex) -> pd.DataFrame:
    """(dates, symbols) arrays to a long frame ordered by symbol then date."""
    n_days, n = len(dates), len(symbols)
    frame = pd.DataFrame(
        {
            "symbol": pd.Series(np.repeat(np.array(symbols, dtype=object), n_days), dtype="str"),
            "date": np.tile(dates.to_numpy("datetime64[ns]"), n),
        }
    )
    for name, arr in values.items():
        frame[name] = np.ascontiguousarray(arr.T).ravel()
    return frame


def generate_synthetic(cfg: SyntheticConfig, label_delay: int = 1) -> SyntheticUniverse:
    """Generate the universe described in the module docstring; identical output for identical arguments.

    ``label_delay`` is the features' (see the module docstring): the signal is planted on the label they train on.
    """
    n, k, n_days = cfg.n_symbols, min(cfg.n_sectors, cfg.n_symbols), cfg.n_days
    # spawn(5) starts with the same four streams as spawn(4): the bounce stream leaves the others as they were
    param_rng, path_rng, ohlc_rng, oracle_rng, bounce_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(5)
    )
    p = _draw_params(param_rng, n, k)
    c = _signal_scale(cfg.signal_strength, p, k)
    dates = pd.bdate_range(start=pd.Timestamp(cfg.start), periods=n_days)
    change, switch = None, n_days
    if cfg.signal_change is not None:
        switch = int(dates.searchsorted(pd.Timestamp(cfg.signal_change)))
        after = cfg.signal_strength_after
        change = (BURN_IN + switch, float(np.sign(after)) * _signal_scale(abs(after), p, k))
    sim = _simulate(p, c, path_rng, BURN_IN + n_days, k, label_delay, change)

    width = max(3, len(str(n - 1)))
    symbols = [f"SYN{i:0{width}d}" for i in range(n)]
    bars = canonical_bars(_long(_ohlcv(p, sim, ohlc_rng, cfg.bounce_bps / 1e4, bounce_rng), symbols, dates))
    mu = sim["mu"][BURN_IN:]
    expected = _long({"mu": mu}, symbols, dates)
    # mu_t pairs with the return into t+d+1, whose noise has the variance h[t+d]; the last d+1 dates have no such
    # return, so they are left out of the oracle IC like they are of any realized IC.
    h = sim["h"][BURN_IN:]
    oracle_ic, draws = _oracle_ic(mu[: n_days - 1 - label_delay], h[label_delay : n_days - 1], p, k, oracle_rng)
    regimes = {}
    if change is not None:  # each regime's own oracle IC (the dates of mu that have a return)
        last = n_days - 1 - label_delay
        cut = min(switch, last)
        regimes = {
            "signal_change": dates[min(switch, n_days - 1)].date().isoformat(),
            "signal_strength_after": cfg.signal_strength_after,
            "signal_scale_after": change[1],
            "oracle_ic_before": _oracle_ic(mu[:cut], h[label_delay : label_delay + cut], p, k, oracle_rng)[0],
            "oracle_ic_after": _oracle_ic(mu[cut:last], h[label_delay + cut : n_days - 1], p, k, oracle_rng)[0],
        }

    info = {
        "generator": "raycast.data.synthetic/1",
        "seed": cfg.seed,
        "n_symbols": n,
        "n_days": n_days,
        "n_sectors": k,
        "start": dates[0].date().isoformat(),
        "signal_strength": cfg.signal_strength,
        "label_delay": label_delay,
        "bounce_bps": cfg.bounce_bps,
        "signal_scale": c,
        "oracle_ic": oracle_ic,
        "oracle_ic_draws_per_date": draws,
        **regimes,
        "sectors": {sym: int(sec) for sym, sec in zip(symbols, p.sector, strict=True)},
    }
    return SyntheticUniverse(bars=bars, expected_return=expected, oracle_ic=oracle_ic, info=info)
