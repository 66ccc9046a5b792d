/*
 * auth_ca.h — verify a client certificate chain that the TLS layer did not,
 * against the device CAs tenants registered (ADR-0011).  Used by the registry
 * auth backend on the authentication thread.
 */
#ifndef DRV_REGISTRY_AUTH_CA_H
#define DRV_REGISTRY_AUTH_CA_H

#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"
#include "net/transport.h"
#include "registry/store.h"

/*
 * Find a live registered CA whose subject is the leaf's issuer and verify
 * the chain in cert (leaf, then any intermediates the client sent) against
 * it alone with X509_verify_cert (signatures, validity dates, CA
 * constraints), then against that CA's CRL if it has one.  DRV_OK: *ca is
 * the CA that verified it (the caller clears it) and cn[cap] the leaf's
 * common name.  DRV_DECLINED: no registered CA has that subject.  DRV_AUTH:
 * one has, but the chain does not verify, the CA's CRL revokes it, or the
 * leaf has no usable CN (logged).  Other errors: a store failure.
 */
drv_err reg_ca_verify(drv_store *reader, const drv_peer_cert *cert, drv_device_ca *ca, char *cn,
                      size_t cap);

/* Is the unverified chain's certificate signed by one of `tenant`'s CAs and
 * listed on that CA's CRL?  For certificates bound by fingerprint: the CRL
 * of the tenant that issued them reaches them too.  false when no CA of the
 * tenant verifies the chain (a self-signed or foreign certificate: only its
 * binding counts). */
bool reg_cert_revoked_in_tenant(drv_store *reader, const drv_peer_cert *cert, const char *tenant);

/* Is the leaf of an unverified chain valid now (notBefore <= now <=
 * notAfter)?  true for a chain the TLS layer verified (it checked the
 * dates) or one it did not hand over; false for a leaf that does not
 * parse. */
bool reg_cert_in_date(const drv_peer_cert *cert);

#endif
