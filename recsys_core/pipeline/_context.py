"""What the modelling steps share: tonight's data window, loaded once per step."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from dataclasses import dataclass, fields, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl

from recsys_core import __version__
from recsys_core.config import Settings
from recsys_core.ingest import load_catalog, load_clean_events
from recsys_core.interactions import Interactions, distinct_count
from recsys_core.io import Warehouse

__all__ = ["DataWindow", "code_version", "jsonable", "load_window", "ranking_threads"]


@dataclass(frozen=True)
class DataWindow:
    """Clean events up to ``run_date`` (never after), the catalog as of it, and the item vocabulary."""

    run_date: dt.date
    events: pl.DataFrame
    catalog: pl.DataFrame
    item_ids: list[str]

    def interactions(self, events: pl.DataFrame, settings: Settings) -> Interactions:
        """Interactions over the full item vocabulary (catalog items with no events included)."""
        return Interactions.from_frame(
            events,
            item_ids=self.item_ids,
            event_weights=settings.train.event_weights,
            min_rating=settings.train.min_rating,
        )

    def describe(self) -> dict[str, object]:
        ts = self.events["timestamp"] if self.events.height else None
        return {
            "run_date": self.run_date.isoformat(),
            "events": self.events.height,
            "users": distinct_count(self.events["user_id"]),
            "items": len(self.item_ids),
            "first_event": str(ts.min()) if ts is not None else None,
            "last_event": str(ts.max()) if ts is not None else None,
        }


def ranking_threads(settings: Settings) -> int:
    """Blocks of users a step ranks at once when it is the only work of its task (the search,
    the gate, a single score shard): ``scoring.threads``, or every core. Rankings do not depend
    on it."""
    return settings.scoring.threads or (os.cpu_count() or 1)


def load_window(settings: Settings, run_date: dt.date) -> DataWindow:
    wh = Warehouse(settings.warehouse)
    events = load_clean_events(wh, until=run_date)
    if events.height == 0:
        raise ValueError(
            f"no clean events on or before {run_date} in {wh.root}; run ingest and clean first "
            f"(is the landing zone {settings.landing} empty?)"
        )
    events = events.sort(["timestamp", "user_id", "item_id", "event_type", "event_id"])
    catalog = load_catalog(wh, as_of=run_date)
    ids = set(events["item_id"].unique().to_list())
    if catalog.height:
        ids |= set(catalog["item_id"].to_list())
    return DataWindow(run_date=run_date, events=events, catalog=catalog, item_ids=sorted(ids))


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit when run from a checkout (``0.1.0+g1a2b3c4``)."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return f"{__version__}+g{sha}" if sha else __version__
    except (OSError, subprocess.SubprocessError):
        return __version__


def jsonable(obj: Any) -> Any:
    """A JSON-able view of a result object (per-user frames dropped)."""
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items() if not isinstance(v, pl.DataFrame)}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return jsonable(obj.to_dict())
    if hasattr(obj, "model_dump"):
        return jsonable(obj.model_dump(mode="json"))
    if is_dataclass(obj):
        return {
            f.name: jsonable(getattr(obj, f.name))
            for f in fields(obj)
            if not isinstance(getattr(obj, f.name), pl.DataFrame)
        }
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)
