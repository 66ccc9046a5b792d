"""A tiny, self-contained runner and client toolkit for Drover's broker tests.

    from mqtt_testlib import Suite, RawClient, ...
    suite = Suite(__file__)

    @suite.test()                                   # shared server, default settings
    def qos1_roundtrip(ctx):
        sub = ctx.paho("s", version=5); ...

    @suite.test(settings={"mqtt.max_queued": "5"}, fresh=True)
    def something(ctx): ...

    if __name__ == "__main__":
        suite.main()                                # parses --drover, prints ok / FAIL lines

Each test gets a Ctx: the live server (`ctx.d`, a tests/lib/drover.py Drover),
`ctx.port`, factories for clients that are cleaned up after the test
(`ctx.paho`, `ctx.raw`, `ctx.mosq_sub`, `ctx.mosq_pub`) and `ctx.uid`, a
prefix unique to the test for topics and client ids.  Tests sharing a
settings dict share one server unless `fresh=True`.  After every test the
server must still be alive; at the end its log is checked for sanitizer
reports.  Output ends with the line "N passed, M failed"; the exit status is
0 only when nothing failed.
"""
import argparse
import os
import queue
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from drover import Drover  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402
from paho.mqtt.subscribeoptions import SubscribeOptions as SubscriptionOptions  # noqa: E402

HOST = "127.0.0.1"

__all__ = ["suite_binary_from_argv", "Suite", "RawClient", "PahoClient", "Closed", "TestFailure", "check", "eq",
           "wait_until", "props", "PacketTypes", "Properties", "SubscriptionOptions", "mqtt",
           "HOST", "P"]


class TestFailure(AssertionError):
    pass


class TestTimeout(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def eq(actual, expected, what):
    if actual != expected:
        raise TestFailure(f"{what}: expected {expected!r}, got {actual!r}")


def suite_binary_from_argv():
    """The --drover argument, for module-level setup before Suite.main() runs."""
    argv = sys.argv
    for i, a in enumerate(argv):
        if a == "--drover" and i + 1 < len(argv):
            return os.path.abspath(argv[i + 1])
        if a.startswith("--drover="):
            return os.path.abspath(a.split("=", 1)[1])
    raise SystemExit("usage: --drover PATH")


def wait_until(pred, timeout, step=0.02):
    """Poll pred() until true or timeout; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


def props(ptype, **kw):
    """paho Properties of packet type ptype (e.g. PacketTypes.PUBLISH) with attributes set."""
    p = Properties(ptype)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


# ---------------------------------------------------------------------------
# Raw MQTT codec: exact control of every byte, and visibility of what comes back.

class P:
    """Packet types and property ids."""
    CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
    SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = (
        8, 9, 10, 11, 12, 13, 14, 15)
    NAMES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
             7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
             12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH"}
    # property ids
    PAYLOAD_FORMAT = 0x01
    MESSAGE_EXPIRY = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_ID = 0x0B
    SESSION_EXPIRY = 0x11
    ASSIGNED_CLIENT_ID = 0x12
    SERVER_KEEP_ALIVE = 0x13
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILL_DELAY = 0x18


_BYTE = {0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A}
_U16 = {0x13, 0x21, 0x22, 0x23}
_U32 = {0x02, 0x11, 0x18, 0x27}
_VARINT = {0x0B}
_STR = {0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F}
_BIN = {0x09, 0x16}
_PAIR = {0x26}
_MULTI = {0x0B, 0x26}


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mstr(s):
    if isinstance(s, str):
        s = s.encode()
    return struct.pack("!H", len(s)) + s


def enc_props(pr):
    """pr: dict id -> value, or list of (id, value) pairs (for repeated properties)."""
    if pr is None:
        return b"\x00"
    items = pr.items() if isinstance(pr, dict) else pr
    body = bytearray()
    for pid, val in items:
        vals = val if (pid in _MULTI and isinstance(val, list)) else [val]
        for v in vals:
            body.append(pid)
            if pid in _BYTE:
                body.append(v)
            elif pid in _U16:
                body += struct.pack("!H", v)
            elif pid in _U32:
                body += struct.pack("!I", v)
            elif pid in _VARINT:
                body += varint(v)
            elif pid in _STR or pid in _BIN:
                body += mstr(v)
            elif pid in _PAIR:
                body += mstr(v[0]) + mstr(v[1])
            else:
                raise ValueError(f"unknown property {pid:#x}")
    return varint(len(body)) + bytes(body)


def dec_varint(b, pos):
    mult, val = 1, 0
    for _ in range(4):
        byte = b[pos]
        pos += 1
        val += (byte & 127) * mult
        if not byte & 128:
            return val, pos
        mult *= 128
    raise ValueError("bad varint")


def dec_props(b, pos):
    n, pos = dec_varint(b, pos)
    end = pos + n
    out = {}
    while pos < end:
        pid = b[pos]
        pos += 1
        if pid in _BYTE:
            v = b[pos]
            pos += 1
        elif pid in _U16:
            v = struct.unpack_from("!H", b, pos)[0]
            pos += 2
        elif pid in _U32:
            v = struct.unpack_from("!I", b, pos)[0]
            pos += 4
        elif pid in _VARINT:
            v, pos = dec_varint(b, pos)
        elif pid in _STR or pid in _BIN:
            ln = struct.unpack_from("!H", b, pos)[0]
            v = bytes(b[pos + 2:pos + 2 + ln])
            pos += 2 + ln
            if pid in _STR:
                v = v.decode()
        elif pid in _PAIR:
            ln = struct.unpack_from("!H", b, pos)[0]
            k = bytes(b[pos + 2:pos + 2 + ln]).decode()
            pos += 2 + ln
            ln = struct.unpack_from("!H", b, pos)[0]
            v = (k, bytes(b[pos + 2:pos + 2 + ln]).decode())
            pos += 2 + ln
        else:
            raise ValueError(f"unknown property {pid:#x}")
        if pid in _MULTI:
            out.setdefault(pid, []).append(v)
        elif pid in out:
            raise ValueError(f"property {pid:#x} included twice (a protocol error)")
        else:
            out[pid] = v
    return out, end


def packet(ptype, flags, body):
    return bytes([(ptype << 4) | flags]) + varint(len(body)) + body


def connect_packet(client_id, version=4, clean=True, keepalive=60, props=None, will=None,
                   username=None, password=None):
    """will: dict(topic, payload, qos=0, retain=False, props=None)."""
    flags = 0x02 if clean else 0
    if will:
        flags |= 0x04 | (will.get("qos", 0) << 3) | (0x20 if will.get("retain") else 0)
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    name = b"MQTT" if version >= 4 else b"MQIsdp"
    body = mstr(name) + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == 5:
        body += enc_props(props)
    body += mstr(client_id)
    if will:
        if version == 5:
            body += enc_props(will.get("props"))
        body += mstr(will["topic"]) + mstr(will["payload"])
    if username is not None:
        body += mstr(username)
    if password is not None:
        body += mstr(password)
    return packet(P.CONNECT, 0, body)


def publish_packet(topic, payload, qos=0, pid=None, retain=False, dup=False, version=4,
                   props=None):
    if isinstance(payload, str):
        payload = payload.encode()
    flags = (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = mstr(topic)
    if qos:
        body += struct.pack("!H", pid)
    if version == 5:
        body += enc_props(props)
    return packet(P.PUBLISH, flags, body + payload)


def ack_packet(ptype, pid, reason=None, version=4):
    body = struct.pack("!H", pid)
    if version == 5 and reason is not None:
        body += bytes([reason])
    return packet(ptype, 0x02 if ptype == P.PUBREL else 0, body)


def subscribe_packet(pid, entries, version=4, props=None):
    """entries: list of (filter, options byte)."""
    body = struct.pack("!H", pid)
    if version == 5:
        body += enc_props(props)
    for f, opt in entries:
        body += mstr(f) + bytes([opt])
    return packet(P.SUBSCRIBE, 0x02, body)


def unsubscribe_packet(pid, filters, version=4):
    body = struct.pack("!H", pid)
    if version == 5:
        body += b"\x00"
    for f in filters:
        body += mstr(f)
    return packet(P.UNSUBSCRIBE, 0x02, body)


def disconnect_packet(reason=None, version=4, props=None):
    if version != 5 or (reason is None and props is None):
        return packet(P.DISCONNECT, 0, b"")
    body = bytes([reason or 0])
    if props is not None:
        body += enc_props(props)
    return packet(P.DISCONNECT, 0, body)


def sub_opts(qos=0, no_local=False, rap=False, rh=0):
    return qos | (0x04 if no_local else 0) | (0x08 if rap else 0) | (rh << 4)


class Packet:
    def __init__(self, ptype, flags, body, version, size):
        self.type = ptype
        self.flags = flags
        self.body = body
        self.size = size  # whole packet on the wire, fixed header included
        self.props = {}
        self.reason = None
        self.pid = None
        b = body
        if ptype == P.PUBLISH:
            self.qos = (flags >> 1) & 3
            self.dup = bool(flags & 8)
            self.retain = bool(flags & 1)
            ln = struct.unpack_from("!H", b, 0)[0]
            self.topic = bytes(b[2:2 + ln]).decode()
            pos = 2 + ln
            if self.qos:
                self.pid = struct.unpack_from("!H", b, pos)[0]
                pos += 2
            if version == 5:
                self.props, pos = dec_props(b, pos)
            self.payload = bytes(b[pos:])
        elif ptype == P.CONNACK:
            self.session_present = bool(b[0] & 1)
            self.reason = b[1]
            if version == 5 and len(b) > 2:
                self.props, _ = dec_props(b, 2)
        elif ptype in (P.PUBACK, P.PUBREC, P.PUBREL, P.PUBCOMP):
            self.pid = struct.unpack_from("!H", b, 0)[0]
            self.reason = b[2] if len(b) > 2 else 0
            if len(b) > 3:
                self.props, _ = dec_props(b, 3)
        elif ptype in (P.SUBACK, P.UNSUBACK):
            self.pid = struct.unpack_from("!H", b, 0)[0]
            pos = 2
            if version == 5:
                self.props, pos = dec_props(b, 2)
            self.codes = list(b[pos:])
        elif ptype == P.DISCONNECT:
            self.reason = b[0] if len(b) > 0 else 0
            if len(b) > 1:
                self.props, _ = dec_props(b, 1)

    @property
    def name(self):
        return P.NAMES.get(self.type, str(self.type))

    def __repr__(self):
        extra = ""
        if self.type == P.PUBLISH:
            extra = f" {self.topic} q{self.qos} pid={self.pid} dup={self.dup} r={self.retain} " \
                    f"{self.payload[:40]!r}"
        elif self.reason is not None:
            extra = f" pid={self.pid} reason={self.reason:#x}"
        return f"<{self.name}{extra} props={self.props}>"


class Closed(Exception):
    """The server closed the connection."""


class RawClient:
    """A byte-level MQTT client on a blocking socket (no background thread)."""

    def __init__(self, port, version=4):
        self.version = version
        self.sock = socket.create_connection((HOST, port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False
        self.next_pid = 1
        self.connack = None

    def pid(self):
        p = self.next_pid
        self.next_pid = p % 65535 + 1
        return p

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        r, _, _ = select.select([self.sock], [], [], remaining)
        if not r:
            return False
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, OSError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _take(self):
        """One complete packet from the buffer, or None."""
        b = self.buf
        if len(b) < 2:
            return None
        mult, rem, pos = 1, 0, 1
        while True:
            if pos >= len(b):
                return None
            byte = b[pos]
            rem += (byte & 127) * mult
            pos += 1
            if not byte & 128:
                break
            mult *= 128
        if len(b) < pos + rem:
            return None
        first = b[0]
        body = bytes(b[pos:pos + rem])
        del self.buf[:pos + rem]
        return Packet(first >> 4, first & 15, body, self.version, pos + rem)

    def recv(self, timeout=3.0):
        """Next packet; None on timeout; raises Closed on EOF with nothing buffered."""
        deadline = time.monotonic() + timeout
        while True:
            p = self._take()
            if p:
                return p
            if self.eof:
                raise Closed()
            if not self._fill(deadline):
                if self.eof:
                    continue
                return None

    def expect(self, ptype, timeout=3.0, skip=()):
        """Next packet, which must be of ptype (packets of types in skip are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                p = self.recv(max(left, 0.001))
            except Closed:
                raise TestFailure(f"expected {P.NAMES[ptype]}, but the connection was closed")
            if p is None:
                raise TestFailure(f"expected {P.NAMES[ptype]}, got nothing within {timeout}s")
            if p.type in skip:
                continue
            if p.type != ptype:
                raise TestFailure(f"expected {P.NAMES[ptype]}, got {p!r}")
            return p

    def recv_all(self, duration):
        """Every packet arriving within duration (stops early at EOF)."""
        out = []
        deadline = time.monotonic() + duration
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            try:
                p = self.recv(left)
            except Closed:
                return out
            if p is None:
                return out
            out.append(p)

    def collect_publishes(self, quiet=0.5, limit=10.0):
        """Receive PUBLISH packets, acknowledging each at once (QoS 2: PUBREC, then PUBCOMP
        for the PUBREL), until nothing arrives for `quiet` seconds.  Returns the PUBLISHes."""
        got = []
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                p = self.recv(quiet)
            except Closed:
                break
            if p is None:
                break
            if p.type == P.PUBLISH:
                got.append(p)
                self.ack(p)
            elif p.type == P.PUBREL:
                self.send(ack_packet(P.PUBCOMP, p.pid, None, self.version))
        return got

    def wait_closed(self, timeout):
        """Read until EOF; returns (closed, packets seen before it)."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, seen
            try:
                p = self.recv(left)
            except Closed:
                return True, seen
            if p is None:
                return self.eof, seen
            seen.append(p)

    # -- conveniences

    def connect(self, client_id, clean=True, keepalive=60, props=None, will=None, username=None,
                password=None, expect_rc=0):
        self.send(connect_packet(client_id, self.version, clean, keepalive, props, will,
                                 username, password))
        ca = self.expect(P.CONNACK)
        self.connack = ca
        if expect_rc is not None:
            eq(ca.reason, expect_rc, f"CONNACK code for {client_id!r}")
        return ca

    def subscribe(self, entries, props=None):
        """entries: list of (filter, options); returns the SUBACK codes."""
        pid = self.pid()
        self.send(subscribe_packet(pid, entries, self.version, props))
        sa = self.expect(P.SUBACK)
        eq(sa.pid, pid, "SUBACK packet id")
        return sa.codes

    def unsubscribe(self, filters):
        pid = self.pid()
        self.send(unsubscribe_packet(pid, filters, self.version))
        ua = self.expect(P.UNSUBACK)
        eq(ua.pid, pid, "UNSUBACK packet id")
        return ua.codes

    def publish(self, topic, payload, qos=0, retain=False, props=None, dup=False, pid=None):
        """Publish; for QoS 1 returns the PUBACK, for QoS 2 completes the flow and returns
        the PUBREC.  Other packets arriving meanwhile are kept in self.other."""
        if qos and pid is None:
            pid = self.pid()
        self.send(publish_packet(topic, payload, qos, pid, retain, dup, self.version, props))
        if qos == 0:
            return None
        want = P.PUBACK if qos == 1 else P.PUBREC
        ack = self._expect_keep(want)
        eq(ack.pid, pid, f"{P.NAMES[want]} packet id")
        if qos == 2:
            self.send(ack_packet(P.PUBREL, pid, None, self.version))
            comp = self._expect_keep(P.PUBCOMP)
            eq(comp.pid, pid, "PUBCOMP packet id")
        return ack

    other = None

    def _expect_keep(self, ptype, timeout=3.0):
        if self.other is None:
            self.other = []
        deadline = time.monotonic() + timeout
        while True:
            p = self.expect_any(deadline - time.monotonic())
            if p.type == ptype:
                return p
            self.other.append(p)

    def expect_any(self, timeout):
        try:
            p = self.recv(max(timeout, 0.001))
        except Closed:
            raise TestFailure("connection closed unexpectedly")
        if p is None:
            raise TestFailure(f"no packet within {timeout:.1f}s")
        return p

    def ping(self, timeout=3.0):
        """PINGREQ/PINGRESP round trip: everything sent before has been processed."""
        self.send(packet(P.PINGREQ, 0, b""))
        return self._expect_keep(P.PINGRESP, timeout)

    def ack(self, p):
        """Acknowledge a received PUBLISH (QoS 1: PUBACK, QoS 2: PUBREC)."""
        if p.qos == 1:
            self.send(ack_packet(P.PUBACK, p.pid, None, self.version))
        elif p.qos == 2:
            self.send(ack_packet(P.PUBREC, p.pid, None, self.version))

    def disconnect(self, reason=None, props=None):
        try:
            self.send(disconnect_packet(reason, self.version, props))
        except OSError:
            pass
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------
# paho wrapper: a real client, driven by a private thread that never reconnects.

class Msg:
    __slots__ = ("topic", "payload", "qos", "retain", "dup", "props", "mid", "t")

    def __init__(self, m):
        self.topic = m.topic
        self.payload = m.payload
        self.qos = m.qos
        self.retain = bool(m.retain)
        self.dup = bool(m.dup)
        self.props = getattr(m, "properties", None)
        self.mid = m.mid
        self.t = time.monotonic()

    def prop(self, name, default=None):
        return getattr(self.props, name, default) if self.props is not None else default

    def __repr__(self):
        return f"<Msg {self.topic} q{self.qos} r={self.retain} {self.payload[:40]!r}>"


class PahoClient:
    def __init__(self, port, client_id, version=4, clean=True):
        self.port = port
        self.version = version
        self.v5 = version == 5
        if self.v5:
            self.c = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv5)
        else:
            self.c = mqtt.Client(client_id=client_id, clean_session=clean,
                                 protocol=mqtt.MQTTv311)
        self.client_id = client_id
        self.cond = threading.Condition()
        self.msgs = []
        self.connack = None
        self.subacks = {}
        self.unsubacks = {}
        self.published = set()
        self.disconnect_rc = None
        self.connected = False
        self._stop = threading.Event()
        self._thread = None
        c = self.c
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_unsubscribe = self._on_unsubscribe
        c.on_publish = self._on_publish
        c.on_disconnect = self._on_disconnect

    # callbacks (paho's thread)
    def _on_connect(self, c, u, flags, rc, properties=None):
        with self.cond:
            code = rc.value if hasattr(rc, "value") else rc
            self.connack = (bool(flags.get("session present")), code, properties)
            self.connected = code == 0
            self.cond.notify_all()

    def _on_message(self, c, u, m):
        with self.cond:
            self.msgs.append(Msg(m))
            self.cond.notify_all()

    def _on_subscribe(self, c, u, mid, granted, properties=None):
        with self.cond:
            self.subacks[mid] = [g.value if hasattr(g, "value") else g for g in granted]
            self.cond.notify_all()

    def _on_unsubscribe(self, c, u, mid, *rest):
        with self.cond:
            codes = None
            if len(rest) >= 2 and rest[1] is not None:
                r = rest[1]
                codes = [x.value for x in r] if isinstance(r, list) else [r.value]
            self.unsubacks[mid] = codes
            self.cond.notify_all()

    def _on_publish(self, c, u, mid):
        with self.cond:
            self.published.add(mid)
            self.cond.notify_all()

    def _on_disconnect(self, c, u, rc, properties=None):
        with self.cond:
            self.connected = False
            self.disconnect_rc = rc.value if hasattr(rc, "value") else rc
            self.cond.notify_all()

    def _wait(self, pred, timeout):
        with self.cond:
            return self.cond.wait_for(pred, timeout)

    def _run(self):
        while not self._stop.is_set():
            try:
                rc = self.c.loop(timeout=0.02)
            except Exception:  # socket torn down under us
                rc = 1
            if rc != 0:
                self._stop.wait(0.02)

    # API
    def connect(self, clean_start=True, session_expiry=None, props=None, keepalive=60, will=None,
                username=None, password=None, timeout=5, expect_rc=0):
        """will: dict(topic, payload, qos, retain, props).  Returns (session_present, rc, props)."""
        if will:
            self.c.will_set(will["topic"], will.get("payload"), will.get("qos", 0),
                            will.get("retain", False), properties=will.get("props"))
        if username is not None:
            self.c.username_pw_set(username, password)
        if self.v5:
            if session_expiry is not None:
                props = props or Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = session_expiry
            self.c.connect(HOST, self.port, keepalive, clean_start=clean_start, properties=props)
        else:
            self.c.connect(HOST, self.port, keepalive)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._wait(lambda: self.connack is not None, timeout):
            raise TestFailure(f"{self.client_id}: no CONNACK within {timeout}s")
        if expect_rc is not None:
            eq(self.connack[1], expect_rc, f"{self.client_id}: CONNACK code")
        return self.connack

    def subscribe(self, topic, qos=0, options=None, sub_id=None, timeout=5):
        """Returns the SUBACK codes (granted QoS or reason codes) as ints."""
        p = None
        if sub_id is not None:
            p = Properties(PacketTypes.SUBSCRIBE)
            p.SubscriptionIdentifier = sub_id
        if self.v5:
            if isinstance(topic, list):
                rc, mid = self.c.subscribe(topic, properties=p)
            else:
                rc, mid = self.c.subscribe(topic, options=options or SubscriptionOptions(qos=qos),
                                           properties=p)
        else:
            rc, mid = self.c.subscribe(topic, qos)
        check(rc == 0, f"subscribe call failed rc={rc}")
        if not self._wait(lambda: mid in self.subacks, timeout):
            raise TestFailure(f"{self.client_id}: no SUBACK within {timeout}s")
        return self.subacks[mid]

    def unsubscribe(self, topic, timeout=5):
        rc, mid = self.c.unsubscribe(topic)
        check(rc == 0, f"unsubscribe call failed rc={rc}")
        if not self._wait(lambda: mid in self.unsubacks, timeout):
            raise TestFailure(f"{self.client_id}: no UNSUBACK within {timeout}s")
        return self.unsubacks[mid]

    def publish(self, topic, payload, qos=0, retain=False, props=None, wait=True, timeout=5):
        info = self.c.publish(topic, payload, qos, retain, properties=props)
        check(info.rc == 0, f"publish call failed rc={info.rc}")
        if wait and qos > 0:
            if not self._wait(lambda: info.mid in self.published, timeout):
                raise TestFailure(f"{self.client_id}: QoS {qos} publish to {topic} not "
                                  f"acknowledged within {timeout}s")
        return info

    def wait_msgs(self, n, timeout=3.0, topic=None):
        """Wait for at least n messages (on topic, if given); returns the matching list."""
        def sel():
            return [m for m in self.msgs if topic is None or m.topic == topic]
        self._wait(lambda: len(sel()) >= n, timeout)
        with self.cond:
            return sel()

    def expect_msgs(self, n, timeout=3.0, topic=None, settle=0.3):
        """Exactly n messages: wait for n, then make sure no more arrive within settle."""
        got = self.wait_msgs(n, timeout, topic)
        check(len(got) >= n, f"{self.client_id}: expected {n} messages"
                             f"{' on ' + topic if topic else ''}, got {len(got)}: {got}")
        if settle:
            time.sleep(settle)
        got = self.wait_msgs(0, 0, topic)
        check(len(got) == n, f"{self.client_id}: expected exactly {n} messages, got "
                             f"{len(got)}: {got}")
        return got

    def expect_none(self, duration=0.5, topic=None):
        time.sleep(duration)
        got = self.wait_msgs(0, 0, topic)
        check(not got, f"{self.client_id}: expected no messages, got {got}")

    def clear(self):
        with self.cond:
            self.msgs = []

    def wait_disconnected(self, timeout=3.0):
        return self._wait(lambda: not self.connected and self.disconnect_rc is not None, timeout)

    def disconnect(self, reasoncode=None, props=None):
        """Clean DISCONNECT, then stop the thread."""
        if self.connected:
            try:
                if self.v5:
                    self.c.disconnect(reasoncode=reasoncode, properties=props)
                else:
                    self.c.disconnect()
            except OSError:
                pass  # paho's own thread closed the socket first: the connection is gone anyway
            self._wait(lambda: not self.connected, 2)
        self.stop()


    def drop(self):
        """Close the TCP connection without DISCONNECT (the will must be published)."""
        self._stop.set()
        if self._thread:
            self._thread.join(2)
            self._thread = None
        s = self.c.socket()
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        self.connected = False

    def freeze(self):
        """Stop all network activity (no PINGREQ, no reads) but keep the socket open."""
        self._stop.set()
        if self._thread:
            self._thread.join(2)
            self._thread = None

    def stop(self):
        self.freeze()
        s = self.c.socket()
        if s is not None:
            try:
                s.close()
            except OSError:
                pass


# ---------------------------------------------------------------------------
# mosquitto_sub / mosquitto_pub

class MosqSub:
    """mosquitto_sub in the background; messages are parsed from a marked format."""

    def __init__(self, port, topics, qos=0, version=5, extra=(), count=None, timeout_s=10):
        args = ["stdbuf", "-oL", "mosquitto_sub", "-h", HOST, "-p", str(port), "-q", str(qos),
                "-V", "5" if version == 5 else "311", "-d", "-W", str(timeout_s),
                "-F", "MSG|%t|%q|%r|%p"]
        if count:
            args += ["-C", str(count)]
        for t in topics:
            args += ["-t", t]
        args += list(extra)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines = queue.Queue()
        self.all_lines = []
        self.msgs = []
        self.subscribed = threading.Event()
        self.reader = threading.Thread(target=self._reader, daemon=True)
        self.reader.start()

    def _reader(self):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.all_lines.append(line)
            if line.startswith("Subscribed (mid"):
                self.subscribed.set()
            if line.startswith("MSG|"):
                _, topic, qos, retain, payload = line.split("|", 4)
                self.msgs.append((topic, int(qos), int(retain), payload))

    def wait_subscribed(self, timeout=5):
        check(self.subscribed.wait(timeout),
              f"mosquitto_sub did not subscribe: {self.all_lines}")

    def wait_msgs(self, n, timeout=5):
        wait_until(lambda: len(self.msgs) >= n, timeout)
        return list(self.msgs)

    def wait_exit(self, timeout=10):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        # The process is gone, but its last lines may still be in the pipe: a
        # loaded machine ran the reader late (msgs would look empty).
        self.reader.join(5)
        return rc

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def mosq_pub(port, topic, message, qos=0, version=5, retain=False, extra=(), timeout=10):
    args = ["mosquitto_pub", "-h", HOST, "-p", str(port), "-t", topic, "-m", message, "-q",
            str(qos), "-V", "5" if version == 5 else "311"]
    if retain:
        args.append("-r")
    args += list(extra)
    r = subprocess.run(args, capture_output=True, timeout=timeout)
    return r.returncode, (r.stdout + r.stderr).decode(errors="replace")


# ---------------------------------------------------------------------------
# the runner

class Ctx:
    def __init__(self, suite, d, name):
        self.suite = suite
        self.d = d
        self.binary = suite.binary
        self.name = name
        self.uid = f"{name}-{random.randrange(1 << 30):08x}"
        self._clients = []

    @property
    def port(self):
        return self.d.port

    def topic(self, *parts):
        return "/".join((self.uid,) + parts)

    def paho(self, client_id=None, version=4, clean=True, connect=True, **kw):
        if client_id is None:
            client_id = f"{self.uid}-{len(self._clients)}"
        c = PahoClient(self.port, client_id, version, clean)
        self._clients.append(c)
        if connect:
            c.connect(**kw)
        return c

    def raw(self, version=4, client_id=None, connect=True, **kw):
        r = RawClient(self.port, version)
        self._clients.append(r)
        if connect:
            if client_id is None:
                client_id = f"{self.uid}-r{len(self._clients)}"
            r.connect(client_id, **kw)
        return r

    def mosq_sub(self, topics, **kw):
        s = MosqSub(self.port, topics, **kw)
        self._clients.append(s)
        return s

    def mosq_pub(self, topic, message, **kw):
        return mosq_pub(self.port, topic, message, **kw)

    def cleanup(self):
        for c in reversed(self._clients):
            try:
                if isinstance(c, PahoClient):
                    c.stop()
                elif isinstance(c, RawClient):
                    c.close()
                else:
                    c.stop()
            except Exception:
                pass
        self._clients = []


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def sanitizer_report(log):
    for mark in SANITIZER_MARKS:
        if mark in log:
            i = log.index(mark)
            return "sanitizer report:\n" + log[max(0, i - 100):i + 1800]
    return None


def full_log(d):
    try:
        with open(d.log_path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


class Suite:
    def __init__(self, name):
        self.name = os.path.splitext(os.path.basename(name))[0]
        self.tests = []
        self.binary = None

    def test(self, settings=None, fresh=False, timeout=20):
        def deco(fn):
            self.tests.append((fn.__name__, fn, dict(settings or {}), fresh, timeout))
            return fn
        return deco

    def _start(self, settings):
        return Drover(self.binary, settings).start()

    def _stop(self, d):
        """Stop a server; returns a failure description or None."""
        rc = d.stop()
        log = full_log(d)
        problems = []
        if rc not in (0, None):
            problems.append(f"server exited with status {rc} on SIGTERM")
        report = sanitizer_report(log)
        if report:
            problems.append(report)
        if d.own_dir:
            import shutil
            shutil.rmtree(d.data_dir, ignore_errors=True)
        return "; ".join(problems) if problems else None

    def main(self):
        ap = argparse.ArgumentParser()
        ap.add_argument("--drover", required=True)
        ap.add_argument("-k", default=None, help="run only tests whose name contains this")
        args = ap.parse_args()
        self.binary = os.path.abspath(args.drover)
        passed = failed = 0
        shared = {}

        def on_alarm(signum, frame):
            raise TestTimeout()
        signal.signal(signal.SIGALRM, on_alarm)
        t_start = time.monotonic()
        for name, fn, settings, fresh, timeout in self.tests:
            if args.k and args.k not in name:
                continue
            key = tuple(sorted(settings.items()))
            d = None
            reason = None
            t0 = time.monotonic()
            try:
                if fresh:
                    d = self._start(settings)
                else:
                    d = shared.get(key)
                    if d is None or not d.alive():
                        d = shared[key] = self._start(settings)
            except Exception as e:
                reason = f"server did not start: {e}"
            ctx = None
            log_mark = len(full_log(d)) if d is not None else 0
            if reason is None:
                ctx = Ctx(self, d, name)
                try:
                    signal.alarm(timeout)
                    fn(ctx)
                except TestTimeout:
                    reason = f"timed out after {timeout}s"
                except TestFailure as e:
                    reason = str(e)
                except Exception as e:  # a bug in the test or an unexpected client error
                    reason = f"{type(e).__name__}: {e}\n" + traceback.format_exc(limit=4)
                finally:
                    signal.alarm(0)
                    ctx.cleanup()
            if d is not None:
                report = sanitizer_report(full_log(d)[log_mark:])
                if report:
                    # The server hit a sanitizer error during this test: blame this test and
                    # let it finish dying (ASan aborts after printing).
                    reason = (reason + "; " if reason else "") + "server " + report
                    wait_until(lambda: not d.alive(), 10)
                died = not d.alive()
                if died and not report:
                    reason = (reason + "; " if reason else "") + \
                        "server died:\n" + full_log(d)[-3000:]
                if fresh or died:
                    if not fresh:
                        shared.pop(key, None)
                    problem = self._stop(d)
                    if problem and not died and not report:
                        reason = (reason + "; " if reason else "") + problem
            dt = time.monotonic() - t0
            if reason is None:
                passed += 1
                print(f"ok   {name} ({dt:.1f}s)", flush=True)
            else:
                failed += 1
                print(f"FAIL {name}: {reason}", flush=True)
        for key, d in shared.items():
            problem = self._stop(d)
            if problem:
                failed += 1
                print(f"FAIL server_shutdown[{dict(key)}]: {problem}", flush=True)
        print(f"# {self.name}: {time.monotonic() - t_start:.1f}s", flush=True)
        print(f"{passed} passed, {failed} failed", flush=True)
        sys.exit(0 if failed == 0 else 1)
