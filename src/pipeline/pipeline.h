/*
 * pipeline.h — normalisation: every protocol's message becomes one envelope,
 * the envelope's payload becomes samples, the samples go to telemetry
 * storage (ADR-0012).
 *
 * Protocol adapters (the MQTT publish tap, HTTP ingest, later CoAP, Modbus,
 * OPC-UA) fill a drv_envelope and call drv_pipeline_ingest on their own
 * thread — run to completion, no hand-off — then drv_pipeline_commit once per
 * batch before they acknowledge anything (acknowledged means durable).
 * Nothing after the envelope knows the protocol except as metadata.
 *
 * A payload that cannot be decoded is counted, logged with the tenant, the
 * device and the reason (rate-limited), and reported through
 * on_decode_error (which records a "decode_error" device event the tenant
 * can read); it never stops the pipeline.
 */
#ifndef DRV_PIPELINE_PIPELINE_H
#define DRV_PIPELINE_PIPELINE_H

#include <stdint.h>

#include "core/err.h"
#include "core/span.h"
#include "tsdb/tsdb.h"

/* Where an envelope came from (metadata only). */
typedef enum drv_protocol {
    DRV_PROTO_MQTT = 1,
    DRV_PROTO_HTTP = 2,
    DRV_PROTO_COAP = 3,
    DRV_PROTO_MODBUS = 4,
    DRV_PROTO_OPCUA = 5,
} drv_protocol;

/* "mqtt", "http", ... */
const char *drv_protocol_name(drv_protocol p);

/* One message from one device, as every protocol delivers it. */
typedef struct drv_envelope {
    const char *tenant;    /* the device's tenant */
    const char *device;    /* the device id */
    drv_protocol protocol; /* source protocol */
    drv_span topic;        /* MQTT topic or HTTP path, as received (metadata) */
    int64_t recv_ms;       /* when the platform received it (ms since the epoch) */
    drv_span payload;      /* the message body */
    drv_span content_type; /* MIME type if the protocol carried one; empty otherwise */
    const char *decoder;   /* the decoder the device's profile names ("json", ...) */
    drv_span key;          /* "numeric": the key (the topic's last level); else empty */
} drv_envelope;

typedef struct drv_pipeline_config {
    drv_ts_store store;    /* where samples go */
    int64_t max_future_ms; /* device times further ahead than this are refused */
    /* Told of every payload that could not be decoded (any thread; must not
     * block: queue it).  NULL: none. */
    void (*on_decode_error)(void *ud, const drv_envelope *env, const char *why);
    /* Live delivery (the event bus): told of the samples each envelope
     * stored (the ingesting thread; stage them, do not block), then of each
     * commit's outcome (durable: publish what this thread staged; not: drop
     * it).  A sample the store refused is not passed on.  NULL: none. */
    void (*on_stored)(void *ud, const drv_envelope *env, const drv_sample *s, uint32_t n);
    void (*on_commit)(void *ud, bool durable);
    void *ud;
} drv_pipeline_config;

/* What one envelope gave. */
typedef struct drv_ingest_result {
    uint32_t stored;  /* samples stored */
    uint32_t refused; /* samples the store refused (kind conflict, too old, ...) */
    const char *why;  /* static text: the decode error, or the first refusal; NULL: none */
} drv_ingest_result;

typedef struct drv_pipeline drv_pipeline;

drv_err drv_pipeline_new(const drv_pipeline_config *cfg, drv_pipeline **out);
void drv_pipeline_free(drv_pipeline *pl);

/*
 * Decode env and store its samples (not yet durable: commit).  DRV_OK: the
 * payload was read (res says how many samples were stored and refused);
 * DRV_MALFORMED: it could not be read (res->why; nothing stored);
 * DRV_LIMIT: the tenant's storage quota is used up (nothing stored);
 * DRV_NOTFOUND: no decoder of that name; other errors: storage failed
 * (nothing of it may be acknowledged).  Any thread; no allocation on the
 * way (per-thread scratch).
 */
drv_err drv_pipeline_ingest(drv_pipeline *pl, const drv_envelope *env, drv_ingest_result *res);

/* Make everything ingested before this call durable (the store's commit);
 * then on_commit tells the live delivery. */
drv_err drv_pipeline_commit(drv_pipeline *pl);

/* Counters for /metrics (approximate). */
typedef struct drv_pipeline_stats {
    uint64_t messages;      /* envelopes ingested */
    uint64_t samples;       /* samples stored */
    uint64_t refused;       /* samples refused by the store */
    uint64_t decode_errors; /* envelopes whose payload could not be read */
} drv_pipeline_stats;

void drv_pipeline_get_stats(const drv_pipeline *pl, drv_pipeline_stats *out);

#endif
