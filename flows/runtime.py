"""Process set-up shared by the CLI, the flows and the deployments.

Environment defaults are applied by :func:`configure_environment` when a command starts (never at
import): a project-local ``PREFECT_HOME`` (Prefect's local mode keeps its SQLite database there),
no analytics, and no Hugging Face network access.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flows.parameters import RunOptions
from recsys_core.config import RunnerConfig, Settings, default_var_dir
from recsys_core.io import parse_date

__all__ = [
    "PrefectHomeError",
    "build_task_runner",
    "explain_startup_failure",
    "configure_environment",
    "default_run_date",
    "n_shards",
    "n_workers",
    "shared_task_runner",
    "with_deployment_defaults",
    "with_task_runner",
]


class PrefectHomeError(RuntimeError):
    """``PREFECT_HOME`` cannot be created or written, so Prefect's local API could not start."""


def configure_environment() -> None:
    """Set safe defaults for Prefect and Hugging Face (existing values win), and create
    ``PREFECT_HOME`` with its parents: Prefect's local API keeps its SQLite database there and
    cannot start without it (on a fresh clone ``var/`` does not exist yet).

    Raises :class:`PrefectHomeError` naming the folder when it cannot be created or written.
    """
    os.environ.setdefault("PREFECT_HOME", str(default_var_dir() / "prefect"))
    home = Path(os.environ["PREFECT_HOME"]).expanduser()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PrefectHomeError(
            f"cannot create PREFECT_HOME {home} ({exc.strerror or exc}); set PREFECT_HOME to a "
            "writable folder"
        ) from exc
    if not os.access(home, os.W_OK):
        raise PrefectHomeError(f"PREFECT_HOME {home} is not writable; set it to a writable folder")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    # the local (ephemeral) API starts in 10-35 s here, and took 148 s on 2 cores at load 11:
    # Prefect's default of 20 s fails a newcomer's first `recsys run` on a busy machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "prefect.context" in sys.modules:
        # Prefect reads its settings from the environment once, when it is first imported; a
        # process that imported it before this call would otherwise keep ~/.prefect and the
        # 20 s start-up timeout
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


def explain_startup_failure(exc: BaseException) -> str | None:
    """One line saying why Prefect's local API did not start, or None if ``exc`` is not that.

    Prefect raises ``RuntimeError("Timed out while attempting to connect to ephemeral Prefect API
    server. ... stderr: <the server's whole log>")``; the log is cut to its last line.
    """
    text = str(exc)
    if not isinstance(exc, RuntimeError) or "ephemeral Prefect API server" not in text:
        return None
    detail = ""
    exited = re.search(r"exited with code (-?\d+)", text)
    if exited:
        detail = f"; the server process exited with code {exited.group(1)}"
    lines = [ln.strip() for ln in text.partition("stderr:")[2].splitlines() if ln.strip()]
    if lines:
        detail += f" ({lines[-1][:200]})"
    from prefect.settings import get_current_settings

    settings = get_current_settings()  # what the failed start used, not what the environment says
    timeout = settings.server.ephemeral.startup_timeout_seconds
    return (
        f"Prefect's local API did not start within {timeout} s{detail}; check that PREFECT_HOME="
        f"{settings.home} is writable, or point PREFECT_API_URL at a running server (make server)"
    )


def default_run_date(today: dt.date | None = None) -> dt.date:
    """Yesterday in UTC: the last complete day."""
    today = today or dt.datetime.now(dt.UTC).date()
    return today - dt.timedelta(days=1)


def with_deployment_defaults(options: RunOptions) -> RunOptions:
    """``options`` over the ``options`` default parameter of the deployment this flow run was
    started from, field by field (:meth:`RunOptions.over`); unchanged outside a deployment run."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import deployment

    if deployment.id is None:
        return options
    with get_client(sync_client=True) as client:
        defaults = client.read_deployment(deployment.id).parameters or {}
    return options.over(defaults.get("options"))


def n_workers(settings: Settings) -> int:
    """Worker processes the task runner has: ``runner.dask_workers`` on Dask, else 1 (the
    thread runner shares one process; the core steps use threads themselves)."""
    return settings.runner.dask_workers if settings.runner.task_runner == "dask" else 1


def n_shards(settings: Settings) -> int:
    if settings.scoring.shards:
        return settings.scoring.shards
    return n_workers(settings)


def build_task_runner(runner: RunnerConfig) -> Any:
    """A Prefect task runner for the configured choice (threads, or Dask local / remote)."""
    if runner.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if runner.dask_address:
            return DaskTaskRunner(address=runner.dask_address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": runner.dask_workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
                "host": "127.0.0.1",
            },
        )
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=max(1, os.cpu_count() or 1))


@contextmanager
def shared_task_runner(runner: RunnerConfig) -> Iterator[RunnerConfig]:
    """For a run of several flows (a backfill): with ``dask`` and no address, one local Dask
    cluster for all of them (its address in the yielded config) instead of one per flow run,
    whose worker processes would each start, import the stack and load the model again."""
    if runner.task_runner != "dask" or runner.dask_address:
        yield runner
        return
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=runner.dask_workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
    ) as cluster:
        yield runner.model_copy(update={"dask_address": cluster.scheduler_address})


def with_task_runner(flow_fn: Any, runner: RunnerConfig) -> Any:
    """``flow_fn`` itself for the default thread runner, else a copy on the configured runner."""
    if runner.task_runner == "threads":
        return flow_fn
    return flow_fn.with_options(task_runner=build_task_runner(runner))


def as_date(value: str | dt.date | None) -> dt.date:
    return default_run_date() if value in (None, "") else parse_date(value)
