# Shared by .ci/s3.sh, .ci/gcs.sh and .ci/azure.sh (sourced, not run): start a throw-away server
# in the background on a free 127.0.0.1 port, wait until it answers, stop it by its pid file.
# The sourcing script sets DIR (pid file and server log) before calling these.

log() { echo "$(basename "$0"): $*" >&2; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# launch CMD...: run CMD in the background, its output in $DIR/server.log, its pid in $DIR/pid
launch() {
    mkdir -p "$DIR"
    "$@" >"$DIR/server.log" 2>&1 &
    echo $! >"$DIR/pid"
}

# wait_ready TRIES PROBE NAME EXPORT: poll the Python expression PROBE every 0.2 s, up to TRIES
# times; once it succeeds log "NAME (pid N)" and print EXPORT (the line the caller evals);
# otherwise print the server's log and fail
wait_ready() {
    local tries="$1" probe="$2" name="$3" export_line="$4"
    for _ in $(seq 1 "$tries"); do
        if python3 -c "$probe" 2>/dev/null; then
            log "$name (pid $(cat "$DIR/pid"))"
            echo "$export_line"
            return 0
        fi
        sleep 0.2
    done
    log "$name did not start; its log:"
    cat "$DIR/server.log" >&2
    exit 1
}

stop_quiet() {
    if [[ -f "$DIR/pid" ]]; then
        kill "$(cat "$DIR/pid")" 2>/dev/null || true
        rm -f "$DIR/pid"
    fi
}
