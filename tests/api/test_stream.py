#!/usr/bin/python3
"""Live streams under load (docs/stream.md, "Slow consumers" and "Metrics"), black box with raw
sockets for WebSocket and Server-Sent Events and a raw MQTT publisher.

The slow-consumer test: one WebSocket and one SSE client that never read (SO_RCVBUF made small
before connecting, so the server's output backs up fast), one WebSocket and one SSE client
reading normally, and a device publishing telemetry at a steady rate with QoS 1.  It checks that
(a) the slow clients are told — once the server has counted both drops (without them reading
a byte), they read: the WebSocket finds the final {"type":"error","code":"slow-consumer"} frame
and close code 4008, the SSE stream an `event: error` with code slow-consumer — and dropped
(EOF, drover_stream_slow_consumers_total, drover_stream_events_dropped_total);
(b) the reading subscribers received every event, once, in order; (c) the publisher was not held
up: the same run without the slow clients is the baseline, and the PUBACK latency and throughput
of both runs are printed (never asserted: timing goals live in benchmarks).
Then the drover_stream_* lines of /metrics, with tenant labels.

Telemetry uses tsdb.durability=batch so that the publisher measures the stream hub and the
broker, not fdatasync.

Usage: test_stream.py --drover BINARY [-k NAME]
Ends with "N passed, N failed".
"""
import base64
import contextlib
import json
import os
import re
import select
import socket
import statistics
import struct
import sys
import threading
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
from apilib import HOST, Suite, TestFailure, check, eq, expect, start_server  # noqa: E402

sys.path.insert(0, os.path.join(HERE, "..", "broker"))
from mqtt_testlib import P, RawClient, connect_packet, disconnect_packet, publish_packet  # noqa: E402

suite = Suite("test_stream")
SECRET = "stream-test-secret-0001"
MAX_BUFFER = 1048576      # stream.max_buffer_bytes for this server (the default, said explicitly)
N_MESSAGES = 3000         # per publisher run
RATE = 500                # messages per second, steady
WINDOW = 20               # QoS 1 publishes in flight (the broker's receive maximum)
PAD = "x" * 1800          # makes each event about 2 KB: 6 MB per run, far beyond any buffer
SLOW_RCVBUF = 4096
# The reading subscribers get large socket buffers, so that a pause of their thread on a busy
# machine (other builds, the GIL) is absorbed by the kernel rather than the server's 1 MiB.
READER_RCVBUF = 4 << 20


# -- raw stream clients -----------------------------------------------------------------------

def _connect(port, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect((HOST, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _read_head(sock, buf):
    """Read an HTTP response head; returns (status, headers dict, rest of the bytes)."""
    deadline = time.monotonic() + 10
    while b"\r\n\r\n" not in buf:
        if time.monotonic() > deadline:
            raise TestFailure(f"no response head: {bytes(buf[:300])!r}")
        d = sock.recv(65536)
        if not d:
            raise TestFailure(f"closed before a response head: {bytes(buf[:300])!r}")
        buf += d
    i = buf.index(b"\r\n\r\n")
    lines = bytes(buf[:i]).decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(m.group(1)) if m else 0, headers, bytearray(buf[i + 4:])


class WsClient:
    """A raw RFC 6455 client on /api/v1/stream: masked text frames out, frames in."""

    def __init__(self, port, token, rcvbuf=None):
        self.sock = _connect(port, rcvbuf)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET /api/v1/stream HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Authorization: Bearer {token}\r\n\r\n")
        self.sock.sendall(req.encode())
        status, _, self.buf = _read_head(self.sock, bytearray())
        eq(status, 101, "WebSocket upgrade")
        self.eof = False
        self.lock = threading.Lock()

    def send_frame(self, opcode, payload):
        payload = payload.encode() if isinstance(payload, str) else payload
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        body = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        with self.lock:
            self.sock.sendall(head + mask + body)

    def send_json(self, obj):
        self.send_frame(0x1, json.dumps(obj))

    def _take(self):
        b = self.buf
        if len(b) < 2:
            return None
        n = b[1] & 0x7F
        at = 2
        if n == 126:
            if len(b) < 4:
                return None
            n = struct.unpack_from("!H", b, 2)[0]
            at = 4
        elif n == 127:
            if len(b) < 10:
                return None
            n = struct.unpack_from("!Q", b, 2)[0]
            at = 10
        if b[1] & 0x80:
            raise TestFailure("the server sent a masked frame")
        if len(b) < at + n:
            return None
        opcode = b[0] & 0x0F
        payload = bytes(b[at:at + n])
        del b[:at + n]
        return opcode, payload

    def read_frame(self, timeout=10.0):
        """(opcode, payload), or None at EOF; raises TestFailure on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            f = self._take()
            if f:
                return f
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TestFailure("timed out reading a WebSocket frame")
            r, _, _ = select.select([self.sock], [], [], left)
            if r:
                try:
                    d = self.sock.recv(262144)
                except OSError:
                    d = b""
                if not d:
                    self.eof = True
                self.buf += d

    def request(self, obj, timeout=10.0):
        """Send a message and return the ack / error answering it."""
        self.send_json(obj)
        while True:
            f = self.read_frame(timeout)
            if f is None:
                raise TestFailure(f"closed while waiting for the answer to {obj}")
            if f[0] == 0x1:
                m = json.loads(f[1])
                if m.get("type") in ("ack", "error") and m.get("id") == obj.get("id"):
                    return m
            elif f[0] == 0x9:
                self.send_frame(0xA, f[1])

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class SseClient:
    """A raw GET /api/v1/stream/sse reader (chunked or not); events as dicts."""

    def __init__(self, port, token, query, rcvbuf=None):
        self.sock = _connect(port, rcvbuf)
        req = (f"GET /api/v1/stream/sse?{query} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
               f"Accept: text/event-stream\r\nAuthorization: Bearer {token}\r\n\r\n")
        self.sock.sendall(req.encode())
        self.status, self.headers, self.raw = _read_head(self.sock, bytearray())
        eq(self.status, 200, f"SSE stream: {bytes(self.raw[:300])!r}")
        check(self.headers.get("content-type", "").startswith("text/event-stream"), "SSE content type")
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self.text = ""      # de-chunked, decoded stream text not yet parsed into events
        self.eof = False

    def _dechunk(self):
        if not self.chunked:
            self.text += self.raw.decode("utf-8", errors="replace")
            self.raw.clear()
            return
        while True:
            i = self.raw.find(b"\r\n")
            if i < 0:
                return
            size = int(bytes(self.raw[:i]).split(b";")[0] or b"0", 16)
            if len(self.raw) < i + 2 + size + 2:
                return
            self.text += bytes(self.raw[i + 2:i + 2 + size]).decode("utf-8", errors="replace")
            del self.raw[:i + 2 + size + 2]
            if size == 0:
                self.eof = True
                return

    def _fill(self, timeout):
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return False
        try:
            d = self.sock.recv(262144)
        except OSError:
            d = b""
        if not d:
            self.eof = True
            return False
        self.raw += d
        self._dechunk()
        return True

    def events(self, timeout):
        """Every complete event block that arrives within timeout (stops early at EOF)."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            while True:
                m = re.search(r"\r\n\r\n|\n\n", self.text)
                if not m:
                    break
                block = self.text[:m.start()]
                self.text = self.text[m.end():]
                ev = {}
                for line in re.split(r"\r\n|\n", block):
                    if line.startswith(":") or not line:
                        continue
                    k, _, v = line.partition(":")
                    v = v[1:] if v.startswith(" ") else v
                    ev[k] = ev[k] + "\n" + v if k in ev else v
                if "data" in ev or "event" in ev:
                    out.append(ev)
            left = deadline - time.monotonic()
            if self.eof or left <= 0:
                return out
            self._fill(left)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Reader(threading.Thread):
    """Reads a WebSocket or SSE stream as fast as it can, collecting telemetry seq numbers."""

    def __init__(self, name, client):
        super().__init__(daemon=True, name=name)
        self.client = client
        self.seqs = []
        self.other = []      # anything that is not telemetry
        self.stop = False
        self.error = None

    def run(self):
        try:
            while not self.stop:
                if isinstance(self.client, WsClient):
                    try:
                        f = self.client.read_frame(0.2)
                    except TestFailure:
                        continue
                    if f is None:
                        return
                    op, payload = f
                    if op == 0x9:
                        self.client.send_frame(0xA, payload)
                    elif op == 0x1:
                        self._take(json.loads(payload))
                    elif op == 0x8:
                        self.other.append({"close": payload})
                        return
                else:
                    for ev in self.client.events(0.2):
                        self._take(json.loads(ev["data"]) if "data" in ev else ev)
                    if self.client.eof:
                        return
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def _take(self, m):
        if m.get("type") == "telemetry":
            self.seqs.append(m["values"]["seq"])
        else:
            self.other.append(m)


# -- the publisher ----------------------------------------------------------------------------

def publish_run(port, tenant, dev, first_seq, n=N_MESSAGES, rate=RATE):
    """Publish n telemetry messages from tenant/dev at a steady rate, QoS 1, at most WINDOW in
    flight.  Returns (seqs, PUBACK latencies in s, elapsed s)."""
    c = RawClient(port, version=5)
    c.send(connect_packet(dev, version=5, username=f"{tenant}/{dev}", password=SECRET))
    eq(c.expect(P.CONNACK, timeout=10).reason, 0, "publisher connects")
    inflight = {}
    lat = []
    seqs = []
    sent = 0
    t0 = time.monotonic()
    next_at = t0
    last_progress = t0
    while sent < n or inflight:
        now = time.monotonic()
        while sent < n and len(inflight) < WINDOW and now >= next_at:
            pid = sent % 65535 + 1
            s = first_seq + sent
            payload = json.dumps({"seq": s, "pad": PAD})
            c.send(publish_packet(f"devices/{dev}/telemetry", payload, qos=1, pid=pid, version=5))
            inflight[pid] = now
            seqs.append(s)
            sent += 1
            next_at += 1.0 / rate
        wait = 0.5 if (sent >= n or len(inflight) >= WINDOW) else max(next_at - time.monotonic(), 0.0005)
        p = c.recv(timeout=wait)
        now = time.monotonic()
        if p is None:
            if now - last_progress > 15:
                raise TestFailure(f"no PUBACK for 15 s ({len(inflight)} in flight, {sent} sent)")
            continue
        if p.type == P.PUBACK:
            check(p.pid in inflight, f"PUBACK for an unknown packet id {p.pid}")
            eq(p.reason, 0, f"PUBACK reason for packet {p.pid}")
            lat.append(now - inflight.pop(p.pid))
            last_progress = now
    elapsed = time.monotonic() - t0
    c.send(disconnect_packet(version=5))
    c.close()
    return seqs, lat, elapsed


def describe(name, lat, elapsed, n):
    q = statistics.quantiles(lat, n=100)
    return (f"{name}: {n} messages in {elapsed:.2f} s ({n / elapsed:.0f}/s; target {RATE}/s), PUBACK "
            f"latency ms mean {statistics.mean(lat) * 1e3:.2f} p50 {q[49] * 1e3:.2f} "
            f"p99 {q[98] * 1e3:.2f} max {max(lat) * 1e3:.2f}")


# -- metrics ----------------------------------------------------------------------------------

def metrics(env):
    return expect(env.api.get("/metrics", token=None), 200, "metrics").text


def metric_values(text, name):
    """{labels string: value} of every sample of a metric (labels '' when none)."""
    out = {}
    for line in text.splitlines():
        m = re.match(re.escape(name) + r"(\{[^}]*\})?\s+([0-9.eE+-]+|NaN)\s*$", line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


def metric_total(text, name, labels_contain=""):
    return sum(v for k, v in metric_values(text, name).items() if labels_contain in k)


# -- setup ------------------------------------------------------------------------------------

class Env:
    def __init__(self, d, api):
        self.d = d
        self.api = api
        self.token = None
        self.seq = 0
        self.results = {}

    def alive(self):
        return self.d.alive()


@contextlib.contextmanager
def setup(binary):
    settings = {"stream.max_buffer_bytes": str(MAX_BUFFER), "tsdb.durability": "batch"}
    with start_server(binary, **settings) as (d, api):
        env = Env(d, api)
        expect(api.post("/api/v1/tenants", {"id": "acme", "name": "acme"}), 201, "tenant")
        r = expect(api.post("/api/v1/tenants/acme/tokens", {"name": "viewer", "role": "viewer"}), 201,
                   "viewer token")
        env.token = r.json["token"]
        for dev in ("pub1", "quiet"):
            expect(api.post("/api/v1/tenants/acme/devices", {"id": dev}), 201, "device")
            expect(api.post(f"/api/v1/tenants/acme/devices/{dev}/credentials",
                            {"kind": "secret", "secret": SECRET}), 201, "secret")
        try:
            yield env
        except BaseException:
            print(d.read_log()[-4000:])
            raise


def readers(env):
    """A WebSocket and an SSE subscriber of pub1, reading in threads."""
    ws = WsClient(env.d.http_port, env.token, rcvbuf=READER_RCVBUF)
    a = ws.request({"op": "subscribe", "id": "r", "devices": ["pub1"]})
    eq(a.get("type"), "ack", f"reader subscribes: {a}")
    sse = SseClient(env.d.http_port, env.token, "device=pub1", rcvbuf=READER_RCVBUF)
    rs = [Reader("ws-reader", ws), Reader("sse-reader", sse)]
    for r in rs:
        r.start()
    return rs


def wait_readers(rs, want, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(len(r.seqs) >= len(want) for r in rs) or any(r.error for r in rs):
            break
        time.sleep(0.05)
    time.sleep(0.3)
    for r in rs:
        r.stop = True
    for r in rs:
        r.join(5)
        r.client.close()
        check(r.error is None, f"{r.name} failed: {r.error!r}")
        check(r.seqs == want, f"{r.name} received {len(r.seqs)} of {len(want)} events, "
              f"first missing {next((s for s in want if s not in set(r.seqs)), None)}, "
              f"in order and once: {r.seqs == sorted(set(r.seqs))}; other frames: {r.other[:5]}")


# -- tests ------------------------------------------------------------------------------------

@suite.test()
def baseline_without_slow_consumers(env):
    rs = readers(env)
    seqs, lat, elapsed = publish_run(env.d.port, "acme", "pub1", env.seq + 1)
    env.seq += len(seqs)
    wait_readers(rs, seqs)
    env.results["baseline"] = (lat, elapsed, len(seqs))
    print("     " + describe("baseline", lat, elapsed, len(seqs)), flush=True)


class Drainer(threading.Thread):
    """Once both slow clients are dropped (the server's counter says so, without a byte read),
    reads each to its end, as a client that was only slow for a while would: it must find
    the slow-consumer notice."""

    def __init__(self, env, slow0, slow_ws, slow_sse):
        super().__init__(daemon=True, name="drainer")
        self.env, self.slow0, self.slow_ws, self.slow_sse = env, slow0, slow_ws, slow_sse
        self.stop = False
        self.seen_at = None      # when the counter showed both drops
        self.ws_frames = []      # text frames (JSON) of the slow WebSocket
        self.ws_close = None     # its close code
        self.sse_events = []
        self.error = None

    def run(self):
        try:
            while not self.stop:
                m = metrics(self.env)
                if metric_total(m, "drover_stream_slow_consumers_total") >= self.slow0 + 2:
                    self.seen_at = time.monotonic()
                    break
                time.sleep(0.05)
            if self.seen_at is None:
                return
            ws_thread = threading.Thread(target=self._drain_ws, daemon=True)
            ws_thread.start()
            self.sse_events = self.slow_sse.events(20)
            ws_thread.join(20)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def _drain_ws(self):
        try:
            while True:
                f = self.slow_ws.read_frame(20)
                if f is None:
                    return
                op, payload = f
                if op == 0x1:
                    self.ws_frames.append(json.loads(payload))
                elif op == 0x8:
                    self.ws_close = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


def short(m):
    """A frame or event for a message, without its padding."""
    if isinstance(m, dict) and isinstance(m.get("values"), dict):
        m = dict(m, values={k: v for k, v in m["values"].items() if k != "pad"})
    if isinstance(m, dict) and "data" in m and "pad" in m["data"]:
        m = dict(m, data=m["data"][:120] + "...")
    return m


@suite.test()
def slow_consumers_are_told_and_dropped(env):
    before = metrics(env)
    slow0 = metric_total(before, "drover_stream_slow_consumers_total")
    dropped0 = metric_total(before, "drover_stream_events_dropped_total", 'tenant="acme"')

    # The slow clients: subscribed, then they read nothing until the server dropped them both.
    slow_ws = WsClient(env.d.http_port, env.token, rcvbuf=SLOW_RCVBUF)
    a = slow_ws.request({"op": "subscribe", "id": "slow", "devices": ["pub1"]})
    eq(a.get("type"), "ack", f"slow WebSocket subscribes: {a}")
    slow_sse = SseClient(env.d.http_port, env.token, "device=pub1", rcvbuf=SLOW_RCVBUF)
    rs = readers(env)
    drainer = Drainer(env, slow0, slow_ws, slow_sse)
    drainer.start()

    seqs, lat, elapsed = publish_run(env.d.port, "acme", "pub1", env.seq + 1)
    env.seq += len(seqs)
    env.results["slow"] = (lat, elapsed, len(seqs))
    print("     " + describe("with 2 slow consumers", lat, elapsed, len(seqs)), flush=True)
    if "baseline" in env.results:
        bl, be, bn = env.results["baseline"]
        print(f"     ratio slow/baseline: throughput {(len(seqs) / elapsed) / (bn / be):.2f}, "
              f"mean PUBACK latency {statistics.mean(lat) / statistics.mean(bl):.2f}, "
              f"p99 {statistics.quantiles(lat, n=100)[98] / statistics.quantiles(bl, n=100)[98]:.2f}",
              flush=True)

    problems = []  # every finding, reported together

    # (b) every reading subscriber got every event.
    try:
        wait_readers(rs, seqs)
    except TestFailure as e:
        problems.append(f"(b) {e}")

    # The server counted both drops without the clients reading a byte.
    drainer.join(15)
    drainer.stop = True
    drainer.join(25)
    m = metrics(env)
    if drainer.seen_at is None:
        problems.append("drover_stream_slow_consumers_total did not count the two slow clients: "
                        f"{metric_values(m, 'drover_stream_slow_consumers_total')}")
    if not metric_total(m, "drover_stream_events_dropped_total", 'tenant="acme"') > dropped0:
        problems.append("no dropped events counted for acme: "
                        f"{metric_values(m, 'drover_stream_events_dropped_total')}")
    print(f"     drover_stream_events_dropped_total{{tenant=\"acme\"}} went from {dropped0:.0f} to "
          f"{metric_total(m, 'drover_stream_events_dropped_total', 'tenant=' + chr(34) + 'acme' + chr(34)):.0f}",
          flush=True)
    if drainer.error:
        problems.append(f"reading the slow clients failed: {drainer.error!r}")

    # (a) reading after the drop, each slow client finds the slow-consumer notice, then the end.
    frames = drainer.ws_frames
    got = [x["values"]["seq"] for x in frames if x.get("type") == "telemetry"]
    print(f"     slow WebSocket: {len(got)} events before the drop, then {[short(f) for f in frames[-1:]]} "
          f"and close {drainer.ws_close}", flush=True)
    if not (frames and frames[-1].get("type") == "error" and frames[-1].get("code") == "slow-consumer"):
        problems.append("(a) the slow WebSocket's last text frame is not the slow-consumer error: "
                        f"{[short(f) for f in frames[-2:]]}")
    if drainer.ws_close != 4008:
        problems.append(f"(a) slow WebSocket close code {drainer.ws_close}, want 4008")
    if got != seqs[:len(got)]:
        problems.append("what the slow WebSocket got before the drop is not in order or has gaps")
    if len(got) >= len(seqs):
        problems.append("the slow WebSocket got everything: it was never slow")
    slow_ws.close()

    evs = drainer.sse_events
    tele = [json.loads(e["data"])["values"]["seq"] for e in evs if e.get("event") == "telemetry"]
    print(f"     slow SSE: {len(tele)} events before the drop, then {[short(e) for e in evs[-1:]]}, "
          f"end of stream: {slow_sse.eof}", flush=True)
    if not slow_sse.eof:
        problems.append("(a) the slow SSE stream did not end")
    if not (evs and evs[-1].get("event") == "error"
            and json.loads(evs[-1].get("data") or "{}").get("code") == "slow-consumer"):
        problems.append(f"(a) the slow SSE stream does not end with event: error, code slow-consumer: "
                        f"{[short(e) for e in evs[-2:]]}")
    if tele != seqs[:len(tele)]:
        problems.append("what the slow SSE client got before the drop is not in order or has gaps")
    slow_sse.close()

    # (c) the publisher finished every message with PUBACK success (checked in publish_run);
    # the numbers are printed above.  The hub still serves fresh streams.
    rs = readers(env)
    more, _, _ = publish_run(env.d.port, "acme", "pub1", env.seq + 1, n=50)
    env.seq += len(more)
    try:
        wait_readers(rs, more)
    except TestFailure as e:
        problems.append(f"after the drops: {e}")
    check(not problems, "\n       ".join([""] + problems))


@suite.test()
def stream_metrics_with_tenant_labels(env):
    ws = WsClient(env.d.http_port, env.token)
    eq(ws.request({"op": "subscribe", "id": "m", "devices": ["quiet"]}).get("type"), "ack", "subscribe")
    sse = SseClient(env.d.http_port, env.token, "device=quiet")
    try:
        # The hub adopts a connection just after its answer went out: give the gauges a moment.
        deadline = time.monotonic() + 5
        while True:
            m = metrics(env)
            conns = metric_values(m, "drover_stream_connections")
            if len([v for v in conns.values() if v >= 1]) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for name in ("drover_stream_connections", "drover_stream_subscribers",
                     "drover_stream_events_delivered_total", "drover_stream_events_dropped_total",
                     "drover_stream_slow_consumers_total", "drover_stream_bus_events_total"):
            check(metric_values(m, name), f"{name} missing from /metrics")
        conns = metric_values(m, "drover_stream_connections")
        check(all("transport=" in k for k in conns), f"connections by transport: {conns}")
        check(sum(conns.values()) >= 2, f"two stream connections open: {conns}")
        check(len([k for k, v in conns.items() if v >= 1]) >= 2, f"both transports counted: {conns}")
        for name in ("drover_stream_subscribers", "drover_stream_events_delivered_total",
                     "drover_stream_events_dropped_total"):
            check(any('tenant="acme"' in k for k in metric_values(m, name)),
                  f"{name} has a tenant=\"acme\" series: {metric_values(m, name)}")
        check(metric_total(m, "drover_stream_subscribers", 'tenant="acme"') >= 2, "acme's two subscribers")
        check(metric_total(m, "drover_stream_events_delivered_total", 'tenant="acme"') >= 2 * N_MESSAGES,
              "delivered events counted")
        check(metric_total(m, "drover_stream_bus_events_total") >= 2 * N_MESSAGES, "bus events counted")
        for line in m.splitlines():
            if line.startswith("drover_stream_"):
                print("     " + line)
    finally:
        ws.close()
        sse.close()


if __name__ == "__main__":
    suite.main(setup)
