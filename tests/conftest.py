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
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_endpoint) -> str:
    """A new, empty bucket on the test S3 server: ``s3://recsys-test-<hex>``."""
    import uuid

    import s3fs

    name = f"recsys-test-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(use_listings_cache=False).mkdir(name)
    return f"s3://{name}"
