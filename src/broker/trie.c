/*
 * trie.c — the topic tree used for subscriptions and for retained messages.
 *
 * Each node is one topic level.  Edges live in one hash table per trie keyed
 * by (parent, level) so a node with 500,000 children (one per device) costs
 * one hash lookup, not a scan; '+' and '#' children are direct pointers
 * because matching asks for them at every level.
 *
 * Matching a topic walks exact, '+' and '#' children recursively; depth is
 * bounded by the broker's topic-level limit.  $-topics do not match a
 * wildcard at the first level (§4.7.2).
 */
#include <string.h>

#include "broker/broker_int.h"
#include "core/alloc.h"

void trie_init(trie *t)
{
    memset(t, 0, sizeof(*t));
    drv_hmap_init(&t->edges);
}

static void node_free(tnode *n)
{
    for (share_group *g = n->groups, *next; g; g = next) {
        next = g->next;
        drv_free(g->members);
        drv_free(g->name);
        drv_free(g);
    }
    drv_free(n->subs);
    msg_unref(n->retained);
    drv_free(n->level);
}

static void free_rec(tnode *n)
{
    for (tnode *c = n->kids, *next; c; c = next) {
        next = c->sib_next;
        free_rec(c);
        drv_free(c);
    }
    if (n->plus) {
        free_rec(n->plus);
        drv_free(n->plus);
    }
    if (n->hash) {
        free_rec(n->hash);
        drv_free(n->hash);
    }
    node_free(n);
}

void trie_free(trie *t)
{
    free_rec(&t->root);
    drv_hmap_free(&t->edges);
    trie_init(t);
}

static uint64_t edge_hash(const tnode *parent, const uint8_t *lvl, size_t len)
{
    return drv_hash_bytes(lvl, len, (uint64_t)(uintptr_t)parent);
}

static tnode *child(trie *t, tnode *parent, const uint8_t *lvl, size_t len)
{
    if (len == 1 && lvl[0] == '+')
        return parent->plus;
    if (len == 1 && lvl[0] == '#')
        return parent->hash;
    uint64_t h = edge_hash(parent, lvl, len);
    if (!t->edges.nbuckets)
        return NULL;
    /* Levels with equal text under different parents share a key: check the parent. */
    for (drv_hnode *n = t->edges.buckets[h & (t->edges.nbuckets - 1)]; n; n = n->next) {
        tnode *c = (tnode *)n;
        if (n->hash == h && c->parent == parent && c->level_len == len &&
            memcmp(c->level, lvl, len) == 0)
            return c;
    }
    return NULL;
}

static tnode *add_child(trie *t, tnode *parent, const uint8_t *lvl, size_t len)
{
    tnode *c = drv_calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->level = drv_strndup((const char *)lvl, len);
    if (!c->level) {
        drv_free(c);
        return NULL;
    }
    c->level_len = (uint32_t)len;
    c->parent = parent;
    if (len == 1 && lvl[0] == '+') {
        parent->plus = c;
    } else if (len == 1 && lvl[0] == '#') {
        parent->hash = c;
    } else {
        c->h.hash = edge_hash(parent, lvl, len);
        c->h.key = c->level;
        c->h.klen = (uint32_t)len;
        if (drv_hmap_put(&t->edges, &c->h) != DRV_OK) {
            drv_free(c->level);
            drv_free(c);
            return NULL;
        }
        c->sib_next = parent->kids;
        if (parent->kids)
            parent->kids->sib_prev = c;
        parent->kids = c;
    }
    parent->children++;
    return c;
}

tnode *trie_get(trie *t, const uint8_t *path, size_t len, bool create)
{
    tnode *n = &t->root;
    size_t start = 0;
    for (;;) {
        size_t end = start;
        while (end < len && path[end] != '/')
            end++;
        tnode *c = child(t, n, path + start, end - start);
        if (!c) {
            if (!create)
                return NULL;
            c = add_child(t, n, path + start, end - start);
            if (!c) {
                trie_prune(t, n);
                return NULL;
            }
        }
        n = c;
        if (end >= len)
            return n;
        start = end + 1;
    }
}

static bool node_empty(const tnode *n)
{
    return n->nsubs == 0 && n->groups == NULL && n->retained == NULL && n->children == 0;
}

void trie_prune(trie *t, tnode *n)
{
    while (n != &t->root && node_empty(n)) {
        tnode *p = n->parent;
        if (p->plus == n)
            p->plus = NULL;
        else if (p->hash == n)
            p->hash = NULL;
        else {
            drv_hmap_del(&t->edges, &n->h);
            if (n->sib_prev)
                n->sib_prev->sib_next = n->sib_next;
            else
                p->kids = n->sib_next;
            if (n->sib_next)
                n->sib_next->sib_prev = n->sib_prev;
        }
        p->children--;
        drv_free(n->subs);
        drv_free(n->level);
        drv_free(n);
        n = p;
    }
}

static void visit_node(tnode *n, trie_match_cb cb, void *ud)
{
    for (uint32_t i = 0; i < n->nsubs; i++)
        cb(ud, &n->subs[i], NULL);
    for (share_group *g = n->groups; g; g = g->next)
        if (g->count)
            cb(ud, NULL, g);
}

static void match_rec(trie *t, tnode *n, const uint8_t *topic, size_t len, size_t start, bool first,
                      trie_match_cb cb, void *ud)
{
    bool dollar = first && len > 0 && topic[0] == '$';
    /* '#' matches the rest, including the parent level ("a/#" matches "a"). */
    if (n->hash && !dollar)
        visit_node(n->hash, cb, ud);
    if (start > len) {
        visit_node(n, cb, ud);
        return;
    }
    size_t end = start;
    while (end < len && topic[end] != '/')
        end++;
    tnode *c = child(t, n, topic + start, end - start);
    if (c)
        match_rec(t, c, topic, len, end + 1, false, cb, ud);
    if (n->plus && !dollar)
        match_rec(t, n->plus, topic, len, end + 1, false, cb, ud);
}

void trie_match(trie *t, const uint8_t *topic, size_t len, trie_match_cb cb, void *ud)
{
    match_rec(t, &t->root, topic, len, 0, true, cb, ud);
}

/* Walk every node below n (inclusive) calling cb on retained messages. */
static void retained_all(trie *t, tnode *n, bool skip_dollar, void (*cb)(void *, msg *), void *ud);

static void retained_rec(trie *t, tnode *n, const uint8_t *f, size_t len, size_t start, bool first,
                         void (*cb)(void *, msg *), void *ud)
{
    if (start > len) {
        if (n->retained)
            cb(ud, n->retained);
        return;
    }
    size_t end = start;
    while (end < len && f[end] != '/')
        end++;
    size_t l = end - start;
    if (l == 1 && f[start] == '#') {
        /* '#' matches this node (the parent level) and everything below. */
        if (n != &t->root && n->retained)
            cb(ud, n->retained);
        retained_all(t, n, first, cb, ud);
        return;
    }
    if (l == 1 && f[start] == '+') {
        for (tnode *c = n->kids; c; c = c->sib_next) {
            if (first && c->level_len > 0 && c->level[0] == '$')
                continue;
            retained_rec(t, c, f, len, end + 1, false, cb, ud);
        }
        return;
    }
    tnode *c = child(t, n, f + start, l);
    if (c)
        retained_rec(t, c, f, len, end + 1, false, cb, ud);
}

static void retained_all(trie *t, tnode *n, bool skip_dollar, void (*cb)(void *, msg *), void *ud)
{
    for (tnode *c = n->kids; c; c = c->sib_next) {
        if (skip_dollar && c->level_len > 0 && c->level[0] == '$')
            continue;
        if (c->retained)
            cb(ud, c->retained);
        retained_all(t, c, false, cb, ud);
    }
}

void trie_retained(trie *t, const uint8_t *filter, size_t len, void (*cb)(void *ud, msg *m),
                   void *ud)
{
    retained_rec(t, &t->root, filter, len, 0, true, cb, ud);
}
