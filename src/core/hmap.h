/*
 * hmap.h — an intrusive chained hash table keyed by byte strings.
 *
 * Entries embed a drv_hnode whose key points at bytes the entry owns; the
 * table never allocates per entry, only its bucket array (grown ×2 when the
 * load reaches 1).  Used for sessions by client id and topic-tree edges.
 */
#ifndef DRV_CORE_HMAP_H
#define DRV_CORE_HMAP_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct drv_hnode {
    struct drv_hnode *next;
    uint64_t hash;
    const void *key;
    uint32_t klen;
} drv_hnode;

typedef struct drv_hmap {
    drv_hnode **buckets;
    size_t nbuckets; /* power of two, 0 before first insert */
    size_t count;
} drv_hmap;

/* FNV-1a over the bytes, mixed with a seed (e.g. a parent pointer). */
uint64_t drv_hash_bytes(const void *p, size_t n, uint64_t seed);

void drv_hmap_init(drv_hmap *m);
void drv_hmap_free(drv_hmap *m);
/* Find the node with this key and hash; NULL if absent. */
drv_hnode *drv_hmap_get(const drv_hmap *m, uint64_t hash, const void *key, uint32_t klen);
/* Insert a node whose hash/key/klen are set; the key must not be present. */
drv_err drv_hmap_put(drv_hmap *m, drv_hnode *n);
/* Remove a node that is in the table. */
void drv_hmap_del(drv_hmap *m, drv_hnode *n);

/* Remove every node, calling release(node) on each (the entry's owner frees
 * it there; release may be NULL), and free the bucket array. */
void drv_hmap_clear(drv_hmap *m, void (*release)(drv_hnode *n));

/* Iterate: for (it = drv_hmap_first(m, &b); it; it = drv_hmap_next(m, it, &b)) */
drv_hnode *drv_hmap_first(const drv_hmap *m, size_t *bucket);
drv_hnode *drv_hmap_next(const drv_hmap *m, drv_hnode *n, size_t *bucket);

#endif
