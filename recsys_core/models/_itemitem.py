"""Shared scoring and persistence of models whose scores are ``X @ W`` with a sparse item x item
``W`` (ItemKNN, RP3beta): subclasses only learn ``similarity_`` in ``_fit``."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys_core.interactions import Interactions
from recsys_core.models._base import Recommender
from recsys_core.models._sparse import csr_arrays, csr_from_arrays

__all__ = ["SparseItemItem"]


class SparseItemItem(Recommender):
    """Base of sparse item-to-item models; the config must have a ``binarize`` field."""

    similarity_: sp.csr_matrix

    def _input(self, interactions: Interactions) -> sp.csr_matrix:
        x = interactions.binarized() if self.config.binarize else interactions.matrix
        return x.astype(np.float32).tocsr()

    def _score_block(self, user_index: np.ndarray) -> np.ndarray:
        x = getattr(self, "_x", None)
        if x is None:
            self._x = x = self._input(self.interactions_)
        return (x[user_index] @ self.similarity_).toarray().astype(np.float32, copy=False)

    def _item_item(self) -> Any:
        return self.similarity_

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return csr_arrays("similarity", self.similarity_), {}

    def _set_state(self, arrays: dict[str, np.ndarray], scalars: dict[str, Any]) -> None:
        self.similarity_ = csr_from_arrays("similarity", arrays)
