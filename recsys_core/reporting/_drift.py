"""Drift signals: is tonight's data or tonight's output unlike the previous run's?

Inputs are small dicts of statistics (computed by :func:`data_stats` and
:func:`recommendation_stats`, stored with each run), so a run only needs the previous run's dict,
never its data. Two kinds of signal:

* **share** signals — ``new_user_share`` (share of tonight's active users never seen before) and
  ``new_item_share`` (same for items). Flagged when the share itself exceeds the threshold: a
  large influx of unknown ids means most of tonight's traffic cannot be personalised.
* **relative** signals — ``score_mean``, ``score_p50``, ``score_p90`` (scores of tonight's
  recommendations) and ``coverage`` (share of the catalog recommended). ``change`` is
  ``(value - previous) / |previous|``; flagged when ``|change|`` exceeds the threshold.
  Without a previous run nothing is flagged.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import polars as pl

from recsys_core.interactions import distinct_count

__all__ = [
    "SHARE_SIGNALS",
    "RELATIVE_SIGNALS",
    "data_stats",
    "drift_signals",
    "model_change",
    "recommendation_stats",
]

SHARE_SIGNALS: tuple[str, ...] = ("new_user_share", "new_item_share")
RELATIVE_SIGNALS: tuple[str, ...] = ("score_mean", "score_p50", "score_p90", "coverage")


def recommendation_stats(recs: pl.DataFrame, n_items: int) -> dict[str, Any]:
    """What drift needs from a recommendations frame (``user_id, item_id, score``).

    ``n_users`` served, ``n_rows``, ``n_items_recommended`` (distinct), ``coverage`` (that over
    ``n_items``), and ``score_mean``/``score_p50``/``score_p90`` of the ``score`` column (None when
    there are no rows). Percentiles use linear interpolation.
    """
    if n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    for col in ("user_id", "item_id", "score"):
        if col not in recs.columns:
            raise ValueError(f"recommendations lack column {col!r}; they have {recs.columns}")
    n_rec_items = distinct_count(recs["item_id"])
    scores = recs["score"].cast(pl.Float64).drop_nulls().to_numpy()
    scores = scores[np.isfinite(scores)]
    out: dict[str, Any] = {
        "n_users": distinct_count(recs["user_id"]),
        "n_rows": recs.height,
        "n_items_recommended": n_rec_items,
        "coverage": n_rec_items / n_items if n_items else 0.0,
        "score_mean": None,
        "score_p50": None,
        "score_p90": None,
    }
    if scores.size:
        p50, p90 = np.quantile(scores, [0.5, 0.9])
        out.update(score_mean=float(scores.mean()), score_p50=float(p50), score_p90=float(p90))
    return out


def data_stats(tonight: pl.DataFrame, before: pl.DataFrame) -> dict[str, Any]:
    """Counts of tonight's events and the share of their users/items absent from ``before``.

    ``tonight`` and ``before`` are event frames (``user_id``, ``item_id``); shares are over
    distinct ids active tonight (0.0 when there are none).
    """
    out: dict[str, Any] = {"n_events": tonight.height}
    for col, key in (("user_id", "user"), ("item_id", "item")):
        active = tonight.select(col).unique()
        new = active.join(before.select(col).unique(), on=col, how="anti").height
        out[f"n_{key}s_active"] = active.height
        out[f"n_new_{key}s"] = new
        out[f"new_{key}_share"] = new / active.height if active.height else 0.0
    return out


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def drift_signals(
    current: dict[str, Any], previous: dict[str, Any] | None, threshold: float
) -> list[dict[str, Any]]:
    """One row per signal present in ``current``: ``name, value, previous, change, flagged, rule``.

    See the module docstring for the two kinds of signal. ``change`` is None when it cannot be
    computed (no previous value; a previous value of 0 flags any non-zero value).
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    previous = previous or {}
    rows: list[dict[str, Any]] = []
    for name in SHARE_SIGNALS:
        value = _num(current.get(name))
        if value is None:
            continue
        prev = _num(previous.get(name))
        rows.append(
            {
                "name": name,
                "value": value,
                "previous": prev,
                "change": None if prev is None else value - prev,
                "flagged": value > threshold,
                "rule": f"share > {threshold:g}",
            }
        )
    for name in RELATIVE_SIGNALS:
        value = _num(current.get(name))
        if value is None:
            continue
        prev = _num(previous.get(name))
        change: float | None = None
        flagged = False
        if prev is not None:
            if prev != 0:
                change = (value - prev) / abs(prev)
                flagged = abs(change) > threshold
            else:
                flagged = value != 0
        rows.append(
            {
                "name": name,
                "value": value,
                "previous": prev,
                "change": change,
                "flagged": flagged,
                "rule": f"|relative change| > {threshold:g}",
            }
        )
    cause = model_change(current.get("models"), previous.get("models"))
    if cause:  # output signals compare two different models: say so where they flag
        for row in rows:
            if row["flagged"] and row["name"] in RELATIVE_SIGNALS:
                row["cause"] = cause
    return rows


def _recipes(models: Any) -> dict[str, str]:
    return {
        str(m.get("name")): json.dumps(m.get("params"), sort_keys=True, default=str)
        for m in models or []
        if isinstance(m, dict)
    }


def model_change(current: Any, previous: Any) -> str | None:
    """Why tonight's output signals may differ from the previous run's for reasons other than
    the data: a different serving model, or the same model re-tuned (other parameters). None when
    the recipes are the same or unknown. ``current``/``previous``: ``[{name, params, ...}]``."""
    now, before = _recipes(current), _recipes(previous)
    if not now or not before or now == before:
        return None
    if set(now) != set(before):
        return (
            f"the serving model changed ({', '.join(sorted(before))} -> {', '.join(sorted(now))}); "
            "scores of different models are not comparable"
        )
    retuned = sorted(name for name in now if now[name] != before[name])
    return (
        f"{', '.join(retuned)} re-tuned since the previous run (other hyperparameters); scores "
        "of a re-tuned model are not comparable with the previous ones"
    )
