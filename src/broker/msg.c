/*
 * msg.c — application messages: one allocation holding topic, forwardable
 * properties and payload, shared by refcount across every queue it is in.
 * The topic is the internal one: a namespaced publisher's "<ns>/<topic>" is
 * written into the same allocation, so the namespace costs no extra copy.
 */
#include <string.h>

#include "broker/broker_int.h"
#include "core/alloc.h"

msg *msg_new(const char *ns, uint32_t ns_len, const uint8_t *topic, uint16_t topic_len,
             const uint8_t *props, uint32_t props_len, const uint8_t *payload, uint32_t payload_len,
             uint8_t qos, bool retain, uint64_t expiry_at)
{
    size_t prefix = ns_len ? ns_len + 1 : 0;
    size_t full = prefix + topic_len;
    if (full > 65535)
        return NULL;
    msg *m = drv_malloc(sizeof(*m) + full + props_len + payload_len);
    if (!m)
        return NULL;
    memset(m, 0, sizeof(*m));
    m->refs = 1;
    m->qos = qos;
    m->retain = retain;
    m->expiry_at = expiry_at;
    m->topic_len = (uint16_t)full;
    m->props_len = props_len;
    m->payload_len = payload_len;
    m->topic = m->data;
    m->props = m->topic + full;
    m->payload = m->props + props_len;
    if (prefix) {
        memcpy(m->topic, ns, ns_len);
        m->topic[ns_len] = '/';
    }
    memcpy(m->topic + prefix, topic, topic_len);
    if (props_len)
        memcpy(m->props, props, props_len);
    if (payload_len)
        memcpy(m->payload, payload, payload_len);
    return m;
}

/* Properties a server forwards unchanged (§3.3.2.3): everything but aliases,
 * subscription identifiers and the expiry interval, which are rewritten. */
static bool forwardable(uint8_t id)
{
    return id == MQTT_PROP_PAYLOAD_FORMAT || id == MQTT_PROP_CONTENT_TYPE ||
           id == MQTT_PROP_RESPONSE_TOPIC || id == MQTT_PROP_CORRELATION_DATA ||
           id == MQTT_PROP_USER_PROPERTY;
}

msg *msg_from_publish(const char *ns, uint32_t ns_len, const mqtt_bytes *topic,
                      const mqtt_props *props, uint8_t version, const mqtt_bytes *payload,
                      uint8_t qos, bool retain, uint64_t now_s)
{
    uint8_t stack[1024];
    uint8_t *fwd = stack;
    uint32_t fwd_len = 0;
    bool heap = false;
    if (version == MQTT_V5 && props->raw.len > 0) {
        if (props->raw.len > sizeof(stack)) {
            fwd = drv_malloc(props->raw.len);
            if (!fwd)
                return NULL;
            heap = true;
        }
        uint32_t pos = 0;
        mqtt_prop pr;
        while (mqtt_props_next(&props->raw, &pos, &pr)) {
            if (forwardable(pr.id)) {
                memcpy(fwd + fwd_len, pr.raw.p, pr.raw.len);
                fwd_len += pr.raw.len;
            }
        }
    }
    uint64_t expiry = 0;
    if (version == MQTT_V5 && mqtt_props_has(props, MQTT_PROP_MESSAGE_EXPIRY))
        expiry = now_s + props->message_expiry;
    msg *m = msg_new(ns, ns_len, topic->p, (uint16_t)topic->len, fwd_len ? fwd : NULL, fwd_len,
                     payload->p, payload->len, qos, retain, expiry);
    if (heap)
        drv_free(fwd);
    return m;
}

void msg_unref(msg *m)
{
    if (m && --m->refs == 0)
        drv_free(m);
}
