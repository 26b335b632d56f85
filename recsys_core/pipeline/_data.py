"""Ingest and clean steps: landing partitions into the warehouse's raw and clean tables."""

from __future__ import annotations

import datetime as dt
from typing import Any

from recsys_core.config import Settings
from recsys_core.ingest import clean, ingest
from recsys_core.io import Warehouse, sweep_temporaries
from recsys_core.pipeline._faults import maybe_fail

__all__ = ["clean_step", "ingest_step"]


def ingest_step(settings: Settings, run_date: dt.date, *, force: bool = False) -> dict[str, Any]:
    """Copy every landing partition dated on or before ``run_date`` that the warehouse lacks.

    Raises :class:`recsys_core.ingest.MissingPartitionError` when ``run_date``'s events partition is
    not in the landing zone yet (late data): the task retries it.
    """
    wh = Warehouse(settings.warehouse)
    swept = sweep_temporaries(wh.root)
    maybe_fail(settings, "ingest")
    result = ingest(settings.landing, wh, run_date, force=force)
    out = _as_dict(result)
    out["swept_temporaries"] = swept
    return out


def clean_step(settings: Settings, run_date: dt.date, *, force: bool = False) -> dict[str, Any]:
    """Clean every raw events partition up to ``run_date`` that has no manifest yet, in date order
    (the near-duplicate rule looks at the previous day). ``force`` re-cleans ``run_date``.

    Returns totals over the dates cleaned now plus ``run_date``'s own manifest.
    """
    wh = Warehouse(settings.warehouse)
    maybe_fail(settings, "clean")
    dates = sorted(set(wh.raw_dates("events")) | set(wh.raw_dates("items")))
    todo = [
        d for d in dates if d <= run_date and (not wh.manifest(d).is_file() or (force and d == run_date))
    ]
    # a date re-ingested after its manifest was written must be re-cleaned too
    for d in dates:
        if d <= run_date and d not in todo and wh.manifest(d).is_file():
            raw = [wh.raw(k, d) for k in ("events", "items") if wh.raw(k, d).is_file()]
            if any(r.stat().st_mtime_ns > wh.manifest(d).stat().st_mtime_ns for r in raw):
                todo.append(d)
    todo.sort()
    totals = {"ingested": 0, "clean": 0, "duplicates": 0, "quarantined": 0}
    manifests = {}
    for d in todo:
        m = clean(wh, d, settings.clean)
        manifests[d.isoformat()] = m
        for key in totals:
            totals[key] += int(m.get("events", {}).get(key, 0))
    from recsys_core.io import read_json

    today = manifests.get(run_date.isoformat())
    if today is None and wh.manifest(run_date).is_file():
        today = read_json(wh.manifest(run_date))
    return {
        "dates_cleaned": [d.isoformat() for d in todo],
        "events": totals,
        "run_date_manifest": today,
    }


def _as_dict(result: Any) -> dict[str, Any]:
    if isinstance(result, dict):
        return dict(result)
    if hasattr(result, "model_dump"):
        return result.model_dump(mode="json")
    import dataclasses

    if dataclasses.is_dataclass(result):
        return dataclasses.asdict(result)
    return {"result": str(result)}
