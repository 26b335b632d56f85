"""Reading landing partitions into all-string frames with row lineage.

A landing partition is a folder ``<landing>/<kind>/date=YYYY-MM-DD/`` holding any number of
``*.csv``, ``*.jsonl`` / ``*.ndjson``, ``*.json`` and ``*.parquet`` files. Files whose name starts
with ``.`` or ``_`` (temporaries, ``_SUCCESS`` markers) are skipped; any other extension is an
error, so a misnamed drop is never silently ignored. Any other entry (a folder under ``<kind>/``
that is not ``date=YYYY-MM-DD`` with a real date, a file directly under ``<kind>/``, a folder inside
a partition) is *unrecognised*: :func:`scan_landing` lists it so that ingest can fail or report it.
A symbolic link whose target is outside the landing root is refused (:class:`LandingPathError`,
naming the link, never the target or its content).

All access to landing files goes through :func:`scan_landing` (listing with size and mtime),
:func:`landing_fingerprint` (content hash) and :func:`read_landing_file` (parsing).

Every value is read as a string exactly as the source wrote it ("007" stays "007", a JSON ``5.0``
stays "5.0"); typing and validation happen in :func:`recsys_core.ingest.clean`. Header names are
stripped and lower-cased. The result has the kind's required and optional columns (missing optional
ones as null), then ``_source_file`` (path relative to the landing root, with ``/``) and
``_source_row`` (1-based record number in the file: for CSV the data record, counting a quoted
multi-line field as one record; for JSON lines the line number).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from recsys_core.ingest._errors import (
    LandingPathError,
    LandingReadError,
    LandingSchemaError,
)
from recsys_core.io import files_with_stats, is_remote, location, read_bytes
from recsys_core.schema import (
    EVENT_OPTIONAL,
    EVENT_REQUIRED,
    ITEM_OPTIONAL,
    ITEM_REQUIRED,
    SOURCE_FILE,
    SOURCE_ROW,
)

__all__ = [
    "BAD_ID_MARK",
    "DATA_EXTENSIONS",
    "KINDS",
    "LandingFile",
    "LandingScan",
    "extra_columns_note",
    "landing_columns",
    "landing_dates",
    "landing_fingerprint",
    "partition_dir",
    "partition_files",
    "normalise_names",
    "read_landing_file",
    "scan_landing",
]

Kind = Literal["events", "items"]
KINDS: tuple[str, ...] = ("events", "items")
DATA_EXTENSIONS: tuple[str, ...] = (".csv", ".jsonl", ".ndjson", ".json", ".parquet")
_COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "events": (EVENT_REQUIRED, EVENT_OPTIONAL),
    "items": (ITEM_REQUIRED, ITEM_OPTIONAL),
}
_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


def landing_columns(kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(required, optional)`` column names of ``kind`` ("events" or "items")."""
    if kind not in _COLUMNS:
        raise ValueError(f"kind {kind!r} is not one of {list(KINDS)}")
    return _COLUMNS[kind]


def partition_dir(landing: Path, kind: str, day: dt.date) -> Path:
    """``<landing>/<kind>/date=YYYY-MM-DD``."""
    landing_columns(kind)
    return location(landing) / f"{kind}/date={day.isoformat()}"


@dataclass(frozen=True)
class LandingFile:
    """One landing data file as listed: path, name relative to the landing root, size, mtime."""

    path: Path
    rel: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class LandingScan:
    """One kind's listing: data files per partition date, and the entries that fit no rule."""

    partitions: dict[dt.date, list[LandingFile]]
    unrecognised: list[str] = field(default_factory=list)


def _skipped(name: str) -> bool:
    return name.startswith((".", "_"))


def _rel(path: Path, landing: Path) -> str:
    try:
        return path.relative_to(landing).as_posix()
    except ValueError:
        return path.as_posix()


def _check_link(path: Path, landing: Path) -> None:
    """Refuse a symbolic link whose target lies outside the landing root (name the link only)."""
    if not path.is_symlink():
        return
    root = landing.resolve()
    target = path.resolve()
    if target != root and not target.is_relative_to(root):
        raise LandingPathError(
            f"{_rel(path, landing)}: is a symbolic link to a path outside the landing root "
            f"{landing}; refused (copy the data into the landing zone instead of linking it)"
        )


def partition_files(directory: Path, landing: Path | None = None) -> list[Path]:
    """Data files of one partition folder, sorted by name; hidden and ``_`` files skipped.

    A symbolic link resolving outside ``landing`` (default: the folder's grandparent, the
    landing root) raises :class:`LandingPathError`.
    """
    if not directory.is_dir():
        return []
    landing = Path(landing) if landing is not None else directory.parent.parent
    out = []
    for p in directory.iterdir():
        if _skipped(p.name):
            continue
        _check_link(p, landing)
        if p.is_file():
            out.append(p)
    return sorted(out)


def scan_landing(landing: Path, kind: str, *, until: dt.date | None = None) -> LandingScan:
    """List ``<landing>/<kind>``: each partition's data files (with size and mtime) and every
    unrecognised entry (path relative to the landing root), both sorted.

    With ``until``, partitions dated later are not opened (a run never looks at the future). A
    partition with only hidden/underscore files (a drop still being written) is not listed.
    Unrecognised: a folder that is not ``date=YYYY-MM-DD`` with a real date (``date=2026-5-4``,
    ``Date=...``, ``date=2026-13-45``), a file directly under ``<kind>/``, a folder inside a
    partition. Hidden and ``_`` names are skipped everywhere.
    """
    landing_columns(kind)
    landing = location(landing)
    if is_remote(landing):
        return _scan_remote(landing, kind, until)
    root = landing / kind
    if root.is_symlink():
        _check_link(root, landing)
    partitions: dict[dt.date, list[LandingFile]] = {}
    unrecognised: list[str] = []
    if not root.is_dir():
        return LandingScan(partitions, unrecognised)
    with os.scandir(root) as children:  # DirEntry: type and stat without extra calls
        entries = [c for c in children if not _skipped(c.name)]
    for child in entries:
        path = Path(child.path)
        if child.is_symlink():
            _check_link(path, landing)
        m = _DATE_DIR.match(child.name)
        day = None
        if m and child.is_dir():
            try:
                day = dt.date.fromisoformat(m.group(1))
            except ValueError:
                day = None
        if day is None:
            unrecognised.append(f"{kind}/{child.name}" + ("/" if child.is_dir() else ""))
            continue
        if until is not None and day > until:
            continue
        files = []
        with os.scandir(path) as found:
            inside = sorted((e for e in found if not _skipped(e.name)), key=lambda e: e.name)
        for e in inside:
            if e.is_symlink():
                _check_link(Path(e.path), landing)
            rel = f"{kind}/{child.name}/{e.name}"
            if e.is_file():
                st = e.stat()
                files.append(LandingFile(Path(e.path), rel, st.st_size, st.st_mtime_ns))
            else:
                unrecognised.append(rel + "/")
        if files:
            partitions[day] = files
    return LandingScan(dict(sorted(partitions.items())), sorted(unrecognised))


def _scan_remote(landing: Any, kind: str, until: dt.date | None) -> LandingScan:
    """:func:`scan_landing` on an object store: one listing of ``<landing>/<kind>/`` (sizes and
    modification times included), the same rules (objects have no symbolic links)."""
    partitions: dict[dt.date, list[LandingFile]] = {}
    unrecognised: set[str] = set()
    for rel, size, mtime_ns in files_with_stats(landing / kind):
        parts = rel.split("/")
        if any(_skipped(p) for p in parts):
            continue
        m = _DATE_DIR.match(parts[0])
        day = None
        if m and len(parts) > 1:
            try:
                day = dt.date.fromisoformat(m.group(1))
            except ValueError:
                day = None
        if day is None:
            unrecognised.add(f"{kind}/{parts[0]}" + ("/" if len(parts) > 1 else ""))
            continue
        if until is not None and day > until:
            continue
        if len(parts) > 2:  # a folder inside a partition
            unrecognised.add(f"{kind}/{parts[0]}/{parts[1]}/")
            continue
        path = landing / kind / parts[0] / parts[1]
        partitions.setdefault(day, []).append(LandingFile(path, f"{kind}/{rel}", size, mtime_ns))
    return LandingScan(
        {d: sorted(fs, key=lambda f: f.rel) for d, fs in sorted(partitions.items())},
        sorted(unrecognised),
    )


def landing_fingerprint(path: Path) -> str:
    """The content hash of one landing file (BLAKE2b, 128 bits, hex), read in 1 MiB blocks."""
    h = hashlib.blake2b(digest_size=16)
    if is_remote(path):
        h.update(read_bytes(path, cached=True))  # fetched once for hash and parse
        return h.hexdigest()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def landing_dates(landing: Path, kind: str, *, until: dt.date | None = None) -> list[dt.date]:
    """Sorted dates of ``kind``'s partitions that hold at least one data file (see
    :func:`scan_landing`; unrecognised entries are not reported here)."""
    return list(scan_landing(landing, kind, until=until).partitions)


def read_landing_file(path: Path, kind: str, landing: Path) -> tuple[pl.DataFrame, str | None]:
    """One landing file conformed to ``kind``'s columns; also a note naming dropped columns."""
    required, optional = landing_columns(kind)
    try:
        rel = path.relative_to(landing).as_posix()
    except ValueError:
        rel = path.as_posix()
    ext = path.suffix.lower()
    if ext not in DATA_EXTENSIONS:
        raise LandingReadError(
            f"{rel}: unknown file extension {path.suffix!r}; expected one of "
            f"{list(DATA_EXTENSIONS)} (or prefix the name with '_' to make readers skip it)"
        )
    rows: list[int] | None = None
    if path.stat().st_size == 0 and ext == ".parquet":  # a Parquet file has a footer at least
        raise LandingReadError(
            f"{rel}: cannot read as Parquet: the file is empty (0 bytes), a corrupt or truncated "
            "upload; replace it with the complete file"
        )
    if path.stat().st_size == 0:  # CSV/JSON: no header, no rows: an empty drop
        raw = pl.DataFrame(schema={c: pl.String for c in required})
    elif ext == ".csv":
        raw = _read_csv(path, rel)
    elif ext == ".parquet":
        raw = _read_parquet(path, rel)
    else:
        raw, rows = _read_json(path, rel)
    raw = normalise_names(raw, rel, required + optional)
    return _conform(raw, rel, required, optional, rows)


def normalise_names(df: pl.DataFrame, rel: str, expected: tuple[str, ...]) -> pl.DataFrame:
    """Header names stripped (and of a byte-order mark) and lower-cased; a repeat is an error."""
    names = [c.lstrip("\ufeff").strip().lower() for c in df.columns]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise LandingSchemaError(
                f"{rel}: column {name!r} appears twice (after stripping and lower-casing); "
                f"found columns {df.columns}, expected {list(expected)}"
            )
        seen.add(name)
    if names == df.columns:
        return df
    return df.rename(dict(zip(df.columns, names, strict=True)))


def _conform(
    df: pl.DataFrame,
    rel: str,
    required: tuple[str, ...],
    optional: tuple[str, ...],
    rows: list[int] | None,
) -> tuple[pl.DataFrame, str | None]:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise LandingSchemaError(
            f"{rel}: missing required column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(c) for c in missing)}; found columns {df.columns}; expected "
            f"{list(required)} (optional: {list(optional)})"
        )
    wanted = required + optional
    note = extra_columns_note([c for c in df.columns if c not in wanted], wanted)
    note = f"{rel}: {note}" if note else None
    row_numbers = (
        pl.Series(SOURCE_ROW, rows, dtype=pl.Int64)
        if rows is not None
        else pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(SOURCE_ROW)
    )
    out = df.select(
        *[
            pl.col(c).cast(pl.String) if c in df.columns else pl.lit(None, pl.String).alias(c)
            for c in wanted
        ],
        pl.lit(rel, pl.String).alias(SOURCE_FILE),
        row_numbers,
    )
    return out, note


def extra_columns_note(extra: list[str], kept: tuple[str, ...]) -> str | None:
    """ "dropped N extra column(s) [...] (kept [...])", or None without extra columns."""
    if not extra:
        return None
    return f"dropped {len(extra)} extra column{'s' if len(extra) > 1 else ''} {extra} (kept {list(kept)})"


def _read_csv(path: Path, rel: str) -> pl.DataFrame:
    try:
        df = pl.read_csv(path, infer_schema=False, encoding="utf8")
    except Exception as exc:  # polars raises several error types for bad CSV
        raise LandingReadError(f"{rel}: cannot parse as CSV ({type(exc).__name__}: {exc})") from exc
    return df


def _read_parquet(path: Path, rel: str) -> pl.DataFrame:
    try:
        df = pl.read_parquet(path)
    except Exception as exc:
        raise LandingReadError(
            f"{rel}: cannot read as Parquet ({type(exc).__name__}: {exc})"
        ) from exc
    exprs = []
    for name, dtype in df.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            if dtype.time_zone is not None:
                col = col.dt.convert_time_zone("UTC").dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ")
            else:
                col = col.dt.to_string("%Y-%m-%dT%H:%M:%S%.f")
        elif dtype == pl.Date:
            col = col.dt.to_string("%Y-%m-%d")
        elif dtype.is_nested():
            col = col.map_elements(
                lambda v: json.dumps(_to_jsonable(v), ensure_ascii=False), return_dtype=pl.String
            )
            if name.strip().lower() in ID_COLUMNS:
                kind = "array" if isinstance(dtype, pl.List | pl.Array) else "object"
                col = pl.concat_str([pl.lit(f"{BAD_ID_MARK}{kind}{BAD_ID_MARK}"), col])
        elif dtype == pl.Boolean and name.strip().lower() in ID_COLUMNS:
            col = pl.concat_str(
                [
                    pl.lit(f"{BAD_ID_MARK}boolean{BAD_ID_MARK}"),
                    col.cast(pl.String).str.to_lowercase(),
                ]
            )
        elif dtype == pl.Binary:
            col = col.cast(pl.String, strict=False)
        exprs.append(col.cast(pl.String).alias(name))
    try:
        return df.select(exprs)
    except Exception as exc:
        raise LandingReadError(
            f"{rel}: cannot convert Parquet columns to text ({type(exc).__name__}: {exc})"
        ) from exc


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, pl.Series):
        return value.to_list()
    return value


#: Prefix of an id that was a JSON object, array or boolean in the source: ``MARK<type>MARK<json>``.
#: NUL cannot be part of a valid id (control characters are quarantined), so the marked value
#: can never be mistaken for one; clean quarantines it as ``bad_user_id`` / ``bad_item_id``.
BAD_ID_MARK = "\x00"
#: Columns whose JSON objects, arrays and booleans are marked rather than turned into text.
ID_COLUMNS: frozenset[str] = frozenset({"user_id", "item_id"})


def _json_text(value: Any) -> str | None:
    """A parsed JSON value as text; numbers arrive as their literal source text already."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)


def _json_id(value: Any) -> str | None:
    """An id value as text; an object, array or boolean marked with its type (:data:`BAD_ID_MARK`)."""
    if isinstance(value, dict | list | bool):
        kind = {dict: "object", list: "array", bool: "boolean"}[type(value)]
        return f"{BAD_ID_MARK}{kind}{BAD_ID_MARK}{_json_text(value)}"
    return _json_text(value)


def _read_json(path: Path, rel: str) -> tuple[pl.DataFrame, list[int]]:
    """JSON lines (one object per line) or one JSON array of objects; also each record's
    line number (JSON lines) or 1-based position (array)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LandingReadError(f"{rel}: not UTF-8 text ({exc})") from exc
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text, **_LITERAL_NUMBERS)
        except json.JSONDecodeError as exc:
            raise LandingReadError(f"{rel}: invalid JSON ({exc})") from exc
        if not isinstance(data, list):
            raise LandingReadError(f"{rel}: a JSON {type(data).__name__}, expected an array")
        numbers = list(range(1, len(data) + 1))
    else:
        lines = text.splitlines()
        numbers = [n for n, line in enumerate(lines, start=1) if line.strip()]
        try:  # one parse of the whole file; per line only to locate an error
            data = json.loads(
                "[" + ",".join(lines[n - 1] for n in numbers) + "]", **_LITERAL_NUMBERS
            )
        except json.JSONDecodeError:
            data = [_parse_line(lines[n - 1], rel, n) for n in numbers]
        if len(data) != len(numbers):  # a line held two values ("{..}, {..}")
            data = [_parse_line(lines[n - 1], rel, n) for n in numbers]
    if any(t is not dict for t in set(map(type, data))):
        for n, rec in zip(numbers, data, strict=True):
            if not isinstance(rec, dict):
                raise LandingReadError(
                    f"{rel} record {n}: is a JSON {type(rec).__name__}, expected an object"
                )
    columns = dict.fromkeys(itertools.chain.from_iterable(data))  # first-seen order
    if columns and "true" not in text and "false" not in text:
        # no JSON boolean anywhere (an id that is one is marked, below): every value is a
        # string or null unless one is an object or array, which polars refuses
        try:
            schema = dict.fromkeys(columns, pl.String())
            return pl.from_dicts(data, schema=schema, strict=True), numbers
        except (TypeError, pl.exceptions.PolarsError):
            pass
    series = []
    for key in columns:
        values = [rec.get(key) for rec in data]
        try:  # fast path: every value is a string (numbers already are) or null
            series.append(pl.Series(key, values, dtype=pl.String, strict=True))
        except (TypeError, pl.exceptions.PolarsError):
            text = _json_id if key.lstrip("\ufeff").strip().lower() in ID_COLUMNS else _json_text
            series.append(pl.Series(key, [text(v) for v in values], dtype=pl.String))
    if not series:  # only empty objects: no columns at all (reported as missing columns)
        return pl.DataFrame(), numbers
    return pl.DataFrame(series), numbers


#: Numbers are kept as their literal text ("5.0" stays "5.0", 12345678901234567890 stays exact).
_LITERAL_NUMBERS: dict[str, Any] = {"parse_float": str, "parse_int": str, "parse_constant": str}


def _parse_line(line: str, rel: str, lineno: int) -> Any:
    try:
        return json.loads(line, **_LITERAL_NUMBERS)
    except json.JSONDecodeError as exc:
        raise LandingReadError(
            f"{rel} line {lineno}: invalid JSON ({exc.msg} at column {exc.colno}); "
            "expected one JSON object per line"
        ) from exc
