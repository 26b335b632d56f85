"""The Prefect UI in a real browser, as an operator uses it.

A Prefect server (with its UI) on a free loopback port, ``serve_all`` serving the deployments and
the warehouse's reports, and headless Chromium (Debian's ``chromium``, driven by Playwright for
Python: Playwright's own browser download is not reachable here). The operator opens the manual
deployment, fills the *Custom run* form with a run date and submits it; once the run completes,
its page shows the ``recsys-night`` markdown summary whose link opens the night's HTML report; a
second night submitted the same way adds a version to the same artifact key.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_server_e2e import (
    END,
    Processes,
    _config,
    _free_port,
    _wait_final,
    _wait_healthy,
    server_env,
)

from recsys_core.landing import generate_synthetic

pytestmark = [pytest.mark.slow]

CHROMIUM = os.environ.get("RECSYS_TEST_CHROMIUM", "/usr/bin/chromium")
SUBMIT_ATTEMPTS = 3  # a 503 from a busy server is submitted again (see _submit_custom_run)
UI_SECONDS = 120_000  # milliseconds: the first page load compiles nothing, but a busy 2-core box


@pytest.fixture()
def live_ui(tmp_path: Path) -> Iterator[dict[str, Any]]:
    pytest.importorskip("playwright.sync_api", reason="playwright is in requirements.txt")
    if not Path(CHROMIUM).is_file() and not shutil.which(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (.ci/run does)")
    generate_synthetic(tmp_path / "landing", users=60, items=40, days=6, seed=1, end_date=END)
    cfg = _config(tmp_path)
    home = tmp_path / "prefect-home"
    home.mkdir()
    port, reports_port = _free_port(), _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = server_env(home, url, ui=True)
    procs = Processes(tmp_path)
    prefect_cli = str(Path(sys.executable).with_name("prefect"))
    try:
        procs.start(
            "server",
            [prefect_cli, "server", "start", "--host", "127.0.0.1", "--port", str(port),
             "--no-scheduler"],
            env,
        )  # fmt: skip
        _wait_healthy(url, procs)
        procs.start(
            "serve",
            [sys.executable, "-c",
             "from deployments.serve import serve_all; from flows.parameters import RunOptions; "
             f"serve_all(RunOptions(config_path={str(cfg)!r}), reports_port={reports_port})"],
            env,
        )  # fmt: skip
        yield {
            "ui": f"http://127.0.0.1:{port}",
            "api": url,
            "reports": f"http://127.0.0.1:{reports_port}/",
            "procs": procs,
        }
    finally:
        procs.stop_all()


def _submit_custom_run(page, ui: str, day: dt.date, procs: Processes) -> str:
    """Deployments → manual → Run → Custom run, pick ``day`` in the date field, Submit.
    Returns the id of the flow run the form created."""
    deadline = time.monotonic() + 120
    page.goto(f"{ui}/deployments", wait_until="networkidle")
    while not page.get_by_text("manual", exact=True).count():  # serve registers it
        procs.check_alive()
        assert time.monotonic() < deadline, f"manual deployment never listed\n{procs.tails()}"
        page.wait_for_timeout(1000)
        page.reload(wait_until="networkidle")
    page.get_by_text("manual", exact=True).click()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run", exact=True).click()
    page.get_by_role("button", name="date", exact=True).click()  # run_date: a date, not None
    page.get_by_text("Select date", exact=True).click()
    page.locator("input[type=date]").fill(day.isoformat())
    page.get_by_role("button", name="Apply", exact=True).click()
    for attempt in range(1, SUBMIT_ATTEMPTS + 1):
        with page.expect_response(
            lambda r: r.request.method == "POST" and r.url.endswith("/create_flow_run")
        ) as created:
            page.get_by_role("button", name="Submit", exact=True).click()
        # 503: the server's SQLite was busy (SQLITE_BUSY_SNAPSHOT fails at once, whatever the
        # busy timeout). Prefect's Python client retries these; the UI does not, so the operator
        # (this test) submits the same form again. Any other failure fails the test.
        if created.value.status != 503 or attempt == SUBMIT_ATTEMPTS:
            break
        page.wait_for_timeout(2000 * attempt)
    assert created.value.ok, f"create_flow_run, attempt {attempt}: {created.value.text()}"
    run = created.value.json()
    assert run["parameters"]["run_date"] == day.isoformat()
    return run["id"]


def test_custom_run_from_the_ui_shows_the_night_and_opens_its_report(live_ui):
    from playwright.sync_api import sync_playwright
    from prefect.client.orchestration import SyncPrefectClient

    ui, procs = live_ui["ui"], live_ui["procs"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.set_default_timeout(UI_SECONDS)
        try:
            run_id = _submit_custom_run(page, ui, END, procs)
            with SyncPrefectClient(live_ui["api"]) as client:
                run = _wait_final(client, run_id, procs)
            assert run.name == f"nightly-{END.isoformat()}"

            # the run page: Artifacts tab → the night's summary → its link opens the report
            page.goto(f"{ui}/runs/flow-run/{run_id}", wait_until="networkidle")
            page.get_by_text("Artifacts", exact=True).first.click()
            page.get_by_text("recsys-night", exact=True).first.click()
            heading = page.get_by_role("heading", name=f"recsys {END.isoformat()}:")
            heading.wait_for()
            assert "events:" in page.inner_text("body")  # counts in = clean + dup + quarantined
            link = page.get_by_role("link", name="Open the full report")
            href = link.get_attribute("href")
            assert href == f"{live_ui['reports']}run_date={END.isoformat()}/report.html"
            if link.get_attribute("target") == "_blank":  # the UI opens links in a new tab
                with page.context.expect_page() as opened:
                    link.click()
                report = opened.value
            else:
                link.click()
                report = page
            report.wait_for_load_state("load")
            assert report.url == href
            assert report.title() == f"recsys {END.isoformat()}"
            assert f"Nightly recommendations — {END.isoformat()}" in report.inner_text("h1")
            if report is not page:
                report.close()

            # a second night through the same form: the same keys gain a version
            before = END - dt.timedelta(days=1)
            second = _submit_custom_run(page, ui, before, procs)
            with SyncPrefectClient(live_ui["api"]) as client:
                _wait_final(client, second, procs)
            page.goto(f"{ui}/artifacts/key/recsys-night", wait_until="networkidle")
            # the key's timeline lists both nights, newest first, under the latest description
            page.get_by_text(f"{before.isoformat()}: the night in one page").first.wait_for()
            runs = page.get_by_text("nightly-2026-01-0", exact=False).all_inner_texts()
            assert [r.strip() for r in runs] == [f"nightly-{before}", f"nightly-{END}"]
        except Exception:
            page.screenshot(path=str(Path(procs.logs) / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
