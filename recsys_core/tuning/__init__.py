"""Hyperparameter search: search spaces (declared by each model class), the seeded
scikit-optimize loop, validation splits carved from training data only, the rule that picks the
best candidate, a seeded sample of users that bounds the search's cost on large data, trial logs
and convergence plots.

Importing this package does not import scikit-optimize or matplotlib; a search or a plot does.
"""

from recsys_core.tuning._report import convergence_plot, load_best, save_tuning
from recsys_core.tuning._sample import sample_users
from recsys_core.tuning._search import (
    TuningResult,
    TuningWarning,
    evaluate_params,
    tune,
    validation_per_user,
    validation_truth,
)
from recsys_core.tuning._select import pick_best
from recsys_core.tuning._space import TIME_DIMENSIONS, search_space
from recsys_core.tuning._split import split_validation

__all__ = [
    "TIME_DIMENSIONS",
    "TuningResult",
    "TuningWarning",
    "convergence_plot",
    "evaluate_params",
    "load_best",
    "pick_best",
    "sample_users",
    "save_tuning",
    "search_space",
    "split_validation",
    "tune",
    "validation_per_user",
    "validation_truth",
]
