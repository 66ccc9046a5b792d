/*
 * hub_int.h — private to the live hub: its structures, shared by hub.c (the
 * thread, the inbox, the subscription index, delivery, metrics) and
 * hub_conn.c (stream connections: I/O, WebSocket messages, heartbeats).
 *
 * Everything below belongs to the hub's thread, except what is marked
 * "lock" (the inbox, guarded by hub->lock) and "stats" (tenant entries are
 * created under hub->stats_lock and never freed before drv_hub_stop; their
 * counters are atomics read by /metrics on the API thread).
 */
#ifndef DRV_LIVE_HUB_INT_H
#define DRV_LIVE_HUB_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "core/hmap.h"
#include "live/hub.h"
#include "live/ws_frame.h"
#include "net/ws.h"
#include "platform/loop.h"

/* Room kept in every output buffer above max_buffer_bytes, for what must
 * still go out after the slow-consumer decision: the notice and a close. */
#define HUB_OUT_HEADROOM (8u << 10)
/* And room for one event larger than the cap, which an empty buffer takes
 * (a record is at most 1 MiB; its JSON a few times that). */
#define HUB_EVENT_ROOM (8u << 20)

typedef struct hub_conn hub_conn;
typedef struct hub_tenant hub_tenant;

/* The hub's copy of a drv_hub_filter, compact: a subscription lives as long
 * as its stream, and an idle stream should cost little (the caller's
 * struct has room for the largest filter, ~6 KB). */
typedef struct hub_filter {
    char tenant[64];
    bool all_devices;
    uint32_t ndevices;
    char **devices; /* owned, each string too */
    uint16_t ntypes, nkeys;
    char *words;       /* owned: the types, the keys, the group and the tag, each NUL-terminated */
    const char *group; /* into words; "" : none */
    const char *tag;
} hub_filter;

/* One subscription: a filter, and where its events go. */
typedef struct hub_sub {
    hub_conn *c;                     /* NULL while pending (SSE between prepare and attach) */
    hub_tenant *t;                   /* its tenant's index entry */
    char id[DRV_HUB_SUB_ID_MAX + 1]; /* the client's name (WebSocket); "" for SSE */
    hub_filter f;                    /* the hub's compact copy */
    bool indexed;                    /* in t's lists */
    bool counted;                    /* in t->subscribers */
    bool sse;                        /* an SSE stream's (keeps the journal listening) */
    bool prepared;       /* lock: the hub has indexed it (drv_hub_prepare waits for this) */
    uint64_t start_seq;  /* lock: the last sequence number before it was indexed */
    uint64_t refresh_at; /* a group or tag subscription: resolve again at (loop ms) */
    /* Pending: records published since prepare (each after its 8-byte
     * sequence number), delivered at attach. */
    drv_buf held;
    bool held_overflow; /* more arrived than max_buffer_bytes: the stream starts with a reset */
} hub_sub;

/* The subscriptions that name one device. */
typedef struct hub_device {
    drv_hnode node;
    hub_sub **subs;
    uint32_t n, cap;
    char name[];
} hub_device;

/* One tenant: its subscriptions (whole-tenant ones, and by device) and its
 * counters. */
struct hub_tenant {
    drv_hnode node;
    hub_tenant *next_stat; /* stats: the list /metrics walks */
    hub_sub **all;         /* subscriptions to every device */
    uint32_t nall, capall;
    drv_hmap devices;  /* hub_device by name */
    hub_sub **dynamic; /* group and tag subscriptions, resolved again as the fleet changes */
    uint32_t ndynamic, capdynamic;
    atomic_uint_fast64_t subscribers, delivered, dropped;
    char name[64];
};

typedef enum {
    HC_OPEN,
    HC_CLOSING
} hub_conn_state;

struct hub_conn {
    drv_hub *hub;
    hub_conn *prev, *next; /* hub->conns */
    hub_conn *dirty_next;  /* hub->dirty: output to write at turn end */
    drv_io io;             /* the socket */
    drv_stream *st;        /* TLS stack, or NULL */
    drv_peer peer;
    drv_hub_transport transport;
    uint8_t state; /* hub_conn_state */
    bool dirty, dead;
    bool replaying;     /* SSE: the replay is being queued (no cap) */
    bool shut;          /* closing: our side is shut down, waiting for the client's */
    size_t replay_left; /* SSE: replay bytes still unwritten (allowed above the cap) */
    uint64_t written, written_at_beat; /* bytes written in all, and at the last heartbeat */
    drv_timer timer;                   /* heartbeat while open; the close deadline while closing */
    uint64_t last_rx_ms;               /* WebSocket: the last frame from the client (loop time) */
    drv_buf in;                        /* WebSocket: client bytes not yet taken */
    drv_buf out;                       /* bytes to write (capped: slow consumer) */
    drv_wsf_reader rd;                 /* WebSocket frames */
    drv_hub_who who;                   /* WebSocket: the caller, for subscribe messages */
    uint32_t sub_tokens;               /* WebSocket: subscribe messages allowed now (a bucket) */
    uint64_t sub_bucket_at;            /* loop ms of its last refill */
    hub_sub *subs[DRV_HUB_MAX_SUBS_PER_CONN];
    uint32_t nsubs;
    /* SSE: the cursor (T, E) of the last event sent; during the seam, the
     * (device, time) keys of the telemetry the replay sent, sorted. */
    int64_t cur_t, cur_e;
    uint64_t cur_s; /* journal position of the last telemetry event sent */
    uint64_t *seam_keys;
    size_t nseam_keys;
};

/* The inbox: what other threads hand the hub, in order. */
typedef enum {
    HMSG_BATCH,
    HMSG_PREPARE,
    HMSG_ATTACH,
    HMSG_CANCEL
} hub_msg_kind;

typedef struct hub_msg {
    struct hub_msg *next;
    hub_msg_kind kind;
    hub_sub *sub;           /* PREPARE, CANCEL, ATTACH (SSE) */
    drv_hub_conn_init init; /* ATTACH: pre/initial/replay point into data */
    size_t len, cap;        /* BATCH: bytes used / allocated in data */
    uint8_t data[];
} hub_msg;

struct drv_hub {
    drv_hub_config cfg;
    drv_loop *loop;
    pthread_t thread;
    bool thread_started;
    int wake_fd;
    drv_io wake_io;
    pthread_mutex_t lock;    /* lock: inbox, stopping, sub->prepared */
    pthread_cond_t prepared; /* lock: a PREPARE was taken */
    hub_msg *inbox, *inbox_tail;
    bool stopping;
    hub_conn *conns;
    hub_conn *dirty;
    hub_conn *dead; /* closed, freed at turn end */
    drv_hmap tenants;
    pthread_mutex_t stats_lock; /* stats: tenant creation, stat_list */
    hub_tenant *stat_list;
    /* The journal (hub_journal.c): a ring of telemetry entries, written by
     * the hub's thread and read by the API's, under jlock. */
    pthread_mutex_t jlock;
    drv_hub_jentry *ring;
    size_t jcap, jhead, jlen; /* allocated, index of the oldest, used */
    uint64_t jfloor;          /* cursors from here on are answerable */
    _Atomic uint64_t next_seq;
    atomic_bool lost;       /* a batch was dropped (no memory): move jfloor */
    bool journal_listening; /* the hub's own bus listener (hub thread) */
    uint32_t nsse;          /* SSE subscriptions (hub thread) */
    uint64_t window_until;  /* loop ms: keep listening until then */
    drv_timer tick;

    drv_buf body;  /* scratch: an event's JSON, shared by subscriptions without keys */
    drv_buf kbody; /* scratch: an event's JSON for one subscription with keys */
    atomic_uint_fast64_t connections[3]; /* by transport (index 1 WS, 2 SSE) */
    atomic_uint_fast64_t connections_total, slow_consumers, refused;
};

/* hub.c */
/* A subscription with a copy of f; it counts as a bus listener from here
 * (any thread).  NULL when out of memory. */
hub_sub *hub_sub_new(drv_hub *hub, const drv_hub_filter *f);
/* Hub thread: find its tenant and put it in the index; false when out of
 * memory (then free it). */
bool hub_sub_index(drv_hub *hub, hub_sub *s);
/* Unindex, release the listener, free. */
void hub_sub_free(drv_hub *hub, hub_sub *s);
/* Deliver what was held for s while its replay was read, skipping what the
 * replay sent (see drv_hub_conn_init). */
void hub_deliver_held(drv_hub *hub, hub_sub *s, int64_t seam_e, uint64_t seam_s);
/* Send an SSE replay (records) to s's connection, past the buffer's cap. */
void hub_deliver_replay(drv_hub *hub, hub_sub *s, const uint8_t *p, size_t n);
/* Queue c's output for the turn end. */
void hub_mark_dirty(hub_conn *c);

/* Hub thread, once a second: resolve due group and tag subscriptions again. */
void hub_refresh_memberships(drv_hub *hub);

/* hub_journal.c */
drv_err hub_journal_init(drv_hub *hub);
void hub_journal_free(drv_hub *hub);
/* drv_hub_hash of a record's tenant and device (and of its tenant alone). */
uint64_t hub_hash_device(drv_span tenant, drv_span device, uint64_t *tenant_hash);
/* Under jlock: remember one telemetry event. */
void hub_journal_add(drv_hub *hub, uint64_t seq, const drv_event_view *v);
/* Hub thread: an SSE subscription began / ended. */
void hub_journal_sse_begin(drv_hub *hub);
void hub_journal_sse_end(drv_hub *hub);

/* hub_conn.c */
drv_err hub_conn_open(drv_hub *hub, hub_msg *m);
/* Append bytes to c->out; false (and the slow-consumer drop) when they do
 * not fit under max_buffer_bytes. */
bool hub_conn_send(hub_conn *c, const void *p, size_t n, size_t then_n);
/* Close now (the struct is freed at turn end). */
void hub_conn_close(hub_conn *c);
/* Server-initiated end: a last message (WebSocket: frame + close code; SSE:
 * event: error), then close once written or after a grace period. */
void hub_conn_finish(hub_conn *c, uint16_t ws_code, const char *code, const char *detail);
void hub_conn_flush(hub_conn *c);
void hub_conns_free_dead(drv_hub *hub);

#endif
