"""Ingest: copy new or changed landing partitions (up to the run date) into the warehouse's raw tables.

Raw rows are the landing rows as strings plus lineage (``_source_file``, ``_source_row``), one
Parquet file (zstd, written atomically) per kind and date. Its footer (Parquet key-value metadata,
key :data:`RECORD_KEY`) records every landing file that partition was built from (name relative
to the landing root, size, modification time in ns and a BLAKE2b content hash) and its late
history: data and record are one object, written in one step (one upload on an object store).
Warehouses written before kept the record beside the Parquet file in ``_landing_files.json``;
it is still read for a partition whose footer has none, and deleted when the partition is
rewritten.

Each call lists every landing partition dated ``<= run_date`` and compares it with that record
(size and mtime first; the hash only when those differ): a partition not in raw yet, or one whose
file set changed (a **late** file: new, changed or removed since it was ingested) is read again
whole and its raw partition rebuilt from all its current files, so a changed file is re-read,
never counted twice. Late files are named in the result, a :class:`LandingWarning` and the
record (and from there in the date's manifest). ``force`` also rebuilds ``run_date``. Partitions
dated after the run date are never opened, so a run for date D gives the same result whatever
landed later.

Every other entry under ``events/`` or ``items/`` (a misnamed folder, a stray file) fails the
call naming it (``unrecognised="fail"``), or with ``"report"`` is listed in the result and a
warning.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from recsys_core.ingest._batch import read_partitions
from recsys_core.ingest._errors import LandingLayoutError, LandingWarning, MissingPartitionError
from recsys_core.ingest._load import write_raw_partition
from recsys_core.ingest._read import (
    KINDS,
    LandingFile,
    landing_fingerprint,
    partition_dir,
    scan_landing,
)
from recsys_core.io import (
    CorruptFileError,
    Fence,
    Warehouse,
    atomic_write_json,
    check_fence,
    concurrently,
    delete,
    location,
    read_json,
    read_parquet_notes,
)

__all__ = [
    "IO_THREADS",
    "RECORD_KEY",
    "IngestPlan",
    "IngestResult",
    "IngestedSlice",
    "commit_ingest",
    "date_batches",
    "ingest",
    "ingest_partitions",
    "landing_record",
    "landing_record_path",
    "plan_ingest",
]

#: Partitions read and written at once. The work is mostly waiting for the disk (each atomic
#: write syncs the file and its folder), so threads overlap those waits.
IO_THREADS = 8
#: Partitions read together (one multi-file scan per CSV header) before they are written: at
#: most this many dates and at most ``batch_mib`` MiB of landing files (one bigger date alone).
BATCH_DAYS = 512
#: ``IngestConfig.batch_mib``'s default.
BATCH_MIB = 128.0
#: Key of the landing record in a raw partition's Parquet footer (JSON text).
RECORD_KEY = "recsys.landing_record"


@dataclass(frozen=True)
class IngestResult:
    """What one :func:`ingest` call wrote.

    ``dates``: kind -> ISO dates written to raw this call (ascending), first ingests and
    re-ingests alike. ``rows``: kind -> rows written. ``files``: landing files read.
    ``skipped``: kind -> partitions already in raw and unchanged (not read). ``notes``:
    dropped-column messages (also emitted as :class:`LandingWarning`). ``late``: late landing
    files, ``"<path> (new|changed|removed)"``. ``late_dates``: kind -> ISO dates re-ingested for
    them. ``unrecognised``: landing paths that are not partitions (only with
    ``unrecognised="report"``; otherwise they raise). ``vanished``: raw partitions whose landing
    folder has no data file any more (kept as they are).
    """

    dates: dict[str, list[str]]
    rows: dict[str, int]
    files: int
    skipped: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    late: tuple[str, ...] = ()
    late_dates: dict[str, list[str]] = field(default_factory=dict)
    unrecognised: tuple[str, ...] = ()
    vanished: tuple[str, ...] = ()

    @property
    def all_dates(self) -> list[dt.date]:
        """Every date written (events or items), ascending: the dates to clean next."""
        return sorted({dt.date.fromisoformat(d) for ds in self.dates.values() for d in ds})


def landing_record_path(warehouse: Warehouse, kind: str, day: dt.date) -> Path:
    """Where warehouses written before the record moved into the Parquet footer kept the landing
    files of one raw partition (beside its Parquet file); read only for such partitions."""
    return warehouse.raw(kind, day).parent / "_landing_files.json"


def landing_record(warehouse: Warehouse, kind: str, day: dt.date) -> dict[str, Any] | None:
    """The record of the landing files one raw partition was built from, or None (no raw
    partition, a damaged one, or one written before records were kept: ingest reads it again).

    From the partition's Parquet footer: on an object store none request when a fresh listing
    shows the version this process wrote (clean reads back what ingest wrote), else one. A
    partition written by an earlier version has no record there: its ``_landing_files.json``.
    """
    try:
        text = read_parquet_notes(warehouse.raw(kind, day)).get(RECORD_KEY)
    except (FileNotFoundError, CorruptFileError):
        return None
    if text is not None:
        return json.loads(text)
    try:
        return read_json(landing_record_path(warehouse, kind, day), cached=True)
    except FileNotFoundError:
        return None


def _index_path(warehouse: Warehouse, kind: str) -> Path:
    """One file per kind listing every raw partition's landing files as ``[name, size,
    mtime_ns]``: lets a run see that nothing changed without opening thousands of records. It is
    only a cache of the per-partition records, which decide whenever it disagrees."""
    return warehouse.root / "raw" / kind / "_landing_index.json"


def _read_index(warehouse: Warehouse, kind: str) -> dict[str, list[list[Any]]]:
    try:  # one GET on an object store (absent: not found), no existence check first
        return read_json(_index_path(warehouse, kind))
    except (FileNotFoundError, CorruptFileError):  # a cache: rebuilt from the records
        return {}


def _listed(files: list[LandingFile]) -> list[list[Any]]:
    return [[f.rel, f.size, f.mtime_ns] for f in files]


def _fingerprint(f: LandingFile, digest: str) -> dict[str, Any]:
    return {"name": f.rel, "size": f.size, "mtime_ns": f.mtime_ns, "blake2b": digest}


def _compare(
    recorded: dict[str, Any], files: list[LandingFile]
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """``(changes, known digests)``: ``(name, "new"|"changed"|"removed")`` for every file that
    differs from the record; the digest of every unchanged file (hashed only when its size or
    mtime differ from the record's)."""
    before = {e["name"]: e for e in recorded.get("files", [])}
    changes: list[tuple[str, str]] = []
    digests: dict[str, str] = {}
    for f in files:
        old = before.get(f.rel)
        if old is None:
            changes.append((f.rel, "new"))
        elif old["size"] == f.size and old["mtime_ns"] == f.mtime_ns:
            digests[f.rel] = old["blake2b"]
        elif (digest := landing_fingerprint(f.path)) == old["blake2b"]:
            digests[f.rel] = digest  # touched, same bytes: not late
        else:
            changes.append((f.rel, "changed"))
    current = {f.rel for f in files}
    changes += [(name, "removed") for name in sorted(before) if name not in current]
    return changes, digests


@dataclass(frozen=True)
class IngestPlan:
    """What one ingest will write, decided from one listing of the landing zone and of raw
    (:func:`plan_ingest`); :func:`ingest_partitions` writes any slice of ``todo`` (slices are
    independent: one raw partition, its record in its footer, each, so they may run on
    different machines), and :func:`commit_ingest` then writes the index and says what was done.

    ``todo``: ``(kind, date)`` partitions to (re)build, events first, each kind by date.
    ``files``: the listed landing files of every partition in ``todo`` or ``refresh``.
    ``known``: partitions of ``todo`` already in raw. ``late_before``: the late history their
    records held (it carries on into the rebuilt partition's record). ``side_records``:
    partitions of ``todo`` whose record an earlier version kept beside them in
    ``_landing_files.json`` (deleted once the partition is rewritten with it in its footer).
    """

    landing: Any
    run_date: dt.date
    todo: tuple[tuple[str, dt.date], ...]
    files: dict[tuple[str, dt.date], list[LandingFile]]
    known: frozenset[tuple[str, dt.date]]
    late_before: dict[tuple[str, dt.date], list[dict[str, str]]]
    side_records: frozenset[tuple[str, dt.date]]
    changes: dict[tuple[str, dt.date], list[tuple[str, str]]]
    refresh: tuple[tuple[str, dt.date, dict[str, str]], ...]
    index: dict[str, dict[str, list[list[Any]]]]
    index_stale: dict[str, bool]
    available: dict[str, int]
    late: tuple[str, ...]
    late_dates: dict[str, list[str]]
    unrecognised: tuple[str, ...]
    vanished: tuple[str, ...]

    def slices(self, n: int) -> list[tuple[tuple[str, dt.date], ...]]:
        """``todo`` cut into at most ``n`` contiguous, non-empty slices of near-equal size."""
        n = max(1, min(n, len(self.todo)))
        size, extra = divmod(len(self.todo), n)
        out, start = [], 0
        for i in range(n):
            stop = start + size + (1 if i < extra else 0)
            if stop > start:
                out.append(self.todo[start:stop])
            start = stop
        return out


@dataclass(frozen=True)
class IngestedSlice:
    """What :func:`ingest_partitions` wrote for one slice of a plan: per partition
    ``(kind, date, rows, landing files read, notes)``."""

    written: tuple[tuple[str, dt.date, int, int, tuple[str, ...]], ...]


def ingest(
    landing: Path,
    warehouse: Warehouse,
    run_date: dt.date,
    *,
    force: bool = False,
    require_run_date: bool = True,
    unrecognised: Literal["fail", "report"] = "fail",
    batch_mib: float = BATCH_MIB,
) -> IngestResult:
    """Write every landing partition dated ``<= run_date`` that raw lacks or that changed since
    it was ingested (see module doc): :func:`plan_ingest`, :func:`ingest_partitions` of the whole
    plan (in passes of at most ``batch_mib`` MiB of landing files), :func:`commit_ingest`.

    ``force`` re-ingests ``run_date``'s partitions whether they changed or not. If
    ``require_run_date`` and ``run_date`` has no events partition, raises
    :class:`MissingPartitionError` naming the expected path. Unrecognised landing paths raise
    :class:`LandingLayoutError` naming them unless ``unrecognised="report"``. Both checks come
    before anything is written.
    """
    plan = plan_ingest(
        landing,
        warehouse,
        run_date,
        force=force,
        require_run_date=require_run_date,
        unrecognised=unrecognised,
    )
    return commit_ingest(
        plan, warehouse, [ingest_partitions(plan, warehouse, plan.todo, batch_mib=batch_mib)]
    )


def plan_ingest(
    landing: Path,
    warehouse: Warehouse,
    run_date: dt.date,
    *,
    force: bool = False,
    require_run_date: bool = True,
    unrecognised: Literal["fail", "report"] = "fail",
) -> IngestPlan:
    """List the landing zone up to ``run_date`` and raw's records, and decide what to write.
    Writes nothing; raises as :func:`ingest` does."""
    landing = location(landing)
    scans = {kind: scan_landing(landing, kind, until=run_date) for kind in KINDS}
    strays = tuple(p for kind in KINDS for p in scans[kind].unrecognised)
    if strays and unrecognised == "fail":
        raise LandingLayoutError(
            f"landing zone {landing}: {len(strays)} path(s) are not partition folders "
            f"<kind>/date=YYYY-MM-DD with a real date, or are stray files: "
            f"{', '.join(strays)}; rename or remove them (or prefix the name with '_'), or set "
            '[ingest] unrecognised_paths = "report" to only report them'
        )
    available = {kind: scans[kind].partitions for kind in KINDS}
    if require_run_date and run_date not in available["events"]:
        path = partition_dir(landing, "events", run_date)
        raise MissingPartitionError(
            f"events partition for run date {run_date} is missing: {path} "
            f"{'has no data file' if path.is_dir() else 'does not exist'}; land the day's files "
            "and run it again (runner.late_data_retries and late_data_delay_seconds make ingest "
            "wait for a late drop), or run a date that has landed"
        )
    todo: list[tuple[str, dt.date]] = []
    late: list[str] = []
    late_dates: dict[str, list[str]] = {kind: [] for kind in KINDS}
    changes_of: dict[tuple[str, dt.date], list[tuple[str, str]]] = {}
    refresh: list[tuple[str, dt.date, dict[str, str]]] = []
    late_before: dict[tuple[str, dt.date], list[dict[str, str]]] = {}
    indexes = concurrently(lambda kind: _read_index(warehouse, kind), KINDS)  # one round
    index = dict(zip(KINDS, indexes, strict=True))
    index_stale = dict.fromkeys(KINDS, False)
    ingested = {kind: set(warehouse.raw_dates(kind)) for kind in KINDS}  # one listing each
    side = {  # (the same listings, on an object store within a step)
        kind: set(warehouse.dates_with(warehouse.root / "raw" / kind, "_landing_files.json"))
        for kind in KINDS
    }
    for kind in KINDS:
        for day, files in available[kind].items():
            key = day.isoformat()
            if day not in ingested[kind]:
                todo.append((kind, day))
                continue
            if index[kind].get(key) == _listed(files):  # the fast path: nothing changed
                if force and day == run_date:
                    todo.append((kind, day))
                    late_before[(kind, day)] = _late(landing_record(warehouse, kind, day))
                continue
            recorded = landing_record(warehouse, kind, day)
            if recorded is None:  # ingested before records were kept: read it again
                todo.append((kind, day))
                continue
            late_before[(kind, day)] = _late(recorded)
            changes, digests = _compare(recorded, files)
            if changes:
                todo.append((kind, day))
                changes_of[(kind, day)] = changes
                late += [f"{name} ({change})" for name, change in changes]
                late_dates[kind].append(key)
            elif force and day == run_date:
                todo.append((kind, day))
            elif any(
                e["mtime_ns"] != f.mtime_ns for e, f in zip(recorded["files"], files, strict=True)
            ):
                # touched only, same bytes: the index takes the new times (so the next run
                # takes the fast path); the record keeps those of the files ingest read
                refresh.append((kind, day, digests))
            else:  # the index lacked it (first run with an index, or a concurrent run's update)
                index[kind][key] = _listed(files)
                index_stale[kind] = True
    vanished = tuple(
        f"{kind}/date={day.isoformat()}"
        for kind in KINDS
        for day in map(dt.date.fromisoformat, sorted(index[kind]))
        if day <= run_date and day not in available[kind]
    )
    wanted = set(todo) | {(kind, day) for kind, day, _ in refresh}
    return IngestPlan(
        landing=landing,
        run_date=run_date,
        todo=tuple(todo),
        files={(kind, day): available[kind][day] for kind, day in sorted(wanted)},
        known=frozenset((kind, day) for kind, day in todo if day in ingested[kind]),
        late_before={part: late_before[part] for part in todo if part in late_before},
        side_records=frozenset((kind, day) for kind, day in todo if day in side[kind]),
        changes=changes_of,
        refresh=tuple(refresh),
        index=index,
        index_stale=index_stale,
        available={kind: len(available[kind]) for kind in KINDS},
        late=tuple(late),
        late_dates={k: v for k, v in late_dates.items() if v},
        unrecognised=strays,
        vanished=vanished,
    )


def date_batches(
    days: list[dt.date],
    sizes: Mapping[dt.date, int],
    limit: int,
    breaks: set[dt.date] | frozenset[dt.date] = frozenset(),
    *,
    max_days: int | None = None,
) -> list[list[dt.date]]:
    """Consecutive runs of ``days`` whose sizes sum to at most ``limit`` (a bigger day: alone),
    of at most ``max_days`` dates; a date in ``breaks`` always starts a new run. Ingest reads
    and clean cleans the dates in such passes, so memory follows a pass, not the backlog."""
    batches: list[list[dt.date]] = []
    total = 0
    for d in days:
        full = max_days is not None and batches and len(batches[-1]) >= max_days
        if not batches or total + sizes[d] > limit or d in breaks or full:
            batches.append([])
            total = 0
        batches[-1].append(d)
        total += sizes[d]
    return batches


def ingest_partitions(
    plan: IngestPlan,
    warehouse: Warehouse,
    parts: tuple[tuple[str, dt.date], ...],
    *,
    batch_mib: float = BATCH_MIB,
    fence: Fence | None = None,
) -> IngestedSlice:
    """Read and write the raw partitions ``parts`` (a slice of ``plan.todo``), each with its
    landing record in its footer, in date-ordered passes of at most ``batch_mib`` MiB of landing
    files (peak memory follows a pass, not the backlog). Touches nothing else, so slices can run
    at once on different machines. ``fence``: the run's lock, checked before each pass's writes
    where this process does not hold its lease (:func:`recsys_core.io.check_fence`)."""
    written: list[tuple[str, dt.date, int, int, tuple[str, ...]]] = []
    max_bytes = max(1, int(batch_mib * 2**20))
    with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:  # overlaps the fsync waits
        for kind in KINDS:
            mine = [day for k, day in parts if k == kind]
            sizes = {day: sum(f.size for f in plan.files[(kind, day)]) for day in mine}
            for days in date_batches(mine, sizes, max_bytes, max_days=BATCH_DAYS):
                listed = [plan.files[(kind, day)] for day in days]
                # hashed before reading: a file rewritten meanwhile shows as changed next time
                digests = list(
                    pool.map(lambda fs: [landing_fingerprint(f.path) for f in fs], listed)
                )
                read = read_partitions(plan.landing, kind, days)
                targets = [warehouse.raw(kind, day) for day in days]
                notes = [
                    {
                        RECORD_KEY: _record(
                            files,
                            digs,
                            plan.late_before.get((kind, day), []),
                            plan.changes.get((kind, day), []),
                        )
                    }
                    for day, files, digs in zip(days, listed, digests, strict=True)
                ]
                check_fence(fence, targets[0])
                list(pool.map(write_raw_partition, [df for df, _, _ in read], targets, notes))
                for day in days:  # the footer now holds the record: the side file goes
                    if (kind, day) in plan.side_records:
                        delete(landing_record_path(warehouse, kind, day))
                for day, (df, file_notes, n) in zip(days, read, strict=True):
                    written.append((kind, day, df.height, n, tuple(file_notes)))
    return IngestedSlice(written=tuple(written))


def commit_ingest(
    plan: IngestPlan, warehouse: Warehouse, slices: list[IngestedSlice]
) -> IngestResult:
    """After every slice of ``plan`` is written: write the index (with the new times of touched
    files), warn about notes, late, unrecognised and vanished paths, and return the whole
    ingest's result.
    Raises ``ValueError`` if the slices do not cover ``plan.todo`` exactly."""
    order = {part: i for i, part in enumerate(plan.todo)}
    written = sorted((w for s in slices for w in s.written), key=lambda w: order[w[:2]])
    if [w[:2] for w in written] != list(plan.todo):
        missing = sorted(set(plan.todo) - {w[:2] for w in written})
        raise ValueError(
            f"ingest commit: the slices do not cover the plan (missing {missing[:5]}, "
            f"{len(written)} written for {len(plan.todo)} planned)"
        )
    dates: dict[str, list[str]] = {kind: [] for kind in KINDS}
    rows = dict.fromkeys(KINDS, 0)
    for kind, day, n, _, _ in written:
        dates[kind].append(day.isoformat())
        rows[kind] += n
    notes = [note for w in written for note in w[4]]

    def write_index(kind: str) -> None:
        index = dict(plan.index[kind])
        done = [w[1] for w in written if w[0] == kind] + [
            day for k, day, _ in plan.refresh if k == kind
        ]
        for day in done:
            index[day.isoformat()] = _listed(plan.files[(kind, day)])
        if done or plan.index_stale[kind]:
            atomic_write_json(_index_path(warehouse, kind), dict(sorted(index.items())))

    concurrently(write_index, KINDS)  # one round of writes
    skipped = {kind: plan.available[kind] - len(dates[kind]) for kind in KINDS}
    _warn("; ".join(notes[:5]) + (f"; ... ({len(notes) - 5} more)" if len(notes) > 5 else ""))
    if plan.late:
        _warn(f"late landing files picked up (their dates re-ingested): {', '.join(plan.late)}")
    if plan.unrecognised:
        _warn(f"unrecognised landing paths (not read): {', '.join(plan.unrecognised)}")
    if plan.vanished:
        _warn(
            "ingested partitions no longer in the landing zone (raw kept): "
            + ", ".join(plan.vanished)
        )
    return IngestResult(
        dates=dates,
        rows=rows,
        files=sum(w[3] for w in written),
        skipped=skipped,
        notes=tuple(notes),
        late=plan.late,
        late_dates=plan.late_dates,
        unrecognised=plan.unrecognised,
        vanished=plan.vanished,
    )


def _warn(message: str) -> None:
    if message:
        warnings.warn(message, LandingWarning, stacklevel=3)


def _late(record: dict[str, Any] | None) -> list[dict[str, str]]:
    return list((record or {}).get("late", []))


def _record(
    files: list[LandingFile],
    digests: list[str],
    late_before: list[dict[str, str]],
    changes: list[tuple[str, str]],
) -> str:
    """One partition's landing record as JSON text (its footer note); late changes accumulate
    after ``late_before``, the history of the record it replaces."""
    late = [*late_before, *({"name": n, "change": c} for n, c in changes)]
    record = {
        "files": [_fingerprint(f, d) for f, d in zip(files, digests, strict=True)],
        "late": late,
    }
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
