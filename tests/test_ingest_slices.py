"""Ingest cut into independent slices (what the flow fans out per date) writes what one call writes."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import polars as pl
import pytest

from recsys_core.ingest import (
    clean_days,
    commit_ingest,
    ingest,
    ingest_partitions,
    landing_record,
    plan_ingest,
)
from recsys_core.ingest._ingest import RECORD_KEY, landing_record_path
from recsys_core.ingest._load import write_raw_partition
from recsys_core.io import Warehouse, atomic_write_json, read_parquet_notes

HEADER = "user_id,item_id,event_type,timestamp,value,event_id\n"
DAYS = [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(7)]


def _landing(root: Path) -> Path:
    for n, day in enumerate(DAYS):
        part = root / "events" / f"date={day.isoformat()}"
        part.mkdir(parents=True)
        rows = "".join(
            f"u{j},i{(j * 7 + n) % 5},view,{day.isoformat()}T10:0{j}:00Z,,e{n}-{j}\n"
            for j in range(3)
        )
        (part / "a.csv").write_text(HEADER + rows)
        if n % 3 == 0:
            items = root / "items" / f"date={day.isoformat()}"
            items.mkdir(parents=True)
            (items / "i.csv").write_text(f"item_id,title\ni{n % 5},Title {n}\n")
    return root


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the hash of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("n_slices", [1, 3, 20])
def test_slices_written_in_any_order_equal_one_ingest(tmp_path: Path, n_slices: int) -> None:
    landing = _landing(tmp_path / "landing")
    whole = ingest(landing, Warehouse(tmp_path / "whole"), DAYS[-1])

    wh = Warehouse(tmp_path / "sliced")
    plan = plan_ingest(landing, wh, DAYS[-1])
    slices = plan.slices(n_slices)
    assert len(slices) == min(n_slices, len(plan.todo)) and slices[0]
    assert [p for s in slices for p in s] == list(plan.todo)  # contiguous, disjoint, complete
    # slices run anywhere, in any order (a worker per slice); the commit puts them in plan order
    written = [ingest_partitions(plan, wh, s) for s in reversed(slices)]
    sliced = commit_ingest(plan, wh, written)

    assert sliced == whole
    assert _tree(tmp_path / "sliced") == _tree(tmp_path / "whole")
    assert ingest(landing, wh, DAYS[-1]).dates == {"events": [], "items": []}  # index written


def test_a_commit_without_every_slice_refuses_and_writes_no_index(tmp_path: Path) -> None:
    landing = _landing(tmp_path / "landing")
    wh = Warehouse(tmp_path / "wh")
    plan = plan_ingest(landing, wh, DAYS[-1])
    first, *rest = plan.slices(3)
    with pytest.raises(ValueError, match="do not cover the plan"):
        commit_ingest(plan, wh, [ingest_partitions(plan, wh, first)])
    assert not list((tmp_path / "wh").rglob("_landing_index.json"))
    # the next ingest rebuilds what the lost slices would have written
    again = ingest(landing, wh, DAYS[-1])
    lost = [p for s in rest for p in s]
    assert [("events", d) for d in map(dt.date.fromisoformat, again.dates["events"])] == [
        p for p in lost if p[0] == "events"
    ]


def test_the_landing_record_rides_in_the_raw_partition_and_old_side_records_still_count(
    tmp_path: Path,
) -> None:
    """Ingest keeps each partition's landing record in its Parquet footer (no second object).
    A warehouse written before (record beside it in ``_landing_files.json``, no footer record)
    is read as it was: nothing re-ingested, the same manifests, and its late history carries
    on when a late file rebuilds the partition (whose side file is then deleted)."""
    landing = _landing(tmp_path / "landing")
    new, old = Warehouse(tmp_path / "new"), Warehouse(tmp_path / "old")
    ingest(landing, new, DAYS[-1])
    ingest(landing, old, DAYS[-1])
    assert not list(new.root.rglob("_landing_files.json"))
    record = landing_record(new, "events", DAYS[0])
    assert record is not None and [f["name"] for f in record["files"]] == [
        f"events/date={DAYS[0].isoformat()}/a.csv"
    ]
    assert json.loads(read_parquet_notes(new.raw("events", DAYS[0]))[RECORD_KEY]) == record

    # the old layout: partitions without a footer record, each record in a file beside it
    earlier = {"name": f"events/date={DAYS[0].isoformat()}/gone.csv", "change": "removed"}
    for kind, day in [("events", d) for d in DAYS] + [("items", d) for d in DAYS[::3]]:
        rec = landing_record(old, kind, day)
        if (kind, day) == ("events", DAYS[0]):
            rec["late"] = [earlier]
        write_raw_partition(pl.read_parquet(old.raw(kind, day)), old.raw(kind, day))
        atomic_write_json(landing_record_path(old, kind, day), rec)
        assert RECORD_KEY not in read_parquet_notes(old.raw(kind, day))
    (old.root / "raw" / "events" / "_landing_index.json").unlink()  # make ingest ask the records
    raw = old.raw("events", DAYS[1]).stat().st_mtime_ns
    assert ingest(landing, old, DAYS[-1]).dates == {"events": [], "items": []}
    assert old.raw("events", DAYS[1]).stat().st_mtime_ns == raw
    cleaned_old, cleaned_new = clean_days(old, DAYS), clean_days(new, DAYS)
    assert cleaned_old[1:] == cleaned_new[1:]  # the manifests say what the side records say
    assert cleaned_old[0]["late_files"] == [f"{earlier['name']} (removed)"]
    assert cleaned_old[0]["landing_files"] == cleaned_new[0]["landing_files"]

    # a late file rebuilds the partition: its record (now in the footer) keeps the old history
    (landing / "events" / f"date={DAYS[0].isoformat()}" / "late.csv").write_text(
        HEADER + f"u9,i1,view,{DAYS[0].isoformat()}T11:00:00Z,,late-1\n"
    )
    assert ingest(landing, old, DAYS[-1]).dates["events"] == [DAYS[0].isoformat()]
    late = json.loads(read_parquet_notes(old.raw("events", DAYS[0]))[RECORD_KEY])["late"]
    assert late == [
        earlier,
        {"name": f"events/date={DAYS[0].isoformat()}/late.csv", "change": "new"},
    ]
    assert landing_record(old, "events", DAYS[0])["late"] == late  # the footer wins over the file
    # ... and the side file of a rewritten partition is gone; the others stay until theirs are
    assert not landing_record_path(old, "events", DAYS[0]).exists()
    assert landing_record_path(old, "events", DAYS[1]).exists()


def test_ingest_reads_in_passes_bounded_by_batch_mib(tmp_path: Path, monkeypatch) -> None:
    """Ingest reads the pending dates in date-ordered passes of at most ``batch_mib`` of landing
    files (peak memory follows a pass, not the backlog; one bigger date is a pass of its own), and
    the raw tree and result do not depend on the pass size."""
    import recsys_core.ingest._ingest as ingest_module

    landing = _landing(tmp_path / "landing")
    day_bytes = {
        (kind, day): sum(f.stat().st_size for f in (landing / kind / f"date={day}").iterdir())
        for kind in ("events", "items")
        for day in DAYS
        if (landing / kind / f"date={day}").is_dir()
    }
    real_read = ingest_module.read_partitions
    passes: list[tuple[str, list[dt.date]]] = []

    def spy(root, kind, days):
        passes.append((kind, list(days)))
        return real_read(root, kind, days)

    monkeypatch.setattr(ingest_module, "read_partitions", spy)
    whole = ingest(landing, Warehouse(tmp_path / "one-pass"), DAYS[-1])
    assert [len(days) for _, days in passes] == [7, 3]  # events, items: everything at once

    events_day = max(day_bytes[("events", d)] for d in DAYS)
    cap = 2.5 * events_day / 2**20  # two event dates fit in a pass, three do not
    passes.clear()
    small = ingest(landing, Warehouse(tmp_path / "passes"), DAYS[-1], batch_mib=cap)
    event_passes = [days for kind, days in passes if kind == "events"]
    assert [len(days) for days in event_passes] == [2, 2, 2, 1]
    assert [d for days in event_passes for d in days] == DAYS  # in date order, each once
    for kind, days in passes:
        assert sum(day_bytes[(kind, d)] for d in days) <= cap * 2**20 or len(days) == 1

    passes.clear()
    tiny = ingest(landing, Warehouse(tmp_path / "tiny"), DAYS[-1], batch_mib=1e-6)
    assert all(len(days) == 1 for _, days in passes) and len(passes) == 7 + 3

    assert small == whole and tiny == whole
    assert _tree(tmp_path / "passes" / "raw") == _tree(tmp_path / "one-pass" / "raw")
    assert _tree(tmp_path / "tiny" / "raw") == _tree(tmp_path / "one-pass" / "raw")
