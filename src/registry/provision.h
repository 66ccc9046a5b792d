/*
 * provision.h — provisioning by claim (docs/provisioning.md, ADR-0019): a
 * claim session asks to register a device under its own id with its own,
 * self-signed certificate; this checks the request against the tenant's
 * provisioning template and creates the device bound to that certificate.
 *
 * Runs where device requests are worked through (the twin service's
 * thread), with a registry writer handle of its own: one transaction per
 * registration (device_provision_x509).
 */
#ifndef DRV_REGISTRY_PROVISION_H
#define DRV_REGISTRY_PROVISION_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "registry/store.h"

/*
 * Register the device a claim session of `tenant` asks for (payload: the
 * request JSON).  claim_ca: the id of the claim CA that verified the
 * session's certificate; claim_fp: that certificate's fingerprint.
 * Returns the answer's code — 200 (*answer {"tenant", "device_id",
 * "fingerprint"}) or 400, 403, 409, 429, 500 (*answer {"code", "message"}) —
 * and always sets *answer (NULL only when out of memory).
 */
int drv_provision_claim(drv_store *writer, const char *tenant, const char *claim_ca,
                        const char *claim_fp, const uint8_t *payload, size_t len, json_t **answer);

/*
 * Check a certificate a device registers with: exactly one PEM
 *certificate, self-signed (its signature verifies with its own key: the
 * device holds the key), valid now, an EC P-256/P-384 or RSA
 * (>= 2048 bits) key, CN = device.  true with fp (65 bytes) its SHA-256
 * fingerprint in lower-case hex; false with *why a static reason.
 */
bool drv_provision_check_cert(const char *pem, const char *device, char fp[65], const char **why);

#endif
