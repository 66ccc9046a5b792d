/*
 * live_wiring.h — the live streams in the server (ADR-0016): the event bus,
 * the hub thread behind /api/v1/stream, and what feeds the bus (telemetry
 * from the pipeline, device events from the registry's event hook).
 *
 * Order matters, because producers run on many threads:
 *   live_wiring_open  — the bus and the registry event hook, before any
 *                       registry handle or the pipeline exists;
 *   live_wiring_start — the hub, once the API exists (its filter checks);
 *   live_wiring_stop  — after every producer has stopped (the broker, the
 *                       registry's writer thread, the HTTP server) and
 *                       before the API is freed.
 */
#ifndef DRV_SERVER_LIVE_WIRING_H
#define DRV_SERVER_LIVE_WIRING_H

#include "api/api.h"
#include "core/err.h"
#include "live/bus.h"
#include "server/config.h"

typedef struct live_wiring live_wiring;

drv_err live_wiring_open(const drv_settings *s, live_wiring **out);
/* The bus producers publish on (valid until live_wiring_stop). */
const drv_bus *live_wiring_bus(const live_wiring *l);
/* Start the hub and give it to the API, with its own registry reader. */
drv_err live_wiring_start(live_wiring *l, drv_api *api, const drv_settings *s);
void live_wiring_stop(live_wiring *l);

#endif
