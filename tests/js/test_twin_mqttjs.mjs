// Device shadows and commands (issue 7: docs/shadow.md, docs/commands.md) with MQTT.js as the
// device over MQTT 5.0 and fetch as the application, against a live `drover serve`:
// - one shadow round trip: the device reports, the application sets desired over REST, the
//   device receives the delta, reports it applied, and the delta is gone;
// - one command round trip the MQTT 5.0 way: the request carries a Response Topic and
//   Correlation Data, the device answers on that topic with that correlation data (asynchronous,
//   followed by GET), then a synchronous send (wait_ms) answered by a message handler.
// Usage: node test_twin_mqttjs.mjs /path/to/drover
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { publish, subscribe } from './lib.mjs';
import {
  apiOk, device, endDevice, provision, token, useLive, waitFor,
} from './lib_live.mjs';

const T = {}; // tokens
const TENANT = 'acme';
const base = `/api/v1/tenants/${TENANT}`;

async function setup() {
  await apiOk(ctx, 'POST', '/api/v1/tenants', { id: TENANT, name: TENANT });
  T.op = await token(ctx, TENANT, 'operator');
  await provision(ctx, TENANT, 'js-shadow');
  await provision(ctx, TENANT, 'js-cmd');
}
const ctx = useLive({}, setup);

// The first message on `topic` received from index `from` on (optionally matching pred), parsed.
async function next(dev, topic, from, what, pred = () => true) {
  const m = await waitFor(() => dev.received.slice(from).find((x) => {
    if (x.topic !== topic) return false;
    try { return pred(JSON.parse(x.payload)); } catch { return false; }
  }), 10000, () => `${what} on ${topic}; received: ${dev.received.slice(from).map((x) => x.topic).join(', ')}${ctx.diag(1500)}`);
  return { msg: m, json: JSON.parse(m.payload) };
}

test('shadow round trip: report, desired over REST, delta, delta gone', async () => {
  const id = 'js-shadow';
  const pfx = `devices/${id}/shadow/`;
  const dev = await device(ctx, TENANT, id);
  try {
    await subscribe(dev, `${pfx}#`, { qos: 1 });
    let from = dev.received.length;
    await publish(dev, `${pfx}update`, JSON.stringify({ state: { reported: { led: 'off', fw: '1.0' } }, client_token: 'js-1' }),
      { qos: 1 }, 10000);
    const { json: acc } = await next(dev, `${pfx}update/accepted`, from, 'update/accepted');
    assert.deepEqual(acc.state, { reported: { led: 'off', fw: '1.0' } }, 'update/accepted state is the patch');
    assert.equal(acc.version, 1, 'first version');
    assert.equal(acc.client_token, 'js-1', 'client_token echoed');
    assert.equal(typeof acc.metadata.reported.led.timestamp, 'number', 'leaf metadata');

    from = dev.received.length;
    const r = await apiOk(ctx, 'PATCH', `${base}/devices/${id}/shadows/classic`, { state: { desired: { led: 'on' } } },
      T.op, 200);
    assert.equal(r.json.version, 2, 'PATCH answer version');
    assert.deepEqual(r.json.state.delta, { led: 'on' }, 'PATCH answer delta');
    const { json: delta } = await next(dev, `${pfx}update/delta`, from, 'update/delta', (j) => j.version === 2);
    assert.deepEqual(delta.state, { led: 'on' }, 'the delta');
    assert.equal(typeof delta.metadata.led.timestamp, 'number', 'delta metadata');

    from = dev.received.length;
    await publish(dev, `${pfx}update`, JSON.stringify({ state: { reported: delta.state }, client_token: 'js-2' }),
      { qos: 1 }, 10000);
    const { json: acc2 } = await next(dev, `${pfx}update/accepted`, from, 'update/accepted', (j) => j.client_token === 'js-2');
    assert.equal(acc2.version, 3, 'version after applying the delta');
    const g = await apiOk(ctx, 'GET', `${base}/devices/${id}/shadows/classic`, undefined, T.op, 200);
    assert.equal(g.headers.get('etag'), '"3"', 'ETag');
    assert.equal(g.json.state.delta, undefined, 'no delta once the device agrees');
    assert.deepEqual(g.json.state.reported, { led: 'on', fw: '1.0' }, 'reported');
    assert.deepEqual(g.json.state.desired, { led: 'on' }, 'desired');
  } finally {
    await endDevice(dev);
  }
});

test('command round trip: Response Topic and Correlation Data, async then sync', async () => {
  const id = 'js-cmd';
  const dev = await device(ctx, TENANT, id);
  try {
    await subscribe(dev, `devices/${id}/commands/+/request`, { qos: 1 });
    await subscribe(dev, `devices/${id}/commands/+/rejected`, { qos: 1 });
    const from = dev.received.length;
    const r = await apiOk(ctx, 'POST', `${base}/devices/${id}/commands`, { name: 'blink', params: { times: 3 } }, T.op, 202);
    const cid = r.json.id;
    assert.match(cid, /^cmd_/, 'command id');
    assert.ok((r.headers.get('location') || '').endsWith(`${base}/commands/${cid}`), `Location: ${r.headers.get('location')}`);

    const { msg, json: req } = await next(dev, `devices/${id}/commands/${cid}/request`, from, 'the request');
    assert.equal(msg.packet.qos, 1, 'requests at QoS 1');
    assert.deepEqual([req.id, req.name, req.params, req.attempt], [cid, 'blink', { times: 3 }, 1], 'request payload');
    const p = msg.packet.properties || {};
    assert.equal(p.responseTopic, `devices/${id}/commands/${cid}/response`, 'Response Topic');
    assert.ok(Buffer.isBuffer(p.correlationData), 'Correlation Data present');
    assert.equal(p.correlationData.toString(), cid, 'Correlation Data is the command id');
    assert.equal(p.contentType, 'application/json', 'Content Type');
    assert.ok(p.messageExpiryInterval > 0 && p.messageExpiryInterval <= 86400, `Message Expiry Interval ${p.messageExpiryInterval}`);

    // Answer the MQTT 5.0 way, with no ack first (a response counts as both).
    await publish(dev, p.responseTopic, JSON.stringify({ status: 'succeeded', result: { blinked: 3 } }),
      { qos: 1, properties: { correlationData: p.correlationData, contentType: 'application/json' } }, 10000);
    const g = await apiOk(ctx, 'GET', `${base}/commands/${cid}`, undefined, T.op, 200);
    assert.equal(g.json.state, 'succeeded', 'succeeded as soon as the response was acknowledged');
    assert.deepEqual(g.json.result, { blinked: 3 }, 'result');
    assert.deepEqual(g.json.transitions[0].state, 'queued', 'first transition');
    assert.equal(dev.received.slice(from).filter((x) => x.topic.endsWith('/rejected')).length, 0, 'nothing refused');

    // Synchronous: a message handler answers every request on its Response Topic.
    dev.on('message', (topic, payload, packet) => {
      const q = packet.properties || {};
      if (!topic.endsWith('/request') || !q.responseTopic) return;
      const { params } = JSON.parse(payload.toString());
      dev.publish(q.responseTopic, JSON.stringify({ status: 'succeeded', result: { echo: params } }),
        { qos: 1, properties: { correlationData: q.correlationData } });
    });
    const s = await apiOk(ctx, 'POST', `${base}/devices/${id}/commands`, { name: 'echo', params: { n: 42 }, wait_ms: 10000 },
      T.op, 200);
    assert.equal(s.json.state, 'succeeded', 'a synchronous send answered by the device');
    assert.deepEqual(s.json.result, { echo: { n: 42 } }, 'its result');
  } finally {
    await endDevice(dev);
  }
});
