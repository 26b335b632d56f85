"""Clean: raw partitions -> clean events/items, quarantine and a manifest whose counts reconcile.

For each date ``clean_days`` writes (atomically, manifest last so that it marks completion)

* ``clean/events/date=D`` in :data:`~recsys_core.schema.CLEAN_EVENTS_SCHEMA`, sorted by
  (timestamp, user_id, item_id, event_type, event_id). ``event_id`` is the source's, or
  ``<source_file>#<source_row>`` where the source gave none;
* ``clean/items/date=D`` in :data:`~recsys_core.schema.CLEAN_ITEMS_SCHEMA` (if D has an item drop);
* ``quarantine/date=D``: every invalid row, in :data:`QUARANTINE_SCHEMA` (only if there is one;
  a re-run with none removes an earlier file);
* ``manifests/date=D.json``: ``ingested == clean + duplicates + quarantined`` for events and items,
  reason counts, source files, the landing files read (name, size, mtime, hash: ``landing_files``)
  and those that arrived late (``late_files``), any unrecognised landing paths reported, and the
  clean config.

An ``event_id`` seen again is checked against the kept row with that id on the same date or on a
clean date at most ``event_id_horizon_days`` earlier: same content = duplicate, different content =
quarantined as ``conflicting_event_id`` (see :mod:`recsys_core.ingest._events`). Dates whose rows
may share an id with an earlier date start a pass of their own, so that the earlier date's clean
partition is final when they are checked.

Many dates are processed in one vectorised pass, in date-ordered passes of at most
``CleanConfig.batch_mib`` of raw Parquet so a long backlog does not have to fit in memory at once;
the outputs of a date do not depend on which other dates share the pass. Near duplicates across midnight are caught by chaining each date
after the previous one: in the same pass, or from the previous date's clean partition on disk —
so clean dates in increasing order. :func:`clean_days` alone does not revisit D + 1 after a
re-clean of D; :func:`clean_with_followers` does, for the later dates the change affects.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl

from recsys_core.config import CleanConfig
from recsys_core.ingest._errors import MissingPartitionError
from recsys_core.ingest._events import (
    hashed,
    mark_duplicates,
    resolve_event_ids,
    validate_events,
)
from recsys_core.ingest._ingest import IO_THREADS, date_batches, landing_record
from recsys_core.ingest._items import clean_items_frame, items_output, validate_items
from recsys_core.ingest._load import (
    read_clean_events_of,
    read_dated_parquet,
    record_raw_versions,
    write_partition,
)
from recsys_core.io import Warehouse, atomic_write_json, delete
from recsys_core.schema import (
    CLEAN_EVENTS_SCHEMA,
    EVENT_OPTIONAL,
    EVENT_REQUIRED,
    ITEM_OPTIONAL,
    ITEM_REQUIRED,
    SOURCE_FILE,
    SOURCE_ROW,
)

__all__ = ["QUARANTINE_SCHEMA", "clean", "clean_days", "clean_with_followers"]

_EVENT_COLS = EVENT_REQUIRED + EVENT_OPTIONAL
_ITEM_COLS = ITEM_REQUIRED + ITEM_OPTIONAL
_TEXT_COLS = tuple(dict.fromkeys(_EVENT_COLS + _ITEM_COLS))

#: Quarantined rows: the kind ("events"/"items"), the original strings, lineage and the reason.
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "kind": pl.String(),
    **{c: pl.String() for c in _TEXT_COLS},
    SOURCE_FILE: pl.String(),
    SOURCE_ROW: pl.Int64(),
    "date": pl.Date(),
    "reason_category": pl.String(),
    "reason": pl.String(),
}


def _raw_schema(cols: tuple[str, ...]) -> dict[str, pl.DataType]:
    return {**{c: pl.String() for c in cols}, SOURCE_FILE: pl.String(), SOURCE_ROW: pl.Int64()}


def clean(warehouse: Warehouse, day: dt.date, config: CleanConfig | None = None) -> dict[str, Any]:
    """Clean one date; returns its manifest (see :func:`clean_days`)."""
    return clean_days(warehouse, [day], config)[0]


def clean_days(
    warehouse: Warehouse,
    days: Iterable[dt.date],
    config: CleanConfig | None = None,
    *,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Clean every date in ``days``, in date order; returns their manifests in date order.

    The dates go through in passes of at most ``config.batch_mib`` of raw Parquet each (each pass
    chains on the clean partitions the previous one wrote). Raises
    :class:`MissingPartitionError` naming the raw path if a date has neither a raw events nor a raw
    items partition (run ``ingest`` first); that check covers every date before any is cleaned.
    ``extra`` is added to every manifest written (e.g. ``{"unrecognised_paths": [...]}``).
    """
    config = config or CleanConfig()
    days = sorted(set(days))
    raw = {k: warehouse.partition_stats(warehouse.root / "raw" / k) for k in ("events", "items")}
    ev_files, it_files = (
        {d: warehouse.raw(kind, d) for d in days if d in raw[kind]} for kind in ("events", "items")
    )
    for d in days:
        if d not in ev_files and d not in it_files:
            raise MissingPartitionError(
                f"{warehouse.raw('events', d)} does not exist (nor a raw items partition for "
                f"{d}); ingest the landing partition for {d} before cleaning it"
            )
    sizes = {d: sum(raw[k][d][0] for k in ("events", "items") if d in raw[k]) for d in days}
    breaks, shared = _shared_id_dates(warehouse, days, ev_files, config.event_id_horizon_days)
    manifests: list[dict[str, Any]] = []
    # on an object store: the raw versions each date is cleaned from (see pending_clean_dates)
    versions = {
        d: {k: raw[k][d].version for k in raw if d in raw[k] and raw[k][d].version} for d in days
    }
    for batch in date_batches(days, sizes, int(config.batch_mib * 2**20), breaks):
        manifests += _clean_pass(
            warehouse,
            batch,
            {d: ev_files[d] for d in batch if d in ev_files},
            {d: it_files[d] for d in batch if d in it_files},
            config,
            extra or {},
            shared,
        )
    record_raw_versions(warehouse, {d: v for d, v in versions.items() if v})
    return manifests


def clean_with_followers(
    warehouse: Warehouse,
    days: Iterable[dt.date],
    until: dt.date,
    config: CleanConfig | None = None,
    *,
    extra: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], list[dt.date]]:
    """:func:`clean_days`, then re-clean the already-clean later dates (``<= until``) whose
    result the re-cleaned dates can change, until nothing else changes.

    A date E after a re-cleaned date D is cleaned again when D's near-duplicate anchors (the last
    clean event of each user, item and type) changed and E is within the dedupe window's days
    after D, or when D's set of clean event ids changed, E is within ``event_id_horizon_days``
    after D and E's raw rows carry one of those ids. Returns ``(manifests of every date cleaned,
    in date order, the follow-up dates among them)``.
    """
    config = config or CleanConfig()
    queue = sorted(set(days))
    lookback = math.ceil(config.dedupe_window_seconds / 86400)
    reach = max(lookback, config.event_id_horizon_days)
    out: dict[dt.date, dict[str, Any]] = {}
    followers: set[dt.date] = set()
    while queue:
        later = [
            e for e in warehouse.clean_dates("events") if queue[0] < e <= until and e not in queue
        ]
        watched = [d for d in queue if later and d < later[-1]]
        before = {d: _clean_summary(warehouse, d) for d in watched}
        for m in clean_days(warehouse, queue, config, extra=extra):
            out[dt.date.fromisoformat(m["date"])] = m
        follow: set[dt.date] = set()
        for d in watched:
            old_anchors, old_ids = before[d]
            new_anchors, new_ids = _clean_summary(warehouse, d)
            near = [e for e in later if 0 < (e - d).days <= lookback]
            if near and not old_anchors.equals(new_anchors):
                follow.update(near)
            changed = old_ids ^ new_ids
            for e in (e for e in later if 0 < (e - d).days <= reach and e not in follow):
                if (e - d).days <= config.event_id_horizon_days and changed & _raw_ids(
                    warehouse, e
                ):
                    follow.add(e)
        followers |= follow
        queue = sorted(follow)
    return [out[d] for d in sorted(out)], sorted(followers)


def _clean_summary(warehouse: Warehouse, day: dt.date) -> tuple[pl.DataFrame, set[str]]:
    """What later dates depend on: the near-duplicate anchors of ``day``'s clean events and its
    source event ids."""
    path = warehouse.clean("events", day)
    df = read_dated_parquet({day: path} if path.is_file() else {}, CLEAN_EVENTS_SCHEMA)
    anchors = (
        df.group_by("user_id", "item_id", "event_type")
        .agg(pl.col("timestamp").max())
        .sort("user_id", "item_id", "event_type")
    )
    return anchors, set(df.filter(~_synthetic_id())["event_id"].to_list())


def _raw_ids(warehouse: Warehouse, day: dt.date) -> set[str]:
    path = warehouse.raw("events", day)
    if not path.is_file():
        return set()
    ids = read_dated_parquet({day: path}, {"event_id": pl.String()})
    return set(ids.select(_strip_ids(pl.col("event_id"))).to_series().drop_nulls().to_list())


def _strip_ids(col: pl.Expr) -> pl.Expr:
    s = col.str.strip_chars()
    return pl.when(s == "").then(None).otherwise(s)


def _synthetic_id() -> pl.Expr:
    """True where a clean ``event_id`` was made up from the row's lineage (no id in the source)."""
    return pl.col("event_id") == pl.concat_str(
        [pl.col(SOURCE_FILE), pl.lit("#"), pl.col(SOURCE_ROW).cast(pl.String)]
    )


def _clean_ids_before(
    warehouse: Warehouse,
    first: dt.date,
    last: dt.date,
    skip: set[dt.date],
    *,
    columns: Iterable[str] = (),
    ids: pl.Series | None = None,
    hashes: pl.Series | None = None,
) -> pl.DataFrame:
    """Clean events with a source event id (one of ``ids`` if given; one whose :func:`hashed` value
    is among ``hashes`` if given: a superset, to be checked by the caller) of the on-disk dates in
    ``[first, last)`` not in ``skip``: ``event_id``, lineage, ``columns`` and ``_date``. Only
    those columns are read (a month of clean events is most of the warehouse)."""
    days = [
        d for k in range((last - first).days) if (d := first + dt.timedelta(days=k)) not in skip
    ]
    wanted = ("event_id", SOURCE_FILE, SOURCE_ROW, *columns)
    schema = {c: t for c, t in CLEAN_EVENTS_SCHEMA.items() if c in wanted}
    df = read_clean_events_of(warehouse, days, schema, "_date")  # one listing
    if ids is not None:  # first: a hash probe is cheaper than the lineage check
        df = df.filter(pl.col("event_id").is_in(ids.implode()))
    if hashes is not None and df.height:
        df = df.filter(hashed("event_id").is_in(hashes.implode()))
    return df.filter(~_synthetic_id())


def _shared_id_dates(
    warehouse: Warehouse, days: list[dt.date], ev_files: dict[dt.date, Path], horizon: int
) -> tuple[set[dt.date], pl.Series]:
    """``(dates, ids)``: the dates of ``days`` holding an event id that an earlier date at most
    ``horizon`` days before also holds (raw ids of ``days``, clean ids of the other dates on
    disk), each of which starts a pass; and every id held by two dates or more. Only those ids
    can have a reference on an earlier date, so the passes look up no other (see
    :func:`_earlier_ids`): a pass does not re-read a month of clean ids to find none.

    Ids are compared first by their 64-bit hash (integers: a fraction of the cost of hashing
    and comparing millions of strings twice); only the rows whose hash is seen twice, a superset
    of the ids seen twice, are then compared as strings, so a collision costs time, never a
    wrong answer."""
    if horizon <= 0 or not ev_files:
        return set(), pl.Series("_eid", [], pl.String)
    raw = (
        read_dated_parquet(ev_files, {"event_id": pl.String()}, "_date")
        .select(_strip_ids(pl.col("event_id")).alias("_eid"), "_date")
        .filter(pl.col("_eid").is_not_null())
        .with_columns(hashed("_eid").alias("_h"))
    )
    first = min(days) - dt.timedelta(days=horizon)
    # an id on disk matters only if one of these dates holds it too
    disk = _clean_ids_before(
        warehouse, first, max(days), set(days), hashes=raw.get_column("_h")
    ).select(pl.col("event_id").alias("_eid"), "_date", hashed("event_id").alias("_h"))
    pairs = (
        pl.concat([raw, disk])
        .filter(pl.col("_h").is_duplicated())  # every id seen twice (and any hash collision)
        .filter(pl.col("_eid").is_duplicated())  # the few ids seen twice, then sorted
        .drop("_h")
        .unique()
    )
    shared = pairs.filter(pl.col("_eid").is_duplicated()).get_column("_eid").unique()
    ids = (
        pairs.sort("_eid", "_date")
        .with_columns(pl.col("_date").shift(1).over("_eid").alias("_prev"))
        .filter((pl.col("_date") - pl.col("_prev")).dt.total_days() <= horizon)
    )
    return set(ids["_date"].to_list()) & set(days), shared


def _clean_pass(
    warehouse: Warehouse,
    days: list[dt.date],
    ev_files: dict[dt.date, Path],
    it_files: dict[dt.date, Path],
    config: CleanConfig,
    extra: dict[str, Any],
    shared: pl.Series,
) -> list[dict[str, Any]]:
    """One vectorised pass over ``days`` (sorted; their raw files given), writing every output.
    ``shared``: the event ids held by two dates or more (:func:`_shared_id_dates`)."""
    order = ["_date", SOURCE_FILE, SOURCE_ROW]
    raw_ev = _in_order(read_dated_parquet(ev_files, _raw_schema(_EVENT_COLS), "_date"), order)
    raw_it = _in_order(read_dated_parquet(it_files, _raw_schema(_ITEM_COLS), "_date"), order)

    good_ev, bad_ev = validate_events(raw_ev, config)
    good_ev, conflicts = resolve_event_ids(
        good_ev,
        _earlier_ids(
            warehouse,
            days[0],
            config.event_id_horizon_days,
            good_ev.get_column("_eid").filter(good_ev.get_column("_eid").is_in(shared.implode())),
        ),
        config.event_id_horizon_days,
    )
    good_ev = mark_duplicates(
        good_ev,
        _anchors(warehouse, days, config.dedupe_window_seconds),
        config.dedupe_window_seconds,
    )
    good_it, bad_it = validate_items(raw_it, config)
    good_it = clean_items_frame(good_it)
    bad = pl.concat(
        [
            _quarantine_rows(bad_ev, "events"),
            _quarantine_rows(conflicts, "events"),
            _quarantine_rows(bad_it, "items"),
        ]
    ).sort("date", "kind", SOURCE_FILE, SOURCE_ROW)
    clean_ev = _events_output(good_ev)
    clean_it = items_output(good_it)

    ev_by_day = _split(clean_ev, "date")
    it_by_day = _split(clean_it, "date")
    q_by_day = _split(bad, "date")
    stats = _stats(raw_ev, raw_it, good_ev, good_it, bad)

    no_events, no_items = clean_ev.clear(), clean_it.clear()

    def outputs(d: dt.date) -> list[Callable[[], Any]]:
        out = [partial(write_partition, ev_by_day.get(d, no_events), warehouse.clean("events", d))]
        if d in it_files:
            out.append(
                partial(write_partition, it_by_day.get(d, no_items), warehouse.clean("items", d))
            )
        if d in q_by_day:
            out.append(partial(write_partition, q_by_day[d], warehouse.quarantine(d)))
        else:  # nothing quarantined: no file (and none left from an earlier run)
            out.append(partial(delete, warehouse.quarantine(d)))
        return out

    def publish(d: dt.date, written: list[Future[Any]]) -> dict[str, Any]:
        for job in written:
            job.result()  # the first error, if any, and no manifest for this date
        manifest = _manifest(d, stats, config, _landing(warehouse, d), extra)
        atomic_write_json(warehouse.manifest(d), manifest)  # last: the date is complete
        return manifest

    # every output of every date at once (overlapping the fsync waits, or the round trips to an
    # object store: one date's three partitions are one round, not three), then each date's
    # manifest once its own outputs are written. The pool runs jobs in order, so a manifest job
    # only waits on jobs already started: no deadlock.
    with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:
        written = {d: [pool.submit(job) for job in outputs(d)] for d in days}
        manifests = [pool.submit(publish, d, written[d]) for d in days]
        return [m.result() for m in manifests]


def _in_order(df: pl.DataFrame, order: list[str]) -> pl.DataFrame:
    """``df`` sorted by ``order`` (unique keys); ingest writes raw partitions in source order
    and they are read in date order, so this is usually a cheap check that finds it sorted."""
    later = pl.lit(False)
    for c in reversed(order):  # lexicographic: (a, b, c) > previous row's
        prev = pl.col(c).shift(1)
        later = (pl.col(c) > prev) | ((pl.col(c) == prev) & later)
    if df.height < 2 or df.select(later.slice(1).all()).item():
        return df
    return df.sort(order)


def _split(df: pl.DataFrame, col: str) -> dict[dt.date, pl.DataFrame]:
    return {
        key[0]: part
        for key, part in df.partition_by(col, as_dict=True, maintain_order=True).items()
    }


def _events_output(good: pl.DataFrame) -> pl.DataFrame:
    event_id = pl.coalesce(
        pl.col("_eid"),
        pl.concat_str([pl.col(SOURCE_FILE), pl.lit("#"), pl.col(SOURCE_ROW).cast(pl.String)]),
    )
    return (
        good.filter(pl.col("_status") == "clean")
        .select(
            event_id.alias("event_id"),
            pl.col("_uid").alias("user_id"),
            pl.col("_iid").alias("item_id"),
            pl.col("_et").alias("event_type"),
            pl.from_epoch(pl.col("_ts"), time_unit="us")
            .dt.replace_time_zone("UTC")
            .alias("timestamp"),
            pl.col("_val").alias("value"),
            pl.col("_date").alias("date"),
            pl.col(SOURCE_FILE),
            pl.col(SOURCE_ROW),
        )
        .cast(CLEAN_EVENTS_SCHEMA)  # type: ignore[arg-type]
        .sort(["timestamp", "user_id", "item_id", "event_type", "event_id"])
    )


def _quarantine_rows(bad: pl.DataFrame, kind: str) -> pl.DataFrame:
    """Quarantine rows; an id the reader marked as a JSON object/array/boolean is shown as its
    JSON text."""
    return bad.select(
        [
            pl.lit(kind).alias("kind"),
            *[
                (
                    pl.col(c).str.replace(r"^\x00[a-z]+\x00", "")
                    if c in ("user_id", "item_id")
                    else pl.col(c)
                )
                if c in bad.columns
                else pl.lit(None, pl.String).alias(c)
                for c in _TEXT_COLS
            ],
            pl.col(SOURCE_FILE),
            pl.col(SOURCE_ROW),
            pl.col("_date").alias("date"),
            pl.col("reason_category"),
            pl.col("reason"),
        ]
    ).cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]


def _earlier_ids(
    warehouse: Warehouse, first: dt.date, horizon: int, ids: pl.Series
) -> pl.DataFrame | None:
    """Reference rows for :func:`resolve_event_ids`: clean events with a source event id among
    ``ids`` (the pass's ids that another date holds too) of the on-disk dates in
    ``[first - horizon, first)``. The ids are read first; the other columns only when one of
    them is seen again; nothing is read without such ids."""
    if horizon <= 0:
        return None
    ids = ids.drop_nulls().unique()
    start = first - dt.timedelta(days=horizon)
    if not ids.len() or not _clean_ids_before(warehouse, start, first, set(), ids=ids).height:
        return None
    prev = _clean_ids_before(warehouse, start, first, set(), columns=CLEAN_EVENTS_SCHEMA, ids=ids)
    return prev.select(
        pl.col("event_id").alias("_eid"),
        pl.col("_date").alias("_f_date"),
        pl.col(SOURCE_FILE).alias("_f_file"),
        pl.col(SOURCE_ROW).alias("_f_row"),
        pl.col("user_id").alias("_f_uid"),
        pl.col("item_id").alias("_f_iid"),
        pl.col("event_type").alias("_f_et"),
        pl.col("timestamp").dt.epoch("us").alias("_f_ts"),
        pl.col("value").alias("_f_val"),
    )


def _landing(warehouse: Warehouse, day: dt.date) -> dict[str, Any]:
    """The landing files ingest recorded for ``day`` (per kind) and the late ones among them."""
    files: dict[str, list[Any]] = {}
    late: list[str] = []
    for kind in ("events", "items"):
        record = landing_record(warehouse, kind, day)
        if record is not None:
            files[kind] = record.get("files", [])
            late += [f"{e['name']} ({e['change']})" for e in record.get("late", [])]
    return {"landing_files": files, "late_files": late}


def _anchors(warehouse: Warehouse, days: list[dt.date], window_seconds: int) -> pl.DataFrame | None:
    """Last clean event of each (user, item, type) on the on-disk dates that precede a batch date
    by at most the dedupe window and are not themselves in the batch."""
    if window_seconds <= 0:
        return None
    lookback = math.ceil(window_seconds / 86400)
    batch = set(days)
    before = {d - dt.timedelta(days=k) for d in days for k in range(1, lookback + 1)} - batch
    listed = warehouse.partition_stats(warehouse.root / "clean" / "events")  # one listing
    if not before & set(listed):
        return None
    prev = read_clean_events_of(warehouse, before, CLEAN_EVENTS_SCHEMA, "_d", listed).drop("_d")
    return (
        prev.group_by("date", "user_id", "item_id", "event_type")
        .agg(pl.col("timestamp").max().dt.epoch("us").alias("_ts"))
        .select(
            pl.col("user_id").alias("_uid"),
            pl.col("item_id").alias("_iid"),
            pl.col("event_type").alias("_et"),
            "_ts",
        )
    )


def _count(df: pl.DataFrame, *by: str) -> dict[tuple[Any, ...], int]:
    if df.height == 0:
        return {}
    return {tuple(r[:-1]): r[-1] for r in df.group_by(*by).len().iter_rows()}


def _nested(counts: dict[tuple[Any, ...], int]) -> dict[Any, dict[Any, int]]:
    out: dict[Any, dict[Any, int]] = {}
    for (outer, inner), n in counts.items():
        out.setdefault(outer, {})[inner] = n
    return out


def _stats(
    raw_ev: pl.DataFrame,
    raw_it: pl.DataFrame,
    good_ev: pl.DataFrame,
    good_it: pl.DataFrame,
    bad: pl.DataFrame,
) -> dict[str, Any]:
    files = pl.concat([raw_ev.select("_date", SOURCE_FILE), raw_it.select("_date", SOURCE_FILE)])
    return {
        "raw_events": _count(raw_ev, "_date"),
        "raw_items": _count(raw_it, "_date"),
        "events": _count(good_ev, "_date", "_status"),
        "items": _count(good_it, "_date", "_status"),
        "quarantined": _count(bad, "date", "kind"),
        "reasons": _nested(_count(bad, "date", "reason_category")),
        "files": {
            d: sorted(set(f))
            for d, f in files.group_by("_date").agg(pl.col(SOURCE_FILE).unique()).iter_rows()
        },
    }


def _manifest(
    day: dt.date,
    stats: dict[str, Any],
    config: CleanConfig,
    landing: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    ev, it, q = stats["events"], stats["items"], stats["quarantined"]
    exact, near = ev.get((day, "exact"), 0), ev.get((day, "near"), 0)
    blocks = {
        "events": {
            "ingested": stats["raw_events"].get((day,), 0),
            "clean": ev.get((day, "clean"), 0),
            "duplicates": exact + near,
            "quarantined": q.get((day, "events"), 0),
        },
        "items": {
            "ingested": stats["raw_items"].get((day,), 0),
            "clean": it.get((day, "clean"), 0),
            "duplicates": it.get((day, "duplicate"), 0),
            "quarantined": q.get((day, "items"), 0),
        },
    }
    for kind, b in blocks.items():
        if b["ingested"] != b["clean"] + b["duplicates"] + b["quarantined"]:
            raise RuntimeError(
                f"clean {day}: {kind} counts do not reconcile: ingested {b['ingested']} != clean "
                f"{b['clean']} + duplicates {b['duplicates']} + quarantined {b['quarantined']}"
            )
    reasons = stats["reasons"].get(day, {})
    return {
        "date": day.isoformat(),
        **blocks,
        "duplicate_kinds": {"events_exact": exact, "events_near": near},
        "reasons": dict(sorted(reasons.items())),
        "source_files": stats["files"].get(day, []),
        **landing,
        **extra,
        "clean_config": config.model_dump(mode="json", exclude={"batch_mib"}),
    }
