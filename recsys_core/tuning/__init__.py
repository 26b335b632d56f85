"""Hyperparameter search: per-model search spaces, the seeded scikit-optimize loop, validation
splits carved from training data only, trial logs and convergence plots."""

from recsys_core.tuning._report import convergence_plot, load_best, save_tuning
from recsys_core.tuning._search import (
    TuningResult,
    TuningWarning,
    evaluate_params,
    tune,
    validation_truth,
)
from recsys_core.tuning._space import SEARCH_SPACES, search_space
from recsys_core.tuning._split import split_validation

__all__ = [
    "SEARCH_SPACES",
    "TuningResult",
    "TuningWarning",
    "convergence_plot",
    "evaluate_params",
    "load_best",
    "save_tuning",
    "search_space",
    "split_validation",
    "tune",
    "validation_truth",
]
