"""Search spaces: for every registered model, the scikit-optimize dimensions worth searching.

Every dimension's ``name`` is a field of the model's config, so a point of the space is a set of
config overrides. Scale parameters (regularisation, neighbour counts, factor counts, half-lives)
are searched log-uniformly; bounded mixing weights uniformly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from skopt.space import Categorical, Dimension, Integer, Real

__all__ = ["SEARCH_SPACES", "TIME_DIMENSIONS", "search_space"]

#: Dimensions that change nothing without timestamps: searched only when the training
#: interactions have them (``Interactions.last_ts``).
TIME_DIMENSIONS = frozenset({"half_life_days", "time_weight", "time_scale"})


def _popularity(fixed: Mapping[str, Any]) -> list[Dimension]:
    return [Real(1.0, 365.0, prior="log-uniform", name="half_life_days")]


def _itemknn(fixed: Mapping[str, Any]) -> list[Dimension]:
    return [
        Integer(5, 500, prior="log-uniform", name="neighbors"),
        Real(0.1, 500.0, prior="log-uniform", name="shrink"),
    ]


def _ease(fixed: Mapping[str, Any]) -> list[Dimension]:
    # `dropout` (EDLAE) is left out on purpose: it rarely beats a well-tuned `reg` and doubles
    # the dimensions a small budget must cover. Pass it in fixed_params to use it.
    # The session-aware share and its time scale (10 s to 7 days) are dropped by `tune` when the
    # interactions carry no timestamps (see TIME_DIMENSIONS).
    dims = [Real(1.0, 1e4, prior="log-uniform", name="reg"), Real(0.0, 1.0, name="time_weight")]
    if fixed.get("time_weight", None) != 0:  # pinned to plain EASE: the time scale is moot
        dims.append(Real(10.0, 7 * 86400.0, prior="log-uniform", name="time_scale"))
    return dims


def _rp3beta(fixed: Mapping[str, Any]) -> list[Dimension]:
    return [
        Real(0.1, 2.0, name="alpha"),
        Real(0.0, 1.0, name="beta"),
        Integer(10, 500, prior="log-uniform", name="neighbors"),
    ]


def _als(fixed: Mapping[str, Any]) -> list[Dimension]:
    return [
        Integer(8, 256, prior="log-uniform", name="embedding_size"),
        Real(1e-3, 100.0, prior="log-uniform", name="reg"),
        Real(0.1, 100.0, prior="log-uniform", name="alpha"),
    ]


def _hybrid(fixed: Mapping[str, Any]) -> list[Dimension]:
    dims: list[Dimension] = [
        Real(0.0, 1.0, name="text_weight"),
        Real(0.0, 2.0, name="cold_scale"),
    ]
    if fixed.get("base", "ease") == "ease":
        dims.append(Real(1.0, 1e4, prior="log-uniform", name="reg"))
    else:
        dims += [
            Integer(5, 500, prior="log-uniform", name="neighbors"),
            Real(0.1, 500.0, prior="log-uniform", name="shrink"),
        ]
    return dims


def _sasrec(fixed: Mapping[str, Any]) -> list[Dimension]:
    # modest CPU ranges; embedding_size stays a multiple of every heads value (1, 2 or 4)
    return [
        Categorical([32, 64, 128], name="embedding_size"),
        Integer(1, 3, name="blocks"),
        Categorical([1, 2, 4], name="heads"),
        Real(0.0, 0.5, name="dropout"),
        Real(1e-4, 1e-2, prior="log-uniform", name="learning_rate"),
        Categorical([50, 100, 200], name="max_len"),
        # AdamW weight decay: on small catalogs the item table overfits without it
        Real(1e-3, 2.0, prior="log-uniform", name="reg"),
    ]


#: Model name -> function of the fixed parameters returning the dimensions to search.
SEARCH_SPACES: dict[str, Callable[[Mapping[str, Any]], list[Dimension]]] = {
    "popularity": _popularity,
    "itemknn": _itemknn,
    "ease": _ease,
    "rp3beta": _rp3beta,
    "als": _als,
    "hybrid": _hybrid,
    "sasrec": _sasrec,
}


def search_space(model_name: str, fixed_params: Mapping[str, Any] | None = None) -> list[Dimension]:
    """The dimensions searched for ``model_name``, minus those pinned in ``fixed_params``.

    An empty list means there is nothing to search (the model is only evaluated).
    """
    try:
        factory = SEARCH_SPACES[model_name]
    except KeyError:
        raise ValueError(
            f"no search space for model {model_name!r}; expected one of {sorted(SEARCH_SPACES)}"
        ) from None
    fixed = dict(fixed_params or {})
    return [d for d in factory(fixed) if d.name not in fixed]
