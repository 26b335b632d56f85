"""The nightly HTML report: one self-contained page for someone who never opens the code.

It is drawn from the night's :class:`~recsys_core.results.RunSummary` (the steps' results, the
recommendation statistics and the drift signals), the date's manifest, the earlier nights' run
markers (the metrics over run dates) and tonight's recommendations (the score histogram).
A convergence plot is a model's own PNG when the tuning wrote one, else drawn from its trials
Parquet file (its first column among ``value``, ``objective``, ``score``, ``loss``, in row order).
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
    concurrently,
    exists,
    read_bytes,
    read_json,
    read_parquet,
)
from recsys_core.metrics import METRIC_NAMES
from recsys_core.reporting._abtest import abtest_section, gate_section
from recsys_core.reporting._digest import fmt, headline, metrics_table
from recsys_core.reporting._history import metrics_frame, metrics_history
from recsys_core.reporting._plots import (
    convergence_png,
    metrics_over_time_png,
    score_histogram_png,
)
from recsys_core.results import (
    AbtestResult,
    CleanResult,
    HoldoutMetrics,
    IngestStepResult,
    RunSummary,
    TrainResult,
)

__all__ = ["build_report"]

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


def _section_ingest(warehouse: Warehouse, summary: RunSummary, run_date: dt.date) -> str:
    ingest, clean = summary.steps.ingest, summary.steps.clean
    parts = ["<h2>Ingest and cleaning</h2>"]
    for d in [run_date]:
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
    totals = {"dates cleaned tonight": len(clean.dates_cleaned), **clean.events.model_dump()}
    parts.append(
        "<p>Totals over the partitions cleaned tonight:</p>"
        + _table(["count", "value"], _flatten(totals))
    )
    parts += _landing_notes(ingest, clean)
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


def _landing_notes(ingest: IngestStepResult, clean: CleanResult) -> list[str]:
    """Late files, unrecognised landing paths and vanished partitions, each named (from the
    ingest and clean steps' results)."""
    notes = [
        (
            "Late landing files picked up tonight (their dates re-ingested and re-cleaned)",
            ingest.late,
        ),
        ("Unrecognised landing paths (not read)", ingest.unrecognised),
        ("Ingested partitions no longer in the landing zone (raw kept)", ingest.vanished),
    ]
    out = []
    for title, paths in notes:
        if paths:
            items = "".join(f"<li>{html.escape(str(p))}</li>" for p in paths)
            out.append(f"<p class=flag>{html.escape(title)}:</p><ul>{items}</ul>")
    if clean.followers:
        dates = ", ".join(html.escape(str(d)) for d in clean.followers)
        out.append(f"<p>Later dates re-cleaned because an earlier date changed: {dates}</p>")
    return out


def _section_drift(summary: RunSummary) -> str:
    signals = summary.drift
    if not signals:
        return "<h2>Drift</h2><p class=muted>No drift statistics were recorded.</p>"
    rows = [
        [
            s.name,
            s.value,
            s.previous,
            s.change,
            s.rule,
            ("FLAGGED" if s.flagged else "ok") + (f" (likely cause: {s.cause})" if s.cause else ""),
        ]
        for s in signals
    ]
    n = sum(s.flagged for s in signals)
    lead = f'<p class="{"flag" if n else "muted"}">{n} of {len(signals)} signals flagged.</p>'
    table = _table(["signal", "tonight", "previous run", "change", "flagged when", "status"], rows)
    return "<h2>Drift</h2>" + lead + table


def _section_segments(challenger: HoldoutMetrics | None) -> str:
    seg = challenger.segments if challenger else {}
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


def build_report(
    warehouse: Warehouse,
    run_date: dt.date,
    *,
    summary: RunSummary,
    recommendations: pl.DataFrame | None = None,
) -> Path:
    """Write ``<warehouse>/reports/run_date=D/report.html`` (self-contained, plots embedded) from
    the night's ``summary``. ``recommendations``: tonight's table when the caller has just read
    it (else it is read here, when there is one). Returns the report's path."""
    ev, train = summary.steps.evaluate, summary.steps.train
    promote, title, reason = headline(ev)
    metric = ev.metric or "ndcg"
    k = ev.k
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>recsys {run_date}</title>"
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Nightly recommendations — {run_date}</h1>",
        f'<div class="{"promote" if promote else "keep"}"><b>{html.escape(title)}</b><br>'
        f"{html.escape(reason)}</div>",
    ]
    champ = ev.champion_entry if ev.champion_before else None
    parts.append(
        "<h2>Models</h2>"
        + _table(
            ["role", "model id", "model", "parameters"],
            [
                ["challenger (tonight)", ev.challenger, train.model, _params(train.params)],
                [
                    "champion (before tonight)",
                    ev.champion_before,
                    champ.name if champ else None,
                    _params(champ.params if champ else None),
                ],
            ],
        )
    )
    parts.append(gate_section(ev.gate, ev.champion_entry))
    rows = metrics_table(ev)
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
    abtest = summary.steps.abtest
    parts.append(abtest_section(abtest if isinstance(abtest, AbtestResult) else None, _img))
    parts.append(_section_segments(ev.challenger_metrics))
    parts.append(_section_ingest(warehouse, summary, run_date))

    history = metrics_history(warehouse, until=run_date)
    if run_date not in set(history["run_date"].to_list()):  # tonight's marker comes last
        history = pl.concat([history, metrics_frame([summary])]).sort("run_date", "role", "metric")
    if history.height:
        shown = [m for m in METRIC_NAMES if m in set(history["metric"].to_list())]
        parts.append(
            "<h2>Metrics over run dates</h2>"
            + _img(metrics_over_time_png(history, shown, metric), "metrics over run dates")
        )
    parts.append(_section_tuning(train))
    rec_path = warehouse.recommendations(run_date)
    if recommendations is None and exists(rec_path):
        recommendations = read_parquet(rec_path, columns=["score"])
    if recommendations is not None:
        scores = recommendations["score"].to_numpy()
        parts.append(
            "<h2>Tonight's recommendations</h2>"
            + _img(score_histogram_png(scores), "score histogram")
        )
    parts.append(_section_drift(summary))
    parts.append("</body></html>")
    target = warehouse.report_dir(run_date) / "report.html"
    atomic_write_text(target, "\n".join(p for p in parts if p))
    return target


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


def _trial_values(path: str | None) -> list[float] | None:
    if not path or not exists(path):
        return None
    try:
        frame = read_parquet(path)
    except CorruptFileError:
        return None
    col = next((c for c in _TRIAL_COLUMNS if c in frame.columns), None)
    return None if col is None else frame[col].cast(pl.Float64).drop_nulls().to_list()


def _bytes_or_none(path: str | None) -> bytes | None:
    if not path:
        return None
    try:
        return read_bytes(path)
    except FileNotFoundError:
        return None


def _section_tuning(train: TrainResult) -> str:
    """A model's own convergence PNG when there is one, else one plot drawn from the trials."""
    if not train.candidates:
        return ""
    parts = ["<h2>Hyperparameter tuning</h2>"]
    to_draw: dict[str, list[float]] = {}
    paths = [c.convergence_png for c in train.candidates]
    pngs = concurrently(_bytes_or_none, paths)  # one round of reads, no existence check first
    for c, png in zip(train.candidates, pngs, strict=True):
        parts.append(
            f"<p><b>{html.escape(c.model)}</b>: best validation objective "
            f"{fmt(c.validation_score)}</p>"
        )
        if png is not None:
            parts.append(_img(png, f"{c.model} convergence"))
            continue
        values = _trial_values(c.trials_path)
        if values:
            to_draw[c.model] = values
    if to_draw:
        parts.append(_img(convergence_png(to_draw, "max"), "tuning convergence"))
    return "\n".join(parts)
