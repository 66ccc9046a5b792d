#!/usr/bin/env bash
# bench/twin.sh — commands end to end (application submit → device → result)
# and device shadow updates per second, from devices over MQTT and from
# applications over REST.  Mosquitto, driven by the same client program doing
# the MQTT part of the same exchanges (an application client publishes a
# request to a device topic, the device answers on a reply topic, the
# application waits for the answer), is printed beside it as a broker-only
# reference: it routes messages; it does not store a command or a shadow
# (Drover stores every state change in SQLite with an fsync before it answers),
# so it is not the same work.
#
#   bench/twin.sh              full run (about 5 minutes on a quiet machine, up
#                              to twice that when busy runs are repeated)
#   QUICK=1 bench/twin.sh      4 s windows, to check the script
#   ONLY=drover bench/twin.sh  just some parts: mosquitto drover
#
# What it runs (client: bench/twin/twin.mjs, node; the DEVICES device
# connections in a worker thread, bench/twin/devices.mjs, on the raw MQTT
# 3.1.1 codec of bench/live/mqtt.mjs):
#   1. mosquitto  Mosquitto with a TCP listener; MOSQ_RUNS (default commands
#                 with 1, 32 and 128 in flight, shadow updates with 1 and 4 in
#                 flight per device) where one MQTT client plays the platform.
#   2. drover     Drover: tenant "twinbench" with DEVICES devices (secrets),
#                 every device connected and subscribed to its command
#                 requests and shadow answers; DROVER_RUNS (default the same
#                 as Mosquitto's, plus commands sent asynchronously and
#                 followed with a long poll, and REST PATCHes of the classic
#                 shadow's desired with 1 and 32 in flight).
# Run kinds (twin.mjs has the details): cmd:C (C commands in flight,
# POST .../commands with wait_ms 10000, done at the 200 "succeeded"),
# cmdasync:C (202, then GET ?wait_ms=10000), mqtt:W (W shadow updates in
# flight per device, publish → update/accepted), rest:C (PATCH
# .../shadows/classic, C in flight).  Rate = exchanges completed in the
# DURATION window after WARMUP; latency p50/p99 of those started in it.
# Around each window: server and client CPU, and Drover's /metrics twin
# counters (drover_twin_batches_total: updates per service transaction).
#
# Environment: BUILD_DIR (default build/rel; NO_BUILD=1 uses the drover in it
# as it is), DEVICES (100), WARMUP (3 s), DURATION (20 s), DRAIN (15 s),
# DROVER_RUNS, MOSQ_RUNS, ONLY, DROVER_SET ("key=value ..." added to drover
# serve), KEEP=DIR keeps every JSON and log, BUDGET (seconds, default 900;
# checked between parts), WAIT_QUIET=SECONDS (before the start and before
# each run, wait that long at most for other load to go), RETRY_BUSY (1: a run
# during which other processes took over 25 % of a CPU is run once more, the
# less disturbed one kept), ports MOSQ_PORT
# (18850), DROVER_HTTP_PORT (18852), DROVER_MQTT_PORT (18853).
#
# Only loopback: every server listens on 127.0.0.1.  Everything started here
# is stopped on exit and the work directory removed.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build/rel}
DROVER=$BUILD_DIR/drover
CLIENT=$ROOT/bench/twin/twin.mjs
REPORT=$ROOT/bench/twin/report.py
PY=/usr/bin/python3
NODE=${NODE:-node}
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    WARMUP=${WARMUP:-1} DURATION=${DURATION:-4}
else
    WARMUP=${WARMUP:-3} DURATION=${DURATION:-20}
fi
DRAIN=${DRAIN:-15}
DEVICES=${DEVICES:-100}
DROVER_RUNS=${DROVER_RUNS:-cmd:1,cmd:32,cmd:128,cmdasync:32,mqtt:1,mqtt:4,rest:1,rest:32}
MOSQ_RUNS=${MOSQ_RUNS:-cmd:1,cmd:32,cmd:128,mqtt:1,mqtt:4}
ONLY=${ONLY:-}
BUDGET=${BUDGET:-900}
RETRY_BUSY=${RETRY_BUSY:-1}
MOSQ_PORT=${MOSQ_PORT:-18850}
DROVER_HTTP_PORT=${DROVER_HTTP_PORT:-18852}
DROVER_MQTT_PORT=${DROVER_MQTT_PORT:-18853}
WORK=$(mktemp -d /tmp/drover-twin.XXXXXX)
START=$SECONDS
SERVER_PID=
CLIENT_PID=
NOTES=()

# The command line and the environment it ran with, for the report.
INVOKED="$0${*:+ $*}"
ENV_SET=
for v in BUILD_DIR NO_BUILD QUICK DEVICES WARMUP DURATION DRAIN DROVER_RUNS MOSQ_RUNS ONLY DROVER_SET KEEP \
    BUDGET WAIT_QUIET RETRY_BUSY MOSQ_PORT DROVER_HTTP_PORT DROVER_MQTT_PORT NODE; do
    # Only what the caller set, not the defaults filled in above.
    if printenv "$v" >/dev/null; then ENV_SET+="$v=$(printenv "$v") "; fi
done

BENCH=twin.sh
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



# client OUT args...: one twin.mjs step in the background (so a signal
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

# ok FILE: the client's JSON says ok
ok() { "$PY" -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1])).get("ok") else 1)' "$1" 2>/dev/null; }
# fail NAME WHY: a part that could not run, as a JSON file the report reads
fail() { "$PY" -c 'import json, sys; print(json.dumps({"ok": False, "error": sys.argv[1]}))' "$2" >"$WORK/$1.json"; }

# -- setup --------------------------------------------------------------------

for p in "$MOSQ_PORT" "$DROVER_HTTP_PORT" "$DROVER_MQTT_PORT"; do
    port_busy "$p" && die "port $p is in use"
done
[ -x "$PY" ] || die "no $PY"
command -v "$NODE" >/dev/null || die "node is not installed"

check_quiet

RUN_ARGS=(--devices "$DEVICES" --warmup "$WARMUP" --duration "$DURATION" --drain "$DRAIN"
          --wait-quiet "${WAIT_QUIET:-0}" --retry-busy "$RETRY_BUSY")

# -- 1. Mosquitto (broker-only reference) ---------------------------------------

MOSQ_VERSION=-
MOSQ_CONF=
run_mosquitto() {
    command -v mosquitto >/dev/null || { fail mosquitto "not installed (apt-get install mosquitto)"; return; }
    MOSQ_VERSION=$(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}')
    # set_tcp_nodelay: Nagle otherwise holds small messages back (bench/broker.sh).
    MOSQ_CONF="listener $MOSQ_PORT 127.0.0.1; allow_anonymous true; persistence false; set_tcp_nodelay true"
    tr ';' '\n' <<<"$MOSQ_CONF" | sed 's/^ //' >"$WORK/mosquitto.conf"
    mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
    SERVER_PID=$!
    if ! wait_port "$MOSQ_PORT" "$SERVER_PID"; then
        fail mosquitto "did not start: $(tail -2 "$WORK/mosquitto.log" | tr '\n' ' ')"
        stop_server
        return
    fi
    log "== Mosquitto $MOSQ_VERSION: $DEVICES devices, runs $MOSQ_RUNS"
    client mosquitto run --broker mosquitto --mqtt-port "$MOSQ_PORT" --pid "$SERVER_PID" \
        --runs "$MOSQ_RUNS" "${RUN_ARGS[@]}"
    stop_server
}

# -- 2. Drover --------------------------------------------------------------------

DROVER_COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo ?)
DROVER_CMD=
DROVER_EXTRA=()

build_drover() {
    [ "${NO_BUILD:-0}" = 1 ] && return 0
    log "== building Drover (Release) in $BUILD_DIR"
    # As in live.sh: gcc 12's -O2/-O3 flow warnings can be false positives;
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

start_drover() {
    local args=(serve --data-dir "$WORK/drover" --set "mqtt.listen=127.0.0.1:$DROVER_MQTT_PORT"
                --set mqtt.tls_listen= --set https.listen= --set "http.listen=127.0.0.1:$DROVER_HTTP_PORT"
                --set log.format=text "${DROVER_EXTRA[@]}")
    DROVER_CMD="drover ${args[*]}"
    "$DROVER" "${args[@]}" >>"$WORK/drover.log" 2>&1 &
    SERVER_PID=$!
    wait_port "$DROVER_HTTP_PORT" "$SERVER_PID" && wait_port "$DROVER_MQTT_PORT" "$SERVER_PID"
}

run_drover() {
    build_drover || { fail drover "build failed: $(grep -m1 'error:' "$WORK/build.log" | cut -c1-200)"; return; }
    [ -x "$DROVER" ] || { fail drover "no $DROVER"; return; }
    local keys
    keys=$("$DROVER" config --list 2>/dev/null | grep -oE '^[a-z_.]+ =' | cut -d' ' -f1)
    grep -qx twin.max_pending <<<"$keys" || { fail drover "this build has no twin service (no twin.max_pending key)"; return; }
    DROVER_EXTRA=()
    # One token sends every request; the peer has no request limit.
    grep -qx api.rate_limit_rps <<<"$keys" && DROVER_EXTRA+=(--set api.rate_limit_rps=0)
    local kv
    for kv in ${DROVER_SET:-}; do DROVER_EXTRA+=(--set "$kv"); done
    rm -rf "$WORK/drover"
    start_drover || { fail drover "did not start: $(tail -2 "$WORK/drover.log" | tr '\n' ' ')"; return; }
    local token=''
    for _ in $(seq 100); do
        token=$(grep -oE '^\s*DROVER_TOKEN=drv_[A-Za-z0-9]+' "$WORK/drover.log" | head -1 | sed 's/.*=//')
        [ -n "$token" ] && break
        sleep 0.05
    done
    [ -n "$token" ] || { fail drover "no DROVER_TOKEN line in its log"; return; }
    export DROVER_TOKEN=$token # the client reads it from the environment, not argv
    TWIN_SECRET=$(head -c 18 /dev/urandom | base64 | tr '+/' 'xy')
    export TWIN_SECRET
    log "== Drover $DROVER_COMMIT: setup (tenant twinbench, $DEVICES devices with secrets)"
    client drover-setup setup --http-port "$DROVER_HTTP_PORT" --devices "$DEVICES"
    if ! ok "$WORK/drover-setup.json"; then
        cp "$WORK/drover-setup.json" "$WORK/drover.json"
        return
    fi
    if over_budget; then fail drover "skipped: ${BUDGET}s budget reached"; return; fi
    log "== Drover: $DEVICES devices (Argon2id each to connect), runs $DROVER_RUNS"
    client drover run --broker drover --mqtt-port "$DROVER_MQTT_PORT" --http-port "$DROVER_HTTP_PORT" \
        --pid "$SERVER_PID" --runs "$DROVER_RUNS" "${RUN_ARGS[@]}"
    DATA_FS=$(df -T "$WORK" 2>/dev/null | awk 'NR == 2 {print $2 " on " $1}')
    stop_server
}

DATA_FS="?"
want mosquitto && run_mosquitto
if want drover; then
    if over_budget; then fail drover "skipped: ${BUDGET}s budget reached"; else run_drover; fi
    stop_server
fi

# -- report -------------------------------------------------------------------

over_budget && NOTES+=("the ${BUDGET}s time budget was reached: later parts may be missing.")
[ "$BUSY" -gt 10 ] && NOTES+=("WARNING: the machine was ${BUSY}% busy before the run ($TOP): numbers are skewed.")
echo
echo "Shadows and commands, $DEVICES devices, ${WARMUP} s warm-up + ${DURATION} s measured per run;" \
    "Drover $DROVER_COMMIT, Mosquitto $MOSQ_VERSION; $(nproc) CPU(s), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')," \
    "kernel $(uname -r), data dir on $DATA_FS, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "    ${ENV_SET}${INVOKED}"
BUILD_TYPE=$(grep -m1 '^CMAKE_BUILD_TYPE:' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null | cut -d= -f2)
[ -n "$DROVER_CMD" ] && echo "    $DROVER_CMD    # data dir in a temporary directory; $BUILD_DIR, ${BUILD_TYPE:-?} build"
[ -n "$MOSQ_CONF" ] && echo "    mosquitto -c mosquitto.conf    # $MOSQ_CONF"
echo
"$PY" "$REPORT" --dir "$WORK"
for n in "${NOTES[@]}"; do echo "- $n"; done
echo "- total time $((SECONDS - START)) s"
