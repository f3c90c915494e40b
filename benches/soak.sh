#!/usr/bin/env bash
# Soak (issue 9): a million requests of the seed's polling flow through the sidecar (release
# build, fix mode) in front of the ledger-keeping stand-in of the legacy backend, injection on.
# Passes when no request failed and every answer a client saw was consistent, the sidecar's
# counters equal the stand-in's ledger exactly, and the sidecar's RSS at the end is within 10% of
# its RSS after the first 100,000 requests. The load generator and the judge are
# benches/soak_client.py.
#
# Usage: benches/soak.sh [--requests 1000000] [--users 16] [--inject-rate 0.3] [--quick]
#   --quick   100,000 requests with an RSS checkpoint every 10,000 (a rehearsal, not the soak)
# Env:
#   SOAK_TRACKER_CAPACITY   the sidecar's [tracker] capacity (default 5000, see below)
#   SIDECAR_BIN=PATH        use this binary instead of building the release binary here
#   KEEP_WORK=1             keep the work directory (config, sidecar log)
#
# The sidecar runs its default config but for its addresses and the tracker's capacity: 5000
# entries, so the task memory is full and evicting long before the first checkpoint and the RSS
# comparison looks for leaks rather than watching a bounded cache fill up. (The run creates a
# task per ~10 requests and the tracker keeps an entry per task and tracked route, two here: the
# default capacity of 100,000 fills at about 500,000 requests.)
# Everything listens on 127.0.0.1; everything started here is stopped by PID on exit.
# Expect 2.5 to 5 minutes for a million requests on 2 cores (the Python stand-in is the
# bottleneck), plus the release build.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
REQUESTS=1000000
CHECKPOINT=100000
USERS=16
INJECT=0.3
CAPACITY="${SOAK_TRACKER_CAPACITY:-5000}"
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) REQUESTS="$2"; shift ;;
        --users) USERS="$2"; shift ;;
        --inject-rate) INJECT="$2"; shift ;;
        --quick) REQUESTS=100000; CHECKPOINT=10000 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "soak.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
    esac
    shift
done

log() { echo "soak.sh: $*" >&2; }
die() { log "$*"; exit 1; }
for tool in python3 curl; do
    command -v "$tool" >/dev/null || die "$tool not found"
done

source "$ROOT/benches/lib.sh"
bench_workdir soak

bench_sidecar_binary

# The stand-in: its first stdout line is "LISTENING <port>".
python3 "$ROOT/tests/standin/legacy_backend.py" --host 127.0.0.1 --port 0 \
    --inject-rate "$INJECT" --seed 9 >"$WORK/standin.out" 2>"$WORK/standin.err" &
PIDS+=("$!")
STANDIN_PORT=""
for _ in $(seq 1 100); do
    STANDIN_PORT="$(awk '$1 == "LISTENING" {print $2}' "$WORK/standin.out")"
    [ -n "$STANDIN_PORT" ] && break
    sleep 0.1
done
[ -n "$STANDIN_PORT" ] || die "the stand-in did not start: $(cat "$WORK/standin.err")"

cat >"$WORK/sidecar.toml" <<CONF
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
upstream = "http://127.0.0.1:$STANDIN_PORT"

[tracker]
capacity = $CAPACITY
CONF
(unset RUST_LOG; NO_COLOR=1 exec "$BIN" run --config "$WORK/sidecar.toml" >>"$WORK/sidecar.log" 2>&1) &
SIDECAR_PID=$!
PIDS+=("$SIDECAR_PID")
PROXY=""
for _ in $(seq 1 100); do
    PROXY="$(grep -o 'proxy=[0-9.:]*' "$WORK/sidecar.log" | head -1 | cut -d= -f2 || true)"
    [ -n "$PROXY" ] && break
    kill -0 "$SIDECAR_PID" 2>/dev/null || break
    sleep 0.1
done
[ -n "$PROXY" ] || { cat "$WORK/sidecar.log" >&2; die "the sidecar did not start"; }
ADMIN="$(grep -o 'admin=[0-9.:]*' "$WORK/sidecar.log" | head -1 | cut -d= -f2)"
curl -fsS --max-time 5 -o /dev/null "http://$PROXY/health" || die "no answer through the sidecar"

log "$REQUESTS requests, $USERS users, injection $INJECT, tracker capacity $CAPACITY; $(nproc) CPUs"
# One request above went through the sidecar already (/health); the client counts its own.
set +e
timeout 7200 python3 "$ROOT/benches/soak_client.py" --proxy "$PROXY" --admin "$ADMIN" \
    --standin "127.0.0.1:$STANDIN_PORT" --sidecar-pid "$SIDECAR_PID" --requests "$REQUESTS" \
    --users "$USERS" --checkpoint "$CHECKPOINT" --probe-requests 1
status=$?
set -e
if [ -n "${SIDECAR_BIN:-}" ]; then
    REVISION="$SIDECAR_BIN (built $(date -u -r "$BUILT" '+%Y-%m-%d %H:%M UTC'))"
else
    REVISION="$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
fi
echo "sidecar:    $REVISION, default logging wrote $(du -m "$WORK/sidecar.log" | cut -f1) MB, CPU $(awk -v t="$(getconf CLK_TCK)" '{sub(/.*\) /, ""); split($0, f, " "); printf "%.0f s", (f[12] + f[13]) / t}' "/proc/$SIDECAR_PID/stat")"
exit "$status"
