/*
 * live_wiring.c — see live_wiring.h.
 */
#include "server/live_wiring.h"

#include "core/alloc.h"
#include "core/log.h"
#include "live/hub.h"
#include "registry/store.h"
#include "server/api_wiring.h"

struct live_wiring {
    drv_bus bus;
    drv_hub *hub;
};

/* The registry committed device events (any thread): onto the bus, one
 * publish per commit (the registry batches its own writes). */
static void on_store_events(void *ud, const drv_store_event *ev, size_t n)
{
    live_wiring *l = ud;
    if (!drv_bus_wanted(&l->bus))
        return;
    for (size_t i = 0; i < n; i++) {
        drv_event e = {.kind = DRV_EVENT_DEVICE,
                       .tenant = ev[i].tenant,
                       .device = ev[i].device,
                       .ts_ms = ev[i].ts_ms,
                       .dev_kind = ev[i].kind,
                       .id = ev[i].id,
                       .detail = ev[i].detail};
        drv_bus_stage(&l->bus, &e);
    }
    drv_bus_flush(&l->bus);
}

drv_err live_wiring_open(const drv_settings *s, live_wiring **out)
{
    (void)s;
    live_wiring *l = drv_calloc(1, sizeof(*l));
    if (!l)
        return DRV_NOMEM;
    drv_err e = drv_bus_local_open(&l->bus);
    if (e != DRV_OK) {
        drv_free(l);
        return e;
    }
    drv_store_set_event_hook(on_store_events, l);
    *out = l;
    return DRV_OK;
}

const drv_bus *live_wiring_bus(const live_wiring *l)
{
    return l ? &l->bus : NULL;
}

static uint32_t u32(uint64_t v)
{
    return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

drv_err live_wiring_start(live_wiring *l, drv_api *api, const drv_settings *s)
{
    drv_store *reader = NULL;
    drv_err e = api_wiring_open_store(s, &reader);
    if (e != DRV_OK)
        return e;
    drv_hub_config hc = {
        .bus = l->bus,
        .max_connections = u32(s->stream_max_connections),
        .max_buffer_bytes = u32(s->stream_max_buffer_bytes),
        .heartbeat_ms = u32(s->stream_heartbeat_ms),
        .ws_filter = drv_api_stream_filter,
        .ws_filter_ud = api,
        .revalidate = drv_api_stream_revalidate,
        .revalidate_ud = api,
        .resolve = drv_api_stream_resolve,
        .resolve_ud = api,
        .journal_entries = u32(s->stream_journal_entries),
        .resume_window_ms = u32(s->stream_resume_window_ms),
    };
    e = drv_hub_start(&hc, &l->hub);
    if (e != DRV_OK) {
        drv_error("cannot start the live hub", "error", drv_strerror(e));
        drv_store_close(reader);
        return e;
    }
    drv_api_set_hub(api, l->hub, reader);
    return DRV_OK;
}

void live_wiring_stop(live_wiring *l)
{
    if (!l)
        return;
    drv_store_set_event_hook(NULL, NULL);
    drv_hub_stop(l->hub);
    if (l->bus.ops)
        l->bus.ops->close(l->bus.st);
    drv_free(l);
}
