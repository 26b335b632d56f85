"""The only code that reads or writes storage: locations, layout, atomic writes, locks.

A location is a local path or an object-store URL (``s3://``, ``gs://``, ``az://``); see
:mod:`recsys_core.io._storage`.
"""

from recsys_core.io._atomic import (
    CorruptFileError,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
    read_json,
    read_parquet,
    read_parquet_many,
    replace_dir,
    sweep_temporaries,
)
from recsys_core.io._fence import LeaseLostError
from recsys_core.io._lease import RunLockedError
from recsys_core.io._storage import (
    Location,
    PreconditionFailed,
    StorageError,
    delete,
    delete_tree,
    download_files,
    exists,
    files_under,
    files_with_stats,
    is_remote,
    list_names,
    local_copy,
    location,
    put_if_absent,
    read_bytes,
    read_versioned,
    resolve_location,
    signed_url,
    upload_dir,
    write_if_match,
)
from recsys_core.io._warehouse import Warehouse, parse_date, partition_dates

__all__ = [
    "CorruptFileError",
    "LeaseLostError",
    "Location",
    "PreconditionFailed",
    "RunLockedError",
    "StorageError",
    "Warehouse",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_parquet",
    "atomic_write_text",
    "delete",
    "delete_tree",
    "download_files",
    "exists",
    "files_under",
    "files_with_stats",
    "is_remote",
    "list_names",
    "local_copy",
    "location",
    "parse_date",
    "partition_dates",
    "put_if_absent",
    "read_bytes",
    "read_json",
    "read_parquet",
    "read_parquet_many",
    "read_versioned",
    "replace_dir",
    "resolve_location",
    "signed_url",
    "sweep_temporaries",
    "upload_dir",
    "write_if_match",
]
