#!/usr/bin/env python3
"""bench/twin/report.py — the tables of bench/twin.sh from the client's JSON.

Reads DIR/drover.json and DIR/mosquitto.json (twin.mjs run output; either
may be missing or hold {"ok": false, "error": ...}) and prints, in Markdown:
the rate and latency of every run with the Mosquitto reference beside it
where the same exchange ran there (cmd, mqtt), then where the CPU went and
how many exchanges each twin service transaction carried.
"""
import argparse
import json
import os


def load(path):
    if not os.path.exists(path):
        return {"ok": False, "not_run": True}
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"ok": False, "error": f"no result ({e.__class__.__name__})"}


def what(kind, n, devices):
    if kind == "cmd":
        return f"command end to end (sync, wait_ms), {n} in flight"
    if kind == "cmdasync":
        return f"command end to end (202 + long poll), {n} in flight"
    if kind == "mqtt":
        return f"shadow update from devices (MQTT), {n} in flight × {devices} devices"
    if kind == "rest":
        return f"shadow update from REST (PATCH desired), {n} in flight"
    return f"{kind}:{n}"


def ms(us):
    if us is None:
        return "–"
    return f"{us / 1000:.2f} ms" if us < 100_000 else f"{us / 1000:.0f} ms"


def num(v, fmt="{:,.0f}"):
    return "–" if v is None else fmt.format(v)


def runs_of(doc):
    return {r["name"]: r for r in doc.get("runs", []) if isinstance(r, dict) and "name" in r}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    a = ap.parse_args()
    dv = load(os.path.join(a.dir, "drover.json"))
    mq = load(os.path.join(a.dir, "mosquitto.json"))
    d_runs, m_runs = runs_of(dv), runs_of(mq)
    devices = dv.get("devices") or mq.get("devices") or "?"

    print("| exchange | Drover /s | p50 | p99 | failed | Mosquitto ref /s | p50 | p99 | Drover ÷ Mosquitto |")
    print("|---|---|---|---|---|---|---|---|---|")
    names = list(d_runs) + [n for n in m_runs if n not in d_runs]
    for name in names:
        d, m = d_runs.get(name), m_runs.get(name)
        r0 = d or m
        row = [what(r0["kind"], r0["n"], devices)]
        for r in (d,):
            if r and not r.get("skipped") and "rate" in r:
                lat = r.get("latency_us") or {}
                row += [num(r["rate"]), ms(lat.get("p50")), ms(lat.get("p99")), num(r.get("failed"))]
            else:
                row += ["–", "–", "–", (r or {}).get("error", "not run")[:60]]
        if m and not m.get("skipped") and "rate" in m:
            lat = m.get("latency_us") or {}
            row += [num(m["rate"]), ms(lat.get("p50")), ms(lat.get("p99"))]
        else:
            row += ["–", "–", "–"]
        ratio = "–"
        if d and m and d.get("rate") and m.get("rate"):
            ratio = f"{d['rate'] / m['rate']:.3f}×"
        row.append(ratio)
        print("| " + " | ".join(row) + " |")
    print()
    print("Mosquitto is a broker-only reference, not the same work: it routes the same MQTT "
          "messages between the same clients; Drover also stores the command and each of its "
          "transitions, or the shadow change and its history, durably (SQLite, fsync) before it answers.")
    print()

    print("| run | server CPU | server CPU per exchange | client CPU | kernel threads | other CPU | "
          "twin transactions/s | exchanges per transaction | device messages per transaction |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, runs in (("Drover", d_runs), ("Mosquitto", m_runs)):
        for name, r in runs.items():
            if r.get("skipped") or "rate" not in r:
                continue
            print(f"| {label} {name} | {num(r.get('server_cpu_pct'), '{:.0f} %')} "
                  f"| {num(r.get('server_cpu_us_per_op'), '{:.0f} µs')} "
                  f"| {num(r.get('client_cpu_pct'), '{:.0f} %')} "
                  f"| {num(r.get('kernel_threads_cpu_pct'), '{:.0f} %')} "
                  f"| {num(r.get('others_cpu_pct'), '{:.0f} %')} "
                  f"| {num(r.get('twin_batches_per_s'))} "
                  f"| {num(r.get('ops_per_batch'), '{:.2f}')} "
                  f"| {num(r.get('device_messages_per_batch'), '{:.2f}')} |")
    print()
    print("CPU in % of one CPU over the measured window. Kernel threads: the journal, writeback "
          "and block-layer work (mostly the server's fsyncs); other: the rest of the machine "
          "(other processes, interrupts). Twin transactions: drover_twin_batches_total, the "
          "service thread's transactions for device messages (shadow updates, command acks and "
          "responses). Not counted there: its transaction for the command sends of a turn, "
          "and the API thread's own (one per command created, one per REST shadow write).")
    print()

    problems = []
    for label, doc in (("Drover", dv), ("Mosquitto", mq)):
        if doc.get("not_run"):
            continue
        if doc.get("error"):
            problems.append(f"{label}: {doc['error'][:300]}")
        con = doc.get("connect") or {}
        if con.get("failed"):
            problems.append(f"{label}: {con['failed']} devices did not connect: {json.dumps(con.get('errors'))[:200]}")
        if doc.get("platform_errors"):
            problems.append(f"{label}: platform client errors {doc['platform_errors']}: {doc.get('platform_first_error')}")
        for name, r in runs_of(doc).items():
            if r.get("skipped"):
                continue
            if not r.get("ok"):
                problems.append(f"{label} {name}: {str(r.get('error'))[:300]}")
            if r.get("failures"):
                problems.append(f"{label} {name}: failures {json.dumps(r['failures'])[:300]}")
            if r.get("reject_codes"):
                problems.append(f"{label} {name}: rejected {json.dumps(r['reject_codes'])}, "
                                f"first {r.get('first_rejected')}")
            if r.get("device_errors"):
                problems.append(f"{label} {name}: device side {json.dumps(r['device_errors'])[:200]}")
            if r.get("busy_retries"):
                problems.append(f"{label} {name}: run {r['busy_retries'] + 1} times (the machine was busy); "
                                "the least disturbed is shown")
            if r.get("busy_before_pct") is not None and r["busy_before_pct"] > 10:
                problems.append(f"{label} {name}: the machine was {r['busy_before_pct']:.0f} % busy before the run")
            if r.get("others_cpu_pct") is not None and r["others_cpu_pct"] > 25:
                problems.append(f"{label} {name}: other processes took {r['others_cpu_pct']:.0f} % of a CPU "
                                "during the window: skewed")
    for p in problems:
        print(f"- {p}")


if __name__ == "__main__":
    main()
