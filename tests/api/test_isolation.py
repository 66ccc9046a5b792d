#!/usr/bin/python3
"""Tenant isolation of the REST API: tenant A's tokens learn and change nothing of tenant B.

Two tenants, A and B, each with devices (one decommissioned), credentials, a user
and tokens of every tenant role.  For every route of `drover routes` that has a
{tenant}, and for every method, each of A's tokens calls it

  - with B in the path and B's resource ids,
  - with A in the path and B's resource ids (where the route names a resource),
  - with A in the path, A's device and B's credential id,
  - with A in the path and A's own ids (GET only): the answer may succeed but must
    not mention B,

and a leak is any 2xx/3xx answer to the first three, or any answer (body or
headers) that contains one of B's ids, names or secrets.  Another tenant's path
must answer 404 (or 405 for a method the path lacks), exactly as a missing
tenant.  Tenant tokens get 403 on platform routes.  Afterwards B is checked to be
exactly as it was, and its tokens still work.

Usage: test_isolation.py --drover BINARY
Prints "isolation: N attempts, 0 leaks" and then "N passed, N failed".
"""
import base64
import contextlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from apilib import (Suite, check, drover_routes, eq, expect, fill, registration_code,  # noqa: E402
                    start_server, verification_certificate)

suite = Suite("test_isolation")
METHODS = ("GET", "POST", "PATCH", "DELETE", "PUT")
def make_ca(cn):
    """A self-signed device CA: its certificate, its key and an empty CRL it issued (PEM
    texts), with the openssl CLI."""
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        def run(*args):
            subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", f"/CN={cn}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        with open(os.path.join(tmp, "ca.cnf"), "w") as f:
            f.write("[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ndefault_md = sha256\n"
                    "certificate = ca.pem\nprivate_key = ca.key\ndefault_crl_days = 7\n")
        open(os.path.join(tmp, "index.txt"), "w").close()
        run("ca", "-config", "ca.cnf", "-gencrl", "-out", "crl.pem")
        out = []
        for name in ("ca.pem", "ca.key", "crl.pem"):
            with open(os.path.join(tmp, name)) as f:
                out.append(f.read())
        return out


FINGERPRINT_B = "b7" * 32
FINGERPRINT_A = "a5" * 32


class Tenant:
    """One tenant's fixtures, made through the API by the platform admin and the tenant's admin."""

    def __init__(self, p, tid, tag):
        self.id = tid
        self.tag = tag
        self.name = f"Tenant {tag}"
        expect(p.post("/api/v1/tenants", {"id": tid, "name": self.name}), 201, f"tenant {tid}")
        base = f"/api/v1/tenants/{tid}"
        self.tokens = {}   # role -> (id, secret)
        for role in ("tenant_admin", "operator", "viewer"):
            r = expect(p.post(f"{base}/tokens", {"name": f"{role}-{tag}", "role": role}), 201,
                       f"{tid} {role} token")
            self.tokens[role] = (r.json["id"], r.json["token"])
        admin = p.as_token(self.tokens["tenant_admin"][1])
        self.admin = admin
        r = expect(admin.post(f"{base}/tokens", {"name": f"spare-{tag}", "role": "viewer"}), 201,
                   "spare token")
        self.spare_token = (r.json["id"], r.json["token"])
        self.device = f"dev-{tag}-1"
        self.device2 = f"dev-{tag}-2"
        self.device_name = f"Device {tag} one"
        expect(admin.post(f"{base}/devices", {"id": self.device, "name": self.device_name,
                                              "tags": {"owner": f"tagval-{tag}"},
                                              "attributes": {"serial": f"serial-{tag}"}}), 201,
               "device")
        expect(admin.post(f"{base}/devices", {"id": self.device2, "name": f"Device {tag} two"}), 201,
               "device 2")
        expect(admin.post(f"{base}/devices/{self.device2}/decommission"), 200, "decommission 2")
        r = expect(admin.post(f"{base}/devices/{self.device}/credentials", {"kind": "secret"}), 201,
                   "secret credential")
        self.cred = r.json["id"]
        self.cred_secret = r.json["secret"]
        fp = FINGERPRINT_B if tag.startswith("b") else FINGERPRINT_A
        r = expect(admin.post(f"{base}/devices/{self.device}/credentials",
                              {"kind": "x509", "fingerprint": fp}), 201, "x509 credential")
        self.cred2 = r.json["id"]
        self.user = f"user-{tag}"
        self.user_name = f"User {tag}"
        self.email = f"{tag}@example.org"
        expect(admin.post(f"{base}/users", {"id": self.user, "name": self.user_name,
                                            "email": self.email, "role": "operator"}), 201, "user")
        # A profile the device uses, a static group it is in, and a dynamic group.
        self.profile, self.group, self.group_dyn = f"prof-{tag}", f"grp-{tag}", f"dyn-{tag}"
        expect(admin.post(f"{base}/profiles", {"id": self.profile, "name": f"Profile {tag}"}), 201,
               "profile")
        expect(admin.post(f"{base}/groups", {"id": self.group, "name": f"Group {tag}",
                                             "kind": "static"}), 201, "group")
        expect(admin.post(f"{base}/groups", {"id": self.group_dyn, "name": f"Dyn {tag}",
                                             "kind": "dynamic", "query": {"tag": "owner"}}), 201,
               "dynamic group")
        expect(admin.patch(f"{base}/devices/{self.device}", {"profile": self.profile,
                                                             "groups": [self.group]}), 200,
               "device in profile and group")
        # An OAuth client, and its access token (a JWT) as one more of the tenant's tokens.
        r = expect(admin.post(f"{base}/oauth-clients", {"name": f"client-{tag}", "role": "operator"}),
                   201, "OAuth client")
        self.client = (r.json["client_id"], r.json["client_secret"])
        basic = base64.b64encode(f"{self.client[0]}:{self.client[1]}".encode()).decode()
        r = expect(p.post("/oauth/token", raw="grant_type=client_credentials", token=None,
                          ctype="application/x-www-form-urlencoded",
                          headers={"Authorization": "Basic " + basic}), 200, "access token")
        self.tokens["oauth_operator"] = (self.client[0], r.json["access_token"])
        # A device CA (ADR-0011), its own per tenant, with a CRL.
        ca_pem, _, self.crl = make_ca(f"CA {tag}")
        r = expect(admin.post(f"{base}/cas", {"certificate_pem": ca_pem,
                                              "name": f"ca-{tag}"}), 201, "device CA")
        self.ca = r.json["id"]
        expect(admin.request("PUT", f"{base}/cas/{self.ca}/crl", {"crl_pem": self.crl}), 200,
               "the device CA's CRL")
        # A claim CA (registered with proof of possession of its key: the tenant's
        # registration code signed by it) and a provisioning template naming it
        # (docs/provisioning.md).
        self.code = registration_code(admin, tid)
        claim_pem, claim_key, _ = make_ca(f"Claim CA {tag}")
        r = expect(admin.post(f"{base}/cas", {
            "certificate_pem": claim_pem, "name": f"claim-{tag}", "purpose": "claim",
            "verification_certificate_pem": verification_certificate(claim_pem, claim_key,
                                                                     self.code)}), 201,
            "claim CA")
        self.claim_ca = r.json["id"]
        self.template = f"tpl-{tag}"
        expect(admin.post(f"{base}/provisioning-templates",
                          {"id": self.template, "claim_ca": self.claim_ca, "profile": self.profile,
                           "device_id_prefix": f"pfx-{tag}-", "tags": {"marker": f"tplval-{tag}"}}),
               201, "provisioning template")
        # A named shadow with a marker in it, a command and a group command (ADR-0017/0018).
        self.shadow = f"shadow-{tag}"
        expect(admin.patch(f"{base}/devices/{self.device}/shadows/{self.shadow}",
                           {"state": {"desired": {"marker": f"shadowval-{tag}"}}}), 200, "shadow")
        r = expect(admin.post(f"{base}/devices/{self.device}/commands",
                              {"name": f"cmd-{tag}", "params": {"marker": f"cmdval-{tag}"}}), 202,
                   "command")
        self.command = r.json["id"]
        r = expect(admin.post(f"{base}/groups/{self.group}/commands", {"name": f"gcmd-{tag}"}), 202,
                   "group command")
        self.batch = r.json["id"]

    def params(self):
        return {"tenant": self.id, "device": self.device, "user": self.user,
                "token": self.spare_token[0], "credential": self.cred, "client": self.client[0],
                "profile": self.profile, "group": self.group, "ca": self.ca,
                "shadow": self.shadow, "command": self.command, "batch": self.batch,
                "template": self.template,
                # not path parameters: the claim CA a template body names and the CRL a
                # CRL body carries (body_for)
                "claim_ca": self.claim_ca, "crl_pem": self.crl}

    def markers(self):
        """Strings that only B's data contains: none may reach A."""
        m = [self.id, self.name, self.device, self.device2, self.device_name, self.user,
             self.user_name, self.email, self.cred, self.cred2, self.cred_secret, f"tagval-{self.tag}",
             f"serial-{self.tag}", self.spare_token[0], self.spare_token[1], self.client[0],
             self.client[1], self.profile, self.group, self.group_dyn, self.ca, f"ca-{self.tag}",
             self.shadow, f"shadowval-{self.tag}", self.command, f"cmd-{self.tag}",
             f"cmdval-{self.tag}", self.batch, f"gcmd-{self.tag}", self.claim_ca,
             f"claim-{self.tag}", self.template, f"pfx-{self.tag}-", f"tplval-{self.tag}",
             self.code]
        for tid, secret in self.tokens.values():
            m += [tid, secret]
        return m

    def snapshot(self, p):
        base = f"/api/v1/tenants/{self.id}"
        t = expect(p.get(base), 200, "tenant").json
        devices = expect(p.get(f"{base}/devices", query={"limit": "1000"}), 200, "devices").json["items"]
        users = expect(p.get(f"{base}/users", query={"limit": "1000"}), 200, "users").json["items"]
        tokens = expect(p.get(f"{base}/tokens", query={"limit": "1000"}), 200, "tokens").json["items"]
        profiles = expect(p.get(f"{base}/profiles", query={"limit": "1000"}), 200,
                          "profiles").json["items"]
        groups = expect(p.get(f"{base}/groups", query={"limit": "1000"}), 200, "groups").json["items"]
        shadows = expect(p.get(f"{base}/devices/{self.device}/shadows"), 200,
                         "shadows").json["items"]
        commands = expect(p.get(f"{base}/commands", query={"limit": "1000"}), 200,
                          "commands").json["items"]
        cas = expect(p.get(f"{base}/cas", query={"limit": "1000"}), 200, "CAs").json["items"]
        templates = expect(p.get(f"{base}/provisioning-templates", query={"limit": "1000"}), 200,
                           "provisioning templates").json["items"]
        creds = {}
        for d in devices:
            creds[d["id"]] = expect(p.get(f"{base}/devices/{d['id']}/credentials"), 200,
                                    "credentials").json["items"]
        return {
            "tenant": (t["name"], t["status"], t["version"]),
            "devices": sorted((d["id"], d["version"], d.get("status"), d.get("name")) for d in devices),
            "users": sorted((u["id"], u["version"], u.get("name"), u.get("role")) for u in users),
            "tokens": sorted((k["id"], k.get("revoked_at")) for k in tokens),
            "credentials": {k: sorted((c["id"], c.get("revoked_at")) for c in v) for k, v in creds.items()},
            "profiles": sorted((x["id"], x["version"]) for x in profiles),
            "groups": sorted((x["id"], x["version"]) for x in groups),
            "shadows": sorted((x["name"], x["version"]) for x in shadows),
            "commands": sorted((x["id"], x["state"], x["attempts"]) for x in commands),
            "cas": sorted((x["id"], x["purpose"], x["revoked_at"], str(x["crl"])) for x in cas),
            "registration_code": registration_code(p, self.id),
            "templates": sorted((x["id"], x["version"], x["enabled"]) for x in templates),
        }


class Env:
    def __init__(self, binary, d, p):
        self.binary = binary
        self.d = d
        self.p = p
        self.routes = drover_routes(binary)
        self.a = Tenant(p, "alpha-iso", "ak4x")
        self.b = Tenant(p, "bravo-iso", "bz7q")
        self.b_before = self.b.snapshot(p)
        self.attempts = 0
        self.leaks = []
        self.wrong = []

    def alive(self):
        return self.d.alive()


@contextlib.contextmanager
def setup(binary):
    with start_server(binary) as (d, p):
        yield Env(binary, d, p)


def body_for(pattern, method, params):
    if method not in ("POST", "PATCH", "PUT"):
        return None
    if pattern.endswith("/tokens"):
        return {"name": "probe", "role": "viewer"}
    if pattern.endswith("/users"):
        return {"id": "probe-user", "name": "Probe", "role": "viewer"}
    if pattern.endswith("/devices"):
        return {"id": "probe-dev", "name": "Probe"}
    if pattern.endswith("/credentials"):
        return {"kind": "secret", "secret": "probe-secret-0123456789"}
    if pattern.endswith("/decommission"):
        return {"purge": True}
    if pattern.endswith("/oauth-clients"):
        return {"name": "probe", "role": "viewer"}
    if pattern.endswith("/profiles"):
        return {"id": "probe-profile", "name": "Probe"}
    if pattern.endswith("/groups"):
        return {"id": "probe-group", "name": "Probe", "kind": "static"}
    if pattern.endswith("/cas"):
        return {"certificate_pem": "probe"}
    if pattern.endswith("/crl"):
        # A CRL that parses (B's own), so that only the CA lookup can refuse it.
        return {"crl_pem": params["crl_pem"]}
    if pattern.endswith("/provisioning-templates"):
        return {"id": "probe-template", "claim_ca": params["claim_ca"]}
    if pattern.endswith("/device-imports"):
        return {"devices": [{"id": "probe-import", "groups": ["grp-bz7q"], "profile": "prof-bz7q"}]}
    return {"name": "Pwned"}


def leaked_markers(r, markers):
    text = r.body.decode(errors="replace")
    heads = " ".join(f"{k}: {v}" for k, v in r.headers)
    return [m for m in markers if m and (m in text or m in heads)]


def attempt(env, api, who, method, pattern, params, variant):
    path = fill(pattern, **params)
    r = api.request(method, path, body_for(pattern, method, params))
    env.attempts += 1
    found = leaked_markers(r, env.b.markers())
    desc = f"{who} {method} {path} [{variant}] -> {r.status}"
    if variant != "own" and 200 <= r.status < 400:
        env.leaks.append(f"{desc}: success on another tenant's resource: {r.body[:200]!r}")
    elif found:
        env.leaks.append(f"{desc}: answer mentions B: {found}")
    return r


@suite.test()
def cross_tenant_requests_leak_nothing(env):
    a, b = env.a, env.b
    tenant_patterns = sorted({p for _, p, _ in env.routes if "{tenant}" in p})
    check(tenant_patterns, "no route has {tenant}")
    methods_of = {}
    for m, p, _ in env.routes:
        methods_of.setdefault(p, set()).add(m)
    for role in a.tokens:  # every tenant role, and an OAuth access token
        api = env.p.as_token(a.tokens[role][1])
        who = f"A:{role}"
        for pattern in tenant_patterns:
            has_resource = pattern.count("{") > 1
            for method in METHODS:
                # B in the path: the router's wall answers 404, as for a missing tenant.
                r = attempt(env, api, who, method, pattern, b.params(), "B path")
                want = 404 if method in methods_of[pattern] else 405
                if r.status != want:
                    env.wrong.append(f"{who} {method} {fill(pattern, **b.params())}: {r.status}, "
                                     f"want {want}")
                if has_resource:
                    # A in the path, B's ids: the store's scope makes them missing.
                    mixed = dict(b.params(), tenant=a.id)
                    attempt(env, api, who, method, pattern, mixed, "A path, B ids")
                    if "{credential}" in pattern:
                        mixed2 = dict(a.params(), credential=b.cred)
                        attempt(env, api, who, method, pattern, mixed2, "A device, B credential")
                        mixed3 = dict(a.params(), credential=b.cred2)
                        attempt(env, api, who, method, pattern, mixed3, "A device, B x509")
                    if "{device}" in pattern:
                        attempt(env, api, who, method, pattern, dict(mixed, device=b.device2),
                                "A path, B decommissioned device")
                if method == "GET":
                    attempt(env, api, who, method, pattern, a.params(), "own")
        # A's own lists and audit with filters aimed at B's values.
        for q in ({"tag": "owner"}, {"tag": f"owner=tagval-{b.tag}"},
                  {"attribute": f"serial=serial-{b.tag}"}, {"name_prefix": "Device"},
                  {"status": "decommissioned"}):
            r = api.get(f"/api/v1/tenants/{a.id}/devices", query=q)
            env.attempts += 1
            found = leaked_markers(r, b.markers())
            if found:
                env.leaks.append(f"{who} GET A devices {q}: mentions B: {found}")
    for w in env.wrong:
        print("  WALL: " + w)
    for leak in env.leaks:
        print("  LEAK: " + leak)
    print(f"isolation: {env.attempts} attempts, {len(env.leaks)} leaks", flush=True)
    eq(len(env.leaks), 0, "leaks")
    eq(len(env.wrong), 0, "answers to another tenant's path that are not 404/405")


@suite.test()
def tenant_tokens_never_reach_platform_routes(env):
    a, b = env.a, env.b
    bad = []
    for role in a.tokens:  # every tenant role, and an OAuth access token
        api = env.p.as_token(a.tokens[role][1])
        for m, p, least in env.routes:
            if least != "platform_admin":
                continue
            body = {"name": "Pwned", "id": "pwned-tenant"} if m in ("POST", "PATCH") else None
            for tenant in ([a.id, b.id] if "{tenant}" in p else [None]):
                # Other path parameters (the platform token of DELETE /api/v1/tokens/{token})
                # get A's ids: a tenant token must be refused before anything is looked up.
                path = fill(p, **dict(a.params(), tenant=tenant))
                r = api.request(m, path, body)
                env.attempts += 1
                want = 404 if tenant == b.id else 403
                if r.status != want:
                    bad.append(f"A:{role} {m} {path}: {r.status}, want {want}: {r.body[:200]!r}")
                found = leaked_markers(r, b.markers())
                if found:
                    bad.append(f"A:{role} {m} {path}: mentions B: {found}")
    for x in bad:
        print("  " + x)
    check(not bad, f"{len(bad)} platform routes answered a tenant token wrongly")
    expect(env.p.get("/api/v1/tenants/pwned-tenant", token=env.p.token), 404, "no tenant was created")


@suite.test()
def tenant_b_is_unchanged_and_its_tokens_work(env):
    b = env.b
    after = b.snapshot(env.p)
    for k in env.b_before:
        eq(after[k], env.b_before[k], f"B's {k} after A's attempts")
    for role, (tid, secret) in b.tokens.items():
        r = expect(env.p.get("/api/v1/whoami", token=secret), 200, f"B's {role} token")
        eq(r.json.get("tenant"), b.id, "B's token tenant")
    expect(env.p.get("/api/v1/whoami", token=b.spare_token[1]), 200, "B's spare token")
    audit = expect(b.admin.get(f"/api/v1/tenants/{b.id}/audit", query={"limit": "1000"}), 200,
                   "B's audit log").json["items"]
    a_ids = {tid for tid, _ in env.a.tokens.values()}
    by_a = [x for x in audit if x.get("actor") in a_ids]
    eq(by_a, [], "B's audit log has actions by A's tokens")
    print(f"isolation: {env.attempts} attempts, {len(env.leaks)} leaks", flush=True)


@suite.test()
def ids_are_per_tenant_so_existence_does_not_leak(env):
    """Creating, in A, a device or user with an id B uses must work like any free id:
    a 409 would tell A that the id exists elsewhere."""
    a, b = env.a, env.b
    base = f"/api/v1/tenants/{a.id}"
    r = a.admin.post(f"{base}/devices", {"id": b.device})
    expect(r, 201, "A creates a device with B's device id")
    eq(r.json.get("tenant"), a.id, "tenant of the new device")
    check(b.device_name not in r.text, "A's new device shows B's data")
    expect(a.admin.post(f"{base}/users", {"id": b.user, "name": "Mine", "role": "viewer"}), 201,
           "A creates a user with B's user id")
    r = expect(a.admin.get(f"{base}/devices/{b.device}/credentials"), 200, "credentials of A's twin")
    eq(r.json["items"], [], "A's twin device has B's credentials")
    eq(b.snapshot(env.p)["devices"], env.b_before["devices"], "B's devices")
    r = expect(a.admin.post(f"{base}/provisioning-templates",
                            {"id": b.template, "claim_ca": a.claim_ca}), 201,
               "A creates a template with B's template id")
    check(b.claim_ca not in r.text, "A's new template shows B's claim CA")
    eq(b.snapshot(env.p)["templates"], env.b_before["templates"], "B's templates")


@suite.test()
def a_template_cannot_name_another_tenants_claim_ca(env):
    """B's claim CA is as unknown to A as a CA that does not exist: the same 400, word for word."""
    a, b = env.a, env.b
    base = f"/api/v1/tenants/{a.id}/provisioning-templates"
    theirs = a.admin.post(base, {"id": "probe-b-claim", "claim_ca": b.claim_ca})
    nobody = a.admin.post(base, {"id": "probe-b-claim", "claim_ca": "ca_" + "a" * 20})
    expect(theirs, 400, "a template naming B's claim CA")
    expect(nobody, 400, "a template naming no CA")
    eq(theirs.json.get("detail"), nobody.json.get("detail"), "the answers' detail")
    expect(a.admin.post(base, {"id": "probe-a-claim", "claim_ca": a.claim_ca}), 201,
           "a template naming A's own claim CA")
    expect(a.admin.patch(f"{base}/probe-a-claim", {"claim_ca": b.claim_ca}), 400,
           "a change to B's claim CA")
    eq(b.snapshot(env.p)["templates"], env.b_before["templates"], "B's templates")


if __name__ == "__main__":
    suite.main(setup)
