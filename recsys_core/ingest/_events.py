"""Validation, normalisation and de-duplication of raw events (vectorised over many days).

Input: raw event rows (all strings, as read from landing) with ``_source_file``, ``_source_row`` and
``_date`` (the partition date). :func:`validate_events` adds the normalised columns

* ``_uid``, ``_iid``: stripped ids; ``_et``: lower-cased event type with synonyms mapped;
* ``_ts``: microseconds since the epoch (UTC); ``_val``: the value as a float; ``_eid``: event id;

and ``reason_category`` / ``reason`` (null for a valid row). :func:`mark_duplicates` labels every
valid row ``clean``, ``exact`` (same event id, or identical user, item, type, instant and value as an
earlier row of the same partition) or ``near`` (same user, item and type within the window of the
previous kept one, which may be an ``anchor``: the last kept event of a key on an earlier day).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from recsys_core.config import EVENT_TYPES, CleanConfig
from recsys_core.ingest._parse import (
    Check,
    apply_checks,
    id_checks,
    quoted,
    timestamp_us,
    us_to_iso,
)
from recsys_core.schema import SOURCE_FILE, SOURCE_ROW

__all__ = ["EVENT_TYPE_SYNONYMS", "mark_duplicates", "normalise_event_type", "validate_events"]

#: Spellings mapped to the canonical event types (after lower-casing and turning spaces and
#: hyphens into underscores: "Add-to-Cart" -> "add_to_cart").
EVENT_TYPE_SYNONYMS: dict[str, str] = {
    "addtocart": "add_to_cart",
    "add_cart": "add_to_cart",
    "cart": "add_to_cart",
    "add_to_basket": "add_to_cart",
    "addtobasket": "add_to_cart",
    "buy": "purchase",
    "order": "purchase",
    "checkout": "purchase",
    "transaction": "purchase",
    "rate": "rating",
    "rated": "rating",
    "pageview": "view",
    "page_view": "view",
    "detail_view": "view",
    "clicked": "click",
}
KEY = ("_uid", "_iid", "_et")


def normalise_event_type(col: pl.Expr) -> pl.Expr:
    """Lower-case, strip, spaces/hyphens to ``_``, then :data:`EVENT_TYPE_SYNONYMS`."""
    base = col.str.strip_chars().str.to_lowercase().str.replace_all(r"[\s\-]+", "_")
    return base.replace(list(EVENT_TYPE_SYNONYMS), list(EVENT_TYPE_SYNONYMS.values()))


def _blank_to_null(col: pl.Expr) -> pl.Expr:
    s = col.str.strip_chars()
    return pl.when(s == "").then(None).otherwise(s)


def validate_events(raw: pl.DataFrame, config: CleanConfig) -> pl.DataFrame:
    """Add normalised columns and ``reason_category``/``reason`` (see module doc)."""
    df = raw.with_columns(
        pl.col("user_id").str.strip_chars().alias("_uid"),
        pl.col("item_id").str.strip_chars().alias("_iid"),
        normalise_event_type(pl.col("event_type")).alias("_et"),
        timestamp_us(pl.col("timestamp")).alias("_ts"),
        _blank_to_null(pl.col("value")).alias("_vs"),
        _blank_to_null(pl.col("event_id")).alias("_eid"),
    ).with_columns(pl.col("_vs").cast(pl.Float64, strict=False).alias("_val"))
    ts_present = _blank_to_null(pl.col("timestamp")).is_not_null()
    et_present = _blank_to_null(pl.col("event_type")).is_not_null()
    types = ", ".join(EVENT_TYPES)
    rating = pl.col("_et") == "rating"
    lo, hi = config.rating_min, config.rating_max
    checks = [
        *id_checks("user_id", pl.col("_uid"), config.max_id_length),
        *id_checks("item_id", pl.col("_iid"), config.max_id_length),
        Check("missing_event_type", ~et_present, pl.lit("event_type is missing")),
        Check(
            "unknown_event_type",
            et_present & ~pl.col("_et").is_in(EVENT_TYPES),
            pl.concat_str(
                [pl.lit("event_type "), quoted(pl.col("event_type")), pl.lit(f" not in [{types}]")]
            ),
        ),
        Check("missing_timestamp", ~ts_present, pl.lit("timestamp is missing")),
        Check(
            "bad_timestamp",
            ts_present & pl.col("_ts").is_null(),
            pl.concat_str(
                [
                    pl.lit("timestamp "),
                    quoted(pl.col("timestamp")),
                    pl.lit(" is not ISO 8601 or Unix seconds"),
                    pl.when(pl.col("timestamp").str.contains(r"^\s*\d{12,}(\.\d*)?\s*$"))
                    .then(pl.lit(" (too large for seconds; milliseconds?)"))
                    .otherwise(pl.lit("")),
                ]
            ),
        ),
        Check(
            "timestamp_off_partition",
            pl.from_epoch(pl.col("_ts"), time_unit="us").dt.date() != pl.col("_date"),
            pl.concat_str(
                [
                    pl.lit("timestamp "),
                    quoted(pl.col("timestamp")),
                    pl.lit(" ("),
                    us_to_iso(pl.col("_ts")),
                    pl.lit(") is not on partition date "),
                    pl.col("_date").dt.to_string("%Y-%m-%d"),
                ]
            ),
        ),
        Check(
            "bad_value",
            pl.col("_vs").is_not_null() & ~pl.col("_val").is_finite().fill_null(False),
            pl.concat_str([pl.lit("value "), quoted(pl.col("value")), pl.lit(" is not a number")]),
        ),
        Check(
            "missing_rating_value", rating & pl.col("_vs").is_null(), pl.lit("rating has no value")
        ),
        Check(
            "rating_out_of_range",
            rating & pl.col("_val").is_finite() & ((pl.col("_val") < lo) | (pl.col("_val") > hi)),
            pl.concat_str(
                [
                    pl.lit("rating value "),
                    quoted(pl.col("value")),
                    pl.lit(f" is outside [{lo}, {hi}]"),
                ]
            ),
        ),
    ]
    return apply_checks(df, checks).drop("_vs")


def mark_duplicates(
    valid: pl.DataFrame, anchors: pl.DataFrame | None, window_seconds: int
) -> pl.DataFrame:
    """Add ``_status`` (``clean``/``exact``/``near``) to valid rows (see module doc).

    ``valid`` must be in source order (date, file, row): the first of exact duplicates is kept.
    ``anchors`` has ``_uid, _iid, _et, _ts`` of already-clean events of earlier days.
    """
    content = pl.concat_str(
        [
            pl.lit("c"),
            *[pl.col(c) for c in KEY],
            pl.col("_ts").cast(pl.String),
            pl.col("_val").cast(pl.String).fill_null(""),
        ],
        separator="\x1f",
    )
    dup_key = pl.when(pl.col("_eid").is_not_null()).then(
        pl.concat_str([pl.lit("i\x1f"), pl.col("_eid")])
    )
    df = valid.with_columns(
        pl.struct(pl.col("_date"), dup_key.otherwise(content)).is_first_distinct().alias("_first"),
        pl.int_range(0, pl.len(), dtype=pl.Int64).alias("_rid"),
    )
    near = np.zeros(df.height, dtype=bool)
    if window_seconds > 0 and df.height:
        near_ids = _near_duplicates(df.filter("_first"), anchors, window_seconds * 1_000_000)
        near[near_ids] = True
    return df.with_columns(
        pl.when(~pl.col("_first"))
        .then(pl.lit("exact"))
        .when(pl.Series(near))
        .then(pl.lit("near"))
        .otherwise(pl.lit("clean"))
        .alias("_status")
    ).drop("_first", "_rid")


def _near_duplicates(
    kept: pl.DataFrame, anchors: pl.DataFrame | None, window_us: int
) -> np.ndarray:
    """``_rid`` of rows within ``window_us`` of the previous kept row of the same key."""
    cols = [*KEY, "_ts", "_rid", SOURCE_FILE, SOURCE_ROW]
    frames = [kept.select(cols)]
    if anchors is not None and anchors.height:
        frames.insert(
            0,
            anchors.select(
                *KEY,
                "_ts",
                pl.lit(-1, pl.Int64).alias("_rid"),
                pl.lit("", pl.String).alias(SOURCE_FILE),
                pl.lit(0, pl.Int64).alias(SOURCE_ROW),
            ),
        )
    seq = (
        pl.concat(frames)
        .sort([*KEY, "_ts", "_rid", SOURCE_FILE, SOURCE_ROW])
        .with_columns(pl.struct(*KEY).rle_id().alias("_g"))
    )
    g = seq["_g"].to_numpy()
    t = seq["_ts"].to_numpy()
    rid = seq["_rid"].to_numpy()
    anchor = rid < 0
    cand = np.zeros(len(t), dtype=bool)
    cand[1:] = (g[1:] == g[:-1]) & (t[1:] - t[:-1] <= window_us)
    keep = ~cand | anchor
    last = 0
    for i in np.flatnonzero(cand & ~anchor).tolist():
        if not cand[i - 1] or anchor[i - 1]:
            last = t[i - 1]  # i-1 starts this run of close events, so it is kept
        if t[i] - last > window_us:
            keep[i] = True
            last = t[i]
    return rid[~keep]
