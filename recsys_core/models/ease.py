"""EASE^R (Steck, 2019): a closed-form item-item linear autoencoder.

``B = I - P diag(1 / diag(P))`` with ``P = (X^T X + reg I)^-1``, zero diagonal. Scores are ``X B``.
Cost is one dense ``n_items x n_items`` inverse: fine up to a few tens of thousands of items.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from pydantic import Field
from scipy.linalg import lapack

from recsys_core.interactions import Interactions
from recsys_core.models._base import ModelConfig, Recommender

__all__ = ["EASE", "EASEConfig", "ease_weights"]

_ROWS = 1024


def ease_weights(gram: np.ndarray) -> np.ndarray:
    """``B = I - P diag(1 / diag(P))`` (zero diagonal) for ``P = gram^-1``, as float32.

    ``gram`` (float64, ``X^T X + reg I``, symmetric positive definite) is overwritten: the inverse
    is taken in place by Cholesky (LAPACK ``potrf``/``potri``), which needs half the time and a
    third of the memory of a general inverse. Peak memory: ``gram`` plus the float32 result.
    """
    n = gram.shape[0]
    c, info = lapack.dpotrf(gram, lower=0, overwrite_a=1, clean=0)
    if info != 0:
        raise np.linalg.LinAlgError(
            f"EASE: X^T X + reg I is not positive definite (potrf info {info})"
        )
    p, info = lapack.dpotri(c, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: inverse failed (potri info {info})")
    # potri fills the upper triangle only: mirror it into the lower one, block by block
    for s in range(0, n, _ROWS):
        e = min(n, s + _ROWS)
        p[s:e, :s] = p[:s, s:e].T
        blk = p[s:e, s:e]
        p[s:e, s:e] = np.triu(blk) + np.triu(blk, 1).T
    neg_inv_diag = (-1.0 / np.diag(p)).astype(np.float64)
    b = np.empty((n, n), dtype=np.float32)
    for s in range(0, n, _ROWS):
        e = min(n, s + _ROWS)
        b[s:e] = p[s:e] * neg_inv_diag[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b


class EASEConfig(ModelConfig):
    reg: float = Field(
        default=250.0, gt=0, description="L2 regularisation (lambda) of the item weights."
    )
    binarize: bool = Field(default=True, description="Fit on 0/1 interactions instead of weights.")
    dropout: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="EDLAE emphasized-dropout rate p (Steck 2020): adds p / (1 - p) * diag(X^T X) "
        "to the regulariser, so popular items are damped more. 0 = plain EASE.",
    )


class EASE(Recommender):
    name = "ease"
    config_class = EASEConfig

    def _fit(
        self,
        interactions: Interactions,
        *,
        items: pl.DataFrame | None,
        item_embeddings: pl.DataFrame | None,
    ) -> None:
        x = interactions.binarized() if self.config.binarize else interactions.matrix
        x = x.astype(np.float64)
        g = (x.T @ x).toarray()
        d = np.diag_indices_from(g)
        g[d] += self.config.reg + self.config.dropout / (1.0 - self.config.dropout) * g[d]
        self.weights_ = ease_weights(g)
        self._x = x.astype(np.float32).tocsr()

    def _score_block(self, user_index: np.ndarray) -> np.ndarray:
        x = getattr(self, "_x", None)
        if x is None:
            x = (
                self.interactions_.binarized()
                if self.config.binarize
                else self.interactions_.matrix
            )
            self._x = x = x.astype(np.float32).tocsr()
        return np.asarray(x[user_index] @ self.weights_, dtype=np.float32)

    def _item_item(self) -> Any:
        return self.weights_

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"weights": self.weights_}, {}

    def _set_state(self, arrays: dict[str, np.ndarray], scalars: dict[str, Any]) -> None:
        self.weights_ = arrays["weights"].astype(np.float32)
