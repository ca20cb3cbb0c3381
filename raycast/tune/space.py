"""Search spaces: the model's default space, the config's overrides, and sampled values back into a config.

A search-space key is either a field of the tuned model's config (``models.<model>.<key>``) or a training key
(``train.<key>``). Everything is checked here, on the driver, before Ray starts: a typo in the config fails in
a second with the key's name, not minutes later inside every trial.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from raycast.config import EnsembleConfig, RaycastConfig, SearchDimension

ENSEMBLE_TRAIN_KEYS = {"lr": "ensemble_lr", "ensemble_lr": "ensemble_lr", "batch_size": "batch_size"}
"""Training keys the ensemble head reads, and the ``train`` field each one sets (its lr is ``ensemble_lr``)."""

BASE_TRAIN_KEYS = ("window", "label_transform", "batch_sampling")
"""Training keys a base-model search may set beyond the models' own (``raycast.models.TRAIN_KEYS``): the window
the model reads (20/30/60 days...) and how its labels and batches are made."""

INTERNAL_TRAIN_KEYS = ("seed",)
"""Keys raycast itself adds to a trial's params (the seed re-runs); never sampled from the user's space."""


def model_fields(model: str) -> list[str]:
    """The config fields of ``model`` that a search space may set."""
    from raycast.models import MODELS

    return list(EnsembleConfig.model_fields) if model == "ensemble" else list(MODELS[model][1].model_fields)


def train_keys(model: str) -> dict[str, str]:
    """Search-space training key -> the ``train`` field it sets, for ``model``."""
    from raycast.models import TRAIN_KEYS

    # The ensemble head trains with a fixed MSE loss and no weight decay: tuning those would do nothing.
    return dict(ENSEMBLE_TRAIN_KEYS) if model == "ensemble" else {k: k for k in (*TRAIN_KEYS, *BASE_TRAIN_KEYS)}


def apply_params(cfg: RaycastConfig, model: str, params: dict[str, Any]) -> RaycastConfig:
    """``cfg`` with a trial's sampled ``params`` written into ``models.<model>`` and ``train``; re-validated."""
    data = cfg.model_dump(mode="json")
    fields, trains = set(model_fields(model)), train_keys(model)
    for key, value in params.items():
        if key in fields:
            data["models"][model][key] = value
        elif key in trains:
            data["train"][trains[key]] = value
        elif key in INTERNAL_TRAIN_KEYS:
            data["train"][key] = value
        else:
            raise ValueError(f"search-space key {key!r} is neither a {model} config field nor a training key")
    return RaycastConfig.model_validate(data)


def resolve_search_space(cfg: RaycastConfig) -> dict[str, SearchDimension]:
    """The tuned model's default space, overridden and extended by ``cfg.tune.search_space``, all checked.

    Raises ``ValueError`` naming the offending entry: an unknown key, or a value the config would reject.
    """
    from raycast.models import SEARCH_SPACES

    model = cfg.tune.model
    space = {k: SearchDimension.model_validate(v) for k, v in SEARCH_SPACES[model]().items()}
    fields, trains = model_fields(model), train_keys(model)
    for key in cfg.tune.search_space:
        if key not in fields and key not in trains:
            raise ValueError(
                f"tune.search_space.{key}: not a field of the {model} model config nor a training key "
                f"(model fields: {', '.join(fields)}; training keys: {', '.join(trains)})"
            )
    space |= cfg.tune.search_space
    for key, dim in space.items():
        for value in _probe_values(dim):
            try:
                apply_params(cfg, model, {key: value})
            except ValidationError as err:
                why = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
                raise ValueError(f"tune.search_space.{key}: value {value!r} is not accepted ({why})") from None
    return space


def _probe_values(dim: SearchDimension) -> list[Any]:
    # Each choice and both ends of a range, one key at a time: catches a wrong type or an out-of-range bound.
    # Combinations (attention heads not dividing hidden size) can still fail, inside that trial only.
    if dim.type == "choice":
        return list(dim.values or [])
    if dim.type == "randint":
        return [int(dim.low), int(dim.high) - 1]
    return [dim.low, _just_below(dim.high)]


def _just_below(high: float) -> float:
    # uniform/loguniform sample in [low, high): probe a value a hair under a bound that is itself exclusive.
    return high - abs(high) * 1e-9 if high else -1e-12


def to_tune_space(space: dict[str, SearchDimension]) -> dict[str, Any]:
    """The search space as Ray Tune domains (``tune.choice``, ``tune.uniform``...)."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, dim in space.items():
        if dim.type == "choice":
            out[key] = tune.choice(list(dim.values or []))
        elif dim.type == "uniform":
            out[key] = tune.uniform(dim.low, dim.high)
        elif dim.type == "loguniform":
            out[key] = tune.loguniform(dim.low, dim.high)
        else:  # randint: high is exclusive, as in Tune
            out[key] = tune.randint(int(dim.low), int(dim.high))
    return out

