"""The warehouse layout: the one place that knows where every table lives.

::

    <warehouse>/
      raw/{events,items}/date=YYYY-MM-DD/part-0.parquet     landing rows + source file/row
      clean/{events,items}/date=YYYY-MM-DD/part-0.parquet   validated, normalised, de-duplicated
      quarantine/date=YYYY-MM-DD/part-0.parquet             invalid rows with a `reason`
      manifests/date=YYYY-MM-DD.json                        counts that reconcile
      checkpoints/{catalog,run_metrics,events}/             object stores: folds so far
      features/item_embeddings/part-0.parquet               item vectors, incremental
      models/<model_id>/                                    registry entries; models/champion.json
      tuning/<model>/trials.parquet                         every Bayesian-search trial
      evaluation/run_date=YYYY-MM-DD/metrics.json
      recommendations/run_date=YYYY-MM-DD/part-0.parquet    the system of record
      reports/run_date=YYYY-MM-DD/report.html
      abtest/<experiment>/experiment.json, arms/, assignments/, nights.parquet, readout.json
      runs/run_date=YYYY-MM-DD.json                         written last: the date is complete
      _locks/                                               one lock file per run date

The root is a local path or an object-store URL (``s3://bucket/prefix``, ``gs://``, ``az://``):
see :mod:`recsys_core.io._storage`. Every partition is one file, written in one atomic step (a
rename on disk, a single upload on an object store), and the run marker is written last. The lock
is ``flock`` on disk and a leased lock object created with ``If-None-Match`` on an object store.

Ids from data are never used to build paths: only dates and generated model ids are.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from recsys_core.io._lease import RunLockedError, lease_lock
from recsys_core.io._storage import (
    Location,
    exists,
    files_under,
    files_with_versions,
    is_remote,
    list_names,
    location,
)

__all__ = ["RunLockedError", "Warehouse", "parse_date", "partition_dates"]


_PART_RE = re.compile(r"^(?:date|run_date)=(\d{4}-\d{2}-\d{2})$")


def parse_date(value: str | dt.date | dt.datetime) -> dt.date:
    """Parse ``YYYY-MM-DD`` (or pass a date through) with a clear error."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(f"run date {value!r} is not a date, expected YYYY-MM-DD") from None


def partition_dates(root: Any) -> list[dt.date]:
    """Sorted dates of the ``date=YYYY-MM-DD`` (or ``run_date=``) folders/files directly under ``root``."""
    out = []
    for child in list_names(location(root)):
        name = child.removesuffix(".json")
        m = _PART_RE.match(name)
        if m:
            try:
                out.append(dt.date.fromisoformat(m.group(1)))
            except ValueError:
                continue
    return sorted(out)


class PartitionStat(NamedTuple):
    """One partition file as a listing shows it."""

    size: int
    mtime_ns: int
    version: str | None  # an object's ETag; None on local disk


@dataclass(frozen=True)
class Warehouse:
    """Paths of every table under one warehouse root (a local folder or an object-store URL)."""

    root: Location

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", location(self.root))

    @property
    def remote(self) -> bool:
        """Whether the warehouse is on an object store."""
        return is_remote(self.root)

    # ---- partitioned tables (each path joined in one step: on an object store every ``/`` makes
    # a new UPath, a quarter of a millisecond, and a night builds thousands of these paths) --------
    def raw(self, kind: str, date: dt.date) -> Location:
        return self.root / f"raw/{kind}/date={date.isoformat()}/part-0.parquet"

    def clean(self, kind: str, date: dt.date) -> Location:
        return self.root / f"clean/{kind}/date={date.isoformat()}/part-0.parquet"

    def quarantine(self, date: dt.date) -> Location:
        return self.root / f"quarantine/date={date.isoformat()}/part-0.parquet"

    def manifest(self, date: dt.date) -> Location:
        return self.root / f"manifests/date={date.isoformat()}.json"

    @property
    def raw_versions_index(self) -> Location:
        """On an object store: ``{date: {kind: raw version}}``, the raw partitions (by ETag) each
        date's manifest was cleaned from (see :func:`recsys_core.ingest.pending_clean_dates`)."""
        return self.root / "manifests/_raw_versions.json"

    def recommendations(self, run_date: dt.date) -> Location:
        return self.root / f"recommendations/run_date={run_date.isoformat()}/part-0.parquet"

    def evaluation(self, run_date: dt.date) -> Location:
        return self.root / f"evaluation/run_date={run_date.isoformat()}/metrics.json"

    def report_dir(self, run_date: dt.date) -> Location:
        return self.root / f"reports/run_date={run_date.isoformat()}"

    def run_marker(self, run_date: dt.date) -> Location:
        return self.root / f"runs/run_date={run_date.isoformat()}.json"

    # ---- A/B tests (experiment names are validated by the config: safe as folder names) -------
    def abtest_dir(self, experiment: str) -> Location:
        return self.root / "abtest" / experiment

    def abtest_definition(self, experiment: str) -> Location:
        return self.abtest_dir(experiment) / "experiment.json"

    def abtest_arms(self, experiment: str, run_date: dt.date) -> Location:
        return self.abtest_dir(experiment) / "arms" / f"run_date={run_date.isoformat()}.json"

    def assignments(self, experiment: str, run_date: dt.date) -> Location:
        return (
            self.abtest_dir(experiment)
            / "assignments"
            / f"run_date={run_date.isoformat()}"
            / "part-0.parquet"
        )

    def assignment_dates(self, experiment: str) -> list[dt.date]:
        root = self.abtest_dir(experiment) / "assignments"
        return [d for d in partition_dates(root) if exists(self.assignments(experiment, d))]

    def abtest_readout(self, experiment: str) -> Location:
        return self.abtest_dir(experiment) / "readout.json"

    def abtest_nights(self, experiment: str) -> Location:
        return self.abtest_dir(experiment) / "nights.parquet"

    # ---- unpartitioned ------------------------------------------------------------------------
    @property
    def item_embeddings(self) -> Location:
        return self.root / "features" / "item_embeddings" / "part-0.parquet"

    def checkpoints(self, name: str) -> Location:
        """Folder of one fold's checkpoints (object stores only; see
        :mod:`recsys_core.io._checkpoint`): ``catalog``, ``run_metrics``, ``events``."""
        return self.root / "checkpoints" / name

    @property
    def models_dir(self) -> Location:
        return self.root / "models"

    @property
    def tuning_dir(self) -> Location:
        return self.root / "tuning"

    # ---- listings -----------------------------------------------------------------------------
    def dates_with(self, folder: Location, filename: str) -> list[dt.date]:
        """Dates of ``folder/date=D/filename`` files, from one listing (one request remotely)."""
        out = set()
        for rel in files_under(folder):
            part, _, name = rel.partition("/")
            m = _PART_RE.match(part)
            if m and name == filename:
                with contextlib.suppress(ValueError):
                    out.add(dt.date.fromisoformat(m.group(1)))
        return sorted(out)

    def partition_stats(self, folder: Location) -> dict[dt.date, PartitionStat]:
        """``{date: (size, mtime_ns, version)}`` of the ``folder/date=D/part-0.parquet`` files (or
        the ``folder/date=D.json`` files), from one listing: on an object store one request
        instead of one per date (``version``: the object's ETag; None on local disk)."""
        out = {}
        for rel, size, mtime, version in files_with_versions(folder):
            part, _, name = rel.partition("/")
            m = _PART_RE.match(part.removesuffix(".json"))
            if m and (name == "part-0.parquet" or (not name and part.endswith(".json"))):
                with contextlib.suppress(ValueError):
                    out[dt.date.fromisoformat(m.group(1))] = PartitionStat(size, mtime, version)
        return out

    def raw_dates(self, kind: str) -> list[dt.date]:
        return self.dates_with(self.root / "raw" / kind, "part-0.parquet")

    def clean_dates(self, kind: str) -> list[dt.date]:
        return self.dates_with(self.root / "clean" / kind, "part-0.parquet")

    def completed_run_dates(self) -> list[dt.date]:
        return sorted(self.partition_stats(self.root / "runs"))

    # ---- concurrency --------------------------------------------------------------------------
    @contextmanager
    def lock(self, name: str, *, wait: bool = False) -> Iterator[Any]:
        """An exclusive lock on ``_locks/<name>.lock``.

        Local disk: an advisory ``flock``; the OS releases it when the holder exits, even on
        SIGKILL. Object store: a lock object created with ``If-None-Match: *`` holding the holder's
        name and a lease that a heartbeat renews (``If-Match``); a killed holder's lease expires
        (``RECSYS_LOCK_LEASE_SECONDS``, default 300) and the next run takes the lock over.
        With ``wait=False`` a held lock raises :class:`RunLockedError` naming the holder.
        """
        if self.remote:
            with lease_lock(self.root / "_locks" / f"{name}.lock", wait=wait) as loc:
                yield loc
            return
        lock_dir = self.root / "_locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        path = lock_dir / f"{name}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                holder = ""
                with contextlib.suppress(OSError):
                    holder = Path(path).read_text().strip()
                raise RunLockedError(
                    f"another run holds {path} ({holder or 'unknown holder'}); wait for it to "
                    "finish, or run a different date"
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"pid={os.getpid()}".encode())
            yield path
        finally:
            os.close(fd)
