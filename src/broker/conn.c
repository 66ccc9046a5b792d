/*
 * conn.c — one MQTT network connection: reading and framing, the output
 * buffers flushed once per loop turn, deadlines, and closing.
 *
 * A connection belongs to one worker (its owner), which alone touches the
 * socket, the transport stack, the partial-read buffer `in`, the `sending`
 * buffer and the connection timer.  Other workers only append to `out` and
 * change the state, under the broker lock, and put the connection on its
 * owner's dirty list.
 *
 * Reads land in the worker's read buffer and complete packets are decoded in
 * place under the broker lock, one lock per read; only the tail of a partial
 * packet is copied into `in`.  Idle connections hold no buffers.
 *
 *   C_NEW ──CONNECT ok──▶ C_CONNECTED ──error / DISCONNECT / EOF──▶ C_CLOSING
 *     │                                                               │
 *     └──timeout / bad CONNECT──▶ C_CLOSING ──owner flushed (≤ 5 s)──▶ C_DEAD ─turn end─▶ freed
 */
#include <assert.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "broker/broker_int.h"
#include "core/alloc.h"
#include "core/log.h"
#include "net/tls.h"
#include "net/ws.h"

static void on_io(void *ud, uint32_t events);
static void on_timer(void *ud);

static inline void lock(drv_broker *b)
{
    pthread_mutex_lock(&b->lock);
}
static inline void unlock(drv_broker *b)
{
    pthread_mutex_unlock(&b->lock);
}

/* Build the transport stack a listener kind needs; *out stays NULL for plain TCP. */
static drv_err make_stream(drv_broker *b, int fd, drv_listen_kind kind, drv_stream **out)
{
    drv_stream *lower = NULL;
    drv_err e;
    *out = NULL;
    if (kind == DRV_LISTEN_MQTT)
        return DRV_OK;
    if (kind == DRV_LISTEN_MQTTS || kind == DRV_LISTEN_WSS)
        e = b->tls ? drv_tls_stream_new(b->tls, fd, &lower) : DRV_INVAL;
    else
        e = drv_tcp_stream_new(fd, &lower);
    if (e)
        return e;
    if (kind == DRV_LISTEN_MQTTS) {
        *out = lower;
        return DRV_OK;
    }
    e = drv_ws_stream_new(&b->ws_cfg, lower, out);
    if (e)
        drv_stream_free(lower, 0);
    return e;
}

/* Read application bytes, through the transport stack when there is one. */
static drv_err conn_read(conn *c, uint8_t *buf, size_t len, size_t *n)
{
    return c->st ? drv_stream_read(c->st, buf, len, n) : drv_read(c->io.fd, buf, len, n);
}

static drv_err conn_write(conn *c, const uint8_t *buf, size_t len, size_t *n)
{
    return c->st ? drv_stream_write(c->st, buf, len, n) : drv_write(c->io.fd, buf, len, n);
}

/* Owner: the epoll interest the connection needs now. */
static void update_events(conn *c, bool more_output)
{
    uint32_t ev = c->state == C_CLOSING || c->paused || c->auth_pending ? 0 : DRV_EV_READ;
    if (drv_buf_avail(&c->sending) > 0 || more_output)
        ev |= DRV_EV_WRITE;
    if (c->st)
        ev |= drv_stream_wants(c->st);
    if (ev == 0 && (c->paused || c->auth_pending))
        drv_loop_mod(c->w->loop, &c->io, 0); /* paused: nothing to watch until resumed */
    else
        drv_loop_mod(c->w->loop, &c->io, ev ? ev : DRV_EV_READ);
}

void conn_accept(worker *w, int fd, const drv_peer *peer, drv_listen_kind kind)
{
    drv_broker *b = w->b;
    lock(b);
    bool full = b->nconns >= b->cfg.max_connections;
    if (full)
        b->stats.connections_refused++;
    else
        b->nconns++;
    unlock(b);
    if (full) {
        drv_warn("connection refused: max_connections reached", "peer",
                 drv_peer_format(peer, (char[DRV_PEER_STRLEN]){0}));
        drv_close(fd);
        return;
    }
    conn *c = drv_calloc(1, sizeof(*c));
    if (!c || make_stream(b, fd, kind, &c->st) != DRV_OK) {
        drv_warn("cannot set up the connection", "peer",
                 drv_peer_format(peer, (char[DRV_PEER_STRLEN]){0}));
        goto fail;
    }
    c->w = w;
    c->io.fd = fd;
    c->io.cb = on_io;
    c->io.ud = c;
    c->peer = *peer;
    drv_buf_init(&c->out, SIZE_MAX);
    drv_buf_init(&c->sending, SIZE_MAX);
    c->last_rx_ms = drv_loop_now(w->loop);
    if (drv_loop_add(w->loop, &c->io, DRV_EV_READ) != DRV_OK) {
        drv_stream_free(c->st, 0);
        goto fail;
    }
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    drv_timer_start(w->loop, &c->timer, b->cfg.connect_timeout_ms, on_timer, c);
    return;
fail:
    drv_free(c);
    drv_close(fd);
    lock(b);
    b->nconns--;
    unlock(b);
}

void conn_mark_dirty(conn *c)
{
    if (c->dirty || c->state == C_DEAD)
        return;
    worker *w = c->w;
    c->dirty = true;
    c->dirty_next = w->dirty;
    w->dirty = c;
    /* Ours: make sure the loop comes round to its turn end without sleeping.
     * Another worker's: wake it once per batch, not per message. */
    if (w == broker_current_worker)
        drv_loop_poke(w->loop);
    else if (!w->wake_pending) {
        w->wake_pending = true;
        uint64_t one = 1;
        ssize_t r = write(w->wake_fd, &one, sizeof(one));
        (void)r;
    }
}

/* Keepalive: 1.5 × the negotiated interval without any packet (§3.1.2.10). */
static void arm_keepalive(conn *c)
{
    drv_loop *loop = c->w->loop;
    if (c->keepalive == 0) {
        drv_timer_stop(loop, &c->timer);
        return;
    }
    uint64_t limit = (uint64_t)c->keepalive * 1500;
    uint64_t idle = drv_loop_now(loop) - c->last_rx_ms;
    drv_timer_start(loop, &c->timer, idle < limit ? limit - idle : 0, on_timer, c);
}

/* Owner thread, connection timer: CONNECT deadline, keepalive, or a stuck close. */
static void on_timer(void *ud)
{
    conn *c = ud;
    drv_broker *b = conn_broker(c);
    lock(b);
    if (c->state == C_NEW) {
        drv_info("closing connection: no CONNECT in time", "peer", conn_peer(c));
        conn_close(c, MQTT_RC_MAXIMUM_CONNECT_TIME, false);
    } else if (c->state == C_CLOSING) {
        /* The peer is not reading what is left: stop waiting for it. */
        drv_buf_free(&c->sending);
        drv_buf_free(&c->out);
        conn_mark_dirty(c);
    } else if (c->state == C_CONNECTED) {
        uint64_t limit = (uint64_t)c->keepalive * 1500;
        if (drv_loop_now(c->w->loop) - c->last_rx_ms >= limit) {
            drv_info("closing connection: keep alive timeout", "client",
                     c->s ? c->s->client_id : "", "peer", conn_peer(c));
            conn_close(c, MQTT_RC_KEEP_ALIVE_TIMEOUT, true);
        } else {
            arm_keepalive(c);
        }
    }
    unlock(b);
}

void conn_connected(conn *c)
{
    c->state = C_CONNECTED;
    arm_keepalive(c);
}

/* Locked: parse and dispatch every complete packet in p[0..n); returns bytes consumed. */
static size_t parse_packets(conn *c, const uint8_t *p, size_t n)
{
    size_t off = 0;
    /* Back-pressure stops mid-batch: the packets not yet handled wait in `in`. */
    while (off < n && (c->state == C_NEW || c->state == C_CONNECTED) && !c->paused &&
           !c->auth_pending) {
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
        if (hlen + remaining > conn_broker(c)->cfg.max_packet_size) {
            drv_info("closing connection: packet too large", "peer", conn_peer(c));
            conn_close(c, MQTT_RC_PACKET_TOO_LARGE, true);
            break;
        }
        if (n - off < hlen + remaining)
            break;
        if ((first >> 4) == MQTT_PUBLISH && c->s &&
            !quota_allow_publish(conn_broker(c), c->s, drv_loop_now(c->w->loop))) {
            /* Over the tenant's message rate: leave this PUBLISH unread (quota.c). */
            broker_pause(conn_broker(c), c);
            break;
        }
        dispatch_packet(c, first, p + off + hlen, remaining);
        if (c->auth_pending)
            break; /* the CONNECT stays in the input until its authentication is done */
        conn_broker(c)->stats.bytes_received += hlen + remaining;
        off += hlen + remaining;
    }
    return off;
}

/* Keep the unparsed tail of a read (a partial packet) in c->in, allocated on
 * first use: an idle connection holds no input buffer, not even its header. */
static drv_err in_keep(conn *c, const uint8_t *p, size_t n)
{
    if (!c->in) {
        c->in = drv_malloc(sizeof(*c->in));
        if (!c->in)
            return DRV_NOMEM;
        drv_buf_init(c->in, conn_broker(c)->cfg.max_packet_size + 8);
    }
    return drv_buf_append(c->in, p, n);
}

/* Mark n bytes of c->in as handled; release it once nothing is left. */
static void in_consume(conn *c, size_t n)
{
    if (!c->in)
        return;
    drv_buf_consume(c->in, n);
    if (drv_buf_avail(c->in) == 0) {
        drv_buf_free(c->in);
        drv_free(c->in);
        c->in = NULL;
    }
}

/*
 * Locked wrapper: dispatch, and report whether the connection is still open
 * (keep a partial packet) and whether to read more now (not when paused by
 * back-pressure, in which case reading stops until the broker resumes it).
 */
static size_t dispatch_bytes(conn *c, const uint8_t *p, size_t n, bool *open, bool *go_on)
{
    drv_broker *b = conn_broker(c);
    lock(b);
    size_t used = parse_packets(c, p, n);
    *open = c->state == C_NEW || c->state == C_CONNECTED;
    *go_on = *open && !c->paused && !c->auth_pending;
    if (*open && (c->paused || c->auth_pending))
        update_events(c, false); /* stop watching input until resumed */
    unlock(b);
    return used;
}

/*
 * Owner, before CONNECT: the WebSocket layer saw an HTTP request for another
 * path.  Give the socket, the transport below the WebSocket layer and the
 * bytes read to the HTTP server (ADR-0008), and forget the connection
 * without closing the socket.
 */
static void handoff(conn *c)
{
    drv_broker *b = conn_broker(c);
    drv_stream *lower = NULL;
    drv_buf pre;
    if (drv_ws_detach(c->st, &lower, &pre) != DRV_OK) {
        lock(b);
        conn_close(c, 0, false);
        unlock(b);
        return;
    }
    c->st = NULL;
    if (lower && lower->ops == &drv_tcp_ops) {
        drv_stream_free(lower, 0); /* plain TCP: the HTTP server uses the fd */
        lower = NULL;
    }
    int fd = c->io.fd;
    drv_loop_del(c->w->loop, &c->io);
    c->io.fd = -1; /* finish_close must not close what now belongs to the HTTP server */
    b->cfg.http_adopt(b->cfg.http_adopt_ud, fd, lower, &c->peer, pre.data + pre.off,
                      drv_buf_avail(&pre));
    drv_buf_free(&pre);
    lock(b);
    conn_close(c, 0, false);
    unlock(b);
}

/* Owner: read what the socket has and dispatch it. */
static void on_readable(conn *c)
{
    worker *w = c->w;
    bool go_on = true, open = true;
    /* Plain TCP stops after a short read or 16 reads (level-triggered epoll reports
     * the rest); a transport may hold decrypted bytes epoll cannot see, so it is read
     * until it says AGAIN. */
    for (int rounds = 0; go_on && (rounds < 16 || c->st); rounds++) {
        size_t n, asked;
        drv_err e;
        if (c->in) {
            /* A partial packet is pending: read behind it in the connection's buffer. */
            size_t room = c->in->cap - drv_buf_avail(c->in);
            uint8_t *dst = room ? drv_buf_reserve(c->in, room < 16384 ? room : 16384, &e) : NULL;
            if (!dst) {
                e = DRV_TOOBIG;
                break;
            }
            asked = c->in->size - c->in->len;
            e = conn_read(c, dst, asked, &n);
            if (e == DRV_OK) {
                c->in->len += n;
                c->last_rx_ms = drv_loop_now(w->loop);
                size_t used = dispatch_bytes(c, c->in->data + c->in->off, drv_buf_avail(c->in),
                                             &open, &go_on);
                in_consume(c, used);
            }
        } else {
            asked = sizeof(w->read_buf);
            e = conn_read(c, w->read_buf, asked, &n);
            if (e == DRV_OK) {
                c->last_rx_ms = drv_loop_now(w->loop);
                size_t used = dispatch_bytes(c, w->read_buf, n, &open, &go_on);
                if (used < n && open)
                    e = in_keep(c, w->read_buf + used, n - used);
            }
        }
        if (e == DRV_DECLINED) {
            handoff(c); /* an HTTP request for the API, not MQTT */
            return;
        }
        if (e == DRV_AGAIN) {
            if (c->st) {
                lock(conn_broker(c));
                update_events(c, false); /* a TLS handshake may need to write */
                unlock(conn_broker(c));
            }
            return;
        }
        if (e == DRV_OK && !c->st && n < asked)
            return; /* drained: saves the read that would only say EAGAIN */
        if (e != DRV_OK) {
            /* EOF, reset or overflow without DISCONNECT: the will is published (§3.1.2.5). */
            const char *why = NULL;
            for (drv_stream *s = c->st; s && e == DRV_PROTOCOL && !why; s = s->lower)
                if (s->ops == &drv_tls_ops)
                    why = drv_tls_stream_error(s);
            if (why)
                drv_info("transport error", "peer", conn_peer(c), "reason", why);
            lock(conn_broker(c));
            conn_close(c, e == DRV_TOOBIG ? MQTT_RC_PACKET_TOO_LARGE : 0, true);
            unlock(conn_broker(c));
            return;
        }
    }
}

static void on_io(void *ud, uint32_t events)
{
    conn *c = ud;
    /* Writable again: flush at turn end, after the log commit, never mid-turn. */
    if (events & DRV_EV_WRITE) {
        lock(conn_broker(c));
        conn_mark_dirty(c);
        unlock(conn_broker(c));
    }
    /* A transport may need a write event to make progress on reading (TLS). */
    /* The state is checked under the lock when the bytes are dispatched; a closed
     * connection is out of epoll before its next event could arrive. */
    if (events & DRV_EV_READ || (c->st && (events & DRV_EV_WRITE)))
        on_readable(c);
}

void conn_close(conn *c, uint8_t reason, bool send_will)
{
    if (c->state == C_DEAD)
        return;
    if (c->state == C_CLOSING) {
        c->will_on_close = c->will_on_close && send_will;
        return;
    }
    /* 5.0: tell the client why (only once its CONNECT was accepted). */
    if (reason >= 0x80 && c->version == MQTT_V5 && c->state == C_CONNECTED &&
        !c->closing_sent_disconnect) {
        c->closing_sent_disconnect = true;
        mqtt_encode_disconnect(&c->out, c->version, MQTT_DISCONNECT, reason, NULL);
    }
    c->close_reason = reason;
    c->will_on_close = send_will;
    c->state = C_CLOSING;
    conn_mark_dirty(c);
}

/* Locked, owner: the close is complete; detach the session and release the socket. */
static void finish_close(conn *c)
{
    drv_broker *b = conn_broker(c);
    worker *w = c->w;
    if (c->counted_connected)
        b->stats.clients_connected--;
    if (c->dirty) {
        /* Queued again while this turn wrote (by another worker): it must not be
         * reached from the dirty list after it is freed. */
        for (conn **pp = &w->dirty; *pp; pp = &(*pp)->dirty_next) {
            if (*pp == c) {
                *pp = c->dirty_next;
                break;
            }
        }
        c->dirty = false;
    }
    if (c->paused)
        broker_unpause(b, c);
    c->state = C_DEAD;
    drv_timer_stop(w->loop, &c->timer);
    drv_loop_del(w->loop, &c->io);
    if (c->st) {
        /* WebSocket close code: 1000 normal, 1002 when the peer broke the protocol. */
        bool proto = c->close_reason == MQTT_RC_MALFORMED_PACKET ||
                     c->close_reason == MQTT_RC_PROTOCOL_ERROR;
        drv_stream_free(c->st, proto ? 1002 : 1000);
        c->st = NULL;
    }
    drv_close(c->io.fd);
    c->io.fd = -1;
    if (c->s) {
        session *s = c->s;
        if (c->counted_connected)
            quota_conn_gone(b, s);
        if (c->counted_connected)
            broker_client_event(b, c, s, false,
                                c->close_reason    ? mqtt_reason_str(c->close_reason)
                                : c->will_on_close ? "connection lost"
                                                   : "client disconnected");
        c->s = NULL;
        drv_debug("client disconnected", "client", s->client_id, "peer", conn_peer(c));
        session_detach(s, c->will_on_close);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    b->nconns--;
    c->next = w->dead;
    c->prev = NULL;
    w->dead = c;
}

void conn_take_output(conn *c)
{
    if (drv_buf_avail(&c->sending) == 0 && drv_buf_avail(&c->out) > 0) {
        drv_buf tmp = c->sending;
        c->sending = c->out;
        c->out = tmp;
        c->out.off = c->out.len = 0;
    }
}

bool conn_write_sending(conn *c)
{
    while (drv_buf_avail(&c->sending) > 0) {
        size_t n;
        drv_err e = conn_write(c, c->sending.data + c->sending.off, drv_buf_avail(&c->sending), &n);
        if (e == DRV_AGAIN || (e == DRV_OK && n == 0))
            return true;
        if (e != DRV_OK) {
            drv_buf_free(&c->sending);
            return false;
        }
        atomic_fetch_add_explicit(&conn_broker(c)->bytes_sent, n, memory_order_relaxed);
        drv_buf_consume(&c->sending, n);
    }
    return true;
}

void conn_after_write(conn *c, bool ok)
{
    if (c->state == C_DEAD)
        return;
    if (!c->paused && c->state == C_CONNECTED && c->in) {
        /* Resumed after back-pressure: handle the packets that were read but not yet
         * dispatched (the socket may have nothing new to wake us with). */
        in_consume(c, parse_packets(c, c->in->data + c->in->off, drv_buf_avail(c->in)));
    }
    if (!ok && c->state != C_CLOSING)
        conn_close(c, 0, true);
    bool more = drv_buf_avail(&c->out) > 0;
    if (c->state == C_CLOSING) {
        if (!ok || (drv_buf_avail(&c->sending) == 0 && !more)) {
            finish_close(c);
            return;
        }
        if (!c->close_timer_set) {
            c->close_timer_set = true;
            drv_timer_start(c->w->loop, &c->timer, 5000, on_timer, c);
        }
    }
    if (drv_buf_avail(&c->sending) == 0 && more)
        conn_mark_dirty(c); /* appended while we wrote: next turn */
    update_events(c, more);
    /* Drained with nothing new: give both buffers back, so an idle connection holds
     * none (one allocation per busy turn, not per message). */
    if (drv_buf_avail(&c->sending) == 0 && !more) {
        drv_buf_free(&c->sending);
        drv_buf_free(&c->out);
    }
}

void conn_auth_done(conn *c, auth_job *j)
{
    if (!c->in) {
        conn_close(c, 0, false); /* cannot happen: the CONNECT was kept in `in` */
        return;
    }
    auth_outcome = j;
    size_t used = parse_packets(c, c->in->data + c->in->off, drv_buf_avail(c->in));
    auth_outcome = NULL;
    in_consume(c, used);
    if (c->state == C_NEW || c->state == C_CONNECTED)
        update_events(c, false); /* read again (the rest of `in` was parsed above) */
}

void conn_free(conn *c)
{
    in_consume(c, c->in ? drv_buf_avail(c->in) : 0);
    drv_buf_free(&c->out);
    drv_buf_free(&c->sending);
    if (c->aliases) {
        for (uint16_t i = 0; i < conn_broker(c)->cfg.topic_alias_maximum; i++)
            drv_free(c->aliases->in[i]);
        drv_free(c->aliases->out);
        drv_free(c->aliases);
    }
    drv_free(c);
}

conn_aliases *conn_get_aliases(conn *c)
{
    if (!c->aliases)
        c->aliases =
            drv_calloc(1, sizeof(conn_aliases) +
                              (size_t)conn_broker(c)->cfg.topic_alias_maximum * sizeof(char *));
    return c->aliases;
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
    conn_aliases *al = conn_get_aliases(c);
    if (!al)
        return 0;
    if (!al->out) {
        al->out = drv_calloc(max, sizeof(uint64_t));
        if (!al->out)
            return 0;
    }
    uint64_t h = drv_hash_bytes(m->topic, m->topic_len, m->topic_len);
    for (uint16_t i = 0; i < max; i++) {
        if (al->out[i] == h) {
            *known = true;
            return (uint16_t)(i + 1);
        }
    }
    uint16_t slot = al->out_next;
    al->out_next = (uint16_t)((slot + 1) % max);
    al->out[slot] = h;
    return (uint16_t)(slot + 1);
}

bool conn_send_publish(conn *c, const msg *m, uint8_t qos, bool retain, uint16_t pid, bool dup,
                       const uint32_t *sub_ids, uint8_t nsub_ids)
{
    drv_broker *b = conn_broker(c);
    if (qos == 0 && drv_buf_avail(&c->out) > b->cfg.max_client_out_buffer)
        return false; /* slow consumer: QoS 0 is dropped, never buffered without bound */
    /* The client sees its topics without its namespace prefix (ADR-0009): every topic
     * its filters match starts with it, so stripping is an offset.  The length check
     * keeps a topic that would come out empty from ever being sent. */
    uint32_t prefix = c->s ? session_prefix_len(c->s) : 0;
    if (m->topic_len <= prefix)
        return false;
    assert(prefix == 0 ||
           (memcmp(m->topic, session_ns(c->s), prefix - 1) == 0 && m->topic[prefix - 1] == '/'));
    mqtt_prop_builder pb;
    mqtt_publish_out po = {
        .qos = qos,
        .dup = dup,
        .retain = retain,
        .packet_id = pid,
        .topic = m->topic + prefix,
        .topic_len = (uint16_t)(m->topic_len - prefix),
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
