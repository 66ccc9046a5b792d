#!/usr/bin/python3
"""Run the 1,738-case conformance corpus over MQTT over WebSocket against a fresh drover.

Same profile as run_against_drover.py (anonymous loopback clients, Topic Alias Maximum 10,
Receive Maximum 20, the 1 MiB maximum packet size), plus the HTTP listener on a free loopback
port: every case's bytes travel in masked binary frames to ws://127.0.0.1:<port>/mqtt
(run.py --websocket /mqtt).
"""
import argparse
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from drover import Drover, free_port  # noqa: E402


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--drover", required=True)
    ap.add_argument("--path", default="/mqtt", help="ws.path (default /mqtt)")
    ap.add_argument("--filter", default=None, help="passed to run.py")
    args = ap.parse_args()
    corpus = os.environ.get("DROVER_CONFORMANCE_DIR",
                            os.path.join(HERE, "..", "..", "..", "shared", "conformance", "mqtt-sequences"))
    if not os.path.isdir(corpus):
        # A fork without ../shared (e.g. on GitHub): ctest reports the test as skipped.
        print(f"conformance corpus not found at {corpus}; set DROVER_CONFORMANCE_DIR")
        return 77
    http_port = free_port()
    settings = {"mqtt.sys_interval": "0", "http.listen": f"127.0.0.1:{http_port}", "ws.path": args.path}
    try:
        with Drover(args.drover, settings) as d:
            if not wait_port(http_port):
                print(f"drover is not listening on the HTTP port {http_port}:\n" + d.read_log())
                return 1
            cmd = ["/usr/bin/python3", os.path.join(HERE, "run.py"), "--host", "127.0.0.1",
                   "--port", str(http_port), "--websocket", args.path, "--corpus", corpus, "--jobs", "1"]
            if args.filter:
                cmd += ["--filter", args.filter]
            rc = subprocess.call(cmd)
            if not d.alive():
                print("drover died during the corpus run:\n" + d.read_log())
                return 1
    except RuntimeError as e:  # the broker crashed or a sanitizer spoke (its log was printed)
        print(f"error: {e}")
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
