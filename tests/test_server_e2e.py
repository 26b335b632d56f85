"""End to end against a real Prefect server: ``prefect server start`` + ``serve_all`` + the API.

What an operator does: start a local server (127.0.0.1, a fresh SQLite database), serve the three
deployments, trigger ``recsys-nightly/manual`` for one date, launch ``recsys-backfill/backfill``
over three dates (the first is already complete and skipped), then resubmit the same backfill and
count the flow runs per date: none ran twice. Everything started here runs in its own process
group and is stopped at the end, also when the test fails.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recsys_core.io import Warehouse, read_parquet
from recsys_core.landing import generate_synthetic

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
END = dt.date(2026, 1, 6)
DATES = [END - dt.timedelta(days=2), END - dt.timedelta(days=1), END]
STARTUP_SECONDS = 240  # a cold `prefect server start` takes 10-60 s on a busy 2-core machine
RUN_SECONDS = 300


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses listening on ``port`` according to ``/proc/net/tcp`` (Linux)."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:  # 0A = LISTEN
            out.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return out


class Processes:
    """Subprocesses started in their own sessions, stopped group by group (last started first)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.procs.append((name, proc))
        return proc

    def check_alive(self) -> None:
        """Fail at once (with the logs) if a started process has exited."""
        for name, proc in self.procs:
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}\n{self.tails()}")

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return f"--- {name}.log (last {lines} lines) ---\n" + "\n".join(text.splitlines()[-lines:])

    def tails(self) -> str:
        return "\n".join(self.tail(name) for name, _ in self.procs)

    def stop(self, name: str, proc: subprocess.Popen, grace: float = 20.0) -> None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait)
        # the runner's flow-run subprocesses share its group: make sure none outlives it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        while self.procs:
            self.stop(*self.procs.pop())


def _config(tmp: Path) -> Path:
    cfg = tmp / "recsys.toml"
    cfg.write_text(
        """
landing = "landing"
warehouse = "warehouse"
k = 5
seed = 3

[train]
models = ["popularity", "ease"]
tune_calls = 2
tune_initial_points = 1
validation_days = 1

[evaluation]
holdout_days = 1
bootstrap_samples = 100

[embedding]
enabled = false

[runner]
retries = 0
retry_delay_seconds = 0
""",
        encoding="utf-8",
    )
    return cfg


def server_env(home: Path, url: str, *, ui: bool) -> dict[str, str]:
    """The environment of a throw-away Prefect server and the processes that talk to it: its own
    home and SQLite database, nothing from the outer session's PREFECT_/RECSYS_ variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RECSYS_"))}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=url,
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'server.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="true" if ui else "false",
        PREFECT_LOGGING_LEVEL="INFO",
        # the runner of `serve` asks for scheduled runs every second, not every 10 s (the
        # default): each run these tests submit would otherwise wait up to 10 s to be picked up
        PREFECT_RUNNER_POLL_FREQUENCY="1",
        # SQLite statements wait up to 60 s (default 10 s) before the API answers 503: on a loaded
        # CI machine a UI request met a busy database and the browser showed "Service Unavailable"
        PREFECT_SERVER_DATABASE_TIMEOUT="60",
        PREFECT_SERVER_DATABASE_CONNECTION_TIMEOUT="30",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    return env


@pytest.fixture()
def live(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A Prefect server on a free loopback port and a process serving the deployments."""
    generate_synthetic(tmp_path / "landing", users=60, items=40, days=6, seed=1, end_date=END)
    cfg = _config(tmp_path)
    home = tmp_path / "prefect-home"
    home.mkdir()
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = server_env(home, url, ui=False)
    procs = Processes(tmp_path)
    prefect_cli = str(Path(sys.executable).with_name("prefect"))
    try:
        procs.start(
            "server",
            [prefect_cli, "server", "start", "--host", "127.0.0.1", "--port", str(port),
             "--no-scheduler", "--no-ui"],
            env,
        )  # fmt: skip
        _wait_healthy(url, procs)
        procs.start(
            "serve",
            [sys.executable, "-c",
             "from deployments.serve import serve_all; from flows.parameters import RunOptions; "
             f"serve_all(RunOptions(config_path={str(cfg)!r}), reports_port=0)"],
            env,
        )  # fmt: skip
        yield {"url": url, "port": port, "tmp": tmp_path, "procs": procs}
    finally:
        procs.stop_all()


def _wait_healthy(url: str, procs: Processes) -> None:
    import httpx

    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        procs.check_alive()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).json() is True:
                return
        time.sleep(0.5)
    pytest.fail(f"prefect server not healthy after {STARTUP_SECONDS}s\n{procs.tails()}")


def _deployment(client, name: str, procs: Processes):
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        procs.check_alive()
        with contextlib.suppress(ObjectNotFound):
            return client.read_deployment_by_name(name)
        time.sleep(0.5)
    pytest.fail(f"deployment {name} never registered\n{procs.tails()}")


def _wait_final(client, run_id, procs: Processes):
    deadline = time.monotonic() + RUN_SECONDS
    while time.monotonic() < deadline:
        procs.check_alive()
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            assert run.state.is_completed(), (
                f"{run.name} ended {run.state.type.value}: {run.state.message}\n{procs.tails()}"
            )
            return run
        time.sleep(1.0)
    pytest.fail(f"flow run {run_id} not finished after {RUN_SECONDS}s\n{procs.tails()}")


def _runs(client, deployment_id) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    return client.read_flow_runs(
        flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]))
    )


def test_serve_trigger_backfill_and_resubmit(live):
    from prefect.client.orchestration import SyncPrefectClient

    procs, tmp = live["procs"], live["tmp"]
    assert _listening_addresses(live["port"]) == {"127.0.0.1"}  # loopback only

    with SyncPrefectClient(live["url"]) as client:
        manual = _deployment(client, "recsys-nightly/manual", procs)
        backfill = _deployment(client, "recsys-backfill/backfill", procs)
        nightly = _deployment(client, "recsys-nightly/nightly", procs)
        assert nightly.schedules[0].schedule.cron == "0 2 * * *"
        assert nightly.parameters == {"options": {"config_path": str(tmp / "recsys.toml")}}

        # 1. a manual run for the first date, through the API (what the UI's form does); it names
        # one option only, and still runs with the deployment's config (merged field by field)
        run = client.create_flow_run_from_deployment(
            manual.id, parameters={"run_date": DATES[0].isoformat(), "options": {"force": False}}
        )
        run = _wait_final(client, run.id, procs)
        assert run.name == f"nightly-{DATES[0].isoformat()}"

        # 2. a backfill over three dates: the first is complete (skipped), two child runs
        parent = client.create_flow_run_from_deployment(
            backfill.id,
            parameters={"start": DATES[0].isoformat(), "end": DATES[-1].isoformat()},
        )
        parent = _wait_final(client, parent.id, procs)
        submitted = parent.expected_start_time.astimezone(dt.UTC)
        assert parent.name == (
            f"backfill-{DATES[0].isoformat()}-to-{DATES[-1].isoformat()}"
            f"-at-{submitted:%Y%m%dT%H%M%SZ}"
        )

        wh = Warehouse(tmp / "warehouse")
        for day in DATES:
            recs = read_parquet(wh.recommendations(day))
            assert recs.height > 0 and recs["run_date"].unique().to_list() == [day]
            assert wh.run_marker(day).is_file()

        children = {r.parameters["run_date"]: r for r in _runs(client, manual.id)}
        assert sorted(children) == [d.isoformat() for d in DATES]
        for day in DATES[1:]:
            child = children[day.isoformat()]
            assert child.name == f"nightly-{day.isoformat()}"
            assert child.idempotency_key.startswith(f"recsys-nightly/manual|{day.isoformat()}|")
            assert child.parent_task_run_id is not None  # linked under the backfill run in the UI

        # 3. the same backfill again: every date is complete, nothing runs twice
        again = client.create_flow_run_from_deployment(
            backfill.id,
            parameters={"start": DATES[0].isoformat(), "end": DATES[-1].isoformat()},
        )
        _wait_final(client, again.id, procs)
        per_date = Counter(r.parameters["run_date"] for r in _runs(client, manual.id))
        assert per_date == Counter({d.isoformat(): 1 for d in DATES})
        assert all(r.run_count == 1 for r in _runs(client, manual.id))
        assert len(_runs(client, backfill.id)) == 2
