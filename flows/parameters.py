"""The run options every flow takes, defined once: the flows' signatures, the deployments' forms
and default parameters, and the command line's flags all use :class:`RunOptions`.

The flows take the date(s) to run as their own parameters (``run_date``; ``start`` and ``end``)
and everything else as one ``options`` parameter, which the Prefect UI renders as a form::

    nightly(run_date=dt.date(2026, 1, 6), options=RunOptions(k=20, models=["ease"]))

Prefect-free, so that a notebook or the command line can build and validate options without it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from recsys_core.config import Settings, load_settings
from recsys_core.io import is_remote, resolve_location
from recsys_core.models import ModelName

__all__ = ["RunOptions"]


class RunOptions(BaseModel):
    """How a run is done: which config, data and models, and where its tasks run. A field left
    unset (None) takes its value from the config file (then the ``RECSYS_*`` environment)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    force: bool = Field(
        default=False,
        description="Redo complete work: re-ingest and re-clean the date and re-tune the models; "
        "a backfill redoes dates that are already complete. Otherwise completed expensive work "
        "(embeddings of unchanged text, recent tuning, complete dates) is reused.",
    )
    k: int | None = Field(
        default=None, ge=1, le=1000, description="Recommendations per user (config default: 10)."
    )
    models: list[ModelName] | None = Field(
        default=None,
        description='Candidate models, e.g. ["popularity", "ease", "itemknn"] (config default: '
        "popularity and ease).",
    )
    tune_calls: int | None = Field(
        default=None, ge=0, description="Bayesian-search budget (objective calls) per model."
    )
    config_path: str | None = Field(
        default=None,
        description="TOML config file on the machine that runs the flow (also RECSYS_CONFIG).",
    )
    landing: str | None = Field(
        default=None,
        description="Landing zone root: a folder, or a file://, s3://, gs:// or az:// URL "
        "(overrides the config).",
    )
    warehouse: str | None = Field(
        default=None,
        description="Warehouse root: a folder, or a file://, s3://, gs:// or az:// URL "
        "(overrides the config).",
    )
    task_runner: str | None = Field(
        default=None,
        description="Where tasks run: threads (default), dask (a local cluster), or dask=ADDRESS "
        "(an existing scheduler).",
    )

    @field_validator("task_runner")
    @classmethod
    def _known_runner(cls, value: str | None) -> str | None:
        if value is not None and value.partition("=")[0] not in ("threads", "dask"):
            raise ValueError(f"task_runner {value!r}: expected threads, dask or dask=ADDRESS")
        if value is not None and value.startswith("threads="):
            raise ValueError(f"task_runner {value!r}: only dask takes an address (dask=ADDRESS)")
        return value

    def settings(self, *, sql_url: str | None = None, **extra: Any) -> Settings:
        """The settings of a run with these options.

        Defaults < TOML file (``config_path``, else ``RECSYS_CONFIG``) < ``RECSYS_*`` environment <
        these options (then ``sql_url``, else ``RECSYS_SQL_URL``; ``extra`` top-level settings).
        Landing and warehouse come back absolute (a run may start in another folder).
        """
        runner: dict[str, Any] = {}
        if self.task_runner:
            kind, _, address = self.task_runner.partition("=")
            runner = {"task_runner": kind, "dask_address": address or None}
        overrides: dict[str, Any] = {
            "landing": self.landing,
            "warehouse": self.warehouse,
            "k": self.k,
            "train": {"models": self.models, "tune_calls": self.tune_calls},
            "runner": runner,
            "scoring": {"sql_url": sql_url or os.environ.get("RECSYS_SQL_URL") or None},
        }
        config_path = self.config_path or os.environ.get("RECSYS_CONFIG") or None
        settings = load_settings(config_path, **overrides, **extra)
        return settings.model_copy(
            update={
                "landing": _absolute(settings.landing),
                "warehouse": _absolute(settings.warehouse),
            }
        )

    def located(self, settings: Settings) -> RunOptions:
        """These options with the landing and warehouse ``settings`` resolved them to, so that a
        child run (another process, another folder) reads and writes the same places."""
        return self.model_copy(
            update={"landing": str(settings.landing), "warehouse": str(settings.warehouse)}
        )

    def over(self, defaults: dict[str, Any] | None) -> RunOptions:
        """These options over ``defaults`` (a deployment's ``options`` JSON), field by field: the
        fields given here win, the others come from ``defaults``.

        Prefect replaces a whole parameter when a run names it, so a run of a deployment given
        only ``{"k": 20}`` would otherwise lose the deployment's config, landing and warehouse.
        """
        if not defaults:
            return self
        given = self.model_dump(include=self.model_fields_set)
        return RunOptions.model_validate({**defaults, **given})

    def parameters(self) -> dict[str, Any]:
        """JSON for a flow run's or a deployment's ``options`` parameter: unset (None) values left
        out, so that a deployment's own defaults (and then the config) apply."""
        return self.model_dump(mode="json", exclude_none=True)


def _absolute(root: Path | str) -> Path | str:
    """A local root made absolute; an object-store URL checked (its backend installed) and kept."""
    loc = resolve_location(root)
    return str(loc) if is_remote(loc) else loc
