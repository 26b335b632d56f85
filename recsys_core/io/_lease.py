"""A leased lock on an object store: one lock object, created only if absent, renewed by a heartbeat.

Object stores have no ``flock`` and cannot see whether the holder is alive. The lock is an object
``_locks/<name>.lock`` created with ``If-None-Match: *`` (exactly one creator wins) holding who
holds it and until when. A heartbeat thread renews the lease with ``If-Match: <etag>`` every third
of the lease. A holder killed with SIGKILL stops renewing; once its lease has expired the next run
takes the lock over with ``If-Match`` on the expired object's etag, so two runs cannot both take
it over. Release deletes the object only if it is still ours (``If-Match``). A holder that finds its
lease lost stops publishing: see :mod:`recsys_core.io._fence`.

The same protocol runs on S3, GCS and Azure: :mod:`recsys_core.io._conditional` maps create,
compare-and-swap and delete onto each store's preconditions.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from recsys_core.io._fence import Fence, Lease, LeaseLostError, held_here, holding, unfenced
from recsys_core.io._storage import (
    Location,
    PreconditionFailed,
    delete,
    location,
    put_if_absent,
    read_versioned,
    write_if_match,
)

__all__ = ["RunLockedError", "check_fence", "lease_lock", "lease_seconds"]

log = logging.getLogger(__name__)


class RunLockedError(RuntimeError):
    """Another run holds the lock for the same run date."""


def lease_seconds() -> float:
    """The lease of a lock object (``RECSYS_LOCK_LEASE_SECONDS``, default 300 s)."""
    raw = os.environ.get("RECSYS_LOCK_LEASE_SECONDS", "300")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(
            f"RECSYS_LOCK_LEASE_SECONDS={raw!r}: expected a number of seconds"
        ) from None
    if value <= 0:
        raise ValueError(f"RECSYS_LOCK_LEASE_SECONDS={raw!r}: expected a positive number")
    return value


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _body(holder: str, token: str, lease: float, acquired: str) -> bytes:
    expires = _now() + dt.timedelta(seconds=lease)
    return json.dumps(
        {
            "holder": holder,
            "token": token,
            "acquired_at": acquired,
            "expires_at": expires.isoformat(timespec="seconds"),
        },
        sort_keys=True,
    ).encode()


@contextmanager
def lease_lock(loc: Location, *, wait: bool = False, poll: float = 1.0) -> Iterator[Location]:
    """Hold the lock object ``loc`` for the duration of the block (see the module docstring).

    Writes made in the block (and in the tasks it starts) are fenced: once the heartbeat finds
    the lock gone or taken by another holder, or the lease ran out unrenewed, the next write
    raises :class:`~recsys_core.io._fence.LeaseLostError` (see :mod:`recsys_core.io._fence`).
    """
    seconds = lease_seconds()
    holder = f"pid {os.getpid()} on {socket.gethostname()}"
    token = uuid.uuid4().hex
    acquired = _now().isoformat(timespec="seconds")
    started = time.monotonic()
    etag = _acquire(loc, holder, token, seconds, acquired, wait=wait, poll=poll)
    lease = Lease(str(loc), seconds, root=str(loc.parent.parent), token=token)
    lease.renewed(started)
    state: dict[str, Any] = {"etag": etag}
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(seconds / 3):
            sent = time.monotonic()
            try:
                state["etag"] = write_if_match(
                    loc, _body(holder, token, seconds, acquired), state["etag"]
                )
            except PreconditionFailed:
                why = _taken_by(loc)
                lease.lose(why)
                log.error("%s: %s; this run publishes nothing more", loc, why)
                return
            except Exception as exc:  # a network error: retried on the next beat
                log.warning("%s: could not renew the lock lease (will retry): %s", loc, exc)
                continue
            lease.renewed(sent)

    # the heartbeat's own writes are not fenced by the lease they renew
    beat = threading.Thread(
        target=unfenced().run, args=(heartbeat,), name=f"lease-{loc.name}", daemon=True
    )
    beat.start()
    try:
        with holding(lease):
            yield loc
    finally:
        stop.set()
        beat.join(timeout=30)
        if lease.lost:
            log.warning("%s: not released: %s", loc, lease.lost)
        else:
            try:
                unfenced().run(delete, loc, version=state["etag"])
            except PreconditionFailed:
                log.warning("%s: lock was taken over by another run before release", loc)


def check_fence(fence: Fence | None, target: Any) -> None:
    """Before writing ``target`` in a process that does not hold the run's lease (a Dask
    worker): raise :class:`LeaseLostError` unless the lock object still holds the run's token.
    Costs one read of the lock object; nothing where the lease is held in this process (its
    writes are fenced already) or where no lease fences the run (``fence`` None)."""
    if fence is None or held_here(fence):
        return
    loc = location(fence.url)
    current = read_versioned(loc)
    info = _lock_info(current[0]) if current is not None else None
    if (info or {}).get("token") != fence.token:
        raise LeaseLostError(
            f"lost the lock {fence.url}: {_holder(current)}; stopped before writing {target} "
            "(this run publishes nothing more; re-run the date once the other run has finished)"
        )


def _taken_by(loc: Location) -> str:
    """Why a renewal lost: the lock object is gone, or who holds it now."""
    try:
        current = read_versioned(loc)
    except Exception as exc:  # the renewal already lost: say so even if this read fails
        return f"the lock object changed (could not read it: {exc})"
    return _holder(current)


def _lock_info(data: bytes) -> dict[str, Any] | None:
    """A lock object's fields (holder, token, ...), or None when it is not a JSON object."""
    try:
        info = json.loads(data)
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def _holder(current: tuple[bytes, str] | None) -> str:
    """Who holds the lock, from its object as read (None: it is gone)."""
    if current is None:
        return "the lock object is gone (deleted by another process)"
    info = _lock_info(current[0])
    if info is None:
        return "the lock object was overwritten with unreadable content"
    return (
        f"taken over by {info.get('holder', 'an unknown holder')} (since "
        f"{info.get('acquired_at', '?')}, lease until {info.get('expires_at', '?')})"
    )


def _acquire(
    loc: Location, holder: str, token: str, lease: float, acquired: str, *, wait: bool, poll: float
) -> str:
    """Create the lock object, or take over an expired one; returns its version."""
    while True:
        body = _body(holder, token, lease, acquired)
        try:
            return put_if_absent(loc, body)
        except PreconditionFailed:
            pass
        current = read_versioned(loc)
        if current is None:
            continue  # released between our create and our read: try again
        data, etag = current
        try:
            info = json.loads(data)
            expires = dt.datetime.fromisoformat(info["expires_at"])
        except (ValueError, KeyError, TypeError):
            info, expires = {"holder": "unreadable lock object"}, _now()
        if info.get("token") == token:
            return etag  # our create landed, and its response was lost (then retried)
        if expires <= _now():
            try:
                etag = write_if_match(loc, body, etag)
            except PreconditionFailed:
                continue  # someone else took it over first
            log.warning(
                "%s: took over an expired lock of %s (lease ended %s)",
                loc,
                info.get("holder"),
                info.get("expires_at"),
            )
            return etag
        if not wait:
            raise RunLockedError(
                f"another run holds {loc} ({info.get('holder', 'unknown holder')}, since "
                f"{info.get('acquired_at', '?')}, lease until {info['expires_at']}); wait for it "
                "to finish, or run a different date (a killed run's lock expires at the end of "
                "its lease: RECSYS_LOCK_LEASE_SECONDS)"
            )
        time.sleep(poll)
