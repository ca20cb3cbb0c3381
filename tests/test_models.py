"""Tests for raycast.models: exact sizes, shapes, interfaces, gradient flow, modes, and that each model learns."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

from raycast.config import AttentionConfig, CNNConfig, EnsembleConfig, LSTMConfig, SearchDimension
from raycast.models import (
    MODELS,
    SEARCH_SPACES,
    TRAIN_KEYS,
    AttentionModel,
    CNNModel,
    EnsembleModel,
    LSTMEnsemble,
    LSTMModel,
    MultiHeadAttention,
    MultiScaleCNN,
    PositionalEncoding,
    StackedEnsemble,
    autocast_context,
    build_model,
    create_ensemble_model,
)

N_FEATURES, SEQ = 40, 30
EXPECTED = {"lstm": 602_625, "cnn": 130_081, "attention": 410_241}
COMBINER = {3: 3_012, 2: 2_819, 1: 2_626}  # weight predictor + meta-learner, by number of bases


@pytest.fixture(autouse=True)
def _cpu_budget():
    # The CI machine has 2 cores shared with other jobs; one thread keeps timings predictable.
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def bases() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {name: build_model(name, N_FEATURES, SEQ, None).eval() for name in MODELS}


def windows(batch: int, seq: int = SEQ) -> torch.Tensor:
    return torch.randn(batch, seq, N_FEATURES)


# ------------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("name", list(MODELS))
def test_default_parameter_counts(name):
    model = build_model(name, N_FEATURES, SEQ, None)
    assert model.count_parameters() == EXPECTED[name]
    assert model.count_trainable_parameters() == EXPECTED[name]


def test_cnn_fc_in_follows_seq_len():
    assert CNNModel(N_FEATURES, 30).fc_in == 384  # 30 -> 15 -> 7 -> 3 steps
    assert CNNModel(N_FEATURES, 60).fc_in == 128 * 7  # 60 -> 30 -> 15 -> 7


@pytest.mark.parametrize("members", [("lstm", "cnn", "attention"), ("lstm", "cnn"), ("attention",)])
def test_ensemble_parameter_counts(bases, members):
    ens = create_ensemble_model({m: bases[m] for m in members})
    n_base = sum(EXPECTED[m] for m in members)
    assert ens.count_trainable_parameters() == COMBINER[len(members)]
    assert ens.count_parameters() == n_base + COMBINER[len(members)]
    if len(members) == 3:
        assert ens.count_parameters() == 1_145_959


def test_ensemble_needs_a_base():
    with pytest.raises(ValueError, match="at least one"):
        EnsembleModel({})


# ------------------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("seq", [20, 30, 60])
def test_forward_shapes(name, seq):
    model = build_model(name, N_FEATURES, seq, None)
    model.train()
    assert model(windows(7, seq)).shape == (7, 1)
    model.eval()  # BatchNorm cannot train on a batch of one
    for batch in (1, 7):
        out = model(windows(batch, seq))
        assert out.shape == (batch, 1) and torch.isfinite(out).all()


def test_window_length_errors():
    with pytest.raises(ValueError, match="too short"):
        CNNModel(N_FEATURES, 7)  # 7 -> 3 -> 1 -> 0
    with pytest.raises(ValueError, match="built for seq_len"):
        CNNModel(N_FEATURES, 30)(windows(2, 20))
    with pytest.raises(ValueError, match="max_seq_len"):
        AttentionModel(N_FEATURES, 40, AttentionConfig(max_seq_len=32))
    with pytest.raises(ValueError, match="expected input"):
        LSTMModel()(torch.randn(30, N_FEATURES))


def test_variants_shapes(bases):
    x = windows(5)
    assert MultiScaleCNN(N_FEATURES, SEQ).eval()(x).shape == (5, 1)
    assert LSTMEnsemble(N_FEATURES, SEQ, LSTMConfig(hidden_size=16), n_models=2).eval()(x).shape == (5, 1)
    pred, details = StackedEnsemble(bases).eval()(x)
    assert pred.shape == (5, 1) and set(details["base_predictions"]) == set(MODELS)


def test_lstm_hidden_states_and_readout():
    model = LSTMModel().eval()
    out, h_n, c_n = model.get_hidden_states(windows(3))
    assert out.shape == (3, SEQ, 256) and h_n.shape == (4, 3, 128) and c_n.shape == (4, 3, 128)
    # "final" reads the top layer's forward state at the last step and backward state at the first
    x = windows(3)
    out, _, _ = model.get_hidden_states(x)
    torch.testing.assert_close(model.features(x), torch.cat([out[:, -1, :128], out[:, 0, 128:]], dim=1))
    last = LSTMModel(cfg=LSTMConfig(readout="last")).eval()
    assert last.count_parameters() == EXPECTED["lstm"]
    torch.testing.assert_close(last.features(x), last.get_hidden_states(x)[0][:, -1])


def test_lstm_last_step_readout_leaves_top_backward_recurrence_untrained():
    # Why "final" is the default: at the last step the top backward direction has run one step from zero.
    model = LSTMModel(cfg=LSTMConfig(readout="last")).train()
    F.mse_loss(model(windows(8)), torch.randn(8, 1)).backward()
    assert model.lstm.weight_hh_l1_reverse.grad.abs().sum() == 0
    assert model.lstm.weight_hh_l1.grad.abs().sum() > 0


def test_lstm_freeze_layers():
    model = LSTMModel()
    model.freeze_layers(1)
    frozen = {n for n, p in model.lstm.named_parameters() if not p.requires_grad}
    assert frozen and all("_l0" in n for n in frozen)
    assert model.count_trainable_parameters() == EXPECTED["lstm"] - 174_080  # layer 0, both directions
    assert model.count_parameters() == EXPECTED["lstm"]
    model.freeze_layers(0)
    assert model.count_trainable_parameters() == EXPECTED["lstm"]


# --------------------------------------------------------------------------------------- attention


def test_attention_weights_normalised_and_input_dependent():
    model = AttentionModel().eval()
    x = windows(4)
    weights = model.get_attention_weights(x, all_layers=True)
    assert len(weights) == 2
    for w in weights:
        assert w.shape == (4, SEQ, SEQ)
        torch.testing.assert_close(w.sum(-1), torch.ones(4, SEQ))
    last = model.get_attention_weights(x)
    assert torch.equal(last, weights[-1])
    assert not torch.allclose(model.get_attention_weights(x + torch.randn_like(x)), last)


def test_multihead_attention_paths_agree_and_mask():
    mha = MultiHeadAttention(128, 8, dropout=0.1).eval()
    h = torch.randn(2, 10, 128)
    out, weights = mha(h)
    fused, none = mha(h, need_weights=False)
    assert weights.shape == (2, 8, 10, 10) and none is None
    torch.testing.assert_close(fused, out, atol=1e-5, rtol=1e-5)
    causal = torch.ones(10, 10, dtype=torch.bool).tril()
    w = mha.get_attention_weights(h, mask=causal)
    assert (w.masked_select(~causal) == 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 10))
    torch.testing.assert_close(mha(h, causal, need_weights=False)[0], mha(h, causal)[0], atol=1e-5, rtol=1e-5)


def test_positional_encoding_is_fixed_and_position_dependent():
    pe = PositionalEncoding(128, max_len=64)
    assert list(pe.parameters()) == [] and "pe" not in pe.state_dict()
    assert torch.equal(pe.pe, PositionalEncoding(128, max_len=64).pe)
    rows = pe(torch.zeros(1, 64, 128))[0]
    assert torch.cdist(rows, rows).add(torch.eye(64)).min() > 0.1  # every position distinct
    assert not any("pos" in n for n, _ in AttentionModel().named_parameters())
    assert PositionalEncoding(7, 10).pe.shape == (10, 7)  # odd widths work


# ---------------------------------------------------------------------------------------- ensemble


def test_ensemble_details_weights_and_cached_path(bases):
    ens = create_ensemble_model(bases).eval()
    x = windows(6)
    pred, details = ens(x)
    assert pred.shape == (6, 1)
    assert list(details["base_predictions"]) == list(MODELS)
    assert details["weights"].shape == (6, 3) and details["weighted"].shape == details["meta"].shape == (6, 1)
    torch.testing.assert_close(pred, (details["weighted"] + details["meta"]) / 2)
    base = ens.get_base_predictions(x)
    for name, model in bases.items():
        torch.testing.assert_close(base[name], model(x))
    conf = ens.get_confidence_weights(x)
    torch.testing.assert_close(sum(conf.values()), torch.ones(6))
    matrix = torch.cat([base[n] for n in ens.base_names], dim=1)
    cached, cached_details = ens.forward_from_base_predictions(matrix)
    assert torch.equal(cached, pred) and torch.equal(cached_details["weights"], details["weights"])
    with pytest.raises(ValueError, match="base predictions"):
        ens.forward_from_base_predictions(matrix[:, :2])


def test_ensemble_on_a_subset(bases):
    ens = create_ensemble_model({"cnn": bases["cnn"], "attention": bases["attention"]}).eval()
    pred, details = ens(windows(3))
    assert pred.shape == (3, 1) and details["weights"].shape == (3, 2)


def test_ensemble_trains_combiner_only_and_keeps_bases_in_eval(bases):
    ens = create_ensemble_model(bases, EnsembleConfig(dropout=0.1))
    bn = bases["lstm"].head[2]
    stats = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
    ens.train()
    assert ens.training and ens.weight_predictor.training
    assert not any(m.training for m in ens.bases.modules())
    opt = torch.optim.Adam([p for p in ens.parameters() if p.requires_grad], lr=1e-3)
    pred, _ = ens(windows(16))
    F.mse_loss(pred, torch.randn(16, 1)).backward()
    for name, p in ens.named_parameters():
        if name.startswith("bases."):
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    opt.step()
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert torch.equal(bn.num_batches_tracked, stats[2])


@pytest.mark.parametrize("name", list(MODELS))
def test_gradients_reach_every_parameter(name):
    model = build_model(name, N_FEATURES, SEQ, None).train()
    F.mse_loss(model(windows(16)), torch.randn(16, 1)).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", [*MODELS, "ensemble"])
def test_train_mode_is_stochastic_and_eval_deterministic(bases, name):
    # with dropout switched on (the transformer's default is none)
    model = create_ensemble_model(bases) if name == "ensemble" else build_model(name, N_FEATURES, SEQ, {"dropout": 0.1})
    x = windows(8)

    def run():
        out = model(x)
        return out[0] if isinstance(out, tuple) else out

    model.train()
    assert not torch.equal(run(), run())  # dropout
    model.eval()
    assert torch.equal(run(), run())


# ------------------------------------------------------------------------------------ learnability


def _toy_problem(n: int = 2_000) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, SEQ, N_FEATURES, generator=g)
    y = torch.tanh(x[:, -1, 0] + x[:, -2, 1]) + 0.1 * torch.randn(n, generator=g)
    return x, y.unsqueeze(1)


# Scaled-down widths keep this a few seconds per model on one core; the defaults are covered above.
LEARN = {
    "lstm": ({"hidden_size": 32, "fc_size": 32, "dropout": 0.0}, 3e-3),
    "cnn": ({"dropout": 0.0}, 1e-3),
    "attention": ({"hidden_size": 64, "num_heads": 4, "ff_size": 128, "num_layers": 1, "dropout": 0.0}, 1e-3),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_model_learns_a_planted_signal(name):
    # A wiring check: the target depends on two features at the last two steps; a model that cannot read
    # them (a transposed axis, a detached branch) stays at the target's variance.
    params, lr = LEARN[name]
    x, y = _toy_problem()
    model = build_model(name, N_FEATURES, SEQ, params).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        idx = torch.randint(0, len(x), (64,), generator=g)
        loss = F.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        mse = F.mse_loss(model.eval()(x), y).item()
    assert mse < 0.5 * y.var().item(), (mse, y.var().item())


def test_ensemble_combiner_learns_from_cached_predictions(bases):
    # The best base is the first: the combiner should learn to follow it on cached predictions alone.
    ens = create_ensemble_model(bases, EnsembleConfig(dropout=0.0)).train()
    g = torch.Generator().manual_seed(0)
    preds = torch.randn(1_000, 3, generator=g)
    y = preds[:, :1] + 0.05 * torch.randn(1_000, 1, generator=g)
    opt = torch.optim.Adam([p for p in ens.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(200):
        idx = torch.randint(0, 1_000, (64,), generator=g)
        loss = F.mse_loss(ens.forward_from_base_predictions(preds[idx])[0], y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert F.mse_loss(ens.eval().forward_from_base_predictions(preds)[0], y).item() < 0.2 * y.var().item()


# ------------------------------------------------------------------------------ build / search spaces


def test_build_model_accepts_configs_and_names_unknown_keys():
    assert isinstance(build_model("cnn", N_FEATURES, SEQ, CNNConfig(dropout=0.1)), CNNModel)
    assert build_model("lstm", N_FEATURES, SEQ, {"hidden_size": 16}).cfg.hidden_size == 16
    with pytest.raises(ValueError, match="hiden_size: unknown key"):
        build_model("lstm", N_FEATURES, SEQ, {"hiden_size": 16})
    with pytest.raises(ValueError, match="attention.dropout"):
        build_model("attention", N_FEATURES, SEQ, {"dropout": 2.0})
    with pytest.raises(ValueError, match="unknown model 'gru'"):
        build_model("gru", N_FEATURES, SEQ, None)


# The reference design's "Recommended Training Setup", exactly as written there.
REFERENCE_SETUP = """
# Model instantiation
lstm = create_lstm_model(input_size=40, hidden_size=128, device='cuda')
cnn = create_cnn_model(input_size=40, device='cuda')
attention = create_attention_model(input_size=40, hidden_size=128, device='cuda')
ensemble = create_ensemble_model(lstm, cnn, attention, device='cuda')

# Training configuration
optimizer = torch.optim.Adam(ensemble.parameters(), lr=0.001)
criterion = nn.MSELoss()  # or custom loss

# Data batching
batch_size = 32
X_windows: List[np.ndarray]  # 34 windows of shape (30, 40)
y_targets: np.ndarray  # 34 targets (next-day returns)

# Training loop
for epoch in range(100):
    for batch_X, batch_y in create_batches(X_windows, y_targets, batch_size):
        # Forward pass
        X_tensor = torch.tensor(batch_X, dtype=torch.float32).to('cuda')
        y_tensor = torch.tensor(batch_y, dtype=torch.float32).to('cuda')

        predictions, details = ensemble(X_tensor)
        loss = criterion(predictions, y_tensor)

        # Backward pass
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ensemble.parameters(), max_norm=1.0)
        optimizer.step()
"""


def test_reference_training_setup_runs_as_written():
    import numpy as np
    from torch import nn

    from raycast.models import create_attention_model, create_cnn_model, create_lstm_model

    def create_batches(xs, ys, size):
        # full batches only: 34 windows give one batch of 32, so the snippet takes exactly one optimizer step
        for i in range(0, len(xs) - size + 1, size):
            yield np.stack(xs[i : i + size]), ys[i : i + size]

    rng = np.random.default_rng(0)
    env = {
        "torch": torch, "nn": nn, "np": np, "List": list,
        "create_lstm_model": create_lstm_model, "create_cnn_model": create_cnn_model,
        "create_attention_model": create_attention_model, "create_ensemble_model": create_ensemble_model,
        "create_batches": create_batches,
        "X_windows": [rng.normal(size=(30, 40)).astype(np.float32) for _ in range(34)],
        "y_targets": rng.normal(0, 0.02, size=(34, 1)),
    }  # fmt: skip
    code = REFERENCE_SETUP.replace("'cuda'", "'cpu'").replace("range(100)", "range(1)")
    assert code.count("'cpu'") == 6 and "range(1)" in code  # the only two edits: the device and one epoch
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a prediction/target shape mismatch that MSELoss would broadcast
        exec(compile(code, "reference-setup", "exec"), env)

    lstm, cnn, attention, ensemble = (env[k] for k in ("lstm", "cnn", "attention", "ensemble"))
    assert lstm.count_parameters() == 602_625
    assert cnn.count_parameters() == 130_081
    assert attention.count_parameters() == 410_241
    assert ensemble.count_parameters() == 1_145_959
    assert ensemble.base_names == ["lstm", "cnn", "attention"]
    assert env["ensemble"].bases["lstm"] is lstm and lstm.cfg.hidden_size == 128

    predictions, details = env["predictions"], env["details"]
    assert predictions.shape == (32, 1) and torch.isfinite(env["loss"])
    assert set(details) == {"base_predictions", "weights", "weighted", "meta"}
    steps = {int(s["step"]) for s in env["optimizer"].state.values()}
    assert steps == {1}, steps  # one step, and only the combiner's parameters took it (the bases are frozen)
    stepped = {id(p) for p in env["optimizer"].state}
    assert stepped == {id(p) for p in ensemble.parameters() if p.requires_grad}


def test_factories_take_keyword_params_or_a_config():
    from raycast.models import create_attention_model, create_lstm_model

    assert create_lstm_model(hidden_size=16).cfg == LSTMConfig(hidden_size=16)
    assert create_lstm_model(cfg=LSTMConfig(hidden_size=16, num_layers=1)).cfg.num_layers == 1
    both = create_attention_model(cfg=AttentionConfig(num_heads=2), hidden_size=16)  # params win over cfg
    assert (both.cfg.hidden_size, both.cfg.num_heads) == (16, 2)
    with pytest.raises(ValueError, match=r"lstm\.hiden_size: unknown key"):
        create_lstm_model(hiden_size=16)


def test_ensemble_factory_forms(bases):
    lstm, cnn = bases["lstm"], bases["cnn"]
    positional = create_ensemble_model(lstm, cnn, cfg=EnsembleConfig(weight_hidden=8))
    assert positional.base_names == ["lstm", "cnn"] and positional.cfg.weight_hidden == 8
    mapping = create_ensemble_model({"b": cnn, "a": lstm}, EnsembleConfig(weight_hidden=8))
    assert mapping.base_names == ["b", "a"] and mapping.cfg.weight_hidden == 8
    assert create_ensemble_model(cnn, cnn).base_names == ["cnn", "cnn_2"]
    with pytest.raises(TypeError, match=r"positional argument 2 \(EnsembleConfig\) is not a model"):
        create_ensemble_model(lstm, EnsembleConfig())
    with pytest.raises(TypeError, match="EnsembleConfig twice"):
        create_ensemble_model({"lstm": lstm}, EnsembleConfig(), cfg=EnsembleConfig())
    with pytest.raises(ValueError, match="at least one base model"):
        create_ensemble_model()


@pytest.mark.parametrize("name", list(SEARCH_SPACES))
def test_default_search_spaces_are_valid(bases, name):
    space = SEARCH_SPACES[name]()
    cfg_cls = EnsembleConfig if name == "ensemble" else MODELS[name][1]
    model_keys = {k for k in space if k not in TRAIN_KEYS}
    assert model_keys <= set(cfg_cls.model_fields)
    picks = {}
    for key, dim in space.items():
        dim = SearchDimension.model_validate(dim)
        picks[key] = dim.values[0] if dim.type == "choice" else dim.low
    model_params = {k: v for k, v in picks.items() if k in model_keys}
    if name == "ensemble":
        EnsembleModel(bases, EnsembleConfig(**model_params))
    else:
        build_model(name, N_FEATURES, SEQ, model_params)


def test_autocast_is_a_no_op_off_cuda():
    with autocast_context("cpu", bf16=True):
        assert LSTMModel().eval()(windows(2)).dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_autocast_on_cuda(bases):
    ens = create_ensemble_model(copy.deepcopy(bases), device="cuda").eval()  # .to() would move the fixture
    with torch.no_grad(), autocast_context("cuda", bf16=True):
        pred, _ = ens(windows(64).cuda())
    assert pred.shape == (64, 1) and torch.isfinite(pred.float()).all()
