"""The published-protocol experiment: files in, tuned models, recommendations and metrics out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from threadpoolctl import threadpool_limits

import recsys_core.experiment as experiment
from recsys_core.experiment import read_interaction_file, run_experiment
from recsys_core.tuning import tune as real_tune


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """Tiny matrices: a second BLAS thread only adds contention on a shared CI machine."""
    with threadpool_limits(limits=1):
        yield


def write_protocol(tmp_path: Path, n_users: int = 80, seed: int = 0) -> tuple[Path, Path]:
    """Clustered ratings split 75/25 per user into train.csv and test.parquet.

    Ids look numeric with leading zeros ("007") to check they stay strings exactly as written.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for u in range(n_users):
        c = u % 4
        items = c * 15 + rng.choice(15, 8, replace=False)
        rows = [
            (f"{u:03d}", f"{i:03d}", float(rng.integers(1, 6)), 1_700_000_000 + j)
            for j, i in enumerate(items)
        ]
        train += rows[:6]
        test += rows[6:]
    cols = ["user_id", "item_id", "value", "timestamp"]
    tr = pl.DataFrame(train, schema=cols, orient="row")
    te = pl.DataFrame(test, schema=cols, orient="row")
    tr.write_csv(tmp_path / "train.csv")
    te.write_parquet(tmp_path / "test.parquet")
    return tmp_path / "train.csv", tmp_path / "test.parquet"


def test_experiment_writes_recommendations_and_metrics(tmp_path: Path) -> None:
    train, test = write_protocol(tmp_path)
    out = tmp_path / "out"
    report = run_experiment(
        train, test, out, models=["popularity", "ease"], k=5, tune_calls=3, seed=1
    )

    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["best_model"] == report["best_model"]
    models = report["models"]
    assert set(models) == {"popularity", "ease"}
    # chosen by validation, not by test
    best_valid = max(models, key=lambda m: models[m]["validation"]["ndcg"])
    assert report["best_model"] == best_valid == "ease"
    assert report["best_by"] == "validation ndcg@5"
    assert models["ease"]["test"]["ndcg"] > models["popularity"]["test"]["ndcg"]
    for m in models.values():
        assert set(m["test"]) >= {"precision", "recall", "ndcg", "map"}
        assert m["fit_seconds"] >= 0 and m["n_trials"] == 3

    recs = pl.read_parquet(out / "recommendations.parquet")
    assert recs.columns == ["user_id", "item_id", "rank", "score", "model_id"]
    assert recs["model_id"].unique().to_list() == [models["ease"]["model_id"]]
    test_df = pl.read_parquet(test)
    assert set(recs["user_id"]) == set(test_df["user_id"])
    assert recs.group_by("user_id").len()["len"].max() == 5
    assert "007" in recs["user_id"].to_list()  # ids stay strings exactly as written
    train_df = read_interaction_file(train)
    assert recs.join(train_df, on=["user_id", "item_id"], how="semi").height == 0
    for name in ("popularity", "ease"):
        assert (out / f"recommendations_{name}.parquet").is_file()
        assert (out / "tuning" / name / "trials.parquet").is_file()
        assert (out / "tuning" / name / "convergence.png").read_bytes()[:4] == b"\x89PNG"


def _pairs(frame: pl.DataFrame) -> set[tuple[str, str]]:
    return set(frame.select("user_id", "item_id").iter_rows())


def test_the_search_never_sees_the_test_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, test = write_protocol(tmp_path)
    test_pairs = _pairs(pl.read_parquet(test))
    events: list[str] = []
    seen_by_search: set[tuple[str, str]] = set()

    def spy_tune(name, train_inter, valid, **kwargs):
        events.append(f"tune:{name}")
        seen_by_search.update(_pairs(train_inter.to_frame()))
        seen_by_search.update(_pairs(valid))
        return real_tune(name, train_inter, valid, **kwargs)

    def spy_read(path):
        events.append(f"read:{Path(path).name}")
        return read_interaction_file(path)

    monkeypatch.setattr(experiment, "tune", spy_tune)
    monkeypatch.setattr(experiment, "read_interaction_file", spy_read)
    run_experiment(
        train, test, tmp_path / "out", models=["ease", "itemknn"], k=5, tune_calls=2, seed=0
    )

    assert seen_by_search, "the spy saw no search"
    assert not seen_by_search & test_pairs
    # the test file is read only after every search has finished
    assert events == ["read:train.csv", "tune:ease", "tune:itemknn", "read:test.parquet"]
    # the check can fail: the train file's pairs are all seen by the search
    assert _pairs(read_interaction_file(train)) <= seen_by_search


def test_catalog_with_vectors_feeds_the_hybrid(tmp_path: Path) -> None:
    train, test = write_protocol(tmp_path, n_users=40)
    rng = np.random.default_rng(0)
    ids = [f"{i:03d}" for i in range(60)] + ["999"]  # "999": a catalog item nobody rated
    items = pl.DataFrame(
        {"item_id": ids, "vector": rng.standard_normal((len(ids), 8)).astype(np.float32)},
        schema={"item_id": pl.String, "vector": pl.Array(pl.Float32, 8)},
    )
    items.write_parquet(tmp_path / "items.parquet")
    report = run_experiment(
        train, test, tmp_path / "out", items_path=tmp_path / "items.parquet",
        models=["hybrid"], k=5, tune_calls={"hybrid": 1}, seed=0,
    )  # fmt: skip
    assert report["protocol"]["n_items"] == 61
    assert report["models"]["hybrid"]["test"]["ndcg"] > 0


def test_input_errors_name_the_file_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    pl.DataFrame({"user": ["a"], "item_id": ["b"]}).write_csv(bad)
    with pytest.raises(ValueError, match=r"bad.csv: missing column\(s\) \['user_id'\]"):
        read_interaction_file(bad)
    empty_id = tmp_path / "empty.csv"
    empty_id.write_text("user_id,item_id\na,b\n,c\n")
    with pytest.raises(ValueError, match="empty.csv data row 2: column 'user_id' is empty"):
        read_interaction_file(empty_id)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        run_experiment(bad, bad, tmp_path / "o", models=["nope"], tune_calls=0, seed=0)
