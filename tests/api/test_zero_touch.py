#!/usr/bin/python3
"""Zero-touch provisioning by tenant-registered device CAs (issue 4, ADR-0011).

A tenant registers a CA over REST (POST /api/v1/tenants/{t}/cas); the server runs
with tls.accept_unverified_client_certs and no tls.client_ca_file, so every client
certificate reaches the registry auth backend unverified, which verifies it against
the registered CAs (src/registry/auth_ca.c).  A device whose CA has auto_provision,
in a tenant with allow_zero_touch, is created on its first connect.

Certificates are made here with the openssl CLI; MQTT over TLS with paho, trusting
the server's development CA.  auth.allow_anonymous=never, so a certificate the
registry declines (no registered CA with its issuer) reaches the static backend and
is refused as 0x87; one the registry refuses (CN, tenant or CA rules) is 0x86.

A CA may carry a CRL (PUT .../cas/{ca}/crl, made here with `openssl ca -gencrl`):
a certificate it lists is refused whenever it would be trusted through the CA
(zero-touch, bind_existing, claim sessions); one already bound to a device by its
fingerprint is that device's credential, and revoking the credential cuts it off.

Usage: test_zero_touch.py --drover BINARY [-k NAME]
"""
import contextlib
import datetime
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "broker"))
from apilib import (BASE_SETTINGS, Api, Suite, check, eq, expect,  # noqa: E402
                    registration_code, verification_certificate)
from drover import Drover, free_port  # noqa: E402
from test_device_auth import (BAD_AUTH_3, BAD_AUTH_5, NOT_AUTHORISED_5, Env,  # noqa: E402
                              openssl)

suite = Suite("test_zero_touch")


CA_DIRS = {}  # a CA's PEM -> its directory (make_ca), for its key


def make_ca(env, name, cn):
    """A device CA (its directory holds ca.pem and ca.key) and its PEM text."""
    d = os.path.join(env.tmp, name)
    os.makedirs(d)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", os.path.join(d, "ca.key"), "-out", os.path.join(d, "ca.pem"), "-days", "30",
            "-subj", f"/O=Drover tests/CN={cn}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    with open(os.path.join(d, "ca.pem")) as f:
        pem = f.read()
    CA_DIRS[pem] = d
    return d, pem


CA_CNF = """[ca]
default_ca = dflt
[dflt]
database = index.txt
crlnumber = crlnumber
default_md = sha256
certificate = ca.pem
private_key = ca.key
"""


def asn1_time(offset_s):
    """Now + offset_s as openssl ca takes it (YYYYMMDDHHMMSSZ)."""
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset_s)
    return t.strftime("%Y%m%d%H%M%SZ")


def make_crl(ca_dir, revoke=(), last=-60, next_=7 * 86400):
    """A CRL of the CA in ca_dir (`openssl ca -gencrl`, PEM text) listing every certificate
    ever revoked there, plus the certificate files in revoke; lastUpdate/nextUpdate are
    now + last / next_ seconds (next_=None: none)."""
    if not os.path.exists(os.path.join(ca_dir, "ca.cnf")):
        with open(os.path.join(ca_dir, "ca.cnf"), "w") as f:
            f.write(CA_CNF)
        open(os.path.join(ca_dir, "index.txt"), "w").close()
        with open(os.path.join(ca_dir, "crlnumber"), "w") as f:
            f.write("01\n")
    cwd = os.getcwd()
    os.chdir(ca_dir)
    try:
        for cert in revoke:
            openssl("ca", "-config", "ca.cnf", "-revoke", cert)
        times = ["-crl_lastupdate", asn1_time(last)]
        times += ["-crl_nextupdate", asn1_time(next_)] if next_ is not None else []
        openssl("ca", "-config", "ca.cnf", "-gencrl", *times, "-out", "crl.pem")
        with open("crl.pem") as f:
            return f.read()
    finally:
        os.chdir(cwd)


def expect_problem_has(r, status, text, what=None):
    expect(r, status, what or text)
    check(text in (r.json or {}).get("detail", ""), f"{what or text}: {r.json}")


def put_crl(admin, tid, ca, pem):
    return admin.request("PUT", f"/api/v1/tenants/{tid}/cas/{ca['id']}/crl", {"crl_pem": pem})


def zt_tenant(env, prefix, allow=True):
    tid, admin = env.tenant(prefix)
    if allow:
        expect(env.api.patch(f"/api/v1/tenants/{tid}", {"allow_zero_touch": True}), 200,
               "allow zero-touch")
    return tid, admin


def proof(admin, tid, ca_dir):
    """The verification certificate for registering the CA in ca_dir in tenant tid."""
    with open(os.path.join(ca_dir, "ca.pem")) as f, open(os.path.join(ca_dir, "ca.key")) as g:
        return verification_certificate(f.read(), g.read(), registration_code(admin, tid))


def register(admin, tid, pem, auto=True, **extra):
    """Register the CA whose certificate is pem (made by make_ca), with proof of
    possession."""
    ca_dir = CA_DIRS[pem]
    body = dict({"certificate_pem": pem, "auto_provision": auto,
                 "verification_certificate_pem": proof(admin, tid, ca_dir)}, **extra)
    return expect(admin.post(f"/api/v1/tenants/{tid}/cas", body), 201, "register CA").json


def device_status(admin, tid, dev):
    return admin.get(f"/api/v1/tenants/{tid}/devices/{dev}").status


@contextlib.contextmanager
def setup(binary):
    tmp = tempfile.mkdtemp(prefix="drover-zt-")
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


@suite.test()
def first_connect_creates_the_device_then_reuses_it(env):
    tid, admin = zt_tenant(env, "zt")
    expect(admin.post(f"/api/v1/tenants/{tid}/profiles", {"id": "sensors", "name": "Sensors"}),
           201, "profile")
    ca_dir, pem = make_ca(env, "ca-zt", "Factory CA")
    ca = register(admin, tid, pem, profile="sensors")
    eq(ca["auto_provision"], True, "auto_provision")
    eq(device_status(admin, tid, "z1"), 404, "before the first connect")
    cert, key = env.client_cert("z1", "z1", ca_dir=ca_dir)
    c, rc = env.tls_paho("z1", cert, key, 5)
    c.stop()
    r = expect(admin.get(f"/api/v1/tenants/{tid}/devices/z1"), 200, "the device").json
    eq((r.get("status"), r.get("profile")), ("active", "sensors"), "device status and profile")
    ev = expect(admin.get(f"/api/v1/tenants/{tid}/devices/z1/events"), 200, "events").json["items"]
    prov = [e for e in ev if e["kind"] == "provisioned"]
    eq(len(prov), 1, "one provisioned event")
    eq(prov[0].get("detail"), {"by": "zero-touch", "ca": ca["fingerprint"]}, "its detail")
    creds = expect(admin.get(f"/api/v1/tenants/{tid}/devices/z1/credentials"), 200,
                   "credentials").json["items"]
    eq([x["kind"] for x in creds], ["x509"], "bound by its certificate")
    # Second connect: the same device (MQTT 3.1.1 too), nothing new created.
    c, rc = env.tls_paho("z1", cert, key, 4)
    c.stop()
    devs = expect(admin.get(f"/api/v1/tenants/{tid}/devices"), 200, "devices").json["items"]
    eq([x["id"] for x in devs], ["z1"], "devices after two connects")


@suite.test()
def tenant_without_zero_touch_refuses(env):
    tid, admin = zt_tenant(env, "nozt", allow=False)
    ca_dir, pem = make_ca(env, "ca-nozt", "No ZT CA")
    register(admin, tid, pem)
    cert, key = env.client_cert("n1", "n1", ca_dir=ca_dir)
    c, rc = env.tls_paho("n1", cert, key, 5, expect_rc=BAD_AUTH_5)
    c.stop()
    eq(device_status(admin, tid, "n1"), 404, "no device created")


@suite.test()
def ca_without_auto_provision_needs_the_device(env):
    tid, admin = zt_tenant(env, "noauto")
    ca_dir, pem = make_ca(env, "ca-noauto", "Manual CA")
    register(admin, tid, pem, auto=False)
    cert, key = env.client_cert("m1", "m1", ca_dir=ca_dir)
    c, rc = env.tls_paho("m1", cert, key, 5, expect_rc=BAD_AUTH_5)
    c.stop()
    eq(device_status(admin, tid, "m1"), 404, "no device created")
    # The device exists (not bound to the certificate): still refused.
    env.device(admin, tid, "m1")
    c, rc = env.tls_paho("m1", cert, key, 4, expect_rc=BAD_AUTH_3)
    c.stop()
    # Bound to the certificate: accepted.
    with open(cert) as f:
        env.cred(admin, tid, "m1", {"kind": "x509", "certificate_pem": f.read()})
    c, rc = env.tls_paho("m1", cert, key, 5)
    c.stop()


@suite.test()
def bind_existing_binds_a_device_without_a_certificate_once(env):
    # A CA registered with bind_existing vouches for the CN: an existing, active device
    # that has no certificate yet is bound to the first one (docs/topics.md).
    tid, admin = zt_tenant(env, "bind", allow=False)
    ca_dir, pem = make_ca(env, "ca-bind", "Binding CA")
    ca = register(admin, tid, pem, auto=False, bind_existing=True)
    eq(ca.get("bind_existing"), True, "bind_existing")
    # Unknown device: not created (no auto_provision, no zero-touch).
    cert0, key0 = env.client_cert("b0", "b0", ca_dir=ca_dir)
    c, rc = env.tls_paho("b0", cert0, key0, 5, expect_rc=BAD_AUTH_5)
    c.stop()
    eq(device_status(admin, tid, "b0"), 404, "no device created")
    # Existing device without a certificate: bound on its first connect.
    env.device(admin, tid, "b1")
    cert, key = env.client_cert("b1", "b1", ca_dir=ca_dir)
    c, rc = env.tls_paho("b1", cert, key, 5)
    c.stop()
    creds = expect(admin.get(f"/api/v1/tenants/{tid}/devices/b1/credentials"), 200,
                   "credentials").json["items"]
    eq([x["kind"] for x in creds], ["x509"], "bound by its certificate")
    ev = expect(admin.get(f"/api/v1/tenants/{tid}/devices/b1/events"), 200, "events").json["items"]
    bound = [e for e in ev if e["kind"] == "certificate_bound"]
    eq(len(bound), 1, "one certificate_bound event")
    eq((bound[0]["detail"].get("by"), bound[0]["detail"].get("ca")), ("ca", ca["fingerprint"]),
       "its detail")
    c, rc = env.tls_paho("b1", cert, key, 4)  # and again, by fingerprint now
    c.stop()
    # A second certificate for the same CN cannot take the device over.
    cert2, key2 = env.client_cert("b1-second", "b1", ca_dir=ca_dir)
    c, rc = env.tls_paho("b1", cert2, key2, 5, expect_rc=BAD_AUTH_5)
    c.stop()
    # A decommissioned device is not bound either.
    env.device(admin, tid, "b2")
    expect(admin.post(f"/api/v1/tenants/{tid}/devices/b2/decommission"), 200, "decommission")
    cert3, key3 = env.client_cert("b2", "b2", ca_dir=ca_dir)
    c, rc = env.tls_paho("b2", cert3, key3, 5, expect_rc=BAD_AUTH_5)
    c.stop()
    # A claim CA cannot bind.
    _, pem2 = make_ca(env, "ca-bind-claim", "Claim bind CA")
    expect(admin.post(f"/api/v1/tenants/{tid}/cas", {"certificate_pem": pem2, "purpose": "claim",
                                                    "bind_existing": True}), 400,
           "claim CA with bind_existing")


@suite.test()
def revoked_ca_refuses_new_devices(env):
    tid, admin = zt_tenant(env, "rev")
    ca_dir, pem = make_ca(env, "ca-rev", "Revoked CA")
    ca = register(admin, tid, pem)
    expect(admin.delete(f"/api/v1/tenants/{tid}/cas/{ca['id']}"), 204, "revoke")
    r = expect(admin.get(f"/api/v1/tenants/{tid}/cas/{ca['id']}"), 200, "revoked CA").json
    check(r["revoked_at"], "revoked_at is set")
    cert, key = env.client_cert("r1", "r1", ca_dir=ca_dir)
    c, rc = env.tls_paho("r1", cert, key, 5, expect_rc=NOT_AUTHORISED_5)
    c.stop()
    eq(device_status(admin, tid, "r1"), 404, "no device created")
    # Revoked here, so no other tenant may take it over.
    tid2, admin2 = zt_tenant(env, "rev-other")
    r = admin2.post(f"/api/v1/tenants/{tid2}/cas", {"certificate_pem": pem})
    eq(r.status, 409, "another tenant registering a CA revoked elsewhere")


@suite.test()
def certificate_from_an_unregistered_ca_is_refused(env):
    tid, admin = zt_tenant(env, "unreg")
    ca_dir, _ = make_ca(env, "ca-unreg", "Unregistered CA")
    cert, key = env.client_cert("u1", "u1", ca_dir=ca_dir)
    c, rc = env.tls_paho("u1", cert, key, 5, expect_rc=NOT_AUTHORISED_5)
    c.stop()
    # A CA with the same subject but another key is registered: the chain does not verify.
    _, pem_same_name = make_ca(env, "ca-unreg-twin", "Unregistered CA")
    register(admin, tid, pem_same_name)
    c, rc = env.tls_paho("u1", cert, key, 5, expect_rc=BAD_AUTH_5)
    c.stop()
    eq(device_status(admin, tid, "u1"), 404, "no device created")


@suite.test()
def self_signed_leaf_bound_by_fingerprint(env):
    tid, admin = zt_tenant(env, "ss")
    key = os.path.join(env.tmp, "ss1.key")
    cert = os.path.join(env.tmp, "ss1.pem")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=ss1")
    c, rc = env.tls_paho("ss1", cert, key, 5, expect_rc=NOT_AUTHORISED_5)
    c.stop()
    with open(cert) as f:
        env.device(admin, tid, "ss1", {"kind": "x509", "certificate_pem": f.read()})
    c, rc = env.tls_paho("ss1", cert, key, 5)
    c.stop()


@suite.test()
def client_id_must_be_the_cn(env):
    tid, admin = zt_tenant(env, "cn")
    ca_dir, pem = make_ca(env, "ca-cn", "CN CA")
    register(admin, tid, pem)
    cert, key = env.client_cert("cn1", "cn1", ca_dir=ca_dir)
    c, rc = env.tls_paho("other", cert, key, 5, expect_rc=BAD_AUTH_5)
    c.stop()
    c, rc = env.tls_paho("cn1", cert, key, 5, username=f"{tid}/other", expect_rc=BAD_AUTH_5)
    c.stop()
    eq(device_status(admin, tid, "cn1"), 404, "no device created")
    eq(device_status(admin, tid, "other"), 404, "no device created")


@suite.test()
def a_ca_belongs_to_one_tenant(env):
    tid_a, admin_a = zt_tenant(env, "own-a")
    tid_b, admin_b = zt_tenant(env, "own-b")
    ca_dir, pem = make_ca(env, "ca-own", "Owned CA")
    register(admin_b, tid_b, pem)
    r = admin_a.post(f"/api/v1/tenants/{tid_a}/cas", {"certificate_pem": pem})
    eq(r.status, 409, "tenant A registering B's CA")
    r = admin_b.post(f"/api/v1/tenants/{tid_b}/cas", {"certificate_pem": pem})
    eq(r.status, 409, "B registering it twice")
    # B's CA provisions into B only, even when A allows zero-touch.
    cert, key = env.client_cert("own1", "own1", ca_dir=ca_dir)
    c, rc = env.tls_paho("own1", cert, key, 5, username=f"{tid_a}/own1", expect_rc=BAD_AUTH_5)
    c.stop()
    eq(device_status(admin_a, tid_a, "own1"), 404, "nothing in A")
    c, rc = env.tls_paho("own1", cert, key, 5)
    c.stop()
    eq(device_status(admin_a, tid_a, "own1"), 404, "still nothing in A")
    eq(device_status(admin_b, tid_b, "own1"), 200, "the device is B's")


@suite.test()
def registering_a_ca_that_creates_devices_needs_proof_of_possession(env):
    tid, admin = zt_tenant(env, "pop")
    base = f"/api/v1/tenants/{tid}/cas"
    ca_dir, pem = make_ca(env, "ca-pop", "Proof CA")
    with open(os.path.join(ca_dir, "ca.key")) as f:
        key = f.read()
    # No code asked for yet: no verification certificate can be right.
    premature = verification_certificate(pem, key, "0" * 64)
    expect_problem_has(admin.post(base, {"certificate_pem": pem, "auto_provision": True,
                                         "verification_certificate_pem": premature}),
                       400, "no registration code yet")
    code = registration_code(admin, tid)
    check(len(code) == 64 and all(ch in "0123456789abcdef" for ch in code), f"code {code!r}")
    eq(registration_code(admin, tid), code, "the code is kept")
    tid2, admin2 = zt_tenant(env, "pop-other")
    check(registration_code(admin2, tid2) != code, "each tenant has its own code")
    # Required for auto_provision, bind_existing and claim CAs.
    for extra in ({"auto_provision": True}, {"bind_existing": True}, {"purpose": "claim"}):
        expect_problem_has(admin.post(base, dict({"certificate_pem": pem}, **extra)), 400,
                           "proof of possession required")
    right = verification_certificate(pem, key, code)
    wrong_cn = verification_certificate(pem, key, registration_code(admin2, tid2))
    other_dir, _ = make_ca(env, "ca-pop-twin", "Proof CA")  # same subject, another key
    with open(os.path.join(other_dir, "ca.pem")) as f, \
            open(os.path.join(other_dir, "ca.key")) as g:
        other_key_proof = verification_certificate(f.read(), g.read(), code)
    stranger_dir, stranger_pem = make_ca(env, "ca-pop-stranger", "Stranger CA")
    with open(os.path.join(stranger_dir, "ca.key")) as g:
        stranger_proof = verification_certificate(stranger_pem, g.read(), code)
    for what, v in (("another tenant's code as CN", wrong_cn),
                    ("signed by another key", other_key_proof),
                    ("issued by another CA", stranger_proof),
                    ("not a certificate", "not a PEM")):
        expect_problem_has(admin.post(base, {"certificate_pem": pem, "auto_provision": True,
                                             "verification_certificate_pem": v}),
                           400, "proof of possession failed", what)
    r = expect(admin.post(base, {"certificate_pem": pem, "auto_provision": True,
                                 "verification_certificate_pem": right}), 201, "with proof").json
    eq((r["verified"], r["auto_provision"]), (True, True), "verified, auto_provision")
    # Optional for a plain device CA, which then is not "verified".
    r = expect(admin.post(base, {"certificate_pem": stranger_pem}), 201, "a plain device CA").json
    eq(r["verified"], False, "a plain CA without proof")
    # The code is the tenant admin's business.
    r = admin.post(f"/api/v1/tenants/{tid}/tokens", {"name": "op", "role": "operator"})
    op = admin.as_token(expect(r, 201, "operator token").json["token"])
    expect(op.get(f"/api/v1/tenants/{tid}/ca-registration-code"), 403,
           "an operator asking for the code")


@suite.test()
def crl_refuses_the_certificates_it_lists(env):
    tid, admin = zt_tenant(env, "crl")
    ca_dir, pem = make_ca(env, "ca-crl", "CRL CA")
    ca = register(admin, tid, pem)
    eq(ca.get("crl"), None, "a new CA has no CRL")
    bad, bad_key = env.client_cert("crl-bad", "crl-bad", ca_dir=ca_dir)
    good, good_key = env.client_cert("crl-good", "crl-good", ca_dir=ca_dir)
    crl = make_crl(ca_dir, [bad])
    r = expect(put_crl(admin, tid, ca, crl), 200, "set the CRL").json
    eq(r["crl"]["revoked"], 1, "revoked entries")
    check(r["crl"]["this_update"] and r["crl"]["next_update"], f"CRL times: {r['crl']}")
    before = env.log_count("certificate revoked by the tenant CA's CRL")
    c, rc = env.tls_paho("crl-bad", bad, bad_key, 5, expect_rc=BAD_AUTH_5)
    c.stop()
    eq(device_status(admin, tid, "crl-bad"), 404, "no device for the revoked certificate")
    eq(env.log_count("certificate revoked by the tenant CA's CRL"), before + 1, "logged why")
    c, rc = env.tls_paho("crl-good", good, good_key, 5)
    c.stop()
    eq(device_status(admin, tid, "crl-good"), 200, "a certificate the CRL does not list works")
    # An older CRL never replaces a newer one; a CRL from another key or CA is no CRL of this
    # one; an expired one is refused.
    older = make_crl(ca_dir, last=-3600)
    expect(put_crl(admin, tid, ca, older), 409, "an older CRL")
    other_dir, _ = make_ca(env, "ca-crl-twin", "CRL CA")  # same subject, another key
    expect(put_crl(admin, tid, ca, make_crl(other_dir)), 400, "a CRL signed by another key")
    stranger_dir, _ = make_ca(env, "ca-crl-other", "Another CRL CA")
    expect(put_crl(admin, tid, ca, make_crl(stranger_dir)), 400, "another CA's CRL")
    expired = make_crl(ca_dir, last=-7200, next_=-3600)
    expect(put_crl(admin, tid, ca, expired), 400, "an expired CRL")
    expect(put_crl(admin, tid, ca, "not a CRL"), 400, "not a CRL")
    expect(put_crl(admin, tid, ca, pem), 400, "a certificate instead of a CRL")
    expect(put_crl(admin, tid, ca, "x" * (1024 * 1024 + 1)), 413, "a CRL over 1 MiB")
    expect(admin.request("PUT", f"/api/v1/tenants/{tid}/cas/ca_nosuch/crl", {"crl_pem": crl}),
           404, "no such CA")
    r = expect(admin.get(f"/api/v1/tenants/{tid}/cas/{ca['id']}"), 200, "the CA").json
    eq(r["crl"]["revoked"], 1, "the CRL set first stays")
    # The same CRL again, or a newer one: accepted.
    expect(put_crl(admin, tid, ca, crl), 200, "the same CRL again")
    # A certificate bound to its device already (zero-touch bound crl-good on its first
    # connect) is reached by the CRL of the tenant's CA that issued it too.
    newer = make_crl(ca_dir, [good], last=-30)
    eq(expect(put_crl(admin, tid, ca, newer), 200, "a newer CRL").json["crl"]["revoked"], 2,
       "revoked entries of the newer CRL")
    before = env.log_count("certificate revoked by the tenant CA's CRL")
    c, rc = env.tls_paho("crl-good", good, good_key, 5, expect_rc=BAD_AUTH_5)
    c.stop()
    eq(env.log_count("certificate revoked by the tenant CA's CRL"), before + 1,
       "a bound certificate the CRL lists: logged why")

    # Deleting the CRL un-revokes what it listed.
    expect(admin.delete(f"/api/v1/tenants/{tid}/cas/{ca['id']}/crl"), 204, "delete the CRL")
    r = expect(admin.get(f"/api/v1/tenants/{tid}/cas/{ca['id']}"), 200, "the CA").json
    eq(r["crl"], None, "no CRL after DELETE")
    expect(admin.delete(f"/api/v1/tenants/{tid}/cas/ca_nosuch/crl"), 404, "DELETE, no such CA")
    c, rc = env.tls_paho("crl-bad", bad, bad_key, 5)
    c.stop()
    eq(device_status(admin, tid, "crl-bad"), 200, "created once the CRL is gone")
    # And after DELETE any CRL is accepted again, an older one too.
    expect(put_crl(admin, tid, ca, older), 200, "an older CRL after DELETE")


@suite.test()
def a_stale_crl_is_still_enforced(env):
    tid, admin = zt_tenant(env, "crl-stale")
    ca_dir, pem = make_ca(env, "ca-crl-stale", "Stale CRL CA")
    ca = register(admin, tid, pem)
    bad, bad_key = env.client_cert("stale-bad", "stale-bad", ca_dir=ca_dir)
    good, good_key = env.client_cert("stale-good", "stale-good", ca_dir=ca_dir)
    expect(put_crl(admin, tid, ca, make_crl(ca_dir, [bad], next_=2)), 200, "a CRL due in 2 s")
    time.sleep(3)
    before = env.log_count("past its nextUpdate")
    c, rc = env.tls_paho("stale-bad", bad, bad_key, 5, expect_rc=BAD_AUTH_5)
    c.stop()
    check(env.log_count("past its nextUpdate") > before, "a stale CRL is logged")
    c, rc = env.tls_paho("stale-good", good, good_key, 5)
    c.stop()
    eq((device_status(admin, tid, "stale-bad"), device_status(admin, tid, "stale-good")),
       (404, 200), "devices created")


@suite.test()
def crl_applies_to_bind_existing(env):
    tid, admin = zt_tenant(env, "crl-bind", allow=False)
    ca_dir, pem = make_ca(env, "ca-crl-bind", "CRL binding CA")
    ca = register(admin, tid, pem, auto=False, bind_existing=True)
    env.device(admin, tid, "cb1")
    env.device(admin, tid, "cb2")
    bad, bad_key = env.client_cert("cb1", "cb1", ca_dir=ca_dir)
    good, good_key = env.client_cert("cb2", "cb2", ca_dir=ca_dir)
    expect(put_crl(admin, tid, ca, make_crl(ca_dir, [bad])), 200, "set the CRL")
    c, rc = env.tls_paho("cb1", bad, bad_key, 5, expect_rc=BAD_AUTH_5)
    c.stop()
    creds = expect(admin.get(f"/api/v1/tenants/{tid}/devices/cb1/credentials"), 200,
                   "credentials").json["items"]
    eq(creds, [], "the revoked certificate is not bound")
    c, rc = env.tls_paho("cb2", good, good_key, 5)
    c.stop()
    creds = expect(admin.get(f"/api/v1/tenants/{tid}/devices/cb2/credentials"), 200,
                   "credentials").json["items"]
    eq([x["kind"] for x in creds], ["x509"], "the other certificate is bound")


@suite.test()
def crl_applies_to_claim_certificates(env):
    tid, admin = zt_tenant(env, "crl-claim", allow=False)
    ca_dir, pem = make_ca(env, "ca-crl-claim", "CRL claim CA")
    ca = register(admin, tid, pem, auto=False, purpose="claim")
    bad, bad_key = env.client_cert("claim-bad", "claim", ca_dir=ca_dir)
    good, good_key = env.client_cert("claim-good", "claim", ca_dir=ca_dir)
    expect(put_crl(admin, tid, ca, make_crl(ca_dir, [bad])), 200, "set the CRL")
    c, rc = env.tls_paho("cid-bad", bad, bad_key, 5, expect_rc=BAD_AUTH_5)
    c.stop()
    c, rc = env.tls_paho("cid-good", good, good_key, 5)  # a claim session
    c.stop()


if __name__ == "__main__":
    suite.main(setup)
