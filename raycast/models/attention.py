"""Transformer-encoder regressor over (batch, seq, features) windows, with inspectable attention weights."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from raycast.config import AttentionConfig
from raycast.models.common import CountMixin, check_input, config_with, mlp_head


class MultiHeadAttention(nn.Module):
    """Self-attention with separate Q, K, V and output projections (4 x ``Linear(hidden, hidden)``).

    ``mask`` is boolean, broadcastable to (batch, heads, seq, seq) (a (batch, seq, seq) or (seq, seq) mask is
    accepted too); True marks the keys a query may attend to.
    """

    def __init__(self, hidden_size: int = 128, num_heads: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.hidden_size, self.num_heads, self.head_dim = hidden_size, num_heads, hidden_size // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, s, _ = t.shape
        return t.view(b, s, self.num_heads, self.head_dim).transpose(1, 2)  # (batch, heads, seq, head_dim)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, need_weights: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(output (batch, seq, hidden), weights (batch, heads, seq, seq) or None)``.

        ``need_weights=False`` takes PyTorch's fused scaled-dot-product kernel (flash/memory-efficient on
        CUDA), which never materialises the weights; the model's forward uses it, inspection does not.
        """
        b, s, _ = x.shape
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
        if mask is not None and mask.dim() == 3:
            mask = mask.unsqueeze(1)  # (batch, seq, seq) -> one mask for every head
        p = self.dropout if self.training else 0.0
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(dim=-1)
            ctx = F.dropout(weights, p=p) @ v
        else:
            weights = None
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        out = self.out_proj(ctx.transpose(1, 2).reshape(b, s, self.hidden_size))
        return out, weights

    def get_attention_weights(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, seq, seq) weights: each head's rows sum to 1, then the heads are averaged."""
        _, weights = self.forward(x, mask, need_weights=True)
        return weights.mean(dim=1)


class TransformerBlock(nn.Module):
    """Post-norm encoder block: ``x = LN(x + attn(x)); x = LN(x + FFN(x))`` with FFN ``hidden->ff->hidden``."""

    def __init__(self, hidden_size: int = 128, num_heads: int = 8, ff_size: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(hidden_size, num_heads, dropout)
        self.norm1 = nn.LayerNorm(hidden_size)
        self.ffn = nn.Sequential(
            nn.Linear(hidden_size, ff_size), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_size, hidden_size)
        )
        self.norm2 = nn.LayerNorm(hidden_size)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, weights = self.attn(x, mask, need_weights=need_weights)
        x = self.norm1(x + self.drop(a))
        x = self.norm2(x + self.drop(self.ffn(x)))
        return x, weights


class PositionalEncoding(nn.Module):
    """Fixed sinusoidal encoding (Vaswani et al.) added to the input; a buffer, so it has no parameters.

    Not persistent in the state dict: it is a pure function of (max_len, d_model), and leaving it out lets a
    checkpoint load into a model built with another ``max_seq_len``.
    """

    def __init__(self, d_model: int, max_len: int = 256) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div[: d_model // 2])  # odd d_model has one fewer cosine column
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.pe.shape[0]:
            raise ValueError(f"sequence length {x.shape[1]} exceeds max_seq_len {self.pe.shape[0]}")
        return x + self.pe[: x.shape[1]].to(x.dtype)


class AttentionModel(CountMixin, nn.Module):
    """``Linear(features, hidden)`` + positional encoding -> transformer blocks -> mean over time -> MLP head.

    With the defaults (40 features, hidden 128, 8 heads, 2 blocks, FFN 512, fc 64) it has 410,241 parameters.
    Any window up to ``cfg.max_seq_len`` works, since pooling is over time.
    """

    def __init__(self, input_size: int = 40, seq_len: int = 30, cfg: AttentionConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or AttentionConfig()
        if seq_len > cfg.max_seq_len:
            raise ValueError(f"seq_len {seq_len} exceeds attention max_seq_len {cfg.max_seq_len}")
        self.input_size, self.seq_len, self.cfg = input_size, seq_len, cfg
        self.input_proj = nn.Linear(input_size, cfg.hidden_size)
        self.pos_encoding = PositionalEncoding(cfg.hidden_size, cfg.max_seq_len)
        self.input_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.hidden_size, cfg.num_heads, cfg.ff_size, cfg.dropout) for _ in range(cfg.num_layers)
        )
        self.head = mlp_head(cfg.hidden_size, [cfg.fc_size], cfg.dropout)

    def _encode(self, x: torch.Tensor, need_weights: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        check_input(x, self.input_size)
        h = self.input_drop(self.pos_encoding(self.input_proj(x)))
        all_weights = []
        for block in self.blocks:
            h, w = block(h, need_weights=need_weights)
            if need_weights:
                all_weights.append(w.mean(dim=1))
        return h, all_weights

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled (batch, hidden) representation the head reads."""
        return self._encode(x, need_weights=False)[0].mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def get_attention_weights(
        self, x: torch.Tensor, all_layers: bool = False
    ) -> torch.Tensor | list[torch.Tensor]:
        """(batch, seq, seq) head-averaged weights of the last block, or one per block if ``all_layers``."""
        weights = self._encode(x, need_weights=True)[1]
        return weights if all_layers else weights[-1]


def create_attention_model(
    input_size: int = 40,
    seq_len: int = 30,
    cfg: AttentionConfig | None = None,
    device: str | torch.device = "cpu",
    **params: Any,
) -> AttentionModel:
    """Build an :class:`AttentionModel` on ``device`` from ``cfg``, keyword params (``hidden_size=128``), or both."""
    return AttentionModel(input_size, seq_len, config_with("attention", AttentionConfig, cfg, params)).to(device)


def default_search_space() -> dict[str, dict]:
    """A modest Ray Tune space (raycast.config.SearchDimension form); 8 heads divide both hidden sizes."""
    return {
        "lr": {"type": "loguniform", "low": 1e-4, "high": 1e-3},
        "hidden_size": {"type": "choice", "values": [64, 128]},
        "num_layers": {"type": "choice", "values": [1, 2]},
        "dropout": {"type": "uniform", "low": 0.0, "high": 0.3},
        "batch_size": {"type": "choice", "values": [256, 512, 1024]},
    }
