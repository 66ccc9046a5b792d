// The live stream over Server-Sent Events (docs/stream.md), black box against a live
// `drover serve`: the npm `eventsource` client (headers through its `fetch` option, and tickets),
// a raw reader for every field and comment (id / event / data / retry, heartbeats), failures
// answered before the 200, and resuming with Last-Event-ID: exactly the missed events, no
// duplicates, no gaps — for one device, for a group across devices with device events mixed in,
// with `?last_event_id=`, across a server restart with the package's own reconnection — and
// `reset` when the replay would exceed stream.resume_max_events.
// Devices publish real telemetry over MQTT (MQTT.js) with their own credentials.
// Usage: node test_live_sse.mjs /path/to/drover
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventSource } from 'eventsource';
import {
  HOST, SSE_PATH, SseClient, api, apiOk, cursor, device, endDevice, group, pastMs, provision, sleep, telemetry,
  tenantToken, ticket, tokenRecord, useLive, waitFor,
} from './lib_live.mjs';
import { waitPort } from './lib_transport.mjs';

const HEARTBEAT_MS = 500;
const RESUME_MAX = 30;
const T = {};
const DEV = {};
let seq = 0;
let lastT = 0; // the newest sample / event time so far: every new one must be later

async function setup() {
  T.acme = await tenantToken(ctx, 'acme');
  T.globex = await tenantToken(ctx, 'globex');
  await group(ctx, 'acme', 'rg');
  for (const d of ['d1', 'd2', 'r1', 'r5', 'x1', 'x2', 'ms1']) await provision(ctx, 'acme', d);
  for (const d of ['r2', 'r3', 'r4']) await provision(ctx, 'acme', d, { groups: ['rg'] });
  await provision(ctx, 'globex', 'gx');
  for (const d of ['d1', 'd2', 'r1', 'r2', 'r3', 'r5', 'x1', 'x2', 'ms1']) DEV[d] = await device(ctx, 'acme', d);
  DEV.gx = await device(ctx, 'globex', 'gx');
}
const ctx = useLive({ 'stream.heartbeat_ms': String(HEARTBEAT_MS), 'stream.resume_max_events': String(RESUME_MAX) }, setup);

// Publish {seq} (and extra values) from device d, at a time later than everything before it:
// with withTs the device's own time, otherwise the server's receive time; `at`: this device time
// (a late sample when it is in the past).  Returns {seq, ts} (ts null for the receive time).
async function pub(d, { withTs = false, extra = {}, at = null } = {}) {
  await pastMs(lastT);
  seq += 1;
  const values = { seq, ...extra };
  let ts = null;
  if (withTs || at !== null) {
    ts = at ?? Date.now();
    await telemetry(DEV[d], { ts, values });
  } else {
    await telemetry(DEV[d], values);
  }
  lastT = Date.now();
  return { seq, ts };
}

const isSeq = (n) => (e) => e.event === 'telemetry' && e.json && e.json.values && e.json.values.seq === n;
const seqs = (events) => events.filter((e) => e.event === 'telemetry').map((e) => e.json.values.seq);

// The identity of an event, to compare what two streams got.
function key(e) {
  const j = e.json;
  return j.type === 'telemetry'
    ? `telemetry ${j.device} ${j.ts} ${JSON.stringify(j.values)}`
    : `${j.type} ${j.device} #${j.id}`;
}

function assertNoDuplicates(events, what) {
  const seen = new Set();
  for (const e of events) {
    const k = key(e);
    assert.ok(!seen.has(k), `${what}: ${k} delivered twice`);
    seen.add(k);
  }
}

function problem(s, status, what) {
  assert.equal(s.status, status, `${what}: status (body ${s.body})${ctx.diag(1500)}`);
  assert.match(String(s.headers['content-type']), /^application\/problem\+json/, `${what}: problem content type`);
  assert.equal(s.json && s.json.status, status, `${what}: problem body ${s.body}`);
}

test('the eventsource package: events with id, event and data (bearer token through fetch, and a ticket)', async () => {
  const authFetch = (input, init) => fetch(input, {
    ...init, headers: { ...(init && init.headers), Authorization: `Bearer ${T.acme}` },
  });
  const url = `http://${HOST}:${ctx.httpPort}${SSE_PATH}?device=d1`;
  const got = [];
  const es = new EventSource(url, { fetch: authFetch });
  ctx.eventSources.push(es);
  es.addEventListener('telemetry', (m) => got.push(m));
  const errors = [];
  es.addEventListener('error', (e) => errors.push(e.message || String(e.code)));
  await waitFor(() => es.readyState === es.OPEN || errors.length, 8000, 'the stream to open');
  assert.equal(es.readyState, es.OPEN, `opened (errors: ${errors})${ctx.diag(1500)}`);
  const a = await pub('d1');
  const b = await pub('d1', { withTs: true, extra: { temp: 20.5 } });
  await waitFor(() => got.length >= 2, 8000, () => `two telemetry events (have ${got.length})`);
  es.close();
  const [ma, mb] = got;
  const ja = JSON.parse(ma.data);
  const jb = JSON.parse(mb.data);
  assert.equal(ma.type, 'telemetry');
  assert.deepEqual(Object.keys(ja).sort(), ['device', 'tenant', 'ts', 'type', 'values'], 'the WebSocket event without sub');
  assert.deepEqual([ja.type, ja.tenant, ja.device, ja.values], ['telemetry', 'acme', 'd1', { seq: a.seq }]);
  assert.deepEqual([jb.ts, jb.values], [b.ts, { seq: b.seq, temp: 20.5 }]);
  const [ta] = cursor(ma.lastEventId);
  const [tb] = cursor(mb.lastEventId);
  assert.equal(ta, ja.ts, 'the cursor holds the newest sample time sent');
  assert.equal(tb, jb.ts);

  // A ticket: what a browser would do.
  const es2 = new EventSource(`${url}&ticket=${encodeURIComponent(await ticket(ctx, T.acme))}`);
  ctx.eventSources.push(es2);
  const got2 = [];
  es2.addEventListener('telemetry', (m) => got2.push(JSON.parse(m.data)));
  await waitFor(() => es2.readyState === es2.OPEN, 8000, 'the ticket stream to open');
  const c = await pub('d1');
  await waitFor(() => got2.some((j) => j.values.seq === c.seq), 8000, 'the event on the ticket stream');
  es2.close();
});

test('the raw stream: 200 text/event-stream, retry, id / event / data, only the subscription', async () => {
  const s = await SseClient.open(ctx, 'types=telemetry&device=d1,d2&keys=seq,temp', { token: T.acme });
  assert.equal(s.status, 200, `status ${s.status}: ${s.body}${ctx.diag(1500)}`);
  assert.match(String(s.headers['content-type']), /^text\/event-stream/);
  await s.until(() => s.items.some((i) => i.retry !== undefined), 5000, 'the retry field');
  assert.equal(s.items.find((i) => i.retry !== undefined).retry, '2000');
  // A fresh stream announces its position with an id and no event.
  const prelude = await s.until(() => s.items.find((i) => i.id !== undefined), 5000, 'the opening id');
  assert.equal(prelude.event, undefined, 'the opening id comes without an event');
  assert.equal(prelude.data, undefined);
  cursor(prelude.id);
  const other = await pub('x1');
  const a = await pub('d1', { extra: { temp: 1, hum: 2 } });
  const b = await pub('d2', { extra: { hum: 3 } });
  const ea = await s.waitEvent(isSeq(a.seq));
  const eb = await s.waitEvent(isSeq(b.seq));
  await sleep(300);
  assert.deepEqual(ea.json.values, { seq: a.seq, temp: 1 }, 'keys filter');
  assert.deepEqual(eb.json.values, { seq: b.seq });
  assert.equal(s.events().filter(isSeq(other.seq)).length, 0, 'x1 is not subscribed');
  for (const e of s.events()) {
    assert.equal(e.event, e.json.type, 'event is the type');
    assert.ok(!('sub' in e.json), 'no sub on SSE');
    cursor(e.id);
  }
  s.close();
});

test('failures are answered before the 200 with a problem', async () => {
  problem(await SseClient.open(ctx, 'device=d1'), 401, 'no token');
  problem(await SseClient.open(ctx, 'device=d1', { token: 'drv_bogus00000000000000000000' }), 401, 'bad token');
  const tk = await ticket(ctx, T.acme);
  const ok = await SseClient.open(ctx, 'device=d1', { ticket: tk });
  assert.equal(ok.status, 200, 'a ticket opens the stream');
  ok.close();
  problem(await SseClient.open(ctx, 'device=d1', { ticket: tk }), 401, 'the ticket a second time');
  problem(await SseClient.open(ctx, 'device=nope', { token: T.acme }), 404, 'unknown device');
  problem(await SseClient.open(ctx, 'device=gx', { token: T.acme }), 404, "another tenant's device");
  problem(await SseClient.open(ctx, 'group=nope', { token: T.acme }), 404, 'unknown group');
  problem(await SseClient.open(ctx, 'device=d1&group=rg', { token: T.acme }), 400, 'two filters');
  problem(await SseClient.open(ctx, 'device=d1', { token: ctx.admin }), 400, 'a platform token without tenant=');
  const p = await SseClient.open(ctx, 'tenant=acme&device=d1', { token: ctx.admin });
  assert.equal(p.status, 200, `a platform token naming the tenant: ${p.body}`);
  const n = await pub('d1');
  const e = await p.waitEvent(isSeq(n.seq));
  assert.equal(e.json.tenant, 'acme');
  p.close();
  const g = await SseClient.open(ctx, 'device=d1', { token: T.globex });
  g.close();
  assert.equal(g.status, 404, "globex's token does not find acme's d1");
  const own = await SseClient.open(ctx, 'tenant=acme', { token: T.globex });
  own.close();
  assert.ok([400, 403, 404].includes(own.status), `a tenant token cannot name another tenant: ${own.status}`);
});

test('a revoked token ends its stream at the next heartbeat (event: error, token-revoked)', async () => {
  const rec = await tokenRecord(ctx, 'acme');
  const s = await SseClient.open(ctx, 'device=d2', { token: rec.token });
  assert.equal(s.status, 200);
  await apiOk(ctx, 'DELETE', `/api/v1/tenants/acme/tokens/${rec.id}`, undefined, ctx.admin, 204);
  const err = await s.waitEvent((e) => e.event === 'error', HEARTBEAT_MS * 8, 'event: error');
  assert.equal(err.json && err.json.code, 'token-revoked', err.data);
  await s.until(() => s.ended, 5000, 'the end of the stream');
  problem(await SseClient.open(ctx, 'device=d2', { token: rec.token }), 401, 'the revoked token opens nothing');
});

test('heartbeat comments keep an idle stream alive', async () => {
  const s = await SseClient.open(ctx, 'device=d2', { token: T.acme });
  assert.equal(s.status, 200);
  await s.until(() => s.comments().filter((c) => c === 'heartbeat').length >= 2, HEARTBEAT_MS * 8,
    'two ": heartbeat" comments');
  assert.equal(s.events().length, 0, 'heartbeats are not events');
  s.close();
});

test('resume one device: exactly the missed events, device times, receive times and late samples', async () => {
  const s = await SseClient.open(ctx, 'device=r1', { token: T.acme });
  const pre = [];
  for (let i = 0; i < 3; i++) pre.push(await pub('r1', { withTs: i === 1 }));
  await s.waitEvent(isSeq(pre[2].seq));
  const last = s.lastId();
  s.close();
  assert.deepEqual(seqs(s.events()), pre.map((p) => p.seq));

  // The gap: device times, receive times, and late samples (older than anything sent so far).
  const missed = [];
  for (let i = 0; i < 10; i++) {
    const late = i === 4 || i === 7;
    missed.push(await pub('r1', late ? { at: Date.now() - 3600000 - i } : { withTs: i % 3 !== 0 }));
  }
  const r = await SseClient.open(ctx, 'device=r1', { token: T.acme, lastEventId: last });
  assert.equal(r.status, 200);
  await r.waitEvent(isSeq(missed[9].seq), 8000, 'the replay');
  const live = [await pub('r1'), await pub('r1', { withTs: true })];
  await r.waitEvent(isSeq(live[1].seq), 8000, 'live events after the replay');
  await sleep(300);
  assert.deepEqual(seqs(r.events()), [...missed, ...live].map((p) => p.seq),
    'missed (late samples included) then live, each once, in arrival order');
  for (const [i, m] of missed.entries()) {
    if (m.ts !== null) assert.equal(r.events()[i].json.ts, m.ts, 'device time kept in the replay');
  }
  const ts = r.events().map((e) => cursor(e.id)[0]);
  assert.deepEqual(ts, [...ts].sort((x, y) => x - y), 'cursor times never go back');

  // ?last_event_id= works too, and resuming from the newest id replays nothing.
  const newest = r.lastId();
  r.close();
  const q = await SseClient.open(ctx, `device=r1&last_event_id=${encodeURIComponent(newest)}`, { token: T.acme });
  const n = await pub('r1');
  await q.waitEvent(isSeq(n.seq));
  await sleep(300);
  assert.deepEqual(seqs(q.events()), [n.seq], 'nothing replayed from the newest cursor');
  q.close();
});

test('resume a group across devices with device events mixed in', async () => {
  const filter = 'types=telemetry,device.*&group=rg';
  const w = await SseClient.open(ctx, filter, { token: T.acme }); // the witness: never leaves
  const c = await SseClient.open(ctx, filter, { token: T.acme });
  assert.equal(w.status, 200);
  // One step: do it, wait until the witness has its event, then let the clock move past it so
  // every event has its own, later, time.
  const step = async (what, act, match) => {
    await pastMs(lastT);
    const from = w.events().length;
    await act();
    if (!match) { lastT = Date.now(); return null; }
    const e = await w.until(() => w.events().slice(from).find(match), 8000, what);
    lastT = Math.max(Date.now(), e.json.ts);
    return e;
  };
  const telem = (d, withTs = false) => async () => {
    let p;
    return step(`telemetry of ${d}`, async () => { p = await pub(d, { withTs }); }, (e) => isSeq(p.seq)(e));
  };
  const devEv = (type, d) => (e) => e.event === type && e.json.device === d && e.json.id > 0;

  await telem('r2')();
  await telem('r3', true)();
  await step('r4 connects', async () => { DEV.r4 = await device(ctx, 'acme', 'r4'); }, devEv('device.connected', 'r4'));
  await telem('r2')();
  await c.until(() => c.events().length >= 4, 8000, 'four events before the gap');
  const beforeGap = c.events().slice();
  const last = c.lastId();
  c.close();
  const [, e0] = cursor(last);
  assert.ok(e0 > 0, `the cursor holds the device event row (${last})`);
  const gapStart = w.events().length;

  // The gap: telemetry from three group devices (device times and receive times), a device
  // outside the group, a disconnect, a connect, a decode error.
  await telem('r3')();
  await telem('r2', true)();
  const outside = await pub('r5');
  await step('r4 disconnects', async () => { await endDevice(DEV.r4); }, devEv('device.disconnected', 'r4'));
  await telem('r3')();
  await step('r4 connects again', async () => { DEV.r4 = await device(ctx, 'acme', 'r4'); },
    devEv('device.connected', 'r4'));
  await telem('r4', true)();
  await step('r2 sends garbage', async () => { await telemetry(DEV.r2, '{"no": ').catch(() => {}); },
    devEv('device.decode_error', 'r2'));
  await telem('r3', true)();
  const gap = w.events().slice(gapStart);
  assert.equal(gap.length, 8, `the witness saw the 8 gap events: ${gap.map(key)}`);

  const r = await SseClient.open(ctx, filter, { token: T.acme, lastEventId: last });
  assert.equal(r.status, 200, r.body);
  await r.until(() => r.events().length >= gap.length, 10000,
    () => `the ${gap.length} missed events (have ${r.events().length})`);
  const liveFrom = w.events().length;
  await telem('r2')();
  await step('r4 leaves', async () => { await endDevice(DEV.r4); }, devEv('device.disconnected', 'r4'));
  const live = w.events().slice(liveFrom);
  await r.until(() => r.events().length >= gap.length + live.length, 8000, 'the live events after the replay');
  await sleep(300);
  const replay = r.events().slice(0, gap.length);
  assert.deepEqual(replay.map(key).sort(), gap.map(key).sort(), 'the replay is exactly the gap');
  const tel = (evs) => evs.filter((e) => e.event === 'telemetry').map(key);
  const dev = (evs) => evs.filter((e) => e.event !== 'telemetry').map(key);
  assert.deepEqual(tel(replay), tel(gap), 'telemetry replayed in arrival order');
  assert.deepEqual(dev(replay), dev(gap), 'device events replayed in row order');
  assert.deepEqual(r.events().slice(gap.length).map(key), live.map(key),
    'then the live events, nothing repeated at the seam');
  assert.ok(r.events().every((e) => !(e.json.values && e.json.values.seq === outside.seq)), 'r5 is not in the group');
  for (const e of r.events()) assert.equal(e.event, e.json.type);
  // Everything the witness saw, the client saw exactly once.
  const all = [...beforeGap, ...r.events()];
  assertNoDuplicates(all, 'client');
  assert.deepEqual(all.map(key).sort(), w.events().map(key).sort(), 'client (before + after) = witness');
  // The cursors carry every part forward.
  const ids = r.events().map((e) => cursor(e.id));
  for (let i = 1; i < ids.length; i++) {
    assert.ok(ids[i].every((x, k) => x >= ids[i - 1][k]), `cursors never go back: ${r.events().map((e) => e.id)}`);
  }
  w.close();
  r.close();
});

// A stream that has sent only one kind of event so far: the other parts of its cursor stand where
// the stream started (its opening id), never at 0 — a resume must not replay history from before
// the stream was opened.
test('resume does not replay history from before the stream was opened', async () => {
  const x1Old = await pub('x1'); // telemetry history of x1 before the stream
  const kinds = async () => (await apiOk(ctx, 'GET', '/api/v1/tenants/acme/devices/x2/events?limit=1000', undefined, T.acme))
    .json.items.map((i) => i.kind);
  const n0 = (await kinds()).length;
  await endDevice(DEV.x2);
  DEV.x2 = await device(ctx, 'acme', 'x2'); // device-event history of x2 before the stream
  await waitFor(async () => (await kinds()).length >= n0 + 2, 8000, 'x2 disconnected and connected in its history');
  await pastMs(lastT = Date.now());
  const filter = 'types=telemetry,device.*&device=x1,x2';
  // Sees telemetry only, then leaves.
  const a = await SseClient.open(ctx, filter, { token: T.acme });
  const t1 = await pub('x1');
  await a.waitEvent(isSeq(t1.seq));
  const lastA = a.lastId();
  a.close();
  const t2 = await pub('x1');
  const ra = await SseClient.open(ctx, filter, { token: T.acme, lastEventId: lastA });
  await ra.waitEvent(isSeq(t2.seq));
  await sleep(500);
  assert.deepEqual(ra.events().map((e) => e.event), ['telemetry'],
    `only the missed telemetry: ${ra.events().map((e) => e.data)}`);
  ra.close();
  // Sees a device event only, then leaves.
  const b = await SseClient.open(ctx, filter, { token: T.acme });
  await endDevice(DEV.x2);
  await b.waitEvent((e) => e.event === 'device.disconnected');
  const lastB = b.lastId();
  b.close();
  const t3 = await pub('x1');
  const rb = await SseClient.open(ctx, filter, { token: T.acme, lastEventId: lastB });
  await rb.waitEvent(isSeq(t3.seq));
  await sleep(500);
  assert.deepEqual(seqs(rb.events()), [t3.seq],
    `only the missed sample, not x1's history (seq ${x1Old.seq}, ${t1.seq}, ${t2.seq})`);
  assert.deepEqual(rb.events().map((e) => e.event), ['telemetry']);
  rb.close();
});

// Two messages of a device with the same sample time: the engine keeps one value per key and
// millisecond (the later write wins), so a replay cannot give both messages back as they were
// sent live; what a client can expect is what the engine holds for that time, and no event twice.
test('resume across two messages of a device in the same millisecond: what is stored, once', async () => {
  const s = await SseClient.open(ctx, 'device=ms1', { token: T.acme });
  const first = await pub('ms1');
  await s.waitEvent(isSeq(first.seq));
  const last = s.lastId();
  s.close();
  await pastMs(lastT);
  const t = Date.now();
  const a = seq + 1;
  const b = seq + 2;
  seq += 2;
  await telemetry(DEV.ms1, { ts: t, values: { seq: a, ka: 1 } });
  await telemetry(DEV.ms1, { ts: t, values: { seq: b, kb: 2 } });
  lastT = Date.now();
  const after = await pub('ms1');
  const stored = await apiOk(ctx, 'GET', `/api/v1/tenants/acme/devices/ms1/telemetry?key=seq&from=${t}&to=${t + 1}`,
    undefined, T.acme);
  assert.deepEqual(stored.json.items.map((i) => i.value), [b], 'the engine keeps the later seq');
  const r = await SseClient.open(ctx, 'device=ms1', { token: T.acme, lastEventId: last });
  await r.waitEvent(isSeq(after.seq));
  await sleep(300);
  const replay = r.events().filter((e) => !isSeq(after.seq)(e));
  assertNoDuplicates(replay, 'same-millisecond replay');
  assert.ok(replay.every((e) => e.json.ts === t), `replayed at the shared time: ${replay.map((e) => e.data)}`);
  assert.deepEqual(Object.assign({}, ...replay.map((e) => e.json.values)), { seq: b, ka: 1, kb: 2 },
    `the replay carries what is stored at that time: ${replay.map((e) => e.data)}`);
  r.close();
});

test('a stream lost before its first event resumes from its opening id', async () => {
  const s = await SseClient.open(ctx, 'device=x1', { token: T.acme });
  const first = await s.until(() => s.lastId(), 5000, 'the opening id');
  s.close();
  const missed = [await pub('x1'), await pub('x1', { withTs: true })];
  const r = await SseClient.open(ctx, 'device=x1', { token: T.acme, lastEventId: first });
  await r.waitEvent(isSeq(missed[1].seq));
  await sleep(300);
  assert.deepEqual(seqs(r.events()), missed.map((p) => p.seq), 'exactly what was sent after the opening id');
  r.close();
});

test(`reset when the replay would exceed stream.resume_max_events (${RESUME_MAX})`, async () => {
  const s = await SseClient.open(ctx, 'device=d2', { token: T.acme });
  const first = await pub('d2');
  await s.waitEvent(isSeq(first.seq));
  const last = s.lastId();
  s.close();
  // Exactly the cap: replayed in full.
  const missed = [];
  for (let i = 0; i < RESUME_MAX; i++) missed.push(await pub('d2', { withTs: i % 2 === 0 }));
  const r = await SseClient.open(ctx, 'device=d2', { token: T.acme, lastEventId: last });
  await r.waitEvent(isSeq(missed[RESUME_MAX - 1].seq), 8000, 'the full replay');
  const live0 = await pub('d2');
  await r.waitEvent(isSeq(live0.seq));
  assert.ok(!r.events().some((e) => e.event === 'reset'), 'no reset at the cap');
  assert.deepEqual(seqs(r.events()), [...missed, live0].map((p) => p.seq));
  const last2 = r.lastId();
  r.close();

  // One more than the cap: reset, then live from now.
  const over = [];
  for (let i = 0; i < RESUME_MAX + 1; i++) over.push(await pub('d2'));
  const o = await SseClient.open(ctx, 'device=d2', { token: T.acme, lastEventId: last2 });
  const reset = await o.waitEvent((e) => e.event === 'reset', 8000, 'event: reset');
  assert.deepEqual(reset.json, { code: 'resume-too-large' });
  cursor(reset.id); // the id of the present
  const live = await pub('d2');
  await o.waitEvent(isSeq(live.seq), 8000, 'live events after the reset');
  await sleep(300);
  const at = o.events().indexOf(reset);
  const beforeReset = seqs(o.events().slice(0, at));
  assert.ok(beforeReset.length <= RESUME_MAX, `at most ${RESUME_MAX} replayed before the reset`);
  assert.deepEqual(beforeReset, over.slice(0, beforeReset.length).map((p) => p.seq),
    'whatever came before the reset is the start of the gap');
  assert.deepEqual(seqs(o.events().slice(at + 1)), [live.seq], 'after the reset only live events');
  o.close();
  // The reset's id is a good cursor: resuming from it replays what came after it.
  const again = await SseClient.open(ctx, 'device=d2', { token: T.acme, lastEventId: reset.id });
  await again.waitEvent(isSeq(live.seq));
  await sleep(300);
  assert.deepEqual(seqs(again.events()), [live.seq], 'resumed from the reset id');
  again.close();
});

// Last: restarts the server.  The package reconnects by itself (retry: 2000) with Last-Event-ID
// and gets what it missed while the server was down or restarting, exactly once.
test('the eventsource package resumes by itself across a server restart', async () => {
  const authFetch = (input, init) => fetch(input, {
    ...init, headers: { ...(init && init.headers), Authorization: `Bearer ${T.acme}` },
  });
  const es = new EventSource(`http://${HOST}:${ctx.httpPort}${SSE_PATH}?device=d1`, { fetch: authFetch });
  ctx.eventSources.push(es);
  const got = [];
  const ids = [];
  let opens = 0;
  es.addEventListener('open', () => { opens += 1; });
  es.addEventListener('telemetry', (m) => { got.push(JSON.parse(m.data).values.seq); ids.push(m.lastEventId); });
  await waitFor(() => opens === 1, 8000, 'the stream to open');
  const sent = [];
  for (let i = 0; i < 3; i++) sent.push((await pub('d1', { withTs: i === 1 })).seq);
  await waitFor(() => got.length === 3, 8000, 'three events before the restart');
  // An idle stream too (nothing sent on it but its opening id) at the shutdown.
  const idle = await SseClient.open(ctx, 'device=d2', { token: T.acme });
  await idle.until(() => idle.lastId(), 5000, 'the opening id');
  await ctx.d.restart();
  await idle.until(() => idle.ended, 5000, 'the idle stream to end at the shutdown');
  await waitPort(ctx.httpPort, 10000);
  for (const k of Object.keys(DEV)) {
    try { DEV[k].end(true); } catch { /* gone with the restart */ }
  }
  DEV.d1 = await device(ctx, 'acme', 'd1');
  for (let i = 0; i < 5; i++) sent.push((await pub('d1', { withTs: i % 2 === 1 })).seq);
  await waitFor(() => opens >= 2 && got.length >= sent.length, 15000,
    () => `the reconnection and ${sent.length} events (opens ${opens}, have ${got})${ctx.diag(2000)}`);
  await sleep(300);
  es.close();
  assert.deepEqual(got, sent, 'every event once, in order, across the restart');
  await endDevice(DEV.d1);
  const r = await api(ctx, 'GET', '/api/v1/whoami', undefined, T.acme);
  assert.equal(r.status, 200);
});
