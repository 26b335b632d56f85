"""Drift signals, the evaluation record, the HTML report and the Prefect digests."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re

import polars as pl
import pytest

from recsys_core.io import Warehouse, atomic_write_json, atomic_write_parquet
from recsys_core.reporting import (
    build_report,
    data_stats,
    drift_signals,
    markdown_summary,
    metrics_history,
    metrics_table,
    normalize_summary,
    previous_stats,
    recommendation_stats,
    write_evaluation,
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
def summary_for(run_date: dt.date, ndcg: float, promote: bool = True) -> dict:
    return {
        "run_date": run_date.isoformat(),
        "k": 10,
        "metric": "ndcg",
        "decision": {
            "promote": promote,
            "reason": f"Promoted: challenger ndcg {ndcg:.4f} vs champion 0.2000 (test reason)",
            "diff": ndcg - 0.2,
            "low": 0.0123,
            "high": 0.0456,
        },
        "challenger": {
            "model_id": "ease-2026-01-31-1c4e0917",
            "name": "ease",
            "params": {"reg": 250.0},
            "metrics": {"ndcg": ndcg, "recall": 0.4321, "coverage": 0.25},
        },
        "champion": {
            "model_id": "popularity-2026-01-20-00000000",
            "metrics": {"ndcg": 0.2, "recall": 0.3},
        },
        "comparison": [
            {
                "metric": "ndcg",
                "challenger": ndcg,
                "champion": 0.2,
                "diff": ndcg - 0.2,
                "low": 0.0123,
                "high": 0.0456,
                "p_worse": 0.0,
            },
        ],
        "evaluation": {
            "segments": {
                "new_users": {"n_users": 17},
                "cold_items": {"n_pairs": 5, "hit": 0.2, "recall": 0.1},
                "heavy_users": {"n_users": 3, "metrics": {"ndcg": 0.5}},
            }
        },
        "stats": {"new_user_share": 0.4, "score_mean": 2.0, "coverage": 0.25},
        "drift_threshold": 0.25,
        "tuning": {"ease": {"trials": [0.1, 0.3, 0.2], "best_params": {"reg": 250.0}}},
        "timings": {"train": 12.34},
    }


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
    write_evaluation(wh, RUN - dt.timedelta(days=1), summary_for(RUN - dt.timedelta(days=1), 0.22))
    recs = pl.DataFrame(
        {"user_id": ["a", "b"], "item_id": ["x", "y"], "rank": [1, 1], "score": [0.5, 1.5]}
    )
    atomic_write_parquet(recs, wh.recommendations(RUN))
    path = build_report(wh, RUN, summary=summary_for(RUN, 0.2468))
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
    assert any(r[0].startswith("new users") and r[1:] == ["users", "17"] for r in rows), rows
    drift = next(r for r in rows if r[0] == "new_user_share")
    assert drift[1] == "0.4000" and drift[-1] == "FLAGGED"  # 0.4 > 0.25
    assert ["train", "12.3"] in rows  # step timings
    pngs = images(html)
    assert len(pngs) == 3  # metrics over dates, tuning, score histogram
    assert all(p.startswith(PNG_MAGIC) for p in pngs)
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # atomic: no temporaries


def test_report_without_optional_parts_and_a_kept_champion(tmp_path):
    wh = Warehouse(tmp_path / "wh")
    summary = {
        "run_date": RUN.isoformat(),
        "decision": {"promote": False, "reason": "worse by 0.0300"},
        "champion": {"model_id": "ease-x"},
    }
    html = build_report(wh, RUN, summary=summary).read_text()
    assert "Kept the champion ease-x" in html and "worse by 0.0300" in html
    assert "No manifest for 2026-01-31" in html and "No drift statistics" in html
    assert images(html) == []


def test_drift_in_report_uses_previous_run_stats(tmp_path):
    wh = Warehouse(tmp_path / "wh")
    prev = summary_for(RUN - dt.timedelta(days=1), 0.2)
    prev["stats"] = {"score_mean": 1.0}
    write_evaluation(wh, RUN - dt.timedelta(days=1), prev)
    assert previous_stats(wh, RUN) == {"score_mean": 1.0}
    assert previous_stats(wh, RUN - dt.timedelta(days=1)) is None
    html = build_report(wh, RUN, summary=summary_for(RUN, 0.25)).read_text()
    row = re.search(r"<td>score_mean</td>(.*?)</tr>", html).group(1)
    assert "1.0000" in row and "FLAGGED" in row  # 1.0 -> 2.0 is +100%


def test_metrics_history_reads_both_record_shapes(tmp_path):
    wh = Warehouse(tmp_path / "wh")
    write_evaluation(wh, dt.date(2026, 1, 29), summary_for(dt.date(2026, 1, 29), 0.21))
    # the pipeline's evaluate-step output, stored as it is
    atomic_write_json(
        wh.evaluation(dt.date(2026, 1, 30)),
        {
            "run_date": "2026-01-30",
            "k": 10,
            "metric": "ndcg",
            "challenger": "ease-2026-01-30-aaaaaaaa",
            "champion_before": None,
            "decision": {"promote": True, "reason": "first"},
            "challenger_metrics": {"metrics": {"ndcg": 0.23}},
            "champion_metrics": None,
        },
    )
    damaged = wh.evaluation(dt.date(2026, 1, 31))
    damaged.parent.mkdir(parents=True)
    damaged.write_text("{not json")  # skipped, never fatal
    hist = metrics_history(wh)
    ndcg = hist.filter((pl.col("role") == "challenger") & (pl.col("metric") == "ndcg"))
    assert ndcg["value"].to_list() == [0.21, 0.23]
    assert ndcg["model_id"].to_list()[1] == "ease-2026-01-30-aaaaaaaa"
    assert (
        metrics_history(wh, until=dt.date(2026, 1, 29)).filter(pl.col("metric") == "ndcg").height
        == 2
    )


def test_pipeline_finalize_shape_is_understood(tmp_path):
    steps = {
        "clean": {
            "dates_cleaned": ["2026-01-31"],
            "events": {"ingested": 99, "clean": 90, "duplicates": 6, "quarantined": 3},
        },
        "train": {
            "challenger": "ease-2026-01-31-aaaaaaaa",
            "model": "ease",
            "params": {"reg": 9.0},
            "candidates": [
                {
                    "model": "ease",
                    "validation_score": 0.31,
                    "convergence_png": None,
                    "trials_path": None,
                }
            ],
        },
        "evaluate": {
            "run_date": "2026-01-31",
            "k": 5,
            "metric": "ndcg",
            "challenger": "ease-2026-01-31-aaaaaaaa",
            "champion_before": "ease-2026-01-30-bbbbbbbb",
            "decision": {"promote": False, "reason": "Kept the champion: worse by 0.0777"},
            "challenger_metrics": {
                "metrics": {"ndcg": 0.1111},
                "segments": {"new_users": {"n_users": 4}},
            },
            "champion_metrics": {"metrics": {"ndcg": 0.1888}},
        },
    }
    summary = {
        "run_date": "2026-01-31",
        "steps": steps,
        "recommendation_stats": {"score_mean": 1.0},
        "drift": [],
    }
    norm = normalize_summary(summary)
    assert norm["challenger"]["params"] == {"reg": 9.0} and norm["k"] == 5
    assert norm["champion"]["model_id"] == "ease-2026-01-30-bbbbbbbb"
    rows = metrics_table(summary)
    assert rows == [
        {
            "metric": "ndcg",
            "challenger": 0.1111,
            "champion": 0.1888,
            "difference": -0.0777,
            "ci_low": None,
            "ci_high": None,
        }
    ]
    html = without_images(build_report(Warehouse(tmp_path), RUN, summary=summary).read_text())
    assert "Kept the champion ease-2026-01-30-bbbbbbbb" in html and "worse by 0.0777" in html
    rows = table_rows(html)
    assert ["ingested", "99"] in rows and ["quarantined", "3"] in rows  # the clean step totals
    assert "0.3100" in html  # the tuning's best value


def test_markdown_and_table_digests():
    s = summary_for(RUN, 0.2468)
    s["drift"] = drift_signals(s["stats"], None, 0.25)
    md = markdown_summary(s)
    assert md.startswith("## Run 2026-01-31: Promoted ease-2026-01-31-1c4e0917")
    assert "| ndcg | 0.2468 | 0.2000 | 0.0468 | 0.0123 to 0.0456 |" in md
    assert "new_user_share = 0.4000" in md
    rows = metrics_table(s)
    assert [r["metric"] for r in rows] == ["ndcg", "recall", "coverage"]
    assert rows[1] == {
        "metric": "recall",
        "challenger": 0.4321,
        "champion": 0.3,
        "difference": 0.1321,
        "ci_low": None,
        "ci_high": None,
    }
