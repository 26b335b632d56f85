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
from pathlib import Path

from recsys_core.config import Settings

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


def _bump(counter: Path) -> int:
    counter.parent.mkdir(parents=True, exist_ok=True)
    n = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(n + 1))
    return n + 1


def maybe_fail(settings: Settings, step: str, *, point: str = "") -> None:
    """Raise or die if a fault is configured for ``step`` (``point`` names a place inside it)."""
    spec = _spec(settings, step)
    if spec is None:
        return
    if spec.startswith("kill"):
        wanted_point = spec.partition("@")[2]
        if wanted_point and wanted_point != point:
            return
        counter = settings.warehouse / "_faults" / f"{step}.killed"
        if counter.exists():
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
    attempt = _bump(settings.warehouse / "_faults" / f"{step}.attempts")
    if attempt <= times:
        raise InjectedFault(
            f"injected fault in step {step!r}: attempt {attempt} of {times} failing"
        )
