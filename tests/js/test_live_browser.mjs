// The live stream from a real browser (docs/stream.md): Debian's headless Chromium loads a page
// that uses the browser's own WebSocket and EventSource with stream tickets in the query (the
// page gets each ticket from its own backend, as a dashboard would: the token never reaches the
// browser), and receives telemetry that a device publishes over MQTT (MQTT.js in node).  The
// EventSource part also resumes: it closes, misses events, and opens again with a new ticket and
// `last_event_id=` (a single-use ticket cannot be reused by the browser's own reconnection).
//
// Two deployments, the same page:
// - same origin: the page's server forwards /api/ to drover (HTTP and the WebSocket upgrade), as
//   a reverse proxy in front of a dashboard does;
// - cross origin: the page talks to drover's own port directly (a dashboard on another host or a
//   development server), which EventSource allows only with CORS headers on the stream.
// The page reports back by fetch().
// Usage: node test_live_browser.mjs /path/to/drover
// Skipped (exit 0, "skipped" line) when /usr/bin/chromium is missing: apt-get install -y chromium.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { installSummary } from './lib.mjs';
import {
  HOST, api, device, endDevice, pastMs, provision, telemetry, tenantToken, useLive, withTimeout,
} from './lib_live.mjs';

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>drover live stream test</title></head>
<body><pre id="log"></pre><script>
const q = new URLSearchParams(location.search);
const post = (p, obj) => fetch(p, { method: 'POST', body: JSON.stringify(obj) });
const log = (s) => { document.getElementById('log').textContent += s + '\\n'; post('/event', { log: s }); };
window.addEventListener('error', (e) => post('/result', { ok: false, error: 'page error: ' + e.message }));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const until = async (pred, ms, what) => {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for ' + what);
    await sleep(20);
  }
};
const ticket = async () => (await (await fetch('/ticket', { method: 'POST' })).json()).ticket;
// Ask node to publish n telemetry messages labelled \`label\`; resolves once they are acknowledged.
const publish = async (label, n) => (await post('/publish', { label, n })).json();

async function viaWebSocket(mode, httpBase) {
  const got = [];
  const wsBase = httpBase.replace(/^http/, 'ws');
  const ws = new WebSocket(wsBase + '/api/v1/stream?ticket=' + encodeURIComponent(await ticket()), 'drover.stream.v1');
  const msgs = [];
  let closed = null;
  ws.onmessage = (m) => msgs.push(JSON.parse(m.data));
  ws.onclose = (e) => { closed = e.code; };
  await until(() => ws.readyState === WebSocket.OPEN || closed !== null, 8000, 'the WebSocket to open');
  if (ws.readyState !== WebSocket.OPEN) throw new Error('WebSocket closed before opening: ' + closed);
  ws.send(JSON.stringify({ op: 'subscribe', id: 'b1', devices: ['bd1'], keys: ['seq'] }));
  await until(() => msgs.some((m) => m.id === 'b1'), 8000, 'the ack');
  const ack = msgs.find((m) => m.id === 'b1');
  if (ack.type !== 'ack') throw new Error('subscribe refused: ' + JSON.stringify(ack));
  const label = mode + '-ws';
  await publish(label, 3);
  await until(() => msgs.filter((m) => m.type === 'telemetry').length >= 3, 8000, '3 telemetry events');
  ws.close(1000);
  return { label, protocol: ws.protocol, ack, events: msgs.filter((m) => m.type === 'telemetry') };
}

async function viaEventSource(mode, httpBase) {
  const url = httpBase + '/api/v1/stream/sse?device=bd1&keys=seq';
  const open = async (extra) => {
    const es = new EventSource(url + '&ticket=' + encodeURIComponent(await ticket()) + extra);
    const s = { es, events: [], errors: 0 };
    es.addEventListener('telemetry', (m) => s.events.push({ id: m.lastEventId, data: JSON.parse(m.data) }));
    es.onerror = () => { s.errors += 1; };
    await until(() => es.readyState === EventSource.OPEN || es.readyState === EventSource.CLOSED, 8000,
      'the EventSource to open');
    if (es.readyState !== EventSource.OPEN) throw new Error('EventSource failed to open (readyState ' + es.readyState + ')');
    return s;
  };
  const a = await open('');
  await publish(mode + '-sse-live', 3);
  await until(() => a.events.length >= 3, 8000, '3 events on the EventSource');
  a.es.close();
  const lastId = a.events[a.events.length - 1].id;
  await publish(mode + '-sse-missed', 4);
  const b = await open('&last_event_id=' + encodeURIComponent(lastId));
  await until(() => b.events.length >= 4, 8000, 'the 4 missed events');
  await publish(mode + '-sse-after', 1);
  await until(() => b.events.length >= 5, 8000, 'the live event after the replay');
  await sleep(300);
  b.es.close();
  return { lastId, first: a.events, resumed: b.events };
}

(async () => {
  const results = {};
  for (const [mode, base] of [['same-origin', location.origin], ['cross-origin', q.get('drover')]]) {
    results[mode] = {};
    for (const [name, fn] of [['ws', viaWebSocket], ['sse', viaEventSource]]) {
      try {
        results[mode][name] = { ok: true, ...(await fn(mode, base)) };
        log(mode + ' ' + name + ' ok');
      } catch (e) {
        results[mode][name] = { ok: false, error: String((e && e.message) || e) };
        log(mode + ' ' + name + ' failed: ' + e);
      }
    }
  }
  await post('/result', { ok: true, results, userAgent: navigator.userAgent });
})();
</script></body></html>`;

// The page's own backend: the page, tickets (made with the token it keeps), publishing on the
// page's request, reports, and /api/ forwarded to drover (HTTP and WebSocket upgrades).
function startPageServer(live, tok, dev) {
  let resolveResult;
  const result = new Promise((r) => { resolveResult = r; });
  const events = [];
  const published = {}; // label -> [seq]
  let seq = 0;
  let lastAt = 0;
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const body = () => new Promise((resolve) => {
      let b = '';
      req.on('data', (d) => { b += d; });
      req.on('end', () => { try { resolve(JSON.parse(b || '{}')); } catch { resolve({ bad: b }); } });
    });
    const json = (status, obj) => {
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(obj));
    };
    if (req.method === 'GET' && url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(PAGE);
    } else if (url.pathname.startsWith('/api/')) {
      // A reverse proxy: same method, path and headers; the answer streamed back as it comes.
      const up = http.request({
        host: HOST, port: live.httpPort, method: req.method, path: req.url, headers: req.headers, agent: false,
      }, (ur) => {
        res.writeHead(ur.statusCode, ur.headers);
        res.flushHeaders();
        ur.pipe(res);
      });
      up.on('error', () => { if (!res.headersSent) json(502, { error: 'bad gateway' }); else res.destroy(); });
      res.on('close', () => up.destroy());
      req.pipe(up);
    } else if (req.method === 'POST' && url.pathname === '/ticket') {
      api(live, 'POST', '/api/v1/stream/tickets', undefined, tok).then((r) => json(r.status, r.json),
        (e) => json(500, { error: String(e) }));
    } else if (req.method === 'POST' && url.pathname === '/publish') {
      body().then(async ({ label, n }) => {
        published[label] = published[label] || [];
        for (let i = 0; i < n; i++) {
          // One message per millisecond at most: two of a device in the same millisecond share
          // one stored sample time (test_live_sse.mjs covers that case).
          await pastMs(lastAt);
          seq += 1;
          await telemetry(dev, { seq, other: 1 });
          lastAt = Date.now();
          published[label].push(seq);
        }
        json(200, { published: published[label] });
      }).catch((e) => json(500, { error: String(e) }));
    } else if (req.method === 'POST' && (url.pathname === '/event' || url.pathname === '/result')) {
      body().then((msg) => {
        res.writeHead(204);
        res.end();
        if (url.pathname === '/result') resolveResult(msg);
        else events.push(msg);
      });
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  server.on('upgrade', (req, socket, head) => {
    if (!req.url.startsWith('/api/')) { socket.destroy(); return; }
    const up = net.connect(live.httpPort, HOST, () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      up.write(`${lines.join('\r\n')}\r\n\r\n`);
      if (head && head.length) up.write(head);
      socket.pipe(up).pipe(socket);
    });
    up.on('error', () => socket.destroy());
    socket.on('error', () => up.destroy());
  });
  return new Promise((resolve) => {
    server.listen(0, HOST, () => resolve({
      server, port: server.address().port, result, events, published,
    }));
  });
}

function startChromium(url, profile) {
  const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-dev-shm-usage', '--no-proxy-server', `--user-data-dir=${profile}`, url];
  const proc = spawn(CHROMIUM, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  proc.output = '';
  proc.stdout.on('data', (d) => { proc.output += d; });
  proc.stderr.on('data', (d) => { proc.output += d; });
  proc.exited = new Promise((r) => proc.once('exit', (code, signal) => r({ code, signal })));
  return proc;
}

async function stopChromium(proc) {
  if (proc.exitCode === null && proc.signalCode === null) {
    try { process.kill(-proc.pid, 'SIGTERM'); } catch { /* already gone */ }
    const st = await withTimeout(proc.exited, 5000, 'chromium exit').catch(() => null);
    if (!st) {
      try { process.kill(-proc.pid, 'SIGKILL'); } catch { /* already gone */ }
      await proc.exited;
    }
  }
}

if (!CHROMIUM) {
  installSummary();
  console.log('skipped: chromium is not installed (apt-get install -y chromium)');
  test('headless Chromium with the live stream', { skip: 'chromium is not installed' }, () => {});
} else {
  const run = {}; // filled once by the first test, read by both
  const ctx = useLive({}, async (c) => {
    run.tok = await tenantToken(c, 'acme');
    await provision(c, 'acme', 'bd1');
    run.dev = await device(c, 'acme', 'bd1');
    run.page = await startPageServer(c, run.tok, run.dev);
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'drover-chromium-'));
    const pageUrl = `http://${HOST}:${run.page.port}/?drover=${encodeURIComponent(c.base)}`;
    const chrome = startChromium(pageUrl, profile);
    try {
      run.result = await withTimeout(Promise.race([run.page.result, chrome.exited.then((st) => ({
        ok: false, error: `chromium exited before reporting: ${JSON.stringify(st)}`,
      }))]), 60000, 'the page to report');
    } catch (e) {
      run.result = { ok: false, error: String(e) };
    } finally {
      await stopChromium(chrome);
      run.page.server.close();
      fs.rmSync(profile, { recursive: true, force: true });
      await endDevice(run.dev);
    }
    run.diag = () => `\nresult: ${JSON.stringify(run.result)}\npage log: ${JSON.stringify(run.page.events)}\n`
      + `chromium output (tail):\n${chrome.output.slice(-2000)}${c.diag(3000)}`;
  });

  const seqsOf = (events) => events.map((e) => e.values.seq);

  for (const mode of ['same-origin', 'cross-origin']) {
    test(`headless Chromium, ${mode}: WebSocket with a ticket receives MQTT telemetry`, () => {
      assert.equal(run.result.ok, true, `the page failed${run.diag()}`);
      const r = run.result.results[mode].ws;
      assert.equal(r.ok, true, `${mode} WebSocket: ${r.error}${run.diag()}`);
      assert.equal(r.protocol, 'drover.stream.v1');
      assert.deepEqual(r.ack, {
        type: 'ack', id: 'b1', op: 'subscribe', devices: 1,
      });
      assert.deepEqual(seqsOf(r.events), run.page.published[r.label]);
      for (const e of r.events) {
        assert.deepEqual([e.type, e.sub, e.tenant, e.device, Object.keys(e.values)],
          ['telemetry', 'b1', 'acme', 'bd1', ['seq']]);
      }
    });

    test(`headless Chromium, ${mode}: EventSource with a ticket receives telemetry and resumes`, () => {
      assert.equal(run.result.ok, true, `the page failed${run.diag()}`);
      const r = run.result.results[mode].sse;
      assert.equal(r.ok, true, `${mode} EventSource: ${r.error}${run.diag()}`);
      const pub = run.page.published;
      assert.deepEqual(r.first.map((e) => e.data.values.seq), pub[`${mode}-sse-live`]);
      assert.deepEqual(r.resumed.map((e) => e.data.values.seq), [...pub[`${mode}-sse-missed`], ...pub[`${mode}-sse-after`]],
        'the resumed EventSource got exactly the missed events, then the live one');
      for (const e of [...r.first, ...r.resumed]) assert.match(e.id, /^\d+\.\d+\.\d+$/);
    });
  }
}
