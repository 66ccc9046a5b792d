#!/usr/bin/python3
"""Device profile ACLs enforced by the broker, end to end: a profile's "acl" rules
(src/api/h_profiles.c), read at CONNECT by the registry auth backend and compiled
(src/registry/auth_acl.c), decide what a device may publish and subscribe to.

A profile allowing publish on devices/{device}/telemetry and subscribe on
devices/{device}/commands/# and broadcast/#: the device publishes telemetry but not
devices/<device>/other (MQTT 5: PUBACK 0x87; MQTT 3.1.1 has no refusal in PUBACK,
so the broker acknowledges and drops the message — what it does with the default
ACL too), subscribes to devices/<device>/commands/+ (covered by a rule) but not
devices/<device>/# (not covered: SUBACK 0x87, 3.1.1: 0x80), and receives what a
global client publishes to $T/<tenant>/broadcast/...; a device without a profile
keeps the default (both ways on devices/<device>/#).  A profile change applies at
the device's next CONNECT.  A persistent session restored at startup has no rules
until its device reconnects: its offline deliveries fall back to the default rule,
never to "allow everything".

Usage: test_profile_acl.py --drover BINARY [-k NAME]
"""
import contextlib
import os
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "broker"))
from apilib import BASE_SETTINGS, Api, Suite, check, eq, expect  # noqa: E402
from drover import Drover  # noqa: E402
from mqtt_testlib import P, PahoClient, RawClient  # noqa: E402

suite = Suite("test_profile_acl")

NOT_AUTHORISED_5, FAILURE_3 = 0x87, 0x80

RULES = [{"access": "publish", "topic": "devices/{device}/telemetry"},
         {"access": "subscribe", "topic": "devices/{device}/commands/#"},
         {"access": "subscribe", "topic": "broadcast/#"}]


class Env:
    def __init__(self, d, api):
        self.d = d
        self.api = api
        self.n = 0

    def alive(self):
        return self.d.alive()

    def tenant(self):
        self.n += 1
        tid = f"pacl-{self.n}"
        expect(self.api.post("/api/v1/tenants", {"id": tid, "name": tid}), 201, "create tenant")
        r = expect(self.api.post(f"/api/v1/tenants/{tid}/tokens",
                                 {"name": "admin", "role": "tenant_admin"}), 201, "admin token")
        return tid, self.api.as_token(r.json["token"])

    def profile(self, admin, tid, pid, acl, telemetry="devices/{device}/telemetry"):
        expect(admin.post(f"/api/v1/tenants/{tid}/profiles",
                          {"id": pid, "name": pid, "acl": acl, "telemetry_topic": telemetry}),
               201, f"profile {pid}")

    def device(self, admin, tid, dev, profile=None):
        body = {"id": dev}
        if profile:
            body["profile"] = profile
        expect(admin.post(f"/api/v1/tenants/{tid}/devices", body), 201, f"device {dev}")
        expect(admin.post(f"/api/v1/tenants/{tid}/devices/{dev}/credentials",
                          {"kind": "secret", "secret": self.secret(dev)}), 201, f"secret of {dev}")

    @staticmethod
    def secret(dev):
        return f"{dev}-secret-0123456789"

    def raw(self, tid, dev, version=5, client_id=None, **kw):
        c = RawClient(self.d.port, version)
        c.connect(client_id or dev, username=f"{tid}/{dev}", password=self.secret(dev).encode(),
                  expect_rc=0, **kw)
        return c

    def paho(self, tid, dev, version=5):
        c = PahoClient(self.d.port, dev, version)
        c.connect(username=f"{tid}/{dev}", password=self.secret(dev))
        return c

    def global_client(self, name, version=5):
        """An anonymous platform client (loopback): the global namespace."""
        c = PahoClient(self.d.port, f"{name}-{time.monotonic_ns()}", version)
        c.connect()
        return c


@contextlib.contextmanager
def setup(binary):
    with Drover(binary, settings=dict(BASE_SETTINGS), http_port=True) as d:
        env = Env(d, Api(d.http_port, d.admin_token()))
        yield env
        log = d.read_log()
        check("AddressSanitizer" not in log and "runtime error" not in log,
              "sanitizer report in the server log")


def received(c, quiet=0.4):
    early = [p for p in (c.other or []) if p.type == P.PUBLISH]
    for p in early:
        c.ack(p)
    c.other = []
    return early + c.collect_publishes(quiet=quiet)


def suback(c, f):
    return c.subscribe([(f, 1)])[0]


# -- the rules --------------------------------------------------------------------------------

@suite.test()
def profile_rules_mqtt5(env):
    tid, admin = env.tenant()
    env.profile(admin, tid, "cmd", RULES)
    env.device(admin, tid, "d1", "cmd")
    g = env.global_client("ops")
    c = env.raw(tid, "d1", 5)
    try:
        eq(g.subscribe(f"$T/{tid}/devices/#", qos=1), [1], "the platform watches the tenant")
        check(c.publish("devices/d1/telemetry", b'{"v": 21.5}', qos=1).reason in (0, 0x10),
              "PUBACK for the telemetry topic")
        for t in ("devices/d1/other", "devices/d1/telemetry/x", "devices/d1/commands/x",
                  "broadcast/x", "devices/d2/telemetry"):
            eq(c.publish(t, b"x", qos=1).reason, NOT_AUTHORISED_5, f"PUBACK for {t!r}")
        got = g.expect_msgs(1, topic=None)
        eq([m.topic for m in got], [f"$T/{tid}/devices/d1/telemetry"], "only telemetry got out")

        for f, want in (("devices/d1/commands/+", 1), ("devices/d1/commands/#", 1),
                        ("devices/d1/commands/reboot", 1), ("broadcast/#", 1),
                        ("broadcast/+/x", 1), ("devices/d1/#", NOT_AUTHORISED_5),
                        ("devices/d1/telemetry", NOT_AUTHORISED_5),
                        ("devices/d1/+", NOT_AUTHORISED_5), ("devices/+/commands/+", NOT_AUTHORISED_5),
                        ("devices/d2/commands/#", NOT_AUTHORISED_5), ("#", NOT_AUTHORISED_5),
                        ("$SYS/#", NOT_AUTHORISED_5)):
            eq(suback(c, f), want, f"SUBACK for {f!r}")

        g.publish(f"$T/{tid}/broadcast/all", b"hello", qos=1)
        g.publish(f"$T/{tid}/devices/d1/commands/reboot", b"now", qos=1)
        g.publish(f"$T/{tid}/devices/d2/commands/reboot", b"not d1", qos=1)
        got = sorted((p.topic, p.payload) for p in received(c))
        # commands/reboot matches three of its subscriptions: one copy each in MQTT 5
        # overlapping-subscription terms is the broker's business; ask for the set.
        eq(sorted(set(got)), [("broadcast/all", b"hello"), ("devices/d1/commands/reboot", b"now")],
           "what d1 received")
    finally:
        c.close()
        g.c.disconnect()


@suite.test()
def profile_rules_mqtt311_paho(env):
    tid, admin = env.tenant()
    env.profile(admin, tid, "cmd", RULES)
    env.device(admin, tid, "d3", "cmd")
    g = env.global_client("ops3", version=4)
    c = env.paho(tid, "d3", version=4)
    try:
        eq(g.subscribe(f"$T/{tid}/devices/#", qos=1), [1], "the platform watches the tenant")
        eq(c.subscribe("devices/d3/commands/+", qos=1), [1], "SUBACK, covered")
        eq(c.subscribe("devices/d3/#", qos=1), [FAILURE_3], "SUBACK, not covered")
        eq(c.subscribe("broadcast/#", qos=1), [1], "SUBACK, broadcasts")
        # 3.1.1 cannot refuse in PUBACK: acknowledged (the publish call returns once the
        # PUBACK is in) and dropped, as with the default ACL.
        c.publish("devices/d3/other", b"dropped", qos=1)
        c.publish("devices/d3/telemetry", b'{"kept": true}', qos=1)
        got = g.expect_msgs(1)
        eq([(m.topic, m.payload) for m in got], [(f"$T/{tid}/devices/d3/telemetry", b'{"kept": true}')],
           "only telemetry got out")
        g.publish(f"$T/{tid}/broadcast/fw", b"v2", qos=1)
        g.publish(f"$T/{tid}/devices/d3/commands/ping", b"p", qos=1)
        got = c.expect_msgs(2)
        eq(sorted((m.topic, m.payload) for m in got),
           [("broadcast/fw", b"v2"), ("devices/d3/commands/ping", b"p")], "what d3 received")
    finally:
        c.c.disconnect()
        g.c.disconnect()


@suite.test()
def device_without_profile_keeps_the_default(env):
    tid, admin = env.tenant()
    env.profile(admin, tid, "cmd", RULES)
    env.device(admin, tid, "withp", "cmd")
    env.device(admin, tid, "plain")
    c = env.raw(tid, "plain", 5)
    try:
        eq(suback(c, "devices/plain/#"), 1, "own subtree")
        eq(suback(c, "broadcast/#"), NOT_AUTHORISED_5, "no broadcasts without a rule")
        eq(suback(c, "devices/withp/#"), NOT_AUTHORISED_5, "another device")
        eq(c.publish("devices/plain/other", b"x", qos=1).reason, 0, "publish in own subtree")
        eq(c.publish("devices/withp/telemetry", b"x", qos=1).reason, NOT_AUTHORISED_5,
           "publish as another device")
    finally:
        c.close()


@suite.test()
def tenant_placeholder(env):
    tid, admin = env.tenant()
    env.profile(admin, tid, "tp", [{"access": "both", "topic": "devices/{device}/{tenant}/#"}],
                telemetry="devices/{device}/{tenant}/up")
    env.device(admin, tid, "d4", "tp")
    c = env.raw(tid, "d4", 5)
    try:
        eq(suback(c, f"devices/d4/{tid}/#"), 1, "{tenant} is the tenant id")
        eq(suback(c, "devices/d4/other/#"), NOT_AUTHORISED_5, "another level")
        eq(c.publish(f"devices/d4/{tid}/up", b'{"n": 1}', qos=1).reason, 0, "publish under the tenant")
        eq(c.publish("devices/d4/up", b"1", qos=1).reason, NOT_AUTHORISED_5, "outside the rule")
    finally:
        c.close()


@suite.test()
def profile_change_applies_at_next_connect(env):
    tid, admin = env.tenant()
    env.profile(admin, tid, "cmd", RULES)
    env.device(admin, tid, "d5", "cmd")
    env.device(admin, tid, "d6", "cmd")
    c = env.raw(tid, "d5", 5)
    try:
        eq(c.publish("devices/d5/other", b"x", qos=1).reason, NOT_AUTHORISED_5, "before")
        r = expect(admin.patch(f"/api/v1/tenants/{tid}/profiles/cmd",
                               {"acl": RULES + [{"access": "publish",
                                                 "topic": "devices/{device}/other"}]},
                               ctype="application/merge-patch+json"), 200, "widen the profile")
        check(r.json["version"] > 1, "profile version raised")
        eq(c.publish("devices/d5/other", b"x", qos=1).reason, NOT_AUTHORISED_5,
           "a live connection keeps the rules of its CONNECT")
    finally:
        c.close()
    c = env.raw(tid, "d5", 5)
    d6 = env.raw(tid, "d6", 4)
    try:
        check(c.publish("devices/d5/other", b"x", qos=1).reason in (0, 0x10),
              "allowed after reconnecting")
        eq(suback(d6, "devices/d6/#"), FAILURE_3, "d6 (3.1.1): still not covered")
    finally:
        c.close()
        d6.close()
    # Narrow it: no broadcasts any more.
    expect(admin.patch(f"/api/v1/tenants/{tid}/profiles/cmd", {"acl": RULES[:2]},
                       ctype="application/merge-patch+json"), 200, "narrow the profile")
    c = env.raw(tid, "d5", 5)
    try:
        eq(suback(c, "broadcast/#"), NOT_AUTHORISED_5, "broadcasts gone")
        eq(suback(c, "devices/d5/commands/+"), 1, "commands stay")
    finally:
        c.close()
    # The device leaves the profile: the default again.
    expect(admin.patch(f"/api/v1/tenants/{tid}/devices/d5", {"profile": None},
                       ctype="application/merge-patch+json"), 200, "drop the device's profile")
    c = env.raw(tid, "d5", 5)
    try:
        eq(suback(c, "devices/d5/#"), 1, "the default own subtree")
    finally:
        c.close()


@suite.test()
def offline_session_keeps_its_rules(env):
    tid, admin = env.tenant()
    env.profile(admin, tid, "cmd", RULES)
    env.device(admin, tid, "d7", "cmd")
    c = env.raw(tid, "d7", 4, clean=False)
    eq(suback(c, "broadcast/#"), 1, "subscribe to broadcasts")
    eq(suback(c, "devices/d7/commands/#"), 1, "subscribe to commands")
    c.disconnect()
    c.close()
    g = env.global_client("ops7")
    try:
        g.publish(f"$T/{tid}/broadcast/while-away", b"b1", qos=1)
        g.publish(f"$T/{tid}/devices/d7/commands/while-away", b"c1", qos=1)
    finally:
        g.c.disconnect()
    c = env.raw(tid, "d7", 4, clean=False)
    try:
        got = sorted((p.topic, p.payload) for p in received(c))
        eq(got, [("broadcast/while-away", b"b1"), ("devices/d7/commands/while-away", b"c1")],
           "queued while offline, under the profile's rules")
        c.disconnect()
    finally:
        c.close()


@suite.test()
def restored_session_falls_back_to_the_default(env):
    tid, admin = env.tenant()
    env.profile(admin, tid, "cmd", RULES)
    env.device(admin, tid, "d8", "cmd")
    c = env.raw(tid, "d8", 4, clean=False)
    eq(suback(c, "broadcast/#"), 1, "subscribe to broadcasts")
    eq(suback(c, "devices/d8/commands/#"), 1, "subscribe to commands")
    c.disconnect()
    c.close()
    env.d.restart()
    env.api = Api(env.d.http_port, env.d.admin_token())
    g = env.global_client("ops8")
    try:
        # The restored session has no rules until d8 connects: the default decides, so
        # the broadcast is not queued and the command is.
        g.publish(f"$T/{tid}/broadcast/after-restart", b"b2", qos=1)
        g.publish(f"$T/{tid}/devices/d8/commands/after-restart", b"c2", qos=1)
    finally:
        g.c.disconnect()
    c = env.raw(tid, "d8", 4, clean=False)
    try:
        got = sorted((p.topic, p.payload) for p in received(c))
        eq(got, [("devices/d8/commands/after-restart", b"c2")],
           "the default rule, never everything, while the rules were unknown")
        g = env.global_client("ops8b")
        try:
            g.publish(f"$T/{tid}/broadcast/reconnected", b"b3", qos=1)
        finally:
            g.c.disconnect()
        eq([(p.topic, p.payload) for p in received(c)], [("broadcast/reconnected", b"b3")],
           "the profile's rules again once connected")
        c.disconnect()
    finally:
        c.close()


if __name__ == "__main__":
    suite.main(setup)
