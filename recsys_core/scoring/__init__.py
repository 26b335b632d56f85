"""Batch scoring outputs: sinks that publish the recommendation partitions (SQL)."""

from recsys_core.scoring._sql import (
    ASSIGNMENTS_TABLE,
    SQL_URL_ENV,
    load_partition_to_sql,
    read_assignments_sql,
    read_recommendations_sql,
    resolve_sql_url,
    write_assignments_sql,
    write_recommendations_sql,
)

__all__ = [
    "ASSIGNMENTS_TABLE",
    "SQL_URL_ENV",
    "load_partition_to_sql",
    "read_assignments_sql",
    "read_recommendations_sql",
    "resolve_sql_url",
    "write_assignments_sql",
    "write_recommendations_sql",
]
