"""The serving database: each night's recommendations (and A/B assignments) published to SQL, and
read back. (Scoring itself is the models' ``recommend``, run in shards by the pipeline's score
step; the Parquet partitions are written by the warehouse.)"""

from recsys_core.serving._sql import (
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
