// bench/live/mqtt.mjs — just enough MQTT 3.1.1 for bench/live: CONNECT,
// PUBLISH (QoS 0/1), SUBSCRIBE, PINGREQ, and a reader that splits a byte
// stream into packets.
//
// Not a client library: no session state, no retries, no QoS 2.  It exists
// so the load generator costs a few microseconds per message (MQTT.js costs
// several times that, which at 10,000 msg/s on 2 cores would be the
// bottleneck being measured).

export const CONNACK = 2;
export const PUBLISH = 3;
export const PUBACK = 4;
export const SUBACK = 9;
export const PINGRESP = 13;

export const PINGREQ = Buffer.from([0xc0, 0x00]);

// The MQTT variable-length "remaining length" of n bytes.
function remainingLength(n) {
  const out = [];
  do {
    let d = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) d |= 0x80;
    out.push(d);
  } while (n > 0);
  return out;
}

// fixed header byte + remaining length + body parts (Buffers) as one Buffer.
function packet(first, parts) {
  const len = parts.reduce((s, p) => s + p.length, 0);
  return Buffer.concat([Buffer.from([first, ...remainingLength(len)]), ...parts]);
}

function str(s) {
  const b = Buffer.from(s, 'utf8');
  const out = Buffer.allocUnsafe(2 + b.length);
  out.writeUInt16BE(b.length, 0);
  b.copy(out, 2);
  return out;
}

// CONNECT, MQTT 3.1.1, clean session; user and password optional.
export function connectPacket(clientId, { user = null, password = null, keepalive = 60 } = {}) {
  let flags = 0x02;
  if (user !== null) flags |= 0x80;
  if (password !== null) flags |= 0x40;
  const vh = Buffer.from([0, 4, 0x4d, 0x51, 0x54, 0x54, 4, flags, keepalive >> 8, keepalive & 0xff]);
  const parts = [vh, str(clientId)];
  if (user !== null) parts.push(str(user));
  if (password !== null) parts.push(str(password));
  return packet(0x10, parts);
}

// SUBSCRIBE to one filter at `qos`, packet id `id`.
export function subscribePacket(id, filter, qos = 0) {
  return packet(0x82, [Buffer.from([id >> 8, id & 0xff]), str(filter), Buffer.from([qos])]);
}

// PUBLISH of `payload` (a latin1/ASCII string) to the topic whose length-
// prefixed form is `topic` (from topicBytes()), QoS 0 or 1 (then `id`).
export function publishPacket(topic, payload, qos = 0, id = 0) {
  const plen = payload.length;
  const rest = topic.length + (qos > 0 ? 2 : 0) + plen;
  const rl = remainingLength(rest);
  const out = Buffer.allocUnsafe(1 + rl.length + rest);
  let o = 0;
  out[o++] = 0x30 | (qos << 1);
  for (const d of rl) out[o++] = d;
  o += topic.copy(out, o);
  if (qos > 0) {
    out[o++] = id >> 8;
    out[o++] = id & 0xff;
  }
  out.write(payload, o, 'latin1');
  return out;
}

// A topic name in its length-prefixed wire form, built once per device.
export function topicBytes(topic) {
  return str(topic);
}

// Splits a byte stream into packets: push(chunk) calls
// onPacket(type, flags, body) for every complete one (body is a view into
// the buffer it arrived in: copy what must outlive the call).
export class MqttReader {
  constructor(onPacket) {
    this.onPacket = onPacket;
    this.pending = null;
  }

  push(chunk) {
    let buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = null;
    let o = 0;
    for (;;) {
      if (buf.length - o < 2) break;
      let len = 0;
      let mul = 1;
      let i = o + 1;
      let complete = false;
      for (; i < buf.length && i < o + 5; i++) {
        len += (buf[i] & 0x7f) * mul;
        mul *= 128;
        if ((buf[i] & 0x80) === 0) {
          complete = true;
          i++;
          break;
        }
      }
      if (!complete) {
        if (i >= o + 5) throw new Error('malformed remaining length');
        break;
      }
      if (buf.length - i < len) break;
      this.onPacket(buf[o] >> 4, buf[o] & 0x0f, buf.subarray(i, i + len));
      o = i + len;
    }
    if (o < buf.length) this.pending = Buffer.from(buf.subarray(o));
  }
}

// A received PUBLISH body: {topic, payload} as latin1 strings (the bench's
// topics and payloads are ASCII).
export function parsePublish(flags, body) {
  const tl = body.readUInt16BE(0);
  const topic = body.latin1Slice(2, 2 + tl);
  const qos = (flags >> 1) & 3;
  const start = 2 + tl + (qos > 0 ? 2 : 0);
  return { topic, payload: body.latin1Slice(start, body.length), qos, id: qos > 0 ? body.readUInt16BE(2 + tl) : 0 };
}

export function pubackPacket(id) {
  return Buffer.from([0x40, 0x02, id >> 8, id & 0xff]);
}
