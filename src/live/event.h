/*
 * event.h — what applications are told: the platform's one event model for
 * live streams (ADR-0016), and its compact wire form on the event bus.
 *
 * Two kinds today:
 *   - telemetry: the samples of one device at one time, as stored;
 *   - device events: a row of a device's event history (connected,
 *     disconnected, provisioned, decommissioned, decode_error, ...), whose
 *     stream type is "device.<kind>".
 * Later features (shadow deltas, command status, alarms, OTA progress) add
 * kinds here and publish them the same way.
 *
 * Publishers describe an event with drv_event (pointers into their own
 * memory) and append it to a batch (drv_event_batch_add): the batch is one
 * flat buffer of self-contained records, so handing a whole batch to another
 * thread — or to another node over NATS — is one buffer, with no pointers
 * and no allocation per event.  Readers walk a batch with drv_event_next,
 * which gives views into the buffer.
 */
#ifndef DRV_LIVE_EVENT_H
#define DRV_LIVE_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/sample.h"
#include "core/span.h"

typedef enum drv_event_kind {
    DRV_EVENT_TELEMETRY = 1,
    DRV_EVENT_DEVICE = 2,
    /* Not an event: events were lost here (a producer's batch overflowed, a
     * consumer ran out of memory).  Consumers that promise an exact history
     * (the hub's journal) start over from this point.  Tenant and device
     * are "*". */
    DRV_EVENT_GAP = 3,
    /* Shadow changes and command transitions (ADR-0017, ADR-0018): laid out
     * like DEVICE, with dev_kind the whole stream type ("shadow.updated",
     * "command.sent"), id 0, and detail a JSON object.  Live only: a
     * resumed SSE stream does not replay them. */
    DRV_EVENT_TWIN = 4,
} drv_event_kind;

/* Longest device-event kind ("connected"), and detail JSON, in bytes. */
#define DRV_EVENT_MAX_KIND 64u
#define DRV_EVENT_MAX_DETAIL 4096u
/* Longest TWIN detail (a shadow patch can be large; the producer drops the
 * state from the detail beyond it). */
#define DRV_EVENT_MAX_TWIN_DETAIL 65535u

/* An event as a publisher describes it (borrowed pointers). */
typedef struct drv_event {
    drv_event_kind kind;
    const char *tenant;
    const char *device;
    int64_t ts_ms; /* sample time (telemetry), or when it happened */
    /* TELEMETRY: samples of this device, all at ts_ms */
    const drv_sample *samples;
    uint32_t nsamples;
    /* DEVICE: the kind ("connected"), its row in the event history, detail
     * as JSON object text (NULL: none); TWIN: the type, 0, detail */
    const char *dev_kind;
    int64_t id;
    const char *detail;
} drv_event;

/* Append ev's record to batch (capped buffer).  DRV_INVAL for an event that
 * does not fit the record's limits (ids too long, more than 65535 samples),
 * DRV_TOOBIG past the cap. */
drv_err drv_event_batch_add(drv_buf *batch, const drv_event *ev);

/* One record of a batch, as views into it. */
typedef struct drv_event_view {
    drv_event_kind kind;
    drv_span tenant, device;
    int64_t ts_ms;
    uint32_t nsamples; /* TELEMETRY: the samples' records follow (drv_event_sample) */
    drv_span samples;  /* their bytes */
    drv_span dev_kind; /* DEVICE */
    int64_t id;
    drv_span detail; /* empty: none */
} drv_event_view;

/* The next record at *off of p[0..n) into *v, advancing *off: true; false at
 * the end or at a malformed record (a batch from another node is checked,
 * never trusted). */
bool drv_event_next(const uint8_t *p, size_t n, size_t *off, drv_event_view *v);

/* The next sample of a TELEMETRY view: *off starts at 0; false after the
 * last.  The key and a string value point into the batch. */
bool drv_event_sample(const drv_event_view *v, size_t *off, drv_sample *out);

#endif
