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
           [--jobs N] [--verbose] [--list-failures FILE]

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
import glob
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
        conn = Conn(host, port)
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
            conn = Conn(host, port)
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
    args = ap.parse_args(argv)

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
