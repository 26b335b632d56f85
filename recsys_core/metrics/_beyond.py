"""Beyond-accuracy metrics: catalog coverage, novelty and popularity bias of recommendation lists.

Inputs:

* ``recs``: ``user_id, item_id, rank`` (rank 1 = best); rows with rank > k are ignored.
* ``train``: the training events, ``user_id, item_id`` (any other columns are ignored).

Definitions (``N`` = number of distinct training users, ``n_i`` = number of distinct training users
who interacted with item i, ``L_u`` = the top-k list of user u):

* item popularity  ``pop_i = n_i / N`` (0 for an item unseen in training), in [0, 1].
* self-information ``novelty_i = -log2((n_i + 1) / (N + 1))``: 0 for an item every training user
  touched, ``log2(N + 1)`` for an item nobody did (add-one smoothing keeps it finite).
* per-user novelty ``= mean_{i in L_u} novelty_i``; per-user ARP (average recommendation
  popularity, Abdollahpouri et al. 2019) ``= mean_{i in L_u} pop_i``.
* catalog coverage@k ``= |union_u L_u| / n_items``: the share of the catalog recommended to anyone.

Users with an empty list get no row in :func:`beyond_accuracy`; aggregate with a plain mean over
the users who were served (an empty list has no novelty).
"""

from __future__ import annotations

import polars as pl

from recsys_core.interactions import distinct_count

__all__ = ["beyond_accuracy", "catalog_coverage", "item_popularity"]


def item_popularity(train: pl.DataFrame) -> pl.DataFrame:
    """``item_id, n_users, popularity, novelty`` of every item in ``train`` (see module docstring).

    Sorted by ``item_id``. Repeated events of one user on one item count once.
    """
    n_users = distinct_count(train["user_id"])
    return (
        train.group_by("item_id")
        .agg(pl.col("user_id").n_unique().cast(pl.Int64).alias("n_users"))
        .with_columns(
            (pl.col("n_users") / max(n_users, 1)).alias("popularity"),
            _novelty_expr(pl.col("n_users"), n_users),
        )
        .sort("item_id")
    )


def _novelty_expr(n_i: pl.Expr, n_users: int) -> pl.Expr:
    return (-((n_i.cast(pl.Float64) + 1.0) / (n_users + 1.0)).log(2)).alias("novelty")


def beyond_accuracy(recs: pl.DataFrame, train: pl.DataFrame, k: int) -> pl.DataFrame:
    """Per-user ``user_id, novelty, arp`` of the top-``k`` lists in ``recs`` w.r.t. ``train``.

    One row per user with at least one recommendation at rank <= k, sorted by ``user_id``.
    Recommended items absent from ``train`` have ``n_i = 0`` (popularity 0, maximal novelty).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    pop = item_popularity(train)
    n_users = distinct_count(train["user_id"])
    pop = pop.select("item_id", "n_users")
    top = recs.filter(pl.col("rank") <= k).select("user_id", "item_id")
    joined = top.join(pop, on="item_id", how="left").with_columns(pl.col("n_users").fill_null(0))
    return (
        joined.with_columns(
            _novelty_expr(pl.col("n_users"), n_users),
            (pl.col("n_users") / max(n_users, 1)).alias("arp"),
        )
        .group_by("user_id")
        .agg(pl.col("novelty").mean(), pl.col("arp").mean())
        .sort("user_id")
    )


def catalog_coverage(recs: pl.DataFrame, n_items: int, k: int | None = None) -> float:
    """Share of the ``n_items`` catalog items that appear in at least one top-``k`` list.

    ``k=None`` uses every row of ``recs``. Returns 0.0 for an empty catalog.
    """
    if n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    if n_items == 0:
        return 0.0
    top = recs if k is None else recs.filter(pl.col("rank") <= k)
    distinct = top["item_id"].n_unique() if top.height else 0
    if distinct > n_items:
        raise ValueError(
            f"recommendations hold {distinct} distinct items but n_items is {n_items}; "
            "pass the size of the catalog the model recommends from"
        )
    return distinct / n_items
