"""Attribution: which exposed users came back to an item recommended to them.

An *exposure* is one recommendation row (``run_date, user_id, arm, item_id``). An event of the
same user on the same item whose UTC day falls 1..``window_days`` days after ``run_date`` is
attributed to that night's list. Per (night, user) that gives: was there a hit (an event of a
``hit_events`` type on a recommended item), how many recommended items were hit, and the clicks
and purchases on recommended items. A user with no event at all still counts (0 hits): the unit
is the exposed user, whether or not they came back (intent to treat).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import polars as pl

__all__ = ["attribute", "night_metrics"]

_USER_NIGHT_SCHEMA = {
    "run_date": pl.Date,
    "user_id": pl.String,
    "arm": pl.String,
    "hit": pl.Boolean,
    "hits": pl.UInt32,
    "clicks": pl.UInt32,
    "purchases": pl.UInt32,
    "feedback_days": pl.Int32,
}


def _event_day(events: pl.DataFrame) -> pl.Expr:
    if "date" in events.columns:
        return pl.col("date").cast(pl.Date)
    return pl.col("timestamp").dt.convert_time_zone("UTC").dt.date()


def attribute(
    exposures: pl.DataFrame,
    events: pl.DataFrame,
    *,
    as_of: dt.date,
    window_days: int,
    hit_events: Sequence[str],
) -> pl.DataFrame:
    """One row per exposed (run_date, user): ``arm, hit, hits, clicks, purchases, feedback_days``.

    ``exposures``: ``run_date, user_id, arm, item_id``. ``events``: clean events (``user_id,
    item_id, event_type`` and ``date`` or ``timestamp``); only days up to ``as_of`` are used.
    ``feedback_days`` is how many days of the window have been observed by ``as_of`` (0: none yet).
    """
    if window_days < 1:
        raise ValueError(f"window_days must be >= 1, got {window_days}")
    missing = {"run_date", "user_id", "arm", "item_id"} - set(exposures.columns)
    if missing:
        raise ValueError(
            f"exposures: missing column(s) {sorted(missing)}; found {exposures.columns}"
        )
    exp = exposures.select(pl.col("run_date").cast(pl.Date), "user_id", "arm", "item_id").unique(
        ["run_date", "user_id", "item_id"], maintain_order=True
    )
    users = (
        exp.group_by("run_date", "user_id", "arm", maintain_order=True)
        .agg()
        .sort("run_date", "user_id")
    )
    arms_per_user = users.group_by("run_date", "user_id").len().filter(pl.col("len") > 1)
    if arms_per_user.height:
        row = arms_per_user.row(0, named=True)
        raise ValueError(
            f"exposures: user {row['user_id']!r} is in {row['len']} arms on {row['run_date']}; "
            "expected exactly one arm per user and night"
        )
    ev = events.select("user_id", "item_id", "event_type", _event_day(events).alias("_day")).filter(
        pl.col("_day") <= as_of
    )
    joined = exp.join(ev, on=["user_id", "item_id"], how="inner").filter(
        (pl.col("_day") > pl.col("run_date"))
        & (pl.col("_day") <= pl.col("run_date") + pl.duration(days=window_days))
    )
    per = joined.group_by("run_date", "user_id").agg(
        pl.col("item_id")
        .filter(pl.col("event_type").is_in(list(hit_events)))
        .n_unique()
        .cast(pl.UInt32)
        .alias("hits"),
        (pl.col("event_type") == "click").sum().cast(pl.UInt32).alias("clicks"),
        (pl.col("event_type") == "purchase").sum().cast(pl.UInt32).alias("purchases"),
    )
    observed = (
        pl.min_horizontal(pl.lit(as_of) - pl.col("run_date"), pl.duration(days=window_days))
        .dt.total_days()
        .clip(lower_bound=0)
        .cast(pl.Int32)
    )
    out = users.join(per, on=["run_date", "user_id"], how="left").with_columns(
        pl.col("hits").fill_null(0),
        pl.col("clicks").fill_null(0),
        pl.col("purchases").fill_null(0),
        observed.alias("feedback_days"),
    )
    out = out.with_columns((pl.col("hits") > 0).alias("hit"))
    return out.select([pl.col(c).cast(t) for c, t in _USER_NIGHT_SCHEMA.items()]).sort(
        "run_date", "user_id"
    )


def night_metrics(
    user_nights: pl.DataFrame, exposures: pl.DataFrame, n_items: int | None = None
) -> pl.DataFrame:
    """Per (run_date, arm): exposed users, users with a hit, hit rate, hits/clicks/purchases per
    user, feedback days observed, and catalog coverage of the arm's lists (when ``n_items``)."""
    cover = exposures.group_by(pl.col("run_date").cast(pl.Date), "arm").agg(
        pl.col("item_id").n_unique().alias("items_recommended")
    )
    out = (
        user_nights.group_by("run_date", "arm")
        .agg(
            pl.len().alias("exposed_users"),
            pl.col("hit").sum().alias("users_with_hit"),
            pl.col("hits").mean().alias("hits_per_user"),
            pl.col("clicks").mean().alias("clicks_per_user"),
            pl.col("purchases").mean().alias("purchases_per_user"),
            pl.col("feedback_days").max().alias("feedback_days"),
        )
        .with_columns((pl.col("users_with_hit") / pl.col("exposed_users")).alias("hit_rate"))
        .join(cover, on=["run_date", "arm"], how="left")
    )
    if n_items:
        out = out.with_columns((pl.col("items_recommended") / n_items).alias("coverage"))
    else:
        out = out.with_columns(pl.lit(None, dtype=pl.Float64).alias("coverage"))
    return out.sort("run_date", "arm")
