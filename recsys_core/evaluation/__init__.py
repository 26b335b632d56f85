"""Offline evaluation: splits, the evaluation protocol, champion vs challenger (the models
themselves are kept in :mod:`recsys_core.registry`)."""

from recsys_core.evaluation._compare import (
    BootstrapResult,
    Decision,
    align_per_user,
    compare_metrics,
    decide_promotion,
    paired_bootstrap,
    paired_bootstraps,
)
from recsys_core.evaluation._protocol import EvalResult, TrainFacts, evaluate
from recsys_core.evaluation._split import event_day, holdout_truth, random_split, temporal_split

__all__ = [
    "BootstrapResult",
    "Decision",
    "EvalResult",
    "TrainFacts",
    "align_per_user",
    "compare_metrics",
    "decide_promotion",
    "evaluate",
    "event_day",
    "holdout_truth",
    "paired_bootstrap",
    "paired_bootstraps",
    "random_split",
    "temporal_split",
]
