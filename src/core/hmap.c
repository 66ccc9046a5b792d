/* hmap.c — intrusive chained hash table; see hmap.h. */
#include "core/hmap.h"

#include <string.h>

#include "core/alloc.h"

uint64_t drv_hash_bytes(const void *p, size_t n, uint64_t seed)
{
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull ^ (seed * 0x9E3779B97F4A7C15ull);
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

void drv_hmap_init(drv_hmap *m)
{
    m->buckets = NULL;
    m->nbuckets = 0;
    m->count = 0;
}

void drv_hmap_free(drv_hmap *m)
{
    drv_free(m->buckets);
    drv_hmap_init(m);
}

void drv_hmap_clear(drv_hmap *m, void (*release)(drv_hnode *n))
{
    for (size_t b = 0; b < m->nbuckets; b++) {
        for (drv_hnode *n = m->buckets[b], *next; n; n = next) {
            next = n->next;
            if (release)
                release(n);
        }
    }
    drv_hmap_free(m);
}

drv_hnode *drv_hmap_get(const drv_hmap *m, uint64_t hash, const void *key, uint32_t klen)
{
    if (!m->nbuckets)
        return NULL;
    for (drv_hnode *n = m->buckets[hash & (m->nbuckets - 1)]; n; n = n->next)
        if (n->hash == hash && n->klen == klen && memcmp(n->key, key, klen) == 0)
            return n;
    return NULL;
}

static drv_err grow(drv_hmap *m)
{
    size_t nb = m->nbuckets ? m->nbuckets * 2 : 16;
    drv_hnode **b = drv_calloc(nb, sizeof(*b));
    if (!b)
        return DRV_NOMEM;
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (drv_hnode *n = m->buckets[i], *next; n; n = next) {
            next = n->next;
            n->next = b[n->hash & (nb - 1)];
            b[n->hash & (nb - 1)] = n;
        }
    }
    drv_free(m->buckets);
    m->buckets = b;
    m->nbuckets = nb;
    return DRV_OK;
}

drv_err drv_hmap_put(drv_hmap *m, drv_hnode *n)
{
    if (m->count >= m->nbuckets) {
        drv_err e = grow(m);
        if (e && m->nbuckets == 0)
            return e; /* otherwise run over-loaded rather than fail */
    }
    drv_hnode **slot = &m->buckets[n->hash & (m->nbuckets - 1)];
    n->next = *slot;
    *slot = n;
    m->count++;
    return DRV_OK;
}

void drv_hmap_del(drv_hmap *m, drv_hnode *n)
{
    drv_hnode **p = &m->buckets[n->hash & (m->nbuckets - 1)];
    while (*p && *p != n)
        p = &(*p)->next;
    if (*p) {
        *p = n->next;
        m->count--;
    }
    n->next = NULL;
}

drv_hnode *drv_hmap_first(const drv_hmap *m, size_t *bucket)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        if (m->buckets[i]) {
            *bucket = i;
            return m->buckets[i];
        }
    }
    return NULL;
}

drv_hnode *drv_hmap_next(const drv_hmap *m, drv_hnode *n, size_t *bucket)
{
    if (n->next)
        return n->next;
    for (size_t i = *bucket + 1; i < m->nbuckets; i++) {
        if (m->buckets[i]) {
            *bucket = i;
            return m->buckets[i];
        }
    }
    return NULL;
}
