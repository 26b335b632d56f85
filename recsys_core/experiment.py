"""Published-protocol experiments: given explicit train/test files, tune, refit, recommend, score.

:func:`run_experiment` is what ``recsys experiment`` runs. For every candidate model:

1. a validation split is carved from the **train file only** (random per-user holdout, or per-item
   with ``valid_stratify="item"``; ``valid_fraction``, seeded) — the test file is read after all tuning is done and is used only to
   score the final recommendations;
2. the hyperparameters are searched (:func:`recsys_core.tuning.tune`) on that split;
3. the model is refit on the whole train file with the best parameters (timed);
4. it recommends top-``k`` for every test user, training items excluded, and is scored on the test
   pairs (precision, recall, ndcg, map, ... at ``k``; a test user unknown to train scores 0).

The best model is chosen by **validation** score, never by test score. Every rating in the files is
an implicit positive (weight 1 per row; ``value`` is not used as a weight); a ``timestamp`` column
(Unix seconds) lets time-decayed popularity tune its half-life and EASE its session-aware
co-occurrence. Ids are read as strings.

Outputs in ``out_dir``: ``recommendations.parquet`` (best model), ``recommendations_<model>.parquet``
(each model), ``metrics.json``, and ``tuning/<model>/{trials.parquet,best.json,convergence.png}``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import polars as pl

from recsys_core.interactions import Interactions
from recsys_core.io import atomic_write_json, atomic_write_parquet
from recsys_core.metrics import mean_metrics, ranking_metrics
from recsys_core.models import get_model_class
from recsys_core.tuning import convergence_plot, save_tuning, split_validation, tune

__all__ = ["read_interaction_file", "run_experiment", "tuning_split"]

REPORTED = ("precision", "recall", "ndcg", "map", "hit", "mrr")


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


def _model_id(name: str, params: dict[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    return f"{name}-{digest}"


def tuning_split(
    train_df: pl.DataFrame,
    vocab: Sequence[str],
    *,
    fraction: float,
    seed: int,
    stratify: Literal["user", "item"],
) -> tuple[Interactions, pl.DataFrame, Interactions]:
    """``(tuning train, validation pairs, all of train)`` of a train file, over the item ``vocab``.

    The validation pairs (``user_id, item_id``) are carved from ``train_df`` only
    (:func:`recsys_core.tuning.split_validation`); timestamps are kept when the file has them.
    """
    cols = [c for c in ("user_id", "item_id", "timestamp") if c in train_df.columns]
    tr, va = split_validation(train_df, fraction=fraction, seed=seed, stratify=stratify)
    return (
        Interactions.from_frame(tr.select(cols), item_ids=vocab),
        va.select("user_id", "item_id"),
        Interactions.from_frame(train_df.select(cols), item_ids=vocab),
    )


def run_experiment(
    train_path: Path | str,
    test_path: Path | str,
    out_dir: Path | str,
    *,
    items_path: Path | str | None = None,
    models: Sequence[str],
    k: int = 10,
    tune_calls: int | Mapping[str, int],
    seed: int,
    metric: str = "ndcg",
    valid_fraction: float = 0.2,
    valid_stratify: Literal["user", "item"] = "user",
    n_initial_points: int = 5,
    embedder: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
) -> dict[str, Any]:
    """Run the protocol of the module docstring; return (and write) the ``metrics.json`` content.

    ``items_path`` (optional) is the catalog: its item ids join the vocabulary (so items with no
    training interaction can be recommended by content models), and its ``vector`` column, if any,
    gives the item embeddings; otherwise ``embedder(items)`` (``item_id, vector``) is called when
    given. ``tune_calls`` is one budget for every model or a ``{model: calls}`` mapping.
    ``valid_stratify="item"`` holds validation out per item instead of per user: use it when the
    test split is stratified by item, so that validation mirrors the test protocol.
    """
    if not models:
        raise ValueError("run_experiment: no models given")
    for name in models:
        get_model_class(name)  # unknown names fail before any work
    if isinstance(tune_calls, Mapping):
        missing = [name for name in models if name not in tune_calls]
        if missing:
            raise ValueError(f"run_experiment: tune_calls has no budget for {missing}")
        budgets = {name: int(tune_calls[name]) for name in models}
    else:
        budgets = dict.fromkeys(models, int(tune_calls))
    started = time.perf_counter()
    out_dir = Path(out_dir)
    train_df = read_interaction_file(train_path)
    if train_df.height == 0:
        raise ValueError(f"{train_path}: no interactions")
    items, embeddings = (None, None)
    if items_path is not None:
        items, embeddings = _read_embeddings(Path(items_path), embedder)
    catalog = set(train_df["item_id"].unique().to_list())
    if items is not None:
        catalog |= set(items["item_id"].to_list())
    vocab = sorted(catalog)

    # ---- tuning on a split of the train file only ---------------------------------------------
    tune_train, valid, full_train = tuning_split(
        train_df, vocab, fraction=valid_fraction, seed=seed, stratify=valid_stratify
    )
    results = {}
    for name in models:
        result = tune(
            name,
            tune_train,
            valid,
            n_calls=budgets[name],
            seed=seed,
            k=k,
            metric=metric,
            n_initial_points=n_initial_points,
            items=items,
            item_embeddings=embeddings,
        )
        tdir = out_dir / "tuning" / name
        save_tuning(result, tdir)
        convergence_plot(result, tdir / "convergence.png")
        results[name] = result

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
        model_id = _model_id(name, params)
        recs = model.recommend(test_users, k, exclude_seen=True).with_columns(
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
        "protocol": {
            "train": str(train_path),
            "test": str(test_path),
            "validation": f"random per-{valid_stratify} holdout of {valid_fraction:g} of train "
            f"(seed {seed})",
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
    best = max(models, key=lambda n: (results[n].best_score, -list(models).index(n)))
    report["best_model"] = best
    report["best_by"] = f"validation {metric}@{k}"
    report["seconds"] = round(time.perf_counter() - started, 3)
    atomic_write_parquet(fitted[best][0], out_dir / "recommendations.parquet")
    atomic_write_json(out_dir / "metrics.json", report)
    return report
