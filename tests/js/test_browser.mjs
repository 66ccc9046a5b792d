// MQTT over WebSocket from a real browser: Debian's headless Chromium loads a page (served by a
// node http server on loopback) that uses MQTT.js's browser bundle (dist/mqtt.min.js) to connect
// to ws://127.0.0.1:PORT/mqtt with MQTT 3.1.1 and 5.0, subscribe, publish at QoS 0/1/2 and receive
// a message published by a node client over TCP; the page reports back by fetch().
// Usage: node test_browser.mjs /path/to/drover
// Skipped (exit 0, "skipped" line) when /usr/bin/chromium is missing: apt-get install -y chromium.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  HOST, connect, publish, subscribe, end, waitMessages, uniqueId, withTimeout, sleep, installSummary,
} from './lib.mjs';
import { useTransportDrover, WS_PATH } from './lib_transport.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BUNDLE = path.join(HERE, 'node_modules', 'mqtt', 'dist', 'mqtt.min.js');
const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>drover browser test</title>
<script src="/mqtt.min.js"></script></head>
<body><pre id="log"></pre><script>
const q = new URLSearchParams(location.search);
const report = (p, obj) => fetch(p, { method: 'POST', body: JSON.stringify(obj) });
const log = (s) => { document.getElementById('log').textContent += s + '\\n'; report('/event', { log: s }); };
window.addEventListener('error', (e) => report('/result', { ok: false, error: 'page error: ' + e.message }));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
(async () => {
  try {
    if (typeof mqtt === 'undefined') throw new Error('mqtt.min.js did not load');
    const results = {};
    for (const v of [4, 5]) {
      const topic = q.get('topic') + '/v' + v;
      const c = mqtt.connect(q.get('url'), {
        protocolVersion: v, clientId: 'browser-v' + v + '-' + Date.now(), reconnectPeriod: 0, connectTimeout: 5000,
      });
      const connack = await new Promise((res, rej) => {
        c.once('connect', res);
        c.once('error', rej);
        c.once('close', () => rej(new Error('closed before CONNACK')));
      });
      log('v' + v + ' connected');
      const got = [];
      c.on('message', (t, p, pkt) => got.push({ topic: t, payload: new TextDecoder().decode(p), qos: pkt.qos }));
      const granted = await c.subscribeAsync(topic + '/#', { qos: 2 });
      await report('/event', { subscribed: topic });
      for (const qos of [0, 1, 2]) await c.publishAsync(topic + '/q' + qos, 'browser-q' + qos, { qos });
      const deadline = Date.now() + 10000;
      while (got.length < 4 && Date.now() < deadline) await sleep(20);
      results['v' + v] = { got, granted: granted.map((g) => g.qos), sessionPresent: connack.sessionPresent };
      await c.endAsync();
      log('v' + v + ' done: ' + got.length + ' messages');
    }
    await report('/result', { ok: true, results, userAgent: navigator.userAgent });
  } catch (e) {
    await report('/result', { ok: false, error: String((e && e.stack) || e) });
  }
})();
</script></body></html>`;

// A loopback http server for the page, the bundle, and the page's reports.
function startPageServer(onEvent) {
  let resolveResult;
  const result = new Promise((r) => { resolveResult = r; });
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (req.method === 'GET' && url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(PAGE);
    } else if (req.method === 'GET' && url.pathname === '/mqtt.min.js') {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' });
      res.end(fs.readFileSync(BUNDLE));
    } else if (req.method === 'POST' && (url.pathname === '/event' || url.pathname === '/result')) {
      let body = '';
      req.on('data', (d) => { body += d; });
      req.on('end', () => {
        res.writeHead(204, { 'access-control-allow-origin': '*' });
        res.end();
        let msg;
        try { msg = JSON.parse(body); } catch { msg = { ok: false, error: `bad report: ${body}` }; }
        if (url.pathname === '/result') resolveResult(msg);
        else onEvent(msg);
      });
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  return new Promise((resolve) => {
    server.listen(0, HOST, () => resolve({ server, port: server.address().port, result }));
  });
}

function startChromium(url, profile) {
  const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-dev-shm-usage', '--no-proxy-server', `--user-data-dir=${profile}`, url];
  // Its own process group, so that the browser and every helper process it starts end with it.
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
  // Keep the closing "N passed, N failed" line of lib.mjs, with the skip said plainly.
  installSummary();
  console.log('skipped: chromium is not installed (apt-get install -y chromium)');
  test('headless Chromium with MQTT.js over ws://', { skip: 'chromium is not installed' }, () => {});
} else {
  const ctx = useTransportDrover();

  test('headless Chromium: MQTT.js browser bundle over ws:// (v4 and v5, QoS 0/1/2)', async () => {
    const base = `browser/${uniqueId()}`;
    const node = await connect(ctx.d, { protocolVersion: 5 });
    await subscribe(node, `${base}/#`, { qos: 2 });
    const events = [];
    const page = await startPageServer((msg) => {
      events.push(msg);
      if (msg.subscribed) publish(node, `${msg.subscribed}/node`, 'from-node', { qos: 1 }).catch(() => {});
    });
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'drover-chromium-'));
    const wsUrl = `ws://${HOST}:${ctx.wsPort}${WS_PATH}`;
    const pageUrl = `http://${HOST}:${page.port}/?url=${encodeURIComponent(wsUrl)}&topic=${encodeURIComponent(base)}`;
    const chrome = startChromium(pageUrl, profile);
    let result;
    try {
      result = await withTimeout(Promise.race([page.result, chrome.exited.then((st) => ({
        ok: false, error: `chromium exited before reporting: ${JSON.stringify(st)}`,
      }))]), 40000, 'the page to report');
    } catch (e) {
      result = { ok: false, error: String(e) };
    } finally {
      await stopChromium(chrome);
      page.server.close();
      fs.rmSync(profile, { recursive: true, force: true });
    }
    const diag = () => `\nresult: ${JSON.stringify(result)}\nevents: ${JSON.stringify(events)}\n`
      + `chromium output (tail):\n${chrome.output.slice(-3000)}`;
    assert.equal(result.ok, true, `the page failed${diag()}`);
    for (const v of [4, 5]) {
      const r = result.results[`v${v}`];
      assert.deepEqual(r.granted, [2], `v${v} granted QoS${diag()}`);
      const got = r.got.map((m) => `${m.topic.split('/').pop()}=${m.payload}@${m.qos}`).sort();
      assert.deepEqual(got, ['node=from-node@1', 'q0=browser-q0@0', 'q1=browser-q1@1', 'q2=browser-q2@2'],
        `v${v} messages received in the browser${diag()}`);
    }
    // The node client over TCP saw the browser's six publishes (and its own two).
    const fromBrowser = await waitMessages(node, 6, 5000, (m) => m.payload.startsWith('browser-'));
    assert.equal(fromBrowser.length, 6);
    await sleep(100);
    await end(node);
  });
}
