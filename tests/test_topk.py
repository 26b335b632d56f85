"""The exact top-K of ``models/_base.py`` against a plain full sort, on catalogs it really prunes.

Two paths prune: the dense path (:class:`recsys_core.models._base._Pruned`, a whole score block
at once) runs when a row has at least ``_MIN_GROUPS_PER_K * k`` level-2 groups: from ``32 * k``
items (4-item level-1 groups, 2 per level-2 group; ``k = 10``: 320 items) and with the large
groups from ``512 * k`` items. The factor path (:class:`recsys_core.models._base._TileTopK`)
reads one item tile at a time and copies out the groups that reach a per-row lower bound of the
``k``-th best score. Every test here checks that the path it means ran (a spy on ``select``) and
that the result is exactly what a full sort by (score descending, column ascending) gives: heavy
ties, NaN (ranks as -inf), -inf, +inf and -0.0, through ``topk_block``, the dense path of
``recommend`` and its tiled factor path with exclusions, candidate subsets, heavy histories,
several blocks and tiles, and 1 or several threads.
"""

from __future__ import annotations

from typing import Any
from unittest import mock

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from recsys_core.interactions import Interactions
from recsys_core.models import Recommender, _base
from recsys_core.models._base import _Pruned, _TileTopK, topk_block

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with threadpool_limits(limits=1):
        yield


def reference(scores: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """Per row, ``(column, score)`` of the first ``k`` of a full lexsort by (score desc, column),
    NaN as -inf, keeping only scores above -inf (what ``recommend`` may return)."""
    key = np.where(np.isnan(scores), -np.inf, scores)
    cols = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.lexsort((cols, -key), axis=1)[:, :k]
    return [
        [(int(c), float(key[r, c])) for c in row if key[r, c] > -np.inf]
        for r, row in enumerate(order)
    ]


@st.composite
def score_blocks(draw: Any, min_items: int = 320) -> tuple[np.ndarray, int]:
    """A float32 block with few distinct values (ties everywhere) and some NaN, -inf, +inf, -0.0."""
    n = draw(st.integers(1, 6))
    m = draw(st.integers(min_items, 3 * min_items))
    k = draw(st.integers(1, 10))
    distinct = draw(st.sampled_from([2, 5, 50, 10_000]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scores = rng.integers(-distinct, distinct, (n, m)).astype(np.float32) / 4
    for value, share in (
        (np.nan, draw(st.sampled_from([0.0, 0.01, 0.5]))),
        (-np.inf, draw(st.sampled_from([0.0, 0.05, 0.9, 0.999]))),
        (np.inf, draw(st.sampled_from([0.0, 0.0, 0.001]))),
        (-0.0, draw(st.sampled_from([0.0, 0.1]))),
    ):
        scores[rng.random((n, m)) < share] = value
    if draw(st.booleans()):  # a row with nothing above -inf, or only NaN
        scores[rng.integers(n)] = draw(st.sampled_from([-np.inf, np.nan]))
    return scores, k


def spy_select(cls: type = _Pruned) -> Any:
    return mock.patch.object(cls, "select", autospec=True, side_effect=cls.select)


@SETTINGS
@given(score_blocks())
def test_topk_block_equals_a_full_sort(case: tuple[np.ndarray, int]) -> None:
    scores, k = case
    before = scores.copy()
    with spy_select() as spy:
        idx, vals = topk_block(scores, k)
    assert spy.call_count == 1  # the pruned path ran
    np.testing.assert_array_equal(scores, before)  # the input is not touched
    key = np.where(np.isnan(scores), -np.inf, scores)
    order = np.lexsort((np.broadcast_to(np.arange(scores.shape[1]), scores.shape), -key), axis=1)
    np.testing.assert_array_equal(idx, order[:, :k])
    np.testing.assert_array_equal(vals, np.take_along_axis(scores, order[:, :k], axis=1))


def test_large_groups_prune_a_wide_catalog_to_a_few_candidates() -> None:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((50, 20_000)).astype(np.float32)
    scores[:, ::7] = -np.inf
    seen: list[int] = []
    select = _Pruned.select

    def spy(self: _Pruned, k: int, tail: int = 0) -> Any:
        rows, cols, vals = select(self, k, tail)
        seen.extend([self.c1 * self.c2, len(rows)])
        return rows, cols, vals

    with mock.patch.object(_Pruned, "select", spy):
        idx, _vals = topk_block(scores, 10)
    order = np.lexsort((np.broadcast_to(np.arange(20_000), scores.shape), -scores), axis=1)
    np.testing.assert_array_equal(idx, order[:, :10])
    group, candidates = seen
    assert group == 128  # 8-column level-1 groups, 16 of them per level-2 group
    assert candidates < 50 * 10 * 3  # about k per row read back, not 20,000


# ---- through recommend ---------------------------------------------------------------------------
class DenseModel(Recommender):
    """Scores are a given dense matrix (the dense path of ``recommend``)."""

    name = "test-dense"

    def set_scores(self, scores: np.ndarray) -> DenseModel:
        self.scores_ = scores
        return self

    def _fit(self, interactions: Interactions, *, items: Any, item_embeddings: Any) -> None:
        pass

    def _score_block(self, user_index: np.ndarray) -> np.ndarray:
        return self.scores_[user_index]  # a fresh copy (fancy indexing): recommend may write


class FactorModel(DenseModel):
    """Scores ``U @ V.T`` declared through ``_factors`` (the tiled factor path)."""

    name = "test-factors"

    def set_factors(self, users: np.ndarray, items: np.ndarray) -> FactorModel:
        self.users_, self.items_ = users, items
        with np.errstate(invalid="ignore"):
            return self.set_scores((users.astype(np.float64) @ items.T).astype(np.float32))

    def _factors(self, user_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.users_[user_index], self.items_


def interactions(n_users: int, n_items: int, seen: np.ndarray) -> Interactions:
    mat = sp.csr_matrix(seen.astype(np.float32))
    return Interactions(
        matrix=mat,
        user_ids=np.array([f"u{u:03d}" for u in range(n_users)], dtype=object),
        item_ids=np.array([f"i{i:05d}" for i in range(n_items)], dtype=object),
    )


def expected_recs(
    model: Recommender,
    scores: np.ndarray,
    users: list[int],
    k: int,
    seen: np.ndarray | None,
    blocked: np.ndarray | None,
) -> pl.DataFrame:
    """The full-sort answer in ``recommend``'s shape: non-finite scores dropped, ranks kept."""
    s = scores[users].copy()
    if seen is not None:
        s[seen[users]] = -np.inf
    if blocked is not None:
        s[:, blocked] = -np.inf
    rows = []
    for u, top in zip(users, reference(s, k), strict=True):
        rows += [
            (model.user_ids_[u], model.item_ids_[c], r, v)
            for r, (c, v) in enumerate(top, start=1)
            if np.isfinite(v)
        ]
    return pl.DataFrame(
        rows,
        schema={"user_id": pl.String, "item_id": pl.String, "rank": pl.Int32, "score": pl.Float32},
        orient="row",
    )


@st.composite
def recommend_cases(draw: Any) -> dict[str, Any]:
    n_users = draw(st.integers(1, 9))
    n_items = draw(st.integers(320, 1500) | st.integers(4000, 7000))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    return {
        "rng": rng,
        "n_users": n_users,
        "n_items": n_items,
        "k": draw(st.integers(1, 10)),
        "distinct": draw(st.sampled_from([1, 2, 3])),  # integer factors: exact products, ties
        "seen_share": draw(st.sampled_from([0.0, 0.02, 0.5, 0.995])),
        "candidates": draw(st.sampled_from([None, 0.005, 0.3, 1.0])),
        "exclude": draw(st.sampled_from([None, 0.01, 0.5])),
        "exclude_seen": draw(st.booleans()),
        "special": draw(st.sampled_from([None, "nan", "inf", "-inf"])),
        "block_size": draw(st.sampled_from([1, 2, 4, 512])),
        "threads": draw(st.sampled_from([1, 3])),
        "tile_bytes": draw(st.sampled_from([2048, 8192, 24_000, 100_000, 1 << 21])),
        "users": draw(st.sampled_from(["all", "some"])),
    }


def run_case(case: dict[str, Any], factored: bool) -> None:
    rng, n_users, n_items = case["rng"], case["n_users"], case["n_items"]
    d = case["distinct"]
    users_f = rng.integers(-d, d + 1, (n_users, 4)).astype(np.float32)
    items_f = rng.integers(-d, d + 1, (n_items, 4)).astype(np.float32)
    if case["special"]:  # one item's factor is NaN or infinite: NaN/inf scores in a column
        items_f[rng.integers(n_items), 0] = float(case["special"])
    seen = rng.random((n_users, n_items)) < case["seen_share"]
    model = FactorModel().set_factors(users_f, items_f)
    if not factored:  # the same scores, through _score_block only
        model = DenseModel().set_scores(model.scores_)
    seen[:, 0] |= ~seen.any(axis=1)  # every user has a history (fit needs interactions)
    model.fit(interactions(n_users, n_items, seen))
    ids = model.item_ids_
    candidates = exclude = None
    blocked = np.zeros(n_items, dtype=bool)
    if case["candidates"] is not None:
        keep = rng.random(n_items) < case["candidates"]
        candidates = [*ids[keep], "not-an-item"]
        blocked |= ~keep
    if case["exclude"] is not None:
        drop = rng.random(n_items) < case["exclude"]
        exclude = [*ids[drop], "not-an-item"]
        blocked |= drop
    users = list(range(n_users)) if case["users"] == "all" else [n_users - 1, 0, n_users // 2]
    user_ids = [model.user_ids_[u] for u in users] + ["unknown-user"]
    with (
        mock.patch.object(_base, "_TILE_BYTES", case["tile_bytes"]),
        spy_select(_TileTopK if factored else _Pruned) as spy,
    ):
        got = model.recommend(
            user_ids,
            case["k"],
            exclude_seen=case["exclude_seen"],
            block_size=case["block_size"],
            threads=case["threads"],
            candidate_items=candidates,
            exclude_items=exclude,
        )
    assert spy.call_count >= 1  # the pruned path ran
    want = expected_recs(
        model,
        model.scores_,
        users,
        case["k"],
        seen if case["exclude_seen"] else None,
        blocked if blocked.any() else None,
    )
    assert got.equals(want), (got, want)


@SETTINGS
@given(recommend_cases())
def test_recommend_dense_path_equals_a_full_sort(case: dict[str, Any]) -> None:
    run_case(case, factored=False)


@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")  # NaN/inf
@SETTINGS
@given(recommend_cases())
def test_recommend_factor_path_equals_a_full_sort(case: dict[str, Any]) -> None:
    run_case(case, factored=True)


def test_factor_path_runs_in_several_item_tiles() -> None:
    rng = np.random.default_rng(1)
    users_f = rng.integers(-2, 3, (7, 4)).astype(np.float32)
    items_f = rng.integers(-2, 3, (3000, 4)).astype(np.float32)
    model = FactorModel().set_factors(users_f, items_f)
    model.fit(interactions(7, 3000, rng.random((7, 3000)) < 0.1))
    with (
        mock.patch.object(_base, "_TILE_BYTES", 4096),
        mock.patch.object(_TileTopK, "add", autospec=True, side_effect=_TileTopK.add) as tiles,
    ):
        got = model.recommend(k=10, block_size=4, threads=2)
    # blocks of 4 users -> 256-item tiles, raised to 320 (40 groups of 8 for k = 10): 10 tiles
    # for each of the 2 blocks
    assert tiles.call_count == 2 * 10
    seen = model.interactions_.matrix.toarray() > 0
    assert got.equals(expected_recs(model, model.scores_, list(range(7)), 10, seen, None))


def test_float64_factors_round_once_to_float32() -> None:
    rng = np.random.default_rng(2)
    users_f = rng.standard_normal((5, 16))
    items_f = rng.standard_normal((2000, 16))
    model = FactorModel().set_factors(users_f, items_f)
    model.fit(interactions(5, 2000, rng.random((5, 2000)) < 0.05))
    with spy_select(_TileTopK) as spy:
        got = model.recommend(k=10)
    assert spy.call_count == 1
    seen = model.interactions_.matrix.toarray() > 0
    assert got.equals(expected_recs(model, model.scores_, list(range(5)), 10, seen, None))


def test_factor_path_bound_rises_over_tiles_with_ties_and_heavy_histories() -> None:
    """Scores that rise (or fall) with the item index, in runs of 3 equal scores, so the bound
    set on the first tile is far below the final k-th score and ties at the k-th straddle tiles;
    users who have seen everything, all but 3 items, or the whole first half of the catalog."""
    n_items, k = 5000, 10
    idx = np.arange(n_items)
    items_f = np.stack([idx // 3, (idx // 3)[::-1], idx % 5, np.ones(n_items), idx], axis=1)
    users_f = np.array(
        [
            [1, 0, 0, 0, 0],  # rising: the best items are in the last tile
            [0, 1, 0, 0, 0],  # falling: the best items are in the first tile
            [0, 0, 1, 0, 0],  # 5 distinct scores: 1,000 items tie for the best
            [0, 0, 0, 1, 0],  # every score ties
            [1, 0, 0, 0, 0],  # rising, has seen all but 3 items
            [0, 1, 0, 0, 0],  # falling, has seen everything
            [0, 1, 0, 0, 0],  # falling, has seen the first half of the catalog
            [1, 0, 1, 0, 0],
            [0, 0, 0, 0, 1],  # strictly rising: no tie at the k-th score
            [0, 0, 0, 0, -1],  # strictly falling
        ],
        dtype=np.float32,
    )
    seen = np.zeros((len(users_f), n_items), dtype=bool)
    seen[:, 7] = True
    seen[4] = True
    seen[4, [5, 2500, 4999]] = False
    seen[5] = True
    seen[6, : n_items // 2] = True
    model = FactorModel().set_factors(users_f, items_f.astype(np.float32))
    model.fit(interactions(len(users_f), n_items, seen))
    users = list(range(len(users_f)))
    want = expected_recs(model, model.scores_, users, k, seen, None)
    assert want.filter(pl.col("user_id") == "u004").height == 3
    assert want.filter(pl.col("user_id") == "u005").height == 0
    for tile_bytes, block_size, threads in ((4096, 2, 1), (24_000, 3, 2), (1 << 21, 512, 1)):
        with (
            mock.patch.object(_base, "_TILE_BYTES", tile_bytes),
            spy_select(_TileTopK) as spy,
        ):
            got = model.recommend(k=k, block_size=block_size, threads=threads)
        assert spy.call_count >= 1
        assert got.equals(want), (tile_bytes, got, want)


def test_factor_path_copies_out_few_candidates() -> None:
    """On a wide catalog the bound prunes: about k scores per row reach ``_rank``, not 20,000."""
    rng = np.random.default_rng(3)
    users_f = rng.standard_normal((64, 8)).astype(np.float32)
    items_f = rng.standard_normal((20_000, 8)).astype(np.float32)
    model = FactorModel().set_factors(users_f, items_f)
    model.fit(interactions(64, 20_000, rng.random((64, 20_000)) < 0.01))
    counts: list[int] = []
    select = _TileTopK.select

    def spy(self: _TileTopK) -> Any:
        rows, cols, vals = select(self)
        counts.append(len(rows))
        return rows, cols, vals

    with mock.patch.object(_TileTopK, "select", spy):
        got = model.recommend(k=10, block_size=64)
    assert len(counts) == 1 and counts[0] < 64 * 10 * 3
    assert got["rank"].max() == 10
    assert got.height == 64 * 10


def test_shared_scores_rank_as_the_general_path(monkeypatch) -> None:
    """Popularity gives every user the same scores, so it is ranked with one sort of the catalogue
    (``_topk_shared``): the same rows as the general path's full sort, with ties (integer
    weights, items never seen score 0), users who have seen all but a few items or everything,
    candidate and excluded items, any block size and threads."""
    from recsys_core.interactions import Interactions
    from recsys_core.models import get_model_class

    rng = np.random.default_rng(11)
    n_users, n_items = 300, 120
    users = [f"u{u:03d}" for u in rng.integers(0, n_users, 4000)]
    items = [f"i{i:03d}" for i in rng.zipf(1.5, 4000) % 100]  # items 100-119: no events
    users += ["heavy"] * 97 + ["all"] * 120
    items += [f"i{i:03d}" for i in range(97)] + [f"i{i:03d}" for i in range(120)]
    events = pl.DataFrame({"user_id": users, "item_id": items, "w": rng.integers(1, 3, len(users))})
    inter = Interactions.from_frame(
        events, item_ids=[f"i{i:03d}" for i in range(n_items)], weight_col="w"
    )
    model = get_model_class("popularity")({}).fit(inter)
    assert model._shared_ranking(None) is not None  # the shared path is the one under test
    everyone = list(model.user_ids_)
    cases = [
        dict(k=10),
        dict(k=130, block_size=7),
        dict(k=5, threads=2, block_size=50),
        dict(k=10, candidate_items=[f"i{i:03d}" for i in range(0, 120, 3)]),
        dict(k=10, exclude_items=[f"i{i:03d}" for i in range(20)]),
        dict(k=10, exclude_seen=False),
    ]
    shared = [model.recommend(everyone, **case) for case in cases]
    monkeypatch.setattr(type(model), "_shared_scores", lambda self: None)
    for case, got in zip(cases, shared, strict=True):
        assert got.equals(model.recommend(everyone, **case)), case
    assert shared[0].filter(pl.col("user_id") == "all").height == 0
    assert shared[0].filter(pl.col("user_id") == "heavy").height == 10
