/*
 * failtab_test.c — unit tests for failed logins per peer (src/core/failtab.c):
 * blocked at the max-th failure inside the window and not before, the retry
 * time, a new window after the old one, peers (and families) kept apart,
 * the bound on tracked peers, and a table that survives allocation failure.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/failtab.h"

#include "core/test.h"

static const uint8_t ip_a[16] = {10, 0, 0, 1};
static const uint8_t ip_b[16] = {10, 0, 0, 2};

static void test_window(void)
{
    drv_failtab t;
    drv_failtab_init(&t, 3, 60000, 100);
    uint64_t now = 1000000;
    CHECK(!drv_failtab_blocked(&t, 4, ip_a, now, NULL));
    drv_failtab_failed(&t, 4, ip_a, now);
    drv_failtab_failed(&t, 4, ip_a, now + 10);
    CHECK(!drv_failtab_blocked(&t, 4, ip_a, now + 20, NULL)); /* two: not yet */
    drv_failtab_failed(&t, 4, ip_a, now + 20);
    uint32_t retry = 0;
    CHECK(drv_failtab_blocked(&t, 4, ip_a, now + 30, &retry)); /* the third blocks */
    CHECK(retry == 60); /* (60000 - 30) ms, rounded up to whole seconds */
    CHECK(drv_failtab_blocked(&t, 4, ip_a, now + 59999, &retry) && retry == 1);
    /* Another peer, or the same address in another family, is not blocked. */
    CHECK(!drv_failtab_blocked(&t, 4, ip_b, now + 30, NULL));
    CHECK(!drv_failtab_blocked(&t, 6, ip_a, now + 30, NULL));
    /* The window ends: free again, and counting starts over. */
    CHECK(!drv_failtab_blocked(&t, 4, ip_a, now + 60000, NULL));
    drv_failtab_failed(&t, 4, ip_a, now + 60000);
    CHECK(!drv_failtab_blocked(&t, 4, ip_a, now + 60001, NULL));
    drv_failtab_free(&t);
}

static void test_bounded(void)
{
    drv_failtab t;
    drv_failtab_init(&t, 1, 60000, 10);
    uint8_t ip[16] = {0};
    for (int i = 0; i < 25; i++) {
        ip[3] = (uint8_t)i;
        drv_failtab_failed(&t, 4, ip, 5000);
        CHECK(t.map.count <= 10);
    }
    /* The last peer counted is still blocked: the table forgot the older ones. */
    CHECK(drv_failtab_blocked(&t, 4, ip, 5001, NULL));
    drv_failtab_free(&t);
}

static void test_alloc_failure(void)
{
    drv_failtab t;
    drv_failtab_init(&t, 1, 60000, 10);
    drv_mem_fail_at(1); /* the next allocation fails */
    drv_failtab_failed(&t, 4, ip_a, 1000);
    drv_mem_fail_at(0);
    CHECK(!drv_failtab_blocked(&t, 4, ip_a, 1001, NULL)); /* not counted, no crash */
    drv_failtab_failed(&t, 4, ip_a, 1002);
    CHECK(drv_failtab_blocked(&t, 4, ip_a, 1003, NULL));
    drv_failtab_free(&t);
}

int main(void)
{
    test_window();
    test_bounded();
    test_alloc_failure();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
