"""Offline evaluation of one model's recommendations against a holdout truth.

:func:`evaluate` scores full-catalog rankings (never sampled negatives) and reports, besides the
overall means, three segments separately so that a change in one does not hide in the average:

* ``cold_items`` — test pairs whose item had no training interaction. Only a content model can
  recommend such an item; ``hit`` and ``recall`` are restricted to those pairs (per user who has
  at least one, then averaged).
* ``new_users`` — users seen only in the test window. They are not in the truth (nothing to
  personalise on) and get a popularity fallback at scoring time; only their count is reported.
* ``heavy_users`` — the top 10% of evaluated users by number of training events (ties broken by
  ``user_id``), with the mean of every metric over them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from recsys_core.metrics import (
    METRIC_NAMES,
    beyond_accuracy,
    catalog_coverage,
    mean_metrics,
    ranking_metrics,
)

__all__ = ["EvalResult", "TrainFacts", "evaluate"]


@dataclass(frozen=True)
class EvalResult:
    """What :func:`evaluate` measured.

    ``metrics`` holds the mean of every name in :data:`METRIC_NAMES` over evaluated users, plus
    ``coverage``, ``novelty`` and ``arp`` when they could be computed. ``per_user`` has one row per
    evaluated user (``user_id``, the metrics, ``n_relevant``, and ``novelty``/``arp`` when ``train``
    was given), sorted by ``user_id``: the input of the paired bootstrap.
    """

    k: int
    metrics: dict[str, float]
    per_user: pl.DataFrame
    n_users: int
    coverage: float | None = None
    novelty: float | None = None
    arp: float | None = None
    segments: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no per-user rows)."""
        return {
            "k": self.k,
            "n_users": self.n_users,
            "metrics": dict(self.metrics),
            "coverage": self.coverage,
            "novelty": self.novelty,
            "arp": self.arp,
            "segments": {name: dict(seg) for name, seg in self.segments.items()},
        }


@dataclass(frozen=True)
class TrainFacts:
    """What :func:`evaluate` needs of the training events, computed once by :meth:`of` and passed
    as ``train`` when several models are evaluated against the same events (the champion gate
    scores two). At 10M events each fact is a pass over every event, about 7 s in all."""

    pairs: pl.DataFrame  # the distinct (user_id, item_id) pairs
    users: pl.DataFrame  # the distinct user_id
    events_per_user: pl.DataFrame  # user_id, n_train: events per user

    @classmethod
    def of(cls, train: pl.DataFrame) -> TrainFacts:
        pairs = train.select("user_id", "item_id").unique()
        return cls(
            pairs=pairs,
            users=pairs.select("user_id").unique(),
            events_per_user=train.group_by("user_id").agg(pl.len().alias("n_train")),
        )


def evaluate(
    recs: pl.DataFrame,
    truth: pl.DataFrame,
    k: int,
    *,
    train: pl.DataFrame | TrainFacts | None = None,
    n_items: int | None = None,
    test: pl.DataFrame | None = None,
    heavy_fraction: float = 0.1,
) -> EvalResult:
    """Evaluate top-``k`` ``recs`` (``user_id, item_id, rank``) against ``truth``.

    ``truth`` is ``user_id, item_id`` (+ optional ``relevance``), e.g. from
    :func:`~recsys_core.evaluation.holdout_truth`. Every truth user is evaluated (a user with no
    recommendations scores 0). When ``train`` is given the holdout rules of
    :func:`~recsys_core.evaluation.holdout_truth` are (re)applied, so raw test events may be passed
    as ``truth``: pairs seen in ``train`` are dropped, and users absent from ``train`` are not
    evaluated but counted in the ``new_users`` segment (with the users of ``test``, if given,
    absent from ``train``). Recommendations of users outside the truth are ignored.

    ``train`` enables novelty/ARP, the cold-item and heavy-user segments; a
    :class:`TrainFacts` of it gives the same result. ``n_items`` is the size of
    the catalog for coverage; by default the number of distinct items in ``train`` and ``recs``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    for name, frame, cols in (
        ("recs", recs, ("user_id", "item_id", "rank")),
        ("truth", truth, ("user_id", "item_id")),
    ):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} lacks columns {missing}; it has {frame.columns}")
    segments: dict[str, dict[str, Any]] = {}
    pairs = facts = None
    if train is not None:
        facts = train if isinstance(train, TrainFacts) else TrainFacts.of(train)
        pairs, train_users = facts.pairs, facts.users
        new = truth.select("user_id").unique().join(train_users, on="user_id", how="anti")
        if test is not None:
            test_new = test.select("user_id").unique().join(train_users, on="user_id", how="anti")
            new = pl.concat([new, test_new]).unique()
        segments["new_users"] = {"n_users": new.height}
        truth = truth.join(train_users, on="user_id", how="semi").join(
            pairs, on=["user_id", "item_id"], how="anti"
        )
    users = truth.select("user_id").unique()
    recs = recs.filter(pl.col("rank") <= k).join(users, on="user_id", how="semi")
    per_user = ranking_metrics(recs, truth, k)
    metrics = mean_metrics(per_user)

    coverage = novelty = arp = None
    if n_items is None and pairs is not None:
        n_items = pl.concat([pairs.select("item_id"), recs.select("item_id")]).n_unique()
    if n_items is not None:
        coverage = catalog_coverage(recs, n_items, k)
        metrics["coverage"] = coverage
    if facts is not None:
        beyond = beyond_accuracy(recs, pairs, k)
        per_user = per_user.join(beyond, on="user_id", how="left").sort("user_id")
        if beyond.height:
            novelty = float(beyond["novelty"].mean())
            arp = float(beyond["arp"].mean())
            metrics["novelty"] = novelty
            metrics["arp"] = arp
        segments["cold_items"] = _cold_items(recs, truth, pairs)
        segments["heavy_users"] = _heavy_users(per_user, facts.events_per_user, heavy_fraction)
    return EvalResult(
        k=k,
        metrics=metrics,
        per_user=per_user,
        n_users=per_user.height,
        coverage=coverage,
        novelty=novelty,
        arp=arp,
        segments=segments,
    )


def _cold_items(recs: pl.DataFrame, truth: pl.DataFrame, train: pl.DataFrame) -> dict[str, Any]:
    """Hit rate and recall restricted to truth pairs whose item has no training interaction."""
    cold = truth.select("user_id", "item_id").join(
        train.select("item_id").unique(), on="item_id", how="anti"
    )
    n_pairs = cold.height
    out: dict[str, Any] = {
        "n_pairs": n_pairs,
        "share_of_pairs": n_pairs / truth.height if truth.height else 0.0,
        "n_items": cold["item_id"].n_unique() if n_pairs else 0,
        "n_users": cold["user_id"].n_unique() if n_pairs else 0,
        "hit": 0.0,
        "recall": 0.0,
    }
    if n_pairs:
        hits = cold.join(
            recs.select("user_id", "item_id").unique(), on=["user_id", "item_id"], how="semi"
        )
        per = (
            cold.group_by("user_id")
            .agg(pl.len().alias("n"))
            .join(hits.group_by("user_id").agg(pl.len().alias("h")), on="user_id", how="left")
            .with_columns(pl.col("h").fill_null(0))
        )
        out["hit"] = float((per["h"] > 0).mean())
        out["recall"] = float((per["h"] / per["n"]).mean())
    return out


def _heavy_users(per_user: pl.DataFrame, counts: pl.DataFrame, fraction: float) -> dict[str, Any]:
    """Mean metrics over the top ``fraction`` of evaluated users by training event count
    (``counts``: ``user_id, n_train``)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"heavy_fraction must be in (0, 1], got {fraction}")
    if per_user.height == 0:
        return {"n_users": 0, "min_train_events": None, "metrics": mean_metrics(per_user)}
    ranked = (
        per_user.join(counts, on="user_id", how="left")
        .with_columns(pl.col("n_train").fill_null(0))
        .sort(["n_train", "user_id"], descending=[True, False])
    )
    n_heavy = max(1, math.ceil(fraction * ranked.height))
    heavy = ranked.head(n_heavy)
    cols = [c for c in (*METRIC_NAMES, "novelty", "arp") if c in heavy.columns]
    return {
        "n_users": heavy.height,
        "min_train_events": int(heavy["n_train"].min()),
        "metrics": {c: float(heavy[c].fill_null(0.0).mean()) for c in cols},
    }
