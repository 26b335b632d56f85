"""The statistics of the read-out: a difference in proportions, its interval and p-value, and the
sample-ratio-mismatch check. Pure functions of counts, tested for what they promise
(``tests/test_abtest.py``: A/A false-positive rate, interval coverage, a planted mismatch).

* Each arm's proportion gets a Wilson score interval (good coverage even near 0 or 1).
* The difference ``p2 - p1`` gets Newcombe's hybrid score interval (method 10 of Newcombe 1998),
  built from the two Wilson intervals: close to nominal coverage where the Wald interval is too
  narrow (small counts, rates near 0).
* The p-value is the two-sided pooled two-proportion z-test (the score test of p1 = p2).
* Sample ratio mismatch: Pearson's chi-square of the users assigned to each arm against the
  configured shares (k - 1 degrees of freedom).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Any

from scipy import stats

__all__ = ["Difference", "difference_in_proportions", "srm_test", "wilson_interval"]


@lru_cache(maxsize=16)
def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(x: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``x / n``; ``(0, 1)`` when ``n`` is 0."""
    if n < 0 or x < 0 or x > n:
        raise ValueError(f"need 0 <= x <= n, got x={x}, n={n}")
    if n == 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = x / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Difference:
    """``diff = p2 - p1`` (second arm minus first), its interval and the two-sided p-value."""

    p1: float
    p2: float
    diff: float
    low: float
    high: float
    p_value: float
    n1: int
    n2: int
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def difference_in_proportions(
    x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95
) -> Difference:
    """Newcombe interval of ``x2/n2 - x1/n1`` and the pooled z-test p-value.

    Needs ``n1, n2 >= 1``. With no successes and no failures to tell apart (all 0 or all 1 in
    both arms) the p-value is 1.
    """
    if n1 < 1 or n2 < 1:
        raise ValueError(f"each arm needs at least one user, got n1={n1}, n2={n2}")
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, confidence)
    l2, u2 = wilson_interval(x2, n2, confidence)
    d = p2 - p1
    low = d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    high = d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    p_value = 1.0 if se == 0 else math.erfc(abs(d) / se / math.sqrt(2.0))
    return Difference(
        p1=p1,
        p2=p2,
        diff=d,
        low=max(-1.0, low),
        high=min(1.0, high),
        p_value=min(1.0, p_value),
        n1=n1,
        n2=n2,
        confidence=confidence,
    )


def srm_test(counts: Mapping[str, int] | Sequence[int], shares: Sequence[float]) -> float:
    """p-value of Pearson's chi-square of ``counts`` against the expected ``shares``.

    1.0 when there are no users at all (nothing to compare yet).
    """
    observed = list(counts.values()) if isinstance(counts, Mapping) else list(counts)
    if len(observed) != len(shares) or len(observed) < 2:
        raise ValueError(f"need one count per share (>= 2 arms), got {observed} and {shares}")
    total = sum(observed)
    if total == 0:
        return 1.0
    expected = [total * s for s in shares]
    chi2 = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    return float(stats.chi2.sf(chi2, df=len(observed) - 1))
