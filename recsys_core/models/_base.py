"""The one model contract (scikit-learn / implicit style).

* ``__init__(config)`` stores a typed pydantic config and does nothing else.
* ``fit(interactions, items=None, item_embeddings=None)`` sets learned state in ``*_`` attributes
  and returns ``self``.
* ``recommend(user_ids, k, exclude_seen=True)`` handles one user or all of them with the same call,
  scoring users in blocks so that peak memory is bounded by ``threads x block_size x n_items``
  floats (plus 1/8 of that for group maxima); a model with factors needs only one tile of about
  2 MB per thread.
* ``save(dir)`` / ``load(dir)`` use JSON + ``.npz`` (never pickle).

A subclass implements ``_fit``, ``_score_block`` (dense float32 scores of a block of known users
over every item) and ``_state``/``_set_state`` (arrays and JSON-able scalars to persist). A model
whose scores are a product of factors may also declare ``_factors``: ``recommend`` then computes
each block one item tile at a time into one per-thread buffer and takes from every tile, while it
is in cache, the few groups of scores that can still hold a user's top K (:class:`_TileTopK`).
The top-K is exact either way (:class:`_Pruned`, :class:`_TileTopK`; ``tests/test_topk.py``
checks both against a sort).
"""

from __future__ import annotations

import threading
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict
from threadpoolctl import threadpool_limits

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


_NEG = np.float32(-np.inf)
_LOWEST = np.finfo(np.float32).min  # a threshold at least this captures no -inf and no NaN
#: Level-1 groups hold ``_C1`` strided columns of a block, level-2 groups ``_C2`` level-1 groups;
#: the dense path prunes when a row has at least ``_MIN_GROUPS_PER_K * k`` level-2 groups, else
#: with the smaller groups ``(4, 2)``, else it sorts. The factor path uses level-1 groups of
#: ``_C1`` and needs ``_MIN_GROUPS_PER_K * k`` of them per tile.
_C1, _C2 = 8, 16
_MIN_GROUPS_PER_K = 4
#: Bytes of the one score tile per thread of the factor path: the product, the seen items and the
#: group maxima all run on it while it is in cache, and it is reused for every tile.
_TILE_BYTES = 1 << 21
#: Users per block of the factor path (at most ``block_size``).
_FACTOR_ROWS = 512
#: The factor path raises its per-row lower bound after these tiles (and at the end): the bound
#: tightens fast at first, then slowly; each raise costs a sort of ``rows x 3k`` group maxima.
_BOUND_TILES = frozenset({0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024})


def _sort_keys(vals: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """int64 keys whose ascending order is (score descending, column ascending); NaN as -inf."""
    v = np.where(np.isnan(vals), np.float32(-np.inf), vals).astype(np.float32) + np.float32(0.0)
    bits = v.view(np.int32)  # -0.0 became +0.0 above; now a monotone integer order of floats
    mono = np.where(bits >= 0, bits, bits ^ np.int32(0x7FFFFFFF)).astype(np.int64)
    return ((-mono) << 32) | cols.astype(np.int64)


def _topk_exact(vals: np.ndarray, cols: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of each row of ``vals`` (column ids ``cols``) by a full sort key, exactly."""
    keys = _sort_keys(vals, cols)
    if k < keys.shape[1]:
        part = np.argpartition(keys, k - 1, axis=1)[:, :k]
        keys = np.take_along_axis(keys, part, axis=1)
    else:
        part = np.broadcast_to(np.arange(keys.shape[1]), keys.shape)
    part = np.take_along_axis(part, np.argsort(keys, axis=1), axis=1)
    return np.take_along_axis(cols, part, axis=1), np.take_along_axis(vals, part, axis=1)


def _group_sizes(width: int, k: int) -> tuple[int, int] | None:
    """``(c1, c2)`` for rows of ``width`` scores, or None when they are too few to prune: each
    row needs ``_MIN_GROUPS_PER_K * k`` level-2 groups of ``c1 * c2`` scores."""
    for c1, c2 in ((_C1, _C2), (4, 2)):
        if width // (c1 * c2) >= _MIN_GROUPS_PER_K * k:
            return c1, c2
    return None


def _fmax_rows(parts: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.fmax.reduce(parts, axis=0)`` as one ``fmax`` per slice: the same values, about
    three times faster than numpy's reduction over a leading axis (numpy 2.4)."""
    if len(parts) == 1:
        if out is None:
            return parts[0].copy()
        out[...] = parts[0]
        return out
    out = np.fmax(parts[0], parts[1], out=out)
    for part in parts[2:]:
        np.fmax(out, part, out=out)
    return out


class _Pruned:
    """Exact top-``k`` of the rows of a dense score block by two levels of strided group maxima.

    The block is ``scores[r, :width]`` (``width`` a multiple of ``c1 * c2``) plus ``tail``
    columns ``scores[r, width:]``. Level-1 group ``(r, j)`` is the ``c1`` columns ``j + n1 * i``
    (``n1 = width / c1``); level-2 group ``(r, j)`` is the level-1 groups ``j + n2 * i`` for
    ``i < c2`` (``n2 = n1 / c2``). Every reduction runs along long contiguous rows.

    Let ``T`` be the ``k``-th largest level-2 maximum of row ``r`` (level 2 only makes this
    partition small): at least ``k`` scores are ``>= T`` (the ``k`` maxima), so every top-``k``
    score is ``>= T`` and lies in a level-1 group whose maximum is ``>= T``; only those groups
    (about ``k`` per row, ``c1`` scores each) are read again. Ties at ``T`` are
    all kept and ranked by column, so the result is the full sort's. NaN ranks as ``-inf``
    (``fmax`` skips it); ``-inf`` and NaN are never candidates. A row with fewer than ``k``
    level-2 groups above ``-inf`` keeps every score above ``-inf``.
    """

    def __init__(self, scores: np.ndarray, width: int, sizes: tuple[int, int]) -> None:
        self.scores, self.b, self.width = scores, scores.shape[0], width
        self.c1, self.c2 = sizes
        self.n1, self.n2 = width // self.c1, width // (self.c1 * self.c2)
        self.gm1 = np.fmax.reduce(scores[:, :width].reshape(self.b, self.c1, self.n1), axis=1)

    def select(self, k: int, tail: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(row, column, score)`` of every candidate for a row's top ``k``: the scores
        ``>= T`` and above ``-inf`` (a superset of the top ``k``), in no particular order."""
        b, c1, c2, n1, n2 = self.b, self.c1, self.c2, self.n1, self.n2
        gm1 = self.gm1
        gm2 = np.fmax.reduce(gm1.reshape(b, c2, n2), axis=1) if c2 > 1 else gm1.copy()
        np.fmax(gm2, _NEG, out=gm2)  # an all-NaN group counts as -inf
        thr = np.maximum(np.partition(gm2, n2 - k, axis=1)[:, n2 - k], _LOWEST)
        # level-1 groups that reach the threshold (a flat nonzero: a 2-d one costs more) ...
        rows, j1 = np.divmod(np.flatnonzero(gm1 >= thr[:, None]), n1)
        # -> their scores that do
        cols = j1[:, None] + n1 * np.arange(c1)
        if self.scores.flags.c_contiguous:  # flat positions: several times faster
            vals = self.scores.reshape(-1)[rows[:, None] * self.scores.shape[1] + cols]
        else:
            vals = self.scores[rows[:, None], cols]
        i, j = np.nonzero(vals >= thr[rows, None])
        rows, cols, vals = rows[i], cols[i, j], vals[i, j]
        if tail:
            tv = self.scores[:, self.width : self.width + tail]
            ti, tj = np.nonzero(tv >= thr[:, None])
            rows = np.concatenate([rows, ti])
            cols = np.concatenate([cols, self.width + tj])
            vals = np.concatenate([vals, tv[ti, tj]])
        return rows, cols, vals


class _TileTopK:
    """Exact top-``k`` candidates of a block of ``b`` rows whose scores arrive one item-major
    tile at a time (the factor path): tile ``t`` is ``tile[j, r]`` for item ``t * width + j``
    and row ``r``, and is overwritten by the next one, so everything is read while in cache.

    Per tile: level-1 maxima ``gm1[j, r]`` of the ``c1`` strided items ``j + n1 * i``
    (``n1 = width / c1``), ``c1 - 1`` vector ``fmax`` over contiguous slices; their running
    maximum over the tiles so far, ``acc``; then every level-1 group whose maximum reaches the
    row's lower bound ``thr`` is copied out (``c1`` scores). ``thr`` starts at the lowest float
    and is raised (after the tiles in ``_BOUND_TILES``, before their groups are copied) to the
    ``k``-th largest maximum of ``g`` disjoint groups of ``acc`` (``g`` about ``3k``): those are
    ``k`` real scores of the row, not -inf and not NaN, so ``thr`` never exceeds the row's
    ``k``-th best score, and every score of the top ``k`` -- ties at the ``k``-th included --
    is ``>= thr`` when its tile is read, lies in a group that reaches it, and is copied. A row
    with fewer than ``k`` such groups keeps the lowest float: all its scores above -inf are
    copied. NaN ranks as -inf (``fmax`` skips it; ``>=`` is False for it).
    """

    def __init__(self, b: int, width: int, k: int, buf: np.ndarray) -> None:
        self.b, self.width, self.k = b, width, k
        self.c1 = _C1
        self.n1 = width // self.c1
        self.gm1 = buf[: self.n1 * b].reshape(self.n1, b)
        self.acc = buf[self.n1 * b : 2 * self.n1 * b].reshape(self.n1, b)
        g = self.n1  # groups of acc for the bound: at least 3k (n1 >= 4k), a power-of-two part
        while g % 2 == 0 and g // 2 >= 3 * k:
            g //= 2
        self.g = g
        self.thr = np.full(b, _LOWEST, dtype=np.float32)
        self.hits: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.tiles: list[int] = []

    def add(self, t: int, tile: np.ndarray) -> None:
        """Read tile ``t`` (``(width, b)``, C-contiguous; -inf where excluded)."""
        _fmax_rows(tile.reshape(self.c1, self.n1, self.b), out=self.gm1)
        if t == 0:
            self.acc[...] = self.gm1
        else:
            np.fmax(self.acc, self.gm1, out=self.acc)
        if t in _BOUND_TILES:
            self._raise_bound()
        hits = np.flatnonzero(self.gm1 >= self.thr)  # j * b + r
        if len(hits):
            self.hits.append(hits)
            # (c1, hits): slot by slot, each an ascending gather from one contiguous slice (a
            # group's scores lie n1 * b apart: hit by hit, every read would be a new page)
            self.vals.append(np.take(tile.reshape(self.c1, -1), hits, axis=1))
            self.tiles.append(t)

    def _raise_bound(self) -> None:
        coarse = _fmax_rows(self.acc.reshape(-1, self.g, self.b))
        key = np.fmax(coarse.T, _NEG)  # (b, g); an all-NaN group counts as -inf
        key.sort(axis=1)
        np.maximum(self.thr, key[:, self.g - self.k], out=self.thr)

    def select(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(row, column, score)`` of the copied scores ``>=`` the final bound (a superset of
        each row's top ``k``, none -inf or NaN), in no particular order."""
        self._raise_bound()
        if not self.hits:
            none = np.zeros(0, dtype=np.int64)
            return none, none, np.zeros(0, dtype=np.float32)
        hits = np.concatenate(self.hits)
        vals = np.concatenate(self.vals, axis=1)
        lens = [len(h) for h in self.hits]
        first = np.repeat(np.asarray(self.tiles, dtype=np.int64) * self.width, lens)
        j1, rows = np.divmod(hits, self.b)
        i, h = np.nonzero(vals >= self.thr[rows])
        return rows[h], first[h] + j1[h] + self.n1 * i, vals[i, h]


def _rank(
    rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int, k: int
) -> tuple[np.ndarray, ...]:
    """Sort candidates by (row, score descending, column) and keep each row's first ``k``:
    ``(row, column, score, rank 1..k)``. Scores are not NaN; -0.0 ties +0.0 (sort order)."""
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.searchsorted(rows, np.arange(n_rows))
    rank = np.arange(len(rows)) - starts[rows]
    keep = rank < k
    return rows[keep], cols[keep], vals[keep], rank[keep] + 1


def _topk_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """Top-``k`` of each row of a dense ``(n, m)`` block as ``(row, column, score, rank)`` of the
    scores above ``-inf`` (NaN ranks as -inf), exactly as a full sort by (score desc, column)."""
    n, m = scores.shape
    sizes = _group_sizes(m, k)
    if sizes is None or n == 0:
        idx, vals = _topk_exact(scores, np.broadcast_to(np.arange(m), scores.shape), min(k, m))
        keep = vals > _NEG  # NaN compares False
        rr, cc = np.nonzero(keep)
        return rr, idx[rr, cc], vals[rr, cc], cc + 1
    width = m // (sizes[0] * sizes[1]) * (sizes[0] * sizes[1])
    return _rank(*_Pruned(scores, width, sizes).select(k, tail=m - width), n, k)


def topk_block(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` columns of each row, best first, ties broken by the lower column index.

    ``scores`` is ``(n, m)`` float32 where ``-inf`` marks excluded items and NaN ranks as ``-inf``.
    Returns ``(idx, vals)``, each ``(n, min(k, m))``: what a full sort by (score descending,
    column ascending) gives. Catalogs of at least ``32 * k`` items take the pruned path
    (:class:`_Pruned`: every score is read once for group maxima, about ``8 * k`` per row again,
    and only those candidates are sorted); a row whose top ``k`` is not all above ``-inf`` is
    completed by the full sort.
    """
    n, m = scores.shape
    k = min(k, m)
    rows, cols, vals, rank = _topk_rows(scores, k)
    idx = np.zeros((n, k), dtype=np.int64)
    out = np.full((n, k), _NEG, dtype=np.float32)
    idx[rows, rank - 1], out[rows, rank - 1] = cols, vals
    short = np.flatnonzero(np.bincount(rows, minlength=n) < k)
    if len(short):
        sub = scores[short]
        idx[short], out[short] = _topk_exact(sub, np.broadcast_to(np.arange(m), sub.shape), k)
    return idx, out


def _seen_pairs(seen: sp.csr_matrix, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(row in block, item)`` of every stored entry of the CSR rows ``block`` (int64), read
    from ``indptr`` directly (scipy's row indexing costs more than the rest of the step)."""
    starts = seen.indptr[block].astype(np.int64)
    lens = seen.indptr[block + 1] - starts
    rows = np.repeat(np.arange(len(block)), lens)
    pos = np.arange(len(rows)) + np.repeat(starts - (np.cumsum(lens) - lens), lens)
    return rows, seen.indices[pos].astype(np.int64)


def _tile_width(n_items: int, k: int, rows: int) -> int | None:
    """Items per tile of the factor path for blocks of ``rows`` users: about ``_TILE_BYTES`` of
    scores, a multiple of ``_C1`` with at least ``_MIN_GROUPS_PER_K * k`` level-1 groups (the
    last tile padded with -inf), or None when the catalog is too small for that (then the dense
    path runs)."""
    whole = -(-n_items // _C1) * _C1
    if whole // _C1 < _MIN_GROUPS_PER_K * k:
        return None
    width = _TILE_BYTES // (4 * max(rows, 1)) // _C1 * _C1
    return min(max(width, _C1 * _MIN_GROUPS_PER_K * k), whole)


#: Deflate level of ``arrays.npz``. ``np.savez_compressed`` uses zlib's default, 6: on an ALS
#: model of 203,000 users (64 factors, 8M seen pairs) level 1 writes 2.6x faster and the file is
#: 3% larger (float factors hardly compress at any level).
NPZ_LEVEL = 1


def _write_npz(fh: Any, arrays: dict[str, Any], level: int = NPZ_LEVEL) -> None:
    """``np.savez_compressed(fh, **arrays)`` at deflate ``level``: the same ``.npz`` layout (one
    ``name.npy`` per array, ZIP64), read back by ``np.load``; no pickle."""
    with zipfile.ZipFile(
        fh, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=level, allowZip64=True
    ) as zf:
        for name, value in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asanyarray(value), allow_pickle=False)


class Recommender:
    """Base class of every recommender; see the module docstring for the contract."""

    name: ClassVar[str] = "base"
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    #: Whether the model uses item text embeddings (and can score items with no interactions).
    uses_embeddings: ClassVar[bool] = False

    @classmethod
    def search_space(cls, fixed: dict[str, Any]) -> list[Any]:
        """The scikit-optimize dimensions worth tuning (each named after a config field), given
        the parameters pinned in ``fixed``. None by default: the model is only evaluated."""
        return []

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
        block_size: int = 512,
        threads: int = 1,
        candidate_items: Sequence[str] | None = None,
        exclude_items: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Top-``k`` items for each user (all known users when ``user_ids`` is None).

        Returns ``user_id, item_id, rank (1..k), score`` sorted by (user order given, rank). Unknown
        users get no rows. ``candidate_items`` restricts the items that may be recommended;
        ``exclude_items`` removes some. Seen items come from the fitted interactions' sparse rows,
        never from a dense mask. ``threads`` > 1 scores that many blocks at once, each with one
        BLAS thread (peak memory about ``threads x block_size x n_items`` floats); the result
        does not depend on ``threads`` or ``block_size``.

        The top ``k`` is exact: the items a full sort by (score descending, item index ascending)
        gives, found by :class:`_Pruned` without sorting. Non-finite scores are never returned.
        A model that declares :meth:`_factors` is scored tile by tile into one per-thread buffer,
        and each tile's candidates are taken while it is still in cache (:class:`_TileTopK`).
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
        n_items = len(self.item_ids_)
        blocked = None  # items that may not be recommended to anyone
        if candidate_items is not None or exclude_items:
            blocked = np.zeros(n_items, dtype=bool)
            if candidate_items is not None:
                blocked[:] = True
                ci = self.interactions_.item_index(list(candidate_items))
                blocked[ci[ci >= 0]] = False
            if exclude_items:
                ei = self.interactions_.item_index(list(exclude_items))
                blocked[ei[ei >= 0]] = True
        seen = self.interactions_.matrix if exclude_seen else None
        block_size = max(1, int(block_size))
        k = max(0, int(k))
        width = None
        if type(self)._factors is not Recommender._factors and k:
            width = _tile_width(n_items, k, min(block_size, _FACTOR_ROWS, len(uidx)))
            block_size = min(block_size, _FACTOR_ROWS) if width else block_size
        local = threading.local()
        shared = self._shared_ranking(blocked) if k else None
        if shared is not None:
            width = None

        def score(start: int) -> tuple[np.ndarray, ...]:
            block = uidx[start : start + block_size]
            if shared is not None:
                rr, cc, vv, rank = self._topk_shared(block, k, seen, *shared)
            elif width is not None:
                rr, cc, vv, rank = self._topk_factored(block, k, seen, blocked, width, local)
            else:
                rr, cc, vv, rank = self._topk_dense(block, k, seen, blocked)
            ok = np.isfinite(vv)  # +inf is dropped too (rank kept), as a full sort would
            return start + rr[ok], cc[ok], vv[ok], rank[ok]

        starts = range(0, len(uidx), block_size) if k else range(0)
        if threads > 1 and len(starts) > 1:
            # parallel blocks, one BLAS thread each: selection is single-threaded numpy that
            # releases the GIL, so this keeps every core busy end to end; the scores do not
            # depend on `threads`
            with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(threads) as pool:
                parts = list(pool.map(score, starts))
        elif width is not None:  # tiles are small products: BLAS threads only add syncing
            with threadpool_limits(1, user_api="blas"):
                parts = [score(start) for start in starts]
        else:
            parts = [score(start) for start in starts]
        if not parts:
            return _empty_recs()
        u, i, s, r = (np.concatenate(p) for p in zip(*parts, strict=True))
        return pl.DataFrame(
            [
                pl.Series("user_id", users_known, dtype=pl.String).gather(u),
                pl.Series("item_id", self.item_ids_.tolist(), dtype=pl.String).gather(i),
                pl.Series("rank", r, dtype=pl.Int32),
                pl.Series("score", s, dtype=pl.Float32),
            ]
        )

    def _shared_ranking(
        self, blocked: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``(scores, order, position)`` for :meth:`_topk_shared`: the items that may be
        recommended, by (score descending, item index), and each item's place in that order
        (past the end when it may not be). None when the model has no shared scores or one is
        not finite (the general path then ranks it exactly as a full sort does)."""
        scores = self._shared_scores()
        if scores is None:
            return None
        scores = np.asarray(scores, dtype=np.float32)
        if scores.shape != (len(self.item_ids_),) or not np.isfinite(scores).all():
            return None
        allowed = np.flatnonzero(~blocked) if blocked is not None else np.arange(len(scores))
        # a stable sort of the negated scores: ties keep the lower item index first (and -0.0
        # ties with 0.0, as in the full sort)
        order = allowed[np.argsort(-scores[allowed], kind="stable")]
        position = np.full(len(scores), len(order), dtype=np.int64)
        position[order] = np.arange(len(order))
        return scores, order, position

    def _topk_shared(
        self,
        block: np.ndarray,
        k: int,
        seen: sp.csr_matrix | None,
        scores: np.ndarray,
        order: np.ndarray,
        position: np.ndarray,
    ) -> tuple[np.ndarray, ...]:
        """Top ``k`` of a block when every user's scores are ``scores``: each user's first ``k``
        items of ``order`` they have not seen. Only the first ``k + (most items a user of the
        block has seen)`` places of the order can hold them."""
        n = len(block)
        if seen is not None:
            rows, items = _seen_pairs(seen, block)
            most = int(np.bincount(rows, minlength=n).max()) if n and len(rows) else 0
        else:
            rows = items = np.empty(0, dtype=np.int64)
            most = 0
        width = min(len(order), k + most)
        free = np.ones((n, width), dtype=bool)
        place = position[items]
        near = place < width
        free[rows[near], place[near]] = False
        rank = np.cumsum(free, axis=1)
        rr, cc = np.nonzero(free & (rank <= k))
        picked = order[cc]
        return rr, picked, scores[picked], rank[rr, cc]

    def _topk_dense(
        self, block: np.ndarray, k: int, seen: sp.csr_matrix | None, blocked: np.ndarray | None
    ) -> tuple[np.ndarray, ...]:
        """Top ``k`` of a block scored by ``_score_block`` (dense users x all items)."""
        n_items = len(self.item_ids_)
        scores = self._score_block(block)
        if scores is None or np.shape(scores) != (len(block), n_items):
            raise RuntimeError(
                f"{type(self).__name__}._score_block returned shape {np.shape(scores)}, "
                f"expected ({len(block)}, {n_items})"
            )
        scores = np.asarray(scores, dtype=np.float32)
        if seen is not None or blocked is not None:
            if not self._may_write(scores):  # e.g. a broadcast view or one of the model's arrays
                scores = np.array(scores, dtype=np.float32, copy=True)
            if seen is not None:
                scores[_seen_pairs(seen, block)] = _NEG
            if blocked is not None:
                scores[:, blocked] = _NEG
        return _topk_rows(scores, k)

    def _topk_factored(
        self,
        block: np.ndarray,
        k: int,
        seen: sp.csr_matrix | None,
        blocked: np.ndarray | None,
        width: int,
        local: threading.local,
    ) -> tuple[np.ndarray, ...]:
        """Top ``k`` of a block of a model with factors: each tile of ``width`` items is one
        matrix product into this thread's one tile buffer, then its exclusions, group maxima
        and candidates are done while it is in cache (:class:`_TileTopK`); only the candidates
        are ranked afterwards."""
        n_items, b = len(self.item_ids_), len(block)
        n_tiles, size = -(-n_items // width), width * b
        users, items = self._factors(block)
        dtype = np.float64 if np.float64 in (users.dtype, items.dtype) else np.float32
        users, items = users.astype(dtype, copy=False), items.astype(dtype, copy=False)
        if getattr(local, "tile", None) is None or local.tile.size < size:
            local.tile = np.empty(size, dtype=np.float32)  # the first block is the largest
            local.maxima = np.empty(2 * size // _C1, dtype=np.float32)
            local.wide = None if dtype == np.float32 else np.empty(size, dtype)
        # item-major tile: tile[j, r] is item t * width + j for user r of the block
        flat_tile = local.tile[:size]
        tile = flat_tile.reshape(width, b)
        topk = _TileTopK(b, width, k, local.maxima)
        cuts = None
        if seen is not None:  # positions of the seen items in their tile, in tile order
            r, c = _seen_pairs(seen, block)
            flat = np.sort(c * b + r)  # t * size + j * b + r
            cuts = np.searchsorted(flat, np.arange(n_tiles + 1) * size)
            flat %= size
        for t in range(n_tiles):
            lo, hi = t * width, min(n_items, (t + 1) * width)
            if local.wide is None:
                np.matmul(items[lo:hi], users.T, out=tile[: hi - lo])
            else:  # wider factors: the product in their precision, rounded once to float32
                wide = local.wide[: (hi - lo) * b].reshape(hi - lo, b)
                np.matmul(items[lo:hi], users.T, out=wide)
                tile[: hi - lo] = wide
            if hi - lo < width:
                tile[hi - lo :] = _NEG
            if cuts is not None:
                flat_tile[flat[cuts[t] : cuts[t + 1]]] = _NEG
            if blocked is not None:
                np.copyto(tile[: hi - lo], _NEG, where=blocked[lo:hi, None])
            topk.add(t, tile)
        return _rank(*topk.select(), b, k)

    def _may_write(self, scores: np.ndarray) -> bool:
        """Whether ``recommend`` may overwrite ``scores`` in place: an array ``_score_block`` made
        for this call, not a view and not one of the model's own arrays."""
        if not (scores.flags.writeable and scores.flags.owndata and scores.flags.c_contiguous):
            return False
        return not any(
            isinstance(v, np.ndarray) and np.may_share_memory(v, scores)
            for v in vars(self).values()
        )

    def explain(self, recs: pl.DataFrame) -> pl.DataFrame:
        """Add ``reason_item_id``: the history item that contributed most to each recommendation.

        Defined for item-based models (an item x item weight matrix: EASE, ItemKNN, RP3beta): the
        contribution of history item j to item i's score is ``x_uj * W[j, i]``. Other models get
        nulls. ``recs`` is the output of :meth:`recommend` (``user_id``, ``item_id``, ...).
        """
        self._check_fitted()
        weights = self._item_item()
        if weights is None or recs.height == 0:
            return recs.with_columns(pl.lit(None, dtype=pl.String).alias("reason_item_id"))
        seen = self.interactions_.matrix
        u_idx = self.interactions_.user_index(recs["user_id"].to_list())
        i_idx = self.interactions_.item_index(recs["item_id"].to_list())
        reason = np.full(recs.height, -1, dtype=np.int64)
        # rows of one user are contiguous in recommend's output
        bounds = np.flatnonzero(np.diff(u_idx)) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(u_idx)], strict=True):
            u = u_idx[lo]
            start, end = seen.indptr[u], seen.indptr[u + 1]
            if u < 0 or start == end:
                continue
            hist, vals = seen.indices[start:end], seen.data[start:end]
            sub = weights[hist][:, i_idx[lo:hi]]
            sub = sub.toarray() if hasattr(sub, "toarray") else np.asarray(sub)
            contrib = vals[:, None].astype(np.float64) * sub
            best = np.argmax(contrib, axis=0)
            ok = contrib[best, np.arange(hi - lo)] > 0
            reason[lo:hi] = np.where(ok, hist[best], -1)
        ids = np.where(reason >= 0, self.item_ids_[np.maximum(reason, 0)], None)
        return recs.with_columns(pl.Series("reason_item_id", ids.tolist(), dtype=pl.String))

    def _item_item(self) -> Any:
        """The item x item weights scores come from (``scores = X @ W``), if the model has them."""
        return None

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
            _write_npz(fh, payload)
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

    def _shared_scores(self) -> np.ndarray | None:
        """Optional: the scores of every item when they are the same for every user (one value
        per item, equal to each row of :meth:`_score_block`), or None. A model that returns them
        is ranked with one sort of the catalogue, each user skipping their seen items
        (:meth:`_topk_shared`), instead of scoring and selecting every user's row."""
        return None

    def _factors(self, user_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Optional: ``(users, items)`` with ``_score_block(user_index) == users @ items.T``
        (``(len(user_index), f)`` and ``(n_items, f)``, float32 or float64). A model that
        defines it is scored tile by tile (see :meth:`recommend`); float64 products are rounded
        once to float32."""
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
