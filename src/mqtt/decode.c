/*
 * decode.c — bounded decoding of every MQTT packet type (§2, §3).
 *
 * One function per packet type; mqtt_decode checks the fixed-header flags
 * and the direction first, then dispatches.  Every error names the MQTT 5.0
 * reason code the receiver must send: 0x81 for bytes that cannot be parsed,
 * 0x82 for well-formed bytes that break a protocol rule.
 */
#include <string.h>

#include "mqtt/mqtt_int.h"

static drv_err fail(mqtt_decode_error *err, uint8_t reason, const char *what)
{
    err->reason = reason;
    err->what = what;
    return reason == MQTT_RC_MALFORMED_PACKET ? DRV_MALFORMED : DRV_PROTOCOL;
}

#define MALFORMED(what) fail(err, MQTT_RC_MALFORMED_PACKET, what)
#define PROTOCOL(what) fail(err, MQTT_RC_PROTOCOL_ERROR, what)

drv_err mqtt_parse_fixed_header(const uint8_t *buf, size_t len, uint8_t *first, uint32_t *remaining,
                                size_t *header_len)
{
    if (len < 2)
        return DRV_AGAIN;
    uint32_t value = 0;
    for (size_t i = 1; i <= 4; i++) {
        if (i >= len)
            return DRV_AGAIN;
        value |= (uint32_t)(buf[i] & 0x7F) << (7 * (i - 1));
        if (!(buf[i] & 0x80)) {
            *first = buf[0];
            *remaining = value;
            *header_len = i + 1;
            return DRV_OK;
        }
    }
    return DRV_MALFORMED;
}

static drv_err decode_connect(rd *r, mqtt_connect *c, mqtt_decode_error *err)
{
    uint8_t flags;
    memset(c, 0, sizeof(*c));
    if (!rd_bin(r, &c->protocol_name) || !rd_u8(r, &c->protocol_version))
        return MALFORMED("truncated CONNECT");
    bool is_mqtt = c->protocol_name.len == 4 && memcmp(c->protocol_name.p, "MQTT", 4) == 0;
    bool is_mqisdp = c->protocol_name.len == 6 && memcmp(c->protocol_name.p, "MQIsdp", 6) == 0;
    if (!is_mqtt && !is_mqisdp)
        return PROTOCOL("unknown protocol name");
    if ((is_mqisdp && c->protocol_version != MQTT_V31) ||
        (is_mqtt && c->protocol_version != MQTT_V311 && c->protocol_version != MQTT_V5)) {
        err->reason = MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION;
        err->what = "unsupported protocol version";
        return DRV_UNSUPPORTED;
    }
    const uint8_t v = c->protocol_version;
    if (!rd_u8(r, &flags) || !rd_u16(r, &c->keep_alive))
        return MALFORMED("truncated CONNECT");
    if ((flags & 0x01) && v != MQTT_V31)
        return MALFORMED("reserved CONNECT flag set");
    c->clean_start = flags & 0x02;
    c->will_flag = flags & 0x04;
    c->will_qos = (flags >> 3) & 0x03;
    c->will_retain = flags & 0x20;
    c->has_password = flags & 0x40;
    c->has_username = flags & 0x80;
    if (c->will_qos == 3)
        return MALFORMED("will QoS 3");
    if (!c->will_flag && (c->will_qos || c->will_retain))
        return MALFORMED("will QoS/retain without will flag");
    if (v < MQTT_V5 && c->has_password && !c->has_username)
        return MALFORMED("password without user name");
    if (v == MQTT_V5) {
        drv_err e = mqtt_props_decode(r, MQTT_CONNECT, &c->props, err);
        if (e)
            return e;
    }
    if (!rd_bin(r, &c->client_id))
        return MALFORMED("truncated client identifier");
    if (!mqtt_utf8_valid(c->client_id.p, c->client_id.len))
        return MALFORMED("client identifier is not valid UTF-8");
    if (c->will_flag) {
        if (v == MQTT_V5) {
            drv_err e = mqtt_props_decode(r, MQTT_WILL_PROPS, &c->will_props, err);
            if (e)
                return e;
        }
        if (!rd_bin(r, &c->will_topic) || !rd_bin(r, &c->will_payload))
            return MALFORMED("truncated will");
        if (!mqtt_topic_name_valid(c->will_topic.p, c->will_topic.len))
            return MALFORMED("invalid will topic");
        if (c->will_props.payload_format == 1 &&
            !mqtt_utf8_valid(c->will_payload.p, c->will_payload.len))
            return fail(err, MQTT_RC_PAYLOAD_FORMAT_INVALID, "will payload is not UTF-8");
    }
    if (c->has_username) {
        if (!rd_bin(r, &c->username))
            return MALFORMED("truncated user name");
        if (!mqtt_utf8_valid(c->username.p, c->username.len))
            return MALFORMED("user name is not valid UTF-8");
    }
    if (c->has_password && !rd_bin(r, &c->password))
        return MALFORMED("truncated password");
    if (rd_left(r) != 0)
        return MALFORMED("trailing bytes in CONNECT");
    return DRV_OK;
}

static drv_err decode_publish(rd *r, uint8_t flags, uint8_t v, mqtt_publish *p,
                              mqtt_decode_error *err)
{
    memset(p, 0, sizeof(*p));
    p->retain = flags & 0x01;
    p->qos = (flags >> 1) & 0x03;
    p->dup = flags & 0x08;
    if (p->qos == 3)
        return MALFORMED("PUBLISH QoS 3");
    if (p->qos == 0 && p->dup)
        return MALFORMED("DUP set on QoS 0 PUBLISH");
    if (!rd_bin(r, &p->topic))
        return MALFORMED("truncated topic");
    if (p->topic.len == 0 && v < MQTT_V5)
        return MALFORMED("empty topic");
    if (p->topic.len > 0 && !mqtt_utf8_valid(p->topic.p, p->topic.len))
        return MALFORMED("topic is not valid UTF-8");
    if (p->qos > 0) {
        if (!rd_u16(r, &p->packet_id))
            return MALFORMED("truncated packet identifier");
        if (p->packet_id == 0)
            return v == MQTT_V5 ? PROTOCOL("packet identifier 0")
                                : MALFORMED("packet identifier 0");
    }
    if (v == MQTT_V5) {
        drv_err e = mqtt_props_decode(r, MQTT_PUBLISH, &p->props, err);
        if (e)
            return e;
        if (p->topic.len == 0 && !mqtt_props_has(&p->props, MQTT_PROP_TOPIC_ALIAS))
            return MALFORMED("empty topic without topic alias");
    }
    if (p->topic.len > 0 &&
        (memchr(p->topic.p, '+', p->topic.len) || memchr(p->topic.p, '#', p->topic.len)))
        return MALFORMED("wildcard in topic name");
    p->payload.p = r->p + r->pos;
    p->payload.len = rd_left(r);
    r->pos = r->len;
    return DRV_OK;
}

static drv_err decode_ack(rd *r, mqtt_type type, uint8_t v, mqtt_ack *a, mqtt_decode_error *err)
{
    memset(a, 0, sizeof(*a));
    if (!rd_u16(r, &a->packet_id))
        return MALFORMED("truncated acknowledgement");
    if (a->packet_id == 0)
        return v == MQTT_V5 ? PROTOCOL("packet identifier 0") : MALFORMED("packet identifier 0");
    if (v < MQTT_V5) {
        if (rd_left(r) != 0)
            return MALFORMED("trailing bytes in acknowledgement");
        return DRV_OK;
    }
    if (rd_left(r) > 0) {
        rd_u8(r, &a->reason);
        if (rd_left(r) > 0) {
            drv_err e = mqtt_props_decode(r, (int)type, &a->props, err);
            if (e)
                return e;
        }
    }
    if (rd_left(r) != 0)
        return MALFORMED("trailing bytes in acknowledgement");
    bool ok;
    switch (type) {
    case MQTT_PUBACK:
    case MQTT_PUBREC:
        ok = a->reason == 0x00 || a->reason == 0x10 || a->reason == 0x80 || a->reason == 0x83 ||
             a->reason == 0x87 || a->reason == 0x90 || a->reason == 0x91 || a->reason == 0x97 ||
             a->reason == 0x99;
        break;
    default: /* PUBREL, PUBCOMP */
        ok = a->reason == 0x00 || a->reason == 0x92;
        break;
    }
    if (!ok)
        return PROTOCOL("invalid reason code");
    return DRV_OK;
}

static drv_err decode_subscribe(rd *r, bool is_subscribe, uint8_t v, mqtt_subscribe *s,
                                mqtt_decode_error *err)
{
    memset(s, 0, sizeof(*s));
    if (!rd_u16(r, &s->packet_id))
        return MALFORMED("truncated packet identifier");
    if (s->packet_id == 0)
        return MALFORMED("packet identifier 0");
    if (v == MQTT_V5) {
        drv_err e =
            mqtt_props_decode(r, is_subscribe ? MQTT_SUBSCRIBE : MQTT_UNSUBSCRIBE, &s->props, err);
        /* As Mosquitto: a bad property makes a SUBSCRIBE unparseable (0x81); only a
         * duplicate is a protocol error (0x82). */
        if (e && err->what != mqtt_err_prop_duplicate)
            return MALFORMED(err->what);
        if (e)
            return e;
    }
    s->entries.p = r->p + r->pos;
    s->entries.len = rd_left(r);
    while (rd_left(r) > 0) {
        mqtt_bytes f;
        if (!rd_bin(r, &f) || f.len == 0)
            return MALFORMED("bad topic filter");
        if (!mqtt_utf8_valid(f.p, f.len))
            return MALFORMED("topic filter is not valid UTF-8");
        if (is_subscribe) {
            uint8_t o;
            if (!rd_u8(r, &o))
                return MALFORMED("missing subscription options");
            if (v == MQTT_V5 ? ((o & 0xC0) || ((o >> 4) & 3) == 3 || (o & 3) == 3)
                             : ((o & 0xFC) || (o & 3) == 3))
                return MALFORMED("bad subscription options");
        }
        s->count++;
    }
    if (s->count == 0)
        return MALFORMED("no topic filters");
    return DRV_OK;
}

bool mqtt_sub_next(const mqtt_subscribe *s, bool is_subscribe, uint32_t *pos, mqtt_sub_entry *out)
{
    rd r = {s->entries.p, s->entries.len, *pos};
    if (rd_left(&r) == 0 || !rd_bin(&r, &out->filter))
        return false;
    uint8_t o = 0;
    if (is_subscribe && !rd_u8(&r, &o))
        return false;
    out->qos = o & 3;
    out->no_local = o & 0x04;
    out->retain_as_published = o & 0x08;
    out->retain_handling = (o >> 4) & 3;
    *pos = r.pos;
    return true;
}

static drv_err decode_disconnect(rd *r, mqtt_type type, uint8_t v, mqtt_disconnect *d,
                                 mqtt_decode_error *err)
{
    memset(d, 0, sizeof(*d));
    if (v < MQTT_V5) {
        if (rd_left(r) != 0)
            return MALFORMED("DISCONNECT with a body");
        return DRV_OK;
    }
    if (rd_left(r) > 0) {
        rd_u8(r, &d->reason);
        if (rd_left(r) > 0) {
            drv_err e = mqtt_props_decode(r, (int)type, &d->props, err);
            if (e)
                return e;
        }
    }
    if (rd_left(r) != 0)
        return MALFORMED("trailing bytes");
    return DRV_OK;
}

static drv_err decode_connack(rd *r, uint8_t v, mqtt_connack *c, mqtt_decode_error *err)
{
    uint8_t flags;
    memset(c, 0, sizeof(*c));
    if (!rd_u8(r, &flags) || !rd_u8(r, &c->reason))
        return MALFORMED("truncated CONNACK");
    if (flags & 0xFE)
        return MALFORMED("reserved CONNACK flags");
    c->session_present = flags & 1;
    if (v == MQTT_V5) {
        drv_err e = mqtt_props_decode(r, MQTT_CONNACK, &c->props, err);
        if (e)
            return e;
    }
    if (rd_left(r) != 0)
        return MALFORMED("trailing bytes in CONNACK");
    return DRV_OK;
}

static drv_err decode_suback(rd *r, mqtt_type type, uint8_t v, mqtt_suback *s,
                             mqtt_decode_error *err)
{
    memset(s, 0, sizeof(*s));
    if (!rd_u16(r, &s->packet_id))
        return MALFORMED("truncated acknowledgement");
    if (v == MQTT_V5) {
        drv_err e = mqtt_props_decode(r, (int)type, &s->props, err);
        if (e)
            return e;
    }
    s->reasons.p = r->p + r->pos;
    s->reasons.len = rd_left(r);
    r->pos = r->len;
    return DRV_OK;
}

/* Required low nibble of the first byte, or -1 for PUBLISH (flags carry data). */
static int required_flags(mqtt_type t)
{
    switch (t) {
    case MQTT_PUBLISH:
        return -1;
    case MQTT_PUBREL:
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE:
        return 2;
    default:
        return 0;
    }
}

drv_err mqtt_decode(uint8_t first, const uint8_t *body, uint32_t len, uint8_t version,
                    bool from_server, mqtt_packet *out, mqtt_decode_error *err)
{
    mqtt_type type = (mqtt_type)(first >> 4);
    uint8_t flags = first & 0x0F;
    rd r = {body, len, 0};
    out->type = type;
    out->flags = flags;
    err->reason = MQTT_RC_SUCCESS;
    err->what = NULL;

    if (type == 0)
        return PROTOCOL("reserved packet type 0");
    if (type == MQTT_AUTH && version != 0 && version < MQTT_V5)
        return MALFORMED("AUTH before MQTT 5.0");
    /* CONNACK and AUTH are judged by type before flags; CONNECT's flags wait
     * for its protocol level (MQTT 3.1 did not reserve them). */
    if (!from_server && type == MQTT_CONNACK)
        return PROTOCOL("CONNACK sent to a server");
    int req = required_flags(type);
    if (req >= 0 && flags != req && type != MQTT_CONNECT)
        return type == MQTT_AUTH ? PROTOCOL("bad fixed header flags")
                                 : MALFORMED("bad fixed header flags");
    if (version == 0 && type != MQTT_CONNECT)
        return PROTOCOL("first packet is not CONNECT");

    bool server_bound;
    switch (type) {
    case MQTT_CONNECT:
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE:
    case MQTT_PINGREQ:
        server_bound = true;
        break;
    case MQTT_CONNACK:
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
    case MQTT_PINGRESP:
        server_bound = false;
        break;
    default:
        server_bound = !from_server;
        break; /* both directions */
    }
    if (server_bound == from_server)
        return PROTOCOL("packet not allowed in this direction");

    switch (type) {
    case MQTT_CONNECT: {
        drv_err e = decode_connect(&r, &out->u.connect, err);
        if (e == DRV_OK && flags != 0 && out->u.connect.protocol_version != MQTT_V31)
            return MALFORMED("bad fixed header flags");
        return e;
    }
    case MQTT_CONNACK:
        return decode_connack(&r, version, &out->u.connack, err);
    case MQTT_PUBLISH:
        return decode_publish(&r, flags, version, &out->u.publish, err);
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        return decode_ack(&r, type, version, &out->u.ack, err);
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE:
        return decode_subscribe(&r, type == MQTT_SUBSCRIBE, version, &out->u.subscribe, err);
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        return decode_suback(&r, type, version, &out->u.suback, err);
    case MQTT_PINGREQ:
    case MQTT_PINGRESP:
        if (len != 0)
            return MALFORMED("PING with a body");
        return DRV_OK;
    case MQTT_DISCONNECT:
    case MQTT_AUTH:
        return decode_disconnect(&r, type, version, &out->u.disconnect, err);
    }
    return MALFORMED("reserved packet type");
}

const char *mqtt_reason_str(uint8_t rc)
{
    switch (rc) {
#define MQTT_RC_CASE(name, code, msg) \
    case code:                        \
        return msg;
        MQTT_REASONS(MQTT_RC_CASE)
#undef MQTT_RC_CASE
    }
    return "unknown reason";
}
