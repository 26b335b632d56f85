"""``recsys-backfill/backfill``: one ``recsys-nightly/manual`` child run per date, idempotently.

A backfill submitted through the deployments runs each date as its own flow run of the manual
deployment (so every date has its own logs, state and retry button in the UI). Each child is
created with an idempotency key made of the child deployment, the date and a digest of the other
parameters, so:

* resubmitting the same range (or a retry of a crashed backfill run) finds the existing child runs
  instead of creating new ones: a running child is waited for, a completed date is skipped;
* a child that ended Failed/Crashed/Cancelled in an earlier backfill is *rescheduled* (the same
  flow run runs again) rather than duplicated;
* ``force`` adds the backfill's own flow-run id to the key: a forced backfill redoes its dates once,
  and a retry of that same forced backfill still does not redo them twice.

Dates are run in order, one at a time; a failed date stops the backfill with that date named.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from prefect.states import Scheduled

from flows.nightly import backfill_name
from flows.parameters import RunOptions
from flows.runtime import as_date, with_deployment_defaults
from recsys_core.pipeline import backfill_plan
from tasks.artifacts import backfill_rows, publish_backfill

__all__ = [
    "CHILD_DEPLOYMENT",
    "backfill_via_deployments",
    "child_parameters",
    "idempotency_key",
    "submit_child",
    "wait_for_run",
]

CHILD_DEPLOYMENT = "recsys-nightly/manual"
"""The deployment that runs one date of a backfill (no schedule, same flow as the nightly)."""

POLL_SECONDS = 2.0


def child_parameters(day: dt.date, options: RunOptions | None = None) -> dict[str, Any]:
    """JSON parameters of the ``nightly`` flow for ``day``; unset (None) options are left out so
    that the deployment's defaults apply."""
    return {"run_date": day.isoformat(), "options": (options or RunOptions()).parameters()}


def idempotency_key(
    deployment: str, day: dt.date, parameters: dict[str, Any], nonce: str | None = None
) -> str:
    """``<deployment>|<date>|<digest of the other parameters>[|<nonce>]``.

    The same request gives the same key (the API then returns the existing run); a different
    configuration (another K, model list or warehouse) is different work and gets another key.
    """
    rest = {key: value for key, value in parameters.items() if key not in ("run_date", "options")}
    rest.update(parameters.get("options") or {})  # flat, as before options were one parameter
    digest = hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()
    key = f"{deployment}|{day.isoformat()}|{digest[:16]}"
    return f"{key}|{nonce}" if nonce else key


def submit_child(
    day: dt.date,
    parameters: dict[str, Any],
    key: str,
    *,
    deployment: str = CHILD_DEPLOYMENT,
) -> tuple[FlowRun, str]:
    """Create (or find, by ``key``) the child run for ``day`` without waiting for it.

    Returns the flow run and what happened: ``"submitted"`` (a new run, or the scheduled or
    running one that already has this key: wait for it) or ``"rescheduled"`` (the run with this
    key had ended, yet the date is still not complete, so the same run is scheduled again).
    """
    try:
        run = run_deployment(
            name=deployment,
            parameters=parameters,
            idempotency_key=key,
            flow_run_name=f"nightly-{day.isoformat()}",
            timeout=0,
            as_subflow=True,
        )
    except ObjectNotFound:
        raise RuntimeError(
            f"deployment {deployment} is not registered on the Prefect API; start `recsys serve` "
            "(or deploy_all to a work pool) against this server first"
        ) from None
    if run.state is not None and run.state.is_final():
        with get_client(sync_client=True) as client:
            result = client.set_flow_run_state(run.id, Scheduled(name="AwaitingRetry"))
            if result.status.value != "ACCEPT":
                raise RuntimeError(
                    f"could not reschedule flow run {run.name} ({run.id}) for {day}: "
                    f"{result.status.value} {result.details}"
                )
            return client.read_flow_run(run.id), "rescheduled"
    return run, "submitted"


def wait_for_run(run_id: Any, *, poll_seconds: float = POLL_SECONDS) -> FlowRun:
    """Poll the API until the flow run reaches a final state; return it."""
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                return run
            time.sleep(poll_seconds)


@flow(name="recsys-backfill", flow_run_name=backfill_name, persist_result=False)
def backfill_via_deployments(
    start: dt.date, end: dt.date, options: RunOptions = RunOptions()
) -> dict[str, Any]:
    """Every date from ``start`` to ``end`` as a ``recsys-nightly/manual`` run, in date order.

    Dates already complete in the warehouse are skipped unless ``force``. Resubmitting the same
    range never runs a date twice (idempotency key per deployment, date and parameters).

    Args:
        start: First date to run (YYYY-MM-DD).
        end: Last date to run, inclusive (YYYY-MM-DD).
        options: How to run each date; the fields not given keep the deployment's defaults. With
            force, complete dates are redone, each once (the backfill's own run id joins the
            children's idempotency keys); retrying that backfill does not redo them again.
    """
    options = with_deployment_defaults(options)
    settings = options.settings()
    options = options.located(settings)
    log = get_run_logger()
    first, last = as_date(start), as_date(end)
    todo, skipped = backfill_plan(settings, first, last, force=options.force)
    for day in skipped:
        log.info("%s already complete in %s: skipped (use force to redo)", day, settings.warehouse)
    done: list[str] = []
    runs: dict[str, str] = {}
    names: dict[str, str] = {}
    nonce = str(flow_run.id) if options.force else None
    for day in todo:
        params = child_parameters(day, options)
        run, how = submit_child(day, params, idempotency_key(CHILD_DEPLOYMENT, day, params, nonce))
        log.info("%s: %s child run %s (%s)", day, how, run.name, run.id)
        run = wait_for_run(run.id)
        runs[day.isoformat()] = str(run.id)
        names[day.isoformat()] = run.name
        if not run.state.is_completed():
            why = f"{run.state.type.value}: {run.state.message or 'no message'}"
            publish_backfill(first, last, backfill_rows(todo, skipped, done, (day, why), names))
            raise RuntimeError(
                f"backfill stopped at {day}: child run {run.name} ({run.id}) ended {why} "
                f"(dates before it are complete: {done or 'none'})"
            )
        done.append(day.isoformat())
    publish_backfill(first, last, backfill_rows(todo, skipped, done, None, names))
    return {"completed": done, "skipped": [d.isoformat() for d in skipped], "runs": runs}
