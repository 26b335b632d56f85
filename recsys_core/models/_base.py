"""The one model contract (scikit-learn / implicit style).

* ``__init__(config)`` stores a typed pydantic config and does nothing else.
* ``fit(interactions, items=None, item_embeddings=None)`` sets learned state in ``*_`` attributes
  and returns ``self``.
* ``recommend(user_ids, k, exclude_seen=True)`` handles one user or all of them with the same call,
  scoring users in blocks so that peak memory is bounded by ``block_size x n_items`` floats.
* ``save(dir)`` / ``load(dir)`` use JSON + ``.npz`` (never pickle).

A subclass implements ``_fit``, ``_score_block`` (dense float32 scores of a block of known users
over every item) and ``_state``/``_set_state`` (arrays and JSON-able scalars to persist).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict

from recsys_core.interactions import Interactions
from recsys_core.io import atomic_path, atomic_write_json

__all__ = ["ModelConfig", "NotFittedError", "Recommender", "topk_block"]

FORMAT_VERSION = 1


class NotFittedError(RuntimeError):
    """``recommend``/``save`` called before ``fit``."""


class ModelConfig(BaseModel):
    """Base of every model's config: extra keys are errors; shared names across models."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    seed: int = 42
    """Seed of every random choice the model makes."""


def topk_block(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` columns of each row, best first, ties broken by the lower column index.

    ``scores`` is ``(n, m)`` float32 where ``-inf`` marks excluded items. Returns ``(idx, vals)``,
    each ``(n, min(k, m))``.
    """
    n, m = scores.shape
    k = min(k, m)
    if k == 0 or n == 0:
        return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0), dtype=np.float32)
    if k < m:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(m), (n, 1))
    vals = np.take_along_axis(scores, part, axis=1)
    # stable order: score descending, then item index ascending
    order = np.lexsort((part, -vals), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    return idx, np.take_along_axis(vals, order, axis=1)


class Recommender:
    """Base class of every recommender; see the module docstring for the contract."""

    name: ClassVar[str] = "base"
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    #: Whether the model uses item text embeddings (and can score items with no interactions).
    uses_embeddings: ClassVar[bool] = False

    def __init__(self, config: ModelConfig | dict[str, Any] | None = None, **params: Any) -> None:
        if config is None:
            config = self.config_class(**params)
        elif isinstance(config, dict):
            config = self.config_class(**{**config, **params})
        elif params:
            config = config.model_copy(update=params)
        self.config = self.config_class.model_validate(config.model_dump())

    # ---- public API ---------------------------------------------------------------------------
    def fit(
        self,
        interactions: Interactions,
        items: pl.DataFrame | None = None,
        item_embeddings: pl.DataFrame | None = None,
    ) -> Recommender:
        """Learn from ``interactions`` (and, for content models, ``item_embeddings``).

        Zero interactions raise :class:`ValueError` naming the class: there is nothing to learn, and
        a silently empty model would only fail later, at scoring. Items in the vocabulary with no
        interaction (catalog items) are allowed and never produce NaN scores.
        """
        if interactions.nnz == 0:
            raise ValueError(
                f"{type(self).__name__}.fit: the interactions are empty (0 user-item pairs over "
                f"{interactions.n_users} users x {interactions.n_items} items); expected at least "
                "one positive interaction. Check the training window and the event filters."
            )
        self.interactions_ = interactions
        self.user_ids_ = interactions.user_ids
        self.item_ids_ = interactions.item_ids
        self._fit(interactions, items=items, item_embeddings=item_embeddings)
        self.fitted_ = True
        return self

    def recommend(
        self,
        user_ids: str | Sequence[str] | None = None,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        block_size: int = 2048,
        candidate_items: Sequence[str] | None = None,
        exclude_items: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Top-``k`` items for each user (all known users when ``user_ids`` is None).

        Returns ``user_id, item_id, rank (1..k), score`` sorted by (user order given, rank). Unknown
        users get no rows. ``candidate_items`` restricts the items that may be recommended;
        ``exclude_items`` removes some. Seen items come from the fitted interactions' sparse rows,
        never from a dense mask.
        """
        self._check_fitted()
        if user_ids is None:
            users = list(self.user_ids_)
        elif isinstance(user_ids, str):
            users = [user_ids]
        else:
            users = list(user_ids)
        uidx = self.interactions_.user_index(users)
        known = uidx >= 0
        users_known = [u for u, ok in zip(users, known, strict=True) if ok]
        uidx = uidx[known]
        allowed = None
        if candidate_items is not None or exclude_items:
            allowed = np.ones(len(self.item_ids_), dtype=bool)
            if candidate_items is not None:
                allowed[:] = False
                ci = self.interactions_.item_index(list(candidate_items))
                allowed[ci[ci >= 0]] = True
            if exclude_items:
                ei = self.interactions_.item_index(list(exclude_items))
                allowed[ei[ei >= 0]] = False
        seen = self.interactions_.matrix
        out_u: list[np.ndarray] = []
        out_i: list[np.ndarray] = []
        out_s: list[np.ndarray] = []
        out_r: list[np.ndarray] = []
        for start in range(0, len(uidx), block_size):
            block = uidx[start : start + block_size]
            # a copy: _score_block may return a read-only view (popularity) or cached rows
            scores = np.array(self._score_block(block), dtype=np.float32, copy=True)
            if scores.shape != (len(block), len(self.item_ids_)):
                raise RuntimeError(
                    f"{type(self).__name__}._score_block returned shape {scores.shape}, expected "
                    f"{(len(block), len(self.item_ids_))}"
                )
            if exclude_seen:
                rows = seen[block]
                r = np.repeat(np.arange(len(block)), np.diff(rows.indptr))
                scores[r, rows.indices] = -np.inf
            if allowed is not None:
                scores[:, ~allowed] = -np.inf
            idx, vals = topk_block(scores, k)
            valid = np.isfinite(vals)
            rr, cc = np.nonzero(valid)
            out_u.append(np.arange(start, start + len(block))[rr])
            out_i.append(idx[rr, cc])
            out_s.append(vals[rr, cc])
            out_r.append(cc + 1)
        if not out_u:
            return _empty_recs()
        u = np.concatenate(out_u)
        i = np.concatenate(out_i)
        s = np.concatenate(out_s)
        r = np.concatenate(out_r)
        # ranks must be contiguous after dropping -inf (they are: -inf sorts last)
        return pl.DataFrame(
            {
                "user_id": np.asarray(users_known, dtype=object)[u].tolist() if len(u) else [],
                "item_id": self.item_ids_[i].tolist() if len(i) else [],
                "rank": r.astype(np.int32),
                "score": s.astype(np.float32),
            },
            schema={
                "user_id": pl.String,
                "item_id": pl.String,
                "rank": pl.Int32,
                "score": pl.Float32,
            },
        )

    def score_users(self, user_ids: Sequence[str]) -> np.ndarray:
        """Dense scores (users x all items) for known users; for tests and small lookups."""
        self._check_fitted()
        idx = self.interactions_.user_index(list(user_ids))
        if (idx < 0).any():
            raise KeyError(
                f"unknown user ids: {[u for u, i in zip(user_ids, idx, strict=True) if i < 0][:5]}"
            )
        return np.asarray(self._score_block(idx), dtype=np.float32)

    # ---- persistence --------------------------------------------------------------------------
    def save(self, directory: Path | str) -> Path:
        """Write ``model.json`` (config + scalars) and ``arrays.npz`` (learned arrays + vocab)."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays, scalars = self._state()
        m = self.interactions_.matrix.tocsr()
        payload = {
            "__user_ids": np.asarray(self.user_ids_, dtype=str),
            "__item_ids": np.asarray(self.item_ids_, dtype=str),
            "__seen_indptr": m.indptr,
            "__seen_indices": m.indices,
            "__seen_data": m.data,
            **{f"a_{k}": v for k, v in arrays.items()},
        }
        for key, value in payload.items():
            if np.asarray(value).dtype == object:
                raise TypeError(f"array {key!r} has dtype object; save would need pickle")
        with atomic_path(directory / "arrays.npz") as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **payload)
        atomic_write_json(
            directory / "model.json",
            {
                "format_version": FORMAT_VERSION,
                "model": self.name,
                "class": type(self).__name__,
                "config": self.config.model_dump(mode="json"),
                "scalars": scalars,
            },
        )
        return directory

    @classmethod
    def load(cls, directory: Path | str) -> Recommender:
        """Load a model saved by :meth:`save`; on the base class, dispatch on the saved name."""
        from recsys_core.io import read_json

        directory = Path(directory)
        meta = read_json(directory / "model.json")
        target: type[Recommender] = cls
        if cls is Recommender or cls.name != meta["model"]:
            from recsys_core.models import get_model_class

            target = get_model_class(meta["model"])
        model = target(target.config_class.model_validate(meta["config"]))
        with np.load(directory / "arrays.npz", allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        users = data.pop("__user_ids").astype(object)
        items = data.pop("__item_ids").astype(object)
        seen = sp.csr_matrix(
            (data.pop("__seen_data"), data.pop("__seen_indices"), data.pop("__seen_indptr")),
            shape=(len(users), len(items)),
        )
        inter = Interactions(matrix=seen, user_ids=users, item_ids=items)
        model.interactions_ = inter
        model.user_ids_ = users
        model.item_ids_ = items
        arrays = {k[2:]: v for k, v in data.items() if k.startswith("a_")}
        model._set_state(arrays, meta.get("scalars", {}))
        model.fitted_ = True
        return model

    # ---- to implement -------------------------------------------------------------------------
    def _fit(
        self,
        interactions: Interactions,
        *,
        items: pl.DataFrame | None,
        item_embeddings: pl.DataFrame | None,
    ) -> None:
        raise NotImplementedError

    def _score_block(self, user_index: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        raise NotImplementedError

    def _set_state(self, arrays: dict[str, np.ndarray], scalars: dict[str, Any]) -> None:
        raise NotImplementedError

    # ---- helpers ------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call fit(interactions) "
                "before recommend/save."
            )

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({params})"


def _empty_recs() -> pl.DataFrame:
    return pl.DataFrame(
        schema={"user_id": pl.String, "item_id": pl.String, "rank": pl.Int32, "score": pl.Float32}
    )


def dumps_params(params: dict[str, Any]) -> str:
    """Stable JSON of hyperparameters (numpy scalars cast)."""
    return json.dumps(
        {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}, sort_keys=True
    )
