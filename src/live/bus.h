/*
 * bus.h — the platform's event bus for applications (ADR-0016): producers
 * (the telemetry pipeline, the registry's device events, later shadows,
 * commands, alarms, OTA) publish events; consumers (the live hub that
 * serves WebSocket and SSE streams, later the rule engine) receive them.
 *
 * The interface is an ops table so that a cluster can carry events between
 * nodes over NATS without touching producers or consumers; drv_bus_local is
 * the embedded default: one process, the consumers called on the
 * publisher's thread (they copy and return at once).
 *
 * Batching (principle 2): a producer never publishes per message on a hot
 * path.  It stages events on its own thread (drv_bus_stage, a thread-local
 * batch, no lock) and publishes the thread's batch once per turn
 * (drv_bus_flush) — for the broker workers, after the turn's telemetry is
 * durable and before its acknowledgements leave, so an application never
 * sees an event the platform could still lose.
 *
 * Interest: staging costs a copy, so producers ask drv_bus_wanted() first;
 * it is false while no consumer listens (an atomic load).
 */
#ifndef DRV_LIVE_BUS_H
#define DRV_LIVE_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "live/event.h"

/* A consumer: receives a batch of records (event.h) on the publisher's
 * thread; copies what it needs and returns without blocking. */
typedef void (*drv_bus_sink)(void *ud, const uint8_t *batch, size_t n);

typedef struct drv_bus_ops {
    const char *name;
    /* Deliver a batch of records to every consumer (here or on other nodes). */
    drv_err (*publish)(void *st, const uint8_t *batch, size_t n);
    /* Someone listens (on any node). */
    bool (*wanted)(void *st);
    /* Add this process's consumer (one per bus in this version). */
    drv_err (*attach)(void *st, drv_bus_sink sink, void *ud);
    /* This process's consumer gained (delta > 0) or lost subscribers: drives
     * wanted().  Called before the subscriber can miss anything (ADR-0016). */
    void (*listeners_add)(void *st, int64_t delta);
    void (*close)(void *st);
} drv_bus_ops;

typedef struct drv_bus {
    const drv_bus_ops *ops;
    void *st;
} drv_bus;

/* The embedded bus: consumers in this process only. */
drv_err drv_bus_local_open(drv_bus *out);

/* Whether publishing is worth it now (false for a bus without ops). */
bool drv_bus_wanted(const drv_bus *bus);

/* Stage ev in this thread's batch (copied).  Past 1 MiB in one turn the
 * rest is dropped and counted, and a gap record marks the loss (events are
 * never published before the commit that makes them durable).  Any thread. */
void drv_bus_stage(const drv_bus *bus, const drv_event *ev);

/* Stage the samples of one device's message as telemetry events: one per
 * run of samples with the same time (a batch payload gives several). */
void drv_bus_stage_telemetry(const drv_bus *bus, const char *tenant, const char *device,
                             const drv_sample *s, uint32_t n);

/* Publish this thread's staged events, if any. */
void drv_bus_flush(const drv_bus *bus);

/* Drop this thread's staged events (the work they describe failed). */
void drv_bus_discard(void);

/* Counters (approximate). */
typedef struct drv_bus_stats {
    uint64_t events;  /* records published */
    uint64_t batches; /* batches published */
    uint64_t dropped; /* records that did not fit (over a record limit, or no memory) */
} drv_bus_stats;
void drv_bus_get_stats(drv_bus_stats *out);

#endif
