"""Ranking and beyond-accuracy metrics: known answers, properties, an independent formulation."""

from __future__ import annotations

import math
import random

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from recsys_core.metrics import (
    METRIC_NAMES,
    beyond_accuracy,
    catalog_coverage,
    item_popularity,
    mean_metrics,
    ranking_metrics,
)

HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def recs_frame(lists: dict[str, list[str]]) -> pl.DataFrame:
    rows = [(u, i, r + 1) for u, items in lists.items() for r, i in enumerate(items)]
    return pl.DataFrame(
        rows, schema={"user_id": pl.String, "item_id": pl.String, "rank": pl.Int64}, orient="row"
    )


def truth_frame(sets: dict[str, dict[str, float]]) -> pl.DataFrame:
    rows = [(u, i, g) for u, items in sets.items() for i, g in items.items()]
    return pl.DataFrame(
        rows,
        schema={"user_id": pl.String, "item_id": pl.String, "relevance": pl.Float64},
        orient="row",
    )


def as_dict(per_user: pl.DataFrame) -> dict[str, dict[str, float]]:
    return {r["user_id"]: r for r in per_user.iter_rows(named=True)}


# ---- known answers -------------------------------------------------------------------------------
def test_known_answers_binary():
    recs = recs_frame({"a": ["i1", "i2", "i3"], "b": ["i4", "i5"], "x": ["i1"]})
    truth = pl.DataFrame({"user_id": ["a", "a", "b", "c"], "item_id": ["i2", "i4", "i4", "i1"]})
    out = as_dict(ranking_metrics(recs, truth, k=3))
    assert set(out) == {"a", "b", "c"}  # x has no truth: ignored; c has no recs: zeros
    a, b, c = out["a"], out["b"], out["c"]
    assert a["precision"] == pytest.approx(1 / 3)
    assert a["recall"] == pytest.approx(1 / 2)
    assert a["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))  # 0.4
    assert a["ndcg"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert a["map"] == pytest.approx((1 / 2) / 2)
    assert (a["hit"], a["mrr"]) == (1.0, 0.5)
    assert b["precision"] == pytest.approx(1 / 3)
    assert (b["recall"], b["ndcg"], b["map"], b["hit"], b["mrr"]) == (1.0, 1.0, 1.0, 1.0, 1.0)
    assert b["f1"] == pytest.approx(0.5)
    assert all(c[m] == 0.0 for m in METRIC_NAMES)
    means = mean_metrics(ranking_metrics(recs, truth, k=3))
    assert means["hit"] == pytest.approx(2 / 3)
    assert set(means) == set(METRIC_NAMES)


def test_known_answer_graded_ndcg_and_rank_cut():
    recs = recs_frame({"d": ["x", "y", "z"]})
    truth = truth_frame({"d": {"x": 1.0, "y": 3.0, "z": 2.0}})
    out = as_dict(ranking_metrics(recs, truth, k=2))["d"]
    dcg = 1 / math.log2(2) + 3 / math.log2(3)
    idcg = 3 / math.log2(2) + 2 / math.log2(3)
    assert out["ndcg"] == pytest.approx(dcg / idcg)
    assert out["precision"] == 1.0  # z at rank 3 is cut by k=2
    assert out["recall"] == pytest.approx(2 / 3)


def test_duplicate_truth_pairs_count_once():
    recs = recs_frame({"a": ["i1"]})
    truth = pl.DataFrame({"user_id": ["a", "a"], "item_id": ["i1", "i1"]})
    assert as_dict(ranking_metrics(recs, truth, 1))["a"]["recall"] == 1.0


def test_k_must_be_positive():
    with pytest.raises(ValueError, match="k must be >= 1"):
        ranking_metrics(recs_frame({"a": ["i"]}), truth_frame({"a": {"i": 1}}), 0)


# ---- an independent formulation (plain python) ---------------------------------------------------
def reference(lists: dict[str, list[str]], sets: dict[str, dict[str, float]], k: int):
    out = {}
    for u, rel in sets.items():
        top = lists.get(u, [])[:k]
        hits = [1 if i in rel else 0 for i in top]
        n_rel, h = len(rel), sum(hits)
        p, r = h / k, h / n_rel
        dcg = sum(rel.get(i, 0.0) / math.log2(j + 2) for j, i in enumerate(top))
        ideal = sorted(rel.values(), reverse=True)[:k]
        idcg = sum(g / math.log2(j + 2) for j, g in enumerate(ideal))
        ap, seen = 0.0, 0
        for j, hit in enumerate(hits):
            if hit:
                seen += 1
                ap += seen / (j + 1)
        first = next((j + 1 for j, hit in enumerate(hits) if hit), None)
        out[u] = {
            "precision": p,
            "recall": r,
            "f1": 0.0 if h == 0 else 2 * p * r / (p + r),
            "ndcg": dcg / idcg if idcg > 0 else 0.0,
            "map": ap / min(n_rel, k),
            "hit": float(h > 0),
            "mrr": 0.0 if first is None else 1.0 / first,
        }
    return out


def random_case(seed: int, graded: bool):
    rng = random.Random(seed)
    items = [f"i{j}" for j in range(30)]
    lists, sets = {}, {}
    for u in range(40):
        uid = f"u{u:02d}"
        if rng.random() < 0.9:
            lists[uid] = rng.sample(items, rng.randint(0, 12))
        if rng.random() < 0.8:
            chosen = rng.sample(items, rng.randint(1, 8))
            sets[uid] = {i: float(rng.randint(1, 4)) if graded else 1.0 for i in chosen}
    return lists, sets


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("graded", [False, True])
def test_agrees_with_plain_python(seed, graded):
    lists, sets = random_case(seed, graded)
    k = 1 + seed % 10
    truth = truth_frame(sets) if graded else truth_frame(sets).drop("relevance")
    got = as_dict(ranking_metrics(recs_frame(lists), truth, k))
    want = reference(lists, sets, k)
    assert set(got) == set(want)
    for u in want:
        for m in METRIC_NAMES:
            assert got[u][m] == pytest.approx(want[u][m], abs=1e-12), (u, m)


# ---- properties ----------------------------------------------------------------------------------
item_ids = st.sampled_from([f"i{j}" for j in range(12)])
user_lists = st.dictionaries(
    st.sampled_from([f"u{j}" for j in range(8)]),
    st.lists(item_ids, max_size=10, unique=True),
    max_size=8,
)
user_sets = st.dictionaries(
    st.sampled_from([f"u{j}" for j in range(8)]),
    st.dictionaries(item_ids, st.sampled_from([1.0, 2.0, 3.0]), min_size=1, max_size=6),
    min_size=1,
    max_size=8,
)


@HYP
@given(lists=user_lists, sets=user_sets, k=st.integers(1, 12))
def test_bounds(lists, sets, k):
    out = ranking_metrics(recs_frame(lists), truth_frame(sets), k)
    assert out.height == len(sets)
    for m in METRIC_NAMES:
        v = out[m].to_numpy()
        assert ((v >= 0) & (v <= 1 + 1e-12)).all(), m


@HYP
@given(sets=user_sets, k=st.integers(1, 12))
def test_perfect_ranking_scores_one(sets, k):
    # every relevant item first, in descending gain: the ideal list
    lists = {
        u: [i for i, _ in sorted(rel.items(), key=lambda t: (-t[1], t[0]))]
        for u, rel in sets.items()
    }
    out = as_dict(ranking_metrics(recs_frame(lists), truth_frame(sets), k))
    for u, rel in sets.items():
        row = out[u]
        assert row["ndcg"] == pytest.approx(1.0)
        assert (row["map"], row["hit"], row["mrr"]) == (1.0, 1.0, 1.0)
        assert row["precision"] == pytest.approx(min(len(rel), k) / k)
        assert row["recall"] == pytest.approx(min(len(rel), k) / len(rel))


@HYP
@given(lists=user_lists, sets=user_sets, k=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_invariant_to_row_and_user_order(lists, sets, k, seed):
    recs, truth = recs_frame(lists), truth_frame(sets)
    base = ranking_metrics(recs, truth, k)
    shuffled = ranking_metrics(
        recs.sample(fraction=1.0, shuffle=True, seed=seed),
        truth.sample(fraction=1.0, shuffle=True, seed=seed + 1),
        k,
    )
    # equal up to float rounding (polars may divide by a literal via its reciprocal)
    assert_frame_equal(base, shuffled, check_exact=False, rel_tol=1e-12, abs_tol=1e-15)
    # a user's metrics depend only on that user's rows
    if len(sets) > 1:
        u = sorted(sets)[0]
        alone = ranking_metrics(
            recs.filter(pl.col("user_id") == u), truth.filter(pl.col("user_id") == u), k
        )
        assert_frame_equal(
            alone, base.filter(pl.col("user_id") == u), check_exact=False, rel_tol=1e-12
        )


# ---- beyond accuracy -----------------------------------------------------------------------------
TRAIN = pl.DataFrame(
    {
        "user_id": ["a", "a", "b", "b", "c", "c", "c"],
        "item_id": ["x", "y", "x", "x", "x", "z", "y"],
    }
)


def test_item_popularity_known():
    pop = {r["item_id"]: r for r in item_popularity(TRAIN).iter_rows(named=True)}
    assert pop["x"]["n_users"] == 3  # b's repeat counts once
    assert pop["x"]["popularity"] == 1.0
    assert pop["y"]["popularity"] == pytest.approx(2 / 3)
    assert pop["x"]["novelty"] == pytest.approx(-math.log2(4 / 4))
    assert pop["z"]["novelty"] == pytest.approx(-math.log2(2 / 4))


def test_beyond_accuracy_known():
    recs = recs_frame({"a": ["z", "new"], "b": ["x", "y", "z"]})
    out = as_dict(beyond_accuracy(recs, TRAIN, k=2))
    # a: z (n=1) and an item unseen in training (n=0)
    assert out["a"]["novelty"] == pytest.approx((-math.log2(2 / 4) - math.log2(1 / 4)) / 2)
    assert out["a"]["arp"] == pytest.approx((1 / 3 + 0) / 2)
    assert out["b"]["arp"] == pytest.approx((1 + 2 / 3) / 2)  # z is cut by k=2


def test_catalog_coverage_known_and_checked():
    recs = recs_frame({"a": ["x", "y"], "b": ["x", "z"]})
    assert catalog_coverage(recs, 6) == pytest.approx(3 / 6)
    assert catalog_coverage(recs, 6, k=1) == pytest.approx(1 / 6)
    assert catalog_coverage(recs.clear(), 6) == 0.0
    assert catalog_coverage(recs, 0) == 0.0
    with pytest.raises(ValueError, match="n_items is 2"):
        catalog_coverage(recs, 2)


@pytest.mark.parametrize("seed", range(4))
def test_beyond_agrees_with_plain_python(seed):
    rng = random.Random(seed)
    train_rows = [
        (f"u{rng.randint(0, 9)}", f"i{int(rng.paretovariate(1.2)) % 15}") for _ in range(80)
    ]
    train = pl.DataFrame(train_rows, schema=["user_id", "item_id"], orient="row")
    lists = {
        f"u{u}": rng.sample([f"i{j}" for j in range(18)], rng.randint(1, 8)) for u in range(12)
    }
    k = rng.randint(1, 8)
    users = {u for u, _ in train_rows}
    n_users = len(users)
    counts = {i: len({u for u, j in train_rows if j == i}) for _, i in train_rows}
    got = as_dict(beyond_accuracy(recs_frame(lists), train, k))
    for u, items in lists.items():
        top = items[:k]
        nov = sum(-math.log2((counts.get(i, 0) + 1) / (n_users + 1)) for i in top) / len(top)
        arp = sum(counts.get(i, 0) / n_users for i in top) / len(top)
        assert got[u]["novelty"] == pytest.approx(nov)
        assert got[u]["arp"] == pytest.approx(arp)
    distinct = {i for items in lists.values() for i in items[:k]}
    assert catalog_coverage(recs_frame(lists), 18, k) == pytest.approx(len(distinct) / 18)


@HYP
@given(lists=user_lists, k=st.integers(1, 12))
def test_beyond_bounds(lists, k):
    out = beyond_accuracy(recs_frame(lists), TRAIN, k)
    n_users = TRAIN["user_id"].n_unique()
    assert ((out["arp"] >= 0) & (out["arp"] <= 1)).all()
    assert ((out["novelty"] >= 0) & (out["novelty"] <= np.log2(n_users + 1) + 1e-12)).all()
    assert 0.0 <= catalog_coverage(recs_frame(lists), 12, k) <= 1.0
