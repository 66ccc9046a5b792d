/*
 * auth_registry.h — the broker's authentication backend for registered
 * devices (see auth_registry.c): secrets, client certificates and
 * device-signed JWTs from the registry, tenant namespaces, and a
 * device-confined default ACL; every other client goes to a fallback
 * backend (the static one).
 */
#ifndef DRV_REGISTRY_AUTH_REGISTRY_H
#define DRV_REGISTRY_AUTH_REGISTRY_H

#include "broker/auth.h"
#include "core/span.h"
#include "registry/store.h"

extern const drv_auth_ops drv_registry_auth_ops;

/* Open a read-only handle on the registry at path; `fallback` (with its
 * state, still owned by the caller) judges clients that are not devices.
 * Device JWTs must name jwt_audience in "aud" (copied; empty: DRV_CONFIG). */
drv_err drv_registry_auth_new(const char *registry_path, const char *jwt_audience,
                              const drv_auth_ops *fallback, void *fallback_state, void **out);

/* Where a device's publish goes in the telemetry pipeline (ADR-0012). */
typedef struct drv_telemetry_route {
    const char *tenant;  /* borrowed from the identity's namespace */
    char device[129];    /* the device id */
    const char *decoder; /* its profile's decoder name ("json", "senml", "numeric") */
    drv_span key;        /* "numeric": the key from the topic's last level; else empty */
} drv_telemetry_route;

/*
 * Is this publish of a namespaced client (a device) to its telemetry topic
 * (its profile's telemetry_topic, per the context it connected with)?
 * Lock-free (the profile settings are immutable in the session's context):
 * called by the broker's publish tap for every device PUBLISH.
 */
bool drv_registry_telemetry_of(void *state, const drv_client_identity *who, const uint8_t *topic,
                               size_t len, drv_telemetry_route *out);

/* The device id of a client in a tenant namespace, into buf (cap bytes);
 * NULL for a global client, a claim session or an id that does not fit.
 * Lock-free. */
const char *drv_registry_device_of(const drv_client_identity *who, char *buf, size_t cap);

/* Is this a claim session (docs/provisioning.md)?  Then *ca_id is the claim
 * CA that verified it and *claim_fp its certificate's fingerprint (valid
 * while the session lives).  Lock-free. */
bool drv_registry_claim_of(const drv_client_identity *who, const char **ca_id,
                           const char **claim_fp);

/* The payload decoder of a device's profile into buf ("json" when the device
 * has no profile or the profile names none), read through the backend's
 * registry handle: call it only where `authenticate` of this state may run
 * (one thread at a time).  DRV_NOTFOUND: no such device (or its profile
 * vanished). */
drv_err drv_registry_device_decoder(void *state, const char *tenant, const char *device, char *buf,
                                    size_t cap);

/* Record a device event (kind: a static string such as "decode_error";
 * reason: ≤ 63 bytes kept) through the event writer thread; any thread. */
void drv_registry_device_event(void *state, const char *tenant, const char *device,
                               const char *kind, const char *reason);

#endif
