/*
 * auth_acl.h — device profile ACLs compiled for the broker (auth_acl.c).
 *
 * A profile's "acl" rules (src/api/h_profiles.c) become an immutable,
 * reference-counted reg_acl at a device's CONNECT; the registry auth backend
 * hands it to the broker as the session's auth context (src/broker/auth.h)
 * and matches every PUBLISH, SUBSCRIBE and delivery of the device against it
 * without locks.  Compiled ACLs are shared through a cache keyed by (tenant,
 * profile) and stamped with the profile's version: an edited profile is
 * compiled again at the next CONNECT of one of its devices, and sessions that
 * still hold the old rules keep them until they reconnect.
 */
#ifndef DRV_REGISTRY_AUTH_ACL_H
#define DRV_REGISTRY_AUTH_ACL_H

#include <jansson.h>
#include <stdbool.h>

#include "broker/auth.h"
#include "core/err.h"
#include "core/span.h"
#include "registry/store.h"

typedef struct reg_acl reg_acl;
typedef struct reg_acl_cache reg_acl_cache;

drv_err reg_acl_cache_new(reg_acl_cache **out);
/* Drops the cache's references; ACLs still held by sessions live on until released. */
void reg_acl_cache_free(reg_acl_cache *c);
/* How many compiled ACLs the cache holds (tests, stats). */
size_t reg_acl_cache_count(reg_acl_cache *c);

/*
 * The ACL of a device, from its document's "profile" and that profile's
 * "acl", read through `reader` (one thread at a time: the authentication
 * thread).  *out = NULL when the device has no profile or the profile no
 * "acl": the default rule applies (both ways on devices/{device}/#).
 * DRV_NOTFOUND: no such device (or its profile vanished); DRV_INVAL: stored
 * rules that do not compile; other errors from the store.  The caller owns
 * one reference to *out.
 */
drv_err reg_acl_for_device(reg_acl_cache *c, drv_store *reader, const char *tenant,
                           const char *device, reg_acl **out);

/* Compile an "acl" JSON array by itself (refcount 1, not cached); DRV_INVAL
 * when a rule is malformed. */
drv_err reg_acl_compile(json_t *rules, reg_acl **out);

/*
 * The ACL of a claim session (docs/provisioning.md): publish only to
 * provisioning/{device}/register and subscribe under provisioning/{device}/,
 * where {device} is the client id; it remembers the claim CA (its id) and
 * the claim certificate's fingerprint for the registration.
 */
drv_err reg_acl_claim_new(const char *ca_id, const char *claim_fp, reg_acl **out);
/* Is acl a claim session's?  Then *ca_id and *claim_fp point into it. */
bool reg_acl_claim(const reg_acl *acl, const char **ca_id, const char **claim_fp);

/* Drop one reference (any thread; NULL is fine). */
void reg_acl_release(reg_acl *acl);

/*
 * May the device `device` of `tenant` have `access` on `topic` (a name for
 * publish and delivery, a filter for subscribe)?  Lock-free: the rules are
 * immutable.  Publish: some publish rule, with {device} and {tenant}
 * substituted, matches the name.  Subscribe and delivery: some subscribe
 * rule covers the filter (mqtt_filter_covers: every topic it can match).
 */
bool reg_acl_allows(const reg_acl *acl, drv_acl_access access, const char *topic,
                    const char *device, const char *tenant);

/* The profile's transport limits (transport.mqtt: max_qos, keepalive_max_s)
 * into the broker's auth result; acl NULL (no profile): none. */
void reg_acl_transport(const reg_acl *acl, drv_auth_result *result);

/*
 * Is `topic` (len bytes, as the device sent it) the device's telemetry
 * topic?  acl NULL: a device without a profile ("devices/{device}/telemetry",
 * decoder "json").  On true, *decoder is the profile's decoder name (static
 * or inside acl) and, for "numeric", *key the topic's last level (the value's
 * key; the topic is the telemetry topic plus one level); else key is empty.
 */
bool reg_acl_telemetry(const reg_acl *acl, const char *device, const char *tenant,
                       const uint8_t *topic, size_t len, const char **decoder, drv_span *key);

#endif
