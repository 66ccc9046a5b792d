#!/usr/bin/env bash
# bench/tsdb.sh — telemetry storage: InfluxDB 1.6, PostgreSQL 15 and Drover,
# one after the other on this machine, same dataset (100 devices x 10
# metrics x 5000 points = 5M samples, shared/bench/tsdb_dataset.py); prints
# a table of ingest rate, bytes per sample on disk and two query latencies,
# with Drover/InfluxDB ratios, and MQTT publish -> queryable latency.
#
#   bench/tsdb.sh              full run (about 5 minutes; BUDGET caps it)
#   QUICK=1 bench/tsdb.sh      500 points per series (500k samples): checks the
#                              script; the query windows then hold little data
#   ONLY="influx drover" bench/tsdb.sh   just some systems: influx pg drover
#
# Environment: BUILD_DIR (default build/rel; NO_BUILD=1 uses the drover in it
# as it is), POINTS (points per series, default 5000; QUICK=1: 500), RUNS
# (query runs after 3 warm-ups, default 20), INFLUX_WRITERS (parallel
# writers, default 2), DROVER_WRITERS (default 1), LAT=0 skips the MQTT
# latency part, LAT_N (500), DATA_DIR (keep the generated dataset there and
# reuse it), BUDGET (seconds, default 900), ports INFLUX_PORT (18086),
# INFLUX_RPC_PORT (18088), PG_PORT (18432), DROVER_PORT (18480, HTTP),
# DROVER_MQTT_PORT (18483), WAIT_QUIET=SECONDS waits up to that long for
# other load on the machine to go before starting.
#
# Only loopback: every server listens on 127.0.0.1 (PostgreSQL also on a
# Unix socket in the work directory).  Everything started here is stopped on
# exit and the work directory removed.  A failing system gets a row
# "failed (why)" and the script goes on.  As root, PostgreSQL runs as the
# "postgres" user (or a "drover-bench" user it creates when there is none).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build/rel}
DATASET=${DATASET:-$ROOT/../shared/bench/tsdb_dataset.py}
CLIENT=$ROOT/bench/tsdb_peers/tsdb_client.py
PY=/usr/bin/python3
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then POINTS=${POINTS:-500}; else POINTS=${POINTS:-5000}; fi
RUNS=${RUNS:-20}
INFLUX_WRITERS=${INFLUX_WRITERS:-2}
DROVER_WRITERS=${DROVER_WRITERS:-1}
LAT=${LAT:-1}
LAT_N=${LAT_N:-500}
ONLY=${ONLY:-}
BUDGET=${BUDGET:-900}
INFLUX_PORT=${INFLUX_PORT:-18086}
INFLUX_RPC_PORT=${INFLUX_RPC_PORT:-18088}
PG_PORT=${PG_PORT:-18432}
DROVER_PORT=${DROVER_PORT:-18480}
DROVER_MQTT_PORT=${DROVER_MQTT_PORT:-18483}
DROVER=$BUILD_DIR/drover
WORK=$(mktemp -d /tmp/drover-tsdb.XXXXXX)
START=$SECONDS
DEVICES=100
METRICS=10
SAMPLES=$((DEVICES * METRICS * POINTS))

INFLUX_PID=
DROVER_PID=
PG_DATA=
PG_USER=

BENCH=tsdb.sh
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# stop_pid PID: SIGTERM, up to 30 s, then SIGKILL.
stop_pid() {
    [ -n "$1" ] || return 0
    kill -TERM "$1" 2>/dev/null
    for _ in $(seq 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}

as_pg() { if [ -n "$PG_USER" ]; then runuser -u "$PG_USER" -- "$@"; else "$@"; fi; }
stop_pg() {
    [ -n "$PG_DATA" ] || return 0
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1
    PG_DATA=
}

cleanup() {
    [ -n "${CLIENT_PID:-}" ] && { kill -TERM "$CLIENT_PID" 2>/dev/null; wait "$CLIENT_PID" 2>/dev/null; }
    stop_pid "$INFLUX_PID"
    stop_pid "$DROVER_PID"
    stop_pg
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Unix time at which query loops cut their runs short: leave 60 s for the rest.
deadline() { echo $(($(date +%s) + BUDGET - (SECONDS - START) - 60)); }


# client STEP OUT args...: one tsdb_client.py step in the background (so a
# signal reaches the traps at once); its JSON lands in $WORK/OUT.json.
CLIENT_PID=
client() {
    local step=$1 out=$WORK/$2.json
    shift 2
    "$PY" "$CLIENT" "$step" --out "$out" --devices "$DEVICES" --points "$POINTS" --runs "$RUNS" \
        --deadline "$(deadline)" "$@" &
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
        v = v[k]
    print(str(v).lower() if isinstance(v, bool) else v)
except Exception:
    print(sys.argv[3])
EOF
}
ok() { [ "$(get "$1" ok false)" = true ]; }
# fail FILE: the error a failed step reported, one line
why() { get "$1" error "?" | tr '\n' ' ' | cut -c1-200; }
# du_b DIR...: apparent size in bytes (du -sb); du_alloc DIR...: bytes allocated on disk
du_b() { du -sb "$@" 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
du_alloc() { du -s -B1 "$@" 2>/dev/null | awk '{s += $1} END {print s + 0}'; }

for p in "$INFLUX_PORT" "$INFLUX_RPC_PORT" "$PG_PORT" "$DROVER_PORT" "$DROVER_MQTT_PORT"; do
    port_busy "$p" && die "port $p is in use"
done
[ -x "$PY" ] || die "no $PY"
[ -r "$DATASET" ] || die "no dataset generator $DATASET"

# -- dataset ------------------------------------------------------------------

DDIR=${DATA_DIR:-$WORK/dataset}
mkdir -p "$DDIR" || die "cannot create $DDIR"
CSV=$DDIR/tsdb-$POINTS.csv
LP=$DDIR/tsdb-$POINTS.lp
for f in csv influx; do
    out=$CSV; [ $f = influx ] && out=$LP
    [ -s "$out" ] && continue
    log "== generating the dataset ($SAMPLES samples, $f) into $out"
    if ! "$PY" "$DATASET" --devices "$DEVICES" --metrics "$METRICS" --points "$POINTS" --format $f >"$out.tmp"; then
        die "dataset generation failed"
    fi
    mv "$out.tmp" "$out"
done

check_quiet

declare -A ROW   # ROW[system.field]: ingest, bps, a, b (formatted cells), err
NOTES=()
fmt_rate() { "$PY" -c "import sys; print(f'{float(sys.argv[1]):,.0f}')" "$1" 2>/dev/null || echo -; }
fmt_ms() { "$PY" -c "import sys; v=float(sys.argv[1]); print(f'{v:.2f} ms' if v < 100 else f'{v:.0f} ms')" "$1" 2>/dev/null || echo -; }
fmt_f() { "$PY" -c "import sys; print(f'{float(sys.argv[1]):.2f}')" "$1" 2>/dev/null || echo -; }

# queries SYSTEM FILE: the two latency cells, with a warning when the answer
# has fewer values than expected.
queries() {
    local q cell rows expect
    for q in a b; do
        cell=$(fmt_ms "$(get "$2" $q.p50_ms)")
        rows=$(get "$2" $q.rows 0) expect=$(get "$2" $q.expected_rows 0)
        [ "$cell" != - ] && [ "$rows" -lt "$expect" ] 2>/dev/null && cell="$cell (only $rows of $expect values!)"
        [ "$cell" != - ] && [ "$(get "$2" $q.runs 0)" -lt "$RUNS" ] && cell="$cell ($(get "$2" $q.runs) runs)"
        ROW[$1.$q]=$cell
    done
}

# -- InfluxDB 1.6 -------------------------------------------------------------

INFLUX_VERSION=-
run_influx() {
    command -v influxd >/dev/null || { ROW[influx.err]="not installed (apt-get install influxdb)"; return; }
    INFLUX_VERSION=$(influxd version 2>/dev/null | awk '{print $2}')
    local dir=$WORK/influx
    mkdir -p "$dir"
    # Durable writes (wal-fsync-delay 0: the WAL is fsynced before each 204).
    # The two cold durations make it snapshot its cache into TSM 5 s and fully
    # compact 10 s after the last write, instead of 10 min / 4 h.
    cat >"$dir/influxdb.conf" <<EOF
reporting-disabled = true
bind-address = "127.0.0.1:$INFLUX_RPC_PORT"
[meta]
  dir = "$dir/meta"
  logging-enabled = false
[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  wal-fsync-delay = "0s"
  index-version = "inmem"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "5s"
  compact-full-write-cold-duration = "10s"
[retention]
  enabled = false
[shard-precreation]
  enabled = false
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[continuous_queries]
  enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:$INFLUX_PORT"
  log-enabled = false
  max-body-size = 0
[logging]
  level = "warn"
EOF
    influxd run -config "$dir/influxdb.conf" >"$WORK/influxd.log" 2>&1 &
    INFLUX_PID=$!
    wait_port "$INFLUX_PORT" "$INFLUX_PID" || { ROW[influx.err]="did not start: $(tail -2 "$WORK/influxd.log")"; return; }

    log "== InfluxDB $INFLUX_VERSION: load ($INFLUX_WRITERS writers, 5000 lines per POST)"
    client influx-load influx-load --port "$INFLUX_PORT" --file "$LP" --batch 5000 --writers "$INFLUX_WRITERS"
    local f=$WORK/influx-load.json
    ok "$f" || { ROW[influx.err]="load: $(why "$f")"; stop_pid "$INFLUX_PID"; INFLUX_PID=; return; }
    ROW[influx.ingest]=$(fmt_rate "$(get "$f" rate)")
    RATE[influx]=$(get "$f" rate)
    log "   $(get "$f" samples) samples in $(fmt_f "$(get "$f" seconds)") s"

    # Wait until the WAL is empty (the cache was snapshotted into TSM) and
    # the TSM files have stopped changing (the full compaction is done): one
    # TSM file unchanged for 5 s, or any number unchanged for 20 s.
    log "   waiting for the WAL to be snapshotted and the TSM files fully compacted"
    local last='' same=0 waited=0 state wal tsm
    while [ $waited -lt 240 ] && ! over_budget; do
        sleep 1; waited=$((waited + 1))
        wal=$(find "$dir/wal" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
        state="$wal $(find "$dir/data" -name '*.tsm' -printf '%f:%s ' | sort | tr '\n' ' ')"
        tsm=$(find "$dir/data" -name '*.tsm' | wc -l)
        if [ "$state" = "$last" ] && [ "$wal" = 0 ]; then same=$((same + 1)); else same=0; fi
        last=$state
        { [ $same -ge 20 ] || { [ "$tsm" = 1 ] && [ $same -ge 5 ]; }; } && break
    done
    # Stopped, then restarted for the queries: the WAL replays nothing.
    stop_pid "$INFLUX_PID"
    local bytes
    bytes=$(du_alloc "$dir/data" "$dir/wal")
    ROW[influx.bps]=$(fmt_f "$(echo "$bytes $SAMPLES" | awk '{print $1 / $2}')")
    BPS[influx]=$(echo "$bytes $SAMPLES" | awk '{print $1 / $2}')
    NOTES+=("InfluxDB on disk: $bytes B allocated (du -s -B1 of its data and wal dirs; du -sb says $(du_b "$dir/data" "$dir/wal") B: its series file is 8 preallocated sparse 4 MiB segments) once the WAL was empty and the TSM files unchanged, ${waited} s after the load: $tsm TSM file(s) ($(find "$dir/data" -name '*.tsm' -printf '%f ')), 1 shard.")
    influxd run -config "$dir/influxdb.conf" >>"$WORK/influxd.log" 2>&1 &
    INFLUX_PID=$!
    wait_port "$INFLUX_PORT" "$INFLUX_PID" || { ROW[influx.err]="did not restart: $(tail -2 "$WORK/influxd.log")"; return; }
    sleep 1

    log "   queries"
    client influx-query influx-query --port "$INFLUX_PORT"
    f=$WORK/influx-query.json
    ok "$f" || ROW[influx.err]="queries: $(why "$f")"
    queries influx "$f"
    LATA[influx]=$(get "$f" a.p50_ms) LATB[influx]=$(get "$f" b.p50_ms)
    stop_pid "$INFLUX_PID"
    INFLUX_PID=
}

# -- PostgreSQL 15 ------------------------------------------------------------

PG_VERSION=-
PG_BIN=
run_pg() {
    for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
        [ -x "$d/pg_ctl" ] && { PG_BIN=$d; break; }
    done
    [ -n "$PG_BIN" ] || { ROW[pg.err]="not installed (apt-get install postgresql-15)"; return; }
    "$PY" -c 'import psycopg2' 2>/dev/null || { ROW[pg.err]="no psycopg2 (apt-get install python3-psycopg2)"; return; }
    PG_VERSION=$("$PG_BIN/postgres" --version | awk '{print $3}')
    local dir=$WORK/pg
    if [ "$(id -u)" = 0 ]; then
        PG_USER=postgres
        if ! id -u postgres >/dev/null 2>&1; then
            PG_USER=drover-bench
            id -u "$PG_USER" >/dev/null 2>&1 || useradd --system --no-create-home "$PG_USER" ||
                { ROW[pg.err]="cannot create a user to run postgres"; return; }
        fi
        chmod 711 "$WORK"
        mkdir -p "$dir" && chown "$PG_USER" "$dir"
    else
        mkdir -p "$dir"
    fi
    as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale >"$WORK/initdb.log" 2>&1 ||
        { ROW[pg.err]="initdb: $(tail -2 "$WORK/initdb.log")"; return; }
    mkdir -p "$dir/sock" && [ -n "$PG_USER" ] && chown "$PG_USER" "$dir/sock"
    # Durable (fsync, synchronous_commit, full_page_writes stay on).  More
    # memory than the defaults, larger checkpoints for the load, and
    # wal_level=minimal so that COPY into a table created in the same
    # transaction skips the WAL (the table is fsynced at COMMIT instead).
    cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$dir/sock'
shared_buffers = 1GB
work_mem = 64MB
maintenance_work_mem = 1GB
max_wal_size = 8GB
checkpoint_timeout = 30min
wal_level = minimal
max_wal_senders = 0
jit = off
EOF
    PG_DATA=$dir/data
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$dir/server.log" -w -t 60 start >/dev/null 2>&1 ||
        { ROW[pg.err]="did not start: $(tail -2 "$dir/server.log")"; PG_DATA=; return; }

    log "== PostgreSQL $PG_VERSION: COPY + CREATE INDEX in one transaction"
    client pg-load pg-load --port "$PG_PORT" --socket-dir "$dir/sock" --file "$CSV"
    local f=$WORK/pg-load.json
    ok "$f" || { ROW[pg.err]="load: $(why "$f")"; stop_pg; return; }
    ROW[pg.ingest]=$(fmt_rate "$(get "$f" rate)")
    ROW[pg.bps]=$(fmt_f "$(get "$f" bytes_per_sample)")
    RATE[pg]=$(get "$f" rate) BPS[pg]=$(get "$f" bytes_per_sample)
    log "   $(get "$f" samples) samples in $(fmt_f "$(get "$f" seconds)") s (COPY $(fmt_f "$(get "$f" copy_seconds)") s)"
    NOTES+=("PostgreSQL on disk: pg_total_relation_size('samples') = $(get "$f" bytes) B (heap $(get "$f" heap_bytes) B, the rest the (device, metric, ts) b-tree, FSM, VM) after VACUUM ANALYZE and CHECKPOINT.")
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$dir/server.log" -m fast -w -t 60 restart >/dev/null 2>&1 ||
        { ROW[pg.err]="did not restart: $(tail -2 "$dir/server.log")"; stop_pg; return; }

    log "   queries"
    client pg-query pg-query --port "$PG_PORT" --socket-dir "$dir/sock"
    f=$WORK/pg-query.json
    ok "$f" || ROW[pg.err]="queries: $(why "$f")"
    queries pg "$f"
    LATA[pg]=$(get "$f" a.p50_ms) LATB[pg]=$(get "$f" b.p50_ms)
    NOTES+=("PostgreSQL plans: (a) $(get "$f" a.plan); (b) $(get "$f" b.plan).")
    stop_pg
}

# -- Drover -------------------------------------------------------------------

DROVER_COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo ?)
start_drover() {
    local extra=()
    # The peers have no per-client request limit; the latency poll makes
    # thousands of requests a second with one token.
    # (Not `| grep -q`: with pipefail, grep quitting early fails the pipeline.)
    [[ $'\n'$("$DROVER" config --list 2>/dev/null) == *$'\napi.rate_limit_rps ='* ]] &&
        extra+=(--set api.rate_limit_rps=0)
    "$DROVER" serve --data-dir "$WORK/drover" --set "mqtt.listen=127.0.0.1:$DROVER_MQTT_PORT" \
        --set mqtt.tls_listen= --set https.listen= --set "http.listen=127.0.0.1:$DROVER_PORT" \
        --set log.format=text "${extra[@]}" >>"$WORK/drover.log" 2>&1 &
    DROVER_PID=$!
    wait_port "$DROVER_PORT" "$DROVER_PID" && wait_port "$DROVER_MQTT_PORT" "$DROVER_PID"
}
run_drover() {
    if [ "${NO_BUILD:-0}" != 1 ]; then
        log "== building Drover (Release) in $BUILD_DIR"
        # As in broker.sh: gcc 12's -O2/-O3 flow warnings (maybe-uninitialized,
        # format-truncation) can be false positives; a second try keeps them warnings.
        local flags
        for flags in "" "-Wno-error=maybe-uninitialized -Wno-error=format-truncation"; do
            cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release "-DCMAKE_C_FLAGS=$flags" \
                >"$WORK/build.log" 2>&1 &&
                cmake --build "$BUILD_DIR" -j"$(nproc)" --target drover >>"$WORK/build.log" 2>&1 &&
                break
            [ -z "$flags" ] && log "   Release build failed; retrying with the flow warnings not errors"
        done
        if ! grep -q "Built target drover" "$WORK/build.log"; then
            ROW[drover.err]="build failed: $(grep -m1 -E 'error' "$WORK/build.log" | cut -c1-200)"
            return
        fi
        [ -n "$flags" ] && NOTES+=("Drover was built with CMAKE_C_FLAGS=$flags (the plain Release build failed).")
    fi
    [ -x "$DROVER" ] || { ROW[drover.err]="no $DROVER"; return; }
    start_drover || { ROW[drover.err]="did not start: $(tail -2 "$WORK/drover.log")"; return; }
    local token=''
    for _ in $(seq 100); do
        token=$(grep -oE '^\s*DROVER_TOKEN=drv_[A-Za-z0-9]+' "$WORK/drover.log" | head -1 | sed 's/.*=//')
        [ -n "$token" ] && break
        sleep 0.05
    done
    [ -n "$token" ] || { ROW[drover.err]="no DROVER_TOKEN line in its log"; return; }
    export DROVER_TOKEN=$token # the client reads it from the environment, not argv
    local secret=
    [ "$LAT" != 0 ] && secret=$(head -c 18 /dev/urandom | base64 | tr '+/' 'xy')

    log "== Drover $DROVER_COMMIT: setup (tenant, $DEVICES devices)"
    client drover-setup drover-setup --port "$DROVER_PORT" --lat-secret "$secret"
    local f=$WORK/drover-setup.json
    ok "$f" || { ROW[drover.err]="setup: $(why "$f")"; return; }

    log "   load ($DROVER_WRITERS writer(s), 100,000 rows per POST)"
    client drover-load drover-load --port "$DROVER_PORT" --file "$CSV" --chunk 100000 --writers "$DROVER_WRITERS"
    f=$WORK/drover-load.json
    ok "$f" || { ROW[drover.err]="load: $(why "$f")"; return; }
    ROW[drover.ingest]=$(fmt_rate "$(get "$f" rate)")
    RATE[drover]=$(get "$f" rate)
    log "   $(get "$f" samples) samples in $(fmt_f "$(get "$f" seconds)") s"

    # A clean stop writes the in-memory head as compressed blocks and removes the WAL.
    stop_pid "$DROVER_PID"
    DROVER_PID=
    local bytes
    bytes=$(du_alloc "$WORK/drover/tsdb")
    ROW[drover.bps]=$(fmt_f "$(echo "$bytes $SAMPLES" | awk '{print $1 / $2}')")
    BPS[drover]=$(echo "$bytes $SAMPLES" | awk '{print $1 / $2}')
    NOTES+=("Drover on disk: $bytes B allocated (du -s -B1 data-dir/tsdb; du -sb: $(du_b "$WORK/drover/tsdb") B) after a clean stop (SIGTERM: head flushed into compressed blocks, WAL removed); $(find "$WORK/drover/tsdb" -type f 2>/dev/null | wc -l) file(s).")
    start_drover || { ROW[drover.err]="did not restart: $(tail -2 "$WORK/drover.log")"; return; }

    log "   queries"
    client drover-query drover-query --port "$DROVER_PORT"
    f=$WORK/drover-query.json
    ok "$f" || { ROW[drover.err]="queries: $(why "$f")"; return; }
    queries drover "$f"
    LATA[drover]=$(get "$f" a.p50_ms) LATB[drover]=$(get "$f" b.p50_ms)

    if [ "$LAT" != 0 ] && ! over_budget; then
        log "   MQTT publish -> queryable latency ($LAT_N samples)"
        client drover-lat drover-lat --port "$DROVER_PORT" --mqtt-port "$DROVER_MQTT_PORT" \
            --lat-secret "$secret" --n "$LAT_N"
        f=$WORK/drover-lat.json
        if ok "$f"; then
            LAT_LINE="MQTT QoS 1 publish → visible in GET …/devices/lat/telemetry/latest: p50 $(fmt_ms "$(get "$f" p50_ms)"), p99 $(fmt_ms "$(get "$f" p99_ms)"), max $(fmt_ms "$(get "$f" max_ms)") over $(get "$f" n) samples (target p99 ≤ 5 ms; $(fmt_f "$(get "$f" polls_per_sample)") polls per sample)"
        else
            LAT_LINE="MQTT publish → queryable latency: failed ($(why "$f"))"
        fi
    fi
    stop_pid "$DROVER_PID"
    DROVER_PID=
}

declare -A RATE BPS LATA LATB
LAT_LINE=
declare -A AGREE # AGREE[a|b]: how the answers to that query compare
for sys in influx pg drover; do
    want $sys || continue
    if over_budget; then ROW[$sys.err]="skipped: ${BUDGET}s budget reached"; continue; fi
    run_$sys
done

# -- do the answers agree? ------------------------------------------------------

name() { case $1 in influx) echo "InfluxDB $INFLUX_VERSION" ;; pg) echo "PostgreSQL $PG_VERSION" ;; drover) echo "Drover $DROVER_COMMIT" ;; esac; }

# A fast wrong answer is no result: every system's answers to (a) and (b) are
# compared with the first peer's (InfluxDB, else PostgreSQL).
REF=
for sys in influx pg drover; do
    f=$WORK/$sys-query.json
    ok "$f" || continue
    [ -z "$REF" ] && { REF=$sys; continue; }
    client compare "compare-$sys" --file "$WORK/$REF-query.json" --other "$f"
    c=$WORK/compare-$sys.json
    for q in a b; do
        AGREE[$q]="${AGREE[$q]:-$(get "$c" $q.values) values:}"
        if [ "$(get "$c" $q.same)" = true ]; then
            AGREE[$q]="${AGREE[$q]} $(name $sys) = $(name $REF);"
        else
            AGREE[$q]="${AGREE[$q]} $(name $sys) DIFFERS from $(name $REF): missing/extra/different $(get "$c" $q.counts), e.g. $(get "$c" $q.differ) $(get "$c" $q.missing) $(get "$c" $q.extra);"
            ROW[$sys.$q]="${ROW[$sys.$q]:-} (WRONG ANSWER)"
        fi
    done
done

# -- report -------------------------------------------------------------------

# ratio NUM DEN WORDS [inv]: NUM/DEN (or DEN/NUM) as "3.10x WORDS", - when either is missing
ratio() {
    "$PY" -c "
import sys
a, b = float(sys.argv[1]), float(sys.argv[2])
print(f'{(b / a if sys.argv[4] == \"inv\" else a / b):.2f}x {sys.argv[3]}')" "$1" "$2" "$3" "${4:-}" 2>/dev/null ||
        echo -
}

echo
echo "Telemetry storage, $SAMPLES samples ($DEVICES devices × $METRICS metrics × $POINTS points), $(nproc) CPU(s), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| system | ingest (samples/s) | bytes/sample on disk | (a) 1 series, 12 h, max per 5 min: p50 | (b) 1000 series, 1 h, mean each: p50 |"
echo "|---|---|---|---|---|"
for sys in influx pg drover; do
    want $sys || continue
    if [ -n "${ROW[$sys.err]:-}" ] && [ -z "${ROW[$sys.ingest]:-}" ]; then
        echo "| $(name $sys) | failed (${ROW[$sys.err]}) | | | |"
        continue
    fi
    echo "| $(name $sys) | ${ROW[$sys.ingest]:--} | ${ROW[$sys.bps]:--} | ${ROW[$sys.a]:--} | ${ROW[$sys.b]:--} |"
    [ -n "${ROW[$sys.err]:-}" ] && NOTES+=("$(name $sys): failed (${ROW[$sys.err]})")
done
for peer in influx pg; do
    { want $peer && want drover; } || continue
    echo "| Drover ÷ $(name $peer | cut -d' ' -f1) | $(ratio "${RATE[drover]:-}" "${RATE[$peer]:-}" faster) | $(ratio "${BPS[drover]:-}" "${BPS[$peer]:-}" "the size") | $(ratio "${LATA[drover]:-}" "${LATA[$peer]:-}" faster inv) | $(ratio "${LATB[drover]:-}" "${LATB[$peer]:-}" faster inv) |"
done
want influx && want drover && echo "| target (brief) | ≥ 3x InfluxDB | ≤ 1.5 B/sample | ≥ 3x faster | ≥ 3x faster |"
echo
[ -n "$LAT_LINE" ] && echo "- $LAT_LINE"
for q in a b; do [ -n "${AGREE[$q]:-}" ] && echo "- answers to ($q) compared, ${AGREE[$q]%;}."; done
NOTES+=("ingest: wall time from the first byte sent to the last durable answer. InfluxDB: line protocol, 5000 lines per POST /write?precision=ns, $INFLUX_WRITERS parallel writers, 204 after its WAL fsync. PostgreSQL: one transaction (CREATE TABLE, COPY FROM STDIN over the Unix socket, CREATE INDEX (device, metric, ts), COMMIT). Drover: CSV, 100,000 rows per POST …/telemetry/import, $DROVER_WRITERS connection(s), each answer after fsync.")
NOTES+=("queries: median of $RUNS runs after 3 warm-ups, client wall time on an open keep-alive connection, request sent to last byte read (Python http.client for InfluxDB and Drover, psycopg2 execute + fetchall over the Unix socket for PostgreSQL), after a restart of each server (cold OS page cache not forced).")
over_budget && NOTES+=("the ${BUDGET}s time budget was reached: later parts may be missing.")
[ "$BUSY" -gt 10 ] && NOTES+=("WARNING: the machine was ${BUSY}% busy before the run ($TOP): numbers are skewed.")
for n in "${NOTES[@]}"; do echo "- $n"; done
echo "- total time $((SECONDS - START)) s"
