#!/usr/bin/env node
// bench/live/live.mjs — the client of bench/live.sh: MQTT device publishers
// and live-stream subscribers in one process, and the latency meter.
//
//   node live.mjs setup   --http-port P --tenant T --devices N        (env DROVER_TOKEN, LIVE_SECRET)
//   node live.mjs latency --broker drover|mosquitto --mqtt-port P ... --runs SPEC --out FILE
//   node live.mjs idle    --transport ws|sse --http-port P --steps 1000,...,19000 --pid PID --out FILE
//
// latency: a worker thread (publisher.mjs) holds one MQTT connection per
// device and publishes {"run":R,"seq":N,"sent":T} at --rate per device; this
// thread holds the subscribers and takes the receive time of every frame
// the moment its 'message' event runs.  Both stamps are CLOCK_MONOTONIC
// (process.hrtime.bigint), so latency = receive - sent needs no clock sync.
// A run is: subscribe (every subscriber acknowledged) → publish for
// --warmup + --duration seconds → drain (until every expected frame came,
// or 1 s passed with none, or --drain seconds) → close the subscribers.
// Latency counts the frames sent inside the measured window (after the
// warm-up); loss counts every frame of the run: expected = sum over the
// subscribers of what their devices published, received = distinct
// (subscriber, device, seq) seen.
//
// --runs is a comma list of KIND:QOS:SCOPE, e.g. stream:0:device,stream:0:tenant
//   KIND  stream  Drover's WebSocket live stream, GET /api/v1/stream
//         sse     Drover's Server-Sent Events stream, GET /api/v1/stream/sse
//         mqttws  MQTT over WebSocket (Mosquitto's websockets listener, or Drover's ws.path)
//   QOS   0 or 1: the publishers' QoS (subscribers always take QoS 0)
//   SCOPE device  one subscriber per device, subscribed to that device
//         tenant  --fanout subscribers, each subscribed to every device
//
// Around each run's measured window it reads /proc: the server's CPU, this
// process's, the rest of the machine's (split into other processes, kernel
// threads and interrupts), and the disk's busy time and bytes written.
// --wait-quiet S waits up to S seconds for a quiet machine before each run;
// --retry-busy N repeats a run during which other processes took over 25 % of
// a core; --slow-ms M records the first 2,000 frames later than M ms (when,
// which subscriber) so a report can tell a server-wide stall from a few slow
// connections.
//
// idle: opens stream connections (WebSocket with one subscription each, or
// SSE with device=) in steps; after each step reads the server's VmRSS, then
// holds them --hold seconds and counts the survivors.
//
// Output: one JSON object (--out FILE, else stdout); progress on stderr.
// Only loopback addresses are used (--host defaults to 127.0.0.1).
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';

import { CONNACK, connectPacket, MqttReader, parsePublish, PINGREQ, PUBLISH, SUBACK, subscribePacket } from './mqtt.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(HERE, '..', '..', 'tests', 'js', 'package.json'));
const WebSocket = require('ws');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => process.stderr.write(`${a.join(' ')}\n`);
const nowNs = () => Number(process.hrtime.bigint());

const { values: opt, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    broker: { type: 'string', default: 'drover' },
    host: { type: 'string', default: '127.0.0.1' },
    'mqtt-port': { type: 'string' },
    'http-port': { type: 'string' },
    'ws-port': { type: 'string' },
    'ws-path': { type: 'string', default: '' },
    tenant: { type: 'string', default: 'bench' },
    devices: { type: 'string', default: '1000' },
    prefix: { type: 'string', default: 'dev' },
    rate: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '5' },
    duration: { type: 'string', default: '30' },
    drain: { type: 'string', default: '5' },
    runs: { type: 'string', default: 'stream:0:device' },
    fanout: { type: 'string', default: '10' },
    pid: { type: 'string' },
    concurrency: { type: 'string', default: '50' },
    'sub-concurrency': { type: 'string', default: '100' },
    transport: { type: 'string', default: 'ws' },
    steps: { type: 'string', default: '1000,2000,5000,10000,15000,19000' },
    hold: { type: 'string', default: '3' },
    chunk: { type: 'string', default: '200' },
    'wait-quiet': { type: 'string', default: '0' },
    'retry-busy': { type: 'string', default: '0' },
    'slow-ms': { type: 'string', default: '20' },
    out: { type: 'string' },
  },
});

const HOST = opt.host;
const TENANT = opt.tenant;
const DEVICES = Number(opt.devices);
const PREFIX = opt.prefix;
const TOKEN = process.env.DROVER_TOKEN || '';
const devName = (i) => PREFIX + String(i).padStart(5, '0');

// -- /proc ----------------------------------------------------------------------

const CLK_TCK = 100; // sysconf(_SC_CLK_TCK) on Linux x86-64 and arm64

// CPU time (ns) of a process or task from its stat file; null if unreadable.
function cpuNs(statPath) {
  try {
    const s = fs.readFileSync(statPath, 'latin1');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1e9) / CLK_TCK; // utime, stime
  } catch {
    return null;
  }
}

function rssKb(pid) {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

// Machine-wide CPU time (ns) that was not idle, spent in interrupts, and
// stolen by the hypervisor.
function machineNs() {
  try {
    const f = fs.readFileSync('/proc/stat', 'latin1').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    const ns = (x) => (x * 1e9) / CLK_TCK;
    return { busy: ns(total - f[3] - f[4]), irq: ns(f[5] + f[6]), steal: ns(f[7]) };
  } catch {
    return { busy: null, irq: null, steal: null };
  }
}

// CPU time (ns) of the kernel's own threads (children of kthreadd: the
// journal, writeback and block-layer workers an fdatasync keeps busy).
function kthreadsNs() {
  let sum = 0;
  try {
    for (const d of fs.readdirSync('/proc')) {
      if (d.charCodeAt(0) < 48 || d.charCodeAt(0) > 57) continue;
      try {
        const s = fs.readFileSync(`/proc/${d}/stat`, 'latin1');
        const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
        if (f[1] === '2') sum += ((Number(f[11]) + Number(f[12])) * 1e9) / CLK_TCK; // ppid kthreadd
      } catch {
        // gone meanwhile
      }
    }
  } catch {
    return null;
  }
  return sum;
}

// Disk activity: ms the disks were busy (io_ticks) and 512-byte sectors
// written, summed over the whole disks (not loop or zram devices).
function diskStats() {
  try {
    const disks = new Set(fs.readdirSync('/sys/block').filter((n) => !/^(loop|ram|zram|dm-|md|sr)/.test(n)));
    let busyMs = 0;
    let sectors = 0;
    for (const line of fs.readFileSync('/proc/diskstats', 'latin1').split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f.length < 14 || !disks.has(f[2])) continue;
      busyMs += Number(f[12]);
      sectors += Number(f[9]);
    }
    return { busyMs, sectors };
  } catch {
    return { busyMs: null, sectors: null };
  }
}

function writeBytes(pid) {
  try {
    const m = /write_bytes:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/io`, 'latin1'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

// A snapshot of CPU counters: server, this process, this (main) thread, the machine.
function cpuSnapshot() {
  const m = machineNs();
  const d = diskStats();
  return {
    diskBusyMs: d.busyMs,
    diskSectors: d.sectors,
    serverWrites: opt.pid ? writeBytes(opt.pid) : null,
    t: nowNs(),
    server: opt.pid ? cpuNs(`/proc/${opt.pid}/stat`) : null,
    self: cpuNs('/proc/self/stat'),
    main: cpuNs(`/proc/self/task/${process.pid}/stat`),
    machine: m.busy,
    irq: m.irq,
    steal: m.steal,
    kthreads: kthreadsNs(),
  };
}

// Wait up to `seconds` for the machine to be quiet (under 10 % of its CPUs
// busy over a second) before a run; returns the last busy percentage seen.
async function waitQuiet(seconds) {
  const deadline = Date.now() + seconds * 1000;
  const cpus = (fs.readFileSync('/proc/stat', 'latin1').match(/^cpu\d+ /gm) || [1]).length;
  let busy = null;
  do {
    const a = machineNs().busy;
    await sleep(1000);
    const b = machineNs().busy;
    if (a === null || b === null) return null;
    busy = (100 * (b - a)) / 1e9 / cpus;
    if (busy <= 10) break;
  } while (Date.now() < deadline);
  return busy;
}

const pct = (a, b, key) => (a[key] === null || b[key] === null ? null : (100 * (b[key] - a[key])) / (b.t - a.t));

// -- latency histogram ------------------------------------------------------------

// 1 µs buckets up to 1 s (4 MB), one overflow bucket; the maximum is exact.
class Hist {
  constructor() {
    this.b = new Uint32Array(1_000_001);
    this.n = 0;
    this.max = 0;
  }

  add(ns) {
    const us = Math.floor(ns / 1000);
    this.b[us < 1_000_000 ? us : 1_000_000]++;
    this.n++;
    if (ns > this.max) this.max = ns;
  }

  // The value (µs) at quantile q: the upper edge of its bucket.
  q(q) {
    if (this.n === 0) return null;
    const want = Math.max(1, Math.ceil(q * this.n));
    let c = 0;
    for (let i = 0; i < this.b.length; i++) {
      c += this.b[i];
      if (c >= want) return Math.min(i + 1, this.max / 1000);
    }
    return this.max / 1000;
  }
}

// -- frame parsing ----------------------------------------------------------------

// Index of the value of "name" in flat JSON text s (after the colon and any
// space), or -1.  The bench's field names occur once per frame.
function field(s, name) {
  let i = s.indexOf(`"${name}"`);
  if (i < 0) return -1;
  i += name.length + 2;
  while (s.charCodeAt(i) === 32) i++;
  if (s.charCodeAt(i) !== 58) return -1; // ':'
  i++;
  while (s.charCodeAt(i) === 32) i++;
  return i;
}

function numField(s, name) {
  const i = field(s, name);
  return i < 0 ? NaN : parseFloat(s.slice(i, i + 32));
}

function strField(s, name) {
  const i = field(s, name);
  if (i < 0 || s.charCodeAt(i) !== 34) return null;
  const j = s.indexOf('"', i + 1);
  return j < 0 ? null : s.slice(i + 1, j);
}

// -- one run's state ----------------------------------------------------------------

let cur = null; // the run in progress: counters, histogram, window

function newRun(run, maxSeq) {
  return {
    run,
    maxSeq,
    hist: new Hist(),
    ws: Infinity, // measured window [ws, we) in monotonic ns
    we: Infinity,
    unique: 0,
    dup: 0,
    stale: 0,
    badTs: 0,
    foreign: 0,
    outOfRange: 0,
    other: 0,
    lastRecv: 0,
    inWindow: 0,
    secMax: [], // the highest latency (ns) of the messages sent in each second of the window
    slowNs: Number(opt['slow-ms']) * 1e6,
    slow: [], // the first 2000 frames over --slow-ms: [sent - window start ms, latency ms, subscriber, device]
    slowCount: 0,
  };
}

// A sample frame arrived at `now` for subscriber `sub`.
function onSample(sub, devIdx, run, seq, sent, now) {
  const r = cur;
  if (!r || run !== r.run) {
    if (r) r.stale++;
    return;
  }
  if (!(sent > 0) || !(seq >= 0)) {
    r.badTs++;
    return;
  }
  let off;
  if (sub.dev < 0) off = devIdx * r.maxSeq;
  else if (devIdx === sub.dev) off = 0;
  else {
    r.foreign++;
    return;
  }
  if (seq >= r.maxSeq || !(devIdx >= 0 && devIdx < DEVICES)) {
    r.outOfRange++;
    return;
  }
  if (sub.seen[off + seq]) {
    r.dup++;
    return;
  }
  sub.seen[off + seq] = 1;
  r.unique++;
  r.lastRecv = now;
  if (sent >= r.ws && sent < r.we) {
    const lat = now - sent;
    if (lat < 0 || lat > 60e9) r.badTs++;
    else {
      r.hist.add(lat);
      r.inWindow++;
      if (lat > r.slowNs) {
        r.slowCount++;
        if (r.slow.length < 2000) {
          r.slow.push([Math.round((sent - r.ws) / 1e5) / 10, Math.round(lat / 1e5) / 10, sub.id, devIdx]);
        }
      }
      const sec = Math.floor((sent - r.ws) / 1e9);
      if (!(r.secMax[sec] >= lat)) r.secMax[sec] = lat;
    }
  }
}

function devIndexOf(name) {
  if (!name || !name.startsWith(PREFIX)) return -1;
  return Number(name.slice(PREFIX.length));
}

// -- subscribers ------------------------------------------------------------------

// Every subscriber: {kind, dev (index, or -1 for the whole tenant), seen,
// close(), closed, closeCode}.
let subIds = 0;
function makeSub(dev, maxSeq) {
  return {
    id: subIds++,
    dev,
    seen: new Uint8Array(dev < 0 ? DEVICES * maxSeq : maxSeq),
    closed: false,
    closeCode: null,
    close: () => {},
  };
}

function wsOptions(headers = {}) {
  return { perMessageDeflate: false, handshakeTimeout: 30000, headers };
}

function describeUnexpected(res, resolveBody) {
  let body = '';
  res.on('data', (d) => {
    if (body.length < 300) body += d.toString();
  });
  res.on('end', () => resolveBody(`HTTP ${res.statusCode} ${body.slice(0, 200)}`));
  res.on('error', () => resolveBody(`HTTP ${res.statusCode}`));
}

// Drover's WebSocket stream: subscribe, resolve at the ack.
function openStream(sub, filter, httpPort) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${HOST}:${httpPort}/api/v1/stream`, ['drover.stream.v1'],
      wsOptions({ Authorization: `Bearer ${TOKEN}` }));
    let acked = false;
    sub.close = () => ws.terminate();
    ws.on('unexpected-response', (req, res) => describeUnexpected(res, (why) => reject(new Error(why))));
    ws.on('error', (e) => {
      if (!acked) reject(e);
    });
    ws.on('close', (code) => {
      sub.closed = true;
      sub.closeCode = code;
      if (!acked) reject(new Error(`closed before the ack (${code})`));
    });
    ws.on('open', () => {
      const m = { op: 'subscribe', id: 's', types: ['telemetry'], tenant: TENANT };
      if (filter) m.devices = filter;
      ws.send(JSON.stringify(m));
    });
    ws.on('message', (data) => {
      const now = nowNs();
      const s = data.latin1Slice(0, data.length);
      const t = field(s, 'type');
      if (t >= 0 && s.startsWith('"telemetry"', t)) {
        onSample(sub, devIndexOf(strField(s, 'device')), numField(s, 'run'), numField(s, 'seq'),
          numField(s, 'sent'), now);
        return;
      }
      let m;
      try {
        m = JSON.parse(s);
      } catch {
        m = {};
      }
      if (m.type === 'ack' && !acked) {
        acked = true;
        resolve();
      } else if (m.type === 'error') {
        if (!acked) reject(new Error(`error frame: ${s.slice(0, 200)}`));
        else if (cur) cur.other++;
        sub.lastError = s.slice(0, 200);
      } else if (cur) cur.other++;
    });
  });
}

// Drover's SSE stream: resolve at the 200 and its headers.
function openSse(sub, dev, httpPort) {
  return new Promise((resolve, reject) => {
    const q = new URLSearchParams({ types: 'telemetry', tenant: TENANT });
    if (dev >= 0) q.set('device', devName(dev));
    const sock = net.connect({ host: HOST, port: httpPort });
    sub.close = () => sock.destroy();
    let head = '';
    let ok = false;
    let rest = '';
    const timer = setTimeout(() => {
      if (!ok) {
        sock.destroy();
        reject(new Error('SSE: no answer in 30 s'));
      }
    }, 30000);
    sock.setNoDelay(true);
    sock.on('connect', () => {
      sock.write(`GET /api/v1/stream/sse?${q} HTTP/1.1\r\nHost: ${HOST}:${httpPort}\r\n`
        + `Authorization: Bearer ${TOKEN}\r\nAccept: text/event-stream\r\n\r\n`);
    });
    sock.on('error', (e) => {
      if (!ok) {
        clearTimeout(timer);
        reject(e);
      }
    });
    sock.on('close', () => {
      sub.closed = true;
      if (!ok) {
        clearTimeout(timer);
        reject(new Error(`SSE closed before the headers: ${head.slice(0, 200)}`));
      }
    });
    sock.on('data', (d) => {
      const now = nowNs();
      if (!ok) {
        head += d.latin1Slice(0, d.length);
        const e = head.indexOf('\r\n\r\n');
        if (e < 0) return;
        if (!/^HTTP\/1\.1 200/.test(head)) {
          clearTimeout(timer);
          sock.destroy();
          reject(new Error(`SSE: ${head.split('\r\n')[0]} ${head.slice(e + 4, e + 204)}`));
          return;
        }
        ok = true;
        clearTimeout(timer);
        rest = head.slice(e + 4);
        head = '';
        resolve();
      } else {
        rest += d.latin1Slice(0, d.length);
      }
      if (sub.idle) {
        rest = '';
        return;
      }
      // Events are separated by a blank line; only data: lines matter here.
      let e;
      while ((e = rest.indexOf('\n\n')) >= 0) {
        const ev = rest.slice(0, e);
        rest = rest.slice(e + 2);
        const di = ev.indexOf('data:');
        if (di < 0) continue;
        const s = ev.slice(di + 5);
        const t = field(s, 'type');
        if (t >= 0 && s.startsWith('"telemetry"', t)) {
          onSample(sub, devIndexOf(strField(s, 'device')), numField(s, 'run'), numField(s, 'seq'),
            numField(s, 'sent'), now);
        } else if (cur) cur.other++;
      }
    });
  });
}

// MQTT over WebSocket (sub-protocol "mqtt"): CONNECT, SUBSCRIBE at QoS 0,
// resolve at the SUBACK.
let mqttSubSeq = 0;
function openMqttWs(sub, filter, url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, ['mqtt'], wsOptions());
    let ready = false;
    sub.close = () => ws.terminate();
    const reader = new MqttReader((type, flags, body) => {
      if (type === PUBLISH) {
        const now = nowNs();
        const p = parsePublish(flags, body);
        const a = p.topic.indexOf('devices/');
        const b = a < 0 ? -1 : p.topic.indexOf('/', a + 8);
        const s = p.payload;
        onSample(sub, b < 0 ? -1 : devIndexOf(p.topic.slice(a + 8, b)), numField(s, 'run'),
          numField(s, 'seq'), numField(s, 'sent'), now);
      } else if (type === CONNACK) {
        if (body[1] !== 0) reject(new Error(`CONNACK return code ${body[1]}`));
        else ws.send(subscribePacket(1, filter, 0));
      } else if (type === SUBACK) {
        if (body[2] === 0x80) reject(new Error(`SUBACK refused ${filter}`));
        else {
          ready = true;
          resolve();
        }
      }
    });
    ws.on('unexpected-response', (req, res) => describeUnexpected(res, (why) => reject(new Error(why))));
    ws.on('error', (e) => {
      if (!ready) reject(e);
    });
    ws.on('close', (code) => {
      sub.closed = true;
      sub.closeCode = code;
      if (!ready) reject(new Error(`closed before the SUBACK (${code})`));
    });
    ws.on('open', () => ws.send(connectPacket(`live-sub-${process.pid}-${mqttSubSeq++}`, { keepalive: 60 })));
    ws.on('message', (data) => {
      try {
        reader.push(data);
      } catch (e) {
        ws.terminate();
      }
    });
    sub.ping = () => {
      if (ws.readyState === WebSocket.OPEN) ws.send(PINGREQ);
    };
  });
}

// Open every subscriber with `lanes` at a time; returns {subs, failed, errors}.
async function openAll(specs, open, lanes) {
  const subs = [];
  const errors = new Map();
  let failed = 0;
  let next = 0;
  const lane = async () => {
    while (next < specs.length) {
      const sp = specs[next++];
      const sub = makeSub(sp.dev, sp.maxSeq);
      try {
        await open(sub, sp);
        subs.push(sub);
      } catch (e) {
        failed++;
        sub.close();
        const k = String(e.message || e).slice(0, 200);
        errors.set(k, (errors.get(k) || 0) + 1);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(lanes, specs.length) }, lane));
  return { subs, failed, errors: Object.fromEntries(errors) };
}

// -- Drover /metrics ------------------------------------------------------------------

async function streamMetrics() {
  if (!opt['http-port'] || opt.broker !== 'drover') return null;
  try {
    const r = await fetch(`http://${HOST}:${opt['http-port']}/metrics`, {
      headers: { Authorization: `Bearer ${TOKEN}` },
      signal: AbortSignal.timeout(5000),
    });
    if (!r.ok) return { status: r.status };
    const out = {};
    for (const line of (await r.text()).split('\n')) {
      if (/^drover_(stream|telemetry|tenant)_/.test(line)) {
        const sp = line.lastIndexOf(' ');
        out[line.slice(0, sp)] = Number(line.slice(sp + 1));
      }
    }
    return out;
  } catch (e) {
    return { error: String(e.message || e) };
  }
}

// -- setup (Drover) -------------------------------------------------------------------

async function api(method, p, body, ctype) {
  const r = await fetch(`http://${HOST}:${opt['http-port']}${p}`, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}`, ...(ctype ? { 'Content-Type': ctype } : {}) },
    body,
    signal: AbortSignal.timeout(600000),
  });
  return { status: r.status, text: await r.text() };
}

async function setup() {
  const secret = process.env.LIVE_SECRET;
  if (!TOKEN || !secret) throw new Error('setup needs DROVER_TOKEN and LIVE_SECRET in the environment');
  const t = nowNs();
  let r = await api('POST', '/api/v1/tenants', JSON.stringify({ id: TENANT, name: 'Live bench' }), 'application/json');
  if (r.status !== 201 && r.status !== 409) throw new Error(`POST /api/v1/tenants: HTTP ${r.status} ${r.text.slice(0, 300)}`);
  const chunk = Number(opt.chunk);
  let created = 0;
  const rejected = [];
  for (let i = 0; i < DEVICES; i += chunk) {
    let csv = 'id,secret\n';
    for (let j = i; j < Math.min(DEVICES, i + chunk); j++) csv += `${devName(j)},${secret}-${j}\n`;
    r = await api('POST', `/api/v1/tenants/${TENANT}/device-imports`, csv, 'text/csv');
    if (r.status !== 200) throw new Error(`POST device-imports: HTTP ${r.status} ${r.text.slice(0, 300)}`);
    const a = JSON.parse(r.text);
    created += a.created;
    for (const x of a.rejected || []) rejected.push(x);
    log(`   devices: ${Math.min(DEVICES, i + chunk)}/${DEVICES}`);
  }
  // Ids already taken (a rerun on the same data dir) are fine; anything else is not.
  const bad = rejected.filter((x) => !/exist|taken|conflict|used/i.test(x.reason || ''));
  if (bad.length) throw new Error(`device import rejected ${bad.length} rows, e.g. ${JSON.stringify(bad[0])}`);
  return { ok: true, created, seconds: (nowNs() - t) / 1e9 };
}

// -- latency ----------------------------------------------------------------------------

function startPublishers() {
  const drover = opt.broker === 'drover';
  const w = new Worker(path.join(HERE, 'publisher.mjs'), {
    workerData: {
      host: HOST,
      port: Number(opt['mqtt-port']),
      devices: DEVICES,
      prefix: PREFIX,
      tenant: TENANT,
      topic: 'devices/{device}/telemetry',
      user: drover ? '{tenant}/{device}' : null,
      secret: drover ? process.env.LIVE_SECRET : null,
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
  return {
    worker: w,
    next: (ev) => new Promise((resolve, reject) => waiters.push({ ev, resolve, reject })),
  };
}

// Subscriber specs and the opener for one run.
function subscribersFor(kind, scope, maxSeq) {
  const fan = Number(opt.fanout);
  const specs = scope === 'tenant'
    ? Array.from({ length: fan }, () => ({ dev: -1, maxSeq }))
    : Array.from({ length: DEVICES }, (_, i) => ({ dev: i, maxSeq }));
  const httpPort = Number(opt['http-port']);
  if (kind === 'stream') {
    return { specs, open: (sub, sp) => openStream(sub, sp.dev < 0 ? null : [devName(sp.dev)], httpPort) };
  }
  if (kind === 'sse') return { specs, open: (sub, sp) => openSse(sub, sp.dev, httpPort) };
  if (kind === 'mqttws') {
    const drover = opt.broker === 'drover';
    const url = drover ? `ws://${HOST}:${httpPort}${opt['ws-path'] || '/mqtt'}` : `ws://${HOST}:${opt['ws-port']}${opt['ws-path']}`;
    const ns = drover ? `$T/${TENANT}/` : '';
    return {
      specs,
      open: (sub, sp) => openMqttWs(sub, `${ns}devices/${sp.dev < 0 ? '+' : devName(sp.dev)}/telemetry`, url),
    };
  }
  throw new Error(`unknown subscriber kind ${kind}`);
}

async function oneRun(pub, spec, runNo) {
  const [kind, qosS, scope] = spec.split(':');
  const qos = Number(qosS);
  const rate = Number(opt.rate);
  const warmup = Number(opt.warmup);
  const duration = Number(opt.duration);
  const maxSeq = Math.ceil(rate * (warmup + duration) * 1.05) + 100;
  const res = { name: spec, kind, qos, scope, run: runNo };

  log(`== run ${spec}: opening subscribers`);
  const { specs, open } = subscribersFor(kind, scope, maxSeq);
  const t = nowNs();
  const opened = await openAll(specs, open, Number(opt['sub-concurrency']));
  res.subscribers = opened.subs.length;
  res.sub_failed = opened.failed;
  res.sub_errors = opened.errors;
  res.sub_setup_s = (nowNs() - t) / 1e9;
  log(`   ${opened.subs.length} subscribers in ${res.sub_setup_s.toFixed(1)} s, ${opened.failed} failed`
    + (opened.failed ? ` ${JSON.stringify(opened.errors)}` : ''));
  if (opened.subs.length === 0) {
    res.ok = false;
    res.error = `no subscriber could be opened: ${JSON.stringify(opened.errors)}`;
    return res;
  }
  const pinger = setInterval(() => {
    for (const s of opened.subs) if (s.ping) s.ping();
  }, 20000);

  const m0 = await streamMetrics();
  cur = newRun(runNo, maxSeq);
  const lag = monitorEventLoopDelay({ resolution: 1 });
  const rssBefore = opt.pid ? rssKb(opt.pid) : null;
  let c0 = null;
  let c1 = null;
  pub.worker.postMessage({ cmd: 'run', run: runNo, qos, rate, warmup, duration, ackWait: 10 });
  const started = await pub.next('started');
  const t0 = Number(BigInt(started.t0));
  cur.ws = t0 + warmup * 1e9;
  cur.we = t0 + (warmup + duration) * 1e9;
  log(`   publishing ${DEVICES} x ${rate} msg/s QoS ${qos} for ${warmup} + ${duration} s`);
  const at = (ns, fn) => setTimeout(fn, Math.max(0, (ns - nowNs()) / 1e6));
  at(cur.ws, () => {
    c0 = cpuSnapshot();
    lag.enable();
  });
  at(cur.we, () => {
    c1 = cpuSnapshot();
    lag.disable();
  });
  const done = await pub.next('done');
  while (!c1) await sleep(5);

  // Drain.
  let expected = 0;
  const perDevTotal = done.counts.reduce((a, b) => a + b, 0);
  for (const s of opened.subs) expected += s.dev < 0 ? perDevTotal : done.counts[s.dev];
  const drainStart = nowNs();
  const drainMax = Number(opt.drain) * 1e9;
  for (;;) {
    if (cur.unique >= expected) break;
    const n = nowNs();
    if (n - drainStart > drainMax) break;
    if (n - Math.max(cur.lastRecv, drainStart) > 1e9) break;
    await sleep(20);
  }
  res.drain_s = (nowNs() - drainStart) / 1e9;
  clearInterval(pinger);
  const closedDuring = opened.subs.filter((s) => s.closed);
  const closeCodes = {};
  for (const s of closedDuring) closeCodes[s.closeCode] = (closeCodes[s.closeCode] || 0) + 1;
  const m1 = await streamMetrics();
  for (const s of opened.subs) s.close();
  const r = cur;
  cur = null;

  const window = (c1.t - c0.t) / 1e9;
  Object.assign(res, {
    ok: true,
    devices: DEVICES,
    rate_per_device: rate,
    warmup_s: warmup,
    window_s: window,
    published: done.sent,
    skipped: done.skipped,
    not_ready: done.notReady,
    offered_rate: done.sent / done.publishSeconds,
    puback: qos > 0 ? done.acked : null,
    publisher_disconnects: done.disconnects,
    expected,
    received: r.unique,
    lost: Math.max(0, expected - r.unique),
    duplicates: r.dup,
    stale: r.stale,
    bad_timestamps: r.badTs,
    foreign: r.foreign,
    out_of_range: r.outOfRange,
    other_frames: r.other,
    subscribers_closed: closedDuring.length,
    close_codes: closeCodes,
    last_error: (opened.subs.find((s) => s.lastError) || {}).lastError || null,
    measured_frames: r.inWindow,
    delivered_rate: r.inWindow / duration,
    latency_us: {
      p50: r.hist.q(0.5),
      p90: r.hist.q(0.9),
      p99: r.hist.q(0.99),
      p999: r.hist.q(0.999),
      max: r.hist.max / 1000,
    },
    slow_frames: { over_ms: Number(opt['slow-ms']), count: r.slowCount, first: r.slow },
    max_latency_ms_by_second: Array.from(r.secMax, (v) => (v === undefined ? null : Math.round(v / 1e4) / 100)),
    server_cpu_pct: pct(c0, c1, 'server'),
    server_cpu_us_per_frame: c0.server === null ? null : (c1.server - c0.server) / 1000 / Math.max(1, r.inWindow),
    server_rss_kb: { before: rssBefore, after: opt.pid ? rssKb(opt.pid) : null },
    client_cpu_pct: pct(c0, c1, 'self'),
    client_main_thread_cpu_pct: pct(c0, c1, 'main'),
    // Everything else the machine ran over the window (100 = one core): other
    // processes, interrupts, the kernel's own threads.
    machine_cpu_pct: pct(c0, c1, 'machine'),
    other_cpu_pct: c0.machine === null ? null
      : pct(c0, c1, 'machine') - (pct(c0, c1, 'server') || 0) - (pct(c0, c1, 'self') || 0),
    steal_pct: pct(c0, c1, 'steal'),
    // ... of which interrupts (disk and network completions) and kernel threads
    irq_cpu_pct: pct(c0, c1, 'irq'),
    kthreads_cpu_pct: pct(c0, c1, 'kthreads'),
    // ... and the rest: other processes (what skews a run, where the kernel
    // work above may be the server's own disk writes)
    foreign_cpu_pct: null,
    // The disks: busy time (io_ticks) over the window, bytes written to them,
    // and the bytes the server wrote (/proc/PID/io): much disk time with few
    // of the bytes the server's means someone else is writing.
    disk_busy_pct: c0.diskBusyMs === null ? null : (100 * (c1.diskBusyMs - c0.diskBusyMs) * 1e6) / (c1.t - c0.t),
    disk_written_mb: c0.diskSectors === null ? null : ((c1.diskSectors - c0.diskSectors) * 512) / 1e6,
    server_written_mb: c0.serverWrites === null || c1.serverWrites === null ? null
      : (c1.serverWrites - c0.serverWrites) / 1e6,
    client_loop_delay_ms: { p50: lag.percentile(50) / 1e6, p99: lag.percentile(99) / 1e6, max: lag.max / 1e6 },
    metrics_before: m0,
    metrics_after: m1,
  });
  if (res.other_cpu_pct !== null) {
    res.foreign_cpu_pct = res.other_cpu_pct - (res.irq_cpu_pct || 0) - (res.kthreads_cpu_pct || 0);
  }
  const l = res.latency_us;
  log(`   ${r.unique}/${expected} frames (lost ${res.lost}, dup ${r.dup}), `
    + `latency p50 ${l.p50} µs p99 ${l.p99} µs max ${Math.round(l.max)} µs; `
    + `server CPU ${res.server_cpu_pct?.toFixed(0)} %, client ${res.client_cpu_pct?.toFixed(0)} % `
    + `(main thread ${res.client_main_thread_cpu_pct?.toFixed(0)} %), others ${res.other_cpu_pct?.toFixed(0)} % `
    + `(kernel threads ${res.kthreads_cpu_pct?.toFixed(0)} %, interrupts ${res.irq_cpu_pct?.toFixed(0)} %); `
    + `disk busy ${res.disk_busy_pct?.toFixed(0)} %, ${res.disk_written_mb?.toFixed(1)} MB written `
    + `(server ${res.server_written_mb?.toFixed(1)} MB)`);
  await sleep(1000); // let the closes go through before the next run
  return res;
}

async function latency() {
  const pub = startPublishers();
  const out = { ok: true, broker: opt.broker, devices: DEVICES, runs: [] };
  log(`== connecting ${DEVICES} MQTT publishers to ${HOST}:${opt['mqtt-port']}`);
  pub.worker.postMessage({ cmd: 'connect' });
  const c = await pub.next('connected');
  out.publishers = c;
  log(`   ${c.ready} ready, ${c.failed} failed in ${c.seconds.toFixed(1)} s` + (c.failed ? ` ${JSON.stringify(c.errors)}` : ''));
  if (c.ready === 0) {
    out.ok = false;
    out.error = `no publisher could connect: ${JSON.stringify(c.errors)}`;
  } else {
    let n = 0;
    const quiet = Number(opt['wait-quiet']);
    for (const spec of opt.runs.split(',').filter(Boolean)) {
      // A run during which other processes took more than a quarter of a
      // core is repeated (--retry-busy times): on 2 cores they delay
      // everything and the tail measures them.
      const busyAttempts = [];
      for (let attempt = 0; ; attempt++) {
        let res;
        let before = null;
        try {
          if (quiet > 0) before = await waitQuiet(quiet);
          res = await oneRun(pub, spec, ++n);
        } catch (e) {
          res = { name: spec, ok: false, error: String(e.stack || e) };
          log(`   run ${spec} failed: ${e.message}`);
        }
        res.machine_busy_before_pct = before;
        const busy = res.ok && res.foreign_cpu_pct !== null && res.foreign_cpu_pct > 25;
        if (busy && attempt < Number(opt['retry-busy'])) {
          busyAttempts.push(Math.round(res.foreign_cpu_pct));
          log(`   other processes took ${res.foreign_cpu_pct.toFixed(0)} % CPU during the run: again`);
          continue;
        }
        if (busyAttempts.length) res.busy_attempts_other_cpu_pct = busyAttempts;
        out.runs.push(res);
        break;
      }
    }
  }
  pub.worker.postMessage({ cmd: 'close' });
  await Promise.race([pub.next('closed'), sleep(2000)]);
  await pub.worker.terminate();
  return out;
}

// -- idle connections ------------------------------------------------------------------------

async function idle() {
  const transport = opt.transport;
  const httpPort = Number(opt['http-port']);
  const steps = opt.steps.split(',').map(Number);
  const pid = opt.pid;
  const out = { ok: true, transport, steps: [], rss_base_kb: rssKb(pid) };
  const subs = [];
  let open = 0;
  let failedTotal = 0;
  const errors = new Map();
  const t = nowNs();
  log(`== idle ${transport}: server RSS ${out.rss_base_kb} kB before`);
  for (const target of steps) {
    let failed = 0;
    let next = subs.length;
    const stepStart = nowNs();
    const lane = async () => {
      while (next < target && failed === 0) {
        const i = next++;
        const sub = makeSub(i % DEVICES, 0);
        sub.seen = null;
        sub.idle = true;
        try {
          if (transport === 'ws') await openStream(sub, [devName(i % DEVICES)], httpPort);
          else await openSse(sub, i % DEVICES, httpPort);
          subs.push(sub);
          open++;
        } catch (e) {
          failed++;
          sub.close();
          const k = String(e.message || e).slice(0, 200);
          errors.set(k, (errors.get(k) || 0) + 1);
        }
      }
    };
    await Promise.all(Array.from({ length: Number(opt['sub-concurrency']) }, lane));
    failedTotal += failed;
    await sleep(1000);
    const held = subs.filter((s) => !s.closed).length;
    const rss = rssKb(pid);
    const step = {
      target,
      opened: subs.length,
      held,
      failed,
      seconds: (nowNs() - stepStart) / 1e9,
      rss_kb: rss,
      bytes_per_conn: rss !== null && held > 0 ? ((rss - out.rss_base_kb) * 1024) / held : null,
    };
    out.steps.push(step);
    log(`   ${target}: ${held} held, ${failed} failed, RSS ${rss} kB, `
      + `${step.bytes_per_conn === null ? '-' : step.bytes_per_conn.toFixed(0)} B/conn`
      + (failed ? ` ${JSON.stringify(Object.fromEntries(errors))}` : ''));
    if (failed || rss === null) break;
  }
  await sleep(Number(opt.hold) * 1000);
  const last = out.steps[out.steps.length - 1] || {};
  out.hold_s = Number(opt.hold);
  out.held = subs.filter((s) => !s.closed).length;
  out.closed_during_hold = (last.held || 0) - out.held;
  out.rss_kb = rssKb(pid);
  out.bytes_per_conn = out.rss_kb !== null && out.held > 0 ? ((out.rss_kb - out.rss_base_kb) * 1024) / out.held : null;
  out.failed = failedTotal;
  out.errors = Object.fromEntries(errors);
  out.seconds = (nowNs() - t) / 1e9;
  out.fd_limit_hit = Object.keys(out.errors).some((e) => /EMFILE|ENFILE/.test(e));
  for (const s of subs) s.close();
  void open;
  return out;
}

// -- main ------------------------------------------------------------------------------------

async function main() {
  const cmd = positionals[0];
  let out;
  try {
    if (cmd === 'setup') out = await setup();
    else if (cmd === 'latency') out = await latency();
    else if (cmd === 'idle') out = await idle();
    else throw new Error('usage: live.mjs setup|latency|idle [options] (see the top of the file)');
  } catch (e) {
    out = { ok: false, error: String(e.stack || e) };
  }
  const text = `${JSON.stringify(out, null, 1)}\n`;
  if (opt.out) fs.writeFileSync(opt.out, text);
  else process.stdout.write(text);
  process.exit(out.ok ? 0 : 1);
}

main();
