#!/usr/bin/python3
"""Provisioning by claim (docs/provisioning.md), end to end.

A tenant registers a claim CA (POST .../cas with "purpose": "claim") and a
provisioning template; a device holding a claim certificate signed by that CA
connects over TLS with any client id, makes its own key and self-signed
certificate (CN = its device id) and publishes a registration request to
provisioning/<cid>/register; the answer comes on .../register/accepted or
.../register/rejected {"code", "message"}.  From then on the device connects with
its own certificate (bound by fingerprint), client id = device id.

The server runs as for zero-touch (test_zero_touch.py, whose helpers are used
here): tls.accept_unverified_client_certs=true, no tls.client_ca_file,
auth.allow_anonymous=never.  Certificates are made with the openssl CLI.  paho
(Debian's 1.6) reports no PUBACK reason code, so the checks of what a claim
session may not do use mqtt_testlib's RawClient over a TLS socket.

Usage: test_claim.py --drover BINARY [-k NAME]
"""
import contextlib
import hashlib
import json
import os
import select
import shutil
import socket
import ssl
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "broker"))
from apilib import BASE_SETTINGS, Api, Suite, check, eq, expect  # noqa: E402
from drover import Drover, free_port  # noqa: E402
from mqtt_testlib import HOST, RawClient, sub_opts  # noqa: E402
from test_device_auth import BAD_AUTH_5, NOT_AUTHORISED_5, Env, openssl  # noqa: E402
from test_zero_touch import make_ca, proof  # noqa: E402

suite = Suite("test_claim")

REFUSED_PUB_5 = 0x87   # PUBACK / SUBACK "not authorised"
REFUSED_SUB_3 = 0x80   # MQTT 3.1.1 SUBACK failure


# -- certificates -----------------------------------------------------------------------------

def pem_fingerprint(pem):
    """SHA-256 of the certificate's DER, lower-case hex (as the platform shows it)."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


class Cert:
    def __init__(self, cert, key):
        self.cert, self.key = cert, key
        with open(cert) as f:
            self.pem = f.read()
        self.fp = pem_fingerprint(self.pem)


def unique(env, name):
    env.n += 1
    return f"{name}-{env.n}"


def device_cert(env, cn, kind="ec"):
    """What a device makes on its first boot: a key and a self-signed certificate."""
    base = os.path.join(env.tmp, unique(env, "dev"))
    key, cert = base + ".key", base + ".pem"
    newkey = {"ec": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
              "p384": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
              "rsa2048": ["-newkey", "rsa:2048"],
              "rsa1024": ["-newkey", "rsa:1024"]}[kind]
    openssl("req", "-x509", *newkey, "-nodes", "-keyout", key, "-out", cert, "-days", "3650",
            "-subj", f"/CN={cn}")
    return Cert(cert, key)


def expired_device_cert(env, cn):
    """A self-signed certificate valid for one day in 2020 (`openssl req` of OpenSSL 3.0 has
    no -not_before/-not_after; `openssl ca -selfsign` takes -startdate/-enddate)."""
    d = os.path.join(env.tmp, unique(env, "expired"))
    os.makedirs(d)
    with open(os.path.join(d, "ca.cnf"), "w") as f:
        f.write("[ca]\ndefault_ca = dflt\n[dflt]\ndatabase = index.txt\nnew_certs_dir = .\n"
                "default_md = sha256\npolicy = pol\nunique_subject = no\nserial = serial\n"
                "[pol]\ncommonName = supplied\n")
    open(os.path.join(d, "index.txt"), "w").close()
    with open(os.path.join(d, "serial"), "w") as f:
        f.write("01\n")
    key, csr, cert = (os.path.join(d, n) for n in ("d.key", "d.csr", "d.pem"))
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
    cwd = os.getcwd()
    os.chdir(d)
    try:
        openssl("ca", "-batch", "-config", "ca.cnf", "-selfsign", "-keyfile", key, "-in", csr,
                "-out", cert, "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
                "-notext")
    finally:
        os.chdir(cwd)
    return Cert(cert, key)


# -- the tenant's side ------------------------------------------------------------------------

class ClaimCA:
    """A claim CA registered in a tenant; .claim_cert() makes claim certificates."""

    def __init__(self, env, admin, tid, label):
        self.env = env
        self.dir, self.pem = make_ca(env, unique(env, "ca-" + label), f"{label} claims")
        # A claim CA registers devices: registering it needs proof of possession.
        r = expect(admin.post(f"/api/v1/tenants/{tid}/cas",
                              {"certificate_pem": self.pem, "name": label, "purpose": "claim",
                               "verification_certificate_pem": proof(admin, tid, self.dir)}),
                   201, "register the claim CA").json
        self.id = r["id"]
        self.json = r

    def claim_cert(self, cn="claim"):
        cert, key = self.env.client_cert(unique(self.env, "claim"), cn, ca_dir=self.dir)
        return Cert(cert, key)


def template(admin, tid, tid_template, claim_ca, **extra):
    body = dict({"id": tid_template, "claim_ca": claim_ca}, **extra)
    return expect(admin.post(f"/api/v1/tenants/{tid}/provisioning-templates", body), 201,
                  f"template {tid_template}").json


class Fleet:
    """A tenant with a claim CA, a claim certificate and a template "factory" (prefix SN-)."""

    def __init__(self, env, prefix, **tmpl):
        self.env = env
        self.tid, self.admin = env.tenant(prefix)
        self.ca = ClaimCA(env, self.admin, self.tid, prefix)
        self.claim = self.ca.claim_cert()
        self.template = template(self.admin, self.tid, "factory", self.ca.id,
                                 **dict({"device_id_prefix": "SN-"}, **tmpl))

    def url(self, path=""):
        return f"/api/v1/tenants/{self.tid}{path}"

    def status(self, dev):
        return self.admin.get(self.url(f"/devices/{dev}")).status

    def device_ids(self):
        items = expect(self.admin.get(self.url("/devices")), 200, "devices").json["items"]
        return sorted(d["id"] for d in items)

    def request(self, dev, cert, tmpl="factory", **extra):
        return dict({"template": tmpl, "device_id": dev, "certificate_pem": cert.pem}, **extra)


# -- MQTT over TLS ----------------------------------------------------------------------------

class TlsRaw(RawClient):
    """mqtt_testlib's RawClient on a TLS socket with a client certificate (reason codes of
    PUBACK and SUBACK, which Debian's paho does not report)."""

    def __init__(self, env, cert, version=5):
        self.version = version
        ctx = ssl.create_default_context(cafile=os.path.join(env.tls_dir, "ca.pem"))
        ctx.check_hostname = False
        ctx.load_cert_chain(cert.cert, cert.key)
        raw = socket.create_connection((HOST, env.tls_port), timeout=5)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ctx.wrap_socket(raw)
        self.buf = bytearray()
        self.eof = False
        self.next_pid = 1
        self.connack = None

    def _fill(self, deadline):
        # Decrypted bytes already inside the SSL object do not wake select().
        if not self.sock.pending():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            r, _, _ = select.select([self.sock], [], [], remaining)
            if not r:
                return False
        try:
            data = self.sock.recv(65536)
        except ssl.SSLWantReadError:
            return True
        except (ConnectionResetError, OSError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True


class Claimant:
    """A claim session with paho: subscribed to provisioning/<cid>/register/+."""

    def __init__(self, env, claim, cid=None, version=5):
        self.env = env
        self.cid = cid or unique(env, "cid")
        self.c, _ = env.tls_paho(self.cid, claim.cert, claim.key, version)
        eq(self.c.subscribe(f"provisioning/{self.cid}/register/+", qos=1), [1],
           "SUBACK of the answer topics")

    def ask(self, body):
        """Publish one request (a dict, or bytes as they are); returns (outcome, answer)."""
        n = len(self.c.msgs)
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.c.publish(f"provisioning/{self.cid}/register", payload, qos=1, timeout=10)
        got = self.c.wait_msgs(n + 1, timeout=10)
        check(len(got) > n, f"no answer on provisioning/{self.cid}/register/+")
        m = got[n]
        outcome = m.topic.rsplit("/", 1)[-1]
        check(outcome in ("accepted", "rejected"), f"answer on {m.topic}")
        return outcome, json.loads(m.payload)

    def close(self):
        self.c.disconnect()


def register(env, claim, body, version=5, cid=None):
    """One registration on a claim session of its own; returns (outcome, answer)."""
    cl = Claimant(env, claim, cid, version)
    try:
        return cl.ask(body)
    finally:
        cl.close()


def accepted(fleet, dev, cert, outcome_answer):
    eq(outcome_answer, ("accepted", {"tenant": fleet.tid, "device_id": dev,
                                     "fingerprint": cert.fp}), f"registration of {dev}")


def rejected(outcome_answer, code, what):
    outcome, ans = outcome_answer
    eq((outcome, ans.get("code")), ("rejected", code), f"{what}: answer {ans}")
    check(isinstance(ans.get("message"), str) and ans["message"], f"{what}: no message")
    return ans


def latest(fleet, dev):
    r = expect(fleet.admin.get(fleet.url(f"/devices/{dev}/telemetry/latest")), 200, "latest")
    return {i["key"]: i["value"] for i in r.json["items"]}


def send_telemetry(env, fleet, dev, cert, value, version=5):
    """Connect as the device with its own certificate and store one sample."""
    c, _ = env.tls_paho(dev, cert.cert, cert.key, version)
    try:
        c.publish(f"devices/{dev}/telemetry", json.dumps({"temp": value}), qos=1, timeout=10)
    finally:
        c.disconnect()
    eq(latest(fleet, dev).get("temp"), value, f"telemetry of {dev} stored")


# -- the server -------------------------------------------------------------------------------

@contextlib.contextmanager
def setup(binary):
    tmp = tempfile.mkdtemp(prefix="drover-claim-")
    settings = dict(BASE_SETTINGS)
    tls_port = free_port()
    settings.update({
        "auth.allow_anonymous": "never",
        "mqtt.tls_listen": f"127.0.0.1:{tls_port}",
        "tls.accept_unverified_client_certs": "true",
    })
    d = Drover(binary, settings=settings, http_port=True)
    try:
        with d:
            env = Env(binary, d, Api(d.http_port, d.admin_token()), tmp)
            env.tls_port = tls_port
            yield env
            log = d.read_log()
            check("AddressSanitizer" not in log and "runtime error" not in log,
                  "sanitizer report in the server log")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- the happy path ---------------------------------------------------------------------------

def happy_path(env, version, dev):
    f = Fleet(env, f"happy{version}")
    expect(f.admin.post(f.url("/profiles"), {"id": "sensor-v2", "name": "Sensors v2"}), 201,
           "profile")
    r = expect(f.admin.get(f.url(f"/cas/{f.ca.id}")), 200, "the claim CA").json
    eq((r.get("purpose"), r.get("auto_provision"), r.get("verified")), ("claim", False, True),
       "purpose, auto_provision, verified")
    tmpl = template(f.admin, f.tid, "factory-2026", f.ca.id, profile="sensor-v2",
                    device_id_prefix="SN-", tags={"batch": "2026-11"},
                    attributes={"model": "P2", "serial": "from-template"})
    eq(tmpl.get("enabled"), True, "enabled by default")
    cert = device_cert(env, dev)
    eq(f.status(dev), 404, "before registration")
    accepted(f, dev, cert, register(env, f.claim, f.request(
        dev, cert, "factory-2026", name="Pump 42", attributes={"serial": "0042"}), version,
        cid=unique(env, "any-client")))

    d = expect(f.admin.get(f.url(f"/devices/{dev}")), 200, "the device").json
    eq((d.get("status"), d.get("profile"), d.get("name")), ("active", "sensor-v2", "Pump 42"),
       "status, profile, name")
    eq(d.get("tags"), {"batch": "2026-11"}, "the template's tags")
    eq(d.get("attributes"), {"model": "P2", "serial": "0042"},
       "the template's attributes, then the request's")
    creds = expect(f.admin.get(f.url(f"/devices/{dev}/credentials")), 200,
                   "credentials").json["items"]
    eq([(c.get("kind"), c.get("fingerprint")) for c in creds], [("x509", cert.fp)],
       "one x509 credential for its certificate")
    ev = expect(f.admin.get(f.url(f"/devices/{dev}/events")), 200, "events").json["items"]
    prov = [e for e in ev if e["kind"] == "provisioned"]
    eq([e.get("detail") for e in prov],
       [{"by": "claim", "template": "factory-2026", "claim": f.claim.fp}], "provisioned event")
    send_telemetry(env, f, dev, cert, 21.5, version)


@suite.test()
def registers_with_mqtt5_then_connects_with_its_own_certificate(env):
    happy_path(env, 5, "SN-0042")


@suite.test()
def registers_with_mqtt311_then_connects_with_its_own_certificate(env):
    happy_path(env, 4, "SN-0043")


@suite.test()
def asking_again_is_accepted_and_creates_nothing_new(env):
    f = Fleet(env, "idem")
    cert = device_cert(env, "SN-1")
    accepted(f, "SN-1", cert, register(env, f.claim, f.request("SN-1", cert)))
    # The answer was "lost": a new claim session (another client id) asks again.
    accepted(f, "SN-1", cert, register(env, f.claim, f.request("SN-1", cert)))
    cl = Claimant(env, f.claim)
    try:
        accepted(f, "SN-1", cert, cl.ask(f.request("SN-1", cert)))
        accepted(f, "SN-1", cert, cl.ask(f.request("SN-1", cert)))
    finally:
        cl.close()
    eq(f.device_ids(), ["SN-1"], "one device")
    ev = expect(f.admin.get(f.url("/devices/SN-1/events")), 200, "events").json["items"]
    eq(len([e for e in ev if e["kind"] == "provisioned"]), 1, "one provisioned event")
    creds = expect(f.admin.get(f.url("/devices/SN-1/credentials")), 200, "creds").json["items"]
    eq(len(creds), 1, "one credential")
    # The same id with another certificate is not the same device.
    rejected(register(env, f.claim, f.request("SN-1", device_cert(env, "SN-1"))), 409,
             "the same id, another key")


# -- the request and the device's certificate -------------------------------------------------

@suite.test()
def accepted_key_types(env):
    f = Fleet(env, "keys")
    for dev, kind in (("SN-rsa", "rsa2048"), ("SN-p384", "p384")):
        cert = device_cert(env, dev, kind)
        accepted(f, dev, cert, register(env, f.claim, f.request(dev, cert)))
        send_telemetry(env, f, dev, cert, 7)


@suite.test()
def bad_requests_are_400(env):
    f = Fleet(env, "bad")
    other_ca_dir, _ = make_ca(env, unique(env, "ca-unrelated"), "Unrelated CA")
    cl = Claimant(env, f.claim)
    try:
        good = device_cert(env, "SN-good")
        cases = [
            ("RSA 1024", f.request("SN-r1024", device_cert(env, "SN-r1024", "rsa1024"))),
            ("CN is not the device id", f.request("SN-b", device_cert(env, "SN-a"))),
            ("signed by another CA", f.request(
                "SN-ca", Cert(*env.client_cert(unique(env, "issued"), "SN-ca",
                                               ca_dir=other_ca_dir)))),
            ("expired", f.request("SN-exp", expired_device_cert(env, "SN-exp"))),
            ("two certificates", dict(f.request("SN-good", good),
                                      certificate_pem=good.pem + good.pem)),
            ("not a certificate", dict(f.request("SN-good", good), certificate_pem="hello")),
            ("garbage JSON", b"{\"template\": \"factory\", "),
            ("not an object", b"[1, 2]"),
            ("unknown member", f.request("SN-good", good, extra="x")),
            ("device_id missing", {"template": "factory", "certificate_pem": good.pem}),
            ("bad device id", f.request("SN-good/x", good)),
            ("attributes not strings", f.request("SN-good", good, attributes={"n": 1})),
        ]
        for what, body in cases:
            rejected(cl.ask(body), 400, what)
        # The session still works after all that.
        accepted(f, "SN-good", good, cl.ask(f.request("SN-good", good)))
    finally:
        cl.close()
    eq(f.device_ids(), ["SN-good"], "only the good device")


# -- what the template allows -----------------------------------------------------------------

@suite.test()
def template_rules_are_403(env):
    f = Fleet(env, "tmpl")
    second = ClaimCA(env, f.admin, f.tid, "second")
    template(f.admin, f.tid, "for-second", second.id)
    template(f.admin, f.tid, "off", f.ca.id)
    r = expect(f.admin.get(f.url("/provisioning-templates/off")), 200, "template")
    etag = r.header("ETag")
    check(etag, "an ETag")
    r = expect(f.admin.patch(f.url("/provisioning-templates/off"), {"enabled": False},
                             headers={"If-Match": etag}), 200, "disable")
    eq(r.json.get("enabled"), False, "disabled")
    cl = Claimant(env, f.claim)
    try:
        ans = rejected(cl.ask(f.request("SN-1", device_cert(env, "SN-1"), "nothing")), 403,
                       "unknown template")
        eq(ans["message"], "no such provisioning template", "its message")
        rejected(cl.ask(f.request("SN-2", device_cert(env, "SN-2"), "off")), 403,
                 "disabled template")
        rejected(cl.ask(f.request("XX-3", device_cert(env, "XX-3"))), 403, "no SN- prefix")
        rejected(cl.ask(f.request("SN-4", device_cert(env, "SN-4"), "for-second")), 403,
                 "a template for another claim CA")
    finally:
        cl.close()
    eq(f.device_ids(), [], "no device")
    # The other CA's claim certificates may use it.
    cert = device_cert(env, "SN-5")
    accepted(f, "SN-5", cert, register(env, second.claim_cert(), f.request("SN-5", cert,
                                                                           "for-second")))


@suite.test()
def taken_ids_and_certificates_are_409(env):
    f = Fleet(env, "taken")
    expect(f.admin.post(f.url("/devices"), {"id": "SN-taken"}), 201, "a device made by hand")
    rejected(register(env, f.claim, f.request("SN-taken", device_cert(env, "SN-taken"))), 409,
             "device id taken")
    # An operator bound this certificate to another device.
    cert = device_cert(env, "SN-new")
    env.device(f.admin, f.tid, "other", {"kind": "x509", "fingerprint": cert.fp})
    rejected(register(env, f.claim, f.request("SN-new", cert)), 409,
             "certificate bound to another device")
    eq(f.status("SN-new"), 404, "no device created")
    eq(f.device_ids(), ["SN-taken", "other"], "devices")


@suite.test()
def device_quota_is_429(env):
    f = Fleet(env, "quota")
    expect(f.admin.post(f.url("/devices"), {"id": "SN-first"}), 201, "one device")
    expect(env.api.patch(f"/api/v1/tenants/{f.tid}", {"quotas": {"devices": 1}}), 200,
           "quota of one device")
    rejected(register(env, f.claim, f.request("SN-2", device_cert(env, "SN-2"))), 429,
             "quota used up")
    eq(f.device_ids(), ["SN-first"], "nothing created")
    expect(env.api.patch(f"/api/v1/tenants/{f.tid}", {"quotas": {"devices": 2}}), 200,
           "room for one more")
    cert = device_cert(env, "SN-2")
    accepted(f, "SN-2", cert, register(env, f.claim, f.request("SN-2", cert)))


# -- what a claim session may do --------------------------------------------------------------

def raw_claim(env, claim, cid, version=5):
    c = TlsRaw(env, claim, version)
    c.connect(cid, expect_rc=0)
    return c


@suite.test()
def a_claim_session_publishes_only_its_registration(env):
    f = Fleet(env, "limits")
    expect(f.admin.post(f.url("/devices"), {"id": "SN-victim"}), 201, "a device")
    c = raw_claim(env, f.claim, "SN-victim")
    try:
        ack = c.publish("devices/SN-victim/telemetry", json.dumps({"temp": 99}), qos=1)
        eq(ack.reason, REFUSED_PUB_5, "PUBACK of devices/<cid>/telemetry")
        body = json.dumps(f.request("SN-other", device_cert(env, "SN-other")))
        ack = c.publish("provisioning/someone-else/register", body, qos=1)
        eq(ack.reason, REFUSED_PUB_5, "PUBACK of another client id's registration")
        eq(c.subscribe([("#", sub_opts(1))]), [REFUSED_PUB_5], "SUBACK of #")
        eq(c.subscribe([("devices/#", sub_opts(1))]), [REFUSED_PUB_5], "SUBACK of devices/#")
        eq(c.subscribe([("provisioning/someone-else/#", sub_opts(1))]), [REFUSED_PUB_5],
           "SUBACK of another client id's answers")
        eq(c.subscribe([("provisioning/SN-victim/register/+", sub_opts(1))]), [1],
           "SUBACK of its own answers")
        c.ping()
    finally:
        c.disconnect()
    eq(latest(f, "SN-victim"), {}, "no telemetry stored")
    eq(f.status("SN-other"), 404, "nothing registered")
    c = raw_claim(env, f.claim, "v3-claim", version=4)
    try:
        eq(c.subscribe([("#", 1)]), [REFUSED_SUB_3], "3.1.1 SUBACK of #")
        eq(c.subscribe([("devices/#", 1)]), [REFUSED_SUB_3], "3.1.1 SUBACK of devices/#")
        eq(c.subscribe([("provisioning/v3-claim/register/+", 1)]), [1], "3.1.1 own answers")
    finally:
        c.disconnect()


@suite.test()
def a_claim_certificate_is_no_device(env):
    f = Fleet(env, "nodev")
    claim = f.ca.claim_cert(cn="SN-claimcn")
    # A device whose id is the claim certificate's CN: the claim session is not it.
    expect(f.admin.post(f.url("/devices"), {"id": "SN-claimcn"}), 201, "the device")
    c = raw_claim(env, claim, "SN-claimcn")
    try:
        ack = c.publish("devices/SN-claimcn/telemetry", json.dumps({"temp": 1}), qos=1)
        eq(ack.reason, REFUSED_PUB_5, "PUBACK of the CN's telemetry")
    finally:
        c.disconnect()
    eq(latest(f, "SN-claimcn"), {}, "no telemetry stored")
    ev = expect(f.admin.get(f.url("/devices/SN-claimcn/events")), 200, "events").json["items"]
    eq([e["kind"] for e in ev if e["kind"] == "connected"], [], "no connected event")


@suite.test()
def an_expired_certificate_bound_by_fingerprint_is_refused(env):
    # A device bound to its certificate by fingerprint (as registration binds it) still
    # cannot connect with it once it is past its dates: the TLS layer did not check them.
    f = Fleet(env, "expbound")
    old = expired_device_cert(env, "SN-old")
    expect(f.admin.post(f.url("/devices"), {"id": "SN-old"}), 201, "the device")
    expect(f.admin.post(f.url("/devices/SN-old/credentials"),
                        {"kind": "x509", "certificate_pem": old.pem}), 201, "bound by fingerprint")
    c, _ = env.tls_paho("SN-old", old.cert, old.key, 5, expect_rc=BAD_AUTH_5)
    c.stop()
    eq(latest(f, "SN-old"), {}, "nothing stored")


# -- the tenant's setup, validated ------------------------------------------------------------

@suite.test()
def claim_cas_and_templates_are_validated(env):
    tid, admin = env.tenant("valid")
    base = f"/api/v1/tenants/{tid}"
    _, pem = make_ca(env, unique(env, "ca-v1"), "Validation 1")
    r = admin.post(f"{base}/cas", {"certificate_pem": pem, "purpose": "claim",
                                   "auto_provision": True})
    expect(r, 400, "a claim CA with auto_provision")
    r = admin.post(f"{base}/cas", {"certificate_pem": pem, "purpose": "claim"})
    expect(r, 400, "a claim CA without proof of possession")
    r = admin.post(f"{base}/cas", {"certificate_pem": pem, "purpose": "other"})
    expect(r, 400, "purpose other")
    r = expect(admin.post(f"{base}/cas", {"certificate_pem": pem}), 201, "a device CA").json
    eq(r.get("purpose"), "device", "the default purpose")
    r = admin.post(f"{base}/provisioning-templates", {"id": "t", "claim_ca": r["id"]})
    expect(r, 400, "a template naming a device CA")
    r = admin.post(f"{base}/provisioning-templates", {"id": "t", "claim_ca": "ca_nothing"})
    expect(r, 400, "a template naming no CA")
    r = admin.post(f"{base}/provisioning-templates", {"id": "t"})
    expect(r, 400, "a template without claim_ca")
    claim = ClaimCA(env, admin, tid, "v2")
    r = admin.post(f"{base}/provisioning-templates", {"id": "t", "claim_ca": claim.id,
                                                       "profile": "nothing"})
    expect(r, 400, "a template naming no profile")
    r = admin.post(f"{base}/provisioning-templates", {"id": "t", "claim_ca": claim.id,
                                                       "enabled": "yes"})
    expect(r, 400, "enabled not a boolean")
    template(admin, tid, "t", claim.id)


# -- revoking and durability ------------------------------------------------------------------

@suite.test()
def revoking_the_claim_ca_stops_registration(env):
    f = Fleet(env, "revoke")
    cert = device_cert(env, "SN-kept")
    accepted(f, "SN-kept", cert, register(env, f.claim, f.request("SN-kept", cert)))
    expect(f.admin.delete(f.url(f"/cas/{f.ca.id}")), 204, "revoke the claim CA")
    c, rc = env.tls_paho(unique(env, "late"), f.claim.cert, f.claim.key, 5,
                         expect_rc=NOT_AUTHORISED_5)
    c.stop()
    eq(f.status("SN-late"), 404, "nothing registered")
    send_telemetry(env, f, "SN-kept", cert, 3)


@suite.test()
def revoking_the_claim_ca_stops_an_open_claim_session(env):
    # docs/provisioning.md: "deleting the claim CA ... stops new registrations at once".
    f = Fleet(env, "revoke-open")
    cl = Claimant(env, f.claim)
    try:
        expect(f.admin.delete(f.url(f"/cas/{f.ca.id}")), 204, "revoke the claim CA")
        outcome, ans = cl.ask(f.request("SN-after", device_cert(env, "SN-after")))
        check(outcome == "rejected", f"a registration after the revocation: {outcome} {ans}")
    finally:
        cl.close()
    eq(f.status("SN-after"), 404, "nothing registered")


@suite.test()
def a_registration_survives_kill9(env):
    f = Fleet(env, "durable")
    cert = device_cert(env, "SN-d1")
    c = raw_claim(env, f.claim, "durable-cid")
    try:
        eq(c.subscribe([("provisioning/durable-cid/register/+", sub_opts(1))]), [1], "SUBACK")
        ack = c.publish("provisioning/durable-cid/register",
                        json.dumps(f.request("SN-d1", cert)), qos=1)
        eq(ack.reason, 0, "PUBACK of the request")
        # The PUBACK waits for the commit: kill at once, without waiting for the answer.
        env.d.kill9_restart()
    finally:
        c.close()
    eq(f.status("SN-d1"), 200, "the device after kill -9")
    send_telemetry(env, f, "SN-d1", cert, 11)
    # And a registration whose answer was read, then the restart.
    cert2 = device_cert(env, "SN-d2")
    accepted(f, "SN-d2", cert2, register(env, f.claim, f.request("SN-d2", cert2)))
    env.d.kill9_restart()
    eq(f.device_ids(), ["SN-d1", "SN-d2"], "devices after the second kill -9")
    send_telemetry(env, f, "SN-d2", cert2, 12)


# -- templates over REST ----------------------------------------------------------------------

@suite.test()
def templates_rest_and_isolation(env):
    f = Fleet(env, "rest-a", tags={"line": "1"})
    base = f.url("/provisioning-templates")
    template(f.admin, f.tid, "second", f.ca.id, name="Second", device_id_prefix="B-")
    items = expect(f.admin.get(base), 200, "list").json["items"]
    eq(sorted(t["id"] for t in items), ["factory", "second"], "listed")
    r = expect(f.admin.get(f"{base}/factory"), 200, "get")
    eq((r.json.get("claim_ca"), r.json.get("device_id_prefix"), r.json.get("tags")),
       (f.ca.id, "SN-", {"line": "1"}), "stored fields")
    etag = r.header("ETag")
    r = expect(f.admin.patch(f"{base}/factory", {"device_id_prefix": "SN-X-"},
                             headers={"If-Match": etag}), 200, "patch")
    eq(r.json.get("device_id_prefix"), "SN-X-", "patched")
    expect(f.admin.patch(f"{base}/factory", {"name": "stale"}, headers={"If-Match": etag}), 412,
           "stale If-Match")
    expect(f.admin.delete(f"{base}/second"), 204, "delete")
    expect(f.admin.get(f"{base}/second"), 404, "deleted")

    tok = expect(f.admin.post(f.url("/tokens"), {"name": "v", "role": "viewer"}), 201,
                 "viewer token").json["token"]
    viewer = f.admin.as_token(tok)
    expect(viewer.get(base), 200, "viewer lists")
    expect(viewer.get(f"{base}/factory"), 200, "viewer gets")
    expect(viewer.post(base, {"id": "v", "claim_ca": f.ca.id}), 403, "viewer creates")
    expect(viewer.patch(f"{base}/factory", {"name": "v"}), 403, "viewer patches")
    expect(viewer.delete(f"{base}/factory"), 403, "viewer deletes")

    b = Fleet(env, "rest-b")
    expect(b.admin.get(f"{base}/factory"), 404, "B reads A's template")
    b_base = b.url("/provisioning-templates")
    expect(b.admin.get(f"{b_base}/second"), 404, "B's own space has no such template")
    # B's template only: A's claim session cannot see it.
    template(b.admin, b.tid, "b-only", b.ca.id)
    expect(f.admin.get(f"{b_base}/b-only"), 404, "A reads B's template")
    ans = rejected(register(env, f.claim, f.request("SN-X-1", device_cert(env, "SN-X-1"),
                                                    "b-only")), 403, "A uses B's template")
    eq(ans["message"], "no such provisioning template", "its message")
    eq(b.status("SN-X-1"), 404, "nothing in B")
    eq(f.status("SN-X-1"), 404, "nothing in A")


if __name__ == "__main__":
    suite.main(setup)
