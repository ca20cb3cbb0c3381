"""1-D convolutional regressors over (batch, seq, features) windows: a plain stack and a multi-scale variant."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from raycast.config import CNNConfig
from raycast.models.common import CountMixin, check_input, config_with, mlp_head


def conv_block(in_channels: int, filters: int, kernel: int) -> nn.Sequential:
    """``Conv1d(padding=k//2) -> BatchNorm1d -> ReLU -> MaxPool1d(2)``; halves the time axis (floor)."""
    return nn.Sequential(
        nn.Conv1d(in_channels, filters, kernel, padding=kernel // 2),
        nn.BatchNorm1d(filters),
        nn.ReLU(),
        nn.MaxPool1d(2),
    )


def conv_output_len(seq_len: int, kernels: Sequence[int]) -> int:
    """Time steps left after the conv blocks; raises if the window is too short for the pools."""
    length = seq_len
    for i, k in enumerate(kernels):
        # padding k//2 keeps odd kernels length-preserving; even kernels add one step, which we allow.
        length = (length + 2 * (k // 2) - k + 1) // 2
        if length < 1:
            raise ValueError(
                f"seq_len {seq_len} is too short for {len(kernels)} conv blocks with 2x pooling "
                f"(nothing left after block {i + 1}); use a longer window or fewer blocks"
            )
    return length


class CNNModel(CountMixin, nn.Module):
    """Conv blocks (defaults 32/64/128 filters, kernels 3/5/7) -> flatten -> MLP head -> 1 output.

    The flatten keeps time order, so the head sees *where* a pattern occurred, not only that it did;
    ``fc_in = filters[-1] * steps left after the pools`` (seq 30 -> 15 -> 7 -> 3, so 384 by default).
    With the defaults and 40 features it has 130,081 parameters.
    """

    def __init__(self, input_size: int = 40, seq_len: int = 30, cfg: CNNConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or CNNConfig()
        self.input_size, self.seq_len, self.cfg = input_size, seq_len, cfg
        self.out_len = conv_output_len(seq_len, cfg.kernels)
        in_channels = [input_size, *cfg.filters[:-1]]
        self.convs = nn.Sequential(
            *(conv_block(c_in, c_out, k) for c_in, c_out, k in zip(in_channels, cfg.filters, cfg.kernels, strict=True))
        )
        self.fc_in = cfg.filters[-1] * self.out_len
        self.head = mlp_head(self.fc_in, cfg.fc_sizes, cfg.dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened conv features, (batch, fc_in)."""
        check_input(x, self.input_size)
        if x.shape[1] != self.seq_len:
            # The head's width is fixed by seq_len; a different window would fail with an opaque matmul error.
            raise ValueError(f"CNNModel was built for seq_len {self.seq_len}, got windows of {x.shape[1]}")
        return self.convs(x.transpose(1, 2)).flatten(1)  # Conv1d wants (batch, channels, time)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MultiScaleCNN(CountMixin, nn.Module):
    """Shallow, medium and deep conv branches (1, 2 and 3 blocks of ``cfg``), each averaged over time, fused.

    The deeper a branch, the wider its receptive field, so the branches see short-, mid- and long-range
    patterns. Global average pooling makes the model work for any window long enough for the deepest branch.
    """

    def __init__(self, input_size: int = 40, seq_len: int = 30, cfg: CNNConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or CNNConfig()
        self.input_size, self.seq_len, self.cfg = input_size, seq_len, cfg
        conv_output_len(seq_len, cfg.kernels)  # validates the window against the deepest branch
        self.branches = nn.ModuleList()
        for depth in range(1, len(cfg.filters) + 1):
            channels = [input_size, *cfg.filters[:depth]]
            blocks = [conv_block(c_in, c_out, k) for c_in, c_out, k in zip(channels, channels[1:], cfg.kernels)]
            self.branches.append(nn.Sequential(*blocks, nn.AdaptiveAvgPool1d(1), nn.Flatten()))
        self.head = mlp_head(sum(cfg.filters), cfg.fc_sizes, cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.input_size)
        x = x.transpose(1, 2)
        return self.head(torch.cat([branch(x) for branch in self.branches], dim=1))


def create_cnn_model(
    input_size: int = 40,
    seq_len: int = 30,
    cfg: CNNConfig | None = None,
    device: str | torch.device = "cpu",
    **params: Any,
) -> CNNModel:
    """Build a :class:`CNNModel` on ``device`` from ``cfg``, keyword params (``dropout=0.2``), or both."""
    return CNNModel(input_size, seq_len, config_with("cnn", CNNConfig, cfg, params)).to(device)


def default_search_space() -> dict[str, dict]:
    """A modest Ray Tune space (raycast.config.SearchDimension form)."""
    return {
        "lr": {"type": "loguniform", "low": 3e-4, "high": 3e-3},
        "dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
        "weight_decay": {"type": "choice", "values": [0.0, 1e-5, 1e-4]},
        "batch_size": {"type": "choice", "values": [256, 512, 1024]},
    }
