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

Usage: test_zero_touch.py --drover BINARY [-k NAME]
"""
import contextlib
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "broker"))
from apilib import BASE_SETTINGS, Api, Suite, check, eq, expect  # noqa: E402
from drover import Drover, free_port  # noqa: E402
from test_device_auth import (BAD_AUTH_3, BAD_AUTH_5, NOT_AUTHORISED_5, Env,  # noqa: E402
                              openssl)

suite = Suite("test_zero_touch")


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
        return d, f.read()


def zt_tenant(env, prefix, allow=True):
    tid, admin = env.tenant(prefix)
    if allow:
        expect(env.api.patch(f"/api/v1/tenants/{tid}", {"allow_zero_touch": True}), 200,
               "allow zero-touch")
    return tid, admin


def register(admin, tid, pem, auto=True, **extra):
    body = dict({"certificate_pem": pem, "auto_provision": auto}, **extra)
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


if __name__ == "__main__":
    suite.main(setup)
