/*
 * ratelimit.h — "at most N a second", lock-free, for things worth doing a
 * few times a second but not at message rate (log lines and events about
 * bad input from a fleet).  Header-only; any thread; the caller passes the
 * current second (src/platform/clock.h), so core stays clock-free.  Counts
 * are approximate at a second's boundary, never unbounded.
 */
#ifndef DRV_CORE_RATELIMIT_H
#define DRV_CORE_RATELIMIT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct drv_per_second {
    atomic_uint_fast64_t second; /* the second being counted */
    atomic_uint count;           /* events asked for in it */
} drv_per_second;

/* May one more happen in second now_s, at most max a second? */
static inline bool drv_per_second_allow(drv_per_second *r, uint64_t now_s, unsigned max)
{
    uint_fast64_t was = atomic_load_explicit(&r->second, memory_order_relaxed);
    if (was != now_s && atomic_compare_exchange_strong(&r->second, &was, now_s))
        atomic_store_explicit(&r->count, 0, memory_order_relaxed);
    return atomic_fetch_add_explicit(&r->count, 1, memory_order_relaxed) < max;
}

#endif
