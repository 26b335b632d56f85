"""The report's figures, as PNG bytes (matplotlib's Agg canvas; no pyplot global state).

matplotlib is imported when a figure is drawn, not with the package: importing it costs seconds
on a loaded machine, and the digests that the tasks publish need none of it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["convergence_png", "metrics_over_time_png", "score_histogram_png"]


def _png(fig: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def metrics_over_time_png(history: pl.DataFrame, metrics: Sequence[str], primary: str) -> bytes:
    """Challenger's ``metrics`` per run date (solid) and the champion's ``primary`` (dashed)."""
    from matplotlib.dates import AutoDateLocator, DateFormatter
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    for metric in metrics:
        part = history.filter((pl.col("role") == "challenger") & (pl.col("metric") == metric))
        if part.height:
            ax.plot(part["run_date"].to_list(), part["value"].to_list(), marker="o", label=metric)
    champ = history.filter((pl.col("role") == "champion") & (pl.col("metric") == primary))
    if champ.height:
        ax.plot(
            champ["run_date"].to_list(),
            champ["value"].to_list(),
            linestyle="--",
            marker="x",
            color="black",
            label=f"{primary} (champion)",
        )
    ax.set_xlabel("run date")
    ax.set_ylabel("metric value")
    ax.set_title("Challenger metrics over run dates")
    ax.grid(alpha=0.3)
    dates = sorted(set(history["run_date"].to_list()))
    if len(dates) <= 10:
        ax.set_xticks(dates)
    else:
        ax.xaxis.set_major_locator(AutoDateLocator(minticks=3, maxticks=10))
    ax.xaxis.set_major_formatter(DateFormatter("%Y-%m-%d"))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.autofmt_xdate()
    return _png(fig)


def convergence_png(trials: dict[str, Sequence[float]], direction: str = "max") -> bytes:
    """Objective value of each tuning call (dots) and the best so far (line), one colour per model."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    for name, values in trials.items():
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            continue
        calls = np.arange(1, v.size + 1)
        best = np.fmax.accumulate(v) if direction == "max" else np.fmin.accumulate(v)
        (line,) = ax.plot(calls, best, drawstyle="steps-post", label=f"{name} best so far")
        ax.scatter(calls, v, s=12, color=line.get_color(), alpha=0.6)
    ax.set_xlabel("objective call")
    ax.set_ylabel("validation objective")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Hyperparameter search convergence")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def score_histogram_png(scores: np.ndarray, bins: int = 50) -> bytes:
    """Histogram of tonight's recommendation scores."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.0))
    ax = fig.add_subplot()
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    ax.hist(s, bins=bins, color="#4477aa")
    ax.set_xlabel("score")
    ax.set_ylabel("recommendations")
    ax.set_title(f"Score distribution of tonight's recommendations ({s.size:,} rows)")
    ax.grid(alpha=0.3)
    return _png(fig)
