#!/usr/bin/python3
"""Runner for the MQTT byte-level conformance corpus.

The corpus (shared/conformance/mqtt-sequences/*.json) and its semantics are
described in shared/conformance/README.md.  Each case opens one TCP
connection to the broker, optionally performs an automatic CONNECT, then
sends raw bytes, checks the raw bytes the broker answers with, and finally
checks whether the broker closed the connection (expect_disconnect) or still
answers a PINGREQ.

Usage:
    run.py --host 127.0.0.1 --port N [--corpus DIR] [--filter SUBSTRING]
           [--jobs N] [--verbose] [--list-failures FILE] [--websocket PATH]

With --websocket PATH every connection (the cases' and the helper publisher's)
is MQTT over WebSocket instead of raw TCP: an RFC 6455 upgrade of PATH on
host:port with "Sec-WebSocket-Protocol: mqtt", then every `send` step's bytes
in one masked binary frame; the payloads of the server's data frames form the
byte stream that `recv` steps compare, and a server close frame counts as the
connection closing.  Server frames that break RFC 6455 (masked, reserved bits,
a reserved opcode) fail the case.

The corpus directory is, in order of preference: --corpus, the environment
variable DROVER_CONFORMANCE_DIR, or ../../../shared/conformance/mqtt-sequences
relative to this script's real location.  A directory that holds a
mqtt-sequences/ subdirectory is accepted too.

Output: one "FAIL <file> :: <group> :: <name>: <reason>" line per failing
case (with --verbose also PASS/SKIP lines), then a final line
"N passed, N failed" (", N skipped" appended when disabled groups were
selected).  Exit status 0 iff no case failed; 2 on usage or corpus errors.

Python 3 standard library only.
"""

import argparse
import base64
import glob
import hashlib
import itertools
import json
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

RECV_TIMEOUT = 2.0      # per `recv` step, and for the PINGRESP
CLOSE_TIMEOUT = 2.0     # how long the broker may take to close the connection
CONNECT_TIMEOUT = 5.0   # TCP connect
MAX_CONNACK_RL = 65536  # refuse to read an implausibly large CONNACK
MAX_EXTRA_KEPT = 64     # bytes kept for reporting data seen before a close

HELPER_IDS = itertools.count(1)
HELPER_LOCK = threading.Lock()


class CaseFailure(Exception):
    """The case failed; the message says why."""


class CorpusError(Exception):
    """The corpus itself could not be loaded."""


def hexs(data):
    if not data:
        return "(nothing)"
    return " ".join("%02X" % b for b in data)


def parse_hex(text):
    return bytes.fromhex("".join(str(text).split()))


def encode_varint(n):
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def decode_varint(data, pos):
    """Return (value, next_pos) or None if incomplete/malformed (>4 bytes)."""
    value = 0
    mult = 1
    for i in range(4):
        if pos + i >= len(data):
            return None
        b = data[pos + i]
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, pos + i + 1
        mult *= 128
    return None


def mqtt_string(s):
    raw = s.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("string too long for MQTT (%d bytes)" % len(raw))
    return len(raw).to_bytes(2, "big") + raw


def packet(first_byte, body):
    return bytes([first_byte]) + encode_varint(len(body)) + body


def gen_connect(client_id, ver, keepalive=60):
    if ver == 3:
        vh = mqtt_string("MQIsdp") + bytes([3])
    elif ver == 4:
        vh = mqtt_string("MQTT") + bytes([4])
    elif ver == 5:
        vh = mqtt_string("MQTT") + bytes([5])
    else:
        raise ValueError("unsupported protocol version %r" % (ver,))
    vh += bytes([0x02]) + keepalive.to_bytes(2, "big")   # clean start
    if ver == 5:
        props = bytes([0x21]) + (20).to_bytes(2, "big")  # Receive Maximum = 20
        vh += encode_varint(len(props)) + props
    return packet(0x10, vh + mqtt_string(client_id))


# ---------------------------------------------------------------------------
# Connection helper

class Conn:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        """Return None on success, or a string describing the error."""
        try:
            self.sock.settimeout(RECV_TIMEOUT)
            self.sock.sendall(data)
            return None
        except socket.timeout:
            return "send timed out (broker not reading)"
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as e:
            return "connection closed by broker (%s)" % (e.strerror or e.__class__.__name__)
        except OSError as e:
            return "send error: %s" % e

    def recv_exact(self, n, timeout=RECV_TIMEOUT):
        """Read exactly n bytes.  Return (data, status) with status one of
        'ok', 'eof', 'reset', 'timeout'; data holds what was read."""
        deadline = time.monotonic() + timeout
        buf = bytearray()
        while len(buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(buf), "timeout"
            try:
                self.sock.settimeout(remaining)
                chunk = self.sock.recv(n - len(buf))
            except socket.timeout:
                return bytes(buf), "timeout"
            except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
                return bytes(buf), "reset"
            except OSError:
                return bytes(buf), "reset"
            if not chunk:
                return bytes(buf), "eof"
            buf += chunk
        return bytes(buf), "ok"

    def wait_closed(self, timeout=CLOSE_TIMEOUT):
        """Read until EOF/reset or timeout.  Return (closed, extra, nextra)."""
        deadline = time.monotonic() + timeout
        extra = bytearray()
        total = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False, bytes(extra), total
            try:
                self.sock.settimeout(remaining)
                chunk = self.sock.recv(4096)
            except socket.timeout:
                return False, bytes(extra), total
            except OSError:
                return True, bytes(extra), total
            if not chunk:
                return True, bytes(extra), total
            total += len(chunk)
            if len(extra) < MAX_EXTRA_KEPT:
                extra += chunk[:MAX_EXTRA_KEPT - len(extra)]


# ---------------------------------------------------------------------------
# MQTT over WebSocket (--websocket PATH)

WS_PATH = None          # set by --websocket: every connection is a WebSocket
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_MAX_HEAD = 16384     # refuse an implausibly large upgrade response


def ws_mask(data, key):
    n = len(data)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def ws_frame(opcode, payload, fin=True):
    """One masked client frame."""
    n = len(payload)
    head = bytearray([(0x80 if fin else 0) | opcode])
    if n < 126:
        head.append(0x80 | n)
    elif n < 65536:
        head.append(0x80 | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(0x80 | 127)
        head += n.to_bytes(8, "big")
    key = os.urandom(4)
    return bytes(head) + key + ws_mask(payload, key)


class WsConn(Conn):
    """A Conn whose bytes travel in WebSocket frames: same interface, same statuses."""

    def __init__(self, host, port, path):
        super().__init__(host, port)
        self.raw = bytearray()      # bytes from the socket not yet parsed into frames
        self.data = bytearray()     # MQTT bytes from data frames, not yet taken
        self.ended = None           # 'eof' / 'reset' once the server closed (close frame or TCP)
        self.close_code = None
        self.violation = None       # the first RFC 6455 rule the server broke
        self._handshake(host, port, path)

    def _handshake(self, host, port, path):
        key = base64.b64encode(os.urandom(16))
        req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Protocol: mqtt\r\n\r\n" % (path, host, port, key.decode()))
        err = Conn.send(self, req.encode("latin-1"))
        if err:
            raise CaseFailure("WebSocket upgrade: %s" % err)
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while b"\r\n\r\n" not in self.raw:
            if len(self.raw) > WS_MAX_HEAD:
                raise CaseFailure("WebSocket upgrade: response head over %d bytes" % WS_MAX_HEAD)
            status = self._read(deadline)
            if status != "ok":
                raise CaseFailure("WebSocket upgrade: %s before the response head (got %r)"
                                  % (status, bytes(self.raw[:200])))
        i = self.raw.index(b"\r\n\r\n")
        head = bytes(self.raw[:i]).decode("latin-1")
        del self.raw[:i + 4]
        lines = head.split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            raise CaseFailure("WebSocket upgrade answered %r" % lines[0])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        want = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != want:
            raise CaseFailure("WebSocket upgrade: Sec-WebSocket-Accept %r, expected %r"
                              % (headers.get("sec-websocket-accept"), want))
        if headers.get("sec-websocket-protocol", "").lower() != "mqtt":
            raise CaseFailure("WebSocket upgrade: subprotocol %r, expected 'mqtt'"
                              % headers.get("sec-websocket-protocol"))
        self._parse()

    def _read(self, deadline):
        """One socket read into self.raw: 'ok', 'timeout', 'eof' or 'reset'."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout"
        try:
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return "timeout"
        except OSError:
            return "reset"
        if not chunk:
            return "eof"
        self.raw += chunk
        return "ok"

    def _parse(self):
        """Move complete frames from raw into data (or handle them)."""
        while self.ended is None and len(self.raw) >= 2:
            b0, b1 = self.raw[0], self.raw[1]
            n = b1 & 0x7F
            at = 2
            if n == 126:
                if len(self.raw) < 4:
                    return
                n = int.from_bytes(self.raw[2:4], "big")
                at = 4
            elif n == 127:
                if len(self.raw) < 10:
                    return
                n = int.from_bytes(self.raw[2:10], "big")
                at = 10
            key = None
            if b1 & 0x80:
                if len(self.raw) < at + 4:
                    return
                key = bytes(self.raw[at:at + 4])
                at += 4
                self.violation = self.violation or "server frame is masked (RFC 6455 5.1)"
            if len(self.raw) < at + n:
                return
            payload = bytes(self.raw[at:at + n])
            del self.raw[:at + n]
            if key:
                payload = ws_mask(payload, key)
            opcode = b0 & 0x0F
            if b0 & 0x70:
                self.violation = self.violation or "server frame with reserved bits set"
            if opcode in (0x0, 0x2):
                self.data += payload
            elif opcode == 0x1:
                self.violation = self.violation or "server sent a text frame"
                self.data += payload
            elif opcode == 0x8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                self.ended = "eof"
            elif opcode == 0x9:
                Conn.send(self, ws_frame(0xA, payload))
            elif opcode == 0xA:
                pass
            else:
                self.violation = self.violation or "server frame with reserved opcode %#x" % opcode

    def _fill(self, deadline):
        """Read and parse until new MQTT bytes, the end of the connection, or the deadline.
        Returns 'ok' or the reason nothing more will come."""
        have = len(self.data)
        while len(self.data) == have:
            if self.ended:
                return self.ended
            status = self._read(deadline)
            if status != "ok":
                if status in ("eof", "reset"):
                    self.ended = status
                return status
            self._parse()
        return "ok"

    def send(self, data):
        return super().send(ws_frame(0x2, data))

    def recv_exact(self, n, timeout=RECV_TIMEOUT):
        deadline = time.monotonic() + timeout
        while len(self.data) < n:
            status = self._fill(deadline)
            if status != "ok":
                got = bytes(self.data)
                del self.data[:]
                return got, status
        got = bytes(self.data[:n])
        del self.data[:n]
        return got, "ok"

    def wait_closed(self, timeout=CLOSE_TIMEOUT):
        deadline = time.monotonic() + timeout
        extra = bytearray()
        total = 0
        while True:
            if self.data:
                total += len(self.data)
                if len(extra) < MAX_EXTRA_KEPT:
                    extra += self.data[:MAX_EXTRA_KEPT - len(extra)]
                del self.data[:]
            if self.ended:
                return True, bytes(extra), total
            status = self._fill(deadline)
            if status == "timeout":
                if self.data:
                    continue
                return False, bytes(extra), total


def open_conn(host, port):
    """A connection to the broker: raw TCP, or a WebSocket with --websocket."""
    if WS_PATH:
        return WsConn(host, port, WS_PATH)
    return Conn(host, port)


def describe_short(status, got, want_len):
    if status == "timeout":
        what = "timed out after %.0f s" % RECV_TIMEOUT
    elif status == "eof":
        what = "connection closed by broker"
    else:
        what = "connection reset by broker"
    if not got:
        return "%s, nothing received" % what
    return "%s after %d of %d bytes (got %s)" % (what, len(got), want_len, hexs(got))


def read_connack(conn, label, want):
    """Read one packet expected to be a CONNACK, by its own remaining length.
    `want` describes the expected CONNACK for messages.
    Return (full_packet_bytes, remaining_length, body)."""
    head, status = conn.recv_exact(1)
    if status != "ok":
        raise CaseFailure("%s: expected CONNACK %s, %s" % (label, want, describe_short(status, head, 1)))
    if head[0] != 0x20:
        more, _ = conn.recv_exact(3, timeout=0.2)
        raise CaseFailure("%s: expected CONNACK %s, got %s" % (label, want, hexs(head + more)))
    rl_bytes = bytearray()
    while True:
        b, status = conn.recv_exact(1)
        if status != "ok":
            raise CaseFailure("%s: CONNACK truncated: %s" % (
                label, describe_short(status, head + rl_bytes, len(head) + len(rl_bytes) + 1)))
        rl_bytes += b
        if not b[0] & 0x80:
            break
        if len(rl_bytes) >= 4:
            raise CaseFailure("%s: CONNACK with malformed remaining length: %s" % (
                label, hexs(head + rl_bytes)))
    rl, _ = decode_varint(bytes(rl_bytes), 0)
    if rl > MAX_CONNACK_RL:
        raise CaseFailure("%s: CONNACK with implausible remaining length %d: %s" % (
            label, rl, hexs(head + rl_bytes)))
    body, status = conn.recv_exact(rl)
    full = head + bytes(rl_bytes) + body
    if status != "ok":
        raise CaseFailure("%s: CONNACK truncated: %s" % (label, describe_short(status, full, len(head) + len(rl_bytes) + rl)))
    return full, rl, body


def compare_connack(expected, actual, act_rl, act_body):
    """Return None if the CONNACK matches, or a reason string."""
    dec = decode_varint(expected, 1)
    if dec is None or dec[0] < 2 or len(expected) < dec[1] + 2:
        # Malformed expectation: fall back to a plain comparison.
        return None if actual == expected else "expected %s, got %s" % (hexs(expected), hexs(actual))
    exp_rl, pos = dec
    exp_fr = expected[pos:pos + 2]
    if exp_rl == 2:
        # MQTT 3.1 / 3.1.1 CONNACK: the whole packet must match.
        if actual == expected:
            return None
        return "expected CONNACK %s, got %s" % (hexs(expected), hexs(actual))
    # MQTT 5 CONNACK: properties are the broker's own choice.
    if act_rl >= 3 and act_body[:2] == exp_fr:
        return None
    return ("expected CONNACK %s (flags+reason %s, properties free), got %s"
            % (hexs(expected), hexs(exp_fr), hexs(actual)))


# ---------------------------------------------------------------------------
# Corpus loading

class Case:
    __slots__ = ("file", "group", "name", "ver", "connect", "expect_disconnect",
                 "msgs", "disabled", "error", "index")

    def label(self):
        return "%s :: %s :: %s" % (self.file, self.group, self.name)


def load_corpus(corpus_dir):
    files = sorted(glob.glob(os.path.join(corpus_dir, "*.json")))
    if not files:
        raise CorpusError("no *.json files in %s" % corpus_dir)
    cases = []
    for path in files:
        fname = os.path.basename(path)
        try:
            with open(path, "r", encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise CorpusError("cannot load %s: %s" % (path, e))
        if not isinstance(data, list):
            raise CorpusError("%s: top level is not a JSON array" % path)
        for g in data:
            if not isinstance(g, dict):
                raise CorpusError("%s: group is not an object" % path)
            gname = str(g.get("group", ""))
            g_ver = g.get("ver", 4)
            g_connect = g.get("connect", True)
            g_expdis = g.get("expect_disconnect", True)
            disabled = bool(g.get("disable", False))
            for t in g.get("tests", []):
                c = Case()
                c.file = fname
                c.group = gname
                c.name = str(t.get("name", "")) if isinstance(t, dict) else ""
                c.disabled = disabled
                c.error = None
                c.index = len(cases)
                c.msgs = []
                if not isinstance(t, dict):
                    c.ver, c.connect, c.expect_disconnect = g_ver, g_connect, g_expdis
                    c.error = "invalid case: not a JSON object"
                    cases.append(c)
                    continue
                c.ver = t.get("ver", g_ver)
                c.connect = bool(t.get("connect", g_connect))
                c.expect_disconnect = bool(t.get("expect_disconnect", g_expdis))
                try:
                    if c.connect and c.ver not in (3, 4, 5):
                        raise ValueError("unsupported ver %r" % (c.ver,))
                    for m in t.get("msgs", []):
                        typ = m.get("type")
                        if typ in ("send", "recv"):
                            b = parse_hex(m.get("payload", ""))
                            if typ == "recv" and not b:
                                raise ValueError("empty recv payload")
                            c.msgs.append((typ, b))
                        elif typ == "publish":
                            qos = int(m.get("qos", 0))
                            if qos not in (0, 1, 2):
                                raise ValueError("publish qos %r" % (qos,))
                            c.msgs.append((typ, {"topic": str(m["topic"]),
                                                 "qos": qos,
                                                 "payload": str(m.get("payload", ""))}))
                        else:
                            raise ValueError("unknown message type %r" % (typ,))
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    c.error = "invalid case: %s" % e
                cases.append(c)
    return cases


# ---------------------------------------------------------------------------
# Running

def helper_publish(host, port, spec, label):
    with HELPER_LOCK:
        cid = "drover-conformance-helper-%d-%d" % (os.getpid(), next(HELPER_IDS))
    try:
        conn = open_conn(host, port)
    except OSError as e:
        raise CaseFailure("%s: helper cannot connect: %s" % (label, e))
    try:
        def expect(want, what):
            got, status = conn.recv_exact(len(want))
            if status != "ok":
                raise CaseFailure("%s: helper expected %s %s, %s" % (
                    label, what, hexs(want), describe_short(status, got, len(want))))
            if got != want:
                raise CaseFailure("%s: helper expected %s %s, got %s" % (label, what, hexs(want), hexs(got)))

        def send(data, what):
            err = conn.send(data)
            if err:
                raise CaseFailure("%s: helper sending %s: %s" % (label, what, err))

        send(gen_connect(cid, 4), "CONNECT")
        expect(bytes.fromhex("20020000"), "CONNACK")
        qos = spec["qos"]
        body = mqtt_string(spec["topic"])
        if qos > 0:
            body += (1).to_bytes(2, "big")
        body += spec["payload"].encode("utf-8")
        send(packet(0x30 | (qos << 1), body), "PUBLISH")
        if qos == 1:
            expect(bytes.fromhex("40020001"), "PUBACK")
        elif qos == 2:
            expect(bytes.fromhex("50020001"), "PUBREC")
            send(bytes.fromhex("62020001"), "PUBREL")
            expect(bytes.fromhex("70020001"), "PUBCOMP")
        send(bytes.fromhex("E000"), "DISCONNECT")
    finally:
        conn.close()


def run_case(case, host, port):
    """Return (passed, text) where text is the failure reason or a note."""
    if case.error:
        return False, case.error
    notes = []
    conn = None
    try:
        try:
            conn = open_conn(host, port)
        except OSError as e:
            raise CaseFailure("cannot connect to %s:%d: %s" % (host, port, e))

        if case.connect:
            cid = case.group + " " + case.name
            err = conn.send(gen_connect(cid, case.ver))
            if err:
                raise CaseFailure("auto CONNECT: %s" % err)
            label = "auto CONNECT (v%d)" % case.ver
            want = "20 xx 00 00 ... (success)" if case.ver == 5 else "20 02 00 00"
            full, rl, body = read_connack(conn, label, want)
            if case.ver == 5:
                if rl < 3 or body[:2] != b"\x00\x00":
                    raise CaseFailure("%s: expected CONNACK 20 xx 00 00 ... (success), got %s"
                                      % (label, hexs(full)))
            elif full != b"\x20\x02\x00\x00":
                raise CaseFailure("%s: expected CONNACK 20 02 00 00, got %s" % (label, hexs(full)))

        for i, (typ, arg) in enumerate(case.msgs, 1):
            label = "step %d %s" % (i, typ)
            if typ == "send":
                err = conn.send(arg)
                if err:
                    raise CaseFailure("%s %s: %s" % (label, hexs(arg), err))
            elif typ == "recv":
                if arg[0] == 0x20:
                    full, rl, body = read_connack(conn, label, hexs(arg))
                    reason = compare_connack(arg, full, rl, body)
                    if reason:
                        raise CaseFailure("%s: %s" % (label, reason))
                else:
                    got, status = conn.recv_exact(len(arg))
                    if status != "ok":
                        raise CaseFailure("%s: expected %s, %s" % (
                            label, hexs(arg), describe_short(status, got, len(arg))))
                    if got != arg:
                        raise CaseFailure("%s: expected %s, got %s" % (label, hexs(arg), hexs(got)))
            elif typ == "publish":
                helper_publish(host, port, arg, label)

        if case.expect_disconnect:
            closed, extra, nextra = conn.wait_closed()
            if not closed:
                msg = "expected broker to close the connection, still open after %.0f s" % CLOSE_TIMEOUT
                if nextra:
                    msg += " (received %d unexpected bytes: %s%s)" % (
                        nextra, hexs(extra), " ..." if nextra > len(extra) else "")
                raise CaseFailure(msg)
            if nextra:
                notes.append("received %d extra bytes before close: %s%s" % (
                    nextra, hexs(extra), " ..." if nextra > len(extra) else ""))
        else:
            err = conn.send(b"\xC0\x00")
            if err:
                raise CaseFailure("expected connection to stay open; PINGREQ: %s" % err)
            got, status = conn.recv_exact(2)
            if status != "ok":
                raise CaseFailure("expected connection to stay open and PINGRESP D0 00, %s"
                                  % describe_short(status, got, 2))
            if got != b"\xD0\x00":
                raise CaseFailure("expected PINGRESP D0 00, got %s" % hexs(got))
        if getattr(conn, "violation", None):
            raise CaseFailure("WebSocket: %s" % conn.violation)
        return True, "; ".join(notes)
    except CaseFailure as e:
        return False, str(e)
    except Exception as e:  # never let one case crash the runner
        return False, "runner error: %s: %s" % (e.__class__.__name__, e)
    finally:
        if conn is not None:
            conn.close()


def run_file_cases(cases, host, port, emit):
    """Run one file's cases sequentially, in order; emit(case, status, text)."""
    for c in cases:
        if c.disabled:
            emit(c, "SKIP", "group disabled")
            continue
        ok, text = run_case(c, host, port)
        emit(c, "PASS" if ok else "FAIL", text)


def file_interacts(cases):
    """True if a file's cases subscribe or receive application messages.

    Such cases would see PUBLISHes (including wills) from cases running
    concurrently in other files, so under --jobs they must run alone."""
    for c in cases:
        for typ, arg in c.msgs:
            if typ == "publish":
                return True
            if typ in ("send", "recv") and arg and (arg[0] & 0xF0) in (0x30, 0x80):
                return True
    return False


def run_parallel(files, by_file, host, port, jobs, emit):
    """Parallelise across files only; each file's cases run in order.

    Phase 1: files that neither subscribe nor receive messages, up to `jobs`
    at a time.  Phase 2: the other files one after another, alone, in file
    order.  Phase 3: files named ZZ* (end-of-run checks such as "is the
    broker still alive").  Results are emitted in file order."""
    results = {}
    cond = threading.Condition()
    printed = [0]

    def flush():
        # Emit every file whose results are complete, in file order.
        while printed[0] < len(files) and files[printed[0]] in results:
            for c, s, t in results[files[printed[0]]]:
                emit(c, s, t)
            printed[0] += 1

    def run_one(f):
        res = []
        run_file_cases(by_file[f], host, port, lambda c, s, t: res.append((c, s, t)))
        with cond:
            results[f] = res
            flush()

    late = [f for f in files if f.startswith("ZZ")]
    rest = [f for f in files if f not in late]
    serial = [f for f in rest if file_interacts(by_file[f])]
    parallel = [f for f in rest if f not in serial]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for fut in [pool.submit(run_one, f) for f in parallel]:
            fut.result()
    for f in serial + late:
        run_one(f)


def default_corpus():
    here = os.path.dirname(os.path.realpath(__file__))
    return os.path.normpath(os.path.join(here, "..", "..", "..", "shared",
                                         "conformance", "mqtt-sequences"))


def main(argv=None):
    ap = argparse.ArgumentParser(description="MQTT byte-level conformance corpus runner")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--corpus", help="corpus directory (default: $DROVER_CONFORMANCE_DIR or %s)"
                    % default_corpus())
    ap.add_argument("--filter", default=None,
                    help="run only cases whose '<file> :: <group> :: <name>' contains SUBSTRING")
    ap.add_argument("--jobs", type=int, default=1,
                    help="run up to N files in parallel (cases within a file stay sequential)")
    ap.add_argument("--verbose", "-v", action="store_true", help="also print passing and skipped cases")
    ap.add_argument("--list-failures", metavar="FILE", help="write the failing case names to FILE")
    ap.add_argument("--websocket", metavar="PATH", default=None,
                    help="speak MQTT over WebSocket: upgrade PATH (e.g. /mqtt) on host:port")
    args = ap.parse_args(argv)
    global WS_PATH
    if args.websocket is not None:
        if not args.websocket.startswith("/"):
            print("error: --websocket PATH must start with '/'", file=sys.stderr)
            return 2
        WS_PATH = args.websocket

    corpus = args.corpus or os.environ.get("DROVER_CONFORMANCE_DIR") or default_corpus()
    if not glob.glob(os.path.join(corpus, "*.json")) and os.path.isdir(os.path.join(corpus, "mqtt-sequences")):
        corpus = os.path.join(corpus, "mqtt-sequences")
    try:
        cases = load_corpus(corpus)
    except CorpusError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    print("loaded %d cases" % len(cases), flush=True)
    if args.verbose:
        print("corpus: %s" % corpus, flush=True)
    if args.filter is not None:
        cases = [c for c in cases if args.filter in c.label()]
        print("selected %d cases matching %r" % (len(cases), args.filter), flush=True)

    # Group by file, preserving file order and case order within a file.
    by_file = {}
    for c in cases:
        by_file.setdefault(c.file, []).append(c)
    files = list(by_file)

    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    failures = []
    out_lock = threading.Lock()

    def emit(c, status, text):
        with out_lock:
            counts[status] += 1
            if status == "FAIL":
                failures.append(c.label())
                print("FAIL %s: %s" % (c.label(), text), flush=True)
            elif args.verbose:
                print("%s %s%s" % (status, c.label(), (" (" + text + ")") if text else ""), flush=True)

    try:
        if args.jobs <= 1 or len(files) <= 1:
            for f in files:
                run_file_cases(by_file[f], args.host, args.port, emit)
        else:
            run_parallel(files, by_file, args.host, args.port, args.jobs, emit)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

    if args.list_failures:
        try:
            with open(args.list_failures, "w", encoding="utf-8") as fh:
                for name in failures:
                    fh.write(name + "\n")
        except OSError as e:
            print("error: cannot write %s: %s" % (args.list_failures, e), file=sys.stderr)

    line = "%d passed, %d failed" % (counts["PASS"], counts["FAIL"])
    if counts["SKIP"]:
        line += ", %d skipped" % counts["SKIP"]
    print(line, flush=True)
    return 0 if counts["FAIL"] == 0 else 1


if __name__ == "__main__":
    try:
        rc = main()
    except BrokenPipeError:     # e.g. output piped into `head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        rc = 1
    sys.exit(rc)
