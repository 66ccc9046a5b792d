#!/usr/bin/python3
"""Bulk device provisioning, POST /api/v1/tenants/{tenant}/device-imports, against a
live `drover serve`.

CSV and JSON imports of 2,000 devices (every column and field, checked afterwards
through the API: fields, status, provisioning events, group members, the audit
entry); files with bad rows, each reported with its 1-based row number and the
reason a single create would give, while the good rows are created; dry runs,
which report the same and create nothing; the tenant's device quota for the whole
batch; the limits (10,000 rows, malformed CSV, unknown columns, content types,
roles); CSV details (BOM, CRLF, quoted fields); and imported secrets that work as
MQTT passwords (paho-mqtt, user name "<tenant>/<device>").

Usage: test_import.py --drover BINARY [-k NAME]
Ends with "N passed, N failed".
"""
import contextlib
import csv
import io
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from apilib import (Suite, check, eq, expect, expect_problem, start_server)  # noqa: E402

suite = Suite("test_import")


class Env:
    def __init__(self, binary, d, api):
        self.binary = binary
        self.d = d
        self.api = api
        self.n = 0

    def alive(self):
        return self.d.alive()

    def tenant(self, prefix, **extra):
        """A fresh tenant with profile "pump" and static group "floor-1"; an Api per role."""
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
        t = f"/api/v1/tenants/{tid}"
        expect(apis["tenant_admin"].post(f"{t}/profiles", {"id": "pump", "name": "Pump"}), 201,
               "profile")
        expect(apis["operator"].post(f"{t}/groups", {"id": "floor-1", "name": "Floor 1",
                                                     "kind": "static"}), 201, "static group")
        expect(apis["operator"].post(f"{t}/groups", {"id": "dyn", "name": "Dynamic",
                                                     "kind": "dynamic", "query": {"tag": "x"}}),
               201, "dynamic group")
        return tid, apis


@contextlib.contextmanager
def setup(binary):
    with start_server(binary) as (d, api):
        yield Env(binary, d, api)


def to_csv(header, rows, crlf=True):
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n" if crlf else "\n")
    w.writerow(header)
    for r in rows:
        w.writerow(r)
    return out.getvalue()


def post_csv(api, tid, text, dry_run=None, **kw):
    q = {"dry_run": dry_run} if dry_run is not None else None
    return api.post(f"/api/v1/tenants/{tid}/device-imports", raw=text.encode(),
                    ctype="text/csv; charset=utf-8", query=q, **kw)


def post_json(api, tid, devices, dry_run=None):
    q = {"dry_run": dry_run} if dry_run is not None else None
    return api.post(f"/api/v1/tenants/{tid}/device-imports", {"devices": devices}, query=q)


def all_devices(api, tid, query=None):
    items, cursor = [], None
    while True:
        q = dict(query or {}, limit="1000")
        if cursor:
            q["cursor"] = cursor
        r = expect(api.get(f"/api/v1/tenants/{tid}/devices", query=q), 200, "devices")
        items += r.json["items"]
        cursor = r.json["next_cursor"]
        if not cursor:
            return items


def check_report(r, total, created, rejected, dry_run=False):
    """rejected: {row: (id, words the reason must contain)}."""
    eq(r.media, "application/json", "report content type")
    rep = r.json
    eq(sorted(rep), ["created", "dry_run", "rejected", "total"], "report fields")
    eq((rep["total"], rep["created"], rep["dry_run"]), (total, created, dry_run), "report counts")
    got = {x["row"]: x for x in rep["rejected"]}
    eq(sorted(got), sorted(rejected), "rejected rows")
    eq([x["row"] for x in rep["rejected"]], sorted(got), "rejected rows in order")
    for row, (rid, words) in rejected.items():
        x = got[row]
        eq(x["id"], rid, f"row {row} id")
        for w in words if isinstance(words, (list, tuple)) else [words]:
            check(w in x["reason"], f"row {row}: reason {x['reason']!r} does not say {w!r}")
    return rep


# -- big imports ------------------------------------------------------------------------------

N = 2000


@suite.test()
def csv_import_of_2000_devices(env):
    tid, a = env.tenant("csv")
    op, view, adm = a["operator"], a["viewer"], a["tenant_admin"]
    header = ["id", "name", "profile", "groups", "tag.site", "tag.env", "attribute.fw"]
    rows = []
    for i in range(N):
        rows.append([f"dev-{i:05d}", f"Device {i}", "pump" if i % 2 else "",
                     "floor-1" if i % 10 == 0 else "", ["berlin", "hamburg"][i % 2],
                     "" if i % 3 else "prod", f"1.{i % 4}"])
    r = expect(post_csv(op, tid, to_csv(header, rows)), 200, "import")
    check_report(r, N, N, {})
    devices = all_devices(view, tid)
    eq(len(devices), N, "devices after the import")
    by_id = {d["id"]: d for d in devices}
    for i in (0, 1, 3, 10, 1999):
        d = by_id[f"dev-{i:05d}"]
        eq(d["name"], f"Device {i}", "name")
        eq(d["status"], "active", "status")
        eq(d.get("profile"), "pump" if i % 2 else None, f"profile of {i}")
        eq(d.get("groups"), ["floor-1"] if i % 10 == 0 else None, f"groups of {i}")
        want_tags = {"site": ["berlin", "hamburg"][i % 2]}
        if i % 3 == 0:
            want_tags["env"] = "prod"
        eq(d["tags"], want_tags, f"tags of {i}")
        eq(d["attributes"], {"fw": f"1.{i % 4}"}, f"attributes of {i}")
        eq(d["version"], 1, "version")
    ev = expect(view.get(f"/api/v1/tenants/{tid}/devices/dev-01234/events"), 200, "events").json
    eq([e["kind"] for e in ev["items"]], ["provisioned"], "provisioning event")
    members = []
    cursor = None
    while True:
        q = {"limit": "50"} if not cursor else {"limit": "50", "cursor": cursor}
        r = expect(view.get(f"/api/v1/tenants/{tid}/groups/floor-1/devices", query=q), 200, "members")
        members += r.json["items"]
        cursor = r.json["next_cursor"]
        if not cursor:
            break
    eq(len(members), N // 10, "static group members")
    eq(len(all_devices(view, tid, {"tag": "env=prod"})), len(range(0, N, 3)), "tag filter")
    audit = expect(adm.get(f"/api/v1/tenants/{tid}/audit"), 200, "audit").json["items"]
    imports = [x for x in audit if x["action"] == "device.import"]
    eq(len(imports), 1, "one audit entry per import")
    eq(imports[0].get("detail"), {"format": "csv", "total": N, "created": N, "rejected": 0},
       "audit detail")
    # The same file again: every id is taken now.
    r = expect(post_csv(op, tid, to_csv(header, rows[:3])), 200, "import again")
    check_report(r, 3, 0, {1: ("dev-00000", "taken"), 2: ("dev-00001", "taken"),
                           3: ("dev-00002", "taken")})


@suite.test()
def json_import_of_2000_devices(env):
    tid, a = env.tenant("json")
    op, view = a["operator"], a["viewer"]
    devs = []
    for i in range(N):
        d = {"id": f"j-{i:05d}", "name": f"J {i}", "tags": {"batch": str(i // 500)},
             "attributes": {"serial": f"SN{i:06d}"}}
        if i % 4 == 0:
            d["groups"] = ["floor-1"]
        if i % 5 == 0:
            d["profile"] = "pump"
        devs.append(d)
    r = expect(post_json(op, tid, devs), 200, "import")
    check_report(r, N, N, {})
    devices = all_devices(view, tid)
    eq(len(devices), N, "devices")
    by_id = {d["id"]: d for d in devices}
    for i in (0, 4, 5, 1999):
        want = devs[i]
        got = by_id[want["id"]]
        for k, v in want.items():
            eq(got.get(k), v, f"{want['id']} {k}")
        eq(got["status"], "active", "status")
    eq(len(all_devices(view, tid, {"tag": "batch=3"})), 500, "last batch")


# -- bad rows -----------------------------------------------------------------------------------

@suite.test()
def bad_rows_are_reported_and_good_rows_created(env):
    tid, a = env.tenant("bad")
    op, view = a["operator"], a["viewer"]
    expect(op.post(f"/api/v1/tenants/{tid}/devices", {"id": "exists"}), 201, "existing device")
    header = ["id", "name", "profile", "groups", "tag.site", "secret"]
    rows = [
        ["ok-1", "Good one", "pump", "floor-1", "berlin", ""],          # 1
        ["", "no id", "", "", "", ""],                                  # 2
        ["bad id", "", "", "", "", ""],                                 # 3
        ["ok-2", "", "", "", "", ""],                                   # 4
        ["p-missing", "", "valve", "", "", ""],                         # 5
        ["g-dynamic", "", "", "dyn", "", ""],                           # 6
        ["g-missing", "", "", "floor-1;floor-9", "", ""],               # 7
        ["ok-1", "", "", "", "", ""],                                   # 8: repeats row 1
        ["exists", "", "", "", "", ""],                                 # 9: taken
        ["short", "", "", "", "", "tooshort"],                          # 10
        ["long-name", "x" * 201, "", "", "", ""],                       # 11
        ["ok-3", "Third", "", "floor-1;", "hamburg", "0123456789abcdef"],  # 12
    ]
    text = to_csv(header, rows) + "ragged,row\r\n"                     # 13
    want = {2: (None, "id"), 3: ("bad id", "id"), 5: ("p-missing", ["profile", "valve"]),
            6: ("g-dynamic", ["dyn", "dynamic"]), 7: ("g-missing", "floor-9"),
            8: ("ok-1", ["row 1"]), 9: ("exists", "taken"), 10: ("short", "secret"),
            11: ("long-name", "name"), 13: ("ragged", ["2 fields", "6"])}
    # A dry run reports exactly what the import will, and stores nothing.
    r = expect(post_csv(op, tid, text, dry_run="true"), 200, "dry run")
    dry = check_report(r, 13, 3, want, dry_run=True)
    eq(sorted(d["id"] for d in all_devices(view, tid)), ["exists"], "a dry run creates nothing")
    r = expect(post_csv(op, tid, text, dry_run="false"), 200, "import")
    rep = check_report(r, 13, 3, want)
    eq(rep["rejected"], dry["rejected"], "the dry run said the same")
    eq(sorted(d["id"] for d in all_devices(view, tid)), ["exists", "ok-1", "ok-2", "ok-3"],
       "the good rows were created")
    d = expect(view.get(f"/api/v1/tenants/{tid}/devices/ok-3"), 200, "ok-3").json
    eq((d["groups"], d["tags"]), (["floor-1"], {"site": "hamburg"}), "ok-3 fields")
    creds = expect(view.get(f"/api/v1/tenants/{tid}/devices/ok-3/credentials"), 200, "creds").json
    eq([c["kind"] for c in creds["items"]], ["secret"], "ok-3's secret credential")
    creds = expect(view.get(f"/api/v1/tenants/{tid}/devices/ok-1/credentials"), 200, "creds").json
    eq(creds["items"], [], "no credential without a secret")

    # JSON rows are checked the same way.
    devs = [{"id": "j-ok"}, "not an object", {"id": "j-status", "status": "active"},
            {"id": "j-secret", "secret": 12345678901234567}, {"id": "j-tags", "tags": {"k": 1}},
            {"name": "no id"}, {"id": "j-ok2", "secret": "0123456789abcdef0"}]
    r = expect(post_json(op, tid, devs), 200, "JSON import")
    check_report(r, 7, 2, {2: (None, "object"), 3: ("j-status", "status"),
                           4: ("j-secret", "secret"), 5: ("j-tags", "tags"), 6: (None, "id")})
    expect(view.get(f"/api/v1/tenants/{tid}/devices/j-ok2"), 200, "j-ok2 created")


@suite.test()
def dry_run_creates_nothing(env):
    tid, a = env.tenant("dry")
    op, view, adm = a["operator"], a["viewer"], a["tenant_admin"]
    rows = [[f"d-{i}", f"D{i}", "0123456789abcdef" if i == 0 else ""] for i in range(300)]
    text = to_csv(["id", "name", "secret"], rows)
    r = expect(post_csv(op, tid, text, dry_run="true"), 200, "dry run")
    check_report(r, 300, 300, {}, dry_run=True)
    eq(all_devices(view, tid), [], "nothing created")
    audit = expect(adm.get(f"/api/v1/tenants/{tid}/audit"), 200, "audit").json["items"]
    eq([x for x in audit if x["action"] == "device.import"], [], "a dry run is not audited")
    r = expect(post_json(op, tid, [{"id": "j1"}], dry_run="true"), 200, "JSON dry run")
    check_report(r, 1, 1, {}, dry_run=True)
    eq(all_devices(view, tid), [], "still nothing")
    expect_problem(post_csv(op, tid, text, dry_run="maybe"), 400, "dry_run=maybe", "invalid")
    r = expect(post_csv(op, tid, text), 200, "the real import")
    check_report(r, 300, 300, {})
    eq(len(all_devices(view, tid)), 300, "created now")


@suite.test()
def quota_is_checked_for_the_whole_batch(env):
    tid, a = env.tenant("quota", quotas={"devices": 10})
    op, view = a["operator"], a["viewer"]
    for i in range(3):
        expect(op.post(f"/api/v1/tenants/{tid}/devices", {"id": f"pre-{i}"}), 201, "device")
    rows = [[f"q-{i}"] for i in range(8)]
    p = expect_problem(post_csv(op, tid, to_csv(["id"], rows)), 403, "over the quota",
                       "quota-exceeded")
    check("nothing" in p["detail"], f"detail: {p['detail']}")
    eq(len(all_devices(view, tid)), 3, "nothing imported")
    expect_problem(post_csv(op, tid, to_csv(["id"], rows), dry_run="true"), 403,
                   "a dry run over the quota", "quota-exceeded")
    # Rows that fail validation do not count against the quota.
    rows = [[f"q-{i}"] for i in range(7)] + [["bad id"], ["also bad"]]
    r = expect(post_csv(op, tid, to_csv(["id"], rows)), 200, "exactly up to the quota")
    check_report(r, 9, 7, {8: ("bad id", "id"), 9: ("also bad", "id")})
    eq(len(all_devices(view, tid)), 10, "at the quota")
    expect_problem(post_json(op, tid, [{"id": "one-more"}]), 403, "one more", "quota-exceeded")


# -- limits and formats ---------------------------------------------------------------------------

@suite.test()
def limits_errors_and_roles(env):
    tid, a = env.tenant("lim")
    op, view = a["operator"], a["viewer"]
    path = f"/api/v1/tenants/{tid}/device-imports"
    p = expect_problem(post_json(op, tid, [{"id": f"x{i}"} for i in range(10001)]), 413,
                       "10,001 JSON rows")
    check("split" in p["detail"], f"detail: {p['detail']}")
    p = expect_problem(post_csv(op, tid, to_csv(["id"], [[f"x{i}"] for i in range(10001)])), 413,
                       "10,001 CSV rows")
    check("split" in p["detail"], f"detail: {p['detail']}")
    r = expect(post_csv(op, tid, to_csv(["id"], [[f"x{i}"] for i in range(10000)]), dry_run="true"),
               200, "10,000 rows are fine")
    eq(r.json["created"], 10000, "10,000 would be created")
    cases = [
        ("id,name\r\nd1,\"unterminated\r\n", "line 2"),
        ("id,name\r\nd1,a\"b\r\n", "line 2"),
        ("id,colour\r\nd1,red\r\n", "colour"),
        ("name\r\nx\r\n", "id"),
        ("id,id\r\nd1,d1\r\n", "twice"),
        ("id,tag.\r\nd1,x\r\n", "tag."),
        ("id,tag.a=b\r\nd1,x\r\n", "tag.a=b"),
        ("", "header"),
        ("\r\n\r\n", "header"),
    ]
    for text, word in cases:
        p = expect_problem(post_csv(op, tid, text), 400, f"CSV {text!r}")
        check(word in p["detail"], f"{text!r}: detail {p['detail']!r} does not say {word!r}")
    p = expect_problem(post_csv(op, tid, "id,name\r\nd1," + "x" * 5000 + "\r\n"), 400, "a huge field",
                       "bad-csv")
    check("line 2" in p["detail"], f"detail: {p['detail']}")
    expect_problem(op.post(path, raw="[]", ctype="application/json"), 400, "a JSON array body")
    expect_problem(op.post(path, {"devices": {"id": "x"}}), 400, "devices not a list")
    expect_problem(op.post(path, {"devices": [], "extra": 1}), 400, "an extra field")
    expect_problem(op.post(path, raw="{", ctype="application/json"), 400, "bad JSON", "bad-json")
    expect_problem(op.post(path, raw="id\nx", ctype="text/plain"), 415, "text/plain")
    expect_problem(op.post(path, raw="id\nx"), 415, "no content type")
    expect_problem(post_csv(view, tid, "id\r\nx\r\n"), 403, "a viewer imports", "forbidden")
    r = expect(post_json(op, tid, []), 200, "an empty list")
    check_report(r, 0, 0, {})
    r = expect(post_csv(op, tid, "id,name\r\n"), 200, "a header alone")
    check_report(r, 0, 0, {})
    eq(all_devices(view, tid), [], "nothing created by any of it")


@suite.test()
def csv_details_bom_crlf_quotes(env):
    tid, a = env.tenant("fmt")
    op, view = a["operator"], a["viewer"]
    text = ("\ufeffid,name,tag.note,attribute.size\n"
            "c1,\"Pump, big\",\"said \"\"hi\"\"\",\"12\"\r\n"
            "\n"
            "c2,\"two\nlines\",,\n"
            "c3,Zürich,東京,3")
    r = expect(post_csv(op, tid, text), 200, "import")
    check_report(r, 3, 3, {})
    d = {x["id"]: x for x in all_devices(view, tid)}
    eq(d["c1"]["name"], "Pump, big", "quoted comma")
    eq(d["c1"]["tags"], {"note": 'said "hi"'}, "doubled quotes")
    eq(d["c1"]["attributes"], {"size": "12"}, "attribute")
    eq(d["c2"]["name"], "two\nlines", "quoted line break")
    check("tags" not in d["c2"] and "attributes" not in d["c2"], "empty cells are absent fields")
    eq((d["c3"]["name"], d["c3"]["tags"]), ("Zürich", {"note": "東京"}), "UTF-8")
    r = expect(op.post(f"/api/v1/tenants/{tid}/device-imports", raw=b"id,name\r\nc5,\xff\xfe\r\n",
                       ctype="text/csv"), 200, "invalid UTF-8")
    check_report(r, 1, 0, {1: ("c5", "UTF-8")})


# -- secrets --------------------------------------------------------------------------------------

def mqtt_login(port, username, password, timeout=15):
    """The CONNACK return code paho gets (MQTT 3.1.1): 0 accepted."""
    import paho.mqtt.client as mqtt
    kw = {"client_id": username.replace("/", "-"), "protocol": mqtt.MQTTv311}
    if hasattr(mqtt, "CallbackAPIVersion"):  # paho-mqtt 2.x
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION1, **kw)
    else:
        c = mqtt.Client(**kw)
    c.username_pw_set(username, password)
    done, result = threading.Event(), []

    def on_connect(cl, ud, flags, rc):
        result.append(rc)
        done.set()
    c.on_connect = on_connect
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    try:
        check(done.wait(timeout), f"no CONNACK for {username}")
    finally:
        c.disconnect()
        c.loop_stop()
    return result[0]


@suite.test()
def imported_secrets_log_in_over_mqtt(env):
    tid, a = env.tenant("sec")
    op = a["operator"]
    secrets = {f"m-{i}": f"secret-{i}-0123456789abcdef" for i in range(3)}
    rows = [[k, v] for k, v in secrets.items()] + [["m-nosecret", ""]]
    r = expect(post_csv(op, tid, to_csv(["id", "secret"], rows)), 200, "CSV import with secrets")
    check_report(r, 4, 4, {})
    check(not any(s in r.text for s in secrets.values()), "the answer shows no secret")
    r = expect(post_json(op, tid, [{"id": "m-json", "secret": "json-secret-0123456789"}]), 200,
               "JSON import with a secret")
    check_report(r, 1, 1, {})
    port = env.d.port
    for dev, secret in list(secrets.items()) + [("m-json", "json-secret-0123456789")]:
        eq(mqtt_login(port, f"{tid}/{dev}", secret), 0, f"{dev} logs in with its secret")
    check(mqtt_login(port, f"{tid}/m-0", "wrong-secret-0123456789") != 0, "a wrong secret")
    check(mqtt_login(port, f"{tid}/m-nosecret", "anything-0123456789") != 0,
          "a device imported without a secret")
    audit = expect(a["tenant_admin"].get(f"/api/v1/tenants/{tid}/audit"), 200, "audit").json
    check(not any(s in json.dumps(audit) for s in secrets.values()), "the audit log shows no secret")


if __name__ == "__main__":
    suite.main(setup)
