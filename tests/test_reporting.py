"""Drift signals, the run history, the HTML report and the Prefect digests."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re

import polars as pl
import pytest

from recsys_core.evaluation import Decision
from recsys_core.io import Warehouse, atomic_write_json, atomic_write_parquet
from recsys_core.reporting import (
    build_report,
    data_stats,
    drift_signals,
    markdown_summary,
    metrics_history,
    metrics_table,
    night_markdown,
    previous_run,
    recommendation_stats,
    run_history,
)
from recsys_core.results import (
    CleanResult,
    EvaluateResult,
    GateReport,
    HoldoutMetrics,
    IngestStepResult,
    MetricComparison,
    RunSteps,
    RunSummary,
    ScoreResult,
    TrainResult,
    TuningCandidate,
)

RUN = dt.date(2026, 1, 31)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---- drift ---------------------------------------------------------------------------------------
def test_recommendation_stats_known():
    recs = pl.DataFrame(
        {
            "user_id": ["a", "a", "b", "b"],
            "item_id": ["x", "y", "x", "z"],
            "rank": [1, 2, 1, 2],
            "score": [4.0, 1.0, 3.0, 2.0],
        }
    )
    s = recommendation_stats(recs, n_items=10)
    assert (s["n_users"], s["n_rows"], s["n_items_recommended"]) == (2, 4, 3)
    assert s["coverage"] == pytest.approx(0.3)
    assert s["score_mean"] == pytest.approx(2.5) and s["score_p50"] == pytest.approx(2.5)
    assert s["score_p90"] == pytest.approx(3.7)  # linear interpolation of 1,2,3,4
    empty = recommendation_stats(recs.clear(), 10)
    assert empty["score_mean"] is None and empty["coverage"] == 0.0
    with pytest.raises(ValueError, match="'score'"):
        recommendation_stats(recs.drop("score"), 10)


def test_data_stats_known():
    before = pl.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"]})
    tonight = pl.DataFrame({"user_id": ["a", "c", "c", "d"], "item_id": ["x", "x", "z", "x"]})
    s = data_stats(tonight, before)
    assert s["n_events"] == 4
    assert (s["n_users_active"], s["n_new_users"], s["new_user_share"]) == (
        3,
        2,
        pytest.approx(2 / 3),
    )
    assert (s["n_items_active"], s["n_new_items"], s["new_item_share"]) == (2, 1, 0.5)


def test_drift_signals_rules():
    current = {
        "new_user_share": 0.3,
        "new_item_share": 0.1,
        "score_mean": 1.3,
        "score_p50": 1.0,
        "score_p90": 0.0,
        "coverage": 0.5,
    }
    previous = {
        "new_user_share": 0.1,
        "score_mean": 1.0,
        "score_p50": 1.0,
        "score_p90": 0.0,
        "coverage": 0.0,
    }
    got = {s["name"]: s for s in drift_signals(current, previous, threshold=0.25)}
    assert set(got) == {
        "new_user_share",
        "new_item_share",
        "score_mean",
        "score_p50",
        "score_p90",
        "coverage",
    }
    assert got["new_user_share"]["flagged"] and got["new_user_share"]["change"] == pytest.approx(
        0.2
    )
    assert not got["new_item_share"]["flagged"] and got["new_item_share"]["previous"] is None
    assert got["score_mean"]["change"] == pytest.approx(0.3) and got["score_mean"]["flagged"]
    assert got["score_p50"]["change"] == 0.0 and not got["score_p50"]["flagged"]
    assert got["score_p90"]["change"] is None and not got["score_p90"]["flagged"]  # 0 -> 0
    assert got["coverage"]["change"] is None and got["coverage"]["flagged"]  # 0 -> 0.5
    assert not {s["name"]: s for s in drift_signals(current, previous, 0.35)}["score_mean"][
        "flagged"
    ]
    # no previous run: only the share rule can flag
    first = drift_signals(current, None, 0.25)
    assert [s["name"] for s in first if s["flagged"]] == ["new_user_share"]
    assert drift_signals({"score_mean": None}, None, 0.25) == []
    json.dumps(first)  # JSON-able


# ---- report --------------------------------------------------------------------------------------
def _holdout(metrics: dict[str, float], segments: dict | None = None) -> HoldoutMetrics:
    return HoldoutMetrics(
        k=10,
        n_users=20,
        metrics=metrics,
        coverage=None,
        novelty=None,
        arp=None,
        segments=segments or {},
    )


def evaluate_for(run_date: dt.date, ndcg: float, promote: bool = True) -> EvaluateResult:
    """The evaluate step's result of a night whose challenger scores ``ndcg`` (champion 0.2)."""
    day = run_date.isoformat()
    return EvaluateResult(
        run_date=day,
        k=10,
        metric="ndcg",
        challenger=f"ease-{day}-1c4e0917",
        champion_before="popularity-2026-01-20-00000000",
        champion_entry=None,
        champion_after=f"ease-{day}-1c4e0917" if promote else "popularity-2026-01-20-00000000",
        decision=Decision(
            promote=promote,
            reason=f"Promoted: challenger ndcg {ndcg:.4f} vs champion 0.2000 (test reason)",
            diff=ndcg - 0.2,
            low=0.0123,
            high=0.0456,
            challenger_score=ndcg,
            champion_score=0.2,
        ),
        gate=GateReport(holdout=("2026-01-30", day), same_recipe=False, checks=[]),
        challenger_metrics=_holdout(
            {"ndcg": ndcg, "recall": 0.4321, "coverage": 0.25},
            {
                "new_users": {"n_users": 17},
                "cold_items": {"n_pairs": 5, "hit": 0.2, "recall": 0.1},
                "heavy_users": {"n_users": 3, "metrics": {"ndcg": 0.5}},
            },
        ),
        champion_metrics=_holdout({"ndcg": 0.2, "recall": 0.3}),
        comparison=[
            MetricComparison(
                metric="ndcg",
                challenger=ndcg,
                champion=0.2,
                diff=ndcg - 0.2,
                low=0.0123,
                high=0.0456,
                p_worse=0.0,
            )
        ],
    )


def summary_for(
    run_date: dt.date,
    ndcg: float,
    promote: bool = True,
    *,
    stats: dict | None = None,
    trials_path: str | None = None,
) -> RunSummary:
    """A night's run summary as the finalize step writes it, with known figures."""
    ev = evaluate_for(run_date, ndcg, promote)
    stats = stats or {"new_user_share": 0.4, "score_mean": 2.0, "coverage": 0.25}
    steps = RunSteps(
        ingest=IngestStepResult(
            dates={"events": [run_date.isoformat()]},
            rows={"events": 1234},
            files=1,
            skipped={},
            notes=[],
            late=[],
            late_dates={},
            unrecognised=[],
            vanished=[],
            swept_temporaries=0,
            completion_marker_withdrawn=False,
        ),
        clean=CleanResult(
            dates_cleaned=[run_date.isoformat()],
            followers=[],
            events={"ingested": 1234, "clean": 1200, "duplicates": 30, "quarantined": 4},
            run_date_manifest=None,
        ),
        train=TrainResult(
            challenger=ev.challenger,
            model="ease",
            params={"reg": 250.0},
            fit_seconds=1.0,
            n_items=8,
            candidates=[
                TuningCandidate(
                    model="ease",
                    validation_score=0.31,
                    tuned_on=run_date.isoformat(),
                    reused=False,
                    convergence_png=None,
                    trials_path=trials_path,
                )
            ],
        ),
        evaluate=ev,
        score=ScoreResult(path="recs.parquet", rows=2, users=2, items=2, model_id=ev.challenger),
    )
    return RunSummary(
        run_date=run_date.isoformat(),
        code_version="test",
        settings={},
        steps=steps,
        recommendation_stats={
            "n_users": 2,
            "n_rows": 2,
            "n_items_recommended": 2,
            "coverage": 0.25,
            "score_mean": 2.0,
            "score_p50": 2.0,
            "score_p90": 2.0,
            "models": [],
        },
        drift=drift_signals(stats, None, 0.25),
    )


def write_marker(wh: Warehouse, summary: RunSummary) -> None:
    """A completed night, as the finalize step leaves it."""
    atomic_write_json(wh.run_marker(dt.date.fromisoformat(summary.run_date)), summary.model_dump())


def images(html: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r"base64,([A-Za-z0-9+/=]+)", html)]


def table_rows(html: str) -> list[list[str]]:
    """The cell texts of every table row (``<td>``/``<th>``, attributes ignored)."""
    return [
        re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row)
        for row in re.findall(r"<tr>(.*?)</tr>", html, flags=re.S)
    ]


def without_images(html: str) -> str:
    """``html`` with the embedded PNGs cut out: a short needle could match base64 by chance."""
    stripped = re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,", html)
    assert len(stripped) < len(html) or "base64," not in html
    return stripped


def test_build_report_contains_the_numbers(tmp_path):
    wh = Warehouse(tmp_path / "wh")
    atomic_write_json(
        wh.manifest(RUN),
        {"events": {"ingested": 1234, "clean": 1200, "duplicates": 30, "quarantined": 4}},
    )
    write_marker(wh, summary_for(RUN - dt.timedelta(days=1), 0.22))
    recs = pl.DataFrame(
        {"user_id": ["a", "b"], "item_id": ["x", "y"], "rank": [1, 1], "score": [0.5, 1.5]}
    )
    atomic_write_parquet(recs, wh.recommendations(RUN))
    trials = tmp_path / "trials.parquet"
    pl.DataFrame({"value": [0.1, 0.3, 0.2]}).write_parquet(trials)
    path = build_report(wh, RUN, summary=summary_for(RUN, 0.2468, trials_path=str(trials)))
    assert path == wh.report_dir(RUN) / "report.html"
    html = path.read_text(encoding="utf-8")
    text = without_images(html)
    assert "Promoted ease-2026-01-31-1c4e0917" in text
    assert "Promoted: challenger ndcg 0.2468 vs champion 0.2000 (test reason)" in text
    assert "reg=250.0" in text
    rows = table_rows(text)
    # challenger, champion, difference and its interval; a metric without an interval
    assert ["ndcg", "0.2468", "0.2000", "0.0468", "0.0123", "0.0456"] in rows
    assert ["recall", "0.4321", "0.3000", "0.1321", "–", "–"] in rows
    assert ["events", "1,234", "1,200", "30", "4"] in rows  # ingested, clean, duplicates, quar.
    assert ["dates cleaned tonight", "1"] in rows and ["quarantined", "4"] in rows  # the totals
    assert any(r[0].startswith("new users") and r[1:] == ["users", "17"] for r in rows), rows
    drift = next(r for r in rows if r[0] == "new_user_share")
    assert drift[1] == "0.4000" and drift[-1] == "FLAGGED"  # 0.4 > 0.25
    assert "<b>ease</b>: best validation objective 0.3100" in text
    pngs = images(html)
    assert len(pngs) == 3  # metrics over dates, tuning (from the trials file), score histogram
    assert all(p.startswith(PNG_MAGIC) for p in pngs)
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # atomic: no temporaries


def test_report_without_optional_parts_and_a_kept_champion(tmp_path):
    wh = Warehouse(tmp_path / "wh")
    full = summary_for(RUN, 0.17, promote=False)
    ev = full.steps.evaluate.model_copy(
        update={
            "decision": Decision(
                promote=False,
                reason="worse by 0.0300",
                diff=None,
                low=None,
                high=None,
                challenger_score=0.17,
                champion_score=None,
            ),
            "challenger_metrics": None,
            "champion_metrics": None,
            "comparison": None,
        }
    )
    train = full.steps.train.model_copy(update={"candidates": []})
    steps = full.steps.model_copy(update={"evaluate": ev, "train": train})
    summary = full.model_copy(update={"steps": steps, "drift": []})
    html = build_report(wh, RUN, summary=summary).read_text()
    assert "Kept the champion popularity-2026-01-20-00000000" in html and "worse by 0.0300" in html
    assert "No manifest for 2026-01-31" in html and "No drift statistics" in html
    assert "<h2>Metrics" not in html and "<h2>Hyperparameter tuning" not in html
    assert images(html) == []


def test_run_history_reads_the_completed_nights(tmp_path, monkeypatch):
    """One history: the run markers, oldest first; a damaged or foreign marker is left out."""
    wh = Warehouse(tmp_path / "wh")
    for day, ndcg in ((dt.date(2026, 1, 28), 0.21), (dt.date(2026, 1, 29), 0.23)):
        write_marker(wh, summary_for(day, ndcg))
    damaged = wh.run_marker(dt.date(2026, 1, 30))
    damaged.write_text("{not json")  # skipped, never fatal
    atomic_write_json(wh.run_marker(dt.date(2026, 1, 31)), {"run_date": "2026-01-31"})
    assert [s.run_date for s in run_history(wh)] == ["2026-01-28", "2026-01-29"]
    assert [s.run_date for s in run_history(wh, until=dt.date(2026, 1, 28))] == ["2026-01-28"]
    assert previous_run(wh, RUN).run_date == "2026-01-29"
    assert previous_run(wh, dt.date(2026, 1, 28)) is None
    hist = metrics_history(wh)
    # the drift baseline reads markers newest first and stops at the first good one
    from recsys_core.reporting import _history

    read = []
    real = _history.read_json
    monkeypatch.setattr(_history, "read_json", lambda p, **k: read.append(p.name) or real(p, **k))
    assert previous_run(wh, dt.date(2026, 2, 5)).run_date == "2026-01-29"
    assert read == [f"run_date=2026-01-{d}.json" for d in (31, 30, 29)]
    read.clear()
    assert previous_run(wh, dt.date(2026, 1, 30)).run_date == "2026-01-29" and len(read) == 1
    ndcg = hist.filter((pl.col("role") == "challenger") & (pl.col("metric") == "ndcg"))
    assert ndcg["value"].to_list() == [0.21, 0.23]
    assert ndcg["model_id"].to_list() == ["ease-2026-01-28-1c4e0917", "ease-2026-01-29-1c4e0917"]
    champ = hist.filter(pl.col("role") == "champion")["model_id"].unique().to_list()
    assert champ == ["popularity-2026-01-20-00000000"]
    assert (
        metrics_history(wh, until=dt.date(2026, 1, 28)).filter(pl.col("metric") == "ndcg").height
        == 2  # challenger and champion of one night
    )


def test_metrics_history_on_an_object_store_reads_only_new_markers(s3_bucket, monkeypatch):
    """On an object store the metrics over run dates start from a checkpoint named by the
    markers' versions: a night reads the markers after it only, and a rewritten marker (a
    re-run night) makes every later checkpoint stale. Always the same frame as reading every
    marker."""
    from recsys_core.io import files_under, forget_cached_objects
    from recsys_core.reporting import _history

    wh = Warehouse(f"{s3_bucket}/wh")
    days = [dt.date(2026, 1, 20) + dt.timedelta(days=i) for i in range(7)]
    for i, day in enumerate(days[:6]):
        write_marker(wh, summary_for(day, 0.2 + i / 100))
    read = []
    real = _history.read_json
    monkeypatch.setattr(_history, "read_json", lambda p, **k: read.append(p.name) or real(p, **k))

    def fresh(until=None):  # as a new worker: nothing in memory
        forget_cached_objects()
        read.clear()
        got = metrics_history(wh, until)
        reads = list(read)
        assert got.equals(_history.metrics_frame(run_history(wh, until)))
        return got, reads

    _, reads = fresh()
    assert len(reads) == 6 and len(files_under(wh.checkpoints("run_metrics"))) == 1
    write_marker(wh, summary_for(days[6], 0.3))
    got, reads = fresh()
    assert reads == ["run_date=2026-01-26.json"]
    assert len(files_under(wh.checkpoints("run_metrics"))) == 1  # the older one is deleted
    _, reads = fresh(until=days[2])  # three markers: folded directly, no checkpoint
    assert len(reads) == 3 and len(files_under(wh.checkpoints("run_metrics"))) == 1
    write_marker(wh, summary_for(days[3], 0.9))  # night 4 run again: a new version
    got, reads = fresh()
    assert len(reads) == 7
    ndcg = got.filter((pl.col("role") == "challenger") & (pl.col("metric") == "ndcg"))
    assert ndcg["value"].to_list()[3] == 0.9


def test_run_marker_round_trips(tmp_path):
    """What finalize writes is what the history reads back, field for field."""
    wh = Warehouse(tmp_path / "wh")
    summary = summary_for(RUN, 0.25)
    write_marker(wh, summary)
    assert run_history(wh) == [summary]
    on_disk = json.loads(wh.run_marker(RUN).read_text())
    assert on_disk["steps"]["evaluate"]["decision"]["reason"].startswith("Promoted: challenger")
    assert "note" not in on_disk["steps"]["evaluate"]  # optional parts only when set
    assert "sql" not in on_disk["steps"] and "abtest" not in on_disk["steps"]


def test_markdown_and_table_digests():
    ev = evaluate_for(RUN, 0.2468)
    md = markdown_summary(ev)
    assert md.startswith("## Run 2026-01-31: Promoted ease-2026-01-31-1c4e0917")
    assert "| ndcg | 0.2468 | 0.2000 | 0.0468 | 0.0123 to 0.0456 |" in md
    rows = metrics_table(ev)
    assert [r["metric"] for r in rows] == ["ndcg", "recall", "coverage"]
    assert rows[1] == {
        "metric": "recall",
        "challenger": 0.4321,
        "champion": 0.3,
        "difference": 0.1321,
        "ci_low": None,
        "ci_high": None,
    }
    night = night_markdown(summary_for(RUN, 0.2468), "http://x/report.html")
    assert night.startswith("## recsys 2026-01-31: Promoted ease-2026-01-31-1c4e0917")
    assert "new_user_share = 0.4000" in night  # the flagged drift signal
    assert night.rstrip().endswith("[Open the full report](http://x/report.html)")
