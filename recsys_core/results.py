"""What each pipeline step returns: small frozen models, never ``dict[str, Any]``.

The steps (:mod:`recsys_core.pipeline`, :func:`recsys_core.abtest.readout_step`) return them, the
Prefect tasks pass them along, and the report, the digests, the artifacts, the run marker and the
command line read them by attribute, so nothing can read a key that no step wrote.

:class:`RunSummary` is the night as a whole: :func:`~recsys_core.pipeline.finalize_step` writes it
as the run marker ``runs/run_date=D.json`` (written last: the date is complete), and every later
night reads earlier ones back through :func:`recsys_core.reporting.run_history`.

``model_dump()`` gives the JSON stored on disk. A field listed in a model's ``omit_none`` is left
out of it while it is None (an optional part, present only when the step produced it).
Dates are ISO strings, as they are stored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

__all__ = [
    "AbtestResult",
    "ArmComparison",
    "ArmModel",
    "ArmReadout",
    "ArmsPlan",
    "ChampionEntry",
    "CleanCounts",
    "CleanResult",
    "Decision",
    "DriftSignal",
    "EmbedResult",
    "EvaluateResult",
    "GateCheck",
    "GateReport",
    "HoldoutMetrics",
    "IngestStepResult",
    "MetricComparison",
    "NightMetrics",
    "RecommendationStats",
    "Result",
    "RunSteps",
    "RunSummary",
    "ScoreResult",
    "ServingModel",
    "ShardResult",
    "Skipped",
    "SqlAssignments",
    "SqlResult",
    "TrainResult",
    "TuningCandidate",
]


class Result(BaseModel):
    """Base of every result: frozen, unknown keys refused, optional parts left out while None."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    omit_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _leave_out_unset_parts(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for name in self.omit_none:
            if data.get(name) is None:
                data.pop(name, None)
        return data


class Skipped(Result):
    """A step that had nothing to do, and why (``{"skipped": why}`` on disk)."""

    skipped: str


# ---- ingest, clean, embed ------------------------------------------------------------------------
class IngestStepResult(Result):
    """What the ingest step did: :class:`recsys_core.ingest.IngestResult`'s fields (landing dates
    written per kind, rows, files read, unchanged partitions skipped, dropped-column notes, late
    files and their dates, unrecognised and vanished landing paths), plus the temporaries swept and
    whether the date's completion marker was withdrawn."""

    dates: dict[str, list[str]]
    rows: dict[str, int]
    files: int
    skipped: dict[str, int]
    notes: list[str]
    late: list[str]
    late_dates: dict[str, list[str]]
    unrecognised: list[str]
    vanished: list[str]
    swept_temporaries: int
    completion_marker_withdrawn: bool


class CleanCounts(Result):
    """Event rows: ``ingested = clean + duplicates + quarantined``."""

    ingested: int
    clean: int
    duplicates: int
    quarantined: int


class CleanResult(Result):
    """The dates cleaned now (in order), the later dates re-cleaned because of them, the event
    counts over all of them, and ``run_date``'s own manifest (the file's content)."""

    dates_cleaned: list[str]
    followers: list[str]
    events: CleanCounts
    run_date_manifest: dict[str, Any] | None


class EmbedResult(Result):
    """What the embed step did (:class:`recsys_core.embeddings.EmbedSummary`'s fields), or
    ``skipped`` with why (then only ``n_items`` may be set)."""

    omit_none: ClassVar[frozenset[str]] = frozenset(
        {
            "skipped",
            "model_id",
            "n_items",
            "n_embedded",
            "n_reused",
            "n_empty",
            "n_truncated",
            "seconds",
            "path",
            "n_kept_absent",
            "n_dropped",
            "written",
            "text_stats",
        }
    )
    skipped: str | None = None
    model_id: str | None = None
    n_items: int | None = None
    n_embedded: int | None = None
    n_reused: int | None = None
    n_empty: int | None = None
    n_truncated: int | None = None
    seconds: float | None = None
    path: str | None = None
    n_kept_absent: int | None = None
    n_dropped: int | None = None
    written: bool | None = None
    text_stats: dict[str, int] | None = None


# ---- train, evaluate -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """Outcome of the champion gate (:func:`recsys_core.evaluation.decide_promotion`);
    ``diff``/``low``/``high`` are of ``challenger - champion``."""

    promote: bool
    reason: str
    diff: float | None
    low: float | None
    high: float | None
    challenger_score: float
    champion_score: float | None
    metric: str = "ndcg"
    tolerance: float = 0.0
    p_worse: float | None = None
    n_users: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TuningCandidate(Result):
    """One candidate model's hyperparameter search (run tonight or reused)."""

    model: str
    validation_score: float
    tuned_on: str
    reused: bool
    convergence_png: str | None
    trials_path: str | None


class TrainResult(Result):
    """Tonight's challenger: its id, model, parameters, fit time, the item vocabulary's size
    (coverage's denominator: catalog items and items with events as of the run date), and every
    candidate's validation score."""

    challenger: str
    model: str
    params: dict[str, Any]
    fit_seconds: float
    n_items: int
    candidates: list[TuningCandidate]


class HoldoutMetrics(Result):
    """:meth:`recsys_core.evaluation.EvalResult.to_dict`: a model scored on the holdout."""

    k: int
    n_users: int
    metrics: dict[str, float]
    coverage: float | None
    novelty: float | None
    arp: float | None
    segments: dict[str, dict[str, Any]]


class MetricComparison(Result):
    """One row of :func:`recsys_core.evaluation.compare_metrics` (champion parts None without one)."""

    metric: str
    challenger: float
    champion: float | None
    diff: float | None
    low: float | None
    high: float | None
    p_worse: float | None


class ChampionEntry(Result):
    """The serving champion before tonight's gate, and the last day it was trained on."""

    model_id: str
    name: str
    params: dict[str, Any]
    trained_until: str


class GateCheck(Result):
    """One check of the champion gate (``recipe`` or ``regression``) and its decision."""

    check: str
    label: str
    decision: Decision


class GateReport(Result):
    """What the champion gate compared: the holdout, each check that ran and, in words, each that
    could not."""

    omit_none: ClassVar[frozenset[str]] = frozenset(
        {"basis", "recipe_note", "regression_note", "champion_trained_until", "regression_days"}
    )
    holdout: tuple[str, str]
    same_recipe: bool
    checks: list[GateCheck]
    recipe_note: str | None = None
    champion_trained_until: str | None = None
    regression_note: str | None = None
    regression_days: tuple[str, str] | None = None
    basis: str | None = None


class ArmModel(Result):
    """An A/B arm's model: the arm's spec (``champion``, ``challenger`` or a model name) and the
    registered model that serves it tonight."""

    model: str
    model_id: str


class ArmsPlan(Result):
    """Tonight's arms (``abtest/<experiment>/arms/run_date=D.json``)."""

    experiment: str
    run_date: str
    arms: dict[str, ArmModel]
    shares: dict[str, float]
    salt: str


class EvaluateResult(Result):
    """Tonight's gate (``evaluation/run_date=D/metrics.json``): the challenger against the serving
    champion, the decision and why, both models' holdout metrics, the paired comparison when a
    check ran, a ``note`` when no test was possible, and tonight's A/B arms when an experiment
    runs."""

    omit_none: ClassVar[frozenset[str]] = frozenset({"note", "comparison", "arms"})
    run_date: str
    k: int
    metric: str
    challenger: str
    champion_before: str | None
    champion_entry: ChampionEntry | None
    champion_after: str | None
    decision: Decision
    gate: GateReport
    challenger_metrics: HoldoutMetrics | None
    champion_metrics: HoldoutMetrics | None
    note: str | None = None
    comparison: list[MetricComparison] | None = None
    arms: ArmsPlan | None = None


# ---- score, SQL ----------------------------------------------------------------------------------
class ShardResult(Result):
    """One scored shard's staging file (with an experiment: its assignments and arm models)."""

    omit_none: ClassVar[frozenset[str]] = frozenset({"assignments_path", "arms"})
    shard: int
    users: int
    rows: int
    path: str
    assignments_path: str | None = None
    model_id: str
    arms: dict[str, str] | None = None


class ScoreResult(Result):
    """The run date's recommendations partition (with an experiment: the arms and assignments)."""

    omit_none: ClassVar[frozenset[str]] = frozenset(
        {"experiment", "arms", "assigned_users", "assignments"}
    )
    path: str
    rows: int
    users: int
    items: int
    model_id: str
    experiment: str | None = None
    arms: dict[str, str] | None = None
    assigned_users: dict[str, int] | None = None
    assignments: str | None = None


class SqlAssignments(Result):
    """The night's A/B assignments written to the serving database."""

    rows: int
    table: str
    experiments: list[str]


class SqlResult(Result):
    """The partition loaded into the serving database (and the assignments, with an experiment);
    ``url`` has the password hidden."""

    omit_none: ClassVar[frozenset[str]] = frozenset({"assignments"})
    rows: int
    seconds: float
    rows_per_second: float
    dialect: str
    run_date: str
    url: str
    assignments: SqlAssignments | None = None


# ---- A/B read-out --------------------------------------------------------------------------------
class ArmReadout(Result):
    """One arm in the read-out: users assigned, exposed users with feedback, hits, the hit rate
    and its Wilson interval (None before any feedback)."""

    name: str
    model: str
    share: float
    assigned_users: int
    users: int
    users_with_hit: int
    hit_rate: float | None
    ci: tuple[float, float] | None


class ArmComparison(Result):
    """An arm against the first arm: difference in hit rate, its interval and p-value."""

    arms: str
    difference: float
    ci: tuple[float, float]
    p_value: float


class NightMetrics(Result):
    """One (night, arm) row of ``abtest/<experiment>/nights.parquet``."""

    run_date: str
    arm: str
    exposed_users: int
    users_with_hit: int
    hits_per_user: float | None
    clicks_per_user: float | None
    purchases_per_user: float | None
    feedback_days: int | None
    hit_rate: float | None
    items_recommended: int | None
    coverage: float | None
    hit_rate_low: float | None
    hit_rate_high: float | None


class AbtestResult(Result):
    """The experiment's read-out as of the run date (``abtest/<experiment>/readout.json`` plus
    ``path``, where it was written)."""

    experiment: str
    as_of: str
    metric: str
    unit: str
    confidence: float
    arms: list[ArmReadout]
    comparison: str
    difference: float | None
    ci: tuple[float, float] | None
    p_value: float | None
    srm_p_value: float
    srm: bool
    nights_with_feedback: int
    first_night: str | None
    last_night: str | None
    alpha: float
    srm_alpha: float
    min_users: int
    comparisons: list[ArmComparison]
    winner: str | None
    decision: str
    reason: str
    attribution_days: int
    hit_events: list[str]
    nights: list[NightMetrics]
    promoted: str | None
    path: str


# ---- the night -----------------------------------------------------------------------------------
class ServingModel(Result):
    """A model behind tonight's recommendations (name and parameters None if not registered)."""

    model_id: str
    name: str | None
    params: dict[str, Any] | None


class RecommendationStats(Result):
    """:func:`recsys_core.reporting.recommendation_stats` of tonight's partition (coverage over
    the whole item vocabulary) and the models that served it: the next night's drift baseline."""

    n_users: int
    n_rows: int
    n_items_recommended: int
    coverage: float
    score_mean: float | None
    score_p50: float | None
    score_p90: float | None
    models: list[ServingModel]


class DriftSignal(Result):
    """One row of :func:`recsys_core.reporting.drift_signals`."""

    omit_none: ClassVar[frozenset[str]] = frozenset({"cause"})
    name: str
    value: float
    previous: float | None
    change: float | None
    flagged: bool
    rule: str
    cause: str | None = None


class RunSteps(Result):
    """Every step's result for one night (``sql`` and ``abtest`` only when configured)."""

    omit_none: ClassVar[frozenset[str]] = frozenset({"embed", "sql", "abtest"})
    ingest: IngestStepResult
    clean: CleanResult
    embed: EmbedResult | None = None
    train: TrainResult
    evaluate: EvaluateResult
    score: ScoreResult
    sql: SqlResult | Skipped | None = None
    abtest: AbtestResult | Skipped | None = None


class RunSummary(Result):
    """The night: the run marker ``runs/run_date=D.json``, the report's and the digests' input,
    and what the flow returns. ``settings`` is the run's configuration (database password
    hidden); ``report`` is the HTML report's path (None only while it is being written)."""

    omit_none: ClassVar[frozenset[str]] = frozenset({"report"})
    run_date: str
    code_version: str
    settings: dict[str, Any]
    steps: RunSteps
    recommendation_stats: RecommendationStats
    drift: list[DriftSignal]
    report: str | None = None

    @property
    def decision(self) -> Decision:
        return self.steps.evaluate.decision
