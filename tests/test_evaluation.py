"""Splits, the evaluation protocol, the paired bootstrap and the promotion gate."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from recsys_core.evaluation import (
    TrainFacts,
    align_per_user,
    compare_metrics,
    decide_promotion,
    evaluate,
    holdout_truth,
    paired_bootstrap,
    paired_bootstraps,
    random_split,
    temporal_split,
)
from recsys_core.interactions import Interactions
from recsys_core.models import EASE, Popularity

UTC = dt.UTC
RUN = dt.date(2026, 1, 31)


def ev(rows: list[tuple]) -> pl.DataFrame:
    """Events from (user, item, event_type, datetime) tuples."""
    return pl.DataFrame(
        rows,
        schema={
            "user_id": pl.String,
            "item_id": pl.String,
            "event_type": pl.String,
            "timestamp": pl.Datetime("us", "UTC"),
        },
        orient="row",
    )


def at(day: int, h: int = 12, m: int = 0, s: int = 0) -> dt.datetime:
    return dt.datetime(2026, 1, day, h, m, s, tzinfo=UTC)


# ---- temporal split ------------------------------------------------------------------------------
def test_temporal_split_boundaries():
    events = ev(
        [
            ("u1", "a", "view", at(28, 23, 59, 59)),  # last second before the window: train
            ("u1", "b", "view", at(29, 0, 0, 0)),  # first second of the window: test
            ("u1", "c", "view", at(31, 23, 59, 59)),  # last second of run_date: test
            ("u1", "d", "view", dt.datetime(2026, 2, 1, tzinfo=UTC)),  # future: neither
            ("u2", "e", "view", at(1)),
        ]
    )
    train, test = temporal_split(events, RUN, holdout_days=3)
    assert sorted(train["item_id"]) == ["a", "e"]
    assert sorted(test["item_id"]) == ["b", "c"]
    assert (train["timestamp"].max() < test["timestamp"].min()) is True


def test_temporal_split_unix_seconds_and_other_timezones():
    t = int(dt.datetime(2026, 1, 30, 23, 30, tzinfo=UTC).timestamp())
    events = pl.DataFrame(
        {"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": [t - 86400, t]}
    )
    train, test = temporal_split(events, RUN, holdout_days=1)
    assert (train["item_id"].to_list(), test["item_id"].to_list()) == (["a", "b"], [])
    # 00:30 on the 31st in Paris is 23:30 on the 30th in UTC: the day is taken in UTC
    paris = events.with_columns(
        pl.from_epoch("timestamp", time_unit="s").dt.convert_time_zone("Europe/Paris")
    )
    assert temporal_split(paris, RUN, 1)[1].height == 0
    with pytest.raises(ValueError, match="holdout_days"):
        temporal_split(events, RUN, 0)


def test_holdout_truth_excludes_seen_pairs_and_new_users():
    train = ev([("u1", "a", "view", at(1)), ("u2", "b", "view", at(1))])
    test = ev(
        [
            ("u1", "a", "purchase", at(30)),  # re-interaction with a seen item: not truth
            ("u1", "c", "view", at(30)),
            ("u1", "c", "purchase", at(31)),
            ("u2", "a", "click", at(30)),
            ("new", "a", "view", at(30)),  # user unknown to train: not truth
        ]
    )
    truth = holdout_truth(train, test)
    assert truth.rows() == [("u1", "c", 1.0), ("u2", "a", 1.0)]
    graded = holdout_truth(train, test, event_weights={"view": 1.0, "click": 2.0, "purchase": 5.0})
    assert graded.rows() == [("u1", "c", 5.0), ("u2", "a", 2.0)]


def test_holdout_truth_min_rating_drops_negative_feedback():
    train = ev([("u1", "a", "rating", at(1))]).with_columns(pl.lit(4.0).alias("value"))
    test = pl.concat(
        [
            ev([("u1", "b", "rating", at(30))]).with_columns(pl.lit(1.0).alias("value")),
            ev([("u1", "c", "rating", at(30))]).with_columns(pl.lit(4.5).alias("value")),
        ]
    )
    assert holdout_truth(train, test, min_rating=3.0)["item_id"].to_list() == ["c"]


# ---- random split --------------------------------------------------------------------------------
def _events(n_users=30, per_user=9, seed=0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        (f"u{u}", f"i{rng.integers(0, 40)}", "view", at(1 + int(rng.integers(0, 30))))
        for u in range(n_users)
        for _ in range(1 + u % per_user)
    ]
    return ev(rows)


@pytest.mark.parametrize("stratify", ["user", "item"])
def test_random_split_fractions_and_determinism(stratify):
    events = _events()
    train, test = random_split(events, test_fraction=0.25, seed=7, stratify=stratify)
    key = f"{stratify}_id"
    assert train.height + test.height == events.height
    assert pl.concat([train, test]).sort(events.columns).equals(events.sort(events.columns))
    n = events.group_by(key).len().rename({"len": "n"})
    t = test.group_by(key).len().rename({"len": "t"})
    joined = n.join(t, on=key, how="left").fill_null(0)
    for g, n_g, t_g in joined.iter_rows():
        assert t_g == min(int(np.floor(n_g * 0.25 + 0.5)), n_g - 1), g
    assert train.select(key).n_unique() == events.select(key).n_unique()  # every group keeps train
    again = random_split(events.reverse(), test_fraction=0.25, seed=7, stratify=stratify)
    assert again[0].equals(train) and again[1].equals(test)
    other = random_split(events, test_fraction=0.25, seed=8, stratify=stratify)
    assert not other[1].equals(test)


def test_random_split_validates():
    with pytest.raises(ValueError, match="test_fraction"):
        random_split(_events(), test_fraction=1.0, seed=0)
    with pytest.raises(ValueError, match="stratify"):
        random_split(_events(), seed=0, stratify="day")  # type: ignore[arg-type]


# ---- evaluate ------------------------------------------------------------------------------------
def recs_of(lists: dict[str, list[str]]) -> pl.DataFrame:
    rows = [(u, i, r + 1, 1.0 / (r + 1)) for u, items in lists.items() for r, i in enumerate(items)]
    return pl.DataFrame(rows, schema=["user_id", "item_id", "rank", "score"], orient="row")


def test_evaluate_segments_known_answers():
    train = ev(
        [(f"u{j}", "a", "view", at(1)) for j in range(10)]
        + [("u0", f"x{j}", "view", at(2)) for j in range(5)]  # u0: the heavy user (6 events)
        + [("u1", "b", "view", at(2))]
    )
    test = ev([("new", "a", "view", at(30))])
    truth = pl.DataFrame(
        {
            "user_id": ["u0", "u0", "u1", "u2", "u3", "ghost"],
            "item_id": ["b", "cold1", "cold1", "b", "a", "b"],
        }
    )
    recs = recs_of({"u0": ["cold1", "b"], "u1": ["c", "d"], "u2": ["b"], "zz": ["b"]})
    res = evaluate(recs, truth, k=2, train=train, test=test)
    # u3's only truth pair was seen in train: dropped; ghost is unknown to train: a new user
    assert res.n_users == 3
    assert res.segments["new_users"] == {"n_users": 2}  # ghost (truth) + new (test)
    assert res.metrics["hit"] == pytest.approx(2 / 3)
    assert res.metrics["recall"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)
    cold = res.segments["cold_items"]
    assert (cold["n_pairs"], cold["n_users"], cold["n_items"]) == (2, 2, 1)
    assert (cold["hit"], cold["recall"]) == (0.5, 0.5)  # u0 found cold1, u1 did not
    heavy = res.segments["heavy_users"]
    assert (heavy["n_users"], heavy["min_train_events"]) == (1, 6)  # ceil(10% of 3) = 1: u0
    assert heavy["metrics"]["recall"] == 1.0
    # coverage: items recommended to evaluated users (cold1, b, c, d) over train+recs items (10)
    assert res.coverage == pytest.approx(4 / 10)
    assert evaluate(recs, truth, k=2, train=train, n_items=40).coverage == pytest.approx(4 / 40)
    assert res.novelty is not None and res.arp is not None
    # the training facts computed once (the gate's two models share them) give the same result
    facts = evaluate(recs, truth, k=2, train=TrainFacts.of(train), test=test)
    assert facts.to_dict() == res.to_dict() and facts.per_user.equals(res.per_user)
    twice = TrainFacts.of(pl.concat([train, train]))  # pairs are distinct, events are counted
    assert twice.pairs.height == 16 and twice.users.height == 10
    assert dict(twice.events_per_user.iter_rows())["u0"] == 12
    assert set(res.to_dict()) == {
        "k",
        "n_users",
        "metrics",
        "coverage",
        "novelty",
        "arp",
        "segments",
    }


def test_evaluate_without_train_uses_truth_as_given():
    truth = pl.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"]})
    res = evaluate(recs_of({"a": ["x"]}), truth, k=1)
    assert res.metrics["hit"] == 0.5 and res.segments == {} and res.coverage is None
    with pytest.raises(ValueError, match="lacks columns"):
        evaluate(truth, truth, k=1)


# ---- bootstrap -----------------------------------------------------------------------------------
def test_paired_bootstrap_known_cases():
    rng = np.random.default_rng(0)
    a = rng.random(200)
    same = paired_bootstrap(a, a, samples=200, seed=1)
    assert (same.diff, same.low, same.high, same.p_worse) == (0.0, 0.0, 0.0, 0.0)
    shift = paired_bootstrap(a, a + 0.1, samples=200, seed=1)  # a constant paired shift
    assert shift.diff == pytest.approx(0.1) and shift.low == pytest.approx(0.1)
    assert shift.high == pytest.approx(0.1) and shift.p_worse == 0.0
    worse = paired_bootstrap(a, a - 0.05 + rng.normal(0, 0.01, 200), samples=500, seed=1)
    assert worse.high < 0 and worse.p_worse == 1.0


def test_paired_bootstrap_deterministic_and_covers_the_mean():
    rng = np.random.default_rng(3)
    a, b = rng.random(500), rng.random(500)
    r1 = paired_bootstrap(a, b, samples=400, seed=9)
    assert r1 == paired_bootstrap(a, b, samples=400, seed=9)
    assert r1 != paired_bootstrap(a, b, samples=400, seed=10)
    assert r1.low < r1.diff < r1.high
    assert r1.diff == pytest.approx(float((b - a).mean()))
    # the percentile interval is close to the normal one, mean +- 1.96 sd / sqrt(n)
    half = 1.96 * (b - a).std(ddof=1) / np.sqrt(500)
    assert (r1.high - r1.low) / 2 == pytest.approx(half, rel=0.15)


def test_paired_bootstrap_edge_cases():
    empty = paired_bootstrap(np.array([]), np.array([]), samples=100, seed=0)
    assert (empty.n, empty.diff, empty.p_worse) == (0, 0.0, 0.5)
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap(np.zeros(3), np.zeros(4), samples=10, seed=0)


def test_paired_bootstraps_share_the_resamples_and_equal_one_call_each():
    rng = np.random.default_rng(4)
    pairs = [(rng.random(300), rng.random(300)) for _ in range(3)]
    together = paired_bootstraps(pairs, samples=250, seed=6)
    assert together == [paired_bootstrap(a, b, samples=250, seed=6) for a, b in pairs]
    assert len({r.low for r in together}) == 3  # each pair's own differences, not the first's
    assert paired_bootstraps([], samples=10, seed=0) == []
    with pytest.raises(ValueError, match="same users"):
        paired_bootstraps(
            [(np.zeros(3), np.zeros(3)), (np.zeros(4), np.zeros(4))], samples=5, seed=0
        )


def test_compare_metrics_rows_equal_one_alignment_and_bootstrap_per_metric():
    rng = np.random.default_rng(5)
    a = pl.DataFrame(
        {"user_id": [f"u{j}" for j in range(40)], "ndcg": rng.random(40), "hit": rng.random(40)}
    )
    b = pl.DataFrame(
        {"user_id": [f"u{j}" for j in range(5, 50)], "ndcg": rng.random(45), "hit": [None] * 45}
    )
    rows = compare_metrics(b, a, samples=120, seed=2, metrics=["ndcg", "hit"])
    for row in rows:
        _, x, y = align_per_user(a, b, row["metric"])
        boot = paired_bootstrap(x, y, samples=120, seed=2)
        assert (row["champion"], row["challenger"]) == (x.mean(), y.mean())
        assert (row["diff"], row["low"], row["high"], row["p_worse"]) == (
            boot.diff, boot.low, boot.high, boot.p_worse,
        )  # fmt: skip
    assert rows[1]["challenger"] == 0.0  # a null counts 0


def test_align_per_user_missing_is_zero():
    a = pl.DataFrame({"user_id": ["u2", "u1"], "ndcg": [0.5, 1.0]})
    b = pl.DataFrame({"user_id": ["u3", "u1"], "ndcg": [0.25, None]})
    users, x, y = align_per_user(a, b, "ndcg")
    assert users == ["u1", "u2", "u3"]
    assert x.tolist() == [1.0, 0.5, 0.0] and y.tolist() == [0.0, 0.0, 0.25]
    with pytest.raises(ValueError, match="'recall'"):
        align_per_user(a, b, "recall")


# ---- the gate ------------------------------------------------------------------------------------
def per_user(values: np.ndarray, metric: str = "ndcg") -> pl.DataFrame:
    return pl.DataFrame({"user_id": [f"u{j:04d}" for j in range(len(values))], metric: values})


def gate(ch, cp, tol=0.005):
    return decide_promotion(ch, cp, metric="ndcg", tolerance=tol, samples=300, seed=0)


def test_first_model_is_promoted():
    d = gate(per_user(np.full(10, 0.2)), None)
    assert d.promote and "first model" in d.reason and "0.2000" in d.reason
    assert d.champion_score is None and d.diff is None
    no_test = gate(None, None)
    assert no_test.promote and "without a test" in no_test.reason
    assert not gate(None, per_user(np.full(3, 0.1))).promote


def test_worse_challenger_is_kept_out_and_better_promoted():
    rng = np.random.default_rng(1)
    champ = rng.random(300)
    worse = gate(per_user(champ - 0.05), per_user(champ))
    assert not worse.promote
    assert worse.diff == pytest.approx(-0.05) and worse.high < 0
    assert "Kept the champion" in worse.reason and "-0.0500" in worse.reason
    better = gate(per_user(champ + 0.02), per_user(champ))
    assert better.promote and better.low > 0 and "Promoted" in better.reason


def test_tolerance_is_honoured():
    champ = np.linspace(0.1, 0.9, 100)
    slightly_worse = per_user(champ - 0.004)
    assert gate(slightly_worse, per_user(champ), tol=0.005).promote
    assert not gate(slightly_worse, per_user(champ), tol=0.003).promote
    assert gate(per_user(champ), per_user(champ), tol=0.0).promote  # a tie promotes (fresher)
    with pytest.raises(ValueError, match="tolerance"):
        gate(per_user(champ), per_user(champ), tol=-1)


def test_no_users_keeps_the_champion():
    empty = per_user(np.array([]))
    d = gate(empty, empty)
    assert not d.promote and "no test users" in d.reason


def test_gate_on_real_models_rejects_a_deliberately_worse_one():
    """EASE vs a model that recommends the least popular items: the latter must not win."""
    rng = np.random.default_rng(0)
    n = 4000
    users = rng.integers(0, 300, n)
    items = (rng.zipf(1.4, n) + users % 7) % 120
    days = rng.integers(1, 32, n)
    events = ev(
        [(f"u{u}", f"i{i}", "view", at(int(d))) for u, i, d in zip(users, items, days, strict=True)]
    )
    train, test = temporal_split(events, RUN, 4)
    truth = holdout_truth(train, test)
    inter = Interactions.from_frame(train)
    targets = truth["user_id"].unique().sort().to_list()
    good = EASE(reg=50.0).fit(inter)
    bad = Popularity().fit(inter)
    bad.item_scores_ = -bad.item_scores_  # least popular first: deliberately worse
    r_good = evaluate(good.recommend(targets, 10), truth, 10, train=train)
    r_bad = evaluate(bad.recommend(targets, 10), truth, 10, train=train)
    assert r_good.metrics["ndcg"] > r_bad.metrics["ndcg"] + 0.05
    kw = {"metric": "ndcg", "tolerance": 0.005, "samples": 300, "seed": 0}
    assert not decide_promotion(r_bad.per_user, r_good.per_user, **kw).promote
    assert decide_promotion(r_good.per_user, r_bad.per_user, **kw).promote
    rows = compare_metrics(r_good.per_user, r_bad.per_user, samples=200, seed=0)
    ndcg = next(r for r in rows if r["metric"] == "ndcg")
    assert ndcg["diff"] == pytest.approx(r_good.metrics["ndcg"] - r_bad.metrics["ndcg"])
    assert ndcg["low"] > 0
    solo = compare_metrics(r_good.per_user, None, samples=50, seed=0)
    assert all(r["champion"] is None for r in solo) and len(solo) == 7


# ---- real data -----------------------------------------------------------------------------------
@pytest.mark.shared_data
def test_movielens_ease_beats_popularity_and_wins_the_gate(shared_data):
    """MovieLens latest-small, per-user random holdout, positive = rating >= 4, frequent items."""
    ratings = pl.read_csv(
        shared_data / "ml-latest-small" / "ratings.csv",
        schema_overrides={"userId": pl.String, "movieId": pl.String},
    )
    events = ratings.select(
        pl.col("userId").alias("user_id"),
        pl.col("movieId").alias("item_id"),
        pl.lit("rating").alias("event_type"),
        pl.col("rating").alias("value"),
        pl.from_epoch("timestamp", time_unit="s").dt.replace_time_zone("UTC").alias("timestamp"),
    )
    frequent = events.group_by("item_id").len().filter(pl.col("len") >= 50).select("item_id")
    events = events.join(frequent, on="item_id", how="semi")  # ~450 items: EASE fits in a second
    train, test = random_split(events, test_fraction=0.2, seed=42)
    truth = holdout_truth(train, test, min_rating=4.0)
    inter = Interactions.from_frame(train, event_weights={"rating": 1.0}, min_rating=4.0)
    users = truth["user_id"].unique().sort().to_list()
    ease = evaluate(EASE(reg=250.0).fit(inter).recommend(users, 10), truth, 10, train=train)
    pop = evaluate(Popularity().fit(inter).recommend(users, 10), truth, 10, train=train)
    assert ease.n_users > 500
    assert ease.metrics["ndcg"] > pop.metrics["ndcg"] + 0.03
    assert ease.coverage > pop.coverage and ease.novelty > pop.novelty
    kw = {"metric": "ndcg", "tolerance": 0.005, "samples": 500, "seed": 0}
    win = decide_promotion(ease.per_user, pop.per_user, **kw)
    assert win.promote and win.low > 0
    assert not decide_promotion(pop.per_user, ease.per_user, **kw).promote
