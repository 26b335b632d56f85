"""Recommendation models behind one contract (see :mod:`recsys_core.models._base`).

=============  ==============================================================================
name           model
=============  ==============================================================================
popularity     time-decayed item popularity (non-personalised baseline)
itemknn        item-item cosine with shrinkage and top-neighbour pruning (sparse)
ease           EASE^R closed-form item-item autoencoder (dense, up to ~20k items)
rp3beta        random walk user -> item -> user -> item, popularity-damped (sparse)
als            implicit-feedback matrix factorisation, ALS with conjugate gradient
hybrid         EASE/ItemKNN blended with item-text similarity; recommends cold items
sasrec         causal Transformer over each user's history, item text fused in (torch)
=============  ==============================================================================
"""

from __future__ import annotations

from typing import Literal

from recsys_core.models._base import ModelConfig, NotFittedError, Recommender, topk_block
from recsys_core.models.als import ALS, ALSConfig
from recsys_core.models.ease import EASE, EASEConfig
from recsys_core.models.hybrid import Hybrid, HybridConfig, MissingEmbeddingsWarning
from recsys_core.models.itemknn import ItemKNN, ItemKNNConfig
from recsys_core.models.popularity import Popularity, PopularityConfig
from recsys_core.models.rp3beta import RP3beta, RP3betaConfig
from recsys_core.models.sasrec import SASRec, SASRecConfig

__all__ = [
    "ALS",
    "ALSConfig",
    "EASE",
    "EASEConfig",
    "MODELS",
    "ModelName",
    "Hybrid",
    "HybridConfig",
    "ItemKNN",
    "ItemKNNConfig",
    "MissingEmbeddingsWarning",
    "ModelConfig",
    "NotFittedError",
    "Popularity",
    "PopularityConfig",
    "RP3beta",
    "RP3betaConfig",
    "Recommender",
    "SASRec",
    "SASRecConfig",
    "get_model_class",
    "topk_block",
]

#: The model names a user can type (config, CLI, the Prefect form's enum); equal to ``MODELS``'
#: keys (a test checks).
ModelName = Literal["popularity", "itemknn", "ease", "rp3beta", "als", "hybrid", "sasrec"]

#: Registry of model names (as used in config and CLI) to classes.
MODELS: dict[str, type[Recommender]] = {
    cls.name: cls for cls in (Popularity, ItemKNN, EASE, RP3beta, ALS, Hybrid, SASRec)
}


def get_model_class(name: str) -> type[Recommender]:
    """The class registered under ``name`` in :data:`MODELS`."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}") from None
