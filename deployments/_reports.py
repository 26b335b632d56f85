"""A small read-only HTTP server for ``<warehouse>/reports/``, started by ``recsys serve``.

The Prefect UI links each night's report (the ``recsys-report`` link artifact and the link in the
``recsys-night`` summary). A browser on an ``http://`` page cannot open a ``file://`` link, so
``recsys serve`` publishes the local warehouse's ``reports/`` folder (and nothing else of the
warehouse) on ``http://HOST:PORT/`` and tells the flow runs it starts where, through the
environment: ``RECSYS_REPORT_BASE_URL`` and ``RECSYS_REPORT_WAREHOUSE`` (the warehouse that base
serves; runs against another warehouse get that warehouse's own link instead).
"""

from __future__ import annotations

import functools
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tasks.artifacts import REPORT_BASE_URL_ENV, REPORT_WAREHOUSE_ENV

__all__ = ["serve_reports"]


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass


def serve_reports(warehouse: Path, host: str = "127.0.0.1", port: int = 4201) -> str:
    """Serve ``warehouse/reports`` from a daemon thread; export and return its base URL.

    Raises ``OSError`` naming the address when the port is taken.
    """
    reports = Path(warehouse) / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(_QuietHandler, directory=str(reports))
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise OSError(
            f"cannot serve reports on http://{host}:{port}/ ({exc.strerror}); pass another "
            "--reports-port, or --reports-port 0 to not serve them"
        ) from exc
    threading.Thread(target=server.serve_forever, name="recsys-reports", daemon=True).start()
    base = f"http://{host}:{server.server_address[1]}/"
    os.environ[REPORT_BASE_URL_ENV] = base
    os.environ[REPORT_WAREHOUSE_ENV] = str(Path(warehouse).resolve())
    return base
