/*
 * auth_ca.c — a client certificate chain checked against tenant-registered
 * device CAs, off the TLS layer (ADR-0011).
 *
 * With tls.accept_unverified_client_certs the handshake lets any chain
 * through, so nothing in it is trusted yet: the chain's DER is parsed here,
 * the candidate CAs are those registered (live, unexpired) with the leaf's
 * issuer as subject, and each is tried as the only trust anchor of an
 * X509_STORE.  Intermediates the client sent are untrusted helpers; they can
 * only link the leaf to a registered CA, never stand in for one.  The TLS
 * handshake already proved the client holds the leaf's private key.
 *
 * Several tenants may have registered CAs with the same subject (different
 * keys): the first that verifies wins, and it is that CA's tenant the
 * device belongs to.
 *
 * A CA's CRL (set over the API, which checked that the CA signed it) is
 * consulted after the chain verifies, with X509_CRL_get0_by_serial on the
 * one certificate of the chain the CA signed itself: the device certificate,
 * or the intermediate the device sent (revoking it refuses everything under
 * it).  A certificate an intermediate signed is not covered: that would
 * need the intermediate's CRL.  A CRL past its nextUpdate is still enforced
 * (a revoked serial stays revoked; logged as stale), which is why this is
 * not X509_V_FLAG_CRL_CHECK: that fails every chain once the CRL is stale.
 * A CRL that no longer parses refuses everything the CA signed (fail
 * closed).
 */
#include "registry/auth_ca.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <string.h>

#include "core/log.h"

#define MAX_CAS 8 /* candidate CAs with one subject */

static bool issuer_of(X509 *x, char *out, size_t cap)
{
    BIO *mem = BIO_new(BIO_s_mem());
    bool ok = false;
    if (mem && X509_NAME_print_ex(mem, X509_get_issuer_name(x), 0, XN_FLAG_RFC2253) >= 0) {
        char *data;
        long have = BIO_get_mem_data(mem, &data);
        if (have > 0 && (size_t)have < cap) {
            memcpy(out, data, (size_t)have);
            out[have] = '\0';
            ok = true;
        }
    }
    BIO_free(mem);
    return ok;
}

/* The leaf's one CN, as printable text without NULs; false otherwise. */
static bool common_name(X509 *x, char *cn, size_t cap)
{
    X509_NAME *n = X509_get_subject_name(x);
    int i = X509_NAME_get_index_by_NID(n, NID_commonName, -1);
    if (i < 0 || X509_NAME_get_index_by_NID(n, NID_commonName, i) >= 0)
        return false;
    ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, i));
    unsigned char *utf8 = NULL;
    int len = ASN1_STRING_to_UTF8(&utf8, s);
    bool ok = len > 0 && (size_t)len < cap && memchr(utf8, '\0', (size_t)len) == NULL;
    if (ok) {
        memcpy(cn, utf8, (size_t)len);
        cn[len] = '\0';
    }
    OPENSSL_free(utf8);
    return ok;
}

/* Is x, which ca signed, on ca's CRL?  Also true when the CRL cannot be
 * read: a CA whose revocations are unknown vouches for nothing. */
static bool revoked(X509 *x, const drv_device_ca *ca)
{
    BIO *bio = BIO_new_mem_buf(ca->crl_pem, -1);
    X509_CRL *crl = bio ? PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL) : NULL;
    X509_REVOKED *entry = NULL;
    bool out = true;
    if (!crl) {
        drv_warn("device certificate refused: the tenant CA's CRL cannot be read", "tenant",
                 ca->tenant, "ca", ca->id);
        goto out;
    }
    const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
    if (next && X509_cmp_current_time(next) <= 0)
        drv_info("the tenant CA's CRL is past its nextUpdate; still enforced", "tenant", ca->tenant,
                 "ca", ca->id);
    /* 1: listed; 2: a removeFromCRL entry (delta CRLs, which the API refuses). */
    out = X509_CRL_get0_by_serial(crl, &entry, X509_get0_serialNumber(x)) == 1;
    if (out)
        drv_info("certificate revoked by the tenant CA's CRL", "tenant", ca->tenant, "ca", ca->id);
out:
    X509_CRL_free(crl);
    BIO_free(bio);
    return out;
}

/* DRV_OK: the chain verifies with ca as its only trust anchor, and ca's CRL
 * (if any) does not list the certificate of the chain ca signed.
 * DRV_DECLINED: it does not verify.  DRV_AUTH: it is revoked. */
static drv_err verify_with(X509 *leaf, STACK_OF(X509) * untrusted, const drv_device_ca *ca)
{
    drv_err result = DRV_DECLINED;
    BIO *bio = BIO_new_mem_buf(ca->pem, -1);
    X509 *anchor = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    X509_STORE *store = anchor ? X509_STORE_new() : NULL;
    X509_STORE_CTX *ctx = store ? X509_STORE_CTX_new() : NULL;
    bool ok = ctx && X509_STORE_add_cert(store, anchor) == 1 &&
              X509_STORE_CTX_init(ctx, store, leaf, untrusted) == 1 &&
              X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT) == 1;
    if (!ok)
        goto out;
    X509_VERIFY_PARAM_set_depth(X509_STORE_CTX_get0_param(ctx), DRV_PEER_CHAIN_CERTS);
    if (X509_verify_cert(ctx) != 1) {
        drv_info("device certificate does not verify against a registered CA", "reason",
                 X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
        goto out;
    }
    result = DRV_OK;
    /* The verified chain ends with the anchor; the one before it is what the
     * CA signed (the anchor alone: the client showed the CA itself). */
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(ctx);
    int len = chain ? sk_X509_num(chain) : 0;
    if (ca->crl_pem && len >= 2 && revoked(sk_X509_value(chain, len - 2), ca))
        result = DRV_AUTH;
out:
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    X509_free(anchor);
    BIO_free(bio);
    return result;
}

/* The client's chain as sent: the leaf, the rest as untrusted helpers, and
 * the leaf's issuer name; false when it does not parse (the caller frees
 * *leaf and *untrusted either way). */
static bool parse_chain(const drv_peer_cert *cert, X509 **leaf, STACK_OF(X509) * *untrusted,
                        char *issuer, size_t cap)
{
    const unsigned char *p = cert->chain, *end = cert->chain + cert->chain_len;
    *leaf = d2i_X509(NULL, &p, end - p);
    *untrusted = sk_X509_new_null();
    if (!*leaf || !*untrusted || !issuer_of(*leaf, issuer, cap))
        return false;
    while (p < end) {
        X509 *c = d2i_X509(NULL, &p, end - p);
        if (!c || !sk_X509_push(*untrusted, c)) {
            X509_free(c);
            return false;
        }
    }
    return true;
}

drv_err reg_ca_verify(drv_store *reader, const drv_peer_cert *cert, drv_device_ca *ca, char *cn,
                      size_t cap)
{
    drv_err result = DRV_AUTH;
    drv_device_ca cands[MAX_CAS];
    size_t n = 0;
    char issuer[1024];
    X509 *leaf = NULL;
    STACK_OF(X509) *untrusted = NULL;
    if (!parse_chain(cert, &leaf, &untrusted, issuer, sizeof(issuer)))
        goto out;
    drv_err e = reader->ops->lookup_cas(reader, issuer, cands, MAX_CAS, &n);
    if (e != DRV_OK) {
        result = e;
        goto out;
    }
    if (n == 0) {
        result = DRV_DECLINED;
        goto out;
    }
    if (!common_name(leaf, cn, cap)) {
        drv_info("device certificate has no single usable CN", "issuer", issuer);
        goto out;
    }
    for (size_t i = 0; i < n && result == DRV_AUTH; i++) {
        drv_err v = verify_with(leaf, untrusted, &cands[i]);
        if (v == DRV_OK) {
            *ca = cands[i];
            memset(&cands[i], 0, sizeof(cands[i])); /* handed over */
            result = DRV_OK;
        } else if (v == DRV_AUTH) {
            break; /* revoked by the CA that verified it: no other may vouch */
        }
    }
out:
    for (size_t i = 0; i < n; i++)
        drv_device_ca_clear(&cands[i]);
    sk_X509_pop_free(untrusted, X509_free);
    X509_free(leaf);
    ERR_clear_error();
    return result;
}

bool reg_cert_in_date(const drv_peer_cert *cert)
{
    if (cert->verified || cert->chain_len == 0)
        return true;
    const unsigned char *p = cert->chain;
    X509 *leaf = d2i_X509(NULL, &p, (long)cert->chain_len);
    bool ok = leaf && X509_cmp_current_time(X509_get0_notBefore(leaf)) <= 0 &&
              X509_cmp_current_time(X509_get0_notAfter(leaf)) >= 0;
    X509_free(leaf);
    return ok;
}

bool reg_cert_revoked_in_tenant(drv_store *reader, const drv_peer_cert *cert, const char *tenant)
{
    if (cert->verified || cert->chain_len == 0)
        return false;
    bool out = false;
    drv_device_ca cands[MAX_CAS];
    size_t n = 0;
    char issuer[1024];
    X509 *leaf = NULL;
    STACK_OF(X509) *untrusted = NULL;
    if (!parse_chain(cert, &leaf, &untrusted, issuer, sizeof(issuer)))
        goto done;
    if (reader->ops->lookup_cas(reader, issuer, cands, MAX_CAS, &n) != DRV_OK)
        n = 0; /* unknown: the fingerprint binding stands */
    /* Only the tenant's own CAs: another tenant's CA of the same name must
     * not be able to revoke this tenant's device. */
    for (size_t i = 0; i < n && !out; i++)
        out = strcmp(cands[i].tenant, tenant) == 0 && cands[i].crl_pem &&
              verify_with(leaf, untrusted, &cands[i]) == DRV_AUTH;
done:
    for (size_t i = 0; i < n; i++)
        drv_device_ca_clear(&cands[i]);
    sk_X509_pop_free(untrusted, X509_free);
    X509_free(leaf);
    ERR_clear_error();
    return out;
}
