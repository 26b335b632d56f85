"""Checkpoints of a fold over dated objects, for object stores.

Some readers fold every dated object ever written into one frame: the item catalog (each item's
latest row over every clean item partition), the metrics over run dates (every run marker) and
the training window (every clean event).
On an object store each object read is a request, so such a fold would cost one request per day
of history, every night. :func:`fold_with_checkpoint` keeps the fold's result as a checkpoint
object named by a hash chained over the dates and versions (ETags, from the listing the reader
makes anyway) of the objects it was built from, and a later call reads the longest listed
checkpoint of a prefix of its objects plus the objects after it.

The name fixes the content: rewriting an object changes its version and so the name of every
checkpoint from its date on, so a stale checkpoint is never found. The result is the same as
folding every object, provided ``fold(concat(fold(a), b)) == fold(concat(a, b))`` (true of
"latest row per key" under a total order, and of a sort). Checkpoints are a cache: a damaged or
vanished one is rebuilt, and a reader that may not write still gets its result (with a
warning). Local folders do not need them (their versions are unknown; a local read is cheap).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import NamedTuple

import polars as pl

from recsys_core.io._atomic import CorruptFileError, atomic_write_parquet, read_parquet_many
from recsys_core.io._storage import (
    Location,
    delete,
    files_under,
    files_with_versions,
    held_in_memory,
    on_forget_cached_objects,
)

__all__ = [
    "ListedCheckpoint",
    "checkpoint_chain",
    "fold_with_checkpoint",
    "listed_checkpoint",
    "read_checkpoint",
]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint-[0-9a-f]{32}\.parquet$")
#: Checkpoints this process has read or written, by URL (a name fixes its content), with
#: their sizes; at most :data:`KEPT_BYTES` in all, the least recently used dropped first.
_KEPT: OrderedDict[str, tuple[pl.DataFrame, int]] = OrderedDict()
_KEPT_LOCK = threading.Lock()
KEPT_BYTES = 256 * 2**20
#: A checkpoint costs a listing, a write and, the next night, a read and a delete: below this
#: many objects, reading them all is cheaper.
MIN_OBJECTS = 4
on_forget_cached_objects(_KEPT.clear)


def checkpoint_chain(versions: Mapping[dt.date, str], tag: str) -> list[str]:
    """The checkpoint name of every prefix of the dated objects (date order): a hash chained
    over ``tag`` and each object's date and version."""
    h = hashlib.sha256(f"recsys checkpoint {tag}".encode())
    out = []
    for day in sorted(versions):
        h.update(f"{day.isoformat()}={versions[day]};".encode())
        out.append(f"checkpoint-{h.hexdigest()[:32]}.parquet")
    return out


def fold_with_checkpoint(
    folder: Location,
    versions: Mapping[dt.date, str | None],
    days: Sequence[dt.date],
    read: Callable[[Sequence[dt.date]], pl.DataFrame],
    fold: Callable[[pl.DataFrame], pl.DataFrame],
    *,
    schema: Mapping[str, pl.DataType],
    tag: str,
    min_objects: int = MIN_OBJECTS,
    rewrite_after: int = 1,
    partial_writes: bool = True,
) -> pl.DataFrame:
    """``fold(read(days))``: ``days`` are some of the dated objects of one listing, whose
    ``versions`` (every listed object's; None where the store gives none, as on local disk)
    name them. Starts from the checkpoint in ``folder`` of the longest prefix of ``days`` that
    has one.

    ``read(dates)`` reads those objects into one frame of ``schema`` (the fold's input and
    result). The checkpoint of the whole chain is written when at least ``rewrite_after``
    objects follow the checkpoint it started from (1: whenever it was not there; a fold whose
    checkpoint is the whole history, such as every event, is rewritten only every few objects);
    when ``days`` are every listed object, every other checkpoint is then deleted: superseded or
    stale (one that a concurrent reader has just listed costs that reader a full read, never a
    wrong answer). ``partial_writes=False``: only a chain of every listed object is written (a
    reader of an earlier prefix, such as the history before tonight, then writes nothing that
    the next night would not use). A checkpoint read or written here is kept in memory by name.
    Objects without a version, or fewer than ``min_objects``, are folded directly (no
    checkpoint; below that many, one would cost more requests than it saves).
    """
    days = sorted(days)
    if len(days) < min_objects or any(versions[d] is None for d in days):
        return fold(read(days))
    covers_all = len(days) == len(versions)
    chain = checkpoint_chain({d: str(versions[d]) for d in days}, tag)
    hit = _kept(str(folder / chain[-1]))
    if hit is not None:
        return hit
    names = set(files_under(folder))
    base, start = None, 0
    if covered := _longest_listed(chain, names):
        # deleted since the listing, or damaged: fold every object (and write it again)
        with contextlib.suppress(FileNotFoundError, CorruptFileError):
            base, start = read_checkpoint(folder / chain[covered - 1], schema), covered
    rest = read(days[start:])
    result = fold(rest if base is None else pl.concat([base, rest]))
    try:  # a cache: a reader without write access still gets the result
        written = start == len(chain)
        # with fewer than ``rewrite_after`` objects after the checkpoint, reading them again
        # next time costs less than rewriting the whole result now
        if not written and len(chain) - start >= rewrite_after and (partial_writes or covers_all):
            atomic_write_parquet(result, folder / chain[-1])
            written = True
        if written and covers_all:
            for name in sorted(names - {chain[-1]}):
                if _NAME.match(name):
                    delete(folder / name)
    except OSError as exc:
        log.warning("checkpoint not updated in %s: %s", folder, exc)
    _keep(str(folder / chain[-1]), result)
    return result


class ListedCheckpoint(NamedTuple):
    """A checkpoint found by :func:`listed_checkpoint`."""

    path: Location
    #: the dates of the objects it was folded from (a prefix of the listing)
    days: list[dt.date]
    size: int
    #: this process holds it (read or written here): reading it costs no request
    held: bool


def listed_checkpoint(
    folder: Location, versions: Mapping[dt.date, str | None], tag: str
) -> ListedCheckpoint | None:
    """The listed checkpoint in ``folder``
    of the longest prefix of the dated objects whose ``versions`` are given (the listing a reader
    made: a name fixes the content, so the checkpoint is exactly those objects' fold), or None
    (none listed, or an object without a version, as on local disk). One listing of ``folder``.

    For a reader that needs some of the objects and not their fold: where the fold keeps every
    row (as every clean event's does), the rows of the covered dates are in the checkpoint.
    """
    days = sorted(versions)
    if not days or any(versions[d] is None for d in days):
        return None
    chain = checkpoint_chain({d: str(versions[d]) for d in days}, tag)
    sizes = {rel: size for rel, size, _, _ in files_with_versions(folder)}
    covered = _longest_listed(chain, sizes)
    if not covered:
        return None
    path = folder / chain[covered - 1]
    held = _kept(str(path)) is not None or held_in_memory(path)
    return ListedCheckpoint(path, days[:covered], sizes[chain[covered - 1]], held)


def _longest_listed(chain: Sequence[str], listed: Collection[str]) -> int:
    """How many objects the longest checkpoint of ``chain`` among the ``listed`` names covers
    (0: none is listed)."""
    return next((i + 1 for i in range(len(chain) - 1, -1, -1) if chain[i] in listed), 0)


def read_checkpoint(path: Location, schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """A checkpoint's frame (kept in memory by name, like the folds'); :class:`CorruptFileError`
    if it is not a frame of ``schema``, FileNotFoundError if it has gone (the caller then reads
    the objects themselves)."""
    hit = _kept(str(path))
    if hit is not None:
        return hit
    df = read_parquet_many([path])[0]  # the listed version's bytes are held, like a partition's
    if df.schema != pl.Schema(schema):
        raise CorruptFileError(f"{path}: not a checkpoint of {dict(schema)} (found {df.schema})")
    _keep(str(path), df)
    return df


def _kept(key: str) -> pl.DataFrame | None:
    with _KEPT_LOCK:
        hit = _KEPT.get(key)
        if hit is None:
            return None
        _KEPT.move_to_end(key)
        return hit[0]


def _keep(key: str, df: pl.DataFrame) -> None:
    size = df.estimated_size()
    if size > KEPT_BYTES // 2:  # a huge catalog is read again rather than held
        return
    with _KEPT_LOCK:
        _KEPT[key] = (df, size)
        _KEPT.move_to_end(key)
        while sum(s for _, s in _KEPT.values()) > KEPT_BYTES:
            _KEPT.popitem(last=False)
