"""Fault injection for tests and drills (off by default).

``RECSYS_FAULT="train:2"`` makes the first two attempts of the ``train`` step raise
:class:`InjectedFault`; ``RECSYS_FAULT="score:kill"`` SIGKILLs the process inside ``score`` (once:
the attempt counter survives the kill). Several faults: ``"ingest:1,score:kill"``.
Attempts are counted in ``<warehouse>/_faults/`` so that retries in other processes see them.
The environment is read at call time, never at import.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from recsys_core.config import Settings
from recsys_core.io import Warehouse, atomic_write_text, exists, read_bytes

__all__ = ["InjectedFault", "maybe_fail"]

ENV_VAR = "RECSYS_FAULT"


class InjectedFault(RuntimeError):
    """Raised by :func:`maybe_fail` while an injected fault is active."""


def _spec(settings: Settings, step: str) -> str | None:
    raw = os.environ.get(ENV_VAR, "")
    for part in raw.split(","):
        name, _, what = part.strip().partition(":")
        if name == step and what:
            return what
    if settings.faults.fail_step == step and settings.faults.fail_times > 0:
        return str(settings.faults.fail_times)
    return None


def _bump(counter: Any) -> int:
    n = int(read_bytes(counter).decode()) if exists(counter) else 0
    atomic_write_text(counter, str(n + 1))
    return n + 1


def _counter(settings: Settings, name: str) -> Any:
    return Warehouse(settings.warehouse).root / "_faults" / name


def maybe_fail(settings: Settings, step: str, *, point: str = "") -> None:
    """Raise or die if a fault is configured for ``step`` (``point`` names a place inside it)."""
    spec = _spec(settings, step)
    if spec is None:
        return
    if spec.startswith("kill"):
        wanted_point = spec.partition("@")[2]
        if wanted_point and wanted_point != point:
            return
        counter = _counter(settings, f"{step}.killed")
        if exists(counter):
            return
        _bump(counter)
        os.kill(os.getpid(), signal.SIGKILL)
        return
    try:
        times = int(spec)
    except ValueError:
        raise ValueError(f"{ENV_VAR}: {step}:{spec!r} is not a count or 'kill'") from None
    if point:  # count faults fail at the step's start only, once per attempt
        return
    attempt = _bump(_counter(settings, f"{step}.attempts"))
    if attempt <= times:
        raise InjectedFault(
            f"injected fault in step {step!r}: attempt {attempt} of {times} failing"
        )
