"""Champion vs challenger: a paired bootstrap over users and the promotion gate.

Both models are evaluated on the same truth, so their per-user scores are paired: the bootstrap
resamples users (with replacement) and recomputes the mean of ``challenger - champion`` each time.
Pairing removes the between-user variance that dominates an unpaired comparison.

The gate (:func:`decide_promotion`) promotes the challenger when the observed mean difference
``challenger - champion`` on the primary metric is ``>= -tolerance``: tonight's model is fresher,
so it wins unless it is measurably worse than the tolerance allows. The rule uses the observed
difference, not a bootstrap bound, so the decision never depends on the resampling seed, and a
small test set (wide interval) can neither block every retrain (a lower-bound rule would) nor let
a clearly worse model through (an upper-bound rule would). The 95% interval and ``p_worse`` (share
of resamples where the challenger is worse) are reported beside it to show how sure we are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from recsys_core.metrics import METRIC_NAMES
from recsys_core.results import Decision

__all__ = [
    "BootstrapResult",
    "Decision",
    "align_per_user",
    "compare_metrics",
    "decide_promotion",
    "paired_bootstrap",
    "paired_bootstraps",
]

#: Upper bound on resample-by-user index cells held in memory at once.
_CHUNK_CELLS = 4_000_000


@dataclass(frozen=True)
class BootstrapResult:
    """``diff`` = mean(b - a); [``low``, ``high``] its percentile interval; ``p_worse`` = share of
    resampled means < 0 (b worse than a); ``n`` paired users, ``samples`` resamples."""

    diff: float
    low: float
    high: float
    p_worse: float
    n: int
    samples: int


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, *, samples: int, seed: int, confidence: float = 0.95
) -> BootstrapResult:
    """Paired percentile bootstrap of ``mean(b - a)``; ``a[j]`` and ``b[j]`` are the same user.

    Deterministic for a seed. With no users every field is 0 (and ``p_worse`` 0.5: no evidence).
    """
    return paired_bootstraps([(a, b)], samples=samples, seed=seed, confidence=confidence)[0]


def paired_bootstraps(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    samples: int,
    seed: int,
    confidence: float = 0.95,
) -> list[BootstrapResult]:
    """:func:`paired_bootstrap` of several ``(a, b)`` pairs over the same users (one per metric),
    each result equal to its own call's: the resamples depend only on the seed and the number of
    users, so they are drawn once and every pair's differences are averaged over them (drawing
    them is about 70% of a bootstrap's time)."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    diffs = []
    for a, b in pairs:
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if a.shape != b.shape or a.ndim != 1:
            raise ValueError(f"a and b must be 1-d and paired; got shapes {a.shape} and {b.shape}")
        diffs.append(b - a)
    sizes = {len(d) for d in diffs}
    if len(sizes) > 1:
        raise ValueError(f"every pair must cover the same users; got sizes {sorted(sizes)}")
    n = sizes.pop() if sizes else 0
    if n == 0:
        return [BootstrapResult(0.0, 0.0, 0.0, 0.5, 0, samples) for _ in diffs]
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // n)
    means = np.empty((len(diffs), samples), dtype=np.float64)
    for start in range(0, samples, chunk):
        stop = min(samples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        for row, d in zip(means, diffs, strict=True):
            row[start:stop] = np.take(d, idx).mean(axis=1)  # d[idx], about 1.4x faster
    alpha = (1.0 - confidence) / 2.0
    out = []
    for row, d in zip(means, diffs, strict=True):
        low, high = np.quantile(row, [alpha, 1.0 - alpha])
        out.append(
            BootstrapResult(
                diff=float(d.mean()),
                low=float(low),
                high=float(high),
                p_worse=float((row < 0).mean()),
                n=n,
                samples=samples,
            )
        )
    return out


def align_per_user(
    a: pl.DataFrame, b: pl.DataFrame, metric: str
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Pair two per-user frames by ``user_id``: (sorted users of either, a's values, b's values).

    A user missing from one frame (or a null value) counts 0 for that model.
    """
    users, aligned = _align_many(a, b, [metric])
    return users, *aligned[metric]


def decide_promotion(
    challenger_per_user: pl.DataFrame | None,
    champion_per_user: pl.DataFrame | None,
    *,
    metric: str,
    tolerance: float,
    samples: int,
    seed: int,
) -> Decision:
    """Promote the challenger unless its mean ``metric`` is below the champion's by > ``tolerance``.

    The first model (``champion_per_user`` None) is promoted. With no evaluated users the champion
    is kept (nothing to compare on). ``challenger_per_user`` None means there was no holdout to
    evaluate on (the first nights): the challenger is promoted only if there is no champion.
    See the module docstring for why this rule.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if challenger_per_user is None:
        first = champion_per_user is None
        return Decision(
            promote=first,
            reason=(
                "Promoted without a test: there is no champion yet and not enough history for a "
                "holdout."
                if first
                else "Kept the champion: the challenger could not be evaluated (no holdout)."
            ),
            diff=None,
            low=None,
            high=None,
            challenger_score=0.0,
            champion_score=None,
            metric=metric,
            tolerance=tolerance,
        )
    if metric not in challenger_per_user.columns:
        raise ValueError(
            f"challenger per-user frame has columns {challenger_per_user.columns}; no {metric!r}"
        )
    ch = challenger_per_user[metric].cast(pl.Float64).fill_null(0.0)
    challenger_score = float(ch.mean()) if ch.len() else 0.0
    if champion_per_user is None:
        return Decision(
            promote=True,
            reason=(
                f"Promoted: this is the first model (there is no champion yet); its {metric} is "
                f"{challenger_score:.4f} on {ch.len()} test users."
            ),
            diff=None,
            low=None,
            high=None,
            challenger_score=challenger_score,
            champion_score=None,
            metric=metric,
            tolerance=tolerance,
            n_users=ch.len(),
        )
    _, champ, chall = align_per_user(champion_per_user, challenger_per_user, metric)
    boot = paired_bootstrap(champ, chall, samples=samples, seed=seed)
    champion_score = float(champ.mean()) if len(champ) else 0.0
    challenger_score = float(chall.mean()) if len(chall) else 0.0
    numbers = (
        f"challenger {metric} {challenger_score:.4f} vs champion {champion_score:.4f}, "
        f"difference {boot.diff:+.4f} (95% interval {boot.low:+.4f} to {boot.high:+.4f}, "
        f"{boot.n} users, chance the challenger is worse {boot.p_worse:.0%})"
    )
    if boot.n == 0:
        promote = False
        reason = "Kept the champion: there were no test users to compare the two models on."
    elif boot.diff >= -tolerance:
        promote = True
        reason = (
            f"Promoted: {numbers}; the challenger is not worse than the champion by more than the "
            f"tolerance of {tolerance:.4f}."
        )
    else:
        promote = False
        reason = (
            f"Kept the champion: {numbers}; the challenger is worse by more than the tolerance of "
            f"{tolerance:.4f}."
        )
    return Decision(
        promote=promote,
        reason=reason,
        diff=boot.diff,
        low=boot.low,
        high=boot.high,
        challenger_score=challenger_score,
        champion_score=champion_score,
        metric=metric,
        tolerance=tolerance,
        p_worse=boot.p_worse,
        n_users=boot.n,
    )


def compare_metrics(
    challenger_per_user: pl.DataFrame,
    champion_per_user: pl.DataFrame | None,
    *,
    samples: int,
    seed: int,
    metrics: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per metric: ``metric, challenger, champion, diff, low, high, p_worse``.

    Champion fields are None without a champion. ``metrics`` defaults to the names of
    :data:`METRIC_NAMES` present in the challenger's frame (accuracy metrics, where a user
    without recommendations rightly scores 0).
    """
    if metrics is None:
        metrics = [m for m in METRIC_NAMES if m in challenger_per_user.columns]
    paired = [
        m for m in metrics if champion_per_user is not None and m in champion_per_user.columns
    ]
    aligned = _align_many(champion_per_user, challenger_per_user, paired)[1] if paired else {}
    boots = dict(
        zip(
            paired,
            paired_bootstraps(list(aligned.values()), samples=samples, seed=seed),
            strict=True,
        )
    )
    rows: list[dict[str, Any]] = []
    for m in metrics:
        ch = challenger_per_user[m].cast(pl.Float64).fill_null(0.0)
        row: dict[str, Any] = {
            "metric": m,
            "challenger": float(ch.mean()) if ch.len() else 0.0,
            "champion": None,
            "diff": None,
            "low": None,
            "high": None,
            "p_worse": None,
        }
        if m in boots:
            (a, b), boot = aligned[m], boots[m]
            row.update(
                challenger=float(b.mean()) if len(b) else 0.0,
                champion=float(a.mean()) if len(a) else 0.0,
                diff=boot.diff,
                low=boot.low,
                high=boot.high,
                p_worse=boot.p_worse,
            )
        rows.append(row)
    return rows


def _align_many(
    a: pl.DataFrame, b: pl.DataFrame, metrics: Sequence[str]
) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """:func:`align_per_user` of several metrics with one pairing of the users: (the users,
    each metric's (a's values, b's values))."""
    for name, frame in (("a", a), ("b", b)):
        for metric in metrics:
            if "user_id" not in frame.columns or metric not in frame.columns:
                raise ValueError(
                    f"per-user frame {name} has columns {frame.columns}; expected 'user_id' and "
                    f"{metric!r}"
                )
    users = pl.concat([a.select("user_id"), b.select("user_id")]).unique().sort("user_id")
    left = a.select(
        "user_id", *[pl.col(m).cast(pl.Float64).alias(f"_a{j}") for j, m in enumerate(metrics)]
    )
    right = b.select(
        "user_id", *[pl.col(m).cast(pl.Float64).alias(f"_b{j}") for j, m in enumerate(metrics)]
    )
    joined = (
        users.join(left, on="user_id", how="left")
        .join(right, on="user_id", how="left")
        .with_columns(pl.all().exclude("user_id").fill_null(0.0))
    )
    return joined["user_id"].to_list(), {
        m: (joined[f"_a{j}"].to_numpy(), joined[f"_b{j}"].to_numpy()) for j, m in enumerate(metrics)
    }
