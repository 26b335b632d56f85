"""Column names and polars schemas of the tables the pipeline reads and writes."""

from __future__ import annotations

import polars as pl

__all__ = [
    "CLEAN_EVENTS_SCHEMA",
    "CLEAN_ITEMS_SCHEMA",
    "EVENT_REQUIRED",
    "EVENT_OPTIONAL",
    "ITEM_REQUIRED",
    "ITEM_OPTIONAL",
    "RECOMMENDATIONS_SCHEMA",
    "SOURCE_FILE",
    "SOURCE_ROW",
]

#: Lineage columns added to every raw row: which landing file, which 1-based data row.
SOURCE_FILE = "_source_file"
SOURCE_ROW = "_source_row"

EVENT_REQUIRED: tuple[str, ...] = ("user_id", "item_id", "event_type", "timestamp")
EVENT_OPTIONAL: tuple[str, ...] = ("value", "event_id")
ITEM_REQUIRED: tuple[str, ...] = ("item_id", "title")
ITEM_OPTIONAL: tuple[str, ...] = ("description", "categories", "tags", "updated_at")

#: Clean events: one validated, normalised interaction per row.
CLEAN_EVENTS_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "user_id": pl.String(),
    "item_id": pl.String(),
    "event_type": pl.String(),
    "timestamp": pl.Datetime("us", "UTC"),
    "value": pl.Float64(),
    "date": pl.Date(),
    SOURCE_FILE: pl.String(),
    SOURCE_ROW: pl.Int64(),
}

#: Clean items: the latest text of every item as of a partition date.
CLEAN_ITEMS_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String(),
    "title": pl.String(),
    "description": pl.String(),
    "categories": pl.String(),
    "tags": pl.String(),
    "updated_at": pl.Datetime("us", "UTC"),
    "date": pl.Date(),
    SOURCE_FILE: pl.String(),
    SOURCE_ROW: pl.Int64(),
}

RECOMMENDATIONS_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "item_id": pl.String(),
    "rank": pl.Int32(),
    "score": pl.Float32(),
    "model_id": pl.String(),
    "run_date": pl.Date(),
    "reason": pl.String(),
}
