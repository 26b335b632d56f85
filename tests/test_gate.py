"""The champion gate compares tonight's challenger with the model that is serving.

One small synthetic world, the core steps called directly: a good night (same recipe: the gate is
a regression check and the refit reproduces the serving artifact), a re-run (the challenger IS the
champion: no comparison with itself), and a planted bad night (the history's item ids shuffled by
a broken join: the refit is worse than the serving artifact and is refused, and the report says
why).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from recsys_core import pipeline
from recsys_core.config import Settings
from recsys_core.io import Warehouse, atomic_write_parquet, read_json, read_parquet
from recsys_core.landing import generate_synthetic
from recsys_core.registry import ModelRegistry
from recsys_core.results import EvaluateResult, RunSteps, TrainResult

END = dt.date(2026, 1, 31)
D1, D2 = END - dt.timedelta(days=1), END


def _settings(root: Path) -> Settings:
    return Settings(
        landing=root / "landing",
        warehouse=root / "warehouse",
        seed=5,
        embedding={"enabled": False},
        train={"models": ["ease"], "tune_calls": 2, "tune_initial_points": 2},
        evaluation={"holdout_days": 2, "bootstrap_samples": 200},
    )


def _night(settings: Settings, day: dt.date) -> tuple[TrainResult, EvaluateResult]:
    pipeline.ingest_step(settings, day)
    pipeline.clean_step(settings, day)
    train = pipeline.train_step(settings, day)
    return train, pipeline.evaluate_step(settings, day, train.challenger)


@pytest.fixture(scope="module")
def first_night(tmp_path_factory) -> Path:
    """A warehouse whose champion was trained on night D1 (good data)."""
    root = tmp_path_factory.mktemp("gate")
    generate_synthetic(root / "landing", users=300, items=150, days=16, seed=4, end_date=END)
    settings = _settings(root)
    _, ev = _night(settings, D1)
    assert ev.decision.promote and ev.champion_before is None
    return root


def _copy(src: Path, dst: Path) -> Settings:
    shutil.copytree(src, dst)
    return _settings(dst)


def test_good_night_same_recipe_is_a_regression_check(first_night, tmp_path):
    settings = _copy(first_night, tmp_path / "w")
    champion = ModelRegistry(Warehouse(settings.warehouse).models_dir).champion()
    train, ev = _night(settings, D2)
    gate = ev.gate
    assert train.challenger != champion["model_id"]
    assert gate.same_recipe is True
    assert "Same recipe as the serving champion" in gate.recipe_note
    assert [c.check for c in gate.checks] == ["regression"]
    assert gate.regression_days == (D2.isoformat(), D2.isoformat())
    # the refit on the artifact's own window and unchanged data is the artifact: no difference
    assert ev.decision.diff == pytest.approx(0.0, abs=1e-9)
    assert ev.decision.promote is True
    assert ev.champion_after == train.challenger
    assert ev.champion_entry.name == "ease" and ev.champion_entry.params

    # a re-run of the night: the challenger is now the champion and is not compared with itself
    again = pipeline.evaluate_step(settings, D2, train.challenger)
    assert again.decision.promote is False
    assert "IS the serving champion" in again.decision.reason
    assert again.champion_metrics is None and again.comparison is None
    stored = read_json(Warehouse(settings.warehouse).evaluation(D2))  # metrics.json
    assert stored == json.loads(json.dumps(again.model_dump())) and "comparison" not in stored


def test_planted_bad_night_is_refused_and_the_report_says_why(first_night, tmp_path):
    settings = _copy(first_night, tmp_path / "w")
    wh = Warehouse(settings.warehouse)
    champion = ModelRegistry(wh.models_dir).champion()
    # a broken join re-writes the history: every event's item id replaced by another's
    rng = np.random.default_rng(0)
    for day in wh.clean_dates("events"):
        if day <= D1:
            part = read_parquet(wh.clean("events", day))
            shuffled = part["item_id"].gather(rng.permutation(part.height))
            atomic_write_parquet(
                part.with_columns(shuffled.alias("item_id")), wh.clean("events", day)
            )
    ingest, clean = pipeline.ingest_step(settings, D2), pipeline.clean_step(settings, D2)
    train = pipeline.train_step(settings, D2)
    ev = pipeline.evaluate_step(settings, D2, train.challenger)
    d = ev.decision
    assert d.promote is False
    assert ev.champion_after == champion["model_id"] != train.challenger
    assert d.diff < -settings.evaluation.tolerance
    assert "Kept the champion" in d.reason and "Regression check" in d.reason

    score = pipeline.merge_scores(settings, D2, [pipeline.score_shard(settings, D2, 0, 1)])
    steps = RunSteps(ingest=ingest, clean=clean, train=train, evaluate=ev, score=score)
    summary = pipeline.finalize_step(settings, D2, steps)
    assert score.model_id == champion["model_id"]  # the kept champion serves tonight
    html = Path(summary.report).read_text()
    assert "Kept the champion" in html and "Regression check" in html
    assert "Same recipe as the serving champion" in html
    assert champion["model_id"] in html


def test_a_shard_staged_late_by_another_run_is_never_merged(first_night, tmp_path):
    """Shards used to share one staging name per (date, shard): a shard staged late by another
    run of the date (a Dask worker of a run that lost its lock: workers are not fenced) replaced
    this run's, and this run's merge published the other run's rows under its own model id.
    Each call now stages a file of its own, and the merge reads only the ones it was given."""
    settings = _copy(first_night, tmp_path / "w")
    mine = pipeline.score_shard(settings, D1, 0, 1)
    late = pipeline.score_shard(settings.model_copy(update={"k": 3}), D1, 0, 1)
    assert mine.users == late.users > 0
    assert late.rows < mine.rows  # the other run's shard differs (3 per user, not 10)
    merged = pipeline.merge_scores(settings, D1, [mine])
    recs = read_parquet(merged.path)
    assert merged.rows == recs.height == mine.rows
    assert recs.group_by("user_id").len()["len"].max() == settings.k
    staging = Path(settings.warehouse) / "_staging"
    assert not [p for p in staging.rglob("*") if p.is_file()]  # the late shard is cleared too


def test_shards_score_with_the_model_the_gate_left_serving(first_night, tmp_path):
    """A concurrent run of another date that promotes between this run's gate and its shards
    does not change the model the shards score with: they are given the gate's model."""
    settings = _copy(first_night, tmp_path / "w")
    registry = ModelRegistry(Warehouse(settings.warehouse).models_dir)
    before = registry.champion_id()
    train, ev = _night(settings, D2)
    assert ev.champion_after == train.challenger != before
    registry.promote(before, "another run's gate")  # after this run's gate, before its shards

    gated = pipeline.score_shard(settings, D2, 0, 1, ev.champion_after)
    now = pipeline.score_shard(settings, D2, 0, 1)  # no model given: the champion of the moment
    assert (gated.model_id, now.model_id) == (train.challenger, before)
    merged = pipeline.merge_scores(settings, D2, [gated])
    assert merged.model_id == train.challenger
    model = registry.load_model(train.challenger)
    recs = read_parquet(merged.path)
    users = sorted(set(recs["user_id"].to_list()))[:5]
    expected = model.recommend(users, settings.k).sort(["user_id", "rank"])
    got = recs.filter(recs["user_id"].is_in(users)).sort(["user_id", "rank"])
    assert got["item_id"].to_list() == expected["item_id"].to_list()
    other = registry.load_model(before).recommend(users, settings.k).sort(["user_id", "rank"])
    assert other["item_id"].to_list() != expected["item_id"].to_list()  # the check can tell
