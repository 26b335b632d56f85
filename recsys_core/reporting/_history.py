"""The per-run evaluation record (``evaluation/run_date=D/metrics.json``) and reading it back.

The record is what later runs need from this one: the metrics of both models (for the "metrics
over run dates" plot), the decision, and the drift statistics (the next run's ``previous``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl

from recsys_core.io import CorruptFileError, Warehouse, atomic_write_json, exists, read_json
from recsys_core.reporting._summary import normalize_summary

__all__ = ["evaluation_record", "metrics_history", "previous_stats", "write_evaluation"]

RECORD_VERSION = 1


def evaluation_record(summary: dict[str, Any]) -> dict[str, Any]:
    """The subset of a run ``summary`` (see ``build_report``) kept in ``metrics.json``."""
    summary = normalize_summary(summary)

    def model(part: dict[str, Any] | None) -> dict[str, Any] | None:
        if not part:
            return None
        return {
            "model_id": part.get("model_id"),
            "name": part.get("name"),
            "metrics": dict(part.get("metrics") or {}),
        }

    return {
        "record_version": RECORD_VERSION,
        "run_date": str(summary["run_date"]),
        "k": summary.get("k"),
        "metric": summary.get("metric"),
        "challenger": model(summary.get("challenger")),
        "champion": model(summary.get("champion")),
        "decision": summary.get("decision"),
        "comparison": summary.get("comparison"),
        "evaluation": summary.get("evaluation"),
        "stats": summary.get("stats"),
        "drift": summary.get("drift"),
    }


def write_evaluation(warehouse: Warehouse, run_date: dt.date, summary: dict[str, Any]) -> Path:
    """Write :func:`evaluation_record` of ``summary`` to ``warehouse.evaluation(run_date)``."""
    return atomic_write_json(warehouse.evaluation(run_date), evaluation_record(summary))


def _records(warehouse: Warehouse, until: dt.date | None) -> list[dict[str, Any]]:
    from recsys_core.io import partition_dates

    out = []
    for d in partition_dates(warehouse.root / "evaluation"):
        if until is not None and d > until:
            continue
        path = warehouse.evaluation(d)
        if not exists(path):
            continue
        try:
            rec = read_json(path)
        except CorruptFileError:
            continue  # one damaged night must not break every later report
        if isinstance(rec, dict):
            rec = normalize_summary(rec)
            rec["run_date"] = d.isoformat()
            out.append(rec)
    return out


def metrics_history(warehouse: Warehouse, until: dt.date | None = None) -> pl.DataFrame:
    """Long frame ``run_date, role, model_id, metric, value`` from every stored ``metrics.json``
    dated on or before ``until`` (``role`` is challenger or champion). Unreadable files are
    skipped. Sorted by ``(run_date, role, metric)``."""
    rows = []
    for rec in _records(warehouse, until):
        for role in ("challenger", "champion"):
            part = rec.get(role) or {}
            for metric, value in (part.get("metrics") or {}).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    rows.append(
                        {
                            "run_date": dt.date.fromisoformat(rec["run_date"]),
                            "role": role,
                            "model_id": part.get("model_id"),
                            "metric": metric,
                            "value": float(value),
                        }
                    )
    schema = {
        "run_date": pl.Date,
        "role": pl.String,
        "model_id": pl.String,
        "metric": pl.String,
        "value": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema).sort("run_date", "role", "metric")


def previous_stats(warehouse: Warehouse, run_date: dt.date) -> dict[str, Any] | None:
    """The ``stats`` of the latest run strictly before ``run_date`` (None if there is none)."""
    before = [r for r in _records(warehouse, run_date - dt.timedelta(days=1)) if r.get("stats")]
    return before[-1]["stats"] if before else None
