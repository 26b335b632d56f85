"""A model registry on disk: every trained model, which one is champion, and how it got there.

::

    <warehouse>/models/
      <model_id>/model.json, arrays.npz   the model (Recommender.save)
      <model_id>/entry.json               name, params, data window, metrics, code/embedding version
      champion.json                       {"model_id", "reason", "promoted_at", "previous": [...]}
      history.jsonl                       audit log: one JSON object per promote/rollback

Every change is one atomic rename: a model directory is written under a hidden temporary name and
renamed into place (:func:`recsys_core.io.replace_dir`); ``champion.json`` is written to a temporary
file and renamed over the old one. A crash at any point leaves the old or the new state, never a
pointer to a half-written model. ``champion.json`` carries the stack of earlier champions
(``previous``, newest last), so the current champion and the rollback chain change together;
``history.jsonl`` (rewritten atomically, after the pointer) is the human-readable audit trail.

On an object store (``s3://``, ``gs://``, ``az://``: no rename, no ``flock``) the same guarantees
come from a pointer published last: a model's files are uploaded under ``<model_id>/v-<unique>/``
and ``entry.json`` (one PUT, naming that folder in ``files`` and its files with the versions
their uploads returned in ``file_versions``) is written after them, so a reader sees the old
complete model or the new one; ``champion.json`` and ``history.jsonl`` are replaced with
compare-and-swap writes (``If-Match`` on the version read, the ETag or GCS generation;
``If-None-Match`` when absent), retried when another writer got there first. Loading downloads
the files the entry names into a temporary folder, without listing it.

Model ids are generated (:func:`make_model_id`) and validated against :data:`MODEL_ID_RE`; ids from
data never become paths.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from recsys_core.io import (
    atomic_write_json,
    atomic_write_text,
    delete_tree,
    exists,
    is_remote,
    list_names,
    local_copy,
    location,
    read_bytes,
    read_json,
    replace_dir,
    update_if_match,
    upload_dir,
)
from recsys_core.io._atomic import TMP_PREFIX
from recsys_core.models import Recommender

__all__ = ["MODEL_ID_RE", "ModelRegistry", "UnknownModelError", "make_model_id"]

#: A safe model id: lowercase letters, digits, ``-`` and ``_``; starts with a letter or digit.
MODEL_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,127}$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")
ENTRY_FILE = "entry.json"
CHAMPION_FILE = "champion.json"
HISTORY_FILE = "history.jsonl"
#: Models kept in memory per process by ``load_model(..., cached=True)`` (scoring shards on one
#: worker share the champion instead of loading it once per shard).
_CACHE_SIZE = 4
_cache: OrderedDict[tuple[str, str, str], Recommender] = OrderedDict()
_cache_lock = threading.Lock()
#: One lock per model being loaded (see :meth:`ModelRegistry.load_model`).
_loading: dict[tuple[str, str, str], threading.Lock] = {}


class UnknownModelError(LookupError):
    """A model id that is not in the registry (the message lists the known ones)."""


def _check_id(model_id: str) -> str:
    if not isinstance(model_id, str) or not MODEL_ID_RE.match(model_id):
        raise ValueError(
            f"model id {model_id!r} is not safe as a folder name; expected lowercase letters, "
            f"digits, '-' and '_' (regex {MODEL_ID_RE.pattern}), for example from make_model_id()"
        )
    return model_id


def make_model_id(name: str, run_date: dt.date | str | None, params: dict[str, Any]) -> str:
    """The one model-id scheme: ``<name>-<YYYY-MM-DD>-<8 hex>`` for a model trained for a run
    date (the nightly's registry), ``<name>-<8 hex>`` without one (``recsys experiment``); the
    hex is a SHA-256 of the sorted-JSON ``params``. Both match :data:`MODEL_ID_RE`.

    >>> make_model_id("ease", dt.date(2026, 1, 31), {"reg": 250.0})
    'ease-2026-01-31-1c4e0917'
    >>> make_model_id("ease", None, {"reg": 250.0})
    'ease-1c4e0917'
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"model name {name!r} must be lowercase letters, digits and '_' (regex {_NAME_RE.pattern})"
        )
    blob = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    digest = hashlib.sha256(blob.encode("utf-8")).hexdigest()[:8]
    if run_date is None:
        return _check_id(f"{name}-{digest}")
    day = run_date if isinstance(run_date, dt.date) else dt.date.fromisoformat(str(run_date))
    return _check_id(f"{name}-{day.isoformat()}-{digest}")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


class ModelRegistry:
    """Registry rooted at ``root`` (normally ``Warehouse(...).models_dir``)."""

    def __init__(self, root: Any) -> None:
        self.root = location(root)

    # ---- writing ------------------------------------------------------------------------------
    def register(
        self,
        model: Recommender | Path | str,
        *,
        model_id: str,
        name: str,
        params: dict[str, Any],
        data_window: dict[str, Any],
        metrics: dict[str, Any],
        code_version: str,
        embedding_model_id: str | None,
        run_date: dt.date | str,
    ) -> dict[str, Any]:
        """Store a fitted model (or a directory written by ``Recommender.save``) as ``model_id``.

        Re-registering an existing id replaces it (an idempotent re-run of the same night).
        Returns the entry (also written to ``<model_id>/entry.json``).
        """
        _check_id(model_id)
        day = run_date if isinstance(run_date, dt.date) else dt.date.fromisoformat(str(run_date))
        entry = {
            "model_id": model_id,
            "name": name,
            "params": params,
            "data_window": data_window,
            "metrics": metrics,
            "code_version": code_version,
            "embedding_model_id": embedding_model_id,
            "run_date": day.isoformat(),
            "created_at": _now(),
        }
        if is_remote(self.root):
            return self._register_remote(model, model_id, entry)
        self.root.mkdir(parents=True, exist_ok=True)
        staged = self.root / f"{TMP_PREFIX}{uuid.uuid4().hex}-{model_id}"
        try:
            if isinstance(model, Recommender):
                model.save(staged)
            else:
                src = Path(model)
                if not (src / "model.json").is_file():
                    raise FileNotFoundError(
                        f"{src} holds no model.json; expected a directory written by "
                        "Recommender.save() or a fitted Recommender"
                    )
                shutil.copytree(src, staged)
            atomic_write_json(staged / ENTRY_FILE, entry)
            replace_dir(staged, self.root / model_id)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return read_json(self.root / model_id / ENTRY_FILE)

    def _register_remote(
        self, model: Recommender | Path | str, model_id: str, entry: dict[str, Any]
    ) -> dict[str, Any]:
        """Upload under a unique folder, then publish ``entry.json`` naming it (the commit)."""
        version = f"v-{uuid.uuid4().hex[:16]}"
        with tempfile.TemporaryDirectory(prefix="recsys-model-") as tmp:
            staged = Path(tmp) / "model"
            if isinstance(model, Recommender):
                model.save(staged)
            else:
                src = location(model)
                with local_copy(src) as local:
                    if not (local / "model.json").is_file():
                        raise FileNotFoundError(
                            f"{src} holds no model.json; expected a directory written by "
                            "Recommender.save() or a fitted Recommender"
                        )
                    shutil.copytree(local, staged)
            uploaded = upload_dir(staged, self.root / model_id / version)
        # the folder's files and their versions: a loader fetches them without listing it (the
        # folder's name is unique, so what it holds never changes)
        entry = {**entry, "files": version, "file_versions": uploaded}
        atomic_write_json(self.root / model_id / ENTRY_FILE, entry)
        for name in list_names(self.root / model_id):  # earlier uploads of this id
            if name.startswith("v-") and name != version:
                delete_tree(self.root / model_id / name)
        return entry

    def promote(self, model_id: str, reason: str) -> dict[str, Any]:
        """Make ``model_id`` the champion; returns the new ``champion.json`` content.

        Promoting the current champion again only refreshes its reason (the chain is unchanged).
        """
        self.entry(model_id)  # must exist

        def change(pointer: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
            previous: list[str] = []
            if pointer is not None:
                previous = list(pointer.get("previous", []))
                if pointer["model_id"] != model_id:
                    previous.append(pointer["model_id"])
            new = {
                "model_id": model_id,
                "reason": reason,
                "promoted_at": _now(),
                "previous": previous,
            }
            return new, {"action": "promote"}

        return self._update(change)

    def rollback(self, reason: str = "manual rollback") -> dict[str, Any]:
        """Make the previous champion (newest earlier one that still exists) champion again."""

        def change(pointer: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
            if pointer is None:
                raise RuntimeError(
                    f"{self.root / CHAMPION_FILE}: no champion, nothing to roll back"
                )
            chain = list(pointer.get("previous", []))
            while chain and not exists(self.root / chain[-1] / ENTRY_FILE):
                chain.pop()  # a deleted model cannot serve again
            if not chain:
                raise RuntimeError(
                    f"champion {pointer['model_id']!r} has no earlier champion still in "
                    f"{self.root}; nothing to roll back to"
                )
            target = chain.pop()
            new = {
                "model_id": target,
                "reason": f"rollback from {pointer['model_id']}: {reason}",
                "promoted_at": _now(),
                "previous": chain,
            }
            return new, {"action": "rollback", "rolled_back": pointer["model_id"]}

        return self._update(change)

    # ---- reading ------------------------------------------------------------------------------
    def ids(self) -> list[str]:
        """Ids of every registered model (folders with an ``entry.json``), sorted."""
        return sorted(
            name
            for name in list_names(self.root)
            if MODEL_ID_RE.match(name) and exists(self.root / name / ENTRY_FILE)
        )

    def entry(self, model_id: str) -> dict[str, Any]:
        """The entry of ``model_id``; :class:`UnknownModelError` (listing known ids) if absent."""
        _check_id(model_id)
        path = self.root / model_id / ENTRY_FILE
        try:
            return read_json(path)  # one request on an object store (no existence check first)
        except FileNotFoundError:
            known = self.ids()
            raise UnknownModelError(
                f"no model {model_id!r} in registry {self.root}; known ids: "
                f"{', '.join(known) if known else '(none)'}"
            ) from None

    get = entry

    def list(self) -> list[dict[str, Any]]:
        """Every entry, oldest first (by run date, then creation time, then id)."""
        entries = [self.entry(i) for i in self.ids()]
        return sorted(entries, key=lambda e: (e["run_date"], e["created_at"], e["model_id"]))

    def champion(self) -> dict[str, Any] | None:
        """The champion's entry plus ``promoted_at``/``promotion_reason``; None before any promote."""
        pointer = self._pointer()
        if pointer is None:
            return None
        try:
            entry = self.entry(pointer["model_id"])
        except UnknownModelError as exc:
            raise UnknownModelError(
                f"{self.root / CHAMPION_FILE} names a missing model: {exc}"
            ) from None
        return {
            **entry,
            "promoted_at": pointer["promoted_at"],
            "promotion_reason": pointer["reason"],
        }

    def champion_id(self) -> str | None:
        """The champion's model id from the pointer alone (one read, its entry not opened); None
        before any promote."""
        pointer = self._pointer()
        return None if pointer is None else pointer["model_id"]

    def history(self) -> list[dict[str, Any]]:
        """The audit log, oldest first."""
        path = self.root / HISTORY_FILE
        try:
            text = read_bytes(path).decode("utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line]

    def load_model(
        self, model_id: str, *, cached: bool = False, entry: dict[str, Any] | None = None
    ) -> Recommender:
        """Load the saved model of ``model_id`` (unknown id: :class:`UnknownModelError`).

        ``cached=True`` keeps it in this process's memory, keyed by the registry, the id and the
        entry's creation time (a re-registered id is loaded afresh): a worker scoring several
        shards loads the champion once. Callers must not modify a cached model.
        ``entry``: the entry of ``model_id`` the caller has just read (:meth:`champion`'s
        result), so that it is not read again.
        """
        if entry is None or entry.get("model_id") != model_id:
            entry = self.entry(model_id)
        key = (str(self.root), model_id, f"{entry['created_at']}/{entry.get('files', '')}")
        if not cached:
            return self._load(model_id, entry)
        with _cache_lock:
            loading = _loading.setdefault(key, threading.Lock())
        with loading:  # shards scoring at once in one process: the first loads, the others wait
            with _cache_lock:
                if key in _cache:
                    _cache.move_to_end(key)
                    return _cache[key]
            model = self._load(model_id, entry)
            with _cache_lock:
                _cache[key] = model
                while len(_cache) > _CACHE_SIZE:
                    _cache.popitem(last=False)
                _loading.pop(key, None)
        return model

    def _load(self, model_id: str, entry: dict[str, Any]) -> Recommender:
        files = entry.get("files")  # ``<id>/v-.../`` on an object store, else ``<id>/``
        folder = self.root / model_id / files if files else self.root / model_id
        # an entry written before ``file_versions`` was recorded: the folder is listed
        with local_copy(folder, entry.get("file_versions")) as local:
            return Recommender.load(local)

    # ---- internals ----------------------------------------------------------------------------
    def _pointer(self) -> dict[str, Any] | None:
        try:
            return self._check_pointer(read_json(self.root / CHAMPION_FILE))
        except FileNotFoundError:
            return None

    def _check_pointer(self, data: Any) -> dict[str, Any]:
        path = self.root / CHAMPION_FILE
        if not isinstance(data, dict) or not isinstance(data.get("model_id"), str):
            raise ValueError(f"{path}: expected an object with a 'model_id' string, found {data!r}")
        return data

    def _update(self, change: Any) -> dict[str, Any]:
        """Read the pointer, compute the new one with ``change``, swap it in (the commit point),
        then append the audit line. Local disk: under ``flock``. Object store: compare-and-swap on
        the pointer's ETag, re-read and recomputed when another writer changed it first."""
        if not is_remote(self.root):
            with self._lock():
                new, extra = change(self._pointer())
                self._commit(new, **extra)
            return new
        path = self.root / CHAMPION_FILE
        done: list[tuple[dict[str, Any], dict[str, Any]]] = []

        def swap(content: bytes | None) -> bytes:
            pointer = None
            if content is not None:
                try:
                    pointer = self._check_pointer(json.loads(content))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}: corrupt JSON ({exc})") from exc
            new, extra = change(pointer)
            done[:] = [(new, extra)]
            return (json.dumps(new, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()

        update_if_match(path, swap)
        new, extra = done[0]
        self._append_history(new, **extra)
        return new

    def _append_history(self, pointer: dict[str, Any], **extra: Any) -> None:
        """Append one audit line with compare-and-swap (object store)."""
        line = json.dumps(self._history_line(pointer, **extra), sort_keys=True)
        update_if_match(
            self.root / HISTORY_FILE,
            lambda content: (content or b"") + (line + "\n").encode(),
        )

    @staticmethod
    def _history_line(pointer: dict[str, Any], *, action: str, **extra: Any) -> dict[str, Any]:
        return {
            "action": action,
            "model_id": pointer["model_id"],
            "reason": pointer["reason"],
            "at": pointer["promoted_at"],
            **extra,
        }

    def _commit(self, pointer: dict[str, Any], *, action: str, **extra: Any) -> None:
        """Swap the pointer (the commit point), then append the audit line."""
        atomic_write_json(self.root / CHAMPION_FILE, pointer)
        line = {
            "action": action,
            "model_id": pointer["model_id"],
            "reason": pointer["reason"],
            "at": pointer["promoted_at"],
            **extra,
        }
        lines = [json.dumps(e, sort_keys=True) for e in self.history()]
        lines.append(json.dumps(line, sort_keys=True))
        atomic_write_text(self.root / HISTORY_FILE, "\n".join(lines) + "\n")

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise read-modify-write of the pointer across processes (``flock``)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".registry.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
