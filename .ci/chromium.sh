#!/usr/bin/env bash
# Debian's chromium for the browser test (tests/test_browser.py drives it with Playwright for
# Python; Playwright's own browser download is not reachable from these machines).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q >/dev/null
    $SUDO apt-get install -y -q chromium >/dev/null
fi
command -v chromium
