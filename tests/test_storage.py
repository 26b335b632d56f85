"""recsys_core.io on local disk and on real object-store servers on 127.0.0.1: an S3-compatible
server (moto_server), a GCS emulator (fake-gcs-server) and an Azure Blob emulator (Azurite).

The same operations on every backend: atomic writes (a reader sees the old or the new object),
create-if-absent and compare-and-swap (If-None-Match / If-Match on S3 and Azure, ifGenerationMatch
on GCS), the leased lock (held: a message naming the holder; a SIGKILLed holder's lease expires;
a holder that lost its lease publishes nothing more), the model registry's pointer protocol, and
faults: a missing bucket, wrong credentials, a network error in the middle of a write, an object
that disappears between listing and reading.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys_core.io import (
    CorruptFileError,
    PreconditionFailed,
    RunLockedError,
    StorageError,
    Warehouse,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    delete,
    exists,
    files_under,
    is_remote,
    location,
    put_if_absent,
    read_json,
    read_parquet,
    read_versioned,
    resolve_location,
    write_if_match,
)

D1, D2 = dt.date(2026, 1, 1), dt.date(2026, 1, 2)


_BUCKETS = {"s3": "s3_bucket", "gcs": "gcs_bucket", "azure": "azure_container"}


@pytest.fixture(params=["local", "s3", "gcs", "azure"])
def root(request, tmp_path):
    """A warehouse root on each backend."""
    if request.param == "local":
        return tmp_path / "wh"
    bucket = request.getfixturevalue(_BUCKETS[request.param])
    return f"{bucket}/wh"


@pytest.fixture(params=["s3", "gcs", "azure"])
def remote_root(request):
    """A warehouse root on each object store."""
    return f"{request.getfixturevalue(_BUCKETS[request.param])}/wh"


def _frame(n: int) -> pl.DataFrame:
    return pl.DataFrame({"user_id": [f"u{i}" for i in range(n)], "score": np.arange(n) / 7})


# ---- locations ---------------------------------------------------------------------------------
def test_location_kinds(tmp_path):
    assert location(tmp_path) == tmp_path
    assert location(f"file://{tmp_path}") == tmp_path
    assert not is_remote(location(str(tmp_path)))
    s3 = location("s3://bucket/prefix")
    assert is_remote(s3) and str(s3 / "a" / "b.json") == "s3://bucket/prefix/a/b.json"
    assert (s3 / "x.parquet").name == "x.parquet"


def test_missing_backend_package_is_one_clear_line(monkeypatch):
    import fsspec.registry  # noqa: F401 - the module (fsspec.registry is also a mapping)

    registry = sys.modules["fsspec.registry"]._registry  # classes imported so far
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # as if not installed: import fails
    for proto in ("gs", "gcs"):
        monkeypatch.delitem(registry, proto, raising=False)
    with pytest.raises(StorageError) as err:
        resolve_location("gs://some-bucket/wh")
    msg = str(err.value)
    assert "gs://some-bucket/wh" in msg and "pip install gcsfs" in msg and "\n" not in msg


# ---- writes and reads --------------------------------------------------------------------------
def test_parquet_and_json_round_trip_and_partition_listing(root):
    wh = Warehouse(root)
    atomic_write_parquet(_frame(5), wh.raw("events", D2))
    atomic_write_parquet(_frame(3), wh.raw("events", D1))
    atomic_write_json(wh.manifest(D1), {"b": 2, "a": [1, 2]})
    assert read_parquet(wh.raw("events", D1)).equals(_frame(3))
    assert read_json(wh.manifest(D1)) == {"a": [1, 2], "b": 2}
    assert wh.raw_dates("events") == [D1, D2]
    assert wh.clean_dates("events") == []
    assert exists(wh.raw("events", D1)) and not exists(wh.clean("events", D1))
    assert files_under(wh.root / "raw") == [
        "events/date=2026-01-01/part-0.parquet",
        "events/date=2026-01-02/part-0.parquet",
    ]


def test_failed_write_leaves_the_previous_object(root):
    wh = Warehouse(root)
    target = wh.recommendations(D1)
    atomic_write_parquet(_frame(4), target)
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a parquet file")
        raise RuntimeError("boom")
    assert read_parquet(target).equals(_frame(4))
    assert files_under(wh.root) == ["recommendations/run_date=2026-01-01/part-0.parquet"]


def test_what_a_run_wrote_is_read_back_from_memory_only_at_the_listed_version(
    remote_root, monkeypatch
):
    """clean reads back raw, train reads back clean: a partition this process uploaded is not
    fetched again while a fresh listing shows the version the upload returned; once another
    writer replaced it, the listing shows a new version and the new bytes are fetched."""
    from recsys_core.io import read_parquet_many

    wh = Warehouse(remote_root)
    target = wh.clean("events", D1)
    atomic_write_parquet(_frame(3), target)
    fetched = _count_reads(monkeypatch, location(target).fs)
    assert read_parquet_many([wh.clean("events", d) for d in wh.clean_dates("events")])[0].equals(
        _frame(3)
    )
    assert fetched == []
    location(target).fs.pipe_file(location(target).path, _parquet_bytes(_frame(5)))  # elsewhere
    assert read_parquet_many([wh.clean("events", d) for d in wh.clean_dates("events")])[0].equals(
        _frame(5)
    )
    assert len(fetched) == 1


def _count_reads(monkeypatch, fs) -> list[str]:
    """The object paths read through ``fs`` from now on (this test), one entry per object:
    fsspec's ``cat``/``cat_file`` (GCS, Azure; adlfs's ``cat`` calls its ``cat_file``, counted
    once) and obstore's GETs (S3, :mod:`recsys_core.io._s3`)."""
    from recsys_core.io import _s3

    read: list[str] = []
    depth = [0]

    def counting(real, paths_of):
        def call(path, *args, **kwargs):
            if not depth[0]:
                read.extend(paths_of(path))
            depth[0] += 1
            try:
                return real(path, *args, **kwargs)
            finally:
                depth[0] -= 1

        return call

    def paths(path) -> list[str]:
        return [str(p) for p in path] if isinstance(path, list) else [str(path)]

    for name in ("cat", "cat_file"):
        monkeypatch.setattr(fs, name, counting(getattr(fs, name), paths))
    real_get = _s3.get
    monkeypatch.setattr(_s3, "get", lambda fs_, key: read.append(key) or real_get(fs_, key))
    return read


def _parquet_bytes(df: pl.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


def test_missing_object_names_its_url(root):
    wh = Warehouse(root)
    with pytest.raises(FileNotFoundError, match="part-0.parquet"):
        read_parquet(wh.clean("events", D1))


# ---- conditional writes ------------------------------------------------------------------------
def test_put_if_absent_and_compare_and_swap(root):
    target = location(root) / "pointer.json"
    put_if_absent(target, b"one")
    with pytest.raises(PreconditionFailed):
        put_if_absent(target, b"two")
    data, version = read_versioned(target)
    assert data == b"one"
    write_if_match(target, b"three", version)
    with pytest.raises(PreconditionFailed):
        write_if_match(target, b"four", version)  # stale version: another writer won
    assert read_versioned(target)[0] == b"three"


def test_versions_come_from_the_writes_and_deletes_are_conditional(root):
    """create/replace return the version a later read sees; a delete at a stale version loses."""
    target = location(root) / "pointer.json"
    v1 = put_if_absent(target, b"one")
    assert read_versioned(target) == (b"one", v1)
    v2 = write_if_match(target, b"two", v1)
    assert v2 != v1 and read_versioned(target) == (b"two", v2)
    if not is_remote(target):
        return  # local disk: the caller holds flock; deletes are not conditional there
    if target.protocol == "gs":
        pytest.skip(
            "fake-gcs-server ignores ifGenerationMatch on DELETE (GCS honours it); the "
            "conditional create and replace above are checked on the emulator"
        )
    with pytest.raises(PreconditionFailed):
        delete(target, version=v1)
    assert read_versioned(target) == (b"two", v2)
    delete(target, version=v2)
    assert read_versioned(target) is None
    with pytest.raises(PreconditionFailed):
        write_if_match(target, b"three", v2)  # compare-and-swap on a deleted object loses
    assert not exists(target)


def test_put_if_absent_has_exactly_one_winner(root):
    target = location(root) / "race.json"
    wins: list[int] = []

    def attempt(i: int) -> None:
        try:
            put_if_absent(target, str(i).encode())
            wins.append(i)
        except PreconditionFailed:
            pass

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert read_versioned(target)[0] == str(wins[0]).encode()


# ---- the lock ----------------------------------------------------------------------------------
def test_lock_held_names_the_holder_then_is_free(root):
    wh = Warehouse(root)
    with wh.lock("run_date=2026-01-01"):
        held = f"pid {os.getpid()}|pid={os.getpid()}"
        with pytest.raises(RunLockedError, match=held), wh.lock("run_date=2026-01-01"):
            pass
        with wh.lock("run_date=2026-01-02"):  # another date is independent
            pass
    with wh.lock("run_date=2026-01-01"):
        pass


def test_s3_lock_survives_its_lease_while_renewed(s3_bucket, monkeypatch):
    monkeypatch.setenv("RECSYS_LOCK_LEASE_SECONDS", "4")
    wh = Warehouse(f"{s3_bucket}/wh")
    with wh.lock("d"):
        time.sleep(9)  # > 2 leases: the heartbeat renewed it
        with pytest.raises(RunLockedError, match="lease until"), wh.lock("d"):
            pass


def test_s3_lock_of_a_killed_holder_expires(s3_bucket, tmp_path):
    """A holder SIGKILLed inside the lock blocks the date until its lease ends, never longer."""
    script = tmp_path / "holder.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal, sys
            from recsys_core.io import Warehouse
            with Warehouse("{s3_bucket}/wh").lock("d"):
                print("locked", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            """
        )
    )
    env = {**os.environ, "RECSYS_LOCK_LEASE_SECONDS": "8"}  # generous: a loaded machine
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=120)
    assert out.returncode == -9 and b"locked" in out.stdout
    wh = Warehouse(f"{s3_bucket}/wh")
    with pytest.raises(RunLockedError, match="pid"), wh.lock("d"):
        pass
    time.sleep(8.5)
    with wh.lock("d"):  # taken over after the lease
        pass
    assert not exists(wh.root / "_locks" / "d.lock")


def _lock_body(holder: str, expires: dt.datetime) -> bytes:
    return json.dumps(
        {
            "holder": holder,
            "token": "someone-else",
            "acquired_at": "2026-01-01T00:00:00+00:00",
            "expires_at": expires.isoformat(timespec="seconds"),
        }
    ).encode()


def test_expired_lock_is_taken_over_live_one_is_not(remote_root):
    wh = Warehouse(remote_root)
    lock = wh.root / "_locks" / "d.lock"
    now = dt.datetime.now(dt.UTC)
    put_if_absent(lock, _lock_body("pid 7 on live-host", now + dt.timedelta(hours=1)))
    with pytest.raises(RunLockedError, match=r"pid 7 on live-host"), wh.lock("d"):
        pass
    delete(lock)
    put_if_absent(lock, _lock_body("pid 8 on dead-host", now - dt.timedelta(seconds=1)))
    with wh.lock("d"):
        assert json.loads(read_versioned(lock)[0])["holder"].startswith(f"pid {os.getpid()} ")
    assert not exists(lock)


# ---- a lost lease stops the run's writes -------------------------------------------------------
@pytest.mark.parametrize("how", ["taken over", "deleted"])
def test_a_run_that_lost_its_lease_publishes_nothing_more(remote_root, monkeypatch, how):
    """Another holder takes the lock over (or the lock object is deleted) while a run holds it:
    the heartbeat finds out, and every later write of the run raises LeaseLostError naming the
    lock URL and the new holder; nothing it tries to write after that point appears."""
    from recsys_core.io import LeaseLostError, atomic_write_text, delete_tree
    from recsys_core.registry import ModelRegistry

    monkeypatch.setenv("RECSYS_LOCK_LEASE_SECONDS", "2")  # a heartbeat every 0.67 s
    wh = Warehouse(remote_root)
    lock = wh.root / "_locks" / "d.lock"
    reg = ModelRegistry(wh.models_dir)
    with wh.lock("d"):
        atomic_write_json(wh.manifest(D1), {"before": True})  # published while held
        reg.register(_fitted(), model_id="pop-1", name="popularity", params={}, data_window={},
                     metrics={}, code_version="t", embedding_model_id=None, run_date=D1)  # fmt: skip
        _, version = read_versioned(lock)
        if how == "taken over":
            later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
            write_if_match(lock, _lock_body("pid 4242 on other-host", later), version)
        else:
            delete(lock, version=None)
        time.sleep(2.5)  # > the lease: lost, by the heartbeat or by the lease running out
        attempts = {
            "parquet": lambda: atomic_write_parquet(_frame(3), wh.recommendations(D1)),
            "json": lambda: atomic_write_json(wh.run_marker(D1), {"done": True}),
            "text": lambda: atomic_write_text(wh.report_dir(D1) / "report.html", "<html/>"),
            "create": lambda: put_if_absent(wh.root / "x.json", b"{}"),
            "promote": lambda: reg.promote("pop-1", "after the lease was lost"),
            "delete": lambda: delete(wh.manifest(D1)),
            "delete_tree": lambda: delete_tree(wh.root / "manifests"),
        }
        caught: list[BaseException] = []

        def in_a_plain_thread() -> None:  # a thread pool inside a step: no run context
            try:
                atomic_write_json(wh.evaluation(D1), {})
            except BaseException as exc:
                caught.append(exc)

        bare = threading.Thread(target=in_a_plain_thread)
        bare.start()
        bare.join()
        assert len(caught) == 1 and isinstance(caught[0], LeaseLostError), caught
        for name, attempt in attempts.items():
            with pytest.raises(LeaseLostError) as err:
                attempt()
            msg = str(err.value)
            assert f"lost the lock {lock}" in msg, (name, msg)
            assert ("pid 4242 on other-host" if how == "taken over" else "is gone") in msg
    assert files_under(wh.root) == sorted(
        ["manifests/date=2026-01-01.json"]
        + [f"models/{f}" for f in files_under(wh.models_dir)]
        + (["_locks/d.lock"] if how == "taken over" else [])
    )
    assert not any(f.endswith("champion.json") for f in files_under(wh.root))
    if how == "taken over":  # the new holder's lock is left alone on release
        assert json.loads(read_versioned(lock)[0])["holder"] == "pid 4242 on other-host"


def test_a_lease_that_ran_out_unrenewed_fences_writes():
    """No heartbeat got through for a whole lease (a paused machine, a partition): the run can
    no longer know it holds the lock, so it stops writing."""
    from recsys_core.io import LeaseLostError
    from recsys_core.io._fence import Lease, check_leases, holding

    lease = Lease("s3://b/wh/_locks/d.lock", 0.2, root="s3://b/wh")
    with holding(lease):
        check_leases("s3://b/wh/x")  # within the lease
        time.sleep(0.3)
        with pytest.raises(
            LeaseLostError, match=r"lost the lock s3://b/wh/_locks/d.lock: .*ran out"
        ):
            check_leases("s3://b/wh/x")
    check_leases("s3://b/wh/x")  # outside the holder's context: not fenced


# ---- registry ----------------------------------------------------------------------------------
def _fitted():
    from recsys_core.interactions import Interactions
    from recsys_core.models import get_model_class

    events = pl.DataFrame(
        {
            "user_id": ["a", "a", "b", "b", "c", "c"],
            "item_id": ["x", "y", "y", "z", "x", "z"],
            "event_type": ["click"] * 6,
            "value": [1.0] * 6,
            "timestamp": [dt.datetime(2026, 1, 1)] * 6,
        }
    )
    return get_model_class("popularity")({}).fit(Interactions.from_frame(events))


#: What ``ModelRegistry.register`` records beside the model, for the tests that need any entry.
_ENTRY: dict = dict(
    name="popularity",
    params={},
    data_window={},
    metrics={},
    code_version="t",
    embedding_model_id=None,
    run_date=D1,
)


def test_pending_clean_dates_tell_same_second_stamps_apart(remote_root, tmp_path, monkeypatch):
    """Object stores stamp objects to the second, so a raw partition and the manifest cleaned
    from it usually look equally old. Such a date is pending only if its raw object changed since
    (clean records the raw versions it cleaned from in one index object): a cleaned date is not
    cleaned again every night, and a same-second re-ingest is not missed."""
    from recsys_core.ingest import clean_days, ingest, pending_clean_dates

    wh = Warehouse(remote_root)
    events = tmp_path / "landing" / "events" / f"date={D1.isoformat()}" / "a.csv"
    events.parent.mkdir(parents=True)
    header = "user_id,item_id,event_type,timestamp,value,event_id\n"
    events.write_text(header + "u1,i1,view,2026-01-01T10:00:00Z,,e1\n")
    ingest(tmp_path / "landing", wh, D1)
    clean_days(wh, [D1])
    index = read_json(wh.raw_versions_index)
    assert set(index) == {D1.isoformat()} and set(index[D1.isoformat()]) == {"events"}
    assert "raw_versions" not in read_json(wh.manifest(D1))  # manifests are as on local disk
    real = Warehouse.partition_stats

    def same_second(self, folder):  # as if every object were written in one second
        return {d: s._replace(mtime_ns=0) for d, s in real(self, folder).items()}

    monkeypatch.setattr(Warehouse, "partition_stats", same_second)
    assert pending_clean_dates(wh, until=D1) == []

    events.write_text(
        header + "u1,i1,view,2026-01-01T10:00:00Z,,e1\nu2,i1,view,2026-01-01T11:00:00Z,,e2\n"
    )
    ingest(tmp_path / "landing", wh, D1)  # a late file: the raw object changes
    assert pending_clean_dates(wh, until=D1) == [D1]
    clean_days(wh, [D1])
    assert pending_clean_dates(wh, until=D1) == []

    delete(wh.raw_versions_index)  # a clean killed before it recorded the versions
    assert pending_clean_dates(wh, until=D1) == [D1]

    atomic_write_json(wh.raw_versions_index, {})  # a damaged index names itself
    wh.raw_versions_index.write_bytes(b"{not json")
    for check in (lambda: pending_clean_dates(wh, until=D1), lambda: clean_days(wh, [D1])):
        with pytest.raises(CorruptFileError, match=r"_raw_versions\.json: corrupt JSON"):
            check()


def _items_partition(day: dt.date, rows: list[tuple]) -> pl.DataFrame:
    from recsys_core.schema import CLEAN_ITEMS_SCHEMA

    return pl.DataFrame(
        [
            (item, f"{item} on {day}", None, None, None, updated, day, f"items/{day}.csv", row)
            for row, (item, updated) in enumerate(rows, start=1)
        ],
        schema=CLEAN_ITEMS_SCHEMA,
        orient="row",
    )


def _record_partition_reads(monkeypatch) -> list[list[dt.date]]:
    """The dates of every ``read_dated_parquet`` call the loaders make, one list per call."""
    from recsys_core.ingest import _load

    read_days: list[list[dt.date]] = []
    real_read = _load.read_dated_parquet
    monkeypatch.setattr(
        _load,
        "read_dated_parquet",
        lambda files, *a: read_days.append(sorted(files)) or real_read(files, *a),
    )
    return read_days


def test_catalog_checkpoint_gives_the_full_read_and_reads_only_new_partitions(
    remote_root, monkeypatch, caplog
):
    """On an object store load_catalog starts from the checkpoint of the longest prefix of the
    item partitions whose versions it names, and reads only the partitions after it. Every case
    equals a read of every partition: a new day, an earlier as_of, a short history, a re-cleaned
    (rewritten) partition, a damaged or deleted checkpoint, and a reader that may not write."""
    from recsys_core.ingest import load_catalog
    from recsys_core.ingest._load import CATALOG_COLUMNS, _item_winners, read_dated_parquet
    from recsys_core.io import forget_cached_objects
    from recsys_core.schema import CLEAN_ITEMS_SCHEMA

    wh = Warehouse(remote_root)
    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    days = [D1 + dt.timedelta(days=i) for i in range(8)]
    for i, day in enumerate(days):  # overlapping ids, null and tied updated_at across days
        rows = [
            (f"i{j}", None if j % 3 == 0 else t + dt.timedelta(hours=j % 2))
            for j in range(i, i + 4)
        ]
        atomic_write_parquet(_items_partition(day, rows), wh.clean("items", day))

    def full(as_of: dt.date) -> pl.DataFrame:
        files = {d: wh.clean("items", d) for d in wh.clean_dates("items") if d <= as_of}
        return _item_winners(read_dated_parquet(files, CLEAN_ITEMS_SCHEMA)).select(CATALOG_COLUMNS)

    read_days = _record_partition_reads(monkeypatch)

    def fresh(as_of: dt.date) -> pl.DataFrame:  # as a new worker: nothing in memory
        forget_cached_objects()
        read_days.clear()
        return load_catalog(wh, as_of)

    def checkpoints() -> list[str]:
        return files_under(wh.checkpoints("catalog"))

    assert fresh(days[4]).equals(full(days[4])) and read_days == [days[:5]]
    assert len(checkpoints()) == 1
    assert fresh(days[3]).equals(full(days[3])) and read_days == [days[:4]]
    assert len(checkpoints()) == 2  # an earlier as_of deletes nothing
    assert fresh(days[2]).equals(full(days[2])) and read_days == [days[:3]]
    assert len(checkpoints()) == 2  # three partitions are read directly
    assert fresh(days[7]).equals(full(days[7])) and read_days == [days[5:]]
    assert len(checkpoints()) == 1  # the whole chain: the others are superseded
    read_days.clear()
    assert load_catalog(wh, days[7]).equals(full(days[7])) and read_days == []  # from memory

    # a re-clean rewrites day 2 (a changed title): every checkpoint from day 2 on is stale
    rows = [("i1", t + dt.timedelta(days=9)), ("i9", None)]
    atomic_write_parquet(_items_partition(days[1], rows), wh.clean("items", days[1]))
    got = fresh(days[7])
    assert got.equals(full(days[7])) and read_days == [days]
    assert got.filter(pl.col("item_id") == "i9").height == 1
    assert len(checkpoints()) == 1

    # a damaged checkpoint is rebuilt; a deleted one too
    (wh.checkpoints("catalog") / checkpoints()[0]).write_bytes(b"not parquet")
    assert fresh(days[7]).equals(full(days[7])) and read_days == [days]
    delete(wh.checkpoints("catalog") / checkpoints()[0])
    assert fresh(days[7]).equals(full(days[7])) and read_days == [days]

    # a reader that may not write still gets the catalog, and says the checkpoint was not kept
    from recsys_core.io import _checkpoint

    def refuse(*_a, **_k):
        raise PermissionError("AccessDenied")

    monkeypatch.setattr(_checkpoint, "atomic_write_parquet", refuse)
    delete(wh.checkpoints("catalog") / checkpoints()[0])
    with caplog.at_level("WARNING", logger="recsys_core.io._checkpoint"):
        assert fresh(days[7]).equals(full(days[7]))
    assert "checkpoint not updated" in caplog.text and checkpoints() == []


def _events_partition(day: dt.date, users: int) -> pl.DataFrame:
    from recsys_core.schema import CLEAN_EVENTS_SCHEMA

    t = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
    return pl.DataFrame(
        [
            (f"e{day}-{u}", f"u{u}", f"i{u % 3}", "click", t, 1.0, day, f"events/{day}.csv", u)
            for u in range(users)
        ],
        schema=CLEAN_EVENTS_SCHEMA,
        orient="row",
    )


def test_events_checkpoint_gives_the_full_read_and_is_rewritten_every_few_partitions(
    remote_root, monkeypatch
):
    """On an object store the whole event history starts from a checkpoint, written again only
    once EVENTS_REWRITE_AFTER partitions follow it (each rewrite copies every event): a fresh
    worker reads one checkpoint and the few partitions after it; one that holds the partitions
    reads them and writes it. A read of an earlier prefix
    (the finalize step's history before tonight) or of a window (``since``) writes nothing.
    Every case equals a read of every partition."""
    from recsys_core.ingest import load_clean_events
    from recsys_core.ingest._load import EVENTS_REWRITE_AFTER, read_dated_parquet
    from recsys_core.io import forget_cached_objects
    from recsys_core.schema import CLEAN_EVENTS_SCHEMA

    assert EVENTS_REWRITE_AFTER == 7
    wh = Warehouse(remote_root)
    days = [D1 + dt.timedelta(days=i) for i in range(16)]
    for i, day in enumerate(days[:9]):
        atomic_write_parquet(_events_partition(day, 2 + i % 3), wh.clean("events", day))

    def full(until: dt.date, since: dt.date | None = None) -> pl.DataFrame:
        files = {
            d: wh.clean("events", d)
            for d in wh.clean_dates("events")
            if d <= until and (since is None or d >= since)
        }
        return read_dated_parquet(files, CLEAN_EVENTS_SCHEMA)

    read_days = _record_partition_reads(monkeypatch)

    def fresh(until: dt.date, **kw) -> pl.DataFrame:  # as a new worker: nothing in memory
        forget_cached_objects()
        read_days.clear()
        return load_clean_events(wh, until, **kw)

    def checkpoints() -> list[str]:
        return files_under(wh.checkpoints("events"))

    # a worker that holds the partitions (it has just written them: a cold night's catch-up)
    # reads them, and writes the checkpoint all the same, for the next night's fresh worker
    assert load_clean_events(wh, days[8]).equals(full(days[8])) and read_days == [days[:9]]
    assert len(checkpoints()) == 1
    first = checkpoints()
    assert fresh(days[5]).equals(full(days[5])) and read_days == [days[:6]]
    assert checkpoints() == first  # six partitions are read directly
    assert fresh(days[8]).equals(full(days[8])) and read_days == [[]]  # the checkpoint alone

    # an earlier prefix, with two columns (the history before tonight): nothing written
    ids = ("user_id", "item_id")
    assert fresh(days[7], columns=ids).equals(full(days[7]).select(ids))
    assert read_days == [days[:8]] and checkpoints() == first
    assert fresh(days[8], since=days[7]).equals(full(days[8], days[7]))  # a window: direct
    assert read_days == [days[7:9]] and checkpoints() == first

    # new nights: the checkpoint and the partitions after it, until seven follow it
    for n in range(9, 16):
        atomic_write_parquet(_events_partition(days[n], 3), wh.clean("events", days[n]))
        assert fresh(days[n]).equals(full(days[n])) and read_days == [days[9 : n + 1]]
        if n < 15:
            assert checkpoints() == first
    assert len(checkpoints()) == 1 and checkpoints() != first  # rewritten; the old one deleted
    got = fresh(days[15])
    assert read_days == [[]]  # the checkpoint alone
    read_days.clear()
    again = load_clean_events(wh, days[15], columns=ids)
    assert read_days == []  # the checkpoint, from memory
    assert got.equals(full(days[15])) and again.equals(full(days[15]).select(ids))

    # a re-clean rewrites day 3: the checkpoint is stale, every partition is read again
    atomic_write_parquet(_events_partition(days[2], 5), wh.clean("events", days[2]))
    assert fresh(days[15]).equals(full(days[15])) and read_days == [days]

    # a history too big to keep decoded is fetched once per process all the same (train,
    # evaluate and the report each load it): its bytes are held like a partition's
    from recsys_core.io import _checkpoint

    monkeypatch.setattr(_checkpoint, "KEPT_BYTES", 0)
    fetched = _count_reads(monkeypatch, location(wh.root).fs)
    want = full(days[15])
    forget_cached_objects()
    for _ in range(3):
        assert load_clean_events(wh, days[15]).equals(want)
    assert len([p for p in fetched if "/checkpoints/events/" in p]) == 1


def test_the_clean_steps_id_look_up_reads_the_events_checkpoint_on_a_fresh_worker(
    remote_root, tmp_path, monkeypatch
):
    """On a fresh worker the clean step's look-up of earlier event ids (the last
    ``event_id_horizon_days``) and of the near-duplicate anchors comes from the events
    checkpoint, not from one read per earlier date, and cleans exactly what a local warehouse
    cleans: ids kept on earlier dates (conflicts naming the kept rows), a near repeat of the
    previous day's last event."""
    from recsys_core.config import Settings
    from recsys_core.ingest import load_clean_events
    from recsys_core.io import forget_cached_objects
    from recsys_core.pipeline import clean_step, ingest_step

    header = "user_id,item_id,event_type,timestamp,value,event_id\n"
    days = [D1 + dt.timedelta(days=i) for i in range(10)]

    def drop(day: dt.date, rows: list[str]) -> None:
        folder = tmp_path / "landing" / "events" / f"date={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "a.csv").write_text(header + "".join(r + "\n" for r in rows))

    def ev(day: dt.date, hms: str, eid: str, user: str = "u", item: str = "i") -> str:
        return f"{user},{item},view,{day.isoformat()}T{hms}Z,,{eid}"

    for n, day in enumerate(days[:9]):
        drop(day, [ev(day, "10:00:00", f"e{n}", user=f"u{n}"), ev(day, "23:59:50", f"f{n}")])
    last = days[9]
    drop(
        last,
        [
            ev(last, "10:00:00", "e2", user="w"),  # day 3's id, other content: a conflict
            ev(last, "11:00:00", "e5", user="v"),  # day 6's too
            ev(last, "00:00:05", ""),  # 15 s after day 9's last event: a near duplicate
            ev(last, "12:00:00", "g"),  # new
        ],
    )
    outs = {}
    for name, root in (("local", tmp_path / "local-wh"), ("remote", remote_root)):
        s = Settings(landing=tmp_path / "landing", warehouse=root)
        wh = Warehouse(root)
        for day in days[:9]:
            ingest_step(s, day)
            clean_step(s, day)
        load_clean_events(wh, days[8])  # the training window: writes the checkpoint remotely
        forget_cached_objects()  # the next night on a fresh worker
        read_days = _record_partition_reads(monkeypatch)
        ingest_step(s, last)
        clean_step(s, last)
        monkeypatch.undo()
        outs[name] = (wh, read_days)

    (local, _), (remote, read_days) = outs["local"], outs["remote"]
    assert files_under(remote.checkpoints("events"))
    assert all(set(r) <= {last} for r in read_days), read_days  # no earlier partition read
    m_local, m_remote = (read_json(w.manifest(last)) for w in (local, remote))
    assert (
        m_remote["events"]
        == m_local["events"]
        == {
            "ingested": 4,
            "clean": 1,
            "duplicates": 1,
            "quarantined": 2,
        }
    )
    assert m_remote["reasons"] == m_local["reasons"] == {"conflicting_event_id": 2}
    assert m_remote["duplicate_kinds"]["events_near"] == 1
    for path in (lambda w: w.clean("events", last), lambda w: w.quarantine(last)):
        assert read_parquet(path(remote)).equals(read_parquet(path(local)))

    # any dates and columns, some from the checkpoint, are what those partitions hold
    from recsys_core.ingest._load import read_clean_events_of, read_dated_parquet
    from recsys_core.schema import CLEAN_EVENTS_SCHEMA

    some = [days[1], days[4], days[8], last]
    for schema in (CLEAN_EVENTS_SCHEMA, {"event_id": pl.String(), "_source_row": pl.Int64()}):
        forget_cached_objects()
        want = read_dated_parquet({d: remote.clean("events", d) for d in some}, schema, "_d")
        forget_cached_objects()
        read_days = _record_partition_reads(monkeypatch)
        assert read_clean_events_of(remote, some, schema, "_d").equals(want)
        assert read_days == [[last]]  # the others from the checkpoint


def test_events_on_local_disk_keep_no_checkpoint(tmp_path):
    from recsys_core.ingest import load_clean_events

    wh = Warehouse(tmp_path / "wh")
    days = [D1 + dt.timedelta(days=i) for i in range(9)]
    for day in days:
        atomic_write_parquet(_events_partition(day, 2), wh.clean("events", day))
    assert load_clean_events(wh, days[-1]).height == 18
    assert not (tmp_path / "wh" / "checkpoints").exists()


def test_checkpoints_held_in_memory_are_bounded(monkeypatch):
    """At most KEPT_BYTES of checkpoints stay in memory, the least recently used dropped first;
    one larger than half of it is not held at all (read again next time)."""
    from collections import OrderedDict

    from recsys_core.io import _checkpoint

    monkeypatch.setattr(_checkpoint, "KEPT_BYTES", 3000)
    monkeypatch.setattr(_checkpoint, "_KEPT", OrderedDict())
    small = pl.DataFrame({"x": list(range(100))})  # 800 bytes
    for key in "abc":
        _checkpoint._keep(key, small)
    assert _checkpoint._kept("a") is small  # now the most recently used
    _checkpoint._keep("d", small)  # 3,200 bytes: the least recently used goes
    assert _checkpoint._kept("b") is None
    assert all(_checkpoint._kept(k) is small for k in "acd")
    _checkpoint._keep("e", pl.DataFrame({"x": list(range(200))}))  # 1,600 > 1,500
    assert _checkpoint._kept("e") is None and _checkpoint._kept("a") is small


def test_objects_held_in_memory_are_bounded(monkeypatch):
    """The bytes of read and written objects: at most BLOB_CACHE_BYTES, the least recently used
    dropped first, a version put again counted once; none larger than BLOB_MAX_BYTES, and none
    without a version (nothing would tell a stale copy)."""
    from collections import OrderedDict

    from recsys_core.io import _storage

    monkeypatch.setattr(_storage, "BLOB_CACHE_BYTES", 3000)
    monkeypatch.setattr(_storage, "BLOB_MAX_BYTES", 1500)
    monkeypatch.setattr(_storage, "_BLOBS", OrderedDict())
    monkeypatch.setattr(_storage, "_BLOB_BYTES", [0])
    put, get = _storage._blob_cache_put, _storage._blob_cache_get
    for key in "abc":
        put(f"s3://b/{key}", "v1", bytes(800))
    put("s3://b/c", "v1", bytes(800))  # the same version again: still 2,400 bytes
    assert get("s3://b/a", "v1") is not None  # now the most recently used
    put("s3://b/d", "v1", bytes(800))  # 3,200 bytes: the least recently used (b) goes
    assert get("s3://b/b", "v1") is None
    assert all(get(f"s3://b/{k}", "v1") is not None for k in "acd")
    assert _storage._BLOB_BYTES == [2400]
    assert get("s3://b/a", "v2") is None  # another version is another object
    put("s3://b/e", "v1", bytes(1600))  # over BLOB_MAX_BYTES: not held, nothing dropped
    put("s3://b/f", None, bytes(10))  # no version: not held
    assert get("s3://b/e", "v1") is None and _storage._BLOB_BYTES == [2400]
    put("s3://b/g", "v1", bytes(1500))  # 3,900: a and c, the least recently used, go
    assert [k for k in "acdg" if get(f"s3://b/{k}", "v1") is not None] == ["d", "g"]
    assert _storage._BLOB_BYTES == [2300]
    _storage.forget_cached_objects()
    assert _storage._BLOB_BYTES == [0] and get("s3://b/d", "v1") is None


def test_catalog_on_local_disk_keeps_no_checkpoint(tmp_path):
    from recsys_core.ingest import load_catalog

    wh = Warehouse(tmp_path / "wh")
    atomic_write_parquet(_items_partition(D1, [("i1", None)]), wh.clean("items", D1))
    assert load_catalog(wh, D1)["item_id"].to_list() == ["i1"]
    assert not (tmp_path / "wh" / "checkpoints").exists()


def test_concurrent_cleans_record_every_raw_version(remote_root):
    from concurrent.futures import ThreadPoolExecutor

    from recsys_core.ingest import read_raw_versions, record_raw_versions

    wh = Warehouse(remote_root)
    days = [D1 + dt.timedelta(days=i) for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda d: record_raw_versions(wh, {d: {"events": f"e-{d}"}}), days))
    assert read_raw_versions(wh) == {d.isoformat(): {"events": f"e-{d}"} for d in days}


def test_a_step_lists_each_prefix_once_and_sees_its_own_writes(remote_root, monkeypatch):
    """listing_snapshot: within one step a prefix is listed once; this process's writes and
    deletes under it (from any thread) make the next listing fresh; another process's write
    shows from the next step on."""
    from concurrent.futures import ThreadPoolExecutor

    from recsys_core.io import _storage, listing_snapshot

    root = location(remote_root)
    atomic_write_json(root / "t" / "a.json", {})
    listings = []
    real = _storage._list
    monkeypatch.setattr(
        _storage, "_list", lambda loc, base: listings.append(base) or real(loc, base)
    )
    with listing_snapshot():
        assert files_under(root / "t") == ["a.json"]
        assert files_under(root / "t") == ["a.json"] and len(listings) == 1
        with ThreadPoolExecutor(1) as pool:  # a write on a pool thread of the step
            pool.submit(atomic_write_json, root / "t" / "sub" / "b.json", {}).result()
        assert files_under(root / "t") == ["a.json", "sub/b.json"] and len(listings) == 2
        delete(root / "t" / "a.json")
        assert files_under(root / "t") == ["sub/b.json"] and len(listings) == 3
        # another process writes: not seen by this step's snapshot ...
        fs, key = root.fs, (root / "t" / "c.json").path
        fs.pipe_file(key, b"{}")
        assert files_under(root / "t") == ["sub/b.json"] and len(listings) == 3
        with listing_snapshot():  # nested: the same snapshot
            assert files_under(root / "t") == ["sub/b.json"] and len(listings) == 3
    # ... but by the next step, and outside any step every listing is a request
    assert files_under(root / "t") == ["c.json", "sub/b.json"] and len(listings) == 4
    assert files_under(root / "t") == ["c.json", "sub/b.json"] and len(listings) == 5


def test_prefetched_listings_serve_the_step(remote_root, monkeypatch):
    """prefetch_listings lists several prefixes at once on pool threads, into the step's
    snapshot: the step's own listings of them then make no request. Outside a step, and for
    local folders, it lists nothing."""
    import threading

    from recsys_core.io import _storage, listing_snapshot, prefetch_listings

    root = location(remote_root)
    for name in ("a/1.json", "b/2.json", "c/3.json"):
        atomic_write_json(root / name, {})
    listings = []
    real = _storage._list
    monkeypatch.setattr(
        _storage,
        "_list",
        lambda loc, base: (
            listings.append((base, threading.current_thread().name)) or real(loc, base)
        ),
    )
    prefetch_listings(root / "a", root / "b")  # no step: nothing
    assert listings == []
    with listing_snapshot():
        prefetch_listings(root / "a", root / "b", root / "c", "/tmp/not-listed")
        assert len(listings) == 3
        assert all(thread.startswith("recsys-list") for _, thread in listings)
        assert files_under(root / "a") == ["1.json"] and files_under(root / "c") == ["3.json"]
        assert files_under(root / "b") == ["2.json"] and len(listings) == 3
    with listing_snapshot():  # a missing prefix is an empty listing, as it would be later
        prefetch_listings(root / "none", root / "a")
        assert files_under(root / "none") == [] and len(listings) == 5


def test_registry_on_each_backend(root):
    from recsys_core.registry import ModelRegistry

    reg = ModelRegistry(location(root) / "models")
    model = _fitted()
    common = dict(
        name="popularity",
        params={},
        data_window={},
        metrics={"ndcg": 0.5},
        code_version="t",
        embedding_model_id=None,
        run_date=D1,
    )
    reg.register(model, model_id="pop-1", **common)
    reg.register(model, model_id="pop-2", **common)
    reg.register(model, model_id="pop-2", **common)  # idempotent re-run of the same night
    assert reg.ids() == ["pop-1", "pop-2"]
    reg.promote("pop-1", "first")
    reg.promote("pop-2", "better")
    assert reg.champion()["model_id"] == "pop-2"
    loaded = reg.load_model("pop-2", cached=True)
    assert reg.load_model("pop-2", cached=True) is loaded  # once per process
    users = ["a", "b"]
    assert loaded.recommend(users, 2).equals(model.recommend(users, 2))
    reg.rollback("bad night")
    assert reg.champion()["model_id"] == "pop-1"
    assert [h["action"] for h in reg.history()] == ["promote", "promote", "rollback"]
    if is_remote(location(root)):  # one upload folder per id: the old one was collected
        assert sum(1 for f in files_under(reg.root / "pop-2") if f.endswith("model.json")) == 1


def test_a_model_loads_without_listing_its_folder(remote_root, monkeypatch):
    """The entry names the upload folder's files and the versions their uploads returned: a
    load lists nothing, and in the process that uploaded them fetches nothing either (a fresh
    worker fetches each file once). An entry written before the names were recorded lists the
    folder, as it did."""
    from recsys_core.io import _storage, forget_cached_objects
    from recsys_core.registry import ModelRegistry

    reg = ModelRegistry(f"{remote_root}/models")
    model = _fitted()
    entry = reg.register(model, model_id="pop-1", **_ENTRY)
    assert sorted(entry["file_versions"]) == ["arrays.npz", "model.json"]
    listings = []
    real_list = _storage._list
    monkeypatch.setattr(
        _storage, "_list", lambda loc, base: listings.append(base) or real_list(loc, base)
    )
    reads = _count_reads(monkeypatch, reg.root.fs)  # the client every model file goes through
    users = ["a", "b"]
    expected = model.recommend(users, 2)
    assert reg.load_model("pop-1", entry=entry).recommend(users, 2).equals(expected)
    assert listings == [] and reads == []  # uploaded by this process: held in memory
    forget_cached_objects()  # as a fresh worker
    assert reg.load_model("pop-1").recommend(users, 2).equals(expected)
    files = sorted(k.rsplit("/", 1)[1] for k in reads if f"/{entry['files']}/" in k)
    assert listings == [] and files == ["arrays.npz", "model.json"]  # both files, once each
    legacy = {k: v for k, v in reg.entry("pop-1").items() if k != "file_versions"}
    assert reg.load_model("pop-1", entry=legacy).recommend(users, 2).equals(expected)
    assert len(listings) == 1
    # a file the entry names but that is gone (an upload folder collected meanwhile): its URL
    delete(reg.root / "pop-1" / entry["files"] / "arrays.npz")
    forget_cached_objects()
    with pytest.raises(FileNotFoundError, match=rf"pop-1/{entry['files']}/arrays\.npz.*gone"):
        reg.load_model("pop-1")


def test_concurrent_promotions_keep_every_change(remote_root):
    """Compare-and-swap on champion.json: 6 concurrent promotions, none lost from the chain."""
    from recsys_core.registry import ModelRegistry

    reg = ModelRegistry(f"{remote_root}/models")
    model = _fitted()
    ids = [f"pop-{i}" for i in range(6)]
    for mid in ids:
        reg.register(model, model_id=mid, **_ENTRY)
    threads = [threading.Thread(target=reg.promote, args=(mid, "race")) for mid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pointer = json.loads(read_versioned(reg.root / "champion.json")[0])
    assert sorted([*pointer["previous"], pointer["model_id"]]) == ids
    assert len(reg.history()) == 6


# ---- faults ------------------------------------------------------------------------------------
def test_missing_bucket_is_named(remote_root):
    scheme = remote_root.split("://")[0]
    wh = Warehouse(f"{scheme}://no-such-bucket-recsys/wh")
    with pytest.raises(StorageError, match=rf"{scheme}://no-such-bucket-recsys/wh/.*'no-such"):
        atomic_write_json(wh.manifest(D1), {})
    with pytest.raises(StorageError, match="no-such-bucket-recsys.*does not exist"), wh.lock("d"):
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh_s3_clients():
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


def test_wrong_credentials_are_explained(s3_endpoint, monkeypatch):
    """A server that checks signatures (moto with authentication on) refuses unknown keys."""
    port = _free_port()
    server = Path(sys.executable).with_name("moto_server")
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        _fresh_s3_clients()
        with pytest.raises(StorageError) as err:
            atomic_write_json(Warehouse("s3://some-bucket/wh").manifest(D1), {})
        msg = str(err.value)
        assert "s3://some-bucket/wh/manifests/date=2026-01-01.json" in msg
        assert "access denied" in msg and "AWS_ACCESS_KEY_ID" in msg
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        _fresh_s3_clients()


def test_missing_credentials_are_explained_at_once(s3_endpoint, monkeypatch, tmp_path):
    """No credentials anywhere (no keys, no profile, no role): one line naming the URL and
    where credentials come from, after one attempt (retrying cannot help)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to ask for
    _fresh_s3_clients()
    try:
        with pytest.raises(StorageError) as err:
            atomic_write_json(Warehouse("s3://some-bucket/wh").manifest(D1), {})
    finally:
        _fresh_s3_clients()
    msg = str(err.value)
    assert msg.startswith("s3://some-bucket/wh/manifests/date=2026-01-01.json: write failed: ")
    assert "no credentials found" in msg and "AWS_PROFILE" in msg and "\n" not in msg
    assert "attempts" not in msg


def test_s3_stores_take_the_s3fs_clients_configuration(s3_endpoint, s3_bucket, monkeypatch):
    """The obstore store of a bucket talks to the endpoint, as the principal, that the s3fs client
    of the same location resolved: a custom endpoint as given (bucket in the path); AWS itself
    with the bucket in the host and in the bucket's own region (one HeadBucket, as botocore
    follows it); credentials asked again within 5 minutes, sooner when they expire sooner."""
    import datetime as dt

    import s3fs

    from recsys_core.io import _s3

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    store = _s3.store_for(fs, s3_bucket.removeprefix("s3://"))
    assert _s3.store_for(fs, s3_bucket.removeprefix("s3://")) is store  # one per bucket
    assert store.config["endpoint"] == s3_endpoint
    assert "virtual_hosted_style_request" not in store.config
    creds = store.credential_provider()
    now = dt.datetime.now(dt.UTC)
    assert creds["access_key_id"] == os.environ["AWS_ACCESS_KEY_ID"]
    assert now < creds["expires_at"] <= now + dt.timedelta(minutes=5)

    fs.call_s3("create_bucket", Bucket="recsys-eu", CreateBucketConfiguration={
        "LocationConstraint": "eu-west-1"})  # fmt: skip
    assert _s3.bucket_region(fs, "recsys-eu") == "eu-west-1"

    monkeypatch.delenv("AWS_ENDPOINT_URL")  # AWS itself (nothing is sent to it here)
    monkeypatch.setattr(_s3, "bucket_region", lambda fs, bucket: "eu-west-2")
    aws = _s3.store_for(s3fs.S3FileSystem(skip_instance_cache=True), "acme-lake")
    assert aws.config["virtual_hosted_style_request"] == "true"
    assert aws.config["region"] == "eu-west-2" and "endpoint" not in aws.config

    class Temporary:  # botocore's refreshable credentials, 7 minutes from expiry
        _expiry_time = now + dt.timedelta(minutes=7)

        async def get_frozen_credentials(self):
            return type("Frozen", (), {"access_key": "a", "secret_key": "s", "token": "t"})

    soon = _s3._Credentials(fs, Temporary())()
    assert soon["token"] == "t" and soon["expires_at"] == now + dt.timedelta(minutes=2)


class _FlakyProxy:
    """A TCP proxy to the S3 server that cuts the connection in the middle of the next
    ``fail_puts`` PUT requests (after forwarding part of them): a real network error mid-write."""

    def __init__(self, upstream: str, fail_puts: int) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.fail_puts = fail_puts
        self.cut = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        up = socket.create_connection(self.upstream)

        def back() -> None:
            try:
                while data := up.recv(65536):
                    client.sendall(data)
            except OSError:
                pass

        threading.Thread(target=back, daemon=True).start()
        try:
            while data := client.recv(65536):
                if data.startswith(b"PUT ") and self.cut < self.fail_puts:
                    self.cut += 1
                    up.sendall(data[: len(data) // 2])
                    client.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    break
                up.sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            up.close()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("fail_puts,succeeds", [(1, True), (1000, False)])
def test_network_error_mid_write(s3_bucket, s3_endpoint, monkeypatch, fail_puts, succeeds):
    """One cut connection is retried and the write lands; a network that keeps failing gives an
    error naming the URL, and the previous object is intact (never a partial one)."""
    wh = Warehouse(f"{s3_bucket}/wh")
    target = wh.recommendations(D1)
    atomic_write_parquet(_frame(3), target)
    proxy = _FlakyProxy(s3_endpoint, fail_puts)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("RECSYS_STORAGE_RETRIES", "2")
    import recsys_core.io._storage as storage

    monkeypatch.setattr(storage, "RETRIES", 2)
    _fresh_s3_clients()
    target = location(str(target))  # a new client, through the proxy
    try:
        if succeeds:
            atomic_write_parquet(_frame(9), target)
        else:
            with pytest.raises(
                StorageError,
                match=r"s3://.*/wh/recommendations/run_date=2026.*: write failed after 2 attempts",
            ):
                atomic_write_parquet(_frame(9), target)
            assert proxy.cut >= 2  # ours, each with the client's own retries
        assert proxy.cut >= 1
    finally:
        proxy.close()
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
        _fresh_s3_clients()
    assert read_parquet(str(target)).equals(_frame(9) if succeeds else _frame(3))


def test_object_vanishing_between_list_and_read(root):
    """A partition listed, then deleted (a concurrent re-run, a lifecycle rule) before it is read:
    the error names the object's URL instead of returning fewer rows."""
    from recsys_core.ingest import load_clean_events

    wh = Warehouse(root)
    for d in (D1, D2):
        atomic_write_parquet(_frame(2), wh.clean("events", d))
    listed = [wh.clean("events", d) for d in wh.clean_dates("events")]
    assert len(listed) == 2
    from recsys_core.io import delete

    delete(listed[0])
    with pytest.raises(FileNotFoundError, match="date=2026-01-01"):
        read_parquet(listed[0])
    del load_clean_events  # the loader's own behaviour is covered in test_s3_pipeline.py


# ---- one storage layer -------------------------------------------------------------------------
#: Modules outside recsys_core/io allowed to open files themselves, and why: local-only paths.
_LOCAL_ONLY = {
    "recsys_core/ingest/_read.py": "parses landing files (a remote landing is fetched by io first)",
    "recsys_core/ingest/_batch.py": "multi-file CSV scan of local (or io-fetched) landing files",
    "recsys_core/ingest/_load.py": "multi-file Parquet scan on local disk (remote: io batch)",
    "recsys_core/landing/_movielens.py": "reads the MovieLens CSVs a user points at",
    "recsys_core/landing/_write.py": "writes a local landing zone (test and demo data)",
    "recsys_core/experiment.py": "offline experiment on local train/test files",
    "recsys_core/models/_base.py": "save/load of a local folder (the registry moves it)",
    "recsys_core/embeddings/_model.py": "the packaged MiniLM weights",
}
_STORAGE_CALLS = re.compile(
    r"pl\.(read|scan)_(parquet|csv|ndjson)\(|\.write_parquet\(|pq\.(write|read)_table\("
    r"|np\.(load|savez\w*)\(|(?<![.\w])open\(|import (s3fs|fsspec|boto3|upath)|from (s3fs|fsspec|boto3|upath)"
)


def test_recsys_core_io_is_the_only_storage_layer():
    """No module outside recsys_core/io reads or writes files, or imports a filesystem client,
    except the local-only ones listed with their reason."""
    repo = Path(__file__).resolve().parents[1]
    offenders = {}
    for path in sorted(repo.glob("recsys_core/**/*.py")):
        rel = path.relative_to(repo).as_posix()
        if rel.startswith("recsys_core/io/"):
            continue
        hits = [
            line.strip()
            for line in path.read_text(encoding="utf-8").splitlines()
            if _STORAGE_CALLS.search(line) and not line.strip().startswith("#")
        ]
        if hits:
            offenders[rel] = hits
    unexpected = {k: v for k, v in offenders.items() if k not in _LOCAL_ONLY}
    assert not unexpected, unexpected
    assert "recsys_core/ingest/_read.py" in offenders  # the pattern does find real calls


def test_report_link_is_presigned_on_s3(s3_bucket, s3_endpoint):
    import urllib.request

    from recsys_core.reporting._links import report_link

    wh = Warehouse(f"{s3_bucket}/wh")
    target = wh.report_dir(D1) / "report.html"
    from recsys_core.io import atomic_write_text

    atomic_write_text(target, "<html>night</html>")
    link = report_link(str(target), str(wh.root))
    assert link.startswith(s3_endpoint) and "Signature" in link
    with urllib.request.urlopen(link, timeout=10) as resp:  # usable without credentials
        assert resp.read() == b"<html>night</html>"
        assert resp.headers["Content-Type"] == "text/html"  # a browser shows it as a page


def test_dated_partitions_read_the_same_on_every_backend(root, tmp_path):
    """``read_dated_parquet`` reads object-store partitions in one multi-source scan: the same
    frame as local disk, also when a file lacks a column or an earlier version wrote a column
    with another type; a damaged file is named."""
    from recsys_core.ingest._load import read_dated_parquet
    from recsys_core.io import forget_cached_objects

    days = [D1, D2, D2 + dt.timedelta(days=1)]
    frames = [
        pl.DataFrame({"user_id": ["a", "b"], "n": [1, 2]}),
        pl.DataFrame({"user_id": ["c"]}),  # no "n"
        pl.DataFrame({"user_id": ["d", "e", "f"], "n": ["7", "8", "9"]}),  # "n" as text
    ]
    local, remote = Warehouse(tmp_path / "wh"), Warehouse(root)
    for day, frame in zip(days, frames, strict=True):
        for wh in (local, remote):
            atomic_write_parquet(frame, wh.clean("events", day))
    schema = {"user_id": pl.String(), "n": pl.Int64()}
    forget_cached_objects()
    got = read_dated_parquet({d: remote.clean("events", d) for d in days}, schema, "date")
    want = read_dated_parquet({d: local.clean("events", d) for d in days}, schema, "date")
    assert got.equals(want)
    assert got["date"].to_list() == [D1, D1, D2, days[2], days[2], days[2]]
    assert got["n"].to_list() == [1, 2, None, 7, 8, 9]
    # the first two files agree on types: one scan, no fallback, the same rows and dates
    two = read_dated_parquet({d: remote.clean("events", d) for d in days[:2]}, schema, "date")
    assert two.equals(want.head(3))

    atomic_write_bytes(remote.clean("events", D2), b"PAR1 not parquet")
    forget_cached_objects()
    with pytest.raises(CorruptFileError, match=re.escape(str(remote.clean("events", D2)))):
        read_dated_parquet({d: remote.clean("events", d) for d in days}, schema, "date")
