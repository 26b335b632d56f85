"""Pure functions over ranked lists: accuracy (per user) and beyond-accuracy metrics."""

from recsys_core.metrics._beyond import beyond_accuracy, catalog_coverage, item_popularity
from recsys_core.metrics._ranking import METRIC_NAMES, mean_metrics, ranking_metrics

__all__ = [
    "METRIC_NAMES",
    "beyond_accuracy",
    "catalog_coverage",
    "item_popularity",
    "mean_metrics",
    "ranking_metrics",
]
