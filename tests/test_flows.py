"""The nightly and backfill flows end to end, under one session-scoped Prefect harness.

Each test builds its own small synthetic landing zone; the data-safety promises of the pipeline
(atomic outputs, identical re-runs, no reading of the future) are checked on real runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from flows.parameters import RunOptions
from recsys_core.io import Warehouse, read_json
from recsys_core.landing import generate_synthetic

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

END = dt.date(2026, 1, 10)
REPO = Path(__file__).resolve().parents[1]


def _config(tmp: Path, *, embed: bool = False, models: str = '"popularity", "ease"') -> Path:
    cfg = tmp / "recsys.toml"
    cfg.write_text(
        f"""
landing = "landing"
warehouse = "warehouse"
k = 5
seed = 3

[train]
models = [{models}]
tune_calls = 3
tune_initial_points = 2
validation_days = 2

[evaluation]
holdout_days = 2
bootstrap_samples = 200

[embedding]
enabled = {str(embed).lower()}

[runner]
retries = 0
retry_delay_seconds = 0
""",
        encoding="utf-8",
    )
    return cfg


@pytest.fixture()
def landing_env(tmp_path: Path) -> tuple[Path, Path]:
    generate_synthetic(tmp_path / "landing", users=80, items=60, days=8, seed=11, end_date=END)
    return tmp_path, _config(tmp_path)


def _recs(tmp: Path, day: dt.date) -> pl.DataFrame:
    return pl.read_parquet(Warehouse(tmp / "warehouse").recommendations(day))


def test_nightly_end_to_end(prefect_harness, landing_env):
    from flows.nightly import nightly

    tmp, cfg = landing_env
    night = nightly(run_date=END, options=RunOptions(config_path=str(cfg)))
    wh = Warehouse(tmp / "warehouse")

    # every landing partition up to END was ingested and cleaned; counts reconcile per date
    for d in wh.clean_dates("events"):
        m = read_json(wh.manifest(d))["events"]
        assert m["ingested"] == m["clean"] + m["duplicates"] + m["quarantined"]
    assert night.steps.clean.events.quarantined > 0  # the generator plants bad rows

    recs = _recs(tmp, END)
    assert recs.columns == ["user_id", "item_id", "rank", "score", "model_id", "run_date", "reason"]
    per_user = recs.group_by("user_id").agg(pl.col("rank").sort())
    assert all(r == list(range(1, 6)) for r in per_user["rank"].to_list())
    assert recs["run_date"].unique().to_list() == [END]
    assert recs["model_id"].n_unique() == 1

    # seen items are never recommended
    events = pl.concat([pl.read_parquet(wh.clean("events", d)) for d in wh.clean_dates("events")])
    seen = events.select("user_id", "item_id").unique()
    assert recs.join(seen, on=["user_id", "item_id"], how="inner").height == 0

    # item-based champions explain each recommendation with a history item's title; on this
    # seeded data EASE beats popularity, so the check always runs (never skipped by the winner)
    assert night.steps.score.model_id.startswith("ease-")
    assert recs["reason"].drop_nulls().str.starts_with("because you interacted with").all()
    assert recs["reason"].null_count() < recs.height

    # the champion scored; the report and the completion marker exist
    assert night.steps.score.model_id == night.steps.evaluate.champion_after
    assert Path(night.report).is_file()
    assert wh.run_marker(END).is_file()
    # the run marker is the summary the flow returned
    assert read_json(wh.run_marker(END)) == json.loads(json.dumps(night.model_dump()))


def test_rerun_replaces_and_is_identical(prefect_harness, landing_env):
    from flows.nightly import nightly

    tmp, cfg = landing_env
    nightly(run_date=END, options=RunOptions(config_path=str(cfg)))
    first = _recs(tmp, END)
    nightly(run_date=END, options=RunOptions(config_path=str(cfg), force=True))
    second = _recs(tmp, END)
    assert first.equals(second)
    # one partition file, no temporary leftovers
    part_dir = Warehouse(tmp / "warehouse").recommendations(END).parent
    assert sorted(p.name for p in part_dir.iterdir()) == ["part-0.parquet"]


def test_recommendations_published_to_sql(prefect_harness, landing_env, monkeypatch):
    """RECSYS_SQL_URL loads the night's partition into the serving table, equal to the Parquet."""
    from flows.nightly import nightly
    from recsys_core.serving import read_recommendations_sql

    tmp, cfg = landing_env
    url = f"sqlite:///{tmp / 'serving.db'}"
    monkeypatch.setenv("RECSYS_SQL_URL", url)
    night = nightly(run_date=END, options=RunOptions(config_path=str(cfg)))
    assert night.steps.sql.rows == night.steps.score.rows > 0
    served = read_recommendations_sql(url, END).sort(["user_id", "rank"])
    parquet = _recs(tmp, END).sort(["user_id", "rank"])
    assert served.select(parquet.columns).equals(parquet)
    marker = read_json(Warehouse(tmp / "warehouse").run_marker(END))
    assert marker["settings"]["scoring"]["sql_url"] == url  # no password to hide in SQLite


def test_future_partitions_are_never_read(prefect_harness, landing_env):
    from flows.nightly import nightly

    tmp, cfg = landing_env
    day = END - dt.timedelta(days=2)
    # poison every partition after the run date: reading any of them would fail the run
    for kind in ("events", "items"):
        for part in (tmp / "landing" / kind).iterdir():
            if part.name > f"date={day.isoformat()}":
                for f in part.iterdir():
                    f.write_bytes(b"\x00not a valid file\x00")
    nightly(run_date=day, options=RunOptions(config_path=str(cfg)))
    wh = Warehouse(tmp / "warehouse")
    assert max(wh.raw_dates("events")) == day
    assert _recs(tmp, day).height > 0


def test_backfill_skips_complete_dates_and_names_a_failed_one(prefect_harness, landing_env):
    from flows.nightly import backfill

    tmp, cfg = landing_env
    start = END - dt.timedelta(days=2)
    out = backfill(
        start=start, end=END - dt.timedelta(days=1), options=RunOptions(config_path=str(cfg))
    )
    assert out["completed"] == [start.isoformat(), (start + dt.timedelta(days=1)).isoformat()]
    out = backfill(start=start, end=END, options=RunOptions(config_path=str(cfg)))
    assert out["skipped"] == [start.isoformat(), (start + dt.timedelta(days=1)).isoformat()]
    assert out["completed"] == [END.isoformat()]

    # a missing landing partition stops the backfill at that date; earlier dates stay complete
    later = END + dt.timedelta(days=1)
    with pytest.raises(RuntimeError, match=f"backfill stopped at {later.isoformat()}: "):
        backfill(
            start=END,
            end=later + dt.timedelta(days=1),
            options=RunOptions(config_path=str(cfg), force=True),
        )
    assert Warehouse(tmp / "warehouse").recommendations(END).is_file()
    assert not Warehouse(tmp / "warehouse").recommendations(later).exists()


def _cli(
    *args: str, env_extra: dict[str, str] | None = None, cwd: Path
) -> subprocess.CompletedProcess:
    """Run ``recsys`` in its own process group; whatever it started (the local Prefect API) is
    killed with it, even when the command itself was SIGKILLed by an injected fault."""
    env = {**os.environ, **(env_extra or {}), "PYTHONPATH": str(REPO)}
    out, err = cwd / "cli.out", cwd / "cli.err"
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deployments.cli", *args],
            stdout=fo,
            stderr=fe,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=600)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, code, out.read_text(), err.read_text())


def test_cli_fails_with_reason_when_landing_is_missing(prefect_harness, tmp_path):
    """(SIGKILL at every step, with the previous outputs intact, is in test_faults.py.)"""
    from prefect.settings import PREFECT_API_URL

    cfg = _config(tmp_path)
    res = _cli(
        "run",
        "--date",
        "2026-01-01",
        "--config",
        str(cfg),
        cwd=tmp_path,
        env_extra={"PREFECT_API_URL": PREFECT_API_URL.value()},
    )
    assert res.returncode == 1
    assert "2026-01-01" in res.stderr and "events" in res.stderr
