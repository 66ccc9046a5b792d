/*
 * route.c — routing a message to its subscribers and the retained store.
 *
 * Matching collects one slot per session in the broker's reusable scratch
 * array (no allocation per publish): overlapping subscriptions of one
 * session merge into one delivery at the highest QoS with every matching
 * subscription identifier (§3.3.4).  A shared group contributes exactly one
 * member, chosen round robin among those currently online (any member when
 * none is online, so the message waits in its queue).
 *
 * Topics here are internal ones (ADR-0009): a tenant's messages live under
 * "$T/<tenant>/", which only that tenant's (prefixed) filters and explicit
 * global "$T/..." filters match, never a global first-level wildcard.
 */
#include <string.h>

#include "broker/broker_int.h"
#include "core/alloc.h"

typedef struct route_ctx {
    drv_broker *b;
    msg *m;
    session *from;
} route_ctx;

static match_slot *slot_for(drv_broker *b, session *s)
{
    if (s->match_stamp == b->match_stamp)
        return &b->matches[s->match_slot];
    if (b->nmatches == b->matches_cap) {
        uint32_t cap = b->matches_cap ? b->matches_cap * 2 : 64;
        match_slot *m = drv_realloc(b->matches, cap * sizeof(*m));
        if (!m)
            return NULL;
        b->matches = m;
        b->matches_cap = cap;
    }
    match_slot *ms = &b->matches[b->nmatches];
    memset(ms, 0, sizeof(*ms));
    ms->s = s;
    s->match_stamp = b->match_stamp;
    s->match_slot = b->nmatches++;
    return ms;
}

static void add_match(route_ctx *rc, const sub *sb, bool shared)
{
    match_slot *ms = slot_for(rc->b, sb->s);
    if (!ms)
        return;
    ms->shared = ms->shared || shared;
    uint8_t qos = sb->qos < rc->m->qos ? sb->qos : rc->m->qos;
    if (qos > ms->qos)
        ms->qos = qos;
    if (sb->retain_as_published && rc->m->retain)
        ms->retain = true;
    if (sb->sub_id && ms->nsub_ids < MAX_SUB_IDS)
        ms->sub_ids[ms->nsub_ids++] = sb->sub_id;
}

/* The next online member of a group, round robin, skipping `exclude`; NULL if none. */
static sub *next_online_member(share_group *g, const session *exclude)
{
    for (uint32_t i = 0; i < g->count; i++) {
        sub *cand = &g->members[(g->next_member + i) % g->count];
        if (cand->s != exclude && cand->s->c && cand->s->c->state == C_CONNECTED) {
            g->next_member = (g->next_member + i + 1) % g->count;
            return cand;
        }
    }
    return NULL;
}

static void on_match(void *ud, sub *sb, share_group *g)
{
    route_ctx *rc = ud;
    if (sb) {
        if (sb->no_local && sb->s == rc->from)
            return;
        add_match(rc, sb, false);
        return;
    }
    /* Shared group: the next online member; with none online, the next one at all
     * (the message waits in its session queue). */
    sub *m = next_online_member(g, NULL);
    if (!m) {
        m = &g->members[g->next_member % g->count];
        g->next_member = (g->next_member + 1) % g->count;
    }
    add_match(rc, m, true);
}

/* $SYS state is recomputed on start: it never goes to the log. */
static persist *log_for(drv_broker *b, const msg *m)
{
    return m->topic_len >= 5 && memcmp(m->topic, "$SYS/", 5) == 0 ? NULL : b->persist;
}

void retain_store(drv_broker *b, msg *m)
{
    if (m->payload_len == 0) {
        tnode *n = trie_get(&b->retained, m->topic, m->topic_len, false);
        if (n && n->retained) {
            msg_unref(n->retained);
            n->retained = NULL;
            b->stats.retained--;
            persist_retain(log_for(b, m), m->topic, m->topic_len, NULL);
            trie_prune(&b->retained, n);
        }
        return;
    }
    tnode *n = trie_get(&b->retained, m->topic, m->topic_len, true);
    if (!n)
        return;
    if (n->retained)
        msg_unref(n->retained);
    else
        b->stats.retained++;
    n->retained = msg_ref(m);
    persist_retain(log_for(b, m), m->topic, m->topic_len, m);
}

bool route_shared_again(drv_broker *b, session *leaving, const char *filter, const char *group,
                        const qitem *qi)
{
    tnode *n = trie_get(&b->subs, (const uint8_t *)filter, strlen(filter), false);
    if (!n)
        return false;
    for (share_group *g = n->groups; g; g = g->next) {
        if (strcmp(g->name, group) != 0)
            continue;
        sub *cand = next_online_member(g, leaving);
        if (!cand)
            return false;
        uint8_t qos = cand->qos < qi->qos ? cand->qos : qi->qos;
        session_deliver(cand->s, qi->m, qos, qi->retain, &cand->sub_id, cand->sub_id ? 1 : 0, true);
        return true;
    }
    return false;
}

uint32_t route_publish(drv_broker *b, msg *m, session *from)
{
    return route_deliver(b, m, from, false);
}

uint32_t route_deliver(drv_broker *b, msg *m, session *from, bool online_only)
{
    if (m->retain)
        retain_store(b, m);
    route_ctx rc = {b, m, from};
    b->match_stamp++;
    b->nmatches = 0;
    trie_match(&b->subs, m->topic, m->topic_len, on_match, &rc);
    uint32_t n = b->nmatches, given = 0;
    for (uint32_t i = 0; i < n; i++) {
        match_slot *ms = &b->matches[i];
        if (online_only && !(ms->s->c && ms->s->c->state == C_CONNECTED))
            continue;
        /* The ACL sees the topic as this subscriber will (without its prefix, which
         * every topic its filters match carries). */
        uint32_t prefix = session_prefix_len(ms->s);
        if (b->acl_active &&
            (m->topic_len <= prefix ||
             !broker_authorize(b, ms->s, DRV_ACL_READ, m->topic + prefix, m->topic_len - prefix)))
            continue;
        session_deliver(ms->s, m, ms->qos, ms->retain, ms->sub_ids, ms->nsub_ids, ms->shared);
        given++;
    }
    b->nmatches = 0;
    return online_only ? given : n;
}
