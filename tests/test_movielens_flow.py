"""A MovieLens latest-small replay through the real flows: a first night that loads the history,
then a backfill of the following days (../shared/data, nothing downloaded)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from flows.parameters import RunOptions
from recsys_core.io import Warehouse, read_json
from recsys_core.landing import replay_movielens

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.shared_data]


def test_movielens_replay_nightly_then_backfill(prefect_harness, shared_data: Path, tmp_path: Path):
    from flows.nightly import backfill, nightly

    replay_movielens(
        shared_data / "ml-latest-small",
        tmp_path / "landing",
        overviews=shared_data / "tmdb-5000-movies" / "ml-latest-small_tmdb_overviews.csv",
        since=dt.date(2018, 1, 1),
    )
    cfg = tmp_path / "recsys.toml"
    cfg.write_text(
        """
landing = "landing"
warehouse = "warehouse"
k = 10
[train]
models = ["popularity", "itemknn"]
tune_calls = 3
tune_initial_points = 2
validation_days = 30
[evaluation]
holdout_days = 45
bootstrap_samples = 200
[embedding]
enabled = false
[runner]
retries = 0
""",
        encoding="utf-8",
    )
    first = dt.date(2018, 9, 20)
    night = nightly(run_date=first, options=RunOptions(config_path=str(cfg)))
    wh = Warehouse(tmp_path / "warehouse")

    # the first night loads every partition up to the run date, none after it
    assert max(wh.raw_dates("events")) == first
    total = sum(read_json(wh.manifest(d))["events"]["clean"] for d in wh.clean_dates("events"))
    ratings = pl.read_csv(shared_data / "ml-latest-small" / "ratings.csv")
    ts = pl.from_epoch(ratings["timestamp"]).dt.date()
    expected = ratings.filter((ts >= dt.date(2018, 1, 1)) & (ts <= first)).height
    assert total == expected  # MovieLens is clean: every rating survives

    # ids stay strings exactly as MovieLens gives them
    recs = pl.read_parquet(wh.recommendations(first))
    movie_ids = set(
        pl.read_csv(shared_data / "ml-latest-small" / "movies.csv")["movieId"].cast(pl.String)
    )
    assert set(recs["item_id"].to_list()) <= movie_ids
    assert night.steps.evaluate.challenger_metrics.n_users > 0

    # 2018-09-21 has no rating: the replay lands an empty partition and the night still runs
    out = backfill(start=first, end=dt.date(2018, 9, 22), options=RunOptions(config_path=str(cfg)))
    assert out["skipped"] == ["2018-09-20"]
    assert out["completed"] == ["2018-09-21", "2018-09-22"]
    for d in out["completed"]:
        day = dt.date.fromisoformat(d)
        part = pl.read_parquet(wh.recommendations(day))
        assert part["run_date"].unique().to_list() == [day]
        assert part.height > 0
