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
            rows.append({"table": kind, **{k: counts.get(k, 0) for k in ("ingested", "clean", "duplicates", "quarantined")}})
    if rows:
        create_table_artifact(rows, key=_key("clean-counts", run_date),
                              description=f"Ingest and cleaning counts for {run_date} (in = clean + duplicates + quarantined)")


def publish_train(run_date: dt.date, out: dict[str, Any]) -> None:
    rows = [
        {"model": c["model"], "validation_score": round(float(c["validation_score"]), 5),
         "tuned_on": c["tuned_on"], "reused_params": c["reused"]}
        for c in out.get("candidates", [])
    ]
    if rows:
        create_table_artifact(rows, key=_key("tuning", run_date),
                              description=f"Candidates for {run_date}; challenger {out['challenger']}")


def publish_evaluation(run_date: dt.date, out: dict[str, Any]) -> None:
    metric = out["metric"]
    ch = (out.get("challenger_metrics") or {}).get("metrics", {}) or {}
    cp = (out.get("champion_metrics") or {}).get("metrics", {}) or {}
    rows = []
    for name in sorted(set(ch) | set(cp)):
        a, b = ch.get(name), cp.get(name)
        rows.append({
            "metric": f"{name}@{out['k']}",
            "challenger": None if a is None else round(float(a), 5),
            "champion": None if b is None else round(float(b), 5),
            "difference": None if a is None or b is None else round(float(a) - float(b), 5),
        })
    if rows:
        create_table_artifact(rows, key=_key("metrics", run_date), description=f"Holdout metrics for {run_date}")
    d = out["decision"]
    interval = ""
    if d.get("low") is not None and d.get("high") is not None:
        interval = f" (difference {d.get('diff', 0):+.4f}, 95% interval [{d['low']:+.4f}, {d['high']:+.4f}])"
    md = (
        f"# recsys {run_date}: {'promoted' if d.get('promote') else 'kept champion'}\n\n"
        f"* challenger: `{out['challenger']}`\n"
        f"* champion before: `{out.get('champion_before')}` → after: `{out.get('champion_after')}`\n"
        f"* primary metric: {metric}@{out['k']}{interval}\n\n"
        f"**Why:** {d.get('reason', '')}\n"
    )
    create_markdown_artifact(md, key=_key("decision", run_date), description=f"Promotion decision for {run_date}")
