"""The only code that reads or writes the warehouse: layout, atomic writes, locks."""

from recsys_core.io._atomic import (
    CorruptFileError,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
    read_json,
    read_parquet,
    replace_dir,
    sweep_temporaries,
)
from recsys_core.io._warehouse import RunLockedError, Warehouse, parse_date, partition_dates

__all__ = [
    "CorruptFileError",
    "RunLockedError",
    "Warehouse",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_parquet",
    "atomic_write_text",
    "parse_date",
    "partition_dates",
    "read_json",
    "read_parquet",
    "replace_dir",
    "sweep_temporaries",
]
