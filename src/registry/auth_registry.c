/*
 * auth_registry.c — MQTT authentication and authorisation against the device
 * registry (the broker's drv_auth_ops, src/broker/auth.h).
 *
 * Who may connect:
 *   - a device with a secret: user name "<tenant>/<device>", password the
 *     secret (Argon2id-verified against each live secret credential);
 *   - a device with a signing key: user name "<tenant>/<device>", password a
 *     JWT it signed (ES256 or RS256, audience mqtt.jwt_audience), verified
 *     with each live jwt_key credential (device_jwt.c).  A password that is
 *     not a JWT is tried as a secret; one that is, only as a JWT;
 *   - a device with a client certificate whose SHA-256 fingerprint is
 *     registered (x509 credential): its client id must be the device id, and
 *     a user name, if given, must be "<tenant>/<device>";
 *   - anyone else goes to the static backend (password file, anonymous on
 *     loopback): the platform's own clients and operators, in the global
 *     namespace.
 * A device lands in its tenant's namespace "$T/<tenant>" (ADR-0009): it can
 * never name another tenant's topics.  Within it, its profile's "acl" rules
 * decide (auth_acl.c): read from the registry at CONNECT, compiled, and kept
 * as the session's auth context, so a profile change applies at the device's
 * next CONNECT.  Without a profile, or without a context (a persistent
 * session restored at startup whose device has not reconnected), the default
 * ACL lets a device publish and subscribe only under "devices/<device>/..." —
 * its own telemetry, shadow and command topics (docs/topics.md).
 *
 * Cost: every call runs under the broker lock.  Registry lookups are
 * indexed point queries on a read-only SQLite handle (tens of µs).  Argon2id
 * is slow by design (~20 ms), so a verified (credential, SHA-256 of the
 * password) pair is remembered: a device that reconnects with the same
 * secret is checked in microseconds, and a revoked or expired credential
 * stops matching at once because the live credentials are looked up on
 * every CONNECT.  First connections still pay Argon2 under the lock
 * (noted in the issue; moving it off the lock is the next step).  A JWT
 * that verified is remembered the same way, by its SHA-256 with the
 * credential that verified it, until it expires: a reconnect storm of
 * devices with fresh tokens costs one signature check per token, and the
 * token still stops working the moment its credential is revoked.  Both
 * caches are bounded (CACHE_MAX entries each).
 *
 * Device status: each connect and disconnect of a device is queued (under
 * the broker lock, no I/O) and a writer thread with its own registry handle
 * stores the queue in batches, one transaction each, so a reconnect storm
 * costs one fsync per batch, not per device.  A full queue drops the oldest
 * half and counts it (the newest events decide the status).
 */
#include <argon2.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/failtab.h"
#include "core/hmap.h"
#include "core/log.h"
#include "net/transport.h"
#include "registry/auth_acl.h"
#include "registry/auth_ca.h"
#include "registry/auth_registry.h"
#include "registry/device_jwt.h"

#define MAX_CREDS DRV_STORE_CRED_MAX /* every live credential of a device */
#define CACHE_MAX 100000
#define EVENTS_MAX 16384      /* queued connection events; ~330 B each */
#define AUTH_FAILS_MAX 20     /* failed device logins a peer may have in a minute */
#define AUTH_PEERS_MAX 100000 /* peers whose failures are counted at most */

typedef struct verified {
    drv_hnode h;
    uint8_t pw_sha[32];
    char cred_id[40]; /* the key */
} verified;

/* A JWT that verified, trusted again while unexpired and its credential is live. */
typedef struct jwt_seen {
    drv_hnode h;
    uint8_t sha[32];  /* SHA-256 of the token (the key) */
    char cred_id[40]; /* the jwt_key credential whose key verified it */
    int64_t exp_s;    /* the token's exp claim */
} jwt_seen;

typedef struct reg_auth {
    drv_store *reader;
    /* Zero-touch device creation (ADR-0011): written from the authentication
     * thread only; NULL when it could not be opened (no zero-touch then). */
    drv_store *zt_store;
    char *jwt_audience; /* the "aud" device JWTs must name (mqtt.jwt_audience) */
    drv_hmap jwt_cache; /* verified JWTs (jwt_seen) by SHA-256 of the token */
    /* Failed device logins by peer address (the authentication thread only):
     * AUTH_FAILS_MAX a minute, then refused for the rest of the minute. */
    drv_failtab login_fails;
    const drv_auth_ops *fallback;
    void *fallback_state;
    bool fallback_restricts; /* false: the fallback allows every topic (no ACL) */
    reg_acl_cache *acls;     /* compiled profile ACLs (auth_acl.c) */
    drv_hmap cache;          /* verified secrets by credential id */
    /* Connection events on their way to the registry (see the top). */
    drv_store *writer_store;
    pthread_t writer;
    bool writer_started;
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    drv_device_event *q;
    size_t qlen, qcap;
    uint64_t events_dropped;
    bool stopping;
} reg_auth;

/* "<tenant>/<device>" into its parts; false when it is not of that form. */
static bool split_user(const char *u, char *tenant, size_t tcap, char *device, size_t dcap)
{
    const char *slash = u ? strchr(u, '/') : NULL;
    if (!slash || slash == u || !slash[1] || strchr(slash + 1, '/'))
        return false;
    size_t tl = (size_t)(slash - u), dl = strlen(slash + 1);
    if (tl >= tcap || dl >= dcap)
        return false;
    memcpy(tenant, u, tl);
    tenant[tl] = '\0';
    memcpy(device, slash + 1, dl + 1);
    return true;
}

/* A JSON integer quota as uint32 (0: none / unlimited). */
static uint32_t quota_of(json_t *quotas, const char *name)
{
    json_int_t v = json_integer_value(json_object_get(quotas, name));
    return v > 0 && v <= UINT32_MAX ? (uint32_t)v : (v > 0 ? UINT32_MAX : 0);
}

/* The device is known: put it in its tenant's namespace with the tenant's quotas.
 * Devices of a suspended or deleted tenant may not connect. */
static drv_err set_namespace(reg_auth *a, const char *tenant, drv_auth_result *result)
{
    json_t *t = NULL;
    if (a->reader->ops->platform_tenant_get(a->reader, tenant, &t) != DRV_OK)
        return DRV_AUTH;
    const char *status = json_string_value(json_object_get(t, "status"));
    bool active = status && strcmp(status, "active") == 0;
    json_t *q = json_object_get(t, "quotas");
    result->max_connections = quota_of(q, "connections");
    result->max_msgs_per_sec = quota_of(q, "messages_per_second");
    json_decref(t);
    if (!active)
        return DRV_DENIED;
    int n = snprintf(result->ns, sizeof(result->ns), "$T/%s", tenant);
    return n > 0 && (size_t)n < sizeof(result->ns) ? DRV_OK : DRV_AUTH;
}

static bool cache_hit(reg_auth *a, const char *cred_id, const uint8_t sha[32])
{
    size_t n = strlen(cred_id);
    verified *v =
        (verified *)drv_hmap_get(&a->cache, drv_hash_bytes(cred_id, n, 0), cred_id, (uint32_t)n);
    return v && memcmp(v->pw_sha, sha, 32) == 0;
}

static void cache_put(reg_auth *a, const char *cred_id, const uint8_t sha[32])
{
    size_t n = strlen(cred_id);
    uint64_t h = drv_hash_bytes(cred_id, n, 0);
    verified *v = (verified *)drv_hmap_get(&a->cache, h, cred_id, (uint32_t)n);
    if (!v) {
        if (a->cache.count >= CACHE_MAX || n >= sizeof(v->cred_id))
            return;
        v = drv_calloc(1, sizeof(*v));
        if (!v)
            return;
        memcpy(v->cred_id, cred_id, n + 1);
        v->h.hash = h;
        v->h.key = v->cred_id;
        v->h.klen = (uint32_t)n;
        if (drv_hmap_put(&a->cache, &v->h) != DRV_OK) {
            drv_free(v);
            return;
        }
    }
    memcpy(v->pw_sha, sha, 32);
}

/* Drop the cached JWTs that expired, or all of them; after this the cache has room. */
static void jwt_cache_sweep(reg_auth *a, int64_t now_s, bool all)
{
    size_t bk;
    for (drv_hnode *h = drv_hmap_first(&a->jwt_cache, &bk), *n; h; h = n) {
        n = drv_hmap_next(&a->jwt_cache, h, &bk);
        jwt_seen *v = (jwt_seen *)h;
        if (all || now_s >= v->exp_s + DRV_JWT_LEEWAY_S) {
            drv_hmap_del(&a->jwt_cache, h);
            drv_free(v);
        }
    }
}

/* The cached verification of this token, if it has not expired since. */
static const jwt_seen *jwt_cache_get(reg_auth *a, const uint8_t sha[32], int64_t now_s)
{
    jwt_seen *v = (jwt_seen *)drv_hmap_get(&a->jwt_cache, drv_hash_bytes(sha, 32, 0), sha, 32);
    return v && now_s < v->exp_s + DRV_JWT_LEEWAY_S ? v : NULL;
}

static void jwt_cache_put(reg_auth *a, const uint8_t sha[32], const char *cred_id, int64_t exp_s,
                          int64_t now_s)
{
    uint64_t h = drv_hash_bytes(sha, 32, 0);
    if (drv_hmap_get(&a->jwt_cache, h, sha, 32))
        return;
    if (a->jwt_cache.count >= CACHE_MAX) {
        jwt_cache_sweep(a, now_s, false);
        /* Still full of live tokens: start over rather than scan on every connect. */
        if (a->jwt_cache.count >= CACHE_MAX)
            jwt_cache_sweep(a, now_s, true);
    }
    jwt_seen *v = drv_calloc(1, sizeof(*v));
    if (!v)
        return;
    memcpy(v->sha, sha, 32);
    snprintf(v->cred_id, sizeof(v->cred_id), "%s", cred_id); /* both are id[40] */
    v->exp_s = exp_s;
    v->h.hash = h;
    v->h.key = v->sha;
    v->h.klen = 32;
    if (drv_hmap_put(&a->jwt_cache, &v->h) != DRV_OK)
        drv_free(v);
}

static bool live_jwt_key(const drv_credential *c)
{
    return c->device_active && strcmp(c->kind, "jwt_key") == 0 && c->public_key_pem;
}

/* The password is a JWT (parsed into t): verify it with each live jwt_key credential. */
static drv_err by_jwt(reg_auth *a, const char *tenant, const char *device, drv_credential *creds,
                      size_t n, const drv_jwt *t, const uint8_t sha[32], int64_t now_s)
{
    const char *why = NULL;
    drv_jwt_policy policy = {.audience = a->jwt_audience, .subject = device, .now_s = now_s};
    drv_err e = drv_jwt_check_claims(t, &policy, &why);
    for (size_t i = 0; e == DRV_OK && i < n; i++) {
        if (!live_jwt_key(&creds[i]))
            continue;
        const char *key_why = NULL;
        drv_err v = drv_jwt_verify(t, creds[i].public_key_pem, &key_why);
        if (v == DRV_OK) {
            jwt_cache_put(a, sha, creds[i].id, t->exp, now_s);
            return DRV_OK;
        }
        if (!why || v == DRV_AUTH)
            why = key_why; /* a key that fits says more than one that does not */
    }
    drv_info("device JWT refused", "tenant", tenant, "device", device, "reason",
             why ? why : "the device has no live jwt_key credential");
    return DRV_AUTH;
}

static drv_err by_secret(reg_auth *a, drv_credential *creds, size_t n, const uint8_t *password,
                         size_t password_len, const uint8_t sha[32])
{
    for (size_t i = 0; i < n; i++) {
        drv_credential *c = &creds[i];
        if (!c->device_active || strcmp(c->kind, "secret") != 0 || !c->secret_hash)
            continue;
        if (cache_hit(a, c->id, sha) ||
            argon2id_verify(c->secret_hash, password, password_len) == ARGON2_OK) {
            cache_put(a, c->id, sha);
            return DRV_OK;
        }
    }
    return DRV_AUTH;
}

/* A device's password: a JWT it signed, or else one of its secrets. */
static drv_err by_password(reg_auth *a, const char *tenant, const char *device,
                           const uint8_t *password, size_t password_len)
{
    drv_credential creds[MAX_CREDS];
    size_t n = 0;
    memset(creds, 0, sizeof(creds));
    drv_err e = a->reader->ops->lookup_credentials(a->reader, tenant, device, creds, MAX_CREDS, &n);
    if (e != DRV_OK && e != DRV_NOTFOUND)
        drv_warn("registry lookup failed", "tenant", tenant, "device", device, "error",
                 drv_strerror(e));
    drv_err result = DRV_AUTH;
    if (e != DRV_OK)
        goto out;
    uint8_t sha[32];
    unsigned int shalen = 32;
    EVP_Digest(password, password_len, sha, &shalen, EVP_sha256(), NULL);
    int64_t now_s = drv_store_now_ms() / 1000;
    /* A token seen before needs neither parsing nor a signature check. */
    const jwt_seen *seen = jwt_cache_get(a, sha, now_s);
    for (size_t i = 0; seen && i < n; i++) {
        if (live_jwt_key(&creds[i]) && strcmp(creds[i].id, seen->cred_id) == 0) {
            result = DRV_OK;
            goto out;
        }
    }
    drv_jwt t;
    const char *why = NULL;
    drv_err pe = drv_jwt_parse(password, password_len, &t, &why);
    if (pe == DRV_OK) {
        result = by_jwt(a, tenant, device, creds, n, &t, sha, now_s);
        drv_jwt_clear(&t);
    } else if (pe == DRV_DECLINED) {
        result = by_secret(a, creds, n, password, password_len, sha);
    } else {
        drv_info("device JWT refused", "tenant", tenant, "device", device, "reason",
                 why ? why : drv_strerror(pe));
    }
out:
    for (size_t i = 0; i < n; i++)
        drv_credential_clear(&creds[i]);
    return result;
}

/* The device's profile ACL as the session's context (NULL: the default rule).
 * A lookup that fails refuses the connection: falling back to the default
 * could grant more than the profile allows. */
static drv_err load_acl(reg_auth *a, const char *tenant, const char *device,
                        drv_auth_result *result)
{
    reg_acl *acl = NULL;
    drv_err e = reg_acl_for_device(a->acls, a->reader, tenant, device, &acl);
    if (e != DRV_OK) {
        drv_warn("cannot load the device's ACL", "tenant", tenant, "device", device, "error",
                 drv_strerror(e));
        return e == DRV_NOTFOUND ? DRV_AUTH : DRV_DENIED;
    }
    result->ctx = acl;
    reg_acl_transport(acl, result); /* the profile's transport.mqtt limits */
    return DRV_OK;
}

static drv_err by_certificate(reg_auth *a, const drv_client_identity *who, drv_auth_result *result)
{
    drv_credential c;
    memset(&c, 0, sizeof(c));
    drv_err e = a->reader->ops->lookup_fingerprint(a->reader, who->cert->fingerprint, &c);
    if (e == DRV_NOTFOUND)
        return DRV_DECLINED; /* not a device certificate: maybe an operator's */
    if (e != DRV_OK) {
        drv_credential_clear(&c);
        return DRV_AUTH;
    }
    /* Bound by fingerprint, but not past its own dates: the TLS layer did not
     * check them for an unverified chain (tls.accept_unverified_client_certs). */
    if (!reg_cert_in_date(who->cert)) {
        drv_info("device certificate refused: not valid now (expired or not yet valid)", "tenant",
                 c.tenant, "device", c.device);
        drv_credential_clear(&c);
        return DRV_AUTH;
    }
    /* Nor revoked by the CRL of the tenant's CA that issued it (logged there). */
    if (reg_cert_revoked_in_tenant(a->reader, who->cert, c.tenant)) {
        drv_credential_clear(&c);
        return DRV_AUTH;
    }
    char tenant[64], device[129];
    bool ok = c.device_active && strcmp(who->client_id, c.device) == 0;
    if (ok && who->username)
        ok = split_user(who->username, tenant, sizeof(tenant), device, sizeof(device)) &&
             strcmp(tenant, c.tenant) == 0 && strcmp(device, c.device) == 0;
    drv_err r = ok ? set_namespace(a, c.tenant, result) : DRV_AUTH;
    if (r == DRV_OK)
        r = load_acl(a, c.tenant, c.device, result);
    drv_credential_clear(&c);
    return r;
}

/* The tenant allows zero-touch and has room for one more device? */
static bool zero_touch_allowed(reg_auth *a, const char *tenant)
{
    json_t *t = NULL;
    if (a->reader->ops->platform_tenant_get(a->reader, tenant, &t) != DRV_OK)
        return false;
    bool ok = json_is_true(json_object_get(t, "allow_zero_touch"));
    json_int_t quota = json_integer_value(json_object_get(json_object_get(t, "quotas"), "devices"));
    json_decref(t);
    if (ok && quota > 0) {
        drv_scope sc = {.tenant = tenant};
        int64_t used = 0;
        ok = a->reader->ops->doc_count(a->reader, &sc, DRV_KIND_DEVICE, &used) == DRV_OK &&
             used < quota;
        if (!ok)
            drv_info("zero-touch refused: the tenant's device quota is used up", "tenant", tenant);
    }
    return ok;
}

/* Create device `device` of ca's tenant, bound to the certificate. */
static drv_err provision(reg_auth *a, const drv_device_ca *ca, const char *device,
                         const char *fingerprint)
{
    drv_scope sc = {.tenant = ca->tenant};
    if (ca->profile[0]) {
        json_t *p = NULL;
        drv_err pe = a->reader->ops->doc_get(a->reader, &sc, DRV_KIND_PROFILE, ca->profile, &p);
        json_decref(p);
        if (pe != DRV_OK) {
            drv_warn("zero-touch refused: the CA's profile is gone", "tenant", ca->tenant, "ca",
                     ca->id, "profile", ca->profile);
            return DRV_AUTH;
        }
    }
    json_t *doc = json_pack("{s:s, s:s}", "id", device, "status", "active");
    json_t *detail = json_pack("{s:s, s:s}", "by", "zero-touch", "ca", ca->fingerprint);
    if (doc && ca->profile[0])
        json_object_set_new(doc, "profile", json_string(ca->profile));
    drv_err e = doc && detail ? a->zt_store->ops->device_provision_x509(a->zt_store, &sc, doc,
                                                                        fingerprint, detail)
                              : DRV_NOMEM;
    json_decref(doc);
    json_decref(detail);
    if (e != DRV_OK) {
        drv_warn("zero-touch device creation failed", "tenant", ca->tenant, "device", device,
                 "error", drv_strerror(e));
        return DRV_AUTH;
    }
    drv_info("device created by zero-touch provisioning", "tenant", ca->tenant, "device", device,
             "ca", ca->id);
    return DRV_OK;
}

/* A CA with bind_existing vouches for the CN: an existing, active device
 * that has no live certificate yet is bound to this one (an x509
 * credential), once; a device bound to another certificate stays refused,
 * so a second certificate for the same CN cannot take it over. */
static drv_err bind_existing(reg_auth *a, const drv_device_ca *ca, const char *device,
                             const drv_client_identity *who)
{
    drv_credential creds[DRV_STORE_CRED_MAX];
    size_t n = 0;
    drv_err e = a->reader->ops->lookup_credentials(a->reader, ca->tenant, device, creds,
                                                   DRV_STORE_CRED_MAX, &n);
    bool has_cert = false;
    for (size_t i = 0; i < n; i++) {
        has_cert = has_cert || strcmp(creds[i].kind, "x509") == 0;
        drv_credential_clear(&creds[i]);
    }
    if (e != DRV_OK || has_cert)
        return DRV_AUTH;
    drv_scope sc = {.tenant = ca->tenant};
    json_t *doc = json_pack("{s:s, s:s}", "kind", "x509", "fingerprint", who->cert->fingerprint);
    json_t *cred = NULL;
    e = doc ? a->zt_store->ops->credential_add(a->zt_store, &sc, device, doc, &cred) : DRV_NOMEM;
    json_decref(doc);
    json_decref(cred);
    if (e != DRV_OK) {
        drv_warn("binding a device to its CA certificate failed", "tenant", ca->tenant, "device",
                 device, "error", drv_strerror(e));
        return DRV_AUTH;
    }
    json_t *detail = json_pack("{s:s, s:s, s:s}", "by", "ca", "ca", ca->fingerprint, "fingerprint",
                               who->cert->fingerprint);
    a->zt_store->ops->event_append(a->zt_store, &sc, device, "certificate_bound", 0, detail);
    json_decref(detail);
    drv_info("device bound to a certificate of its tenant's CA", "tenant", ca->tenant, "device",
             device, "ca", ca->id);
    return DRV_OK;
}

/* A certificate from a claim CA: the session may only register a device
 * (docs/provisioning.md).  Any client id; a user name, if given, must be
 * "<tenant>/<client id>". */
static drv_err claim_session(reg_auth *a, const drv_client_identity *who, const drv_device_ca *ca,
                             drv_auth_result *result)
{
    (void)a;
    char tenant[64], device[129];
    if (who->username &&
        (!split_user(who->username, tenant, sizeof(tenant), device, sizeof(device)) ||
         strcmp(tenant, ca->tenant) != 0 || strcmp(device, who->client_id) != 0))
        return DRV_AUTH;
    reg_acl *acl = NULL;
    drv_err e = reg_acl_claim_new(ca->id, who->cert->fingerprint, &acl);
    if (e == DRV_OK)
        e = set_namespace(a, ca->tenant, result);
    if (e != DRV_OK) {
        reg_acl_release(acl);
        return e == DRV_NOMEM ? DRV_NOMEM : DRV_AUTH;
    }
    result->ctx = acl;
    drv_info("claim session: may register a device", "tenant", ca->tenant, "client", who->client_id,
             "ca", ca->id);
    return DRV_OK;
}

/* A certificate not registered by fingerprint and not verified by the TLS
 * layer: trusted only through a CA a tenant registered (auth_ca.c).  Its CN is
 * the device id, which must be the client id.  A device that exists must be
 * bound to this certificate (which the fingerprint lookup already tried), so
 * only an unknown device gets here with a chance: created when the tenant
 * allows zero-touch and the CA provisions automatically. */
static drv_err by_registered_ca(reg_auth *a, const drv_client_identity *who,
                                drv_auth_result *result)
{
    if (who->cert->verified || !who->cert->chain_len)
        return DRV_DECLINED;
    drv_device_ca ca;
    char cn[129];
    memset(&ca, 0, sizeof(ca));
    drv_err e = reg_ca_verify(a->reader, who->cert, &ca, cn, sizeof(cn));
    if (e != DRV_OK)
        return e == DRV_DECLINED ? DRV_DECLINED : DRV_AUTH;
    drv_err r = DRV_AUTH;
    char tenant[64], device[129];
    if (ca.claim) {
        r = claim_session(a, who, &ca, result);
        goto out;
    }
    if (strcmp(who->client_id, cn) != 0) {
        drv_info("device certificate refused: client id is not the certificate's CN", "tenant",
                 ca.tenant, "cn", cn);
        goto out;
    }
    if (who->username &&
        (!split_user(who->username, tenant, sizeof(tenant), device, sizeof(device)) ||
         strcmp(tenant, ca.tenant) != 0 || strcmp(device, cn) != 0))
        goto out;
    drv_scope sc = {.tenant = ca.tenant};
    json_t *d = NULL;
    e = a->reader->ops->doc_get(a->reader, &sc, DRV_KIND_DEVICE, cn, &d);
    const char *status = json_string_value(json_object_get(d, "status"));
    bool active = e == DRV_OK && !(status && strcmp(status, "decommissioned") == 0);
    json_decref(d);
    if (e == DRV_OK) {
        r = ca.bind_existing && active && a->zt_store ? bind_existing(a, &ca, cn, who) : DRV_AUTH;
        if (r == DRV_OK)
            r = set_namespace(a, ca.tenant, result);
        if (r == DRV_OK)
            r = load_acl(a, ca.tenant, cn, result);
        if (r != DRV_OK)
            drv_info("device certificate refused: the device exists and is not bound to it",
                     "tenant", ca.tenant, "device", cn);
        goto out;
    }
    if (e != DRV_NOTFOUND || !a->zt_store)
        goto out;
    if (!ca.auto_provision || !zero_touch_allowed(a, ca.tenant)) {
        drv_info("zero-touch refused: not allowed by the tenant or the CA", "tenant", ca.tenant,
                 "device", cn, "ca", ca.id);
        goto out;
    }
    r = provision(a, &ca, cn, who->cert->fingerprint);
    if (r == DRV_OK)
        r = set_namespace(a, ca.tenant, result);
    if (r == DRV_OK)
        r = load_acl(a, ca.tenant, cn, result);
out:
    drv_device_ca_clear(&ca);
    return r;
}

static drv_err reg_authenticate(void *state, const drv_client_identity *who,
                                const uint8_t *password, size_t password_len, bool has_password,
                                drv_auth_result *result)
{
    reg_auth *a = state;
    if (who->cert && who->cert->present && who->cert->fingerprint[0]) {
        drv_err e = by_certificate(a, who, result);
        if (e == DRV_DECLINED)
            e = by_registered_ca(a, who, result);
        if (e != DRV_DECLINED)
            return e;
    }
    char tenant[64], device[129];
    if (split_user(who->username, tenant, sizeof(tenant), device, sizeof(device))) {
        if (!has_password)
            return DRV_AUTH;
        /* A peer that keeps guessing is refused before it costs another
         * Argon2id (tens of ms of this thread); loopback is exempt (local
         * gateways and tools). */
        const drv_peer *p = who->peer;
        bool counted = p && !p->loopback;
        uint64_t now = (uint64_t)drv_store_now_ms();
        if (counted && drv_failtab_blocked(&a->login_fails, p->family, p->ip, now, NULL)) {
            drv_info("device login refused: too many failures from this address", "tenant", tenant,
                     "device", device);
            return DRV_AUTH;
        }
        drv_err e = by_password(a, tenant, device, password, password_len);
        if (e == DRV_AUTH && counted)
            drv_failtab_failed(&a->login_fails, p->family, p->ip, now);
        if (e == DRV_OK)
            e = set_namespace(a, tenant, result);
        return e == DRV_OK ? load_acl(a, tenant, device, result) : e;
    }
    return a->fallback->authenticate(a->fallback_state, who, password, password_len, has_password,
                                     result);
}

/* The device a namespaced client is: from "<tenant>/<device>", else its client id. */
static const char *device_of(const drv_client_identity *who, char *buf, size_t cap)
{
    char tenant[64];
    if (split_user(who->username, tenant, sizeof(tenant), buf, cap))
        return buf;
    return who->client_id;
}

/* "devices/<device>" followed by the end or by '/', with no wildcard in them. */
static bool own_subtree(const char *topic, const char *device)
{
    static const char root[] = "devices/";
    size_t rl = sizeof(root) - 1, dl = strlen(device);
    if (strncmp(topic, root, rl) != 0 || strncmp(topic + rl, device, dl) != 0)
        return false;
    char next = topic[rl + dl];
    return next == '\0' || next == '/';
}

static drv_err reg_authorize(void *state, const drv_client_identity *who, drv_acl_access access,
                             const char *topic)
{
    reg_auth *a = state;
    if (!who->ns || !who->ns[0]) {
        /* Global clients follow the fallback's rules (none to check without an ACL). */
        return a->fallback_restricts ? a->fallback->authorize(a->fallback_state, who, access, topic)
                                     : DRV_OK;
    }
    char buf[129];
    const char *device = device_of(who, buf, sizeof(buf));
    if (!device)
        return DRV_DENIED;
    if (who->ctx) /* the profile's rules, as of the device's CONNECT */
        return reg_acl_allows(who->ctx, access, topic, device, who->ns + 3) ? DRV_OK : DRV_DENIED;
    return own_subtree(topic, device) ? DRV_OK : DRV_DENIED;
}

static void reg_ctx_release(void *state, void *ctx)
{
    (void)state;
    reg_acl_release(ctx);
}

/* Queue one event for the writer thread (any thread; never blocks on disk). */
static void queue_event(reg_auth *a, const char *tenant, const char *device, const char *kind,
                        const drv_peer *peer, const char *reason)
{
    pthread_mutex_lock(&a->qlock);
    if (a->qlen == a->qcap) {
        size_t cap = a->qcap ? a->qcap * 2 : 64;
        drv_device_event *q = cap <= EVENTS_MAX ? drv_realloc(a->q, cap * sizeof(*q)) : NULL;
        if (q) {
            a->q = q;
            a->qcap = cap;
        } else {
            /* Full: keep the newer half; the newest events decide a device's status. */
            size_t drop = a->qlen / 2;
            memmove(a->q, a->q + drop, (a->qlen - drop) * sizeof(*a->q));
            a->qlen -= drop;
            a->events_dropped += drop;
        }
    }
    if (a->qlen < a->qcap) {
        drv_device_event *ev = &a->q[a->qlen++];
        memset(ev, 0, sizeof(*ev));
        snprintf(ev->tenant, sizeof(ev->tenant), "%s", tenant);
        snprintf(ev->device, sizeof(ev->device), "%s", device);
        ev->kind = kind;
        ev->ts_ms = drv_store_now_ms();
        if (peer)
            drv_peer_format(peer, ev->address);
        snprintf(ev->reason, sizeof(ev->reason), "%s", reason ? reason : "");
        pthread_cond_signal(&a->qcond);
    }
    pthread_mutex_unlock(&a->qlock);
}

static void reg_client_event(void *state, const drv_client_identity *who, bool connected,
                             const char *reason)
{
    reg_auth *a = state;
    if (!a->writer_started || !who->ns || strncmp(who->ns, "$T/", 3) != 0)
        return; /* global clients are not devices */
    const char *ca_id, *claim_fp;
    if (reg_acl_claim(who->ctx, &ca_id, &claim_fp))
        return; /* a claim session is no device (its client id may be anything) */
    char buf[129];
    const char *device = device_of(who, buf, sizeof(buf));
    if (device)
        queue_event(a, who->ns + 3, device, connected ? "connected" : "disconnected", who->peer,
                    reason);
}

void drv_registry_device_event(void *state, const char *tenant, const char *device,
                               const char *kind, const char *reason)
{
    reg_auth *a = state;
    if (a->writer_started)
        queue_event(a, tenant, device, kind, NULL, reason);
}

bool drv_registry_telemetry_of(void *state, const drv_client_identity *who, const uint8_t *topic,
                               size_t len, drv_telemetry_route *out)
{
    (void)state;
    if (!who->ns || strncmp(who->ns, "$T/", 3) != 0)
        return false;
    const char *device = device_of(who, out->device, sizeof(out->device));
    if (!device || strlen(device) >= sizeof(out->device))
        return false;
    if (device != out->device)
        snprintf(out->device, sizeof(out->device), "%s", device);
    out->tenant = who->ns + 3;
    return reg_acl_telemetry(who->ctx, out->device, out->tenant, topic, len, &out->decoder,
                             &out->key);
}

bool drv_registry_claim_of(const drv_client_identity *who, const char **ca_id,
                           const char **claim_fp)
{
    return who->ns && strncmp(who->ns, "$T/", 3) == 0 && reg_acl_claim(who->ctx, ca_id, claim_fp);
}

const char *drv_registry_device_of(const drv_client_identity *who, char *buf, size_t cap)
{
    const char *ca_id, *claim_fp;
    if (!who->ns || strncmp(who->ns, "$T/", 3) != 0 || reg_acl_claim(who->ctx, &ca_id, &claim_fp))
        return NULL; /* a claim session is not a device */
    const char *device = device_of(who, buf, cap);
    if (!device || strlen(device) >= cap)
        return NULL;
    if (device != buf)
        snprintf(buf, cap, "%s", device);
    return buf;
}

drv_err drv_registry_device_decoder(void *state, const char *tenant, const char *device, char *buf,
                                    size_t cap)
{
    reg_auth *a = state;
    drv_scope sc = {.tenant = tenant};
    json_t *dev = NULL, *prof = NULL;
    drv_err e = a->reader->ops->doc_get(a->reader, &sc, DRV_KIND_DEVICE, device, &dev);
    const char *profile = e == DRV_OK ? json_string_value(json_object_get(dev, "profile")) : NULL;
    if (profile && profile[0])
        e = a->reader->ops->doc_get(a->reader, &sc, DRV_KIND_PROFILE, profile, &prof);
    const char *dec = json_string_value(json_object_get(prof, "decoder"));
    if (e == DRV_OK)
        snprintf(buf, cap, "%s", dec && dec[0] ? dec : "json");
    json_decref(prof);
    json_decref(dev);
    return e;
}

/* The writer thread: store queued events in batches until stopped and drained. */
static void *writer_main(void *arg)
{
    reg_auth *a = arg;
    drv_device_event *batch = NULL;
    size_t batch_cap = 0;
    pthread_mutex_lock(&a->qlock);
    for (;;) {
        while (a->qlen == 0 && !a->stopping)
            pthread_cond_wait(&a->qcond, &a->qlock);
        if (a->qlen == 0 && a->stopping)
            break;
        /* Swap the queue out, so the broker never waits for the disk. */
        drv_device_event *q = a->q;
        size_t n = a->qlen, cap = a->qcap;
        a->q = batch;
        a->qcap = batch_cap;
        a->qlen = 0;
        pthread_mutex_unlock(&a->qlock);
        drv_err e = a->writer_store->ops->event_append_batch(a->writer_store, q, n);
        if (e != DRV_OK) {
            char count[24];
            snprintf(count, sizeof(count), "%zu", n);
            drv_warn("cannot store device connection events", "count", count, "error",
                     drv_strerror(e));
        }
        batch = q;
        batch_cap = cap;
        pthread_mutex_lock(&a->qlock);
    }
    pthread_mutex_unlock(&a->qlock);
    drv_free(batch);
    return NULL;
}

/* Registry lookups and credential checks are work; a client for the fallback is
 * as slow as the fallback says. */
static bool reg_slow(void *state, const drv_client_identity *who, bool has_password)
{
    reg_auth *a = state;
    char tenant[64], device[129];
    if ((who->cert && who->cert->present) ||
        split_user(who->username, tenant, sizeof(tenant), device, sizeof(device)))
        return true;
    return !a->fallback->slow || a->fallback->slow(a->fallback_state, who, has_password);
}

static bool reg_restricts(void *state)
{
    (void)state;
    return true; /* devices are always confined to their own topics */
}

static void reg_free(void *state)
{
    reg_auth *a = state;
    if (!a)
        return;
    if (a->writer_started) {
        pthread_mutex_lock(&a->qlock);
        a->stopping = true;
        pthread_cond_signal(&a->qcond);
        pthread_mutex_unlock(&a->qlock);
        pthread_join(a->writer, NULL); /* stores what is still queued */
    }
    drv_free(a->q);
    drv_store_close(a->writer_store);
    drv_store_close(a->zt_store);
    pthread_mutex_destroy(&a->qlock);
    pthread_cond_destroy(&a->qcond);
    size_t bk;
    for (drv_hnode *h = drv_hmap_first(&a->cache, &bk), *n; h; h = n) {
        n = drv_hmap_next(&a->cache, h, &bk);
        drv_free(h);
    }
    drv_hmap_free(&a->cache);
    jwt_cache_sweep(a, 0, true);
    drv_hmap_free(&a->jwt_cache);
    drv_failtab_free(&a->login_fails);
    drv_free(a->jwt_audience);
    reg_acl_cache_free(a->acls);
    drv_store_close(a->reader);
    drv_free(a);
}

const drv_auth_ops drv_registry_auth_ops = {
    .name = "registry",
    .authenticate = reg_authenticate,
    .authorize = reg_authorize,
    .client_event = reg_client_event,
    .slow = reg_slow,
    .restricts = reg_restricts,
    .ctx_release = reg_ctx_release,
    .free = reg_free,
};

drv_err drv_registry_auth_new(const char *registry_path, const char *jwt_audience,
                              const drv_auth_ops *fallback, void *fallback_state, void **out)
{
    if (!jwt_audience || !jwt_audience[0]) {
        drv_error("mqtt.jwt_audience must not be empty");
        return DRV_CONFIG;
    }
    reg_auth *a = drv_calloc(1, sizeof(*a));
    if (!a)
        return DRV_NOMEM;
    a->jwt_audience = drv_strdup(jwt_audience);
    drv_err e = a->jwt_audience ? reg_acl_cache_new(&a->acls) : DRV_NOMEM;
    if (e == DRV_OK)
        e = drv_store_open_reader(registry_path, &a->reader);
    if (e != DRV_OK) {
        reg_acl_cache_free(a->acls);
        drv_free(a->jwt_audience);
        drv_free(a);
        return e;
    }
    a->fallback = fallback;
    a->fallback_state = fallback_state;
    a->fallback_restricts = !fallback->restricts || fallback->restricts(fallback_state);
    drv_hmap_init(&a->cache);
    drv_hmap_init(&a->jwt_cache);
    drv_failtab_init(&a->login_fails, AUTH_FAILS_MAX, 60000, AUTH_PEERS_MAX);
    pthread_mutex_init(&a->qlock, NULL);
    pthread_cond_init(&a->qcond, NULL);
    if (drv_store_open_sqlite(registry_path, &a->writer_store) == DRV_OK) {
        /* Signals stay with the main thread. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        a->writer_started = pthread_create(&a->writer, NULL, writer_main, a) == 0;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    if (!a->writer_started)
        drv_warn("device connection events will not be recorded");
    if (drv_store_open_sqlite(registry_path, &a->zt_store) != DRV_OK)
        drv_warn("zero-touch provisioning is unavailable: cannot open the registry for writing");
    *out = a;
    return DRV_OK;
}
