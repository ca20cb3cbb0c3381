"""All of raycast's configuration, in one place.

Every command reads one YAML file into :class:`RaycastConfig`. Each section is a pydantic model with
``extra="forbid"``, so a mistyped key is an error that names the key and the file instead of a setting that
silently does nothing. Configuration flows into Ray as plain data (``cfg.model_dump()``) and is re-validated on
the worker with :meth:`RaycastConfig.model_validate`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MODEL_NAMES = ("lstm", "cnn", "attention")
"""The base models, in the order the ensemble stacks their predictions."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------- data


class SyntheticConfig(Strict):
    """A seeded universe with a planted, known-strength predictable component."""

    n_symbols: int = Field(30, ge=2)
    n_days: int = Field(756, ge=120, description="business days of history")
    start: dt.date = dt.date(2015, 1, 2)
    n_sectors: int = Field(4, ge=1)
    signal_strength: float = Field(0.15, ge=0.0, le=1.0, description="0 gives a market with nothing to predict")
    signal_change: dt.date | None = Field(
        None, description="from this date on the planted signal has strength signal_strength_after (a regime change)"
    )
    signal_strength_after: float = Field(
        0.0,
        ge=-1.0,
        le=1.0,
        description="strength from signal_change on: 0 switches the signal off, a negative one reverses it (the same "
        "pattern now predicts the opposite move)",
    )
    bounce_bps: float = Field(0.0, ge=0, le=500, description="bid-ask bounce: noise on each printed close, in bps")
    messy: bool = Field(
        False, description="plant real-file oddities (late listings, halts, splits, odd tickers...): raycast.data.messy"
    )
    seed: int = 0


class SampleConfig(Strict):
    """Real daily bars that ship offline with the ``bokeh-sampledata`` package (2000-2013)."""

    symbols: list[str] = ["AAPL", "MSFT", "IBM", "GOOG"]
    adjust: bool = Field(
        True, description="scale the (unadjusted) bars by adj_close/close so splits do not show up as returns"
    )


class FilesConfig(Strict):
    """The user's own data: one long CSV/Parquet file, or a directory with one file per symbol."""

    path: str | None = None
    adjust: bool = Field(
        False, description="scale open/high/low/close by Adj Close / Close when an Adj Close column exists"
    )
    date_order: Literal["auto", "month_first", "day_first"] = Field(
        "auto",
        description="how all-number dates such as 03/04/2021 read; auto: month first unless some dates only read "
        "day first (13/01/2021), one order for the whole input",
    )


class QualityConfig(Strict):
    """What ingest does with the oddities of real histories. Each one is counted per symbol in the manifest.

    ``flag`` keeps the bars and counts them; ``cut`` drops the symbol's history up to and including the last
    occurrence (the symbol restarts after it); ``adjust`` (splits only) scales the bars before a split by its ratio;
    ``drop`` (bad ticks only) removes the bad bar itself.
    """

    # 10, not 5: exchange holidays (Lunar New Year, Golden Week) remove up to about 7 weekdays; a halt is longer
    halt_days: int = Field(10, ge=1, description="missing business days inside a history that make a halt")
    halts: Literal["flag", "cut"] = "flag"
    zero_volume_days: int = Field(5, ge=1, description="consecutive zero-volume bars that make a streak")
    zero_volume: Literal["flag", "cut"] = "flag"
    stale_days: int = Field(5, ge=2, description="consecutive bars with an unchanged close that make a stale stretch")
    stale: Literal["flag", "cut"] = "flag"
    splits: Literal["adjust", "cut", "flag"] = "adjust"
    # drop by default: one bar a hundred times off poisons every indicator that looks back over it, and a real
    # move of this size that undoes itself the next day is far rarer than a vendor's bad print
    bad_ticks: Literal["drop", "cut", "flag"] = "drop"
    bad_tick_ratio: float = Field(
        5.0,
        gt=1,
        description="a close this many times above or below the bars on both sides of it (which agree within "
        "half of that, in log terms) is a bad tick; so is a bar off by a split ratio that the next bar undoes",
    )
    # no 5-for-4: a 20-25% day is far more common than that split (real Hong Kong bars showed several)
    split_ratios: list[float] = Field(
        [2, 3, 4, 5, 8, 10, 20, 1.5], description="split ratios looked for, each also as a reverse split"
    )
    split_tolerance: float = Field(
        0.03,
        gt=0,
        lt=0.2,
        description="how close the overnight gap (previous close / open) must come to a split ratio; the day's close "
        "may stray four times as far (a split day has its own return on top)",
    )


class IngestConfig(Strict):
    source: Literal["synthetic", "sample", "files"] = "sample"
    quality: QualityConfig = QualityConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    sample: SampleConfig = SampleConfig()
    files: FilesConfig = FilesConfig()

    @model_validator(mode="after")
    def _files_need_a_path(self) -> IngestConfig:
        if self.source == "files" and not self.files.path:
            raise ValueError("ingest.source is 'files' but ingest.files.path is not set")
        return self


# ----------------------------------------------------------------------------------------- features


class SplitConfig(Strict):
    """Date splits. Explicit dates win; otherwise fractions of the sorted unique dates are used."""

    train_end: dt.date | None = None
    val_end: dt.date | None = None
    train_frac: float = Field(0.6, gt=0, lt=1)
    val_frac: float = Field(0.2, gt=0, lt=1)
    embargo_days: int | None = Field(
        None, ge=0, description="dates skipped between splits; defaults to the label's span (label_delay + horizon)"
    )


class WalkForwardConfig(Strict):
    folds: int = Field(0, ge=0, description="0 disables walk-forward evaluation")
    val_days: int = Field(126, ge=5)
    test_days: int = Field(126, ge=5)


class FeatureConfig(Strict):
    window: int = Field(30, ge=2, le=256)
    horizon: int = Field(1, ge=1, le=20, description="days the label's return spans")
    label_delay: int = Field(
        1,
        ge=0,
        le=5,
        description="days between the close a prediction is made at (t) and the close it trades at: the label is "
        "close[t+label_delay+horizon] / close[t+label_delay] - 1. 1 (the default) trades the next close, which a "
        "signal computed after the close of t can reach; 0 trades the very close that produced the signal and "
        "rewards bid-ask bounce",
    )
    max_label_gap_days: int | None = Field(
        10, ge=0, description="labels whose bars span more missing business days than this (a halt) are dropped"
    )
    min_history_bars: int | None = Field(
        None,
        ge=1,
        description="symbols with fewer bars are skipped; None: what the spec needs (warm-up + window + label span)",
    )
    normalization: Literal["zscore", "minmax", "robust"] = "robust"
    clip: float = Field(5.0, gt=0, description="normalized values are clipped to +/- this")
    features: list[str] | None = Field(None, description="a subset of the feature spec; None = all 40")
    split: SplitConfig = SplitConfig()
    walk_forward: WalkForwardConfig = WalkForwardConfig()
    symbols_per_task: int | None = Field(
        None, ge=1, description="symbols featurized by one Ray Data task; None: about 3 tasks per Ray CPU"
    )
    num_cpus_per_task: float = Field(1.0, gt=0)


# ------------------------------------------------------------------------------------------- models


class LSTMConfig(Strict):
    hidden_size: int = Field(128, ge=1)
    num_layers: int = Field(2, ge=1)
    bidirectional: bool = True
    dropout: float = Field(0.2, ge=0, lt=1)
    fc_size: int = Field(128, ge=1)
    readout: Literal["final", "last"] = Field(
        "final",
        description="'final': each direction's final state; 'last': the output at the last timestep, where the "
        "top backward direction has read one step only (its recurrent weights then never train)",
    )


class CNNConfig(Strict):
    filters: list[int] = [32, 64, 128]
    kernels: list[int] = [3, 5, 7]
    fc_sizes: list[int] = [128, 64]
    dropout: float = Field(0.3, ge=0, lt=1)

    @model_validator(mode="after")
    def _same_depth(self) -> CNNConfig:
        if len(self.filters) != len(self.kernels):
            raise ValueError("cnn.filters and cnn.kernels must have the same length")
        return self


class AttentionConfig(Strict):
    hidden_size: int = Field(128, ge=1)
    num_heads: int = Field(8, ge=1)
    num_layers: int = Field(2, ge=1)
    ff_size: int = Field(512, ge=1)
    fc_size: int = Field(64, ge=1)
    # 0 by measurement: at this width on planted universes, dropout 0.1 cost a quarter of the test IC (0.055
    # against 0.073 in two seeds; docs/performance.md), and at a small width it kept one seed from fitting at all
    dropout: float = Field(0.0, ge=0, lt=1)
    max_seq_len: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> AttentionConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError("attention.hidden_size must be divisible by attention.num_heads")
        return self


class EnsembleConfig(Strict):
    weight_hidden: int = Field(64, ge=1)
    meta_hidden: list[int] = [64, 32]
    dropout: float = Field(0.2, ge=0, lt=1)
    members: list[Literal["lstm", "cnn", "attention"]] = list(MODEL_NAMES)


class ModelsConfig(Strict):
    lstm: LSTMConfig = LSTMConfig()
    cnn: CNNConfig = CNNConfig()
    attention: AttentionConfig = AttentionConfig()
    ensemble: EnsembleConfig = EnsembleConfig()


# ----------------------------------------------------------------------------------------- training


class TrainConfig(Strict):
    models: list[Literal["lstm", "cnn", "attention"]] = list(MODEL_NAMES)
    window: int | None = Field(
        None,
        ge=2,
        le=256,
        description="days of feature rows each model reads; None: the window the feature dataset was built with. "
        "The rows do not depend on it, so it can change (and be tuned) without rebuilding the features",
    )
    concurrent: bool = Field(False, description="fit the base models at the same time instead of in turn")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(512, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_schedule: Literal["cosine", "plateau", "none"] = "cosine"
    # The defaults were chosen by measurement (README, "Forecast skill"): on planted universes at realistic
    # strengths the IC loss on rank-normal labels over whole dates trains steadily where MSE wanders, and a few
    # absurd prints do not move it.
    loss: Literal["mse", "huber", "ic"] = Field(
        "ic",
        description="'ic': minus the mean per-date Pearson correlation of output and label (needs batch_sampling "
        "'date'; each base's outputs are then put in label units by a line fit on its validation windows); 'mse' "
        "or 'huber': pointwise",
    )
    label_transform: Literal["rank_norm", "zscore", "winsorize", "none"] = Field(
        "rank_norm",
        description="per-date processing of the training label (raycast.train.labels): 'rank_norm' maps each "
        "date's returns to normal scores of their ranks, 'zscore' standardizes each date, 'winsorize' clips each "
        "date at label_clip robust standard deviations then standardizes it, 'none' standardizes by the training "
        "period's mean and std",
    )
    label_clip: float = Field(3.0, gt=0, description="winsorize: robust standard deviations kept around the median")
    batch_sampling: Literal["random", "date"] = Field(
        "date", description="'date': every batch holds whole dates (full cross-sections); 'random': any windows"
    )
    grad_clip: float = Field(1.0, gt=0)
    patience: int = Field(3, ge=1, description="epochs without validation improvement before stopping")
    # IC rather than MSE: with daily returns the loss barely moves while the ranking, what a quant trades, improves
    early_stop_metric: Literal["val_loss", "val_ic", "val_rank_ic"] = "val_ic"
    max_steps_per_epoch: int | None = Field(None, ge=1)
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(1.0, gt=0)
    bf16: bool = Field(False, description="bf16 autocast; only used on CUDA")
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(2, ge=0)
    seed: int = 0
    ensemble_epochs: int = Field(10, ge=1)
    ensemble_lr: float = Field(1e-3, gt=0)
    stacking_fraction: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="the later part of the validation period (this fraction of its dates) where the ensemble head "
        "learns; the bases early-stop on the earlier part only, a label span apart, so the head never learns from "
        "predictions that were selected on the same dates",
    )
    ensemble_shrinkage: float = Field(
        100.0,
        ge=0,
        description="prior strength holding the ensemble head at its start (a fixed average of the members, weights "
        "from their ICs shrunk toward equal): its output layers pay an L2 penalty toward the start of this / "
        "(windows it fits on), so thin data keeps it there",
    )

    @model_validator(mode="after")
    def _ic_loss_needs_dates(self) -> TrainConfig:
        if self.loss == "ic" and self.batch_sampling != "date":
            raise ValueError("train.loss 'ic' correlates predictions within each date: set train.batch_sampling: date")
        return self


class LightGBMConfig(Strict):
    """The gradient-boosted-trees baseline: the last day's features and a few lagged days, one row per window."""

    enabled: bool = True
    lags: list[int] = Field(
        [1, 2, 5], description="earlier days whose features join the last day's (1 = the day before); < window"
    )
    num_threads: int = Field(2, ge=1)
    num_boost_round: int = Field(500, ge=1)
    early_stopping_rounds: int = Field(30, ge=1, description="rounds without validation improvement before stopping")
    early_stop_metric: Literal["ic", "l2"] = Field(
        "ic", description="'ic': mean daily IC on the validation period, as the deep models stop on; 'l2': its MSE"
    )
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(31, ge=2)
    min_data_in_leaf: int = Field(200, ge=1)
    feature_fraction: float = Field(0.8, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    lambda_l2: float = Field(10.0, ge=0)
    seed: int = 0

    @field_validator("lags")
    @classmethod
    def _positive_unique_lags(cls, v: list[int]) -> list[int]:
        if any(lag < 1 for lag in v) or len(set(v)) != len(v):
            raise ValueError(f"lags must be distinct positive day counts, got {v}")
        return sorted(v)


class UniverseConfig(Strict):
    """Which rows could have been traded; metrics and backtests see only those."""

    min_price: float = Field(1.0, ge=0, description="close at t below this (in the data's currency) is untradable")
    min_dollar_volume: float = Field(
        1e6, ge=0, description="mean daily traded value (close x volume) over the last 20 bars below this is untradable"
    )
    skip_zero_volume: bool = Field(
        True, description="no trade on a row whose volume at t or on the entry day (t + label_delay) is 0 or unknown"
    )


class SpreadBucket(Strict):
    min_dollar_volume: float = Field(ge=0, description="the bucket holds rows whose 20-day traded value is at least this")
    bps: float = Field(ge=0, description="half-spread paid per unit of turnover in this bucket")


class EvaluateConfig(Strict):
    mode: Literal["walk_forward", "split"] = Field(
        "walk_forward",
        description="what `raycast evaluate` reports: 'walk_forward' retrains on expanding folds and scores each "
        "fold's test period; 'split' scores one registered model on its own validation and test periods",
    )
    folds: int | None = Field(
        None, ge=1, description="walk-forward folds; None: features.walk_forward.folds, or 3 when that is 0"
    )
    cost_bps: float = Field(
        5.0, ge=0, description="one-way cost per unit of turnover (fees, impact) in bps, paid on top of the spread"
    )
    spread: list[SpreadBucket] = Field(
        [
            SpreadBucket(min_dollar_volume=0, bps=25.0),
            SpreadBucket(min_dollar_volume=1e7, bps=10.0),
            SpreadBucket(min_dollar_volume=1e8, bps=3.0),
        ],
        description="half-spread by liquidity bucket (ascending min_dollar_volume, the first at 0); [] for none",
    )
    cost_sensitivity_bps: list[float] = Field(
        [0.0, 5.0, 20.0, 50.0], description="flat one-way costs of the report's cost-sensitivity table"
    )
    quantile: float = Field(0.2, gt=0, le=0.5, description="fraction of symbols held long and short")
    hold_quantile: float | None = Field(
        None,
        gt=0,
        le=0.5,
        description="holding band of the backtest: a name bought in the top (sold in the bottom) `quantile` is "
        "kept until it leaves this top (bottom) fraction, which trades less; None: rebalance to `quantile` daily",
    )
    hold_quantiles: list[float] = Field(
        [0.3, 0.4, 0.5],
        description="holding bands the report compares with the daily book, after costs (those above `quantile`)",
    )
    ridge_alpha: float = Field(1.0, ge=0)
    lightgbm: LightGBMConfig = LightGBMConfig()
    universe: UniverseConfig = UniverseConfig()
    flag_day_return: float = Field(
        0.1, gt=0, description="a book's one-day return beyond +/- this is listed with the symbols behind it"
    )
    plausible_sharpe: float = Field(3.0, gt=0, description="a backtest Sharpe above this gets the warning box")
    plausible_ic: float = Field(0.1, gt=0, description="a mean daily IC above this gets the warning box")

    @field_validator("spread")
    @classmethod
    def _ascending_buckets(cls, v: list[SpreadBucket]) -> list[SpreadBucket]:
        bounds = [b.min_dollar_volume for b in v]
        if v and (bounds[0] != 0 or any(a >= b for a, b in zip(bounds, bounds[1:], strict=False))):
            raise ValueError(f"spread buckets need ascending min_dollar_volume starting at 0, got {bounds}")
        return v

    @field_validator("hold_quantiles")
    @classmethod
    def _bands_in_range(cls, v: list[float]) -> list[float]:
        if any(not 0 < h <= 0.5 for h in v):
            raise ValueError(f"hold_quantiles must each be in (0, 0.5], got {v}")
        return v

    @model_validator(mode="after")
    def _band_holds_the_quantile(self) -> EvaluateConfig:
        if self.hold_quantile is not None and self.hold_quantile < self.quantile:
            raise ValueError(
                f"evaluate.hold_quantile ({self.hold_quantile}) is below evaluate.quantile ({self.quantile}): a "
                "name is bought in the top quantile, so it can only be kept in a band at least as wide"
            )
        return self

    @field_validator("cost_sensitivity_bps")
    @classmethod
    def _non_negative_costs(cls, v: list[float]) -> list[float]:
        if any(c < 0 for c in v):
            raise ValueError(f"cost_sensitivity_bps must be >= 0, got {v}")
        return v


# ------------------------------------------------------------------------------------------- tuning


class SearchDimension(Strict):
    """One entry of a search space: a choice, a uniform or a log-uniform range."""

    type: Literal["choice", "uniform", "loguniform", "randint"]
    values: list[Any] | None = None
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _complete(self) -> SearchDimension:
        if self.type == "choice" and not self.values:
            raise ValueError("a 'choice' dimension needs a non-empty 'values' list")
        if self.type != "choice" and (self.low is None or self.high is None or self.low >= self.high):
            raise ValueError(f"a '{self.type}' dimension needs 'low' < 'high'")
        return self


class TuneConfig(Strict):
    """``raycast tune``: which model, how many trials, how they are scheduled and what each one gets."""

    model: Literal["lstm", "cnn", "attention", "ensemble"] = "lstm"
    num_samples: int = Field(8, ge=1)
    search_alg: Literal["random", "optuna"] = "random"
    scheduler: Literal["asha", "fifo"] = "asha"
    metric: Literal["val_rank_ic", "val_loss"] = Field(
        "val_rank_ic", description="objective: val_rank_ic is maximized, val_loss minimized"
    )
    max_epochs: int = Field(6, ge=1, description="epochs of a trial (and of the best config's train.epochs)")
    grace_period: int = Field(1, ge=1)
    reduction_factor: int = Field(2, ge=2)
    max_concurrent_trials: int | None = Field(None, ge=1)
    trainer: Literal["function", "torch"] = Field(
        "function",
        description="'function': a trial trains in its own process (cheap start-up); 'torch': a Ray Train "
        "TorchTrainer per trial (and per fold) with train.num_workers workers, for multi-worker trials",
    )
    cpus_per_trial: float = Field(1.0, gt=0, description="per trial; per worker with trainer 'torch'")
    gpus_per_trial: float = Field(0.0, ge=0, description="fractions pack small trials onto one GPU")
    seeds: int = Field(3, ge=1, description="seeds the best configuration is re-run with")
    folds: int | None = Field(
        None,
        ge=0,
        description="walk-forward folds a base-model trial is scored on (tune.metric averaged over their validation "
        "periods, the folds trained side by side as the trial's CPUs allow); None: features.walk_forward.folds; "
        "0: the feature dataset's own split",
    )
    top_k: int = Field(10, ge=1, description="rows of the printed results table")
    search_space: dict[str, SearchDimension] = {}


# ------------------------------------------------------------------------------------------ serving


class ServeConfig(Strict):
    version: str | None = Field(
        None, description="registry version to serve; None: the served one (registry/served.json), else the newest"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0.25, gt=0)
    num_gpus: float = Field(0.0, ge=0)
    max_batch_size: int = Field(64, ge=1)
    batch_wait_timeout_s: float = Field(
        0.0, ge=0, description="base models: wait this long to fill a batch (@serve.batch); 0: batch what queued meanwhile"
    )
    api_key: str | None = None
    max_body_bytes: int = Field(4_000_000, ge=1024)
    max_ongoing_requests: int = Field(256, ge=1, description="per replica; Serve's default of 5 would cap batching")
    max_concurrent_batches: int = Field(2, ge=1, description="ingress and ensemble batches in flight per replica")
    torch_threads: int = Field(1, ge=1, description="intra-op threads per replica (replicas share the cores)")
    direct_ingress: bool = Field(
        False,
        description="the ingress replicas serve HTTP themselves, each on its own port (Serve's direct ingress), "
        "instead of behind Serve's proxy; `raycast serve` prints their addresses",
    )
    draining_period_s: float = Field(
        2.0,
        ge=0,
        description="direct ingress: how long a stopping ingress replica keeps answering, so that whatever routes "
        "to it (a load balancer polling Serve's target groups) can drop it first; Serve's own default is 30 s",
    )
    worker_niceness: int = Field(
        0,
        ge=0,
        le=19,
        description="nice value of the serving processes (replicas, Serve's controller and proxy); Ray starts its "
        "workers at 15, behind everything else on the node",
    )
    predict_concurrency: int = Field(1, ge=1, description="model actors scoring in `raycast predict`")
    reload_interval_s: float = Field(
        30.0,
        ge=0,
        description="each ingress replica checks the published feature version this often and, when a new one fits "
        "the served model, swaps its stored rows in without a redeploy; 0: serve the model's own feature dataset",
    )
    prediction_log: bool = Field(
        True, description="append every served and batch-scored prediction to <storage>/predictions/<version>/"
    )
    log_flush_rows: int = Field(1000, ge=1, description="prediction log: write a file once this many rows wait")
    log_flush_s: float = Field(5.0, gt=0, description="prediction log: write what waits at least this often")


class PipelineConfig(Strict):
    """Which stages ``raycast pipeline`` (and ``jobs/pipeline.py``) runs, in this order."""

    stages: list[Literal["ingest", "features", "train", "evaluate", "tune", "predict"]] = [
        "ingest", "features", "train", "evaluate",
    ]  # fmt: skip
    train_tuned: bool = Field(
        True, description="when a tune stage runs before train, train the tuned model with the best parameters found"
    )


class MonitorConfig(Strict):
    """`raycast monitor`: realized skill of the logged predictions, feature drift, and the rules that flag decay."""

    window: int = Field(
        20, ge=2, description="dates in the rolling IC mean and its band, and recent feature dates in the drift check"
    )
    confidence_z: float = Field(
        1.96, gt=0, description="band of the rolling mean: mean +/- this x std / sqrt(window) (1.96: 95%)"
    )
    psi_threshold: float = Field(0.25, gt=0, description="population stability index above which a feature drifted")
    psi_features: int = Field(3, ge=1, description="drifted features that fire the drift rule")
    psi_bins: int = Field(10, ge=2, le=100, description="quantile bins of the training period the PSI compares")
    fade_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description="skill-fade rule: fire when the upper end of the rolling Rank IC band lies below this fraction of "
        "the Rank IC the version showed on its test period at evaluation (only for a version evaluated with a "
        "positive Rank IC); 0: off",
    )


class DailyConfig(Strict):
    """`raycast daily`: one trading day's cycle, and what it does when a decay rule fires."""

    retrain_on_decay: bool = Field(True, description="train and compare a candidate when a monitor rule fires")
    recent_days: int | None = Field(
        None,
        ge=5,
        description="the recent window: the candidate's test period, where it and the served model are both scored "
        "out of sample; None: monitor.window",
    )
    val_days: int = Field(60, ge=5, description="the candidate's validation period, ending an embargo before the window")
    min_improvement: float = Field(
        0.0,
        ge=0,
        description="roll the candidate out only when its daily Rank IC on the recent window beats the served "
        "model's by more than this with confidence (the band of the mean per-date difference, monitor.confidence_z)",
    )
    retrain_cooldown_days: int = Field(
        5,
        ge=0,
        description="market days after a candidate was trained (rolled out or not) during which an alert trains no "
        "other; 0: every alerting day may train one",
    )


class RayConfig(Strict):
    address: str | None = Field(None, description="None starts a local Ray; 'auto' joins a running cluster")
    num_cpus: int | None = None
    data_progress_bars: bool = Field(False, description="Ray Data's per-operator bars; the stages print their own")
    train_poll_interval_s: float = Field(
        0.25,
        gt=0,
        description="how often Ray Train's controller polls its workers (Ray's default: 2 s); a fit ends at the "
        "first poll after its loop, so this is latency added to every trainer. Set for a local Ray; on a cluster "
        "the nodes' environment sets it (cluster.yaml)",
    )


# ------------------------------------------------------------------------------------------- the lot


class RaycastConfig(Strict):
    name: str = "raycast"
    storage: str = Field(".raycast", description="local path or any URI pyarrow supports (s3://...)")
    ray: RayConfig = RayConfig()
    ingest: IngestConfig = IngestConfig()
    features: FeatureConfig = FeatureConfig()
    models: ModelsConfig = ModelsConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tune: TuneConfig = TuneConfig()
    serve: ServeConfig = ServeConfig()
    pipeline: PipelineConfig = PipelineConfig()
    monitor: MonitorConfig = MonitorConfig()
    daily: DailyConfig = DailyConfig()

    @field_validator("storage")
    @classmethod
    def _storage_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("storage must not be empty")
        return v


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the key."""


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def set_by_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data['a']['b'] = value`` for ``dotted='a.b'``, creating levels as needed."""
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {dotted}: {part} is not a section")
    node[leaf] = value


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["train.epochs=3", "storage=/data"]`` -> ``{"train.epochs": 3, "storage": "/data"}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"an override must look like key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def parse_config(data: dict[str, Any] | None, source: str = "<dict>") -> RaycastConfig:
    try:
        return RaycastConfig.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RaycastConfig:
    """Read a YAML config (or the defaults when ``path`` is None) and apply dotted-key overrides.

    ``overrides`` come from the command line: ``{"train.epochs": 2}`` wins over the file.
    """
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        from raycast import fs

        source = fs.display(path)
        p = fs.location(path)
        if not fs.is_file(p):
            raise ConfigError(f"config file not found: {source}")
        try:
            loaded = yaml.safe_load(fs.read_text(p))
        except yaml.YAMLError as err:
            raise ConfigError(f"{source} is not valid YAML: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{source} must hold a mapping at the top level")
        data = loaded or {}
    for key, value in (overrides or {}).items():
        if value is not None:
            set_by_path(data, key, value)
    return parse_config(data, source)


def dump_config(cfg: BaseModel, path: str | Path) -> None:
    """Write a config as YAML that :func:`load_config` reads back (a local path or a storage URI).

    Credentials in storage URIs are left out (:func:`raycast.credentials.redact_data`): read back, the config
    reaches the same storage with the environment's credentials.
    """
    from raycast import credentials, fs

    fs.write_text(path, yaml.safe_dump(credentials.redact_data(cfg.model_dump(mode="json")), sort_keys=False))
