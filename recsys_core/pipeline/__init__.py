"""The pipeline's steps as plain functions: each takes Settings and a run date and returns a small
frozen result (:mod:`recsys_core.results`). Prefect tasks wrap them one to one; a notebook can
call them directly."""

from recsys_core.pipeline._data import (
    PlannedIngest,
    clean_step,
    commit_ingest_step,
    ingest_slice_step,
    ingest_step,
    plan_ingest_step,
)
from recsys_core.pipeline._faults import InjectedFault, maybe_fail
from recsys_core.pipeline._finalize import backfill_plan, finalize_step, is_complete
from recsys_core.pipeline._modelling import embed_step, evaluate_step, prepare_arms, train_step
from recsys_core.pipeline._scoring import active_users, merge_scores, publish_sql, score_shard

__all__ = [
    "InjectedFault",
    "PlannedIngest",
    "active_users",
    "backfill_plan",
    "clean_step",
    "commit_ingest_step",
    "embed_step",
    "evaluate_step",
    "finalize_step",
    "ingest_slice_step",
    "ingest_step",
    "is_complete",
    "maybe_fail",
    "plan_ingest_step",
    "merge_scores",
    "prepare_arms",
    "publish_sql",
    "score_shard",
    "train_step",
]
