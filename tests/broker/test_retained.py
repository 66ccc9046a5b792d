#!/usr/bin/python3
"""Retained messages: store/replace/clear, RETAIN flag, wildcards, Retain Handling,
Retain As Published, $-topics."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from mqtt_testlib import Suite, SubscriptionOptions, check, eq  # noqa: E402

suite = Suite(__file__)


def _store_replace_clear(ctx, version):
    t = ctx.topic("r")
    pub = ctx.paho(version=version)
    live = ctx.paho(version=version)
    live.subscribe(t, qos=1)

    pub.publish(t, "one", qos=1, retain=True)
    s1 = ctx.paho(version=version)
    s1.subscribe(t, qos=1)
    m = s1.expect_msgs(1)[0]
    eq((m.payload, m.retain, m.qos), (b"one", True, 1), "retained message on subscribe")

    pub.publish(t, "two", qos=1, retain=True)
    s2 = ctx.paho(version=version)
    s2.subscribe(t, qos=1)
    got = s2.expect_msgs(1)
    eq((got[0].payload, got[0].retain), (b"two", True), "the replacement only")

    # An established subscription receives retained publishes with RETAIN 0 ([MQTT-3.3.1-9]).
    got = live.expect_msgs(2, settle=0)
    eq([(m.payload, m.retain) for m in got], [(b"one", False), (b"two", False)],
       "live deliveries of retained publishes")

    pub.publish(t, b"", qos=1, retain=True)  # clear
    s3 = ctx.paho(version=version)
    s3.subscribe(t, qos=1)
    s3.expect_none(0.5)
    # The clearing message itself is delivered to existing subscribers (empty payload).
    got = live.wait_msgs(3)
    eq([m.payload for m in got][-1:], [b""], "live delivery of the clearing publish")


@suite.test()
def store_replace_clear_v311(ctx):
    _store_replace_clear(ctx, 4)


@suite.test()
def store_replace_clear_v5(ctx):
    _store_replace_clear(ctx, 5)


@suite.test()
def retained_qos_is_min_of_message_and_subscription(ctx):
    t = ctx.topic("q")
    ctx.paho(version=5).publish(t, "q1", qos=1, retain=True)
    for sq in (0, 1, 2):
        s = ctx.paho(version=5)
        s.subscribe(t, qos=sq)
        m = s.expect_msgs(1, settle=0.1)[0]
        eq((m.qos, m.retain), (min(1, sq), True), f"retained delivery on a QoS {sq} subscription")


@suite.test()
def wildcard_subscriptions_get_all_matching_retained(ctx):
    pub = ctx.paho(version=4)
    topics = ["", "/a", "/b/c", "/b/d", "/b/c/e"]
    base = ctx.uid
    for suffix in topics:
        pub.publish(base + suffix, "v" + suffix, qos=1, retain=True)
    pub.publish(base + "x/a", "other", qos=1, retain=True)  # sibling prefix: never matches
    cases = {
        base + "/#": {"", "/a", "/b/c", "/b/d", "/b/c/e"},
        base + "/+": {"/a"},
        base + "/b/+": {"/b/c", "/b/d"},
        base + "/+/c": {"/b/c"},
        base + "/+/+/e": {"/b/c/e"},
        base + "/b/#": {"/b/c", "/b/d", "/b/c/e"},
        base: {""},
    }
    for version in (4, 5):
        for flt, want in cases.items():
            s = ctx.paho(version=version)
            s.subscribe(flt, qos=1)
            got = s.expect_msgs(len(want), settle=0.25)
            eq(sorted(m.topic for m in got), sorted(base + w for w in want),
               f"v{version} retained topics for {flt}")
            check(all(m.retain for m in got), "RETAIN flag set on all")
            s.stop()


@suite.test()
def retain_handling_0_1_2(ctx):
    t = ctx.topic("rh")
    ctx.paho(version=5).publish(t, "kept", qos=1, retain=True)

    def sub(c, rh):
        return c.subscribe(t, options=SubscriptionOptions(qos=1, retainHandling=rh))

    # 0: on every subscribe, including a re-subscribe.
    c0 = ctx.paho(version=5)
    eq(sub(c0, 0), [1], "SUBACK")
    c0.expect_msgs(1, settle=0.2)
    eq(sub(c0, 0), [1], "SUBACK")
    got = c0.expect_msgs(2, settle=0.3)
    check(all(m.payload == b"kept" and m.retain for m in got), f"rh=0 deliveries: {got}")
    # 1: only when the subscription is new.
    c1 = ctx.paho(version=5)
    sub(c1, 1)
    c1.expect_msgs(1, settle=0.2)
    sub(c1, 1)
    c1.expect_msgs(1, settle=0.4)
    # 2: never.
    c2 = ctx.paho(version=5)
    sub(c2, 2)
    c2.expect_none(0.5)
    # ...but the subscription itself works.
    ctx.paho(version=5).publish(t, "live", qos=1)
    m = c2.expect_msgs(1)[0]
    eq((m.payload, m.retain), (b"live", False), "rh=2 live delivery")


@suite.test()
def retain_as_published(ctx):
    t = ctx.topic("rap")
    rap = ctx.paho(version=5)
    rap.subscribe(t, options=SubscriptionOptions(qos=1, retainAsPublished=True))
    plain = ctx.paho(version=5)
    plain.subscribe(t, options=SubscriptionOptions(qos=1, retainAsPublished=False))
    pub = ctx.paho(version=5)
    pub.publish(t, "retained", qos=1, retain=True)
    pub.publish(t, "normal", qos=1, retain=False)
    got = rap.expect_msgs(2)
    eq([(m.payload, m.retain) for m in got], [(b"retained", True), (b"normal", False)],
       "RETAIN flags with Retain As Published")
    got = plain.expect_msgs(2)
    eq([(m.payload, m.retain) for m in got], [(b"retained", False), (b"normal", False)],
       "RETAIN flags without Retain As Published")
    pub.publish(t, b"", qos=1, retain=True)


@suite.test()
def dollar_topics_not_matched_by_wildcards(ctx):
    dt = "$" + ctx.uid + "/x"
    pub = ctx.paho(version=5)
    pub.publish(dt, "dollar-retained", qos=1, retain=True)
    for version in (4, 5):
        hash_sub = ctx.paho(version=version)
        hash_sub.subscribe("#", qos=1)
        plus_sub = ctx.paho(version=version)
        plus_sub.subscribe("+/x", qos=1)
        direct = ctx.paho(version=version)
        direct.subscribe("$" + ctx.uid + "/#", qos=1)
        m = direct.expect_msgs(1)[0]
        eq((m.topic, m.payload, m.retain), (dt, b"dollar-retained", True),
           "explicit $-filter gets the retained $-message")
        pub.publish(dt, "dollar-live", qos=1)
        marker = ctx.topic(f"marker{version}")
        pub.publish(marker, "m", qos=1)
        hash_sub.wait_msgs(1, topic=marker)
        eq(len(direct.wait_msgs(2)), 2, "explicit $-filter gets the live $-message")
        # '#' also receives the other retained messages on this server, but never $-topics.
        leaked = [x for x in hash_sub.msgs if x.topic.startswith("$")]
        eq(leaked, [], f"v{version} messages on $-topics delivered to '#'")
        check(any(x.topic == marker for x in hash_sub.msgs), "'#' works at all")
        eq([x.topic for x in plus_sub.msgs if x.topic.startswith("$")], [],
           "messages on $-topics delivered to '+/x'")
    pub.publish(dt, b"", qos=1, retain=True)


@suite.test()
def retained_for_every_filter_of_a_large_subscribe(ctx):
    """One SUBSCRIBE with 70 filters gets the retained message of each of them."""
    pub = ctx.raw(version=5)
    n = 70
    for i in range(n):
        pub.publish(ctx.topic("many", str(i)), f"r{i}", qos=1, retain=True)
    for version in (4, 5):
        c = ctx.raw(version=version)
        codes = c.subscribe([(ctx.topic("many", str(i)), 1) for i in range(n)])
        eq(codes, [1] * n, "SUBACK codes")
        got = [p.payload.decode() for p in c.collect_publishes(quiet=0.5)]
        eq(sorted(got), sorted(f"r{i}" for i in range(n)),
           f"v{version} retained messages for a 70-filter SUBSCRIBE")


@suite.test()
def mosquitto_retained(ctx):
    t = ctx.topic("mosq")
    rc, out = ctx.mosq_pub(t, "stored", qos=1, retain=True, version=4)
    eq(rc, 0, f"mosquitto_pub ({out})")
    s = ctx.mosq_sub([t], qos=1, version=5, count=1)
    eq(s.wait_exit(5), 0, "mosquitto_sub exit status")
    eq(s.msgs, [(t, 1, 1, "stored")], "mosquitto_sub got the retained message with RETAIN 1")
    rc, out = ctx.mosq_pub(t, "", qos=1, retain=True, version=5)  # empty payload clears
    eq(rc, 0, f"mosquitto_pub ({out})")
    c = ctx.paho(version=4)
    c.subscribe(t, qos=1)
    c.expect_none(0.4)

if __name__ == "__main__":
    suite.main()
