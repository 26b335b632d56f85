"""Small digests of a run summary for Prefect artifacts: a metrics table and a Markdown note.

``summary`` is the run summary described in :mod:`recsys_core.reporting._report`.
"""

from __future__ import annotations

from typing import Any

from recsys_core.metrics import METRIC_NAMES
from recsys_core.reporting._summary import normalize_summary

__all__ = ["headline", "markdown_summary", "metrics_table", "night_markdown"]


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _round(value: Any) -> Any:
    return round(float(value), 4) if isinstance(value, int | float) and value is not None else None


def metrics_table(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``metric, challenger, champion, difference, ci_low, ci_high`` (4 decimals, None if
    unknown): from ``summary["comparison"]`` when present, else from the two metrics dicts."""
    summary = normalize_summary(summary)
    challenger = (summary.get("challenger") or {}).get("metrics") or {}
    champion = (summary.get("champion") or {}).get("metrics") or {}
    rows: list[dict[str, Any]] = []
    done: set[str] = set()
    for row in summary.get("comparison") or []:
        rows.append(
            {
                "metric": row["metric"],
                "challenger": _round(row.get("challenger")),
                "champion": _round(row.get("champion")),
                "difference": _round(row.get("diff")),
                "ci_low": _round(row.get("low")),
                "ci_high": _round(row.get("high")),
            }
        )
        done.add(row["metric"])
    order = [*METRIC_NAMES, "coverage", "novelty", "arp"]
    names = [m for m in order if m in challenger] + sorted(set(challenger) - set(order))
    for m in names:
        if m in done:
            continue
        a, b = challenger.get(m), champion.get(m)
        diff = a - b if isinstance(a, int | float) and isinstance(b, int | float) else None
        rows.append(
            {
                "metric": m,
                "challenger": _round(a),
                "champion": _round(b),
                "difference": _round(diff),
                "ci_low": None,
                "ci_high": None,
            }
        )
    return rows


def headline(summary: dict[str, Any]) -> tuple[bool, str, str]:
    """(promoted?, one-line title, reason) of a normalised summary."""
    decision = summary.get("decision") or {}
    note = f" Note: {summary['note']}." if summary.get("note") else ""
    if not decision:
        return False, "No promotion decision was recorded for this run", note.strip()
    promote = bool(decision.get("promote"))
    challenger = (summary.get("challenger") or {}).get("model_id") or "the challenger"
    champion = (summary.get("champion") or {}).get("model_id")
    title = f"Promoted {challenger}" if promote else f"Kept the champion {champion or ''}".rstrip()
    return promote, title, str(decision.get("reason", "")) + note


def _metrics_lines(rows: list[dict[str, Any]], k: Any) -> list[str]:
    """A Markdown table of :func:`metrics_table` rows (empty without rows)."""
    if not rows:
        return []
    lines = [
        f"| metric{f'@{k}' if k else ''} | challenger | champion | difference | 95% interval |",
        "|---|---:|---:|---:|---|",
    ]
    for r in rows:
        ci = f"{fmt(r['ci_low'])} to {fmt(r['ci_high'])}" if r["ci_low"] is not None else "–"
        lines.append(
            f"| {r['metric']} | {fmt(r['challenger'])} | {fmt(r['champion'])} | "
            f"{fmt(r['difference'])} | {ci} |"
        )
    return [*lines, ""]


def _drift_lines(drift: list[dict[str, Any]] | None) -> list[str]:
    """The flagged drift signals in one line, each with its likely cause when one is known."""
    flagged = [s for s in drift or [] if s.get("flagged")]
    if flagged:
        return [
            "**Drift flagged:** "
            + "; ".join(
                f"{s['name']} = {fmt(s['value'])} ({s['rule']}"
                + (f"; {s['cause']}" if s.get("cause") else "")
                + ")"
                for s in flagged
            )
        ]
    return ["No drift signal flagged."] if drift is not None else []


def markdown_summary(summary: dict[str, Any]) -> str:
    """A short Markdown digest (decision, metrics table, flagged drift) for a Prefect artifact."""
    summary = normalize_summary(summary)
    _, title, reason = headline(summary)
    lines = [f"## Run {summary['run_date']}: {title}", "", reason, ""]
    lines += _metrics_lines(metrics_table(summary), summary.get("k"))
    lines += _drift_lines(summary.get("drift"))
    return "\n".join(lines).rstrip() + "\n"


def _counts_line(summary: dict[str, Any]) -> str | None:
    """``ingested N events: C clean, D duplicates, Q quarantined`` for the run date's manifest."""
    steps = summary.get("steps") or {}
    clean = steps.get("clean") or {}
    manifest = clean.get("run_date_manifest") or {}
    parts = []
    for kind in ("events", "items"):
        c = manifest.get(kind)
        if c and c.get("ingested"):
            parts.append(
                f"{kind}: {fmt(c.get('ingested', 0))} in = {fmt(c.get('clean', 0))} clean + "
                f"{fmt(c.get('duplicates', 0))} duplicates + {fmt(c.get('quarantined', 0))} "
                "quarantined"
            )
    if not parts:
        return None
    dates = clean.get("dates_cleaned") or []
    extra = f" ({len(dates)} dates cleaned tonight)" if len(dates) > 1 else ""
    return "; ".join(parts) + extra


def night_markdown(summary: dict[str, Any], report_url: str | None = None) -> str:
    """The night's headline for people who open the Prefect UI: the decision and why, key metrics
    against the champion, counts in / clean / duplicates / quarantined, drift flags and a link to
    the full HTML report."""
    summary = normalize_summary(summary)
    _, title, reason = headline(summary)
    lines = [f"## recsys {summary['run_date']}: {title}", "", reason or "", ""]
    counts = _counts_line(summary)
    if counts:
        lines += [f"**Data:** {counts}", ""]
    rows = [r for r in metrics_table(summary) if r["metric"] in METRIC_NAMES][:4]
    lines += _metrics_lines(rows, summary.get("k"))
    lines += _drift_lines(summary.get("drift"))
    lines.append("")
    if report_url:
        lines.append(f"[Open the full report]({report_url})")
    return "\n".join(lines).rstrip() + "\n"
