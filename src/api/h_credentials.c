/*
 * h_credentials.c — how a device proves who it is on MQTT.
 *
 *   {"kind": "secret", "secret"?: "...", "not_after"?}  — Argon2id-hashed;
 *       generated (and shown once) when not given.
 *   {"kind": "x509", "fingerprint"?: "<sha256 hex>", "certificate_pem"?} —
 *       a client certificate bound by its SHA-256 fingerprint.
 *   {"kind": "jwt_key", "public_key_pem", "not_after"?} — the device signs
 *       JWTs with the matching private key (ES256 or RS256).
 *
 * Rotation: add the new credential, let devices move over, revoke the old
 * one (or give it a "not_after": both work until then — the overlap).
 */
#include <ctype.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <string.h>

#include "api/api_int.h"
#include "broker/auth.h"
#include "core/alloc.h"

/* SHA-256 fingerprint (lower-case hex) of a PEM certificate; false if unreadable. */
static bool cert_fingerprint(const char *pem, char out[65])
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *cert = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    unsigned char md[32];
    unsigned int n = 0;
    bool ok = cert && X509_digest(cert, EVP_sha256(), md, &n) == 1 && n == 32;
    for (unsigned i = 0; ok && i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    X509_free(cert);
    BIO_free(bio);
    return ok;
}

/* An EC P-256 or RSA (>= 2048 bit) public key in PEM.  Only P-256 among the
 * 256-bit curves: ES256 is defined on it (a secp256k1 key would never verify). */
static bool public_key_ok(const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *k = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    char curve[64] = "";
    size_t n = 0;
    bool ok = k && ((EVP_PKEY_base_id(k) == EVP_PKEY_EC &&
                     EVP_PKEY_get_group_name(k, curve, sizeof(curve), &n) == 1 &&
                     (OBJ_sn2nid(curve) == NID_X9_62_prime256v1 ||
                      EC_curve_nist2nid(curve) == NID_X9_62_prime256v1)) ||
                    (EVP_PKEY_base_id(k) == EVP_PKEY_RSA && EVP_PKEY_bits(k) >= 2048));
    EVP_PKEY_free(k);
    BIO_free(bio);
    return ok;
}

static bool hex64(const char *s)
{
    if (strlen(s) != 64)
        return false;
    for (; *s; s++)
        if (!isxdigit((unsigned char)*s))
            return false;
    return true;
}

/*
 * Turn the client's request into what the store keeps: hash the secret,
 * reduce a certificate to its fingerprint.  *secret_out gets a generated
 * secret to show once ("" otherwise).
 */
static bool prepare(api_ctx *x, json_t *in, json_t *rec, char *secret_out, size_t cap)
{
    static const char *const fields[] = {
        "kind", "secret", "fingerprint", "certificate_pem", "public_key_pem", "not_after", NULL};
    secret_out[0] = '\0';
    if (!api_check_fields(x, in, fields) || !api_check_string(x, in, "kind", 16, true))
        return false;
    const char *kind = json_string_value(json_object_get(in, "kind"));
    json_t *na = json_object_get(in, "not_after");
    int64_t na_ms = 0;
    if (na && (!json_is_string(na) || !drv_store_parse_time(json_string_value(na), &na_ms) ||
               na_ms <= drv_store_now_ms())) {
        api_problem(x, 400, "invalid", "\"not_after\" must be an RFC 3339 time in the future");
        return false;
    }
    if (na)
        json_object_set(rec, "not_after", na);
    json_object_set_new(rec, "kind", json_string(kind));
    if (strcmp(kind, "secret") == 0) {
        if (!api_check_string(x, in, "secret", 256, false))
            return false;
        const char *secret = json_string_value(json_object_get(in, "secret"));
        if (secret && strlen(secret) < 16) {
            api_problem(x, 400, "invalid", "a device secret has at least 16 characters");
            return false;
        }
        if (!secret) {
            if (!api_random_secret("", 24, secret_out, cap)) {
                api_problem(x, 500, NULL, "no randomness available");
                return false;
            }
            secret = secret_out;
        }
        char *hash = NULL;
        if (drv_password_hash(secret, &hash) != DRV_OK) {
            api_problem(x, 500, NULL, "cannot hash the secret");
            return false;
        }
        json_object_set_new(rec, "secret_hash", json_string(hash));
        drv_free(hash);
        return true;
    }
    if (strcmp(kind, "x509") == 0) {
        const char *fp = json_string_value(json_object_get(in, "fingerprint"));
        const char *pem = json_string_value(json_object_get(in, "certificate_pem"));
        char computed[65];
        if (pem) {
            if (!cert_fingerprint(pem, computed)) {
                api_problem(x, 400, "invalid", "\"certificate_pem\" is not a PEM certificate");
                return false;
            }
            fp = computed;
        }
        if (!fp || !hex64(fp)) {
            api_problem(x, 400, "invalid",
                        "give \"certificate_pem\" or \"fingerprint\" (SHA-256, 64 hex digits)");
            return false;
        }
        char lower[65];
        for (int i = 0; i < 65; i++)
            lower[i] = (char)tolower((unsigned char)fp[i]);
        json_object_set_new(rec, "fingerprint", json_string(lower));
        return true;
    }
    if (strcmp(kind, "jwt_key") == 0) {
        const char *pem = json_string_value(json_object_get(in, "public_key_pem"));
        if (!pem || !public_key_ok(pem)) {
            api_problem(x, 400, "invalid",
                        "\"public_key_pem\" must be a PEM EC P-256 or RSA (2048+) public key");
            return false;
        }
        json_object_set_new(rec, "public_key_pem", json_string(pem));
        return true;
    }
    api_problem(x, 400, "invalid", "\"kind\" must be secret, x509 or jwt_key");
    return false;
}

void api_credentials_add(api_ctx *x)
{
    const char *device = api_param(x, 1);
    drv_store *st = x->api->store;
    json_t *in, *rec = json_object(), *dev = NULL, *out = NULL;
    char secret[64];
    if (!api_body(x, &in)) {
        json_decref(rec);
        return;
    }
    drv_err e = st->ops->doc_get(st, &x->scope, DRV_KIND_DEVICE, device, &dev);
    if (e != DRV_OK) {
        api_store_error(x, e, "device");
        goto out;
    }
    const char *status = json_string_value(json_object_get(dev, "status"));
    if (status && strcmp(status, "decommissioned") == 0) {
        api_problem(x, 409, "decommissioned", "the device is decommissioned");
        goto out;
    }
    if (!prepare(x, in, rec, secret, sizeof(secret)))
        goto out;
    e = st->ops->credential_add(st, &x->scope, device, rec, &out);
    if (e != DRV_OK) {
        api_store_error(x, e, "credential");
        goto out;
    }
    char path[400];
    snprintf(path, sizeof(path), "/api/v1/tenants/%s/devices/%s/credentials/%s", x->scope.tenant,
             device, json_string_value(json_object_get(out, "id")));
    api_audit(x, "credential.add", path, NULL);
    if (secret[0]) {
        json_object_set_new(out, "secret", json_string(secret));
        drv_http_add_header(x->resp, "Cache-Control", "no-store");
    }
    drv_http_add_header(x->resp, "Location", "%s", path);
    api_json(x, 201, out);
out:
    json_decref(in);
    json_decref(rec);
    json_decref(dev);
}

void api_credentials_list(api_ctx *x)
{
    drv_store *st = x->api->store;
    json_t *dev = NULL, *out = NULL;
    drv_err e = st->ops->doc_get(st, &x->scope, DRV_KIND_DEVICE, api_param(x, 1), &dev);
    json_decref(dev);
    if (e == DRV_OK)
        e = st->ops->credential_list(st, &x->scope, api_param(x, 1), &out);
    if (e != DRV_OK)
        api_store_error(x, e, "device");
    else
        api_json(x, 200, out);
}

void api_credentials_revoke(api_ctx *x)
{
    drv_store *st = x->api->store;
    drv_err e = st->ops->credential_revoke(st, &x->scope, api_param(x, 1), api_param(x, 2));
    if (e != DRV_OK) {
        api_store_error(x, e, "credential");
        return;
    }
    char path[400];
    snprintf(path, sizeof(path), "/api/v1/tenants/%s/devices/%s/credentials/%s", x->scope.tenant,
             api_param(x, 1), api_param(x, 2));
    api_audit(x, "credential.revoke", path, NULL);
    x->resp->status = 204;
}
