"""Hyperparameter search: spaces, the seeded loop on a planted optimum, splits, logs and plots."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np
import polars as pl
import pytest
from pydantic import Field
from skopt.space import Real
from threadpoolctl import threadpool_limits

from recsys_core.interactions import Interactions
from recsys_core.models import MODELS, ModelConfig, Recommender
from recsys_core.tuning import (
    TuningWarning,
    convergence_plot,
    evaluate_params,
    load_best,
    pick_best,
    sample_users,
    save_tuning,
    search_space,
    split_validation,
    tune,
    validation_truth,
)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """Tiny matrices: a second BLAS thread only adds contention on a shared CI machine."""
    with threadpool_limits(limits=1):
        yield


OPTIMUM = 30.0


# ---- a model whose validation quality peaks at a known `reg` ---------------------------------------
class PlantedConfig(ModelConfig):
    reg: float = Field(default=1.0, gt=0, description="Noise grows with |log10(reg / 30)|.")


class Planted(Recommender):
    """Co-occurrence scores (good on clustered data) plus noise scaled by the distance of ``reg``
    from 30 on a log scale: the validation metric is best near ``reg = 30``."""

    name = "planted"
    config_class = PlantedConfig

    @classmethod
    def search_space(cls, fixed: dict[str, Any]) -> list[Any]:
        return [Real(0.01, 1e4, prior="log-uniform", name="reg")]

    def _fit(self, interactions: Interactions, *, items: Any, item_embeddings: Any) -> None:
        x = interactions.binarized().astype(np.float64)
        signal = (x @ (x.T @ x)).toarray()
        signal /= np.maximum(signal.max(axis=1, keepdims=True), 1e-9)
        noise = np.random.default_rng(self.config.seed).standard_normal(signal.shape)
        distance = abs(np.log10(self.config.reg / OPTIMUM))
        self.scores_ = (signal + distance * noise).astype(np.float32)

    def _score_block(self, user_index: np.ndarray) -> np.ndarray:
        return self.scores_[user_index]

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"scores": self.scores_}, {}

    def _set_state(self, arrays: dict[str, np.ndarray], scalars: dict[str, Any]) -> None:
        self.scores_ = arrays["scores"]


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MODELS, "planted", Planted)


def clustered_events(n_users: int = 120, seed: int = 0) -> pl.DataFrame:
    """4 clusters of 20 items; each user has 10 items of their cluster, one a day from 2024-01-01."""
    rng = np.random.default_rng(seed)
    rows = []
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    for u in range(n_users):
        c = u % 4
        for day, i in enumerate(rng.choice(20, 10, replace=False)):
            rows.append((f"u{u:03d}", f"i{c * 20 + i:02d}", start + dt.timedelta(days=day)))
    return pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")


@pytest.fixture(scope="module")
def split() -> tuple[Interactions, pl.DataFrame]:
    train, valid = split_validation(clustered_events(), fraction=0.2, seed=3)
    items = sorted(set(train["item_id"]) | set(valid["item_id"]))
    return Interactions.from_frame(train, item_ids=items), valid.select("user_id", "item_id")


# ---- search spaces ---------------------------------------------------------------------------------
def test_every_model_declares_a_space_named_after_its_config_fields() -> None:
    for name, cls in MODELS.items():
        assert "search_space" in vars(cls), f"{name} inherits the empty space of Recommender"
        dims = search_space(name)
        assert dims, name
        assert {d.name for d in dims} <= set(cls.config_class.model_fields), name
    knn = {d.name for d in search_space("hybrid", {"base": "itemknn"})}
    assert {"neighbors", "shrink"} <= knn and "reg" not in knn
    assert "reg" not in {d.name for d in search_space("ease", {"reg": 3.0})}
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        search_space("nope")


def test_a_model_without_a_space_is_only_evaluated(monkeypatch: pytest.MonkeyPatch, split) -> None:
    class Fixed(Planted):
        name = "fixed"
        search_space = classmethod(Recommender.search_space.__func__)  # the base: nothing

    monkeypatch.setitem(MODELS, "fixed", Fixed)
    assert search_space("fixed") == []
    res = tune("fixed", *split, n_calls=6, seed=0)
    assert res.trials.height == 1 and res.trials["method"].to_list() == ["default"]


def test_pick_best_takes_the_highest_and_the_first_of_equals() -> None:
    assert pick_best({"a": 0.1, "b": 0.3, "c": 0.2}) == "b"
    assert pick_best({"a": 0.2, "b": 0.3, "c": 0.3}) == "b"  # tie: the first listed
    assert pick_best({"c": 0.3, "b": 0.3}) == "c"
    assert pick_best({"a": float("nan"), "b": -1.0}) == "b"
    with pytest.raises(ValueError, match="no candidates"):
        pick_best({})


# ---- the loop --------------------------------------------------------------------------------------
def test_bayes_finds_the_planted_optimum(planted: None, split) -> None:
    train, valid = split
    res = tune("planted", train, valid, n_calls=14, seed=0, n_initial_points=4)
    assert abs(np.log10(res.best_params["reg"] / OPTIMUM)) < 0.35, res.best_params
    default = res.trials.filter(pl.col("method") == "default")["ndcg"][0]
    assert res.best_score > default + 0.2  # reg=1 (the default) is far from the optimum
    assert res.trials["method"].to_list() == ["default"] + ["random"] * 3 + ["bayes"] * 10
    # the GP-proposed points improve on the random initial ones
    by_method = res.trials.group_by("method").agg(pl.col("ndcg").max()).sort("method")
    best = dict(by_method.iter_rows())
    assert best["bayes"] > best["random"] > best["default"]
    assert res.trials["best_so_far"].is_sorted()


def test_random_search_is_seeded_and_reaches_the_optimum_region(planted: None, split) -> None:
    train, valid = split
    a = tune("planted", train, valid, n_calls=12, seed=5, method="random")
    b = tune("planted", train, valid, n_calls=12, seed=5, method="random")
    assert a.trials.drop("fit_seconds", "score_seconds").equals(
        b.trials.drop("fit_seconds", "score_seconds")
    )
    assert set(a.trials["method"][1:]) == {"random"}
    assert abs(np.log10(a.best_params["reg"] / OPTIMUM)) < 0.6


def test_bayes_is_deterministic_for_a_seed(planted: None, split) -> None:
    train, valid = split
    a = tune("planted", train, valid, n_calls=5, seed=1, n_initial_points=2)
    b = tune("planted", train, valid, n_calls=5, seed=1, n_initial_points=2)
    assert a.trials["params_json"].equals(b.trials["params_json"])
    assert a.trials["ndcg"].equals(b.trials["ndcg"])
    assert a.best_params == b.best_params


def test_the_search_ranks_with_the_threads_it_is_given_and_finds_the_same(
    monkeypatch: pytest.MonkeyPatch, split
) -> None:
    from recsys_core.models import EASE

    train, valid = split
    asked: list[int] = []
    recommend = EASE.recommend

    def spy(self, *args, **kwargs):
        asked.append(kwargs["threads"])
        return recommend(self, *args, **kwargs)

    monkeypatch.setattr(EASE, "recommend", spy)
    one = tune("ease", train, valid, n_calls=3, seed=2, n_initial_points=2)
    assert asked == [1, 1, 1]
    two = tune("ease", train, valid, n_calls=3, seed=2, n_initial_points=2, threads=2)
    assert asked[3:] == [2, 2, 2]
    assert one.trials["params_json"].equals(two.trials["params_json"])
    assert one.trials["ndcg"].equals(two.trials["ndcg"]) and one.best_params == two.best_params


def test_zero_calls_evaluates_the_defaults_only(split) -> None:
    train, valid = split
    res = tune("ease", train, valid, n_calls=0, seed=4)
    assert res.trials.height == 1 and res.trials["method"][0] == "default"
    assert res.best_params == {
        "seed": 4,
        "reg": 250.0,
        "binarize": True,
        "dropout": 0.0,
        "time_weight": 0.0,
        "time_scale": 600.0,
    }
    assert res.best_score == res.trials["ndcg"][0] > 0


def test_result_is_plain_json_and_trials_have_one_column_per_param(split) -> None:
    train, valid = split
    res = tune("itemknn", train, valid, n_calls=4, seed=0, n_initial_points=2, metric="recall", k=5)
    text = json.dumps(res.best_params)  # numpy types would fail here
    assert json.loads(text) == res.best_params
    assert type(res.best_params["neighbors"]) is int and type(res.best_params["shrink"]) is float
    assert {
        "trial",
        "method",
        "params_json",
        "neighbors",
        "shrink",
        "recall",
        "fit_seconds",
    } <= set(res.trials.columns)
    assert res.trials.schema["neighbors"] == pl.Int64
    best = res.trials.row(int(res.trials["recall"].arg_max()), named=True)
    assert json.loads(best["params_json"]) == {
        k: res.best_params[k] for k in ("neighbors", "shrink")
    }


def test_fixed_params_are_applied_and_not_searched(split) -> None:
    train, valid = split
    res = tune("rp3beta", train, valid, n_calls=3, seed=0, n_initial_points=2,
               fixed_params={"neighbors": 7, "normalize": True})  # fmt: skip
    assert "neighbors" not in res.trials.columns
    assert res.best_params["neighbors"] == 7 and res.best_params["normalize"] is True
    only = tune(
        "ease", train, valid, n_calls=5, seed=0, fixed_params={"reg": 5.0, "time_weight": 0}
    )
    assert only.trials.height == 1 and only.best_params["reg"] == 5.0
    # time_weight pinned to 0 is plain EASE: its time scale is not searched either
    assert [d.name for d in search_space("ease", {"time_weight": 0.0})] == ["reg"]
    assert "time_scale" in {d.name for d in search_space("ease", {"time_weight": 0.5})}


def test_time_dimensions_are_searched_only_with_timestamps(split) -> None:
    train, valid = split
    no_ts = Interactions.from_frame(train.to_frame().select("user_id", "item_id"))
    res = tune("popularity", no_ts, valid, n_calls=6, seed=0)
    assert res.trials.height == 1
    assert res.best_params["half_life_days"] is None
    # EASE searches its regulariser only; the session-aware share stays 0 (plain EASE)
    ease = tune("ease", no_ts, valid, n_calls=4, seed=0, n_initial_points=2)
    assert ease.trials.height == 4 and "reg" in ease.trials.columns
    assert not {"time_weight", "time_scale"} & set(ease.trials.columns)
    assert ease.best_params["time_weight"] == 0.0
    with_ts = tune("ease", train, valid, n_calls=4, seed=0, n_initial_points=2)
    assert {"reg", "time_weight", "time_scale"} <= set(with_ts.trials.columns)


def test_validation_truth_drops_unknown_users_and_train_pairs(split) -> None:
    train, valid = split
    seen = train.to_frame().row(0)
    extra = pl.DataFrame({"user_id": ["stranger", seen[0]], "item_id": ["i00", seen[1]]})
    truth = validation_truth(train, pl.concat([valid, extra]))
    assert truth.height == valid.unique().height
    assert "stranger" not in truth["user_id"].to_list()


def test_unusable_validation_warns_and_keeps_defaults(split) -> None:
    train, _ = split
    with pytest.warns(TuningWarning, match="no validation pair is usable"):
        res = tune(
            "ease", train, pl.DataFrame({"user_id": ["x"], "item_id": ["y"]}), n_calls=4, seed=0
        )
    assert res.best_score == 0.0 and res.trials.height == 1 and res.best_params["reg"] == 250.0


def test_bad_arguments_are_named() -> None:
    inter = Interactions.from_frame(pl.DataFrame({"user_id": ["a"], "item_id": ["b"]}))
    valid = pl.DataFrame({"user_id": ["a"], "item_id": ["c"]})
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        tune("ease", inter, valid, n_calls=1, seed=0, metric="auc")
    with pytest.raises(ValueError, match="unknown search method"):
        tune("ease", inter, valid, n_calls=1, seed=0, method="grid")  # type: ignore[arg-type]


# ---- validation splits -----------------------------------------------------------------------------
def test_random_split_holds_out_a_fraction_of_each_users_items() -> None:
    events = clustered_events(40)
    train, valid = split_validation(events, fraction=0.3, seed=9)
    assert train.height + valid.height == events.height
    assert train.join(valid, on=["user_id", "item_id"], how="semi").height == 0
    per_user = valid.group_by("user_id").len()
    assert per_user.height == 40 and (per_user["len"] == 3).all()  # round(0.3 * 10)
    again, _ = split_validation(events, fraction=0.3, seed=9)
    other, _ = split_validation(events, fraction=0.3, seed=10)
    assert again.equals(train) and not other.equals(train)
    # input order is kept
    assert train.equals(
        events.join(valid, on=["user_id", "item_id"], how="anti", maintain_order="left")
    )


def test_item_stratified_split_holds_out_a_fraction_of_each_items_users() -> None:
    events = clustered_events(40)
    train, valid = split_validation(events, fraction=0.25, seed=2, stratify="item")
    assert train.height + valid.height == events.height
    n = events.group_by("item_id").len().rename({"len": "n"})
    held = valid.group_by("item_id").len().join(n, on="item_id")
    expected = np.minimum(np.maximum(np.round(held["n"].to_numpy() * 0.25), 1), held["n"] - 1)
    np.testing.assert_array_equal(held["len"].to_numpy(), expected)
    assert set(train["item_id"]) == set(events["item_id"])  # every item keeps a training user
    with pytest.raises(ValueError, match="stratify must be"):
        split_validation(events, fraction=0.25, seed=2, stratify="day")  # type: ignore[arg-type]


def test_random_split_keeps_single_item_users_in_train() -> None:
    events = pl.DataFrame({"user_id": ["a", "b", "b"], "item_id": ["x", "x", "y"]})
    train, valid = split_validation(events, fraction=0.9, seed=0)
    assert "a" in train["user_id"].to_list() and valid["user_id"].to_list() == ["b"]


@pytest.mark.parametrize("as_type", ["datetime", "unix"])
def test_temporal_split_validates_the_last_days(as_type: str) -> None:
    events = clustered_events(8)  # days 0..9 from 2024-01-01
    if as_type == "unix":
        events = events.with_columns(pl.col("timestamp").dt.epoch("s"))
    train, valid = split_validation(events, days=3, seed=0)

    def day(frame: pl.DataFrame) -> pl.Series:
        ts = pl.from_epoch("timestamp", time_unit="s") if as_type == "unix" else pl.col("timestamp")
        return frame.select(ts).to_series().dt.date()

    assert day(valid).min() == dt.date(2024, 1, 8) and day(valid).max() == dt.date(2024, 1, 10)
    assert day(train).max() == dt.date(2024, 1, 7)
    assert train.height + valid.height == events.height


def test_split_arguments_are_checked() -> None:
    events = clustered_events(4)
    with pytest.raises(ValueError, match="exactly one of"):
        split_validation(events, seed=0)
    with pytest.raises(ValueError, match="exactly one of"):
        split_validation(events, days=1, fraction=0.5, seed=0)
    with pytest.raises(ValueError, match="fraction must be in"):
        split_validation(events, fraction=1.5, seed=0)
    with pytest.raises(ValueError, match="no 'timestamp' column"):
        split_validation(events.drop("timestamp"), days=2, seed=0)
    with pytest.raises(ValueError, match="exactly one of"):
        split_validation(events, latest=0.2, fraction=0.2, seed=0)
    with pytest.raises(ValueError, match="latest must be in"):
        split_validation(events, latest=0.0, seed=0)
    with pytest.raises(ValueError, match="no 'timestamp' column"):
        split_validation(events.drop("timestamp"), latest=0.2, seed=0)


@pytest.mark.parametrize("as_type", ["datetime", "unix"])
def test_latest_split_validates_the_newest_share_of_events(as_type: str) -> None:
    events = clustered_events(40)  # 10 days, 40 events a day
    if as_type == "unix":
        events = events.with_columns(pl.col("timestamp").dt.epoch("s"))
    train, valid = split_validation(events, latest=0.2, seed=0)
    assert train.height + valid.height == events.height
    assert valid.height == 80  # the last 2 of 10 equally busy days
    assert train["timestamp"].max() < valid["timestamp"].min()
    # a cut inside a day: ties at the cut all go to validation, none stay in train
    train, valid = split_validation(events, latest=0.15, seed=0)
    assert valid.height == 80 and train["timestamp"].max() < valid["timestamp"].min()


# ---- artefacts -------------------------------------------------------------------------------------
def test_save_and_load_best_round_trip(tmp_path, split) -> None:
    train, valid = split
    assert load_best(tmp_path / "missing") is None
    res = tune("ease", train, valid, n_calls=3, seed=0, n_initial_points=2)
    save_tuning(res, tmp_path / "ease")
    best = load_best(tmp_path / "ease")
    assert best["params"] == res.best_params and best["score"] == res.best_score
    assert best["model"] == "ease" and dt.datetime.fromisoformat(best["created_at"]).tzinfo
    assert pl.read_parquet(tmp_path / "ease" / "trials.parquet").equals(res.trials)
    assert sorted(p.name for p in (tmp_path / "ease").iterdir()) == ["best.json", "trials.parquet"]


def test_convergence_plot_writes_a_png(tmp_path, planted: None, split) -> None:
    train, valid = split
    bayes = tune("planted", train, valid, n_calls=4, seed=0, n_initial_points=2)
    rand = tune("planted", train, valid, n_calls=4, seed=0, method="random")
    path = convergence_plot([bayes, rand], tmp_path / "plots" / "conv.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert convergence_plot(bayes, tmp_path / "one.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="no tuning result"):
        convergence_plot([], tmp_path / "none.png")


# ---- a bounded sample of users for large data ------------------------------------------------------
def test_the_user_cap_samples_a_seeded_stable_subset(split) -> None:
    train, _ = split
    assert sample_users(train, None, seed=0) is train
    assert sample_users(train, train.n_users, seed=0) is train  # at the cap: untouched
    a = sample_users(train, 30, seed=7)
    assert a.n_users == 30 and a.n_items == train.n_items
    assert list(a.user_ids) == sorted(a.user_ids) and set(a.user_ids) < set(train.user_ids)
    # each kept user keeps exactly their row (weights and timestamps)
    rows = train.user_index(list(a.user_ids))
    assert (a.matrix != train.matrix[rows]).nnz == 0
    assert (a.last_ts != train.last_ts[rows]).nnz == 0
    # deterministic for a seed; another seed draws other users
    assert list(sample_users(train, 30, seed=7).user_ids) == list(a.user_ids)
    assert set(sample_users(train, 30, seed=8).user_ids) != set(a.user_ids)
    # decided per user: the same users are drawn from a superset built in another order, and a
    # user sampled among fewer users stays sampled when the cap grows
    frame = train.to_frame().reverse()
    again = Interactions.from_frame(frame, item_ids=list(train.item_ids), weight_col="weight")
    assert list(sample_users(again, 30, seed=7).user_ids) == list(a.user_ids)
    assert set(a.user_ids) < set(sample_users(train, 60, seed=7).user_ids)
    with pytest.raises(ValueError, match="max_users must be >= 1"):
        sample_users(train, 0, seed=0)


def test_a_capped_search_runs_on_the_sample_and_says_so(tmp_path, split) -> None:
    train, valid = split
    capped = tune("ease", train, valid, n_calls=3, seed=0, n_initial_points=2, max_users=40)
    assert (capped.search_users, capped.train_users, capped.max_users) == (40, train.n_users, 40)
    assert capped.sampled and capped.trials["search_users"].to_list() == [40, 40, 40]
    # the objective is the metric on the sampled users only: what a direct evaluation gives
    sample = sample_users(train, 40, seed=0)
    params = json.loads(capped.trials["params_json"][0])
    value, _, _ = evaluate_params(
        "ease",
        {**capped.best_params, **params},
        sample,
        validation_truth(sample, valid),
        k=10,
        metric="ndcg",
    )
    assert value == capped.trials["ndcg"][0]
    full = tune("ease", train, valid, n_calls=3, seed=0, n_initial_points=2)
    assert capped.trials["ndcg"][0] != full.trials["ndcg"][0]
    again = tune("ease", train, valid, n_calls=3, seed=0, n_initial_points=2, max_users=40)
    assert again.trials.drop("fit_seconds", "score_seconds").equals(
        capped.trials.drop("fit_seconds", "score_seconds")
    )
    # a cap above the data changes nothing: the same trials as no cap at all
    loose = tune("ease", train, valid, n_calls=3, seed=0, n_initial_points=2, max_users=10_000)
    assert not loose.sampled and loose.search_users == train.n_users
    assert loose.trials.drop("fit_seconds", "score_seconds").equals(
        full.trials.drop("fit_seconds", "score_seconds")
    )
    save_tuning(capped, tmp_path / "ease")
    best = load_best(tmp_path / "ease")
    assert best["sampled"] is True and best["search_users"] == 40 and best["max_users"] == 40
    assert best["train_users"] == train.n_users
    with pytest.raises(ValueError, match="max_users >= 1 or None"):
        tune("ease", train, valid, n_calls=1, seed=0, max_users=0)
