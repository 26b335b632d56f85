"""``recsys-nightly``: the six steps for one run date, and ``recsys-backfill`` over a range.

Wiring only: which task runs after which, for which date. Logic lives in ``recsys_core``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.runtime import as_date, build_task_runner, n_shards, resolve_settings
from recsys_core.config import Settings
from recsys_core.io import Warehouse
from recsys_core.pipeline import is_complete
from tasks.steps import (
    clean_task,
    embed_task,
    evaluate_task,
    finalize_task,
    ingest_task,
    merge_task,
    score_shard_task,
    sql_task,
    train_task,
)

__all__ = ["backfill", "nightly", "run_pipeline"]


def _nightly_name() -> str:
    run_date = flow_run.parameters.get("run_date")
    return f"nightly-{as_date(run_date).isoformat()}"


def _backfill_name() -> str:
    p = flow_run.parameters
    return f"backfill-{as_date(p.get('start')).isoformat()}-to-{as_date(p.get('end')).isoformat()}"


def run_pipeline(settings: Settings, run_date: dt.date, force: bool = False) -> dict[str, Any]:
    """Ingest → clean → embed → train → evaluate → score (sharded) → report, for one date."""
    r = settings.runner
    retry = {"retries": r.retries, "retry_delay_seconds": r.retry_delay_seconds}
    late = {
        "retries": r.retries + r.late_data_retries,
        "retry_delay_seconds": r.late_data_delay_seconds if r.late_data_retries else r.retry_delay_seconds,
    }
    steps: dict[str, Any] = {}
    steps["ingest"] = ingest_task.with_options(**late)(settings, run_date, force)
    steps["clean"] = clean_task.with_options(**retry)(settings, run_date, force)
    steps["embed"] = embed_task.with_options(**retry)(settings, run_date)
    steps["train"] = train_task.with_options(**retry)(settings, run_date, force)
    steps["evaluate"] = evaluate_task.with_options(**retry)(settings, run_date, steps["train"]["challenger"])
    n = n_shards(settings)
    futures = [score_shard_task.with_options(**retry).submit(settings, run_date, i, n) for i in range(n)]
    shards = [f.result() for f in futures]
    steps["score"] = merge_task.with_options(**retry)(settings, run_date, shards)
    if settings.scoring.sql_url:
        steps["sql"] = sql_task.with_options(**retry)(settings, run_date)
    steps["report"] = finalize_task.with_options(**retry)(settings, run_date, steps)
    return steps


@flow(name="recsys-nightly", flow_run_name=_nightly_name, persist_result=False)
def nightly(
    run_date: dt.date | None = None,
    force: bool = False,
    k: int | None = None,
    models: list[str] | None = None,
    tune_calls: int | None = None,
    config_path: str | None = None,
    landing: str | None = None,
    warehouse: str | None = None,
    task_runner: str | None = None,
) -> dict[str, Any]:
    """Run every step for ``run_date`` (default: yesterday, UTC).

    ``force`` re-ingests and re-cleans the date and re-tunes the models; otherwise completed
    expensive work (embeddings of unchanged text, recent tuning) is reused.
    """
    day = as_date(run_date)
    settings = resolve_settings(
        config_path, landing=landing, warehouse=warehouse, k=k, models=models, tune_calls=tune_calls,
        task_runner=task_runner,
    )
    get_run_logger().info("recsys-nightly %s: landing=%s warehouse=%s", day, settings.landing, settings.warehouse)
    with Warehouse(settings.warehouse).lock(f"run_date={day.isoformat()}"):
        return run_pipeline(settings, day, force)


@flow(name="recsys-backfill", flow_run_name=_backfill_name, persist_result=False)
def backfill(
    start: dt.date,
    end: dt.date,
    force: bool = False,
    k: int | None = None,
    models: list[str] | None = None,
    tune_calls: int | None = None,
    config_path: str | None = None,
    landing: str | None = None,
    warehouse: str | None = None,
    task_runner: str | None = None,
) -> dict[str, Any]:
    """Every date from ``start`` to ``end`` in order; complete dates are skipped unless ``force``.

    A failed date stops the backfill with that date named; earlier dates keep their outputs.
    """
    first, last = as_date(start), as_date(end)
    if last < first:
        raise ValueError(f"backfill end {last} is before start {first}")
    settings = resolve_settings(
        config_path, landing=landing, warehouse=warehouse, k=k, models=models, tune_calls=tune_calls,
        task_runner=task_runner,
    )
    log = get_run_logger()
    done, skipped = [], []
    day = first
    while day <= last:
        if not force and is_complete(settings, day):
            log.info("%s already complete: skipped (use force to redo)", day)
            skipped.append(day.isoformat())
        else:
            try:
                child = nightly
                if settings.runner.task_runner != "threads":
                    child = nightly.with_options(task_runner=build_task_runner(settings.runner))
                child(
                    run_date=day, force=force, k=k, models=models, tune_calls=tune_calls,
                    config_path=config_path, landing=str(settings.landing),
                    warehouse=str(settings.warehouse), task_runner=task_runner,
                )
            except Exception as exc:
                raise RuntimeError(
                    f"backfill stopped at {day}: {type(exc).__name__}: {exc} "
                    f"(dates before it are complete: {done or 'none'})"
                ) from exc
            done.append(day.isoformat())
        day += dt.timedelta(days=1)
    return {"completed": done, "skipped": skipped}
