// bench/live/publisher.mjs — the device side of bench/live: a worker thread
// that holds one MQTT connection per device and publishes paced telemetry.
//
// Runs in its own thread (worker_threads) so that publishing never delays
// the subscriber side's receive timestamps, and the other way round.
//
// Messages from the parent:
//   {cmd: 'connect'}                            → {ev: 'connected', ok, ready, failed, errors, seconds}
//   {cmd: 'run', run, qos, rate, warmup, duration, ackWait}
//                                               → {ev: 'started', t0}, then {ev: 'done', ...counts}
//   {cmd: 'close'}                              → {ev: 'closed'}
//
// Payload: {"run":R,"seq":N,"sent":T}, T = CLOCK_MONOTONIC in ns
// (process.hrtime.bigint(), the same clock in every process of the
// machine), taken just before the write.  Pacing: the total rate is spread
// over the devices round robin in 1 ms ticks, so each device publishes every
// devices/total seconds; a publisher more than 50 ms behind drops its
// backlog (counted as skipped, never sent: they take no sequence number).
import net from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';

import {
  CONNACK,
  connectPacket,
  MqttReader,
  PINGREQ,
  PUBACK,
  publishPacket,
  topicBytes,
} from './mqtt.mjs';

const cfg = workerData; // {host, port, devices, prefix, topic, user, secret, concurrency, timeoutMs}
const conns = [];
let acked = 0;
let disconnects = 0;
const errors = new Map(); // message → count

function noteError(msg) {
  errors.set(msg, (errors.get(msg) || 0) + 1);
}

function fill(template, i) {
  const dev = cfg.prefix + String(i).padStart(5, '0');
  return template.replaceAll('{device}', dev).replaceAll('{tenant}', cfg.tenant || '');
}

// Connect device i; resolves true once CONNACK 0 arrived, false otherwise.
function connectOne(i) {
  return new Promise((resolve) => {
    const dev = cfg.prefix + String(i).padStart(5, '0');
    const c = { i, sock: null, topic: topicBytes(fill(cfg.topic, i)), nextId: 1, ready: false };
    let settled = false;
    const done = (ok, why) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (!ok) {
        noteError(why);
        c.sock.destroy();
      }
      resolve(ok);
    };
    const timer = setTimeout(() => done(false, 'CONNACK timeout'), cfg.timeoutMs);
    c.sock = net.connect({ host: cfg.host, port: cfg.port });
    c.sock.setNoDelay(true);
    const reader = new MqttReader((type, flags, body) => {
      if (type === CONNACK) {
        if (body[1] === 0) {
          c.ready = true;
          conns[i] = c;
          done(true);
        } else {
          done(false, `CONNACK return code ${body[1]}`);
        }
      } else if (type === PUBACK) {
        acked++;
      }
    });
    c.sock.on('data', (d) => {
      try {
        reader.push(d);
      } catch (e) {
        noteError(`read: ${e.message}`);
        c.sock.destroy();
      }
    });
    c.sock.on('error', (e) => {
      if (!settled) done(false, `socket: ${e.code || e.message}`);
      else noteError(`socket: ${e.code || e.message}`);
    });
    c.sock.on('close', () => {
      if (!settled) done(false, 'closed before CONNACK');
      else if (c.ready) {
        c.ready = false;
        disconnects++;
      }
    });
    c.sock.on('connect', () => {
      const user = cfg.user ? fill(cfg.user, i) : null;
      const password = cfg.secret ? `${cfg.secret}-${i}` : null;
      c.sock.write(connectPacket(dev, { user, password, keepalive: 60 }));
    });
  });
}

async function connectAll() {
  const t = process.hrtime.bigint();
  let next = 0;
  let ready = 0;
  let failed = 0;
  const lane = async () => {
    while (next < cfg.devices) {
      const i = next++;
      if (await connectOne(i)) ready++;
      else failed++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(cfg.concurrency, cfg.devices) }, lane));
  // Keep-alive: a PINGREQ every 20 s on every connection (publishing alone
  // would do while a run is on, not between runs).
  setInterval(() => {
    for (const c of conns) if (c && c.ready) c.sock.write(PINGREQ);
  }, 20000).unref();
  parentPort.postMessage({
    ev: 'connected',
    ok: failed === 0,
    ready,
    failed,
    errors: Object.fromEntries(errors),
    seconds: Number(process.hrtime.bigint() - t) / 1e9,
  });
}

function run(msg) {
  const n = cfg.devices;
  const total = n * msg.rate; // messages per second, all devices
  const counts = new Int32Array(n); // messages published per device (= next seq)
  const qos = msg.qos;
  const t0 = process.hrtime.bigint();
  const t0n = Number(t0);
  const endN = t0n + (msg.warmup + msg.duration) * 1e9;
  const maxBehind = Math.max(1, Math.round(total * 0.05));
  let k = 0; // messages due so far that were sent or skipped
  let sent = 0;
  let skipped = 0;
  let notReady = 0;
  const ackBase = acked;
  const disconnectsBase = disconnects;
  const prefix = `{"run":${msg.run},"seq":`;
  parentPort.postMessage({ ev: 'started', t0: t0.toString() });

  const finish = () => {
    clearInterval(tick);
    const t1 = Number(process.hrtime.bigint());
    const waitUntil = Date.now() + msg.ackWait * 1000;
    const report = () => {
      if (qos > 0 && acked - ackBase < sent && Date.now() < waitUntil) {
        setTimeout(report, 10);
        return;
      }
      parentPort.postMessage({
        ev: 'done',
        counts,
        sent,
        skipped,
        notReady,
        acked: acked - ackBase,
        disconnects: disconnects - disconnectsBase,
        t0: t0.toString(),
        publishSeconds: (t1 - t0n) / 1e9,
        errors: Object.fromEntries(errors),
      });
    };
    report();
  };

  const tick = setInterval(() => {
    const now = Number(process.hrtime.bigint());
    if (now >= endN) {
      finish();
      return;
    }
    const due = Math.floor(((now - t0n) * total) / 1e9);
    if (due - k > maxBehind) {
      skipped += due - k - maxBehind;
      k = due - maxBehind;
    }
    for (; k < due; k++) {
      const c = conns[k % n];
      if (!c || !c.ready) {
        notReady++;
        continue;
      }
      const seq = counts[c.i]++;
      let id = 0;
      if (qos > 0) {
        id = c.nextId;
        c.nextId = id === 65535 ? 1 : id + 1;
      }
      const payload = `${prefix}${seq},"sent":${process.hrtime.bigint()}}`;
      c.sock.write(publishPacket(c.topic, payload, qos, id));
      sent++;
    }
  }, 1);
}

parentPort.on('message', (msg) => {
  if (msg.cmd === 'connect') connectAll();
  else if (msg.cmd === 'run') run(msg);
  else if (msg.cmd === 'close') {
    for (const c of conns) if (c) c.sock.destroy();
    parentPort.postMessage({ ev: 'closed' });
  }
});
