/*
 * hub.h — the live hub: the one thread that owns every live-stream
 * connection (WebSocket /api/v1/stream, Server-Sent Events
 * /api/v1/stream/sse) and delivers the event bus to them (ADR-0016,
 * docs/stream.md).
 *
 * How a connection gets here: the HTTP server runs the request's handler on
 * the API thread (authentication, filters, the SSE resume replay), answers
 * `101 Switching Protocols` or `200 text/event-stream`, and then hands the
 * socket over (drv_hub_attach).  From then on the hub alone touches it:
 * it formats each matching event once per subscription, appends it to the
 * connection's bounded output buffer and writes the buffers once per turn.
 * A connection whose buffer would overflow is told ("slow-consumer") and
 * dropped; nothing else ever waits for it.
 *
 * Publishers never call the hub: they publish on the bus (bus.h), whose
 * sink queues the batch for the hub's thread (one lock and one eventfd write
 * per batch, never per event).
 *
 * Resume without a gap (SSE): drv_hub_prepare registers the subscription
 * *before* the replay is read from the stores; events that arrive meanwhile
 * are held, and drv_hub_attach drops those the replay already covered, so
 * the seam loses and repeats nothing.
 *
 * The journal: every telemetry event the hub receives gets a sequence
 * number (its arrival order) and a 32-byte entry in a bounded ring — which
 * device, which sample time; no values.  A resuming SSE client names the
 * last sequence number it got; the API reads the journal for what came
 * after and the values from the time-series engine.  The journal answers
 * only as far back as it listened without a break: the hub keeps the bus
 * publishing while SSE streams exist and for stream.resume_window_ms after
 * the last one closed; a restart, a longer pause or an overwritten ring
 * sends the API to its replay by time instead (ADR-0016).
 */
#ifndef DRV_LIVE_HUB_H
#define DRV_LIVE_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"
#include "live/bus.h"
#include "net/transport.h"
#include "platform/net.h"

#define DRV_HUB_MAX_TYPES 16
#define DRV_HUB_MAX_KEYS 32
#define DRV_HUB_MAX_DEVICES 100000u
#define DRV_HUB_MAX_SUBS_PER_CONN 64
#define DRV_HUB_SUB_ID_MAX 64

/* What a subscription receives; the API layer fills it (parsed, checked and
 * with group/tag filters resolved to devices), the hub copies it. */
typedef struct drv_hub_filter {
    char tenant[64];
    /* Event types: "telemetry", "device.connected", or a family "device.*". */
    uint32_t ntypes;
    char types[DRV_HUB_MAX_TYPES][72];
    /* Devices (ndevices 0 with all_devices: every device of the tenant). */
    bool all_devices;
    uint32_t ndevices;
    char **devices; /* borrowed by the hub calls, which copy */
    /* Telemetry keys (0: all). */
    uint32_t nkeys;
    char keys[DRV_HUB_MAX_KEYS][129];
    /* Where `devices` came from, when a group or a tag ("" : listed by the
     * caller): the hub asks again (drv_hub_resolve_fn) as the fleet changes. */
    char group[160];
    char tag[160];
} drv_hub_filter;

/* The devices of f->group (or f->tag) in f->tenant now, into f->devices /
 * f->ndevices (allocated as a filter callback's; the old ones are freed by
 * the hub).  Hub thread; a registry read.  DRV_NOTFOUND: the group is gone
 * (the subscription then matches no device). */
typedef drv_err (*drv_hub_resolve_fn)(void *ud, drv_hub_filter *f);

/* What the caller of a WebSocket stream may do, kept with the connection for
 * its later subscribe messages (the API layer interprets it). */
typedef struct drv_hub_who {
    char tenant[64]; /* "" for a platform token */
    char role[24];   /* "viewer", ... */
    /* The scopes streams look at (telemetry, devices, shadows, commands:
     * read), space-separated; "" all the role allows, "-" none of them. */
    char scopes[64];

    /* The token behind the stream, checked again at every heartbeat: its
     * expiry (0: none) and, for an API token, its hash (revocation). */
    int64_t expires_ms;
    bool has_hash;
    uint8_t token_sha256[32];
    char token_id[40]; /* the API token's id, or the OAuth client's */
} drv_hub_who;

/* Is the token behind a stream still good (not revoked, its tenant not
 * deleted)?  Hub thread, at each heartbeat of each stream; a registry read. */
typedef bool (*drv_hub_revalidate_fn)(void *ud, const drv_hub_who *who);

/* Answer to a WebSocket subscribe request, from the API layer's callback. */
typedef struct drv_hub_refusal {
    int status;       /* 400, 403, 404, 429 */
    char code[32];    /* "bad-request", "forbidden", "not-found", ... */
    char detail[160]; /* human text */
} drv_hub_refusal;

/*
 * Turn a WebSocket subscribe message (a JSON object, `json`/`n` bytes,
 * already known to be an object with "op":"subscribe") into a filter for
 * the connection of `who`.  Called on the hub's thread; it may read the
 * registry (group and tag membership), briefly.  DRV_OK with *f filled
 * (f->devices allocated with drv_malloc, each string too: the hub frees them
 * with drv_hub_filter_free), or an error with *why filled.
 */
typedef drv_err (*drv_hub_filter_fn)(void *ud, const drv_hub_who *who, const char *json, size_t n,
                                     drv_hub_filter *f, drv_hub_refusal *why);

/* Release what a filter callback allocated (devices). */
void drv_hub_filter_free(drv_hub_filter *f);

typedef struct drv_hub_config {
    drv_bus bus;                 /* attached at start */
    uint32_t max_connections;    /* default 10000 */
    uint32_t max_buffer_bytes;   /* per connection, before the slow-consumer drop; default 1 MiB */
    uint32_t heartbeat_ms;       /* default 20000 */
    drv_hub_filter_fn ws_filter; /* required for WebSocket subscriptions */
    void *ws_filter_ud;
    drv_hub_revalidate_fn revalidate; /* NULL: only expiry is checked */
    void *revalidate_ud;
    /* Group and tag subscriptions are resolved again after a device is
     * provisioned or decommissioned in their tenant, and every
     * membership_refresh_ms (default 30 s) for changes of tags and groups.
     * NULL: membership is what it was at subscribe time. */
    drv_hub_resolve_fn resolve;
    void *resolve_ud;
    uint32_t membership_refresh_ms;
    uint32_t journal_entries; /* telemetry events the journal remembers; default 1M (32 MB) */
    uint32_t
        resume_window_ms; /* keep journaling this long after the last SSE stream; default 10 min */
} drv_hub_config;

typedef struct drv_hub drv_hub;

drv_err drv_hub_start(const drv_hub_config *cfg, drv_hub **out);
/* Close every connection (1001 / end of stream), stop the thread, free. */
void drv_hub_stop(drv_hub *hub);

typedef enum drv_hub_transport {
    DRV_HUB_WEBSOCKET = 1,
    DRV_HUB_SSE = 2,
} drv_hub_transport;

/* One journaled telemetry event. */
typedef struct drv_hub_jentry {
    uint64_t seq;    /* arrival order (never 0) */
    uint64_t tenant; /* drv_hub_hash of the tenant */
    uint64_t device; /* drv_hub_hash of tenant, '/', device */
    int64_t ts;      /* the samples' time */
} drv_hub_jentry;

/* The journal's hash of a tenant (device NULL) or of a tenant's device. */
uint64_t drv_hub_hash(const char *tenant, const char *device);

/*
 * API thread: the telemetry events of `tenant` the journal holds after
 * sequence number `after`, oldest first, whose device hash is in devs
 * (sorted ascending; devs NULL: every device of the tenant), into *out
 * (drv_malloc'd, the caller frees), *n of them.  *upto is the newest
 * sequence number at the moment of reading: held events up to it are the
 * replay's (the seam).  DRV_NOTFOUND: the journal does not reach back to
 * `after` — replay by time; DRV_TOOBIG: more than max.
 */
drv_err drv_hub_journal_read(drv_hub *hub, const char *tenant, const uint64_t *devs, size_t ndevs,
                             uint64_t after, size_t max, drv_hub_jentry **out, size_t *n,
                             uint64_t *upto);

/* The newest sequence number given (any thread): a fresh stream's start. */
uint64_t drv_hub_seq(drv_hub *hub);

/* An SSE subscription registered before its replay (opaque). */
typedef struct drv_hub_pending drv_hub_pending;

/*
 * SSE, API thread: register f's subscription now, so that every event
 * published from here on is held for it, then read the replay.  Returns
 * once the hub has taken it (every event queued before is journaled);
 * *start_seq is the last sequence number given before it: every event after
 * is held for it.
 * NULL when out of memory, over max_connections, or the hub did not answer
 * within 5 s (answer 503).
 */
drv_hub_pending *drv_hub_prepare(drv_hub *hub, const drv_hub_filter *f, uint64_t *start_seq);

/* The hand-over of an upgraded or event-stream connection (any thread). */
typedef struct drv_hub_conn_init {
    drv_hub_transport transport;
    int fd;         /* connected, non-blocking; the hub owns it from here (also on failure) */
    drv_stream *st; /* its transport stack (TLS) or NULL; owned from here */
    drv_peer peer;
    const uint8_t *pre; /* bytes the client sent after its request (WebSocket frames) */
    size_t npre;
    drv_hub_who who;          /* the caller (WebSocket: also for its subscribe messages) */
    drv_hub_pending *pending; /* SSE: its subscription (consumed) */
    /* SSE: the stream's cursor before its replay (T: newest sample time, E:
     * newest device-event row, S: journal position; the replay's events move
     * it on), and the seam (ADR-0016): what was held while the replay was
     * read and that the replay already holds is dropped — a held device
     * event with id <= seam_e; held telemetry with seq <= seam_s after a
     * replay from the journal, or, after a replay by time (seam_s 0), of a
     * (device, time) the replay sends. */
    int64_t cursor_t, cursor_e;
    uint64_t cursor_s;
    int64_t seam_e;
    uint64_t seam_s;
    const uint8_t *initial; /* SSE: bytes to send first (retry line, notices), copied */
    size_t ninitial;
    /* SSE: the replay in delivery order, copied; each event is its 8-byte
     * sequence number (host order; 0 when not from the journal) then its
     * record (event.h).  Sent after `initial` whatever max_buffer_bytes says. */
    const uint8_t *replay;
    size_t nreplay;
} drv_hub_conn_init;

/* Whether the hub holds max_connections already (any thread; answer 503). */
bool drv_hub_full(drv_hub *hub);

/* Hand a connection to the hub.  DRV_LIMIT over max_connections (the
 * connection is closed), DRV_NOMEM. */
drv_err drv_hub_attach(drv_hub *hub, const drv_hub_conn_init *init);

/* SSE: the request failed after drv_hub_prepare; forget the subscription. */
void drv_hub_cancel(drv_hub *hub, drv_hub_pending *p);

/* Prometheus text for /metrics (any thread). */
drv_err drv_hub_metrics(drv_hub *hub, drv_buf *out);

#endif
