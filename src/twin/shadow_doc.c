/*
 * shadow_doc.c — the shadow document model (shadow_doc.h, ADR-0017): merge
 * patches, metadata mirrors, the delta, limits and the stored form, as pure
 * functions over jansson values (no I/O, no clock, no locks).
 *
 * Invariants of every drv_shadow this file hands out:
 *   - desired and reported are objects without null members, nested at most
 *     DRV_SHADOW_MAX_DEPTH deep;
 *   - each mirror has exactly its section's keys: an object for an object,
 *     {"timestamp": ms} for a leaf, so it is at most one level deeper.
 * The recursive helpers below rely on that bound.  Input from outside
 * (update requests, stored documents) is depth-checked by too_deep(), which
 * never goes more than one level past the limit, before anything else
 * recurses on it: jansson's parser accepts 2048 levels.
 *
 * drv_shadow_apply never mutates the sections it replaces: it merges into
 * copies and swaps them in only after every check passed, so on error the
 * shadow is untouched.  A merge keeps depth within the larger of the target's
 * and the patch's, so a checked patch on a valid shadow gives a valid one.
 *
 * Values compare with json_equal, which tells an integer from a real: 1 and
 * 1.0 differ, so a device reporting 1.0 after 1 is a change (new version and
 * timestamp).  That is accepted: the JSON texts and the stored document
 * differ too.
 *
 * Object keys are handled with their lengths (json_object_getn and friends)
 * so a key with a NUL byte, which jansson can hold, is never confused with
 * its prefix.
 */
#include "twin/shadow_doc.h"

#include <assert.h>
#include <string.h>

#define STR_(x) #x
#define STR(x) STR_(x)

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

static drv_err fail(const char **why, drv_err err, const char *reason)
{
    if (why)
        *why = reason;
    return err;
}

/* Key k (kl bytes) is the C string name. */
static bool key_is(const char *k, size_t kl, const char *name)
{
    return kl == strlen(name) && memcmp(k, name, kl) == 0;
}

/* Whether v nests more than `depth` objects/arrays deep (v itself is one
 * level).  Never recurses more than depth + 1 levels, whatever v holds. */
static bool too_deep(const json_t *v, int depth)
{
    if (!json_is_object(v) && !json_is_array(v))
        return false;
    if (depth <= 0)
        return true;
    json_t *c;
    if (json_is_array(v)) {
        size_t i;
        json_array_foreach(v, i, c)
        {
            if (too_deep(c, depth - 1))
                return true;
        }
        return false;
    }
    const char *k;
    json_object_foreach((json_t *)v, k, c)
    {
        if (too_deep(c, depth - 1))
            return true;
    }
    return false;
}

/* {"timestamp": ms}, the mirror of a leaf; NULL when out of memory. */
static json_t *stamp(int64_t ms)
{
    json_t *s = json_object();
    if (s && json_object_set_new(s, "timestamp", json_integer((json_int_t)ms))) {
        json_decref(s);
        return NULL;
    }
    return s;
}

/* Set obj[key] to v, taking v over (freed on failure; NULL v fails). */
static bool put(json_t *obj, const char *key, json_t *v)
{
    return json_object_set_new(obj, key, v) == 0;
}

/* ------------------------------------------------------------------------ */
/* Lifetime and names                                                        */

drv_err drv_shadow_init(drv_shadow *sh)
{
    memset(sh, 0, sizeof(*sh));
    sh->desired = json_object();
    sh->reported = json_object();
    sh->meta_desired = json_object();
    sh->meta_reported = json_object();
    if (!sh->desired || !sh->reported || !sh->meta_desired || !sh->meta_reported) {
        drv_shadow_clear(sh);
        return DRV_NOMEM;
    }
    return DRV_OK;
}

void drv_shadow_clear(drv_shadow *sh)
{
    json_decref(sh->desired);
    json_decref(sh->reported);
    json_decref(sh->meta_desired);
    json_decref(sh->meta_reported);
    memset(sh, 0, sizeof(*sh));
}

/* [A-Za-z0-9_:-], without the locale isalnum() would consult. */
static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == ':' || c == '-';
}

bool drv_shadow_name_valid(const char *name)
{
    if (!name)
        return false;
    if (name[0] == '$' || strcmp(name, "classic") == 0)
        return false;
    size_t n = 0;
    for (; name[n]; n++) {
        if (n == DRV_SHADOW_NAME_MAX || !name_char(name[n]))
            return false;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Parsing update requests                                                   */

/* The token in v, if v is a string of at most DRV_SHADOW_TOKEN_MAX bytes
 * without NUL (it is handed on as a C string). */
static const char *token_of(const json_t *v)
{
    if (!json_is_string(v))
        return NULL;
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n > DRV_SHADOW_TOKEN_MAX || memchr(s, '\0', n))
        return NULL;
    return s;
}

const char *drv_shadow_client_token(const json_t *req)
{
    return token_of(json_object_get(req, "client_token"));
}

/* A section patch as apply takes it: absent, null, or an object within the
 * depth limit. */
static drv_err check_patch(const json_t *patch, const char **why)
{
    if (!patch || json_is_null(patch))
        return DRV_OK;
    if (!json_is_object(patch))
        return fail(why, DRV_INVAL, "desired and reported must be objects or null");
    if (too_deep(patch, DRV_SHADOW_MAX_DEPTH))
        return fail(why, DRV_INVAL,
                    "state nests more than " STR(DRV_SHADOW_MAX_DEPTH) " levels deep");
    return DRV_OK;
}

/* Every member of obj is one of the names in allowed (NULL-terminated). */
static bool only_members(json_t *obj, const char *const *allowed)
{
    const char *k;
    size_t kl;
    json_t *v;
    json_object_keylen_foreach(obj, k, kl, v)
    {
        const char *const *a = allowed;
        while (*a && !key_is(k, kl, *a))
            a++;
        if (!*a)
            return false;
    }
    return true;
}

drv_err drv_shadow_parse_update(json_t *req, drv_shadow_update *out, const char **why)
{
    static const char *const top[] = {"state", "version", "client_token", NULL};
    static const char *const sections[] = {"desired", "reported", NULL};
    drv_shadow_update up = {0};
    drv_err e;

    memset(out, 0, sizeof(*out));
    if (!json_is_object(req))
        return fail(why, DRV_INVAL, "the update must be a JSON object");
    if (!only_members(req, top))
        return fail(why, DRV_INVAL, "unknown member (allowed: state, version, client_token)");
    json_t *state = json_object_get(req, "state");
    if (!state)
        return fail(why, DRV_INVAL, "state is missing");
    if (!json_is_object(state))
        return fail(why, DRV_INVAL, "state must be an object");
    /* Refused rather than ignored: "delta" or a misspelt section would
     * otherwise be accepted and silently do nothing. */
    if (!only_members(state, sections))
        return fail(why, DRV_INVAL, "unknown member in state (allowed: desired, reported)");
    up.desired = json_object_get(state, "desired");
    up.reported = json_object_get(state, "reported");
    if (!up.desired && !up.reported)
        return fail(why, DRV_INVAL, "state has neither desired nor reported");
    if ((e = check_patch(up.desired, why)) != DRV_OK ||
        (e = check_patch(up.reported, why)) != DRV_OK)
        return e;

    json_t *version = json_object_get(req, "version");
    if (version) {
        if (!json_is_integer(version) || json_integer_value(version) < 1)
            return fail(why, DRV_INVAL, "version must be an integer >= 1");
        up.expected_version = json_integer_value(version);
    }
    json_t *token = json_object_get(req, "client_token");
    if (token) {
        up.client_token = token_of(token);
        if (!up.client_token)
            return fail(
                why, DRV_INVAL,
                "client_token must be a string of at most " STR(DRV_SHADOW_TOKEN_MAX) " bytes");
    }
    *out = up;
    return DRV_OK;
}

/* ------------------------------------------------------------------------ */
/* Applying updates                                                          */

/* Whether merging the object patch into target (any value; NULL: absent)
 * would change it.  Read-only, so a repeated report allocates nothing. */
static bool patch_changes(const json_t *target, json_t *patch)
{
    const char *k;
    size_t kl;
    json_t *pv;
    json_object_keylen_foreach(patch, k, kl, pv)
    {
        json_t *tv = json_is_object(target) ? json_object_getn(target, k, kl) : NULL;
        if (json_is_null(pv)) {
            if (tv)
                return true;
        } else if (json_is_object(pv)) {
            /* Even {} is a change where there was no object: it is added. */
            if (!json_is_object(tv) || patch_changes(tv, pv))
                return true;
        } else if (!tv || !json_equal(tv, pv)) {
            return true;
        }
    }
    return false;
}

/* Whether a section patch (checked by check_patch) changes section. */
static bool section_changes(const json_t *section, json_t *patch)
{
    if (!patch)
        return false;
    if (json_is_null(patch))
        return json_object_size(section) > 0;
    return patch_changes(section, patch);
}

/*
 * Merge the object patch into the object target (RFC 7386) and keep meta,
 * target's mirror, in step: leaves added or changed get now_ms, removed
 * members lose their entry, a member that changes between leaf and object
 * gets a mirror of the new shape.  target and meta are private copies; on
 * DRV_NOMEM they are half merged and must be dropped.
 */
static drv_err merge(json_t *target, json_t *meta, json_t *patch, int64_t now_ms)
{
    const char *k;
    size_t kl;
    json_t *pv;
    json_object_keylen_foreach(patch, k, kl, pv)
    {
        json_t *tv = json_object_getn(target, k, kl);
        if (json_is_null(pv)) {
            json_object_deln(target, k, kl);
            json_object_deln(meta, k, kl);
            continue;
        }
        if (!json_is_object(pv)) {
            /* Unchanged leaves keep their timestamp. */
            if (tv && json_equal(tv, pv))
                continue;
            /* A copy: the request is the caller's, and may go to another thread. */
            if (json_object_setn_new(target, k, kl, json_deep_copy(pv)) ||
                json_object_setn_new(meta, k, kl, stamp(now_ms)))
                return DRV_NOMEM;
            continue;
        }
        if (!json_is_object(tv)) {
            /* A leaf (or nothing) becomes an object: start both empty. */
            if (json_object_setn_new(target, k, kl, json_object()) ||
                json_object_setn_new(meta, k, kl, json_object()))
                return DRV_NOMEM;
            tv = json_object_getn(target, k, kl);
        }
        json_t *mv = json_object_getn(meta, k, kl);
        /* Never missing in a shadow this file made; rebuilt rather than
         * trusted if a caller assembled one by hand. */
        if (!json_is_object(mv)) {
            if (json_object_setn_new(meta, k, kl, json_object()))
                return DRV_NOMEM;
            mv = json_object_getn(meta, k, kl);
        }
        drv_err e = merge(tv, mv, pv, now_ms);
        if (e != DRV_OK)
            return e;
    }
    return DRV_OK;
}

/* The section (and its mirror) after patch (an object or null), as new
 * values in *next and *next_meta. */
static drv_err patched(const json_t *section, const json_t *meta, json_t *patch, int64_t now_ms,
                       json_t **next, json_t **next_meta)
{
    if (json_is_null(patch)) {
        *next = json_object();
        *next_meta = json_object();
    } else {
        *next = json_deep_copy(section);
        *next_meta = json_deep_copy(meta);
    }
    if (!*next || !*next_meta)
        return DRV_NOMEM;
    return json_is_null(patch) ? DRV_OK : merge(*next, *next_meta, patch, now_ms);
}

/* Bytes counted by json_dump_callback; stops the dump once over max. */
typedef struct byte_count {
    size_t n;   /* bytes so far */
    size_t max; /* the limit */
} byte_count;

static int count_bytes(const char *buffer, size_t size, void *data)
{
    byte_count *c = data;
    c->n += size;
    return c->n > c->max ? -1 : 0;
}

/* DRV_TOOBIG when {"desired":d,"reported":r}, serialised compactly, is over
 * max bytes.  Counted, not built: the dump stops at the first byte over. */
static drv_err check_size(json_t *d, json_t *r, size_t max)
{
    drv_err e = DRV_NOMEM;
    json_t *state = json_object();
    if (!state || json_object_set(state, "desired", d) || json_object_set(state, "reported", r))
        goto out;
    byte_count c = {0, max};
    int rc = json_dump_callback(state, count_bytes, &c, JSON_COMPACT);
    if (c.n > max)
        e = DRV_TOOBIG;
    else if (rc == 0)
        e = DRV_OK;
out:
    json_decref(state);
    return e;
}

/* Bytes of {"desired":d,"reported":r} serialised compactly (SIZE_MAX when
 * it cannot be counted: out of memory). */
static size_t state_size(json_t *d, json_t *r)
{
    json_t *state = json_object();
    byte_count c = {0, SIZE_MAX};
    if (!state || json_object_set(state, "desired", d) || json_object_set(state, "reported", r) ||
        json_dump_callback(state, count_bytes, &c, JSON_COMPACT) != 0)
        c.n = 0; /* not counted: nothing passes as "not growing" */
    json_decref(state);
    return c.n;
}

static void swap(json_t **a, json_t **b)
{
    json_t *t = *a;
    *a = *b;
    *b = t;
}

drv_err drv_shadow_apply(drv_shadow *sh, const drv_shadow_update *up, int64_t now_ms,
                         size_t max_bytes, bool *changed, const char **why)
{
    json_t *d = NULL, *md = NULL, *r = NULL, *mr = NULL;
    drv_err e;

    assert(sh && up && changed);
    *changed = false;
    if (up->expected_version != 0 && up->expected_version != sh->version)
        return fail(why, DRV_CONFLICT, "version conflict");
    if ((e = check_patch(up->desired, why)) != DRV_OK ||
        (e = check_patch(up->reported, why)) != DRV_OK)
        return e;
    bool cd = section_changes(sh->desired, up->desired);
    bool cr = section_changes(sh->reported, up->reported);
    /* Nothing changes: nothing to store, so no size check either (a state
     * left over a lowered limit can still be reported again). */
    if (!cd && !cr)
        return DRV_OK;

    if (cd && (e = patched(sh->desired, sh->meta_desired, up->desired, now_ms, &d, &md)))
        goto out;
    if (cr && (e = patched(sh->reported, sh->meta_reported, up->reported, now_ms, &r, &mr)))
        goto out;
    e = check_size(cd ? d : sh->desired, cr ? r : sh->reported, max_bytes);
    /* Over the limit, a change that does not grow the state still goes
     * through: a shadow left over a lowered limit can be trimmed. */
    if (e == DRV_TOOBIG && check_size(cd ? d : sh->desired, cr ? r : sh->reported,
                                      state_size(sh->desired, sh->reported)) == DRV_OK)
        e = DRV_OK;
    if (e != DRV_OK) {
        if (e == DRV_TOOBIG)
            e = fail(why, e, "the shadow would be larger than shadow.max_bytes");
        goto out;
    }
    /* Commit: the old values go to the locals and are released below. */
    if (cd) {
        swap(&sh->desired, &d);
        swap(&sh->meta_desired, &md);
    }
    if (cr) {
        swap(&sh->reported, &r);
        swap(&sh->meta_reported, &mr);
    }
    sh->version++;
    sh->ts_ms = now_ms;
    *changed = true;
out:
    json_decref(d);
    json_decref(md);
    json_decref(r);
    json_decref(mr);
    return e;
}

/* ------------------------------------------------------------------------ */
/* Delta and metadata                                                        */

/* The members of desired that reported does not have the same (objects
 * compared member by member): a new object, NULL when out of memory. */
static json_t *delta_of(const json_t *desired, const json_t *reported)
{
    json_t *out = json_object();
    if (!out)
        return NULL;
    const char *k;
    size_t kl;
    json_t *dv;
    json_object_keylen_foreach((json_t *)desired, k, kl, dv)
    {
        json_t *rv = json_object_getn(reported, k, kl);
        json_t *add;
        if (json_is_object(dv) && json_is_object(rv)) {
            add = delta_of(dv, rv);
            if (add && json_object_size(add) == 0) {
                json_decref(add);
                continue;
            }
        } else if (rv && json_equal(dv, rv)) {
            continue;
        } else {
            add = json_deep_copy(dv);
        }
        if (json_object_setn_new(out, k, kl, add)) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

json_t *drv_shadow_delta(const drv_shadow *sh)
{
    return delta_of(sh->desired, sh->reported);
}

json_t *drv_shadow_meta_of(const json_t *part, const json_t *meta)
{
    json_t *out = json_object();
    if (!out || !json_is_object(part) || !json_is_object(meta))
        return out;
    const char *k;
    size_t kl;
    json_t *pv;
    /* Recursion only where both are objects: as deep as the shallower of
     * the two, and a mirror is bounded. */
    json_object_keylen_foreach((json_t *)part, k, kl, pv)
    {
        json_t *mv = json_object_getn(meta, k, kl);
        if (!mv || json_is_null(pv))
            continue;
        json_t *add = json_is_object(pv) ? drv_shadow_meta_of(pv, mv) : json_deep_copy(mv);
        if (json_object_setn_new(out, k, kl, add)) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/* ------------------------------------------------------------------------ */
/* Stored form and rendering                                                 */

/* {"desired": copy of d, "reported": copy of r}; NULL when out of memory. */
static json_t *pair(const json_t *d, const json_t *r)
{
    json_t *o = json_object();
    if (o && (!put(o, "desired", json_deep_copy(d)) || !put(o, "reported", json_deep_copy(r)))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *drv_shadow_to_stored(const drv_shadow *sh)
{
    json_t *o = pair(sh->desired, sh->reported);
    if (o && !put(o, "metadata", pair(sh->meta_desired, sh->meta_reported))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* m is the mirror of a leaf: exactly {"timestamp": integer}. */
static bool leaf_mirror(const json_t *m)
{
    return json_object_size(m) == 1 && json_is_integer(json_object_get(m, "timestamp"));
}

/* meta mirrors section (an object already depth-checked) exactly, and the
 * section has no null member (a merge never leaves one). */
static bool mirrors(const json_t *section, const json_t *meta)
{
    if (!json_is_object(meta) || json_object_size(meta) != json_object_size(section))
        return false;
    const char *k;
    size_t kl;
    json_t *v;
    json_object_keylen_foreach((json_t *)section, k, kl, v)
    {
        json_t *m = json_object_getn(meta, k, kl);
        if (json_is_null(v))
            return false;
        if (json_is_object(v) ? !mirrors(v, m) : !leaf_mirror(m))
            return false;
    }
    return true;
}

/* obj is an object whose members are exactly the NULL-terminated names. */
static bool exact_members(const json_t *obj, const char *const *names)
{
    size_t n = 0;
    if (!json_is_object(obj))
        return false;
    for (; names[n]; n++) {
        if (!json_object_get(obj, names[n]))
            return false;
    }
    return json_object_size(obj) == n;
}

/* stored has exactly the shape drv_shadow_to_stored writes.  Unknown
 * members are refused too: rewriting such a document would drop them. */
static bool stored_ok(const json_t *stored)
{
    static const char *const top[] = {"desired", "reported", "metadata", NULL};
    static const char *const sections[] = {"desired", "reported", NULL};
    if (!exact_members(stored, top))
        return false;
    const json_t *d = json_object_get(stored, "desired"), *r = json_object_get(stored, "reported");
    const json_t *meta = json_object_get(stored, "metadata");
    if (!json_is_object(d) || !json_is_object(r) || !exact_members(meta, sections))
        return false;
    /* Depth first: mirrors() recurses on the sections. */
    if (too_deep(d, DRV_SHADOW_MAX_DEPTH) || too_deep(r, DRV_SHADOW_MAX_DEPTH))
        return false;
    return mirrors(d, json_object_get(meta, "desired")) &&
           mirrors(r, json_object_get(meta, "reported"));
}

drv_err drv_shadow_from_stored(const json_t *stored, int64_t version, int64_t ts_ms, drv_shadow *sh)
{
    memset(sh, 0, sizeof(*sh));
    if (version < 0 || !stored_ok(stored))
        return DRV_CORRUPT;
    const json_t *meta = json_object_get(stored, "metadata");
    sh->desired = json_deep_copy(json_object_get(stored, "desired"));
    sh->reported = json_deep_copy(json_object_get(stored, "reported"));
    sh->meta_desired = json_deep_copy(json_object_get(meta, "desired"));
    sh->meta_reported = json_deep_copy(json_object_get(meta, "reported"));
    if (!sh->desired || !sh->reported || !sh->meta_desired || !sh->meta_reported) {
        drv_shadow_clear(sh);
        return DRV_NOMEM;
    }
    sh->version = version;
    sh->ts_ms = ts_ms;
    return DRV_OK;
}

json_t *drv_shadow_render(const drv_shadow *sh)
{
    json_t *ret = NULL;
    json_t *state = pair(sh->desired, sh->reported);
    json_t *delta = drv_shadow_delta(sh);
    json_t *doc = json_object();
    if (!state || !delta || !doc)
        goto out;
    /* put() takes over a reference whether it succeeds or not: hand it one
     * of its own, so the locals are released in one place. */
    if (json_object_size(delta) > 0 && !put(state, "delta", json_incref(delta)))
        goto out;
    if (!put(doc, "state", json_incref(state)) ||
        !put(doc, "metadata", pair(sh->meta_desired, sh->meta_reported)) ||
        !put(doc, "version", json_integer((json_int_t)sh->version)) ||
        !put(doc, "timestamp", json_integer((json_int_t)sh->ts_ms)))
        goto out;
    ret = json_incref(doc);
out:
    json_decref(delta);
    json_decref(state);
    json_decref(doc);
    return ret;
}
