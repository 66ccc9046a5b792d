/*
 * handle_misc.c — PINGREQ, DISCONNECT and AUTH (§3.12, §3.14, §3.15).
 */
#include "broker/broker_int.h"

uint8_t handle_pingreq(conn *c)
{
    mqtt_encode_simple(&c->out, MQTT_PINGRESP);
    conn_mark_dirty(c);
    return MQTT_RC_SUCCESS;
}

uint8_t handle_disconnect(conn *c, const mqtt_disconnect *p)
{
    session *s = c->s;
    if (c->version == MQTT_V5 && mqtt_props_has(&p->props, MQTT_PROP_SESSION_EXPIRY)) {
        /* A session that was to end at disconnect may not be revived here (§3.14.2.2.2). */
        if (s->expiry_interval == 0 && p->props.session_expiry != 0)
            return MQTT_RC_PROTOCOL_ERROR;
        uint32_t expiry = p->props.session_expiry;
        if (expiry > conn_broker(c)->cfg.max_session_expiry)
            expiry = conn_broker(c)->cfg.max_session_expiry;
        s->expiry_interval = expiry;
        if (s->persistent && expiry == 0) {
            persist_session_del(conn_broker(c)->persist, s);
            s->persistent = false;
        } else if (s->persistent) {
            persist_session(conn_broker(c)->persist, s);
        }
    }
    /* Normal disconnection discards the will; 0x04 asks for it (§3.14.2.1). */
    bool will = c->version == MQTT_V5 && p->reason == MQTT_RC_DISCONNECT_WITH_WILL;
    conn_close(c, 0, will);
    return MQTT_RC_SUCCESS;
}

uint8_t handle_auth(conn *c, const mqtt_disconnect *p)
{
    /* No enhanced authentication method was negotiated at CONNECT (§4.12). */
    (void)p;
    return MQTT_RC_PROTOCOL_ERROR;
}
