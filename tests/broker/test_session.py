#!/usr/bin/python3
"""Sessions: persistence while offline, clean start, expiry, takeover, assigned client
identifiers, and survival across SIGTERM and kill -9 restarts (ADR-0005)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from mqtt_testlib import (P, Suite, ack_packet, check, eq, publish_packet)  # noqa: E402

suite = Suite(__file__)


def _connect_args(version, clean, expiry=300):
    if version == 5:
        return {"clean_start": clean, "session_expiry": expiry}
    return {}


def _persistent_queue(ctx, version):
    t = ctx.topic("q")
    cid = ctx.uid + "-p"
    sub = ctx.paho(cid, version=version, clean=False, **_connect_args(version, True))
    eq(sub.connack[0], False, "session present on the first connect")
    eq(sub.subscribe(t + "/1", qos=1), [1], "SUBACK")
    eq(sub.subscribe(t + "/2", qos=2), [2], "SUBACK")
    sub.disconnect()
    pub = ctx.paho(version=5)
    for i in range(3):
        pub.publish(t + "/1", f"a{i}", qos=1)
    for i in range(2):
        pub.publish(t + "/2", f"b{i}", qos=2)
    sub2 = ctx.paho(cid, version=version, clean=False, **_connect_args(version, False))
    eq(sub2.connack[0], True, "session present on reconnect")
    got = sub2.expect_msgs(5, settle=0.4)
    eq(sorted((m.topic[-1], m.payload.decode(), m.qos) for m in got),
       [("1", "a0", 1), ("1", "a1", 1), ("1", "a2", 1), ("2", "b0", 2), ("2", "b1", 2)],
       "queued messages (topic, payload, qos)")
    # The subscriptions are still there.
    pub.publish(t + "/1", "after", qos=1)
    eq(sub2.wait_msgs(6)[-1].payload, b"after", "live message on the kept subscription")
    sub2.disconnect()


@suite.test()
def persistent_session_queues_v311(ctx):
    _persistent_queue(ctx, 4)


@suite.test()
def persistent_session_queues_v5(ctx):
    _persistent_queue(ctx, 5)


def _clean_start_discards(ctx, version):
    t = ctx.topic("c")
    cid = ctx.uid + "-c"
    sub = ctx.paho(cid, version=version, clean=False, **_connect_args(version, True))
    sub.subscribe(t, qos=1)
    sub.disconnect()
    pub = ctx.paho(version=5)
    pub.publish(t, "queued", qos=1)
    sub2 = ctx.paho(cid, version=version, clean=True, **_connect_args(version, True, expiry=0))
    eq(sub2.connack[0], False, "session present after clean start")
    pub.publish(t, "live", qos=1)
    sub2.expect_none(0.6)  # neither the queued message nor the old subscription
    sub2.disconnect()
    # The old session is gone for good: a non-clean reconnect finds nothing either.
    sub3 = ctx.paho(cid, version=version, clean=False, **_connect_args(version, False))
    eq(sub3.connack[0], False, "session present after the clean session ended")
    sub3.expect_none(0.3)


@suite.test()
def clean_start_discards_v311(ctx):
    _clean_start_discards(ctx, 4)


@suite.test()
def clean_start_discards_v5(ctx):
    _clean_start_discards(ctx, 5)


@suite.test()
def session_expiry_interval_ends_session(ctx):
    t = ctx.topic("e")
    cid = ctx.uid + "-e"
    # Control: within the interval the session is still there.
    s = ctx.paho(cid, version=5, clean_start=True, session_expiry=2)
    s.subscribe(t, qos=1)
    s.disconnect()
    time.sleep(0.3)
    s = ctx.paho(cid, version=5, clean_start=False, session_expiry=1)
    eq(s.connack[0], True, "session present within the expiry interval")
    s.disconnect()
    ctx.paho(version=5).publish(t, "queued", qos=1)
    time.sleep(2.5)
    s = ctx.paho(cid, version=5, clean_start=False, session_expiry=60)
    eq(s.connack[0], False, "session present 2.5 s after a 1 s session expiry")
    s.expect_none(0.5)
    s.disconnect()


@suite.test()
def takeover_same_client_id(ctx):
    for version in (4, 5):
        t = ctx.topic(f"take{version}")
        cid = ctx.uid + f"-t{version}"
        cp = {P.SESSION_EXPIRY: 60} if version == 5 else None
        old = ctx.raw(version=version, client_id=cid, clean=False, props=cp)
        eq(old.subscribe([(t, 1)]), [1], "SUBACK")
        new = ctx.raw(version=version, client_id=cid, clean=False, props=cp)
        eq(new.connack.session_present, True, "session present for the new connection")
        closed, pkts = old.wait_closed(2)
        check(closed, f"v{version}: old connection still open after takeover")
        if version == 5:
            eq([(p.name, p.reason) for p in pkts], [("DISCONNECT", 0x8E)],
               "old connection receives DISCONNECT Session taken over")
        else:
            eq(pkts, [], "nothing sent to the old 3.1.1 connection")
        # The new connection carries on with the session (its subscription included).
        ctx.paho(version=5).publish(t, "to-new", qos=1)
        p = new.expect(P.PUBLISH)
        eq(p.payload, b"to-new", "delivery to the new connection")
        new.ack(p)
        new.disconnect()


@suite.test()
def takeover_session_present(ctx):
    cid = ctx.uid + "-sp"
    a = ctx.paho(cid, version=5, clean_start=True, session_expiry=60)
    b = ctx.paho(cid, version=5, clean_start=False, session_expiry=60)
    eq(b.connack[0], True, "session present when taking over a live session")
    check(a.wait_disconnected(2), "old paho client not disconnected")
    b.disconnect()


@suite.test()
def assigned_client_identifier(ctx):
    ids = set()
    for _ in range(2):
        c = ctx.paho("", version=5)
        aid = getattr(c.connack[2], "AssignedClientIdentifier", None)
        check(isinstance(aid, str) and aid, f"Assigned Client Identifier in CONNACK: {aid!r}")
        ids.add(aid)
        # It is usable: the client can subscribe and receive.
        t = ctx.topic("aid")
        c.subscribe(t, qos=1)
        ctx.paho(version=5).publish(t, "hi", qos=1)
        c.expect_msgs(1)
        c.disconnect()
    eq(len(ids), 2, "distinct assigned identifiers")
    # 3.1.1: empty id with clean session accepted (no property), without it refused (rc 2).
    r = ctx.raw(version=4, client_id="", clean=True)
    r.ping()
    r2 = ctx.raw(version=4, client_id="", clean=False, expect_rc=2)
    closed, _ = r2.wait_closed(2)
    check(closed, "connection closed after identifier rejected")
    # A client that sends its own id gets no Assigned Client Identifier.
    r3 = ctx.raw(version=5, client_id=ctx.uid + "-own")
    check(P.ASSIGNED_CLIENT_ID not in r3.connack.props,
          f"Assigned Client Identifier for a client with its own id: {r3.connack.props}")
    # The raw CONNACK of an empty-id client carries it too.
    r4 = ctx.raw(version=5, client_id="")
    check(r4.connack.props.get(P.ASSIGNED_CLIENT_ID), f"raw CONNACK props: {r4.connack.props}")


@suite.test()
def unacked_qos1_resent_with_dup_and_same_packet_id(ctx):
    """[MQTT-4.4.0-1]: on reconnect with a kept session, unacknowledged PUBLISH packets are
    resent with their original packet identifiers and DUP set."""
    for version in (4, 5):
        t = ctx.topic(f"dup{version}")
        cid = ctx.uid + f"-d{version}"
        cp = {P.SESSION_EXPIRY: 60} if version == 5 else None
        sub = ctx.raw(version=version, client_id=cid, clean=(version == 5), props=cp)
        sub.subscribe([(t, 2)])
        pub = ctx.raw(version=5)
        pub.publish(t, "one", qos=1)
        pub.publish(t, "two", qos=2)
        first = [p for p in sub.recv_all(0.5) if p.type == P.PUBLISH]
        eq([(p.payload, p.qos, p.dup) for p in first], [(b"one", 1, False), (b"two", 2, False)],
           "first deliveries")
        sub.close()  # no acknowledgements
        sub = ctx.raw(version=version, client_id=cid, clean=False, props=cp)
        again = [p for p in sub.recv_all(0.6) if p.type == P.PUBLISH]
        eq([(p.payload, p.qos, p.dup, p.pid) for p in again],
           [(p.payload, p.qos, True, p.pid) for p in first],
           f"v{version} redelivery (payload, qos, dup, packet id)")
        for p in again:
            sub.ack(p)
        sub.disconnect()


# -- restarts ---------------------------------------------------------------------------

def _offline_queue_then(ctx, restart, version):
    """QoS 1 and 2 messages queued for an offline persistent session, acknowledged to the
    publisher, must be delivered after the restart; the QoS 2 one exactly once."""
    t = ctx.topic("k")
    cid = ctx.uid + "-k"
    cp = {P.SESSION_EXPIRY: 3600} if version == 5 else None
    sub = ctx.raw(version=version, client_id=cid, clean=(version == 5), props=cp)
    eq(sub.subscribe([(t, 2)]), [2], "SUBACK")
    sub.disconnect()
    pub = ctx.raw(version=5)
    pub.publish(t, "q1", qos=1)  # PUBACK received
    pub.publish(t, "q2", qos=2)  # PUBREC received, PUBREL/PUBCOMP done
    pub.close()
    restart()
    sub = ctx.raw(version=version, client_id=cid, clean=False, props=cp)
    pkts = sub.recv_all(1.0)
    pubs = [p for p in pkts if p.type == P.PUBLISH]
    eq(sorted((p.payload, p.qos) for p in pubs), [(b"q1", 1), (b"q2", 2)],
       f"messages delivered after the restart (packets: {pkts})")
    for p in pubs:
        sub.ack(p)
    rel = [p for p in sub.recv_all(0.5) if p.type == P.PUBREL]
    q2 = [p for p in pubs if p.qos == 2][0]
    eq([r.pid for r in rel], [q2.pid], "PUBREL for the QoS 2 message")
    sub.send(ack_packet(P.PUBCOMP, q2.pid, None, version))
    sub.ping()  # the acknowledgements have been processed (and logged)
    sub.close()
    # Once acknowledged, nothing is delivered again, even after another kill -9.
    ctx.d.kill9_restart()
    sub = ctx.raw(version=version, client_id=cid, clean=False, props=cp)
    eq(sub.connack.session_present, True, "session present after the second kill -9")
    again = [p for p in sub.recv_all(0.8) if p.type in (P.PUBLISH, P.PUBREL)]
    eq(again, [], "redelivered after being acknowledged (exactly once)")
    sub.disconnect()


@suite.test(fresh=True)
def sigterm_restart_keeps_queued_messages(ctx):
    _offline_queue_then(ctx, ctx.d.restart, 4)


@suite.test(fresh=True)
def kill9_restart_keeps_queued_messages_v311(ctx):
    _offline_queue_then(ctx, ctx.d.kill9_restart, 4)


@suite.test(fresh=True)
def kill9_restart_keeps_queued_messages_v5(ctx):
    _offline_queue_then(ctx, ctx.d.kill9_restart, 5)


@suite.test(fresh=True)
def kill9_keeps_session_present_and_subscriptions(ctx):
    t = ctx.topic("s")
    for version in (4, 5):
        cid = ctx.uid + f"-s{version}"
        cp = {P.SESSION_EXPIRY: 3600} if version == 5 else None
        c = ctx.raw(version=version, client_id=cid, clean=(version == 5), props=cp)
        eq(c.subscribe([(t + f"/{version}/#", 1)]), [1], "SUBACK")
        # Killed while the client is still connected.
        ctx.d.kill9_restart()
        c = ctx.raw(version=version, client_id=cid, clean=False, props=cp, expect_rc=0)
        eq(c.connack.session_present, True, f"v{version} session present after kill -9")
        pub = ctx.raw(version=5)
        ack = pub.publish(t + f"/{version}/x", "after-restart", qos=1)
        eq(ack.reason, 0x00, "PUBACK reason (a subscriber matches)")
        p = c.expect(P.PUBLISH)
        eq((p.topic, p.payload), (t + f"/{version}/x", b"after-restart"),
           f"v{version} delivery on the subscription made before kill -9")


@suite.test(fresh=True)
def kill9_session_present_flag(ctx):
    for version in (4, 5):
        cid = ctx.uid + f"-f{version}"
        cp = {P.SESSION_EXPIRY: 3600} if version == 5 else None
        c = ctx.raw(version=version, client_id=cid, clean=(version == 5), props=cp)
        c.subscribe([(ctx.topic("f"), 1)])
        c.disconnect()
    ctx.d.kill9_restart()
    for version in (4, 5):
        cid = ctx.uid + f"-f{version}"
        cp = {P.SESSION_EXPIRY: 3600} if version == 5 else None
        c = ctx.raw(version=version, client_id=cid, clean=False, props=cp)
        eq(c.connack.session_present, True, f"v{version} session present after kill -9")


@suite.test(fresh=True)
def kill9_retained_survive(ctx):
    t = ctx.topic("r")
    pub = ctx.raw(version=5)
    pub.publish(t + "/kept", "kept-value", qos=1, retain=True)
    pub.publish(t + "/replaced", "old", qos=1, retain=True)
    pub.publish(t + "/replaced", "new", qos=2, retain=True)
    pub.publish(t + "/cleared", "gone", qos=1, retain=True)
    pub.publish(t + "/cleared", "", qos=1, retain=True)
    pub.close()
    ctx.d.kill9_restart()
    s = ctx.paho(version=5)
    s.subscribe(t + "/#", qos=2)
    got = s.expect_msgs(2, settle=0.4)
    eq(sorted((m.topic, m.payload, m.qos, m.retain) for m in got),
       [(t + "/kept", b"kept-value", 1, True), (t + "/replaced", b"new", 2, True)],
       "retained messages after kill -9")
    # And once more through a clean restart (snapshot) and another kill -9.
    ctx.d.restart()
    ctx.d.kill9_restart()
    s = ctx.paho(version=4)
    s.subscribe(t + "/#", qos=2)
    eq(len(s.expect_msgs(2, settle=0.4)), 2, "retained messages after restart + kill -9")


@suite.test(fresh=True)
def kill9_qos2_outbound_pubrel_state(ctx):
    """A subscriber that has sent PUBREC (and got PUBREL) before kill -9 must get PUBREL
    again after the restart, not the message a second time."""
    t = ctx.topic("o")
    cid = ctx.uid + "-o"
    sub = ctx.raw(version=4, client_id=cid, clean=False)
    sub.subscribe([(t, 2)])
    ctx.raw(version=5).publish(t, "exactly-once", qos=2)
    p = sub.expect(P.PUBLISH)
    sub.ack(p)  # PUBREC
    eq(sub.expect(P.PUBREL).pid, p.pid, "PUBREL packet id")
    sub.close()
    ctx.d.kill9_restart()
    sub = ctx.raw(version=4, client_id=cid, clean=False)
    pkts = sub.recv_all(0.8)
    eq([(x.name, x.pid) for x in pkts], [("PUBREL", p.pid)],
       "packets after kill -9 (the message was already received)")


@suite.test(fresh=True)
def kill9_qos2_inbound_not_routed_twice(ctx):
    """A publisher whose QoS 2 PUBLISH got PUBREC before kill -9 resends it with DUP after
    the restart; the message must not be delivered a second time."""
    t = ctx.topic("i")
    watcher_id = ctx.uid + "-w"
    w = ctx.raw(version=4, client_id=watcher_id, clean=False)
    w.subscribe([(t, 2)])
    w.close()
    cid = ctx.uid + "-pub"
    pub = ctx.raw(version=4, client_id=cid, clean=False)
    pub.send(publish_packet(t, "once", qos=2, pid=42))
    eq(pub.expect(P.PUBREC).pid, 42, "PUBREC")
    pub.close()
    ctx.d.kill9_restart()
    pub = ctx.raw(version=4, client_id=cid, clean=False)
    pub.send(publish_packet(t, "once", qos=2, pid=42, dup=True))
    eq(pub.expect(P.PUBREC).pid, 42, "PUBREC for the retransmission")
    pub.send(ack_packet(P.PUBREL, 42))
    eq(pub.expect(P.PUBCOMP).pid, 42, "PUBCOMP")
    w = ctx.raw(version=4, client_id=watcher_id, clean=False)
    got = []
    for p in w.recv_all(1.0):
        if p.type == P.PUBLISH:
            got.append(p.payload)
            w.ack(p)
            w.send(ack_packet(P.PUBCOMP, p.pid))
    eq(got, [b"once"], "deliveries of a QoS 2 message retransmitted across kill -9")


@suite.test(fresh=True)
def mosquitto_persistent_session(ctx):
    t = ctx.topic("m")
    cid = ctx.uid + "-mq"
    s = ctx.mosq_sub([t], qos=1, version=4, extra=["-c", "-i", cid], count=1, timeout_s=2)
    s.wait_subscribed()
    s.stop()
    rc, out = ctx.mosq_pub(t, "while-offline", qos=1, version=4)
    eq(rc, 0, f"mosquitto_pub ({out})")
    ctx.d.kill9_restart()
    s = ctx.mosq_sub([t], qos=1, version=4, extra=["-c", "-i", cid], count=1, timeout_s=3)
    eq(s.wait_exit(6), 0, f"mosquitto_sub exit status: {s.all_lines}")
    eq(s.msgs, [(t, 1, 0, "while-offline")], "message queued before kill -9")


if __name__ == "__main__":
    suite.main()
