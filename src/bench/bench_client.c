/*
 * bench_client.c — one client thread of `drover bench`: its own epoll
 * loop driving a share of the run's MQTT connections.
 *
 * A loop turn is: wait for I/O (at most 1 ms while pacing), read and handle
 * every ready connection, generate the publishes that are due, then write
 * every connection that has output, once (batched writes).  Reads land in
 * the thread's read buffer and complete packets are decoded in place; only
 * a partial packet's tail is copied into the connection's own capped
 * buffer.  Publishes are encoded straight into the connection's output
 * buffer from one payload scratch area, so after the buffers have grown to
 * their working size the steady state allocates nothing.
 *
 * Each client follows this state machine:
 *
 *   C_IDLE ─start─▶ C_CONNECTING ─writable─▶ (--tls: C_TLS ─handshake─▶) C_CONNACK ─CONNACK─┬─▶ C_READY
 *                                                  (subscriber) C_SUBACK ◀─┘, then SUBACK ─▶ C_READY
 *   C_READY ─phase STOP (or connect scenario: CONNACK)─▶ C_CLOSING ─EOF / 1 s─▶ C_CLOSED
 *   any ─error / broker close─▶ C_CLOSED      (connect scenario: C_CLOSED ─RUN─▶ C_IDLE again)
 *
 * The PUBLISH payload carries the send time (monotonic ns), the publisher's
 * sequence number and the publisher's number, all little-endian; the rest
 * of the payload is filler.  Subscribers keep the next expected sequence of
 * every publisher they hear, which gives loss and reordering exactly.
 *
 * With --tls every connection runs a full TLS handshake (bench_tls.c) in
 * C_TLS before its queued CONNECT is written; reads and writes then go
 * through OpenSSL, which may need the other socket event than the one that
 * woke us (tls_want_write).
 */
#include "bench/bench_int.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "mqtt/mqtt.h"
#include "platform/clock.h"
#include "platform/loop.h"
#include "platform/net.h"

#define READ_BUF_SIZE (256u * 1024u)  /* the thread's shared read buffer */
#define MAX_EVENTS 512u               /* events taken per epoll_wait */
#define READS_PER_EVENT 4             /* reads per ready socket per turn, for fairness */
#define OUT_HIGH_WATER (256u * 1024u) /* a publisher stops generating above this backlog */
#define MAX_BURST 1024u               /* publishes generated per publisher per turn */
#define CONNECT_TIMEOUT_MS 10000u     /* connect + CONNACK (+ SUBACK) must take less */
#define CLOSE_WAIT_MS 1000u           /* wait for the broker's close after DISCONNECT */
#define STOP_WAIT_MS 3000u            /* longest the STOP phase may take */
#define SWEEP_MS 100u                 /* timeouts and keep alive checked this often */

typedef enum {
    C_IDLE,       /* not started (or a connector between cycles) */
    C_CONNECTING, /* TCP connect in progress, CONNECT queued */
    C_TLS,        /* TLS handshake in progress, CONNECT queued */
    C_CONNACK,    /* CONNECT sent, waiting for CONNACK */
    C_SUBACK,     /* SUBSCRIBE sent, waiting for SUBACK */
    C_READY,      /* connected (and subscribed) */
    C_CLOSING,    /* DISCONNECT sent, waiting for the broker to close */
    C_CLOSED,     /* socket closed */
} client_state;

typedef enum {
    R_PUB,       /* publishes */
    R_SUB,       /* subscribes and receives */
    R_IDLE,      /* connects and holds */
    R_CONNECTOR, /* connects and disconnects in a loop */
} client_role;

typedef struct client {
    int fd;                    /* socket, -1 when closed */
    uint32_t num;              /* number of the client within the run */
    uint8_t role;              /* a client_role */
    uint8_t state;             /* a client_state */
    bool counted_ready;        /* has been counted in run->ready / run->open */
    bool poll_write;           /* EPOLLOUT currently requested */
    bool dirty;                /* on the thread's flush list */
    bool tls_want_write;       /* a TLS read needs writability to go on */
    bench_tls *tls;            /* --tls: the connection's TLS state, NULL otherwise */
    struct client *dirty_next; /* next on the flush list */
    drv_buf in;                /* tail of a partial packet (capped) */
    drv_buf out;               /* bytes waiting to be written */
    uint64_t state_ms;         /* when the current state began (timeouts) */
    uint64_t last_tx_ms;       /* last write of a packet (keep alive) */
    uint64_t connect_ns;       /* when the TCP connect started (connect latency) */
    char id[48];               /* MQTT client identifier */
    char topic[64];            /* topic published to or subscribed to */
    uint16_t topic_len;        /* bytes of topic */
    /* publisher */
    uint32_t pub_num;   /* publisher number, carried in the payload */
    uint32_t seq;       /* next sequence number */
    uint64_t paced;     /* publishes the pacer has accounted for (sent or skipped) */
    uint32_t window;    /* QoS 1/2 window: --inflight, lowered to the broker's Receive Maximum */
    uint32_t inflight;  /* QoS 1/2 publishes not yet completed */
    uint32_t ring;      /* slots in ack_ns; packet id = slot + 1 */
    uint32_t next_slot; /* slot of the next packet id */
    uint64_t *ack_ns;   /* send time per packet id slot (QoS 1/2 only) */
    /* subscriber */
    uint32_t pub_first; /* first publisher number heard */
    uint32_t pub_count; /* publishers heard (entries of expect) */
    uint32_t *expect;   /* next expected sequence per publisher heard */
} client;

struct bench_thread {
    bench_run *run;                 /* the shared run */
    const bench_opts *o;            /* run->o */
    uint32_t index;                 /* thread number */
    pthread_t tid;                  /* the thread, once started */
    bool started;                   /* tid is valid */
    bench_poll *poll;               /* this thread's epoll */
    bench_event events[MAX_EVENTS]; /* filled by bench_poll_wait */
    client *clients;                /* the clients this thread drives */
    uint32_t nclients;              /* entries in clients */
    uint32_t next_start;            /* first client not yet started in setup */
    uint32_t pending;               /* clients between start and CONNACK/SUBACK */
    uint32_t live;                  /* clients with an open socket */
    client *dirty;                  /* flush list for this turn */
    uint8_t *rbuf;                  /* shared read buffer, READ_BUF_SIZE */
    uint8_t *payload;               /* PUBLISH payload scratch, o->size bytes */
    double per_pub_ns;      /* pacing: publishes per nanosecond per publisher; 0 = unpaced */
    uint64_t max_backlog;   /* pacing: publishes a late publisher may catch up */
    uint64_t now_ns;        /* monotonic time of the latest read or turn start */
    uint64_t now_ms;        /* now_ns in ms */
    uint64_t last_sweep_ms; /* last timeout / keep alive sweep */
    uint64_t stop_ms;       /* when the STOP phase was seen */
    int phase;              /* the last phase acted on */
    uint32_t inflight;      /* unacknowledged publishes of this thread's publishers */
    uint64_t pub_sent, pub_delivered; /* counts already added to the run's progress */
    uint32_t pub_inflight;            /* inflight already added to the run's progress */
    bench_counts c;                   /* this thread's counters */
    bench_hist lat;                   /* publish → receive latency, sends in the window */
    bench_hist ack;                   /* publish → PUBACK/PUBCOMP, or connect → CONNACK */
    bench_hist cyc;                   /* connect scenario: connect → close */
    char tls_desc[96];                /* protocol, cipher, group of the first handshake */
    bool tls_logged;                  /* a handshake failure was reported */
};

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}
static uint32_t get_le32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static bool in_window(const bench_run *r, uint64_t ns)
{
    return ns >= r->window_ns && ns < r->end_ns;
}

static void mark_dirty(bench_thread *t, client *c)
{
    if (!c->dirty && c->fd >= 0) {
        c->dirty = true;
        c->dirty_next = t->dirty;
        t->dirty = c;
    }
}

static void set_state(bench_thread *t, client *c, client_state s)
{
    c->state = (uint8_t)s;
    c->state_ms = t->now_ms;
}

/* Close the socket; `lost` says the broker (or an error) ended a live connection. */
static void close_client(bench_thread *t, client *c, bool lost)
{
    bench_run *r = t->run;
    if (c->fd < 0)
        return;
    if (c->state == C_CONNECTING || c->state == C_TLS || c->state == C_CONNACK ||
        c->state == C_SUBACK) {
        t->pending--;
        if (c->role == R_CONNECTOR) {
            /* A cycle cut short by the end of the run is not a failure. */
            if (t->phase != BENCH_PH_STOP)
                t->c.connects_failed++;
        } else if (!c->counted_ready) {
            t->c.connects_failed++;
            atomic_fetch_add_explicit(&r->failed, 1, memory_order_relaxed);
        }
    }
    if (c->counted_ready) {
        atomic_fetch_sub_explicit(&r->open, 1, memory_order_relaxed);
        if (lost && c->state == C_READY)
            t->c.dropped++;
    }
    bench_poll_del(t->poll, c->fd);
    if (c->tls) {
        bench_tls_free(c->tls); /* no close_notify: the broker has closed, or we abort */
        c->tls = NULL;
    }
    drv_close(c->fd);
    c->fd = -1;
    c->tls_want_write = false;
    t->live--;
    t->inflight -= c->inflight;
    c->inflight = 0;
    c->poll_write = false;
    drv_buf_consume(&c->in, drv_buf_avail(&c->in));
    drv_buf_consume(&c->out, drv_buf_avail(&c->out));
    set_state(t, c, C_CLOSED);
}

/* Append a packet the encoder produced; an encoding failure closes the client. */
static bool encoded(bench_thread *t, client *c, drv_err e)
{
    if (e != DRV_OK) {
        t->c.protocol_errors++;
        close_client(t, c, true);
        return false;
    }
    mark_dirty(t, c);
    return true;
}

static void send_connect(bench_thread *t, client *c)
{
    mqtt_connect_out co = {
        .version = t->o->protocol,
        .clean_start = true,
        .keep_alive = t->o->keepalive,
        .client_id = c->id,
    };
    encoded(t, c, mqtt_encode_connect(&c->out, &co));
}

static void send_disconnect(bench_thread *t, client *c)
{
    drv_err e = t->o->protocol == MQTT_V5
                    ? mqtt_encode_disconnect(&c->out, MQTT_V5, MQTT_DISCONNECT, 0, NULL)
                    : mqtt_encode_simple(&c->out, MQTT_DISCONNECT);
    if (encoded(t, c, e))
        set_state(t, c, C_CLOSING);
}

/* Ask for writability (besides readability) or stop asking. */
static void set_poll_write(bench_thread *t, client *c, bool want)
{
    if (c->fd >= 0 && want != c->poll_write) {
        c->poll_write = want;
        bench_poll_mod(t->poll, c->fd, DRV_EV_READ | (want ? DRV_EV_WRITE : 0), c);
    }
}

static void on_readable(bench_thread *t, client *c);

/* Drive the TLS handshake; once done, CONNECT (queued) goes out. */
static void tls_step(bench_thread *t, client *c)
{
    uint32_t want = 0;
    drv_err e = bench_tls_handshake(c->tls, &want);
    if (e == DRV_AGAIN) {
        set_poll_write(t, c, want == DRV_EV_WRITE);
        return;
    }
    if (e != DRV_OK) {
        if (!t->o->json && !t->tls_logged) {
            char why[256];
            bench_tls_why(c->tls, why, sizeof(why));
            fprintf(stderr, "drover bench: %s: TLS: %s\n", c->id, why);
            t->tls_logged = true;
        }
        close_client(t, c, false);
        return;
    }
    if (!t->tls_desc[0])
        bench_tls_describe(c->tls, t->tls_desc, sizeof(t->tls_desc));
    set_state(t, c, C_CONNACK);
    mark_dirty(t, c);
    if (bench_tls_pending(c->tls))
        on_readable(t, c);
}

/* The TCP connection is up: MQTT next, or the TLS handshake first. */
static void connected(bench_thread *t, client *c)
{
    if (!c->tls) {
        set_state(t, c, C_CONNACK);
        mark_dirty(t, c);
        return;
    }
    set_state(t, c, C_TLS);
    tls_step(t, c);
}

/* Open the TCP connection and queue CONNECT. */
static void start_client(bench_thread *t, client *c)
{
    bool done = false;
    int fd = -1;
    c->connect_ns = t->now_ns;
    c->inflight = 0;
    c->next_slot = 0;
    t->pending++;
    set_state(t, c, C_CONNECTING);
    drv_err e = bench_sys_connect(&t->run->addr, &fd, &done);
    if (e != DRV_OK)
        goto out_fail;
    if (bench_poll_add(t->poll, fd, DRV_EV_READ | (done ? 0 : DRV_EV_WRITE), c) != DRV_OK) {
        drv_close(fd);
        goto out_fail;
    }
    c->fd = fd;
    c->poll_write = !done;
    t->live++;
    if (t->run->tls_ctx &&
        bench_tls_new(t->run->tls_ctx, t->o->servername, fd, &c->tls) != DRV_OK) {
        close_client(t, c, false);
        return;
    }
    send_connect(t, c);
    if (c->fd >= 0 && done)
        connected(t, c);
    return;
out_fail:
    t->pending--;
    t->c.connects_failed++;
    if (c->role != R_CONNECTOR)
        atomic_fetch_add_explicit(&t->run->failed, 1, memory_order_relaxed);
    set_state(t, c, C_CLOSED);
}

static void became_ready(bench_thread *t, client *c)
{
    set_state(t, c, C_READY);
    t->pending--;
    c->counted_ready = true;
    atomic_fetch_add_explicit(&t->run->ready, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->run->open, 1, memory_order_relaxed);
}

static bool on_connack(bench_thread *t, client *c, const mqtt_packet *p)
{
    if (c->state != C_CONNACK || p->u.connack.reason != 0) {
        if (!t->o->json)
            fprintf(stderr, "drover bench: %s: CONNACK refused: 0x%02x %s\n", c->id,
                    p->u.connack.reason, mqtt_reason_str(p->u.connack.reason));
        return false;
    }
    t->c.connects_ok++;
    const mqtt_props *pr = &p->u.connack.props;
    if (mqtt_props_has(pr, MQTT_PROP_RECEIVE_MAXIMUM) && pr->receive_maximum < c->window)
        c->window = pr->receive_maximum;
    switch (c->role) {
    case R_SUB:
        set_state(t, c, C_SUBACK);
        return encoded(t, c,
                       mqtt_encode_subscribe(&c->out, t->o->protocol, 1, c->topic, t->o->qos));
    case R_CONNECTOR:
        if (in_window(t->run, c->connect_ns))
            bench_hist_record(&t->ack, t->now_ns - c->connect_ns);
        t->pending--;
        send_disconnect(t, c);
        return true;
    default:
        became_ready(t, c);
        return true;
    }
}

static bool on_suback(bench_thread *t, client *c, const mqtt_packet *p)
{
    const mqtt_suback *s = &p->u.suback;
    if (c->state != C_SUBACK || s->reasons.len < 1 || s->reasons.p[0] >= 0x80) {
        if (!t->o->json)
            fprintf(stderr, "drover bench: %s: subscription refused\n", c->id);
        return false;
    }
    became_ready(t, c);
    return true;
}

/* A PUBLISH delivered to a subscriber: latency, sequence, acknowledgement. */
static bool on_publish(bench_thread *t, client *c, const mqtt_packet *p)
{
    const mqtt_publish *pub = &p->u.publish;
    if (pub->payload.len >= BENCH_MIN_PAYLOAD && c->role == R_SUB) {
        uint64_t sent_ns = get_le64(pub->payload.p);
        uint32_t seq = get_le32(pub->payload.p + 8);
        uint32_t num = get_le32(pub->payload.p + 12);
        if (num >= c->pub_first && num - c->pub_first < c->pub_count) {
            uint32_t *exp = &c->expect[num - c->pub_first];
            if (seq >= *exp) {
                t->c.gaps += seq - *exp;
                t->c.recv_unique++;
                *exp = seq + 1;
            } else {
                t->c.reordered++;
            }
            t->c.recv++;
            if (in_window(t->run, t->now_ns))
                t->c.recv_window++;
            if (in_window(t->run, sent_ns))
                bench_hist_record(&t->lat, t->now_ns >= sent_ns ? t->now_ns - sent_ns : 0);
        } else {
            t->c.foreign++;
        }
    } else {
        t->c.foreign++;
    }
    if (pub->qos == 1)
        return encoded(
            t, c, mqtt_encode_ack(&c->out, t->o->protocol, MQTT_PUBACK, pub->packet_id, 0, NULL));
    if (pub->qos == 2)
        return encoded(
            t, c, mqtt_encode_ack(&c->out, t->o->protocol, MQTT_PUBREC, pub->packet_id, 0, NULL));
    return true;
}

/* PUBACK or PUBCOMP completes a publisher's QoS 1/2 publish. */
static bool on_complete(bench_thread *t, client *c, uint16_t packet_id)
{
    if (c->role != R_PUB || c->inflight == 0 || packet_id == 0 || packet_id > c->ring)
        return false;
    uint64_t sent_ns = c->ack_ns[packet_id - 1];
    if (in_window(t->run, sent_ns))
        bench_hist_record(&t->ack, t->now_ns - sent_ns);
    c->inflight--;
    t->inflight--;
    t->c.acked++;
    return true;
}

static bool handle_packet(bench_thread *t, client *c, const mqtt_packet *p)
{
    uint8_t v = t->o->protocol;
    switch (p->type) {
    case MQTT_CONNACK:
        return on_connack(t, c, p);
    case MQTT_SUBACK:
        return on_suback(t, c, p);
    case MQTT_PUBLISH:
        return on_publish(t, c, p);
    case MQTT_PUBACK:
        if (t->o->qos != 1)
            return false;
        return on_complete(t, c, p->u.ack.packet_id);
    case MQTT_PUBREC:
        if (t->o->qos != 2 || c->role != R_PUB)
            return false;
        return encoded(t, c, mqtt_encode_ack(&c->out, v, MQTT_PUBREL, p->u.ack.packet_id, 0, NULL));
    case MQTT_PUBCOMP:
        if (t->o->qos != 2)
            return false;
        return on_complete(t, c, p->u.ack.packet_id);
    case MQTT_PUBREL:
        return encoded(t, c,
                       mqtt_encode_ack(&c->out, v, MQTT_PUBCOMP, p->u.ack.packet_id, 0, NULL));
    case MQTT_PINGRESP:
        return true;
    case MQTT_DISCONNECT:
        if (!t->o->json)
            fprintf(stderr, "drover bench: %s: DISCONNECT from the broker: 0x%02x %s\n", c->id,
                    p->u.disconnect.reason, mqtt_reason_str(p->u.disconnect.reason));
        return false;
    default:
        return false;
    }
}

/* Decode and handle every complete packet in p[0..n); returns bytes used or SIZE_MAX. */
static size_t parse(bench_thread *t, client *c, const uint8_t *p, size_t n)
{
    size_t off = 0;
    while (off < n && c->fd >= 0) {
        uint8_t first;
        uint32_t rem;
        size_t hl;
        drv_err e = mqtt_parse_fixed_header(p + off, n - off, &first, &rem, &hl);
        if (e == DRV_AGAIN)
            break;
        if (e != DRV_OK || rem > c->in.cap / 2)
            goto out_bad;
        if (n - off - hl < rem)
            break;
        mqtt_packet pkt;
        mqtt_decode_error derr;
        if (mqtt_decode(first, p + off + hl, rem, t->o->protocol, true, &pkt, &derr) != DRV_OK)
            goto out_bad;
        off += hl + rem;
        if (!handle_packet(t, c, &pkt))
            goto out_bad;
    }
    return off;
out_bad:
    t->c.protocol_errors++;
    return SIZE_MAX;
}

/* A connection we asked to end is closed; a connector starts its next cycle. */
static void end_cycle(bench_thread *t, client *c)
{
    bool connector = c->role == R_CONNECTOR;
    if (connector && in_window(t->run, t->now_ns))
        t->c.cycles++;
    if (connector && in_window(t->run, c->connect_ns))
        bench_hist_record(&t->cyc, t->now_ns - c->connect_ns);
    close_client(t, c, false);
    if (connector)
        c->state = C_IDLE;
}

/* The broker closed the socket or it failed. */
static void on_eof(bench_thread *t, client *c)
{
    if (c->state == C_CLOSING) {
        end_cycle(t, c);
        return;
    }
    if (!t->o->json && c->state == C_READY && c->role != R_CONNECTOR)
        fprintf(stderr, "drover bench: %s: connection closed by the broker\n", c->id);
    close_client(t, c, true);
}

/* Read from the socket, or through TLS. */
static drv_err client_read(bench_thread *t, client *c, uint8_t *dst, size_t room, size_t *n)
{
    if (!c->tls)
        return drv_read(c->fd, dst, room, n);
    uint32_t want = 0;
    drv_err e = bench_tls_read(c->tls, dst, room, n, &want);
    if (e == DRV_AGAIN && want == DRV_EV_WRITE) {
        c->tls_want_write = true;
        set_poll_write(t, c, true);
    }
    return e;
}

static void on_readable(bench_thread *t, client *c)
{
    /* TLS returns a record (<= 16 KiB) per read: allow more reads per event. */
    int rounds = c->tls ? 4 * READS_PER_EVENT : READS_PER_EVENT;
    for (int round = 0; round < rounds && c->fd >= 0; round++) {
        bool tail = drv_buf_avail(&c->in) > 0;
        uint8_t *dst = t->rbuf;
        size_t room = READ_BUF_SIZE, n = 0;
        if (tail) {
            drv_err re;
            room = 65536;
            dst = drv_buf_reserve(&c->in, room, &re);
            if (!dst) {
                t->c.protocol_errors++;
                close_client(t, c, true);
                return;
            }
        }
        drv_err e = client_read(t, c, dst, room, &n);
        if (e == DRV_AGAIN)
            return;
        if (e != DRV_OK) {
            on_eof(t, c);
            return;
        }
        t->now_ns = drv_mono_ns();
        size_t used;
        if (tail) {
            c->in.len += n;
            used = parse(t, c, c->in.data + c->in.off, drv_buf_avail(&c->in));
            if (used != SIZE_MAX && c->fd >= 0)
                drv_buf_consume(&c->in, used);
        } else {
            used = parse(t, c, dst, n);
            if (used != SIZE_MAX && used < n && c->fd >= 0 &&
                drv_buf_append(&c->in, dst + used, n - used) != DRV_OK)
                used = SIZE_MAX;
        }
        if (used == SIZE_MAX) {
            close_client(t, c, true);
            return;
        }
        if (n < room && !c->tls)
            return;
    }
}

/* Write what is pending; ask for writability only while something is left. */
static void flush(bench_thread *t, client *c)
{
    while (c->fd >= 0 && drv_buf_avail(&c->out) > 0) {
        size_t n = 0;
        uint32_t want = 0;
        drv_err e = c->tls ? bench_tls_write(c->tls, c->out.data + c->out.off,
                                             drv_buf_avail(&c->out), &n, &want)
                           : drv_write(c->fd, c->out.data + c->out.off, drv_buf_avail(&c->out), &n);
        if (e == DRV_AGAIN)
            break;
        if (e != DRV_OK) {
            on_eof(t, c);
            return;
        }
        drv_buf_consume(&c->out, n);
        c->last_tx_ms = t->now_ms;
    }
    if (c->fd < 0)
        return;
    set_poll_write(t, c, drv_buf_avail(&c->out) > 0 || c->tls_want_write);
}

static void flush_dirty(bench_thread *t)
{
    while (t->dirty) {
        client *c = t->dirty;
        t->dirty = c->dirty_next;
        c->dirty = false;
        if (c->state != C_CONNECTING && c->state != C_TLS)
            flush(t, c);
    }
}

static void on_event(bench_thread *t, client *c, uint32_t ev)
{
    if (c->fd < 0)
        return;
    if (c->state == C_CONNECTING) {
        if (!(ev & (DRV_EV_WRITE | DRV_EV_ERROR)))
            return;
        if (bench_sys_connect_result(c->fd) != DRV_OK) {
            close_client(t, c, false);
            return;
        }
        connected(t, c);
        return;
    }
    if (c->state == C_TLS) {
        tls_step(t, c);
        return;
    }
    if (c->tls_want_write && (ev & DRV_EV_WRITE)) {
        c->tls_want_write = false;
        ev |= DRV_EV_READ;
        mark_dirty(t, c); /* the flush drops the write interest if nothing is queued */
    }
    if (ev & DRV_EV_READ)
        on_readable(t, c);
    if (c->fd >= 0 && (ev & DRV_EV_WRITE))
        mark_dirty(t, c);
}

/* Encode one PUBLISH stamped with send time ts. */
static bool publish_one(bench_thread *t, client *c, uint64_t ts)
{
    put_le64(t->payload, ts);
    put_le32(t->payload + 8, c->seq);
    put_le32(t->payload + 12, c->pub_num);
    mqtt_publish_out po = {
        .qos = t->o->qos,
        .topic = (const uint8_t *)c->topic,
        .topic_len = c->topic_len,
        .payload = t->payload,
        .payload_len = t->o->size,
    };
    if (t->o->qos > 0) {
        po.packet_id = (uint16_t)(c->next_slot + 1);
        c->ack_ns[c->next_slot] = ts;
        c->next_slot = c->next_slot + 1 == c->ring ? 0 : c->next_slot + 1;
    }
    if (mqtt_encode_publish(&c->out, t->o->protocol, &po) != DRV_OK) {
        t->c.protocol_errors++;
        close_client(t, c, true);
        return false;
    }
    c->seq++;
    t->c.sent++;
    if (in_window(t->run, ts))
        t->c.sent_window++;
    if (t->o->qos > 0) {
        c->inflight++;
        t->inflight++;
    }
    return true;
}

/* Generate the publishes each ready publisher may send this turn. */
static void generate(bench_thread *t)
{
    const bench_opts *o = t->o;
    uint64_t ts = drv_mono_ns();
    if (ts < t->run->start_ns)
        return;
    for (uint32_t i = 0; i < t->nclients; i++) {
        client *c = &t->clients[i];
        if (c->role != R_PUB || c->state != C_READY)
            continue;
        uint64_t n;
        if (t->per_pub_ns > 0) {
            uint64_t due = (uint64_t)((double)(ts - t->run->start_ns) * t->per_pub_ns);
            if (due > c->paced + t->max_backlog)
                c->paced = due - t->max_backlog; /* too late: those are not offered */
            n = due - c->paced;
        } else {
            n = o->qos > 0 ? MAX_BURST : (drv_buf_avail(&c->out) == 0 ? o->inflight : 0);
        }
        if (o->qos > 0)
            n = c->inflight < c->window
                    ? (n < c->window - c->inflight ? n : c->window - c->inflight)
                    : 0;
        if (drv_buf_avail(&c->out) > OUT_HIGH_WATER)
            n = 0;
        if (n > MAX_BURST)
            n = MAX_BURST;
        uint64_t k = 0;
        while (k < n && c->fd >= 0 && publish_one(t, c, ts))
            k++;
        c->paced += k;
        if (k)
            mark_dirty(t, c);
    }
}

/* Timeouts, keep alive and (connect scenario) restarting connectors. */
static void sweep(bench_thread *t, int phase)
{
    uint64_t ping_ms = (uint64_t)t->o->keepalive * 500u;
    for (uint32_t i = 0; i < t->nclients; i++) {
        client *c = &t->clients[i];
        uint64_t age = t->now_ms - c->state_ms;
        switch (c->state) {
        case C_CONNECTING:
        case C_TLS:
        case C_CONNACK:
        case C_SUBACK:
            if (age >= CONNECT_TIMEOUT_MS) {
                if (!t->o->json && c->role != R_CONNECTOR)
                    fprintf(stderr, "drover bench: %s: no CONNACK/SUBACK in %u ms\n", c->id,
                            CONNECT_TIMEOUT_MS);
                close_client(t, c, false);
            }
            break;
        case C_CLOSING:
            if (age >= CLOSE_WAIT_MS)
                end_cycle(t, c);
            break;
        case C_READY:
            if (ping_ms && t->now_ms - c->last_tx_ms >= ping_ms && drv_buf_avail(&c->out) == 0 &&
                encoded(t, c, mqtt_encode_simple(&c->out, MQTT_PINGREQ)))
                t->c.pings++;
            break;
        case C_CLOSED:
            /* A connector whose cycle failed starts again at the next sweep. */
            if (c->role == R_CONNECTOR && phase == BENCH_PH_RUN)
                c->state = C_IDLE;
            break;
        default:
            break;
        }
    }
}

/* Start clients: in SETUP up to connect_burst at once; connectors during RUN. */
static void start_more(bench_thread *t, int phase)
{
    if (t->o->scenario == BENCH_CONNECT) {
        if (phase != BENCH_PH_RUN)
            return;
        for (uint32_t i = 0; i < t->nclients; i++)
            if (t->clients[i].state == C_IDLE)
                start_client(t, &t->clients[i]);
        return;
    }
    if (phase != BENCH_PH_SETUP)
        return;
    while (t->next_start < t->nclients && t->pending < t->o->connect_burst)
        start_client(t, &t->clients[t->next_start++]);
}

static void enter_stop(bench_thread *t)
{
    t->stop_ms = t->now_ms;
    for (uint32_t i = 0; i < t->nclients; i++) {
        client *c = &t->clients[i];
        if (c->fd < 0)
            continue;
        if (c->state == C_READY)
            send_disconnect(t, c);
        else if (c->state != C_CLOSING)
            close_client(t, c, false);
    }
}

/* Add this turn's progress to the run's counters for the main thread to watch. */
static void report_progress(bench_thread *t)
{
    bench_run *r = t->run;
    if (t->c.sent != t->pub_sent) {
        atomic_fetch_add_explicit(&r->sent, t->c.sent - t->pub_sent, memory_order_relaxed);
        t->pub_sent = t->c.sent;
    }
    if (t->c.recv_unique != t->pub_delivered) {
        atomic_fetch_add_explicit(&r->delivered, t->c.recv_unique - t->pub_delivered,
                                  memory_order_relaxed);
        t->pub_delivered = t->c.recv_unique;
    }
    if (t->inflight != t->pub_inflight) {
        atomic_fetch_add_explicit(&r->inflight, t->inflight - t->pub_inflight,
                                  memory_order_relaxed);
        t->pub_inflight = t->inflight;
    }
}

static int turn_timeout(bench_thread *t, int phase)
{
    if (phase == BENCH_PH_STOP)
        return 10;
    if (phase == BENCH_PH_RUN && t->run->npub > 0) {
        if (t->per_pub_ns > 0)
            return 1;
        if (t->o->qos == 0)
            return 0;
    }
    return 10;
}

static void *thread_main(void *arg)
{
    bench_thread *t = arg;
    bench_run *r = t->run;
    t->now_ns = drv_mono_ns();
    t->now_ms = t->now_ns / 1000000u;
    t->last_sweep_ms = t->now_ms;
    for (;;) {
        int phase = atomic_load_explicit(&r->phase, memory_order_acquire);
        if (phase != t->phase) {
            t->phase = phase;
            if (phase == BENCH_PH_STOP)
                enter_stop(t);
            flush_dirty(t);
        }
        if (phase == BENCH_PH_STOP && (t->live == 0 || t->now_ms - t->stop_ms >= STOP_WAIT_MS))
            break;
        start_more(t, phase);
        flush_dirty(t);
        int n = bench_poll_wait(t->poll, t->events, turn_timeout(t, phase));
        t->now_ns = drv_mono_ns();
        t->now_ms = t->now_ns / 1000000u;
        for (int i = 0; i < n; i++)
            on_event(t, t->events[i].ptr, t->events[i].events);
        if (phase == BENCH_PH_RUN && t->o->scenario != BENCH_CONNECT)
            generate(t);
        if (t->now_ms - t->last_sweep_ms >= SWEEP_MS) {
            t->last_sweep_ms = t->now_ms;
            sweep(t, phase);
        }
        flush_dirty(t);
        report_progress(t);
    }
    for (uint32_t i = 0; i < t->nclients; i++)
        close_client(t, &t->clients[i], false);
    report_progress(t);
    return NULL;
}

/* Role, topic and identity of client number num. */
static drv_err setup_client(bench_thread *t, client *c, uint32_t num)
{
    const bench_opts *o = t->o;
    bench_run *r = t->run;
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->num = num;
    c->window = o->inflight;
    drv_buf_init(&c->in, 2u * (o->size + 1024u) + 65536u);
    drv_buf_init(&c->out, 16u * 1024u * 1024u);
    snprintf(c->id, sizeof(c->id), "drvbench-%u-%u", (unsigned)r->run_id, (unsigned)num);
    switch (o->scenario) {
    case BENCH_FANIN:
        c->role = num == 0 ? R_SUB : R_PUB;
        c->pub_num = num - 1;
        c->pub_count = r->npub;
        snprintf(c->topic, sizeof(c->topic), "drvbench/%u/fanin", (unsigned)r->run_id);
        break;
    case BENCH_FANOUT:
        c->role = num == 0 ? R_PUB : R_SUB;
        c->pub_count = 1;
        snprintf(c->topic, sizeof(c->topic), "drvbench/%u/fanout", (unsigned)r->run_id);
        break;
    case BENCH_P2P:
        c->role = num % 2 == 0 ? R_PUB : R_SUB;
        c->pub_num = c->pub_first = num / 2;
        c->pub_count = 1;
        snprintf(c->topic, sizeof(c->topic), "drvbench/%u/p2p/%u", (unsigned)r->run_id,
                 (unsigned)(num / 2));
        break;
    case BENCH_IDLE:
        c->role = R_IDLE;
        break;
    case BENCH_CONNECT:
        c->role = R_CONNECTOR;
        break;
    }
    c->topic_len = (uint16_t)strlen(c->topic);
    if (c->role == R_SUB) {
        c->expect = drv_calloc(c->pub_count, sizeof(*c->expect));
        if (!c->expect)
            return DRV_NOMEM;
    }
    if (c->role == R_PUB && o->qos > 0) {
        uint32_t ring = o->inflight * 4u < 64u ? 64u : o->inflight * 4u;
        c->ring = ring > 65535u ? 65535u : ring;
        c->ack_ns = drv_calloc(c->ring, sizeof(*c->ack_ns));
        if (!c->ack_ns)
            return DRV_NOMEM;
    }
    return DRV_OK;
}

drv_err bench_thread_new(bench_run *run, uint32_t index, bench_thread **out)
{
    const bench_opts *o = run->o;
    drv_err err = DRV_NOMEM;
    bench_thread *t = drv_calloc(1, sizeof(*t));
    if (!t)
        goto out;
    t->run = run;
    t->o = o;
    t->index = index;
    t->phase = BENCH_PH_SETUP;
    bench_hist_init(&t->lat);
    bench_hist_init(&t->ack);
    bench_hist_init(&t->cyc);
    t->nclients = run->nconn / run->nthreads + (index < run->nconn % run->nthreads ? 1u : 0u);
    t->clients = drv_calloc(t->nclients ? t->nclients : 1, sizeof(*t->clients));
    t->rbuf = drv_malloc(READ_BUF_SIZE);
    t->payload = drv_malloc(o->size);
    if (!t->clients || !t->rbuf || !t->payload)
        goto out_free;
    memset(t->payload, 'x', o->size);
    for (uint32_t i = 0; i < t->nclients; i++) {
        t->clients[i].fd = -1;
        err = setup_client(t, &t->clients[i], index + i * run->nthreads);
        if (err)
            goto out_free;
    }
    if (o->rate > 0 && run->npub > 0) {
        double per_pub = (double)o->rate / (double)run->npub;
        t->per_pub_ns = per_pub / 1e9;
        t->max_backlog = (uint64_t)(per_pub * 0.05) + 1u; /* 50 ms of catch-up at most */
    }
    err = bench_poll_new(MAX_EVENTS, &t->poll);
    if (err)
        goto out_free;
    *out = t;
    return DRV_OK;
out_free:
    bench_thread_free(t);
out:
    return err;
}

drv_err bench_thread_start(bench_thread *t)
{
    if (pthread_create(&t->tid, NULL, thread_main, t) != 0)
        return DRV_NOMEM;
    t->started = true;
    return DRV_OK;
}

void bench_thread_join(bench_thread *t)
{
    if (t->started)
        pthread_join(t->tid, NULL);
    t->started = false;
}

const bench_counts *bench_thread_counts(const bench_thread *t)
{
    return &t->c;
}

const bench_hist *bench_thread_latency(const bench_thread *t)
{
    return &t->lat;
}

const bench_hist *bench_thread_ack_latency(const bench_thread *t)
{
    return &t->ack;
}

const bench_hist *bench_thread_cycle_latency(const bench_thread *t)
{
    return &t->cyc;
}

const char *bench_thread_tls_desc(const bench_thread *t)
{
    return t->tls_desc;
}

void bench_thread_free(bench_thread *t)
{
    if (!t)
        return;
    if (t->clients) {
        for (uint32_t i = 0; i < t->nclients; i++) {
            client *c = &t->clients[i];
            bench_tls_free(c->tls);
            if (c->fd >= 0)
                drv_close(c->fd);
            drv_buf_free(&c->in);
            drv_buf_free(&c->out);
            drv_free(c->expect);
            drv_free(c->ack_ns);
        }
    }
    bench_poll_free(t->poll);
    drv_free(t->clients);
    drv_free(t->rbuf);
    drv_free(t->payload);
    drv_free(t);
}
