/*
 * bus.c — thread-local staging, and the embedded (in-process) bus.
 */
#include "live/bus.h"

#include <pthread.h>
#include <stdatomic.h>

#include "core/alloc.h"
#include "core/buf.h"

/* A thread stages at most this much per turn; more is dropped (and a gap
 * marked), never published before the turn's commit. */
#define STAGE_CAP (1u << 20)
#define STAGE_HARD_CAP (2u * STAGE_CAP + 256u)

static _Thread_local drv_buf tl_stage;
static _Thread_local uint32_t tl_staged;
static _Thread_local bool tl_gap; /* events were dropped from this batch */

/* The stage buffer is released when its thread ends (a key's destructor:
 * threads that stage — workers, the API thread — end at shutdown). */
static pthread_key_t g_stage_key;
static pthread_once_t g_stage_once = PTHREAD_ONCE_INIT;

static void stage_release(void *p)
{
    drv_buf_free(p);
}

static void stage_key_make(void)
{
    (void)pthread_key_create(&g_stage_key, stage_release);
}
static atomic_uint_fast64_t g_events, g_batches, g_dropped;

bool drv_bus_wanted(const drv_bus *bus)
{
    return bus && bus->ops && bus->ops->wanted(bus->st);
}

void drv_bus_flush(const drv_bus *bus)
{
    drv_buf *b = &tl_stage;
    bool gap = tl_gap;
    tl_gap = false;
    if (gap) { /* say so where it happened: after what did fit (not counted) */
        drv_event rec = {.kind = DRV_EVENT_GAP, .tenant = "*", .device = "*"};
        gap = drv_event_batch_add(b, &rec) == DRV_OK;
    }
    if (tl_staged == 0 && !gap)
        return;
    if (bus && bus->ops &&
        bus->ops->publish(bus->st, b->data + b->off, drv_buf_avail(b)) == DRV_OK) {
        atomic_fetch_add_explicit(&g_events, tl_staged, memory_order_relaxed);
        atomic_fetch_add_explicit(&g_batches, 1, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&g_dropped, tl_staged, memory_order_relaxed);
    }
    b->off = b->len = 0; /* keep the storage: the next turn reuses it */
    tl_staged = 0;
}

void drv_bus_discard(void)
{
    tl_stage.off = tl_stage.len = 0;
    tl_staged = 0;
    tl_gap = false;
}

void drv_bus_stage(const drv_bus *bus, const drv_event *ev)
{
    drv_buf *b = &tl_stage;
    (void)bus;
    if (b->cap == 0) {
        drv_buf_init(b, STAGE_HARD_CAP);
        pthread_once(&g_stage_once, stage_key_make);
        (void)pthread_setspecific(g_stage_key, b);
    }
    /* Full: nothing is published before the commit that makes it durable,
     * so the rest of this turn's events are dropped, and the gap marked. */
    drv_err e = b->len < STAGE_CAP ? drv_event_batch_add(b, ev) : DRV_TOOBIG;
    if (e == DRV_OK) {
        tl_staged++;
    } else {
        tl_gap = true;
        atomic_fetch_add_explicit(&g_dropped, 1, memory_order_relaxed);
    }
}

void drv_bus_stage_telemetry(const drv_bus *bus, const char *tenant, const char *device,
                             const drv_sample *s, uint32_t n)
{
    for (uint32_t i = 0; i < n;) {
        uint32_t j = i + 1;
        while (j < n && s[j].ts_ms == s[i].ts_ms)
            j++;
        drv_event ev = {.kind = DRV_EVENT_TELEMETRY,
                        .tenant = tenant,
                        .device = device,
                        .ts_ms = s[i].ts_ms,
                        .samples = s + i,
                        .nsamples = j - i};
        drv_bus_stage(bus, &ev);
        i = j;
    }
}

void drv_bus_get_stats(drv_bus_stats *out)
{
    out->events = atomic_load_explicit(&g_events, memory_order_relaxed);
    out->batches = atomic_load_explicit(&g_batches, memory_order_relaxed);
    out->dropped = atomic_load_explicit(&g_dropped, memory_order_relaxed);
}

/* -- the embedded bus ------------------------------------------------------------- */

typedef struct local_bus {
    drv_bus_sink sink; /* set once, before any publisher runs */
    void *ud;
    atomic_int_fast64_t listeners;
} local_bus;

static drv_err local_publish(void *st, const uint8_t *batch, size_t n)
{
    local_bus *b = st;
    if (b->sink)
        b->sink(b->ud, batch, n);
    return DRV_OK;
}

static bool local_wanted(void *st)
{
    local_bus *b = st;
    return atomic_load(&b->listeners) > 0; /* seq_cst: see ADR-0016 on resume */
}

static drv_err local_attach(void *st, drv_bus_sink sink, void *ud)
{
    local_bus *b = st;
    if (b->sink)
        return DRV_EXISTS;
    b->sink = sink;
    b->ud = ud;
    return DRV_OK;
}

static void local_listeners_add(void *st, int64_t delta)
{
    local_bus *b = st;
    atomic_fetch_add(&b->listeners, delta); /* seq_cst, like the load in wanted() */
}

static void local_close(void *st)
{
    drv_free(st);
}

static const drv_bus_ops local_ops = {
    .name = "local",
    .publish = local_publish,
    .wanted = local_wanted,
    .attach = local_attach,
    .listeners_add = local_listeners_add,
    .close = local_close,
};

drv_err drv_bus_local_open(drv_bus *out)
{
    local_bus *b = drv_calloc(1, sizeof(*b));
    if (!b)
        return DRV_NOMEM;
    out->ops = &local_ops;
    out->st = b;
    return DRV_OK;
}
