#!/usr/bin/env bash
# A throw-away S3-compatible server (moto's standalone server) for the object-storage tests.
#
#   eval "$(.ci/s3.sh)"             # start it; exports RECSYS_TEST_S3_ENDPOINT (http://127.0.0.1:PORT)
#   trap '.ci/s3.sh stop' EXIT      # stop it when the shell exits
#
# moto_server comes from the project's virtual environment (moto[server] is pinned in
# requirements.txt); it listens on 127.0.0.1 only, on a free port, and keeps everything in memory.
# Only the `export ...` lines go to stdout; progress goes to stderr.
set -euo pipefail

S3_DIR="${RECSYS_S3_DIR:-/tmp/recsys-s3-$(id -u)}"
VENV="${VENV:-.venv}"

log() { echo "s3.sh: $*" >&2; }

free_port() {
    python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

start() {
    stop_quiet
    mkdir -p "$S3_DIR"
    local port bin
    port="$(free_port)"
    bin="$VENV/bin/moto_server"
    [[ -x "$bin" ]] || bin="$(command -v moto_server)" || { log "moto_server not found: make install"; exit 1; }
    "$bin" -H 127.0.0.1 -p "$port" >"$S3_DIR/server.log" 2>&1 &
    echo $! >"$S3_DIR/pid"
    for _ in $(seq 1 100); do
        if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null; then
            log "moto S3 server on 127.0.0.1:$port (pid $(cat "$S3_DIR/pid"))"
            echo "export RECSYS_TEST_S3_ENDPOINT='http://127.0.0.1:$port'"
            return 0
        fi
        sleep 0.2
    done
    log "server did not start; its log:"; cat "$S3_DIR/server.log" >&2; exit 1
}

stop_quiet() {
    if [[ -f "$S3_DIR/pid" ]]; then
        kill "$(cat "$S3_DIR/pid")" 2>/dev/null || true
        rm -f "$S3_DIR/pid"
    fi
}

case "${1:-start}" in
    start) start ;;
    stop) stop_quiet; log "stopped" ;;
    *) log "usage: $0 [start|stop]"; exit 2 ;;
esac
