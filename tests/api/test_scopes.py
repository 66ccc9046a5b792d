#!/usr/bin/python3
"""Scopes of API tokens and OAuth clients, platform tokens and the platform audit log.

- A token or client with scopes may call a route only when it holds the route's
  scope (src/api/scopes.def, `x-drover-scope` in docs/openapi.yaml): otherwise 403
  with type insufficient-scope naming the missing word.  Without scopes, its role
  alone decides (the behaviour before scopes were enforced).  Scopes never widen
  a role.
- Scope words are checked at creation against the vocabulary (400 for an unknown
  word), and a scoped token can hand on only scopes it holds (403).
- An OAuth access token's scope claim is the client's scopes narrowed by the
  token request's `scope`; the router holds it to that claim.
- GET/POST /api/v1/tokens and DELETE /api/v1/tokens/{token}: the platform
  admin's own tokens, with the self-revocation refused (409).
- GET /api/v1/audit: the platform audit log (tenant.create, tenant.delete,
  token.create, token.revoke, signing_key.rotate), with actor and source.

Usage: test_scopes.py --drover BINARY [-k NAME]
Ends with "N passed, N failed".
"""
import base64
import contextlib
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from apilib import (Suite, check, drover_routes, eq, expect, expect_problem,  # noqa: E402
                    start_server)

suite = Suite("test_scopes")
FORM = "application/x-www-form-urlencoded"


class Env:
    def __init__(self, binary, d, api):
        self.binary = binary
        self.d = d
        self.api = api  # the bootstrap platform admin token
        self.n = 0

    def alive(self):
        return self.d.alive()

    def tenant(self):
        """A fresh tenant, its path and an Api holding an unscoped tenant_admin token."""
        self.n += 1
        tid = f"scopes-{self.n}"
        expect(self.api.post("/api/v1/tenants", {"id": tid, "name": f"Scopes {self.n}"}), 201,
               "tenant")
        base = f"/api/v1/tenants/{tid}"
        r = expect(self.api.post(f"{base}/tokens", {"name": "admin", "role": "tenant_admin"}), 201,
                   "admin token")
        return tid, base, self.api.as_token(r.json["token"])

    def token(self, creator, base, role, scopes, what="token"):
        r = expect(creator.post(f"{base}/tokens", {"name": what, "role": role, "scopes": scopes}),
                   201, what)
        eq(r.json["scopes"], scopes, f"{what}: scopes recorded")
        return self.api.as_token(r.json["token"])

    def access_token(self, client, scope=None):
        form = {"grant_type": "client_credentials"}
        if scope is not None:
            form["scope"] = scope
        basic = base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode())
        r = expect(self.api.post("/oauth/token", raw=urllib.parse.urlencode(form), ctype=FORM,
                                 token=None, headers={"Authorization": "Basic " + basic.decode()}),
                   200, f"access token (scope {scope!r})")
        return r.json["scope"], self.api.as_token(r.json["access_token"])


@contextlib.contextmanager
def setup(binary):
    with start_server(binary) as (d, api):
        yield Env(binary, d, api)


def insufficient(r, word, what):
    """A 403 insufficient-scope problem naming word, with the RFC 6750 challenge."""
    p = expect_problem(r, 403, what, "insufficient-scope")
    check(f'"{word}"' in p["detail"], f"{what}: detail does not name {word}: {p['detail']}")
    www = r.header("WWW-Authenticate") or ""
    check('error="insufficient_scope"' in www and f'scope="{word}"' in www,
          f"{what}: WWW-Authenticate {www!r}")


# -- enforcement ----------------------------------------------------------------------------------

@suite.test()
def devices_read_token_lists_devices_and_nothing_more(env):
    tid, base, admin = env.tenant()
    expect(admin.post(f"{base}/devices", {"id": "d1"}), 201, "device")
    # tenant_admin: the role would allow all of these, so every refusal is the scope's.
    reader = env.token(admin, base, "tenant_admin", ["devices:read"], "devices:read token")
    r = expect(reader.get(f"{base}/devices"), 200, "list devices")
    eq([d["id"] for d in r.json["items"]], ["d1"], "devices listed")
    expect(reader.get(f"{base}/devices/d1"), 200, "get a device")
    expect(reader.get(f"{base}/devices/d1/events"), 200, "a device's events")
    insufficient(reader.post(f"{base}/devices", {"id": "d2"}), "devices:write", "create a device")
    insufficient(reader.patch(f"{base}/devices/d1", {"name": "x"}), "devices:write",
                 "change a device")
    insufficient(reader.get(f"{base}/tokens"), "tokens:read", "list tokens")
    insufficient(reader.get(f"{base}/devices/d1/credentials"), "credentials:read",
                 "list credentials")
    insufficient(reader.get(f"{base}/audit"), "audit:read", "read the audit log")
    # Routes that need no scope stay open to it.
    r = expect(reader.get("/api/v1/whoami"), 200, "whoami")
    eq(r.json["role"], "tenant_admin", "whoami role")
    # Nothing was created by the refused calls.
    r = expect(admin.get(f"{base}/devices"), 200, "devices after")
    eq([d["id"] for d in r.json["items"]], ["d1"], "devices after the refusals")


@suite.test()
def a_token_without_scopes_may_do_all_its_role_allows(env):
    tid, base, admin = env.tenant()
    for scopes in (None, []):
        body = {"name": "plain", "role": "tenant_admin"}
        if scopes is not None:
            body["scopes"] = scopes
        r = expect(admin.post(f"{base}/tokens", body), 201, f"token, scopes {scopes}")
        eq(r.json["scopes"], [], "no scopes recorded")
        plain = env.api.as_token(r.json["token"])
        expect(plain.get(f"{base}/tokens"), 200, "list tokens")
        expect(plain.post(f"{base}/devices", {}), 201, "create a device")
        expect(plain.get(f"{base}/audit"), 200, "audit log")


@suite.test()
def scopes_never_widen_the_role(env):
    tid, base, admin = env.tenant()
    viewer = env.token(admin, base, "viewer", ["devices:read", "devices:write"], "viewer")
    p = expect_problem(viewer.post(f"{base}/devices", {"id": "v1"}), 403, "viewer creates",
                       "forbidden")
    check("operator" in p["detail"], f"the role is what is missing: {p}")
    expect(viewer.get(f"{base}/devices"), 200, "viewer lists")


@suite.test()
def a_scoped_token_hands_on_only_its_own_scopes(env):
    tid, base, admin = env.tenant()
    minter = env.token(admin, base, "tenant_admin", ["tokens:write", "devices:read"], "minter")
    for body, what in (({"name": "x", "role": "viewer"}, "no scopes (all the role allows)"),
                       ({"name": "x", "role": "viewer", "scopes": []}, "empty scopes"),
                       ({"name": "x", "role": "viewer", "scopes": ["devices:write"]},
                        "a scope it lacks"),
                       ({"name": "x", "role": "viewer", "scopes": ["devices:read", "audit:read"]},
                        "one scope of two it lacks")):
        expect_problem(minter.post(f"{base}/tokens", body), 403, what, "insufficient-scope")
    r = expect(minter.post(f"{base}/tokens", {"name": "narrow", "role": "viewer",
                                              "scopes": ["devices:read"]}), 201, "within its own")
    eq(r.json["scopes"], ["devices:read"], "scopes of the new token")


@suite.test()
def unknown_scope_words_are_refused_at_creation(env):
    tid, base, admin = env.tenant()
    for words in (["devices"], ["devices:read", "devices:delete"], ["a"], ["DEVICES:READ"]):
        bad = [w for w in words if w != "devices:read"][0]
        for path, body in ((f"{base}/tokens", {"name": "x", "role": "viewer", "scopes": words}),
                           (f"{base}/oauth-clients", {"name": "x", "role": "viewer",
                                                      "scopes": words}),
                           ("/api/v1/tokens", {"name": "x", "scopes": words})):
            api = env.api if path == "/api/v1/tokens" else admin
            p = expect_problem(api.post(path, body), 400, f"{path} {words}", "invalid")
            check(bad in p["detail"], f"{path}: the detail names {bad!r}: {p['detail']}")
    # Every word a route needs is accepted: the vocabulary is exactly the routes' scopes.
    routes = drover_routes(env.binary, with_scope=True)
    unlisted = [f"{m} {p}" for m, p, _, s in routes if s == "?"]
    eq(unlisted, [], "routes missing from src/api/scopes.def")
    words = sorted({s for _, _, _, s in routes if s not in ("none", "?")})
    check("devices:read" in words and "audit:read" in words, f"vocabulary: {words}")
    for w in words:
        r = expect(admin.post(f"{base}/tokens", {"name": w, "role": "viewer", "scopes": [w]}),
                   201, f"a token with {w}")
        eq(r.json["scopes"], [w], "word recorded")
    # ... and all of them in one token (the whole vocabulary fits what a token stores).
    r = expect(admin.post(f"{base}/tokens", {"name": "all-words", "role": "tenant_admin",
                                             "scopes": words}), 201, "a token with every word")
    eq(sorted(r.json["scopes"]), words, "every word recorded")
    everything = admin.as_token(r.json["token"])
    expect(everything.get(f"{base}/devices"), 200, "the token with every word works")



# -- OAuth ---------------------------------------------------------------------------------------

@suite.test()
def oauth_client_scopes_are_enforced(env):
    tid, base, admin = env.tenant()
    expect(admin.post(f"{base}/devices", {"id": "d1"}), 201, "device")
    r = expect(admin.post(f"{base}/oauth-clients", {"name": "reader", "role": "tenant_admin",
                                                    "scopes": ["devices:read"]}), 201, "client")
    scope, reader = env.access_token(r.json)
    eq(scope, "devices:read", "granted scope")
    expect(reader.get(f"{base}/devices"), 200, "JWT lists devices")
    insufficient(reader.post(f"{base}/devices", {"id": "d2"}), "devices:write", "JWT creates")
    insufficient(reader.get(f"{base}/tokens"), "tokens:read", "JWT lists tokens")

    # Narrowed at the token endpoint: the claim, not the client's registration, is held.
    r = expect(admin.post(f"{base}/oauth-clients", {"name": "rw", "role": "operator",
                                                    "scopes": ["devices:read", "devices:write"]}),
               201, "read-write client")
    rw = r.json
    scope, narrow = env.access_token(rw, "devices:read")
    eq(scope, "devices:read", "narrowed scope")
    insufficient(narrow.post(f"{base}/devices", {"id": "d3"}), "devices:write",
                 "narrowed JWT creates")
    scope, full = env.access_token(rw)
    eq(scope, "devices:read devices:write", "all the client's scopes when none asked")
    expect(full.post(f"{base}/devices", {"id": "d3"}), 201, "full JWT creates")

    # A client without scopes may do all its role allows, or narrow to vocabulary words.
    r = expect(admin.post(f"{base}/oauth-clients", {"name": "plain", "role": "operator"}), 201,
               "plain client")
    plain = r.json
    scope, any_tok = env.access_token(plain)
    eq(scope, "", "no scope")
    expect(any_tok.post(f"{base}/devices", {"id": "d4"}), 201, "unscoped JWT creates")
    scope, narrowed = env.access_token(plain, "devices:read")
    eq(scope, "devices:read", "an unscoped client narrows")
    insufficient(narrowed.post(f"{base}/devices", {"id": "d5"}), "devices:write",
                 "narrowed unscoped JWT creates")
    basic = base64.b64encode(f"{plain['client_id']}:{plain['client_secret']}".encode()).decode()
    r = env.api.post("/oauth/token", raw="grant_type=client_credentials&scope=devices%3Aeat",
                     ctype=FORM, token=None, headers={"Authorization": "Basic " + basic})
    expect(r, 400, "a word outside the vocabulary")
    eq(r.json.get("error"), "invalid_scope", "error")


# -- platform tokens -------------------------------------------------------------------------------

@suite.test()
def platform_tokens_list_create_revoke(env):
    me = expect(env.api.get("/api/v1/whoami"), 200, "whoami").json["token"]
    r = expect(env.api.get("/api/v1/tokens"), 200, "list")
    items = r.json["items"]
    check(any(t["id"] == me for t in items), f"the bootstrap token is listed: {items}")
    for t in items:
        eq(t["tenant"], None, "platform tokens have no tenant")
        eq(t["role"], "platform_admin", "role")
        check("token" not in t and "sha256" not in t, f"no secret in the list: {t}")

    r = expect(env.api.post("/api/v1/tokens", {"name": "second", "scopes": [],
                                               "expires_at": "2999-01-01T00:00:00Z"}), 201,
               "create")
    eq(r.header("Cache-Control"), "no-store", "Cache-Control")
    new = r.json
    eq(r.header("Location"), f"/api/v1/tokens/{new['id']}", "Location")
    check(new["token"].startswith("drv_"), f"secret shown once: {new}")
    eq((new["tenant"], new["role"], new["name"]), (None, "platform_admin", "second"), "metadata")
    second = env.api.as_token(new["token"])
    r = expect(second.get("/api/v1/whoami"), 200, "the new token works")
    eq((r.json["role"], r.json.get("tenant")), ("platform_admin", None), "whoami")
    expect(second.get("/api/v1/tenants"), 200, "it is a platform admin")
    listed = [t for t in expect(env.api.get("/api/v1/tokens", query={"limit": "1000"}), 200,
                                "list").json["items"] if t["id"] == new["id"]]
    eq(len(listed), 1, "listed once")
    check("token" not in listed[0], "the secret is not listed")
    expect_problem(env.api.post("/api/v1/tokens", {"name": "x", "role": "viewer"}), 400,
                   "a role field", "invalid")
    expect_problem(env.api.post("/api/v1/tokens", {"name": "x", "expires_at": "2001-01-01T00:00:00Z"}),
                   400, "expiry in the past", "invalid")

    # The token making the request cannot revoke itself...
    expect_problem(second.delete(f"/api/v1/tokens/{new['id']}"), 409, "self-revocation",
                   "self-revocation")
    expect(second.get("/api/v1/whoami"), 200, "still works after the refused self-revocation")
    # ...another platform token can, and twice is harmless.
    expect(env.api.delete(f"/api/v1/tokens/{new['id']}"), 204, "revoke")
    expect(env.api.delete(f"/api/v1/tokens/{new['id']}"), 204, "revoke again")
    expect_problem(second.get("/api/v1/whoami"), 401, "revoked token", "unauthorized")
    listed = [t for t in env.api.get("/api/v1/tokens", query={"limit": "1000"}).json["items"]
              if t["id"] == new["id"]]
    check(listed and listed[0]["revoked_at"], f"revoked_at set: {listed}")
    expect(env.api.delete("/api/v1/tokens/tok_nosuchtoken"), 404, "unknown token")

    # Tenant tokens are neither listed nor revocable here, and cannot use these routes.
    tid, base, admin = env.tenant()
    tenant_tok = expect(admin.get("/api/v1/whoami"), 200, "tenant whoami").json["token"]
    check(all(t["id"] != tenant_tok for t in
              env.api.get("/api/v1/tokens", query={"limit": "1000"}).json["items"]),
          "a tenant token in the platform list")
    expect(env.api.delete(f"/api/v1/tokens/{tenant_tok}"), 404, "a tenant token's id")
    expect(admin.get("/api/v1/whoami"), 200, "the tenant token still works")
    for m, p, body in (("GET", "/api/v1/tokens", None), ("POST", "/api/v1/tokens", {"name": "x"}),
                       ("DELETE", f"/api/v1/tokens/{me}", None), ("GET", "/api/v1/audit", None)):
        expect_problem(admin.request(m, p, body), 403, f"tenant admin {m} {p}", "forbidden")
    expect(env.api.get("/api/v1/whoami"), 200, "the bootstrap token survived")


@suite.test()
def scoped_platform_token(env):
    r = expect(env.api.post("/api/v1/tokens", {"name": "auditor", "scopes": ["audit:read"]}), 201,
               "scoped platform token")
    auditor = env.api.as_token(r.json["token"])
    expect(auditor.get("/api/v1/audit"), 200, "reads the platform audit log")
    insufficient(auditor.get("/api/v1/tokens"), "tokens:read", "lists platform tokens")
    insufficient(auditor.post("/api/v1/tenants", {"name": "x"}), "tenants:write",
                 "creates a tenant")
    insufficient(auditor.post("/api/v1/signing-keys/rotate"), "signing-keys:write",
                 "rotates the key")
    expect(env.api.delete(f"/api/v1/tokens/{r.json['id']}"), 204, "revoke")


# -- the platform audit log -------------------------------------------------------------------------

@suite.test()
def platform_audit_records_platform_actions(env):
    me = expect(env.api.get("/api/v1/whoami"), 200, "whoami").json["token"]
    tid, base, admin = env.tenant()
    r = expect(env.api.post("/api/v1/tokens", {"name": "audited"}), 201, "platform token")
    tok_id = r.json["id"]
    expect(env.api.delete(f"/api/v1/tokens/{tok_id}"), 204, "revoke it")
    kid = expect(env.api.post("/api/v1/signing-keys/rotate"), 200, "rotate").json["kid"]
    expect(env.api.delete(base), 204, "delete the tenant")

    items, cursor, pages = [], None, 0
    while True:
        q = {"limit": "2"}
        if cursor:
            q["cursor"] = cursor
        page = expect(env.api.get("/api/v1/audit", query=q), 200, "audit page").json
        items += page["items"]
        cursor = page["next_cursor"]
        pages += 1
        if not cursor or pages > 500:
            break
    ids = [i["id"] for i in items]
    eq(len(ids), len(set(ids)), "records repeated across pages")
    check(pages > 1, "pagination was exercised")
    for i in items:
        eq(i["tenant"], None, f"a tenant record in the platform log: {i}")
        check("127.0.0.1" in (i.get("source") or ""), f"source of {i}")
        check(i.get("actor"), f"actor of {i}")

    def find(action, target):
        hits = [i for i in items if i["action"] == action and i["target"] == target]
        check(hits, f"no {action} on {target} in {[(i['action'], i['target']) for i in items]}")
        eq(hits[0]["actor"], me, f"{action}: actor")
        return hits[0]

    created = find("tenant.create", base)
    find("token.create", f"/api/v1/tokens/{tok_id}")
    find("token.revoke", f"/api/v1/tokens/{tok_id}")
    deleted = find("tenant.delete", base)
    rotated = [i for i in items if i["action"] == "signing_key.rotate"]
    check(any((i.get("detail") or {}).get("kid") == kid for i in rotated), f"rotation: {rotated}")
    check(ids.index(deleted["id"]) < ids.index(created["id"]), "newest first")
    # The tenant's own actions stay in its own log.
    check(not any(i["action"] == "token.create" and i["target"].startswith(base) for i in items),
          "a tenant token's creation in the platform log")
    # from/to as for the tenant log.
    eq(env.api.get("/api/v1/audit", query={"from": "2999-01-01T00:00:00Z"}).json["items"], [],
       "nothing in the future")
    eq(env.api.get("/api/v1/audit", query={"to": "2000-01-01T00:00:00Z"}).json["items"], [],
       "nothing before 2000")
    expect_problem(env.api.get("/api/v1/audit", query={"from": "yesterday"}), 400, "bad from",
                   "invalid")


if __name__ == "__main__":
    suite.main(setup)
