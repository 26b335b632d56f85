"""Implicit-feedback matrix factorisation by alternating least squares (Hu, Koren & Volinsky 2008).

Each interaction weight ``r_ui`` gives a preference ``p_ui = 1`` held with confidence
``c_ui = 1 + alpha * r_ui``; every other pair is a preference 0 with confidence 1. ALS minimises

``sum_{u,i} c_ui (p_ui - x_u . y_i)^2 + reg (sum_u |x_u|^2 + sum_i |y_i|^2)``

alternately over the user factors ``X`` and the item factors ``Y``. Each half-step solves, for
every user at once, ``(Y^T Y + Y^T (C_u - I) Y + reg I) x_u = Y^T C_u p_u`` by a few steps of
conjugate gradient warm-started from the previous factors (the ``implicit`` library's solver),
vectorised across users with sparse products, so there is no Python loop over users.
Items without interactions converge to zero factors (score 0, never NaN).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import Field

from recsys_core.interactions import Interactions
from recsys_core.models._base import ModelConfig, Recommender

__all__ = ["ALS", "ALSConfig"]


class ALSConfig(ModelConfig):
    embedding_size: int = Field(default=64, ge=1, description="Number of latent factors.")
    epochs: int = Field(default=15, ge=1, description="ALS sweeps (users then items).")
    reg: float = Field(default=0.01, ge=0, description="L2 regularisation of the factors.")
    alpha: float = Field(
        default=1.0, gt=0, description="Confidence slope: c_ui = 1 + alpha * weight_ui."
    )
    cg_steps: int = Field(
        default=3, ge=1, description="Conjugate-gradient steps per half-sweep (warm-started)."
    )
    binarize: bool = Field(
        default=False, description="Use weight 1 for every interaction instead of its weight."
    )


#: Interactions per chunk of numpy's row-wise dot products (small chunks stay in cache).
_NNZ_CHUNK = 4096
#: From this many interactions on, the sampled products go through torch's CSR kernel (1.3x to
#: 1.5x faster ALS at 7.6M interactions); below it numpy's, which does not pay torch's import
#: (about 1.3 s, once per process) on a small fit.
TORCH_MIN_NNZ = 500_000


class _Pattern:
    """The sparsity pattern of one CSR matrix: its arrays, and from TORCH_MIN_NNZ entries on its
    torch form, built once (a fit runs both kernels on each of two patterns 4 x epochs times)."""

    def __init__(self, m: sp.csr_matrix) -> None:
        self.indptr, self.cols, self.shape = m.indptr, m.indices, m.shape
        self.tensor: Any = None
        if len(self.cols) >= TORCH_MIN_NNZ:
            import warnings

            import torch

            with warnings.catch_warnings():  # "sparse CSR support is in beta": kernels are stable
                warnings.simplefilter("ignore", UserWarning)
                self.tensor = torch.sparse_csr_tensor(
                    torch.from_numpy(self.indptr.astype(np.int64)),
                    torch.from_numpy(self.cols.astype(np.int64)),
                    torch.zeros(len(self.cols), dtype=torch.float32),
                    size=self.shape,
                    check_invariants=False,
                )

    def with_values(self, data: np.ndarray) -> Any:
        """The torch CSR tensor of this pattern holding ``data`` (no copy)."""
        import torch

        t = self.tensor
        return torch.sparse_csr_tensor(
            t.crow_indices(),
            t.col_indices(),
            torch.from_numpy(data),
            size=self.shape,
            check_invariants=False,
        )


def _sampled_dot(
    pattern: _Pattern, b: np.ndarray, *, transposed: tuple[_Pattern, np.ndarray] | None = None
):
    """``f(a)[n] = a[row of n] . b[cols[n]]`` for every stored entry ``n`` of ``pattern``: a
    sampled dense-dense product (SDDMM). Large patterns use torch's CSR kernel (4x to 8x
    numpy's gather-and-einsum on 2 cores); each entry is one dot product whatever the thread
    count, so the result does not depend on the machine's threads (checked bitwise with 1 and
    2). A given pattern always takes the same path: fits are reproducible.

    ``transposed``: the same pattern stored the other way (``b``'s rows as its rows) and, for each
    entry of ``pattern``, its position there. On the torch path the products are then taken in
    that layout and permuted back: when ``b`` is large (ALS's item half-step, where ``b`` holds
    every user's factors) its rows are read in order instead of gathered, 1.3x faster at
    200,000 users, and each entry is the same dot product, so the same bits."""
    if pattern.tensor is None:
        cols = pattern.cols
        rows = np.repeat(np.arange(pattern.shape[0]), np.diff(pattern.indptr))

        def dot_numpy(a: np.ndarray) -> np.ndarray:
            out = np.empty(len(rows), dtype=a.dtype)
            for s in range(0, len(rows), _NNZ_CHUNK):
                e = s + _NNZ_CHUNK
                out[s:e] = np.einsum("ij,ij->i", a[rows[s:e]], b[cols[s:e]])
            return out

        return dot_numpy

    import torch

    if transposed is not None:
        other, position = transposed
        b_rows = torch.from_numpy(b)
        back = torch.from_numpy(position)

        def dot_transposed(a: np.ndarray) -> np.ndarray:
            at = torch.from_numpy(a).T  # (f, n_rows), a view
            out = torch.sparse.sampled_addmm(other.tensor, b_rows, at, beta=0.0, alpha=1.0)
            return out.values()[back].numpy()

        return dot_transposed

    bt = torch.from_numpy(b).T  # (f, n_cols), a view

    def dot_torch(a: np.ndarray) -> np.ndarray:
        out = torch.sparse.sampled_addmm(
            pattern.tensor, torch.from_numpy(a), bt, beta=0.0, alpha=1.0
        )
        return out.values().numpy()

    return dot_torch


def _weighted_sum(pattern: _Pattern, y: np.ndarray):
    """``f(data) = S @ y`` where ``S`` is ``pattern`` holding ``data``: each row of the result
    sums the rows of ``y`` its entries point at, weighted (SpMM). Below TORCH_MIN_NNZ scipy's
    kernel; above it torch's, which splits the rows over the threads (2x scipy's on the item
    half-step of a 200,000-user fit, where the gathered user rows do not fit in cache). Both
    add each row's entries in storage order, one row per thread: whatever the thread count the
    result is the same bits (checked with 1 and 2), and scipy's bits on a CPU without AVX-512
    (with it, torch's kernel fuses multiply-adds: within float32 rounding of scipy's)."""
    if pattern.tensor is None:
        return lambda data: (
            sp.csr_matrix((data, pattern.cols, pattern.indptr), shape=pattern.shape) @ y
        )

    import torch

    yt = torch.from_numpy(y)
    return lambda data: torch.sparse.mm(pattern.with_values(data), yt).numpy()


def _transpose(m: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
    """``(m.T as CSR, for each entry of it the position of that entry in m's data)``."""
    numbered = np.arange(1, m.nnz + 1, dtype=np.int64)  # from 1: no entry is an explicit zero
    where = sp.csr_matrix((numbered, m.indices, m.indptr), shape=m.shape).T.tocsr()
    position = where.data - 1
    transposed = sp.csr_matrix((m.data[position], where.indices, where.indptr), shape=where.shape)
    return transposed, position


def _cg_update(
    x: np.ndarray,
    y: np.ndarray,
    conf: sp.csr_matrix,
    reg: float,
    steps: int,
    pattern: _Pattern,
    transposed: tuple[_Pattern, np.ndarray] | None = None,
) -> np.ndarray:
    """Return new rows ``x`` solving the weighted least squares against fixed ``y``.

    ``conf`` holds ``c - 1 = alpha * r`` on the interactions (rows of ``x`` x rows of ``y``),
    ``pattern`` its sparsity pattern; ``transposed`` optionally the transpose's pattern and
    entry positions (see :func:`_sampled_dot`).
    """
    extra = conf.data.astype(x.dtype)
    yty = y.T @ y
    y = np.ascontiguousarray(y, dtype=x.dtype)
    sampled = _sampled_dot(pattern, y, transposed=transposed)
    weighted_sum = _weighted_sum(pattern, y)

    # b_u = sum_i c_ui y_i over interactions (p_ui = 1 there, 0 elsewhere)
    b = weighted_sum(extra + 1.0)

    def apply(p: np.ndarray) -> np.ndarray:
        return p @ yty + np.float32(reg) * p + weighted_sum(extra * sampled(p))

    x = x.copy()
    r = b - apply(x)
    p = r.copy()
    rs_old = np.einsum("ij,ij->i", r, r)
    for _ in range(steps):
        ap = apply(p)
        denom = np.einsum("ij,ij->i", p, ap)
        step = np.divide(rs_old, denom, out=np.zeros_like(rs_old), where=denom > 1e-20)
        x += step[:, None] * p
        r -= step[:, None] * ap
        rs_new = np.einsum("ij,ij->i", r, r)
        beta = np.divide(rs_new, rs_old, out=np.zeros_like(rs_new), where=rs_old > 1e-20)
        p = r + beta[:, None] * p
        rs_old = rs_new
    return x


class ALS(Recommender):
    """Implicit ALS with a vectorised conjugate-gradient solver (seeded, deterministic)."""

    name = "als"
    config_class = ALSConfig

    @classmethod
    def search_space(cls, fixed: dict[str, Any]) -> list[Any]:
        """The scikit-optimize dimensions to tune, given the pinned parameters ``fixed``."""
        from skopt.space import Integer, Real  # slow to import: only when tuning

        return [
            Integer(8, 256, prior="log-uniform", name="embedding_size"),
            Real(1e-3, 100.0, prior="log-uniform", name="reg"),
            Real(0.1, 100.0, prior="log-uniform", name="alpha"),
        ]

    def _fit(
        self,
        interactions: Interactions,
        *,
        items: pl.DataFrame | None,
        item_embeddings: pl.DataFrame | None,
    ) -> None:
        cfg = self.config
        m = interactions.binarized() if cfg.binarize else interactions.matrix
        conf = m.astype(np.float32).tocsr()
        conf.data = conf.data * np.float32(cfg.alpha)
        conf_t, position = _transpose(conf)
        rng = np.random.default_rng(cfg.seed)
        f = cfg.embedding_size
        users = (rng.standard_normal((interactions.n_users, f)) * 0.01).astype(np.float32)
        item_f = (rng.standard_normal((interactions.n_items, f)) * 0.01).astype(np.float32)
        by_user, by_item = _Pattern(conf), _Pattern(conf_t)  # built once for every epoch
        for _ in range(cfg.epochs):
            users = _cg_update(users, item_f, conf, cfg.reg, cfg.cg_steps, by_user)
            item_f = _cg_update(
                item_f,
                users,
                conf_t,
                cfg.reg,
                cfg.cg_steps,
                by_item,
                transposed=(by_user, position),
            )
        self.user_factors_ = users.astype(np.float32)
        self.item_factors_ = item_f.astype(np.float32)

    def _score_block(self, user_index: np.ndarray) -> np.ndarray:
        # float64 products rounded to float32: BLAS sums a 1-row block (gemv) and a many-row block
        # (gemm) in different orders, so float32 products could differ in the last bit and reorder
        # ties depending on block_size; after float64 accumulation the rounding almost never differs
        users = self.user_factors_[user_index].astype(np.float64)
        return (users @ self.item_factors_.T.astype(np.float64)).astype(np.float32)

    def _factors(self, user_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The same float64 product as :meth:`_score_block`, tile by tile (the fast scoring
        path of :meth:`Recommender.recommend`); the float64 item factors are cast once."""
        cached = getattr(self, "_item_factors64", None)
        if cached is None or cached[0] is not self.item_factors_:
            cached = (self.item_factors_, self.item_factors_.astype(np.float64))
            self._item_factors64 = cached
        return self.user_factors_[user_index].astype(np.float64), cached[1]

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}, {}

    def _set_state(self, arrays: dict[str, np.ndarray], scalars: dict[str, Any]) -> None:
        self.user_factors_ = arrays["user_factors"].astype(np.float32)
        self.item_factors_ = arrays["item_factors"].astype(np.float32)
