// Will messages through MQTT.js: sent when the socket dies without DISCONNECT,
// not on a clean end; 5.0 will properties, Will Delay Interval and DISCONNECT
// with reason 0x04.  Usage: node test_will.mjs /path/to/drover
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  useDrover, connect, subscribe, publish, end, destroy, waitMessages, sleep, uniqueId, withTimeout,
} from './lib.mjs';

const ctx = useDrover();

async function watcher(topic, v = 5) {
  const w = await connect(ctx.d, { protocolVersion: v });
  await subscribe(w, topic, { qos: 2 });
  return w;
}

for (const v of [4, 5]) {
  for (const qos of [0, 1, 2]) {
    test(`v${v}: will QoS ${qos} is published when the socket is destroyed`, async () => {
      const topic = `will/v${v}/q${qos}/${uniqueId()}`;
      const w = await watcher(topic, v);
      const c = await connect(ctx.d, { protocolVersion: v, will: { topic, payload: 'gone', qos, retain: false } });
      destroy(c);
      const [m] = await waitMessages(w, 1);
      assert.equal(m.topic, topic);
      assert.equal(m.payload, 'gone');
      assert.equal(m.packet.qos, qos);
      assert.equal(m.packet.retain, false);
      await sleep(200);
      assert.equal(w.received.length, 1, 'will sent once');
      await end(w);
    });
  }

  test(`v${v}: no will after a clean DISCONNECT`, async () => {
    const topic = `will/clean/v${v}/${uniqueId()}`;
    const w = await watcher(topic, v);
    const c = await connect(ctx.d, { protocolVersion: v, will: { topic, payload: 'should not', qos: 1 } });
    await publish(c, topic, 'alive', { qos: 1 });
    await end(c);
    await waitMessages(w, 1);
    await sleep(700);
    assert.deepEqual(w.received.map((m) => m.payload), ['alive']);
    await end(w);
  });

  test(`v${v}: a retained will is stored as the retained message`, async () => {
    const topic = `will/ret/v${v}/${uniqueId()}`;
    const w = await watcher(topic, v);
    const c = await connect(ctx.d, { protocolVersion: v, will: { topic, payload: 'offline', qos: 1, retain: true } });
    destroy(c);
    await waitMessages(w, 1);
    const late = await connect(ctx.d, { protocolVersion: v });
    await subscribe(late, topic, { qos: 1 });
    const [m] = await waitMessages(late, 1);
    assert.equal(m.payload, 'offline');
    assert.equal(m.packet.retain, true);
    await publish(late, topic, '', { qos: 1, retain: true });
    await Promise.all([end(w), end(late)]);
  });

  test(`v${v}: a persistent session's will fires on abrupt close and not on clean end`, async () => {
    const topic = `will/persist/v${v}/${uniqueId()}`;
    const w = await watcher(topic, v);
    const opts = { protocolVersion: v, clientId: uniqueId('pw'), clean: false,
      will: { topic, payload: 'lost', qos: 1 } };
    if (v === 5) opts.properties = { sessionExpiryInterval: 60 };
    const a = await connect(ctx.d, opts);
    await end(a);
    await sleep(500);
    assert.equal(w.received.length, 0, 'no will on clean end');
    const b = await connect(ctx.d, opts);
    destroy(b);
    const [m] = await waitMessages(w, 1);
    assert.equal(m.payload, 'lost');
    await end(w);
  });
}

test('v5: will properties pass through to the subscriber', async () => {
  const topic = `will/props/${uniqueId()}`;
  const w = await watcher(topic);
  const c = await connect(ctx.d, {
    protocolVersion: 5,
    will: {
      topic, payload: '{"state":"dead"}', qos: 1,
      properties: {
        contentType: 'application/json',
        payloadFormatIndicator: true,
        responseTopic: 'will/reply',
        correlationData: Buffer.from([1, 2, 3, 0xff]),
        userProperties: { device: 'd-7', tag: ['a', 'b'] },
        messageExpiryInterval: 120,
      },
    },
  });
  destroy(c);
  const [m] = await waitMessages(w, 1);
  const p = m.packet.properties || {};
  assert.equal(m.payload, '{"state":"dead"}');
  assert.equal(p.contentType, 'application/json');
  assert.equal(p.payloadFormatIndicator, true);
  assert.equal(p.responseTopic, 'will/reply');
  assert.deepEqual(p.correlationData, Buffer.from([1, 2, 3, 0xff]));
  assert.deepEqual({ ...p.userProperties }, { device: 'd-7', tag: ['a', 'b'] });
  assert.ok(p.messageExpiryInterval > 0 && p.messageExpiryInterval <= 120, 'expiry forwarded, counted down');
  await end(w);
});

test('v5: DISCONNECT with reason 0x04 publishes the will', async () => {
  const topic = `will/rc4/${uniqueId()}`;
  const w = await watcher(topic);
  const c = await connect(ctx.d, { protocolVersion: 5, will: { topic, payload: 'asked for', qos: 1 } });
  await withTimeout(new Promise((r) => c.end(false, { reasonCode: 0x04 }, r)), 5000, 'end');
  const [m] = await waitMessages(w, 1);
  assert.equal(m.payload, 'asked for');
  await end(w);
});

test('v5: Will Delay Interval postpones the will, and a reconnect within it cancels it', async () => {
  const topic = `will/delay/${uniqueId()}`;
  const w = await watcher(topic);
  const opts = (id, payload) => ({
    protocolVersion: 5, clientId: id, clean: false,
    properties: { sessionExpiryInterval: 60 },
    will: { topic, payload, qos: 1, properties: { willDelayInterval: 2 } },
  });
  // Delayed, then sent.
  const a = await connect(ctx.d, opts(uniqueId('wd'), 'delayed'));
  const t0 = Date.now();
  destroy(a);
  await sleep(1000);
  assert.equal(w.received.length, 0, 'not sent before the delay');
  await waitMessages(w, 1, 4000);
  assert.ok(Date.now() - t0 >= 1500, `sent after about 2 s (took ${Date.now() - t0} ms)`);
  assert.equal(w.received[0].payload, 'delayed');

  // Reconnecting within the delay cancels it.
  const id = uniqueId('wd');
  const b = await connect(ctx.d, opts(id, 'cancelled'));
  destroy(b);
  await sleep(500);
  const b2 = await connect(ctx.d, opts(id, 'cancelled'));
  await sleep(2500);
  assert.deepEqual(w.received.map((m) => m.payload), ['delayed'], 'no will after a timely reconnect');
  await Promise.all([end(b2), end(w)]);
});

test('v5: session takeover publishes the old connection\'s will', async () => {
  // §3.1.4: when a session is taken over the existing connection is closed as if
  // the network failed, so its will is sent (no Will Delay here).
  const topic = `will/takeover/${uniqueId()}`;
  const w = await watcher(topic);
  const id = uniqueId('tk');
  const a = await connect(ctx.d, { protocolVersion: 5, clientId: id, will: { topic, payload: 'taken', qos: 1 } });
  const b = await connect(ctx.d, { protocolVersion: 5, clientId: id });
  const [m] = await waitMessages(w, 1);
  assert.equal(m.payload, 'taken');
  a.end(true);
  await Promise.all([end(b), end(w)]);
});
