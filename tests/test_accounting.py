"""Nothing silently dropped (issue 13): every landing row and every landing path is accounted for.

Core step functions (``recsys_core.pipeline.ingest_step`` / ``clean_step``, what the nightly flow's
first two tasks call) on tiny hand-written landing zones; the CLI where the user's entry point is
the command line (bad settings, a fresh install); a Hypothesis property over several nights of
random landing drops. The flow-level tests (completion marker, fresh install) are marked slow.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import polars as pl
import pytest

from flows.parameters import RunOptions
from recsys_core.config import ConfigError, Settings, load_settings
from recsys_core.ingest import (
    LandingLayoutError,
    LandingPathError,
    LandingReadError,
    LandingWarning,
    load_clean_events,
)
from recsys_core.io import Warehouse
from recsys_core.pipeline import clean_step, ingest_step
from recsys_core.reporting import build_report
from recsys_core.results import CleanResult, IngestStepResult, RunSummary

REPO = Path(__file__).resolve().parents[1]
D1, D2, D3, D4, D5 = (dt.date(2026, 1, 4) + dt.timedelta(days=k) for k in range(5))
HEADER = "user_id,item_id,event_type,timestamp,value,event_id\n"


def put(landing: Path, kind: str, day: dt.date, name: str, text: str | bytes) -> Path:
    path = landing / kind / f"date={day.isoformat()}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def csv(*rows: str) -> str:
    return HEADER + "".join(r + "\n" for r in rows)


def ev(day: dt.date, hms: str, eid: str, user: str = "u", item: str = "i", kind="view") -> str:
    return f"{user},{item},{kind},{day.isoformat()}T{hms}Z,,{eid}"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(landing=tmp_path / "landing", warehouse=tmp_path / "wh")


def night(
    settings: Settings, day: dt.date, *, force: bool = False, warned: list[str] | None = None
) -> tuple[IngestStepResult, CleanResult]:
    """The flow's first two steps for one run date; LandingWarnings are collected in ``warned``,
    not raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ingested = ingest_step(settings, day, force=force)
    if warned is not None:
        warned += [str(w.message) for w in caught if w.category is LandingWarning]
    return ingested, clean_step(settings, day, force=force)


def _summary_with(day: dt.date, ingested: IngestStepResult, cleaned: CleanResult) -> RunSummary:
    """A night's summary around real ingest and clean results (the later steps are stand-ins)."""
    model_id = f"popularity-{day}-00000000"
    decision = {"promote": False, "reason": "test", "diff": None, "low": None, "high": None,
                "challenger_score": 0.0, "champion_score": None}  # fmt: skip
    stats = {"n_users": 0, "n_rows": 0, "n_items_recommended": 0, "coverage": 0.0,
             "score_mean": None, "score_p50": None, "score_p90": None, "models": []}  # fmt: skip
    return RunSummary.model_validate(
        {
            "run_date": day.isoformat(),
            "code_version": "test",
            "settings": {},
            "drift": [],
            "recommendation_stats": stats,
            "steps": {
                "ingest": ingested,
                "clean": cleaned,
                "train": {
                    "challenger": model_id,
                    "model": "popularity",
                    "params": {},
                    "fit_seconds": 0.0,
                    "n_items": 1,
                    "candidates": [],
                },  # fmt: skip
                "evaluate": {
                    "run_date": day.isoformat(),
                    "k": 10,
                    "metric": "ndcg",
                    "challenger": model_id,
                    "champion_before": None,
                    "champion_entry": None,
                    "champion_after": None,
                    "decision": decision,
                    "challenger_metrics": None,
                    "champion_metrics": None,
                    "gate": {"holdout": [day.isoformat()] * 2, "same_recipe": False, "checks": []},
                },  # fmt: skip
                "score": {"path": "", "rows": 0, "users": 0, "items": 0, "model_id": model_id},
            },
        }
    )


def manifest(settings: Settings, day: dt.date) -> dict:
    return json.loads(Warehouse(settings.warehouse).manifest(day).read_text())


def quarantine(settings: Settings, day: dt.date) -> pl.DataFrame:
    return pl.read_parquet(Warehouse(settings.warehouse).quarantine(day))


def mtimes(wh: Warehouse) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in sorted(wh.root.rglob("*")) if p.is_file()}


# ---- 1. late files ------------------------------------------------------------------------------
def test_a_late_file_is_picked_up_by_the_next_run_without_force(settings: Settings) -> None:
    landing = settings.landing
    put(landing, "events", D1, "a.csv", csv(ev(D1, "10:00:00", "e1")))
    put(landing, "events", D2, "a.csv", csv(ev(D2, "10:00:00", "e2")))
    night(settings, D1)
    night(settings, D2)
    assert manifest(settings, D1)["events"]["ingested"] == 1
    late = put(landing, "events", D1, "b.csv", csv(ev(D1, "12:00:00", "e3", user="v")))
    put(landing, "events", D3, "a.csv", csv(ev(D3, "10:00:00", "e4")))

    warned: list[str] = []
    ingested, cleaned = night(settings, D3, warned=warned)
    assert ingested.late == ["events/date=2026-01-04/b.csv (new)"]
    assert ingested.late_dates == {"events": ["2026-01-04"]}
    assert any("late landing files picked up" in w and "b.csv" in w for w in warned)
    assert "2026-01-04" in cleaned.dates_cleaned
    m1 = manifest(settings, D1)
    assert m1["events"] == {"ingested": 2, "clean": 2, "duplicates": 0, "quarantined": 0}
    assert m1["late_files"] == ["events/date=2026-01-04/b.csv (new)"]
    names = [f["name"] for f in m1["landing_files"]["events"]]
    assert names == ["events/date=2026-01-04/a.csv", "events/date=2026-01-04/b.csv"]
    entry = m1["landing_files"]["events"][1]
    assert entry["size"] == late.stat().st_size and entry["mtime_ns"] == late.stat().st_mtime_ns
    assert len(entry["blake2b"]) == 32
    clean = load_clean_events(Warehouse(settings.warehouse), until=D3)
    assert sorted(clean["event_id"].to_list()) == ["e1", "e2", "e3", "e4"]


def test_a_changed_file_is_re_read_not_double_counted(settings: Settings) -> None:
    a = put(settings.landing, "events", D1, "a.csv", csv(ev(D1, "10:00:00", "e1")))
    night(settings, D1)
    a.write_text(csv(ev(D1, "10:00:00", "e1"), ev(D1, "11:00:00", "e2")), encoding="utf-8")
    put(settings.landing, "events", D2, "a.csv", csv(ev(D2, "10:00:00", "e9")))
    ingested, _ = night(settings, D2)
    assert ingested.late == ["events/date=2026-01-04/a.csv (changed)"]
    assert manifest(settings, D1)["events"]["ingested"] == 2  # not 1 + 2
    a.unlink()
    put(settings.landing, "events", D1, "c.csv", csv(ev(D1, "12:00:00", "e5")))
    ingested, _ = night(settings, D2)
    assert sorted(ingested.late) == [
        "events/date=2026-01-04/a.csv (removed)",
        "events/date=2026-01-04/c.csv (new)",
    ]
    assert manifest(settings, D1)["events"]["ingested"] == 1


def test_unchanged_landing_rewrites_nothing_and_a_touched_file_is_not_late(
    settings: Settings,
) -> None:
    a = put(settings.landing, "events", D1, "a.csv", csv(ev(D1, "10:00:00", "e1")))
    night(settings, D1)
    wh = Warehouse(settings.warehouse)
    outputs = {p: b for p in wh.root.rglob("*") if p.is_file() for b in [p.read_bytes()]}
    before = mtimes(wh)
    ingested, cleaned = night(settings, D1)
    assert ingested.late == [] and cleaned.dates_cleaned == []
    assert mtimes(wh) == before
    os.utime(a, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns + 10**9))  # same bytes, newer
    ingested, cleaned = night(settings, D1)
    assert ingested.late == [] and ingested.dates["events"] == []
    assert cleaned.dates_cleaned == []
    assert {p: p.read_bytes() for p in outputs if not p.name.startswith("_landing")} == {
        p: b for p, b in outputs.items() if not p.name.startswith("_landing")
    }


@pytest.mark.parametrize("damage", ["deleted", "corrupt", "stale"])
def test_the_landing_index_is_only_a_cache_of_the_records(settings: Settings, damage) -> None:
    put(settings.landing, "events", D1, "a.csv", csv(ev(D1, "10:00:00", "e1")))
    night(settings, D1)
    wh = Warehouse(settings.warehouse)
    index = wh.root / "raw" / "events" / "_landing_index.json"
    good = index.read_bytes()
    if damage == "deleted":
        index.unlink()
    elif damage == "corrupt":
        index.write_text("{not json")
    else:  # an entry that disagrees with the landing zone: the record decides
        index.write_text(json.dumps({D1.isoformat(): [["events/date=2026-01-04/a.csv", 1, 1]]}))
    raw = wh.raw("events", D1).stat().st_mtime_ns
    ingested, cleaned = night(settings, D1)
    assert ingested.late == [] and ingested.dates["events"] == []
    assert cleaned.dates_cleaned == [] and wh.raw("events", D1).stat().st_mtime_ns == raw
    assert index.read_bytes() == good  # rebuilt from the records


def test_a_late_file_redoes_near_duplicates_on_the_following_date_only(
    settings: Settings,
) -> None:
    landing = settings.landing
    put(landing, "events", D1, "a.csv", csv(ev(D1, "08:00:00", "e1")))
    put(landing, "events", D2, "a.csv", csv(ev(D2, "00:00:05", "e2"), ev(D2, "12:00:00", "x2")))
    put(landing, "events", D3, "a.csv", csv(ev(D3, "00:00:05", "e3")))
    for day in (D1, D2, D3):
        night(settings, day)
    wh = Warehouse(settings.warehouse)
    assert manifest(settings, D2)["duplicate_kinds"]["events_near"] == 0
    d3_manifest = wh.manifest(D3).stat().st_mtime_ns
    # the late file's event is 15 s before e2 (same user, item, type): e2 becomes a near duplicate
    put(landing, "events", D1, "late.csv", csv(ev(D1, "23:59:50", "e0")))
    put(landing, "events", D4, "a.csv", csv(ev(D4, "10:00:00", "e4")))
    _, cleaned = night(settings, D4)
    assert cleaned.dates_cleaned == ["2026-01-04", "2026-01-05", "2026-01-07"]
    assert cleaned.followers == ["2026-01-05"]
    m2 = manifest(settings, D2)
    assert m2["duplicate_kinds"]["events_near"] == 1
    assert m2["events"] == {"ingested": 2, "clean": 1, "duplicates": 1, "quarantined": 0}
    assert wh.manifest(D3).stat().st_mtime_ns == d3_manifest  # D2's anchors did not change
    # the same outputs as if the late file had been there from the start
    fresh = Settings(landing=landing, warehouse=settings.warehouse.parent / "fresh")
    night(fresh, D4)
    for day in (D1, D2, D3, D4):
        assert (
            Warehouse(fresh.warehouse).clean("events", day).read_bytes()
            == wh.clean("events", day).read_bytes()
        )


def test_a_late_event_id_requarantines_its_later_copy(settings: Settings) -> None:
    landing = settings.landing
    put(landing, "events", D1, "a.csv", csv(ev(D1, "08:00:00", "e1")))
    put(landing, "events", D3, "a.csv", csv(ev(D3, "09:00:00", "dup", user="w")))
    night(settings, D1)
    night(settings, D3)
    assert manifest(settings, D3)["events"]["clean"] == 1
    put(landing, "events", D1, "late.csv", csv(ev(D1, "09:00:00", "dup", user="v")))
    put(landing, "events", D4, "a.csv", csv(ev(D4, "10:00:00", "e4")))
    _, cleaned = night(settings, D4)
    # D3's id now conflicts; D4 (the next day) is re-cleaned too because D3's near-duplicate
    # anchors changed (its clean event is gone), and comes out the same
    assert cleaned.followers == ["2026-01-06", "2026-01-07"]
    assert manifest(settings, D3)["events"]["quarantined"] == 1
    q = quarantine(settings, D3)
    assert q["reason_category"].to_list() == ["conflicting_event_id"]
    assert "events/date=2026-01-04/late.csv row 1" in q["reason"].item()


def test_the_report_names_late_files_and_unrecognised_paths(settings: Settings) -> None:
    settings = settings.model_copy(update={"ingest": settings.ingest.model_copy()})
    settings.ingest.unrecognised_paths = "report"
    put(settings.landing, "events", D1, "a.csv", csv(ev(D1, "10:00:00", "e1")))
    night(settings, D1)
    put(settings.landing, "events", D1, "b.csv", csv(ev(D1, "11:00:00", "e2")))
    (settings.landing / "events" / "date=2026-1-5").mkdir()
    ingested, cleaned = night(settings, D1)
    wh = Warehouse(settings.warehouse)
    summary = _summary_with(D1, ingested, cleaned)
    page = build_report(wh, D1, summary=summary).read_text(encoding="utf-8")
    assert "Late landing files" in page and "events/date=2026-01-04/b.csv (new)" in page
    assert "Unrecognised landing paths" in page and "events/date=2026-1-5/" in page


# ---- 2. every landing path is accounted for -----------------------------------------------------
@pytest.mark.parametrize(
    "stray",
    ["events/date=2026-5-4/", "events/Date=2026-01-04/", "events/date=2026-13-45/",
     "items/notes/", "events/events.csv", "events/date=2026-01-04/sub/"],
)  # fmt: skip
def test_an_unrecognised_landing_path_fails_the_run_naming_it(
    settings: Settings, stray: str
) -> None:
    put(settings.landing, "events", D1, "a.csv", csv(ev(D1, "10:00:00", "e1")))
    path = settings.landing / stray
    if stray.endswith("/"):
        path.mkdir(parents=True)
        (path / "a.csv").write_text(csv(ev(D1, "11:00:00", "lost")), encoding="utf-8")
    else:
        path.write_text(csv(ev(D1, "11:00:00", "lost")), encoding="utf-8")
    with pytest.raises(LandingLayoutError, match=stray.replace(".", r"\.")) as err:
        ingest_step(settings, D1)
    assert 'unrecognised_paths = "report"' in str(err.value)
    assert not Warehouse(settings.warehouse).raw("events", D1).exists()  # before any write

    settings.ingest.unrecognised_paths = "report"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ingested = ingest_step(settings, D1)
    assert ingested.unrecognised == [stray]
    assert any(stray in str(w.message) for w in caught if w.category is LandingWarning)
    clean_step(settings, D1)
    assert manifest(settings, D1)["unrecognised_paths"] == [stray]


def test_hidden_and_underscore_entries_are_not_strays(settings: Settings) -> None:
    put(settings.landing, "events", D1, "a.csv", csv(ev(D1, "10:00:00", "e1")))
    (settings.landing / "events" / "_SUCCESS").write_text("")
    (settings.landing / "events" / ".staging").mkdir()
    assert ingest_step(settings, D1).unrecognised == []


# ---- 3. conflicting duplicates ------------------------------------------------------------------
def test_a_conflicting_event_id_is_quarantined_naming_the_kept_row(settings: Settings) -> None:
    put(
        settings.landing,
        "events",
        D1,
        "a.csv",
        csv(
            ev(D1, "10:00:00", "e1"),
            ev(D1, "10:00:00", "e1"),  # identical copy: a plain duplicate
            ev(D1, "10:30:00", "e1", item="j"),  # same id, other content: a conflict
        ),
    )
    night(settings, D1)
    m = manifest(settings, D1)
    assert m["events"] == {"ingested": 3, "clean": 1, "duplicates": 1, "quarantined": 1}
    assert m["reasons"] == {"conflicting_event_id": 1}
    q = quarantine(settings, D1)
    assert q.select("item_id", "_source_row", "reason_category").rows() == [
        ("j", 3, "conflicting_event_id")
    ]
    assert q["reason"].item() == (
        "event_id 'e1' conflicts with the different event kept under that id at "
        "events/date=2026-01-04/a.csv row 1"
    )


def test_event_ids_are_checked_across_dates_within_the_horizon(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    put(landing, "events", D1, "a.csv", csv(ev(D1, "10:00:00", "e1"), ev(D1, "11:00:00", "e7")))
    put(landing, "events", D3, "b.csv", csv(ev(D3, "10:00:00", "e1", user="v")))
    put(landing, "events", D5, "c.csv", csv(ev(D5, "10:00:00", "e7", user="v")))
    outs = {}
    for name, days in (("daily", [D1, D2, D3, D4, D5]), ("one-pass", [D5])):
        s = Settings(landing=landing, warehouse=tmp_path / name, clean={"event_id_horizon_days": 3})
        for day in days:
            ingest_step(s, day) if day in (D1, D3, D5) or name == "one-pass" else None
            clean_step(s, day)
        outs[name] = s
    for s in outs.values():
        q = quarantine(s, D3)
        assert q["reason_category"].to_list() == ["conflicting_event_id"]
        assert "events/date=2026-01-04/a.csv row 1" in q["reason"].item()
        assert manifest(s, D5)["events"]["clean"] == 1  # 4 days after e7's first use: kept
    wh_daily, wh_pass = (Warehouse(s.warehouse) for s in outs.values())
    for day in (D1, D3, D5):
        assert (
            wh_daily.clean("events", day).read_bytes() == wh_pass.clean("events", day).read_bytes()
        )
        assert wh_daily.manifest(day).read_bytes() == wh_pass.manifest(day).read_bytes()


# ---- 4. files that are not what they claim ------------------------------------------------------
def test_a_zero_byte_parquet_is_a_corrupt_file_and_an_empty_csv_an_empty_drop(
    settings: Settings,
) -> None:
    put(settings.landing, "events", D1, "a.csv", csv(ev(D1, "10:00:00", "e1")))
    put(settings.landing, "events", D1, "empty.csv", "")
    night(settings, D1)
    assert manifest(settings, D1)["events"]["ingested"] == 1
    put(settings.landing, "events", D2, "z.parquet", b"")
    with pytest.raises(LandingReadError) as err:
        ingest_step(settings, D2)
    assert str(err.value).startswith(
        "events/date=2026-01-05/z.parquet: cannot read as Parquet: the file is empty (0 bytes)"
    )


def test_a_symlink_out_of_the_landing_root_is_refused_without_its_content(
    settings: Settings, tmp_path: Path
) -> None:
    secret = tmp_path / "secret" / "passwd.csv"
    secret.parent.mkdir()
    secret.write_text("user_id,item_id\nTOPSECRET,x\n", encoding="utf-8")
    put(settings.landing, "events", D1, "a.csv", csv(ev(D1, "10:00:00", "e1")))
    inside = settings.landing / "events" / f"date={D1.isoformat()}" / "same.csv"
    inside.symlink_to(settings.landing / "events" / f"date={D1.isoformat()}" / "a.csv")
    assert ingest_step(settings, D1).files == 2  # a link inside the landing zone is fine
    link = settings.landing / "events" / f"date={D2.isoformat()}" / "b.csv"
    link.parent.mkdir()
    link.symlink_to(secret)
    with pytest.raises(LandingPathError) as err:
        ingest_step(settings, D2)
    msg = str(err.value)
    assert msg.startswith("events/date=2026-01-05/b.csv: is a symbolic link to a path outside")
    assert "TOPSECRET" not in msg and "secret" not in msg.replace(str(settings.landing), "")
    (settings.landing / "events" / "date=2026-01-06").symlink_to(secret.parent)
    with pytest.raises(LandingPathError, match=r"^events/date=2026-01-06: is a symbolic link"):
        ingest_step(settings, D3)


def test_json_ids_that_are_objects_arrays_or_booleans_are_quarantined(settings: Settings) -> None:
    rows = [
        {"user_id": {"$ne": None}, "item_id": "i"},
        {"user_id": ["a", "b"], "item_id": "i"},
        {"user_id": True, "item_id": "i"},
        {"user_id": "u", "item_id": False},
        {"user_id": 7, "item_id": "i"},  # a number is an id
    ]
    lines = [
        json.dumps({**r, "event_type": "view", "timestamp": f"{D1}T10:0{n}:00Z"})
        for n, r in enumerate(rows)
    ]
    put(settings.landing, "events", D1, "a.jsonl", "\n".join(lines) + "\n")
    night(settings, D1)
    q = quarantine(settings, D1)
    assert q.select("reason_category", "user_id", "item_id").rows() == [
        ("bad_user_id", '{"$ne": null}', "i"),
        ("bad_user_id", '["a", "b"]', "i"),
        ("bad_user_id", "true", "i"),
        ("bad_item_id", "u", "false"),
    ]
    assert q["reason"].to_list() == [
        "user_id is a JSON object '{\"$ne\": null}', expected a string or a number",
        'user_id is a JSON array \'["a", "b"]\', expected a string or a number',
        "user_id is a JSON boolean 'true', expected a string or a number",
        "item_id is a JSON boolean 'false', expected a string or a number",
    ]
    clean = load_clean_events(Warehouse(settings.warehouse), until=D1)
    assert clean["user_id"].to_list() == ["7"]


def test_parquet_ids_that_are_structs_lists_or_booleans_are_quarantined(
    settings: Settings,
) -> None:
    folder = settings.landing / "events" / f"date={D1.isoformat()}"
    folder.mkdir(parents=True)
    ts = [f"{D1}T10:00:00Z"]
    pl.DataFrame({"user_id": [{"a": 1}], "item_id": ["i"], "event_type": ["view"], "timestamp": ts}
                 ).write_parquet(folder / "a.parquet")  # fmt: skip
    pl.DataFrame({"user_id": [True], "item_id": [["x"]], "event_type": ["view"], "timestamp": ts}
                 ).write_parquet(folder / "b.parquet")  # fmt: skip
    night(settings, D1)
    q = quarantine(settings, D1)
    assert q.select("reason_category", "user_id", "item_id").rows() == [
        ("bad_user_id", '{"a": 1}', "i"),
        ("bad_user_id", "true", '["x"]'),
    ]
    assert q["reason"][1] == (
        "user_id is a JSON boolean 'true', expected a string or a number; "
        "item_id is a JSON array '[\"x\"]', expected a string or a number"
    )


# ---- 5. completion means the latest run finished ------------------------------------------------
def test_a_run_withdraws_the_completion_marker_before_changing_anything(
    settings: Settings,
) -> None:
    from recsys_core.pipeline import is_complete

    wh = Warehouse(settings.warehouse)
    put(settings.landing, "events", D1, "a.csv", csv(ev(D1, "10:00:00", "e1")))
    for path in (wh.run_marker(D1), wh.recommendations(D1)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    assert is_complete(settings, D1)
    put(settings.landing, "events", D1, "bad.xlsx", "x")  # ingest fails after the withdrawal
    with pytest.raises(LandingReadError):
        ingest_step(settings, D1)
    assert not wh.run_marker(D1).exists() and not is_complete(settings, D1)


# ---- 6. settings are checked before any work ----------------------------------------------------
@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[clean]\nrating_min = nan", "clean.rating_min = nan: Input should be a finite number"),
        ("[clean]\nrating_max = inf", "clean.rating_max = inf: Input should be a finite number"),
        (
            "[clean]\nrating_min = 6",
            "clean: rating_min 6.0 is greater than rating_max 5.0; expected rating_min <= "
            "rating_max",
        ),
        ("k = true", "k = True: Input should be a valid integer"),
        ('k = "10"', "k = '10': Input should be a valid integer"),
        ("[clean]\ndedupe_window_seconds = 1.5", "clean.dedupe_window_seconds = 1.5"),
        ('[train]\nmodels = ["popularity", "eas"]', "train.models: unknown model(s) ['eas']"),
        ("[train]\nmodel_tune_calls = { sasrek = 3 }", "train.model_tune_calls: unknown model"),
        (
            "[train]\nmodel_params = { ease = { regg = 1.0 } }",
            "train.model_params: ease parameters do not fit EASEConfig: regg: Extra inputs",
        ),
        (
            '[train]\nmodel_params = { sasrec = { epochs = "20" } }',
            "train.model_params: sasrec parameters do not fit SASRecConfig: epochs: Input "
            "should be a valid integer",
        ),
        ("[embedding]\nenabled = 1", "embedding.enabled = 1: Input should be a valid boolean"),
        ('[train]\nmetric = "ndgc"', "train.metric: unknown metric 'ndgc'"),
        ("[train]\nevent_weights = { veiw = 1.0 }", "train.event_weights: unknown event type(s)"),
    ],
)
def test_bad_settings_fail_the_cli_before_any_work_naming_the_key(
    tmp_path: Path, capsys, toml: str, message: str
) -> None:
    from deployments.cli import main

    cfg = tmp_path / "recsys.toml"
    cfg.write_text(f'landing = "landing"\nwarehouse = "wh"\n{toml}\n', encoding="utf-8")
    put(tmp_path / "landing", "events", D1, "a.csv", csv(ev(D1, "10:00:00", "e1")))
    assert main(["run", "--date", D1.isoformat(), "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"recsys run: failed: ConfigError: config file {cfg}: ")
    assert message in err, err
    assert not (tmp_path / "wh").exists()  # nothing ingested
    with pytest.raises(ConfigError):
        load_settings(cfg)


# ---- 7. a fresh install runs --------------------------------------------------------------------
@pytest.fixture
def refresh_prefect_settings(monkeypatch):
    """Give Prefect's settings back the session's environment after a test that changed it and
    made the CLI apply the change (``configure_environment`` refreshes Prefect's settings)."""
    yield
    monkeypatch.undo()
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()


def test_prefect_home_is_created_and_an_unusable_one_is_named(
    tmp_path: Path, monkeypatch, capsys, refresh_prefect_settings
):
    from deployments.cli import main
    from flows.runtime import configure_environment, explain_startup_failure

    home = tmp_path / "a" / "b" / "prefect"
    monkeypatch.setenv("PREFECT_HOME", str(home))
    configure_environment()
    assert home.is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("PREFECT_HOME", str(blocker / "prefect"))
    assert main(["run", "--date", D1.isoformat(), "--landing", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"recsys run: failed: PrefectHomeError: cannot create PREFECT_HOME {blocker}"
    )
    assert "\n" not in err
    prefect_timeout = RuntimeError(  # what Prefect 3.9 raises, log and all
        "Timed out while attempting to connect to ephemeral Prefect API server. Ephemeral server "
        "process exited with code 1. stdout: b'' stderr: Traceback (most recent call last):\n"
        "  File x\nsqlite3.OperationalError: unable to open database file\n"
    )
    from prefect.settings import (
        PREFECT_HOME,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    # the line names the folder and timeout Prefect used (its settings, not the environment)
    with temporary_settings(
        {
            PREFECT_HOME: str(blocker / "prefect"),
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 77,
        }
    ):
        line = explain_startup_failure(prefect_timeout)
    assert line == (
        "Prefect's local API did not start within 77 s; the server process exited with code 1 "
        "(sqlite3.OperationalError: unable to open database file); check that PREFECT_HOME="
        f"{blocker / 'prefect'} is writable, or point PREFECT_API_URL at a running server "
        "(make server)"
    )
    assert explain_startup_failure(ValueError("other")) is None


def test_the_cli_applies_its_prefect_settings_however_prefect_was_imported(tmp_path: Path) -> None:
    """Prefect reads its settings from the environment once, at its first import. With no
    PREFECT_* variable set (a newcomer's shell), the CLI's module must not import Prefect before
    ``configure_environment`` has set PREFECT_HOME and the local API's start-up timeout, and
    where Prefect was imported first the call still applies them: otherwise the local API keeps
    ``~/.prefect`` and a 20 s timeout, and ``recsys run`` fails on a loaded machine."""
    code = (
        "import os, sys\n"
        "import deployments.cli\n"
        "print('prefect' in sys.modules)\n"
        "import prefect.flows\n"  # what a flow module or a plugin does first
        "os.environ['PREFECT_HOME'] = sys.argv[1]\n"
        "from flows.runtime import configure_environment, explain_startup_failure\n"
        "configure_environment()\n"
        "from prefect.settings import get_current_settings\n"
        "s = get_current_settings()\n"
        "print(s.home)\n"
        "print(s.server.ephemeral.startup_timeout_seconds)\n"
        "print(explain_startup_failure(RuntimeError('Timed out while attempting to connect to "
        "ephemeral Prefect API server.')))\n"
    )
    home = tmp_path / "new" / "prefect"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))
    res = subprocess.run(
        [sys.executable, "-c", code, str(home)], capture_output=True, text=True, env=env,
        cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    imported_early, prefect_home, timeout, line = res.stdout.strip().splitlines()[-4:]
    assert imported_early == "False"
    assert prefect_home == str(home) and home.is_dir()
    assert timeout == "300"
    assert line.startswith(f"Prefect's local API did not start within 300 s; check that "
                           f"PREFECT_HOME={home} is writable")  # fmt: skip


@pytest.mark.slow
@pytest.mark.prefect
def test_a_fresh_install_runs_with_a_prefect_home_that_does_not_exist_yet(tmp_path: Path) -> None:
    """``recsys run`` in a fresh process with no Prefect server and PREFECT_HOME three levels
    below nothing: the local API starts (its SQLite database in the new folder) and the run
    completes."""
    from recsys_core.landing import generate_synthetic

    generate_synthetic(tmp_path / "landing", users=40, items=30, days=5, seed=1, end_date=D5)
    cfg = tmp_path / "recsys.toml"
    cfg.write_text(
        'landing = "landing"\nwarehouse = "wh"\nk = 5\n[train]\nmodels = ["popularity"]\n'
        "tune_calls = 2\ntune_initial_points = 1\nvalidation_days = 1\n[evaluation]\n"
        "holdout_days = 1\nbootstrap_samples = 100\n[embedding]\nenabled = false\n",
        encoding="utf-8",
    )
    home = tmp_path / "fresh" / "var" / "prefect"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "RECSYS_"))}
    env.update(PREFECT_HOME=str(home), PYTHONPATH=str(REPO))
    res = subprocess.run(
        [sys.executable, "-m", "deployments.cli", "run", "--date", D5.isoformat(), "--config", str(cfg)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"recsys nightly {D5} completed" in res.stdout
    assert home.is_dir() and any(home.iterdir())
    assert Warehouse(tmp_path / "wh").run_marker(D5).is_file()


# ---- 8. smaller -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "kind"),
    [(errno.ENOSPC, OSError), (errno.EACCES, PermissionError), (errno.EROFS, OSError)],
)
def test_a_failed_write_names_the_path(settings: Settings, monkeypatch, error, kind) -> None:
    import pyarrow.parquet as pq

    def full(*args, **kwargs):
        raise OSError(error, os.strerror(error))

    put(settings.landing, "events", D1, "a.csv", csv(ev(D1, "10:00:00", "e1")))
    monkeypatch.setattr(pq, "write_table", full)
    monkeypatch.setattr(pl.DataFrame, "write_parquet", full)  # raw partitions: polars' writer
    target = Warehouse(settings.warehouse).raw("events", D1)
    with pytest.raises(kind) as err:
        ingest_step(settings, D1)
    assert str(err.value) == f"[Errno {error}] cannot write {target}: {os.strerror(error)}"
    assert not [p for p in target.parent.glob(".tmp-*")]


def test_ids_are_normalised_as_the_readme_says(settings: Settings) -> None:
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert "leading and trailing whitespace (Unicode, including tabs and non-breaking" in readme
    assert "`reason` is unescaped data" in readme
    put(
        settings.landing,
        "events",
        D1,
        "a.csv",
        csv(
            " 007\t,\u00a0Item ,view,2026-01-04T10:00:00Z,,e1",
            "007,item,view,2026-01-04T11:00:00Z,,e2",
        ),
    )
    night(settings, D1)
    clean = load_clean_events(Warehouse(settings.warehouse), until=D1)
    assert clean.select("user_id", "item_id").rows() == [("007", "Item"), ("007", "item")]


# ---- the property: every landing row in exactly one place, night after night ----------------------
from hypothesis import HealthCheck, example, given  # noqa: E402
from hypothesis import settings as hsettings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_ROW = st.tuples(
    st.sampled_from(["u1", "u2", " u1", ""]),  # "" is a missing user
    st.sampled_from(["i1", "i2"]),
    st.sampled_from(["view", "view", "click", "rating", "like"]),  # like: unknown type
    st.sampled_from(["00:00", "00:01", "10:00", "23:59"]),  # near duplicates across midnight too
    st.sampled_from([0, 30, 59, -1]),  # second; -1: an unparseable timestamp
    st.sampled_from(["", "", "3", "9"]),  # value; 9 is out of range for a rating
    st.sampled_from(["", "", "e1", "e2"]),  # reused ids: duplicates and conflicts
)
_DROP = st.tuples(
    st.sampled_from([0, 1, 2, 2]),  # days before the run date it lands in (>0: a late file)
    st.booleans(),  # rewrite an existing file of that date (if any) instead of adding one
    st.lists(_ROW, min_size=0, max_size=6),
)
_NIGHTS = st.lists(st.lists(_DROP, min_size=0, max_size=3), min_size=3, max_size=4)


def _r(user: str, eid: str, hh_mm: str = "10:00", second: int = 0) -> tuple:
    return (user, "i1", "view", hh_mm, second, "", eid)


def _text(day: dt.date, rows) -> str:
    lines = []
    for user, item, kind, hh_mm, second, value, eid in rows:
        ts = "soon" if second < 0 else f"{day.isoformat()}T{hh_mm}:{second:02d}Z"
        lines.append(f"{user},{item},{kind},{ts},{value},{eid}")
    return csv(*lines)


def _landing_rows(landing: Path, day: dt.date) -> set[tuple[str, int]]:
    folder = landing / "events" / f"date={day.isoformat()}"
    out = set()
    for path in sorted(folder.glob("*.csv")):
        n = len(path.read_text(encoding="utf-8").splitlines()) - 1
        out |= {(path.relative_to(landing).as_posix(), r) for r in range(1, n + 1)}
    return out


def _keys(df: pl.DataFrame) -> list[tuple[str, int]]:
    return list(zip(df["_source_file"], df["_source_row"], strict=True))


@hsettings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(nights=_NIGHTS, horizon=st.sampled_from([0, 2, 30]))
@example(  # a late file takes an event id that a later date had kept: that copy now conflicts
    nights=[[], [(0, False, [_r("u1", "e1")])], [(2, False, [_r("u2", "e1", "09:00")])]],
    horizon=30,
)
@example(  # a late file's event 20 s before midnight makes the next day's first a near duplicate
    nights=[
        [],
        [(0, False, [_r("u1", "", "00:00", 10)])],
        [(2, False, [_r("u1", "", "23:59", 50)])],
    ],
    horizon=30,
)
def test_every_landing_row_is_clean_quarantined_or_a_counted_duplicate(
    tmp_path_factory, nights, horizon
) -> None:
    root = tmp_path_factory.mktemp("nights")
    landing = root / "landing"
    s = Settings(landing=landing, warehouse=root / "wh", clean={"event_id_horizon_days": horizon})
    wh = Warehouse(s.warehouse)
    start = dt.date(2026, 3, 10)
    clock = 1_700_000_000 * 10**9  # every write gets a later mtime, as real drops would
    for k, drops in enumerate(nights):
        run_date = start + dt.timedelta(days=k)
        for back, rewrite, rows in [(0, False, [])] + drops:  # the run date always has a drop
            day = max(start, run_date - dt.timedelta(days=back))
            folder = landing / "events" / f"date={day.isoformat()}"
            existing = sorted(folder.glob("*.csv")) if folder.is_dir() else []
            path = existing[0] if rewrite and existing else folder / f"n{k}-{len(existing)}.csv"
            put(landing, "events", day, path.name, _text(day, rows))
            clock += 10**9
            os.utime(path, ns=(clock, clock))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LandingWarning)
            ingest_step(s, run_date)
        clean_step(s, run_date)

        totals = dict.fromkeys(("ingested", "clean", "duplicates", "quarantined"), 0)
        for d in (start + dt.timedelta(days=i) for i in range(k + 1)):
            rows = _landing_rows(landing, d)
            clean = pl.read_parquet(wh.clean("events", d))
            q = (
                pl.read_parquet(wh.quarantine(d))
                if wh.quarantine(d).is_file()
                else pl.DataFrame(schema={"_source_file": pl.String, "_source_row": pl.Int64})
            )
            kept, bad = _keys(clean), _keys(q)
            assert len(set(kept)) == len(kept) and len(set(bad)) == len(bad)
            assert not set(kept) & set(bad)
            assert set(kept) | set(bad) <= rows
            m = manifest(s, d)["events"]
            assert m["ingested"] == len(rows)
            assert (m["clean"], m["quarantined"]) == (len(kept), len(bad))
            assert m["duplicates"] == len(rows - set(kept) - set(bad))
            assert m["ingested"] == m["clean"] + m["duplicates"] + m["quarantined"]
            for key in totals:
                totals[key] += m[key]
        assert totals["ingested"] == totals["clean"] + totals["duplicates"] + totals["quarantined"]

    # night by night with late files gives what one run over the final landing zone gives
    once = Settings(landing=landing, warehouse=root / "once", clean=s.clean)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LandingWarning)
        ingest_step(once, run_date)
    clean_step(once, run_date)
    other = Warehouse(once.warehouse)
    for d in wh.clean_dates("events"):
        assert other.clean("events", d).read_bytes() == wh.clean("events", d).read_bytes(), d
        assert other.quarantine(d).is_file() == wh.quarantine(d).is_file()
        if wh.quarantine(d).is_file():
            assert pl.read_parquet(other.quarantine(d)).equals(pl.read_parquet(wh.quarantine(d)))


# ---- through the flow ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.prefect
def test_flow_names_late_files_and_a_killed_forced_rerun_leaves_the_date_incomplete(
    prefect_harness, tmp_path: Path, monkeypatch
) -> None:
    from flows.nightly import nightly
    from recsys_core.landing import generate_synthetic
    from recsys_core.pipeline import InjectedFault, backfill_plan, is_complete

    end = dt.date(2026, 1, 6)
    generate_synthetic(tmp_path / "landing", users=60, items=40, days=6, seed=1, end_date=end)
    cfg = tmp_path / "recsys.toml"
    cfg.write_text(
        'landing = "landing"\nwarehouse = "wh"\nk = 5\n[train]\nmodels = ["popularity", "ease"]\n'
        "tune_calls = 3\ntune_initial_points = 2\nvalidation_days = 1\n[evaluation]\n"
        "holdout_days = 1\nbootstrap_samples = 100\n[embedding]\nenabled = false\n[runner]\n"
        "retries = 0\nretry_delay_seconds = 0\n",
        encoding="utf-8",
    )
    s = load_settings(cfg)
    wh = Warehouse(s.warehouse)
    nightly(run_date=end, options=RunOptions(config_path=str(cfg)))
    assert is_complete(s, end)

    early = end - dt.timedelta(days=2)
    before = manifest(s, early)["events"]["ingested"]
    users = pl.read_parquet(wh.clean("events", early))["user_id"].head(3).to_list()
    put(s.landing, "events", early, "late.csv",
        csv(*(f"{u},zz-late,view,{early}T12:00:0{n}Z,,late-{n}" for n, u in enumerate(users))))  # fmt: skip
    logged: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = logged.append  # type: ignore[method-assign]
    task_log = logging.getLogger("prefect.task_runs")  # Prefect's loggers do not propagate
    task_log.addHandler(handler)
    try:
        summary = nightly(run_date=end, options=RunOptions(config_path=str(cfg)))  # no --force
    finally:
        task_log.removeHandler(handler)
    name = f"events/date={early.isoformat()}/late.csv (new)"
    assert f"late landing files picked up: {name}" in [r.getMessage() for r in logged]
    assert summary.steps.ingest.late == [name]
    assert early.isoformat() in summary.steps.clean.dates_cleaned
    m = manifest(s, early)
    assert m["events"]["ingested"] == before + 3 and m["late_files"] == [name]
    report = Path(summary.report).read_text(encoding="utf-8")
    assert "Late landing files" in report and name in report
    assert is_complete(s, end)

    monkeypatch.setenv("RECSYS_FAULT", "score:1")  # a forced re-run dies after clean and train
    with pytest.raises(InjectedFault):
        nightly(run_date=end, options=RunOptions(config_path=str(cfg), force=True))
    assert not wh.run_marker(end).exists()
    assert wh.recommendations(end).exists()  # last night's file is still there, but ...
    assert not is_complete(s, end)  # ... the date does not count as complete
    assert backfill_plan(s, end, end) == ([end], [])
