"""Bidirectional LSTM regressor over (batch, seq, features) windows, and an averaging ensemble of them."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from raycast.config import LSTMConfig
from raycast.models.common import CountMixin, check_input, config_with, mlp_head


class LSTMModel(CountMixin, nn.Module):
    """Stacked (bi)LSTM -> one timestep's features -> ``Linear+ReLU+BN+Dropout -> Linear(., 1)``.

    With the defaults (40 features, hidden 128, 2 bidirectional layers, fc 128) it has 602,625 parameters.
    ``cfg.readout`` picks the features fed to the head. ``"final"`` (default) concatenates each direction's
    final state: the forward one at the last step, the backward one at the first, so both have read the whole
    window. ``"last"`` is the output at the last timestep, as in the reference design; there the top backward
    direction has taken a single step from a zero state, so its recurrent weights get no gradient at all.
    Both have the same width and parameter count.
    """

    def __init__(self, input_size: int = 40, seq_len: int = 30, cfg: LSTMConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or LSTMConfig()
        self.input_size, self.seq_len, self.cfg = input_size, seq_len, cfg
        self.num_directions = 2 if cfg.bidirectional else 1
        self.lstm = nn.LSTM(
            input_size,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            batch_first=True,
            bidirectional=cfg.bidirectional,
            # nn.LSTM applies dropout between layers only, and warns when there is a single layer.
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.head = mlp_head(cfg.hidden_size * self.num_directions, [cfg.fc_size], cfg.dropout)

    def get_hidden_states(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(output (batch, seq, H*dirs), h_n (layers*dirs, batch, H), c_n (layers*dirs, batch, H))``."""
        check_input(x, self.input_size)
        out, (h_n, c_n) = self.lstm(x)
        return out, h_n, c_n

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The (batch, H*dirs) vector the head reads."""
        out, h_n, _ = self.get_hidden_states(x)
        if self.cfg.readout == "last":
            return out[:, -1, :]
        # h_n's last ``dirs`` rows are the top layer's forward and backward final states.
        return h_n[-self.num_directions :].transpose(0, 1).reshape(x.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def freeze_layers(self, num_layers: int) -> None:
        """Stop training the first ``num_layers`` LSTM layers (both directions); the rest stay trainable."""
        if not 0 <= num_layers <= self.cfg.num_layers:
            raise ValueError(f"num_layers must be in [0, {self.cfg.num_layers}], got {num_layers}")
        for name, p in self.lstm.named_parameters():
            # names look like weight_ih_l0, bias_hh_l1_reverse
            layer = int(name.split("_l")[-1].split("_")[0])
            p.requires_grad_(layer >= num_layers)


class LSTMEnsemble(CountMixin, nn.Module):
    """``n_models`` independently initialised LSTMModels whose predictions are averaged (variance reduction)."""

    def __init__(
        self, input_size: int = 40, seq_len: int = 30, cfg: LSTMConfig | None = None, n_models: int = 3
    ) -> None:
        super().__init__()
        if n_models < 1:
            raise ValueError(f"n_models must be >= 1, got {n_models}")
        self.members = nn.ModuleList(LSTMModel(input_size, seq_len, cfg) for _ in range(n_models))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members], dim=0).mean(dim=0)


def create_lstm_model(
    input_size: int = 40,
    seq_len: int = 30,
    cfg: LSTMConfig | None = None,
    device: str | torch.device = "cpu",
    **params: Any,
) -> LSTMModel:
    """Build an :class:`LSTMModel` on ``device`` from ``cfg``, keyword params (``hidden_size=128``), or both."""
    return LSTMModel(input_size, seq_len, config_with("lstm", LSTMConfig, cfg, params)).to(device)


def default_search_space() -> dict[str, dict]:
    """A modest Ray Tune space (raycast.config.SearchDimension form): small enough for CPU trials."""
    return {
        "lr": {"type": "loguniform", "low": 1e-4, "high": 3e-3},
        "hidden_size": {"type": "choice", "values": [64, 128]},
        "num_layers": {"type": "choice", "values": [1, 2]},
        "dropout": {"type": "uniform", "low": 0.0, "high": 0.4},
        "batch_size": {"type": "choice", "values": [256, 512, 1024]},
    }
