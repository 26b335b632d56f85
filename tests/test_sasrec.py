"""SASRec: causal masking, a planted sequential pattern, persistence, determinism, text init."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys_core.interactions import Interactions
from recsys_core.models import Popularity, Recommender
from recsys_core.models.sasrec import SASRec, _left_pad
from recsys_core.testing.contract import RecommenderContract

torch = pytest.importorskip("torch")

FAST = {
    "epochs": 20,
    "learning_rate": 2e-2,
    "batch_size": 8,
    "embedding_size": 16,
    "max_len": 20,
    "patience": 30,
    "dropout": 0.1,
    "reg": 0.0,
}


class TestSASRec(RecommenderContract):
    model_class = SASRec
    params = FAST


def planted(cold_twin: bool = False) -> tuple[Interactions, list[str], list[str]]:
    """A -> B -> C chains behind blockbusters X, Y that the probe users lack.

    24 users watch ``X, Y``, two of four noise items, ``A, B, C``, then ``D`` and 0-2 noise items
    (in time order; fitting holds each user's last item out for validation, so the tail keeps
    ``B -> C`` in training, and its varying length keeps ``A, B, C`` off fixed positions); 16 users
    watch only ``X, Y`` and a noise item. Probes: 4 users end their history with ``A``, 4 with
    ``B``. Popularity ranks ``X`` first for every probe; the next item after ``A`` is ``B`` and
    after ``B`` is ``C``. ``cold_twin`` adds a catalog item ``T`` nobody touched.
    Returns the interactions and the two probe groups.
    """
    rng = np.random.default_rng(0)
    noise = ["n0", "n1", "n2", "n3"]
    rows: list[tuple[str, str, int]] = []

    def user(name: str, items: list[str]) -> None:
        rows.extend((name, item, 1000 + 10 * t) for t, item in enumerate(items))

    for u in range(24):  # a tail of 1-3 items after C: see the docstring
        tail = ["D", *rng.choice(noise, u % 3, replace=False)]
        user(f"full{u:02d}", ["X", "Y", *rng.choice(noise, 2, replace=False), "A", "B", "C", *tail])
    for u in range(16):
        user(f"pop{u:02d}", ["X", "Y", str(rng.choice(noise))])
    probes_a = [f"pa{u}" for u in range(4)]
    probes_b = [f"pb{u}" for u in range(4)]
    for name in probes_a:
        user(name, [str(rng.choice(noise)), "A"])
    for name in probes_b:
        user(name, [str(rng.choice(noise)), "A", "B"])
    events = pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")
    catalog = sorted(set(events["item_id"])) + (["T"] if cold_twin else [])
    return Interactions.from_frame(events, item_ids=catalog), probes_a, probes_b


def text_vectors(item_ids: np.ndarray, twin_of: str = "B") -> pl.DataFrame:
    """Random unit text vectors; the cold item ``T`` gets exactly ``twin_of``'s vector."""
    rng = np.random.default_rng(1)
    vecs = {t: rng.standard_normal(16).astype(np.float32) for t in item_ids}
    vecs["T"] = vecs[twin_of]
    return pl.DataFrame(
        {"item_id": list(item_ids), "vector": np.stack([vecs[t] for t in item_ids])},
        schema={"item_id": pl.String, "vector": pl.Array(pl.Float32, 16)},
    )


#: The planted pattern without text: a smaller step, more epochs (~5 s a fit on a loaded machine).
SEQ = {**FAST, "epochs": 30, "learning_rate": 1e-2, "patience": 30, "text_init": False}


@pytest.fixture(scope="module")
def planted_model() -> tuple[SASRec, Interactions, list[str], list[str]]:
    inter, probes_a, probes_b = planted()
    return SASRec(SEQ).fit(inter), inter, probes_a, probes_b


def top1(model: Recommender, users: list[str]) -> list[str]:
    return model.recommend(users, k=1)["item_id"].to_list()


def test_no_position_attends_to_the_future() -> None:
    inter, *_ = planted()
    net = SASRec({**FAST, "epochs": 1, "text_init": False}).fit(inter).net_
    seq = torch.tensor(_left_pad([np.array([0, 1, 2, 3, 4]), np.array([5, 6])], 8))
    changed = seq.clone()
    changed[:, -1] = 8  # a different last item
    with torch.no_grad():
        a, b = net(seq), net(changed)
    torch.testing.assert_close(a[:, :-1], b[:, :-1], rtol=0, atol=0)
    assert not torch.equal(a[:, -1], b[:, -1])
    with torch.no_grad():  # a row of padding only stays finite (every position sees itself)
        assert torch.isfinite(net(torch.zeros(1, 8, dtype=torch.long))).all()


def test_planted_sequence_is_learned_where_popularity_fails(planted_model) -> None:
    model, inter, probes_a, probes_b = planted_model
    assert top1(model, probes_a) == ["B"] * len(probes_a)
    assert top1(model, probes_b) == ["C"] * len(probes_b)
    pop = Popularity().fit(inter)
    assert set(top1(pop, probes_a + probes_b)) == {"X"}


def test_save_load_keeps_the_time_order_and_the_scores(planted_model, tmp_path: Path) -> None:
    model, inter, probes_a, probes_b = planted_model
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")  # its interactions have no timestamps any more
    assert isinstance(loaded, SASRec) and loaded.interactions_.last_ts is None
    users = probes_a + probes_b + ["full00"]
    np.testing.assert_array_equal(loaded.score_users(users), model.score_users(users))
    assert top1(loaded, probes_b) == ["C"] * len(probes_b)
    assert loaded.best_epoch_ == model.best_epoch_ >= 1
    assert loaded.history_ == model.history_ and len(model.history_) >= model.best_epoch_


def test_two_fits_with_one_seed_are_identical_and_another_seed_differs() -> None:
    inter, probes_a, probes_b = planted()
    users = probes_a + probes_b
    short = {**SEQ, "epochs": 3}  # determinism needs no convergence
    first = SASRec(short).fit(inter).score_users(users)
    np.testing.assert_array_equal(SASRec(short).fit(inter).score_users(users), first)
    assert not np.array_equal(SASRec({**short, "seed": 3}).fit(inter).score_users(users), first)


def test_text_init_scores_a_cold_twin_like_the_item_it_copies() -> None:
    inter, probes_a, _ = planted(cold_twin=True)
    emb = text_vectors(inter.item_ids)
    model = SASRec({**SEQ, "text_init": True}).fit(inter, item_embeddings=emb)
    # after A: B first, then its cold twin T (same text vector, no interaction at all)
    recs = model.recommend(probes_a, k=2)
    assert recs["item_id"].to_list() == ["B", "T"] * len(probes_a)
    # without text a cold item has nothing to go on: its embedding stays zero, its score 0
    plain = SASRec({**SEQ, "epochs": 2}).fit(inter, item_embeddings=emb)  # text_init=False
    assert (plain.score_users(probes_a)[:, inter.item_index(["T"])[0]] == 0).all()


@pytest.mark.parametrize("monitor", ["loss", "ndcg"])
def test_early_stopping_keeps_the_best_epoch_and_waits_patience_epochs(monitor: str) -> None:
    inter, probes_a, _ = planted()
    # a step far too large: the validation score peaks early and then wanders
    cfg = {**SEQ, "epochs": 25, "learning_rate": 0.2, "patience": 3, "monitor": monitor}
    model = SASRec(cfg).fit(inter)
    hist = model.history_
    key = (
        (lambda h: (-h["valid_loss"], h["valid_ndcg"]))
        if monitor == "loss"
        else (lambda h: (h["valid_ndcg"], -h["valid_loss"]))
    )
    best = max(hist, key=key)  # the first of equals, as training keeps the first
    assert model.best_epoch_ == best["epoch"]
    assert len(hist) < cfg["epochs"] and len(hist) == best["epoch"] + cfg["patience"]
    assert all(h["sequences_per_s"] > 0 for h in hist)
    # the kept weights are the best epoch's: training (deterministically) just that far and no
    # further gives the same scores
    upto = SASRec({**cfg, "epochs": best["epoch"], "patience": 100}).fit(inter)
    np.testing.assert_array_equal(upto.score_users(probes_a), model.score_users(probes_a))
