"""The published-protocol experiment: files in, tuned models, recommendations and metrics out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError
from threadpoolctl import threadpool_limits

import recsys_core.experiment as experiment
from recsys_core.experiment import (
    ExperimentConfig,
    parse_tune_calls,
    read_interaction_file,
    run_experiment,
)
from recsys_core.models import EASE, MODELS
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


# ---- the validation protocol is an option ----------------------------------------------------------
def _split_of(validation: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(5)
    rows = [
        (f"u{u:02d}", f"i{i:02d}", 1_700_000_000 + int(rng.integers(0, 10**6)))
        for u in range(30)
        for i in rng.choice(40, 12, replace=False)
    ]
    df = pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")
    vocab = sorted(df["item_id"].unique().to_list())
    tr, valid, full = experiment.tuning_split(
        df, vocab, validation=validation, fraction=0.25, seed=3
    )
    assert full.nnz == df.height and tr.nnz + valid.height == df.height
    back = ["user_id", "item_id"]  # timestamps back from the input (pairs are unique)
    return tr.to_frame().select(back).join(df, on=back), valid.join(df, on=back)


def test_each_validation_protocol_holds_out_what_it_says() -> None:
    tr, va = _split_of("per-user")
    n = va.group_by("user_id").len()
    assert n.height == 30 and (n["len"] == 3).all()  # round(0.25 * 12) of every user
    tr, va = _split_of("per-item")
    assert set(tr["item_id"]) == set(tr["item_id"]) | set(va["item_id"])  # items keep train users
    assert va.group_by("user_id").len()["len"].n_unique() > 1  # not per user
    tr, va = _split_of("temporal")
    assert tr["timestamp"].max() < va["timestamp"].min()  # one cut in time
    assert va.height == pytest.approx(0.25 * (tr.height + va.height), abs=2)
    with pytest.raises(ValueError, match="unknown validation 'daily'"):
        _split_of("daily")


def test_validation_choice_reaches_the_search_and_metrics_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, test = write_protocol(tmp_path)
    seen: list[pl.DataFrame] = []

    def spy_tune(name, train_inter, valid, **kwargs):
        seen.append(valid)
        return real_tune(name, train_inter, valid, **kwargs)

    monkeypatch.setattr(experiment, "tune", spy_tune)
    report = run_experiment(
        train, test, tmp_path / "out", models=["popularity"], tune_calls=1, seed=0,
        validation="temporal", valid_fraction=0.25,
    )  # fmt: skip
    train_df = read_interaction_file(train)
    newest = train_df.filter(pl.col("timestamp") >= train_df["timestamp"].quantile(0.75))
    assert _pairs(seen[0]) == _pairs(newest)
    assert report["config"]["validation"] == "temporal"
    assert report["protocol"]["validation"].startswith("temporal holdout: the newest 0.25")
    assert report["protocol"]["n_validation_pairs"] == newest.height
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert on_disk["config"] == report["config"]

    no_time = tmp_path / "no_time.csv"
    train_df.drop("timestamp").write_csv(no_time)
    with pytest.raises(ValueError, match=r"no_time.csv: validation 'temporal' needs a 'timestamp'"):
        run_experiment(no_time, test, tmp_path / "o2", models=["popularity"], tune_calls=1,
                       seed=0, validation="temporal")  # fmt: skip


def test_config_errors_are_caught_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"tune_calls has no budget for \['ease'\]"):
        ExperimentConfig(models=["popularity", "ease"], tune_calls={"popularity": 2})
    with pytest.raises(ValidationError, match="validation"):
        ExperimentConfig(validation="per-day")
    with pytest.raises(ValidationError, match="unknown metric 'auc'"):
        ExperimentConfig(metric="auc")
    assert ExperimentConfig(models=["ease"], tune_calls={"ease": 3, "als": 1}).budgets() == {
        "ease": 3
    }


def test_tune_calls_flag() -> None:
    assert parse_tune_calls("20", ["ease", "als"]) == 20
    assert parse_tune_calls("20,ease=30", ["ease", "als"]) == {"ease": 30, "als": 20}
    assert parse_tune_calls("ease=30,als=12", ["ease", "als"]) == {"ease": 30, "als": 12}
    with pytest.raises(ValueError, match=r"'ease:30' is not a number or model=number"):
        parse_tune_calls("ease:30", ["ease"])


# ---- is the pick a clear win? --------------------------------------------------------------------
class EASETwin(EASE):
    """EASE under another name: the same recommendations, so a difference of exactly zero."""

    name = "ease_twin"


def test_metrics_json_says_when_the_pick_is_within_validation_noise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(MODELS, "ease_twin", EASETwin)
    train, test = write_protocol(tmp_path)
    tie = run_experiment(
        train, test, tmp_path / "tie", models=["ease", "ease_twin"], k=5,
        tune_calls={"ease": 1, "ease_twin": 1}, seed=0,
    )["selection"]  # fmt: skip
    assert (tie["winner"], tie["runner_up"]) == ("ease", "ease_twin")  # tie: the first listed
    assert tie["difference"] == 0.0 and tie["ci"] == [0.0, 0.0] and tie["within_noise"] is True
    assert "not a clear win" in tie["note"] and tie["n_users"] > 0

    clear = run_experiment(
        train, test, tmp_path / "clear", models=["popularity", "ease"], k=5, tune_calls=2, seed=0
    )["selection"]
    assert (clear["winner"], clear["runner_up"]) == ("ease", "popularity")
    assert clear["ci"][0] > 0 and clear["within_noise"] is False
    assert clear["difference"] == pytest.approx(
        clear["winner_score"] - clear["runner_up_score"], abs=1e-9
    )  # the per-user refit reproduces the search's scores
    one = run_experiment(
        train, test, tmp_path / "one", models=["popularity"], tune_calls=1, seed=0
    )["selection"]
    assert one["runner_up"] is None and one["within_noise"] is False


# ---- the command line runs the same path -----------------------------------------------------------
def test_cli_runs_the_experiment_with_the_validation_option(tmp_path: Path) -> None:
    from deployments.cli import main

    train, test = write_protocol(tmp_path)
    argv = ["experiment", "--train", str(train), "--test", str(test), "--models", "popularity,ease",
            "--k", "5", "--tune-calls", "2,ease=3", "--seed", "1", "--validation", "per-item",
            "--valid-fraction", "0.25", "--out", str(tmp_path / "cli")]  # fmt: skip
    assert main(argv) == 0
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert cli["config"]["validation"] == "per-item"
    assert cli["protocol"]["tune_calls"] == {"popularity": 2, "ease": 3}
    direct = run_experiment(
        train, test, tmp_path / "direct", models=["popularity", "ease"], k=5,
        tune_calls={"popularity": 2, "ease": 3}, seed=1, validation="per-item",
        valid_fraction=0.25,
    )  # fmt: skip
    for name in ("popularity", "ease"):
        for key in ("params", "validation", "test", "model_id"):
            assert cli["models"][name][key] == direct["models"][name][key], (name, key)
    assert cli["selection"] == direct["selection"]


def test_the_benchmark_prints_the_command_of_its_own_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench_ml100k's README command, pasted into the CLI, gives the bench's config."""
    import importlib.util

    from deployments.cli import main

    spec = importlib.util.spec_from_file_location(
        "bench_ml100k", Path(__file__).parents[1] / "benchmarks" / "bench_ml100k.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    got: list[ExperimentConfig] = []
    monkeypatch.setattr(experiment, "run_experiment", lambda *a, **kw: got.append(a[3]) or {})
    command = bench.cli_command(bench.PUBLISHED, tmp_path, tmp_path / "out", None)
    assert main(command.split()[1:]) == 0
    assert got == [bench.PUBLISHED]
    assert bench.PUBLISHED.validation == "per-item" and bench.PUBLISHED.valid_fraction == 0.25
