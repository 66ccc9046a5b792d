#!/usr/bin/python3
"""Crash recovery of the broker log (ADR-0005).

1. A persistent subscriber goes offline; QoS 1 and 2 messages are published
   and acknowledged; the server is killed with SIGKILL; garbage is appended to
   the log (a torn write); after restart the tail is cut, reported, and every
   acknowledged message is delivered exactly once.
2. A kill -9 loop: messages acknowledged before each kill are all delivered.
"""
import argparse
import os
import socket
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from drover import Drover  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

results = []


def check(name, cond, detail=""):
    results.append((name, bool(cond)))
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f": {detail}"))


def connect(port, cid, clean, on_message=None):
    c = mqtt.Client(client_id=cid, clean_session=clean, protocol=mqtt.MQTTv311)
    got = []
    c.on_message = on_message or (lambda cl, u, m: got.append((m.topic, m.payload, m.qos)))
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    c.got = got
    return c


def publish_acked(port, topic, payloads, qos):
    p = mqtt.Client(client_id=f"pub-{time.time_ns()}", protocol=mqtt.MQTTv311)
    p.connect("127.0.0.1", port)
    p.loop_start()
    infos = [p.publish(topic, pl, qos=qos) for pl in payloads]
    for i in infos:
        i.wait_for_publish(timeout=5)
    ok = all(i.is_published() for i in infos)
    p.disconnect()
    p.loop_stop()
    return ok


def wait_for(pred, timeout=5.0):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def subscribe_persistent(port, cid, topic):
    s = connect(port, cid, False)
    r = s.subscribe(topic, qos=2)
    time.sleep(0.2)
    s.disconnect()
    s.loop_stop()
    return r[0] == mqtt.MQTT_ERR_SUCCESS


def torn_tail(binary):
    with Drover(binary) as d:
        check("persistent subscription made", subscribe_persistent(d.port, "rec-sub", "rec/#"))
        ok1 = publish_acked(d.port, "rec/q1", [b"a%d" % i for i in range(20)], 1)
        ok2 = publish_acked(d.port, "rec/q2", [b"b%d" % i for i in range(20)], 2)
        check("publishes acknowledged", ok1 and ok2)
        d.stop(9)
        with open(os.path.join(d.data_dir, "data", "broker.log"), "ab") as f:
            f.write(b"\x40\x00\x00\x00\xde\xad\xbe\xef\x05partial")
        d.start()
        s = connect(d.port, "rec-sub", False)
        wait_for(lambda: len(s.got) >= 40)
        time.sleep(0.3)
        s.disconnect()
        s.loop_stop()
        payloads = sorted(p for _, p, _ in s.got)
        want = sorted([b"a%d" % i for i in range(20)] + [b"b%d" % i for i in range(20)])
        check("all acknowledged messages delivered after torn tail", set(payloads) == set(want),
              f"got {len(payloads)}")
        q2 = [p for t, p, _ in s.got if t == "rec/q2"]
        check("QoS 2 delivered exactly once", sorted(q2) == sorted(b"b%d" % i for i in range(20)),
              f"got {len(q2)}")
        check("torn tail reported", "torn or corrupt log tail cut" in d.read_log())


def kill_loop(binary):
    with Drover(binary) as d:
        subscribe_persistent(d.port, "loop-sub", "loop/#")
        sent = []
        for round_ in range(5):
            batch = [b"r%d-%d" % (round_, i) for i in range(10)]
            if publish_acked(d.port, "loop/x", batch, 1):
                sent += batch
            d.kill9_restart()
        s = connect(d.port, "loop-sub", False)
        wait_for(lambda: len({p for _, p, _ in s.got}) >= len(sent))
        s.disconnect()
        s.loop_stop()
        got = {p for _, p, _ in s.got}
        check("kill -9 loop: every acknowledged message delivered", got >= set(sent) and len(sent) == 50,
              f"missing {len(set(sent) - got)} of {len(sent)}")


def kill_during_ingest(binary):
    """SIGKILL while a publisher streams QoS 1: everything PUBACKed must survive."""
    import threading
    with Drover(binary) as d:
        subscribe_persistent(d.port, "ingest-sub", "ingest/#")
        acked, pending, stop = [], {}, threading.Event()
        pub = mqtt.Client(client_id="ingest-pub", protocol=mqtt.MQTTv311)
        pub.max_inflight_messages_set(20)
        pub.on_publish = lambda c, u, mid: acked.append(pending.get(mid))
        pub.connect("127.0.0.1", d.port)
        pub.loop_start()

        def produce():
            i = 0
            while not stop.is_set() and i < 100000:
                payload = b"m%d" % i
                info = pub.publish("ingest/x", payload, qos=1)
                pending[info.mid] = payload
                i += 1
                if i % 20 == 0:
                    time.sleep(0.001)

        t = threading.Thread(target=produce)
        t.start()
        wait_for(lambda: len(acked) > 300, 10)
        d.stop(9)
        stop.set()
        t.join()
        pub.loop_stop()
        survivors = [a for a in acked if a is not None]
        d.start()
        s = connect(d.port, "ingest-sub", False)
        wait_for(lambda: {p for _, p, _ in s.got} >= set(survivors), 10)
        s.disconnect()
        s.loop_stop()
        missing = set(survivors) - {p for _, p, _ in s.got}
        check(f"kill -9 during ingest: all {len(survivors)} acknowledged messages delivered",
              len(survivors) > 300 and not missing, f"missing {len(missing)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--drover", required=True)
    a = ap.parse_args()
    for t in (torn_tail, kill_loop, kill_during_ingest):
        try:
            t(a.drover)
        except Exception as e:  # a crash of the harness is a failure, not an abort
            check(t.__name__, False, repr(e))
    failed = sum(1 for _, ok in results if not ok)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
