#!/usr/bin/python3
"""Will messages: abrupt close, clean DISCONNECT, DISCONNECT 0x04, Will Delay, keepalive
expiry, session takeover."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from mqtt_testlib import PacketTypes, Suite, check, eq, props  # noqa: E402

suite = Suite(__file__)


def _watcher(ctx, t, version=5):
    w = ctx.paho(version=version)
    w.subscribe(t, qos=2)
    return w


def _will(t, payload="gone", qos=1, retain=False, delay=None):
    w = {"topic": t, "payload": payload, "qos": qos, "retain": retain}
    if delay is not None:
        w["props"] = props(PacketTypes.WILLMESSAGE, WillDelayInterval=delay)
    return w


@suite.test()
def will_on_abrupt_close(ctx):
    for version in (4, 5):
        t = ctx.topic(f"w{version}")
        w = _watcher(ctx, t)
        c = ctx.paho(version=version, will=_will(t, f"bye{version}", qos=1))
        w.expect_none(0.3)  # nothing while it is connected
        c.drop()
        m = w.expect_msgs(1, timeout=3)[0]
        eq((m.topic, m.payload, m.qos, m.retain), (t, f"bye{version}".encode(), 1, False),
           f"v{version} will message")


@suite.test()
def will_retain_flag_stores_it(ctx):
    t = ctx.topic("wr")
    live = _watcher(ctx, t)
    c = ctx.paho(version=4, will=_will(t, "retained-will", qos=1, retain=True))
    c.drop()
    eq([(m.payload, m.retain) for m in live.wait_msgs(1, timeout=3)],
       [(b"retained-will", False)], "live delivery of the will")
    w = _watcher(ctx, t)  # subscribes after the will: gets it as retained
    m = w.expect_msgs(1, timeout=3)[0]
    eq((m.payload, m.retain), (b"retained-will", True), "retained will")
    ctx.paho(version=4).publish(t, b"", qos=1, retain=True)


@suite.test()
def no_will_on_clean_disconnect(ctx):
    for version in (4, 5):
        t = ctx.topic(f"n{version}")
        w = _watcher(ctx, t)
        c = ctx.paho(version=version, will=_will(t))
        c.disconnect()
        # Control: an abrupt close of an identical client on the same topic is seen.
        c2 = ctx.paho(version=version, will=_will(t, "control"))
        time.sleep(0.6)
        c2.drop()
        got = w.expect_msgs(1, timeout=3, settle=0.3)
        eq([m.payload for m in got], [b"control"], f"v{version} wills seen")


@suite.test()
def v5_disconnect_0x04_publishes_will(ctx):
    t = ctx.topic("x04")
    w = _watcher(ctx, t)
    c = ctx.raw(version=5, will=_will(t, "with-will"))
    c.disconnect(reason=0x04)
    m = w.expect_msgs(1, timeout=3)[0]
    eq(m.payload, b"with-will", "will after DISCONNECT 0x04")
    # And reason 0x00 explicitly discards it.
    c = ctx.raw(version=5, will=_will(t, "discarded"))
    c.disconnect(reason=0x00)
    w.expect_msgs(1, settle=0.8)


@suite.test()
def will_delay_interval(ctx):
    t = ctx.topic("delay")
    w = _watcher(ctx, t)
    c = ctx.paho(version=5, clean_start=True, session_expiry=60, will=_will(t, "late", delay=2))
    c.drop()
    t0 = time.monotonic()
    got = w.wait_msgs(1, timeout=1.6)
    eq(got, [], "will before the 2 s Will Delay Interval")
    got = w.wait_msgs(1, timeout=3.0)
    check(got, "will not published within 4.6 s of a 2 s Will Delay Interval")
    dt = got[0].t - t0
    check(1.8 <= dt <= 3.5, f"will published {dt:.2f}s after the close, expected ~2 s")
    eq(got[0].payload, b"late", "payload")
    w.expect_msgs(1, settle=0.3)


@suite.test()
def will_delay_cancelled_by_reconnect(ctx):
    t = ctx.topic("cancel")
    cid = ctx.uid + "-c"
    w = _watcher(ctx, t)
    c = ctx.paho(cid, version=5, clean_start=True, session_expiry=60,
                 will=_will(t, "should-not", delay=2))
    c.drop()
    time.sleep(0.5)
    c2 = ctx.paho(cid, version=5, clean_start=False, session_expiry=60)
    eq(c2.connack[0], True, "session present on reconnect")
    w.expect_none(3.0)
    c2.disconnect()


@suite.test()
def will_delay_ends_with_session(ctx):
    """The will goes when the session ends, if that is before the delay (§3.1.3.2.2)."""
    t = ctx.topic("sess")
    w = _watcher(ctx, t)
    c = ctx.paho(version=5, session_expiry=1, will=_will(t, "session-end", delay=30))
    c.drop()
    got = w.wait_msgs(1, timeout=3.0)
    check(got, "will not published when the session (expiry 1 s) ended before its 30 s delay")
    eq(got[0].payload, b"session-end", "payload")


@suite.test()
def will_on_keepalive_expiry_v311(ctx):
    t = ctx.topic("ka3")
    w = _watcher(ctx, t)
    c = ctx.raw(version=4, keepalive=1, will=_will(t, "timeout"))
    t0 = time.monotonic()
    # Send nothing more.  The server must close at 1.5 x keepalive and publish the will.
    got = w.wait_msgs(1, timeout=2.5)
    check(got, "no will within 2.5 s of silence with keepalive 1")
    dt = got[0].t - t0
    check(dt >= 1.0, f"will after only {dt:.2f}s of silence (keepalive 1 s)")
    closed, _ = c.wait_closed(1.0)
    check(closed, "connection not closed after keepalive expiry")
    w.expect_msgs(1, settle=0.3)


@suite.test()
def will_on_keepalive_expiry_v5(ctx):
    t = ctx.topic("ka5")
    w = _watcher(ctx, t)
    c = ctx.paho(version=5, keepalive=1, will=_will(t, "timeout5"))
    time.sleep(1.2)  # paho pings: still alive
    eq(w.msgs, [], "will while the client keeps pinging")
    c.freeze()  # stops pinging, socket stays open
    t0 = time.monotonic()
    got = w.wait_msgs(1, timeout=2.5)
    check(got, "no will within 2.5 s after a keepalive-1 client went silent")
    check(got[0].t - t0 >= 0.4, "will too early")
    w.expect_msgs(1, settle=0.3)


@suite.test()
def will_on_keepalive_expiry_v5_raw_disconnect_0x8d(ctx):
    t = ctx.topic("ka5r")
    w = _watcher(ctx, t)
    c = ctx.raw(version=5, keepalive=1, will=_will(t, "timeout5r"))
    closed, pkts = c.wait_closed(2.6)
    check(closed, "connection not closed within 2.6 s (keepalive 1)")
    eq([(p.name, p.reason) for p in pkts], [("DISCONNECT", 0x8D)],
       "packets before close (DISCONNECT Keep Alive timeout)")
    eq([m.payload for m in w.wait_msgs(1, 1)], [b"timeout5r"], "will")


@suite.test()
def will_on_session_takeover(ctx):
    for version in (4, 5):
        t = ctx.topic(f"take{version}")
        cid = ctx.uid + f"-dup{version}"
        w = _watcher(ctx, t)
        old = ctx.raw(version=version, client_id=cid, will=_will(t, f"old{version}"))
        new = ctx.raw(version=version, client_id=cid)
        closed, pkts = old.wait_closed(2)
        check(closed, "old connection not closed on takeover")
        if version == 5:
            eq([(p.name, p.reason) for p in pkts], [("DISCONNECT", 0x8E)],
               "old connection's last packets")
        got = w.expect_msgs(1, timeout=3, settle=0.3)
        eq(got[0].payload, f"old{version}".encode(), f"v{version} will of the old connection")
        new.ping()  # the new one is fine
        new.disconnect()


if __name__ == "__main__":
    suite.main()
