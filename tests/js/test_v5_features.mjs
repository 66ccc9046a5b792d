// MQTT 5.0 features through MQTT.js: PUBLISH properties passed through,
// Message Expiry, Subscription Identifiers and No Local.
// Usage: node test_v5_features.mjs /path/to/drover
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  useDrover, connect, subscribe, unsubscribe, publish, end, waitMessages, sleep, uniqueId,
} from './lib.mjs';

const ctx = useDrover();
const V5 = { protocolVersion: 5 };

const PROPS = () => ({
  payloadFormatIndicator: true,
  contentType: 'application/json; charset=utf-8',
  responseTopic: 'reply/to/me',
  correlationData: Buffer.from([0, 1, 2, 0xfe, 0xff]),
  userProperties: { first: '1', multi: ['x', 'y', 'x'], 'ünï': 'cödé', last: '' },
});

function assertProps(got, want, label) {
  assert.ok(got, `${label}: properties present`);
  assert.equal(got.payloadFormatIndicator, want.payloadFormatIndicator, `${label}: payloadFormatIndicator`);
  assert.equal(got.contentType, want.contentType, `${label}: contentType`);
  assert.equal(got.responseTopic, want.responseTopic, `${label}: responseTopic`);
  assert.deepEqual(got.correlationData, want.correlationData, `${label}: correlationData`);
  // Order of user properties must be kept (§3.3.2.3.7): compare entries in order.
  assert.deepEqual(Object.entries({ ...got.userProperties }), Object.entries(want.userProperties),
    `${label}: userProperties`);
}

for (const q of [0, 1, 2]) {
  test(`properties pass through unchanged at QoS ${q}`, async () => {
    const topic = `props/q${q}/${uniqueId()}`;
    const sub = await connect(ctx.d, V5);
    await subscribe(sub, topic, { qos: 2 });
    const pub = await connect(ctx.d, V5);
    const want = PROPS();
    await publish(pub, topic, '{"v":1}', { qos: q, properties: want });
    const [m] = await waitMessages(sub, 1);
    assert.equal(m.payload, '{"v":1}');
    assertProps(m.packet.properties, want, `QoS ${q}`);
    await Promise.all([end(sub), end(pub)]);
  });
}

test('properties survive the offline queue, a retained store and a SIGKILL restart', async () => {
  const topic = `props/durable/${uniqueId()}`;
  const id = uniqueId('pd');
  const persistent = { ...V5, clientId: id, clean: false, properties: { sessionExpiryInterval: 300 } };
  const s = await connect(ctx.d, persistent);
  await subscribe(s, topic, { qos: 1 });
  await end(s);
  const pub = await connect(ctx.d, V5);
  const want = PROPS();
  await publish(pub, topic, 'queued', { qos: 1, retain: true, properties: want });
  await end(pub);
  await ctx.d.kill9Restart();
  const s2 = await connect(ctx.d, persistent);
  const [m] = await waitMessages(s2, 1);
  assert.equal(m.payload, 'queued');
  assertProps(m.packet.properties, want, 'queued across SIGKILL');
  const r = await connect(ctx.d, V5);
  await subscribe(r, topic, { qos: 1 });
  const [rm] = await waitMessages(r, 1);
  assert.equal(rm.packet.retain, true);
  assertProps(rm.packet.properties, want, 'retained across SIGKILL');
  await publish(r, topic, '', { qos: 1, retain: true });
  await Promise.all([end(s2), end(r)]);
});

test('request/response with responseTopic and correlationData', async () => {
  const reqTopic = `rpc/req/${uniqueId()}`;
  const server = await connect(ctx.d, V5);
  await subscribe(server, reqTopic, { qos: 1 });
  server.on('message', (topic, payload, packet) => {
    const { responseTopic, correlationData } = packet.properties;
    server.publish(responseTopic, `echo:${payload}`, { qos: 1, properties: { correlationData } });
  });
  const client = await connect(ctx.d, V5);
  const replyTopic = `rpc/reply/${uniqueId()}`;
  await subscribe(client, replyTopic, { qos: 1 });
  for (let i = 0; i < 3; i++) {
    await publish(client, reqTopic, `q${i}`, { qos: 1,
      properties: { responseTopic: replyTopic, correlationData: Buffer.from(`corr-${i}`) } });
  }
  const replies = await waitMessages(client, 3);
  assert.deepEqual(replies.map((m) => [m.payload, m.packet.properties.correlationData.toString()]),
    [['echo:q0', 'corr-0'], ['echo:q1', 'corr-1'], ['echo:q2', 'corr-2']]);
  await Promise.all([end(server), end(client)]);
});

test('payloadFormatIndicator=1 with invalid UTF-8 is refused with 0x99', async () => {
  const topic = `props/pfi/${uniqueId()}`;
  const sub = await connect(ctx.d, V5);
  await subscribe(sub, topic, { qos: 1 });
  const pub = await connect(ctx.d, V5);
  await assert.rejects(
    publish(pub, topic, Buffer.from([0xc3, 0x28, 0xff]), { qos: 1, properties: { payloadFormatIndicator: true } }),
    (err) => err.code === 0x99 || /Payload format invalid/.test(err.message));
  await publish(pub, topic, Buffer.from([0xc3, 0x28, 0xff]), { qos: 1 }); // no indicator: any bytes
  const [m] = await waitMessages(sub, 1);
  assert.deepEqual(m.packet.payload, Buffer.from([0xc3, 0x28, 0xff]));
  await sleep(200);
  assert.equal(sub.received.length, 1);
  await Promise.all([end(sub), end(pub)]);
});

test('Message Expiry Interval: counted down, expired messages are not delivered', async () => {
  const base = `expiry/${uniqueId()}`;
  const id = uniqueId('exp');
  const persistent = { ...V5, clientId: id, clean: false, properties: { sessionExpiryInterval: 300 } };
  const s = await connect(ctx.d, persistent);
  await subscribe(s, `${base}/#`, { qos: 1 });
  await end(s);
  const pub = await connect(ctx.d, V5);
  await publish(pub, `${base}/short`, 'short', { qos: 1, retain: true, properties: { messageExpiryInterval: 1 } });
  await publish(pub, `${base}/long`, 'long', { qos: 1, retain: true, properties: { messageExpiryInterval: 100 } });
  await sleep(2200);
  const s2 = await connect(ctx.d, persistent);
  const [m] = await waitMessages(s2, 1);
  await sleep(300);
  assert.deepEqual(s2.received.map((x) => x.payload), ['long'], 'expired queued message dropped');
  const left = m.packet.properties.messageExpiryInterval;
  assert.ok(left >= 97 && left <= 99, `expiry counted down by the time queued (got ${left})`);
  const r = await connect(ctx.d, V5);
  await subscribe(r, `${base}/#`, { qos: 1 });
  await waitMessages(r, 1);
  await sleep(300);
  assert.deepEqual(r.received.map((x) => x.payload), ['long'], 'expired retained message dropped');
  await publish(r, `${base}/long`, '', { qos: 1, retain: true });
  await Promise.all([end(pub), end(s2), end(r)]);
});

// ---- Subscription Identifiers (§3.8.2.1.2, §3.3.4) ----

function ids(m) {
  const v = m.packet.properties?.subscriptionIdentifier;
  if (v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

test('subscription identifiers are attached per matching subscription', async () => {
  const base = `sid/${uniqueId()}`;
  const c = await connect(ctx.d, V5);
  await subscribe(c, `${base}/a/+`, { qos: 1, properties: { subscriptionIdentifier: 7 } });
  await subscribe(c, `${base}/#`, { qos: 1, properties: { subscriptionIdentifier: 268435455 } });
  await subscribe(c, `${base}/plain`, { qos: 1 }); // no identifier
  const pub = await connect(ctx.d, V5);

  await publish(pub, `${base}/a/x`, 'both', { qos: 1 });
  await publish(pub, `${base}/b`, 'hash-only', { qos: 1 });
  await publish(pub, `${base}/plain`, 'plain', { qos: 1 });
  await waitMessages(c, 3);
  await sleep(300);

  // Overlapping subscriptions: one message carrying both ids, or one message per subscription.
  const both = c.received.filter((m) => m.payload === 'both');
  assert.ok(both.length === 1 || both.length === 2, `overlap delivered ${both.length} times`);
  assert.deepEqual(both.flatMap(ids).sort((a, b) => a - b), [7, 268435455]);
  if (both.length === 2) assert.ok(both.every((m) => ids(m).length === 1));

  const hash = c.received.filter((m) => m.payload === 'hash-only');
  assert.equal(hash.length, 1);
  assert.deepEqual(ids(hash[0]), [268435455]);

  const plain = c.received.filter((m) => m.payload === 'plain');
  assert.ok(plain.length >= 1 && plain.length <= 2);
  assert.deepEqual(plain.flatMap(ids), [268435455], 'the filter without an identifier adds none');
  await Promise.all([end(c), end(pub)]);
});

test('re-subscribing replaces the identifier; identifiers come with retained messages', async () => {
  const topic = `sid/re/${uniqueId()}`;
  const pub = await connect(ctx.d, V5);
  await publish(pub, topic, 'kept', { qos: 1, retain: true });
  const c = await connect(ctx.d, V5);
  await subscribe(c, topic, { qos: 1, properties: { subscriptionIdentifier: 11 } });
  const [r] = await waitMessages(c, 1);
  assert.equal(r.packet.retain, true);
  assert.deepEqual(ids(r), [11], 'retained message carries the identifier');
  await subscribe(c, topic, { qos: 1, rh: 2, properties: { subscriptionIdentifier: 12 } });
  await publish(pub, topic, 'live', { qos: 1 });
  await waitMessages(c, 2);
  assert.deepEqual(ids(c.received[1]), [12], 'new identifier after re-subscribe');
  await subscribe(c, topic, { qos: 1, rh: 2 }); // no identifier now
  await publish(pub, topic, 'none', { qos: 1 });
  await waitMessages(c, 3);
  assert.deepEqual(ids(c.received[2]), [], 'identifier removed');
  await publish(pub, topic, '', { qos: 1, retain: true });
  await Promise.all([end(pub), end(c)]);
});

test('subscription identifiers survive a SIGKILL restart with the session', async () => {
  const topic = `sid/persist/${uniqueId()}`;
  const persistent = { ...V5, clientId: uniqueId('sidp'), clean: false, properties: { sessionExpiryInterval: 300 } };
  const c = await connect(ctx.d, persistent);
  await subscribe(c, topic, { qos: 1, properties: { subscriptionIdentifier: 4242 } });
  await end(c);
  const pub = await connect(ctx.d, V5);
  await publish(pub, topic, 'queued', { qos: 1 });
  await end(pub);
  await ctx.d.kill9Restart();
  const c2 = await connect(ctx.d, persistent);
  const [m] = await waitMessages(c2, 1);
  assert.deepEqual(ids(m), [4242], 'queued message keeps its identifier');
  const pub2 = await connect(ctx.d, V5);
  await publish(pub2, topic, 'live', { qos: 1 });
  await waitMessages(c2, 2);
  assert.deepEqual(ids(c2.received[1]), [4242], 'restored subscription keeps its identifier');
  await Promise.all([end(c2), end(pub2)]);
});

// ---- No Local (§3.8.3.1) ----

test('no-local: own messages are not echoed, others still arrive', async () => {
  const topic = `nl/${uniqueId()}`;
  const a = await connect(ctx.d, V5);
  const b = await connect(ctx.d, V5);
  await subscribe(a, topic, { qos: 1, nl: true });
  await subscribe(b, topic, { qos: 1, nl: false });
  await publish(a, topic, 'from-a', { qos: 1 });
  await publish(b, topic, 'from-b', { qos: 1 });
  await waitMessages(a, 1);
  await waitMessages(b, 2);
  await sleep(300);
  assert.deepEqual(a.received.map((m) => m.payload), ['from-b'], 'a (no-local) does not get its own');
  assert.deepEqual(b.received.map((m) => m.payload).sort(), ['from-a', 'from-b'], 'b gets both');
  // Same for QoS 0 and 2 and through a wildcard.
  await unsubscribe(a, topic);
  await subscribe(a, `${topic}/#`, { qos: 2, nl: true });
  await publish(a, `${topic}/x`, 'own0', { qos: 0 });
  await publish(a, `${topic}/x`, 'own2', { qos: 2 });
  await publish(b, `${topic}/x`, 'other', { qos: 2 });
  await waitMessages(a, 2);
  await sleep(300);
  assert.deepEqual(a.received.map((m) => m.payload), ['from-b', 'other']);
  await Promise.all([end(a), end(b)]);
});

test('no-local on one filter does not hide a message matched by another filter', async () => {
  const topic = `nl2/${uniqueId()}`;
  const a = await connect(ctx.d, V5);
  await subscribe(a, topic, { qos: 1, nl: true });
  await subscribe(a, `${topic.split('/')[0]}/+`, { qos: 1, nl: false });
  await publish(a, topic, 'own', { qos: 1 });
  await waitMessages(a, 1);
  await sleep(300);
  assert.deepEqual(a.received.map((m) => m.payload), ['own']);
  await end(a);
});

test('no-local is kept by a persistent session across a SIGKILL restart', async () => {
  const topic = `nl/persist/${uniqueId()}`;
  const persistent = { ...V5, clientId: uniqueId('nlp'), clean: false, properties: { sessionExpiryInterval: 300 } };
  const a = await connect(ctx.d, persistent);
  await subscribe(a, topic, { qos: 1, nl: true });
  await end(a);
  await ctx.d.kill9Restart();
  const a2 = await connect(ctx.d, persistent);
  assert.equal(a2.connack.sessionPresent, true);
  const b = await connect(ctx.d, V5);
  await publish(a2, topic, 'own', { qos: 1 });
  await publish(b, topic, 'other', { qos: 1 });
  await waitMessages(a2, 1);
  await sleep(300);
  assert.deepEqual(a2.received.map((m) => m.payload), ['other']);
  await Promise.all([end(a2), end(b)]);
});
