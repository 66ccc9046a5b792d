/*
 * telemetry_wiring.h — the telemetry pipeline's place in `drover serve`
 * (see telemetry_wiring.c): the embedded time-series engine, the pipeline
 * in front of it, and the broker's publish tap into the pipeline.
 */
#ifndef DRV_SERVER_TELEMETRY_WIRING_H
#define DRV_SERVER_TELEMETRY_WIRING_H

#include "broker/broker.h"
#include "core/err.h"
#include "live/bus.h"
#include "pipeline/pipeline.h"
#include "server/config.h"
#include "tsdb/tsdb.h"

typedef struct telemetry_wiring telemetry_wiring;

/* Open <data_dir>/tsdb (replaying its log; what was repaired is logged) and
 * make the pipeline; stored samples go to `bus` (NULL: no live delivery). */
drv_err telemetry_wiring_start(const drv_settings *s, const drv_bus *bus, telemetry_wiring **out);
/* Route device publishes into the pipeline: bc's tap, with the registry
 * auth backend's state telling telemetry topics and decoders. */
void telemetry_wiring_attach(telemetry_wiring *t, void *registry_auth, drv_broker_config *bc);
/* Also hand device shadow and command topics to the twin service (before
 * the broker starts). */
struct drv_twin;
void telemetry_wiring_set_twin(telemetry_wiring *t, struct drv_twin *twin);
drv_ts_store *telemetry_wiring_store(telemetry_wiring *t);
drv_pipeline *telemetry_wiring_pipeline(telemetry_wiring *t);
/* After the broker and the API are gone: flush the engine and close it. */
void telemetry_wiring_stop(telemetry_wiring *t);

#endif
