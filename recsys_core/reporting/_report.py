"""The nightly HTML report: one self-contained page for someone who never opens the code.

The run ``summary`` (a plain JSON-able dict the pipeline assembles) has this shape; only
``run_date`` and ``decision`` are required, every other part is drawn when present::

    {
      "run_date": "2026-01-31",
      "k": 10,
      "metric": "ndcg",                          # primary metric of the gate
      "decision": Decision.to_dict(),            # promote, reason, diff, low, high,
                                                 # challenger_score, champion_score, ...
      "challenger": {"model_id": str, "name": str, "params": {...}, "metrics": {name: float}},
      "champion": {"model_id": str, "metrics": {...}} | None,   # champion before tonight
      "comparison": compare_metrics(...),        # rows metric, challenger, champion, diff,
                                                 # low, high, p_worse (table with intervals)
      "evaluation": EvalResult.to_dict(),        # challenger's coverage, novelty, segments
      "ingest_dates": ["2026-01-31"],            # manifests to show (default: [run_date])
      "ingest_totals": {"ingested": int, ...},   # counts over every partition cleaned tonight
      "stats": {**data_stats(...), **recommendation_stats(...)},  # tonight's drift inputs
      "drift": drift_signals(...),               # default: computed from "stats" and the
      "drift_threshold": 0.25,                   #   previous run's metrics.json "stats"
      "tuning": {model_name: {"trials": [objective per call], "direction": "max" | "min",
                              "plot": "convergence.png", "trials_path": "trials.parquet",
                              "best_params": {...}, "best_value": float}},
      "recommendations": "path/to/recs.parquet", # default: warehouse.recommendations(run_date)
      "timings": {step: seconds},
      "note": "free text shown under the decision",
    }

A trials Parquet file is read for the convergence plot when ``trials`` is absent: its first column
among ``value``, ``objective``, ``score``, ``loss``, in row order.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from pathlib import Path
from typing import Any

import polars as pl

from recsys_core.io import (
    CorruptFileError,
    Warehouse,
    atomic_write_text,
    exists,
    location,
    read_bytes,
    read_json,
    read_parquet,
)
from recsys_core.metrics import METRIC_NAMES
from recsys_core.reporting._abtest import abtest_section, gate_section
from recsys_core.reporting._digest import fmt, headline, metrics_table
from recsys_core.reporting._drift import drift_signals
from recsys_core.reporting._history import evaluation_record, metrics_history, previous_stats
from recsys_core.reporting._plots import (
    convergence_png,
    metrics_over_time_png,
    score_histogram_png,
)
from recsys_core.reporting._summary import normalize_summary

__all__ = ["build_report", "metrics_history_from_summary"]

_CSS = """
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222;line-height:1.4}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:3px 8px}
td.n{text-align:right;font-variant-numeric:tabular-nums} th{background:#f4f4f4}
.promote{background:#e6f4ea;border-left:6px solid #2e7d32;padding:.8em}
.keep{background:#fff4e5;border-left:6px solid #ef6c00;padding:.8em}
.flag{color:#b71c1c;font-weight:bold} .muted{color:#777} img{max-width:100%}
dl{font-size:.9em} dt{font-weight:bold;float:left;width:7em} dd{margin-left:8em}
"""

#: Plain-English meaning of each metric, shown under the metrics table.
GLOSSARY: dict[str, str] = {
    "precision": "share of the k recommended items the user went on to interact with",
    "recall": "share of the items the user went on to interact with that were recommended",
    "f1": "harmonic mean of precision and recall",
    "ndcg": "like recall, but a hit near the top of the list counts more (1 = ideal order)",
    "map": "mean average precision: rewards putting all hits early",
    "hit": "share of users with at least one hit in their list",
    "mrr": "1 / position of the first hit, averaged over users",
    "coverage": "share of the catalog recommended to at least one user",
    "novelty": "mean self-information (bits) of recommended items: higher = less popular items",
    "arp": "average share of training users who had interacted with a recommended item",
}


# ---- HTML ------------------------------------------------------------------------------------
def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for v in row:
            cls = ' class="n"' if isinstance(v, int | float) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{html.escape(fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        out: list[tuple[str, Any]] = []
        for key in sorted(obj):
            out += _flatten(obj[key], f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(obj, int | float | bool) or (isinstance(obj, str) and len(obj) <= 120):
        return [(prefix, obj)]
    if isinstance(obj, list):
        return [(prefix, f"{len(obj)} entries")]
    return []


def _section_ingest(warehouse: Warehouse, summary: dict[str, Any], run_date: dt.date) -> str:
    dates = [dt.date.fromisoformat(str(d)) for d in summary.get("ingest_dates") or [run_date]]
    parts = ["<h2>Ingest and cleaning</h2>"]
    for d in dates:
        path = warehouse.manifest(d)
        try:
            manifest = read_json(path)
        except FileNotFoundError:
            parts.append(f"<p class=muted>No manifest for {d} ({html.escape(str(path))}).</p>")
            continue
        except CorruptFileError as exc:
            parts.append(f"<p class=flag>{html.escape(str(exc))}</p>")
            continue
        parts.append(_manifest_tables(d, manifest))
    if summary.get("ingest_totals"):
        parts.append(
            "<p>Totals over the partitions cleaned tonight:</p>"
            + _table(["count", "value"], _flatten(summary["ingest_totals"]))
        )
    parts += _landing_notes(summary)
    return "\n".join(parts)


def _manifest_tables(day: dt.date, manifest: dict[str, Any]) -> str:
    """One date's manifest as people read it: counts per table (in = clean + duplicates +
    quarantined), quarantine reasons, the landing files read, and the cleaning rules apart."""
    counts = [
        [kind, *(block.get(k, 0) for k in ("ingested", "clean", "duplicates", "quarantined"))]
        for kind in ("events", "items")
        if isinstance(block := manifest.get(kind), dict)
    ]
    out = [
        f"<h3>Partition {day}</h3>",
        _table(["table", "ingested", "clean", "duplicates", "quarantined"], counts),
    ]
    if manifest.get("reasons"):
        out.append(
            "<p>Quarantine reasons:</p>"
            + _table(["reason", "rows"], sorted(manifest["reasons"].items()))
        )
    files = manifest.get("source_files") or []
    if files:
        names = [f if isinstance(f, str) else f.get("name", str(f)) for f in files]
        items = "".join(f"<li><code>{html.escape(str(n))}</code></li>" for n in names)
        out.append(f"<p>Landing files read ({len(names)}):</p><ul>{items}</ul>")
    config = manifest.get("clean_config")
    if config:
        out.append(
            "<details><summary>Cleaning rules applied</summary>"
            + _table(["setting", "value"], _flatten(config))
            + "</details>"
        )
    return "\n".join(out)


def _landing_notes(summary: dict[str, Any]) -> list[str]:
    """Late files, unrecognised landing paths and vanished partitions, each named (from the
    ingest and clean steps' summaries)."""
    steps = summary.get("steps") or {}
    ingest, clean = steps.get("ingest") or {}, steps.get("clean") or {}
    notes = [
        ("Late landing files picked up tonight (their dates re-ingested and re-cleaned)", "late"),
        ("Unrecognised landing paths (not read)", "unrecognised"),
        ("Ingested partitions no longer in the landing zone (raw kept)", "vanished"),
    ]
    out = []
    for title, key in notes:
        if ingest.get(key):
            items = "".join(f"<li>{html.escape(str(p))}</li>" for p in ingest[key])
            out.append(f"<p class=flag>{html.escape(title)}:</p><ul>{items}</ul>")
    if clean.get("followers"):
        dates = ", ".join(html.escape(str(d)) for d in clean["followers"])
        out.append(f"<p>Later dates re-cleaned because an earlier date changed: {dates}</p>")
    return out


def _section_drift(warehouse: Warehouse, summary: dict[str, Any], run_date: dt.date) -> str:
    signals = summary.get("drift")
    if signals is None and summary.get("stats"):
        signals = drift_signals(
            summary["stats"],
            previous_stats(warehouse, run_date),
            float(summary.get("drift_threshold", 0.25)),
        )
    if not signals:
        return "<h2>Drift</h2><p class=muted>No drift statistics were recorded.</p>"
    rows = [
        [
            s["name"],
            s["value"],
            s["previous"],
            s["change"],
            s["rule"],
            ("FLAGGED" if s["flagged"] else "ok")
            + (f" (likely cause: {s['cause']})" if s.get("cause") else ""),
        ]
        for s in signals
    ]
    n = sum(bool(s["flagged"]) for s in signals)
    lead = f'<p class="{"flag" if n else "muted"}">{n} of {len(signals)} signals flagged.</p>'
    table = _table(["signal", "tonight", "previous run", "change", "flagged when", "status"], rows)
    return "<h2>Drift</h2>" + lead + table


def _section_segments(summary: dict[str, Any]) -> str:
    ev = summary.get("evaluation") or {}
    seg = ev.get("segments") or {}
    if not seg:
        return ""
    rows: list[list[Any]] = []
    if "new_users" in seg:
        rows.append(
            [
                "new users (not evaluated; popularity fallback)",
                "users",
                seg["new_users"].get("n_users"),
            ]
        )
    cold = seg.get("cold_items")
    if cold:
        rows += [
            ["cold-start items", "test pairs", cold.get("n_pairs")],
            ["cold-start items", "hit rate", cold.get("hit")],
            ["cold-start items", "recall", cold.get("recall")],
        ]
    heavy = seg.get("heavy_users")
    if heavy:
        rows.append(["heavy users (top 10% by history)", "users", heavy.get("n_users")])
        rows += [["heavy users", m, v] for m, v in (heavy.get("metrics") or {}).items()]
    return "<h2>Segments (challenger)</h2>" + _table(["segment", "measure", "value"], rows)


def build_report(warehouse: Warehouse, run_date: dt.date, *, summary: dict[str, Any]) -> Path:
    """Write ``<warehouse>/reports/run_date=D/report.html`` (self-contained, plots embedded).

    ``summary`` is described in the module docstring (the pipeline's evaluate/finalize step
    outputs are accepted too, see :func:`normalize_summary`). Returns the report's path.
    """
    summary = normalize_summary(summary)
    run_date = (
        dt.date.fromisoformat(str(run_date)) if not isinstance(run_date, dt.date) else run_date
    )
    promote, title, reason = headline(summary)
    metric = summary.get("metric") or "ndcg"
    k = summary.get("k")
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>recsys {run_date}</title>"
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Nightly recommendations — {run_date}</h1>",
        f'<div class="{"promote" if promote else "keep"}"><b>{html.escape(title)}</b><br>'
        f"{html.escape(reason)}</div>",
    ]
    ch = summary.get("challenger") or {}
    champ = summary.get("champion") or {}
    parts.append(
        "<h2>Models</h2>"
        + _table(
            ["role", "model id", "model", "parameters"],
            [
                [
                    "challenger (tonight)",
                    ch.get("model_id"),
                    ch.get("name"),
                    _params(ch.get("params")),
                ],
                [
                    "champion (before tonight)",
                    champ.get("model_id"),
                    champ.get("name"),
                    _params(champ.get("params")),
                ],
            ],
        )
    )
    parts.append(gate_section(summary.get("gate"), summary.get("champion_entry")))
    rows = metrics_table(summary)
    if rows:
        parts.append(
            f"<h2>Metrics{f' at k = {k}' if k else ''}</h2>"
            "<p>Difference = challenger − champion on the same test users; the 95% interval comes "
            "from a paired bootstrap over users.</p>"
            + _table(
                ["metric", "challenger", "champion", "difference", "95% low", "95% high"],
                [
                    [
                        r["metric"],
                        r["challenger"],
                        r["champion"],
                        r["difference"],
                        r["ci_low"],
                        r["ci_high"],
                    ]
                    for r in rows
                ],
            )
            + _glossary([r["metric"] for r in rows])
        )
    parts.append(abtest_section(summary.get("abtest") or {}, _img))
    parts.append(_section_segments(summary))
    parts.append(_section_ingest(warehouse, summary, run_date))

    history = metrics_history(warehouse, until=run_date)
    if summary.get("challenger") and run_date not in set(history["run_date"].to_list()):
        tonight = metrics_history_from_summary(summary)
        history = pl.concat([history, tonight]).sort("run_date", "role", "metric")
    if history.height:
        shown = [m for m in METRIC_NAMES if m in set(history["metric"].to_list())]
        parts.append(
            "<h2>Metrics over run dates</h2>"
            + _img(metrics_over_time_png(history, shown, metric), "metrics over run dates")
        )
    parts.append(_section_tuning(summary))
    rec_path = location(summary.get("recommendations") or warehouse.recommendations(run_date))
    if exists(rec_path):
        scores = read_parquet(rec_path, columns=["score"])["score"].to_numpy()
        parts.append(
            "<h2>Tonight's recommendations</h2>"
            + _img(score_histogram_png(scores), "score histogram")
        )
    parts.append(_section_drift(warehouse, summary, run_date))
    if summary.get("timings"):
        parts.append(
            "<h2>Step timings (seconds)</h2>"
            + _table(
                ["step", "seconds"], [[s, f"{float(v):.1f}"] for s, v in summary["timings"].items()]
            )
        )
    parts.append("</body></html>")
    target = warehouse.report_dir(run_date) / "report.html"
    atomic_write_text(target, "\n".join(p for p in parts if p))
    return target


def metrics_history_from_summary(summary: dict[str, Any]) -> pl.DataFrame:
    """Tonight's rows of :func:`metrics_history`, taken from the summary itself."""
    rec = evaluation_record(summary)
    rows = []
    for role in ("challenger", "champion"):
        part = rec.get(role) or {}
        for m, v in (part.get("metrics") or {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                rows.append(
                    (
                        dt.date.fromisoformat(rec["run_date"]),
                        role,
                        part.get("model_id"),
                        m,
                        float(v),
                    )
                )
    return pl.DataFrame(
        rows,
        schema={
            "run_date": pl.Date,
            "role": pl.String,
            "model_id": pl.String,
            "metric": pl.String,
            "value": pl.Float64,
        },
        orient="row",
    )


def _glossary(metrics: list[str]) -> str:
    items = [
        f"<dt>{html.escape(m)}</dt><dd>{html.escape(GLOSSARY[m])}</dd>"
        for m in metrics
        if m in GLOSSARY
    ]
    return f"<dl>{''.join(items)}</dl>" if items else ""


def _params(params: Any) -> str:
    if not params:
        return ""
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()))


_TRIAL_COLUMNS = ("value", "objective", "score", "loss")


def _trial_values(t: dict[str, Any]) -> list[float] | None:
    if t.get("trials"):
        return [float(v) for v in t["trials"]]
    path = t.get("trials_path")
    if not path or not exists(path):
        return None
    try:
        frame = read_parquet(path)
    except CorruptFileError:
        return None
    col = next((c for c in _TRIAL_COLUMNS if c in frame.columns), None)
    return None if col is None else frame[col].cast(pl.Float64).drop_nulls().to_list()


def _section_tuning(summary: dict[str, Any]) -> str:
    """A model's own convergence PNG when there is one, else one plot drawn from the trials."""
    tuning = summary.get("tuning") or {}
    if not tuning:
        return ""
    parts = ["<h2>Hyperparameter tuning</h2>"]
    to_draw: dict[str, list[float]] = {}
    direction = "max"
    for name, t in tuning.items():
        label = html.escape(name)
        best = t.get("best_value")
        text = f"<p><b>{label}</b>"
        if best is not None:
            text += f": best validation objective {fmt(best)}"
        if t.get("best_params"):
            text += f" with {html.escape(_params(t['best_params']))}"
        parts.append(text + "</p>")
        plot = t.get("plot")
        if plot and exists(plot):
            parts.append(_img(read_bytes(plot), f"{name} convergence"))
            continue
        values = _trial_values(t)
        if values:
            to_draw[name] = values
            direction = t.get("direction", direction)
    if to_draw:
        parts.append(_img(convergence_png(to_draw, direction), "tuning convergence"))
    return "\n".join(parts)
