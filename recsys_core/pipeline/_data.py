"""Ingest and clean steps: landing partitions into the warehouse's raw and clean tables."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from recsys_core.config import Settings
from recsys_core.ingest import (
    IngestedSlice,
    IngestPlan,
    clean_with_followers,
    commit_ingest,
    ingest_partitions,
    pending_clean_dates,
    plan_ingest,
    scan_landing,
)
from recsys_core.io import (
    Fence,
    Warehouse,
    exists,
    held_fence,
    listing_snapshot,
    location,
    prefetch_listings,
    read_json,
    sweep_temporaries,
)
from recsys_core.pipeline._context import jsonable
from recsys_core.pipeline._faults import maybe_fail
from recsys_core.pipeline._finalize import withdraw_completion
from recsys_core.results import CleanResult, IngestStepResult

__all__ = [
    "PlannedIngest",
    "clean_step",
    "commit_ingest_step",
    "ingest_slice_step",
    "ingest_step",
    "plan_ingest_step",
]


@dataclass(frozen=True)
class PlannedIngest:
    """The first part of the ingest step: what to write (``plan``), and what was done before
    planning (the completion marker withdrawn, temporaries swept)."""

    plan: IngestPlan
    swept_temporaries: int
    completion_marker_withdrawn: bool
    #: The run's lock, for slices written in a process that does not hold its lease.
    fence: Fence | None = None

    def slices(self, n: int) -> list[tuple[tuple[str, dt.date], ...]]:
        """The partitions to write, cut into at most ``n`` independent slices (by date)."""
        return self.plan.slices(n)


@listing_snapshot()
def ingest_step(settings: Settings, run_date: dt.date, *, force: bool = False) -> IngestStepResult:
    """Copy every landing partition dated on or before ``run_date`` that the warehouse lacks.

    Raises :class:`recsys_core.ingest.MissingPartitionError` when ``run_date``'s events partition is
    not in the landing zone yet (late data): the task retries it.

    First of all it withdraws ``run_date``'s completion marker: every later step may change the
    date's outputs, and only :func:`~recsys_core.pipeline.finalize_step` writes it again, so a run
    stopped at any point leaves the date not complete. Late landing files (new or changed since
    their date was ingested) are re-ingested and listed under ``late``.

    It is :func:`plan_ingest_step`, :func:`ingest_slice_step` of every pending partition and
    :func:`commit_ingest_step`; a flow on several workers runs the slices apart (one per worker).
    """
    planned = plan_ingest_step(settings, run_date, force=force)
    parts = [ingest_slice_step(settings, planned, part) for part in planned.slices(1)]
    return commit_ingest_step(settings, planned, parts)


@listing_snapshot()
def plan_ingest_step(
    settings: Settings, run_date: dt.date, *, force: bool = False
) -> PlannedIngest:
    """Withdraw ``run_date``'s completion marker, sweep temporaries left by killed runs, and plan
    the ingest (raises, before writing anything, as :func:`ingest_step` does)."""
    wh = Warehouse(settings.warehouse)
    landing = location(settings.landing)
    # the landing zone and the raw tables, listed at once
    prefetch_listings(*(r / k for r in (landing, wh.root / "raw") for k in ("events", "items")))
    withdrawn = withdraw_completion(settings, run_date)
    swept = sweep_temporaries(wh.root)
    maybe_fail(settings, "ingest")
    plan = plan_ingest(
        settings.landing,
        wh,
        run_date,
        force=force,
        unrecognised=settings.ingest.unrecognised_paths,
    )
    return PlannedIngest(
        plan=plan,
        swept_temporaries=swept,
        completion_marker_withdrawn=withdrawn,
        fence=held_fence(wh.root),
    )


@listing_snapshot()
def ingest_slice_step(
    settings: Settings, planned: PlannedIngest, part: tuple[tuple[str, dt.date], ...]
) -> IngestedSlice:
    """Write one slice of the planned raw partitions (from the landing zone into the warehouse:
    on any machine that reaches both). Before each pass of writes it checks that the run still
    holds its lock (on another machine: one read of the lock object)."""
    return ingest_partitions(
        planned.plan,
        Warehouse(settings.warehouse),
        part,
        batch_mib=settings.ingest.batch_mib,
        fence=planned.fence,
    )


@listing_snapshot()
def commit_ingest_step(
    settings: Settings, planned: PlannedIngest, slices: list[IngestedSlice]
) -> IngestStepResult:
    """After every slice: the landing index, the warnings, and the step's result."""
    result = commit_ingest(planned.plan, Warehouse(settings.warehouse), slices)
    return IngestStepResult(
        **jsonable(result),
        swept_temporaries=planned.swept_temporaries,
        completion_marker_withdrawn=planned.completion_marker_withdrawn,
    )


@listing_snapshot()
def clean_step(settings: Settings, run_date: dt.date, *, force: bool = False) -> CleanResult:
    """Clean every raw partition up to ``run_date`` that has no manifest yet or was re-ingested
    (late files), in date order (the near-duplicate rule looks at the previous day), then the
    already-clean later dates those can change (``followers``). ``force`` re-cleans ``run_date``.

    Returns totals over the dates cleaned now plus ``run_date``'s own manifest.
    """
    wh = Warehouse(settings.warehouse)
    maybe_fail(settings, "clean")
    raw = wh.root / "raw"  # what the pending check and the passes list, listed at once
    prefetch_listings(
        wh.root / "manifests", raw / "events", raw / "items", wh.root / "clean" / "events"
    )
    todo = set(pending_clean_dates(wh, run_date))
    if force and (exists(wh.raw("events", run_date)) or exists(wh.raw("items", run_date))):
        todo.add(run_date)
    extra = {}
    if settings.ingest.unrecognised_paths == "report":  # (with "fail", ingest refused them)
        extra["unrecognised_paths"] = [
            p
            for kind in ("events", "items")
            for p in scan_landing(settings.landing, kind, until=run_date).unrecognised
        ]
    totals = {"ingested": 0, "clean": 0, "duplicates": 0, "quarantined": 0}
    manifests = {}
    # vectorised passes over the pending dates (the first MovieLens night has thousands), each of
    # at most settings.clean.batch_mib of raw data; then the later dates they change
    cleaned, followers = clean_with_followers(wh, todo, run_date, settings.clean, extra=extra)
    ordered = [dt.date.fromisoformat(m["date"]) for m in cleaned]
    for m in cleaned:
        manifests[m["date"]] = m
        for key in totals:
            totals[key] += int(m.get("events", {}).get(key, 0))
    today = manifests.get(run_date.isoformat())
    if today is None and exists(wh.manifest(run_date)):
        today = read_json(wh.manifest(run_date))
    return CleanResult(
        dates_cleaned=[d.isoformat() for d in ordered],
        followers=[d.isoformat() for d in followers],
        events=totals,
        run_date_manifest=today,
    )
