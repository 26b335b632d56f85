"""An experiment's definition, pinned on its first night: arms, shares and salt may not change.

``abtest/<experiment>/experiment.json`` is written the first night an experiment runs. Every later
night compares the configuration with it and refuses a change: users assigned under one set of
arms or shares would otherwise be pooled with users assigned under another, and the read-out
would compare neither. Starting over is one rename (``abtest.experiment``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from recsys_core.config import AbTestConfig
from recsys_core.io import Warehouse, atomic_write_json, read_json

__all__ = ["ExperimentChangedError", "pin_experiment", "salt_of"]


class ExperimentChangedError(ValueError):
    """The configured arms, shares or salt differ from the experiment's first night."""


def salt_of(cfg: AbTestConfig) -> str:
    return cfg.salt if cfg.salt is not None else str(cfg.experiment)


def _definition(cfg: AbTestConfig) -> dict[str, Any]:
    return {
        "experiment": cfg.experiment,
        "arms": dict(cfg.arms),
        "arm_order": list(cfg.arms),
        "shares": cfg.arm_shares(),
        "salt": salt_of(cfg),
    }


def pin_experiment(wh: Warehouse, cfg: AbTestConfig, run_date: dt.date) -> dict[str, Any]:
    """The stored definition (written now if this is the experiment's first night).

    Raises :class:`ExperimentChangedError` naming what changed when the configuration differs.
    """
    if cfg.experiment is None:
        raise ValueError("no experiment configured (abtest.experiment is empty)")
    path = wh.abtest_definition(cfg.experiment)
    now = _definition(cfg)
    try:
        stored = read_json(path)
    except FileNotFoundError:
        stored = None
    if stored is None:
        atomic_write_json(path, {**now, "started": run_date.isoformat()})
        return {**now, "started": run_date.isoformat()}
    changed = [
        f"{key}: was {stored.get(key)!r}, config has {now[key]!r}"
        for key in ("arm_order", "arms", "shares", "salt")
        if stored.get(key) != now[key]
    ]
    if changed:
        raise ExperimentChangedError(
            f"experiment {cfg.experiment!r} (started {stored.get('started')}, {path}) changed in "
            f"the middle: {'; '.join(changed)}. Users assigned under the old arms would be pooled "
            "with the new ones; rename the experiment (abtest.experiment) to start a new one"
        )
    return stored
