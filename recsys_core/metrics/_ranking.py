"""Top-k ranking metrics over recommendation lists, per user, as polars frames.

Inputs:

* ``recs``: ``user_id, item_id, rank`` (rank 1 = best). Rows with rank > k are ignored.
* ``truth``: ``user_id, item_id`` and optionally ``relevance`` (graded gain; default 1).

Every user in ``truth`` gets one row, so a user with no recommendations scores 0 — the mean is
over test users, never only over users the model could serve. Users only in ``recs`` are ignored.

Definitions (``R_u`` = relevant items of user u, ``hit_j`` = 1 if the item at rank j is relevant):

* precision@k = sum_j hit_j / k
* recall@k    = sum_j hit_j / |R_u|
* f1@k        = 2 precision recall / (precision + recall) = 2 sum_j hit_j / (k + |R_u|) (0 if no hit)
* ndcg@k      = DCG / IDCG with DCG = sum_j gain_j / log2(j + 1), IDCG the DCG of the ideal order
  of R_u truncated at k (binary gain 1, or graded ``relevance``)
* map@k       = (sum_j precision@j * hit_j) / min(|R_u|, k)
* hit@k       = 1 if any hit
* mrr@k       = 1 / rank of the first hit (0 if none)

NDCG is binary when ``truth`` has no ``relevance`` column (every gain 1) and graded otherwise.
Duplicate truth pairs keep their largest relevance. All metrics lie in [0, 1]; a ranking that puts
all of R_u first (min(|R_u|, k) of them) scores 1 on recall (when |R_u| <= k), ndcg, map, hit, mrr.
"""

from __future__ import annotations

import numpy as np
import polars as pl

__all__ = ["METRIC_NAMES", "mean_metrics", "ranking_metrics"]

METRIC_NAMES: tuple[str, ...] = ("precision", "recall", "f1", "ndcg", "map", "hit", "mrr")


def ranking_metrics(recs: pl.DataFrame, truth: pl.DataFrame, k: int) -> pl.DataFrame:
    """Per-user metrics at ``k``: ``user_id`` + one column per name in :data:`METRIC_NAMES`,
    plus ``n_relevant``. Sorted by ``user_id``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if "relevance" not in truth.columns:
        truth = truth.with_columns(pl.lit(1.0).alias("relevance"))
    truth = (
        truth.select("user_id", "item_id", pl.col("relevance").cast(pl.Float64))
        .group_by("user_id", "item_id")
        .agg(pl.col("relevance").max())
    )
    recs = recs.filter(pl.col("rank") <= k).select(
        "user_id", "item_id", pl.col("rank").cast(pl.Int64)
    )
    hits = recs.join(truth, on=["user_id", "item_id"], how="inner").with_columns(
        (1.0 / (pl.col("rank") + 1).cast(pl.Float64).log(2)).alias("disc")
    )
    # precision at each hit's rank: (number of hits at or above it) / rank
    hits = hits.sort("user_id", "rank").with_columns(
        (pl.int_range(1, pl.len() + 1).over("user_id") / pl.col("rank")).alias("prec_at")
    )
    per_hit = hits.group_by("user_id").agg(
        pl.len().alias("n_hits"),
        (pl.col("relevance") * pl.col("disc")).sum().alias("dcg"),
        pl.col("prec_at").sum().alias("sum_prec"),
        pl.col("rank").min().alias("first_hit"),
    )
    # ideal DCG: the user's gains sorted descending, truncated at k
    ideal = (
        truth.sort(["user_id", "relevance"], descending=[False, True])
        .with_columns(pl.int_range(1, pl.len() + 1).over("user_id").alias("pos"))
        .filter(pl.col("pos") <= k)
        .group_by("user_id")
        .agg(
            (pl.col("relevance") / (pl.col("pos") + 1).cast(pl.Float64).log(2)).sum().alias("idcg")
        )
    )
    n_rel = truth.group_by("user_id").agg(pl.len().alias("n_relevant"))
    out = (
        n_rel.join(ideal, on="user_id", how="left")
        .join(per_hit, on="user_id", how="left")
        .with_columns(
            pl.col("n_hits").fill_null(0),
            pl.col("dcg").fill_null(0.0),
            pl.col("sum_prec").fill_null(0.0),
        )
        .select(
            "user_id",
            (pl.col("n_hits") / k).alias("precision"),
            (pl.col("n_hits") / pl.col("n_relevant")).alias("recall"),
            (2.0 * pl.col("n_hits") / (pl.col("n_relevant") + k)).alias("f1"),
            pl.when(pl.col("idcg") > 0)
            .then(pl.col("dcg") / pl.col("idcg"))
            .otherwise(0.0)
            .alias("ndcg"),
            (pl.col("sum_prec") / pl.min_horizontal(pl.col("n_relevant"), pl.lit(k))).alias("map"),
            (pl.col("n_hits") > 0).cast(pl.Float64).alias("hit"),
            pl.when(pl.col("first_hit").is_not_null())
            .then(1.0 / pl.col("first_hit").cast(pl.Float64))
            .otherwise(0.0)
            .alias("mrr"),
            "n_relevant",
        )
        .sort("user_id")
    )
    return out


def mean_metrics(per_user: pl.DataFrame) -> dict[str, float]:
    """Mean of every metric column over users (0.0 for no users)."""
    if per_user.height == 0:
        return {name: 0.0 for name in METRIC_NAMES}
    return {
        name: float(np.asarray(per_user[name], dtype=np.float64).mean())
        for name in METRIC_NAMES
        if name in per_user.columns
    }
