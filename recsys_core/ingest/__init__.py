"""Read landing partitions; validate, normalise, de-duplicate and quarantine into clean tables.

Typical nightly use::

    result = ingest(settings.landing, warehouse, run_date)            # landing -> raw
    manifests = clean_days(warehouse, result.all_dates, settings.clean)  # raw -> clean
    events = load_clean_events(warehouse, until=run_date)
    catalog = load_catalog(warehouse, as_of=run_date)
"""

from recsys_core.ingest._clean import QUARANTINE_SCHEMA, clean, clean_days
from recsys_core.ingest._errors import (
    LandingError,
    LandingReadError,
    LandingSchemaError,
    LandingWarning,
    MissingPartitionError,
)
from recsys_core.ingest._events import EVENT_TYPE_SYNONYMS
from recsys_core.ingest._ingest import IngestResult, ingest
from recsys_core.ingest._load import (
    CATALOG_COLUMNS,
    load_catalog,
    load_clean_events,
    pending_clean_dates,
)
from recsys_core.ingest._read import (
    DATA_EXTENSIONS,
    landing_dates,
    partition_dir,
    read_landing_partition,
)

__all__ = [
    "CATALOG_COLUMNS",
    "DATA_EXTENSIONS",
    "EVENT_TYPE_SYNONYMS",
    "QUARANTINE_SCHEMA",
    "IngestResult",
    "LandingError",
    "LandingReadError",
    "LandingSchemaError",
    "LandingWarning",
    "MissingPartitionError",
    "clean",
    "clean_days",
    "ingest",
    "landing_dates",
    "load_catalog",
    "load_clean_events",
    "partition_dir",
    "pending_clean_dates",
    "read_landing_partition",
]
