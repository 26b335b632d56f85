"""SQL sink: the recommendation partitions loaded into a serving database (PostgreSQL or SQLite).

The Parquet partition ``recommendations/run_date=D/part-0.parquet`` stays the system of record;
the database is a copy for serving. Objects (created when missing, so every call is idempotent):

* table ``recommendations``: the columns of :data:`recsys_core.schema.RECOMMENDATIONS_SCHEMA`,
  primary key ``(run_date, user_id, rank)``, index ``(user_id, run_date)``;
* view ``recommendations_latest``: the rows of the latest ``run_date`` in the table.

One run date is written in ONE transaction: delete that date's rows, then bulk insert the new ones
(PostgreSQL: ``COPY ... FROM STDIN`` in CSV; SQLite: ``executemany``). A reader therefore sees the
old rows of the date or the new ones, never a mix or a part, and re-running a date replaces it.
Writers are serialised (PostgreSQL: a transaction-level advisory lock; SQLite: ``BEGIN
IMMEDIATE``), and an SQLite file is switched to WAL mode so that readers never wait for a writer.

The URL comes from :attr:`recsys_core.config.ScoringConfig.sql_url` or ``RECSYS_SQL_URL``
(:func:`resolve_sql_url`), never from code; messages show it with the password hidden.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from recsys_core.io import Warehouse, read_parquet
from recsys_core.schema import RECOMMENDATIONS_SCHEMA

__all__ = [
    "ASSIGNMENTS_TABLE",
    "SQL_URL_ENV",
    "load_partition_to_sql",
    "read_assignments_sql",
    "read_recommendations_sql",
    "resolve_sql_url",
    "write_assignments_sql",
    "write_recommendations_sql",
]

log = logging.getLogger(__name__)

#: Environment variable read when the config gives no URL.
SQL_URL_ENV = "RECSYS_SQL_URL"
TABLE = "recommendations"
VIEW = "recommendations_latest"
COLUMNS: tuple[str, ...] = tuple(RECOMMENDATIONS_SCHEMA)
_REQUIRED = ("user_id", "item_id", "rank", "score", "model_id")
#: Key of the PostgreSQL advisory lock held by a writer (any constant; "recsys" in ASCII).
_PG_LOCK_KEY = 0x726563737973

_DDL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    " user_id TEXT NOT NULL, item_id TEXT NOT NULL, rank INTEGER NOT NULL, score REAL NOT NULL,"
    " model_id TEXT NOT NULL, run_date DATE NOT NULL, reason TEXT,"
    " PRIMARY KEY (run_date, user_id, rank))",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_user_id_run_date_idx ON {TABLE} (user_id, run_date)",
)
_VIEW_SQL = (
    f"CREATE VIEW {VIEW} AS SELECT {', '.join(COLUMNS)} FROM {TABLE}"
    f" WHERE run_date = (SELECT MAX(run_date) FROM {TABLE})"
)


def resolve_sql_url(sql_url: str | None = None) -> str | None:
    """``sql_url`` (from the config) if given, else ``$RECSYS_SQL_URL``, else None (no SQL sink)."""
    return sql_url or os.environ.get(SQL_URL_ENV) or None


def _safe(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _engine(url: str | URL, *, writer: bool) -> tuple[Engine, str]:
    """An engine for ``url`` and its backend name; plain ``postgresql://`` means psycopg 3.

    A writer's SQLite connections switch the file to WAL and begin with ``BEGIN IMMEDIATE``
    (SQLAlchemy's recipe for explicit pysqlite transactions); a reader's begin nothing.
    """
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        if parsed.get_driver_name() != "psycopg":
            raise ValueError(
                f"SQL sink {_safe(parsed)}: driver {parsed.get_driver_name()!r} is not supported; "
                "expected postgresql+psycopg://... (psycopg 3, for COPY)"
            )
        return sa.create_engine(parsed, poolclass=sa.NullPool), backend
    if backend != "sqlite":
        raise ValueError(
            f"SQL sink {_safe(parsed)}: database {backend!r} is not supported; expected "
            "postgresql+psycopg://user:password@host:port/db or sqlite:///path/to/file.db"
        )
    engine = sa.create_engine(parsed, poolclass=sa.NullPool)
    in_memory = parsed.database in (None, "", ":memory:")

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA busy_timeout = 30000")
        if writer:
            dbapi_conn.isolation_level = None  # no implicit BEGIN: we issue our own
            if not in_memory:
                dbapi_conn.execute("PRAGMA journal_mode = WAL")

    if writer:

        @sa.event.listens_for(engine, "begin")
        def _begin_immediate(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine, backend


def _prepare(recs: pl.DataFrame, run_date: dt.date) -> pl.DataFrame:
    """``recs`` checked and cast to the recommendations schema, ``run_date`` filled in."""
    missing = [c for c in _REQUIRED if c not in recs.columns]
    if missing:
        raise ValueError(
            f"recommendations frame: missing column(s) {missing}; found {recs.columns}, expected "
            f"{list(COLUMNS)} (run_date and reason may be left out)"
        )
    if "run_date" in recs.columns:
        other = recs.filter(pl.col("run_date").cast(pl.Date, strict=False) != run_date)
        if other.height:
            found = other["run_date"].cast(pl.String).unique().sort().head(5).to_list()
            raise ValueError(
                f"recommendations frame: {other.height} row(s) have run_date {', '.join(found)}, expected "
                f"only {run_date.isoformat()} (the date being written)"
            )
    else:
        recs = recs.with_columns(pl.lit(run_date, dtype=pl.Date).alias("run_date"))
    if "reason" not in recs.columns:
        recs = recs.with_columns(pl.lit(None, dtype=pl.String).alias("reason"))
    try:
        out = recs.select(
            [pl.col(c).cast(t, strict=True) for c, t in RECOMMENDATIONS_SCHEMA.items()]
        )
    except pl.exceptions.PolarsError as exc:
        raise ValueError(
            f"recommendations frame: a column cannot be cast to {RECOMMENDATIONS_SCHEMA}: {exc}"
        ) from exc
    for col in COLUMNS:
        if col != "reason" and out[col].null_count():
            row = int(out[col].is_null().arg_max() or 0)
            raise ValueError(
                f"recommendations frame row {row}: column {col!r} is null; expected a value "
                f"({out[col].null_count()} null(s) in all)"
            )
    dup = out.select(~pl.struct("user_id", "rank").is_first_distinct().alias("d"))["d"]
    if dup.any():
        row = int(dup.arg_max() or 0)
        raise ValueError(
            f"recommendations frame row {row}: user {out['user_id'][row]!r} has rank "
            f"{out['rank'][row]} more than once; expected one row per (user_id, rank)"
        )
    return out


def _ensure_objects(conn: sa.Connection, backend: str) -> None:
    """Create the table, index and view when missing (inside the caller's transaction)."""
    for stmt in _DDL:
        conn.exec_driver_sql(stmt)
    if backend == "sqlite":
        conn.exec_driver_sql(_VIEW_SQL.replace("CREATE VIEW", "CREATE VIEW IF NOT EXISTS"))
    elif conn.exec_driver_sql(f"SELECT to_regclass('{VIEW}')").scalar() is None:
        # not CREATE OR REPLACE: that would take an exclusive lock on the view on every write
        conn.exec_driver_sql(_VIEW_SQL)


def _insert_postgres(conn: sa.Connection, frame: pl.DataFrame, chunk_rows: int) -> None:
    dbapi = conn.connection.driver_connection  # psycopg.Connection, inside our transaction
    sql = f"COPY {TABLE} ({', '.join(COLUMNS)}) FROM STDIN (FORMAT csv)"
    with dbapi.cursor() as cur, cur.copy(sql) as copy:
        # polars CSV is PostgreSQL's: null -> empty field, empty string -> "", shortest float repr
        for chunk in frame.iter_slices(chunk_rows):
            copy.write(chunk.write_csv(include_header=False))


def _insert_sqlite(conn: sa.Connection, frame: pl.DataFrame, chunk_rows: int) -> None:
    dbapi = conn.connection.driver_connection  # sqlite3.Connection, inside BEGIN IMMEDIATE
    sql = f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    frame = frame.with_columns(pl.col("run_date").dt.to_string("%Y-%m-%d"))
    cur = dbapi.cursor()
    try:
        for chunk in frame.iter_slices(chunk_rows):
            cur.executemany(sql, chunk.iter_rows())
    finally:
        cur.close()


def _is_db_error(exc: BaseException) -> bool:
    """An error of SQLAlchemy or of a driver (COPY and executemany use the driver directly)."""
    if isinstance(exc, sa.exc.SQLAlchemyError | sqlite3.Error):
        return True
    return type(exc).__module__.startswith("psycopg")


def write_recommendations_sql(
    recs: pl.DataFrame, url: str | URL, run_date: dt.date, *, chunk_rows: int = 50_000
) -> dict[str, Any]:
    """Replace ``run_date``'s rows of table ``recommendations`` at ``url`` with ``recs``, atomically.

    ``recs`` has the columns of :data:`~recsys_core.schema.RECOMMENDATIONS_SCHEMA` (``run_date``
    and ``reason`` may be left out; a ``run_date`` other than the argument is an error). Rows are
    sent ``chunk_rows`` at a time, all in one transaction. Returns ``{rows, seconds,
    rows_per_second, dialect, run_date, url}`` (url without its password).
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    frame = _prepare(recs, run_date)
    engine, backend = _engine(url, writer=True)
    safe = _safe(engine.url)
    t0 = time.perf_counter()
    try:
        with engine.begin() as conn:
            if backend == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            _ensure_objects(conn, backend)
            conn.execute(sa.text(f"DELETE FROM {TABLE} WHERE run_date = :d"), {"d": run_date})
            if backend == "postgresql":
                _insert_postgres(conn, frame, chunk_rows)
            else:
                _insert_sqlite(conn, frame, chunk_rows)
    except Exception as exc:
        if not _is_db_error(exc):
            raise
        cause = getattr(exc, "orig", None) or exc
        raise RuntimeError(
            f"SQL sink {safe}: writing {frame.height} rows of run_date {run_date.isoformat()} "
            f"failed; the date's previous rows are unchanged: {type(cause).__name__}: "
            f"{str(cause).strip()}"
        ) from exc
    finally:
        engine.dispose()
    seconds = time.perf_counter() - t0
    log.info(
        "wrote %d recommendations of %s to %s in %.2f s", frame.height, run_date, safe, seconds
    )
    return {
        "rows": frame.height,
        "seconds": seconds,
        "rows_per_second": frame.height / seconds if seconds > 0 else float("inf"),
        "dialect": backend,
        "run_date": run_date.isoformat(),
        "url": safe,
    }


def read_recommendations_sql(
    url: str | URL, run_date: dt.date | None = None, *, latest: bool = False
) -> pl.DataFrame:
    """Rows of ``recommendations`` (one ``run_date``, all dates, or with ``latest`` the view),
    sorted by ``(run_date, user_id, rank)``, typed as the schema. No table yet gives 0 rows."""
    engine, _backend = _engine(url, writer=False)
    source = VIEW if latest else TABLE
    sql = f"SELECT {', '.join(COLUMNS)} FROM {source}"
    params: dict[str, Any] = {}
    if run_date is not None:
        sql += " WHERE run_date = :d"
        params["d"] = run_date
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(TABLE):
                return pl.DataFrame(schema=RECOMMENDATIONS_SCHEMA)
            rows = [tuple(r) for r in conn.execute(sa.text(sql), params)]
    finally:
        engine.dispose()
    if not rows:
        return pl.DataFrame(schema=RECOMMENDATIONS_SCHEMA)
    frame = pl.DataFrame(rows, schema=list(COLUMNS), orient="row", infer_schema_length=None)
    # SQLite returns dates as 'YYYY-MM-DD' text; PostgreSQL as datetime.date
    if frame.schema["run_date"] == pl.String:
        frame = frame.with_columns(pl.col("run_date").str.to_date("%Y-%m-%d"))
    # sorted here, not in SQL: the database's collation must not change the order
    return frame.select([pl.col(c).cast(t) for c, t in RECOMMENDATIONS_SCHEMA.items()]).sort(
        ["run_date", "user_id", "rank"]
    )


def load_partition_to_sql(
    warehouse: Path | str, run_date: dt.date, url: str | URL, *, chunk_rows: int = 50_000
) -> dict[str, Any]:
    """Load the warehouse partition of ``run_date`` (the system of record) into the database."""
    recs = read_parquet(Warehouse(warehouse).recommendations(run_date))
    return write_recommendations_sql(recs, url, run_date, chunk_rows=chunk_rows)


#: Table of A/B assignments (one row per experiment, run date and scored user).
ASSIGNMENTS_TABLE = "ab_assignments"
_ASSIGNMENT_COLUMNS = ("experiment", "user_id", "arm", "model_id", "run_date")
_ASSIGNMENTS_DDL = (
    f"CREATE TABLE IF NOT EXISTS {ASSIGNMENTS_TABLE} ("
    " experiment TEXT NOT NULL, user_id TEXT NOT NULL, arm TEXT NOT NULL, model_id TEXT NOT NULL,"
    " run_date DATE NOT NULL, PRIMARY KEY (run_date, experiment, user_id))",
    f"CREATE INDEX IF NOT EXISTS {ASSIGNMENTS_TABLE}_user_idx"
    f" ON {ASSIGNMENTS_TABLE} (experiment, user_id, run_date)",
)


def write_assignments_sql(
    assigned: pl.DataFrame, url: str | URL, run_date: dt.date
) -> dict[str, Any]:
    """Replace ``run_date``'s rows of ``ab_assignments`` for the frame's experiment(s), in one
    transaction (the same locking as :func:`write_recommendations_sql`).

    ``assigned`` has ``experiment, user_id, arm, model_id, run_date`` (the warehouse's
    ``abtest/<experiment>/assignments`` partition). Serving joins it to ``recommendations`` on
    ``(run_date, user_id)`` to know which arm a user's list came from.
    """
    missing = [c for c in _ASSIGNMENT_COLUMNS if c not in assigned.columns]
    if missing:
        raise ValueError(
            f"assignments frame: missing column(s) {missing}; found {assigned.columns}, "
            f"expected {list(_ASSIGNMENT_COLUMNS)}"
        )
    frame = assigned.select(_ASSIGNMENT_COLUMNS).with_columns(
        pl.col("run_date").cast(pl.Date).dt.to_string("%Y-%m-%d")
    )
    other = frame.filter(pl.col("run_date") != run_date.isoformat())
    if other.height:
        raise ValueError(
            f"assignments frame: {other.height} row(s) have run_date {other['run_date'][0]}, "
            f"expected only {run_date.isoformat()}"
        )
    experiments = frame["experiment"].unique().sort().to_list()
    engine, backend = _engine(url, writer=True)
    safe = _safe(engine.url)
    cols = ", ".join(_ASSIGNMENT_COLUMNS)
    try:
        with engine.begin() as conn:
            if backend == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            for stmt in _ASSIGNMENTS_DDL:
                conn.exec_driver_sql(stmt)
            for exp in experiments:
                conn.execute(
                    sa.text(
                        f"DELETE FROM {ASSIGNMENTS_TABLE} WHERE run_date = :d AND experiment = :e"
                    ),
                    {"d": run_date, "e": exp},
                )
            if frame.height:
                conn.execute(
                    sa.text(
                        f"INSERT INTO {ASSIGNMENTS_TABLE} ({cols}) VALUES "
                        f"({', '.join(':' + c for c in _ASSIGNMENT_COLUMNS)})"
                    ),
                    [{**r, "run_date": run_date} for r in frame.iter_rows(named=True)],
                )
    except Exception as exc:
        if not _is_db_error(exc):
            raise
        cause = getattr(exc, "orig", None) or exc
        raise RuntimeError(
            f"SQL sink {safe}: writing {frame.height} assignments of run_date {run_date} failed; "
            f"the previous rows are unchanged: {type(cause).__name__}: {str(cause).strip()}"
        ) from exc
    finally:
        engine.dispose()
    return {"rows": frame.height, "table": ASSIGNMENTS_TABLE, "experiments": experiments}


def read_assignments_sql(url: str | URL, run_date: dt.date | None = None) -> pl.DataFrame:
    """Rows of ``ab_assignments`` (one run date or all), sorted; no table yet gives 0 rows."""
    engine, _backend = _engine(url, writer=False)
    sql = f"SELECT {', '.join(_ASSIGNMENT_COLUMNS)} FROM {ASSIGNMENTS_TABLE}"
    params: dict[str, Any] = {}
    if run_date is not None:
        sql += " WHERE run_date = :d"
        params["d"] = run_date
    schema = {c: pl.String for c in _ASSIGNMENT_COLUMNS}
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(ASSIGNMENTS_TABLE):
                return pl.DataFrame(schema=schema)
            rows = [tuple(str(v) for v in r) for r in conn.execute(sa.text(sql), params)]
    finally:
        engine.dispose()
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    return frame.with_columns(pl.col("run_date").str.slice(0, 10).str.to_date("%Y-%m-%d")).sort(
        ["run_date", "experiment", "user_id"]
    )
