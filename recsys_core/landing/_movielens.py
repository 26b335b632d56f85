"""Replay MovieLens (latest-small layout) into daily landing partitions.

Events: every rating becomes a ``rating`` event in ``events/date=D/ratings.csv``, D being the UTC
date of its timestamp: ``user_id`` = userId, ``item_id`` = movieId (strings exactly as in the
file), ``timestamp`` = the Unix seconds, ``value`` = the rating as written ("4.0"),
``event_id`` = ``r-<userId>-<movieId>-<timestamp>``.

Items: a movie's row (title, genres as ``categories`` joined by ", ", the TMDB overview as
``description`` where known, ``tags``, ``updated_at``) lands in ``items/date=D/movies.csv`` on the
first written date on or after its first rating, and again on the first written date on or after
each date that a new tag was applied to it. ``tags`` lists the distinct tags applied on or before
D (in order of first use): never a tag from the future. ``updated_at`` is the latest of the first
rating's and the included tags' times.

``since``/``until`` restrict the dates written. A movie rated inside the window whose first
rating is older gets its catalog row on the window's first written date, so that the window is
self-contained.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl

from recsys_core.landing._write import write_frame

__all__ = ["replay_movielens"]

_ITEM_COLUMNS = ("item_id", "title", "description", "categories", "tags", "updated_at")


def _read(path: Path, columns: tuple[str, ...]) -> pl.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; expected MovieLens file with {columns}")
    df = pl.read_csv(path, infer_schema=False)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {df.columns}")
    return df.select(columns)


def _with_time(df: pl.DataFrame) -> pl.DataFrame:
    ts = pl.col("timestamp").cast(pl.Int64)
    return df.with_columns(
        ts.alias("_ts"), pl.from_epoch(ts, time_unit="s").dt.date().alias("_date")
    )


def replay_movielens(
    data_dir: Path,
    out: Path,
    *,
    overviews: Path | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> dict[str, Any]:
    """Write MovieLens ratings and movies as landing partitions under ``out``; return a summary.

    One events partition per UTC date of the ratings in ``[since, until]``; dates in between
    with no rating get a header-only file, as a real feed would send on a quiet day.

    ``data_dir`` holds ``ratings.csv``, ``tags.csv`` and ``movies.csv``; ``overviews`` is a CSV
    with ``movieId`` and ``overview`` (quoted multi-line fields are fine).
    """
    data_dir, out = Path(data_dir), Path(out)
    ratings = _with_time(
        _read(data_dir / "ratings.csv", ("userId", "movieId", "rating", "timestamp"))
    )
    tags = _with_time(_read(data_dir / "tags.csv", ("userId", "movieId", "tag", "timestamp")))
    movies = _read(data_dir / "movies.csv", ("movieId", "title", "genres"))
    window = ratings.filter(
        (pl.col("_date") >= (since or dt.date.min)) & (pl.col("_date") <= (until or dt.date.max))
    )
    if window.height == 0:
        return {"dates": 0, "events": 0, "item_rows": 0, "items": 0, "users": 0, "files": 0}
    events = window.select(
        pl.col("userId").alias("user_id"),
        pl.col("movieId").alias("item_id"),
        pl.lit("rating").alias("event_type"),
        pl.col("timestamp"),
        pl.col("rating").alias("value"),
        pl.concat_str(
            [pl.lit("r"), pl.col("userId"), pl.col("movieId"), pl.col("timestamp")], separator="-"
        ).alias("event_id"),
        "_date",
    )
    dates = events.select(pl.col("_date").unique().sort()).to_series()
    items = _item_rows(ratings, window, tags, movies, dates, overviews)
    jobs = [
        (part, out / kind / f"date={day.isoformat()}" / name)
        for frame, kind, name in ((events, "events", "ratings.csv"), (items, "items", "movies.csv"))
        for (day,), part in frame.partition_by(
            "_date", as_dict=True, maintain_order=True, include_key=False
        ).items()
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:  # overlaps the fsync of each atomic write
        list(pool.map(lambda job: write_frame(job[0], job[1], "csv"), jobs))
    # a day without ratings still lands, as a header-only file: every date in the window can run
    present = set(dates.to_list())
    empty = events.clear().drop("_date")
    gaps = [
        day
        for day in pl.date_range(dates[0], dates[-1], "1d", eager=True).to_list()
        if day not in present
    ]
    for day in gaps:
        write_frame(empty, out / "events" / f"date={day.isoformat()}" / "ratings.csv", "csv")
    files = len(jobs) + len(gaps)
    return {
        "empty_dates": len(gaps),
        "dates": len(dates),
        "first_date": dates[0].isoformat(),
        "last_date": dates[-1].isoformat(),
        "events": events.height,
        "users": window["userId"].n_unique(),
        "items": window["movieId"].n_unique(),
        "item_rows": items.height,
        "item_rows_with_description": int(items["description"].is_not_null().sum()),
        "item_rows_with_tags": int(items["tags"].is_not_null().sum()),
        "files": files,
    }


def _item_rows(
    ratings: pl.DataFrame,
    window: pl.DataFrame,
    tags: pl.DataFrame,
    movies: pl.DataFrame,
    dates: pl.Series,
    overviews: Path | None,
) -> pl.DataFrame:
    """One row per (movie rated in the window, date it is emitted), with columns
    ``_ITEM_COLUMNS`` + ``_date``, sorted by date then movieId (as in the source order)."""
    w0 = dates[0]
    rated = window.select("movieId").unique()
    first = (
        ratings.join(rated, on="movieId")
        .group_by("movieId")
        .agg(pl.col("_ts").min().alias("_first_ts"), pl.col("_date").min().alias("_first"))
    )
    tags = tags.join(rated, on="movieId")
    changes = pl.concat(
        [
            first.select("movieId", pl.col("_first").alias("_c")),
            tags.select("movieId", pl.col("_date").alias("_c")),
        ]
    ).join(first.select("movieId", "_first"), on="movieId")
    changes = changes.select(
        "movieId", pl.max_horizontal("_c", "_first", pl.lit(w0)).alias("_c")
    ).sort("_c")
    emit = (
        changes.join_asof(
            pl.DataFrame({"_date": dates}).with_columns(pl.col("_date").alias("_c")),
            on="_c",
            strategy="forward",
        )
        .drop_nulls("_date")
        .select("movieId", "_date")
        .unique()
    )
    tag_lists = (
        emit.join(
            tags.select("movieId", "tag", "_ts", pl.col("_date").alias("_tag_date")), on="movieId"
        )
        .filter(pl.col("_tag_date") <= pl.col("_date"))
        .group_by("movieId", "_date", "tag")
        .agg(pl.col("_ts").min())
        .sort("movieId", "_date", "_ts", "tag")
        .group_by("movieId", "_date", maintain_order=True)
        .agg(pl.col("tag").str.join(", ").alias("tags"), pl.col("_ts").max().alias("_tag_ts"))
    )
    rows = (
        emit.join(tag_lists, on=["movieId", "_date"], how="left")
        .join(first.select("movieId", "_first_ts"), on="movieId")
        .join(movies, on="movieId", how="left")
        .join(_overviews(overviews), on="movieId", how="left")
    )
    genres = pl.col("genres").str.replace_all("|", ", ", literal=True)
    return rows.select(
        pl.col("movieId").alias("item_id"),
        "title",
        pl.col("overview").alias("description"),
        pl.when(pl.col("genres") == "(no genres listed)")
        .then(None)
        .otherwise(genres)
        .alias("categories"),
        "tags",
        pl.max_horizontal("_first_ts", "_tag_ts").cast(pl.String).alias("updated_at"),
        "_date",
    ).sort("_date", pl.col("item_id").cast(pl.Int64, strict=False), "item_id")


def _overviews(path: Path | None) -> pl.DataFrame:
    if path is None:
        return pl.DataFrame(schema={"movieId": pl.String, "overview": pl.String})
    df = _read(Path(path), ("movieId", "overview"))
    return df.filter(pl.col("overview").str.strip_chars() != "").unique(
        "movieId", keep="first", maintain_order=True
    )
