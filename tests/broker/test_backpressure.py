#!/usr/bin/python3
"""Back-pressure: a slow online consumer slows its publishers; nothing acknowledged is lost.

The server keeps at most 40 queued messages per session (mqtt.max_queued=40).
A QoS 1 publisher sends 400 messages as fast as its 20-message window allows
to a subscriber that takes ~2 ms per message. Without back-pressure the
subscriber's queue overflows and acknowledged messages are dropped; with it
the publisher is paused and all 400 arrive, in order, exactly once.
"""
import argparse
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from drover import Drover  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

N = 400
results = []


def check(name, cond, detail=""):
    results.append(cond)
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f": {detail}"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--drover", required=True)
    args = ap.parse_args()
    with Drover(args.drover, {"mqtt.max_queued": "40", "mqtt.sys_interval": "1"}) as d:
        got, done = [], threading.Event()

        def slow(client, userdata, m):
            time.sleep(0.002)  # the PUBACK leaves only after this returns
            got.append(m.payload)
            if len(got) >= N:
                done.set()

        sub = mqtt.Client(client_id="bp-sub", protocol=mqtt.MQTTv311)
        sub.on_message = slow
        sub.connect("127.0.0.1", d.port)
        sub.subscribe("bp/t", qos=1)
        sub.loop_start()
        time.sleep(0.3)

        dropped = []
        mon = mqtt.Client(client_id="bp-mon", protocol=mqtt.MQTTv311)
        mon.on_message = lambda c, u, m: dropped.append(int(m.payload))
        mon.connect("127.0.0.1", d.port)
        mon.subscribe("$SYS/broker/messages/dropped")
        mon.loop_start()

        pub = mqtt.Client(client_id="bp-pub", protocol=mqtt.MQTTv311)
        pub.max_inflight_messages_set(20)
        pub.max_queued_messages_set(0)
        pub.connect("127.0.0.1", d.port)
        pub.loop_start()
        infos = [pub.publish("bp/t", b"%04d" % i, qos=1) for i in range(N)]
        for i in infos:
            i.wait_for_publish(timeout=30)
        check("every publish acknowledged", all(i.is_published() for i in infos))
        done.wait(30)
        time.sleep(1.5)  # let $SYS report the final drop count
        check(f"all {N} delivered", len(got) == N, f"got {len(got)}")
        check("in order, exactly once", got == [b"%04d" % i for i in range(N)],
              f"first mismatch at {next((i for i, p in enumerate(got) if p != b'%04d' % i), None)}")
        check("nothing dropped ($SYS)", dropped and dropped[-1] == 0, f"dropped={dropped[-1:] }")
        for c in (pub, sub, mon):
            c.disconnect()
            c.loop_stop()
    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
