"""Published-protocol experiments: given explicit train/test files, tune, refit, recommend, score.

:func:`run_experiment` is what ``recsys experiment`` runs (and what ``benchmarks/bench_ml100k.py``
calls); :class:`ExperimentConfig` holds its settings. For every candidate model:

1. a validation split is carved from the **train file only** (``validation``, seeded; the test
   file is read after all tuning is done and is used only to score the final recommendations):

   * ``per-user`` (default): each user's (user, item) pairs, ``valid_fraction`` of them held out;
   * ``per-item``: the same per item (use it when the test split is stratified by item, as in the
     Microsoft Recommenders MovieLens benchmark, so that validation mirrors the test protocol);
   * ``temporal``: one global cut in time, the newest ``valid_fraction`` of the events validate
     (needs a ``timestamp`` column; use it when the test split is a later period);

2. the hyperparameters are searched (:func:`recsys_core.tuning.tune`) on that split;
3. the model is refit on the whole train file with the best parameters (timed);
4. it recommends top-``k`` for every test user, training items excluded, and is scored on the test
   pairs (precision, recall, ndcg, map, ... at ``k``; a test user unknown to train scores 0).

The best model is chosen by **validation** score, never by test score
(:func:`recsys_core.tuning.pick_best`). ``metrics.json`` says how clear that choice is: the
winner and the runner-up are compared user by user on the validation split (paired bootstrap,
95%); when that interval includes zero, ``selection.within_noise`` is true and the pick is a
coin toss between the two, not a win. Every rating in the files is an implicit positive (weight 1
per row; ``value`` is not used as a weight); a ``timestamp`` column (Unix seconds) lets
time-decayed popularity tune its half-life and EASE its session-aware co-occurrence. Ids are read
as strings.

Outputs in ``out_dir``: ``recommendations.parquet`` (best model), ``recommendations_<model>.parquet``
(each model), ``metrics.json``, and ``tuning/<model>/{trials.parquet,best.json,convergence.png}``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recsys_core.evaluation import align_per_user, paired_bootstrap
from recsys_core.interactions import Interactions
from recsys_core.io import atomic_write_json, atomic_write_parquet
from recsys_core.metrics import METRIC_NAMES, mean_metrics, ranking_metrics
from recsys_core.models import get_model_class
from recsys_core.registry import make_model_id
from recsys_core.tuning import (
    TuningResult,
    convergence_plot,
    pick_best,
    save_tuning,
    split_validation,
    tune,
    validation_per_user,
)

__all__ = [
    "VALIDATIONS",
    "ExperimentConfig",
    "Validation",
    "parse_tune_calls",
    "read_interaction_file",
    "run_experiment",
    "tuning_split",
]

REPORTED = ("precision", "recall", "ndcg", "map", "hit", "mrr")

#: How the validation split is carved from the train file (see the module docstring).
Validation = Literal["per-user", "per-item", "temporal"]
VALIDATIONS: tuple[str, ...] = ("per-user", "per-item", "temporal")

#: Resamples and confidence of the paired bootstrap that says whether the pick is within noise.
SELECTION_SAMPLES = 2000
SELECTION_CONFIDENCE = 0.95


class ExperimentConfig(BaseModel):
    """Settings of one experiment (the ``recsys experiment`` flags; recorded in ``metrics.json``)."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(
        default=["popularity", "itemknn", "ease", "rp3beta", "als"],
        min_length=1,
        description="Candidate models (registered names), in order: ties go to the first.",
    )
    k: int = Field(default=10, ge=1, description="Recommendations per user; metrics at k.")
    tune_calls: int | dict[str, int] = Field(
        default=20,
        description="Search budget: one for every model, or {model: calls} covering every model.",
    )
    seed: int = Field(default=42, description="Seeds the validation split, searches and models.")
    metric: str = Field(default="ndcg", description="Validation metric the search maximises.")
    validation: Validation = Field(
        default="per-user", description="per-user, per-item or temporal holdout of train."
    )
    valid_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Share held out for validation."
    )
    n_initial_points: int = Field(default=5, ge=1, description="Random points before the GP.")

    @field_validator("models")
    @classmethod
    def _known_models(cls, models: list[str]) -> list[str]:
        for name in models:
            get_model_class(name)  # unknown names fail before any work
        if len(set(models)) != len(models):
            raise ValueError(f"models are listed twice: {models}")
        return models

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        if metric not in METRIC_NAMES:
            raise ValueError(f"unknown metric {metric!r}; expected one of {list(METRIC_NAMES)}")
        return metric

    @model_validator(mode="after")
    def _budgets_cover_models(self) -> ExperimentConfig:
        if isinstance(self.tune_calls, dict):
            for name in self.tune_calls:
                get_model_class(name)
            missing = [name for name in self.models if name not in self.tune_calls]
            if missing:
                raise ValueError(f"tune_calls has no budget for {missing}")
        return self

    def budgets(self) -> dict[str, int]:
        """``{model: calls}`` for every candidate."""
        if isinstance(self.tune_calls, dict):
            return {name: int(self.tune_calls[name]) for name in self.models}
        return dict.fromkeys(self.models, int(self.tune_calls))


def parse_tune_calls(text: str, models: Sequence[str]) -> int | dict[str, int]:
    """The ``--tune-calls`` flag: ``"20"`` -> 20 for every model; ``"20,ease=30"`` -> 30 for EASE
    and 20 for the other ``models``; ``"ease=30,als=12"`` -> exactly those budgets."""
    named: dict[str, int] = {}
    default: int | None = None
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        try:
            calls = int(value if sep else name)
        except ValueError:
            raise ValueError(
                f"--tune-calls {text!r}: {part!r} is not a number or model=number "
                "(expected e.g. 20 or 20,ease=30)"
            ) from None
        if sep:
            named[name.strip()] = calls
        else:
            default = calls
    if not named:
        if default is None:
            raise ValueError(f"--tune-calls {text!r}: expected a number or model=number")
        return default
    if default is None:
        return named
    return {**dict.fromkeys(models, default), **named}


def _read_table(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pl.read_parquet(path)
    if suffix in (".csv", ".tsv", ".txt"):
        return pl.read_csv(
            path,
            separator="\t" if suffix == ".tsv" else ",",
            schema_overrides={"user_id": pl.String, "item_id": pl.String},
            infer_schema_length=10000,
        )
    raise ValueError(f"{path}: unsupported file type {suffix!r}; expected .csv, .tsv or .parquet")


def read_interaction_file(path: Path | str) -> pl.DataFrame:
    """``user_id, item_id`` (strings, exactly as written) [+ ``value``, ``timestamp``] of a file."""
    path = Path(path)
    df = _read_table(path)
    missing = [c for c in ("user_id", "item_id") if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; found {df.columns}, expected "
            "user_id,item_id[,value,timestamp]"
        )
    keep = [c for c in ("user_id", "item_id", "value", "timestamp") if c in df.columns]
    df = df.select(keep).with_columns(pl.col("user_id", "item_id").cast(pl.String))
    for col in ("user_id", "item_id"):
        nulls = df[col].is_null() | (df[col].str.len_chars() == 0)
        if nulls.any():
            row = int(nulls.arg_true()[0]) + 1
            raise ValueError(f"{path} data row {row}: column {col!r} is empty, expected an id")
    return df


def _read_embeddings(
    items_path: Path, embedder: Callable[[pl.DataFrame], pl.DataFrame] | None
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """The catalog (``item_id`` + whatever else) and its item embeddings (or None)."""
    items = _read_table(items_path)
    if "item_id" not in items.columns:
        raise ValueError(f"{items_path}: no 'item_id' column; found {items.columns}")
    items = items.with_columns(pl.col("item_id").cast(pl.String))
    if "vector" in items.columns:
        return items, items.select("item_id", "vector")
    if embedder is None:
        return items, None
    return items, embedder(items)


def tuning_split(
    train_df: pl.DataFrame,
    vocab: Sequence[str],
    *,
    validation: Validation,
    fraction: float,
    seed: int,
) -> tuple[Interactions, pl.DataFrame, Interactions]:
    """``(tuning train, validation pairs, all of train)`` of a train file, over the item ``vocab``.

    The validation pairs (``user_id, item_id``) are carved from ``train_df`` only by the
    ``validation`` protocol of the module docstring (:func:`recsys_core.tuning.split_validation`);
    timestamps are kept when the file has them.
    """
    if validation == "temporal":
        tr, va = split_validation(train_df, latest=fraction, seed=seed)
    elif validation in ("per-user", "per-item"):
        stratify = "user" if validation == "per-user" else "item"
        tr, va = split_validation(train_df, fraction=fraction, seed=seed, stratify=stratify)
    else:
        raise ValueError(f"unknown validation {validation!r}; expected one of {list(VALIDATIONS)}")
    cols = [c for c in ("user_id", "item_id", "timestamp") if c in train_df.columns]
    return (
        Interactions.from_frame(tr.select(cols), item_ids=vocab),
        va.select("user_id", "item_id"),
        Interactions.from_frame(train_df.select(cols), item_ids=vocab),
    )


def _describe_validation(cfg: ExperimentConfig) -> str:
    share = f"{cfg.valid_fraction:g}"
    if cfg.validation == "temporal":
        return f"temporal holdout: the newest {share} of the train events (one global time cut)"
    return f"random {cfg.validation} holdout of {share} of train's pairs (seed {cfg.seed})"


def run_experiment(
    train_path: Path | str,
    test_path: Path | str,
    out_dir: Path | str,
    config: ExperimentConfig | None = None,
    *,
    items_path: Path | str | None = None,
    embedder: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Run the protocol of the module docstring; return (and write) the ``metrics.json`` content.

    Settings are ``config`` (default :class:`ExperimentConfig`) with ``overrides`` (its field
    names, e.g. ``models=["ease"], validation="per-item"``) applied on top, validated together.
    ``items_path`` (optional) is the catalog: its item ids join the vocabulary (so items with no
    training interaction can be recommended by content models), and its ``vector`` column, if any,
    gives the item embeddings; otherwise ``embedder(items)`` (``item_id, vector``) is called when
    given.
    """
    cfg = ExperimentConfig(**{**(config.model_dump() if config else {}), **overrides})
    models, k, metric, seed = cfg.models, cfg.k, cfg.metric, cfg.seed
    budgets = cfg.budgets()
    threads = os.cpu_count() or 1  # users ranked in blocks on every core: the same rankings
    started = time.perf_counter()
    out_dir = Path(out_dir)
    train_df = read_interaction_file(train_path)
    if train_df.height == 0:
        raise ValueError(f"{train_path}: no interactions")
    if cfg.validation == "temporal" and "timestamp" not in train_df.columns:
        raise ValueError(
            f"{train_path}: validation 'temporal' needs a 'timestamp' column (Unix seconds); "
            f"found {train_df.columns}. Use per-user or per-item validation instead"
        )
    items, embeddings = (None, None)
    if items_path is not None:
        items, embeddings = _read_embeddings(Path(items_path), embedder)
    catalog = set(train_df["item_id"].unique().to_list())
    if items is not None:
        catalog |= set(items["item_id"].to_list())
    vocab = sorted(catalog)

    # ---- tuning on a split of the train file only ---------------------------------------------
    tune_train, valid, full_train = tuning_split(
        train_df, vocab, validation=cfg.validation, fraction=cfg.valid_fraction, seed=seed
    )
    results: dict[str, TuningResult] = {}
    for name in models:
        result = tune(
            name,
            tune_train,
            valid,
            n_calls=budgets[name],
            seed=seed,
            k=k,
            metric=metric,
            n_initial_points=cfg.n_initial_points,
            items=items,
            item_embeddings=embeddings,
            threads=threads,
        )
        tdir = out_dir / "tuning" / name
        save_tuning(result, tdir)
        convergence_plot(result, tdir / "convergence.png")
        results[name] = result
    best = pick_best({name: results[name].best_score for name in models})
    selection = _selection(results, best, tune_train, valid, cfg, items, embeddings, threads)

    # ---- refit on all of train, recommend, then (only now) read the test file ----------------
    fitted: dict[str, tuple[pl.DataFrame, float, str]] = {}
    test_df = read_interaction_file(test_path)
    test_users = test_df["user_id"].unique(maintain_order=True).sort().to_list()
    for name in models:
        params = results[name].best_params
        t0 = time.perf_counter()
        model = get_model_class(name)(params).fit(
            full_train, items=items, item_embeddings=embeddings
        )
        fit_seconds = time.perf_counter() - t0
        model_id = make_model_id(name, None, params)
        recs = model.recommend(test_users, k, exclude_seen=True, threads=threads).with_columns(
            pl.lit(model_id).alias("model_id")
        )
        atomic_write_parquet(recs, out_dir / f"recommendations_{name}.parquet")
        fitted[name] = (recs, fit_seconds, model_id)

    truth = test_df.select("user_id", "item_id").unique(maintain_order=True)
    seen = full_train.to_frame().select("user_id", "item_id")
    report: dict[str, Any] = {
        "k": k,
        "seed": seed,
        "metric": metric,
        "config": cfg.model_dump(mode="json"),
        "protocol": {
            "train": str(train_path),
            "test": str(test_path),
            "validation": _describe_validation(cfg),
            "n_validation_pairs": valid.height,
            "tune_calls": budgets,
            "exclude_train_items": True,
            "n_train_interactions": train_df.height,
            "n_test_pairs": truth.height,
            "n_test_users": len(test_users),
            "n_test_users_unknown_to_train": len(set(test_users) - set(full_train.user_ids)),
            "n_test_pairs_already_in_train": truth.join(
                seen, on=["user_id", "item_id"], how="semi"
            ).height,
            "n_items": len(vocab),
        },
        "models": {},
    }
    for name in models:
        recs, fit_seconds, model_id = fitted[name]
        test_metrics = mean_metrics(ranking_metrics(recs, truth, k))
        res = results[name]
        report["models"][name] = {
            "model_id": model_id,
            "params": res.best_params,
            "validation": {metric: res.best_score},
            "test": {m: test_metrics[m] for m in REPORTED},
            "fit_seconds": round(fit_seconds, 3),
            "tune_seconds": round(res.seconds, 3),
            "n_trials": res.trials.height,
        }
    report["best_model"] = best
    report["best_by"] = f"validation {metric}@{k}"
    report["selection"] = selection
    report["seconds"] = round(time.perf_counter() - started, 3)
    atomic_write_parquet(fitted[best][0], out_dir / "recommendations.parquet")
    atomic_write_json(out_dir / "metrics.json", report)
    return report


def _selection(
    results: dict[str, TuningResult],
    winner: str,
    tune_train: Interactions,
    valid: pl.DataFrame,
    cfg: ExperimentConfig,
    items: pl.DataFrame | None,
    embeddings: pl.DataFrame | None,
    threads: int,
) -> dict[str, Any]:
    """How clear the pick is: winner minus runner-up on validation, paired over users.

    Both are refit on the tuning train with their best parameters and scored user by user on the
    validation pairs they were chosen on; the 95% paired-bootstrap interval of the mean
    difference decides ``within_noise`` (the interval includes zero).
    """
    metric = cfg.metric
    rest = {n: r.best_score for n, r in results.items() if n != winner}
    out: dict[str, Any] = {
        "by": f"validation {metric}@{cfg.k}",
        "winner": winner,
        "winner_score": results[winner].best_score,
        "runner_up": None,
        "runner_up_score": None,
        "difference": None,
        "ci": None,
        "confidence": SELECTION_CONFIDENCE,
        "n_users": 0,
        "within_noise": False,
    }
    if not rest:
        out["note"] = "one candidate: nothing to compare"
        return out
    runner_up = pick_best(rest)

    def per_user(name: str) -> pl.DataFrame:
        return validation_per_user(
            name,
            results[name].best_params,
            tune_train,
            valid,
            k=cfg.k,
            items=items,
            item_embeddings=embeddings,
            threads=threads,
        )

    _, a, b = align_per_user(per_user(runner_up), per_user(winner), metric)
    boot = paired_bootstrap(
        a, b, samples=SELECTION_SAMPLES, seed=cfg.seed, confidence=SELECTION_CONFIDENCE
    )
    within = boot.n == 0 or boot.low <= 0.0 <= boot.high
    out.update(
        runner_up=runner_up,
        runner_up_score=results[runner_up].best_score,
        difference=boot.diff,
        ci=[boot.low, boot.high],
        n_users=boot.n,
        within_noise=within,
        method=f"paired bootstrap over validation users ({SELECTION_SAMPLES} resamples, "
        f"seed {cfg.seed})",
    )
    out["note"] = (
        f"{winner} and {runner_up} are within validation noise: the "
        f"{SELECTION_CONFIDENCE:.0%} interval of their paired difference includes 0; the pick "
        "is not a clear win"
        if within
        else f"{winner} is ahead of {runner_up} beyond validation noise"
    )
    return out
