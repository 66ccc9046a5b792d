#!/usr/bin/python3
"""Load and query clients for bench/tsdb.sh: InfluxDB 1.x, PostgreSQL and Drover.

One subcommand per step; each writes one JSON object to --out (the bash
script reads the fields back) and exits 0 even when the server misbehaves,
with {"ok": false, "error": "..."} so the script can still print the other
rows.  Servers are started and stopped by the script, not here.

What is timed, the same way for the three systems:
  - ingest: wall time from the first byte of the first request sent to the
    last answer received (the answer of each system means "durable": InfluxDB
    fsyncs its WAL before 204, PostgreSQL's COMMIT, Drover's fsync before
    200).  Building the request bodies from the dataset files happens
    before the clock starts.
  - queries: client-side wall time of one request on an open keep-alive
    connection, from sending the request to the last byte of the answer
    (http.client for InfluxDB and Drover, psycopg2 execute + fetchall over
    the Unix socket for PostgreSQL).  Parsing and checking the answer is
    done after the clock stops.  3 warm-up runs, then RUNS runs (>= 20),
    the median is reported; the answer is checked once (row counts), so a
    fast wrong answer is reported as a failure, not as a speed.

Not here: starting servers, measuring disk usage (du, in the script),
generating the dataset (shared/bench/tsdb_dataset.py).
"""
import argparse
import http.client
import json
import os
import socket
import statistics
import sys
import threading
import time
import urllib.parse

T0 = 1767225600000  # first timestamp of the dataset, ms
HOUR = 3_600_000
# Query (a): one series, 12 h, max per 5 min bucket.
A_DEVICE, A_METRIC = "dev00042", "m3"
A_FROM, A_TO = T0 + 1 * HOUR, T0 + 13 * HOUR
# Query (b): every series, 1 h, mean per series.
B_FROM, B_TO = T0 + 6 * HOUR, T0 + 7 * HOUR
BUCKET_MS = 300_000


class Failed(Exception):
    """A step that cannot give a number; its message goes into the JSON."""


def write_out(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)
        f.write("\n")


def expected_a_buckets(points):
    """Number of 5 min buckets query (a) should return for a dataset of `points`
    samples per series at a 10 s step (fewer when the dataset is shrunk)."""
    last = T0 + (points - 1) * 10_000
    end = min(A_TO, last + 1)
    if end <= A_FROM:
        return 0
    return (end - A_FROM + BUCKET_MS - 1) // BUCKET_MS


def b_has_data(points):
    return T0 + (points - 1) * 10_000 >= B_FROM


class Http:
    """One keep-alive HTTP/1.1 connection; reconnects once if the server closed it."""

    def __init__(self, port, token=None):
        self.port = port
        self.token = token
        self.conn = None

    def request(self, method, path, body=None, ctype=None, timeout=300):
        """Send one request; returns (status, body bytes)."""
        headers = {}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        if ctype:
            headers["Content-Type"] = ctype
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
                self.conn.connect()
                # No Nagle delay on requests sent in more than one write.
                self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                data = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.close()
                return r.status, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt:
                    raise

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def time_runs(fn, runs, warm, deadline):
    """fn() once per run; returns (median seconds, runs done, last answer).
    Warm-ups are not counted; stops early (fewer runs) past `deadline`."""
    answer = None
    for _ in range(warm):
        answer = fn()
    times = []
    while len(times) < runs:
        t = time.perf_counter()
        answer = fn()
        times.append(time.perf_counter() - t)
        if time.time() > deadline and len(times) >= 5:
            break
    return statistics.median(times), len(times), answer


def parallel_posts(port, path, bodies, writers, ctype, token=None, ok=(200, 204)):
    """POST every body in `bodies` (in order, spread over `writers` connections
    taking the next body as they finish one); returns (seconds, answers).
    The clock runs from the first request sent to the last answer read."""
    lock = threading.Lock()
    nxt = [0]
    answers = [None] * len(bodies)
    errors = []

    def worker():
        h = Http(port, token)
        try:
            while True:
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i >= len(bodies) or errors:
                    return
                status, data = h.request("POST", path, bodies[i], ctype)
                if status not in ok:
                    errors.append(f"HTTP {status}: {data[:300].decode(errors='replace')}")
                    return
                answers[i] = data
        except Exception as e:  # a connection error ends the load, reported below
            errors.append(f"{type(e).__name__}: {e}")
        finally:
            h.close()

    threads = [threading.Thread(target=worker) for _ in range(writers)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    seconds = time.perf_counter() - t
    if errors:
        raise Failed(errors[0])
    return seconds, answers


def read_chunks(path, lines_per_chunk, header=None):
    """The file's lines in chunks of `lines_per_chunk` (bytes each); with
    `header`, the file's first line is skipped and `header` starts every chunk."""
    chunks = []
    with open(path, "rb") as f:
        if header is not None:
            f.readline()
        buf = []
        for line in f:
            buf.append(line)
            if len(buf) == lines_per_chunk:
                chunks.append((header or b"") + b"".join(buf))
                buf = []
        if buf:
            chunks.append((header or b"") + b"".join(buf))
    return chunks


# -- InfluxDB 1.x -------------------------------------------------------------


def influx_query(h, q):
    path = "/query?" + urllib.parse.urlencode({"db": "bench", "q": q, "epoch": "ms"})
    status, data = h.request("GET", path)
    if status != 200:
        raise Failed(f"InfluxDB query HTTP {status}: {data[:300].decode(errors='replace')}")
    return data


def influx_load(a):
    h = Http(a.port)
    status, data = h.request("POST", "/query?" + urllib.parse.urlencode({"q": "CREATE DATABASE bench"}))
    h.close()
    if status != 200:
        raise Failed(f"CREATE DATABASE: HTTP {status} {data[:200]!r}")
    bodies = read_chunks(a.file, a.batch)
    n = sum(b.count(b"\n") for b in bodies)
    seconds, _ = parallel_posts(a.port, "/write?db=bench&precision=ns", bodies, a.writers, "text/plain")
    return {"ok": True, "samples": n, "seconds": seconds, "rate": n / seconds, "writers": a.writers,
            "batch": a.batch}


def influx_queries(a):
    h = Http(a.port)
    qa = (f"SELECT max({A_METRIC}) FROM m WHERE device='{A_DEVICE}' AND time >= {A_FROM}ms "
          f"AND time < {A_TO}ms GROUP BY time(5m)")
    qb = f"SELECT mean(*) FROM m WHERE time >= {B_FROM}ms AND time < {B_TO}ms GROUP BY device"
    out = {"ok": True}
    for name, q in (("a", qa), ("b", qb)):
        med, runs, data = time_runs(lambda: influx_query(h, q), a.runs, a.warm, a.deadline)
        res = json.loads(data)["results"][0]
        if "error" in res:
            raise Failed(f"query {name}: {res['error']}")
        series = res.get("series", [])
        if name == "a":
            answer = [[v[0], v[1]] for s in series for v in s["values"] if v[1] is not None]
        else:  # columns: time, mean_m0, mean_m1, ...
            answer = [[f"{s['tags']['device']}/{col[len('mean_'):]}", v[i]] for s in series for v in s["values"]
                      for i, col in enumerate(s["columns"]) if i and v[i] is not None]
        out[name] = {"p50_ms": med * 1000, "runs": runs, "rows": len(answer), "answer": answer}
    h.close()
    return out


# -- PostgreSQL ---------------------------------------------------------------


def pg_connect(a):
    import psycopg2

    return psycopg2.connect(host=a.socket_dir, port=a.port, user="postgres", dbname="postgres")


def pg_load(a):
    conn = pg_connect(a)
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS samples")
    conn.commit()
    with open(a.file, "rb") as f:
        n = sum(1 for _ in f) - 1
    # Open the file before the clock; COPY streams it in 1 MiB reads.
    f = open(a.file, "rb")
    t = time.perf_counter()
    # One transaction: with wal_level=minimal a table created in the same
    # transaction is loaded without WAL and fsynced at COMMIT.  The index is
    # built after the rows are in (faster than maintaining it row by row).
    cur.execute("CREATE TABLE samples (device text NOT NULL, metric text NOT NULL, "
                "ts bigint NOT NULL, value double precision NOT NULL)")
    cur.copy_expert("COPY samples (device, metric, ts, value) FROM STDIN WITH (FORMAT csv, HEADER true)",
                    f, size=1 << 20)
    copy_s = time.perf_counter() - t
    cur.execute("CREATE INDEX samples_series ON samples (device, metric, ts)")
    conn.commit()
    seconds = time.perf_counter() - t
    f.close()
    # Not timed: statistics and the visibility map for the planner, then a checkpoint.
    conn.autocommit = True
    cur.execute("VACUUM ANALYZE samples")
    cur.execute("CHECKPOINT")
    cur.execute("SELECT pg_total_relation_size('samples'), pg_relation_size('samples'), count(*) FROM samples")
    total, heap, rows = cur.fetchone()
    conn.close()
    if rows != n:
        raise Failed(f"COPY stored {rows} rows of {n}")
    return {"ok": True, "samples": n, "seconds": seconds, "copy_seconds": copy_s, "rate": n / seconds,
            "bytes": total, "heap_bytes": heap, "bytes_per_sample": total / n}


def pg_queries(a):
    conn = pg_connect(a)
    conn.autocommit = True
    cur = conn.cursor()
    qa = ("SELECT ts / %(b)s * %(b)s AS bucket, max(value) FROM samples "
          "WHERE device = %(d)s AND metric = %(m)s AND ts >= %(f)s AND ts < %(t)s "
          "GROUP BY bucket ORDER BY bucket")
    pa = {"b": BUCKET_MS, "d": A_DEVICE, "m": A_METRIC, "f": A_FROM, "t": A_TO}
    qb = ("SELECT device, metric, avg(value) FROM samples WHERE ts >= %(f)s AND ts < %(t)s "
          "GROUP BY device, metric")
    pb = {"f": B_FROM, "t": B_TO}
    out = {"ok": True}
    for name, q, p in (("a", qa, pa), ("b", qb, pb)):

        def run(q=q, p=p):
            cur.execute(q, p)
            return cur.fetchall()

        med, runs, rows = time_runs(run, a.runs, a.warm, a.deadline)
        if name == "a":
            answer = [[int(r[0]), r[1]] for r in rows]
        else:
            answer = [[f"{r[0]}/{r[1]}", r[2]] for r in rows]
        cur.execute("EXPLAIN (COSTS OFF) " + q, p)
        lines = [r[0].strip().lstrip("-> ") for r in cur.fetchall()]
        plan = ", ".join(x for x in lines if "Scan" in x or "Workers" in x) or " / ".join(lines[:3])
        out[name] = {"p50_ms": med * 1000, "runs": runs, "rows": len(rows), "plan": plan, "answer": answer}
    conn.close()
    return out


# -- Drover -------------------------------------------------------------------


def drover_check(status, data, want, what):
    if status not in want:
        raise Failed(f"{what}: HTTP {status} {data[:300].decode(errors='replace')}")
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


def drover_setup(a):
    h = Http(a.port, a.token)
    s, d = h.request("POST", "/api/v1/tenants", json.dumps({"id": "bench", "name": "Bench"}), "application/json")
    drover_check(s, d, (201, 409), "POST /api/v1/tenants")
    csv = "id\n" + "".join(f"dev{i:05d}\n" for i in range(a.devices))
    s, d = h.request("POST", "/api/v1/tenants/bench/device-imports", csv, "text/csv")
    drover_check(s, d, (200,), "POST device-imports")
    if a.lat_secret:
        s, d = h.request("POST", "/api/v1/tenants/bench/devices", json.dumps({"id": "lat"}), "application/json")
        drover_check(s, d, (201, 409), "POST devices (lat)")
        s, d = h.request("POST", "/api/v1/tenants/bench/devices/lat/credentials",
                         json.dumps({"kind": "secret", "secret": a.lat_secret}), "application/json")
        drover_check(s, d, (201,), "POST credentials (lat)")
    h.close()
    return {"ok": True}


def drover_load(a):
    header = b"device,metric,ts_ms,value\n"
    bodies = read_chunks(a.file, a.chunk, header)
    n = sum(b.count(b"\n") - 1 for b in bodies)
    seconds, answers = parallel_posts(a.port, "/api/v1/tenants/bench/telemetry/import", bodies, a.writers,
                                      "text/csv", a.token, ok=(200,))
    accepted = 0
    rejected = 0
    for data in answers:
        r = json.loads(data)
        accepted += int(r.get("accepted", 0))
        rejected += len(r.get("rejected") or [])
    if accepted != n:
        raise Failed(f"accepted {accepted} of {n} samples ({rejected} rejected rows reported)")
    return {"ok": True, "samples": n, "seconds": seconds, "rate": n / seconds, "writers": a.writers,
            "chunk": a.chunk}


def drover_answer(answer, name, fn):
    """The buckets (query a) or series (query b) of an aggregate answer
    (TelemetryAggregate / TelemetryTenantAggregate in docs/openapi.yaml)
    that carry a value for `fn`, as [key, value] pairs."""
    items = [x for x in answer.get("items", []) if x.get(fn) is not None]
    if name == "a":
        return [[x["ts"], x[fn]] for x in items]
    return [[f"{x['device']}/{x['key']}", x[fn]] for x in items]


def drover_queries(a):
    h = Http(a.port, a.token)
    pa = (f"/api/v1/tenants/bench/devices/{A_DEVICE}/telemetry/aggregate?"
          + urllib.parse.urlencode({"key": A_METRIC, "from": A_FROM, "to": A_TO, "bucket": "5m", "fn": "max"}))
    pb = "/api/v1/tenants/bench/telemetry/aggregate?" + urllib.parse.urlencode(
        {"from": B_FROM, "to": B_TO, "fn": "avg"})
    out = {"ok": True}
    for name, path, fn in (("a", pa, "max"), ("b", pb, "avg")):

        def run(path=path):
            s, d = h.request("GET", path)
            if s != 200:
                raise Failed(f"GET {path}: HTTP {s} {d[:300].decode(errors='replace')}")
            return d

        med, runs, data = time_runs(run, a.runs, a.warm, a.deadline)
        try:
            answer = drover_answer(json.loads(data), name, fn)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise Failed(f"query {name}: unexpected answer ({e}): {data[:200].decode(errors='replace')}")
        out[name] = {"p50_ms": med * 1000, "runs": runs, "rows": len(answer), "bytes": len(data),
                     "answer": answer}
    h.close()
    return out


def find_value(obj, key, want):
    """Does a JSON answer of .../telemetry/latest show `key` == want?  Accepts
    {"v": 5}, {"v": {"value": 5, ...}} and [{"key": "v", "value": 5}, ...]."""
    if isinstance(obj, dict):
        if key in obj:
            v = obj[key]
            if isinstance(v, dict):
                v = v.get("value", v.get("v"))
            if v == want:
                return True
        if obj.get("key") == key and obj.get("value") == want:
            return True
        return any(find_value(v, key, want) for v in obj.values() if isinstance(v, (dict, list)))
    if isinstance(obj, list):
        return any(find_value(v, key, want) for v in obj)
    return False


def drover_latency(a):
    import paho.mqtt.client as mqtt

    h = Http(a.port, a.token)
    path = "/api/v1/tenants/bench/devices/lat/telemetry/latest"
    connected = threading.Event()
    c = mqtt.Client(client_id="lat", protocol=mqtt.MQTTv311)
    c.username_pw_set("bench/lat", a.lat_secret)
    c.on_connect = lambda cl, ud, fl, rc: (ud.update(rc=rc), connected.set())
    rc = {}
    c.user_data_set(rc)
    c.connect("127.0.0.1", a.mqtt_port, keepalive=60)
    c.loop_start()
    try:
        if not connected.wait(10) or rc.get("rc") != 0:
            raise Failed(f"MQTT connect as bench/lat: rc {rc.get('rc')}")
        lat = []
        polls = 0
        for i in range(1, a.n + 1):
            t = time.perf_counter()
            info = c.publish("devices/lat/telemetry", json.dumps({"v": i}), qos=1)
            info.wait_for_publish(timeout=10)
            if not info.is_published():
                raise Failed(f"no PUBACK for sample {i}")
            while True:
                s, d = h.request("GET", path)
                polls += 1
                if s == 200 and find_value(json.loads(d), "v", i):
                    break
                if s not in (200, 404):
                    raise Failed(f"GET {path}: HTTP {s} {d[:300].decode(errors='replace')}")
                if time.perf_counter() - t > 5:
                    raise Failed(f"sample {i} not visible after 5 s; last answer: {d[:300].decode(errors='replace')}")
            lat.append(time.perf_counter() - t)
        lat.sort()
        p99 = lat[min(len(lat) - 1, int(round(0.99 * len(lat))) - 1)]
        return {"ok": True, "n": len(lat), "p50_ms": statistics.median(lat) * 1000, "p99_ms": p99 * 1000,
                "max_ms": lat[-1] * 1000, "polls_per_sample": polls / len(lat)}
    finally:
        c.loop_stop()
        c.disconnect()
        h.close()


# -- cross-check --------------------------------------------------------------


def compare(a):
    """Do the systems' answers agree?  --file is the reference's query JSON,
    --other the one checked; values are compared to 1e-6 relative (InfluxDB
    and PostgreSQL sum in a different order than Drover)."""
    ref, other = json.load(open(a.file)), json.load(open(a.other))
    out = {"ok": True}
    for q in ("a", "b"):
        r = {str(k): v for k, v in ref[q]["answer"]}
        o = {str(k): v for k, v in other[q]["answer"]}
        missing = sorted(set(r) - set(o))
        extra = sorted(set(o) - set(r))
        differ = [k for k in set(r) & set(o) if abs(r[k] - o[k]) > 1e-6 * max(1.0, abs(r[k]))]
        out[q] = {"same": not (missing or extra or differ), "values": len(r), "missing": missing[:3],
                  "extra": extra[:3], "differ": [[k, r[k], o[k]] for k in sorted(differ)[:3]],
                  "counts": [len(missing), len(extra), len(differ)]}
    return out


# -- main ---------------------------------------------------------------------

STEPS = {
    "influx-load": influx_load,
    "influx-query": influx_queries,
    "pg-load": pg_load,
    "pg-query": pg_queries,
    "drover-setup": drover_setup,
    "drover-load": drover_load,
    "drover-query": drover_queries,
    "drover-lat": drover_latency,
    "compare": compare,
}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("step", choices=sorted(STEPS))
    p.add_argument("--out", required=True, help="JSON result file")
    p.add_argument("--port", type=int, help="HTTP port (PostgreSQL: its port, with --socket-dir)")
    p.add_argument("--socket-dir", help="PostgreSQL's Unix socket directory")
    p.add_argument("--mqtt-port", type=int)
    p.add_argument("--token", default=os.environ.get("DROVER_TOKEN"))
    p.add_argument("--file", help="dataset file (CSV, or line protocol for InfluxDB); compare: reference JSON")
    p.add_argument("--other", help="compare: the query JSON checked against --file")
    p.add_argument("--batch", type=int, default=5000, help="InfluxDB lines per POST")
    p.add_argument("--chunk", type=int, default=100_000, help="Drover rows per POST")
    p.add_argument("--writers", type=int, default=1, help="parallel connections for the load")
    p.add_argument("--devices", type=int, default=100)
    p.add_argument("--points", type=int, default=5000, help="points per series in the dataset")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warm", type=int, default=3)
    p.add_argument("--deadline", type=float, default=float("inf"), help="Unix time: cut query runs short after it")
    p.add_argument("--lat-secret", default="")
    p.add_argument("--n", type=int, default=500, help="latency samples")
    a = p.parse_args()
    try:
        res = STEPS[a.step](a)
        for q in ("a", "b"):
            if isinstance(res.get(q), dict) and "p50_ms" in res[q]:
                want = expected_a_buckets(a.points) if q == "a" else (a.devices * 10 if b_has_data(a.points) else 0)
                res[q]["expected_rows"] = want
    except Exception as e:
        res = {"ok": False, "error": f"{type(e).__name__}: {e}"[:500]}
    write_out(a.out, res)
    if not res.get("ok"):
        print(f"tsdb_client {a.step}: {res['error']}", file=sys.stderr)


if __name__ == "__main__":
    main()
