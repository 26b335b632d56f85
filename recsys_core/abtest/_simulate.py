"""A closed-loop world to run A/B experiments in: users with hidden tastes react to what they
were recommended, and their reactions are the next day's landing data.

* Days ``1 - warmup_days .. 0`` are the synthetic landing zone
  (:func:`recsys_core.landing.generate_synthetic`, planted clusters, dirt and all), ending on
  ``start``. The nightly runs on ``start`` (night 0): the first recommendations.
* Each simulated day ``t = 1..days``: users keep browsing as before (the same hidden tastes and
  activity, :func:`recsys_core.landing._simulate.simulate_events`), and a user who had a list
  last night looks at it with probability ``p_look``; each recommended item is clicked with
  probability ``p_like`` if it is in one of the user's clusters, ``p_other`` if not (both
  decaying with rank as ``1 / (1 + 0.2 (rank - 1))``); a click may lead to a cart and a purchase.
  The day is written to ``landing/events/date=D/events.csv`` and the nightly runs on it
  (ingest, clean, train, evaluate, score, read-out), calling the core steps directly.

Everything is drawn from one seeded generator: the same arguments give the same read-out.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys_core.config import Settings
from recsys_core.io import Warehouse, read_parquet
from recsys_core.results import AbtestResult, EmbedResult, RunSteps

__all__ = ["simulate"]

_START = dt.date(2026, 1, 31)


def _day_ts(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


def simulate(
    out: Path | str,
    *,
    days: int,
    arms: Mapping[str, str],
    users: int = 600,
    items: int = 200,
    seed: int = 7,
    warmup_days: int = 14,
    shares: Mapping[str, float] | None = None,
    experiment: str = "sim",
    tune_calls: int = 3,
    p_look: float = 0.5,
    p_like: float = 0.1,
    p_other: float = 0.03,
    attribution_days: int = 1,
    min_users_per_arm: int = 100,
    report: bool = True,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Run ``days`` closed-loop days under ``out/landing`` and ``out/warehouse``; return the
    read-out of the last night plus what the simulator measured (offline scores per model,
    the planted truth: each arm's share of liked recommendations)."""
    from recsys_core import pipeline
    from recsys_core.abtest._step import readout_step
    from recsys_core.landing import generate_synthetic
    from recsys_core.landing._simulate import make_catalog, simulate_events, user_tastes

    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(
            f"simulation folder {out} is not empty; give a new or empty folder (a world is "
            "written from scratch)"
        )
    say = log or (lambda _msg: None)
    settings = Settings(
        landing=out / "landing",
        warehouse=out / "warehouse",
        seed=seed,
        embedding={"enabled": False},
        train={
            "models": sorted({m for m in arms.values() if m not in ("champion", "challenger")})
            or ["popularity", "ease"],
            "tune_calls": tune_calls,
            "tune_initial_points": max(1, min(tune_calls, 3)),
        },
        evaluation={"bootstrap_samples": 200},
        scoring={"reasons": False},
        abtest={
            "experiment": experiment,
            "arms": dict(arms),
            "shares": dict(shares or {}),
            "attribution_days": attribution_days,
            "min_users_per_arm": min_users_per_arm,
        },
    )
    started = time.perf_counter()
    generate_synthetic(
        settings.landing, users=users, items=items, days=warmup_days, seed=seed, end_date=_START
    )
    # the same draws generate_synthetic made first: the users' hidden tastes
    rng0 = np.random.default_rng(seed)
    catalog = make_catalog(rng0, items, warmup_days)
    tastes = user_tastes(rng0, catalog, users)
    rng = np.random.default_rng([seed, 1])
    user_ids = np.array([f"u{i + 1:05d}" for i in range(users)])
    item_index = {iid: i for i, iid in enumerate(catalog.item_ids)}
    truth: dict[str, list[float]] = {a: [] for a in arms}

    def night(day: dt.date) -> RunSteps:
        ingest = pipeline.ingest_step(settings, day)
        clean = pipeline.clean_step(settings, day)
        train = pipeline.train_step(settings, day)
        return RunSteps(
            ingest=ingest,
            clean=clean,
            embed=EmbedResult(skipped="embedding disabled in config"),
            train=train,
            evaluate=pipeline.evaluate_step(settings, day, train.challenger),
            score=pipeline.merge_scores(settings, day, [pipeline.score_shard(settings, day, 0, 1)]),
            abtest=readout_step(settings, day),
        )

    steps = night(_START)
    say(f"night 0 ({_START}): {steps.score.rows} recommendations, arms {steps.score.arms}")
    for t in range(1, days + 1):
        day = _START + dt.timedelta(days=t)
        prev = day - dt.timedelta(days=1)
        recs = read_parquet(Warehouse(settings.warehouse).recommendations(prev))
        events, liked = _one_day(
            rng,
            catalog,
            tastes,
            users,
            day,
            recs,
            user_ids,
            item_index,
            p_look,
            p_like,
            p_other,
            simulate_events,
        )
        for a in arms:
            truth[a].append(liked.get(a, float("nan")))
        _write_day(settings.landing, day, events)
        steps = night(day)
        ab = steps.abtest
        if not isinstance(ab, AbtestResult):  # the settings name an experiment: never skipped
            raise RuntimeError(f"the read-out of {day} was skipped: {ab}")
        say(
            f"day {t:>2} ({day}): {events.height} events; "
            + ", ".join(
                f"{r.name} hit rate {r.hit_rate:.3f} ({r.users} users)"
                if r.hit_rate is not None
                else f"{r.name} -"
                for r in ab.arms
            )
            + f"; {ab.decision}"
        )
    summary = (
        pipeline.finalize_step(settings, _START + dt.timedelta(days=days), steps)
        if report
        else None
    )
    offline = {c.model: c.validation_score for c in steps.train.candidates}
    result = {
        "readout": steps.abtest,
        "offline_validation": offline,
        "metric": settings.train.metric,
        "liked_share_of_recommendations": {a: float(np.nanmean(v)) for a, v in truth.items()},
        "seconds": round(time.perf_counter() - started, 1),
        "report": summary.report if summary else None,
        "warehouse": str(settings.warehouse),
        "landing": str(settings.landing),
    }
    result["orderings_agree"] = _orderings_agree(result, arms)
    return result


def _orderings_agree(result: dict[str, Any], arms: Mapping[str, str]) -> bool | None:
    """Whether the arms' online hit rates rank their models as the offline validation does."""
    offline = result["offline_validation"]
    rows = [r for r in result["readout"].arms if r.hit_rate is not None]
    if len(rows) < 2 or any(arms[r.name] not in offline for r in rows):
        return None
    online = [arms[r.name] for r in sorted(rows, key=lambda r: -r.hit_rate)]
    return online == sorted(online, key=lambda m: -offline[m])


def _one_day(
    rng: np.random.Generator,
    catalog: Any,
    tastes: Any,
    users: int,
    day: dt.date,
    recs: pl.DataFrame,
    user_ids: np.ndarray,
    item_index: dict[str, int],
    p_look: float,
    p_like: float,
    p_other: float,
    simulate_events: Callable[..., dict[str, np.ndarray]],
) -> tuple[pl.DataFrame, dict[str, float]]:
    """One day's events: natural browsing plus reactions to last night's lists."""
    start_ts = _day_ts(day)
    nat = simulate_events(rng, catalog, users, 1, start_ts, day.weekday(), tastes=tastes)
    types = np.array(["view", "click", "add_to_cart", "purchase", "rating"])
    natural = pl.DataFrame(
        {
            "user_id": user_ids[nat["user"]],
            "item_id": np.array(catalog.item_ids)[nat["item"]],
            "event_type": types[nat["type"]],
            "ts": nat["ts"],
            "value": nat["value"],
        }
    )
    u = np.searchsorted(user_ids, recs["user_id"].to_numpy())
    i = np.array([item_index.get(x, -1) for x in recs["item_id"].to_list()])
    ok = i >= 0
    likes = np.zeros(len(u), dtype=bool)
    likes[ok] = tastes.likes(u[ok], catalog.cluster[i[ok]])
    liked_share = {
        arm: float(likes[(recs["arm"] == arm).to_numpy()].mean())
        for arm in recs["arm"].unique().to_list()
    }
    look_user = rng.random(users) < p_look
    rank = recs["rank"].to_numpy()
    p = np.where(likes, p_like, p_other) / (1.0 + 0.2 * (rank - 1))
    click = ok & look_user[u] & (rng.random(len(u)) < p)
    n = int(click.sum())
    ts = start_ts + rng.integers(8 * 3600, 23 * 3600, size=n)
    cart = rng.random(n) < 0.35
    buy = cart & (rng.random(n) < 0.5)
    cu, ci = recs["user_id"].to_numpy()[click], recs["item_id"].to_numpy()[click]
    parts = [
        pl.DataFrame({"user_id": cu, "item_id": ci, "event_type": "view", "ts": ts}),
        pl.DataFrame({"user_id": cu, "item_id": ci, "event_type": "click", "ts": ts + 5}),
        pl.DataFrame(
            {
                "user_id": cu[cart],
                "item_id": ci[cart],
                "event_type": "add_to_cart",
                "ts": ts[cart] + 60,
            }
        ),
        pl.DataFrame(
            {"user_id": cu[buy], "item_id": ci[buy], "event_type": "purchase", "ts": ts[buy] + 300}
        ),
    ]
    reactions = pl.concat(
        [f.with_columns(pl.lit(None, dtype=pl.Float64).alias("value")) for f in parts]
    ).with_columns(pl.col("ts").clip(upper_bound=start_ts + 86399))
    events = pl.concat(
        [
            natural.with_columns(pl.col("ts").cast(pl.Int64)),
            reactions.with_columns(pl.col("ts").cast(pl.Int64)),
        ]
    )
    events = events.sort("ts", "user_id", "item_id", "event_type").with_row_index("n")
    return (
        events.select(
            pl.format("s{}-{}", pl.lit(day.strftime("%Y%m%d")), pl.col("n")).alias("event_id"),
            "user_id",
            "item_id",
            "event_type",
            pl.from_epoch("ts", time_unit="s").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("timestamp"),
            pl.col("value").cast(pl.String),
        ),
        liked_share,
    )


def _write_day(landing: Path, day: dt.date, events: pl.DataFrame) -> None:
    from recsys_core.landing._write import write_frame

    write_frame(events, Path(landing) / "events" / f"date={day.isoformat()}" / "events.csv", "csv")
