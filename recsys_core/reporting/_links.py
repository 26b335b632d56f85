"""Where a person's browser can open a warehouse file (the nightly report).

* With a base URL (``RECSYS_REPORT_BASE_URL``, set by ``recsys serve`` when it serves the local
  warehouse's ``reports/`` folder over HTTP, or by an operator whose reports are published behind
  a web server / a CDN), the link is that base plus the report's path under ``reports/``.
* Otherwise a local warehouse gives a ``file://`` URL (opens on the machine that ran the flow), and
  an object-store warehouse a pre-signed HTTPS URL when its filesystem can sign one (S3, GCS;
  valid for ``expires_seconds``), else the object's own URL.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

__all__ = ["report_link"]

#: Seven days: the longest pre-signed URL S3 accepts.
SIGNED_SECONDS = 7 * 24 * 3600


def report_link(
    report: str | Path,
    warehouse_root: str | Path,
    base_url: str | None = None,
    *,
    expires_seconds: int = SIGNED_SECONDS,
) -> str:
    """A URL for ``report`` (a path or URL under ``warehouse_root``); see the module doc."""
    report_s, root_s = str(report), str(warehouse_root).rstrip("/")
    if base_url:
        reports_root = f"{root_s}/reports/"
        if not report_s.startswith(reports_root):
            raise ValueError(f"report {report_s} is not under {reports_root}")
        rel = report_s[len(reports_root) :]
        return base_url.rstrip("/") + "/" + quote(rel, safe="/=")
    if "://" not in report_s or report_s.startswith("file://"):
        return Path(report_s.removeprefix("file://")).resolve().as_uri()
    from recsys_core.io import signed_url

    return signed_url(report_s, expires_seconds)
