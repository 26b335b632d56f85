"""EASE^R (Steck, 2019): a closed-form item-item linear autoencoder.

``B = I - P diag(1 / diag(P))`` with ``P = (G + reg I)^-1``, zero diagonal. Scores are ``X B``.
Cost is one dense ``n_items x n_items`` inverse: fine up to a few tens of thousands of items.

``G`` is the item co-occurrence (Gram) matrix. Plain EASE uses ``G = X^T X``: two items a user
has are related however far apart in time the user took them. With ``time_weight = a > 0`` the
Gram matrix mixes in a session-aware one (:func:`time_cooccurrence`),

    ``G = (1 - a) X^T X + a T``,  ``T_ij = sum_u x_ui x_uj exp(-|t_ui - t_uj| / time_scale)``,

so that items taken minutes apart count as more related than items taken months apart. ``T`` has
the same diagonal as ``X^T X``; only the co-occurrence weights change, and the model is still one
closed-form inverse. It needs the interactions' timestamps (``Interactions.last_ts``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import Field
from scipy.linalg import lapack

from recsys_core.interactions import Interactions
from recsys_core.models._base import ModelConfig, Recommender

__all__ = ["EASE", "EASEConfig", "ease_weights", "time_cooccurrence"]

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


def time_cooccurrence(
    x: sp.spmatrix,
    last_ts: sp.spmatrix,
    *,
    scale: float,
    cutoff_scales: float = 20.0,
) -> np.ndarray:
    """``T_ij = sum_u x_ui x_uj exp(-|t_ui - t_uj| / scale)`` as a dense float64 item x item array.

    ``x`` holds the interaction weights and ``last_ts`` (same sparsity) each pair's Unix time.
    ``exp(-|dt| / scale)`` is a positive-definite kernel, so ``T`` is positive semi-definite like
    ``X^T X`` (and has the same diagonal, ``sum_u x_ui^2``). Pairs further apart than
    ``cutoff_scales * scale`` seconds are skipped (``exp(-20)`` ~ 2e-9: nothing measurable is
    lost), so the work is the number of a user's item pairs inside that window: at most what
    ``X^T X`` costs.
    """
    if not scale > 0:
        raise ValueError(f"time_cooccurrence: scale must be > 0 seconds, got {scale}")
    m = x.tocoo()
    rows, cols = m.row.astype(np.int64), m.col.astype(np.int64)
    ts = np.asarray(last_ts.tocsr()[rows, cols], dtype=np.float64).ravel()
    order = np.lexsort((cols, ts, rows))  # per user, in time order (ties by item)
    rows, cols, ts = rows[order], cols[order], ts[order]
    w = m.data.astype(np.float64)[order]
    n = x.shape[1]
    out = np.zeros((n, n), dtype=np.float64)
    flat = out.ravel()  # a view: np.add.at below writes into `out`
    np.add.at(flat, cols * (n + 1), w * w)
    cutoff = cutoff_scales * scale
    # pair every interaction a with the one k places later, k = 1, 2, ...; once (a, a + k) is
    # another user's or outside the window, so is every (a, a + k') with k' > k: drop a
    active = np.arange(len(rows) - 1)
    k = 1
    while len(active):
        active = active[active + k < len(rows)]
        b = active + k
        gap = ts[b] - ts[active]
        keep = (rows[b] == rows[active]) & (gap <= cutoff)
        active, b, gap = active[keep], b[keep], gap[keep]
        v = w[active] * w[b] * np.exp(-gap / scale)
        np.add.at(flat, cols[active] * n + cols[b], v)
        np.add.at(flat, cols[b] * n + cols[active], v)
        k += 1
    return out


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
    time_weight: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share a of the co-occurrence matrix that is session-aware: G = (1 - a) X^T X "
        "+ a T, where T weighs two items of a user by exp(-|time gap| / time_scale). 0 = plain "
        "EASE; > 0 needs timestamps.",
    )
    time_scale: float = Field(
        default=600.0,
        gt=0,
        description="Seconds over which the session-aware co-occurrence of two items decays by e.",
    )


class EASE(Recommender):
    name = "ease"
    config_class = EASEConfig

    @classmethod
    def search_space(cls, fixed: dict[str, Any]) -> list[Any]:
        """The scikit-optimize dimensions to tune, given the pinned parameters ``fixed``."""
        from skopt.space import Real  # slow to import: only when tuning

        # `dropout` (EDLAE) is left out on purpose: it rarely beats a well-tuned `reg` and doubles
        # the dimensions a small budget must cover. Pin it in the fixed parameters to use it.
        # The session-aware share and its time scale (10 s to 7 days) are dropped by `tune` when
        # the interactions carry no timestamps (recsys_core.tuning.TIME_DIMENSIONS).
        dims = [Real(1.0, 1e4, prior="log-uniform", name="reg"), Real(0.0, 1.0, name="time_weight")]
        if fixed.get("time_weight") != 0:  # pinned to plain EASE: the time scale is moot
            dims.append(Real(10.0, 7 * 86400.0, prior="log-uniform", name="time_scale"))
        return dims

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
        a = self.config.time_weight
        if a > 0:
            if interactions.last_ts is None:
                raise ValueError(
                    f"EASE(time_weight={a:g}) needs interaction timestamps, and these interactions "
                    "have none: give the events a 'timestamp' column, or set time_weight=0"
                )
            t = time_cooccurrence(x, interactions.last_ts, scale=self.config.time_scale)
            g *= 1.0 - a
            t *= a
            g += t
            del t
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
