"""Ingest + clean pinned on a small synthetic landing: what the outputs hold must not change.

The digests below were taken with the code of 2026-12-02 (before the speed work of issue 17.1):
any change to a clean or quarantine row, a column type, a manifest figure or a reason message
changes them. Each output is digested as text (the frame's schema and CSV; the manifest's JSON
without the landing files' modification times, which differ from one checkout to the next), so
a new Parquet writer version does not break the pin; byte identity between two runs of the same
code is tested in test_ingest.py.

The landing covers CSV, JSON lines and Parquet days, the generator's dirt (exact and near
duplicates, across midnight too, malformed rows), event ids repeated on one date (same and
different content), an id reused on a later date (a conflict), a catch-up run chaining on the
clean partitions on disk, and a late file re-ingested with its followers re-cleaned.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import polars as pl
import pytest

import recsys_core.ingest._clean as clean_module
import recsys_core.ingest._events as events_module
from recsys_core.config import CleanConfig
from recsys_core.ingest import clean_days, clean_with_followers, ingest
from recsys_core.io import Warehouse
from recsys_core.landing import generate_synthetic

END = dt.date(2026, 1, 8)
MID = dt.date(2026, 1, 5)
HEADER = "event_id,user_id,item_id,event_type,timestamp,value\n"

#: Digest of every clean, quarantine and manifest output, per phase (see module doc).
EXPECTED = {
    "first": "483b02caac2b27ee7378320fdb2b19aa325942b72db6df6e74d5d94679e914b6",
    "catch_up": "8c6671eca4fafebe9f881639a8339ac6cee5bd6e8195583b10c8108151a486a1",
    "late": "c6d9e95c5bf33ec2f7d662a542f5eea96425619ba2cc1598656040f0bae75555",
}


def _put(landing: Path, day: dt.date, name: str, rows: list[str]) -> None:
    path = landing / "events" / f"date={day.isoformat()}" / name
    path.write_text(HEADER + "".join(r + "\n" for r in rows), encoding="utf-8")


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or rel.startswith("raw/"):
            continue
        h.update(rel.encode() + b"\n")
        if p.suffix == ".parquet":
            df = pl.read_parquet(p)
            h.update(repr(df.schema).encode() + df.write_csv().encode())
        else:
            m = json.loads(p.read_text())
            for files in m.get("landing_files", {}).values():
                for f in files:
                    f.pop("mtime_ns")
            h.update(json.dumps(m, sort_keys=True).encode())
    return h.hexdigest()


def test_outputs_are_pinned(tmp_path: Path) -> None:
    assert _run_phases(tmp_path) == EXPECTED


def test_outputs_do_not_depend_on_the_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hashes only narrow the searches for repeated ids, duplicate contents and near-duplicate
    keys; with every value hashing alike (each search then checks every row as strings, and
    near duplicates are grouped by the key itself) the outputs are the same."""

    def collide(*cols: str) -> pl.Expr:
        return pl.lit(7, pl.UInt64)

    monkeypatch.setattr(events_module, "hashed", collide)
    monkeypatch.setattr(clean_module, "hashed", collide)
    assert _run_phases(tmp_path) == EXPECTED


def _run_phases(tmp_path: Path) -> dict[str, str]:
    landing = tmp_path / "landing"
    generate_synthetic(landing, users=300, items=60, days=8, seed=7, end_date=END)
    _put(
        landing,
        MID,
        "ids.csv",
        [
            "x1,u1,00001,view,2026-01-05T10:00:00Z,",
            "x1,u1,00001,view,2026-01-05T10:00:00Z,",  # same id, same content: duplicate
            "x1,u1,00001,view,2026-01-05T11:00:00Z,",  # same id, other content: conflict
            "e0000498,u9,00002,click,2026-01-05T12:00:00Z,",  # an id of 2026-01-01: conflict
        ],
    )
    wh = Warehouse(tmp_path / "wh")
    config = CleanConfig(batch_mib=0.05)  # several passes
    digests = {}
    manifests = clean_days(wh, ingest(landing, wh, MID).all_dates, config)
    assert manifests[-1]["reasons"]["conflicting_event_id"] == 2
    assert manifests[-1]["duplicate_kinds"]["events_exact"] >= 1
    digests["first"] = _digest(wh.root)
    result = ingest(landing, wh, END)
    clean_days(wh, result.all_dates, config)
    digests["catch_up"] = _digest(wh.root)
    _put(landing, dt.date(2026, 1, 3), "late.csv", ["x2,u00194,00014,view,2026-01-03T23:59:58Z,"])
    result = ingest(landing, wh, END)
    assert result.late == ("events/date=2026-01-03/late.csv (new)",)
    cleaned, followers = clean_with_followers(wh, result.all_dates, END, config)
    assert [m["date"] for m in cleaned][0] == "2026-01-03"
    digests["late"] = _digest(wh.root)
    return digests
