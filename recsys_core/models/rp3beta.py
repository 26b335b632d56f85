"""RP3beta (Paudel et al. 2017; Christoffel et al. 2015): a three-step random walk, popularity-damped.

With ``P_ui`` the user -> item transition matrix (rows of X normalised to sum 1) and ``P_iu`` the
item -> user one (rows of the 0/1 ``X^T`` normalised), both raised elementwise to ``alpha``:

``W[i, j] = (P_iu @ P_ui)[i, j] / popularity(j) ** beta``, zero diagonal, each row ``i`` pruned to
its ``neighbors`` largest entries. A user's score of item ``j`` is ``sum_i x_ui W[i, j]``.
``beta`` > 0 lowers the score of popular items; items without interactions score 0.
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

__all__ = ["RP3beta", "RP3betaConfig"]


class RP3betaConfig(ModelConfig):
    alpha: float = Field(default=1.0, gt=0, description="Exponent of the transition probabilities.")
    beta: float = Field(
        default=0.5, ge=0, description="Popularity damping: divide by popularity(j) ** beta."
    )
    neighbors: int = Field(default=100, ge=1, description="Entries kept per row of W (pruning).")
    normalize: bool = Field(default=False, description="Rescale each row of the pruned W to sum 1.")
    binarize: bool = Field(default=True, description="Fit on 0/1 interactions instead of weights.")


def _row_normalize(m: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(m.sum(axis=1)).ravel()
    inv = np.divide(1.0, sums, out=np.zeros_like(sums, dtype=np.float64), where=sums > 0)
    return sp.diags(inv.astype(np.float32)) @ m


class RP3beta(SparseItemItem):
    """Graph-based item-item model (random walk user -> item -> user -> item)."""

    name = "rp3beta"
    config_class = RP3betaConfig

    @classmethod
    def search_space(cls, fixed: dict[str, Any]) -> list[Any]:
        """The scikit-optimize dimensions to tune, given the pinned parameters ``fixed``."""
        from skopt.space import Integer, Real  # slow to import: only when tuning

        return [
            Real(0.1, 2.0, name="alpha"),
            Real(0.0, 1.0, name="beta"),
            Integer(10, 500, prior="log-uniform", name="neighbors"),
        ]

    def _fit(
        self,
        interactions: Interactions,
        *,
        items: pl.DataFrame | None,
        item_embeddings: pl.DataFrame | None,
    ) -> None:
        cfg = self.config
        x = self._input(interactions)
        ones = interactions.binarized().astype(np.float32).tocsr()
        p_ui = _row_normalize(x).tocsr()
        p_iu = _row_normalize(ones.T.tocsr()).tocsr()
        if cfg.alpha != 1.0:
            p_ui.data = np.power(p_ui.data, cfg.alpha, dtype=np.float32)
            p_iu.data = np.power(p_iu.data, cfg.alpha, dtype=np.float32)
        pop = np.asarray(ones.sum(axis=0)).ravel()
        damp = np.divide(
            1.0, np.power(pop, cfg.beta), out=np.zeros_like(pop, dtype=np.float64), where=pop > 0
        ).astype(np.float32)
        p_ui = p_ui.tocsc()
        n_items = interactions.n_items

        def rows(start: int, stop: int) -> np.ndarray:
            block = (p_iu[start:stop] @ p_ui).toarray()
            block *= damp[None, :]
            block[np.arange(stop - start), np.arange(start, stop)] = 0.0
            return block

        w = blocked_topk(rows, n_items, n_items, cfg.neighbors)
        if cfg.normalize:
            w = _row_normalize(w).tocsr()
        self.similarity_ = w.astype(np.float32)
        self._x = x
