#!/usr/bin/env bash
# RSS under idle keep-alive clients (issue 17): nginx, a bare hyper server (the floor of the HTTP
# stack: examples/idle_hyper.rs) and the sidecar (default config, and with its connection cap
# raised past the test so every connection is held), each alone on loopback. For each server:
# RSS before, with 1,000 / 5,000 / 15,000 clients that each sent one GET and stay idle, and 30 s
# after the clients close. Prints a markdown table (per-connection KiB from the 1,000 -> 15,000
# slope).
#
# benches/idle_rss.sh [--levels 1000,5000,15000] [--after 30]
# Needs nginx (Debian). SIDECAR_BIN and HYPER_BIN skip the release builds.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LEVELS="1000,5000,15000"
AFTER=30
while [ $# -gt 0 ]; do
    case "$1" in
        --levels) LEVELS="$2"; shift ;;
        --after) AFTER="$2"; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "idle_rss.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
    esac
    shift
done
log() { echo "idle_rss: $*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

command -v nginx >/dev/null || die "nginx is missing (apt-get install nginx)"
# Each side of 15,000 connections needs as many descriptors.
ulimit -n "$(ulimit -Hn)"
bench_workdir idle-rss
bench_sidecar_binary
if [ -n "${HYPER_BIN:-}" ]; then
    HYPER="$HYPER_BIN"
else
    log "building the bare hyper example"
    (cd "$ROOT" && timeout 1800 cargo build --release --quiet --example idle_hyper)
    HYPER="$ROOT/target/release/examples/idle_hyper"
fi
cp "$HYPER" "$WORK/idle_hyper"
HYPER="$WORK/idle_hyper"

# RSS in KiB of a PID and its children (nginx: master and worker).
rss_kib() {
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1" || true); do
        total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

wait_port() {
    for _ in $(seq 1 100); do
        python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null && return 0
        sleep 0.1
    done
    die "nothing listening on $1"
}

ROWS=()
# measure NAME PID PORT: the clients' levels against one server.
measure() {
    local name="$1" pid="$2" port="$3" dir="$WORK/clients-$1" before row level at failed
    mkdir -p "$dir"
    # One request first, so what every server allocates on first use is in the baseline.
    curl -s -o /dev/null "http://127.0.0.1:$port/" || true
    sleep 1
    before="$(rss_kib "$pid")"
    timeout 900 python3 "$ROOT/benches/idle_clients.py" "$port" "$dir" "$LEVELS" &
    local client=$!
    PIDS+=("$client")
    row="| $name | $((before / 1024)) MiB"
    local first="" first_level="" last="" last_level=""
    for level in ${LEVELS//,/ }; do
        while [ ! -e "$dir/at-$level" ]; do sleep 0.1; kill -0 "$client" 2>/dev/null || die "$name: clients stopped"; done
        sleep 2
        at="$(rss_kib "$pid")"
        failed="$(cat "$dir/at-$level")"
        log "$name: $level clients ($failed unanswered): RSS $at KiB"
        row="$row | $((at / 1024)) MiB"
        [ -z "$first" ] && { first="$at"; first_level="$level"; }
        last="$at"; last_level="$level"
        touch "$dir/go-$level"
    done
    while [ ! -e "$dir/closed" ]; do sleep 0.1; done
    sleep "$AFTER"
    local after
    after="$(rss_kib "$pid")"
    local per
    per="$(python3 -c "print(f'{($last - $first) / ($last_level - $first_level):.2f}')")"
    ROWS+=("$row | $per | $((after / 1024)) MiB |")
    log "$name: ${AFTER}s after closing: RSS $after KiB"
    wait "$client" || true
}

# --- nginx: one worker, enough worker_connections for every client --------------------------
NGINX_PORT="$(free_port)"
mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile 20000;
error_log $WORK/nginx/logs/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 19000; }
http {
    access_log off;
    keepalive_timeout 300s;
    client_body_temp_path $WORK/nginx/tmp_body;
    proxy_temp_path $WORK/nginx/tmp_proxy;
    fastcgi_temp_path $WORK/nginx/tmp_fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp_uwsgi;
    scgi_temp_path $WORK/nginx/tmp_scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        location / { return 200 "ok\n"; }
    }
}
CONF
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' 2>>"$WORK/nginx/logs/stderr.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_port "$NGINX_PORT"
measure nginx "$NGINX_PID" "$NGINX_PORT"
kill "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true

# --- bare hyper --------------------------------------------------------------------------------
HYPER_PORT="$(free_port)"
"$HYPER" "127.0.0.1:$HYPER_PORT" >/dev/null &
HYPER_PID=$!
PIDS+=("$HYPER_PID")
wait_port "$HYPER_PORT"
measure "bare hyper" "$HYPER_PID" "$HYPER_PORT"

# --- the sidecar, in front of the bare hyper server --------------------------------------------
# sidecar NAME CONFIG
sidecar() {
    local port admin
    port="$(free_port)"; admin="$(free_port)"
    printf '%s' "$2" >"$WORK/$1.toml"
    "$BIN" run --config "$WORK/$1.toml" --upstream "http://127.0.0.1:$HYPER_PORT" \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" >"$WORK/$1.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_port "$port"
    measure "$1" "$pid" "$port"
    kill "$pid"; wait "$pid" 2>/dev/null || true
}
# keep-alive of every client past the whole run: the idle timeout must not close them mid-test.
sidecar "sidecar (default config, cap 512)" $'[proxy]\nclient_idle_timeout = "300s"\n'
sidecar "sidecar (cap raised to 16000)" $'[proxy]\nclient_idle_timeout = "300s"\nmax_client_connections = 16000\n'

echo
echo "\`benches/idle_rss.sh --levels $LEVELS --after $AFTER\` ($(nproc) cores, $(date -u +%Y-%m-%d))"
echo
header="| server | before"
sep="|---|---"
for level in ${LEVELS//,/ }; do header="$header | $level idle"; sep="$sep|---"; done
echo "$header | KiB per idle connection | ${AFTER} s after close |"
echo "$sep|---|---|"
printf '%s\n' "${ROWS[@]}"
