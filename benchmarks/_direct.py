"""The nightly's steps as ``flows.nightly.run_pipeline`` wires them, without Prefect (shared by
the benchmarks that time the core steps: ``bench_nightly``'s direct mode, ``bench_storage
--steps``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

#: ``step(name, fn, *args)`` calls ``fn(*args)``, times it as ``name`` and returns its result.
Step = Callable[..., Any]


def run_night(settings: Any, day: dt.date, step: Step, shards: int | None = None) -> Any:
    """One night through the core step functions, each called through ``step``; the score
    shards (``shards``, default the config's ``scoring.shards``) on threads, as the thread runner
    runs them, and their merge timed together as ``score``. Returns the night's
    :class:`~recsys_core.results.RunSummary`. No lock is taken."""
    from recsys_core import pipeline
    from recsys_core.results import RunSteps

    n = shards or settings.scoring.shards

    def score() -> Any:
        model = steps["evaluate"].champion_after
        with ThreadPoolExecutor(n) as pool:
            parts = list(
                pool.map(lambda i: pipeline.score_shard(settings, day, i, n, model), range(n))
            )
        return pipeline.merge_scores(settings, day, parts)

    steps: dict[str, Any] = {}
    steps["ingest"] = step("ingest", pipeline.ingest_step, settings, day)
    steps["clean"] = step("clean", pipeline.clean_step, settings, day)
    steps["embed"] = step("embed", pipeline.embed_step, settings, day)
    steps["train"] = step("train", pipeline.train_step, settings, day)
    challenger = steps["train"].challenger
    steps["evaluate"] = step("evaluate", pipeline.evaluate_step, settings, day, challenger)
    steps["score"] = step("score", score)
    return step("report", pipeline.finalize_step, settings, day, RunSteps(**steps))
