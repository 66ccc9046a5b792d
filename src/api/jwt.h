/*
 * jwt.h — compact JWS (RFC 7515) signed with ES256 (ECDSA P-256 and SHA-256,
 * RFC 7518 §3.4): the API's OAuth access tokens (ADR-0010).
 *
 * What is here: P-256 keys (generation, PKCS#8 PEM, the public JWK of RFC
 * 7517/7518 §6.2 and its RFC 7638 thumbprint), signing a claims object, and
 * the verifier's front end:
 * jwt_parse splits and decodes a token without trusting it, jwt_verify_es256
 * checks the signature, jwt_check_claims the registered time, issuer and
 * audience claims.
 *
 * What is not here: base64url and base64 (core/b64.h) and the two forms of
 * an ECDSA signature (DER for OpenSSL, the raw R||S of JWS), which the
 * device JWTs share (registry/device_jwt.h); choosing the key (the caller picks it by "kid") and
 * deciding that "alg" is ES256 (the caller refuses anything else before it
 * verifies, so "none" and HMAC confusion never reach a key).  Nothing in this
 * file keeps state; every function may run on any thread.  Input from the
 * network is bounded by JWT_MAX_LEN and never reaches an assert.
 */
#ifndef DRV_API_JWT_H
#define DRV_API_JWT_H

#include <jansson.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "registry/device_jwt.h"

/* Longest token jwt_parse accepts (DRV_TOOBIG beyond). */
#define JWT_MAX_LEN 4096
/* An ES256 signature: R and S, 32 bytes each, big-endian. */
#define JWT_ES256_SIG_LEN DRV_JWT_ES256_SIG_LEN
/* Base64url of a SHA-256: the length of an RFC 7638 thumbprint. */
#define JWT_THUMBPRINT_LEN 43

/* -- keys ------------------------------------------------------------------------ */

/* A new P-256 key pair.  Free with EVP_PKEY_free. */
drv_err jwt_es256_generate(EVP_PKEY **out);
/* The private key as PKCS#8 PEM, drv_malloc'd (the caller wipes and frees it). */
drv_err jwt_private_pem(EVP_PKEY *key, char **out);
/* A P-256 private key from PEM (DRV_INVAL for another kind of key). */
drv_err jwt_private_from_pem(const char *pem, EVP_PKEY **out);
/* The public JWK of a P-256 key: {"kty":"EC","crv":"P-256","x","y"}, plus
 * "kid", "alg":"ES256" and "use":"sig" when kid is not NULL.  New reference,
 * or NULL on failure. */
json_t *jwt_public_jwk(EVP_PKEY *key, const char *kid);
/* The RFC 7638 thumbprint of an EC public JWK (its crv, kty, x and y), as
 * base64url in out (JWT_THUMBPRINT_LEN + 1 bytes). */
drv_err jwt_jwk_thumbprint(const json_t *jwk, char out[JWT_THUMBPRINT_LEN + 1]);
/* A P-256 public key from its JWK (kty EC, crv P-256, x and y of 32 bytes
 * each, a point on the curve); DRV_INVAL otherwise. */
drv_err jwt_public_from_jwk(const json_t *jwk, EVP_PKEY **out);

/* -- signing and verifying ------------------------------------------------------- */

/* Sign claims as a compact JWS with header {"alg":"ES256","typ":typ,"kid":kid};
 * *out is the token, drv_malloc'd (the caller frees it). */
drv_err jwt_sign_es256(EVP_PKEY *key, const char *kid, const char *typ, const json_t *claims,
                       char **out);

/* A token split and decoded, not yet trusted. */
typedef struct jwt_token {
    json_t *header;     /* the JOSE header, a JSON object (owned) */
    json_t *claims;     /* the payload, a JSON object (owned) */
    const char *alg;    /* header "alg" (borrowed from header), NULL when absent or not text */
    const char *kid;    /* header "kid", likewise */
    const char *typ;    /* header "typ", likewise */
    size_t signing_len; /* "<header>.<payload>": the first signing_len bytes of the token */
    uint8_t sig[JWT_ES256_SIG_LEN];
    size_t sig_len; /* decoded signature bytes in sig (0 for an empty signature) */
} jwt_token;

/* Split a compact JWS into its three parts and decode them: DRV_OK with *out
 * filled (clear it with jwt_token_clear), DRV_TOOBIG past JWT_MAX_LEN, or
 * DRV_MALFORMED — not three base64url parts, a header or payload that is not
 * a JSON object (duplicate names refused), a signature longer than 64 bytes.
 * *out is cleared on failure. */
drv_err jwt_parse(const char *tok, size_t n, jwt_token *out);
void jwt_token_clear(jwt_token *t);

/* The ES256 signature of a parsed token (tok is the text it was parsed from)
 * holds for pub. */
bool jwt_verify_es256(EVP_PKEY *pub, const char *tok, const jwt_token *t);

/* What jwt_check_claims demands. */
typedef struct jwt_expect {
    const char *iss;  /* "iss" equals it */
    const char *aud;  /* "aud" equals it, or is an array holding it */
    int64_t now_s;    /* the time, in seconds since the epoch */
    int64_t leeway_s; /* clock skew allowed on exp, nbf and iat */
} jwt_expect;

/* DRV_OK when "exp" (required) is after now - leeway, "nbf" (optional) and
 * "iat" (optional) are before now + leeway, and iss and aud match; DRV_DENIED
 * when one of them does not hold; DRV_MALFORMED when one has the wrong type. */
drv_err jwt_check_claims(const json_t *claims, const jwt_expect *want);

#endif
