"""The read-out step: attribute the feedback of every night of an experiment so far, write
``abtest/<experiment>/nights.parquet`` and ``readout.json``, and optionally promote the winner."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from recsys_core.abtest._attribution import attribute, night_metrics
from recsys_core.abtest._readout import readout
from recsys_core.abtest._stats import wilson_interval
from recsys_core.config import Settings
from recsys_core.io import (
    Warehouse,
    atomic_write_json,
    atomic_write_parquet,
    read_json,
    read_parquet,
)
from recsys_core.results import AbtestResult, Skipped

__all__ = ["readout_step"]


def _exposures(wh: Warehouse, experiment: str, dates: list[dt.date]) -> pl.DataFrame:
    frames = []
    for d in dates:
        assigned = read_parquet(wh.assignments(experiment, d), columns=["user_id", "arm"])
        recs = read_parquet(wh.recommendations(d), columns=["user_id", "item_id"])
        frames.append(
            recs.join(assigned, on="user_id", how="inner").with_columns(
                pl.lit(d, dtype=pl.Date).alias("run_date")
            )
        )
    schema = {"user_id": pl.String, "item_id": pl.String, "arm": pl.String, "run_date": pl.Date}
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat(frames).select([pl.col(c).cast(t) for c, t in schema.items()])


def readout_step(settings: Settings, run_date: dt.date) -> AbtestResult | Skipped:
    """The experiment's read-out as of ``run_date`` (events up to it, nights before it)."""
    from recsys_core.ingest import load_catalog, load_clean_events

    cfg = settings.abtest
    if not cfg.experiment:
        return Skipped(skipped="no experiment configured (abtest.experiment)")
    wh = Warehouse(settings.warehouse)
    exp = cfg.experiment
    try:
        definition = read_json(wh.abtest_definition(exp))
    except FileNotFoundError:
        raise RuntimeError(
            f"experiment {exp!r} has no definition at {wh.abtest_definition(exp)}; run evaluate "
            "and score for a night first"
        ) from None
    arms = dict(definition["arms"])
    shares = dict(definition["shares"])
    dates = [d for d in wh.assignment_dates(exp) if d <= run_date]
    exposures = _exposures(wh, exp, dates)
    assigned_frames = [
        read_parquet(wh.assignments(exp, d), columns=["user_id", "arm"]) for d in dates
    ]
    assigned = (
        pl.concat(assigned_frames).unique(["user_id", "arm"])
        if assigned_frames
        else pl.DataFrame(schema={"user_id": pl.String, "arm": pl.String})
    )
    counts = dict(assigned.group_by("arm").len().iter_rows())
    events = (
        load_clean_events(wh, until=run_date, since=dates[0] + dt.timedelta(days=1))
        if dates and dates[0] < run_date
        else pl.DataFrame(
            schema={
                "user_id": pl.String,
                "item_id": pl.String,
                "event_type": pl.String,
                "date": pl.Date,
            }
        )
    )
    user_nights = attribute(
        exposures,
        events,
        as_of=run_date,
        window_days=cfg.attribution_days,
        hit_events=cfg.hit_events,
    )
    catalog = load_catalog(wh, as_of=run_date)
    nights = _with_bands(night_metrics(user_nights, exposures, catalog.height or None))
    out = readout(
        user_nights,
        counts,
        arms,
        shares,
        experiment=exp,
        as_of=run_date,
        alpha=cfg.alpha,
        srm_alpha=cfg.srm_alpha,
        min_users=cfg.min_users_per_arm,
    )
    out["attribution_days"] = cfg.attribution_days
    out["hit_events"] = list(cfg.hit_events)
    out["nights"] = [
        {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in r.items()}
        for r in nights.iter_rows(named=True)
    ]
    out["promoted"] = _maybe_promote(settings, wh, out, run_date) if cfg.promote_winner else None
    atomic_write_parquet(nights, wh.abtest_nights(exp))
    atomic_write_json(wh.abtest_readout(exp), out)
    return AbtestResult(**out, path=str(wh.abtest_readout(exp)))


def _with_bands(nights: pl.DataFrame) -> pl.DataFrame:
    """Each night's hit rate with its Wilson 95% interval (the band drawn in the report)."""
    lows, highs = [], []
    for x, n in zip(nights["users_with_hit"], nights["exposed_users"], strict=True):
        low, high = wilson_interval(int(x), int(n))
        lows.append(low)
        highs.append(high)
    return nights.with_columns(
        pl.Series("hit_rate_low", lows, dtype=pl.Float64),
        pl.Series("hit_rate_high", highs, dtype=pl.Float64),
    )


def _maybe_promote(
    settings: Settings, wh: Warehouse, out: dict[str, Any], run_date: dt.date
) -> str | None:
    """Promote the winning arm's model of ``run_date`` (off unless ``abtest.promote_winner``)."""
    from recsys_core.registry import ModelRegistry

    winner = out.get("winner")
    if not winner:
        return None
    try:
        arms = read_json(wh.abtest_arms(str(settings.abtest.experiment), run_date))
    except FileNotFoundError:
        return None
    model_id = arms["arms"][winner]["model_id"]
    registry = ModelRegistry(wh.models_dir)
    current = registry.champion()
    if current is not None and current["model_id"] == model_id:
        return None
    registry.promote(model_id, f"A/B experiment {out['experiment']}: {out['reason']}")
    return model_id
