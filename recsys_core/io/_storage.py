"""Storage locations: a local path or an object-store URL, and the few operations the pipeline needs.

A *location* is either a :class:`pathlib.Path` (a local path or ``file://`` URL) or a
:class:`upath.UPath` over an fsspec filesystem (``s3://``, ``gs://``, ``az://``/``abfs://``,
``memory://``). Both support ``/``, ``.name``, ``.parent``, so the warehouse builds keys the same
way on every backend; every byte read or written goes through the functions of this package.

Credentials and endpoints come from each cloud's standard environment (for S3:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``, profiles),
never from the repository. ``s3fs`` is a dependency; ``gcsfs`` and ``adlfs`` are optional and
asked for in one line when a ``gs://`` or ``az://`` URL is used without them. On ``s3://`` the
bytes of whole objects and the listings travel through obstore, configured from the s3fs client
(see :mod:`recsys_core.io._s3`).

Object stores have no rename: a single ``PUT`` is atomic per object (a reader sees the old object or
the new one), so a file is written with one upload, never in place. Conditional writes
(``If-None-Match: *`` / ``If-Match: <etag>``) give exclusive creation and compare-and-swap, used by
the per-date lock and the registry's champion pointer. Errors name the URL; transient network errors
are retried here (on top of the client's own retries).
"""

from __future__ import annotations

import errno
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from contextvars import ContextVar, copy_context
from pathlib import Path, PurePath
from typing import Any, TypeVar

from recsys_core.io import _s3 as _s3_data
from recsys_core.io._conditional import PreconditionFailed, StorageError, backend_for
from recsys_core.io._fence import check_leases

__all__ = [
    "Location",
    "PreconditionFailed",
    "StorageError",
    "concurrently",
    "delete",
    "delete_tree",
    "download_files",
    "exists",
    "fetch_many",
    "files_under",
    "files_with_stats",
    "forget_cached_objects",
    "held_in_memory",
    "on_forget_cached_objects",
    "is_remote",
    "list_names",
    "listed_version",
    "listing_snapshot",
    "prefetch_listings",
    "local_copy",
    "location",
    "put_remote_file",
    "put_if_absent",
    "read_bytes",
    "read_bytes_many",
    "read_versioned",
    "resolve_location",
    "signed_url",
    "update_if_match",
    "upload_dir",
    "with_retries",
    "write_bytes_remote",
    "write_if_match",
]

Location = Any  # pathlib.Path | upath.UPath (kept loose: UPath is imported lazily)
T = TypeVar("T")
R = TypeVar("R")

#: Packages that provide each protocol (installed on demand: ``pip install <name>``).
_EXTRAS = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
}
RETRIES = int(os.environ.get("RECSYS_STORAGE_RETRIES", "4"))


def _options(scheme: str) -> dict[str, Any]:
    """Filesystem options: listings are never cached, so that another process's writes (a
    concurrent run, a Dask worker) are seen at once. Against a GCS emulator
    (``STORAGE_EMULATOR_HOST``, as Google's own clients read it) no credentials are looked up."""
    if scheme not in _EXTRAS:
        return {}
    opts: dict[str, Any] = {"use_listings_cache": False}
    if scheme in ("gs", "gcs") and os.environ.get("STORAGE_EMULATOR_HOST"):
        opts["token"] = "anon"
    return opts


def _scheme(value: str) -> str:
    head, sep, _ = value.partition("://")
    return head.lower() if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", head) else ""


def location(value: Any) -> Location:
    """A :class:`~pathlib.Path` for a local path or ``file://`` URL, else an fsspec ``UPath``.

    >>> location("/tmp/wh")
    PosixPath('/tmp/wh')
    """
    if isinstance(value, PurePath) and not is_remote(value):
        return Path(value)
    if not isinstance(value, str):
        if is_remote(value):
            return value
        return Path(value)
    text = value.strip()
    scheme = _scheme(text)
    if not scheme:
        return Path(text).expanduser()
    if scheme == "file":
        return Path(text[len("file://") :])
    try:
        from upath import UPath

        return UPath(text, **_options(scheme))
    except (ImportError, ValueError) as exc:
        raise StorageError(_missing_package(text, scheme, exc)) from None


def _missing_package(url: str, scheme: str, exc: BaseException) -> str:
    pkg = _EXTRAS.get(scheme)
    if pkg:
        return f"{url}: the {scheme}:// backend needs the {pkg} package: pip install {pkg}"
    return f"{url}: unsupported storage URL ({exc}); expected a local path, s3://, gs:// or az://"


def resolve_location(value: Any) -> Location:
    """``location(value)``, made absolute when local (object-store URLs are absolute already)."""
    loc = location(value)
    if is_remote(loc):
        _check_backend(loc)
        return loc
    return loc.resolve()


def _check_backend(loc: Location) -> None:
    try:
        loc.fs  # noqa: B018 - instantiating the filesystem imports its package
    except ImportError as exc:
        raise StorageError(_missing_package(str(loc), loc.protocol, exc)) from None


def is_remote(loc: Any) -> bool:
    """Whether ``loc`` is an object-store location (not a local path)."""
    if isinstance(loc, str):
        return _scheme(loc) not in ("", "file")
    return getattr(loc, "protocol", "") not in ("", "file", "local")


def _url(loc: Location) -> str:
    return str(loc)


def _key(loc: Location) -> str:
    return loc.path


# ---- errors and retries ------------------------------------------------------------------------
def _transient(exc: BaseException) -> bool:
    """Network hiccups worth another try (connection reset, timeout, 5xx, throttling)."""
    if isinstance(exc, PreconditionFailed | FileNotFoundError | PermissionError):
        return False
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    name = type(exc).__name__
    if name in (
        "ClientPayloadError",
        "ServerDisconnectedError",
        "ClientConnectorError",
        "ClientOSError",
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "IncompleteReadError",
        "ServiceRequestError",
        "ServiceResponseError",
    ):
        return True
    text = str(exc)
    return any(
        s in text
        for s in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "reset")
    ) or (isinstance(exc, OSError) and exc.errno in (errno.EIO, errno.ECONNRESET, errno.EPIPE))


#: Where each backend takes its credentials from (for the messages that say none worked).
_CREDENTIALS_HINT = (
    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a role for s3://, "
    "GOOGLE_APPLICATION_CREDENTIALS or workload identity for gs://, "
    "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_NAME / AZURE_STORAGE_ACCOUNT_KEY "
    "for az://"
)


def _explain(
    url: str, op: str, exc: BaseException, attempts: int = 1
) -> StorageError | FileNotFoundError:
    """``exc`` (from ``attempts`` tries of ``op`` on ``url``) as one line that names the URL and,
    for a missing bucket or credentials, what to do."""
    text = f"{type(exc).__name__}: {exc}"
    low = text.lower()
    missing = ("bucket does not exist", "nosuchbucket", "containernotfound")
    writing = op in ("write", "upload", "create")  # a write finds no object to miss: no bucket
    if any(s in low for s in missing) or (writing and isinstance(exc, FileNotFoundError)):
        bucket = url.split("://", 1)[-1].split("/", 1)[0]
        return StorageError(
            f"{url}: {op} failed: bucket {bucket!r} does not exist; create it or fix the "
            f"storage URL ({text})"
        )
    if any(
        s in low
        for s in (
            "nocredentialserror",
            "unable to locate credentials",
            "defaultcredentialserror",
            "could not automatically determine credentials",
        )
    ):
        return StorageError(
            f"{url}: {op} failed: no credentials found; set them in the environment "
            f"({_CREDENTIALS_HINT}) ({text})"
        )
    if isinstance(exc, PermissionError) or any(
        s in low for s in ("accessdenied", "access denied", "invalidaccesskeyid", "signature")
    ):
        return StorageError(
            f"{url}: {op} failed: access denied; check the credentials in the environment "
            f"({_CREDENTIALS_HINT}) ({text})"
        )
    if isinstance(exc, FileNotFoundError):
        return FileNotFoundError(errno.ENOENT, f"{url}: not found ({op})", url)
    if attempts > 1:
        return StorageError(f"{url}: {op} failed after {attempts} attempts: {text}")
    return StorageError(f"{url}: {op} failed: {text}")


def with_retries(url: str, op: str, fn: Callable[[], T], *, attempts: int | None = None) -> T:
    """``fn()`` retried on transient errors (exponential back-off); other errors explained."""
    attempts = attempts or RETRIES
    for i in range(attempts):
        try:
            return fn()
        except (StorageError, FileExistsError) as exc:
            if isinstance(exc, FileExistsError) and not isinstance(exc, PreconditionFailed):
                raise PreconditionFailed(f"{url}: already exists ({op})") from exc
            raise
        except Exception as exc:
            if _transient(exc) and i + 1 < attempts:
                time.sleep(min(0.2 * 2**i, 5.0))
                continue
            raise _explain(url, op, exc, i + 1) from exc
    raise AssertionError("unreachable")


# ---- operations --------------------------------------------------------------------------------
def exists(loc: Location) -> bool:
    """Whether a file (object) is at ``loc``."""
    loc = location(loc)
    if not is_remote(loc):
        return loc.is_file()
    if loc.protocol in ("s3", "s3a"):  # one HEAD (isfile would also LIST a missing key)
        bucket, _, key = _key(loc).partition("/")
        fs = loc.fs

        async def head() -> bool:
            try:
                await fs._call_s3("head_object", Bucket=bucket, Key=key)
                return True
            except FileNotFoundError:
                return False

        from fsspec.asyn import sync

        return with_retries(_url(loc), "exists", lambda: sync(fs.loop, head))
    return with_retries(_url(loc), "exists", lambda: loc.fs.isfile(_key(loc)))


#: Bytes of objects read in this process, keyed by URL and the version a listing
#: showed: steps and scoring shards on one worker fetch each partition version once.
_BLOBS: OrderedDict[tuple[str, str], bytes] = OrderedDict()
_BLOBS_LOCK = threading.Lock()
#: Bytes held in ``_BLOBS`` (kept with it, so a put does not sum every blob).
_BLOB_BYTES = [0]
BLOB_CACHE_BYTES = 256 * 2**20
#: The largest object held (a checkpoint of every clean event, read by train, evaluate and the
#: report, may be tens of MiB); a larger one is fetched each time it is read.
BLOB_MAX_BYTES = BLOB_CACHE_BYTES // 2


#: Other in-process caches of stored objects (registered by their owners), emptied with ours.
_FORGET_HOOKS: list[Callable[[], None]] = []


def forget_cached_objects() -> None:
    """Empty this process's object caches and listed versions (as a fresh worker starts)."""
    with _BLOBS_LOCK:
        _BLOBS.clear()
        _BLOB_BYTES[0] = 0
    with _LISTED_LOCK:
        _LISTED.clear()
    for forget in _FORGET_HOOKS:
        forget()


def on_forget_cached_objects(forget: Callable[[], None]) -> Callable[[], None]:
    """Register ``forget`` (no arguments) to empty another cache of stored objects whenever
    :func:`forget_cached_objects` runs."""
    _FORGET_HOOKS.append(forget)
    return forget


def _blob_cache_get(url: str, version: str | None) -> bytes | None:
    if version is None:
        return None
    with _BLOBS_LOCK:
        blob = _BLOBS.get((url, version))
        if blob is not None:
            _BLOBS.move_to_end((url, version))
        return blob


def _blob_cache_put(url: str, version: str | None, blob: bytes) -> None:
    if version is None or len(blob) > BLOB_MAX_BYTES:
        return
    key = (url, version)
    with _BLOBS_LOCK:
        old = _BLOBS.pop(key, None)
        _BLOB_BYTES[0] += len(blob) - (len(old) if old is not None else 0)
        _BLOBS[key] = blob  # the most recently used, last
        while _BLOB_BYTES[0] > BLOB_CACHE_BYTES and _BLOBS:
            _, dropped = _BLOBS.popitem(last=False)
            _BLOB_BYTES[0] -= len(dropped)


def held_in_memory(loc: Location) -> bool:
    """Whether a read of ``loc`` with ``cached=True`` would fetch nothing: the version a fresh
    listing showed is in this process's cache (it wrote or read that object)."""
    loc = location(loc)
    return is_remote(loc) and _blob_cache_get(str(loc), listed_version(loc)) is not None


def read_bytes(loc: Location, *, cached: bool = False) -> bytes:
    """The whole file at ``loc`` (FileNotFoundError naming the URL when absent).

    ``cached``: an object-store file whose version a fresh listing showed may come from (and
    goes to) this process's cache (data partitions and landing files; never pointers or locks).
    """
    loc = location(loc)
    if not is_remote(loc):
        return loc.read_bytes()
    version = listed_version(loc) if cached else None
    cached = _blob_cache_get(str(loc), version)
    if cached is not None:
        return cached
    blob = with_retries(_url(loc), "read", lambda: _get(loc))
    _blob_cache_put(str(loc), version, blob)
    return blob


def _s3(loc: Location) -> bool:
    return loc.protocol in ("s3", "s3a")


def _get(loc: Location) -> bytes:
    """One GET of the whole object (S3: through obstore, see :mod:`recsys_core.io._s3`)."""
    if _s3(loc):
        return _s3_data.get(loc.fs, _key(loc))
    return loc.fs.cat_file(_key(loc))


def _written_version(out: Any) -> str | None:
    """The new object's version (ETag) from an upload's response, when the client returns it."""
    if isinstance(out, dict):
        etag = out.get("ETag") or out.get("etag")
        return str(etag) if etag else None
    return None


def write_bytes_remote(loc: Location, data: bytes) -> str | None:
    """One upload: the object appears whole or not at all. Returns the new object's version
    (its ETag) when the client reports it, else None.

    The bytes go to this process's cache under the version the upload returned, so a step that
    lists and reads back what an earlier step of the run wrote (clean reads raw, train reads
    clean) fetches nothing: the listing must show that same version for the copy to be used.
    """
    check_leases(loc)
    with _changing(loc):
        version = with_retries(_url(loc), "write", lambda: _put(loc, data))
    _blob_cache_put(str(loc), version, data)
    return version


def _put(loc: Location, data: bytes) -> str | None:
    """One PUT of the whole object (S3: through obstore); the new version when reported."""
    if _s3(loc):
        return _s3_data.put(loc.fs, _key(loc), data, _mime_type(loc))
    return _written_version(loc.fs.pipe_file(_key(loc), data, **_content_type(loc)))


def _mime_type(loc: Location) -> str | None:
    """``loc``'s type from its name, for the upload to label (a report opens as a page)."""
    import mimetypes

    return mimetypes.guess_type(loc.name)[0]


def _content_type(loc: Location) -> dict[str, str]:
    """The fsspec upload option that labels ``loc``'s type (see :func:`_mime_type`)."""
    kind = _mime_type(loc)
    if kind is not None and loc.protocol in ("gs", "gcs"):
        return {"content_type": kind}
    return {}


def put_remote_file(local: Path, loc: Location) -> str | None:
    """Upload a local file in one PUT (or one multipart upload: visible only when complete).
    Returns the new object's version when known (a small file's single PUT), else None."""
    if local.stat().st_size <= BLOB_CACHE_BYTES // 16:  # small: one PUT, kept in the cache
        return write_bytes_remote(loc, local.read_bytes())
    check_leases(loc)
    with _changing(loc):
        with_retries(_url(loc), "upload", lambda: loc.fs.put_file(str(local), _key(loc)))
    return None


def _local_version(path: Path) -> str:
    st = path.stat()
    return f"{st.st_mtime_ns}-{st.st_size}-{st.st_ino}"


def put_if_absent(loc: Location, data: bytes) -> str:
    """Create ``loc`` with ``data`` only if nothing is there (``O_EXCL`` / ``If-None-Match: *`` /
    ``ifGenerationMatch=0``); returns the new object's version.

    Raises :class:`PreconditionFailed` if it exists.
    """
    loc = location(loc)
    check_leases(loc)
    if not is_remote(loc):
        loc.parent.mkdir(parents=True, exist_ok=True)
        tmp = loc.parent / f".tmp-{uuid.uuid4().hex}-{loc.name}"
        tmp.write_bytes(data)
        try:
            os.link(tmp, loc)  # atomic create-if-absent with the full content
        except FileExistsError:
            raise PreconditionFailed(f"{loc}: already exists") from None
        finally:
            tmp.unlink(missing_ok=True)
        return _local_version(loc)
    backend = backend_for(loc)
    with _changing(loc):
        return with_retries(_url(loc), "create", lambda: backend.create(loc, data))


def read_versioned(loc: Location) -> tuple[bytes, str] | None:
    """``(content, version)`` of ``loc`` in one read, or None when absent; ``version`` is what
    :func:`write_if_match` compares (S3/Azure: the ETag; GCS: the generation; local: mtime+size)."""
    loc = location(loc)
    if not is_remote(loc):
        try:
            return loc.read_bytes(), _local_version(loc)
        except FileNotFoundError:
            return None
    backend = backend_for(loc)
    return with_retries(_url(loc), "read", lambda: backend.read(loc))


def write_if_match(loc: Location, data: bytes, version: str | None) -> str:
    """Compare-and-swap: write ``data`` only if ``loc`` is still at ``version`` (None: absent);
    returns the new version.

    Raises :class:`PreconditionFailed` when another writer got there first. On local disk the caller
    holds a lock (see :func:`recsys_core.io._warehouse.local_lock`), so a version check suffices.
    """
    loc = location(loc)
    if version is None:
        return put_if_absent(loc, data)
    check_leases(loc)
    if not is_remote(loc):
        now = read_versioned(loc)
        if now is None or now[1] != version:
            raise PreconditionFailed(f"{loc}: changed by another writer")
        # the caller holds the local lock: a temporary file renamed over the target suffices
        tmp = loc.parent / f".tmp-{uuid.uuid4().hex}-{loc.name}"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, loc)
        finally:
            tmp.unlink(missing_ok=True)
        return _local_version(loc)
    backend = backend_for(loc)
    with _changing(loc):
        return with_retries(
            _url(loc), "conditional write", lambda: backend.replace(loc, data, version)
        )


def update_if_match(
    loc: Location, change: Callable[[bytes | None], bytes], *, attempts: int = 50
) -> None:
    """Read ``loc``, write ``change(content or None)`` with :func:`write_if_match`, and start
    again when another writer got there first (at most ``attempts`` times): an update of one
    small object by concurrent processes with no lock. ``change`` may raise to refuse."""
    for _ in range(attempts):
        current = read_versioned(loc)
        body = change(current[0] if current else None)
        try:
            write_if_match(loc, body, current[1] if current else None)
            return
        except PreconditionFailed:
            continue
    raise RuntimeError(f"{loc}: {attempts} concurrent changes in a row; retry")


def delete(loc: Location, *, version: str | None = None) -> None:
    """Remove the file at ``loc`` if present (remote: only if still at ``version`` when given)."""
    loc = location(loc)
    check_leases(loc)
    if not is_remote(loc):
        loc.unlink(missing_ok=True)
        return

    def rm_plain() -> None:
        with suppress(FileNotFoundError):
            loc.fs.rm_file(_key(loc))

    with _changing(loc):
        if version is not None:
            backend = backend_for(loc)
            with_retries(_url(loc), "delete", lambda: backend.delete(loc, version))
        else:
            with_retries(_url(loc), "delete", rm_plain)


def delete_tree(loc: Location) -> None:
    """Remove everything under the folder/prefix ``loc`` (nothing there is fine)."""
    import shutil

    loc = location(loc)
    check_leases(loc)
    if not is_remote(loc):
        shutil.rmtree(loc, ignore_errors=True)
        return

    def rm() -> None:
        keys = loc.fs.find(_key(loc))
        if keys:
            for key in keys:
                _forget_version(f"{loc.protocol}://{key}")
            try:
                loc.fs.rm(keys)
            finally:
                for key in keys:
                    _forget_version(f"{loc.protocol}://{key}")

    with_retries(_url(loc), "delete", rm)


def files_under(loc: Location) -> list[str]:
    """Paths of every file under ``loc``, relative to it, ``/``-separated, sorted (one listing)."""
    loc = location(loc)
    if not is_remote(loc):
        if not loc.is_dir():
            return []
        return sorted(p.relative_to(loc).as_posix() for p in loc.rglob("*") if p.is_file())
    base = _key(loc).rstrip("/") + "/"

    def find() -> list[str]:
        found = _find(loc, base)
        _remember_versions(loc.protocol, found)
        return sorted(k[len(base) :] for k in found if k.startswith(base))

    return with_retries(_url(loc), "list", find)


def _find(loc: Location, base: str) -> dict[str, dict[str, Any]]:
    """``{bucket/key: details}`` of every object under the prefix ``base`` (``bucket/key/``).

    On S3 one ``ListObjectsV2`` request per 1,000 keys and nothing else, through obstore
    (s3fs's ``find`` would add a HEAD and a second listing when the prefix is empty, the case of
    every first write of a table).
    Within a :func:`listing_snapshot`, a prefix listed before is not listed again (callers must
    not modify the result).
    """
    snap = _SNAPSHOT.get()
    if snap is None:
        return _list(loc, base)
    with _SNAPSHOTS_LOCK:
        hit, drops = snap.get(_bare(base)), _DROPS[0]
    if hit is not None:
        return hit
    found = _list(loc, base)
    with _SNAPSHOTS_LOCK:
        if _DROPS[0] == drops:  # nothing written meanwhile that this listing might miss
            snap[_bare(base)] = found
    return found


def _list(loc: Location, base: str) -> dict[str, dict[str, Any]]:
    if _s3(loc):
        return _s3_data.list_prefix(loc.fs, base)
    return loc.fs.find(base, detail=True)


#: ``url -> (etag, when listed)`` from the latest listings; see :func:`listed_version`.
_LISTED: dict[str, tuple[str, float]] = {}
_LISTED_LOCK = threading.Lock()
#: How long a listed version is trusted by readers (a snapshot as of the listing).
LISTING_TTL_SECONDS = 60.0


def _forget_version(loc: Location) -> None:
    """This process writes or deletes ``loc`` (called before and after): its listed version and
    the snapshot listings that would show it are stale."""
    with _LISTED_LOCK:
        _LISTED.pop(str(loc), None)
    _drop_listings(str(loc))


@contextmanager
def _changing(loc: Location) -> Iterator[None]:
    """Around an object-store write or delete of ``loc``: forget what listings said of it before
    (a listing made meanwhile by another thread is not kept) and after."""
    _forget_version(loc)
    try:
        yield
    finally:
        _forget_version(loc)


#: The listing snapshot of the running step, see :func:`listing_snapshot`.
_SNAPSHOT: ContextVar[dict[str, dict[str, Any]] | None] = ContextVar(
    "recsys_listing_snapshot", default=None
)
#: Every open snapshot of this process (any thread's), and a count of invalidations.
_SNAPSHOTS: list[dict[str, dict[str, Any]]] = []
_SNAPSHOTS_LOCK = threading.Lock()
_DROPS = [0]


@contextmanager
def listing_snapshot() -> Iterator[None]:
    """Within this block (one pipeline step), an object-store prefix is listed once: a later
    listing of the same prefix is served from the first, until this process writes or deletes
    an object under it (on any thread), which drops it. So a step sees its own writes, and
    other processes' writes as of its first listing of each prefix (as if it had listed
    everything when it started). Nested blocks share the outermost; local folders are always
    listed afresh."""
    if _SNAPSHOT.get() is not None:
        yield
        return
    snap: dict[str, dict[str, Any]] = {}
    with _SNAPSHOTS_LOCK:
        _SNAPSHOTS.append(snap)
    token = _SNAPSHOT.set(snap)
    try:
        yield
    finally:
        _SNAPSHOT.reset(token)
        with _SNAPSHOTS_LOCK:
            _SNAPSHOTS[:] = [x for x in _SNAPSHOTS if x is not snap]


def prefetch_listings(*locs: Any) -> None:
    """Within a :func:`listing_snapshot`, list the object-store prefixes ``locs`` at once (one
    request each, concurrently instead of one after another as the step reaches them): the
    step's later listings of them are served from the snapshot. Errors are those the later
    listing would raise. Outside a snapshot, on local disk, or for one prefix: nothing."""
    if _SNAPSHOT.get() is None:
        return
    remote = [loc for loc in map(location, locs) if is_remote(loc)]
    if len(remote) >= 2:
        concurrently(files_with_versions, remote, thread_name_prefix="recsys-list")


def concurrently(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    max_workers: int = 8,
    thread_name_prefix: str = "recsys-io",
) -> list[R]:
    """``[fn(x) for x in items]``, the calls at once on threads when there are two or more:
    independent object-store requests then cost one round trip, not one each. Each call runs in
    a copy of the caller's context (the step's listing snapshot and leases); the first error in
    ``items`` order is raised."""
    items = list(items)
    if len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(min(max_workers, len(items)), thread_name_prefix) as pool:
        futures = [pool.submit(copy_context().run, fn, x) for x in items]
        return [f.result() for f in futures]


def _bare(url: str) -> str:
    return url.split("://", 1)[-1]


def _drop_listings(url: str) -> None:
    path = _bare(url)
    with _SNAPSHOTS_LOCK:
        _DROPS[0] += 1
        for snap in _SNAPSHOTS:
            for base in [b for b in snap if path.startswith(b)]:
                del snap[base]


def _remember_versions(protocol: str, found: dict[str, Any]) -> None:
    now = time.monotonic()
    with _LISTED_LOCK:
        for key, info in found.items():
            etag = info.get("ETag") or info.get("etag")
            if etag:
                _LISTED[f"{protocol}://{key}"] = (str(etag), now)


def listed_version(loc: Location) -> str | None:
    """The ETag ``loc`` had in a listing made within :data:`LISTING_TTL_SECONDS`, else None.

    A reader that lists partitions and then reads them may use a cached copy of that version:
    it then reads the partitions as of the listing (old or new, never a mix within one file).
    """
    with _LISTED_LOCK:
        hit = _LISTED.get(str(loc))
    if hit is None or time.monotonic() - hit[1] > LISTING_TTL_SECONDS:
        return None
    return hit[0]


def files_with_stats(loc: Location) -> list[tuple[str, int, int]]:
    """``(relative path, size, mtime in ns)`` of every file under ``loc``, sorted, in one listing
    (object stores: the listing's ``Size`` and ``LastModified``; hidden names included)."""
    return [(rel, size, mtime) for rel, size, mtime, _ in files_with_versions(loc)]


def files_with_versions(loc: Location) -> list[tuple[str, int, int, str | None]]:
    """:func:`files_with_stats` plus each file's version: an object's ETag from the same listing
    (it changes whenever the object is written with other bytes), None on local disk."""
    loc = location(loc)
    if not is_remote(loc):
        if not loc.is_dir():
            return []
        out = []
        for p in sorted(loc.rglob("*")):
            if p.is_file():
                st = p.stat()
                out.append((p.relative_to(loc).as_posix(), st.st_size, st.st_mtime_ns, None))
        return out
    base = _key(loc).rstrip("/") + "/"

    def find() -> list[tuple[str, int, int, str | None]]:
        rows = []
        found = _find(loc, base)
        _remember_versions(loc.protocol, found)
        for key, info in found.items():
            if not key.startswith(base) or info.get("type") == "directory":
                continue
            mtime = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
            ns = int(mtime.timestamp() * 1e9) if hasattr(mtime, "timestamp") else 0
            etag = info.get("ETag") or info.get("etag")
            rows.append((key[len(base) :], int(info.get("size") or 0), ns, etag and str(etag)))
        return sorted(rows)

    return with_retries(_url(loc), "list", find)


def list_names(loc: Location) -> list[str]:
    """Names directly under the folder/prefix ``loc`` (files and sub-folders), sorted."""
    loc = location(loc)
    if not is_remote(loc):
        return sorted(p.name for p in loc.iterdir()) if loc.is_dir() else []

    def ls() -> list[str]:
        try:
            return sorted(
                p.rstrip("/").rsplit("/", 1)[-1] for p in loc.fs.ls(_key(loc), detail=False)
            )
        except FileNotFoundError:
            return []

    return with_retries(_url(loc), "list", ls)


@contextmanager
def local_copy(loc: Location, files: Mapping[str, str | None] | None = None) -> Iterator[Path]:
    """A local path with the content of the folder ``loc`` (itself when local; else downloaded,
    every file at once).

    ``files``: the folder's files as ``{relative path: version or None}``, known to the caller
    (a folder written once under a unique name, whose files and versions its uploader recorded):
    then nothing is listed, and a file whose version is in this process's cache is not fetched.
    """
    import shutil
    import tempfile

    loc = location(loc)
    if not is_remote(loc):
        yield loc
        return
    tmp = Path(tempfile.mkdtemp(prefix="recsys-dl-"))
    try:
        rels = list(files) if files is not None else files_under(loc)
        versions = {str(loc / rel): v for rel, v in (files or {}).items()}
        download_files([(loc / rel, tmp / rel) for rel in rels], versions=versions)  # one batch
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_files(
    pairs: list[tuple[Location, Path]], *, versions: Mapping[str, str | None] | None = None
) -> None:
    """Copy each ``(location, local path)``: object-store files are fetched concurrently in one
    batch (:func:`read_bytes_many`, ``versions`` as there)."""
    remote = [(location(src), Path(dst)) for src, dst in pairs]
    for _, dst in remote:
        dst.parent.mkdir(parents=True, exist_ok=True)
    local = [(s, d) for s, d in remote if not is_remote(s)]
    for src, dst in local:
        dst.write_bytes(src.read_bytes())
    remote = [(s, d) for s, d in remote if is_remote(s)]
    blobs = read_bytes_many([src for src, _ in remote], versions=versions)
    for (_, dst), blob in zip(remote, blobs, strict=True):
        dst.write_bytes(blob)


def read_bytes_many(
    paths: list[Any], *, versions: Mapping[str, str | None] | None = None
) -> list[bytes]:
    """The bytes of object-store files of one filesystem, in order, fetched concurrently in one
    batch (thousands of small partitions cost one round of requests, not one each); a file whose
    version this process holds is not fetched. A file gone since it was listed (or recorded)
    raises FileNotFoundError naming its URL.

    ``versions``: ``{URL: version}`` recorded when the files were written (:func:`local_copy`),
    used for the cache instead of a listing's; a URL not in it, or None, is looked up by the
    listing's version as usual."""
    locs = [location(p) for p in paths]
    if not locs:
        return []
    blobs = fetch_many(
        locs, {p.path: (versions or {}).get(str(p)) or listed_version(p) for p in locs}
    )
    out = []
    for p in locs:
        blob = blobs.get(p.path)
        if blob is None or isinstance(blob, FileNotFoundError):
            raise FileNotFoundError(
                errno.ENOENT,
                f"{p}: listed (or named by the entry that recorded it) but gone when read "
                "(deleted or replaced by a concurrent re-run or a lifecycle rule?); re-run the "
                "step",
                str(p),
            )
        if isinstance(blob, BaseException):
            blob = read_bytes(p)  # retried one by one, and explained if it fails again
        out.append(blob)
    return out


def fetch_many(
    locs: list[Location], versions: Mapping[str, str | None]
) -> dict[str, bytes | BaseException]:
    """The bytes of object-store files of one filesystem, by ``loc.path``, in one batch: a file
    whose ``versions[loc.path]`` is in this process's cache comes from there; the others are
    fetched at once (S3: one GET each through obstore; else one fsspec ``cat``) and go to the
    cache under that version. A file that could not be read maps to its exception (a
    FileNotFoundError when gone), for the caller to name."""
    blobs: dict[str, bytes | BaseException] = {}
    for loc in locs:
        cached = _blob_cache_get(str(loc), versions.get(loc.path))
        if cached is not None:
            blobs[loc.path] = cached
    keys = [loc.path for loc in locs if loc.path not in blobs]
    if not keys:
        return blobs
    fs = locs[0].fs
    if _s3(locs[0]):

        def get(key: str) -> bytes | BaseException:
            try:
                return _s3_data.get(fs, key)
            except Exception as exc:
                return exc

        fetched = dict(zip(keys, concurrently(get, keys), strict=True))
    else:
        first = fs.unstrip_protocol(keys[0]) + (
            f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
        )
        fetched = with_retries(first, "read", lambda: fs.cat(keys, on_error="return"))
    for loc in locs:
        blob = fetched.get(loc.path)
        if isinstance(blob, bytes):
            _blob_cache_put(str(loc), versions.get(loc.path), blob)
    return {**blobs, **fetched}


def signed_url(loc: Location, expires_seconds: int) -> str:
    """A pre-signed HTTPS URL of the object at ``loc`` (S3, GCS), valid for ``expires_seconds``;
    the object's own URL when the backend cannot sign; a ``file://`` URI for a local path."""
    loc = location(loc)
    if not is_remote(loc):
        return loc.resolve().as_uri()
    try:
        return str(loc.fs.sign(_key(loc), expiration=expires_seconds))
    except Exception:  # a filesystem that cannot sign (or no credentials to sign with)
        return str(loc)


def upload_dir(local: Path, loc: Location) -> dict[str, str | None]:
    """Upload every file under the local folder ``local`` to ``loc``; returns ``{relative path:
    the new object's version, or None when the client did not report it}``, in path order."""
    rels = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    versions = concurrently(lambda rel: put_remote_file(local / rel, loc / rel), rels)
    return dict(zip(rels, versions, strict=True))
