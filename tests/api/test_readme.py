#!/usr/bin/python3
"""The README's REST quick start, run exactly as written, so the docs cannot rot.

The block under "### Tenants, devices and their telemetry (REST API)" is taken
from README.md and run with bash against a fresh server.  Only what must differ
on a test machine is rewritten: the ports (the server runs on free ones; `drover
sim` is told the MQTT port with --mqtt), the token (the one this server printed)
and the binary's path.  It must create the tenant, the device and its secret,
publish {"temp":21.5} as the device with mosquitto_pub, read it back from
telemetry/latest, show the device with a last_seen time, list it with the CLI,
and run `drover sim`, whose devices then have telemetry of their own.

Usage: test_readme.py --drover BINARY
"""
import contextlib
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
from apilib import Suite, check, eq, start_server, wait_until  # noqa: E402

suite = Suite("test_readme")
README = os.path.join(HERE, "..", "..", "README.md")


def quickstart_block():
    text = open(README, encoding="utf-8").read()
    head = text.index("### Tenants, devices and their telemetry (REST API)")
    lines = text[head:].splitlines()
    block, started = [], False
    for line in lines[1:]:
        if line.startswith("    "):
            block.append(line[4:])
            started = True
        elif started:
            break
    check(block, "the README has a REST quick-start block")
    return block


class Env:
    def __init__(self, binary, d, api):
        self.binary, self.d, self.api = binary, d, api

    def alive(self):
        return self.d.proc.poll() is None


@contextlib.contextmanager
def setup(binary):
    with start_server(binary) as (d, api):
        yield Env(binary, d, api)


@suite.test()
def readme_rest_quickstart_runs_as_written(env):
    http = f"127.0.0.1:{env.d.http_port}"
    script = []
    for line in quickstart_block():
        if line.startswith("export DROVER_TOKEN="):
            line = f"export DROVER_TOKEN={env.api.token}"
        line = line.replace("localhost:8080", http)
        line = line.replace("mosquitto_pub -h 127.0.0.1", f"mosquitto_pub -h 127.0.0.1 -p {env.d.port}")
        line = line.replace("./build/release/drover sim ",
                            f"{env.binary} sim --mqtt 127.0.0.1:{env.d.port} ")
        line = line.replace("./build/release/drover", env.binary)
        script.append(line)
    envv = dict(os.environ, DROVER_URL=f"http://{http}")
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(script)], env=envv,
                       capture_output=True, timeout=120)
    out = r.stdout.decode()
    check(r.returncode == 0, f"the quick start failed ({r.returncode}):\n{out}\n{r.stderr.decode()}")
    check('"id":"acme"' in out, f"tenant created:\n{out}")
    check('"id":"boiler-1"' in out, f"device created:\n{out}")
    check(re.search(r'"last_seen":"\d{4}-', out), f"the device has been seen:\n{out}")
    # curl's answers have no newline: find the telemetry/latest one and decode it where it is.
    at = out.find('{"device":"boiler-1","items"')
    check(at >= 0, f"the telemetry/latest answer:\n{out}")
    items = json.JSONDecoder().raw_decode(out, at)[0]["items"]
    eq([(i["key"], i["type"], i["value"]) for i in items], [("temp", "double", 21.5)],
       "the latest telemetry of boiler-1")
    # The CLI's table: a line naming the device that is not one of curl's JSON answers.
    check(any("boiler-1" in line and "{" not in line for line in out.splitlines()),
          f"the CLI lists the device:\n{out}")
    # `drover sim` ran its simulated fleet in the same tenant.
    check("5 devices ready (5 created, 0 reused)" in out, f"drover sim provisioned:\n{out}")
    check("connected 5/5" in out and "drover sim: stopped" in out, f"drover sim ran:\n{out}")
    r = env.api.get("/api/v1/tenants/acme/devices/sim-0005/telemetry/latest")
    eq(r.status, 200, "latest telemetry of a simulated device")
    check({"temperature", "humidity", "battery", "rssi", "door", "firmware"}
          <= {i["key"] for i in r.json["items"]}, f"a simulated device's keys: {r.json}")
    # The publish went through as the device (its event is in the registry).
    wait_until(lambda: any(e.get("kind") == "connected" for e in env.api.get(
        "/api/v1/tenants/acme/devices/boiler-1/events").json["items"]), 5,
        "a connected event for the device")


if __name__ == "__main__":
    suite.main(setup, "the README quick start")
