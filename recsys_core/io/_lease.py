"""A leased lock on an object store: one lock object, created only if absent, renewed by a heartbeat.

Object stores have no ``flock`` and cannot see whether the holder is alive. The lock is an object
``_locks/<name>.lock`` created with ``If-None-Match: *`` (exactly one creator wins) holding who
holds it and until when. A heartbeat thread renews the lease with ``If-Match: <etag>`` every third
of the lease. A holder killed with SIGKILL stops renewing; once its lease has expired the next run
takes the lock over with ``If-Match`` on the expired object's etag, so two runs cannot both take
it over. Release deletes the object only if it is still ours (``If-Match``).
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

from recsys_core.io._storage import (
    Location,
    PreconditionFailed,
    delete,
    put_if_absent,
    read_versioned,
    write_if_match,
)

__all__ = ["RunLockedError", "lease_lock", "lease_seconds"]

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
    """Hold the lock object ``loc`` for the duration of the block (see the module docstring)."""
    lease = lease_seconds()
    holder = f"pid {os.getpid()} on {socket.gethostname()}"
    token = uuid.uuid4().hex
    acquired = _now().isoformat(timespec="seconds")
    etag = _acquire(loc, holder, token, lease, acquired, wait=wait, poll=poll)
    state: dict[str, Any] = {"etag": etag, "lost": None}
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(lease / 3):
            try:
                write_if_match(loc, _body(holder, token, lease, acquired), state["etag"])
                now = read_versioned(loc)
                if now is not None:
                    state["etag"] = now[1]
            except Exception as exc:  # a lost lease is logged; the run's own writes are atomic
                state["lost"] = exc
                log.error("%s: could not renew the lock lease: %s", loc, exc)
                return

    thread = threading.Thread(target=heartbeat, name=f"lease-{loc.name}", daemon=True)
    thread.start()
    try:
        yield loc
    finally:
        stop.set()
        thread.join(timeout=30)
        try:
            delete(loc, version=state["etag"])
        except PreconditionFailed:
            log.warning("%s: lock was taken over by another run before release", loc)


def _acquire(
    loc: Location, holder: str, token: str, lease: float, acquired: str, *, wait: bool, poll: float
) -> str:
    while True:
        body = _body(holder, token, lease, acquired)
        try:
            put_if_absent(loc, body)
        except PreconditionFailed:
            pass
        else:
            return _etag_of(loc, token)
        current = read_versioned(loc)
        if current is None:
            continue  # released between our create and our read: try again
        data, etag = current
        try:
            info = json.loads(data)
            expires = dt.datetime.fromisoformat(info["expires_at"])
        except (ValueError, KeyError, TypeError):
            info, expires = {"holder": "unreadable lock object"}, _now()
        if expires <= _now():
            try:
                write_if_match(loc, body, etag)
            except PreconditionFailed:
                continue  # someone else took it over first
            log.warning(
                "%s: took over an expired lock of %s (lease ended %s)",
                loc,
                info.get("holder"),
                info.get("expires_at"),
            )
            return _etag_of(loc, token)
        if not wait:
            raise RunLockedError(
                f"another run holds {loc} ({info.get('holder', 'unknown holder')}, since "
                f"{info.get('acquired_at', '?')}, lease until {info['expires_at']}); wait for it "
                "to finish, or run a different date (a killed run's lock expires at the end of "
                "its lease: RECSYS_LOCK_LEASE_SECONDS)"
            )
        time.sleep(poll)


def _etag_of(loc: Location, token: str) -> str:
    current = read_versioned(loc)
    if current is None or json.loads(current[0]).get("token") != token:
        raise RunLockedError(f"{loc}: lock lost right after it was taken; retry the run")
    return current[1]
