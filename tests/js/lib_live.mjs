// Helpers for the live-stream tests (docs/stream.md): a server with its HTTP listener, REST calls,
// tenants / devices / tokens, devices publishing telemetry over MQTT, and two stream clients:
//
//   const ctx = useLive({ 'stream.heartbeat_ms': '1000' }, setup); // one server per file, checked at the end
//   const tok = await tenantToken(ctx, 'acme');                // a fresh tenant and a viewer token
//   await provision(ctx, 'acme', 'd1', { tags: { site: 'lyon' } });
//   const dev = await device(ctx, 'acme', 'd1');              // MQTT.js as acme/d1
//   await telemetry(dev, { temp: 21.5 });                      // QoS 1 to devices/d1/telemetry, PUBACK waited
//   const w = await LiveWs.open(ctx, { token: tok });          // the npm `ws` client on /api/v1/stream
//   await w.request({ op: 'subscribe', id: 's1', devices: ['d1'] });   // -> the ack (or error) frame
//   const s = await SseClient.open(ctx, 'types=telemetry&device=d1', { token: tok }); // raw SSE reader
//
// Everything is loopback only and bounded in time; the server's log is printed when a test fails
// through ctx.diag().
import http from 'node:http';
import { after, before } from 'node:test';
import WebSocket from 'ws';
import {
  Drover, HOST, closeAll, connect, end, freePort, installSummary, publish, sleep, waitFor, withTimeout,
} from './lib.mjs';
import { RawWs, waitPort } from './lib_transport.mjs';

export const SECRET = 'live-stream-test-secret-0001';
export const STREAM_PATH = '/api/v1/stream';
export const SSE_PATH = '/api/v1/stream/sse';

// The platform admin token the first start printed ("    DROVER_TOKEN=drv_...").
async function adminToken(d) {
  return waitFor(() => {
    const m = /^\s*DROVER_TOKEN=(drv_[A-Za-z0-9]+)\s*$/m.exec(d.log(Infinity));
    return m && m[1];
  }, 10000, 'the DROVER_TOKEN line in the server log');
}

// A server with MQTT and the HTTP listener (REST API and streams) on free loopback ports.
export async function startLive(binary = process.argv[2], settings = {}) {
  const httpPort = await freePort();
  const d = new Drover(binary, { 'http.listen': `${HOST}:${httpPort}`, 'api.rate_limit_rps': '0', ...settings });
  await d.start();
  await waitPort(httpPort, 10000);
  return {
    d, httpPort, admin: await adminToken(d), base: `http://${HOST}:${httpPort}`,
  };
}

// One server per test file, stopped and checked at the end, and a watchdog (the whole file must
// finish well within 120 s).  setup(ctx), if given, runs once the server is up (in the same
// `before` hook: node 20 does not wait for one top-level hook before starting the next).
export function useLive(settings = {}, setup = null, limitMs = 110000) {
  installSummary();
  setTimeout(() => {
    console.error(`watchdog: ${process.argv[1]} still running after ${limitMs} ms`);
    if (ctx.d) console.error(`--- drover log ---\n${ctx.d.log()}`);
    process.exit(1);
  }, limitMs).unref();
  const ctx = {
    d: null,
    httpPort: 0,
    admin: null,
    base: '',
    eventSources: [], // EventSource objects a test made: closed at the end whatever happened
    // The tail of the server's log, for assertion messages.
    diag: (tail = 4000) => (ctx.d ? `\n--- drover log (tail) ---\n${ctx.d.log(tail)}` : ''),
  };
  before(async () => {
    Object.assign(ctx, await startLive(process.argv[2], settings));
    if (setup) await setup(ctx);
  });
  after(async () => {
    for (const w of LiveWs.all) w.terminate();
    for (const s of SseClient.all) s.close();
    for (const w of RawWs.all) w.destroy();
    for (const es of ctx.eventSources) es.close();
    closeAll();
    if (ctx.d) await ctx.d.stop();
  });
  return ctx;
}

// ---------------------------------------------------------------------------
// REST

// A REST call with fetch: {status, headers, json, text}.  token: a bearer token (default the
// platform admin's), or null for none.
export async function api(ctx, method, path, body = undefined, token = ctx.admin) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await withTimeout(fetch(`${ctx.base}${path}`, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  }), 15000, `${method} ${path}`);
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  return {
    status: r.status, headers: r.headers, json, text,
  };
}

// api() that must answer `status`.
export async function apiOk(ctx, method, path, body = undefined, token = ctx.admin, status = [200, 201, 204]) {
  const r = await api(ctx, method, path, body, token);
  const want = [].concat(status);
  if (!want.includes(r.status)) {
    throw new Error(`${method} ${path} answered ${r.status}, want ${want.join('/')}: ${r.text.slice(0, 400)}`);
  }
  return r;
}

// A tenant token's record as created ({id, token, ...}; viewer unless said otherwise; scopes: a
// list, or undefined for none).
export async function tokenRecord(ctx, tenant, role = 'viewer', scopes = undefined) {
  const body = { name: `live-${role}-${Math.random().toString(36).slice(2, 8)}`, role };
  if (scopes) body.scopes = scopes;
  const r = await apiOk(ctx, 'POST', `/api/v1/tenants/${tenant}/tokens`, body);
  return r.json;
}

// A tenant token's secret (see tokenRecord).
export async function token(ctx, tenant, role = 'viewer', scopes = undefined) {
  return (await tokenRecord(ctx, tenant, role, scopes)).token;
}

// Create a tenant and return a viewer token of it.
export async function tenantToken(ctx, tenant, role = 'viewer') {
  await apiOk(ctx, 'POST', '/api/v1/tenants', { id: tenant, name: tenant });
  return token(ctx, tenant, role);
}

// Create a device (fields: groups, tags, profile, ...) with the shared secret credential.
export async function provision(ctx, tenant, id, fields = {}) {
  await apiOk(ctx, 'POST', `/api/v1/tenants/${tenant}/devices`, { id, ...fields });
  await apiOk(ctx, 'POST', `/api/v1/tenants/${tenant}/devices/${id}/credentials`, { kind: 'secret', secret: SECRET });
}

export async function group(ctx, tenant, id, fields = { kind: 'static' }) {
  await apiOk(ctx, 'POST', `/api/v1/tenants/${tenant}/groups`, { id, name: id, ...fields });
}

// A stream ticket for `tok` (POST /api/v1/stream/tickets must answer 201 {ticket, expires_in}).
export async function ticket(ctx, tok) {
  const r = await api(ctx, 'POST', '/api/v1/stream/tickets', undefined, tok);
  if (r.status !== 201 || !r.json || typeof r.json.ticket !== 'string') {
    throw new Error(`POST /api/v1/stream/tickets answered ${r.status}: ${r.text.slice(0, 300)}${ctx.diag()}`);
  }
  return r.json.ticket;
}

// The /metrics text.
export async function metrics(ctx) {
  return (await apiOk(ctx, 'GET', '/metrics')).text;
}

// ---------------------------------------------------------------------------
// Devices over MQTT

// MQTT.js (5.0) connected as <tenant>/<device> with the shared secret.
export function device(ctx, tenant, id, opts = {}) {
  return connect(ctx.d, {
    protocolVersion: 5, clientId: id, username: `${tenant}/${id}`, password: SECRET, ...opts,
  });
}

// Publish telemetry at QoS 1 and wait for the PUBACK (the samples are stored when it comes).
export function telemetry(dev, payload, topic = null) {
  const id = dev.options.clientId;
  return publish(dev, topic || `devices/${id}/telemetry`, typeof payload === 'string' ? payload : JSON.stringify(payload),
    { qos: 1 }, 10000);
}

export { end as endDevice };

// ---------------------------------------------------------------------------
// WebSocket stream client (npm ws)

// Try the upgrade.  Resolves {ws} when it opened, or {status, headers, body, json} for a refusal.
export function tryWs(ctx, { token: tok = null, ticket: tk = null, query = '', protocol = undefined, headers = {} } = {}) {
  const q = new URLSearchParams(query);
  if (tk) q.set('ticket', tk);
  const qs = q.toString();
  const url = `ws://${HOST}:${ctx.httpPort}${STREAM_PATH}${qs ? `?${qs}` : ''}`;
  const h = { ...headers };
  if (tok) h.authorization = `Bearer ${tok}`;
  return withTimeout(new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocol, { headers: h, handshakeTimeout: 5000, perMessageDeflate: false });
    ws.on('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      const done = () => {
        let json = null;
        try { json = JSON.parse(body); } catch { /* not JSON */ }
        resolve({
          status: res.statusCode, headers: res.headers, body, json,
        });
        req.destroy();
      };
      res.on('end', done);
      res.on('error', done);
      res.on('aborted', done);
    });
    ws.once('open', () => resolve({ ws }));
    ws.on('error', reject); // kept: errors after the answer (the aborted request) are ignored
  }), 8000, `WebSocket upgrade of ${url}`);
}

export class LiveWs {
  static all = new Set();

  constructor(ws) {
    this.ws = ws;
    this.all = []; // every JSON message received, in order
    this.raw = []; // every message as text
    this.pings = 0; // WebSocket pings from the server
    this.closed = null; // {code, reason} once closed
    this.waiters = [];
    LiveWs.all.add(this);
    ws.on('message', (data, isBinary) => {
      const text = data.toString();
      this.raw.push(isBinary ? `(binary) ${text}` : text);
      try { this.all.push(JSON.parse(text)); } catch { this.all.push({ type: '(not JSON)', text }); }
      this._wake();
    });
    ws.on('ping', () => { this.pings += 1; this._wake(); });
    ws.on('close', (code, reason) => { this.closed = { code, reason: reason.toString() }; this._wake(); });
    ws.on('error', () => {});
  }

  // Open (rejects with the status and body when the upgrade is refused).
  static async open(ctx, opts = {}) {
    const r = await tryWs(ctx, opts);
    if (!r.ws) throw new Error(`stream upgrade refused: ${r.status} ${r.body}${ctx.diag()}`);
    return new LiveWs(r.ws);
  }

  _wake() {
    const ws = this.waiters;
    this.waiters = [];
    for (const f of ws) f();
  }

  // Resolve with pred()'s value once truthy; re-checked on every message, ping and close.
  async until(pred, ms = 8000, what = 'a message') {
    const deadline = Date.now() + ms;
    for (;;) {
      const v = pred();
      if (v) return v;
      const left = deadline - Date.now();
      if (left <= 0 || this.closed) {
        throw new Error(`${this.closed ? 'connection closed' : `timed out after ${ms} ms`} waiting for `
          + `${typeof what === 'function' ? what() : what}; `
          + `received: ${this.raw.slice(-20).join(' | ')}; closed: ${JSON.stringify(this.closed)}`);
      }
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
  }

  send(obj) { this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj)); }

  // Send a client message and resolve with the server's answer to it: the first ack / error / pong
  // received after sending whose id is the message's (null for a message without one), or one of
  // `ids` when given.
  async request(obj, ms = 8000, ids = undefined) {
    const from = this.all.length;
    const id = typeof obj === 'object' && obj !== null && 'id' in obj ? obj.id : null;
    const want = ids || [id];
    this.send(obj);
    const what = typeof obj === 'string' ? obj : JSON.stringify(obj);
    return this.until(() => this.all.slice(from).find((m) => ['ack', 'error', 'pong'].includes(m.type)
      && want.includes(m.id ?? null)), ms, `the answer to ${what.length > 200 ? `${what.slice(0, 200)}...` : what}`);
  }

  // subscribe that must be acknowledged; resolves with the ack.
  async subscribe(sub, ms = 8000) {
    const a = await this.request({ op: 'subscribe', ...sub }, ms);
    if (a.type !== 'ack') throw new Error(`subscribe ${JSON.stringify(sub)} refused: ${JSON.stringify(a)}`);
    return a;
  }

  // Events (not ack/error/pong) received so far, optionally of one subscription.
  events(sub = undefined) {
    return this.all.filter((m) => !['ack', 'error', 'pong'].includes(m.type) && (sub === undefined || m.sub === sub));
  }

  // Wait for an event matching pred; resolves with it.
  waitEvent(pred, ms = 8000, what = 'an event') {
    return this.until(() => this.events().find(pred), ms, what);
  }

  waitClose(ms = 8000) { return this.until(() => this.closed, ms, 'the close'); }

  close() { LiveWs.all.delete(this); this.ws.close(1000); }

  terminate() { LiveWs.all.delete(this); this.ws.terminate(); }
}

// ---------------------------------------------------------------------------
// A raw Server-Sent Events reader (node http), with every field and comment visible.

// Parse SSE text into blocks; returns [events, rest].  An event: {id, event, data, json, comments}
// plus {retry} when the block set it.  Comments between events are collected as {comment}.
export function parseSse(text) {
  const out = [];
  let rest = text;
  for (;;) {
    const m = /\r\n\r\n|\n\n|\r\r/.exec(rest);
    if (!m) break;
    const block = rest.slice(0, m.index);
    rest = rest.slice(m.index + m[0].length);
    const ev = { id: undefined, event: undefined, data: undefined, comments: [] };
    let any = false;
    for (const line of block.split(/\r\n|\n|\r/)) {
      if (line.startsWith(':')) { ev.comments.push(line.slice(1).trim()); continue; }
      const c = line.indexOf(':');
      const field = c < 0 ? line : line.slice(0, c);
      let value = c < 0 ? '' : line.slice(c + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      any = true;
      if (field === 'data') ev.data = ev.data === undefined ? value : `${ev.data}\n${value}`;
      else if (field === 'id') ev.id = value;
      else if (field === 'event') ev.event = value;
      else if (field === 'retry') ev.retry = value;
      else ev[`unknown:${field}`] = value;
    }
    if (!any) {
      for (const cm of ev.comments) out.push({ comment: cm });
      continue;
    }
    if (ev.data !== undefined) {
      try { ev.json = JSON.parse(ev.data); } catch { ev.json = null; }
    }
    out.push(ev);
  }
  return [out, rest];
}

export class SseClient {
  static all = new Set();

  constructor() {
    this.status = 0;
    this.headers = {};
    this.body = ''; // everything received (text)
    this.pending = '';
    this.items = []; // parsed blocks: events {id, event, data, json, comments, retry?} and {comment}
    this.ended = false;
    this.waiters = [];
    SseClient.all.add(this);
  }

  // GET /api/v1/stream/sse?<query>.  Resolves once the response head is in (any status; a non-200
  // is read to its end so that .body holds the problem).
  static open(ctx, query, {
    token: tok = null, ticket: tk = null, lastEventId = null, headers = {}, ms = 8000,
  } = {}) {
    const q = new URLSearchParams(query);
    if (tk) q.set('ticket', tk);
    const qs = q.toString();
    const h = { accept: 'text/event-stream', ...headers };
    if (tok) h.authorization = `Bearer ${tok}`;
    if (lastEventId !== null) h['last-event-id'] = lastEventId;
    const s = new SseClient();
    s.path = `${SSE_PATH}${qs ? `?${qs}` : ''}`;
    return withTimeout(new Promise((resolve, reject) => {
      const req = http.get({
        host: HOST, port: ctx.httpPort, path: s.path, headers: h, agent: false,
      }, (res) => {
        s.status = res.statusCode;
        s.headers = res.headers;
        s.res = res;
        res.setEncoding('utf8');
        res.on('data', (c) => {
          s.body += c;
          s.pending += c;
          const [items, rest] = parseSse(s.pending);
          s.pending = rest;
          s.items.push(...items);
          s._wake();
        });
        const gone = () => { s.ended = true; s._wake(); };
        res.on('end', gone);
        res.on('close', gone);
        res.on('error', gone);
        if (res.statusCode === 200) resolve(s);
        else {
          s.until(() => s.ended, ms, 'the end of the error answer').then(() => {
            try { s.json = JSON.parse(s.body); } catch { s.json = null; }
            resolve(s);
          }, reject);
        }
      });
      s.req = req;
      req.on('error', (e) => { s.ended = true; s._wake(); reject(e); });
    }), ms + 1000, `GET ${s.path}`);
  }

  _wake() {
    const ws = this.waiters;
    this.waiters = [];
    for (const f of ws) f();
  }

  async until(pred, ms = 8000, what = 'a stream event') {
    const deadline = Date.now() + ms;
    for (;;) {
      const v = pred();
      if (v) return v;
      const left = deadline - Date.now();
      if (left <= 0 || this.ended) {
        throw new Error(`${this.ended ? 'stream ended' : `timed out after ${ms} ms`} waiting for `
          + `${typeof what === 'function' ? what() : what} `
          + `on ${this.path}; received (tail): ${JSON.stringify(this.body.slice(-1500))}; ended: ${this.ended}`);
      }
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
  }

  // Events (blocks with an event or data field), comments excluded.
  events() { return this.items.filter((i) => i.comment === undefined && (i.event !== undefined || i.data !== undefined)); }

  // Every comment line received (": heartbeat" -> "heartbeat"), wherever it stood.
  comments() {
    return this.body.split(/\r\n|\n|\r/).filter((l) => l.startsWith(':')).map((l) => l.slice(1).trim());
  }

  waitEvent(pred, ms = 8000, what = 'an event') { return this.until(() => this.events().find(pred), ms, what); }

  // The newest id received, id-only blocks included (the stream's opening "id:" line): what a
  // browser would send as Last-Event-ID.
  lastId() {
    const ev = this.items.filter((e) => e.comment === undefined && e.id !== undefined);
    return ev.length ? ev[ev.length - 1].id : null;
  }

  close() {
    SseClient.all.delete(this);
    if (this.req) this.req.destroy();
  }
}

// Parse an SSE cursor "T.E.S" (newest sample time, newest device-event row, hub arrival number)
// into [T, E, S] (numbers); throws on anything else.
export function cursor(id) {
  const m = /^(\d+)\.(\d+)\.(\d+)$/.exec(id || '');
  if (!m) throw new Error(`event id ${JSON.stringify(id)} is not a T.E.S cursor`);
  return [Number(m[1]), Number(m[2]), Number(m[3])];
}

// Sleep until the wall clock has moved past t (ms), so the next sample gets a later time.
export async function pastMs(t) {
  while (Date.now() <= t + 1) await sleep(2);
}

export { HOST, sleep, waitFor, withTimeout };
