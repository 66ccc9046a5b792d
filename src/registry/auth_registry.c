/*
 * auth_registry.c — MQTT authentication and authorisation against the device
 * registry (the broker's drv_auth_ops, src/broker/auth.h).
 *
 * Who may connect:
 *   - a device with a secret: user name "<tenant>/<device>", password the
 *     secret (Argon2id-verified against each live secret credential);
 *   - a device with a client certificate whose SHA-256 fingerprint is
 *     registered (x509 credential): its client id must be the device id, and
 *     a user name, if given, must be "<tenant>/<device>";
 *   - anyone else goes to the static backend (password file, anonymous on
 *     loopback): the platform's own clients and operators, in the global
 *     namespace.
 * A device lands in its tenant's namespace "$T/<tenant>" (ADR-0009): it can
 * never name another tenant's topics.  Within it, the default ACL lets a
 * device publish and subscribe only under "devices/<device>/..." — its own
 * telemetry, shadow and command topics (docs/topics.md).
 *
 * Cost: every call runs under the broker lock.  Registry lookups are
 * indexed point queries on a read-only SQLite handle (tens of µs).  Argon2id
 * is slow by design (~20 ms), so a verified (credential, SHA-256 of the
 * password) pair is remembered: a device that reconnects with the same
 * secret is checked in microseconds, and a revoked or expired credential
 * stops matching at once because the live credentials are looked up on
 * every CONNECT.  First connections still pay Argon2 under the lock
 * (noted in the issue; moving it off the lock is the next step).
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
#include "core/hmap.h"
#include "core/log.h"
#include "net/transport.h"
#include "registry/auth_registry.h"

#define MAX_CREDS 8
#define CACHE_MAX 100000
#define EVENTS_MAX 16384 /* queued connection events; ~330 B each */

typedef struct verified {
    drv_hnode h;
    uint8_t pw_sha[32];
    char cred_id[40]; /* the key */
} verified;

typedef struct reg_auth {
    drv_store *reader;
    const drv_auth_ops *fallback;
    void *fallback_state;
    bool fallback_restricts; /* false: the fallback allows every topic (no ACL) */
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

static drv_err set_namespace(const char *tenant, drv_auth_result *result)
{
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

static drv_err by_secret(reg_auth *a, const char *tenant, const char *device,
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
    uint8_t sha[32];
    unsigned int shalen = 32;
    EVP_Digest(password, password_len, sha, &shalen, EVP_sha256(), NULL);
    for (size_t i = 0; e == DRV_OK && i < n && result != DRV_OK; i++) {
        drv_credential *c = &creds[i];
        if (!c->device_active || strcmp(c->kind, "secret") != 0 || !c->secret_hash)
            continue;
        if (cache_hit(a, c->id, sha) ||
            argon2id_verify(c->secret_hash, password, password_len) == ARGON2_OK) {
            cache_put(a, c->id, sha);
            result = DRV_OK;
        }
    }
    for (size_t i = 0; i < n; i++)
        drv_credential_clear(&creds[i]);
    return result;
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
    char tenant[64], device[128];
    bool ok = c.device_active && strcmp(who->client_id, c.device) == 0;
    if (ok && who->username)
        ok = split_user(who->username, tenant, sizeof(tenant), device, sizeof(device)) &&
             strcmp(tenant, c.tenant) == 0 && strcmp(device, c.device) == 0;
    drv_err r = ok ? set_namespace(c.tenant, result) : DRV_AUTH;
    drv_credential_clear(&c);
    return r;
}

static drv_err reg_authenticate(void *state, const drv_client_identity *who,
                                const uint8_t *password, size_t password_len, bool has_password,
                                drv_auth_result *result)
{
    reg_auth *a = state;
    if (who->cert && who->cert->present && who->cert->fingerprint[0]) {
        drv_err e = by_certificate(a, who, result);
        if (e != DRV_DECLINED)
            return e;
    }
    char tenant[64], device[128];
    if (split_user(who->username, tenant, sizeof(tenant), device, sizeof(device))) {
        if (!has_password)
            return DRV_AUTH;
        drv_err e = by_secret(a, tenant, device, password, password_len);
        return e == DRV_OK ? set_namespace(tenant, result) : e;
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
    char buf[128];
    const char *device = device_of(who, buf, sizeof(buf));
    return device && own_subtree(topic, device) ? DRV_OK : DRV_DENIED;
}

static void reg_client_event(void *state, const drv_client_identity *who, bool connected,
                             const char *reason)
{
    reg_auth *a = state;
    if (!a->writer_started || !who->ns || strncmp(who->ns, "$T/", 3) != 0)
        return; /* global clients are not devices */
    char buf[129];
    const char *device = device_of(who, buf, sizeof(buf));
    if (!device)
        return;
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
        snprintf(ev->tenant, sizeof(ev->tenant), "%s", who->ns + 3);
        snprintf(ev->device, sizeof(ev->device), "%s", device);
        ev->kind = connected ? "connected" : "disconnected";
        ev->ts_ms = drv_store_now_ms();
        if (who->peer)
            drv_peer_format(who->peer, ev->address);
        snprintf(ev->reason, sizeof(ev->reason), "%s", reason ? reason : "");
        pthread_cond_signal(&a->qcond);
    }
    pthread_mutex_unlock(&a->qlock);
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
    pthread_mutex_destroy(&a->qlock);
    pthread_cond_destroy(&a->qcond);
    size_t bk;
    for (drv_hnode *h = drv_hmap_first(&a->cache, &bk), *n; h; h = n) {
        n = drv_hmap_next(&a->cache, h, &bk);
        drv_free(h);
    }
    drv_hmap_free(&a->cache);
    drv_store_close(a->reader);
    drv_free(a);
}

const drv_auth_ops drv_registry_auth_ops = {
    .name = "registry",
    .authenticate = reg_authenticate,
    .authorize = reg_authorize,
    .client_event = reg_client_event,
    .restricts = reg_restricts,
    .free = reg_free,
};

drv_err drv_registry_auth_new(const char *registry_path, const drv_auth_ops *fallback,
                              void *fallback_state, void **out)
{
    reg_auth *a = drv_calloc(1, sizeof(*a));
    if (!a)
        return DRV_NOMEM;
    drv_err e = drv_store_open_reader(registry_path, &a->reader);
    if (e != DRV_OK) {
        drv_free(a);
        return e;
    }
    a->fallback = fallback;
    a->fallback_state = fallback_state;
    a->fallback_restricts = !fallback->restricts || fallback->restricts(fallback_state);
    drv_hmap_init(&a->cache);
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
    *out = a;
    return DRV_OK;
}
