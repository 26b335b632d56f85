"""ItemKNN: item-item cosine similarity with shrinkage and top-neighbour pruning (sparse).

``sim(i, j) = <x_i, x_j> / (||x_i|| ||x_j|| + shrink)`` over the item columns of the user x item
matrix. Each item keeps only its ``neighbors`` most similar items; a user's score of item ``j`` is
the sum of ``x_ui * sim(i, j)`` over the items ``i`` of the user's history that are neighbours of
``j``. Items without interactions have a zero column: they get score 0, never NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import Field

from recsys_core.interactions import Interactions
from recsys_core.models._base import ModelConfig, Recommender
from recsys_core.models._sparse import blocked_topk, csr_arrays, csr_from_arrays

__all__ = ["ItemKNN", "ItemKNNConfig", "cosine_neighbours"]


class ItemKNNConfig(ModelConfig):
    neighbors: int = Field(default=100, ge=1, description="Neighbours kept per item (pruning).")
    shrink: float = Field(
        default=10.0,
        ge=0,
        description="Added to the cosine denominator: damps pairs with little support.",
    )
    binarize: bool = Field(default=True, description="Fit on 0/1 interactions instead of weights.")


def cosine_neighbours(x: sp.csr_matrix, neighbors: int, shrink: float) -> sp.csr_matrix:
    """Item x item matrix ``W`` whose column ``j`` holds the top-``neighbors`` cosine neighbours
    of item ``j`` (shrunk), zero diagonal. Scores are ``X @ W``."""
    x = x.astype(np.float32).tocsc()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel()).astype(np.float32)
    xt = x.T.tocsr()
    n_items = x.shape[1]

    def rows(start: int, stop: int) -> np.ndarray:
        block = (xt[start:stop] @ x).toarray()
        denom = norms[start:stop, None] * norms[None, :] + np.float32(shrink)
        np.divide(block, denom, out=block, where=denom > 0)
        block[denom <= 0] = 0.0
        block[np.arange(stop - start), np.arange(start, stop)] = 0.0
        return block

    # row j = neighbours of item j (cosine is symmetric); transpose so column j holds them
    s = blocked_topk(rows, n_items, n_items, neighbors)
    return s.T.tocsr()


class ItemKNN(Recommender):
    """Item-based k-nearest-neighbours with shrunk cosine similarity."""

    name = "itemknn"
    config_class = ItemKNNConfig

    def _fit(
        self,
        interactions: Interactions,
        *,
        items: pl.DataFrame | None,
        item_embeddings: pl.DataFrame | None,
    ) -> None:
        x = self._input(interactions)
        self.similarity_ = cosine_neighbours(x, self.config.neighbors, self.config.shrink)
        self._x = x

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
