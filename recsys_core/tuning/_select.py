"""Choosing among tuned candidates: the one rule for "the best model on validation"."""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["pick_best"]


def pick_best(scores: Mapping[str, float]) -> str:
    """The name with the highest validation score; of equal scores, the first in ``scores``.

    A NaN score ranks below every number. Used by the nightly train step and by the experiment.
    """
    if not scores:
        raise ValueError("pick_best: no candidates")
    names = list(scores)

    def key(i: int) -> tuple[float, int]:
        value = float(scores[names[i]])
        return (-math.inf if math.isnan(value) else value, -i)

    return names[max(range(len(names)), key=key)]
