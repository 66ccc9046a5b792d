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
 * Not here: proof that the registrant holds the CA's private key (a
 * registration code signed by the CA, as AWS IoT does); see ADR-0011.
 */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <string.h>

#include "api/api_int.h"

#define CA_PEM_MAX 16384

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

/* NULL when pem is a usable CA certificate (facts filled), else why not. */
static const char *parse_ca(const char *pem, ca_facts *f)
{
    const char *why = NULL;
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    unsigned char md[32];
    unsigned int n = 0;
    struct tm tm;
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
        ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1) {
        why = "the certificate cannot be read";
        goto out;
    }
    for (unsigned i = 0; i < 32; i++)
        snprintf(f->fingerprint + 2 * i, 3, "%02x", md[i]);
    strftime(f->not_after, sizeof(f->not_after), "%Y-%m-%dT%H:%M:%S.000Z", &tm);
out:
    ERR_clear_error();
    X509_free(x);
    BIO_free(bio);
    return why;
}

void api_cas_create(api_ctx *x)
{
    static const char *const fields[] = {
        "certificate_pem", "name", "auto_provision", "profile", "purpose", "bind_existing", NULL};
    json_t *doc, *meta = NULL;
    if (!api_body(x, &doc))
        return;
    if (!api_check_fields(x, doc, fields) ||
        !api_check_string(x, doc, "certificate_pem", CA_PEM_MAX, true) ||
        !api_check_string(x, doc, "name", 200, false) ||
        !api_check_string(x, doc, "profile", 128, false))
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
    const char *why = parse_ca(json_string_value(json_object_get(doc, "certificate_pem")), &f);
    if (why) {
        api_problem(x, 400, "invalid", "%s", why);
        goto out;
    }
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
        json_pack("{s:s, s:b}", "fingerprint", f.fingerprint, "auto_provision", json_is_true(ap));
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
