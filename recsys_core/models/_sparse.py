"""Sparse helpers shared by the neighbourhood models (ItemKNN, RP3beta, the hybrid).

The item x item similarity of a large catalog never exists as one dense matrix: it is computed in
blocks of rows (``block x n_items`` dense float32, bounded memory), each row pruned to its
``k`` largest positive entries, and the survivors are stacked into a CSR matrix.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

__all__ = ["blocked_topk", "csr_arrays", "csr_from_arrays", "row_block_size"]

#: Dense floats per similarity block (16 MiB of float32).
_BLOCK_FLOATS = 4 * 1024 * 1024


def row_block_size(n_cols: int) -> int:
    """Rows per dense block so that one block holds at most ``_BLOCK_FLOATS`` floats."""
    return max(1, min(4096, _BLOCK_FLOATS // max(1, n_cols)))


def _topk_positive_rows(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row of ``block`` the columns of its ``k`` largest entries that are > 0.

    Ties are broken by the lower column index, so the result never depends on partition order.
    Returns ``(row, col, value)`` of the kept entries, rows ascending, columns ascending per row.
    """
    n, m = block.shape
    k = min(k, m)
    if k == 0 or n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    if k < m:
        # stable: the k-th largest value's ties are resolved by column index via a lexsort
        part = np.argpartition(-block, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(block, part, axis=1).min(axis=1, keepdims=True)
        keep = block > kth
        n_strict = keep.sum(axis=1, keepdims=True)
        ties = block == kth
        # among the ties, keep the lowest columns until k entries per row
        tie_rank = np.cumsum(ties, axis=1)
        keep |= ties & (tie_rank <= (k - n_strict))
    else:
        keep = np.ones_like(block, dtype=bool)
    keep &= block > 0
    rows, cols = np.nonzero(keep)
    return rows.astype(np.int64), cols.astype(np.int64), block[rows, cols].astype(np.float32)


def blocked_topk(
    compute_rows: Callable[[int, int], np.ndarray],
    n_rows: int,
    n_cols: int,
    k: int,
) -> sp.csr_matrix:
    """Assemble a CSR matrix from dense row blocks, keeping each row's top-``k`` positive entries.

    ``compute_rows(start, stop)`` returns the dense ``(stop - start, n_cols)`` rows of the full
    matrix (for example ``X.T[start:stop] @ X`` normalised). Peak memory is one block plus the kept
    entries.
    """
    step = row_block_size(n_cols)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for start in range(0, n_rows, step):
        stop = min(n_rows, start + step)
        block = np.asarray(compute_rows(start, stop), dtype=np.float32)
        r, c, v = _topk_positive_rows(block, k)
        rows.append(r + start)
        cols.append(c)
        vals.append(v)
    if not rows:
        return sp.csr_matrix((n_rows, n_cols), dtype=np.float32)
    out = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_rows, n_cols),
        dtype=np.float32,
    )
    out.sort_indices()
    return out


def csr_arrays(prefix: str, m: sp.csr_matrix) -> dict[str, np.ndarray]:
    """A CSR matrix as plain arrays (for ``.npz`` persistence without pickle)."""
    m = m.tocsr()
    return {
        f"{prefix}_data": m.data.astype(np.float32),
        f"{prefix}_indices": m.indices.astype(np.int64),
        f"{prefix}_indptr": m.indptr.astype(np.int64),
        f"{prefix}_shape": np.asarray(m.shape, dtype=np.int64),
    }


def csr_from_arrays(prefix: str, arrays: dict[str, np.ndarray]) -> sp.csr_matrix:
    """Inverse of :func:`csr_arrays`."""
    shape = tuple(int(x) for x in arrays[f"{prefix}_shape"])
    return sp.csr_matrix(
        (
            arrays[f"{prefix}_data"].astype(np.float32),
            arrays[f"{prefix}_indices"],
            arrays[f"{prefix}_indptr"],
        ),
        shape=shape,
    )
