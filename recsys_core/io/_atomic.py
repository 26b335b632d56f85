"""Atomic writes: a reader sees a file's previous content or its new content, never a part.

On local disk every output goes to a hidden temporary file beside its target, then is renamed.
Temporary files start with ``.tmp-`` so that readers (which skip dot- and underscore-files) never
see them; :func:`sweep_temporaries` removes the ones a killed run left behind.

On an object store (a target that is a :class:`upath.UPath`, see :mod:`recsys_core.io._storage`)
there is no rename and no need for one: the content is written locally (or in memory), then sent
in one upload, which the store makes visible whole or not at all; a killed upload leaves nothing.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from recsys_core.io._fence import check_leases
from recsys_core.io._storage import (
    is_remote,
    location,
    put_remote_file,
    read_bytes,
    read_bytes_many,
    write_bytes_remote,
)

__all__ = [
    "CorruptFileError",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_parquet",
    "atomic_write_text",
    "atomic_write_with",
    "read_json",
    "read_parquet",
    "read_parquet_many",
    "read_parquet_notes",
    "replace_dir",
    "sweep_temporaries",
]

TMP_PREFIX = ".tmp-"


class CorruptFileError(RuntimeError):
    """A warehouse file exists but cannot be read (truncated, not Parquet/JSON, ...)."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: Any) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it over ``target``.

    On any exception the temporary file is removed and ``target`` is left untouched. For an
    object-store target the temporary file is local and is uploaded in one PUT on success.
    """
    target = location(target)
    if is_remote(target):
        import tempfile

        fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=f"-{target.name}")
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
            put_remote_file(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return
    tmp = target.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}-{target.name}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        check_leases(target)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as exc:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if _names_no_path(exc, target):  # disk full, permission denied: say which file
            raise OSError(exc.errno, f"cannot write {target}: {exc.strerror or exc}") from exc
        raise


def _names_no_path(exc: BaseException, target: Path) -> bool:
    """A plain OS error (not one of ours) whose message does not name ``target``."""
    return (
        isinstance(exc, OSError)
        and type(exc).__module__ == "builtins"
        and str(target) not in str(exc)
    )


def atomic_write_bytes(target: Any, data: bytes) -> Any:
    """Write ``data`` to ``target`` atomically; returns the target location."""
    target = location(target)
    if is_remote(target):
        write_bytes_remote(target, data)
        return target
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target


def atomic_write_text(target: Any, text: str) -> Any:
    return atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: Any, obj: Any) -> Any:
    """Write ``obj`` as pretty, key-sorted JSON (stable bytes for the same content)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str, ensure_ascii=False) + "\n"
    return atomic_write_text(target, text)


def atomic_write_with(target: Any, write: Callable[[Any], object]) -> Any:
    """``write(dest)`` writes a whole file to ``dest``; it lands at ``target`` atomically.
    ``dest`` is a temporary path beside ``target`` on local disk (:func:`atomic_path`), and an
    in-memory buffer uploaded in one PUT on an object store (no temporary file to write, read
    back and delete). Returns the target location."""
    target = location(target)
    if is_remote(target):
        buf = io.BytesIO()
        write(buf)
        write_bytes_remote(target, buf.getvalue())
        return target
    with atomic_path(target) as tmp:
        write(tmp)
    return target


def atomic_write_parquet(df: pl.DataFrame, target: Any, *, compression: str = "zstd") -> Any:
    """Write ``df`` to ``target`` as Parquet (zstd), atomically, with statistics."""
    return atomic_write_with(
        target, lambda dest: df.write_parquet(dest, compression=compression, statistics=True)
    )


def read_parquet(path: Any, **kwargs: Any) -> pl.DataFrame:
    """Read one Parquet file; a truncated or foreign file raises :class:`CorruptFileError` naming it.

    An object is fetched whole in one GET (retried when the network fails), then parsed.
    """
    path = location(path)
    source: Any = io.BytesIO(read_bytes(path)) if is_remote(path) else path
    try:
        pq.read_metadata(source)
        if isinstance(source, io.BytesIO):
            source.seek(0)
        return pl.read_parquet(source, **kwargs)
    except FileNotFoundError:
        raise
    except Exception as exc:  # pyarrow/polars raise many types for a damaged file
        raise CorruptFileError(
            f"{path}: corrupt or truncated Parquet file ({type(exc).__name__}: {exc}); "
            "delete it and re-run the step that wrote it (for example with --force)"
        ) from exc


def read_parquet_many(paths: list[Any], **kwargs: Any) -> list[pl.DataFrame]:
    """Read many Parquet files, in order. On an object store the objects are fetched concurrently
    in one batch (:func:`~recsys_core.io._storage.read_bytes_many`)."""
    locs = [location(p) for p in paths]
    if not any(is_remote(p) for p in locs):
        return [read_parquet(p, **kwargs) for p in locs]
    blobs = iter(read_bytes_many([p for p in locs if is_remote(p)]))
    out = []
    for p in locs:
        if not is_remote(p):
            out.append(read_parquet(p, **kwargs))
            continue
        try:
            out.append(pl.read_parquet(io.BytesIO(next(blobs)), **kwargs))
        except Exception as exc:
            raise CorruptFileError(
                f"{p}: corrupt or truncated Parquet file ({type(exc).__name__}: {exc}); "
                "delete it and re-run the step that wrote it (for example with --force)"
            ) from exc
    return out


def read_parquet_notes(path: Any) -> dict[str, str]:
    """The key-value metadata of the Parquet file at ``path`` (its footer; ``{}`` when it has
    none). An object whose version a fresh listing showed comes from this process's cache when
    it is there (a step reading back what an earlier step wrote), else is fetched whole once.

    FileNotFoundError naming the URL when absent; :class:`CorruptFileError` when not Parquet.
    """
    path = location(path)
    source: Any = io.BytesIO(read_bytes(path, cached=True)) if is_remote(path) else path
    try:
        meta = pq.read_metadata(source).metadata or {}
    except FileNotFoundError:
        raise
    except Exception as exc:  # pyarrow raises many types for a damaged file
        raise CorruptFileError(
            f"{path}: corrupt or truncated Parquet file ({type(exc).__name__}: {exc}); "
            "delete it and re-run the step that wrote it (for example with --force)"
        ) from exc
    return {k.decode("utf-8"): v.decode("utf-8") for k, v in meta.items()}


def read_json(path: Any, *, cached: bool = False) -> Any:
    """The JSON document at ``path``; ``cached``: as :func:`recsys_core.io.read_bytes` (a file
    whose version a fresh listing showed may come from this process's cache, for instance one
    that this process wrote)."""
    path = location(path)
    try:
        return json.loads(read_bytes(path, cached=cached).decode("utf-8"))
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{path}: corrupt JSON ({exc}); delete it and re-run") from exc


def replace_dir(staged: Path, target: Path) -> None:
    """Swap a fully written directory ``staged`` into ``target`` (replacing any previous one).

    The previous directory is renamed aside first and deleted only after the new one is in place,
    so a crash leaves either the old or the new directory (plus a hidden ``.old-`` folder).
    """
    check_leases(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        old = target.parent / f".old-{uuid.uuid4().hex}-{target.name}"
        os.replace(target, old)
    os.replace(staged, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def sweep_temporaries(root: Any) -> int:
    """Delete temporary files/folders left by killed runs under ``root``; return how many.

    An object store has none: uploads are single PUTs (an interrupted multipart upload is never
    visible; a bucket lifecycle rule expires its parts).
    """
    root = location(root)
    if is_remote(root) or not root.exists():
        return 0
    removed = 0
    for p in sorted(root.rglob(f"{TMP_PREFIX}*")) + sorted(root.rglob(".old-*")):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink(missing_ok=True)
        removed += 1
    return removed
