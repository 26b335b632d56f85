#!/usr/bin/env bash
# A throw-away Azure Blob emulator (Azurite) for the az:// tests.
#
#   eval "$(.ci/azure.sh)"          # install (once) and start it; exports RECSYS_TEST_AZURE_ENDPOINT
#   trap '.ci/azure.sh stop' EXIT   # stop it when the shell exits
#
# Azurite comes from the npm registry (pinned below), installed once into $DIR (kept between
# runs on the same machine); node is needed. It honours If-None-Match: * and If-Match on blob
# writes and deletes, which the lock and the champion pointer use. Blob service only, on
# 127.0.0.1, on a free port, in memory. Only the `export ...` lines go to stdout.
set -euo pipefail

AZURITE_VERSION=3.37.0
DIR="${RECSYS_AZURITE_DIR:-/tmp/recsys-azurite-$(id -u)}"
# shellcheck source=.ci/_emulator.sh
source "$(dirname "$0")/_emulator.sh"

install() {
    local bin="$DIR/node_modules/.bin/azurite-blob"
    if [[ -x "$bin" ]] && grep -q "\"version\": \"$AZURITE_VERSION\"" "$DIR/node_modules/azurite/package.json"; then
        return 0
    fi
    command -v npm >/dev/null || { log "npm not found: install node (apt-get install nodejs npm)"; exit 1; }
    log "installing azurite@$AZURITE_VERSION into $DIR"
    mkdir -p "$DIR"
    npm install --prefix "$DIR" --no-audit --no-fund --silent "azurite@$AZURITE_VERSION" >&2
}

start() {
    stop_quiet
    install
    local port
    port="$(free_port)"
    # --skipApiVersionCheck: the Python SDK may be newer than the emulator's API version
    launch "$DIR/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" \
        --inMemoryPersistence --skipApiVersionCheck --loose
    wait_ready 150 "import socket; socket.create_connection(('127.0.0.1', $port), timeout=1).close()" \
        "Azurite blob service on 127.0.0.1:$port" \
        "export RECSYS_TEST_AZURE_ENDPOINT='http://127.0.0.1:$port/devstoreaccount1'"
}

case "${1:-start}" in
    start) start ;;
    install) install ;;
    stop) stop_quiet; log "stopped" ;;
    *) log "usage: $0 [start|install|stop]"; exit 2 ;;
esac
