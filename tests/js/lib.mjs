// Helpers for MQTT.js black-box tests against a live `drover serve`.
//
//   const d = await startDrover(process.argv[2]);  // free loopback port, temp data dir
//   const c = await connect(d, { protocolVersion: 5, clientId: 'x' });
//   await d.restart();        // SIGTERM, wait for exit, start again on the same data dir
//   await d.kill9Restart();   // SIGKILL, start again on the same data dir
//   await d.stop();           // SIGTERM; throws if the broker crashed or a sanitizer spoke
//
// Everything is bounded in time and talks to 127.0.0.1 only.  The broker's log
// is kept in the temp dir and printed when something goes wrong.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';
import mqtt from 'mqtt';

export const HOST = '127.0.0.1';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Resolve with predicate()'s value once it is truthy, polling every 20 ms; reject
// after ms.  `what` (a string, or a function giving one) names it in the error.
export async function waitFor(predicate, ms = 5000, what = 'condition') {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await predicate();
    if (v) return v;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${typeof what === 'function' ? what() : what}`);
    }
    await sleep(20);
  }
}

// Race a promise against a timer.
export function withTimeout(p, ms, what = 'operation') {
  let t;
  const timer = new Promise((_, rej) => {
    t = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, timer]).finally(() => clearTimeout(t));
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, HOST, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: HOST, port });
    const done = (ok) => { sock.destroy(); resolve(ok); };
    sock.setTimeout(300, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

const SANITIZER = /ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:/;

// Brokers still running when node exits (a crash, the watchdog) are killed.
const live = new Set();
process.on('exit', () => {
  for (const p of live) if (!p.status) p.kill('SIGKILL');
});

export class Drover {
  constructor(binary, settings = {}) {
    if (!binary) throw new Error('usage: node test_x.mjs /path/to/drover');
    this.binary = path.resolve(binary);
    this.settings = { ...settings };
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'drover-js-'));
    this.dataDir = path.join(this.dir, 'data');
    this.logPath = path.join(this.dir, 'server.log');
    this.port = 0;
    this.proc = null;
    this.exits = []; // {code, signal} of every process that ended
  }

  get url() { return `mqtt://${HOST}:${this.port}`; }

  async start() {
    if (!this.port) this.port = await freePort();
    const args = ['serve', '--data-dir', this.dataDir,
      '--set', `mqtt.listen=${HOST}:${this.port}`, '--set', 'log.format=text'];
    // Only the plain MQTT port unless a test asks for more (parallel tests share the machine).
    const settings = { 'mqtt.tls_listen': '', 'http.listen': '', 'https.listen': '', ...this.settings };
    for (const [k, v] of Object.entries(settings)) args.push('--set', `${k}=${v}`);
    const fd = fs.openSync(this.logPath, 'a');
    const proc = spawn(this.binary, args, { stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    this.proc = proc;
    live.add(proc);
    proc.exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        live.delete(proc);
        proc.status = { code, signal };
        this.exits.push(proc.status);
        resolve(proc.status);
      });
    });
    const deadline = Date.now() + 15000;
    while (Date.now() < deadline) {
      if (proc.status) throw new Error(`drover exited at start (${JSON.stringify(proc.status)}):\n${this.log()}`);
      if (await canConnect(this.port)) return this;
      await sleep(50);
    }
    throw new Error(`drover did not listen on ${this.port} within 15 s:\n${this.log()}`);
  }

  // The broker's log over every start (the last `tail` characters).
  log(tail = 8000) {
    try { return fs.readFileSync(this.logPath, 'utf8').slice(-tail); } catch { return ''; }
  }

  alive() { return !!this.proc && !this.proc.status; }

  // Send sig and wait (bounded) for the exit; SIGKILL after ms.  Returns {code, signal}.
  async signal(sig = 'SIGTERM', ms = 20000) {
    const proc = this.proc;
    if (!proc) return { code: 0, signal: null };
    if (!proc.status) {
      proc.kill(sig);
      const st = await withTimeout(proc.exited, ms, `drover exit on ${sig}`).catch(() => null);
      if (!st) { proc.kill('SIGKILL'); await proc.exited; }
    }
    this.proc = null;
    return proc.status;
  }

  // Clean restart: SIGTERM must end the broker with status 0.
  async restart() {
    const st = await this.signal('SIGTERM');
    if (st.code !== 0) throw new Error(`drover exited ${JSON.stringify(st)} on SIGTERM:\n${this.log()}`);
    return this.start();
  }

  async kill9Restart() {
    await this.signal('SIGKILL');
    return this.start();
  }

  // Stop for good and check the broker's health; removes the temp dir when clean.
  async stop() {
    const st = await this.signal('SIGTERM');
    const crashedEarlier = this.exits.slice(0, -1).some((e) => (e.signal && e.signal !== 'SIGKILL')
      || (!e.signal && e.code !== 0));
    if (st.code !== 0 || crashedEarlier || SANITIZER.test(this.log(Infinity))) {
      console.error(`--- drover log (${this.dir}) ---\n${this.log()}`);
      throw new Error(`drover ended badly: ${JSON.stringify(this.exits)} or reported a sanitizer error`);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export async function startDrover(binary = process.argv[2], settings = {}) {
  return new Drover(binary, settings).start();
}

let clientSeq = 0;
export function uniqueId(prefix = 'js') {
  clientSeq += 1;
  return `${prefix}-${process.pid}-${clientSeq}`;
}

const allClients = new Set();

// Connect and resolve with the client once CONNACK arrives (client.connack holds it).
// Rejects on error / close before CONNACK or after ms.  Never reconnects on its own.
// client.received collects {topic, payload (string), packet} of every 'message';
// client.packets every packet received.  setup(client), if given, runs before any
// packet is read (for listeners that must see what arrives with the CONNACK).
export function connect(d, opts = {}, ms = 5000, setup = null) {
  const options = {
    host: HOST, port: d.port, protocolVersion: 4, clientId: uniqueId(),
    reconnectPeriod: 0, connectTimeout: ms, keepalive: 30, ...opts,
  };
  const client = mqtt.connect(options);
  allClients.add(client);
  client.received = [];
  client.packets = []; // every packet received, in order (CONNACK included)
  client.on('packetreceive', (p) => client.packets.push(p));
  if (setup) setup(client);
  client.on('message', (topic, payload, packet) => {
    client.received.push({ topic, payload: payload.toString(), packet });
  });
  return withTimeout(new Promise((resolve, reject) => {
    const fail = (err) => { client.end(true); reject(err); };
    client.once('connect', (connack) => {
      client.removeListener('error', fail);
      client.removeListener('close', onClose);
      client.connack = connack;
      client.on('error', () => {}); // reported errors are asserted by the tests themselves
      resolve(client);
    });
    const onClose = () => fail(new Error('connection closed before CONNACK'));
    client.once('error', fail);
    client.once('close', onClose);
  }), ms + 1000, 'CONNACK').catch((e) => { client.end(true); throw e; });
}

// Promise-returning wrappers over MQTT.js callbacks, each bounded in time.
export function subscribe(client, topic, opts = { qos: 0 }, ms = 5000) {
  return withTimeout(new Promise((resolve, reject) => {
    client.subscribe(topic, opts, (err, granted) => (err ? reject(err) : resolve(granted)));
  }), ms, `SUBACK for ${JSON.stringify(topic)}`);
}

export function unsubscribe(client, topic, opts = {}, ms = 5000) {
  return withTimeout(new Promise((resolve, reject) => {
    client.unsubscribe(topic, opts, (err, packet) => (err ? reject(err) : resolve(packet)));
  }), ms, `UNSUBACK for ${JSON.stringify(topic)}`);
}

export function publish(client, topic, payload, opts = { qos: 0 }, ms = 5000) {
  return withTimeout(new Promise((resolve, reject) => {
    client.publish(topic, payload, opts, (err, packet) => (err ? reject(err) : resolve(packet)));
  }), ms, `publish to ${topic} (qos ${opts.qos ?? 0})`);
}

// Publish n messages, gen(i) -> [topic, payload, opts], keeping at most `window`
// unacknowledged at once; resolves when every one is acknowledged.
export async function publishMany(client, n, gen, window = Infinity, ms = 10000) {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const [topic, payload, opts] = gen(i);
      await publish(client, topic, payload, opts, ms);
    }
  };
  const lanes = Math.max(1, Math.min(n, window));
  if (lanes >= n) {
    await Promise.all([...Array(n).keys()].map((i) => publish(client, ...gen(i), ms)));
  } else {
    await Promise.all([...Array(lanes)].map(worker));
  }
}

// Clean DISCONNECT; resolves when the socket is closed.
export function end(client, ms = 5000) {
  allClients.delete(client);
  if (client.disconnected && !client.connected) return Promise.resolve();
  return withTimeout(new Promise((resolve) => client.end(false, {}, () => resolve())), ms, 'client.end')
    .catch(() => client.end(true));
}

// Abrupt close: the socket is destroyed without DISCONNECT (the broker must send the will).
export function destroy(client) {
  allClients.delete(client);
  client.options.reconnectPeriod = 0;
  client.stream.destroy();
  client.end(true);
}

// Resolve once client has collected at least n messages (optionally matching filter).
export function waitMessages(client, n, ms = 5000, filter = () => true) {
  return waitFor(() => {
    const got = client.received.filter(filter);
    return got.length >= n ? got : null;
  }, ms, () => `${n} message(s) on ${client.options.clientId} (have ${client.received.filter(filter).length})`);
}

export function closeAll() {
  for (const c of allClients) c.end(true);
  allClients.clear();
}

// Print the plain closing line "N passed, N failed" last, from the process 'exit'
// hook.  The counts are read from the default reporter's own summary ("# pass N"
// in TAP, "ℹ pass N" in the spec reporter on a terminal) as it goes to stdout; a
// non-zero exit with no failed test (a failing after() hook, the watchdog) counts
// as one failure.
let installed = false;
export function installSummary() {
  if (installed) return;
  installed = true;
  const counts = { passed: 0, failed: 0 };
  const origLog = process.stdout.write.bind(process.stdout);
  let buf = '';
  process.stdout.write = (chunk, ...rest) => {
    buf += chunk.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).replace(/\x1b\[[0-9;]*m/g, ''); // spec reporter colours
      buf = buf.slice(i + 1);
      const m = /^(?:#|\u2139) (pass|fail) (\d+)\s*$/.exec(line);
      if (m) counts[m[1] === 'pass' ? 'passed' : 'failed'] = Number(m[2]);
    }
    return origLog(chunk, ...rest);
  };
  process.on('exit', (code) => {
    if (code !== 0 && counts.failed === 0) counts.failed = 1; // crashed outside a test
    origLog(`${counts.passed} passed, ${counts.failed} failed\n`);
  });
}

// Common setup for a test file: one broker for the file, stopped (and checked) at
// the end, and a watchdog that ends the file (failed) if it runs past limitMs.
export function useDrover(settings = {}, limitMs = 55000) {
  installSummary();
  setTimeout(() => {
    console.error(`watchdog: ${process.argv[1]} still running after ${limitMs} ms`);
    process.exit(1);
  }, limitMs).unref();
  const ctx = { d: null };
  before(async () => { ctx.d = await startDrover(process.argv[2], settings); });
  after(async () => {
    closeAll();
    if (ctx.d) await ctx.d.stop();
  });
  return ctx;
}
