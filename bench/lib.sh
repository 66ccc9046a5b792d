# shellcheck shell=bash
# bench/lib.sh — what every benchmark script here shares.  Source it after
# setting BENCH (the script's name, for die).
#
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
