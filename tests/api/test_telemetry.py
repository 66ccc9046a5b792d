#!/usr/bin/python3
"""Telemetry end to end (issue 5): devices publish over MQTT with their real
credentials, the broker's publish tap decodes the payload with the decoder of
the device's profile (src/pipeline) and stores the samples in the embedded
time-series engine (src/tsdb); the REST queries read them back
(src/api/h_telemetry.c).

What is checked:
- a QoS 1 publish is visible to a query as soon as its PUBACK arrives (no
  sleeping, many times in a row);
- the JSON decoder's shapes (flat, nested → dotted keys, {ts, values}, batches),
  SenML and numeric profiles, value types;
- an undecodable payload: PUBACK 0x99 for MQTT 5.0, nothing stored, a
  decode_error event the tenant can read; a 3.1.1 device's is acknowledged and
  dropped;
- a sample of another kind than its key's is refused, the others kept;
- raw pages with cursors, aggregates by bucket, the tenant-wide aggregate with
  key/device/group filters, latest and keys;
- isolation: another tenant's token sees 404, the same device id in two
  tenants keeps two series;
- everything survives a clean restart and a kill -9.

Usage: test_telemetry.py --drover BINARY [-k NAME]
"""
import contextlib
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
from apilib import Suite, check, eq, expect, start_server  # noqa: E402

sys.path.insert(0, os.path.join(HERE, "..", "broker"))
from mqtt_testlib import (P, RawClient, connect_packet, dec_props,  # noqa: E402
                          disconnect_packet, publish_packet)

suite = Suite("test_telemetry")
SECRET = "telemetry-test-secret-1"
T0 = 1767225600000  # 2026-01-01T00:00:00Z


class Device:
    """A raw MQTT client (tests/broker/mqtt_testlib.py) connected as
    <tenant>/<device>; publish() waits for the PUBACK and returns its reason
    code (0 for MQTT 3.1.1, which has none)."""

    def __init__(self, port, tenant, device, v5=True):
        self.version = 5 if v5 else 4
        self.c = RawClient(port, version=self.version)
        self.c.send(connect_packet(device, version=self.version, username=f"{tenant}/{device}",
                                   password=SECRET))
        ack = self.c.expect(P.CONNACK, timeout=10)
        eq(ack.body[1], 0, f"{tenant}/{device} connects")
        self.pid = 0

    def publish(self, topic, payload, qos=1):
        if not isinstance(payload, (bytes, str)):
            payload = json.dumps(payload)
        self.pid = self.pid % 65535 + 1
        self.c.send(publish_packet(topic, payload, qos=qos, pid=self.pid, version=self.version))
        ack = self.c.expect(P.PUBACK, timeout=10)
        eq(int.from_bytes(ack.body[:2], "big"), self.pid, "PUBACK for this packet id")
        return ack.body[2] if len(ack.body) > 2 else 0

    def close(self):
        self.c.send(disconnect_packet(version=self.version))
        self.c.close()


class Env:
    def __init__(self, d, api):
        self.d = d
        self.api = api

    def alive(self):
        return self.d.alive()

    def device(self, tenant, device, v5=True):
        return Device(self.d.port, tenant, device, v5)


def provision(api, tenant, device, profile=None):
    body = {"id": device}
    if profile:
        body["profile"] = profile
    expect(api.post(f"/api/v1/tenants/{tenant}/devices", body), 201, "device created")
    expect(api.post(f"/api/v1/tenants/{tenant}/devices/{device}/credentials",
                    {"kind": "secret", "secret": SECRET}), 201, "secret added")


@contextlib.contextmanager
def setup(binary):
    with start_server(binary) as (d, api):
        for t in ("acme", "globex"):
            expect(api.post("/api/v1/tenants", {"id": t, "name": t}), 201, "tenant")
        provision(api, "acme", "d1")
        provision(api, "globex", "d1")
        yield Env(d, api)


def q(env, path, status=200, api=None):
    r = (api or env.api).get(path)
    eq(r.status, status, f"GET {path}: {r.body[:300]!r}")
    return r.json if status == 200 else r


def latest(env, tenant, device):
    items = q(env, f"/api/v1/tenants/{tenant}/devices/{device}/telemetry/latest")["items"]
    return {i["key"]: i for i in items}


@suite.test()
def visible_right_after_puback(env):
    dev = env.device("acme", "d1")
    try:
        for i in range(60):
            eq(dev.publish("devices/d1/telemetry", {"seq": i}), 0, "PUBACK success")
            got = latest(env, "acme", "d1")
            eq(got["seq"]["value"], i, f"publish {i} visible right after its PUBACK")
    finally:
        dev.close()


@suite.test()
def json_shapes_and_types(env):
    dev = env.device("acme", "d1")
    try:
        eq(dev.publish("devices/d1/telemetry",
                       {"temp": 21.5, "count": 7, "on": True, "mode": "eco",
                        "pos": {"lat": 52.52, "lon": 13.4}, "skip": None}), 0, "flat+nested")
        eq(dev.publish("devices/d1/telemetry", {"ts": T0 + 1000, "values": {"hist": 1.25}}),
           0, "{ts, values}")
        eq(dev.publish("devices/d1/telemetry",
                       [{"ts": T0 + 2000, "values": {"hist": 2.5}},
                        {"ts": T0 + 3000, "values": {"hist": 3.75, "hist2": -1}}]), 0, "batch")
    finally:
        dev.close()
    got = latest(env, "acme", "d1")
    eq(got["temp"]["value"], 21.5, "double")
    eq(got["temp"]["type"], "double", "double type")
    eq(got["count"]["type"], "integer", "integer type")
    eq(got["on"]["value"], True, "boolean")
    eq(got["mode"]["value"], "eco", "string")
    eq(got["pos.lat"]["value"], 52.52, "nested object flattened")
    check("skip" not in got, "null members are skipped")
    r = q(env, f"/api/v1/tenants/acme/devices/d1/telemetry?key=hist&from={T0}&to={T0 + 10000}")
    eq([(i["ts"], i["value"]) for i in r["items"]],
       [(T0 + 1000, 1.25), (T0 + 2000, 2.5), (T0 + 3000, 3.75)], "device times kept")
    keys = q(env, "/api/v1/tenants/acme/devices/d1/telemetry/keys")["items"]
    check({"temp", "hist", "hist2", "pos.lon"} <= {k["key"] for k in keys}, "keys listed")
    check(all("value" not in k for k in keys), "keys carry no values")


@suite.test()
def undecodable_payloads(env):
    v5 = env.device("acme", "d1")
    try:
        eq(v5.publish("devices/d1/telemetry", b'{"bad": '), 0x99, "MQTT 5.0: 0x99")
        eq(v5.publish("devices/d1/telemetry", b'[1, 2]'), 0x99, "not an object")
    finally:
        v5.close()
    v3 = env.device("acme", "d1", v5=False)
    try:
        eq(v3.publish("devices/d1/telemetry", b'not json'), 0, "3.1.1: acknowledged")
    finally:
        v3.close()

    def has_event():
        ev = q(env, "/api/v1/tenants/acme/devices/d1/events")["items"]
        return [e for e in ev if e["kind"] == "decode_error"]
    deadline = time.time() + 5
    while not has_event() and time.time() < deadline:
        time.sleep(0.05)
    ev = has_event()
    check(ev, "decode_error events recorded")
    check(ev[0]["detail"]["reason"], "with a reason")
    m = env.api.get("/metrics").body.decode()
    check("drover_telemetry_decode_errors_total" in m, "decode errors in /metrics")


@suite.test()
def kind_conflicts_refuse_one_sample(env):
    dev = env.device("acme", "d1")
    try:
        eq(dev.publish("devices/d1/telemetry", {"k1": 1.5}), 0, "number")
        eq(dev.publish("devices/d1/telemetry", {"k1": "text", "k2": 2}), 0, "mixed")
        eq(dev.publish("devices/d1/telemetry", {"k1": 2}), 0, "int into double: fine")
    finally:
        dev.close()
    got = latest(env, "acme", "d1")
    eq(got["k1"]["value"], 2, "k1 kept its kind")
    eq(got["k2"]["value"], 2, "the other sample of the message stored")


@suite.test()
def senml_and_numeric_profiles(env):
    api = env.api
    expect(api.post("/api/v1/tenants/acme/profiles",
                    {"id": "senml", "name": "SenML", "decoder": "senml"}), 201, "profile")
    expect(api.post("/api/v1/tenants/acme/profiles",
                    {"id": "num", "name": "numeric", "decoder": "numeric",
                     "telemetry_topic": "devices/{device}/metrics"}), 201, "profile")
    provision(api, "acme", "s1", "senml")
    provision(api, "acme", "n1", "num")
    s = env.device("acme", "s1")
    try:
        eq(s.publish("devices/s1/telemetry",
                     [{"bn": "urn:dev:s1:", "bt": 1767225600, "n": "temp", "v": 21.5},
                      {"n": "temp", "t": 10, "v": 22},
                      {"n": "open", "vb": True}]), 0, "SenML")
    finally:
        s.close()
    r = q(env, f"/api/v1/tenants/acme/devices/s1/telemetry?key=urn:dev:s1:temp"
               f"&from={T0}&to={T0 + 60000}")
    eq([(i["ts"], i["value"]) for i in r["items"]], [(T0, 21.5), (T0 + 10000, 22)],
       "SenML times and values")
    n = env.device("acme", "n1")
    try:
        eq(n.publish("devices/n1/metrics/rpm", "1500"), 0, "numeric int")
        eq(n.publish("devices/n1/metrics/temp", " 21.25 "), 0, "numeric double")
        eq(n.publish("devices/n1/metrics/temp", "warm"), 0x99, "not a number")
        eq(n.publish("devices/n1/metrics", "1"), 0x10, "no key level: not telemetry, just routed")
    finally:
        n.close()
    got = latest(env, "acme", "n1")
    eq(got["rpm"]["value"], 1500, "rpm")
    eq(got["temp"]["value"], 21.25, "temp")
    eq(len(got), 2, "nothing else stored")


@suite.test()
def pages_and_aggregates(env):
    provision(env.api, "acme", "agg")
    dev = env.device("acme", "agg")
    try:
        batch = [{"ts": T0 + i * 10000, "values": {"v": i % 60, "s": "x" if i % 2 else "y"}}
                 for i in range(720)]  # 2 hours at 10 s
        for k in range(0, 720, 240):
            eq(dev.publish("devices/agg/telemetry", batch[k:k + 240]), 0, "batch stored")
    finally:
        dev.close()
    base = "/api/v1/tenants/acme/devices/agg/telemetry"
    seen, cursor = [], None
    while True:
        path = f"{base}?key=v&from={T0}&to={T0 + 7200000}&limit=100"
        r = q(env, path + (f"&cursor={cursor}" if cursor else ""))
        seen += r["items"]
        cursor = r.get("next_cursor")
        if not cursor:
            break
    eq(len(seen), 720, "every sample once across pages")
    eq([i["ts"] for i in seen], sorted(i["ts"] for i in seen), "in time order")
    r = q(env, f"{base}/aggregate?key=v&from={T0}&to={T0 + 3600000}&bucket=5m&fn=max,min,count,avg")
    eq(len(r["items"]), 12, "12 buckets of 5 min")
    b = r["items"][1]
    eq((b["ts"], b["count"], b["min"], b["max"]), (T0 + 300000, 30, 30, 59), "bucket 2")
    eq(b["avg"], 44.5, "avg")
    r = q(env, f"{base}/aggregate?key=s&from={T0}&to={T0 + 7200000}&fn=count,first,last,max")
    eq(r["items"], [{"ts": T0, "count": 720, "first": "y", "last": "x", "max": None}],
       "strings: count/first/last")
    expect(env.api.get(f"{base}/aggregate?key=v&bucket=0m"), 400, "bad bucket")
    expect(env.api.get(f"{base}/aggregate?key=v&fn=median"), 400, "bad fn")
    expect(env.api.get(f"{base}/aggregate?fn=max"), 400, "key required")
    expect(env.api.get(f"{base}?key=v&from=yesterday"), 400, "bad time")
    expect(env.api.get(f"{base}?key=nope&from={T0}&to={T0 + 1}"), 404, "unknown series")
    # tenant-wide, with filters; a group of one
    expect(env.api.post("/api/v1/tenants/acme/groups", {"id": "g", "name": "g", "kind": "static"}),
           201, "group")
    expect(env.api.patch("/api/v1/tenants/acme/devices/agg", {"groups": ["g"]}), 200, "member")
    ta = "/api/v1/tenants/acme/telemetry/aggregate"
    r = q(env, f"{ta}?from={T0}&to={T0 + 3600000}&fn=avg,count&key=v")
    eq([(i["device"], i["key"], i["count"]) for i in r["items"]], [("agg", "v", 360)],
       "key filter: series with data in range only")
    r = q(env, f"{ta}?from={T0}&to={T0 + 3600000}&group=g&bucket=30m&fn=max")
    eq({(i["device"], i["key"]) for i in r["items"]}, {("agg", "v"), ("agg", "s")}, "group")
    eq([b["max"] for b in r["items"][1]["buckets"]] if r["items"][1]["key"] == "v" else
       [b["max"] for b in r["items"][0]["buckets"]], [59, 59], "group buckets")
    expect(env.api.get(f"{ta}?group=nope"), 404, "unknown group")


@suite.test()
def tenants_are_walled(env):
    a = env.device("acme", "d1")
    g = env.device("globex", "d1")
    try:
        eq(a.publish("devices/d1/telemetry", {"wall": 1}), 0, "acme")
        eq(g.publish("devices/d1/telemetry", {"wall": 2}), 0, "globex")
    finally:
        a.close()
        g.close()
    eq(latest(env, "acme", "d1")["wall"]["value"], 1, "acme's own series")
    eq(latest(env, "globex", "d1")["wall"]["value"], 2, "globex's own series")
    r = env.api.post("/api/v1/tenants/globex/tokens", {"name": "t", "role": "viewer"})
    expect(r, 201, "globex token")
    other = env.api.as_token(r.json["token"])
    for path in ("devices/d1/telemetry/latest", "devices/d1/telemetry/keys",
                 "devices/d1/telemetry?key=wall", "devices/d1/telemetry/aggregate?key=wall",
                 "telemetry/aggregate"):
        expect(other.get(f"/api/v1/tenants/acme/{path}"), 404, f"globex token on acme {path}")


@suite.test()
def survives_restart_and_kill9(env):
    dev = env.device("acme", "d1")
    try:
        eq(dev.publish("devices/d1/telemetry", {"durable": 1.5}), 0, "before restart")
    finally:
        dev.close()
    env.d.restart()
    eq(latest(env, "acme", "d1")["durable"]["value"], 1.5, "after a clean restart")
    dev = env.device("acme", "d1")
    try:
        for i in range(20):
            eq(dev.publish("devices/d1/telemetry", {"ts": T0 + 50000 + i, "values": {"k9": i}}),
               0, "acked")
    finally:
        dev.close()
    env.d.kill9_restart()
    r = q(env, f"/api/v1/tenants/acme/devices/d1/telemetry?key=k9&from={T0}&to={T0 + 100000}")
    eq([i["value"] for i in r["items"]], list(range(20)), "every acknowledged sample after kill -9")
    eq(latest(env, "acme", "d1")["durable"]["value"], 1.5, "older samples too")


@suite.test()
def purge_removes_telemetry(env):
    provision(env.api, "acme", "gone")
    provision(env.api, "acme", "kept")
    for name in ("gone", "kept"):
        dev = env.device("acme", name)
        try:
            eq(dev.publish(f"devices/{name}/telemetry", {"ts": T0, "values": {"x": 1}}), 0, name)
        finally:
            dev.close()
    expect(env.api.post("/api/v1/tenants/acme/devices/gone/decommission", {"purge": True}), 204,
           "purged")
    expect(env.api.post("/api/v1/tenants/acme/devices/kept/decommission", {}), 200,
           "decommissioned, kept")
    expect(env.api.get("/api/v1/tenants/acme/devices/gone/telemetry/latest"), 404,
           "a purged device is gone, with its telemetry")
    expect(env.api.get(f"/api/v1/tenants/acme/devices/gone/telemetry?key=x&from={T0}&to={T0 + 1}"),
           404, "no series")
    eq(latest(env, "acme", "kept")["x"]["value"], 1, "a decommissioned device's is kept")
    env.d.restart()
    r = q(env, f"/api/v1/tenants/acme/telemetry/aggregate?device=gone&from={T0}&to={T0 + 1}")
    eq(r["items"], [], "no series left in the store after a restart")
    eq(latest(env, "acme", "kept")["x"]["value"], 1, "still kept after a restart")


@suite.test()
def retention_refuses_older_samples(env):
    provision(env.api, "globex", "old")
    expect(env.api.patch("/api/v1/tenants/globex", {"telemetry_retention_days": 30}), 200,
           "retention set")
    now_ms = int(time.time() * 1000)
    dev = env.device("globex", "old")
    try:
        eq(dev.publish("devices/old/telemetry", [{"ts": T0, "values": {"r": 1}},
                                                  {"ts": now_ms, "values": {"r": 2}}]), 0, "sent")
    finally:
        dev.close()
    r = q(env, f"/api/v1/tenants/globex/devices/old/telemetry?key=r&from={T0}&to={now_ms + 1}")
    eq([i["value"] for i in r["items"]], [2], "the sample older than 30 days was refused")
    env.d.restart()  # the retention is read back from the registry at start
    dev = env.device("globex", "old")
    try:
        eq(dev.publish("devices/old/telemetry", {"ts": T0 + 5, "values": {"r": 3}}), 0, "sent")
    finally:
        dev.close()
    r = q(env, f"/api/v1/tenants/globex/devices/old/telemetry?key=r&from={T0}&to={now_ms + 1}")
    eq([i["value"] for i in r["items"]], [2], "still refused after a restart")
    expect(env.api.patch("/api/v1/tenants/globex", {"telemetry_retention_days": -1}), 400,
           "negative retention")


@suite.test()
def profile_retention_is_the_shorter_one(env):
    now_ms = int(time.time() * 1000)
    day = 86400000
    expect(env.api.post("/api/v1/tenants/acme/profiles",
                        {"id": "short", "name": "short", "telemetry_retention_days": 10}),
           201, "profile with its retention")
    expect(env.api.post("/api/v1/tenants/acme/profiles",
                        {"id": "bad", "name": "bad", "telemetry_retention_days": -3}),
           400, "negative retention")
    provision(env.api, "acme", "pr", "short")
    dev = env.device("acme", "pr")
    try:
        eq(dev.publish("devices/pr/telemetry", {"ts": now_ms, "values": {"p": 0}}), 0, "first")
        # the engine asks for a new device's retention within about a second
        deadline = time.time() + 10
        while True:
            eq(dev.publish("devices/pr/telemetry",
                           [{"ts": now_ms - 20 * day, "values": {"p": 20}},
                            {"ts": now_ms - 5 * day, "values": {"p": 5}}]), 0, "sent")
            r = q(env, f"/api/v1/tenants/acme/devices/pr/telemetry?key=p&from={now_ms - 30 * day}"
                       f"&to={now_ms + 1}")
            if [i["value"] for i in r["items"]] == [5, 0] or time.time() > deadline:
                break
            time.sleep(0.3)
    finally:
        dev.close()
    eq([i["value"] for i in r["items"]], [5, 0],
       "a sample older than the profile's 10 days is neither stored nor served")


@suite.test()
def storage_quota_refuses_with_a_clear_error(env):
    expect(env.api.post("/api/v1/tenants", {"id": "small", "name": "small",
                                            "quotas": {"storage_bytes": 1000}}), 201, "tenant")
    provision(env.api, "small", "s1")
    dev = env.device("small", "s1")
    codes = []
    try:
        for k in range(10):  # 100 samples a message; ~2 B each in memory until flushed
            batch = [{"ts": T0 + k * 1000 + i, "values": {"q": k}} for i in range(100)]
            codes.append(dev.publish("devices/s1/telemetry", batch))
    finally:
        dev.close()
    check(0x97 in codes, f"PUBACK 0x97 quota exceeded once the quota is used: {codes}")
    first = codes.index(0x97)
    check(first >= 3 and all(c == 0x97 for c in codes[first:]), f"refused from then on: {codes}")
    r = q(env, f"/api/v1/tenants/small/devices/s1/telemetry/aggregate?key=q&from={T0}"
               f"&to={T0 + 20000}&fn=count,max")
    eq(r["items"][0]["count"], first * 100, "only the accepted messages are stored")
    r = env.api.post(f"/api/v1/tenants/small/telemetry/import",
                     raw=f"device,key,ts,value\r\ns1,q,{T0 + 50000},1\r\n", ctype="text/csv")
    expect(r, 429, "an import over the quota")
    expect(env.api.patch("/api/v1/tenants/small", {"quotas": {"storage_bytes": 0}}), 200,
           "quota lifted")
    dev = env.device("small", "s1")
    try:
        eq(dev.publish("devices/s1/telemetry", {"q": 99}), 0, "accepted again")
    finally:
        dev.close()


@suite.test()
def suspended_tenant_reads_but_does_not_write(env):
    expect(env.api.post("/api/v1/tenants", {"id": "paused", "name": "paused"}), 201, "tenant")
    provision(env.api, "paused", "p1")
    r = env.api.post("/api/v1/tenants/paused/tokens", {"name": "op", "role": "operator"})
    expect(r, 201, "operator token")
    op = env.api.as_token(r.json["token"])
    expect(env.api.patch("/api/v1/tenants/paused", {"status": "suspended"}), 200, "suspended")
    expect(op.get("/api/v1/tenants/paused/devices"), 200, "reads go on")
    expect(op.get("/api/v1/tenants/paused/devices/p1/telemetry/latest"), 200, "telemetry reads")
    r = op.post("/api/v1/tenants/paused/devices", {"id": "p2"})
    expect(r, 403, "no writes")
    eq(r.json.get("type"), "https://drover.dev/problems/tenant-suspended", "problem type")
    expect(op.post("/api/v1/tenants/paused/devices/p1/telemetry", raw='{"x": 1}',
                   ctype="application/json"), 403, "no ingest with its token")
    expect(env.api.post("/api/v1/tenants/paused/devices", {"id": "p3"}), 201,
           "the platform admin still acts")
    expect(env.api.patch("/api/v1/tenants/paused", {"status": "active"}), 200, "active again")
    expect(op.post("/api/v1/tenants/paused/devices", {"id": "p4"}), 201, "writes again")


@suite.test()
def conditional_requests_star_and_weak(env):
    # (issue 4) If-Match: * and weak ETags, RFC 9110 §13.1
    path = "/api/v1/tenants/acme/devices/d1"
    r = env.api.get(path)
    expect(r, 200, "device")
    etag = r.header("etag")
    expect(env.api.patch(path, {"name": "star"}, headers={"If-Match": "*"}), 200, "If-Match: *")
    expect(env.api.patch(path, {"name": "weak"}, headers={"If-Match": "W/" + etag}), 412,
           "a weak ETag never matches If-Match")
    r = env.api.get(path)
    cur = r.header("etag")
    expect(env.api.get(path, headers={"If-None-Match": "W/" + cur}), 304, "weak If-None-Match")
    expect(env.api.get(path, headers={"If-None-Match": '"999", ' + cur}), 304, "a list")
    expect(env.api.get(path, headers={"If-None-Match": "*"}), 304, "If-None-Match: *")
    expect(env.api.get(path, headers={"If-None-Match": '"999"'}), 200, "no match")


@suite.test()
def profile_transport_limits_apply_at_connect(env):
    # (issue 4) a profile's transport.mqtt settings: max QoS and keep alive
    expect(env.api.post("/api/v1/tenants/acme/profiles",
                        {"id": "lowqos", "name": "low", "transport":
                         {"mqtt": {"max_qos": 0, "keepalive_max_s": 30}}}), 201, "profile")
    provision(env.api, "acme", "lq", "lowqos")
    c = RawClient(env.d.port, version=5)
    c.send(connect_packet("lq", version=5, keepalive=600, username="acme/lq", password=SECRET))
    ack = c.expect(P.CONNACK, timeout=10)
    eq(ack.body[1], 0, "connected")
    props, _ = dec_props(ack.body, 2)
    eq(props.get(0x24), 0, "CONNACK Maximum QoS 0")
    eq(props.get(0x13), 30, "Server Keep Alive lowered to the profile's 30 s")
    c.send(publish_packet("devices/lq/telemetry", '{"x": 1}', qos=0, version=5))
    c.send(publish_packet("devices/lq/telemetry", '{"x": 2}', qos=1, pid=1, version=5))
    d = c.expect(P.DISCONNECT, timeout=10)
    eq(d.body[0], 0x9B, "a QoS 1 PUBLISH above the profile's maximum: DISCONNECT 0x9B")
    c.close()
    eq(latest(env, "acme", "lq")["x"]["value"], 1, "the QoS 0 message was stored")


@suite.test()
def zz_failed_device_logins_are_throttled(env):
    # (last: it blocks this address for HTTP device logins for a minute)
    import base64
    bad = {"Authorization": "Basic " + base64.b64encode(b"acme/d1:not-the-secret-at-all").decode()}
    path = "/api/v1/tenants/acme/devices/d1/telemetry"
    for i in range(10):
        expect(env.api.post(path, raw='{"x": 1}', ctype="application/json", token=None,
                            headers=bad), 401, f"wrong secret {i + 1}")
    r = env.api.post(path, raw='{"x": 1}', ctype="application/json", token=None, headers=bad)
    expect(r, 429, "the 11th failure within a minute: the address waits")
    check(int(r.header("retry-after") or 0) >= 1, "with Retry-After")


if __name__ == "__main__":
    suite.main(setup)
