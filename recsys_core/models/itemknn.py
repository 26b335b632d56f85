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
from recsys_core.models._base import ModelConfig
from recsys_core.models._itemitem import SparseItemItem
from recsys_core.models._sparse import blocked_topk

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


class ItemKNN(SparseItemItem):
    """Item-based k-nearest-neighbours with shrunk cosine similarity."""

    name = "itemknn"
    config_class = ItemKNNConfig

    @classmethod
    def search_space(cls, fixed: dict[str, Any]) -> list[Any]:
        """The scikit-optimize dimensions to tune, given the pinned parameters ``fixed``."""
        from skopt.space import Integer, Real  # slow to import: only when tuning

        return [
            Integer(5, 500, prior="log-uniform", name="neighbors"),
            Real(0.1, 500.0, prior="log-uniform", name="shrink"),
        ]

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
