#!/usr/bin/env bash
# Load benchmark of the whole proxy: wrk straight at nginx vs wrk through the sidecar in front
# of the same nginx, in one run, on loopback. Also the sidecar's peak RSS idle and under load.
#
# Usage: benches/load.sh [duration=10s] [connections=32]
# Needs: wrk, nginx, python3 (to pick free ports), a release build (made here).
# Everything started here is stopped by pid on exit; nothing listens beyond 127.0.0.1.
set -euo pipefail

DURATION="${1:-10s}"
CONNS="${2:-32}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d /tmp/sidecar-load.XXXXXX)"
NGINX_PID=""
SIDECAR_PID=""

cleanup() {
    [ -n "$SIDECAR_PID" ] && kill "$SIDECAR_PID" 2>/dev/null && wait "$SIDECAR_PID" 2>/dev/null || true
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

# The sidecar in front of it; it logs the addresses it bound.
cat >"$WORK/sidecar.toml" <<CONF
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
upstream = "$UPSTREAM"
# nginx keeps connections 65 s; reuse them for a while.
[proxy]
upstream_idle_timeout = "30s"
CONF
RUST_LOG=warn,consistency_sidecar::server=info NO_COLOR=1 \
    "$ROOT/target/release/consistency-sidecar" run --config "$WORK/sidecar.toml" 2>"$WORK/sidecar.log" &
SIDECAR_PID=$!
PROXY=""
for _ in $(seq 1 50); do
    PROXY="$(grep -o 'proxy=[0-9.:]*' "$WORK/sidecar.log" | head -1 | cut -d= -f2 || true)"
    [ -n "$PROXY" ] && break
    sleep 0.1
done
[ -n "$PROXY" ] || { echo "load.sh: sidecar did not start:" >&2; cat "$WORK/sidecar.log" >&2; exit 1; }
ADMIN="$(grep -o 'admin=[0-9.:]*' "$WORK/sidecar.log" | head -1 | cut -d= -f2)"
wait_http "http://$PROXY/test/status/t-1"

rss() { awk '/VmHWM/ {print $2 " " $3}' "/proc/$SIDECAR_PID/status"; }
IDLE_RSS="$(rss)"

run_wrk() { # label url
    local out
    out="$(wrk -t2 -c"$CONNS" -d"$DURATION" --latency "$2")"
    echo "$out" >"$WORK/wrk-$1.txt"
    local rps p99
    rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
    printf '| %-28s | %12s | %8s |\n' "$1" "$rps" "$p99"
}

echo "wrk -t2 -c$CONNS -d$DURATION --latency, loopback, $(nproc) CPUs, nginx worker_processes 1"
echo
echo "| target                       | requests/s   | p99      |"
echo "|------------------------------|--------------|----------|"
run_wrk "direct (nginx)" "$UPSTREAM/test/status/t-1"
run_wrk "sidecar, task_status route" "http://$PROXY/test/status/t-1"
run_wrk "sidecar, unrouted (other)" "http://$PROXY/static.json"
echo
echo "sidecar peak RSS (VmHWM): idle $IDLE_RSS, after load $(rss)"
echo "sidecar requests counted: $(curl -fsS "http://$ADMIN/metrics" | awk '/^consistency_proxy_requests_total/ {s += $2} END {print s}')"
