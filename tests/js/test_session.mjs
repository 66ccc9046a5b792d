// Persistent sessions through MQTT.js: clean=false (3.1.1) and Clean Start=0 with
// Session Expiry Interval (5.0), messages queued while offline, across a clean
// restart and a SIGKILL of the broker.  Usage: node test_session.mjs /path/to/drover
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  useDrover, connect, subscribe, publish, end, destroy, waitMessages, waitFor, sleep, uniqueId,
  withTimeout,
} from './lib.mjs';

const ctx = useDrover();

// Options for a persistent session of the given protocol version.
function persistent(v, clientId, extra = {}) {
  const o = { protocolVersion: v, clientId, clean: false, ...extra };
  if (v === 5) o.properties = { sessionExpiryInterval: 300, ...(extra.properties || {}) };
  return o;
}

// Subscribe a persistent session, go offline, publish n acknowledged QoS q messages.
async function queueWhileOffline(v, topic, n, q = 1) {
  const id = uniqueId(`sess${v}`);
  const s = await connect(ctx.d, persistent(v, id));
  assert.equal(s.connack.sessionPresent, false, 'first connection has no session');
  await subscribe(s, topic, { qos: 2 });
  await end(s);
  const pub = await connect(ctx.d, { protocolVersion: v });
  for (let i = 0; i < n; i++) {
    const ack = await publish(pub, topic, `off-${i}`, { qos: q });
    if (v === 5 && q === 1) assert.equal(ack.reasonCode ?? 0, 0, 'an offline session counts as a subscriber');
  }
  await end(pub);
  return id;
}

async function expectQueued(v, id, topic, n, q = 1, label = '') {
  const s = await connect(ctx.d, persistent(v, id));
  assert.equal(s.connack.sessionPresent, true, `session present ${label}`);
  const got = await waitMessages(s, n, 5000);
  await sleep(200);
  assert.deepEqual(s.received.map((m) => m.payload), [...Array(n).keys()].map((i) => `off-${i}`),
    `queued messages in order, once ${label}`);
  assert.ok(got.every((m) => m.topic === topic && m.packet.qos === q));
  // The subscription is still in place for live traffic.
  const pub = await connect(ctx.d, { protocolVersion: v });
  await publish(pub, topic, 'live', { qos: 1 });
  await waitMessages(s, n + 1);
  assert.equal(s.received[n].payload, 'live');
  await Promise.all([end(pub), end(s)]);
}

for (const v of [4, 5]) {
  for (const q of [1, 2]) {
    test(`v${v}: QoS ${q} messages published while offline arrive on reconnect`, async () => {
      const topic = `sess/v${v}/q${q}/${uniqueId()}`;
      const id = await queueWhileOffline(v, topic, 5, q);
      await expectQueued(v, id, topic, 5, q);
    });
  }

  test(`v${v}: clean session / Clean Start discards the stored session`, async () => {
    const topic = `sess/clean/v${v}/${uniqueId()}`;
    const id = await queueWhileOffline(v, topic, 2);
    const c = await connect(ctx.d, { protocolVersion: v, clientId: id, clean: true });
    assert.equal(c.connack.sessionPresent, false);
    await sleep(300);
    assert.equal(c.received.length, 0, 'nothing from the discarded session');
    await end(c);
    const again = await connect(ctx.d, persistent(v, id));
    assert.equal(again.connack.sessionPresent, false, 'session gone after a clean connection');
    await end(again);
  });

  test(`v${v}: unacknowledged QoS 1 delivery is resent with DUP after reconnect`, async () => {
    const topic = `sess/dup/v${v}/${uniqueId()}`;
    const id = uniqueId(`dup${v}`);
    const s = await connect(ctx.d, persistent(v, id));
    s.handleMessage = () => {}; // never calls back, so MQTT.js never sends the PUBACK
    const seen = [];
    s.on('packetreceive', (p) => { if (p.cmd === 'publish') seen.push(p); });
    await subscribe(s, topic, { qos: 1 });
    const pub = await connect(ctx.d, { protocolVersion: v });
    await publish(pub, topic, 'unacked', { qos: 1 });
    await waitFor(() => seen.length === 1, 5000, 'first delivery');
    assert.equal(seen[0].dup, false);
    destroy(s);
    const s2 = await connect(ctx.d, persistent(v, id));
    assert.equal(s2.connack.sessionPresent, true);
    const [m] = await waitMessages(s2, 1);
    assert.equal(m.payload, 'unacked');
    assert.equal(m.packet.dup, true, 'redelivery carries DUP');
    await sleep(300);
    assert.equal(s2.received.length, 1, 'acknowledged now: delivered once more only');
    await Promise.all([end(pub), end(s2)]);
  });

  for (const how of ['restart', 'kill9Restart']) {
    test(`v${v}: queued QoS 1/2 messages survive a broker ${how === 'restart' ? 'SIGTERM' : 'SIGKILL'} restart`, async () => {
      const t1 = `sess/${how}/v${v}/q1/${uniqueId()}`;
      const t2 = `sess/${how}/v${v}/q2/${uniqueId()}`;
      const id1 = await queueWhileOffline(v, t1, 4, 1); // every publish acknowledged before the kill
      const id2 = await queueWhileOffline(v, t2, 3, 2);
      await ctx.d[how]();
      await expectQueued(v, id1, t1, 4, 1, `after ${how}`);
      await expectQueued(v, id2, t2, 3, 2, `after ${how}`);
    });
  }

  test(`v${v}: an in-flight unacknowledged QoS 1 delivery survives SIGKILL`, async () => {
    const topic = `sess/inflight/v${v}/${uniqueId()}`;
    const id = uniqueId(`infl${v}`);
    const s = await connect(ctx.d, persistent(v, id));
    s.handleMessage = () => {}; // no PUBACK
    let seen = 0;
    s.on('packetreceive', (p) => { if (p.cmd === 'publish') seen += 1; });
    await subscribe(s, topic, { qos: 1 });
    const pub = await connect(ctx.d, { protocolVersion: v });
    await publish(pub, topic, 'in-flight', { qos: 1 });
    await waitFor(() => seen === 1, 5000, 'delivery before the kill');
    destroy(s);
    pub.end(true);
    await ctx.d.kill9Restart();
    const s2 = await connect(ctx.d, persistent(v, id));
    assert.equal(s2.connack.sessionPresent, true);
    const [m] = await waitMessages(s2, 1);
    assert.equal(m.payload, 'in-flight');
    await end(s2);
  });
}

test('v5: Session Expiry Interval 0 ends the session at disconnect', async () => {
  const topic = `sess/exp0/${uniqueId()}`;
  const id = uniqueId('exp0');
  const s = await connect(ctx.d, { protocolVersion: 5, clientId: id, clean: false,
    properties: { sessionExpiryInterval: 0 } });
  await subscribe(s, topic, { qos: 1 });
  await end(s);
  const pub = await connect(ctx.d, { protocolVersion: 5 });
  await publish(pub, topic, 'lost', { qos: 1 });
  const s2 = await connect(ctx.d, { protocolVersion: 5, clientId: id, clean: false,
    properties: { sessionExpiryInterval: 300 } });
  assert.equal(s2.connack.sessionPresent, false);
  await sleep(300);
  assert.equal(s2.received.length, 0);
  await Promise.all([end(pub), end(s2)]);
});

test('v5: a session expires after its Session Expiry Interval', async () => {
  const topic = `sess/exp1/${uniqueId()}`;
  const id = uniqueId('exp1');
  const s = await connect(ctx.d, { protocolVersion: 5, clientId: id, clean: false,
    properties: { sessionExpiryInterval: 1 } });
  await subscribe(s, topic, { qos: 1 });
  await end(s);
  await sleep(2500);
  const s2 = await connect(ctx.d, { protocolVersion: 5, clientId: id, clean: false,
    properties: { sessionExpiryInterval: 300 } });
  assert.equal(s2.connack.sessionPresent, false, 'expired session is gone');
  await end(s2);
});

test('v5: Session Expiry Interval set in DISCONNECT keeps the session', async () => {
  const topic = `sess/dexp/${uniqueId()}`;
  const id = uniqueId('dexp');
  const s = await connect(ctx.d, { protocolVersion: 5, clientId: id, clean: false,
    properties: { sessionExpiryInterval: 10 } });
  await subscribe(s, topic, { qos: 1 });
  await withTimeout(new Promise((r) => s.end(false, { properties: { sessionExpiryInterval: 300 } }, r)),
    5000, 'end');
  const pub = await connect(ctx.d, { protocolVersion: 5 });
  await publish(pub, topic, 'kept', { qos: 1 });
  const s2 = await connect(ctx.d, { protocolVersion: 5, clientId: id, clean: false,
    properties: { sessionExpiryInterval: 300 } });
  assert.equal(s2.connack.sessionPresent, true);
  const [m] = await waitMessages(s2, 1);
  assert.equal(m.payload, 'kept');
  await Promise.all([end(pub), end(s2)]);
});

test('v5: a second connection with the same client id takes over (0x8E)', async () => {
  const id = uniqueId('takeover');
  const a = await connect(ctx.d, persistent(5, id));
  const gone = new Promise((r) => a.once('disconnect', r));
  const b = await connect(ctx.d, persistent(5, id));
  const pkt = await withTimeout(gone, 5000, 'DISCONNECT to the first connection');
  assert.equal(pkt.reasonCode, 0x8e);
  assert.equal(b.connack.sessionPresent, true);
  a.end(true);
  await end(b);
});
