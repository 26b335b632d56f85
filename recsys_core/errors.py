"""Which failures are worth retrying: the one policy the orchestration layer applies.

A nightly step is retried only when running it again can give another outcome:

* **transient** (retried): I/O and network errors (:class:`OSError`, which covers
  ``ConnectionError``, ``TimeoutError``, a full disk or a storage hiccup), and faults injected by a
  drill (:class:`~recsys_core.pipeline.InjectedFault`). A missing landing partition is transient
  for the ingest step only (the drop may still arrive); the caller says so with ``missing_ok``.
* **permanent** (never retried): everything else: configuration and validation errors
  (``ValueError``, pydantic's ``ValidationError``), a corrupt file, an unknown model, a missing
  local model directory, a date whose lock another run holds, a run that lost its lock
  (:class:`~recsys_core.io.LeaseLostError`), and programming errors. Running them again would fail
  the same way after the same wait.
"""

from __future__ import annotations

__all__ = ["is_transient"]


def is_transient(exc: BaseException, *, missing_partition_is_transient: bool = False) -> bool:
    """Whether a step that raised ``exc`` may succeed if it is simply run again."""
    from recsys_core.embeddings._model import ModelNotFoundError
    from recsys_core.ingest._errors import LandingError, MissingPartitionError
    from recsys_core.pipeline._faults import InjectedFault

    if isinstance(exc, InjectedFault):
        return True
    if isinstance(exc, MissingPartitionError):
        return missing_partition_is_transient
    if isinstance(exc, LandingError | ModelNotFoundError | IsADirectoryError | NotADirectoryError):
        return False
    return isinstance(exc, OSError)
