#!/usr/bin/python3
"""How devices prove who they are on MQTT, end to end (issue 4): registered through
the REST API, checked by the broker's registry auth (src/registry/auth_registry.c).

Secrets: right and wrong, revocation takes effect at once although a verified
secret is cached, rotation with an overlap (two secrets, then the old one revoked
or its not_after passing), decommissioning refuses the device and closes its live
session, and a device stays inside devices/<device>/ of its own tenant.
JWTs (src/registry/device_jwt.c): ES256 and RS256 tokens signed here with the
`openssl` CLI (the ECDSA DER signature turned into R || S in Python), and every
way a token must be refused; rotation of jwt_key credentials.
X.509: a client certificate signed by the development CA the server made in
data_dir/tls (also its tls.client_ca_file here), registered by PEM; what happens to
an unregistered or revoked certificate and a wrong client id.
Device status: connected/disconnected events and connectivity.online.

The server runs with auth.allow_anonymous=never, so a client the registry does not
know is refused by the static backend rather than admitted anonymously; one test
shows the loopback default, where an unregistered certificate is just an anonymous
client in the global namespace.  mqtt.jwt_audience is "drover-test", so that a
token made for the default audience "drover" is refused.

CONNACK codes (as the broker answers them, src/broker/handle_connect.c): the
registry's "no" to a device user name is 0x86 bad user name or password (MQTT 3.1.1:
4); a client without a user name the registry declines (unknown or revoked
certificate) reaches the static backend, whose "no anonymous" is 0x87 not
authorised (3.1.1: 5).

Usage: test_device_auth.py --drover BINARY [-k NAME]
"""
import base64
import contextlib
import datetime
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "broker"))
from apilib import BASE_SETTINGS, Api, Suite, check, eq, expect, wait_until  # noqa: E402
from drover import Drover, free_port  # noqa: E402
from mqtt_testlib import P, PahoClient, RawClient  # noqa: E402

suite = Suite("test_device_auth")

AUDIENCE = "drover-test"
BAD_AUTH_5, BAD_AUTH_3 = 0x86, 4        # DRV_AUTH
NOT_AUTHORISED_5, NOT_AUTHORISED_3 = 0x87, 5  # DRV_DENIED
ADMINISTRATIVE_ACTION = 0x98


# -- keys, certificates and tokens, with the openssl CLI ------------------------------------

def openssl(*args, data=None):
    return subprocess.run(["openssl", *args], input=data, check=True, capture_output=True,
                          timeout=60).stdout


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def der_ecdsa_to_raw(der):
    """An ECDSA-Sig-Value (SEQUENCE of two INTEGERs) as JWS wants it: R || S, 32 bytes each."""
    check(der[0] == 0x30, f"not a DER sequence: {der[:4].hex()}")
    pos = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7f)
    out = b""
    for _ in range(2):
        check(der[pos] == 0x02, f"not a DER INTEGER at {pos}")
        n = der[pos + 1]
        v = int.from_bytes(der[pos + 2:pos + 2 + n], "big")
        out += v.to_bytes(32, "big")
        pos += 2 + n
    return out


class Key:
    """A private key in a temp dir; alg ES256 (P-256) or RS256 (RSA 2048)."""

    def __init__(self, tmp, name, alg):
        self.alg = alg
        self.path = os.path.join(tmp, name + ".key")
        if alg == "ES256":
            openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-out", self.path)
        else:
            openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", self.path)
        self.public_pem = openssl("pkey", "-in", self.path, "-pubout").decode()

    def sign(self, data):
        sig = openssl("dgst", "-sha256", "-sign", self.path, data=data)
        return der_ecdsa_to_raw(sig) if self.alg == "ES256" else sig


def jwt(key, claims, header=None, tamper=None):
    """A compact JWS signed by key; tamper(claims) changes the payload after signing."""
    h = b64url(json.dumps(header or {"alg": key.alg, "typ": "JWT"}).encode())
    p = b64url(json.dumps(claims).encode())
    sig = key.sign(f"{h}.{p}".encode())
    if tamper:
        p = b64url(json.dumps(tamper(dict(claims))).encode())
    return f"{h}.{p}.{b64url(sig)}"


def claims(device=None, lifetime=3600, iat_offset=0, aud=AUDIENCE, **extra):
    now = int(time.time())
    c = {"iat": now + iat_offset, "exp": now + iat_offset + lifetime, "aud": aud}
    if device:
        c["sub"] = device
    c.update(extra)
    return c


def rfc3339(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# -- the server -------------------------------------------------------------------------------

class Env:
    def __init__(self, binary, d, api, tmp):
        self.binary = binary
        self.d = d
        self.api = api
        self.tmp = tmp
        self.n = 0
        self.tls_dir = os.path.join(d.data_dir, "data", "tls")

    def alive(self):
        return self.d.alive()

    def tenant(self, prefix):
        """A fresh tenant and an Api with a tenant_admin token of it."""
        self.n += 1
        tid = f"{prefix}-{self.n}"
        expect(self.api.post("/api/v1/tenants", {"id": tid, "name": tid}), 201, "create tenant")
        r = expect(self.api.post(f"/api/v1/tenants/{tid}/tokens",
                                 {"name": "admin", "role": "tenant_admin"}), 201, "admin token")
        return tid, self.api.as_token(r.json["token"])

    def device(self, admin, tid, dev, *creds):
        """Create a device with credentials; returns the credentials as the API answered."""
        expect(admin.post(f"/api/v1/tenants/{tid}/devices", {"id": dev}), 201, f"device {dev}")
        return [self.cred(admin, tid, dev, c) for c in creds]

    def cred(self, admin, tid, dev, body):
        return expect(admin.post(f"/api/v1/tenants/{tid}/devices/{dev}/credentials", body), 201,
                      f"credential for {dev}").json

    def revoke(self, admin, tid, dev, cid):
        expect(admin.delete(f"/api/v1/tenants/{tid}/devices/{dev}/credentials/{cid}"), 204,
               "revoke")

    def connack(self, user, password, version=5, client_id=None):
        """The CONNACK code a plain TCP CONNECT with this user name and password gets."""
        c = RawClient(self.d.port, version)
        try:
            pw = password.encode() if isinstance(password, str) else password
            ca = c.connect(client_id or f"c{time.monotonic_ns()}", username=user, password=pw,
                           expect_rc=None)
            return ca.reason
        finally:
            c.close()

    def raw(self, user, password, version=5, client_id=None):
        c = RawClient(self.d.port, version)
        c.connect(client_id or f"c{time.monotonic_ns()}", username=user,
                  password=password.encode(), expect_rc=0)
        return c

    def client_cert(self, name, cn, ca_dir=None):
        """A client certificate for CN=cn signed by a CA (the development one by default)."""
        ca_dir = ca_dir or self.tls_dir
        key = os.path.join(self.tmp, name + ".key")
        cert = os.path.join(self.tmp, name + ".pem")
        csr = os.path.join(self.tmp, name + ".csr")
        ext = os.path.join(self.tmp, name + ".ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                    "extendedKeyUsage=clientAuth\n")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
        openssl("x509", "-req", "-in", csr, "-CA", os.path.join(ca_dir, "ca.pem"),
                "-CAkey", os.path.join(ca_dir, "ca.key"), "-set_serial",
                str(int.from_bytes(os.urandom(8), "big")), "-days", "2", "-sha256",
                "-extfile", ext, "-out", cert)
        return cert, key

    def tls_paho(self, client_id, cert, key, version=5, username=None, password=None,
                 expect_rc=0, port=None, ca=None):
        """A paho client over TLS with a client certificate; returns (client, CONNACK code)."""
        c = PahoClient(port or self.tls_port, client_id, version)
        c.c.tls_set(ca_certs=ca or os.path.join(self.tls_dir, "ca.pem"), certfile=cert,
                    keyfile=key)
        # mqtt_testlib's own loop thread must be the only one touching the SSL object
        # (see tests/broker/test_tls.py).
        c.c._thread = threading.main_thread()
        ca = c.connect(username=username, password=password, expect_rc=None, timeout=10)
        if expect_rc is not None:
            eq(ca[1], expect_rc, f"CONNACK over TLS for {client_id}")
        return c, ca[1]

    def log_count(self, text):
        with open(self.d.log_path, "rb") as f:
            return f.read().decode(errors="replace").count(text)

    def events(self, admin, tid, dev):
        r = expect(admin.get(f"/api/v1/tenants/{tid}/devices/{dev}/events"), 200, "events")
        return [e["kind"] for e in r.json["items"]]

    def online(self, admin, tid, dev):
        r = expect(admin.get(f"/api/v1/tenants/{tid}/devices/{dev}"), 200, "device")
        return (r.json.get("connectivity") or {}).get("online")


@contextlib.contextmanager
def setup(binary):
    tmp = tempfile.mkdtemp(prefix="drover-devauth-")
    settings = dict(BASE_SETTINGS)
    tls_port = free_port()
    settings.update({
        "auth.allow_anonymous": "never",
        "mqtt.jwt_audience": AUDIENCE,
        "mqtt.tls_listen": f"127.0.0.1:{tls_port}",
    })
    d = Drover(binary, settings=settings, http_port=True)
    # The development CA is made at start, before the client CA file is read, so the
    # server can trust the CA it makes (Drover passes --data-dir <dir>/data).
    d.settings["tls.client_ca_file"] = os.path.join(d.data_dir, "data", "tls", "ca.pem")
    try:
        with d:
            env = Env(binary, d, Api(d.http_port, d.admin_token()), tmp)
            env.tls_port = tls_port
            env.ec = Key(tmp, "ec", "ES256")
            env.ec2 = Key(tmp, "ec2", "ES256")
            env.rsa = Key(tmp, "rsa", "RS256")
            yield env
            log = d.read_log()
            check("AddressSanitizer" not in log and "runtime error" not in log,
                  "sanitizer report in the server log")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def received(c, quiet=0.4):
    """The PUBLISHes a RawClient got: those that arrived while it waited for an ack, and
    those that arrive until it has been quiet for a while."""
    early = [p for p in (c.other or []) if p.type == P.PUBLISH]
    for p in early:
        c.ack(p)
    c.other = []
    return early + c.collect_publishes(quiet=quiet)


def both_versions(env, user, password, want5, want3, what):
    eq(env.connack(user, password, 5), want5, f"{what} (MQTT 5)")
    eq(env.connack(user, password, 4), want3, f"{what} (MQTT 3.1.1)")


# -- secrets ----------------------------------------------------------------------------------

@suite.test()
def secret_right_and_wrong(env):
    tid, admin = env.tenant("sec")
    env.device(admin, tid, "s1", {"kind": "secret", "secret": "s1-secret-0123456789"})
    both_versions(env, f"{tid}/s1", "s1-secret-0123456789", 0, 0, "the right secret")
    both_versions(env, f"{tid}/s1", "s1-secret-012345678", BAD_AUTH_5, BAD_AUTH_3,
                  "a wrong secret")
    both_versions(env, f"{tid}/s2", "s1-secret-0123456789", BAD_AUTH_5, BAD_AUTH_3,
                  "an unknown device")
    both_versions(env, "other-tenant/s1", "s1-secret-0123456789", BAD_AUTH_5, BAD_AUTH_3,
                  "another tenant's name")
    c = RawClient(env.d.port, 5)
    try:
        eq(c.connect("s1", username=f"{tid}/s1", expect_rc=None).reason, BAD_AUTH_5,
           "no password")
    finally:
        c.close()
    # Without the registry's user name form, the static backend (no anonymous) refuses.
    eq(env.connack(None, None, 5), NOT_AUTHORISED_5, "anonymous")


@suite.test()
def revoked_secret_is_refused_at_once(env):
    tid, admin = env.tenant("rev")
    (cred,) = env.device(admin, tid, "r1", {"kind": "secret", "secret": "r1-secret-0123456789"})
    for _ in range(2):  # the second connect is served from the verified-secret cache
        eq(env.connack(f"{tid}/r1", "r1-secret-0123456789"), 0, "before revocation")
    env.revoke(admin, tid, "r1", cred["id"])
    both_versions(env, f"{tid}/r1", "r1-secret-0123456789", BAD_AUTH_5, BAD_AUTH_3,
                  "right after revocation")


@suite.test()
def secret_rotation_overlap_until_revoked(env):
    tid, admin = env.tenant("rot")
    old, new = env.device(admin, tid, "o1", {"kind": "secret", "secret": "old-secret-0123456789"},
                          {"kind": "secret", "secret": "new-secret-0123456789"})
    eq(env.connack(f"{tid}/o1", "old-secret-0123456789"), 0, "old secret during the overlap")
    eq(env.connack(f"{tid}/o1", "new-secret-0123456789"), 0, "new secret during the overlap")
    env.revoke(admin, tid, "o1", old["id"])
    eq(env.connack(f"{tid}/o1", "old-secret-0123456789"), BAD_AUTH_5, "old secret, revoked")
    eq(env.connack(f"{tid}/o1", "new-secret-0123456789"), 0, "new secret after the overlap")


@suite.test()
def secret_rotation_overlap_until_not_after(env):
    tid, admin = env.tenant("nat")
    end = time.time() + 3
    env.device(admin, tid, "n1",
               {"kind": "secret", "secret": "old-secret-0123456789", "not_after": rfc3339(end)},
               {"kind": "secret", "secret": "new-secret-0123456789"})
    eq(env.connack(f"{tid}/n1", "old-secret-0123456789"), 0, "old secret before its not_after")
    eq(env.connack(f"{tid}/n1", "new-secret-0123456789"), 0, "new secret")
    time.sleep(max(0.0, end - time.time()) + 0.3)
    eq(env.connack(f"{tid}/n1", "old-secret-0123456789"), BAD_AUTH_5, "old secret past not_after")
    eq(env.connack(f"{tid}/n1", "new-secret-0123456789"), 0, "new secret past the overlap")


@suite.test()
def decommissioning_refuses_and_disconnects(env):
    tid, admin = env.tenant("dec")
    env.device(admin, tid, "k1", {"kind": "secret", "secret": "k1-secret-0123456789"})
    c = PahoClient(env.d.port, "k1", 5)
    c.connect(username=f"{tid}/k1", password="k1-secret-0123456789")
    # A second session of the device, to read the DISCONNECT packet itself.
    r = env.raw(f"{tid}/k1", "k1-secret-0123456789", 5, client_id="k1-raw")
    try:
        eq(c.subscribe("devices/k1/commands/#", qos=1), [1], "SUBACK before decommissioning")
        t0 = time.monotonic()
        expect(admin.post(f"/api/v1/tenants/{tid}/devices/k1/decommission"), 200, "decommission")
        check(c.wait_disconnected(1.0), "the paho client was not disconnected within a second")
        closed, seen = r.wait_closed(1.0)
        took = time.monotonic() - t0
        check(closed, f"the second session was not closed within a second: {seen}")
        check(took < 1.5, f"closed after {took:.2f}s")
        eq([(p.type, p.reason) for p in seen], [(P.DISCONNECT, ADMINISTRATIVE_ACTION)],
           "what the second session got before the close")
    finally:
        c.stop()
        r.close()
    both_versions(env, f"{tid}/k1", "k1-secret-0123456789", BAD_AUTH_5, BAD_AUTH_3,
                  "a decommissioned device")
    wait_until(lambda: "decommissioned" in env.events(admin, tid, "k1"), 5,
               "the decommissioned event")


@suite.test()
def device_is_confined_to_its_subtree(env):
    tid, admin = env.tenant("acl")
    env.device(admin, tid, "a1", {"kind": "secret", "secret": "a1-secret-0123456789"})
    env.device(admin, tid, "a2", {"kind": "secret", "secret": "a2-secret-0123456789"})
    c = env.raw(f"{tid}/a1", "a1-secret-0123456789", 5)
    try:
        for f, want in (("devices/a1/#", 1), ("devices/a1/commands/+", 1), ("devices/a2/#", 0x87),
                        ("#", 0x87), ("devices/+/telemetry", 0x87), ("devices/#", 0x87),
                        ("$SYS/#", 0x87), (f"$T/{tid}/devices/a1/#", 0x87)):
            eq(c.subscribe([(f, 1)]), [want], f"SUBACK for {f!r}")
        eq(c.publish("devices/a1/telemetry", b'{"v": 21.5}', qos=1).reason, 0, "PUBACK, own subtree")
        for t in ("devices/a2/telemetry", "devices/a10/telemetry", "elsewhere", "devices"):
            eq(c.publish(t, b"x", qos=1).reason, 0x87, f"PUBACK for {t!r}")
        got = [p.topic for p in received(c)]
        eq(got, ["devices/a1/telemetry"], "what a1 received")
    finally:
        c.close()
    c3 = env.raw(f"{tid}/a2", "a2-secret-0123456789", 4)
    try:
        eq(c3.subscribe([("#", 1)]), [0x80], "SUBACK for '#' (MQTT 3.1.1)")
        eq(c3.subscribe([("devices/a2/#", 1)]), [1], "SUBACK for its own subtree (MQTT 3.1.1)")
    finally:
        c3.close()


@suite.test()
def tenants_never_see_each_other(env):
    ta, admin_a = env.tenant("tna")
    tb, admin_b = env.tenant("tnb")
    # The same device id in both tenants, each subscribed to its own subtree.
    env.device(admin_a, ta, "same", {"kind": "secret", "secret": "same-secret-a-0123456789"})
    env.device(admin_b, tb, "same", {"kind": "secret", "secret": "same-secret-b-0123456789"})
    a = env.raw(f"{ta}/same", "same-secret-a-0123456789", 5, client_id="same")
    b = env.raw(f"{tb}/same", "same-secret-b-0123456789", 5, client_id="same")
    try:
        eq(a.subscribe([("devices/same/#", 1)]), [1], "A subscribes")
        eq(a.subscribe([("#", 1)]), [0x87], "A's '#'")
        eq(b.subscribe([("devices/same/#", 1)]), [1], "B subscribes")
        eq(b.publish("devices/same/telemetry", b'{"from": "B"}', qos=1).reason, 0, "B publishes")
        eq(a.publish("devices/same/telemetry", b'{"from": "A"}', qos=1).reason, 0, "A publishes")
        got_a = [(p.topic, p.payload) for p in received(a)]
        got_b = [(p.topic, p.payload) for p in received(b)]
        eq(got_a, [("devices/same/telemetry", b'{"from": "A"}')], "A sees only its tenant")
        eq(got_b, [("devices/same/telemetry", b'{"from": "B"}')], "B sees only its tenant")
    finally:
        a.close()
        b.close()


# -- JWTs -------------------------------------------------------------------------------------

@suite.test()
def jwt_es256_and_rs256_are_accepted(env):
    tid, admin = env.tenant("jwt")
    env.device(admin, tid, "je", {"kind": "jwt_key", "public_key_pem": env.ec.public_pem})
    env.device(admin, tid, "jr", {"kind": "jwt_key", "public_key_pem": env.rsa.public_pem})
    for dev, key in (("je", env.ec), ("jr", env.rsa)):
        token = jwt(key, claims(dev))
        both_versions(env, f"{tid}/{dev}", token, 0, 0, f"{key.alg} token")
        both_versions(env, f"{tid}/{dev}", token, 0, 0, f"{key.alg} token again (cached)")
        eq(env.connack(f"{tid}/{dev}", jwt(key, claims())), 0, f"{key.alg} token without sub")
    # The device lands in its tenant's namespace, confined to its subtree.
    c = env.raw(f"{tid}/je", jwt(env.ec, claims("je")), 5)
    try:
        eq(c.subscribe([("devices/je/#", 1)]), [1], "own subtree")
        eq(c.subscribe([("devices/jr/#", 1)]), [0x87], "another device's subtree")
        eq(c.publish("devices/je/telemetry", b'{"n": 1}', qos=1).reason, 0, "publish")
        eq([p.topic for p in received(c)], ["devices/je/telemetry"], "echo")
    finally:
        c.close()


def hs256_with_public_key(key, device):
    """The key-confusion attack: HMAC "keyed" with the device's public key."""
    h = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    p = b64url(json.dumps(claims(device)).encode())
    mac = hmac.new(key.public_pem.encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64url(mac)}"


def alg_none(device):
    h = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{h}.{b64url(json.dumps(claims(device)).encode())}."


@suite.test()
def jwt_refusals(env):
    tid, admin = env.tenant("jwn")
    env.device(admin, tid, "j1", {"kind": "jwt_key", "public_key_pem": env.ec.public_pem})
    env.device(admin, tid, "j2", {"kind": "jwt_key", "public_key_pem": env.rsa.public_pem})
    now = int(time.time())
    bad = [
        ("expired", jwt(env.ec, {"iat": now - 7200, "exp": now - 3600, "aud": AUDIENCE}),
         "JWT expired"),
        ("expired past the leeway", jwt(env.ec, {"iat": now - 600, "exp": now - 65,
                                                 "aud": AUDIENCE}), "JWT expired"),
        ("the default audience", jwt(env.ec, claims("j1", aud="drover")), "audience"),
        ("no audience", jwt(env.ec, {"iat": now, "exp": now + 60}), "audience"),
        ("signed by another key", jwt(env.ec2, claims("j1")), "signature does not verify"),
        ("alg none", alg_none("j1"), "alg"),
        ("HS256 keyed with the public key", hs256_with_public_key(env.ec, "j1"), "alg"),
        ("tampered payload", jwt(env.ec, claims("j1"), tamper=lambda c: dict(c, admin=True)),
         "signature does not verify"),
        ("lifetime over 24 h", jwt(env.ec, claims("j1", lifetime=86400 + 3600)), "lifetime"),
        ("issued in the future", jwt(env.ec, claims("j1", iat_offset=600)), "future"),
        ("sub another device", jwt(env.ec, claims("j2")), "subject"),
        ("no exp", jwt(env.ec, {"iat": now, "aud": AUDIENCE}), "missing or not a NumericDate"),
        ("RS256 header on an EC key", jwt(env.ec, claims("j1"), header={"alg": "RS256"}),
         "does not fit"),
        ("ES256 token for an RSA-key device", jwt(env.ec, claims("j2")), "does not fit"),
    ]
    for what, token, reason in bad:
        dev = "j2" if "RSA-key" in what else "j1"
        seen = env.log_count(reason)
        both_versions(env, f"{tid}/{dev}", token, BAD_AUTH_5, BAD_AUTH_3, what)
        # Each refusal is logged with its reason, for the operator.
        wait_until(lambda: env.log_count(reason) >= seen + 2, 3, f"the log lines for {what!r}")
    # The same private key is fine when it is the one registered.
    both_versions(env, f"{tid}/j1", jwt(env.ec, claims("j1")), 0, 0, "a good token")
    # A JWT is only ever tried as a JWT: a device with a secret too is not asked for it.
    env.cred(admin, tid, "j1", {"kind": "secret", "secret": "j1-secret-0123456789"})
    eq(env.connack(f"{tid}/j1", "j1-secret-0123456789"), 0, "the secret of a JWT device")
    eq(env.connack(f"{tid}/j1", jwt(env.ec2, claims("j1"))), BAD_AUTH_5, "a bad JWT")


@suite.test()
def jwt_key_must_fit_es256_or_rs256(env):
    tid, admin = env.tenant("jkey")
    env.device(admin, tid, "jk")
    base = f"/api/v1/tenants/{tid}/devices/jk/credentials"
    for what, args in (("secp256k1", ("genpkey", "-algorithm", "EC", "-pkeyopt",
                                      "ec_paramgen_curve:secp256k1")),
                       ("RSA 1024", ("genpkey", "-algorithm", "RSA", "-pkeyopt",
                                     "rsa_keygen_bits:1024"))):
        path = os.path.join(env.tmp, "unfit.key")
        openssl(*args, "-out", path)
        pem = openssl("pkey", "-in", path, "-pubout").decode()
        expect(admin.post(base, {"kind": "jwt_key", "public_key_pem": pem}), 400,
               f"a {what} key")


@suite.test()
def jwt_rotation_overlap(env):
    tid, admin = env.tenant("jrot")
    old, new = env.device(admin, tid, "jo",
                          {"kind": "jwt_key", "public_key_pem": env.ec.public_pem},
                          {"kind": "jwt_key", "public_key_pem": env.rsa.public_pem})
    old_token, new_token = jwt(env.ec, claims("jo")), jwt(env.rsa, claims("jo"))
    for _ in range(2):  # the second round is served from the verified-token cache
        eq(env.connack(f"{tid}/jo", old_token), 0, "old key during the overlap")
        eq(env.connack(f"{tid}/jo", new_token), 0, "new key during the overlap")
    env.revoke(admin, tid, "jo", old["id"])
    eq(env.connack(f"{tid}/jo", old_token), BAD_AUTH_5, "the cached old token after revocation")
    eq(env.connack(f"{tid}/jo", jwt(env.ec, claims("jo"))), BAD_AUTH_5, "a fresh old-key token")
    eq(env.connack(f"{tid}/jo", new_token), 0, "new key after the overlap")

    # The overlap can also end by itself: the old key's not_after.
    end = time.time() + 3
    env.device(admin, tid, "jn",
               {"kind": "jwt_key", "public_key_pem": env.ec.public_pem,
                "not_after": rfc3339(end)},
               {"kind": "jwt_key", "public_key_pem": env.ec2.public_pem})
    old_token, new_token = jwt(env.ec, claims("jn")), jwt(env.ec2, claims("jn"))
    eq(env.connack(f"{tid}/jn", old_token), 0, "old key before its not_after")
    eq(env.connack(f"{tid}/jn", new_token), 0, "new key")
    time.sleep(max(0.0, end - time.time()) + 0.3)
    eq(env.connack(f"{tid}/jn", old_token), BAD_AUTH_5, "the cached old token past not_after")
    eq(env.connack(f"{tid}/jn", new_token), 0, "new key past not_after")


@suite.test()
def jwt_over_tls(env):
    """The token is just the password: any transport carries it (here TLS without a
    client certificate)."""
    tid, admin = env.tenant("jtls")
    env.device(admin, tid, "jt", {"kind": "jwt_key", "public_key_pem": env.ec.public_pem})
    c = PahoClient(env.tls_port, "jt", 5)
    c.c.tls_set(ca_certs=os.path.join(env.tls_dir, "ca.pem"))
    c.c._thread = threading.main_thread()
    try:
        c.connect(username=f"{tid}/jt", password=jwt(env.ec, claims("jt")), timeout=10)
        eq(c.subscribe("devices/jt/#", qos=1), [1], "SUBACK over TLS")
    finally:
        c.stop()


# -- X.509 ------------------------------------------------------------------------------------

@suite.test()
def x509_registered_certificate(env):
    tid, admin = env.tenant("x5")
    cert, key = env.client_cert("x1", "x1")
    with open(cert) as f:
        (cred,) = env.device(admin, tid, "x1", {"kind": "x509", "certificate_pem": f.read()})
    env.cred(admin, tid, "x1", {"kind": "secret", "secret": "x1-secret-0123456789"})
    # A watcher on the same device (secret, another client id) proves the certificate
    # client landed in the tenant's namespace and its own subtree.
    w = env.raw(f"{tid}/x1", "x1-secret-0123456789", 5, client_id="x1-watch")
    c = None
    try:
        eq(w.subscribe([("devices/x1/#", 1)]), [1], "watcher SUBACK")
        c, rc = env.tls_paho("x1", cert, key, 5)
        eq(c.subscribe("devices/x2/#", qos=1), [0x87], "the certificate device's ACL")
        c.publish("devices/x1/telemetry", b'{"over": "mTLS"}', qos=1)
        got = [(p.topic, p.payload) for p in received(w)]
        eq(got, [("devices/x1/telemetry", b'{"over": "mTLS"}')], "what the watcher saw")
        c.stop()
        # MQTT 3.1.1, and a user name naming the same device.
        c, rc = env.tls_paho("x1", cert, key, 4)
        c.stop()
        c, rc = env.tls_paho("x1", cert, key, 5, username=f"{tid}/x1")
        c.stop()
        # Refusals: another client id, a user name naming another device.
        c, rc = env.tls_paho("x2", cert, key, 5, expect_rc=BAD_AUTH_5)
        c.stop()
        c, rc = env.tls_paho("x2", cert, key, 4, expect_rc=BAD_AUTH_3)
        c.stop()
        c, rc = env.tls_paho("x1", cert, key, 5, username=f"{tid}/x2", expect_rc=BAD_AUTH_5)
        c.stop()
        # Revoked: the registry no longer knows the certificate, and the static backend
        # (no anonymous clients here) refuses.
        env.revoke(admin, tid, "x1", cred["id"])
        c, rc = env.tls_paho("x1", cert, key, 5, expect_rc=NOT_AUTHORISED_5)
        c.stop()
        c, rc = env.tls_paho("x1", cert, key, 4, expect_rc=NOT_AUTHORISED_3)
        c.stop()
        c = None
    finally:
        w.close()
        if c:
            c.stop()


@suite.test()
def x509_unregistered_certificate(env):
    tid, admin = env.tenant("xu")
    env.device(admin, tid, "u1")
    cert, key = env.client_cert("u1", "u1")
    c, rc = env.tls_paho("u1", cert, key, 5, expect_rc=NOT_AUTHORISED_5)
    c.stop()
    # With a user name of the registry's form but no password, the registry refuses.
    c, rc = env.tls_paho("u1", cert, key, 5, username=f"{tid}/u1", expect_rc=BAD_AUTH_5)
    c.stop()


@suite.test()
def x509_unregistered_certificate_on_a_loopback_anonymous_server(env):
    """auth.allow_anonymous=loopback (the default): a certificate the registry does not
    know is no device; the client is an anonymous one in the global namespace — which
    loopback clients are anyway, with or without a certificate."""
    d = Drover(env.binary, settings=dict(BASE_SETTINGS, **{
        "mqtt.tls_listen": f"127.0.0.1:{free_port()}"}), http_port=True)
    d.settings["tls.client_ca_file"] = os.path.join(d.data_dir, "data", "tls", "ca.pem")
    with d:
        tls_port = int(d.settings["mqtt.tls_listen"].rsplit(":", 1)[1])
        api = Api(d.http_port, d.admin_token())
        expect(api.post("/api/v1/tenants", {"id": "loop", "name": "loop"}), 201, "tenant")
        expect(api.post("/api/v1/tenants/loop/devices", {"id": "l1"}), 201, "device")
        cert, key = env.client_cert("l1", "l1", os.path.join(d.data_dir, "data", "tls"))
        c, rc = env.tls_paho("l1", cert, key, 5, port=tls_port,
                             ca=os.path.join(d.data_dir, "data", "tls", "ca.pem"))
        try:
            # Global: its topics are not the tenant's ("$T/loop/..." would be).
            eq(c.subscribe("devices/l1/#", qos=1), [1], "SUBACK in the global namespace")
        finally:
            c.stop()
        time.sleep(0.3)
        r = expect(api.get("/api/v1/tenants/loop/devices/l1/events"), 200, "events")
        check(all(e["kind"] not in ("connected", "disconnected") for e in r.json["items"]),
              f"an anonymous client was taken for device l1: {r.json['items']}")


# -- device status ----------------------------------------------------------------------------

@suite.test()
def connection_events_and_online_status(env):
    tid, admin = env.tenant("ev")
    env.device(admin, tid, "e1", {"kind": "secret", "secret": "e1-secret-0123456789"})
    env.device(admin, tid, "e2", {"kind": "jwt_key", "public_key_pem": env.ec.public_pem})
    check(not env.online(admin, tid, "e1"), "online before any connection")
    for dev, pw in (("e1", "e1-secret-0123456789"), ("e2", jwt(env.ec, claims("e2")))):
        c = PahoClient(env.d.port, dev, 5)
        c.connect(username=f"{tid}/{dev}", password=pw)
        try:
            wait_until(lambda: env.online(admin, tid, dev) is True, 5, f"{dev} online")
            wait_until(lambda: env.events(admin, tid, dev)[:1] == ["connected"], 5,
                       f"{dev}: connected event")
        finally:
            c.disconnect()
        wait_until(lambda: env.online(admin, tid, dev) is False, 5, f"{dev} offline")
        wait_until(lambda: env.events(admin, tid, dev)[:2] == ["disconnected", "connected"], 5,
                   f"{dev}: disconnected event")
    r = expect(admin.get(f"/api/v1/tenants/{tid}/devices/e1/events"), 200, "events")
    newest = r.json["items"][0]
    eq(newest["kind"], "disconnected", "newest event")
    check(str((newest.get("detail") or {}).get("address", "")).startswith("127.0.0.1:"),
          f"the peer address in the event: {newest}")
    conn = expect(admin.get(f"/api/v1/tenants/{tid}/devices/e1"), 200, "device").json
    check(conn["connectivity"].get("last_seen"), f"last_seen: {conn['connectivity']}")
    # A refused connection is no event.
    before = env.events(admin, tid, "e1")
    eq(env.connack(f"{tid}/e1", "wrong-secret-0123456789"), BAD_AUTH_5, "wrong secret")
    time.sleep(0.5)
    eq(env.events(admin, tid, "e1"), before, "events after a refused connection")


def primary_ip():
    """This machine's address on its default route, or None (then the test cannot reach
    the server from a non-loopback address)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.254.254.254", 1))  # UDP: no packet is sent
        ip = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if ip.startswith("127.") else ip


class RawAt(RawClient):
    """RawClient connected to a given address instead of loopback."""

    def __init__(self, host, port, version=5):
        self.version = version
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False
        self.next_pid = 1
        self.connack = None


@suite.test()
def guessing_secrets_from_one_address_is_throttled(env):
    # 20 wrong secrets in a minute from one (non-loopback) address, and that address is
    # refused before it costs another Argon2id, even with the right secret; loopback is
    # exempt (local gateways, tools), and so is every other address.
    ip = primary_ip()
    if not ip:
        print("     (no non-loopback address on this machine: not checked)")
        return
    port = free_port()
    d = Drover(env.binary, settings=dict(BASE_SETTINGS, **{"auth.allow_anonymous": "never",
                                                          "mqtt.listen": f"0.0.0.0:{port}"}),
               port=port, http_port=True)
    with d:
        api = Api(d.http_port, d.admin_token())
        expect(api.post("/api/v1/tenants", {"id": "thr", "name": "thr"}), 201, "tenant")
        expect(api.post("/api/v1/tenants/thr/devices", {"id": "t1"}), 201, "device")
        expect(api.post("/api/v1/tenants/thr/devices/t1/credentials",
                        {"kind": "secret", "secret": "t1-secret-0123456789"}), 201, "secret")

        def connack(host, password):
            c = RawAt(host, port, 5)
            try:
                return c.connect(f"c{time.monotonic_ns()}", username="thr/t1",
                                 password=password.encode(), expect_rc=None).reason
            finally:
                c.close()
        eq(connack(ip, "t1-secret-0123456789"), 0, "the right secret from the address")
        for i in range(20):
            eq(connack(ip, f"wrong-secret-{i:04d}"), BAD_AUTH_5, "a wrong secret")
        eq(connack(ip, "t1-secret-0123456789"), BAD_AUTH_5, "the right secret, now throttled")
        eq(connack("127.0.0.1", "t1-secret-0123456789"), 0, "loopback is not throttled")
        check("too many failures from this address" in d.read_log(), "the log says why")


if __name__ == "__main__":
    suite.main(setup)
