#!/usr/bin/env python3
"""bench/live/report.py — the summary tables of bench/live.sh.

Reads the JSON that bench/live/live.mjs wrote into the run's work directory
(mosquitto.json, drover-setup.json, drover.json, idle-ws.json,
idle-sse.json; any may be missing or say {"ok": false, "error": ...}) and
prints Markdown: the latency table, the ratios against the broker-only
reference, the idle-connection table and notes.  Standard library only.
"""
import argparse
import json
import os

TARGET_P99_US = 5000


def load(d, name):
    try:
        with open(os.path.join(d, name + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def n(v, digits=0):
    return "-" if v is None else f"{v:,.{digits}f}"


def ms(us):
    if us is None:
        return "-"
    return f"{us / 1000:.2f} ms" if us < 100000 else f"{us / 1000:.0f} ms"


def describe(broker, r, variant=""):
    kind, qos, scope = r["kind"], r["qos"], r["scope"]
    who = {
        ("drover", "stream"): "Drover WebSocket live stream",
        ("drover", "sse"): "Drover SSE live stream",
        ("drover", "mqttws"): "Drover MQTT over WebSocket (broker route, not the stream)",
        ("mosquitto", "mqttws"): "Mosquitto MQTT over WebSocket (broker-only reference)",
    }.get((broker, kind), f"{broker} {kind}")
    subs = r.get("subscribers")
    if scope == "tenant":
        what = f"fan-out: {n(subs)} subscribers × every device"
    else:
        what = f"{n(subs)} subscribers × 1 device"
    return f"{who}{variant}, QoS {qos}, {what}"


def stalls(r):
    """The slow frames of a run grouped into episodes (sent less than 200 ms
    apart): how many, and whether the worst one hit every subscriber (the
    server stalled) or a few (some connections)."""
    sf = r.get("slow_frames") or {}
    frames = sorted(sf.get("first") or [])
    if not frames:
        return None
    episodes = [[frames[0]]]
    for f in frames[1:]:
        if f[0] - episodes[-1][-1][0] > 200:
            episodes.append([])
        episodes[-1].append(f)
    worst = max(episodes, key=lambda e: max(x[1] for x in e))
    subs = len({x[2] for x in worst})
    more = "" if len(frames) == sf.get("count") else f" (the first {len(frames)} analysed)"
    return (f"{sf['count']:,} frames over {sf['over_ms']} ms late in {len(episodes)} episode(s){more}; "
            f"the worst: messages sent over {worst[-1][0] - worst[0][0]:.0f} ms from {worst[0][0] / 1000:.1f} s "
            f"into the window, up to {max(x[1] for x in worst):.0f} ms late, on {subs:,} of "
            f"{r.get('subscribers', 0):,} subscribers")


def metric_delta(r, name):
    a, b = r.get("metrics_before") or {}, r.get("metrics_after") or {}
    tot = 0
    found = False
    for k, v in b.items():
        if k == name or k.startswith(name + "{"):
            found = True
            tot += v - a.get(k, 0)
    return tot if found else None


busy = []  # rows measured while other processes took CPU
COLUMNS = 10  # of the latency table


def fail_row(label, why):
    why = (str(why or "?").strip().splitlines() or ["?"])[0][:300].replace("|", "/")
    return f"| {label} | failed ({why}) |" + " |" * (COLUMNS - 2)


def latency_rows(broker, doc, rows, notes, variant=""):
    label = ("Drover" if broker == "drover" else "Mosquitto") + variant
    if doc is None:
        return
    if not doc.get("ok") and not doc.get("runs"):
        rows.append(fail_row(label, doc.get("error")))
        return
    pubs = doc.get("publishers") or {}
    if pubs:
        extra = f", failed: {pubs.get('errors')}" if pubs.get("failed") else ""
        notes.append(f"{label}: {pubs.get('ready')} MQTT publishers connected in "
                     f"{pubs.get('seconds', 0):.1f} s{extra}.")
    for r in doc.get("runs", []):
        if not r.get("ok"):
            rows.append(fail_row(f"{label} {r.get('name')}", r.get("error")))
            continue
        lat = r["latency_us"]
        lost = f"{n(r['lost'])} / {n(r['expected'])}"
        if r.get("duplicates"):
            lost += f", {n(r['duplicates'])} dup"
        if r.get("subscribers_closed"):
            lost += f", {r['subscribers_closed']} subscribers closed {r.get('close_codes')}"
        if r.get("sub_failed"):
            lost += f", {r['sub_failed']} subscribers refused"
        cpu = "-"
        if r.get("server_cpu_pct") is not None:
            cpu = f"{r['server_cpu_pct']:.0f} % ({r['server_cpu_us_per_frame']:.1f} µs/frame)"
        client = "-"
        if r.get("client_cpu_pct") is not None:
            client = f"{r['client_cpu_pct']:.0f} % (main thread {r['client_main_thread_cpu_pct']:.0f} %)"
        other = "-"
        if r.get("foreign_cpu_pct") is not None:
            other = (f"{max(0, r['foreign_cpu_pct']):.0f} % (+ kernel {max(0, r['kthreads_cpu_pct'] or 0):.0f} %, "
                     f"irq {max(0, r['irq_cpu_pct'] or 0):.0f} %)")
        rows.append(f"| {describe(broker, r, variant)} | {n(r['offered_rate'])} | {n(r['delivered_rate'])} | "
                    f"{ms(lat['p50'])} | {ms(lat['p99'])} | {ms(lat['max'])} | {lost} | {cpu} | {client} | {other} |")
        name = describe(broker, r, variant)
        if r.get("skipped"):
            notes.append(f"{name}: the publishers fell behind and skipped {n(r['skipped'])} messages "
                         "(offered rate below target).")
        if r.get("not_ready"):
            notes.append(f"{name}: {n(r['not_ready'])} messages not sent: their publisher had disconnected "
                         f"({r.get('publisher_disconnects')} disconnects).")
        if r.get("qos") and r.get("puback") is not None and r["puback"] < r["published"]:
            notes.append(f"{name}: only {n(r['puback'])} of {n(r['published'])} QoS 1 publishes acknowledged.")
        for k in ("bad_timestamps", "stale", "foreign", "out_of_range"):
            if r.get(k):
                notes.append(f"{name}: {n(r[k])} frames {k.replace('_', ' ')}.")
        if r.get("sub_errors"):
            notes.append(f"{name}: subscriber errors {r['sub_errors']}.")
        if r.get("last_error"):
            notes.append(f"{name}: last error frame {r['last_error']}.")
        if (r.get("foreign_cpu_pct") or 0) > 15:
            busy.append(f"{r['foreign_cpu_pct']:.0f} % ({name})")
        if r.get("busy_attempts_other_cpu_pct"):
            notes.append(f"{name}: repeated because other processes took "
                         f"{', '.join(f'{x} %' for x in r['busy_attempts_other_cpu_pct'])} CPU during the "
                         "earlier attempt(s).")
        loop = (r.get("client_loop_delay_ms") or {}).get("max") or 0
        if loop > 20:
            notes.append(f"{name}: the subscribers' event loop was held up to {loop:.0f} ms once "
                         "(timer delay): part of the tail may be the client.")
        secs = [x for x in r.get("max_latency_ms_by_second") or [] if x is not None]
        if secs and lat["p99"] and lat["p99"] > TARGET_P99_US:
            bad = sum(1 for x in secs if x > TARGET_P99_US / 1000)
            notes.append(f"{name}: {bad} of {len(secs)} seconds of the window had a message over "
                         f"{TARGET_P99_US / 1000:.0f} ms (worst second {max(secs):.0f} ms).")
        slow = stalls(r)
        if slow:
            notes.append(f"{name}: {slow}.")
        if (r.get("disk_busy_pct") or 0) > 30:
            notes.append(f"{name}: the disk was busy {r['disk_busy_pct']:.0f} % of the window, "
                         f"{r.get('disk_written_mb') or 0:.1f} MB written, of which the server wrote "
                         f"{r.get('server_written_mb') or 0:.1f} MB.")
        if (r.get("client_main_thread_cpu_pct") or 0) > 80:
            notes.append(f"{name}: the subscribers' thread was {r['client_main_thread_cpu_pct']:.0f} % busy: "
                         "the client may be what limits this row.")
        dropped = metric_delta(r, "drover_stream_events_dropped_total")
        slow = metric_delta(r, "drover_stream_slow_consumers_total")
        if dropped or slow:
            notes.append(f"{name}: /metrics says {n(dropped)} events dropped, {n(slow)} slow consumers.")


def pair(drover, mosq):
    """(drover run, mosquitto run) pairs with the same QoS and scope."""
    out = []
    m = {(r["qos"], r["scope"]): r for r in (mosq or {}).get("runs", []) if r.get("ok")}
    for r in (drover or {}).get("runs", []):
        if r.get("ok") and r["kind"] == "stream" and (r["qos"], r["scope"]) in m:
            out.append((r, m[(r["qos"], r["scope"])]))
    return out


def ratio(a, b):
    try:
        return f"{a / b:.2f}x"
    except (TypeError, ZeroDivisionError):
        return "-"


def idle_rows(doc, transport):
    name = {"ws": "WebSocket (1 subscription each)", "sse": "SSE (device=)"}[transport]
    if doc is None:
        return None
    if not doc.get("ok"):
        return f"| {name} | failed ({str(doc.get('error', '?'))[:300]}) | | | | |"
    steps = "; ".join(
        f"{s['target']:,}: {s['held']:,} held"
        + (f", {s['failed']} failed" if s["failed"] else "")
        + (f", {s['rss_kb'] / 1024:.1f} MiB" if s.get("rss_kb") else "")
        for s in doc["steps"])
    held = f"{doc['held']:,}"
    if doc.get("failed"):
        held += f" ({doc['failed']} refused: {'; '.join(f'{k} ×{v}' for k, v in doc['errors'].items())[:300]})"
    if doc.get("closed_during_hold"):
        held += f", {doc['closed_during_hold']} closed during the hold"
    rss = "-"
    if doc.get("rss_base_kb") is not None and doc.get("rss_kb") is not None:
        rss = f"{doc['rss_base_kb'] / 1024:.1f} → {doc['rss_kb'] / 1024:.1f} MiB"
    bpc = n(doc.get("bytes_per_conn"))
    return f"| {name} | {held} | {rss} | {bpc} | {steps} |"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--durability", default="?")
    ap.add_argument("--drover-set", default="")
    a = ap.parse_args()

    mosq = load(a.dir, "mosquitto")
    setup = load(a.dir, "drover-setup")
    drover = load(a.dir, "drover")
    notes = []
    rows = []
    if setup is not None and not setup.get("ok"):
        rows.append(fail_row("Drover setup", setup.get("error")))
    elif setup is not None:
        notes.append(f"Drover setup: tenant and {setup.get('created')} devices with secrets in "
                     f"{setup.get('seconds', 0):.1f} s (device-imports, 200 rows per request).")
    latency_rows("drover", drover, rows, notes)
    latency_rows("drover", load(a.dir, "drover-batch"), rows, notes, " (tsdb.durability=batch)")
    latency_rows("mosquitto", mosq, rows, notes)

    if rows:
        print("| scenario | offered msg/s | frames/s delivered (window) | p50 | p99 | max | lost / expected "
              "| server CPU | client CPU | other processes' CPU |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(r)
        print()

    pairs = pair(drover, mosq)
    if pairs:
        print("Drover's live stream against Mosquitto MQTT over WebSocket — **broker-only reference, not the same "
              "work**: Mosquitto routes the MQTT message to a topic subscriber; Drover decodes the JSON, stores "
              "the samples (tsdb), matches stream subscriptions and re-encodes an event.")
        print()
        print("| QoS, subscribers | p99 Drover stream | p99 Mosquitto MQTT/WS | Drover ÷ Mosquitto (p99) "
              "| server CPU µs/frame Drover | Mosquitto | target p99 ≤ 5 ms |")
        print("|---|---|---|---|---|---|---|")
        for d, m in pairs:
            scope = "fan-out 10 × tenant" if d["scope"] == "tenant" else "1 device each"
            met = "met" if (d["latency_us"]["p99"] or 1e12) <= TARGET_P99_US and d["lost"] == 0 else "**not met**"
            if d["lost"]:
                met += f" ({d['lost']:,} lost)"
            print(f"| QoS {d['qos']}, {scope} | {ms(d['latency_us']['p99'])} | {ms(m['latency_us']['p99'])} | "
                  f"{ratio(d['latency_us']['p99'], m['latency_us']['p99'])} | "
                  f"{n(d.get('server_cpu_us_per_frame'), 1)} | {n(m.get('server_cpu_us_per_frame'), 1)} | {met} |")
        print()
    elif drover and any(r.get("ok") and r["kind"] == "stream" for r in drover.get("runs", [])):
        for r in drover["runs"]:
            if r.get("ok") and r["kind"] == "stream":
                met = "met" if (r["latency_us"]["p99"] or 1e12) <= TARGET_P99_US and r["lost"] == 0 else "NOT met"
                notes.append(f"target p99 ≤ 5 ms, {describe('drover', r)}: {met}.")

    idle = [x for x in (idle_rows(load(a.dir, "idle-ws"), "ws"), idle_rows(load(a.dir, "idle-sse"), "sse")) if x]
    if idle:
        print("Idle stream connections held by one Drover process (a fresh process per transport):")
        print()
        hold = next((d.get("hold_s") for d in (load(a.dir, "idle-ws"), load(a.dir, "idle-sse"))
                     if d and d.get("hold_s") is not None), None)
        print(f"| transport | held after the last step + {hold if hold is not None else '?'} s "
              "| server RSS (VmRSS) | bytes per connection | steps |")
        print("|---|---|---|---|---|")
        for r in idle:
            print(r)
        print()

    notes.append("latency: MQTT PUBLISH written by the device's connection (payload {\"run\",\"seq\",\"sent\": "
                 "CLOCK_MONOTONIC ns}) → the frame's 'message' event at the subscriber (node + ws, one process, "
                 "publishers in a worker thread), for messages sent in the measured window; lost = frames "
                 "expected (every message published in the run × its subscribers) − distinct frames received "
                 "after a drain of up to 5 s.")
    notes.append("publishers: raw MQTT 3.1.1 over TCP, one connection per device, paced round robin in 1 ms "
                 "ticks; subscribers take QoS 0 on Mosquitto (the QoS 1 rows are QoS 1 publish → QoS 0 "
                 "delivery); Mosquitto: persistence false, set_tcp_nodelay true.")
    notes.append(f"Drover: tsdb.durability={a.durability}"
                 + (f", DROVER_SET: {a.drover_set}" if a.drover_set else "")
                 + "; the devices authenticate with secrets (one Argon2id check per CONNECT); the stream "
                   "subscribers with the platform token and \"tenant\": \"bench\".")
    notes.append("server CPU: utime+stime of the server process over the measured window (100 % = one core), "
                 "per frame delivered in it; client CPU: the whole node process (publishers + subscribers); "
                 "other processes' CPU: the rest of the machine's busy time in the window (/proc/stat) less "
                 "kernel threads (children of kthreadd: journal, writeback, block workers, which a server's "
                 "fdatasync keeps busy) and interrupt time, both shown in brackets; 100 % = one core.")
    if busy:
        notes.append("WARNING: other processes used CPU during " + "; ".join(busy)
                     + ": on 2 cores that delays the server and the client, those rows' tails are skewed "
                       "(RETRY_BUSY repeats such a run; WAIT_QUIET waits for a calm machine first).")
    for x in notes:
        print(f"- {x}")


if __name__ == "__main__":
    main()
