# shellcheck shell=bash
# bench/lib.sh — what every benchmark script here shares.  Source it after
# setting BENCH (the script's name, for die).
#
#   over_budget     the script's BUDGET seconds (since START) are used up
#   want PART       PART is in ONLY (or ONLY is empty)
#   port_busy PORT  something listens on PORT
#   wait_port PORT PID [TRIES]   until PORT listens (TRIES × 50 ms, 30 s by
#                   default) or PID is gone; false then
#   stop_server     SIGTERM to SERVER_PID, up to 30 s, then SIGKILL; clears it
#   log MSG...      to stderr
#   die MSG...      "BENCH: MSG" to stderr, exit 1
#   busy_pct        machine-wide busy CPU % over one second (/proc/stat)
#   check_quiet     waits up to WAIT_QUIET seconds for the machine to be at
#                   most 10 % busy; sets BUSY (the last reading) and TOP
#                   (the three busiest processes, when busy) and warns

log() { printf '%s\n' "$*" >&2; }
die() { log "${BENCH:-bench}: $*"; exit 1; }

busy_pct() {
    /usr/bin/python3 - <<'PYEOF'
import time
def sample():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return v[3] + v[4], sum(v)
i0, t0 = sample(); time.sleep(1); i1, t1 = sample()
print(round(100 * (1 - (i1 - i0) / max(1, t1 - t0))))
PYEOF
}

# Other load on the machine skews everything: say so (WAIT_QUIET=SECONDS waits for it to go).
check_quiet() {
    BUSY=$(busy_pct)
    for _ in $(seq "${WAIT_QUIET:-0}"); do [ "$BUSY" -le 10 ] && break; BUSY=$(busy_pct); done
    TOP=
    if [ "$BUSY" -gt 10 ]; then
        TOP=$(ps -eo pcpu=,comm= --sort=-pcpu | head -3 | awk '{printf "%s %s%%; ", $2, $1}')
        log "WARNING: the machine is ${BUSY}% busy before the benchmark ($TOP); results will be skewed"
    fi
}

over_budget() { [ $((SECONDS - START)) -ge "$BUDGET" ]; }
want() { [ -z "$ONLY" ] || [[ " ${ONLY//,/ } " == *" $1 "* ]]; }
port_busy() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

wait_port() {
    for _ in $(seq "${3:-600}"); do
        port_busy "$1" && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in $(seq 300); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=
}
