"""Batch scoring outputs: sinks that publish the recommendation partitions (SQL)."""

from recsys_core.scoring._sql import (
    SQL_URL_ENV,
    load_partition_to_sql,
    read_recommendations_sql,
    resolve_sql_url,
    write_recommendations_sql,
)

__all__ = [
    "SQL_URL_ENV",
    "load_partition_to_sql",
    "read_recommendations_sql",
    "resolve_sql_url",
    "write_recommendations_sql",
]
