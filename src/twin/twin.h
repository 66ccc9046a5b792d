/*
 * twin.h — the twin service: device shadows (ADR-0017) and commands
 * (ADR-0018) between devices on MQTT and applications on REST.
 *
 * Threads.  One service thread owns the device side: the broker's publish
 * tap hands it the device messages on shadow and command topics
 * (drv_twin_device_message, worker threads, never blocking) and tells it of
 * connects and subscriptions (drv_twin_session).  It works through what
 * arrived in batches — one store transaction (one fsync) per batch — then
 * publishes the answers to devices (drv_broker_inject, connected devices
 * only), stages the live events and flushes them.  It also owns the command
 * timers: deadlines are kept in the store (next_ms), so they outlive a
 * restart, and the thread sleeps until the earliest.
 *
 * Acknowledged means durable: a worker whose turn accepted device messages
 * for the service waits in drv_twin_commit_wait until the service has
 * committed them, before the turn's PUBACKs are written.
 *
 * Applications call the drv_twin_api_* functions on their own thread with
 * their own store handle (the HTTP thread): shadow reads and updates run
 * there, to completion (one transaction each), and what they change reaches
 * the device and the live stream from there too.  New and cancelled
 * commands are written there and the service is told to send them.
 */
#ifndef DRV_TWIN_TWIN_H
#define DRV_TWIN_TWIN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/broker.h"
#include "core/err.h"
#include "live/bus.h"
#include "twin/twin_store.h"

typedef struct drv_twin drv_twin;

typedef struct drv_twin_config {
    const char *data_dir;         /* twin.db lives here */
    size_t shadow_max_bytes;      /* state size limit (shadow.max_bytes) */
    uint32_t shadow_history_days; /* history kept; 0: forever */
    uint32_t max_pending;         /* device messages waiting for the service, all devices */
    uint32_t retry_base_ms;       /* first resend of an unacknowledged command */
    uint32_t max_inflight;        /* commands sent, not acknowledged, per device */
    uint32_t cmd_max_pending;     /* unfinished commands per device */
    /* Publishing to devices (the broker's drv_broker_inject); any thread. */
    uint32_t (*inject)(void *ud, const drv_inject *m);
    void *inject_ud;
    const drv_bus *bus; /* live events; NULL: none */
    /* A command reached a final state (the service's thread; must not block):
     * the API wakes its synchronous waiters. */
    void (*on_settled)(void *ud, const char *tenant, const char *command_id);
    void *settled_ud;
    /* Registration by claim (the service's thread; may block on storage):
     * the answer's code (200: accepted) and *answer.  NULL: refused 500. */
    int (*provision)(void *ud, const char *tenant, const char *claim_ca, const char *claim_fp,
                     const uint8_t *payload, size_t len, json_t **answer);
    void *provision_ud;
} drv_twin_config;

/* Open the store and start the service thread. */
drv_err drv_twin_start(const drv_twin_config *cfg, drv_twin **out);
/* Stop the thread (finishing what it took) and close the store. */
void drv_twin_stop(drv_twin *tw);

/* Let the service publish from now on (the broker exists after the service;
 * until this is called nothing is published).  inject NULL: stop. */
void drv_twin_set_inject(drv_twin *tw, uint32_t (*inject)(void *ud, const drv_inject *m), void *ud);

/* -- the device side (the broker's publish tap) ------------------------------- */

/*
 * A device published `rest` (its topic after "devices/<device>/") under
 * "shadow/" or "commands/": queue it for the service.  MQTT reason code:
 * 0 queued (the tap marks it taken), MQTT_RC_QUOTA_EXCEEDED when
 * max_pending messages wait already; *is_twin false when the topic is not
 * one of the service's (then nothing happened).  Worker thread, broker lock
 * held: never blocks.
 */
uint8_t drv_twin_device_message(drv_twin *tw, const char *tenant, const char *device,
                                const uint8_t *rest, size_t rest_len, const uint8_t *payload,
                                size_t payload_len, bool *is_twin);

/*
 * A claim session (docs/provisioning.md) of `tenant` with client id `cid`
 * published `payload` to provisioning/<cid>/register: queue it for the
 * config's `provision` handler; its answer goes to
 * provisioning/<cid>/register/accepted or /rejected once it returns.  The
 * same reason codes and commit wait as drv_twin_device_message.
 */
uint8_t drv_twin_claim_message(drv_twin *tw, const char *tenant, const char *cid,
                               const char *claim_ca, const char *claim_fp, const uint8_t *payload,
                               size_t payload_len);

/* The device connected (filter NULL) or was granted filter: queue a look at
 * what waits for it (a delta, commands).  Worker thread, never blocks. */
void drv_twin_session(drv_twin *tw, const char *tenant, const char *device, const uint8_t *filter,
                      size_t filter_len);

/* Worker turn end: wait until everything this thread queued is committed.
 * DRV_OK, or the error the service's commit had (the turn's
 * acknowledgements are then withheld). */
drv_err drv_twin_commit_wait(drv_twin *tw);

/* -- the application side (the API thread, with its own store) ----------------- */

/* Who changed something, for history and events. */
typedef struct drv_twin_actor {
    const char *actor;  /* "token:<id>", "oauth:<client>", "device" */
    const char *source; /* "rest", "mqtt" */
} drv_twin_actor;

/* An answer for REST: status and problem detail (static text or in buf). */
typedef struct drv_twin_answer {
    int status; /* 200, 201, 202, 204, 400, 404, 409, 412, 413, 500 */
    char detail[160];
} drv_twin_answer;

/* Open a store handle for the calling thread (close with drv_twin_store_close). */
drv_err drv_twin_open_store(drv_twin *tw, drv_twin_store **out);

/* The rendered shadow with "device" and "name" (*out new), or a 404. */
void drv_twin_api_shadow_get(drv_twin *tw, drv_twin_store *st, const char *tenant,
                             const char *device, const char *name, json_t **out,
                             drv_twin_answer *ans);
/* Apply an update body (shadow_doc.h); if_match > 0: the version it must be
 * at (412 otherwise).  *out: the rendered shadow after it. */
void drv_twin_api_shadow_update(drv_twin *tw, drv_twin_store *st, const char *tenant,
                                const char *device, const char *name, json_t *body,
                                int64_t if_match, const drv_twin_actor *who, json_t **out,
                                drv_twin_answer *ans);
void drv_twin_api_shadow_delete(drv_twin *tw, drv_twin_store *st, const char *tenant,
                                const char *device, const char *name, int64_t if_match,
                                const drv_twin_actor *who, drv_twin_answer *ans);

/*
 * Create a command from a request body (docs/commands.md: name, params,
 * timeout_ms, expires_in_ms | expires_at, max_attempts, idempotency_key;
 * wait_ms is the caller's).  idem_header: the Idempotency-Key header or
 * NULL.  batch: the batch id or NULL.  201-like success is status 202 with
 * *out the command document and *replayed when the key returned an
 * existing command (status 202 too); 400, 409 otherwise.  Without a
 * batch the service is told to send it at once; with one (a group fan-out
 * inside the caller's transaction) the caller does that after its commit
 * (drv_twin_api_flush, drv_twin_kick).
 */
void drv_twin_api_command_create(drv_twin *tw, drv_twin_store *st, const char *tenant,
                                 const char *device, json_t *body, const char *idem_header,
                                 const char *batch, json_t **out, bool *replayed,
                                 drv_twin_answer *ans);
/* A batch's caller, after committing the transaction its creates ran in:
 * publish (committed) or drop their live events, then kick each device. */
void drv_twin_api_flush(drv_twin *tw, bool committed);
void drv_twin_kick(drv_twin *tw, const char *tenant, const char *device);
/* Validate a command body without storing anything (group fan-out checks
 * once before creating many). */
bool drv_twin_command_body_valid(json_t *body, const char *idem_header, drv_twin_answer *ans);
/* Cancel: 200 with *out, 404, 409 (already finished). */
void drv_twin_api_command_cancel(drv_twin *tw, drv_twin_store *st, const char *tenant,
                                 const char *id, const drv_twin_actor *who, json_t **out,
                                 drv_twin_answer *ans);

/* Decommissioning: cancel every unfinished command of the device (they
 * could never be delivered); *n gets how many.  The API thread. */
drv_err drv_twin_api_cancel_device(drv_twin *tw, drv_twin_store *st, const char *tenant,
                                   const char *device, const drv_twin_actor *who, uint32_t *n);

/* Decommissioning with purge: forget the device's shadows and commands. */
drv_err drv_twin_api_purge_device(drv_twin *tw, drv_twin_store *st, const char *tenant,
                                  const char *device);

/* Counters for /metrics (approximate). */
typedef struct drv_twin_stats {
    uint64_t shadow_updates;   /* accepted changes, both sides */
    uint64_t shadow_rejected;  /* rejected requests, both sides */
    uint64_t commands_created; /* by the API */
    uint64_t commands_sent;    /* publishes to devices, retries included */
    uint64_t commands_settled; /* reached a final state */
    uint64_t device_messages;  /* taken from the tap */
    uint64_t refused_busy;     /* refused: max_pending */
    uint64_t batches;          /* service transactions */
} drv_twin_stats;
void drv_twin_get_stats(drv_twin *tw, drv_twin_stats *out);

#endif
