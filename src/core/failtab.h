/*
 * failtab.h — failed logins per peer address, for refusing a peer that
 * keeps guessing before it costs another password hash (Argon2id takes tens
 * of milliseconds of a thread).  A peer with `max` failures inside `window_ms`
 * is blocked until that window ends.  Keyed by address family and IP (the
 * port changes with every connection); bounded: past `peers_max` tracked
 * peers the table forgets everyone rather than grow.  One thread at a time
 * (no lock); the caller passes the time, so core stays clock-free.
 */
#ifndef DRV_CORE_FAILTAB_H
#define DRV_CORE_FAILTAB_H

#include <stdbool.h>
#include <stdint.h>

#include "core/hmap.h"

typedef struct drv_failtab {
    drv_hmap map;
    uint32_t max;       /* failures a peer may have in a window */
    uint64_t window_ms; /* the window */
    uint32_t peers_max; /* peers tracked at most */
} drv_failtab;

void drv_failtab_init(drv_failtab *t, uint32_t max, uint64_t window_ms, uint32_t peers_max);
void drv_failtab_free(drv_failtab *t);

/* Is the peer (family, 16-byte IP) blocked at now_ms?  *retry_s (may be
 * NULL): seconds until it may try again. */
bool drv_failtab_blocked(drv_failtab *t, uint8_t family, const uint8_t ip[16], uint64_t now_ms,
                         uint32_t *retry_s);
/* Count one failure of the peer at now_ms. */
void drv_failtab_failed(drv_failtab *t, uint8_t family, const uint8_t ip[16], uint64_t now_ms);

#endif
