"""Conditional writes on each object store, behind one small interface.

The per-date lock and the registry's champion pointer need four operations that a plain ``PUT``
cannot give; every backend offers them as preconditions on single requests:

- S3 (and MinIO, R2): ``GET`` gives the ``ETag``; create is ``PUT If-None-Match: *``;
  compare-and-swap is ``PUT If-Match: <etag>``; delete is ``DELETE If-Match: <etag>``.
- GCS: ``GET alt=media`` gives ``x-goog-generation``; create is an upload with
  ``ifGenerationMatch=0``; compare-and-swap an upload with ``ifGenerationMatch=<generation>``;
  delete is ``DELETE ifGenerationMatch=<generation>``.
- Azure Blob: ``GET`` gives the ``ETag``; create is ``PUT If-None-Match: *``; compare-and-swap is
  ``PUT If-Match: <etag>``; delete is ``DELETE If-Match: <etag>``.

A *version* is the opaque string the backend compares (ETag or generation). ``create`` and
``replace`` return the new object's version from the write's own response, so a writer never reads
back what it just wrote. A lost precondition raises :class:`PreconditionFailed`; a missing object
reads as None. Each call is one request, run on the filesystem's event loop; retries and error
messages are added by :mod:`recsys_core.io._storage`.
"""

from __future__ import annotations

import json
from typing import Any, Protocol
from urllib.parse import quote

from fsspec.asyn import sync

__all__ = ["Conditional", "PreconditionFailed", "StorageError", "backend_for"]


class StorageError(OSError):
    """A storage operation failed; the message names the URL and what to check."""


class PreconditionFailed(StorageError):
    """A conditional write lost: the object exists (create) or changed (``If-Match``)."""


class Conditional(Protocol):
    """The four conditional operations, for one object-store protocol."""

    def read(self, loc: Any) -> tuple[bytes, str] | None: ...
    def create(self, loc: Any, data: bytes) -> str: ...
    def replace(self, loc: Any, data: bytes, version: str) -> str: ...
    def delete(self, loc: Any, version: str) -> None: ...


def _lost(loc: Any, why: str) -> PreconditionFailed:
    return PreconditionFailed(f"{loc}: {why}")


def _is_precondition(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return isinstance(exc, FileExistsError) or any(
        s in text for s in ("PreconditionFailed", "Precondition", "pre-condition", "Conflict")
    )


def _bucket_key(loc: Any) -> tuple[str, str]:
    bucket, _, key = loc.path.partition("/")
    return bucket, key


class _S3:
    """``If-None-Match`` / ``If-Match`` on ``PutObject`` and ``DeleteObject`` (s3fs's client)."""

    def read(self, loc: Any) -> tuple[bytes, str] | None:
        bucket, key = _bucket_key(loc)
        fs = loc.fs

        async def get() -> tuple[bytes, str] | None:
            try:
                out = await fs._call_s3("get_object", Bucket=bucket, Key=key)
            except FileNotFoundError:
                return None
            async with out["Body"] as body:
                data = await body.read()
            return data, out["ETag"]

        return sync(fs.loop, get)

    def _put(self, loc: Any, data: bytes, why: str, **condition: str) -> str:
        bucket, key = _bucket_key(loc)
        try:
            out = loc.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
        except Exception as exc:
            if _is_precondition(exc):
                raise _lost(loc, why) from None
            raise
        return out["ETag"]

    def create(self, loc: Any, data: bytes) -> str:
        return self._put(loc, data, "already exists", IfNoneMatch="*")

    def replace(self, loc: Any, data: bytes, version: str) -> str:
        try:
            return self._put(loc, data, "changed by another writer", IfMatch=version)
        except FileNotFoundError:  # deleted meanwhile (the bucket is there: it was just read)
            raise _lost(loc, "deleted by another writer") from None

    def delete(self, loc: Any, version: str) -> None:
        bucket, key = _bucket_key(loc)
        try:
            loc.fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=version)
        except FileNotFoundError:
            return
        except Exception as exc:
            if _is_precondition(exc):
                raise _lost(loc, "changed by another writer") from None
            raise


class _GCS:
    """Generation preconditions on the JSON API (gcsfs's authenticated session).

    Uploads are ``multipart`` (metadata + body in one request): GCS honours ``ifGenerationMatch``
    on every upload type, and local emulators do on this one.
    """

    def read(self, loc: Any) -> tuple[bytes, str] | None:
        bucket, key = _bucket_key(loc)
        try:
            headers, body = loc.fs.call("GET", "b/{}/o/{}", bucket, key, alt="media")
        except FileNotFoundError:
            return None
        generation = headers.get("x-goog-generation")
        if not generation:
            raise StorageError(f"{loc}: the server sent no x-goog-generation header")
        return body, str(generation)

    def _upload(self, loc: Any, data: bytes, generation: str, why: str) -> str:
        bucket, key = _bucket_key(loc)
        fs = loc.fs
        meta = json.dumps({"name": key})
        body = (
            b"--==0==\nContent-Type: application/json; charset=UTF-8\n\n"
            + meta.encode()
            + b"\n--==0==\nContent-Type: application/octet-stream\n\n"
            + data
            + b"\n--==0==--"
        )
        try:
            out = fs.call(
                "POST",
                f"{fs._location}/upload/storage/v1/b/{quote(bucket, safe='')}/o",
                uploadType="multipart",
                ifGenerationMatch=generation,
                headers={"Content-Type": 'multipart/related; boundary="==0=="'},
                data=body,
                json_out=True,
            )
        except FileExistsError:  # 412
            raise _lost(loc, why) from None
        except FileNotFoundError:  # an upload finds no object to miss: the bucket is missing
            raise StorageError(
                f"{loc}: bucket {bucket!r} does not exist; create it or fix the storage URL"
            ) from None
        return str(out["generation"])

    def create(self, loc: Any, data: bytes) -> str:
        return self._upload(loc, data, "0", "already exists")

    def replace(self, loc: Any, data: bytes, version: str) -> str:
        return self._upload(loc, data, version, "changed by another writer")

    def delete(self, loc: Any, version: str) -> None:
        bucket, key = _bucket_key(loc)
        try:
            loc.fs.call("DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=version)
        except FileNotFoundError:
            return
        except FileExistsError:
            raise _lost(loc, "changed by another writer") from None


class _Azure:
    """``If-None-Match: *`` / ``If-Match`` through azure-storage-blob (adlfs's service client)."""

    @staticmethod
    def _run(loc: Any, fn: Any) -> Any:
        fs = loc.fs
        container, blob = _bucket_key(loc)

        async def call() -> Any:
            async with fs.service_client.get_blob_client(container=container, blob=blob) as bc:
                return await fn(bc)

        return sync(fs.loop, call)

    def read(self, loc: Any) -> tuple[bytes, str] | None:
        from azure.core.exceptions import ResourceNotFoundError

        async def get(bc: Any) -> tuple[bytes, str] | None:
            try:
                stream = await bc.download_blob()
            except ResourceNotFoundError:
                return None
            return await stream.readall(), stream.properties.etag

        return self._run(loc, get)

    def _upload(self, loc: Any, data: bytes, version: str | None, why: str) -> str:
        from azure.core import MatchConditions
        from azure.core.exceptions import (
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )

        condition: dict[str, Any] = {"overwrite": False}  # If-None-Match: *
        lost: tuple[type[Exception], ...] = (ResourceExistsError, ResourceModifiedError)
        if version is not None:
            lost = (*lost, ResourceNotFoundError)  # CAS on a deleted blob
            condition = {
                "overwrite": True,
                "etag": version,
                "match_condition": MatchConditions.IfNotModified,
            }

        async def put(bc: Any) -> str:
            try:
                out = await bc.upload_blob(data, **condition)
            except lost:
                raise _lost(loc, why) from None
            return out["etag"]

        return self._run(loc, put)

    def create(self, loc: Any, data: bytes) -> str:
        return self._upload(loc, data, None, "already exists")

    def replace(self, loc: Any, data: bytes, version: str) -> str:
        return self._upload(loc, data, version, "changed by another writer")

    def delete(self, loc: Any, version: str) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        async def rm(bc: Any) -> None:
            try:
                await bc.delete_blob(etag=version, match_condition=MatchConditions.IfNotModified)
            except ResourceNotFoundError:
                return
            except ResourceModifiedError:
                raise _lost(loc, "changed by another writer") from None

        self._run(loc, rm)


_BACKENDS: dict[str, Conditional] = {}
for _names, _backend in (
    (("s3", "s3a"), _S3()),
    (("gs", "gcs"), _GCS()),
    (("az", "abfs", "abfss"), _Azure()),
):
    for _name in _names:
        _BACKENDS[_name] = _backend


def backend_for(loc: Any) -> Conditional:
    """The conditional operations of ``loc``'s protocol (StorageError naming it if there are none)."""
    backend = _BACKENDS.get(loc.protocol)
    if backend is None:
        raise StorageError(
            f"{loc}: conditional writes (the per-date lock, the champion pointer) need s3://, "
            f"gs://, az:// or a local path; {loc.protocol}:// has none"
        )
    return backend
