"""A deterministic synthetic landing zone with planted structure and realistic dirt.

:func:`generate_synthetic` writes ``events/date=D/`` and ``items/date=D/`` partitions for ``days``
days ending on ``end_date``. Same arguments give byte-identical files.

Formats rotate by day index ``d`` (0 = first day): ``d % 7 == 2`` JSON lines (Unix-second numbers,
no ``event_id`` column, so duplicates are found by content), ``d % 7 == 5`` Parquet (typed
timestamp and value), otherwise CSV (ISO 8601, some with a ``+01:00``/``-05:00`` offset; split in
two files when ``d % 3 == 0``).

Dirt, each kind counted in the returned summary (``dirt_rate`` of the natural events for exact and
near duplicates, a quarter of that for each malformed kind, at least one each):

* exact duplicates (a row repeated verbatim), near duplicates (same user, item, type 1-5 s later,
  another event id), near duplicates across midnight (an event at 23:59:45-55, its repeat just
  after midnight in the next day's partition, at most 19 s apart);
* malformed rows: missing user_id, unknown event_type, unparseable timestamp (never in Parquet
  days), timestamp on another date than the partition's, rating value out of [0.5, 5];
* valid spellings that clean must normalise ("buy", "add-to-cart", " View", ...).

With any ``dedupe_window_seconds`` in [20, 300) clean finds exactly the planted duplicates.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys_core.landing._items_drop import write_item_drops
from recsys_core.landing._simulate import TYPES, make_catalog, simulate_events
from recsys_core.landing._write import write_frame, write_text_lines

__all__ = ["generate_synthetic"]

_SYNONYMS = {
    "view": " View",
    "click": "CLICK",
    "add_to_cart": "add-to-cart",
    "purchase": "buy",
    "rating": "rate",
}
_BAD_TIMES = ("yesterday", "not a time", "2026-13-40T10:00:00Z", "31/01/2026 10:00")


def generate_synthetic(
    out: Path,
    *,
    users: int,
    items: int,
    days: int,
    seed: int,
    end_date: dt.date = dt.date(2026, 1, 31),
    dirt_rate: float = 0.01,
) -> dict[str, Any]:
    """Write a synthetic landing zone under ``out``; return a summary of what was planted.

    ``out`` should be empty (or hold an earlier run with the same arguments, whose files are
    replaced): files of other partitions already there are left alone and would be ingested too.
    """
    if users < 1 or items < 2 or days < 1:
        raise ValueError(f"need users >= 1, items >= 2, days >= 1; got {users}, {items}, {days}")
    out = Path(out)
    rng = np.random.default_rng(seed)
    start = end_date - dt.timedelta(days=days - 1)
    start_ts = int(dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC).timestamp())
    catalog = make_catalog(rng, items, days)
    ev = simulate_events(rng, catalog, users, days, start_ts, start.weekday())
    n = len(ev["ts"])
    natural = pl.DataFrame(
        {
            "_u": ev["user"],
            "item_id": pl.Series(catalog.item_ids, dtype=pl.String).gather(ev["item"]),
            "event_type": pl.Series(TYPES, dtype=pl.String).gather(ev["type"]),
            "ts": ev["ts"],
            "value": pl.Series(ev["value"], dtype=pl.Float64).fill_nan(None),
        }
    ).select(
        pl.concat_str(pl.lit("u"), (pl.col("_u") + 1).cast(pl.String).str.zfill(5)).alias(
            "user_id"
        ),
        "item_id",
        "event_type",
        pl.col("ts").cast(pl.Int64),
        "value",
        pl.concat_str(pl.lit("e"), pl.int_range(1, n + 1).cast(pl.String).str.zfill(7)).alias(
            "event_id"
        ),
        pl.lit(None, pl.String).alias("ts_text"),
    )
    by_type = dict(natural.group_by("event_type").len().iter_rows())
    syn = rng.choice(n, size=max(1, round(dirt_rate * n)), replace=False)
    natural = natural.with_columns(
        pl.when(pl.int_range(pl.len()).is_in(syn))
        .then(pl.col("event_type").replace(_SYNONYMS))
        .otherwise(pl.col("event_type"))
    )
    frames, dirt = _dirt(rng, natural, ev["midnight"], start_ts, days, dirt_rate)
    rows = pl.concat([_with_day(natural, start_ts), *frames]).with_columns(
        pl.Series("_off", rng.choice([0, 0, 0, 0, 0, 0, 60, -300], size=n + sum(map(len, frames))))
    )
    files: Counter[str] = Counter()
    by_day = {
        k[0]: v for k, v in rows.partition_by("_day", as_dict=True, maintain_order=True).items()
    }
    for d in range(days):
        part = by_day.get(d, rows.clear())
        part = part[rng.permutation(part.height)]
        day = start + dt.timedelta(days=d)
        for fmt in _write_events_day(part, out / "events" / f"date={day.isoformat()}", d):
            files[fmt] += 1
    item_summary = write_item_drops(rng, catalog, out / "items", start, days, files)
    return {
        "users": users,
        "items": items,
        "days": days,
        "seed": seed,
        "start_date": start.isoformat(),
        "end_date": end_date.isoformat(),
        "clusters": catalog.n_clusters,
        "natural_events": n,
        "events_by_type": {t: by_type.get(t, 0) for t in TYPES},
        "event_rows": rows.height,
        "synonym_rows": len(syn),
        "dirt": dirt,
        **item_summary,
        "files": dict(sorted(files.items())),
    }


def _dirt(
    rng: np.random.Generator,
    natural: pl.DataFrame,
    midnight: np.ndarray,
    start_ts: int,
    days: int,
    rate: float,
) -> tuple[list[pl.DataFrame], dict[str, int]]:
    n = natural.height
    end_ts = start_ts + days * 86400
    n_dup, n_bad = max(1, round(rate * n)), max(1, round(rate * n / 4))
    day = (natural["ts"].to_numpy() - start_ts) // 86400

    def pick(pool: np.ndarray, k: int) -> list[int]:
        return sorted(rng.choice(pool, size=min(k, len(pool)), replace=False).tolist())

    every = np.arange(n)
    exact = _with_day(natural[pick(every, n_dup)], start_ts)
    pool = np.flatnonzero(natural["ts"].to_numpy() + 5 < end_ts)
    near = natural[pick(pool, n_dup)]
    near = near.with_columns(
        pl.col("ts") + pl.Series(rng.integers(1, 6, size=near.height)),
        pl.concat_str(pl.col("event_id"), pl.lit("-r")),
    )
    mid = natural[midnight.tolist()]
    mid = mid.with_columns(
        ((pl.col("ts") - start_ts) // 86400 * 86400 + 86400 + start_ts)
        .add(pl.Series(rng.integers(0, 5, size=mid.height)))
        .alias("ts"),
        pl.concat_str(pl.col("event_id"), pl.lit("-m")),
    )

    def bad(pool: np.ndarray, suffix: str, **cols: Any) -> pl.DataFrame:
        """Copies of natural rows with one defect, written in the source row's day."""
        rows = _with_day(natural[pick(pool, n_bad)], start_ts)
        return rows.with_columns(
            pl.concat_str(pl.col("event_id"), pl.lit(suffix)),
            **{k: (v(rows.height) if callable(v) else v) for k, v in cols.items()},
        )

    def choice(options: tuple[Any, ...]) -> Any:
        return lambda k: pl.Series([options[int(i)] for i in rng.integers(len(options), size=k)])

    ratings = np.flatnonzero(natural["event_type"].is_in(["rating", "rate"]).to_numpy())
    not_parquet = np.flatnonzero(day % 7 != 5)
    frames = {
        "exact_duplicates": exact,
        "near_duplicates": _with_day(near, start_ts),
        "near_duplicates_across_midnight": _with_day(mid, start_ts),
        "missing_user_id": bad(every, "-x1", user_id=pl.lit(None, pl.String)),
        "unknown_event_type": bad(every, "-x2", event_type=choice(("like", "share", "wishlist"))),
        "bad_timestamp": bad(not_parquet, "-x3", ts_text=choice(_BAD_TIMES)),
        "timestamp_off_partition": bad(
            every, "-x4", ts=lambda k: pl.col("ts") + pl.Series(rng.choice([-86400, 86400], size=k))
        ),
        "rating_out_of_range": bad(
            ratings if len(ratings) else every,
            "-x5",
            event_type=pl.lit("rating"),
            value=choice((7.5, -1.0, 11.0)),
        ),
    }
    return list(frames.values()), {k: v.height for k, v in frames.items()}


def _with_day(df: pl.DataFrame, start_ts: int) -> pl.DataFrame:
    """Add ``_day``: the index of the partition (UTC day of ``ts``) a row is written to."""
    return df.with_columns(((pl.col("ts") - start_ts) // 86400).alias("_day"))


def _write_events_day(part: pl.DataFrame, directory: Path, d: int) -> list[str]:
    """Write one day's rows in that day's format; returns the formats of the files written."""
    if part.height == 0:
        return []
    if d % 7 == 2:
        fields = [pl.col("user_id"), pl.col("item_id"), pl.col("event_type")]
        as_number = pl.struct(*fields, pl.col("ts").alias("timestamp"), "value")
        as_text = pl.struct(*fields, pl.col("ts_text").alias("timestamp"), "value")
        lines = part.select(
            pl.when(pl.col("ts_text").is_null())
            .then(as_number.struct.json_encode())
            .otherwise(as_text.struct.json_encode())
        ).to_series()
        write_text_lines(lines.to_list(), directory / "events.jsonl")
        return ["jsonl"]
    if d % 7 == 5:
        df = part.select(
            "user_id",
            "item_id",
            "event_type",
            pl.from_epoch("ts", time_unit="s").dt.replace_time_zone("UTC").alias("timestamp"),
            "value",
            "event_id",
        )
        write_frame(df, directory / "events.parquet", "parquet")
        return ["parquet"]
    local = pl.from_epoch(pl.col("ts") + pl.col("_off") * 60, time_unit="s")
    zone = (
        pl.when(pl.col("_off") == 0)
        .then(pl.lit("Z"))
        .when(pl.col("_off") > 0)
        .then(pl.lit("+01:00"))
        .otherwise(pl.lit("-05:00"))
    )
    iso = pl.concat_str([local.dt.to_string("%Y-%m-%dT%H:%M:%S"), zone])
    df = part.select(
        "event_id",
        "user_id",
        "item_id",
        "event_type",
        pl.coalesce(pl.col("ts_text"), iso).alias("timestamp"),
        pl.col("value").cast(pl.String),
    )
    if d % 3 == 0 and df.height > 1:
        half = df.height // 2
        write_frame(df[:half], directory / "part-0.csv", "csv")
        write_frame(df[half:], directory / "part-1.csv", "csv")
        return ["csv", "csv"]
    write_frame(df, directory / "part-0.csv", "csv")
    return ["csv"]
