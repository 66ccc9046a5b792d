#!/usr/bin/python3
"""The server and its contract, docs/openapi.yaml, agree.

(a) `drover routes` (METHOD PATH ROLE SCOPE per line) and the spec's operations
    are the same set, and each operation's x-drover-role is the route's role
    and its x-drover-scope the route's scope (src/api/scopes.def).
(b) Against a live server, every operation gets real requests — its
    success and its usual failures — and every answer must have a status the
    operation documents, the documented content type, the headers the
    response marks required, and a JSON body valid against the documented
    schema.  A method a path does not have must answer 405 with an Allow
    header listing exactly the spec's methods for that path.

Usage: test_openapi_coverage.py --drover BINARY
Prints what differs, then "N passed, N failed".
"""
import base64
import contextlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from apilib import (SchemaChecker, Suite, TestFailure, check, drover_routes, eq,  # noqa: E402
                    load_spec, pattern_regex, spec_operations, start_server,
                    verification_certificate)

suite = Suite("test_openapi_coverage")

# A P-256 public key for a jwt_key credential (public material; made with
# `openssl ecparam -name prime256v1 -genkey | openssl ec -pubout`).
EC_PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEVJ+3xPkd175oYcfGmOp0Lh3lEhie
V19VdlJF+syo2RtpzcXOX27K+lb3MS/Jo8xUEzCAqO60k7xGcA5V7CcKgA==
-----END PUBLIC KEY-----
"""
FINGERPRINT = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


class Env:
    def __init__(self, binary, d, api, spec):
        self.binary = binary
        self.d = d
        self.api = api
        self.spec = spec
        self.checker = SchemaChecker(spec)
        self.ops = spec_operations(spec)
        self.matchers = [(m, p, pattern_regex(p), op) for m, p, op in self.ops]
        self.hits = {}      # operationId -> {status: count}
        self.problems = []  # answers that break the contract
        self.requests = 0

    def alive(self):
        return self.d.alive()

    def operation(self, method, path):
        bare = path.split("?")[0]
        for m, p, rx, op in self.matchers:
            if m == method and rx.match(bare):
                return p, op
        return None, None

    def validate(self, r, op, pattern):
        """Problems of one answer against its operation's documentation."""
        name = op.get("operationId", f"{r.method} {pattern}")
        where = f"{name}: {r.method} {r.path} -> {r.status}"
        responses = op.get("responses", {})
        doc = responses.get(str(r.status)) or responses.get(f"{r.status // 100}XX") or \
            responses.get("default")
        if doc is None:
            return [f"{where}: status not documented (documented: {sorted(responses)}); "
                    f"body {r.body[:200]!r}"]
        doc = self.checker.resolve(doc)
        out = []
        for hname, h in (doc.get("headers") or {}).items():
            h = self.checker.resolve(h)
            v = r.header(hname)
            if v is None:
                if h.get("required"):
                    out.append(f"{where}: required header {hname} is missing")
                continue
            hs = self.checker.resolve(h.get("schema", {}))
            value = v
            if self.checker.resolve(hs).get("type") == "integer":
                try:
                    value = int(v)
                except ValueError:
                    out.append(f"{where}: header {hname}: {v!r} is not an integer")
                    continue
            for e in self.checker.errors(hs, value, f"header {hname}"):
                out.append(f"{where}: {e}")
        content = doc.get("content") or {}
        if not r.body:
            if r.status not in (204, 304) and content and r.method != "HEAD":
                # Only a 503 from an allocation failure is allowed to be bodiless.
                if r.status != 503:
                    out.append(f"{where}: no body, documented {sorted(content)}")
            return out
        if r.status in (204, 304):
            out.append(f"{where}: a {r.status} with a body")
            return out
        if not content:
            out.append(f"{where}: a body ({r.ctype}) where none is documented")
            return out
        media = None
        for k in content:
            if k.split(";")[0].strip().lower() == r.media:
                media = content[k]
        if media is None:
            out.append(f"{where}: content type {r.ctype!r} not documented ({sorted(content)})")
            return out
        if r.is_json:
            try:
                body = r.json
            except TestFailure as e:
                return out + [f"{where}: {e}"]
            for e in self.checker.errors(media.get("schema", {}), body, "body"):
                out.append(f"{where}: {e}")
        return out

    def stream_head(self, path, headers, *, token=None, want):
        """A request whose answer does not end (a WebSocket upgrade, an event
        stream): read its head only, check it like call() does, then hang up."""
        import socket
        hdrs = {"Host": "127.0.0.1", **headers}
        if token:
            hdrs["Authorization"] = "Bearer " + token
        req = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        with socket.create_connection(("127.0.0.1", self.api.port), timeout=10) as s:
            s.sendall((req + "\r\n").encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
        self.requests += 1
        lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
        fields = {ln.split(":", 1)[0].strip().lower(): ln.split(":", 1)[1].strip()
                  for ln in lines[1:] if ":" in ln}
        pattern, op = self.operation("GET", path)
        oid = op.get("operationId") if op else f"GET {path}"
        self.hits.setdefault(oid, {})
        self.hits[oid][status] = self.hits[oid].get(status, 0) + 1
        documented = (op or {}).get("responses", {}).get(str(status))
        if documented is None:
            self.problems.append(f"GET {path}: status {status} not documented")
        elif "content" in documented:
            ctype = fields.get("content-type", "").split(";")[0].strip().lower()
            if ctype not in {k.split(";")[0].strip().lower() for k in documented["content"]}:
                self.problems.append(f"GET {path}: content type {ctype!r} not documented")
        if status != want:
            self.problems.append(f"{oid}: GET {path} answered {status}, the scenario expects "
                                 f"{want}: {head[:300]!r}")
        return status, fields

    def call(self, method, path, body=None, *, want=None, **kw):
        """One real request, checked against the spec; `want` (optional) is the
        status this scenario expects, checked too so that scenarios stay honest."""
        r = self.api.request(method, path, body, **kw)
        self.requests += 1
        pattern, op = self.operation(method, path)
        if op is None:
            self.problems.append(f"{method} {path}: no operation in the spec")
            return r
        oid = op.get("operationId", f"{method} {pattern}")
        self.hits.setdefault(oid, {})
        self.hits[oid][r.status] = self.hits[oid].get(r.status, 0) + 1
        self.problems += self.validate(r, op, pattern)
        if want is not None:
            wants = want if isinstance(want, (tuple, list, set)) else (want,)
            if r.status not in wants:
                self.problems.append(f"{oid}: {method} {path} answered {r.status}, the scenario "
                                     f"expects {want}: {r.body[:300]!r}")
        return r


def make_ca_and_leaf(cn="Coverage CA"):
    """A CA named cn, a leaf it signed, the CA's key, and two CRLs of the CA revoking the
    leaf (the second issued an hour after the first): PEM texts, with the openssl CLI."""
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        def run(*args):
            subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)

        def read(name):
            with open(os.path.join(tmp, name)) as f:
                return f.read()
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", f"/CN={cn}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "d.key", "-out", "d.csr", "-subj", "/CN=d1")
        run("x509", "-req", "-in", "d.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "d.pem", "-days", "5")
        with open(os.path.join(tmp, "ca.cnf"), "w") as f:
            f.write("[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ndefault_md = sha256\n"
                    "certificate = ca.pem\nprivate_key = ca.key\ndefault_crl_days = 7\n")
        open(os.path.join(tmp, "index.txt"), "w").close()
        run("ca", "-config", "ca.cnf", "-revoke", "d.pem")
        crls = []
        for hours_ago in (2, 1):
            t = time.gmtime(time.time() - 3600 * hours_ago)
            run("ca", "-config", "ca.cnf", "-gencrl", "-crl_lastupdate",
                time.strftime("%Y%m%d%H%M%SZ", t), "-out", "crl.pem")
            crls.append(read("crl.pem"))
        return {"ca": read("ca.pem"), "leaf": read("d.pem"), "key": read("ca.key"),
                "crls": crls}


@contextlib.contextmanager
def setup(binary):
    spec = load_spec()
    with start_server(binary) as (d, api):
        yield Env(binary, d, api, spec)


@suite.test()
def routes_and_spec_are_the_same(env):
    routes = drover_routes(env.binary, with_scope=True)
    check(routes, "`drover routes` printed nothing")
    served = {(m, p) for m, p, _, _ in routes}
    documented = {(m, p) for m, p, _ in env.ops}
    missing = sorted(served - documented)
    extra = sorted(documented - served)
    for m, p in missing:
        print(f"  served but not in docs/openapi.yaml: {m} {p}")
    for m, p in extra:
        print(f"  in docs/openapi.yaml but not served: {m} {p}")
    roles = {(m, p): role for m, p, role, _ in routes}
    wrong_roles = []
    for m, p, op in env.ops:
        if (m, p) in roles and op.get("x-drover-role") != roles[(m, p)]:
            wrong_roles.append(f"{m} {p}: route role {roles[(m, p)]}, "
                               f"x-drover-role {op.get('x-drover-role')}")
    for w in wrong_roles:
        print("  role differs: " + w)
    # The scope a scoped token needs (src/api/scopes.def); "?" is a route it does not list.
    scopes = {(m, p): scope for m, p, _, scope in routes}
    for m, p, op in env.ops:
        if (m, p) in scopes and (scopes[(m, p)] == "?" or
                                 op.get("x-drover-scope") != scopes[(m, p)]):
            wrong_roles.append(f"{m} {p}: route scope {scopes[(m, p)]}, "
                               f"x-drover-scope {op.get('x-drover-scope')}")
            print(f"  scope differs: {wrong_roles[-1]}")
    ids = [op.get("operationId") for _, _, op in env.ops]
    check(all(ids) and len(set(ids)) == len(ids), f"operationIds missing or repeated: {ids}")
    print(f"  {len(served)} routes served, {len(documented)} operations documented")
    check(not missing and not extra and not wrong_roles,
          f"{len(missing)} served but undocumented, {len(extra)} documented but not served, "
          f"{len(wrong_roles)} roles or scopes differ")


@suite.test()
def every_operation_answers_as_documented(env):
    c = env.call
    T = "cov"
    base = f"/api/v1/tenants/{T}"

    # health
    c("GET", "/healthz", token=None, want=200)
    c("GET", "/readyz", token=None, want=200)
    c("GET", "/metrics", token=None, want=200)

    # identity
    c("GET", "/api/v1/whoami", want=200)
    c("GET", "/api/v1/whoami", token=None, want=401)
    c("GET", "/api/v1/whoami", token="drv_notatoken", want=401)

    # tenants
    r = c("POST", "/api/v1/tenants", {"id": T, "name": "Coverage", "quotas": {"devices": 50}},
          want=201)
    c("POST", "/api/v1/tenants", {"id": T, "name": "Again"}, want=409)
    c("POST", "/api/v1/tenants", {"name": ""}, want=400)
    c("POST", "/api/v1/tenants", {"id": "UPPER", "name": "x"}, want=400)
    c("POST", "/api/v1/tenants", raw="{", ctype="application/json", want=400)
    c("POST", "/api/v1/tenants", raw="name=x", ctype="text/plain", want=415)
    c("POST", "/api/v1/tenants", {"name": "x"}, token=None, want=401)
    r = c("POST", "/api/v1/tenants", {"name": "Generated id"}, want=201)
    gen = (r.json or {}).get("id", "")
    c("GET", "/api/v1/tenants", want=200)
    c("GET", "/api/v1/tenants", query={"limit": "1"}, want=200)
    c("GET", "/api/v1/tenants", query={"limit": "0"}, want=400)
    r = c("GET", base, want=200)
    etag = r.header("ETag") or '"1"'
    c("GET", base, headers={"If-None-Match": etag}, want=(200, 304))
    c("GET", "/api/v1/tenants/no-such-tenant", want=404)
    r = c("PATCH", base, {"name": "Coverage 2"}, ctype="application/merge-patch+json",
          headers={"If-Match": etag}, want=200)
    c("PATCH", base, {"name": "Coverage 3"}, headers={"If-Match": etag}, want=412)
    c("PATCH", base, {"name": "x"}, headers={"If-Match": "3"}, want=400)
    c("PATCH", base, {"status": "deleted"}, want=400)
    c("PATCH", base, {"name": "x"}, ctype="text/plain", want=415)
    c("PATCH", "/api/v1/tenants/no-such-tenant", {"name": "x"}, want=404)
    if gen:
        c("DELETE", f"/api/v1/tenants/{gen}", want=204)
        c("DELETE", f"/api/v1/tenants/{gen}", want=404)
    c("DELETE", "/api/v1/tenants/no-such-tenant", want=404)

    # tokens
    r = c("POST", f"{base}/tokens", {"name": "admin", "role": "tenant_admin"}, want=201)
    admin = (r.json or {}).get("token")
    check(admin, f"no token in {r}")
    r = c("POST", f"{base}/tokens", {"name": "viewer", "role": "viewer"}, token=admin, want=201)
    viewer, viewer_id = (r.json or {}).get("token"), (r.json or {}).get("id")
    # Scoped to what the scenario below has it do (scopes only narrow; the role checks
    # come first, so its 403s below are the role's).
    r = c("POST", f"{base}/tokens", {"name": "operator", "role": "operator",
                                     "scopes": ["devices:write", "credentials:write",
                                                "groups:write", "import:write"],
                                     "expires_at": "2999-01-01T00:00:00Z"},
          token=admin, want=201)
    operator = (r.json or {}).get("token")
    c("POST", f"{base}/tokens", {"name": "x", "role": "viewer"}, token=viewer, want=403)
    c("POST", f"{base}/tokens", {"name": "x", "role": "platform_admin"}, token=admin, want=400)
    c("POST", f"{base}/tokens", {"name": "x", "role": "viewer", "expires_at": "2001-01-01T00:00:00Z"},
      token=admin, want=400)
    c("POST", "/api/v1/tenants/no-such-tenant/tokens", {"name": "x", "role": "viewer"}, want=404)
    c("GET", f"{base}/tokens", token=admin, want=200)
    c("GET", f"{base}/tokens", token=operator, want=403)
    c("GET", f"{base}/tokens", token=admin, query={"cursor": "!!"}, want=400)
    c("GET", "/api/v1/tenants/other-tenant/tokens", token=admin, want=404)
    c("GET", "/api/v1/tenants", token=admin, want=403)
    c("GET", base, token=viewer, want=200)
    c("PATCH", base, {"name": "x"}, token=admin, want=403)
    c("DELETE", base, token=admin, want=403)
    c("GET", "/api/v1/whoami", token=viewer, want=200)

    # users
    c("POST", f"{base}/users", {"id": "u1", "name": "User One", "email": "u1@example.org",
                                "role": "operator"}, token=admin, want=201)
    c("POST", f"{base}/users", {"id": "u1", "name": "Again", "role": "viewer"}, token=admin, want=409)
    c("POST", f"{base}/users", {"name": "Bad mail", "email": "nope", "role": "viewer"}, token=admin,
      want=400)
    c("POST", f"{base}/users", {"name": "V", "role": "viewer"}, token=operator, want=403)
    c("POST", f"{base}/users", raw="[]", ctype="application/json", token=admin, want=400)
    c("GET", f"{base}/users", token=viewer, want=200)
    c("GET", f"{base}/users", token=viewer, query={"name_prefix": "User"}, want=200)
    r = c("GET", f"{base}/users/u1", token=viewer, want=200)
    uetag = r.header("ETag") or '"1"'
    c("GET", f"{base}/users/u1", token=viewer, headers={"If-None-Match": uetag}, want=304)
    c("GET", f"{base}/users/nobody", token=viewer, want=404)
    c("PATCH", f"{base}/users/u1", {"email": None}, token=admin, ctype="application/merge-patch+json",
      headers={"If-Match": uetag}, want=200)
    c("PATCH", f"{base}/users/u1", {"name": "Stale"}, token=admin, headers={"If-Match": uetag},
      want=412)
    c("PATCH", f"{base}/users/u1", {"version": 9}, token=admin, want=400)
    c("PATCH", f"{base}/users/u1", {"name": "x"}, token=viewer, want=403)
    c("PATCH", f"{base}/users/nobody", {"name": "x"}, token=admin, want=404)

    # -- device profiles, groups and bulk imports (h_profiles.c, h_groups.c, h_device_imports.c);
    # before the devices: d1 below lists the static group g1 made here ---------------------------
    pb, gb, ib = f"{base}/profiles", f"{base}/groups", f"{base}/device-imports"
    r = c("POST", pb, {"id": "p1", "name": "Profile One"}, token=admin, want=201)
    c("POST", pb, {"id": "p1", "name": "Again"}, token=admin, want=409)
    c("POST", pb, {"name": "x", "acl": [{"access": "both", "topic": "#"}]}, token=admin, want=400)
    c("POST", pb, {"name": "x"}, token=operator, want=403)
    c("POST", pb, raw="name=x", ctype="text/plain", token=admin, want=415)
    c("POST", "/api/v1/tenants/no-such-tenant/profiles", {"name": "x"}, want=404)
    c("GET", pb, token=viewer, want=200)
    c("GET", pb, token=viewer, query={"name_prefix": "Prof", "limit": "1"}, want=200)
    c("GET", pb, token=viewer, query={"limit": "0"}, want=400)
    r = c("GET", f"{pb}/p1", token=viewer, want=200)
    petag = r.header("ETag") or '"1"'
    c("GET", f"{pb}/p1", token=viewer, headers={"If-None-Match": petag}, want=304)
    c("GET", f"{pb}/nothing", token=viewer, want=404)
    c("PATCH", f"{pb}/p1", {"decoder": "senml", "transport": {"mqtt": {"max_qos": 1}}},
      token=admin, ctype="application/merge-patch+json", headers={"If-Match": petag}, want=200)
    c("PATCH", f"{pb}/p1", {"name": "Stale"}, token=admin, headers={"If-Match": petag}, want=412)
    c("PATCH", f"{pb}/p1", {"decoder": "xml"}, token=admin, want=400)
    c("PATCH", f"{pb}/p1", {"name": "x"}, token=operator, want=403)
    c("PATCH", f"{pb}/p1", raw="name", ctype="text/plain", token=admin, want=415)
    c("PATCH", f"{pb}/nothing", {"name": "x"}, token=admin, want=404)
    c("POST", pb, {"id": "p2", "name": "Spare"}, token=admin, want=201)
    c("DELETE", f"{pb}/p2", token=operator, want=403)
    c("DELETE", f"{pb}/p2", token=admin, want=204)
    c("DELETE", f"{pb}/p2", token=admin, want=404)
    c("POST", gb, {"id": "g1", "name": "Group One", "kind": "static"}, token=operator, want=201)
    c("POST", gb, {"id": "g-dyn", "name": "Dynamic", "kind": "dynamic", "query": {"profile": "p1"}},
      token=operator, want=201)
    c("POST", gb, {"id": "g1", "name": "Again", "kind": "static"}, token=operator, want=409)
    c("POST", gb, {"name": "x", "kind": "dynamic"}, token=operator, want=400)
    c("POST", gb, {"name": "x", "kind": "static"}, token=viewer, want=403)
    c("POST", gb, raw="name=x", ctype="text/plain", token=operator, want=415)
    c("GET", gb, token=viewer, want=200)
    c("GET", gb, token=viewer, query={"kind": "static", "name_prefix": "Group"}, want=200)
    c("GET", gb, token=viewer, query={"limit": "0"}, want=400)
    r = c("GET", f"{gb}/g1", token=viewer, want=200)
    getag = r.header("ETag") or '"1"'
    c("GET", f"{gb}/g1", token=viewer, headers={"If-None-Match": getag}, want=304)
    c("GET", f"{gb}/nothing", token=viewer, want=404)
    c("PATCH", f"{gb}/g1", {"description": "Floor one"}, token=operator,
      ctype="application/merge-patch+json", headers={"If-Match": getag}, want=200)
    c("PATCH", f"{gb}/g1", {"name": "Stale"}, token=operator, headers={"If-Match": getag}, want=412)
    c("PATCH", f"{gb}/g-dyn", {"kind": "sometimes"}, token=operator, want=400)
    c("PATCH", f"{gb}/g1", {"name": "x"}, token=viewer, want=403)
    c("PATCH", f"{gb}/g1", raw="name", ctype="text/plain", token=operator, want=415)
    c("PATCH", f"{gb}/nothing", {"name": "x"}, token=operator, want=404)
    c("POST", ib, raw="id,name,profile,groups,secret\r\nimp-1,Imported,p1,g1,0123456789abcdef\r\n"
      "imp-2,,,,\r\nbad id,,,,\r\n", ctype="text/csv", token=operator, want=200)
    c("POST", ib, {"devices": [{"id": "imp-3", "groups": ["g1"]}, {"id": "imp-1"}]},
      token=operator, want=200)
    c("POST", ib, {"devices": [{"id": "imp-4"}]}, token=operator, query={"dry_run": "true"},
      want=200)
    c("POST", ib, {"devices": [{"id": f"q{i}"} for i in range(60)]}, token=operator, want=403)
    c("POST", ib, {"devices": [{"id": f"x{i}"} for i in range(10001)]}, token=operator, want=413)
    c("POST", ib, raw='id\r\n"open', ctype="text/csv", token=operator, want=400)
    c("POST", ib, {"devices": []}, token=operator, query={"dry_run": "maybe"}, want=400)
    c("POST", ib, raw="id\r\nx\r\n", ctype="text/plain", token=operator, want=415)
    c("POST", ib, raw="id\r\nx\r\n", ctype="text/csv", token=viewer, want=403)
    c("POST", "/api/v1/tenants/no-such-tenant/device-imports", {"devices": []}, want=404)
    c("GET", f"{gb}/g1/devices", token=viewer, want=200)
    c("GET", f"{gb}/g1/devices", token=viewer, query={"sort": "-created_at", "limit": "1"},
      want=200)
    c("GET", f"{gb}/g-dyn/devices", token=viewer, want=200)
    c("GET", f"{gb}/g1/devices", token=viewer, query={"sort": "colour"}, want=400)
    c("GET", f"{gb}/nothing/devices", token=viewer, want=404)
    c("GET", f"{base}/devices", token=viewer, query={"sort": "-name", "limit": "2"}, want=200)
    c("GET", f"{base}/devices", token=viewer, query={"sort": "colour"}, want=400)
    c("DELETE", f"{pb}/p1", token=admin, want=409)
    c("DELETE", f"{gb}/g1", token=operator, want=409)
    c("PATCH", f"{gb}/g1", {"kind": "dynamic", "query": {"tag": "x"}}, token=operator, want=409)
    c("DELETE", f"{gb}/g-dyn", token=viewer, want=403)
    c("DELETE", f"{gb}/g-dyn", token=operator, want=204)
    c("DELETE", f"{gb}/g-dyn", token=operator, want=404)
    # -- end of profiles, groups and bulk imports ---------------------------------------------

    # devices
    c("POST", f"{base}/devices", {"id": "d1", "name": "Device One", "tags": {"site": "x"},
                                  "attributes": {"fw": "1"}, "groups": ["g1"]},
      token=operator, want=201)
    c("POST", f"{base}/devices", {"id": "d2", "name": "Device Two"}, token=operator, want=201)
    c("POST", f"{base}/devices", {"id": "d3"}, token=operator, want=201)
    c("POST", f"{base}/devices", {}, token=operator, want=201)
    c("POST", f"{base}/devices", {"id": "d1"}, token=operator, want=409)
    c("POST", f"{base}/devices", {"id": "dx"}, token=viewer, want=403)
    c("POST", f"{base}/devices", {"tags": {"k": 1}}, token=operator, want=400)
    c("POST", f"{base}/devices", {"status": "decommissioned"}, token=operator, want=400)
    c("POST", f"{base}/devices", {"id": "bad id"}, token=operator, want=400)
    c("GET", f"{base}/devices", token=viewer, want=200)
    for q in ({"tag": "site"}, {"tag": "site=x"}, {"attribute": "fw=1"}, {"name_prefix": "Dev"},
              {"status": "active"}, {"limit": "2"}):
        c("GET", f"{base}/devices", token=viewer, query=q, want=200)
    c("GET", f"{base}/devices", token=viewer, query={"limit": "1001"}, want=400)
    r = c("GET", f"{base}/devices/d1", token=viewer, want=200)
    detag = r.header("ETag") or '"1"'
    c("GET", f"{base}/devices/d1", token=viewer, headers={"If-None-Match": detag}, want=304)
    c("GET", f"{base}/devices/nothing", token=viewer, want=404)
    c("PATCH", f"{base}/devices/d1", {"tags": {"site": "y", "new": "1"}}, token=operator,
      ctype="application/merge-patch+json", headers={"If-Match": detag}, want=200)
    c("PATCH", f"{base}/devices/d1", {"name": "Stale"}, token=operator, headers={"If-Match": detag},
      want=412)
    c("PATCH", f"{base}/devices/d1", {"status": "decommissioned"}, token=operator, want=400)
    c("PATCH", f"{base}/devices/d1", {"id": "d9"}, token=operator, want=400)
    c("PATCH", f"{base}/devices/d1", {"name": "x"}, token=viewer, want=403)
    c("PATCH", f"{base}/devices/d1", raw="{,}", ctype="application/json", token=operator, want=400)
    c("PATCH", f"{base}/devices/nothing", {"name": "x"}, token=operator, want=404)

    # credentials
    r = c("POST", f"{base}/devices/d1/credentials", {"kind": "secret"}, token=operator, want=201)
    cred = (r.json or {}).get("id", "none")
    c("POST", f"{base}/devices/d1/credentials", {"kind": "secret", "secret": "0123456789abcdef-s",
                                                 "not_after": "2999-01-01T00:00:00Z"},
      token=operator, want=201)
    c("POST", f"{base}/devices/d1/credentials", {"kind": "x509", "fingerprint": FINGERPRINT},
      token=operator, want=201)
    c("POST", f"{base}/devices/d2/credentials", {"kind": "x509", "fingerprint": FINGERPRINT},
      token=operator, want=409)
    c("POST", f"{base}/devices/d1/credentials", {"kind": "jwt_key", "public_key_pem": EC_PUBLIC_KEY},
      token=operator, want=201)
    c("POST", f"{base}/devices/d1/credentials", {"kind": "password"}, token=operator, want=400)
    c("POST", f"{base}/devices/d1/credentials", {"kind": "secret", "secret": "short"},
      token=operator, want=400)
    c("POST", f"{base}/devices/d1/credentials", {"kind": "secret"}, token=viewer, want=403)
    c("POST", f"{base}/devices/nothing/credentials", {"kind": "secret"}, token=operator, want=404)
    c("GET", f"{base}/devices/d1/credentials", token=viewer, want=200)
    c("GET", f"{base}/devices/nothing/credentials", token=viewer, want=404)
    c("DELETE", f"{base}/devices/d1/credentials/{cred}", token=operator, want=204)
    c("DELETE", f"{base}/devices/d1/credentials/{cred}", token=viewer, want=403)
    c("DELETE", f"{base}/devices/d1/credentials/nothing", token=operator, want=404)

    # events, decommissioning
    c("GET", f"{base}/devices/d1/events", token=viewer, want=200)
    c("GET", f"{base}/devices/d1/events", token=viewer,
      query={"from": "2000-01-01T00:00:00Z", "to": "2999-01-01T00:00:00Z", "limit": "5"}, want=200)
    c("GET", f"{base}/devices/d1/events", token=viewer, query={"from": "yesterday"}, want=400)
    c("GET", f"{base}/devices/nothing/events", token=viewer, want=404)
    c("POST", f"{base}/devices/d2/decommission", token=operator, want=200)
    c("POST", f"{base}/devices/d2/decommission", {"purge": False}, token=operator, want=200)
    c("POST", f"{base}/devices/d2/credentials", {"kind": "secret"}, token=operator, want=409)
    c("POST", f"{base}/devices/d3/decommission", {"purge": True}, token=operator, want=204)
    c("POST", f"{base}/devices/d3/decommission", token=operator, want=404)
    c("POST", f"{base}/devices", {"id": "d3"}, token=operator, want=409)
    c("POST", f"{base}/devices/d1/decommission", {"purge": "yes"}, token=operator, want=400)
    c("POST", f"{base}/devices/d1/decommission", raw="{", ctype="application/json",
      token=operator, want=400)
    c("POST", f"{base}/devices/d1/decommission", raw="purge", ctype="text/plain",
      token=operator, want=415)
    c("POST", f"{base}/devices/d1/decommission", token=viewer, want=403)

    # audit
    c("GET", f"{base}/audit", token=admin, want=200)
    c("GET", f"{base}/audit", token=admin, query={"from": "2000-01-01T00:00:00Z", "limit": "3"},
      want=200)
    c("GET", f"{base}/audit", token=admin, query={"to": "not a time"}, want=400)
    c("GET", f"{base}/audit", token=operator, want=403)

    # deletions and revocations
    c("DELETE", f"{base}/users/u1", token=viewer, want=403)
    c("DELETE", f"{base}/users/u1", token=admin, want=204)
    c("DELETE", f"{base}/users/u1", token=admin, want=404)
    c("POST", f"{base}/users", {"id": "u1", "name": "Reuse", "role": "viewer"}, token=admin, want=409)
    c("DELETE", f"{base}/tokens/{viewer_id}", token=operator, want=403)
    c("DELETE", f"{base}/tokens/{viewer_id}", token=admin, want=204)
    c("GET", "/api/v1/whoami", token=viewer, want=401)
    c("DELETE", f"{base}/tokens/no-such-token", token=admin, want=404)

    # -- OAuth 2.0 (ADR-0010): clients, the token endpoint, the key set, signing keys ----------
    r = c("POST", f"{base}/oauth-clients", {"name": "ci", "role": "operator",
                                            "scopes": ["devices:read", "devices:write"]},
          token=admin, want=201)
    client_id = (r.json or {}).get("client_id", "oc_none")
    client_secret = (r.json or {}).get("client_secret", "")
    c("POST", f"{base}/oauth-clients", {"name": "x", "role": "platform_admin"}, token=admin,
      want=400)
    c("POST", f"{base}/oauth-clients", {"name": "x", "role": "viewer", "scopes": ["a b"]},
      token=admin, want=400)
    c("POST", f"{base}/oauth-clients", raw="name=x", ctype="text/plain", token=admin, want=415)
    c("POST", f"{base}/oauth-clients", {"name": "x", "role": "viewer"}, token=operator, want=403)
    c("POST", "/api/v1/tenants/no-such-tenant/oauth-clients", {"name": "x", "role": "viewer"},
      want=404)
    c("GET", f"{base}/oauth-clients", token=admin, want=200)
    c("GET", f"{base}/oauth-clients", token=admin, query={"limit": "0"}, want=400)
    c("GET", f"{base}/oauth-clients", token=operator, want=403)
    form = "application/x-www-form-urlencoded"
    basic = {"Authorization": "Basic " + base64.b64encode(
        f"{client_id}:{client_secret}".encode()).decode()}
    r = c("POST", "/oauth/token", raw="grant_type=client_credentials", ctype=form, token=None,
          headers=basic, want=200)
    jwt = (r.json or {}).get("access_token", "none.none.none")
    c("POST", "/oauth/token", raw=f"grant_type=client_credentials&client_id={client_id}"
      f"&client_secret={client_secret}&scope=devices%3Aread", ctype=form, token=None, want=200)
    c("POST", "/oauth/token", raw=f"grant_type=client_credentials&client_id={client_id}"
      "&client_secret=wrong", ctype=form, token=None, want=401)
    c("POST", "/oauth/token", raw="grant_type=client_credentials", ctype=form, token=None, want=401)
    c("POST", "/oauth/token", raw="grant_type=password", ctype=form, token=None, headers=basic,
      want=400)
    c("POST", "/oauth/token", raw="grant_type=client_credentials&scope=admin", ctype=form,
      token=None, headers=basic, want=400)
    c("POST", "/oauth/token", {"grant_type": "client_credentials"}, token=None, headers=basic,
      want=400)
    c("GET", "/api/v1/whoami", token=jwt, want=200)
    c("GET", f"{base}/devices", token=jwt, want=200)
    c("GET", "/.well-known/jwks.json", token=None, want=200)
    c("GET", "/api/v1/signing-keys", want=200)
    c("GET", "/api/v1/signing-keys", token=admin, want=403)
    c("POST", "/api/v1/signing-keys/rotate", token=admin, want=403)
    c("POST", "/api/v1/signing-keys/rotate", want=200)
    c("GET", "/api/v1/signing-keys", want=200)
    c("GET", f"{base}/devices", token=jwt, want=200)
    c("DELETE", f"{base}/oauth-clients/{client_id}", token=operator, want=403)
    c("DELETE", f"{base}/oauth-clients/{client_id}", token=admin, want=204)
    c("DELETE", f"{base}/oauth-clients/no-such-client", token=admin, want=404)
    c("GET", "/api/v1/whoami", token=jwt, want=401)
    # -- end of OAuth 2.0 ------------------------------------------------------------------------

    # -- device CAs (h_cas.c, ADR-0011) -----------------------------------------------------------
    factory = make_ca_and_leaf()
    ca_pem, leaf_pem = factory["ca"], factory["leaf"]
    # Proof of possession: the registration code, signed by the CA being registered.
    r = c("GET", f"{base}/ca-registration-code", token=admin, want=200)
    code = (r.json or {}).get("registration_code", "0" * 64)
    r = c("GET", f"{base}/ca-registration-code", token=admin, want=200)
    eq((r.json or {}).get("registration_code"), code, "the registration code is kept")
    c("GET", f"{base}/ca-registration-code", token=operator, want=403)
    c("GET", "/api/v1/tenants/no-such-tenant/ca-registration-code", want=404)
    c("POST", f"{base}/cas", {"certificate_pem": ca_pem, "auto_provision": True}, token=admin,
      want=400)
    c("POST", f"{base}/cas", {"certificate_pem": ca_pem, "auto_provision": True,
                              "verification_certificate_pem": ca_pem}, token=admin, want=400)
    r = c("POST", f"{base}/cas", {"certificate_pem": ca_pem, "name": "factory",
                                  "auto_provision": True,
                                  "verification_certificate_pem": verification_certificate(
                                      ca_pem, factory["key"], code)}, token=admin, want=201)
    ca_id = (r.json or {}).get("id", "ca_none")
    eq((r.json or {}).get("purpose"), "device", "a CA registered without a purpose")
    eq(((r.json or {}).get("verified"), (r.json or {}).get("crl")), (True, None),
       "verified, no CRL yet")
    # A claim CA (docs/provisioning.md), kept for the provisioning templates below, and a
    # second device CA, named so, that stays live: a template may not name it.
    claim = make_ca_and_leaf("Coverage claim CA")
    claim_pem = claim["ca"]
    dev2_pem = make_ca_and_leaf("Coverage device CA 2")["ca"]
    r = c("POST", f"{base}/cas", {"certificate_pem": claim_pem, "name": "claims",
                                  "purpose": "claim",
                                  "verification_certificate_pem": verification_certificate(
                                      claim_pem, claim["key"], code)}, token=admin, want=201)
    claim_ca = (r.json or {}).get("id", "ca_none")
    eq(((r.json or {}).get("purpose"), (r.json or {}).get("auto_provision")), ("claim", False),
       "a claim CA")
    c("POST", f"{base}/cas", {"certificate_pem": dev2_pem, "purpose": "claim",
                              "auto_provision": True}, token=admin, want=400)
    c("POST", f"{base}/cas", {"certificate_pem": dev2_pem, "purpose": "factory"}, token=admin,
      want=400)
    c("POST", f"{base}/cas", {"certificate_pem": dev2_pem, "purpose": None}, token=admin,
      want=400)
    r = c("POST", f"{base}/cas", {"certificate_pem": dev2_pem, "purpose": "device"}, token=admin,
          want=201)
    dev2_ca = (r.json or {}).get("id", "ca_none")
    c("POST", f"{base}/cas", {"certificate_pem": ca_pem}, token=admin, want=409)
    c("POST", f"{base}/cas", {"certificate_pem": leaf_pem}, token=admin, want=400)
    c("POST", f"{base}/cas", {"certificate_pem": "not a pem"}, token=admin, want=400)
    c("POST", f"{base}/cas", {"certificate_pem": ca_pem, "auto_provision": "yes"}, token=admin,
      want=400)
    c("POST", f"{base}/cas", {"certificate_pem": ca_pem, "profile": "no-such"}, token=admin,
      want=400)
    c("POST", f"{base}/cas", raw="x", ctype="text/plain", token=admin, want=415)
    c("POST", f"{base}/cas", {"certificate_pem": ca_pem}, token=operator, want=403)
    c("POST", "/api/v1/tenants/no-such-tenant/cas", {"certificate_pem": ca_pem}, want=404)
    r = c("GET", f"{base}/cas", token=admin, want=200)
    eq(sorted((i.get("id"), i.get("purpose")) for i in (r.json or {}).get("items", [])),
       sorted([(ca_id, "device"), (claim_ca, "claim"), (dev2_ca, "device")]), "CAs and purposes")
    c("GET", f"{base}/cas", token=admin, query={"limit": "0"}, want=400)
    c("GET", f"{base}/cas", token=operator, want=403)
    c("GET", f"{base}/cas/{ca_id}", token=admin, want=200)
    r = c("GET", f"{base}/cas/{claim_ca}", token=admin, want=200)
    eq((r.json or {}).get("purpose"), "claim", "GET of the claim CA")
    c("GET", f"{base}/cas/ca_nosuch", token=admin, want=404)
    c("GET", f"{base}/cas/{ca_id}", token=operator, want=403)
    # Its CRL (revoking the leaf): set, an older one refused, another CA's refused, deleted.
    older, newer = factory["crls"]
    crl_path = f"{base}/cas/{ca_id}/crl"
    r = c("PUT", crl_path, {"crl_pem": newer}, token=admin, want=200)
    eq(((r.json or {}).get("crl") or {}).get("revoked"), 1, "revoked entries of the CRL")
    c("PUT", crl_path, {"crl_pem": older}, token=admin, want=409)
    c("PUT", crl_path, {"crl_pem": claim["crls"][1]}, token=admin, want=400)
    c("PUT", crl_path, {"crl_pem": "not a CRL"}, token=admin, want=400)
    c("PUT", crl_path, {"crl_pem": newer, "extra": 1}, token=admin, want=400)
    c("PUT", crl_path, {"crl_pem": "x" * (1024 * 1024 + 1)}, token=admin, want=413)
    c("PUT", crl_path, raw="x", ctype="text/plain", token=admin, want=415)
    c("PUT", crl_path, {"crl_pem": newer}, token=operator, want=403)
    c("PUT", f"{base}/cas/ca_nosuch/crl", {"crl_pem": newer}, token=admin, want=404)
    r = c("GET", f"{base}/cas/{ca_id}", token=admin, want=200)
    eq(((r.json or {}).get("crl") or {}).get("revoked"), 1, "GET shows the CRL")
    c("DELETE", crl_path, token=operator, want=403)
    c("DELETE", crl_path, token=admin, want=204)
    c("DELETE", f"{base}/cas/ca_nosuch/crl", token=admin, want=404)
    r = c("GET", f"{base}/cas/{ca_id}", token=admin, want=200)
    eq((r.json or {}).get("crl", "absent"), None, "no CRL after DELETE")
    c("DELETE", f"{base}/cas/{ca_id}", token=operator, want=403)
    c("DELETE", f"{base}/cas/{ca_id}", token=admin, want=204)
    c("DELETE", f"{base}/cas/ca_nosuch", token=admin, want=404)
    # -- end of device CAs --------------------------------------------------------------------------

    # -- platform tokens, the platform audit log (h_platform.c) and scopes (scopes.def) --------
    r = c("POST", "/api/v1/tokens", {"name": "second admin"}, want=201)
    padmin, padmin_id = (r.json or {}).get("token"), (r.json or {}).get("id", "none")
    r = c("POST", "/api/v1/tokens", {"name": "auditor", "scopes": ["audit:read", "tokens:read"],
                                     "expires_at": "2999-01-01T00:00:00Z"}, token=padmin, want=201)
    pscoped = (r.json or {}).get("token")
    c("POST", "/api/v1/tokens", {"name": "x", "scopes": ["nonsense:read"]}, want=400)
    c("POST", "/api/v1/tokens", {"name": "x", "role": "viewer"}, want=400)
    c("POST", "/api/v1/tokens", raw="name=x", ctype="text/plain", want=415)
    c("POST", "/api/v1/tokens", {"name": "x"}, token=admin, want=403)
    c("POST", "/api/v1/tokens", {"name": "x"}, token=pscoped, want=403)
    c("GET", "/api/v1/tokens", want=200)
    c("GET", "/api/v1/tokens", token=pscoped, query={"limit": "1"}, want=200)
    c("GET", "/api/v1/tokens", query={"limit": "0"}, want=400)
    c("GET", "/api/v1/tokens", token=admin, want=403)
    c("GET", "/api/v1/audit", want=200)
    c("GET", "/api/v1/audit", token=pscoped, query={"from": "2000-01-01T00:00:00Z",
                                                    "limit": "3"}, want=200)
    c("GET", "/api/v1/audit", query={"to": "not a time"}, want=400)
    c("GET", "/api/v1/audit", token=admin, want=403)
    c("GET", "/api/v1/tenants", token=pscoped, want=403)
    c("DELETE", f"/api/v1/tokens/{padmin_id}", token=padmin, want=409)
    c("DELETE", f"/api/v1/tokens/{padmin_id}", token=admin, want=403)
    c("DELETE", f"/api/v1/tokens/{padmin_id}", want=204)
    c("DELETE", "/api/v1/tokens/no-such-token", want=404)
    r = c("POST", f"{base}/tokens", {"name": "reader", "role": "viewer",
                                     "scopes": ["devices:read"]}, token=admin, want=201)
    reader = (r.json or {}).get("token")
    c("POST", f"{base}/tokens", {"name": "x", "role": "viewer", "scopes": ["devices:nothing"]},
      token=admin, want=400)
    c("GET", f"{base}/devices", token=reader, want=200)
    c("GET", f"{base}/users", token=reader, want=403)
    c("GET", "/api/v1/whoami", token=reader, want=200)
    # -- end of platform tokens, platform audit and scopes --------------------------------------

    # -- telemetry I/O (h_telemetry_io.c): HTTP ingest, CSV import, streamed export ----------
    tb = f"{base}/devices/d1/telemetry"
    r = c("POST", f"{base}/tokens", {"name": "tio", "role": "operator"}, token=admin, want=201)
    top = (r.json or {}).get("token")
    r = c("POST", f"{base}/tokens", {"name": "tio-viewer", "role": "viewer"}, token=admin, want=201)
    viewer = (r.json or {}).get("token")  # the first viewer token was revoked above
    dev_basic = {"Authorization": "Basic " + base64.b64encode(
        f"{T}/d1:0123456789abcdef-s".encode()).decode()}
    c("POST", tb, raw='{"t": 21.5}', ctype="application/json", token=None, headers=dev_basic,
      want=200)
    c("POST", tb, raw='{"t": 1}', ctype="application/json", token=top, want=200)
    c("POST", tb, raw="{", ctype="application/json", token=None, headers=dev_basic, want=400)
    c("POST", tb, raw="{}", ctype="application/json", token=None, want=401)
    c("POST", tb, raw="{}", ctype="application/json", token=viewer, want=(401, 403))
    c("POST", f"{base}/devices/nothing/telemetry", raw="{}", ctype="application/json", token=top,
      want=404)
    c("POST", f"{base}/devices/d2/telemetry", raw="{}", ctype="application/json", token=top,
      want=409)
    c("POST", f"{base}/devices/d2/telemetry", raw="{}", ctype="application/json", token=None,
      headers=dev_basic, want=403)
    ti = f"{base}/telemetry/import"
    c("POST", ti, raw="device,key,ts,value\r\nd1,t,1767225600000,20\r\nnope,t,1,1\r\n",
      ctype="text/csv", token=top, want=200)
    c("POST", ti, raw="device,key,ts,value\r\nd1,t,1767225600001,20\r\n", ctype="text/csv",
      token=top, query={"dry_run": "true"}, want=200)
    c("POST", ti, raw="device,colour\r\n", ctype="text/csv", token=top, want=400)
    c("POST", ti, raw="device,key,ts,value\r\n", ctype="text/plain", token=top, want=415)
    c("POST", ti, raw="device,key,ts,value\r\n", ctype="text/csv", token=viewer, want=403)
    c("POST", "/api/v1/tenants/no-such-tenant/telemetry/import", raw="device\r\n",
      ctype="text/csv", want=404)
    te = f"{base}/devices/d1/telemetry/export"
    c("GET", te, token=viewer, query={"from": "2026-01-01T00:00:00Z"}, want=200)
    c("GET", te, token=viewer, query={"key": "t", "format": "json", "from": "0"}, want=200)
    c("GET", te, token=viewer, query={"key": "nothing"}, want=404)
    c("GET", te, token=viewer, query={"format": "xml"}, want=400)
    c("GET", te, token=reader, want=403)
    c("GET", "/api/v1/tenants/no-such-tenant/devices/d1/telemetry/export", want=404)
    # -- end of telemetry I/O ---------------------------------------------------------------------

    # -- telemetry queries (h_telemetry.c); d1 has key "t" from the ingest above --------------
    rng = {"from": "2000-01-01T00:00:00Z", "to": "2999-01-01T00:00:00Z"}
    c("GET", tb, token=viewer, query={"key": "t", **rng}, want=200)
    c("GET", tb, token=viewer, query={"key": "t", "limit": "1", **rng}, want=200)
    c("GET", tb, token=viewer, query={"key": "t", "limit": "0"}, want=400)
    c("GET", tb, token=viewer, query={"key": "t", "from": "yesterday"}, want=400)
    c("GET", tb, token=viewer, want=400)
    c("GET", tb, token=viewer, query={"key": "nothing"}, want=404)
    c("GET", tb, token=reader, query={"key": "t"}, want=403)
    c("GET", f"{tb}/aggregate", token=viewer, query={"key": "t", "bucket": "1h", "fn": "max,avg",
                                                     **rng}, want=(200, 400))
    c("GET", f"{tb}/aggregate", token=viewer, query={"key": "t", "fn": "count,first,last", **rng},
      want=200)
    c("GET", f"{tb}/aggregate", token=viewer, query={"key": "t", "fn": "median"}, want=400)
    c("GET", f"{tb}/aggregate", token=viewer, query={"key": "nothing"}, want=404)
    c("GET", f"{tb}/latest", token=viewer, want=200)
    c("GET", f"{tb}/latest", token=reader, want=403)
    c("GET", f"{tb}/keys", token=viewer, want=200)
    c("GET", "/api/v1/tenants/no-such-tenant/devices/d1/telemetry/keys", want=404)
    ta = f"{base}/telemetry/aggregate"
    c("GET", ta, token=viewer, query={"fn": "avg", **rng}, want=200)
    c("GET", ta, token=viewer, query={"key": "t", "device": "d1", "bucket": "1d",
                                      "from": "2026-01-01T00:00:00Z",
                                      "to": "2026-01-02T00:00:00Z"}, want=200)
    c("GET", ta, token=viewer, query={"group": "no-such-group"}, want=404)
    c("GET", ta, token=viewer, query={"bucket": "soon"}, want=400)
    c("GET", ta, token=reader, want=403)
    # -- end of telemetry queries --------------------------------------------------------------

    # -- live streams (h_stream.c): tickets, the WebSocket upgrade, event streams --------------
    r = c("POST", "/api/v1/stream/tickets", token=viewer, want=201)
    ticket = (r.json or {}).get("ticket")
    ws = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
          "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    st, fields = env.stream_head("/api/v1/stream", ws, token=viewer, want=101)
    check(fields.get("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
          f"Sec-WebSocket-Accept of the RFC 6455 example key: {fields}")
    env.stream_head(f"/api/v1/stream?ticket={ticket}", ws, want=101)
    env.stream_head(f"/api/v1/stream?ticket={ticket}", ws, want=401)  # used up
    c("GET", "/api/v1/stream", token=viewer, want=426)
    c("GET", "/api/v1/stream", token=viewer, headers={**ws, "Sec-WebSocket-Key": "short"},
      want=400)
    env.stream_head("/api/v1/stream/sse?types=telemetry,device.*&device=d1", {}, token=viewer,
                    want=200)
    env.stream_head(f"/api/v1/stream/sse?tenant={T}&keys=t", {"Last-Event-ID": "0.0"},
                    token=env.api.token, want=200)
    c("GET", "/api/v1/stream/sse", token=viewer, query={"device": "no-such-device"}, want=404)
    c("GET", "/api/v1/stream/sse", token=viewer, query={"group": "no-such-group"}, want=404)
    c("GET", "/api/v1/stream/sse", token=viewer, query={"types": "weather"}, want=400)
    c("GET", "/api/v1/stream/sse", token=viewer, headers={"Last-Event-ID": "yesterday"}, want=400)
    c("GET", "/api/v1/stream/sse", token=reader, query={"types": "telemetry"}, want=403)
    c("GET", "/api/v1/stream/sse", query={"types": "telemetry"}, want=400)  # platform: tenant=
    c("GET", "/api/v1/stream/sse", query={"tenant": "no-such-tenant"}, want=404)
    # -- end of live streams ------------------------------------------------------------------

    # -- device shadows (h_shadows.c, docs/shadow.md); d1 is active, d2 decommissioned -------
    sb = f"{base}/devices/d1/shadows"
    c("GET", f"{sb}/classic", token=viewer, want=404)  # never written
    r = c("PATCH", f"{sb}/classic", {"state": {"desired": {"led": "on", "cfg": {"rate": 10}}}},
          token=top, ctype="application/merge-patch+json", want=200)
    c("PATCH", f"{sb}/classic", {"state": {"reported": {"led": "off"}}, "client_token": "t-1"},
      token=top, want=200)
    r = c("GET", f"{sb}/classic", token=viewer, want=200)
    setag = r.header("ETag") or '"2"'
    check((r.json or {}).get("state", {}).get("delta") == {"led": "on", "cfg": {"rate": 10}},
          f"the classic shadow's delta: {r.body[:300]!r}")
    c("GET", f"{sb}/classic", token=viewer, headers={"If-None-Match": setag}, want=304)
    c("PATCH", f"{sb}/classic", {"state": {"desired": {"cfg": None}}}, token=top,
      headers={"If-Match": setag}, want=200)
    c("PATCH", f"{sb}/classic", {"state": {"desired": {"led": "off"}}}, token=top,
      headers={"If-Match": setag}, want=412)  # setag is one version behind now
    c("PATCH", f"{sb}/classic", {"state": {"desired": {"led": "off"}}}, token=top,
      headers={"If-Match": "3"}, want=400)  # not a quoted ETag
    c("PATCH", f"{sb}/classic", {"state": {"desired": {"led": "off"}}, "version": 1}, token=top,
      want=409)
    c("PATCH", f"{sb}/classic", {"state": {"delta": {"led": "off"}}}, token=top, want=400)
    c("PATCH", f"{sb}/classic", {"desired": {"led": "off"}}, token=top, want=400)
    c("PATCH", f"{sb}/classic", raw="{", ctype="application/json", token=top, want=400)
    c("PATCH", f"{sb}/classic", raw="led=on", ctype="text/plain", token=top, want=415)
    c("PATCH", f"{sb}/classic", {"state": {"desired": {"big": "x" * 70000}}}, token=top,
      want=413)  # over shadow.max_bytes (64 KiB)
    c("PATCH", f"{sb}/classic", {"state": {"desired": {"led": "off"}}}, token=viewer, want=403)
    c("PATCH", f"{sb}/classic", {"state": {"desired": {"led": "off"}}}, token=operator,
      want=403)  # no shadows:write among its scopes
    c("PATCH", f"{base}/devices/d2/shadows/classic", {"state": {"desired": {"a": 1}}}, token=top,
      want=409)  # decommissioned
    c("PATCH", f"{base}/devices/nothing/shadows/classic", {"state": {"desired": {"a": 1}}},
      token=top, want=404)
    c("PATCH", f"{sb}/config", {"state": {"desired": {"rate": 5}, "reported": {"rate": 1}}},
      token=top, want=200)
    c("GET", f"{sb}/config", token=viewer, want=200)
    c("GET", f"{sb}/a.b", token=viewer, want=400)  # not a shadow name
    c("PATCH", f"{sb}/a.b", {"state": {"desired": {"a": 1}}}, token=top, want=400)
    c("GET", f"{sb}/never", token=viewer, want=404)
    c("GET", f"{base}/devices/nothing/shadows/classic", token=viewer, want=404)
    c("GET", f"{sb}/classic", token=reader, want=403)
    c("GET", f"{base}/devices/d2/shadows/classic", token=viewer, want=404)
    r = c("GET", sb, token=viewer, want=200)
    eq(sorted(i.get("name") for i in (r.json or {}).get("items", [])), ["classic", "config"],
       "d1's shadows")
    c("GET", f"{base}/devices/d2/shadows", token=viewer, want=200)
    c("GET", f"{base}/devices/nothing/shadows", token=viewer, want=404)
    c("GET", sb, token=reader, want=403)
    c("GET", f"{sb}/classic/history", token=viewer, want=200)
    r = c("GET", f"{sb}/classic/history", token=viewer,
          query={"from": "2000-01-01T00:00:00Z", "to": "2999-01-01T00:00:00Z", "limit": "1"},
          want=200)
    nxt = (r.json or {}).get("next_cursor")
    check(nxt, f"a next_cursor after one of three changes: {r.body[:300]!r}")
    c("GET", f"{sb}/classic/history", token=viewer, query={"cursor": nxt or "x"}, want=200)
    c("GET", f"{sb}/never/history", token=viewer, want=200)
    c("GET", f"{sb}/classic/history", token=viewer, query={"from": "yesterday"}, want=400)
    c("GET", f"{sb}/classic/history", token=viewer, query={"cursor": "!!"}, want=400)
    c("GET", f"{sb}/classic/history", token=viewer, query={"limit": "0"}, want=400)
    c("GET", f"{sb}/a.b/history", token=viewer, want=400)
    c("GET", f"{base}/devices/nothing/shadows/classic/history", token=viewer, want=404)
    c("GET", f"{sb}/classic/history", token=reader, want=403)
    r = c("GET", f"{sb}/config", token=viewer, want=200)
    cetag = r.header("ETag") or '"1"'
    c("DELETE", f"{sb}/config", token=top, headers={"If-Match": '"999"'}, want=412)
    c("DELETE", f"{sb}/config", token=viewer, want=403)
    c("DELETE", f"{sb}/config", token=top, headers={"If-Match": cetag}, want=204)
    c("DELETE", f"{sb}/config", token=top, want=404)
    c("GET", f"{sb}/config", token=viewer, want=404)
    c("DELETE", f"{sb}/a.b", token=top, want=400)
    c("DELETE", f"{base}/devices/d2/shadows/classic", token=top, want=409)
    c("DELETE", f"{base}/devices/nothing/shadows/classic", token=top, want=404)
    # -- end of device shadows ----------------------------------------------------------------

    # -- commands (h_commands.c, docs/commands.md); d1 is not connected: its commands queue ----
    cb = f"{base}/devices/d1/commands"
    r = c("POST", cb, {"name": "reboot", "params": {"delay_s": 5}}, token=top, want=202)
    cmd = (r.json or {}).get("id", "cmd_none")
    eq(r.header("Location"), f"{base}/commands/{cmd}", "Location of a new command")
    r = c("POST", cb, {"name": "blink", "wait_ms": 100}, token=top, want=202)  # the wait ends
    eq((r.json or {}).get("state"), "queued", "a command to an offline device after wait_ms")
    c("POST", cb, {"name": "ping", "timeout_ms": 1000, "expires_at": "2999-01-01T00:00:00Z"},
      token=top, want=400)  # more than 30 days ahead
    r = c("POST", cb, {"name": "ping", "max_attempts": 2, "expires_in_ms": 60000}, token=top,
          headers={"Idempotency-Key": "cov-ping-1"}, want=202)
    ping = (r.json or {}).get("id", "cmd_none")
    r = c("POST", cb, {"name": "ping", "max_attempts": 2, "expires_in_ms": 60000,
                       "idempotency_key": "cov-ping-1"}, token=top, want=202)
    eq(((r.json or {}).get("id"), r.header("Idempotency-Replayed")), (ping, "true"),
       "the same idempotency key again")
    c("POST", cb, {"name": "pong", "idempotency_key": "cov-ping-1"}, token=top, want=409)
    c("POST", cb, {"name": "ping", "idempotency_key": "a"}, token=top,
      headers={"Idempotency-Key": "b"}, want=400)
    c("POST", cb, {"name": "bad name"}, token=top, want=400)
    c("POST", cb, {"name": "x", "colour": "red"}, token=top, want=400)
    c("POST", cb, {"name": "x", "wait_ms": 60001}, token=top, want=400)
    c("POST", cb, raw="{", ctype="application/json", token=top, want=400)
    c("POST", cb, raw="name=x", ctype="text/plain", token=top, want=415)
    c("POST", cb, {"name": "x"}, token=viewer, want=403)
    c("POST", cb, {"name": "x"}, token=operator, want=403)  # no commands:write
    c("POST", f"{base}/devices/d2/commands", {"name": "x"}, token=top, want=409)
    c("POST", f"{base}/devices/nothing/commands", {"name": "x"}, token=top, want=404)
    c("GET", f"{base}/commands", token=viewer, want=200)
    r = c("GET", f"{base}/commands", token=viewer, query={"device": "d1", "state": "queued",
                                                          "limit": "1"}, want=200)
    nxt = (r.json or {}).get("next_cursor")
    check(nxt, f"a next_cursor after one of d1's queued commands: {r.body[:300]!r}")
    c("GET", f"{base}/commands", token=viewer, query={"device": "d1", "cursor": nxt or "x"},
      want=200)
    c("GET", f"{base}/commands", token=viewer, query={"state": "sleeping"}, want=400)
    c("GET", f"{base}/commands", token=viewer, query={"cursor": "!!"}, want=400)
    c("GET", f"{base}/commands", token=viewer, query={"limit": "0"}, want=400)
    c("GET", f"{base}/commands", token=reader, want=403)
    c("GET", "/api/v1/tenants/no-such-tenant/commands", want=404)
    c("GET", f"{base}/commands/{cmd}", token=viewer, want=200)
    r = c("GET", f"{base}/commands/{cmd}", token=viewer, query={"wait_ms": "50"}, want=200)
    eq((r.json or {}).get("state"), "queued", "a long poll of a queued command")
    c("GET", f"{base}/commands/{cmd}", token=viewer, query={"wait_ms": "soon"}, want=400)
    c("GET", f"{base}/commands/cmd_nosuch", token=viewer, want=404)
    c("GET", f"{base}/commands/{cmd}", token=reader, want=403)
    c("POST", f"{base}/commands/{cmd}/cancel", token=viewer, want=403)
    r = c("POST", f"{base}/commands/{cmd}/cancel", token=top, want=200)
    eq((r.json or {}).get("state"), "cancelled", "a cancelled command")
    c("POST", f"{base}/commands/{cmd}/cancel", token=top, want=409)
    c("POST", f"{base}/commands/cmd_nosuch/cancel", token=top, want=404)
    r = c("POST", cb, {"name": "reboot", "params": {"delay_s": 5}, "wait_ms": 50}, token=top,
          headers={"Idempotency-Key": "cov-done"}, want=202)
    done = (r.json or {}).get("id", "cmd_none")
    c("POST", f"{base}/commands/{done}/cancel", token=top, want=200)
    r = c("POST", cb, {"name": "reboot", "params": {"delay_s": 5}, "wait_ms": 50}, token=top,
          headers={"Idempotency-Key": "cov-done"}, want=200)  # replayed, already finished
    # a group with d1 alone
    c("POST", gb, {"id": "g-cmd", "name": "Commands", "kind": "static"}, token=operator, want=201)
    c("PATCH", f"{base}/devices/d1", {"groups": ["g1", "g-cmd"]}, token=operator, want=200)
    gc = f"{gb}/g-cmd/commands"
    r = c("POST", gc, {"name": "reboot", "params": {}, "idempotency_key": "cov-batch"},
          token=top, want=202)
    batch = (r.json or {}).get("id", "cb_none")
    eq(((r.json or {}).get("total"), r.header("Location")),
       (1, f"{base}/command-batches/{batch}"), "a batch of one device")
    c("POST", gc, {"name": "reboot", "wait_ms": 100}, token=top, want=400)
    c("POST", gc, {"name": "bad name"}, token=top, want=400)
    c("POST", gc, raw="name=x", ctype="text/plain", token=top, want=415)
    c("POST", gc, {"name": "x"}, token=viewer, want=403)
    c("POST", f"{gb}/nothing/commands", {"name": "x"}, token=top, want=404)
    c("GET", f"{base}/command-batches/{batch}", token=viewer, want=200)
    r = c("GET", f"{base}/commands", token=viewer, query={"batch": batch}, want=200)
    eq([i.get("device") for i in (r.json or {}).get("items", [])], ["d1"], "the batch's commands")
    c("GET", f"{base}/command-batches/cb_nosuch", token=viewer, want=404)
    c("GET", f"{base}/command-batches/{batch}", token=reader, want=403)
    # -- end of commands ----------------------------------------------------------------------

    # -- provisioning templates (h_provisioning.c, docs/provisioning.md): claim_ca and dev2_ca
    # come from the CA section, p1 from the profiles' -------------------------------------------
    pt = f"{base}/provisioning-templates"
    r = c("POST", pt, {"id": "factory-1", "name": "Factory", "claim_ca": claim_ca,
                       "profile": "p1", "device_id_prefix": "SN-", "tags": {"batch": "1"},
                       "attributes": {"line": "a"}}, token=admin, want=201)
    eq((r.header("Location"), (r.json or {}).get("enabled"), (r.json or {}).get("version")),
       (f"{pt}/factory-1", True, 1), "a new template: Location, enabled by default, version")
    c("POST", pt, {"id": "factory-1", "claim_ca": claim_ca}, token=admin, want=409)
    c("POST", pt, {"claim_ca": dev2_ca}, token=admin, want=400)  # a device CA
    c("POST", pt, {"claim_ca": ca_id}, token=admin, want=400)  # a revoked device CA
    c("POST", pt, {"claim_ca": "ca_nosuch"}, token=admin, want=400)
    c("POST", pt, {"name": "No claim CA"}, token=admin, want=400)
    c("POST", pt, {"claim_ca": claim_ca, "profile": "nothing"}, token=admin, want=400)
    c("POST", pt, {"claim_ca": claim_ca, "enabled": "yes"}, token=admin, want=400)
    c("POST", pt, {"claim_ca": claim_ca, "tags": {"k": 1}}, token=admin, want=400)
    c("POST", pt, {"claim_ca": claim_ca, "colour": "red"}, token=admin, want=400)
    c("POST", pt, {"id": "bad id", "claim_ca": claim_ca}, token=admin, want=400)
    c("POST", pt, raw="{", ctype="application/json", token=admin, want=400)
    c("POST", pt, raw="claim_ca=x", ctype="text/plain", token=admin, want=415)
    c("POST", pt, {"claim_ca": claim_ca}, token=operator, want=403)
    c("POST", pt, {"claim_ca": claim_ca}, token=viewer, want=403)
    c("POST", "/api/v1/tenants/no-such-tenant/provisioning-templates", {"claim_ca": claim_ca},
      want=404)
    r = c("POST", pt, {"claim_ca": claim_ca, "enabled": False}, token=admin, want=201)
    spare = (r.json or {}).get("id", "none")
    r = c("GET", pt, token=viewer, want=200)
    eq(sorted(i.get("id") for i in (r.json or {}).get("items", [])), sorted(["factory-1", spare]),
       "the templates")
    r = c("GET", pt, token=viewer, query={"limit": "1"}, want=200)
    nxt = (r.json or {}).get("next_cursor")
    check(nxt, f"a next_cursor after one of two templates: {r.body[:300]!r}")
    c("GET", pt, token=viewer, query={"cursor": nxt or "x"}, want=200)
    c("GET", pt, token=viewer, query={"limit": "0"}, want=400)
    c("GET", pt, token=viewer, query={"cursor": "!!"}, want=400)
    c("GET", pt, token=reader, want=403)  # scoped to devices:read
    c("GET", "/api/v1/tenants/no-such-tenant/provisioning-templates", want=404)
    r = c("POST", f"{base}/tokens", {"name": "prov-reader", "role": "viewer",
                                     "scopes": ["provisioning:read"]}, token=admin, want=201)
    preader = (r.json or {}).get("token")
    c("GET", pt, token=preader, want=200)
    r = c("GET", f"{pt}/factory-1", token=preader, want=200)
    tetag = r.header("ETag") or '"1"'
    c("GET", f"{pt}/factory-1", token=viewer, headers={"If-None-Match": tetag}, want=304)
    c("GET", f"{pt}/nothing", token=viewer, want=404)
    c("GET", f"{pt}/{'x' * 129}", token=viewer, want=400)
    c("GET", f"{pt}/factory-1", token=reader, want=403)
    r = c("PATCH", f"{pt}/factory-1", {"enabled": False, "tags": {"batch": None, "site": "b"}},
          token=admin, ctype="application/merge-patch+json", headers={"If-Match": tetag},
          want=200)
    eq(((r.json or {}).get("enabled"), (r.json or {}).get("tags"), r.header("ETag")),
       (False, {"site": "b"}, '"2"'), "a patched template")
    c("PATCH", f"{pt}/factory-1", {"name": "Stale"}, token=admin, headers={"If-Match": tetag},
      want=412)
    c("PATCH", f"{pt}/factory-1", {"name": "x"}, token=admin, headers={"If-Match": "3"},
      want=400)  # not a quoted ETag
    c("PATCH", f"{pt}/factory-1", {"claim_ca": dev2_ca}, token=admin, want=400)
    c("PATCH", f"{pt}/factory-1", {"claim_ca": None}, token=admin, want=400)
    c("PATCH", f"{pt}/factory-1", {"profile": "nothing"}, token=admin, want=400)
    c("PATCH", f"{pt}/factory-1", {"id": "factory-2"}, token=admin, want=400)
    c("PATCH", f"{pt}/factory-1", {"version": 9}, token=admin, want=400)
    c("PATCH", f"{pt}/factory-1", raw="{", ctype="application/json", token=admin, want=400)
    c("PATCH", f"{pt}/factory-1", raw="enabled", ctype="text/plain", token=admin, want=415)
    c("PATCH", f"{pt}/factory-1", {"name": "x"}, token=viewer, want=403)
    c("PATCH", f"{pt}/factory-1", {"name": "x"}, token=preader, want=403)
    c("PATCH", f"{pt}/nothing", {"name": "x"}, token=admin, want=404)
    r = c("PATCH", f"{pt}/factory-1", {"profile": None, "enabled": None}, token=admin, want=200)
    eq(("profile" in (r.json or {}), (r.json or {}).get("enabled")), (False, True),
       "null removes the profile and puts enabled back to true")
    c("DELETE", f"{pt}/{spare}", token=viewer, want=403)
    c("DELETE", f"{pt}/{spare}", token=preader, want=403)
    c("DELETE", f"{pt}/{spare}", token=admin, want=204)
    c("DELETE", f"{pt}/{spare}", token=admin, want=404)
    c("DELETE", f"{pt}/{'x' * 129}", token=admin, want=400)
    c("GET", f"{pt}/{spare}", token=viewer, want=404)
    c("POST", pt, {"id": spare, "claim_ca": claim_ca}, token=admin, want=409)  # never reused
    # Once its claim CA is revoked, a template is checked against it again on every change.
    c("DELETE", f"{base}/cas/{claim_ca}", token=admin, want=204)
    c("PATCH", f"{pt}/factory-1", {"enabled": False}, token=admin, want=400)
    c("DELETE", f"{pt}/factory-1", token=admin, want=204)
    # -- end of provisioning templates --------------------------------------------------------

    # the ones without a token
    for m, p, op in env.ops:
        if op.get("security") == []:
            continue
        path = p.replace("{tenant}", T).replace("{device}", "d1").replace("{user}", "u1") \
            .replace("{token}", "t").replace("{credential}", "c").replace("{client}", "oc_x") \
            .replace("{profile}", "p1").replace("{group}", "g1").replace("{ca}", "ca_x") \
            .replace("{shadow}", "classic").replace("{command}", "cmd_x") \
            .replace("{batch}", "cb_x").replace("{template}", "factory-1")
        c(m, path, {} if m in ("POST", "PATCH") else None, token=None, want=401)

    # every operation was called, and succeeded at least once
    never = [oid for _, _, op in env.ops for oid in [op.get("operationId")] if oid not in env.hits]
    # (a WebSocket upgrade succeeds with 101)
    no_success = [oid for oid, st in env.hits.items()
                  if not any(200 <= s < 300 or s == 101 for s in st)]
    for oid in sorted(env.hits):
        codes = " ".join(f"{s}" for s in sorted(env.hits[oid]))
        print(f"  {oid}: {codes}")
    for p in env.problems:
        print("  CONTRACT: " + p)
    print(f"  {env.requests} requests, {len(env.problems)} answers break the contract")
    check(not never, f"operations never called: {never}")
    check(not no_success, f"operations that never succeeded: {no_success}")
    check(not env.problems, f"{len(env.problems)} answers break the contract (listed above)")


@suite.test()
def other_methods_answer_405_with_allow(env):
    paths = {}
    for m, p, _ in env.ops:
        paths.setdefault(p, set()).add(m)
    bad = []
    for p, methods in paths.items():
        concrete = p.replace("{tenant}", "cov").replace("{device}", "d1").replace("{user}", "u1") \
            .replace("{token}", "t").replace("{credential}", "c").replace("{client}", "oc_x") \
            .replace("{profile}", "p1").replace("{group}", "g1").replace("{ca}", "ca_x") \
            .replace("{shadow}", "classic").replace("{command}", "cmd_x") \
            .replace("{batch}", "cb_x").replace("{template}", "factory-1")
        for m in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            if m in methods:
                continue
            r = env.api.request(m, concrete, {} if m in ("POST", "PUT", "PATCH") else None)
            env.requests += 1
            allow = {a.strip() for a in (r.header("Allow") or "").split(",") if a.strip()}
            if r.status != 405:
                bad.append(f"{m} {concrete}: {r.status}, want 405")
            elif allow != methods:
                bad.append(f"{m} {concrete}: Allow {sorted(allow)}, the spec has {sorted(methods)}")
            elif r.media != "application/problem+json":
                bad.append(f"{m} {concrete}: 405 as {r.ctype!r}")
            # The 405 is documented once, shared by the path's operations.
            for om in methods:
                op = env.spec["paths"][p][om.lower()]
                if "405" not in op.get("responses", {}):
                    bad.append(f"{om} {p}: 405 not documented")
    for b in bad:
        print("  " + b)
    check(not bad, f"{len(bad)} wrong answers to methods a path does not have")


@suite.test()
def spec_lists_every_status_the_tests_saw(env):
    # A summary of documented status codes never exercised, for the reader (not a failure:
    # 500, 503, 413 and the like cannot be provoked from outside on purpose).
    unseen = []
    for _, _, op in env.ops:
        oid = op.get("operationId")
        seen = env.hits.get(oid, {})
        for code in op.get("responses", {}):
            if code.isdigit() and int(code) not in seen and code not in ("405", "500", "503", "413",
                                                                          "429"):
                unseen.append(f"{oid} {code}")
    if unseen:
        print("  documented, not exercised here: " + ", ".join(unseen))
    eq(env.alive(), True, "server alive")


if __name__ == "__main__":
    suite.main(setup)
