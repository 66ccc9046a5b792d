#!/usr/bin/python3
"""Device profiles, groups (static and dynamic) and sorted device lists, against a
live `drover serve`.

Profiles: CRUD with ETags, the defaults written into the document, validation of
topic templates and ACL rules (own subtree or subscriptions under broadcast/,
nothing else), roles; a device naming a missing profile is refused, a profile in
use cannot be deleted.  Groups: static membership through the device's "groups"
(existing static groups only), dynamic membership by query (tag, attribute, name
prefix, profile), member listings with cursor pagination and sort, the in-use
rules for deleting or turning a static group dynamic.  Sorting: every sort order
of GET .../devices over 250 devices, page by page, against the order computed
here, and the refusals (unknown sort, a cursor of another sort).

Usage: test_profiles_groups.py --drover BINARY [-k NAME]
Ends with "N passed, N failed".
"""
import contextlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from apilib import (Suite, check, eq, expect, expect_problem, start_server)  # noqa: E402

suite = Suite("test_profiles_groups")


class Env:
    def __init__(self, binary, d, api):
        self.binary = binary
        self.d = d
        self.api = api
        self.n = 0

    def alive(self):
        return self.d.alive()

    def tenant(self, prefix, **extra):
        """A fresh tenant; an Api per role (tenant_admin, operator, viewer)."""
        self.n += 1
        tid = f"{prefix}-{self.n}"
        body = {"id": tid, "name": f"Tenant {tid}"}
        body.update(extra)
        expect(self.api.post("/api/v1/tenants", body), 201, "create tenant")
        apis = {}
        for role in ("tenant_admin", "operator", "viewer"):
            r = expect(self.api.post(f"/api/v1/tenants/{tid}/tokens", {"name": role, "role": role}),
                       201, f"{role} token")
            apis[role] = self.api.as_token(r.json["token"])
        return tid, apis


@contextlib.contextmanager
def setup(binary):
    with start_server(binary) as (d, api):
        yield Env(binary, d, api)


def all_pages(api, path, limit, query=None):
    """Every item of a list, following next_cursor; also the number of pages."""
    items, cursor, pages = [], None, 0
    while True:
        q = dict(query or {})
        q["limit"] = str(limit)
        if cursor:
            q["cursor"] = cursor
        r = expect(api.get(path, query=q), 200, f"list {path} {q}")
        pages += 1
        items += r.json["items"]
        check(len(r.json["items"]) <= limit, f"page longer than {limit}")
        cursor = r.json["next_cursor"]
        if cursor is None:
            return items, pages
        check(pages < 10000, "pagination does not end")


def ids(items):
    return [d["id"] for d in items]


# -- profiles ---------------------------------------------------------------------------------

@suite.test()
def profile_crud_defaults_and_roles(env):
    tid, a = env.tenant("prof")
    base = f"/api/v1/tenants/{tid}/profiles"
    adm, op, view = a["tenant_admin"], a["operator"], a["viewer"]
    r = expect(adm.post(base, {"id": "sensor", "name": "Sensor"}), 201, "create")
    p = r.json
    eq((p["id"], p["tenant"], p["name"]), ("sensor", tid, "Sensor"), "profile")
    eq(p["decoder"], "json", "default decoder")
    eq(p["telemetry_topic"], "devices/{device}/telemetry", "default telemetry topic")
    eq(p["acl"], [{"access": "both", "topic": "devices/{device}/#"}], "default ACL")
    eq(r.header("Location"), f"{base}/sensor", "Location")
    etag = r.header("ETag")
    eq(etag, f'"{p["version"]}"', "ETag")

    full = {"id": "meter", "name": "Meter", "description": "Electricity meter",
            "decoder": "senml", "telemetry_topic": "devices/{device}/up/{tenant}",
            "transport": {"mqtt": {"max_qos": 1, "keepalive_max_s": 600}},
            "acl": [{"access": "publish", "topic": "devices/{device}/up/#"},
                    {"access": "subscribe", "topic": "devices/{device}/down/+"},
                    {"access": "subscribe", "topic": "broadcast/#"},
                    {"access": "both", "topic": "devices/{device}"}]}
    r = expect(adm.post(base, full), 201, "create with every field")
    for k, v in full.items():
        eq(r.json[k], v, f"stored {k}")

    eq(ids(expect(view.get(base), 200, "list").json["items"]), ["meter", "sensor"], "list by id")
    eq(ids(expect(view.get(base, query={"name_prefix": "Me"}), 200, "list").json["items"]),
       ["meter"], "name_prefix")
    expect(view.get(f"{base}/sensor", headers={"If-None-Match": etag}), 304, "If-None-Match")
    expect_problem(view.get(f"{base}/nothing"), 404, "missing profile")

    r = expect(adm.patch(f"{base}/sensor", {"decoder": "numeric",
                                            "acl": [{"access": "publish",
                                                     "topic": "devices/{device}/telemetry/+"}]},
                         ctype="application/merge-patch+json", headers={"If-Match": etag}),
               200, "patch")
    eq(r.json["decoder"], "numeric", "patched decoder")
    check(r.json["version"] > p["version"], "version raised")
    expect_problem(adm.patch(f"{base}/sensor", {"name": "Stale"}, headers={"If-Match": etag}), 412,
                   "stale If-Match", "version-mismatch")
    # The ACL must let devices publish the telemetry topic: with a json decoder, the
    # default topic has no key level, which devices/{device}/telemetry/+ does not cover.
    expect_problem(adm.patch(f"{base}/sensor", {"decoder": None}), 400,
                   "telemetry topic outside the ACL", "invalid")
    # null restores a default
    r = expect(adm.patch(f"{base}/sensor", {"decoder": None, "acl": None}), 200,
               "decoder and ACL back to their defaults")
    eq((r.json["decoder"], r.json["acl"]), ("json", p["acl"]), "defaults again")
    expect_problem(adm.patch(f"{base}/sensor", {"acl": None, "telemetry_topic": "devices/x/t"}), 400,
                   "telemetry topic of another device", "invalid")
    expect_problem(adm.patch(f"{base}/sensor", {"id": "other"}), 400, "id is immutable")

    # roles: viewers and operators read, only tenant admins write
    expect_problem(op.post(base, {"id": "x", "name": "X"}), 403, "operator creates", "forbidden")
    expect_problem(view.post(base, {"id": "x", "name": "X"}), 403, "viewer creates", "forbidden")
    expect_problem(op.patch(f"{base}/sensor", {"name": "X"}), 403, "operator patches", "forbidden")
    expect_problem(op.delete(f"{base}/sensor"), 403, "operator deletes", "forbidden")
    expect(op.get(f"{base}/sensor"), 200, "operator reads")

    expect(adm.delete(f"{base}/meter"), 204, "delete")
    expect_problem(adm.delete(f"{base}/meter"), 404, "delete twice")
    expect_problem(adm.post(base, {"id": "meter", "name": "Again"}), 409, "ids are never reused",
                   "exists")
    audit = expect(adm.get(f"/api/v1/tenants/{tid}/audit"), 200, "audit").json["items"]
    actions = {x["action"] for x in audit}
    check({"profile.create", "profile.update", "profile.delete"} <= actions, f"audit: {actions}")


@suite.test()
def profile_validation(env):
    tid, a = env.tenant("pval")
    base = f"/api/v1/tenants/{tid}/profiles"
    adm = a["tenant_admin"]

    def rule(access, topic):
        return {"access": access, "topic": topic}
    bad = [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x", "decoder": "xml"}, "decoder"),
        ({"name": "x", "colour": "red"}, "colour"),
        ({"name": "x", "version": 3}, "version"),
        ({"name": "x", "telemetry_topic": "devices/{device}/#"}, "telemetry_topic"),
        ({"name": "x", "telemetry_topic": "other/{device}"}, "telemetry_topic"),
        ({"name": "x", "telemetry_topic": "devices/{device}/{sensor}"}, "telemetry_topic"),
        ({"name": "x", "telemetry_topic": "devices/{device}/t", "acl": [rule("subscribe", "devices/{device}/#")]},
         "telemetry_topic"),
        ({"name": "x", "decoder": "numeric",
          "acl": [rule("publish", "devices/{device}/telemetry")]}, "numeric"),
        ({"name": "x", "acl": []}, "acl"),
        ({"name": "x", "acl": "devices/{device}/#"}, "acl"),
        ({"name": "x", "acl": [rule("publish", "devices/+/telemetry")]}, "devices/{device}/"),
        ({"name": "x", "acl": [rule("both", "#")]}, "devices/{device}/"),
        ({"name": "x", "acl": [rule("subscribe", "devices/#")]}, "devices/{device}/"),
        ({"name": "x", "acl": [rule("both", "devices/{device}x/y")]}, "devices/{device}/"),
        ({"name": "x", "acl": [rule("both", "devices/{device}/")]}, "devices/{device}/"),
        ({"name": "x", "acl": [rule("publish", "broadcast/all")]}, "broadcast/"),
        ({"name": "x", "acl": [rule("both", "broadcast/#")]}, "broadcast/"),
        ({"name": "x", "acl": [rule("subscribe", "broadcast/")]}, "broadcast/"),
        ({"name": "x", "acl": [rule("subscribe", "$SYS/#")]}, "devices/{device}/"),
        ({"name": "x", "acl": [rule("both", "devices/{device}/a#")]}, "filter"),
        ({"name": "x", "acl": [rule("both", "devices/{device}/{x}")]}, "placeholder"),
        ({"name": "x", "acl": [rule("read", "devices/{device}/#")]}, "access"),
        ({"name": "x", "acl": [{"topic": "devices/{device}/#"}]}, "access"),
        ({"name": "x", "acl": [dict(rule("both", "devices/{device}/#"), qos=1)]}, "qos"),
        ({"name": "x", "acl": ["devices/{device}/#"]}, "object"),
        ({"name": "x", "acl": [rule("both", "devices/{device}/x")] * 33}, "acl"),
        ({"name": "x", "transport": {"mqtt": {"max_qos": 3}}}, "transport"),
        ({"name": "x", "transport": {"mqtt": {"keepalive_max_s": 0}}}, "transport"),
        ({"name": "x", "transport": {"coap": {}}}, "transport"),
        ({"name": "x", "transport": {"mqtt": {"max_qos": "1"}}}, "transport"),
        ({"name": "x", "transport": []}, "transport"),
    ]
    for body, word in bad:
        p = expect_problem(adm.post(base, body), 400, f"create {body}", "invalid")
        check(word in p["detail"], f"{body}: detail {p['detail']!r} does not mention {word!r}")
    expect_problem(adm.post(base, raw="[1]", ctype="application/json"), 400, "not an object",
                   "bad-json")
    expect_problem(adm.post(base, raw="name=x", ctype="text/plain"), 415, "not JSON")
    good = [
        {"name": "own subtree", "acl": [rule("both", "devices/{device}/+/x"),
                                        rule("publish", "devices/{device}/telemetry")]},
        {"name": "broadcast", "acl": [rule("subscribe", "broadcast/{tenant}/+"),
                                      rule("publish", "devices/{device}/telemetry")]},
        {"name": "numeric", "decoder": "numeric",
         "acl": [rule("publish", "devices/{device}/telemetry/#")]},
        {"name": "custom topic", "telemetry_topic": "devices/{device}",
         "acl": [rule("publish", "devices/{device}")]},
        {"name": "qos only", "transport": {"mqtt": {"max_qos": 0}}},
        {"name": "no mqtt", "transport": {}},
    ]
    for body in good:
        expect(adm.post(base, body), 201, f"create {body}")
    eq(len(expect(adm.get(base), 200, "list").json["items"]), len(good), "profiles created")


@suite.test()
def devices_name_existing_profiles(env):
    tid, a = env.tenant("pdev")
    adm, op = a["tenant_admin"], a["operator"]
    pbase = f"/api/v1/tenants/{tid}/profiles"
    dbase = f"/api/v1/tenants/{tid}/devices"
    p = expect_problem(op.post(dbase, {"id": "d1", "profile": "pump"}), 400,
                       "device with a missing profile", "invalid")
    check("pump" in p["detail"], f"detail names the profile: {p['detail']}")
    expect(adm.post(pbase, {"id": "pump", "name": "Pump"}), 201, "profile pump")
    expect(adm.post(pbase, {"id": "valve", "name": "Valve"}), 201, "profile valve")
    expect(op.post(dbase, {"id": "d1", "profile": "pump"}), 201, "device with profile")
    expect(op.post(dbase, {"id": "d2", "profile": "pump"}), 201, "second device")
    expect(op.post(dbase, {"id": "d3"}), 201, "device without profile")
    expect_problem(op.patch(f"{dbase}/d3", {"profile": "nothing"}), 400, "patch to a missing profile")
    expect(op.patch(f"{dbase}/d3", {"profile": "valve"}), 200, "patch to an existing profile")

    p = expect_problem(adm.delete(f"{pbase}/pump"), 409, "delete a used profile", "in-use")
    check("d1" in p["detail"], f"detail names a device: {p['detail']}")
    expect(op.patch(f"{dbase}/d1", {"profile": None}), 200, "d1 leaves pump")
    expect(op.post(f"{dbase}/d2/decommission"), 200, "decommission d2")
    # A decommissioned device still names its profile: the record is kept.
    expect_problem(adm.delete(f"{pbase}/pump"), 409, "delete a profile a decommissioned device uses",
                   "in-use")
    expect(op.post(f"{dbase}/d2/decommission", {"purge": True}), 204, "purge d2")
    expect(adm.delete(f"{pbase}/pump"), 204, "delete an unused profile")
    expect_problem(adm.delete(f"{pbase}/valve"), 409, "valve still used by d3", "in-use")
    # Another tenant's profile of the same id is not this tenant's.
    tid2, b = env.tenant("pdev-other")
    expect(b["tenant_admin"].post(f"/api/v1/tenants/{tid2}/profiles", {"id": "shared", "name": "S"}),
           201, "B's profile")
    expect_problem(op.post(dbase, {"id": "d4", "profile": "shared"}), 400,
                   "a profile of another tenant")


# -- groups -----------------------------------------------------------------------------------

@suite.test()
def group_crud_and_validation(env):
    tid, a = env.tenant("grp")
    base = f"/api/v1/tenants/{tid}/groups"
    op, view = a["operator"], a["viewer"]
    r = expect(op.post(base, {"id": "floor-1", "name": "Floor 1", "kind": "static"}), 201, "static")
    eq((r.json["kind"], r.json["tenant"]), ("static", tid), "static group")
    r = expect(op.post(base, {"id": "berlin", "name": "Berlin", "kind": "dynamic",
                              "query": {"tag": "site=berlin"}}), 201, "dynamic")
    eq(r.json["query"], {"tag": "site=berlin"}, "query")
    bad = [
        ({"name": "x"}, "kind"),
        ({"name": "x", "kind": "smart"}, "kind"),
        ({"kind": "static"}, "name"),
        ({"name": "x", "kind": "static", "query": {"tag": "a"}}, "query"),
        ({"name": "x", "kind": "dynamic"}, "query"),
        ({"name": "x", "kind": "dynamic", "query": {}}, "query"),
        ({"name": "x", "kind": "dynamic", "query": {"colour": "red"}}, "colour"),
        ({"name": "x", "kind": "dynamic", "query": {"tag": "=v"}}, "tag"),
        ({"name": "x", "kind": "dynamic", "query": {"attribute": "fw"}}, "attribute"),
        ({"name": "x", "kind": "dynamic", "query": {"name_prefix": ""}}, "name_prefix"),
        ({"name": "x", "kind": "dynamic", "query": "tag=a"}, "query"),
        ({"name": "x", "kind": "static", "members": ["d1"]}, "members"),
    ]
    for body, word in bad:
        p = expect_problem(op.post(base, body), 400, f"create {body}", "invalid")
        check(word in p["detail"], f"{body}: detail {p['detail']!r} does not mention {word!r}")
    expect_problem(view.post(base, {"name": "x", "kind": "static"}), 403, "viewer creates")
    eq(ids(expect(view.get(base), 200, "list").json["items"]), ["berlin", "floor-1"], "list")
    eq(ids(expect(view.get(base, query={"kind": "dynamic"}), 200, "list").json["items"]), ["berlin"],
       "kind filter")
    r = expect(op.patch(f"{base}/berlin", {"query": {"attribute": "fw=2"}}), 200, "patch query")
    eq(r.json["query"], {"tag": "site=berlin", "attribute": "fw=2"}, "merged query")
    # dynamic -> static: the query must go with it
    expect_problem(op.patch(f"{base}/berlin", {"kind": "static"}), 400, "static keeps a query")
    r = expect(op.patch(f"{base}/berlin", {"kind": "static", "query": None}), 200, "to static")
    check("query" not in r.json, "query removed")
    expect(op.delete(f"{base}/berlin"), 204, "delete")
    expect_problem(op.post(base, {"id": "berlin", "name": "B", "kind": "static"}), 409, "reuse")
    expect_problem(view.get(f"{base}/berlin/devices"), 404, "members of a deleted group")


@suite.test()
def static_and_dynamic_membership_with_pagination(env):
    tid, a = env.tenant("mem")
    adm, op, view = a["tenant_admin"], a["operator"], a["viewer"]
    t = f"/api/v1/tenants/{tid}"
    expect(adm.post(f"{t}/profiles", {"id": "pump", "name": "Pump"}), 201, "profile")
    expect(op.post(f"{t}/groups", {"id": "g-even", "name": "Even", "kind": "static"}), 201, "static")
    expect(op.post(f"{t}/groups", {"id": "g-five", "name": "Fives", "kind": "static"}), 201, "static 2")
    expect(op.post(f"{t}/groups", {"id": "dyn", "name": "Dyn", "kind": "dynamic",
                                   "query": {"tag": "site=berlin"}}), 201, "dynamic")
    # A device may list only existing static groups, each once.
    expect_problem(op.post(f"{t}/devices", {"id": "x1", "groups": ["dyn"]}), 400,
                   "a dynamic group in groups", "invalid")
    expect_problem(op.post(f"{t}/devices", {"id": "x1", "groups": ["nope"]}), 400,
                   "a missing group in groups", "invalid")
    expect_problem(op.post(f"{t}/devices", {"id": "x1", "groups": ["g-even", "g-even"]}), 400,
                   "a group twice", "invalid")
    expected = {"g-even": [], "g-five": [], "berlin": [], "attr": [], "pump-b": [], "prefix": []}
    for i in range(60):
        did = f"m{i:03d}"
        groups = (["g-even"] if i % 2 == 0 else []) + (["g-five"] if i % 5 == 0 else [])
        body = {"id": did, "name": f"{'alpha' if i < 20 else 'beta'}-{i}",
                "tags": {"site": "berlin" if i % 3 == 0 else "hamburg"},
                "attributes": {"fw": "2.0" if i % 4 == 0 else "1.0"}}
        if groups:
            body["groups"] = groups
        if i % 7 == 0:
            body["profile"] = "pump"
        expect(op.post(f"{t}/devices", body), 201, f"device {did}")
        if i % 2 == 0:
            expected["g-even"].append(did)
        if i % 5 == 0:
            expected["g-five"].append(did)
        if i % 3 == 0:
            expected["berlin"].append(did)
        if i % 4 == 0 and i % 3 == 0:
            expected["attr"].append(did)
        if i % 7 == 0 and i % 3 == 0:
            expected["pump-b"].append(did)
        if i < 20 and i % 3 == 0:
            expected["prefix"].append(did)
    for gid, want in (("g-even", expected["g-even"]), ("g-five", expected["g-five"]),
                      ("dyn", expected["berlin"])):
        got, pages = all_pages(view, f"{t}/groups/{gid}/devices", 7)
        eq(ids(got), want, f"members of {gid}")
        eq(pages, (len(want) + 6) // 7, f"pages of {gid}")
    # Dynamic queries use every filter given.
    for gid, query, want in (("dyn-attr", {"tag": "site=berlin", "attribute": "fw=2.0"}, "attr"),
                             ("dyn-pump", {"profile": "pump", "tag": "site"}, None),
                             ("dyn-pump-b", {"profile": "pump", "tag": "site=berlin"}, "pump-b"),
                             ("dyn-prefix", {"name_prefix": "alpha", "tag": "site=berlin"}, "prefix")):
        expect(op.post(f"{t}/groups", {"id": gid, "name": gid, "kind": "dynamic", "query": query}),
               201, gid)
        got, _ = all_pages(view, f"{t}/groups/{gid}/devices", 3)
        if want:
            eq(ids(got), expected[want], f"members of {gid}")
        else:
            eq(ids(got), [f"m{i:03d}" for i in range(0, 60, 7)], f"members of {gid}")
    # Members sort like device lists.
    got, _ = all_pages(view, f"{t}/groups/g-five/devices", 2, {"sort": "-id"})
    eq(ids(got), list(reversed(expected["g-five"])), "members by -id")
    expect_problem(view.get(f"{t}/groups/g-five/devices", query={"sort": "colour"}), 400, "bad sort")
    expect_problem(view.get(f"{t}/groups/nope/devices"), 404, "members of a missing group")
    # Membership follows the devices.
    expect(op.patch(f"{t}/devices/m001", {"groups": ["g-five"]}), 200, "m001 joins g-five")
    expect(op.patch(f"{t}/devices/m000", {"groups": None}), 200, "m000 leaves its groups")
    got, _ = all_pages(view, f"{t}/groups/g-five/devices", 100)
    eq(ids(got), ["m001"] + expected["g-five"][1:], "g-five after the changes")
    expect(op.patch(f"{t}/devices/m003", {"tags": {"site": "paris"}}), 200, "m003 moves")
    got, _ = all_pages(view, f"{t}/groups/dyn/devices", 100)
    eq(ids(got), [d for d in expected["berlin"] if d != "m003"], "dynamic members follow tags")

    # A static group with members cannot go, nor turn dynamic.
    p = expect_problem(op.delete(f"{t}/groups/g-five"), 409, "delete a used group", "in-use")
    check("m001" in p["detail"] or "m005" in p["detail"], f"detail names a device: {p['detail']}")
    expect_problem(op.patch(f"{t}/groups/g-five", {"kind": "dynamic", "query": {"tag": "a"}}), 409,
                   "turn a used static group dynamic", "in-use")
    for did in ["m001"] + expected["g-five"][1:]:
        r = expect(view.get(f"{t}/devices/{did}"), 200, did)
        rest = [g for g in r.json.get("groups", []) if g != "g-five"]
        expect(op.patch(f"{t}/devices/{did}", {"groups": rest or None}), 200, f"{did} leaves")
    expect(op.patch(f"{t}/groups/g-five", {"kind": "dynamic", "query": {"tag": "site=hamburg"}}), 200,
           "an empty static group turns dynamic")
    got, _ = all_pages(view, f"{t}/groups/g-five/devices", 50)
    check(len(got) == 40, f"g-five now has the hamburg devices: {len(got)}")
    expect(op.delete(f"{t}/groups/dyn"), 204, "a dynamic group goes at once")


# -- sorting ----------------------------------------------------------------------------------

SORTS = ("id", "-id", "name", "-name", "created_at", "-created_at", "updated_at", "-updated_at")


def sort_key(sort):
    field = sort.lstrip("-")
    if field == "id":
        return lambda d: (d["id"],)
    if field == "name":
        return lambda d: (d.get("name", ""), d["id"])
    return lambda d: (d[field], d["id"])   # RFC 3339 with milliseconds: text order is time order


@suite.test()
def sort_orders_with_pagination(env):
    tid, a = env.tenant("sort")
    op, view = a["operator"], a["viewer"]
    base = f"/api/v1/tenants/{tid}/devices"
    n = 250
    for i in range(n):
        did = f"s-{(i * 97) % n:03d}"  # ids not in creation order
        body = {"id": did, "tags": {"half": "a" if i % 2 else "b"}}
        if i % 9 != 4:  # some devices have no name: they sort as ""
            body["name"] = f"name-{(i * 31) % 40:02d}"  # names repeat: ties go by id
        expect(op.post(base, body), 201, f"create {did}")
    for i in range(0, n, 17):  # some updates move updated_at
        did = f"s-{(i * 97) % n:03d}"
        expect(op.patch(f"{base}/{did}", {"attributes": {"touched": "1"}}), 200, f"touch {did}")
    everything, _ = all_pages(view, base, 1000)
    eq(len(everything), n, "devices")
    for sort in SORTS:
        want = sorted(everything, key=sort_key(sort), reverse=sort.startswith("-"))
        for limit in (37, 250):
            got, pages = all_pages(view, base, limit, {"sort": sort})
            eq(ids(got), ids(want), f"order of sort={sort} limit={limit}")
            eq(pages, (n + limit - 1) // limit, f"pages of sort={sort} limit={limit}")
    # A filter and a sort together.
    got, _ = all_pages(view, base, 11, {"sort": "-name", "tag": "half=a"})
    want = sorted((d for d in everything if d["tags"]["half"] == "a"), key=sort_key("-name"),
                  reverse=True)
    eq(ids(got), ids(want), "filtered and sorted")
    # Refusals: unknown sorts, and a cursor made by another sort.
    for bad in ("colour", "", "--id", "name,id", "-"):
        expect_problem(view.get(base, query={"sort": bad}), 400, f"sort={bad!r}", "invalid")
    r = expect(view.get(base, query={"sort": "name", "limit": "5"}), 200, "name page")
    cursor = r.json["next_cursor"]
    check(cursor, "a next cursor")
    expect_problem(view.get(base, query={"sort": "-name", "cursor": cursor}), 400,
                   "a name cursor with -name")
    expect_problem(view.get(base, query={"cursor": cursor}), 400, "a name cursor with the id order")
    r = expect(view.get(base, query={"sort": "name", "cursor": cursor, "limit": "5"}), 200,
               "the cursor with its own sort")
    eq(ids(r.json["items"]), ids(sorted(everything, key=sort_key("name")))[5:10], "second page")


if __name__ == "__main__":
    suite.main(setup)
