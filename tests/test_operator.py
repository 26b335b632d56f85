"""What an operator sees in the Prefect UI: stable artifact keys with the night's headline and a
report link that opens, a backfill summary, errors raised before any work, and retries only for
what can change."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from flows.parameters import RunOptions
from recsys_core.errors import is_transient
from recsys_core.ingest import LandingSchemaError, MissingPartitionError
from recsys_core.io import CorruptFileError, LeaseLostError, RunLockedError
from recsys_core.landing import generate_synthetic
from recsys_core.pipeline import InjectedFault
from recsys_core.reporting import night_markdown, report_link

END = dt.date(2026, 1, 6)


# ---- which errors are retried ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionResetError("peer reset"), True),
        (TimeoutError("read timed out"), True),
        (OSError(28, "No space left on device"), True),
        (InjectedFault("drill"), True),
        (ValueError("k must be >= 1"), False),
        (CorruptFileError("x.parquet: truncated"), False),
        (LandingSchemaError("a.csv: missing column 'user_id'"), False),
        (RunLockedError("held by pid=1"), False),
        (LeaseLostError("lost the lock s3://b/w/_locks/d.lock: taken over"), False),
        (KeyError("bug"), False),
        (IsADirectoryError("a folder where a file was expected"), False),
    ],
)
def test_only_errors_that_can_change_are_transient(exc, transient):
    assert is_transient(exc) is transient


def test_a_missing_partition_is_transient_for_ingest_only():
    exc = MissingPartitionError("events partition for 2026-01-06 is missing")
    assert is_transient(exc, missing_partition_is_transient=True) is True
    assert is_transient(exc) is False


@pytest.mark.prefect
@pytest.mark.parametrize(
    ("error", "attempts"),
    [(ValueError("unknown column"), 1), (ConnectionResetError("storage hiccup"), 3)],
)
def test_tasks_retry_transient_errors_and_fail_fast_on_permanent_ones(
    prefect_harness, monkeypatch, error, attempts
):
    from prefect import flow

    from recsys_core import pipeline
    from recsys_core.config import Settings
    from tasks.steps import train_task

    calls: list[int] = []

    def failing_train(settings, run_date, *, force=False):
        calls.append(1)
        raise error

    monkeypatch.setattr(pipeline, "train_step", failing_train)

    @flow
    def one_task() -> None:
        train_task.with_options(retries=2, retry_delay_seconds=0)(Settings(), END)

    with pytest.raises(type(error)):
        one_task()
    assert len(calls) == attempts


# ---- the night's headline and the report link -----------------------------------------------------
def _summary():
    """A night's run marker (what finalize writes), read back as the typed summary."""
    from recsys_core.results import RunSummary

    def held(metrics: dict) -> dict:
        return {
            "k": 10,
            "n_users": 9,
            "metrics": metrics,
            "coverage": None,
            "novelty": None,
            "arp": None,
            "segments": {},
        }

    none = {"dates": {}, "rows": {}, "files": 0, "skipped": {}, "notes": [], "late": []}
    return RunSummary.model_validate(
        {
            "run_date": "2026-01-06",
            "code_version": "test",
            "settings": {},
            "drift": [
                {
                    "name": "coverage",
                    "value": 0.12,
                    "previous": 0.3,
                    "change": -0.6,
                    "flagged": True,
                    "rule": "|relative change| > 0.5",
                },
                {
                    "name": "score_mean",
                    "value": 1.0,
                    "previous": None,
                    "change": None,
                    "flagged": False,
                    "rule": "x",
                },
            ],  # fmt: skip
            "recommendation_stats": {
                "n_users": 9,
                "n_rows": 90,
                "n_items_recommended": 6,
                "coverage": 0.12,
                "score_mean": 1.0,
                "score_p50": 1.0,
                "score_p90": 1.0,
                "models": [],
            },  # fmt: skip
            "steps": {
                "ingest": {
                    **none,
                    "late_dates": {},
                    "unrecognised": [],
                    "vanished": [],
                    "swept_temporaries": 0,
                    "completion_marker_withdrawn": False,
                },  # fmt: skip
                "clean": {
                    "dates_cleaned": ["2026-01-05", "2026-01-06"],
                    "followers": [],
                    "events": {"ingested": 1, "clean": 1, "duplicates": 0, "quarantined": 0},
                    "run_date_manifest": {
                        "events": {
                            "ingested": 1234,
                            "clean": 1200,
                            "duplicates": 20,
                            "quarantined": 14,
                        }
                    },  # fmt: skip
                },
                "train": {
                    "challenger": "ease-20260106-abc",
                    "model": "ease",
                    "params": {"reg": 5.0},
                    "fit_seconds": 1.0,
                    "n_items": 50,
                    "candidates": [],
                },  # fmt: skip
                "evaluate": {
                    "run_date": "2026-01-06",
                    "challenger": "ease-20260106-abc",
                    "champion_before": "popularity-20260105-def",
                    "champion_entry": None,
                    "champion_after": "ease-20260106-abc",
                    "k": 10,
                    "metric": "ndcg",
                    "decision": {
                        "promote": True,
                        "reason": "ndcg +0.0420 (95% CI +0.01 to +0.07)",
                        "diff": 0.042,
                        "low": 0.01,
                        "high": 0.07,
                        "challenger_score": 0.3141,
                        "champion_score": 0.2721,
                    },  # fmt: skip
                    "gate": {
                        "holdout": ["2026-01-06", "2026-01-06"],
                        "same_recipe": False,
                        "checks": [],
                    },  # fmt: skip
                    "challenger_metrics": held({"ndcg": 0.3141, "recall": 0.25}),
                    "champion_metrics": held({"ndcg": 0.2721, "recall": 0.2}),
                },
                "score": {
                    "path": "p",
                    "rows": 90,
                    "users": 9,
                    "items": 6,
                    "model_id": "ease-20260106-abc",
                },  # fmt: skip
            },
        }
    )


def test_night_markdown_has_decision_counts_metrics_drift_and_the_link():
    md = night_markdown(_summary(), "http://127.0.0.1:4201/run_date=2026-01-06/report.html")
    assert md.startswith("## recsys 2026-01-06: Promoted ease-20260106-abc\n")
    assert "ndcg +0.0420 (95% CI +0.01 to +0.07)" in md
    assert (
        "events: 1,234 in = 1,200 clean + 20 duplicates + 14 quarantined (2 dates cleaned tonight)"
        in md
    )
    assert "| ndcg | 0.3141 | 0.2721 | 0.0420 |" in md
    assert "**Drift flagged:** coverage = 0.1200" in md and "score_mean" not in md
    assert md.rstrip().endswith(
        "[Open the full report](http://127.0.0.1:4201/run_date=2026-01-06/report.html)"
    )


def test_cli_prints_the_night_from_its_summary(tmp_path, capsys):
    """``recsys run``'s closing summary reads the flow's RunSummary (every line a step wrote)."""
    from deployments.cli import _print_summary
    from recsys_core.config import Settings

    night = _summary()
    steps = night.steps.model_copy(
        update={"ingest": night.steps.ingest.model_copy(update={"late": ["events/x.csv (new)"]})}
    )
    night = night.model_copy(update={"steps": steps, "report": "/r/report.html"})
    _print_summary(Settings(warehouse=tmp_path / "wh"), END, night, 12.0)
    out = capsys.readouterr().out
    assert out.startswith("recsys nightly 2026-01-06 completed in 12.0s\n")
    assert "  late files events/x.csv (new)" in out
    assert "2 date(s) cleaned; events {'ingested': 1, 'clean': 1," in out
    assert "train      challenger ease-20260106-abc params={'reg': 5.0}" in out
    assert "evaluate   recall@10=0.2500, ndcg@10=0.3141\n" in out
    assert "decision   PROMOTED: ndcg +0.0420 (95% CI +0.01 to +0.07)" in out
    assert "score      90 recommendations for 9 users by ease-20260106-abc" in out
    assert "report           /r/report.html" in out


def test_report_link_uses_the_served_base_else_a_file_url(tmp_path):
    wh = tmp_path / "wh"
    report = wh / "reports" / "run_date=2026-01-06" / "report.html"
    assert (
        report_link(report, wh, "http://127.0.0.1:4201/")
        == "http://127.0.0.1:4201/run_date=2026-01-06/report.html"
    )
    assert report_link(report, wh) == report.resolve().as_uri()
    with pytest.raises(ValueError, match="is not under"):
        report_link(tmp_path / "elsewhere.html", wh, "http://127.0.0.1:4201/")


def test_recsys_serve_publishes_the_reports_folder_and_nothing_else(tmp_path, monkeypatch):
    from deployments._reports import serve_reports
    from tasks.artifacts import REPORT_BASE_URL_ENV, REPORT_WAREHOUSE_ENV

    monkeypatch.delenv(REPORT_BASE_URL_ENV, raising=False)
    monkeypatch.delenv(REPORT_WAREHOUSE_ENV, raising=False)
    wh = tmp_path / "wh"
    page = wh / "reports" / "run_date=2026-01-06" / "report.html"
    page.parent.mkdir(parents=True)
    page.write_text("<h1>night of 2026-01-06</h1>", encoding="utf-8")
    (wh / "clean").mkdir()
    (wh / "clean" / "secret.txt").write_text("not for browsers")
    base = serve_reports(wh, port=0)
    import os

    assert os.environ[REPORT_BASE_URL_ENV] == base
    url = report_link(page, wh, base)
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read().decode() == "<h1>night of 2026-01-06</h1>"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(base + "../clean/secret.txt", timeout=10)
    assert err.value.code == 404


def test_backfill_rows_say_what_happened_to_every_date():
    from tasks.artifacts import backfill_rows

    d = [END + dt.timedelta(days=i) for i in range(4)]
    rows = backfill_rows(
        todo=[d[1], d[2], d[3]],
        skipped=[d[0]],
        done=[d[1].isoformat()],
        failure=(d[2], "Failed: no events partition"),
        runs={d[1].isoformat(): "nightly-2026-01-07"},
    )
    assert [(r["date"], r["status"]) for r in rows] == [
        ("2026-01-06", "skipped: complete"),
        ("2026-01-07", "ran"),
        ("2026-01-08", "failed"),
        ("2026-01-09", "not reached"),
    ]
    assert rows[1]["run"] == "nightly-2026-01-07"
    assert rows[2]["detail"] == "Failed: no events partition"


# ---- through the flows ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def landing_master(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("landing-operator") / "landing"
    generate_synthetic(out, users=50, items=30, days=5, seed=5, end_date=END)
    return out


def _config(tmp: Path, landing_master: Path) -> Path:
    shutil.copytree(landing_master, tmp / "landing")
    cfg = tmp / "recsys.toml"
    cfg.write_text(
        """
landing = "landing"
warehouse = "warehouse"
k = 5
[train]
models = ["popularity"]
tune_calls = 2
tune_initial_points = 2
validation_days = 1
[evaluation]
holdout_days = 1
bootstrap_samples = 100
[embedding]
enabled = false
[runner]
retries = 2
retry_delay_seconds = 0
""",
        encoding="utf-8",
    )
    return cfg


def _artifacts(key: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )


def _task_names(flow_run_id) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return sorted(r.task_key.split("-")[0] for r in runs)


@pytest.mark.slow
@pytest.mark.prefect
def test_two_nights_add_to_the_same_artifact_keys_and_a_typo_fails_before_work(
    prefect_harness, tmp_path, landing_master
):
    from flows.nightly import backfill, nightly

    cfg = _config(tmp_path, landing_master)
    before = {key: len(_artifacts(key)) for key in ("recsys-night", "recsys-report")}
    backfill(start=END - dt.timedelta(days=1), end=END, options=RunOptions(config_path=str(cfg)))

    nights = _artifacts("recsys-night")
    assert len(nights) == before["recsys-night"] + 2  # one key, a version per night
    here = tmp_path.resolve().as_uri()  # this test's warehouse: its report links start with it
    mine = sorted((a for a in nights if here in a.data), key=lambda a: a.created)
    assert [a.description for a in mine] == [
        "2026-01-05: the night in one page",
        "2026-01-06: the night in one page",
    ]
    latest = mine[-1]
    assert latest.data.startswith("## recsys 2026-01-06: ")
    link = max((a for a in _artifacts("recsys-report") if here in a.data), key=lambda a: a.created)
    report = tmp_path / "warehouse" / "reports" / "run_date=2026-01-06" / "report.html"
    assert link.data == f"[report 2026-01-06]({report.resolve().as_uri()})"
    assert f"[Open the full report]({report.resolve().as_uri()})" in latest.data
    tables = [json.loads(a.data) for a in _artifacts("recsys-backfill")]
    rows = max(
        (t for t in tables if [r["date"] for r in t] == ["2026-01-05", "2026-01-06"]),
        key=len,
    )
    assert [(r["date"], r["status"]) for r in rows] == [
        ("2026-01-05", "ran"),
        ("2026-01-06", "ran"),
    ]

    # an unknown model is refused by the flow's parameter schema: no task runs at all
    options = {"models": ["eaze"], "config_path": str(cfg)}  # JSON, as the API would send it
    state = nightly(run_date=END, options=options, return_state=True)
    assert state.is_failed()
    assert "options.models.0: Input should be 'popularity', 'itemknn', 'ease'" in str(state.message)
    assert _task_names(state.state_details.flow_run_id) == []


def test_serve_warns_when_the_schedule_would_find_no_data(tmp_path):
    from deployments.serve import _stale_landing_warning
    from flows.runtime import default_run_date

    yesterday = default_run_date()
    old = tmp_path / "old"
    generate_synthetic(old, users=5, items=5, days=2, seed=1, end_date=END)
    warning = _stale_landing_warning(old)
    assert warning is not None
    assert f"has no events for {yesterday.isoformat()} (newest: {END.isoformat()})" in warning
    assert f"--end-date {yesterday.isoformat()}" in warning
    fresh = tmp_path / "fresh"
    generate_synthetic(fresh, users=5, items=5, days=2, seed=1, end_date=yesterday)
    assert _stale_landing_warning(fresh) is None


# ---- report details: coverage over the catalog, drift causes, the ingest tables --------------------
def test_a_retune_or_new_model_is_named_as_the_likely_cause_of_output_drift():
    from recsys_core.reporting import drift_signals

    before = {"coverage": 0.5, "models": [{"name": "ease", "params": {"reg": 250.0}}]}
    retuned = {"coverage": 0.1, "models": [{"name": "ease", "params": {"reg": 31.5}}]}
    rows = {r["name"]: r for r in drift_signals(retuned, before, 0.25)}
    assert rows["coverage"]["flagged"]
    assert rows["coverage"]["cause"].startswith("ease re-tuned since the previous run")
    swapped = {"coverage": 0.1, "models": [{"name": "als", "params": {"factors": 64}}]}
    rows = {r["name"]: r for r in drift_signals(swapped, before, 0.25)}
    assert rows["coverage"]["cause"].startswith("the serving model changed (ease -> als)")
    same = {"coverage": 0.1, "models": [{"name": "ease", "params": {"reg": 250.0}}]}
    rows = {r["name"]: r for r in drift_signals(same, before, 0.25)}
    assert rows["coverage"]["flagged"] and "cause" not in rows["coverage"]  # the data did it


def _night(settings, day):
    from recsys_core import pipeline
    from recsys_core.results import RunSteps

    ingest = pipeline.ingest_step(settings, day)
    clean = pipeline.clean_step(settings, day)
    train = pipeline.train_step(settings, day)
    evaluate = pipeline.evaluate_step(settings, day, train.challenger)
    score = pipeline.merge_scores(settings, day, [pipeline.score_shard(settings, day, 0, 1)])
    return RunSteps(ingest=ingest, clean=clean, train=train, evaluate=evaluate, score=score)


def test_coverage_is_over_the_catalog_and_its_drop_is_flagged(tmp_path, landing_master):
    """Coverage used to be computed over the items that were recommended (always 1.0), so its
    drift signal could never fire. A night whose recommendations collapse onto two items flags."""
    import polars as pl

    from recsys_core import pipeline
    from recsys_core.config import load_settings
    from recsys_core.io import Warehouse, atomic_write_parquet, read_parquet

    cfg = _config(tmp_path, landing_master)
    settings = load_settings(cfg)
    first, second = END - dt.timedelta(days=1), END
    out = pipeline.finalize_step(settings, first, _night(settings, first))
    coverage = out.recommendation_stats.coverage
    recs = read_parquet(Warehouse(settings.warehouse).recommendations(first))
    assert coverage == pytest.approx(recs["item_id"].n_unique() / 30)  # 30 catalog items
    assert coverage < 1.0

    steps = _night(settings, second)
    wh = Warehouse(settings.warehouse)
    recs = read_parquet(wh.recommendations(second))
    top2 = recs["item_id"].value_counts(sort=True)["item_id"][:2].to_list()
    collapsed = recs.filter(pl.col("item_id").is_in(top2))
    atomic_write_parquet(collapsed, wh.recommendations(second))  # a broken night's output
    out = pipeline.finalize_step(settings, second, steps)
    signal = {s.name: s for s in out.drift}["coverage"]
    assert signal.value == pytest.approx(2 / 30)
    assert signal.previous == pytest.approx(coverage)
    assert signal.flagged is True
    html = Path(out.report).read_text(encoding="utf-8")
    assert "<h3>Partition 2026-01-06</h3>" in html
    assert "<th>table</th><th>ingested</th><th>clean</th><th>duplicates</th>" in html
    assert "<code>events/date=2026-01-06/" in html  # the landing files read, by name
    assert "<summary>Cleaning rules applied</summary>" in html
