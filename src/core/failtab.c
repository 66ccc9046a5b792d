/*
 * failtab.c — see failtab.h.
 */
#include "core/failtab.h"

#include <string.h>

#include "core/alloc.h"

typedef struct fail_entry {
    drv_hnode h;
    uint8_t key[17]; /* family + address */
    uint32_t count;
    uint64_t since_ms;
} fail_entry;

static void free_node(drv_hnode *n)
{
    drv_free(n); /* the node is the entry's first member */
}

void drv_failtab_init(drv_failtab *t, uint32_t max, uint64_t window_ms, uint32_t peers_max)
{
    drv_hmap_init(&t->map);
    t->max = max;
    t->window_ms = window_ms;
    t->peers_max = peers_max;
}

void drv_failtab_free(drv_failtab *t)
{
    drv_hmap_clear(&t->map, free_node);
    drv_hmap_free(&t->map);
}

static fail_entry *entry(drv_failtab *t, uint8_t family, const uint8_t ip[16], bool create)
{
    uint8_t key[17];
    key[0] = family;
    memcpy(key + 1, ip, 16);
    uint64_t h = drv_hash_bytes(key, sizeof(key), 7);
    fail_entry *f = (fail_entry *)drv_hmap_get(&t->map, h, key, sizeof(key));
    if (f || !create)
        return f;
    if (t->map.count >= t->peers_max)
        drv_hmap_clear(&t->map, free_node); /* bounded: forget everyone rather than grow */
    f = drv_calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    memcpy(f->key, key, sizeof(key));
    f->h.hash = h;
    f->h.key = f->key;
    f->h.klen = sizeof(f->key);
    if (drv_hmap_put(&t->map, &f->h) != DRV_OK) {
        drv_free(f);
        return NULL;
    }
    return f;
}

bool drv_failtab_blocked(drv_failtab *t, uint8_t family, const uint8_t ip[16], uint64_t now_ms,
                         uint32_t *retry_s)
{
    fail_entry *f = entry(t, family, ip, false);
    if (!f || now_ms - f->since_ms >= t->window_ms || f->count < t->max)
        return false;
    if (retry_s)
        *retry_s = (uint32_t)((t->window_ms - (now_ms - f->since_ms)) / 1000 + 1);
    return true;
}

void drv_failtab_failed(drv_failtab *t, uint8_t family, const uint8_t ip[16], uint64_t now_ms)
{
    fail_entry *f = entry(t, family, ip, true);
    if (!f)
        return;
    if (now_ms - f->since_ms >= t->window_ms) {
        f->since_ms = now_ms;
        f->count = 0;
    }
    f->count++;
}
