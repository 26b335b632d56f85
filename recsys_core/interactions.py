"""Interactions: a user x item sparse matrix with its id vocabularies.

Every model fits on an :class:`Interactions`. Ids stay strings exactly as the source gave them;
rows/columns are indexed in sorted-id order so the same events always give the same matrix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import scipy.sparse as sp

__all__ = ["Interactions", "distinct_count", "event_weight_expr"]


def _hash(ids: pl.Series) -> pl.Series:
    """64-bit hashes of ids, to find vocabularies fast (results never depend on them)."""
    return ids.hash(seed=0x5EED)


def event_weight_expr(
    event_weights: Mapping[str, float] | None, min_rating: float | None = None
) -> pl.Expr:
    """A polars expression giving each event's interaction weight.

    Event types not in ``event_weights`` weigh 1. Ratings below ``min_rating`` weigh 0 (dropped).
    """
    weights = dict(event_weights or {})
    expr = (
        pl.col("event_type").replace_strict(
            list(weights), list(weights.values()), default=1.0, return_dtype=pl.Float64
        )
        if weights
        else pl.lit(1.0)
    )
    if min_rating is not None:
        expr = (
            pl.when((pl.col("event_type") == "rating") & (pl.col("value") < min_rating))
            .then(0.0)
            .otherwise(expr)
        )
    return expr


def _index(ids: pl.Series, vocabulary: Sequence[str] | None) -> tuple[np.ndarray, pl.Series]:
    """``(sorted vocabulary, each row's position in it)``: the given ``vocabulary``, or the ids
    seen; a row outside it gets null.

    Found through 64-bit hashes (polars hashes 10M short ids in 0.1 s, but groups or joins them
    as strings in 1 to 4 s), then checked exactly: every coded row's id must equal the
    vocabulary entry its code names. Two ids sharing a hash fail that check and the codes come
    from an exact join on the strings instead (slower, same answer).
    """
    if vocabulary is None:
        hashes = _hash(ids)
        vocab = ids.gather(hashes.arg_unique()).sort()
    else:
        vocab = pl.Series(sorted(set(vocabulary)), dtype=pl.String)
    vocab = vocab.rename("_id")
    codes = pl.DataFrame({"_h": _hash(vocab), "_c": np.arange(len(vocab), dtype=np.int64)})
    if codes["_h"].n_unique() == len(vocab):
        if vocabulary is not None:
            hashes = _hash(ids)
        code = hashes.to_frame("_h").join(codes, on="_h", how="left", maintain_order="left")["_c"]
        named = vocab.gather(code)
        if bool((code.is_null() | (named == ids)).all()):
            return np.array(vocab.to_list(), dtype=object), code
    if vocabulary is None:  # a hash collision: the exact vocabulary, and compare the strings
        vocab = ids.unique().sort().rename("_id")
    positions = vocab.to_frame().with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("_c"))
    exact = (
        ids.rename("_id").to_frame().join(positions, on="_id", how="left", maintain_order="left")
    )
    return np.array(vocab.to_list(), dtype=object), exact["_c"]


def distinct_count(ids: pl.Series) -> int:
    """``ids.n_unique()`` (a null counts as one value), exact, and on millions of short strings
    several times faster: hashes first, then checked (see :func:`_index`)."""
    if ids.dtype != pl.String:
        return ids.n_unique()
    values = ids.drop_nulls()
    return (len(_index(values, None)[0]) if len(values) else 0) + int(values.len() < ids.len())


@dataclass(frozen=True)
class Interactions:
    """Sparse user x item weights plus the id vocabularies.

    ``matrix[u, i]`` is the summed weight of user ``user_ids[u]`` on item ``item_ids[i]``.
    ``last_ts[u, i]`` (optional, same sparsity) is the latest Unix time of that pair.
    """

    matrix: sp.csr_matrix
    user_ids: np.ndarray  # dtype object (str), sorted
    item_ids: np.ndarray  # dtype object (str), sorted
    last_ts: sp.csr_matrix | None = None
    _user_index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    _item_index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_user_index", {u: i for i, u in enumerate(self.user_ids)})
        object.__setattr__(self, "_item_index", {t: i for i, t in enumerate(self.item_ids)})

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_frame(
        cls,
        events: pl.DataFrame,
        *,
        item_ids: Sequence[str] | None = None,
        user_ids: Sequence[str] | None = None,
        event_weights: Mapping[str, float] | None = None,
        min_rating: float | None = None,
        weight_col: str | None = None,
    ) -> Interactions:
        """Build from a frame with ``user_id``, ``item_id`` and optionally ``event_type``,
        ``value``, ``timestamp``.

        ``item_ids``/``user_ids`` fix the vocabularies (for example the whole catalog, so that items
        without interactions still get a column); events on ids outside them are dropped.
        ``weight_col`` uses that column as the weight; otherwise weights come from event types.
        """
        df = events
        if weight_col is not None:
            df = df.with_columns(pl.col(weight_col).cast(pl.Float64).alias("_w"))
        elif "event_type" in df.columns:
            df = df.with_columns(event_weight_expr(event_weights, min_rating).alias("_w"))
        else:
            df = df.with_columns(pl.lit(1.0).alias("_w"))
        df = df.filter((pl.col("_w") > 0) & pl.col("user_id").is_not_null())
        df = df.filter(pl.col("item_id").is_not_null())
        users, u_code = _index(df["user_id"], user_ids)
        items, i_code = _index(df["item_id"], item_ids)
        # each (user, item) pair as one int64 key, row-major (ids outside the vocabularies have
        # no code and are dropped); each pair's weights are summed in the events' order
        n_items = len(items)
        cols = {"_k": u_code * n_items + i_code, "_w": df["_w"]}
        has_ts = "timestamp" in df.columns
        if has_ts:
            ts = df["timestamp"]
            if ts.dtype != pl.Int64 and ts.dtype != pl.Float64:
                ts = ts.dt.epoch("s")
            cols["_t"] = ts.cast(pl.Float64)
        aggs = [pl.col("_w").sum()]
        if has_ts:
            aggs.append(pl.col("_t").max())
        g = (  # a stable sort, then a group-by over sorted keys (a hash group-by is 3x slower)
            pl.DataFrame(cols)
            .lazy()
            .drop_nulls("_k")
            .sort("_k", maintain_order=True)
            .group_by("_k", maintain_order=True)
            .agg(aggs)
            .collect()
        )
        shape = (len(users), n_items)
        key = g["_k"].to_numpy()
        rows = key // max(n_items, 1)
        # the keys are sorted and unique: the CSR arrays directly (scipy's index dtype)
        index_dtype = sp.csr_matrix((0, 0)).indices.dtype
        if max(*shape, len(key)) > np.iinfo(index_dtype).max:
            index_dtype = np.int64
        col_index = (key - rows * n_items).astype(index_dtype)
        indptr = np.zeros(shape[0] + 1, dtype=index_dtype)
        np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
        mat = sp.csr_matrix(
            (g["_w"].to_numpy().astype(np.float32), col_index, indptr), shape=shape, copy=False
        )
        last = None
        if has_ts:
            last = sp.csr_matrix((g["_t"].to_numpy(), col_index.copy(), indptr.copy()), shape=shape)
        return cls(matrix=mat, user_ids=users, item_ids=items, last_ts=last)

    # ---- lookups ------------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)

    def user_index(self, user_ids: Sequence[str]) -> np.ndarray:
        """Row index of each id, -1 for an unknown user."""
        idx = self._user_index
        return np.fromiter((idx.get(u, -1) for u in user_ids), dtype=np.int64, count=len(user_ids))

    def item_index(self, item_ids: Sequence[str]) -> np.ndarray:
        """Column index of each id, -1 for an unknown item."""
        idx = self._item_index
        return np.fromiter((idx.get(t, -1) for t in item_ids), dtype=np.int64, count=len(item_ids))

    def binarized(self) -> sp.csr_matrix:
        m = self.matrix.copy()
        m.data = np.ones_like(m.data)
        return m

    def to_frame(self) -> pl.DataFrame:
        """Back to ``user_id, item_id, weight`` rows, sorted by (user, item)."""
        coo = self.matrix.tocoo()
        order = np.lexsort((coo.col, coo.row))
        # the ids gathered by polars, not as a Python list of every row's strings (10M rows: 2.5 s)
        users = pl.Series("user_id", self.user_ids, dtype=pl.String)
        items = pl.Series("item_id", self.item_ids, dtype=pl.String)
        return pl.DataFrame(
            [
                users.gather(coo.row[order]),
                items.gather(coo.col[order]),
                pl.Series("weight", coo.data[order], dtype=pl.Float32),
            ]
        )
