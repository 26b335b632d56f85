"""The nightly report: HTML for people, Markdown/table digests for Prefect, drift signals, and
the earlier nights read back from their run markers."""

from recsys_core.reporting._digest import markdown_summary, metrics_table, night_markdown
from recsys_core.reporting._drift import (
    RELATIVE_SIGNALS,
    SHARE_SIGNALS,
    data_stats,
    drift_signals,
    recommendation_stats,
)
from recsys_core.reporting._history import (
    metrics_frame,
    metrics_history,
    previous_run,
    run_history,
)
from recsys_core.reporting._links import report_link
from recsys_core.reporting._report import build_report

__all__ = [
    "RELATIVE_SIGNALS",
    "SHARE_SIGNALS",
    "build_report",
    "data_stats",
    "drift_signals",
    "markdown_summary",
    "metrics_frame",
    "metrics_history",
    "metrics_table",
    "night_markdown",
    "previous_run",
    "recommendation_stats",
    "report_link",
    "run_history",
]
