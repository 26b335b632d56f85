"""Thin Prefect tasks: retries, logging and artifacts around one core function each.

Tasks take the run's :class:`~recsys_core.config.Settings` and a date, and return the core
step's small frozen result (:mod:`recsys_core.results`): never a DataFrame or a model. Caching is off (``NO_CACHE``): the core steps are
themselves incremental (embeddings by content hash, tuning by age) and every output is replaced
atomically, so re-running a task is always safe.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from recsys_core import pipeline
from recsys_core.config import Settings
from recsys_core.errors import is_transient
from recsys_core.ingest import IngestedSlice, MissingPartitionError
from recsys_core.pipeline import PlannedIngest
from recsys_core.results import (
    AbtestResult,
    CleanResult,
    EmbedResult,
    EvaluateResult,
    IngestStepResult,
    RunSteps,
    RunSummary,
    ScoreResult,
    ShardResult,
    Skipped,
    SqlResult,
    TrainResult,
)
from tasks.artifacts import (
    publish_abtest,
    publish_clean,
    publish_evaluation,
    publish_night,
    publish_train,
)

__all__ = [
    "abtest_task",
    "clean_task",
    "embed_task",
    "evaluate_task",
    "finalize_task",
    "ingest_commit_task",
    "ingest_plan_task",
    "ingest_slice_task",
    "ingest_task",
    "merge_task",
    "score_shard_task",
    "sql_task",
    "train_task",
]

_NO_CACHE = {"cache_policy": NO_CACHE, "persist_result": False}


def _state_error(state: Any) -> BaseException | None:
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - we only classify it
        return exc
    return None


def _retry_if_transient(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's signature
    """Retry I/O, network and injected faults only; never configuration, validation, a corrupt
    file or a missing partition (:func:`recsys_core.errors.is_transient`)."""
    exc = _state_error(state)
    return exc is None or is_transient(exc)


def _retry_ingest(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's signature
    """As :func:`_retry_if_transient`, and a missing landing partition too (it may still land)."""
    exc = _state_error(state)
    return exc is None or is_transient(exc, missing_partition_is_transient=True)


_COMMON = {**_NO_CACHE, "retry_condition_fn": _retry_if_transient}


def _log_ingest(log: Any, out: IngestStepResult, run_date: dt.date) -> None:
    """What the ingest step did, for the run's log: rows, a catch-up's date range, late files,
    unrecognised and vanished landing paths."""
    log.info("ingested %s", out.rows)
    dates = sorted({d for ds in out.dates.values() for d in ds})
    if len(dates) > 1 or (dates and dates[-1] != run_date.isoformat()):
        log.info(
            "catch-up: this night ingested %d landing date(s), %s to %s",
            len(dates),
            dates[0],
            dates[-1],
        )
    if out.late:
        log.warning("late landing files picked up: %s", ", ".join(out.late))
    if out.unrecognised:
        log.warning("unrecognised landing paths (not read): %s", ", ".join(out.unrecognised))
    if out.vanished:
        log.warning("ingested partitions gone from landing: %s", ", ".join(out.vanished))


_INGEST = {**_NO_CACHE, "retry_condition_fn": _retry_ingest}


@contextmanager
def _late_data_logged(log: Any, settings: Settings, run_date: dt.date) -> Iterator[None]:
    """Log where ingest reads and writes, and a missing landing partition as late data."""
    log.info("ingest %s from %s into %s", run_date, settings.landing, settings.warehouse)
    try:
        yield
    except MissingPartitionError as exc:
        log.warning("late data: %s", exc)
        raise


@task(name="ingest", **_INGEST)
def ingest_task(settings: Settings, run_date: dt.date, force: bool = False) -> IngestStepResult:
    log = get_run_logger()
    with _late_data_logged(log, settings, run_date):
        out = pipeline.ingest_step(settings, run_date, force=force)
    _log_ingest(log, out, run_date)
    return out


@task(name="ingest-plan", **_INGEST)
def ingest_plan_task(settings: Settings, run_date: dt.date, force: bool = False) -> PlannedIngest:
    log = get_run_logger()
    with _late_data_logged(log, settings, run_date):
        planned = pipeline.plan_ingest_step(settings, run_date, force=force)
    log.info("ingest plan: %d landing partition(s) to write", len(planned.plan.todo))
    return planned


@task(name="ingest-dates", **_COMMON)
def ingest_slice_task(
    settings: Settings, planned: PlannedIngest, part: tuple[tuple[str, dt.date], ...]
) -> IngestedSlice:
    out = pipeline.ingest_slice_step(settings, planned, part)
    get_run_logger().info("wrote %d raw partition(s), %s to %s", len(part), part[0][1], part[-1][1])
    return out


@task(name="ingest-commit", **_COMMON)
def ingest_commit_task(
    settings: Settings, run_date: dt.date, planned: PlannedIngest, slices: list[IngestedSlice]
) -> IngestStepResult:
    out = pipeline.commit_ingest_step(settings, planned, slices)
    _log_ingest(get_run_logger(), out, run_date)
    return out


@task(name="clean", **_COMMON)
def clean_task(settings: Settings, run_date: dt.date, force: bool = False) -> CleanResult:
    out = pipeline.clean_step(settings, run_date, force=force)
    get_run_logger().info("cleaned %d date(s): %s", len(out.dates_cleaned), out.events.model_dump())
    publish_clean(run_date, out)
    return out


class _PrefectLogHandler(logging.Handler):
    """Forwards the core's progress lines (rate, ETA) to the task's Prefect log."""

    def __init__(self, logger: Any) -> None:
        super().__init__(logging.INFO)
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        self._logger.info(record.getMessage())


@task(name="embed", **_COMMON)
def embed_task(settings: Settings, run_date: dt.date) -> EmbedResult:
    log = get_run_logger()
    core_logger = logging.getLogger("recsys_core.embeddings")
    handler = _PrefectLogHandler(log)
    core_logger.addHandler(handler)
    try:
        out = pipeline.embed_step(settings, run_date, log=log.info)
    finally:
        core_logger.removeHandler(handler)
    log.info("embeddings: %s", out.model_dump())
    return out


@task(name="train", **_COMMON)
def train_task(settings: Settings, run_date: dt.date, force: bool = False) -> TrainResult:
    out = pipeline.train_step(settings, run_date, force=force)
    get_run_logger().info("challenger %s (%s) params=%s", out.challenger, out.model, out.params)
    publish_train(run_date, out)
    return out


@task(name="evaluate", **_COMMON)
def evaluate_task(settings: Settings, run_date: dt.date, challenger_id: str) -> EvaluateResult:
    out = pipeline.evaluate_step(settings, run_date, challenger_id)
    get_run_logger().info("decision: %s", out.decision.reason)
    publish_evaluation(run_date, out)
    return out


@task(name="score-shard", **_COMMON)
def score_shard_task(
    settings: Settings, run_date: dt.date, shard: int, n_shards: int, model_id: str | None = None
) -> ShardResult:
    out = pipeline.score_shard(settings, run_date, shard, n_shards, model_id)
    get_run_logger().info(
        "shard %d/%d: %d users, %d rows", shard + 1, n_shards, out.users, out.rows
    )
    return out


@task(name="write-recommendations", **_COMMON)
def merge_task(settings: Settings, run_date: dt.date, shards: list[ShardResult]) -> ScoreResult:
    out = pipeline.merge_scores(settings, run_date, shards)
    get_run_logger().info(
        "wrote %d recommendations for %d users to %s", out.rows, out.users, out.path
    )
    return out


@task(name="publish-sql", **_COMMON)
def sql_task(settings: Settings, run_date: dt.date) -> SqlResult | Skipped:
    out = pipeline.publish_sql(settings, run_date)
    get_run_logger().info("serving database: %s", out.model_dump())
    return out


@task(name="abtest-readout", **_COMMON)
def abtest_task(settings: Settings, run_date: dt.date) -> AbtestResult | Skipped:
    from recsys_core.abtest import readout_step

    out = readout_step(settings, run_date)
    if isinstance(out, AbtestResult):
        get_run_logger().info("A/B %s: %s", out.experiment, out.reason)
        publish_abtest(run_date, out)
    return out


@task(name="report", **_COMMON)
def finalize_task(settings: Settings, run_date: dt.date, steps: RunSteps) -> RunSummary:
    out = pipeline.finalize_step(settings, run_date, steps)
    url = publish_night(run_date, out, str(settings.warehouse))
    get_run_logger().info("report: %s", url)
    return out
