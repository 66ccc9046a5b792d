/*
 * hmap_test.c — unit tests for the intrusive hash table (src/core/hmap.c):
 * put/get/del with many keys and growth, iteration that visits every node
 * once, colliding hashes told apart by key, and allocation failure through
 * drv_mem_fail_at (an empty table reports DRV_NOMEM; a full one keeps
 * working over-loaded).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/hmap.h"

#include "core/test.h"

/* A table entry: the node is embedded, the key lives in the entry. */
typedef struct entry {
    drv_hnode node;
    char key[24];
    unsigned value;
    bool in_table;
    unsigned seen; /* visits during one iteration */
} entry;

static entry *entry_of(drv_hnode *n)
{
    return (entry *)((char *)n - offsetof(entry, node));
}

static void entry_init(entry *e, unsigned i, uint64_t seed)
{
    snprintf(e->key, sizeof(e->key), "key-%u", i);
    e->node.key = e->key;
    e->node.klen = (uint32_t)strlen(e->key);
    e->node.hash = drv_hash_bytes(e->key, e->node.klen, seed);
    e->value = i;
    e->in_table = false;
}

static drv_hnode *lookup(const drv_hmap *m, const char *key, uint64_t seed)
{
    size_t n = strlen(key);
    return drv_hmap_get(m, drv_hash_bytes(key, n, seed), key, (uint32_t)n);
}

static bool is_pow2(size_t n)
{
    return n && (n & (n - 1)) == 0;
}

static void test_hash(void)
{
    CHECK(drv_hash_bytes("abc", 3, 0) == drv_hash_bytes("abc", 3, 0));
    CHECK(drv_hash_bytes("abc", 3, 0) != drv_hash_bytes("abd", 3, 0));
    CHECK(drv_hash_bytes("abc", 3, 0) != drv_hash_bytes("abc", 3, 1));
    CHECK(drv_hash_bytes("ab", 2, 0) != drv_hash_bytes("abc", 3, 0));
    CHECK(drv_hash_bytes("", 0, 7) == drv_hash_bytes(NULL, 0, 7));
}

static void test_empty(void)
{
    drv_hmap m;
    size_t bucket = 0;
    drv_hmap_init(&m);
    CHECK(m.count == 0 && m.nbuckets == 0 && m.buckets == NULL);
    CHECK(lookup(&m, "nope", 0) == NULL);
    CHECK(drv_hmap_first(&m, &bucket) == NULL);
    drv_hmap_free(&m);
    CHECK(m.count == 0 && m.buckets == NULL);
}

static void test_many(void)
{
    enum {
        N = 20000
    };
    const uint64_t seed = 0x1234;
    entry *es = calloc(N, sizeof(*es));
    drv_hmap m;
    size_t base = drv_mem_used();
    drv_hmap_init(&m);

    bool ok = true;
    size_t last_buckets = 0;
    unsigned growths = 0;
    for (unsigned i = 0; i < N; i++) {
        entry_init(&es[i], i, seed);
        ok = ok && drv_hmap_put(&m, &es[i].node) == DRV_OK;
        es[i].in_table = true;
        ok = ok && m.count == i + 1 && is_pow2(m.nbuckets) && m.count <= m.nbuckets;
        if (m.nbuckets != last_buckets) {
            growths++;
            last_buckets = m.nbuckets;
        }
    }
    CHECK(ok);
    CHECK(m.count == N);
    CHECK(m.nbuckets == 32768); /* grown x2 from 16 whenever the load reached 1 */
    CHECK(growths == 12);

    /* Every key is found and maps to its own entry; absent keys are not. */
    ok = true;
    for (unsigned i = 0; i < N; i++) {
        drv_hnode *n = lookup(&m, es[i].key, seed);
        ok = ok && n == &es[i].node && entry_of(n)->value == i;
    }
    CHECK(ok);
    CHECK(lookup(&m, "key-20000", seed) == NULL);
    CHECK(lookup(&m, "key-1", seed + 1) == NULL); /* other seed, other hash */
    CHECK(lookup(&m, "key-", seed) == NULL);

    /* Iteration visits every node exactly once. */
    size_t bucket, visited = 0;
    for (drv_hnode *n = drv_hmap_first(&m, &bucket); n; n = drv_hmap_next(&m, n, &bucket)) {
        entry_of(n)->seen++;
        visited++;
    }
    CHECK(visited == N);
    ok = true;
    for (unsigned i = 0; i < N; i++)
        ok = ok && es[i].seen == 1;
    CHECK(ok);

    /* Delete every third entry, then check membership and iteration again. */
    for (unsigned i = 0; i < N; i += 3) {
        drv_hmap_del(&m, &es[i].node);
        es[i].in_table = false;
    }
    size_t remaining = N - (N + 2) / 3;
    CHECK(m.count == remaining);
    ok = true;
    for (unsigned i = 0; i < N; i++) {
        drv_hnode *n = lookup(&m, es[i].key, seed);
        ok = ok && (es[i].in_table ? n == &es[i].node : n == NULL);
        es[i].seen = 0;
    }
    CHECK(ok);
    visited = 0;
    for (drv_hnode *n = drv_hmap_first(&m, &bucket); n; n = drv_hmap_next(&m, n, &bucket)) {
        entry_of(n)->seen++;
        visited++;
    }
    CHECK(visited == remaining);
    ok = true;
    for (unsigned i = 0; i < N; i++)
        ok = ok && es[i].seen == (es[i].in_table ? 1u : 0u);
    CHECK(ok);

    /* A deleted entry can go back in. */
    CHECK(drv_hmap_put(&m, &es[0].node) == DRV_OK);
    es[0].in_table = true;
    CHECK(lookup(&m, es[0].key, seed) == &es[0].node);
    CHECK(m.count == remaining + 1);

    /* Delete everything: empty, but the buckets stay until free. */
    for (unsigned i = 0; i < N; i++)
        if (es[i].in_table)
            drv_hmap_del(&m, &es[i].node);
    CHECK(m.count == 0);
    CHECK(drv_hmap_first(&m, &bucket) == NULL);
    drv_hmap_free(&m);
    CHECK(drv_mem_used() == base);
    free(es);
}

static void test_collisions(void)
{
    /* Same hash, different keys (and a key that is a prefix of another). */
    static const char *keys[] = {"a", "ab", "abc", "b", "", "ba"};
    enum {
        K = sizeof(keys) / sizeof(keys[0])
    };
    drv_hnode nodes[K];
    drv_hmap m;
    drv_hmap_init(&m);
    for (size_t i = 0; i < K; i++) {
        nodes[i].key = keys[i];
        nodes[i].klen = (uint32_t)strlen(keys[i]);
        nodes[i].hash = 42;
        CHECK(drv_hmap_put(&m, &nodes[i]) == DRV_OK);
    }
    for (size_t i = 0; i < K; i++)
        CHECK(drv_hmap_get(&m, 42, keys[i], (uint32_t)strlen(keys[i])) == &nodes[i]);
    CHECK(drv_hmap_get(&m, 42, "abcd", 4) == NULL);
    CHECK(drv_hmap_get(&m, 43, "a", 1) == NULL); /* same key, other hash */

    /* Remove from the middle, the head and the tail of the chain. */
    drv_hmap_del(&m, &nodes[2]);
    drv_hmap_del(&m, &nodes[K - 1]);
    drv_hmap_del(&m, &nodes[0]);
    CHECK(m.count == K - 3);
    CHECK(drv_hmap_get(&m, 42, "abc", 3) == NULL);
    CHECK(drv_hmap_get(&m, 42, "a", 1) == NULL);
    CHECK(drv_hmap_get(&m, 42, "ba", 2) == NULL);
    CHECK(drv_hmap_get(&m, 42, "ab", 2) == &nodes[1]);
    CHECK(drv_hmap_get(&m, 42, "b", 1) == &nodes[3]);
    CHECK(drv_hmap_get(&m, 42, "", 0) == &nodes[4]);
    drv_hmap_free(&m);
}

static void test_alloc_failure(void)
{
    enum {
        N = 40
    };
    entry es[N];
    drv_hmap m;
    drv_hmap_init(&m);
    for (unsigned i = 0; i < N; i++)
        entry_init(&es[i], i, 0);

    /* The first bucket array cannot be allocated: nothing inserted. */
    drv_mem_fail_at(1);
    CHECK(drv_hmap_put(&m, &es[0].node) == DRV_NOMEM);
    CHECK(m.count == 0 && m.nbuckets == 0);
    CHECK(lookup(&m, es[0].key, 0) == NULL);
    CHECK(drv_hmap_put(&m, &es[0].node) == DRV_OK);
    CHECK(m.nbuckets == 16);

    for (unsigned i = 1; i < 16; i++)
        CHECK(drv_hmap_put(&m, &es[i].node) == DRV_OK);
    CHECK(m.count == 16 && m.nbuckets == 16);

    /* Growth fails: the put still succeeds, over-loaded. */
    drv_mem_fail_at(1);
    CHECK(drv_hmap_put(&m, &es[16].node) == DRV_OK);
    CHECK(m.count == 17 && m.nbuckets == 16);
    bool ok = true;
    for (unsigned i = 0; i <= 16; i++)
        ok = ok && lookup(&m, es[i].key, 0) == &es[i].node;
    CHECK(ok);

    /* The next put grows for real and everything is still there. */
    for (unsigned i = 17; i < N; i++)
        CHECK(drv_hmap_put(&m, &es[i].node) == DRV_OK);
    CHECK(m.nbuckets == 64 && m.count == N);
    ok = true;
    for (unsigned i = 0; i < N; i++)
        ok = ok && lookup(&m, es[i].key, 0) == &es[i].node;
    CHECK(ok);
    size_t bucket, visited = 0;
    for (drv_hnode *n = drv_hmap_first(&m, &bucket); n; n = drv_hmap_next(&m, n, &bucket))
        visited++;
    CHECK(visited == N);
    drv_mem_fail_at(0);
    drv_hmap_free(&m);
}

static unsigned released;

static void count_release(drv_hnode *n)
{
    entry_of(n)->in_table = false;
    released++;
}

/* drv_hmap_clear hands every node to release once and leaves an empty map. */
static void test_clear(void)
{
    enum {
        N = 300
    };
    static entry es[N];
    drv_hmap m;
    drv_hmap_init(&m);
    for (unsigned i = 0; i < N; i++) {
        entry_init(&es[i], i, 7);
        CHECK(drv_hmap_put(&m, &es[i].node) == DRV_OK);
        es[i].in_table = true;
    }
    released = 0;
    drv_hmap_clear(&m, count_release);
    CHECK(released == N);
    bool all = true;
    for (unsigned i = 0; i < N; i++)
        all = all && !es[i].in_table;
    CHECK(all);
    CHECK(m.count == 0 && m.nbuckets == 0 && m.buckets == NULL);
    CHECK(lookup(&m, "key-1", 7) == NULL);
    drv_hmap_clear(&m, NULL); /* an empty map: nothing to do */
    CHECK(m.count == 0);
}

int main(void)
{
    test_hash();
    test_empty();
    test_many();
    test_collisions();
    test_alloc_failure();
    test_clear();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
