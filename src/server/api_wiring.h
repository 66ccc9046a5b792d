/*
 * api_wiring.h — the REST API's place in `drover serve` (see api_wiring.c).
 */
#ifndef DRV_SERVER_API_WIRING_H
#define DRV_SERVER_API_WIRING_H

#include "broker/broker.h"
#include "core/err.h"
#include "registry/store.h"
#include "server/config.h"

typedef struct api_wiring api_wiring;

/* Open the registry, start the API thread, and point bc's HTTP hand-over at
 * it.  *out stays NULL when api.enabled is false. */
drv_err api_wiring_start(const drv_settings *s, drv_broker_config *bc, api_wiring **out);
/* Tell the API which broker to report on (before the listeners start). */
void api_wiring_set_broker(api_wiring *w, drv_broker *b);
/* After the broker is gone: stop the HTTP thread and close the registry. */
void api_wiring_stop(api_wiring *w);

/* Open the registry database the settings name (for admin subcommands too). */
drv_err api_wiring_open_store(const drv_settings *s, drv_store **out);

#endif
