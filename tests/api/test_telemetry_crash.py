#!/usr/bin/python3
"""kill -9 during telemetry ingest, again and again: nothing acknowledged is lost,
nothing stored is corrupt (the telemetry issue's crash test; ADR-0014).

One data directory, one tenant, three devices with secrets.  Each iteration:
three paho publishers (QoS 1; MQTT 3.1.1, 5.0, and one that alternates) send
{"ts": BASE + n, "values": {"seq": n, "v": n * 0.25}} on devices/<d>/telemetry
as fast as the PUBACKs come (a window of WINDOW unacknowledged messages), and
record every n that was acknowledged.  After a random 50-400 ms the server is
killed with SIGKILL and started again on the same directory.  Then, over REST:

- the samples of this iteration's range (.../telemetry?key=&from=&to=, paged
  with next_cursor) hold every acknowledged n, under both keys, with the right
  value at the right time; an n that was sent but never acknowledged may be
  there or not (at-least-once), but nothing that was never sent, no other
  value, no time twice, and a message is stored whole (seq and v together);
- after every flushing iteration (below) and at the end: count and sum of
  each device's whole history (.../telemetry/aggregate, and the tenant-wide
  /telemetry/aggregate) equal what the earlier iterations found, so later
  crashes, flushes and compactions changed nothing that was there before;
- the restart's log says how the store was repaired: "telemetry store
  repaired" with log_bytes_cut > 0 is a torn tail that was cut (counted and
  reported, not a failure); a block file set aside, a damaged or corrupt
  block, a failed flush or a sanitizer report fails the test, and no
  *.corrupt file may appear under the store's directory.

Every FLUSH_EVERY-th iteration runs with tsdb.head_max_samples=2000, so the
head is written into blocks (and compacted) during ingest and the kill can land
inside a flush.  At the end the server is stopped cleanly (SIGTERM writes the
head into blocks) and started again, and the whole history of every device is
read back once more and compared sample by sample.

Times: device timestamps start 30 s before a UTC midnight at least an hour
ago, so the series cross a partition boundary (tsdb.partition_hours 24) and
never run into the future.  Sequence numbers go on across iterations, so no
time is ever written twice.

CRASH_ITERATIONS (default 100) sets the number of iterations.  The data
directory is kept (and its path printed) when the test fails.

Usage: test_telemetry_crash.py --drover BINARY
"""
import contextlib
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "broker"))
from apilib import BASE_SETTINGS, Api, Suite, check, eq, expect  # noqa: E402
from drover import Drover  # noqa: E402
from mqtt_testlib import mqtt  # noqa: E402

suite = Suite("test_telemetry_crash")

TENANT = "crash"
DEVICES = ("dev-a", "dev-b", "dev-c")
ITERATIONS = int(os.environ.get("CRASH_ITERATIONS", "100"))
FLUSH_EVERY = 10          # every FLUSH_EVERY-th iteration flushes during ingest
FLUSH_HEAD_SAMPLES = "2000"
WINDOW = 32               # unacknowledged messages a publisher keeps in flight
KILL_MS = (50, 400)       # the kill comes this long after publishing starts
PAGE = 10000              # the samples route's largest ?limit=
DAY_MS = 86_400_000

# Lines of the restart's log that mean damage rather than repair.
BAD_LOG = re.compile(r"damaged|corrupt block|failed its checksum|flush failed|compaction failed|"
                     r"log write failed|AddressSanitizer|runtime error")
REPAIRED = re.compile(r"telemetry store repaired.*?log_bytes_cut=(\d+).*?"
                      r"block_files_set_aside=(\d+)")


def seq_value(n):
    return n


def v_value(n):
    return n * 0.25


KEYS = {"seq": seq_value, "v": v_value}


class Publisher(threading.Thread):
    """One device's paho client for one iteration, on its own thread: publishes
    n = first, first + 1, ... keeping WINDOW unacknowledged, until stopped or
    the connection ends.  sent: every n handed to the socket; acked: every n whose
    PUBACK arrived (paho 1.6 does not show a 5.0 PUBACK's reason code: a refusal
    would count as acknowledged, and then as lost).  lost_at: when the connection
    ended by itself (monotonic), to tell a loss before the kill from the kill."""

    def __init__(self, port, device, secret, version, base, first):
        super().__init__(daemon=True)
        self.device, self.base, self.next = device, base, first
        self.version = version
        self.sent, self.acked = [], []
        self.mid_seq = {}
        self.acked_mids = []
        self.error = None
        self.lost_at = None
        self.ready = threading.Event()  # CONNACK, or the thread gave up
        self.stop_flag = threading.Event()
        if version == 5:
            self.c = mqtt.Client(client_id=device, protocol=mqtt.MQTTv5)
        else:
            self.c = mqtt.Client(client_id=device, clean_session=True, protocol=mqtt.MQTTv311)
        self.c.username_pw_set(f"{TENANT}/{device}", secret)
        self.c.max_inflight_messages_set(WINDOW)
        self.c.on_connect = self._on_connect
        self.c.on_publish = lambda c, u, mid: self.acked_mids.append(mid)
        self.port = port
        self.connack = None

    def _on_connect(self, c, u, flags, rc, properties=None):
        self.connack = rc.value if hasattr(rc, "value") else rc
        self.ready.set()

    def _lost(self):
        if self.lost_at is None:
            self.lost_at = time.monotonic()

    def run(self):
        try:
            if self.version == 5:
                self.c.connect("127.0.0.1", self.port, 60, clean_start=True)
            else:
                self.c.connect("127.0.0.1", self.port, 60)
            while self.connack is None and not self.stop_flag.is_set():
                if self.c.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                    self.error = "the connection ended before CONNACK"
                    return
            if self.connack != 0:
                self.error = f"CONNACK {self.connack}"
                return
            topic = f"devices/{self.device}/telemetry"
            done = 0  # acked_mids taken so far
            while not self.stop_flag.is_set():
                while len(self.sent) - len(self.acked) < WINDOW:
                    n = self.next
                    payload = '{"ts":%d,"values":{"seq":%d,"v":%r}}' % (self.base + n, n,
                                                                      v_value(n))
                    info = self.c.publish(topic, payload, qos=1)
                    # Sent even when publish() fails: part of it may have gone out.
                    self.mid_seq[info.mid] = n
                    self.sent.append(n)
                    self.next += 1
                    if info.rc != mqtt.MQTT_ERR_SUCCESS:
                        self._lost()
                        return
                if self.c.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                    self._lost()
                    return
                while done < len(self.acked_mids):
                    self.acked.append(self.mid_seq.pop(self.acked_mids[done]))
                    done += 1
        except OSError:  # the server went away under us
            self._lost()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = repr(e)
        finally:
            self.ready.set()
            # A PUBACK read in the last loop() is an acknowledgement too.
            for mid in self.acked_mids[len(self.acked):]:
                if mid in self.mid_seq:
                    self.acked.append(self.mid_seq.pop(mid))
            with contextlib.suppress(Exception):
                self.c.socket() and self.c.socket().close()


class Env:
    def __init__(self, d, api, secrets, base):
        self.d, self.api = d, api
        self.secrets = secrets
        self.base = base
        self.next = {dev: 0 for dev in DEVICES}          # the next n to send
        self.present = {dev: set() for dev in DEVICES}   # every n found stored
        self.sent_total = self.acked_total = self.verified = 0
        self.torn = 0
        self.repairs = 0
        self.flush_iterations = 0

    def alive(self):
        return self.d.alive()

    def series(self, dev, key, lo, hi):
        """{ts: value} of [lo, hi), every page."""
        out, cursor = {}, None
        path = f"/api/v1/tenants/{TENANT}/devices/{dev}/telemetry"
        while True:
            q = {"key": key, "from": lo, "to": hi, "limit": PAGE}
            if cursor:
                q["cursor"] = cursor
            r = self.api.get(path, query=q)
            if r.status == 404:
                return out  # the series does not exist (yet)
            expect(r, 200, f"samples of {dev}/{key}")
            for item in r.json["items"]:
                check(item["ts"] not in out, f"{dev}/{key}: time {item['ts']} answered twice")
                check(lo <= item["ts"] < hi, f"{dev}/{key}: time {item['ts']} outside "
                                             f"[{lo}, {hi})")
                out[item["ts"]] = item["value"]
            cursor = r.json.get("next_cursor")
            if not cursor:
                return out

    def check_range(self, dev, first, last, sent, acked, what):
        """The samples of n in [first, last): what was acknowledged is there, the
        rest was sent, values are right, seq and v agree.  Returns the n stored."""
        lo, hi = self.base + first, self.base + last
        sent, found = set(sent), {}
        for key, value in KEYS.items():
            got = self.series(dev, key, lo, hi)
            ns = set()
            for ts, v in got.items():
                n = ts - self.base
                check(n in sent, f"{what}: {dev}/{key} has a sample at n={n} that was never "
                                 f"sent")
                eq(v, value(n), f"{what}: {dev}/{key} value at n={n}")
                ns.add(n)
            lost = sorted(set(acked) - ns)
            check(not lost, f"{what}: {dev}/{key}: {len(lost)} acknowledged samples lost, "
                            f"first n={lost[:10]} (acked {len(acked)}, stored {len(ns)})")
            found[key] = ns
        torn = found["seq"] ^ found["v"]
        check(not torn, f"{what}: {dev}: messages stored in part (seq without v or v "
                        f"without seq): n={sorted(torn)[:10]}")
        return found["seq"]

    def check_history(self, what):
        """Count and sum of every device's whole history, per device and tenant-wide."""
        hi = self.base + max(self.next.values()) + 1
        for dev in DEVICES:
            want = self.present[dev]
            for key, value in KEYS.items():
                r = self.api.get(f"/api/v1/tenants/{TENANT}/devices/{dev}/telemetry/aggregate",
                                 query={"key": key, "from": self.base, "to": hi,
                                        "fn": "count,sum"})
                if not want and r.status == 404:
                    continue
                expect(r, 200, f"aggregate of {dev}/{key}")
                items = r.json["items"]
                count = items[0]["count"] if items else 0
                total = items[0]["sum"] if items else 0
                eq(count, len(want), f"{what}: {dev}/{key} count over the whole history")
                eq(total, sum(value(n) for n in want), f"{what}: {dev}/{key} sum over the "
                                                      f"whole history")
        r = expect(self.api.get(f"/api/v1/tenants/{TENANT}/telemetry/aggregate",
                                query={"key": "seq", "from": self.base, "to": hi,
                                       "fn": "count,sum"}), 200, "tenant aggregate")
        got = {i["device"]: (i["count"], i["sum"]) for i in r.json["items"]}
        want = {dev: (len(ns), sum(ns)) for dev, ns in self.present.items() if ns}
        eq(got, want, f"{what}: tenant-wide count and sum of seq per device")

    def check_restart_log(self, text, what):
        bad = [line for line in text.splitlines() if BAD_LOG.search(line)]
        check(not bad, f"{what}: the restart's log reports damage:\n" + "\n".join(bad[:20]))
        for m in REPAIRED.finditer(text):
            self.repairs += 1
            if int(m.group(1)) > 0:
                self.torn += 1
            eq(int(m.group(2)), 0, f"{what}: block files set aside at the restart")
        tsdb = os.path.join(self.d.data_dir, "data", "tsdb")
        corrupt = [os.path.join(root, f) for root, _, files in os.walk(tsdb)
                   for f in files if f.endswith(".corrupt")]
        check(not corrupt, f"{what}: corrupt files under the store: {corrupt[:10]}")


def midnight_base():
    """Device time 0: 30 s before a UTC midnight at least an hour ago."""
    now = int(time.time() * 1000)
    return (now - 3_600_000) // DAY_MS * DAY_MS - 30_000


def set_iteration_settings(d, i, env=None):
    """The settings iteration i runs with (the flush iterations' small head)."""
    flush = i % FLUSH_EVERY == FLUSH_EVERY - 1
    if flush:
        d.settings["tsdb.head_max_samples"] = FLUSH_HEAD_SAMPLES
        if env:
            env.flush_iterations += 1
    else:
        d.settings.pop("tsdb.head_max_samples", None)
    return flush


@contextlib.contextmanager
def setup(binary):
    tmp = tempfile.mkdtemp(prefix="drover-crash-")
    d = Drover(binary, settings=dict(BASE_SETTINGS), data_dir=tmp, http_port=True)
    ok = False
    try:
        set_iteration_settings(d, 0)
        d.start()
        api = Api(d.http_port, d.admin_token())
        expect(api.post("/api/v1/tenants", {"id": TENANT, "name": TENANT}), 201, "tenant")
        secrets = {}
        for dev in DEVICES:
            expect(api.post(f"/api/v1/tenants/{TENANT}/devices", {"id": dev}), 201, dev)
            r = expect(api.post(f"/api/v1/tenants/{TENANT}/devices/{dev}/credentials",
                                {"kind": "secret"}), 201, f"secret of {dev}")
            secrets[dev] = r.json["secret"]
        env = Env(d, api, secrets, midnight_base())
        yield env
        ok = True
    finally:
        rc = d.stop()
        log = d.read_log()
        clean = rc in (0, None) and not re.search(r"Sanitizer|runtime error", log)
        if not clean:
            print(log)
        if ok and clean:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"data directory kept: {tmp}")
        if ok and not clean:
            raise RuntimeError(f"drover exited with {rc} or reported a sanitizer error")


@suite.test()
def kill9_during_ingest_loses_nothing_acknowledged(env):
    d = env.d
    rng = random.Random(os.environ.get("CRASH_SEED", time.time_ns()))
    t0 = time.time()
    for i in range(ITERATIONS):
        what = f"iteration {i}"
        flushing = set_iteration_settings(d, i, env)
        if flushing:
            what += " (flushing)"
        pubs = []
        for k, dev in enumerate(DEVICES):
            version = (4, 5, 4 + i % 2)[k]
            pubs.append(Publisher(d.port, dev, env.secrets[dev], version, env.base,
                                  env.next[dev]))
        for p in pubs:
            p.start()
        for p in pubs:
            check(p.ready.wait(15), f"{what}: {p.device} got no CONNACK")
            check(p.error is None, f"{what}: {p.device}: {p.error}")
            eq(p.connack, 0, f"{what}: {p.device}'s CONNACK")
        time.sleep(rng.uniform(*KILL_MS) / 1000)
        killed_at = time.monotonic()
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        for p in pubs:
            p.stop_flag.set()
        for p in pubs:
            p.join(10)
            check(not p.is_alive(), f"{what}: {p.device}'s publisher did not stop")
            check(p.error is None, f"{what}: {p.device}: {p.error}")
            check(p.lost_at is None or p.lost_at >= killed_at,
                  f"{what}: {p.device} lost its connection before the kill")
        # The restart, with the next iteration's settings; its log is read from here on.
        set_iteration_settings(d, i + 1)
        d.stop(signal.SIGKILL)
        mark = os.path.getsize(d.log_path)
        d.start()
        with open(d.log_path, "rb") as f:
            f.seek(mark)
            restart_log = f.read().decode(errors="replace")
        env.check_restart_log(restart_log, what)
        for p in pubs:
            check(p.sent, f"{what}: {p.device} sent nothing before the kill")
            found = env.check_range(p.device, env.next[p.device], p.next, p.sent, p.acked, what)
            env.present[p.device] |= found
            env.next[p.device] = p.next
            env.sent_total += len(p.sent)
            env.acked_total += len(p.acked)
            env.verified += len(p.acked)
        # The whole history costs more with every iteration: after the iterations that
        # flushed (and so rewrote blocks) and at the end.
        if flushing or i == ITERATIONS - 1:
            env.check_history(what)
    # A clean restart (SIGTERM writes the head into blocks), then the whole history
    # of every device once more, sample by sample.
    d.restart()
    env.check_history("after a clean restart")
    for dev in DEVICES:
        for key, value in KEYS.items():
            got = env.series(dev, key, env.base, env.base + env.next[dev])
            eq(set(got), {env.base + n for n in env.present[dev]},
               f"the end: the times of {dev}/{key}")
            bad = [ts for ts, v in got.items() if v != value(ts - env.base)]
            check(not bad, f"the end: {dev}/{key} wrong values at {bad[:10]}")
    print(f"iterations {ITERATIONS} ({env.flush_iterations} flushing), "
          f"sent {env.sent_total}, acked samples {env.acked_total}, "
          f"verified {env.verified}, stored {sum(map(len, env.present.values()))}, "
          f"repairs {env.repairs}, torn tails cut {env.torn}, "
          f"{time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    suite.main(setup, "kill -9 during telemetry ingest")
