/* mqtt_int.h — private helpers shared by the codec's files. */
#ifndef DRV_MQTT_INT_H
#define DRV_MQTT_INT_H

#include "mqtt/mqtt.h"

/* A bounded reader over a packet body; every read checks the bound. */
typedef struct rd {
    const uint8_t *p;
    uint32_t len;
    uint32_t pos;
} rd;

static inline uint32_t rd_left(const rd *r)
{
    return r->len - r->pos;
}

bool rd_u8(rd *r, uint8_t *v);
bool rd_u16(rd *r, uint16_t *v);
bool rd_u32(rd *r, uint32_t *v);
bool rd_varint(rd *r, uint32_t *v);
/* Two-byte length then that many bytes. */
bool rd_bin(rd *r, mqtt_bytes *out);

/* The `what` of a decode error for a property the packet type may not carry. */
extern const char mqtt_err_prop_not_allowed[];
/* The `what` of a decode error for a property given twice. */
extern const char mqtt_err_prop_duplicate[];

/* Pseudo packet type used to validate Will properties. */
#define MQTT_WILL_PROPS 0

/*
 * Decode a property block (length varint then properties) for packet type
 * `type` into *props.  On failure fills *err and returns the drv_err.
 */
drv_err mqtt_props_decode(rd *r, int type, mqtt_props *props, mqtt_decode_error *err);

#endif
