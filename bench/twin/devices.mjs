// bench/twin/devices.mjs — the device side of bench/twin: a worker thread
// holding one MQTT 3.1.1 connection per device (the raw codec of
// bench/live/mqtt.mjs: a few µs per message, where MQTT.js would be the
// bottleneck on a 2-core machine).
//
// Every device subscribes at QoS 1 to
//   devices/<id>/commands/+/request       and answers every request at once on
//                                         .../<cid>/response with
//                                         {"status":"succeeded","result":{"ok":true}}
//                                         at QoS 1 (no separate ack);
//   devices/<id>/shadow/update/accepted   the answers to its shadow updates;
//   devices/<id>/shadow/update/rejected
// The same program serves Drover (user <tenant>/<device>, a password) and
// the Mosquitto reference (anonymous), where another client plays the
// platform's part.
//
// Messages from the parent:
//   {cmd: 'connect'}   → {ev: 'connected', ok, ready, failed, errors, seconds}
//   {cmd: 'shadow', run, inflight, ws, we, drainMs}
//        every device keeps `inflight` updates
//        {"state":{"reported":{"seq":K,"t":T}},"client_token":"R.K"} to
//        devices/<id>/shadow/update (QoS 1) outstanding until `we`
//        (monotonic ns), then waits for the rest (at most drainMs)
//                      → {ev: 'shadow-done', ...counts, latency}
//   {cmd: 'stats'}     → {ev: 'stats', requests, responses, errors}
//   {cmd: 'close'}     → {ev: 'closed'}
// Shadow latency is publish written → update/accepted read, for updates
// written inside [ws, we); the rate counts the accepted answers read inside
// [ws, we).
import net from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';

import {
  CONNACK,
  connectPacket,
  MqttReader,
  parsePublish,
  PINGREQ,
  PUBLISH,
  pubackPacket,
  publishPacket,
  SUBACK,
  subscribePacket,
  topicBytes,
} from '../live/mqtt.mjs';
import { Hist, nowNs, numField, strField } from './common.mjs';

const cfg = workerData; // {host, port, devices, prefix, tenant, auth, secret, concurrency, timeoutMs}
const conns = [];
const errors = new Map(); // message → count
let requests = 0; // command requests received
let responses = 0; // responses published
let disconnects = 0;
let shadow = null; // the shadow run in progress

const RESPONSE = '{"status":"succeeded","result":{"ok":true}}';
const SUBS = ['commands/+/request', 'shadow/update/accepted', 'shadow/update/rejected'];

function noteError(msg) {
  errors.set(msg, (errors.get(msg) || 0) + 1);
}

const devName = (i) => cfg.prefix + String(i).padStart(5, '0');

function nextId(c) {
  const id = c.nextId;
  c.nextId = id === 65535 ? 1 : id + 1;
  return id;
}

// -- shadow updates -----------------------------------------------------------------

function sendUpdate(c) {
  const r = shadow;
  const k = c.seq++;
  const token = `${r.run}.${c.i}.${k}`;
  const t = nowNs();
  c.pending.set(token, t);
  r.sent++;
  if (t >= r.ws && t < r.we) r.sentInWindow++;
  const payload = `{"state":{"reported":{"seq":${k},"t":${t}}},"client_token":"${token}"}`;
  c.sock.write(publishPacket(c.shadowTopic, payload, 1, nextId(c)));
}

// An update/accepted or update/rejected for device c.
function onShadowAnswer(c, payload, accepted) {
  const now = nowNs();
  const r = shadow;
  const token = strField(payload, 'client_token');
  const sent = token === null ? undefined : c.pending.get(token);
  if (!r || sent === undefined) {
    noteError(accepted ? 'update/accepted for no pending update' : 'update/rejected for no pending update');
    return;
  }
  c.pending.delete(token);
  r.pendingTotal--;
  if (accepted) {
    r.accepted++;
    if (now >= r.ws && now < r.we) r.acceptedInWindow++;
    if (sent >= r.ws && sent < r.we) r.hist.add(now - sent);
  } else {
    r.rejected++;
    const code = numField(payload, 'code');
    r.codes[code] = (r.codes[code] || 0) + 1;
    if (!r.firstRejected) r.firstRejected = payload.slice(0, 200);
  }
  if (now < r.we && c.ready) {
    sendUpdate(c);
    r.pendingTotal++;
  }
}

function startShadow(msg) {
  shadow = {
    run: msg.run,
    ws: msg.ws,
    we: msg.we,
    hist: new Hist(),
    sent: 0,
    sentInWindow: 0,
    accepted: 0,
    acceptedInWindow: 0,
    rejected: 0,
    codes: {},
    firstRejected: null,
    pendingTotal: 0,
  };
  const disc0 = disconnects;
  for (const c of conns) {
    if (!c || !c.ready) continue;
    c.pending.clear();
    for (let j = 0; j < msg.inflight; j++) {
      sendUpdate(c);
      shadow.pendingTotal++;
    }
  }
  const finish = () => {
    const r = shadow;
    shadow = null;
    parentPort.postMessage({
      ev: 'shadow-done',
      sent: r.sent,
      sent_in_window: r.sentInWindow,
      accepted: r.accepted,
      accepted_in_window: r.acceptedInWindow,
      rejected: r.rejected,
      reject_codes: r.codes,
      first_rejected: r.firstRejected,
      unanswered: r.pendingTotal,
      disconnects: disconnects - disc0,
      latency_us: r.hist.summary(),
      errors: Object.fromEntries(errors),
    });
  };
  const check = () => {
    const now = nowNs();
    if (now < shadow.we) return;
    if (shadow.pendingTotal <= 0 || now > shadow.we + msg.drainMs * 1e6) {
      clearInterval(timer);
      finish();
    }
  };
  const timer = setInterval(check, 5);
}

// -- commands -------------------------------------------------------------------------

// A request on devices/<id>/commands/<cid>/request: answer on .../response.
function onRequest(c, topic) {
  requests++;
  const rt = `${topic.slice(0, -'request'.length)}response`;
  c.sock.write(publishPacket(topicBytes(rt), RESPONSE, 1, nextId(c)));
  responses++;
}

// -- connections ----------------------------------------------------------------------

// Connect and subscribe device i; true once every SUBACK granted QoS 1.
function connectOne(i) {
  return new Promise((resolve) => {
    const dev = devName(i);
    const base = `devices/${dev}/`;
    const c = {
      i,
      sock: null,
      shadowTopic: topicBytes(`${base}shadow/update`),
      nextId: 1,
      ready: false,
      seq: 0,
      pending: new Map(),
    };
    let subacks = 0;
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
    const timer = setTimeout(() => done(false, 'CONNACK/SUBACK timeout'), cfg.timeoutMs);
    c.sock = net.connect({ host: cfg.host, port: cfg.port });
    c.sock.setNoDelay(true);
    const reader = new MqttReader((type, flags, body) => {
      if (type === PUBLISH) {
        const p = parsePublish(flags, body);
        if (p.qos > 0) c.sock.write(pubackPacket(p.id));
        if (p.topic.endsWith('/request')) onRequest(c, p.topic);
        else if (p.topic.endsWith('/update/accepted')) onShadowAnswer(c, p.payload, true);
        else if (p.topic.endsWith('/update/rejected')) onShadowAnswer(c, p.payload, false);
        else noteError(`unexpected topic ${p.topic.slice(base.length)}`);
      } else if (type === CONNACK) {
        if (body[1] !== 0) {
          done(false, `CONNACK return code ${body[1]}`);
          return;
        }
        SUBS.forEach((s, k) => c.sock.write(subscribePacket(k + 1, base + s, 1)));
      } else if (type === SUBACK) {
        if (body[2] === 0x80) done(false, `SUBACK refused ${SUBS[body.readUInt16BE(0) - 1]}`);
        else if (++subacks === SUBS.length) {
          c.ready = true;
          conns[i] = c;
          done(true);
        }
      }
      // PUBACK, PINGRESP: nothing to do (the responses' PUBACKs are not waited for).
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
      if (!settled) done(false, 'closed before SUBACK');
      else if (c.ready) {
        c.ready = false;
        disconnects++;
        noteError('device disconnected');
      }
    });
    c.sock.on('connect', () => {
      const user = cfg.auth ? `${cfg.tenant}/${dev}` : null;
      const password = cfg.auth ? `${cfg.secret}-${i}` : null;
      c.sock.write(connectPacket(dev, { user, password, keepalive: 60 }));
    });
  });
}

async function connectAll() {
  const t = nowNs();
  let next = 0;
  let ready = 0;
  let failed = 0;
  const lane = async () => {
    while (next < cfg.devices) {
      if (await connectOne(next++)) ready++;
      else failed++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(cfg.concurrency, cfg.devices) }, lane));
  setInterval(() => {
    for (const c of conns) if (c && c.ready) c.sock.write(PINGREQ);
  }, 20000).unref();
  parentPort.postMessage({
    ev: 'connected',
    ok: failed === 0,
    ready,
    failed,
    errors: Object.fromEntries(errors),
    seconds: (nowNs() - t) / 1e9,
  });
}

parentPort.on('message', (msg) => {
  if (msg.cmd === 'connect') connectAll();
  else if (msg.cmd === 'shadow') startShadow(msg);
  else if (msg.cmd === 'stats') {
    parentPort.postMessage({ ev: 'stats', requests, responses, disconnects, errors: Object.fromEntries(errors) });
  } else if (msg.cmd === 'close') {
    for (const c of conns) if (c) c.sock.destroy();
    parentPort.postMessage({ ev: 'closed' });
  }
});
