"""The on-disk model registry: ids, register/list/load, the atomic champion pointer, rollback."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import polars as pl
import pytest

from recsys_core.interactions import Interactions
from recsys_core.io import Warehouse
from recsys_core.models import EASE, Popularity
from recsys_core.registry import MODEL_ID_RE, ModelRegistry, UnknownModelError, make_model_id

DAY = dt.date(2026, 1, 31)


@pytest.fixture(scope="module")
def fitted() -> EASE:
    df = pl.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2", "u3", "u3", "u4"],
            "item_id": ["a", "b", "b", "c", "a", "c", "d"],
        }
    )
    return EASE(reg=1.0).fit(Interactions.from_frame(df))


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(Warehouse(tmp_path / "wh").models_dir)


def register(reg: ModelRegistry, model, model_id: str, run_date=DAY) -> dict:
    return reg.register(
        model,
        model_id=model_id,
        name=model_id.split("-")[0],
        params={"reg": 1.0},
        data_window={"first": "2026-01-01", "last": run_date.isoformat()},
        metrics={"ndcg": 0.3},
        code_version="0.1.0+gabc",
        embedding_model_id=None,
        run_date=run_date,
    )


def pointer(reg: ModelRegistry) -> dict:
    return json.loads((reg.root / "champion.json").read_text())


# ---- ids -----------------------------------------------------------------------------------------
def test_make_model_id_is_deterministic_and_safe():
    a = make_model_id("ease", DAY, {"reg": 250.0, "binarize": True})
    assert a == make_model_id("ease", "2026-01-31", {"binarize": True, "reg": 250.0})
    assert a.startswith("ease-2026-01-31-") and len(a.rsplit("-", 1)[1]) == 8
    assert a != make_model_id("ease", DAY, {"reg": 251.0, "binarize": True})
    assert a != make_model_id("ease", dt.date(2026, 2, 1), {"reg": 250.0, "binarize": True})
    for bad in ("../etc", "EASE", "ease/x", "", "a b"):
        with pytest.raises(ValueError, match="model name"):
            make_model_id(bad, DAY, {})
    # the scheme of the ids already in warehouses is unchanged (they are looked up by id)
    assert make_model_id("ease", DAY, {"reg": 250.0}) == "ease-2026-01-31-1c4e0917"
    # one scheme: without a run date (recsys experiment) the same digest, no date
    assert make_model_id("ease", None, {"reg": 250.0}) == "ease-1c4e0917"
    assert MODEL_ID_RE.match(make_model_id("ease", None, {"reg": 250.0}))


@pytest.mark.parametrize("bad", ["../x", "x/y", ".hidden", "champion.json", "A-1", "", "x" * 200])
def test_unsafe_ids_are_refused(registry, fitted, bad):
    with pytest.raises(ValueError, match="not safe"):
        register(registry, fitted, bad)
    assert not registry.root.exists() or registry.ids() == []


# ---- register / list / load ----------------------------------------------------------------------
def test_register_list_and_load_round_trip(registry, fitted, tmp_path):
    e1 = register(registry, fitted, "ease-2026-01-30-aaaaaaaa", run_date=dt.date(2026, 1, 30))
    saved = fitted.save(tmp_path / "elsewhere")  # a directory works too
    pop = Popularity().fit(fitted.interactions_)
    e2 = register(registry, saved, "ease-2026-01-31-bbbbbbbb")
    register(registry, pop, "popularity-2026-01-29-cccccccc", run_date=dt.date(2026, 1, 29))
    assert e1["run_date"] == "2026-01-30" and e1["metrics"] == {"ndcg": 0.3}
    assert e2["code_version"] == "0.1.0+gabc" and "created_at" in e2
    assert [e["model_id"] for e in registry.list()] == [
        "popularity-2026-01-29-cccccccc",
        "ease-2026-01-30-aaaaaaaa",
        "ease-2026-01-31-bbbbbbbb",
    ]
    files = sorted(p.name for p in (registry.root / "ease-2026-01-31-bbbbbbbb").iterdir())
    assert files == ["arrays.npz", "entry.json", "model.json"]
    loaded = registry.load_model("ease-2026-01-31-bbbbbbbb")
    assert isinstance(loaded, EASE)
    assert loaded.recommend(None, 2).equals(fitted.recommend(None, 2))
    assert registry.get("ease-2026-01-30-aaaaaaaa") == e1
    assert [p.name for p in registry.root.iterdir() if p.name.startswith(".tmp-")] == []


def test_model_arrays_are_a_deflated_npz_that_numpy_reads_without_pickle(fitted, tmp_path):
    import zipfile

    import numpy as np

    path = fitted.save(tmp_path / "m") / "arrays.npz"
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    assert {i.filename for i in infos} >= {"__item_ids.npy", "__seen_indices.npy"}
    assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in infos)
    assert sum(i.compress_size for i in infos) < sum(i.file_size for i in infos)
    with np.load(path, allow_pickle=False) as z:
        assert list(z["__item_ids"]) == list(fitted.item_ids_)
        assert (z["__seen_indices"] == fitted.interactions_.matrix.indices).all()


def test_reregister_replaces_and_register_failure_leaves_nothing(registry, fitted, monkeypatch):
    register(registry, fitted, "ease-2026-01-31-aaaaaaaa")
    again = register(registry, fitted, "ease-2026-01-31-aaaaaaaa", run_date=dt.date(2026, 2, 1))
    assert again["run_date"] == "2026-02-01" and len(registry.ids()) == 1

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        register(registry, fitted, "ease-2026-01-31-dddddddd")
    monkeypatch.undo()
    assert registry.ids() == ["ease-2026-01-31-aaaaaaaa"]
    assert [p.name for p in registry.root.iterdir() if p.name.startswith(".")] == []


def test_register_rejects_a_directory_without_a_model(registry, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no model.json"):
        registry.register(
            tmp_path / "empty",
            model_id="ease-2026-01-31-aaaaaaaa",
            name="ease",
            params={},
            data_window={},
            metrics={},
            code_version="x",
            embedding_model_id=None,
            run_date=DAY,
        )


def test_unknown_id_lists_known_ids(registry, fitted):
    with pytest.raises(UnknownModelError, match=r"known ids: \(none\)"):
        registry.load_model("ease-2026-01-31-00000000")
    register(registry, fitted, "ease-2026-01-31-aaaaaaaa")
    with pytest.raises(UnknownModelError, match="ease-2026-01-31-aaaaaaaa"):
        registry.promote("ease-2026-01-31-00000000", "nope")
    assert registry.champion() is None


def test_shards_loading_the_champion_at_once_load_it_once(registry, fitted, monkeypatch):
    """Score shards on one worker's threads ask for the champion at the same moment: the first
    loads it, the others wait for that copy (no second download or parse)."""
    import threading
    import time

    register(registry, fitted, "ease-1")
    loads = []
    real = ModelRegistry._load

    def slow_load(self, model_id, entry):
        loads.append(model_id)
        time.sleep(0.3)  # long enough for every thread to arrive while the first one loads
        return real(self, model_id, entry)

    monkeypatch.setattr(ModelRegistry, "_load", slow_load)
    got: list = []
    threads = [
        threading.Thread(target=lambda: got.append(registry.load_model("ease-1", cached=True)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == ["ease-1"]
    assert len(got) == 4 and all(m is got[0] for m in got)
    assert registry.load_model("ease-1") is not got[0]  # uncached: a fresh copy, loaded again
    assert loads == ["ease-1", "ease-1"]


# ---- promote / rollback --------------------------------------------------------------------------
def test_promote_rollback_and_history(registry, fitted):
    ids = [f"ease-2026-01-3{j}-aaaaaaaa" for j in range(3)]
    for j, i in enumerate(ids):
        register(registry, fitted, i, run_date=dt.date(2026, 1, 29 + j))
    assert registry.champion() is None
    for i in ids:
        registry.promote(i, f"better: {i}")
    champ = registry.champion()
    assert champ["model_id"] == ids[2] and champ["promotion_reason"] == f"better: {ids[2]}"
    assert pointer(registry)["previous"] == ids[:2]
    registry.promote(ids[2], "re-run of the same night")  # no duplicate in the chain
    assert pointer(registry)["previous"] == ids[:2]

    assert registry.rollback("bad clicks")["model_id"] == ids[1]
    assert registry.champion()["model_id"] == ids[1]
    assert registry.rollback()["model_id"] == ids[0]  # walks further back, not to ids[2]
    with pytest.raises(RuntimeError, match="nothing to roll back"):
        registry.rollback()
    actions = [(h["action"], h["model_id"]) for h in registry.history()]
    assert actions == [
        ("promote", ids[0]),
        ("promote", ids[1]),
        ("promote", ids[2]),
        ("promote", ids[2]),
        ("rollback", ids[1]),
        ("rollback", ids[0]),
    ]
    assert registry.history()[4]["rolled_back"] == ids[2]


def test_rollback_skips_deleted_models(registry, fitted):
    import shutil

    ids = ["ease-2026-01-29-aaaaaaaa", "ease-2026-01-30-aaaaaaaa", "ease-2026-01-31-aaaaaaaa"]
    for i in ids:
        register(registry, fitted, i)
        registry.promote(i, "x")
    shutil.rmtree(registry.root / ids[1])
    assert registry.rollback()["model_id"] == ids[0]


def test_interrupted_promote_keeps_the_old_pointer(registry, fitted, monkeypatch):
    register(registry, fitted, "ease-2026-01-30-aaaaaaaa")
    register(registry, fitted, "ease-2026-01-31-bbbbbbbb")
    registry.promote("ease-2026-01-30-aaaaaaaa", "first")
    before = (registry.root / "champion.json").read_bytes()
    history_before = registry.history()

    def boom(*a, **k):
        raise KeyboardInterrupt("killed mid-promote")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        registry.promote("ease-2026-01-31-bbbbbbbb", "second")
    monkeypatch.undo()
    assert (registry.root / "champion.json").read_bytes() == before
    ptr = pointer(registry)  # valid JSON naming a model that exists
    assert (registry.root / ptr["model_id"] / "model.json").is_file()
    assert registry.champion()["model_id"] == "ease-2026-01-30-aaaaaaaa"
    assert registry.history() == history_before
    assert [p.name for p in registry.root.iterdir() if p.name.startswith(".tmp-")] == []
    registry.promote("ease-2026-01-31-bbbbbbbb", "second")  # and it works afterwards
    assert registry.champion()["model_id"] == "ease-2026-01-31-bbbbbbbb"


def test_a_pointer_to_a_missing_model_is_a_clear_error(registry, fitted):
    register(registry, fitted, "ease-2026-01-31-aaaaaaaa")
    registry.promote("ease-2026-01-31-aaaaaaaa", "x")
    import shutil

    shutil.rmtree(registry.root / "ease-2026-01-31-aaaaaaaa")
    with pytest.raises(UnknownModelError, match="champion.json names a missing model"):
        registry.champion()


def test_champion_id_reads_the_pointer_and_load_model_uses_a_given_entry_of_that_id(
    registry, fitted, monkeypatch
):
    assert registry.champion_id() is None
    register(registry, fitted, "ease-2026-01-30-aaaaaaaa", run_date=dt.date(2026, 1, 30))
    register(registry, Popularity().fit(fitted.interactions_), "popularity-2026-01-29-cccccccc")
    registry.promote("ease-2026-01-30-aaaaaaaa", "first")
    assert registry.champion_id() == "ease-2026-01-30-aaaaaaaa"
    champion = registry.champion()
    reads = []
    entry = ModelRegistry.entry
    monkeypatch.setattr(ModelRegistry, "entry", lambda self, i: reads.append(i) or entry(self, i))
    assert isinstance(registry.load_model("ease-2026-01-30-aaaaaaaa", entry=champion), EASE)
    assert reads == []  # the champion's entry was not read again
    # an entry of another id is not trusted: the id's own entry is read
    pop = registry.load_model("popularity-2026-01-29-cccccccc", entry=champion)
    assert isinstance(pop, Popularity) and reads == ["popularity-2026-01-29-cccccccc"]
