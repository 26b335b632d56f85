"""Earlier nights, read back from their run markers (``runs/run_date=D.json``).

A run marker is the night's :class:`~recsys_core.results.RunSummary`, written last by the
finalize step: the one record of a completed night. :func:`run_history` is the one reader of it;
the previous night's drift baseline (:func:`previous_run`) and the "metrics over run dates" plot
(:func:`metrics_history`) both come from it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import polars as pl
from pydantic import ValidationError

from recsys_core.io import CorruptFileError, Warehouse, fold_with_checkpoint, read_json
from recsys_core.results import RunSummary

__all__ = ["metrics_frame", "metrics_history", "previous_run", "run_history"]

_METRICS_SCHEMA = {
    "run_date": pl.Date,
    "role": pl.String,
    "model_id": pl.String,
    "metric": pl.String,
    "value": pl.Float64,
}


def run_history(warehouse: Warehouse, until: dt.date | None = None) -> list[RunSummary]:
    """The completed nights dated on or before ``until`` (every one without it), oldest first.

    A marker that cannot be read or is not a run summary (damaged, or written by another version)
    is left out: one bad night must not break every later report.
    """
    return _summaries(
        warehouse, [d for d in warehouse.completed_run_dates() if until is None or d <= until]
    )


def _summaries(warehouse: Warehouse, days: Sequence[dt.date]) -> list[RunSummary]:
    summaries = (_summary(warehouse, day) for day in days)
    return [s for s in summaries if s is not None]


def _summary(warehouse: Warehouse, day: dt.date) -> RunSummary | None:
    try:
        # a marker at the version the listing showed is read once per process
        return RunSummary.model_validate(read_json(warehouse.run_marker(day), cached=True))
    except (FileNotFoundError, CorruptFileError, ValidationError):
        return None


def previous_run(warehouse: Warehouse, run_date: dt.date) -> RunSummary | None:
    """The latest completed night strictly before ``run_date`` (None if there is none), read
    newest first: one marker, unless the newest ones cannot be read."""
    for day in reversed(warehouse.completed_run_dates()):
        if day < run_date and (summary := _summary(warehouse, day)) is not None:
            return summary
    return None


def metrics_frame(summaries: list[RunSummary]) -> pl.DataFrame:
    """Long frame ``run_date, role, model_id, metric, value`` of the nights' holdout metrics
    (``role``: challenger, or champion when there was one), sorted by ``(run_date, role,
    metric)``."""
    rows = []
    for s in summaries:
        ev = s.steps.evaluate
        day = dt.date.fromisoformat(s.run_date)
        roles = [("challenger", ev.challenger, ev.challenger_metrics)]
        if ev.champion_before:
            roles.append(("champion", ev.champion_before, ev.champion_metrics))
        for role, model_id, held in roles:
            for metric, value in (held.metrics if held else {}).items():
                rows.append((day, role, model_id, metric, float(value)))
    return pl.DataFrame(rows, schema=_METRICS_SCHEMA, orient="row").sort(
        "run_date", "role", "metric"
    )


def metrics_history(warehouse: Warehouse, until: dt.date | None = None) -> pl.DataFrame:
    """:func:`metrics_frame` of every completed night dated on or before ``until``.

    On an object store it starts from a checkpoint (:func:`recsys_core.io.fold_with_checkpoint`):
    a night reads one checkpoint and the markers after it, not every marker ever written."""
    stats = warehouse.partition_stats(warehouse.root / "runs")  # one listing
    return fold_with_checkpoint(
        warehouse.checkpoints("run_metrics"),
        {d: s.version for d, s in stats.items()},
        [d for d in stats if until is None or d <= until],
        lambda dates: metrics_frame(_summaries(warehouse, dates)),
        lambda df: df.sort("run_date", "role", "metric"),
        schema=_METRICS_SCHEMA,
        tag="run metrics v1",
    )
