/*
 * h_cas.c — a tenant's device CAs (ADR-0011): certificate authorities whose
 * certificates the tenant's devices may authenticate with over MQTT/TLS, and
 * that may create a device on its first connect (zero-touch provisioning).
 *
 * Registration takes the CA certificate in PEM and checks here that it is a
 * CA (basicConstraints CA:TRUE and keyUsage keyCertSign) and not expired; the
 * store keeps its subject (RFC 2253, the name device certificates carry as
 * their issuer), SHA-256 fingerprint and expiry beside the PEM.  A CA belongs
 * to one tenant (409 for a fingerprint another tenant registered).  Deleting
 * revokes: the row stays for the record, and from then on no certificate is
 * trusted through it (devices bound by their own fingerprint keep working).
 *
 * A CA's "purpose" is "device" (its certificates identify devices, as above)
 * or "claim" (its certificates only register devices: docs/provisioning.md).
 *
 * Proof of possession (as AWS IoT's verification certificate): a tenant has
 * a registration code (GET .../ca-registration-code, made on first request
 * and kept); a CA that may create, bind or register devices (auto_provision,
 * bind_existing, purpose claim) is registered only with a certificate it
 * signed whose CN is that code, which only a holder of its key can make.
 * For a plain device CA it is optional; "verified" says whether it was given.
 *
 * A CA's CRL (PUT .../cas/{ca}/crl) is checked here: issued by the CA
 * (issuer name and signature, keyUsage cRLSign), not a delta CRL, not past
 * its nextUpdate.  It is stored re-encoded (one CRL, canonical PEM), and
 * replaces the CA's CRL unless that one was issued later (409).  The
 * authentication thread consults it (src/registry/auth_ca.c).
 */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <string.h>
#include <time.h>

#include "api/api_int.h"

#define CA_PEM_MAX 16384
/* Room around the PEM for the rest of a CRL request body. */
#define CRL_BODY_SLACK 4096

/* What registration needs out of the certificate. */
typedef struct ca_facts {
    char subject[1024];
    char fingerprint[65];
    char not_after[32];
} ca_facts;

static bool name_rfc2253(const X509_NAME *name, char *out, size_t cap)
{
    BIO *mem = BIO_new(BIO_s_mem());
    bool ok = false;
    if (mem && X509_NAME_print_ex(mem, name, 0, XN_FLAG_RFC2253) >= 0) {
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

/* t as "2026-11-28T21:15:17.000Z" into out[32]; false when unreadable. */
static bool time_rfc3339(const ASN1_TIME *t, char *out, size_t cap)
{
    struct tm tm;
    return t && ASN1_TIME_to_tm(t, &tm) == 1 &&
           strftime(out, cap, "%Y-%m-%dT%H:%M:%S.000Z", &tm) > 0;
}

static X509 *x509_from_pem(const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    return x;
}

/* NULL when pem is a usable CA certificate (facts filled), else why not. */
static const char *parse_ca(const char *pem, ca_facts *f)
{
    const char *why = NULL;
    X509 *x = x509_from_pem(pem);
    unsigned char md[32];
    unsigned int n = 0;
    if (!x) {
        why = "\"certificate_pem\" is not a PEM certificate";
        goto out;
    }
    if (!(X509_get_extension_flags(x) & EXFLAG_CA) || X509_check_ca(x) < 1) {
        why = "the certificate is not a CA (basicConstraints CA:TRUE)";
        goto out;
    }
    if (!(X509_get_extension_flags(x) & EXFLAG_KUSAGE) ||
        !(X509_get_key_usage(x) & KU_KEY_CERT_SIGN)) {
        why = "the certificate may not sign certificates (keyUsage keyCertSign)";
        goto out;
    }
    if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
        why = "the certificate has expired";
        goto out;
    }
    if (!name_rfc2253(X509_get_subject_name(x), f->subject, sizeof(f->subject)) || !f->subject[0]) {
        why = "the certificate's subject is empty or too long";
        goto out;
    }
    if (X509_digest(x, EVP_sha256(), md, &n) != 1 || n != 32 ||
        !time_rfc3339(X509_get0_notAfter(x), f->not_after, sizeof(f->not_after))) {
        why = "the certificate cannot be read";
        goto out;
    }
    for (unsigned i = 0; i < 32; i++)
        snprintf(f->fingerprint + 2 * i, 3, "%02x", md[i]);
out:
    ERR_clear_error();
    X509_free(x);
    return why;
}

/* x's subject has exactly one CN, and it is want. */
static bool cn_is(X509 *x, const char *want)
{
    X509_NAME *n = X509_get_subject_name(x);
    int i = X509_NAME_get_index_by_NID(n, NID_commonName, -1);
    if (i < 0 || X509_NAME_get_index_by_NID(n, NID_commonName, i) >= 0)
        return false;
    ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, i));
    size_t len = strlen(want);
    return (size_t)ASN1_STRING_length(s) == len && memcmp(ASN1_STRING_get0_data(s), want, len) == 0;
}

/* Did the holder of ca's key sign proof (PEM) for this tenant: a certificate
 * whose CN is the tenant's registration code, issued and signed by ca?  NULL
 * when so, else why not.  Its validity dates do not matter: it proves
 * possession at the time it was made. */
static const char *check_possession(api_ctx *x, const char *proof, X509 *ca)
{
    drv_store *st = x->api->store;
    char code[65];
    const char *why = NULL;
    X509 *v = x509_from_pem(proof);
    drv_err e = st->ops->ca_registration_code(st, &x->scope, NULL, code, sizeof(code));
    if (e != DRV_OK)
        why = "this tenant has no registration code yet (GET .../ca-registration-code)";
    else if (!v)
        why = "\"verification_certificate_pem\" is not a PEM certificate";
    else if (!cn_is(v, code))
        why = "the verification certificate's CN is not the tenant's registration code";
    else if (X509_NAME_cmp(X509_get_issuer_name(v), X509_get_subject_name(ca)) != 0)
        why = "the verification certificate was not issued by this CA (issuer)";
    else if (X509_verify(v, X509_get0_pubkey(ca)) != 1)
        why = "the verification certificate is not signed by this CA's key";
    ERR_clear_error();
    X509_free(v);
    return why;
}

/* The registration checks that need the certificate: a CA (facts filled),
 * and, when it may create, bind or register devices, proof of possession.
 * Sets "verified" in doc.  false with the answer set when one fails. */
static bool check_certificate(api_ctx *x, json_t *doc, ca_facts *f)
{
    const char *pem = json_string_value(json_object_get(doc, "certificate_pem"));
    const char *proof = json_string_value(json_object_get(doc, "verification_certificate_pem"));
    const char *purpose = json_string_value(json_object_get(doc, "purpose"));
    bool needs_proof = json_is_true(json_object_get(doc, "auto_provision")) ||
                       json_is_true(json_object_get(doc, "bind_existing")) ||
                       (purpose && strcmp(purpose, "claim") == 0);
    const char *why = parse_ca(pem, f);
    if (why) {
        api_problem(x, 400, "invalid", "%s", why);
        return false;
    }
    if (!proof && needs_proof) {
        api_problem(x, 400, "invalid",
                    "proof of possession required: a CA that may create, bind or register "
                    "devices (auto_provision, bind_existing, purpose claim) needs "
                    "\"verification_certificate_pem\", a certificate it signed whose CN is the "
                    "tenant's registration code (GET .../ca-registration-code)");
        return false;
    }
    if (proof) {
        X509 *ca = x509_from_pem(pem);
        why = ca ? check_possession(x, proof, ca) : "the certificate cannot be read";
        X509_free(ca);
        if (why) {
            api_problem(x, 400, "invalid", "proof of possession failed: %s", why);
            return false;
        }
    }
    json_object_del(doc, "verification_certificate_pem");
    json_object_set_new(doc, "verified", json_boolean(proof != NULL));
    return true;
}

void api_cas_create(api_ctx *x)
{
    static const char *const fields[] = {"certificate_pem",
                                         "name",
                                         "auto_provision",
                                         "profile",
                                         "purpose",
                                         "bind_existing",
                                         "verification_certificate_pem",
                                         NULL};
    json_t *doc, *meta = NULL;
    if (!api_body(x, &doc))
        return;
    if (!api_check_fields(x, doc, fields) ||
        !api_check_string(x, doc, "certificate_pem", CA_PEM_MAX, true) ||
        !api_check_string(x, doc, "name", 200, false) ||
        !api_check_string(x, doc, "profile", 128, false) ||
        !api_check_string(x, doc, "verification_certificate_pem", CA_PEM_MAX, false))
        goto out;
    json_t *ap = json_object_get(doc, "auto_provision");
    if (ap && !json_is_boolean(ap)) {
        api_problem(x, 400, "invalid", "\"auto_provision\" must be a boolean");
        goto out;
    }
    /* A claim CA's certificates only register devices (docs/provisioning.md):
     * they never identify one, so they cannot create one on connect either. */
    const char *purpose = json_string_value(json_object_get(doc, "purpose"));
    if (json_object_get(doc, "purpose") &&
        (!purpose || (strcmp(purpose, "device") != 0 && strcmp(purpose, "claim") != 0))) {
        api_problem(x, 400, "invalid", "\"purpose\" is \"device\" (the default) or \"claim\"");
        goto out;
    }
    if (purpose && strcmp(purpose, "claim") == 0 && json_is_true(ap)) {
        api_problem(x, 400, "invalid", "a claim CA cannot auto_provision");
        goto out;
    }
    json_t *bind = json_object_get(doc, "bind_existing");
    if (bind && (!json_is_boolean(bind) ||
                 (json_is_true(bind) && purpose && strcmp(purpose, "claim") == 0))) {
        api_problem(x, 400, "invalid",
                    "\"bind_existing\" is a boolean, and a claim CA cannot bind devices");
        goto out;
    }
    if (!purpose)
        json_object_set_new(doc, "purpose", json_string("device"));
    drv_store *st = x->api->store;
    const char *profile = json_string_value(json_object_get(doc, "profile"));
    if (profile) {
        json_t *p = NULL;
        drv_err pe = st->ops->doc_get(st, &x->scope, DRV_KIND_PROFILE, profile, &p);
        json_decref(p);
        if (pe == DRV_NOTFOUND || pe == DRV_INVAL) {
            api_problem(x, 400, "invalid", "\"profile\": there is no profile \"%s\" in this tenant",
                        profile);
            goto out;
        }
        if (pe != DRV_OK) {
            api_store_error(x, pe, "profile");
            goto out;
        }
    }
    ca_facts f;
    memset(&f, 0, sizeof(f));
    if (!check_certificate(x, doc, &f))
        goto out;
    const char *name = json_string_value(json_object_get(doc, "name"));
    json_object_set_new(doc, "name", json_string(name ? name : f.subject));
    json_object_set_new(doc, "subject", json_string(f.subject));
    json_object_set_new(doc, "fingerprint", json_string(f.fingerprint));
    json_object_set_new(doc, "not_after", json_string(f.not_after));
    drv_err e = st->ops->ca_create(st, &x->scope, doc, &meta);
    if (e == DRV_EXISTS) {
        api_problem(x, 409, "exists", "this CA is registered already (a CA belongs to one tenant)");
        goto out;
    }
    if (e != DRV_OK) {
        api_store_error(x, e, "CA");
        goto out;
    }
    char target[256];
    snprintf(target, sizeof(target), "/api/v1/tenants/%s/cas/%s", x->scope.tenant,
             json_string_value(json_object_get(meta, "id")));
    json_t *detail =
        json_pack("{s:s, s:b, s:b}", "fingerprint", f.fingerprint, "auto_provision",
                  json_is_true(ap), "verified", json_is_true(json_object_get(doc, "verified")));
    api_audit(x, "ca.create", target, detail);
    json_decref(detail);
    drv_http_add_header(x->resp, "Location", "%s", target);
    api_json(x, 201, meta);
out:
    json_decref(doc);
}

void api_cas_list(api_ctx *x)
{
    drv_page pg;
    char cursor[256];
    if (!api_page(x, &pg, cursor, sizeof(cursor)))
        return;
    json_t *out = NULL;
    drv_store *st = x->api->store;
    drv_err e = st->ops->ca_list(st, &x->scope, &pg, &out);
    if (e != DRV_OK)
        api_store_error(x, e, "CA");
    else
        api_json(x, 200, out);
}

void api_cas_get(api_ctx *x)
{
    json_t *out = NULL;
    drv_store *st = x->api->store;
    drv_err e = st->ops->ca_get(st, &x->scope, api_param(x, 1), &out);
    if (e != DRV_OK)
        api_store_error(x, e, "CA");
    else
        api_json(x, 200, out);
}

void api_cas_revoke(api_ctx *x)
{
    drv_store *st = x->api->store;
    drv_err e = st->ops->ca_revoke(st, &x->scope, api_param(x, 1));
    if (e != DRV_OK) {
        api_store_error(x, e, "CA");
        return;
    }
    char target[256];
    snprintf(target, sizeof(target), "/api/v1/tenants/%s/cas/%s", x->scope.tenant, api_param(x, 1));
    api_audit(x, "ca.revoke", target, NULL);
    x->resp->status = 204;
}

/* -- CRLs ------------------------------------------------------------------ */

/* What the store keeps of a CRL: {"crl_pem" (canonical), "this_update",
 * "next_update" (or null), "revoked"}. */
static json_t *crl_doc(X509_CRL *crl)
{
    char this_update[32], next_update[32];
    const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
    STACK_OF(X509_REVOKED) *entries = X509_CRL_get_REVOKED(crl);
    BIO *mem = BIO_new(BIO_s_mem());
    char *data;
    long have;
    json_t *doc = NULL;
    if (mem && PEM_write_bio_X509_CRL(mem, crl) == 1 && (have = BIO_get_mem_data(mem, &data)) > 0 &&
        time_rfc3339(X509_CRL_get0_lastUpdate(crl), this_update, sizeof(this_update)) &&
        (!next || time_rfc3339(next, next_update, sizeof(next_update))))
        doc = json_pack("{s:s%, s:s, s:o, s:i}", "crl_pem", data, (size_t)have, "this_update",
                        this_update, "next_update", next ? json_string(next_update) : json_null(),
                        "revoked", entries ? sk_X509_REVOKED_num(entries) : 0);
    BIO_free(mem);
    return doc;
}

/* NULL when crl is one the CA ca_pem issued, current and complete (*doc
 * set: crl_doc), else why not. */
static const char *check_crl(X509_CRL *crl, const char *ca_pem, json_t **doc)
{
    const char *why = NULL;
    X509 *ca = x509_from_pem(ca_pem);
    const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
    if (!ca)
        why = "the CA's certificate cannot be read";
    else if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca)) != 0)
        why = "the CRL's issuer is not this CA";
    else if ((X509_get_extension_flags(ca) & EXFLAG_KUSAGE) &&
             !(X509_get_key_usage(ca) & KU_CRL_SIGN))
        why = "this CA may not sign CRLs (keyUsage cRLSign)";
    else if (X509_CRL_verify(crl, X509_get0_pubkey(ca)) != 1)
        why = "the CRL is not signed by this CA's key";
    else if (X509_CRL_get_ext_by_NID(crl, NID_delta_crl, -1) >= 0)
        why = "delta CRLs are not supported: send a complete CRL";
    else if (next && X509_cmp_current_time(next) <= 0)
        why = "the CRL has expired (its nextUpdate has passed)";
    else if (!(*doc = crl_doc(crl)))
        why = "the CRL cannot be read";
    ERR_clear_error();
    X509_free(ca);
    return why;
}

/* The CRL in the body of PUT .../crl, parsed; NULL with the answer set. */
static X509_CRL *body_crl(api_ctx *x, json_t **doc)
{
    static const char *const fields[] = {"crl_pem", NULL};
    X509_CRL *crl = NULL;
    if (x->req->body.n > DRV_STORE_CRL_MAX + CRL_BODY_SLACK) {
        api_problem(x, 413, NULL, "a CRL is at most %d bytes of PEM", DRV_STORE_CRL_MAX);
        return NULL;
    }
    if (!api_body(x, doc))
        return NULL;
    json_t *pem = json_object_get(*doc, "crl_pem");
    if (json_is_string(pem) && json_string_length(pem) > DRV_STORE_CRL_MAX) {
        api_problem(x, 413, NULL, "a CRL is at most %d bytes of PEM", DRV_STORE_CRL_MAX);
        return NULL;
    }
    if (!api_check_fields(x, *doc, fields) ||
        !api_check_string(x, *doc, "crl_pem", DRV_STORE_CRL_MAX, true))
        return NULL;
    BIO *bio = BIO_new_mem_buf(json_string_value(pem), (int)json_string_length(pem));
    crl = bio ? PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    ERR_clear_error();
    if (!crl)
        api_problem(x, 400, "invalid", "\"crl_pem\" is not a PEM X.509 CRL");
    return crl;
}

void api_cas_crl_put(api_ctx *x)
{
    drv_store *st = x->api->store;
    json_t *body = NULL, *ca = NULL, *doc = NULL, *out = NULL;
    X509_CRL *crl = body_crl(x, &body);
    if (!crl)
        goto out;
    drv_err e = st->ops->ca_get(st, &x->scope, api_param(x, 1), &ca);
    if (e != DRV_OK) {
        api_store_error(x, e, "CA");
        goto out;
    }
    const char *why =
        check_crl(crl, json_string_value(json_object_get(ca, "certificate_pem")), &doc);
    if (why) {
        api_problem(x, 400, "invalid", "%s", why);
        goto out;
    }
    e = st->ops->ca_crl_set(st, &x->scope, api_param(x, 1), doc, &out);
    if (e == DRV_CONFLICT) {
        api_problem(x, 409, "stale-crl",
                    "the CA has a CRL issued later than this one (its thisUpdate is older)");
        goto out;
    }
    if (e != DRV_OK) {
        api_store_error(x, e, "CRL");
        goto out;
    }
    char target[256];
    snprintf(target, sizeof(target), "/api/v1/tenants/%s/cas/%s/crl", x->scope.tenant,
             api_param(x, 1));
    json_t *detail = json_pack("{s:O, s:O}", "this_update", json_object_get(doc, "this_update"),
                               "revoked", json_object_get(doc, "revoked"));
    api_audit(x, "ca.crl.set", target, detail);
    json_decref(detail);
    api_json(x, 200, out);
out:
    X509_CRL_free(crl);
    json_decref(body);
    json_decref(ca);
    json_decref(doc);
}

void api_cas_crl_delete(api_ctx *x)
{
    drv_store *st = x->api->store;
    drv_err e = st->ops->ca_crl_set(st, &x->scope, api_param(x, 1), NULL, NULL);
    if (e != DRV_OK) {
        api_store_error(x, e, "CA");
        return;
    }
    char target[256];
    snprintf(target, sizeof(target), "/api/v1/tenants/%s/cas/%s/crl", x->scope.tenant,
             api_param(x, 1));
    api_audit(x, "ca.crl.delete", target, NULL);
    x->resp->status = 204;
}

/* -- proof of possession ----------------------------------------------------- */

void api_cas_registration_code(api_ctx *x)
{
    drv_store *st = x->api->store;
    char code[65], fresh[65];
    drv_err e = st->ops->ca_registration_code(st, &x->scope, NULL, code, sizeof(code));
    if (e == DRV_NOTFOUND) {
        unsigned char rnd[32];
        if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
            api_problem(x, 500, NULL, "no randomness for a registration code");
            return;
        }
        for (size_t i = 0; i < sizeof(rnd); i++)
            snprintf(fresh + 2 * i, 3, "%02x", rnd[i]);
        e = st->ops->ca_registration_code(st, &x->scope, fresh, code, sizeof(code));
    }
    if (e != DRV_OK) {
        api_store_error(x, e, "registration code");
        return;
    }
    api_json(x, 200, json_pack("{s:s}", "registration_code", code));
}
