/*
 * conn.c — one MQTT network connection: reading and framing, the output
 * buffer flushed once per loop turn, deadlines, and closing.
 *
 * Reads land in the broker's shared read buffer and complete packets are
 * decoded in place; only the tail of a partial packet is copied into the
 * connection's own (capped) buffer.  Idle connections therefore hold no
 * buffers at all.
 *
 *   C_NEW ──CONNECT ok──▶ C_CONNECTED ──error / DISCONNECT / EOF──▶ C_DEAD
 *     │                                  │
 *     └──timeout / bad CONNECT──▶ C_DEAD  └──(v5 DISCONNECT queued)──▶ C_CLOSING ─flush─▶ C_DEAD
 *
 * A closed connection is unlinked from epoll at once and freed at the end
 * of the turn, so no callback ever sees a freed connection.
 */
#include <stdio.h>
#include <string.h>

#include "broker/broker_int.h"
#include "core/alloc.h"
#include "core/log.h"

static void on_io(void *ud, uint32_t events);
static void on_timer(void *ud);

void conn_accept(drv_broker *b, int fd, const drv_peer *peer)
{
    if (b->nconns >= b->cfg.max_connections) {
        b->stats.connections_refused++;
        drv_warn("connection refused: max_connections reached", "peer", peer->addr);
        drv_close(fd);
        return;
    }
    conn *c = drv_calloc(1, sizeof(*c));
    if (!c) {
        drv_close(fd);
        return;
    }
    c->b = b;
    c->io.fd = fd;
    c->io.cb = on_io;
    c->io.ud = c;
    c->loopback = peer->loopback;
    snprintf(c->peer, sizeof(c->peer), "%s", peer->addr);
    drv_buf_init(&c->in, b->cfg.max_packet_size + 8);
    drv_buf_init(&c->out, SIZE_MAX);
    c->last_rx_ms = drv_loop_now(b->loop);
    if (drv_loop_add(b->loop, &c->io, DRV_EV_READ) != DRV_OK) {
        drv_close(fd);
        drv_free(c);
        return;
    }
    c->next = b->conns;
    if (b->conns)
        b->conns->prev = c;
    b->conns = c;
    b->nconns++;
    drv_timer_start(b->loop, &c->timer, b->cfg.connect_timeout_ms, on_timer, c);
}

void conn_mark_dirty(conn *c)
{
    if (!c->dirty && c->state != C_DEAD) {
        c->dirty = true;
        c->dirty_next = c->b->dirty;
        c->b->dirty = c;
    }
}

/* Keepalive: 1.5 × the negotiated interval without any packet (§3.1.2.10). */
static void arm_keepalive(conn *c)
{
    if (c->keepalive == 0) {
        drv_timer_stop(c->b->loop, &c->timer);
        return;
    }
    uint64_t limit = (uint64_t)c->keepalive * 1500;
    uint64_t idle = drv_loop_now(c->b->loop) - c->last_rx_ms;
    drv_timer_start(c->b->loop, &c->timer, idle < limit ? limit - idle : 0, on_timer, c);
}

static void on_timer(void *ud)
{
    conn *c = ud;
    if (c->state == C_NEW) {
        drv_info("closing connection: no CONNECT in time", "peer", c->peer);
        conn_close(c, MQTT_RC_MAXIMUM_CONNECT_TIME, false);
        return;
    }
    if (c->state == C_CLOSING) {
        /* The peer is not reading our DISCONNECT: stop waiting for it. */
        c->state = C_CONNECTED;
        conn_close(c, 0, c->will_on_close);
        return;
    }
    if (c->state != C_CONNECTED)
        return;
    uint64_t limit = (uint64_t)c->keepalive * 1500;
    if (drv_loop_now(c->b->loop) - c->last_rx_ms >= limit) {
        drv_info("closing connection: keep alive timeout", "client", c->s ? c->s->client_id : "",
                 "peer", c->peer);
        conn_close(c, MQTT_RC_KEEP_ALIVE_TIMEOUT, true);
        return;
    }
    arm_keepalive(c);
    /* Idle: give back the output buffer's memory. */
    if (drv_buf_avail(&c->out) == 0 && !c->dirty)
        drv_buf_free(&c->out);
}

void conn_connected(conn *c)
{
    c->state = C_CONNECTED;
    arm_keepalive(c);
}

/* Parse and dispatch every complete packet in p[0..n); returns bytes consumed. */
static size_t parse_packets(conn *c, const uint8_t *p, size_t n)
{
    size_t off = 0;
    while (off < n && (c->state == C_NEW || c->state == C_CONNECTED)) {
        uint8_t first;
        uint32_t remaining;
        size_t hlen;
        drv_err e = mqtt_parse_fixed_header(p + off, n - off, &first, &remaining, &hlen);
        if (e == DRV_AGAIN)
            break;
        if (e != DRV_OK) {
            conn_close(c, MQTT_RC_MALFORMED_PACKET, true);
            break;
        }
        if (hlen + remaining > c->b->cfg.max_packet_size) {
            drv_info("closing connection: packet too large", "peer", c->peer);
            conn_close(c, MQTT_RC_PACKET_TOO_LARGE, true);
            break;
        }
        if (n - off < hlen + remaining)
            break;
        c->b->stats.bytes_received += hlen + remaining;
        dispatch_packet(c, first, p + off + hlen, remaining);
        off += hlen + remaining;
    }
    return off;
}

static void on_readable(conn *c)
{
    drv_broker *b = c->b;
    for (int rounds = 0; rounds < 16 && (c->state == C_NEW || c->state == C_CONNECTED); rounds++) {
        size_t n;
        drv_err e;
        if (drv_buf_avail(&c->in) > 0) {
            /* A partial packet is pending: read behind it in the connection's buffer. */
            size_t room = c->in.cap - drv_buf_avail(&c->in);
            uint8_t *dst = room ? drv_buf_reserve(&c->in, room < 16384 ? room : 16384, &e) : NULL;
            if (!dst) {
                conn_close(c, MQTT_RC_PACKET_TOO_LARGE, true);
                return;
            }
            e = drv_read(c->io.fd, dst, c->in.size - c->in.len, &n);
            if (e == DRV_OK) {
                c->in.len += n;
                c->last_rx_ms = drv_loop_now(b->loop);
                size_t used = parse_packets(c, c->in.data + c->in.off, drv_buf_avail(&c->in));
                drv_buf_consume(&c->in, used);
                if (drv_buf_avail(&c->in) == 0)
                    drv_buf_free(&c->in);
            }
        } else {
            e = drv_read(c->io.fd, b->read_buf, sizeof(b->read_buf), &n);
            if (e == DRV_OK) {
                c->last_rx_ms = drv_loop_now(b->loop);
                size_t used = parse_packets(c, b->read_buf, n);
                if (used < n && (c->state == C_NEW || c->state == C_CONNECTED) &&
                    drv_buf_append(&c->in, b->read_buf + used, n - used) != DRV_OK) {
                    conn_close(c, MQTT_RC_PACKET_TOO_LARGE, true);
                    return;
                }
            }
        }
        if (e == DRV_AGAIN)
            return;
        if (e != DRV_OK) {
            /* EOF or reset without DISCONNECT: the will is published (§3.1.2.5). */
            conn_close(c, 0, true);
            return;
        }
    }
}

static void on_io(void *ud, uint32_t events)
{
    conn *c = ud;
    /* Writable again: flush at turn end, after the log commit, never mid-turn. */
    if (events & DRV_EV_WRITE)
        conn_mark_dirty(c);
    if ((events & DRV_EV_READ) && c->state != C_DEAD)
        on_readable(c);
}

void conn_flush(conn *c)
{
    drv_broker *b = c->b;
    while (drv_buf_avail(&c->out) > 0) {
        size_t n;
        drv_err e = drv_write(c->io.fd, c->out.data + c->out.off, drv_buf_avail(&c->out), &n);
        if (e == DRV_AGAIN)
            break;
        if (e != DRV_OK) {
            drv_buf_free(&c->out);
            if (c->state != C_DEAD)
                conn_close(c, 0, true);
            return;
        }
        b->stats.bytes_sent += n;
        drv_buf_consume(&c->out, n);
    }
    if (c->state == C_DEAD)
        return;
    bool pending = drv_buf_avail(&c->out) > 0;
    if (!pending && c->state == C_CLOSING) {
        c->state = C_CONNECTED; /* let conn_close finish the job */
        conn_close(c, 0, c->will_on_close);
        return;
    }
    drv_loop_mod(b->loop, &c->io, pending ? DRV_EV_READ | DRV_EV_WRITE : DRV_EV_READ);
}

void conn_close(conn *c, uint8_t reason, bool send_will)
{
    drv_broker *b = c->b;
    if (c->state == C_DEAD)
        return;
    if (c->state == C_CLOSING) {
        c->will_on_close = c->will_on_close && send_will;
        return;
    }
    /* 5.0: tell the client why, then close once the bytes are out. */
    if (reason >= 0x80 && c->version == MQTT_V5 && c->state == C_CONNECTED &&
        !c->closing_sent_disconnect) {
        c->closing_sent_disconnect = true;
        mqtt_encode_disconnect(&c->out, c->version, MQTT_DISCONNECT, reason, NULL);
        c->state = C_CLOSING;
        c->will_on_close = send_will;
        conn_mark_dirty(c);
        drv_loop_mod(b->loop, &c->io, DRV_EV_WRITE);
        drv_timer_start(b->loop, &c->timer, 5000, on_timer, c);
        return;
    }
    bool was_connected = c->state == C_CONNECTED;
    c->state = C_DEAD;
    drv_timer_stop(b->loop, &c->timer);
    drv_loop_del(b->loop, &c->io);
    if (drv_buf_avail(&c->out) > 0) {
        /* Best effort: whatever fits in the socket now (CONNACK before close).  The
         * bytes may acknowledge this turn's state, so make it durable first. */
        persist_commit(b->persist);
        size_t n;
        drv_write(c->io.fd, c->out.data + c->out.off, drv_buf_avail(&c->out), &n);
    }
    drv_close(c->io.fd);
    c->io.fd = -1;
    if (was_connected)
        b->stats.clients_connected--;
    if (c->s) {
        session *s = c->s;
        c->s = NULL;
        drv_debug("client disconnected", "client", s->client_id, "peer", c->peer);
        session_detach(s, send_will);
    }
    /* Unlink now; free at turn end (we may be inside this connection's callback). */
    if (c->prev)
        c->prev->next = c->next;
    else
        b->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    b->nconns--;
    c->next = b->dead;
    c->prev = NULL;
    b->dead = c;
}

void conn_free(conn *c)
{
    drv_buf_free(&c->in);
    drv_buf_free(&c->out);
    if (c->alias_in) {
        for (uint16_t i = 0; i < c->b->cfg.topic_alias_maximum; i++)
            drv_free(c->alias_in[i]);
        drv_free(c->alias_in);
        drv_free(c->alias_in_len);
    }
    drv_free(c->alias_out);
    drv_free(c->username);
    drv_free(c);
}

/* Outbound alias for the topic: existing (set *known) or newly assigned; 0 if none. */
static uint16_t alias_for(conn *c, const msg *m, bool *known)
{
    uint16_t max = c->client_alias_max;
    *known = false;
    if (max == 0)
        return 0;
    if (max > 64)
        max = 64;
    if (!c->alias_out) {
        c->alias_out = drv_calloc(max, sizeof(uint64_t));
        if (!c->alias_out)
            return 0;
    }
    uint64_t h = drv_hash_bytes(m->topic, m->topic_len, m->topic_len);
    for (uint16_t i = 0; i < max; i++) {
        if (c->alias_out[i] == h) {
            *known = true;
            return (uint16_t)(i + 1);
        }
    }
    uint16_t slot = c->alias_out_next;
    c->alias_out_next = (uint16_t)((slot + 1) % max);
    c->alias_out[slot] = h;
    return (uint16_t)(slot + 1);
}

bool conn_send_publish(conn *c, const msg *m, uint8_t qos, bool retain, uint16_t pid, bool dup,
                       const uint32_t *sub_ids, uint8_t nsub_ids)
{
    drv_broker *b = c->b;
    if (qos == 0 && drv_buf_avail(&c->out) > b->cfg.max_client_out_buffer)
        return false; /* slow consumer: QoS 0 is dropped, never buffered without bound */
    mqtt_prop_builder pb;
    mqtt_publish_out po = {
        .qos = qos,
        .dup = dup,
        .retain = retain,
        .packet_id = pid,
        .topic = m->topic,
        .topic_len = m->topic_len,
        .payload = m->payload,
        .payload_len = m->payload_len,
    };
    if (c->version == MQTT_V5) {
        mqtt_pb_init(&pb);
        if (m->expiry_at) {
            uint64_t now = broker_now_s();
            mqtt_pb_u32(&pb, MQTT_PROP_MESSAGE_EXPIRY,
                        (uint32_t)(m->expiry_at > now ? m->expiry_at - now : 0));
        }
        for (uint8_t i = 0; i < nsub_ids; i++)
            mqtt_pb_varint(&pb, MQTT_PROP_SUBSCRIPTION_ID, sub_ids[i]);
        pb.extra = m->props;
        pb.extra_len = m->props_len;
        po.props = &pb;
        /* Size with the full topic, plus an alias property when the client takes them. */
        size_t alias_room = c->client_alias_max ? 3 : 0;
        if (c->client_max_packet &&
            mqtt_publish_size(c->version, &po) + alias_room > c->client_max_packet)
            return false;
        bool known;
        uint16_t alias = alias_for(c, m, &known);
        if (alias) {
            mqtt_pb_u16(&pb, MQTT_PROP_TOPIC_ALIAS, alias);
            if (known)
                po.topic_len = 0;
        }
    }
    if (mqtt_encode_publish(&c->out, c->version, &po) != DRV_OK)
        return false;
    b->stats.msgs_sent++;
    conn_mark_dirty(c);
    return true;
}
