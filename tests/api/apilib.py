"""Shared helpers for the REST API tests in tests/api (Python standard library only).

    from apilib import Api, Suite, check, eq, start_server, load_spec, SchemaChecker

    suite = Suite("test_api")

    @suite.test()
    def whoami_works(env):
        r = env.api.get("/api/v1/whoami")
        eq(r.status, 200, "whoami")

    if __name__ == "__main__":
        suite.main(setup)   # setup(binary) -> a context manager yielding `env`

- Api: an HTTP/1.1 client on http.client (one connection per request, or the
  connection you pass), answering Resp objects (status, headers, body, .json).
- Suite: runs the tests in order, prints "ok NAME" / "FAIL NAME: why" and
  ends with "N passed, N failed"; the exit status is 0 only when nothing
  failed.  A test marked known_bug="file:line — what" still fails (the tests
  are not weakened for a server bug); the mark says where the bug is.
- start_server(binary, **settings): a tests/lib/drover.py Drover with the
  HTTP listener on a free port, and the platform admin token it printed.
- load_spec(): docs/openapi.yaml as JSON, via the Redocly CLI pinned in
  tests/api/package-lock.json (`redocly bundle --ext json`), so that no YAML
  parser is needed.
- SchemaChecker: a small JSON Schema checker (type, required, properties,
  additionalProperties, items, enum, const, pattern, lengths, bounds,
  allOf/anyOf/oneOf, $ref) for answers against the documented schemas.
"""
import argparse
import contextlib
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse

HERE = os.path.dirname(os.path.realpath(__file__))
ROOT = os.path.realpath(os.path.join(HERE, "..", ".."))
SPEC_PATH = os.path.join(ROOT, "docs", "openapi.yaml")
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from drover import Drover  # noqa: E402

HOST = "127.0.0.1"
# The settings every API test server gets unless the test says otherwise: no rate
# limit (a token bucket makes answers depend on timing; test_api.py tests it on a
# server of its own).
BASE_SETTINGS = {"api.rate_limit_rps": "0"}


class TestFailure(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def eq(got, want, msg):
    if got != want:
        raise TestFailure(f"{msg}: got {got!r}, want {want!r}")


def wait_until(fn, timeout=10.0, msg="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise TestFailure(f"timed out waiting for {msg}")


# -- HTTP -------------------------------------------------------------------------------------

class Resp:
    def __init__(self, method, path, status, headers, body):
        self.method = method
        self.path = path
        self.status = status
        self.headers = headers  # [(name, value)] as received
        self.body = body
        self._json = None
        self._json_done = False

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    @property
    def ctype(self):
        return self.header("content-type") or ""

    @property
    def media(self):
        return self.ctype.split(";")[0].strip().lower()

    @property
    def is_json(self):
        m = self.media
        return m == "application/json" or m.endswith("+json")

    @property
    def json(self):
        if not self._json_done:
            self._json_done = True
            if self.is_json and self.body:
                try:
                    self._json = json.loads(self.body)
                except ValueError as e:
                    raise TestFailure(f"{self.method} {self.path}: {self.status} body is not JSON "
                                      f"({e}): {self.body[:200]!r}")
        return self._json

    @property
    def text(self):
        return self.body.decode(errors="replace")

    def __repr__(self):
        return f"<{self.method} {self.path} -> {self.status} {self.ctype} {self.body[:300]!r}>"


_DEFAULT = object()


class Api:
    """A client for one server; `token` is sent as the bearer token unless a call
    passes token= (None: no Authorization header)."""

    def __init__(self, port, token=None, host=HOST):
        self.host = host
        self.port = port
        self.token = token

    def as_token(self, token):
        return Api(self.port, token, self.host)

    def connection(self, timeout=30):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, *, token=_DEFAULT, headers=None, ctype=None,
                raw=None, query=None, conn=None):
        hdrs = {}
        tok = self.token if token is _DEFAULT else token
        if tok:
            hdrs["Authorization"] = "Bearer " + tok
        data = None
        if raw is not None:
            data = raw.encode() if isinstance(raw, str) else raw
        elif body is not None:
            data = json.dumps(body).encode()
            if ctype is None:
                ctype = "application/json"
        if ctype:
            hdrs["Content-Type"] = ctype
        if query:
            path = path + ("&" if "?" in path else "?") + urllib.parse.urlencode(query)
        hdrs.update(headers or {})
        own = conn is None
        c = conn or self.connection()
        try:
            c.request(method, path, body=data, headers=hdrs)
            r = c.getresponse()
            payload = r.read()
            return Resp(method, path, r.status, r.getheaders(), payload)
        finally:
            if own:
                c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def patch(self, path, body=None, **kw):
        return self.request("PATCH", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


def expect(r, status, what):
    """Check the status of an answer; on a mismatch say what came back."""
    ok = r.status in status if isinstance(status, (tuple, list, set)) else r.status == status
    if not ok:
        raise TestFailure(f"{what}: {r.method} {r.path} answered {r.status}, want {status}: "
                          f"{r.body[:400]!r}")
    return r


def expect_problem(r, status, what, type_slug=None):
    """An RFC 9457 problem answer with this status (and type slug, if given)."""
    expect(r, status, what)
    eq(r.media, "application/problem+json", f"{what}: content type")
    p = r.json
    check(isinstance(p, dict), f"{what}: problem body is not an object: {r.body[:200]!r}")
    for k in ("type", "title", "status", "detail"):
        check(k in p, f"{what}: problem has no {k!r}: {p}")
    eq(p["status"], r.status, f"{what}: problem status")
    check(isinstance(p["detail"], str) and p["detail"], f"{what}: empty problem detail")
    if type_slug:
        eq(p["type"], "https://drover.dev/problems/" + type_slug, f"{what}: problem type")
    return p


# -- servers ----------------------------------------------------------------------------------

@contextlib.contextmanager
def start_server(binary, **settings):
    """A live server with its HTTP listener; yields (drover, Api with the platform token)."""
    s = dict(BASE_SETTINGS)
    s.update(settings)
    with Drover(binary, settings=s, http_port=True) as d:
        token = d.admin_token()
        yield d, Api(d.http_port, token)


def binary_from_argv(description):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--drover", required=True, help="the drover binary")
    ap.add_argument("-k", dest="only", default=None, help="run only tests whose name contains this")
    args = ap.parse_args()
    binary = os.path.realpath(args.drover)
    if not os.access(binary, os.X_OK):
        print(f"not an executable: {binary}", file=sys.stderr)
        sys.exit(2)
    return binary, args.only


def drover_routes(binary, with_scope=False):
    """[(METHOD, PATH, ROLE)] from `drover routes` (METHOD PATH ROLE SCOPE per line);
    with_scope: [(METHOD, PATH, ROLE, SCOPE)], SCOPE "none" when the route needs none
    and "?" when src/api/scopes.def does not list it."""
    out = subprocess.run([binary, "routes"], check=True, capture_output=True, timeout=30).stdout
    routes = []
    for line in out.decode().splitlines():
        parts = line.split()
        if len(parts) == 4:
            routes.append(tuple(parts) if with_scope else tuple(parts[:3]))
        elif line.strip():
            raise TestFailure(f"unexpected `drover routes` line: {line!r}")
    return routes


def pattern_regex(pattern):
    """/api/v1/tenants/{tenant} -> a regex matching concrete paths, capturing parameters."""
    out = "^"
    for seg in pattern.strip("/").split("/"):
        if seg.startswith("{") and seg.endswith("}"):
            out += "/(?P<%s>[^/]+)" % seg[1:-1]
        else:
            out += "/" + re.escape(seg)
    return re.compile(out + "$")


def fill(pattern, **params):
    """Fill {name} segments of a route pattern."""
    return re.sub(r"\{(\w+)\}", lambda m: urllib.parse.quote(params[m.group(1)], safe=""), pattern)


# -- the runner -------------------------------------------------------------------------------

class Suite:
    def __init__(self, name):
        self.name = name
        self.tests = []

    def test(self, known_bug=None):
        def deco(fn):
            self.tests.append((fn.__name__, fn, known_bug))
            return fn
        return deco

    def main(self, setup, description=None):
        binary, only = binary_from_argv(description or self.name)
        passed = failed = 0
        failures = []
        with setup(binary) as env:
            for name, fn, known_bug in self.tests:
                if only and only not in name:
                    continue
                t0 = time.time()
                try:
                    fn(env)
                    passed += 1
                    print(f"ok   {name} ({time.time() - t0:.1f}s)", flush=True)
                except Exception as e:  # noqa: BLE001 - report every failure and go on
                    failed += 1
                    mark = f" [KNOWN SERVER BUG: {known_bug}]" if known_bug else ""
                    print(f"FAIL {name}{mark}: {e}", flush=True)
                    if not isinstance(e, TestFailure):
                        traceback.print_exc()
                    failures.append(name)
                alive = getattr(env, "alive", None)
                if alive and not alive():
                    print(f"FAIL {name}: the server died", flush=True)
                    failed += 1
                    break
        if failures:
            print("failed: " + ", ".join(failures))
        print(f"{passed} passed, {failed} failed", flush=True)
        sys.exit(1 if failed else 0)


# -- the OpenAPI document ---------------------------------------------------------------------

def load_spec():
    """docs/openapi.yaml as a dict, converted to JSON by the pinned Redocly CLI."""
    redocly = os.path.join(HERE, "node_modules", ".bin", "redocly")
    if not os.access(redocly, os.X_OK):
        raise RuntimeError("Redocly CLI is not installed in tests/api; run scripts/deps.sh "
                           "(npm ci --no-audit --no-fund in tests/api)")
    env = dict(os.environ, REDOCLY_TELEMETRY="off", REDOCLY_SUPPRESS_UPDATE_NOTICE="true",
               NO_UPDATE_NOTIFIER="1")
    with tempfile.TemporaryDirectory(prefix="drover-openapi-") as d:
        out = os.path.join(d, "openapi.json")
        p = subprocess.run([redocly, "bundle", SPEC_PATH, "--ext", "json", "--output", out],
                           capture_output=True, env=env, cwd=HERE, timeout=180)
        if p.returncode != 0 or not os.path.exists(out):
            raise RuntimeError("redocly bundle failed:\n" + p.stdout.decode(errors="replace")
                               + p.stderr.decode(errors="replace"))
        with open(out) as f:
            return json.load(f)


HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def spec_operations(spec):
    """[(METHOD, path, operation)] in document order."""
    ops = []
    for path, item in spec.get("paths", {}).items():
        for m in HTTP_METHODS:
            if m in item:
                ops.append((m.upper(), path, item[m]))
    return ops


DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _json_type(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _type_ok(t, v):
    jt = _json_type(v)
    if t == "number":
        return jt in ("integer", "number")
    return jt == t


class SchemaChecker:
    """Enough JSON Schema (2020-12 as OpenAPI 3.1 uses it) to hold answers to the spec."""

    def __init__(self, spec):
        self.spec = spec

    def resolve(self, node):
        seen = 0
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise RuntimeError(f"external $ref not supported: {ref}")
            n = self.spec
            for part in ref[2:].split("/"):
                n = n[part.replace("~1", "/").replace("~0", "~")]
            node = n
            seen += 1
            if seen > 50:
                raise RuntimeError(f"$ref loop at {ref}")
        return node

    def errors(self, schema, value, where="$"):
        s = self.resolve(schema)
        if s is True or s == {}:
            return []
        if s is False:
            return [f"{where}: no value is allowed here"]
        errs = []
        for sub in s.get("allOf", []):
            errs += self.errors(sub, value, where)
        for key in ("anyOf", "oneOf"):
            if key in s:
                results = [self.errors(sub, value, where) for sub in s[key]]
                good = sum(1 for r in results if not r)
                if good == 0:
                    errs.append(f"{where}: matches none of {key}: " +
                                " | ".join(r[0] for r in results if r))
                elif key == "oneOf" and good > 1:
                    errs.append(f"{where}: matches {good} alternatives of oneOf")
        t = s.get("type")
        if t is not None:
            types = t if isinstance(t, list) else [t]
            if not any(_type_ok(x, value) for x in types):
                errs.append(f"{where}: is {_json_type(value)}, want {t}")
                return errs
        if "const" in s and value != s["const"]:
            errs.append(f"{where}: is {value!r}, want {s['const']!r}")
        if "enum" in s and value not in s["enum"]:
            errs.append(f"{where}: {value!r} is not one of {s['enum']}")
        if isinstance(value, dict):
            for k in s.get("required", []):
                if k not in value:
                    errs.append(f"{where}: required property {k!r} is missing")
            props = s.get("properties", {})
            for k, v in value.items():
                if k in props:
                    errs += self.errors(props[k], v, f"{where}.{k}")
                elif "additionalProperties" in s:
                    ap = s["additionalProperties"]
                    if ap is False:
                        errs.append(f"{where}: unexpected property {k!r}")
                    elif isinstance(ap, dict):
                        errs += self.errors(ap, v, f"{where}.{k}")
        if isinstance(value, list):
            if "items" in s:
                for i, v in enumerate(value):
                    errs += self.errors(s["items"], v, f"{where}[{i}]")
            if "maxItems" in s and len(value) > s["maxItems"]:
                errs.append(f"{where}: more than {s['maxItems']} items")
        if isinstance(value, str):
            if "pattern" in s and not re.search(s["pattern"], value):
                errs.append(f"{where}: {value!r} does not match {s['pattern']}")
            if "minLength" in s and len(value) < s["minLength"]:
                errs.append(f"{where}: shorter than {s['minLength']}")
            if "maxLength" in s and len(value) > s["maxLength"]:
                errs.append(f"{where}: longer than {s['maxLength']}")
            if s.get("format") == "date-time" and not DATE_TIME.match(value):
                errs.append(f"{where}: {value!r} is not an RFC 3339 date-time")
        if _json_type(value) in ("integer", "number"):
            if "minimum" in s and value < s["minimum"]:
                errs.append(f"{where}: {value} < minimum {s['minimum']}")
            if "maximum" in s and value > s["maximum"]:
                errs.append(f"{where}: {value} > maximum {s['maximum']}")
        return errs


# -- device CAs: proof of possession (ADR-0011) ------------------------------------------------

def registration_code(api, tenant):
    """The tenant's CA registration code (made on the first request, then kept)."""
    r = expect(api.get(f"/api/v1/tenants/{tenant}/ca-registration-code"), 200,
               "registration code")
    return r.json["registration_code"]


def verification_certificate(ca_pem, ca_key_pem, code):
    """Proof that the caller holds a CA's key: a certificate the CA (PEM texts of its
    certificate and key) signs whose CN is the tenant's registration code, as PEM text;
    made with the openssl CLI, as AWS IoT's verification certificate is."""
    with tempfile.TemporaryDirectory() as tmp:
        def path(name):
            return os.path.join(tmp, name)
        with open(path("ca.pem"), "w") as f:
            f.write(ca_pem)
        with open(path("ca.key"), "w") as f:
            f.write(ca_key_pem)
        for args in (("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-keyout", path("v.key"), "-out", path("v.csr"), "-subj",
                      f"/CN={code}"),
                     ("x509", "-req", "-in", path("v.csr"), "-CA", path("ca.pem"), "-CAkey",
                      path("ca.key"), "-set_serial", str(int.from_bytes(os.urandom(8), "big")),
                      "-days", "1", "-out", path("v.pem"))):
            subprocess.run(["openssl", *args], check=True, capture_output=True)
        with open(path("v.pem")) as f:
            return f.read()
