"""How the flows are started: the three deployments, ``serve``, work pools, and the backfill that
runs each date as its own deployment run."""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use (PEP 562), not at import: ``deployments.cli`` must be importable without
# importing Prefect, whose settings are read from the environment once, at its first import, and
# the CLI sets that environment (PREFECT_HOME, the local API's start-up timeout) when it starts.
_EXPORTS = {
    "CHILD_DEPLOYMENT": "deployments._backfill",
    "backfill_via_deployments": "deployments._backfill",
    "child_parameters": "deployments._backfill",
    "idempotency_key": "deployments._backfill",
    "submit_child": "deployments._backfill",
    "wait_for_run": "deployments._backfill",
    "NIGHTLY_CRON": "deployments.serve",
    "build_deployments": "deployments.serve",
    "deploy_all": "deployments.serve",
    "serve_all": "deployments.serve",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'deployments' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
