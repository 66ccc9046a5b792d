#!/usr/bin/python3
"""Subscriptions: wildcards, shared subscriptions, No Local, Subscription Identifiers,
overlapping subscriptions, UNSUBSCRIBE, invalid filters."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from mqtt_testlib import (P, Suite, SubscriptionOptions, check, eq, sub_opts,  # noqa: E402
                          subscribe_packet, wait_until)

suite = Suite(__file__)


def _wildcards(ctx, version):
    b = ctx.uid
    published = ["/a/c", "/b/c", "//c", "/a", "/a/b", "/a/b/c", "/a/", "/", "/x/y/z", "x", "/ab",
                 "/ab/c"]
    cases = {
        b + "/+/c": ["/a/c", "/b/c", "//c", "/ab/c"],
        b + "/a/#": ["/a", "/a/c", "/a/b", "/a/b/c", "/a/"],  # "a/#" matches "a" itself
        b + "/+": ["/a", "/", "/ab"],
        b + "/#": [p for p in published if p != "x"],
        "+/a/+": ["/a/c", "/a/b", "/a/"],
        b + "/a/+/c": ["/a/b/c"],
        b + "/a": ["/a"],
    }
    subs = {}
    for flt in cases:
        s = ctx.paho(version=version)
        eq(s.subscribe(flt, qos=1), [1], f"SUBACK for {flt}")
        subs[flt] = s
    pub = ctx.paho(version=version)
    for suffix in published:
        pub.publish(b + suffix, suffix, qos=1)
    for flt, want in cases.items():
        got = subs[flt].expect_msgs(len(want), settle=0.2)
        eq(sorted(m.topic for m in got), sorted(b + w for w in want),
           f"v{version} topics matched by {flt}")


@suite.test()
def wildcards_v311(ctx):
    _wildcards(ctx, 4)


@suite.test()
def wildcards_v5(ctx):
    _wildcards(ctx, 5)


def _members(ctx, version, n):
    ms = []
    for _ in range(n):
        c = ctx.paho(version=version)
        eq(c.subscribe("$share/g/" + ctx.topic("s"), qos=1), [1], "SUBACK for $share")
        ms.append(c)
    return ms


@suite.test()
def shared_subscription_spreads(ctx):
    for version in (5, 4):
        t = ctx.topic("s")
        a, b = _members(ctx, version, 2)
        plain = ctx.paho(version=5)
        plain.subscribe(t, qos=1)
        pub = ctx.paho(version=5)
        n = 20
        for i in range(n):
            pub.publish(t, str(i), qos=1)
        got = plain.expect_msgs(n, timeout=5)
        eq(sorted(int(m.payload) for m in got), list(range(n)),
           "a non-shared subscriber receives every message")
        wait_until(lambda: len(a.msgs) + len(b.msgs) >= n, 5)
        time.sleep(0.3)
        pa = [int(m.payload) for m in a.msgs]
        pb = [int(m.payload) for m in b.msgs]
        check(pa and pb, f"v{version}: both members receive some (a={pa}, b={pb})")
        eq(sorted(pa + pb), list(range(n)), f"v{version}: each message once across the group")
        for c in (a, b, plain):
            c.disconnect()


@suite.test()
def shared_subscription_failover(ctx):
    t = ctx.topic("s")
    a, b = _members(ctx, 5, 2)
    b.disconnect()  # clean session: its membership ends
    pub = ctx.paho(version=5)
    for i in range(10):
        pub.publish(t, str(i), qos=1)
    got = a.expect_msgs(10, timeout=5, settle=0.3)
    eq(sorted(int(m.payload) for m in got), list(range(10)), "all messages to the remaining member")


@suite.test()
def shared_subscription_failover_persistent_member(ctx):
    """A member whose session outlives its connection is skipped while it is offline."""
    t = ctx.topic("s")
    a = ctx.paho(version=5)
    a.subscribe("$share/g/" + t, qos=1)
    b = ctx.paho(ctx.uid + "-b", version=5, session_expiry=60)
    b.subscribe("$share/g/" + t, qos=1)
    b.drop()
    time.sleep(0.2)
    pub = ctx.paho(version=5)
    for i in range(10):
        pub.publish(t, str(i), qos=1)
    got = a.expect_msgs(10, timeout=5, settle=0.3)
    eq(sorted(int(m.payload) for m in got), list(range(10)), "all messages to the online member")
    b2 = ctx.paho(ctx.uid + "-b", version=5, clean_start=False, session_expiry=0)
    b2.expect_none(0.4)


@suite.test()
def shared_subscription_unacked_rerouted_when_member_leaves(ctx):
    """Messages sent to a member that leaves (its session ends) without acknowledging them
    go to another member (§4.8.2, docs/broker.md)."""
    t = ctx.topic("rr")
    a = ctx.raw(version=5)
    b = ctx.raw(version=5)
    for m in (a, b):
        eq(m.subscribe([("$share/g/" + t, 1)]), [1], "SUBACK")
    pub = ctx.raw(version=5)
    n = 6
    for i in range(n):
        pub.publish(t, str(i), qos=1)
    got_a = [p for p in a.recv_all(0.5) if p.type == P.PUBLISH]
    got_b = [p for p in b.recv_all(0.2) if p.type == P.PUBLISH]
    check(got_a and got_b, f"both members got some: a={len(got_a)} b={len(got_b)}")
    eq(len(got_a) + len(got_b), n, "messages across the group")
    for p in got_a:
        a.ack(p)
    b.disconnect()  # never acknowledged; clean session ends now
    more = [p for p in a.recv_all(1.0) if p.type == P.PUBLISH]
    for p in more:
        a.ack(p)
    eq(sorted(int(p.payload) for p in got_a + more), list(range(n)),
       "the remaining member ends up with every message once")


@suite.test()
def shared_subscription_no_retained(ctx):
    t = ctx.topic("s")
    ctx.paho(version=5).publish(t, "retained", qos=1, retain=True)
    a, = _members(ctx, 5, 1)
    a.expect_none(0.5)  # retained messages are not sent for shared subscriptions (§4.8.2)
    ctx.paho(version=5).publish(t, b"", qos=1, retain=True)


@suite.test()
def no_local(ctx):
    t = ctx.topic("nl")
    me = ctx.paho(version=5)
    me.subscribe(t, options=SubscriptionOptions(qos=1, noLocal=True))
    other = ctx.paho(version=5)
    me.publish(t, "mine", qos=1)
    other.publish(t, "theirs", qos=1)
    got = me.expect_msgs(1, settle=0.4)
    eq(got[0].payload, b"theirs", "No Local subscriber receives only others' messages")
    # Control: without No Local the own message comes back.
    t2 = ctx.topic("nl2")
    me.subscribe(t2, options=SubscriptionOptions(qos=1, noLocal=False))
    me.publish(t2, "mine2", qos=1)
    got = me.wait_msgs(1, topic=t2)
    eq([m.payload for m in got], [b"mine2"], "own message without No Local")


@suite.test()
def no_local_on_shared_subscription_is_protocol_error(ctx):
    r = ctx.raw(version=5)
    r.send(subscribe_packet(1, [("$share/g/x", sub_opts(1, no_local=True))], 5))
    closed, pkts = r.wait_closed(2)
    check(closed, "connection not closed after No Local on a shared subscription")
    eq([(p.name, p.reason) for p in pkts], [("DISCONNECT", 0x82)], "packets before close")


@suite.test()
def subscription_identifiers(ctx):
    t = ctx.topic("id")
    c = ctx.paho(version=5)
    c.subscribe(t + "/a", qos=1, sub_id=7)
    c.subscribe(t + "/b", qos=1)
    pub = ctx.paho(version=5)
    pub.publish(t + "/a", "with-id", qos=1)
    pub.publish(t + "/b", "without-id", qos=1)
    m = c.wait_msgs(1, topic=t + "/a")
    check(m, "message on the subscription with an identifier")
    eq(m[0].prop("SubscriptionIdentifier"), [7], "Subscription Identifier delivered")
    m = c.wait_msgs(1, topic=t + "/b")
    check(m, "message on the subscription without an identifier")
    eq(m[0].prop("SubscriptionIdentifier"), None, "no Subscription Identifier")
    # Retained messages sent on subscribe carry it too.
    pub.publish(t + "/r", "ret", qos=1, retain=True)
    c.subscribe(t + "/r", qos=1, sub_id=268435455)
    m = c.wait_msgs(1, topic=t + "/r")
    check(m, "retained message on subscribe")
    eq(m[0].prop("SubscriptionIdentifier"), [268435455], "identifier on a retained delivery")
    pub.publish(t + "/r", b"", qos=1, retain=True)


@suite.test()
def overlapping_subscriptions_once_at_highest_qos(ctx):
    t = ctx.topic("o")
    c = ctx.paho(version=5)
    c.subscribe(t + "/a/#", qos=1, sub_id=1)
    c.subscribe(t + "/a/+", qos=2, sub_id=2)
    c.subscribe(t + "/+/b", qos=0, sub_id=3)
    pub = ctx.paho(version=5)
    pub.publish(t + "/a/b", "x", qos=2)
    got = c.expect_msgs(1, settle=0.4)
    eq(got[0].qos, 2, "QoS of the overlapping delivery")
    eq(sorted(got[0].prop("SubscriptionIdentifier") or []), [1, 2, 3],
       "all matching Subscription Identifiers")
    c.clear()
    pub.publish(t + "/a/b", "y", qos=1)
    got = c.expect_msgs(1, settle=0.4)
    eq(got[0].qos, 1, "QoS capped by the publish")


@suite.test()
def overlapping_subscriptions_many_identifiers(ctx):
    """Every matching Subscription Identifier is sent ([MQTT-3.3.4-4]), not just the first
    few."""
    t = ctx.topic("many")
    c = ctx.paho(version=5)
    filters = [t + "/#", t + "/+/+/+", t + "/a/#", t + "/a/+/#", t + "/a/b/#", t + "/+/b/c",
               t + "/a/b/c"]
    for i, f in enumerate(filters, start=1):
        c.subscribe(f, qos=1, sub_id=i)
    ctx.paho(version=5).publish(t + "/a/b/c", "x", qos=1)
    got = c.expect_msgs(1, settle=0.3)
    eq(sorted(got[0].prop("SubscriptionIdentifier") or []), list(range(1, len(filters) + 1)),
       f"Subscription Identifiers of {len(filters)} overlapping subscriptions")


@suite.test()
def unsubscribe_stops_delivery(ctx):
    for version in (4, 5):
        t = ctx.topic(f"u{version}")
        c = ctx.paho(version=version)
        c.subscribe(t, qos=1)
        pub = ctx.paho(version=5)
        pub.publish(t, "before", qos=1)
        c.expect_msgs(1)
        c.unsubscribe(t)
        pub.publish(t, "after", qos=1)
        got = c.expect_msgs(1, settle=0.5)
        eq([m.payload for m in got], [b"before"], f"v{version}: deliveries after UNSUBSCRIBE")
    # 5.0 UNSUBACK reason codes: 0x00 for a subscription, 0x11 for none.
    r = ctx.raw(version=5)
    r.subscribe([(ctx.topic("x"), 1)])
    eq(r.unsubscribe([ctx.topic("x"), ctx.topic("never")]), [0x00, 0x11], "UNSUBACK codes")


@suite.test()
def invalid_filters_refused_in_suback(ctx):
    bad = ["a/#/b", "a+/b", "a/b#", "#/a"]
    for version, code in ((5, 0x8F), (4, 0x80)):
        r = ctx.raw(version=version)
        entries = [(ctx.topic("ok"), 1)] + [(f, 1) for f in bad[:4]]
        codes = r.subscribe(entries)
        eq(codes, [1] + [code] * 4, f"v{version} SUBACK codes")
        r.ping()  # still connected
        # The valid one works.
        ctx.paho(version=5).publish(ctx.topic("ok"), "v", qos=1)
        p = r.expect(P.PUBLISH)
        eq(p.payload, b"v", "delivery on the valid filter")
        r.ack(p)


@suite.test()
def mosquitto_sub_wildcard(ctx):
    s = ctx.mosq_sub([ctx.topic("+", "t"), ctx.topic("z", "#")], qos=1, version=5, count=3)
    s.wait_subscribed()
    for suffix in ("a/t", "b/t", "z", "a/u"):
        rc, out = ctx.mosq_pub(ctx.topic(*suffix.split("/")), suffix, qos=1)
        eq(rc, 0, out)
    eq(s.wait_exit(5), 0, f"mosquitto_sub exit: {s.all_lines}")
    eq(sorted(m[3] for m in s.msgs), ["a/t", "b/t", "z"], "messages matched")


if __name__ == "__main__":
    suite.main()
