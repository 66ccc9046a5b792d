#!/usr/bin/env bash
# bench/broker.sh — Mosquitto and Drover, one after the other, same machine,
# identical `drover bench` load; prints a table of rates, ratios, p99,
# broker CPU per message and memory per idle connection.
#
#   bench/broker.sh            full run (about 6-8 minutes, capped at 10)
#   QUICK=1 bench/broker.sh    shorter windows, for checking the script
#   ONLY=tls bench/broker.sh   just some rows: a list of fanin cpu qos1 idle
#                              idle19k workers connect tls
#
# Environment: BUILD_DIR (default build/rel), MOSQ_PORT (18830), DROVER_PORT
# (18831), MOSQ_TLS_PORT (18832), DROVER_TLS_PORT (18833), KEEP=DIR to keep
# every run's JSON, BUDGET (seconds, default 570).
#
# Only loopback: both brokers listen on 127.0.0.1 and the load generator
# connects only there.  Everything started here is stopped on exit.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build/rel}
MOSQ_PORT=${MOSQ_PORT:-18830}
DROVER_PORT=${DROVER_PORT:-18831}
MOSQ_TLS_PORT=${MOSQ_TLS_PORT:-18832}
DROVER_TLS_PORT=${DROVER_TLS_PORT:-18833}
ONLY=${ONLY:-}
QUICK=${QUICK:-0}
BUDGET=${BUDGET:-570}
WORK=$(mktemp -d /tmp/drover-bench.XXXXXX)
DROVER=$BUILD_DIR/drover
BROKER_PID=
START=$SECONDS

if [ "$QUICK" = 1 ]; then WIN=2; WARM=0.5; LONG=3; else WIN=3; WARM=1; LONG=8; fi

BENCH=broker.sh
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_broker() {
    [ -n "$BROKER_PID" ] || return 0
    kill -TERM "$BROKER_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$BROKER_PID" 2>/dev/null
    wait "$BROKER_PID" 2>/dev/null
    BROKER_PID=
}

cleanup() {
    if [ -n "${BENCH_PID:-}" ]; then kill -TERM "$BENCH_PID" 2>/dev/null; wait "$BENCH_PID" 2>/dev/null; fi
    stop_broker
    if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$WORK"/*.json "$KEEP"/ 2>/dev/null; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# want ROW: is this row selected (ONLY unset, or ONLY lists it)?



# -- setup --------------------------------------------------------------------

command -v mosquitto >/dev/null || die "mosquitto is not installed (apt-get install mosquitto)"
command -v python3 >/dev/null || die "python3 is needed to read the JSON results"
ulimit -n "$(ulimit -Hn)" 2>/dev/null
for p in "$MOSQ_PORT" "$DROVER_PORT" "$MOSQ_TLS_PORT" "$DROVER_TLS_PORT"; do port_busy "$p" && die "port $p is in use"; done

check_quiet

log "== building Drover (Release) in $BUILD_DIR"
if ! { cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS= >/dev/null &&
       cmake --build "$BUILD_DIR" -j"$(nproc)" >"$WORK/build.log" 2>&1; }; then
    # gcc 12 at -O3 reported a false maybe-uninitialized in src/mqtt/encode.c before
    # 34e71c3; the code generated is the same with the warning left as a warning.
    log "   Release build failed; retrying with -Wno-error=maybe-uninitialized (see $WORK/build.log)"
    if ! { cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release \
               -DCMAKE_C_FLAGS=-Wno-error=maybe-uninitialized >/dev/null &&
           cmake --build "$BUILD_DIR" -j"$(nproc)" >"$WORK/build.log" 2>&1; }; then
        tail -20 "$WORK/build.log" >&2
        die "build failed"
    fi
fi
[ -x "$DROVER" ] || die "no $DROVER"

KEYS=$("$DROVER" config --list 2>/dev/null | grep -oE '^[a-z_.]+ =' | cut -d' ' -f1)
has_key() { grep -qx "$1" <<<"$KEYS"; }

# -- brokers ------------------------------------------------------------------

# make_certs: an ECDSA P-256 CA and a server certificate for localhost and
# 127.0.0.1 in $WORK/tls (ca.pem, server.pem, server.key).
TLS_DIR=$WORK/tls
make_certs() {
    [ -s "$TLS_DIR/server.pem" ] && return 0
    mkdir -p "$TLS_DIR"
    (
        cd "$TLS_DIR" || exit 1
        openssl ecparam -name prime256v1 -genkey -noout -out ca.key &&
        openssl req -x509 -new -key ca.key -sha256 -days 365 -subj "/CN=drover bench CA" \
            -out ca.pem &&
        openssl ecparam -name prime256v1 -genkey -noout -out server.key &&
        openssl req -new -key server.key -subj /CN=localhost -out server.csr &&
        printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' 'basicConstraints=CA:FALSE' \
            'keyUsage=digitalSignature' 'extendedKeyUsage=serverAuth' >server.ext &&
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 \
            -sha256 -extfile server.ext -out server.pem
    ) >"$WORK/certs.log" 2>&1 || die "openssl could not make the certificates: $(tail -3 "$WORK/certs.log")"
}

# start_mosquitto default|nodelay [tls]: with tls, a second listener speaks TLS on MOSQ_TLS_PORT
start_mosquitto() {
    local conf=$WORK/mosquitto-$1.conf
    {
        echo "listener $MOSQ_PORT 127.0.0.1"
        echo "allow_anonymous true"
        echo "persistence false"
        [ "$1" = nodelay ] && echo "set_tcp_nodelay true"
        if [ "${2:-}" = tls ]; then
            # Stay this user (as root Mosquitto drops to "mosquitto", which cannot read $WORK).
            echo "user $(id -un)"
            echo "listener $MOSQ_TLS_PORT 127.0.0.1"
            echo "cafile $TLS_DIR/ca.pem"
            echo "certfile $TLS_DIR/server.pem"
            echo "keyfile $TLS_DIR/server.key"
            echo "tls_version tlsv1.3"
        fi
    } >"$conf"
    mosquitto -c "$conf" >"$WORK/mosquitto.log" 2>&1 &
    BROKER_PID=$!
    wait_port "$MOSQ_PORT" "$BROKER_PID" 100 || die "mosquitto did not start: $(tail -3 "$WORK/mosquitto.log")"
    PORT=$MOSQ_PORT
    if [ "${2:-}" = tls ]; then
        wait_port "$MOSQ_TLS_PORT" "$BROKER_PID" 100 || die "mosquitto TLS did not start: $(tail -3 "$WORK/mosquitto.log")"
        PORT=$MOSQ_TLS_PORT
    fi
}

# start_drover [key=value ...]
start_drover() {
    local args=(serve --data-dir "$WORK/data" --set "mqtt.listen=127.0.0.1:$DROVER_PORT"
                --set log.level=warn)
    # Keep every other listener off: loopback MQTT only.
    for k in mqtt.tls_listen http.listen https.listen; do
        has_key "$k" && args+=(--set "$k=")
    done
    for kv in "$@"; do args+=(--set "$kv"); done
    rm -rf "$WORK/data"
    "$DROVER" "${args[@]}" >"$WORK/drover.log" 2>&1 &
    BROKER_PID=$!
    wait_port "$DROVER_PORT" "$BROKER_PID" 100 || die "drover did not start: $(tail -3 "$WORK/drover.log")"
    PORT=$DROVER_PORT
}

# -- load ---------------------------------------------------------------------

# run NAME bench-args... : one `drover bench` against the running broker; RUN_FILE is its JSON.
# It runs in the background and is waited for, so a signal reaches the traps at once.
BENCH_PID=
run() {
    local name=$1; shift
    RUN_FILE=$WORK/$name.json
    timeout 300 "$DROVER" bench --host 127.0.0.1 --port "$PORT" --broker-pid "$BROKER_PID" \
        --json "$@" >"$RUN_FILE" 2>"$RUN_FILE.err" &
    BENCH_PID=$!
    wait "$BENCH_PID"
    BENCH_PID=
    [ -s "$RUN_FILE" ] || echo '{"ok":false}' >"$RUN_FILE"
}

# get FILE path.to.field [default]
get() {
    python3 - "$1" "$2" "${3:--}" <<'EOF'
import json, sys
try:
    v = json.load(open(sys.argv[1]))
    for k in sys.argv[2].split("."):
        v = v[k]
    if isinstance(v, float):
        v = round(v, 3)
    print(str(v).lower() if isinstance(v, bool) else v)
except Exception:
    print(sys.argv[3])
EOF
}

# Does a fan-in step pass: delivered >= 99% of the target and p99 <= 10 ms?
passes() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    ok = d["delivered_rate"] >= 0.99 * float(sys.argv[2]) and d["latency_us"]["p99"] <= 10000
except Exception:
    ok = False
sys.exit(0 if ok else 1)
EOF
}

LADDER="25000 50000 100000 200000 400000 600000 800000 1000000 1250000 1500000 2000000 2500000 3000000 4000000 5000000"
# step NAME RATE: one fan-in run at RATE, retried once if it fails; sets STEP_FILE; status 0 if it passes
step() {
    local name=$1 rate=$2
    run "$name-$rate" --scenario fanin --clients 10 --qos 0 --size 16 --rate "$rate" \
        --duration "$WIN" --warmup "$WARM"
    STEP_FILE=$RUN_FILE
    if ! passes "$STEP_FILE" "$rate"; then
        log "   $rate msg/s: p99 $(get "$STEP_FILE" latency_us.p99) us, delivered $(get "$STEP_FILE" delivered_rate): retry"
        run "$name-$rate-retry" --scenario fanin --clients 10 --qos 0 --size 16 \
            --rate "$rate" --duration "$WIN" --warmup "$WARM"
        STEP_FILE=$RUN_FILE
        passes "$STEP_FILE" "$rate" || { log "   $rate msg/s: fails"; return 1; }
    fi
    log "   $rate msg/s: p99 $(get "$STEP_FILE" latency_us.p99) us: passes"
}

# search NAME: highest rate passing: up the ladder to the first failure, then two
# bisection steps between the last pass and that failure.  Sets BEST (rate),
# BEST_FILE (its JSON) and BEST_TOP=1 if even the top of the ladder passed.
search() {
    local name=$1 rate fail=0 mid
    BEST=0 BEST_FILE=$WORK/none.json BEST_TOP=0
    echo '{"ok":false}' >"$BEST_FILE"
    for rate in $LADDER; do
        over_budget && { log "   time budget reached"; return; }
        if ! step "$name" "$rate"; then fail=$rate; break; fi
        BEST=$rate BEST_FILE=$STEP_FILE
    done
    if [ "$fail" = 0 ]; then BEST_TOP=1; return; fi
    [ "$BEST" -gt 0 ] || return
    for _ in 1 2; do
        over_budget && return
        mid=$(((BEST + fail) / 2 / 1000 * 1000))
        if step "$name" "$mid"; then BEST=$mid BEST_FILE=$STEP_FILE; else fail=$mid; fi
    done
}

# -- table --------------------------------------------------------------------

ROWS=()
NOTES=()
fmt_rate() { python3 -c "import sys; v=float(sys.argv[1]); print(f'{v/1000:.1f}k' if v>=1000 else f'{v:.0f}')" "$1" 2>/dev/null || echo -; }
fmt_ms() { python3 -c "import sys; print(f'{float(sys.argv[1])/1000:.2f} ms')" "$1" 2>/dev/null || echo -; }
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{b/a:.2f}x')" "$1" "$2" 2>/dev/null || echo -; }
# row SCENARIO M_RATE D_RATE RATIO M_P99 D_P99 M_CPU D_CPU M_MEM D_MEM
row() { ROWS+=("$(printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |' "$@")"); }

# -- scenarios ----------------------------------------------------------------

MB=0 # Mosquitto's best fan-in rate, the reference of the scaling rows
if want fanin; then
    log "== 1. QoS 0 fan-in 10->1, 16 B: highest offered rate delivered at p99 <= 10 ms"
    declare -A FANIN
    for who in mosquitto-default mosquitto-nodelay drover; do
        over_budget && break
        log " - $who"
        case $who in
        mosquitto-*) start_mosquitto "${who#mosquitto-}" ;;
        drover) start_drover ;;
        esac
        search "fanin-$who"
        FANIN[$who]=$BEST
        FANIN[$who-file]=$BEST_FILE
        [ "$BEST_TOP" = 1 ] && FANIN[$who-top]="≥"
        stop_broker
    done
    MB=${FANIN[mosquitto-default]:-0} MF=${FANIN[mosquitto-default-file]:-$WORK/none.json}
    if [ "${FANIN[mosquitto-nodelay]:-0}" -gt "$MB" ]; then
        MB=${FANIN[mosquitto-nodelay]} MF=${FANIN[mosquitto-nodelay-file]}
        NOTES+=("fan-in: Mosquitto's better configuration was set_tcp_nodelay true (default: ${FANIN[mosquitto-default]:-0} msg/s).")
    else
        NOTES+=("fan-in: Mosquitto with set_tcp_nodelay true reached ${FANIN[mosquitto-nodelay]:-0} msg/s; the default config is shown.")
    fi
    DB=${FANIN[drover]:-0} DF=${FANIN[drover-file]:-$WORK/none.json} DT=${FANIN[drover-top]:-}
    row "QoS0 fan-in 10→1 16 B, max rate at p99≤10 ms (msg/s)" "$(fmt_rate "$MB")" "$DT$(fmt_rate "$DB")" \
        "$(ratio "$MB" "$DB")" "$(fmt_ms "$(get "$MF" latency_us.p99)")" "$(fmt_ms "$(get "$DF" latency_us.p99)")" \
        "$(get "$MF" broker.cpu_us_per_msg)" "$(get "$DF" broker.cpu_us_per_msg)" "" ""
fi

if want cpu; then
    log "== 2. broker CPU per QoS 0 message at a fixed 50,000 msg/s fan-in"
    declare -A CPU
    for who in mosquitto drover; do
        over_budget && break
        if [ $who = mosquitto ]; then start_mosquitto default; else start_drover; fi
        run "cpu-$who" --scenario fanin --clients 10 --qos 0 --size 16 --rate 50000 \
            --duration "$LONG" --warmup "$WARM"
        CPU[$who]=$RUN_FILE
        stop_broker
    done
    MF=${CPU[mosquitto]:-$WORK/none.json} DF=${CPU[drover]:-$WORK/none.json}
    row "QoS0 fan-in, fixed 50k msg/s offered: CPU per message" \
        "$(fmt_rate "$(get "$MF" delivered_rate 0)")" "$(fmt_rate "$(get "$DF" delivered_rate 0)")" \
        "$(ratio "$(get "$DF" broker.cpu_us_per_msg 0)" "$(get "$MF" broker.cpu_us_per_msg 0)") less CPU" \
        "$(fmt_ms "$(get "$MF" latency_us.p99)")" "$(fmt_ms "$(get "$DF" latency_us.p99)")" \
        "$(get "$MF" broker.cpu_us_per_msg)" "$(get "$DF" broker.cpu_us_per_msg)" "" ""
fi

if want qos1; then
    log "== 3. QoS 1 10 publisher/subscriber pairs, 20 in flight per publisher, unpaced"
    declare -A Q1
    for who in mosquitto-default mosquitto-nodelay drover-sync drover-nosync; do
        over_budget && break
        case $who in
        mosquitto-*) start_mosquitto "${who#mosquitto-}" ;;
        drover-sync) start_drover persist.sync=true ;;
        drover-nosync) start_drover persist.sync=false ;;
        esac
        run "qos1-$who" --scenario p2p --clients 10 --qos 1 --size 16 --inflight 20 \
            --duration "$LONG" --warmup "$WARM"
        Q1[$who]=$RUN_FILE
        log "   $who: $(get "${Q1[$who]}" delivered_rate) msg/s, p99 $(get "${Q1[$who]}" latency_us.p99) us, lost $(get "${Q1[$who]}" lost)"
        stop_broker
    done
    MF=${Q1[mosquitto-default]:-$WORK/none.json}
    MN=${Q1[mosquitto-nodelay]:-$WORK/none.json}
    if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)" \
        "$(get "$MN" delivered_rate 0)" "$(get "$MF" delivered_rate 0)"; then
        MF=$MN
        NOTES+=("QoS 1: Mosquitto shown with set_tcp_nodelay true, its better configuration here.")
    fi
    for who in drover-sync drover-nosync; do
        DF=${Q1[$who]:-$WORK/none.json}
        label="QoS1 p2p 10 pairs, 20 in flight (msg/s), Drover persist.sync=$([ $who = drover-sync ] && echo true || echo false)"
        lost=$(get "$DF" lost)
        [ "$lost" != 0 ] && [ "$lost" != - ] && label="$label — Drover LOST $lost acknowledged messages"
        row "$label" "$(fmt_rate "$(get "$MF" delivered_rate 0)")" "$(fmt_rate "$(get "$DF" delivered_rate 0)")" \
            "$(ratio "$(get "$MF" delivered_rate 0)" "$(get "$DF" delivered_rate 0)")" \
            "$(fmt_ms "$(get "$MF" latency_us.p99)")" "$(fmt_ms "$(get "$DF" latency_us.p99)")" \
            "$(get "$MF" broker.cpu_us_per_msg)" "$(get "$DF" broker.cpu_us_per_msg)" "" ""
    done
    NOTES+=("QoS 1 durability: Mosquitto runs with persistence false (an acknowledged message lives in memory only; even with persistence true it is written every autosave_interval, 1800 s by default, not per message). Drover persist.sync=true fdatasyncs its log once per loop turn before the PUBACKs of that turn leave (group commit); persist.sync=false writes the log to the OS without fdatasync (survives kill -9, not power loss).")
fi

if want idle; then
    log "== 4. memory per idle connection (10,000 connections, fresh brokers)"
    declare -A IDLE
    for who in mosquitto drover; do
        over_budget && break
        if [ $who = mosquitto ]; then start_mosquitto default; else start_drover; fi
        run "idle-$who" --scenario idle --clients 10000 --duration 2
        IDLE[$who]=$RUN_FILE
        log "   $who: held $(get "${IDLE[$who]}" held), $(get "${IDLE[$who]}" broker.bytes_per_connection) B per connection"
        stop_broker
    done
    MF=${IDLE[mosquitto]:-$WORK/none.json} DF=${IDLE[drover]:-$WORK/none.json}
    row "idle connections: 10,000 held, RSS per connection" "$(get "$MF" held)" "$(get "$DF" held)" \
        "$(ratio "$(get "$MF" broker.bytes_per_connection 0)" "$(get "$DF" broker.bytes_per_connection 0)") memory" \
        "" "" "" "" "$(get "$MF" broker.bytes_per_connection)" "$(get "$DF" broker.bytes_per_connection)"
fi

if want idle19k; then
    if ! over_budget; then
        log "== 5. 19,000 connections held by one Drover process"
        start_drover
        run idle19k-drover --scenario idle --clients 19000 --duration 2 --setup-timeout 120
        DF=$RUN_FILE
        log "   held $(get "$DF" held) of 19000, setup $(get "$DF" setup_ms) ms"
        stop_broker
        row "idle connections: 19,000 attempted on Drover" "" "$(get "$DF" held) held" "" "" "" "" "" "" \
            "$(get "$DF" broker.bytes_per_connection)"
    fi
fi

if want workers; then
    log "== 6. scaling: fan-in search with server.workers = 1 and 2"
    if has_key server.workers; then
        for w in 1 2; do
            over_budget && break
            log " - workers=$w"
            start_drover "server.workers=$w"
            search "fanin-workers$w"
            stop_broker
            top=; [ "$BEST_TOP" = 1 ] && top="≥"
            row "QoS0 fan-in max rate at p99≤10 ms, Drover server.workers=$w" "$(fmt_rate "$MB")" \
                "$top$(fmt_rate "$BEST")" "$(ratio "$MB" "$BEST")" "" "$(fmt_ms "$(get "$BEST_FILE" latency_us.p99)")" \
                "" "$(get "$BEST_FILE" broker.cpu_us_per_msg)" "" ""
        done
    else
        NOTES+=("scaling rows skipped: \`drover config --list\` has no server.workers key in this build.")
    fi
fi

if want connect; then
    log "== 7. connect/CONNACK/DISCONNECT rate over TCP, 20 concurrent connectors"
    declare -A CONN
    for who in mosquitto drover; do
        over_budget && break
        if [ $who = mosquitto ]; then start_mosquitto default; else start_drover; fi
        run "connect-$who" --scenario connect --clients 20 --duration "$WIN" --warmup "$WARM"
        CONN[$who]=$RUN_FILE
        stop_broker
    done
    MF=${CONN[mosquitto]:-$WORK/none.json} DF=${CONN[drover]:-$WORK/none.json}
    row "connect+CONNACK+DISCONNECT cycles/s (TCP; CPU per connection)" \
        "$(fmt_rate "$(get "$MF" connections_per_s 0)")" "$(fmt_rate "$(get "$DF" connections_per_s 0)")" \
        "$(ratio "$(get "$MF" connections_per_s 0)" "$(get "$DF" connections_per_s 0)")" \
        "$(fmt_ms "$(get "$MF" connack_latency_us.p99)")" "$(fmt_ms "$(get "$DF" connack_latency_us.p99)")" \
        "$(get "$MF" broker.cpu_us_per_msg)" "$(get "$DF" broker.cpu_us_per_msg)" "" ""
fi

if want tls; then
    log "== 8. TLS connect/CONNACK/DISCONNECT rate, full handshakes, ECDSA P-256, 20 concurrent connectors"
    make_certs
    declare -A TLS
    for who in mosquitto-default mosquitto-nodelay drover; do
        over_budget && break
        case $who in
        mosquitto-*) start_mosquitto "${who#mosquitto-}" tls ;;
        drover)
            start_drover "mqtt.tls_listen=127.0.0.1:$DROVER_TLS_PORT" \
                "tls.cert_file=$TLS_DIR/server.pem" "tls.key_file=$TLS_DIR/server.key"
            wait_port "$DROVER_TLS_PORT" "$BROKER_PID" 100 || die "drover TLS did not start: $(tail -3 "$WORK/drover.log")"
            PORT=$DROVER_TLS_PORT
            ;;
        esac
        run "tls-$who" --scenario connect --tls --cafile "$TLS_DIR/ca.pem" --clients 20 \
            --duration "$WIN" --warmup "$WARM"
        TLS[$who]=$RUN_FILE
        log "   $who: $(get "$RUN_FILE" connections_per_s) handshakes/s, cycle p50 $(get "$RUN_FILE" cycle_us.p50) us," \
            "p99 $(get "$RUN_FILE" cycle_us.p99) us, broker $(get "$RUN_FILE" broker.cpu_us_per_msg) us CPU," \
            "bench $(get "$RUN_FILE" bench_cpu_us_per_msg) us CPU per handshake, $(get "$RUN_FILE" tls_session)"
        stop_broker
    done
    MF=${TLS[mosquitto-default]:-$WORK/none.json}
    MN=${TLS[mosquitto-nodelay]:-$WORK/none.json}
    if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)" \
        "$(get "$MN" connections_per_s 0)" "$(get "$MF" connections_per_s 0)"; then
        NOTES+=("TLS: Mosquitto shown with set_tcp_nodelay true, its better configuration here (default: $(get "$MF" connections_per_s) handshakes/s, cycle p50 $(fmt_ms "$(get "$MF" cycle_us.p50)")).")
        MF=$MN
    fi
    DF=${TLS[drover]:-$WORK/none.json}
    row "TLS connect+CONNACK+DISCONNECT per s (ECDSA P-256, full handshake; p99 = whole cycle)" \
        "$(fmt_rate "$(get "$MF" connections_per_s 0)")" "$(fmt_rate "$(get "$DF" connections_per_s 0)")" \
        "$(ratio "$(get "$MF" connections_per_s 0)" "$(get "$DF" connections_per_s 0)")" \
        "$(fmt_ms "$(get "$MF" cycle_us.p99)")" "$(fmt_ms "$(get "$DF" cycle_us.p99)")" \
        "$(get "$MF" broker.cpu_us_per_msg)" "$(get "$DF" broker.cpu_us_per_msg)" "" ""
    NOTES+=("TLS: $(get "$DF" tls_session), server certificate ECDSA P-256, no resumption; the load generator spent $(get "$MF" bench_cpu_us_per_msg) (Mosquitto) / $(get "$DF" bench_cpu_us_per_msg) (Drover) us CPU per handshake on 1 thread, so it can limit the rate: compare broker CPU per handshake.")
fi

want fanin || want workers &&
NOTES+=("fan-in ladder: ${LADDER// /, } msg/s; ≥ means the top of the ladder passed (the limit is above it).")
over_budget && NOTES+=("the ${BUDGET}s time budget was reached: later rows may be missing.")
[ "$BUSY" -gt 10 ] && NOTES+=("WARNING: the machine was ${BUSY}% busy before the run ($TOP): numbers are skewed.")

# -- report -------------------------------------------------------------------

echo
echo "Drover vs Mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}') on $(nproc) CPU(s), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ); load: drover bench, 1 client thread"
echo
echo "| scenario | Mosquitto | Drover | Drover ÷ Mosquitto | p99 Mosquitto | p99 Drover | broker CPU µs/msg Mosquitto | broker CPU µs/msg Drover | B/idle conn Mosquitto | B/idle conn Drover |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for r in "${ROWS[@]}"; do echo "$r"; done
echo
for n in "${NOTES[@]}"; do echo "- $n"; done
echo "- total time $((SECONDS - START)) s"
