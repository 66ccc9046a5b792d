#!/usr/bin/python3
"""Behaviour of the REST API against a live `drover serve`.

Tokens (first start, roles, revocation, expiry), tenants, users and devices
with ETags and If-Match, list filters and cursor pagination, decommissioning,
quotas, problem answers, routing, rate limits, the audit log, health and
metrics, keep-alive, and MQTT over WebSocket on the same port.

Usage: test_api.py --drover BINARY [-k NAME]
Ends with "N passed, N failed".  A test marked KNOWN SERVER BUG fails because
of the server, not the test; the mark says where.
"""
import contextlib
import datetime
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from apilib import (Suite, TestFailure, check, eq, expect, expect_problem,  # noqa: E402
                    start_server, wait_until)

suite = Suite("test_api")
TOKEN_RE = re.compile(r"^drv_[a-z2-7]{32}$")
ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class Env:
    def __init__(self, binary, d, api):
        self.binary = binary
        self.d = d
        self.api = api          # platform admin
        self.n = 0

    def alive(self):
        return self.d.alive()

    def tenant(self, prefix, **extra):
        """A fresh tenant and an Api holding a tenant_admin token of it."""
        self.n += 1
        tid = f"{prefix}-{self.n}"
        body = {"id": tid, "name": f"Tenant {tid}"}
        body.update(extra)
        expect(self.api.post("/api/v1/tenants", body), 201, "create tenant")
        r = expect(self.api.post(f"/api/v1/tenants/{tid}/tokens",
                                 {"name": "admin", "role": "tenant_admin"}), 201, "admin token")
        return tid, self.api.as_token(r.json["token"])


@contextlib.contextmanager
def setup(binary):
    with start_server(binary) as (d, api):
        yield Env(binary, d, api)


def rfc3339(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def token_id(api):
    return expect(api.get("/api/v1/whoami"), 200, "whoami").json["token"]


def all_pages(api, path, limit=None, query=None):
    """Every item of a list, following next_cursor; also the number of pages."""
    items, cursor, pages = [], None, 0
    while True:
        q = dict(query or {})
        if limit:
            q["limit"] = str(limit)
        if cursor:
            q["cursor"] = cursor
        r = expect(api.get(path, query=q), 200, f"list {path}")
        body = r.json
        check(set(body) >= {"items", "next_cursor"}, f"list answer keys: {sorted(body)}")
        items += body["items"]
        pages += 1
        if limit:
            check(len(body["items"]) <= limit, f"page of {len(body['items'])} > limit {limit}")
        cursor = body["next_cursor"]
        if cursor is None:
            return items, pages
        check(isinstance(cursor, str) and cursor, f"next_cursor {cursor!r}")
        check(pages < 10000, "pagination does not end")


# -- tokens and identity ----------------------------------------------------------------------

@suite.test()
def first_start_token_is_platform_admin(env):
    r = expect(env.api.get("/api/v1/whoami"), 200, "whoami with the first-start token")
    eq(r.media, "application/json", "whoami content type")
    eq(r.json.get("role"), "platform_admin", "role of the first-start token")
    check(r.json.get("tenant") is None, f"a platform token has no tenant: {r.json}")
    check(isinstance(r.json.get("token"), str) and r.json["token"], f"token id: {r.json}")
    check(TOKEN_RE.match(env.api.token), f"token format: {env.api.token!r}")
    check(env.api.token not in r.text, "whoami shows the secret")


@suite.test()
def first_start_token_printed_once_and_kept_across_restart(env):
    with start_server(env.binary) as (d, api):
        expect(api.get("/api/v1/whoami"), 200, "whoami")
        d.restart()
        expect(api.get("/api/v1/whoami"), 200, "the first token after a restart")
        log = d.read_log()
        eq(len(re.findall(r"^\s*DROVER_TOKEN=", log, re.M)), 1, "DROVER_TOKEN lines after a restart")


@suite.test()
def requests_without_a_valid_token_are_401(env):
    for tok in (None, "drv_" + "a" * 32, "not-a-token", ""):
        r = env.api.get("/api/v1/whoami", token=tok)
        expect_problem(r, 401, f"whoami with token {tok!r}", "unauthorized")
        check((r.header("WWW-Authenticate") or "").startswith("Bearer"),
              f"WWW-Authenticate: {r.header('WWW-Authenticate')!r}")
    r = env.api.get("/api/v1/whoami", token=None, headers={"Authorization": "Basic YTpi"})
    expect_problem(r, 401, "Basic authentication")
    r = env.api.get("/api/v1/tenants", token=None,
                    headers={"Authorization": "bearer " + env.api.token})
    expect(r, 200, "the scheme name is case-insensitive")


@suite.test()
def tokens_are_shown_once_and_never_above_the_creator(env):
    tid, admin = env.tenant("tok")
    base = f"/api/v1/tenants/{tid}/tokens"
    r = expect(admin.post(base, {"name": "ops", "role": "operator"}), 201, "create operator token")
    t = r.json
    check(TOKEN_RE.match(t.get("token", "")), f"secret format: {t}")
    eq(t.get("role"), "operator", "role")
    eq(t.get("name"), "ops", "name")
    eq(t.get("tenant"), tid, "tenant")
    check(ID_RE.match(t.get("id", "")), f"token id {t.get('id')!r}")
    eq(r.header("Cache-Control"), "no-store", "Cache-Control of an answer with a secret")
    eq(r.header("Location"), f"{base}/{t['id']}", "Location")
    op = admin.as_token(t["token"])
    w = expect(op.get("/api/v1/whoami"), 200, "whoami operator").json
    eq((w.get("role"), w.get("tenant"), w.get("token")), ("operator", tid, t["id"]), "whoami")

    lst = expect(admin.get(base), 200, "list tokens")
    ids = [i["id"] for i in lst.json["items"]]
    check(t["id"] in ids, f"new token not listed: {ids}")
    check(t["token"] not in lst.text and admin.token not in lst.text, "a secret is listed")
    check(all("token" not in i for i in lst.json["items"]), "list items carry a secret field")

    # Lower roles may not make tokens; nobody makes a platform token here.
    expect_problem(op.post(base, {"name": "x", "role": "viewer"}), 403, "operator makes a token",
                   "forbidden")
    viewer = admin.as_token(expect(admin.post(base, {"name": "v", "role": "viewer"}), 201,
                                   "viewer token").json["token"])
    expect_problem(viewer.post(base, {"name": "x", "role": "viewer"}), 403, "viewer makes a token")
    expect_problem(viewer.get(base), 403, "viewer lists tokens")
    for role in ("platform_admin", "root", ""):
        expect_problem(admin.post(base, {"name": "x", "role": role}), 400, f"role {role!r}")
    # A tenant admin may make another tenant admin (not above itself).
    expect(admin.post(base, {"name": "a2", "role": "tenant_admin"}), 201, "tenant_admin by tenant_admin")


@suite.test()
def revoked_token_is_401_at_once(env):
    tid, admin = env.tenant("rev")
    base = f"/api/v1/tenants/{tid}/tokens"
    t = expect(admin.post(base, {"name": "doomed", "role": "operator"}), 201, "create").json
    x = admin.as_token(t["token"])
    conn = x.connection()
    try:
        expect(x.get("/api/v1/whoami", conn=conn), 200, "before revocation")
        expect(admin.delete(f"{base}/{t['id']}"), 204, "revoke")
        # The very next request, even on the connection that used the token, is refused.
        expect_problem(x.get("/api/v1/whoami", conn=conn), 401, "after revocation")
    finally:
        conn.close()
    expect_problem(x.get(f"/api/v1/tenants/{tid}/devices"), 401, "revoked token lists devices")
    expect(admin.delete(f"{base}/{t['id']}"), 204, "revoking twice is harmless")
    items = {i["id"]: i for i in all_pages(admin, base)[0]}
    check(items[t["id"]].get("revoked_at"), f"revoked_at not set: {items[t['id']]}")
    check(not items[token_id(admin)].get("revoked_at"), "the admin's token is revoked too")
    expect_problem(admin.delete(f"{base}/no-such-token"), 404, "revoke an unknown token")


@suite.test()
def expired_token_is_401(env):
    tid, admin = env.tenant("exp")
    expect_problem(admin.post(f"/api/v1/tenants/{tid}/tokens",
                              {"name": "past", "role": "viewer",
                               "expires_at": "2020-01-01T00:00:00Z"}), 400, "expiry in the past")
    exp = time.time() + 4.0
    t = expect(admin.post(f"/api/v1/tenants/{tid}/tokens",
                          {"name": "brief", "role": "viewer", "expires_at": rfc3339(exp)}),
               201, "create expiring token").json
    check(t.get("expires_at"), f"expires_at not in the answer: {t}")
    x = admin.as_token(t["token"])
    if time.time() < exp - 1.5:  # only when there is clearly time left (no timing assertion)
        expect(x.get("/api/v1/whoami"), 200, "before expiry")
    time.sleep(max(0.0, exp - time.time()) + 1.0)
    r = x.get("/api/v1/whoami")
    expect_problem(r, 401, "after expiry")
    check(r.header("WWW-Authenticate"), "WWW-Authenticate on an expired token")


@suite.test()
def tenant_tokens_never_reach_platform_routes(env):
    tid, admin = env.tenant("plat")
    expect_problem(admin.get("/api/v1/tenants"), 403, "tenant admin lists tenants", "forbidden")
    expect_problem(admin.post("/api/v1/tenants", {"name": "evil"}), 403, "tenant admin creates")
    expect_problem(admin.patch(f"/api/v1/tenants/{tid}", {"name": "x"}), 403, "patch own tenant")
    expect_problem(admin.delete(f"/api/v1/tenants/{tid}"), 403, "delete own tenant")
    r = expect(admin.get(f"/api/v1/tenants/{tid}"), 200, "read own tenant")
    eq(r.json["id"], tid, "own tenant id")


# -- tenants ------------------------------------------------------------------------------------

@suite.test()
def tenant_crud_with_etag_and_if_match(env):
    api = env.api
    r = expect(api.post("/api/v1/tenants", {"id": "crud-t", "name": "Crud",
                                            "quotas": {"devices": 10}, "allow_zero_touch": False}),
               201, "create tenant")
    t = r.json
    eq(r.header("Location"), "/api/v1/tenants/crud-t", "Location")
    eq((t["id"], t["name"], t.get("status")), ("crud-t", "Crud", "active"), "tenant")
    eq(t.get("quotas"), {"devices": 10}, "quotas")
    v1 = t["version"]
    eq(r.header("ETag"), f'"{v1}"', "ETag of the created tenant")
    r = expect(api.get("/api/v1/tenants/crud-t"), 200, "get tenant")
    eq(r.header("ETag"), f'"{v1}"', "ETag on GET")
    eq(r.json["name"], "Crud", "name")
    ids = [x["id"] for x in all_pages(api, "/api/v1/tenants")[0]]
    check("crud-t" in ids, "tenant not listed")

    r = expect(api.patch("/api/v1/tenants/crud-t", {"name": "Crud 2", "quotas": {"connections": 5}},
                         ctype="application/merge-patch+json", headers={"If-Match": f'"{v1}"'}),
               200, "patch with the current ETag")
    v2 = r.json["version"]
    check(v2 > v1, f"version not raised: {v1} -> {v2}")
    eq(r.header("ETag"), f'"{v2}"', "ETag after patch")
    eq(r.json["name"], "Crud 2", "patched name")
    eq(r.json.get("quotas"), {"devices": 10, "connections": 5}, "quotas merged")

    r = api.patch("/api/v1/tenants/crud-t", {"name": "Lost update"}, headers={"If-Match": f'"{v1}"'})
    expect_problem(r, 412, "patch with a stale ETag", "version-mismatch")
    eq(expect(api.get("/api/v1/tenants/crud-t"), 200, "get").json["name"], "Crud 2",
       "a refused patch changed the tenant")
    expect_problem(api.patch("/api/v1/tenants/crud-t", {"name": "x"}, headers={"If-Match": "2"}),
                   400, "unquoted If-Match")

    r = expect(api.patch("/api/v1/tenants/crud-t", {"status": "suspended"}), 200, "suspend")
    eq(r.json["status"], "suspended", "status")
    expect(api.patch("/api/v1/tenants/crud-t", {"status": "active"}), 200, "resume")
    expect_problem(api.patch("/api/v1/tenants/crud-t", {"id": "other"}), 400, "patch the id")

    expect(api.delete("/api/v1/tenants/crud-t"), 204, "delete")
    r = expect(api.get("/api/v1/tenants/crud-t"), 200, "a deleted tenant can be read")
    eq(r.json["status"], "deleted", "status after delete")
    expect_problem(api.delete("/api/v1/tenants/crud-t"), 404, "delete twice")
    expect_problem(api.post("/api/v1/tenants", {"id": "crud-t", "name": "Again"}), 409,
                   "re-create a deleted tenant's id", "exists")
    expect_problem(api.get("/api/v1/tenants/no-such-tenant"), 404, "unknown tenant")

    r = expect(api.post("/api/v1/tenants", {"name": "Generated"}), 201, "generated id")
    check(re.match(r"^[a-z0-9-]{3,63}$", r.json["id"]), f"generated tenant id {r.json['id']!r}")


@suite.test()
def patching_a_deleted_tenant_is_404(env):
    api = env.api
    expect(api.post("/api/v1/tenants", {"id": "del-patch", "name": "DP"}), 201, "create tenant")
    expect(api.delete("/api/v1/tenants/del-patch"), 204, "delete")
    expect_problem(api.patch("/api/v1/tenants/del-patch", {"name": "x"}), 404,
                   "patch a deleted tenant")


@suite.test()
def tenant_get_if_none_match_is_304(env):
    api = env.api
    r = expect(api.post("/api/v1/tenants", {"id": "inm-t", "name": "INM"}), 201, "create tenant")
    etag = r.header("ETag")
    r = api.get("/api/v1/tenants/inm-t", headers={"If-None-Match": etag})
    expect(r, 304, "GET tenant with the current ETag in If-None-Match")
    eq(r.body, b"", "304 body")
    eq(r.header("ETag"), etag, "ETag on 304")


# -- users --------------------------------------------------------------------------------------

@suite.test()
def user_crud(env):
    tid, admin = env.tenant("usr")
    base = f"/api/v1/tenants/{tid}/users"
    r = expect(admin.post(base, {"id": "alice", "name": "Alice", "email": "alice@example.org",
                                 "role": "operator"}), 201, "create user")
    u = r.json
    eq((u["id"], u["name"], u["email"], u["role"]), ("alice", "Alice", "alice@example.org",
                                                     "operator"), "user")
    eq(u.get("tenant"), tid, "tenant field")
    eq(r.header("Location"), f"{base}/alice", "Location")
    etag = r.header("ETag")
    eq(etag, f'"{u["version"]}"', "ETag")
    r = expect(admin.get(f"{base}/alice"), 200, "get user")
    eq(r.json["email"], "alice@example.org", "email")
    r = admin.get(f"{base}/alice", headers={"If-None-Match": etag})
    expect(r, 304, "If-None-Match current")
    eq(r.body, b"", "304 has no body")
    expect(admin.get(f"{base}/alice", headers={"If-None-Match": '"999"'}), 200, "If-None-Match stale")

    r = expect(admin.patch(f"{base}/alice", {"email": None, "role": "viewer"},
                           ctype="application/merge-patch+json", headers={"If-Match": etag}),
               200, "merge patch removing the e-mail")
    check("email" not in r.json, f"email not removed: {r.json}")
    eq(r.json["role"], "viewer", "role")
    check(r.json["version"] > u["version"], "version not raised")
    expect_problem(admin.patch(f"{base}/alice", {"name": "x"}, headers={"If-Match": etag}), 412,
                   "stale If-Match", "version-mismatch")
    expect_problem(admin.patch(f"{base}/alice", {"role": "platform_admin"}), 400, "platform role")
    expect_problem(admin.patch(f"{base}/alice", {"name": None}), 400, "removing a required name")
    expect_problem(admin.patch(f"{base}/alice", {"created_at": "x"}), 400, "read-only field")

    expect(admin.post(base, {"id": "bob", "name": "Bob", "role": "viewer"}), 201, "second user")
    names = [x["name"] for x in expect(admin.get(base, query={"name_prefix": "Al"}), 200,
                                       "list by prefix").json["items"]]
    eq(names, ["Alice"], "name_prefix=Al")
    expect(admin.delete(f"{base}/alice"), 204, "delete")
    expect_problem(admin.get(f"{base}/alice"), 404, "get deleted")
    expect_problem(admin.delete(f"{base}/alice"), 404, "delete twice")
    expect_problem(admin.post(base, {"id": "alice", "name": "Alice 2", "role": "viewer"}), 409,
                   "ids are never reused", "exists")


# -- devices ------------------------------------------------------------------------------------

@suite.test()
def device_crud_and_merge_patch(env):
    tid, admin = env.tenant("dev")
    base = f"/api/v1/tenants/{tid}/devices"
    # A device names an existing profile and static groups (test_profiles_groups.py).
    expect(admin.post(f"/api/v1/tenants/{tid}/profiles", {"id": "pump", "name": "Pump"}), 201,
           "profile")
    expect(admin.post(f"/api/v1/tenants/{tid}/groups", {"id": "g1", "name": "G1", "kind": "static"}),
           201, "group")
    r = expect(admin.post(base, {"id": "pump-1", "name": "Pump 1", "profile": "pump",
                                 "tags": {"site": "berlin", "env": "prod"},
                                 "attributes": {"fw": "1.0"}, "groups": ["g1"]}), 201, "create")
    d = r.json
    eq((d["id"], d.get("tenant"), d.get("status")), ("pump-1", tid, "active"), "device")
    eq(d["tags"], {"site": "berlin", "env": "prod"}, "tags")
    eq(r.header("Location"), f"{base}/pump-1", "Location")
    eq(r.header("ETag"), f'"{d["version"]}"', "ETag")
    for k in ("created_at", "updated_at"):
        check(isinstance(d.get(k), str) and parse_time(d[k]) > 0, f"{k}: {d.get(k)!r}")
    etag = r.header("ETag")
    r = expect(admin.get(f"{base}/pump-1"), 200, "get")
    eq(r.json["attributes"], {"fw": "1.0"}, "attributes")
    expect(admin.get(f"{base}/pump-1", headers={"If-None-Match": etag}), 304, "If-None-Match")

    r = expect(admin.patch(f"{base}/pump-1", {"name": "Pump One", "tags": {"env": None, "floor": "2"}},
                           ctype="application/merge-patch+json", headers={"If-Match": etag}),
               200, "merge patch")
    p = r.json
    eq(p["tags"], {"site": "berlin", "floor": "2"}, "tags after merge patch")
    eq(p["name"], "Pump One", "name")
    eq(p["attributes"], {"fw": "1.0"}, "untouched attributes")
    eq(p["created_at"], d["created_at"], "created_at")
    check(p["version"] > d["version"], "version not raised")
    eq(r.header("ETag"), f'"{p["version"]}"', "new ETag")
    expect_problem(admin.patch(f"{base}/pump-1", {"name": "Lost"}, headers={"If-Match": etag}), 412,
                   "stale If-Match", "version-mismatch")
    eq(expect(admin.get(f"{base}/pump-1"), 200, "get").json["name"], "Pump One",
       "a refused patch changed the device")
    for field, value in (("status", "decommissioned"), ("connectivity", {"online": True}),
                         ("version", 99), ("tenant", "other"), ("id", "pump-2")):
        expect_problem(admin.patch(f"{base}/pump-1", {field: value}), 400, f"patch {field}")
    r = expect(admin.patch(f"{base}/pump-1", {"id": "pump-1", "name": None}), 200,
               "application/json patch, unchanged id, name removed")
    check("name" not in r.json, f"name not removed: {r.json}")
    eq(r.json["status"], "active", "status kept")

    r = expect(admin.post(base, {}), 201, "device with a generated id")
    check(ID_RE.match(r.json["id"]), f"generated id {r.json['id']!r}")
    expect_problem(admin.post(base, {"id": "pump-1"}), 409, "duplicate id", "exists")
    expect_problem(admin.get(f"{base}/nothing-here"), 404, "unknown device")


@suite.test()
def device_list_filters(env):
    tid, admin = env.tenant("flt")
    base = f"/api/v1/tenants/{tid}/devices"
    devices = {
        "f1": {"name": "alpha-1", "tags": {"site": "berlin", "env": "prod"}, "attributes": {"fw": "1.0"}},
        "f2": {"name": "alpha-2", "tags": {"site": "hamburg"}, "attributes": {"fw": "2.0"}},
        "f3": {"name": "beta-1", "tags": {"env": "prod"}, "attributes": {"fw": "1.0", "hw": "b"}},
        "f4": {"name": "beta-2"},
    }
    for i, body in devices.items():
        expect(admin.post(base, dict(body, id=i)), 201, f"create {i}")
    expect(admin.post(f"{base}/f4/decommission"), 200, "decommission f4")
    cases = [
        ({}, ["f1", "f2", "f3", "f4"]),
        ({"tag": "site"}, ["f1", "f2"]),
        ({"tag": "site=berlin"}, ["f1"]),
        ({"tag": "env=prod"}, ["f1", "f3"]),
        ({"tag": "env=test"}, []),
        ({"tag": "nosuch"}, []),
        ({"attribute": "fw=1.0"}, ["f1", "f3"]),
        ({"attribute": "hw=b"}, ["f3"]),
        ({"attribute": "fw=3"}, []),
        ({"name_prefix": "alpha"}, ["f1", "f2"]),
        ({"name_prefix": "beta-2"}, ["f4"]),
        ({"name_prefix": "gamma"}, []),
        ({"status": "decommissioned"}, ["f4"]),
        ({"status": "active"}, ["f1", "f2", "f3"]),
        ({"tag": "env=prod", "name_prefix": "beta"}, ["f3"]),
        ({"tag": "site", "attribute": "fw=2.0", "status": "active"}, ["f2"]),
    ]
    for q, want in cases:
        items, _ = all_pages(admin, base, query=q)
        eq(sorted(i["id"] for i in items), want, f"filter {q}")
    items, pages = all_pages(admin, base, limit=1, query={"tag": "env=prod"})
    eq([i["id"] for i in items], ["f1", "f3"], "filtered pages of one")
    check(pages in (2, 3), f"{pages} pages of one for two devices")


@suite.test()
def cursor_pagination_over_250_devices(env):
    tid, admin = env.tenant("page")
    base = f"/api/v1/tenants/{tid}/devices"
    want = [f"dev-{i:04d}" for i in range(250)]
    conn = admin.connection()
    try:
        for i in reversed(want):  # created out of order: lists are by id, not by age
            expect(admin.post(base, {"id": i, "name": i}, conn=conn), 201, f"create {i}")
    finally:
        conn.close()
    for limit in (None, 1000, 250, 100, 7, 1):
        items, pages = all_pages(admin, base, limit=limit)
        ids = [i["id"] for i in items]
        eq(len(ids), len(set(ids)), f"duplicates with limit {limit}")
        eq(ids, want, f"all devices in id order with limit {limit}")
        full = -(-250 // (limit or 100))
        # A store may or may not see that a full last page is the last one.
        check(pages in (full, full + 1), f"{pages} pages with limit {limit}, want {full}")
    eq(expect(admin.get(base, query={"limit": "1000"}), 200, "one page").json["next_cursor"], None,
       "next_cursor of a page holding everything")
    first = expect(admin.get(base), 200, "default page").json
    eq(len(first["items"]), 100, "default limit")
    check(first["next_cursor"], "next_cursor after the first default page")
    for bad in ("0", "1001", "-1", "ten", ""):
        expect_problem(admin.get(base, query={"limit": bad}), 400, f"limit={bad!r}")
    expect_problem(admin.get(base, query={"cursor": "%%not a cursor%%"}), 400, "bad cursor")

    # Keyset pagination: changes behind the cursor neither repeat nor hide what is ahead.
    seen, cursor, page = [], None, 0
    while True:
        q = {"limit": "50"}
        if cursor:
            q["cursor"] = cursor
        body = expect(admin.get(base, query=q), 200, "page").json
        seen += [i["id"] for i in body["items"]]
        page += 1
        if page == 2:
            expect(admin.post(f"{base}/dev-0001/decommission", {"purge": True}), 204, "purge seen")
            expect(admin.post(base, {"id": "dev-9999"}), 201, "create ahead")
            expect(admin.post(base, {"id": "dev-0000a"}), 201, "create behind")
        cursor = body["next_cursor"]
        if not cursor:
            break
    eq(len(seen), len(set(seen)), "duplicates while changing")
    eq(seen, want + ["dev-9999"], "pages while devices were added and removed")


@suite.test()
def decommission_revokes_credentials_and_purge_keeps_the_id_reserved(env):
    tid, admin = env.tenant("dcm")
    base = f"/api/v1/tenants/{tid}/devices"
    expect(admin.post(base, {"id": "dc1", "name": "DC 1"}), 201, "create")
    r = expect(admin.post(f"{base}/dc1/credentials", {"kind": "secret"}), 201, "generated secret")
    c1 = r.json
    check(isinstance(c1.get("secret"), str) and len(c1["secret"]) >= 16,
          f"a generated secret is shown once: {c1}")
    eq(r.header("Cache-Control"), "no-store", "Cache-Control with a secret")
    eq(r.header("Location"), f"{base}/dc1/credentials/{c1['id']}", "Location")
    r = expect(admin.post(f"{base}/dc1/credentials", {"kind": "secret", "secret": "correct horse battery"}),
               201, "given secret")
    c2 = r.json
    check("secret" not in c2 and "secret_hash" not in c2, f"secret material echoed: {c2}")
    listed = expect(admin.get(f"{base}/dc1/credentials"), 200, "list credentials")
    eq([c["id"] for c in listed.json["items"]], [c1["id"], c2["id"]], "credentials, oldest first")
    check(c1["secret"] not in listed.text and "correct horse" not in listed.text,
          "a secret is listed")
    check("argon2" not in listed.text, "a hash is listed")
    eq(listed.json["next_cursor"], None, "one page")

    r = expect(admin.post(f"{base}/dc1/decommission"), 200, "decommission without a body")
    eq(r.json["status"], "decommissioned", "status")
    eq(r.header("ETag"), f'"{r.json["version"]}"', "ETag")
    eq(expect(admin.get(f"{base}/dc1"), 200, "get").json["status"], "decommissioned", "stored status")
    creds = expect(admin.get(f"{base}/dc1/credentials"), 200, "list").json["items"]
    check(creds and all(c.get("revoked_at") for c in creds), f"credentials not revoked: {creds}")
    kinds = [e["kind"] for e in expect(admin.get(f"{base}/dc1/events"), 200, "events").json["items"]]
    eq(kinds[0], "decommissioned", "newest event")
    check("provisioned" in kinds, f"provisioned event missing: {kinds}")
    expect_problem(admin.post(f"{base}/dc1/credentials", {"kind": "secret"}), 409,
                   "credential for a decommissioned device", "decommissioned")
    expect(admin.post(f"{base}/dc1/decommission", {"purge": False}), 200, "decommission again")
    ids = [d["id"] for d in all_pages(admin, base, query={"status": "decommissioned"})[0]]
    eq(ids, ["dc1"], "decommissioned devices")

    expect(admin.post(f"{base}/dc1/decommission", {"purge": True}), 204, "purge")
    expect_problem(admin.get(f"{base}/dc1"), 404, "get a purged device")
    expect_problem(admin.get(f"{base}/dc1/credentials"), 404, "credentials of a purged device")
    expect_problem(admin.get(f"{base}/dc1/events"), 404, "events of a purged device")
    expect_problem(admin.post(f"{base}/dc1/decommission"), 404, "decommission a purged device")
    expect_problem(admin.post(base, {"id": "dc1"}), 409, "a purged id is never reused", "exists")

    expect(admin.post(base, {"id": "dc2"}), 201, "create dc2")
    expect(admin.post(f"{base}/dc2/credentials", {"kind": "secret"}), 201, "credential")
    expect(admin.post(f"{base}/dc2/decommission", {"purge": True}), 204, "purge an active device")
    expect_problem(admin.post(base, {"id": "dc2"}), 409, "re-create dc2")


@suite.test()
def credential_kinds(env):
    tid, admin = env.tenant("crd")
    base = f"/api/v1/tenants/{tid}/devices"
    expect(admin.post(base, {"id": "c1"}), 201, "create device")
    expect(admin.post(base, {"id": "c2"}), 201, "create device")
    with tempfile.TemporaryDirectory() as d:
        key, cert = os.path.join(d, "k.pem"), os.path.join(d, "c.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                        "-subj", "/CN=c1", "-days", "2"], check=True, capture_output=True, timeout=60)
        pem = open(cert).read()
        fp = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-fingerprint", "-sha256"],
                            check=True, capture_output=True, timeout=60).stdout.decode()
        fp = fp.split("=", 1)[1].strip().replace(":", "").lower()
        pub = subprocess.run(["openssl", "pkey", "-in", key, "-pubout"], check=True,
                             capture_output=True, timeout=60).stdout.decode()
    r = expect(admin.post(f"{base}/c1/credentials", {"kind": "x509", "certificate_pem": pem}), 201,
               "x509 from a certificate")
    eq(r.json.get("fingerprint"), fp, "fingerprint computed from the certificate")
    check("secret" not in r.json, "no secret for x509")
    expect_problem(admin.post(f"{base}/c2/credentials", {"kind": "x509", "fingerprint": fp.upper()}),
                   409, "the same certificate on a second device")
    r = expect(admin.post(f"{base}/c1/credentials", {"kind": "jwt_key", "public_key_pem": pub,
                                                     "not_after": "2999-12-31T00:00:00Z"}),
               201, "jwt_key")
    eq(r.json.get("kind"), "jwt_key", "kind")
    check(r.json.get("not_after"), f"not_after: {r.json}")
    cid = r.json["id"]
    expect(admin.delete(f"{base}/c1/credentials/{cid}"), 204, "revoke")
    expect(admin.delete(f"{base}/c1/credentials/{cid}"), 204, "revoke twice")
    items = {c["id"]: c for c in expect(admin.get(f"{base}/c1/credentials"), 200, "list").json["items"]}
    check(items[cid].get("revoked_at"), f"revoked_at: {items[cid]}")
    expect_problem(admin.delete(f"{base}/c2/credentials/{cid}"), 404, "revoke via another device")


@suite.test()
def too_many_credentials_is_a_client_error(env):
    tid, admin = env.tenant("lim")
    base = f"/api/v1/tenants/{tid}/devices"
    expect(admin.post(base, {"id": "many"}), 201, "device")
    for i in range(16):  # x509 by fingerprint: no password hashing, so this is quick
        expect(admin.post(f"{base}/many/credentials", {"kind": "x509", "fingerprint": f"{i:064x}"}),
               201, f"live credential {i + 1}")
    r = admin.post(f"{base}/many/credentials", {"kind": "x509", "fingerprint": f"{99:064x}"})
    expect_problem(r, (400, 409), "a 17th live credential")


@suite.test()
def deleted_tenant_tokens_stop_working(env):
    tid, admin = env.tenant("gone")
    expect(admin.post(f"/api/v1/tenants/{tid}/devices", {"id": "before"}), 201, "device")
    expect(env.api.delete(f"/api/v1/tenants/{tid}"), 204, "delete the tenant")
    r = admin.post(f"/api/v1/tenants/{tid}/devices", {"id": "after"})
    check(not 200 <= r.status < 300, f"a deleted tenant's token still creates devices: {r}")
    check(admin.get("/api/v1/whoami").status == 401, "a deleted tenant's token still authenticates")


@suite.test()
def overlong_filters_are_refused_not_ignored(env):
    tid, admin = env.tenant("long")
    base = f"/api/v1/tenants/{tid}/devices"
    expect(admin.post(base, {"id": "l1", "name": "short"}), 201, "device")
    for q in ({"name_prefix": "z" * 250}, {"tag": "k=" + "v" * 400}, {"status": "s" * 100},
              {"attribute": "k=" + "v" * 1500}):
        r = admin.get(base, query=q)
        ok = r.status == 400 or (r.status == 200 and r.json["items"] == [])
        check(ok, f"filter {list(q)[0]} of {len(list(q.values())[0])} characters: "
                  f"{r.status} with {len((r.json or {}).get('items', []))} devices")
    r = admin.get(base, query={"cursor": "A" * 300})
    expect_problem(r, 400, "a 300-character cursor")


@suite.test()
def device_quota(env):
    tid, admin = env.tenant("quo", quotas={"devices": 2})
    base = f"/api/v1/tenants/{tid}/devices"
    expect(admin.post(base, {"id": "q1"}), 201, "q1")
    expect(admin.post(base, {"id": "q2"}), 201, "q2")
    p = expect_problem(admin.post(base, {"id": "q3"}), 403, "over the quota", "quota-exceeded")
    check("2" in p["detail"], f"the detail names the quota: {p['detail']!r}")
    expect(admin.post(f"{base}/q1/decommission"), 200, "decommission q1")
    expect_problem(admin.post(base, {"id": "q3"}), 403, "a decommissioned device still counts",
                   "quota-exceeded")
    expect(admin.post(f"{base}/q1/decommission", {"purge": True}), 204, "purge q1")
    expect(admin.post(base, {"id": "q3"}), 201, "q3 after the purge")
    expect_problem(admin.post(base, {"id": "q4"}), 403, "quota again")
    expect(env.api.patch(f"/api/v1/tenants/{tid}", {"quotas": {"devices": 3}}), 200, "raise quota")
    expect(admin.post(base, {"id": "q4"}), 201, "q4 after raising the quota")
    expect(env.api.patch(f"/api/v1/tenants/{tid}", {"quotas": {"devices": 0}}), 200, "unlimited")
    expect(admin.post(base, {"id": "q5"}), 201, "q5 with no quota")


# -- errors -------------------------------------------------------------------------------------

@suite.test()
def validation_errors_are_problems_with_a_detail(env):
    tid, admin = env.tenant("val")
    t = f"/api/v1/tenants/{tid}"
    expect(admin.post(f"{t}/devices", {"id": "v1"}), 201, "device")
    cases = [
        (env.api, "POST", "/api/v1/tenants", {"name": 5}, "name"),
        (env.api, "POST", "/api/v1/tenants", {"name": "x", "quotas": {"devices": -1}}, "quotas"),
        (env.api, "POST", "/api/v1/tenants", {"name": "x", "quotas": {"disks": 1}}, "disks"),
        (env.api, "POST", "/api/v1/tenants", {"name": "x", "color": "red"}, "color"),
        (env.api, "POST", "/api/v1/tenants", {"id": "ab", "name": "x"}, "id"),
        (env.api, "POST", "/api/v1/tenants", {"name": "x", "allow_zero_touch": "yes"}, "allow_zero_touch"),
        (admin, "POST", f"{t}/tokens", {"name": "x"}, "role"),
        (admin, "POST", f"{t}/tokens", {"name": "x", "role": "viewer", "scopes": ["a b"]}, "scopes"),
        (admin, "POST", f"{t}/tokens", {"name": "x", "role": "viewer", "expires_at": "soon"}, "expires_at"),
        (admin, "POST", f"{t}/users", {"name": "x", "role": "viewer", "email": "nope"}, "email"),
        (admin, "POST", f"{t}/users", {"role": "viewer"}, "name"),
        (admin, "POST", f"{t}/devices", {"groups": "g1"}, "groups"),
        (admin, "POST", f"{t}/devices", {"tags": {"a=b": "c"}}, "tags"),
        (admin, "POST", f"{t}/devices", {"attributes": {"k": 1}}, "attributes"),
        (admin, "POST", f"{t}/devices", {"name": ""}, "name"),
        (admin, "POST", f"{t}/devices", {"name": "x" * 201}, "name"),
        (admin, "POST", f"{t}/devices/v1/credentials", {"kind": "x509", "fingerprint": "abc"}, "fingerprint"),
        (admin, "POST", f"{t}/devices/v1/credentials", {"kind": "jwt_key", "public_key_pem": "nope"},
         "public_key_pem"),
        (admin, "POST", f"{t}/devices/v1/credentials", {"kind": "secret", "not_after": "2001-01-01T00:00:00Z"},
         "not_after"),
        (admin, "POST", f"{t}/devices/v1/credentials", {"kind": "secret", "secret": "short"}, "16"),
        (admin, "POST", f"{t}/devices/v1/credentials", {}, "kind"),
        (admin, "POST", f"{t}/devices/v1/decommission", {"purge": "yes"}, "purge"),
        (admin, "POST", f"{t}/devices/v1/decommission", {"wipe": True}, "wipe"),
    ]
    for api, method, path, body, word in cases:
        p = expect_problem(api.request(method, path, body), 400, f"{method} {path} {body}")
        check(word in p["detail"], f"{method} {path} {body}: detail {p['detail']!r} does not name {word!r}")
    for path, q, word in ((f"{t}/devices", {"limit": "abc"}, "limit"),
                          (f"{t}/devices/v1/events", {"from": "yesterday"}, "from"),
                          (f"{t}/audit", {"to": "2026-13-01T00:00:00Z"}, "to")):
        p = expect_problem(admin.get(path, query=q), 400, f"GET {path} {q}")
        check(word in p["detail"], f"detail {p['detail']!r} does not name {word!r}")
    p = expect_problem(admin.patch(f"{t}/devices/v1", {"name": "x"}, headers={"If-Match": "1"}),
                       400, "unquoted If-Match")
    check("If-Match" in p["detail"], f"detail {p['detail']!r}")
    # a weak ETag never matches If-Match (strong comparison, RFC 9110 §13.1.1)
    expect_problem(admin.patch(f"{t}/devices/v1", {"name": "x"}, headers={"If-Match": "W/\"1\""}),
                   412, "weak If-Match")


@suite.test()
def unknown_paths_404_and_wrong_methods_405(env):
    for path in ("/", "/nope", "/api/v1", "/api/v1/", "/api/v1/nothing", "/api/v2/whoami",
                 "/healthz/", "/api/v1/tenants/x/nope", "/api/v1/tenants/bad%20id",
                 "/api/v1/tenants/a/devices/b/c/d/e"):
        expect_problem(env.api.get(path), 404, f"GET {path}")
    for method, path, allow in (("DELETE", "/api/v1/whoami", {"GET"}),
                                ("PUT", "/api/v1/tenants", {"GET", "POST"}),
                                ("POST", "/healthz", {"GET"}),
                                ("PUT", "/api/v1/tenants/a-tenant", {"GET", "PATCH", "DELETE"}),
                                ("GET", "/api/v1/tenants/a-tenant/devices/d/decommission", {"POST"})):
        for tok in (env.api.token, None):
            r = env.api.request(method, path, {} if method in ("PUT", "POST") else None, token=tok)
            expect_problem(r, 405, f"{method} {path} (token: {bool(tok)})")
            got = {a.strip() for a in (r.header("Allow") or "").split(",") if a.strip()}
            eq(got, allow, f"Allow of {path}")
    r = env.api.request("HEAD", "/healthz", token=None)
    expect(r, 200, "HEAD /healthz")
    eq(r.body, b"", "HEAD body")


@suite.test()
def malformed_json_is_400_and_wrong_content_type_is_415(env):
    api = env.api
    for raw in ('{"name": ', "[1, 2]", '"text"', "", "{'name': 'x'}", '{"name": "a", "name": "b"}',
                '{"name": "x"} trailing'):
        p = expect_problem(api.post("/api/v1/tenants", raw=raw, ctype="application/json"), 400,
                           f"body {raw!r}", "bad-json")
        check(p["detail"], "a detail")
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/xml", None):
        r = api.post("/api/v1/tenants", raw='{"name": "ct"}', ctype=ctype)
        expect_problem(r, 415, f"content type {ctype!r}")
    r = api.post("/api/v1/tenants", raw='{"name": "ct ok"}', ctype="application/json; charset=utf-8")
    expect(r, 201, "application/json with a charset")
    r = expect(api.post("/api/v1/tenants", {"id": "mp-ok", "name": "mp"}), 201, "tenant")
    expect(api.patch("/api/v1/tenants/mp-ok", raw='{"name": "mp2"}',
                     ctype="application/merge-patch+json"), 200, "merge-patch content type")
    expect_problem(api.patch("/api/v1/tenants/mp-ok", raw='{"name": "mp3"}', ctype="text/json"), 415,
                   "text/json")


@suite.test()
def content_types_are_matched_exactly(env):
    expect(env.api.post("/api/v1/tenants", {"id": "ct-exact", "name": "ct"}), 201, "tenant")
    for ctype in ("application/json-patch+json", "application/jsonx", "application/merge"):
        expect_problem(env.api.patch("/api/v1/tenants/ct-exact", raw='{"name": "y"}', ctype=ctype),
                       415, f"content type {ctype!r}")


@suite.test()
def oversized_body_is_413(env):
    with start_server(env.binary, **{"http.max_body": "1024"}) as (d, p):
        expect(p.post("/api/v1/tenants", {"id": "big-t", "name": "Big"}), 201, "a small body")
        r = p.post("/api/v1/tenants/big-t/devices", {"name": "x" * 5000})
        expect_problem(r, 413, "a body over http.max_body")
        expect(p.get("/healthz", token=None), 200, "the server still answers")


@suite.test()
def rate_limit_answers_429_with_retry_after(env):
    with start_server(env.binary, **{"api.rate_limit_rps": "5", "api.rate_limit_burst": "5"}) as (d, p):
        expect(p.post("/api/v1/tenants", {"id": "rl-t", "name": "RL"}), 201, "tenant")
        x = p.as_token(expect(p.post("/api/v1/tenants/rl-t/tokens", {"name": "x", "role": "viewer"}),
                              201, "token x").json["token"])
        y = p.as_token(expect(p.post("/api/v1/tenants/rl-t/tokens", {"name": "y", "role": "viewer"}),
                              201, "token y").json["token"])
        conn = x.connection()
        try:
            for i in range(5):  # a fresh bucket holds the whole burst
                expect(x.get("/api/v1/whoami", conn=conn), 200, f"request {i + 1} of the burst")
            limited = None
            for _ in range(200):
                r = x.get("/api/v1/whoami", conn=conn)
                if r.status == 429:
                    limited = r
                    break
                expect(r, 200, "within the rate")
        finally:
            conn.close()
        check(limited is not None, "200 requests at full speed never hit a 5 rps limit")
        expect_problem(limited, 429, "over the limit", "rate-limited")
        ra = limited.header("Retry-After")
        check(ra is not None and ra.isdigit() and int(ra) >= 1, f"Retry-After: {ra!r}")
        expect(y.get("/api/v1/whoami"), 200, "another token has its own bucket")
        expect(x.get("/healthz", token=None), 200, "/healthz is not rate limited")
        time.sleep(int(ra) + 0.5)
        expect(x.get("/api/v1/whoami"), 200, "after waiting Retry-After")
        m = expect(x.get("/metrics", token=None), 200, "metrics").text
        n = re.search(r"^drover_api_rate_limited_total (\d+)$", m, re.M)
        check(n and int(n.group(1)) >= 1, "drover_api_rate_limited_total")


@suite.test()
def audit_log_lists_actions_with_actor_and_source(env):
    tid, admin = env.tenant("aud")
    t = f"/api/v1/tenants/{tid}"
    platform_id, admin_tok = token_id(env.api), token_id(admin)
    expect(admin.post(f"{t}/devices", {"id": "a1"}), 201, "device")
    expect(admin.patch(f"{t}/devices/a1", {"name": "A 1"}), 200, "patch device")
    cid = expect(admin.post(f"{t}/devices/a1/credentials", {"kind": "secret"}), 201, "cred").json["id"]
    expect(admin.delete(f"{t}/devices/a1/credentials/{cid}"), 204, "revoke cred")
    expect(admin.post(f"{t}/devices/a1/decommission"), 200, "decommission")
    expect(admin.post(f"{t}/users", {"id": "u", "name": "U", "role": "viewer"}), 201, "user")
    expect(admin.delete(f"{t}/users/u"), 204, "delete user")
    tok = expect(admin.post(f"{t}/tokens", {"name": "t", "role": "viewer"}), 201, "token").json
    expect(admin.delete(f"{t}/tokens/{tok['id']}"), 204, "revoke token")
    expect(env.api.patch(t, {"name": "Audited"}), 200, "platform admin patches the tenant")

    items, _ = all_pages(admin, f"{t}/audit", limit=3)
    ids = [i["id"] for i in items]
    eq(len(ids), len(set(ids)), "duplicate audit records across pages")
    by_action = {}
    for i in items:
        by_action.setdefault(i["action"], []).append(i)
    want = {
        "token.create": platform_id,  # the admin token itself, made by the platform admin
        "device.create": admin_tok, "device.update": admin_tok, "credential.add": admin_tok,
        "credential.revoke": admin_tok, "device.decommission": admin_tok, "user.create": admin_tok,
        "user.delete": admin_tok, "token.revoke": admin_tok, "tenant.update": platform_id,
    }
    for action, actor in want.items():
        check(action in by_action, f"no {action} in the audit log: {sorted(by_action)}")
        actors = {i["actor"] for i in by_action[action]}
        check(actor in actors, f"{action}: actors {actors}, want {actor}")
    for i in items:
        check("127.0.0.1" in (i.get("source") or ""), f"source of {i}")
        check((i.get("target") or "").startswith(t), f"target of {i}")
        check(i.get("tenant") in (tid, None), f"tenant of {i}")
        parse_time(i["ts"])
    ts = [parse_time(i["ts"]) for i in items]
    eq(ts, sorted(ts, reverse=True), "newest first")
    dec = by_action["device.decommission"][0]
    eq(dec.get("target"), f"{t}/devices/a1", "decommission target")
    eq((dec.get("detail") or {}).get("purge"), False, "decommission detail")
    future = expect(admin.get(f"{t}/audit", query={"from": "2999-01-01T00:00:00Z"}), 200, "future")
    eq(future.json["items"], [], "nothing from the future")
    past = expect(admin.get(f"{t}/audit", query={"to": "2000-01-01T00:00:00Z"}), 200, "past")
    eq(past.json["items"], [], "nothing before 2000")
    viewer = admin.as_token(expect(admin.post(f"{t}/tokens", {"name": "v", "role": "viewer"}), 201,
                                   "viewer").json["token"])
    expect_problem(viewer.get(f"{t}/audit"), 403, "viewer reads the audit log")


# -- health, metrics, transport ---------------------------------------------------------------

METRIC_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"'
                         r'(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? -?[0-9.eE+-]+$')


@suite.test()
def health_readiness_and_metrics(env):
    r = expect(env.api.get("/healthz", token=None), 200, "healthz")
    eq(r.json, {"status": "ok"}, "healthz body")
    r = expect(env.api.get("/readyz", token=None), 200, "readyz")
    eq(r.json.get("status"), "ready", "readyz status")
    eq(r.json.get("checks"), {"registry": "ok", "broker": "ok"}, "readyz checks")
    r = expect(env.api.get("/metrics", token=None), 200, "metrics")
    eq(r.media, "text/plain", "metrics content type")
    check("version=0.0.4" in r.ctype, f"metrics content type {r.ctype!r}")
    names = {}
    typed = set()
    for line in r.text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#"):
            continue
        check(METRIC_LINE.match(line), f"not a Prometheus sample line: {line!r}")
        names[line.split("{")[0].split()[0]] = line
    for want in ("drover_mqtt_clients_connected", "drover_http_requests_total",
                 "drover_api_requests_total", "drover_http_responses_total"):
        check(want in names, f"{want} missing from /metrics")
    missing_type = sorted(n for n in names if n not in typed)
    check(not missing_type, f"samples without # TYPE: {missing_type}")
    before = int(names["drover_api_requests_total"].split()[-1])
    expect(env.api.get("/api/v1/whoami"), 200, "whoami")
    after = int(re.search(r"^drover_api_requests_total (\d+)$",
                          expect(env.api.get("/metrics", token=None), 200, "metrics").text,
                          re.M).group(1))
    check(after >= before + 2, f"drover_api_requests_total {before} -> {after}")


@suite.test()
def keep_alive_serves_many_requests_on_one_connection(env):
    tid, admin = env.tenant("ka")
    conn = admin.connection()
    try:
        conn.connect()
        sock = conn.sock
        steps = [
            ("GET", "/api/v1/whoami", None, 200),
            ("POST", f"/api/v1/tenants/{tid}/devices", {"id": "k1"}, 201),
            ("GET", f"/api/v1/tenants/{tid}/devices/k1", None, 200),
            ("GET", "/api/v1/nothing", None, 404),
            ("DELETE", "/api/v1/whoami", None, 405),
            ("POST", f"/api/v1/tenants/{tid}/devices", {"tags": "bad"}, 400),
            ("PATCH", f"/api/v1/tenants/{tid}/devices/k1", {"name": "K"}, 200),
            ("GET", "/healthz", None, 200),
            ("GET", f"/api/v1/tenants/{tid}/devices", None, 200),
            ("HEAD", "/healthz", None, 200),
            ("GET", "/metrics", None, 200),
        ]
        for method, path, body, status in steps:
            r = admin.request(method, path, body, conn=conn)
            expect(r, status, f"{method} {path} on a kept-alive connection")
            check((r.header("Connection") or "").lower() != "close", f"{method} {path}: Connection: close")
            check(conn.sock is sock, f"{method} {path}: the connection was not kept")
    finally:
        conn.close()
    # Pipelining: two requests in one write, two answers in order.
    s = socket.create_connection(("127.0.0.1", env.d.http_port), timeout=30)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n")
        answers = read_responses(s, 2)
        eq([a[0] for a in answers], [200, 404], "pipelined answers in order")
    finally:
        s.close()


def read_responses(s, n):
    """n HTTP/1.1 answers (status, headers, body) read from a socket (Content-Length bodies)."""
    buf = b""
    out = []
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise TestFailure(f"connection closed after {len(out)} answers: {buf[:200]!r}")
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
        length = int(hdrs.get("content-length", "0"))
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                raise TestFailure("connection closed inside a body")
            rest += chunk
        out.append((status, hdrs, rest[:length]))
        buf = rest[length:]
    return out


@suite.test()
def mqtt_over_websocket_shares_the_port(env):
    import paho.mqtt.client as mqtt
    got = []
    connected, subscribed = threading.Event(), threading.Event()
    kw = {"client_id": "api-ws-test", "protocol": mqtt.MQTTv311, "transport": "websockets"}
    if hasattr(mqtt, "CallbackAPIVersion"):  # paho-mqtt 2.x
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION1, **kw)
    else:
        c = mqtt.Client(**kw)
    c.ws_set_options(path="/mqtt")
    c.on_connect = lambda cl, ud, flags, rc: connected.set() if rc == 0 else None
    c.on_message = lambda cl, ud, msg: got.append((msg.topic, msg.payload))
    c.on_subscribe = lambda cl, ud, mid, granted: subscribed.set()
    c.connect("127.0.0.1", env.d.http_port, keepalive=30)
    c.loop_start()
    try:
        check(connected.wait(15), "MQTT over WebSocket on the HTTP port did not connect")
        # The REST API answers on the same port while the WebSocket is open.
        expect(env.api.get("/api/v1/whoami"), 200, "API beside an open /mqtt WebSocket")
        wait_until(lambda: int(re.search(r"^drover_mqtt_clients_connected (\d+)$",
                                         env.api.get("/metrics", token=None).text, re.M).group(1)) >= 1,
                   msg="drover_mqtt_clients_connected >= 1")
        c.subscribe("api-test/ws", qos=1)
        check(subscribed.wait(15), "no SUBACK over WebSocket")
        c.publish("api-test/ws", b"over the api port", qos=1)
        wait_until(lambda: got, timeout=15, msg="the message back over WebSocket")
    finally:
        c.loop_stop()
        c.disconnect()
    check(got and got[0] == ("api-test/ws", b"over the api port"), f"messages: {got}")
    expect(env.api.get("/healthz", token=None), 200, "healthz after the WebSocket client left")


if __name__ == "__main__":
    suite.main(setup)
