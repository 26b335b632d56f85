"""Ingest and clean on tiny hand-written landing zones with known answers."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from recsys_core.config import CleanConfig
from recsys_core.ingest import (
    CATALOG_COLUMNS,
    QUARANTINE_SCHEMA,
    LandingReadError,
    LandingSchemaError,
    LandingWarning,
    MissingPartitionError,
    clean,
    clean_days,
    ingest,
    landing_dates,
    load_catalog,
    load_clean_events,
    pending_clean_dates,
    read_landing_partition,
)
from recsys_core.ingest._ingest import date_batches as _batches
from recsys_core.ingest._parse import add_timestamp_us
from recsys_core.io import Warehouse
from recsys_core.schema import CLEAN_EVENTS_SCHEMA, CLEAN_ITEMS_SCHEMA

D1, D2, D3 = dt.date(2026, 1, 4), dt.date(2026, 1, 5), dt.date(2026, 1, 6)
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


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    return tmp_path / "landing"


@pytest.fixture
def wh(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "wh")


def run(landing: Path, wh: Warehouse, day: dt.date, config: CleanConfig | None = None) -> dict:
    result = ingest(landing, wh, day)
    return clean_days(wh, result.all_dates, config)[-1]


# ---- reading ---------------------------------------------------------------------------------


def test_csv_jsonl_parquet_read_as_exact_strings_with_lineage(landing: Path) -> None:
    put(landing, "events", D1, "a.csv", csv('007,0042,view,2026-01-04T10:00:00Z,,"e,1"'))
    put(
        landing,
        "events",
        D1,
        "b.jsonl",
        '{"user_id": 7, "item_id": "i", "event_type": "rating", "timestamp": 1767520800, '
        '"value": 5.0}\n\n{"user_id": "u", "item_id": "i", "event_type": "view", '
        '"timestamp": "2026-01-04T11:00:00Z", "value": null}\n',
    )
    pl.DataFrame(
        {
            "user_id": [8],
            "item_id": ["x"],
            "event_type": ["click"],
            "timestamp": [dt.datetime(2026, 1, 4, 12, 30, tzinfo=dt.UTC)],
            "value": [4.5],
        }
    ).write_parquet(landing / "events" / "date=2026-01-04" / "c.parquet")
    put(landing, "events", D1, "_SUCCESS", "")
    put(landing, "events", D1, ".tmp-partial.csv", "garbage")
    df = read_landing_partition(landing, "events", D1)
    assert df.columns == [
        "user_id",
        "item_id",
        "event_type",
        "timestamp",
        "value",
        "event_id",
        "_source_file",
        "_source_row",
    ]
    assert all(t == pl.String for t in df.dtypes[:-1]) and df.dtypes[-1] == pl.Int64
    rows = df.select("user_id", "item_id", "timestamp", "value", "_source_file", "_source_row")
    assert rows.rows() == [
        ("007", "0042", "2026-01-04T10:00:00Z", None, "events/date=2026-01-04/a.csv", 1),
        ("7", "i", "1767520800", "5.0", "events/date=2026-01-04/b.jsonl", 1),
        ("u", "i", "2026-01-04T11:00:00Z", None, "events/date=2026-01-04/b.jsonl", 3),
        ("8", "x", "2026-01-04T12:30:00Z", "4.5", "events/date=2026-01-04/c.parquet", 1),
    ]
    assert df["event_id"][0] == "e,1"


def test_csv_row_numbers_count_records_not_lines(landing: Path) -> None:
    put(
        landing,
        "items",
        D1,
        "i.csv",
        'item_id,title,description\n001,Tent,"two\nlines"\n002,Lamp,x\n',
    )
    df = read_landing_partition(landing, "items", D1)
    assert df.select("item_id", "description", "_source_row").rows() == [
        ("001", "two\nlines", 1),
        ("002", "x", 2),
    ]
    assert df["categories"].null_count() == 2  # missing optional columns are null


def test_missing_column_error_names_file_column_found_and_expected(landing: Path) -> None:
    put(landing, "events", D1, "bad.csv", "user_id,item_id,event_type,ts\nu,i,view,1\n")
    with pytest.raises(LandingSchemaError) as err:
        read_landing_partition(landing, "events", D1)
    msg = str(err.value)
    assert "events/date=2026-01-04/bad.csv" in msg
    assert "'timestamp'" in msg
    assert "found columns ['user_id', 'item_id', 'event_type', 'ts']" in msg
    assert "expected ['user_id', 'item_id', 'event_type', 'timestamp']" in msg


def test_unreadable_files_raise_read_errors_naming_them(landing: Path) -> None:
    put(landing, "events", D1, "x.xlsx", "whatever")
    with pytest.raises(LandingReadError, match=r"x\.xlsx: unknown file extension '\.xlsx'"):
        read_landing_partition(landing, "events", D1)
    put(landing, "events", D2, "e.jsonl", '{"user_id": "u"}\n{"user_id": \n')
    with pytest.raises(LandingReadError, match=r"e\.jsonl line 2: invalid JSON"):
        read_landing_partition(landing, "events", D2)
    put(landing, "events", D3, "p.parquet", "not parquet")
    with pytest.raises(LandingReadError, match=r"p\.parquet: cannot read as Parquet"):
        read_landing_partition(landing, "events", D3)


def test_extra_columns_are_dropped_with_a_warning(landing: Path) -> None:
    put(
        landing,
        "events",
        D1,
        "a.csv",
        "User_ID ,item_id,event_type,timestamp,colour\nu,i,view,1,red\n",
    )
    with pytest.warns(LandingWarning, match=r"a\.csv: dropped 1 extra column \['colour'\]"):
        df = read_landing_partition(landing, "events", D1)
    assert "colour" not in df.columns and df["user_id"].to_list() == ["u"]


def test_landing_dates_lists_only_partitions_with_data(landing: Path) -> None:
    put(landing, "events", D1, "a.csv", csv())
    put(landing, "events", D2, ".tmp-x.csv", "in flight")  # not a drop yet
    put(landing, "events", D3, "a.csv", csv())
    (landing / "events" / "date=2026-13-01").mkdir()
    (landing / "events" / "notes").mkdir()
    assert landing_dates(landing, "events") == [D1, D3]
    assert landing_dates(landing, "events", until=D2) == [D1]
    assert landing_dates(landing, "items") == []


# ---- ingest ----------------------------------------------------------------------------------


def test_ingest_writes_new_partitions_once_and_force_rewrites_run_date(
    landing: Path, wh: Warehouse
) -> None:
    put(landing, "events", D1, "a.csv", csv("u,i,view,2026-01-04T10:00:00Z,,e1"))
    put(landing, "events", D2, "a.csv", csv("u,i,view,2026-01-05T10:00:00Z,,e2"))
    put(landing, "items", D1, "i.csv", "item_id,title\ni,Tent\n")
    first = ingest(landing, wh, D2)
    assert first.dates == {"events": ["2026-01-04", "2026-01-05"], "items": ["2026-01-04"]}
    assert first.rows == {"events": 2, "items": 1} and first.files == 3
    assert first.all_dates == [D1, D2]
    again = ingest(landing, wh, D2)
    assert again.dates == {"events": [], "items": []}
    assert again.skipped == {"events": 2, "items": 1}
    put(landing, "events", D2, "b.csv", csv("v,i,view,2026-01-05T11:00:00Z,,e3"))
    forced = ingest(landing, wh, D2, force=True)
    assert forced.dates == {"events": ["2026-01-05"], "items": []}
    assert pl.read_parquet(wh.raw("events", D2))["user_id"].to_list() == ["u", "v"]


def test_missing_run_date_partition_names_the_path(landing: Path, wh: Warehouse) -> None:
    put(landing, "events", D1, "a.csv", csv("u,i,view,2026-01-04T10:00:00Z,,e1"))
    with pytest.raises(MissingPartitionError, match=r"events/date=2026-01-05 does not exist"):
        ingest(landing, wh, D2)
    assert not wh.raw("events", D1).exists()  # nothing written before the check
    assert isinstance(MissingPartitionError("x"), FileNotFoundError)
    result = ingest(landing, wh, D2, require_run_date=False)
    assert result.dates["events"] == ["2026-01-04"]


def test_future_partitions_are_never_read(landing: Path, wh: Warehouse) -> None:
    put(landing, "events", D1, "a.csv", csv("u,i,view,2026-01-04T10:00:00Z,,e1"))
    put(landing, "events", D2, "poison.xlsx", "would raise if read")
    put(landing, "events", D2, "poison.csv", "no,schema\n1,2\n")
    put(landing, "items", D3, "poison.jsonl", "{not json")
    result = ingest(landing, wh, D1)
    assert result.dates == {"events": ["2026-01-04"], "items": []}
    assert wh.raw_dates("events") == [D1] and wh.raw_dates("items") == []
    clean(wh, D1)
    assert load_clean_events(wh, until=D3)["date"].to_list() == [D1]


# ---- clean: validation -----------------------------------------------------------------------

BAD_ROWS = {
    "missing_user_id": (",i,view,2026-01-04T10:00:00Z,,b1", "user_id is missing"),
    "bad_user_id": (
        "u\x01x,i,view,2026-01-04T10:00:00Z,,b2",
        "user_id 'u?x' contains control characters",
    ),
    "missing_item_id": ("u, ,view,2026-01-04T10:00:00Z,,b3", "item_id is missing"),
    "unknown_event_type": (
        "u,i,like,2026-01-04T10:00:00Z,,b4",
        "event_type 'like' not in [view, click, add_to_cart, purchase, rating]",
    ),
    "missing_event_type": ("u,i,,2026-01-04T10:00:00Z,,b5", "event_type is missing"),
    "bad_timestamp": (
        "u,i,view,yesterday,,b6",
        "timestamp 'yesterday' is not ISO 8601 or Unix seconds",
    ),
    "missing_timestamp": ("u,i,view,,,b7", "timestamp is missing"),
    "timestamp_off_partition": (
        "u,i,view,2026-01-05T01:00Z,,b8",
        "timestamp '2026-01-05T01:00Z' (2026-01-05T01:00:00Z) is not on partition date 2026-01-04",
    ),
    "rating_out_of_range": (
        "u,i,rating,2026-01-04T10:00:00Z,7,b9",
        "rating value '7' is outside [0.0, 5.0]",
    ),
    "missing_rating_value": ("u,i,rating,2026-01-04T10:00:00Z,,b10", "rating has no value"),
    "bad_value": ("u,i,purchase,2026-01-04T10:00:00Z,abc,b11", "value 'abc' is not a number"),
}


def test_each_invalid_row_is_quarantined_with_its_reason(landing: Path, wh: Warehouse) -> None:
    rows = [r for r, _ in BAD_ROWS.values()]
    put(landing, "events", D1, "a.csv", csv("ok,i,view,2026-01-04T09:00:00Z,,g1", *rows))
    manifest = run(landing, wh, D1)
    assert manifest["events"] == {
        "ingested": 1 + len(BAD_ROWS),
        "clean": 1,
        "duplicates": 0,
        "quarantined": len(BAD_ROWS),
    }
    assert manifest["reasons"] == dict.fromkeys(sorted(BAD_ROWS), 1)
    q = pl.read_parquet(wh.quarantine(D1))
    assert dict(q.schema) == QUARANTINE_SCHEMA
    got = dict(zip(q["reason_category"], q["reason"], strict=True))
    assert got == {cat: reason for cat, (_, reason) in BAD_ROWS.items()}
    assert q["_source_row"].to_list() == list(range(2, 2 + len(BAD_ROWS)))
    assert q.filter(pl.col("reason_category") == "bad_timestamp")["timestamp"].item() == "yesterday"


def test_a_row_with_several_problems_lists_them_all(landing: Path, wh: Warehouse) -> None:
    put(landing, "events", D1, "a.csv", csv(",i,like,soon,,b1"))
    run(landing, wh, D1)
    q = pl.read_parquet(wh.quarantine(D1))
    assert q["reason_category"].item() == "missing_user_id"
    assert q["reason"].item() == (
        "user_id is missing; event_type 'like' not in [view, click, add_to_cart, purchase, "
        "rating]; timestamp 'soon' is not ISO 8601 or Unix seconds"
    )


def test_long_ids_are_quarantined(landing: Path, wh: Warehouse) -> None:
    put(landing, "events", D1, "a.csv", csv(f"{'u' * 11},i,view,2026-01-04T10:00:00Z,,b1"))
    run(landing, wh, D1, CleanConfig(max_id_length=10))
    q = pl.read_parquet(wh.quarantine(D1))
    assert q["reason"].item() == "user_id is 11 characters long, more than max_id_length 10"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1767520800", "2026-01-04T10:00:00"),
        ("1767520800.25", "2026-01-04T10:00:00.250000"),
        (" 1767520800.0 ", "2026-01-04T10:00:00"),
        ("2026-01-04T10:00:00Z", "2026-01-04T10:00:00"),
        ("2026-01-04T12:00:00+02:00", "2026-01-04T10:00:00"),
        ("2026-01-04T05:00:00-0500", "2026-01-04T10:00:00"),
        ("2026-01-04T11:00:00+01", "2026-01-04T10:00:00"),
        ("2026-01-04 10:00:00", "2026-01-04T10:00:00"),
        ("2026-01-04t10:00Z", "2026-01-04T10:00:00"),
        ("2026-01-04T10:00:00.123456789Z", "2026-01-04T10:00:00.123456"),
        ("2026-01-04", "2026-01-04T00:00:00"),
        ("yesterday", None),
        ("2026-13-40T10:00:00Z", None),
        ("2026-01-04T24:00:00Z", None),
        ("1767520800000", None),  # milliseconds are not seconds
        ("", None),
        (None, None),
        # the quick paths' edges (whole seconds, plain UTC) give what the general ones give
        ("2024-02-29T23:59:59Z", "2024-02-29T23:59:59"),
        ("2026-02-30T00:00:00Z", None),
        ("2026-01-04T10:00:60Z", "2026-01-04T10:01:00"),  # a leap second, as chrono reads it
        ("2026-01-04T10:00:00z", "2026-01-04T10:00:00"),
        ("2026-01-04T10:00:00ZZ", None),
        ("253402300799", "9999-12-31T23:59:59"),
        ("253402300800", None),
        ("007", "1970-01-01T00:00:07"),
        ("+1767520800", "2026-01-04T10:00:00"),
        ("-1", "1969-12-31T23:59:59"),
        ("\uff11\uff17\uff16\uff17\uff15\uff12\uff10\uff18\uff10\uff10", None),  # full-width digits
    ],
)
def test_timestamp_forms(text: str | None, expected: str | None) -> None:
    df = add_timestamp_us(pl.DataFrame({"t": [text]}, schema={"t": pl.String}), "t", "us")
    got = df.select(pl.from_epoch("us", time_unit="us")).item()
    assert (got.isoformat() if got is not None else None) == expected


def test_timestamp_forms_mixed_in_one_column() -> None:
    """Rows of every form in one column (quick paths for some rows, the general ones for the
    rest, put back in place) parse as each does alone."""
    forms = [
        "2026-01-04T10:00:00Z",
        "yesterday",
        "1767520800",
        "2026-01-04T12:00:00+02:00",
        None,
        "1767520800.25",
        "2026-01-04",
        "2026-02-30T00:00:00Z",
    ] * 3
    df = pl.DataFrame({"t": forms}, schema={"t": pl.String})
    together = add_timestamp_us(df, "t", "us")["us"].to_list()
    alone = [add_timestamp_us(df.slice(i, 1), "t", "us")["us"].item() for i in range(len(forms))]
    assert together == alone
    assert together[:8] == [
        1767520800000000,
        None,
        1767520800000000,
        1767520800000000,
        None,
        1767520800250000,
        1767484800000000,
        None,
    ]


def test_normalisation_keeps_ids_as_strings(landing: Path, wh: Warehouse) -> None:
    put(
        landing,
        "events",
        D1,
        "a.csv",
        csv(
            " 007 ,0001,Add-To-Cart,2026-01-04T10:00:00Z,,e1",
            "007,0001,buy,2026-01-04T10:05:00Z,19.90,e2",
            "007,0001,rate,1767521400,4.5,",
            "007,0001, VIEW ,2026-01-04T11:00:00+01:00,,e4",
        ),
    )
    run(landing, wh, D1)
    ev = load_clean_events(wh, until=D1)
    assert dict(ev.schema) == CLEAN_EVENTS_SCHEMA
    assert ev.select("event_id", "user_id", "item_id", "event_type", "value").rows() == [
        ("e1", "007", "0001", "add_to_cart", None),  # same instant as e4: type breaks the tie
        ("e4", "007", "0001", "view", None),
        ("e2", "007", "0001", "purchase", 19.9),
        ("events/date=2026-01-04/a.csv#3", "007", "0001", "rating", 4.5),
    ]
    assert ev["timestamp"][0] == dt.datetime(2026, 1, 4, 10, 0, tzinfo=dt.UTC)
    some = load_clean_events(wh, until=D1, columns=("item_id", "user_id"))
    assert some.equals(ev.select("item_id", "user_id"))  # only those columns, in that order


# ---- clean: duplicates -----------------------------------------------------------------------


def test_exact_and_near_duplicates(landing: Path, wh: Warehouse) -> None:
    put(
        landing,
        "events",
        D1,
        "a.csv",
        csv(
            "u,i,view,2026-01-04T10:00:00Z,,e1",
            "u,i,view,2026-01-04T10:00:00Z,,e1",  # exact: same event id
            "u,i,view,2026-01-04T10:00:50Z,,e2",  # near: 50 s after e1
            "u,i,view,2026-01-04T10:01:40Z,,e3",  # 100 s after e1 (last kept): kept
            "u,i,click,2026-01-04T10:00:10Z,,e4",  # other type: kept
            "u,j,rating,2026-01-04T10:00:00Z,4,",
            "u,j,rating,1767520800,4.0,",  # exact: same content, no event id
        ),
    )
    manifest = run(landing, wh, D1)
    assert manifest["events"] == {"ingested": 7, "clean": 4, "duplicates": 3, "quarantined": 0}
    assert manifest["duplicate_kinds"] == {"events_exact": 2, "events_near": 1}
    kept = load_clean_events(wh, until=D1)["event_id"].to_list()
    assert sorted(kept) == ["e1", "e3", "e4", "events/date=2026-01-04/a.csv#6"]


def test_near_duplicate_across_midnight_in_one_pass_and_day_by_day(
    landing: Path, tmp_path: Path
) -> None:
    put(landing, "events", D1, "a.csv", csv("u,i,view,2026-01-04T23:59:50Z,,e1"))
    put(
        landing,
        "events",
        D2,
        "a.csv",
        csv("u,i,view,2026-01-05T00:00:05Z,,e2", "u,i,view,2026-01-05T00:01:10Z,,e3"),
    )
    one_pass = Warehouse(tmp_path / "one")
    ingest(landing, one_pass, D2)
    m_pass = clean_days(one_pass, [D1, D2])[1]
    daily = Warehouse(tmp_path / "daily")
    ingest(landing, daily, D1)
    clean(daily, D1)
    ingest(landing, daily, D2)
    m_daily = clean(daily, D2)
    for m in (m_pass, m_daily):
        assert m["duplicate_kinds"]["events_near"] == 1
        assert m["events"]["clean"] == 1
    for wh in (one_pass, daily):
        assert load_clean_events(wh, until=D2)["event_id"].to_list() == ["e1", "e3"]
    for path in (lambda w: w.clean("events", D2), lambda w: w.manifest(D2)):
        assert path(one_pass).read_bytes() == path(daily).read_bytes()


def test_window_zero_keeps_near_repeats(landing: Path, wh: Warehouse) -> None:
    put(
        landing,
        "events",
        D1,
        "a.csv",
        csv("u,i,view,2026-01-04T10:00:00Z,,e1", "u,i,view,2026-01-04T10:00:01Z,,e2"),
    )
    manifest = run(landing, wh, D1, CleanConfig(dedupe_window_seconds=0))
    assert manifest["events"]["clean"] == 2


# ---- clean: outputs --------------------------------------------------------------------------


def test_rerun_replaces_outputs_byte_identically(landing: Path, wh: Warehouse) -> None:
    put(
        landing,
        "events",
        D1,
        "a.csv",
        csv(
            "u,i,view,2026-01-04T10:00:00Z,,e1", "u,i,view,2026-01-04T10:00:00Z,,e1", ",i,view,1,,x"
        ),
    )
    put(landing, "items", D1, "i.csv", "item_id,title\ni,Tent\nj,\n")
    run(landing, wh, D1)
    paths = [wh.clean("events", D1), wh.clean("items", D1), wh.quarantine(D1), wh.manifest(D1)]
    before = [p.read_bytes() for p in paths]
    clean(wh, D1)
    assert [p.read_bytes() for p in paths] == before


def test_items_are_validated_deduplicated_and_form_the_catalog(
    landing: Path, wh: Warehouse
) -> None:
    put(
        landing,
        "items",
        D1,
        "i.csv",
        "item_id,title,description,updated_at\n"
        '001,Tent,"roomy\ntent",2026-01-04T08:00:00Z\n'
        "001,Tent v2,roomier,2026-01-04T09:00:00Z\n"
        "002,,no title,\n"
        "003,Lamp,bright,never\n"
        "004,Stove,hot,\n",
    )
    put(
        landing, "items", D2, "i.jsonl", '{"item_id": "004", "title": "Stove 2", "updated_at": 1}\n'
    )
    put(landing, "events", D1, "a.csv", csv())
    put(landing, "events", D2, "a.csv", csv())
    ingest(landing, wh, D2)
    m1, m2 = clean_days(wh, [D1, D2])
    assert m1["items"] == {"ingested": 5, "clean": 2, "duplicates": 1, "quarantined": 2}
    assert m1["reasons"] == {"items.bad_updated_at": 1, "items.missing_title": 1}
    assert m2["items"]["clean"] == 1
    items = pl.read_parquet(wh.clean("items", D1))
    assert dict(items.schema) == CLEAN_ITEMS_SCHEMA
    q = pl.read_parquet(wh.quarantine(D1))
    assert q["kind"].to_list() == ["items", "items"]
    assert q["reason"].to_list() == [
        "title is missing",
        "updated_at 'never' is not ISO 8601 or Unix seconds",
    ]
    catalog = load_catalog(wh, as_of=D2)
    assert catalog.columns == list(CATALOG_COLUMNS)
    assert catalog.select("item_id", "title", "date").rows() == [
        ("001", "Tent v2", D1),
        ("004", "Stove 2", D2),  # a later drop wins even with an older updated_at
    ]
    assert load_catalog(wh, as_of=D1)["title"].to_list() == ["Tent v2", "Stove"]


def test_counts_reconcile_and_manifest_is_complete(landing: Path, wh: Warehouse) -> None:
    put(landing, "events", D1, "a.csv", csv("u,i,view,2026-01-04T10:00:00Z,,e1", "u,i,view,x,,e2"))
    put(
        landing,
        "events",
        D1,
        "b.jsonl",
        '{"user_id":"u","item_id":"i","event_type":"view","timestamp":1767520800,"event_id":"e1"}\n',
    )
    manifest = run(landing, wh, D1)
    ev = manifest["events"]
    assert ev["ingested"] == ev["clean"] + ev["duplicates"] + ev["quarantined"] == 3
    assert manifest["source_files"] == [
        "events/date=2026-01-04/a.csv",
        "events/date=2026-01-04/b.jsonl",
    ]
    assert json.loads(wh.manifest(D1).read_text()) == manifest
    assert manifest["clean_config"]["dedupe_window_seconds"] == 60


def test_a_date_whose_output_fails_gets_no_manifest(
    landing: Path, wh: Warehouse, monkeypatch
) -> None:
    """Clean writes every output of every date at once, then each date's manifest once its own
    outputs are written: a failed write leaves that date unpublished (no manifest, pending
    again), the other dates complete, and the error is raised."""
    from recsys_core.ingest import _clean

    for day in (D1, D2, D3):
        put(
            landing, "events", day, "a.csv", csv(f"u,i,view,{day.isoformat()}T10:00:00Z,,{day.day}")
        )
        put(landing, "items", day, "i.csv", "item_id,title\ni,T\n")
    ingest(landing, wh, D3)
    real = _clean.write_partition

    def failing(df, target):
        if f"items/date={D2.isoformat()}" in str(target):
            raise OSError(28, "No space left on device", str(target))
        return real(df, target)

    monkeypatch.setattr(_clean, "write_partition", failing)
    with pytest.raises(OSError, match="No space left"):
        clean_days(wh, [D1, D2, D3])
    assert wh.manifest(D1).is_file() and wh.manifest(D3).is_file()
    assert not wh.manifest(D2).exists()
    assert pending_clean_dates(wh, until=D3) == [D2]
    monkeypatch.setattr(_clean, "write_partition", real)
    assert [m["date"] for m in clean_days(wh, pending_clean_dates(wh, until=D3))] == ["2026-01-05"]


def test_load_clean_events_never_reads_after_until(landing: Path, wh: Warehouse) -> None:
    for day in (D1, D2, D3):
        put(
            landing, "events", day, "a.csv", csv(f"u,i,view,{day.isoformat()}T10:00:00Z,,{day.day}")
        )
    ingest(landing, wh, D3)
    clean_days(wh, [D1, D2, D3])
    assert load_clean_events(wh, until=D2)["date"].to_list() == [D1, D2]
    assert load_clean_events(wh, until=D3, since=D2)["date"].to_list() == [D2, D3]
    assert load_clean_events(wh, until=dt.date(2025, 1, 1)).height == 0


def test_clean_without_raw_partition_names_the_path(wh: Warehouse) -> None:
    with pytest.raises(MissingPartitionError, match=r"raw/events/date=2026-01-04"):
        clean(wh, D1)


def test_pending_clean_dates(landing: Path, wh: Warehouse) -> None:
    put(landing, "events", D1, "a.csv", csv())
    put(landing, "items", D2, "i.csv", "item_id,title\ni,T\n")
    ingest(landing, wh, D2, require_run_date=False)
    assert pending_clean_dates(wh, until=D3) == [D1, D2]
    clean_days(wh, [D1, D2])
    assert pending_clean_dates(wh, until=D3) == []
    assert wh.clean("events", D2).is_file()  # an items-only date gets an empty events table


def test_csv_files_read_in_one_scan_match_file_by_file(landing: Path) -> None:
    from recsys_core.ingest._batch import read_partitions
    from recsys_core.ingest._read import read_landing_file

    put(landing, "events", D1, "a.csv", csv("u1,i,view,1,,e1", "u2,i,view,2,,e2"))
    put(landing, "events", D1, "b.csv", csv('u3,i,view,3,,"e\n3"'))
    put(landing, "events", D1, "c.csv", "timestamp,user_id,item_id,event_type\n4,u4,i,view\n")
    put(landing, "events", D2, "a.csv", csv("u5,i,view,5,,e5"))
    put(landing, "events", D2, "empty.csv", "")
    together = read_partitions(landing, "events", [D1, D2])
    for day, (df, notes, n_files) in zip([D1, D2], together, strict=True):
        files = sorted((landing / "events" / f"date={day}").iterdir())
        one_by_one = pl.concat([read_landing_file(p, "events", landing)[0] for p in files])
        assert df.equals(one_by_one) and notes == [] and n_files == len(files)
    assert together[0][0]["_source_row"].to_list() == [1, 2, 1, 1]


def test_a_bad_csv_among_many_is_reported_by_name(landing: Path) -> None:
    from recsys_core.ingest._batch import read_partitions

    put(landing, "events", D1, "a.csv", csv("u1,i,view,1,,e1"))
    put(landing, "events", D2, "a.csv", csv("u1,i,view,1,,e1,extra"))
    with pytest.raises(LandingReadError, match=r"date=2026-01-05/a\.csv: cannot parse as CSV"):
        read_partitions(landing, "events", [D1, D2])
    put(landing, "events", D3, "a.csv", HEADER.encode() + b"u\xff,i,view,1,,e\n")
    with pytest.raises(LandingReadError, match=r"date=2026-01-06/a\.csv: cannot parse as CSV"):
        read_partitions(landing, "events", [D1, D3])


def test_batches_are_consecutive_and_bounded() -> None:
    days = [D1 + dt.timedelta(days=k) for k in range(6)]
    sizes = dict(zip(days, [40, 50, 200, 10, 10, 90], strict=True))
    batches = _batches(days, sizes, limit=100)
    assert batches == [days[0:2], days[2:3], days[3:5], days[5:6]]  # 200 > limit: alone
    assert _batches(days, sizes, limit=10**9) == [days]


def test_cleaning_in_small_passes_writes_what_one_pass_writes(tmp_path: Path) -> None:
    from recsys_core.landing import generate_synthetic

    landing = tmp_path / "landing"
    generate_synthetic(landing, users=80, items=40, days=6, seed=3, end_date=D1)
    outs = {}
    for name, mib in (("one", 1024.0), ("daily", 1e-9)):  # 1e-9 MiB: one date per pass
        wh = Warehouse(tmp_path / name)
        dates = ingest(landing, wh, D1).all_dates
        manifests = clean_days(wh, dates, CleanConfig(batch_mib=mib))
        assert [m["date"] for m in manifests] == [d.isoformat() for d in sorted(dates)]
        files = sorted(p for p in wh.root.rglob("*") if p.is_file() and "raw" not in p.parts)
        outs[name] = {p.relative_to(wh.root): p.read_bytes() for p in files}
    assert len(outs["one"]) >= 3 * 6  # clean events, items and a manifest per date at least
    assert sum(b"events_near" in v for v in outs["one"].values()) == 6
    assert outs["daily"] == outs["one"]
