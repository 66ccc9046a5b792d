// The live stream over WebSocket (docs/stream.md), black box with the npm `ws` client against a
// live `drover serve`: authentication before the upgrade (bearer token, single-use tickets,
// platform tokens naming a tenant), subscriptions by device / group / tag / keys / whole tenant,
// the ack / error / pong answers, unsubscribe, device.* events, two subscriptions on one
// connection, tenant isolation, close codes and the heartbeat.
// Devices publish real telemetry over MQTT (MQTT.js) with their own credentials.
// Usage: node test_live_ws.mjs /path/to/drover
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RawWs, OP } from './lib_transport.mjs';
import {
  LiveWs, STREAM_PATH, api, apiOk, device, endDevice, group, provision, sleep, telemetry, tenantToken,
  ticket, token, tokenRecord, tryWs, useLive,
} from './lib_live.mjs';

const HEARTBEAT_MS = 1000;
const T = {}; // tokens
const DEV = {}; // connected MQTT devices, by "tenant/device"
let seq = 0;
const nextSeq = () => { seq += 1; return seq; };

// Devices of acme: d1 (group g1, site=lyon), d2 (g1, site=paris), d3 (site=lyon), d4 (no tag);
// globex has its own d1 (the same id in another tenant) and gx.
async function setup() {
  T.acme = await tenantToken(ctx, 'acme');
  T.globex = await tenantToken(ctx, 'globex');
  await group(ctx, 'acme', 'g1');
  await group(ctx, 'acme', 'lyon', { kind: 'dynamic', query: { tag: 'site=lyon' } });
  await provision(ctx, 'acme', 'd1', { groups: ['g1'], tags: { site: 'lyon' } });
  await provision(ctx, 'acme', 'd2', { groups: ['g1'], tags: { site: 'paris' } });
  await provision(ctx, 'acme', 'd3', { tags: { site: 'lyon' } });
  await provision(ctx, 'acme', 'd4');
  await provision(ctx, 'globex', 'd1');
  await provision(ctx, 'globex', 'gx');
  const all = [['acme', 'd1'], ['acme', 'd2'], ['acme', 'd3'], ['acme', 'd4'], ['globex', 'd1'], ['globex', 'gx']];
  for (const [t, d] of all) {
    DEV[`${t}/${d}`] = await device(ctx, t, d);
  }
}
const ctx = useLive({ 'stream.heartbeat_ms': String(HEARTBEAT_MS) }, setup);

// Publish {seq: n, ...extra} from tenant/dev; returns n.
async function pub(key, extra = {}) {
  const n = nextSeq();
  await telemetry(DEV[key], { seq: n, ...extra });
  return n;
}

const bySeq = (n) => (e) => e.type === 'telemetry' && e.values && e.values.seq === n;

// After the events a subscription must NOT get, publish a sentinel it does get and wait for it, so
// that "nothing else arrived" means something; a short grace covers a bus that publishes after
// the PUBACK.
async function sentinel(w, key, sub) {
  const n = await pub(key);
  await w.waitEvent((e) => bySeq(n)(e) && (sub === undefined || e.sub === sub), 8000, `sentinel seq ${n}${ctx.diag(1500)}`);
  await sleep(300);
  return n;
}

function problem(r, status, what) {
  assert.equal(r.status, status, `${what}: status (body ${r.body})${ctx.diag(1500)}`);
  assert.match(String(r.headers['content-type']), /^application\/problem\+json/, `${what}: problem content type`);
  assert.equal(r.json && r.json.status, status, `${what}: problem body ${r.body}`);
}

test('authentication is checked before the upgrade', async () => {
  problem(await tryWs(ctx, {}), 401, 'no token');
  problem(await tryWs(ctx, { token: 'drv_notatoken0000000000000000' }), 401, 'bad token');
  problem(await tryWs(ctx, { ticket: 'not-a-ticket' }), 401, 'bad ticket');
  const noTok = await api(ctx, 'POST', '/api/v1/stream/tickets', undefined, null);
  assert.equal(noTok.status, 401, 'a ticket needs a token');

  const r = await apiOk(ctx, 'POST', '/api/v1/stream/tickets', undefined, T.acme, 201);
  assert.equal(typeof r.json.ticket, 'string');
  assert.equal(r.json.expires_in, 30, 'tickets live 30 s');
  const first = await tryWs(ctx, { ticket: r.json.ticket });
  assert.ok(first.ws, `a fresh ticket opens the stream: ${first.status} ${first.body}${ctx.diag(1500)}`);
  const w = new LiveWs(first.ws);
  // The ticket carries acme's tenant: a subscription on it sees acme's telemetry.
  await w.subscribe({ id: 't1', devices: ['d1'] });
  const n = await pub('acme/d1');
  const ev = await w.waitEvent(bySeq(n));
  assert.equal(ev.tenant, 'acme');
  w.close();
  problem(await tryWs(ctx, { ticket: r.json.ticket }), 401, 'the same ticket a second time');

  // The sub-protocol is accepted when offered.
  const p = await LiveWs.open(ctx, { token: T.acme, protocol: 'drover.stream.v1' });
  assert.equal(p.ws.protocol, 'drover.stream.v1', 'sub-protocol drover.stream.v1 selected');
  assert.deepEqual(await p.request({ op: 'ping', id: 'p' }), { type: 'pong', id: 'p' });
  p.close();
});

test('a platform token streams a tenant it names, and only with a name', async () => {
  const w = await LiveWs.open(ctx, { token: ctx.admin });
  const noTenant = await w.request({ op: 'subscribe', id: 'x', devices: ['d1'] });
  assert.equal(noTenant.type, 'error', `a platform token without a tenant is refused: ${JSON.stringify(noTenant)}`);
  assert.equal(noTenant.status, 400);
  assert.equal(noTenant.code, 'bad-request');
  const unknown = await w.request({ op: 'subscribe', id: 'y', tenant: 'no-such-tenant' });
  assert.equal(unknown.type, 'error', `an unknown tenant is refused: ${JSON.stringify(unknown)}`);
  assert.equal(unknown.status, 404);

  await w.subscribe({ id: 'a', tenant: 'acme', devices: ['d1'] });
  await w.subscribe({ id: 'g', tenant: 'globex', devices: ['d1'] });
  const na = await pub('acme/d1');
  const ng = await pub('globex/d1');
  const ea = await w.waitEvent(bySeq(na));
  const eg = await w.waitEvent(bySeq(ng));
  assert.equal(ea.sub, 'a');
  assert.equal(ea.tenant, 'acme');
  assert.equal(eg.sub, 'g');
  assert.equal(eg.tenant, 'globex');
  assert.equal(w.events().filter(bySeq(na)).length, 1, 'acme d1 only on its own subscription');
  assert.equal(w.events().filter(bySeq(ng)).length, 1, 'globex d1 only on its own subscription');
  w.close();
});

test('subscribe by device: ack with the device count, events with every field', async () => {
  const w = await LiveWs.open(ctx, { token: T.acme });
  const ack = await w.subscribe({ id: 's1', types: ['telemetry'], devices: ['d1'] });
  assert.deepEqual(ack, {
    type: 'ack', id: 's1', op: 'subscribe', devices: 1,
  });
  const other = await pub('acme/d2');
  const before = Date.now();
  const n = await pub('acme/d1', { temp: 21.5, on: true, mode: 'eco' });
  const ev = await w.waitEvent(bySeq(n));
  assert.deepEqual(Object.keys(ev).sort(), ['device', 'sub', 'tenant', 'ts', 'type', 'values']);
  assert.equal(ev.type, 'telemetry');
  assert.equal(ev.sub, 's1');
  assert.equal(ev.tenant, 'acme');
  assert.equal(ev.device, 'd1');
  assert.equal(typeof ev.ts, 'number');
  assert.ok(ev.ts >= before - 5000 && ev.ts <= Date.now() + 5000, `ts is the receive time in ms: ${ev.ts}`);
  assert.deepEqual(ev.values, {
    seq: n, temp: 21.5, on: true, mode: 'eco',
  });
  // A device time is kept; nested objects arrive as the decoder's dotted keys.
  const t0 = Date.now() - 60000;
  const m = nextSeq();
  await telemetry(DEV['acme/d1'], { ts: t0, values: { seq: m, pos: { lat: 1.5 } } });
  const ev2 = await w.waitEvent(bySeq(m));
  assert.equal(ev2.ts, t0, 'the sample time');
  assert.deepEqual(ev2.values, { seq: m, 'pos.lat': 1.5 });
  await sentinel(w, 'acme/d1', 's1');
  assert.equal(w.events().filter(bySeq(other)).length, 0, 'd2 is not subscribed');
  assert.ok(w.events().every((e) => e.device === 'd1'), 'only d1');
  // A batch: one event per sample time, in order.
  const b = nextSeq();
  await telemetry(DEV['acme/d1'], [{ ts: t0 + 1, values: { seq: b, k: 1 } }, { ts: t0 + 2, values: { seq: b, k: 2 } }]);
  await w.until(() => w.events().filter(bySeq(b)).length >= 2, 8000, 'both samples of the batch');
  assert.deepEqual(w.events().filter(bySeq(b)).map((e) => [e.ts, e.values.k]), [[t0 + 1, 1], [t0 + 2, 2]]);
  w.close();
});

test('subscribe by static group, dynamic group and tag', async () => {
  const w = await LiveWs.open(ctx, { token: T.acme });
  assert.equal((await w.subscribe({ id: 'g1', group: 'g1' })).devices, 2, 'g1 has d1 and d2');
  assert.equal((await w.subscribe({ id: 'lyon', group: 'lyon' })).devices, 2, 'dynamic group: d1 and d3');
  assert.equal((await w.subscribe({ id: 'tag', tag: 'site=lyon' })).devices, 2, 'tag site=lyon: d1 and d3');
  assert.equal((await w.subscribe({ id: 'has', tag: 'site' })).devices, 3, 'tag site: d1, d2, d3');
  const n = {};
  for (const d of ['d1', 'd2', 'd3', 'd4']) n[d] = await pub(`acme/${d}`);
  await w.waitEvent((e) => bySeq(n.d3)(e) && e.sub === 'has');
  await w.waitEvent((e) => bySeq(n.d3)(e) && e.sub === 'tag');
  await w.waitEvent((e) => bySeq(n.d3)(e) && e.sub === 'lyon');
  await w.waitEvent((e) => bySeq(n.d2)(e) && e.sub === 'g1');
  await sleep(300);
  const got = (sub) => w.events(sub).map((e) => e.device).sort();
  assert.deepEqual(got('g1'), ['d1', 'd2']);
  assert.deepEqual(got('lyon'), ['d1', 'd3']);
  assert.deepEqual(got('tag'), ['d1', 'd3']);
  assert.deepEqual(got('has'), ['d1', 'd2', 'd3']);
  assert.equal(w.events().filter(bySeq(n.d4)).length, 0, 'd4 is in none');
  w.close();
});

test('group membership follows the fleet: a device provisioned into the group joins', async () => {
  const w = await LiveWs.open(ctx, { token: T.acme });
  assert.equal((await w.subscribe({ id: 'g', group: 'g1' })).devices, 2, 'g1 has d1 and d2');
  await provision(ctx, 'acme', 'late', { groups: ['g1'] });
  await provision(ctx, 'acme', 'late2'); // not in the group
  const late = await device(ctx, 'acme', 'late');
  const late2 = await device(ctx, 'acme', 'late2');
  // "Within about a second": publish until one of late's messages arrives (generous bound).
  const deadline = Date.now() + 10000;
  let joined = null;
  const other = [];
  while (!joined && Date.now() < deadline) {
    const m = nextSeq();
    await telemetry(late, { seq: m });
    const o = nextSeq();
    await telemetry(late2, { seq: o });
    other.push(o);
    joined = await w.waitEvent(bySeq(m), 300).catch(() => null);
  }
  assert.ok(joined, `late's telemetry reached the group subscription${ctx.diag(1500)}`);
  assert.equal(joined.device, 'late');
  assert.equal(joined.sub, 'g');
  await sentinel(w, 'acme/d1', 'g');
  assert.equal(w.events().filter((e) => other.includes(e.values.seq)).length, 0, 'late2 is not in g1');
  // A subscription made now counts it at once.
  assert.equal((await w.subscribe({ id: 'g2', group: 'g1' })).devices, 3, 'g1 now has d1, d2 and late');
  await endDevice(late);
  await endDevice(late2);
  w.close();
});

test('keys filter: only those keys, events without any of them not sent', async () => {
  const w = await LiveWs.open(ctx, { token: T.acme });
  await w.subscribe({ id: 'k', devices: ['d1'], keys: ['temp', 'hum'] });
  await w.subscribe({ id: 'all', devices: ['d1'] });
  const a = await pub('acme/d1', { temp: 20, hum: 40, co2: 400 });
  const b = await pub('acme/d1', { co2: 401 });
  const c = await pub('acme/d1', { hum: 41 });
  const ec = await w.waitEvent((e) => bySeq(c)(e) && e.sub === 'all');
  assert.deepEqual(ec.values, { seq: c, hum: 41 });
  const k = await w.until(() => {
    const ev = w.events('k');
    return ev.length >= 2 && ev;
  }, 8000, 'two events on the keys subscription');
  await sleep(300);
  assert.deepEqual(w.events('k').map((e) => e.values), [{ temp: 20, hum: 40 }, { hum: 41 }],
    `keys subscription (seq ${a}, ${b}, ${c}): ${JSON.stringify(k)}`);
  w.close();
});

test('a whole-tenant subscription: no devices in the ack, every device, new ones too', async () => {
  const w = await LiveWs.open(ctx, { token: T.acme });
  const ack = await w.subscribe({ id: 'all' });
  assert.deepEqual(ack, { type: 'ack', id: 'all', op: 'subscribe' }, 'no devices count for the whole tenant');
  const n = [];
  for (const d of ['d1', 'd2', 'd3', 'd4']) n.push(await pub(`acme/${d}`));
  await provision(ctx, 'acme', 'newer');
  const newer = await device(ctx, 'acme', 'newer');
  const m = nextSeq();
  await telemetry(newer, { seq: m });
  await w.waitEvent(bySeq(m), 8000, 'telemetry of a device created after subscribing');
  for (const s of n) assert.equal(w.events().filter(bySeq(s)).length, 1, `seq ${s} once`);
  assert.deepEqual(w.events().map((e) => e.device), ['d1', 'd2', 'd3', 'd4', 'newer']);
  await endDevice(newer);
  w.close();
});

test('errors answer refused messages and keep the connection open', async () => {
  const w = await LiveWs.open(ctx, { token: T.acme });
  const cases = [
    ['{"op": "subscribe", ', null, 400, 'bad-request', 'malformed JSON'],
    [{ op: 'frobnicate', id: 'u1' }, 'u1', 400, 'bad-request', 'unknown op'],
    [{ op: 'subscribe', id: 'n1', devices: ['nope'] }, 'n1', 404, 'not-found', 'unknown device'],
    [{ op: 'subscribe', id: 'n2', devices: ['d1', 'gx'] }, 'n2', 404, 'not-found', "another tenant's device"],
    [{ op: 'subscribe', id: 'n3', group: 'nope' }, 'n3', 404, 'not-found', 'unknown group'],
    [{ op: 'subscribe', id: 'b1', devices: ['d1'], group: 'g1' }, 'b1', 400, 'bad-request', 'devices and group'],
    [{ op: 'subscribe', id: 'b2', group: 'g1', tag: 'site' }, 'b2', 400, 'bad-request', 'group and tag'],
    [{ op: 'subscribe', id: 'b3', devices: Array.from({ length: 1001 }, (_, i) => `x${i}`) }, 'b3', 400, 'bad-request',
      '1001 devices'],
    // An invalid id may be echoed or answered as null.
    [{ op: 'subscribe', id: 'x'.repeat(65) }, ['x'.repeat(65), null], 400, 'bad-request', 'a 65-byte id'],
    [{ op: 'subscribe', id: '' }, ['', null], 400, 'bad-request', 'an empty id'],
    [{ op: 'subscribe', id: 7 }, [7, null], 400, 'bad-request', 'a number as id'],
    [{ op: 'subscribe', id: 'b5', types: ['telemetry', 7] }, 'b5', 400, 'bad-request', 'a type not a string'],
    [{ op: 'subscribe', id: 'b8', types: ['nonsense'] }, 'b8', 400, 'bad-request', 'an unknown type'],
    [{ op: 'subscribe', id: 'b6', devices: 7 }, 'b6', 400, 'bad-request', 'devices a number'],
    [{ op: 'subscribe', id: 'b7', tenant: 'globex' }, 'b7', null, null, 'a tenant token naming another tenant'],
    ['[1, 2]', null, 400, 'bad-request', 'not an object'],
  ];
  const wrong = []; // every case that went wrong, reported together
  for (const [msg, id, status, code, what] of cases) {
    const ids = [].concat(id);
    const a = await w.request(msg, 8000, ids);
    const bad = [];
    if (a.type !== 'error') bad.push('not refused');
    if (!ids.includes(a.id ?? null)) bad.push(`id ${JSON.stringify(a.id)}`);
    if (status ? a.status !== status : ![400, 403, 404].includes(a.status)) bad.push(`status ${a.status}`);
    if (code && a.code !== code) bad.push(`code ${a.code}`);
    if (a.type === 'error' && typeof a.detail !== 'string') bad.push('no detail');
    if (bad.length) wrong.push(`${what}: ${bad.join(', ')}: ${JSON.stringify(a)}`);
    if (a.type === 'ack') await w.request({ op: 'unsubscribe', id: a.id });
  }
  assert.deepEqual(wrong, [], 'refused messages');
  await w.subscribe({ id: 'dup', devices: ['d1'] });
  const dup = await w.request({ op: 'subscribe', id: 'dup', devices: ['d2'] });
  assert.deepEqual([dup.type, dup.id, dup.status, dup.code], ['error', 'dup', 409, 'conflict']);
  // Nothing the refused messages asked for was subscribed; 'dup' still follows d1 only.
  const n2 = await pub('acme/d2');
  const gx = await pub('globex/gx');
  await sentinel(w, 'acme/d1', 'dup');
  assert.equal(w.events().filter((e) => bySeq(n2)(e) || bySeq(gx)(e)).length, 0, 'no d2 or globex events');
  assert.ok(w.events().every((e) => e.sub === 'dup'), 'only the accepted subscription has events');
  assert.deepEqual(await w.request({ op: 'ping', id: 'still' }), { type: 'pong', id: 'still' });
  assert.equal(w.closed, null, 'the connection stayed open');
  w.close();
});

test('scopes: telemetry needs telemetry:read, device events devices:read', async () => {
  const devOnly = await token(ctx, 'acme', 'viewer', ['devices:read']);
  const telOnly = await token(ctx, 'acme', 'viewer', ['telemetry:read']);
  const a = await LiveWs.open(ctx, { token: devOnly });
  const r0 = await a.request({ op: 'subscribe', id: 't0', devices: ['d1'], types: ['telemetry'] });
  assert.deepEqual([r0.type, r0.status, r0.code], ['error', 403, 'insufficient-scope'],
    `telemetry without the scope: ${JSON.stringify(r0)}`);
  const r1 = await a.request({ op: 'subscribe', id: 't', devices: ['d1'] });
  assert.deepEqual([r1.type, r1.status, r1.code], ['error', 403, 'insufficient-scope'],
    `the default type (telemetry) without the scope: ${JSON.stringify(r1)}`);
  await a.subscribe({ id: 'e', devices: ['d1'], types: ['device.*'] });
  const b = await LiveWs.open(ctx, { token: telOnly });
  const r2 = await b.request({ op: 'subscribe', id: 'e', devices: ['d1'], types: ['device.*'] });
  assert.deepEqual([r2.type, r2.status, r2.code], ['error', 403, 'insufficient-scope'],
    `device events without the scope: ${JSON.stringify(r2)}`);
  await b.subscribe({ id: 't', devices: ['d1'] });
  const n = await pub('acme/d1');
  await b.waitEvent(bySeq(n));
  a.close();
  b.close();
});

test('at most 64 subscriptions on a connection', async () => {
  const w = await LiveWs.open(ctx, { token: T.acme });
  for (let i = 0; i < 64; i++) await w.subscribe({ id: `s${i}`, devices: ['d4'] });
  const r = await w.request({ op: 'subscribe', id: 's64', devices: ['d4'] });
  assert.deepEqual([r.type, r.id, r.status, r.code], ['error', 's64', 429, 'too-many-subscriptions']);
  // Room again after an unsubscribe.
  assert.deepEqual(await w.request({ op: 'unsubscribe', id: 's0' }), { type: 'ack', id: 's0', op: 'unsubscribe' });
  await w.subscribe({ id: 's64', devices: ['d4'] });
  const n = await pub('acme/d4');
  await w.until(() => w.events().filter(bySeq(n)).length === 64, 8000, '64 copies of the event');
  assert.deepEqual(w.events().filter(bySeq(n)).map((e) => e.sub).sort(),
    Array.from({ length: 64 }, (_, i) => `s${i + 1}`).sort());
  w.close();
});

test('unsubscribe stops the events of that subscription only', async () => {
  const w = await LiveWs.open(ctx, { token: T.acme });
  await w.subscribe({ id: 'a', devices: ['d1'] });
  await w.subscribe({ id: 'b', devices: ['d1'] });
  const n1 = await pub('acme/d1');
  await w.until(() => w.events().filter(bySeq(n1)).length === 2, 8000, 'both subscriptions');
  assert.deepEqual(await w.request({ op: 'unsubscribe', id: 'a' }), { type: 'ack', id: 'a', op: 'unsubscribe' });
  const n2 = await pub('acme/d1');
  await w.waitEvent((e) => bySeq(n2)(e) && e.sub === 'b');
  await sentinel(w, 'acme/d1', 'b');
  assert.equal(w.events('a').filter((e) => e.values.seq >= n2).length, 0, 'nothing for a after its unsubscribe');
  // The id is free again.
  await w.subscribe({ id: 'a', devices: ['d2'] });
  const n3 = await pub('acme/d2');
  const ev = await w.waitEvent((e) => bySeq(n3)(e) && e.sub === 'a');
  assert.equal(ev.device, 'd2');
  w.close();
});

test('ping / pong', async () => {
  const w = await LiveWs.open(ctx, { token: T.acme });
  assert.deepEqual(await w.request({ op: 'ping', id: 'p1' }), { type: 'pong', id: 'p1' });
  assert.deepEqual(await w.request({ op: 'ping', id: 'p2' }), { type: 'pong', id: 'p2' });
  w.close();
});

test('two subscriptions on one connection each get their sub', async () => {
  const w = await LiveWs.open(ctx, { token: T.acme });
  await w.subscribe({ id: 'dev', devices: ['d1'] });
  await w.subscribe({ id: 'tenant' });
  const n = await pub('acme/d1');
  const m = await pub('acme/d2');
  await w.waitEvent((e) => bySeq(m)(e) && e.sub === 'tenant');
  await w.until(() => w.events().filter(bySeq(n)).length === 2, 8000, 'd1 on both');
  await sleep(300);
  assert.deepEqual(w.events().filter(bySeq(n)).map((e) => e.sub).sort(), ['dev', 'tenant']);
  assert.deepEqual(w.events().filter(bySeq(m)).map((e) => e.sub), ['tenant']);
  const [x, y] = w.events().filter(bySeq(n));
  assert.deepEqual({ ...x, sub: null }, { ...y, sub: null }, 'the same event otherwise');
  w.close();
});

test('device events: connected, decode_error, disconnected, decommissioned, provisioned', async () => {
  await provision(ctx, 'acme', 'ev1');
  const w = await LiveWs.open(ctx, { token: T.acme });
  await w.subscribe({ id: 'ev', devices: ['ev1'], types: ['device.*'] });
  await w.subscribe({ id: 'conn', devices: ['ev1'], types: ['device.connected'] });
  await w.subscribe({ id: 'tel', devices: ['ev1'] }); // the default: telemetry only
  await w.subscribe({ id: 'tenant', types: ['device.*'] });

  const dev = await device(ctx, 'acme', 'ev1');
  const c = await w.waitEvent((e) => e.sub === 'ev' && e.type === 'device.connected', 8000, 'device.connected');
  assert.equal(c.tenant, 'acme');
  assert.equal(c.device, 'ev1');
  assert.equal(typeof c.ts, 'number');
  assert.ok(Number.isInteger(c.id), `device events carry their history row id: ${JSON.stringify(c)}`);
  assert.match(String(c.detail && c.detail.address), /^127\.0\.0\.1:\d+$/, 'detail.address');
  await w.waitEvent((e) => e.sub === 'conn' && e.type === 'device.connected');

  const err = await telemetry(dev, '{"broken": ').then(() => null, (e) => e);
  assert.ok(err, 'the undecodable publish is refused (PUBACK 0x99)');
  const de = await w.waitEvent((e) => e.sub === 'ev' && e.type === 'device.decode_error', 8000, 'device.decode_error');
  assert.equal(typeof de.detail.reason, 'string');
  assert.ok(de.id > c.id, 'row ids grow');

  await endDevice(dev);
  const dc = await w.waitEvent((e) => e.sub === 'ev' && e.type === 'device.disconnected', 8000, 'device.disconnected');
  assert.match(String(dc.detail.address), /^127\.0\.0\.1:\d+$/);
  assert.equal(typeof dc.detail.reason, 'string');

  await apiOk(ctx, 'POST', '/api/v1/tenants/acme/devices/ev1/decommission', { purge: false });
  const dm = await w.waitEvent((e) => e.sub === 'ev' && e.type === 'device.decommissioned', 8000, 'device.decommissioned');
  assert.equal(dm.detail.purge, false);

  await provision(ctx, 'acme', 'ev2');
  const pv = await w.waitEvent((e) => e.sub === 'tenant' && e.type === 'device.provisioned' && e.device === 'ev2',
    8000, 'device.provisioned on the whole-tenant subscription');
  assert.equal(pv.tenant, 'acme');

  assert.deepEqual(w.events('ev').map((e) => e.type),
    ['device.connected', 'device.decode_error', 'device.disconnected', 'device.decommissioned']);
  assert.deepEqual(w.events('conn').map((e) => e.type), ['device.connected'], 'an exact type');
  assert.equal(w.events('tel').length, 0, 'device events need a device type');
  // The ids are the rows of the device's event history.
  const hist = await apiOk(ctx, 'GET', '/api/v1/tenants/acme/devices/ev1/events', undefined, T.acme);
  const kinds = hist.json.items.map((i) => i.kind).sort();
  for (const k of ['connected', 'decode_error', 'disconnected', 'decommissioned']) {
    assert.ok(kinds.includes(k), `history has ${k}: ${JSON.stringify(kinds)}`);
  }
  w.close();
});

test("isolation: another tenant's token never sees this tenant's events", async () => {
  const g = await LiveWs.open(ctx, { token: T.globex });
  await g.subscribe({ id: 'all', types: ['telemetry', 'device.*'] });
  await g.subscribe({ id: 'd1', devices: ['d1'] }); // globex's own d1
  const refused = await g.request({ op: 'subscribe', id: 'x', tenant: 'acme' });
  assert.equal(refused.type, 'error', `a tenant token cannot name another tenant: ${JSON.stringify(refused)}`);
  const acmeSeqs = [];
  for (const d of ['d1', 'd2', 'd3']) acmeSeqs.push(await pub(`acme/${d}`));
  await provision(ctx, 'acme', 'iso');
  const iso = await device(ctx, 'acme', 'iso');
  await telemetry(iso, { seq: nextSeq() });
  await endDevice(iso);
  const own = await pub('globex/d1');
  const ev = await g.waitEvent((e) => bySeq(own)(e) && e.sub === 'd1');
  assert.equal(ev.tenant, 'globex');
  await g.waitEvent((e) => bySeq(own)(e) && e.sub === 'all');
  await sleep(500);
  const foreign = g.events().filter((e) => e.tenant !== 'globex');
  assert.deepEqual(foreign, [], 'no event of another tenant');
  assert.ok(g.events().every((e) => !acmeSeqs.includes(e.values && e.values.seq)), 'no acme telemetry');
  g.close();
});

test('a revoked token ends its stream at the next heartbeat (token-revoked, close 1008)', async () => {
  const rec = await tokenRecord(ctx, 'acme');
  const w = await LiveWs.open(ctx, { token: rec.token });
  await w.subscribe({ id: 's', devices: ['d1'] });
  const n = await pub('acme/d1');
  await w.waitEvent(bySeq(n));
  await apiOk(ctx, 'DELETE', `/api/v1/tenants/acme/tokens/${rec.id}`, undefined, ctx.admin, 204);
  const st = await w.waitClose(HEARTBEAT_MS * 8);
  assert.equal(st.code, 1008, `close code (received: ${w.raw.slice(-3).join(' | ')})`);
  const err = w.all.filter((m) => m.type === 'error').pop();
  assert.equal(err && err.code, 'token-revoked', `the error before the close: ${JSON.stringify(err)}`);
  problem(await tryWs(ctx, { token: rec.token }), 401, 'the revoked token opens nothing');
});

test('close codes: binary frame 1003, message over 64 KiB 1009, client close 1000', async () => {
  const a = await LiveWs.open(ctx, { token: T.acme });
  a.ws.send(Buffer.from('{"op":"ping","id":"b"}'), { binary: true });
  assert.equal((await a.waitClose()).code, 1003);
  const b = await LiveWs.open(ctx, { token: T.acme });
  b.send({ op: 'ping', id: 'x'.repeat(70 * 1024) });
  assert.equal((await b.waitClose()).code, 1009);
  const c = await LiveWs.open(ctx, { token: T.acme });
  c.ws.close(1000);
  assert.equal((await c.waitClose()).code, 1000);
});

test('heartbeat: pings arrive, a client that never answers is closed', async () => {
  const w = await LiveWs.open(ctx, { token: T.acme });
  await w.until(() => w.pings >= 2, HEARTBEAT_MS * 6, 'two WebSocket pings');
  // ws answers pings itself: still open after more than 3 heartbeats.
  await sleep(HEARTBEAT_MS * 4);
  assert.equal(w.closed, null, 'a client answering pings stays');
  w.close();

  const raw = await RawWs.connect(ctx.httpPort);
  const r = await raw.handshake({ path: STREAM_PATH, protocol: null, headers: { Authorization: `Bearer ${T.acme}` } });
  assert.equal(r.status, 101);
  const st = await raw.waitClose(HEARTBEAT_MS * 10);
  assert.ok(st.tcpClosed, `a silent client is closed after 3 heartbeats (frames: ${st.frames.map((f) => f.opcode)})`);
  assert.ok(st.frames.some((f) => f.opcode === OP.PING), 'it was pinged first');
  raw.destroy();
});
