"""The feature spec, no look-ahead, splits with embargo, normalization, windows and the Ray Data pipeline."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from raycast.config import FeatureConfig, SyntheticConfig
from raycast.data.synthetic import generate_synthetic
from raycast.features.normalize import fit_normalizer
from raycast.features.spec import (
    ALL_FEATURES,
    INDICATOR_FEATURES,
    MARKET_COLUMNS,
    PRICE_VOLUME_FEATURES,
    WARMUP_BARS,
    check_feature_names,
    compute_symbol_features,
)
from raycast.features.splits import make_split, make_walk_forward
from raycast.features.store import FeatureBlocks
from raycast.features.windows import cut_windows, window_ends


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    universe = generate_synthetic(SyntheticConfig(n_symbols=3, n_days=400, seed=7))
    return universe.bars


def one_symbol(bars: pd.DataFrame, i: int = 0) -> pd.DataFrame:
    sym = sorted(bars["symbol"].unique())[i]
    return bars[bars["symbol"] == sym].reset_index(drop=True)


def test_spec_has_40_named_features():
    assert len(INDICATOR_FEATURES) == 34 and len(PRICE_VOLUME_FEATURES) == 6
    assert len(ALL_FEATURES) == 40 and len(set(ALL_FEATURES)) == 40
    assert check_feature_names(["rsi_14", "adx_14"]) == ["rsi_14", "adx_14"]
    with pytest.raises(ValueError, match="unknown feature"):
        check_feature_names(["rsi_14", "not_a_feature"])


def test_features_are_complete_after_warmup(bars):
    b = one_symbol(bars)
    f = compute_symbol_features(b)
    assert list(f.columns) == ["symbol", "date", "t", *ALL_FEATURES, "target", *MARKET_COLUMNS]
    # warm-up rows are dropped, not back-filled: the first row is bar number WARMUP_BARS
    assert f["date"].iloc[0] == b["date"].iloc[WARMUP_BARS] and f["t"].iloc[0] == WARMUP_BARS
    assert len(f) == len(b) - WARMUP_BARS
    assert np.isfinite(f[list(ALL_FEATURES)].to_numpy()).all()


def test_no_look_ahead(bars):
    """Perturbing any future bar leaves every earlier feature unchanged."""
    b = one_symbol(bars)
    base = compute_symbol_features(b)
    rng = np.random.default_rng(0)
    for cut in (WARMUP_BARS + 5, 200, len(b) - 3):
        changed = b.copy()
        scale = rng.uniform(0.5, 1.5, size=len(b) - cut)
        for col in ("open", "high", "low", "close"):
            changed.loc[cut:, col] = changed.loc[cut:, col].to_numpy() * scale
        changed.loc[cut:, "volume"] = changed.loc[cut:, "volume"].to_numpy() * rng.uniform(0.1, 10, len(b) - cut)
        after = compute_symbol_features(changed)
        earlier = base["t"] < cut
        pd.testing.assert_frame_equal(
            base.loc[earlier, list(ALL_FEATURES)], after.loc[earlier, list(ALL_FEATURES)], check_exact=True
        )
        # ...while the perturbation does show up at the cut itself
        at_cut = base["t"] == cut
        assert not np.allclose(base.loc[at_cut, list(ALL_FEATURES)], after.loc[at_cut, list(ALL_FEATURES)])


def test_target_is_the_tradable_forward_return(bars):
    """The label at t is entered at the close label_delay bars later and held for horizon bars."""
    b = one_symbol(bars, 1)
    close = b["close"].to_numpy()
    for h, d in ((1, 0), (3, 0), (1, 1), (2, 2)):
        f = compute_symbol_features(b, horizon=h, label_delay=d)
        t = f["t"].to_numpy()
        exit_, entry = np.minimum(t + d + h, len(b) - 1), np.minimum(t + d, len(b) - 1)
        expected = np.where(t + d + h < len(b), close[exit_] / close[entry] - 1, np.nan)
        np.testing.assert_allclose(f["target"], expected.astype(np.float32), rtol=1e-6)
        assert f["target"].isna().sum() == h + d
    # the default is the next close: a signal made after the close of t cannot trade at that close
    np.testing.assert_array_equal(compute_symbol_features(b)["target"], compute_symbol_features(b, label_delay=1)["target"])


def test_labels_across_a_halt_are_dropped(bars):
    b = one_symbol(bars, 2)
    halted = b.drop(index=range(200, 215)).reset_index(drop=True)  # 15 business days without a bar
    f = compute_symbol_features(halted, horizon=1, label_delay=1, max_label_gap_days=5)
    kept = compute_symbol_features(halted, horizon=1, label_delay=1, max_label_gap_days=None)
    lost = f["target"].isna() & kept["target"].notna()
    # exactly the labels whose bars t..t+2 straddle the gap: t = bar 198 and 199 of the halted history
    assert sorted(f.loc[lost, "t"]) == [198, 199]
    assert np.isfinite(f.loc[f["t"] == 200, "target"]).all()  # after the halt, labels come back


def test_market_columns_are_raw_and_trailing(bars):
    b = one_symbol(bars, 0)
    f = compute_symbol_features(b, label_delay=1)
    t = f["t"].to_numpy()
    np.testing.assert_allclose(f["close"], b["close"].to_numpy()[t])
    traded = (b["close"] * b["volume"]).to_numpy()
    np.testing.assert_allclose(f["dollar_volume_20d"], [traded[i - 19 : i + 1].mean() for i in t], rtol=1e-9)
    entry = np.where(t + 1 < len(b), b["volume"].to_numpy()[np.minimum(t + 1, len(b) - 1)], np.nan)
    np.testing.assert_allclose(f["entry_volume"], entry)


def test_short_and_constant_histories_yield_no_rows_instead_of_failing(bars):
    """pandas-ta returns None for series shorter than an indicator; the spec turns that into rows it drops."""
    b = one_symbol(bars, 1)
    for n in (WARMUP_BARS + 1, WARMUP_BARS + 20, 75):
        f = compute_symbol_features(b.iloc[:n])
        assert np.isfinite(f[list(ALL_FEATURES)].to_numpy()).all()
    flat = b.iloc[:150].assign(open=10.0, high=10.0, low=10.0, close=10.0, volume=0.0)
    assert compute_symbol_features(flat).empty


def test_features_are_comparable_across_symbols(bars):
    """A symbol with 100x the price and 1000x the volume has the same features."""
    b = one_symbol(bars)
    scaled = b.copy()
    scaled[["open", "high", "low", "close"]] *= 100.0
    scaled["volume"] *= 1000.0
    f1, f2 = compute_symbol_features(b), compute_symbol_features(scaled)
    np.testing.assert_allclose(f1[list(ALL_FEATURES)], f2[list(ALL_FEATURES)], rtol=2e-3, atol=2e-5)


def test_split_embargo_keeps_training_targets_out_of_validation():
    dates = pd.bdate_range("2020-01-01", periods=300)
    cfg = FeatureConfig(horizon=3, split={"embargo_days": 5})
    s = make_split(dates, cfg)
    idx = {d: i for i, d in enumerate(dates)}
    assert idx[s.val.start] - idx[s.train.end] == 6 and idx[s.test.start] - idx[s.val.end] == 6
    assert s.train.end < s.val.start <= s.val.end < s.test.start <= s.test.end == dates[-1]
    # the last training target is realized horizon days after train end: still before validation starts
    assert idx[s.train.end] + cfg.horizon < idx[s.val.start]
    with pytest.raises(ValueError, match="shorter than the label's span"):
        make_split(dates, FeatureConfig(horizon=3, label_delay=1, split={"embargo_days": 3}))
    # by default the embargo is the label's span: the delay counts as much as the horizon
    d = make_split(dates, FeatureConfig(horizon=1, label_delay=1))
    assert idx[d.val.start] - idx[d.train.end] == 3
    explicit = make_split(dates, FeatureConfig(split={"train_end": "2020-06-30", "val_end": "2020-09-30"}))
    assert explicit.train.end == pd.Timestamp("2020-06-30") and explicit.val.start == pd.Timestamp("2020-07-03")  # embargo 2: delay 1 + horizon 1


def test_walk_forward_folds_move_forward_without_overlap():
    dates = pd.bdate_range("2015-01-01", periods=1000)
    folds = make_walk_forward(dates, FeatureConfig(walk_forward={"folds": 3, "val_days": 60, "test_days": 80}))
    assert len(folds) == 3 and folds[-1].test.end == dates[-1]
    for a, b in zip(folds, folds[1:], strict=False):
        assert a.test.end < b.test.start and a.train.end < b.train.end
    for f in folds:
        assert f.train.end < f.val.start and f.val.end < f.test.start


@pytest.mark.parametrize("method", ["zscore", "minmax", "robust"])
def test_normalizer_maps_training_rows_to_its_range(method):
    rng = np.random.default_rng(1)
    train = rng.normal(3.0, 2.0, size=(500, 2))
    norm = fit_normalizer(train, ["a", "b"], method, clip=50)
    z = norm.transform(train)
    if method == "zscore":
        np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(z.std(0), 1, atol=1e-4)
    elif method == "minmax":
        np.testing.assert_allclose(z.min(0), 0, atol=1e-6)
        np.testing.assert_allclose(z.max(0), 1, atol=1e-6)
    else:
        np.testing.assert_allclose(np.median(z, 0), 0, atol=1e-5)
    assert np.abs(norm.transform(np.full((1, 2), 1e9))).max() == 50


@pytest.mark.parametrize("method", ["zscore", "minmax", "robust"])
def test_normalizer_uses_training_rows_only(tmp_path, method):
    """The statistics the feature pipeline saves ignore every row after the training period, however extreme,
    and move with a single training row."""
    from raycast.features.normalize import partial_stats
    from raycast.features.pipeline import training_normalizer
    from raycast.features.store import ROWS_DIR

    rng = np.random.default_rng(1)
    dates, symbols = pd.bdate_range("2020-01-01", periods=200), ["S0", "S1", "S2", "S3"]
    rows = pd.DataFrame({"symbol": np.repeat(symbols, len(dates)), "date": np.tile(dates, len(symbols))})
    rows[["a", "b"]] = rng.normal([3.0, -1.0], [2.0, 0.5], size=(len(rows), 2))
    fc = FeatureConfig(normalization=method)
    split = make_split(rows["date"], fc)

    def saved_statistics(frame: pd.DataFrame, name: str) -> dict:
        # as the pipeline has them: the rows written as Parquet, the write task's per-date statistics of them
        features_dir = tmp_path / name
        (features_dir / ROWS_DIR).mkdir(parents=True)
        frame.to_parquet(features_dir / ROWS_DIR / "part-00000.parquet")
        stats = partial_stats(pa.Table.from_pandas(frame), ["a", "b"], method)
        return training_normalizer(stats, split, features_dir, ["a", "b"], fc).to_json()

    base = saved_statistics(rows, "base")
    after = (rows["date"] > split.train.end).to_numpy()  # embargo, validation and test rows
    assert 0 < after.sum() < len(rows)
    later = rows.copy()
    later.loc[after, ["a", "b"]] = rng.normal(1e3, 1e3, size=(after.sum(), 2))
    assert saved_statistics(later, "later") == base
    one = rows.copy()
    one.loc[one.loc[~after, "a"].idxmin(), "a"] = 1e3  # the lowest training value of a becomes the highest
    moved = saved_statistics(one, "one")
    assert moved["center"][0] != base["center"][0] or moved["scale"][0] != base["scale"][0]
    assert moved["center"][1] == base["center"][1] and moved["scale"][1] == base["scale"][1]


def test_windows_against_a_hand_computed_example():
    # two symbols: A has bars 0..4, B has bars 0..3 with bar 2 missing (dropped row)
    t = np.array([0, 1, 2, 3, 4, 0, 1, 3, 4])
    sym = np.array(["A"] * 5 + ["B"] * 4)
    block = np.arange(9 * 2, dtype=np.float32).reshape(9, 2)
    y = np.arange(9, dtype=np.float32) / 10
    ends = window_ends(t, 3, sym)
    assert ends.tolist() == [2, 3, 4]  # B has no 3 consecutive bars, and no window spans A and B
    windows, targets = cut_windows(block, ends, 3, y)
    assert windows.shape == (3, 3, 2)
    np.testing.assert_array_equal(windows[0], block[0:3])
    np.testing.assert_array_equal(windows[2], block[2:5])
    np.testing.assert_array_equal(targets, y[[2, 3, 4]])
    on_torch = cut_windows(torch.as_tensor(block), ends, 3)
    np.testing.assert_array_equal(on_torch.numpy(), windows)


def test_feature_blocks_cut_windows_per_period(bars):
    frame = pd.concat([compute_symbol_features(one_symbol(bars, i)) for i in range(3)])
    names = list(ALL_FEATURES)
    norm = fit_normalizer(frame[names].to_numpy(), names)
    blocks = FeatureBlocks(frame.sample(frac=1, random_state=0), norm, window=30)  # any row order
    split = make_split(frame["date"], FeatureConfig())
    ends = blocks.ends(split.val)
    x, y = blocks.windows(ends)
    assert x.shape == (len(ends), 30, 40) and np.isfinite(y).all()
    assert split.val.mask(blocks.dates[ends]).all()
    # memory grows with rows, not rows x window
    assert blocks.x.nbytes == len(frame) * 40 * 4


def test_feature_blocks_from_an_arrow_table_match_those_from_a_frame(bars):
    """A training worker builds its blocks from the Parquet read's Arrow table, evaluation from a pandas frame:
    the same rows in any order give the same sorted, normalized rows either way."""
    frame = pd.concat([compute_symbol_features(one_symbol(bars, i)) for i in range(3)])
    names = list(ALL_FEATURES)
    norm = fit_normalizer(frame[names].to_numpy(), names, method="robust")
    shuffled = frame.sample(frac=1, random_state=1).reset_index(drop=True)
    from_frame = FeatureBlocks(shuffled, norm, window=30)
    from_table = FeatureBlocks(pa.Table.from_pandas(shuffled, preserve_index=False), norm, window=30)
    expected = frame.sort_values(["symbol", "date"])
    for blocks in (from_frame, from_table):
        np.testing.assert_array_equal(blocks.x, norm.transform(expected[names].to_numpy(np.float32)))
        np.testing.assert_array_equal(blocks.y, expected["target"].to_numpy(np.float32), strict=False)
        assert list(blocks.symbols) == list(expected["symbol"]) and sorted(set(blocks.symbols)) == list(blocks.symbol_names)
        np.testing.assert_array_equal(blocks.dates, expected["date"].to_numpy("datetime64[ns]"))
        np.testing.assert_array_equal(blocks.t, expected["t"].to_numpy())
        assert set(blocks.market) == {c for c in MARKET_COLUMNS if c in frame}
    np.testing.assert_array_equal(from_table.ends(), from_frame.ends())


def test_feature_blocks_read_file_by_file_equal_those_from_the_whole_read(bars, tmp_path, monkeypatch):
    """``FeatureBlocks.read`` places each file's rows without reading them all at once; symbols spread over files
    in any order (a symbol's pending rows live in a file of their own), with symbol and date filters, give the
    very blocks a whole read gives, and the columns come in groups (here a few at a time)."""
    import pyarrow.parquet as pq

    from raycast.features.store import ROWS_DIR, fit_columns, read_feature_frame

    frame = pd.concat([compute_symbol_features(one_symbol(bars, i)) for i in range(3)], ignore_index=True)
    names = list(ALL_FEATURES)
    norm = fit_normalizer(frame[names].to_numpy(), names)
    rows = tmp_path / ROWS_DIR
    rows.mkdir()
    shuffled = frame.sample(frac=1, random_state=3).reset_index(drop=True)
    symbols = sorted(frame["symbol"].unique())
    last = shuffled["symbol"].eq(symbols[1]) & shuffled["date"].ge(shuffled["date"].quantile(0.9))
    files = {"part-00001.parquet": shuffled[shuffled["symbol"].isin(symbols[:2]) & ~last],  # symbols[1] in two files
             "pending-part-00001.parquet": shuffled[last],
             "part-00000.parquet": shuffled[shuffled["symbol"].eq(symbols[2])]}  # fmt: skip
    for name, part in files.items():
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), rows / name)
    monkeypatch.setattr(FeatureBlocks, "READ_COLUMNS", 5)
    cutoff = frame["date"].quantile(0.6)
    cases = [({}, frame),
             ({"filters": [("date", "<=", cutoff.to_pydatetime())]}, frame[frame["date"] <= cutoff]),
             ({"symbols": symbols[1:], "columns": fit_columns(names)}, frame[frame["symbol"].isin(symbols[1:])]),
             ({"symbols": symbols[:1], "filters": [("date", ">", frame["date"].max().to_pydatetime())]}, frame.iloc[:0])]  # fmt: skip
    for kwargs, expected in cases:
        read = FeatureBlocks.read(tmp_path, norm, 30, **kwargs)
        whole = FeatureBlocks(read_feature_frame(tmp_path, kwargs.get("symbols"), kwargs.get("filters")), norm, 30)
        mine = FeatureBlocks(expected, norm, 30)
        assert len(read) == len(expected)
        for other in (whole, mine):
            np.testing.assert_array_equal(read.x, other.x)
            np.testing.assert_array_equal(read.y, other.y)
            np.testing.assert_array_equal(read.t, other.t)
            np.testing.assert_array_equal(read.dates, other.dates)
            np.testing.assert_array_equal(read.symbols, other.symbols)
            np.testing.assert_array_equal(read.raw_return, other.raw_return)
            np.testing.assert_array_equal(read.ends(), other.ends())
        want_market = set() if "columns" in kwargs else {c for c in MARKET_COLUMNS if c in frame}
        assert set(read.market) == want_market
        for c in want_market:
            np.testing.assert_array_equal(read.market[c], whole.market[c])
        if len(read):
            end = read.ends()[-1]
            assert read.symbols_at(np.array([end]))[0] == read.symbols[end]


@pytest.mark.parametrize("method", ["zscore", "minmax"])
def test_statistics_merged_across_blocks_equal_one_fit_on_all_rows(method):
    from raycast.features.normalize import merge_partial_stats, partial_stats

    rng = np.random.default_rng(2)
    n = 3000
    dates = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 60, n), "D")
    x = rng.normal([100.0, 0.0], [1.0, 1e-3], size=(n, 2)).astype(np.float32)  # a large mean: no cancellation
    frame = pd.DataFrame({"date": dates, "a": x[:, 0], "b": x[:, 1]})
    # uneven blocks that share dates, as tasks holding different symbols do
    cuts = [0, 100, 1700, n]
    stats = pd.concat(
        [partial_stats(pa.Table.from_pandas(frame.iloc[i:j]), ["a", "b"], method) for i, j in zip(cuts, cuts[1:])]
    )
    assert stats["n"].sum() == n and stats["date"].duplicated().any()
    merged, direct = merge_partial_stats(stats, ["a", "b"], method, clip=4.0), fit_normalizer(x, ["a", "b"], method, 4.0)
    np.testing.assert_allclose(merged.center, direct.center, rtol=1e-12)
    np.testing.assert_allclose(merged.scale, direct.scale, rtol=1e-9)
    with pytest.raises(ValueError, match="robust"):
        merge_partial_stats(stats, ["a", "b"], "robust")


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("method", ["zscore", "minmax", "robust"])
def test_ray_data_pipeline_matches_per_symbol_computation(tmp_path, method):
    from conftest import small_config

    from raycast.data.ingest import ingest
    from raycast.data.store import read_bars
    from raycast.features.pipeline import build_features
    from raycast.features.store import ROWS_DIR, current_features_dir, load_meta, read_feature_frame

    cfg = small_config(tmp_path, ingest={"synthetic": {"n_symbols": 6, "n_days": 300}}, features={"normalization": method})
    ingest(cfg)
    summary = build_features(cfg)
    fdir = current_features_dir(cfg.storage)
    meta = load_meta(fdir)
    assert summary["n_features"] == 40 and meta.features == list(ALL_FEATURES)
    got = read_feature_frame(fdir).sort_values(["symbol", "date"]).reset_index(drop=True)
    bars = read_bars(cfg.storage)
    want = pd.concat([compute_symbol_features(g) for _, g in bars.groupby("symbol")], ignore_index=True)
    assert len(got) == len(want) == summary["n_rows"]
    np.testing.assert_allclose(got[list(ALL_FEATURES)].to_numpy(), want[list(ALL_FEATURES)].to_numpy())
    # the saved statistics are those of the training period's rows, and nothing later
    train = want[want["date"] <= meta.split.train.end]
    expected = fit_normalizer(train[list(ALL_FEATURES)].to_numpy(), list(ALL_FEATURES), method)
    assert meta.normalizer.method == method
    np.testing.assert_allclose(meta.normalizer.center, expected.center, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(meta.normalizer.scale, expected.scale, rtol=1e-4)
    assert json.loads((fdir / "meta.json").read_text())["market_version"]
    # one write task (one Parquet part) per planned block of symbols_per_task symbols: 6 symbols by 4 are 2 blocks
    # of 3, which Ray Data must not bundle into one task to reach a batch size
    assert len(list((fdir / ROWS_DIR).glob("part-*.parquet"))) == math.ceil(6 / cfg.features.symbols_per_task) == 2


def test_models_give_finite_predictions_on_windows_from_the_real_sample():
    """Real AAPL bars -> validation -> the 40 features -> normalized windows -> every reference model."""
    from raycast.config import SampleConfig
    from raycast.data.sample import load_sample
    from raycast.data.validate import validate_bars
    from raycast.models import build_model, create_ensemble_model

    clean, _ = validate_bars(load_sample(SampleConfig(symbols=["AAPL"])), "sample")
    frame = compute_symbol_features(clean)
    names = list(ALL_FEATURES)
    blocks = FeatureBlocks(frame, fit_normalizer(frame[names].to_numpy(), names), window=30)
    x, y = blocks.windows(blocks.ends()[-64:])
    assert x.shape == (64, 30, 40) and np.isfinite(x).all() and np.isfinite(y).all()
    bases = {n: build_model(n, 40, 30).eval() for n in ("lstm", "cnn", "attention")}
    with torch.no_grad():
        for model in bases.values():
            assert torch.isfinite(model(torch.as_tensor(x))).all()
        pred, details = create_ensemble_model(bases).eval()(torch.as_tensor(x))
    assert pred.shape == (64, 1) and torch.isfinite(pred).all()


@pytest.mark.usefixtures("ray_session")
def test_messy_universe_featurizes_what_it_can_and_names_the_rest(tmp_path, capsys):
    """Short histories, a constant stub and a corrupt file are skipped with their reasons; nothing else is lost."""
    from conftest import small_config

    from raycast.data.ingest import ingest
    from raycast.data.store import DATA_FILE, current_version_dir, symbol_dir_name
    from raycast.features.pipeline import build_features
    from raycast.features.spec import min_history_bars
    from raycast.features.store import current_features_dir, read_feature_frame

    cfg = small_config(tmp_path, ingest={"synthetic": {"n_symbols": 16, "n_days": 300, "seed": 5, "messy": True}})
    manifest = ingest(cfg)
    expected = manifest["synthetic"]["messy"]
    # a file damaged after ingest: its symbol must fail alone, with a reason, inside the Ray task
    (current_version_dir(cfg.storage) / symbol_dir_name("BF-B") / DATA_FILE).write_bytes(b"not parquet")
    summary = build_features(cfg)

    meta = json.loads((current_features_dir(cfg.storage) / "meta.json").read_text())
    need = min_history_bars(cfg.features.window, cfg.features.horizon, cfg.features.label_delay)
    skipped = meta["skipped"]
    assert set(skipped) == {*expected["too_few_bars"], expected["constant_stub"], "BF-B"}
    for short in expected["too_few_bars"]:
        assert skipped[short] == f"too few bars (40 < {need})"
    assert skipped[expected["constant_stub"]].startswith("no complete feature row")
    assert skipped["BF-B"].startswith("features failed: ") and "BF-B" not in meta["symbols"]
    assert meta["skipped_counts"] == {"too few bars": 2, "no complete feature row": 1, "features failed": 1}
    assert summary["n_symbols"] == 16 - 4 and summary["n_skipped"] == 4
    out = capsys.readouterr().out
    assert "featurized 12 symbols, skipped 4: " in out and "too few bars (2): " in out

    rows = read_feature_frame(current_features_dir(cfg.storage))
    assert sorted(rows["symbol"].unique()) == meta["symbols"]
    assert {"BRK.B", "0700.HK", "RDS/A"} <= set(meta["symbols"])
    # the halt's labels are gone, the rest of the halted symbol is there
    halted = rows[rows["symbol"] == expected["halted"]]
    late = rows[rows["symbol"] == expected["late_listing"]]
    assert halted["target"].isna().sum() == cfg.features.label_delay + cfg.features.horizon + 2
    assert late["date"].min() > rows["date"].min() and late["target"].notna().sum() > 50


# ------------------------------------------------------------------------------------ incremental builds


def test_incremental_features_equal_a_full_rebuild_row_for_row(ray_session, tmp_path):
    """Two appends (later days for every symbol; then one more day, a corrected old bar and a new short symbol):
    each incremental build equals a full build of the same market version, and links what it did not change."""
    import shutil

    from raycast.data.ingest import append_bars, ingest
    from raycast.data.synthetic import generate_synthetic
    from raycast.features.incremental import update_features
    from raycast.features.pipeline import build_features
    from raycast.features.store import ROWS_DIR, current_features_dir, load_meta, read_feature_frame
    from tests.conftest import small_config

    cfg = small_config(tmp_path, ingest={"source": "files", "files": {"path": str(tmp_path / "head.parquet")}})
    bars = generate_synthetic(cfg.ingest.synthetic.model_copy(update={"n_days": 300})).bars
    days = np.sort(bars["date"].unique())
    bars[bars["date"] < days[-6]].to_parquet(tmp_path / "head.parquet", index=False)
    bars[(bars["date"] >= days[-6]) & (bars["date"] < days[-1])].to_parquet(tmp_path / "week.parquet", index=False)
    last = bars[bars["date"] == days[-1]]
    corrected = bars[(bars["symbol"] == "SYN003") & (bars["date"] == days[100])].assign(volume=lambda f: f["volume"] * 2)
    newcomer = last.iloc[[0]].assign(symbol="NEW")
    pd.concat([last, corrected, newcomer]).to_parquet(tmp_path / "day.parquet", index=False)

    ingest(cfg)
    build_features(cfg)
    first = current_features_dir(cfg.storage)
    normalizer = load_meta(first).normalizer
    for chunk, expect in (("week.parquet", (12, 0)), ("day.parquet", (11, 1))):
        before = current_features_dir(cfg.storage)
        append_bars(cfg, str(tmp_path / chunk))
        out = update_features(cfg)
        assert out["incremental"] and out["published"]
        assert (out["symbols_extended"], out["symbols_rewritten"]) == expect
        after = current_features_dir(cfg.storage)
        assert load_meta(after).normalizer == normalizer  # the training period's, kept
        # settled rows of untouched files are the previous files themselves
        linked = [p for p in (after / ROWS_DIR).iterdir() if (before / ROWS_DIR / p.name).exists()
                  and p.stat().st_ino == (before / ROWS_DIR / p.name).stat().st_ino]  # fmt: skip
        assert linked

        full_storage = tmp_path / f"full-{chunk}"
        shutil.copytree(cfg.storage, full_storage)
        full_cfg = cfg.model_copy(update={"storage": str(full_storage)})
        build_features(full_cfg)
        key = ["symbol", "date"]
        mine = read_feature_frame(after).sort_values(key, ignore_index=True)
        full = read_feature_frame(current_features_dir(full_cfg.storage)).sort_values(key, ignore_index=True)
        assert len(mine) == load_meta(after).raw["n_rows"]
        pd.testing.assert_frame_equal(mine, full, check_exact=True)
        assert load_meta(after).raw["date_max"] == str(pd.Timestamp(days[-1 if chunk == "day.parquet" else -2]).date())
    assert "NEW" in load_meta(after).raw["skipped"]  # one bar: too short, as in the full build
    again = update_features(cfg)
    assert not again["published"]  # nothing new in the market data
