"""Validation and de-duplication of raw catalog rows (item drops), vectorised over many days.

A valid item row has a non-empty ``item_id`` (same rules as event ids) and ``title``, and an
``updated_at`` that is empty or parses like an event timestamp. Text fields are stripped; empty
text becomes null. Within one drop, an item listed more than once keeps its latest row (later
``updated_at``, then later file and row); the others count as duplicates. Reason categories are
prefixed ``items.`` so that the manifest tells them apart from event reasons.
"""

from __future__ import annotations

import polars as pl

from recsys_core.config import CleanConfig
from recsys_core.ingest._parse import Check, add_timestamp_us, id_checks, quoted, split_checks
from recsys_core.schema import CLEAN_ITEMS_SCHEMA, SOURCE_FILE, SOURCE_ROW

__all__ = ["clean_items_frame", "items_output", "validate_items"]

_TEXT = ("title", "description", "categories", "tags")


def _text(col: str) -> pl.Expr:
    s = pl.col(col).str.strip_chars()
    return pl.when(s == "").then(None).otherwise(s)


def validate_items(raw: pl.DataFrame, config: CleanConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(valid, invalid)`` rows with ``_iid``, ``_t_<field>`` and ``_upd`` (microseconds);
    invalid rows also get ``reason_category``/``reason``."""
    df = raw.with_columns(
        pl.col("item_id").str.strip_chars().alias("_iid"),
        *[_text(c).alias(f"_t_{c}") for c in _TEXT],
    )
    df = add_timestamp_us(df, "updated_at", "_upd")
    upd_present = _text("updated_at").is_not_null()
    checks = [
        *id_checks("item_id", pl.col("_iid"), config.max_id_length, prefix="items."),
        Check("items.missing_title", pl.col("_t_title").is_null(), pl.lit("title is missing")),
        Check(
            "items.bad_updated_at",
            upd_present & pl.col("_upd").is_null(),
            pl.concat_str(
                [
                    pl.lit("updated_at "),
                    quoted(pl.col("updated_at")),
                    pl.lit(" is not ISO 8601 or Unix seconds"),
                ]
            ),
        ),
    ]
    return split_checks(df, checks)


def clean_items_frame(valid: pl.DataFrame) -> pl.DataFrame:
    """Valid item rows with ``_status`` (``clean``/``duplicate``) and the clean columns."""
    order = ["_date", "_iid", "_upd", SOURCE_FILE, SOURCE_ROW]
    last = pl.struct("_date", "_iid").is_last_distinct()
    return valid.sort(order, nulls_last=False).with_columns(
        pl.when(last).then(pl.lit("clean")).otherwise(pl.lit("duplicate")).alias("_status")
    )


def items_output(df: pl.DataFrame) -> pl.DataFrame:
    """Clean rows in :data:`CLEAN_ITEMS_SCHEMA`, sorted by date then item id."""
    return (
        df.filter(pl.col("_status") == "clean")
        .select(
            pl.col("_iid").alias("item_id"),
            *[pl.col(f"_t_{c}").alias(c) for c in _TEXT],
            pl.from_epoch(pl.col("_upd"), time_unit="us")
            .dt.replace_time_zone("UTC")
            .alias("updated_at"),
            pl.col("_date").alias("date"),
            pl.col(SOURCE_FILE),
            pl.col(SOURCE_ROW),
        )
        .cast(CLEAN_ITEMS_SCHEMA)  # type: ignore[arg-type]
        .sort(["date", "item_id"])
    )
