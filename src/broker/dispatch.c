/*
 * dispatch.c — decode one packet and hand it to its handler.
 *
 * This is the one place that turns failures into wire behaviour: a decode
 * error or a handler's error reason becomes, for 5.0, a DISCONNECT with that
 * reason code (a CONNACK with it while connecting) and, for 3.1/3.1.1, a
 * plain close (§4.13).  Handlers return an MQTT reason code: Success, or the
 * reason the connection must end with.
 */
#include "broker/broker_int.h"
#include "core/log.h"

static void reject_connect(conn *c, const mqtt_packet *pkt, drv_err e, const mqtt_decode_error *err)
{
    uint8_t ver = pkt->u.connect.protocol_version;
    if (e == DRV_UNSUPPORTED) {
        /* We cannot know the client's CONNACK format: answer in the 5.0 one (as Mosquitto). */
        mqtt_encode_connack(&c->out, MQTT_V5, false, MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION, NULL);
    } else if (ver == MQTT_V5) {
        mqtt_encode_connack(&c->out, MQTT_V5, false, err->reason, NULL);
    }
    drv_info("CONNECT rejected", "peer", conn_peer(c), "reason", err->what ? err->what : "");
    conn_close(c, 0, false);
}

void dispatch_packet(conn *c, uint8_t first, const uint8_t *body, uint32_t len)
{
    mqtt_packet pkt;
    mqtt_decode_error err;
    uint8_t version = c->state == C_NEW ? 0 : c->version;
    drv_err e = mqtt_decode(first, body, len, version, false, &pkt, &err);
    if (e != DRV_OK) {
        if (c->state == C_NEW) {
            if (pkt.type == MQTT_CONNECT)
                reject_connect(c, &pkt, e, &err);
            else
                conn_close(c, 0, false);
            return;
        }
        drv_debug("bad packet", "client", c->s ? c->s->client_id : "", "reason",
                  err.what ? err.what : "");
        conn_close(c, err.reason, true);
        return;
    }

    uint8_t rc;
    switch (pkt.type) {
    case MQTT_CONNECT:
        if (c->state != C_NEW) {
            rc = MQTT_RC_PROTOCOL_ERROR; /* a second CONNECT (§3.1.0-2) */
            break;
        }
        rc = handle_connect(c, &pkt.u.connect);
        if (rc != MQTT_RC_SUCCESS && rc != CONNECT_PENDING)
            conn_close(c, 0, false);
        return;
    case MQTT_PUBLISH:
        rc = handle_publish(c, &pkt.u.publish);
        break;
    case MQTT_PUBACK:
        rc = handle_puback(c, &pkt.u.ack);
        break;
    case MQTT_PUBREC:
        rc = handle_pubrec(c, &pkt.u.ack);
        break;
    case MQTT_PUBREL:
        rc = handle_pubrel(c, &pkt.u.ack);
        break;
    case MQTT_PUBCOMP:
        rc = handle_pubcomp(c, &pkt.u.ack);
        break;
    case MQTT_SUBSCRIBE:
        rc = handle_subscribe(c, &pkt.u.subscribe);
        break;
    case MQTT_UNSUBSCRIBE:
        rc = handle_unsubscribe(c, &pkt.u.subscribe);
        break;
    case MQTT_PINGREQ:
        rc = handle_pingreq(c);
        break;
    case MQTT_DISCONNECT:
        rc = handle_disconnect(c, &pkt.u.disconnect);
        break;
    case MQTT_AUTH:
        rc = handle_auth(c, &pkt.u.disconnect);
        break;
    default:
        rc = MQTT_RC_PROTOCOL_ERROR;
        break;
    }
    if (rc >= 0x80)
        conn_close(c, rc, true);
}
