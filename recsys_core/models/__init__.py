"""Recommendation models behind one contract (see :mod:`recsys_core.models._base`)."""

from __future__ import annotations

from recsys_core.models._base import ModelConfig, NotFittedError, Recommender, topk_block
from recsys_core.models.ease import EASE, EASEConfig
from recsys_core.models.popularity import Popularity, PopularityConfig

__all__ = [
    "EASE",
    "EASEConfig",
    "MODELS",
    "ModelConfig",
    "NotFittedError",
    "Popularity",
    "PopularityConfig",
    "Recommender",
    "get_model_class",
    "topk_block",
]

#: Registry of model names (as used in config and CLI) to classes.
MODELS: dict[str, type[Recommender]] = {
    cls.name: cls for cls in (Popularity, EASE)
}


def get_model_class(name: str) -> type[Recommender]:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}") from None
