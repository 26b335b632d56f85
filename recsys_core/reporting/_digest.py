"""Small digests for Prefect artifacts: the gate's metrics table and decision (from the evaluate
step's :class:`~recsys_core.results.EvaluateResult`) and the night's headline (from the
:class:`~recsys_core.results.RunSummary`)."""

from __future__ import annotations

from typing import Any

from recsys_core.metrics import METRIC_NAMES
from recsys_core.results import DriftSignal, EvaluateResult, RunSummary

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


def metrics_table(ev: EvaluateResult) -> list[dict[str, Any]]:
    """Rows ``metric, challenger, champion, difference, ci_low, ci_high`` (4 decimals, None if
    unknown): from the paired comparison when a check ran, else from the two models' metrics."""
    challenger = ev.challenger_metrics.metrics if ev.challenger_metrics else {}
    champion = ev.champion_metrics.metrics if ev.champion_before and ev.champion_metrics else {}
    rows: list[dict[str, Any]] = []
    done: set[str] = set()
    for row in ev.comparison or ():
        rows.append(
            {
                "metric": row.metric,
                "challenger": _round(row.challenger),
                "champion": _round(row.champion),
                "difference": _round(row.diff),
                "ci_low": _round(row.low),
                "ci_high": _round(row.high),
            }
        )
        done.add(row.metric)
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


def headline(ev: EvaluateResult) -> tuple[bool, str, str]:
    """(promoted?, one-line title, reason) of the gate's decision."""
    note = f" Note: {ev.note}." if ev.note else ""
    promote = ev.decision.promote
    challenger = ev.challenger or "the challenger"
    champion = ev.champion_before
    title = f"Promoted {challenger}" if promote else f"Kept the champion {champion or ''}".rstrip()
    return promote, title, ev.decision.reason + note


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


def _drift_lines(drift: list[DriftSignal]) -> list[str]:
    """The flagged drift signals in one line, each with its likely cause when one is known."""
    flagged = [s for s in drift if s.flagged]
    if flagged:
        return [
            "**Drift flagged:** "
            + "; ".join(
                f"{s.name} = {fmt(s.value)} ({s.rule}" + (f"; {s.cause}" if s.cause else "") + ")"
                for s in flagged
            )
        ]
    return ["No drift signal flagged."]


def markdown_summary(ev: EvaluateResult) -> str:
    """A short Markdown digest of the gate (decision, metrics table) for a Prefect artifact."""
    _, title, reason = headline(ev)
    lines = [f"## Run {ev.run_date}: {title}", "", reason, ""]
    lines += _metrics_lines(metrics_table(ev), ev.k)
    return "\n".join(lines).rstrip() + "\n"


def _counts_line(summary: RunSummary) -> str | None:
    """``ingested N events: C clean, D duplicates, Q quarantined`` for the run date's manifest."""
    clean = summary.steps.clean
    manifest = clean.run_date_manifest or {}
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
    dates = clean.dates_cleaned
    extra = f" ({len(dates)} dates cleaned tonight)" if len(dates) > 1 else ""
    return "; ".join(parts) + extra


def night_markdown(summary: RunSummary, report_url: str | None = None) -> str:
    """The night's headline for people who open the Prefect UI: the decision and why, key metrics
    against the champion, counts in / clean / duplicates / quarantined, drift flags and a link to
    the full HTML report."""
    ev = summary.steps.evaluate
    _, title, reason = headline(ev)
    lines = [f"## recsys {summary.run_date}: {title}", "", reason or "", ""]
    counts = _counts_line(summary)
    if counts:
        lines += [f"**Data:** {counts}", ""]
    rows = [r for r in metrics_table(ev) if r["metric"] in METRIC_NAMES][:4]
    lines += _metrics_lines(rows, ev.k)
    lines += _drift_lines(summary.drift)
    lines.append("")
    if report_url:
        lines.append(f"[Open the full report]({report_url})")
    return "\n".join(lines).rstrip() + "\n"
