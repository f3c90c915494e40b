#!/usr/bin/env bash
# Load benchmark of the whole proxy: wrk straight at nginx vs wrk through the sidecar in front
# of the same nginx, in one run, on loopback. Also the sidecar's peak RSS idle and under load.
# With redis-server installed, also the tracked route with the task memory shared through a
# Redis on loopback (tracker.store = "redis"), beside the same route with local memory.
#
# Usage: benches/load.sh [duration=10s] [connections=32] [rounds=1]
# With several rounds the targets are measured in turn, round after round, and the table shows
# each target's median requests/s and median p99.
# Needs: wrk, nginx, python3 (to pick free ports), a release build (made here).
# Everything started here is stopped by pid on exit; nothing listens beyond 127.0.0.1.
set -euo pipefail

DURATION="${1:-10s}"
CONNS="${2:-32}"
ROUNDS="${3:-1}"
THREADS=$(( CONNS < 2 ? CONNS : 2 ))
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d /tmp/sidecar-load.XXXXXX)"
NGINX_PID=""
SIDECAR_PID=""
UNTRACKED_PID=""
SHARED_PID=""
REDIS_PID=""

cleanup() {
    [ -n "$SIDECAR_PID" ] && kill "$SIDECAR_PID" 2>/dev/null && wait "$SIDECAR_PID" 2>/dev/null || true
    [ -n "$UNTRACKED_PID" ] && kill "$UNTRACKED_PID" 2>/dev/null && wait "$UNTRACKED_PID" 2>/dev/null || true
    [ -n "$SHARED_PID" ] && kill "$SHARED_PID" 2>/dev/null && wait "$SHARED_PID" 2>/dev/null || true
    [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null || true
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

for tool in wrk nginx python3; do
    command -v "$tool" >/dev/null || { echo "load.sh: $tool not found" >&2; exit 1; }
done

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() { # url: wait up to 5 s for it to answer
    for _ in $(seq 1 50); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "load.sh: $1 did not come up" >&2
    exit 1
}

(cd "$ROOT" && cargo build --release --quiet)

# nginx on loopback serving one small static JSON file (a task status, like the backend's).
NGINX_PORT="$(free_port)"
mkdir -p "$WORK/html/test/status" "$WORK/logs"
printf '{"task_id":"t-1","status":"running","stage":"ai_fetching","progress":40,"is_completed":false}\n' \
    >"$WORK/html/test/status/t-1"
cp "$WORK/html/test/status/t-1" "$WORK/html/static.json"
# A status that needs one fix on every response (status completed, stage stale).
printf '{"task_id":"t-2","status":"completed","stage":"ai_fetching","progress":100,"is_completed":true}\n' \
    >"$WORK/html/test/status/t-2"
chmod -R a+rX "$WORK"
cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
error_log $WORK/logs/error.log warn;
pid $WORK/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    default_type application/json;
    client_body_temp_path $WORK/tmp_body;
    proxy_temp_path $WORK/tmp_proxy;
    fastcgi_temp_path $WORK/tmp_fcgi;
    uwsgi_temp_path $WORK/tmp_uwsgi;
    scgi_temp_path $WORK/tmp_scgi;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $WORK/html;
    }
}
CONF
nginx -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
UPSTREAM="http://127.0.0.1:$NGINX_PORT"
wait_http "$UPSTREAM/test/status/t-1"

# start_sidecar NAME EXTRA_TOML: starts a sidecar in front of nginx; sets $PID, $PROXY, $ADMIN.
start_sidecar() {
    cat >"$WORK/$1.toml" <<CONF
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
upstream = "$UPSTREAM"
# nginx keeps connections 65 s; reuse them for a while.
[proxy]
upstream_idle_timeout = "30s"
$2
CONF
    RUST_LOG=error,consistency_sidecar::server=info NO_COLOR=1 \
        "$ROOT/target/release/consistency-sidecar" run --config "$WORK/$1.toml" 2>"$WORK/$1.log" &
    PID=$!
    PROXY=""
    for _ in $(seq 1 50); do
        PROXY="$(grep -o 'proxy=[0-9.:]*' "$WORK/$1.log" | head -1 | cut -d= -f2 || true)"
        [ -n "$PROXY" ] && break
        sleep 0.1
    done
    [ -n "$PROXY" ] || { echo "load.sh: sidecar did not start:" >&2; cat "$WORK/$1.log" >&2; exit 1; }
    ADMIN="$(grep -o 'admin=[0-9.:]*' "$WORK/$1.log" | head -1 | cut -d= -f2)"
    wait_http "http://$PROXY/test/status/t-1"
}

start_sidecar sidecar ""
SIDECAR_PID=$PID
TRACKED_PROXY=$PROXY
TRACKED_ADMIN=$ADMIN
# The same, with the task memory off on the status route.
start_sidecar untracked '[[routes]]
name = "task_status"
path = "/test/status/{task_id}"
track = false'
UNTRACKED_PID=$PID
UNTRACKED_PROXY=$PROXY
# The same as the first, with the task memory shared through a Redis on loopback.
SHARED_PROXY=""
if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
    REDIS_PORT="$(free_port)"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no --loglevel warning >"$WORK/redis.log" 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 1 50); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    start_sidecar shared "[tracker]
store = \"redis\"
redis_url = \"redis://127.0.0.1:$REDIS_PORT\""
    SHARED_PID=$PID
    SHARED_PROXY=$PROXY
    SHARED_ADMIN=$ADMIN
    for _ in $(seq 1 50); do
        curl -fsS "http://$ADMIN/metrics" | grep -q '^consistency_tracker_store_up 1' && break
        sleep 0.1
    done
fi
PROXY=$TRACKED_PROXY
ADMIN=$TRACKED_ADMIN

rss() { awk '/VmHWM/ {print $2 " " $3}' "/proc/$SIDECAR_PID/status"; }
IDLE_RSS="$(rss)"

to_us() { # wrk latency (e.g. 812.00us, 1.20ms, 2.00s) -> microseconds
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else print n * 1000000 }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

measure() { # key url: one wrk run, appended to the key's results
    local out
    out="$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$2")"
    awk '/Requests\/sec/ {print $2}' <<<"$out" >>"$WORK/$1.rps"
    to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")" >>"$WORK/$1.p50"
    to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")" >>"$WORK/$1.p99"
}

declare -A URL=(
    [direct]="$UPSTREAM/test/status/t-1"
    [inspected]="http://$PROXY/test/status/t-1"
    [fixed]="http://$PROXY/test/status/t-2"
    [untracked]="http://$UNTRACKED_PROXY/test/status/t-1"
    [passthrough]="http://$PROXY/static.json"
)
ORDER=(direct passthrough inspected fixed untracked)
if [ -n "$SHARED_PROXY" ]; then
    URL[shared]="http://$SHARED_PROXY/test/status/t-1"
    ORDER+=(shared)
fi
declare -A LABEL=(
    [direct]="direct (nginx)"
    [passthrough]="sidecar, unrouted (passthrough)"
    [inspected]="sidecar, task_status, consistent"
    [fixed]="sidecar, task_status, one fix"
    [untracked]="sidecar, task_status, tracker off"
    [shared]="sidecar, task_status, Redis"
)
for round in $(seq 1 "$ROUNDS"); do
    for key in "${ORDER[@]}"; do
        measure "$key" "${URL[$key]}"
    done
done

echo "wrk -t$THREADS -c$CONNS -d$DURATION --latency, loopback, $(nproc) CPUs, nginx worker_processes 1, median of $ROUNDS round(s)"
echo
echo "| target                            | requests/s | p50 (µs) | p99 (µs) |"
echo "|-----------------------------------|------------|----------|----------|"
for key in "${ORDER[@]}"; do
    printf '| %-33s | %10s | %8s | %8s |\n' "${LABEL[$key]}" "$(median <"$WORK/$key.rps")" \
        "$(median <"$WORK/$key.p50")" "$(median <"$WORK/$key.p99")"
done
echo
echo "sidecar peak RSS (VmHWM): idle $IDLE_RSS, after load $(rss)"
echo "sidecar requests counted: $(curl -fsS "http://$ADMIN/metrics" | awk '/^consistency_proxy_requests_total/ {s += $2} END {print s}')"
echo "fixes counted: $(curl -fsS "http://$ADMIN/metrics" | awk '/^consistency_fixes_total/ {s += $2} END {print s}')"
if [ -n "$SHARED_PROXY" ]; then
    # Responses the Redis sidecar left to local memory: its figures are Redis's only if this is 0.
    echo "Redis sidecar store errors: $(curl -fsS "http://$SHARED_ADMIN/metrics" | awk '/^consistency_tracker_store_errors_total/ {s += $2} END {print s}')"
fi
