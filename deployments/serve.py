"""The three deployments, and the two ways to run them: ``serve`` (one process) or a work pool.

===============================  ========================  =====================================
deployment                       schedule                  concurrency
===============================  ========================  =====================================
``recsys-nightly/nightly``       cron ``0 2 * * *`` UTC    1 run at a time, later ones queue
``recsys-nightly/manual``        none (UI form / API)      1 run at a time, later ones queue
``recsys-backfill/backfill``     none                      1 backfill at a time, later ones queue
===============================  ========================  =====================================

Why per-deployment limits: a backfill runs its dates as ``manual`` runs, one after the other, so
at most one backfill date runs at any moment, and it never takes the scheduled nightly's slot (the
nightly deployment has its own limit). Runs beyond a limit wait in ``AwaitingConcurrencySlot``
(enforced by the server when a run becomes Pending, so it holds for ``serve`` and for workers).
Two runs for the same date (the nightly and a manual run, say) are kept apart by the pipeline's
per-date lock: the second fails at once naming the lock file and its holder.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron
from prefect.types.entrypoint import EntrypointType

from flows.parameters import RunOptions

__all__ = ["NIGHTLY_CRON", "build_deployments", "deploy_all", "serve_all"]

NIGHTLY_CRON = "0 2 * * *"
MIN_SERVE_LIMIT = 3
"""A backfill holds one slot while its child runs in another; the scheduled nightly needs a third."""


def _queue(limit: int) -> ConcurrencyLimitConfig:
    return ConcurrencyLimitConfig(limit=limit, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def _defaults(defaults: RunOptions | None) -> dict[str, Any]:
    """Default parameters of every deployment: ``{"options": ...}`` with the options given, paths
    made absolute (runs may start in another folder); ``{}`` when none is given."""
    from recsys_core.io import resolve_location

    if defaults is None:
        return {}
    paths = {
        key: str(resolve_location(value))
        for key in ("config_path", "landing", "warehouse")
        if (value := getattr(defaults, key)) is not None
    }
    options = defaults.model_copy(update=paths).model_dump(mode="json", exclude_defaults=True)
    return {"options": options} if options else {}


def build_deployments(
    defaults: RunOptions | None = None,
    cron: str = NIGHTLY_CRON,
    timezone: str = "UTC",
    tags: Sequence[str] = ("recsys",),
) -> list[RunnerDeployment]:
    """``[nightly, manual, backfill]`` as Prefect runner deployments (nothing is sent to the API).

    ``defaults`` (normally the config file, landing and warehouse) become the default ``options``
    parameter of all three; a manual run or a backfill can still override any field of it. The
    nightly deployment passes no ``run_date``, so each scheduled run processes the previous day
    (UTC).
    """
    from deployments._backfill import backfill_via_deployments
    from flows.nightly import nightly

    params = _defaults(defaults)
    common: dict[str, Any] = {
        "parameters": params,
        "tags": list(tags),
        "enforce_parameter_schema": True,
        "entrypoint_type": EntrypointType.MODULE_PATH,
    }
    return [
        nightly.to_deployment(
            "nightly",
            schedules=[Cron(cron, timezone=timezone)],
            concurrency_limit=_queue(1),
            description=f"The nightly pipeline for the previous day, on cron {cron!r} ({timezone}).",
            **common,
        ),
        nightly.to_deployment(
            "manual",
            concurrency_limit=_queue(1),
            description="One run of the nightly pipeline with chosen parameters (run date, force, "
            "K, models, tuning budget). Backfills run their dates here.",
            **common,
        ),
        backfill_via_deployments.to_deployment(
            "backfill",
            concurrency_limit=_queue(1),
            description="Every date in [start, end] as a recsys-nightly/manual run, in order; "
            "complete dates are skipped unless force; resubmitting never runs a date twice.",
            **common,
        ),
    ]


def serve_all(
    defaults: RunOptions | None = None,
    cron: str = NIGHTLY_CRON,
    limit: int | None = None,
    reports_port: int = 4201,
    reports_host: str = "127.0.0.1",
) -> None:
    """Register the three deployments (``defaults``: their default options) and run them from
    this process until interrupted.

    Needs ``PREFECT_API_URL`` pointing at a Prefect server (``make server``) for the schedule and
    the UI; ``limit`` caps concurrent runs in this process (at least 3, or None for no cap).
    With a local warehouse, its ``reports/`` folder is served on
    ``http://reports_host:reports_port/`` so that the report links in the UI open (0: not served).
    """
    if limit is not None and limit < MIN_SERVE_LIMIT:
        raise ValueError(
            f"serve limit {limit} is too small: a backfill holds one run slot while its child "
            f"date runs in another, and the nightly schedule needs a third; use >= "
            f"{MIN_SERVE_LIMIT} or no limit"
        )
    from prefect import serve
    from prefect.settings import PREFECT_API_URL

    from flows.runtime import configure_environment

    configure_environment()
    if not PREFECT_API_URL.value():
        print(
            "recsys serve: PREFECT_API_URL is not set, so the deployments live in a temporary "
            "local server that no UI can see; start `make server` and export "
            "PREFECT_API_URL=http://127.0.0.1:4200/api first",
            file=sys.stderr,
        )
    settings = (defaults or RunOptions()).settings()
    stale = _stale_landing_warning(settings.landing)
    if stale:
        print(f"recsys serve: warning: {stale}", file=sys.stderr)
    if reports_port:
        from deployments._reports import serve_reports

        root = settings.warehouse
        if "://" not in str(root):  # object stores get pre-signed links instead
            try:
                base = serve_reports(Path(root), reports_host, reports_port)
                print(f"recsys serve: reports of {root} on {base}", file=sys.stderr)
            except OSError as exc:  # the schedule matters more than the links
                print(
                    f"recsys serve: warning: {exc}; report links stay file:// URLs", file=sys.stderr
                )
    serve(*build_deployments(defaults, cron=cron), limit=limit)


def _stale_landing_warning(landing: Any) -> str | None:
    """A one-line warning when the landing zone has no events for yesterday (UTC): the scheduled
    nightly processes yesterday, so every scheduled night would wait for a drop and then fail."""

    from flows.runtime import default_run_date
    from recsys_core.ingest import landing_dates

    yesterday = default_run_date()
    try:
        dates = landing_dates(landing, "events", until=yesterday)
    except Exception as exc:  # an unreadable landing zone is the run's error to report
        return f"cannot list the landing zone {landing}: {type(exc).__name__}: {exc}"
    if dates and dates[-1] == yesterday:
        return None
    newest = dates[-1].isoformat() if dates else "none"
    end = yesterday.isoformat()
    return (
        f"the landing zone {landing} has no events for {end} (newest: {newest}); the scheduled "
        f"nightly processes the previous day, so it will fail until that day's files land. For "
        f"a demo whose schedule has data: recsys landing synthetic --out {landing} "
        f"--end-date {end} (a new folder), or run past dates from the manual deployment"
    )


def deploy_all(
    work_pool_name: str,
    defaults: RunOptions | None = None,
    cron: str = NIGHTLY_CRON,
    *,
    image: str | None = None,
    env: Mapping[str, str] | None = None,
) -> list[UUID]:
    """Register the three deployments on a work pool (``prefect worker start --pool NAME`` runs them).

    The entrypoints are module paths (``flows.nightly.nightly``), so a *process* worker needs this
    project importable: install it (``pip install -e .``) or start the worker from the repository
    root. A container pool (Docker, Kubernetes, ECS) runs each flow run in ``image``, which must
    have the project installed (see ``deployments/README.md``); it is used as it is (nothing is
    built or pushed). ``env``: environment variables of every flow run (job variables), e.g.
    ``AWS_REGION`` or ``AWS_ENDPOINT_URL``; keep secrets in the pool's job template or a role,
    not here (job variables are stored in the deployment). A pool without an ``image``
    variable (a process pool) refuses ``image``: Prefect's ValueError names the pool.
    """
    from prefect import deploy

    deployments = build_deployments(defaults, cron=cron)
    if env:
        for d in deployments:
            d.job_variables = {**d.job_variables, "env": dict(env)}
    return deploy(
        *deployments,
        work_pool_name=work_pool_name,
        image=image,
        build=False,
        push=False,
        print_next_steps_message=False,
        ignore_warnings=True,
    )
