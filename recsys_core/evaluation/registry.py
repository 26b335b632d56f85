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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from recsys_core.io import atomic_write_json, atomic_write_text, read_json, replace_dir
from recsys_core.io._atomic import TMP_PREFIX
from recsys_core.models import Recommender

__all__ = ["MODEL_ID_RE", "ModelRegistry", "UnknownModelError", "make_model_id"]

#: A safe model id: lowercase letters, digits, ``-`` and ``_``; starts with a letter or digit.
MODEL_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,127}$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")
ENTRY_FILE = "entry.json"
CHAMPION_FILE = "champion.json"
HISTORY_FILE = "history.jsonl"


class UnknownModelError(LookupError):
    """A model id that is not in the registry (the message lists the known ones)."""


def _check_id(model_id: str) -> str:
    if not isinstance(model_id, str) or not MODEL_ID_RE.match(model_id):
        raise ValueError(
            f"model id {model_id!r} is not safe as a folder name; expected lowercase letters, "
            f"digits, '-' and '_' (regex {MODEL_ID_RE.pattern}), for example from make_model_id()"
        )
    return model_id


def make_model_id(name: str, run_date: dt.date | str, params: dict[str, Any]) -> str:
    """``<name>-<YYYY-MM-DD>-<8 hex>`` where the hex is a hash of the sorted-JSON ``params``.

    >>> make_model_id("ease", dt.date(2026, 1, 31), {"reg": 250.0})
    'ease-2026-01-31-1c4e0917'
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"model name {name!r} must be lowercase letters, digits and '_' (regex {_NAME_RE.pattern})"
        )
    day = run_date if isinstance(run_date, dt.date) else dt.date.fromisoformat(str(run_date))
    blob = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    digest = hashlib.sha256(blob.encode("utf-8")).hexdigest()[:8]
    return _check_id(f"{name}-{day.isoformat()}-{digest}")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


class ModelRegistry:
    """Registry rooted at ``root`` (normally ``Warehouse(...).models_dir``)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

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
            atomic_write_json(staged / ENTRY_FILE, entry)
            replace_dir(staged, self.root / model_id)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return read_json(self.root / model_id / ENTRY_FILE)

    def promote(self, model_id: str, reason: str) -> dict[str, Any]:
        """Make ``model_id`` the champion; returns the new ``champion.json`` content.

        Promoting the current champion again only refreshes its reason (the chain is unchanged).
        """
        self.entry(model_id)  # must exist
        with self._lock():
            pointer = self._pointer()
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
            self._commit(new, action="promote")
        return new

    def rollback(self, reason: str = "manual rollback") -> dict[str, Any]:
        """Make the previous champion (newest earlier one that still exists) champion again."""
        with self._lock():
            pointer = self._pointer()
            if pointer is None:
                raise RuntimeError(
                    f"{self.root / CHAMPION_FILE}: no champion, nothing to roll back"
                )
            chain = list(pointer.get("previous", []))
            while chain and not (self.root / chain[-1] / ENTRY_FILE).is_file():
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
            self._commit(new, action="rollback", rolled_back=pointer["model_id"])
        return new

    # ---- reading ------------------------------------------------------------------------------
    def ids(self) -> list[str]:
        """Ids of every registered model (folders with an ``entry.json``), sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and MODEL_ID_RE.match(p.name) and (p / ENTRY_FILE).is_file()
        )

    def entry(self, model_id: str) -> dict[str, Any]:
        """The entry of ``model_id``; :class:`UnknownModelError` (listing known ids) if absent."""
        _check_id(model_id)
        path = self.root / model_id / ENTRY_FILE
        if not path.is_file():
            known = self.ids()
            raise UnknownModelError(
                f"no model {model_id!r} in registry {self.root}; known ids: "
                f"{', '.join(known) if known else '(none)'}"
            )
        return read_json(path)

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

    def history(self) -> list[dict[str, Any]]:
        """The audit log, oldest first."""
        path = self.root / HISTORY_FILE
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]

    def load_model(self, model_id: str) -> Recommender:
        """Load the saved model of ``model_id`` (unknown id: :class:`UnknownModelError`)."""
        self.entry(model_id)
        return Recommender.load(self.root / model_id)

    def model_dir(self, model_id: str) -> Path:
        self.entry(model_id)
        return self.root / model_id

    # ---- internals ----------------------------------------------------------------------------
    def _pointer(self) -> dict[str, Any] | None:
        path = self.root / CHAMPION_FILE
        if not path.is_file():
            return None
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("model_id"), str):
            raise ValueError(f"{path}: expected an object with a 'model_id' string, found {data!r}")
        return data

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
