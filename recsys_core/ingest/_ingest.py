"""Ingest: copy new landing partitions (up to the run date) into the warehouse's raw tables.

Raw rows are the landing rows as strings plus lineage (``_source_file``, ``_source_row``), one
Parquet file (zstd, written atomically) per kind and date. A partition already in raw is not read
again unless ``force`` is set for the run date; partitions dated after the run date are never
opened, so a run for date D gives the same result whatever landed later.
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from recsys_core.ingest._errors import LandingWarning, MissingPartitionError
from recsys_core.ingest._read import (
    KINDS,
    landing_dates,
    partition_dir,
    partition_files,
    read_partition_with_notes,
)
from recsys_core.io import Warehouse, atomic_write_parquet

__all__ = ["IngestResult", "ingest"]


@dataclass(frozen=True)
class IngestResult:
    """What one :func:`ingest` call wrote.

    ``dates``: kind -> ISO dates written to raw this call (ascending). ``rows``: kind -> rows
    written. ``files``: landing files read. ``skipped``: kind -> partitions already in raw (not
    read). ``notes``: dropped-column messages (also emitted as :class:`LandingWarning`).
    """

    dates: dict[str, list[str]]
    rows: dict[str, int]
    files: int
    skipped: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def all_dates(self) -> list[dt.date]:
        """Every date written (events or items), ascending: the dates to clean next."""
        return sorted({dt.date.fromisoformat(d) for ds in self.dates.values() for d in ds})


def ingest(
    landing: Path,
    warehouse: Warehouse,
    run_date: dt.date,
    *,
    force: bool = False,
    require_run_date: bool = True,
) -> IngestResult:
    """Write every landing partition dated ``<= run_date`` that raw does not hold yet.

    ``force`` re-ingests ``run_date``'s partitions (earlier ones are never rewritten). If
    ``require_run_date`` and ``run_date`` has no events partition, raises
    :class:`MissingPartitionError` naming the expected path (before writing anything).
    """
    landing = Path(landing)
    available = {kind: landing_dates(landing, kind, until=run_date) for kind in KINDS}
    if require_run_date and run_date not in available["events"]:
        path = partition_dir(landing, "events", run_date)
        raise MissingPartitionError(
            f"events partition for run date {run_date} is missing: {path} "
            f"{'has no data file' if path.is_dir() else 'does not exist'}; wait for the drop, "
            "or run with require_run_date=False"
        )
    dates: dict[str, list[str]] = {}
    rows: dict[str, int] = {}
    skipped: dict[str, int] = {}
    notes: list[str] = []
    n_files = 0
    for kind in KINDS:
        dates[kind], rows[kind], skipped[kind] = [], 0, 0
        for day in available[kind]:
            target = warehouse.raw(kind, day)
            if target.is_file() and not (force and day == run_date):
                skipped[kind] += 1
                continue
            df, file_notes = read_partition_with_notes(landing, kind, day)
            n_files += len(partition_files(partition_dir(landing, kind, day)))
            atomic_write_parquet(df.rechunk(), target)
            dates[kind].append(day.isoformat())
            rows[kind] += df.height
            notes.extend(file_notes)
    if notes:
        shown = "; ".join(notes[:5]) + (f"; ... ({len(notes) - 5} more)" if len(notes) > 5 else "")
        warnings.warn(shown, LandingWarning, stacklevel=2)
    return IngestResult(dates=dates, rows=rows, files=n_files, skipped=skipped, notes=tuple(notes))
