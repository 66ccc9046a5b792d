#!/usr/bin/python3
"""Device shadows (issue 7, docs/shadow.md), black box: real paho-mqtt devices (MQTT 5.0 and
3.1.1) with their own secrets on the shadow topics, the REST API as the application, the live
stream for shadow.* events, and kill -9 for durability.

What is checked:
- the device's get/update/delete topics and their accepted/rejected/delta answers (document
  shapes, versions, client_token echo, metadata timestamps of leaves);
- the merge rules: null removes, objects merge, arrays replace, "desired": null clears, a no-op
  update keeps the version; the delta (member by member for objects, whole for arrays);
- conditional updates: "version" in the body (409), If-Match (412), racing PATCHes;
- the delta when a device connects or subscribes (clean and persistent sessions);
- named shadows, their names, the list, the 32-shadow limit;
- the limits: shadow.max_bytes (413), nesting depth (400), bad requests (400);
- delete (the version goes on), history (actors, sources, from/to, pages), the live stream;
- tenant isolation, roles and scopes, decommissioned devices, and kill -9.

The server runs with shadow.max_bytes=8192, so the size limit is cheap to reach.

Usage: test_shadow.py --drover BINARY [-k NAME]
Ends with "N passed, N failed".
"""
import contextlib
import datetime
import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
from apilib import (Api, Suite, TestFailure, check, eq, expect, expect_problem,  # noqa: E402
                    start_server)

sys.path.insert(0, os.path.join(HERE, "..", "broker"))
from mqtt_testlib import PahoClient  # noqa: E402

suite = Suite("test_shadow")
SECRET = "shadow-test-secret-0001"
MAX_BYTES = 8192              # shadow.max_bytes for this server
MAX_NAMED = 32


# -- devices ----------------------------------------------------------------------------------

class Dev:
    """A paho device connected as <tenant>/<device> (tests/broker/mqtt_testlib.py PahoClient),
    with helpers for the shadow topics.  Messages are kept in order; mark() is a position in
    them, so a test waits only for what arrived after its request."""

    def __init__(self, env, device, version=5, tenant="acme", client_id=None, clean=True,
                 session_expiry=None):
        self.env = env
        self.device = device
        self.tenant = tenant
        self.version = version
        self.pc = PahoClient(env.d.port, client_id or device, version=version, clean=clean)
        self.connack = self.pc.connect(clean_start=clean, session_expiry=session_expiry,
                                       username=f"{tenant}/{device}", password=SECRET, timeout=10)
        self.seq = 0
        env.devs.append(self)

    def prefix(self, name=None):
        if name is None:
            return f"devices/{self.device}/shadow/"
        return f"devices/{self.device}/shadow/name/{name}/"

    def sub(self, topic, qos=1):
        codes = self.pc.subscribe(topic, qos=qos, timeout=10)
        return codes

    def sub_ok(self, topic, qos=1):
        codes = self.sub(topic, qos)
        eq(codes, [qos], f"{self.tenant}/{self.device}: SUBACK for {topic}")

    def mark(self):
        with self.pc.cond:
            return len(self.pc.msgs)

    def msgs(self, since=0, topic=None):
        with self.pc.cond:
            return [m for m in self.pc.msgs[since:] if topic is None or m.topic == topic]

    def wait_msg(self, pred, since=0, timeout=10.0, what="a message"):
        def find():
            for m in self.pc.msgs[since:]:
                if pred(m):
                    return m
            return None
        with self.pc.cond:
            m = self.pc.cond.wait_for(find, timeout)
        if not m:
            got = [(x.topic, x.payload[:120]) for x in self.msgs(since)][-10:]
            raise TestFailure(f"{self.tenant}/{self.device}: no {what} within {timeout:.0f} s; "
                              f"received since: {got}")
        return m

    def wait_json(self, topic, since=0, pred=None, timeout=10.0, what=None):
        def ok(m):
            if m.topic != topic:
                return False
            try:
                j = json.loads(m.payload)
            except ValueError:
                return False
            return pred is None or pred(j)
        m = self.wait_msg(ok, since, timeout, what or f"message on {topic}")
        return json.loads(m.payload)

    def publish(self, topic, payload, qos=1):
        if not isinstance(payload, (bytes, str)):
            payload = json.dumps(payload)
        self.pc.publish(topic, payload, qos=qos, timeout=10)

    def shadow(self, op, body=None, name=None, raw=None, token=True, timeout=10.0):
        """Publish a shadow request (op: get, update, delete) and wait for its answer on
        <prefix><op>/accepted or /rejected.  body: a dict (a client_token is added unless it
        has one or token=False, so the answer can be told from others), or None for an empty
        payload; raw: bytes sent as they are.  Returns ("accepted"|"rejected", answer)."""
        pfx = self.prefix(name)
        want = None
        if raw is not None:
            payload = raw
        elif body is None:
            payload = b""
        else:
            body = dict(body)
            if token and "client_token" not in body:
                self.seq += 1
                body["client_token"] = f"{op}-{self.seq}"
            want = body.get("client_token")
            payload = json.dumps(body)
        mark = self.mark()
        self.publish(pfx + op, payload)
        topics = (pfx + op + "/accepted", pfx + op + "/rejected")

        def answer(m):
            if m.topic not in topics:
                return False
            if want is None:
                return True
            try:
                return json.loads(m.payload).get("client_token") == want
            except (ValueError, AttributeError):
                return False
        m = self.wait_msg(answer, mark, timeout, f"answer to {op} on {pfx}{op}")
        try:
            doc = json.loads(m.payload)
        except ValueError:
            raise TestFailure(f"{m.topic}: payload is not JSON: {m.payload[:200]!r}")
        return ("accepted" if m.topic.endswith("/accepted") else "rejected"), doc

    def accepted(self, op, body=None, name=None, what=None):
        kind, doc = self.shadow(op, body, name)
        eq(kind, "accepted", f"{what or op}: answer ({doc})")
        return doc

    def rejected(self, op, body=None, name=None, code=None, raw=None, what=None):
        kind, doc = self.shadow(op, body, name, raw=raw)
        eq(kind, "rejected", f"{what or op}: answer ({doc})")
        check(isinstance(doc.get("message"), str) and doc["message"],
              f"{what or op}: rejected without a message: {doc}")
        if code is not None:
            eq(doc.get("code"), code, f"{what or op}: rejected code ({doc})")
        return doc

    def close(self):
        try:
            self.pc.disconnect()
        except Exception:  # noqa: BLE001 - the server may be gone (kill -9)
            self.pc.stop()

    def drop(self):
        self.pc.drop()


# -- environment ------------------------------------------------------------------------------

class Env:
    def __init__(self, d, admin):
        self.d = d
        self.admin = admin
        self.max_bytes = MAX_BYTES
        self.devs = []
        self.n = 0
        self.op = self.viewer = self.globex = None
        self.op_id = None

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

    def new_device(self, prefix, tenant="acme"):
        return self.provision(self.fresh(prefix), tenant)

    def device(self, device, version=5, tenant="acme", sub=True, **kw):
        """A connected device, subscribed to its whole shadow subtree unless sub=False."""
        dv = Dev(self, device, version, tenant, **kw)
        if sub:
            dv.sub_ok(f"devices/{device}/shadow/#")
        return dv

    def close_devices(self):
        while self.devs:
            self.devs.pop().close()


def token_of(admin, tenant, role, scopes=None):
    body = {"name": f"{role}-{time.monotonic_ns()}", "role": role}
    if scopes is not None:
        body["scopes"] = scopes
    r = expect(admin.post(f"/api/v1/tenants/{tenant}/tokens", body), 201, f"{role} token")
    return r.json["id"], r.json["token"]


@contextlib.contextmanager
def setup(binary):
    with start_server(binary, **{"shadow.max_bytes": str(MAX_BYTES)}) as (d, admin):
        env = Env(d, admin)
        for t in ("acme", "globex"):
            expect(admin.post("/api/v1/tenants", {"id": t, "name": t}), 201, f"tenant {t}")
        env.op_id, tok = token_of(admin, "acme", "operator")
        env.op = Api(d.http_port, tok)
        env.viewer_token = token_of(admin, "acme", "viewer")[1]
        env.viewer = Api(d.http_port, env.viewer_token)
        env.globex = Api(d.http_port, token_of(admin, "globex", "operator")[1])
        try:
            yield env
        finally:
            env.close_devices()


def test(fn):
    """A suite test whose devices are disconnected when it ends, whatever happened."""
    def run(env):
        try:
            fn(env)
        finally:
            env.close_devices()
    run.__name__ = fn.__name__
    return suite.test()(run)


# -- helpers ----------------------------------------------------------------------------------

def spath(device, name="classic", tenant="acme", tail=""):
    return f"/api/v1/tenants/{tenant}/devices/{device}/shadows/{name}{tail}"


def now_ms():
    return int(time.time() * 1000)


def check_ms(v, what):
    """A plausible time in ms since the epoch (within a day of now)."""
    check(isinstance(v, int) and not isinstance(v, bool), f"{what}: {v!r} is not an integer")
    check(abs(v - now_ms()) < 86_400_000, f"{what}: {v} is not a time near now ({now_ms()})")


def rfc3339(ms):
    """ms since the epoch as an RFC 3339 UTC time with milliseconds."""
    t = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def leaf_ts(meta, *path):
    """metadata[path...]["timestamp"], checked to be a time."""
    node = meta
    for p in path:
        check(isinstance(node, dict) and p in node, f"metadata has no {'.'.join(path)}: {meta}")
        node = node[p]
    check(isinstance(node, dict) and set(node) == {"timestamp"},
          f"metadata of leaf {'.'.join(path)} is not {{\"timestamp\": ms}}: {node}")
    check_ms(node["timestamp"], f"metadata timestamp of {'.'.join(path)}")
    return node["timestamp"]


def section(doc, name):
    """state[name] of a document; an empty section may be {} or left out (docs/shadow.md
    does not say which)."""
    v = doc["state"].get(name, {})
    check(isinstance(v, dict), f"state.{name} is not an object: {doc['state']}")
    return v


def check_document(doc, version, what):
    """The document shape of docs/shadow.md."""
    check(isinstance(doc, dict), f"{what}: not an object: {doc!r}")
    for k in ("state", "metadata", "version", "timestamp"):
        check(k in doc, f"{what}: no {k!r} in {doc}")
    eq(doc["version"], version, f"{what}: version")
    check_ms(doc["timestamp"], f"{what}: timestamp")
    check(isinstance(doc["state"], dict), f"{what}: state is not an object")
    check(isinstance(doc["metadata"], dict), f"{what}: metadata is not an object")
    if "delta" in doc["state"]:
        check(doc["state"]["delta"], f"{what}: an empty delta must be left out: {doc['state']}")


def rest_doc(env, device, name="classic", api=None, status=200):
    r = (api or env.op).get(spath(device, name))
    if status != 200:
        expect_problem(r, status, f"GET shadow {device}/{name}")
        return r
    expect(r, 200, f"GET shadow {device}/{name}")
    return r


def patch(env, device, body, name="classic", status=200, api=None, headers=None, what=None):
    r = (api or env.op).patch(spath(device, name), body, headers=headers)
    what = what or f"PATCH {device}/{name} {json.dumps(body)[:80]}"
    if status == 200:
        expect(r, 200, what)
        return r.json
    expect_problem(r, status, what)
    return r


def nest(depth, leaf=1, arrays=False):
    """A value `depth` levels of objects (or arrays) deep around leaf."""
    v = leaf
    for _ in range(depth):
        v = [v] if arrays else {"k": v}
    return v


def delta_topic(device, name=None):
    if name is None:
        return f"devices/{device}/shadow/update/delta"
    return f"devices/{device}/shadow/name/{name}/update/delta"


# -- the round trip ---------------------------------------------------------------------------

def round_trip(env, version):
    d = env.new_device(f"rt{version}")
    dev = env.device(d, version)

    # A shadow never written: get/rejected 404 (with the client_token), REST 404.
    ans = dev.rejected("get", {"client_token": "get-1"}, code=404, what="get of a new shadow")
    eq(ans.get("client_token"), "get-1", "client_token echoed in get/rejected")
    rest_doc(env, d, status=404)

    # The device reports: update/accepted carries the patch, version 1, the token.
    t_before = now_ms()
    acc = dev.accepted("update", {"state": {"reported": {"led": "off", "fw": "1.0"}},
                                  "client_token": "up-1"})
    eq(acc.get("state"), {"reported": {"led": "off", "fw": "1.0"}}, "update/accepted state")
    eq(acc.get("version"), 1, "update/accepted version")
    eq(acc.get("client_token"), "up-1", "update/accepted client_token")
    check_ms(acc.get("timestamp"), "update/accepted timestamp")
    check(acc["timestamp"] >= t_before - 1000, "update/accepted timestamp is not older than "
                                               "the request")
    for leaf in ("led", "fw"):
        eq(leaf_ts(acc.get("metadata", {}), "reported", leaf), acc["timestamp"],
           f"update/accepted metadata.reported.{leaf}: the time of this change")

    # get/accepted: the whole document, no delta, the token.
    doc = dev.accepted("get", {"client_token": "get-2"})
    check_document(doc, 1, "get/accepted")
    eq(doc.get("client_token"), "get-2", "get/accepted client_token")
    eq(section(doc, "reported"), {"led": "off", "fw": "1.0"}, "get/accepted reported")
    eq(section(doc, "desired"), {}, "get/accepted desired")
    check("delta" not in doc["state"], f"no delta without desired: {doc['state']}")
    leaf_ts(doc["metadata"], "reported", "fw")

    # REST GET: the same document with device and name, ETag "1".
    r = rest_doc(env, d)
    rd = r.json
    check_document(rd, 1, "REST GET")
    eq((rd.get("device"), rd.get("name")), (d, "classic"), "REST document device and name")
    eq(rd["state"], doc["state"], "REST and MQTT show the same state")
    eq(rd["metadata"], doc["metadata"], "REST and MQTT show the same metadata")
    eq(r.header("ETag"), '"1"', "ETag")

    # The application wants the LED on: the device hears the delta.
    mark = dev.mark()
    rd = patch(env, d, {"state": {"desired": {"led": "on"}}})
    check_document(rd, 2, "PATCH answer")
    eq(rd["state"].get("delta"), {"led": "on"}, "PATCH answer delta")
    eq(section(rd, "desired"), {"led": "on"}, "PATCH answer desired")
    delta = dev.wait_json(delta_topic(d), mark, lambda j: j.get("version") == 2,
                          what="update/delta of version 2")
    eq(delta.get("state"), {"led": "on"}, "update/delta state")
    leaf_ts(delta.get("metadata", {}), "led")
    check_ms(delta.get("timestamp"), "update/delta timestamp")

    # It does, and says so: the delta is empty, REST shows none, no update/delta is sent.
    mark = dev.mark()
    acc = dev.accepted("update", {"state": {"reported": {"led": "on"}}})
    eq(acc.get("version"), 3, "version after the device's report")
    eq(acc.get("state"), {"reported": {"led": "on"}}, "update/accepted state")
    doc = dev.accepted("get", None, what="get with an empty payload")
    check("delta" not in doc["state"], f"no delta once reported agrees: {doc['state']}")
    check(not dev.msgs(mark, delta_topic(d)), "an update/delta was sent for an empty delta: "
                                              f"{dev.msgs(mark, delta_topic(d))}")
    rd = rest_doc(env, d).json
    check_document(rd, 3, "REST GET after the report")
    check("delta" not in rd["state"], f"REST GET has no delta: {rd['state']}")
    eq(section(rd, "reported"), {"led": "on", "fw": "1.0"}, "reported merged")

    # A report that changes nothing: accepted, the version stays.
    acc = dev.accepted("update", {"state": {"reported": {"led": "on"}}}, what="no-op update")
    eq(acc.get("version"), 3, "a no-op update keeps the version")
    eq(rest_doc(env, d).json["version"], 3, "REST version after a no-op update")


@test
def round_trip_mqtt5(env):
    round_trip(env, 5)


@test
def round_trip_mqtt311(env):
    round_trip(env, 4)


@test
def merge_rules_and_metadata(env):
    d = env.new_device("merge")
    dev = env.device(d, 5)
    path = spath(d)
    r = env.op.request("PATCH", path, raw=json.dumps(
        {"state": {"desired": {"cfg": {"rate": 10, "mode": "a"}, "arr": [1, 2], "led": "on"}}}),
        ctype="application/merge-patch+json")
    expect(r, 200, "PATCH as application/merge-patch+json")
    doc = r.json
    check_document(doc, 1, "first PATCH")
    eq(doc["state"].get("delta"), {"cfg": {"rate": 10, "mode": "a"}, "arr": [1, 2], "led": "on"},
       "the delta is all of desired while nothing is reported")
    t1 = leaf_ts(doc["metadata"], "desired", "cfg", "mode")
    eq(leaf_ts(doc["metadata"], "desired", "arr"), t1, "an array is a leaf")
    check(isinstance(doc["metadata"]["desired"]["cfg"], dict)
          and "timestamp" not in doc["metadata"]["desired"]["cfg"],
          f"an object is not a leaf: {doc['metadata']['desired']['cfg']}")

    time.sleep(0.02)
    doc = patch(env, d, {"state": {"desired": {"cfg": {"rate": 20}}}})
    eq(doc["version"], 2, "version after a nested patch")
    eq(section(doc, "desired")["cfg"], {"rate": 20, "mode": "a"}, "objects merge member by member")
    eq(leaf_ts(doc["metadata"], "desired", "cfg", "mode"), t1, "an untouched leaf keeps its time")
    t2 = leaf_ts(doc["metadata"], "desired", "cfg", "rate")
    check(t2 > t1, f"a changed leaf gets the new time ({t2} after {t1})")
    eq(t2, doc["timestamp"], "the document's timestamp is its last change")

    doc = patch(env, d, {"state": {"desired": {"arr": [3]}}})
    eq(section(doc, "desired")["arr"], [3], "an array replaces the whole array")

    # The device reports: the delta is member by member for objects, whole for arrays.
    acc = dev.accepted("update", {"state": {"reported": {"cfg": {"rate": 20, "mode": "b"},
                                                         "arr": [3], "led": "on"}}})
    eq(acc["version"], 4, "version after the report")
    doc = rest_doc(env, d).json
    eq(doc["state"].get("delta"), {"cfg": {"mode": "a"}}, "nested delta")
    acc = dev.accepted("update", {"state": {"reported": {"arr": [3, 4], "cfg": {"mode": "a"}}}})
    doc = rest_doc(env, d).json
    eq(doc["state"].get("delta"), {"arr": [3]}, "arrays compare whole")
    eq(section(doc, "reported")["arr"], [3, 4], "the reported array replaced")

    # null removes a member (and its metadata); removing what is not there changes nothing.
    v = doc["version"]
    doc = patch(env, d, {"state": {"desired": {"led": None}}})
    eq(doc["version"], v + 1, "removing a member is a change")
    check("led" not in section(doc, "desired"), f"null removes: {section(doc, 'desired')}")
    check("led" not in doc["metadata"].get("desired", {}), "a removed member has no metadata")
    doc = patch(env, d, {"state": {"desired": {"led": None}}}, what="remove a missing member")
    eq(doc["version"], v + 1, "removing a missing member changes nothing")
    doc = patch(env, d, {"state": {"desired": {"cfg": {"rate": 20}}}}, what="no-op PATCH")
    eq(doc["version"], v + 1, "a PATCH that changes nothing keeps the version")

    # "desired": null clears the section; reported stays.
    doc = patch(env, d, {"state": {"desired": None}})
    eq(doc["version"], v + 2, "clearing desired is a change")
    eq(section(doc, "desired"), {}, '"desired": null clears desired')
    check("delta" not in doc["state"], "no delta without desired")
    eq(doc["metadata"].get("desired", {}), {}, "no desired metadata after the clear")
    eq(section(doc, "reported")["arr"], [3, 4], "reported untouched by clearing desired")

    # The device clears reported the same way; an update may set both sections.
    dev.accepted("update", {"state": {"reported": None}})
    doc = rest_doc(env, d).json
    eq(section(doc, "reported"), {}, '"reported": null clears reported')
    doc = patch(env, d, {"state": {"desired": {"a": 1}, "reported": {"a": 2}}})
    eq((section(doc, "desired"), section(doc, "reported"), doc["state"].get("delta")),
       ({"a": 1}, {"a": 2}, {"a": 1}), "both sections in one update")


# -- conflicts --------------------------------------------------------------------------------

@test
def conditional_updates_and_races(env):
    d = env.new_device("cond")
    dev = env.device(d, 5)
    dev.accepted("update", {"state": {"reported": {"a": 1}}})
    dev.accepted("update", {"state": {"reported": {"a": 2}}})

    rej = dev.rejected("update", {"state": {"reported": {"a": 3}}, "version": 1,
                                  "client_token": "stale"}, code=409, what="stale version")
    eq(rej.get("client_token"), "stale", "client_token echoed in update/rejected")
    acc = dev.accepted("update", {"state": {"reported": {"a": 3}}, "version": 2},
                       what="the current version")
    eq(acc["version"], 3, "version after a conditional update")

    expect_problem(env.op.patch(spath(d), {"state": {"desired": {"x": 1}}, "version": 1}), 409,
                   "PATCH with a stale version in the body")
    expect_problem(env.op.patch(spath(d), {"state": {"desired": {"x": 1}}},
                                headers={"If-Match": '"1"'}), 412, "PATCH with a stale If-Match")
    expect_problem(env.op.delete(spath(d), headers={"If-Match": '"2"'}), 412,
                   "DELETE with a stale If-Match")
    doc = rest_doc(env, d).json
    eq((doc["version"], section(doc, "reported"), section(doc, "desired")), (3, {"a": 3}, {}),
       "the refused changes changed nothing")
    doc = patch(env, d, {"state": {"desired": {"x": 1}}}, headers={"If-Match": '"3"'})
    eq(doc["version"], 4, "PATCH with the current If-Match")
    doc = patch(env, d, {"state": {"desired": {"x": 2}}, "version": 4})
    eq(doc["version"], 5, "PATCH with the current version in the body")

    # Two PATCHes with the same If-Match at once: exactly one wins, five times over.
    for round_ in range(5):
        v = rest_doc(env, d).json["version"]
        barrier = threading.Barrier(2)
        out = [None, None]

        def go(i):
            barrier.wait(10)
            out[i] = env.op.patch(spath(d), {"state": {"desired": {"w": f"{round_}-{i}"}}},
                                  headers={"If-Match": f'"{v}"'})
        ts = [threading.Thread(target=go, args=(i,)) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        statuses = sorted(r.status for r in out)
        eq(statuses, [200, 412], f"round {round_}: two PATCHes with If-Match \"{v}\" "
                                 f"({[r.body[:120] for r in out]})")
        winner = next(i for i in range(2) if out[i].status == 200)
        doc = rest_doc(env, d).json
        eq(doc["version"], v + 1, f"round {round_}: one change made")
        eq(section(doc, "desired")["w"], f"{round_}-{winner}",
           f"round {round_}: the winner's value")


# -- the delta when a device connects ---------------------------------------------------------

def delta_on_subscribe(env, version):
    d = env.new_device(f"conn{version}")
    patch(env, d, {"state": {"desired": {"mode": "eco"}}})  # before the device ever connected
    dev = env.device(d, version, sub=False)
    mark = dev.mark()
    dev.sub_ok(delta_topic(d))
    delta = dev.wait_json(delta_topic(d), mark, lambda j: j.get("version") == 1,
                          what="the delta of a shadow written before the first connect")
    eq(delta.get("state"), {"mode": "eco"}, "delta on subscribe")
    dev.close()

    patch(env, d, {"state": {"desired": {"mode": "max"}}})  # while it is offline
    dev = env.device(d, version, sub=False)
    mark = dev.mark()
    dev.sub_ok(f"devices/{d}/shadow/update/+")  # a filter covering the delta topic
    delta = dev.wait_json(delta_topic(d), mark, lambda j: j.get("version") == 2,
                          what="the delta of a change made while offline")
    eq(delta.get("state"), {"mode": "max"}, "delta after reconnecting")


@test
def delta_on_connect_clean_mqtt5(env):
    delta_on_subscribe(env, 5)


@test
def delta_on_connect_clean_mqtt311(env):
    delta_on_subscribe(env, 4)


def delta_persistent(env, version):
    d = env.new_device(f"sess{version}")
    kw = {"clean": False, "session_expiry": 300 if version == 5 else None}
    dev = env.device(d, version, sub=False, **kw)
    dev.sub_ok(delta_topic(d))
    dev.close()
    env.devs.remove(dev)

    patch(env, d, {"state": {"desired": {"fan": 3}}})
    dev = env.device(d, version, sub=False, **kw)
    check(dev.connack[0], f"the session is resumed (session present): {dev.connack}")
    delta = dev.wait_json(delta_topic(d), 0, lambda j: j.get("version") == 1,
                          what="the delta on connect, without subscribing again")
    eq(delta.get("state"), {"fan": 3}, "delta on connect")
    time.sleep(0.5)
    n = len([m for m in dev.msgs(0, delta_topic(d)) if json.loads(m.payload).get("version") == 1])
    eq(n, 1, "the delta is sent once (answers are not queued in an offline session)")


@test
def delta_on_reconnect_persistent_mqtt5(env):
    delta_persistent(env, 5)


@test
def delta_on_reconnect_persistent_mqtt311(env):
    delta_persistent(env, 4)


# -- named shadows ----------------------------------------------------------------------------

@test
def named_shadows(env):
    d = env.new_device("named")
    dev = env.device(d, 5)
    acc = dev.accepted("update", {"state": {"reported": {"ver": "1.0"}}}, name="firmware")
    eq(acc["version"], 1, "a named shadow has its own version")
    doc = dev.accepted("get", {}, name="firmware")
    check_document(doc, 1, "named get/accepted")
    eq(section(doc, "reported"), {"ver": "1.0"}, "named reported")
    rd = rest_doc(env, d, "firmware").json
    eq((rd.get("device"), rd.get("name"), rd["version"]), (d, "firmware", 1), "REST named document")
    rest_doc(env, d, "classic", status=404)  # a named shadow is not the classic one

    mark = dev.mark()
    patch(env, d, {"state": {"desired": {"rate": 5}}}, name="config")
    delta = dev.wait_json(delta_topic(d, "config"), mark, what="the named shadow's delta")
    eq((delta.get("state"), delta.get("version")), ({"rate": 5}, 1), "named update/delta")
    check(not dev.msgs(mark, delta_topic(d)), "a named shadow's delta went to the classic topic")
    dev.accepted("update", {"state": {"reported": {"x": 1}}})

    r = expect(env.viewer.get(f"/api/v1/tenants/acme/devices/{d}/shadows"), 200, "list shadows")
    items = r.json["items"]
    eq(sorted(i["name"] for i in items), ["classic", "config", "firmware"], "the shadows listed")
    for i in items:
        eq(i["version"], 1, f"listed version of {i['name']}")
        check_ms(i["timestamp"], f"listed timestamp of {i['name']}")
    eq(r.json.get("next_cursor"), None, "next_cursor")

    # Delete over MQTT and over REST.
    acc = dev.accepted("delete", {"client_token": "del-fw"}, name="firmware")
    eq(acc.get("client_token"), "del-fw", "delete/accepted client_token")
    check(isinstance(acc.get("version"), int), f"delete/accepted version: {acc}")
    check_ms(acc.get("timestamp"), "delete/accepted timestamp")
    dev.rejected("get", {}, name="firmware", code=404, what="get after delete")
    rest_doc(env, d, "firmware", status=404)
    expect(env.op.delete(spath(d, "config")), 204, "DELETE a named shadow")
    rest_doc(env, d, "config", status=404)
    dev.rejected("get", {}, name="config", code=404, what="get of a shadow deleted over REST")
    expect_problem(env.op.delete(spath(d, "config")), 404, "DELETE it again")
    r = expect(env.op.get(f"/api/v1/tenants/acme/devices/{d}/shadows"), 200, "list")
    eq([i["name"] for i in r.json["items"]], ["classic"], "deleted shadows are not listed")

    # Names: 64 characters of A-Z a-z 0-9 _ - : are fine.
    good = ("Az09_-:" * 10)[:63] + "z"
    eq(len(good), 64, "test name length")
    dev.accepted("update", {"state": {"reported": {"ok": True}}}, name=good, what="64-char name")
    eq(rest_doc(env, d, good).json["name"], good, "REST name of a 64-char shadow")

    # Bad names over MQTT: update/rejected 400 on the topic the request used (<prefix> of the
    # bad name, as the table in docs/shadow.md says), with the client_token.
    for bad in ("classic", "$sys", "a.b", "n" * 65, "sp ace", "é"):
        rej = dev.rejected("update", {"state": {"reported": {"x": 1}}}, name=bad, code=400,
                           what=f"update of shadow {bad!r}")
        check(rej.get("client_token"), f"client_token echoed: {rej}")


@test
def rest_bad_shadow_names(env):
        # A name of path characters that is not a valid shadow name is a 400 on every shadow
    # route; a character no path segment may hold is the router's 404 (docs/shadow.md).
    # Every name is tried (the findings are reported together) and none makes a shadow.
    d = env.new_device("names")
    patch(env, d, {"state": {"desired": {"a": 1}}})
    problems = []
    for bad, want in (("a.b", 400), ("n" * 65, 400), ("%24sys", 404), ("sp%20ace", 404),
                      ("%C3%A9", 404), ("a%2Fb", 404)):
        for method, tail, body in (("PATCH", "", {"state": {"reported": {"x": 1}}}),
                                   ("GET", "", None), ("DELETE", "", None),
                                   ("GET", "/history", None)):
            r = env.op.request(method, spath(d, bad, tail=tail), body)
            if r.status != want or r.media != "application/problem+json":
                problems.append(f"{method} {bad}{tail}: {r.status} (want {want}) "
                                f"{r.body[:100]!r}")

    r = expect(env.op.get(f"/api/v1/tenants/acme/devices/{d}/shadows"), 200, "list")
    eq([i["name"] for i in r.json["items"]], ["classic"], "no shadow was made under a bad name")
    check(not problems, "bad names not answered as documented:\n       " + "\n       ".join(problems))


@test
def thirty_third_named_shadow(env):
    d = env.new_device("many")
    conn = env.op.connection()
    try:
        for i in range(MAX_NAMED):
            expect(env.op.patch(spath(d, f"s{i:02d}"), {"state": {"desired": {"i": i}}},
                                conn=conn), 200, f"named shadow {i + 1}")
    finally:
        conn.close()
    patch(env, d, {"state": {"desired": {"classic": True}}})  # the classic one is not counted
    expect_problem(env.op.patch(spath(d, "s32"), {"state": {"desired": {"i": 32}}}), 413,
                   "the 33rd named shadow over REST")
    dev = env.device(d, 5)
    dev.rejected("update", {"state": {"reported": {"i": 32}}}, name="s33", code=413,
                 what="the 33rd named shadow over MQTT")
    dev.accepted("update", {"state": {"reported": {"i": 5}}}, name="s05",
                 what="an existing named shadow still takes updates")
    r = expect(env.op.get(f"/api/v1/tenants/acme/devices/{d}/shadows"), 200, "list")
    eq(len(r.json["items"]), MAX_NAMED + 1, "32 named shadows and the classic one")
    rest_doc(env, d, "s32", status=404)


# -- limits and bad requests ------------------------------------------------------------------

@test
def size_limit(env):
    mb = env.max_bytes
    d = env.new_device("big")
    dev = env.device(d, 5)
    dev.accepted("update", {"state": {"reported": {"small": 1}}})
    # Just under the limit: {"desired":{},"reported":{"small":1,"big":"..."}} < max_bytes.
    acc = dev.accepted("update", {"state": {"reported": {"big": "x" * (mb - 200)}}},
                       what="a state just under shadow.max_bytes")
    eq(acc["version"], 2, "version")
    dev.rejected("update", {"state": {"reported": {"big2": "y" * 300}}}, code=413,
                 what="an update growing the state past shadow.max_bytes")
    expect_problem(env.op.patch(spath(d), {"state": {"desired": {"big3": "z" * mb}}}), 413,
                   "a PATCH past shadow.max_bytes")
    doc = rest_doc(env, d).json
    eq(doc["version"], 2, "nothing changed")
    check("big2" not in section(doc, "reported") and not section(doc, "desired"),
          "the refused updates left nothing behind")

    # A fresh shadow with one update over the limit: 413, still never written.
    d2 = env.new_device("big")
    expect_problem(env.op.patch(spath(d2), {"state": {"reported": {"big": "x" * (mb + 1)}}}), 413,
                   "a first PATCH over shadow.max_bytes")
    rest_doc(env, d2, status=404)
        # Shrinking is always possible.
    acc = dev.accepted("update", {"state": {"reported": {"big": None}}}, what="shrink")
    eq(acc["version"], 3, "version after shrinking")
    # A request far larger than any state (here over 64 KiB) is not even kept: 413,
    # answered on its own topic like any other refusal, and nothing changes.
        # (Its client_token is not read either: the answer carries none.)
    kind, doc = dev.shadow("update", {"state": {"reported": {"huge": "h" * (70 << 10)}}},
                           token=False)
    eq((kind, doc.get("code")), ("rejected", 413), f"a request over the message size: {doc}")

    eq(rest_doc(env, d).json["version"], 3, "nothing changed after the huge request")



@test
def bad_requests(env):
    d = env.new_device("bad")
    dev = env.device(d, 5)
    dev.accepted("update", {"state": {"reported": {"a": 1}}})

    # Nesting: a section holds at most 8 levels of objects and arrays, itself included.
    dev.accepted("update", {"state": {"reported": nest(8)}}, what="8 levels of objects")
    dev.accepted("update", {"state": {"reported": {"arr": nest(7, arrays=True)}}},
                 what="8 levels with arrays")
    dev.rejected("update", {"state": {"reported": nest(9)}}, code=400, what="9 levels of objects")
    dev.rejected("update", {"state": {"reported": {"arr": nest(8, arrays=True)}}}, code=400,
                 what="9 levels with arrays")
    expect_problem(env.op.patch(spath(d), {"state": {"desired": nest(9)}}), 400,
                   "PATCH with 9 levels")
    v = rest_doc(env, d).json["version"]

    # Payloads that are not valid requests: 400, over MQTT (with the token when it can be read)
    # and REST.
    dev.rejected("update", raw=b'{"state": ', code=400, what="update that is not JSON")
    dev.rejected("update", raw=b"[1, 2]", code=400, what="update that is an array")
    rej = dev.rejected("update", {"state": {"reported": {"a": 2}}, "extra": 1,
                                  "client_token": "unk"}, code=400, what="unknown member")
    eq(rej.get("client_token"), "unk", "client_token echoed for a refused update")
    dev.rejected("update", {"state": 5}, code=400, what="state is not an object")
    dev.rejected("update", {"state": {"reported": 5}}, code=400, what="reported is a number")
    dev.rejected("update", {"state": {"reported": {"a": 2}}, "version": "1"}, code=400,
                 what="version is a string")
    dev.rejected("update", raw=json.dumps({"state": {"reported": {"a": 2}},
                                           "client_token": "t" * 65}),
                 code=400, what="client_token over 64 bytes")  # (it cannot be echoed)
    dev.accepted("update", {"state": {"reported": {"tok": 1}}, "client_token": "t" * 64},
                 what="client_token of 64 bytes")
    dev.rejected("get", raw=b"not json", code=400, what="get with a payload that is not JSON")
    dev.rejected("delete", raw=b"{", code=400, what="delete with a payload that is not JSON")
    for raw in ('{"state": ', "[1]", '{"state": {"reported": {"a": 2}}, "extra": 1}',
                '{"state": {"reported": 5}}'):
        expect_problem(env.op.request("PATCH", spath(d), raw=raw, ctype="application/json"), 400,
                       f"PATCH {raw}")
    doc = rest_doc(env, d).json
    eq(doc["version"], v + 1, "only the 64-byte token update changed the shadow")
    eq(section(doc, "reported").get("a"), 1, "refused updates changed nothing")

    # No such device.
    expect_problem(env.op.get(spath("no-such-device")), 404, "GET, no such device")
    expect_problem(env.op.patch(spath("no-such-device"), {"state": {"desired": {"a": 1}}}), 404,
                   "PATCH, no such device")
    expect_problem(env.op.get("/api/v1/tenants/acme/devices/no-such-device/shadows"), 404,
                   "list, no such device")


# -- delete and history -----------------------------------------------------------------------

@test
def delete_keeps_the_version(env):
    d = env.new_device("del")
    dev = env.device(d, 4)
    dev.accepted("update", {"state": {"reported": {"a": 1}}})
    dev.accepted("update", {"state": {"desired": {"b": 2}}})
    acc = dev.accepted("delete", {"client_token": "del-1"})
    eq(acc.get("client_token"), "del-1", "delete/accepted client_token")
    dv = acc.get("version")
    check(isinstance(dv, int) and dv >= 2, f"delete/accepted version: {acc}")
    dev.rejected("get", {}, code=404, what="get after delete")
    dev.rejected("delete", {}, code=404, what="delete after delete")
    rest_doc(env, d, status=404)

    acc = dev.accepted("update", {"state": {"reported": {"c": 3}}}, what="update after delete")
    check(acc["version"] > dv and acc["version"] > 2,
          f"the version goes on after a delete: {acc['version']} after {dv}")
    doc = rest_doc(env, d).json
    eq((section(doc, "reported"), section(doc, "desired")), ({"c": 3}, {}),
       "the deleted state is gone")
    v = doc["version"]
    expect(env.op.delete(spath(d), headers={"If-Match": f'"{v}"'}), 204, "DELETE with If-Match")
    expect_problem(env.op.delete(spath(d)), 404, "DELETE again")
    doc = patch(env, d, {"state": {"desired": {"d": 4}}})
    check(doc["version"] > v,
          f"the version goes on after a REST delete: {doc['version']} after {v}")


@test
def history(env):
    d = env.new_device("hist")
    dev = env.device(d, 5)
    dev.accepted("update", {"state": {"reported": {"t": 1}}})                   # v1 device
    time.sleep(0.03)
    patch(env, d, {"state": {"desired": {"t": 2}}})                             # v2 token
    time.sleep(0.03)
    dev.accepted("update", {"state": {"reported": {"t": 1}}}, what="no-op")    # no entry
    expect(env.op.delete(spath(d)), 204, "DELETE")                              # delete, token
    time.sleep(0.03)
    dev.accepted("update", {"state": {"reported": {"t": 3}}})                   # device again
    hpath = spath(d, tail="/history")
    r = expect(env.viewer.get(hpath), 200, "history")
    items = r.json["items"]
    eq(r.json.get("next_cursor"), None, "one page")
    eq([(i["op"], i["actor"], i["source"]) for i in items],
       [("update", "device", "mqtt"), ("delete", f"token:{env.op_id}", "rest"),
        ("update", f"token:{env.op_id}", "rest"), ("update", "device", "mqtt")],
       "every change, newest first, with actor and source (the no-op left none)")
    vs = [i["version"] for i in items]
    ts = [i["timestamp"] for i in items]
    # (A delete may or may not take a version of its own: docs/shadow.md only says the next
    # update goes on from the deleted shadow's version.)
    check(vs == sorted(vs, reverse=True) and vs[0] > vs[1] >= vs[2] > vs[3],
          f"versions newest first: {vs}")
    check(ts == sorted(ts, reverse=True), f"timestamps newest first: {ts}")
    for i in items:
        check_ms(i["timestamp"], "history timestamp")
    eq(items[0].get("reported"), {"t": 3}, "the device's patch")
    eq(items[0].get("desired"), None, "no desired in a reported-only change")
    eq(items[2].get("desired"), {"t": 2}, "the application's patch")
    eq(items[2].get("reported"), None, "no reported in a desired-only change")
    eq(items[3].get("reported"), {"t": 1}, "the first patch")

    # from / to (RFC 3339 with milliseconds): a window around one entry holds it alone (whether
    # the bounds are inclusive or not: the entries are at least 30 ms apart); from alone, to
    # alone.
    t = items[2]["timestamp"]
    got = expect(env.viewer.get(hpath, query={"from": rfc3339(t - 1), "to": rfc3339(t + 1)}),
                 200, "window").json
    eq([i["version"] for i in got["items"]], [items[2]["version"]], "from/to around one entry")
    got = expect(env.viewer.get(hpath, query={"from": rfc3339(items[1]["timestamp"] - 1)}), 200,
                 "from").json
    eq([i["version"] for i in got["items"]], vs[:2], "from alone")
    got = expect(env.viewer.get(hpath, query={"to": rfc3339(items[2]["timestamp"] + 1)}), 200,
                 "to").json
    eq([i["version"] for i in got["items"]], vs[2:], "to alone")

    # Pages of one.
    seen, cursor, pages = [], None, 0
    while True:
        q = {"limit": 1}
        if cursor:
            q["cursor"] = cursor
        page = expect(env.viewer.get(hpath, query=q), 200, "page").json
        check(len(page["items"]) <= 1, f"limit=1 gave {len(page['items'])} items")
        seen += page["items"]
        cursor = page.get("next_cursor")
        pages += 1
        check(pages <= len(items) + 1, "more pages than entries")
        if not cursor:
            break
    eq(seen, items, "pages of one give the same entries in the same order")


# -- the live stream --------------------------------------------------------------------------

def stream_events(ws, pred, timeout=10.0, seen=None):
    """Read the WebSocket until an event matching pred arrives (answering pings); every event
    read is appended to seen."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TestFailure(f"no matching stream event within {timeout:.0f} s; got "
                              f"{(seen or [])[-8:]}")
        f = ws.read_frame(left)
        if f is None:
            raise TestFailure(f"the stream closed; got {(seen or [])[-8:]}")
        op, payload = f
        if op == 0x9:
            ws.send_frame(0xA, payload)
        elif op == 0x1:
            m = json.loads(payload)
            if seen is not None:
                seen.append(m)
            if pred(m):
                return m


@test
def live_stream_events(env):
    from test_stream import WsClient
    d = env.new_device("live")
    dev = env.device(d, 5)
    ws = WsClient(env.d.http_port, env.viewer_token)
    try:
        a = ws.request({"op": "subscribe", "id": "sh", "types": ["shadow.*"], "devices": [d]})
        eq(a.get("type"), "ack", f"subscribe to shadow.*: {a}")
        seen = []
        dev.accepted("update", {"state": {"reported": {"led": "off"}}})
        ev = stream_events(ws, lambda m: m.get("type") == "shadow.updated"
                           and m.get("detail", {}).get("version") == 1, seen=seen)
        eq((ev.get("sub"), ev.get("tenant"), ev.get("device")), ("sh", "acme", d), "event fields")
        check_ms(ev.get("ts"), "event ts")
        det = ev["detail"]
        eq((det.get("name"), det.get("actor"), det.get("state"), det.get("delta")),
           ("classic", "device", {"reported": {"led": "off"}}, {}), "the device's change")

        patch(env, d, {"state": {"desired": {"led": "on"}}})
        ev = stream_events(ws, lambda m: m.get("type") == "shadow.updated"
                           and m.get("detail", {}).get("version") == 2, seen=seen)
        det = ev["detail"]
        eq((det.get("name"), det.get("actor"), det.get("state"), det.get("delta")),
           ("classic", f"token:{env.op_id}", {"desired": {"led": "on"}}, {"led": "on"}),
           "the application's change")

        dev.accepted("update", {"state": {"reported": {"v": 1}}}, name="cfg")
        ev = stream_events(ws, lambda m: m.get("type") == "shadow.updated"
                           and m.get("detail", {}).get("name") == "cfg", seen=seen)
        eq(ev["detail"].get("version"), 1, "the named shadow's event")

        expect(env.op.delete(spath(d)), 204, "DELETE")
        ev = stream_events(ws, lambda m: m.get("type") == "shadow.deleted", seen=seen)
        eq((ev.get("device"), ev["detail"].get("name")), (d, "classic"), "shadow.deleted")
        check(isinstance(ev["detail"].get("version"), int), f"shadow.deleted version: {ev}")
        types = [m.get("type") for m in seen if m.get("type") not in ("ack", "pong")]
        check(all(t in ("shadow.updated", "shadow.deleted") for t in types),
              f"only shadow.* events on a shadow.* subscription: {types}")
    finally:
        ws.close()


# -- isolation, roles, decommissioning --------------------------------------------------------

@test
def tenant_isolation(env):
    d = env.new_device("iso")
    env.provision(d, "globex")                       # the same device id in the other tenant
    patch(env, d, {"state": {"desired": {"secret": "acme-only"}}})
    g = env.globex
    base = f"/api/v1/tenants/acme/devices/{d}/shadows"
    expect_problem(g.get(base + "/classic"), 404, "globex reads acme's shadow")
    expect_problem(g.patch(base + "/classic", {"state": {"desired": {"x": 1}}}), 404,
                   "globex patches acme's shadow")
    expect_problem(g.delete(base + "/classic"), 404, "globex deletes acme's shadow")
    expect_problem(g.get(base), 404, "globex lists acme's shadows")
    expect_problem(g.get(base + "/classic/history"), 404, "globex reads acme's history")
    expect_problem(g.get(spath(d, tenant="globex")), 404, "globex's own d has no shadow")

    # globex's device with the same id: nothing of acme's shadow reaches it, and its own
    # changes stay in its tenant.
    gdev = env.device(d, 5, tenant="globex")
    gdev.rejected("get", {}, code=404, what="globex's device reads its own (empty) shadow")
    mark = gdev.mark()
    patch(env, d, {"state": {"desired": {"secret": "acme-2"}}})
    gdev.accepted("update", {"state": {"reported": {"mine": 1}}})
    time.sleep(0.3)
    leaked = [m for m in gdev.msgs(mark) if b"acme" in m.payload]
    check(not leaked, f"acme's shadow reached globex's device: {leaked}")
    check(not gdev.msgs(mark, delta_topic(d)), "globex's device got a delta it has no desired for")
    doc = rest_doc(env, d).json
    eq(section(doc, "desired"), {"secret": "acme-2"}, "acme's shadow")
    eq(section(doc, "reported"), {}, "globex's report did not touch acme's shadow")
    r = g.get(spath(d, tenant="globex"))
    expect(r, 200, "globex's own shadow")
    eq(section(r.json, "reported"), {"mine": 1}, "globex's shadow")

    # An acme device cannot subscribe to another device's shadow topics.
    other = env.new_device("iso")
    dev = env.device(other, 5, sub=False)
    codes = dev.sub(f"devices/{d}/shadow/#")
    check(codes and codes[0] >= 0x80, f"SUBACK for another device's shadow topics: {codes}")


@test
def roles_and_scopes(env):
    d = env.new_device("roles")
    patch(env, d, {"state": {"desired": {"a": 1}}})
    expect(env.viewer.get(spath(d)), 200, "a viewer reads")
    expect_problem(env.viewer.patch(spath(d), {"state": {"desired": {"a": 2}}}), 403,
                   "a viewer patches")
    expect_problem(env.viewer.delete(spath(d)), 403, "a viewer deletes")
    _, tok = token_of(env.admin, "acme", "operator", ["shadows:read"])
    ro = Api(env.d.http_port, tok)
    expect(ro.get(spath(d)), 200, "shadows:read reads")
    expect_problem(ro.patch(spath(d), {"state": {"desired": {"a": 2}}}), 403,
                   "shadows:read patches")
    _, tok = token_of(env.admin, "acme", "operator", ["shadows:write"])
    wo = Api(env.d.http_port, tok)
    expect_problem(wo.get(spath(d)), 403, "shadows:write only reads")
    expect(wo.patch(spath(d), {"state": {"desired": {"a": 2}}}), 200, "shadows:write patches")
    _, tok = token_of(env.admin, "acme", "viewer", ["devices:read"])
    expect_problem(Api(env.d.http_port, tok).get(spath(d)), 403, "devices:read reads a shadow")


@test
def decommissioned_device(env):
    d = env.new_device("decom")
    patch(env, d, {"state": {"desired": {"a": 1}}})
    expect(env.admin.post(f"/api/v1/tenants/acme/devices/{d}/decommission"), 200, "decommission")
    doc = rest_doc(env, d).json
    eq(section(doc, "desired"), {"a": 1}, "a decommissioned device's shadow is readable")
    expect_problem(env.op.patch(spath(d), {"state": {"desired": {"a": 2}}}), 409,
                   "PATCH of a decommissioned device's shadow")
    expect_problem(env.op.patch(spath(d, "other"), {"state": {"desired": {"a": 2}}}), 409,
                   "PATCH of a new named shadow of a decommissioned device")
    expect_problem(env.op.delete(spath(d)), 409, "DELETE of a decommissioned device's shadow")
    expect(env.op.get(spath(d, tail="/history")), 200, "its history is readable")
    expect(env.op.get(f"/api/v1/tenants/acme/devices/{d}/shadows"), 200, "its list is readable")
    eq(rest_doc(env, d).json["version"], 1, "nothing changed")


# -- durability -------------------------------------------------------------------------------

@test
def survives_kill9(env):
    d = env.new_device("dur")
    patch(env, d, {"state": {"desired": {"fw": "2.1"}}})              # v1
    dev = env.device(d, 4)
    acc = dev.accepted("update", {"state": {"reported": {"fw": "2.0"}}})
    eq(acc["version"], 2, "version")
    named = dev.accepted("update", {"state": {"reported": {"n": 1}}}, name="cfg")
    deleted = env.new_device("dur")
    patch(env, deleted, {"state": {"desired": {"x": 1}}})
    expect(env.op.delete(spath(deleted)), 204, "DELETE before the kill")
    env.d.kill9_restart()                                              # right after the answers
    env.close_devices()

    doc = rest_doc(env, d).json
    check_document(doc, 2, "after kill -9")
    eq((section(doc, "desired"), section(doc, "reported"), doc["state"].get("delta")),
       ({"fw": "2.1"}, {"fw": "2.0"}, {"fw": "2.1"}), "the state after kill -9")
    eq(rest_doc(env, d, "cfg").json["version"], named["version"], "the named shadow")
    rest_doc(env, deleted, status=404)
    hist = expect(env.op.get(spath(d, tail="/history")), 200, "history").json["items"]
    eq([i["version"] for i in hist], [2, 1], "the history after kill -9")

    dev = env.device(d, 4)  # subscribed to devices/<d>/shadow/#, which covers the delta
    delta = dev.wait_json(delta_topic(d), 0, lambda j: j.get("version") == 2,
                          what="the delta after the restart")
    eq(delta.get("state"), {"fw": "2.1"}, "delta after restart")
    acc = dev.accepted("update", {"state": {"reported": {"fw": "2.1"}}}, what="after restart")
    eq(acc["version"], 3, "the version goes on after the restart")
    doc = patch(env, deleted, {"state": {"desired": {"y": 1}}})
    check(doc["version"] > 1, f"a deleted shadow's version survives the restart: {doc['version']}")


if __name__ == "__main__":
    suite.main(setup, "device shadows (docs/shadow.md)")
