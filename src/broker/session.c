/*
 * session.c — MQTT sessions: identity, subscriptions, the outgoing queue and
 * inflight window, inbound QoS 2 state, wills and expiry.
 *
 * Outgoing QoS 1/2 messages move through:
 *
 *   deliver ──▶ queue ──(inflight slot free, client online)──▶ inflight
 *                                  Q_PUBLISHED ──PUBACK──▶ done (QoS 1)
 *                                  Q_PUBLISHED ──PUBREC──▶ Q_RELEASED ──PUBCOMP──▶ done
 *
 * On reconnect, inflight items are resent first, in order: PUBLISH with DUP
 * for Q_PUBLISHED, PUBREL for Q_RELEASED (§4.4).  QoS 0 messages are written
 * straight to an online client and never queued.  Every transition of a
 * persistent session's state is appended to the log (persist.c).
 */
#include <stddef.h>
#include <string.h>

#include "broker/broker_int.h"
#include "core/alloc.h"
#include "core/log.h"

session *session_find(drv_broker *b, const uint8_t *key, size_t len)
{
    uint64_t h = drv_hash_bytes(key, len, 0);
    return (session *)drv_hmap_get(&b->sessions, h, key, (uint32_t)len);
}

size_t session_key(uint8_t *out, const uint8_t *id, size_t id_len, const char *ns, size_t ns_len)
{
    memcpy(out, id, id_len);
    if (!ns_len)
        return id_len;
    out[id_len] = '\0';
    memcpy(out + id_len + 1, ns, ns_len);
    return id_len + 1 + ns_len;
}

session *session_create(drv_broker *b, const uint8_t *key, size_t len)
{
    const uint8_t *nul = memchr(key, '\0', len);
    size_t ns_len = nul ? len - (size_t)(nul + 1 - key) : 0;
    if (nul && !drv_auth_ns_valid((const char *)nul + 1, ns_len))
        return NULL; /* from a damaged log: not a namespace */
    /* The key sits right behind the last field, not behind the struct's padding. */
    session *s = drv_calloc(1, offsetof(session, client_id) + len + 1);
    if (!s)
        return NULL;
    memcpy(s->client_id, key, len);
    s->ns_len = (uint8_t)ns_len;
    s->b = b;
    s->next_pid = 1;
    s->max_qos = b->cfg.maximum_qos; /* a profile may lower it at CONNECT */
    s->h.hash = drv_hash_bytes(key, len, 0);
    s->h.key = s->client_id;
    s->h.klen = (uint32_t)len;
    if (drv_hmap_put(&b->sessions, &s->h) != DRV_OK) {
        drv_free(s);
        return NULL;
    }
    b->stats.clients_total++;
    return s;
}

/* Pooled items beyond this many go back to the allocator (~40 B each). */
#define QITEM_POOL_MAX 65536

qitem *qitem_new(drv_broker *b, uint8_t n)
{
    qitem *qi = b->qitem_pool;
    if (n <= 1 && qi) {
        b->qitem_pool = qi->next;
        b->qitem_pool_len--;
        memset(qi, 0, sizeof(*qi) + sizeof(uint32_t));
        return qi;
    }
    /* Small items get room for one id whatever n is, so any of them can be pooled. */
    return drv_calloc(1, sizeof(qitem) + (size_t)(n ? n : 1) * sizeof(uint32_t));
}

void qitem_free(drv_broker *b, qitem *qi)
{
    msg_unref(qi->m);
    if (qi->nsub_ids <= 1 && b->qitem_pool_len < QITEM_POOL_MAX) {
        qi->next = b->qitem_pool;
        b->qitem_pool = qi;
        b->qitem_pool_len++;
        return;
    }
    drv_free(qi);
}

void qitem_pool_free(drv_broker *b)
{
    while (b->qitem_pool) {
        qitem *qi = b->qitem_pool;
        b->qitem_pool = qi->next;
        drv_free(qi);
    }
    b->qitem_pool_len = 0;
}

static void qlist_push(qlist *l, qitem *qi)
{
    qi->next = NULL;
    if (l->tail)
        l->tail->next = qi;
    else
        l->head = qi;
    l->tail = qi;
    l->count++;
}

static qitem *qlist_pop(qlist *l)
{
    qitem *qi = l->head;
    if (qi) {
        l->head = qi->next;
        if (!l->head)
            l->tail = NULL;
        l->count--;
        qi->next = NULL;
    }
    return qi;
}

/* Unlink qi whose predecessor is prev (NULL when qi is the head). */
static void qlist_unlink(qlist *l, qitem *prev, qitem *qi)
{
    if (prev)
        prev->next = qi->next;
    else
        l->head = qi->next;
    if (l->tail == qi)
        l->tail = prev;
    l->count--;
    qi->next = NULL;
}

static void qlist_clear(drv_broker *b, qlist *l)
{
    for (qitem *qi = l->head, *n; qi; qi = n) {
        n = qi->next;
        qitem_free(b, qi);
    }
    l->head = l->tail = NULL;
    l->count = 0;
}

/* Remove a subscription entry for session s from node n (shared group if share). */
static void node_remove_sub(drv_broker *b, tnode *n, session *s, const char *share)
{
    if (!share) {
        for (uint32_t i = 0; i < n->nsubs; i++) {
            if (n->subs[i].s == s) {
                n->subs[i] = n->subs[--n->nsubs];
                b->stats.subscriptions--;
                break;
            }
        }
    } else {
        for (share_group **gp = &n->groups; *gp; gp = &(*gp)->next) {
            share_group *g = *gp;
            if (strcmp(g->name, share) != 0)
                continue;
            for (uint32_t i = 0; i < g->count; i++) {
                if (g->members[i].s == s) {
                    memmove(&g->members[i], &g->members[i + 1], (g->count - i - 1) * sizeof(sub));
                    g->count--;
                    b->stats.subscriptions--;
                    break;
                }
            }
            if (g->count == 0) {
                *gp = g->next;
                drv_free(g->members);
                drv_free(g->name);
                drv_free(g);
            }
            break;
        }
    }
    trie_prune(&b->subs, n);
}

void session_sub_free(drv_broker *b, session *s, session_sub *ss)
{
    node_remove_sub(b, ss->node, s, ss->share);
    drv_free(ss->share);
    drv_free(ss->filter);
    drv_free(ss);
}

/*
 * The session ends with messages that reached it through a shared
 * subscription still unacknowledged: hand them to another member (§4.8.2).
 */
static void reroute_shared(session *s, qlist *l)
{
    for (qitem *qi = l->head; qi; qi = qi->next) {
        if (!qi->shared)
            continue;
        for (session_sub *ss = s->subs; ss; ss = ss->next) {
            if (!ss->share)
                continue;
            const char *filter = ss->filter + strlen("$share/") + strlen(ss->share) + 1;
            if (mqtt_topic_matches((const uint8_t *)filter, strlen(filter), qi->m->topic,
                                   qi->m->topic_len) &&
                route_shared_again(s->b, s, filter, ss->share, qi))
                break;
        }
    }
}

void session_destroy(session *s)
{
    drv_broker *b = s->b;
    reroute_shared(s, &s->inflight);
    reroute_shared(s, &s->queue);
    if (s->logged)
        persist_session_del(b->persist, s);
    for (session_sub *ss = s->subs, *n; ss; ss = n) {
        n = ss->next;
        session_sub_free(b, s, ss);
    }
    qlist_clear(s->b, &s->inflight);
    qlist_clear(s->b, &s->queue);
    session_stop_expiry(s);
    session_set_will(s, NULL, 0);
    drv_hmap_del(&b->sessions, &s->h);
    b->stats.clients_total--;
    drv_free(s->qos2_in);
    drv_free(s->username);
    broker_auth_ctx_release(b, s->auth_ctx);
    drv_free(s);
}

void session_set_will(session *s, msg *m, uint32_t delay)
{
    if (s->will) {
        drv_wheel_stop(&s->will->timer);
        msg_unref(s->will->m);
        if (!m) {
            drv_free(s->will);
            s->will = NULL;
            return;
        }
    } else if (m) {
        s->will = drv_calloc(1, sizeof(*s->will));
        if (!s->will) {
            msg_unref(m); /* out of memory: the will is lost, the connection goes on */
            return;
        }
    } else {
        return;
    }
    s->will->m = m;
    s->will->delay = delay;
}

void session_fire_will(session *s)
{
    msg *w = s->will ? msg_ref(s->will->m) : NULL;
    session_set_will(s, NULL, 0);
    if (!w)
        return;
    if (!msg_expired(w, broker_now_s()))
        route_publish(s->b, w, NULL);
    msg_unref(w);
}

static void on_will_timer(void *ud)
{
    session_fire_will(ud);
}

static void on_expiry_timer(void *ud)
{
    session *s = ud;
    drv_debug("session expired", "client", s->client_id, "ns", session_ns(s));
    session_fire_will(s); /* the session ends: a delayed will goes now (§3.1.3.2.2) */
    session_destroy(s);
}

void session_start_expiry(session *s)
{
    if (s->expiry_interval == UINT32_MAX)
        return;
    if (!s->expiry_timer)
        s->expiry_timer = drv_calloc(1, sizeof(drv_timer));
    if (!s->expiry_timer)
        return; /* out of memory: the session just lives on until reconnected */
    drv_wheel_start(&s->b->wheel, s->expiry_timer, (uint64_t)s->expiry_interval * 1000,
                    on_expiry_timer, s);
}

void session_stop_expiry(session *s)
{
    if (!s->expiry_timer)
        return;
    drv_wheel_stop(s->expiry_timer);
    drv_free(s->expiry_timer);
    s->expiry_timer = NULL;
}

void session_detach(session *s, bool send_will)
{
    drv_broker *b = s->b;
    s->c = NULL;
    if (s->will) {
        if (!send_will)
            session_set_will(s, NULL, 0);
        else if (s->will->delay == 0 || s->expiry_interval == 0)
            session_fire_will(s);
        else
            drv_wheel_start(&b->wheel, &s->will->timer, (uint64_t)s->will->delay * 1000,
                            on_will_timer, s);
    }
    if (s->expiry_interval == 0) {
        session_destroy(s);
        return;
    }
    session_start_expiry(s);
}

static uint16_t window(const session *s)
{
    uint16_t w = s->b->cfg.max_inflight;
    if (s->c && s->c->client_receive_max && s->c->client_receive_max < w)
        w = s->c->client_receive_max;
    return w ? w : 1;
}

static bool pid_in_use(const session *s, uint16_t pid)
{
    for (qitem *qi = s->inflight.head; qi; qi = qi->next)
        if (qi->pid == pid)
            return true;
    return false;
}

static uint16_t next_pid(session *s)
{
    for (;;) {
        uint16_t pid = s->next_pid++;
        if (s->next_pid == 0)
            s->next_pid = 1;
        if (pid != 0 && !pid_in_use(s, pid))
            return pid;
    }
}

/* The message will never be sent: drop it from the persistent state too. */
static void discard(session *s, qitem *qi)
{
    if (s->persistent)
        persist_ack(s->b->persist, s, qi->m);
    s->b->stats.msgs_dropped++;
    qitem_free(s->b, qi);
}

void session_pump(session *s)
{
    conn *c = s->c;
    if (!c || c->state != C_CONNECTED)
        return;
    uint64_t now = broker_now_s();
    while (s->queue.head && s->inflight.count < window(s)) {
        qitem *qi = qlist_pop(&s->queue);
        if (msg_expired(qi->m, now)) {
            discard(s, qi);
            continue;
        }
        qi->pid = next_pid(s);
        qi->state = Q_PUBLISHED;
        if (!conn_send_qitem(c, qi, false)) {
            discard(s, qi); /* larger than the client accepts (§3.1.2.11.4) */
            continue;
        }
        qlist_push(&s->inflight, qi);
        if (s->persistent && qi->qos == 2)
            persist_sent(s->b->persist, s, qi);
    }
}

void session_deliver(session *s, msg *m, uint8_t qos, bool retain, const uint32_t *sub_ids,
                     uint8_t nsub_ids, bool shared)
{
    drv_broker *b = s->b;
    if (qos == 0) {
        if (s->c && s->c->state == C_CONNECTED) {
            if (!conn_send_publish(s->c, m, 0, retain, 0, false, sub_ids, nsub_ids))
                b->stats.msgs_dropped++;
        }
        return;
    }
    if (s->queue.count + s->inflight.count >= b->cfg.max_queued) {
        b->stats.msgs_dropped++;
        return;
    }
    if (s->c && s->queue.count >= b->cfg.max_queued / 4)
        b->congested = true; /* online and falling behind: slow the publisher down */
    qitem *qi = qitem_new(s->b, nsub_ids);
    if (!qi) {
        b->stats.msgs_dropped++;
        return;
    }
    qi->shared = shared;
    qi->m = msg_ref(m);
    qi->qos = qos;
    qi->retain = retain;
    qi->nsub_ids = nsub_ids;
    memcpy(qi->sub_ids, sub_ids, nsub_ids * sizeof(uint32_t));
    if (s->persistent)
        persist_queue(b->persist, s, qi);
    qlist_push(&s->queue, qi);
    session_pump(s); /* may send or discard qi: do not touch it after this */
}

void session_resume(session *s)
{
    conn *c = s->c;
    for (qitem *qi = s->inflight.head; qi; qi = qi->next) {
        if (qi->state == Q_PUBLISHED)
            conn_send_qitem(c, qi, true);
        else
            mqtt_encode_ack(&c->out, c->version, MQTT_PUBREL, qi->pid, 0, NULL);
    }
    conn_mark_dirty(c);
    session_pump(s);
}

static qitem *find_inflight(session *s, uint16_t pid, qitem **prev_out)
{
    qitem *prev = NULL;
    for (qitem *qi = s->inflight.head; qi; prev = qi, qi = qi->next) {
        if (qi->pid == pid) {
            *prev_out = prev;
            return qi;
        }
    }
    return NULL;
}

static void complete(session *s, qitem *prev, qitem *qi)
{
    qlist_unlink(&s->inflight, prev, qi);
    if (s->persistent)
        persist_ack(s->b->persist, s, qi->m);
    qitem_free(s->b, qi);
    session_pump(s);
    if (s->b->paused && s->queue.count < s->b->cfg.max_queued / 8)
        broker_resume_all(s->b); /* the queue has drained: publishers may go on */
}

ack_result session_puback(session *s, uint16_t pid)
{
    qitem *prev, *qi = find_inflight(s, pid, &prev);
    if (!qi)
        return ACK_UNKNOWN;
    if (qi->qos != 1)
        return ACK_WRONG;
    complete(s, prev, qi);
    return ACK_DONE;
}

ack_result session_pubrec(session *s, uint16_t pid, uint8_t reason)
{
    qitem *prev, *qi = find_inflight(s, pid, &prev);
    if (!qi)
        return ACK_UNKNOWN;
    if (qi->qos != 2)
        return ACK_WRONG;
    if (reason >= 0x80) {
        complete(s, prev, qi); /* the receiver refused it: the flow ends here */
        return ACK_DONE;
    }
    if (qi->state == Q_PUBLISHED) {
        qi->state = Q_RELEASED;
        if (s->persistent)
            persist_sent(s->b->persist, s, qi);
    }
    mqtt_encode_ack(&s->c->out, s->c->version, MQTT_PUBREL, pid, 0, NULL);
    conn_mark_dirty(s->c);
    return ACK_DONE;
}

ack_result session_pubcomp(session *s, uint16_t pid)
{
    qitem *prev, *qi = find_inflight(s, pid, &prev);
    if (!qi)
        return ACK_UNKNOWN;
    if (qi->state != Q_RELEASED)
        return ACK_WRONG;
    complete(s, prev, qi);
    return ACK_DONE;
}

bool session_qos2_in_has(const session *s, uint16_t pid)
{
    for (uint16_t i = 0; i < s->nqos2_in; i++)
        if (s->qos2_in[i] == pid)
            return true;
    return false;
}

drv_err session_qos2_in_add(session *s, uint16_t pid)
{
    if (s->nqos2_in == s->qos2_in_cap) {
        uint32_t cap = s->qos2_in_cap ? s->qos2_in_cap * 2u : 4u;
        if (cap > 65535)
            return DRV_LIMIT;
        uint16_t *p = drv_realloc(s->qos2_in, cap * sizeof(uint16_t));
        if (!p)
            return DRV_NOMEM;
        s->qos2_in = p;
        s->qos2_in_cap = (uint16_t)cap;
    }
    s->qos2_in[s->nqos2_in++] = pid;
    if (s->persistent)
        persist_qos2_in(s->b->persist, s, pid, true);
    return DRV_OK;
}

bool session_qos2_in_del(session *s, uint16_t pid)
{
    for (uint16_t i = 0; i < s->nqos2_in; i++) {
        if (s->qos2_in[i] == pid) {
            s->qos2_in[i] = s->qos2_in[--s->nqos2_in];
            if (s->persistent)
                persist_qos2_in(s->b->persist, s, pid, false);
            return true;
        }
    }
    return false;
}
