#!/usr/bin/python3
"""Telemetry in and out over HTTP (src/api/h_telemetry_io.c) against a live `drover serve`.

HTTP ingest, POST .../devices/{device}/telemetry: the device's own MQTT credentials
(Basic with its secret, Basic or Bearer with a JWT it signed — ES256 made with the
openssl CLI), or a tenant token (operator and telemetry:write); wrong credentials
401 with WWW-Authenticate: Basic, another device's 403, a payload the profile's
decoder cannot read 400 telemetry-undecodable plus a decode_error device event, a
numeric profile's ?key=, no ?decoder= override.  CSV import, POST .../telemetry/import:
a few thousand rows of every value kind with bad rows of every sort (reported with
their file lines), RFC 3339 and ms times, dry runs, the request-level refusals; the
samples then read back through the query route and the export.  Streamed export,
GET .../telemetry/export: 50,000 samples as CSV and as JSON, sent with
Transfer-Encoding: chunked (checked on the raw socket), every value compared; every
key of a device; HTTP/1.0.  `drover telemetry import` with its progress bar and
file line numbers across chunks.

Usage: test_telemetry_io.py --drover BINARY [-k NAME]
Ends with "N passed, N failed".
"""
import base64
import contextlib
import csv
import io
import json
import os
import pty
import select
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from apilib import (Suite, check, eq, expect, expect_problem, start_server,  # noqa: E402
                    wait_until)

suite = Suite("test_telemetry_io")
AUDIENCE = "drover"
SECRET = "telemetry-secret-0123456789"
HOUR = 3600 * 1000


def now_ms():
    return int(time.time() * 1000)


# -- device JWTs, with the openssl CLI ----------------------------------------------------------

def openssl(*args, data=None):
    return subprocess.run(["openssl", *args], input=data, check=True, capture_output=True,
                          timeout=60).stdout


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def der_to_raw(der):
    """An ECDSA-Sig-Value as JWS wants it: R || S, 32 bytes each."""
    pos = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7f)
    out = b""
    for _ in range(2):
        n = der[pos + 1]
        out += int.from_bytes(der[pos + 2:pos + 2 + n], "big").to_bytes(32, "big")
        pos += 2 + n
    return out


class EcKey:
    def __init__(self, tmp, name):
        self.path = os.path.join(tmp, name + ".key")
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-out", self.path)
        self.public_pem = openssl("pkey", "-in", self.path, "-pubout").decode()

    def jwt(self, device):
        now = int(time.time())
        h = b64url(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
        p = b64url(json.dumps({"aud": AUDIENCE, "sub": device, "iat": now,
                               "exp": now + 3600}).encode())
        sig = der_to_raw(openssl("dgst", "-sha256", "-sign", self.path,
                                 data=f"{h}.{p}".encode()))
        return f"{h}.{p}.{b64url(sig)}"


# -- the server ---------------------------------------------------------------------------------

class Env:
    def __init__(self, binary, d, api, tmp):
        self.binary = binary
        self.d = d
        self.api = api
        self.tmp = tmp
        self.n = 0

    def alive(self):
        return self.d.alive()

    def tenant(self, prefix):
        """A fresh tenant, an Api per role, profiles "num" (numeric) and "ml" (senml)."""
        self.n += 1
        tid = f"{prefix}-{self.n}"
        expect(self.api.post("/api/v1/tenants", {"id": tid, "name": tid}), 201, "tenant")
        apis = {}
        for role in ("tenant_admin", "operator", "viewer"):
            r = expect(self.api.post(f"/api/v1/tenants/{tid}/tokens", {"name": role, "role": role}),
                       201, f"{role} token")
            apis[role] = self.api.as_token(r.json["token"])
        adm = apis["tenant_admin"]
        expect(adm.post(f"/api/v1/tenants/{tid}/profiles",
                        {"id": "num", "name": "Numeric", "decoder": "numeric"}), 201, "profile")
        expect(adm.post(f"/api/v1/tenants/{tid}/profiles",
                        {"id": "ml", "name": "SenML", "decoder": "senml"}), 201, "profile")
        return tid, apis

    def device(self, apis, tid, dev, secret=SECRET, **fields):
        body = dict(fields, id=dev)
        expect(apis["operator"].post(f"/api/v1/tenants/{tid}/devices", body), 201, f"device {dev}")
        if secret:
            expect(apis["operator"].post(f"/api/v1/tenants/{tid}/devices/{dev}/credentials",
                                         {"kind": "secret", "secret": secret}), 201, "secret")


@contextlib.contextmanager
def setup(binary):
    with tempfile.TemporaryDirectory(prefix="drover-tio-") as tmp, \
            start_server(binary) as (d, api):
        yield Env(binary, d, api, tmp)


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def ingest(api, tid, dev, payload, headers=None, ctype="application/json", query=None, **kw):
    """POST a payload; token=None sends no bearer token (for device credentials)."""
    raw = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    return api.post(f"/api/v1/tenants/{tid}/devices/{dev}/telemetry", raw=raw, ctype=ctype,
                    headers=headers, query=query, **kw)


def samples(api, tid, dev, key, frm, to):
    """Every sample of a series through the query route, following next_cursor."""
    out, cursor = [], None
    while True:
        q = {"key": key, "from": str(frm), "to": str(to), "limit": "10000"}
        if cursor:
            q["cursor"] = cursor
        r = expect(api.get(f"/api/v1/tenants/{tid}/devices/{dev}/telemetry", query=q), 200,
                   "samples")
        out += [(s["ts"], s["value"]) for s in r.json["items"]]
        cursor = r.json.get("next_cursor")
        if not cursor:
            return out


def post_csv(api, tid, text, dry_run=None, ctype="text/csv"):
    q = {"dry_run": dry_run} if dry_run is not None else None
    return api.post(f"/api/v1/tenants/{tid}/telemetry/import", raw=text.encode(), ctype=ctype,
                    query=q)


def raw_get(port, path, token, version="1.1"):
    """GET over a plain socket: (head lines, body bytes as sent, de-chunked body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    req = (f"GET {path} HTTP/{version}\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
           "Connection: close\r\n\r\n")
    s.sendall(req.encode())
    data = b""
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    chunked = any(h.lower() == "transfer-encoding: chunked" for h in lines[1:])
    if not chunked:
        return lines, body, body
    out, pos, complete = b"", 0, False
    while pos < len(body):
        eol = body.index(b"\r\n", pos)
        size = int(body[pos:eol].split(b";")[0], 16)
        if size == 0:
            complete = True
            break
        out += body[eol + 2:eol + 2 + size]
        check(body[eol + 2 + size:eol + 4 + size] == b"\r\n", "chunk not followed by CRLF")
        pos = eol + 4 + size
    check(complete, "the chunked body has no last chunk")
    return lines, body, out


# -- HTTP ingest --------------------------------------------------------------------------------

@suite.test()
def ingest_with_the_device_secret(env):
    tid, a = env.tenant("basic")
    env.device(a, tid, "d1")
    t0 = now_ms()
    r = expect(ingest(a["viewer"], tid, "d1",
                      {"ts": t0, "values": {"temperature": 21.5, "on": True}},
                      headers=basic(f"{tid}/d1", SECRET), token=None), 200, "ingest")
    eq(r.json, {"stored": 2, "refused": 0}, "ingest answer")
    got = samples(a["viewer"], tid, "d1", "temperature", t0 - HOUR, t0 + HOUR)
    eq(got, [(t0, 21.5)], "stored temperature")
    eq(samples(a["viewer"], tid, "d1", "on", t0 - HOUR, t0 + HOUR), [(t0, True)], "stored bool")
    # The second time the cached verification answers (no Argon2), same result.
    r = expect(ingest(a["viewer"], tid, "d1", {"ts": t0 + 1, "values": {"temperature": 22}},
                      headers=basic(f"{tid}/d1", SECRET), token=None), 200, "ingest again")
    eq(r.json["stored"], 1, "stored again")
    # A kind the key does not hold is refused, with the reason.
    r = expect(ingest(a["viewer"], tid, "d1", {"ts": t0 + 2, "values": {"temperature": "warm"}},
                      headers=basic(f"{tid}/d1", SECRET), token=None), 200, "refused sample")
    eq((r.json["stored"], r.json["refused"]), (0, 1), "refusal counted")
    check("numbers" in r.json.get("reason", ""), f"reason: {r.json}")


@suite.test()
def ingest_refuses_wrong_and_foreign_credentials(env):
    tid, a = env.tenant("refuse")
    env.device(a, tid, "d1")
    env.device(a, tid, "d2", secret="another-secret-0123456789")
    env.device(a, tid, "dead")
    op = a["operator"]
    p = expect_problem(ingest(op, tid, "d1", {"x": 1},
                              headers=basic(f"{tid}/d1", "wrong-secret-12345"),
                              token=None), 401, "wrong secret", "unauthorized")
    r = ingest(op, tid, "d1", {"x": 1}, headers=basic(f"{tid}/d1", "wrong-secret-12345"),
               token=None)
    auth = [v for k, v in r.headers if k.lower() == "www-authenticate"]
    check('Basic realm="drover"' in auth, f"WWW-Authenticate: {auth} ({p})")
    expect_problem(ingest(op, tid, "d1", {"x": 1}, token=None), 401, "no credentials")
    expect_problem(ingest(op, tid, "d1", {"x": 1}, headers={"Authorization": "Basic !!!"},
                          token=None), 401, "malformed Basic")
    expect_problem(ingest(op, tid, "d1", {"x": 1}, headers=basic("nobody", SECRET), token=None),
                   401, "user without tenant")
    # d2's own, valid credentials on d1's path.
    p = expect_problem(ingest(op, tid, "d1", {"x": 1},
                              headers=basic(f"{tid}/d2", "another-secret-0123456789"),
                              token=None), 403, "other device")
    check("another device" in p["detail"], p["detail"])
    # A device of another tenant.
    tid2, a2 = env.tenant("refuse-other")
    env.device(a2, tid2, "d1")
    expect_problem(ingest(op, tid, "d1", {"x": 1}, headers=basic(f"{tid2}/d1", SECRET),
                          token=None), 403, "other tenant's device")
    # A decommissioned device's credentials die with it.
    expect(op.post(f"/api/v1/tenants/{tid}/devices/dead/decommission"), 200, "decommission")
    expect_problem(ingest(op, tid, "dead", {"x": 1}, headers=basic(f"{tid}/dead", SECRET),
                          token=None), 401, "decommissioned device")
    # The profile's decoder applies: a request cannot choose one.
    expect_problem(ingest(op, tid, "d1", {"x": 1}, headers=basic(f"{tid}/d1", SECRET), token=None,
                          query={"decoder": "senml"}), 400, "decoder override", "bad-parameter")


@suite.test()
def ingest_with_a_device_jwt(env):
    tid, a = env.tenant("jwt")
    env.device(a, tid, "j1", secret=None)
    key = EcKey(env.tmp, "j1")
    expect(a["operator"].post(f"/api/v1/tenants/{tid}/devices/j1/credentials",
                              {"kind": "jwt_key", "public_key_pem": key.public_pem}),
           201, "jwt_key")
    token = key.jwt("j1")
    t0 = now_ms()
    r = expect(ingest(a["viewer"], tid, "j1", {"ts": t0, "values": {"v": 1}}, token=token), 200,
               "Bearer JWT")
    eq(r.json["stored"], 1, "stored with Bearer")
    r = expect(ingest(a["viewer"], tid, "j1", {"ts": t0 + 1, "values": {"v": 2}},
                      headers=basic(f"{tid}/j1", token), token=None), 200, "Basic JWT")
    eq(r.json["stored"], 1, "stored with Basic")
    eq(samples(a["viewer"], tid, "j1", "v", t0 - HOUR, t0 + HOUR), [(t0, 1), (t0 + 1, 2)],
       "JWT samples")
    # Signed for another device, or by another key: refused.
    expect_problem(ingest(a["viewer"], tid, "j1", {"v": 3}, token=key.jwt("j2")), 401,
                   "JWT for another subject")
    other = EcKey(env.tmp, "other")
    expect_problem(ingest(a["viewer"], tid, "j1", {"v": 3}, token=other.jwt("j1")), 401,
                   "JWT by an unknown key")


@suite.test()
def ingest_with_a_tenant_token(env):
    tid, a = env.tenant("tok")
    env.device(a, tid, "t1", secret=None)
    env.device(a, tid, "n1", secret=None, profile="num")
    t0 = now_ms()
    r = expect(ingest(a["operator"], tid, "t1", {"ts": t0, "values": {"rpm": 1200}}), 200,
               "operator token")
    eq(r.json["stored"], 1, "stored by token")
    expect_problem(ingest(a["viewer"], tid, "t1", {"rpm": 1}), 403, "viewer", "forbidden")
    expect_problem(ingest(a["operator"], tid, "nothing", {"rpm": 1}), 404, "no such device")
    tid2, a2 = env.tenant("tok-other")
    expect_problem(ingest(a2["operator"], tid, "t1", {"rpm": 1}), 404, "another tenant's token")
    r = expect(env.api.post(f"/api/v1/tenants/{tid}/tokens",
                            {"name": "scoped", "role": "operator", "scopes": ["devices:read"]}),
               201, "scoped token")
    expect_problem(ingest(a["viewer"], tid, "t1", {"rpm": 1}, token=r.json["token"]), 403,
                   "token without telemetry:write", "insufficient-scope")
    # A numeric profile: the key is ?key=, the body a plain number.
    r = expect(ingest(a["operator"], tid, "n1", "42.5", ctype="text/plain",
                      query={"key": "level"}), 200, "numeric")
    eq(r.json["stored"], 1, "numeric stored")
    expect_problem(ingest(a["operator"], tid, "n1", "42.5", ctype="text/plain"), 400,
                   "numeric without key", "bad-parameter")
    expect_problem(ingest(a["operator"], tid, "t1", {"a": 1}, query={"key": "x"}), 400,
                   "key for a json profile", "bad-parameter")
    expect(a["operator"].post(f"/api/v1/tenants/{tid}/devices/t1/decommission"), 200,
           "decommission")
    expect_problem(ingest(a["operator"], tid, "t1", {"rpm": 1}), 409, "decommissioned",
                   "decommissioned")


@suite.test()
def undecodable_payload_is_400_and_a_device_event(env):
    tid, a = env.tenant("undec")
    env.device(a, tid, "u1")
    p = expect_problem(ingest(a["viewer"], tid, "u1", "{not json",
                              headers=basic(f"{tid}/u1", SECRET),
                              token=None), 400, "undecodable", "telemetry-undecodable")
    check("json" in p["detail"], p["detail"])

    def decode_error():
        r = expect(a["viewer"].get(f"/api/v1/tenants/{tid}/devices/u1/events"), 200, "events")
        return [e for e in r.json["items"] if e.get("kind") == "decode_error"]
    evs = wait_until(decode_error, msg="a decode_error event")
    check(len(evs) == 1, f"decode_error events: {evs}")


# -- CSV import ---------------------------------------------------------------------------------

def csv_text(header, rows, crlf=True):
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n" if crlf else "\n")
    w.writerow(header)
    for r in rows:
        w.writerow(r)
    return out.getvalue()


@suite.test()
def csv_import_with_bad_rows(env):
    tid, a = env.tenant("imp")
    for d in ("a1", "a2", "a3", "gone"):
        env.device(a, tid, d, secret=None)
    expect(a["operator"].post(f"/api/v1/tenants/{tid}/devices/gone/decommission"), 200, "gone")
    t0 = now_ms() - 2 * HOUR
    rows, want = [], {}
    for i in range(3000):
        dev = ("a1", "a2", "a3")[(i // 100) % 3]   # runs of 100 rows per device
        ts = t0 + i
        rows.append([dev, "temp", ts, f"{20 + i / 8}"])
        want.setdefault((dev, "temp"), []).append((ts, 20 + i / 8))
        if i % 10 == 0:
            rows.append([dev, "count", ts, str(i)])
            want.setdefault((dev, "count"), []).append((ts, i))
        if i % 25 == 0:
            rows.append([dev, "state", ts, "on, \"quoted\"" if i % 50 else "off"])
            want.setdefault((dev, "state"), []).append((ts, "on, \"quoted\"" if i % 50 else "off"))
        if i % 30 == 0:
            rows.append([dev, "door", ts, "true" if i % 60 else "FALSE"])
            want.setdefault((dev, "door"), []).append((ts, bool(i % 60)))
    # An RFC 3339 time with an offset: 2h after t0's second, in +01:00.
    iso_ts = (t0 // 1000) * 1000 + 250
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(iso_ts // 1000 + 3600)) + ".250+01:00"
    rows.append(["a1", "iso", iso, "7"])
    want[("a1", "iso")] = [(iso_ts, 7)]
    good = sum(len(v) for v in want.values())
    # The bad rows, each at a known place.
    bad = [
        (["nobody", "temp", t0, "1"], "no such device"),
        (["gone", "temp", t0, "1"], "decommissioned"),
        (["a1", "temp", "yesterday", "1"], "ts:"),
        (["a1", "temp", t0, ""], "empty"),
        (["a1", "", t0, "1"], "key:"),
        (["bad id!", "temp", t0, "1"], "device:"),
        (["a1", "temp", t0 + 5000, "warm"], "numbers"),          # the store refuses the kind
        (["a3", "temp", t0 + 7000, "hot"], "numbers"),           # two refusals in one batch
        (["a3", "temp", t0 + 7001, "cold"], "numbers"),
        (["a2", "state", t0 + 5000, "12"], "strings"),
        (["a2", "temp", t0 + 10 * 365 * 24 * HOUR, "1"], "future"),
        (["a1", "temp", t0, "1", "extra"], "fields"),
        (["a1", "temp", t0, "1e999"], "too large"),
    ]
    lines = {}
    for k, (row, why) in enumerate(bad):
        at = 200 + k * 271        # spread through the file (and across batches)
        if row[3] == "cold":
            at = rows.index(bad[k - 1][0]) + 1   # right after "hot": one batch of a3's
        rows.insert(at, row)
    for k, (row, why) in enumerate(bad):
        lines[rows.index(row) + 2] = why   # + header, 1-based
    text = csv_text(["Device", "metric", "TS_MS", "Value"], rows)
    # A dry run stores nothing and reports the rows it can check.
    r = expect(post_csv(a["operator"], tid, text, dry_run="true"), 200, "dry run")
    eq(r.json["dry_run"], True, "dry_run")
    eq(r.json["accepted"] + r.json["rejected_count"], len(rows), "dry run covers every row")
    expect_problem(a["viewer"].get(f"/api/v1/tenants/{tid}/devices/a1/telemetry/export",
                                   query={"key": "temp"}), 404, "nothing stored by the dry run")

    r = expect(post_csv(a["operator"], tid, text), 200, "import")
    rep = r.json
    eq(sorted(rep), ["accepted", "dry_run", "rejected", "rejected_count"], "answer fields")
    eq((rep["accepted"], rep["rejected_count"], rep["dry_run"]), (good, len(bad), False), "counts")
    got = {x["line"]: x["reason"] for x in rep["rejected"]}
    eq(sorted(got), sorted(lines), "rejected lines")
    for line, why in lines.items():
        check(why in got[line], f"line {line}: {got[line]!r} does not say {why!r}")
    frm, to = t0 - HOUR, t0 + 3 * HOUR
    for (dev, key), exp in want.items():
        eq(samples(a["viewer"], tid, dev, key, frm, to), exp, f"samples of {dev}/{key}")


@suite.test()
def csv_import_refusals(env):
    tid, a = env.tenant("impr")
    env.device(a, tid, "d", secret=None)
    op = a["operator"]
    expect_problem(post_csv(op, tid, ""), 400, "empty")
    expect_problem(post_csv(op, tid, "device,key,ts\r\nd,k,1\r\n"), 400, "no value column")
    expect_problem(post_csv(op, tid, "device,key,ts,value,unit\r\n"), 400, "unknown column")
    expect_problem(post_csv(op, tid, "device,key,metric,ts,value\r\n"), 400, "key twice")
    expect_problem(post_csv(op, tid, 'device,"key\r\n'), 400, "header not CSV", "bad-csv")
    expect_problem(post_csv(op, tid, "device,key,ts,value\r\n", ctype="text/plain"), 415, "ctype")
    expect_problem(post_csv(op, tid, "device,key,ts,value\r\n", dry_run="maybe"), 400, "dry_run")
    expect_problem(post_csv(a["viewer"], tid, "device,key,ts,value\r\n"), 403, "viewer")
    # A CSV error half-way: the rows before it stand, the error is the last rejection.
    t0 = now_ms() - HOUR
    text = f"device,key,ts,value\nd,k,{t0},1\nd,k,{t0 + 1},\"2\nd,k,{t0 + 2},3\n"
    r = expect(post_csv(op, tid, text),
               200, "unterminated quote")
    eq((r.json["accepted"], r.json["rejected_count"]), (1, 1), "counts")
    check("not read" in r.json["rejected"][0]["reason"], r.json)
    # Over 100 bad rows: all counted, 100 listed.
    text = "device,key,ts,value\n" + "".join(f"x{i},k,1,1\n" for i in range(250))
    r = expect(post_csv(op, tid, text), 200, "many bad rows")
    eq((r.json["accepted"], r.json["rejected_count"], len(r.json["rejected"])), (0, 250, 100),
       "listed at most 100")


# -- streamed export ----------------------------------------------------------------------------

N_EXPORT = 50000


def load_export_device(env, a, tid):
    env.device(a, tid, "big", secret=None)
    t0 = now_ms() - 20 * HOUR
    rows = []
    for i in range(N_EXPORT):
        rows.append(["big", "pressure", t0 + i * 100, repr(1000 + i / 3)])
    rows.append(["big", "label", t0, 'a "quoted", value'])
    rows.append(["big", "label", t0 + 1, "plain"])
    rows.append(["big", "ok", t0, "true"])
    rows.append(["big", "n", t0, "-9007199254740993"])
    r = expect(post_csv(a["operator"], tid, csv_text(["device", "key", "ts", "value"], rows)), 200,
               "load")
    eq(r.json["rejected_count"], 0, f"load: {r.json['rejected'][:3]}")
    return t0


@suite.test()
def export_50k_samples_streamed(env):
    tid, a = env.tenant("exp")
    t0 = load_export_device(env, a, tid)
    frm, to = t0 - 1, t0 + N_EXPORT * 100
    base = f"/api/v1/tenants/{tid}/devices/big/telemetry/export"
    tok = a["viewer"].token
    # CSV, one key, on the raw socket: chunked, every value.
    head, wire, body = raw_get(env.d.http_port, f"{base}?key=pressure&from={frm}&to={to}", tok)
    check(head[0].startswith("HTTP/1.1 200"), head[0])
    check("transfer-encoding: chunked" in [h.lower() for h in head], f"headers: {head}")
    check(not any(h.lower().startswith("content-length") for h in head), f"headers: {head}")
    check(any(h.lower().startswith("content-type: text/csv") for h in head), f"headers: {head}")
    check(wire.count(b"\r\n") > N_EXPORT + 10, "more than one chunk")
    lines = body.decode().split("\r\n")
    eq(lines[0], "device,key,ts,value", "CSV header")
    eq(lines[-1], "", "ends with a line end")
    eq(len(lines), N_EXPORT + 2, "one line per sample")
    for i in (0, 1, 17, 4999, N_EXPORT - 1):
        d, k, ts, v = lines[1 + i].split(",")
        eq((d, k, int(ts)), ("big", "pressure", t0 + i * 100), f"row {i}")
        eq(float(v), 1000 + i / 3, f"value {i}")
        eq(v, repr(1000 + i / 3).removesuffix(".0"), f"shortest text {i}")
    # JSON through http.client (which de-chunks), every key of the device.
    r = expect(a["viewer"].get(base, query={"format": "json", "from": str(frm), "to": str(to)}),
               200, "json export")
    eq(r.header("transfer-encoding"), "chunked", "JSON is chunked too")
    eq(r.media, "application/json", "JSON content type")
    items = r.json
    eq(len(items), N_EXPORT + 4, "every sample of every key")
    eq([x["key"] for x in items[:4]], ["label", "label", "n", "ok"], "keys in order")
    eq(items[0], {"key": "label", "ts": t0, "value": 'a "quoted", value'}, "string")
    eq(items[2], {"key": "n", "ts": t0, "value": -9007199254740993}, "integer")
    eq(items[3], {"key": "ok", "ts": t0, "value": True}, "boolean")
    pres = [x for x in items if x["key"] == "pressure"]
    eq([x["ts"] for x in pres], [t0 + i * 100 for i in range(N_EXPORT)], "pressure times")
    check(all(x["value"] == 1000 + i / 3 for i, x in enumerate(pres)), "pressure values")
    # The CSV of every key imports back as it was.
    r = expect(a["viewer"].get(base, query={"from": str(frm), "to": str(to)}), 200, "csv all")
    rows = list(csv.reader(io.StringIO(r.text)))
    eq(len(rows), N_EXPORT + 5, "CSV of every key")
    eq(rows[1], ["big", "label", str(t0), 'a "quoted", value'], "quoted string")
    # HTTP/1.0: no chunks, the body ends with the connection.
    head, wire, body = raw_get(env.d.http_port, f"{base}?key=label&from={frm}&to={to}", tok,
                               version="1.0")
    check("connection: close" in [h.lower() for h in head], f"HTTP/1.0 headers: {head}")
    eq(body.decode(), f'device,key,ts,value\r\nbig,label,{t0},"a ""quoted"", value"\r\n'
       f'big,label,{t0 + 1},"plain"\r\n', "HTTP/1.0 body")
    # Refusals before the stream starts.
    expect_problem(a["viewer"].get(base, query={"key": "nothing"}), 404, "no such series")
    expect_problem(a["viewer"].get(base, query={"format": "xml"}), 400, "format")
    expect_problem(a["viewer"].get(base, query={"from": "soon"}), 400, "from")
    expect_problem(a["viewer"].get(base, query={"from": "2", "to": "1"}), 400, "range")
    # Other requests are answered while an export streams to a slow reader.
    s = socket.create_connection(("127.0.0.1", env.d.http_port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(f"GET {base}?from={frm}&to={to} HTTP/1.1\r\nHost: x\r\n"
              f"Authorization: Bearer {tok}\r\n\r\n".encode())
    time.sleep(0.3)
    t = time.time()
    expect(a["viewer"].get(f"/api/v1/tenants/{tid}/devices/big"), 200, "a request meanwhile")
    check(time.time() - t < 2, "the API thread is not held by the export")
    s.close()


# -- the CLI ------------------------------------------------------------------------------------

def run_tty(argv, env, timeout=120):
    """Run with stderr on a pseudo-terminal (the progress bar's case): (rc, stdout, stderr)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    err = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            err += chunk
        elif p.poll() is not None:
            break
    out = p.stdout.read()
    p.wait(timeout=10)
    os.close(master)
    return p.returncode, out.decode(), err.decode(errors="replace")


@suite.test()
def cli_import_with_progress(env):
    tid, a = env.tenant("cli")
    env.device(a, tid, "c1", secret=None)
    t0 = now_ms() - 3 * HOUR
    path = os.path.join(env.tmp, "samples.csv")
    bad_lines = []
    with open(path, "w") as f:
        f.write("device,key,ts,value\n")
        line = 1
        for i in range(30000):
            if i == 5:
                f.write("\n")      # a blank line counts as a line, not a row
                line += 1
            if i in (7, 12345, 29999):
                f.write(f"ghost,k,{t0 + i},1\n")
                line += 1
                bad_lines.append(line)
            if i == 20000:
                f.write(f'c1,note,{t0 + i},"two\nlines"\n')   # a quoted line break
                line += 2
            f.write(f"c1,k,{t0 + i},{i}\n")
            line += 1
    e = {k: v for k, v in os.environ.items() if not k.startswith("DROVER_")}
    e.update(DROVER_URL=f"http://127.0.0.1:{env.d.http_port}", DROVER_TOKEN=a["operator"].token,
             LANG="C")
    argv = [env.binary, "telemetry", "import", path, "--tenant", tid, "--chunk-rows", "7000"]
    rc, out, err = run_tty(argv, e)
    eq(rc, 1, f"exit status with rejected rows: {out!r} {err[-500:]!r}")
    check("\r[" in err and "100%" in err and "30004/30004 rows" in err,
          f"progress bar: {err[-400:]!r}")
    check("30004 rows: 30001 accepted, 3 rejected" in out, f"summary: {out!r}")
    listed = [int(x.split()[0]) for x in out.splitlines()[2:] if x.strip()]
    eq(listed, bad_lines, f"file lines of the bad rows: {out!r}")
    eq(len(samples(a["viewer"], tid, "c1", "k", t0 - 1, t0 + 40000)), 30000,
       "stored through the CLI")
    eq(samples(a["viewer"], tid, "c1", "note", t0 - 1, t0 + 40000), [(t0 + 20000, "two\nlines")],
       "the quoted line break")
    # --json and --dry-run, without a terminal: one line per chunk on stderr.
    p = subprocess.run(argv + ["--json", "--dry-run"], capture_output=True, env=e, timeout=120)
    eq(p.returncode, 1, f"dry run exit: {p.stderr[-300:]!r}")
    doc = json.loads(p.stdout)
    eq((doc["total"], doc["accepted"], doc["rejected_count"], doc["dry_run"]),
       (30004, 30001, 3, True), "JSON summary")
    eq([x["line"] for x in doc["rejected"]], bad_lines, "JSON lines")
    eq(p.stderr.decode().count("% ("), 5, f"a line per chunk: {p.stderr!r}")
    # A file that is not one.
    with open(path, "w") as f:
        f.write('device,key,ts,value\nc1,k,1,"open\n')
    p = subprocess.run(argv, capture_output=True, env=e, timeout=60)
    eq(p.returncode, 1, "unclosed quote")
    check(b"never closed" in p.stderr, p.stderr)


if __name__ == "__main__":
    suite.main(setup)
