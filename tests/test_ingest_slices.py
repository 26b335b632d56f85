"""Ingest cut into independent slices (what the flow fans out per date) writes what one call writes."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest

from recsys_core.ingest import commit_ingest, ingest, ingest_partitions, plan_ingest
from recsys_core.io import Warehouse

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
