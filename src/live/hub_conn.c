/*
 * hub_conn.c — one live-stream connection on the hub's thread: reading the
 * client (WebSocket frames: subscribe, unsubscribe, ping, close; SSE: only
 * the end of the connection), writing its bounded output, heartbeats, the
 * slow-consumer drop and the goodbye (docs/stream.md).
 *
 * The output buffer holds at most cfg.max_buffer_bytes of events (plus the
 * SSE replay it started with).  An event that would go past it is not
 * queued: the connection is finished instead — its notice and close frame
 * go in the headroom above the cap — and closed once they are written or
 * after CLOSE_GRACE_MS, whichever comes first.
 */
#include "live/hub_int.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/jsonw.h"
#include "core/log.h"
#include "platform/clock.h"

#define CLOSE_GRACE_MS 10000
#define WS_MAX_MESSAGE 65536u
#define READ_SLICE 16384u
#define SUBSCRIBES_PER_S 10
#define SUBSCRIBE_BURST (2 * DRV_HUB_MAX_SUBS_PER_CONN)

static void arm_heartbeat(hub_conn *c);

/* ------------------------------------------------------------------------ */
/* Output                                                                    */

static void update_events(hub_conn *c)
{
    uint32_t ev = DRV_EV_READ;
    if (drv_buf_avail(&c->out) > 0)
        ev |= DRV_EV_WRITE;
    if (c->st)
        ev |= drv_stream_wants(c->st);
    if (drv_loop_mod(c->hub->loop, &c->io, ev) != DRV_OK)
        hub_conn_close(c);
}

void hub_conn_flush(hub_conn *c)
{
    while (!c->dead && drv_buf_avail(&c->out) > 0) {
        size_t w = 0;
        const uint8_t *p = c->out.data + c->out.off;
        size_t n = drv_buf_avail(&c->out);
        drv_err e = c->st ? drv_stream_write(c->st, p, n, &w) : drv_write(c->io.fd, p, n, &w);
        if (e == DRV_OK && w == 0)
            e = DRV_AGAIN;
        if (e == DRV_AGAIN)
            break;
        if (e != DRV_OK) {
            hub_conn_close(c);
            return;
        }
        drv_buf_consume(&c->out, w);
        c->written += w;
        c->replay_left -= w < c->replay_left ? w : c->replay_left;
    }
    if (c->dead)
        return;
    if (drv_buf_avail(&c->out) == 0) {
        drv_buf_free(&c->out); /* an idle stream holds no buffer */
        if (c->state == HC_CLOSING && c->st) {
            hub_conn_close(c); /* TLS: drv_stream_free sends close_notify */
            return;
        }
        if (c->state == HC_CLOSING && !c->shut) {
            /* Our last bytes are out: half-close and read until the client
             * closes (or the grace timer), so that unread input does not
             * make the kernel reset the connection over the final notice. */
            shutdown(c->io.fd, SHUT_WR);
            c->shut = true;
        }
    }
    update_events(c);
}

bool hub_conn_send(hub_conn *c, const void *p, size_t n, size_t then_n)
{
    if (c->state != HC_OPEN)
        return false;
    size_t cap = (size_t)c->hub->cfg.max_buffer_bytes + c->replay_left;
    if (!c->replaying && drv_buf_avail(&c->out) + n + then_n > cap && drv_buf_avail(&c->out) > 0)
        hub_conn_flush(c); /* output waits for the turn end: first see what the socket takes */
    if (c->dead || c->state != HC_OPEN)
        return false;
    cap = (size_t)c->hub->cfg.max_buffer_bytes + c->replay_left;
    if (!c->replaying && drv_buf_avail(&c->out) + n + then_n > cap && drv_buf_avail(&c->out) > 0) {
        /* An event larger than the whole buffer still goes to an empty one. */
        atomic_fetch_add_explicit(&c->hub->slow_consumers, 1, memory_order_relaxed);
        char detail[96];
        snprintf(detail, sizeof(detail), "more than %u bytes waited for this client",
                 c->hub->cfg.max_buffer_bytes);
        hub_conn_finish(c, 4008, "slow-consumer", detail);
        return false;
    }
    /* Room for the whole event now, so its pieces cannot be cut apart. */
    drv_err e;
    if (!drv_buf_reserve(&c->out, n + then_n, &e) || drv_buf_append(&c->out, p, n) != DRV_OK) {
        if (drv_buf_avail(&c->out) > 0) {
            hub_conn_close(c);
            return false;
        }
        /* Larger than the connection could ever take: not sent, counted. */
        return false;
    }
    hub_mark_dirty(c);
    return true;
}

/* Append past the event cap (control frames, notices: the headroom). */
static void send_control(hub_conn *c, const void *p, size_t n)
{
    if (drv_buf_append(&c->out, p, n) != DRV_OK) {
        hub_conn_close(c);
        return;
    }
    hub_mark_dirty(c);
}

static void send_ws_frame(hub_conn *c, uint8_t opcode, const void *p, size_t n)
{
    uint8_t h[10];
    size_t hn = drv_ws_frame_header(h, opcode, n);
    send_control(c, h, hn);
    if (n && !c->dead)
        send_control(c, p, n);
}

/* A JSON control message to a WebSocket client ("ack", "error", "pong"). */
static void send_ws_json(hub_conn *c, const char *type, const char *id, const char *op, int status,
                         const char *code, const char *detail, int64_t devices)
{
    drv_buf b;
    drv_buf_init(&b, 4096);
    drv_jw w = {.b = &b};
    drv_jw_lit(&w, "{\"type\":");
    drv_jw_cstr(&w, type);
    drv_jw_lit(&w, ",\"id\":");
    if (id)
        drv_jw_cstr(&w, id);
    else
        drv_jw_lit(&w, "null");
    if (op) {
        drv_jw_lit(&w, ",\"op\":");
        drv_jw_cstr(&w, op);
    }
    if (status) {
        drv_jw_lit(&w, ",\"status\":");
        drv_jw_i64(&w, status);
    }
    if (code) {
        drv_jw_lit(&w, ",\"code\":");
        drv_jw_cstr(&w, code);
    }
    if (detail) {
        drv_jw_lit(&w, ",\"detail\":");
        drv_jw_cstr(&w, detail);
    }
    if (devices >= 0) {
        drv_jw_lit(&w, ",\"devices\":");
        drv_jw_i64(&w, devices);
    }
    drv_jw_lit(&w, "}");
    if (!w.failed)
        send_ws_frame(c, DRV_WSF_TEXT, b.data + b.off, drv_buf_avail(&b));
    drv_buf_free(&b);
}

/* ------------------------------------------------------------------------ */
/* Closing                                                                   */

static void drop_subs(hub_conn *c)
{
    for (uint32_t i = 0; i < c->nsubs; i++)
        hub_sub_free(c->hub, c->subs[i]);
    c->nsubs = 0;
}

void hub_conn_close(hub_conn *c)
{
    drv_hub *hub = c->hub;
    if (c->dead)
        return;
    c->dead = true;
    c->state = HC_CLOSING; /* its subscriptions, still indexed, skip it */
    drv_timer_stop(hub->loop, &c->timer);
    drv_loop_del(hub->loop, &c->io);
    if (c->st)
        drv_stream_free(c->st, 0);
    c->st = NULL;
    close(c->io.fd);
    drv_buf_free(&c->in);
    drv_buf_free(&c->out);
    drv_wsf_reader_free(&c->rd);
    if (c->prev)
        c->prev->next = c->next;
    else
        hub->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = NULL;
    c->next = hub->dead;
    hub->dead = c;
    atomic_fetch_sub_explicit(&hub->connections[c->transport], 1, memory_order_relaxed);
}

void hub_conns_free_dead(drv_hub *hub)
{
    while (hub->dead) {
        hub_conn *c = hub->dead;
        hub->dead = c->next;
        drop_subs(c); /* here, never during a delivery that walks their lists */
        drv_free(c);
    }
}

static void on_grace(void *ud)
{
    hub_conn_close(ud);
}

void hub_conn_finish(hub_conn *c, uint16_t ws_code, const char *code, const char *detail)
{
    if (c->dead || c->state != HC_OPEN)
        return;
    /* Its subscriptions stay indexed until the connection is freed at turn
     * end (a delivery may be walking their lists now); send_event skips a
     * connection that is not open. */
    if (c->transport == DRV_HUB_WEBSOCKET) {
        if (code)
            send_ws_json(c, "error", NULL, NULL, 0, code, detail, -1);
        uint8_t pl[125];
        size_t n = drv_wsf_close_payload(pl, ws_code, code ? code : "");
        if (!c->dead)
            send_ws_frame(c, DRV_WSF_CLOSE, pl, n);
    } else if (code) {
        drv_buf b;
        drv_buf_init(&b, 1024);
        drv_jw w = {.b = &b};
        drv_jw_lit(&w, "event: error\ndata: {\"code\":");
        drv_jw_cstr(&w, code);
        drv_jw_lit(&w, ",\"detail\":");
        drv_jw_cstr(&w, detail ? detail : "");
        drv_jw_lit(&w, "}\n\n");
        if (!w.failed)
            send_control(c, b.data + b.off, drv_buf_avail(&b));
        drv_buf_free(&b);
    }
    if (c->dead)
        return;
    c->state = HC_CLOSING;
    drv_timer_start(c->hub->loop, &c->timer, CLOSE_GRACE_MS, on_grace, c);
    hub_mark_dirty(c);
}

/* ------------------------------------------------------------------------ */
/* WebSocket messages                                                        */

static bool id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > DRV_HUB_SUB_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] < 0x21 || id[i] == '"' || id[i] == '\\' ||
            (unsigned char)id[i] > 0x7e)
            return false;
    return true;
}

static int sub_find(const hub_conn *c, const char *id)
{
    for (uint32_t i = 0; i < c->nsubs; i++)
        if (strcmp(c->subs[i]->id, id) == 0)
            return (int)i;
    return -1;
}

static void ws_subscribe(hub_conn *c, const char *id, const char *msg, size_t n)
{
    drv_hub *hub = c->hub;
    /* Each subscribe reads the registry on the hub's thread: a bucket of
     * SUBSCRIBE_BURST (a dashboard opening all its widgets at once),
     * refilled at SUBSCRIBES_PER_S. */
    uint64_t now = drv_loop_now(hub->loop);
    uint64_t refill = (now - c->sub_bucket_at) * SUBSCRIBES_PER_S / 1000;
    if (refill) {
        c->sub_tokens = c->sub_tokens + refill > SUBSCRIBE_BURST ? SUBSCRIBE_BURST
                                                                 : c->sub_tokens + (uint32_t)refill;
        c->sub_bucket_at = now;
    }
    if (c->sub_tokens == 0) {
        send_ws_json(c, "error", id, "subscribe", 429, "rate-limited",
                     "subscribe messages come faster than 10 a second (after a burst of 128)", -1);
        return;
    }
    c->sub_tokens--;
    if (sub_find(c, id) >= 0) {
        send_ws_json(c, "error", id, "subscribe", 409, "conflict",
                     "a subscription with this id exists on the connection", -1);
        return;
    }
    if (c->nsubs >= DRV_HUB_MAX_SUBS_PER_CONN) {
        send_ws_json(c, "error", id, "subscribe", 429, "too-many-subscriptions",
                     "at most 64 subscriptions per connection", -1);
        return;
    }
    drv_hub_filter f;
    memset(&f, 0, sizeof(f));
    drv_hub_refusal why = {.status = 400};
    snprintf(why.code, sizeof(why.code), "bad-request");
    drv_err e = hub->cfg.ws_filter
                    ? hub->cfg.ws_filter(hub->cfg.ws_filter_ud, &c->who, msg, n, &f, &why)
                    : DRV_UNSUPPORTED;
    if (e != DRV_OK) {
        drv_hub_filter_free(&f);
        send_ws_json(c, "error", id, "subscribe", why.status ? why.status : 400, why.code,
                     why.detail[0] ? why.detail : drv_strerror(e), -1);
        return;
    }
    /* Each subscription copies its devices: bound what one connection holds. */
    size_t total = f.ndevices;
    for (uint32_t i = 0; i < c->nsubs; i++)
        total += c->subs[i]->f.ndevices;
    if (total > DRV_HUB_MAX_DEVICES) {
        drv_hub_filter_free(&f);
        send_ws_json(c, "error", id, "subscribe", 429, "too-many-devices",
                     "the subscriptions of one connection name at most 100000 devices", -1);
        return;
    }
    hub_sub *s = hub_sub_new(hub, &f);
    drv_hub_filter_free(&f);
    if (!s || !hub_sub_index(hub, s)) {
        hub_sub_free(hub, s);
        send_ws_json(c, "error", id, "subscribe", 503, "unavailable", "out of memory", -1);
        return;
    }
    snprintf(s->id, sizeof(s->id), "%s", id);
    s->c = c;
    c->subs[c->nsubs++] = s;
    send_ws_json(c, "ack", id, "subscribe", 0, NULL, NULL,
                 s->f.all_devices ? -1 : (int64_t)s->f.ndevices);
}

static void ws_unsubscribe(hub_conn *c, const char *id)
{
    int i = sub_find(c, id);
    if (i < 0) {
        send_ws_json(c, "error", id, "unsubscribe", 404, "not-found",
                     "no subscription with this id on the connection", -1);
        return;
    }
    hub_sub_free(c->hub, c->subs[i]);
    c->subs[i] = c->subs[--c->nsubs];
    send_ws_json(c, "ack", id, "unsubscribe", 0, NULL, NULL, -1);
}

static void ws_text(hub_conn *c, const uint8_t *p, size_t n)
{
    json_error_t jerr;
    json_t *m = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &jerr);
    const char *op = json_string_value(json_object_get(m, "op"));
    json_t *jid = json_object_get(m, "id");
    const char *id = json_string_value(jid);
    const char *sid = id && id_valid(id) ? id : NULL; /* echoed only when printable */
    if (!json_is_object(m)) {
        send_ws_json(c, "error", NULL, NULL, 400, "bad-request", "each message is one JSON object",
                     -1);
    } else if (!op) {
        send_ws_json(c, "error", sid, NULL, 400, "bad-request", "\"op\" is missing", -1);
    } else if (strcmp(op, "ping") == 0) {
        send_ws_json(c, "pong", sid, NULL, 0, NULL, NULL, -1);
    } else if (strcmp(op, "subscribe") != 0 && strcmp(op, "unsubscribe") != 0) {
        send_ws_json(c, "error", sid, NULL, 400, "bad-request",
                     "\"op\" is one of subscribe, unsubscribe, ping", -1);
    } else if (!sid) {
        send_ws_json(c, "error", NULL, op, 400, "bad-request",
                     "\"id\" is 1 to 64 printable ASCII characters, no quotes or backslashes", -1);
    } else if (strcmp(op, "subscribe") == 0) {
        ws_subscribe(c, sid, (const char *)p, n);
    } else {
        ws_unsubscribe(c, sid);
    }
    json_decref(m);
}

/* Every complete frame in c->in. */
static void ws_take(hub_conn *c)
{
    while (!c->dead && c->state == HC_OPEN && drv_buf_avail(&c->in) > 0) {
        drv_wsf_event ev;
        size_t used = 0;
        uint16_t code = 0;
        drv_err e =
            drv_wsf_next(&c->rd, c->in.data + c->in.off, drv_buf_avail(&c->in), &ev, &used, &code);
        /* ev.data may point into c->in: consume only after handling it. */
        if (e == DRV_AGAIN) {
            drv_buf_consume(&c->in, used);
            break;
        }
        if (e != DRV_OK) {
            drv_buf_consume(&c->in, used);
            hub_conn_finish(c, code ? code : 1002, NULL, NULL);
            return;
        }
        switch (ev.opcode) {
        case DRV_WSF_TEXT:
            ws_text(c, ev.data, ev.len);
            break;
        case DRV_WSF_BINARY:
            drv_buf_consume(&c->in, used);
            hub_conn_finish(c, 1003, NULL, NULL);
            return;
        case DRV_WSF_PING:
            send_ws_frame(c, DRV_WSF_PONG, ev.data, ev.len);
            break;
        case DRV_WSF_PONG:
            break;
        case DRV_WSF_CLOSE: {
            drv_buf_consume(&c->in, used);
            hub_conn_finish(c, 1000, NULL, NULL); /* echo the close, then end */
            return;
        }
        }
        drv_buf_consume(&c->in, used);
    }
    if (drv_buf_avail(&c->in) == 0)
        drv_buf_free(&c->in);
}

/* ------------------------------------------------------------------------ */
/* Input, timers                                                             */

static void conn_read(hub_conn *c)
{
    for (int rounds = 0; rounds < 16 && !c->dead; rounds++) {
        uint8_t scratch[READ_SLICE];
        uint8_t *dst = scratch;
        size_t room = sizeof(scratch);
        drv_err e = DRV_OK;
        bool ws = c->transport == DRV_HUB_WEBSOCKET && c->state == HC_OPEN;
        if (ws) {
            dst = drv_buf_reserve(&c->in, READ_SLICE, &e);
            if (!dst) { /* a frame bigger than the reader allows is refused before this */
                hub_conn_finish(c, 1009, NULL, NULL);
                return;
            }
            room = c->in.size - c->in.len;
            if (room > READ_SLICE)
                room = READ_SLICE;
        }
        size_t n = 0;
        e = c->st ? drv_stream_read(c->st, dst, room, &n) : drv_read(c->io.fd, dst, room, &n);
        if (e == DRV_AGAIN)
            break;
        if (e != DRV_OK || n == 0) {
            hub_conn_close(c); /* EOF or error: nobody is listening any more */
            return;
        }
        c->last_rx_ms = drv_loop_now(c->hub->loop);
        if (ws) {
            c->in.len += (uint32_t)n;
            ws_take(c);
        }
        /* SSE clients have nothing to say; what they send is dropped. */
    }
    if (!c->dead && drv_buf_avail(&c->in) == 0)
        drv_buf_free(&c->in); /* the read slice reserved last: an idle stream holds none */
    if (!c->dead)
        update_events(c);
}

static void on_io(void *ud, uint32_t events)
{
    hub_conn *c = ud;
    if (events & (DRV_EV_READ | DRV_EV_ERROR))
        conn_read(c);
    if (!c->dead && (events & DRV_EV_WRITE))
        hub_conn_flush(c);
}

/* The token behind the stream still holds: not expired, not revoked. */
static bool token_good(hub_conn *c)
{
    drv_hub *hub = c->hub;
    if (c->who.expires_ms && (int64_t)drv_wall_ms() >= c->who.expires_ms) {
        hub_conn_finish(c, 1008, "token-expired", "the token behind this stream has expired");
        return false;
    }
    if (hub->cfg.revalidate && !hub->cfg.revalidate(hub->cfg.revalidate_ud, &c->who)) {
        hub_conn_finish(c, 1008, "token-revoked",
                        "the token behind this stream was revoked, or its tenant deleted");
        return false;
    }
    return true;
}

static void on_heartbeat(void *ud)
{
    hub_conn *c = ud;
    uint32_t hb = c->hub->cfg.heartbeat_ms;
    if (!token_good(c))
        return;
    /* A replay may exceed the buffer's cap, but only while it is read. */
    if (c->replay_left && c->written == c->written_at_beat) {
        atomic_fetch_add_explicit(&c->hub->slow_consumers, 1, memory_order_relaxed);
        hub_conn_finish(c, 4008, "slow-consumer", "the replay was not read for a heartbeat");
        return;
    }
    c->written_at_beat = c->written;
    if (c->transport == DRV_HUB_WEBSOCKET) {
        uint64_t now = drv_loop_now(c->hub->loop);
        if (now - c->last_rx_ms > 3ull * hb) {
            hub_conn_finish(c, 1008, "idle", "no frame from the client for 3 heartbeats");
            return;
        }
        send_ws_frame(c, DRV_WSF_PING, NULL, 0);
    } else {
        send_control(c, ": heartbeat\n\n", 13);
    }
    if (!c->dead)
        arm_heartbeat(c);
}

static void arm_heartbeat(hub_conn *c)
{
    drv_timer_start(c->hub->loop, &c->timer, c->hub->cfg.heartbeat_ms, on_heartbeat, c);
}

/* The first heartbeat comes at a random point of the interval, so that
 * streams opened together (a dashboard fleet after a restart) do not all
 * ping and re-check their tokens in the same tick. */
static void arm_first_heartbeat(hub_conn *c)
{
    uint32_t hb = c->hub->cfg.heartbeat_ms;
    uint64_t x = (uint64_t)(uintptr_t)c ^ drv_mono_ms();
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    drv_timer_start(c->hub->loop, &c->timer, hb / 2 + x % (hb / 2 + 1), on_heartbeat, c);
}

/* ------------------------------------------------------------------------ */
/* Opening                                                                   */

static void discard_init(drv_hub *hub, hub_msg *m)
{
    if (m->init.st)
        drv_stream_free(m->init.st, 0);
    close(m->init.fd);
    hub_sub_free(hub, m->sub);
}

drv_err hub_conn_open(drv_hub *hub, hub_msg *m)
{
    const drv_hub_conn_init *in = &m->init;
    if (drv_hub_full(hub)) {
        discard_init(hub, m);
        return DRV_LIMIT;
    }
    hub_conn *c = drv_calloc(1, sizeof(*c));
    if (!c) {
        discard_init(hub, m);
        return DRV_NOMEM;
    }
    c->hub = hub;
    c->io.fd = in->fd;
    c->io.cb = on_io;
    c->io.ud = c;
    c->st = in->st;
    c->peer = in->peer;
    c->transport = in->transport;
    c->who = in->who;
    c->last_rx_ms = drv_loop_now(hub->loop);
    c->sub_tokens = SUBSCRIBE_BURST;
    c->sub_bucket_at = c->last_rx_ms;
    c->rd.max_message = WS_MAX_MESSAGE;
    drv_buf_init(&c->in, (size_t)DRV_WSF_FRAME_MAX(WS_MAX_MESSAGE) + READ_SLICE);
    /* A replay's JSON is a few times its records (ids, names, quotes). */
    drv_buf_init(&c->out, (size_t)hub->cfg.max_buffer_bytes + in->ninitial + 8 * in->nreplay +
                              (in->nreplay ? (64u << 10) : 0) + HUB_OUT_HEADROOM + HUB_EVENT_ROOM);
    if (drv_loop_add(hub->loop, &c->io, DRV_EV_READ) != DRV_OK) {
        c->st = NULL;
        drv_free(c);
        discard_init(hub, m);
        return DRV_IO;
    }
    c->next = hub->conns;
    if (hub->conns)
        hub->conns->prev = c;
    hub->conns = c;
    atomic_fetch_add_explicit(&hub->connections[c->transport], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&hub->connections_total, 1, memory_order_relaxed);
    if (in->ninitial)
        send_control(c, in->initial, in->ninitial);
    if (c->dead) {
        hub_sub_free(hub, m->sub);
        return DRV_NOMEM;
    }
    if (c->transport == DRV_HUB_SSE && m->sub) {
        hub_sub *s = m->sub;
        s->c = c;
        c->subs[c->nsubs++] = s;
        c->cur_t = in->cursor_t;
        c->cur_e = in->cursor_e;
        c->cur_s = in->cursor_s;

        if (in->nreplay) {
            size_t before = drv_buf_avail(&c->out);
            hub_deliver_replay(hub, s, in->replay, in->nreplay);
            /* The replay is over the cap by design: it does not count until written. */
            if (!c->dead && drv_buf_avail(&c->out) > before)
                c->replay_left = drv_buf_avail(&c->out) - before;
        }
        if (s->held_overflow) {
            /* More arrived during the replay than could be held: the stream
             * goes on from the present, and says so with the new position. */
            c->cur_s = drv_hub_seq(hub);
            int64_t now = (int64_t)drv_wall_ms();
            if (now > c->cur_t)
                c->cur_t = now;
            char reset[160];
            int rn = snprintf(
                reset, sizeof(reset),
                "id: %lld.%lld.%llu\nevent: reset\ndata: {\"code\":\"resume-too-large\"}\n\n",
                (long long)c->cur_t, (long long)c->cur_e, (unsigned long long)c->cur_s);
            send_control(c, reset, (size_t)rn);
            drv_buf_free(&s->held);
        } else {
            hub_deliver_held(hub, s, in->seam_e, in->seam_s);
        }
        drv_free(c->seam_keys); /* only the seam needed them */
        c->seam_keys = NULL;
        c->nseam_keys = 0;
    }
    if (in->npre && !c->dead && c->transport == DRV_HUB_WEBSOCKET) {
        if (drv_buf_append(&c->in, in->pre, in->npre) == DRV_OK)
            ws_take(c);
        else
            hub_conn_finish(c, 1009, NULL, NULL);
    }
    if (!c->dead && c->state == HC_OPEN)
        arm_first_heartbeat(c);
    if (!c->dead)
        hub_mark_dirty(c);
    return DRV_OK;
}
