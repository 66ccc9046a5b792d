#!/usr/bin/python3
"""`drover sim` (src/server/sim.c) against a live server: it provisions its tenant
and devices over REST and publishes their readings over MQTT with real credentials.

- A run of 5 devices at 5 messages a second for 3 s creates the tenant and
  sim-0001 .. sim-0005, and each device then has the keys temperature, humidity,
  battery, rssi, door (at least 10 samples each, of the right kinds and within
  plausible bounds, at about the present time) and firmware (a string, sent once).
- A second run reuses the tenant and the devices (each gets a new secret) and
  stops cleanly on SIGINT.
- Usage errors exit 2; a token the server refuses exits 1 and says why.

Usage: test_sim.py --drover BINARY [-k NAME]
"""
import contextlib
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
from apilib import Suite, check, eq, expect, start_server  # noqa: E402

suite = Suite("test_sim")
TENANT = "simco"
DEVICES = [f"sim-{i:04d}" for i in range(1, 6)]
PERIODIC = {"temperature": "double", "humidity": "double", "battery": "double",
            "rssi": "integer", "door": "boolean"}
BOUNDS = {"temperature": (10, 35), "humidity": (0, 100), "battery": (0, 100),
          "rssi": (-130, -10)}


class Env:
    def __init__(self, binary, d, api):
        self.binary, self.d, self.api = binary, d, api

    def alive(self):
        return self.d.alive()

    def args(self, *extra, token=None):
        return [self.binary, "sim", "--url", f"http://127.0.0.1:{self.d.http_port}",
                "--token", token or self.api.token, "--mqtt", f"127.0.0.1:{self.d.port}",
                *extra]

    def sim(self, *extra, token=None, timeout=120):
        r = subprocess.run(self.args(*extra, token=token), capture_output=True, timeout=timeout)
        return r.returncode, r.stdout.decode(), r.stderr.decode()


@contextlib.contextmanager
def setup(binary):
    with start_server(binary) as (d, api):
        yield Env(binary, d, api)


def count(env, dev, key):
    r = expect(env.api.get(f"/api/v1/tenants/{TENANT}/devices/{dev}/telemetry/aggregate",
                           query={"key": key, "fn": "count,min,max,first,last"}), 200,
               f"aggregate of {dev}/{key}")
    items = r.json["items"]
    return items[0] if items else {"count": 0}


@suite.test()
def five_devices_publish_their_readings(env):
    rc, out, err = env.sim("--tenant", TENANT, "--devices", "5", "--rate", "5",
                           "--duration", "3")
    eq(rc, 0, f"drover sim exit status\n{out}\n{err}")
    check(f"created tenant {TENANT}" in out, f"the tenant was created:\n{out}")
    check("5 devices ready (5 created, 0 reused)" in out, f"devices provisioned:\n{out}")
    check("connected 5/5" in out, f"a status line with every device connected:\n{out}")
    check("errors 0" in out.splitlines()[-2], f"no errors:\n{out}\n{err}")
    r = expect(env.api.get(f"/api/v1/tenants/{TENANT}/devices", query={"limit": 100}), 200,
               "devices")
    eq(sorted(d["id"] for d in r.json["items"]), DEVICES, "the simulated devices")
    for dev in DEVICES:
        r = expect(env.api.get(f"/api/v1/tenants/{TENANT}/devices/{dev}/telemetry/keys"), 200,
                   f"keys of {dev}")
        kinds = {k["key"]: k["type"] for k in r.json["items"]}
        eq(kinds, dict(PERIODIC, firmware="string"), f"the keys of {dev} and their kinds")
        for key in PERIODIC:
            a = count(env, dev, key)
            check(a["count"] >= 10, f"{dev}/{key}: {a['count']} samples, want at least 10")
            if key in BOUNDS:
                lo, hi = BOUNDS[key]
                check(lo <= a["min"] and a["max"] <= hi, f"{dev}/{key} out of bounds: {a}")
            if key == "battery":
                check(a["last"] <= a["first"], f"{dev}: the battery charged itself: {a}")
        eq(count(env, dev, "firmware")["count"], 1, f"{dev}: the firmware is sent once")
        r = expect(env.api.get(f"/api/v1/tenants/{TENANT}/devices/{dev}/telemetry/latest"), 200,
                   f"latest of {dev}")
        latest = {i["key"]: i["value"] for i in r.json["items"]}
        newest = max(i["ts"] for i in r.json["items"])
        check(abs(newest / 1000 - time.time()) < 60, f"{dev}: the messages' times are now: {newest}")
        check(isinstance(latest["door"], bool), f"{dev}: door is a boolean: {latest}")
        check(isinstance(latest["rssi"], int), f"{dev}: rssi is an integer: {latest}")
        check(isinstance(latest["firmware"], str) and latest["firmware"],
              f"{dev}: a firmware string: {latest}")
        check(round(latest["temperature"], 2) == latest["temperature"],
              f"{dev}: temperature has two decimals: {latest}")


@suite.test()
def second_run_reuses_devices_and_stops_on_sigint(env):
    p = subprocess.Popen(env.args("--tenant", TENANT, "--devices", "5", "--rate", "2"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            line = p.stdout.readline().decode()
            if not line:
                break
            lines.append(line)
            if "connected 5/5" in line:
                break
        check(any("connected 5/5" in line for line in lines),
              "every device connected:\n" + "".join(lines))
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=15)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    out = "".join(lines) + out.decode()
    eq(p.returncode, 0, f"exit status after SIGINT\n{out}\n{err.decode()}")
    check("5 devices ready (0 created, 5 reused)" in out, f"the devices were reused:\n{out}")
    check("stopped" in out.splitlines()[-1], f"a clean stop:\n{out}")
    r = expect(env.api.get(f"/api/v1/tenants/{TENANT}/devices/sim-0001/credentials"), 200,
               "credentials")
    eq(len([c for c in r.json["items"] if not c.get("revoked_at")]), 2,
       "a second secret for the second run")


@suite.test()
def usage_errors_and_refusals(env):
    for bad in (["--devices", "0"], ["--devices", "1.5"], ["--rate", "0"], ["--qos", "2"],
                ["--tenant", "Bad_Tenant"], ["--prefix", "a/b"], ["--bogus", "1"]):
        args = ["--tenant", TENANT, *bad] if bad[0] != "--tenant" else bad
        rc, out, err = env.sim(*args)
        eq(rc, 2, f"exit status for {bad}: {err}")
        check("usage: drover sim" in err, f"usage for {bad}: {err}")
    rc, out, err = env.sim("--devices", "1")
    eq(rc, 2, f"no --tenant: {err}")
    rc, out, err = env.sim("--tenant", TENANT, "--devices", "1", token="drv_notatoken")
    eq(rc, 1, f"exit status with a bad token: {out} {err}")
    check("--token" in err, f"a bad token is explained: {err}")


if __name__ == "__main__":
    suite.main(setup, "drover sim")
