"""Text hybrid: collaborative scores blended with text similarity, so cold items can be recommended.

For user ``u`` and item ``j``:

* ``cf(u, j)``: an EASE or ItemKNN score, divided by the user's largest score (so 1 = the user's
  best collaborative item);
* ``text(u, j)``: cosine between item ``j``'s text vector and the centroid of the (unit) vectors
  of the user's history, weighted by interaction weight, divided by the user's largest cosine;
* ``score = (1 - text_weight) * cf + text_weight * text``.

An item with no training interaction (a *cold* catalog item) has no collaborative evidence, so its
``cf`` is imputed as ``cold_scale * text(u, j)``: with the default ``cold_scale = 1`` a cold item
is ranked by its text alone, on the same 0..1 scale as a warm item's blended score.

Item vectors come from the ``item_embeddings`` frame (``item_id, vector``: a fixed-size Array or a
List of floats); catalog items missing from it get a zero vector (text score 0). Without any
embeddings the model falls back to its collaborative part and warns
(:class:`MissingEmbeddingsWarning`); cold items then score 0.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import Field

from recsys_core.interactions import Interactions
from recsys_core.models._base import ModelConfig, Recommender
from recsys_core.models.ease import EASE
from recsys_core.models.itemknn import ItemKNN

__all__ = ["Hybrid", "HybridConfig", "MissingEmbeddingsWarning", "unit_item_vectors"]


class MissingEmbeddingsWarning(UserWarning):
    """The hybrid was fit without item embeddings: it ranks by its collaborative part only."""


class HybridConfig(ModelConfig):
    base: Literal["ease", "itemknn"] = Field(default="ease", description="Collaborative part.")
    text_weight: float = Field(
        default=0.2, ge=0, le=1, description="Blend weight of the text part (0 = pure CF)."
    )
    cold_scale: float = Field(
        default=1.0,
        ge=0,
        le=2,
        description="Imputed collaborative score of a cold item, as a multiple of its text score.",
    )
    reg: float = Field(default=250.0, gt=0, description="EASE regularisation (base='ease').")
    neighbors: int = Field(default=100, ge=1, description="ItemKNN neighbours (base='itemknn').")
    shrink: float = Field(default=10.0, ge=0, description="ItemKNN shrinkage (base='itemknn').")
    binarize: bool = Field(default=True, description="Collaborative part on 0/1 interactions.")


def unit_item_vectors(item_embeddings: pl.DataFrame, item_ids: np.ndarray) -> np.ndarray:
    """Unit-norm float32 vectors aligned with ``item_ids`` (zero rows for items without one).

    ``item_embeddings`` needs ``item_id`` (string) and ``vector`` (Array or List of numbers, one
    length for every row). Raises ValueError naming the column and row otherwise.
    """
    for col in ("item_id", "vector"):
        if col not in item_embeddings.columns:
            raise ValueError(
                f"item_embeddings: missing column {col!r}; found {item_embeddings.columns}, "
                "expected item_id and vector"
            )
    emb = item_embeddings.select(pl.col("item_id").cast(pl.String), "vector").unique(
        "item_id", keep="last", maintain_order=True
    )
    dtype = emb.schema["vector"]
    if isinstance(dtype, pl.List):
        lengths = emb["vector"].list.len()
        if lengths.n_unique() > 1:
            bad = emb.filter(lengths != lengths[0]).row(0, named=True)["item_id"]
            raise ValueError(
                f"item_embeddings: column 'vector' has rows of different lengths (item {bad!r} "
                f"differs from {int(lengths[0])}); expected one fixed dimension"
            )
        dim = int(lengths[0]) if emb.height else 0
        emb = emb.with_columns(pl.col("vector").cast(pl.Array(pl.Float32, dim)))
    elif not isinstance(dtype, pl.Array):
        raise ValueError(
            f"item_embeddings: column 'vector' is {dtype}, expected Array or List of floats"
        )
    vecs = emb["vector"].cast(pl.Array(pl.Float32, emb.schema["vector"].size)).to_numpy()
    vecs = np.asarray(vecs, dtype=np.float32).reshape(emb.height, -1)
    if not np.isfinite(vecs).all():
        bad = emb["item_id"][int(np.nonzero(~np.isfinite(vecs).all(axis=1))[0][0])]
        raise ValueError(f"item_embeddings: vector of item {bad!r} has NaN/inf values")
    out = np.zeros((len(item_ids), vecs.shape[1]), dtype=np.float32)
    index = {t: i for i, t in enumerate(item_ids)}
    pos = np.fromiter((index.get(t, -1) for t in emb["item_id"]), dtype=np.int64, count=emb.height)
    ok = pos >= 0
    out[pos[ok]] = vecs[ok]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def _scale_rows(s: np.ndarray) -> np.ndarray:
    """Divide each row by its maximum when positive (rows with no positive entry are left as is)."""
    top = s.max(axis=1, keepdims=True) if s.shape[1] else np.ones((len(s), 1), np.float32)
    return np.divide(s, top, out=s, where=top > 0)


class Hybrid(Recommender):
    """Collaborative filtering (EASE / ItemKNN) blended with item-text similarity."""

    name = "hybrid"
    config_class = HybridConfig
    uses_embeddings = True

    @classmethod
    def search_space(cls, fixed: dict[str, Any]) -> list[Any]:
        """The scikit-optimize dimensions to tune, given the pinned parameters ``fixed``."""
        from skopt.space import Integer, Real  # slow to import: only when tuning

        dims = [Real(0.0, 1.0, name="text_weight"), Real(0.0, 2.0, name="cold_scale")]
        if fixed.get("base", "ease") == "ease":
            dims.append(Real(1.0, 1e4, prior="log-uniform", name="reg"))
        else:
            dims += [
                Integer(5, 500, prior="log-uniform", name="neighbors"),
                Real(0.1, 500.0, prior="log-uniform", name="shrink"),
            ]
        return dims

    def _base_model(self) -> Recommender:
        cfg = self.config
        if cfg.base == "ease":
            return EASE(reg=cfg.reg, binarize=cfg.binarize, seed=cfg.seed)
        return ItemKNN(
            neighbors=cfg.neighbors, shrink=cfg.shrink, binarize=cfg.binarize, seed=cfg.seed
        )

    def _fit(
        self,
        interactions: Interactions,
        *,
        items: pl.DataFrame | None,
        item_embeddings: pl.DataFrame | None,
    ) -> None:
        self.base_ = self._base_model().fit(interactions)
        if item_embeddings is None or item_embeddings.height == 0:
            warnings.warn(
                f"{type(self).__name__}.fit: no item embeddings given; ranking by the "
                f"collaborative part ({self.config.base}) only, cold items score 0",
                MissingEmbeddingsWarning,
                stacklevel=3,
            )
            self.item_vectors_ = np.zeros((interactions.n_items, 0), dtype=np.float32)
        else:
            self.item_vectors_ = unit_item_vectors(item_embeddings, interactions.item_ids)
        self.cold_ = np.asarray(interactions.matrix.getnnz(axis=0) == 0)

    def _score_block(self, user_index: np.ndarray) -> np.ndarray:
        cfg = self.config
        cf = _scale_rows(np.array(self.base_._score_block(user_index), dtype=np.float32))
        if self.item_vectors_.shape[1] == 0:
            cf[:, self.cold_] = 0.0
            return cf
        hist = self.interactions_.matrix[user_index].astype(np.float32)
        centroid = np.asarray(hist @ self.item_vectors_, dtype=np.float32)
        norms = np.linalg.norm(centroid, axis=1, keepdims=True)
        np.divide(centroid, norms, out=centroid, where=norms > 0)
        # float64 product rounded to float32: independent of the block size (see ALS._score_block)
        text = (centroid.astype(np.float64) @ self.item_vectors_.T.astype(np.float64)).astype(
            np.float32
        )
        text = _scale_rows(text)
        cf[:, self.cold_] = cfg.cold_scale * text[:, self.cold_]
        return (1.0 - cfg.text_weight) * cf + cfg.text_weight * text

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, _ = self.base_._state()
        return {
            **{f"base_{k}": v for k, v in arrays.items()},
            "item_vectors": self.item_vectors_,
            "cold": self.cold_,
        }, {}

    def _set_state(self, arrays: dict[str, np.ndarray], scalars: dict[str, Any]) -> None:
        base = self._base_model()
        base._set_state({k[5:]: v for k, v in arrays.items() if k.startswith("base_")}, {})
        base.interactions_ = self.interactions_
        base.user_ids_ = self.user_ids_
        base.item_ids_ = self.item_ids_
        base.fitted_ = True
        self.base_ = base
        self.item_vectors_ = arrays["item_vectors"].astype(np.float32)
        self.cold_ = arrays["cold"].astype(bool)
