/*
 * device_jwt.c — JSON Web Tokens signed by devices (RFC 7519 over a compact
 * RFC 7515 JWS), the third way a device proves who it is on MQTT besides a
 * secret and a client certificate (auth_registry.c).
 *
 * The device holds a private key; its public key is registered as a jwt_key
 * credential.  It connects with user name "<tenant>/<device>" and a token
 * as the password.  What is accepted, and nothing else:
 *   - alg ES256 (EC P-256) or RS256 (RSA >= 2048 bits), and it must fit the
 *     key: never "none", never HS* (an HMAC "keyed" with a public key is the
 *     classic confusion attack), no "crit" extensions;
 *   - exp and iat required; exp not passed, iat not in the future, nbf (if
 *     any) reached, each with DRV_JWT_LEEWAY_S of clock skew; a lifetime
 *     exp - iat of at most DRV_JWT_MAX_LIFETIME_S, so a leaked token is not
 *     good for long;
 *   - aud the configured audience (a string, or an array holding it);
 *   - sub, when present, the device id.
 * Encodings are strict: base64url without padding and with zero trailing
 * bits, JSON objects without duplicate members, numbers as NumericDate
 * between 0 and year 9999.  ES256 signatures arrive as R || S (32 bytes
 * each, RFC 7518 §3.4) and are re-encoded as the DER ECDSA-Sig-Value that
 * OpenSSL verifies.
 *
 * Not here: caching verified tokens and choosing the keys to try (the
 * caller's, auth_registry.c), JWE, any other algorithm, "kid"/"jku"/"x5u"
 * (keys come only from the registry, never from the token).
 */
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <string.h>

#include "core/alloc.h"
#include "core/b64.h"
#include "registry/device_jwt.h"

/* 9999-12-31T23:59:59Z: later NumericDates are refused (and sums cannot overflow). */
#define MAX_DATE 253402300799LL
#define P256_COORD 32

static void say(const char **why, const char *reason)
{
    if (why)
        *why = reason;
}

/* Decode a segment and parse it as a JSON object; NULL when it is not one. */
static json_t *segment_object(const uint8_t *s, size_t n, size_t flags, bool *nomem)
{
    size_t cap;
    *nomem = false;
    if (n == 0 || !drv_b64url_decoded_len(n, &cap))
        return NULL;
    uint8_t *buf = drv_malloc(cap ? cap : 1);
    if (!buf) {
        *nomem = true;
        return NULL;
    }
    size_t len = 0;
    json_t *j = NULL;
    if (drv_b64url_decode((const char *)s, n, buf, cap, &len)) {
        json_error_t err;
        j = json_loadb((const char *)buf, len, flags, &err);
        if (j && !json_is_object(j)) {
            json_decref(j);
            j = NULL;
        }
    }
    drv_free(buf);
    return j;
}

/* A NumericDate (RFC 7519 §2): a JSON number of seconds, 0..MAX_DATE, fraction dropped. */
static bool numeric_date(json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0 || i > MAX_DATE)
            return false;
        *out = (int64_t)i;
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d >= 0.0 && d <= (double)MAX_DATE))
            return false;
        *out = (int64_t)d;
        return true;
    }
    return false;
}

/* "aud": a string or a non-empty array of strings. */
static bool audience_ok(json_t *aud)
{
    if (json_is_string(aud))
        return true;
    if (!json_is_array(aud) || json_array_size(aud) == 0)
        return false;
    size_t i;
    json_t *v;
    json_array_foreach(aud, i, v)
    {
        if (!json_is_string(v))
            return false;
    }
    return true;
}

static drv_err parse_header(const uint8_t *s, size_t n, drv_jwt *out, const char **why)
{
    bool nomem;
    json_t *h = segment_object(s, n, JSON_REJECT_DUPLICATES, &nomem);
    if (!h) {
        if (nomem)
            return DRV_NOMEM;
        /* A JWT whose header repeats a member is still a JWT: refuse it, don't
         * try it as a secret. */
        json_t *loose = segment_object(s, n, 0, &nomem);
        bool jwt = loose && json_is_string(json_object_get(loose, "alg"));
        json_decref(loose);
        if (nomem)
            return DRV_NOMEM;
        say(why, jwt ? "duplicate member in the JWT header" : "not a JWT");
        return jwt ? DRV_MALFORMED : DRV_DECLINED;
    }
    drv_err e = DRV_OK;
    const char *alg = json_string_value(json_object_get(h, "alg"));
    if (!alg) {
        say(why, "not a JWT");
        e = DRV_DECLINED;
    } else if (strcmp(alg, "ES256") == 0) {
        out->alg = DRV_JWT_ES256;
    } else if (strcmp(alg, "RS256") == 0) {
        out->alg = DRV_JWT_RS256;
    } else {
        say(why, "JWT alg is not ES256 or RS256");
        e = DRV_UNSUPPORTED;
    }
    if (e == DRV_OK && json_object_get(h, "crit")) {
        say(why, "JWT header has \"crit\" extensions");
        e = DRV_UNSUPPORTED;
    }
    json_decref(h);
    return e;
}

static drv_err parse_claims(const uint8_t *s, size_t n, drv_jwt *out, const char **why)
{
    bool nomem;
    json_t *c = segment_object(s, n, JSON_REJECT_DUPLICATES, &nomem);
    if (!c) {
        say(why, "JWT payload is not a JSON object");
        return nomem ? DRV_NOMEM : DRV_MALFORMED;
    }
    json_t *nbf = json_object_get(c, "nbf"), *sub = json_object_get(c, "sub"),
           *aud = json_object_get(c, "aud");
    const char *bad = NULL;
    if (!numeric_date(json_object_get(c, "exp"), &out->exp))
        bad = "JWT \"exp\" missing or not a NumericDate";
    else if (!numeric_date(json_object_get(c, "iat"), &out->iat))
        bad = "JWT \"iat\" missing or not a NumericDate";
    else if (nbf && !numeric_date(nbf, &out->nbf))
        bad = "JWT \"nbf\" is not a NumericDate";
    else if (sub && !json_is_string(sub))
        bad = "JWT \"sub\" is not a string";
    else if (aud && !audience_ok(aud))
        bad = "JWT \"aud\" is not a string or an array of strings";
    if (bad) {
        say(why, bad);
        json_decref(c);
        return DRV_MALFORMED;
    }
    out->has_nbf = nbf != NULL;
    out->claims = c;
    return DRV_OK;
}

drv_err drv_jwt_parse(const uint8_t *tok, size_t len, drv_jwt *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    say(why, NULL);
    if (len > DRV_JWT_MAX) {
        say(why, "JWT too long");
        return DRV_TOOBIG;
    }
    const uint8_t *d1 = len ? memchr(tok, '.', len) : NULL;
    const uint8_t *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok)) : NULL;
    if (!d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - tok))) {
        say(why, "not a JWT");
        return DRV_DECLINED; /* not three segments (a JWE has five) */
    }
    size_t hlen = (size_t)(d1 - tok), plen = (size_t)(d2 - d1 - 1),
           slen = len - (size_t)(d2 + 1 - tok);
    drv_err e = parse_header(tok, hlen, out, why);
    if (e != DRV_OK)
        goto fail;
    e = parse_claims(d1 + 1, plen, out, why);
    if (e != DRV_OK)
        goto fail;
    if (slen == 0 ||
        !drv_b64url_decode((const char *)d2 + 1, slen, out->sig, sizeof(out->sig), &out->sig_len) ||
        (out->alg == DRV_JWT_ES256 && out->sig_len != 2 * P256_COORD)) {
        say(why, "JWT signature missing or malformed");
        e = DRV_MALFORMED;
        goto fail;
    }
    out->signing_input = tok;
    out->signing_len = (size_t)(d2 - tok);
    return DRV_OK;
fail:
    drv_jwt_clear(out);
    return e;
}

static bool aud_has(json_t *aud, const char *want)
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

drv_err drv_jwt_check_claims(const drv_jwt *t, const drv_jwt_policy *p, const char **why)
{
    const char *bad = NULL;
    json_t *aud = json_object_get(t->claims, "aud"), *sub = json_object_get(t->claims, "sub");
    if (p->now_s >= t->exp + DRV_JWT_LEEWAY_S)
        bad = "JWT expired";
    else if (t->has_nbf && t->nbf > p->now_s + DRV_JWT_LEEWAY_S)
        bad = "JWT not valid yet (nbf)";
    else if (t->iat > p->now_s + DRV_JWT_LEEWAY_S)
        bad = "JWT issued in the future (iat)";
    else if (t->exp <= t->iat)
        bad = "JWT expires before it was issued";
    else if (t->exp - t->iat > DRV_JWT_MAX_LIFETIME_S)
        bad = "JWT lifetime (exp - iat) over 24 hours";
    else if (!aud || !p->audience || !aud_has(aud, p->audience))
        bad = "JWT audience (aud) is not this server's";
    else if (sub && p->subject && strcmp(json_string_value(sub), p->subject) != 0)
        bad = "JWT subject (sub) is not the device";
    say(why, bad);
    return bad ? DRV_AUTH : DRV_OK;
}

/* One DER INTEGER from a big-endian unsigned number; returns the bytes written. */
static size_t der_uint(const uint8_t *v, size_t n, uint8_t *out)
{
    while (n > 1 && v[0] == 0) {
        v++;
        n--;
    }
    bool pad = v[0] & 0x80; /* keep it positive */
    out[0] = 0x02;
    out[1] = (uint8_t)(n + pad);
    out[2] = 0;
    memcpy(out + 2 + pad, v, n);
    return 2 + pad + n;
}

/* Is the big-endian number v[0..n) zero? */
static bool all_zero(const uint8_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (v[i])
            return false;
    return true;
}

/* R || S (32 bytes each) as an ECDSA-Sig-Value: SEQUENCE { INTEGER r, INTEGER s }.
 * At most 2 + 2 * 35 = 72 bytes, so every length fits the short form; the
 * encoding is the one DER allows, as i2d_ECDSA_SIG writes it. */
size_t drv_jwt_ecdsa_raw_to_der(const uint8_t raw[DRV_JWT_ES256_SIG_LEN], uint8_t *der, size_t cap)
{
    uint8_t out[72];
    if (all_zero(raw, P256_COORD) || all_zero(raw + P256_COORD, P256_COORD))
        return 0;
    size_t n = 2;
    n += der_uint(raw, P256_COORD, out + n);
    n += der_uint(raw + P256_COORD, P256_COORD, out + n);
    out[0] = 0x30;
    out[1] = (uint8_t)(n - 2);
    if (n > cap)
        return 0;
    memcpy(der, out, n);
    return n;
}

/* The decoder goes through ECDSA_SIG, whose DER parser is strict, so no
 * hand-written ASN.1 reads input here. */
bool drv_jwt_ecdsa_der_to_raw(const uint8_t *der, size_t n, uint8_t raw[DRV_JWT_ES256_SIG_LEN])
{
    if (!der || n == 0 || n > 256)
        return false;
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)n);
    if (!sig)
        return false;
    const BIGNUM *r = NULL, *s = NULL;
    ECDSA_SIG_get0(sig, &r, &s);
    bool ok = p == der + n && !BN_is_negative(r) && !BN_is_negative(s) &&
              BN_bn2binpad(r, raw, 32) == 32 && BN_bn2binpad(s, raw + 32, 32) == 32;
    ECDSA_SIG_free(sig);
    return ok;
}

/* Does the key fit the algorithm: P-256 for ES256, RSA 2048..8192 for RS256? */
static bool key_fits(EVP_PKEY *k, drv_jwt_alg alg)
{
    if (alg == DRV_JWT_ES256) {
        char name[64];
        size_t n = 0;
        if (EVP_PKEY_get_base_id(k) != EVP_PKEY_EC ||
            EVP_PKEY_get_group_name(k, name, sizeof(name), &n) != 1)
            return false;
        int nid = OBJ_sn2nid(name);
        if (nid == NID_undef)
            nid = EC_curve_nist2nid(name);
        return nid == NID_X9_62_prime256v1;
    }
    return EVP_PKEY_get_base_id(k) == EVP_PKEY_RSA && EVP_PKEY_get_bits(k) >= 2048 &&
           EVP_PKEY_get_size(k) <= DRV_JWT_SIG_MAX;
}

drv_err drv_jwt_verify(const drv_jwt *t, const char *public_key_pem, const char **why)
{
    drv_err e = DRV_INVAL;
    EVP_MD_CTX *md = NULL;
    uint8_t der[72];
    const uint8_t *sig = t->sig;
    size_t sig_len = t->sig_len;
    BIO *bio = BIO_new_mem_buf(public_key_pem, -1);
    EVP_PKEY *k = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    say(why, NULL);
    if (!bio) {
        e = DRV_NOMEM;
        goto out;
    }
    if (!k) {
        say(why, "registered key is not a PEM public key");
        goto out;
    }
    if (!key_fits(k, t->alg)) {
        say(why, "registered key does not fit the JWT alg");
        e = DRV_DECLINED;
        goto out;
    }
    e = DRV_AUTH;
    if (t->alg == DRV_JWT_ES256) {
        sig_len = drv_jwt_ecdsa_raw_to_der(t->sig, der, sizeof(der));
        sig = der;
        if (sig_len == 0) { /* r or s is zero: no signature verifies */
            say(why, "JWT signature does not verify");
            goto out;
        }
    } else if (sig_len != (size_t)EVP_PKEY_get_size(k)) {
        say(why, "JWT signature length does not fit the key");
        goto out;
    }
    md = EVP_MD_CTX_new();
    if (!md || EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k) != 1) {
        e = DRV_NOMEM;
        goto out;
    }
    if (EVP_DigestVerify(md, sig, sig_len, t->signing_input, t->signing_len) == 1)
        e = DRV_OK;
    else
        say(why, "JWT signature does not verify");
out:
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(k);
    BIO_free(bio);
    ERR_clear_error();
    return e;
}

void drv_jwt_clear(drv_jwt *t)
{
    json_decref(t->claims);
    t->claims = NULL;
}
