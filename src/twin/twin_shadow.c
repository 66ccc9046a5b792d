/*
 * twin_shadow.c — shadow requests from devices (MQTT) and applications
 * (REST), one read-modify-write path for both (docs/shadow.md, ADR-0017).
 *
 * A change is optimistic: read the row, apply the patch in memory
 * (shadow_doc.c), write it back only if the stored version is still the one
 * read (the store checks).  Another writer in between (the API thread and
 * the service both write) makes the write fail with DRV_CONFLICT and the
 * change is tried again from a fresh read — unless the caller asked for a
 * version, which is then simply not the current one.
 */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "mqtt/mqtt.h"
#include "twin/twin_int.h"

#define RETRIES 5

typedef enum {
    OP_GET,
    OP_UPDATE,
    OP_DELETE
} shadow_op;

static const char *const op_names[] = {"get", "update", "delete"};

/* ------------------------------------------------------------------------ */
/* Topics                                                                    */

/* "shadow/<op>" or "shadow/name/<name>/<op>": the name (not checked here)
 * and the op. */
static bool parse_topic(const uint8_t *rest, size_t len, char *name, size_t cap, shadow_op *op)
{
    const char *p = (const char *)rest;
    if (len < 7 || memcmp(p, "shadow/", 7) != 0)
        return false;
    p += 7;
    len -= 7;
    name[0] = '\0';
    if (len > 5 && memcmp(p, "name/", 5) == 0) {
        const char *slash = memchr(p + 5, '/', len - 5);
        if (!slash)
            return false;
        size_t n = (size_t)(slash - (p + 5));
        if (n == 0 || n >= cap)
            n = cap - 1; /* too long: cut, and refused as a bad name */
        memcpy(name, p + 5, n);
        name[n] = '\0';
        if (n == 0 || (size_t)(slash - (p + 5)) >= cap)
            name[0] = '$'; /* invalid either way */
        len -= (size_t)(slash + 1 - p);
        p = slash + 1;
    }
    for (int i = 0; i < 3; i++) {
        if (strlen(op_names[i]) == len && memcmp(p, op_names[i], len) == 0) {
            *op = (shadow_op)i;
            return true;
        }
    }
    return false;
}

bool twin_shadow_topic(const uint8_t *rest, size_t len)
{
    char name[DRV_SHADOW_NAME_MAX + 2];
    shadow_op op;
    return parse_topic(rest, len, name, sizeof(name), &op);
}

/* "devices/<device>/shadow/[name/<name>/]<op>[/<suffix>]" into buf. */
static void shadow_topic(char *buf, size_t cap, const char *device, const char *name,
                         const char *op, const char *suffix)
{
    snprintf(buf, cap, "devices/%s/shadow/%s%s%s%s%s", device, name[0] ? "name/" : "", name,
             name[0] ? "/" : "", op, suffix);
}

/* ------------------------------------------------------------------------ */
/* The shared read-modify-write                                              */

/* The shadow as stored now into sh (initialised here); *found false when
 * never written or deleted (sh is then empty at the version it had). */
static drv_err load(drv_twin_store *st, const char *tenant, const char *device, const char *name,
                    drv_shadow *sh, bool *found)
{
    drv_shadow_row row = {0};
    drv_err e = st->ops->shadow_get(st, tenant, device, name, &row);
    *found = false;
    if (e == DRV_OK && !row.deleted && row.stored) {
        e = drv_shadow_from_stored(row.stored, row.version, row.ts_ms, sh);
        *found = e == DRV_OK;
        if (e != DRV_OK) {
            drv_warn("twin: stored shadow unreadable", "tenant", tenant, "device", device, "name",
                     name);
            drv_shadow_init(sh);
        }
    } else {
        drv_err ie = drv_shadow_init(sh); /* sh is always usable (and clearable) */
        if (e == DRV_OK) {
            sh->version = row.version; /* deleted: the version goes on */
            sh->ts_ms = row.ts_ms;
        }
        if (e == DRV_NOTFOUND || e == DRV_OK)
            e = ie;
    }
    drv_shadow_row_clear(&row);
    return e;
}

/* The outcome of a change. */
typedef struct change_out {
    int code;             /* 200, 400, 404, 409, 412, 413, 500 */
    const char *why;      /* static text */
    bool changed;         /* something was written */
    bool desired_changed; /* ... in desired (the device is sent the delta) */
    drv_shadow sh;        /* the shadow after it (initialised whenever code != 500) */
    drv_shadow_update up; /* the parsed request (borrows from it) */
} change_out;

static int refuse(change_out *o, int code, const char *why)
{
    o->code = code;
    o->why = why;
    return code;
}

static int from_err(change_out *o, drv_err e, const char *why)
{
    switch (e) {
    case DRV_CONFLICT:
        return refuse(o, 409, "version conflict: the shadow is at another version");
    case DRV_TOOBIG:
        return refuse(o, 413, "the shadow would be larger than shadow.max_bytes");
    case DRV_INVAL:
        return refuse(o, 400, why ? why : "bad request");
    default:
        drv_warn("twin: shadow not stored", "error", drv_strerror(e));
        return refuse(o, 500, "the shadow could not be stored");
    }
}

/* May the device have one more named shadow? */
static int room_for(drv_twin_store *st, const char *tenant, const char *device, const char *name,
                    bool found, change_out *o)
{
    if (found || !name[0])
        return 0;
    int64_t n = 0;
    drv_err e = st->ops->shadow_count(st, tenant, device, &n);
    if (e != DRV_OK)
        return from_err(o, e, NULL);
    /* The classic shadow is counted by shadow_count too when it exists. */
    drv_shadow_row row = {0};
    bool classic = st->ops->shadow_get(st, tenant, device, "", &row) == DRV_OK && !row.deleted;
    drv_shadow_row_clear(&row);
    if (n - (classic ? 1 : 0) >= TWIN_MAX_NAMED)
        return refuse(o, 413, "a device has at most 32 named shadows");
    return 0;
}

/* Apply the update request `req` (if_match > 0: REST's If-Match) and write
 * it; o->code says how it went. */
static int update_shadow(drv_twin *tw, drv_twin_store *st, const char *tenant, const char *device,
                         const char *name, json_t *req, int64_t if_match, const drv_twin_actor *who,
                         change_out *o)
{
    const char *why = NULL;
    if (drv_shadow_parse_update(req, &o->up, &why) != DRV_OK)
        return refuse(o, 400, why);
    for (int attempt = 0; attempt < RETRIES; attempt++) {
        drv_shadow_clear(&o->sh);
        bool found;
        drv_err e = load(st, tenant, device, name, &o->sh, &found);
        if (e != DRV_OK)
            return from_err(o, e, NULL);
        if (if_match > 0 && o->sh.version != if_match)
            return refuse(o, 412, "If-Match does not match the shadow's version");
        if (room_for(st, tenant, device, name, found, o))
            return o->code;
        json_t *before = json_incref(o->sh.desired);
        e = drv_shadow_apply(&o->sh, &o->up, twin_now_ms(), tw->cfg.shadow_max_bytes, &o->changed,
                             &why);
        o->desired_changed = o->changed && !json_equal(before, o->sh.desired);
        json_decref(before);
        if (e != DRV_OK)
            return from_err(o, e, why);
        if (!o->changed)
            return o->code = 200;
        json_t *stored = drv_shadow_to_stored(&o->sh);
        drv_shadow_change ch = {
            .version = o->sh.version,
            .ts_ms = o->sh.ts_ms,
            .actor = who->actor,
            .source = who->source,
            .op = "update",
            .desired = o->up.desired,
            .reported = o->up.reported,
        };
        e = stored ? st->ops->shadow_put(st, tenant, device, name, stored, &ch) : DRV_NOMEM;
        json_decref(stored);
        if (e == DRV_CONFLICT && !o->up.expected_version && if_match <= 0)
            continue; /* someone else wrote in between: again, from a fresh read */
        if (e != DRV_OK)
            return from_err(o, e, NULL);
        atomic_fetch_add_explicit(&tw->stats.shadow_updates, 1, memory_order_relaxed);
        return o->code = 200;
    }
    return refuse(o, 409, "the shadow kept changing: try again");
}

static int remove_shadow(drv_twin *tw, drv_twin_store *st, const char *tenant, const char *device,
                         const char *name, int64_t expected, int64_t if_match,
                         const drv_twin_actor *who, change_out *o)
{
    for (int attempt = 0; attempt < RETRIES; attempt++) {
        drv_shadow_clear(&o->sh);
        bool found;
        drv_err e = load(st, tenant, device, name, &o->sh, &found);
        if (e != DRV_OK)
            return from_err(o, e, NULL);
        if (!found)
            return refuse(o, 404, "no such shadow");
        if (if_match > 0 && o->sh.version != if_match)
            return refuse(o, 412, "If-Match does not match the shadow's version");
        if (expected > 0 && o->sh.version != expected)
            return refuse(o, 409, "version conflict: the shadow is at another version");
        o->sh.version++;
        o->sh.ts_ms = twin_now_ms();
        drv_shadow_change ch = {
            .version = o->sh.version,
            .ts_ms = o->sh.ts_ms,
            .actor = who->actor,
            .source = who->source,
            .op = "delete",
        };
        e = st->ops->shadow_put(st, tenant, device, name, NULL, &ch);
        if (e == DRV_CONFLICT && expected <= 0 && if_match <= 0)
            continue;
        if (e != DRV_OK)
            return from_err(o, e, NULL);
        o->changed = true;
        atomic_fetch_add_explicit(&tw->stats.shadow_updates, 1, memory_order_relaxed);
        return o->code = 200;
    }
    return refuse(o, 409, "the shadow kept changing: try again");
}

/* ------------------------------------------------------------------------ */
/* What a change tells devices and applications                              */

static json_t *state_of(const drv_shadow_update *up)
{
    json_t *s = json_object();
    if (up->desired)
        json_object_set(s, "desired", up->desired);
    if (up->reported)
        json_object_set(s, "reported", up->reported);
    return s;
}

/* The delta message, or NULL when the delta is empty. */
static json_t *delta_message(const drv_shadow *sh)
{
    json_t *delta = drv_shadow_delta(sh);
    if (!delta || json_object_size(delta) == 0) {
        json_decref(delta);
        return NULL;
    }
    json_t *m = json_object();
    json_object_set_new(m, "state", delta);
    json_object_set_new(m, "metadata", drv_shadow_meta_of(delta, sh->meta_desired));
    json_object_set_new(m, "version", json_integer(sh->version));
    json_object_set_new(m, "timestamp", json_integer(sh->ts_ms));
    return m;
}

/* After an update was written: the device's delta, and the live event. */
static void announce_update(drv_twin *tw, twin_batch *b, const char *tenant, const char *device,
                            const char *name, const drv_twin_actor *who, const change_out *o)
{
    if (o->desired_changed) {
        json_t *dm = delta_message(&o->sh);
        if (dm) {
            char topic[512];
            shadow_topic(topic, sizeof(topic), device, name, "update", "/delta");
            twin_batch_publish(b, tenant, topic, dm);
            json_decref(dm);
        }
    }
    json_t *d = json_object();
    json_object_set_new(d, "name", json_string(name[0] ? name : "classic"));
    json_object_set_new(d, "version", json_integer(o->sh.version));
    json_object_set_new(d, "actor", json_string(who->actor));
    json_object_set_new(d, "state", state_of(&o->up));
    json_t *delta = drv_shadow_delta(&o->sh);
    json_object_set_new(d, "delta", delta ? delta : json_object());
    twin_batch_event(tw, b, "shadow.updated", tenant, device, o->sh.ts_ms, d);
    json_decref(d);
}

static void announce_delete(drv_twin *tw, twin_batch *b, const char *tenant, const char *device,
                            const char *name, const drv_twin_actor *who, const change_out *o)
{
    json_t *d = json_object();
    json_object_set_new(d, "name", json_string(name[0] ? name : "classic"));
    json_object_set_new(d, "version", json_integer(o->sh.version));
    json_object_set_new(d, "actor", json_string(who->actor));
    twin_batch_event(tw, b, "shadow.deleted", tenant, device, o->sh.ts_ms, d);
    json_decref(d);
}

/* ------------------------------------------------------------------------ */
/* Devices                                                                   */

static void answer(twin_batch *b, const in_item *it, const char *outcome, json_t *msg,
                   const char *token)
{
    if (token && !json_object_get(msg, "client_token"))
        json_object_set_new(msg, "client_token", json_string(token));
    /* The request's own topic and the outcome: right even for a name the
     * service refused (it came from a valid topic level). */
    size_t cap = 8 + strlen(it->device) + 1 + it->rest_len + 1 + strlen(outcome) + 1;
    char *topic = drv_malloc(cap);
    if (!topic)
        return;
    snprintf(topic, cap, "devices/%s/%s/%s", it->device, (const char *)it->rest, outcome);
    twin_batch_publish(b, it->tenant, topic, msg);
    drv_free(topic);
}

static void reject(drv_twin *tw, twin_batch *b, const in_item *it, int code, const char *why,
                   const char *token)
{
    json_t *m = json_object();
    json_object_set_new(m, "code", json_integer(code));
    json_object_set_new(m, "message", json_string(why ? why : ""));
    answer(b, it, "rejected", m, token);
    json_decref(m);
    atomic_fetch_add_explicit(&tw->stats.shadow_rejected, 1, memory_order_relaxed);
}

void twin_shadow_message(drv_twin *tw, twin_batch *b, const in_item *it)
{
    char name[DRV_SHADOW_NAME_MAX + 2];
    shadow_op op;
    if (!parse_topic(it->rest, it->rest_len, name, sizeof(name), &op))
        return;
    json_error_t jerr;
    json_t *req = it->payload_len ? json_loadb((const char *)it->payload, it->payload_len,
                                               JSON_REJECT_DUPLICATES, &jerr)
                                  : NULL;
    const char *token = req ? drv_shadow_client_token(req) : NULL;
    const drv_twin_actor who = {.actor = "device", .source = "mqtt"};
    change_out o = {0}; /* o.sh zeroed: clearable, filled by load */
    if (it->oversize) {
        reject(tw, b, it, 413, "the request is too large", token);
    } else if (!drv_shadow_name_valid(name)) {
        reject(tw, b, it, 400, "bad shadow name", token);
    } else if (it->payload_len && (!req || !json_is_object(req))) {
        reject(tw, b, it, 400, "the payload is not a JSON object", token);
    } else if (op == OP_GET) {
        bool found = false;
        drv_err e = load(tw->st, it->tenant, it->device, name, &o.sh, &found);
        if (e != DRV_OK) {
            reject(tw, b, it, 500, "the shadow could not be read", token);
        } else if (!found) {
            reject(tw, b, it, 404, "no such shadow", token);
        } else {
            json_t *doc = drv_shadow_render(&o.sh);
            answer(b, it, "accepted", doc, token);
            json_decref(doc);
        }
    } else if (op == OP_UPDATE) {
        if (!req) {
            reject(tw, b, it, 400, "an update needs a JSON payload", token);
        } else if (update_shadow(tw, tw->st, it->tenant, it->device, name, req, 0, &who, &o) !=
                   200) {
            reject(tw, b, it, o.code, o.why, token);
        } else {
            json_t *m = json_object();
            json_t *state = state_of(&o.up);
            json_t *meta = json_object();
            if (json_is_object(o.up.desired))
                json_object_set_new(meta, "desired",
                                    drv_shadow_meta_of(o.up.desired, o.sh.meta_desired));
            if (json_is_object(o.up.reported))
                json_object_set_new(meta, "reported",
                                    drv_shadow_meta_of(o.up.reported, o.sh.meta_reported));
            json_object_set_new(m, "state", state);
            json_object_set_new(m, "metadata", meta);
            json_object_set_new(m, "version", json_integer(o.sh.version));
            json_object_set_new(m, "timestamp", json_integer(o.sh.ts_ms));
            answer(b, it, "accepted", m, token);
            json_decref(m);
            if (o.changed)
                announce_update(tw, b, it->tenant, it->device, name, &who, &o);
        }
    } else {
        json_t *v = req ? json_object_get(req, "version") : NULL;
        int64_t expected = json_is_integer(v) ? json_integer_value(v) : 0;
        if (remove_shadow(tw, tw->st, it->tenant, it->device, name, expected, 0, &who, &o) != 200) {
            reject(tw, b, it, o.code, o.why, token);
        } else {
            json_t *m = json_object();
            json_object_set_new(m, "version", json_integer(o.sh.version));
            json_object_set_new(m, "timestamp", json_integer(o.sh.ts_ms));
            answer(b, it, "accepted", m, token);
            json_decref(m);
            announce_delete(tw, b, it->tenant, it->device, name, &who, &o);
        }
    }
    drv_shadow_clear(&o.sh);
    json_decref(req);
}

void twin_shadow_session(drv_twin *tw, const char *tenant, const char *device,
                         const uint8_t *filter, size_t filter_len)
{
    json_t *list = NULL;
    if (tw->st->ops->shadow_list(tw->st, tenant, device, &list) != DRV_OK)
        return;
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(list, "items"), i, item)
    {
        const char *name = json_string_value(json_object_get(item, "name"));
        if (!name)
            continue;
        char topic[512];
        shadow_topic(topic, sizeof(topic), device, name, "update", "/delta");
        if (filter &&
            !mqtt_topic_matches(filter, filter_len, (const uint8_t *)topic, strlen(topic)))
            continue;
        drv_shadow sh;
        bool found = false;
        if (load(tw->st, tenant, device, name, &sh, &found) == DRV_OK && found) {
            json_t *dm = delta_message(&sh);
            char *text = dm ? json_dumps(dm, JSON_COMPACT) : NULL;
            if (text)
                twin_publish(tw, tenant, topic, text, strlen(text), NULL, NULL, 0);
            free(text); /* jansson's allocation */
            json_decref(dm);
        }
        drv_shadow_clear(&sh);
    }
    json_decref(list);
}

/* ------------------------------------------------------------------------ */
/* Applications                                                              */

static json_t *rest_doc(const drv_shadow *sh, const char *device, const char *name)
{
    json_t *doc = drv_shadow_render(sh);
    if (doc) {
        json_object_set_new(doc, "device", json_string(device));
        json_object_set_new(doc, "name", json_string(name[0] ? name : "classic"));
    }
    return doc;
}

static void to_answer(drv_twin_answer *ans, int code, const char *why)
{
    ans->status = code;
    snprintf(ans->detail, sizeof(ans->detail), "%s", why ? why : "");
}

void drv_twin_api_shadow_get(drv_twin *tw, drv_twin_store *st, const char *tenant,
                             const char *device, const char *name, json_t **out,
                             drv_twin_answer *ans)
{
    (void)tw;
    *out = NULL;
    drv_shadow sh;
    bool found = false;
    drv_err e = load(st, tenant, device, name, &sh, &found);
    if (e != DRV_OK)
        to_answer(ans, 500, "the shadow could not be read");
    else if (!found)
        to_answer(ans, 404, "no such shadow");
    else if (!(*out = rest_doc(&sh, device, name)))
        to_answer(ans, 500, "out of memory");
    else
        to_answer(ans, 200, NULL);
    drv_shadow_clear(&sh);
}

void drv_twin_api_shadow_update(drv_twin *tw, drv_twin_store *st, const char *tenant,
                                const char *device, const char *name, json_t *body,
                                int64_t if_match, const drv_twin_actor *who, json_t **out,
                                drv_twin_answer *ans)
{
    *out = NULL;
    change_out o = {0}; /* o.sh zeroed: clearable, filled by load */
    /* One write transaction around the read, the named-shadow count and the
     * write: the service writes shadows too, and two first writes of new
     * named shadows must not both see room for one more. */
    drv_err te = st->ops->begin(st);
    if (te != DRV_OK) {
        to_answer(ans, te == DRV_AGAIN ? 503 : 500, "the shadow store is busy");
        return;
    }
    int code = update_shadow(tw, st, tenant, device, name, body, if_match, who, &o);
    te = code == 200 ? st->ops->commit(st) : DRV_OK;
    if (code != 200 || te != DRV_OK)
        st->ops->rollback(st);
    if (te != DRV_OK) {
        to_answer(ans, 500, "the shadow could not be stored");
    } else if (code != 200) {
        atomic_fetch_add_explicit(&tw->stats.shadow_rejected, 1, memory_order_relaxed);
        to_answer(ans, o.code, o.why);
    } else {

        if (o.changed) {
            twin_batch b = {0};
            announce_update(tw, &b, tenant, device, name, who, &o);
            twin_batch_finish(tw, &b, true); /* committed above */
        }
        *out = rest_doc(&o.sh, device, name);
        to_answer(ans, *out ? 200 : 500, *out ? NULL : "out of memory");
    }
    drv_shadow_clear(&o.sh);
}

void drv_twin_api_shadow_delete(drv_twin *tw, drv_twin_store *st, const char *tenant,
                                const char *device, const char *name, int64_t if_match,
                                const drv_twin_actor *who, drv_twin_answer *ans)
{
    change_out o = {0}; /* o.sh zeroed: clearable, filled by load */
    if (remove_shadow(tw, st, tenant, device, name, 0, if_match, who, &o) != 200) {
        to_answer(ans, o.code, o.why);
    } else {
        twin_batch b = {0};
        announce_delete(tw, &b, tenant, device, name, who, &o);
        twin_batch_finish(tw, &b, true);
        to_answer(ans, 204, NULL);
    }
    drv_shadow_clear(&o.sh);
}

drv_err drv_twin_api_purge_device(drv_twin *tw, drv_twin_store *st, const char *tenant,
                                  const char *device)
{
    (void)tw;
    return st->ops->purge_device(st, tenant, device);
}
