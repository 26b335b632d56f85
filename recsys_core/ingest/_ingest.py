"""Ingest: copy new landing partitions (up to the run date) into the warehouse's raw tables.

Raw rows are the landing rows as strings plus lineage (``_source_file``, ``_source_row``), one
Parquet file (zstd, written atomically) per kind and date. A partition already in raw is not read
again unless ``force`` is set for the run date; partitions dated after the run date are never
opened, so a run for date D gives the same result whatever landed later.
"""

from __future__ import annotations

import datetime as dt
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from recsys_core.ingest._batch import read_partitions
from recsys_core.ingest._errors import LandingWarning, MissingPartitionError
from recsys_core.ingest._load import write_partition
from recsys_core.ingest._read import KINDS, landing_dates, partition_dir
from recsys_core.io import Warehouse

__all__ = ["IO_THREADS", "IngestResult", "ingest"]

#: Partitions read and written at once. The work is mostly waiting for the disk (each atomic
#: write syncs the file and its folder), so threads overlap those waits.
IO_THREADS = 8
#: Partitions read together (one multi-file scan per CSV header) before they are written.
BATCH_DAYS = 512


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
    todo = {
        kind: [
            day
            for day in available[kind]
            if force and day == run_date or not warehouse.raw(kind, day).is_file()
        ]
        for kind in KINDS
    }
    dates: dict[str, list[str]] = {kind: [] for kind in KINDS}
    rows = dict.fromkeys(KINDS, 0)
    notes: list[str] = []
    n_files = 0
    with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:  # overlaps the fsync waits
        for kind in KINDS:
            for start in range(0, len(todo[kind]), BATCH_DAYS):
                days = todo[kind][start : start + BATCH_DAYS]
                parts = read_partitions(landing, kind, days)
                targets = [warehouse.raw(kind, day) for day in days]
                list(pool.map(write_partition, [df for df, _, _ in parts], targets))
                for day, (df, file_notes, n) in zip(days, parts, strict=True):
                    dates[kind].append(day.isoformat())
                    rows[kind] += df.height
                    notes.extend(file_notes)
                    n_files += n
    skipped = {kind: len(available[kind]) - len(dates[kind]) for kind in KINDS}
    if notes:
        shown = "; ".join(notes[:5]) + (f"; ... ({len(notes) - 5} more)" if len(notes) > 5 else "")
        warnings.warn(shown, LandingWarning, stacklevel=2)
    return IngestResult(dates=dates, rows=rows, files=n_files, skipped=skipped, notes=tuple(notes))
