"""Errors and warnings raised while reading the landing zone and cleaning partitions."""

from __future__ import annotations

__all__ = [
    "LandingError",
    "LandingLayoutError",
    "LandingPathError",
    "LandingReadError",
    "LandingSchemaError",
    "LandingWarning",
    "MissingPartitionError",
]


class LandingError(Exception):
    """Base of every error about landing data (wrong schema, unreadable file, missing partition)."""


class LandingSchemaError(LandingError, ValueError):
    """A landing file lacks a required column (or has two columns of the same name).

    The message names the file, the missing column(s), the columns found and the ones expected.
    """


class LandingReadError(LandingError, ValueError):
    """A landing file cannot be parsed (bad CSV/JSON/Parquet, unknown extension, not UTF-8).

    The message names the file (and line, where known) and the parser's error.
    """


class LandingPathError(LandingError, ValueError):
    """A landing entry is a symbolic link whose target lies outside the landing root.

    The message names the link; neither the target's path nor its content is shown.
    """


class LandingLayoutError(LandingError, ValueError):
    """The landing zone holds entries that are not partitions (``date=2026-5-4``, a stray file).

    Raised when ``[ingest] unrecognised_paths = "fail"`` (the default); the message names every
    such path relative to the landing root.
    """


class MissingPartitionError(LandingError, FileNotFoundError):
    """A partition that the run needs does not exist; the message names the missing path."""


class LandingWarning(UserWarning):
    """Landing data was accepted but something was dropped (extra columns, empty partition)."""
