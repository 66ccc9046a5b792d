/*
 * handle_subscribe.c — SUBSCRIBE and UNSUBSCRIBE (§3.8, §3.10).
 *
 * A session holds at most one subscription per filter string: subscribing
 * again replaces the options (§3.8.4).  Shared subscriptions
 * ($share/<group>/<filter>) join a group on the filter's node; retained
 * messages are never sent for them (§4.8.2).  The SUBACK is written before
 * any retained message so the client sees them in that order.
 *
 * Namespaces (ADR-0009): limits and authorisation apply to the filter as the
 * client sent it; the session, the trie and the log hold its internal form
 * ("<ns>/<filter>", "$share/<group>/<ns>/<filter>"), so a tenant's filters
 * match only its own topics and its share groups are its own.  A namespaced
 * client may not subscribe to a filter starting with '$' ($SYS included):
 * 0x87 (3.1.1: 0x80).
 */
#include <string.h>

#include "broker/broker_int.h"
#include "core/alloc.h"
#include "core/log.h"

/* A granted subscription whose retained messages go out after the SUBACK. */
struct retained_todo {
    const uint8_t *f;
    uint32_t len;
    uint8_t qos;
    uint8_t rh;
    bool is_new;
};

typedef struct retained_ctx {
    session *s;
    uint8_t qos;
    uint32_t sub_id;
    uint64_t now;
} retained_ctx;

static void send_retained(void *ud, msg *m)
{
    retained_ctx *rc = ud;
    if (msg_expired(m, rc->now))
        return;
    uint8_t qos = m->qos < rc->qos ? m->qos : rc->qos;
    session_deliver(rc->s, m, qos, true, &rc->sub_id, rc->sub_id ? 1 : 0, false);
}

static session_sub *find_sub(session *s, const uint8_t *filter, size_t len)
{
    for (session_sub *ss = s->subs; ss; ss = ss->next)
        if (strlen(ss->filter) == len && memcmp(ss->filter, filter, len) == 0)
            return ss;
    return NULL;
}

/* Find this session's entry on a node (plain or in the named group). */
static sub *node_sub(tnode *n, session *s, const char *share)
{
    if (!share) {
        for (uint32_t i = 0; i < n->nsubs; i++)
            if (n->subs[i].s == s)
                return &n->subs[i];
        return NULL;
    }
    for (share_group *g = n->groups; g; g = g->next)
        if (strcmp(g->name, share) == 0)
            for (uint32_t i = 0; i < g->count; i++)
                if (g->members[i].s == s)
                    return &g->members[i];
    return NULL;
}

static bool grow(void **arr, uint32_t *cap, uint32_t count, size_t elem)
{
    if (count < *cap)
        return true;
    uint32_t ncap = *cap ? *cap * 2 : 2;
    void *p = drv_realloc(*arr, ncap * elem);
    if (!p)
        return false;
    *arr = p;
    *cap = ncap;
    return true;
}

/* Add a new entry for s to node n; NULL on allocation failure. */
static sub *node_add(drv_broker *b, tnode *n, const char *share, const sub *opt)
{
    sub *slot;
    if (!share) {
        if (!grow((void **)&n->subs, &n->subs_cap, n->nsubs, sizeof(sub)))
            return NULL;
        slot = &n->subs[n->nsubs++];
    } else {
        share_group *g = n->groups;
        while (g && strcmp(g->name, share) != 0)
            g = g->next;
        if (!g) {
            g = drv_calloc(1, sizeof(*g));
            if (!g || !(g->name = drv_strdup(share))) {
                drv_free(g);
                return NULL;
            }
            g->next = n->groups;
            n->groups = g;
        }
        if (!grow((void **)&g->members, &g->cap, g->count, sizeof(sub)))
            return NULL;
        slot = &g->members[g->count++];
    }
    *slot = *opt;
    b->stats.subscriptions++;
    return slot;
}

/*
 * Subscribe s to `filter` (as sent, maybe $share/...) with options; *is_new
 * tells whether it replaced an existing subscription.  Used by SUBSCRIBE and
 * by log replay.  Returns a SUBACK reason code.
 */
uint8_t broker_subscribe(drv_broker *b, session *s, const uint8_t *filter, size_t len,
                         const sub *opt, bool *is_new)
{
    mqtt_bytes group = {0}, real = {filter, (uint32_t)len};
    bool share_ok;
    bool shared = mqtt_shared_split(filter, len, &group, &real, &share_ok);
    if (shared && !share_ok)
        return MQTT_RC_TOPIC_FILTER_INVALID;
    if (!mqtt_topic_filter_valid(real.p, real.len))
        return MQTT_RC_TOPIC_FILTER_INVALID;
    *is_new = false;
    session_sub *ss = find_sub(s, filter, len);
    if (ss) {
        sub *existing = node_sub(ss->node, s, ss->share);
        if (existing)
            *existing = *opt;
        ss->opt = *opt;
        return MQTT_RC_SUCCESS;
    }
    if (s->nsubs >= b->cfg.max_subscriptions)
        return MQTT_RC_QUOTA_EXCEEDED;
    ss = drv_calloc(1, sizeof(*ss));
    if (!ss)
        return MQTT_RC_UNSPECIFIED;
    ss->filter = drv_strndup((const char *)filter, len);
    if (shared)
        ss->share = drv_strndup((const char *)group.p, group.len);
    ss->node =
        ss->filter && (!shared || ss->share) ? trie_get(&b->subs, real.p, real.len, true) : NULL;
    if (!ss->node || !node_add(b, ss->node, ss->share, opt)) {
        if (ss->node)
            trie_prune(&b->subs, ss->node);
        drv_free(ss->share);
        drv_free(ss->filter);
        drv_free(ss);
        return MQTT_RC_UNSPECIFIED;
    }
    ss->opt = *opt;
    ss->next = s->subs;
    s->subs = ss;
    s->nsubs++;
    *is_new = true;
    return MQTT_RC_SUCCESS;
}

bool broker_unsubscribe(drv_broker *b, session *s, const uint8_t *filter, size_t len)
{
    for (session_sub **pp = &s->subs; *pp; pp = &(*pp)->next) {
        session_sub *ss = *pp;
        if (strlen(ss->filter) == len && memcmp(ss->filter, filter, len) == 0) {
            *pp = ss->next;
            s->nsubs--;
            if (s->persistent)
                persist_unsub(b->persist, s, ss->filter); /* a no-op during replay */
            session_sub_free(b, s, ss);
            return true;
        }
    }
    return false;
}

/* v3.1.1 SUBACK has only 0x00-0x02 and 0x80 (§3.9.3). */
static uint8_t v3_code(uint8_t rc)
{
    return rc >= 0x80 ? 0x80 : rc;
}

uint8_t handle_subscribe(conn *c, const mqtt_subscribe *p)
{
    drv_broker *b = conn_broker(c);
    session *s = c->s;
    bool v5 = c->version == MQTT_V5;
    uint8_t stack_codes[64];
    uint8_t *codes = p->count <= sizeof(stack_codes) ? stack_codes : drv_malloc(p->count);
    if (!codes)
        return MQTT_RC_IMPLEMENTATION_SPECIFIC;
    uint32_t sub_id = v5 ? p->props.subscription_id : 0;

    /* Validate and apply every entry, then answer, then send retained messages. */
    struct retained_todo stack_todo[64];
    struct retained_todo *todo =
        p->count <= 64 ? stack_todo : drv_malloc(p->count * sizeof(struct retained_todo));
    if (!todo) {
        if (codes != stack_codes)
            drv_free(codes);
        return MQTT_RC_IMPLEMENTATION_SPECIFIC;
    }
    uint32_t ntodo = 0;
    uint32_t pos = 0, i = 0;
    mqtt_sub_entry e;
    uint8_t result = MQTT_RC_SUCCESS;
    while (mqtt_sub_next(p, true, &pos, &e)) {
        mqtt_bytes group, real;
        bool share_ok;
        bool shared = mqtt_shared_split(e.filter.p, e.filter.len, &group, &real, &share_ok);
        if (shared && (!share_ok || e.no_local)) {
            result = MQTT_RC_PROTOCOL_ERROR; /* bad share name, or [MQTT-3.8.3-4] */
            goto out;
        }
        uint8_t rc;
        uint8_t qos = e.qos < c->s->max_qos ? e.qos : c->s->max_qos;
        const mqtt_bytes *checked = shared && share_ok ? &real : &e.filter;
        uint32_t levels = 1;
        for (uint32_t k = 0; k < checked->len; k++)
            levels += checked->p[k] == '/';
        char fbuf[512];
        size_t flen = 0;
        char *internal = NULL;
        if (checked->len > b->cfg.max_topic_length || levels > b->cfg.max_topic_levels) {
            rc = MQTT_RC_TOPIC_FILTER_INVALID;
        } else if ((s->ns_len && (checked->len == 0 || checked->p[0] == '$')) ||
                   !broker_authorize(b, s, DRV_ACL_READ, checked->p, checked->len)) {
            rc = MQTT_RC_NOT_AUTHORIZED;
        } else if (!(internal = ns_internal_filter(s, e.filter.p, e.filter.len, fbuf, sizeof(fbuf),
                                                   &flen))) {
            rc = flen > 65535 ? MQTT_RC_TOPIC_FILTER_INVALID : MQTT_RC_UNSPECIFIED;
        } else {
            sub opt = {s, qos, e.no_local, e.retain_as_published, e.retain_handling, sub_id};
            bool is_new = false;
            rc = broker_subscribe(b, s, (const uint8_t *)internal, flen, &opt, &is_new);
            if (rc == MQTT_RC_SUCCESS) {
                rc = qos;
                if (s->persistent)
                    persist_sub(b->persist, s, internal, &opt);
                if (!shared) {
                    todo[ntodo++] = (struct retained_todo){e.filter.p, e.filter.len, qos,
                                                           e.retain_handling, is_new};
                    broker_tap_session(b, s, e.filter.p, e.filter.len);
                }
            }
        }
        if (internal != fbuf)
            drv_free(internal);
        codes[i++] = v5 ? rc : v3_code(rc);
    }
    mqtt_encode_suback(&c->out, c->version, MQTT_SUBACK, p->packet_id, codes, i, NULL);
    conn_mark_dirty(c);

    retained_ctx rctx = {s, 0, sub_id, broker_now_s()};
    for (uint32_t k = 0; k < ntodo; k++) {
        if (todo[k].rh == 2 || (todo[k].rh == 1 && !todo[k].is_new))
            continue;
        rctx.qos = todo[k].qos;
        char fbuf[512];
        size_t flen;
        char *f = ns_internal_filter(s, todo[k].f, todo[k].len, fbuf, sizeof(fbuf), &flen);
        if (!f)
            continue;
        trie_retained(&b->retained, (const uint8_t *)f, flen, send_retained, &rctx);
        if (f != fbuf)
            drv_free(f);
    }
out:
    if (todo != stack_todo)
        drv_free(todo);
    if (codes != stack_codes)
        drv_free(codes);
    return result;
}

uint8_t handle_unsubscribe(conn *c, const mqtt_subscribe *p)
{
    drv_broker *b = conn_broker(c);
    session *s = c->s;
    uint8_t stack_codes[64];
    uint8_t *codes = p->count <= sizeof(stack_codes) ? stack_codes : drv_malloc(p->count);
    if (!codes)
        return MQTT_RC_IMPLEMENTATION_SPECIFIC;
    uint32_t pos = 0, i = 0;
    mqtt_sub_entry e;
    while (mqtt_sub_next(p, false, &pos, &e)) {
        char fbuf[512];
        size_t flen;
        char *f = ns_internal_filter(s, e.filter.p, e.filter.len, fbuf, sizeof(fbuf), &flen);
        codes[i++] = f && broker_unsubscribe(b, s, (const uint8_t *)f, flen)
                         ? MQTT_RC_SUCCESS
                         : MQTT_RC_NO_SUBSCRIPTION_EXISTED;
        if (f != fbuf)
            drv_free(f);
    }
    mqtt_encode_suback(&c->out, c->version, MQTT_UNSUBACK, p->packet_id, codes, i, NULL);
    conn_mark_dirty(c);
    if (codes != stack_codes)
        drv_free(codes);
    return MQTT_RC_SUCCESS;
}
