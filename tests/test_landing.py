"""Landing sources: the synthetic generator and the MovieLens replay."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from recsys_core.config import EVENT_TYPES
from recsys_core.ingest import clean_days, ingest, load_catalog, load_clean_events
from recsys_core.interactions import Interactions
from recsys_core.io import Warehouse
from recsys_core.landing import generate_synthetic, replay_movielens
from recsys_core.metrics import mean_metrics, ranking_metrics
from recsys_core.models.ease import EASE
from recsys_core.models.popularity import Popularity

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ML = DATA / "ml-latest-small"
OVERVIEWS = DATA / "tmdb-5000-movies" / "ml-latest-small_tmdb_overviews.csv"
SMALL = {"users": 40, "items": 50, "days": 9, "end_date": dt.date(2026, 1, 31)}


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def ingest_and_clean(landing: Path, wh: Warehouse, run_date: dt.date) -> list[dict]:
    result = ingest(landing, wh, run_date, require_run_date=False)
    return clean_days(wh, result.all_dates)


# ---- synthetic -------------------------------------------------------------------------------


def test_generator_is_deterministic(tmp_path: Path) -> None:
    a = generate_synthetic(tmp_path / "a", seed=3, **SMALL)
    b = generate_synthetic(tmp_path / "b", seed=3, **SMALL)
    c = generate_synthetic(tmp_path / "c", seed=4, **SMALL)
    assert a == b and c != a
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    assert tree(tmp_path / "a") != tree(tmp_path / "c")
    assert set(a["files"]) == {"csv", "jsonl", "parquet"}
    names = set(tree(tmp_path / "a"))
    assert (
        "events/date=2026-01-23/part-0.csv" in names
        and "events/date=2026-01-23/part-1.csv" in names
    )
    assert "events/date=2026-01-25/events.jsonl" in names
    assert "events/date=2026-01-28/events.parquet" in names


def test_generator_dirt_is_exactly_what_clean_removes(tmp_path: Path) -> None:
    summary = generate_synthetic(tmp_path / "landing", seed=5, **SMALL)
    wh = Warehouse(tmp_path / "wh")
    manifests = ingest_and_clean(tmp_path / "landing", wh, SMALL["end_date"])
    events, items, reasons, kinds = Counter(), Counter(), Counter(), Counter()
    for m in manifests:
        events.update(m["events"])
        items.update(m["items"])
        reasons.update(m["reasons"])
        kinds.update(m["duplicate_kinds"])
    dirt = summary["dirt"]
    assert all(n > 0 for n in dirt.values())
    assert events["ingested"] == summary["event_rows"]
    assert events["clean"] == summary["natural_events"]
    assert kinds["events_exact"] == dirt["exact_duplicates"]
    assert kinds["events_near"] == dirt["near_duplicates"] + dirt["near_duplicates_across_midnight"]
    malformed = (
        "missing_user_id",
        "unknown_event_type",
        "bad_timestamp",
        "timestamp_off_partition",
    )
    for name in (*malformed, "rating_out_of_range"):
        assert reasons[name] == dirt[name], name
    assert events["quarantined"] == sum(dirt[n] for n in (*malformed, "rating_out_of_range"))
    assert items == {
        "ingested": summary["item_rows"],
        "clean": summary["item_rows"] - 2,
        "duplicates": 1,
        "quarantined": 1,
    }
    ev = load_clean_events(wh, until=SMALL["end_date"])
    by_type = dict(ev.group_by("event_type").len().iter_rows())
    assert by_type == summary["events_by_type"]  # synonyms ("buy", " View") normalised
    assert set(by_type) <= set(EVENT_TYPES)
    assert by_type["view"] > by_type["click"] > by_type["add_to_cart"] > by_type["purchase"]
    assert ev["item_id"].str.contains(r"^\d{5}$").all()  # zero-padded ids stay strings
    catalog = load_catalog(wh, SMALL["end_date"])
    assert catalog.height == summary["catalog_items"]
    first_day = dt.date.fromisoformat(summary["start_date"])
    assert (
        load_catalog(wh, first_day).height == summary["catalog_items"] - summary["cold_start_items"]
    )
    assert catalog["description"].str.contains("\n").any()  # multi-line text survives CSV


def test_generator_planted_structure_lets_ease_beat_popularity(tmp_path: Path) -> None:
    summary = generate_synthetic(tmp_path / "landing", users=300, items=200, days=14, seed=1)
    wh = Warehouse(tmp_path / "wh")
    end = dt.date.fromisoformat(summary["end_date"])
    ingest_and_clean(tmp_path / "landing", wh, end)
    cut = end - dt.timedelta(days=3)  # temporal holdout: the last 3 days
    train = load_clean_events(wh, until=cut)
    test = load_clean_events(wh, until=end, since=cut + dt.timedelta(days=1))
    inter = Interactions.from_frame(train)
    truth = (
        test.join(
            train.select("user_id", "item_id").unique(), on=["user_id", "item_id"], how="anti"
        )
        .filter(pl.col("user_id").is_in(inter.user_ids.tolist()))
        .select("user_id", "item_id")
        .unique()
    )
    users = truth["user_id"].unique().sort().to_list()
    assert len(users) > 150
    ndcg = {}
    for name, model in (("popularity", Popularity()), ("ease", EASE())):
        recs = model.fit(inter).recommend(users, 10)
        ndcg[name] = mean_metrics(ranking_metrics(recs, truth, 10))["ndcg"]
    # measured 0.368 vs 0.075 (seed 1)
    assert ndcg["ease"] > 3 * ndcg["popularity"] > 0


def test_generator_rejects_empty_worlds(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="items >= 2"):
        generate_synthetic(tmp_path, users=1, items=1, days=1, seed=0)


# ---- MovieLens replay ------------------------------------------------------------------------

WINDOW = (dt.date(2017, 6, 24), dt.date(2017, 6, 26))


@pytest.mark.shared_data
def test_movielens_replay_keeps_ids_and_values_as_given(tmp_path: Path) -> None:
    summary = replay_movielens(ML, tmp_path, overviews=OVERVIEWS, since=WINDOW[0], until=WINDOW[1])
    ratings = pl.read_csv(ML / "ratings.csv", infer_schema=False).with_columns(
        pl.from_epoch(pl.col("timestamp").cast(pl.Int64), time_unit="s").dt.date().alias("d")
    )
    expected = ratings.filter(pl.col("d").is_between(*WINDOW))
    assert summary["events"] == expected.height == 1062
    assert summary["dates"] == 3
    first = pl.read_csv(tmp_path / "events" / "date=2017-06-24" / "ratings.csv", infer_schema=False)
    assert first.columns == ["user_id", "item_id", "event_type", "timestamp", "value", "event_id"]
    row = expected.filter(pl.col("d") == WINDOW[0]).row(0, named=True)
    assert first.row(0) == (
        row["userId"],
        row["movieId"],
        "rating",
        row["timestamp"],
        row["rating"],
        f"r-{row['userId']}-{row['movieId']}-{row['timestamp']}",
    )
    wh = Warehouse(tmp_path / "wh")
    manifests = ingest_and_clean(tmp_path, wh, WINDOW[1])
    assert [m["events"]["clean"] for m in manifests] == [
        expected.filter(pl.col("d") == d).height
        for d in (WINDOW[0], dt.date(2017, 6, 25), WINDOW[1])
    ]
    ev = load_clean_events(wh, until=WINDOW[1])
    assert ev["item_id"].dtype == pl.String
    assert set(ev["item_id"]) == set(expected["movieId"])
    catalog = load_catalog(wh, WINDOW[1])
    assert set(catalog["item_id"]) == set(expected["movieId"])  # every rated movie is cataloged
    pulp = catalog.filter(pl.col("item_id") == "296").row(0, named=True)
    assert pulp["title"] == "Pulp Fiction (1994)"
    assert pulp["categories"] == "Comedy, Crime, Drama, Thriller"
    assert pulp["description"].startswith("A burger-loving hit man")


@pytest.mark.shared_data
def test_movielens_replay_never_leaks_future_tags(tmp_path: Path) -> None:
    replay_movielens(ML, tmp_path, since=WINDOW[0], until=WINDOW[1])
    tags = (
        pl.read_csv(ML / "tags.csv", infer_schema=False)
        .with_columns(
            pl.from_epoch(pl.col("timestamp").cast(pl.Int64), time_unit="s").dt.date().alias("d")
        )
        .group_by("movieId", "tag")
        .agg(pl.col("d").min().alias("first_used"))
    )
    checked = 0
    for path in sorted((tmp_path / "items").glob("date=*/movies.csv")):
        day = dt.date.fromisoformat(path.parent.name.removeprefix("date="))
        rows = pl.read_csv(path, infer_schema=False)
        listed = rows.select(
            "item_id", pl.col("tags").fill_null("").str.split(", ").alias("tag")
        ).explode("tag")
        future = tags.filter(pl.col("first_used") > day).rename({"movieId": "item_id"})
        assert listed.join(future, on=["item_id", "tag"]).height == 0, path
        checked += rows.height
    assert checked > 0
    early = pl.read_csv(tmp_path / "items" / "date=2017-06-24" / "movies.csv", infer_schema=False)
    later = pl.read_csv(tmp_path / "items" / "date=2017-06-26" / "movies.csv", infer_schema=False)
    early_tags = early.filter(pl.col("item_id") == "296")["tags"].item().split(", ")
    later_tags = later.filter(pl.col("item_id") == "296")["tags"].item().split(", ")
    assert len(early_tags) == 8 and "dark comedy" not in early_tags
    assert "dark comedy" in later_tags and set(early_tags) < set(later_tags)


@pytest.mark.shared_data
@pytest.mark.slow
def test_movielens_full_replay_ingests_and_cleans_every_rating(tmp_path: Path) -> None:
    summary = replay_movielens(ML, tmp_path / "landing", overviews=OVERVIEWS)
    assert summary["dates"] == 4110 and summary["events"] == 100_836
    wh = Warehouse(tmp_path / "wh")
    manifests = ingest_and_clean(tmp_path / "landing", wh, dt.date(2018, 9, 24))
    assert sum(m["events"]["clean"] for m in manifests) == 100_836
    assert load_catalog(wh, dt.date(2018, 9, 24)).height == 9724
