"""The nightly flow on a 2-worker local Dask cluster gives the thread runner's output, byte for byte."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from recsys_core.io import Warehouse
from recsys_core.landing import generate_synthetic

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

END = dt.date(2026, 1, 8)


def _setup(root: Path) -> Path:
    generate_synthetic(root / "landing", users=70, items=50, days=6, seed=5, end_date=END)
    cfg = root / "recsys.toml"
    cfg.write_text(
        """
landing = "landing"
warehouse = "warehouse"
k = 5
[train]
models = ["popularity", "itemknn"]
tune_calls = 2
tune_initial_points = 1
validation_days = 1
[evaluation]
holdout_days = 2
bootstrap_samples = 200
[embedding]
enabled = false
[scoring]
shards = 3
[runner]
retries = 0
dask_workers = 2
""",
        encoding="utf-8",
    )
    return cfg


def test_dask_runner_matches_threads(prefect_harness, tmp_path):
    from flows.nightly import nightly
    from flows.runtime import build_task_runner, resolve_settings

    threads_cfg = _setup(tmp_path / "threads")
    dask_cfg = _setup(tmp_path / "dask")
    nightly(run_date=END, config_path=str(threads_cfg))

    settings = resolve_settings(dask_cfg, task_runner="dask")
    assert settings.runner.task_runner == "dask"
    on_dask = nightly.with_options(task_runner=build_task_runner(settings.runner))
    steps = on_dask(run_date=END, config_path=str(dask_cfg), task_runner="dask")
    assert steps["score"]["rows"] > 0

    a = pl.read_parquet(Warehouse(tmp_path / "threads" / "warehouse").recommendations(END))
    b = pl.read_parquet(Warehouse(tmp_path / "dask" / "warehouse").recommendations(END))
    assert a.height == b.height > 0
    assert a.equals(b)
