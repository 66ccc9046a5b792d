/*
 * decode_senml.c — the "senml" payload decoder: RFC 8428 JSON (application/
 * senml+json) into samples.
 *
 * The payload is an array of records (objects).  Records are resolved as
 * RFC 8428 §4.6 says: base fields (bn, bt, bv, bver; bu and bs too) apply to
 * their own record and every later one until replaced; the key is bn + n;
 * the time is bt + t seconds, and a resolved time below 2^28 is relative to
 * the receive time (§4.5.3: 0 = now, negative = the past); v is added to bv.
 * Each record with a value (exactly one of v, vb, vs, vd) gives one sample:
 * v → DOUBLE (INT when v and bv are both written as integers and the sum
 * fits), vb → BOOL, vs → STRING, vd → STRING as sent (base64url text).
 * Seconds become milliseconds rounded to the nearest.
 *
 * Not kept (yet): units (u, bu), sums (s, bs) and ut are read, type-checked
 * and dropped; a record with only base fields (RFC 8428 §5.1.9 sends bn
 * alone) sets them and gives no sample; a record with anything else but no
 * value is an error.  Names are checked as sample keys (1..128 bytes of
 * UTF-8, no control characters), not against RFC 8428's narrower character
 * set, because LwM2M devices send names like "/3303/0/5700".  Unknown fields
 * are skipped unless they end in '_' (must-understand, §4.4: an error);
 * bver above 10 is an error.  Known fields may appear once per record.
 */
#include "pipeline/decode_int.h"

#include <math.h>
#include <string.h>

#include "core/num.h"

/* The SenML version this decoder implements (RFC 8428). */
#define SENML_VERSION 10

/* Relative times are those below 2^28 s (RFC 8428 §4.5.3). */
#define SENML_RELATIVE_LIMIT 268435456.0

/* The record fields, one bit each (for "seen once" and "has a value"). */
enum {
    F_BN = 1 << 0,
    F_BT = 1 << 1,
    F_BU = 1 << 2,
    F_BV = 1 << 3,
    F_BS = 1 << 4,
    F_BVER = 1 << 5,
    F_N = 1 << 6,
    F_U = 1 << 7,
    F_V = 1 << 8,
    F_VS = 1 << 9,
    F_VB = 1 << 10,
    F_VD = 1 << 11,
    F_S = 1 << 12,
    F_T = 1 << 13,
    F_UT = 1 << 14,
};

#define F_VALUES (F_V | F_VS | F_VB | F_VD)
#define F_BASES (F_BN | F_BT | F_BU | F_BV | F_BS | F_BVER)

/* What a field's value must be. */
enum {
    K_STRING,
    K_NUMBER,
    K_BOOL
};

static const struct field {
    const char *name;
    size_t len; /* strlen(name) */
    unsigned bit;
    int kind;
    const char *wrong; /* the error when the value has another type */
} fields[] = {
    {"bn", 2, F_BN, K_STRING, "SenML \"bn\" must be a string"},
    {"bt", 2, F_BT, K_NUMBER, "SenML \"bt\" must be a number"},
    {"bu", 2, F_BU, K_STRING, "SenML \"bu\" must be a string"},
    {"bv", 2, F_BV, K_NUMBER, "SenML \"bv\" must be a number"},
    {"bs", 2, F_BS, K_NUMBER, "SenML \"bs\" must be a number"},
    {"bver", 4, F_BVER, K_NUMBER, "SenML \"bver\" must be a number"},
    {"n", 1, F_N, K_STRING, "SenML \"n\" must be a string"},
    {"u", 1, F_U, K_STRING, "SenML \"u\" must be a string"},
    {"v", 1, F_V, K_NUMBER, "SenML \"v\" must be a number"},
    {"vs", 2, F_VS, K_STRING, "SenML \"vs\" must be a string"},
    {"vb", 2, F_VB, K_BOOL, "SenML \"vb\" must be true or false"},
    {"vd", 2, F_VD, K_STRING, "SenML \"vd\" must be a string"},
    {"s", 1, F_S, K_NUMBER, "SenML \"s\" must be a number"},
    {"t", 1, F_T, K_NUMBER, "SenML \"t\" must be a number"},
    {"ut", 2, F_UT, K_NUMBER, "SenML \"ut\" must be a number"},
};

/* A number field as written and as a double. */
typedef struct num_field {
    drv_span text; /* the token's text */
    bool integer;  /* written without fraction or exponent */
    double d;      /* its value (finite) */
} num_field;

/* Base values carried from record to record. */
typedef struct senml_base {
    drv_json_token bn; /* base name (STRING token; text empty when unset) */
    double bt;         /* base time, seconds */
    bool has_bv;       /* bv is set */
    num_field bv;      /* base value */
} senml_base;

/* One record's own fields. */
typedef struct senml_record {
    unsigned seen;       /* F_* bits of the fields present */
    drv_json_token n;    /* name */
    double t;            /* time, seconds (0 when absent) */
    num_field v;         /* numeric value */
    drv_json_token sval; /* vs or vd */
    bool vb;             /* boolean value */
} senml_record;

static drv_err read_number(const drv_json_token *t, num_field *f, const char **why)
{
    double d;
    if (!drv_parse_double(t->text.p, t->text.n, &d))
        return dec_fail(why, DRV_LIMIT, "number longer than 1024 characters");
    if (isinf(d))
        return dec_fail(why, DRV_MALFORMED, "number out of range");
    f->text = t->text;
    f->integer = t->integer;
    f->d = d;
    return DRV_OK;
}

/* Read one field's value (key token kt already read) into the record or the base. */
static drv_err read_field(drv_json_scan *s, const drv_json_token *kt, senml_base *base,
                          senml_record *r, const char **why)
{
    const struct field *f = NULL;
    for (size_t i = 0; !kt->escaped && i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (kt->text.n == fields[i].len && memcmp(kt->text.p, fields[i].name, fields[i].len) == 0) {
            f = &fields[i];
            break;
        }
    }
    drv_json_token v;
    drv_json_type type = drv_json_next(s, &v);
    if (type == DRV_JSON_ERROR)
        return dec_scan_error(s, why);
    if (!f) {
        /* Unknown: skip, unless it must be understood (its name ends in '_'). */
        size_t n = drv_json_unescaped_len(kt->text);
        char last = 0;
        if (n > 0 && !kt->escaped)
            last = kt->text.p[kt->text.n - 1];
        else if (n > 0 && n <= DRV_SAMPLE_MAX_KEY) {
            char buf[DRV_SAMPLE_MAX_KEY];
            drv_json_unescape(kt->text, buf, sizeof(buf));
            last = buf[n - 1];
        }
        if (last == '_')
            return dec_fail(why, DRV_MALFORMED,
                            "SenML record has a must-understand field (name ending in '_') "
                            "this decoder does not know");
        return drv_json_skip(s, &v) ? DRV_OK : dec_scan_error(s, why);
    }
    if (r->seen & f->bit)
        return dec_fail(why, DRV_MALFORMED, "duplicate key");
    r->seen |= f->bit;
    bool ok = f->kind == K_STRING   ? type == DRV_JSON_STRING
              : f->kind == K_NUMBER ? type == DRV_JSON_NUMBER
                                    : type == DRV_JSON_TRUE || type == DRV_JSON_FALSE;
    if (!ok)
        return dec_fail(why, DRV_MALFORMED, f->wrong);
    num_field num;
    drv_err e = DRV_OK;
    if (f->kind == K_NUMBER && (e = read_number(&v, &num, why)) != DRV_OK)
        return e;
    switch (f->bit) {
    case F_BN:
        base->bn = v;
        break;
    case F_BT:
        base->bt = num.d;
        break;
    case F_BV:
        base->bv = num;
        base->has_bv = true;
        break;
    case F_BVER:
        if (num.d > SENML_VERSION)
            return dec_fail(why, DRV_MALFORMED, "SenML version (bver) newer than 10");
        break;
    case F_N:
        r->n = v;
        break;
    case F_V:
        r->v = num;
        break;
    case F_VS:
    case F_VD:
        r->sval = v;
        break;
    case F_VB:
        r->vb = type == DRV_JSON_TRUE;
        break;
    case F_T:
        r->t = num.d;
        break;
    default: /* bu, bs, u, s, ut: checked, not kept */
        break;
    }
    return DRV_OK;
}

/* One name part (bn or n) unescaped into buf when needed; the key limit applies to each. */
static drv_err name_part(const drv_json_token *t, char buf[DRV_SAMPLE_MAX_KEY], drv_span *part,
                         const char **why)
{
    if (!t->escaped) {
        *part = t->text;
        return DRV_OK;
    }
    size_t n = drv_json_unescape(t->text, buf, DRV_SAMPLE_MAX_KEY);
    if (n == SIZE_MAX)
        return dec_fail(why, DRV_LIMIT, "key longer than 128 bytes");
    *part = (drv_span){buf, n};
    return DRV_OK;
}

/* The record's key bn + n: into the payload when one part is empty and unescaped, else the arena. */
static drv_err record_key(drv_decode_out *out, const senml_base *base, const senml_record *r,
                          drv_span *key, const char **why)
{
    char b1[DRV_SAMPLE_MAX_KEY], b2[DRV_SAMPLE_MAX_KEY];
    drv_span bn = {NULL, 0}, n = {NULL, 0};
    drv_err e = DRV_OK;
    if (base->bn.text.n)
        e = name_part(&base->bn, b1, &bn, why);
    if (e == DRV_OK && (r->seen & F_N) && r->n.text.n)
        e = name_part(&r->n, b2, &n, why);
    if (e != DRV_OK)
        return e;
    if (bn.n + n.n == 0)
        return dec_fail(why, DRV_MALFORMED, "SenML record has an empty name (bn + n)");
    if (bn.n + n.n > DRV_SAMPLE_MAX_KEY)
        return dec_fail(why, DRV_LIMIT, "key longer than 128 bytes");
    if (n.n == 0 && !base->bn.escaped) {
        *key = bn;
    } else if (bn.n == 0 && !r->n.escaped) {
        *key = n;
    } else {
        char *p;
        e = dec_alloc(out, bn.n + n.n, &p, why);
        if (e != DRV_OK)
            return e;
        if (bn.n)
            memcpy(p, bn.p, bn.n);
        if (n.n)
            memcpy(p + bn.n, n.p, n.n);
        *key = (drv_span){p, bn.n + n.n};
    }
    return dec_check_key(*key, why);
}

/* The record's resolved time in ms. */
static drv_err record_time(const drv_decode_in *in, const senml_base *base, const senml_record *r,
                           int64_t *ts, const char **why)
{
    double sec = base->bt + r->t;
    /* ±1e13 s is ±300,000 years: far beyond any real time, and ms stay exact in int64. */
    if (!(sec > -1e13 && sec < 1e13))
        return dec_fail(why, DRV_MALFORMED, "SenML time out of range");
    int64_t ms = llround(sec * 1000.0);
    if (sec < SENML_RELATIVE_LIMIT)
        ms += in->recv_ms;
    *ts = ms;
    return dec_check_time(in, ms, why);
}

/* The record's numeric value, bv added. */
static drv_err record_number(const senml_base *base, const senml_record *r, drv_value *v,
                             const char **why)
{
    int64_t a, b = 0;
    if (r->v.integer && drv_parse_i64(r->v.text.p, r->v.text.n, &a) &&
        (!base->has_bv ||
         (base->bv.integer && drv_parse_i64(base->bv.text.p, base->bv.text.n, &b))) &&
        !__builtin_add_overflow(a, b, &v->i)) {
        v->type = DRV_VALUE_INT;
        return DRV_OK;
    }
    double d = r->v.d + (base->has_bv ? base->bv.d : 0.0);
    if (isinf(d))
        return dec_fail(why, DRV_MALFORMED, "number out of range");
    v->type = DRV_VALUE_DOUBLE;
    v->d = d;
    return DRV_OK;
}

/* A record (its '{' just read): its fields, then its sample if it has a value. */
static drv_err decode_record(drv_json_scan *s, const drv_decode_in *in, drv_decode_out *out,
                             senml_base *base, const char **why)
{
    senml_record r;
    memset(&r, 0, sizeof(r));
    for (;;) {
        drv_json_token kt;
        drv_json_type type = drv_json_next(s, &kt);
        if (type == DRV_JSON_OBJECT_END)
            break;
        if (type != DRV_JSON_KEY)
            return dec_scan_error(s, why);
        drv_err e = read_field(s, &kt, base, &r, why);
        if (e != DRV_OK)
            return e;
    }
    unsigned values = r.seen & F_VALUES;
    if (values == 0) {
        if ((r.seen & ~F_BASES) == 0)
            return DRV_OK; /* base fields only */
        return dec_fail(why, DRV_MALFORMED, "SenML record has no value (v, vb, vs or vd)");
    }
    if (values & (values - 1))
        return dec_fail(why, DRV_MALFORMED, "SenML record has more than one value (v, vb, vs, vd)");
    drv_span key;
    int64_t ts;
    drv_err e = record_key(out, base, &r, &key, why);
    if (e == DRV_OK)
        e = record_time(in, base, &r, &ts, why);
    drv_sample *smp;
    if (e == DRV_OK)
        e = dec_sample(out, ts, &smp, why);
    if (e != DRV_OK)
        return e;
    smp->key = key;
    switch (values) {
    case F_V:
        return record_number(base, &r, &smp->v, why);
    case F_VB:
        smp->v.type = DRV_VALUE_BOOL;
        smp->v.b = r.vb;
        return DRV_OK;
    default: /* vs, vd */
        smp->v.type = DRV_VALUE_STRING;
        return dec_string(out, &r.sval, &smp->v.s, why);
    }
}

static drv_err decode(drv_json_scan *s, const drv_decode_in *in, drv_decode_out *out,
                      const char **why)
{
    drv_json_token t;
    drv_json_type type = drv_json_next(s, &t);
    if (type == DRV_JSON_ERROR)
        return dec_scan_error(s, why);
    if (type != DRV_JSON_ARRAY)
        return dec_fail(why, DRV_MALFORMED, "expected a SenML array of records");
    senml_base base;
    memset(&base, 0, sizeof(base));
    for (;;) {
        type = drv_json_next(s, &t);
        if (type == DRV_JSON_ARRAY_END)
            break;
        if (type == DRV_JSON_ERROR)
            return dec_scan_error(s, why);
        if (type != DRV_JSON_OBJECT)
            return dec_fail(why, DRV_MALFORMED, "a SenML record must be a JSON object");
        drv_err e = decode_record(s, in, out, &base, why);
        if (e != DRV_OK)
            return e;
    }
    if (drv_json_next(s, &t) != DRV_JSON_END)
        return dec_scan_error(s, why);
    return DRV_OK;
}

static drv_err senml_decode(const drv_decode_in *in, drv_decode_out *out, const char **why)
{
    dec_begin(out, why);
    drv_json_scan s;
    drv_json_init(&s, in->payload.p, in->payload.n);
    return dec_end(out, decode(&s, in, out, why));
}

const drv_decoder_ops drv_decoder_senml = {
    .name = "senml",
    .decode = senml_decode,
};
