/*
 * encode.c — encoders that append one complete packet to a drv_buf.
 *
 * Each encoder computes the remaining length first, reserves the exact
 * space once and writes in place: no temporary buffers.
 */
#include <stdint.h>
#include <string.h>

#include "mqtt/mqtt_int.h"

unsigned mqtt_varint_size(uint32_t v)
{
    return v < 128 ? 1 : v < 16384 ? 2 : v < 2097152 ? 3 : 4;
}

unsigned mqtt_varint_write(uint8_t *p, uint32_t v)
{
    unsigned n = 0;
    do {
        uint8_t b = v & 0x7F;
        v >>= 7;
        p[n++] = (uint8_t)(v ? b | 0x80 : b);
    } while (v);
    return n;
}

/* A write cursor over space already reserved in the buffer. */
typedef struct wr {
    uint8_t *p;
} wr;

static inline void w_u8(wr *w, uint8_t v)
{
    *w->p++ = v;
}
static inline void w_u16(wr *w, uint16_t v)
{
    w->p[0] = (uint8_t)(v >> 8);
    w->p[1] = (uint8_t)v;
    w->p += 2;
}
static inline void w_bytes(wr *w, const void *s, size_t n)
{
    if (n)
        memcpy(w->p, s, n);
    w->p += n;
}
static inline void w_str(wr *w, const void *s, uint16_t n)
{
    w_u16(w, n);
    w_bytes(w, s, n);
}
static inline void w_varint(wr *w, uint32_t v)
{
    w->p += mqtt_varint_write(w->p, v);
}

static uint32_t props_wire_size(const mqtt_prop_builder *pb)
{
    uint32_t n = pb ? mqtt_pb_size(pb) : 0;
    return mqtt_varint_size(n) + n;
}

static void w_props(wr *w, const mqtt_prop_builder *pb)
{
    uint32_t n = pb ? mqtt_pb_size(pb) : 0;
    w_varint(w, n);
    if (pb) {
        w_bytes(w, pb->data, pb->len);
        w_bytes(w, pb->extra, pb->extra_len);
    }
}

/* Reserve header + remaining bytes and write the fixed header. */
static drv_err begin(drv_buf *out, uint8_t first, uint32_t remaining, wr *w)
{
    if (remaining > 268435455u)
        return DRV_TOOBIG;
    drv_err err;
    size_t total = 1 + mqtt_varint_size(remaining) + remaining;
    uint8_t *p = drv_buf_reserve(out, total, &err);
    if (!p)
        return err;
    out->len += total;
    w->p = p;
    w_u8(w, first);
    w_varint(w, remaining);
    return DRV_OK;
}

/* Remaining length in 64 bits, so oversized inputs fail the cap instead of wrapping. */
static uint64_t publish_remaining(uint8_t version, const mqtt_publish_out *p)
{
    uint64_t n = 2u + (uint64_t)p->topic_len + p->payload_len;
    if (p->qos > 0)
        n += 2;
    if (version == MQTT_V5)
        n += props_wire_size(p->props);
    return n;
}

size_t mqtt_publish_size(uint8_t version, const mqtt_publish_out *p)
{
    uint64_t rem = publish_remaining(version, p);
    return rem > 268435455u ? SIZE_MAX : 1 + mqtt_varint_size((uint32_t)rem) + (size_t)rem;
}

drv_err mqtt_encode_publish(drv_buf *out, uint8_t version, const mqtt_publish_out *p)
{
    wr w = {NULL};
    uint8_t first =
        (uint8_t)(MQTT_PUBLISH << 4 | (p->dup ? 8 : 0) | p->qos << 1 | (p->retain ? 1 : 0));
    uint64_t rem = publish_remaining(version, p);
    if (rem > 268435455u)
        return DRV_TOOBIG;
    drv_err err = begin(out, first, (uint32_t)rem, &w);
    if (err)
        return err;
    w_str(&w, p->topic, p->topic_len);
    if (p->qos > 0)
        w_u16(&w, p->packet_id);
    if (version == MQTT_V5)
        w_props(&w, p->props);
    w_bytes(&w, p->payload, p->payload_len);
    return DRV_OK;
}

drv_err mqtt_encode_connack(drv_buf *out, uint8_t version, bool session_present, uint8_t reason,
                            const mqtt_prop_builder *props)
{
    wr w = {NULL};
    drv_err err;
    if (version == MQTT_V5) {
        if ((err = begin(out, MQTT_CONNACK << 4, 2 + props_wire_size(props), &w)))
            return err;
        w_u8(&w, session_present);
        w_u8(&w, reason);
        w_props(&w, props);
        return DRV_OK;
    }
    /* 3.1/3.1.1 return codes (§3.2.2.3). */
    uint8_t rc;
    switch (reason) {
    case MQTT_RC_SUCCESS:
        rc = 0;
        break;
    case MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION:
        rc = 1;
        break;
    case MQTT_RC_CLIENT_ID_NOT_VALID:
        rc = 2;
        break;
    case MQTT_RC_SERVER_UNAVAILABLE:
    case MQTT_RC_SERVER_BUSY:
    case MQTT_RC_SERVER_SHUTTING_DOWN:
    case MQTT_RC_QUOTA_EXCEEDED:
    case MQTT_RC_CONNECTION_RATE_EXCEEDED:
        rc = 3;
        break;
    case MQTT_RC_BAD_USERNAME_OR_PASSWORD:
        rc = 4;
        break;
    default:
        rc = 5;
        break;
    }
    if ((err = begin(out, MQTT_CONNACK << 4, 2, &w)))
        return err;
    w_u8(&w, version == MQTT_V31 ? 0 : session_present); /* 3.1 has no such flag */
    w_u8(&w, rc);
    return DRV_OK;
}

drv_err mqtt_encode_ack(drv_buf *out, uint8_t version, mqtt_type type, uint16_t packet_id,
                        uint8_t reason, const mqtt_prop_builder *props)
{
    wr w = {NULL};
    drv_err err;
    uint8_t first = (uint8_t)(type << 4 | (type == MQTT_PUBREL ? 2 : 0));
    bool has_props = props && mqtt_pb_size(props) > 0;
    if (version < MQTT_V5 || (reason == 0 && !has_props)) {
        if ((err = begin(out, first, 2, &w)))
            return err;
        w_u16(&w, packet_id);
        return DRV_OK;
    }
    if (!has_props) {
        if ((err = begin(out, first, 3, &w)))
            return err;
        w_u16(&w, packet_id);
        w_u8(&w, reason);
        return DRV_OK;
    }
    if ((err = begin(out, first, 3 + props_wire_size(props), &w)))
        return err;
    w_u16(&w, packet_id);
    w_u8(&w, reason);
    w_props(&w, props);
    return DRV_OK;
}

drv_err mqtt_encode_suback(drv_buf *out, uint8_t version, mqtt_type type, uint16_t packet_id,
                           const uint8_t *reasons, uint32_t count, const mqtt_prop_builder *props)
{
    wr w = {NULL};
    drv_err err;
    bool v5 = version == MQTT_V5;
    if (type == MQTT_UNSUBACK && !v5)
        count = 0;
    uint32_t rem = 2 + count + (v5 ? props_wire_size(props) : 0);
    if ((err = begin(out, (uint8_t)(type << 4), rem, &w)))
        return err;
    w_u16(&w, packet_id);
    if (v5)
        w_props(&w, props);
    w_bytes(&w, reasons, count);
    return DRV_OK;
}

drv_err mqtt_encode_simple(drv_buf *out, mqtt_type type)
{
    wr w = {NULL};
    return begin(out, (uint8_t)(type << 4), 0, &w);
}

drv_err mqtt_encode_disconnect(drv_buf *out, uint8_t version, mqtt_type type, uint8_t reason,
                               const mqtt_prop_builder *props)
{
    wr w = {NULL};
    drv_err err;
    if (version < MQTT_V5)
        return begin(out, (uint8_t)(type << 4), 0, &w);
    bool has_props = props && mqtt_pb_size(props) > 0;
    if (!has_props) {
        /* Reason only: the property length may be omitted (§3.14.2.2). */
        if ((err = begin(out, (uint8_t)(type << 4), 1, &w)))
            return err;
        w_u8(&w, reason);
        return DRV_OK;
    }
    if ((err = begin(out, (uint8_t)(type << 4), 1 + props_wire_size(props), &w)))
        return err;
    w_u8(&w, reason);
    w_props(&w, props);
    return DRV_OK;
}

drv_err mqtt_encode_connect(drv_buf *out, const mqtt_connect_out *c)
{
    wr w = {NULL};
    drv_err err;
    bool v31 = c->version == MQTT_V31;
    size_t id_len = strlen(c->client_id);
    size_t user_len = c->username ? strlen(c->username) : 0;
    size_t pass_len = c->password ? strlen(c->password) : 0;
    if (id_len > 0xFFFF || user_len > 0xFFFF || pass_len > 0xFFFF)
        return DRV_TOOBIG;
    uint32_t rem = (v31 ? 8 : 6) + 1 + 1 + 2 + 2 + (uint32_t)id_len;
    if (c->version == MQTT_V5)
        rem += props_wire_size(c->props);
    if (c->username)
        rem += 2 + (uint32_t)user_len;
    if (c->password)
        rem += 2 + (uint32_t)pass_len;
    if ((err = begin(out, MQTT_CONNECT << 4, rem, &w)))
        return err;
    if (v31)
        w_str(&w, "MQIsdp", 6);
    else
        w_str(&w, "MQTT", 4);
    w_u8(&w, c->version);
    w_u8(&w,
         (uint8_t)((c->clean_start ? 2 : 0) | (c->password ? 0x40 : 0) | (c->username ? 0x80 : 0)));
    w_u16(&w, c->keep_alive);
    if (c->version == MQTT_V5)
        w_props(&w, c->props);
    w_str(&w, c->client_id, (uint16_t)id_len);
    if (c->username)
        w_str(&w, c->username, (uint16_t)user_len);
    if (c->password)
        w_str(&w, c->password, (uint16_t)pass_len);
    return DRV_OK;
}

drv_err mqtt_encode_subscribe(drv_buf *out, uint8_t version, uint16_t packet_id, const char *filter,
                              uint8_t options)
{
    wr w = {NULL};
    drv_err err;
    size_t flen = strlen(filter);
    if (flen > 0xFFFF)
        return DRV_TOOBIG;
    uint32_t rem = 2 + 2 + (uint32_t)flen + 1 + (version == MQTT_V5 ? 1 : 0);
    if ((err = begin(out, MQTT_SUBSCRIBE << 4 | 2, rem, &w)))
        return err;
    w_u16(&w, packet_id);
    if (version == MQTT_V5)
        w_u8(&w, 0);
    w_str(&w, filter, (uint16_t)flen);
    w_u8(&w, options);
    return DRV_OK;
}
