/*
 * api_oauth.h — private to src/api: the API's OAuth 2.0 access tokens
 * (ADR-0010).  The signing keys in memory, issuing a JWT for a client,
 * verifying one presented as a bearer token, and rotating the key.
 *
 * All of it runs on the API thread, like the rest of drv_api; nothing here
 * locks.
 */
#ifndef DRV_API_API_OAUTH_H
#define DRV_API_API_OAUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "registry/store.h"

/* "aud" of every access token: the API is its only audience. */
#define API_JWT_AUDIENCE "drover-api"
/* "typ" of the JOSE header (RFC 9068 access tokens). */
#define API_JWT_TYPE "at+jwt"
/* Clock skew allowed on exp and nbf, in seconds. */
#define API_JWT_LEEWAY_S 60
/* Longest lifetime api.jwt_ttl_s may give a token, in seconds. */
#define API_JWT_TTL_MAX_S 86400

typedef struct api_oauth api_oauth;

/*
 * Load the signing keys from st (borrowed; it must outlive the result).
 * When no key is active — the first start — an ES256 key is made and
 * stored.  issuer is copied; ttl_s is the lifetime of the tokens issued
 * (1..API_JWT_TTL_MAX_S, else DRV_CONFIG).
 */
drv_err api_oauth_new(drv_store *st, const char *issuer, uint32_t ttl_s, api_oauth **out);
void api_oauth_free(api_oauth *o);

uint32_t api_oauth_ttl(const api_oauth *o);

/* A bearer value shaped like a compact JWS (exactly two dots). */
bool api_oauth_is_jwt(const char *tok, size_t n);

/*
 * Verify an access token: ES256 only, a known key still within its
 * verification window, signature, typ, exp/nbf with API_JWT_LEEWAY_S, iss,
 * aud, and that its client exists in its tenant and is not revoked (one
 * indexed read).  On success *out is the principal: id = client_id, tenant,
 * role and scopes from the token.  False for anything else (the caller
 * answers 401 whatever the reason).
 */
bool api_oauth_authenticate(api_oauth *o, const char *tok, size_t n, drv_token_info *out);

/* An access token for client c, carrying scope (space-separated, may be "");
 * *out is drv_malloc'd. */
drv_err api_oauth_issue(api_oauth *o, const drv_oauth_client *c, const char *scope, char **out);

/* The JSON Web Key Set of the keys that may verify a token now (the active
 * key and the retired ones inside their window): {"keys": [JWK, ...]}. */
drv_err api_oauth_key_set(api_oauth *o, json_t **out);

/* Make a new key the active one; the previous one keeps verifying until every
 * token it signed has expired (now + ttl + leeway).  *kid_out (cap >= 64)
 * gets the new key's id. */
drv_err api_oauth_rotate(api_oauth *o, char *kid_out, size_t cap);

#endif
