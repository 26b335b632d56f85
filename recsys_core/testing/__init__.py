"""Test helpers shipped with the library: contract-test mixins and tiny known-answer fixtures.

``RecommenderContract`` needs pytest, so it is imported lazily: importing this package does not
import pytest.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RecommenderContract", "checkerboard", "parity_embeddings"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from recsys_core.testing import contract

        return getattr(contract, name)
    raise AttributeError(f"module 'recsys_core.testing' has no attribute {name!r}")
