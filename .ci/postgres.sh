#!/usr/bin/env bash
# A throw-away PostgreSQL server for the tests marked `postgres`.
#
#   eval "$(.ci/postgres.sh)"              # start (or reuse) it; exports RECSYS_TEST_PG_URL
#   trap '.ci/postgres.sh stop' EXIT       # stop it and delete its data when the shell exits
#   .ci/postgres.sh stop | status | env    # stop + delete / is it running / print the exports again
#
# Installs the server with apt-get when no initdb is found (PATH, then /usr/lib/postgresql/*/bin).
# The cluster lives in $RECSYS_PG_DIR (default /tmp/recsys-pg-$UID), listens on 127.0.0.1 only,
# on a free port, with its unix socket inside that folder; fsync is off (test data only).
# As root (CI), the server runs as the `postgres` user, because PostgreSQL refuses to run as root.
# Only the `export ...` lines go to stdout; progress goes to stderr. Idempotent: a second start
# reuses the running server and prints the same URL.
set -euo pipefail

PG_DIR="${RECSYS_PG_DIR:-/tmp/recsys-pg-$(id -u)}"
DB_NAME=recsys_test
DB_USER=recsys

log() { echo "postgres.sh: $*" >&2; }

find_bindir() {
    local initdb
    if initdb="$(command -v initdb 2>/dev/null)"; then
        dirname "$(readlink -f "$initdb")"
        return 0
    fi
    # Debian/Ubuntu keep the server binaries off PATH; take the newest major version
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$d" && -x "$d/initdb" ]]; then
        echo "$d"
        return 0
    fi
    return 1
}

install_server() {
    if [[ "$(id -u)" != 0 ]]; then
        log "no PostgreSQL server found and not root: install it (apt-get install postgresql)"
        exit 1
    fi
    log "installing PostgreSQL with apt-get (a minute or two)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
}

# run_pg CMD...: run as the cluster's owner (postgres when we are root)
run_pg() {
    if [[ "$(id -u)" != 0 ]]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        runuser -u postgres -- "$@"
    elif [[ -x /usr/sbin/runuser ]]; then
        /usr/sbin/runuser -u postgres -- "$@"
    else
        su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
}
print_env() {
    # shellcheck disable=SC1091
    source "$PG_DIR/env"
    echo "export RECSYS_TEST_PG_URL='postgresql+psycopg://$DB_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$DB_NAME'"
    echo "export RECSYS_PG_DIR='$PG_DIR'"
}

is_running() {
    [[ -f "$PG_DIR/env" && -d "$PG_DIR/data" ]] || return 1
    local bindir
    bindir="$(find_bindir)" || return 1
    run_pg "$bindir/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1
}

free_port() {
    python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

start() {
    if is_running; then
        log "reusing the server in $PG_DIR"
        print_env
        return 0
    fi
    local bindir
    bindir="$(find_bindir)" || { install_server; bindir="$(find_bindir)"; }
    if [[ "$(id -u)" == 0 ]] && ! id postgres >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    fi
    # a stale folder (killed run, reboot) is wiped: its data is test data
    rm -rf "$PG_DIR"
    mkdir -p "$PG_DIR"
    chmod 700 "$PG_DIR"
    [[ "$(id -u)" == 0 ]] && chown postgres: "$PG_DIR"

    local port password
    port="$(free_port)"
    password="$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
    run_pg "$bindir/initdb" -D "$PG_DIR/data" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 --no-locale >/dev/null 2>"$PG_DIR/initdb.err" \
        || { cat "$PG_DIR/initdb.err" >&2; exit 1; }
    run_pg "$bindir/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c fsync=off \
            -c synchronous_commit=off -c full_page_writes=off" >/dev/null \
        || { log "server did not start; its log:"; cat "$PG_DIR/server.log" >&2; exit 1; }
    run_pg "$bindir/psql" -q -X -v ON_ERROR_STOP=1 -h "$PG_DIR" -p "$port" -U postgres -d postgres \
        -c "CREATE ROLE $DB_USER LOGIN PASSWORD '$password'" \
        -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" >&2
    # env is written last: its presence means the server is fully set up
    run_pg sh -c "umask 077; printf 'PG_PORT=%s\nPG_PASSWORD=%s\n' '$port' '$password' > '$PG_DIR/env'"
    log "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, data in $PG_DIR"
    print_env
}

stop() {
    local bindir
    if [[ -d "$PG_DIR/data" ]] && bindir="$(find_bindir)"; then
        run_pg "$bindir/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$PG_DIR"
    log "stopped; removed $PG_DIR"
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) if is_running; then log "running in $PG_DIR"; else log "not running"; exit 1; fi ;;
    env) is_running || { log "not running; run .ci/postgres.sh first"; exit 1; }; print_env ;;
    *) log "usage: $0 [start|stop|status|env]"; exit 2 ;;
esac
