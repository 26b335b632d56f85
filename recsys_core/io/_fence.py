"""Fencing: a run that lost its lease publishes nothing more.

A leased lock on an object store (:mod:`recsys_core.io._lease`) can be lost while its holder still
runs: the heartbeat stalled past the lease (a paused VM, a network partition) and another run took
the lock over, or someone deleted the lock object. The holder cannot be stopped from outside, so
it stops itself: while a lease is held, every write through :mod:`recsys_core.io` (each one a
commit point: a partition, a pointer, a marker) first checks it, and raises
:class:`LeaseLostError` naming the lock URL and the new holder once the heartbeat found the lease
lost, or once the lease has run out without a renewal. The check costs no request.

The held leases live in a context variable: the run's own thread and the tasks it starts
(Prefect's thread runner copies the context into each task) see exactly the leases of their run.
A thread started without that context (a plain thread pool inside a step) falls back to every
lease held in this process over the warehouse it writes to.

Other processes (Dask workers) hold no lease. An ingest slice there carries the run's
:class:`Fence` (the lock's URL and the run's token) and reads the lock object before each pass of
writes (:func:`recsys_core.io.check_fence`): once another run holds it, or it is gone, the slice
raises :class:`LeaseLostError` before writing. A score shard is staged under a name unique to its
call, so a late one is never merged into another run's recommendations. The flow's process
commits the date (the ingest index, clean partitions and manifests, models and the champion,
recommendations, the completion marker) and is fenced as above.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

__all__ = [
    "Fence",
    "Lease",
    "LeaseLostError",
    "check_leases",
    "held_fence",
    "held_here",
    "holding",
    "unfenced",
]


class LeaseLostError(RuntimeError):
    """The lock of this run was lost (taken over or deleted); the run must publish nothing more."""


class Fence(NamedTuple):
    """What a process without the lease needs to check it: the lock's URL and the holder's
    token (kept in the lock object while this run holds it)."""

    url: str
    token: str


class Lease:
    """One held lease: the lock's URL, when it runs out, and why it was lost (if it was)."""

    def __init__(self, url: str, seconds: float, root: str, token: str = "") -> None:
        self.url = url
        self.token = token
        self.seconds = seconds
        self.root = root.rstrip("/") + "/"
        self._lock = threading.Lock()
        self._valid_until = time.monotonic() + seconds
        self._lost: str | None = None

    def renewed(self, started: float) -> None:
        """The lease was renewed by a write sent at ``started`` (``time.monotonic()``)."""
        with self._lock:
            self._valid_until = max(self._valid_until, started + self.seconds)

    def lose(self, why: str) -> None:
        """The heartbeat found the lock gone or held by another run (``why`` names the holder)."""
        with self._lock:
            self._lost = self._lost or why

    @property
    def lost(self) -> str | None:
        """Why this lease no longer protects the run's writes, or None while it does."""
        with self._lock:
            if self._lost:
                return self._lost
            late = time.monotonic() - self._valid_until
        if late > 0:
            return (
                f"the lease ({self.seconds:g} s) ran out {late:.1f} s ago without a renewal; "
                "another run may hold it now"
            )
        return None

    def check(self, target: Any) -> None:
        why = self.lost
        if why:
            raise LeaseLostError(
                f"lost the lock {self.url}: {why}; stopped before writing {target} (this run "
                "publishes nothing more; re-run the date once the other run has finished)"
            )


#: The leases of this context's run; None: this context is not fenced (the lease's own
#: heartbeat and release); unset: a thread without the run's context (see the module docstring).
_HELD: contextvars.ContextVar[tuple[Lease, ...] | None] = contextvars.ContextVar(
    "recsys_held_leases"
)
#: Every lease held in this process.
_ALL: dict[int, Lease] = {}
_ALL_LOCK = threading.Lock()


def check_leases(target: Any) -> None:
    """Raise :class:`LeaseLostError` if a lease that fences this write is lost (before writing
    ``target``)."""
    held = _HELD.get(())
    if held is None:
        return
    for lease in held or _held_over(target):  # no run context: every lease held here over it
        lease.check(target)


def _held_over(target: Any) -> tuple[Lease, ...]:
    """Every lease held in this process over the warehouse of ``target`` (the root itself or a
    path under it)."""
    url = str(target).rstrip("/") + "/"
    with _ALL_LOCK:
        return tuple(lease for lease in _ALL.values() if url.startswith(lease.root))


def held_fence(target: Any) -> Fence | None:
    """The fence of the lease this context holds over ``target`` (for work sent to another
    process), or None when no lease fences it (local disk, or no lock held)."""
    url = str(target).rstrip("/") + "/"  # the warehouse root itself, or a path under it
    for lease in _HELD.get(()) or _held_over(target):
        if url.startswith(lease.root):
            return Fence(lease.url, lease.token)
    return None


def held_here(fence: Fence) -> bool:
    """Whether this process holds the lease of ``fence`` (its writes are then fenced by it): the
    same lock *and* the same token. A lease of the same lock taken later by another run in this
    process is not it: work carrying the older run's fence must still read the lock object."""
    with _ALL_LOCK:
        return any(lease.url == fence.url and lease.token == fence.token for lease in _ALL.values())


@contextmanager
def holding(lease: Lease) -> Iterator[Lease]:
    """Fence the writes of this context (and of the tasks it starts) with ``lease``."""
    token = _HELD.set((*(_HELD.get(()) or ()), lease))
    with _ALL_LOCK:
        _ALL[id(lease)] = lease
    try:
        yield lease
    finally:
        with _ALL_LOCK:
            _ALL.pop(id(lease), None)
        _HELD.reset(token)


def unfenced() -> contextvars.Context:
    """A context whose writes no lease fences (run the lease's own heartbeat in it)."""
    ctx = contextvars.Context()
    ctx.run(_HELD.set, None)
    return ctx
