"""The contract every recommender passes, as a pytest mixin, plus its tiny known-answer fixtures.

A model gets the whole suite from one line in a test module::

    class TestEASE(RecommenderContract):
        model_class = EASE
        params = {"reg": 10.0}

Decisions the suite pins down:

* **checkerboard**: ``n`` users and ``n`` items; user ``u`` has item ``i`` iff ``u`` and ``i`` have
  the same parity and ``u != i``. The withheld diagonal item ``u`` is every user's top-1 (the
  implicit library's test). A non-personalised model (``personalized = False``) is instead checked
  against planted popularity.
* **zero interactions** raise ``ValueError`` naming the class (there is nothing to learn; an empty
  model would fail later, at scoring). Catalog items without interactions are fine and never NaN.
* unknown users get no rows; ``k`` beyond the catalog returns every unseen item once;
  ``block_size`` and ``threads`` never change the result; save/load and refits with the same seed
  are identical; ``candidate_items`` and ``exclude_items`` give the full ranking restricted to
  the allowed items (unknown ids ignored), with the model's own scores.
* the model is fitted once per test class (:meth:`RecommenderContract.fitted`, class-scoped) on
  ``checkerboard(12, extra_items=3)``; tests that need other data or two fits fit their own.

The catalogs here are tiny, so ``recommend`` ranks them by a full sort; the pruned top-K that
larger catalogs take is checked against a full sort in ``tests/test_topk.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pytest

from recsys_core.interactions import Interactions
from recsys_core.models import NotFittedError, Recommender

__all__ = ["RecommenderContract", "checkerboard", "parity_embeddings"]


def checkerboard(n: int = 20, extra_items: int = 0) -> Interactions:
    """User ``u`` has item ``i`` iff ``u % 2 == i % 2`` and ``u != i`` (ids ``u00``, ``i00``, ...).

    ``extra_items`` appends catalog items (``x00``, ...) that nobody interacted with.
    """
    rows = [
        (f"u{u:02d}", f"i{i:02d}") for u in range(n) for i in range(n) if u % 2 == i % 2 and u != i
    ]
    events = pl.DataFrame(rows, schema=["user_id", "item_id"], orient="row")
    catalog = [f"i{i:02d}" for i in range(n)] + [f"x{j:02d}" for j in range(extra_items)]
    return Interactions.from_frame(events, item_ids=catalog)


def parity_embeddings(
    item_ids: np.ndarray | list[str], dim: int = 8, seed: int = 0
) -> pl.DataFrame:
    """Text vectors that agree with the checkerboard: even items near one direction, odd near another.

    Items whose id does not end in digits (extra catalog items) get a random direction.
    """
    rng = np.random.default_rng(seed)
    base = np.eye(dim, dtype=np.float32)[:2]
    vecs = []
    for item in item_ids:
        tail = item[1:]
        if item.startswith("i") and tail.isdigit():
            v = base[int(tail) % 2] + 0.05 * rng.standard_normal(dim).astype(np.float32)
        else:
            v = rng.standard_normal(dim).astype(np.float32)
        vecs.append(v)
    return pl.DataFrame(
        {"item_id": list(item_ids), "vector": np.stack(vecs)},
        schema={"item_id": pl.String, "vector": pl.Array(pl.Float32, dim)},
    )


class RecommenderContract:
    """Mixin of contract tests; set ``model_class`` and (optionally) ``params``."""

    model_class: ClassVar[type[Recommender]]
    params: ClassVar[dict[str, Any]] = {}
    #: False for models that rank every user the same way (popularity).
    personalized: ClassVar[bool] = True

    # ---- helpers ---------------------------------------------------------------------------------
    def make(self, **overrides: Any) -> Recommender:
        return self.model_class({**self.params, **overrides})

    def fit(self, inter: Interactions, **overrides: Any) -> Recommender:
        emb = parity_embeddings(inter.item_ids) if self.model_class.uses_embeddings else None
        return self.make(**overrides).fit(inter, item_embeddings=emb)

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls) -> tuple[Recommender, Interactions]:
        """One model per test class, fitted on ``checkerboard(12, extra_items=3)``; tests only
        read it (``recommend`` and ``score_users`` leave the model as it was)."""
        inter = checkerboard(12, extra_items=3)
        return cls().fit(inter), inter

    # ---- known answer ----------------------------------------------------------------------------
    def test_checkerboard_top1_is_withheld_item(self) -> None:
        inter = checkerboard(20)
        model = self.fit(inter)
        recs = model.recommend(k=3)
        top = recs.filter(pl.col("rank") == 1)
        assert top.height == inter.n_users
        if self.personalized:
            expected = [f"i{u[1:]}" for u in top["user_id"]]
            assert top["item_id"].to_list() == expected
        else:
            self._check_popularity_answer(model)

    def _check_popularity_answer(self, model: Recommender) -> None:
        # planted counts: item p0 has 3 users, p1 2, p2 1; user z has none of them
        rows = [
            ("a", "p0"),
            ("b", "p0"),
            ("c", "p0"),
            ("a", "p1"),
            ("b", "p1"),
            ("a", "p2"),
            ("z", "q"),
        ]
        inter = Interactions.from_frame(
            pl.DataFrame(rows, schema=["user_id", "item_id"], orient="row")
        )
        recs = self.fit(inter).recommend(["z"], k=3)
        assert recs["item_id"].to_list() == ["p0", "p1", "p2"]

    # ---- contract --------------------------------------------------------------------------------
    def test_unknown_users_get_no_rows(self, fitted: tuple[Recommender, Interactions]) -> None:
        model, _inter = fitted
        recs = model.recommend(["nobody", "u01", "ghost"], k=2)
        assert set(recs["user_id"]) == {"u01"}
        assert model.recommend(["nobody"], k=2).height == 0
        assert model.recommend([], k=2).height == 0

    def test_zero_interactions_raise_value_error_naming_the_class(self) -> None:
        empty = Interactions.from_frame(
            pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String}), item_ids=["a", "b"]
        )
        with pytest.raises(ValueError, match=self.model_class.__name__):
            self.make().fit(empty)

    def test_not_fitted_error_names_the_class(self) -> None:
        model = self.make()
        with pytest.raises(NotFittedError, match=self.model_class.__name__):
            model.recommend(["u00"], k=1)
        with pytest.raises(NotFittedError, match="fit"):
            model.save("/nonexistent/never-written")

    def test_unknown_config_key_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="no_such_param"):
            self.model_class(no_such_param=1)

    def test_save_load_round_trip(
        self, tmp_path: Path, fitted: tuple[Recommender, Interactions]
    ) -> None:
        model, _inter = fitted
        model.save(tmp_path / "m")
        assert not list((tmp_path / "m").glob("*.pkl"))
        loaded = Recommender.load(tmp_path / "m")
        assert type(loaded) is self.model_class
        assert loaded.config == model.config
        assert loaded.recommend(k=5).equals(model.recommend(k=5))
        np.testing.assert_array_equal(loaded.score_users(["u03"]), model.score_users(["u03"]))

    def test_two_fits_with_one_seed_are_identical(self) -> None:
        inter = checkerboard(12)
        a = self.fit(inter, seed=7).score_users(list(inter.user_ids))
        b = self.fit(inter, seed=7).score_users(list(inter.user_ids))
        np.testing.assert_array_equal(a, b)

    def test_k_larger_than_catalog_returns_every_unseen_item_once(
        self, fitted: tuple[Recommender, Interactions]
    ) -> None:
        model, inter = fitted
        recs = model.recommend(["u00", "u01"], k=1000)
        for user, seen in (("u00", 5), ("u01", 5)):  # 6 items share a user's parity, less itself
            mine = recs.filter(pl.col("user_id") == user)
            assert mine.height == inter.n_items - seen
            assert mine["item_id"].n_unique() == mine.height
            assert mine["rank"].to_list() == list(range(1, mine.height + 1))
            assert mine["score"].is_sorted(descending=True)

    def test_block_size_does_not_change_the_result(
        self, fitted: tuple[Recommender, Interactions]
    ) -> None:
        model, inter = fitted
        one = model.recommend(k=4, block_size=1)
        big = model.recommend(k=4, block_size=10_000)
        assert one.equals(big)
        assert one.height == inter.n_users * 4

    def test_threads_do_not_change_the_result(
        self, fitted: tuple[Recommender, Interactions]
    ) -> None:
        model, inter = fitted
        one = model.recommend(k=4, block_size=5, threads=1)
        for threads in (2, 3):  # 3 blocks of 5, 5 and 2 users
            assert model.recommend(k=4, block_size=5, threads=threads).equals(one)
        assert one.height == inter.n_users * 4

    def _restricted(
        self, model: Recommender, inter: Interactions, allowed: set[str], k: int
    ) -> pl.DataFrame:
        """The full ranking of every item, restricted to ``allowed``, first ``k`` per user."""
        full = model.recommend(k=inter.n_items)
        return (
            full.filter(pl.col("item_id").is_in(sorted(allowed)))
            .with_columns(pl.col("rank").cum_count().over("user_id").cast(pl.Int32).alias("rank"))
            .filter(pl.col("rank") <= k)
        )

    def test_candidate_items_restrict_the_ranking(
        self, fitted: tuple[Recommender, Interactions]
    ) -> None:
        model, inter = fitted
        items = list(inter.item_ids)
        candidates = items[1::3] + ["not-an-item"]  # odd and even items, and a catalog item
        recs = model.recommend(k=3, candidate_items=candidates)
        assert set(recs["item_id"]) <= set(candidates)
        assert recs.equals(self._restricted(model, inter, set(candidates), 3))
        assert recs.height > 0
        scores = model.score_users(list(inter.user_ids))
        u = inter.user_index(recs["user_id"].to_list())
        i = inter.item_index(recs["item_id"].to_list())
        np.testing.assert_array_equal(recs["score"].to_numpy(), scores[u, i])
        assert model.recommend(k=3, candidate_items=[]).height == 0

    def test_exclude_items_are_never_recommended(
        self, fitted: tuple[Recommender, Interactions]
    ) -> None:
        model, inter = fitted
        items = list(inter.item_ids)
        excluded = items[::2] + ["not-an-item"]
        recs = model.recommend(k=3, exclude_items=excluded)
        assert not set(recs["item_id"]) & set(excluded)
        assert recs.equals(self._restricted(model, inter, set(items) - set(excluded), 3))
        both = model.recommend(k=3, candidate_items=items[:9], exclude_items=items[:3])
        assert both.equals(self._restricted(model, inter, set(items[3:9]), 3))

    def test_catalog_items_without_interactions_score_finite(
        self, fitted: tuple[Recommender, Interactions]
    ) -> None:
        model, inter = fitted
        scores = model.score_users(list(inter.user_ids))
        assert scores.shape == (inter.n_users, inter.n_items)
        assert scores.dtype == np.float32
        assert np.isfinite(scores).all()

    def test_recommendations_exclude_seen_items(
        self, fitted: tuple[Recommender, Interactions]
    ) -> None:
        model, inter = fitted
        recs = model.recommend(k=10)
        seen = inter.to_frame().select("user_id", "item_id")
        assert recs.join(seen, on=["user_id", "item_id"], how="semi").height == 0
        with_seen = model.recommend(["u00"], k=10, exclude_seen=False)
        assert with_seen.height == 10
