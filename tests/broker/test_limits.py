#!/usr/bin/python3
"""Limits and housekeeping: CONNECT deadline, keepalive, max connections, max
subscriptions, max queued, $SYS statistics, isolation from malformed input."""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from mqtt_testlib import (HOST, P, RawClient, Suite, check, connect_packet, eq,  # noqa: E402
                          wait_until)

suite = Suite(__file__)


def _closed_after(sock, timeout):
    """Seconds until the peer closes sock (EOF or reset), or None; also the bytes seen."""
    t0 = time.monotonic()
    sock.settimeout(0.05)
    data = b""
    while time.monotonic() - t0 < timeout:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - t0, data
        if not chunk:
            return time.monotonic() - t0, data
        data += chunk
    return None, data


@suite.test(settings={"mqtt.connect_timeout": "1000"})
def connect_deadline(ctx):
    s = socket.create_connection((HOST, ctx.port))
    dt, data = _closed_after(s, 3)
    check(dt is not None, "a socket that never sends CONNECT is still open after 3 s")
    check(0.8 <= dt <= 1.6, f"closed after {dt:.2f}s, expected ~1 s (connect_timeout=1000)")
    eq(data, b"", "bytes sent before the close")
    s.close()
    # A partial CONNECT does not extend the deadline.
    s = socket.create_connection((HOST, ctx.port))
    s.sendall(b"\x10\x20\x00\x04MQ")
    dt, _ = _closed_after(s, 3)
    check(dt is not None and dt <= 1.6, f"partial CONNECT: closed after {dt}")
    s.close()
    # Control: a client that connects in time stays connected past the deadline.
    c = ctx.raw(version=4)
    time.sleep(1.3)
    c.ping()


@suite.test(settings={"mqtt.connect_timeout": "1000"})
def keepalive_enforced(ctx):
    c = ctx.raw(version=4, keepalive=1)
    t0 = time.monotonic()
    dt, data = _closed_after(c.sock, 4)
    check(dt is not None, "keepalive-1 client silent for 4 s is still connected")
    dt = time.monotonic() - t0 if dt is None else dt
    check(1.4 <= dt <= 2.6, f"closed after {dt:.2f}s of silence, expected 1.5 s")
    # Control: a client that pings every 0.5 s stays.
    c = ctx.raw(version=4, keepalive=1)
    for _ in range(6):
        time.sleep(0.5)
        c.ping()


@suite.test(settings={"mqtt.max_connections": "5"}, fresh=True)
def max_connections(ctx):
    cs = [ctx.raw(version=4) for _ in range(5)]
    for c in cs:
        c.ping()
    extra = RawClient(ctx.port, 4)
    ctx._clients.append(extra)
    try:
        extra.send(connect_packet(ctx.uid + "-6"))
    except OSError:
        pass
    closed, pkts = extra.wait_closed(2)
    check(closed, "6th connection accepted with max_connections=5")
    eq([p.name for p in pkts], [], "packets to the refused connection")
    for c in cs:
        c.ping()  # the others are unaffected
    # Closing one frees a slot.
    cs[0].disconnect()
    time.sleep(0.2)
    ok = ctx.raw(version=5)
    ok.ping()


@suite.test(settings={"mqtt.max_connections": "3"}, fresh=True)
def aborted_connections_free_their_slots(ctx):
    """Clients that send garbage and reset the connection, or vanish mid-packet, do not
    keep holding one of the 3 allowed connections."""
    import struct as _s
    for i in range(12):
        r = ctx.raw(version=5 if i % 2 else 4)
        if i % 3 == 0:
            r.send(b"\x00\x00")                  # malformed: the server closes (v5: 0x81 first)
        elif i % 3 == 1:
            r.send(b"\x30\x7f\x00\x01")            # half a PUBLISH
        r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _s.pack("ii", 1, 0))
        r.close()                                  # RST
    time.sleep(0.5)
    cs = [ctx.raw(version=4) for _ in range(3)]
    for c in cs:
        c.ping()


@suite.test(settings={"mqtt.max_subscriptions": "2"})
def max_subscriptions(ctx):
    for version, code in ((5, 0x97), (4, 0x80)):
        r = ctx.raw(version=version)
        t = ctx.topic(f"v{version}")
        eq(r.subscribe([(t + "/a", 1), (t + "/b", 1)]), [1, 1], "first two")
        eq(r.subscribe([(t + "/c", 1)]), [code], f"v{version} third subscription")
        eq(r.subscribe([(t + "/a", 0)]), [0], "re-subscribing an existing filter is allowed")
        eq(r.unsubscribe([t + "/b"]), [0] if version == 5 else [], "UNSUBACK codes")
        eq(r.subscribe([(t + "/c", 1)]), [1], "after UNSUBSCRIBE there is room again")


@suite.test(settings={"mqtt.receive_maximum": "3"})
def inbound_receive_maximum(ctx):
    """More unacknowledged inbound QoS 2 PUBLISH than the Receive Maximum the server
    announced: DISCONNECT 0x93."""
    from mqtt_testlib import publish_packet
    r = ctx.raw(version=5)
    eq(r.connack.props.get(P.RECEIVE_MAXIMUM), 3, "Receive Maximum in CONNACK")
    for pid in (1, 2, 3):
        r.send(publish_packet(ctx.topic("rm"), "x", qos=2, pid=pid, version=5))
        eq(r.expect(P.PUBREC).pid, pid, "PUBREC")
    r.send(publish_packet(ctx.topic("rm"), "x", qos=2, pid=4, version=5))
    closed, pkts = r.wait_closed(2)
    check(closed, "fourth unacknowledged QoS 2 PUBLISH accepted with Receive Maximum 3")
    eq([(p.name, p.reason) for p in pkts], [("DISCONNECT", 0x93)], "DISCONNECT reason")


@suite.test(settings={"mqtt.max_topic_levels": "4", "mqtt.max_topic_length": "40"})
def topic_length_and_levels(ctx):
    r = ctx.raw(version=5)
    eq(r.publish("a/b/c/d/e", "x", qos=1).reason, 0x90, "PUBACK for 5 levels (max 4)")
    eq(r.publish("a" * 41, "x", qos=1).reason, 0x90, "PUBACK for a 41-byte topic (max 40)")
    eq(r.subscribe([("a/b/c/d/#", 1), ("a/b/c/#", 1), ("b" * 41, 1)]), [0x8F, 1, 0x8F],
       "SUBACK codes")
    eq(r.publish("a/b/c/d", "ok", qos=1).reason, 0x00, "PUBACK within limits")
    p = r.other[0] if r.other else r.expect(P.PUBLISH)
    eq((p.topic, p.payload), ("a/b/c/d", b"ok"), "delivery within limits")


@suite.test(settings={"mqtt.max_queued": "5"})
def max_queued(ctx):
    t = ctx.topic("q")
    cid = ctx.uid + "-s"
    s = ctx.paho(cid, version=5, session_expiry=300)
    s.subscribe(t, qos=1)
    s.disconnect()
    pub = ctx.paho(version=5)
    for i in range(10):
        pub.publish(t, str(i), qos=1)  # all acknowledged to the publisher
    s = ctx.paho(cid, version=5, clean_start=False, session_expiry=300)
    got = s.expect_msgs(5, settle=0.6)
    eq([m.payload for m in got], [str(i).encode() for i in range(5)],
       "delivered from a queue limited to 5")


@suite.test(settings={"mqtt.sys_interval": "1"})
def sys_topics(ctx):
    w = ctx.paho(version=5)
    w.subscribe("$SYS/broker/clients/connected", qos=0)
    w.subscribe("$SYS/broker/uptime", qos=0)
    extra = [ctx.raw(version=4) for _ in range(3)]
    w.clear()
    t0 = time.monotonic()
    wait_until(lambda: len([m for m in w.msgs if m.topic.endswith("connected")]) >= 1 and
               len([m for m in w.msgs if m.topic.endswith("uptime")]) >= 2, 3.5)
    conn = [m for m in w.msgs if m.topic == "$SYS/broker/clients/connected"]
    up = [m for m in w.msgs if m.topic == "$SYS/broker/uptime"]
    check(conn, f"no $SYS/broker/clients/connected within {time.monotonic() - t0:.1f}s")
    check(len(up) >= 2, f"fewer than 2 $SYS/broker/uptime updates in 3.5 s: {up}")
    check(all(not m.retain for m in conn), "live $SYS update delivered with RETAIN 1")
    n = int(conn[-1].payload)
    check(n >= 4, f"clients/connected = {n} with at least 4 clients connected")
    u = [int(m.payload) for m in up]
    check(u[-1] > u[0], f"uptime not increasing: {u}")
    del extra
    # A late subscriber gets the last values as retained messages.
    late = ctx.paho(version=4)
    late.subscribe("$SYS/broker/uptime", qos=0)
    m = late.wait_msgs(1, timeout=1)
    check(m and m[0].retain, f"retained $SYS/broker/uptime for a new subscriber: {m}")


@suite.test()
def malformed_input_isolated(ctx):
    t = ctx.topic("iso")
    good = ctx.paho(version=5)
    good.subscribe(t, qos=1)
    pub = ctx.paho(version=4)
    garbage = [
        b"\x10\xff\xff\xff\xff\xff",          # CONNECT with an invalid remaining length
        # Not MQTT at all ('G' reads as a 69-byte packet of type 4: send all of it).
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test/1.0\r\nAccept: */*\r\n"
        b"X-Padding: xxxxxxxxxxxxxxxxxxxx\r\n\r\n",
        b"\x30\x03\x00\x01a",                 # PUBLISH before CONNECT
    ]
    for i, g in enumerate(garbage):
        s = socket.create_connection((HOST, ctx.port))
        s.sendall(g)
        dt, _ = _closed_after(s, 2)
        check(dt is not None, f"garbage #{i} did not close its connection")
        s.close()
        pub.publish(t, f"after-{i}", qos=1)
    # After CONNECT: a malformed packet (reserved type 0, bad flags, truncated topic).
    for i, g in enumerate([b"\x00\x00",                          # reserved packet type 0
                           b"\x80\x07\x00\x01\x00\x00\x01a\x01",  # SUBSCRIBE, flags 0
                           b"\x30\x03\x00\x09a"]):                 # truncated topic
        r = ctx.raw(version=5)
        r.send(g)
        closed, pkts = r.wait_closed(2)
        check(closed, f"malformed packet #{i} after CONNECT did not close the connection")
        check(all(p.type == P.DISCONNECT and p.reason >= 0x80 for p in pkts),
              f"packets before close: {pkts}")
        pub.publish(t, f"post-{i}", qos=1)
    got = good.expect_msgs(6, settle=0.3)
    eq([m.payload for m in got],
       [b"after-0", b"after-1", b"after-2", b"post-0", b"post-1", b"post-2"],
       "deliveries to a well-behaved client")
    check(ctx.d.alive(), "server died")


if __name__ == "__main__":
    suite.main()
