/*
 * device_jwt.h — verification of the JSON Web Tokens a device signs to
 * connect over MQTT (see device_jwt.c): a compact JWS, ES256 (EC P-256) or
 * RS256 (RSA, 2048 bits or more), checked against a public key registered
 * as the device's jwt_key credential.
 *
 * Three steps, so that a caller can parse once and try several keys:
 *   drv_jwt_parse         — syntax, header and claim types (no crypto);
 *   drv_jwt_check_claims  — time, audience and subject against a policy;
 *   drv_jwt_verify        — the signature, with one public key.
 * Every step answers a static reason string for the log (`why`, may be NULL).
 *
 * Also here: the ES256 signature conversion between JWS's R||S and the DER
 * that OpenSSL verifies, which the REST API's own tokens (api/jwt.c) share.
 *
 * Part of the registry module; it knows nothing of MQTT or of the REST API.
 */
#ifndef DRV_REGISTRY_DEVICE_JWT_H
#define DRV_REGISTRY_DEVICE_JWT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Longest token looked at (an RS256 token with an 8192-bit key fits). */
#define DRV_JWT_MAX 8192
/* Largest signature: RSA 8192 bits. */
#define DRV_JWT_SIG_MAX 1024
/* Clock skew allowed on exp, nbf and iat, in seconds. */
#define DRV_JWT_LEEWAY_S 60
/* Longest lifetime (exp - iat) a device token may have, in seconds. */
#define DRV_JWT_MAX_LIFETIME_S 86400

typedef enum drv_jwt_alg {
    DRV_JWT_ES256 = 1, /* ECDSA P-256 with SHA-256, signature R || S (64 bytes) */
    DRV_JWT_RS256 = 2, /* RSASSA-PKCS1-v1_5 with SHA-256 */
} drv_jwt_alg;

/* A parsed token.  Owns `claims`: release with drv_jwt_clear. */
typedef struct drv_jwt {
    drv_jwt_alg alg;
    const uint8_t *signing_input; /* "<header>.<payload>", borrowed from the token */
    size_t signing_len;           /* its length */
    uint8_t sig[DRV_JWT_SIG_MAX]; /* the decoded signature */
    size_t sig_len;               /* its length */
    int64_t exp;                  /* expiry, seconds since the epoch (required) */
    int64_t iat;                  /* issued at (required) */
    int64_t nbf;                  /* not before; 0 when absent */
    bool has_nbf;                 /* nbf was given */
    json_t *claims;               /* the payload object (aud and sub are read from it) */
} drv_jwt;

/* What the claims must satisfy. */
typedef struct drv_jwt_policy {
    const char *audience; /* "aud" must be it, or an array holding it */
    const char *subject;  /* "sub", when present, must be it; NULL: not checked */
    int64_t now_s;        /* the current time, seconds since the epoch */
} drv_jwt_policy;

/*
 * Parse a compact JWS: three base64url segments (no padding, canonical),
 * a header object whose "alg" is ES256 or RS256 with no "crit", and a
 * payload object with numeric "exp" and "iat", and, if present, numeric
 * "nbf", string "sub", and "aud" a string or an array of strings.  Duplicate
 * member names are refused.  `tok` is borrowed by *out (signing_input).
 *   DRV_OK          *out filled; drv_jwt_clear it.
 *   DRV_DECLINED    not a JWT at all (not three segments, or a first segment
 *                   that is not a JSON object with an "alg" string): the
 *                   password may be something else, e.g. a device secret.
 *   DRV_UNSUPPORTED a JWT with another alg ("none", HS256, ...) or "crit".
 *   DRV_MALFORMED   a JWT that breaks the rules above.
 *   DRV_TOOBIG      longer than DRV_JWT_MAX.
 *   DRV_NOMEM
 * On any error *out holds nothing to free.
 */
drv_err drv_jwt_parse(const uint8_t *tok, size_t len, drv_jwt *out, const char **why);

/*
 * Check the time and identity claims: now < exp + leeway, nbf (if any)
 * <= now + leeway, iat <= now + leeway, 0 < exp - iat <= 24 h, the audience,
 * and the subject.  DRV_OK or DRV_AUTH.
 */
drv_err drv_jwt_check_claims(const drv_jwt *t, const drv_jwt_policy *p, const char **why);

/*
 * Verify the signature with a PEM public key (SubjectPublicKeyInfo).
 *   DRV_OK        the key signed it.
 *   DRV_AUTH      the key fits the alg but did not sign it.
 *   DRV_DECLINED  the key does not fit the alg (an RSA key for ES256, an EC
 *                 key on another curve, RSA under 2048 bits): try another.
 *   DRV_INVAL     the PEM is not a public key.
 *   DRV_NOMEM
 * Leaves OpenSSL's error queue empty (the same thread runs TLS).
 */
drv_err drv_jwt_verify(const drv_jwt *t, const char *public_key_pem, const char **why);

/* Free what a successful drv_jwt_parse holds (safe on a zeroed struct). */
void drv_jwt_clear(drv_jwt *t);

/* -- ES256 signature forms (also used by the API's own tokens, api/jwt.c) ---- */

/* An ES256 signature as JWS carries it: R and S, 32 bytes each, big-endian. */
#define DRV_JWT_ES256_SIG_LEN 64

/* DER ECDSA-Sig-Value (SEQUENCE of INTEGER r, s) to raw R||S; false when der
 * is not exactly one such value or r or s does not fit 32 bytes. */
bool drv_jwt_ecdsa_der_to_raw(const uint8_t *der, size_t n, uint8_t raw[DRV_JWT_ES256_SIG_LEN]);
/* Raw R||S to DER; the DER length, or 0 when it does not fit cap (72 bytes
 * always do) or r or s is zero.  Allocates nothing. */
size_t drv_jwt_ecdsa_raw_to_der(const uint8_t raw[DRV_JWT_ES256_SIG_LEN], uint8_t *der, size_t cap);

#endif
