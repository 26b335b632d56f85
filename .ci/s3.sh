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

DIR="${RECSYS_S3_DIR:-/tmp/recsys-s3-$(id -u)}"
VENV="${VENV:-.venv}"
# shellcheck source=.ci/_emulator.sh
source "$(dirname "$0")/_emulator.sh"

start() {
    stop_quiet
    local port bin
    port="$(free_port)"
    bin="$VENV/bin/moto_server"
    [[ -x "$bin" ]] || bin="$(command -v moto_server)" || { log "moto_server not found: make install"; exit 1; }
    launch "$bin" -H 127.0.0.1 -p "$port"
    wait_ready 100 "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" \
        "moto S3 server on 127.0.0.1:$port" "export RECSYS_TEST_S3_ENDPOINT='http://127.0.0.1:$port'"
}

case "${1:-start}" in
    start) start ;;
    stop) stop_quiet; log "stopped" ;;
    *) log "usage: $0 [start|stop]"; exit 2 ;;
esac
