// Helpers for transport tests (WebSocket, secure WebSocket, browsers) on top of lib.mjs.
//
//   const ctx = useTransportDrover();     // one broker with ws:// and wss:// listeners on free ports
//   ctx.d.port / ctx.wsPort / ctx.wssPort / caFile(ctx.d)
//   await connect(ctx.d, wsOptions(ctx, 5));            // MQTT.js over ws://127.0.0.1:PORT/mqtt
//   await connect(ctx.d, wssOptions(ctx, 4));           // MQTT.js over wss://localhost:PORT/mqtt
//   const w = await RawWs.open(ctx.wsPort);             // hand-written RFC 6455 client
//   w.send(OP.BINARY, bytes); await w.readFrame();      // masked frames out, server frames in
//
// Everything is loopback only and bounded in time.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { after, before } from 'node:test';
import {
  Drover, HOST, closeAll, freePort, installSummary, sleep, withTimeout,
} from './lib.mjs';

export const WS_PATH = '/mqtt';
export const OP = {
  CONTINUATION: 0x0, TEXT: 0x1, BINARY: 0x2, CLOSE: 0x8, PING: 0x9, PONG: 0xA,
};
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

// The development CA the broker writes on first start (data_dir/tls/ca.pem).
export function caFile(d) {
  return path.join(d.dataDir, 'tls', 'ca.pem');
}

export function waitPort(port, ms = 5000) {
  const deadline = Date.now() + ms;
  const once = () => new Promise((resolve) => {
    const s = net.connect({ host: HOST, port });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
  return (async () => {
    while (Date.now() < deadline) {
      if (await once()) return;
      await sleep(50);
    }
    throw new Error(`nothing listening on ${HOST}:${port} after ${ms} ms`);
  })();
}

// Start a broker with MQTT over WebSocket (http.listen) and secure WebSocket
// (https.listen) on free loopback ports, besides the plain MQTT port.
export async function startTransportDrover(binary = process.argv[2], settings = {}) {
  const wsPort = await freePort();
  const wssPort = await freePort();
  const d = new Drover(binary, {
    'http.listen': `${HOST}:${wsPort}`, 'https.listen': `${HOST}:${wssPort}`, ...settings,
  });
  await d.start();
  await waitPort(wsPort);
  await waitPort(wssPort);
  return { d, wsPort, wssPort };
}

// Like lib.mjs useDrover(): one broker per file, checked at the end, and a watchdog.
export function useTransportDrover(settings = {}, limitMs = 55000) {
  installSummary();
  setTimeout(() => {
    console.error(`watchdog: ${process.argv[1]} still running after ${limitMs} ms`);
    process.exit(1);
  }, limitMs).unref();
  const ctx = { d: null, wsPort: 0, wssPort: 0 };
  before(async () => { Object.assign(ctx, await startTransportDrover(process.argv[2], settings)); });
  after(async () => {
    closeAll();
    for (const w of RawWs.all) w.destroy();
    if (ctx.d) await ctx.d.stop();
  });
  return ctx;
}

// Options for lib.mjs connect(): MQTT.js over ws://127.0.0.1:PORT/mqtt.
export function wsOptions(ctx, protocolVersion = 4, extra = {}) {
  return {
    protocol: 'ws', host: HOST, hostname: HOST, port: ctx.wsPort, path: WS_PATH, protocolVersion, ...extra,
  };
}

// Options for lib.mjs connect(): MQTT.js over wss://localhost:PORT/mqtt, trusting only the dev CA.
export function wssOptions(ctx, protocolVersion = 4, extra = {}) {
  return {
    protocol: 'wss',
    host: 'localhost',
    hostname: 'localhost',
    port: ctx.wssPort,
    path: WS_PATH,
    protocolVersion,
    ca: fs.readFileSync(caFile(ctx.d)),
    rejectUnauthorized: true,
    ...extra,
  };
}

// ---------------------------------------------------------------------------
// A raw RFC 6455 client: exact control over every frame, visibility of every frame back.

export function acceptFor(key) {
  return crypto.createHash('sha1').update(key + WS_GUID).digest('base64');
}

// One frame, client to server.  mask: true (random key), false (unmasked), or a 4-byte Buffer.
export function encodeFrame(opcode, payload = Buffer.alloc(0), {
  fin = true, mask = true, rsv = 0, len = null,
} = {}) {
  const data = Buffer.from(payload);
  const n = len ?? data.length;
  const head = [((fin ? 0x80 : 0) | ((rsv & 7) << 4) | (opcode & 0x0F))];
  const m = mask ? 0x80 : 0;
  let ext = Buffer.alloc(0);
  if (n < 126) {
    head.push(m | n);
  } else if (n < 65536) {
    head.push(m | 126);
    ext = Buffer.alloc(2);
    ext.writeUInt16BE(n);
  } else {
    head.push(m | 127);
    ext = Buffer.alloc(8);
    ext.writeBigUInt64BE(BigInt(n));
  }
  if (!mask) return Buffer.concat([Buffer.from(head), ext, data]);
  const key = Buffer.isBuffer(mask) ? mask : crypto.randomBytes(4);
  const body = Buffer.alloc(data.length);
  for (let i = 0; i < data.length; i++) body[i] = data[i] ^ key[i & 3];
  return Buffer.concat([Buffer.from(head), ext, key, body]);
}

// Parse one server frame from buf at 0: {fin, rsv, opcode, masked, payload, size} or null.
export function decodeFrame(buf) {
  if (buf.length < 2) return null;
  const b0 = buf[0];
  const b1 = buf[1];
  let len = b1 & 0x7F;
  let at = 2;
  if (len === 126) {
    if (buf.length < 4) return null;
    len = buf.readUInt16BE(2);
    at = 4;
  } else if (len === 127) {
    if (buf.length < 10) return null;
    len = Number(buf.readBigUInt64BE(2));
    at = 10;
  }
  const masked = !!(b1 & 0x80);
  let key = null;
  if (masked) {
    if (buf.length < at + 4) return null;
    key = buf.subarray(at, at + 4);
    at += 4;
  }
  if (buf.length < at + len) return null;
  let payload = Buffer.from(buf.subarray(at, at + len));
  if (key) payload = Buffer.from(payload.map((x, i) => x ^ key[i & 3]));
  return {
    fin: !!(b0 & 0x80), rsv: (b0 >> 4) & 7, opcode: b0 & 0x0F, masked, payload, size: at + len,
  };
}

// Parse a raw HTTP response head: {status, headers (lower-case names), head, rest}.
function parseHead(buf) {
  const i = buf.indexOf('\r\n\r\n');
  if (i < 0) return null;
  const head = buf.subarray(0, i).toString('latin1');
  const lines = head.split('\r\n');
  const m = /^HTTP\/1\.1 (\d{3})/.exec(lines[0]);
  const headers = {};
  for (const l of lines.slice(1)) {
    const c = l.indexOf(':');
    if (c > 0) headers[l.slice(0, c).trim().toLowerCase()] = l.slice(c + 1).trim();
  }
  return {
    status: m ? Number(m[1]) : 0, headers, head, rest: buf.subarray(i + 4),
  };
}

export class RawWs {
  static all = new Set();

  constructor(sock) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.frames = []; // parsed server frames not yet taken
    this.closed = false; // TCP closed (EOF, reset)
    this.waiters = [];
    this.response = null;
    RawWs.all.add(this);
    sock.on('data', (d) => { this.buf = Buffer.concat([this.buf, d]); this._parse(); this._wake(); });
    const gone = () => { this.closed = true; this._wake(); };
    sock.on('end', gone);
    sock.on('close', gone);
    sock.on('error', gone);
  }

  // Connect (TCP, or TLS with {tls: {ca, servername}}) without any handshake.
  static connect(port, { tlsOptions = null } = {}) {
    return withTimeout(new Promise((resolve, reject) => {
      const sock = tlsOptions
        ? tls.connect({ host: HOST, port, ...tlsOptions })
        : net.connect({ host: HOST, port });
      sock.once(tlsOptions ? 'secureConnect' : 'connect', () => {
        sock.removeListener('error', reject);
        sock.setNoDelay(true);
        resolve(new RawWs(sock));
      });
      sock.once('error', reject);
    }), 5000, `connect to ${port}`);
  }

  // Connect and upgrade; rejects unless the answer is 101 (see handshake() for options).
  static async open(port, opts = {}) {
    const w = await RawWs.connect(port, opts);
    const r = await w.handshake(opts);
    if (r.status !== 101) {
      w.destroy();
      throw new Error(`WebSocket upgrade answered ${r.status}:\n${r.head}`);
    }
    return w;
  }

  _wake() {
    const ws = this.waiters;
    this.waiters = [];
    for (const f of ws) f();
  }

  _changed(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.waiters.push(() => { clearTimeout(t); resolve(); });
    });
  }

  async _until(pred, ms, what) {
    const deadline = Date.now() + ms;
    for (;;) {
      const v = pred();
      if (v) return v;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
      await this._changed(left);
    }
  }

  _parse() {
    if (!this.response) return;
    for (;;) {
      const f = decodeFrame(this.buf);
      if (!f) return;
      this.buf = this.buf.subarray(f.size);
      this.frames.push(f);
    }
  }

  write(bytes) {
    if (!this.sock.destroyed) this.sock.write(bytes);
  }

  // Send the upgrade request; resolves with {status, headers, head, body} (body: for non-101,
  // whatever arrived until the server closed).  protocol: a string, a list, or null for none.
  async handshake({
    path: p = WS_PATH, protocol = 'mqtt', key = crypto.randomBytes(16).toString('base64'), headers = {},
    raw = null, ms = 5000,
  } = {}) {
    let req = raw;
    if (req === null) {
      const lines = [`GET ${p} HTTP/1.1`, `Host: ${HOST}`, 'Upgrade: websocket', 'Connection: Upgrade',
        `Sec-WebSocket-Key: ${key}`, 'Sec-WebSocket-Version: 13'];
      if (protocol !== null) lines.push(`Sec-WebSocket-Protocol: ${[].concat(protocol).join(', ')}`);
      for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
      req = `${lines.join('\r\n')}\r\n\r\n`;
    }
    this.write(Buffer.from(req, 'latin1'));
    const r = await this._until(() => parseHead(this.buf) || (this.closed && { status: 0, headers: {}, head: '(closed)', rest: this.buf }),
      ms, 'the HTTP response head');
    this.buf = Buffer.from(r.rest);
    this.key = key;
    if (r.status === 101) {
      this.response = r;
      this._parse();
      return { ...r, acceptOk: r.headers['sec-websocket-accept'] === acceptFor(key) };
    }
    // an error response: read the body until the server closes
    await this._until(() => this.closed, ms, 'the server to close after an error response').catch(() => {});
    return { ...r, body: this.buf.toString('utf8') };
  }

  send(opcode, payload, opts) { this.write(encodeFrame(opcode, payload, opts)); }

  // MQTT bytes in one masked binary frame.
  sendMqtt(bytes) { this.send(OP.BINARY, bytes); }

  // The next server frame (any opcode); rejects on timeout or when the TCP connection closed first.
  async readFrame(ms = 3000) {
    await this._until(() => this.frames.length > 0 || this.closed, ms, 'a WebSocket frame');
    if (this.frames.length) return this.frames.shift();
    throw new Error('connection closed before a frame arrived');
  }

  // The next n bytes of the MQTT byte stream carried by data frames (binary/continuation; frame
  // boundaries mean nothing to MQTT).  Bytes beyond n are kept for the next call; other frames stay
  // in this.frames.
  async readMqtt(n, ms = 3000) {
    this.mqttBuf = this.mqttBuf || Buffer.alloc(0);
    const deadline = Date.now() + ms;
    while (this.mqttBuf.length < n) {
      await this._until(() => this.frames.some((f) => f.opcode <= 2) || this.closed,
        Math.max(deadline - Date.now(), 1), `${n} bytes of MQTT (have ${this.mqttBuf.length})`);
      const i = this.frames.findIndex((f) => f.opcode <= 2);
      if (i < 0) throw new Error(`connection closed after ${this.mqttBuf.length} of ${n} bytes of MQTT`);
      const [f] = this.frames.splice(i, 1);
      this.mqttBuf = Buffer.concat([this.mqttBuf, f.payload]);
    }
    const out = this.mqttBuf.subarray(0, n);
    this.mqttBuf = this.mqttBuf.subarray(n);
    return Buffer.from(out);
  }

  // Wait for the server's close frame and the end of the TCP connection.
  // Resolves {code, reason, frame (true if a close frame came), tcpClosed}.
  async waitClose(ms = 3000) {
    await this._until(() => this.closed, ms, 'the server to close').catch(() => {});
    const frame = this.frames.find((f) => f.opcode === OP.CLOSE) || null;
    return {
      frame: !!frame,
      code: frame && frame.payload.length >= 2 ? frame.payload.readUInt16BE(0) : null,
      reason: frame ? frame.payload.subarray(2).toString('utf8') : '',
      tcpClosed: this.closed,
      frames: this.frames,
    };
  }

  destroy() {
    RawWs.all.delete(this);
    this.sock.destroy();
  }
}

// ---------------------------------------------------------------------------
// Minimal MQTT packet bytes for the raw client.

function mstr(s) {
  const b = Buffer.from(s, 'utf8');
  const l = Buffer.alloc(2);
  l.writeUInt16BE(b.length);
  return Buffer.concat([l, b]);
}

function varint(n) {
  const out = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return Buffer.from(out);
}

export function mqttPacket(first, body) {
  return Buffer.concat([Buffer.from([first]), varint(body.length), body]);
}

export function mqttConnect(clientId, version = 4, keepalive = 60) {
  const vh = Buffer.concat([mstr('MQTT'), Buffer.from([version, 0x02, keepalive >> 8, keepalive & 255])]);
  const props = version === 5 ? Buffer.from([0]) : Buffer.alloc(0);
  return mqttPacket(0x10, Buffer.concat([vh, props, mstr(clientId)]));
}

export function mqttSubscribe(pid, topic, qos = 0) {
  return mqttPacket(0x82, Buffer.concat([Buffer.from([pid >> 8, pid & 255]), mstr(topic), Buffer.from([qos])]));
}

export function mqttPublish(topic, payload, qos = 0, pid = 1) {
  const parts = [mstr(topic)];
  if (qos) parts.push(Buffer.from([pid >> 8, pid & 255]));
  parts.push(Buffer.from(payload));
  return mqttPacket(0x30 | (qos << 1), Buffer.concat(parts));
}

export const PINGREQ = Buffer.from([0xC0, 0x00]);
export const PINGRESP = Buffer.from([0xD0, 0x00]);
export const CONNACK_OK = Buffer.from([0x20, 0x02, 0x00, 0x00]);
