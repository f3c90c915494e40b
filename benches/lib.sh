# Shared by benches/compare.sh and benches/soak.sh (sourced; they define log, die and ROOT first):
# a work directory whose processes are stopped by PID on exit, a free loopback port, and the
# sidecar binary under test.

# Creates $WORK (/tmp/sidecar-NAME.XXXXXX) and stops every PID in $PIDS on exit.
bench_workdir() {
    WORK="$(mktemp -d "/tmp/sidecar-$1.XXXXXX")"
    chmod 755 "$WORK"
    PIDS=()
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

bench_cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "${KEEP_WORK:-0}" = 1 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Sets BUILT ($SIDECAR_BIN, or the release binary built here) and BIN, a private copy in $WORK:
# a build elsewhere in the shared target directory cannot swap it mid-run.
bench_sidecar_binary() {
    if [ -n "${SIDECAR_BIN:-}" ]; then
        BUILT="$SIDECAR_BIN"
    else
        log "building the release binary"
        BUILT="$(bench_build --bin consistency-sidecar)"
    fi
    [ -x "$BUILT" ] || die "no sidecar binary at '$BUILT'"
    BIN="$WORK/consistency-sidecar"
    cp "$BUILT" "$BIN"
}

# Sets FLOOR: the floor of the HTTP stack (examples/floor_proxy.rs), built here in release like the
# sidecar (FLOOR_BIN to measure another build), copied into $WORK.
bench_floor_binary() {
    local built="${FLOOR_BIN:-}"
    if [ -z "$built" ]; then
        log "building the floor proxy (examples/floor_proxy.rs)"
        built="$(bench_build --example floor_proxy)"
    fi
    [ -x "$built" ] || die "no floor proxy binary at '$built'"
    FLOOR="$WORK/floor_proxy"
    cp "$built" "$FLOOR"
}

# bench_build TARGET-ARGS...: a release build of one target (honouring CARGO_TARGET_DIR); prints
# the executable's path.
bench_build() {
    (cd "$ROOT" && timeout 1800 cargo build --release --quiet "$@" \
        --message-format=json-render-diagnostics |
        python3 -c 'import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
        print(msg["executable"])')
}
