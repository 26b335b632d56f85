"""Finalize: the report, drift signals, and the marker that says the date is complete."""

from __future__ import annotations

import datetime as dt
from typing import Any

from recsys_core.config import Settings
from recsys_core.ingest import load_clean_events
from recsys_core.io import (
    Warehouse,
    atomic_write_json,
    delete,
    exists,
    listing_snapshot,
    prefetch_listings,
    read_parquet,
)
from recsys_core.pipeline._context import code_version
from recsys_core.pipeline._faults import maybe_fail
from recsys_core.results import DriftSignal, RecommendationStats, RunSteps, RunSummary

__all__ = ["backfill_plan", "finalize_step", "is_complete", "withdraw_completion"]


def is_complete(settings: Settings, run_date: dt.date) -> bool:
    """Whether ``run_date`` finished: its marker and its recommendation partition both exist."""
    wh = Warehouse(settings.warehouse)
    return exists(wh.run_marker(run_date)) and exists(wh.recommendations(run_date))


def withdraw_completion(settings: Settings, run_date: dt.date) -> bool:
    """Remove ``run_date``'s completion marker (durably) before a run changes the date's outputs;
    :func:`finalize_step` writes it again last. Returns whether there was one."""
    marker = Warehouse(settings.warehouse).run_marker(run_date)
    if not exists(marker):
        return False
    delete(marker)
    return True


def backfill_plan(
    settings: Settings, start: dt.date, end: dt.date, *, force: bool = False
) -> tuple[list[dt.date], list[dt.date]]:
    """``(to_run, skipped)``: every date from ``start`` to ``end`` in order, complete ones skipped
    unless ``force``."""
    if end < start:
        raise ValueError(f"backfill end {end} is before start {start}")
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    done = set() if force else {d for d in days if is_complete(settings, d)}
    return [d for d in days if d not in done], [d for d in days if d in done]


@listing_snapshot()
def finalize_step(settings: Settings, run_date: dt.date, steps: RunSteps) -> RunSummary:
    """Write the HTML report and the run marker (last, atomically) from the steps' results;
    return the night's summary (the marker's content)."""
    wh = Warehouse(settings.warehouse)
    maybe_fail(settings, "report")
    from recsys_core.reporting import (
        build_report,
        data_stats,
        drift_signals,
        previous_run,
        recommendation_stats,
    )

    prefetch_listings(wh.root / "clean" / "events", wh.root / "runs")
    recs = read_parquet(wh.recommendations(run_date))
    ids = ("user_id", "item_id")  # all the drift statistics read (``before`` is every night)
    tonight = load_clean_events(wh, until=run_date, since=run_date, columns=ids)
    before = load_clean_events(wh, until=run_date - dt.timedelta(days=1), columns=ids)
    # coverage is over the whole catalog as of tonight (the train step's item vocabulary: catalog
    # items and items with events), not over the items recommended (which would always give 1.0)
    n_items = steps.train.n_items or 1
    stats = {**recommendation_stats(recs, n_items), "models": _serving_models(wh, recs)}
    previous = previous_run(wh, run_date)
    drift = drift_signals(
        {**stats, **data_stats(tonight, before)},
        previous.recommendation_stats.model_dump() if previous else None,
        settings.evaluation.drift_threshold,
    )
    summary = RunSummary(
        run_date=run_date.isoformat(),
        code_version=code_version(),
        settings=_redacted(settings),
        steps=steps,
        recommendation_stats=RecommendationStats(**stats),
        drift=[DriftSignal(**s) for s in drift],
    )
    report = build_report(wh, run_date, summary=summary, recommendations=recs)
    summary = summary.model_copy(update={"report": str(report)})
    atomic_write_json(wh.run_marker(run_date), summary.model_dump())
    return summary


def _serving_models(wh: Warehouse, recs: Any) -> list[dict[str, Any]]:
    """``[{model_id, name, params}]`` of the models behind tonight's recommendations, so that the
    next night can tell a drift caused by a new model or a re-tune from one in the data."""
    from recsys_core.registry import ModelRegistry, UnknownModelError

    registry = ModelRegistry(wh.models_dir)
    out = []
    for model_id in sorted(recs["model_id"].unique().to_list()) if recs.height else []:
        try:
            entry = registry.entry(model_id)
        except (UnknownModelError, FileNotFoundError):
            entry = {}
        out.append({"model_id": model_id, "name": entry.get("name"), "params": entry.get("params")})
    return out


def _redacted(settings: Settings) -> dict[str, Any]:
    """Settings as JSON with the database password hidden."""
    data = settings.model_dump(mode="json")
    url = data.get("scoring", {}).get("sql_url")
    if url:
        from sqlalchemy.engine import make_url

        try:
            data["scoring"]["sql_url"] = make_url(url).render_as_string(hide_password=True)
        except Exception:
            data["scoring"]["sql_url"] = "***"
    return data
