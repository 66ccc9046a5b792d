/*
 * broker_int.h — the broker's private structures, shared by its files only.
 *
 * Ownership at a glance:
 *   drv_broker ─┬─ conns (list)       conn ──(attached)── session
 *               ├─ sessions (hmap by (namespace, client id)) ── qitems ──ref──▶ msg
 *               ├─ sub trie (tnode) ── sub entries ──▶ session
 *               ├─ retained trie (tnode) ──ref──▶ msg
 *               └─ persist (the log; ADR-0005)
 * A msg is immutable and refcounted: one copy fanned out to every queue.
 * Topics, filters, the tries and the log hold internal topics: a namespaced
 * client's "<ns>/<topic>" (ns.c, ADR-0009); only the edges (handlers taking
 * client input, conn_send_publish, authorisation) see the client's form.
 * A session outlives its connections; a conn never outlives its session
 * while attached.  Connections are freed only at the end of a loop turn
 * (never inside their own callback).
 *
 * Threads (ADR-0002): one worker per core, each with its own loop, owns the
 * sockets of its connections (reads, writes, epoll, connection timers).  All
 * shared state — sessions, tries, messages, the log batch, every conn's
 * `out` buffer and state, the dirty lists — is guarded by broker->lock,
 * taken once per read batch and a few times per turn, never per message.
 * Only the owner touches a conn's fd, transport stack, `in` and `sending`.
 */
#ifndef DRV_BROKER_INT_H
#define DRV_BROKER_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "broker/broker.h"
#include "core/buf.h"
#include "core/hmap.h"
#include "mqtt/mqtt.h"
#include "net/transport.h"
#include "net/ws.h"
#include "platform/loop.h"
#include "platform/net.h"
#include "platform/net.h"
#include "platform/wheel.h"

typedef struct session session;
typedef struct conn conn;
typedef struct tnode tnode;
typedef struct worker worker;

/* -- messages (msg.c) ---------------------------------------------------------- */

/*
 * An application message as stored and forwarded.  `props` holds the
 * forwardable 5.0 properties pre-encoded (payload format, content type,
 * response topic, correlation data, user properties); message expiry is kept
 * apart as an absolute time because it is rewritten on every send.
 */
typedef struct msg {
    uint32_t refs;
    uint8_t qos;
    bool retain;
    bool logged;           /* its R_MSG record is in the log (persist.c) */
    uint32_t snapshot_gen; /* compaction generation that last wrote it */
    uint64_t id;           /* persistence id; 0 until logged */
    uint64_t expiry_at;    /* wall-clock seconds; 0 = never expires */
    uint16_t topic_len;
    uint32_t props_len;
    uint32_t payload_len;
    uint8_t *topic;
    uint8_t *props;
    uint8_t *payload;
    uint8_t data[]; /* topic, props, payload */
} msg;

/* The topic is "<ns>/<topic>" when ns_len > 0 (the caller keeps it within 65,535 bytes). */
msg *msg_new(const char *ns, uint32_t ns_len, const uint8_t *topic, uint16_t topic_len,
             const uint8_t *props, uint32_t props_len, const uint8_t *payload, uint32_t payload_len,
             uint8_t qos, bool retain, uint64_t expiry_at);
/* Build the forwardable property block of an incoming PUBLISH or will (topic as above). */
msg *msg_from_publish(const char *ns, uint32_t ns_len, const mqtt_bytes *topic,
                      const mqtt_props *props, uint8_t version, const mqtt_bytes *payload,
                      uint8_t qos, bool retain, uint64_t now_s);
static inline msg *msg_ref(msg *m)
{
    m->refs++;
    return m;
}
void msg_unref(msg *m);
/* Expired once a whole second past expiry_at: times are whole seconds, and a
 * message published at x.999 with an interval of 1 must not be gone at
 * (x+1).000 — it lives at least its interval, at most a second more. */
static inline bool msg_expired(const msg *m, uint64_t now_s)
{
    return m->expiry_at != 0 && now_s > m->expiry_at;
}

/* -- topic trie (trie.c) ------------------------------------------------------- */

/* One subscription of one session to one filter. */
typedef struct sub {
    session *s;
    uint8_t qos;
    bool no_local;
    bool retain_as_published;
    uint8_t retain_handling;
    uint32_t sub_id; /* 0 = none */
} sub;

/* Members of one shared-subscription group on one node. */
typedef struct share_group {
    struct share_group *next;
    char *name;
    sub *members;
    uint32_t count, cap;
    uint32_t next_member; /* round-robin cursor */
} share_group;

struct tnode {
    drv_hnode h; /* edge in the trie's hmap: key = this level, seed = parent */
    tnode *parent;
    tnode *plus; /* '+' child */
    tnode *hash; /* '#' child */
    tnode *kids; /* exact-level children, for wildcard walks of retained */
    tnode *sib_next, *sib_prev;
    uint32_t children; /* child count, for pruning */
    uint32_t level_len;
    char *level;
    sub *subs; /* non-shared subscriptions on this exact filter */
    uint32_t nsubs, subs_cap;
    share_group *groups;
    msg *retained; /* retained trie only */
};

typedef struct trie {
    tnode root;
    drv_hmap edges;
} trie;

void trie_init(trie *t);
void trie_free(trie *t);
/* Find or create the node for a filter or topic; NULL on allocation failure. */
tnode *trie_get(trie *t, const uint8_t *path, size_t len, bool create);
/* Remove empty nodes from n up to the root. */
void trie_prune(trie *t, tnode *n);

/* Called for each subscription matching a topic. */
typedef void (*trie_match_cb)(void *ud, sub *s, share_group *g);
/* Visit every subscription whose filter matches topic (a shared group once). */
void trie_match(trie *t, const uint8_t *topic, size_t len, trie_match_cb cb, void *ud);
/* Visit every retained message whose topic matches filter. */
void trie_retained(trie *t, const uint8_t *filter, size_t len, void (*cb)(void *ud, msg *m),
                   void *ud);

/* -- sessions and delivery (session.c) ----------------------------------------- */

enum qstate {
    Q_QUEUED,    /* waiting for an inflight slot or for the client to connect */
    Q_PUBLISHED, /* PUBLISH sent, awaiting PUBACK / PUBREC */
    Q_RELEASED,  /* QoS 2: PUBREC received, PUBREL sent, awaiting PUBCOMP */
};

/* Subscription identifiers carried by one delivery; more overlapping ones are dropped. */
#define MAX_SUB_IDS 32

/* One message on its way to one session. */
typedef struct qitem {
    struct qitem *next;
    msg *m;
    uint16_t pid;
    uint8_t qos;
    uint8_t state; /* enum qstate */
    bool retain;   /* RETAIN flag to send */
    bool shared;   /* came through a shared subscription: re-routed if the session ends */
    uint8_t nsub_ids;
    uint32_t sub_ids[]; /* allocated with the item */
} qitem;

/* A zeroed item with room for n subscription identifiers (from b's pool when
 * n <= 1); qitem_free drops its message reference and recycles it (locked). */
qitem *qitem_new(drv_broker *b, uint8_t n);
void qitem_free(drv_broker *b, qitem *qi);
/* Release the pool (broker shutdown). */
void qitem_pool_free(drv_broker *b);

typedef struct qlist {
    qitem *head, *tail;
    uint32_t count;
} qlist;

/* One subscription a session holds, for UNSUBSCRIBE and cleanup. */
typedef struct session_sub {
    struct session_sub *next;
    tnode *node;
    char *share;  /* group name, NULL if not shared */
    char *filter; /* internal form (with $share/<group>/ in front), NUL-terminated */
    sub opt;      /* the options, as also held in the trie (for snapshots) */
} session_sub;

/* Fields are ordered by size so the struct has no padding holes: one is kept
 * for every client, connected or not. */
struct session {
    /* In broker->sessions.  Key: the client id, then for a namespaced session a NUL
     * and the namespace (client ids hold no NUL), all in client_id[]: the namespace
     * is stored once per session, and sessions of two tenants never collide. */
    drv_hnode h;
    drv_broker *b;
    char *username;          /* of the latest connection, for ACL checks while offline */
    conn *c;                 /* attached connection, NULL when offline */
    drv_timer *expiry_timer; /* only while offline with a finite expiry (memory per client) */
    session_sub *subs;
    qlist inflight;    /* sent, not yet acknowledged, in send order */
    qlist queue;       /* waiting to be sent */
    uint16_t *qos2_in; /* packet ids of QoS 2 PUBLISH received, awaiting PUBREL */
    /* Will, kept by the session so Will Delay can outlive the connection; NULL when
     * none (allocated only for clients that set one). */
    struct session_will *will;
    void *auth_ctx; /* the auth backend's context for it (auth.h); NULL: none */
    /* Per-publish matching scratch: which match slot this session holds. */
    uint64_t match_stamp;
    uint32_t match_slot;
    uint32_t expiry_interval; /* seconds after disconnect; UINT32_MAX never */
    uint32_t nsubs;
    uint16_t next_pid;
    uint16_t nqos2_in, qos2_in_cap;
    uint8_t version;   /* protocol of the latest connection */
    bool persistent;   /* session state is logged (expiry interval > 0) */
    bool logged;       /* its R_SESSION record is in the log */
    uint8_t ns_len;    /* bytes of the namespace at the end of the key; 0 = global */
    bool unrestricted; /* the backend said no ACL applies: authorize is skipped (auth.h) */
    uint8_t max_qos;   /* highest QoS it may publish and be granted (broker's or its profile's) */
    char client_id[];  /* NUL-terminated, allocated with the session (then the namespace) */
};

/* The session's namespace, NUL-terminated; "" for the global namespace. */
static inline const char *session_ns(const session *s)
{
    return s->ns_len ? s->client_id + s->h.klen - s->ns_len : "";
}
/* Bytes of "<ns>/" in front of the session's internal topics; 0 when global. */
static inline uint32_t session_prefix_len(const session *s)
{
    return s->ns_len ? s->ns_len + 1u : 0;
}

/* A session's will message and its delay timer. */
typedef struct session_will {
    msg *m;          /* the will message */
    uint32_t delay;  /* Will Delay Interval, seconds */
    drv_timer timer; /* armed while the delay runs */
} session_will;

/* Replace the session's will (m may be NULL: none); takes ownership of m. */
void session_set_will(session *s, msg *m, uint32_t delay);

/*
 * Sessions by key: the client id, or for a namespaced client the client id, a
 * NUL and the namespace (session_key builds it).  session_create returns NULL
 * on allocation failure or when the key's namespace is not valid.
 */
session *session_find(drv_broker *b, const uint8_t *key, size_t len);
session *session_create(drv_broker *b, const uint8_t *key, size_t len);
/* Write the key of (id, ns) to out (room for id_len + 1 + ns_len bytes); its length. */
size_t session_key(uint8_t *out, const uint8_t *id, size_t id_len, const char *ns, size_t ns_len);
/* End a session: drop subscriptions, queues, log its removal, free it. */
void session_destroy(session *s);
/* Remove one of the session's subscriptions from the trie and free it. */
void session_sub_free(drv_broker *b, session *s, session_sub *ss);
/* Start counting down an offline session's expiry interval. */
void session_start_expiry(session *s);
/* The session is in use again: stop (and release) its expiry countdown. */
void session_stop_expiry(session *s);
/* Called when the attached connection goes away. */
void session_detach(session *s, bool send_will);
/* Start delivering queued messages after (re)connect: resend inflight with DUP. */
void session_resume(session *s);
/*
 * Deliver m to s at qos with these flags; takes no ownership of m.  `shared`:
 * it came through a shared subscription (re-routed if the session ends).
 */
void session_deliver(session *s, msg *m, uint8_t qos, bool retain, const uint32_t *sub_ids,
                     uint8_t nsub_ids, bool shared);
/* Fill free inflight slots from the queue. */
void session_pump(session *s);
/* Outcome of an acknowledgement from the client. */
typedef enum {
    ACK_DONE,    /* matched an inflight message in the right state */
    ACK_UNKNOWN, /* no such packet id: a late duplicate, tolerated */
    ACK_WRONG,   /* the id exists but this acknowledgement does not fit its flow */
} ack_result;
ack_result session_puback(session *s, uint16_t pid);
ack_result session_pubrec(session *s, uint16_t pid, uint8_t reason);
ack_result session_pubcomp(session *s, uint16_t pid);
/* Inbound QoS 2 packet-id bookkeeping. */
bool session_qos2_in_has(const session *s, uint16_t pid);
drv_err session_qos2_in_add(session *s, uint16_t pid);
bool session_qos2_in_del(session *s, uint16_t pid);
/* Publish the will now and forget it. */
void session_fire_will(session *s);

/* Subscribe s to an internal filter (maybe $share/...); SUBACK reason. Used by SUBSCRIBE
 * and replay. */
uint8_t broker_subscribe(drv_broker *b, session *s, const uint8_t *filter, size_t len,
                         const sub *opt, bool *is_new);

/* Remove s's subscription to exactly the internal `filter`; false if it had none. */
bool broker_unsubscribe(drv_broker *b, session *s, const uint8_t *filter, size_t len);

/* -- namespaces (ns.c, ADR-0009) ----------------------------------------------------- */

/* The reserved first level of every namespace: "$T/<tenant>". */
#define NS_ROOT "$T/"
#define NS_ROOT_LEN 3

/*
 * May a global client publish to (or set a will on) this topic?  Under "$T/"
 * only "$T/<tenant>/<rest>" with a non-empty rest not starting with '$': what
 * the tenant's clients receive must be a topic name they could have used.
 */
bool ns_global_topic_ok(const uint8_t *t, size_t len);
/*
 * The internal form of a client's filter f[0..len): "<ns>/<f>", or
 * "$share/<group>/<ns>/<filter>" for a shared one; a NUL-terminated copy of f
 * for a global session.  Written to buf when it fits in cap bytes, else to an
 * allocation the caller frees (result != buf).  *out_len gets its length;
 * NULL when that is over 65,535 bytes or on allocation failure.
 */
char *ns_internal_filter(const session *s, const uint8_t *f, size_t len, char *buf, size_t cap,
                         size_t *out_len);

/* -- routing (route.c) ---------------------------------------------------------- */

/*
 * Route a message to every matching subscription (and store it as retained
 * when m->retain).  `from` is the publishing session for No Local, or NULL.
 * Returns the number of subscriptions it was delivered to.
 */
uint32_t route_publish(drv_broker *b, msg *m, session *from);
/* The same, and with online_only only to sessions connected now; then it
 * returns how many were given the message. */
uint32_t route_deliver(drv_broker *b, msg *m, session *from, bool online_only);
/*
 * Give a message that was on its way to `leaving` through the shared
 * subscription (filter, group) to another online member; false if none.
 */
bool route_shared_again(drv_broker *b, session *leaving, const char *filter, const char *group,
                        const qitem *qi);
/* Store or clear a retained message for m's topic. */
void retain_store(drv_broker *b, msg *m);

/* -- connections (conn.c, dispatch.c, handle_*.c) -------------------------------- */

enum conn_state {
    C_NEW,       /* accepted, waiting for CONNECT */
    C_CONNECTED, /* CONNACK sent */
    C_CLOSING,   /* no more input; the owner flushes what is pending, then closes */
    C_DEAD,      /* closed; freed by the owner at turn end */
};

/* Fields are ordered by size so the struct has no padding holes (one per client). */
struct conn {
    drv_io io;
    worker *w;         /* owner (w->b is the broker): the only thread touching fd, st, in,
                        * sending, timer */
    drv_stream *st;    /* transport stack (TLS, WebSocket); NULL: plain TCP on io.fd */
    conn *next, *prev; /* the owner's list of connections */
    conn *dirty_next;  /* owner's dirty list: output to flush or a close to finish */
    conn *paused_next; /* broker->paused list (locked) */
    session *s;
    struct conn_aliases *aliases; /* topic aliases, allocated on first use */
    drv_buf *in;     /* partial packet carried over between reads, NULL when none (owner only) */
    drv_buf out;     /* bytes appended this turn, by any worker (under lock) */
    drv_buf sending; /* bytes being written by the owner (owner only) */
    drv_timer timer; /* CONNECT deadline, then keepalive */
    uint64_t last_rx_ms;
    uint64_t paused_at_ms; /* when back-pressure paused it (locked) */
    /* Limits the client announced (5.0). */
    uint32_t client_max_packet; /* 0 = no limit */
    uint16_t client_receive_max;
    uint16_t client_alias_max;
    uint16_t keepalive;   /* seconds, as negotiated */
    uint8_t state;        /* enum conn_state */
    uint8_t version;      /* protocol level, 0 before CONNECT */
    uint8_t close_reason; /* why it is closing (for the WebSocket close code) */
    bool dirty;
    bool will_on_close;           /* publish the will if the connection drops */
    bool closing_sent_disconnect; /* the 5.0 DISCONNECT is already in `out` */
    bool counted_connected;       /* counted in stats.clients_connected */
    bool close_timer_set;         /* the 5 s limit for flushing a closing connection is armed */
    bool write_failed;            /* the last turn-end write failed (owner only) */
    bool paused;                  /* back-pressure: input not read until resumed (locked) */
    bool request_problem_info;
    bool auth_pending; /* its CONNECT is with the authentication thread (locked) */
    drv_peer peer;     /* binary; conn_peer() formats it for logs */
};

/* The connection's broker. */
#define conn_broker(c) ((c)->w->b)
/* "ip:port" of the connection's peer, in a buffer that lives to the end of the
 * enclosing block (for log calls). */
#define conn_peer(c) drv_peer_format(&(c)->peer, (char[DRV_PEER_STRLEN]){0})

/* A connection's topic aliases (5.0), in both directions. */
typedef struct conn_aliases {
    uint64_t *out;     /* outbound: slot -> topic hash, NULL until first used */
    uint16_t out_next; /* next outbound slot, assigned round robin */
    char *in[];        /* inbound: alias - 1 -> topic (NUL-terminated copy) */
} conn_aliases;

/* The connection's alias table, allocated on first use; NULL if out of memory. */
conn_aliases *conn_get_aliases(conn *c);

/* Owner thread: allocate a connection for an accepted socket and start watching it. */
void conn_accept(worker *w, int fd, const drv_peer *peer, drv_listen_kind kind);
/* CONNECT accepted: switch from the CONNECT deadline to keepalive (owner, locked). */
void conn_connected(conn *c);
/* Queue bytes already appended to c->out for the owner's turn-end flush (locked). */
void conn_mark_dirty(conn *c);
/*
 * Close the connection (locked, any thread): for 5.0 a DISCONNECT with
 * `reason` is sent first when reason >= 0x80 and the CONNECT was accepted.
 * Pending output is flushed by the owner, which then closes the socket and
 * detaches the session (publishing the will when send_will).  Idempotent.
 */
void conn_close(conn *c, uint8_t reason, bool send_will);
/* Owner turn end: the flush and close protocol (see broker.c). */
void conn_take_output(conn *c);          /* locked: move out → sending */
bool conn_write_sending(conn *c);        /* unlocked: false on a write error */
void conn_after_write(conn *c, bool ok); /* locked: re-arm, or finish a close */
void conn_free(conn *c);
/* Encode a PUBLISH of m to c, applying limits and aliases; false if dropped.  The topic
 * goes out without the session's namespace prefix (no copy: the encoder is given
 * m->topic + prefix length). */
bool conn_send_publish(conn *c, const msg *m, uint8_t qos, bool retain, uint16_t pid, bool dup,
                       const uint32_t *sub_ids, uint8_t nsub_ids);
static inline bool conn_send_qitem(conn *c, const qitem *qi, bool dup)
{
    return conn_send_publish(c, qi->m, qi->qos, qi->retain, qi->pid, dup, qi->sub_ids,
                             qi->nsub_ids);
}

/*
 * Authentication off the broker lock (auth.c).  A CONNECT whose check is
 * slow (password hashing, registry lookups: drv_auth_ops.slow) is copied into
 * a job for the authentication thread; the connection stops reading, with
 * the CONNECT left unconsumed in its input.  The thread runs `authenticate`
 * without the lock and hands the outcome to the owner worker, which parses
 * the CONNECT again with the outcome (handle_connect) at its turn end.
 */
typedef struct auth_job {
    struct auth_job *next;
    conn *c;     /* pinned: not freed while c->auth_pending */
    drv_err err; /* the backend's answer */
    drv_auth_result result;
    char *client_id; /* as authenticated (an assigned id stays the same) */
    char *username;  /* NULL when none */
    uint8_t *password;
    size_t password_len;
    bool has_password;
    bool has_cert;
    drv_peer peer;
    drv_peer_cert cert;
} auth_job;

/* Internal handler result: the CONNECT waits for its authentication. */
#define CONNECT_PENDING 0xFFu

/* Start/stop the authentication thread (drv_broker_new / drv_broker_free). */
drv_err auth_thread_start(drv_broker *b);
void auth_thread_stop(drv_broker *b);
/* Locked: queue a job (takes it). */
void auth_submit(drv_broker *b, auth_job *j);
/* Free a job, releasing an authentication context nobody took (b's backend). */
void auth_job_free(drv_broker *b, auth_job *j);
/* Give a context back to the auth backend (NULL: nothing to do). */
void broker_auth_ctx_release(drv_broker *b, void *ctx);
/* Owner, locked, at turn end: finish the CONNECTs whose authentication is done. */
void auth_finish_done(worker *w);
/* The outcome handle_connect should use instead of asking the backend (owner
 * thread, set while a finished CONNECT is parsed again); handle_connect takes
 * its result.ctx (sets it to NULL) when it uses the outcome. */
extern _Thread_local auth_job *auth_outcome;
/* Owner, locked: parse the waiting CONNECT again now that j is done. */
void conn_auth_done(conn *c, auth_job *j);

/* Read-side: parse complete packets from bytes and dispatch them. */
void dispatch_packet(conn *c, uint8_t first, const uint8_t *body, uint32_t len);

uint8_t handle_connect(conn *c, const mqtt_connect *p);
uint8_t handle_publish(conn *c, mqtt_publish *p);
uint8_t handle_puback(conn *c, const mqtt_ack *p);
uint8_t handle_pubrec(conn *c, const mqtt_ack *p);
uint8_t handle_pubrel(conn *c, const mqtt_ack *p);
uint8_t handle_pubcomp(conn *c, const mqtt_ack *p);
uint8_t handle_subscribe(conn *c, const mqtt_subscribe *p);
uint8_t handle_unsubscribe(conn *c, const mqtt_subscribe *p);
uint8_t handle_pingreq(conn *c);
uint8_t handle_disconnect(conn *c, const mqtt_disconnect *p);
uint8_t handle_auth(conn *c, const mqtt_disconnect *p);

/* -- persistence (persist.c, ADR-0005) ------------------------------------------ */

typedef struct persist persist;

drv_err persist_open(drv_broker *b, const char *dir, bool sync, persist **out);
/* Replay the log into the broker's structures (then compact with force to open it). */
drv_err persist_replay(persist *p);
void persist_close(persist *p);
/* Append records to this turn's batch (no-ops for non-persistent state). */
void persist_session(persist *p, session *s);
void persist_session_del(persist *p, session *s);
void persist_sub(persist *p, session *s, const char *filter, const sub *opt);
void persist_unsub(persist *p, session *s, const char *filter);
void persist_queue(persist *p, session *s, const qitem *qi);
void persist_ack(persist *p, session *s, const msg *m);
void persist_sent(persist *p, session *s, const qitem *qi);
void persist_retain(persist *p, const uint8_t *topic, uint16_t topic_len, msg *m);
void persist_qos2_in(persist *p, session *s, uint16_t pid, bool add);
/*
 * Group commit, in two steps so the write and sync happen outside the broker
 * lock: take the batch (locked), then write and sync it (under commit_lock,
 * which orders writers).  persist_commit does both (single-threaded use).
 */
void persist_take_batch(persist *p, drv_buf *out);
drv_err persist_write_batch(persist *p, drv_buf *batch);
drv_err persist_commit(persist *p);
/* The log has grown enough to be compacted (a cheap, unlocked check). */
bool persist_needs_compact(const persist *p);
/* Rewrite the log as a snapshot of live state when it has grown (or `force`). */
drv_err persist_maybe_compact(persist *p, bool force);

/* -- $SYS (sys.c) --------------------------------------------------------------- */

void sys_start(drv_broker *b);
void sys_stop(drv_broker *b);

/* -- tenant quotas (quota.c) ----------------------------------------------------- */

/* Live use and limits of one namespace (locked); created at its first CONNECT
 * and kept while the broker runs (one per tenant, not per client). */
typedef struct ns_quota {
    drv_hnode h;              /* in broker->quotas, key = ns */
    uint32_t connections;     /* connected clients of the namespace now */
    uint32_t max_connections; /* 0: unlimited */
    uint32_t rate;            /* PUBLISH per second, 0: unlimited */
    double tokens;            /* token bucket for `rate` (burst: one second's worth) */
    uint64_t at_ms;           /* when tokens was last refilled */
    uint64_t throttled;       /* times a publisher was paused for the rate */
    uint64_t refused;         /* connections refused for max_connections */
    char ns[];
} ns_quota;

/* The namespace's quota record, created when `create`; NULL if none / no memory. */
ns_quota *quota_get(drv_broker *b, const char *ns, size_t len, bool create);
/* A client of s's namespace went away (close or takeover). */
void quota_conn_gone(drv_broker *b, const session *s);
/* May s publish one more message now?  False: pause the connection (throttle). */
bool quota_allow_publish(drv_broker *b, const session *s, uint64_t now_ms);
void quota_free_all(drv_broker *b);

/* -- the broker ----------------------------------------------------------------- */

typedef struct listener {
    struct listener *next;
    drv_listen_kind kind;
    drv_io io;
    worker *w; /* the worker accepting on this socket */
    int port;
} listener;

/* One event-loop thread and the connections it owns (broker.c). */
struct worker {
    drv_broker *b;
    int id;
    drv_loop *loop;
    pthread_t thread;
    listener *listeners; /* this worker's SO_REUSEPORT sockets */
    conn *conns;         /* owned connections (owner only) */
    conn *dirty;         /* connections to flush or close this turn (under lock) */
    conn *dead;          /* closed connections to free at turn end (owner only) */
    int wake_fd;         /* eventfd: another worker queued output for us */
    drv_io wake_io;
    bool wake_pending;          /* an eventfd write is outstanding (under lock) */
    drv_timer pause_timer;      /* wakes the loop to end pauses that nothing else ends */
    struct auth_job *auth_done; /* authentications finished for our connections (locked) */
    bool tap_dirty;             /* the publish tap accepted something this turn: commit it */
    uint8_t read_buf[65536];    /* complete packets parse in place here */
};

/* The worker whose thread is running (NULL outside workers). */
extern _Thread_local worker *broker_current_worker;

/* A slot of the per-publish match scratch (route.c). */
typedef struct match_slot {
    session *s;
    uint8_t qos;
    bool retain;
    bool shared;
    uint8_t nsub_ids;
    uint32_t sub_ids[MAX_SUB_IDS];
} match_slot;

struct drv_broker {
    drv_broker_config cfg;
    pthread_mutex_t lock;        /* all shared state (see the top of this file) */
    pthread_mutex_t commit_lock; /* serialises log writes+syncs between workers */
    worker *workers;
    int nworkers;
    bool stopping;   /* drv_broker_run is ending (under lock) */
    drv_wheel wheel; /* session and $SYS timers (under lock) */
    uint32_t nconns; /* connections across workers (under lock) */
    conn *paused;    /* publishers paused by back-pressure (under lock) */
    bool congested;  /* the publish being routed hit a half-full online queue */
    drv_hmap sessions;
    drv_hmap quotas; /* ns_quota by namespace (tenants with quotas) */
    /* The authentication thread (auth.c): its queue has its own lock, so a
     * submit never waits for a running check. */
    pthread_t auth_thread;
    bool auth_thread_running;
    pthread_mutex_t auth_lock;
    pthread_cond_t auth_cond;
    struct auth_job *auth_head, *auth_tail;
    bool auth_stop;
    trie subs;
    trie retained;
    persist *persist;
    struct drv_tls_ctx *tls; /* NULL when no TLS listener is configured */
    drv_ws_config ws_cfg;    /* shared by every WebSocket stream (they keep a pointer) */
    bool acl_active;         /* the auth backend restricts topics: ask it per message */
    /* Recycled qitems with room for one subscription id (the common size), so a
     * QoS 1/2 delivery does not call the allocator in steady state. */
    qitem *qitem_pool;
    uint32_t qitem_pool_len;
    uint64_t match_stamp;
    match_slot *matches;
    uint32_t nmatches, matches_cap;
    drv_broker_stats stats; /* under lock, except the atomic byte counters below */
    _Atomic uint64_t bytes_sent;
    uint64_t start_s;
    drv_timer sys_timer;
    uint64_t next_assigned_id;
};

/*
 * Back-pressure (locked).  A QoS 1/2 delivery that finds an online
 * subscriber's queue half full sets `congested`; the publisher is then
 * paused (its input is not read) until a congested queue drains below a
 * quarter, or for at most 1 s — so a slow consumer slows the publishers
 * that feed it instead of having acknowledged messages dropped, and a stuck
 * one cannot stall them for good.  Offline sessions never pause anyone.
 */
void broker_pause(drv_broker *b, conn *c);
void broker_unpause(drv_broker *b, conn *c);
void broker_resume_all(drv_broker *b);

/* The session's identity as the auth interface and the publish tap see it
 * (strings borrowed from the session). */
void broker_identity(const session *s, drv_client_identity *who);
/* Authorisation helper: true when the client may do `access` on topic, which is in
 * the client's form (without the namespace prefix). */
bool broker_authorize(drv_broker *b, const session *s, drv_acl_access access, const uint8_t *topic,
                      size_t len);
/* Tell the publish tap a tenant's client connected (filter NULL) or was
 * granted a subscription (locked). */
void broker_tap_session(drv_broker *b, const session *s, const uint8_t *filter, size_t len);
/* Tell the auth backend a client connected or went away (locked). */
void broker_client_event(drv_broker *b, conn *c, session *s, bool connected, const char *reason);
/* Wall-clock seconds (for message expiry). */
uint64_t broker_now_s(void);

#endif
