"""Reading the clean tables back: events over a date range, and the catalog as of a date."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from recsys_core.io import (
    BLOB_MAX_BYTES,
    CorruptFileError,
    Warehouse,
    atomic_write_with,
    fold_with_checkpoint,
    held_in_memory,
    is_remote,
    listed_checkpoint,
    read_bytes_many,
    read_checkpoint,
    read_json,
    read_parquet,
    read_parquet_many,
    update_if_match,
)
from recsys_core.schema import CLEAN_EVENTS_SCHEMA, CLEAN_ITEMS_SCHEMA, SOURCE_FILE, SOURCE_ROW

if TYPE_CHECKING:
    from recsys_core.io._warehouse import PartitionStat

__all__ = [
    "CATALOG_COLUMNS",
    "load_catalog",
    "load_clean_events",
    "pending_clean_dates",
    "read_clean_events_of",
    "read_dated_parquet",
    "read_raw_versions",
    "record_raw_versions",
    "write_partition",
    "write_raw_partition",
]

#: Columns of :func:`load_catalog`'s result.
CATALOG_COLUMNS: tuple[str, ...] = (
    "item_id",
    "title",
    "description",
    "categories",
    "tags",
    "updated_at",
    "date",
)


def read_dated_parquet(
    files: Mapping[dt.date, Path], schema: Mapping[str, pl.DataType], date_col: str | None = None
) -> pl.DataFrame:
    """Concatenate Parquet files (date order) with ``schema``; optionally add each file's date.

    One multi-file scan (fast for thousands of partitions); if it fails, files are read one by one
    so that a damaged file raises :class:`~recsys_core.io.CorruptFileError` naming it, and files
    whose columns differ in type (or lack one: null) are cast one by one.
    """
    days = sorted(files)
    out_schema = dict(schema)
    if date_col is not None:
        out_schema[date_col] = pl.Date()
    if not days:
        return pl.DataFrame(schema=out_schema)
    paths = [str(files[d]) for d in days]
    if is_remote(files[days[0]]):  # fetched through recsys_core.io in one concurrent batch
        return _read_dated_remote(files, days, schema, date_col)
    try:
        lf = pl.scan_parquet(paths, include_file_paths="_path", missing_columns="insert")
        df = lf.select([pl.col(c).cast(t) for c, t in schema.items()] + [pl.col("_path")]).collect()
    except Exception:  # a damaged file (named), or files whose column types differ
        frames = [read_parquet(p).with_columns(pl.lit(p).alias("_path")) for p in paths]
        df = _cast_each(frames, {**schema, "_path": pl.String()})
    return _finish(df, paths, days, date_col)


def _cast_each(frames: list[pl.DataFrame], schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """``frames`` concatenated with ``schema``, each cast on its own (a column it lacks: null):
    partitions written by different versions need not agree on their columns' types."""
    return pl.concat(
        [
            f.select(
                [(pl.col(c) if c in f.columns else pl.lit(None)).cast(t).alias(c)
                 for c, t in schema.items()]
            )
            for f in frames
        ]
    )  # fmt: skip


def _read_dated_remote(
    files: Mapping[dt.date, Path],
    days: list[dt.date],
    schema: Mapping[str, pl.DataType],
    date_col: str | None,
) -> pl.DataFrame:
    """:func:`read_dated_parquet` of object-store files: their bytes in one batch, then one
    multi-source scan (only ``schema``'s columns are decoded); each row's date from the files'
    row counts. If the scan fails, the files are read one by one: a damaged one is named, and
    files whose column types differ (written by an earlier version) are cast one by one."""
    blobs = read_bytes_many([files[d] for d in days])
    try:
        df = (
            pl.scan_parquet([io.BytesIO(b) for b in blobs], missing_columns="insert")
            .select([pl.col(c).cast(t) for c, t in schema.items()])
            .collect()
        )
        rows = [pq.read_metadata(io.BytesIO(b)).num_rows for b in blobs]
    except Exception:  # a damaged file (named), or files whose column types differ
        frames = read_parquet_many([files[d] for d in days])  # the bytes are held: no requests
        df, rows = _cast_each(frames, schema), [f.height for f in frames]
    if date_col is not None:
        index = pl.Series(np.repeat(np.arange(len(days), dtype=np.uint32), rows))
        df = df.with_columns(pl.Series(days, dtype=pl.Date).gather(index).alias(date_col))
    return df.rechunk() if df.n_chunks() > MAX_CHUNKS else df


#: Above this many chunks (about one per file read) a frame is made contiguous: thousands of
#: one-day chunks (a first MovieLens run) slow every later operation, a few dozen do not, and
#: the copy costs a third of the read.
MAX_CHUNKS = 64


def _finish(
    df: pl.DataFrame, paths: list[str], days: list[dt.date], date_col: str | None
) -> pl.DataFrame:
    if date_col is not None:
        # each row's file as its position in ``paths`` (an enum's code), then that file's date:
        # no hashed look-up of a path string per row
        index = pl.col("_path").cast(pl.Enum(paths)).to_physical()
        df = df.with_columns(pl.lit(pl.Series(days, dtype=pl.Date)).gather(index).alias(date_col))
    df = df.drop("_path")
    return df.rechunk() if df.n_chunks() > MAX_CHUNKS else df


def write_partition(df: pl.DataFrame, target: Path) -> Path:
    """Write one small partition atomically as Parquet (zstd, statistics).

    Written atomically as :func:`recsys_core.io.atomic_write_parquet` writes, but by pyarrow
    directly: about half the cost for the thousands of tiny partitions of a first MovieLens run.
    Same frame -> same bytes.
    """
    table = df.to_arrow().combine_chunks()
    atomic_write_with(
        target, lambda dest: pq.write_table(table, dest, compression="zstd", write_statistics=True)
    )
    return target


def write_raw_partition(
    df: pl.DataFrame, target: Path, notes: dict[str, str] | None = None
) -> Path:
    """Write one raw partition atomically as Parquet (zstd level 1, no statistics) with polars'
    own writer: raw partitions are read back whole only by
    :func:`~recsys_core.ingest.clean_days`, so they need not be the bytes pyarrow would write,
    nor carry statistics that no reader uses, and zstd's fastest level costs 0.7x the CPU of its
    default for 0.96x the size (2M events: 24.4 MiB). ``notes``: key-value metadata for the
    footer (the landing record; :func:`~recsys_core.io.read_parquet_notes` reads it back).
    Same frame and notes -> same bytes."""
    atomic_write_with(
        target,
        lambda dest: df.write_parquet(
            dest, compression="zstd", compression_level=1, statistics=False, metadata=notes or None
        ),
    )
    return target


def load_clean_events(
    warehouse: Warehouse,
    until: dt.date,
    since: dt.date | None = None,
    columns: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Clean events of every partition dated in ``[since, until]`` (never after ``until``),
    in date order, with :data:`~recsys_core.schema.CLEAN_EVENTS_SCHEMA` (only ``columns`` of
    it, in that order, when given: the others are not read).

    On an object store, the whole history (no ``since``) starts from a checkpoint
    (:func:`recsys_core.io.fold_with_checkpoint`), rewritten once at least
    :data:`EVENTS_REWRITE_AFTER` partitions follow the last one: a fresh worker's night reads
    one checkpoint and at most a few partitions, not one object per day of history (and the
    clean step's look-up of recent event ids reads the same checkpoint, see
    :func:`read_clean_events_of`). A read of the whole listing writes it even when this
    process holds every partition (it has just cleaned them): the next night's worker does not.
    An earlier prefix whose partitions are all held is read directly. The result is the same.
    """
    schema = CLEAN_EVENTS_SCHEMA
    if columns is not None:
        schema = {c: CLEAN_EVENTS_SCHEMA[c] for c in columns}
    if since is not None or not warehouse.remote:
        files = {d: warehouse.clean("events", d) for d in _dates(warehouse, "events", until, since)}
        return read_dated_parquet(files, schema)
    stats = warehouse.partition_stats(warehouse.root / "clean" / "events")  # one listing
    files = {d: warehouse.clean("events", d) for d in sorted(stats) if d <= until}
    # a read of the whole listing keeps the checkpoint up to date even when every partition is
    # held (a cold night's catch-up wrote them all), so that the next night's fresh worker
    # starts from it; an earlier prefix writes none, and costs nothing when held
    whole = len(files) == len(stats)
    if len(files) < EVENTS_REWRITE_AFTER or (
        not whole and all(held_in_memory(f) for f in files.values())
    ):
        return read_dated_parquet(files, schema)
    events = _fold_clean(
        warehouse,
        "events",
        stats,
        until,
        lambda df: df,
        checkpoints="events",
        tag=EVENTS_TAG,
        min_objects=EVENTS_REWRITE_AFTER,
        rewrite_after=EVENTS_REWRITE_AFTER,
        partial_writes=False,
    )
    return events if columns is None else events.select(columns)


def read_clean_events_of(
    warehouse: Warehouse,
    days: Sequence[dt.date],
    schema: Mapping[str, pl.DataType],
    date_col: str,
    listed: Mapping[dt.date, PartitionStat] | None = None,
) -> pl.DataFrame:
    """:func:`read_dated_parquet` of the clean event partitions of ``days`` (listed ones; only
    ``schema``'s columns of :data:`~recsys_core.schema.CLEAN_EVENTS_SCHEMA`, plus ``date_col``).
    ``listed``: the listing of clean events the caller made (else one is made).

    On an object store the dates that the latest events checkpoint covers (see
    :func:`load_clean_events`) come from it, one GET instead of one per date, when that saves a
    request and the checkpoint is small enough to be held once read (the training window then
    reads it from memory): the clean step's look-up of a month of event ids on a fresh worker.
    The result is the same: the checkpoint holds every row of those partitions, in order.
    """
    if listed is None:
        listed = warehouse.partition_stats(warehouse.root / "clean" / "events")  # one listing
    days = sorted(d for d in set(days) if d in listed)
    fetched = [d for d in days if not held_in_memory(warehouse.clean("events", d))]
    found = None
    if warehouse.remote and fetched:
        found = listed_checkpoint(
            warehouse.checkpoints("events"), {d: s.version for d, s in listed.items()}, EVENTS_TAG
        )
    saved = len(set(found.days) & set(fetched)) if found is not None else 0
    base = None
    if (
        found is not None
        and saved
        and (found.held or (found.size <= BLOB_MAX_BYTES and saved >= 2))
    ):
        with contextlib.suppress(FileNotFoundError, CorruptFileError):  # gone or damaged
            base = read_checkpoint(found.path, CLEAN_EVENTS_SCHEMA)
    covered = set(found.days) if found is not None and base is not None else set()
    rest = read_dated_parquet(
        {d: warehouse.clean("events", d) for d in days if d not in covered}, schema, date_col
    )
    if base is None:
        return rest
    head = base.filter(
        pl.col("date").is_in(pl.Series(sorted(covered & set(days)), dtype=pl.Date()).implode())
    ).select(*[pl.col(c).cast(t) for c, t in schema.items()], pl.col("date").alias(date_col))
    return pl.concat([head, rest])


#: The tag of the events checkpoints' names (see :func:`recsys_core.io.checkpoint_chain`).
EVENTS_TAG = "clean events v1"

#: On an object store, the checkpoint of every clean event is written again once this many
#: partitions follow it (a week of nights): each rewrite copies the whole history, each night
#: without one reads the partitions after it (see :func:`load_clean_events`).
EVENTS_REWRITE_AFTER = 7


def load_catalog(warehouse: Warehouse, as_of: dt.date) -> pl.DataFrame:
    """The latest version of every item across clean item partitions dated ``<= as_of``.

    A later partition date wins, then a later ``updated_at`` (null counts as earliest), then a
    later source file/row. A version replaces the whole row (a field left empty in a later drop is
    empty in the catalog). Sorted by ``item_id``; columns :data:`CATALOG_COLUMNS`.

    On an object store, where every partition read is a request, the call starts from a
    checkpoint (:func:`recsys_core.io.fold_with_checkpoint`): a night reads one checkpoint and
    the partitions after it, not every item partition ever written. The result is the same.
    """
    stats = warehouse.partition_stats(warehouse.root / "clean" / "items")  # one listing
    winners = _fold_clean(
        warehouse, "items", stats, as_of, _item_winners, checkpoints="catalog", tag="catalog v1"
    )
    return winners.select(CATALOG_COLUMNS)


def _fold_clean(
    warehouse: Warehouse,
    kind: str,
    stats: Mapping[dt.date, PartitionStat],
    until: dt.date,
    fold: Callable[[pl.DataFrame], pl.DataFrame],
    *,
    checkpoints: str,
    **options: Any,
) -> pl.DataFrame:
    """``fold`` of the clean ``kind`` partitions listed in ``stats`` dated ``<= until``, from
    the checkpoints in ``Warehouse.checkpoints(checkpoints)`` (``options``: those of
    :func:`recsys_core.io.fold_with_checkpoint`)."""
    schema = CLEAN_EVENTS_SCHEMA if kind == "events" else CLEAN_ITEMS_SCHEMA
    days = sorted(d for d in stats if d <= until)
    return fold_with_checkpoint(
        warehouse.checkpoints(checkpoints),
        {d: s.version for d, s in stats.items()},
        days,
        lambda dates: read_dated_parquet({d: warehouse.clean(kind, d) for d in dates}, schema),
        fold,
        schema=schema,
        **options,
    )


def _item_winners(df: pl.DataFrame) -> pl.DataFrame:
    """Each item's latest row (see :func:`load_catalog`), every column, sorted by ``item_id``."""
    return df.sort(
        ["item_id", "date", "updated_at", SOURCE_FILE, SOURCE_ROW], nulls_last=False
    ).unique(subset="item_id", keep="last", maintain_order=True)


def pending_clean_dates(warehouse: Warehouse, until: dt.date) -> list[dt.date]:
    """Raw partition dates ``<= until`` (events or items) with no manifest, or a manifest older
    than the raw file (it was re-ingested): the dates :func:`clean_days` still has to process.

    Object stores give whole seconds, so a raw object and the manifest cleaned from it are often
    stamped alike. For those dates the raw versions (ETags) each manifest was cleaned from are
    read from one small index (``Warehouse.raw_versions_index``, one GET): such a date is pending
    when a listed raw version differs from the recorded one, or none is recorded.
    """
    manifests = warehouse.partition_stats(warehouse.root / "manifests")  # one listing each
    raw = {k: warehouse.partition_stats(warehouse.root / "raw" / k) for k in ("events", "items")}
    out, same_second = set(), set()
    for listed in raw.values():
        for day, stat in listed.items():
            if day > until:
                continue
            if day not in manifests or stat.mtime_ns > manifests[day].mtime_ns:
                out.add(day)
            elif warehouse.remote and stat.mtime_ns == manifests[day].mtime_ns:
                same_second.add(day)
    if same_second - out:
        recorded = read_raw_versions(warehouse)
        for day in same_second - out:
            versions = recorded.get(day.isoformat(), {})
            if any(versions.get(k) != raw[k][day].version for k in raw if day in raw[k]):
                out.add(day)
    return sorted(out)


def read_raw_versions(warehouse: Warehouse) -> dict[str, dict[str, str]]:
    """The index of :func:`record_raw_versions` (empty when there is none)."""
    try:
        return read_json(warehouse.raw_versions_index)
    except FileNotFoundError:
        return {}


def record_raw_versions(warehouse: Warehouse, versions: dict[dt.date, dict[str, str]]) -> None:
    """Record, after their manifests are written, the raw versions each date was cleaned from
    (object stores only). A compare-and-swap of the one index object, retried when a concurrent
    clean got there first; a clean killed before it leaves those dates pending if ambiguous."""
    if not warehouse.remote or not versions:
        return
    index = warehouse.raw_versions_index

    def merged(content: bytes | None) -> bytes:
        try:
            recorded = json.loads(content) if content else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptFileError(
                f"{index}: corrupt JSON ({exc}); delete it and re-run (the dates it named are "
                "then compared by time alone, and those stamped like their manifest re-cleaned)"
            ) from exc
        recorded.update({d.isoformat(): dict(sorted(v.items())) for d, v in versions.items()})
        return (
            json.dumps(dict(sorted(recorded.items())), indent=1, sort_keys=True) + "\n"
        ).encode()

    update_if_match(index, merged)


def _dates(
    warehouse: Warehouse, kind: str, until: dt.date, since: dt.date | None
) -> Sequence[dt.date]:
    return [d for d in warehouse.clean_dates(kind) if d <= until and (since is None or d >= since)]
