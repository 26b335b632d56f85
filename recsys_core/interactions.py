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

__all__ = ["Interactions", "event_weight_expr"]


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
        df = df.filter(pl.col("_w") > 0)
        users = (
            np.array(sorted(set(user_ids)), dtype=object)
            if user_ids is not None
            else np.array(sorted(df["user_id"].unique().to_list()), dtype=object)
        )
        items = (
            np.array(sorted(set(item_ids)), dtype=object)
            if item_ids is not None
            else np.array(sorted(df["item_id"].unique().to_list()), dtype=object)
        )
        u_map = pl.DataFrame(
            {"user_id": users.tolist(), "_u": np.arange(len(users), dtype=np.int64)},
            schema={"user_id": pl.String, "_u": pl.Int64},
        )
        i_map = pl.DataFrame(
            {"item_id": items.tolist(), "_i": np.arange(len(items), dtype=np.int64)},
            schema={"item_id": pl.String, "_i": pl.Int64},
        )
        has_ts = "timestamp" in df.columns
        if has_ts:
            ts = pl.col("timestamp")
            if df.schema["timestamp"] != pl.Int64 and df.schema["timestamp"] != pl.Float64:
                ts = ts.dt.epoch("s")
            df = df.with_columns(ts.cast(pl.Float64).alias("_t"))
        j = df.join(u_map, on="user_id", how="inner").join(i_map, on="item_id", how="inner")
        aggs = [pl.col("_w").sum()]
        if has_ts:
            aggs.append(pl.col("_t").max())
        g = j.group_by(["_u", "_i"]).agg(aggs).sort(["_u", "_i"])
        shape = (len(users), len(items))
        rows = g["_u"].to_numpy()
        cols = g["_i"].to_numpy()
        mat = sp.csr_matrix((g["_w"].to_numpy().astype(np.float32), (rows, cols)), shape=shape)
        last = None
        if has_ts:
            last = sp.csr_matrix((g["_t"].to_numpy(), (rows, cols)), shape=shape)
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
        return pl.DataFrame(
            {
                "user_id": self.user_ids[coo.row[order]].tolist(),
                "item_id": self.item_ids[coo.col[order]].tolist(),
                "weight": coo.data[order],
            },
            schema={"user_id": pl.String, "item_id": pl.String, "weight": pl.Float32},
        )
