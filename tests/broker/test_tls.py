#!/usr/bin/python3
"""MQTT over TLS and mutual TLS, with real clients (issue 3, "Transports" and "Proof").

Clients: `openssl s_client`, mosquitto_pub/mosquitto_sub (--cafile/--cert/--key) and
paho-mqtt (tls_set).  The server trusts nothing of ours except what the test
configures: plain TLS uses the development CA the server makes in
<data_dir>/tls/ca.pem on first start; mutual TLS uses a small PKI made here with the
openssl CLI in a temp dir (a client CA with a good, an expired and a revoked client
certificate plus its CRL, and a certificate from another CA).

Not tested here: the verified client certificate reaching authentication.  The
authentication interface receives it (drv_client_identity.cert), but the static
backend (auth_static.c: password file + ACL file) does not use it yet, so there is no
observable behaviour to test with `auth.allow_anonymous=never` and no password file.
Add the test when a backend admits (or maps) clients by certificate.
"""
import atexit
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "lib"))
from drover import free_port  # noqa: E402
from mqtt_testlib import HOST, MosqSub, Suite, TestFailure, check, eq, wait_until  # noqa: E402

suite = Suite(__file__)

# ---------------------------------------------------------------------------
# A test PKI for mutual TLS, made with the openssl CLI.

PKI = tempfile.mkdtemp(prefix="drover-tls-")
atexit.register(shutil.rmtree, PKI, True)

CNF = """\
[ ca ]
default_ca = CA_default

[ CA_default ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
certificate = $dir/client-ca.pem
private_key = $dir/client-ca.key
serial = $dir/serial
crlnumber = $dir/crlnumber
default_md = sha256
default_days = 30
default_crl_days = 30
policy = policy_any
unique_subject = no
copy_extensions = none
x509_extensions = usr_cert

[ policy_any ]
commonName = supplied
organizationName = optional

[ usr_cert ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ req ]
distinguished_name = dn
prompt = no

[ dn ]
CN = unused
"""


def _ossl(*args):
    r = subprocess.run(["openssl", *args], cwd=PKI, capture_output=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{r.stderr.decode(errors='replace')}")
    return r.stdout.decode(errors="replace")


def _path(name):
    return os.path.join(PKI, name)


def _key(name):
    _ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name + ".key")


def _self_signed_ca(name, cn):
    _key(name)
    _ossl("req", "-config", "openssl.cnf", "-x509", "-new", "-key", name + ".key", "-subj", "/CN=" + cn,
          "-days", "30", "-extensions", "v3_ca", "-out", name + ".pem")


def _csr(name, cn):
    _key(name)
    _ossl("req", "-config", "openssl.cnf", "-new", "-key", name + ".key", "-subj", f"/O=Drover tests/CN={cn}",
          "-out", name + ".csr")


def _make_pki():
    os.makedirs(_path("newcerts"))
    with open(_path("openssl.cnf"), "w") as f:
        f.write(CNF.format(dir=PKI))
    open(_path("index.txt"), "w").close()
    with open(_path("serial"), "w") as f:
        f.write("1000\n")
    with open(_path("crlnumber"), "w") as f:
        f.write("01\n")
    _self_signed_ca("client-ca", "Drover test client CA")
    _self_signed_ca("other-ca", "Some other CA")
    # good: valid for 30 days from now
    _csr("good", "good-device")
    _ossl("ca", "-batch", "-config", "openssl.cnf", "-notext", "-in", "good.csr", "-out", "good.pem")
    # expired: valid in January 2020 only (openssl ca takes explicit dates; no faketime needed)
    _csr("expired", "expired-device")
    _ossl("ca", "-batch", "-config", "openssl.cnf", "-notext", "-startdate", "20200101000000Z",
          "-enddate", "20200201000000Z", "-in", "expired.csr", "-out", "expired.pem")
    # revoked: valid, then revoked, and listed in the CRL
    _csr("revoked", "revoked-device")
    _ossl("ca", "-batch", "-config", "openssl.cnf", "-notext", "-in", "revoked.csr", "-out", "revoked.pem")
    _ossl("ca", "-batch", "-config", "openssl.cnf", "-revoke", "revoked.pem", "-crl_reason", "keyCompromise")
    _ossl("ca", "-batch", "-config", "openssl.cnf", "-gencrl", "-out", "crl.pem")
    # stranger: well-formed and current, but signed by a CA the server does not trust
    _csr("stranger", "stranger-device")
    _ossl("x509", "-req", "-in", "stranger.csr", "-CA", "other-ca.pem", "-CAkey", "other-ca.key",
          "-CAcreateserial", "-days", "30", "-extfile", "openssl.cnf", "-extensions", "usr_cert",
          "-out", "stranger.pem")
    # sanity: the PKI is what the tests believe it is
    ok = _ossl("verify", "-CAfile", "client-ca.pem", "good.pem")
    assert "good.pem: OK" in ok, ok
    crl = _ossl("crl", "-in", "crl.pem", "-noout", "-text")
    serial = _ossl("x509", "-in", "revoked.pem", "-noout", "-serial").strip().split("=")[1]
    assert serial.upper() in crl.upper(), crl


_make_pki()

TLS_PORT = free_port()
TLS = {"mqtt.tls_listen": f"{HOST}:{TLS_PORT}"}

MTLS_PORT = free_port()
MTLS = {"mqtt.tls_listen": f"{HOST}:{MTLS_PORT}",
        "tls.client_ca_file": _path("client-ca.pem"),
        "tls.require_client_cert": "true",
        "tls.crl_file": _path("crl.pem")}

OPTIONAL_PORT = free_port()
MTLS_OPTIONAL = {"mqtt.tls_listen": f"{HOST}:{OPTIONAL_PORT}",
                 "tls.client_ca_file": _path("client-ca.pem"),
                 "tls.require_client_cert": "false",
                 "tls.crl_file": _path("crl.pem")}


def server_ca(ctx):
    """The development CA the server generated in its data dir."""
    p = os.path.join(ctx.d.data_dir, "data", "tls", "ca.pem")
    check(os.path.exists(p), f"the server made no development CA at {p}")
    return p


def wait_port(port, timeout=5):
    def ok():
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return True
        except OSError:
            return False
    check(wait_until(ok, timeout, 0.05), f"nothing listening on TLS port {port}")


def s_client(port, *args, hold=0.0, timeout=10):
    """openssl s_client against port; stdin held open `hold` seconds (TLS 1.3 tickets
    arrive after the handshake).  Returns (returncode, combined output)."""
    cmd = ["openssl", "s_client", "-connect", f"{HOST}:{port}", *args]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if hold:
        time.sleep(hold)
    try:
        out, _ = p.communicate(b"", timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        raise TestFailure(f"s_client did not finish within {timeout}s: {out.decode(errors='replace')[-2000:]}")
    return p.returncode, out.decode(errors="replace")


def tls_paho(ctx, port, version, ca=None, cert=None, key=None, connect=True, **kw):
    c = ctx.paho(version=version, connect=False)
    c.port = port
    c.c.tls_set(ca_certs=ca or server_ca(ctx), certfile=cert, keyfile=key)
    # mqtt_testlib drives paho with its own thread calling loop(), so paho 1.6 (seeing no
    # loop_start() thread) writes publish()/subscribe() packets straight from the caller's
    # thread.  Over TLS that is two threads in one SSL object at once (SSL_write here, SSL_read
    # or a partial SSL_write there), which corrupts records: the broker then rightly reports
    # "bad record mac".  Marking a thread as present makes paho queue the packet and wake the
    # loop thread, which alone touches the socket.
    c.c._thread = threading.main_thread()
    if connect:
        c.connect(**kw)
    return c


def mosq(args, timeout=10):
    r = subprocess.run(args, capture_output=True, timeout=timeout)
    return r.returncode, (r.stdout + r.stderr).decode(errors="replace")


def mosq_pub_tls(port, topic, message, cafile, cert=None, key=None, qos=1, version="311"):
    args = ["mosquitto_pub", "-h", HOST, "-p", str(port), "--cafile", cafile, "-t", topic, "-m", message,
            "-q", str(qos), "-V", version, "-d"]
    if cert:
        args += ["--cert", cert, "--key", key]
    return mosq(args)


# ---------------------------------------------------------------------------
# Server authentication: the development CA, protocol versions, resumption.

@suite.test(settings=TLS)
def s_client_tls13_verifies_dev_ca(ctx):
    wait_port(TLS_PORT)
    rc, out = s_client(TLS_PORT, "-CAfile", server_ca(ctx), "-verify_return_error", "-verify_ip", HOST,
                       "-tls1_3")
    eq(rc, 0, f"s_client exit status\n{out[-1500:]}")
    check("New, TLSv1.3" in out, f"no TLS 1.3 session:\n{out[-1500:]}")
    check("Verify return code: 0 (ok)" in out, f"server certificate not verified:\n{out[-1500:]}")


@suite.test(settings=TLS)
def s_client_tls12_verifies_dev_ca(ctx):
    wait_port(TLS_PORT)
    rc, out = s_client(TLS_PORT, "-CAfile", server_ca(ctx), "-verify_return_error", "-verify_hostname",
                       "localhost", "-tls1_2")
    eq(rc, 0, f"s_client exit status\n{out[-1500:]}")
    check("New, TLSv1.2" in out, f"no TLS 1.2 session:\n{out[-1500:]}")
    check("Verify return code: 0 (ok)" in out, f"server certificate not verified:\n{out[-1500:]}")
    # Mozilla "intermediate": forward-secret AEAD suites only; the certificate is ECDSA
    check("Cipher is ECDHE-" in out and ("GCM" in out or "CHACHA20" in out),
          f"TLS 1.2 suite is not ECDHE + AEAD:\n{out[-1500:]}")
    check("Peer signature type: ECDSA" in out, f"development certificate is not ECDSA:\n{out[-1500:]}")


@suite.test(settings=TLS)
def s_client_tls11_and_tls10_refused(ctx):
    wait_port(TLS_PORT)
    for flag in ("-tls1_1", "-tls1"):
        # SECLEVEL=0 so that our own client offers the old protocol: the refusal must be the server's
        rc, out = s_client(TLS_PORT, "-CAfile", server_ca(ctx), flag, "-cipher", "DEFAULT@SECLEVEL=0")
        check(rc != 0, f"{flag}: handshake succeeded:\n{out[-1500:]}")
        check("Cipher is (NONE)" in out or "alert protocol version" in out or "no protocols available" in out,
              f"{flag}: unexpected output:\n{out[-1500:]}")
        check("alert protocol version" in out, f"{flag}: the server did not answer protocol_version:\n"
                                               f"{out[-1500:]}")


@suite.test(settings=TLS)
def s_client_wrong_ca_fails(ctx):
    wait_port(TLS_PORT)
    rc, out = s_client(TLS_PORT, "-CAfile", _path("other-ca.pem"), "-verify_return_error")
    check(rc != 0, f"handshake verified with the wrong CA:\n{out[-1500:]}")
    check("Verify return code: 0 (ok)" not in out, out[-1500:])
    check("verify" in out.lower(), f"no verification error reported:\n{out[-1500:]}")


@suite.test(settings=TLS)
def session_resumption_tls13_and_tls12(ctx):
    wait_port(TLS_PORT)
    ca = server_ca(ctx)
    for flag in ("-tls1_3", "-tls1_2"):
        sess = os.path.join(PKI, f"session{flag}.pem")
        rc, out = s_client(TLS_PORT, "-CAfile", ca, "-verify_return_error", flag, "-sess_out", sess, hold=0.5)
        eq(rc, 0, f"{flag} first handshake\n{out[-1500:]}")
        check("New, " in out, f"{flag}: first handshake is not new:\n{out[-1500:]}")
        check(os.path.exists(sess), f"{flag}: s_client saved no session")
        rc, out = s_client(TLS_PORT, "-CAfile", ca, "-verify_return_error", flag, "-sess_in", sess, hold=0.3)
        eq(rc, 0, f"{flag} resumed handshake\n{out[-1500:]}")
        check("Reused, " in out, f"{flag}: session not resumed:\n{out[-1500:]}")


@suite.test(settings=TLS)
def mosquitto_round_trip_over_tls(ctx):
    wait_port(TLS_PORT)
    ca = server_ca(ctx)
    for version in ("311", "5"):
        topic = ctx.topic("mosq", version)
        sub = MosqSub(TLS_PORT, [topic], qos=1, version=5 if version == "5" else 4, count=1, timeout_s=8,
                      extra=("--cafile", ca))
        ctx._clients.append(sub)
        sub.wait_subscribed()
        rc, out = mosq_pub_tls(TLS_PORT, topic, f"hello-tls-v{version}", ca, version=version)
        eq(rc, 0, f"mosquitto_pub over TLS (v{version}): {out}")
        check("received PUBACK" in out, f"no PUBACK over TLS: {out}")
        msgs = sub.wait_msgs(1, 5)
        eq([(t, q, p) for t, q, r, p in msgs], [(topic, 1, f"hello-tls-v{version}")],
           f"mosquitto_sub over TLS (v{version}): {sub.all_lines}")
        eq(sub.wait_exit(5), 0, f"mosquitto_sub exit status: {sub.all_lines}")


@suite.test(settings=TLS)
def mosquitto_wrong_ca_fails(ctx):
    wait_port(TLS_PORT)
    topic = ctx.topic("wrongca")
    watcher = ctx.paho(version=4)
    watcher.subscribe(topic, 1)
    rc, out = mosq_pub_tls(TLS_PORT, topic, "must-not-arrive", _path("other-ca.pem"))
    check(rc != 0, f"mosquitto_pub with the wrong CA succeeded: {out}")
    watcher.expect_none(0.3)


@suite.test(settings=TLS)
def paho_v311_and_v5_over_tls(ctx):
    wait_port(TLS_PORT)
    for version in (4, 5):
        topic = ctx.topic("paho", str(version))
        sub = tls_paho(ctx, TLS_PORT, version)
        pub = tls_paho(ctx, TLS_PORT, version)
        tcp = ctx.paho(version=version)  # a plain-TCP subscriber sees TLS publishes too
        for q in (0, 1, 2):
            codes = sub.subscribe(f"{topic}/{q}", q)
            eq(codes, [q], f"v{version} SUBACK over TLS")
        eq(tcp.subscribe(f"{topic}/#", 2), [2], "SUBACK over TCP")
        big = os.urandom(100 * 1024)
        for q in (0, 1, 2):
            pub.publish(f"{topic}/{q}", b"m%d" % q, qos=q)
        pub.publish(f"{topic}/1", big, qos=1)
        got = sub.wait_msgs(4, 5)
        eq(sorted((m.topic, m.qos) for m in got),
           sorted([(f"{topic}/0", 0), (f"{topic}/1", 1), (f"{topic}/2", 2), (f"{topic}/1", 1)]),
           f"v{version} deliveries over TLS")
        check(any(m.payload == big for m in got), "100 KB payload not delivered intact over TLS")
        eq(len(tcp.wait_msgs(4, 5)), 4, "deliveries from TLS to TCP")
        # and TCP -> TLS
        tcp.publish(f"{topic}/2", b"from-tcp", qos=2)
        got = sub.wait_msgs(5, 5)
        check(any(m.payload == b"from-tcp" and m.qos == 2 for m in got), f"TCP->TLS delivery: {got}")
        for c in (sub, pub, tcp):
            c.disconnect()


@suite.test(settings=TLS)
def paho_wrong_ca_fails(ctx):
    wait_port(TLS_PORT)
    c = ctx.paho(version=4, connect=False)
    c.port = TLS_PORT
    c.c.tls_set(ca_certs=_path("other-ca.pem"))
    try:
        c.c.connect(HOST, TLS_PORT, 30)
    except ssl.SSLError as e:
        check("CERTIFICATE_VERIFY_FAILED" in str(e) or "verify" in str(e).lower(), f"unexpected error {e!r}")
        return
    raise TestFailure("paho connected over TLS with the wrong CA")


@suite.test(settings=TLS)
def plaintext_on_tls_port_is_closed(ctx):
    """An MQTT CONNECT in clear text to the TLS port gets no CONNACK, and the broker lives on."""
    wait_port(TLS_PORT)
    s = socket.create_connection((HOST, TLS_PORT), timeout=5)
    try:
        s.sendall(bytes.fromhex("101000044d5154540402003c000461626364"))
        s.settimeout(5)
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        check(not data.startswith(b"\x20\x02"), f"CONNACK in clear text from the TLS port: {data!r}")
    finally:
        s.close()
    c = ctx.paho(version=4)
    c.disconnect()


# ---------------------------------------------------------------------------
# Mutual TLS: tls.client_ca_file + tls.require_client_cert + tls.crl_file.

def _mtls_pub(ctx, port, name, cert=True):
    """mosquitto_pub over mTLS with client certificate `name` (None: no certificate).
    Returns (delivered, exit status, output); delivery is watched from plain TCP."""
    topic = ctx.topic("mtls", name or "nocert")
    watcher = ctx.paho(version=4)
    watcher.subscribe(topic, 1)
    if name:
        rc, out = mosq_pub_tls(port, topic, f"from-{name}", server_ca(ctx), _path(name + ".pem"),
                               _path(name + ".key"))
    else:
        rc, out = mosq_pub_tls(port, topic, "from-nocert", server_ca(ctx))
    delivered = bool(watcher.wait_msgs(1, 1.0 if rc == 0 else 0.3))
    return delivered, rc, out


@suite.test(settings=MTLS)
def mtls_good_certificate_connects(ctx):
    wait_port(MTLS_PORT)
    delivered, rc, out = _mtls_pub(ctx, MTLS_PORT, "good")
    eq(rc, 0, f"mosquitto_pub with a good client certificate: {out}")
    check(delivered, f"message from the good certificate not delivered: {out}")


@suite.test(settings=MTLS)
def mtls_no_certificate_refused(ctx):
    wait_port(MTLS_PORT)
    delivered, rc, out = _mtls_pub(ctx, MTLS_PORT, None)
    check(rc != 0 and not delivered, f"client without a certificate admitted (rc={rc}): {out}")
    check("received CONNACK" not in out, f"CONNACK sent to a client without a certificate: {out}")


@suite.test(settings=MTLS)
def mtls_expired_certificate_refused(ctx):
    wait_port(MTLS_PORT)
    delivered, rc, out = _mtls_pub(ctx, MTLS_PORT, "expired")
    check(rc != 0 and not delivered, f"expired certificate admitted (rc={rc}): {out}")
    check("received CONNACK" not in out, f"CONNACK sent for an expired certificate: {out}")


@suite.test(settings=MTLS)
def mtls_other_ca_certificate_refused(ctx):
    wait_port(MTLS_PORT)
    delivered, rc, out = _mtls_pub(ctx, MTLS_PORT, "stranger")
    check(rc != 0 and not delivered, f"certificate from an untrusted CA admitted (rc={rc}): {out}")
    check("received CONNACK" not in out, f"CONNACK sent for an untrusted certificate: {out}")


@suite.test(settings=MTLS)
def mtls_revoked_certificate_refused(ctx):
    wait_port(MTLS_PORT)
    delivered, rc, out = _mtls_pub(ctx, MTLS_PORT, "revoked")
    check(rc != 0 and not delivered, f"revoked certificate admitted (rc={rc}): {out}")
    check("received CONNACK" not in out, f"CONNACK sent for a revoked certificate: {out}")


@suite.test(settings=MTLS)
def mtls_s_client_sees_client_ca_names(ctx):
    """The server asks for a certificate and names the configured client CA."""
    wait_port(MTLS_PORT)
    rc, out = s_client(MTLS_PORT, "-CAfile", server_ca(ctx), "-tls1_2", "-cert", _path("good.pem"),
                       "-key", _path("good.key"))
    eq(rc, 0, f"s_client with a good certificate\n{out[-1500:]}")
    check("Acceptable client certificate CA names" in out and "Drover test client CA" in out,
          f"client CA not advertised:\n{out[-2000:]}")


@suite.test(settings=MTLS)
def mtls_paho_with_client_certificate(ctx):
    wait_port(MTLS_PORT)
    for version in (4, 5):
        topic = ctx.topic("mtls-paho", str(version))
        c = tls_paho(ctx, MTLS_PORT, version, cert=_path("good.pem"), key=_path("good.key"))
        eq(c.subscribe(topic, 1), [1], "SUBACK over mTLS")
        c.publish(topic, b"x", qos=1)
        check(c.wait_msgs(1, 3), "own message not received over mTLS")
        c.disconnect()
    # and paho with the revoked certificate gets no CONNACK
    c = tls_paho(ctx, MTLS_PORT, 4, cert=_path("revoked.pem"), key=_path("revoked.key"), connect=False)
    try:
        c.c.connect(HOST, MTLS_PORT, 30)
    except (ssl.SSLError, OSError):
        return  # refused in the handshake
    # TLS 1.3: the client finishes its side of the handshake before the server has checked the
    # certificate; the refusal arrives as an alert instead of the CONNACK
    c._stop.clear()
    c._thread = threading.Thread(target=c._run, daemon=True)
    c._thread.start()
    check(c._wait(lambda: c.connack is not None or c.disconnect_rc is not None, 5),
          "revoked certificate: neither a CONNACK nor a close within 5 s")
    check(c.connack is None or c.connack[1] != 0, f"paho with a revoked certificate connected: {c.connack}")


@suite.test(settings=MTLS_OPTIONAL)
def mtls_optional_admits_no_certificate_and_good_certificate(ctx):
    """require_client_cert=false: a client without a certificate is admitted, and so is a
    good certificate."""
    wait_port(OPTIONAL_PORT)
    delivered, rc, out = _mtls_pub(ctx, OPTIONAL_PORT, None)
    check(rc == 0 and delivered, f"client without a certificate refused although optional: {out}")
    delivered, rc, out = _mtls_pub(ctx, OPTIONAL_PORT, "good")
    check(rc == 0 and delivered, f"good certificate refused: {out}")


if __name__ == "__main__":
    suite.main()
