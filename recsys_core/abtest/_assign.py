"""Assignment of users to arms by a hash of (salt, user_id).

The hash (SHA-256 of ``"<salt>:<user_id>"``, first 8 bytes as an integer over 2**64) is a uniform
number in [0, 1) that depends on nothing but the salt and the id: a user keeps their arm from
night to night, every worker computes the same arm, and a new user is assigned the same way.
Arms own consecutive slices of [0, 1) in the configured order, as wide as their shares.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import numpy as np
import polars as pl

__all__ = ["assign_arms", "bucket"]

_SCALE = float(2**64)


def bucket(salt: str, user_id: str) -> float:
    """The user's position in [0, 1) for ``salt``."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def assign_arms(user_ids: Iterable[str], shares: Mapping[str, float], salt: str) -> pl.DataFrame:
    """``user_id, arm`` for every user (input order kept). ``shares``: arm -> share, in order."""
    if not shares:
        raise ValueError("assign_arms needs at least one arm")
    total = sum(shares.values())
    if abs(total - 1.0) > 1e-9 or any(s <= 0 for s in shares.values()):
        raise ValueError(f"arm shares {dict(shares)} must be positive and sum to 1, sum {total}")
    users = list(user_ids)
    u = np.fromiter((bucket(salt, x) for x in users), dtype=np.float64, count=len(users))
    names = list(shares)
    edges = np.cumsum([shares[a] for a in names])[:-1]
    idx = np.searchsorted(edges, u, side="right")
    return pl.DataFrame(
        {
            "user_id": pl.Series(users, dtype=pl.String),
            "arm": pl.Series([names[i] for i in idx], dtype=pl.String),
        }
    )
