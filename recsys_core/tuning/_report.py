"""Tuning artefacts: the trial log on disk, the best parameters, and a convergence plot."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recsys_core.io import (
    atomic_path,
    atomic_write_json,
    atomic_write_parquet,
    exists,
    location,
    read_json,
)
from recsys_core.tuning._search import TuningResult

__all__ = ["convergence_plot", "load_best", "save_tuning"]


def save_tuning(result: TuningResult, directory: Path | str) -> Path:
    """Write ``trials.parquet`` and ``best.json`` into ``directory`` (each atomically).

    ``best.json`` holds ``model, params, score, metric, k, method, seed, n_calls, n_trials,
    search_users, train_users, max_users, sampled, seconds, created_at`` (UTC, ISO 8601):
    ``sampled`` says the trials ran on a seeded sample of ``search_users`` of the
    ``train_users`` training users. Returns ``directory``.
    """
    directory = location(directory)
    atomic_write_parquet(result.trials, directory / "trials.parquet")
    atomic_write_json(
        directory / "best.json",
        {
            "model": result.model,
            "params": result.best_params,
            "score": result.best_score,
            "metric": result.metric,
            "k": result.k,
            "method": result.method,
            "seed": result.seed,
            "n_calls": result.n_calls,
            "n_trials": result.trials.height,
            "search_users": result.search_users,
            "train_users": result.train_users,
            "max_users": result.max_users,
            "sampled": result.sampled,
            "seconds": round(result.seconds, 3),
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    )
    return directory


def load_best(directory: Path | str) -> dict[str, Any] | None:
    """The ``best.json`` written by :func:`save_tuning`, or None when there is none.

    A damaged file raises :class:`recsys_core.io.CorruptFileError` naming it.
    """
    path = location(directory) / "best.json"
    if not exists(path):
        return None
    return read_json(path)


def convergence_plot(result: TuningResult | Sequence[TuningResult], path: Path | str) -> Path:
    """PNG of the best-so-far validation metric against the objective call, one line per result.

    Give a bayes and a random result of the same model to compare the two searches. Written with
    matplotlib's Agg canvas (no display, no global pyplot state), atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    results = [result] if isinstance(result, TuningResult) else list(result)
    if not results:
        raise ValueError("convergence_plot: no tuning result given")
    fig = Figure(figsize=(6.0, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for res in results:
        calls = (res.trials["trial"] + 1).to_list()
        ax.step(
            calls,
            res.trials["best_so_far"].to_list(),
            where="post",
            marker="o",
            ms=3,
            label=f"{res.method} (best {res.best_score:.4f})",
        )
        ax.scatter(calls, res.trials[res.metric].to_list(), s=8, alpha=0.35)
    first = results[0]
    ax.set_xlabel("objective call")
    ax.set_ylabel(f"validation {first.metric}@{first.k} (best so far)")
    sample = f" (sample of {first.search_users:,} users)" if first.sampled else ""
    ax.set_title(f"{first.model}: hyperparameter search{sample}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = location(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
