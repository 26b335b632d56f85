"""EASE^R (Steck, 2019): a closed-form item-item linear autoencoder.

``B = I - P diag(1 / diag(P))`` with ``P = (X^T X + reg I)^-1``, zero diagonal. Scores are ``X B``.
Cost is one dense ``n_items x n_items`` inverse: fine up to a few tens of thousands of items.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from pydantic import Field

from recsys_core.interactions import Interactions
from recsys_core.models._base import ModelConfig, Recommender

__all__ = ["EASE", "EASEConfig"]


class EASEConfig(ModelConfig):
    reg: float = Field(default=250.0, gt=0, description="L2 regularisation (lambda) of the item weights.")
    binarize: bool = Field(default=True, description="Fit on 0/1 interactions instead of weights.")


class EASE(Recommender):
    name = "ease"
    config_class = EASEConfig

    def _fit(self, interactions: Interactions, *, items: pl.DataFrame | None, item_embeddings: pl.DataFrame | None) -> None:
        x = interactions.binarized() if self.config.binarize else interactions.matrix
        x = x.astype(np.float64)
        g = (x.T @ x).toarray()
        g[np.diag_indices_from(g)] += self.config.reg
        p = np.linalg.inv(g)
        b = p / (-np.diag(p))
        b[np.diag_indices_from(b)] = 0.0
        self.weights_ = b.astype(np.float32)
        self._x = x.astype(np.float32).tocsr()

    def _score_block(self, user_index: np.ndarray) -> np.ndarray:
        x = getattr(self, "_x", None)
        if x is None:
            x = self.interactions_.binarized() if self.config.binarize else self.interactions_.matrix
            self._x = x = x.astype(np.float32).tocsr()
        return np.asarray(x[user_index] @ self.weights_, dtype=np.float32)

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"weights": self.weights_}, {}

    def _set_state(self, arrays: dict[str, np.ndarray], scalars: dict[str, Any]) -> None:
        self.weights_ = arrays["weights"].astype(np.float32)
