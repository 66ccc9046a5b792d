/*
 * api_oauth.c — the API's access tokens: ES256 JWTs issued to OAuth clients
 * (the client credentials grant, h_oauth.c) and accepted as bearer tokens
 * (api.c authenticate), with keys that rotate without downtime (ADR-0010).
 *
 * Keys live in the registry (signing_keys).  This file keeps in memory the
 * active key's private half, for signing, and the public halves of the keys
 * that may still verify: the active one and the retired ones whose window
 * (not_after) has not closed.  A retired key verifies until every token it
 * signed has expired — rotation sets its not_after to now + ttl + leeway —
 * so a rotation never invalidates a token in flight.  A token naming a kid
 * that is not in memory makes the cache reload from the store, at most once
 * a second, so a flood of made-up kids costs no more than one small query a
 * second.
 *
 * The verifier decides the algorithm (ES256), never the token: "none", HMAC
 * and every other "alg" are refused before a key is looked at.  Revocation
 * is checked on every request by one primary-key read of the client, so a
 * revoked client's tokens stop working at once although they are
 * self-contained; a deleted tenant's tokens stop in api.c, as API tokens do.
 */
#include "api/api_oauth.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "api/api_int.h"
#include "api/jwt.h"
#include "core/alloc.h"
#include "core/log.h"
#include "platform/clock.h"

/* Keys kept for verification: one active plus the retired ones still inside
 * their window; rotating more often than this many times per token lifetime
 * drops the oldest window early. */
#define MAX_KEYS 16
/* Least time between two reloads caused by an unknown kid. */
#define RELOAD_MIN_MS 1000

typedef struct cached_key {
    char kid[64];         /* the key id tokens name in their header */
    EVP_PKEY *pub;        /* its public key (owned) */
    int64_t not_after_ms; /* retired: verifies until then; 0 while active */
} cached_key;

struct api_oauth {
    drv_store *store;          /* borrowed: the API's store */
    char *issuer;              /* "iss" of the tokens (api.jwt_issuer) */
    uint32_t ttl_s;            /* lifetime of the tokens (api.jwt_ttl_s) */
    EVP_PKEY *signer;          /* the active key, with its private half (owned) */
    char signer_kid[64];       /* its kid */
    cached_key keys[MAX_KEYS]; /* keys that may verify, newest first */
    size_t nkeys;              /* entries used in keys */
    uint64_t reloaded_ms;      /* monotonic time of the last load of keys */
};

/* -- loading keys -------------------------------------------------------------- */

static void drop_keys(api_oauth *o)
{
    for (size_t i = 0; i < o->nkeys; i++)
        EVP_PKEY_free(o->keys[i].pub);
    memset(o->keys, 0, sizeof(o->keys));
    o->nkeys = 0;
}

/* Re-read the public keys from the store (a key that does not parse is
 * skipped and logged: it verifies nothing). */
static drv_err load_public(api_oauth *o)
{
    drv_signing_key rows[MAX_KEYS];
    size_t n = 0;
    drv_err e = o->store->ops->platform_signing_key_public(o->store, rows, MAX_KEYS, &n);
    o->reloaded_ms = drv_mono_ms();
    if (e != DRV_OK)
        return e;
    drop_keys(o);
    for (size_t i = 0; i < n; i++) {
        json_error_t jerr;
        json_t *jwk = json_loads(rows[i].public_jwk, 0, &jerr);
        cached_key *k = &o->keys[o->nkeys];
        if (jwk && jwt_public_from_jwk(jwk, &k->pub) == DRV_OK) {
            snprintf(k->kid, sizeof(k->kid), "%.*s", (int)sizeof(k->kid) - 1, rows[i].kid);
            k->not_after_ms = rows[i].active ? 0 : rows[i].not_after_ms;
            o->nkeys++;
        } else {
            drv_error("oauth: a stored signing key does not parse; skipped", "kid", rows[i].kid);
        }
        json_decref(jwk);
        drv_signing_key_clear(&rows[i]);
    }
    return DRV_OK;
}

/* Load the active key's private half for signing; DRV_NOTFOUND when no key
 * is active. */
static drv_err load_signer(api_oauth *o)
{
    drv_signing_key k;
    drv_err e = o->store->ops->platform_signing_key_active(o->store, &k);
    if (e != DRV_OK)
        return e;
    EVP_PKEY *key = NULL;
    e = jwt_private_from_pem(k.private_key_pem, &key);
    if (e == DRV_OK) {
        EVP_PKEY_free(o->signer);
        o->signer = key;
        snprintf(o->signer_kid, sizeof(o->signer_kid), "%s", k.kid);
    } else {
        drv_error("oauth: the active signing key does not parse", "kid", k.kid);
        e = DRV_CORRUPT;
    }
    drv_signing_key_clear(&k);
    return e;
}

/* Compact JSON text of j, drv_malloc'd. */
static char *dump(const json_t *j)
{
    size_t n = json_dumpb(j, NULL, 0, JSON_COMPACT);
    char *buf = n ? drv_malloc(n + 1) : NULL;
    if (buf && json_dumpb(j, buf, n, JSON_COMPACT) == n) {
        buf[n] = '\0';
        return buf;
    }
    drv_free(buf);
    return NULL;
}

/* Make a new ES256 key, store it as the active one (retiring the previous
 * one after the longest lifetime of a token it signed), and load it. */
static drv_err add_key(api_oauth *o, char *kid_out, size_t cap)
{
    EVP_PKEY *key = NULL;
    json_t *bare = NULL, *jwk = NULL;
    drv_signing_key k = {.alg = "ES256"};
    char kid[JWT_THUMBPRINT_LEN + 1];
    drv_err e = jwt_es256_generate(&key);
    if (e != DRV_OK)
        goto out;
    e = DRV_NOMEM;
    if (!(bare = jwt_public_jwk(key, NULL)))
        goto out;
    /* The kid is the key's RFC 7638 thumbprint: stable, and derived from the
     * key alone, so two keys never share one. */
    if ((e = jwt_jwk_thumbprint(bare, kid)) != DRV_OK)
        goto out;
    e = DRV_NOMEM;
    if (!(jwk = jwt_public_jwk(key, kid)) || !(k.public_jwk = dump(jwk)))
        goto out;
    if ((e = jwt_private_pem(key, &k.private_key_pem)) != DRV_OK)
        goto out;
    snprintf(k.kid, sizeof(k.kid), "%s", kid);
    int64_t retire = drv_store_now_ms() + ((int64_t)o->ttl_s + API_JWT_LEEWAY_S) * 1000;
    e = o->store->ops->platform_signing_key_add(o->store, &k, retire);
    if (e != DRV_OK)
        goto out;
    drv_info("oauth: new signing key is active", "kid", kid, "alg", "ES256");
    if (kid_out)
        snprintf(kid_out, cap, "%s", kid);
    e = load_signer(o);
    if (e == DRV_OK)
        e = load_public(o);
out:
    drv_signing_key_clear(&k); /* wipes the private key text */
    json_decref(bare);
    json_decref(jwk);
    EVP_PKEY_free(key);
    return e;
}

/* -- life cycle ------------------------------------------------------------------- */

drv_err api_oauth_new(drv_store *st, const char *issuer, uint32_t ttl_s, api_oauth **out)
{
    *out = NULL;
    if (ttl_s < 1 || ttl_s > API_JWT_TTL_MAX_S) {
        char v[24];
        snprintf(v, sizeof(v), "%u", ttl_s);
        drv_error("api.jwt_ttl_s must be 1 to 86400 seconds", "value", v);
        return DRV_CONFIG;
    }
    if (!issuer || !*issuer) {
        drv_error("api.jwt_issuer must not be empty");
        return DRV_CONFIG;
    }
    api_oauth *o = drv_calloc(1, sizeof(*o));
    if (!o)
        return DRV_NOMEM;
    o->store = st;
    o->ttl_s = ttl_s;
    o->issuer = drv_strdup(issuer);
    drv_err e = o->issuer ? load_signer(o) : DRV_NOMEM;
    if (e == DRV_NOTFOUND) /* first start: no key yet */
        e = add_key(o, NULL, 0);
    else if (e == DRV_OK)
        e = load_public(o);
    if (e != DRV_OK) {
        drv_error("oauth: cannot load the signing keys", "error", drv_strerror(e));
        api_oauth_free(o);
        return e;
    }
    *out = o;
    return DRV_OK;
}

void api_oauth_free(api_oauth *o)
{
    if (!o)
        return;
    drop_keys(o);
    EVP_PKEY_free(o->signer);
    drv_free(o->issuer);
    drv_free(o);
}

uint32_t api_oauth_ttl(const api_oauth *o)
{
    return o->ttl_s;
}

drv_err api_oauth_rotate(api_oauth *o, char *kid_out, size_t cap)
{
    return add_key(o, kid_out, cap);
}

drv_err api_oauth_key_set(api_oauth *o, json_t **out)
{
    drv_signing_key rows[MAX_KEYS];
    size_t n = 0;
    *out = NULL;
    /* From the store rather than the cache: the set is small, and a key
     * whose window closed drops out on the minute, without a reload. */
    drv_err e = o->store->ops->platform_signing_key_public(o->store, rows, MAX_KEYS, &n);
    if (e != DRV_OK)
        return e;
    int64_t now = drv_store_now_ms();
    json_t *keys = json_array();
    for (size_t i = 0; i < n; i++) {
        if (keys && (rows[i].active || rows[i].not_after_ms > now)) {
            json_error_t jerr;
            json_t *jwk = json_loads(rows[i].public_jwk, 0, &jerr);
            if (!jwk || json_array_append_new(keys, jwk) != 0) {
                json_decref(keys);
                keys = NULL;
            }
        }
        drv_signing_key_clear(&rows[i]);
    }
    *out = keys ? json_pack("{s:o}", "keys", keys) : NULL;
    return *out ? DRV_OK : DRV_NOMEM;
}

/* -- issuing ---------------------------------------------------------------------- */

drv_err api_oauth_issue(api_oauth *o, const drv_oauth_client *c, const char *scope, char **out)
{
    *out = NULL;
    if (!o->signer)
        return DRV_IO;
    char jti[40];
    if (!api_random_secret("", 16, jti, sizeof(jti)))
        return DRV_IO;
    json_int_t now = (json_int_t)(drv_store_now_ms() / 1000);
    json_t *claims = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:s, s:s, s:s}", "iss",
                               o->issuer, "sub", c->id, "aud", API_JWT_AUDIENCE, "iat", now, "nbf",
                               now, "exp", now + (json_int_t)o->ttl_s, "jti", jti, "client_id",
                               c->id, "tenant", c->tenant, "role", c->role, "scope", scope);
    if (!claims)
        return DRV_NOMEM;
    drv_err e = jwt_sign_es256(o->signer, o->signer_kid, API_JWT_TYPE, claims, out);
    json_decref(claims);
    return e;
}

/* -- verifying -------------------------------------------------------------------- */

bool api_oauth_is_jwt(const char *tok, size_t n)
{
    const char *d1 = memchr(tok, '.', n);
    const char *d2 = d1 ? memchr(d1 + 1, '.', n - (size_t)(d1 + 1 - tok)) : NULL;
    return d2 && !memchr(d2 + 1, '.', n - (size_t)(d2 + 1 - tok));
}

static const cached_key *find_key(const api_oauth *o, const char *kid)
{
    for (size_t i = 0; i < o->nkeys; i++)
        if (strcmp(o->keys[i].kid, kid) == 0)
            return &o->keys[i];
    return NULL;
}

/* A string claim copied into dst[cap]; false when absent, not text, empty or
 * too long. */
static bool claim_str(const json_t *claims, const char *name, char *dst, size_t cap)
{
    json_t *v = json_object_get(claims, name);
    size_t n = json_is_string(v) ? json_string_length(v) : 0;
    if (n == 0 || n >= cap || strlen(json_string_value(v)) != n)
        return false;
    memcpy(dst, json_string_value(v), n + 1);
    return true;
}

bool api_oauth_authenticate(api_oauth *o, const char *tok, size_t n, drv_token_info *out)
{
    memset(out, 0, sizeof(*out));
    jwt_token t;
    if (jwt_parse(tok, n, &t) != DRV_OK)
        return false;
    bool ok = false;
    /* The key fixes the algorithm; the token does not get to choose one.  A
     * "crit" header asks for extensions this verifier does not implement. */
    if (!t.alg || strcmp(t.alg, "ES256") != 0 || !t.typ || strcmp(t.typ, API_JWT_TYPE) != 0 ||
        !t.kid || json_object_get(t.header, "crit"))
        goto out;
    const cached_key *k = find_key(o, t.kid);
    if (!k && drv_mono_ms() - o->reloaded_ms >= RELOAD_MIN_MS) {
        load_public(o);
        k = find_key(o, t.kid);
    }
    int64_t now_ms = drv_store_now_ms();
    if (!k || (k->not_after_ms && now_ms >= k->not_after_ms) || !jwt_verify_es256(k->pub, tok, &t))
        goto out;
    jwt_expect want = {.iss = o->issuer,
                       .aud = API_JWT_AUDIENCE,
                       .now_s = now_ms / 1000,
                       .leeway_s = API_JWT_LEEWAY_S};
    if (jwt_check_claims(t.claims, &want) != DRV_OK)
        goto out;
    json_t *scope = json_object_get(t.claims, "scope");
    size_t scope_len = json_is_string(scope) ? json_string_length(scope) : 0;
    if (!claim_str(t.claims, "sub", out->id, sizeof(out->id)) ||
        !claim_str(t.claims, "tenant", out->tenant, sizeof(out->tenant)) ||
        !claim_str(t.claims, "role", out->role, sizeof(out->role)) ||
        (scope && (!json_is_string(scope) || scope_len >= sizeof(out->scopes))))
        goto out;
    if (scope_len)
        memcpy(out->scopes, json_string_value(scope), scope_len + 1);
    /* The token is only as good as its client: gone, revoked or moved means
     * no (one primary-key read per request). */
    drv_oauth_client c;
    if (o->store->ops->lookup_oauth_client(o->store, out->id, &c) != DRV_OK || c.revoked ||
        strcmp(c.tenant, out->tenant) != 0 || strcmp(c.role, out->role) != 0)
        goto out;
    ok = true;
out:
    jwt_token_clear(&t);
    if (!ok)
        memset(out, 0, sizeof(*out));
    return ok;
}
