"""Online A/B tests of the nightly recommendations: assignment, attribution, statistics, read-out.

The pure parts (:func:`assign_arms`, :func:`attribute`, :func:`difference_in_proportions`,
:func:`srm_test`, :func:`readout`) work on plain tables and counts; :func:`readout_step` wires
them to the warehouse for one run date. :func:`simulate` is the closed-loop simulator.
"""

from recsys_core.abtest._assign import assign_arms, bucket
from recsys_core.abtest._attribution import attribute, night_metrics
from recsys_core.abtest._readout import NO_FEEDBACK, SRM_BLOCKED, readout, user_outcomes
from recsys_core.abtest._stats import (
    Difference,
    difference_in_proportions,
    srm_test,
    wilson_interval,
)

__all__ = [
    "NO_FEEDBACK",
    "SRM_BLOCKED",
    "Difference",
    "assign_arms",
    "attribute",
    "bucket",
    "difference_in_proportions",
    "night_metrics",
    "readout",
    "srm_test",
    "user_outcomes",
    "wilson_interval",
]
