"""Progress of a long encode: a tqdm bar, a callback, and periodic rate/ETA log lines.

``progress`` is ``False`` (nothing), ``True`` (a tqdm bar on stderr, for the command line) or a
callable ``progress(done, total)`` called after every batch. ``log`` is a :class:`logging.Logger`,
a callable taking one line, or None (the ``recsys_core.embeddings`` logger); it gets a line such
as ``embedded 1280/9742 texts (13%), 85.3 texts/s, ETA 1m39s`` every ``log_every_s`` seconds and
one at the end. A Prefect task can pass its run logger so the lines show in the UI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["LogSink", "ProgressArg", "ProgressReporter", "format_seconds"]

LOGGER = logging.getLogger("recsys_core.embeddings")

ProgressArg = bool | Callable[[int, int], Any]
LogSink = logging.Logger | logging.LoggerAdapter | Callable[[str], Any] | None


def format_seconds(seconds: float) -> str:
    """``95.2`` -> ``'1m35s'``; ``3.4`` -> ``'3.4s'``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class ProgressReporter:
    """Reports ``done`` out of ``total`` texts; ETA is weighted by ``work`` units (tokens).

    Use as a context manager; call :meth:`update` after each batch with the texts and work units
    it covered.
    """

    def __init__(
        self,
        total: int,
        *,
        total_work: float | None = None,
        progress: ProgressArg = False,
        log: LogSink = None,
        log_every_s: float = 10.0,
        label: str = "embedded",
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total = total
        self.total_work = float(total if total_work is None else total_work)
        self.done = 0
        self.work_done = 0.0
        self.label = label
        self.log_every_s = log_every_s
        self._clock = clock
        self._start = clock()
        self._last_log = self._start
        self._callback = progress if callable(progress) else None
        self._bar = None
        if progress is True and total > 0:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit="text", desc=label, leave=False)
        if log is None:
            self._emit: Callable[[str], Any] = LOGGER.info
        elif isinstance(log, logging.Logger | logging.LoggerAdapter):
            self._emit = log.info
        else:
            self._emit = log

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
        if exc[0] is None and self.total > 0:
            self._emit(self.line())

    @property
    def elapsed(self) -> float:
        return self._clock() - self._start

    def line(self) -> str:
        """One human line: counts, percentage, rate, ETA (or total time when finished)."""
        elapsed = max(self.elapsed, 1e-9)
        rate = self.done / elapsed
        pct = 100.0 * self.done / self.total if self.total else 100.0
        head = f"{self.label} {self.done}/{self.total} texts ({pct:.0f}%), {rate:.1f} texts/s"
        if self.done >= self.total:
            return f"{head}, took {format_seconds(elapsed)}"
        if self.work_done <= 0:
            return f"{head}, ETA unknown"
        eta = elapsed * (self.total_work - self.work_done) / self.work_done
        return f"{head}, ETA {format_seconds(eta)}"

    def update(self, n: int, work: float | None = None) -> None:
        self.done += n
        self.work_done += float(n if work is None else work)
        if self._bar is not None:
            self._bar.update(n)
        if self._callback is not None:
            self._callback(self.done, self.total)
        now = self._clock()
        if self.done < self.total and now - self._last_log >= self.log_every_s:
            self._last_log = now
            self._emit(self.line())
