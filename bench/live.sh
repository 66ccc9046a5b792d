#!/usr/bin/env bash
# bench/live.sh — live streams: MQTT publish → WebSocket/SSE frame latency
# at 10,000 msg/s, and how many idle stream connections one Drover process
# holds.  Mosquitto's MQTT-over-WebSocket listener, driven by the same client
# program at the same rate, is printed beside it as a broker-only reference
# (it routes MQTT messages; it does not decode, store or filter telemetry, so
# it is not the same work).
#
#   bench/live.sh              full run (about 9 minutes on a quiet machine, up
#                              to twice that when runs are repeated; BUDGET caps it)
#   QUICK=1 bench/live.sh      8 s windows, idle up to 5,000: checks the script
#   ONLY="stream idle" bench/live.sh   just some parts: mosquitto stream idle
#
# What it runs (client: bench/live/live.mjs, node + the `ws` package from
# tests/js/node_modules; one process, publishers in a worker thread):
#   1. mosquitto  Mosquitto with a TCP and a websockets listener: 1,000
#                 publishers (TCP) → 1,000 MQTT-over-WebSocket subscribers, one
#                 topic each, QoS 0 then QoS 1; then 10 subscribers to
#                 devices/+/telemetry (fan-out, 100k frames/s).
#   2. stream     Drover: tenant "bench" with 1,000 devices (secrets), the
#                 devices publish over MQTT at 10 msg/s each; DROVER_RUNS
#                 (default: WebSocket stream QoS 0, QoS 1, fan-out 10 × whole
#                 tenant, SSE QoS 0, and Drover's own MQTT over WebSocket);
#                 then BATCH_RUNS (default: stream and MQTT/WS QoS 0) again on
#                 a restarted Drover with tsdb.durability=batch (no fdatasync
#                 before a message goes on), to show what the fsync costs.
#   3. idle       a fresh Drover process per transport (same data dir): idle
#                 WebSocket (one subscription each) then SSE (device=) stream
#                 connections in IDLE_STEPS up to IDLE_TARGET; server VmRSS per step;
#                 then held IDLE_HOLD s (25: past one 20 s heartbeat) and counted again.
# Payload {"run":R,"seq":N,"sent":T}: T is CLOCK_MONOTONIC ns at the write;
# latency = receive time at the subscriber − T, same machine clock.
#
# Environment: BUILD_DIR (default build/rel; NO_BUILD=1 uses the drover in it
# as it is), DEVICES (1000), RATE (msg/s per device, 10), FANOUT (10),
# WARMUP (5 s), DURATION (30 s), DROVER_RUNS, MOSQ_RUNS, BATCH_RUNS (empty:
# none), IDLE_TARGET (19000),
# IDLE_STEPS, DROVER_SET ("key=value ..." added to drover serve), KEEP=DIR
# keeps every JSON and log, BUDGET (seconds, default 1800; checked between
# parts), WAIT_QUIET=SECONDS (before the start and before each latency run,
# wait that long at most for other load to go), RETRY_BUSY (1: a latency run
# during which other processes took over 25 % of a core is run once more),
# ports MOSQ_PORT (18840), MOSQ_WS_PORT (18841), DROVER_HTTP_PORT (18842),
# DROVER_MQTT_PORT (18843).
#
# Only loopback: every server listens on 127.0.0.1.  Everything started here
# is stopped on exit and the work directory removed.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build/rel}
DROVER=$BUILD_DIR/drover
CLIENT=$ROOT/bench/live/live.mjs
REPORT=$ROOT/bench/live/report.py
PY=/usr/bin/python3
NODE=${NODE:-node}
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    WARMUP=${WARMUP:-2} DURATION=${DURATION:-8} IDLE_TARGET=${IDLE_TARGET:-5000}
    IDLE_STEPS=${IDLE_STEPS:-1000,5000} IDLE_HOLD=${IDLE_HOLD:-3}
else
    WARMUP=${WARMUP:-5} DURATION=${DURATION:-30} IDLE_TARGET=${IDLE_TARGET:-19000}
    IDLE_STEPS=${IDLE_STEPS:-1000,2000,5000,10000,15000,19000} IDLE_HOLD=${IDLE_HOLD:-25}
fi
DEVICES=${DEVICES:-1000}
RATE=${RATE:-10}
FANOUT=${FANOUT:-10}
DROVER_RUNS=${DROVER_RUNS:-stream:0:device,stream:1:device,stream:0:tenant,sse:0:device,mqttws:0:device}
MOSQ_RUNS=${MOSQ_RUNS:-mqttws:0:device,mqttws:1:device,mqttws:0:tenant}
BATCH_RUNS=${BATCH_RUNS-stream:0:device,mqttws:0:device}
ONLY=${ONLY:-}
BUDGET=${BUDGET:-1800}
RETRY_BUSY=${RETRY_BUSY:-1}
MOSQ_PORT=${MOSQ_PORT:-18840}
MOSQ_WS_PORT=${MOSQ_WS_PORT:-18841}
DROVER_HTTP_PORT=${DROVER_HTTP_PORT:-18842}
DROVER_MQTT_PORT=${DROVER_MQTT_PORT:-18843}
WORK=$(mktemp -d /tmp/drover-live.XXXXXX)
START=$SECONDS
SERVER_PID=
CLIENT_PID=
NOTES=()

BENCH=live.sh
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"


cleanup() {
    if [ -n "$CLIENT_PID" ]; then kill -TERM "$CLIENT_PID" 2>/dev/null; wait "$CLIENT_PID" 2>/dev/null; fi
    stop_server
    if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$WORK"/*.json "$WORK"/*.log "$KEEP"/ 2>/dev/null; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM



# client OUT args...: one live.mjs step in the background (so a signal
# reaches the traps at once); its JSON lands in $WORK/OUT.json.
client() {
    local out=$WORK/$1.json
    shift
    "$NODE" "$CLIENT" "$@" --out "$out" &
    CLIENT_PID=$!
    wait "$CLIENT_PID"
    CLIENT_PID=
    [ -s "$out" ] || echo '{"ok":false,"error":"client produced no result"}' >"$out"
}

# get FILE path.to.field [default]
get() {
    "$PY" - "$1" "$2" "${3:--}" <<'EOF'
import json, sys
try:
    v = json.load(open(sys.argv[1]))
    for k in sys.argv[2].split("."):
        v = v[int(k)] if isinstance(v, list) else v[k]
    print(str(v).lower() if isinstance(v, bool) else v)
except Exception:
    print(sys.argv[3])
EOF
}
ok() { [ "$(get "$1" ok false)" = true ]; }
why() { get "$1" error "?" | tr '\n' ' ' | cut -c1-300; }
# fail NAME WHY: a part that could not run, as a JSON file the report reads
fail() { "$PY" -c 'import json, sys; print(json.dumps({"ok": False, "error": sys.argv[1]}))' "$2" >"$WORK/$1.json"; }

# -- setup --------------------------------------------------------------------

for p in "$MOSQ_PORT" "$MOSQ_WS_PORT" "$DROVER_HTTP_PORT" "$DROVER_MQTT_PORT"; do
    port_busy "$p" && die "port $p is in use"
done
[ -x "$PY" ] || die "no $PY"
command -v "$NODE" >/dev/null || die "node is not installed"
[ -r "$ROOT/tests/js/node_modules/ws/package.json" ] || die "no ws package: (cd tests/js && npm ci)"
# Up to IDLE_TARGET stream connections on each side, plus the server's own files.
ulimit -n "$(ulimit -Hn)" 2>/dev/null
FD_LIMIT=$(ulimit -n)
[ "$FD_LIMIT" -lt $((IDLE_TARGET + 200)) ] &&
    NOTES+=("the open-file limit is $FD_LIMIT: fewer than IDLE_TARGET=$IDLE_TARGET idle connections can be attempted.")

check_quiet

# Before each run: wait up to WAIT_QUIET s for the machine to calm down; a run
# during which other processes took over 25 % of a core is repeated RETRY_BUSY times.
LAT_ARGS=(--devices "$DEVICES" --rate "$RATE" --fanout "$FANOUT" --warmup "$WARMUP"
          --duration "$DURATION" --wait-quiet "${WAIT_QUIET:-0}" --retry-busy "$RETRY_BUSY")

# -- 1. Mosquitto, MQTT over WebSocket (broker-only reference) -----------------

MOSQ_VERSION=-
run_mosquitto() {
    command -v mosquitto >/dev/null || { fail mosquitto "not installed (apt-get install mosquitto)"; return; }
    MOSQ_VERSION=$(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}')
    # A TCP listener for the publishers, a websockets one for the subscribers
    # (2.0.11 will not start with only a websockets listener anyway).
    # set_tcp_nodelay: Nagle otherwise holds small messages back (bench/broker.sh).
    cat >"$WORK/mosquitto.conf" <<EOF
listener $MOSQ_PORT 127.0.0.1
allow_anonymous true
persistence false
set_tcp_nodelay true
listener $MOSQ_WS_PORT 127.0.0.1
protocol websockets
EOF
    mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
    SERVER_PID=$!
    if ! wait_port "$MOSQ_PORT" "$SERVER_PID" || ! wait_port "$MOSQ_WS_PORT" "$SERVER_PID"; then
        if grep -qi "websockets support not available\|unknown.*websockets" "$WORK/mosquitto.log"; then
            fail mosquitto "this Mosquitto has no websockets support compiled in: reference skipped"
        else
            fail mosquitto "did not start: $(tail -2 "$WORK/mosquitto.log" | tr '\n' ' ')"
        fi
        stop_server
        return
    fi
    log "== Mosquitto $MOSQ_VERSION: MQTT over WebSocket, $DEVICES publishers x $RATE msg/s"
    client mosquitto latency --broker mosquitto --mqtt-port "$MOSQ_PORT" --ws-port "$MOSQ_WS_PORT" \
        --pid "$SERVER_PID" --runs "$MOSQ_RUNS" "${LAT_ARGS[@]}"
    stop_server
}

# -- 2, 3. Drover ----------------------------------------------------------------

DROVER_COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo ?)
KEYS=
has_key() { grep -qx "$1" <<<"$KEYS"; }
DROVER_EXTRA=()

start_drover() {
    "$DROVER" serve --data-dir "$WORK/drover" --set "mqtt.listen=127.0.0.1:$DROVER_MQTT_PORT" \
        --set mqtt.tls_listen= --set https.listen= --set "http.listen=127.0.0.1:$DROVER_HTTP_PORT" \
        --set log.format=text "${DROVER_EXTRA[@]}" >>"$WORK/drover.log" 2>&1 &
    SERVER_PID=$!
    wait_port "$DROVER_HTTP_PORT" "$SERVER_PID" && wait_port "$DROVER_MQTT_PORT" "$SERVER_PID"
}

build_drover() {
    [ "${NO_BUILD:-0}" = 1 ] && return 0
    log "== building Drover (Release) in $BUILD_DIR"
    # As in tsdb.sh: gcc 12's -O2/-O3 flow warnings can be false positives;
    # a second try keeps them warnings.
    local flags
    for flags in "" "-Wno-error=maybe-uninitialized -Wno-error=format-truncation"; do
        if cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release "-DCMAKE_C_FLAGS=$flags" \
            >"$WORK/build.log" 2>&1 &&
            cmake --build "$BUILD_DIR" -j"$(nproc)" --target drover >>"$WORK/build.log" 2>&1; then
            [ -n "$flags" ] && NOTES+=("Drover was built with CMAKE_C_FLAGS=$flags (the plain Release build failed).")
            return 0
        fi
        [ -z "$flags" ] && log "   Release build failed; retrying with the flow warnings not errors"
    done
    return 1
}

prepare_drover() {
    build_drover || { fail drover-setup "build failed: $(grep -m1 'error:' "$WORK/build.log" | cut -c1-200)"; return 1; }
    [ -x "$DROVER" ] || { fail drover-setup "no $DROVER"; return 1; }
    KEYS=$("$DROVER" config --list 2>/dev/null | grep -oE '^[a-z_.]+ =' | cut -d' ' -f1)
    DROVER_EXTRA=()
    # One token opens every stream connection; the peer has no request limit.
    has_key api.rate_limit_rps && DROVER_EXTRA+=(--set api.rate_limit_rps=0)
    if has_key stream.max_connections; then
        DROVER_EXTRA+=(--set "stream.max_connections=$((IDLE_TARGET + 1000))")
    else
        NOTES+=("\`drover config --list\` has no stream.max_connections: this build may have no live stream.")
    fi
    local kv
    for kv in ${DROVER_SET:-}; do DROVER_EXTRA+=(--set "$kv"); done
    rm -rf "$WORK/drover"
    start_drover || { fail drover-setup "did not start: $(tail -2 "$WORK/drover.log" | tr '\n' ' ')"; return 1; }
    local token=''
    for _ in $(seq 100); do
        token=$(grep -oE '^\s*DROVER_TOKEN=drv_[A-Za-z0-9]+' "$WORK/drover.log" | head -1 | sed 's/.*=//')
        [ -n "$token" ] && break
        sleep 0.05
    done
    [ -n "$token" ] || { fail drover-setup "no DROVER_TOKEN line in its log"; return 1; }
    export DROVER_TOKEN=$token # the client reads it from the environment, not argv
    LIVE_SECRET=$(head -c 18 /dev/urandom | base64 | tr '+/' 'xy')
    export LIVE_SECRET
    log "== Drover $DROVER_COMMIT: setup (tenant bench, $DEVICES devices with secrets; Argon2id, about 30 ms each)"
    client drover-setup setup --http-port "$DROVER_HTTP_PORT" --devices "$DEVICES"
    ok "$WORK/drover-setup.json" || return 1
}

run_drover_latency() {
    log "== Drover: $DEVICES devices x $RATE msg/s → live stream subscribers (device connects take Argon2id each)"
    client drover latency --broker drover --mqtt-port "$DROVER_MQTT_PORT" --http-port "$DROVER_HTTP_PORT" \
        --pid "$SERVER_PID" --runs "$DROVER_RUNS" "${LAT_ARGS[@]}"
}

# The same load with tsdb.durability=batch: how much of the latency is the
# fdatasync that sync durability puts before every acknowledgement.
run_drover_batch() {
    [ -n "$BATCH_RUNS" ] || return 0
    has_key tsdb.durability || { NOTES+=("no tsdb.durability key: batch rows skipped."); return 0; }
    stop_server
    local saved=("${DROVER_EXTRA[@]}")
    DROVER_EXTRA+=(--set tsdb.durability=batch)
    if start_drover; then
        log "== Drover with tsdb.durability=batch: $BATCH_RUNS"
        client drover-batch latency --broker drover --mqtt-port "$DROVER_MQTT_PORT" \
            --http-port "$DROVER_HTTP_PORT" --pid "$SERVER_PID" --runs "$BATCH_RUNS" "${LAT_ARGS[@]}"
    else
        fail drover-batch "drover did not restart: $(tail -2 "$WORK/drover.log" | tr '\n' ' ')"
    fi
    stop_server
    DROVER_EXTRA=("${saved[@]}")
}

run_drover_idle() {
    local t
    for t in ws sse; do
        if over_budget; then fail "idle-$t" "skipped: ${BUDGET}s budget reached"; continue; fi
        stop_server
        start_drover || { fail "idle-$t" "drover did not restart: $(tail -2 "$WORK/drover.log" | tr '\n' ' ')"; continue; }
        sleep 1
        log "== Drover: idle $t stream connections, steps $IDLE_STEPS"
        client "idle-$t" idle --transport "$t" --http-port "$DROVER_HTTP_PORT" --pid "$SERVER_PID" \
            --devices "$DEVICES" --steps "$IDLE_STEPS" --hold "$IDLE_HOLD"
    done
}

want mosquitto && run_mosquitto
if want stream || want idle; then
    if prepare_drover; then
        if want stream; then
            if over_budget; then fail drover "skipped: ${BUDGET}s budget reached"; else run_drover_latency; fi
            if over_budget; then fail drover-batch "skipped: ${BUDGET}s budget reached"; else run_drover_batch; fi
        fi
        want idle && run_drover_idle
    fi
    stop_server
fi
DROVER_DURABILITY=$(grep -A0 -E '^tsdb.durability =' <("$DROVER" config --list 2>/dev/null) | awk '{print $3}')

# -- report -------------------------------------------------------------------

over_budget && NOTES+=("the ${BUDGET}s time budget was reached: later parts may be missing.")
[ "$BUSY" -gt 10 ] && NOTES+=("WARNING: the machine was ${BUSY}% busy before the run ($TOP): numbers are skewed.")
echo
echo "Live streams, $DEVICES devices × $RATE msg/s = $((DEVICES * RATE)) msg/s, ${WARMUP} s warm-up + ${DURATION} s measured;" \
    "Drover $DROVER_COMMIT, Mosquitto $MOSQ_VERSION; $(nproc) CPU(s), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')," \
    "kernel $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ)"
echo
"$PY" "$REPORT" --dir "$WORK" --durability "${DROVER_DURABILITY:-?}" --drover-set "${DROVER_SET:-}"
for n in "${NOTES[@]}"; do echo "- $n"; done
echo "- total time $((SECONDS - START)) s"
