/*
 * auth.h — the one interface for authentication and authorisation.
 *
 * The broker asks `authenticate` at CONNECT and `authorize` before a
 * PUBLISH is accepted, a SUBSCRIBE is granted and a message is delivered.
 * Backends: the static one (auth_static.c: password file + ACL file) today,
 * the device registry next.  A backend returns DRV_OK (allow), DRV_AUTH
 * (bad user name or password), DRV_DENIED (not authorised) or DRV_DECLINED
 * (no opinion: the broker then applies its default, which is deny).
 *
 * Namespaces (docs/adr/0009-broker-namespaces.md): `authenticate` may put the
 * connection in a tenant's namespace by filling drv_auth_result.ns with
 * "$T/<tenant>" (one topic level after "$T/": no '/', '+', '#', so no
 * namespace is a prefix of another).  The broker then puts "<ns>/" in front of
 * every topic and filter of that client and strips it on delivery: the client
 * sees only its tenant's topics, with the names it used.  An empty ns is the
 * global namespace (the static backend's default, and the platform's own
 * clients), which can reach a tenant's topics explicitly as "$T/<tenant>/...".
 * `authorize` is always given the topic as the client sees it, without the
 * prefix, and the namespace in who->ns.
 *
 * Per-session context: `authenticate` may also hand back an opaque ctx (say,
 * the device's compiled ACL), owned by the backend and reference-counted by
 * it.  The broker keeps it in the session, gives it back in who->ctx on every
 * `authorize` and `client_event` of that session, and calls `ctx_release`
 * once when the session ends, when a later CONNECT brings a new context, or
 * when the connection is refused after all.  A session restored from the log
 * at startup has no context (NULL) until its client connects again.
 */
#ifndef DRV_BROKER_AUTH_H
#define DRV_BROKER_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "platform/net.h"

typedef enum {
    DRV_ACL_READ = 1,  /* receive messages on the topic (SUBSCRIBE, delivery) */
    DRV_ACL_WRITE = 2, /* publish to the topic */
} drv_acl_access;

/* Who is connecting / connected.  Strings are NUL-terminated. */
typedef struct drv_client_identity {
    const char *client_id;
    const char *username; /* NULL when none was given */
    const drv_peer *peer; /* address (drv_peer_format for text); NULL offline */
    /* TLS client certificate, or NULL.  cert->verified false: it did not verify
     * at the TLS layer (tls.accept_unverified_client_certs); a backend that
     * does not verify cert->chain itself must treat it as no certificate. */
    const struct drv_peer_cert *cert;
    const char *ns; /* the client's namespace, "" = global (never NULL); "" at authenticate */
    void *ctx;      /* what `authenticate` returned in drv_auth_result.ctx; NULL: none */
} drv_client_identity;

/* Longest namespace, in bytes ("$T/" included). */
#define DRV_AUTH_NS_MAX 255

/* What `authenticate` tells the broker besides yes or no (zeroed by the broker). */
typedef struct drv_auth_result {
    /* The connection's namespace, NUL-terminated: "" = global, else "$T/<tenant>".
     * The broker refuses the connection (0x87 / 5) if it is not of that form. */
    char ns[DRV_AUTH_NS_MAX + 1];
    /* The namespace's quotas, as of this CONNECT (0: unlimited; ignored for the
     * global namespace).  Connections beyond max_connections are refused with
     * 0x97 quota exceeded (3.1.1: 3); publishers beyond max_msgs_per_sec are
     * throttled — their input is not read until the rate allows — so nothing
     * acknowledged is lost. */
    uint32_t max_connections;
    uint32_t max_msgs_per_sec;
    /* No ACL applies to this client: the broker skips `authorize` for it (the
     * per-message fast path).  Leave false when in doubt. */
    bool unrestricted;
    /* Transport limits for this client (a device profile's), within the
     * broker's own: limit_qos with max_qos (its PUBLISH and granted
     * subscriptions stay at or below it; MQTT 5.0 CONNACK says so), and
     * keepalive_max (seconds, 0: none; a larger keep alive is lowered, 5.0
     * Server Keep Alive). */
    bool limit_qos;
    uint8_t max_qos;
    uint16_t keepalive_max;
    /* The session's context (see the top): the broker owns one reference from
     * here and gives it back with ctx_release.  NULL: none. */
    void *ctx;
} drv_auth_result;

/* Is ns[0..len) a namespace the broker accepts: "$T/" and one non-empty level
 * of valid UTF-8 without '/', '+' or '#', at most DRV_AUTH_NS_MAX bytes? */
bool drv_auth_ns_valid(const char *ns, size_t len);

typedef struct drv_auth_ops {
    const char *name;
    /* At CONNECT; on DRV_OK, `result` (zeroed by the caller) may name a namespace. */
    drv_err (*authenticate)(void *state, const drv_client_identity *who, const uint8_t *password,
                            size_t password_len, bool has_password, drv_auth_result *result);
    /* `topic` (a name or filter) as the client sees it: without its namespace prefix. */
    drv_err (*authorize)(void *state, const drv_client_identity *who, drv_acl_access access,
                         const char *topic);
    /* Optional: does authenticating this client take real work (password hashing,
     * storage lookups)?  Then the broker calls `authenticate` on its
     * authentication thread, without its lock and off the workers; otherwise
     * inline.  Absent: always.  `authenticate` is only ever called from one
     * thread at a time for slow clients (the authentication thread), and for
     * fast ones under the broker lock. */
    bool (*slow)(void *state, const drv_client_identity *who, bool has_password);
    /* Optional: a client's connection was accepted (connected) or ended (with a
     * short reason).  Called under the broker lock: record, don't block. */
    void (*client_event)(void *state, const drv_client_identity *who, bool connected,
                         const char *reason);
    /* Optional: false when authorize would allow everything (no ACL), so the broker
     * can skip it on the per-message path.  Asked once, at broker start. */
    bool (*restricts)(void *state);
    /* Optional (required when authenticate sets ctx): drop the broker's
     * reference to a context.  Called under the broker lock or, for a refused
     * or abandoned authentication, on a worker or at broker shutdown: cheap,
     * thread-safe, never blocking for long.  Every context is released before
     * the broker is freed. */
    void (*ctx_release)(void *state, void *ctx);
    void (*free)(void *state);
} drv_auth_ops;

/* The static backend (auth_static.c). */
typedef struct drv_static_auth_config {
    const char *password_file; /* "user:$argon2id$..." per line; NULL: none */
    const char *acl_file;      /* mosquitto-style ACL rules; NULL: everything allowed */
    int allow_anonymous;       /* 0 never, 1 always, 2 loopback peers only */
    /* Put each user of the password file in namespace "$T/<user name>" (anonymous
     * clients stay global); user names with '/', '+' or '#' are then refused. */
    bool namespace_per_user;
} drv_static_auth_config;

extern const drv_auth_ops drv_static_auth_ops;
drv_err drv_static_auth_new(const drv_static_auth_config *cfg, void **state_out);

/* Hash a password for the password file (Argon2id, random salt); caller frees. */
drv_err drv_password_hash(const char *password, char **encoded_out);

#endif
