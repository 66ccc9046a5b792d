/*
 * broker.h — the MQTT broker's contract.
 *
 * A drv_broker owns listeners, connections, sessions, the subscription and
 * retained trees, $SYS statistics and the persistence log, served by one
 * event-loop thread per worker (ADR-0002).  It is created from a
 * drv_broker_config, opens its log and replays it (ADR-0005), listens, then
 * drv_broker_run serves until SIGINT/SIGTERM; drv_broker_free writes a
 * compact snapshot and releases everything.
 *
 * Authentication and authorisation go through a drv_auth_ops table
 * (auth.h) so the device registry can replace the static backend.
 */
#ifndef DRV_BROKER_H
#define DRV_BROKER_H

#include <stdbool.h>
#include <stdint.h>

#include "broker/auth.h"
#include "core/err.h"
#include "platform/loop.h"

typedef struct drv_broker drv_broker;
struct drv_stream; /* net/transport.h */

/*
 * A publish tap: how the platform sees device messages (telemetry ingest,
 * ADR-0012).  `publish` is called on the worker thread, under the broker
 * lock, for every PUBLISH the broker accepts (authorised, within limits)
 * from a client in a tenant namespace, before it is routed.  It returns an
 * MQTT reason code: 0 to go on; MQTT_RC_PAYLOAD_FORMAT_INVALID (0x99) when
 * the payload could not be read — the message is not routed, an MQTT 5.0
 * client gets 0x99 in its PUBACK; any other code refuses it the same way,
 * except that a 3.1.1 client's QoS 1/2 message is then not acknowledged at
 * all (its connection is closed and it sends the message again).  *taken
 * (false on entry) says the platform consumed the message (stored it): an
 * MQTT 5.0 PUBACK then says success rather than 0x10 no matching subscribers.
 * `commit` runs once per worker turn in which `publish` accepted something,
 * before that turn's acknowledgements are written: DRV_OK means what was
 * accepted is durable; an error withholds them (the connections close, the
 * clients retransmit).  publish NULL: no tap.
 */
typedef struct drv_publish_tap {
    uint8_t (*publish)(void *ud, const drv_client_identity *who, const uint8_t *topic,
                       size_t topic_len, const uint8_t *payload, size_t payload_len, uint8_t qos,
                       bool *taken);
    drv_err (*commit)(void *ud);
    /* Optional: a client in a tenant namespace connected (filter NULL) or
     * was granted a subscription (filter, filter_len: as the client sent it;
     * shared subscriptions are not told).  Worker thread, broker lock held:
     * queue it, never call back into the broker.  The platform services use
     * it to send what waited for the device (shadow deltas, commands). */
    void (*session)(void *ud, const drv_client_identity *who, const uint8_t *filter,
                    size_t filter_len);
    void *ud;
} drv_publish_tap;

/*
 * Every field is set by the caller: the defaults live in one place,
 * src/server/config_keys.def, and src/server/main.c copies the settings here.
 */
typedef struct drv_broker_config {
    const char *data_dir;           /* persistence directory; NULL: in-memory only */
    bool persist_sync;              /* fdatasync before acknowledging (ADR-0005) */
    uint64_t persist_compact_bytes; /* compact the log when it grows past this */
    uint32_t max_connections;       /* connections beyond this are refused */
    uint32_t max_packet_size;       /* largest packet accepted and advertised */
    uint16_t receive_maximum;       /* QoS 1/2 PUBLISH a client may have unacknowledged */
    uint16_t max_inflight;          /* QoS 1/2 sent to a client awaiting acknowledgement */
    uint32_t max_queued;            /* queued messages per session */
    uint16_t topic_alias_maximum;   /* inbound aliases a client may use */
    uint32_t connect_timeout_ms;    /* a socket must send CONNECT within this */
    uint32_t max_topic_length;      /* bytes */
    uint32_t max_topic_levels;      /* '/'-separated levels */
    uint32_t max_subscriptions;     /* per client */
    uint32_t max_session_expiry;    /* seconds; larger requests are lowered */
    uint16_t max_keepalive;         /* seconds; 0 = no limit. Larger values get Server Keep Alive */
    uint64_t memory_limit;          /* bytes in use above which publishes are refused; 0 = none */
    uint64_t max_client_out_buffer; /* bytes pending to one client before QoS 0 is dropped */
    uint32_t sys_interval_s;        /* $SYS publication period; 0 = off */
    bool retain_available;
    uint8_t maximum_qos;
    bool tls_enabled;               /* create a TLS context (some listener needs it) */
    const char *tls_cert_file;      /* server certificate; NULL/"": development CA in data_dir */
    const char *tls_key_file;       /* its key */
    const char *tls_client_ca_file; /* mTLS: CAs for client certificates; NULL/"": none */
    bool tls_require_client_cert;   /* refuse TLS clients without a certificate */
    const char *tls_crl_file;       /* CRLs for client certificates */
    bool tls_accept_unverified;     /* hand unverified client chains to auth (ADR-0011) */
    const char *ws_path;            /* WebSocket path on the HTTP listeners ("/mqtt") */
    uint32_t workers;               /* event-loop threads; 0: one per core */
    const drv_auth_ops *auth_ops;   /* NULL: allow everything (tests only) */
    void *auth_state;
    /* The HTTP server (ADR-0008): a connection on an HTTP listener whose first
     * request is not for ws_path is handed over with the bytes read so far.  The
     * callee owns fd and st (NULL: plain TCP) from then on.  Any worker thread.
     * NULL: such requests get a 404. */
    void (*http_adopt)(void *ud, int fd, struct drv_stream *st, const drv_peer *peer,
                       const uint8_t *pre, size_t npre);
    void *http_adopt_ud;
    drv_publish_tap tap; /* telemetry ingest (above); zeroed: none */
} drv_broker_config;

/* Create the broker and its workers, replaying persisted state from cfg->data_dir. */
drv_err drv_broker_new(const drv_broker_config *cfg, drv_broker **out);

/* Serve on every worker until SIGINT or SIGTERM (worker 0 runs on the calling thread). */
drv_err drv_broker_run(drv_broker *b);

/* What a listener speaks. */
typedef enum {
    DRV_LISTEN_MQTT,  /* MQTT over TCP */
    DRV_LISTEN_MQTTS, /* MQTT over TLS */
    DRV_LISTEN_WS,    /* HTTP port: MQTT over WebSocket at ws_path (REST API later) */
    DRV_LISTEN_WSS,   /* HTTPS port: the same over TLS */
} drv_listen_kind;

/*
 * Start accepting on "host:port"; *port gets the bound port.  TLS kinds need
 * cfg->tls to have been usable (drv_broker_new creates the TLS context).
 */
drv_err drv_broker_listen(drv_broker *b, const char *hostport, drv_listen_kind kind, int *port);

/* Stop accepting, disconnect everyone, write a snapshot, free. */
void drv_broker_free(drv_broker *b);

/*
 * Any thread: close the live connections in namespace `ns` ("" global) whose
 * user name is `username` or whose client id is `client_id` (either may be
 * NULL), with DISCONNECT 0x98 (administrative action) for MQTT 5.0 clients.
 * Used when a device is decommissioned or a credential revoked.
 */
void drv_broker_disconnect(drv_broker *b, const char *ns, const char *username,
                           const char *client_id);

/*
 * A message the platform publishes itself (shadow answers, commands to a
 * device).  Strings are NUL-terminated; topic and response_topic are in the
 * namespace's own form (what its clients see).
 */
typedef struct drv_inject {
    const char *ns;    /* "$T/<tenant>", or "" for the global namespace */
    const char *topic; /* a valid topic name (no wildcards), not starting with '$' */
    const uint8_t *payload;
    size_t payload_len;
    uint8_t qos;
    /* MQTT 5.0 properties, sent to 5.0 subscribers (NULL / 0: none) */
    const char *response_topic;
    const uint8_t *correlation;
    size_t correlation_len;
    const char *content_type;
    uint32_t expiry_s; /* Message Expiry Interval */
    /* Deliver only to sessions connected now: an offline session gets
     * nothing queued (the caller keeps its own queue). */
    bool online_only;
} drv_inject;

/*
 * Any thread but a worker inside a tap callback (it takes the broker lock):
 * route m as if a client had published it (never retained, never logged by
 * itself; a persistent subscriber's queue entry is, as usual).  Returns the
 * number of sessions it was given to; 0 when nobody (connected, with
 * online_only) subscribes, or m is invalid (logged).
 */
uint32_t drv_broker_inject(drv_broker *b, const drv_inject *m);

/* One namespace's quota use, for /metrics (ns is "$T/<tenant>"). */
typedef struct drv_broker_ns_stats {
    const char *ns;
    uint32_t connections, max_connections, max_msgs_per_sec;
    uint64_t throttled, refused;
} drv_broker_ns_stats;

/* Call fn for every namespace that has connected since start (locked: fn must
 * not call back into the broker). */
void drv_broker_ns_stats_each(drv_broker *b, void (*fn)(void *ud, const drv_broker_ns_stats *st),
                              void *ud);

/* Counters for $SYS and /metrics. */
typedef struct drv_broker_stats {
    uint64_t clients_connected;
    uint64_t clients_total; /* sessions known, online or not */
    uint64_t msgs_received, msgs_sent;
    uint64_t bytes_received, bytes_sent;
    uint64_t msgs_dropped; /* queue full, too large, expired, slow consumer */
    uint64_t subscriptions;
    uint64_t retained;
    uint64_t connections_refused;
} drv_broker_stats;

void drv_broker_get_stats(const drv_broker *b, drv_broker_stats *out);

#endif
