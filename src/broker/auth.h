/*
 * auth.h — the one interface for authentication and authorisation.
 *
 * The broker asks `authenticate` at CONNECT and `authorize` before a
 * PUBLISH is accepted, a SUBSCRIBE is granted and a message is delivered.
 * Backends: the static one (auth_static.c: password file + ACL file) today,
 * the device registry next.  A backend returns DRV_OK (allow), DRV_AUTH
 * (bad user name or password), DRV_DENIED (not authorised) or DRV_DECLINED
 * (no opinion: the broker then applies its default, which is deny).
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
    const char *username;             /* NULL when none was given */
    const drv_peer *peer;             /* address (drv_peer_format for text); NULL offline */
    const struct drv_peer_cert *cert; /* verified TLS client certificate, or NULL */
} drv_client_identity;

typedef struct drv_auth_ops {
    const char *name;
    drv_err (*authenticate)(void *state, const drv_client_identity *who, const uint8_t *password,
                            size_t password_len, bool has_password);
    drv_err (*authorize)(void *state, const drv_client_identity *who, drv_acl_access access,
                         const char *topic);
    /* Optional: false when authorize would allow everything (no ACL), so the broker
     * can skip it on the per-message path.  Asked once, at broker start. */
    bool (*restricts)(void *state);
    void (*free)(void *state);
} drv_auth_ops;

/* The static backend (auth_static.c). */
typedef struct drv_static_auth_config {
    const char *password_file; /* "user:$argon2id$..." per line; NULL: none */
    const char *acl_file;      /* mosquitto-style ACL rules; NULL: everything allowed */
    int allow_anonymous;       /* 0 never, 1 always, 2 loopback peers only */
} drv_static_auth_config;

extern const drv_auth_ops drv_static_auth_ops;
drv_err drv_static_auth_new(const drv_static_auth_config *cfg, void **state_out);

/* Hash a password for the password file (Argon2id, random salt); caller frees. */
drv_err drv_password_hash(const char *password, char **encoded_out);

#endif
