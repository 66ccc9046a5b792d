// MQTT over WebSocket (ws://127.0.0.1:PORT/mqtt) and secure WebSocket (wss://localhost:PORT/mqtt,
// trusting the broker's development CA): MQTT.js 3.1.1 and 5.0 at QoS 0/1/2, large and many
// messages, and a hand-written RFC 6455 client for the handshake and framing rules (404 on
// other paths, subprotocol negotiation, fragmented frames, ping/pong, close codes 1002/1003,
// and malformed frames that must not disturb anyone else).
// Usage: node test_websocket.mjs /path/to/drover
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import {
  connect, publish, publishMany, subscribe, end, waitMessages, sleep, uniqueId, withTimeout,
} from './lib.mjs';
import {
  useTransportDrover, wsOptions, wssOptions, caFile, RawWs, OP, encodeFrame, acceptFor,
  mqttConnect, mqttSubscribe, mqttPublish, PINGREQ, PINGRESP, CONNACK_OK,
} from './lib_transport.mjs';

// A short CONNECT deadline, so that silent sockets are seen to be closed within the file's time.
const CONNECT_TIMEOUT_MS = 1500;
const ctx = useTransportDrover({ 'mqtt.connect_timeout': String(CONNECT_TIMEOUT_MS) });
const VERSIONS = [4, 5];
const TRANSPORTS = { ws: wsOptions, wss: wssOptions };

// A raw client that has completed the upgrade and an MQTT CONNECT.
async function rawMqtt(id = uniqueId('raw'), opts = {}) {
  const w = await RawWs.open(ctx.wsPort, opts);
  w.sendMqtt(mqttConnect(id));
  assert.deepEqual(await w.readMqtt(4), CONNACK_OK, 'CONNACK over WebSocket');
  return w;
}

async function assertAlive(w, what = 'connection') {
  w.sendMqtt(PINGREQ);
  assert.deepEqual(await w.readMqtt(2), PINGRESP, `${what}: PINGRESP`);
}

// ---------------------------------------------------------------------------
// MQTT.js over ws:// and wss://

for (const [name, opts] of Object.entries(TRANSPORTS)) {
  for (const v of VERSIONS) {
    test(`${name} v${v}: connect, publish and subscribe at QoS 0/1/2`, async () => {
      const base = `ws/${name}/v${v}/${uniqueId()}`;
      const sub = await connect(ctx.d, opts(ctx, v));
      const pub = await connect(ctx.d, opts(ctx, v));
      if (v === 5) assert.equal(sub.connack.reasonCode, 0);
      else assert.equal(sub.connack.returnCode, 0);
      for (let s = 0; s <= 2; s++) {
        const granted = await subscribe(sub, `${base}/s${s}/#`, { qos: s });
        assert.equal(granted[0].qos, s);
      }
      let n = 0;
      for (let p = 0; p <= 2; p++) {
        for (let s = 0; s <= 2; s++) {
          await publish(pub, `${base}/s${s}/p${p}`, `m-${p}-${s}`, { qos: p });
          n += 1;
        }
      }
      await waitMessages(sub, n);
      await sleep(150);
      assert.equal(sub.received.length, n, 'each message exactly once');
      for (const m of sub.received) {
        const [, s, p] = /\/s(\d)\/p(\d)$/.exec(m.topic).map(Number);
        assert.equal(m.payload, `m-${p}-${s}`);
        assert.equal(m.packet.qos, Math.min(p, s));
      }
      await end(sub);
      await end(pub);
    });
  }
}

test('wss: a client that does not trust the development CA is refused by the client', async () => {
  await assert.rejects(connect(ctx.d, wssOptions(ctx, 4, { ca: undefined }), 3000),
    /self[- ]signed|unable to verify|certificate/i);
});

test('wss: the development CA file exists in the data directory', () => {
  assert.ok(fs.readFileSync(caFile(ctx.d), 'utf8').includes('BEGIN CERTIFICATE'));
});

test('200 KB payloads cross ws, wss and TCP intact in every direction', async () => {
  const topic = `ws/big/${uniqueId()}`;
  const clients = {
    ws: await connect(ctx.d, wsOptions(ctx, 5)),
    wss: await connect(ctx.d, wssOptions(ctx, 4)),
    tcp: await connect(ctx.d, { protocolVersion: 5 }),
  };
  for (const c of Object.values(clients)) await subscribe(c, `${topic}/#`, { qos: 1 });
  const payloads = {};
  for (const [from, c] of Object.entries(clients)) {
    const p = Buffer.alloc(200 * 1024);
    for (let i = 0; i < p.length; i++) p[i] = (i * 7 + from.length) & 0xFF;
    payloads[from] = p;
    await publish(c, `${topic}/${from}`, p, { qos: 1 }, 10000);
  }
  for (const [to, c] of Object.entries(clients)) {
    await waitMessages(c, 3, 10000);
    for (const m of c.received) {
      const from = m.topic.split('/').pop();
      assert.ok(Buffer.compare(m.packet.payload, payloads[from]) === 0, `${from} -> ${to}: payload differs`);
    }
  }
  for (const c of Object.values(clients)) await end(c);
});

test('many small messages over ws: 3000 QoS 0 and 300 QoS 1, complete and in order', async () => {
  const topic = `ws/many/${uniqueId()}`;
  const sub = await connect(ctx.d, wsOptions(ctx, 4));
  const pub = await connect(ctx.d, wsOptions(ctx, 4));
  await subscribe(sub, `${topic}/#`, { qos: 1 });
  for (let i = 0; i < 3000; i++) pub.publish(`${topic}/q0`, `m${i}`, { qos: 0 });
  await publishMany(pub, 300, (i) => [`${topic}/q1`, `n${i}`, { qos: 1 }], 20, 10000);
  await waitMessages(sub, 3300, 20000);
  const q0 = sub.received.filter((m) => m.topic.endsWith('/q0')).map((m) => m.payload);
  const q1 = sub.received.filter((m) => m.topic.endsWith('/q1')).map((m) => m.payload);
  assert.deepEqual(q0, [...Array(3000).keys()].map((i) => `m${i}`));
  assert.deepEqual(q1, [...Array(300).keys()].map((i) => `n${i}`));
  await end(sub);
  await end(pub);
});

test('wss: many small messages, 1000 QoS 0 and 100 QoS 2', async () => {
  const topic = `wss/many/${uniqueId()}`;
  const sub = await connect(ctx.d, wssOptions(ctx, 5));
  const pub = await connect(ctx.d, wssOptions(ctx, 5));
  await subscribe(sub, `${topic}/#`, { qos: 2 });
  for (let i = 0; i < 1000; i++) pub.publish(`${topic}/q0`, `m${i}`, { qos: 0 });
  await publishMany(pub, 100, (i) => [`${topic}/q2`, `n${i}`, { qos: 2 }], 20, 10000);
  await waitMessages(sub, 1100, 20000);
  assert.equal(sub.received.filter((m) => m.topic.endsWith('/q2')).length, 100);
  await end(sub);
  await end(pub);
});

// ---------------------------------------------------------------------------
// The handshake

test('raw: another path goes to the REST API: 404 problem+json', async () => {
  // The HTTP server owns such connections (ADR-0008) and keeps them alive, as
  // HTTP/1.1 does; the answer is the API's, not the WebSocket layer's.
  const w = await RawWs.connect(ctx.wsPort);
  const r = await w.handshake({ path: '/not-mqtt' });
  assert.equal(r.status, 404, r.head);
  assert.match(r.head, /content-type: application\/problem\+json/i);
  w.destroy();
});

test('raw: a plain GET of /mqtt (no upgrade) gets 426 Upgrade Required', async () => {
  const w = await RawWs.connect(ctx.wsPort);
  const r = await w.handshake({ raw: `GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n` });
  assert.equal(r.status, 426, r.head);
  w.destroy();
});

test('raw: a garbage request head gets 400 and the connection closes', async () => {
  const w = await RawWs.connect(ctx.wsPort);
  const r = await w.handshake({ raw: '\x16\x03\x01\x00\x05garbage\r\n\r\n' });
  assert.equal(r.status, 400, r.head);
  assert.ok(w.closed, 'connection closed after the 400');
  w.destroy();
});

test('raw: a half-sent request head, or an upgrade without CONNECT, is closed at mqtt.connect_timeout', async () => {
  const half = await RawWs.connect(ctx.wsPort);
  half.write(Buffer.from('GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr'));
  const silent = await RawWs.open(ctx.wssPort, {
    tlsOptions: { ca: fs.readFileSync(caFile(ctx.d)), servername: 'localhost' },
  });
  const upgraded = await RawWs.open(ctx.wsPort);
  const t0 = Date.now();
  const [a, b, c] = await Promise.all([half, silent, upgraded].map((w) => w.waitClose(CONNECT_TIMEOUT_MS + 3000)));
  assert.ok(a.tcpClosed, 'half-sent head closed');
  assert.ok(b.tcpClosed, 'wss upgrade without CONNECT closed');
  assert.ok(c.tcpClosed, 'ws upgrade without CONNECT closed');
  assert.ok(Date.now() - t0 < CONNECT_TIMEOUT_MS + 3000);
  for (const w of [half, silent, upgraded]) w.destroy();
});

test('raw: 101 with a correct Sec-WebSocket-Accept; the query string is ignored', async () => {
  const key = 'dGhlIHNhbXBsZSBub25jZQ==';
  const w = await RawWs.connect(ctx.wsPort);
  const r = await w.handshake({ key, path: '/mqtt?client=x' });
  assert.equal(r.status, 101, r.head);
  assert.equal(r.headers['sec-websocket-accept'], 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
  assert.equal(acceptFor(key), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
  assert.equal(r.headers['sec-websocket-protocol'], 'mqtt');
  assert.match(r.headers.upgrade, /^websocket$/i);
  w.destroy();
});

test('raw: subprotocol negotiation (mqtt, mqttv3.1, a list, none, only unknown ones)', async () => {
  const cases = [
    ['mqtt', 101, 'mqtt'],
    ['mqttv3.1', 101, 'mqttv3.1'],
    [['chat', 'mqtt'], 101, 'mqtt'],
    [['mqttv3.1', 'mqtt'], 101, 'mqtt'],
    // Missing subprotocol: accepted without one (some clients send none), and MQTT works.
    [null, 101, undefined],
    // Only protocols the server does not speak: refused before the upgrade.
    ['chat', 400, undefined],
  ];
  for (const [protocol, status, chosen] of cases) {
    const w = await RawWs.connect(ctx.wsPort);
    const r = await w.handshake({ protocol });
    assert.equal(r.status, status, `offer ${JSON.stringify(protocol)}:\n${r.head}`);
    assert.equal(r.headers['sec-websocket-protocol'], chosen, `chosen for ${JSON.stringify(protocol)}`);
    if (status === 101) {
      w.sendMqtt(mqttConnect(uniqueId('proto')));
      assert.deepEqual(await w.readMqtt(4), CONNACK_OK, `CONNACK with offer ${JSON.stringify(protocol)}`);
    }
    w.destroy();
  }
});

test('raw: the server sends unmasked binary frames', async () => {
  const w = await RawWs.open(ctx.wsPort);
  w.sendMqtt(mqttConnect(uniqueId('frames')));
  const f = await w.readFrame();
  assert.equal(f.opcode, OP.BINARY);
  assert.equal(f.fin, true);
  assert.equal(f.masked, false, 'server frames must not be masked (RFC 6455 §5.1)');
  assert.equal(f.rsv, 0);
  assert.deepEqual(f.payload, CONNACK_OK);
  w.destroy();
});

// ---------------------------------------------------------------------------
// Framing

test('raw: one MQTT CONNECT in three fragments (with a ping between them) is accepted', async () => {
  const w = await RawWs.open(ctx.wsPort);
  const c = mqttConnect(uniqueId('frag'));
  w.send(OP.BINARY, c.subarray(0, 3), { fin: false });
  w.send(OP.PING, Buffer.from('mid'));
  w.send(OP.CONTINUATION, c.subarray(3, 10), { fin: false });
  w.send(OP.CONTINUATION, c.subarray(10), { fin: true });
  const pong = await w.readFrame();
  assert.equal(pong.opcode, OP.PONG);
  assert.deepEqual(pong.payload, Buffer.from('mid'));
  assert.deepEqual(await w.readMqtt(4), CONNACK_OK);
  await assertAlive(w);
  w.destroy();
});

test('raw: frames written a byte at a time, and several MQTT packets in one frame', async () => {
  const w = await RawWs.open(ctx.wsPort);
  const bytes = encodeFrame(OP.BINARY, mqttConnect(uniqueId('bytes')));
  for (const b of bytes) {
    w.write(Buffer.from([b]));
    await sleep(2);
  }
  assert.deepEqual(await w.readMqtt(4), CONNACK_OK);
  const topic = `ws/raw/${uniqueId()}`;
  // SUBSCRIBE + PUBLISH + PINGREQ in one frame
  w.sendMqtt(Buffer.concat([mqttSubscribe(1, topic, 0), mqttPublish(topic, 'self'), PINGREQ]));
  const suback = await w.readMqtt(5);
  assert.deepEqual(suback, Buffer.from([0x90, 0x03, 0x00, 0x01, 0x00]));
  const rest = await w.readMqtt(2 + 2 + topic.length + 4 + 2);
  assert.ok(rest.includes(Buffer.from('self')) && rest.subarray(-2).equals(PINGRESP), rest.toString('hex'));
  w.destroy();
});

test('raw: ping gets a pong with the same payload, before and after CONNECT', async () => {
  const w = await RawWs.open(ctx.wsPort);
  w.send(OP.PING, Buffer.from('hello'));
  let f = await w.readFrame();
  assert.equal(f.opcode, OP.PONG);
  assert.deepEqual(f.payload, Buffer.from('hello'));
  w.sendMqtt(mqttConnect(uniqueId('ping')));
  assert.deepEqual(await w.readMqtt(4), CONNACK_OK);
  const big = Buffer.alloc(125, 0x5A);
  w.send(OP.PING, big);
  f = await w.readFrame();
  assert.equal(f.opcode, OP.PONG);
  assert.deepEqual(f.payload, big);
  w.send(OP.PONG, Buffer.from('unsolicited')); // ignored
  await assertAlive(w);
  w.destroy();
});

test('raw: an unmasked client frame gets close 1002 and the connection ends', async () => {
  const w = await rawMqtt();
  w.send(OP.BINARY, PINGREQ, { mask: false });
  const c = await w.waitClose();
  assert.equal(c.frame, true, 'a close frame');
  assert.equal(c.code, 1002);
  assert.equal(c.tcpClosed, true);
  assert.ok(!c.frames.some((x) => x.opcode === OP.BINARY && x.payload.equals(PINGRESP)),
    'the unmasked PINGREQ must not be answered');
  w.destroy();
});

test('raw: a text frame gets close 1003 and the connection ends', async () => {
  const w = await rawMqtt();
  w.send(OP.TEXT, Buffer.from('hello'));
  const c = await w.waitClose();
  assert.equal(c.frame, true, 'a close frame');
  assert.equal(c.code, 1003);
  assert.equal(c.tcpClosed, true);
  w.destroy();
});

test('raw: a client close frame is answered with close 1000 and the connection ends', async () => {
  const w = await rawMqtt();
  w.send(OP.CLOSE, Buffer.from([0x03, 0xE8]));
  const c = await w.waitClose();
  assert.equal(c.frame, true);
  assert.equal(c.code, 1000);
  assert.equal(c.tcpClosed, true);
  w.destroy();
});

test('raw: a close frame counts as a disconnect without DISCONNECT: the will is sent', async () => {
  const topic = `ws/will/${uniqueId()}`;
  const watcher = await connect(ctx.d, { protocolVersion: 4 });
  await subscribe(watcher, topic, { qos: 1 });
  const w = await RawWs.open(ctx.wsPort);
  // CONNECT with a will (flags 0x0E: clean session, will, will QoS 1)
  const id = uniqueId('will');
  const body = Buffer.concat([Buffer.from([0, 4]), Buffer.from('MQTT'), Buffer.from([4, 0x0E, 0, 60]),
    Buffer.from([0, id.length]), Buffer.from(id), Buffer.from([0, topic.length]), Buffer.from(topic),
    Buffer.from([0, 4]), Buffer.from('gone')]);
  w.sendMqtt(Buffer.concat([Buffer.from([0x10, body.length]), body]));
  assert.deepEqual(await w.readMqtt(4), CONNACK_OK);
  w.send(OP.CLOSE, Buffer.from([0x03, 0xE9]));
  await w.waitClose();
  const [m] = await waitMessages(watcher, 1);
  assert.equal(m.payload, 'gone');
  w.destroy();
  await end(watcher);
});

// Each malformed input, sent by its own raw client after CONNECT, and the close code expected
// (null: the connection must close, with or without a close frame).
const MALFORMED = {
  'reserved bits set': [encodeFrame(OP.BINARY, PINGREQ, { rsv: 4 }), 1002],
  'reserved opcode 0x3': [encodeFrame(0x3, PINGREQ), 1002],
  'reserved control opcode 0xB': [encodeFrame(0xB, Buffer.alloc(0)), 1002],
  'continuation without a message': [encodeFrame(OP.CONTINUATION, PINGREQ), 1002],
  'fragmented ping': [encodeFrame(OP.PING, Buffer.from('x'), { fin: false }), 1002],
  'ping over 125 bytes': [encodeFrame(OP.PING, Buffer.alloc(126)), 1002],
  'binary frame inside a fragmented message': [Buffer.concat([
    encodeFrame(OP.BINARY, PINGREQ.subarray(0, 1), { fin: false }), encodeFrame(OP.BINARY, PINGREQ)]), 1002],
  '64-bit length with the high bit set': [Buffer.concat([Buffer.from([0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]),
    Buffer.from([1, 2, 3, 4])]), 1002],
  'close frame with a 1-byte payload': [encodeFrame(OP.CLOSE, Buffer.from([3])), 1002],
  'close frame with code 1005 (reserved)': [encodeFrame(OP.CLOSE, Buffer.from([0x03, 0xED])), 1002],
  'unmasked frame': [encodeFrame(OP.BINARY, PINGREQ, { mask: false }), 1002],
  'text frame': [encodeFrame(OP.TEXT, Buffer.from('{}')), 1003],
  // max_message is the broker's maximum packet size (1 MiB) plus a little: refused from the header alone
  'a 2 MiB data frame (header only)': [Buffer.concat([Buffer.from([0x82, 0xFF]),
    Buffer.from([0, 0, 0, 0, 0, 0x20, 0, 0]), Buffer.from([1, 2, 3, 4])]), 1009],
  'MQTT garbage in a valid frame': [encodeFrame(OP.BINARY, Buffer.from([0xF0, 0x00])), null],
};

for (const [what, [bytes, code]] of Object.entries(MALFORMED)) {
  test(`raw malformed: ${what} -> ${code ? `close ${code}` : 'connection closed'}`, async () => {
    const w = await rawMqtt();
    w.write(bytes);
    const c = await w.waitClose();
    assert.equal(c.tcpClosed, true, 'the broker closed the connection');
    if (code) {
      assert.equal(c.frame, true, 'a close frame was sent');
      assert.equal(c.code, code);
    }
    w.destroy();
  });
}

test('malformed frames from many clients never affect another client', async () => {
  const topic = `ws/isolation/${uniqueId()}`;
  const sub = await connect(ctx.d, wsOptions(ctx, 5));
  const wssSub = await connect(ctx.d, wssOptions(ctx, 4));
  const tcpPub = await connect(ctx.d, { protocolVersion: 4 });
  await subscribe(sub, topic, { qos: 1 });
  await subscribe(wssSub, topic, { qos: 1 });
  const bystander = await rawMqtt();
  bystander.sendMqtt(mqttSubscribe(7, topic, 0));
  assert.deepEqual(await bystander.readMqtt(5), Buffer.from([0x90, 0x03, 0x00, 0x07, 0x00]));
  let sent = 0;
  const pubLoop = (async () => {
    for (let round = 0; round < 5; round++) {
      const attackers = [];
      for (const [bytes] of Object.values(MALFORMED)) {
        attackers.push((async () => {
          const w = await rawMqtt();
          w.write(bytes);
          await w.waitClose();
          w.destroy();
        })());
      }
      // and some without CONNECT, mid-handshake, and mid-frame
      attackers.push((async () => {
        const w = await RawWs.connect(ctx.wsPort);
        w.write(Buffer.from('GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: webs'));
        await sleep(20);
        w.destroy();
      })());
      attackers.push((async () => {
        const w = await RawWs.open(ctx.wsPort);
        w.write(encodeFrame(OP.BINARY, mqttConnect(uniqueId('cut'))).subarray(0, 5));
        await sleep(20);
        w.destroy();
      })());
      attackers.push((async () => {
        const w = await RawWs.connect(ctx.wsPort);
        // a TLS ClientHello-like record on the HTTP port, then a blank line: a bad request head
        w.write(Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]), Buffer.from('\r\n\r\n')]));
        await w.waitClose(2000);
        w.destroy();
      })());
      await publish(tcpPub, topic, `r${round}`, { qos: 1 });
      sent += 1;
      await Promise.all(attackers);
    }
  })();
  await withTimeout(pubLoop, 30000, 'attack rounds');
  await publish(tcpPub, topic, 'last', { qos: 1 });
  sent += 1;
  await waitMessages(sub, sent, 5000);
  await waitMessages(wssSub, sent, 5000);
  assert.deepEqual(sub.received.map((m) => m.payload), [0, 1, 2, 3, 4].map((i) => `r${i}`).concat('last'));
  assert.deepEqual(wssSub.received.map((m) => m.payload), [0, 1, 2, 3, 4].map((i) => `r${i}`).concat('last'));
  const payloads = [0, 1, 2, 3, 4].map((i) => `r${i}`).concat('last');
  const want = Buffer.concat(payloads.map((p) => mqttPublish(topic, p)));
  assert.deepEqual(await bystander.readMqtt(want.length, 5000), want, 'the raw bystander got every message');
  await assertAlive(bystander, 'bystander');
  bystander.destroy();
  assert.ok(ctx.d.alive(), 'broker alive');
  await end(sub);
  await end(wssSub);
  await end(tcpPub);
});

test('raw over wss: TLS, upgrade, CONNECT and ping through the secure port', async () => {
  const w = await RawWs.open(ctx.wssPort, {
    tlsOptions: { ca: fs.readFileSync(caFile(ctx.d)), servername: 'localhost' },
  });
  w.send(OP.PING, Buffer.from('tls'));
  const f = await w.readFrame();
  assert.equal(f.opcode, OP.PONG);
  w.sendMqtt(mqttConnect(uniqueId('wssraw')));
  assert.deepEqual(await w.readMqtt(4), CONNACK_OK);
  w.send(OP.TEXT, Buffer.from('x'));
  const c = await w.waitClose();
  assert.equal(c.code, 1003);
  w.destroy();
});
