#!/usr/bin/python3
"""QoS 0/1/2 delivery, QoS downgrade, exactly-once, PUBACK 0x10, Receive Maximum."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from mqtt_testlib import (P, Suite, check, eq, ack_packet, publish_packet)  # noqa: E402

suite = Suite(__file__)


def _matrix(ctx, pub_v, sub_v):
    sub = ctx.paho(version=sub_v)
    t = ctx.topic("m")
    eq(sub.subscribe(t, qos=2), [2], "SUBACK granted QoS")
    pub = ctx.paho(version=pub_v)
    for q in (0, 1, 2):
        pub.publish(t, f"payload-q{q}".encode(), qos=q)
        got = sub.wait_msgs(q + 1)
        check(len(got) == q + 1, f"QoS {q} message not delivered (have {got})")
        m = got[q]
        eq(m.payload, f"payload-q{q}".encode(), "payload")
        eq(m.qos, q, f"delivered QoS for a QoS {q} publish to a QoS 2 subscription")
        eq(m.topic, t, "topic")
        eq(m.retain, False, "RETAIN flag of a live message")
    sub.expect_msgs(3, settle=0.3)


@suite.test()
def delivery_v311_to_v311(ctx):
    _matrix(ctx, 4, 4)


@suite.test()
def delivery_v5_to_v5(ctx):
    _matrix(ctx, 5, 5)


@suite.test()
def delivery_v311_to_v5(ctx):
    _matrix(ctx, 4, 5)


@suite.test()
def delivery_v5_to_v311(ctx):
    _matrix(ctx, 5, 4)


def _downgrade(ctx, version):
    t = ctx.topic("d")
    subs = {}
    for q in (0, 1, 2):
        subs[q] = ctx.paho(version=version)
        eq(subs[q].subscribe(t, qos=q), [q], f"SUBACK for QoS {q}")
    pub = ctx.paho(version=version)
    for pq in (0, 1, 2):
        pub.publish(t, f"p{pq}", qos=pq)
    for sq, c in subs.items():
        got = c.expect_msgs(3, settle=0.2)
        by_payload = {m.payload: m.qos for m in got}
        for pq in (0, 1, 2):
            eq(by_payload.get(f"p{pq}".encode()), min(pq, sq),
               f"QoS of a QoS {pq} publish delivered on a QoS {sq} subscription")


@suite.test()
def downgrade_to_subscription_qos_v311(ctx):
    _downgrade(ctx, 4)


@suite.test()
def downgrade_to_subscription_qos_v5(ctx):
    _downgrade(ctx, 5)


@suite.test()
def delivery_mqtt31(ctx):
    """MQTT 3.1 (MQIsdp, level 3) clients publish and receive at each QoS."""
    t = ctx.topic("v31")
    sub = ctx.raw(version=3)
    eq(sub.subscribe([(t, 2)]), [2], "3.1 SUBACK")
    pub = ctx.raw(version=3)
    for q in (0, 1, 2):
        pub.publish(t, f"v31-{q}", qos=q)
    got = sub.collect_publishes(quiet=0.5)
    eq([(p.payload, p.qos) for p in got], [(f"v31-{q}".encode(), q) for q in (0, 1, 2)],
       "3.1 deliveries")


@suite.test()
def qos2_many_exactly_once_in_order(ctx):
    for version in (4, 5):
        t = ctx.topic(f"x{version}")
        sub = ctx.paho(version=version)
        sub.subscribe(t, qos=2)
        pub = ctx.paho(version=version)
        n = 40
        for i in range(n):
            pub.publish(t, f"{i}", qos=2, wait=False)
        got = sub.expect_msgs(n, timeout=10, settle=0.5)
        eq([m.payload.decode() for m in got], [str(i) for i in range(n)],
           f"v{version} QoS 2 payloads (each once, in order)")
        check(all(m.qos == 2 for m in got), "every message delivered at QoS 2")


@suite.test()
def qos2_inbound_retransmission_not_routed_twice(ctx):
    """A QoS 2 PUBLISH resent with DUP before PUBREL is acknowledged but not delivered again;
    after PUBCOMP the same packet id carries a new message."""
    for version in (4, 5):
        t = ctx.topic(f"dup{version}")
        sub = ctx.paho(version=5)
        sub.subscribe(t, qos=2)
        pub = ctx.raw(version=version)
        pub.send(publish_packet(t, "first", qos=2, pid=7, version=version))
        rec = pub.expect(P.PUBREC)
        eq((rec.pid, rec.reason), (7, 0), "PUBREC")
        pub.send(publish_packet(t, "first", qos=2, pid=7, dup=True, version=version))
        rec = pub.expect(P.PUBREC)
        eq(rec.pid, 7, "PUBREC for the retransmission")
        pub.send(ack_packet(P.PUBREL, 7, None, version))
        eq(pub.expect(P.PUBCOMP).pid, 7, "PUBCOMP packet id")
        # After the flow is complete the id is free: a new message.
        pub.send(publish_packet(t, "second", qos=2, pid=7, version=version))
        eq(pub.expect(P.PUBREC).pid, 7, "PUBREC for the new message")
        pub.send(ack_packet(P.PUBREL, 7, None, version))
        pub.expect(P.PUBCOMP)
        got = sub.expect_msgs(2, settle=0.4)
        eq([m.payload for m in got], [b"first", b"second"], f"v{version}: messages delivered")


@suite.test()
def qos2_outbound_resumes_with_pubrel(ctx):
    """A subscriber that sent PUBREC and reconnects before PUBCOMP gets PUBREL, not the
    message again (§4.4 / [MQTT-4.3.3]): exactly once towards the subscriber."""
    for version in (4, 5):
        t = ctx.topic(f"out{version}")
        cid = ctx.uid + f"-sub{version}"
        cprops = {P.SESSION_EXPIRY: 300} if version == 5 else None
        sub = ctx.raw(version=version, client_id=cid, clean=True, props=cprops)
        sub.close()
        sub = ctx.raw(version=version, client_id=cid, clean=False, props=cprops)
        eq(sub.subscribe([(t, 2)]), [2], "SUBACK")
        ctx.paho(version=5).publish(t, "once", qos=2)
        p = sub.expect(P.PUBLISH)
        eq((p.qos, p.payload, p.dup), (2, b"once", False), "first delivery")
        sub.ack(p)
        rel = sub.expect(P.PUBREL)
        eq(rel.pid, p.pid, "PUBREL packet id")
        sub.close()  # no PUBCOMP
        sub2 = ctx.raw(version=version, client_id=cid, clean=False, props=cprops)
        pkts = sub2.recv_all(0.8)
        names = [(x.name, x.pid) for x in pkts]
        eq(names, [("PUBREL", p.pid)], f"v{version}: packets after reconnect")
        sub2.send(ack_packet(P.PUBCOMP, p.pid, None, version))
        eq(sub2.recv_all(0.4), [], "nothing after PUBCOMP")
        sub2.disconnect()


@suite.test()
def v5_puback_0x10_without_subscribers(ctx):
    t = ctx.topic("nobody", "here")
    pub = ctx.raw(version=5)
    ack = pub.publish(t, "x", qos=1)
    eq(ack.reason, 0x10, "PUBACK reason with no matching subscribers")
    # With a subscriber: success.
    sub = ctx.raw(version=5)
    sub.subscribe([(t, 1)])
    ack = pub.publish(t, "y", qos=1)
    eq(ack.reason, 0x00, "PUBACK reason with a matching subscriber")
    # 3.1.1: a plain PUBACK (no reason byte) in both cases.
    pub3 = ctx.raw(version=4)
    ack = pub3.publish(ctx.topic("nobody", "v3"), "z", qos=1)
    eq(len(ack.body), 2, "3.1.1 PUBACK remaining length")


@suite.test()
def receive_maximum_limits_inflight(ctx):
    t = ctx.topic("rm")
    sub = ctx.raw(version=5, props={P.RECEIVE_MAXIMUM: 2})
    eq(sub.subscribe([(t, 1)]), [1], "SUBACK")
    pub = ctx.paho(version=5)
    n = 7
    for i in range(n):
        pub.publish(t, f"m{i}", qos=1)  # each acknowledged by the broker
    outstanding = []
    seen = []
    first_batch = sub.recv_all(0.8)
    eq([p.name for p in first_batch], ["PUBLISH", "PUBLISH"],
       "packets sent to a client with Receive Maximum 2 before it acknowledges anything")
    outstanding += first_batch
    seen += first_batch
    deadline = time.monotonic() + 8
    while len(seen) < n and time.monotonic() < deadline:
        sub.ack(outstanding.pop(0))  # acknowledge the oldest
        more = sub.recv_all(0.4)
        for p in more:
            eq(p.type, P.PUBLISH, "packet type")
            outstanding.append(p)
            seen.append(p)
            check(len(outstanding) <= 2,
                  f"{len(outstanding)} unacknowledged QoS 1 messages with Receive Maximum 2")
        check(len(more) <= 1, f"one PUBACK released {len(more)} messages")
    eq([p.payload.decode() for p in seen], [f"m{i}" for i in range(n)],
       "all messages, in order, after acknowledging")
    check(not any(p.dup for p in seen), "no DUP on first delivery")


@suite.test()
def mosquitto_clients_qos(ctx):
    for version in (4, 5):
        t = ctx.topic(f"mosq{version}")
        s = ctx.mosq_sub([t], qos=2, version=version, count=3)
        s.wait_subscribed()
        for q in (0, 1, 2):
            rc, out = ctx.mosq_pub(t, f"hello{q}", qos=q, version=version)
            eq(rc, 0, f"mosquitto_pub exit status ({out})")
        got = s.wait_msgs(3)
        eq(sorted(got), sorted([(t, q, 0, f"hello{q}") for q in (0, 1, 2)]),
           f"v{version} mosquitto_sub messages (topic, qos, retain, payload)")
        eq(s.wait_exit(5), 0, "mosquitto_sub exit status")


if __name__ == "__main__":
    suite.main()
