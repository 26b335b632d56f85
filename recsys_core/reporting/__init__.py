"""The nightly report: HTML for people, Markdown/table digests for Prefect, drift signals."""

from recsys_core.reporting._digest import markdown_summary, metrics_table, night_markdown
from recsys_core.reporting._drift import (
    RELATIVE_SIGNALS,
    SHARE_SIGNALS,
    data_stats,
    drift_signals,
    recommendation_stats,
)
from recsys_core.reporting._history import (
    evaluation_record,
    metrics_history,
    previous_stats,
    write_evaluation,
)
from recsys_core.reporting._links import report_link
from recsys_core.reporting._report import build_report
from recsys_core.reporting._summary import normalize_summary

__all__ = [
    "RELATIVE_SIGNALS",
    "SHARE_SIGNALS",
    "build_report",
    "data_stats",
    "drift_signals",
    "evaluation_record",
    "markdown_summary",
    "metrics_history",
    "metrics_table",
    "night_markdown",
    "normalize_summary",
    "previous_stats",
    "recommendation_stats",
    "report_link",
    "write_evaluation",
]
