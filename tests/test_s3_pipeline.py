"""The pipeline with its landing zone and warehouse on a real S3-compatible server (moto_server).

The same synthetic landing run on local disk and on ``s3://`` gives identical recommendations; a
backfill, a re-run, a SIGKILL in the middle of a run (nothing of the date visible, the lock's lease
expires, the re-run completes with the uninterrupted outputs) and two concurrent runs of one date
(the second stops naming the holder of the lock object) all hold on the object store.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from test_server_e2e import Processes, _free_port, _wait_healthy, server_env

from flows.parameters import RunOptions
from recsys_core.io import (
    RunLockedError,
    Warehouse,
    exists,
    files_under,
    read_json,
    read_parquet,
)
from recsys_core.landing import generate_synthetic

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
END = dt.date(2026, 1, 6)
START = END - dt.timedelta(days=1)


def _config(path: Path, landing: str, warehouse: str, **runner: object) -> Path:
    settings = {"retries": 0, "retry_delay_seconds": 0, **runner}
    path.write_text(
        f"""
landing = "{landing}"
warehouse = "{warehouse}"
k = 5
seed = 3

[train]
models = ["popularity", "ease"]
tune_calls = 3
tune_initial_points = 2
validation_days = 1

[evaluation]
holdout_days = 1
bootstrap_samples = 100

[embedding]
enabled = false

[scoring]
shards = 2

[runner]
"""
        + "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items()),
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def landing_master(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("s3-landing") / "landing"
    generate_synthetic(out, users=60, items=40, days=6, seed=1, end_date=END)
    return out


def _upload_landing(local: Path, bucket: str) -> str:
    import s3fs

    url = f"{bucket}/landing"
    fs = s3fs.S3FileSystem(use_listings_cache=False)
    fs.put(str(local), url.removeprefix("s3://"), recursive=True)
    return url


@pytest.fixture(scope="module")
def local_baseline(prefect_harness, landing_master, tmp_path_factory) -> dict[str, object]:
    """The backfill of START..END on local disk: what every S3 run must reproduce."""
    from flows.nightly import backfill

    tmp = tmp_path_factory.mktemp("local-baseline")
    cfg = _config(tmp / "recsys.toml", str(landing_master), str(tmp / "warehouse"))
    backfill(start=START, end=END, options=RunOptions(config_path=str(cfg)))
    return _outputs(Warehouse(tmp / "warehouse"))


def _outputs(wh: Warehouse) -> dict[str, object]:
    return {
        "recs": {d: read_parquet(wh.recommendations(d)) for d in (START, END)},
        "champion": read_json(wh.models_dir / "champion.json")["model_id"],
        "clean": pl.concat([read_parquet(wh.clean("events", d)) for d in wh.clean_dates("events")]),
    }


def _assert_same(wh: Warehouse, baseline: dict[str, object]) -> None:
    out = _outputs(wh)
    for d in (START, END):
        assert out["recs"][d].height > 0
        assert out["recs"][d].equals(baseline["recs"][d]), d
    assert out["champion"] == baseline["champion"]
    assert out["clean"].equals(baseline["clean"])


def _no_leftovers(wh: Warehouse) -> None:
    files = files_under(wh.root)
    assert not [f for f in files if f.startswith(("_staging/", "_locks/"))], files


def test_backfill_and_rerun_on_s3_equal_local_disk(
    local_baseline, landing_master, s3_bucket, tmp_path
):
    """Landing and warehouse on s3://: a backfill, then a re-run of the last date."""
    from flows.nightly import backfill, nightly

    landing = _upload_landing(landing_master, s3_bucket)
    cfg = _config(tmp_path / "recsys.toml", landing, f"{s3_bucket}/warehouse")
    out = backfill(start=START, end=END, options=RunOptions(config_path=str(cfg)))
    assert out["completed"] == [START.isoformat(), END.isoformat()]
    wh = Warehouse(f"{s3_bucket}/warehouse")
    _assert_same(wh, local_baseline)
    _no_leftovers(wh)
    marker = read_json(wh.run_marker(END))
    assert marker["settings"]["warehouse"] == f"{s3_bucket}/warehouse"
    assert exists(wh.report_dir(END) / "report.html")

    nightly(
        run_date=END, options=RunOptions(config_path=str(cfg))
    )  # a re-run replaces the date identically
    _assert_same(wh, local_baseline)
    _no_leftovers(wh)


@contextmanager
def _nightly_waiting_for_its_data(
    landing: Path, tmp_path: Path, cfg: Path
) -> Iterator[tuple[threading.Thread, dict[str, Any]]]:
    """A nightly of END in a thread while END's landing partitions are held aside, so it holds the
    date's lock and waits for its late data; on leaving, the data is put back and the run joined.
    Yields the thread and a dict that receives the run's final ``state``."""
    from flows.nightly import nightly

    held = []
    for kind in ("items", "events"):
        part = landing / kind / f"date={END.isoformat()}"
        aside = tmp_path / "held" / kind
        aside.parent.mkdir(exist_ok=True)
        part.rename(aside)
        held.append((aside, part))
    result: dict[str, Any] = {}
    run = threading.Thread(
        target=lambda: result.update(
            state=nightly(run_date=END, options=RunOptions(config_path=str(cfg)), return_state=True)
        )
    )
    run.start()
    try:
        yield run, result
    finally:
        for aside, part in held:
            aside.rename(part)
        run.join()


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    from prefect.settings import PREFECT_API_URL

    full = {k: v for k, v in os.environ.items() if k != "RECSYS_FAULT"}
    full.update(PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [sys.executable, "-m", "deployments.cli", *args],
        capture_output=True, text=True, cwd=cwd, env=full, timeout=600,
    )  # fmt: skip


def test_sigkill_mid_run_on_s3_leaves_nothing_visible(
    local_baseline, landing_master, s3_bucket, tmp_path
):
    """Killed while merging the scores: no recommendation partition and no completion marker for
    the date; the dead run's lock blocks the date (naming it) until its lease ends; the re-run
    then completes with the uninterrupted outputs."""
    from flows.nightly import nightly

    landing = _upload_landing(landing_master, s3_bucket)
    cfg = _config(tmp_path / "recsys.toml", landing, f"{s3_bucket}/warehouse")
    wh = Warehouse(f"{s3_bucket}/warehouse")
    nightly(run_date=START, options=RunOptions(config_path=str(cfg)))
    lease = {"RECSYS_LOCK_LEASE_SECONDS": "6"}
    res = _cli(
        "run", "--date", END.isoformat(), "--config", str(cfg), cwd=tmp_path,
        env={"RECSYS_FAULT": "score:kill@merge", **lease},
    )  # fmt: skip
    assert res.returncode == -9, res.stderr[-3000:]
    assert exists(wh.root / "_faults" / "score.killed")
    assert not exists(wh.recommendations(END)) and not exists(wh.run_marker(END))
    assert exists(wh.root / "_locks" / f"run_date={END.isoformat()}.lock")

    res = _cli("run", "--date", END.isoformat(), "--config", str(cfg), cwd=tmp_path, env=lease)
    if res.returncode != 0:  # normally: the lease of the killed run is still running
        assert "another run holds s3://" in res.stderr and "pid" in res.stderr, res.stderr[-3000:]
        time.sleep(6.5)
        res = _cli("run", "--date", END.isoformat(), "--config", str(cfg), cwd=tmp_path, env=lease)
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_same(wh, local_baseline)
    _no_leftovers(wh)


def test_two_concurrent_runs_of_one_date_on_s3(local_baseline, landing_master, s3_bucket, tmp_path):
    """Run A holds the date's lock object while it waits for late data; run B stops at once naming
    the lock's URL and its holder; A completes with the normal outputs."""
    from flows.nightly import backfill, nightly

    landing = tmp_path / "landing"
    import shutil

    shutil.copytree(landing_master, landing)
    cfg = _config(
        tmp_path / "recsys.toml",
        str(landing),
        f"{s3_bucket}/warehouse",
        # A waits up to 2 minutes for its data: run B's start (a flow run, its settings) must
        # reach the lock within that window even on a loaded machine; A goes on as soon as the
        # data is back
        late_data_retries=480,
        late_data_delay_seconds=0.25,
    )
    wh = Warehouse(f"{s3_bucket}/warehouse")
    backfill(start=START, end=START, options=RunOptions(config_path=str(cfg)))
    with _nightly_waiting_for_its_data(landing, tmp_path, cfg) as (first, result):
        deadline = time.monotonic() + 120
        while not exists(wh.root / "_locks" / f"run_date={END.isoformat()}.lock"):
            assert time.monotonic() < deadline and first.is_alive(), "run A never took the lock"
            time.sleep(0.05)
        lock = f"{s3_bucket}/warehouse/_locks/run_date={END.isoformat()}.lock"
        with pytest.raises(RunLockedError, match=re.escape(lock) + r" \(pid \d+ on "):
            nightly(run_date=END, options=RunOptions(config_path=str(cfg)))
        assert not exists(wh.recommendations(END))
    assert result["state"].is_completed(), result["state"].message
    _assert_same(wh, local_baseline)
    _no_leftovers(wh)


def test_a_run_that_lost_its_lock_publishes_nothing_for_its_date(
    landing_master, s3_bucket, tmp_path, monkeypatch
):
    """Run A holds the date's lock while it waits for late data; meanwhile another holder takes
    the lock over. Once the data arrives A stops at its first commit point with LeaseLostError
    naming the lock URL and the new holder: nothing of the date is published (no raw, clean,
    manifest, model promotion, recommendations or completion marker), and the new holder's lock
    object is left in place."""
    import shutil

    from recsys_core.io import LeaseLostError, read_versioned, write_if_match

    monkeypatch.setenv("RECSYS_LOCK_LEASE_SECONDS", "2")  # a heartbeat every 0.67 s
    landing = tmp_path / "landing"
    shutil.copytree(landing_master, landing)
    cfg = _config(
        tmp_path / "recsys.toml",
        str(landing),
        f"{s3_bucket}/warehouse",
        late_data_retries=40,
        late_data_delay_seconds=0.25,
    )
    wh = Warehouse(f"{s3_bucket}/warehouse")
    lock = wh.root / "_locks" / f"run_date={END.isoformat()}.lock"
    with _nightly_waiting_for_its_data(landing, tmp_path, cfg) as (run, result):
        deadline = time.monotonic() + 120
        while (current := read_versioned(lock)) is None:
            assert time.monotonic() < deadline and run.is_alive(), "run A never took the lock"
            time.sleep(0.05)
        other = {"holder": "pid 4242 on other-host", "token": "other", "acquired_at": "now",
                 "expires_at": "2999-01-01T00:00:00+00:00"}  # fmt: skip
        write_if_match(lock, json.dumps(other).encode(), current[1])
        time.sleep(2.5)  # > the lease: A's heartbeat found it lost (or its lease ran out)
    state = result["state"]
    assert state.is_failed()
    with pytest.raises(LeaseLostError) as err:
        state.result()
    assert f"lost the lock {lock}" in str(err.value)
    assert "pid 4242 on other-host" in str(err.value)
    day = f"date={END.isoformat()}"
    published = [f for f in files_under(wh.root) if not f.startswith("_locks/")]
    assert not [f for f in published if day in f or "champion" in f], published
    assert json.loads(read_versioned(lock)[0])["holder"] == "pid 4242 on other-host"


def test_an_ingest_slice_elsewhere_writes_only_while_its_run_holds_the_lock(
    landing_master, s3_bucket, tmp_path
):
    """A Dask worker holds no lease, so an ingest slice there reads the run's lock object before
    each pass of writes. Once another run has taken the lock over, the slice raises
    LeaseLostError naming the lock and the new holder and writes no raw partition; with the
    run's token in the lock object the same slice writes. (This process plays the worker after
    it has let go of the lease: a worker process never had it.)"""
    from recsys_core import pipeline
    from recsys_core.config import load_settings
    from recsys_core.io import LeaseLostError, read_versioned, write_if_match

    settings = load_settings(
        _config(tmp_path / "recsys.toml", str(landing_master), f"{s3_bucket}/warehouse")
    )
    wh = Warehouse(settings.warehouse)
    name = f"run_date={END.isoformat()}"
    lock = wh.root / "_locks" / f"{name}.lock"
    with wh.lock(name):
        planned = pipeline.plan_ingest_step(settings, END)
        assert planned.fence is not None and planned.fence.url == str(lock)
        other = {"holder": "pid 4242 on other-host", "token": "other", "acquired_at": "now",
                 "expires_at": "2999-01-01T00:00:00+00:00"}  # fmt: skip
        write_if_match(lock, json.dumps(other).encode(), read_versioned(lock)[1])
    (part,) = planned.slices(1)
    with pytest.raises(LeaseLostError) as err:
        pipeline.ingest_slice_step(settings, planned, part)
    assert f"lost the lock {lock}" in str(err.value)
    assert "pid 4242 on other-host" in str(err.value)
    assert not [f for f in files_under(wh.root) if f.startswith("raw/")]

    ours = {**other, "holder": "this run", "token": planned.fence.token}
    write_if_match(lock, json.dumps(ours).encode(), read_versioned(lock)[1])
    done = pipeline.ingest_slice_step(settings, planned, part)
    assert len(done.written) == len(part) > 0
    assert len([f for f in files_under(wh.root) if f.startswith("raw/")]) == len(part)


def test_a_slice_of_an_earlier_run_is_refused_while_a_later_run_here_holds_the_lock(
    landing_master, s3_bucket, tmp_path
):
    """The lease this process holds must be the slice's own run's (same token), not merely one
    of the same lock: after the run that planned the slice let go and a later run in this
    process took the lock, the earlier run's slice reads the lock object, finds the later run's
    token and writes nothing (it used to skip that read and write under the later run's lock)."""
    from recsys_core import pipeline
    from recsys_core.config import load_settings
    from recsys_core.io import LeaseLostError

    settings = load_settings(
        _config(tmp_path / "recsys.toml", str(landing_master), f"{s3_bucket}/warehouse")
    )
    wh = Warehouse(settings.warehouse)
    name = f"run_date={END.isoformat()}"
    with wh.lock(name):
        planned = pipeline.plan_ingest_step(settings, END)
    (part,) = planned.slices(1)
    # a later run of the date, in this process
    with wh.lock(name), pytest.raises(LeaseLostError) as err:
        pipeline.ingest_slice_step(settings, planned, part)
    assert f"lost the lock {wh.root / '_locks' / name}.lock" in str(err.value)
    assert not [f for f in files_under(wh.root) if f.startswith("raw/")]


def test_a_work_pool_runs_each_night_on_a_fresh_worker_that_keeps_nothing(
    local_baseline, landing_master, s3_bucket, tmp_path
):
    """The README's work-pool example against a real Prefect server, on S3: ``recsys deploy
    --pool``, then each night's run picked up by ``prefect worker start --run-once`` started in
    its own empty folder with its own HOME and TMPDIR (as a fresh container would be). The
    second night finds everything the first left in the warehouse only (its catch-up is not
    redone, the gate compares with the first night's champion), neither worker keeps anything on
    its disk (but matplotlib's font cache), and both nights equal the local-disk backfill."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate

    landing = _upload_landing(landing_master, s3_bucket)
    cfg = _config(tmp_path / "recsys.toml", landing, f"{s3_bucket}/warehouse")
    wh = Warehouse(f"{s3_bucket}/warehouse")
    home = tmp_path / "prefect-home"
    home.mkdir()
    port = _free_port()
    env = server_env(home, f"http://127.0.0.1:{port}/api", ui=False)
    procs = Processes(tmp_path)
    try:
        procs.start(
            "server",
            [str(Path(sys.executable).with_name("prefect")), "server", "start", "--host",
             "127.0.0.1", "--port", str(port), "--no-scheduler", "--no-ui"],
            env,
        )  # fmt: skip
        _wait_healthy(env["PREFECT_API_URL"], procs)
        with SyncPrefectClient(env["PREFECT_API_URL"]) as client:
            client.create_work_pool(WorkPoolCreate(name="recsys", type="process"))
            res = subprocess.run(
                [sys.executable, "-m", "deployments.cli", "deploy", "--pool", "recsys",
                 "--config", str(cfg)],
                capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
            )  # fmt: skip
            assert res.returncode == 0, res.stderr[-3000:]
            manual = client.read_deployment_by_name("recsys-nightly/manual")
            assert manual.work_pool_name == "recsys"
            for i, day in enumerate((START, END)):
                run = client.create_flow_run_from_deployment(
                    manual.id, parameters={"run_date": day.isoformat()}
                )
                box = tmp_path / f"worker-{i}"
                for sub in ("cwd", "home", "tmp"):
                    (box / sub).mkdir(parents=True)
                worker_env = {**env, "HOME": str(box / "home"), "TMPDIR": str(box / "tmp")}
                worker = subprocess.run(
                    [str(Path(sys.executable).with_name("prefect")), "worker", "start",
                     "--pool", "recsys", "--run-once"],
                    capture_output=True, text=True, cwd=box / "cwd", env=worker_env,
                    timeout=600,
                )  # fmt: skip
                assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]
                run = client.read_flow_run(run.id)
                assert run.state is not None and run.state.is_completed(), (
                    f"{run.name}: {run.state and run.state.message}\n{worker.stdout[-3000:]}"
                )
                assert run.name == f"nightly-{day.isoformat()}"
                # nothing on the worker's disk but matplotlib's font cache (rebuilt anywhere)
                left = [p.relative_to(box).as_posix() for p in box.rglob("*") if p.is_file()]
                assert all(f.startswith("home/.cache/matplotlib/") for f in left), left
    finally:
        procs.stop_all()
    first, second = (read_json(wh.run_marker(d)) for d in (START, END))
    assert len(first["steps"]["ingest"]["dates"]["events"]) == 5  # the first night's catch-up
    assert second["steps"]["ingest"]["dates"]["events"] == [END.isoformat()]
    assert first["steps"]["evaluate"]["champion_before"] is None
    assert (
        second["steps"]["evaluate"]["champion_before"]
        == first["steps"]["evaluate"]["champion_after"]
    )
    _assert_same(wh, local_baseline)
    _no_leftovers(wh)
