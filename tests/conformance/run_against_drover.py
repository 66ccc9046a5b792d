#!/usr/bin/python3
"""Run the 1,738-case conformance corpus against a freshly started drover.

The server runs with the "conformance profile" the corpus README assumes:
anonymous clients on loopback (the default), Topic Alias Maximum 10 and
Receive Maximum 20 (the defaults), no maximum packet size below what the
cases send (the 1 MiB default).
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from drover import Drover  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--drover", required=True)
    args = ap.parse_args()
    corpus = os.environ.get("DROVER_CONFORMANCE_DIR",
                            os.path.join(HERE, "..", "..", "..", "shared", "conformance", "mqtt-sequences"))
    if not os.path.isdir(corpus):
        # A fork without ../shared (e.g. on GitHub): ctest reports the test as skipped.
        print(f"conformance corpus not found at {corpus}; set DROVER_CONFORMANCE_DIR")
        return 77
    with Drover(args.drover, {"mqtt.sys_interval": "0"}) as d:
        rc = subprocess.call(["/usr/bin/python3", os.path.join(HERE, "run.py"), "--host", "127.0.0.1",
                              "--port", str(d.port), "--corpus", corpus, "--jobs", "1"])
        if not d.alive():
            print("drover died during the corpus run:\n" + d.read_log())
            return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
