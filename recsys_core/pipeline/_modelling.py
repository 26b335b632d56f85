"""Embed, train and evaluate steps.

Tonight's protocol for ``run_date`` D (all data read is dated on or before D):

* the events are split by a global temporal holdout: the last ``holdout_days`` days up to D are
  the test window, everything strictly before the cut is ``train``;
* each candidate model's hyperparameters are searched (Bayesian, seeded) on a validation split
  carved from ``train`` only — the test window is never seen by the search — or reused when the
  stored search is younger than ``tune_max_age_days``;
* the best candidate on validation becomes the challenger: it is refit on every event up to D
  (the production model) and registered;
* challenger and champion *configurations* are both fit on ``train`` and scored on the test
  window: the same data for both, so the comparison is fair even though the champion was trained
  on an earlier night.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import polars as pl

from recsys_core.config import Settings
from recsys_core.embeddings import embed_catalog, load_embeddings
from recsys_core.evaluation import (
    ModelRegistry,
    compare_metrics,
    decide_promotion,
    evaluate,
    make_model_id,
    temporal_split,
)
from recsys_core.io import Warehouse, atomic_write_json, read_json
from recsys_core.models import get_model_class
from recsys_core.pipeline._context import DataWindow, code_version, jsonable, load_window
from recsys_core.pipeline._faults import maybe_fail

__all__ = ["embed_step", "evaluate_step", "train_step"]


# ---- embed ----------------------------------------------------------------------------------------
def embed_step(settings: Settings, run_date: dt.date, *, log: Any = None) -> dict[str, Any]:
    """Embed the text of every catalog item that is new or changed (incremental)."""
    wh = Warehouse(settings.warehouse)
    maybe_fail(settings, "embed")
    if not settings.embedding.enabled:
        return {"skipped": "embedding disabled in config"}
    from recsys_core.ingest import load_catalog

    catalog = load_catalog(wh, as_of=run_date)
    if catalog.height == 0:
        return {"skipped": f"no item catalog on or before {run_date}", "n_items": 0}
    summary = embed_catalog(catalog, wh.item_embeddings, settings.embedding, log=log)
    return jsonable(summary)


def _embeddings_for(settings: Settings, names: list[str]) -> pl.DataFrame | None:
    if not any(get_model_class(n).uses_embeddings for n in names):
        return None
    path = Warehouse(settings.warehouse).item_embeddings
    if not path.is_file():
        return None
    return load_embeddings(path)


# ---- train ----------------------------------------------------------------------------------------
def _tuning_state(settings: Settings, name: str) -> Path:
    return Warehouse(settings.warehouse).tuning_dir / name / "state.json"


def _needs_tuning(settings: Settings, name: str, run_date: dt.date, force: bool) -> dict | None:
    """The stored search result if it may be reused tonight, else None."""
    path = _tuning_state(settings, name)
    if force or not path.is_file():
        return None
    state = read_json(path)
    tuned_on = dt.date.fromisoformat(state["run_date"])
    fresh = 0 <= (run_date - tuned_on).days <= settings.train.tune_max_age_days
    same_budget = (
        state.get("tune_calls") == settings.train.calls_for(name)
        and state.get("fixed_params", {}) == settings.train.params_for(name)
        and state.get("k") == settings.k
    )
    same_metric = (
        state.get("metric") == settings.train.metric and state.get("seed") == settings.seed
    )
    return state if fresh and same_budget and same_metric else None


def train_step(settings: Settings, run_date: dt.date, *, force: bool = False) -> dict[str, Any]:
    """Search (or reuse) every candidate's hyperparameters, pick the best, fit and register it."""
    wh = Warehouse(settings.warehouse)
    maybe_fail(settings, "train")
    window = load_window(settings, run_date)
    train_ev, _ = temporal_split(window.events, run_date, settings.evaluation.holdout_days)
    if train_ev.height == 0:
        train_ev = window.events  # first nights: not enough history for a holdout yet
    embeddings = _embeddings_for(settings, settings.train.models)
    candidates: list[dict[str, Any]] = []
    for name in settings.train.models:
        state = _needs_tuning(settings, name, run_date, force)
        if state is None:
            state = _tune_one(settings, window, train_ev, name, run_date, embeddings)
        else:
            state = {**state, "_reused": True}
        candidates.append(state)
        maybe_fail(settings, "train", point=f"tuned-{name}")
    best = max(
        candidates, key=lambda s: (s["best_score"], -settings.train.models.index(s["model"]))
    )
    name, params = best["model"], best["best_params"]
    started = time.perf_counter()
    model = get_model_class(name)(params).fit(
        window.interactions(window.events, settings),
        items=window.catalog,
        item_embeddings=embeddings,
    )
    fit_seconds = time.perf_counter() - started
    model_id = make_model_id(name, run_date, params)
    registry = ModelRegistry(wh.models_dir)
    registry.register(
        model,
        model_id=model_id,
        name=name,
        params=params,
        data_window=window.describe(),
        metrics={"validation": {settings.train.metric: best["best_score"]}},
        code_version=code_version(),
        embedding_model_id=_embedding_model_id(embeddings),
        run_date=run_date,
    )
    return {
        "challenger": model_id,
        "model": name,
        "params": params,
        "fit_seconds": round(fit_seconds, 3),
        "candidates": [
            {
                "model": c["model"],
                "validation_score": c["best_score"],
                "tuned_on": c["run_date"],
                "reused": bool(c.get("_reused", False)),
                "convergence_png": c.get("convergence_png"),
                "trials_path": c.get("trials_path"),
            }
            for c in candidates
        ],
    }


def _tune_one(
    settings: Settings,
    window: DataWindow,
    train_ev: pl.DataFrame,
    name: str,
    run_date: dt.date,
    embeddings: pl.DataFrame | None,
) -> dict[str, Any]:
    # scikit-optimize and matplotlib are slow to import: only nights that tune pay for them
    from recsys_core.tuning import convergence_plot, save_tuning, split_validation, tune

    tr, va = split_validation(train_ev, days=settings.train.validation_days, seed=settings.seed)
    if tr.height == 0 or va.height == 0:
        tr, va = split_validation(train_ev, fraction=0.2, seed=settings.seed)
    truth = va.select("user_id", "item_id").unique(maintain_order=True)
    result = tune(
        name,
        window.interactions(tr, settings),
        truth,
        n_calls=settings.train.calls_for(name),
        fixed_params=settings.train.params_for(name),
        seed=settings.seed,
        k=settings.k,
        metric=settings.train.metric,
        n_initial_points=settings.train.tune_initial_points,
        items=window.catalog,
        item_embeddings=embeddings,
    )
    tdir = Warehouse(settings.warehouse).tuning_dir / name
    save_tuning(result, tdir)
    png = tdir / "convergence.png"
    try:
        convergence_plot(result, png)
    except Exception:  # a plot must never fail a night
        png = None
    state = {
        "model": name,
        "run_date": run_date.isoformat(),
        "best_params": result.best_params,
        "best_score": float(result.best_score),
        "tune_calls": settings.train.calls_for(name),
        "fixed_params": settings.train.params_for(name),
        "k": settings.k,
        "metric": settings.train.metric,
        "seed": settings.seed,
        "trials_path": str(tdir / "trials.parquet"),
        "convergence_png": str(png) if png else None,
    }
    atomic_write_json(_tuning_state(settings, name), state)
    return state


def _embedding_model_id(embeddings: pl.DataFrame | None) -> str | None:
    if embeddings is None or embeddings.height == 0 or "model_id" not in embeddings.columns:
        return None
    return str(embeddings["model_id"][0])


# ---- evaluate -------------------------------------------------------------------------------------
def evaluate_step(settings: Settings, run_date: dt.date, challenger_id: str) -> dict[str, Any]:
    """Challenger vs champion on the same temporal holdout; promote or keep, and say why."""
    wh = Warehouse(settings.warehouse)
    maybe_fail(settings, "evaluate")
    window = load_window(settings, run_date)
    train_ev, test_ev = temporal_split(window.events, run_date, settings.evaluation.holdout_days)
    registry = ModelRegistry(wh.models_dir)
    challenger = registry.get(challenger_id)
    champion = registry.champion()
    names = [challenger["name"]] + ([champion["name"]] if champion else [])
    embeddings = _embeddings_for(settings, names)
    results: dict[str, Any] = {}
    if train_ev.height == 0 or test_ev.height == 0:
        decision = decide_promotion(
            None,
            None,
            metric=settings.train.metric,
            tolerance=0.0,
            samples=settings.evaluation.bootstrap_samples,
            seed=settings.seed,
        )
        results["note"] = "not enough history for a temporal holdout; promoted without a test"
        ch_eval = champ_eval = None
    else:
        inter = window.interactions(train_ev, settings)

        def holdout(entry: dict[str, Any]):
            model = get_model_class(entry["name"])(entry["params"]).fit(
                inter, items=window.catalog, item_embeddings=embeddings
            )
            users = sorted(set(test_ev["user_id"].to_list()))
            recs = model.recommend(users, settings.k, block_size=settings.scoring.block_size)
            return evaluate(recs, test_ev, settings.k, train=train_ev, n_items=len(window.item_ids))

        ch_eval = holdout(challenger)
        same = champion is not None and champion["model_id"] == challenger_id
        champ_eval = None if champion is None else (ch_eval if same else holdout(champion))
        decision = decide_promotion(
            ch_eval.per_user,
            None if champ_eval is None else champ_eval.per_user,
            metric=settings.train.metric,
            tolerance=settings.evaluation.tolerance,
            samples=settings.evaluation.bootstrap_samples,
            seed=settings.seed,
        )
        results["comparison"] = compare_metrics(
            ch_eval.per_user,
            None if champ_eval is None else champ_eval.per_user,
            samples=settings.evaluation.bootstrap_samples,
            seed=settings.seed,
        )
    if decision.promote:
        registry.promote(challenger_id, decision.reason)
    summary = {
        "run_date": run_date.isoformat(),
        "k": settings.k,
        "metric": settings.train.metric,
        "challenger": challenger_id,
        "champion_before": champion["model_id"] if champion else None,
        "champion_after": registry.champion()["model_id"],
        "decision": jsonable(decision),
        "challenger_metrics": jsonable(ch_eval) if ch_eval is not None else None,
        "champion_metrics": jsonable(champ_eval) if champ_eval is not None else None,
        **results,
    }
    atomic_write_json(wh.evaluation(run_date), summary)
    return summary
