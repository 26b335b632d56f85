"""Reading many landing partitions at once.

A first run over years of daily partitions (MovieLens) means thousands of small files; reading
them one by one costs more in per-call overhead than in parsing. CSV files that share a header
line are therefore read in one multi-file scan; every other file (JSON, Parquet, empty, a
header seen once) and any batch that fails is read file by file, so errors still name the file.
The result is exactly what :func:`~recsys_core.ingest.read_landing_partition` gives per date.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from recsys_core.ingest._errors import LandingError, LandingWarning, MissingPartitionError
from recsys_core.ingest._read import (
    DATA_EXTENSIONS,
    extra_columns_note,
    landing_columns,
    normalise_names,
    partition_dir,
    partition_files,
    read_landing_file,
)
from recsys_core.io import download_files, files_with_stats, is_remote, location
from recsys_core.schema import SOURCE_FILE, SOURCE_ROW

__all__ = ["read_landing_partition", "read_partitions"]

_PATH = "__landing_path__"


def read_partitions(
    landing: Path, kind: str, days: Sequence[dt.date]
) -> list[tuple[pl.DataFrame, list[str], int]]:
    """For each date in ``days`` (same order): its rows, its dropped-column notes and its
    number of files. Raises :class:`MissingPartitionError` for a date without data files.

    A landing zone on an object store is read from a local copy of these partitions (fetched
    in one concurrent batch), so parsing, lineage and errors are those of local files."""
    if is_remote(location(landing)):
        return _read_remote(location(landing), kind, days)
    landing = Path(landing)
    files: dict[dt.date, list[Path]] = {}
    for day in days:
        directory = partition_dir(landing, kind, day)
        files[day] = partition_files(directory, landing)
        if not files[day]:
            raise MissingPartitionError(
                f"landing partition {directory} is missing (or has no data file); expected "
                f"files {'/'.join('*' + e for e in DATA_EXTENSIONS)} under it"
            )
    groups: dict[bytes, list[tuple[dt.date, Path]]] = defaultdict(list)
    for day, paths in files.items():
        for path in paths:
            header = _csv_header(path)
            if header:
                groups[header].append((day, path))
    pieces: dict[dt.date, list[pl.DataFrame]] = defaultdict(list)
    notes: dict[dt.date, list[str]] = defaultdict(list)
    done: set[Path] = set()
    for members in groups.values():
        if len(members) < 2:
            continue
        batch = _read_csv_batch(members, landing, kind)
        if batch is None:
            continue
        df, note = batch
        by_day = df.partition_by("_day", as_dict=True, maintain_order=True, include_key=False)
        for (day,), part in by_day.items():
            pieces[day].append(part)
        for day, path in members:
            done.add(path)
            if note:
                notes[day].append(f"{path.relative_to(landing).as_posix()}: {note}")
    for day, paths in files.items():
        for path in paths:
            if path not in done:
                df, file_note = read_landing_file(path, kind, landing)
                pieces[day].append(df)
                if file_note:
                    notes[day].append(file_note)
    out = []
    for day in days:
        parts = pieces[day]
        if not parts:  # only header-only CSV files, all read in batches
            df = _empty(kind)
        elif len(parts) == 1:
            df = parts[0]
        else:
            df = pl.concat(parts, how="vertical").sort(SOURCE_FILE, SOURCE_ROW)
        out.append((df, sorted(notes[day]), len(files[day])))
    return out


def _read_remote(
    landing: Any, kind: str, days: Sequence[dt.date]
) -> list[tuple[pl.DataFrame, list[str], int]]:
    pairs = []
    names_of: dict[str, list[str]] = {}
    for rel, _, _ in files_with_stats(location(landing) / kind):  # one listing for every day
        part, _, name = rel.partition("/")
        if name and "/" not in name and not name.startswith((".", "_")):
            names_of.setdefault(part, []).append(name)
    with tempfile.TemporaryDirectory(prefix="recsys-landing-") as tmp:
        local = Path(tmp)
        for day in days:
            directory = partition_dir(landing, kind, day)
            names = names_of.get(directory.name, [])
            if not names:
                raise MissingPartitionError(
                    f"landing partition {directory} is missing (or has no data file); expected "
                    f"files {'/'.join('*' + e for e in DATA_EXTENSIONS)} under it"
                )
            pairs += [(directory / n, local / kind / f"date={day.isoformat()}" / n) for n in names]
        download_files(pairs)
        return read_partitions(local, kind, days)


def _csv_header(path: Path) -> bytes | None:
    """The first line of a non-empty ``.csv`` file (the batching key), else None."""
    if path.suffix.lower() != ".csv":
        return None
    with open(path, "rb") as fh:
        line = fh.readline().rstrip(b"\r\n")
    return line or None


def _empty(kind: str) -> pl.DataFrame:
    required, optional = landing_columns(kind)
    schema = {c: pl.String for c in required + optional}
    return pl.DataFrame(schema={**schema, SOURCE_FILE: pl.String, SOURCE_ROW: pl.Int64})


def _read_csv_batch(
    members: list[tuple[dt.date, Path]], landing: Path, kind: str
) -> tuple[pl.DataFrame, str | None] | None:
    """Rows of CSV files with one header, conformed, plus ``_day``; None if anything is off
    (the caller then reads the files one by one and reports the precise error)."""
    required, optional = landing_columns(kind)
    wanted = required + optional
    paths = [str(p) for _, p in members]
    rel = [p.relative_to(landing).as_posix() for _, p in members]
    days = [d for d, _ in members]
    try:
        df = pl.scan_csv(paths, infer_schema=False, include_file_paths=_PATH).collect()
        data = normalise_names(df.drop(_PATH), "", wanted)
    except (pl.exceptions.PolarsError, LandingError, OSError):
        return None
    if any(c not in data.columns for c in required):
        return None
    # each row's file as its position in ``paths`` (an enum's code): its name and date are then
    # picked by position, and rows are numbered per integer code, not per hashed path string
    file = pl.col(_PATH)
    out = data.with_columns(df[_PATH].cast(pl.Enum(paths)).to_physical().alias(_PATH)).select(
        *[pl.col(c) if c in data.columns else pl.lit(None, pl.String).alias(c) for c in wanted],
        pl.lit(pl.Series(rel, dtype=pl.String)).gather(file).alias(SOURCE_FILE),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(file).alias(SOURCE_ROW),
        pl.lit(pl.Series(days, dtype=pl.Date)).gather(file).alias("_day"),
    )
    return out, extra_columns_note([c for c in data.columns if c not in wanted], wanted)


def read_landing_partition(landing: Path, kind: str, day: dt.date) -> pl.DataFrame:
    """Every data file of one partition as all-string columns plus lineage (see
    :mod:`recsys_core.ingest._read`).

    Raises :class:`MissingPartitionError` if the folder has no data file,
    :class:`LandingSchemaError` for a missing required column and :class:`LandingReadError` for a
    file that cannot be parsed. Extra columns are dropped with a :class:`LandingWarning`.
    """
    df, notes, _ = read_partitions(landing, kind, [day])[0]
    for note in notes:
        warnings.warn(note, LandingWarning, stacklevel=2)
    return df
