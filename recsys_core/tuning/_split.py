"""Validation splits carved from the *training* events only (the test split never reaches tuning).

* ``days=N`` (nightly pipeline): a temporal holdout. Events on the last ``N`` calendar days (UTC)
  up to the newest training event validate; everything before trains.
* ``fraction=f`` (experiment protocol): a random per-user holdout. For every user with at least two
  distinct items, ``round(f * n_items)`` of their (user, item) pairs (at least 1, at most
  ``n_items - 1``) move to validation with all their events; users with one item stay in train.
  Seeded: the same events and seed give the same split. ``stratify="item"`` holds out per item
  instead (each item keeps at least one training user), for test protocols stratified by item.
* ``latest=f`` (experiment protocol, temporal): one global cut in time. Events at or after the
  ``1 - f`` quantile of the timestamps validate, everything before trains (so about the newest
  ``f`` of the events validate; ties at the cut all go to validation). Needs ``timestamp``.

Rows keep their input order in both outputs; the two outputs partition the input.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import numpy as np
import polars as pl

__all__ = ["split_validation"]


def _event_day(events: pl.DataFrame) -> pl.Expr:
    dtype = events.schema["timestamp"]
    ts = pl.col("timestamp")
    if dtype == pl.Date:
        return ts
    if isinstance(dtype, pl.Datetime):
        return (ts.dt.convert_time_zone("UTC") if dtype.time_zone else ts).dt.date()
    if dtype.is_numeric():
        return pl.from_epoch(ts.cast(pl.Int64), time_unit="s").dt.date()
    raise ValueError(
        f"split_validation: column 'timestamp' is {dtype}; expected a Datetime, a Date or Unix "
        "seconds"
    )


def split_validation(
    events: pl.DataFrame,
    *,
    days: int | None = None,
    fraction: float | None = None,
    latest: float | None = None,
    seed: int,
    stratify: Literal["user", "item"] = "user",
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split training ``events`` (``user_id, item_id`` [+ ``timestamp``]) into (train, valid).

    Give exactly one of ``days`` (temporal by calendar days, needs ``timestamp``), ``fraction``
    (random per user, or per item with ``stratify="item"``) or ``latest`` (temporal by share of
    events, needs ``timestamp``).
    """
    if stratify not in ("user", "item"):
        raise ValueError(f"split_validation: stratify must be 'user' or 'item', got {stratify!r}")
    if sum(x is not None for x in (days, fraction, latest)) != 1:
        raise ValueError(
            "split_validation: give exactly one of days= (temporal), fraction= (random) or "
            "latest= (temporal share)"
        )
    for col in ("user_id", "item_id"):
        if col not in events.columns:
            raise ValueError(
                f"split_validation: events have no column {col!r}; found {events.columns}"
            )
    if events.height == 0:
        return events, events.clear()
    if days is not None:
        if days < 1:
            raise ValueError(f"split_validation: days must be >= 1, got {days}")
        if "timestamp" not in events.columns:
            raise ValueError("split_validation(days=...): events have no 'timestamp' column")
        day = _event_day(events)
        last = events.select(day.max()).item()
        cut = last - dt.timedelta(days=days)
        is_valid = day > pl.lit(cut)
        return events.filter(~is_valid), events.filter(is_valid)
    if latest is not None:
        return _latest_split(events, latest)
    assert fraction is not None
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split_validation: fraction must be in (0, 1), got {fraction}")
    pairs = events.select("user_id", "item_id").unique().sort("user_id", "item_id")
    rng = np.random.default_rng(seed)
    pairs = pairs.with_columns(pl.Series("_key", rng.random(pairs.height)))
    group = f"{stratify}_id"
    n = pl.len().over(group)
    n_hold = (pl.lit(fraction) * n).round().clip(1, None).cast(pl.Int64)
    n_hold = pl.min_horizontal(n_hold, n - 1)
    held = pairs.filter(pl.col("_key").rank("ordinal").over(group) <= n_hold).select(
        "user_id", "item_id", pl.lit(True).alias("_held")
    )
    flagged = events.join(held, on=["user_id", "item_id"], how="left", maintain_order="left")
    is_valid = pl.col("_held").fill_null(False)
    return (
        flagged.filter(~is_valid).drop("_held"),
        flagged.filter(is_valid).drop("_held"),
    )


def _latest_split(events: pl.DataFrame, share: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    if not 0.0 < share < 1.0:
        raise ValueError(f"split_validation: latest must be in (0, 1), got {share}")
    if "timestamp" not in events.columns:
        raise ValueError("split_validation(latest=...): events have no 'timestamp' column")
    dtype = events.schema["timestamp"]
    if isinstance(dtype, pl.Datetime):
        key = pl.col("timestamp").dt.epoch("us").cast(pl.Float64)
    elif dtype == pl.Date or dtype.is_numeric():
        key = pl.col("timestamp").cast(pl.Float64)
    else:
        raise ValueError(
            f"split_validation: column 'timestamp' is {dtype}; expected a Datetime, a Date or Unix "
            "seconds"
        )
    cut = float(np.quantile(events.select(key).to_series().to_numpy(), 1.0 - share))
    is_valid = key >= cut
    return events.filter(~is_valid), events.filter(is_valid)
