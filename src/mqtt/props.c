/*
 * props.c — MQTT 5.0 properties: the identifier table (type and the packets
 * each may appear in), bounded decoding with duplicate and value checks, and
 * the builder used for outgoing packets.
 */
#include <string.h>

#include "mqtt/mqtt_int.h"

enum ptype {
    P_NONE,
    P_BYTE,
    P_U16,
    P_U32,
    P_VARINT,
    P_STR,
    P_BIN,
    P_PAIR
};

#define PK(t) (1u << (t))
#define P_WILL PK(MQTT_WILL_PROPS)
#define P_ACKS (PK(MQTT_PUBACK) | PK(MQTT_PUBREC) | PK(MQTT_PUBREL) | PK(MQTT_PUBCOMP))

static const struct {
    uint8_t type;
    uint16_t packets; /* bit per mqtt_type, bit 0 = Will properties */
} prop_table[0x2B] = {
    [MQTT_PROP_PAYLOAD_FORMAT] = {P_BYTE, PK(MQTT_PUBLISH) | P_WILL},
    [MQTT_PROP_MESSAGE_EXPIRY] = {P_U32, PK(MQTT_PUBLISH) | P_WILL},
    [MQTT_PROP_CONTENT_TYPE] = {P_STR, PK(MQTT_PUBLISH) | P_WILL},
    [MQTT_PROP_RESPONSE_TOPIC] = {P_STR, PK(MQTT_PUBLISH) | P_WILL},
    [MQTT_PROP_CORRELATION_DATA] = {P_BIN, PK(MQTT_PUBLISH) | P_WILL},
    [MQTT_PROP_SUBSCRIPTION_ID] = {P_VARINT, PK(MQTT_PUBLISH) | PK(MQTT_SUBSCRIBE)},
    [MQTT_PROP_SESSION_EXPIRY] = {P_U32, PK(MQTT_CONNECT) | PK(MQTT_CONNACK) | PK(MQTT_DISCONNECT)},
    [MQTT_PROP_ASSIGNED_CLIENT_ID] = {P_STR, PK(MQTT_CONNACK)},
    [MQTT_PROP_SERVER_KEEP_ALIVE] = {P_U16, PK(MQTT_CONNACK)},
    [MQTT_PROP_AUTH_METHOD] = {P_STR, PK(MQTT_CONNECT) | PK(MQTT_CONNACK) | PK(MQTT_AUTH)},
    [MQTT_PROP_AUTH_DATA] = {P_BIN, PK(MQTT_CONNECT) | PK(MQTT_CONNACK) | PK(MQTT_AUTH)},
    [MQTT_PROP_REQUEST_PROBLEM_INFO] = {P_BYTE, PK(MQTT_CONNECT)},
    [MQTT_PROP_WILL_DELAY] = {P_U32, P_WILL},
    [MQTT_PROP_REQUEST_RESPONSE_INFO] = {P_BYTE, PK(MQTT_CONNECT)},
    [MQTT_PROP_RESPONSE_INFO] = {P_STR, PK(MQTT_CONNACK)},
    [MQTT_PROP_SERVER_REFERENCE] = {P_STR, PK(MQTT_CONNACK) | PK(MQTT_DISCONNECT)},
    [MQTT_PROP_REASON_STRING] = {P_STR, PK(MQTT_CONNACK) | P_ACKS | PK(MQTT_SUBACK) |
                                            PK(MQTT_UNSUBACK) | PK(MQTT_DISCONNECT) |
                                            PK(MQTT_AUTH)},
    [MQTT_PROP_RECEIVE_MAXIMUM] = {P_U16, PK(MQTT_CONNECT) | PK(MQTT_CONNACK)},
    [MQTT_PROP_TOPIC_ALIAS_MAXIMUM] = {P_U16, PK(MQTT_CONNECT) | PK(MQTT_CONNACK)},
    [MQTT_PROP_TOPIC_ALIAS] = {P_U16, PK(MQTT_PUBLISH)},
    [MQTT_PROP_MAXIMUM_QOS] = {P_BYTE, PK(MQTT_CONNACK)},
    [MQTT_PROP_RETAIN_AVAILABLE] = {P_BYTE, PK(MQTT_CONNACK)},
    [MQTT_PROP_USER_PROPERTY] = {P_PAIR, 0xFFFF},
    [MQTT_PROP_MAXIMUM_PACKET_SIZE] = {P_U32, PK(MQTT_CONNECT) | PK(MQTT_CONNACK)},
    [MQTT_PROP_WILDCARD_SUB_AVAILABLE] = {P_BYTE, PK(MQTT_CONNACK)},
    [MQTT_PROP_SUB_ID_AVAILABLE] = {P_BYTE, PK(MQTT_CONNACK)},
    [MQTT_PROP_SHARED_SUB_AVAILABLE] = {P_BYTE, PK(MQTT_CONNACK)},
};

bool rd_u8(rd *r, uint8_t *v)
{
    if (rd_left(r) < 1)
        return false;
    *v = r->p[r->pos++];
    return true;
}

bool rd_u16(rd *r, uint16_t *v)
{
    if (rd_left(r) < 2)
        return false;
    *v = (uint16_t)(r->p[r->pos] << 8 | r->p[r->pos + 1]);
    r->pos += 2;
    return true;
}

bool rd_u32(rd *r, uint32_t *v)
{
    if (rd_left(r) < 4)
        return false;
    const uint8_t *p = r->p + r->pos;
    *v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    r->pos += 4;
    return true;
}

bool rd_varint(rd *r, uint32_t *v)
{
    uint32_t value = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t b;
        if (!rd_u8(r, &b))
            return false;
        value |= (uint32_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            /* Reject non-minimal encodings (a trailing zero byte). */
            if (i > 0 && b == 0)
                return false;
            *v = value;
            return true;
        }
    }
    return false;
}

bool rd_bin(rd *r, mqtt_bytes *out)
{
    uint16_t n;
    if (!rd_u16(r, &n) || rd_left(r) < n)
        return false;
    out->p = r->p + r->pos;
    out->len = n;
    r->pos += n;
    return true;
}

const char mqtt_err_prop_not_allowed[] = "property not allowed in this packet";
const char mqtt_err_prop_duplicate[] = "duplicate property";

static drv_err fail(mqtt_decode_error *err, uint8_t reason, const char *what)
{
    err->reason = reason;
    err->what = what;
    return reason == MQTT_RC_MALFORMED_PACKET ? DRV_MALFORMED : DRV_PROTOCOL;
}

/* Read one property value of type t into *prop. false: truncated or bad UTF-8. */
static bool read_value(rd *r, uint8_t t, mqtt_prop *prop, bool *bad_utf8)
{
    uint8_t b;
    uint16_t s;
    switch (t) {
    case P_BYTE:
        if (!rd_u8(r, &b))
            return false;
        prop->num = b;
        return true;
    case P_U16:
        if (!rd_u16(r, &s))
            return false;
        prop->num = s;
        return true;
    case P_U32:
        return rd_u32(r, &prop->num);
    case P_VARINT:
        return rd_varint(r, &prop->num);
    case P_STR:
    case P_BIN:
        if (!rd_bin(r, &prop->key))
            return false;
        if (t == P_STR && !mqtt_utf8_valid(prop->key.p, prop->key.len))
            *bad_utf8 = true;
        return true;
    case P_PAIR:
        if (!rd_bin(r, &prop->key) || !rd_bin(r, &prop->value))
            return false;
        if (!mqtt_utf8_valid(prop->key.p, prop->key.len) ||
            !mqtt_utf8_valid(prop->value.p, prop->value.len))
            *bad_utf8 = true;
        return true;
    }
    return false;
}

bool mqtt_props_next(const mqtt_bytes *raw, uint32_t *pos, mqtt_prop *out)
{
    rd r = {raw->p, raw->len, *pos};
    uint32_t id;
    if (rd_left(&r) == 0 || !rd_varint(&r, &id) || id >= 0x2B || prop_table[id].type == P_NONE)
        return false;
    uint32_t start = *pos;
    bool bad = false;
    memset(out, 0, sizeof(*out));
    out->id = (uint8_t)id;
    if (!read_value(&r, prop_table[id].type, out, &bad))
        return false;
    out->raw.p = raw->p + start;
    out->raw.len = r.pos - start;
    *pos = r.pos;
    return true;
}

drv_err mqtt_props_decode(rd *r, int type, mqtt_props *props, mqtt_decode_error *err)
{
    memset(props, 0, sizeof(*props));
    uint32_t block;
    if (!rd_varint(r, &block) || rd_left(r) < block)
        return fail(err, MQTT_RC_MALFORMED_PACKET, "bad property length");
    rd pr = {r->p + r->pos, block, 0};
    props->raw.p = pr.p;
    props->raw.len = block;
    r->pos += block;

    while (rd_left(&pr) > 0) {
        uint32_t id;
        if (!rd_varint(&pr, &id) || id >= 0x2B || prop_table[id].type == P_NONE)
            return fail(err, MQTT_RC_MALFORMED_PACKET, "unknown property");
        mqtt_prop v = {0};
        bool bad_utf8 = false;
        if (!read_value(&pr, prop_table[id].type, &v, &bad_utf8))
            return fail(err, MQTT_RC_MALFORMED_PACKET, "truncated property");
        if (bad_utf8)
            return fail(err, MQTT_RC_MALFORMED_PACKET, "property is not valid UTF-8");
        if (!(prop_table[id].packets & PK(type)))
            return fail(err, MQTT_RC_PROTOCOL_ERROR, mqtt_err_prop_not_allowed);
        if (id == MQTT_PROP_USER_PROPERTY) {
            props->user_property_count++;
            continue;
        }
        if (mqtt_props_has(props, (int)id))
            return fail(err, MQTT_RC_PROTOCOL_ERROR, mqtt_err_prop_duplicate);
        props->present |= 1ull << id;
        switch (id) {
        case MQTT_PROP_PAYLOAD_FORMAT:
            if (v.num > 1)
                return fail(err, MQTT_RC_PROTOCOL_ERROR, "bad payload format indicator");
            props->payload_format = (uint8_t)v.num;
            break;
        case MQTT_PROP_MESSAGE_EXPIRY:
            props->message_expiry = v.num;
            break;
        case MQTT_PROP_CONTENT_TYPE:
            props->content_type = v.key;
            break;
        case MQTT_PROP_RESPONSE_TOPIC:
            if (!mqtt_topic_name_valid(v.key.p, v.key.len))
                return fail(err, MQTT_RC_PROTOCOL_ERROR, "bad response topic");
            props->response_topic = v.key;
            break;
        case MQTT_PROP_CORRELATION_DATA:
            props->correlation_data = v.key;
            break;
        case MQTT_PROP_SUBSCRIPTION_ID:
            if (v.num == 0)
                return fail(err, MQTT_RC_PROTOCOL_ERROR, "subscription identifier 0");
            props->subscription_id = v.num;
            break;
        case MQTT_PROP_SESSION_EXPIRY:
            props->session_expiry = v.num;
            break;
        case MQTT_PROP_ASSIGNED_CLIENT_ID:
            props->assigned_client_id = v.key;
            break;
        case MQTT_PROP_SERVER_KEEP_ALIVE:
            props->server_keep_alive = (uint16_t)v.num;
            break;
        case MQTT_PROP_AUTH_METHOD:
            props->auth_method = v.key;
            break;
        case MQTT_PROP_AUTH_DATA:
            props->auth_data = v.key;
            break;
        case MQTT_PROP_REQUEST_PROBLEM_INFO:
            if (v.num > 1)
                return fail(err, MQTT_RC_PROTOCOL_ERROR, "bad request problem information");
            props->request_problem_info = (uint8_t)v.num;
            break;
        case MQTT_PROP_WILL_DELAY:
            props->will_delay = v.num;
            break;
        case MQTT_PROP_REQUEST_RESPONSE_INFO:
            if (v.num > 1)
                return fail(err, MQTT_RC_PROTOCOL_ERROR, "bad request response information");
            props->request_response_info = (uint8_t)v.num;
            break;
        case MQTT_PROP_RESPONSE_INFO:
            props->response_info = v.key;
            break;
        case MQTT_PROP_SERVER_REFERENCE:
            props->server_reference = v.key;
            break;
        case MQTT_PROP_REASON_STRING:
            props->reason_string = v.key;
            break;
        case MQTT_PROP_RECEIVE_MAXIMUM:
            if (v.num == 0)
                return fail(err, MQTT_RC_PROTOCOL_ERROR, "receive maximum 0");
            props->receive_maximum = (uint16_t)v.num;
            break;
        case MQTT_PROP_TOPIC_ALIAS_MAXIMUM:
            props->topic_alias_maximum = (uint16_t)v.num;
            break;
        case MQTT_PROP_TOPIC_ALIAS:
            props->topic_alias = (uint16_t)v.num;
            break;
        case MQTT_PROP_MAXIMUM_QOS:
            if (v.num > 1)
                return fail(err, MQTT_RC_PROTOCOL_ERROR, "bad maximum QoS");
            props->maximum_qos = (uint8_t)v.num;
            break;
        case MQTT_PROP_RETAIN_AVAILABLE:
        case MQTT_PROP_WILDCARD_SUB_AVAILABLE:
        case MQTT_PROP_SUB_ID_AVAILABLE:
        case MQTT_PROP_SHARED_SUB_AVAILABLE:
            if (v.num > 1)
                return fail(err, MQTT_RC_PROTOCOL_ERROR, "bad availability flag");
            if (id == MQTT_PROP_RETAIN_AVAILABLE)
                props->retain_available = (uint8_t)v.num;
            else if (id == MQTT_PROP_WILDCARD_SUB_AVAILABLE)
                props->wildcard_sub_available = (uint8_t)v.num;
            else if (id == MQTT_PROP_SUB_ID_AVAILABLE)
                props->sub_id_available = (uint8_t)v.num;
            else
                props->shared_sub_available = (uint8_t)v.num;
            break;
        case MQTT_PROP_MAXIMUM_PACKET_SIZE:
            if (v.num == 0)
                return fail(err, MQTT_RC_PROTOCOL_ERROR, "maximum packet size 0");
            props->maximum_packet_size = v.num;
            break;
        }
    }
    if (mqtt_props_has(props, MQTT_PROP_AUTH_DATA) && !mqtt_props_has(props, MQTT_PROP_AUTH_METHOD))
        return fail(err, MQTT_RC_PROTOCOL_ERROR, "authentication data without method");
    return DRV_OK;
}

/* -- builder ------------------------------------------------------------------ */

void mqtt_pb_init(mqtt_prop_builder *pb)
{
    pb->len = 0;
    pb->extra = NULL;
    pb->extra_len = 0;
    pb->overflow = false;
}

static uint8_t *pb_room(mqtt_prop_builder *pb, uint32_t n)
{
    if (pb->len + n > sizeof(pb->data)) {
        pb->overflow = true;
        return NULL;
    }
    uint8_t *p = pb->data + pb->len;
    pb->len += n;
    return p;
}

void mqtt_pb_byte(mqtt_prop_builder *pb, uint8_t id, uint8_t v)
{
    uint8_t *p = pb_room(pb, 2);
    if (p) {
        p[0] = id;
        p[1] = v;
    }
}

void mqtt_pb_u16(mqtt_prop_builder *pb, uint8_t id, uint16_t v)
{
    uint8_t *p = pb_room(pb, 3);
    if (p) {
        p[0] = id;
        p[1] = (uint8_t)(v >> 8);
        p[2] = (uint8_t)v;
    }
}

void mqtt_pb_u32(mqtt_prop_builder *pb, uint8_t id, uint32_t v)
{
    uint8_t *p = pb_room(pb, 5);
    if (p) {
        p[0] = id;
        p[1] = (uint8_t)(v >> 24);
        p[2] = (uint8_t)(v >> 16);
        p[3] = (uint8_t)(v >> 8);
        p[4] = (uint8_t)v;
    }
}

void mqtt_pb_varint(mqtt_prop_builder *pb, uint8_t id, uint32_t v)
{
    uint8_t *p = pb_room(pb, 1 + mqtt_varint_size(v));
    if (p) {
        p[0] = id;
        mqtt_varint_write(p + 1, v);
    }
}

static void put_bin(uint8_t *p, const void *s, uint32_t len)
{
    p[0] = (uint8_t)(len >> 8);
    p[1] = (uint8_t)len;
    if (len)
        memcpy(p + 2, s, len);
}

void mqtt_pb_str(mqtt_prop_builder *pb, uint8_t id, const void *s, uint32_t len)
{
    if (len > 0xFFFF) {
        pb->overflow = true;
        return;
    }
    uint8_t *p = pb_room(pb, 3 + len);
    if (p) {
        p[0] = id;
        put_bin(p + 1, s, len);
    }
}

void mqtt_pb_pair(mqtt_prop_builder *pb, uint8_t id, const void *k, uint32_t klen, const void *v,
                  uint32_t vlen)
{
    if (klen > 0xFFFF || vlen > 0xFFFF) {
        pb->overflow = true;
        return;
    }
    uint8_t *p = pb_room(pb, 5 + klen + vlen);
    if (p) {
        p[0] = id;
        put_bin(p + 1, k, klen);
        put_bin(p + 3 + klen, v, vlen);
    }
}
