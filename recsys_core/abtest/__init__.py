"""Online A/B tests of the nightly recommendations: assignment, attribution, statistics, read-out.

The pure parts (:func:`assign_arms`, :func:`attribute`, :func:`difference_in_proportions`,
:func:`srm_test`, :func:`readout`) work on plain tables and counts; :func:`readout_step` wires
them to the warehouse for one run date. :func:`simulate` is the closed-loop simulator.
"""

from recsys_core.abtest._assign import assign_arms, bucket
from recsys_core.abtest._attribution import attribute, night_metrics
from recsys_core.abtest._experiment import ExperimentChangedError, pin_experiment
from recsys_core.abtest._readout import NO_FEEDBACK, SRM_BLOCKED, readout, user_outcomes
from recsys_core.abtest._simulate import simulate
from recsys_core.abtest._stats import (
    Difference,
    difference_in_proportions,
    srm_test,
    wilson_interval,
)
from recsys_core.abtest._step import readout_step

__all__ = [
    "NO_FEEDBACK",
    "SRM_BLOCKED",
    "Difference",
    "ExperimentChangedError",
    "assign_arms",
    "attribute",
    "bucket",
    "difference_in_proportions",
    "night_metrics",
    "pin_experiment",
    "readout",
    "readout_step",
    "simulate",
    "srm_test",
    "user_outcomes",
    "wilson_interval",
]
