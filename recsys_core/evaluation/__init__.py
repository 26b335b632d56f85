"""Offline evaluation: splits, the evaluation protocol, champion vs challenger, the model registry."""

from recsys_core.evaluation._compare import (
    BootstrapResult,
    Decision,
    align_per_user,
    compare_metrics,
    decide_promotion,
    paired_bootstrap,
)
from recsys_core.evaluation._protocol import EvalResult, evaluate
from recsys_core.evaluation._split import event_day, holdout_truth, random_split, temporal_split
from recsys_core.evaluation.registry import (
    MODEL_ID_RE,
    ModelRegistry,
    UnknownModelError,
    make_model_id,
)

__all__ = [
    "MODEL_ID_RE",
    "BootstrapResult",
    "Decision",
    "EvalResult",
    "ModelRegistry",
    "UnknownModelError",
    "align_per_user",
    "compare_metrics",
    "decide_promotion",
    "evaluate",
    "event_day",
    "holdout_truth",
    "make_model_id",
    "paired_bootstrap",
    "random_split",
    "temporal_split",
]
