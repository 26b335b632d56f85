"""Time-decayed popularity: every user gets the items with the most recent weight."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from pydantic import Field

from recsys_core.interactions import Interactions
from recsys_core.models._base import ModelConfig, Recommender

__all__ = ["Popularity", "PopularityConfig"]


class PopularityConfig(ModelConfig):
    half_life_days: float | None = Field(
        default=None,
        gt=0,
        description="Weight of an interaction halves every this many days before the newest one; "
        "None = no decay.",
    )


class Popularity(Recommender):
    """Item score = sum over users of ``weight * 0.5 ** (age_days / half_life_days)``."""

    name = "popularity"
    config_class = PopularityConfig

    @classmethod
    def search_space(cls, fixed: dict[str, Any]) -> list[Any]:
        """The scikit-optimize dimensions to tune, given the pinned parameters ``fixed``."""
        from skopt.space import Real  # slow to import: only when tuning

        return [Real(1.0, 365.0, prior="log-uniform", name="half_life_days")]

    def _fit(
        self,
        interactions: Interactions,
        *,
        items: pl.DataFrame | None,
        item_embeddings: pl.DataFrame | None,
    ) -> None:
        matrix = interactions.matrix.tocsr()
        m = matrix.tocoo()  # in CSR storage order
        w = m.data.astype(np.float64)
        hl = self.config.half_life_days
        if hl is not None and interactions.last_ts is not None and interactions.nnz:
            last = interactions.last_ts.tocsr()
            same_pattern = np.array_equal(last.indptr, matrix.indptr) and (
                np.array_equal(last.indices, matrix.indices)
            )
            # built together, the two matrices share one pattern: the times in the same order
            # (a scattered look-up of every pair costs seconds at 10M interactions)
            ts = last.data if same_pattern else last[m.row, m.col].A1
            age_days = (ts.max() - ts) / 86400.0
            w = w * np.power(0.5, age_days / hl)
        scores = np.bincount(m.col, weights=w, minlength=interactions.n_items)
        self.item_scores_ = scores.astype(np.float32)

    def _score_block(self, user_index: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.item_scores_, (len(user_index), len(self.item_scores_)))

    def _shared_scores(self) -> np.ndarray:
        return self.item_scores_

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"item_scores": self.item_scores_}, {}

    def _set_state(self, arrays: dict[str, np.ndarray], scalars: dict[str, Any]) -> None:
        self.item_scores_ = arrays["item_scores"].astype(np.float32)
