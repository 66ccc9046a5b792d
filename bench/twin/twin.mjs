#!/usr/bin/env node
// bench/twin/twin.mjs — the client of bench/twin.sh: commands end to end and
// shadow updates per second against Drover, and the same MQTT exchanges
// through Mosquitto as a broker-only reference.
//
//   node twin.mjs setup --http-port P --devices N                 (env DROVER_TOKEN, TWIN_SECRET)
//   node twin.mjs run   --broker drover|mosquitto --mqtt-port P [--http-port P] --pid PID
//                       --devices N --runs SPEC --warmup S --duration S --out FILE
//
// Two threads: a worker (devices.mjs) holds the N device connections and
// answers every command request at once; this thread is the application
// (HTTP for Drover) or, for Mosquitto, the MQTT client playing the
// platform's part.  Latency is measured by whoever starts the exchange,
// on one clock (CLOCK_MONOTONIC).
//
// --runs is a comma list of KIND:N:
//   cmd:C       C commands in flight.  Drover: POST .../devices/{d}/commands
//               {"name","params","wait_ms":10000} over keep-alive HTTP
//               connections, done at the 200 with state "succeeded".
//               Mosquitto: one MQTT client publishes
//               devices/{d}/commands/{id}/request (QoS 1) and waits for the
//               device's .../response on its devices/+/commands/+/response
//               subscription.
//   cmdasync:C  Drover only: POST without wait_ms (202), then
//               GET /commands/{id}?wait_ms=10000 until it is finished.
//   mqtt:W      shadow updates from devices, W in flight per device
//               (devices/{d}/shadow/update → update/accepted).  Mosquitto:
//               the platform client, subscribed to devices/+/shadow/update,
//               answers each on .../update/accepted (no storage: not the
//               same work).
//   rest:C      Drover only: PATCH .../devices/{d}/shadows/classic
//               {"state":{"desired":{"cfg":K}}}, C in flight, done at the 200.
// Devices are taken round robin.  Each run: --warmup s, then --duration s
// measured (rate: exchanges completed inside the window; latency: those
// started inside it), then a drain (no new ones; the outstanding finish).
// Around the window: the server's CPU, this process's, the kernel threads',
// the rest of the machine's, and for Drover the twin counters of /metrics.
// --wait-quiet S waits up to S seconds for a quiet machine before each run;
// --retry-busy N runs again, up to N times, a run during which other
// processes took over 25 % of a CPU, and keeps the least disturbed one.
//
// Output: one JSON object (--out FILE, else stdout); progress on stderr.
// Only loopback addresses are used (--host defaults to 127.0.0.1).
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';

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
import { cpuCount, cpuNs, Hist, kthreadsNs, log, machineBusyNs, nowNs, sleep, waitQuiet } from './common.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));

const { values: opt, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    broker: { type: 'string', default: 'drover' },
    host: { type: 'string', default: '127.0.0.1' },
    'mqtt-port': { type: 'string' },
    'http-port': { type: 'string' },
    tenant: { type: 'string', default: 'twinbench' },
    devices: { type: 'string', default: '100' },
    prefix: { type: 'string', default: 'dev' },
    warmup: { type: 'string', default: '3' },
    duration: { type: 'string', default: '20' },
    drain: { type: 'string', default: '15' },
    runs: { type: 'string', default: 'cmd:32' },
    pid: { type: 'string' },
    concurrency: { type: 'string', default: '20' },
    chunk: { type: 'string', default: '200' },
    'wait-quiet': { type: 'string', default: '0' },
    'retry-busy': { type: 'string', default: '0' },
    out: { type: 'string' },
  },
});

const HOST = opt.host;
const TENANT = opt.tenant;
const DEVICES = Number(opt.devices);
const TOKEN = process.env.DROVER_TOKEN || '';
const SECRET = process.env.TWIN_SECRET || '';
const devName = (i) => opt.prefix + String(i).padStart(5, '0');
const base = `/api/v1/tenants/${TENANT}`;

// -- HTTP (keep-alive) ----------------------------------------------------------------

let agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

// One request; resolves {status, body} (body a string), rejects on a socket error.
function request(method, p, body) {
  return new Promise((resolve, reject) => {
    const headers = { Authorization: `Bearer ${TOKEN}` };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = Buffer.byteLength(body);
    }
    const r = http.request({ host: HOST, port: Number(opt['http-port']), method, path: p, agent, headers }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    r.setTimeout(60000, () => r.destroy(new Error('no answer in 60 s')));
    r.on('error', reject);
    r.end(body);
  });
}

// The twin service's counters from /metrics (Drover only).
const METRICS = /^drover_(twin|shadow|commands)_\w+ /;
async function twinMetrics() {
  if (opt.broker !== 'drover') return null;
  try {
    const r = await fetch(`http://${HOST}:${opt['http-port']}/metrics`, {
      headers: { Authorization: `Bearer ${TOKEN}` },
      signal: AbortSignal.timeout(5000),
    });
    if (!r.ok) return { status: r.status };
    const out = {};
    for (const line of (await r.text()).split('\n')) {
      if (METRICS.test(line)) {
        const sp = line.lastIndexOf(' ');
        out[line.slice(0, sp)] = Number(line.slice(sp + 1));
      }
    }
    return out;
  } catch (e) {
    return { error: String(e.message || e) };
  }
}

// -- setup (Drover) -----------------------------------------------------------------------

async function setup() {
  if (!TOKEN || !SECRET) throw new Error('setup needs DROVER_TOKEN and TWIN_SECRET in the environment');
  const t = nowNs();
  let r = await request('POST', '/api/v1/tenants', JSON.stringify({ id: TENANT, name: 'Twin bench' }));
  if (r.status !== 201 && r.status !== 409) throw new Error(`POST /api/v1/tenants: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  const chunk = Number(opt.chunk);
  let created = 0;
  for (let i = 0; i < DEVICES; i += chunk) {
    let csv = 'id,secret\n';
    for (let j = i; j < Math.min(DEVICES, i + chunk); j++) csv += `${devName(j)},${SECRET}-${j}\n`;
    const res = await fetch(`http://${HOST}:${opt['http-port']}${base}/device-imports`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'text/csv' },
      body: csv,
      signal: AbortSignal.timeout(600000),
    });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`POST device-imports: HTTP ${res.status} ${text.slice(0, 300)}`);
    const a = JSON.parse(text);
    created += a.created;
    const bad = (a.rejected || []).filter((x) => !/exist|taken|conflict|used/i.test(x.reason || ''));
    if (bad.length) throw new Error(`device import rejected ${bad.length} rows, e.g. ${JSON.stringify(bad[0])}`);
  }
  return { ok: true, created, seconds: (nowNs() - t) / 1e9 };
}

// -- the device thread ------------------------------------------------------------------------

function startDevices() {
  const drover = opt.broker === 'drover';
  const w = new Worker(path.join(HERE, 'devices.mjs'), {
    workerData: {
      host: HOST,
      port: Number(opt['mqtt-port']),
      devices: DEVICES,
      prefix: opt.prefix,
      tenant: TENANT,
      auth: drover,
      secret: SECRET,
      concurrency: Number(opt.concurrency),
      timeoutMs: 120000,
    },
  });
  const waiters = [];
  w.on('message', (m) => {
    const i = waiters.findIndex((x) => x.ev === m.ev);
    if (i >= 0) waiters.splice(i, 1)[0].resolve(m);
  });
  w.on('error', (e) => {
    for (const x of waiters.splice(0)) x.reject(e);
  });
  const next = (ev) => new Promise((resolve, reject) => waiters.push({ ev, resolve, reject }));
  return {
    worker: w,
    ask: (msg, ev) => {
      const p = next(ev);
      w.postMessage(msg);
      return p;
    },
  };
}

// -- the Mosquitto reference's platform client -------------------------------------------------

// One MQTT connection doing the platform's part of both exchanges:
// commands (publish a request, resolve when the response arrives) and the
// shadow service (answer every update on .../update/accepted).
function platformClient() {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: HOST, port: Number(opt['mqtt-port']) });
    sock.setNoDelay(true);
    const waiting = new Map(); // command id → resolve
    const versions = new Map(); // device → shadow version
    let nextId = 1;
    let subacks = 0;
    const pc = { errors: 0, firstError: null, updates: 0 };
    const id = () => {
      const v = nextId;
      nextId = v === 65535 ? 1 : v + 1;
      return v;
    };
    const fail = (why) => {
      pc.errors++;
      if (!pc.firstError) pc.firstError = why;
    };
    const filters = ['devices/+/commands/+/response', 'devices/+/shadow/update'];
    const reader = new MqttReader((type, flags, body) => {
      if (type === PUBLISH) {
        const p = parsePublish(flags, body);
        if (p.qos > 0) sock.write(pubackPacket(p.id));
        const parts = p.topic.split('/');
        if (parts[2] === 'commands' && parts[4] === 'response') {
          const w = waiting.get(parts[3]);
          if (!w) {
            fail(`response for no waiting command ${parts[3]}`);
            return;
          }
          waiting.delete(parts[3]);
          w(p.payload);
        } else if (parts[2] === 'shadow' && parts[3] === 'update') {
          // The service's answer: parse the update, give it a version, echo the token.
          let u;
          try {
            u = JSON.parse(p.payload);
          } catch {
            fail('update is not JSON');
            return;
          }
          const v = (versions.get(parts[1]) || 0) + 1;
          versions.set(parts[1], v);
          const ans = { state: u.state, metadata: {}, version: v, timestamp: Date.now(), client_token: u.client_token };
          sock.write(publishPacket(topicBytes(`${p.topic}/accepted`), JSON.stringify(ans), 1, id()));
          pc.updates++;
        }
      } else if (type === CONNACK) {
        if (body[1] !== 0) reject(new Error(`platform client: CONNACK ${body[1]}`));
        else filters.forEach((f, k) => sock.write(subscribePacket(k + 1, f, 1)));
      } else if (type === SUBACK && ++subacks === filters.length) {
        resolve(pc);
      }
    });
    sock.on('data', (d) => reader.push(d));
    sock.on('error', (e) => reject(e));
    sock.on('connect', () => sock.write(connectPacket('twin-bench-platform', { keepalive: 60 })));
    const ping = setInterval(() => sock.write(PINGREQ), 20000);
    ping.unref();
    // A command exchange: the response payload, or a rejection after 60 s.
    pc.command = (dev, cid, k) => new Promise((res, rej) => {
      const timer = setTimeout(() => {
        waiting.delete(cid);
        rej(new Error('no response in 60 s'));
      }, 60000);
      waiting.set(cid, (payload) => {
        clearTimeout(timer);
        res(payload);
      });
      const req = `{"id":"${cid}","name":"bench","params":{"n":${k}},"attempt":1,"timeout_ms":30000}`;
      sock.write(publishPacket(topicBytes(`devices/${dev}/commands/${cid}/request`), req, 1, id()));
    });
    pc.close = () => sock.destroy();
  });
}

// -- one run ----------------------------------------------------------------------------------

// CPU counters now: the server, this process, the whole machine.
function cpuSnapshot() {
  return {
    t: nowNs(),
    server: opt.pid ? cpuNs(`/proc/${opt.pid}/stat`) : null,
    self: cpuNs('/proc/self/stat'),
    machine: machineBusyNs(),
    kthreads: kthreadsNs(),
  };
}

const pct = (a, b, key) => (a[key] === null || b[key] === null ? null : (100 * (b[key] - a[key])) / (b.t - a.t));

// C closed loops of `exchange(k)` (a promise: true when it ended the way it
// should, or a string saying why not) from now until `we`.
async function loops(C, exchange, win, st) {
  let k = 0;
  const loop = async () => {
    while (nowNs() < win.we) {
      const t = nowNs();
      const n = k++;
      let res;
      try {
        res = await exchange(n);
      } catch (e) {
        res = `error: ${e.message || e}`;
      }
      const now = nowNs();
      if (t >= win.ws && t < win.we) st.startedInWindow++;
      if (res === true) {
        st.done++;
        if (now >= win.ws && now < win.we) st.doneInWindow++;
        if (t >= win.ws && t < win.we) st.hist.add(now - t);
      } else {
        st.failed++;
        const why = String(res).slice(0, 120);
        st.why[why] = (st.why[why] || 0) + 1;
        if (st.failed > 1000 && st.done === 0) throw new Error(`every exchange fails: ${why}`);
      }
    }
  };
  await Promise.all(Array.from({ length: C }, loop));
}

// The exchange function of a run kind.
function exchangeFor(kind, pc) {
  const drover = opt.broker === 'drover';
  if (kind === 'cmd' && drover) {
    return async (k) => {
      const body = `{"name":"bench","params":{"n":${k}},"timeout_ms":30000,"wait_ms":10000}`;
      const r = await request('POST', `${base}/devices/${devName(k % DEVICES)}/commands`, body);
      if (r.status !== 200) return `HTTP ${r.status} ${r.body.slice(0, 80)}`;
      const c = JSON.parse(r.body);
      return c.state === 'succeeded' ? true : `state ${c.state}`;
    };
  }
  if (kind === 'cmdasync' && drover) {
    return async (k) => {
      const body = `{"name":"bench","params":{"n":${k}},"timeout_ms":30000}`;
      const r = await request('POST', `${base}/devices/${devName(k % DEVICES)}/commands`, body);
      if (r.status !== 202) return `POST: HTTP ${r.status} ${r.body.slice(0, 80)}`;
      let c = JSON.parse(r.body);
      for (let i = 0; i < 10 && !['succeeded', 'failed', 'timed_out', 'expired', 'cancelled'].includes(c.state); i++) {
        const g = await request('GET', `${base}/commands/${c.id}?wait_ms=10000`);
        if (g.status !== 200) return `GET: HTTP ${g.status} ${g.body.slice(0, 80)}`;
        c = JSON.parse(g.body);
      }
      return c.state === 'succeeded' ? true : `state ${c.state}`;
    };
  }
  if (kind === 'rest' && drover) {
    return async (k) => {
      const body = `{"state":{"desired":{"cfg":${k}}}}`;
      const r = await request('PATCH', `${base}/devices/${devName(k % DEVICES)}/shadows/classic`, body);
      return r.status === 200 ? true : `HTTP ${r.status} ${r.body.slice(0, 80)}`;
    };
  }
  if (kind === 'cmd' && !drover) {
    return async (k) => {
      const payload = await pc.command(devName(k % DEVICES), `c${k}`, k);
      return payload.includes('"succeeded"') ? true : `response ${payload.slice(0, 80)}`;
    };
  }
  return null;
}

async function oneRun(devs, pc, spec, runNo) {
  const [kind, nS] = spec.split(':');
  const n = Number(nS);
  const warmup = Number(opt.warmup);
  const duration = Number(opt.duration);
  const res = { name: spec, kind, n, run: runNo, warmup_s: warmup, duration_s: duration };
  if (!['cmd', 'cmdasync', 'mqtt', 'rest'].includes(kind) || !(n > 0)) {
    return { ...res, ok: false, error: `bad run ${spec}` };
  }
  const exchange = kind === 'mqtt' ? null : exchangeFor(kind, pc);
  if (kind !== 'mqtt' && !exchange) return { ...res, ok: false, skipped: true, error: `${kind} does not apply to ${opt.broker}` };

  const busyBefore = Number(opt['wait-quiet']) > 0 ? await waitQuiet(Number(opt['wait-quiet'])) : null;
  agent.destroy();
  agent = new http.Agent({ keepAlive: true, maxSockets: Math.max(1, n) });
  const devStats0 = await devs.ask({ cmd: 'stats' }, 'stats');
  const t0 = nowNs();
  const win = { ws: t0 + warmup * 1e9, we: t0 + (warmup + duration) * 1e9 };
  let c0 = null;
  let c1 = null;
  let m0 = null;
  let m1 = null;
  const at = (ns, fn) => setTimeout(fn, Math.max(0, (ns - nowNs()) / 1e6));
  const edges = new Promise((resolve) => {
    at(win.ws, async () => {
      c0 = cpuSnapshot();
      m0 = await twinMetrics();
    });
    at(win.we, async () => {
      c1 = cpuSnapshot();
      m1 = await twinMetrics();
      resolve();
    });
  });
  log(`== ${opt.broker} ${spec}: ${warmup} s warm-up + ${duration} s`);

  const st = { hist: new Hist(), done: 0, doneInWindow: 0, startedInWindow: 0, failed: 0, why: {} };
  if (kind === 'mqtt') {
    const d = await devs.ask({ cmd: 'shadow', run: runNo, inflight: n, ws: win.ws, we: win.we,
      drainMs: Number(opt.drain) * 1000 }, 'shadow-done');
    Object.assign(res, {
      sent: d.sent,
      accepted: d.accepted,
      rejected: d.rejected,
      reject_codes: d.reject_codes,
      first_rejected: d.first_rejected,
      unanswered: d.unanswered,
      device_disconnects: d.disconnects,
      device_errors: d.errors,
    });
    st.done = d.accepted;
    st.doneInWindow = d.accepted_in_window;
    st.startedInWindow = d.sent_in_window;
    st.failed = d.rejected + d.unanswered;
    res.latency_us = d.latency_us;
  } else {
    // A loop still waiting at `we` finishes its exchange: that is the drain.
    const timeout = sleep((warmup + duration + Number(opt.drain)) * 1000).then(() => 'drain-timeout');
    const r = await Promise.race([loops(n, exchange, win, st).then(() => 'ok'), timeout]);
    if (r !== 'ok') st.why['still waiting after the drain'] = n;
    res.latency_us = st.hist.summary();
  }
  await edges;
  const devStats1 = await devs.ask({ cmd: 'stats' }, 'stats');

  const window = (c1.t - c0.t) / 1e9;
  const serverCpu = pct(c0, c1, 'server');
  const selfCpu = pct(c0, c1, 'self');
  const machineCpu = pct(c0, c1, 'machine');
  const kernelCpu = pct(c0, c1, 'kthreads');
  const delta = {};
  if (m0 && m1 && !m0.error && !m1.error) for (const key of Object.keys(m1)) delta[key] = m1[key] - (m0[key] || 0);
  const batches = delta.drover_twin_batches_total;
  Object.assign(res, {
    ok: st.failed === 0 && st.doneInWindow > 0,
    window_s: window,
    completed: st.done,
    completed_in_window: st.doneInWindow,
    started_in_window: st.startedInWindow,
    rate: st.doneInWindow / window,
    failed: st.failed,
    failures: st.why,
    device_requests: devStats1.requests - devStats0.requests,
    device_responses: devStats1.responses - devStats0.responses,
    server_cpu_pct: serverCpu,
    server_cpu_us_per_op: c0.server === null ? null : (c1.server - c0.server) / 1000 / Math.max(1, st.doneInWindow),
    client_cpu_pct: selfCpu,
    // The kernel's own threads (the journal and writeback work of the
    // server's fsyncs), then everything else on the machine: other
    // processes and interrupts; in % of one CPU.
    kernel_threads_cpu_pct: kernelCpu,
    others_cpu_pct: machineCpu === null || serverCpu === null || kernelCpu === null ? null
      : Math.max(0, machineCpu - serverCpu - selfCpu - kernelCpu),
    cpus: cpuCount(),
    busy_before_pct: busyBefore,
    metrics_delta: Object.keys(delta).length ? delta : null,
    metrics_error: m1 && (m1.error || m1.status) ? m1 : null,
    twin_batches_per_s: batches === undefined ? null : batches / window,
    ops_per_batch: batches ? st.doneInWindow / batches : null,
    device_messages_per_batch: batches ? delta.drover_twin_device_messages_total / batches : null,
  });
  if (!res.ok && !res.error) {
    res.error = st.doneInWindow === 0 ? 'nothing completed in the window' : `${st.failed} failed: ${JSON.stringify(st.why)}`;
  }
  const l = res.latency_us;
  log(`   ${res.rate.toFixed(0)}/s, p50 ${l.p50} µs, p99 ${l.p99} µs, failed ${st.failed}`
    + `, server CPU ${serverCpu === null ? '?' : serverCpu.toFixed(0)} %`
    + (res.ops_per_batch ? `, ${res.ops_per_batch.toFixed(2)} per twin transaction` : ''));
  return res;
}

async function run() {
  const out = { ok: true, broker: opt.broker, devices: DEVICES, tenant: TENANT, runs: [] };
  const devs = startDevices();
  log(`== ${opt.broker}: connecting ${DEVICES} devices`);
  const con = await devs.ask({ cmd: 'connect' }, 'connected');
  out.connect = con;
  log(`   ${con.ready} ready in ${con.seconds.toFixed(1)} s, ${con.failed} failed${con.failed ? ` ${JSON.stringify(con.errors)}` : ''}`);
  if (con.ready === 0) {
    await devs.worker.terminate();
    return { ...out, ok: false, error: `no device could connect: ${JSON.stringify(con.errors)}` };
  }
  let pc = null;
  if (opt.broker !== 'drover') pc = await platformClient();
  let runNo = 0;
  for (const spec of opt.runs.split(',').filter(Boolean)) {
    let r = await oneRun(devs, pc, spec, ++runNo);
    let retries = 0;
    for (; retries < Number(opt['retry-busy']) && r.others_cpu_pct > 25; retries++) {
      log(`   other processes took ${r.others_cpu_pct.toFixed(0)} % of a CPU: running it again`);
      const again = await oneRun(devs, pc, spec, ++runNo);
      if (!(again.others_cpu_pct >= r.others_cpu_pct)) r = again;
    }
    r.busy_retries = retries;
    out.runs.push(r);
    if (!r.ok && !r.skipped) out.ok = false;
  }
  if (pc) {
    out.platform_errors = pc.errors;
    out.platform_first_error = pc.firstError;
    if (pc.errors) out.ok = false;
    pc.close();
  }
  if (con.failed) out.ok = false;
  await devs.ask({ cmd: 'close' }, 'closed');
  await devs.worker.terminate();
  return out;
}

async function main() {
  const cmd = positionals[0];
  let out;
  try {
    if (cmd === 'setup') out = await setup();
    else if (cmd === 'run') out = await run();
    else throw new Error('usage: twin.mjs setup|run [options] (see the top of the file)');
  } catch (e) {
    out = { ok: false, error: String(e.stack || e) };
  }
  agent.destroy();
  const text = `${JSON.stringify(out, null, 1)}\n`;
  if (opt.out) fs.writeFileSync(opt.out, text);
  else process.stdout.write(text);
  process.exit(out.ok ? 0 : 1);
}

main();
