/*
 * broker.c — the broker object: configuration, listeners, the turn-end
 * commit-then-flush, and teardown.
 */
#include <stdio.h>
#include <string.h>

#include "broker/broker_int.h"
#include "core/alloc.h"
#include "core/log.h"
#include "platform/clock.h"

void drv_broker_config_defaults(drv_broker_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->persist_sync = true;
    cfg->persist_compact_bytes = 64u << 20;
    cfg->max_connections = 100000;
    cfg->max_packet_size = 1u << 20;
    cfg->receive_maximum = 20;
    cfg->max_inflight = 20;
    cfg->max_queued = 1000;
    cfg->topic_alias_maximum = 10;
    cfg->connect_timeout_ms = 10000;
    cfg->max_topic_length = 65535;
    cfg->max_topic_levels = 128;
    cfg->max_subscriptions = 1000;
    cfg->max_session_expiry = UINT32_MAX;
    cfg->max_keepalive = 0;
    cfg->memory_limit = 0;
    cfg->max_client_out_buffer = 8u << 20;
    cfg->sys_interval_s = 10;
    cfg->retain_available = true;
    cfg->maximum_qos = 2;
}

uint64_t broker_now_s(void)
{
    return drv_wall_s();
}

bool broker_authorize(drv_broker *b, const session *s, drv_acl_access access, const uint8_t *topic,
                      size_t len)
{
    const drv_auth_ops *ops = b->cfg.auth_ops;
    if (!ops || !ops->authorize)
        return true;
    char buf[1024];
    char *t = len < sizeof(buf) ? buf : drv_malloc(len + 1);
    if (!t)
        return false;
    memcpy(t, topic, len);
    t[len] = '\0';
    drv_client_identity who = {s->client_id, s->username, s->c ? s->c->peer : "",
                               s->c ? s->c->loopback : false};
    bool ok = ops->authorize(b->cfg.auth_state, &who, access, t) == DRV_OK;
    if (t != buf)
        drv_free(t);
    return ok;
}

/* End of every loop turn: make this turn's state durable, then write to sockets. */
static void on_turn_end(void *ud)
{
    drv_broker *b = ud;
    if (persist_commit(b->persist) != DRV_OK) {
        /* The turn's state is not durable, so its acknowledgements must not be sent:
         * drop them and close; clients retransmit unacknowledged QoS 1/2 on reconnect. */
        while (b->dirty) {
            conn *c = b->dirty;
            b->dirty = c->dirty_next;
            c->dirty = false;
            drv_buf_free(&c->out);
            conn_close(c, 0, true);
        }
    }
    while (b->dirty) {
        conn *c = b->dirty;
        b->dirty = c->dirty_next;
        c->dirty = false;
        if (c->state != C_DEAD)
            conn_flush(c);
    }
    while (b->dead) {
        conn *c = b->dead;
        b->dead = c->next;
        if (c->dirty) {
            /* Still on the dirty list (closed after being queued): unlink it. */
            for (conn **pp = &b->dirty; *pp; pp = &(*pp)->dirty_next)
                if (*pp == c) {
                    *pp = c->dirty_next;
                    break;
                }
        }
        conn_free(c);
    }
    persist_maybe_compact(b->persist, false);
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
        conn_accept(l->b, fd, &peer);
    }
}

drv_err drv_broker_listen(drv_broker *b, const char *hostport, int *port)
{
    listener *l = drv_calloc(1, sizeof(*l));
    if (!l)
        return DRV_NOMEM;
    drv_err e = drv_listen_tcp(hostport, 1024, &l->io.fd, &l->port);
    if (e) {
        drv_free(l);
        return e;
    }
    l->b = b;
    l->io.cb = on_accept;
    l->io.ud = l;
    e = drv_loop_add(b->loop, &l->io, DRV_EV_READ);
    if (e) {
        drv_close(l->io.fd);
        drv_free(l);
        return e;
    }
    l->next = b->listeners;
    b->listeners = l;
    if (port)
        *port = l->port;
    char p[16];
    snprintf(p, sizeof(p), "%d", l->port);
    drv_info("MQTT listener started", "address", hostport, "port", p);
    return DRV_OK;
}

drv_err drv_broker_new(const drv_broker_config *cfg, drv_loop *loop, drv_broker **out)
{
    drv_broker *b = drv_calloc(1, sizeof(*b));
    if (!b)
        return DRV_NOMEM;
    b->cfg = *cfg;
    b->loop = loop;
    b->start_s = drv_wall_s();
    drv_hmap_init(&b->sessions);
    trie_init(&b->subs);
    trie_init(&b->retained);
    drv_err e = DRV_OK;
    if (cfg->data_dir) {
        e = persist_open(b, cfg->data_dir, cfg->persist_sync, &b->persist);
        if (e == DRV_OK)
            e = persist_replay(b->persist);
        if (e == DRV_OK)
            e = persist_maybe_compact(b->persist, true);
        if (e) {
            drv_error("cannot open the data directory", "path", cfg->data_dir, "error",
                      drv_strerror(e));
            drv_broker_free(b);
            return e;
        }
    }
    drv_loop_set_turn_end(loop, on_turn_end, b);
    sys_start(b);
    *out = b;
    return DRV_OK;
}

void drv_broker_get_stats(const drv_broker *b, drv_broker_stats *out)
{
    *out = b->stats;
}

void drv_broker_free(drv_broker *b)
{
    if (!b)
        return;
    sys_stop(b);
    for (listener *l = b->listeners, *n; l; l = n) {
        n = l->next;
        drv_loop_del(b->loop, &l->io);
        drv_close(l->io.fd);
        drv_free(l);
    }
    /* Disconnect everyone (5.0 clients are told why); wills of live clients are kept. */
    while (b->conns) {
        conn *c = b->conns;
        if (c->version == MQTT_V5 && c->state == C_CONNECTED)
            mqtt_encode_disconnect(&c->out, c->version, MQTT_DISCONNECT,
                                   MQTT_RC_SERVER_SHUTTING_DOWN, NULL);
        c->closing_sent_disconnect = true;
        conn_close(c, 0, false);
    }
    if (b->persist) {
        persist_maybe_compact(b->persist, true);
        persist_close(b->persist);
        b->persist = NULL;
    }
    on_turn_end(b);
    drv_loop_set_turn_end(b->loop, NULL, NULL);
    size_t bk;
    for (drv_hnode *h = drv_hmap_first(&b->sessions, &bk), *n; h; h = n) {
        n = drv_hmap_next(&b->sessions, h, &bk);
        session *s = (session *)h;
        s->logged = false;
        session_destroy(s);
    }
    drv_hmap_free(&b->sessions);
    trie_free(&b->subs);
    trie_free(&b->retained);
    drv_free(b->matches);
    drv_free(b);
}
