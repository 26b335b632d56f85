"""Per-model search budgets and fixed hyperparameters in the nightly train step (no Prefect)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError

from recsys_core.config import Settings, TrainConfig
from recsys_core.io import Warehouse
from recsys_core.landing import generate_synthetic
from recsys_core.pipeline import clean_step, ingest_step, train_step

END = dt.date(2026, 1, 10)


def settings(root: Path, **train: object) -> Settings:
    return Settings(
        landing=root / "landing",
        warehouse=root / "warehouse",
        train={
            "models": ["popularity", "ease"],
            "tune_calls": 3,
            "tune_initial_points": 2,
            **train,
        },
        evaluation={"holdout_days": 1},
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("budget")
    generate_synthetic(root / "landing", users=60, items=40, days=6, seed=2, end_date=END)
    s = settings(root)
    ingest_step(s, END)
    clean_step(s, END)
    return root


def trials(root: Path, model: str) -> pl.DataFrame:
    return pl.read_parquet(Warehouse(root / "warehouse").tuning_dir / model / "trials.parquet")


def best_params(root: Path, model: str) -> dict:
    state = Warehouse(root / "warehouse").tuning_dir / model / "state.json"
    return json.loads(state.read_text())["best_params"]


def test_budgets_and_fixed_params_apply_per_model_and_a_change_retunes_only_that_model(
    root: Path,
) -> None:
    s = settings(
        root,
        model_tune_calls={"popularity": 2},
        model_params={"ease": {"reg": 50.0, "time_weight": 0.0}},
    )
    first = train_step(s, END)
    assert trials(root, "popularity").height == 2  # its own budget, not tune_calls = 3
    ease = trials(root, "ease")
    # reg and time_weight pinned (plain EASE): nothing left to search, one evaluation
    assert ease.height == 1 and best_params(root, "ease")["reg"] == 50.0
    # whichever model wins, the challenger is fit with that model's tuned (or pinned) parameters
    assert first.params == best_params(root, first.model)

    again = train_step(s, END)
    assert [c.reused for c in again.candidates] == [True, True]

    changed = settings(
        root,
        model_tune_calls={"popularity": 2},
        model_params={"ease": {"reg": 500.0, "time_weight": 0.0}},
    )
    third = train_step(changed, END)
    assert [c.reused for c in third.candidates] == [True, False]
    assert best_params(root, "ease")["reg"] == 500.0

    budget = settings(
        root,
        model_tune_calls={"popularity": 3},
        model_params={"ease": {"reg": 500.0, "time_weight": 0.0}},
    )
    assert [c.reused for c in train_step(budget, END).candidates] == [False, True]
    assert trials(root, "popularity").height == 3


def test_unknown_models_in_the_overrides_are_config_errors() -> None:
    with pytest.raises(ValidationError, match=r"unknown model\(s\) \['sasrek'\]"):
        TrainConfig(model_tune_calls={"sasrek": 2})
    with pytest.raises(ValidationError, match="unknown model"):
        TrainConfig(model_params={"eas": {"reg": 1.0}})
    with pytest.raises(ValidationError):
        TrainConfig(model_tune_calls={"ease": -1})
    assert TrainConfig(model_tune_calls={"ease": 0}).calls_for("ease") == 0
    assert TrainConfig(tune_calls=5).calls_for("ease") == 5


def test_the_search_runs_on_a_capped_user_sample_and_the_challenger_on_every_user(
    root: Path,
) -> None:
    from recsys_core.registry import ModelRegistry

    wh = Warehouse(root / "warehouse")
    train_step(settings(root), END, force=True)  # the default cap, 50,000, is above 60 users
    n_users = trials(root, "ease")["search_users"][0]
    assert trials(root, "popularity")["search_users"].unique().to_list() == [n_users]
    assert n_users >= 40
    assert json.loads((wh.tuning_dir / "ease" / "best.json").read_text())["sampled"] is False
    capped = settings(root, tune_max_users=20)
    result = train_step(capped, END)
    assert [c.reused for c in result.candidates] == [False, False]  # a new cap re-tunes
    assert trials(root, "ease")["search_users"].unique().to_list() == [20]
    best = json.loads((wh.tuning_dir / "ease" / "best.json").read_text())
    assert (best["sampled"], best["search_users"], best["train_users"]) == (True, 20, n_users)
    state = json.loads((wh.tuning_dir / "ease" / "state.json").read_text())
    assert state["search_users"] == 20 and state["tune_max_users"] == 20
    # the chosen parameters are refit on every user, not on the sample
    model = ModelRegistry(wh.models_dir).load_model(result.challenger)
    assert model.interactions_.n_users >= n_users >= 40
    assert [c.reused for c in train_step(capped, END).candidates] == [True, True]
