#!/usr/bin/python3
"""Tenant namespaces (ADR-0009): every user of the password file lives in its own
namespace with auth.namespace_per_user, anonymous clients stay global.

Two tenants ("acme", "globex") and global clients exchange messages on the same
client-visible topics; every test checks that nothing crosses a namespace
boundary: wildcard subscriptions, sessions with equal client ids, retained
messages, shared subscriptions, wills, $SYS, topic aliases, request/response,
the ACL, and persistent sessions across a restart and a kill -9.  Every publish
that a subscriber of another namespace could have received, had isolation
failed, counts as one cross-namespace attempt; the last line says how many were
made and how many leaked.
"""
import atexit
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from mqtt_testlib import P, Suite, TestFailure, check, eq, sub_opts  # noqa: E402
from mqtt_testlib import suite_binary_from_argv  # noqa: E402

suite = Suite(__file__)

USERS = {"acme": "acme-pw", "globex": "globex-pw", "a/b": "slash-pw"}
ACL = """\
user acme
topic readwrite t/#
topic read feed/#
user globex
topic readwrite #
"""

_dir = tempfile.mkdtemp(prefix="drover-ns-")
atexit.register(shutil.rmtree, _dir, True)
PASSWD = os.path.join(_dir, "passwd")
ACLFILE = os.path.join(_dir, "acl")


def _make_files(binary):
    with open(PASSWD, "w") as f:
        for u, pw in USERS.items():
            line = subprocess.run([binary, "passwd", u, pw], check=True, capture_output=True,
                                  timeout=30).stdout.decode().strip()
            f.write(line + "\n")
    with open(ACLFILE, "w") as f:
        f.write(ACL)


_make_files(suite_binary_from_argv())

# Per-user namespaces are for a broker without the registry (api.enabled=false):
# with the registry, namespaces are its tenants.
NS = {"auth.password_file": PASSWD, "auth.namespace_per_user": "true", "api.enabled": "false"}
NS_SYS = dict(NS, **{"mqtt.sys_interval": "1"})
NS_ACL = dict(NS, **{"auth.acl_file": ACLFILE})


class Tally:
    attempts = 0
    leaked = 0


def crossing(n=1):
    """n more deliveries that isolation must prevent."""
    Tally.attempts += n


def no_leak(got, what):
    """got: the PUBLISHes a client received that it must not have; each is a leak."""
    if got:
        Tally.leaked += len(got)
        raise TestFailure(f"{what}: leaked across namespaces: {got}")


def pubs(packets):
    return [(p.topic, p.payload) for p in packets if p.type == P.PUBLISH]


def drain(client, duration=0.5):
    """Every PUBLISH a raw client received (including ones kept aside while publishing)."""
    got = list(client.other or [])
    client.other = []
    got += client.recv_all(duration)
    for p in got:
        if p.type == P.PUBLISH:
            client.ack(p)
    return pubs(got)


def tenant(ctx, user, version=5, **kw):
    return ctx.raw(version=version, username=user, password=USERS[user], **kw)


def wildcard_trio(ctx, version=5):
    """A '#' subscriber in each tenant and in the global namespace."""
    a = tenant(ctx, "acme", version)
    g = tenant(ctx, "globex", version)
    x = ctx.raw(version=version)
    for c in (a, g, x):
        eq(c.subscribe([("#", 1)]), [1], "SUBACK for #")
    return a, g, x


@suite.test(settings=NS, fresh=True)
def wildcard_subscribers_see_only_their_tenant(ctx):
    for version in (5, 4):
        a, g, x = wildcard_trio(ctx, version)
        admin = ctx.raw(version=version)
        eq(admin.subscribe([("$T/+/#", 1)]), [1], "global SUBACK for $T/+/#")
        pa = tenant(ctx, "acme", version)
        pg = tenant(ctx, "globex", version)
        px = ctx.raw(version=version)
        for i in range(3):
            pa.publish("t/x", f"acme{i}", qos=1)
            pg.publish("t/x", f"globex{i}", qos=1)
            px.publish("t/x", f"global{i}", qos=1)
            # "../" is a level name, not a path: it stays in the publisher's namespace.
            pa.publish("../globex/t/x", f"dots{i}", qos=0)
        pa.ping()
        pg.ping()
        px.ping()
        # Each message has two subscribers ('#' of the other namespaces) it must not reach.
        crossing(2 * 4 * 3)
        got_a, got_g, got_x = drain(a), drain(g), drain(x)
        no_leak([m for m in got_a if not m[1].startswith((b"acme", b"dots"))], "acme #")
        no_leak([m for m in got_g if not m[1].startswith(b"globex")], "globex #")
        no_leak([m for m in got_x if not m[1].startswith(b"global")], "global #")
        eq(sorted(got_a), sorted([("t/x", b"acme%d" % i) for i in range(3)] +
                                 [("../globex/t/x", b"dots%d" % i) for i in range(3)]),
           f"v{version} acme # receives its own messages, without the prefix")
        eq(got_g, [("t/x", b"globex%d" % i) for i in range(3)], f"v{version} globex #")
        eq(got_x, [("t/x", b"global%d" % i) for i in range(3)], f"v{version} global #")
        # The platform's view: a global client names tenants explicitly.
        got_admin = drain(admin)
        eq(sorted(t for t, _ in got_admin),
           sorted(["$T/acme/t/x"] * 3 + ["$T/acme/../globex/t/x"] * 3 + ["$T/globex/t/x"] * 3),
           "global $T/+/# sees every tenant with the internal topics")
        for c in (a, g, x, admin, pa, pg, px):
            c.disconnect()


@suite.test(settings=NS, fresh=True)
def global_client_reaches_into_a_tenant(ctx):
    a, g, x = wildcard_trio(ctx)
    px = ctx.raw(version=5)
    eq(px.publish("$T/acme/cmd/1", "to-acme", qos=1).reason, 0, "PUBACK for $T/acme/cmd/1")
    crossing(2)
    eq(drain(a), [("cmd/1", b"to-acme")], "acme receives a command from the platform")
    no_leak(drain(g), "globex #")
    no_leak(drain(x, 0.1), "global #")
    # Topics a tenant's client could not receive are refused.
    for t in ("$T/acme", "$T/acme/", "$T//x", "$T/acme/$SYS/x"):
        eq(px.publish(t, "bad", qos=1).reason, 0x87, f"PUBACK for a global publish to {t!r}")
    crossing(2 * 4)
    no_leak(drain(a) + drain(g), "tenant # after refused publishes")


@suite.test(settings=NS, fresh=True)
def tenant_cannot_name_another_namespace(ctx):
    a, g, x = wildcard_trio(ctx)
    pa = tenant(ctx, "acme")
    for t in ("$T/globex/t/x", "$SYS/broker/x", "$share/g/t", "$anything"):
        eq(pa.publish(t, "forged", qos=1).reason, 0x87, f"PUBACK for acme -> {t!r}")
    crossing(2 * 4)
    got = drain(a) + drain(g) + drain(x)
    no_leak(got, "forged topics")
    # Subscriptions cannot escape either: '$' filters are refused, '#' stays inside.
    eq(pa.subscribe([("$T/globex/#", 1), ("$T/+/#", 1), ("$share/g/$T/#", 1), ("+/#", 1)]),
       [0x87, 0x87, 0x87, 1], "acme SUBACK codes for filters outside its namespace")
    pg = tenant(ctx, "globex")
    pg.publish("t/y", "globex-only", qos=1)
    crossing(2)
    no_leak(drain(pa) + drain(a), "acme filters after a globex publish")
    eq(drain(g), [("t/y", b"globex-only")], "globex # still works")


@suite.test(settings=NS, fresh=True)
def same_client_id_in_two_tenants(ctx):
    p5 = {P.SESSION_EXPIRY: 300}
    a = tenant(ctx, "acme", client_id="sensor-1", props=p5)
    g = tenant(ctx, "globex", client_id="sensor-1", props=p5)
    x = ctx.raw(version=5, client_id="sensor-1", props=p5)
    for c in (a, g, x):
        eq(c.connack.session_present, False, "a new session in each namespace")
        eq(c.subscribe([("cmd/#", 1)]), [1], "SUBACK")
    # No takeover: all three connections are still open.
    for c in (a, g, x):
        c.ping()
    px = ctx.raw(version=5)
    px.publish("$T/acme/cmd/1", "for-acme", qos=1)
    px.publish("$T/globex/cmd/1", "for-globex", qos=1)
    px.publish("cmd/1", "for-global", qos=1)
    crossing(6)
    eq(drain(a), [("cmd/1", b"for-acme")], "acme sensor-1")
    eq(drain(g), [("cmd/1", b"for-globex")], "globex sensor-1")
    eq(drain(x), [("cmd/1", b"for-global")], "global sensor-1")
    # A reconnect takes over its own tenant's session only.
    a2 = tenant(ctx, "acme", client_id="sensor-1", clean=False, props=p5)
    eq(a2.connack.session_present, True, "acme sensor-1 resumes its session")
    closed, _ = a.wait_closed(2)
    check(closed, "the old acme connection was taken over")
    g.ping()
    x.ping()
    px.publish("$T/acme/cmd/2", "again", qos=1)
    crossing(2)
    eq(drain(a2), [("cmd/2", b"again")], "the resumed acme session keeps its subscription")
    no_leak(drain(g) + drain(x), "other sensor-1 sessions")


@suite.test(settings=NS, fresh=True)
def retained_messages_isolated(ctx):
    tenant(ctx, "acme").publish("cfg/r", "A", qos=1, retain=True)
    tenant(ctx, "globex").publish("cfg/r", "G", qos=1, retain=True)
    tenant(ctx, "globex").publish("cfg/only-globex", "G2", qos=1, retain=True)
    ctx.raw(version=5).publish("cfg/r", "X", qos=1, retain=True)
    for version in (5, 4):
        a = tenant(ctx, "acme", version)
        g = tenant(ctx, "globex", version)
        x = ctx.raw(version=version)
        eq(a.subscribe([("#", 1)]), [1], "SUBACK")
        eq(g.subscribe([("cfg/+", 1)]), [1], "SUBACK")
        eq(x.subscribe([("#", 1)]), [1], "SUBACK")
        crossing(4 + 2 + 3)
        eq(drain(a), [("cfg/r", b"A")], f"v{version} acme's retained messages")
        eq(sorted(drain(g)), [("cfg/only-globex", b"G2"), ("cfg/r", b"G")],
           f"v{version} globex's retained messages")
        eq(drain(x), [("cfg/r", b"X")], f"v{version} global retained messages under #")
    admin = ctx.raw(version=5)
    eq(admin.subscribe([("$T/+/cfg/r", 1)]), [1], "SUBACK")
    eq(sorted(drain(admin)), [("$T/acme/cfg/r", b"A"), ("$T/globex/cfg/r", b"G")],
       "a global $T/+/cfg/r sees both tenants' retained messages")
    # Clearing is per namespace too.
    tenant(ctx, "acme").publish("cfg/r", "", qos=1, retain=True)
    g = tenant(ctx, "globex")
    eq(g.subscribe([("cfg/r", 1)]), [1], "SUBACK")
    eq(drain(g), [("cfg/r", b"G")], "globex's retained message survives acme clearing its own")


@suite.test(settings=NS, fresh=True)
def shared_subscriptions_isolated(ctx):
    members = {}
    for who in ("acme", "globex", None):
        ms = []
        for i in range(2):
            c = tenant(ctx, who) if who else ctx.raw(version=5)
            eq(c.subscribe([("$share/g/work/#", 1)]), [1], "SUBACK")
            ms.append(c)
        members[who] = ms
    pubs_by = {"acme": tenant(ctx, "acme"), "globex": tenant(ctx, "globex"),
               None: ctx.raw(version=5)}
    n = 10
    for who, p in pubs_by.items():
        for i in range(n):
            p.publish(f"work/{i}", f"{who}-{i}", qos=1)
    crossing(2 * 3 * n)  # each message, two foreign groups
    for who, ms in members.items():
        got = []
        for c in ms:
            got += drain(c)
        prefix = f"{who}-".encode()
        no_leak([m for m in got if not m[1].startswith(prefix)], f"group g of {who}")
        eq(sorted(got), sorted((f"work/{i}", f"{who}-{i}".encode()) for i in range(n)),
           f"group g of {who} gets each of its messages once")
    # Unsubscribing a shared and a plain filter works with the client's names.
    c = members["acme"][0]
    eq(c.subscribe([("plain/#", 1)]), [1], "SUBACK")
    eq(c.unsubscribe(["$share/g/work/#", "plain/#", "plain/#"]), [0, 0, 0x11], "UNSUBACK codes")


@suite.test(settings=NS, fresh=True)
def wills_stay_in_the_namespace(ctx):
    a, g, x = wildcard_trio(ctx)
    for version in (5, 4):
        dev = ctx.raw(version=version, connect=False)
        dev.connect(f"will-{version}", username="acme", password=USERS["acme"],
                    will={"topic": "status/dev", "payload": f"offline{version}", "qos": 1})
        dev.close()  # no DISCONNECT: the will is published
        crossing(2)
        time.sleep(0.3)
        eq(drain(a), [("status/dev", b"offline%d" % version)], f"v{version} acme gets its will")
        no_leak(drain(g) + drain(x, 0.1), "will of an acme client")
    # A will outside the namespace is refused at CONNECT.
    for version, code in ((5, 0x87), (4, 5)):
        r = ctx.raw(version=version, connect=False)
        ca = r.connect(f"badwill-{version}", username="acme", password=USERS["acme"],
                       will={"topic": "$T/globex/status", "payload": "x"}, expect_rc=None)
        eq(ca.reason, code, f"v{version} CONNACK for a will on a '$' topic")
    # A global client's will on a tenant topic it could not publish to is refused too.
    r = ctx.raw(version=5, connect=False)
    ca = r.connect("badwill-global", will={"topic": "$T/acme", "payload": "x"}, expect_rc=None)
    eq(ca.reason, 0x87, "CONNACK for a global will on a namespace root")


@suite.test(settings=NS_SYS, fresh=True)
def sys_refused_for_namespaced_clients(ctx):
    filters = [("$SYS/#", 0), ("$SYS/broker/uptime", 0), ("$share/g/$SYS/#", 0), ("#", 0)]
    a5 = tenant(ctx, "acme", 5)
    eq(a5.subscribe(filters), [0x87, 0x87, 0x87, 0], "v5 SUBACK codes for $SYS")
    a4 = tenant(ctx, "acme", 4)
    eq(a4.subscribe(filters), [0x80, 0x80, 0x80, 0], "v3.1.1 SUBACK codes for $SYS")
    x = ctx.raw(version=5)
    eq(x.subscribe([("$SYS/broker/uptime", 0)]), [0], "global SUBACK for $SYS")
    eq(a5.publish("$SYS/broker/uptime", "0", qos=1).reason, 0x87, "acme PUBACK for $SYS")
    got_x = drain(x, 1.5)
    check(any(t == "$SYS/broker/uptime" for t, _ in got_x),
          f"a global client receives $SYS (the check below means something): {got_x}")
    crossing(2 * len(got_x))
    no_leak(drain(a5, 0.1) + drain(a4, 0.1), "$SYS to namespaced clients")


@suite.test(settings=NS, fresh=True)
def topic_aliases(ctx):
    a, g, x = wildcard_trio(ctx)
    # Outbound aliases map the topic the client sees.
    sub = tenant(ctx, "acme", props={P.TOPIC_ALIAS_MAXIMUM: 5})
    eq(sub.subscribe([("a/#", 0)]), [0], "SUBACK")
    pa = tenant(ctx, "acme")
    # Inbound: the alias is set with the client's topic and used with an empty one.
    pa.publish("a/b", "one", qos=1, props={P.TOPIC_ALIAS: 1})
    pa.publish("", "two", qos=1, props={P.TOPIC_ALIAS: 1})
    crossing(2 * 2)
    eq(drain(a), [("a/b", b"one"), ("a/b", b"two")], "acme # receives both aliased publishes")
    no_leak(drain(g) + drain(x, 0.1), "aliased publishes")
    got = [p for p in sub.recv_all(0.5) if p.type == P.PUBLISH]
    eq([(p.topic, p.props.get(P.TOPIC_ALIAS)) for p in got], [("a/b", 1), ("", 1)],
       "outbound alias: set with the stripped topic, then used")
    # The same alias number in another tenant is that tenant's own.
    pg = tenant(ctx, "globex")
    pg.publish("z/z", "g", qos=1, props={P.TOPIC_ALIAS: 1})
    pg.publish("", "g2", qos=1, props={P.TOPIC_ALIAS: 1})
    crossing(2 * 2)
    eq(drain(g), [("z/z", b"g"), ("z/z", b"g2")], "globex aliases")
    no_leak(drain(a) + drain(x, 0.1), "globex aliased publishes")


@suite.test(settings=NS, fresh=True)
def request_response_topic_left_as_sent(ctx):
    req = tenant(ctx, "acme")
    eq(req.subscribe([("resp/me", 1)]), [1], "SUBACK")
    srv = tenant(ctx, "acme")
    eq(srv.subscribe([("req/#", 1)]), [1], "SUBACK")
    g = tenant(ctx, "globex")
    eq(g.subscribe([("#", 1)]), [1], "SUBACK")
    req.publish("req/time", "now?", qos=1,
                props={P.RESPONSE_TOPIC: "resp/me", P.CORRELATION_DATA: b"42"})
    got = [p for p in srv.recv_all(0.5) if p.type == P.PUBLISH]
    eq(len(got), 1, "the responder gets the request")
    eq(got[0].props.get(P.RESPONSE_TOPIC), "resp/me",
       "Response Topic is forwarded as the requester sent it")
    srv.ack(got[0])
    srv.publish(got[0].props[P.RESPONSE_TOPIC], "noon", qos=1,
                props={P.CORRELATION_DATA: got[0].props[P.CORRELATION_DATA]})
    eq(drain(req), [("resp/me", b"noon")], "the response reaches the requester")
    crossing(2)
    no_leak(drain(g), "request/response inside acme")


@suite.test(settings=NS_ACL, fresh=True)
def acl_sees_the_client_topic(ctx):
    a = tenant(ctx, "acme")
    eq(a.subscribe([("t/#", 1), ("feed/#", 1), ("u/#", 1), ("$T/acme/t/#", 1)]),
       [1, 1, 0x87, 0x87], "acme SUBACK codes under its ACL (rules name client topics)")
    eq(a.publish("t/1", "ok", qos=1).reason, 0, "acme may write t/1")
    eq(a.publish("feed/1", "no", qos=1).reason, 0x87, "acme may only read feed/#")
    g = tenant(ctx, "globex")
    eq(g.subscribe([("#", 1)]), [1], "globex SUBACK (readwrite #)")
    eq(g.publish("feed/1", "globex-feed", qos=1).reason, 0, "globex may write its feed/1")
    crossing(1)
    eq(drain(a), [("t/1", b"ok")], "acme receives t/1, not globex's feed/1")
    eq(drain(g), [("feed/1", b"globex-feed")], "globex")


@suite.test(settings=NS)
def bad_user_name_refused(ctx):
    for version, code in ((5, 0x87), (4, 5)):
        r = ctx.raw(version=version, connect=False)
        ca = r.connect(f"slash-{version}", username="a/b", password=USERS["a/b"],
                       expect_rc=None)
        eq(ca.reason, code, f"v{version} CONNACK for a user name that is not one level")
        eq(r.wait_closed(2)[0], True, "closed")


def _persistent_session_survives(ctx, restart):
    p5 = {P.SESSION_EXPIRY: 3600}
    subs = {}
    for who in ("acme", "globex", None):
        c = (tenant(ctx, who, client_id="sensor-1", props=p5) if who else
             ctx.raw(version=5, client_id="sensor-1", props=p5))
        eq(c.subscribe([("inbox/#", 1), ("$share/grp/jobs/#", 1)]), [1, 1], "SUBACK")
        c.disconnect()
        subs[who] = c
    # Queued before the restart ...
    tenant(ctx, "acme").publish("inbox/1", "a1", qos=1)
    tenant(ctx, "globex").publish("inbox/1", "g1", qos=1)
    restart()
    # ... and after it, to subscriptions that came back from the log.
    eq(tenant(ctx, "acme").publish("inbox/2", "a2", qos=1).reason, 0, "PUBACK for acme")
    eq(tenant(ctx, "globex").publish("jobs/1", "gj", qos=1).reason, 0, "PUBACK for globex")
    ctx.raw(version=5).publish("$T/acme/inbox/3", "a3", qos=1)
    ctx.raw(version=5).publish("inbox/1", "x1", qos=1)
    ctx.d.kill9_restart()
    crossing(2 * 6)
    expect = {"acme": [("inbox/1", b"a1"), ("inbox/2", b"a2"), ("inbox/3", b"a3")],
              "globex": [("inbox/1", b"g1"), ("jobs/1", b"gj")],
              None: [("inbox/1", b"x1")]}
    for who in ("acme", "globex", None):
        c = (tenant(ctx, who, client_id="sensor-1", clean=False, props=p5) if who else
             ctx.raw(version=5, client_id="sensor-1", clean=False, props=p5))
        eq(c.connack.session_present, True, f"{who or 'global'} sensor-1 session present")
        got = sorted(pubs(c.collect_publishes()))
        no_leak([m for m in got if m not in expect[who]], f"{who or 'global'} sensor-1 queue")
        eq(got, expect[who], f"{who or 'global'} sensor-1 gets its queued messages")
        c.disconnect()


@suite.test(settings=NS, fresh=True, timeout=40)
def persistent_session_survives_restart(ctx):
    _persistent_session_survives(ctx, ctx.d.restart)


@suite.test(settings=NS, fresh=True, timeout=40)
def persistent_session_survives_kill9(ctx):
    _persistent_session_survives(ctx, ctx.d.kill9_restart)


# -- the log format (ADR-0005, ADR-0009): records written by hand -------------------------

def _crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def _rec(rtype, body):
    data = bytes([rtype]) + body
    return struct.pack("<II", len(data), _crc32c(data)) + data


def _s(v):
    v = v.encode() if isinstance(v, str) else v
    return struct.pack("<H", len(v)) + v


def _session(key, user=None):
    return _rec(1, _s(key) + struct.pack("<IBB", 3600, 5, user is not None) + _s(user or ""))


def _sub(key, flt):
    return _rec(3, _s(key) + _s(flt) + struct.pack("<BBBI", 1, 0, 0, 0))


def _msg(mid, topic, payload):
    return _rec(5, struct.pack("<QBBQ", mid, 1, 0, 0) + _s(topic) + struct.pack("<I", 0) +
                struct.pack("<I", len(payload)) + payload)


def _queue(key, mid):
    return _rec(6, _s(key) + struct.pack("<QBBB", mid, 1, 0, 0))


@suite.test(settings=NS, fresh=True)
def log_without_namespaces_replays(ctx):
    """A log written before namespaces (keys without a NUL) replays as global sessions;
    a key with a namespace replays into that tenant; a key with an invalid namespace
    is skipped, not a crash."""
    log = os.path.join(ctx.d.data_dir, "data", "broker.log")
    ctx.d.stop()
    with open(log, "wb") as f:
        f.write(_session("old-dev") + _sub("old-dev", "inbox/#") +
                _msg(7, "inbox/old", b"from-old-log") + _queue("old-dev", 7))
        f.write(_session(b"dev\0$T/acme", "acme") + _sub(b"dev\0$T/acme", "$T/acme/inbox/#") +
                _msg(8, "$T/acme/inbox/new", b"for-acme") + _queue(b"dev\0$T/acme", 8))
        f.write(_session(b"dev\0$X/bad") + _sub(b"dev\0$X/bad", "#") + _queue(b"dev\0$X/bad", 7))
        f.write(_session(b"dev\0$T/a/b") + _queue(b"dev\0$T/a/b", 8))
    ctx.d.start()
    old = ctx.raw(version=5, client_id="old-dev", clean=False, props={P.SESSION_EXPIRY: 3600})
    eq(old.connack.session_present, True, "the old session is back, global")
    eq(pubs(old.collect_publishes()), [("inbox/old", b"from-old-log")], "its queued message")
    dev = tenant(ctx, "acme", client_id="dev", clean=False, props={P.SESSION_EXPIRY: 3600})
    eq(dev.connack.session_present, True, "acme's dev session is back")
    eq(pubs(dev.collect_publishes()), [("inbox/new", b"for-acme")], "stripped on delivery")
    g = tenant(ctx, "globex", client_id="dev", clean=False, props={P.SESSION_EXPIRY: 3600})
    eq(g.connack.session_present, False, "globex has no session called dev")
    crossing(1)
    no_leak(pubs(g.collect_publishes(0.3)), "globex dev")
    check("persistence: log replayed" in ctx.d.read_log(), "the log was replayed")


if __name__ == "__main__":
    try:
        suite.main()
    finally:
        print(f"cross-namespace attempts: {Tally.attempts}, leaked: {Tally.leaked}", flush=True)
