"""Score step: top-K for every active user with the champion, in shards that merge deterministically.

Each shard writes a staging file under a name of its own (a fresh suffix per call); the merge
reads exactly the files its shard results name, sorts every row by (user_id, rank), so the
partition is identical whatever the number of shards or the task runner, and writes it to
``recommendations/run_date=D/part-0.parquet`` in one step, then clears the date's staging folder.
A shard written late -- by a failed attempt, or on a Dask worker (not fenced by the lock's lease)
for a run that lost its lock -- is therefore never merged into another run's partition.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import polars as pl

from recsys_core.config import Settings
from recsys_core.ingest import load_catalog, load_clean_events
from recsys_core.interactions import distinct_count
from recsys_core.io import (
    Warehouse,
    atomic_write_parquet,
    delete_tree,
    listing_snapshot,
    prefetch_listings,
    read_json,
    read_parquet,
    read_parquet_many,
)
from recsys_core.pipeline._context import ranking_threads
from recsys_core.pipeline._faults import maybe_fail
from recsys_core.registry import ModelRegistry
from recsys_core.results import ScoreResult, ShardResult, Skipped, SqlResult
from recsys_core.schema import RECOMMENDATIONS_SCHEMA

__all__ = [
    "ARM_RECOMMENDATIONS_SCHEMA",
    "ASSIGNMENTS_SCHEMA",
    "active_users",
    "merge_scores",
    "publish_sql",
    "score_shard",
]


def _staging(wh: Warehouse, run_date: dt.date) -> Any:
    return wh.root / "_staging" / "recommendations" / f"run_date={run_date.isoformat()}"


def _shard_stem(wh: Warehouse, run_date: dt.date, shard: int, n_shards: int) -> Any:
    """This call's staging name for a shard: unique, so no other run or attempt writes it."""
    return _staging(wh, run_date) / f"shard-{shard:05d}-of-{n_shards:05d}-{uuid.uuid4().hex[:12]}"


def active_users(settings: Settings, run_date: dt.date, known: set[str]) -> list[str]:
    """Users with an event in the ``active_days`` before ``run_date`` (0 = every known user)."""
    if settings.scoring.active_days == 0:
        return sorted(known)
    wh = Warehouse(settings.warehouse)
    since = run_date - dt.timedelta(days=settings.scoring.active_days - 1)
    ev = load_clean_events(wh, until=run_date, since=since)
    return sorted(set(ev["user_id"].to_list()) & known)


@listing_snapshot()
def score_shard(
    settings: Settings,
    run_date: dt.date,
    shard: int,
    n_shards: int,
    model_id: str | None = None,
) -> ShardResult:
    """Recommend for users ``shard, shard + n_shards, ...`` of the sorted active users.

    ``model_id``: the model this run's gate left serving (``EvaluateResult.champion_after``), so
    that every shard scores with the model the run decided on, even if a concurrent run of
    another date promotes a different one meanwhile; None: the registry's champion now.

    With an experiment configured, each user is scored by their arm's model (see
    :func:`recsys_core.pipeline.prepare_arms`) and the rows carry ``arm``; the shard's
    assignments (``user_id, arm, model_id``) are staged beside its recommendations.
    """
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} out of range for {n_shards} shards")
    wh = Warehouse(settings.warehouse)
    maybe_fail(settings, "score")
    if settings.scoring.active_days:  # the active users' events and the catalog, at once
        prefetch_listings(wh.root / "clean" / "events", wh.root / "clean" / "items")
    registry = ModelRegistry(wh.models_dir)
    if settings.abtest.experiment:
        return _score_shard_arms(settings, run_date, shard, n_shards, wh, registry)
    entry = None  # the model's entry, when read already
    if model_id is None:
        entry = registry.champion()
        if entry is None:
            raise RuntimeError(
                f"no champion model in {wh.models_dir}; run train and evaluate first"
            )
        model_id = entry["model_id"]
    model = registry.load_model(model_id, cached=True, entry=entry)
    users = active_users(settings, run_date, set(model.user_ids_))[shard::n_shards]
    catalog = load_catalog(wh, as_of=run_date)
    recs = _recommend(settings, model, users, catalog, n_shards)
    maybe_fail(settings, "score", point="shard-written")
    path = _shard_stem(wh, run_date, shard, n_shards).with_suffix(".parquet")
    atomic_write_parquet(recs, path)
    return ShardResult(
        shard=shard,
        users=len(users),
        rows=recs.height,
        path=str(path),
        model_id=model_id,
    )


def _recommend(
    settings: Settings, model: Any, users: list[str], catalog: pl.DataFrame, n_shards: int
) -> pl.DataFrame:
    candidates = catalog["item_id"].to_list() if catalog.height else None
    recs = model.recommend(
        users,
        settings.k,
        block_size=settings.scoring.block_size,
        threads=ranking_threads(settings) if n_shards == 1 else settings.scoring.threads or 1,
        candidate_items=candidates,
        exclude_items=settings.scoring.exclude_items or None,
    )
    if settings.scoring.reasons:
        recs = _with_reasons(model.explain(recs), catalog)
    return recs


def _score_shard_arms(
    settings: Settings,
    run_date: dt.date,
    shard: int,
    n_shards: int,
    wh: Warehouse,
    registry: ModelRegistry,
) -> ShardResult:
    from recsys_core.abtest import assign_arms

    experiment = str(settings.abtest.experiment)
    arms_path = wh.abtest_arms(experiment, run_date)
    try:
        arms = read_json(arms_path)
    except FileNotFoundError:
        raise RuntimeError(
            f"experiment {experiment!r}: no arms resolved for {run_date} ({arms_path}); run "
            "evaluate first (it resolves each arm to a model)"
        ) from None
    models = {
        arm: registry.load_model(a["model_id"], cached=True) for arm, a in arms["arms"].items()
    }
    # users every arm's model knows: an arm that cannot serve a user (the champion artifact has
    # not seen a new user yet) would otherwise drop them from that arm only, and the arms would
    # no longer hold comparable populations
    known = set.intersection(*(set(m.user_ids_) for m in models.values()))
    users = active_users(settings, run_date, known)[shard::n_shards]
    assigned = assign_arms(users, arms["shares"], arms["salt"]).with_columns(
        pl.col("arm")
        .replace_strict(
            {arm: a["model_id"] for arm, a in arms["arms"].items()}, return_dtype=pl.String
        )
        .alias("model_id")
    )
    catalog = load_catalog(wh, as_of=run_date)
    frames = []
    for arm, model in models.items():
        members = assigned.filter(pl.col("arm") == arm)["user_id"].to_list()
        recs = _recommend(settings, model, members, catalog, n_shards)
        if "reason" not in recs.columns:
            recs = recs.with_columns(pl.lit(None, dtype=pl.String).alias("reason"))
        frames.append(
            recs.with_columns(
                pl.lit(arms["arms"][arm]["model_id"]).alias("model_id"), pl.lit(arm).alias("arm")
            )
        )
    recs = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
    maybe_fail(settings, "score", point="shard-written")
    stem = _shard_stem(wh, run_date, shard, n_shards)
    path = stem.with_suffix(".parquet")
    atomic_write_parquet(recs, path)
    apath = stem.with_name(stem.name + "-assignments.parquet")
    atomic_write_parquet(assigned, apath)
    return ShardResult(
        shard=shard,
        users=len(users),
        rows=recs.height,
        path=str(path),
        assignments_path=str(apath),
        model_id="arms",
        arms={arm: a["model_id"] for arm, a in arms["arms"].items()},
    )


def merge_scores(settings: Settings, run_date: dt.date, shards: list[ShardResult]) -> ScoreResult:
    """Merge shard files into the run date's partition (atomic) and clear the staging folder."""
    wh = Warehouse(settings.warehouse)
    if settings.abtest.experiment:
        return _merge_arms(settings, run_date, shards, wh)
    model_ids = {s.model_id for s in shards}
    if len(model_ids) != 1:
        raise RuntimeError(
            f"shards were scored by different models {sorted(model_ids)}; re-run score"
        )
    model_id = model_ids.pop()
    # every shard in one round of reads (concurrent on an object store)
    frames = read_parquet_many([s.path for s in sorted(shards, key=lambda s: s.shard)])
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
    delete_tree(_staging(wh, run_date))
    return ScoreResult(
        path=str(out),
        rows=n,
        users=distinct_count(recs["user_id"]),
        items=distinct_count(recs["item_id"]),
        model_id=model_id,
    )


#: Columns of the recommendations partition while an experiment runs (the schema plus ``arm``).
ARM_RECOMMENDATIONS_SCHEMA: dict[str, pl.DataType] = {**RECOMMENDATIONS_SCHEMA, "arm": pl.String()}
ASSIGNMENTS_SCHEMA: dict[str, pl.DataType] = {
    "experiment": pl.String(),
    "user_id": pl.String(),
    "arm": pl.String(),
    "model_id": pl.String(),
    "run_date": pl.Date(),
}


def _merge_arms(
    settings: Settings, run_date: dt.date, shards: list[ShardResult], wh: Warehouse
) -> ScoreResult:
    arms = [s.arms for s in shards]
    if any(a != arms[0] for a in arms):
        raise RuntimeError(f"shards were scored with different arm models {arms}; re-run score")
    ordered = sorted(shards, key=lambda s: s.shard)
    recs = pl.concat(read_parquet_many([s.path for s in ordered]), how="diagonal_relaxed")
    recs = (
        recs.with_columns(pl.lit(run_date).alias("run_date"))
        .select([pl.col(c).cast(t) for c, t in ARM_RECOMMENDATIONS_SCHEMA.items()])
        .sort(["user_id", "rank"])
    )
    experiment = str(settings.abtest.experiment)
    assigned = (
        pl.concat(read_parquet_many([s.assignments_path for s in ordered]))
        .with_columns(pl.lit(experiment).alias("experiment"), pl.lit(run_date).alias("run_date"))
        .select([pl.col(c).cast(t) for c, t in ASSIGNMENTS_SCHEMA.items()])
        .sort("user_id")
    )
    maybe_fail(settings, "score", point="merge")
    # assignments first: a partition of recommendations never exists without its assignments
    atomic_write_parquet(assigned, wh.assignments(experiment, run_date))
    out = atomic_write_parquet(recs, wh.recommendations(run_date))
    delete_tree(_staging(wh, run_date))
    n = recs.height
    per_arm = dict(assigned.group_by("arm").len().sort("arm").iter_rows())
    return ScoreResult(
        path=str(out),
        rows=n,
        users=distinct_count(recs["user_id"]),
        items=distinct_count(recs["item_id"]),
        model_id=",".join(f"{a}={m}" for a, m in (arms[0] or {}).items()),
        experiment=experiment,
        arms=arms[0],
        assigned_users=per_arm,
        assignments=str(wh.assignments(experiment, run_date)),
    )


def publish_sql(settings: Settings, run_date: dt.date) -> SqlResult | Skipped:
    """Load the date's partition into the serving database (one transaction), if one is set."""
    from recsys_core.serving import load_partition_to_sql, resolve_sql_url

    url = resolve_sql_url(settings.scoring.sql_url)
    if url is None:
        return Skipped(skipped="no sql_url configured (RECSYS_SQL_URL)")
    maybe_fail(settings, "sql")
    out = load_partition_to_sql(settings.warehouse, run_date, url)
    if settings.abtest.experiment:
        from recsys_core.serving import write_assignments_sql

        wh = Warehouse(settings.warehouse)
        assigned = read_parquet(wh.assignments(settings.abtest.experiment, run_date))
        out["assignments"] = write_assignments_sql(assigned, url, run_date)
    return SqlResult(**out)


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
