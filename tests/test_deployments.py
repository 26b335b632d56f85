"""The deployments: names, schedule, typed parameter forms, concurrency, and idempotent backfills.

Deployment objects are built without an API; the idempotency and schema-enforcement checks
register the manual deployment on the session's Prefect test harness (no runner: the runs created
there stay Scheduled, which is all these checks need).
"""

from __future__ import annotations

import datetime as dt

import pytest

from deployments import (
    CHILD_DEPLOYMENT,
    NIGHTLY_CRON,
    backfill_via_deployments,
    build_deployments,
    child_parameters,
    deploy_all,
    idempotency_key,
    serve_all,
    submit_child,
)
from flows.parameters import RunOptions
from recsys_core.models import MODELS

DAY = dt.date(2026, 1, 8)


@pytest.fixture(scope="module")
def deployments_by_name(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    paths = {"config_path": "recsys.toml", "landing": "landing", "warehouse": "warehouse"}
    built = build_deployments(RunOptions(**{key: str(root / p) for key, p in paths.items()}))
    return {f"{d.flow_name}/{d.name}": d for d in built}, root


def test_three_deployments_with_one_schedule_and_queueing_limits(deployments_by_name):
    deps, _ = deployments_by_name
    assert sorted(deps) == [
        "recsys-backfill/backfill",
        "recsys-nightly/manual",
        "recsys-nightly/nightly",
    ]

    nightly = deps["recsys-nightly/nightly"]
    (schedule,) = nightly.schedules
    assert schedule.schedule.cron == NIGHTLY_CRON == "0 2 * * *"
    assert schedule.schedule.timezone == "UTC"
    assert schedule.active
    assert "run_date" not in nightly.parameters  # None: the flow takes the previous day
    assert deps["recsys-nightly/manual"].schedules == []
    assert deps["recsys-backfill/backfill"].schedules == []

    for dep in deps.values():
        assert dep.concurrency_limit == 1
        assert dep.concurrency_options.collision_strategy.value == "ENQUEUE"
        assert dep.enforce_parameter_schema
        assert dep.tags == ["recsys"]
    # module entrypoints: a process worker imports them (no file-path guessing)
    assert nightly.entrypoint == "flows.nightly.nightly"
    assert (
        deps["recsys-backfill/backfill"].entrypoint
        == "deployments._backfill.backfill_via_deployments"
    )


def test_every_flow_has_its_own_name():
    """The CLI's in-process backfill and the deployment's backfill are different flows: one name
    each, so the UI never mixes their runs."""
    from flows.nightly import backfill, nightly

    names = [f.name for f in (nightly, backfill, backfill_via_deployments)]
    assert names == ["recsys-nightly", "recsys-backfill-local", "recsys-backfill"]


def test_cron_and_timezone_are_configurable(tmp_path):
    nightly = build_deployments(cron="30 4 * * *", timezone="Europe/Paris")[0]
    cron = nightly.schedules[0].schedule
    assert (cron.cron, cron.timezone) == ("30 4 * * *", "Europe/Paris")
    assert nightly.parameters == {}


def test_paths_become_absolute_default_parameters(deployments_by_name, monkeypatch, tmp_path):
    deps, root = deployments_by_name
    for dep in deps.values():
        assert dep.parameters == {
            "options": {
                "config_path": str(root / "recsys.toml"),
                "landing": str(root / "landing"),
                "warehouse": str(root / "warehouse"),
            }
        }
    monkeypatch.chdir(tmp_path)
    relative = build_deployments(RunOptions(landing="land", warehouse="wh", k=20))[1]
    assert relative.parameters == {
        "options": {"k": 20, "landing": str(tmp_path / "land"), "warehouse": str(tmp_path / "wh")}
    }


def test_manual_parameters_render_as_a_typed_form(deployments_by_name):
    deps, _ = deployments_by_name
    schema = deps["recsys-nightly/manual"]._parameter_openapi_schema.model_dump()
    assert list(schema["properties"]) == ["run_date", "options"]
    assert {"format": "date", "type": "string"} in schema["properties"]["run_date"]["anyOf"]
    assert schema["properties"]["options"]["$ref"] == "#/definitions/RunOptions"
    options = schema["definitions"]["RunOptions"]
    assert options["additionalProperties"] is False  # a misspelt option is refused, not ignored
    props = options["properties"]
    assert list(props) == list(RunOptions.model_fields)
    assert list(props)[:4] == ["force", "k", "models", "tune_calls"]
    assert props["force"]["type"] == "boolean" and props["force"]["default"] is False
    assert {"type": "integer", "minimum": 1, "maximum": 1000} in props["k"]["anyOf"]
    # the form offers the registered model names only: a typo such as "eaze" cannot be submitted
    array = next(a for a in props["models"]["anyOf"] if a.get("type") == "array")
    assert array["items"] == {"enum": sorted(MODELS, key=list(MODELS).index), "type": "string"}
    assert {"type": "integer", "minimum": 0} in props["tune_calls"]["anyOf"]
    assert schema["required"] == []
    for name, field in props.items():  # the form explains every option
        assert field.get("description"), f"option {name} has no description"

    backfill = deps["recsys-backfill/backfill"]._parameter_openapi_schema.model_dump()
    assert backfill["required"] == ["start", "end"]
    assert backfill["properties"]["start"] == {
        "format": "date", "position": 0, "title": "start", "type": "string",
        "description": "First date to run (YYYY-MM-DD).",
    }  # fmt: skip
    assert backfill["properties"]["options"]["$ref"] == "#/definitions/RunOptions"
    assert backfill["definitions"]["RunOptions"] == options  # one model, the same form
    for name in ("start", "end"):
        assert backfill["properties"][name].get("description"), f"backfill {name} undescribed"


def test_serve_rejects_a_limit_that_would_deadlock_a_backfill():
    with pytest.raises(ValueError, match="serve limit 2 is too small"):
        serve_all(limit=2)


def test_child_parameters_are_json_and_leave_unset_values_to_the_deployment():
    params = child_parameters(DAY, RunOptions(k=5, models=["ease"], warehouse="/w"))
    assert params == {
        "run_date": "2026-01-08",
        "options": {"force": False, "k": 5, "models": ["ease"], "warehouse": "/w"},
    }


def test_idempotency_key_is_per_deployment_date_and_parameters():
    params = child_parameters(DAY, RunOptions(k=5))
    key = idempotency_key(CHILD_DEPLOYMENT, DAY, params)
    assert key == idempotency_key(CHILD_DEPLOYMENT, DAY, dict(reversed(list(params.items()))))
    assert key.startswith("recsys-nightly/manual|2026-01-08|")
    other_day = DAY + dt.timedelta(days=1)
    assert (
        idempotency_key(CHILD_DEPLOYMENT, other_day, child_parameters(other_day, RunOptions(k=5)))
        != key
    )
    assert idempotency_key(CHILD_DEPLOYMENT, DAY, child_parameters(DAY, RunOptions(k=6))) != key
    assert idempotency_key(CHILD_DEPLOYMENT, DAY, params, nonce="run-1") == f"{key}|run-1"
    # the key of the parameters before the options were one parameter: a backfill resubmitted
    # after the upgrade still finds the child runs it created before
    flat = {"run_date": "2026-01-08", "force": False, "k": 5}
    assert key == idempotency_key(CHILD_DEPLOYMENT, DAY, flat)


# ---- against the Prefect test harness -------------------------------------------------------------
@pytest.fixture(scope="module")
def manual_deployment_id(prefect_harness, deployments_by_name):
    deps, _ = deployments_by_name
    return deps["recsys-nightly/manual"].apply()


def _runs_of(deployment_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])
            )
        )


@pytest.mark.prefect
def test_resubmitting_a_date_finds_its_run_and_reschedules_a_failed_one(manual_deployment_id):
    from prefect.client.orchestration import get_client
    from prefect.states import Failed

    day = dt.date(2026, 2, 1)
    params = child_parameters(day, RunOptions(k=3))
    key = idempotency_key(CHILD_DEPLOYMENT, day, params)
    first, how = submit_child(day, params, key)
    assert how == "submitted" and first.name == "nightly-2026-02-01"
    again, how = submit_child(day, params, key)
    assert (again.id, how) == (first.id, "submitted")
    assert [
        r.id for r in _runs_of(manual_deployment_id) if r.parameters.get("run_date") == "2026-02-01"
    ] == [first.id]

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(first.id, Failed(message="injected"), force=True)
    retried, how = submit_child(day, params, key)
    assert (retried.id, how) == (first.id, "rescheduled")
    assert retried.state.is_scheduled()
    assert (
        len(
            [
                r
                for r in _runs_of(manual_deployment_id)
                if r.parameters.get("run_date") == "2026-02-01"
            ]
        )
        == 1
    )

    # other parameters for the same date are other work: a new run
    other = child_parameters(day, RunOptions(k=4))
    new, _ = submit_child(day, other, idempotency_key(CHILD_DEPLOYMENT, day, other))
    assert new.id != first.id


@pytest.mark.prefect
def test_the_api_rejects_parameters_that_do_not_fit_the_form(manual_deployment_id):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    with get_client(sync_client=True) as client:
        with pytest.raises(
            PrefectHTTPStatusError, match=r"Validation failed for field '(\w+\.)?k'"
        ):
            client.create_flow_run_from_deployment(
                manual_deployment_id, parameters={"options": {"k": "ten"}}
            )
        with pytest.raises(
            PrefectHTTPStatusError, match=r"Validation failed for field '(\w+\.)?models'"
        ):
            client.create_flow_run_from_deployment(
                manual_deployment_id, parameters={"options": {"models": "ease"}}
            )


@pytest.mark.prefect
def test_a_run_given_some_options_keeps_the_deployments_other_defaults(
    manual_deployment_id, deployments_by_name, monkeypatch
):
    """Prefect replaces a whole parameter, so a run of the manual deployment given only
    ``{"options": {"k": 3}}`` would lose the deployment's config, landing and warehouse."""
    from flows.runtime import with_deployment_defaults

    _, root = deployments_by_name
    given = RunOptions.model_validate({"k": 3, "warehouse": "/elsewhere"})
    assert with_deployment_defaults(given) == given  # not a deployment run: unchanged
    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__ID", str(manual_deployment_id))
    assert with_deployment_defaults(given) == RunOptions(
        k=3,
        config_path=str(root / "recsys.toml"),
        landing=str(root / "landing"),
        warehouse="/elsewhere",  # given: wins over the deployment's
    )
    # a field given as null is given: back to the config's value, not the deployment's
    cleared = with_deployment_defaults(RunOptions.model_validate({"landing": None}))
    assert (cleared.landing, cleared.warehouse) == (None, str(root / "warehouse"))


@pytest.mark.prefect
def test_backfill_skips_complete_dates_without_creating_child_runs(manual_deployment_id, tmp_path):
    from recsys_core.io import Warehouse, atomic_write_json

    wh = Warehouse(tmp_path / "warehouse")
    days = [DAY, DAY + dt.timedelta(days=1)]
    for d in days:  # what is_complete looks at: the run marker and the recommendation partition
        atomic_write_json(wh.run_marker(d), {"run_date": d.isoformat()})
        wh.recommendations(d).parent.mkdir(parents=True)
        wh.recommendations(d).write_bytes(b"")
    cfg = tmp_path / "recsys.toml"
    cfg.write_text('[train]\nmodels = ["popularity"]\ntune_calls = 2\n', encoding="utf-8")
    before = len(_runs_of(manual_deployment_id))
    out = backfill_via_deployments(
        start=days[0], end=days[1], options=RunOptions(config_path=str(cfg), warehouse=str(wh.root))
    )
    assert out == {"completed": [], "skipped": ["2026-01-08", "2026-01-09"], "runs": {}}
    assert len(_runs_of(manual_deployment_id)) == before

    with pytest.raises(RuntimeError, match="recsys-nightly/absent is not registered"):
        submit_child(DAY, {}, "k", deployment="recsys-nightly/absent")
    with pytest.raises(ValueError, match="before start"):
        backfill_via_deployments(
            start=days[1], end=days[0], options=RunOptions(config_path=str(cfg))
        )


@pytest.mark.prefect
def test_deploy_all_registers_the_three_on_a_work_pool(prefect_harness, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(name="recsys-test-pool", type="process"), overwrite=True
        )
        ids = deploy_all(
            "recsys-test-pool", RunOptions(warehouse=str(tmp_path / "wh")), cron="15 3 * * *"
        )
        deps = [client.read_deployment(i) for i in ids]
    assert [d.name for d in deps] == ["nightly", "manual", "backfill"]
    assert {d.work_pool_name for d in deps} == {"recsys-test-pool"}
    assert deps[0].schedules[0].schedule.cron == "15 3 * * *"
    assert all(d.parameters == {"options": {"warehouse": str(tmp_path / "wh")}} for d in deps)
    assert deps[0].entrypoint == "flows.nightly.nightly"
    assert [d.global_concurrency_limit.limit for d in deps] == [1, 1, 1]


#: The part of a container pool's base job template that ``deploy`` looks at (the Docker and
#: Kubernetes workers' templates have these variables among others).
_CONTAINER_TEMPLATE = {
    "job_configuration": {"image": "{{ image }}", "env": "{{ env }}"},
    "variables": {
        "type": "object",
        "properties": {
            "image": {"type": "string", "default": "prefecthq/prefect:3-latest"},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
}


@pytest.mark.prefect
def test_deploy_to_a_container_pool_sets_the_image_and_the_runs_environment(
    prefect_harness, tmp_path, capsys
):
    """``recsys deploy --image --env`` on a container pool: every deployment runs in the image
    (nothing built or pushed) with the environment given; on a process pool --image is refused
    in one line naming the pool, and a malformed --env before anything is registered."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from deployments.cli import main

    with get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(
                name="recsys-test-k8s", type="kubernetes", base_job_template=_CONTAINER_TEMPLATE
            ),
            overwrite=True,
        )
        client.create_work_pool(
            WorkPoolCreate(name="recsys-test-process", type="process"), overwrite=True
        )
    wh = "s3://acme-lake/recsys"
    rc = main(
        ["deploy", "--pool", "recsys-test-k8s", "--image", "registry.example/recsys:1.4",
         "--env", "AWS_REGION=eu-west-1", "--env", "AWS_ENDPOINT_URL=http://minio:9000",
         "--warehouse", wh]
    )  # fmt: skip
    out = capsys.readouterr()
    assert rc == 0, out.err
    ids = out.out.split()[-3:]  # after Prefect's table, one id per deployment
    with get_client(sync_client=True) as client:
        deps = [client.read_deployment(i) for i in ids]
    assert [d.name for d in deps] == ["nightly", "manual", "backfill"]
    for d in deps:
        assert d.work_pool_name == "recsys-test-k8s"
        assert d.job_variables == {
            "image": "registry.example/recsys:1.4",
            "env": {"AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://minio:9000"},
        }
        assert d.parameters == {"options": {"warehouse": wh}}

    rc = main(
        ["deploy", "--pool", "recsys-test-process", "--image", "r/recsys:1", "--warehouse", wh]
    )
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert "recsys deploy: failed:" in err and "'recsys-test-process'" in err and "image" in err

    rc = main(["deploy", "--pool", "recsys-test-k8s", "--env", "AWS_REGION", "--warehouse", wh])
    err = capsys.readouterr().err
    assert rc == 1 and "--env 'AWS_REGION': expected NAME=VALUE" in err
