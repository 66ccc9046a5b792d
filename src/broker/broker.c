/*
 * broker.c — the broker object: configuration, listeners, the turn-end
 * commit-then-flush, and teardown.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "broker/broker_int.h"
#include "core/alloc.h"
#include "core/log.h"
#include "net/tls.h"
#include "platform/clock.h"

uint64_t broker_now_s(void)
{
    return drv_wall_s();
}

void broker_identity(const session *s, drv_client_identity *who)
{
    *who = (drv_client_identity){
        .client_id = s->client_id,
        .username = s->username,
        .peer = s->c ? &s->c->peer : NULL,
        .ns = session_ns(s),
        .ctx = s->auth_ctx,
    };
}

bool broker_authorize(drv_broker *b, const session *s, drv_acl_access access, const uint8_t *topic,
                      size_t len)
{
    const drv_auth_ops *ops = b->cfg.auth_ops;
    /* The per-message fast path: no ACL at all, or none for this client. */
    if (!b->acl_active || s->unrestricted)
        return true;
    char buf[1024];
    char *t = len < sizeof(buf) ? buf : drv_malloc(len + 1);
    if (!t)
        return false;
    memcpy(t, topic, len);
    t[len] = '\0';
    drv_client_identity who;
    broker_identity(s, &who);
    bool ok = ops->authorize(b->cfg.auth_state, &who, access, t) == DRV_OK;
    if (t != buf)
        drv_free(t);
    return ok;
}

void broker_client_event(drv_broker *b, conn *c, session *s, bool connected, const char *reason)
{
    const drv_auth_ops *ops = b->cfg.auth_ops;
    if (!ops || !ops->client_event)
        return;
    drv_client_identity who = {
        .client_id = s->client_id,
        .username = s->username,
        .peer = c ? &c->peer : NULL,
        .ns = session_ns(s),
        .ctx = s->auth_ctx,
    };
    ops->client_event(b->cfg.auth_state, &who, connected, reason);
}

void broker_tap_session(drv_broker *b, const session *s, const uint8_t *filter, size_t len)
{
    if (!b->cfg.tap.session || !s->ns_len)
        return;
    drv_client_identity who;
    broker_identity(s, &who);
    b->cfg.tap.session(b->cfg.tap.ud, &who, filter, len);
}

void broker_auth_ctx_release(drv_broker *b, void *ctx)
{
    const drv_auth_ops *ops = b->cfg.auth_ops;
    if (ctx && ops && ops->ctx_release)
        ops->ctx_release(b->cfg.auth_state, ctx);
}

_Thread_local worker *broker_current_worker;

/* Nothing to do: the turn end that follows resumes pauses older than 1 s. */
static void on_pause_timer(void *ud)
{
    (void)ud;
}

void broker_pause(drv_broker *b, conn *c)
{
    if (c->paused)
        return;
    c->paused = true;
    c->paused_at_ms = drv_loop_now(c->w->loop);
    c->paused_next = b->paused;
    b->paused = c;
    /* A paused publisher sends no events, and its consumer may be idle too (or
     * the pause is a quota's): make sure this loop comes round when it is due. */
    worker *w = broker_current_worker;
    if (w && w == c->w && !drv_timer_armed(&w->pause_timer))
        drv_timer_start(w->loop, &w->pause_timer, 1001, on_pause_timer, w);
}

void broker_unpause(drv_broker *b, conn *c)
{
    for (conn **pp = &b->paused; *pp; pp = &(*pp)->paused_next) {
        if (*pp == c) {
            *pp = c->paused_next;
            break;
        }
    }
    c->paused = false;
    c->paused_next = NULL;
}

void broker_resume_all(drv_broker *b)
{
    while (b->paused) {
        conn *c = b->paused;
        b->paused = c->paused_next;
        c->paused = false;
        c->paused_next = NULL;
        conn_mark_dirty(c); /* the owner re-enables reading at its turn end */
    }
}

static inline void lock(drv_broker *b)
{
    pthread_mutex_lock(&b->lock);
}
static inline void unlock(drv_broker *b)
{
    pthread_mutex_unlock(&b->lock);
}

void drv_broker_disconnect(drv_broker *b, const char *ns, const char *username,
                           const char *client_id)
{
    size_t ns_len = strlen(ns);
    lock(b);
    size_t bk;
    /* A scan of every session: decommissioning is rare, and a (namespace, user)
     * index would cost memory on every connection. */
    for (drv_hnode *h = drv_hmap_first(&b->sessions, &bk); h;
         h = drv_hmap_next(&b->sessions, h, &bk)) {
        session *s = (session *)h;
        if (!s->c || s->ns_len != ns_len || memcmp(session_ns(s), ns, ns_len) != 0)
            continue;
        bool match = (username && s->username && strcmp(s->username, username) == 0) ||
                     (client_id && strcmp(s->client_id, client_id) == 0);
        if (match)
            conn_close(s->c, MQTT_RC_ADMINISTRATIVE_ACTION, true);
    }
    unlock(b);
}

uint32_t drv_broker_inject(drv_broker *b, const drv_inject *in)
{
    size_t ns_len = strlen(in->ns), topic_len = strlen(in->topic);
    const uint8_t *topic = (const uint8_t *)in->topic;
    mqtt_prop_builder pb;
    mqtt_pb_init(&pb);
    if (in->content_type)
        mqtt_pb_str(&pb, MQTT_PROP_CONTENT_TYPE, in->content_type,
                    (uint32_t)strlen(in->content_type));
    if (in->response_topic)
        mqtt_pb_str(&pb, MQTT_PROP_RESPONSE_TOPIC, in->response_topic,
                    (uint32_t)strlen(in->response_topic));
    if (in->correlation_len)
        mqtt_pb_str(&pb, MQTT_PROP_CORRELATION_DATA, in->correlation,
                    (uint32_t)in->correlation_len);
    if (topic_len == 0 || topic[0] == '$' || ns_len + 1 + topic_len > 65535 || in->qos > 2 ||
        in->payload_len > b->cfg.max_packet_size || pb.overflow ||
        !mqtt_topic_name_valid(topic, topic_len)) {
        drv_warn("broker: platform message refused", "ns", in->ns, "topic", in->topic);
        return 0;
    }
    uint64_t expiry = in->expiry_s ? broker_now_s() + in->expiry_s : 0;
    lock(b);
    msg *m = msg_new(in->ns, (uint32_t)ns_len, topic, (uint16_t)topic_len, pb.data, pb.len,
                     in->payload, (uint32_t)in->payload_len, in->qos, false, expiry);
    uint32_t n = m ? route_deliver(b, m, NULL, in->online_only) : 0;
    msg_unref(m); /* references are counted under the lock */
    unlock(b);
    return n;
}

/* Write and sync the log records taken so far; ordered between workers by commit_lock. */
static drv_err commit_log(drv_broker *b)
{
    if (!b->persist)
        return DRV_OK;
    pthread_mutex_lock(&b->commit_lock);
    drv_buf batch;
    lock(b);
    persist_take_batch(b->persist, &batch);
    unlock(b);
    drv_err e = persist_write_batch(b->persist, &batch);
    pthread_mutex_unlock(&b->commit_lock);
    return e;
}

/* Per-worker scratch of the connections flushed this turn (owner only). */
typedef struct flush_list {
    conn **items;
    uint32_t count, cap;
} flush_list;

static _Thread_local flush_list tl_flush;

static void flush_list_free(void)
{
    drv_free(tl_flush.items);
    tl_flush.items = NULL;
    tl_flush.count = tl_flush.cap = 0;
}

/*
 * End of every loop turn of a worker:
 *   1. (locked) run the session timers, take this worker's dirty connections
 *      and move each one's `out` to `sending`;
 *   2. commit the log: every record appended before those bytes is on disk
 *      before any of them is written (acknowledged means durable);
 *   3. (unlocked) write `sending` to the sockets;
 *   4. (locked) re-arm, re-queue what was appended meanwhile, finish closes;
 *   5. free the connections that closed.
 */
static void on_turn_end(void *ud)
{
    worker *w = ud;
    drv_broker *b = w->b;
    flush_list *fl = &tl_flush;
    fl->count = 0;
    lock(b);
    if (w->auth_done)
        auth_finish_done(w); /* CONNECTs whose authentication is back: CONNACK this turn */
    drv_wheel_run(&b->wheel, drv_loop_now(w->loop));
    /* No publisher stays paused longer than a second (a consumer may be stuck). */
    uint64_t now = drv_loop_now(w->loop);
    for (conn *p = b->paused; p; p = p->paused_next) {
        if (now > p->paused_at_ms && now - p->paused_at_ms >= 1000) {
            broker_resume_all(b);
            break;
        }
    }
    conn *c = w->dirty;
    for (; c; c = c->dirty_next) {
        if (fl->count == fl->cap) {
            uint32_t cap = fl->cap ? fl->cap * 2 : 256;
            conn **items = drv_realloc(fl->items, cap * sizeof(conn *));
            if (!items)
                break; /* out of memory: the rest stay dirty for the next turn */
            fl->items = items;
            fl->cap = cap;
        }
        fl->items[fl->count++] = c;
    }
    w->dirty = c;
    for (uint32_t i = 0; i < fl->count; i++) {
        fl->items[i]->dirty = false;
        conn_take_output(fl->items[i]);
    }
    unlock(b);

    drv_err ce = commit_log(b);
    if (w->tap_dirty) {
        /* Telemetry accepted this turn is durable before its acknowledgements leave. */
        w->tap_dirty = false;
        drv_err te = b->cfg.tap.commit ? b->cfg.tap.commit(b->cfg.tap.ud) : DRV_OK;
        if (ce == DRV_OK)
            ce = te;
    }
    for (uint32_t i = 0; i < fl->count; i++) {
        conn *fc = fl->items[i];
        if (ce != DRV_OK) {
            /* A failed commit: its acknowledgements must not go out; clients retransmit. */
            drv_buf_free(&fc->sending);
            fc->write_failed = true;
        } else {
            fc->write_failed = !conn_write_sending(fc);
        }
    }

    lock(b);
    for (uint32_t i = 0; i < fl->count; i++)
        conn_after_write(fl->items[i], !fl->items[i]->write_failed);
    unlock(b);

    /* A connection whose authentication is still out is freed when it comes back. */
    conn *keep = NULL;
    bool locked = w->dead != NULL; /* auth_pending is written under the lock */
    if (locked)
        lock(b);
    while (w->dead) {
        conn *dc = w->dead;
        w->dead = dc->next;
        if (dc->auth_pending) {
            dc->next = keep;
            keep = dc;
        } else {
            conn_free(dc);
        }
    }
    w->dead = keep;
    if (locked)
        unlock(b);
    if (w->id == 0 && persist_needs_compact(b->persist)) {
        pthread_mutex_lock(&b->commit_lock);
        lock(b);
        persist_maybe_compact(b->persist, false);
        unlock(b);
        pthread_mutex_unlock(&b->commit_lock);
    }
}

/* Another worker queued output for us (or asks us to stop). */
static void on_wake(void *ud, uint32_t events)
{
    worker *w = ud;
    uint64_t v;
    (void)events;
    ssize_t r = read(w->wake_fd, &v, sizeof(v));
    (void)r;
    lock(w->b);
    w->wake_pending = false;
    bool stop = w->b->stopping;
    unlock(w->b);
    if (stop)
        drv_loop_stop(w->loop);
}

static void on_accept(void *ud, uint32_t events)
{
    listener *l = ud;
    (void)events;
    for (int i = 0; i < 64; i++) {
        int fd;
        drv_peer peer;
        drv_err e = drv_accept(l->io.fd, &fd, &peer);
        if (e == DRV_AGAIN)
            return;
        if (e != DRV_OK) {
            drv_warn("accept failed", "error", drv_strerror(e));
            return;
        }
        conn_accept(l->w, fd, &peer, l->kind);
    }
}

static const char *const kind_names[] = {"mqtt", "mqtts", "ws", "wss"};

drv_err drv_broker_listen(drv_broker *b, const char *hostport, drv_listen_kind kind, int *port)
{
    if ((kind == DRV_LISTEN_MQTTS || kind == DRV_LISTEN_WSS) && !b->tls)
        return DRV_INVAL;
    /* One SO_REUSEPORT socket per worker: the kernel spreads connections across them. */
    char addr[300];
    snprintf(addr, sizeof(addr), "%s", hostport);
    int bound = 0;
    for (int i = 0; i < b->nworkers; i++) {
        worker *w = &b->workers[i];
        listener *l = drv_calloc(1, sizeof(*l));
        if (!l)
            return DRV_NOMEM;
        drv_err e = drv_listen_tcp(addr, 1024, b->nworkers > 1, &l->io.fd, &l->port);
        if (e == DRV_OK) {
            l->w = w;
            l->kind = kind;
            l->io.cb = on_accept;
            l->io.ud = l;
            e = drv_loop_add(w->loop, &l->io, DRV_EV_READ);
            if (e)
                drv_close(l->io.fd);
        }
        if (e) {
            drv_free(l);
            return e;
        }
        l->next = w->listeners;
        w->listeners = l;
        if (i == 0) {
            /* Port 0 picked a port: the other workers bind that same one. */
            bound = l->port;
            char *colon = strrchr(addr, ':');
            if (colon)
                snprintf(colon + 1, sizeof(addr) - (size_t)(colon + 1 - addr), "%d", bound);
        }
    }
    if (port)
        *port = bound;
    char p[16], n[16];
    snprintf(p, sizeof(p), "%d", bound);
    snprintf(n, sizeof(n), "%d", b->nworkers);
    drv_info("listener started", "protocol", kind_names[kind], "address", hostport, "port", p,
             "workers", n);
    return DRV_OK;
}

static drv_err worker_init(drv_broker *b, worker *w, int id)
{
    w->b = b;
    w->id = id;
    w->wake_fd = -1;
    drv_err e = drv_loop_new(&w->loop);
    if (e)
        return e;
    e = drv_eventfd(&w->wake_fd);
    if (e)
        return e;
    w->wake_io.fd = w->wake_fd;
    w->wake_io.cb = on_wake;
    w->wake_io.ud = w;
    e = drv_loop_add(w->loop, &w->wake_io, DRV_EV_READ);
    if (e)
        return e;
    drv_loop_set_turn_end(w->loop, on_turn_end, w);
    return DRV_OK;
}

static unsigned default_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

drv_err drv_broker_new(const drv_broker_config *cfg, drv_broker **out)
{
    drv_broker *b = drv_calloc(1, sizeof(*b));
    if (!b)
        return DRV_NOMEM;
    b->cfg = *cfg;
    b->start_s = drv_wall_s();
    pthread_mutex_init(&b->lock, NULL);
    pthread_mutex_init(&b->commit_lock, NULL);
    pthread_mutex_init(&b->auth_lock, NULL);
    pthread_cond_init(&b->auth_cond, NULL);
    drv_wheel_init(&b->wheel, drv_mono_ms());
    drv_hmap_init(&b->sessions);
    drv_hmap_init(&b->quotas);
    trie_init(&b->subs);
    trie_init(&b->retained);
    b->acl_active = cfg->auth_ops && cfg->auth_ops->authorize &&
                    (!cfg->auth_ops->restricts || cfg->auth_ops->restricts(cfg->auth_state));
    b->ws_cfg.path = cfg->ws_path && cfg->ws_path[0] ? cfg->ws_path : "/mqtt";
    b->ws_cfg.max_message = cfg->max_packet_size + 16;
    b->ws_cfg.max_handshake = 8192;
    b->ws_cfg.handoff = cfg->http_adopt != NULL;
    b->nworkers = (int)(cfg->workers ? cfg->workers : default_workers());
    if (b->nworkers > 64)
        b->nworkers = 64;
    drv_err e = DRV_OK;
    b->workers = drv_calloc((size_t)b->nworkers, sizeof(worker));
    if (!b->workers) {
        drv_free(b);
        return DRV_NOMEM;
    }
    for (int i = 0; i < b->nworkers && e == DRV_OK; i++)
        e = worker_init(b, &b->workers[i], i);
    if (e == DRV_OK && cfg->data_dir) {
        e = persist_open(b, cfg->data_dir, cfg->persist_sync, &b->persist);
        if (e == DRV_OK)
            e = persist_replay(b->persist);
        if (e == DRV_OK)
            e = persist_maybe_compact(b->persist, true);
        if (e)
            drv_error("cannot open the data directory", "path", cfg->data_dir, "error",
                      drv_strerror(e));
    }
    if (e == DRV_OK && cfg->tls_enabled) {
        drv_tls_config tc = {
            .cert_file = cfg->tls_cert_file,
            .key_file = cfg->tls_key_file,
            .data_dir = cfg->data_dir ? cfg->data_dir : ".",
            .client_ca_file = cfg->tls_client_ca_file,
            .require_client_cert = cfg->tls_require_client_cert,
            .crl_file = cfg->tls_crl_file,
            .accept_unverified_client_certs = cfg->tls_accept_unverified,
        };
        e = drv_tls_ctx_new(&tc, &b->tls);
        if (e)
            drv_error("cannot set up TLS", "error", drv_strerror(e));
    }
    if (e == DRV_OK)
        e = auth_thread_start(b);
    if (e) {
        drv_broker_free(b);
        return e;
    }
    sys_start(b);
    *out = b;
    return DRV_OK;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    broker_current_worker = w;
    drv_loop_run(w->loop, false);
    flush_list_free();
    return NULL;
}

drv_err drv_broker_run(drv_broker *b)
{
    /* Signals go to worker 0's signalfd only: block them before any thread starts. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    int started = 1;
    drv_err e = DRV_OK;
    for (int i = 1; i < b->nworkers; i++, started++) {
        if (pthread_create(&b->workers[i].thread, NULL, worker_main, &b->workers[i]) != 0) {
            e = DRV_NOMEM;
            break;
        }
    }
    if (e == DRV_OK) {
        broker_current_worker = &b->workers[0];
        drv_loop_run(b->workers[0].loop, true);
    }
    lock(b);
    b->stopping = true;
    unlock(b);
    for (int i = 1; i < started; i++) {
        uint64_t one = 1;
        ssize_t r = write(b->workers[i].wake_fd, &one, sizeof(one));
        (void)r;
        pthread_join(b->workers[i].thread, NULL);
    }
    broker_current_worker = NULL;
    return e;
}

void drv_broker_get_stats(const drv_broker *b, drv_broker_stats *out)
{
    pthread_mutex_lock((pthread_mutex_t *)&b->lock);
    *out = b->stats;
    pthread_mutex_unlock((pthread_mutex_t *)&b->lock);
    out->bytes_sent = atomic_load(&((drv_broker *)b)->bytes_sent);
}

/* Single-threaded (after run): close every connection, telling 5.0 clients why. */
static void close_all(drv_broker *b)
{
    for (int i = 0; i < b->nworkers; i++) {
        worker *w = &b->workers[i];
        broker_current_worker = w;
        for (conn *c = w->conns; c; c = c->next) {
            if (c->version == MQTT_V5 && c->state == C_CONNECTED && !c->closing_sent_disconnect) {
                c->closing_sent_disconnect = true;
                mqtt_encode_disconnect(&c->out, c->version, MQTT_DISCONNECT,
                                       MQTT_RC_SERVER_SHUTTING_DOWN, NULL);
            }
            conn_close(c, 0, false);
        }
        /* One turn end flushes what fits and finishes every close. */
        on_turn_end(w);
        while (w->conns) { /* anything still open (blocked socket): finish it */
            conn *c = w->conns;
            drv_buf_free(&c->out);
            drv_buf_free(&c->sending);
            conn_after_write(c, false);
            conn_free(w->dead);
            w->dead = NULL;
        }
        broker_current_worker = NULL;
    }
}

void drv_broker_free(drv_broker *b)
{
    if (!b)
        return;
    sys_stop(b);
    auth_thread_stop(b); /* no authentication comes back after this */
    for (int i = 0; i < b->nworkers && b->workers; i++) {
        worker *w = &b->workers[i];
        for (listener *l = w->listeners, *n; l; l = n) {
            n = l->next;
            drv_loop_del(w->loop, &l->io);
            drv_close(l->io.fd);
            drv_free(l);
        }
        w->listeners = NULL;
        if (w->loop)
            close_all(b);
    }
    if (b->persist) {
        persist_maybe_compact(b->persist, true);
        persist_close(b->persist);
        b->persist = NULL;
    }
    size_t bk;
    for (drv_hnode *h = drv_hmap_first(&b->sessions, &bk), *n; h; h = n) {
        n = drv_hmap_next(&b->sessions, h, &bk);
        session *s = (session *)h;
        s->logged = false;
        session_destroy(s);
    }
    drv_hmap_free(&b->sessions);
    quota_free_all(b);
    qitem_pool_free(b);
    trie_free(&b->subs);
    trie_free(&b->retained);
    drv_free(b->matches);
    if (b->tls)
        drv_tls_ctx_free(b->tls);
    for (int i = 0; i < b->nworkers && b->workers; i++) {
        worker *w = &b->workers[i];
        if (w->loop) {
            if (w->wake_fd >= 0)
                drv_loop_del(w->loop, &w->wake_io);
            drv_loop_free(w->loop);
        }
        drv_close(w->wake_fd);
    }
    drv_free(b->workers);
    flush_list_free();
    pthread_mutex_destroy(&b->lock);
    pthread_mutex_destroy(&b->commit_lock);
    drv_free(b);
}
