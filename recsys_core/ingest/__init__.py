"""Read landing partitions; validate, normalise, de-duplicate and quarantine into clean tables.

Typical nightly use::

    result = ingest(settings.landing, warehouse, run_date)            # landing -> raw
    manifests = clean_days(warehouse, result.all_dates, settings.clean)  # raw -> clean
    events = load_clean_events(warehouse, until=run_date)
    catalog = load_catalog(warehouse, as_of=run_date)
"""

from recsys_core.ingest._batch import read_landing_partition
from recsys_core.ingest._clean import QUARANTINE_SCHEMA, clean, clean_days, clean_with_followers
from recsys_core.ingest._errors import (
    LandingError,
    LandingLayoutError,
    LandingPathError,
    LandingReadError,
    LandingSchemaError,
    LandingWarning,
    MissingPartitionError,
)
from recsys_core.ingest._events import EVENT_TYPE_SYNONYMS
from recsys_core.ingest._ingest import (
    IngestedSlice,
    IngestPlan,
    IngestResult,
    commit_ingest,
    ingest,
    ingest_partitions,
    landing_record,
    plan_ingest,
)
from recsys_core.ingest._load import (
    CATALOG_COLUMNS,
    load_catalog,
    load_clean_events,
    pending_clean_dates,
    read_raw_versions,
    record_raw_versions,
)
from recsys_core.ingest._read import (
    DATA_EXTENSIONS,
    LandingFile,
    LandingScan,
    landing_dates,
    landing_fingerprint,
    partition_dir,
    scan_landing,
)

__all__ = [
    "CATALOG_COLUMNS",
    "DATA_EXTENSIONS",
    "EVENT_TYPE_SYNONYMS",
    "QUARANTINE_SCHEMA",
    "IngestPlan",
    "IngestResult",
    "IngestedSlice",
    "LandingError",
    "LandingFile",
    "LandingLayoutError",
    "LandingPathError",
    "LandingReadError",
    "LandingScan",
    "LandingSchemaError",
    "LandingWarning",
    "MissingPartitionError",
    "clean",
    "clean_days",
    "clean_with_followers",
    "commit_ingest",
    "ingest",
    "ingest_partitions",
    "landing_dates",
    "landing_fingerprint",
    "landing_record",
    "load_catalog",
    "load_clean_events",
    "partition_dir",
    "pending_clean_dates",
    "read_raw_versions",
    "record_raw_versions",
    "plan_ingest",
    "read_landing_partition",
    "scan_landing",
]
