"""The nightly flow on a 2-worker local Dask cluster gives the thread runner's output, byte for byte."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import polars as pl
import pytest

from flows.parameters import RunOptions
from recsys_core.io import Warehouse
from recsys_core.landing import generate_synthetic

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

END = dt.date(2026, 1, 8)


def _setup(root: Path, landing_of: Path | None = None) -> Path:
    """A config under ``root`` and its landing zone: generated, or copied from ``landing_of``'s
    with the files' modification times (they are part of each raw partition's landing record)."""
    if landing_of is None:
        generate_synthetic(root / "landing", users=70, items=50, days=6, seed=5, end_date=END)
    else:
        shutil.copytree(landing_of / "landing", root / "landing")  # copy2: keeps the mtimes
    cfg = root / "recsys.toml"
    cfg.write_text(
        """
landing = "landing"
warehouse = "warehouse"
k = 5
[train]
models = ["popularity", "itemknn"]
tune_calls = 2
tune_initial_points = 1
validation_days = 1
[evaluation]
holdout_days = 2
bootstrap_samples = 200
[embedding]
enabled = false
[scoring]
shards = 3
[runner]
retries = 0
dask_workers = 2
""",
        encoding="utf-8",
    )
    return cfg


def test_dask_runner_matches_threads(prefect_harness, tmp_path):
    from flows.nightly import nightly
    from flows.runtime import build_task_runner

    threads_cfg = _setup(tmp_path / "threads")
    dask_cfg = _setup(tmp_path / "dask", landing_of=tmp_path / "threads")
    nightly(run_date=END, options=RunOptions(config_path=str(threads_cfg)))

    options = RunOptions(config_path=str(dask_cfg), task_runner="dask")
    settings = options.settings()
    assert settings.runner.task_runner == "dask"
    on_dask = nightly.with_options(task_runner=build_task_runner(settings.runner))
    state = on_dask(run_date=END, options=options, return_state=True)
    night = state.result()
    assert night.steps.score.rows > 0

    a = pl.read_parquet(Warehouse(tmp_path / "threads" / "warehouse").recommendations(END))
    b = pl.read_parquet(Warehouse(tmp_path / "dask" / "warehouse").recommendations(END))
    assert a.height == b.height > 0
    assert a.equals(b)

    # ingest fanned the pending dates out, one slice per worker, into the same raw partitions
    assert _task_names(state.state_details.flow_run_id).count("ingest-dates") == 2
    assert night.steps.ingest == _threads_ingest(tmp_path)
    for sub in ("raw", "clean", "quarantine"):
        assert _tree(tmp_path / "dask" / "warehouse" / sub) == _tree(
            tmp_path / "threads" / "warehouse" / sub
        )


def _task_names(flow_run_id) -> list[str]:
    """The task names (without their run suffix) of one flow run's task runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return [r.name.rsplit("-", 1)[0] for r in runs]


def _threads_ingest(tmp_path: Path):
    """The threads run's ingest result, from its run marker."""
    from recsys_core.io import read_json
    from recsys_core.results import RunSummary

    marker = read_json(Warehouse(tmp_path / "threads" / "warehouse").run_marker(END))
    return RunSummary.model_validate(marker).steps.ingest


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (bytes), landing records and index included."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


# ---- workers that share no disk with the driver -----------------------------------------------
def _can_hide(directory: Path) -> bool:
    """Whether a worker process can get a private, empty view of ``directory`` (root + mount
    namespaces: a tmpfs mounted over it in the worker's namespace only)."""
    import shutil
    import subprocess

    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            f'mount -t tmpfs none "{directory}" && test -z "$(ls -A "{directory}")"',
        ],
        capture_output=True,
    )
    return probe.returncode == 0


def _start_workers(address: str, n: int, hidden: list[Path], api_url: str) -> list:
    """``n`` ``dask worker`` processes, each in its own working directory. Each runs in a mount
    namespace where every folder in ``hidden`` (the driver's temporary folders: pytest's base
    temp, the driver's Prefect home) is an empty tmpfs, so nothing the driver wrote there can be
    read. Only those folders are covered, so the project and its venv stay visible wherever the
    checkout lives (CI may clone under /tmp)."""
    import shlex
    import subprocess
    import sys
    import tempfile

    procs = []
    for i in range(n):
        home = tempfile.mkdtemp(prefix=f"recsys-worker-{i}-")
        os.makedirs(f"{home}/prefect")
        wrap = []
        if hidden:
            mounts = " && ".join(f"mount -t tmpfs none {shlex.quote(str(d))}" for d in hidden)
            wrap = ["unshare", "-m", "sh", "-c", f'{mounts} && exec "$@"', "sh"]
        cmd = [
            sys.executable, "-m", "distributed.cli.dask_worker", address,
            "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
            "--local-directory", home, "--name", f"isolated-{i}",
        ]  # fmt: skip
        env = {
            **os.environ,
            "HOME": home,
            "TMPDIR": home,
            "PREFECT_HOME": f"{home}/prefect",
            "PREFECT_API_URL": api_url,
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
        procs.append(
            subprocess.Popen(
                wrap + cmd, cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
    return procs


def test_dask_workers_share_no_disk_with_the_driver(
    prefect_harness, s3_bucket, tmp_path, tmp_path_factory
):
    """Warehouse on s3://, scoring shards on 2 separate worker processes that cannot see the
    driver's temporary folders and start in other working directories: the recommendations equal
    the thread runner's on local disk."""
    import s3fs
    from distributed import Client, LocalCluster
    from prefect.settings import PREFECT_API_URL
    from prefect_dask import DaskTaskRunner

    from flows.nightly import nightly
    from recsys_core.io import read_parquet

    local_cfg = _setup(tmp_path / "local")
    nightly(run_date=END, options=RunOptions(config_path=str(local_cfg)))

    s3_cfg = _setup(tmp_path / "s3")
    landing = f"{s3_bucket}/landing"
    s3fs.S3FileSystem(use_listings_cache=False).put(
        str(tmp_path / "s3" / "landing"), landing.removeprefix("s3://"), recursive=True
    )
    text = s3_cfg.read_text(encoding="utf-8")
    text = text.replace('landing = "landing"', f'landing = "{landing}"')
    text = text.replace('warehouse = "warehouse"', f'warehouse = "{s3_bucket}/warehouse"')
    s3_cfg.write_text(text, encoding="utf-8")

    driver_dirs = [Path(tmp_path_factory.getbasetemp()), Path(os.environ["PREFECT_HOME"])]
    hide = all(_can_hide(d) for d in driver_dirs)
    with LocalCluster(
        n_workers=0,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address=None,
    ) as cluster:
        procs = _start_workers(
            cluster.scheduler_address, 2, driver_dirs if hide else [], PREFECT_API_URL.value()
        )
        try:
            with Client(cluster.scheduler_address) as client:
                client.wait_for_workers(2, timeout=120)
                cwds = client.run(os.getcwd)
                assert len(cwds) == 2 and os.getcwd() not in cwds.values()
                assert len(set(cwds.values())) == 2
                if hide:
                    sees = client.run(os.path.exists, str(tmp_path))
                    assert not any(sees.values()), sees
                    # the driver's Prefect home is an empty folder there (a marker the driver
                    # wrote into it is not visible), so is the local-disk warehouse's parent
                    home = Path(os.environ["PREFECT_HOME"])
                    (home / "driver-only.txt").write_text("driver")
                    assert all(v == [] for v in client.run(os.listdir, str(home)).values())
                    assert not any(client.run(os.path.exists, str(local_cfg)).values())
                pids = set(client.run(os.getpid).values())
                on_dask = nightly.with_options(
                    task_runner=DaskTaskRunner(address=cluster.scheduler_address)
                )
                state = on_dask(
                    run_date=END,
                    options=RunOptions(
                        config_path=str(s3_cfg), task_runner=f"dask={cluster.scheduler_address}"
                    ),
                    return_state=True,
                )
                night = state.result()
                assert pids == set(client.run(os.getpid).values())  # the same 2 workers
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=30)
    assert night.steps.score.rows > 0
    # ingest's slices ran on the workers, which hold no lease: each read the run's lock object
    # and found its token there before writing raw partitions
    assert _task_names(state.state_details.flow_run_id).count("ingest-dates") == 2
    a = read_parquet(Warehouse(tmp_path / "local" / "warehouse").recommendations(END))
    b = read_parquet(Warehouse(f"{s3_bucket}/warehouse").recommendations(END))
    assert a.height == b.height > 0
    assert a.equals(b)
    if not hide:
        pytest.xfail(
            "no mount namespaces here: workers ran in other folders, but could see the driver's"
        )
