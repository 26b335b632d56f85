"""``recsys-nightly``: the six steps for one run date, and ``recsys-backfill-local`` over a range
(in this process; the deployment ``recsys-backfill/backfill`` runs each date as its own run).

Wiring only: which task runs after which, for which date. Logic lives in ``recsys_core``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.parameters import RunOptions
from flows.runtime import (
    as_date,
    default_run_date,
    n_shards,
    n_workers,
    shared_task_runner,
    with_deployment_defaults,
    with_task_runner,
)
from recsys_core.config import Settings
from recsys_core.io import Warehouse
from recsys_core.pipeline import backfill_plan
from recsys_core.results import RunSteps, RunSummary
from tasks.artifacts import backfill_rows, publish_backfill
from tasks.steps import (
    abtest_task,
    clean_task,
    embed_task,
    evaluate_task,
    finalize_task,
    ingest_commit_task,
    ingest_plan_task,
    ingest_slice_task,
    ingest_task,
    merge_task,
    score_shard_task,
    sql_task,
    train_task,
)

__all__ = ["backfill", "backfill_name", "nightly", "run_pipeline"]


def _scheduled_run_date(run_date: dt.date | str | None) -> dt.date:
    """An explicit date, else the day before the run was *scheduled* (a late start still
    processes the night it was meant for), else yesterday."""
    if run_date not in (None, ""):
        return as_date(run_date)
    scheduled = flow_run.scheduled_start_time
    if scheduled is not None:
        return default_run_date(scheduled.astimezone(dt.UTC).date())
    return default_run_date()


def _nightly_name() -> str:
    return f"nightly-{_scheduled_run_date(flow_run.parameters.get('run_date')).isoformat()}"


def backfill_name() -> str:
    """``backfill-<start>-to-<end>-at-<submitted, UTC>``: a resubmitted range is told apart from
    the first by when it was submitted."""
    p = flow_run.parameters
    name = f"backfill-{as_date(p.get('start')).isoformat()}-to-{as_date(p.get('end')).isoformat()}"
    submitted = flow_run.scheduled_start_time
    if submitted is not None:
        name += f"-at-{submitted.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"
    return name


def run_pipeline(settings: Settings, run_date: dt.date, force: bool = False) -> RunSummary:
    """Ingest → clean → embed → train → evaluate → score (sharded) → report, for one date."""
    r = settings.runner
    retry = {"retries": r.retries, "retry_delay_seconds": r.retry_delay_seconds}
    late = {
        "retries": r.retries + r.late_data_retries,
        "retry_delay_seconds": r.late_data_delay_seconds
        if r.late_data_retries
        else r.retry_delay_seconds,
    }
    steps: dict[str, Any] = {}
    workers = n_workers(settings)
    if workers > 1:  # the pending dates' partitions, one slice per worker
        planned = ingest_plan_task.with_options(**late)(settings, run_date, force)
        parts = [
            ingest_slice_task.with_options(**retry).submit(settings, planned, part)
            for part in planned.slices(workers)
        ]
        steps["ingest"] = ingest_commit_task.with_options(**retry)(
            settings, run_date, planned, [f.result() for f in parts]
        )
    else:  # one task: its partitions are written by a thread pool in the task
        steps["ingest"] = ingest_task.with_options(**late)(settings, run_date, force)
    steps["clean"] = clean_task.with_options(**retry)(settings, run_date, force)
    steps["embed"] = embed_task.with_options(**retry)(settings, run_date)
    steps["train"] = train_task.with_options(**retry)(settings, run_date, force)
    steps["evaluate"] = evaluate_task.with_options(**retry)(
        settings, run_date, steps["train"].challenger
    )
    n = n_shards(settings)
    model = steps["evaluate"].champion_after  # the gate's model, whatever another run promotes
    futures = [
        score_shard_task.with_options(**retry).submit(settings, run_date, i, n, model)
        for i in range(n)
    ]
    shards = [f.result() for f in futures]
    steps["score"] = merge_task.with_options(**retry)(settings, run_date, shards)
    if settings.scoring.sql_url:
        steps["sql"] = sql_task.with_options(**retry)(settings, run_date)
    if settings.abtest.experiment:
        steps["abtest"] = abtest_task.with_options(**retry)(settings, run_date)
    return finalize_task.with_options(**retry)(settings, run_date, RunSteps(**steps))


@flow(name="recsys-nightly", flow_run_name=_nightly_name, persist_result=False)
def nightly(run_date: dt.date | None = None, options: RunOptions = RunOptions()) -> RunSummary:
    """Run every step for one date: ingest, clean, embed, train, evaluate, score, report.

    Args:
        run_date: The logical date to process (YYYY-MM-DD). Empty: the day before the scheduled
            start, in UTC.
        options: How to run: force, K, models, search budget, config, landing, warehouse, task
            runner. In a deployment run, the fields not given keep the deployment's defaults.
    """
    day = _scheduled_run_date(run_date)
    options = with_deployment_defaults(options)
    settings = options.settings()
    get_run_logger().info(
        "recsys-nightly %s: landing=%s warehouse=%s", day, settings.landing, settings.warehouse
    )
    with Warehouse(settings.warehouse).lock(f"run_date={day.isoformat()}"):
        return run_pipeline(settings, day, options.force)


@flow(name="recsys-backfill-local", flow_run_name=backfill_name, persist_result=False)
def backfill(start: dt.date, end: dt.date, options: RunOptions = RunOptions()) -> dict[str, Any]:
    """Every date from ``start`` to ``end`` in order, in this process (the CLI's backfill).

    A failed date stops the backfill with that date named; earlier dates keep their outputs.

    Args:
        start: First date (YYYY-MM-DD).
        end: Last date, inclusive.
        options: How to run each date; with force, dates already complete are redone.
    """
    first, last = as_date(start), as_date(end)
    settings = options.settings()
    options = options.located(settings)
    log = get_run_logger()
    todo, skipped = backfill_plan(settings, first, last, force=options.force)
    for day in skipped:
        log.info("%s already complete: skipped (use force to redo)", day)
    done: list[str] = []
    with shared_task_runner(settings.runner) as runner:  # dask: one cluster for every date
        child = with_task_runner(nightly, runner)
        for day in todo:
            try:
                child(run_date=day, options=options)
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
                publish_backfill(first, last, backfill_rows(todo, skipped, done, (day, why)))
                raise RuntimeError(
                    f"backfill stopped at {day}: {why} "
                    f"(dates before it are complete: {done or 'none'})"
                ) from exc
            done.append(day.isoformat())
    publish_backfill(first, last, backfill_rows(todo, skipped, done))
    return {"completed": done, "skipped": [d.isoformat() for d in skipped]}
