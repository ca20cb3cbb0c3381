"""Ensembles over frozen, pre-trained base models: a learned weighted average plus a meta-learner, or stacking.

Only the combiner trains. Everything after the bases is a function of the (batch, n_bases) matrix of base
predictions, exposed as ``forward_from_base_predictions``: the combiner can then be trained on cached base
predictions, and a server can run the bases elsewhere and combine their outputs with the same result as
``forward(x)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from raycast.config import EnsembleConfig
from raycast.models.common import CountMixin, mlp_head


class _FrozenBases(CountMixin, nn.Module):
    """Holds the base models, frozen and always in eval mode, and turns an input into their predictions."""

    def __init__(self, bases: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not bases:
            raise ValueError("an ensemble needs at least one base model")
        self.bases = nn.ModuleDict(bases)
        self.base_names = list(self.bases.keys())
        self.bases.requires_grad_(False)
        self.bases.eval()

    @property
    def n_bases(self) -> int:
        return len(self.base_names)

    def train(self, mode: bool = True) -> _FrozenBases:
        # Frozen bases must behave as they did when validated: BatchNorm on running statistics (and not
        # updating them from ensemble batches), no dropout. nn.Module.train would flip them back to train.
        super().train(mode)
        self.bases.eval()
        return self

    def base_prediction_matrix(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, n_bases), columns in ``base_names`` order."""
        # No torch.no_grad(): the frozen bases build no graph anyway, unless x itself requires grad
        # (saliency maps), where gradients through the bases are wanted.
        return torch.cat([self.bases[name](x).reshape(-1, 1) for name in self.base_names], dim=1)

    def get_base_predictions(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{name: (batch, 1) prediction}`` for every base model."""
        preds = self.base_prediction_matrix(x)
        return {name: preds[:, i : i + 1] for i, name in enumerate(self.base_names)}

    def _check_matrix(self, base_preds: torch.Tensor) -> None:
        if base_preds.dim() != 2 or base_preds.shape[1] != self.n_bases:
            raise ValueError(
                f"expected base predictions of shape (batch, {self.n_bases}) for {self.base_names}, "
                f"got {tuple(base_preds.shape)}"
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return self.forward_from_base_predictions(self.base_prediction_matrix(x))

    def forward_from_base_predictions(self, base_preds: torch.Tensor) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError


class EnsembleModel(_FrozenBases):
    """``final = (softmax-weighted average of the bases + meta-learner(base predictions)) / 2``.

    The weight predictor (``Linear(n, 64)+ReLU+Dropout+Linear(64, n)+Softmax``) picks per-sample weights;
    the meta-learner (``Linear(n, 64)+ReLU+BN+Dropout, Linear(64, 32)+ReLU+BN+Dropout, Linear(32, 1)``)
    corrects the average. With the three default bases the combiner has 3,012 parameters (1,145,959 in all).
    ``forward`` returns ``(prediction (batch, 1), details)`` with ``details`` holding ``base_predictions``
    ({name: (batch, 1)}), ``weights`` (batch, n), ``weighted`` (batch, 1) and ``meta`` (batch, 1).
    """

    def __init__(self, bases: Mapping[str, nn.Module], cfg: EnsembleConfig | None = None) -> None:
        super().__init__(bases)
        cfg = cfg or EnsembleConfig()
        self.cfg = cfg
        n = self.n_bases
        self.weight_predictor = nn.Sequential(
            nn.Linear(n, cfg.weight_hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.weight_hidden, n),
            nn.Softmax(dim=-1),
        )
        self.meta_learner = mlp_head(n, cfg.meta_hidden, cfg.dropout)

    def forward_from_base_predictions(self, base_preds: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Combine a (batch, n_bases) matrix of base predictions; ``forward(x)`` is exactly this after the bases."""
        self._check_matrix(base_preds)
        weights = self.weight_predictor(base_preds)
        weighted = (weights * base_preds).sum(dim=1, keepdim=True)
        meta = self.meta_learner(base_preds)
        details = {
            "base_predictions": {name: base_preds[:, i : i + 1] for i, name in enumerate(self.base_names)},
            "weights": weights,
            "weighted": weighted,
            "meta": meta,
        }
        return (weighted + meta) / 2, details

    def get_confidence_weights(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{name: (batch,) weight}``; the weights of one sample sum to 1."""
        weights = self.weight_predictor(self.base_prediction_matrix(x))
        return {name: weights[:, i] for i, name in enumerate(self.base_names)}


class StackedEnsemble(_FrozenBases):
    """Classic stacking: the meta-learner alone maps the base predictions to the output (no weighted average).

    Same interface as :class:`EnsembleModel`; ``details`` holds ``base_predictions`` and ``meta``.
    """

    def __init__(self, bases: Mapping[str, nn.Module], cfg: EnsembleConfig | None = None) -> None:
        super().__init__(bases)
        cfg = cfg or EnsembleConfig()
        self.cfg = cfg
        self.meta_learner = mlp_head(self.n_bases, cfg.meta_hidden, cfg.dropout)

    def forward_from_base_predictions(self, base_preds: torch.Tensor) -> tuple[torch.Tensor, dict]:
        self._check_matrix(base_preds)
        meta = self.meta_learner(base_preds)
        details = {
            "base_predictions": {name: base_preds[:, i : i + 1] for i, name in enumerate(self.base_names)},
            "meta": meta,
        }
        return meta, details


def create_ensemble_model(
    *bases: nn.Module | Mapping[str, nn.Module] | EnsembleConfig | None,
    cfg: EnsembleConfig | None = None,
    device: str | torch.device = "cpu",
) -> EnsembleModel:
    """Build an :class:`EnsembleModel` over the base models on ``device``.

    Two call forms: a ``{name: model}`` mapping, optionally followed by the config
    (``create_ensemble_model({"lstm": lstm, "cnn": cnn}, cfg)``), or the models themselves
    (``create_ensemble_model(lstm, cnn, attention, device="cuda")``), named after their kind. Any non-empty subset
    works; the bases keep the given order.
    """
    if bases and isinstance(bases[0], Mapping):
        named, rest = dict(bases[0]), bases[1:]
        if len(rest) > 1 or (rest and not isinstance(rest[0], EnsembleConfig | None)):
            raise TypeError("after a {name: model} mapping, create_ensemble_model takes only the EnsembleConfig")
        if rest and cfg is not None:
            raise TypeError("create_ensemble_model got the EnsembleConfig twice (positionally and as cfg=)")
        cfg = rest[0] if rest else cfg
    else:
        named = name_bases(bases)
    return EnsembleModel(named, cfg).to(device)


def name_bases(models: Sequence[object]) -> dict[str, nn.Module]:
    """``{name: model}`` for models passed positionally: ``lstm``, ``cnn``, ``attention`` by kind, else the class
    name in lower case; a second model of one kind gets ``_2`` (then ``_3``, ...)."""
    from raycast.models.attention import AttentionModel
    from raycast.models.cnn import CNNModel, MultiScaleCNN
    from raycast.models.lstm import LSTMEnsemble, LSTMModel

    kinds = {LSTMModel: "lstm", LSTMEnsemble: "lstm", CNNModel: "cnn", MultiScaleCNN: "cnn"}
    kinds[AttentionModel] = "attention"
    named: dict[str, nn.Module] = {}
    for i, model in enumerate(models):
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"create_ensemble_model: positional argument {i + 1} ({type(model).__name__}) is not a model; "
                "pass the models themselves or one {name: model} mapping, and the config as cfg="
            )
        kind = kinds.get(type(model), type(model).__name__.lower())
        name, n = kind, 1
        while name in named:
            n += 1
            name = f"{kind}_{n}"
        named[name] = model
    return named


def default_search_space() -> dict[str, dict]:
    """A modest Ray Tune space for the combiner (raycast.config.SearchDimension form); it trains fast."""
    return {
        "lr": {"type": "loguniform", "low": 1e-4, "high": 3e-3},
        "weight_hidden": {"type": "choice", "values": [32, 64]},
        "dropout": {"type": "uniform", "low": 0.0, "high": 0.4},
        "batch_size": {"type": "choice", "values": [256, 512, 1024]},
    }
