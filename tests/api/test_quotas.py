#!/usr/bin/python3
"""Per-tenant quotas the broker enforces (src/broker/quota.c), set through the REST API.

- quotas.connections: the next device of the tenant is refused with CONNACK 0x97
  quota exceeded (MQTT 3.1.1: 3 server unavailable); a device that reconnects
  (takes over its own session) is not counted twice; a freed slot can be used again.
- quotas.messages_per_second: a device publishing faster is throttled, not
  refused: every QoS 1 message is acknowledged and delivered (none lost) and
  /metrics counts the throttling for that tenant only.
- A suspended tenant's devices cannot connect (0x87 / 5).
- quotas.devices: the REST API refuses the next device (403 quota-exceeded).

No timing is asserted: throttling is observed through its counter.

Usage: test_quotas.py --drover BINARY [-k NAME]
"""
import contextlib
import os
import re
import sys

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "broker"))
from apilib import Suite, check, eq, expect, expect_problem, start_server, wait_until  # noqa: E402
from mqtt_testlib import PahoClient  # noqa: E402

suite = Suite("test_quotas")
SECRET = "quota-test-secret-0123456789"
QUOTA_EXCEEDED_5, QUOTA_EXCEEDED_3 = 0x97, 3
NOT_AUTHORISED_5, NOT_AUTHORISED_3 = 0x87, 5


class Env:
    def __init__(self, d, api):
        self.d, self.api = d, api
        self.clients = []

    def alive(self):
        return self.d.proc.poll() is None

    def tenant(self, tid, quotas):
        expect(self.api.post("/api/v1/tenants", {"id": tid, "name": tid, "quotas": quotas}),
               201, "create tenant")

    def device(self, tid, dev):
        base = f"/api/v1/tenants/{tid}/devices"
        expect(self.api.post(base, {"id": dev}), 201, "create device")
        expect(self.api.post(f"{base}/{dev}/credentials", {"kind": "secret", "secret": SECRET}),
               201, "add secret")

    def client(self, tid, dev, version=5, client_id=None, expect_rc=0):
        c = PahoClient(self.d.port, client_id or f"{tid}-{dev}", version=version)
        self.clients.append(c)
        c.connect(username=f"{tid}/{dev}", password=SECRET, expect_rc=expect_rc)
        return c

    def metric(self, name, tenant):
        r = self.api.get("/metrics", token=None)
        expect(r, 200, "metrics")
        m = re.search(r'^%s\{tenant="%s"\} (\d+)$' % (re.escape(name), re.escape(tenant)),
                      r.text, re.M)
        return int(m.group(1)) if m else None

    def close_all(self):
        for c in self.clients:
            with contextlib.suppress(Exception):
                c.disconnect()
        self.clients = []


@contextlib.contextmanager
def setup(binary):
    with start_server(binary) as (d, api):
        env = Env(d, api)
        try:
            yield env
        finally:
            env.close_all()


@suite.test()
def connection_quota_refuses_the_next_device(env):
    env.tenant("q-conn", {"connections": 2})
    for dev in ("d1", "d2", "d3"):
        env.device("q-conn", dev)
    a = env.client("q-conn", "d1")
    env.client("q-conn", "d2")
    env.client("q-conn", "d3", expect_rc=QUOTA_EXCEEDED_5)
    env.client("q-conn", "d3", version=4, expect_rc=QUOTA_EXCEEDED_3)
    # d1 reconnecting takes over its own session: not a third connection.
    env.client("q-conn", "d1", client_id="q-conn-d1")
    wait_until(lambda: not a.connected, 5, "the old d1 connection is taken over")
    eq(env.metric("drover_tenant_connections", "q-conn"), 2, "connections counted")
    check((env.metric("drover_tenant_connections_refused_total", "q-conn") or 0) >= 2,
          "refusals counted")
    # A slot freed is a slot usable.
    env.close_all()
    wait_until(lambda: env.metric("drover_tenant_connections", "q-conn") == 0, 5,
               "the tenant's connections are released")
    env.client("q-conn", "d3")


@suite.test()
def message_rate_quota_throttles_without_loss(env):
    env.tenant("q-rate", {"messages_per_second": 20})
    env.tenant("q-free", {})
    env.device("q-rate", "pub")
    env.device("q-free", "pub")
    # A global client watches both tenants' topics.
    watcher = PahoClient(env.d.port, "quota-watcher", version=5)
    env.clients.append(watcher)
    watcher.connect()
    watcher.subscribe("$T/+/devices/+/telemetry", qos=1)
    limited = env.client("q-rate", "pub")
    free = env.client("q-free", "pub")
    n = 60
    for i in range(n):
        limited.publish("devices/pub/telemetry", f'{{"r": {i}}}', qos=1, wait=False)
        free.publish("devices/pub/telemetry", f'{{"f": {i}}}', qos=1, wait=False)
    got = watcher.wait_msgs(2 * n, timeout=30)
    limited_msgs = [m for m in got if m.topic == "$T/q-rate/devices/pub/telemetry"]
    free_msgs = [m for m in got if m.topic == "$T/q-free/devices/pub/telemetry"]
    eq(len(limited_msgs), n, "every throttled message delivered")
    eq(len(free_msgs), n, "the unlimited tenant's messages delivered")
    eq([m.payload.decode() for m in limited_msgs], [f'{{"r": {i}}}' for i in range(n)],
       "throttled messages in order")
    wait_until(lambda: len(limited.published) == n, 30, "every QoS 1 message acknowledged")
    check((env.metric("drover_tenant_publish_throttled_total", "q-rate") or 0) > 0,
          "the limited tenant was throttled")
    eq(env.metric("drover_tenant_publish_throttled_total", "q-free"), 0,
       "the unlimited tenant was not")


@suite.test()
def suspended_tenant_devices_cannot_connect(env):
    env.tenant("q-susp", {})
    env.device("q-susp", "d1")
    env.client("q-susp", "d1")
    expect(env.api.patch("/api/v1/tenants/q-susp", {"status": "suspended"}), 200, "suspend")
    env.client("q-susp", "d1", client_id="q-susp-d1-again", expect_rc=NOT_AUTHORISED_5)
    env.client("q-susp", "d1", client_id="q-susp-d1-v3", version=4, expect_rc=NOT_AUTHORISED_3)
    expect(env.api.patch("/api/v1/tenants/q-susp", {"status": "active"}), 200, "reactivate")
    env.client("q-susp", "d1", client_id="q-susp-d1-back")


@suite.test()
def device_quota_is_a_clear_api_error(env):
    env.tenant("q-dev", {"devices": 1})
    env.device("q-dev", "only")
    r = env.api.post("/api/v1/tenants/q-dev/devices", {"id": "second"})
    expect_problem(r, 403, "second device over the quota", "quota-exceeded")


if __name__ == "__main__":
    suite.main(setup, "per-tenant quotas")
