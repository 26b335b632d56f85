"""The warehouse layout: the one place that knows where every table lives.

::

    <warehouse>/
      raw/{events,items}/date=YYYY-MM-DD/part-0.parquet     landing rows + source file/row
      clean/{events,items}/date=YYYY-MM-DD/part-0.parquet   validated, normalised, de-duplicated
      quarantine/date=YYYY-MM-DD/part-0.parquet             invalid rows with a `reason`
      manifests/date=YYYY-MM-DD.json                        counts that reconcile
      features/item_embeddings/part-0.parquet               item vectors, incremental
      models/<model_id>/                                    registry entries; models/champion.json
      tuning/<model>/trials.parquet                         every Bayesian-search trial
      evaluation/run_date=YYYY-MM-DD/metrics.json
      recommendations/run_date=YYYY-MM-DD/part-0.parquet    the system of record
      reports/run_date=YYYY-MM-DD/report.html
      runs/run_date=YYYY-MM-DD.json                         written last: the date is complete
      _locks/                                               one lock file per run date

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

__all__ = ["RunLockedError", "Warehouse", "parse_date", "partition_dates"]

_PART_RE = re.compile(r"^(?:date|run_date)=(\d{4}-\d{2}-\d{2})$")


class RunLockedError(RuntimeError):
    """Another run holds the lock for the same run date."""


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


def partition_dates(root: Path) -> list[dt.date]:
    """Sorted dates of the ``date=YYYY-MM-DD`` (or ``run_date=``) folders/files directly under ``root``."""
    if not root.is_dir():
        return []
    out = []
    for child in root.iterdir():
        name = child.name.removesuffix(".json")
        m = _PART_RE.match(name)
        if m:
            try:
                out.append(dt.date.fromisoformat(m.group(1)))
            except ValueError:
                continue
    return sorted(out)


@dataclass(frozen=True)
class Warehouse:
    """Paths of every table under one warehouse root."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # ---- partitioned tables -------------------------------------------------------------------
    def raw(self, kind: str, date: dt.date) -> Path:
        return self.root / "raw" / kind / f"date={date.isoformat()}" / "part-0.parquet"

    def clean(self, kind: str, date: dt.date) -> Path:
        return self.root / "clean" / kind / f"date={date.isoformat()}" / "part-0.parquet"

    def quarantine(self, date: dt.date) -> Path:
        return self.root / "quarantine" / f"date={date.isoformat()}" / "part-0.parquet"

    def manifest(self, date: dt.date) -> Path:
        return self.root / "manifests" / f"date={date.isoformat()}.json"

    def recommendations(self, run_date: dt.date) -> Path:
        return self.root / "recommendations" / f"run_date={run_date.isoformat()}" / "part-0.parquet"

    def evaluation(self, run_date: dt.date) -> Path:
        return self.root / "evaluation" / f"run_date={run_date.isoformat()}" / "metrics.json"

    def report_dir(self, run_date: dt.date) -> Path:
        return self.root / "reports" / f"run_date={run_date.isoformat()}"

    def run_marker(self, run_date: dt.date) -> Path:
        return self.root / "runs" / f"run_date={run_date.isoformat()}.json"

    # ---- unpartitioned ------------------------------------------------------------------------
    @property
    def item_embeddings(self) -> Path:
        return self.root / "features" / "item_embeddings" / "part-0.parquet"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def tuning_dir(self) -> Path:
        return self.root / "tuning"

    # ---- listings -----------------------------------------------------------------------------
    def raw_dates(self, kind: str) -> list[dt.date]:
        return [d for d in partition_dates(self.root / "raw" / kind) if self.raw(kind, d).is_file()]

    def clean_dates(self, kind: str) -> list[dt.date]:
        return [
            d for d in partition_dates(self.root / "clean" / kind) if self.clean(kind, d).is_file()
        ]

    def clean_files(self, kind: str, until: dt.date, since: dt.date | None = None) -> list[Path]:
        """Clean partition files dated in ``[since, until]`` — never after ``until``."""
        return [
            self.clean(kind, d)
            for d in self.clean_dates(kind)
            if d <= until and (since is None or d >= since)
        ]

    def completed_run_dates(self) -> list[dt.date]:
        return partition_dates(self.root / "runs")

    # ---- concurrency --------------------------------------------------------------------------
    @contextmanager
    def lock(self, name: str, *, wait: bool = False) -> Iterator[Path]:
        """An exclusive advisory lock (``flock``) on ``_locks/<name>.lock``.

        With ``wait=False`` a held lock raises :class:`RunLockedError` at once; the OS releases the
        lock when the holder exits, even on SIGKILL, so a crashed run never blocks the next one.
        """
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
