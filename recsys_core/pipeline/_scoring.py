"""Score step: top-K for every active user with the champion, in shards that merge deterministically.

Each shard writes a hidden staging file; the merge sorts every row by (user_id, rank), so the
partition is identical whatever the number of shards or the task runner, then renames it into
``recommendations/run_date=D/part-0.parquet`` in one step.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from recsys_core.config import Settings
from recsys_core.evaluation import ModelRegistry
from recsys_core.ingest import load_catalog, load_clean_events
from recsys_core.io import Warehouse, atomic_write_parquet, read_parquet
from recsys_core.pipeline._faults import maybe_fail
from recsys_core.schema import RECOMMENDATIONS_SCHEMA

__all__ = ["active_users", "merge_scores", "publish_sql", "score_shard"]


def _staging(wh: Warehouse, run_date: dt.date) -> Path:
    return wh.root / "_staging" / "recommendations" / f"run_date={run_date.isoformat()}"


def active_users(settings: Settings, run_date: dt.date, known: set[str]) -> list[str]:
    """Users with an event in the ``active_days`` before ``run_date`` (0 = every known user)."""
    if settings.scoring.active_days == 0:
        return sorted(known)
    wh = Warehouse(settings.warehouse)
    since = run_date - dt.timedelta(days=settings.scoring.active_days - 1)
    ev = load_clean_events(wh, until=run_date, since=since)
    return sorted(set(ev["user_id"].to_list()) & known)


def score_shard(settings: Settings, run_date: dt.date, shard: int, n_shards: int) -> dict[str, Any]:
    """Recommend for users ``shard, shard + n_shards, ...`` of the sorted active users."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} out of range for {n_shards} shards")
    wh = Warehouse(settings.warehouse)
    maybe_fail(settings, "score")
    registry = ModelRegistry(wh.models_dir)
    champion = registry.champion()
    if champion is None:
        raise RuntimeError(f"no champion model in {wh.models_dir}; run train and evaluate first")
    model = registry.load_model(champion["model_id"])
    users = active_users(settings, run_date, set(model.user_ids_))[shard::n_shards]
    catalog = load_catalog(wh, as_of=run_date)
    candidates = catalog["item_id"].to_list() if catalog.height else None
    recs = model.recommend(
        users,
        settings.k,
        block_size=settings.scoring.block_size,
        threads=settings.scoring.threads or ((os.cpu_count() or 1) if n_shards == 1 else 1),
        candidate_items=candidates,
        exclude_items=settings.scoring.exclude_items or None,
    )
    if settings.scoring.reasons:
        recs = _with_reasons(model.explain(recs), catalog)
    maybe_fail(settings, "score", point="shard-written")
    path = _staging(wh, run_date) / f"shard-{shard:05d}-of-{n_shards:05d}.parquet"
    atomic_write_parquet(recs, path)
    return {
        "shard": shard,
        "users": len(users),
        "rows": recs.height,
        "path": str(path),
        "model_id": champion["model_id"],
    }


def merge_scores(
    settings: Settings, run_date: dt.date, shards: list[dict[str, Any]]
) -> dict[str, Any]:
    """Merge shard files into the run date's partition (atomic) and clear the staging folder."""
    wh = Warehouse(settings.warehouse)
    model_ids = {s["model_id"] for s in shards}
    if len(model_ids) != 1:
        raise RuntimeError(
            f"shards were scored by different models {sorted(model_ids)}; re-run score"
        )
    model_id = model_ids.pop()
    frames = [read_parquet(s["path"]) for s in sorted(shards, key=lambda s: s["shard"])]
    recs = pl.concat(frames) if frames else pl.DataFrame()
    n = recs.height
    recs = (
        recs.with_columns(
            pl.lit(model_id).alias("model_id"),
            pl.lit(run_date).alias("run_date"),
            pl.lit(None, dtype=pl.String).alias("reason")
            if "reason" not in recs.columns
            else pl.col("reason"),
        )
        .select([pl.col(c).cast(t) for c, t in RECOMMENDATIONS_SCHEMA.items()])
        .sort(["user_id", "rank"])
    )
    maybe_fail(settings, "score", point="merge")
    out = atomic_write_parquet(recs, wh.recommendations(run_date))
    shutil.rmtree(_staging(wh, run_date), ignore_errors=True)
    return {
        "path": str(out),
        "rows": n,
        "users": recs["user_id"].n_unique() if n else 0,
        "items": recs["item_id"].n_unique() if n else 0,
        "model_id": model_id,
    }


def publish_sql(settings: Settings, run_date: dt.date) -> dict[str, Any]:
    """Load the date's partition into the serving database (one transaction), if one is set."""
    from recsys_core.scoring import load_partition_to_sql, resolve_sql_url

    url = resolve_sql_url(settings.scoring.sql_url)
    if url is None:
        return {"skipped": "no sql_url configured (RECSYS_SQL_URL)"}
    maybe_fail(settings, "sql")
    return load_partition_to_sql(settings.warehouse, run_date, url)


def _with_reasons(recs: pl.DataFrame, catalog: pl.DataFrame) -> pl.DataFrame:
    """``reason_item_id`` -> a sentence a person can read, naming the item by its title."""
    titles = (
        catalog.select("item_id", pl.col("title").alias("_title"))
        if catalog.height and "title" in catalog.columns
        else pl.DataFrame(schema={"item_id": pl.String, "_title": pl.String})
    )
    named = recs.join(
        titles.rename({"item_id": "reason_item_id"}),
        on="reason_item_id",
        how="left",
        maintain_order="left",
    )
    return named.with_columns(
        pl.when(pl.col("reason_item_id").is_not_null())
        .then(
            pl.format(
                "because you interacted with {}",
                pl.coalesce(
                    pl.col("_title"), pl.concat_str([pl.lit("item "), pl.col("reason_item_id")])
                ),
            )
        )
        .otherwise(None)
        .alias("reason")
    ).drop("reason_item_id", "_title")
