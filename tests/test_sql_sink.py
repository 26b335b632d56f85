"""SQL sink: round trip, replace-a-date, atomicity under a concurrent reader, on SQLite and PostgreSQL.

PostgreSQL runs when ``RECSYS_TEST_PG_URL`` is set (``eval "$(.ci/postgres.sh)"``); each test gets
its own schema through ``search_path``. Without the URL the postgres cases are skipped locally and
fail under CI (``CI`` set), so CI cannot silently stop testing PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import uuid
from collections.abc import Iterator

import polars as pl
import pytest
import sqlalchemy as sa

from recsys_core.io import Warehouse, atomic_write_parquet
from recsys_core.schema import RECOMMENDATIONS_SCHEMA
from recsys_core.serving import (
    _sql,
    load_partition_to_sql,
    read_recommendations_sql,
    resolve_sql_url,
    write_recommendations_sql,
)

D1 = dt.date(2024, 3, 1)
D2 = dt.date(2024, 3, 2)


def _pg_base_url() -> str:
    url = os.environ.get("RECSYS_TEST_PG_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail(
                'RECSYS_TEST_PG_URL is not set under CI; run eval "$(.ci/postgres.sh)" first'
            )
        pytest.skip('RECSYS_TEST_PG_URL not set (eval "$(.ci/postgres.sh)" to run these)')
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A fresh, empty database: an SQLite file, or a private schema of the test PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'serving.db'}"
        return
    base = sa.make_url(_pg_base_url())
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, poolclass=sa.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        url = base.update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def recs_frame(n_users: int, k: int, *, model_id: str = "m1", offset: float = 0.0) -> pl.DataFrame:
    """``n_users`` users x ``k`` ranks with known scores ``offset + user + 1/rank``."""
    pairs = [(u, r) for u in range(n_users) for r in range(1, k + 1)]
    return pl.DataFrame(
        {
            "user_id": [f"user {u:05d}" for u, _ in pairs],
            "item_id": [f"item-{(u * 7 + r) % 97}" for u, r in pairs],
            "rank": [r for _, r in pairs],
            "score": [offset + u + 1 / r for u, r in pairs],
            "model_id": model_id,
        },
        schema_overrides={"rank": pl.Int32, "score": pl.Float32},
    )


def expected(recs: pl.DataFrame, run_date: dt.date) -> pl.DataFrame:
    if "reason" not in recs.columns:
        recs = recs.with_columns(pl.lit(None, dtype=pl.String).alias("reason"))
    return (
        recs.with_columns(pl.lit(run_date).alias("run_date"))
        .select([pl.col(c).cast(t) for c, t in RECOMMENDATIONS_SCHEMA.items()])
        .sort(["run_date", "user_id", "rank"])
    )


def count_rows(engine: sa.Engine, run_date: dt.date) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT COUNT(*) FROM recommendations WHERE run_date = :d"), {"d": run_date}
        ).scalar_one()


def test_round_trip_keeps_values_nulls_and_awkward_strings(db_url: str) -> None:
    recs = pl.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "", "ü 3"],
            "item_id": ["a", "b", 'a,"x"\nnext line', "é", "\\N"],
            "rank": [1, 2, 1, 1, 1],
            "score": [0.5, 1 / 3, -1e-8, 3.4e38, 0.0],
            "model_id": "ease-2024",
            "reason": [None, "", "\\N", 'because, "quoted"', "tab\there"],
        },
        schema_overrides={"rank": pl.Int32, "score": pl.Float32},
    )
    out = write_recommendations_sql(recs, db_url, D1, chunk_rows=2)
    assert out["rows"] == 5
    assert out["dialect"] == ("sqlite" if db_url.startswith("sqlite") else "postgresql")
    back = read_recommendations_sql(db_url, D1)
    assert back.schema == pl.Schema(RECOMMENDATIONS_SCHEMA)
    # exact: float32 scores survive bit for bit, null reason stays null and "" stays ""
    assert back.equals(expected(recs, D1))
    assert back.filter(pl.col("user_id") == "u1")["reason"].to_list() == [None, ""]


def test_rerun_replaces_only_its_date_and_view_shows_latest(db_url: str) -> None:
    write_recommendations_sql(recs_frame(30, 5), db_url, D1)
    write_recommendations_sql(recs_frame(20, 3, model_id="m2"), db_url, D2)
    assert read_recommendations_sql(db_url, latest=True).equals(
        expected(recs_frame(20, 3, model_id="m2"), D2)
    )
    # re-running D1 with fewer users replaces D1 entirely (no stale users left) and keeps D2
    again = recs_frame(4, 2, model_id="m3", offset=100.0)
    write_recommendations_sql(again, db_url, D1)
    assert read_recommendations_sql(db_url, D1).equals(expected(again, D1))
    assert read_recommendations_sql(db_url, D2).height == 60
    assert read_recommendations_sql(db_url).height == 8 + 60
    # the view follows the latest loaded date, whichever date was written last
    assert set(read_recommendations_sql(db_url, latest=True)["run_date"].to_list()) == {D2}
    # an empty frame clears the date
    write_recommendations_sql(recs_frame(0, 0), db_url, D2)
    assert read_recommendations_sql(db_url, D2).height == 0
    assert set(read_recommendations_sql(db_url, latest=True)["run_date"].to_list()) == {D1}


def test_ddl_is_idempotent_with_key_index_and_view(db_url: str) -> None:
    assert read_recommendations_sql(db_url).height == 0  # no table yet: empty, no error
    for _ in range(2):
        write_recommendations_sql(recs_frame(2, 2), db_url, D1)
    engine = sa.create_engine(db_url, poolclass=sa.NullPool)
    try:
        insp = sa.inspect(engine)
        assert insp.get_pk_constraint("recommendations")["constrained_columns"] == [
            "run_date",
            "user_id",
            "rank",
        ]
        assert [i["column_names"] for i in insp.get_indexes("recommendations")] == [
            ["user_id", "run_date"]
        ]
        assert "recommendations_latest" in insp.get_view_names()
        assert [c["name"] for c in insp.get_columns("recommendations")] == list(
            RECOMMENDATIONS_SCHEMA
        )
    finally:
        engine.dispose()


def test_failed_write_leaves_previous_rows(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    old = recs_frame(10, 4)
    write_recommendations_sql(old, db_url, D1)
    name = "_insert_sqlite" if db_url.startswith("sqlite") else "_insert_postgres"
    real = getattr(_sql, name)

    def half_then_crash(conn, frame, chunk_rows):
        real(conn, frame.head(frame.height // 2), chunk_rows)  # rows really sent, then a crash
        raise OSError("connection lost mid-write")

    monkeypatch.setattr(_sql, name, half_then_crash)
    with pytest.raises(OSError, match="mid-write"):
        write_recommendations_sql(recs_frame(50, 4, offset=9.0), db_url, D1, chunk_rows=7)
    assert read_recommendations_sql(db_url, D1).equals(expected(old, D1))


def test_database_error_is_reported_and_rolled_back(db_url: str) -> None:
    # a table made beforehand with a CHECK the new rows break: the driver itself rejects the
    # bulk insert (COPY / executemany), after the date's rows were already deleted
    engine = sa.create_engine(db_url, poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE recommendations (user_id TEXT NOT NULL, item_id TEXT NOT NULL,"
            " rank INTEGER NOT NULL, score REAL NOT NULL CHECK (score < 1000), model_id TEXT NOT"
            " NULL, run_date DATE NOT NULL, reason TEXT, PRIMARY KEY (run_date, user_id, rank))"
        )
    engine.dispose()
    old = recs_frame(5, 2)
    write_recommendations_sql(old, db_url, D1)
    bad = recs_frame(5, 2, offset=2000.0)
    with pytest.raises(RuntimeError, match="previous rows are unchanged") as info:
        write_recommendations_sql(bad, db_url, D1)
    assert "10 rows of run_date 2024-03-01 failed" in str(info.value)
    assert "check" in str(info.value).lower()
    assert read_recommendations_sql(db_url, D1).equals(expected(old, D1))


def test_concurrent_reader_never_sees_a_partial_date(db_url: str) -> None:
    small, large = recs_frame(300, 10), recs_frame(500, 10, offset=1.0)
    write_recommendations_sql(small, db_url, D1)
    counts: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        engine = sa.create_engine(db_url, poolclass=sa.NullPool)
        try:
            while not done.is_set():
                counts.append(count_rows(engine, D1))
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)
        finally:
            engine.dispose()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(6):  # small chunks: a non-atomic writer would expose many partial counts
            write_recommendations_sql(large if i % 2 == 0 else small, db_url, D1, chunk_rows=100)
    finally:
        done.set()
        thread.join(timeout=60)
    assert not errors, errors
    assert len(counts) >= 10, f"the reader ran only {len(counts)} times"
    assert set(counts) <= {small.height, large.height}, sorted(set(counts))
    assert read_recommendations_sql(db_url, D1).height == small.height


def test_frame_is_validated_before_touching_the_database(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    good = recs_frame(2, 2)
    with pytest.raises(
        ValueError, match=r"2 row\(s\) have run_date 2024-03-02, expected only 2024-03-01"
    ):
        write_recommendations_sql(
            good.with_columns(
                pl.when(pl.col("rank") == 1).then(D2).otherwise(D1).alias("run_date")
            ),
            url,
            D1,
        )
    with pytest.raises(ValueError, match=r"missing column\(s\) \['model_id'\]"):
        write_recommendations_sql(good.drop("model_id"), url, D1)
    with pytest.raises(ValueError, match=r"row 1: user 'user 00000' has rank 2 more than once"):
        write_recommendations_sql(
            good.with_columns(pl.lit(2, dtype=pl.Int32).alias("rank")), url, D1
        )
    with pytest.raises(ValueError, match=r"row 1: column 'item_id' is null"):
        write_recommendations_sql(
            good.with_columns(
                pl.when(pl.col("rank") == 2).then(None).otherwise(pl.lit("i")).alias("item_id")
            ),
            url,
            D1,
        )
    assert not (tmp_path / "x.db").exists()


def test_url_resolution_and_password_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_SQL_URL", "sqlite:///from-env.db")
    assert resolve_sql_url("sqlite:///from-config.db") == "sqlite:///from-config.db"
    assert resolve_sql_url(None) == "sqlite:///from-env.db"
    monkeypatch.delenv("RECSYS_SQL_URL")
    assert resolve_sql_url(None) is None
    with pytest.raises(ValueError, match=r"'mysql' is not supported") as info:
        write_recommendations_sql(recs_frame(1, 1), "mysql://bob:s3cret-pw@db/x", D1)
    assert "s3cret-pw" not in str(info.value)
    # port 1 on localhost refuses at once: the connection error names the URL, without password
    with pytest.raises(RuntimeError, match=r"recsys:\*\*\*@127\.0\.0\.1:1/") as info:
        write_recommendations_sql(
            recs_frame(1, 1), "postgresql://recsys:s3cret-pw@127.0.0.1:1/db", D1
        )
    assert "s3cret-pw" not in str(info.value)
    assert "previous rows are unchanged" in str(info.value)


def test_load_partition_from_the_warehouse(tmp_path) -> None:
    wh = Warehouse(tmp_path / "wh")
    part = expected(recs_frame(3, 2), D1)
    atomic_write_parquet(part, wh.recommendations(D1))
    url = f"sqlite:///{tmp_path / 'serving.db'}"
    assert load_partition_to_sql(wh.root, D1, url)["rows"] == 6
    assert read_recommendations_sql(url, D1).equals(part)
