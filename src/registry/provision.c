/*
 * provision.c — see provision.h.
 *
 * The device proves it holds the key of the certificate it registers by
 * the certificate's own signature (self-signed), as a CSR would; the claim
 * session proves it is a genuine product.  Nothing here signs anything:
 * the platform binds the device to its certificate's fingerprint, exactly
 * as an operator would with an x509 credential.
 */
#include "registry/provision.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

#include "core/ident.h"
#include "core/log.h"

#define PEM_MAX 16384
#define NAME_MAX_LEN 200
#define ATTRS_MAX 64

static int fail(json_t **answer, int code, const char *why)
{
    *answer = json_pack("{s:i, s:s}", "code", code, "message", why);
    return code;
}

static bool key_ok(EVP_PKEY *key)
{
    switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_EC: {
        char group[64] = "";
        size_t gl = 0;
        if (!EVP_PKEY_get_utf8_string_param(key, "group", group, sizeof(group), &gl))
            return false;
        return strcmp(group, "prime256v1") == 0 || strcmp(group, "secp384r1") == 0;
    }
    case EVP_PKEY_RSA:
        return EVP_PKEY_get_bits(key) >= 2048;
    default:
        return false;
    }
}

bool drv_provision_check_cert(const char *pem, const char *device, char fp[65], const char **why)
{
    *why = "certificate_pem is not one PEM certificate";
    size_t n = strlen(pem);
    if (n == 0 || n > PEM_MAX)
        return false;
    BIO *bio = BIO_new_mem_buf(pem, (int)n);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    X509 *extra = x ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    EVP_PKEY *key = x ? X509_get0_pubkey(x) : NULL;
    bool ok = false;
    char cn[256] = "";
    if (!x || extra)
        goto out;
    *why = "the certificate's key is not EC P-256/P-384 or RSA of 2048 bits or more";
    if (!key || !key_ok(key))
        goto out;
    /* Self-signed: issued by itself and signed with its own key. */
    *why = "the certificate is not self-signed by its own key";
    if (X509_check_issued(x, x) != X509_V_OK || X509_verify(x, key) != 1)
        goto out;
    /* A CA flag is not refused: `openssl req -x509` sets it by default, and
     * the platform trusts exactly this certificate, never one it signs. */

    *why = "the certificate is not valid now";
    if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0 ||
        X509_cmp_current_time(X509_get0_notAfter(x)) < 0)
        goto out;
    *why = "the certificate's CN is not the device id";
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn)) < 0 ||
        strcmp(cn, device) != 0)
        goto out;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdl = 0;
    *why = "cannot fingerprint the certificate";
    if (!X509_digest(x, EVP_sha256(), md, &mdl) || mdl != 32)
        goto out;
    for (unsigned i = 0; i < mdl; i++)
        snprintf(fp + 2 * i, 3, "%02x", md[i]);
    ok = true;
    *why = NULL;
out:
    X509_free(extra);
    X509_free(x);
    BIO_free(bio);
    return ok;
}

/* The request's members, checked (borrowed from req). */
typedef struct claim_req {
    const char *template_id, *device, *pem, *name;
    json_t *attributes;
} claim_req;

static bool parse(json_t *req, claim_req *r, const char **why)
{
    static const char *const known[] = {"template", "device_id", "certificate_pem", "name",
                                        "attributes"};
    *why = "the request is a JSON object";
    if (!json_is_object(req))
        return false;
    const char *k;
    json_t *v;
    json_object_foreach(req, k, v)
    {
        bool ok = false;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            ok = ok || strcmp(k, known[i]) == 0;
        *why = "unknown member in the request";
        if (!ok)
            return false;
    }
    r->template_id = json_string_value(json_object_get(req, "template"));
    r->device = json_string_value(json_object_get(req, "device_id"));
    r->pem = json_string_value(json_object_get(req, "certificate_pem"));
    r->name = json_string_value(json_object_get(req, "name"));
    r->attributes = json_object_get(req, "attributes");
    *why = "template, device_id and certificate_pem are required strings";
    if (!r->template_id || !r->device || !r->pem)
        return false;
    *why = "device_id: 1..128 of A-Z a-z 0-9 . _ : -";
    if (!drv_id_valid(r->device))
        return false;
    *why = "name: a string of at most 200 bytes";
    if (json_object_get(req, "name") && (!r->name || strlen(r->name) > NAME_MAX_LEN))
        return false;
    *why = "attributes: an object of at most 64 strings";
    if (r->attributes) {
        if (!json_is_object(r->attributes) || json_object_size(r->attributes) > ATTRS_MAX)
            return false;
        json_object_foreach(r->attributes, k, v) if (!json_is_string(v)) return false;
    }
    return true;
}

/* May this claim session use template t for device d?  0 or a 403. */
static int template_allows(json_t *t, const char *claim_ca, const char *device, const char **why)
{
    const char *ca = json_string_value(json_object_get(t, "claim_ca"));
    const char *prefix = json_string_value(json_object_get(t, "device_id_prefix"));
    json_t *enabled = json_object_get(t, "enabled");
    *why = "the template is disabled";
    if (enabled && !json_is_true(enabled))
        return 403;
    *why = "the template is for another claim CA";
    if (!ca || strcmp(ca, claim_ca) != 0)
        return 403;
    *why = "the device id does not start with the template's device_id_prefix";
    if (prefix && strncmp(device, prefix, strlen(prefix)) != 0)
        return 403;
    return 0;
}

/* The claim CA is still registered (not revoked)?  0 or 403/500. */
static int claim_ca_live(drv_store *st, const drv_scope *sc, const char *id, const char **why)
{
    json_t *ca = NULL;
    drv_err e = st->ops->ca_get(st, sc, id, &ca);
    bool live = e == DRV_OK && json_is_null(json_object_get(ca, "revoked_at"));
    json_decref(ca);
    *why = e == DRV_OK || e == DRV_NOTFOUND ? "the claim CA is revoked" : "the CA cannot be read";
    return live ? 0 : e == DRV_OK || e == DRV_NOTFOUND ? 403 : 500;
}

/* Is there room for one more device in the tenant?  0 or 429/500. */

static int room(drv_store *st, const drv_scope *sc, const char **why)
{
    json_t *t = NULL;
    *why = "the tenant cannot be read";
    if (st->ops->platform_tenant_get(st, sc->tenant, &t) != DRV_OK)
        return 500;
    json_int_t quota = json_integer_value(json_object_get(json_object_get(t, "quotas"), "devices"));
    json_decref(t);
    int64_t used = 0;
    if (quota > 0 && st->ops->doc_count(st, sc, DRV_KIND_DEVICE, &used) != DRV_OK)
        return 500;
    *why = "the tenant's device quota is used up";
    return quota > 0 && used >= quota ? 429 : 0;
}

/* The device exists: registered before with this very certificate? */
static bool already_mine(drv_store *st, const char *tenant, const char *device, const char *fp)
{
    drv_credential c;
    memset(&c, 0, sizeof(c));
    bool mine = st->ops->lookup_fingerprint(st, fp, &c) == DRV_OK &&
                strcmp(c.tenant, tenant) == 0 && strcmp(c.device, device) == 0;
    drv_credential_clear(&c);
    return mine;
}

/* The new device's document: the template's profile, tags and attributes,
 * then the request's name and attributes. */
static json_t *device_doc(json_t *t, const claim_req *r)
{
    json_t *doc = json_pack("{s:s, s:s}", "id", r->device, "status", "active");
    const char *profile = json_string_value(json_object_get(t, "profile"));
    json_t *tags = json_object_get(t, "tags");
    json_t *attrs = json_deep_copy(json_object_get(t, "attributes"));
    if (!attrs)
        attrs = json_object();
    if (!doc || !attrs) {
        json_decref(doc);
        json_decref(attrs);
        return NULL;
    }
    if (r->attributes)
        json_object_update(attrs, r->attributes);
    if (profile && profile[0])
        json_object_set_new(doc, "profile", json_string(profile));
    if (json_is_object(tags))
        json_object_set(doc, "tags", tags);
    if (json_object_size(attrs))
        json_object_set(doc, "attributes", attrs);
    json_decref(attrs);
    if (r->name)
        json_object_set_new(doc, "name", json_string(r->name));
    return doc;
}

static int accepted(json_t **answer, const char *tenant, const char *device, const char *fp)
{
    *answer =
        json_pack("{s:s, s:s, s:s}", "tenant", tenant, "device_id", device, "fingerprint", fp);
    return 200;
}

int drv_provision_claim(drv_store *writer, const char *tenant, const char *claim_ca,
                        const char *claim_fp, const uint8_t *payload, size_t len, json_t **answer)
{
    json_error_t jerr;
    json_t *req = json_loadb((const char *)payload, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *t = NULL, *dev = NULL;
    const char *why = NULL;
    char fp[65];
    claim_req r;
    drv_scope sc = {.tenant = tenant};
    int code;
    if (!parse(req, &r, &why) || !drv_provision_check_cert(r.pem, r.device, fp, &why)) {
        code = fail(answer, 400, why);
        goto out;
    }
    /* Asked again (the answer was lost): the same device with the same key
     * is accepted again, whatever happened to the template since. */
    drv_err e = writer->ops->doc_get(writer, &sc, DRV_KIND_DEVICE, r.device, &dev);
    if (e == DRV_OK) {
        code = already_mine(writer, tenant, r.device, fp)
                   ? accepted(answer, tenant, r.device, fp)
                   : fail(answer, 409, "the device id is taken");
        goto out;
    }
    /* The claim CA may have been revoked while this session stayed open. */
    if ((code = claim_ca_live(writer, &sc, claim_ca, &why)) != 0) {
        fail(answer, code, why);
        goto out;
    }
    e = writer->ops->doc_get(writer, &sc, DRV_KIND_TEMPLATE, r.template_id, &t);
    if (e != DRV_OK) {
        code = fail(answer, e == DRV_NOTFOUND ? 403 : 500,
                    e == DRV_NOTFOUND ? "no such provisioning template"
                                      : "the template cannot be read");
        goto out;
    }
    if ((code = template_allows(t, claim_ca, r.device, &why)) != 0) {
        fail(answer, code, why);
        goto out;
    }
    const char *profile = json_string_value(json_object_get(t, "profile"));
    if (profile && profile[0]) {
        json_t *p = NULL;
        e = writer->ops->doc_get(writer, &sc, DRV_KIND_PROFILE, profile, &p);
        json_decref(p);
        if (e != DRV_OK) {
            code = fail(answer, e == DRV_NOTFOUND ? 403 : 500,
                        "the template's profile cannot be read");
            goto out;
        }
    }
    if ((code = room(writer, &sc, &why)) != 0) {
        fail(answer, code, why);
        goto out;
    }
    json_t *doc = device_doc(t, &r);
    json_t *detail =
        json_pack("{s:s, s:s, s:s}", "by", "claim", "template", r.template_id, "claim", claim_fp);
    e = doc && detail ? writer->ops->device_provision_x509(writer, &sc, doc, fp, detail)
                      : DRV_NOMEM;
    json_decref(doc);
    json_decref(detail);
    if (e == DRV_OK) {
        drv_info("device registered by claim", "tenant", tenant, "device", r.device, "template",
                 r.template_id);
        code = accepted(answer, tenant, r.device, fp);
    } else if (e == DRV_EXISTS) {
        code = fail(answer, 409, "the device id is taken, or the certificate is bound elsewhere");
    } else {
        drv_warn("registration by claim failed", "tenant", tenant, "device", r.device, "error",
                 drv_strerror(e));
        code = fail(answer, 500, "the device could not be stored");
    }
out:
    json_decref(dev);
    json_decref(t);
    json_decref(req);
    return code;
}
