"""Seeded hyperparameter search (Gaussian-process Bayesian optimisation or random search).

The objective of a point is the mean ranking metric at ``k`` (:func:`recsys_core.metrics.ranking_metrics`)
of the model fit on ``train`` with those parameters, recommending for the validation users with
their training items excluded. The validation truth drops users unknown to ``train`` and pairs
already in ``train``: no parameter setting could ever score on them, and they would only shrink
every value by the same factor.

Scale: with ``max_users`` set and more training users than that, every call fits and scores on a
seeded sample of ``max_users`` users (:func:`recsys_core.tuning.sample_users`) and the validation
pairs of those users only; the caller refits the chosen parameters on everything. The result says
how many users the search ran on (``search_users`` of ``train_users``).

Budget: ``n_calls`` objective evaluations in all. The first is always the model's defaults (plus
``fixed_params``), so the result is never worse on validation than not tuning; the next
``n_initial_points - 1`` are random, the rest are proposed by the GP (``method="bayes"``) or
random too (``method="random"``). ``n_calls == 0`` evaluates the defaults only, as does a model
with nothing to search.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

from recsys_core.interactions import Interactions
from recsys_core.metrics import METRIC_NAMES, mean_metrics, ranking_metrics
from recsys_core.models import get_model_class
from recsys_core.tuning._sample import sample_users
from recsys_core.tuning._space import TIME_DIMENSIONS, search_space

if TYPE_CHECKING:  # scikit-optimize is slow to import: loaded when a search runs
    from skopt.space import Dimension

__all__ = [
    "TuningResult",
    "TuningWarning",
    "evaluate_params",
    "tune",
    "validation_per_user",
    "validation_truth",
]

_RESERVED = {
    "trial",
    "method",
    "params_json",
    "fit_seconds",
    "score_seconds",
    "best_so_far",
    "search_users",
}


class TuningWarning(UserWarning):
    """The search could not run as asked (for example an empty validation set)."""


@dataclass(frozen=True)
class TuningResult:
    """What a search found.

    ``best_params`` is the winning model's whole config as plain JSON types (pass it to the model
    class to refit). ``trials`` has one row per objective call: ``trial`` (0-based), ``method``
    (``default``, ``random`` or ``bayes``: how the point was chosen), ``params_json``, one column
    per searched parameter, the metric (column named after ``metric``), ``best_so_far``,
    ``fit_seconds``, ``score_seconds`` and ``search_users``.

    ``search_users`` is the number of training users every call fit and scored on: all
    ``train_users`` unless ``max_users`` capped the search to a seeded sample (``sampled``).
    """

    model: str
    metric: str
    k: int
    method: str
    seed: int
    n_calls: int
    best_params: dict[str, Any]
    best_score: float
    trials: pl.DataFrame
    seconds: float
    search_users: int = 0
    train_users: int = 0
    max_users: int | None = None

    @property
    def sampled(self) -> bool:
        """Whether the search ran on a sample of the training users."""
        return self.search_users < self.train_users


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars (skopt returns np.int64, np.bool_, ...)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def validation_truth(train: Interactions, valid: pl.DataFrame) -> pl.DataFrame:
    """Distinct validation pairs of users known to ``train`` that ``train`` does not already hold."""
    truth = valid.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String))
    truth = truth.unique(maintain_order=True)
    known = pl.DataFrame({"user_id": train.user_ids.tolist()}, schema={"user_id": pl.String})
    truth = truth.join(known, on="user_id", how="semi")
    if truth.height == 0 or train.nnz == 0:
        return truth
    seen = train.to_frame().select("user_id", "item_id")
    return truth.join(seen, on=["user_id", "item_id"], how="anti").sort("user_id", "item_id")


def evaluate_params(
    model_name: str,
    params: dict[str, Any],
    train: Interactions,
    truth: pl.DataFrame,
    *,
    k: int,
    metric: str,
    items: pl.DataFrame | None = None,
    item_embeddings: pl.DataFrame | None = None,
    threads: int = 1,
) -> tuple[float, float, float]:
    """Fit ``model_name(**params)`` on ``train`` and score it on ``truth`` (ranking ``threads``
    blocks of users at once: the result does not depend on it).

    Returns ``(metric value, fit seconds, score seconds)``.
    """
    started = time.perf_counter()
    per_user, fit_seconds = _fit_and_score(
        model_name, params, train, truth, k, items, item_embeddings, threads
    )
    value = mean_metrics(per_user)[metric]
    return float(value), fit_seconds, time.perf_counter() - started - fit_seconds


def validation_per_user(
    model_name: str,
    params: dict[str, Any],
    train: Interactions,
    valid: pl.DataFrame,
    *,
    k: int,
    items: pl.DataFrame | None = None,
    item_embeddings: pl.DataFrame | None = None,
    threads: int = 1,
) -> pl.DataFrame:
    """Per-user metrics at ``k`` (:func:`recsys_core.metrics.ranking_metrics`) of ``model_name``
    fit on ``train`` with ``params``, on the usable pairs of ``valid`` (:func:`validation_truth`),
    ranked ``threads`` blocks of users at a time (the result does not depend on it).

    The mean of a column is the value :func:`tune` logged for those parameters: use it to compare
    two tuned models user by user on the validation split they were chosen on.
    """
    truth = validation_truth(train, valid)
    if truth.height == 0:
        no_recs = pl.DataFrame(
            schema={"user_id": pl.String, "item_id": pl.String, "rank": pl.Int64}
        )
        return ranking_metrics(no_recs, truth, k)
    per_user, _ = _fit_and_score(
        model_name, params, train, truth, k, items, item_embeddings, threads
    )
    return per_user


def _fit_and_score(
    model_name: str,
    params: dict[str, Any],
    train: Interactions,
    truth: pl.DataFrame,
    k: int,
    items: pl.DataFrame | None,
    item_embeddings: pl.DataFrame | None,
    threads: int,
) -> tuple[pl.DataFrame, float]:
    """(per-user metrics on ``truth``, fit seconds); ``threads`` blocks of users ranked at once."""
    cls = get_model_class(model_name)
    started = time.perf_counter()
    model = cls(params).fit(train, items=items, item_embeddings=item_embeddings)
    fit_seconds = time.perf_counter() - started
    users = truth["user_id"].unique(maintain_order=True).to_list()
    recs = model.recommend(users, k, exclude_seen=True, threads=threads)
    return ranking_metrics(recs, truth, k), fit_seconds


def _point_params(dims: list[Dimension], point: list[Any]) -> dict[str, Any]:
    return {d.name: _plain(v) for d, v in zip(dims, point, strict=True)}


def _representable(dims: list[Dimension], params: dict[str, Any]) -> list[Any] | None:
    """``params`` as a point of ``dims``, or None when a value lies outside the space."""
    from skopt.space import Categorical, Integer

    point = []
    for d in dims:
        v = params.get(d.name)
        if v is None:
            return None
        if isinstance(d, Categorical):
            if v not in d.categories:
                return None
        elif not (d.low <= v <= d.high):
            return None
        point.append(int(v) if isinstance(d, Integer) else v)
    return point


def tune(
    model_name: str,
    train: Interactions,
    valid: pl.DataFrame,
    *,
    n_calls: int,
    seed: int,
    k: int = 10,
    metric: str = "ndcg",
    n_initial_points: int = 5,
    items: pl.DataFrame | None = None,
    item_embeddings: pl.DataFrame | None = None,
    method: Literal["bayes", "random"] = "bayes",
    fixed_params: dict[str, Any] | None = None,
    max_users: int | None = None,
    threads: int = 1,
) -> TuningResult:
    """Search ``model_name``'s hyperparameters on ``train`` -> ``valid`` (``user_id, item_id``).

    See the module docstring for the objective, the budget and ``max_users`` (None: every user).
    Deterministic for a given ``seed``. ``fixed_params`` are applied to every call and never
    searched; the model seed is ``seed`` unless ``fixed_params`` sets it. Each call ranks the
    validation users ``threads`` blocks at a time (the result does not depend on it).
    """
    if metric not in METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r}; expected one of {list(METRIC_NAMES)}")
    if method not in ("bayes", "random"):
        raise ValueError(f"unknown search method {method!r}; expected 'bayes' or 'random'")
    if n_calls < 0 or k < 1 or n_initial_points < 1 or (max_users is not None and max_users < 1):
        raise ValueError(
            "tune: expected n_calls >= 0, k >= 1, n_initial_points >= 1, max_users >= 1 or None; "
            f"got {n_calls}, {k}, {n_initial_points}, {max_users}"
        )
    started = time.perf_counter()
    train_users = train.n_users
    train = sample_users(train, max_users, seed)
    cls = get_model_class(model_name)
    fixed = {"seed": seed, **(fixed_params or {})}
    defaults = cls.config_class(**fixed).model_dump(mode="json")
    dims = search_space(model_name, fixed)
    if train.last_ts is None:  # no timestamps: time decays and session windows change nothing
        dims = [d for d in dims if d.name not in TIME_DIMENSIONS]
    bad = _RESERVED.intersection(d.name for d in dims) | ({metric} & {d.name for d in dims})
    if bad:
        raise ValueError(f"search space of {model_name!r} uses reserved column names {sorted(bad)}")
    truth = validation_truth(train, valid)
    if truth.height == 0:
        warnings.warn(
            f"tune({model_name!r}): no validation pair is usable (users unknown to train, or items "
            "they already have in train); keeping the default parameters with score 0",
            TuningWarning,
            stacklevel=2,
        )

    def evaluate(full: dict[str, Any]) -> tuple[float, float, float]:
        if truth.height == 0:
            return 0.0, 0.0, 0.0
        return evaluate_params(
            model_name,
            full,
            train,
            truth,
            k=k,
            metric=metric,
            items=items,
            item_embeddings=item_embeddings,
            threads=threads,
        )

    log = _TrialLog(defaults, metric, evaluate)
    default_params = {d.name: defaults.get(d.name) for d in dims}
    log(default_params, "default")
    budget = n_calls - 1 if dims and truth.height else 0
    if budget > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # skopt: "evaluated at this point before"
            _search(dims, budget, seed, method, n_initial_points, default_params, log)
    rows = log.rows
    trials = _trials_frame(rows, dims, metric).with_columns(
        pl.lit(train.n_users, dtype=pl.Int64).alias("search_users")
    )
    best_row = int(np.argmax(trials[metric].to_numpy()))  # first of equals: defaults win ties
    best = {**defaults, **json.loads(trials["params_json"][best_row])}
    best = cls.config_class(**best).model_dump(mode="json")
    return TuningResult(
        model=model_name,
        metric=metric,
        k=k,
        method=method,
        seed=seed,
        n_calls=n_calls,
        best_params=best,
        best_score=float(trials[metric][best_row]),
        trials=trials,
        seconds=time.perf_counter() - started,
        search_users=train.n_users,
        train_users=train_users,
        max_users=max_users,
    )


class _TrialLog:
    """The objective: evaluates a point (once; repeats reuse the value) and logs one row per call."""

    def __init__(self, defaults: dict[str, Any], metric: str, evaluate: Any) -> None:
        self.defaults = defaults
        self.metric = metric
        self.evaluate = evaluate
        self.rows: list[dict[str, Any]] = []
        self.cache: dict[str, float] = {}

    def __call__(self, params: dict[str, Any], how: str) -> float:
        full = {**self.defaults, **params}
        key = json.dumps(params, sort_keys=True)
        fit_s = score_s = 0.0
        if key in self.cache:
            value = self.cache[key]
        else:
            value, fit_s, score_s = self.evaluate(full)
            self.cache[key] = value
        self.rows.append(
            {
                "trial": len(self.rows),
                "method": how,
                "params_json": json.dumps({n: full[n] for n in sorted(params)}, sort_keys=True),
                **params,
                self.metric: value,
                "fit_seconds": fit_s,
                "score_seconds": score_s,
            }
        )
        return value

    @property
    def last_value(self) -> float:
        return float(self.rows[-1][self.metric])


def _search(
    dims: list[Dimension],
    budget: int,
    seed: int,
    method: str,
    n_initial_points: int,
    default_params: dict[str, Any],
    log: _TrialLog,
) -> None:
    from skopt import Optimizer
    from skopt.space import Space
    from skopt.utils import cook_estimator

    if method == "random":
        for point in Space(dims).rvs(budget, random_state=seed):
            log(_point_params(dims, point), "random")
        return
    space = Space(dims)
    # skopt's default GP restarts its kernel fit 3 times and polishes the acquisition with L-BFGS;
    # for budgets of tens of calls one kernel fit and 10k sampled candidates are as good, and
    # several times cheaper.
    gp = cook_estimator("GP", space=space, random_state=seed, n_restarts_optimizer=0)
    opt = Optimizer(
        space,
        base_estimator=gp,
        n_initial_points=max(1, n_initial_points),
        initial_point_generator="random",
        acq_func="gp_hedge",
        acq_optimizer="sampling",
        random_state=seed,
    )
    first = _representable(dims, default_params)
    if first is not None:
        opt.tell(first, -log.last_value)  # skopt minimises
    for _ in range(budget):
        n_random_left = opt._n_initial_points  # skopt counts down the random points it still owes
        point = opt.ask()
        value = log(_point_params(dims, point), "random" if n_random_left > 0 else "bayes")
        opt.tell(point, -value if math.isfinite(value) else 0.0)


def _trials_frame(rows: list[dict[str, Any]], dims: list[Dimension], metric: str) -> pl.DataFrame:
    from skopt.space import Categorical, Integer

    schema: dict[str, pl.DataType] = {
        "trial": pl.Int64(),
        "method": pl.String(),
        "params_json": pl.String(),
    }
    for d in dims:
        if isinstance(d, Integer):
            schema[d.name] = pl.Int64()
        elif isinstance(d, Categorical):
            kinds = {type(c) for c in d.categories}
            schema[d.name] = pl.Boolean() if kinds == {bool} else pl.String()
        else:
            schema[d.name] = pl.Float64()
    schema.update(
        {metric: pl.Float64(), "fit_seconds": pl.Float64(), "score_seconds": pl.Float64()}
    )
    data = {name: [r.get(name) for r in rows] for name in schema}
    for d in dims:
        if isinstance(d, Categorical) and schema[d.name] == pl.String():
            data[d.name] = [None if v is None else str(v) for v in data[d.name]]
    frame = pl.DataFrame(data, schema=schema)
    return frame.with_columns(pl.col(metric).cum_max().alias("best_so_far"))
