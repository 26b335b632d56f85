"""The read-out of an experiment: per-arm hit rate with its interval, the difference, a p-value,
the sample-ratio-mismatch check and the decision, accumulated over the nights so far.

The unit of analysis is the *user*: a user is in one arm for the whole experiment, so every
night's exposures of a user are pooled into one outcome (did they hit at least one recommended
item on any night whose attribution window has opened). Counting user-nights instead would treat
a user's repeated nights as independent and make the interval too narrow.

Decision rule, in order (the first that applies):

1. no night has feedback yet -> ``no feedback yet``;
2. SRM p-value below ``srm_alpha`` -> ``blocked: sample ratio mismatch`` (assignment or logging
   is broken; no effect estimate can be trusted);
3. an arm has fewer than ``min_users`` exposed users with feedback -> ``keep collecting``;
4. p-value below ``alpha`` -> ``<arm> wins`` (the arm with the higher hit rate);
5. otherwise ``no significant difference``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import polars as pl

from recsys_core.abtest._stats import difference_in_proportions, srm_test, wilson_interval

__all__ = ["NO_FEEDBACK", "SRM_BLOCKED", "readout", "user_outcomes"]

NO_FEEDBACK = "no feedback yet"
SRM_BLOCKED = "blocked: sample ratio mismatch"
COLLECTING = "keep collecting"
NO_DIFFERENCE = "no significant difference"


def user_outcomes(user_nights: pl.DataFrame) -> pl.DataFrame:
    """``user_id, arm, hit, nights`` over the nights with feedback (one row per user)."""
    seen = user_nights.filter(pl.col("feedback_days") > 0)
    out = seen.group_by("user_id", "arm").agg(
        pl.col("hit").any().alias("hit"), pl.len().alias("nights")
    )
    twice = out.group_by("user_id").len().filter(pl.col("len") > 1)
    if twice.height:
        raise ValueError(
            f"user {twice['user_id'][0]!r} was exposed in more than one arm; an arm's users must "
            "not change during an experiment (rename the experiment to change its arms)"
        )
    return out.sort("user_id")


def readout(
    user_nights: pl.DataFrame,
    assigned: Mapping[str, int],
    arms: Mapping[str, str],
    shares: Mapping[str, float],
    *,
    experiment: str,
    as_of: dt.date,
    alpha: float = 0.05,
    srm_alpha: float = 0.001,
    min_users: int = 200,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """The read-out as a JSON-able dict (see the module docstring for the decision rule).

    ``user_nights`` comes from :func:`~recsys_core.abtest.attribute`; ``assigned`` is the number
    of distinct users assigned to each arm so far (the SRM check's input); ``arms`` maps arm name
    to its model (in order: the difference is the second arm minus the first).
    """
    names = list(arms)
    if len(names) < 2:
        raise ValueError(f"a read-out needs at least 2 arms, got {names}")
    outcomes = user_outcomes(user_nights)
    counts = {
        r["arm"]: (r["users"], r["hits"])
        for r in outcomes.group_by("arm")
        .agg(pl.len().alias("users"), pl.col("hit").sum().alias("hits"))
        .iter_rows(named=True)
    }
    nights = user_nights.filter(pl.col("feedback_days") > 0)["run_date"].unique().sort()
    arm_rows = []
    for a in names:
        n, x = counts.get(a, (0, 0))
        low, high = wilson_interval(int(x), int(n), confidence)
        arm_rows.append(
            {
                "name": a,
                "model": arms[a],
                "share": float(shares[a]),
                "assigned_users": int(assigned.get(a, 0)),
                "users": int(n),
                "users_with_hit": int(x),
                "hit_rate": (x / n) if n else None,
                "ci": [low, high] if n else None,
            }
        )
    srm_p = srm_test([int(assigned.get(a, 0)) for a in names], [float(shares[a]) for a in names])
    out: dict[str, Any] = {
        "experiment": experiment,
        "as_of": as_of.isoformat(),
        "metric": "hit_rate",
        "unit": "user",
        "confidence": confidence,
        "arms": arm_rows,
        "comparison": f"{names[1]} - {names[0]}",
        "difference": None,
        "ci": None,
        "p_value": None,
        "srm_p_value": srm_p,
        "srm": srm_p < srm_alpha,
        "nights_with_feedback": len(nights),
        "first_night": nights[0].isoformat() if len(nights) else None,
        "last_night": nights[-1].isoformat() if len(nights) else None,
        "alpha": alpha,
        "srm_alpha": srm_alpha,
        "min_users": min_users,
        "comparisons": [],
        "winner": None,
    }
    first = arm_rows[0]
    for other in arm_rows[1:]:
        if first["users"] and other["users"]:
            d = difference_in_proportions(
                first["users_with_hit"],
                first["users"],
                other["users_with_hit"],
                other["users"],
                confidence,
            )
            out["comparisons"].append(
                {
                    "arms": f"{other['name']} - {first['name']}",
                    "difference": d.diff,
                    "ci": [d.low, d.high],
                    "p_value": d.p_value,
                }
            )
    if out["comparisons"]:
        top = out["comparisons"][0]
        out.update(difference=top["difference"], ci=top["ci"], p_value=top["p_value"])
    out["decision"], out["reason"] = _decide(out, arm_rows)
    return out


def _decide(out: dict[str, Any], arms: list[dict[str, Any]]) -> tuple[str, str]:
    a, b = arms[0], arms[1]
    if out["nights_with_feedback"] == 0:
        return NO_FEEDBACK, (
            "No feedback yet: no night's recommendations have had a day of events after them "
            "(the attribution window opens the day after each run date)."
        )
    assigned = ", ".join(f"{r['name']} {r['assigned_users']}" for r in arms)
    expected = ", ".join(f"{r['name']} {r['share']:.0%}" for r in arms)
    if out["srm"]:
        return SRM_BLOCKED, (
            f"SAMPLE RATIO MISMATCH: users assigned {assigned} against configured shares "
            f"{expected} (chi-square p = {out['srm_p_value']:.2g} < {out['srm_alpha']}). "
            "Assignment or logging is broken; no decision until it is fixed."
        )
    small = [r["name"] for r in arms if r["users"] < out["min_users"]]
    if small or out["p_value"] is None:
        have = ", ".join(f"{r['name']} {r['users']}" for r in arms)
        return COLLECTING, (
            f"Keep collecting: arm(s) {', '.join(small)} have fewer than {out['min_users']} "
            f"exposed users with feedback ({have})."
        )
    numbers = (
        f"{b['name']} {b['hit_rate']:.2%} vs {a['name']} {a['hit_rate']:.2%}, difference "
        f"{out['difference']:+.2%} (95% interval {out['ci'][0]:+.2%} to {out['ci'][1]:+.2%}), "
        f"p = {out['p_value']:.2g}, {b['users']} and {a['users']} users"
    )
    if out["p_value"] < out["alpha"]:
        winner = b if out["difference"] > 0 else a
        out["winner"] = winner["name"]
        return f"{winner['name']} wins", f"{winner['name']} ({winner['model']}) wins: {numbers}."
    return NO_DIFFERENCE, f"No significant difference so far: {numbers}."
