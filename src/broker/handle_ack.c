/*
 * handle_ack.c — PUBACK, PUBREC, PUBREL, PUBCOMP (§3.4–3.7): the QoS 1 and
 * QoS 2 acknowledgement flows, in both directions.
 *
 * An acknowledgement for an unknown packet id is a late duplicate and is
 * tolerated (PUBREC and PUBREL are still answered, so a client that lost
 * its state can finish the flow); one that does not fit the flow of a known
 * id (PUBREC for a QoS 1 message, PUBCOMP before PUBREC) is a protocol error.
 */
#include "broker/broker_int.h"

static uint8_t result(ack_result r)
{
    return r == ACK_WRONG ? MQTT_RC_PROTOCOL_ERROR : MQTT_RC_SUCCESS;
}

uint8_t handle_puback(conn *c, const mqtt_ack *p)
{
    return result(session_puback(c->s, p->packet_id));
}

uint8_t handle_pubrec(conn *c, const mqtt_ack *p)
{
    ack_result r = session_pubrec(c->s, p->packet_id, p->reason);
    if (r == ACK_UNKNOWN && p->reason < 0x80) {
        mqtt_encode_ack(&c->out, c->version, MQTT_PUBREL, p->packet_id, MQTT_RC_SUCCESS, NULL);
        conn_mark_dirty(c);
    }
    return result(r);
}

uint8_t handle_pubrel(conn *c, const mqtt_ack *p)
{
    session_qos2_in_del(c->s, p->packet_id);
    mqtt_encode_ack(&c->out, c->version, MQTT_PUBCOMP, p->packet_id, MQTT_RC_SUCCESS, NULL);
    conn_mark_dirty(c);
    return MQTT_RC_SUCCESS;
}

uint8_t handle_pubcomp(conn *c, const mqtt_ack *p)
{
    return result(session_pubcomp(c->s, p->packet_id));
}
