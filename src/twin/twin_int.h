/*
 * twin_int.h — the twin service's private structures, shared by twin.c
 * (thread, inbox, publishing), twin_shadow.c and twin_cmd.c only.
 */
#ifndef DRV_TWIN_TWIN_INT_H
#define DRV_TWIN_TWIN_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "core/buf.h"
#include "twin/shadow_doc.h"
#include "twin/twin.h"

/* Named shadows a device may have besides its classic one. */
#define TWIN_MAX_NAMED 32
/* Device messages the inbox keeps, in payload bytes of all devices;
 * beyond it devices are refused (PUBACK 0x97) like beyond max_pending. */
#define TWIN_PENDING_BYTES (64u << 20)
/* A device message longer than this is not kept: it is answered 413 (a
 * shadow update cannot be much larger than the state it patches). */
#define TWIN_MESSAGE_MIN_MAX (64u << 10)

/* Failed batches remembered for drv_twin_commit_wait. */
#define TWIN_FAIL_RING 16

/* Longest resend backoff. */
#define TWIN_BACKOFF_MAX_MS 60000
/* A command sent this recently is not sent again on a connect or
 * subscribe (a persistent session that also subscribes again would
 * otherwise get it twice). */
#define TWIN_RESEND_GUARD_MS 1000

/* What the inbox holds. */
typedef enum {
    IN_MESSAGE, /* a device published on a shadow or command topic */
    IN_SESSION, /* a device connected (no filter) or subscribed */
    IN_KICK,    /* the API stored commands for the device: send them */
    IN_CLAIM,   /* a claim session asks to register a device (device: its client id) */
} in_kind;

/* One inbox item, one allocation: the strings follow the struct. */
typedef struct in_item {
    struct in_item *next;
    in_kind kind;
    uint64_t seq; /* IN_MESSAGE: its number, for drv_twin_commit_wait */
    char tenant[64];
    char device[129];
    size_t rest_len; /* IN_MESSAGE: topic after "devices/<device>/"; IN_SESSION: filter */
    size_t payload_len;
    bool oversize;     /* IN_MESSAGE: the payload was over TWIN_MESSAGE_MAX and is not kept */
    char claim_ca[40]; /* IN_CLAIM: the claim CA and the claim certificate's fingerprint */
    char claim_fp[65];
    uint8_t *rest;
    uint8_t *payload;
    uint8_t data[];
} in_item;

/* A message to publish once the batch is committed. */
typedef struct out_msg {
    struct out_msg *next;
    char tenant[64];
    char *topic; /* in the device's form */
    char *text;  /* JSON payload (jansson's allocation: free()) */
} out_msg;

/* A command that reached a final state in the batch (API waiters). */
typedef struct settled {
    struct settled *next;
    char tenant[64];
    char id[40];
} settled;

/* What one piece of work produced: held until its transaction commits. */
typedef struct twin_batch {
    out_msg *out, *out_tail;
    settled *done;
    bool staged; /* live events were staged on this thread */
} twin_batch;

/* A batch that could not be stored: its message numbers and the error. */
typedef struct twin_fail {
    uint64_t lo, hi;
    drv_err err;
} twin_fail;

struct drv_twin {
    drv_twin_config cfg;
    drv_twin_store *st; /* the service thread's handle */
    pthread_t thread;
    bool thread_started;

    pthread_mutex_t lock; /* inbox, seqs, stopping */
    pthread_cond_t wake;  /* the service: work arrived */
    pthread_cond_t done;  /* workers: a batch was committed */
    in_item *head, *tail;
    uint32_t pending;
    size_t pending_bytes;
    bool stopping;
    uint64_t next_seq;      /* last IN_MESSAGE number given */
    uint64_t committed_seq; /* every message up to it is committed (or failed) */
    /* The last TWIN_FAIL_RING failed batches (their message numbers and
     * error), and how many failed in all: a waiter that finds more failures
     * since its messages were queued than the ring holds assumes the worst. */
    twin_fail fails[TWIN_FAIL_RING];
    uint64_t nfails;
    /* Held while publishing, so drv_twin_set_inject(NULL) returns only once
     * no publish into the broker is under way (the broker can then go).
     * Never taken with `lock` held; broker workers never take it. */
    pthread_mutex_t inject_lock;
    uint32_t (*inject)(void *ud, const drv_inject *m);
    void *inject_ud;

    int64_t last_prune_ms;
    struct {
        _Atomic uint64_t shadow_updates, shadow_rejected, commands_created, commands_sent,
            commands_settled, device_messages, refused_busy, batches;
    } stats;
};

/* -- twin.c: publishing and events -------------------------------------------- */

/* Publish to a connected device of tenant now (topic in the device's form);
 * the number of sessions that got it (0: not connected or not subscribed). */
uint32_t twin_publish(drv_twin *tw, const char *tenant, const char *topic, const void *payload,
                      size_t len, const char *response_topic, const char *correlation,
                      uint32_t expiry_s);
/* Queue a publish for after the batch's commit (a copy). */
void twin_batch_publish(twin_batch *b, const char *tenant, const char *topic, json_t *payload);
/* Stage a live event (type "shadow.updated", detail borrowed) for the
 * batch's commit. */
void twin_batch_event(drv_twin *tw, twin_batch *b, const char *type, const char *tenant,
                      const char *device, int64_t ts_ms, json_t *detail);
/* Remember a command that finished (the API's waiters are told after the commit). */
void twin_batch_settled(twin_batch *b, const char *tenant, const char *id);
/* After a commit: publish, flush events, tell the waiters; after a failure:
 * drop it all.  Leaves b empty. */
void twin_batch_finish(drv_twin *tw, twin_batch *b, bool committed);

/* Ask the service to send the device's waiting commands (any thread). */
void twin_kick(drv_twin *tw, const char *tenant, const char *device);

/* Milliseconds since the epoch. */
int64_t twin_now_ms(void);

/* -- twin_shadow.c ------------------------------------------------------------- */

/* A device's message under "shadow/" (rest is what follows "devices/<d>/"). */
void twin_shadow_message(drv_twin *tw, twin_batch *b, const in_item *it);
/* The device connected (filter NULL) or subscribed: publish the deltas it
 * should have now. */
void twin_shadow_session(drv_twin *tw, const char *tenant, const char *device,
                         const uint8_t *filter, size_t filter_len);
/* Is rest (after "devices/<d>/") a topic a device publishes to the shadow service? */
bool twin_shadow_topic(const uint8_t *rest, size_t len);

/* -- twin_cmd.c ---------------------------------------------------------------- */

/* A device's message under "commands/". */
void twin_cmd_message(drv_twin *tw, twin_batch *b, const in_item *it);
/* Is rest a topic a device publishes to the command service? */
bool twin_cmd_topic(const uint8_t *rest, size_t len);
/* Send what waits for the device, within its in-flight window.  `reconnect`:
 * also resend what was sent and not acknowledged (a connect or subscribe). */
void twin_cmd_send_pending(drv_twin *tw, twin_batch *b, const char *tenant, const char *device,
                           const uint8_t *filter, size_t filter_len, bool reconnect);
/* Retries, timeouts and expiry of commands due by now_ms, at most a batch
 * of them; how many it took. */
uint32_t twin_cmd_run_due(drv_twin *tw, twin_batch *b, int64_t now_ms);

#endif
