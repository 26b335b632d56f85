"""One place that reads a run summary, whichever of the accepted shapes it comes in.

The report's own shape is documented in :mod:`recsys_core.reporting._report`. Two more are
accepted and mapped onto it, so that the pipeline's step outputs can be passed as they are:

* the evaluate step's output (also stored as ``metrics.json``): ``challenger`` is a model id string,
  with ``champion_before``, ``challenger_metrics`` / ``champion_metrics`` (``EvalResult.to_dict()``),
  ``decision``, ``k``, ``metric`` and optionally ``comparison`` and ``note``;
* the finalize step's summary: ``{"run_date", "steps": {"clean", "train", "evaluate", ...},
  "recommendation_stats", "drift"}``.

Keys already in the report's shape always win over mapped ones.
"""

from __future__ import annotations

from typing import Any

__all__ = ["normalize_summary"]


def _from_evaluate_step(ev: dict[str, Any], train: dict[str, Any]) -> dict[str, Any]:
    ch_eval = ev.get("challenger_metrics") or {}
    cp_eval = ev.get("champion_metrics") or {}
    champion_id = ev.get("champion_before")
    out: dict[str, Any] = {
        "k": ev.get("k"),
        "metric": ev.get("metric"),
        "decision": ev.get("decision"),
        "challenger": {
            "model_id": ev.get("challenger") or train.get("challenger"),
            "name": train.get("model"),
            "params": train.get("params"),
            "metrics": dict(ch_eval.get("metrics") or {}),
        },
        "champion": (
            {
                "model_id": champion_id,
                "name": (ev.get("champion_entry") or {}).get("name"),
                "params": (ev.get("champion_entry") or {}).get("params"),
                "metrics": dict(cp_eval.get("metrics") or {}),
            }
            if champion_id
            else None
        ),
        "gate": ev.get("gate"),
        "champion_entry": ev.get("champion_entry"),
        "evaluation": ch_eval or None,
        "comparison": ev.get("comparison"),
        "note": ev.get("note"),
    }
    if ev.get("run_date"):
        out["run_date"] = ev["run_date"]
    return {k: v for k, v in out.items() if v is not None or k == "champion"}


def _from_train_step(train: dict[str, Any]) -> dict[str, Any]:
    tuning = {}
    for c in train.get("candidates") or []:
        name = c.get("model")
        if name:
            tuning[name] = {
                "plot": c.get("convergence_png"),
                "trials_path": c.get("trials_path"),
                "best_value": c.get("validation_score"),
            }
    return {"tuning": tuning} if tuning else {}


def normalize_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` in the report's shape (a new dict; the input is not modified)."""
    out = dict(summary)
    steps = out.get("steps")
    mapped: dict[str, Any] = {}
    if isinstance(steps, dict):
        ev = steps.get("evaluate") or {}
        train = steps.get("train") or {}
        clean = steps.get("clean") or {}
        mapped.update(_from_train_step(train))
        if ev:
            mapped.update(_from_evaluate_step(ev, train))
        if isinstance(clean.get("events"), dict):
            mapped["ingest_totals"] = {
                "dates cleaned tonight": len(clean.get("dates_cleaned") or []),
                **clean["events"],
            }
        if isinstance(steps.get("abtest"), dict):
            mapped["abtest"] = steps["abtest"]
        if out.get("recommendation_stats"):
            mapped["stats"] = out["recommendation_stats"]
    elif isinstance(out.get("challenger"), str):
        mapped.update(_from_evaluate_step(out, {}))
        out.pop("challenger")
        out.pop("champion", None)
    for key, value in mapped.items():
        if key not in out or out[key] is None:
            out[key] = value
    return out
