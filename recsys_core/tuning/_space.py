"""Search spaces: each model class declares its own (``Recommender.search_space``); this module
looks it up by model name and drops the dimensions pinned by fixed parameters.

Every dimension's ``name`` is a field of the model's config, so a point of the space is a set of
config overrides. Scale parameters (regularisation, neighbour counts, factor counts, half-lives)
are searched log-uniformly; bounded mixing weights uniformly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from recsys_core.models import get_model_class

if TYPE_CHECKING:
    from skopt.space import Dimension

__all__ = ["TIME_DIMENSIONS", "search_space"]

#: Dimensions that change nothing without timestamps: searched only when the training
#: interactions have them (``Interactions.last_ts``).
TIME_DIMENSIONS = frozenset({"half_life_days", "time_weight", "time_scale"})


def search_space(model_name: str, fixed_params: Mapping[str, Any] | None = None) -> list[Dimension]:
    """The dimensions searched for ``model_name``, minus those pinned in ``fixed_params``.

    An empty list means there is nothing to search (the model is only evaluated). An unknown
    name raises ValueError listing the registered models.
    """
    fixed = dict(fixed_params or {})
    return [d for d in get_model_class(model_name).search_space(fixed) if d.name not in fixed]
