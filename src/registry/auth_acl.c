/*
 * auth_acl.c — device profile ACLs: compiled once per profile version,
 * shared by the sessions of its devices, matched without locks.
 *
 * A compiled ACL (reg_acl) is one allocation: the rules, then their topic
 * templates with each "{device}" turned into the byte 0x01 and each
 * "{tenant}" into 0x02 (control characters, which no valid topic holds, so
 * a marker can never be confused with topic text).  Matching substitutes the
 * ids into a stack buffer and asks the MQTT topic code: a publish must be
 * matched by a publish rule, a subscription filter (or a delivered topic)
 * covered by a subscribe rule.  Ids are [A-Za-z0-9._:-] in the registry;
 * one with '/', '+' or '#' would change a rule's shape, so it matches nothing.
 *
 * Sharing: the cache maps "<tenant>\0<profile>" to the ACL compiled from the
 * profile's latest version seen, and holds one reference to it; each session
 * holds another.  Lookups and replacements run on the authentication thread
 * under the cache's mutex; releases come from broker workers and are one
 * atomic decrement, so neither the per-message path nor a disconnect waits
 * for the mutex.  Once published an ACL never changes, which is what lets
 * authorize read it without a lock.
 */
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/hmap.h"
#include "core/log.h"
#include "mqtt/mqtt.h"
#include "registry/auth_acl.h"

#define MARK_DEVICE '\x01'
#define MARK_TENANT '\x02'
#define RULES_MAX 64         /* profiles allow 32 */
#define TEMPLATE_MAX 1024    /* bytes of one stored template */
#define EXPANDED_MAX 4096    /* a rule with its ids substituted */
#define ACL_CACHE_MAX 100000 /* compiled ACLs kept for reuse */

typedef struct acl_rule {
    const char *tmpl; /* into the ACL's own storage, NUL-terminated, with markers */
    uint16_t len;
    uint8_t access; /* DRV_ACL_READ | DRV_ACL_WRITE bits */
    bool marked;    /* holds a marker: substitute before matching */
} acl_rule;

struct reg_acl {
    atomic_uint refs;
    char decoder[16];       /* the profile's payload decoder ("json" when unset) */
    acl_rule telemetry;     /* the profile's telemetry topic; tmpl NULL: the default */
    int max_qos;            /* transport.mqtt.max_qos, -1: unset */
    uint32_t keepalive_max; /* transport.mqtt.keepalive_max_s, 0: unset */
    char telemetry_store[TEMPLATE_MAX];
    /* A claim session's (docs/provisioning.md): the claim CA that verified
     * its certificate and that certificate's fingerprint; "" otherwise. */
    char claim_ca[40];
    char claim_fp[65];
    uint32_t n;
    acl_rule rules[]; /* then the templates */
};

typedef struct acl_entry {
    drv_hnode h;
    int64_t version; /* of the profile the ACL was compiled from */
    reg_acl *acl;    /* the cache's reference */
    char key[];      /* "<tenant>\0<profile>" */
} acl_entry;

struct reg_acl_cache {
    pthread_mutex_t lock;
    drv_hmap map;
};

/* Template text to stored form: placeholders to markers; false for other braces. */
static bool mark(const char *t, char *out, size_t cap, size_t *len, bool *marked)
{
    size_t o = 0;
    *marked = false;
    for (const char *p = t; *p;) {
        char c = *p;
        if (strncmp(p, "{device}", 8) == 0 || strncmp(p, "{tenant}", 8) == 0) {
            c = p[1] == 'd' ? MARK_DEVICE : MARK_TENANT;
            *marked = true;
            p += 8;
        } else if (c == '{' || c == '}' || c == MARK_DEVICE || c == MARK_TENANT) {
            return false;
        } else {
            p++;
        }
        if (o + 1 >= cap)
            return false;
        out[o++] = c;
    }
    out[o] = '\0';
    *len = o;
    return o > 0;
}

/* A valid filter once ids stand in for the markers (which the UTF-8 check refuses). */
static bool shape_valid(const char *marked, size_t len)
{
    char tmp[TEMPLATE_MAX];
    for (size_t i = 0; i < len; i++)
        tmp[i] = marked[i] == MARK_DEVICE || marked[i] == MARK_TENANT ? 'x' : marked[i];
    return mqtt_topic_filter_valid((const uint8_t *)tmp, len);
}

drv_err reg_acl_compile(json_t *rules, reg_acl **out)
{
    *out = NULL;
    size_t n = json_array_size(rules);
    if (!json_is_array(rules) || n == 0 || n > RULES_MAX)
        return DRV_INVAL;
    /* First pass: validate and size; the templates are copied after the rules. */
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_array_get(rules, i);
        const char *t = json_string_value(json_object_get(r, "topic"));
        if (!t || strlen(t) >= TEMPLATE_MAX)
            return DRV_INVAL;
        bytes += strlen(t) + 1;
    }
    reg_acl *acl = drv_calloc(1, sizeof(*acl) + n * sizeof(acl_rule) + bytes);
    if (!acl)
        return DRV_NOMEM;
    char *store = (char *)&acl->rules[n];
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_array_get(rules, i);
        const char *access = json_string_value(json_object_get(r, "access"));
        const char *t = json_string_value(json_object_get(r, "topic"));
        acl_rule *ru = &acl->rules[i];
        if (!access)
            goto bad;
        if (strcmp(access, "publish") == 0)
            ru->access = DRV_ACL_WRITE;
        else if (strcmp(access, "subscribe") == 0)
            ru->access = DRV_ACL_READ;
        else if (strcmp(access, "both") == 0)
            ru->access = DRV_ACL_READ | DRV_ACL_WRITE;
        else
            goto bad;
        size_t len;
        if (!mark(t, store, strlen(t) + 1, &len, &ru->marked) || !shape_valid(store, len))
            goto bad;
        ru->tmpl = store;
        ru->len = (uint16_t)len;
        store += len + 1;
    }
    acl->n = (uint32_t)n;
    atomic_init(&acl->refs, 1);
    *out = acl;
    return DRV_OK;
bad:
    drv_free(acl);
    return DRV_INVAL;
}

drv_err reg_acl_claim_new(const char *ca_id, const char *claim_fp, reg_acl **out)
{
    *out = NULL;
    if (!ca_id[0] || strlen(ca_id) >= sizeof((*out)->claim_ca) ||
        strlen(claim_fp) >= sizeof((*out)->claim_fp))
        return DRV_INVAL;
    json_t *rules = json_pack("[{s:s, s:s}, {s:s, s:s}]", "access", "publish", "topic",
                              "provisioning/{device}/register", "access", "subscribe", "topic",
                              "provisioning/{device}/#");
    drv_err e = rules ? reg_acl_compile(rules, out) : DRV_NOMEM;
    json_decref(rules);
    if (e == DRV_OK) {
        snprintf((*out)->claim_ca, sizeof((*out)->claim_ca), "%s", ca_id);
        snprintf((*out)->claim_fp, sizeof((*out)->claim_fp), "%s", claim_fp);
    }
    return e;
}

bool reg_acl_claim(const reg_acl *acl, const char **ca_id, const char **claim_fp)
{
    if (!acl || !acl->claim_ca[0])
        return false;
    *ca_id = acl->claim_ca;
    *claim_fp = acl->claim_fp;
    return true;
}

void reg_acl_release(reg_acl *acl)
{
    if (acl && atomic_fetch_sub_explicit(&acl->refs, 1, memory_order_acq_rel) == 1)
        drv_free(acl);
}

static reg_acl *acl_ref(reg_acl *acl)
{
    atomic_fetch_add_explicit(&acl->refs, 1, memory_order_relaxed);
    return acl;
}

/* The rule with the ids in place of the markers, into buf; NULL if it does not fit. */
static const char *expand(const acl_rule *r, const char *device, size_t dl, const char *tenant,
                          size_t tl, char *buf, size_t cap, size_t *len)
{
    if (!r->marked) {
        *len = r->len;
        return r->tmpl;
    }
    size_t o = 0;
    for (size_t i = 0; i < r->len; i++) {
        char c = r->tmpl[i];
        const char *word = c == MARK_DEVICE ? device : c == MARK_TENANT ? tenant : NULL;
        size_t wl = c == MARK_DEVICE ? dl : c == MARK_TENANT ? tl : 1;
        if (o + wl >= cap)
            return NULL;
        memcpy(buf + o, word ? word : &r->tmpl[i], wl);
        o += wl;
    }
    *len = o;
    return buf;
}

/* An id that can stand in a rule without changing its levels or wildcards. */
static bool plain_id(const char *s, size_t len)
{
    return len > 0 && !memchr(s, '/', len) && !memchr(s, '+', len) && !memchr(s, '#', len);
}

bool reg_acl_allows(const reg_acl *acl, drv_acl_access access, const char *topic,
                    const char *device, const char *tenant)
{
    size_t dl = strlen(device), tl = strlen(tenant), ql = strlen(topic);
    if (!plain_id(device, dl) || !plain_id(tenant, tl))
        return false;
    char buf[EXPANDED_MAX];
    for (uint32_t i = 0; i < acl->n; i++) {
        const acl_rule *r = &acl->rules[i];
        if (!(r->access & access))
            continue;
        size_t rl;
        const char *rule = expand(r, device, dl, tenant, tl, buf, sizeof(buf), &rl);
        /* For a topic name, covering is matching (mqtt_filter_covers). */
        if (rule && mqtt_filter_covers((const uint8_t *)rule, rl, (const uint8_t *)topic, ql))
            return true;
    }
    return false;
}

drv_err reg_acl_cache_new(reg_acl_cache **out)
{
    reg_acl_cache *c = drv_calloc(1, sizeof(*c));
    if (!c)
        return DRV_NOMEM;
    pthread_mutex_init(&c->lock, NULL);
    drv_hmap_init(&c->map);
    *out = c;
    return DRV_OK;
}

void reg_acl_cache_free(reg_acl_cache *c)
{
    if (!c)
        return;
    size_t bk;
    for (drv_hnode *h = drv_hmap_first(&c->map, &bk), *n; h; h = n) {
        n = drv_hmap_next(&c->map, h, &bk);
        acl_entry *e = (acl_entry *)h;
        reg_acl_release(e->acl);
        drv_free(e);
    }
    drv_hmap_free(&c->map);
    pthread_mutex_destroy(&c->lock);
    drv_free(c);
}

size_t reg_acl_cache_count(reg_acl_cache *c)
{
    pthread_mutex_lock(&c->lock);
    size_t n = c->map.count;
    pthread_mutex_unlock(&c->lock);
    return n;
}

/* The ACL of this profile version: the cached one, or compiled and cached. */
/* Compile a profile's rules and note its telemetry settings. */
static drv_err compile_profile(json_t *prof, reg_acl **out)
{
    drv_err e = reg_acl_compile(json_object_get(prof, "acl"), out);
    if (e != DRV_OK)
        return e;
    reg_acl *acl = *out;
    const char *dec = json_string_value(json_object_get(prof, "decoder"));
    snprintf(acl->decoder, sizeof(acl->decoder), "%s", dec ? dec : "json");
    json_t *mq = json_object_get(json_object_get(prof, "transport"), "mqtt");
    json_t *q = json_object_get(mq, "max_qos");
    acl->max_qos = json_is_integer(q) ? (int)json_integer_value(q) : -1;
    acl->keepalive_max = (uint32_t)json_integer_value(json_object_get(mq, "keepalive_max_s"));
    const char *topic = json_string_value(json_object_get(prof, "telemetry_topic"));
    size_t len;
    bool marked;
    if (topic && mark(topic, acl->telemetry_store, sizeof(acl->telemetry_store), &len, &marked)) {
        acl->telemetry.tmpl = acl->telemetry_store;
        acl->telemetry.len = (uint16_t)len;
        acl->telemetry.marked = marked;
    }
    return DRV_OK;
}

static drv_err cached(reg_acl_cache *c, const char *tenant, const char *profile, int64_t version,
                      json_t *prof, reg_acl **out)
{
    size_t tl = strlen(tenant), pl = strlen(profile), kl = tl + 1 + pl;
    char key[64 + 1 + 129];
    if (kl >= sizeof(key))
        return compile_profile(prof, out); /* not from the registry's ids: no caching */
    memcpy(key, tenant, tl + 1);
    memcpy(key + tl + 1, profile, pl);
    uint64_t hash = drv_hash_bytes(key, kl, 0);
    pthread_mutex_lock(&c->lock);
    acl_entry *e = (acl_entry *)drv_hmap_get(&c->map, hash, key, (uint32_t)kl);
    if (e && e->version == version) {
        *out = acl_ref(e->acl);
        pthread_mutex_unlock(&c->lock);
        return DRV_OK;
    }
    pthread_mutex_unlock(&c->lock);
    /* Compile outside the lock: only this (authentication) thread fills the cache. */
    reg_acl *acl;
    drv_err err = compile_profile(prof, &acl);
    if (err != DRV_OK)
        return err;
    pthread_mutex_lock(&c->lock);
    e = (acl_entry *)drv_hmap_get(&c->map, hash, key, (uint32_t)kl);
    if (e) {
        /* The profile changed: sessions with the old rules keep them until they reconnect. */
        reg_acl_release(e->acl);
        e->acl = acl_ref(acl);
        e->version = version;
    } else if (c->map.count < ACL_CACHE_MAX && (e = drv_calloc(1, sizeof(*e) + kl)) != NULL) {
        memcpy(e->key, key, kl);
        e->h.hash = hash;
        e->h.key = e->key;
        e->h.klen = (uint32_t)kl;
        e->version = version;
        e->acl = acl_ref(acl);
        if (drv_hmap_put(&c->map, &e->h) != DRV_OK) {
            reg_acl_release(e->acl);
            drv_free(e);
        }
    }
    pthread_mutex_unlock(&c->lock);
    *out = acl;
    return DRV_OK;
}

drv_err reg_acl_for_device(reg_acl_cache *c, drv_store *reader, const char *tenant,
                           const char *device, reg_acl **out)
{
    *out = NULL;
    drv_scope sc = {.tenant = tenant};
    json_t *dev = NULL, *prof = NULL;
    drv_err e = reader->ops->doc_get(reader, &sc, DRV_KIND_DEVICE, device, &dev);
    if (e != DRV_OK)
        return e;
    const char *profile = json_string_value(json_object_get(dev, "profile"));
    if (profile) {
        e = reader->ops->doc_get(reader, &sc, DRV_KIND_PROFILE, profile, &prof);
        json_t *rules = e == DRV_OK ? json_object_get(prof, "acl") : NULL;
        if (rules) {
            json_int_t version = json_integer_value(json_object_get(prof, "version"));
            e = cached(c, tenant, profile, version, prof, out);
        }
        if (e == DRV_INVAL)
            drv_warn("device profile ACL does not compile", "tenant", tenant, "profile", profile);
    }
    json_decref(prof);
    json_decref(dev);
    return e;
}

bool reg_acl_telemetry(const reg_acl *acl, const char *device, const char *tenant,
                       const uint8_t *topic, size_t len, const char **decoder, drv_span *key)
{
    char buf[EXPANDED_MAX];
    size_t dl = strlen(device), tl = strlen(tenant), el;
    const char *want;
    if (acl && acl->telemetry.tmpl) {
        want = expand(&acl->telemetry, device, dl, tenant, tl, buf, sizeof(buf), &el);
    } else {
        el = (size_t)snprintf(buf, sizeof(buf), "devices/%s/telemetry", device);
        want = el < sizeof(buf) ? buf : NULL;
    }
    *decoder = acl ? acl->decoder : "json";
    *key = (drv_span){NULL, 0};
    if (!want)
        return false;
    if (strcmp(*decoder, "numeric") != 0)
        return len == el && memcmp(topic, want, el) == 0;
    /* numeric: one more level, the key */
    if (len <= el + 1 || memcmp(topic, want, el) != 0 || topic[el] != '/' ||
        memchr(topic + el + 1, '/', len - el - 1))
        return false;
    *key = (drv_span){(const char *)topic + el + 1, len - el - 1};
    return true;
}

void reg_acl_transport(const reg_acl *acl, drv_auth_result *result)
{
    if (!acl)
        return;
    if (acl->max_qos >= 0 && acl->max_qos <= 2) {
        result->limit_qos = true;
        result->max_qos = (uint8_t)acl->max_qos;
    }
    if (acl->keepalive_max && acl->keepalive_max <= 65535)
        result->keepalive_max = (uint16_t)acl->keepalive_max;
}
