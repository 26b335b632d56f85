"""A bounded, seeded sample of users for the search (the chosen parameters are refit on all users).

A search call fits a model on the training interactions and ranks the catalogue for every
validation user, so its cost grows with the number of users; above a few tens of thousands of
users a sample ranks the candidate parameters as well as all users do, for a fraction of the time.
Mature systems tune on a sample and refit on everything; this module draws that sample.

The sample is decided user by user: a user is kept when the keyed hash (BLAKE2b, keyed by the
seed) of their id is among the ``max_users`` smallest. The same ids and seed always give the same
sample, whatever the order of the rows, and a user who is sampled tonight stays sampled tomorrow
unless enough new users hash below them (the search's users drift slowly as the data grows).
"""

from __future__ import annotations

import hashlib

import numpy as np

from recsys_core.interactions import Interactions

__all__ = ["sample_users"]


def _user_keys(user_ids: np.ndarray, seed: int) -> np.ndarray:
    """A 64-bit keyed hash of each id (unsigned ints, one per user)."""
    key = str(seed).encode()
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(str(u).encode(), digest_size=8, key=key).digest(), "big")
            for u in user_ids
        ),
        dtype=np.uint64,
        count=len(user_ids),
    )


def sample_users(train: Interactions, max_users: int | None, seed: int) -> Interactions:
    """``train`` restricted to a seeded sample of at most ``max_users`` users (rows).

    Returns ``train`` itself (not a copy) when it has no more than ``max_users`` users or
    ``max_users`` is None: small data is searched exactly as before. Otherwise the kept users'
    rows, in the original (sorted) order, over the same item vocabulary; the timestamps
    (``last_ts``) follow their rows.
    """
    if max_users is None or train.n_users <= max_users:
        return train
    if max_users < 1:
        raise ValueError(f"sample_users: max_users must be >= 1 or None, got {max_users}")
    keys = _user_keys(train.user_ids, seed)
    # smallest keys first; equal keys (practically never) broken by the position, i.e. by the id
    order = np.lexsort((np.arange(train.n_users), keys))
    rows = np.sort(order[:max_users])
    return Interactions(
        matrix=train.matrix[rows],
        user_ids=train.user_ids[rows],
        item_ids=train.item_ids,
        last_ts=None if train.last_ts is None else train.last_ts[rows],
    )
