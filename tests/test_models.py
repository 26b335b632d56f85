"""Every model passes the contract; model-specific known answers on planted data."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from threadpoolctl import threadpool_limits

from recsys_core.interactions import Interactions
from recsys_core.metrics import mean_metrics, ranking_metrics
from recsys_core.models import (
    ALS,
    EASE,
    MODELS,
    ALSConfig,
    Hybrid,
    ItemKNN,
    MissingEmbeddingsWarning,
    Popularity,
    RP3beta,
    get_model_class,
)
from recsys_core.models._sparse import _topk_positive_rows
from recsys_core.models.ease import ease_weights, time_cooccurrence
from recsys_core.testing import RecommenderContract, checkerboard


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """Tiny matrices: a second BLAS thread only adds contention on a shared CI machine."""
    with threadpool_limits(limits=1):
        yield


# ---- the contract, one line per model --------------------------------------------------------------
class TestPopularity(RecommenderContract):
    model_class = Popularity
    personalized = False


class TestItemKNN(RecommenderContract):
    model_class = ItemKNN
    params = {"neighbors": 20, "shrink": 1.0}


class TestEASE(RecommenderContract):
    model_class = EASE
    params = {"reg": 10.0}


class TestRP3beta(RecommenderContract):
    model_class = RP3beta
    params = {"alpha": 1.0, "beta": 0.3, "neighbors": 20}


class TestALS(RecommenderContract):
    model_class = ALS
    params = {"embedding_size": 8, "epochs": 8, "reg": 0.1, "alpha": 2.0}


class TestHybrid(RecommenderContract):
    model_class = Hybrid
    params = {"reg": 10.0, "text_weight": 0.3}


class TestHybridItemKNN(RecommenderContract):
    model_class = Hybrid
    params = {"base": "itemknn", "neighbors": 20, "shrink": 1.0, "text_weight": 0.3}


def test_registry_names_every_model() -> None:
    assert set(MODELS) == {"popularity", "itemknn", "ease", "rp3beta", "als", "hybrid", "sasrec"}
    for name, cls in MODELS.items():
        assert get_model_class(name) is cls and cls.name == name
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        get_model_class("nope")


# ---- planted data ----------------------------------------------------------------------------------
def clustered(n_users: int = 240, n_clusters: int = 4, per_cluster: int = 30, seed: int = 0):
    """Users of cluster c pick 12 of cluster c's items (popular ones more often) plus 2 random
    items; one of their cluster items is held out as the test truth."""
    rng = np.random.default_rng(seed)
    n_items = n_clusters * per_cluster
    pop = 1.0 / np.arange(1, per_cluster + 1) ** 0.5
    train, test = [], []
    for u in range(n_users):
        c = u % n_clusters
        items = c * per_cluster + rng.choice(per_cluster, 12, replace=False, p=pop / pop.sum())
        noise = rng.choice(n_items, 2, replace=False)
        test.append((f"u{u:03d}", f"i{items[0]:03d}"))
        train += [(f"u{u:03d}", f"i{i:03d}") for i in set(items[1:]) | set(noise) - {items[0]}]
    frame = lambda rows: pl.DataFrame(rows, schema=["user_id", "item_id"], orient="row")  # noqa: E731
    catalog = [f"i{i:03d}" for i in range(n_items)]
    return Interactions.from_frame(frame(train), item_ids=catalog), frame(test)


def ndcg_of(model, inter: Interactions, truth: pl.DataFrame) -> float:
    recs = model.fit(inter).recommend(truth["user_id"].to_list(), 10)
    return mean_metrics(ranking_metrics(recs, truth, 10))["ndcg"]


def test_personalised_models_beat_popularity_on_planted_clusters() -> None:
    inter, truth = clustered()
    pop = ndcg_of(Popularity(), inter, truth)
    for model in (EASE(reg=20.0), ItemKNN(neighbors=30), RP3beta(beta=0.3), ALS(embedding_size=8)):
        score = ndcg_of(model, inter, truth)
        assert score > pop + 0.1, (type(model).__name__, score, pop)


def test_ease_matches_the_closed_form() -> None:
    inter, _ = clustered(n_users=60, per_cluster=15)
    x = inter.binarized().toarray().astype(np.float64)
    g = x.T @ x + 7.0 * np.eye(x.shape[1])
    p = np.linalg.inv(g)
    expected = np.eye(len(p)) - p / np.diag(p)
    np.testing.assert_allclose(EASE(reg=7.0).fit(inter).weights_, expected, atol=1e-5)
    np.testing.assert_allclose(ease_weights(g.copy()), expected, atol=1e-5)


def test_edlae_dropout_only_changes_the_diagonal_regulariser() -> None:
    inter, _ = clustered(n_users=60, per_cluster=15)
    x = inter.binarized().toarray().astype(np.float64)
    g = x.T @ x
    lam = 5.0 + 0.25 / 0.75 * np.diag(g)
    expected = ease_weights(g + np.diag(lam))
    np.testing.assert_allclose(EASE(reg=5.0, dropout=0.25).fit(inter).weights_, expected, atol=1e-6)


def _random_timed_events(seed: int, n_users: int = 12, n_items: int = 9) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for i in rng.choice(n_items, size=rng.integers(1, n_items + 1), replace=False):
            # few distinct times, so that ties in time occur
            rows.append(
                (f"u{u}", f"i{i}", float(rng.integers(0, 6) * 300), float(rng.integers(1, 4)))
            )
    return pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp", "w"], orient="row")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_time_cooccurrence_matches_the_pairwise_definition(seed: int) -> None:
    inter = Interactions.from_frame(_random_timed_events(seed), weight_col="w")
    x = inter.matrix.toarray().astype(np.float64)
    t = inter.last_ts.toarray()
    scale = 450.0
    expected = np.zeros((inter.n_items, inter.n_items))
    for u in range(inter.n_users):
        have = np.flatnonzero(x[u])
        for i in have:
            for j in have:
                expected[i, j] += x[u, i] * x[u, j] * np.exp(-abs(t[u, i] - t[u, j]) / scale)
    got = time_cooccurrence(inter.matrix, inter.last_ts, scale=scale)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_allclose(np.diag(got), np.diag(x.T @ x))
    # a very long time scale forgets time: the plain co-occurrence matrix X^T X
    flat = time_cooccurrence(inter.matrix, inter.last_ts, scale=1e12)
    np.testing.assert_allclose(flat, x.T @ x, rtol=1e-8)
    # positive semi-definite like X^T X, so EASE's Cholesky works for any reg > 0
    assert np.linalg.eigvalsh(got).min() > -1e-9


def test_time_cooccurrence_skips_pairs_beyond_twenty_time_scales() -> None:
    # one user, items 0..4 one minute apart
    events = pl.DataFrame(
        {
            "user_id": ["u"] * 5,
            "item_id": [f"i{i}" for i in range(5)],
            "timestamp": [60.0 * i for i in range(5)],
        }
    )
    inter = Interactions.from_frame(events)
    gap = np.abs(np.subtract.outer(np.arange(5), np.arange(5)))  # in minutes
    got = time_cooccurrence(inter.matrix, inter.last_ts, scale=60.0)
    np.testing.assert_allclose(got, np.exp(-gap), rtol=1e-12)
    # scale 2.9 s: one minute is 20.7 time scales, past the cutoff; only the diagonal is left
    np.testing.assert_allclose(time_cooccurrence(inter.matrix, inter.last_ts, scale=2.9), np.eye(5))
    with pytest.raises(ValueError, match="scale must be > 0"):
        time_cooccurrence(inter.matrix, inter.last_ts, scale=0.0)


def test_session_aware_ease_links_items_taken_together() -> None:
    """Every user has items a, b and c. Half take a and b minutes apart and c weeks later; the other
    half take a alone and b, c together. Plain EASE sees a, b, c co-occur equally; the session-aware
    Gram matrix ties a to b, so a user holding only a is shown b before c."""
    day = 86400.0
    rows = []
    for u in range(40):
        t0 = u * 100 * day
        if u % 2:
            rows += [(f"u{u}", "a", t0), (f"u{u}", "b", t0 + 60), (f"u{u}", "c", t0 + 21 * day)]
        else:
            rows += [
                (f"u{u}", "a", t0),
                (f"u{u}", "b", t0 + 21 * day),
                (f"u{u}", "c", t0 + 21 * day + 60),
            ]
    rows += [("probe", "a", 1e9)]
    # plus filler items so that top-k has something else to choose from
    rows += [(f"f{j}", f"z{j}", 0.0) for j in range(5)]
    inter = Interactions.from_frame(
        pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")
    )
    plain = EASE(reg=1.0).fit(inter)
    aware = EASE(reg=1.0, time_weight=0.9, time_scale=600.0).fit(inter)
    b, c = inter.item_index(["b", "c"])
    probe = inter.user_index(["probe"])
    s_plain = plain._score_block(probe)[0]
    s_aware = aware._score_block(probe)[0]
    assert s_plain[b] == pytest.approx(s_plain[c], rel=1e-5)
    assert s_aware[b] > s_aware[c] + 0.05
    assert aware.recommend(["probe"], k=1)["item_id"].to_list() == ["b"]
    # time_weight 0 is plain EASE, bit for bit
    np.testing.assert_array_equal(
        EASE(reg=1.0, time_weight=0.0).fit(inter).weights_, plain.weights_
    )


def _reference_matrix(events: pl.DataFrame, users: list[str], items: list[str]):
    """Interactions built the slow, obvious way: a dict per (user, item) in event order."""
    u_at = {u: i for i, u in enumerate(users)}
    i_at = {t: i for i, t in enumerate(items)}
    weight: dict[tuple[int, int], float] = {}
    last: dict[tuple[int, int], float] = {}
    for u, t, w, ts in events.select("user_id", "item_id", "w", "timestamp").iter_rows():
        if u in u_at and t in i_at and w > 0:
            key = (u_at[u], i_at[t])
            weight[key] = weight.get(key, 0.0) + w
            last[key] = max(last.get(key, -np.inf), float(ts))
    dense_w = np.zeros((len(users), len(items)), dtype=np.float32)
    dense_t = np.zeros((len(users), len(items)))
    for key, w in weight.items():
        dense_w[key], dense_t[key] = w, last[key]
    return dense_w, dense_t


@pytest.mark.parametrize("collide", [False, True])
def test_interactions_match_the_obvious_construction(monkeypatch, collide: bool) -> None:
    """Vocabularies given or found, ids outside them dropped, weights summed and latest times
    kept per pair, zero weights dropped; the same when every id hash collides (the exact path)."""
    import recsys_core.interactions as interactions_module

    if collide:
        monkeypatch.setattr(
            interactions_module, "_hash", lambda ids: pl.repeat(7, len(ids), eager=True)
        )
    rng = np.random.default_rng(5)
    n = 3000
    events = pl.DataFrame(
        {
            "user_id": [f"u{x}" for x in rng.integers(0, 90, n)],
            "item_id": [f"i{x}" for x in rng.integers(0, 40, n)],
            "w": rng.choice([0.0, 0.5, 1.0, 2.5], n),
            "timestamp": rng.integers(0, 10**6, n),
        }
    )
    catalog = [f"i{x}" for x in range(0, 50, 2)]  # some event items outside it, some unseen
    audience = [f"u{x}" for x in range(0, 100, 3)]
    for user_ids, item_ids in ((None, None), (audience, catalog), (None, catalog)):
        inter = Interactions.from_frame(
            events, user_ids=user_ids, item_ids=item_ids, weight_col="w"
        )
        seen = events.filter(pl.col("w") > 0)
        users = sorted(set(user_ids or seen["user_id"].to_list()))
        items = sorted(set(item_ids or seen["item_id"].to_list()))
        assert inter.user_ids.tolist() == users and inter.item_ids.tolist() == items
        dense_w, dense_t = _reference_matrix(events, users, items)
        np.testing.assert_array_equal(inter.matrix.toarray(), dense_w)
        np.testing.assert_array_equal(inter.last_ts.toarray(), dense_t)
        assert inter.matrix.has_sorted_indices and inter.matrix.nnz == np.count_nonzero(dense_w)


@pytest.mark.parametrize("collide", [False, True])
def test_distinct_count_is_n_unique(monkeypatch, collide: bool) -> None:
    import recsys_core.interactions as interactions_module
    from recsys_core.interactions import distinct_count

    if collide:
        monkeypatch.setattr(
            interactions_module, "_hash", lambda ids: pl.repeat(7, len(ids), eager=True)
        )
    rng = np.random.default_rng(2)
    ids = pl.Series([f"u{x}" for x in rng.integers(0, 500, 5000)])
    with_null = pl.concat([ids, pl.Series([None], dtype=pl.String)])
    for series in (ids, with_null, ids.head(0), pl.Series(rng.integers(0, 9, 50))):
        assert distinct_count(series) == series.n_unique()


def test_session_aware_ease_needs_timestamps() -> None:
    inter = Interactions.from_frame(pl.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"]}))
    with pytest.raises(ValueError, match=r"EASE\(time_weight=0.5\) needs interaction timestamps"):
        EASE(time_weight=0.5).fit(inter)


def test_itemknn_keeps_at_most_k_neighbours_with_shrunk_cosine() -> None:
    inter, _ = clustered(n_users=60, per_cluster=15)
    model = ItemKNN(neighbors=3, shrink=2.0).fit(inter)
    w = model.similarity_.toarray()
    assert (np.count_nonzero(w, axis=0) <= 3).all()
    assert np.all(np.diag(w) == 0)
    x = inter.binarized().toarray()
    norms = np.linalg.norm(x, axis=0)
    j = int(np.argmax(np.count_nonzero(w, axis=0)))
    for i in np.nonzero(w[:, j])[0]:
        expected = x[:, i] @ x[:, j] / (norms[i] * norms[j] + 2.0)
        assert w[i, j] == pytest.approx(expected, rel=1e-5)
    # the kept neighbours are the most similar ones
    sims = (x.T @ x[:, j]) / (norms * norms[j] + 2.0)
    sims[j] = -1
    assert set(np.nonzero(w[:, j])[0]) == set(np.argsort(-sims, kind="stable")[:3])


def test_topk_rows_breaks_ties_by_lower_column() -> None:
    block = np.array([[1.0, 2.0, 2.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    rows, cols, vals = _topk_positive_rows(block, 2)
    assert rows.tolist() == [0, 0] and cols.tolist() == [1, 2]
    assert vals.tolist() == [2.0, 2.0]


def test_rp3beta_beta_damps_popular_items() -> None:
    inter, truth = clustered()
    users = truth["user_id"].to_list()
    pop = np.asarray(inter.matrix.getnnz(axis=0))
    mean_pop = {}
    for beta in (0.0, 0.8):
        recs = RP3beta(beta=beta).fit(inter).recommend(users, 10)
        idx = inter.item_index(recs["item_id"].to_list())
        mean_pop[beta] = pop[idx].mean()
    assert mean_pop[0.8] < mean_pop[0.0]


def test_als_seed_changes_factors_but_not_determinism() -> None:
    inter = checkerboard(12)
    a = ALS(embedding_size=4, epochs=3, seed=1).fit(inter)
    b = ALS(embedding_size=4, epochs=3, seed=1).fit(inter)
    c = ALS(embedding_size=4, epochs=3, seed=2).fit(inter)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    assert not np.array_equal(a.user_factors_, c.user_factors_)


def test_als_sparse_products_agree_on_both_paths_and_any_thread_count(monkeypatch) -> None:
    """ALS's two sparse products go through numpy/scipy below TORCH_MIN_NNZ interactions and
    torch's CSR kernels above. The sampled products (a[row] . b[col] on every interaction): the
    same values (to float32 rounding), bitwise the same with 1 or 2 threads and when taken in
    the transposed layout (the item half-step's). The weighted sums
    (S @ y): scipy's to float32 rounding (bitwise without AVX-512), bitwise the same with 1 or 2
    threads. And a whole fit gives the same factors."""
    import scipy.sparse as sp
    import torch

    from recsys_core.models import als

    rng = np.random.default_rng(3)
    m = sp.random(300, 200, density=0.05, format="csr", random_state=4, dtype=np.float32)
    a = rng.standard_normal((300, 16)).astype(np.float32)
    b = rng.standard_normal((200, 16)).astype(np.float32)
    weights = rng.random(m.nnz).astype(np.float32)
    dense = (a @ b.T)[m.nonzero()]
    on_numpy = als._sampled_dot(als._Pattern(m), b)(a)
    summed_scipy = als._weighted_sum(als._Pattern(m), b)(weights)
    interactions = checkerboard(12)
    fit_numpy = ALS(embedding_size=4, epochs=2, seed=1).fit(interactions)
    monkeypatch.setattr(als, "TORCH_MIN_NNZ", 0)
    threads = torch.get_num_threads()
    try:
        on_torch, summed_torch = [], []
        for n in (1, 2):
            torch.set_num_threads(n)
            on_torch.append(als._sampled_dot(als._Pattern(m), b)(a))
            # the item half-step's call: pattern m.T, taken in m's layout and permuted back
            mt, position = als._transpose(m)
            plain = als._sampled_dot(als._Pattern(mt), a)(b)
            flipped = als._sampled_dot(als._Pattern(mt), a, transposed=(als._Pattern(m), position))(
                b
            )
            np.testing.assert_array_equal(flipped, plain)
            summed_torch.append(als._weighted_sum(als._Pattern(m), b)(weights))
    finally:
        torch.set_num_threads(threads)
    transposed, position = als._transpose(m)
    np.testing.assert_array_equal(transposed.toarray(), m.T.toarray())
    np.testing.assert_array_equal(m.data[position], transposed.data)
    np.testing.assert_allclose(on_numpy, dense, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(on_torch[0], on_numpy, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(on_torch[0], on_torch[1])
    expected = sp.csr_matrix((weights, m.indices, m.indptr), shape=m.shape).toarray() @ b
    np.testing.assert_allclose(summed_scipy, expected, rtol=1e-5, atol=1e-5)
    # scipy's bits on a CPU without AVX-512; with it torch's kernel fuses multiply-adds
    np.testing.assert_allclose(summed_torch[0], summed_scipy, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(summed_torch[1], summed_torch[0])
    fit_torch = ALS(embedding_size=4, epochs=2, seed=1).fit(interactions)  # the torch path
    np.testing.assert_allclose(
        fit_torch.user_factors_, fit_numpy.user_factors_, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        fit_torch.item_factors_, fit_numpy.item_factors_, rtol=1e-5, atol=1e-5
    )


def test_als_cg_reaches_the_exact_least_squares_solution() -> None:
    inter = checkerboard(10)
    model = ALS(embedding_size=3, epochs=1, cg_steps=3, reg=0.5, alpha=2.0, seed=0).fit(inter)
    # with 3 factors, 3 CG steps solve each user's 3x3 system exactly: check the last item step
    y, x = model.item_factors_.astype(np.float64), model.user_factors_.astype(np.float64)
    r = inter.matrix.toarray().T  # items x users
    for i in range(r.shape[0]):
        c = 1.0 + 2.0 * r[i]
        a = (x.T * c) @ x + 0.5 * np.eye(3)
        b = (x.T * c) @ (r[i] > 0)
        np.testing.assert_allclose(y[i], np.linalg.solve(a, b), rtol=1e-3, atol=1e-4)


# ---- hybrid: cold start ----------------------------------------------------------------------------
def cold_start_case():
    """Users of cluster A (items a0..a9) have every A item; users of cluster B every B item.
    Item 'cold' has no interactions and a text vector next to cluster A's."""
    rows = [(f"ua{u}", f"a{i}") for u in range(8) for i in range(10)]
    rows += [(f"ub{u}", f"b{i}") for u in range(8) for i in range(10)]
    rows += [("ua0", "b0"), ("ub0", "a0")]  # a little cross-traffic
    events = pl.DataFrame(rows, schema=["user_id", "item_id"], orient="row")
    catalog = [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)] + ["cold"]
    inter = Interactions.from_frame(events, item_ids=catalog)
    rng = np.random.default_rng(0)
    axis_a, axis_b = np.eye(16, dtype=np.float32)[:2]
    vec = {f"a{i}": axis_a + 0.1 * rng.standard_normal(16) for i in range(10)}
    vec |= {f"b{i}": axis_b + 0.1 * rng.standard_normal(16) for i in range(10)}
    vec["cold"] = axis_a + 0.05 * rng.standard_normal(16)
    emb = pl.DataFrame(
        {"item_id": list(vec), "vector": [v.astype(np.float32).tolist() for v in vec.values()]}
    )  # List[f64] on purpose: the hybrid accepts lists as well as fixed-size arrays
    return inter, emb


def test_hybrid_recommends_a_cold_item_close_to_the_history() -> None:
    inter, emb = cold_start_case()
    model = Hybrid(reg=10.0, text_weight=0.3).fit(inter, item_embeddings=emb)
    recs = model.recommend(k=1)
    top = dict(zip(recs["user_id"], recs["item_id"], strict=True))
    assert all(top[f"ua{u}"] == "cold" for u in range(1, 8))
    assert all(top[f"ub{u}"] != "cold" for u in range(1, 8))
    # a pure collaborative model cannot: the cold item has no interactions
    ease = EASE(reg=10.0).fit(inter).recommend([f"ua{u}" for u in range(1, 8)], k=1)
    assert "cold" not in ease["item_id"].to_list()


def test_hybrid_cold_scale_zero_hides_cold_items_behind_text_weight() -> None:
    inter, emb = cold_start_case()
    scores = Hybrid(reg=10.0, text_weight=0.3, cold_scale=0.0).fit(inter, item_embeddings=emb)
    full = Hybrid(reg=10.0, text_weight=0.3, cold_scale=1.0).fit(inter, item_embeddings=emb)
    cold = inter.item_index(["cold"])[0]
    s0 = scores.score_users(["ua1"])[0, cold]
    s1 = full.score_users(["ua1"])[0, cold]
    assert s1 == pytest.approx(s0 / 0.3)  # text part only vs. text on both parts


def test_hybrid_without_embeddings_warns_and_ranks_by_cf() -> None:
    inter, _ = cold_start_case()
    with pytest.warns(MissingEmbeddingsWarning, match="no item embeddings"):
        model = Hybrid(reg=10.0).fit(inter)
    ease = EASE(reg=10.0).fit(inter)
    users = ["ua1", "ub2"]
    assert model.recommend(users, k=3)["item_id"].equals(ease.recommend(users, k=3)["item_id"])


def test_hybrid_rejects_malformed_embeddings() -> None:
    inter, emb = cold_start_case()
    ragged = pl.DataFrame({"item_id": ["a0", "a1"], "vector": [[1.0, 0.0], [1.0]]})
    with pytest.raises(ValueError, match="different lengths"):
        Hybrid().fit(inter, item_embeddings=ragged)
    with pytest.raises(ValueError, match="missing column 'vector'"):
        Hybrid().fit(inter, item_embeddings=emb.rename({"vector": "v"}))
    nan = pl.DataFrame({"item_id": ["a0"], "vector": [[float("nan"), 1.0]]})
    with pytest.raises(ValueError, match="'a0' has NaN"):
        Hybrid().fit(inter, item_embeddings=nan)


def test_explain_names_the_history_item_that_contributed_most():
    """EASE/ItemKNN reasons: x_uj * W[j, i] is largest for the planted neighbour."""
    from recsys_core.models import EASE, ItemKNN, Popularity

    # items 'a' and 'b' always co-occur, 'c' and 'd' always co-occur
    rows = [(f"u{i}", it) for i in range(20) for it in ("a", "b")]
    rows += [(f"v{i}", it) for i in range(20) for it in ("c", "d")]
    rows += [("x", "a"), ("x", "c")]
    df = pl.DataFrame(rows, schema=["user_id", "item_id"], orient="row")
    inter = Interactions.from_frame(df)
    for cls in (EASE, ItemKNN):
        model = cls().fit(inter)
        recs = model.explain(model.recommend(["x"], k=2))
        reasons = dict(zip(recs["item_id"], recs["reason_item_id"], strict=True))
        assert reasons == {"b": "a", "d": "c"}, cls.__name__
    pop = Popularity().fit(inter)
    assert pop.explain(pop.recommend(["x"], k=2))["reason_item_id"].null_count() == 2


def test_als_is_scored_on_the_factor_path_with_the_same_result(monkeypatch) -> None:
    """ALS declares ``_factors``: ``recommend`` scores it tile by tile (the fast path) and gives
    exactly what scoring whole blocks with ``_score_block`` gives, on a catalog large enough
    (> 32 k items) that the pruned selection runs too."""
    from recsys_core.models import _base

    rng = np.random.default_rng(7)
    n_users, n_items = 400, 900
    rows, cols = rng.integers(0, n_users, 12_000), rng.integers(0, n_items, 12_000)
    events = pl.DataFrame(
        {
            "user_id": [f"u{r}" for r in rows],
            "item_id": [f"i{c}" for c in cols],
            "event_type": ["view"] * len(rows),
        }
    )
    model = ALS(ALSConfig(embedding_size=16, epochs=3, seed=1)).fit(Interactions.from_frame(events))
    users = [f"u{u}" for u in range(n_users)]
    calls = []
    real = ALS._factors
    monkeypatch.setattr(
        ALS, "_factors", lambda self, idx: calls.append(len(idx)) or real(self, idx)
    )
    fast = model.recommend(users, k=10)
    assert sum(calls) == n_users  # every user went through the factor path
    monkeypatch.setattr(ALS, "_factors", _base.Recommender._factors)  # the general path
    general = model.recommend(users, k=10)
    assert fast.equals(general)
