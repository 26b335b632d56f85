"""Pure functions over ranked lists."""

from recsys_core.metrics._ranking import METRIC_NAMES, mean_metrics, ranking_metrics

__all__ = ["METRIC_NAMES", "mean_metrics", "ranking_metrics"]
