/*
 * handle_publish.c — an incoming PUBLISH (§3.3): resolve the topic alias,
 * check limits and authorisation, route, and acknowledge.
 *
 * QoS 2 uses "method B" delivery (§4.3.3): the message is routed when the
 * PUBLISH arrives and its packet id remembered until PUBREL, so a DUP
 * retransmission is acknowledged but never routed twice.  The PUBACK or
 * PUBREC goes into the output buffer, which is flushed only after the turn's
 * log records are on disk (ADR-0005).
 *
 * Namespaces (ADR-0009): aliases, limits and authorisation work on the topic
 * as the client sent it; the message is then built with "<ns>/" in front.  A
 * namespaced client may not publish to a topic starting with '$', and a
 * global one not to a "$T/" topic its tenant's clients could not receive.
 */
#include <string.h>

#include "broker/broker_int.h"
#include "core/alloc.h"
#include "core/log.h"

/* Resolve or record a topic alias; returns a reason code. */
static uint8_t resolve_alias(conn *c, mqtt_publish *p)
{
    uint16_t max = conn_broker(c)->cfg.topic_alias_maximum;
    uint16_t alias = p->props.topic_alias;
    if (alias == 0 || alias > max)
        return MQTT_RC_TOPIC_ALIAS_INVALID;
    conn_aliases *al = conn_get_aliases(c);
    if (!al)
        return MQTT_RC_IMPLEMENTATION_SPECIFIC;
    if (p->topic.len > 0) {
        char *copy = drv_strndup((const char *)p->topic.p, p->topic.len);
        if (!copy)
            return MQTT_RC_IMPLEMENTATION_SPECIFIC;
        drv_free(al->in[alias - 1]);
        al->in[alias - 1] = copy; /* topics hold no NUL (UTF-8 rules), so strlen is exact */
        return MQTT_RC_SUCCESS;
    }
    if (!al->in[alias - 1])
        return MQTT_RC_PROTOCOL_ERROR; /* alias used before it was set */
    p->topic.p = (const uint8_t *)al->in[alias - 1];
    p->topic.len = (uint32_t)strlen(al->in[alias - 1]);
    return MQTT_RC_SUCCESS;
}

static uint32_t count_levels(const uint8_t *t, size_t len)
{
    uint32_t n = 1;
    for (size_t i = 0; i < len; i++)
        n += t[i] == '/';
    return n;
}

/* Acknowledge a QoS 1/2 PUBLISH with reason rc (no-op for QoS 0). */
static void ack(conn *c, const mqtt_publish *p, uint8_t rc)
{
    if (p->qos == 1)
        mqtt_encode_ack(&c->out, c->version, MQTT_PUBACK, p->packet_id, rc, NULL);
    else if (p->qos == 2)
        mqtt_encode_ack(&c->out, c->version, MQTT_PUBREC, p->packet_id, rc, NULL);
    conn_mark_dirty(c);
}

uint8_t handle_publish(conn *c, mqtt_publish *p)
{
    drv_broker *b = conn_broker(c);
    session *s = c->s;
    bool v5 = c->version == MQTT_V5;
    b->stats.msgs_received++;

    if (v5 && mqtt_props_has(&p->props, MQTT_PROP_TOPIC_ALIAS)) {
        uint8_t rc = resolve_alias(c, p);
        if (rc)
            return rc;
    }
    if (p->qos > s->max_qos) /* the broker's limit, or the device profile's */
        return MQTT_RC_QOS_NOT_SUPPORTED;
    if (p->retain && !b->cfg.retain_available)
        return MQTT_RC_RETAIN_NOT_SUPPORTED;
    /* A Subscription Identifier from a client breaks [MQTT-3.3.4-6]; like Mosquitto (and
     * the conformance corpus) we tolerate it.  It is never forwarded. */

    if (p->qos == 2 && session_qos2_in_has(s, p->packet_id)) {
        ack(c, p, MQTT_RC_SUCCESS); /* a retransmission: already routed */
        return MQTT_RC_SUCCESS;
    }
    /* Receive Maximum is a 5.0 agreement; a 3.x client was never told one, so it is held
     * only to the packet-id space (2 bytes per pending id). */
    if (p->qos == 2 && s->nqos2_in >= (v5 ? b->cfg.receive_maximum : 65535))
        return MQTT_RC_RECEIVE_MAX_EXCEEDED;

    /* Refusals that keep the connection: a reason code in the acknowledgement. */
    uint8_t refuse = MQTT_RC_SUCCESS;
    bool taken = false; /* the publish tap stored it (telemetry) */
    uint32_t prefix = session_prefix_len(s);
    if (p->topic.len > b->cfg.max_topic_length || p->topic.len + prefix > 65535 ||
        count_levels(p->topic.p, p->topic.len) > b->cfg.max_topic_levels)
        refuse = MQTT_RC_TOPIC_NAME_INVALID;
    else if (v5 && p->props.payload_format == 1 && !mqtt_utf8_valid(p->payload.p, p->payload.len))
        refuse = MQTT_RC_PAYLOAD_FORMAT_INVALID;
    else if ((prefix ? p->topic.len == 0 || p->topic.p[0] == '$'
                     : (p->topic.len >= 5 && memcmp(p->topic.p, "$SYS/", 5) == 0) ||
                           !ns_global_topic_ok(p->topic.p, p->topic.len)) ||
             !broker_authorize(b, s, DRV_ACL_WRITE, p->topic.p, p->topic.len))
        refuse = MQTT_RC_NOT_AUTHORIZED;
    else if (b->cfg.memory_limit && drv_mem_used() > b->cfg.memory_limit)
        refuse = MQTT_RC_QUOTA_EXCEEDED;
    if (refuse == MQTT_RC_QUOTA_EXCEEDED && !v5 && p->qos > 0) {
        /* 3.1.1 cannot say "not now": close rather than acknowledge and lose it. */
        b->stats.msgs_dropped++;
        return MQTT_RC_QUOTA_EXCEEDED;
    }
    if (!refuse && prefix && b->cfg.tap.publish) {
        /* Telemetry and other platform topics of a device (ADR-0012). */
        drv_client_identity who;
        broker_identity(s, &who);
        uint8_t trc = b->cfg.tap.publish(b->cfg.tap.ud, &who, p->topic.p, p->topic.len,
                                         p->payload.p, p->payload.len, p->qos, &taken);
        if (trc == MQTT_RC_SUCCESS)
            c->w->tap_dirty = true;
        else if (trc != MQTT_RC_PAYLOAD_FORMAT_INVALID && !v5 && p->qos > 0)
            return trc; /* cannot be stored now: 3.1.1 has no "no", so close, and it is resent */
        refuse = trc;
    }
    if (refuse) {
        b->stats.msgs_dropped++;
        drv_debug("publish refused", "client", s->client_id, "reason", mqtt_reason_str(refuse));
        ack(c, p, v5 ? refuse : MQTT_RC_SUCCESS);
        return MQTT_RC_SUCCESS;
    }

    msg *m = msg_from_publish(session_ns(s), s->ns_len, &p->topic, &p->props, c->version,
                              &p->payload, p->qos, p->retain, broker_now_s());
    if (!m) {
        ack(c, p, MQTT_RC_IMPLEMENTATION_SPECIFIC);
        return MQTT_RC_SUCCESS;
    }
    b->congested = false;
    uint32_t delivered = route_publish(b, m, s);
    msg_unref(m);
    if (b->congested)
        broker_pause(b, c);
    if (p->qos == 2 && session_qos2_in_add(s, p->packet_id) != DRV_OK)
        return MQTT_RC_IMPLEMENTATION_SPECIFIC;
    /* 0x10 in PUBACK only: a PUBREC with it would end the QoS 2 flow early for some clients. */
    ack(c, p,
        delivered == 0 && !taken && v5 && p->qos == 1 ? MQTT_RC_NO_MATCHING_SUBSCRIBERS
                                                      : MQTT_RC_SUCCESS);
    return MQTT_RC_SUCCESS;
}
