"""raycast's model zoo: one file per architecture, each with its factory and default Tune search space.

Every model maps (batch, seq, features) windows to (batch, 1) predictions, except the ensembles, which return
``(prediction, details)``. ``build_model`` is the one entry point that turns a name and plain-data params
(from YAML or a Tune trial) into a model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from torch import nn

from raycast.config import AttentionConfig, CNNConfig, LSTMConfig
from raycast.models.attention import (
    AttentionModel,
    MultiHeadAttention,
    PositionalEncoding,
    TransformerBlock,
    create_attention_model,
)
from raycast.models.attention import default_search_space as attention_search_space
from raycast.models.cnn import CNNModel, MultiScaleCNN, conv_output_len, create_cnn_model
from raycast.models.cnn import default_search_space as cnn_search_space
from raycast.models.common import TRAIN_KEYS, autocast_context, validate_config
from raycast.models.ensemble import EnsembleModel, StackedEnsemble, create_ensemble_model
from raycast.models.ensemble import default_search_space as ensemble_search_space
from raycast.models.lstm import LSTMEnsemble, LSTMModel, create_lstm_model
from raycast.models.lstm import default_search_space as lstm_search_space

MODELS: dict[str, tuple[type[nn.Module], type[BaseModel]]] = {
    "lstm": (LSTMModel, LSTMConfig),
    "cnn": (CNNModel, CNNConfig),
    "attention": (AttentionModel, AttentionConfig),
}
"""Base model name -> (model class, its config class)."""

SEARCH_SPACES = {
    "lstm": lstm_search_space,
    "cnn": cnn_search_space,
    "attention": attention_search_space,
    "ensemble": ensemble_search_space,
}
"""Model name -> function returning its default search space (a fresh dict each call)."""


def model_config(name: str, params: dict[str, Any] | BaseModel | None = None) -> BaseModel:
    """Validate ``params`` into the config class of model ``name``; errors name the offending keys."""
    if name not in MODELS:
        hint = " (build the ensemble with create_ensemble_model)" if name == "ensemble" else ""
        raise ValueError(f"unknown model {name!r}{hint}; expected one of {sorted(MODELS)}")
    cfg_cls = MODELS[name][1]
    if isinstance(params, cfg_cls):
        return params
    data = params.model_dump() if isinstance(params, BaseModel) else dict(params or {})
    return validate_config(name, cfg_cls, data)


def build_model(
    name: str, input_size: int, seq_len: int, params: dict[str, Any] | BaseModel | None = None
) -> nn.Module:
    """Build base model ``name`` ("lstm", "cnn" or "attention") from a config object or plain dict.

    Training keys (``lr``, ``batch_size``, ...) are not model params: split them off first.
    """
    cfg = model_config(name, params)
    return MODELS[name][0](input_size, seq_len, cfg)


__all__ = [
    "MODELS",
    "SEARCH_SPACES",
    "TRAIN_KEYS",
    "AttentionModel",
    "CNNModel",
    "EnsembleModel",
    "LSTMEnsemble",
    "LSTMModel",
    "MultiHeadAttention",
    "MultiScaleCNN",
    "PositionalEncoding",
    "StackedEnsemble",
    "TransformerBlock",
    "attention_search_space",
    "autocast_context",
    "build_model",
    "cnn_search_space",
    "conv_output_len",
    "create_attention_model",
    "create_cnn_model",
    "create_ensemble_model",
    "create_lstm_model",
    "ensemble_search_space",
    "lstm_search_space",
    "model_config",
]
