#!/usr/bin/env bash
# A throw-away Azure Blob emulator (Azurite) for the az:// tests.
#
#   eval "$(.ci/azure.sh)"          # install (once) and start it; exports RECSYS_TEST_AZURE_ENDPOINT
#   trap '.ci/azure.sh stop' EXIT   # stop it when the shell exits
#
# Azurite comes from the npm registry (pinned below), installed once into $AZ_DIR (kept between
# runs on the same machine); node is needed. It honours If-None-Match: * and If-Match on blob
# writes and deletes, which the lock and the champion pointer use. Blob service only, on
# 127.0.0.1, on a free port, in memory. Only the `export ...` lines go to stdout.
set -euo pipefail

AZURITE_VERSION=3.37.0
AZ_DIR="${RECSYS_AZURITE_DIR:-/tmp/recsys-azurite-$(id -u)}"

log() { echo "azure.sh: $*" >&2; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

install() {
    local bin="$AZ_DIR/node_modules/.bin/azurite-blob"
    if [[ -x "$bin" ]] && grep -q "\"version\": \"$AZURITE_VERSION\"" "$AZ_DIR/node_modules/azurite/package.json"; then
        return 0
    fi
    command -v npm >/dev/null || { log "npm not found: install node (apt-get install nodejs npm)"; exit 1; }
    log "installing azurite@$AZURITE_VERSION into $AZ_DIR"
    mkdir -p "$AZ_DIR"
    npm install --prefix "$AZ_DIR" --no-audit --no-fund --silent "azurite@$AZURITE_VERSION" >&2
}

start() {
    stop_quiet
    install
    local port
    port="$(free_port)"
    # --skipApiVersionCheck: the Python SDK may be newer than the emulator's API version
    "$AZ_DIR/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" \
        --inMemoryPersistence --skipApiVersionCheck --loose \
        >"$AZ_DIR/server.log" 2>&1 &
    echo $! >"$AZ_DIR/pid"
    for _ in $(seq 1 150); do
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), timeout=1).close()" 2>/dev/null; then
            log "Azurite blob service on 127.0.0.1:$port (pid $(cat "$AZ_DIR/pid"))"
            echo "export RECSYS_TEST_AZURE_ENDPOINT='http://127.0.0.1:$port/devstoreaccount1'"
            return 0
        fi
        sleep 0.2
    done
    log "Azurite did not start; its log:"; cat "$AZ_DIR/server.log" >&2; exit 1
}

stop_quiet() {
    if [[ -f "$AZ_DIR/pid" ]]; then
        kill "$(cat "$AZ_DIR/pid")" 2>/dev/null || true
        rm -f "$AZ_DIR/pid"
    fi
}

case "${1:-start}" in
    start) start ;;
    install) install ;;
    stop) stop_quiet; log "stopped" ;;
    *) log "usage: $0 [start|install|stop]"; exit 2 ;;
esac
