"""Prefect artifacts published by the tasks: counts, metrics and the promotion decision."""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

__all__ = ["publish_clean", "publish_evaluation", "publish_train"]


def _key(prefix: str, run_date: dt.date) -> str:
    # artifact keys: lowercase letters, numbers and dashes only
    return f"{prefix}-{run_date.isoformat()}"


def publish_clean(run_date: dt.date, out: dict[str, Any]) -> None:
    manifest = out.get("run_date_manifest") or {}
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
            key=_key("clean-counts", run_date),
            description=f"Ingest and cleaning counts for {run_date} (in = clean + duplicates + quarantined)",
        )


def publish_train(run_date: dt.date, out: dict[str, Any]) -> None:
    rows = [
        {
            "model": c["model"],
            "validation_score": round(float(c["validation_score"]), 5),
            "tuned_on": c["tuned_on"],
            "reused_params": c["reused"],
        }
        for c in out.get("candidates", [])
    ]
    if rows:
        create_table_artifact(
            rows,
            key=_key("tuning", run_date),
            description=f"Candidates for {run_date}; challenger {out['challenger']}",
        )


def publish_evaluation(run_date: dt.date, out: dict[str, Any]) -> None:
    from recsys_core.reporting import markdown_summary, metrics_table

    rows = metrics_table(out)
    if rows:
        create_table_artifact(
            rows,
            key=_key("metrics", run_date),
            description=f"Holdout metrics for {run_date}: challenger, champion, difference, 95% interval",
        )
    create_markdown_artifact(
        markdown_summary(out),
        key=_key("decision", run_date),
        description=f"Promotion decision for {run_date}",
    )
