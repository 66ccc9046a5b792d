// MQTT 5.0 Topic Aliases through MQTT.js, both ways: aliases a client sends to
// the broker (explicit properties.topicAlias, autoUseTopicAlias,
// autoAssignTopicAlias) and aliases the broker sends to a client that advertises
// a Topic Alias Maximum.  Usage: node test_topic_alias.mjs /path/to/drover
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  useDrover, connect, subscribe, publish, publishMany, end, destroy, waitMessages, waitFor, sleep,
  uniqueId, withTimeout,
} from './lib.mjs';

const ctx = useDrover();
const V5 = { protocolVersion: 5 };
const ALIASED = { protocolVersion: 5, properties: { topicAliasMaximum: 10 } };

// Every client error (MQTT.js reports alias protocol errors this way) is kept.
function trackErrors(c) {
  c.errors = [];
  c.on('error', (e) => c.errors.push(e));
  return c;
}

// ---- Client -> broker ----

test('broker advertises its Topic Alias Maximum (10)', async () => {
  const c = await connect(ctx.d, V5);
  assert.equal(c.connack.properties.topicAliasMaximum, 10);
  await end(c);
});

for (const q of [0, 1, 2]) {
  test(`explicit alias from MQTT.js is resolved by the broker (QoS ${q})`, async () => {
    const base = `ta/in/q${q}/${uniqueId()}`;
    const s5 = await connect(ctx.d, V5);
    const s4 = await connect(ctx.d, { protocolVersion: 4 });
    await subscribe(s5, `${base}/#`, { qos: 2 });
    await subscribe(s4, `${base}/#`, { qos: 2 });
    const pub = trackErrors(await connect(ctx.d, V5));
    const sent = [];
    pub.on('packetsend', (p) => { if (p.cmd === 'publish') sent.push({ topic: p.topic, alias: p.properties?.topicAlias }); });

    await publish(pub, `${base}/a`, 'register-1', { qos: q, properties: { topicAlias: 1 } });
    await publish(pub, '', 'use-1', { qos: q, properties: { topicAlias: 1 } });
    await publish(pub, `${base}/b`, 'register-2', { qos: q, properties: { topicAlias: 2 } });
    await publish(pub, '', 'use-2', { qos: q, properties: { topicAlias: 2 } });
    await publish(pub, `${base}/c`, 'remap-1', { qos: q, properties: { topicAlias: 1 } });
    await publish(pub, '', 'use-1-again', { qos: q, properties: { topicAlias: 1 } });
    await publish(pub, '', 'use-2-again', { qos: q, properties: { topicAlias: 2 } });
    await publish(pub, `${base}/plain`, 'no-alias', { qos: q });
    assert.equal(sent.filter((p) => p.topic === '').length, 4, 'MQTT.js sent 4 alias-only publishes');

    const want = [
      [`${base}/a`, 'register-1'], [`${base}/a`, 'use-1'], [`${base}/b`, 'register-2'], [`${base}/b`, 'use-2'],
      [`${base}/c`, 'remap-1'], [`${base}/c`, 'use-1-again'], [`${base}/b`, 'use-2-again'], [`${base}/plain`, 'no-alias'],
    ];
    for (const s of [s5, s4]) {
      await waitMessages(s, want.length);
      assert.deepEqual(s.received.map((m) => [m.topic, m.payload]), want);
      assert.ok(s.received.every((m) => m.packet.topic === m.topic), 'subscriber without alias max gets full topics');
    }
    assert.equal(pub.connected, true);
    assert.deepEqual(pub.errors, []);
    await Promise.all([end(s5), end(s4), end(pub)]);
  });
}

test('autoUseTopicAlias and autoAssignTopicAlias over more topics than aliases', async () => {
  const base = `ta/auto/${uniqueId()}`;
  const sub = await connect(ctx.d, V5);
  await subscribe(sub, `${base}/#`, { qos: 1 });

  const use = trackErrors(await connect(ctx.d, { ...V5, autoUseTopicAlias: true }));
  await publish(use, `${base}/u`, 'u0', { qos: 1, properties: { topicAlias: 3 } });
  let aliasOnly = 0;
  use.on('packetsend', (p) => { if (p.cmd === 'publish' && p.topic === '') aliasOnly += 1; });
  for (let i = 1; i <= 5; i++) await publish(use, `${base}/u`, `u${i}`, { qos: 1 });
  assert.equal(aliasOnly, 5, 'autoUseTopicAlias replaced the topic by alias 3');

  const assign = trackErrors(await connect(ctx.d, { ...V5, autoAssignTopicAlias: true }));
  const topics = [...Array(15).keys()].map((i) => `${base}/t${i}`); // 15 > 10 aliases: LRU reuse
  const sequence = [];
  for (let round = 0; round < 4; round++) {
    for (const t of topics) sequence.push([t, `${t.split('/').pop()}-${round}`]);
  }
  await publishMany(assign, sequence.length, (i) => [sequence[i][0], sequence[i][1], { qos: 1 }], 10);

  const total = 6 + sequence.length;
  await waitMessages(sub, total, 10000);
  await sleep(200);
  assert.equal(sub.received.length, total);
  assert.deepEqual(sub.received.filter((m) => m.topic === `${base}/u`).map((m) => m.payload),
    ['u0', 'u1', 'u2', 'u3', 'u4', 'u5']);
  const got = sub.received.filter((m) => m.topic !== `${base}/u`).map((m) => [m.topic, m.payload]);
  const sortKey = (a) => a.join('|');
  assert.deepEqual(got.map(sortKey).sort(), sequence.map(sortKey).sort(), 'every message under its own topic');
  for (const m of got) assert.equal(m[1].split('-')[0], m[0].split('/').pop(), 'payload matches topic');
  assert.deepEqual(use.errors, []);
  assert.deepEqual(assign.errors, []);
  await Promise.all([end(sub), end(use), end(assign)]);
});

test('an alias the broker never saw is a protocol error (DISCONNECT 0x82)', async () => {
  const pub = trackErrors(await connect(ctx.d, V5));
  const disc = new Promise((r) => pub.once('disconnect', r));
  pub.publish('', 'x', { qos: 0, properties: { topicAlias: 5 } });
  const pkt = await withTimeout(disc, 5000, 'DISCONNECT');
  assert.equal(pkt.reasonCode, 0x82);
  pub.end(true);
});

test('aliases do not carry over to a new connection of the same session', async () => {
  const id = uniqueId('tacarry');
  const opts = { ...V5, clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } };
  const a = await connect(ctx.d, opts);
  await publish(a, `ta/carry/${uniqueId()}`, 'x', { qos: 1, properties: { topicAlias: 1 } });
  await end(a);
  const b = trackErrors(await connect(ctx.d, opts));
  const disc = new Promise((r) => b.once('disconnect', r));
  b.publish('', 'y', { qos: 0, properties: { topicAlias: 1 } });
  const pkt = await withTimeout(disc, 5000, 'DISCONNECT');
  assert.equal(pkt.reasonCode, 0x82);
  b.end(true);
});

// ---- Broker -> client ----

// Subscriber with a Topic Alias Maximum.  It keeps its own alias table from the
// wire and stores the topic it resolves as packet.wireTopic: MQTT.js 5.16 emits
// QoS 2 messages on PUBREL from the raw stored PUBLISH, so an aliased QoS 2
// message reaches 'message' with topic '' (a client-side quirk, not the broker's).
// It also counts aliased publishes and the largest alias it is given.
function watchAliases(s) {
  trackErrors(s);
  s.aliasUsed = 0;
  s.maxAliasSeen = 0;
  s.unknownAliases = [];
  const table = new Map();
  s.on('packetreceive', (p) => {
    if (p.cmd !== 'publish') return;
    const alias = p.properties?.topicAlias;
    let topic = p.topic.toString();
    if (alias !== undefined) {
      s.maxAliasSeen = Math.max(s.maxAliasSeen, alias);
      if (topic === '') {
        s.aliasUsed += 1;
        topic = table.get(alias);
        if (topic === undefined) s.unknownAliases.push(alias);
      } else {
        table.set(alias, topic);
      }
    }
    p.wireTopic = topic;
  });
}

async function aliasedSubscriber(filter, extra = {}, max = 10) {
  const s = await connect(ctx.d, { ...ALIASED, ...extra,
    properties: { ...(extra.properties || {}), topicAliasMaximum: max } }, 5000, watchAliases);
  if (filter) await subscribe(s, filter, { qos: 2 });
  return s;
}

// The topic a delivery was made under: resolved from the wire, and for QoS 0/1
// also what MQTT.js reported (the two must agree).
function topicOf(m) {
  if (m.packet.qos < 2) assert.equal(m.topic, m.packet.wireTopic, 'MQTT.js and the wire agree');
  return m.packet.wireTopic;
}

for (const q of [0, 1, 2]) {
  test(`outbound aliases: 200 messages on one topic at QoS ${q} all arrive under that topic`, async () => {
    const topic = `ta/out/one/q${q}/${uniqueId()}`;
    const sub = await aliasedSubscriber(topic);
    const pub = await connect(ctx.d, V5);
    const N = 200;
    await publishMany(pub, N, (i) => [topic, `${i}`, { qos: q }], 20);
    await waitMessages(sub, N, 15000);
    await sleep(200);
    assert.equal(sub.received.length, N);
    assert.deepEqual(sub.received.filter((m) => topicOf(m) !== topic).map(topicOf), [], 'wrong topics');
    assert.deepEqual(sub.unknownAliases, [], 'aliases used before being set');
    assert.deepEqual(sub.received.map((m) => Number(m.payload)), [...Array(N).keys()], 'in order');
    assert.deepEqual(sub.errors.map(String), []);
    assert.equal(sub.connected, true);
    assert.ok(sub.maxAliasSeen <= 10, `alias ${sub.maxAliasSeen} within the advertised maximum`);
    console.log(`# QoS ${q}: broker used an alias for ${sub.aliasUsed} of ${N} deliveries`);
    await Promise.all([end(sub), end(pub)]);
  });
}

test('outbound aliases over many topics (more than the alias maximum), interleaved', async () => {
  const base = `ta/out/many/${uniqueId()}`;
  for (const max of [10, 1]) {
    const sub = await aliasedSubscriber(`${base}/#`, {}, max);
    const pub = await connect(ctx.d, V5);
    const topics = [...Array(25).keys()].map((i) => `${base}/t${i % 25}`);
    const seq = [];
    for (let r = 0; r < 6; r++) for (const t of topics) seq.push([t, `${t.split('/').pop()}:${r}`, { qos: r % 3 }]);
    await publishMany(pub, seq.length, (i) => seq[i], 20);
    await waitMessages(sub, seq.length, 15000);
    await sleep(200);
    assert.equal(sub.received.length, seq.length);
    const bad = sub.received.filter((m) => m.payload.split(':')[0] !== String(topicOf(m)).split('/').pop());
    assert.deepEqual(bad.map((m) => [topicOf(m), m.payload]), [], `max ${max}: messages under a wrong topic`);
    assert.deepEqual(sub.unknownAliases, [], 'aliases used before being set');
    assert.deepEqual(sub.errors.map(String), []);
    assert.ok(sub.maxAliasSeen <= max, `alias ${sub.maxAliasSeen} within max ${max}`);
    console.log(`# max ${max}: broker used an alias for ${sub.aliasUsed} of ${seq.length} deliveries`);
    await Promise.all([end(sub), end(pub)]);
  }
});

test('no outbound alias to a client that advertised none', async () => {
  const topic = `ta/out/none/${uniqueId()}`;
  const sub = trackErrors(await connect(ctx.d, V5));
  let aliased = 0;
  sub.on('packetreceive', (p) => { if (p.cmd === 'publish' && p.properties?.topicAlias !== undefined) aliased += 1; });
  await subscribe(sub, topic, { qos: 1 });
  const pub = await connect(ctx.d, V5);
  await publishMany(pub, 50, (i) => [topic, `${i}`, { qos: i % 2 }], 20);
  await waitMessages(sub, 50);
  assert.equal(aliased, 0);
  assert.ok(sub.received.every((m) => m.topic === topic));
  await Promise.all([end(sub), end(pub)]);
});

// A reconnecting client starts with an empty alias table (§3.3.2.3.4): whatever
// the broker resends or sends from the queue must carry the full topic first.
test('outbound aliases after reconnect: queued and resent messages carry their topic', async () => {
  const topic = `ta/out/resume/${uniqueId()}`;
  const id = uniqueId('tar');
  const opts = { clientId: id, clean: false, properties: { sessionExpiryInterval: 300 } };
  const s1 = await aliasedSubscriber(topic, opts);
  const pub = await connect(ctx.d, V5);
  await publishMany(pub, 20, (i) => [topic, `live-${i}`, { qos: 1 }], 20);
  await waitMessages(s1, 20);
  // Stop acknowledging, take one more delivery in flight, then drop the socket.
  s1.handleMessage = () => {};
  await publish(pub, topic, 'inflight', { qos: 1 });
  await waitMessages(s1, 21);
  destroy(s1);
  await sleep(100);
  await publishMany(pub, 20, (i) => [topic, `queued-${i}`, { qos: 1 }], 20);

  const s2 = await aliasedSubscriber(null, opts);
  assert.equal(s2.connack.sessionPresent, true);
  await waitFor(() => s2.received.length >= 21 || !s2.connected, 5000, '21 messages after reconnect');
  await sleep(200);
  assert.deepEqual(s2.errors.map(String), [], 'MQTT.js rejected an alias it never got');
  assert.equal(s2.received.length, 21);
  assert.ok(s2.received.every((m) => topicOf(m) === topic));
  assert.deepEqual(s2.unknownAliases, []);
  assert.deepEqual(s2.received.map((m) => m.payload),
    ['inflight', ...[...Array(20).keys()].map((i) => `queued-${i}`)]);
  await Promise.all([end(s2), end(pub)]);
});

test('outbound aliases after a broker SIGKILL restart', async () => {
  const topic = `ta/out/kill/${uniqueId()}`;
  const id = uniqueId('tak');
  const opts = { clientId: id, clean: false, properties: { sessionExpiryInterval: 300 } };
  const s1 = await aliasedSubscriber(topic, opts);
  const pub = await connect(ctx.d, V5);
  await publishMany(pub, 10, (i) => [topic, `before-${i}`, { qos: 1 }], 10);
  await waitMessages(s1, 10);
  await end(s1);
  await publishMany(pub, 10, (i) => [topic, `queued-${i}`, { qos: 1 }], 10);
  pub.end(true);
  await ctx.d.kill9Restart();
  const s2 = await aliasedSubscriber(null, opts);
  await waitFor(() => s2.received.length >= 10 || !s2.connected, 5000, 'queued messages after restart');
  const pub2 = await connect(ctx.d, V5);
  await publishMany(pub2, 30, (i) => [topic, `after-${i}`, { qos: 1 }], 10);
  await waitFor(() => s2.received.length >= 40 || !s2.connected, 5000, 'all 40 messages');
  await sleep(200);
  assert.deepEqual(s2.errors.map(String), []);
  assert.equal(s2.received.length, 40);
  assert.ok(s2.received.every((m) => topicOf(m) === topic));
  assert.deepEqual(s2.unknownAliases, []);
  await Promise.all([end(s2), end(pub2)]);
});
