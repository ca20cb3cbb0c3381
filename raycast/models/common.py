"""Small pieces every model shares: parameter counting, the MLP head, bf16 autocast."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import BaseModel, ValidationError
from torch import nn

TRAIN_KEYS = ("lr", "batch_size", "loss", "weight_decay")
"""Search-space keys that belong to the training loop rather than to a model config."""


def validate_config(name: str, cfg_cls: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    """``cfg_cls`` validated from plain data; a ValueError naming each offending key and listing the known ones."""
    try:
        return cfg_cls.model_validate(data)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"]) or "<root>"
            problems.append(f"{name}.{key}: {'unknown key' if e['type'] == 'extra_forbidden' else e['msg']}")
        allowed = ", ".join(cfg_cls.model_fields)
        raise ValueError(f"invalid {name} model params: " + "; ".join(problems) + f" (known keys: {allowed})") from None


def config_with(name: str, cfg_cls: type[BaseModel], cfg: BaseModel | None, params: dict[str, Any]) -> BaseModel:
    """``cfg`` (default: ``cfg_cls()``) with keyword ``params`` such as ``hidden_size=128`` applied on top.

    Lets a factory take either raycast's config object or the reference design's keyword form.
    """
    if not params:
        return cfg or cfg_cls()
    base = cfg.model_dump() if cfg is not None else {}
    return validate_config(name, cfg_cls, base | params)


class CountMixin:
    """``count_parameters`` (all, frozen included) and ``count_trainable_parameters`` for any nn.Module."""

    def count_parameters(self: Any) -> int:
        return sum(p.numel() for p in self.parameters())

    def count_trainable_parameters(self: Any) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def mlp_head(in_features: int, hidden: Sequence[int], dropout: float) -> nn.Sequential:
    """``[Linear -> ReLU -> BatchNorm1d -> Dropout] * len(hidden) -> Linear(., 1)``.

    BatchNorm sits after the activation, as in the reference design; the parameter counts depend on it.
    """
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.BatchNorm1d(h), nn.Dropout(dropout)]
        width = h
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def check_input(x: torch.Tensor, input_size: int) -> None:
    # A (seq, features) window passed without a batch axis would otherwise fail deep inside a layer.
    if x.dim() != 3 or x.shape[-1] != input_size:
        raise ValueError(f"expected input of shape (batch, seq, {input_size}), got {tuple(x.shape)}")


def autocast_context(device: str | torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when asked; a no-op elsewhere (CPU bf16 autocast is slower than fp32 here)."""
    if bf16 and torch.device(device).type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
