"""Embed, train and evaluate steps.

Tonight's protocol for ``run_date`` D (all data read is dated on or before D):

* the events are split by a global temporal holdout: the last ``holdout_days`` days up to D are
  the test window, everything strictly before the cut is ``train``;
* each candidate model's hyperparameters are searched (Bayesian, seeded) on a validation split
  carved from ``train`` only — the test window is never seen by the search — or reused when the
  stored search is younger than ``tune_max_age_days``;
* the best candidate on validation becomes the challenger: it is refit on every event up to D
  (the production model) and registered;
* the gate compares it with the *serving* champion (:func:`evaluate_step`): a recipe check
  (both recipes fit on ``train``, scored on the test window) when the recipes differ, and a
  regression check (the challenger's recipe refit on the serving artifact's own window, against
  the stored artifact, on the test days after that window) — no model is scored on days it was
  trained on, and no model is compared with itself;
* with an A/B experiment configured, :func:`prepare_arms` resolves each arm to a model for the
  score step.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import polars as pl

from recsys_core.config import Settings
from recsys_core.embeddings import embed_catalog, load_embeddings
from recsys_core.evaluation import (
    Decision,
    TrainFacts,
    compare_metrics,
    decide_promotion,
    evaluate,
    event_day,
    temporal_split,
)
from recsys_core.io import (
    Location,
    Warehouse,
    atomic_write_json,
    concurrently,
    exists,
    listing_snapshot,
    prefetch_listings,
    read_json,
)
from recsys_core.models import get_model_class
from recsys_core.pipeline._context import (
    DataWindow,
    code_version,
    jsonable,
    load_window,
    ranking_threads,
)
from recsys_core.pipeline._faults import maybe_fail
from recsys_core.registry import ModelRegistry, make_model_id
from recsys_core.results import (
    ArmModel,
    ArmsPlan,
    ChampionEntry,
    EmbedResult,
    EvaluateResult,
    GateCheck,
    GateReport,
    HoldoutMetrics,
    MetricComparison,
    TrainResult,
    TuningCandidate,
)
from recsys_core.tuning import pick_best

__all__ = ["embed_step", "evaluate_step", "prepare_arms", "train_step"]


# ---- embed ----------------------------------------------------------------------------------------
def embed_step(settings: Settings, run_date: dt.date, *, log: Any = None) -> EmbedResult:
    """Embed the text of every catalog item that is new or changed (incremental)."""
    wh = Warehouse(settings.warehouse)
    maybe_fail(settings, "embed")
    if not settings.embedding.enabled:
        return EmbedResult(skipped="embedding disabled in config")
    from recsys_core.ingest import load_catalog

    catalog = load_catalog(wh, as_of=run_date)
    if catalog.height == 0:
        return EmbedResult(skipped=f"no item catalog on or before {run_date}", n_items=0)
    summary = embed_catalog(catalog, wh.item_embeddings, settings.embedding, log=log)
    return EmbedResult(**jsonable(summary))


def _embeddings_for(settings: Settings, names: list[str]) -> pl.DataFrame | None:
    if not any(get_model_class(n).uses_embeddings for n in names):
        return None
    path = Warehouse(settings.warehouse).item_embeddings
    if not exists(path):
        return None
    return load_embeddings(path)


# ---- train ----------------------------------------------------------------------------------------
def _tuning_state(settings: Settings, name: str) -> Location:
    return Warehouse(settings.warehouse).tuning_dir / name / "state.json"


def _reusable_tuning(settings: Settings, name: str, run_date: dt.date, force: bool) -> dict | None:
    """The stored search result if it may be reused tonight, else None."""
    if force:
        return None
    try:  # one request on an object store (no existence check first)
        state = read_json(_tuning_state(settings, name))
    except FileNotFoundError:
        return None
    tuned_on = dt.date.fromisoformat(state["run_date"])
    fresh = 0 <= (run_date - tuned_on).days <= settings.train.tune_max_age_days
    same_budget = (
        state.get("tune_calls") == settings.train.calls_for(name)
        and state.get("fixed_params", {}) == settings.train.params_for(name)
        and state.get("k") == settings.k
        and state.get("tune_max_users") == settings.train.tune_max_users
    )
    same_metric = (
        state.get("metric") == settings.train.metric and state.get("seed") == settings.seed
    )
    return state if fresh and same_budget and same_metric else None


@listing_snapshot()
def train_step(settings: Settings, run_date: dt.date, *, force: bool = False) -> TrainResult:
    """Search (or reuse) every candidate's hyperparameters, pick the best, fit and register it."""
    wh = Warehouse(settings.warehouse)
    maybe_fail(settings, "train")
    clean = wh.root / "clean"  # what the window and the catalog list, listed at once
    prefetch_listings(clean / "events", clean / "items", wh.checkpoints("catalog"))
    window = load_window(settings, run_date)
    train_ev, _ = temporal_split(window.events, run_date, settings.evaluation.holdout_days)
    if train_ev.height == 0:
        train_ev = window.events  # first nights: not enough history for a holdout yet
    embeddings = _embeddings_for(settings, settings.train.models)
    candidates: list[dict[str, Any]] = []
    search_data: dict[str, Any] = {}  # the validation split, built once for every candidate
    models = list(settings.train.models)
    stored = concurrently(lambda n: _reusable_tuning(settings, n, run_date, force), models)
    for name, state in zip(models, stored, strict=True):
        if state is None:
            state = _tune_one(settings, window, train_ev, name, run_date, embeddings, search_data)
        else:
            state = {**state, "_reused": True}
        candidates.append(state)
        maybe_fail(settings, "train", point=f"tuned-{name}")
    by_name = {c["model"]: c for c in candidates}
    best = by_name[pick_best({n: c["best_score"] for n, c in by_name.items()})]
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
    return TrainResult(
        challenger=model_id,
        model=name,
        params=params,
        fit_seconds=round(fit_seconds, 3),
        n_items=len(window.item_ids),  # the catalog as of run_date: coverage's denominator
        candidates=[
            TuningCandidate(
                model=c["model"],
                validation_score=c["best_score"],
                tuned_on=c["run_date"],
                reused=bool(c.get("_reused", False)),
                convergence_png=c.get("convergence_png"),
                trials_path=c.get("trials_path"),
            )
            for c in candidates
        ],
    )


def _tune_one(
    settings: Settings,
    window: DataWindow,
    train_ev: pl.DataFrame,
    name: str,
    run_date: dt.date,
    embeddings: pl.DataFrame | None,
    search_data: dict[str, Any],
) -> dict[str, Any]:
    """Search ``name``'s hyperparameters. ``search_data`` holds the validation split and its
    training matrix once a candidate has built them (the same for every candidate of a night:
    at 10M events building them costs seconds)."""
    # scikit-optimize and matplotlib are slow to import: only nights that tune pay for them
    from recsys_core.tuning import convergence_plot, save_tuning, split_validation, tune

    if not search_data:
        days, seed = settings.train.validation_days, settings.seed
        tr, va = split_validation(train_ev, days=days, seed=seed)
        if tr.height == 0 or va.height == 0:
            tr, va = split_validation(train_ev, fraction=0.2, seed=seed)
        search_data["train"] = window.interactions(tr, settings)
        search_data["truth"] = va.select("user_id", "item_id").unique(maintain_order=True)
    result = tune(
        name,
        search_data["train"],
        search_data["truth"],
        n_calls=settings.train.calls_for(name),
        fixed_params=settings.train.params_for(name),
        seed=settings.seed,
        k=settings.k,
        metric=settings.train.metric,
        n_initial_points=settings.train.tune_initial_points,
        items=window.catalog,
        item_embeddings=embeddings,
        max_users=settings.train.tune_max_users or None,
        threads=ranking_threads(settings),
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
        "tune_max_users": settings.train.tune_max_users,
        "search_users": result.search_users,
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
def _same_recipe(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["name"] == b["name"] and a["params"] == b["params"]


def _trained_until(entry: dict[str, Any]) -> dt.date:
    """The last day of events a registered model was fit on (its run date)."""
    return dt.date.fromisoformat(str(entry["run_date"]))


def _gate_decision(
    checks: list[dict[str, Any]], fallback: Decision | None, champion_id: str
) -> tuple[Decision, str]:
    """Promote only when every check that could run promotes; the reason names each check.
    ``fallback`` (needed only when no check could run) is the decision then."""
    if not checks:
        assert fallback is not None, "no check ran: the fallback decision is needed"
        return fallback, "none"
    failed = [c for c in checks if not c["decision"].promote]
    lead = failed[0] if failed else checks[-1]
    parts = [f"{c['label']}: {c['decision'].reason}" for c in checks]
    if failed:
        reason = f"Kept the champion {champion_id}. " + " ".join(parts)
    else:
        reason = "Promoted: every check passed. " + " ".join(parts)
    d = lead["decision"]
    return (
        Decision(
            promote=not failed,
            reason=reason,
            diff=d.diff,
            low=d.low,
            high=d.high,
            challenger_score=d.challenger_score,
            champion_score=d.champion_score,
            metric=d.metric,
            tolerance=d.tolerance,
            p_worse=d.p_worse,
            n_users=d.n_users,
        ),
        lead["check"],
    )


@listing_snapshot()
def evaluate_step(settings: Settings, run_date: dt.date, challenger_id: str) -> EvaluateResult:
    """Tonight's challenger against the *serving* champion; promote or keep, and say why.

    Two checks, each run only when it compares two different things (see the module docstring
    and the README's "The champion gate"):

    * **recipe**: when the champion's recipe (model and parameters) differs from the
      challenger's, both recipes are fit on the events before tonight's holdout and scored on it;
    * **regression**: the challenger's recipe refit on exactly the window the serving artifact
      was trained on (events up to its run date), against the stored artifact itself, on the
      holdout days after that date (which neither has seen). With the same recipe and unchanged
      data the two models are the same; a refit on damaged history (a broken join, lost events)
      falls below the artifact and is refused.

    Neither side ever trains on the days it is scored on. A challenger that *is* the champion (a
    re-run of the night that trained it) is not compared with itself.
    """
    wh = Warehouse(settings.warehouse)
    maybe_fail(settings, "evaluate")
    if settings.abtest.experiment:  # a changed experiment is refused before anything moves
        from recsys_core.abtest._experiment import pin_experiment

        pin_experiment(wh, settings.abtest, run_date)
    prefetch_listings(wh.root / "clean" / "events", wh.root / "clean" / "items")
    window = load_window(settings, run_date)
    holdout_days = settings.evaluation.holdout_days
    cut = run_date - dt.timedelta(days=holdout_days - 1)
    train_ev, test_ev = temporal_split(window.events, run_date, holdout_days)
    registry = ModelRegistry(wh.models_dir)
    challenger = registry.get(challenger_id)
    champion = registry.champion()
    names = [challenger["name"]] + ([champion["name"]] if champion else [])
    embeddings = _embeddings_for(settings, names)
    metric = settings.train.metric
    gate_kw = {
        "metric": metric,
        "tolerance": settings.evaluation.tolerance,
        "samples": settings.evaluation.bootstrap_samples,
        "seed": settings.seed,
    }
    results: dict[str, Any] = {}
    gate: dict[str, Any] = {
        "holdout": [cut.isoformat(), run_date.isoformat()],
        "same_recipe": bool(champion and _same_recipe(champion, challenger)),
        "checks": [],
    }
    ch_eval = champ_eval = None

    def fit(entry: dict[str, Any], events: pl.DataFrame):
        return get_model_class(entry["name"])(entry["params"]).fit(
            window.interactions(events, settings), items=window.catalog, item_embeddings=embeddings
        )

    facts: dict[int, tuple[pl.DataFrame, TrainFacts]] = {}  # both models of a check: once

    def score(model: Any, truth_ev: pl.DataFrame, seen_ev: pl.DataFrame):
        users = sorted(set(truth_ev["user_id"].to_list()))
        recs = model.recommend(
            users,
            settings.k,
            block_size=settings.scoring.block_size,
            threads=ranking_threads(settings),
        )
        if id(seen_ev) not in facts:  # the frame is kept with its facts: its id stays its own
            facts[id(seen_ev)] = (seen_ev, TrainFacts.of(seen_ev))
        seen = facts[id(seen_ev)][1]
        return evaluate(recs, truth_ev, settings.k, train=seen, n_items=len(window.item_ids))

    memo: dict[str, Any] = {}

    def challenger_eval() -> Any:
        """The challenger fit before the holdout and scored on it, computed once and only when
        used: a same-recipe gate whose regression check runs never needs it (a warm night's
        evaluate paid a whole fit and scoring for nothing)."""
        if "ch_eval" not in memo:
            memo["ch_eval"] = score(fit(challenger, train_ev), test_ev, train_ev)
        return memo["ch_eval"]

    if champion is not None and champion["model_id"] == challenger_id:
        decision = Decision(
            promote=False,
            reason=(
                f"Kept the champion: tonight's challenger {challenger_id} IS the serving champion "
                "(a re-run of the night that trained it), so there is nothing to compare it with."
            ),
            diff=None,
            low=None,
            high=None,
            challenger_score=0.0,
            champion_score=None,
            metric=metric,
            tolerance=settings.evaluation.tolerance,
        )
        results["note"] = "challenger is the serving champion: no comparison"
    elif train_ev.height == 0 or test_ev.height == 0:
        decision = decide_promotion(None, None if champion is None else pl.DataFrame(), **gate_kw)
        results["note"] = "not enough history for a temporal holdout; no test was possible"
    else:
        if champion is None:
            ch_eval = challenger_eval()
            decision = decide_promotion(ch_eval.per_user, None, **gate_kw)
        else:
            checks = _run_checks(
                settings,
                window,
                champion,
                challenger,
                challenger_eval,
                train_ev,
                test_ev,
                cut,
                registry,
                fit,
                score,
                gate,
                gate_kw,
            )
            fallback = None
            if not checks:
                ch_eval = challenger_eval()
                fallback = Decision(
                    promote=False,
                    reason=(
                        "Kept the champion: no fair comparison was possible (the same recipe as "
                        "the serving champion, whose artifact has already seen every day of "
                        "tonight's holdout)."
                    ),
                    diff=None,
                    low=None,
                    high=None,
                    challenger_score=float(ch_eval.metrics.get(metric, 0.0)),
                    champion_score=None,
                    metric=metric,
                    tolerance=settings.evaluation.tolerance,
                )
            decision, basis = _gate_decision(checks, fallback, champion["model_id"])
            gate["basis"] = basis
            lead = next((c for c in checks if c["check"] == basis), None)
            if lead is not None:
                ch_eval, champ_eval = lead["challenger_eval"], lead["champion_eval"]
                results["comparison"] = [
                    MetricComparison(**row)
                    for row in compare_metrics(
                        ch_eval.per_user,
                        champ_eval.per_user,
                        samples=settings.evaluation.bootstrap_samples,
                        seed=settings.seed,
                    )
                ]
            gate["checks"] = [
                GateCheck(check=c["check"], label=c["label"], decision=c["decision"])
                for c in checks
            ]
    if decision.promote:  # the champion is what this compare-and-swap wrote: no second read
        champion_after = registry.promote(challenger_id, decision.reason)["model_id"]
    else:
        champion_after = registry.champion_id()
    summary = EvaluateResult(
        run_date=run_date.isoformat(),
        k=settings.k,
        metric=metric,
        challenger=challenger_id,
        champion_before=champion["model_id"] if champion else None,
        champion_entry=(
            ChampionEntry(
                model_id=champion["model_id"],
                name=champion["name"],
                params=champion["params"],
                trained_until=champion["run_date"],
            )
            if champion
            else None
        ),
        champion_after=champion_after,
        decision=decision,
        gate=GateReport(**gate),
        challenger_metrics=_holdout(ch_eval),
        champion_metrics=_holdout(champ_eval),
        note=results.get("note"),
        comparison=results.get("comparison"),
        arms=prepare_arms(settings, run_date, challenger_id)
        if settings.abtest.experiment
        else None,
    )
    atomic_write_json(wh.evaluation(run_date), summary.model_dump())
    return summary


def _holdout(ev: Any) -> HoldoutMetrics | None:
    """An :class:`~recsys_core.evaluation.EvalResult` without its per-user rows."""
    return None if ev is None else HoldoutMetrics(**jsonable(ev))


def _run_checks(
    settings: Settings,
    window: DataWindow,
    champion: dict[str, Any],
    challenger: dict[str, Any],
    challenger_eval: Any,
    train_ev: pl.DataFrame,
    test_ev: pl.DataFrame,
    cut: dt.date,
    registry: ModelRegistry,
    fit: Any,
    score: Any,
    gate: dict[str, Any],
    gate_kw: dict[str, Any],
) -> list[dict[str, Any]]:
    """The recipe check and the regression check, each when it compares two different things."""
    checks: list[dict[str, Any]] = []
    recipe = f"{champion['name']} {_params_text(champion['params'])}"
    if gate["same_recipe"]:
        gate["recipe_note"] = (
            f"Same recipe as the serving champion ({recipe}): fitting both on the same window "
            "would compare a model with itself, so the gate is a regression check of tonight's "
            "refit against the serving artifact."
        )
    else:
        ch_eval = challenger_eval()  # first, as before: the same fit order
        champ_eval = score(fit(champion, train_ev), test_ev, train_ev)
        checks.append(
            {
                "check": "recipe",
                "label": "Recipe check (both fit before the holdout, scored on it)",
                "decision": decide_promotion(ch_eval.per_user, champ_eval.per_user, **gate_kw),
                "challenger_eval": ch_eval,
                "champion_eval": champ_eval,
            }
        )
    trained_until = _trained_until(champion)
    first_unseen = max(cut, trained_until + dt.timedelta(days=1))
    gate["champion_trained_until"] = trained_until.isoformat()
    if first_unseen > window.run_date:
        gate["regression_note"] = (
            f"No regression check: the serving artifact {champion['model_id']} was trained on "
            f"events up to {trained_until}, which covers every day of tonight's holdout."
        )
        return checks
    day = event_day(window.events)
    seen = window.events.filter(day <= trained_until)
    unseen_truth = test_ev.filter(event_day(test_ev) >= first_unseen)
    if unseen_truth.height == 0 or seen.height == 0:
        gate["regression_note"] = f"No regression check: no events from {first_unseen} on."
        return checks
    try:
        artifact = registry.load_model(champion["model_id"], entry=champion)
    except Exception as exc:  # an artifact that cannot be loaded cannot serve either: say so
        gate["regression_note"] = f"No regression check: the artifact did not load ({exc})."
        return checks
    # a pair either model has already seen is no test of it (each excludes its own history)
    seen_pairs = pl.concat(
        [
            seen.select("user_id", "item_id"),
            artifact.interactions_.to_frame().select("user_id", "item_id"),
        ]
    )
    art_eval = score(artifact, unseen_truth, seen_pairs)
    refit_eval = score(fit(challenger, seen), unseen_truth, seen_pairs)
    gate["regression_days"] = [first_unseen.isoformat(), window.run_date.isoformat()]
    checks.append(
        {
            "check": "regression",
            "label": (
                f"Regression check (tonight's {challenger['name']} refit on events up to "
                f"{trained_until}, the serving artifact's own window, against the artifact, on "
                f"{first_unseen}..{window.run_date})"
            ),
            "decision": decide_promotion(refit_eval.per_user, art_eval.per_user, **gate_kw),
            "challenger_eval": refit_eval,
            "champion_eval": art_eval,
        }
    )
    return checks


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "default parameters"


# ---- A/B arms -------------------------------------------------------------------------------------
def prepare_arms(settings: Settings, run_date: dt.date, challenger_id: str) -> ArmsPlan:
    """Resolve each arm to a registered model for tonight and write ``abtest/<exp>/arms/``.

    ``champion`` is the champion after tonight's gate, ``challenger`` tonight's challenger, and a
    model name is that model refit tonight on every event up to ``run_date`` (with its stored
    tuned parameters when it was tuned, else its defaults) and registered. The experiment's
    definition is pinned on its first night; a changed arm is refused.
    """
    from recsys_core.abtest._experiment import pin_experiment, salt_of

    cfg = settings.abtest
    wh = Warehouse(settings.warehouse)
    pin_experiment(wh, cfg, run_date)
    registry = ModelRegistry(wh.models_dir)
    champion = registry.champion()
    resolved: dict[str, ArmModel] = {}
    window: DataWindow | None = None
    for arm, spec in cfg.arms.items():
        if spec == "challenger":
            model_id = challenger_id
        elif spec == "champion":
            if champion is None:
                raise RuntimeError(f"abtest arm {arm!r} serves the champion, but there is none")
            model_id = champion["model_id"]
        else:
            window = window or load_window(settings, run_date)
            model_id = _fit_arm_model(settings, window, spec, run_date, registry)
        resolved[arm] = ArmModel(model=spec, model_id=model_id)
    plan = ArmsPlan(
        experiment=str(cfg.experiment),
        run_date=run_date.isoformat(),
        arms=resolved,
        shares=cfg.arm_shares(),
        salt=salt_of(cfg),
    )
    atomic_write_json(wh.abtest_arms(str(cfg.experiment), run_date), plan.model_dump())
    return plan


def _fit_arm_model(
    settings: Settings, window: DataWindow, name: str, run_date: dt.date, registry: ModelRegistry
) -> str:
    path = _tuning_state(settings, name)
    params = dict(read_json(path)["best_params"]) if exists(path) else {}
    params = {**params, **settings.train.params_for(name)}
    embeddings = _embeddings_for(settings, [name])
    model = get_model_class(name)(params).fit(
        window.interactions(window.events, settings),
        items=window.catalog,
        item_embeddings=embeddings,
    )
    model_id = make_model_id(name, run_date, params)
    registry.register(
        model,
        model_id=model_id,
        name=name,
        params=params,
        data_window=window.describe(),
        metrics={},
        code_version=code_version(),
        embedding_model_id=_embedding_model_id(embeddings),
        run_date=run_date,
    )
    return model_id
