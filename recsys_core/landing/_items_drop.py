"""Catalog drops of the synthetic landing zone.

Day 0 carries the full catalog of items introduced that day (CSV, with quoted multi-line
descriptions). Every later day carries the items introduced that day (cold start) and about 3% of
the known items with changed text (a new sentence, a new tag), as JSON lines on odd days, Parquet
when ``d % 5 == 4`` and CSV otherwise. Day 1 also carries two bits of dirt: an item with an empty
title (quarantined) and the first item's row sent twice (one counts as a duplicate).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys_core.landing._simulate import Catalog
from recsys_core.landing._vocab import item_text, updated_text
from recsys_core.landing._write import write_frame

__all__ = ["write_item_drops"]

_COLUMNS = ("item_id", "title", "description", "categories", "tags", "updated_at")


def write_item_drops(
    rng: np.random.Generator,
    catalog: Catalog,
    root: Path,
    start: dt.date,
    days: int,
    files: Counter[str],
) -> dict[str, Any]:
    """Write ``root/date=D/items.<ext>`` for every day with a drop; count files into ``files``."""
    texts = [item_text(rng, int(c), i + 1) for i, c in enumerate(catalog.cluster)]
    n_items = len(catalog.item_ids)
    rows_written = changed_total = 0
    dirt = {"missing_title": 0, "duplicates": 0}
    ref = int(np.flatnonzero(catalog.intro_day == 0)[0])  # the item re-sent twice on day 1
    for d in range(days):
        day = start + dt.timedelta(days=d)
        day_ts = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())
        new = np.flatnonzero(catalog.intro_day == d)
        changed = np.array([], dtype=np.int64)
        if d > 0:
            changed = np.flatnonzero((rng.random(n_items) < 0.03) & (catalog.intro_day < d))
            for i in changed:
                texts[i] = updated_text(rng, int(catalog.cluster[i]), texts[i])
            changed_total += len(changed)
        idx = [i for i in np.concatenate([new, changed]).tolist() if d != 1 or i != ref]
        rows = [
            _row(catalog.item_ids[i], texts[i], day_ts + int(rng.integers(0, 86400))) for i in idx
        ]
        if d == 1:
            first = _row(catalog.item_ids[ref], texts[ref], day_ts + 60)
            rows += [first, first, {**first, "item_id": f"{n_items + 1:05d}", "title": ""}]
            dirt = {"missing_title": 1, "duplicates": 1}
        if not rows:
            continue
        df = pl.DataFrame(rows, schema={c: pl.String for c in _COLUMNS})
        fmt = "csv" if d == 0 else "jsonl" if d % 2 == 1 else "parquet" if d % 5 == 4 else "csv"
        write_frame(df, root / f"date={day.isoformat()}" / f"items.{fmt}", fmt)
        files[fmt] += 1
        rows_written += len(rows)
    return {
        "catalog_items": n_items,
        "cold_start_items": int((catalog.intro_day > 0).sum()),
        "item_rows": rows_written,
        "changed_item_rows": changed_total,
        "items_dirt": dirt,
    }


def _row(item_id: str, text: dict[str, str], ts: int) -> dict[str, str]:
    stamp = dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"item_id": item_id, **text, "updated_at": stamp}
