/*
 * decode_json.c — the "json" payload decoder (decode.h describes the format).
 *
 * One pass over the scanner's tokens (json_scan.h), recursion following the
 * nesting (at most DRV_JSON_MAX_DEPTH deep, the scanner enforces it).  The
 * current key prefix ("pos" while inside "pos": {...}) lives in a 128-byte
 * buffer; a sample's key points into the payload when it is a top-level
 * name written without escapes, otherwise the flattened or unescaped key is
 * copied into the caller's arena.  String values without escapes point into
 * the payload too.
 *
 * A message is a unit (a plain object, or one {"ts", "values"} object; a
 * batch is one unit per element).  Within a unit, member names go into an
 * open-addressing table (on the stack, no allocation) keyed by (object,
 * unescaped name), so a name repeated in one object is "duplicate key".
 * Flattened keys can also collide across objects ({"a.b": 1, "a": {"b": 2}}),
 * but only when some name contains a '.'; then the unit's sample keys get
 * the same check.  At most JSON_MAX_NAMES members per unit (null and object
 * members count): a hard bound on the work one message can cause.
 *
 * At the top level "ts" and "values" are reserved: an object with either
 * must be exactly {"ts": ..., "values": {...}}, so a device that sends
 * {"ts": ..., "temp": 21} hears what is wrong instead of storing a "ts"
 * series.  ts is integer milliseconds or an ISO-8601/RFC 3339 string
 * ("2026-01-01T00:00:00.123Z", "+01:00" offsets; fractions beyond the
 * millisecond are truncated).
 */
#include "pipeline/decode_int.h"

#include <string.h>

#include "core/num.h"
#include "core/timefmt.h"

/* Most member names one unit may have; the name table has twice as many slots at most. */
#define JSON_MAX_NAMES 2048u
#define JSON_MAX_SLOTS 4096u

/* The scope of sample keys in the flattened-key check (object scopes count up from 0). */
#define SCOPE_KEYS UINT32_MAX

/* One member name (or sample key) seen in the current unit. */
typedef struct name_entry {
    uint32_t hash;  /* of (scope, unescaped name) */
    uint32_t scope; /* the object it is a member of, or SCOPE_KEYS */
    uint32_t off;   /* the name as written: offset in the payload; SCOPE_KEYS: sample index */
    uint16_t n;     /* length as written (≤ 6 × DRV_SAMPLE_MAX_KEY) */
    bool escaped;   /* written with escapes: unescape before comparing */
} name_entry;

/* The decoder's state for one message (on the decoding thread's stack, about 40 KiB). */
typedef struct jctx {
    const drv_decode_in *in;
    drv_decode_out *out;
    const char **why;
    drv_json_scan s;
    uint32_t next_scope;           /* scope number for the next object */
    uint32_t unit_first;           /* first sample of the current unit */
    bool dotted;                   /* a name in the current unit contains '.' */
    uint32_t nnames;               /* entries in names[] */
    uint32_t mask;                 /* slots in use - 1 (a power of two less one) */
    char path[DRV_SAMPLE_MAX_KEY]; /* key prefix of the current object or array */
    uint16_t slot[JSON_MAX_SLOTS]; /* names[] index + 1, 0 = free */
    name_entry names[JSON_MAX_NAMES];
} jctx;

static uint32_t name_hash(uint32_t scope, const char *p, size_t n)
{
    uint32_t h = 2166136261u ^ (scope * 0x9E3779B1u); /* FNV-1a, seeded with the scope */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 16777619u;
    }
    return h ^ h >> 15;
}

/* The bytes entry e stands for, unescaped into buf when needed. */
static drv_span entry_bytes(const jctx *c, const name_entry *e, char buf[DRV_SAMPLE_MAX_KEY])
{
    if (e->scope == SCOPE_KEYS)
        return c->out->samples[e->off].key;
    drv_span raw = {c->in->payload.p + e->off, e->n};
    if (!e->escaped)
        return raw;
    size_t n = drv_json_unescape(raw, buf, DRV_SAMPLE_MAX_KEY);
    return (drv_span){buf, n == SIZE_MAX ? 0 : n};
}

/*
 * Record name (unescaped) in scope; raw is the name as written (payload) or,
 * for SCOPE_KEYS, {NULL, sample index}.  "duplicate key" if it is there.
 */
static drv_err names_add(jctx *c, uint32_t scope, drv_span name, drv_span raw, bool escaped)
{
    /* The table is sized so neither bound is reached before the other limits; checked anyway,
     * because probing needs a free slot. */
    if (c->nnames == JSON_MAX_NAMES || c->nnames >= (c->mask + 1) / 2)
        return dec_fail(c->why, DRV_LIMIT, "too many keys in one message");
    uint32_t h = name_hash(scope, name.p, name.n);
    uint32_t i = h & c->mask;
    while (c->slot[i]) { /* never full: at most half the slots are used */
        const name_entry *e = &c->names[c->slot[i] - 1];
        char buf[DRV_SAMPLE_MAX_KEY];
        if (e->hash == h && e->scope == scope) {
            drv_span b = entry_bytes(c, e, buf);
            if (b.n == name.n && memcmp(b.p, name.p, name.n) == 0)
                return dec_fail(c->why, DRV_MALFORMED, "duplicate key");
        }
        i = (i + 1) & c->mask;
    }
    name_entry *e = &c->names[c->nnames++];
    e->hash = h;
    e->scope = scope;
    e->off = scope == SCOPE_KEYS ? (uint32_t)raw.n : (uint32_t)(raw.p - c->in->payload.p);
    e->n = scope == SCOPE_KEYS ? 0 : (uint16_t)raw.n;
    e->escaped = escaped;
    c->slot[i] = (uint16_t)c->nnames;
    return DRV_OK;
}

/* Empty the name table: each entry's slot, newest first (so probe chains stay intact). */
static void names_clear(jctx *c)
{
    while (c->nnames > 0) {
        uint32_t i = c->names[c->nnames - 1].hash & c->mask;
        while (c->slot[i] != c->nnames)
            i = (i + 1) & c->mask;
        c->slot[i] = 0;
        c->nnames--;
    }
}

/* The unit's flattened sample keys are distinct (run when some name had a '.'). */
static drv_err check_sample_keys(jctx *c)
{
    names_clear(c);
    for (uint32_t k = c->unit_first; k < c->out->n; k++) {
        drv_err e = names_add(c, SCOPE_KEYS, c->out->samples[k].key, (drv_span){NULL, k}, false);
        if (e != DRV_OK)
            return e;
    }
    return DRV_OK;
}

/*
 * The member name of key token t (unescaped into buf when it has escapes):
 * 1..128 bytes, no control characters.
 */
static drv_err member_name(jctx *c, const drv_json_token *t, char buf[DRV_SAMPLE_MAX_KEY],
                           drv_span *name)
{
    if (!t->escaped) {
        if (t->text.n > DRV_SAMPLE_MAX_KEY)
            return dec_fail(c->why, DRV_LIMIT, "key longer than 128 bytes");
        *name = t->text;
    } else {
        size_t n = drv_json_unescape(t->text, buf, DRV_SAMPLE_MAX_KEY);
        if (n == SIZE_MAX)
            return dec_fail(c->why, DRV_LIMIT, "key longer than 128 bytes");
        *name = (drv_span){buf, n};
    }
    if (name->n == 0)
        return dec_fail(c->why, DRV_MALFORMED, "empty key");
    if (!dec_no_controls(name->p, name->n))
        return dec_fail(c->why, DRV_MALFORMED, "control character in a key");
    if (memchr(name->p, '.', name->n))
        c->dotted = true;
    return DRV_OK;
}

/* Append a sample for the scalar token v under key. */
static drv_err emit(jctx *c, drv_span key, const drv_json_token *v)
{
    drv_sample *s;
    drv_err e = dec_sample(c->out, c->in->recv_ms, &s, c->why);
    if (e != DRV_OK)
        return e;
    s->key = key;
    switch (v->type) {
    case DRV_JSON_STRING:
        s->v.type = DRV_VALUE_STRING;
        return dec_string(c->out, v, &s->v.s, c->why);
    case DRV_JSON_NUMBER:
        return dec_number(v->text, v->integer, &s->v, c->why);
    case DRV_JSON_TRUE:
    case DRV_JSON_FALSE:
        s->v.type = DRV_VALUE_BOOL;
        s->v.b = v->type == DRV_JSON_TRUE;
        return DRV_OK;
    default:
        return dec_fail(c->why, DRV_MALFORMED, "expected a JSON value"); /* not reached */
    }
}

/* c->path[0..path_n) + '.' + part (or part alone at the top), copied into the arena. */
static drv_err arena_key(jctx *c, size_t path_n, drv_span part, drv_span *key)
{
    size_t n = path_n ? path_n + 1 + part.n : part.n;
    if (n > DRV_SAMPLE_MAX_KEY)
        return dec_fail(c->why, DRV_LIMIT, "key longer than 128 bytes");
    char *p;
    drv_err e = dec_alloc(c->out, n, &p, c->why);
    if (e != DRV_OK)
        return e;
    if (path_n) {
        memcpy(p, c->path, path_n);
        p[path_n] = '.';
    }
    memcpy(p + n - part.n, part.p, part.n);
    *key = (drv_span){p, n};
    return DRV_OK;
}

static drv_err walk_object(jctx *c, size_t path_n, uint32_t scope);
static drv_err walk_array(jctx *c, size_t path_n);

/*
 * One member of the object `scope` under prefix path[0..path_n): its name
 * (from key token kt) is read; now read its value.
 */
static drv_err member_value(jctx *c, size_t path_n, uint32_t scope, drv_span name,
                            const drv_json_token *kt)
{
    size_t key_n = path_n ? path_n + 1 + name.n : name.n;
    if (key_n > DRV_SAMPLE_MAX_KEY)
        return dec_fail(c->why, DRV_LIMIT, "key longer than 128 bytes");
    drv_err e = names_add(c, scope, name, kt->text, kt->escaped);
    if (e != DRV_OK)
        return e;
    drv_json_token v;
    switch (drv_json_next(&c->s, &v)) {
    case DRV_JSON_OBJECT:
    case DRV_JSON_ARRAY:
        if (path_n)
            c->path[path_n] = '.';
        memcpy(c->path + key_n - name.n, name.p, name.n);
        return v.type == DRV_JSON_OBJECT ? walk_object(c, key_n, c->next_scope++)
                                         : walk_array(c, key_n);
    case DRV_JSON_NULL:
        return DRV_OK;
    case DRV_JSON_STRING:
    case DRV_JSON_NUMBER:
    case DRV_JSON_TRUE:
    case DRV_JSON_FALSE: {
        drv_span key = name;
        if (path_n || kt->escaped) {
            e = arena_key(c, path_n, name, &key);
            if (e != DRV_OK)
                return e;
        }
        return emit(c, key, &v);
    }
    default:
        return dec_scan_error(&c->s, c->why);
    }
}

/* The members of an object whose '{' was just read, keys prefixed by path[0..path_n). */
static drv_err walk_object(jctx *c, size_t path_n, uint32_t scope)
{
    for (;;) {
        drv_json_token kt;
        drv_json_type type = drv_json_next(&c->s, &kt);
        if (type == DRV_JSON_OBJECT_END)
            return DRV_OK;
        if (type != DRV_JSON_KEY)
            return dec_scan_error(&c->s, c->why);
        char buf[DRV_SAMPLE_MAX_KEY];
        drv_span name;
        drv_err e = member_name(c, &kt, buf, &name);
        if (e == DRV_OK)
            e = member_value(c, path_n, scope, name, &kt);
        if (e != DRV_OK)
            return e;
    }
}

/* The elements of an array whose '[' was just read: scalars only, keyed path.<index>. */
static drv_err walk_array(jctx *c, size_t path_n)
{
    for (uint32_t i = 0;; i++) {
        drv_json_token v;
        switch (drv_json_next(&c->s, &v)) {
        case DRV_JSON_ARRAY_END:
            return DRV_OK;
        case DRV_JSON_OBJECT:
            return dec_fail(c->why, DRV_MALFORMED,
                            "arrays of objects are only allowed as a {ts, values} batch");
        case DRV_JSON_ARRAY:
            return dec_fail(c->why, DRV_MALFORMED, "arrays inside arrays are not supported");
        case DRV_JSON_NULL:
            continue;
        case DRV_JSON_STRING:
        case DRV_JSON_NUMBER:
        case DRV_JSON_TRUE:
        case DRV_JSON_FALSE: {
            char digits[10], *d = digits + sizeof(digits);
            uint32_t k = i;
            do {
                *--d = (char)('0' + k % 10);
                k /= 10;
            } while (k);
            drv_span key;
            drv_err e =
                arena_key(c, path_n, (drv_span){d, (size_t)(digits + sizeof(digits) - d)}, &key);
            if (e == DRV_OK)
                e = emit(c, key, &v);
            if (e != DRV_OK)
                return e;
            continue;
        }
        default:
            return dec_scan_error(&c->s, c->why);
        }
    }
}

/* An RFC 3339 date-time string (not a number in a string) as ms since 1970. */
static bool rfc3339(drv_span s, int64_t *ms)
{
    return s.n >= 20 && s.p[4] == '-' && drv_parse_time_ms(s.p, s.n, ms);
}

/* The value token of "ts" as ms since 1970. */
static drv_err read_ts(jctx *c, int64_t *ts)
{
    drv_json_token v;
    switch (drv_json_next(&c->s, &v)) {
    case DRV_JSON_NUMBER:
        if (!v.integer)
            return dec_fail(c->why, DRV_MALFORMED,
                            "\"ts\" must be whole milliseconds since 1970 (or an ISO-8601 string)");
        if (!drv_parse_i64(v.text.p, v.text.n, ts))
            return dec_fail(c->why, DRV_MALFORMED, "timestamp out of range");
        break;
    case DRV_JSON_STRING:
        if (v.escaped || !rfc3339(v.text, ts))
            return dec_fail(c->why, DRV_MALFORMED,
                            "\"ts\" string is not an ISO-8601 time like 2026-01-01T00:00:00.123Z");
        break;
    case DRV_JSON_ERROR:
        return dec_scan_error(&c->s, c->why);
    default:
        return dec_fail(c->why, DRV_MALFORMED,
                        "\"ts\" must be milliseconds since 1970 or an ISO-8601 string");
    }
    return dec_check_time(c->in, *ts, c->why);
}

/*
 * One unit: the top-level object, or one element of a batch (batch set),
 * whose '{' was just read.
 */
static drv_err decode_unit(jctx *c, bool batch)
{
    uint32_t root = c->next_scope++;
    c->unit_first = c->out->n;
    c->dotted = false;
    bool seen_ts = false, seen_values = false, seen_plain = false;
    int64_t ts = 0;
    static const char *const mixed = "\"ts\" and \"values\" cannot be mixed with other keys: send "
                                     "{\"ts\": ..., \"values\": {...}}";
    drv_err e = DRV_OK;
    for (;;) {
        drv_json_token kt;
        drv_json_type type = drv_json_next(&c->s, &kt);
        if (type == DRV_JSON_OBJECT_END)
            break;
        if (type != DRV_JSON_KEY)
            return dec_scan_error(&c->s, c->why);
        char buf[DRV_SAMPLE_MAX_KEY];
        drv_span name;
        e = member_name(c, &kt, buf, &name);
        if (e != DRV_OK)
            return e;
        bool is_ts = drv_span_eq(name, "ts"), is_values = drv_span_eq(name, "values");
        if ((is_ts || is_values) && seen_plain)
            return dec_fail(c->why, DRV_MALFORMED, mixed);
        if (is_ts) {
            if (seen_ts)
                return dec_fail(c->why, DRV_MALFORMED, "duplicate key");
            seen_ts = true;
            e = read_ts(c, &ts);
        } else if (is_values) {
            if (seen_values)
                return dec_fail(c->why, DRV_MALFORMED, "duplicate key");
            seen_values = true;
            drv_json_token v;
            drv_json_type vt = drv_json_next(&c->s, &v);
            if (vt == DRV_JSON_ERROR)
                return dec_scan_error(&c->s, c->why);
            if (vt != DRV_JSON_OBJECT)
                return dec_fail(c->why, DRV_MALFORMED, "\"values\" must be an object");
            e = walk_object(c, 0, c->next_scope++);
        } else {
            if (batch)
                return dec_fail(c->why, DRV_MALFORMED,
                                "a batch element may only have the keys \"ts\" and \"values\"");
            if (seen_ts || seen_values)
                return dec_fail(c->why, DRV_MALFORMED, mixed);
            seen_plain = true;
            e = member_value(c, 0, root, name, &kt);
        }
        if (e != DRV_OK)
            return e;
    }
    if (batch || seen_ts || seen_values) {
        if (!seen_ts)
            return dec_fail(c->why, DRV_MALFORMED, "\"ts\" missing next to \"values\"");
        if (!seen_values)
            return dec_fail(c->why, DRV_MALFORMED, "\"values\" missing next to \"ts\"");
        for (uint32_t k = c->unit_first; k < c->out->n; k++)
            c->out->samples[k].ts_ms = ts;
    }
    if (c->dotted)
        e = check_sample_keys(c);
    names_clear(c);
    return e;
}

static drv_err decode(jctx *c)
{
    drv_json_token t;
    drv_err e;
    switch (drv_json_next(&c->s, &t)) {
    case DRV_JSON_OBJECT:
        e = decode_unit(c, false);
        break;
    case DRV_JSON_ARRAY:
        for (;;) {
            drv_json_type type = drv_json_next(&c->s, &t);
            if (type == DRV_JSON_ARRAY_END)
                break;
            if (type == DRV_JSON_ERROR)
                return dec_scan_error(&c->s, c->why);
            if (type != DRV_JSON_OBJECT)
                return dec_fail(c->why, DRV_MALFORMED,
                                "a JSON array must be a batch of {\"ts\": ..., \"values\": {...}} "
                                "objects");
            e = decode_unit(c, true);
            if (e != DRV_OK)
                return e;
        }
        e = DRV_OK;
        break;
    case DRV_JSON_ERROR:
        return dec_scan_error(&c->s, c->why);
    default:
        return dec_fail(c->why, DRV_MALFORMED, "expected a JSON object");
    }
    if (e != DRV_OK)
        return e;
    if (drv_json_next(&c->s, &t) != DRV_JSON_END)
        return dec_scan_error(&c->s, c->why);
    return DRV_OK;
}

static drv_err json_decode(const drv_decode_in *in, drv_decode_out *out, const char **why)
{
    dec_begin(out, why);
    if (in->payload.n > UINT32_MAX)
        return dec_end(out, dec_fail(why, DRV_LIMIT, "payload too large"));
    jctx c;
    c.in = in;
    c.out = out;
    c.why = why;
    c.next_scope = 0;
    c.nnames = 0;
    /* Slots ≥ payload length + 2 bound both the members (≥ 5 bytes each) and the
     * samples (≥ 2 bytes each) at half the table. */
    uint32_t slots = 16;
    while (slots < JSON_MAX_SLOTS && slots < in->payload.n + 2)
        slots *= 2;
    c.mask = slots - 1;
    memset(c.slot, 0, slots * sizeof(c.slot[0]));
    drv_json_init(&c.s, in->payload.p, in->payload.n);
    return dec_end(out, decode(&c));
}

const drv_decoder_ops drv_decoder_json = {
    .name = "json",
    .decode = json_decode,
};
