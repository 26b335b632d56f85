"""The closed loop end to end: arms in the nightly tables, attribution, the read-out, the CLI."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from flows.parameters import RunOptions
from recsys_core import pipeline
from recsys_core.abtest import NO_FEEDBACK, ExperimentChangedError, readout_step, simulate
from recsys_core.abtest._simulate import _START
from recsys_core.config import Settings
from recsys_core.io import Warehouse, read_json
from recsys_core.landing import generate_synthetic
from recsys_core.results import Skipped
from recsys_core.schema import RECOMMENDATIONS_SCHEMA

ARMS = {"control": "popularity", "treatment": "ease"}
DAYS = 3


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("sim") / "w"
    out = simulate(root, days=DAYS, arms=ARMS, users=300, items=120, tune_calls=2, log=None)
    out["root"] = root
    return out


def _settings(world: dict, **abtest) -> Settings:
    return Settings(
        landing=world["landing"],
        warehouse=world["warehouse"],
        embedding={"enabled": False},
        train={"models": ["ease", "popularity"], "tune_calls": 2},
        abtest={"experiment": "sim", "arms": ARMS, "attribution_days": 1, **abtest},
    )


def test_every_row_carries_its_arm_and_model_and_assignments_are_stable(world):
    wh = Warehouse(Path(world["warehouse"]))
    seen: dict[str, str] = {}
    for t in range(DAYS + 1):
        day = _START + dt.timedelta(days=t)
        recs = pl.read_parquet(wh.recommendations(day))
        assert recs.columns == [*RECOMMENDATIONS_SCHEMA, "arm"]
        arms = read_json(wh.abtest_arms("sim", day))["arms"]
        by_arm = recs.group_by("arm").agg(pl.col("model_id").unique())
        assert dict(by_arm.iter_rows()) == {a: [v["model_id"]] for a, v in arms.items()}
        assert arms["control"]["model_id"].startswith("popularity-")
        assert arms["treatment"]["model_id"].startswith("ease-")
        assigned = pl.read_parquet(wh.assignments("sim", day))
        assert set(assigned["user_id"]) == set(recs["user_id"])
        for user, arm in assigned.select("user_id", "arm").iter_rows():
            assert seen.setdefault(user, arm) == arm  # the same arm every night


def test_readout_shows_ease_ahead_and_is_written(world):
    r = world["readout"]
    saved = read_json(Path(world["warehouse"]) / "abtest" / "sim" / "readout.json")
    assert saved == json.loads(json.dumps(r.model_dump(exclude={"path"})))  # the file is the result
    assert [a["name"] for a in saved["arms"]] == ["control", "treatment"]
    assert saved["comparison"] == "treatment - control"
    assert saved["nights_with_feedback"] == DAYS
    assert not saved["srm"] and saved["srm_p_value"] > 0.001
    assert saved["difference"] > 0 and saved["ci"][0] > 0 and saved["p_value"] < 0.05
    assert world["orderings_agree"] is True
    # the planted truth: EASE's lists hold far more items the users like
    liked = world["liked_share_of_recommendations"]
    assert liked["treatment"] > liked["control"] + 0.3
    html = Path(world["report"]).read_text()
    assert "A/B experiment sim" in html and "A/B hit rate per night" in html


def test_no_feedback_yet_on_the_first_night(world):
    out = readout_step(_settings(world), _START)
    assert out.decision == NO_FEEDBACK and out.p_value is None


def test_arm_changed_mid_experiment_is_refused(world):
    settings = _settings(world, arms={"control": "popularity", "treatment": "itemknn"})
    day = _START + dt.timedelta(days=DAYS)
    with pytest.raises(ExperimentChangedError, match="rename the experiment"):
        pipeline.prepare_arms(settings, day, "unused")


def test_assignments_published_to_sql(world, tmp_path):
    from recsys_core.serving import read_assignments_sql, read_recommendations_sql

    url = f"sqlite:///{tmp_path / 'serve.db'}"
    day = _START + dt.timedelta(days=DAYS)
    settings = _settings(world)
    settings.scoring.sql_url = url
    out = pipeline.publish_sql(settings, day)
    assigned = pl.read_parquet(Warehouse(Path(world["warehouse"])).assignments("sim", day))
    assert out.assignments.rows == assigned.height
    back = read_assignments_sql(url, day)
    assert dict(back.select("user_id", "arm").iter_rows()) == dict(
        assigned.select("user_id", "arm").iter_rows()
    )
    assert read_recommendations_sql(url, day).height == out.rows


def test_without_an_experiment_the_tables_are_as_before(tmp_path):
    end = dt.date(2026, 1, 31)
    generate_synthetic(tmp_path / "landing", users=120, items=80, days=8, seed=2, end_date=end)
    settings = Settings(
        landing=tmp_path / "landing",
        warehouse=tmp_path / "warehouse",
        embedding={"enabled": False},
        train={"models": ["popularity"], "tune_calls": 1, "tune_initial_points": 1},
    )
    pipeline.ingest_step(settings, end)
    pipeline.clean_step(settings, end)
    train = pipeline.train_step(settings, end)
    ev = pipeline.evaluate_step(settings, end, train.challenger)
    assert ev.arms is None and "arms" not in read_json(
        Warehouse(settings.warehouse).evaluation(end)
    )
    merged = pipeline.merge_scores(settings, end, [pipeline.score_shard(settings, end, 0, 1)])
    recs = pl.read_parquet(merged.path)
    assert recs.columns == list(RECOMMENDATIONS_SCHEMA)
    assert merged.model_id == train.challenger
    assert readout_step(settings, end) == Skipped(
        skipped="no experiment configured (abtest.experiment)"
    )
    assert not (tmp_path / "warehouse" / "abtest").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--arms", "control=popularity,treatment=bogus"], "unknown model 'bogus'"),
        (["--arms", "control=popularity"], "at least 2 arms"),
        (["--shares", "0.5,0.6"], "sum to 1"),
        (["--arms", "control"], "is not NAME=MODEL"),
    ],
)
def test_simulate_cli_refuses_bad_input(tmp_path, capsys, argv, message):
    from deployments.cli import main

    rc = main(["simulate", "--out", str(tmp_path / "s"), "--days", "1", *argv])
    assert rc == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s" / "warehouse").exists()


def test_simulate_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "x").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        simulate(tmp_path, days=1, arms=ARMS, log=None)


@pytest.mark.slow
def test_readme_simulation_shows_ease_ahead(tmp_path, capsys):
    """The README's command: 10 days, EASE ahead with an interval above zero, orderings agree."""
    from deployments.cli import main

    argv = ["simulate", "--out", str(tmp_path / "sim"), "--days", "10"]
    assert main([*argv, "--arms", "control=popularity,treatment=ease"]) == 0
    printed = capsys.readouterr().out
    assert "decision: treatment wins" in printed
    assert "offline and online orderings agree: yes" in printed
    r = read_json(tmp_path / "sim" / "warehouse" / "abtest" / "sim" / "readout.json")
    assert r["ci"][0] > 0 and not r["srm"] and r["nights_with_feedback"] == 10


@pytest.mark.slow
@pytest.mark.prefect
def test_nightly_flow_with_an_experiment(prefect_harness, tmp_path):
    """The Prefect flow wires the read-out task, its artifact and the report section."""
    from prefect.artifacts import Artifact

    from flows.nightly import nightly

    end = dt.date(2026, 1, 10)
    generate_synthetic(tmp_path / "landing", users=80, items=60, days=8, seed=11, end_date=end)
    cfg = tmp_path / "recsys.toml"
    cfg.write_text(
        """
landing = "landing"
warehouse = "warehouse"
k = 5
[train]
models = ["popularity", "ease"]
tune_calls = 2
tune_initial_points = 2
[evaluation]
holdout_days = 2
bootstrap_samples = 200
[embedding]
enabled = false
[runner]
retries = 0
retry_delay_seconds = 0
[abtest]
experiment = "flow-test"
arms = { control = "champion", treatment = "popularity" }
shares = { control = 0.6, treatment = 0.4 }
attribution_days = 1
""",
        encoding="utf-8",
    )
    first = nightly(run_date=end - dt.timedelta(days=1), options=RunOptions(config_path=str(cfg)))
    assert first.steps.abtest.decision == NO_FEEDBACK
    summary = nightly(run_date=end, options=RunOptions(config_path=str(cfg)))
    ab = summary.steps.abtest
    assert ab.nights_with_feedback == 1 and ab.experiment == "flow-test"
    assert sum(a.assigned_users for a in ab.arms) > 0
    recs = pl.read_parquet(Warehouse(tmp_path / "warehouse").recommendations(end))
    assert set(recs["arm"]) == {"control", "treatment"}
    html = Path(summary.report).read_text()
    assert "A/B experiment flow-test" in html
    art = Artifact.get("recsys-abtest")
    assert art is not None and "flow-test" in str(art.data)


def test_winner_is_promoted_only_when_asked(world, tmp_path):
    import shutil

    from recsys_core.registry import ModelRegistry

    shutil.copytree(world["warehouse"], tmp_path / "warehouse")
    wh = Warehouse(tmp_path / "warehouse")
    day = _START + dt.timedelta(days=DAYS)
    arms = read_json(wh.abtest_arms("sim", day))["arms"]
    registry = ModelRegistry(wh.models_dir)
    registry.promote(arms["control"]["model_id"], "the losing arm serves, for this test")

    off = _settings(world, min_users_per_arm=50).model_copy(update={"warehouse": wh.root})
    out = readout_step(off, day)
    assert out.winner == "treatment" and out.promoted is None
    assert registry.champion()["model_id"] == arms["control"]["model_id"]

    on = _settings(world, min_users_per_arm=50, promote_winner=True)
    out = readout_step(on.model_copy(update={"warehouse": wh.root}), day)
    assert out.promoted == arms["treatment"]["model_id"]
    champion = registry.champion()
    assert champion["model_id"] == arms["treatment"]["model_id"]
    assert "A/B experiment sim" in champion["promotion_reason"]


@pytest.mark.slow
def test_aa_through_the_whole_loop(tmp_path):
    """Two arms serving the same model: same liked share, no winner, no SRM (one fixed seed)."""
    out = simulate(
        tmp_path / "aa",
        days=3,
        arms={"a": "ease", "b": "ease"},
        users=300,
        items=120,
        tune_calls=2,
        seed=21,
        report=False,
        log=None,
    )
    r = out["readout"]
    assert r.ci[0] < 0 < r.ci[1] and r.p_value > 0.05
    assert r.winner is None and not r.srm
    liked = out["liked_share_of_recommendations"]
    assert abs(liked["a"] - liked["b"]) < 0.1
