#!/usr/bin/python3
"""Authentication (password file, anonymous policy) and authorisation (ACL file)."""
import atexit
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from mqtt_testlib import (P, Suite, check, connect_packet, eq, publish_packet,  # noqa: E402
                          sub_opts, subscribe_packet, suite_binary_from_argv)

suite = Suite(__file__)

USERS = {"alice": "wonder land", "bob": "b0b", "dev1": "d1", "dev2": "d2"}
ACL = """\
# anonymous rules would go here
user alice
topic readwrite alice/#
user bob
topic read bob/#
topic read alice/#
pattern readwrite devices/%c/#
"""

_dir = tempfile.mkdtemp(prefix="drover-auth-")
atexit.register(shutil.rmtree, _dir, True)
PASSWD = os.path.join(_dir, "passwd")
ACLFILE = os.path.join(_dir, "acl")


def _make_files(binary):
    with open(PASSWD, "w") as f:
        for u, pw in USERS.items():
            line = subprocess.run([binary, "passwd", u, pw], check=True, capture_output=True,
                                  timeout=30).stdout.decode().strip()
            check(line.startswith(u + ":$argon2id$"), f"drover passwd output: {line!r}")
            f.write(line + "\n")
    with open(ACLFILE, "w") as f:
        f.write(ACL)


_make_files(suite_binary_from_argv())

AUTH = {"auth.password_file": PASSWD, "auth.allow_anonymous": "never"}
AUTH_ACL = dict(AUTH, **{"auth.acl_file": ACLFILE})


def _refused(ctx, version, user, pw, codes, client_id=None):
    r = ctx.raw(version=version, connect=False)
    ca = r.connect(client_id or ctx.uid + "-x", username=user, password=pw, expect_rc=None)
    check(ca.reason in codes, f"v{version} CONNACK for user={user!r}: {ca.reason:#x}, "
                              f"expected one of {[hex(c) for c in codes]}")
    eq(ca.session_present, False, "session present on a refused CONNECT")
    closed, pkts = r.wait_closed(2)
    check(closed and not pkts, f"refused connection not closed (packets {pkts})")


@suite.test(settings=AUTH)
def right_password_connects(ctx):
    for version in (4, 5):
        c = ctx.paho(version=version, username="alice", password=USERS["alice"])
        t = ctx.topic(f"ok{version}")
        c.subscribe(t, qos=1)
        c.publish(t, "hi", qos=1)
        eq(c.expect_msgs(1)[0].payload, b"hi", "authenticated client works")


@suite.test(settings=AUTH)
def wrong_password_refused(ctx):
    _refused(ctx, 4, "alice", "wrong", (4,))
    _refused(ctx, 5, "alice", "wrong", (0x86,))
    _refused(ctx, 4, "alice", "", (4,))
    _refused(ctx, 4, "mallory", "x", (4,))  # unknown user
    _refused(ctx, 5, "mallory", "x", (0x86,))
    _refused(ctx, 5, "alice", None, (0x86,))  # user name without password


# -- password checks run on the authentication thread (src/broker/auth.c) ---------------

@suite.test(settings=AUTH)
def packets_sent_behind_a_password_connect_wait_for_it(ctx):
    """A client may send more packets right after CONNECT (§3.1.4): they wait, in order,
    while its password is checked off the broker lock."""
    for version in (4, 5):
        r = ctx.raw(version=version, connect=False)
        t = ctx.topic(f"pipelined{version}")
        r.send(connect_packet(f"{ctx.uid}-pipe{version}", version, username="alice",
                              password=USERS["alice"])
               + subscribe_packet(1, [(t, sub_opts(qos=1))], version)
               + publish_packet(t, b"first", qos=1, pid=2, version=version))
        eq(r.expect(P.CONNACK).reason, 0, "CONNACK")
        eq(r.expect(P.SUBACK).codes, [1], "SUBACK after the CONNACK")
        got = [r.expect(P.PUBACK, skip=(P.PUBLISH,)).pid]
        eq(got, [2], "PUBACK of the pipelined PUBLISH")


@suite.test(settings=AUTH)
def many_password_connects_at_once(ctx):
    clients = [ctx.raw(connect=False) for _ in range(16)]
    for i, r in enumerate(clients):
        r.send(connect_packet(f"{ctx.uid}-many{i}", 4, username="bob", password=USERS["bob"]))
    for r in clients:
        eq(r.expect(P.CONNACK, timeout=30).reason, 0, "every CONNACK arrives, accepted")


@suite.test(settings=AUTH)
def client_gone_while_its_password_is_checked(ctx):
    """Connections that close before their authentication comes back are freed safely
    (ASan would see a use after free) and the server goes on."""
    for i in range(16):
        r = ctx.raw(connect=False)
        r.send(connect_packet(f"{ctx.uid}-gone{i}", 4, username="alice",
                              password=USERS["alice"]))
        r.close()
    c = ctx.paho(username="alice", password=USERS["alice"])
    t = ctx.topic("after")
    c.subscribe(t, qos=1)
    c.publish(t, "alive", qos=1)
    eq(c.expect_msgs(1)[0].payload, b"alive", "the server still works")


@suite.test(settings=AUTH)
def anonymous_refused_with_allow_anonymous_never(ctx):
    _refused(ctx, 4, None, None, (4, 5))
    _refused(ctx, 5, None, None, (0x86, 0x87))


@suite.test(settings=AUTH)
def mosquitto_pub_with_credentials(ctx):
    t = ctx.topic("m")
    s = ctx.paho(version=5, username="bob", password=USERS["bob"])
    s.subscribe(t, qos=1)
    rc, out = ctx.mosq_pub(t, "authed", qos=1, extra=["-u", "dev1", "-P", USERS["dev1"]])
    eq(rc, 0, f"mosquitto_pub with the right password: {out}")
    rc, out = ctx.mosq_pub(t, "nope", qos=1, extra=["-u", "dev1", "-P", "bad"])
    check(rc != 0, f"mosquitto_pub with a bad password succeeded: {out}")
    eq([m.payload for m in s.expect_msgs(1, settle=0.3)], [b"authed"], "messages")


@suite.test(settings=AUTH_ACL)
def acl_user_topics(ctx):
    alice = ctx.raw(version=5, username="alice", password=USERS["alice"])
    eq(alice.subscribe([("alice/x", 1), ("bob/x", 1), ("alice/#", 1), ("#", 1)]),
       [1, 0x87, 1, 0x87], "alice SUBACK codes")
    bob = ctx.raw(version=5, username="bob", password=USERS["bob"])
    eq(bob.subscribe([("bob/x", 1), ("alice/x", 1)]), [1, 1], "bob SUBACK codes (read rules)")
    # alice may write alice/x ...
    eq(alice.publish("alice/x", "from-alice", qos=1).reason, 0x00, "PUBACK for alice/x")
    # ... but not bob/x.
    eq(alice.publish("bob/x", "forbidden", qos=1).reason, 0x87, "PUBACK for alice -> bob/x")
    # bob may only read.
    eq(bob.publish("bob/x", "bob-write", qos=1).reason, 0x87, "PUBACK for bob -> bob/x (read)")
    got = []
    for p in alice.recv_all(0.2) + (alice.other or []) + bob.recv_all(0.5) + (bob.other or []):
        if p.type == P.PUBLISH:
            got.append((p.topic, p.payload))
    # alice/x reaches alice once (alice/x and alice/# overlap) and bob once.
    eq(sorted(got), [("alice/x", b"from-alice")] * 2, "deliveries to alice and bob")


@suite.test(settings=AUTH_ACL)
def acl_forbidden_publish_not_delivered(ctx):
    bob = ctx.paho(version=5, username="bob", password=USERS["bob"])
    eq(bob.subscribe("bob/#", qos=1), [1], "bob SUBACK")
    alice = ctx.raw(version=5, username="alice", password=USERS["alice"])
    eq(alice.publish("bob/secret", "x", qos=1).reason, 0x87, "PUBACK reason")
    alice.publish("alice/public", "y", qos=1)
    bob.expect_none(0.5)
    # 3.1.1 has no negative PUBACK: acknowledged, but still not delivered.
    a3 = ctx.raw(version=4, username="alice", password=USERS["alice"])
    eq(a3.subscribe([("bob/x", 1), ("alice/y", 1)]), [0x80, 1], "3.1.1 SUBACK codes")
    a3.publish("bob/secret", "z", qos=1)
    bob.expect_none(0.4)


@suite.test(settings=AUTH_ACL)
def acl_pattern_client_id(ctx):
    d1 = ctx.raw(version=5, client_id="dev1", username="dev1", password=USERS["dev1"])
    eq(d1.subscribe([("devices/dev1/#", 1), ("devices/dev2/#", 1), ("devices/+/x", 1)]),
       [1, 0x87, 0x87], "dev1 SUBACK codes")
    eq(d1.publish("devices/dev1/t", "mine", qos=1).reason, 0x00, "PUBACK for devices/dev1/t")
    eq(d1.publish("devices/dev2/t", "theirs", qos=1).reason, 0x87, "PUBACK for devices/dev2/t")
    pubs = [p for p in (d1.other or []) + d1.recv_all(0.5) if p.type == P.PUBLISH]
    eq([(p.topic, p.payload) for p in pubs], [("devices/dev1/t", b"mine")], "dev1 deliveries")
    # The pattern follows the client id, not the user name.
    d2 = ctx.raw(version=5, client_id="dev2", username="dev1", password=USERS["dev1"])
    eq(d2.subscribe([("devices/dev2/#", 1), ("devices/dev1/#", 1)]), [1, 0x87],
       "client id dev2 (user dev1) SUBACK codes")
    # A client id with a wildcard never widens the rule.
    d3 = ctx.raw(version=5, client_id="+", username="dev2", password=USERS["dev2"])
    eq(d3.subscribe([("devices/+/#", 1)]), [0x87], "client id '+' SUBACK")


@suite.test(settings=AUTH_ACL)
def acl_will_topic_checked_at_connect(ctx):
    for version, code in ((5, 0x87), (4, 5)):
        r = ctx.raw(version=version, connect=False)
        ca = r.connect(ctx.uid + f"-w{version}", username="alice", password=USERS["alice"],
                       will={"topic": "bob/will", "payload": "x"}, expect_rc=None)
        eq(ca.reason, code, f"v{version} CONNACK for a will on a forbidden topic")
        ok = ctx.raw(version=version, connect=False)
        ca = ok.connect(ctx.uid + f"-v{version}", username="alice", password=USERS["alice"],
                        will={"topic": "alice/will", "payload": "x"}, expect_rc=None)
        eq(ca.reason, 0, f"v{version} CONNACK for a will on an allowed topic")


@suite.test(settings=AUTH_ACL, fresh=True)
def acl_persistent_session_queues_after_restart(ctx):
    """ADR-0005: a persistent session and its subscriptions survive a restart, so a QoS 1
    message acknowledged to its publisher while the (authorised) subscriber is offline
    must be delivered when it returns."""
    cid = ctx.uid + "-alice"
    a = ctx.raw(version=5, client_id=cid, username="alice", password=USERS["alice"],
                props={P.SESSION_EXPIRY: 3600})
    eq(a.subscribe([("alice/inbox/#", 1)]), [1], "SUBACK")
    a.disconnect()
    ctx.d.restart()
    pub = ctx.raw(version=5, username="alice", password=USERS["alice"])
    eq(pub.publish("alice/inbox/1", "after-restart", qos=1).reason, 0x00,
       "PUBACK reason (the offline persistent session matches)")
    a = ctx.raw(version=5, client_id=cid, clean=False, username="alice",
                password=USERS["alice"], props={P.SESSION_EXPIRY: 3600})
    eq(a.connack.session_present, True, "session present after restart")
    got = [(p.topic, p.payload) for p in a.recv_all(0.8) if p.type == P.PUBLISH]
    eq(got, [("alice/inbox/1", b"after-restart")], "queued while offline after the restart")


@suite.test()
def anonymous_loopback_allowed_by_default(ctx):
    for version in (4, 5):
        c = ctx.paho(version=version)
        t = ctx.topic(f"anon{version}")
        c.subscribe(t, qos=1)
        c.publish(t, "x", qos=1)
        c.expect_msgs(1)
    rc, out = ctx.mosq_pub(ctx.topic("m"), "x", qos=1)
    eq(rc, 0, out)


if __name__ == "__main__":
    suite.main()
