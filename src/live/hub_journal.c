/*
 * hub_journal.c — the hub's journal of telemetry arrivals, for exact SSE
 * resume (see hub.h and ADR-0016).
 *
 * A ring of drv_hub_jentry: sequence number, tenant and device hashes,
 * sample time.  It grows by doubling up to cfg.journal_entries; beyond, the
 * oldest entry is overwritten and jfloor moves past it, so a cursor that old
 * is told to replay by time.  The journal is only as good as the bus's
 * publishing: wanted() must have been true without a break since the
 * cursor.  The hub therefore holds a listener of its own from the first SSE
 * subscription until stream.resume_window_ms after the last one ended; when
 * it lets go, the journal is emptied and jfloor jumps to the present.
 */
#include "live/hub_int.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "platform/clock.h"

#define TICK_MS 1000
#define FIRST_CAP 4096

uint64_t drv_hub_hash(const char *tenant, const char *device)
{
    uint64_t h = drv_hash_bytes(tenant, strlen(tenant), 0x6a6f75726e616cull);
    if (!device)
        return h;
    h = drv_hash_bytes("/", 1, h);
    return drv_hash_bytes(device, strlen(device), h);
}

uint64_t hub_hash_device(drv_span tenant, drv_span device, uint64_t *tenant_hash)
{
    uint64_t h = drv_hash_bytes(tenant.p, tenant.n, 0x6a6f75726e616cull);
    *tenant_hash = h;
    h = drv_hash_bytes("/", 1, h);
    return drv_hash_bytes(device.p, device.n, h);
}

uint64_t drv_hub_seq(drv_hub *hub)
{
    return atomic_load(&hub->next_seq) - 1;
}

void hub_journal_add(drv_hub *hub, uint64_t seq, const drv_event_view *v)
{
    size_t max = hub->cfg.journal_entries;
    if (hub->jlen == hub->jcap && hub->jcap < max) {
        size_t cap = hub->jcap ? hub->jcap * 2 : FIRST_CAP;
        if (cap > max)
            cap = max;
        drv_hub_jentry *r = drv_malloc(cap * sizeof(*r));
        if (r) {
            /* Unroll the ring into the new array, oldest first. */
            for (size_t i = 0; i < hub->jlen; i++)
                r[i] = hub->ring[(hub->jhead + i) % hub->jcap];
            drv_free(hub->ring);
            hub->ring = r;
            hub->jcap = cap;
            hub->jhead = 0;
        }
    }
    if (hub->jcap == 0) {
        hub->jfloor = seq; /* nothing kept: only later cursors are answerable */
        return;
    }
    if (hub->jlen == hub->jcap) { /* full: the oldest goes */
        hub->jfloor = hub->ring[hub->jhead].seq;
        hub->jhead = (hub->jhead + 1) % hub->jcap;
        hub->jlen--;
    }
    drv_hub_jentry *e = &hub->ring[(hub->jhead + hub->jlen) % hub->jcap];
    e->seq = seq;
    e->device = hub_hash_device(v->tenant, v->device, &e->tenant);
    e->ts = v->ts_ms;
    hub->jlen++;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

drv_err drv_hub_journal_read(drv_hub *hub, const char *tenant, const uint64_t *devs, size_t ndevs,
                             uint64_t after, size_t max, drv_hub_jentry **out, size_t *n,
                             uint64_t *upto)
{
    *out = NULL;
    *n = 0;
    uint64_t th = drv_hub_hash(tenant, NULL);
    pthread_mutex_lock(&hub->jlock);
    uint64_t newest = atomic_load(&hub->next_seq) - 1;
    *upto = newest;
    if (after < hub->jfloor || after > newest) {
        pthread_mutex_unlock(&hub->jlock);
        return DRV_NOTFOUND;
    }
    /* The entries after `after`: a binary search over the ring's seqs. */
    size_t lo = 0, hi = hub->jlen;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (hub->ring[(hub->jhead + mid) % hub->jcap].seq <= after)
            lo = mid + 1;
        else
            hi = mid;
    }
    drv_err e = DRV_OK;
    size_t cap = 0;
    for (size_t i = lo; i < hub->jlen; i++) {
        const drv_hub_jentry *je = &hub->ring[(hub->jhead + i) % hub->jcap];
        if (je->tenant != th)
            continue;
        if (devs && !bsearch(&je->device, devs, ndevs, sizeof(*devs), cmp_u64))
            continue;
        if (*n == max) {
            e = DRV_TOOBIG;
            break;
        }
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 256;
            drv_hub_jentry *r = drv_realloc(*out, nc * sizeof(*r));
            if (!r) {
                e = DRV_NOMEM;
                break;
            }
            *out = r;
            cap = nc;
        }
        (*out)[(*n)++] = *je;
    }
    pthread_mutex_unlock(&hub->jlock);
    if (e != DRV_OK) {
        drv_free(*out);
        *out = NULL;
        *n = 0;
    }
    return e;
}

/* Stop listening: the journal can no longer vouch for what follows. */
static void journal_release(drv_hub *hub)
{
    pthread_mutex_lock(&hub->jlock);
    hub->jlen = 0;
    hub->jhead = 0;
    /* Not next_seq - 1: a cursor at the last event before the pause must not
     * pass, since what arrived during it was never numbered. */
    hub->jfloor = atomic_load(&hub->next_seq);
    drv_free(hub->ring);
    hub->ring = NULL;
    hub->jcap = 0;
    pthread_mutex_unlock(&hub->jlock);
    hub->journal_listening = false;
    if (hub->cfg.bus.ops)
        hub->cfg.bus.ops->listeners_add(hub->cfg.bus.st, -1);
}

static void on_tick(void *ud)
{
    drv_hub *hub = ud;
    hub_refresh_memberships(hub);
    if (hub->journal_listening && hub->nsse == 0 && drv_loop_now(hub->loop) >= hub->window_until)
        journal_release(hub);
    drv_timer_start(hub->loop, &hub->tick, TICK_MS, on_tick, hub);
}

void hub_journal_sse_begin(drv_hub *hub)
{
    hub->nsse++;
    if (!hub->journal_listening) {
        /* The subscription's own listener has kept the bus publishing since
         * drv_hub_prepare; from here the hub's keeps it going for the window. */
        if (hub->cfg.bus.ops)
            hub->cfg.bus.ops->listeners_add(hub->cfg.bus.st, 1);
        hub->journal_listening = true;
    }
}

void hub_journal_sse_end(drv_hub *hub)
{
    if (hub->nsse > 0)
        hub->nsse--;
    hub->window_until = drv_loop_now(hub->loop) + hub->cfg.resume_window_ms;
}

drv_err hub_journal_init(drv_hub *hub)
{
    if (!hub->cfg.journal_entries)
        hub->cfg.journal_entries = 1u << 20;
    if (!hub->cfg.resume_window_ms)
        hub->cfg.resume_window_ms = 600000;
    /* Sequence numbers start at the wall clock in microseconds, so a cursor
     * from an earlier run is always below this run's floor. */
    uint64_t start = drv_wall_ms() * 1000;
    atomic_store(&hub->next_seq, start + 1);
    hub->jfloor = start;
    if (pthread_mutex_init(&hub->jlock, NULL) != 0)
        return DRV_NOMEM;
    drv_timer_start(hub->loop, &hub->tick, TICK_MS, on_tick, hub);
    return DRV_OK;
}

void hub_journal_free(drv_hub *hub)
{
    if (hub->journal_listening && hub->cfg.bus.ops)
        hub->cfg.bus.ops->listeners_add(hub->cfg.bus.st, -1);
    hub->journal_listening = false;
    drv_free(hub->ring);
    hub->ring = NULL;
    pthread_mutex_destroy(&hub->jlock);
}
