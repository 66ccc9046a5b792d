#!/usr/bin/python3
"""Commands (issue 7, docs/commands.md), black box: real paho-mqtt devices (MQTT 5.0 and 3.1.1)
with their own secrets receive requests on devices/<d>/commands/<id>/request and answer with
ack and response; the REST API sends, follows, waits for and cancels commands; the live stream
shows command.* events; kill -9 in the middle.

What is checked:
- the request's payload and, over MQTT 5.0, its request/response properties; the states and
  transitions of a command from queued to succeeded or failed; durable acks (the state is
  visible as soon as the PUBACK of the ack or response arrives);
- synchronous sends (wait_ms) and long polls (GET ?wait_ms);
- queues for offline devices, in creation order, at most commands.max_inflight unacknowledged;
- retries with backoff, timed_out after max_attempts sends or after timeout_ms, expiry,
  cancelling, the device's refused answers (404, 409, 400);
- idempotency keys; no more than max_attempts deliveries across reconnects; kill -9;
- group fan-out and batches; the live stream; tenant isolation; validation.

The server runs with commands.retry_base_ms=200, commands.max_inflight=4 and
commands.max_pending=10, so retries and limits are quick to reach.

Usage: test_commands.py --drover BINARY [-k NAME]
Ends with "N passed, N failed".
"""
import contextlib
import datetime
import json
import os
import re
import sys
import threading
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
from apilib import (DATE_TIME, Api, Suite, TestFailure, check, eq, expect,  # noqa: E402
                    expect_problem, start_server)
from test_shadow import SECRET, Dev, check_ms, token_of  # noqa: E402

suite = Suite("test_commands")
RETRY_BASE_MS = 200
MAX_INFLIGHT = 4
MAX_PENDING = 10
TERMINAL = ("succeeded", "failed", "timed_out", "expired", "cancelled")
UNKNOWN_ID = "cmd_" + "a" * 24


# -- devices ----------------------------------------------------------------------------------

class CmdDev(Dev):
    """A device (test_shadow.Dev) with the command topics."""

    def req_topic(self, cid):
        return f"devices/{self.device}/commands/{cid}/request"

    def sub_commands(self):
        self.sub_ok(f"devices/{self.device}/commands/+/request")
        self.sub_ok(f"devices/{self.device}/commands/+/rejected")

    def requests(self, since=0, cid=None):
        """[(Msg, payload as JSON)] of the requests received, in order."""
        pat = re.compile(rf"^devices/{re.escape(self.device)}/commands/([^/]+)/request$")
        out = []
        for m in self.msgs(since):
            mt = pat.match(m.topic)
            if mt and (cid is None or mt.group(1) == cid):
                try:
                    out.append((m, json.loads(m.payload)))
                except ValueError:
                    raise TestFailure(f"{m.topic}: payload is not JSON: {m.payload[:200]!r}")
        return out

    def wait_request(self, cid, since=0, pred=None, timeout=10.0):
        def ok(m):
            if m.topic != self.req_topic(cid):
                return False
            try:
                return pred is None or pred(json.loads(m.payload))
            except ValueError:
                return True  # reported by the caller's json.loads
        m = self.wait_msg(ok, since, timeout, f"request of {cid}")
        return m, json.loads(m.payload)

    def ack(self, cid, payload=b"got it"):
        self.publish(f"devices/{self.device}/commands/{cid}/ack", payload)

    def respond(self, cid, body):
        self.publish(f"devices/{self.device}/commands/{cid}/response", body)

    def wait_rejected(self, cid, since, timeout=10.0):
        return self.wait_json(f"devices/{self.device}/commands/{cid}/rejected", since,
                              timeout=timeout, what=f"rejected answer for {cid}")


class Responder(threading.Thread):
    """Answers every request a device receives: ack (if ack), then a response (if respond)
    with the given status, result and error."""

    def __init__(self, dev, status="succeeded", result=None, error=None, ack=True, respond=True):
        super().__init__(daemon=True)
        self.dev, self.status, self.result, self.error = dev, status, result, error
        self.do_ack, self.do_respond = ack, respond
        self.stop_flag = threading.Event()
        self.answered = set()
        self.failure = None

    def run(self):
        seen = 0
        pc = self.dev.pc
        try:
            while not self.stop_flag.is_set():
                with pc.cond:
                    pc.cond.wait_for(lambda: len(pc.msgs) > seen or self.stop_flag.is_set(), 0.2)
                    n = len(pc.msgs)
                reqs = self.dev.requests(seen)
                seen = n
                for _, req in reqs:
                    cid = req.get("id")
                    if cid in self.answered:
                        continue
                    self.answered.add(cid)
                    if self.do_ack:
                        self.dev.ack(cid)
                    if self.do_respond:
                        body = {"status": self.status}
                        if self.result is not None:
                            body["result"] = self.result
                        if self.error is not None:
                            body["error"] = self.error
                        self.dev.respond(cid, body)
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.failure = e

    def stop(self):
        self.stop_flag.set()
        self.join(10)
        if self.failure:
            raise TestFailure(f"the responder of {self.dev.device} failed: {self.failure!r}")


# -- environment ------------------------------------------------------------------------------

class Env:
    def __init__(self, d, admin):
        self.d = d
        self.admin = admin
        self.retry_base = RETRY_BASE_MS
        self.inflight = MAX_INFLIGHT
        self.devs = []
        self.responders = []
        self.n = 0

    def alive(self):
        return self.d.alive()

    def fresh(self, prefix):
        self.n += 1
        return f"{prefix}-{self.n}"

    def provision(self, device, tenant="acme", **fields):
        expect(self.admin.post(f"/api/v1/tenants/{tenant}/devices", dict(fields, id=device)), 201,
               f"device {tenant}/{device}")
        expect(self.admin.post(f"/api/v1/tenants/{tenant}/devices/{device}/credentials",
                               {"kind": "secret", "secret": SECRET}), 201, "secret")
        return device

    def new_device(self, prefix, tenant="acme", **fields):
        return self.provision(self.fresh(prefix), tenant, **fields)

    def device(self, device, version=5, tenant="acme", sub=True, **kw):
        """A connected device, subscribed to its requests and refusals unless sub=False."""
        dv = CmdDev(self, device, version, tenant, **kw)
        if sub:
            dv.sub_commands()
        return dv

    def responder(self, dev, **kw):
        r = Responder(dev, **kw)
        r.start()
        self.responders.append(r)
        return r

    def cleanup(self):
        while self.responders:
            self.responders.pop().stop_flag.set()
        while self.devs:
            self.devs.pop().close()


@contextlib.contextmanager
def setup(binary):
    settings = {"commands.retry_base_ms": str(RETRY_BASE_MS),
                "commands.max_inflight": str(MAX_INFLIGHT),
                "commands.max_pending": str(MAX_PENDING)}
    with start_server(binary, **settings) as (d, admin):
        env = Env(d, admin)
        for t in ("acme", "globex"):
            expect(admin.post("/api/v1/tenants", {"id": t, "name": t}), 201, f"tenant {t}")
        env.op = Api(d.http_port, token_of(admin, "acme", "operator")[1])
        env.viewer_token = token_of(admin, "acme", "viewer")[1]
        env.viewer = Api(d.http_port, env.viewer_token)
        env.globex = Api(d.http_port, token_of(admin, "globex", "operator")[1])
        try:
            yield env
        finally:
            env.cleanup()


def test(fn):
    """A suite test whose devices and responders are stopped when it ends."""
    def run(env):
        try:
            fn(env)
        finally:
            env.cleanup()
    run.__name__ = fn.__name__
    return suite.test()(run)


# -- REST helpers -----------------------------------------------------------------------------

def cpath(device, tenant="acme"):
    return f"/api/v1/tenants/{tenant}/devices/{device}/commands"


def one(cid, tenant="acme", tail=""):
    return f"/api/v1/tenants/{tenant}/commands/{cid}{tail}"


def send(env, device, body, status=202, api=None, headers=None, what=None):
    r = (api or env.op).post(cpath(device), body, headers=headers)
    what = what or f"POST command {json.dumps(body)[:100]} to {device}"
    if status in (400, 403, 404, 409):
        expect_problem(r, status, what)
        return r
    expect(r, status, what)
    check_command(r.json, what)
    return r


def send_ok(env, device, body, **kw):
    """POST a command (202); returns its id."""
    r = send(env, device, body, **kw)
    loc = r.header("Location")
    check(loc and loc.endswith(f"/api/v1/tenants/acme/commands/{r.json['id']}"),
          f"Location of a 202: {loc!r}")
    return r.json["id"]


def get_cmd(env, cid, api=None, **query):
    r = (api or env.op).get(one(cid), query=query or None)
    expect(r, 200, f"GET command {cid}")
    check_command(r.json, f"GET {cid}")
    return r.json


def wait_state(env, cid, states, timeout=15.0):
    """Poll until the command's state is one of states (a str or a tuple)."""
    states = (states,) if isinstance(states, str) else tuple(states)
    deadline = time.monotonic() + timeout
    while True:
        doc = get_cmd(env, cid)
        if doc["state"] in states:
            return doc
        if time.monotonic() > deadline:
            raise TestFailure(f"command {cid} is {doc['state']} after {timeout:.0f} s, want "
                              f"{'/'.join(states)}: {doc}")
        time.sleep(0.1)


def parse_time(s):
    check(isinstance(s, str) and DATE_TIME.match(s), f"not an RFC 3339 time: {s!r}")
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00")
                                           ).timestamp()


def check_command(doc, what):
    """The command document of docs/commands.md."""
    check(isinstance(doc, dict), f"{what}: not an object: {doc!r}")
    for k in ("id", "device", "batch", "name", "params", "state", "attempts", "max_attempts",
              "timeout_ms", "expires_at", "created_at", "updated_at", "idempotency_key",
              "result", "error"):
        check(k in doc, f"{what}: no {k!r} in {doc}")
    check(re.match(r"^cmd_[A-Za-z0-9]+$", doc["id"] or ""), f"{what}: id {doc['id']!r}")
    check(doc["state"] in ("queued", "sent", "delivered") + TERMINAL,
          f"{what}: state {doc['state']!r}")
    for k in ("expires_at", "created_at", "updated_at"):
        parse_time(doc[k])
    check(parse_time(doc["updated_at"]) >= parse_time(doc["created_at"]),
          f"{what}: updated_at before created_at")
    if "transitions" in doc:
        tr = doc["transitions"]
        check(isinstance(tr, list) and tr and tr[0].get("state") == "queued",
              f"{what}: transitions start with queued: {tr}")
        at = [parse_time(t.get("at")) for t in tr]
        check(at == sorted(at), f"{what}: transitions out of time order: {tr}")
        eq(tr[-1]["state"], doc["state"], f"{what}: the last transition is the state")


def states_of(doc):
    return [t["state"] for t in doc["transitions"]]


def distinct(seq):
    """The items of seq in order, consecutive repeats folded."""
    out = []
    for s in seq:
        if not out or out[-1] != s:
            out.append(s)
    return out


# -- the round trip ---------------------------------------------------------------------------

def round_trip(env, version):
    d = env.new_device(f"rt{version}")
    dev = env.device(d, version)
    mark = dev.mark()
    t0 = time.time()
    r = send(env, d, {"name": "reboot", "params": {"delay_s": 5}})
    doc = r.json
    cid = doc["id"]
    loc = r.header("Location")
    check(loc and loc.endswith(f"/api/v1/tenants/acme/commands/{cid}"), f"Location: {loc!r}")
    eq((doc["device"], doc["name"], doc["params"], doc["batch"]),
       (d, "reboot", {"delay_s": 5}, None), "the command as created")
    eq((doc["max_attempts"], doc["timeout_ms"], doc["idempotency_key"], doc["result"],
        doc["error"]), (5, 30000, None, None, None), "defaults")
    check(doc["state"] in ("queued", "sent"), f"state of a new command: {doc['state']}")
    left = parse_time(doc["expires_at"]) - parse_time(doc["created_at"])
    check(abs(left - 86400) < 5, f"expires_at is 24 h after created_at by default ({left} s)")

    m, req = dev.wait_request(cid, mark)
    eq(m.qos, 1, "requests go out at QoS 1")
    eq((req.get("id"), req.get("name"), req.get("params"), req.get("attempt"),
        req.get("timeout_ms")), (cid, "reboot", {"delay_s": 5}, 1, 30000), "request payload")
    check_ms(req.get("expires_at"), "request expires_at")
    check(abs(req["expires_at"] / 1000 - (t0 + 86400)) < 60, f"expires_at in 24 h: {req}")
    if version == 5:
        eq(m.prop("ResponseTopic"), f"devices/{d}/commands/{cid}/response", "Response Topic")
        eq(m.prop("CorrelationData"), cid.encode(), "Correlation Data")
        eq(m.prop("ContentType"), "application/json", "Content Type")
        mei = m.prop("MessageExpiryInterval")
        check(isinstance(mei, int) and 86400 - 120 <= mei <= 86400,
              f"Message Expiry Interval: {mei}")
    # (Published first, then recorded: "sent" may show a moment after the device has it.)
    wait_state(env, cid, "sent", timeout=10)

    dev.ack(cid)
    doc = get_cmd(env, cid)
    eq(doc["state"], "delivered", "state right after the PUBACK of the ack (acks are durable)")
    dev.respond(cid, {"status": "succeeded", "result": {"uptime": 3}})
    doc = get_cmd(env, cid)
    eq(doc["state"], "succeeded", "state right after the PUBACK of the response")
    eq((doc["result"], doc["error"]), ({"uptime": 3}, None), "the outcome")
    # (A busy machine may let a resend through before the ack: attempts counts what was sent.)
    eq(doc["attempts"], len(dev.requests(mark, cid)), "attempts: one per request received")
    eq(states_of(doc), ["queued", "sent", "delivered", "succeeded"], "transitions")
    eq(doc["transitions"][1].get("detail", {}).get("attempt"), 1, "sent transition's attempt")
    check(not dev.msgs(mark, f"devices/{d}/commands/{cid}/rejected"), "nothing was refused")
    items = expect(env.viewer.get("/api/v1/tenants/acme/commands", query={"device": d}), 200,
                   "list").json["items"]
    eq([i["id"] for i in items], [cid], "the device's commands")
    eq(items[0]["state"], "succeeded", "state in the list")


@test
def round_trip_mqtt5(env):
    round_trip(env, 5)


@test
def round_trip_mqtt311(env):
    round_trip(env, 4)


@test
def failed_response_without_ack(env):
    d = env.new_device("fail")
    dev = env.device(d, 5)
    mark = dev.mark()
    cid = send_ok(env, d, {"name": "flash"})
    dev.wait_request(cid, mark)
    dev.respond(cid, {"status": "failed", "error": "disk full"})  # no ack: counts as both
    doc = get_cmd(env, cid)
    eq((doc["state"], doc["error"], doc["result"]), ("failed", "disk full", None), "failed")
    eq(states_of(doc)[:2], ["queued", "sent"], "transitions")
    eq(states_of(doc)[-1], "failed", "last transition")
    dev.respond(cid, {"status": "succeeded"})
    eq(dev.wait_rejected(cid, mark).get("code"), 409, "a second response is refused")
    eq(get_cmd(env, cid)["state"], "failed", "the first response stands")


# -- synchronous sends and long polls ---------------------------------------------------------

@test
def synchronous_sends(env):
    d = env.new_device("sync")
    dev = env.device(d, 5)
    resp = env.responder(dev, result={"pong": True})
    r = send(env, d, {"name": "ping", "wait_ms": 10000}, status=200, what="sync send answered")
    eq((r.json["state"], r.json["result"]), ("succeeded", {"pong": True}), "sync answer")
    resp.stop()

    # A device that never answers: 202 once the wait has passed, the command still going.
    t0 = time.monotonic()
    r = send(env, d, {"name": "ping", "wait_ms": 1500}, status=202, what="sync send, no answer")
    check(time.monotonic() - t0 >= 1.3, "the answer came before wait_ms passed")
    eq(r.json["state"], "sent", "state after the wait")
    check(r.header("Location"), "a 202 has a Location")

    # One that acknowledges but does not respond: delivered.
    dev.close()
    dev = env.device(d, 5)
    env.responder(dev, respond=False)
    r = send(env, d, {"name": "ping", "wait_ms": 1500}, status=202, what="sync send, ack only")
    eq(r.json["state"], "delivered", "state after the wait")

    off = env.new_device("sync")
    r = send(env, off, {"name": "ping", "wait_ms": 800}, status=202, what="sync send, offline")
    eq(r.json["state"], "queued", "an offline device's command stays queued")


@test
def long_poll(env):
    d = env.new_device("poll")
    dev = env.device(d, 4)
    mark = dev.mark()
    cid = send_ok(env, d, {"name": "slow"})
    dev.wait_request(cid, mark)
    out = {}

    def poll():
        out["r"] = env.viewer.get(one(cid), query={"wait_ms": 30000})
    t = threading.Thread(target=poll, daemon=True)
    t.start()
    time.sleep(0.5)
    check(t.is_alive(), f"the long poll answered before the command finished: {out}")
    dev.ack(cid)
    time.sleep(0.2)
    check(t.is_alive(), "the long poll answered at delivery, not at the end")
    dev.respond(cid, {"status": "succeeded", "result": 7})
    t.join(15)
    check(not t.is_alive(), "the long poll did not answer once the command finished")
    r = out["r"]
    expect(r, 200, "long poll")
    eq((r.json["state"], r.json["result"]), ("succeeded", 7), "long poll answer")

    out.clear()
    t = threading.Thread(target=poll, daemon=True)
    t.start()
    t.join(10)
    check(not t.is_alive(), "a long poll of a finished command does not wait")
    eq(out["r"].json["state"], "succeeded", "finished")

    cid2 = send_ok(env, d, {"name": "slow"})
    doc = get_cmd(env, cid2, wait_ms=300)
    check(doc["state"] not in TERMINAL, f"a short long poll of an unfinished command: {doc}")
    expect_problem(env.viewer.get(one(cid2), query={"wait_ms": 60001}), 400, "wait_ms > 60000")
    expect_problem(env.viewer.get(one(cid2), query={"wait_ms": "soon"}), 400,
                   "wait_ms not a number")


# -- queues, order, in-flight limit -----------------------------------------------------------

def queued_in_order(env, version):
    d = env.new_device(f"queue{version}")
    n = 5
    cids = [send_ok(env, d, {"name": f"step-{i}", "params": {"i": i}}) for i in range(n)]
    for cid in cids:
        doc = get_cmd(env, cid)
        eq((doc["state"], doc["attempts"]), ("queued", 0), "an offline device's command")
    dev = env.device(d, version)
    for i, cid in enumerate(cids):  # acked as they come: commands.max_inflight may be < n
        dev.wait_request(cid)
        wait_state(env, cid, "sent", timeout=10)
        dev.ack(cid)
    got = [req["id"] for _, req in dev.requests()]
    firsts = [c for i, c in enumerate(got) if c not in got[:i]]
    eq(firsts, cids, "requests arrive in creation order")
    for i, cid in enumerate(cids):
        dev.respond(cid, {"status": "succeeded", "result": i})
    for i, cid in enumerate(cids):
        doc = get_cmd(env, cid)
        eq((doc["state"], doc["result"]), ("succeeded", i), f"command {i}")


@test
def offline_queue_in_order_mqtt5(env):
    queued_in_order(env, 5)


@test
def offline_queue_in_order_mqtt311(env):
    queued_in_order(env, 4)


@test
def at_most_max_inflight_unacknowledged(env):
    k = env.inflight
    d = env.new_device("inflight")
    cids = [send_ok(env, d, {"name": "n", "params": {"i": i}}) for i in range(k + 3)]
    dev = env.device(d, 5)
    for cid in cids[:k]:
        dev.wait_request(cid)
    time.sleep(0.5)
    sent = distinct(req["id"] for _, req in dev.requests())
    eq(sorted(set(sent)), sorted(cids[:k]), f"only the first {k} go out before any ack")
    eq(distinct(sent)[:k], cids[:k], "in creation order")
    for i in range(3):
        dev.ack(cids[i])
        dev.wait_request(cids[k + i])
    got = [req["id"] for _, req in dev.requests()]
    firsts = [c for i, c in enumerate(got) if c not in got[:i]]
    eq(firsts, cids, "every command once acks make room, in creation order")


# -- retries, timeouts, expiry ----------------------------------------------------------------

@test
def retries_with_backoff_then_timed_out(env):
    base = env.retry_base
    attempts = 3 if base <= 500 else 2
    d = env.new_device("retry")
    dev = env.device(d, 5)
    cid = send_ok(env, d, {"name": "deaf", "max_attempts": attempts})
    budget = base * (2 ** attempts - 1) / 1000 * 3 + 10
    doc = wait_state(env, cid, "timed_out", timeout=budget)
    time.sleep(max(1.0, base * 2 / 1000))
    reqs = dev.requests(cid=cid)
    eq([req.get("attempt") for _, req in reqs], list(range(1, attempts + 1)),
       "one request per attempt, numbered, and no more after max_attempts")
    eq(doc["attempts"], attempts, "attempts")
    eq(doc["transitions"][-1]["state"], "timed_out", "last transition")
    sent = [t for t in doc["transitions"] if t["state"] == "sent"]
    check(sent and sent[0].get("detail", {}).get("attempt") == 1, f"sent transitions: {sent}")
    # The backoff, by the server's own times (the device's arrival times are noisy on a busy
    # machine): base, 2 x base, ... after each send, the last wait included.
    took = parse_time(doc["transitions"][-1]["at"]) - parse_time(sent[0]["at"])
    want = base * (2 ** attempts - 1) / 1000
    check(took >= want - 0.005, f"from the first send to timed_out took {took:.3f} s; the "
                                f"backoffs add up to {want:.3f} s")
    mark = dev.mark()
    dev.ack(cid)
    eq(dev.wait_rejected(cid, mark).get("code"), 409, "an ack of a timed-out command is refused")
    eq(get_cmd(env, cid)["state"], "timed_out", "it stays timed out")


@test
def timed_out_after_delivery(env):
    d = env.new_device("tmo")
    dev = env.device(d, 4)
    mark = dev.mark()
    cid = send_ok(env, d, {"name": "hang", "timeout_ms": 1000})
    _, req = dev.wait_request(cid, mark)
    eq(req.get("timeout_ms"), 1000, "request timeout_ms")
    dev.ack(cid)
    eq(get_cmd(env, cid)["state"], "delivered", "delivered")
    doc = wait_state(env, cid, "timed_out", timeout=15)
    eq(states_of(doc)[-2:], ["delivered", "timed_out"], "timed out after delivery")
    dev.respond(cid, {"status": "succeeded"})
    eq(dev.wait_rejected(cid, mark).get("code"), 409, "a late response is refused")
    eq(get_cmd(env, cid)["state"], "timed_out", "it stays timed out")


@test
def expiry(env):
    d = env.new_device("exp")
    r = send(env, d, {"name": "soon", "expires_in_ms": 1000})
    cid = r.json["id"]
    left = parse_time(r.json["expires_at"]) - parse_time(r.json["created_at"])
    check(0.5 <= left <= 2, f"expires_at is 1 s after created_at ({left} s)")
    doc = wait_state(env, cid, "expired", timeout=15)
    eq(states_of(doc), ["queued", "expired"], "transitions")
    dev = env.device(d, 5)
    sentinel = send_ok(env, d, {"name": "sentinel"})
    dev.wait_request(sentinel)
    check(not dev.requests(cid=cid), "an expired command was sent")

    at = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + \
        datetime.timedelta(hours=1)
    r = send(env, d, {"name": "later", "expires_at": at.strftime("%Y-%m-%dT%H:%M:%SZ")})
    check(abs(parse_time(r.json["expires_at"]) - at.timestamp()) < 1,
          f"expires_at as given: {r.json['expires_at']} for {at}")


# -- cancel and refusals ----------------------------------------------------------------------

@test
def cancel(env):
    d = env.new_device("cancel")
    cid = send_ok(env, d, {"name": "never"})
    r = env.op.post(one(cid, tail="/cancel"))
    check(r.status in (200, 204), f"cancel: {r.status} {r.body[:200]!r}")
    doc = get_cmd(env, cid)
    eq(doc["state"], "cancelled", "cancelled")
    eq(states_of(doc), ["queued", "cancelled"], "transitions")
    expect_problem(env.op.post(one(cid, tail="/cancel")), 409, "cancel again")
    expect_problem(env.op.post(one(UNKNOWN_ID, tail="/cancel")), 404, "cancel an unknown id")
    expect_problem(env.viewer.post(one(cid, tail="/cancel")), 403, "a viewer cancels")

    dev = env.device(d, 5)
    sentinel = send_ok(env, d, {"name": "sentinel"})
    dev.wait_request(sentinel)
    check(not dev.requests(cid=cid), "a cancelled command was sent")
    dev.ack(sentinel)
    dev.respond(sentinel, {"status": "succeeded"})
    expect_problem(env.op.post(one(sentinel, tail="/cancel")), 409, "cancel a finished command")

    # Cancelled after it reached the device: the device's answers are refused (409).
    mark = dev.mark()
    c2 = send_ok(env, d, {"name": "late"})
    dev.wait_request(c2, mark)
    r = env.op.post(one(c2, tail="/cancel"))
    check(r.status in (200, 204), f"cancel a sent command: {r.status}")
    dev.respond(c2, {"status": "succeeded"})
    rej = dev.wait_rejected(c2, mark)
    eq(rej.get("code"), 409, "a response to a cancelled command")
    check(isinstance(rej.get("message"), str), f"rejected has a message: {rej}")
    m2 = dev.mark()
    dev.ack(c2)
    eq(dev.wait_rejected(c2, m2).get("code"), 409, "an ack of a cancelled command")
    eq(get_cmd(env, c2)["state"], "cancelled", "it stays cancelled")


@test
def device_answers_refused(env):
    d = env.new_device("rej")
    other = env.new_device("rej")
    dev = env.device(d, 5)
    odev = env.device(other, 4)
    mark = dev.mark()
    dev.respond(UNKNOWN_ID, {"status": "succeeded"})
    rej = dev.wait_rejected(UNKNOWN_ID, mark)
    eq(rej.get("code"), 404, "a response to an unknown id")
    m2 = dev.mark()
    dev.ack(UNKNOWN_ID)
    eq(dev.wait_rejected(UNKNOWN_ID, m2).get("code"), 404, "an ack of an unknown id")

    cid = send_ok(env, d, {"name": "mine"})
    dev.wait_request(cid, mark)
    omark = odev.mark()
    odev.respond(cid, {"status": "succeeded"})  # on its own topic, for d's command
    eq(odev.wait_rejected(cid, omark).get("code"), 404, "another device answers d's command")
    eq(get_cmd(env, cid)["state"], "sent", "another device's answer changed nothing")

    for raw in (b"not json", b"[1]", b'"succeeded"', b'{"result": 1}', b'{"status": "done"}',
                b'{"status": 1}'):
        m = dev.mark()
        dev.respond(cid, raw)
        eq(dev.wait_rejected(cid, m).get("code"), 400, f"response {raw!r}")
    check(get_cmd(env, cid)["state"] in ("sent", "delivered"),
          "malformed responses changed nothing")
    dev.respond(cid, {"status": "succeeded", "result": [1, 2]})
    eq(get_cmd(env, cid)["result"], [1, 2], "a good response after bad ones")


# -- idempotency ------------------------------------------------------------------------------

@test
def idempotency_keys(env):
    d = env.new_device("idem")
    d2 = env.new_device("idem")
    body = {"name": "reboot", "params": {"a": 1}, "idempotency_key": "k-1"}
    r1 = send(env, d, body)
    cid = r1.json["id"]
    eq(r1.json["idempotency_key"], "k-1", "the key is kept")
    check((r1.header("Idempotency-Replayed") or "").lower() != "true", "the first is no replay")
    r2 = env.op.post(cpath(d), body)
    check(r2.status in (200, 202), f"the same key again: {r2.status} {r2.body[:200]!r}")
    eq(r2.json["id"], cid, "the same key returns the first command")
    eq((r2.header("Idempotency-Replayed") or "").lower(), "true", "Idempotency-Replayed")
    send(env, d, dict(body, params={"a": 2}), status=409, what="the same key, other params")
    send(env, d, dict(body, name="halt"), status=409, what="the same key, another name")

    r3 = send(env, d, {"name": "x"}, headers={"Idempotency-Key": "k-2"})
    eq(r3.json["idempotency_key"], "k-2", "the header's key")
    r4 = env.op.post(cpath(d), {"name": "x"}, headers={"Idempotency-Key": "k-2"})
    check(r4.status in (200, 202), f"the header key again: {r4.status}")
    eq(r4.json["id"], r3.json["id"], "the header key returns the first command")
    eq((r4.header("Idempotency-Replayed") or "").lower(), "true", "Idempotency-Replayed")

    other = send(env, d2, body).json["id"]
    check(other != cid, "the same key for another device makes another command")
    items = expect(env.op.get("/api/v1/tenants/acme/commands", query={"device": d}), 200,
                   "list").json["items"]
    eq(sorted(i["id"] for i in items), sorted([cid, r3.json["id"]]), "no second command was made")


# -- reconnects and restarts ------------------------------------------------------------------

@test
def reconnect_mid_command_redelivers(env):
    d = env.new_device("recon")
    dev = env.device(d, 5)
    cid = send_ok(env, d, {"name": "m", "max_attempts": 5})
    _, req = dev.wait_request(cid)
    eq(req["attempt"], 1, "first attempt")
    seen = [r["attempt"] for _, r in dev.requests(cid=cid)]
    dev.drop()                                              # no ack, no DISCONNECT
    dev = env.device(d, 4)
    _, req = dev.wait_request(cid, pred=lambda j: j.get("attempt", 0) > max(seen))
    dev.ack(cid)
    dev.respond(cid, {"status": "succeeded"})
    seen += [r["attempt"] for _, r in dev.requests(cid=cid)]  # after the ack: no more come
    doc = get_cmd(env, cid)
    eq(doc["state"], "succeeded", "answered after the reconnect")
    eq(seen, sorted(set(seen)), f"every delivery a new attempt: {seen}")
    eq(doc["attempts"], len(seen), f"attempts counts every delivery ({seen})")


@test
def reconnect_after_a_retry_came_due_while_away(env):
    # The device drops the request and stays away past the resend time: when it comes back
    # it gets the command again (the resend that came due while it was away is not lost).
    d = env.new_device("recon")
    dev = env.device(d, 5)
    cid = send_ok(env, d, {"name": "m", "max_attempts": 5})
    dev.wait_request(cid)
    dev.drop()
    time.sleep(env.retry_base * 2.5 / 1000)
    dev = env.device(d, 5)
    _, req = dev.wait_request(cid, pred=lambda j: j.get("attempt", 0) >= 2,
                              timeout=env.retry_base * 4 / 1000 + 10)
    dev.ack(cid)
    doc = get_cmd(env, cid)
    eq(doc["state"], "delivered", "acknowledged after the reconnect")


@test
def reconnects_never_exceed_max_attempts(env):
    d = env.new_device("recon")
    max_attempts = 2
    dev = env.device(d, 5)
    cid = send_ok(env, d, {"name": "m", "max_attempts": max_attempts})
    seen = []
    connections = 0
    while len(seen) < max_attempts:
        connections += 1
        check(connections <= max_attempts, f"only {seen} deliveries in {connections - 1} "
                                           f"connections")
        if connections > 1:
            dev = env.device(d, 5)
        _, req = dev.wait_request(cid, pred=lambda j: j.get("attempt", 0) > max(seen, default=0))
        seen += [r["attempt"] for _, r in dev.requests(cid=cid)]
        dev.drop()
    check(connections > 1, "the reconnect redelivered nothing (every attempt came on the first "
                           "connection)")
    dev = env.device(d, 5)
    doc = wait_state(env, cid, "timed_out", timeout=env.retry_base * 8 / 1000 + 15)
    time.sleep(0.5)
    seen += [r["attempt"] for _, r in dev.requests(cid=cid)]
    eq(seen, list(range(1, max_attempts + 1)), "deliveries across all connections")
    eq(doc["attempts"], max_attempts, "attempts")


@test
def commands_survive_kill9(env):
    off = env.new_device("dur")
    c_off = send_ok(env, off, {"name": "queued-before-kill"})
    on = env.new_device("dur")
    dev = env.device(on, 5)
    c_sent = send_ok(env, on, {"name": "sent-before-kill", "max_attempts": 6})
    dev.wait_request(c_sent)
    wait_state(env, c_sent, "sent", timeout=10)  # recorded: the kill comes after
    exp = env.new_device("dur")
    c_exp = send_ok(env, exp, {"name": "expires", "expires_in_ms": 3000})
    env.d.kill9_restart()
    env.cleanup()

    eq(get_cmd(env, c_off)["state"], "queued", "queued after kill -9")
    doc = get_cmd(env, c_sent)
    eq(doc["state"], "sent", "sent after kill -9")
    check(get_cmd(env, c_exp)["state"] in ("queued", "expired"), "the expiring one")

    dev = env.device(off, 4)
    dev.wait_request(c_off)
    dev.ack(c_off)
    dev.respond(c_off, {"status": "succeeded"})
    eq(get_cmd(env, c_off)["state"], "succeeded", "the queued command after the restart")

    dev = env.device(on, 5)
    dev.wait_request(c_sent, pred=lambda j: j.get("attempt", 0) >= 2)
    dev.ack(c_sent)
    last = max(r["attempt"] for _, r in dev.requests(cid=c_sent))
    eq(get_cmd(env, c_sent)["state"], "delivered", "the sent command, acknowledged after restart")
    dev.respond(c_sent, {"status": "succeeded"})
    doc = get_cmd(env, c_sent)
    eq(doc["state"], "succeeded", "finished")
    eq(doc["attempts"], last, "attempts counted across the restart")

    doc = wait_state(env, c_exp, "expired", timeout=20)
    eq(states_of(doc), ["queued", "expired"], "the expiry timer went on after the restart")


# -- groups -----------------------------------------------------------------------------------

@test
def group_fan_out(env):
    g = env.fresh("floor")
    expect(env.admin.post("/api/v1/tenants/acme/groups", {"id": g, "name": g, "kind": "static"}),
           201, "group")
    devs = [env.new_device("member", groups=[g]) for _ in range(3)]
    outsider = env.new_device("outsider")
    for i, d in enumerate(devs):
        dev = env.device(d, 5 if i != 1 else 4)
        if i < 2:
            env.responder(dev, result={"ok": i})
        else:
            env.responder(dev, status="failed", error="nope")
    r = env.op.post(f"/api/v1/tenants/acme/groups/{g}/commands",
                    {"name": "update", "params": {"v": 2}, "max_attempts": 3})
    expect(r, 202, "group command")
    b = r.json
    bid = b.get("id", "")
    check(bid.startswith("cb_"), f"batch id: {b}")
    eq((b.get("group"), b.get("name"), b.get("params"), b.get("total")), (g, "update", {"v": 2}, 3),
       "the batch")
    deadline = time.monotonic() + 20
    while True:
        bb = expect(env.viewer.get(f"/api/v1/tenants/acme/command-batches/{bid}"), 200,
                    "batch").json
        if bb.get("pending") == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    eq((bb.get("total"), bb.get("pending")), (3, 0), f"batch progress: {bb}")
    counts = bb.get("counts", {})
    eq(sorted(counts), sorted(["queued", "sent", "delivered"] + list(TERMINAL)),
       "every state counted")
    eq((counts["succeeded"], counts["failed"], sum(counts.values())), (2, 1, 3), f"counts: {bb}")
    items = expect(env.viewer.get("/api/v1/tenants/acme/commands", query={"batch": bid}), 200,
                   "batch commands").json["items"]
    eq(sorted(i["device"] for i in items), sorted(devs), "one command per member")
    check(all(i["batch"] == bid and i["name"] == "update" for i in items), f"items: {items}")
    items = expect(env.viewer.get("/api/v1/tenants/acme/commands", query={"device": outsider}),
                   200, "outsider").json["items"]
    eq(items, [], "no command for a device outside the group")

    # With an idempotency key, sending the batch again makes no second command for any device.
    body = {"name": "update", "params": {"v": 3}, "idempotency_key": "fan-1"}
    expect(env.op.post(f"/api/v1/tenants/acme/groups/{g}/commands", body), 202, "keyed batch")
    r = env.op.post(f"/api/v1/tenants/acme/groups/{g}/commands", body)
    check(r.status in (200, 202), f"the keyed batch again: {r.status} {r.body[:200]!r}")
    for d in devs:
        items = expect(env.viewer.get("/api/v1/tenants/acme/commands", query={"device": d}),
                       200, "list").json["items"]
        eq(len(items), 2, f"{d}: one command per batch, the keyed one once")
    expect_problem(env.op.post("/api/v1/tenants/acme/groups/no-such-group/commands",
                               {"name": "x"}), 404, "a missing group")
    expect_problem(env.op.post(f"/api/v1/tenants/acme/groups/{g}/commands", {}), 400,
                   "a group command without a name")


# -- live stream ------------------------------------------------------------------------------

@test
def live_stream_events(env):
    from test_shadow import stream_events
    from test_stream import WsClient
    d = env.new_device("live")
    ws = WsClient(env.d.http_port, env.viewer_token)
    try:
        a = ws.request({"op": "subscribe", "id": "cm", "types": ["command.*"], "devices": [d]})
        eq(a.get("type"), "ack", f"subscribe to command.*: {a}")
        dev = env.device(d, 5)
        env.responder(dev, result={"x": 1})
        seen = []
        cid = send_ok(env, d, {"name": "blink"})
        ev = stream_events(ws, lambda m: m.get("type") == "command.succeeded", seen=seen)
        mine = [m for m in seen if m.get("detail", {}).get("id") == cid]
        eq(distinct(m["type"] for m in mine),
           ["command.queued", "command.sent", "command.delivered", "command.succeeded"],
           "one event per transition, in order")
        for m in mine:
            eq((m.get("sub"), m.get("tenant"), m.get("device")), ("cm", "acme", d), "event fields")
            check_ms(m.get("ts"), "event ts")
            det = m["detail"]
            eq((det.get("name"), det.get("state"), det.get("batch")),
               ("blink", m["type"][len("command."):], None), "event detail")
            check(isinstance(det.get("attempts"), int), f"detail.attempts: {det}")
        eq(ev["detail"].get("result"), {"x": 1}, "the result in command.succeeded")

        env.cleanup()
        c2 = send_ok(env, d, {"name": "never"})
        expect(env.op.post(one(c2, tail="/cancel")), (200, 204), "cancel")
        stream_events(ws, lambda m: m.get("type") == "command.cancelled"
                      and m.get("detail", {}).get("id") == c2, seen=seen)
        mine = [m["type"] for m in seen if m.get("detail", {}).get("id") == c2]
        eq(mine, ["command.queued", "command.cancelled"], "queued, then cancelled")
    finally:
        ws.close()


# -- isolation, validation, lists -------------------------------------------------------------

@test
def tenant_isolation(env):
    d = env.new_device("iso")
    env.provision(d, "globex")
    cid = send_ok(env, d, {"name": "acme-only", "params": {"secret": "acme"}})
    g = env.globex
    expect_problem(g.get(one(cid)), 404, "globex reads acme's command")
    expect_problem(g.get(one(cid, tenant="globex")), 404, "acme's command under globex")
    expect_problem(g.post(one(cid, tail="/cancel")), 404, "globex cancels acme's command")
    expect_problem(g.post(one(cid, tenant="globex", tail="/cancel")), 404,
                   "globex cancels acme's command under its own tenant")
    expect_problem(g.post(cpath(d), {"name": "x"}), 404, "globex sends to acme's device")
    expect_problem(g.get("/api/v1/tenants/acme/commands"), 404, "globex lists acme's commands")
    r = g.get("/api/v1/tenants/globex/commands")
    expect(r, 200, "globex's own list")
    check(cid not in r.body.decode(errors="replace"), "acme's command in globex's list")
    eq(get_cmd(env, cid)["state"], "queued", "acme's command untouched")

    # globex's device with the same id hears nothing of acme's command.
    gdev = env.device(d, 5, tenant="globex")
    adev = env.device(d, 5)
    adev.wait_request(cid)
    r = g.post(cpath(d, "globex"), {"name": "globex-own"})
    expect(r, 202, "globex sends to its own d")
    gdev.wait_request(r.json["id"])
    check(not gdev.requests(cid=cid), "acme's command reached globex's device")
    check(not adev.requests(cid=r.json["id"]), "globex's command reached acme's device")
    expect_problem(env.viewer.post(cpath(d), {"name": "x"}), 403, "a viewer sends a command")


@test
def validation(env):
    d = env.new_device("val")
    bad = [
        ({}, "no name"),
        ({"name": ""}, "empty name"),
        ({"name": "a b"}, "a space in the name"),
        ({"name": "a/b"}, "a slash in the name"),
        ({"name": "n" * 129}, "a 129-character name"),
        ({"name": 5}, "a name that is a number"),
        ({"name": "x", "params": {"blob": "x" * 17000}}, "params over 16 KiB"),
        ({"name": "x", "timeout_ms": 0}, "timeout_ms 0"),
        ({"name": "x", "timeout_ms": 3600001}, "timeout_ms over an hour"),
        ({"name": "x", "timeout_ms": "5"}, "timeout_ms a string"),
        ({"name": "x", "max_attempts": 0}, "max_attempts 0"),
        ({"name": "x", "max_attempts": 21}, "max_attempts 21"),
        ({"name": "x", "wait_ms": -1}, "wait_ms -1"),
        ({"name": "x", "wait_ms": 60001}, "wait_ms over 60 s"),
        ({"name": "x", "expires_in_ms": 30 * 86400000 + 1}, "expires_in_ms over 30 days"),
        ({"name": "x", "expires_at": "tomorrow"}, "expires_at not RFC 3339"),
        ({"name": "x", "idempotency_key": ""}, "empty idempotency_key"),
        ({"name": "x", "idempotency_key": "k" * 129}, "a 129-character idempotency_key"),
    ]
    for body, what in bad:
        send(env, d, body, status=400, what=what)
    expect_problem(env.op.request("POST", cpath(d), raw=b'{"name": ', ctype="application/json"),
                   400, "a body that is not JSON")
    items = expect(env.op.get("/api/v1/tenants/acme/commands", query={"device": d}), 200,
                   "list").json["items"]
    eq(items, [], "refused sends made no command")

    good = [
        {"name": ("Az09_-.:" * 16)[:128]},
        {"name": "x", "timeout_ms": 1, "max_attempts": 1},
        {"name": "x", "timeout_ms": 3600000, "max_attempts": 20},
        {"name": "x", "params": {"blob": "x" * 16000}},
        {"name": "x", "params": [1, "two", None]},
        {"name": "x", "expires_in_ms": 30 * 86400000},
        {"name": "x", "idempotency_key": "k" * 128},
    ]
    for body in good:
        r = send(env, d, body, what=f"valid {json.dumps(body)[:60]}")
        if "params" in body:
            eq(r.json["params"], body["params"], "params as sent")
    eq(send(env, d, {"name": "x"}).json["params"], {}, "params default to {}")
    send(env, "no-such-device", {"name": "x"}, status=404, what="no such device")
    # Decommissioning cancels what waited for the device (it could never be delivered).
    dec = env.new_device("val")
    waiting = [send_ok(env, dec, {"name": f"w{i}"}) for i in range(3)]
    expect(env.admin.post(f"/api/v1/tenants/acme/devices/{dec}/decommission"), 200, "decommission")
    for cid in waiting:
        eq(get_cmd(env, cid)["state"], "cancelled", "a waiting command after decommissioning")
    ev = expect(env.admin.get(f"/api/v1/tenants/acme/devices/{dec}/events"), 200,
                "events").json["items"]
    dev_ev = [e for e in ev if e["kind"] == "decommissioned"]
    eq(dev_ev[0]["detail"].get("commands_cancelled"), 3, "the event counts them")
    send(env, dec, {"name": "x"}, status=409, what="a decommissioned device")

    expect_problem(env.op.get(one(UNKNOWN_ID)), 404, "GET an unknown command")
    expect_problem(env.op.get("/api/v1/tenants/acme/command-batches/cb_nope"), 404,
                   "GET an unknown batch")
    expect_problem(env.op.get("/api/v1/tenants/acme/commands", query={"state": "bogus"}), 400,
                   "list with an unknown state")


@test
def max_pending_per_device(env):
    d = env.new_device("pend")
    cids = [send_ok(env, d, {"name": "p", "params": {"i": i}}) for i in range(MAX_PENDING)]
    send(env, d, {"name": "p"}, status=409, what=f"command {MAX_PENDING + 1} of an offline device")
    expect(env.op.post(one(cids[0], tail="/cancel")), (200, 204), "cancel one")
    send_ok(env, d, {"name": "p"})
    other = env.new_device("pend")
    send_ok(env, other, {"name": "p"})  # the limit is per device


@test
def lists_and_pages(env):
    d = env.new_device("list")
    cids = [send_ok(env, d, {"name": "l", "params": {"i": i}}) for i in range(4)]
    expect(env.op.post(one(cids[1], tail="/cancel")), (200, 204), "cancel one")
    seen, cursor, pages = [], None, 0
    while True:
        q = {"device": d, "limit": 1}
        if cursor:
            q["cursor"] = cursor
        page = expect(env.viewer.get("/api/v1/tenants/acme/commands", query=q), 200, "page").json
        check(len(page["items"]) <= 1, "limit=1")
        seen += [i["id"] for i in page["items"]]
        cursor = page.get("next_cursor")
        pages += 1
        check(pages <= 6, "too many pages")
        if not cursor:
            break
    eq(seen, list(reversed(cids)), "newest first, in pages of one")
    items = expect(env.viewer.get("/api/v1/tenants/acme/commands",
                                  query={"device": d, "state": "cancelled"}), 200,
                   "by state").json["items"]
    eq([i["id"] for i in items], [cids[1]], "state filter")
    items = expect(env.viewer.get("/api/v1/tenants/acme/commands",
                                  query={"device": d, "state": "queued"}), 200,
                   "by state").json["items"]
    eq([i["id"] for i in items], [cids[3], cids[2], cids[0]], "queued, newest first")


if __name__ == "__main__":
    suite.main(setup, "commands (docs/commands.md)")
