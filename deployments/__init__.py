"""How the flows are started: the three deployments, ``serve``, work pools, and the backfill that
runs each date as its own deployment run."""

from deployments._backfill import (
    CHILD_DEPLOYMENT,
    backfill_via_deployments,
    child_parameters,
    idempotency_key,
    submit_child,
    wait_for_run,
)
from deployments.serve import NIGHTLY_CRON, build_deployments, deploy_all, serve_all

__all__ = [
    "CHILD_DEPLOYMENT",
    "NIGHTLY_CRON",
    "backfill_via_deployments",
    "build_deployments",
    "child_parameters",
    "deploy_all",
    "idempotency_key",
    "serve_all",
    "submit_child",
    "wait_for_run",
]
