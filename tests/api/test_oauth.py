#!/usr/bin/python3
"""OAuth 2.0 client credentials, JWT access tokens and their signing keys (ADR-0010).

Against a live server: clients get tokens at POST /oauth/token with HTTP Basic
or form credentials, and RFC 6749 errors otherwise; the token is an ES256 JWT
that the `openssl` command line verifies with the key from
/.well-known/jwks.json; it works as a bearer token inside its tenant and role
only; tampered, unsigned, HMAC-confused and foreign-key tokens are refused, and
so are tokens signed with the server's own key (read from the registry file,
as only whoever holds the data directory can) whose claims are wrong; a
rotation keeps old tokens working and survives a restart; revoking the client
or deleting the tenant ends its tokens; and a token of a server with
api.jwt_ttl_s=1 is refused once its minute of leeway has passed.

Python's standard library has no ECDSA, so signatures are checked and made
with `openssl dgst`, converting between JWS's raw R||S and DER here.

Usage: test_oauth.py --drover BINARY
"""
import base64
import calendar
import contextlib
import hashlib
import hmac
import json
import os
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from apilib import Suite, check, eq, expect, expect_problem, start_server  # noqa: E402

suite = Suite("test_oauth")
FORM = "application/x-www-form-urlencoded"
LEEWAY = 60


# -- JOSE helpers -------------------------------------------------------------------------------

def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64u_dec(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def compact(obj):
    return b64u(json.dumps(obj, separators=(",", ":")).encode())


def parts(tok):
    """(header, claims, signing input, raw signature) of a compact JWS."""
    h, p, s = tok.split(".")
    return json.loads(b64u_dec(h)), json.loads(b64u_dec(p)), f"{h}.{p}".encode(), b64u_dec(s)


def der_from_raw(raw):
    """JWS R||S to the DER ECDSA-Sig-Value openssl reads."""
    def integer(b):
        b = b.lstrip(b"\0") or b"\0"
        if b[0] & 0x80:
            b = b"\0" + b
        return b"\x02" + bytes([len(b)]) + b
    body = integer(raw[:32]) + integer(raw[32:])
    return b"\x30" + bytes([len(body)]) + body


def raw_from_der(der):
    """DER ECDSA-Sig-Value (as openssl writes it) to JWS R||S."""
    check(der[0] == 0x30, "DER signature is a SEQUENCE")
    i = 2 if der[1] < 0x80 else 3
    out = b""
    for _ in range(2):
        check(der[i] == 0x02, "DER INTEGER")
        n = der[i + 1]
        out += int.from_bytes(der[i + 2:i + 2 + n], "big").to_bytes(32, "big")
        i += 2 + n
    return out


def pem_from_jwk(jwk):
    """SubjectPublicKeyInfo PEM of a P-256 JWK (fixed DER prefix + the uncompressed point)."""
    spki = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200") + b"\x04" + \
        b64u_dec(jwk["x"]) + b64u_dec(jwk["y"])
    return "-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(spki).decode() + \
        "-----END PUBLIC KEY-----\n"


def openssl_verify(jwk, tok):
    """True when `openssl dgst -verify` accepts the token's signature under jwk."""
    _, _, signing_input, raw = parts(tok)
    if len(raw) != 64:
        return False
    with tempfile.TemporaryDirectory(prefix="drover-oauth-") as d:
        for name, data in (("pub.pem", pem_from_jwk(jwk).encode()), ("in", signing_input),
                           ("sig.der", der_from_raw(raw))):
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        p = subprocess.run(["openssl", "dgst", "-sha256", "-verify", "pub.pem", "-signature",
                            "sig.der", "in"], cwd=d, capture_output=True, timeout=30)
        return p.returncode == 0 and b"Verified OK" in p.stdout


def openssl_sign(key_pem, header, claims):
    """A compact JWS of header and claims, ES256-signed by `openssl dgst -sign` with key_pem."""
    signing_input = f"{compact(header)}.{compact(claims)}"
    with tempfile.TemporaryDirectory(prefix="drover-oauth-") as d:
        with open(os.path.join(d, "key.pem"), "w") as f:
            f.write(key_pem)
        with open(os.path.join(d, "in"), "w") as f:
            f.write(signing_input)
        subprocess.run(["openssl", "dgst", "-sha256", "-sign", "key.pem", "-out", "sig.der", "in"],
                       cwd=d, check=True, capture_output=True, timeout=30)
        with open(os.path.join(d, "sig.der"), "rb") as f:
            der = f.read()
    return signing_input + "." + b64u(raw_from_der(der))


def new_ec_key():
    p = subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256"], check=True, capture_output=True, timeout=30)
    return p.stdout.decode()


# -- the servers ----------------------------------------------------------------------------------

class Env:
    def __init__(self, d, api, d_short, api_short):
        self.d = d
        self.api = api
        self.d_short = d_short
        self.api_short = api_short
        self.n = 0

    def alive(self):
        return self.d.alive() and self.d_short.alive()

    def registry(self, d=None):
        return os.path.join((d or self.d).data_dir, "data", "registry.db")

    def db_rows(self, sql, d=None):
        db = sqlite3.connect(f"file:{self.registry(d)}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    def active_key(self):
        """(kid, private key PEM) of the server's active signing key, read from the registry."""
        rows = self.db_rows("SELECT kid, private_key_pem FROM signing_keys WHERE active = 1")
        eq(len(rows), 1, "active signing keys")
        return rows[0]

    def tenant(self, api=None):
        """A new tenant and its admin's Api."""
        api = api or self.api
        self.n += 1
        tid = f"oauth-t{self.n}"
        expect(api.post("/api/v1/tenants", {"id": tid, "name": f"OAuth {self.n}"}), 201, "tenant")
        r = expect(api.post(f"/api/v1/tenants/{tid}/tokens", {"name": "admin",
                                                             "role": "tenant_admin"}), 201, "admin")
        return tid, api.as_token(r.json["token"])

    def client(self, admin, tid, role="operator", scopes=None):
        body = {"name": f"client-{role}", "role": role}
        if scopes is not None:
            body["scopes"] = scopes
        r = expect(admin.post(f"/api/v1/tenants/{tid}/oauth-clients", body), 201, "OAuth client")
        return r.json


def basic(client_id, secret):
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def token_request(api, form, headers=None):
    raw = form if isinstance(form, str) else urllib.parse.urlencode(form)
    return api.post("/oauth/token", raw=raw, ctype=FORM, token=None, headers=headers or {})


def get_token(api, client, **form):
    f = {"grant_type": "client_credentials"}
    f.update(form)
    r = expect(token_request(api, f, basic(client["client_id"], client["client_secret"])), 200,
               "token")
    return r.json["access_token"]


def expect_oauth_error(r, status, error, what):
    expect(r, status, what)
    eq(r.media, "application/json", f"{what}: content type")
    eq(r.json.get("error"), error, f"{what}: error")
    check(isinstance(r.json.get("error_description"), str), f"{what}: error_description")
    eq(r.header("Cache-Control"), "no-store", f"{what}: Cache-Control")
    if status == 401:
        eq(r.header("WWW-Authenticate"), 'Basic realm="drover"', f"{what}: WWW-Authenticate")


def expect_401(api, tok, what):
    r = api.get("/api/v1/whoami", token=tok)
    expect_problem(r, 401, what, "unauthorized")
    check((r.header("WWW-Authenticate") or "").startswith("Bearer"), f"{what}: WWW-Authenticate")


@contextlib.contextmanager
def setup(binary):
    with start_server(binary) as (d, api), \
            start_server(binary, **{"api.jwt_ttl_s": "1"}) as (d_short, api_short):
        env = Env(d, api, d_short, api_short)
        # The short-lived token is made first, so the wait for it overlaps the other tests.
        tid, admin = env.tenant(api_short)
        client = env.client(admin, tid)
        env.short_token = get_token(api_short, client)
        env.short_claims = parts(env.short_token)[1]
        expect(api_short.get(f"/api/v1/tenants/{tid}/devices", token=env.short_token), 200,
               "a fresh 1-second token")
        yield env


# -- the token endpoint ---------------------------------------------------------------------------

@suite.test()
def token_with_http_basic(env):
    tid, admin = env.tenant()
    c = env.client(admin, tid, scopes=["devices:read", "devices:write"])
    check(c["client_id"].startswith("oc_") and c["client_secret"].startswith("drvcs_"),
          f"client ids: {c}")
    r = expect(token_request(env.api, {"grant_type": "client_credentials"},
                             basic(c["client_id"], c["client_secret"])), 200, "token")
    eq(r.header("Cache-Control"), "no-store", "Cache-Control")
    eq(r.header("Pragma"), "no-cache", "Pragma")
    body = r.json
    eq(body["token_type"], "Bearer", "token_type")
    eq(body["expires_in"], 900, "expires_in")
    eq(body["scope"], "devices:read devices:write", "scope: all registered when none asked")
    header, claims, _, sig = parts(body["access_token"])
    eq(header["alg"], "ES256", "alg")
    eq(header["typ"], "at+jwt", "typ")
    check(len(header["kid"]) == 43, f"kid is a thumbprint: {header}")
    eq(len(sig), 64, "ES256 signature length")
    for k, v in (("iss", "drover"), ("sub", c["client_id"]), ("client_id", c["client_id"]),
                 ("aud", "drover-api"), ("tenant", tid), ("role", "operator"),
                 ("scope", "devices:read devices:write")):
        eq(claims.get(k), v, f"claim {k}")
    eq(claims["exp"] - claims["iat"], 900, "lifetime")
    eq(claims["nbf"], claims["iat"], "nbf")
    check(abs(claims["iat"] - time.time()) < 30, f"iat is now: {claims}")
    other = parts(get_token(env.api, c))[1]
    check(other["jti"] != claims["jti"], "every token has its own jti")
    # The id and secret are form-encoded before base64 (RFC 6749 §2.3.1).
    enc_id = c["client_id"].replace("_", "%5F")
    expect(token_request(env.api, {"grant_type": "client_credentials"},
                         basic(enc_id, c["client_secret"])), 200, "percent-encoded Basic id")


@suite.test()
def token_with_form_credentials_and_scope(env):
    tid, admin = env.tenant()
    # Scope words come from the vocabulary (src/api/scopes.def).
    c = env.client(admin, tid, role="viewer", scopes=["devices:read", "users:read", "groups:read"])
    form = {"grant_type": "client_credentials", "client_id": c["client_id"],
            "client_secret": c["client_secret"], "scope": "groups:read devices:read groups:read"}
    r = expect(token_request(env.api, form), 200, "form credentials")
    eq(r.json["scope"], "groups:read devices:read", "scope granted: the words asked, once each")
    eq(parts(r.json["access_token"])[1]["scope"], "groups:read devices:read", "scope claim")
    eq(parts(r.json["access_token"])[1]["role"], "viewer", "role claim")
    # The client_id may accompany Basic when it is the same one.
    r = token_request(env.api, {"grant_type": "client_credentials", "client_id": c["client_id"]},
                      basic(c["client_id"], c["client_secret"]))
    expect(r, 200, "client_id beside Basic")
    c2 = env.client(admin, tid, role="viewer")
    r = expect(token_request(env.api, {"grant_type": "client_credentials"},
                             basic(c2["client_id"], c2["client_secret"])), 200, "no scopes")
    eq(r.json["scope"], "", "a client without scopes gets none")
    # Unknown parameters are ignored; an empty one counts as absent.
    r = token_request(env.api, f"grant_type=client_credentials&foo=bar&scope=&client_id="
                      f"{c['client_id']}&client_secret={c['client_secret']}")
    expect(r, 200, "unknown and empty parameters")


@suite.test()
def bad_client_credentials_are_401_invalid_client(env):
    tid, admin = env.tenant()
    c = env.client(admin, tid)
    gt = {"grant_type": "client_credentials"}
    cases = [
        ("wrong secret (Basic)", gt, basic(c["client_id"], c["client_secret"] + "x")),
        ("wrong secret (form)", dict(gt, client_id=c["client_id"], client_secret="nope"), None),
        ("unknown client", gt, basic("oc_aaaaaaaaaaaaaaaaaaaa", c["client_secret"])),
        ("no credentials", gt, None),
        ("client_id without secret", dict(gt, client_id=c["client_id"]), None),
        ("Basic not base64", gt, {"Authorization": "Basic !!!"}),
        ("Basic without a colon", gt, {"Authorization": "Basic " + base64.b64encode(
            c["client_id"].encode()).decode()}),
        ("a bearer token instead", gt, {"Authorization": "Bearer " + env.api.token}),
        ("another client's secret", gt, basic(c["client_id"], env.client(
            admin, tid)["client_secret"])),
    ]
    for what, form, headers in cases:
        expect_oauth_error(token_request(env.api, form, headers), 401, "invalid_client", what)
    r = token_request(env.api, dict(gt, client_secret=c["client_secret"]),
                      basic(c["client_id"], c["client_secret"]))
    expect_oauth_error(r, 400, "invalid_request", "Basic and a form secret")


@suite.test()
def bad_requests_are_rfc6749_400s(env):
    tid, admin = env.tenant()
    c = env.client(admin, tid, scopes=["devices:read"])
    h = basic(c["client_id"], c["client_secret"])
    for grant in ("password", "authorization_code", "refresh_token", "CLIENT_CREDENTIALS"):
        expect_oauth_error(token_request(env.api, {"grant_type": grant}, h), 400,
                           "unsupported_grant_type", grant)
    expect_oauth_error(token_request(env.api, {"scope": "devices:read"}, h), 400, "invalid_request",
                       "no grant_type")
    expect_oauth_error(token_request(env.api, "grant_type=client_credentials&grant_type="
                                     "client_credentials", h), 400, "invalid_request",
                       "repeated grant_type")
    expect_oauth_error(token_request(env.api, "grant_type=client%zz", h), 400, "invalid_request",
                       "malformed escape")
    r = env.api.post("/oauth/token", {"grant_type": "client_credentials"}, token=None, headers=h)
    expect_oauth_error(r, 400, "invalid_request", "a JSON body")
    # users:read is a word of the vocabulary, but not registered for this client.
    for scope in ("users:read", "devices:read users:read", "devices:read  devices:read",
                  " devices:read", "devices:read\"", "devices:read\\"):
        expect_oauth_error(token_request(env.api, {"grant_type": "client_credentials",
                                                   "scope": scope}, h),
                           400, "invalid_scope", f"scope {scope!r}")
    expect_problem(env.api.get("/oauth/token", token=None), 405, "GET /oauth/token")


# -- the token ----------------------------------------------------------------------------------

@suite.test()
def jwt_verifies_with_openssl_against_jwks(env):
    tid, admin = env.tenant()
    tok = get_token(env.api, env.client(admin, tid))
    r = expect(env.api.get("/.well-known/jwks.json", token=None), 200, "JWKS")
    eq(r.header("Cache-Control"), "public, max-age=60", "JWKS Cache-Control")
    keys = {k["kid"]: k for k in r.json["keys"]}
    kid = parts(tok)[0]["kid"]
    check(kid in keys, f"the token's kid {kid} is in the JWKS {list(keys)}")
    jwk = keys[kid]
    eq((jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]), ("EC", "P-256", "ES256", "sig"), "JWK")
    check("d" not in jwk, "the JWKS holds no private key")
    check(openssl_verify(jwk, tok), "openssl verifies the token with the JWKS key")
    # The check can fail: a changed payload does not verify.
    h, p, s = tok.split(".")
    claims = json.loads(b64u_dec(p))
    claims["role"] = "tenant_admin"
    check(not openssl_verify(jwk, f"{h}.{compact(claims)}.{s}"), "openssl refuses a changed token")


@suite.test()
def jwt_is_a_bearer_token_within_its_tenant_and_role(env):
    tid, admin = env.tenant()
    other, _ = env.tenant()
    c = env.client(admin, tid, role="operator")
    tok = get_token(env.api, c)
    me = env.api.as_token(tok)
    r = expect(me.get("/api/v1/whoami"), 200, "whoami")
    eq((r.json["token"], r.json["tenant"], r.json["role"]), (c["client_id"], tid, "operator"),
       "whoami")
    base = f"/api/v1/tenants/{tid}"
    expect(me.post(f"{base}/devices", {"id": "jwt-dev", "name": "Made with a JWT"}), 201,
           "operator creates a device")
    expect(me.get(f"{base}/devices/jwt-dev"), 200, "reads it")
    expect_problem(me.post(f"{base}/tokens", {"name": "x", "role": "viewer"}), 403,
                   "tenant_admin route", "forbidden")
    expect_problem(me.post(f"{base}/oauth-clients", {"name": "x", "role": "viewer"}), 403,
                   "clients need tenant_admin", "forbidden")
    # The tenant wall: another tenant is a missing one.
    for path in (f"/api/v1/tenants/{other}", f"/api/v1/tenants/{other}/devices",
                 f"/api/v1/tenants/{other}/devices/jwt-dev"):
        expect_problem(me.get(path), 404, f"GET {path} with tenant {tid}'s JWT")
    expect_problem(me.post(f"/api/v1/tenants/{other}/devices", {"id": "x"}), 404,
                   "POST in another tenant")
    expect_problem(me.get("/api/v1/tenants"), 403, "platform route")
    expect_problem(me.get("/api/v1/signing-keys"), 403, "signing keys are the platform's")
    audit = expect(admin.get(f"{base}/audit"), 200, "audit").json["items"]
    created = [a for a in audit if a["action"] == "device.create"]
    check(created and created[0]["actor"] == c["client_id"],
          f"the audit log names the client as the actor: {created}")
    client_events = [a for a in audit if a["action"] == "oauth_client.create"]
    check(client_events, f"creating a client is audited: {[a['action'] for a in audit]}")
    # Clients: never above the creator, never platform_admin, listed without secrets.
    expect_problem(admin.post(f"{base}/oauth-clients", {"name": "p", "role": "platform_admin"}),
                   400, "platform_admin client", "invalid")
    expect_problem(admin.post(f"{base}/oauth-clients", {"name": "p", "role": "viewer",
                                                        "extra": 1}), 400, "unknown field")
    listed = expect(admin.get(f"{base}/oauth-clients"), 200, "list").json["items"]
    check(any(x["client_id"] == c["client_id"] for x in listed), "the client is listed")
    check(all("client_secret" not in x for x in listed) and c["client_secret"] not in
          json.dumps(listed), "no secret in the list")


@suite.test()
def registry_file_is_private_and_listings_hold_no_private_key(env):
    mode = stat.S_IMODE(os.stat(env.registry()).st_mode)
    eq(oct(mode), oct(0o600), "registry.db mode (it holds the signing key)")
    r = expect(env.api.get("/api/v1/signing-keys"), 200, "signing keys")
    text = r.text
    check("PRIVATE" not in text and '"d"' not in text, "no private key in the listing")
    active = [k for k in r.json["items"] if k["active"]]
    eq(len(active), 1, "one active key")
    eq(active[0]["retires_at"], None, "the active key does not retire")
    kid, pem = env.active_key()
    eq(active[0]["kid"], kid, "the listing's active key is the registry's")
    check(pem.startswith("-----BEGIN PRIVATE KEY-----"), "the private key is in the registry")


@suite.test()
def forged_and_tampered_tokens_are_401(env):
    tid, admin = env.tenant()
    c = env.client(admin, tid, role="viewer")
    tok = get_token(env.api, c)
    header, claims, _, sig = parts(tok)
    h, p, s = tok.split(".")
    expect(env.api.get("/api/v1/whoami", token=tok), 200, "the genuine token")
    raised = dict(claims, role="tenant_admin")
    forged = {
        "payload changed, signature kept": f"{h}.{compact(raised)}.{s}",
        "alg none, no signature": f"{compact(dict(header, alg='none'))}.{p}.",
        "alg none, signature kept": f"{compact(dict(header, alg='none'))}.{p}.{s}",
        "alg None spelled otherwise": f"{compact(dict(header, alg='None'))}.{p}.",
        "no alg": f"{compact({'typ': 'at+jwt', 'kid': header['kid']})}.{p}.{s}",
        "signature of another token": f"{h}.{compact(dict(claims, jti='x'))}.{s}",
        "signature truncated": f"{h}.{p}.{s[:-4]}",
        "signature zeroed": f"{h}.{p}.{b64u(bytes(64))}",
        "unknown kid": f"{compact(dict(header, kid='no-such-key'))}.{p}.{s}",
        "three dots": f"{h}.{p}.{s}.",
        "garbage": "a.b.c",
        "empty parts": "..",
    }
    # HS256 with the public key (JWK text or PEM) as the HMAC secret: the classic confusion.
    jwk = [k for k in env.api.get("/.well-known/jwks.json", token=None).json["keys"]
           if k["kid"] == header["kid"]][0]
    for name, secret in (("JWK", json.dumps(jwk).encode()), ("PEM", pem_from_jwk(jwk).encode())):
        hs = f"{compact(dict(header, alg='HS256'))}.{compact(raised)}"
        mac = hmac.new(secret, hs.encode(), hashlib.sha256).digest()
        forged[f"HS256 keyed with the public {name}"] = f"{hs}.{b64u(mac)}"
    # A well-formed ES256 token signed by a key that is not the server's, naming its kid.
    forged["signed by another key"] = openssl_sign(new_ec_key(), header, raised)
    for what, bad in forged.items():
        expect_401(env.api, bad, what)
    expect(env.api.get("/api/v1/whoami", token=tok), 200, "the genuine token still works")


@suite.test()
def claims_are_checked_even_under_the_servers_key(env):
    tid, admin = env.tenant()
    other, other_admin = env.tenant()
    c = env.client(admin, tid, role="viewer")
    c_other = env.client(other_admin, other, role="viewer")
    kid, pem = env.active_key()
    now = int(time.time())
    header = {"alg": "ES256", "typ": "at+jwt", "kid": kid}
    good = {"iss": "drover", "sub": c["client_id"], "client_id": c["client_id"],
            "aud": "drover-api", "iat": now, "nbf": now, "exp": now + 300, "jti": "t",
            "tenant": tid, "role": "viewer", "scope": ""}
    # The harness can sign like the server, and the server accepts what it signs.
    expect(env.api.get("/api/v1/whoami", token=openssl_sign(pem, header, good)), 200,
           "a token signed with the server's key")
    ok = {
        "expired within the leeway": dict(good, exp=now - LEEWAY + 20),
        "aud as a list": dict(good, aud=["other", "drover-api"]),
        "no nbf, no iat": {k: v for k, v in good.items() if k not in ("nbf", "iat")},
    }
    for what, claims in ok.items():
        expect(env.api.get("/api/v1/whoami", token=openssl_sign(pem, header, claims)), 200, what)
    bad = {
        "expired past the leeway": dict(good, exp=now - LEEWAY - 5),
        "not valid yet": dict(good, nbf=now + LEEWAY + 120),
        "issued in the future": dict(good, iat=now + LEEWAY + 120),
        "no exp": {k: v for k, v in good.items() if k != "exp"},
        "exp as text": dict(good, exp=str(now + 300)),
        "another issuer": dict(good, iss="someone-else"),
        "no issuer": {k: v for k, v in good.items() if k != "iss"},
        "another audience": dict(good, aud="other-api"),
        "no audience": {k: v for k, v in good.items() if k != "aud"},
        "tenant changed": dict(good, tenant=other),
        "role raised": dict(good, role="tenant_admin"),
        "platform role": dict(good, role="platform_admin"),
        "unknown client": dict(good, sub="oc_aaaaaaaaaaaaaaaaaaaa"),
        "another tenant's client in this tenant": dict(good, sub=c_other["client_id"]),
        "no sub": {k: v for k, v in good.items() if k != "sub"},
        "scope not text": dict(good, scope=["a"]),
    }
    for what, claims in bad.items():
        expect_401(env.api, openssl_sign(pem, header, claims), what)
    for what, hdr in (("typ JWT", dict(header, typ="JWT")), ("no typ", {"alg": "ES256", "kid": kid}),
                      ("no kid", {"alg": "ES256", "typ": "at+jwt"}),
                      ("crit header", dict(header, crit=["exp"]))):
        expect_401(env.api, openssl_sign(pem, hdr, good), what)


# -- keys, revocation, expiry -------------------------------------------------------------------

@suite.test()
def rotation_keeps_old_tokens_working_and_survives_a_restart(env):
    tid, admin = env.tenant()
    c = env.client(admin, tid)
    old_tok = get_token(env.api, c)
    old_kid = parts(old_tok)[0]["kid"]
    expect_problem(admin.post("/api/v1/signing-keys/rotate"), 403, "a tenant admin cannot rotate")
    t0 = time.time()
    r = expect(env.api.post("/api/v1/signing-keys/rotate"), 200, "rotate")
    new_kid = r.json["kid"]
    check(new_kid != old_kid and r.json["active"] and r.json["retires_at"] is None,
          f"the new key: {r.json}")
    check("d" not in r.json["jwk"], "no private key in the answer")
    expect(env.api.get("/api/v1/whoami", token=old_tok), 200, "a token signed before the rotation")
    new_tok = get_token(env.api, c)
    eq(parts(new_tok)[0]["kid"], new_kid, "new tokens carry the new kid")
    expect(env.api.get("/api/v1/whoami", token=new_tok), 200, "a token signed after it")
    jwks = {k["kid"]: k for k in expect(env.api.get("/.well-known/jwks.json", token=None), 200,
                                        "JWKS").json["keys"]}
    check(old_kid in jwks and new_kid in jwks, f"the JWKS lists both keys: {list(jwks)}")
    check(openssl_verify(jwks[new_kid], new_tok) and openssl_verify(jwks[old_kid], old_tok),
          "each token verifies with its own key")
    check(not openssl_verify(jwks[new_kid], old_tok), "and not with the other")
    keys = {k["kid"]: k for k in expect(env.api.get("/api/v1/signing-keys"), 200,
                                        "list").json["items"]}
    old = keys[old_kid]
    check(not old["active"] and old["retires_at"], f"the old key is retired: {old}")
    retires = calendar.timegm(time.strptime(old["retires_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    check(abs(retires - (t0 + 900 + LEEWAY)) < 30,
          f"the old key verifies for the token lifetime plus leeway: {old['retires_at']}")
    rows = env.db_rows(f"SELECT private_key_pem IS NULL FROM signing_keys WHERE kid = '{old_kid}'")
    eq(rows, [(1,)], "the retired key's private half is erased")
    # The keys are the registry's, not the process's.
    env.d.restart()
    expect(env.api.get("/api/v1/whoami", token=old_tok), 200, "old token after a restart")
    expect(env.api.get("/api/v1/whoami", token=new_tok), 200, "new token after a restart")
    eq(parts(get_token(env.api, c))[0]["kid"], new_kid, "the active key after a restart")


@suite.test()
def revoked_client_and_deleted_tenant_end_their_tokens(env):
    tid, admin = env.tenant()
    c = env.client(admin, tid)
    keep = env.client(admin, tid)
    tok, keep_tok = get_token(env.api, c), get_token(env.api, keep)
    expect(env.api.get("/api/v1/whoami", token=tok), 200, "before revocation")
    expect(admin.delete(f"/api/v1/tenants/{tid}/oauth-clients/{c['client_id']}"), 204, "revoke")
    expect(admin.delete(f"/api/v1/tenants/{tid}/oauth-clients/{c['client_id']}"), 204, "again")
    expect_401(env.api, tok, "a revoked client's token, on the next request")
    expect_oauth_error(token_request(env.api, {"grant_type": "client_credentials"},
                                     basic(c["client_id"], c["client_secret"])),
                       401, "invalid_client", "a revoked client asks for a token")
    expect(env.api.get("/api/v1/whoami", token=keep_tok), 200, "another client of the tenant")
    listed = {x["client_id"]: x for x in expect(admin.get(f"/api/v1/tenants/{tid}/oauth-clients"),
                                                200, "list").json["items"]}
    check(listed[c["client_id"]]["revoked_at"], "listed as revoked")
    actions = [a["action"] for a in expect(admin.get(f"/api/v1/tenants/{tid}/audit"), 200,
                                           "audit").json["items"]]
    check("oauth_client.revoke" in actions, f"revocation is audited: {actions}")
    expect(env.api.delete(f"/api/v1/tenants/{tid}"), 204, "delete the tenant")
    expect_401(env.api, keep_tok, "a deleted tenant's token")
    expect_oauth_error(token_request(env.api, {"grant_type": "client_credentials"},
                                     basic(keep["client_id"], keep["client_secret"])),
                       401, "invalid_client", "a deleted tenant's client asks for a token")


@suite.test()
def expired_token_is_401(env):
    """api.jwt_ttl_s=1: the token made at setup is refused once exp + 60 s leeway has passed."""
    c = env.short_claims
    eq(c["exp"] - c["iat"], 1, "a 1-second lifetime")
    wait = c["exp"] + LEEWAY + 1.5 - time.time()
    if wait > 0:
        print(f"  waiting {wait:.0f} s for the 1-second token and its leeway", flush=True)
        time.sleep(wait)
    expect_401(env.api_short, env.short_token, "an expired token")


if __name__ == "__main__":
    suite.main(setup)
