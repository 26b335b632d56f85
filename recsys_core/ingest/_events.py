"""Validation, normalisation and de-duplication of raw events (vectorised over many days).

Input: raw event rows (all strings, as read from landing) with ``_source_file``, ``_source_row`` and
``_date`` (the partition date). :func:`validate_events` adds the normalised columns

* ``_uid``, ``_iid``: stripped ids; ``_et``: lower-cased event type with synonyms mapped;
* ``_ts``: microseconds since the epoch (UTC); ``_val``: the value as a float; ``_eid``: event id;

and ``reason_category`` / ``reason`` (null for a valid row). :func:`resolve_event_ids` checks rows
that carry an ``event_id`` against the first row with that id (earliest by date, source file,
source row) of the same partition, or against a clean row of an earlier date within the
``event_id`` horizon: the same content makes it an ``exact`` duplicate, different content a
*conflict*, quarantined as ``conflicting_event_id`` with a reason naming the kept row's file and
row. :func:`mark_duplicates` then labels every valid row ``clean``, ``exact`` (a duplicate event id,
or identical user, item, type, instant and value as an earlier row of the same partition) or
``near`` (same user, item and type within the window of the previous kept one, which may be an
``anchor``: the last kept event of a key on an earlier day).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from recsys_core.config import EVENT_TYPES, CleanConfig
from recsys_core.ingest._parse import (
    Check,
    add_timestamp_us,
    id_checks,
    quoted,
    split_checks,
    us_to_iso,
)
from recsys_core.schema import SOURCE_FILE, SOURCE_ROW

__all__ = [
    "EVENT_TYPE_SYNONYMS",
    "hashed",
    "mark_duplicates",
    "normalise_event_type",
    "resolve_event_ids",
    "validate_events",
]

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
CONTENT = (*KEY, "_ts", "_val")


def hashed(*cols: str) -> pl.Expr:
    """A 64-bit hash of the values of ``cols`` (equal values, equal hash; -0.0 hashes as 0.0).

    Used only to narrow a search before an exact comparison: grouping or probing millions of
    integers costs a fraction of doing it on strings, and a collision (two values, one hash)
    only lets through a row that the exact comparison then rejects."""
    return pl.col(cols[0]).hash() if len(cols) == 1 else pl.struct(*cols).hash()


def normalise_event_type(col: pl.Expr) -> pl.Expr:
    """Lower-case, strip, spaces/hyphens to ``_``, then :data:`EVENT_TYPE_SYNONYMS`."""
    base = col.str.strip_chars().str.to_lowercase().str.replace_all(r"[\s\-]+", "_")
    return base.replace(list(EVENT_TYPE_SYNONYMS), list(EVENT_TYPE_SYNONYMS.values()))


def _per_value(df: pl.DataFrame, col: str, fn: Callable[[pl.Expr], pl.Expr]) -> pl.Expr:
    """``fn(col)`` computed once per distinct value of ``col`` (a column of a few spellings
    repeated millions of times) and mapped back; null stays null."""
    keys = df.get_column(col).unique().drop_nulls()
    values = keys.to_frame().select(fn(pl.col(col))).to_series()
    return pl.col(col).replace_strict(keys, values, default=None, return_dtype=values.dtype)


def _blank_to_null(col: pl.Expr) -> pl.Expr:
    s = col.str.strip_chars()
    return pl.when(s == "").then(None).otherwise(s)


def validate_events(raw: pl.DataFrame, config: CleanConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(valid, invalid)`` rows with the normalised columns; invalid rows also get
    ``reason_category`` and ``reason`` (see module doc)."""
    df = raw.with_columns(
        pl.col("user_id").str.strip_chars().alias("_uid"),
        pl.col("item_id").str.strip_chars().alias("_iid"),
        _per_value(raw, "event_type", normalise_event_type).alias("_et"),
        _blank_to_null(pl.col("value")).alias("_vs"),
        _blank_to_null(pl.col("event_id")).alias("_eid"),
    ).with_columns(pl.col("_vs").cast(pl.Float64, strict=False).alias("_val"))
    df = add_timestamp_us(df, "timestamp", "_ts")
    ts_present = _blank_to_null(pl.col("timestamp")).is_not_null()
    et_present = _blank_to_null(pl.col("event_type")).is_not_null()
    types = ", ".join(EVENT_TYPES)
    rating = pl.col("_et") == "rating"
    lo, hi = config.rating_min, config.rating_max
    off_partition = (pl.col("_ts") // 86_400_000_000) != pl.col("_date").cast(pl.Int64)
    bad_value = pl.col("_vs").is_not_null() & ~pl.col("_val").is_finite().fill_null(False)
    no_rating_value = rating & pl.col("_vs").is_null()
    out_of_range = (
        rating & pl.col("_val").is_finite() & ((pl.col("_val") < lo) | (pl.col("_val") > hi))
    )
    # true on every row that fails a check below (so only those rows are checked): an id that is
    # missing, longer in bytes than the limit in characters, or holding a control character (the
    # reader's mark for a JSON object/array/boolean starts with one); an event type that is
    # missing or unknown (judged once per spelling); no parsed timestamp; the cheap checks as
    # they are
    et_ok = _per_value(
        df,
        "event_type",
        lambda c: _blank_to_null(c).is_not_null() & normalise_event_type(c).is_in(EVENT_TYPES),
    )
    suspect = pl.any_horizontal(
        *[
            col.is_null()
            | (col.str.len_bytes() == 0)
            | (col.str.len_bytes() > config.max_id_length)
            | col.str.contains(r"\p{Cc}")
            for col in (pl.col("_uid"), pl.col("_iid"))
        ],
        ~et_ok.fill_null(False),
        pl.col("_ts").is_null(),
        off_partition,
        bad_value,
        no_rating_value,
        out_of_range,
    )
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
            off_partition,
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
            bad_value,
            pl.concat_str([pl.lit("value "), quoted(pl.col("value")), pl.lit(" is not a number")]),
        ),
        Check("missing_rating_value", no_rating_value, pl.lit("rating has no value")),
        Check(
            "rating_out_of_range",
            out_of_range,
            pl.concat_str(
                [
                    pl.lit("rating value "),
                    quoted(pl.col("value")),
                    pl.lit(f" is outside [{lo}, {hi}]"),
                ]
            ),
        ),
    ]
    good, bad = split_checks(df, checks, suspect)
    return good.drop("_vs"), bad.drop("_vs")


def resolve_event_ids(
    valid: pl.DataFrame, earlier: pl.DataFrame | None, horizon_days: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(valid rows with _eid_dup, conflicting rows with reason_category/reason)``.

    ``valid`` must be in source order (date, file, row). A row with an event id is compared with
    its *reference*: the earliest row of ``earlier`` (clean events of earlier dates: ``_eid``,
    ``_f_date``, ``_f_file``, ``_f_row`` and the content columns prefixed ``_f``) with that id
    dated at most ``horizon_days`` before it, else the first row with that id on its own date.
    The reference itself is kept; a row with the same content is a duplicate (``_eid_dup``);
    a row with different content is returned as a conflict. The caller guarantees that rows of
    different dates of ``valid`` never share an id (they are cleaned in separate passes).
    """
    df = valid.with_row_index("_rid")
    # only ids seen twice on a date or seen on an earlier date need a reference: every other
    # row is its own reference (kept, not a duplicate), so it is left out of the joins below.
    # Found by the ids' 64-bit hashes first (integers), then checked as strings on the few rows
    # left: an id seen twice has its hash seen twice, so the first filter loses none of them
    shared = pl.struct("_date", "_eid").is_duplicated()
    maybe = pl.struct("_date", "_h").is_duplicated()
    if earlier is not None and earlier.height:
        shared = shared | pl.col("_eid").is_in(earlier.get_column("_eid").implode())
        hashes = earlier.select(hashed("_eid")).to_series()
        maybe = maybe | pl.col("_h").is_in(hashes.implode())
    ided = (
        df.filter(pl.col("_eid").is_not_null())
        .with_columns(hashed("_eid").alias("_h"))
        .filter(maybe)
        .filter(shared)
        .drop("_h")
    )
    ref_cols = ["_f_date", "_f_file", "_f_row", *[f"_f{c}" for c in CONTENT]]
    firsts = ided.filter(pl.col("_rid") == pl.col("_rid").min().over("_date", "_eid")).select(
        "_date",
        "_eid",
        pl.col("_rid").alias("_f_rid"),
        pl.col("_date").alias("_f_date"),
        pl.col(SOURCE_FILE).alias("_f_file"),
        pl.col(SOURCE_ROW).alias("_f_row"),
        *[pl.col(c).alias(f"_f{c}") for c in CONTENT],
    )
    refs = firsts
    if earlier is not None and earlier.height and ided.height:
        before = (
            firsts.select("_date", "_eid")
            .join(earlier, on="_eid", how="inner")
            .filter(
                (pl.col("_f_date") < pl.col("_date"))
                & ((pl.col("_date") - pl.col("_f_date")).dt.total_days() <= horizon_days)
            )
            .sort("_date", "_eid", "_f_date", "_f_file", "_f_row")
            .unique(["_date", "_eid"], keep="first", maintain_order=True)
            .with_columns(pl.lit(None, pl.UInt32).alias("_f_rid"))
        )
        if before.height:
            refs = pl.concat(
                [
                    firsts.join(before.select("_date", "_eid"), on=["_date", "_eid"], how="anti"),
                    before.select(firsts.columns),
                ]
            )
    ided = ided.join(refs, on=["_date", "_eid"], how="left")
    same = pl.all_horizontal([pl.col(c).eq_missing(pl.col(f"_f{c}")) for c in CONTENT])
    is_ref = pl.col("_rid") == pl.col("_f_rid")
    flags = ided.select(
        "_rid",
        (~is_ref.fill_null(False) & same).alias("_dup"),
        (~is_ref.fill_null(False) & ~same).alias("_conflict"),
    )
    dup = np.zeros(df.height, dtype=bool)
    dup[flags.filter("_dup")["_rid"].to_numpy()] = True
    conflict_rids = flags.filter("_conflict")["_rid"]
    conflicts = (
        ided.filter(pl.col("_rid").is_in(conflict_rids.implode()))
        .with_columns(
            pl.lit("conflicting_event_id").alias("reason_category"),
            pl.concat_str(
                [
                    pl.lit("event_id "),
                    quoted(pl.col("_eid")),
                    pl.lit(" conflicts with the different event kept under that id at "),
                    pl.col("_f_file"),
                    pl.lit(" row "),
                    pl.col("_f_row").cast(pl.String),
                ]
            ).alias("reason"),
        )
        .drop("_rid", *ref_cols, "_f_rid")
    )
    kept = df.with_columns(pl.Series("_eid_dup", dup))
    if conflict_rids.len():
        kept = kept.filter(~pl.col("_rid").is_in(conflict_rids.implode()))
    return kept.drop("_rid"), conflicts


def mark_duplicates(
    valid: pl.DataFrame, anchors: pl.DataFrame | None, window_seconds: int
) -> pl.DataFrame:
    """Add ``_status`` (``clean``/``exact``/``near``) to valid rows (see module doc).

    ``valid`` must be in source order (date, file, row): the first of exact duplicates is kept.
    Rows with an event id are duplicates when ``_eid_dup`` (from :func:`resolve_event_ids`)
    says so; rows without one when an earlier row of the date has the same content.
    ``anchors`` has ``_uid, _iid, _et, _ts`` of already-clean events of earlier days.
    """
    by_id = pl.col("_eid").is_not_null()
    if "_eid_dup" not in valid.columns:  # event ids not resolved: the first of each id per date
        first_id = pl.col("_rid") == pl.col("_rid").min().over("_date", "_eid")
        valid = (
            valid.with_row_index("_rid")
            .with_columns((by_id & ~first_id).alias("_eid_dup"))
            .drop("_rid")
        )
    df = valid.with_row_index("_rid")
    # rows without an id: the first of each (date, content) is kept. Grouped first by the
    # content's 64-bit hash (integers, not three strings): a row alone with its hash is alone
    # with its content, so it is a first; only the rows that share a hash (the duplicates, and
    # any collision) are grouped by the content itself
    no_id = df.filter(~by_id).select("_rid", "_date", *CONTENT, hashed(*CONTENT).alias("_h"))
    shared = no_id.filter(pl.struct("_date", "_h").is_duplicated())
    firsts = shared.group_by("_date", *CONTENT).agg(pl.col("_rid").min())["_rid"]
    first = df.select(by_id & ~pl.col("_eid_dup")).to_series().to_numpy().copy()
    first[no_id.get_column("_rid").to_numpy()] = True
    first[shared.get_column("_rid").to_numpy()] = False
    first[firsts.to_numpy()] = True
    near = np.zeros(df.height, dtype=bool)
    if window_seconds > 0 and df.height:
        kept = df.filter(pl.Series(first)).select(*KEY, "_ts", "_rid")
        near[_near_duplicates(kept, anchors, window_seconds * 1_000_000)] = True
    status = (
        pl.when(~pl.Series(first))
        .then(pl.lit("exact"))
        .when(pl.Series(near))
        .then(pl.lit("near"))
        .otherwise(pl.lit("clean"))
    )
    return df.drop("_rid", "_eid_dup").with_columns(status.alias("_status"))


def _near_duplicates(
    kept: pl.DataFrame, anchors: pl.DataFrame | None, window_us: int
) -> np.ndarray:
    """``_rid`` of rows within ``window_us`` of the previous kept row of the same key.

    Each key is represented by its 64-bit hash (an integer, not three strings: grouping rows by
    three strings costs several times the sort); rows are sorted by (hash, time, row), and if
    two different keys share a hash (adjacent rows with one hash and different keys) they are
    grouped by the key itself instead, so a collision costs time, never a wrong answer."""
    frames = [kept.with_columns(pl.col("_rid").cast(pl.Int64))]
    if anchors is not None and anchors.height:
        frames.insert(0, anchors.select(*KEY, "_ts", pl.lit(-1, pl.Int64).alias("_rid")))
    rows = pl.concat([f.select(*KEY, "_ts", "_rid") for f in frames]).with_columns(
        hashed(*KEY).alias("_key")
    )
    seq = rows.sort("_key", "_ts", "_rid")  # (sorting all: cheaper than hashing for repeats)
    same_hash = pl.col("_key") == pl.col("_key").shift(1)
    same_key = pl.all_horizontal([pl.col(c).eq_missing(pl.col(c).shift(1)) for c in KEY])
    if seq.select((same_hash & ~same_key).any()).item():  # a collision: group by the key
        seq = (
            rows.with_row_index("_first")
            .with_columns(pl.col("_first").min().over(KEY).alias("_key"))
            .sort("_key", "_ts", "_rid")
        )
    seq = seq.select("_key", "_ts", "_rid")
    same = (pl.col("_key") == pl.col("_key").shift(1)).fill_null(False)
    close = same & ((pl.col("_ts") - pl.col("_ts").shift(1)) <= window_us)
    cand = seq.select(close.fill_null(False)).to_series().to_numpy()
    t = seq["_ts"].to_numpy()
    rid = seq["_rid"].to_numpy()
    anchor = rid < 0
    keep = ~cand | anchor
    last = 0
    for i in np.flatnonzero(cand & ~anchor).tolist():
        if not cand[i - 1] or anchor[i - 1]:
            last = t[i - 1]  # i-1 starts this run of close events, so it is kept
        if t[i] - last > window_us:
            keep[i] = True
            last = t[i]
    return rid[~keep]
