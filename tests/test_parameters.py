"""The run options: one model for the flows' parameters, the deployments' defaults and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from flows.parameters import RunOptions
from recsys_core.config import ConfigError


def test_options_refuse_what_no_run_could_use():
    with pytest.raises(ValidationError, match=r"models\.0\s+Input should be 'popularity'"):
        RunOptions(models=["eaze"])
    with pytest.raises(ValidationError, match="task_runner 'processes': expected threads, dask"):
        RunOptions(task_runner="processes")
    with pytest.raises(ValidationError, match="only dask takes an address"):
        RunOptions(task_runner="threads=tcp://x:1")
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        RunOptions(k=0)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        RunOptions.model_validate({"warehous": "/w"})


def test_settings_layer_the_options_over_the_config_file(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("RECSYS_CONFIG", raising=False)
    monkeypatch.delenv("RECSYS_SQL_URL", raising=False)
    cfg = tmp_path / "recsys.toml"
    cfg.write_text('k = 7\nwarehouse = "wh"\n[train]\ntune_calls = 4\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    from_file = RunOptions(config_path=str(cfg)).settings()
    assert (from_file.k, from_file.train.tune_calls) == (7, 4)
    assert from_file.warehouse == tmp_path / "wh"  # relative to the config file, absolute

    given = RunOptions(
        config_path=str(cfg), k=3, models=["ease"], landing="land", task_runner="dask=tcp://h:1"
    ).settings(sql_url="sqlite:///x.db")
    assert (given.k, given.train.models, given.train.tune_calls) == (3, ["ease"], 4)
    assert given.landing == tmp_path / "land"
    assert (given.runner.task_runner, given.runner.dask_address) == ("dask", "tcp://h:1")
    assert given.scoring.sql_url == "sqlite:///x.db"

    monkeypatch.setenv("RECSYS_CONFIG", str(cfg))  # the environment names the file when unset
    assert RunOptions().settings().k == 7
    with pytest.raises(FileNotFoundError, match="nope.toml does not exist"):
        RunOptions(config_path=str(tmp_path / "nope.toml")).settings()
    bad = tmp_path / "bad.toml"
    bad.write_text("k = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="k = 0"):
        RunOptions(config_path=str(bad)).settings()


def test_located_parameters_and_over(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("RECSYS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    options = RunOptions(k=5, landing="land", warehouse="wh")
    located = options.located(options.settings())
    assert (located.landing, located.warehouse) == (str(tmp_path / "land"), str(tmp_path / "wh"))
    assert located.parameters() == {
        "force": False,
        "k": 5,
        "landing": str(tmp_path / "land"),
        "warehouse": str(tmp_path / "wh"),
    }
    # over a deployment's defaults: the fields given win, the others are the deployment's
    defaults = {"config_path": "/etc/recsys.toml", "warehouse": "/srv/wh", "k": 10}
    merged = RunOptions.model_validate({"k": 20}).over(defaults)
    assert merged == RunOptions(config_path="/etc/recsys.toml", warehouse="/srv/wh", k=20)
    assert RunOptions(k=20).over(None) == RunOptions(k=20)
