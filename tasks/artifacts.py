"""Prefect artifacts published by the tasks and flows.

Every kind of artifact has one stable key, so the UI's Artifacts page shows each as a timeline
across nights (the run date is in every description):

============================  ==============================================================
key                           what
============================  ==============================================================
``recsys-night``              markdown headline: decision and why, key metrics, counts, drift,
                              a link to the full report
``recsys-report``             link artifact: the night's HTML report
``recsys-clean-counts``       table: in = clean + duplicates + quarantined, per table
``recsys-tuning``             table: tonight's candidates and their validation scores
``recsys-metrics``            table: challenger vs champion on the holdout, 95% intervals
``recsys-decision``           markdown: the promotion decision
``recsys-backfill``           table: each date of a backfill and what happened to it
``recsys-abtest``             markdown: the A/B read-out (arms, difference, interval, p, SRM)
============================  ==============================================================
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from recsys_core.results import AbtestResult, CleanResult, EvaluateResult, RunSummary, TrainResult

__all__ = [
    "KEYS",
    "backfill_rows",
    "publish_abtest",
    "publish_backfill",
    "publish_clean",
    "publish_evaluation",
    "publish_night",
    "publish_train",
]

#: Artifact keys (lowercase letters, digits and dashes only), one per kind.
KEYS = {
    "night": "recsys-night",
    "report": "recsys-report",
    "clean": "recsys-clean-counts",
    "tuning": "recsys-tuning",
    "metrics": "recsys-metrics",
    "decision": "recsys-decision",
    "backfill": "recsys-backfill",
    "abtest": "recsys-abtest",
}
#: Environment: the base URL under which ``<warehouse>/reports/`` is served, and which warehouse
#: (``recsys serve`` sets both; see ``deployments/_reports.py``).
REPORT_BASE_URL_ENV = "RECSYS_REPORT_BASE_URL"
REPORT_WAREHOUSE_ENV = "RECSYS_REPORT_WAREHOUSE"


def publish_clean(run_date: dt.date, out: CleanResult) -> None:
    manifest = out.run_date_manifest or {}
    rows = []
    for kind in ("events", "items"):
        counts = manifest.get(kind)
        if counts:
            rows.append(
                {
                    "table": kind,
                    **{
                        k: counts.get(k, 0)
                        for k in ("ingested", "clean", "duplicates", "quarantined")
                    },
                }
            )
    if rows:
        create_table_artifact(
            rows,
            key=KEYS["clean"],
            description=f"{run_date}: ingest and cleaning counts "
            "(in = clean + duplicates + quarantined)",
        )


def publish_train(run_date: dt.date, out: TrainResult) -> None:
    rows = [
        {
            "model": c.model,
            "validation_score": round(c.validation_score, 5),
            "tuned_on": c.tuned_on,
            "reused_params": c.reused,
        }
        for c in out.candidates
    ]
    if rows:
        create_table_artifact(
            rows,
            key=KEYS["tuning"],
            description=f"{run_date}: candidates; challenger {out.challenger}",
        )


def publish_evaluation(run_date: dt.date, out: EvaluateResult) -> None:
    from recsys_core.reporting import markdown_summary, metrics_table

    rows = metrics_table(out)
    if rows:
        create_table_artifact(
            rows,
            key=KEYS["metrics"],
            description=f"{run_date}: holdout metrics: challenger, champion, difference, "
            "95% interval",
        )
    create_markdown_artifact(
        markdown_summary(out),
        key=KEYS["decision"],
        description=f"{run_date}: promotion decision",
    )


def publish_night(run_date: dt.date, summary: RunSummary, warehouse_root: str) -> str:
    """The night's markdown headline and a link to its report; returns the report URL."""
    from recsys_core.reporting import night_markdown, report_link

    base = os.environ.get(REPORT_BASE_URL_ENV) or None
    served = os.environ.get(REPORT_WAREHOUSE_ENV)
    if base and served and served.rstrip("/") != warehouse_root.rstrip("/"):
        base = None  # that server publishes another warehouse's reports
    url = report_link(str(summary.report), warehouse_root, base)
    create_link_artifact(
        url, link_text=f"report {run_date}", key=KEYS["report"], description=f"{run_date}: report"
    )
    create_markdown_artifact(
        night_markdown(summary, url),
        key=KEYS["night"],
        description=f"{run_date}: the night in one page",
    )
    return url


def backfill_rows(
    todo: list[dt.date],
    skipped: list[dt.date],
    done: list[str],
    failure: tuple[dt.date, str] | None = None,
    runs: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One row per date, in date order: ``date, status, run, detail`` where status is ``ran``,
    ``skipped: complete``, ``failed`` (detail: why) or ``not reached`` (after a failure)."""
    runs = runs or {}
    rows = []
    for day in sorted([*todo, *skipped]):
        iso = day.isoformat()
        if day in skipped:
            status, detail = "skipped: complete", "already complete (force redoes it)"
        elif iso in done:
            status, detail = "ran", ""
        elif failure is not None and failure[0] == day:
            status, detail = "failed", failure[1]
        else:
            status, detail = "not reached", "a date before it failed"
        rows.append({"date": iso, "status": status, "run": runs.get(iso, ""), "detail": detail})
    return rows


def publish_backfill(start: dt.date, end: dt.date, rows: list[dict[str, Any]]) -> None:
    """The rows of :func:`backfill_rows` as a table under the stable backfill key."""
    create_table_artifact(
        rows,
        key=KEYS["backfill"],
        description=f"backfill {start} to {end}: "
        + ", ".join(
            f"{n} {s}"
            for s in ("ran", "skipped", "failed", "not reached")
            if (n := sum(r["status"].startswith(s) for r in rows))
        ),
    )


def publish_abtest(run_date: dt.date, out: AbtestResult) -> None:
    """The experiment's read-out as markdown: decision first, then each arm and the difference."""

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{v:.2%}"

    lines = [
        f"# A/B {out.experiment} as of {run_date}: {out.decision}",
        "",
        out.reason,
        "",
        "| arm | model | assigned | exposed users | hit rate | 95% interval |",
        "|---|---|---:|---:|---:|---|",
    ]
    for a in out.arms:
        ci = a.ci or (None, None)
        lines.append(
            f"| {a.name} | {a.model} | {a.assigned_users} | {a.users} | "
            f"{pct(a.hit_rate)} | {pct(ci[0])} to {pct(ci[1])} |"
        )
    if out.difference is not None and out.ci is not None and out.p_value is not None:
        lines += [
            "",
            f"{out.comparison}: **{out.difference:+.2%}** (95% interval "
            f"{out.ci[0]:+.2%} to {out.ci[1]:+.2%}), p = {out.p_value:.3g}; "
            f"sample-ratio check p = {out.srm_p_value:.3g}"
            + (" — **MISMATCH**" if out.srm else ""),
        ]
    create_markdown_artifact(
        "\n".join(lines),
        key=KEYS["abtest"],
        description=f"A/B read-out of {out.experiment} for {run_date}",
    )
