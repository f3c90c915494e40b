#!/usr/bin/env bash
# Side by side on one harness (issue 9): nginx proxy_pass, nginx + a Lua body filter fixing the
# same fields, the floor of the HTTP stack (examples/floor_proxy.rs: the sidecar's hyper, runtime
# shape and header-case preservation, and nothing else), and the sidecar (unrouted passthrough and
# a tracked route needing two fixes per response), all in front of the same nginx backend
# answering a ~450-byte task status from memory. Every sidecar figure is given as a ratio to the
# floor and to nginx; a self-contained SVG chart of req/s and p99 by connection count is written.
#
# Usage: benches/compare.sh [--quick] [--redis] [--codings] [--profile] [--callgrind]
#                           [--svg FILE] [--duration 8s] [--rounds 3] [--conns "1 32 256"]
#   --quick       3 s runs (same rounds and connection counts); also QUICK=1
#   --redis       add a contender: the sidecar with `[tracker] store = "redis"` and a redis-server
#                 of its own on a free loopback port (issue 11's cost of shared task memory)
#   --codings     add contenders: the fixed route with the backend's body in gzip, br and zstd
#                 (precompressed files, as Flask-Compress would send them) and a browser's
#                 Accept-Encoding (issue 16's cost of decoding and re-encoding); needs
#                 /usr/bin/python3 with brotli and zstandard (Debian: python3-brotli,
#                 python3-zstandard) to write the files
#   --profile     after the rounds, one more run of each sidecar contender at 32 connections
#                 under `perf record` (flat, by DSO and by symbol): where the sidecar's CPU goes
#   --callgrind   after the rounds, the floor and the sidecar run once more each under
#                 `valgrind --tool=callgrind --cache-sim=yes`, counters zeroed after a warm-up
#                 (callgrind_control), at each connection count but 1: instructions, D1 and LL
#                 data-cache misses per request, which these VMs' hardware counters do not give
#   --svg FILE    where the chart goes (default: docs/compare.svg)
#   --duration, --rounds, --conns   also DURATION, ROUNDS, CONNS
# Env:
#   SIDECAR_EXTRA_CONFIG=FILE  add a contender: the sidecar with FILE's TOML appended to its config
#   SIDECAR_BIN=PATH           measure this binary instead of building the release binary here
#   FLOOR_BIN=PATH             the same for the floor proxy (default: built here from examples/)
#   KEEP_WORK=1                keep the work directory (configs, logs, raw wrk output)
#
# Harness: wrk (1 thread) pinned to CPU 0; the proxy under test and the backend (and redis-server)
# pinned to CPU 1; keep-alive on every hop. Rounds are interleaved: every contender at every
# connection count in round 1, then round 2, ... Each figure is the median over rounds of: req/s,
# p50, p99, CPU µs per request of the proxy's processes (utime+stime from /proc/PID/stat around
# the run), their peak RSS during the run (VmHWM, reset before each run) and, for sidecars, the
# log bytes written per second.
# Missing peers are installed from Debian (nginx, libnginx-mod-http-lua, lua-cjson, wrk, and
# redis-server with --redis). Everything listens on 127.0.0.1 only; everything started here is
# stopped by PID on exit. Not a CI step: benchmarks prove speed, tests prove behaviour.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${DURATION:-8s}"
ROUNDS="${ROUNDS:-3}"
CONNS="${CONNS:-1 32 256}"
REDIS="${REDIS:-0}"
CODINGS_RUN="${CODINGS_RUN:-0}"
PROFILE="${PROFILE:-0}"
CALLGRIND="${CALLGRIND:-0}"
SVG="${SVG:-$ROOT/docs/compare.svg}"
[ "${QUICK:-0}" = 1 ] && DURATION=3s
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) DURATION=3s ;;
        --redis) REDIS=1 ;;
        --codings) CODINGS_RUN=1 ;;
        --profile) PROFILE=1 ;;
        --callgrind) CALLGRIND=1 ;;
        --svg) SVG="$2"; shift ;;
        --duration) DURATION="$2"; shift ;;
        --rounds) ROUNDS="$2"; shift ;;
        --conns) CONNS="$2"; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
    esac
    shift
done
DURATION_S="${DURATION%s}"
[[ "$DURATION_S" =~ ^[0-9]+$ && "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || {
    echo "compare.sh: duration must be whole seconds (e.g. 8s) and rounds a positive integer" >&2
    exit 64
}
COMMAND="benches/compare.sh --duration ${DURATION_S}s --rounds $ROUNDS --conns \"$CONNS\""
[ "$REDIS" = 1 ] && COMMAND+=" --redis"
[ "$CODINGS_RUN" = 1 ] && COMMAND+=" --codings"
[ "$PROFILE" = 1 ] && COMMAND+=" --profile"
[ "$CALLGRIND" = 1 ] && COMMAND+=" --callgrind"

log() { echo "compare.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# --- peers -------------------------------------------------------------------------------------
need=()
command -v nginx >/dev/null || need+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ] || need+=(libnginx-mod-http-lua)
[ -n "$(find /usr/lib -path '*lua/5.1/cjson.so' 2>/dev/null | head -1)" ] || need+=(lua-cjson)
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
[ "$PROFILE" = 1 ] && ! command -v perf >/dev/null && need+=(linux-perf)
[ "$CALLGRIND" = 1 ] && ! command -v valgrind >/dev/null && need+=(valgrind)
if [ "$REDIS" = 1 ]; then
    command -v redis-server >/dev/null || need+=(redis-server)
    command -v redis-cli >/dev/null || need+=(redis-tools)
fi
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    timeout 600 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
for tool in nginx wrk curl python3 taskset; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
MODULES="$(nginx -V 2>&1 | grep -o -- '--modules-path=[^ ]*' | cut -d= -f2)"
MODULES="${MODULES:-/usr/lib/nginx/modules}"

# Pinning: the load generator alone on CPU 0, everything it measures on CPU 1.
if [ "$(nproc)" -ge 2 ]; then
    LOAD_CPU=0
    PROXY_CPU=1
else
    log "only one CPU: everything shares CPU 0, figures are not comparable to 2-CPU runs"
    LOAD_CPU=0
    PROXY_CPU=0
fi

source "$ROOT/benches/lib.sh"
bench_workdir compare

wait_http() { # url: up to 10 s for it to answer
    for _ in $(seq 1 100); do
        curl -sS --max-time 1 -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$1 did not come up"
}

# --- the sidecar binary --------------------------------------------------------------------------
bench_sidecar_binary
bench_floor_binary
if [ -n "${SIDECAR_BIN:-}" ]; then
    REVISION="$SIDECAR_BIN (built $(date -u -r "$BUILT" '+%Y-%m-%d %H:%M UTC'))"
else
    REVISION="$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
fi

# --- the backend: nginx answering task statuses from memory ------------------------------------
# Two fixes per response under the default rules: status completed with a stale stage
# (completed_stage) and progress 90 (completed_progress).
TASK=5f3a9c01-7b2e-4d61-9a0c-3e8f12ab4c77
FIX_BODY='{"task_id":"'$TASK'","execution_id":"'$TASK'","status":"completed","stage":"ai_fetching","progress":90,"is_completed":true,"brand_name":"Acme","competitor_brands":["Globex","Initech","Umbrella"],"selected_models":[{"name":"deepseek","checked":true},{"name":"qwen","checked":true}],"results_count":12,"created_at":"2026-02-24T00:40:00.123456","updated_at":"2026-02-24T00:41:12.345678","error":null}'
# The same task, consistent: every proxy must pass it byte for byte.
OK_TASK=0b7d4e22-91c3-4a5f-8e6d-2c4b9a1f3e58
OK_BODY='{"task_id":"'$OK_TASK'","execution_id":"'$OK_TASK'","status":"running","stage":"ai_fetching","progress":25,"is_completed":false,"brand_name":"Acme","competitor_brands":["Globex","Initech","Umbrella"],"selected_models":[{"name":"deepseek","checked":true},{"name":"qwen","checked":true}],"results_count":12,"created_at":"2026-02-24T00:40:00.123456","updated_at":"2026-02-24T00:41:12.345678","error":null}'
FIX_PATH="/test/status/$TASK"
OK_PATH="/test/status/$OK_TASK"
PLAIN_PATH="/plain/status" # not a sidecar route: forwarded untouched

# nginx_conf NAME PORT EXTRA_MAIN SERVER_BODY [HTTP_EXTRA]: a single-worker nginx on loopback.
nginx_conf() {
    local dir="$WORK/$1"
    mkdir -p "$dir/logs"
    cat >"$dir/nginx.conf" <<CONF
$3
worker_processes 1;
error_log $dir/logs/error.log warn;
pid $dir/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/json;
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    client_body_temp_path $dir/tmp_body;
    proxy_temp_path $dir/tmp_proxy;
    fastcgi_temp_path $dir/tmp_fastcgi;
    uwsgi_temp_path $dir/tmp_uwsgi;
    scgi_temp_path $dir/tmp_scgi;
    ${5:-}
    server {
        listen 127.0.0.1:$2 backlog=4096;
$4
    }
}
CONF
}

# start_nginx NAME PORT: sets NGINX_PID (the master; its worker is its child).
start_nginx() {
    local dir="$WORK/$1"
    timeout 10 nginx -t -q -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' ||
        die "$1: nginx rejected its config ($dir/nginx.conf)"
    taskset -c "$PROXY_CPU" nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' \
        2>>"$dir/logs/stderr.log" &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    wait_http "http://127.0.0.1:$2/nginx-up-probe"
}

# With --codings, the fix body precompressed per coding, served as files with its
# Content-Encoding (the task's path gains the coding's name; the body is the same task's).
CODED_LOCATIONS=""
if [ "$CODINGS_RUN" = 1 ]; then
    mkdir -p "$WORK/coded"
    /usr/bin/python3 - "$WORK/coded" "$FIX_BODY" <<'PY' || die "--codings needs /usr/bin/python3 with brotli and zstandard (python3-brotli, python3-zstandard)"
import gzip, sys
import brotli, zstandard
out, body = sys.argv[1], sys.argv[2].encode()
for name, data in (("gzip", gzip.compress(body, 6)), ("br", brotli.compress(body, quality=4)),
                   ("zstd", zstandard.ZstdCompressor(level=3).compress(body))):
    open(f"{out}/fix.{name}", "wb").write(data)
PY
    chmod -R a+rX "$WORK/coded"
    for coding in gzip br zstd; do
        CODED_LOCATIONS+="
        location = $FIX_PATH-$coding { add_header Content-Encoding $coding; alias $WORK/coded/fix.$coding; }"
    done
fi

BACKEND_PORT="$(free_port)"
nginx_conf backend "$BACKEND_PORT" "" "$CODED_LOCATIONS
        location = $FIX_PATH { return 200 '$FIX_BODY'; }
        location = $OK_PATH { return 200 '$OK_BODY'; }
        location = $PLAIN_PATH { return 200 '$FIX_BODY'; }
        location / { return 404 '{\"error\":\"not found\"}'; }"
start_nginx backend "$BACKEND_PORT"
BACKEND="127.0.0.1:$BACKEND_PORT"

UPSTREAM_BLOCK="upstream backend {
        server $BACKEND;
        keepalive 512;
        keepalive_requests 100000000;
        keepalive_timeout 60s;
    }"
PROXY_LOCATION="proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";"

# nginx proxy_pass with upstream keepalive: the passthrough baseline.
NGINX_PORT="$(free_port)"
nginx_conf nginx "$NGINX_PORT" "" "
        location / {
            $PROXY_LOCATION
        }" "$UPSTREAM_BLOCK"
start_nginx nginx "$NGINX_PORT"
NGINX_PROXY_PID=$NGINX_PID

# nginx + Lua body filter on the sidecar's task_status route (one path segment after it).
LUA_PORT="$(free_port)"
mkdir -p "$WORK/nginx_lua"
cp "$ROOT/benches/nginx/consistency_filter.lua" "$WORK/nginx_lua/"
chmod a+r "$WORK/nginx_lua/consistency_filter.lua"
nginx_conf nginx_lua "$LUA_PORT" "load_module $MODULES/ndk_http_module.so;
load_module $MODULES/ngx_http_lua_module.so;" "
        location ~ ^/test/status/[^/]+\$ {
            $PROXY_LOCATION
            header_filter_by_lua_block { require(\"consistency_filter\").header() }
            body_filter_by_lua_block { require(\"consistency_filter\").body() }
        }
        location / {
            $PROXY_LOCATION
        }" "$UPSTREAM_BLOCK
    lua_package_path \"$WORK/nginx_lua/?.lua;;\";
    init_by_lua_block { require(\"consistency_filter\") }"
start_nginx nginx_lua "$LUA_PORT"
LUA_PID=$NGINX_PID

# --- sidecars ----------------------------------------------------------------------------------
# start_sidecar NAME EXTRA_TOML: default config but for the addresses, default logging (RUST_LOG
# unset) to a file. Sets SIDECAR_PID and SIDECAR_ADDR.
start_sidecar() {
    local conf="$WORK/$1.toml" logf="$WORK/$1.log"
    {
        printf 'listen = "127.0.0.1:0"\nadmin_listen = "127.0.0.1:0"\nupstream = "http://%s"\n' "$BACKEND"
        printf '%s\n' "$2"
    } >"$conf"
    if ! out="$(timeout 10 "$BIN" check-config --config "$conf" 2>&1 >/dev/null)"; then
        die "$1: the sidecar rejects its config: $out"
    fi
    # WRAP (an array, e.g. valgrind and its options) runs the sidecar under another program.
    (unset RUST_LOG; NO_COLOR=1 exec taskset -c "$PROXY_CPU" ${WRAP[@]+"${WRAP[@]}"} "$BIN" run \
        --config "$conf" 2>>"$logf" >>"$logf") &
    SIDECAR_PID=$!
    PIDS+=("$SIDECAR_PID")
    SIDECAR_ADDR=""
    for _ in $(seq 1 300); do
        SIDECAR_ADDR="$(grep -o 'proxy=[0-9.:]*' "$logf" | head -1 | cut -d= -f2 || true)"
        [ -n "$SIDECAR_ADDR" ] && break
        kill -0 "$SIDECAR_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$SIDECAR_ADDR" ] || { cat "$logf" >&2; die "$1: the sidecar did not start"; }
    wait_http "http://$SIDECAR_ADDR$PLAIN_PATH"
}

start_sidecar sidecar ""
SIDECAR_MAIN_PID=$SIDECAR_PID
SIDECAR_MAIN_ADDR=$SIDECAR_ADDR

# start_floor NAME [WRAPPER...]: the floor proxy in front of the backend. Sets FLOOR_PID and
# FLOOR_ADDR.
start_floor() {
    local logf="$WORK/$1.log"
    shift
    taskset -c "$PROXY_CPU" "$@" "$FLOOR" 127.0.0.1:0 "$BACKEND" >"$logf" 2>&1 &
    FLOOR_PID=$!
    PIDS+=("$FLOOR_PID")
    FLOOR_ADDR=""
    for _ in $(seq 1 300); do
        FLOOR_ADDR="$(grep -o 'listening on [0-9.:]*' "$logf" | head -1 | cut -d' ' -f3 || true)"
        [ -n "$FLOOR_ADDR" ] && break
        kill -0 "$FLOOR_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$FLOOR_ADDR" ] || { cat "$logf" >&2; die "the floor proxy did not start"; }
    wait_http "http://$FLOOR_ADDR$PLAIN_PATH"
}
start_floor floor

# Contenders: key, label, url, the PIDs whose CPU and RSS count, the sidecar log (if any).
KEYS=(nginx nginx_lua floor sidecar_pass sidecar_fixed)
declare -A LABEL=(
    [floor]="floor: minimal hyper proxy (examples/floor_proxy.rs)"
    [nginx]="nginx proxy_pass, upstream keepalive"
    [nginx_lua]="nginx + Lua filter (lua-cjson), 2 fixes/resp"
    [sidecar_pass]="sidecar, unrouted path (passthrough)"
    [sidecar_fixed]="sidecar, task_status, 2 fixes/resp"
)
declare -A URL=(
    [nginx]="http://127.0.0.1:$NGINX_PORT$FIX_PATH"
    [nginx_lua]="http://127.0.0.1:$LUA_PORT$FIX_PATH"
    [floor]="http://$FLOOR_ADDR$FIX_PATH"
    [sidecar_pass]="http://$SIDECAR_MAIN_ADDR$PLAIN_PATH"
    [sidecar_fixed]="http://$SIDECAR_MAIN_ADDR$FIX_PATH"
)
declare -A ROOTPIDS=(
    [nginx]="$NGINX_PROXY_PID"
    [nginx_lua]="$LUA_PID"
    [floor]="$FLOOR_PID"
    [sidecar_pass]="$SIDECAR_MAIN_PID"
    [sidecar_fixed]="$SIDECAR_MAIN_PID"
)
declare -A LOGFILE=([sidecar_pass]="$WORK/sidecar.log" [sidecar_fixed]="$WORK/sidecar.log")
# Extra request headers per contender (wrk -H).
declare -A HEADER=()
BROWSER_ACCEPT="Accept-Encoding: gzip, deflate, br, zstd"

if [ -n "${SIDECAR_EXTRA_CONFIG:-}" ]; then
    [ -r "$SIDECAR_EXTRA_CONFIG" ] || die "SIDECAR_EXTRA_CONFIG=$SIDECAR_EXTRA_CONFIG is not readable"
    start_sidecar sidecar_extra "$(cat "$SIDECAR_EXTRA_CONFIG")"
    KEYS+=(sidecar_extra)
    LABEL[sidecar_extra]="sidecar + $(basename "$SIDECAR_EXTRA_CONFIG"), task_status"
    URL[sidecar_extra]="http://$SIDECAR_ADDR$FIX_PATH"
    ROOTPIDS[sidecar_extra]="$SIDECAR_PID"
    LOGFILE[sidecar_extra]="$WORK/sidecar_extra.log"
fi

if [ "$REDIS" = 1 ]; then
    REDIS_PORT="$(free_port)"
    taskset -c "$PROXY_CPU" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" \
        --appendonly no --protected-mode yes --dir "$WORK" >"$WORK/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    for _ in $(seq 1 100); do
        [ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break
        sleep 0.1
    done
    [ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] ||
        die "redis-server did not start: $(cat "$WORK/redis.log")"
    REDIS_TOML="[tracker]
store = \"redis\"
redis_url = \"redis://127.0.0.1:$REDIS_PORT\""
    printf 'upstream = "http://%s"\n%s\n' "$BACKEND" "$REDIS_TOML" >"$WORK/redis-check.toml"
    if ! out="$(timeout 10 "$BIN" check-config --config "$WORK/redis-check.toml" 2>&1 >/dev/null)"; then
        die "--redis: this sidecar build has no Redis task store ([tracker] store = \"redis\", redis_url) yet: $out"
    fi
    start_sidecar sidecar_redis "$REDIS_TOML"
    KEYS+=(sidecar_redis)
    LABEL[sidecar_redis]="sidecar + redis-server, task_status, Redis task memory"
    URL[sidecar_redis]="http://$SIDECAR_ADDR$FIX_PATH"
    # redis-server's work is part of this contender's cost.
    ROOTPIDS[sidecar_redis]="$SIDECAR_PID $REDIS_PID"
    LOGFILE[sidecar_redis]="$WORK/sidecar_redis.log"
fi

CODED_KEYS=()
if [ "$CODINGS_RUN" = 1 ]; then
    for coding in gzip br zstd; do
        key="sidecar_fixed_$coding"
        CODED_KEYS+=("$key")
        KEYS+=("$key")
        LABEL[$key]="sidecar, task_status in $coding, 2 fixes/resp"
        URL[$key]="http://$SIDECAR_MAIN_ADDR$FIX_PATH-$coding"
        ROOTPIDS[$key]="$SIDECAR_MAIN_PID"
        LOGFILE[$key]="$WORK/sidecar.log"
        HEADER[$key]="$BROWSER_ACCEPT"
    done
fi

# --- check every contender does the job before measuring it -----------------------------------
fetch() { # url file
    curl -sS --max-time 5 -o "$2" -w '%{http_code}' "$1" | grep -qx 200 || die "$1 did not answer 200"
}
same() { # what file file
    cmp -s "$2" "$3" || die "$1: bodies differ ($2 vs $3)"
}
V="$WORK/verify"
mkdir -p "$V"
fetch "http://$BACKEND$FIX_PATH" "$V/backend_fix"
fetch "http://$BACKEND$OK_PATH" "$V/backend_ok"
"$BIN" inspect --fixed "$V/backend_fix" >"$V/expected_fix" || true
cmp -s "$V/expected_fix" "$V/backend_fix" && die "the backend's fix body needs no fix under the default rules"
"$BIN" inspect "$V/backend_fix" >"$V/verdict.json" || true
python3 - "$V/verdict.json" <<'PY' || die "the fix body must need exactly two fixes under the default rules"
import json, sys
fixes = [f["rule"] for r in json.load(open(sys.argv[1]))["records"] for f in r["fixes"]]
sys.exit(0 if sorted(fixes) == ["completed_progress", "completed_stage"] else 1)
PY
for key in "${CODED_KEYS[@]}"; do
    curl -sS --max-time 5 -H "$BROWSER_ACCEPT" -D "$V/${key}_head" -o "$V/${key}_fix" "${URL[$key]}" ||
        die "$key did not answer"
    /usr/bin/python3 - "$V/${key}_head" "$V/${key}_fix" "$V/expected_fix" <<'PY' || die "$key: not fixed like \`inspect --fixed\` in its own coding"
import gzip, sys
import brotli, zstandard
head, body, want = (open(p, "rb").read() for p in sys.argv[1:4])
coding = [l.split(b":", 1)[1].strip().decode() for l in head.split(b"\r\n") if l.lower().startswith(b"content-encoding:")]
decode = {"gzip": gzip.decompress, "br": brotli.decompress,
          "zstd": lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b)}
sys.exit(0 if len(coding) == 1 and decode[coding[0]](body) == want else 1)
PY
done
for key in "${KEYS[@]}"; do
    [[ " ${CODED_KEYS[*]} " == *" $key "* ]] && continue
    base="${URL[$key]%"$FIX_PATH"}"
    base="${base%"$PLAIN_PATH"}"
    fetch "$base$OK_PATH" "$V/${key}_ok"
    same "$key passes a consistent body unchanged" "$V/backend_ok" "$V/${key}_ok"
    fetch "$base$PLAIN_PATH" "$V/${key}_plain"
    same "$key passes an unrouted body unchanged" "$V/backend_fix" "$V/${key}_plain"
    for _ in 1 2 3; do # polls after the first are judged against the task memory too
        fetch "$base$FIX_PATH" "$V/${key}_fix"
        case "$key" in
            nginx | floor) same "$key passes the body unchanged" "$V/backend_fix" "$V/${key}_fix" ;;
            nginx_lua)
                python3 - "$V/expected_fix" "$V/${key}_fix" <<'PY' || die "nginx+Lua does not fix the fields the sidecar fixes"
import json, sys
want, got = (json.load(open(p)) for p in sys.argv[1:3])
bad = sorted(k for k in set(want) | set(got) if want.get(k, "<absent>") != got.get(k, "<absent>"))
if bad:
    print("fields differing from the sidecar's fixed body:", bad, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
                ;;
            *) same "$key fixes the body like \`inspect --fixed\`" "$V/expected_fix" "$V/${key}_fix" ;;
        esac
    done
done
if [ "$REDIS" = 1 ]; then
    keys="$(timeout 2 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" dbsize)"
    [ "${keys:-0}" -gt 0 ] || die "--redis: the sidecar stored no task in Redis"
fi
log "checked: nginx and the floor pass bodies unchanged; nginx+Lua fixes the same fields as the sidecar; every proxy passes consistent bodies byte for byte"

# --- measuring ---------------------------------------------------------------------------------
CLK_TCK="$(getconf CLK_TCK)"

pids_of() { # root PIDs and their children (an nginx master and its worker)
    local pid
    for pid in $1; do
        echo "$pid"
        ps -o pid= --ppid "$pid" 2>/dev/null || true
    done
}

cpu_ticks() { # utime + stime of the given PIDs, in clock ticks
    local pid total=0 stat rest
    for pid in "$@"; do
        stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || continue
        rest="${stat##*) }" # fields from the 3rd on; comm may hold spaces
        read -r -a f <<<"$rest"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0, needs ptrace rights over
# the process), so each run reports its own peak; without it, VmHWM is the peak so far.
HWM_SCOPE="during the run"
reset_hwm() {
    local pid
    for pid in "$@"; do
        echo 5 2>/dev/null >"/proc/$pid/clear_refs" || HWM_SCOPE="since start (clear_refs not writable)"
    done
}

hwm_kb() { # sum of VmHWM of the given PIDs
    local pid total=0 kb
    for pid in "$@"; do
        kb="$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

to_us() { # wrk latency (812.00us, 1.20ms, 2.00s, 1.00m) -> microseconds
    awk -v v="$1" 'BEGIN { n = v + 0
        if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000
        else if (v ~ /m$/) print n * 60000000; else print n * 1000000 }'
}

mkdir -p "$WORK/raw" "$WORK/results"
# run KEY CONNS ROUND: one wrk run; appends "rps p50 p99 cpu_us hwm_kb log_bps errors".
run() {
    local key="$1" c="$2" round="$3" pids out t0 t1 l0 l1 reqs secs rps p50 p99 errs
    read -r -a pids <<<"$(pids_of "${ROOTPIDS[$key]}" | tr '\n' ' ')"
    reset_hwm "${pids[@]}"
    t0="$(cpu_ticks "${pids[@]}")"
    l0="$( [ -n "${LOGFILE[$key]:-}" ] && stat -c %s "${LOGFILE[$key]}" || echo 0)"
    out="$(timeout $((DURATION_S + 60)) taskset -c "$LOAD_CPU" \
        wrk -t1 -c"$c" -d"${DURATION_S}s" --timeout 10s --latency \
        ${HEADER[$key]:+-H "${HEADER[$key]}"} "${URL[$key]}")" ||
        die "wrk failed on $key at $c connections"
    t1="$(cpu_ticks "${pids[@]}")"
    l1="$( [ -n "${LOGFILE[$key]:-}" ] && stat -c %s "${LOGFILE[$key]}" || echo 0)"
    printf '%s\n' "$out" >"$WORK/raw/$key.c$c.r$round.txt"
    # The sidecar appends (O_APPEND), so emptying its log is safe; a full run would write GBs.
    if [ -n "${LOGFILE[$key]:-}" ] && [ "$l1" -gt $((64 << 20)) ]; then
        : >"${LOGFILE[$key]}"
    fi
    reqs="$(awk '/requests in/ {print $1}' <<<"$out")"
    secs="$(awk '/requests in/ {sub(/s,$/, "", $4); print $4}' <<<"$out")"
    rps="$(awk '/^Requests\/sec/ {print $2}' <<<"$out")"
    p50="$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")"
    p99="$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")"
    errs="$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10} END {print n + 0}' <<<"$out")"
    [ "${reqs:-0}" -gt 0 ] || die "wrk made no request on $key at $c connections: $out"
    awk -v r="$reqs" -v s="$secs" -v rps="$rps" -v p50="$p50" -v p99="$p99" -v dt=$((t1 - t0)) \
        -v tck="$CLK_TCK" -v hwm="$(hwm_kb "${pids[@]}")" -v dl=$((l1 - l0)) -v e="$errs" \
        'BEGIN { printf "%s %s %s %.1f %d %.0f %d\n", rps, p50, p99, dt * 1e6 / tck / r, hwm, dl / s, e }' \
        >>"$WORK/results/$key.c$c"
    log "round $round: $key @$c: $rps req/s, p99 ${p99} µs, $errs errors"
}

log "warming up"
for key in "${KEYS[@]}"; do
    timeout 30 taskset -c "$LOAD_CPU" wrk -t1 -c32 -d1s "${URL[$key]}" >/dev/null
done
STARTED="$(date -u '+%Y-%m-%d %H:%M UTC')"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
SECONDS=0
for round in $(seq 1 "$ROUNDS"); do
    for c in $CONNS; do
        for key in "${KEYS[@]}"; do
            run "$key" "$c" "$round"
        done
    done
done
ELAPSED=$SECONDS
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

# profile KEY: one run at 32 connections with perf sampling the contender's processes.
profile() {
    local key="$1" pids
    pids="$(pids_of "${ROOTPIDS[$key]}" | paste -sd, -)"
    perf record -q -F 1999 -o "$WORK/$key.perf" -p "$pids" -- sleep "$DURATION_S" \
        >"$WORK/$key.perf.log" 2>&1 &
    local perf_pid=$!
    PIDS+=("$perf_pid")
    timeout $((DURATION_S + 60)) taskset -c "$LOAD_CPU" wrk -t1 -c32 -d"${DURATION_S}s" "${URL[$key]}" >/dev/null
    wait "$perf_pid" || die "perf record failed: $(cat "$WORK/$key.perf.log")"
    perf_top --sort dso --percent-limit 2 | head -8 >"$WORK/$key.dso"
    perf_top --sort dso,symbol --percent-limit 0.5 | head -40 >"$WORK/$key.symbols"
}

perf_top() { # perf report of $key's samples, without comments, padding and empty columns
    perf report -i "$WORK/$key.perf" --stdio --no-children "$@" 2>/dev/null |
        grep -v -e '^#' -e '^$' | sed 's/[ -]*$//'
}
PROFILED=()
if [ "$PROFILE" = 1 ]; then
    for key in "${KEYS[@]}"; do
        case "$key" in sidecar*) log "profiling $key"; profile "$key"; PROFILED+=("$key") ;; esac
    done
fi

# callgrind_run KEY CONNS: a fresh floor or sidecar under callgrind with a simulated cache; after
# a warm-up its counters are zeroed, wrk runs, and the counters are dumped. Appends "instructions
# D1-misses LL-misses" per request (data reads and writes) to $WORK/results/KEY.c$CONNS.cg.
CALLGRIND_KEYS=(${CALLGRIND_KEYS_ONLY:-floor sidecar_pass sidecar_fixed})
callgrind_run() {
    local key="$1" c="$2" cg_out="$WORK/callgrind.$1.c$2" pid url reqs dump
    local -a wrap=(valgrind --tool=callgrind --cache-sim=yes "--callgrind-out-file=$cg_out")
    case "$key" in
        floor)
            start_floor "callgrind_floor.c$c" "${wrap[@]}"
            pid=$FLOOR_PID url="http://$FLOOR_ADDR$FIX_PATH" ;;
        sidecar_pass | sidecar_fixed)
            WRAP=("${wrap[@]}")
            start_sidecar "callgrind_$key.c$c" ""
            WRAP=()
            pid=$SIDECAR_PID url="http://$SIDECAR_ADDR${URL[$key]#"http://$SIDECAR_MAIN_ADDR"}" ;;
    esac
    timeout 120 taskset -c "$LOAD_CPU" wrk -t1 -c"$c" -d2s "$url" >/dev/null
    timeout 60 callgrind_control -z "$pid" >/dev/null 2>&1 || die "callgrind_control -z failed on $key"
    # Ten times slower under callgrind: at least 10 s for enough requests to count.
    reqs="$(timeout $((CG_SECONDS + 120)) taskset -c "$LOAD_CPU" wrk -t1 -c"$c" -d"${CG_SECONDS}s" \
        --timeout 30s "$url" | awk '/requests in/ {print $1}')"
    timeout 60 callgrind_control -d "$pid" >/dev/null 2>&1 || die "callgrind_control -d failed on $key"
    dump="$cg_out.1" # the first dump, callgrind_control's; $cg_out itself is written at exit
    for _ in $(seq 1 300); do # the dump is written once a thread next runs
        [ -s "$dump" ] && break
        sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    [ -s "$dump" ] && [ "${reqs:-0}" -gt 0 ] || die "callgrind: no dump or no requests on $key ($dump, ${reqs:-0} requests)"
    awk -v r="$reqs" '
        /^events:/ { for (i = 2; i <= NF; i++) col[$i] = i - 1 }
        /^(summary|totals):/ { for (i = 2; i <= NF; i++) v[i - 1] = $i }
        END { printf "%.0f %.1f %.2f\n", v[col["Ir"]] / r,
                (v[col["D1mr"]] + v[col["D1mw"]]) / r, (v[col["DLmr"]] + v[col["DLmw"]]) / r }' \
        "$dump" >"$WORK/results/$key.c$c.cg"
    log "callgrind: $key @$c: $(cat "$WORK/results/$key.c$c.cg") (instructions, D1, LL per request; $reqs requests)"
}
CALLGRIND_CONNS=()
CG_SECONDS=$((DURATION_S > 10 ? DURATION_S : 10))
if [ "$CALLGRIND" = 1 ]; then
    for c in $CONNS; do [ "$c" -gt 1 ] && CALLGRIND_CONNS+=("$c"); done
    for c in "${CALLGRIND_CONNS[@]}"; do
        for key in "${CALLGRIND_KEYS[@]}"; do callgrind_run "$key" "$c"; done
    done
fi

# --- report ------------------------------------------------------------------------------------
median() { # column N of a results file
    awk -v n="$1" '{print $n}' "$2" | sort -g | awk '{a[NR] = $1} END {
        if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
spread() { # (max - min) / median of column N of a results file, in percent
    awk -v n="$1" '{print $n}' "$2" | sort -g | awk '{a[NR] = $1} END {
        m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        if (m > 0) printf "%.0f%%", (a[NR] - a[1]) * 100 / m; else print "n/a" }'
}
declare -A MED
for key in "${KEYS[@]}"; do
    for c in $CONNS; do
        for col in 1 2 3 4 5 6 7; do
            MED[$key.$c.$col]="$(median "$col" "$WORK/results/$key.c$c")"
        done
        MED[$key.$c.spread]="$(spread 1 "$WORK/results/$key.c$c")"
    done
done

fmt_us() { awk -v v="$1" 'BEGIN { if (v >= 1000) printf "%.2f ms", v / 1000; else printf "%.0f µs", v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "n/a" }'; }

CPU_MODEL="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
echo "## compare.sh: $STARTED"
echo
echo "- machine: $(nproc) CPUs ($CPU_MODEL), Linux $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM"
echo "- command: \`$COMMAND\` (measuring took ${ELAPSED}s)"
echo "- sidecar: $REVISION, release build, default config and logging (RUST_LOG unset, log to a file); $(nginx -v 2>&1 | sed 's/nginx version: //'); $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"
echo "- load average (1, 5, 15 min) before measuring: $LOAD_BEFORE; after: $LOAD_AFTER (other work on the machine perturbs the figures)"
echo "- wrk -t1 --latency pinned to CPU $LOAD_CPU; proxy and backend (nginx, worker_processes 1, ~450-byte status from memory) pinned to CPU $PROXY_CPU; median of $ROUNDS interleaved rounds of ${DURATION_S}s"
echo "- CPU/req: utime+stime of the proxy's processes over the run / requests; RSS: VmHWM ($HWM_SCOPE); log: sidecar log bytes/s"
echo
echo "- spread: (max − min) / median of req/s over the rounds"
echo
echo "| contender | conns | req/s | spread | p50 | p99 | CPU µs/req | peak RSS | log | errors |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for c in $CONNS; do
    for key in "${KEYS[@]}"; do
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${LABEL[$key]}" "$c" \
            "$(awk -v v="${MED[$key.$c.1]}" 'BEGIN { printf "%.1fk", v / 1000 }')" "${MED[$key.$c.spread]}" \
            "$(fmt_us "${MED[$key.$c.2]}")" "$(fmt_us "${MED[$key.$c.3]}")" "${MED[$key.$c.4]}" \
            "$(awk -v v="${MED[$key.$c.5]}" 'BEGIN { printf "%.1f MiB", v / 1024 }')" \
            "$(awk -v v="${MED[$key.$c.6]}" -v k="${LOGFILE[$key]:-}" 'BEGIN { if (k == "") print "-"; else printf "%.1f KB/s", v / 1000 }')" \
            "${MED[$key.$c.7]}"
    done
done
echo
echo "| ratio (req/s, medians) |$(for c in $CONNS; do printf ' @%s |' "$c"; done)"
echo "|---|$(for _ in $CONNS; do printf -- '---:|'; done)"
ratio_row() { # label numerator denominator
    printf '| %s |' "$1"
    for c in $CONNS; do printf ' %s |' "$(ratio "${MED[$2.$c.1]}" "${MED[$3.$c.1]}")"; done
    echo
}
ratio_row "sidecar passthrough / floor" sidecar_pass floor
ratio_row "sidecar fixed / floor" sidecar_fixed floor
ratio_row "floor / nginx" floor nginx
ratio_row "sidecar passthrough / nginx" sidecar_pass nginx
ratio_row "sidecar fixed / nginx passthrough" sidecar_fixed nginx
ratio_row "sidecar fixed / nginx+Lua" sidecar_fixed nginx_lua
ratio_row "nginx+Lua / nginx" nginx_lua nginx
for key in sidecar_extra sidecar_redis; do
    [ -n "${URL[$key]:-}" ] && ratio_row "$key / sidecar fixed (local memory)" "$key" sidecar_fixed
done
echo
for c in $CONNS; do
    printf -- '- @%s: p99 sidecar passthrough / floor %s, sidecar fixed / floor %s, sidecar passthrough / nginx %s; p50 sidecar passthrough − nginx %s µs\n' "$c" \
        "$(ratio "${MED[sidecar_pass.$c.3]}" "${MED[floor.$c.3]}")" \
        "$(ratio "${MED[sidecar_fixed.$c.3]}" "${MED[floor.$c.3]}")" \
        "$(ratio "${MED[sidecar_pass.$c.3]}" "${MED[nginx.$c.3]}")" \
        "$(awk -v a="${MED[sidecar_pass.$c.2]}" -v b="${MED[nginx.$c.2]}" 'BEGIN { printf "%+.0f", a - b }')"
done
if [ ${#CALLGRIND_CONNS[@]} -gt 0 ]; then
    echo
    echo "Per request under \`valgrind --tool=callgrind --cache-sim=yes\` (simulated caches; a fresh process, counters zeroed after a 2 s warm-up, one ${CG_SECONDS}s wrk run):"
    echo
    echo "| contender | conns | instructions | D1 misses | LL misses |"
    echo "|---|---:|---:|---:|---:|"
    for c in "${CALLGRIND_CONNS[@]}"; do
        for key in "${CALLGRIND_KEYS[@]}"; do
            read -r ir d1 ll <"$WORK/results/$key.c$c.cg"
            printf '| %s | %s | %s | %s | %s |\n' "${LABEL[$key]}" "$c" "$ir" "$d1" "$ll"
        done
    done
fi
for key in "${PROFILED[@]}"; do
    echo
    echo "### Where the CPU goes: ${LABEL[$key]}, 32 connections (perf, flat)"
    echo
    echo '```'
    cat "$WORK/$key.dso"
    echo
    cat "$WORK/$key.symbols"
    echo '```'
done

# The chart: req/s and p99 by connection count, one line per contender.
for key in "${KEYS[@]}"; do
    for c in $CONNS; do
        printf '%s\t%s\t%s\t%s\t%s\n' "$key" "${LABEL[$key]}" "$c" "${MED[$key.$c.1]}" "${MED[$key.$c.3]}"
    done
done >"$WORK/chart.tsv"
mkdir -p "$(dirname "$SVG")"
python3 "$ROOT/benches/chart.py" "$WORK/chart.tsv" "compare.sh, $STARTED, medians of $ROUNDS rounds" >"$SVG" ||
    die "could not draw the chart"
log "chart written to $SVG"

TOTAL_ERRORS="$(cat "$WORK"/results/* | awk 'NF == 7 {n += $7} END {print n + 0}')" # not *.cg
[ "$TOTAL_ERRORS" -eq 0 ] || { log "$TOTAL_ERRORS failed requests (non-2xx or socket errors) in the runs"; exit 1; }
