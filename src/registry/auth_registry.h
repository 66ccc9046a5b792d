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
#include "registry/store.h"

extern const drv_auth_ops drv_registry_auth_ops;

/* Open a read-only handle on the registry at path; `fallback` (with its
 * state, still owned by the caller) judges clients that are not devices.
 * Device JWTs must name jwt_audience in "aud" (copied; empty: DRV_CONFIG). */
drv_err drv_registry_auth_new(const char *registry_path, const char *jwt_audience,
                              const drv_auth_ops *fallback, void *fallback_state, void **out);

#endif
