"""The clean part of the synthetic world: catalog, users with tastes, and their events.

Planted structure (all from one ``numpy.random.Generator``):

* **taste clusters**: every item belongs to one cluster; every user has a primary cluster and, half
  of the time, a secondary one. A view picks the primary cluster (or the secondary, 27% of the
  time when there is one), and with probability 8% any cluster at random;
* **popularity skew**: within a cluster, items are drawn with Zipf weights ``1 / rank**1.1``;
* **cold start**: about 10% of items are introduced on a later day; they get events only from then;
* **seasonality**: sessions per user-day follow a Poisson rate scaled by a weekday factor (busier
  weekends), session start hours peak in the evening (18-22 h UTC);
* **funnel**: each view may lead to a click (35%), add_to_cart (35% of clicks), purchase (50% of
  carts) and a rating (50% of purchases, half stars 0.5-5, mostly 3.5-5).

Natural repeats of one (user, item, event_type) are at least :data:`MIN_GAP_SECONDS` apart, so
that the duplicates planted later are the only ones a dedupe window shorter than that finds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys_core.config import EVENT_TYPES
from recsys_core.landing._vocab import THEMES

__all__ = [
    "MIN_GAP_SECONDS",
    "TYPES",
    "Catalog",
    "Tastes",
    "make_catalog",
    "simulate_events",
    "user_tastes",
]

MIN_GAP_SECONDS = 300
TYPES: tuple[str, ...] = EVENT_TYPES  # the generated ``type`` codes index into it
_WEEKDAY = np.array([0.85, 0.9, 0.95, 1.0, 1.1, 1.35, 1.25])  # Monday .. Sunday
_HOUR = np.array(
    [0.3, 0.2, 0.15, 0.1, 0.1, 0.15, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9]
    + [1.0, 0.95, 0.9, 0.9, 1.0, 1.2, 1.6, 2.0, 2.2, 2.0, 1.4, 0.8]
)


@dataclass(frozen=True)
class Catalog:
    """Per item (index = position): id, cluster, Zipf weight within its cluster, first day."""

    item_ids: list[str]
    cluster: np.ndarray
    weight: np.ndarray
    intro_day: np.ndarray
    n_clusters: int


def make_catalog(rng: np.random.Generator, items: int, days: int) -> Catalog:
    """Items ``00001``.. (zero-padded: ids must stay strings), clusters, weights, intro days."""
    n_clusters = int(np.clip(items // 25, 2, len(THEMES)))
    cluster = rng.permutation(np.arange(items) % n_clusters)
    weight = np.empty(items)
    for c in range(n_clusters):
        members = np.flatnonzero(cluster == c)
        weight[members] = 1.0 / (rng.permutation(len(members)) + 1.0) ** 1.1
    intro = np.zeros(items, dtype=np.int64)
    if days > 1:
        cold = rng.random(items) < 0.1
        intro[cold] = rng.integers(1, days, size=int(cold.sum()))
        for c in range(n_clusters):  # every cluster keeps at least its most popular item warm
            members = np.flatnonzero(cluster == c)
            intro[members[np.argmax(weight[members])]] = 0
    width = max(5, len(str(items)))
    ids = [f"{i + 1:0{width}d}" for i in range(items)]
    return Catalog(ids, cluster, weight, intro, n_clusters)


@dataclass(frozen=True)
class Tastes:
    """Per user (index = position): primary cluster, secondary cluster (used only when
    ``has_second``), and the mean number of sessions per day."""

    primary: np.ndarray
    second: np.ndarray
    has_second: np.ndarray
    rate: np.ndarray

    def likes(self, user: np.ndarray, item_cluster: np.ndarray) -> np.ndarray:
        """Whether each ``user`` likes an item of ``item_cluster`` (one of their clusters)."""
        return (item_cluster == self.primary[user]) | (
            self.has_second[user] & (item_cluster == self.second[user])
        )


def user_tastes(rng: np.random.Generator, catalog: Catalog, users: int) -> Tastes:
    """Draw every user's hidden tastes (the first draws :func:`simulate_events` makes)."""
    nc = catalog.n_clusters
    primary = rng.integers(nc, size=users)
    second = (primary + rng.integers(1, nc, size=users)) % nc
    has_second = rng.random(users) < 0.5
    rate = rng.lognormal(0.0, 0.5, size=users) * 0.8
    return Tastes(primary, second, has_second, rate)


def simulate_events(
    rng: np.random.Generator,
    catalog: Catalog,
    users: int,
    days: int,
    start_ts: int,
    weekday0: int,
    tastes: Tastes | None = None,
) -> dict[str, np.ndarray]:
    """Natural events as arrays ``user, item, type, ts, value`` (value NaN unless a rating),
    sorted by ``(ts, user, item, type)``; ``ts`` in Unix seconds, all before the last day ends.

    Also ``midnight``: indexes of views moved to the last seconds of their day, for planting
    near duplicates across midnight. ``tastes`` (None: drawn from ``rng`` first) lets a caller
    keep the same users over several calls (the closed-loop simulator).
    """
    nc = catalog.n_clusters
    if tastes is None:
        tastes = user_tastes(rng, catalog, users)
    primary, second, has_second, rate = (
        tastes.primary,
        tastes.second,
        tastes.has_second,
        tastes.rate,
    )
    day_factor = _WEEKDAY[(weekday0 + np.arange(days)) % 7]
    per = rng.poisson(np.outer(day_factor, rate))  # (days, users) sessions
    s_day = np.repeat(np.repeat(np.arange(days), users), per.ravel())
    s_user = np.repeat(np.tile(np.arange(users), days), per.ravel())
    hour = rng.choice(24, size=len(s_day), p=_HOUR / _HOUR.sum())
    s_start = start_ts + s_day * 86400 + hour * 3600 + rng.integers(0, 3600, size=len(s_day))
    n_views = np.minimum(rng.geometric(0.45, size=len(s_day)), 6)
    v_sess = np.repeat(np.arange(len(s_day)), n_views)
    gap = rng.integers(15, 240, size=len(v_sess))
    first = np.concatenate([[0], np.cumsum(n_views)[:-1]])
    before = np.cumsum(gap) - gap  # gaps of all earlier views
    offs = before - np.repeat(before[first], n_views)  # 0 for a session's first view
    v_ts = s_start[v_sess] + offs
    v_user = s_user[v_sess]
    v_day = s_day[v_sess]
    r = rng.random(len(v_sess))
    v_cluster = np.where(
        r < 0.08,
        rng.integers(nc, size=len(v_sess)),
        np.where(has_second[v_user] & (r < 0.35), second[v_user], primary[v_user]),
    )
    v_item = _pick_items(rng, catalog, v_cluster, v_day)

    click = rng.random(len(v_ts)) < 0.35
    cart = click & (rng.random(len(v_ts)) < 0.35)
    buy = cart & (rng.random(len(v_ts)) < 0.5)
    rate_ = buy & (rng.random(len(v_ts)) < 0.5)
    t_click = v_ts + rng.integers(3, 60, size=len(v_ts))
    t_cart = t_click + rng.integers(10, 180, size=len(v_ts))
    t_buy = t_cart + rng.integers(30, 600, size=len(v_ts))
    t_rate = t_buy + rng.integers(60, 3600, size=len(v_ts))
    stars = np.clip(np.round(rng.normal(4.1, 0.7, size=len(v_ts)) * 2) / 2, 0.5, 5.0)

    masks = (np.ones(len(v_ts), dtype=bool), click, cart, buy, rate_)
    times = (v_ts, t_click, t_cart, t_buy, t_rate)
    user = np.concatenate([v_user[m] for m in masks])
    item = np.concatenate([v_item[m] for m in masks])
    etype = np.concatenate([np.full(int(m.sum()), k) for k, m in enumerate(masks)])
    ts = np.concatenate([t[m] for t, m in zip(times, masks, strict=True)])
    value = np.concatenate([np.full(int(m.sum()), np.nan) for m in masks[:-1]] + [stars[rate_]])

    # views moved to 23:59:45-55 of their day: anchors of near duplicates across midnight
    midnight = np.zeros(len(ts), dtype=bool)
    if days > 1:
        views = np.flatnonzero((etype == 0) & ((ts - start_ts) // 86400 < days - 1))
        n_mid = min(len(views), max(1, days // 2))
        chosen = rng.choice(views, size=n_mid, replace=False)
        day_end = start_ts + ((ts[chosen] - start_ts) // 86400 + 1) * 86400
        ts[chosen] = day_end - rng.integers(5, 16, size=n_mid)
        midnight[chosen] = True

    keep = (ts < start_ts + days * 86400) & _spread(user, item, etype, ts)
    out = {"user": user, "item": item, "type": etype, "ts": ts, "value": value, "mid": midnight}
    out = {k: v[keep] for k, v in out.items()}
    order = np.lexsort((out["type"], out["item"], out["user"], out["ts"]))
    out = {k: v[order] for k, v in out.items()}
    out["midnight"] = np.flatnonzero(out.pop("mid"))
    return out


def _pick_items(
    rng: np.random.Generator, catalog: Catalog, cluster: np.ndarray, day: np.ndarray
) -> np.ndarray:
    """A Zipf draw within each view's cluster among items already introduced on its day."""
    out = np.empty(len(cluster), dtype=np.int64)
    for c in range(catalog.n_clusters):
        rows = np.flatnonzero(cluster == c)
        members = np.flatnonzero(catalog.cluster == c)
        w = catalog.weight[members]
        out[rows] = rng.choice(members, size=len(rows), p=w / w.sum())
        late = rows[catalog.intro_day[out[rows]] > day[rows]]
        warm = members[catalog.intro_day[members] == 0]
        ww = catalog.weight[warm]
        out[late] = rng.choice(warm, size=len(late), p=ww / ww.sum())
    return out


def _spread(user: np.ndarray, item: np.ndarray, etype: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Mask dropping every event within MIN_GAP_SECONDS after an earlier one of the same key."""
    key = (user.astype(np.int64) * (int(item.max(initial=0)) + 1) + item) * len(TYPES) + etype
    order = np.lexsort((ts, key))
    k, t = key[order], ts[order]
    close = np.zeros(len(t), dtype=bool)
    close[1:] = (k[1:] == k[:-1]) & (t[1:] - t[:-1] < MIN_GAP_SECONDS)
    keep = np.empty(len(t), dtype=bool)
    keep[order] = ~close
    return keep
