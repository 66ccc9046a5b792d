/*
 * fuzz_shadow_update.c — libFuzzer harness for the shadow document model
 * (src/twin/shadow_doc.c): update requests come from devices and
 * applications, stored documents from a database anyone with the file can
 * edit; neither may crash, leak or break the model's invariants.
 *
 * Input: two JSON texts split at the first NUL byte, a stored document
 * (drv_shadow_from_stored; when it is refused, or there is no NUL, the
 * shadow starts empty) and an update request (any JSON value).  The request
 * is parsed and applied with max_bytes 4096; when the parser refuses it but
 * it has a "state" object, its sections are applied raw, so apply's own
 * checks meet values the parser never lets through.
 *
 * Checked (abort on violation):
 *   - from_stored accepts only what reads back identically through
 *     to_stored, with every invariant below;
 *   - parse_update: DRV_OK or DRV_INVAL with a reason, and DRV_INVAL leaves
 *     the output empty; client_token agrees with drv_shadow_client_token;
 *   - apply: on any error the shadow is exactly as before; CONFLICT exactly
 *     when an expected version differs; each section is what a plain
 *     RFC 7386 merge (ref_merge) gives; changed exactly when a section
 *     differs, then version + 1 and the time set, else nothing moved;
 *     TOOBIG exactly when that result serialises over the limit and
 *     larger than the state was;
 *   - the shadow after apply: sections within the depth limit, no null
 *     members, mirrors of exactly their shape, leaves that kept their value
 *     kept their stamp and every other leaf has the update's time;
 *   - delta: only desired's members, no member equal in reported;
 *     meta_of, render (delta present exactly when not empty) and the
 *     stored round trip.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "twin/shadow_doc.h"

#include "fuzz.h"

#define MAX_INPUT 65536
#define MAX_BYTES 4096
#define STORED_VERSION 7
#define STORED_TS 1000
#define NOW 2000

/* RFC 7386 MergePatch(target, patch), written from the RFC's pseudocode:
 * a new value.  target may be NULL (absent). */
static json_t *ref_merge(const json_t *target, json_t *patch)
{
    if (!json_is_object(patch))
        return json_deep_copy(patch);
    json_t *t = json_is_object(target) ? json_deep_copy(target) : json_object();
    FUZZ_ASSERT(t != NULL);
    const char *k;
    size_t kl;
    json_t *v;
    json_object_keylen_foreach(patch, k, kl, v)
    {
        if (json_is_null(v)) {
            json_object_deln(t, k, kl);
            continue;
        }
        FUZZ_ASSERT(json_object_setn_new(t, k, kl, ref_merge(json_object_getn(t, k, kl), v)) == 0);
    }
    return t;
}

/* A section after a section patch: absent keeps it, null clears it. */
static json_t *ref_section(const json_t *section, json_t *patch)
{
    if (!patch)
        return json_deep_copy(section);
    if (json_is_null(patch))
        return json_object();
    return ref_merge(section, patch);
}

/* Nesting depth of v (objects and arrays; a scalar is 0).  Only called on
 * values the shadow accepted, so bounded. */
static int depth(const json_t *v)
{
    int d = 0;
    json_t *c;
    if (json_is_array(v)) {
        size_t i;
        json_array_foreach(v, i, c)
        {
            int cd = depth(c);
            d = cd > d ? cd : d;
        }
        return d + 1;
    }
    if (!json_is_object(v))
        return 0;
    const char *k;
    json_object_foreach((json_t *)v, k, c)
    {
        int cd = depth(c);
        d = cd > d ? cd : d;
    }
    return d + 1;
}

/* A mirror of exactly section's shape, without null members. */
static bool mirror_shape(const json_t *section, const json_t *meta)
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
        if (json_is_object(v)) {
            if (!mirror_shape(v, m))
                return false;
        } else if (json_object_size(m) != 1 || !json_is_integer(json_object_get(m, "timestamp"))) {
            return false;
        }
    }
    return true;
}

/* Leaves equal to the old leaf at their path kept its stamp; the others
 * have now. */
static bool stamps_ok(const json_t *old, const json_t *old_meta, const json_t *cur,
                      const json_t *meta, int64_t now)
{
    const char *k;
    size_t kl;
    json_t *v;
    json_object_keylen_foreach((json_t *)cur, k, kl, v)
    {
        json_t *ov = json_object_getn(old, k, kl);
        json_t *om = json_object_getn(old_meta, k, kl);
        json_t *m = json_object_getn(meta, k, kl);
        if (json_is_object(v)) {
            if (!stamps_ok(json_is_object(ov) ? ov : NULL, om, v, m, now))
                return false;
            continue;
        }
        json_int_t ts = json_integer_value(json_object_get(m, "timestamp"));
        bool kept = ov && !json_is_object(ov) && json_equal(ov, v);
        if (ts != (kept ? json_integer_value(json_object_get(om, "timestamp")) : now))
            return false;
    }
    return true;
}

static void check_shadow(const drv_shadow *sh)
{
    FUZZ_ASSERT(json_is_object(sh->desired) && json_is_object(sh->reported));
    FUZZ_ASSERT(depth(sh->desired) <= DRV_SHADOW_MAX_DEPTH);
    FUZZ_ASSERT(depth(sh->reported) <= DRV_SHADOW_MAX_DEPTH);
    FUZZ_ASSERT(mirror_shape(sh->desired, sh->meta_desired));
    FUZZ_ASSERT(mirror_shape(sh->reported, sh->meta_reported));
}

/* The stored form, with version and time beside it. */
static json_t *snapshot(const drv_shadow *sh)
{
    json_t *s = drv_shadow_to_stored(sh);
    FUZZ_ASSERT(s != NULL);
    FUZZ_ASSERT(json_object_set_new(s, "v", json_integer(sh->version)) == 0);
    FUZZ_ASSERT(json_object_set_new(s, "t", json_integer(sh->ts_ms)) == 0);
    return s;
}

/* {"desired":d,"reported":r} compactly, in bytes. */
static size_t state_size(json_t *d, json_t *r)
{
    json_t *s = json_object();
    FUZZ_ASSERT(s && json_object_set(s, "desired", d) == 0 &&
                json_object_set(s, "reported", r) == 0);
    size_t n = json_dumpb(s, NULL, 0, JSON_COMPACT);
    json_decref(s);
    return n;
}

/* to_stored -> from_stored gives the same shadow. */
static void round_trip(const drv_shadow *sh)
{
    json_t *st = drv_shadow_to_stored(sh);
    FUZZ_ASSERT(st != NULL);
    drv_shadow back;
    FUZZ_ASSERT(drv_shadow_from_stored(st, sh->version, sh->ts_ms, &back) == DRV_OK);
    FUZZ_ASSERT(json_equal(back.desired, sh->desired) && json_equal(back.reported, sh->reported));
    FUZZ_ASSERT(json_equal(back.meta_desired, sh->meta_desired));
    FUZZ_ASSERT(json_equal(back.meta_reported, sh->meta_reported));
    drv_shadow_clear(&back);
    json_decref(st);
}

static void check_views(const drv_shadow *sh, const drv_shadow_update *up)
{
    json_t *delta = drv_shadow_delta(sh);
    FUZZ_ASSERT(json_is_object(delta));
    const char *k;
    size_t kl;
    json_t *v;
    json_object_keylen_foreach(delta, k, kl, v)
    {
        json_t *dv = json_object_getn(sh->desired, k, kl);
        json_t *rv = json_object_getn(sh->reported, k, kl);
        FUZZ_ASSERT(dv != NULL && !(rv && json_equal(dv, rv)));
    }
    json_t *m = drv_shadow_meta_of(delta, sh->meta_desired);
    FUZZ_ASSERT(json_is_object(m));
    json_decref(m);
    m = drv_shadow_meta_of(up->desired, sh->meta_desired);
    FUZZ_ASSERT(json_is_object(m));
    json_decref(m);
    m = drv_shadow_meta_of(up->reported, sh->meta_reported);
    FUZZ_ASSERT(json_is_object(m));
    json_decref(m);

    json_t *doc = drv_shadow_render(sh);
    FUZZ_ASSERT(json_is_object(doc));
    json_t *state = json_object_get(doc, "state");
    json_t *rd = json_object_get(state, "delta");
    FUZZ_ASSERT(json_object_size(delta) ? json_equal(rd, delta) : rd == NULL);
    FUZZ_ASSERT(json_equal(json_object_get(state, "desired"), sh->desired));
    FUZZ_ASSERT(json_integer_value(json_object_get(doc, "version")) == sh->version);
    json_decref(doc);
    json_decref(delta);
    round_trip(sh);
}

/* Apply up to sh and check every promise of drv_shadow_apply. */
static void apply_and_check(drv_shadow *sh, const drv_shadow_update *up)
{
    json_t *before = snapshot(sh);
    json_t *old_d = json_deep_copy(sh->desired), *old_md = json_deep_copy(sh->meta_desired);
    json_t *old_r = json_deep_copy(sh->reported), *old_mr = json_deep_copy(sh->meta_reported);
    FUZZ_ASSERT(old_d && old_md && old_r && old_mr);
    int64_t version = sh->version;

    bool changed = true;
    const char *why = NULL;
    drv_err e = drv_shadow_apply(sh, up, NOW, MAX_BYTES, &changed, &why);

    bool bad_type = (up->desired && !json_is_object(up->desired) && !json_is_null(up->desired)) ||
                    (up->reported && !json_is_object(up->reported) && !json_is_null(up->reported));
    bool conflict = up->expected_version != 0 && up->expected_version != version;
    if (conflict) {
        FUZZ_ASSERT(e == DRV_CONFLICT);
    } else if (bad_type) {
        FUZZ_ASSERT(e == DRV_INVAL && why != NULL);
    } else if (e == DRV_INVAL) {
        /* Only for depth: some patch nests deeper than allowed. */
        FUZZ_ASSERT(why != NULL);
        FUZZ_ASSERT(depth(up->desired) > DRV_SHADOW_MAX_DEPTH ||
                    depth(up->reported) > DRV_SHADOW_MAX_DEPTH);
    } else {
        FUZZ_ASSERT(e == DRV_OK || e == DRV_TOOBIG);
        FUZZ_ASSERT(depth(up->desired) <= DRV_SHADOW_MAX_DEPTH &&
                    depth(up->reported) <= DRV_SHADOW_MAX_DEPTH);
        json_t *want_d = ref_section(old_d, up->desired);
        json_t *want_r = ref_section(old_r, up->reported);
        FUZZ_ASSERT(want_d && want_r);
        bool differs = !json_equal(want_d, old_d) || !json_equal(want_r, old_r);
        size_t old_size = state_size(old_d, old_r), new_size = state_size(want_d, want_r);
        if (e == DRV_TOOBIG) {
            FUZZ_ASSERT(differs && new_size > MAX_BYTES && new_size > old_size);
        } else {
            FUZZ_ASSERT(changed == differs);
            FUZZ_ASSERT(json_equal(sh->desired, want_d) && json_equal(sh->reported, want_r));
            /* Over the limit only when it did not grow (trimming). */
            if (differs)
                FUZZ_ASSERT(new_size <= MAX_BYTES || new_size <= old_size);
        }
        json_decref(want_d);
        json_decref(want_r);
    }
    if (e != DRV_OK || !changed) {
        json_t *after = snapshot(sh);
        FUZZ_ASSERT(!changed && json_equal(before, after));
        json_decref(after);
    } else {
        FUZZ_ASSERT(sh->version == version + 1 && sh->ts_ms == NOW);
    }
    check_shadow(sh);
    FUZZ_ASSERT(stamps_ok(old_d, old_md, sh->desired, sh->meta_desired, NOW));
    FUZZ_ASSERT(stamps_ok(old_r, old_mr, sh->reported, sh->meta_reported, NOW));
    check_views(sh, up);

    json_decref(before);
    json_decref(old_d);
    json_decref(old_md);
    json_decref(old_r);
    json_decref(old_mr);
}

/* The shadow to start from: the stored text if it is a valid document. */
static void start(drv_shadow *sh, const uint8_t *p, size_t n)
{
    json_error_t err;
    json_t *stored = n ? json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &err) : NULL;
    if (stored && drv_shadow_from_stored(stored, STORED_VERSION, STORED_TS, sh) == DRV_OK) {
        FUZZ_ASSERT(sh->version == STORED_VERSION && sh->ts_ms == STORED_TS);
        check_shadow(sh);
        /* What was accepted is what is handed back. */
        json_t *again = drv_shadow_to_stored(sh);
        FUZZ_ASSERT(json_equal(again, stored));
        json_decref(again);
    } else {
        FUZZ_ASSERT(drv_shadow_init(sh) == DRV_OK);
    }
    json_decref(stored);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_INPUT)
        return 0;
    const uint8_t *nul = memchr(data, 0, size);
    size_t sn = nul ? (size_t)(nul - data) : 0;
    const uint8_t *rq = nul ? nul + 1 : data;
    size_t rn = nul ? size - sn - 1 : size;

    drv_shadow sh;
    start(&sh, data, sn);

    json_error_t err;
    json_t *req = json_loadb((const char *)rq, rn, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    if (req) {
        drv_shadow_update up;
        const char *why = NULL;
        drv_err e = drv_shadow_parse_update(req, &up, &why);
        const char *tok = drv_shadow_client_token(req);
        if (e == DRV_OK) {
            FUZZ_ASSERT(up.desired || up.reported);
            FUZZ_ASSERT(up.client_token == tok);
            FUZZ_ASSERT(up.expected_version >= 0);
            apply_and_check(&sh, &up);
        } else {
            FUZZ_ASSERT(e == DRV_INVAL && why != NULL);
            FUZZ_ASSERT(!up.desired && !up.reported && !up.expected_version && !up.client_token);
            json_t *state = json_object_get(req, "state");
            if (json_is_object(state)) {
                drv_shadow_update raw = {
                    .desired = json_object_get(state, "desired"),
                    .reported = json_object_get(state, "reported"),
                };
                apply_and_check(&sh, &raw);
            }
        }
        json_decref(req);
    }
    drv_shadow_clear(&sh);
    return 0;
}
