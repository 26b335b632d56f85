"""Faults the nightly run survives: late data, transient failures, crashes, resumes, two runs for
one date, and corrupt warehouse files.

Tiny synthetic data (60 users, 40 items, 6 days) with embeddings off; every test works in its own
copy. In-process runs use the session's Prefect test harness; crash tests run ``python -m
deployments.cli run`` in a subprocess that SIGKILLs itself (``RECSYS_FAULT="<step>:kill"``) and talk to
the same harness server, so no subprocess pays for starting a Prefect server of its own.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from flows.parameters import RunOptions
from recsys_core.io import CorruptFileError, RunLockedError, Warehouse, read_parquet
from recsys_core.landing import generate_synthetic

pytestmark = [pytest.mark.prefect, pytest.mark.slow]  # every test here runs the nightly flow

REPO = Path(__file__).resolve().parents[1]
END = dt.date(2026, 1, 6)
MODELS = ("popularity", "ease")


def _config(tmp: Path, **runner: object) -> Path:
    settings = {"retries": 0, "retry_delay_seconds": 0, **runner}
    cfg = tmp / "recsys.toml"
    cfg.write_text(
        f"""
landing = "landing"
warehouse = "warehouse"
k = 5
seed = 3

[train]
models = {json.dumps(list(MODELS))}
tune_calls = 3
tune_initial_points = 2
validation_days = 1

[evaluation]
holdout_days = 1
bootstrap_samples = 100

[embedding]
enabled = false

[runner]
"""
        + "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items()),
        encoding="utf-8",
    )
    return cfg


@pytest.fixture(scope="module")
def landing_master(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("landing-master") / "landing"
    generate_synthetic(out, users=60, items=40, days=6, seed=1, end_date=END)
    return out


def _fresh(tmp: Path, landing_master: Path, **runner: object) -> tuple[Path, Warehouse]:
    shutil.copytree(landing_master, tmp / "landing")
    return _config(tmp, **runner), Warehouse(tmp / "warehouse")


@pytest.fixture(scope="module")
def baseline(prefect_harness, landing_master, tmp_path_factory) -> dict[str, object]:
    """One uninterrupted run: the outputs every faulty run must end up with."""
    from flows.nightly import nightly

    tmp = tmp_path_factory.mktemp("baseline")
    cfg, wh = _fresh(tmp, landing_master)
    nightly(run_date=END, options=RunOptions(config_path=str(cfg)))
    return {"tmp": tmp, **_outputs(wh)}


def _outputs(wh: Warehouse) -> dict[str, object]:
    champion = json.loads((wh.models_dir / "champion.json").read_text())
    return {
        "recs": read_parquet(wh.recommendations(END)),
        "champion": champion.get("model_id", champion),
        "clean": pl.concat([read_parquet(wh.clean("events", d)) for d in wh.clean_dates("events")]),
    }


def _assert_same_outputs(wh: Warehouse, baseline: dict[str, object]) -> None:
    out = _outputs(wh)
    assert out["recs"].equals(baseline["recs"])
    assert out["champion"] == baseline["champion"]
    assert out["clean"].equals(baseline["clean"])


def _assert_every_file_readable(wh: Warehouse) -> int:
    """Every visible Parquet, JSON and npz file under the warehouse opens whole; returns how many.

    Hidden files (``.tmp-*`` left by a killed atomic write) are what readers skip by design.
    """
    checked = 0
    for path in sorted(wh.root.rglob("*")):
        if not path.is_file() or any(
            part.startswith(".") for part in path.relative_to(wh.root).parts
        ):
            continue
        if path.suffix == ".parquet":
            pq.read_table(path)
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".npz":
            with zipfile.ZipFile(path) as zf:
                assert zf.testzip() is None, path
        else:
            continue
        checked += 1
    return checked


def _harness_api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def _cli(*args: str, cwd: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RECSYS_FAULT"}
    env.update(PREFECT_API_URL=_harness_api_url(), PYTHONPATH=str(REPO))
    if fault:
        env["RECSYS_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "deployments.cli", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=600,
    )  # fmt: skip


def _task_run_counts(flow_run_id) -> dict[str, int]:
    """Attempts per task of one flow run, as the Prefect API recorded them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flt = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:  # task-run states reach the API asynchronously (events)
            runs = client.read_task_runs(flow_run_filter=flt)
            if (
                runs
                and all(r.state and r.state.is_final() for r in runs)
                or time.monotonic() > deadline
            ):
                return {r.name.rsplit("-", 1)[0]: r.run_count for r in runs}
            time.sleep(0.2)


# ---- late data ------------------------------------------------------------------------------------
def _hide(tmp: Path, day: dt.date) -> list[tuple[Path, Path]]:
    moved = []
    for kind in ("items", "events"):
        part = tmp / "landing" / kind / f"date={day.isoformat()}"
        held = tmp / "held" / kind
        held.parent.mkdir(exist_ok=True)
        part.rename(held)
        moved.append((held, part))
    return moved


def test_late_partition_is_waited_for_then_ingested(baseline, tmp_path, landing_master):
    from flows.nightly import nightly

    cfg, wh = _fresh(tmp_path, landing_master, late_data_retries=8, late_data_delay_seconds=0.5)
    moved = _hide(tmp_path, END)

    def arrive() -> None:  # the upstream export lands ~1.5 s after the run started
        time.sleep(1.5)
        for held, part in moved:
            held.rename(part)  # a folder rename: the partition appears whole

    writer = threading.Thread(target=arrive)
    started = time.monotonic()
    writer.start()
    state = nightly(run_date=END, options=RunOptions(config_path=str(cfg)), return_state=True)
    writer.join()
    assert state.is_completed(), state.message
    assert time.monotonic() - started > 1.5
    assert _task_run_counts(state.state_details.flow_run_id)["ingest"] >= 2  # waited, retried
    assert END in wh.raw_dates("events")
    _assert_same_outputs(wh, baseline)


def test_late_partition_that_never_arrives_fails_naming_the_path(
    prefect_harness, tmp_path, landing_master
):
    from flows.nightly import nightly
    from recsys_core.ingest import MissingPartitionError

    cfg, wh = _fresh(tmp_path, landing_master, late_data_retries=2, late_data_delay_seconds=0.2)
    _hide(tmp_path, END)
    missing = tmp_path / "landing" / "events" / f"date={END.isoformat()}"
    started = time.monotonic()
    with pytest.raises(MissingPartitionError, match=re.escape(str(missing))):
        nightly(run_date=END, options=RunOptions(config_path=str(cfg)))
    assert time.monotonic() - started >= 0.4  # two late-data waits happened
    assert not wh.recommendations(END).exists()
    assert not wh.run_marker(END).exists()


# ---- transient failures ---------------------------------------------------------------------------
def test_a_step_failing_twice_completes_through_retries(
    baseline, tmp_path, landing_master, monkeypatch
):
    from flows.nightly import nightly

    cfg, wh = _fresh(tmp_path, landing_master, retries=2, retry_delay_seconds=0)
    monkeypatch.setenv("RECSYS_FAULT", "train:2")
    state = nightly(run_date=END, options=RunOptions(config_path=str(cfg)), return_state=True)
    assert state.is_completed(), state.message
    assert _task_run_counts(state.state_details.flow_run_id)["train"] == 3  # 2 failed + 1 good
    _assert_same_outputs(wh, baseline)


def test_too_few_retries_fail_the_run_and_leave_no_output(
    prefect_harness, tmp_path, landing_master, monkeypatch
):
    from flows.nightly import nightly
    from recsys_core.pipeline import InjectedFault

    cfg, wh = _fresh(tmp_path, landing_master, retries=1, retry_delay_seconds=0)
    monkeypatch.setenv("RECSYS_FAULT", "train:2")
    with pytest.raises(InjectedFault, match="attempt 2 of 2"):
        nightly(run_date=END, options=RunOptions(config_path=str(cfg)))
    assert not wh.recommendations(END).exists()
    assert not wh.run_marker(END).exists()


# ---- crashes --------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "chain",
    [
        pytest.param(
            ["ingest", "clean", "embed", "train", "evaluate", "score"], id="start-of-each-step"
        ),
        pytest.param(["train@tuned-popularity", "score@merge"], id="inside-train-and-merge"),
    ],
)
def test_killed_in_each_step_rerun_completes_with_identical_outputs(
    baseline, tmp_path, landing_master, chain
):
    """Kill points fire once each (the counter survives the kill): run k dies in step k, having
    recovered from the crash in step k-1; after every kill each visible file is whole and the date
    is not marked complete; the last run completes with the uninterrupted run's outputs."""
    cfg, wh = _fresh(tmp_path, landing_master)
    fault = ",".join(f"{step}:kill@{point}" if point else f"{step}:kill"
                     for step, _, point in (c.partition("@") for c in chain))  # fmt: skip
    for point in chain:
        step = point.partition("@")[0]
        res = _cli(
            "run", "--date", END.isoformat(), "--config", str(cfg), cwd=tmp_path, fault=fault
        )
        assert res.returncode == -9, (
            f"expected SIGKILL in {point}, got {res.returncode}\n{res.stderr[-3000:]}"
        )
        assert (wh.root / "_faults" / f"{step}.killed").is_file()
        assert not wh.run_marker(END).exists()
        _assert_every_file_readable(wh)
    res = _cli("run", "--date", END.isoformat(), "--config", str(cfg), cwd=tmp_path, fault=fault)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _assert_every_file_readable(wh) > 10
    assert not [p for p in wh.root.rglob(".tmp-*")], "temporaries of killed runs are swept"
    _assert_same_outputs(wh, baseline)


# ---- resume ---------------------------------------------------------------------------------------
def _mtimes(wh: Warehouse) -> dict[str, int]:
    files = [wh.tuning_dir / m / name for m in MODELS for name in ("state.json", "trials.parquet")]
    return {str(f.relative_to(wh.root)): f.stat().st_mtime_ns for f in files}


def test_rerun_after_failure_reuses_tuning_and_force_redoes_it(
    baseline, tmp_path, landing_master, monkeypatch
):
    from flows.nightly import nightly
    from recsys_core.pipeline import InjectedFault

    cfg, wh = _fresh(tmp_path, landing_master)
    monkeypatch.setenv("RECSYS_FAULT", "evaluate:1")
    with pytest.raises(InjectedFault):
        nightly(run_date=END, options=RunOptions(config_path=str(cfg)))
    tuned = _mtimes(wh)
    monkeypatch.delenv("RECSYS_FAULT")

    night = nightly(run_date=END, options=RunOptions(config_path=str(cfg)))
    assert _mtimes(wh) == tuned  # the search was not run again
    assert [c.tuned_on for c in night.steps.train.candidates] == [END.isoformat()] * len(MODELS)
    _assert_same_outputs(wh, baseline)

    nightly(run_date=END, options=RunOptions(config_path=str(cfg), force=True))
    after = _mtimes(wh)
    assert all(after[key] > tuned[key] for key in tuned)  # force re-tuned every model
    _assert_same_outputs(wh, baseline)


@pytest.mark.model
@pytest.mark.slow
def test_rerun_after_failure_does_not_embed_unchanged_items_again(
    prefect_harness, tmp_path, landing_master, monkeypatch
):
    from flows.nightly import nightly
    from recsys_core.pipeline import InjectedFault

    cfg, wh = _fresh(tmp_path, landing_master)
    cfg.write_text(cfg.read_text().replace("enabled = false", "enabled = true"), encoding="utf-8")
    monkeypatch.setenv("RECSYS_FAULT", "train:1")
    with pytest.raises(InjectedFault):
        nightly(run_date=END, options=RunOptions(config_path=str(cfg)))
    table = wh.item_embeddings
    embedded_at = table.stat().st_mtime_ns
    n_vectors = read_parquet(table).height
    assert n_vectors > 0
    monkeypatch.delenv("RECSYS_FAULT")

    embed = nightly(run_date=END, options=RunOptions(config_path=str(cfg))).steps.embed
    assert (embed.n_embedded, embed.n_reused, embed.written) == (0, n_vectors, False)
    assert table.stat().st_mtime_ns == embedded_at


# ---- two runs for one date ------------------------------------------------------------------------
def _flocked(path: Path) -> bool:
    """Whether some process holds a ``flock`` on ``path``, from ``/proc/locks`` (Linux), without
    taking it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if fields[1] == "FLOCK" and fields[-3].rsplit(":", 1)[-1] == str(st.st_ino):
            return True
    return False


def test_second_run_for_the_same_date_exits_with_a_clear_message(
    baseline, tmp_path, landing_master
):
    """Run A holds the date's lock while it waits for late data; run B, started meanwhile, stops at
    once naming the lock; A then completes with the normal outputs."""
    from flows.nightly import nightly

    cfg, wh = _fresh(tmp_path, landing_master, late_data_retries=40, late_data_delay_seconds=0.25)
    moved = _hide(tmp_path, END)
    result: dict[str, object] = {}
    first = threading.Thread(
        target=lambda: result.update(
            state=nightly(run_date=END, options=RunOptions(config_path=str(cfg)), return_state=True)
        )
    )
    first.start()
    try:
        deadline = time.monotonic() + 120
        lock_file = wh.root / "_locks" / f"run_date={END.isoformat()}.lock"
        while not _flocked(lock_file):  # until A holds the lock (looking, not taking it: a probe
            # that took the lock for a moment made A fail with RunLockedError when they met)
            assert time.monotonic() < deadline and first.is_alive(), "run A never took the lock"
            time.sleep(0.05)
        with pytest.raises(RunLockedError, match=re.escape(str(lock_file)) + r".*pid="):
            nightly(run_date=END, options=RunOptions(config_path=str(cfg)))
        assert not wh.recommendations(END).exists()
    finally:
        for held, part in moved:
            held.rename(part)
        first.join()
    assert result["state"].is_completed(), result["state"].message
    _assert_every_file_readable(wh)
    _assert_same_outputs(wh, baseline)


# ---- corrupt files --------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "not-parquet"])
def test_a_corrupt_warehouse_file_is_named(baseline, tmp_path, damage):
    from flows.nightly import nightly

    shutil.copytree(baseline["tmp"], tmp_path, dirs_exist_ok=True)
    wh = Warehouse(tmp_path / "warehouse")
    victim = wh.clean("events", END - dt.timedelta(days=2))
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"PAR1 not really")
    with pytest.raises(CorruptFileError, match=re.escape(str(victim))):
        nightly(run_date=END, options=RunOptions(config_path=str(tmp_path / "recsys.toml")))
    assert read_parquet(wh.recommendations(END)).equals(baseline["recs"])  # last good output kept
