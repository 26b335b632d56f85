"""Train/test splits and the test truth.

* :func:`temporal_split` — the nightly protocol: a global temporal holdout ending at ``run_date``.
* :func:`random_split` — per-user (or per-item) random holdout, for published offline protocols.
* :func:`holdout_truth` — which test pairs count as relevant.

Truth (the relevant set of a user) is every (user, item) pair of the test events that is **not** in
the user's training history, for users present in training. Models rank the full catalog with the
user's training items removed (``exclude_seen=True``), so a re-interaction with a seen item could
never be recommended: counting it would cap every model's recall below 1 for no reason. Users who
appear only in the test window are new users: no model can personalise for them, so they are left
out of the truth and reported as a segment count (they get a popularity fallback at scoring time).
Negatives are never sampled: every catalog item not in the truth is a non-relevant candidate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Literal

import numpy as np
import polars as pl

from recsys_core.interactions import event_weight_expr

__all__ = ["event_day", "holdout_truth", "random_split", "temporal_split"]


def event_day(events: pl.DataFrame) -> pl.Expr:
    """The UTC calendar day of each event, from ``timestamp`` (or ``date`` when there is none).

    ``timestamp`` may be a Datetime (naive = UTC) or Unix seconds (int/float).
    """
    if "timestamp" in events.columns:
        dtype = events.schema["timestamp"]
        ts = pl.col("timestamp")
        if isinstance(dtype, pl.Datetime):
            if dtype.time_zone is not None and dtype.time_zone != "UTC":
                ts = ts.dt.convert_time_zone("UTC")
            return ts.dt.date()
        if dtype.is_numeric():
            return pl.from_epoch(ts.cast(pl.Int64), time_unit="s").dt.date()
        raise TypeError(
            f"events column 'timestamp' has type {dtype}; expected a Datetime or Unix seconds"
        )
    if "date" in events.columns:
        return pl.col("date").cast(pl.Date)
    raise ValueError(
        f"events have columns {events.columns}; a temporal split needs 'timestamp' or 'date'"
    )


def temporal_split(
    events: pl.DataFrame, run_date: dt.date, holdout_days: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Global temporal holdout aligned with ``run_date``.

    ``test`` = events whose UTC day is in ``(run_date - holdout_days, run_date]``; ``train`` =
    events strictly before that window (timestamp < midnight UTC of its first day). Events after
    ``run_date`` are in neither (the future never leaks in). The day comes from ``timestamp`` so
    that a late-arriving event sits where it happened; rows keep their input order.
    """
    if holdout_days < 1:
        raise ValueError(f"holdout_days must be >= 1, got {holdout_days}")
    first_test_day = run_date - dt.timedelta(days=holdout_days - 1)
    day = event_day(events)
    train = events.filter(day < first_test_day)
    test = events.filter((day >= first_test_day) & (day <= run_date))
    return train, test


def holdout_truth(
    train: pl.DataFrame,
    test: pl.DataFrame,
    *,
    event_weights: Mapping[str, float] | None = None,
    min_rating: float | None = None,
) -> pl.DataFrame:
    """Relevant ``user_id, item_id, relevance`` pairs of ``test`` (see the module docstring).

    Pairs seen in ``train`` (any event) and users absent from ``train`` are dropped. ``relevance``
    is 1.0 (binary) unless ``event_weights`` is given, in which case it is the largest event weight
    of the pair (graded gain for NDCG). Test events weighing 0 (ratings below ``min_rating``) are
    not positive feedback and never relevant. Sorted by ``(user_id, item_id)``.
    """
    if event_weights is not None or min_rating is not None:
        if "event_type" not in test.columns:
            raise ValueError(
                f"test events have columns {test.columns}; graded or filtered truth needs "
                "'event_type'"
            )
        weight = event_weight_expr(event_weights, min_rating)
    else:
        weight = pl.lit(1.0)
    pos = test.with_columns(weight.cast(pl.Float64).alias("relevance")).filter(
        pl.col("relevance") > 0
    )
    if event_weights is None:
        pos = pos.with_columns(pl.lit(1.0).alias("relevance"))
    seen = train.select("user_id", "item_id").unique()
    known = train.select("user_id").unique()
    return (
        pos.select("user_id", "item_id", "relevance")
        .join(known, on="user_id", how="semi")
        .join(seen, on=["user_id", "item_id"], how="anti")
        .group_by("user_id", "item_id")
        .agg(pl.col("relevance").max())
        .sort("user_id", "item_id")
    )


def random_split(
    events: pl.DataFrame,
    *,
    test_fraction: float = 0.25,
    seed: int,
    stratify: Literal["user", "item"] = "user",
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Hold out ``round(test_fraction * n_g)`` random events of each user (or item) ``g``.

    Every group keeps at least one training event (a group with one event stays in train).
    Deterministic for a seed and independent of the input row order: rows are first sorted by all
    columns, then shuffled by ``seed``. Both outputs come back in that sorted order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if stratify not in ("user", "item"):
        raise ValueError(f"stratify must be 'user' or 'item', got {stratify!r}")
    key = f"{stratify}_id"
    if key not in events.columns:
        raise ValueError(f"events have columns {events.columns}; stratifying needs {key!r}")
    ordered = events.sort(events.columns, maintain_order=True)
    rng = np.random.default_rng(seed)
    tagged = ordered.with_columns(
        pl.Series("_r", rng.random(ordered.height)),
        pl.len().over(key).alias("_n"),
    ).with_columns(
        pl.col("_r").rank("ordinal").over(key).alias("_pos"),
        pl.min_horizontal(
            (pl.col("_n") * test_fraction + 0.5).floor().cast(pl.Int64), pl.col("_n") - 1
        ).alias("_n_test"),
    )
    is_test = pl.col("_pos") <= pl.col("_n_test")
    drop = ["_r", "_n", "_pos", "_n_test"]
    return tagged.filter(~is_test).drop(drop), tagged.filter(is_test).drop(drop)
