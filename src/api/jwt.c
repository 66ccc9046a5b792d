/*
 * jwt.c — compact JWS with ES256 over OpenSSL 3 EVP (contract in jwt.h).
 *
 * The parser is the part that meets the network: it bounds the token
 * (JWT_MAX_LEN), decodes strictly (one encoding per byte string, so a token
 * cannot be re-encoded into a "different" valid one), refuses duplicate JSON
 * member names (two readers of one header must not disagree on "alg"), and
 * allocates only the decoded header and payload.  It is fuzzed by
 * fuzz/fuzz_jwt.c.
 *
 * JWS carries an ECDSA signature as R||S, 32 bytes each (RFC 7518 §3.4);
 * OpenSSL signs and verifies the DER SEQUENCE of two INTEGERs.  The
 * conversion is shared with the device JWTs (registry/device_jwt.h), as is
 * base64url (core/b64.h).
 */
#include "api/jwt.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/b64.h"

/* -- keys ------------------------------------------------------------------------ */

drv_err jwt_es256_generate(EVP_PKEY **out)
{
    *out = EVP_EC_gen("P-256");
    return *out ? DRV_OK : DRV_IO;
}

/* The key is an EC key on P-256. */
static bool is_p256(EVP_PKEY *key)
{
    char group[32];
    return key && EVP_PKEY_is_a(key, "EC") &&
           EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                          NULL) == 1 &&
           (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0);
}

drv_err jwt_private_pem(EVP_PKEY *key, char **out)
{
    *out = NULL;
    if (!is_p256(key))
        return DRV_INVAL;
    BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return DRV_NOMEM;
    drv_err e = DRV_IO;
    char *data = NULL;
    long len = 0;
    if (PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) == 1 &&
        (len = BIO_get_mem_data(b, &data)) > 0) {
        *out = drv_strndup(data, (size_t)len);
        e = *out ? DRV_OK : DRV_NOMEM;
    }
    if (data && len > 0)
        OPENSSL_cleanse(data, (size_t)len); /* the BIO's copy of the private key */
    BIO_free(b);
    return e;
}

drv_err jwt_private_from_pem(const char *pem, EVP_PKEY **out)
{
    *out = NULL;
    if (!pem)
        return DRV_INVAL;
    BIO *b = BIO_new_mem_buf(pem, -1);
    if (!b)
        return DRV_NOMEM;
    EVP_PKEY *key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    if (!is_p256(key)) {
        EVP_PKEY_free(key);
        return DRV_INVAL;
    }
    *out = key;
    return DRV_OK;
}

json_t *jwt_public_jwk(EVP_PKEY *key, const char *kid)
{
    BIGNUM *x = NULL, *y = NULL;
    uint8_t xb[32], yb[32];
    char xs[48], ys[48];
    json_t *jwk = NULL;
    if (!is_p256(key) || EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &x) != 1 ||
        EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &y) != 1 ||
        BN_bn2binpad(x, xb, 32) != 32 || BN_bn2binpad(y, yb, 32) != 32 ||
        !drv_b64url_encode(xb, 32, xs, sizeof(xs)) || !drv_b64url_encode(yb, 32, ys, sizeof(ys)))
        goto out;
    jwk = json_pack("{s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x", xs, "y", ys);
    if (jwk && kid &&
        (json_object_set_new(jwk, "kid", json_string(kid)) != 0 ||
         json_object_set_new(jwk, "alg", json_string("ES256")) != 0 ||
         json_object_set_new(jwk, "use", json_string("sig")) != 0)) {
        json_decref(jwk);
        jwk = NULL;
    }
out:
    BN_free(x);
    BN_free(y);
    return jwk;
}

/* The 32-byte coordinates of an EC P-256 JWK; false when it is not one. */
static bool jwk_coordinates(const json_t *jwk, uint8_t x[32], uint8_t y[32])
{
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    const char *xs = json_string_value(json_object_get(jwk, "x"));
    const char *ys = json_string_value(json_object_get(jwk, "y"));
    size_t xn = 0, yn = 0;
    return kty && crv && xs && ys && strcmp(kty, "EC") == 0 && strcmp(crv, "P-256") == 0 &&
           drv_b64url_decode(xs, strlen(xs), x, 32, &xn) && xn == 32 &&
           drv_b64url_decode(ys, strlen(ys), y, 32, &yn) && yn == 32;
}

drv_err jwt_jwk_thumbprint(const json_t *jwk, char out[JWT_THUMBPRINT_LEN + 1])
{
    uint8_t x[32], y[32], digest[32];
    char xs[48], ys[48], canon[200];
    if (!jwk_coordinates(jwk, x, y))
        return DRV_INVAL;
    /* RFC 7638 §3.2: the required members only, sorted, no whitespace;
     * x and y re-encoded, so the text is canonical whatever was stored. */
    drv_b64url_encode(x, 32, xs, sizeof(xs));
    drv_b64url_encode(y, 32, ys, sizeof(ys));
    int n = snprintf(canon, sizeof(canon),
                     "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", xs, ys);
    unsigned int dn = 0;
    if (n <= 0 || (size_t)n >= sizeof(canon) ||
        EVP_Digest(canon, (size_t)n, digest, &dn, EVP_sha256(), NULL) != 1 || dn != 32)
        return DRV_IO;
    return drv_b64url_encode(digest, 32, out, JWT_THUMBPRINT_LEN + 1) == JWT_THUMBPRINT_LEN
               ? DRV_OK
               : DRV_IO;
}

drv_err jwt_public_from_jwk(const json_t *jwk, EVP_PKEY **out)
{
    uint8_t x[32], y[32], point[65];
    *out = NULL;
    if (!jwk_coordinates(jwk, x, y))
        return DRV_INVAL;
    point[0] = 0x04; /* uncompressed */
    memcpy(point + 1, x, 32);
    memcpy(point + 33, y, 32);
    char group[] = "prime256v1";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point)),
        OSSL_PARAM_construct_end(),
    };
    EVP_PKEY *key = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    bool ok = ctx && EVP_PKEY_fromdata_init(ctx) == 1 &&
              EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) == 1;
    EVP_PKEY_CTX_free(ctx);
    /* A point off the curve must never become a key (invalid-curve attacks). */
    EVP_PKEY_CTX *check = ok ? EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL) : NULL;
    ok = ok && check && EVP_PKEY_public_check(check) == 1;
    EVP_PKEY_CTX_free(check);
    if (!ok) {
        EVP_PKEY_free(key);
        return DRV_INVAL;
    }
    *out = key;
    return DRV_OK;
}

/* -- signing ---------------------------------------------------------------------- */

/* Compact JSON text of j, drv_malloc'd and NUL-terminated; *n its length. */
static char *dump(const json_t *j, size_t *n)
{
    *n = json_dumpb(j, NULL, 0, JSON_COMPACT);
    if (*n == 0)
        return NULL;
    char *buf = drv_malloc(*n + 1);
    if (!buf)
        return NULL;
    if (json_dumpb(j, buf, *n, JSON_COMPACT) != *n) {
        drv_free(buf);
        return NULL;
    }
    buf[*n] = '\0';
    return buf;
}

drv_err jwt_sign_es256(EVP_PKEY *key, const char *kid, const char *typ, const json_t *claims,
                       char **out)
{
    *out = NULL;
    if (!is_p256(key) || !kid || !typ || !json_is_object(claims))
        return DRV_INVAL;
    drv_err e = DRV_NOMEM;
    size_t hn = 0, pn = 0;
    char *h = NULL, *p = NULL, *tok = NULL;
    EVP_MD_CTX *md = NULL;
    json_t *header = json_pack("{s:s, s:s, s:s}", "alg", "ES256", "typ", typ, "kid", kid);
    if (!header || !(h = dump(header, &hn)) || !(p = dump(claims, &pn)))
        goto out;
    /* header "." payload "." 86 characters of signature, NUL */
    size_t cap = (4 * hn + 2) / 3 + (4 * pn + 2) / 3 + 2 + 86 + 1;
    if (!(tok = drv_malloc(cap)))
        goto out;
    size_t o = drv_b64url_encode(h, hn, tok, cap);
    tok[o++] = '.';
    o += drv_b64url_encode(p, pn, tok + o, cap - o);
    size_t signing_len = o;
    uint8_t der[80], raw[JWT_ES256_SIG_LEN];
    size_t dn = sizeof(der);
    e = DRV_IO;
    if (!(md = EVP_MD_CTX_new()) || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
        EVP_DigestSign(md, der, &dn, (const unsigned char *)tok, signing_len) != 1 ||
        !drv_jwt_ecdsa_der_to_raw(der, dn, raw))
        goto out;
    tok[o++] = '.';
    drv_b64url_encode(raw, sizeof(raw), tok + o, cap - o);
    *out = tok;
    tok = NULL;
    e = DRV_OK;
out:
    EVP_MD_CTX_free(md);
    json_decref(header);
    drv_free(h);
    drv_free(p);
    drv_free(tok);
    return e;
}

/* -- parsing and verifying ------------------------------------------------------- */

void jwt_token_clear(jwt_token *t)
{
    if (!t)
        return;
    json_decref(t->header);
    json_decref(t->claims);
    memset(t, 0, sizeof(*t));
}

/* One base64url part that must hold a JSON object. */
static json_t *decode_object(const char *part, size_t n)
{
    if (n == 0)
        return NULL;
    size_t cap = n / 4 * 3 + 3, len = 0;
    uint8_t *buf = drv_malloc(cap);
    if (!buf)
        return NULL;
    json_t *j = NULL;
    if (drv_b64url_decode(part, n, buf, cap, &len)) {
        json_error_t err;
        j = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &err);
        if (j && !json_is_object(j)) {
            json_decref(j);
            j = NULL;
        }
    }
    drv_free(buf);
    return j;
}

drv_err jwt_parse(const char *tok, size_t n, jwt_token *out)
{
    memset(out, 0, sizeof(*out));
    if (!tok)
        return DRV_MALFORMED;
    if (n > JWT_MAX_LEN)
        return DRV_TOOBIG;
    const char *end = tok + n;
    const char *d1 = memchr(tok, '.', n);
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(end - d1 - 1)) : NULL;
    if (!d2 || memchr(d2 + 1, '.', (size_t)(end - d2 - 1)))
        return DRV_MALFORMED;
    out->header = decode_object(tok, (size_t)(d1 - tok));
    out->claims = out->header ? decode_object(d1 + 1, (size_t)(d2 - d1 - 1)) : NULL;
    if (!out->claims || !drv_b64url_decode(d2 + 1, (size_t)(end - d2 - 1), out->sig,
                                           sizeof(out->sig), &out->sig_len)) {
        jwt_token_clear(out);
        return DRV_MALFORMED;
    }
    out->alg = json_string_value(json_object_get(out->header, "alg"));
    out->kid = json_string_value(json_object_get(out->header, "kid"));
    out->typ = json_string_value(json_object_get(out->header, "typ"));
    out->signing_len = (size_t)(d2 - tok);
    return DRV_OK;
}

bool jwt_verify_es256(EVP_PKEY *pub, const char *tok, const jwt_token *t)
{
    uint8_t der[80];
    if (!pub || !tok || t->sig_len != JWT_ES256_SIG_LEN || !is_p256(pub))
        return false;
    size_t dn = drv_jwt_ecdsa_raw_to_der(t->sig, der, sizeof(der));
    if (dn == 0)
        return false;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub) == 1 &&
              EVP_DigestVerify(md, der, dn, (const unsigned char *)tok, t->signing_len) == 1;
    EVP_MD_CTX_free(md);
    return ok;
}

/* A NumericDate claim: absent (*present false), a number, or a type error. */
static bool numeric_date(const json_t *claims, const char *name, bool *present, double *v)
{
    json_t *j = json_object_get(claims, name);
    *present = j != NULL;
    if (!j)
        return true;
    if (!json_is_number(j))
        return false;
    *v = json_number_value(j);
    return true;
}

static bool audience_ok(const json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    size_t i;
    json_t *v;
    json_array_foreach(aud, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), want) == 0)
            return true;
    }
    return false;
}

drv_err jwt_check_claims(const json_t *claims, const jwt_expect *want)
{
    bool has_exp, has_nbf, has_iat;
    double exp = 0, nbf = 0, iat = 0;
    if (!json_is_object(claims) || !numeric_date(claims, "exp", &has_exp, &exp) ||
        !numeric_date(claims, "nbf", &has_nbf, &nbf) ||
        !numeric_date(claims, "iat", &has_iat, &iat) || !has_exp)
        return DRV_MALFORMED;
    double now = (double)want->now_s, leeway = (double)want->leeway_s;
    if (now >= exp + leeway)
        return DRV_DENIED; /* expired */
    if ((has_nbf && nbf > now + leeway) || (has_iat && iat > now + leeway))
        return DRV_DENIED; /* not valid yet, or issued in the future */
    const char *iss = json_string_value(json_object_get(claims, "iss"));
    if (!iss || !want->iss || strcmp(iss, want->iss) != 0)
        return DRV_DENIED;
    if (!want->aud || !audience_ok(json_object_get(claims, "aud"), want->aud))
        return DRV_DENIED;
    return DRV_OK;
}
