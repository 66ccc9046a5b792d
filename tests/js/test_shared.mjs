// Shared subscriptions ($share/<group>/<filter>) through MQTT.js.
// Usage: node test_shared.mjs /path/to/drover
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  useDrover, connect, subscribe, unsubscribe, publish, publishMany, end, destroy, waitFor, sleep,
  uniqueId, withTimeout,
} from './lib.mjs';

const ctx = useDrover();
const V5 = { protocolVersion: 5 };

const payloads = (c) => c.received.map((m) => m.payload);
const total = (cs) => cs.reduce((n, c) => n + c.received.length, 0);

// Every payload in want delivered exactly once across the clients.
function assertOnceAcross(cs, want, label) {
  const all = cs.flatMap(payloads).sort();
  assert.deepEqual(all, [...want].sort(), `${label}: each message exactly once across the group`);
}

test('one group: every message goes to exactly one member, round robin', async () => {
  const base = `sh/rr/${uniqueId()}`;
  const members = [];
  for (let i = 0; i < 3; i++) {
    const c = await connect(ctx.d, V5);
    const [g] = await subscribe(c, `$share/g1/${base}`, { qos: 1 });
    assert.equal(g.qos, 1);
    members.push(c);
  }
  const pub = await connect(ctx.d, V5);
  const want = [...Array(30).keys()].map((i) => `m${i}`);
  await publishMany(pub, want.length, (i) => [base, want[i], { qos: 1 }], 10);
  await waitFor(() => total(members) >= want.length, 5000, 'all messages');
  await sleep(300);
  assertOnceAcross(members, want, 'g1');
  for (const [i, c] of members.entries()) {
    assert.ok(c.received.length > 0, `member ${i} got ${c.received.length}`);
    assert.ok(c.received.every((m) => m.topic === base && m.packet.qos === 1));
  }
  await Promise.all([...members, pub].map(end));
});

test('two groups and a plain subscriber each get every message', async () => {
  const base = `sh/groups/${uniqueId()}`;
  const g1 = [await connect(ctx.d, V5), await connect(ctx.d, V5)];
  const g2 = [await connect(ctx.d, V5), await connect(ctx.d, { protocolVersion: 4 })];
  const plain = await connect(ctx.d, V5);
  for (const c of g1) await subscribe(c, `$share/alpha/${base}/#`, { qos: 2 });
  for (const c of g2) await subscribe(c, `$share/beta/${base}/+`, { qos: 2 });
  await subscribe(plain, `${base}/#`, { qos: 2 });
  const pub = await connect(ctx.d, V5);
  const want = [...Array(20).keys()].map((i) => `m${i}`);
  await publishMany(pub, want.length, (i) => [`${base}/t${i % 3}`, want[i], { qos: i % 3 }], 10);
  await waitFor(() => total(g1) >= 20 && total(g2) >= 20 && plain.received.length >= 20, 5000, 'deliveries');
  await sleep(300);
  assertOnceAcross(g1, want, 'alpha');
  assertOnceAcross(g2, want, 'beta (3.1.1 and 5.0 members)');
  assert.deepEqual(payloads(plain).sort(), [...want].sort());
  await Promise.all([...g1, ...g2, plain, pub].map(end));
});

test('a member granted QoS 0 receives at QoS 0; subscription identifier is attached', async () => {
  const topic = `sh/qos/${uniqueId()}`;
  const c = await connect(ctx.d, V5);
  await subscribe(c, `$share/q/${topic}`, { qos: 0, properties: { subscriptionIdentifier: 77 } });
  const pub = await connect(ctx.d, V5);
  await publish(pub, topic, 'x', { qos: 2 });
  await waitFor(() => c.received.length === 1, 5000, 'delivery');
  const [m] = c.received;
  assert.equal(m.packet.qos, 0);
  assert.equal(m.packet.properties?.subscriptionIdentifier, 77);
  await Promise.all([end(c), end(pub)]);
});

test('retained messages are not sent on a shared subscribe (§4.8.2)', async () => {
  const topic = `sh/ret/${uniqueId()}`;
  const pub = await connect(ctx.d, V5);
  await publish(pub, topic, 'retained', { qos: 1, retain: true });
  const c = await connect(ctx.d, V5);
  await subscribe(c, `$share/r/${topic}`, { qos: 1 });
  await sleep(400);
  assert.equal(c.received.length, 0);
  await publish(pub, topic, 'live', { qos: 1 });
  await waitFor(() => c.received.length === 1, 5000, 'live delivery');
  assert.equal(c.received[0].payload, 'live');
  await publish(pub, topic, '', { qos: 1, retain: true });
  await Promise.all([end(c), end(pub)]);
});

test('after a member unsubscribes or disconnects the rest get everything', async () => {
  const topic = `sh/leave/${uniqueId()}`;
  const a = await connect(ctx.d, V5);
  const b = await connect(ctx.d, V5);
  const c = await connect(ctx.d, V5);
  for (const x of [a, b, c]) await subscribe(x, `$share/L/${topic}`, { qos: 1 });
  await unsubscribe(a, `$share/L/${topic}`);
  await end(b);
  const pub = await connect(ctx.d, V5);
  await publishMany(pub, 10, (i) => [topic, `m${i}`, { qos: 1 }], 10);
  await waitFor(() => c.received.length >= 10, 5000, 'all to the remaining member');
  await sleep(300);
  assert.equal(a.received.length, 0);
  assert.deepEqual(payloads(c), [...Array(10).keys()].map((i) => `m${i}`));
  await Promise.all([end(a), end(c), end(pub)]);
});

test('unacknowledged messages of a departed member go to another member', async () => {
  const topic = `sh/reroute/${uniqueId()}`;
  const lazy = await connect(ctx.d, V5);
  lazy.handleMessage = () => {}; // never PUBACKs
  await subscribe(lazy, `$share/R/${topic}`, { qos: 1 });
  const pub = await connect(ctx.d, V5);
  await publish(pub, topic, 'first', { qos: 1 }); // only member: goes to lazy
  await waitFor(() => lazy.received.length === 1, 5000, 'delivery to the lazy member');
  const good = await connect(ctx.d, V5);
  await subscribe(good, `$share/R/${topic}`, { qos: 1 });
  destroy(lazy); // clean session: it ends, its in-flight message must not be lost
  await waitFor(() => good.received.length >= 1, 5000, 'the rerouted message');
  await publish(pub, topic, 'second', { qos: 1 });
  await waitFor(() => good.received.length >= 2, 5000, 'the next message');
  assert.deepEqual(payloads(good), ['first', 'second']);
  await Promise.all([end(good), end(pub)]);
});

test('an offline persistent member does not hold messages while another is online', async () => {
  const topic = `sh/offline/${uniqueId()}`;
  const popts = { ...V5, clientId: uniqueId('shp'), clean: false, properties: { sessionExpiryInterval: 300 } };
  const p = await connect(ctx.d, popts);
  await subscribe(p, `$share/O/${topic}`, { qos: 1 });
  await end(p);
  const online = await connect(ctx.d, V5);
  await subscribe(online, `$share/O/${topic}`, { qos: 1 });
  const pub = await connect(ctx.d, V5);
  await publishMany(pub, 10, (i) => [topic, `m${i}`, { qos: 1 }], 10);
  await waitFor(() => online.received.length >= 10, 5000, 'all to the online member');
  const p2 = await connect(ctx.d, popts);
  assert.equal(p2.connack.sessionPresent, true);
  await sleep(400);
  assert.equal(p2.received.length, 0, 'nothing was parked on the offline member');
  await Promise.all([end(p2), end(online), end(pub)]);
});

test('with every member offline the messages wait, also across a SIGKILL restart', async () => {
  const topic = `sh/allgone/${uniqueId()}`;
  const ids = [uniqueId('sha'), uniqueId('shb')];
  const opts = (id) => ({ ...V5, clientId: id, clean: false, properties: { sessionExpiryInterval: 300 } });
  for (const id of ids) {
    const c = await connect(ctx.d, opts(id));
    await subscribe(c, `$share/W/${topic}`, { qos: 1 });
    await end(c);
  }
  const pub = await connect(ctx.d, V5);
  const want = [...Array(6).keys()].map((i) => `m${i}`);
  await publishMany(pub, want.length, (i) => [topic, want[i], { qos: 1 }], 10);
  pub.end(true);
  await ctx.d.kill9Restart();
  const back = [];
  for (const id of ids) back.push(await connect(ctx.d, opts(id)));
  await waitFor(() => total(back) >= want.length, 5000, 'queued shared messages');
  await sleep(300);
  assertOnceAcross(back, want, 'after restart');
  // The group still works for new traffic.
  const pub2 = await connect(ctx.d, V5);
  await publishMany(pub2, 4, (i) => [topic, `n${i}`, { qos: 1 }], 4);
  await waitFor(() => total(back) >= want.length + 4, 5000, 'live shared messages after restart');
  await Promise.all([...back, pub2].map(end));
});

test('No Local on a shared subscription is a protocol error (§3.8.3.1)', async () => {
  const c = await connect(ctx.d, V5);
  const disc = new Promise((r) => c.once('disconnect', r));
  const closed = new Promise((r) => c.once('close', r));
  c.subscribe(`$share/N/sh/nl/${uniqueId()}`, { qos: 1, nl: true }, () => {});
  const how = await withTimeout(Promise.race([disc, closed.then(() => 'closed')]), 5000, 'connection end');
  if (how !== 'closed') assert.equal(how.reasonCode, 0x82);
  c.end(true);
});
