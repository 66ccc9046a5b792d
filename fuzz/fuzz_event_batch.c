/*
 * fuzz_event_batch.c — libFuzzer harness for the live event bus's records
 * (src/live/event.c): a batch that comes from another node is untrusted.
 *
 * Input: one mode byte, then
 *   mode bit 0 clear — a batch as it arrives: walked with drv_event_next and
 *     drv_event_sample from an exact-size heap copy (a read past the end is
 *     an ASan report);
 *   mode bit 0 set   — a program that describes events (see build()); they
 *     are written with drv_event_batch_add and read back.
 *
 * Checked (abort on violation):
 *   - walking: every accepted record lies inside the batch and past the
 *     previous one, its tenant, device, keys, strings, kind and detail are
 *     inside it, its samples walk to the exact end of their bytes with the
 *     count the record states; a second walk gives the same answer, and so
 *     does a walk of only the bytes the first one accepted;
 *   - re-encoding: an accepted record that the writer accepts again (its
 *     ids free of NUL bytes, within the writer's limits) reads back equal;
 *   - the round trip: every event the writer accepts reads back equal, in
 *     order, and nothing else is in the batch; the writer refuses exactly
 *     what is over a limit (DRV_INVAL) and leaves the batch as it was.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "live/event.h"

#include "fuzz.h"

static bool inside(drv_span s, const uint8_t *p, size_t n)
{
    const char *lo = (const char *)p;
    return s.n == 0 || (s.p >= lo && s.n <= n && (size_t)(s.p - lo) <= n - s.n);
}

static bool value_eq(const drv_value *a, const drv_value *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case DRV_VALUE_DOUBLE:
        return memcmp(&a->d, &b->d, sizeof(double)) == 0;
    case DRV_VALUE_INT:
        return a->i == b->i;
    case DRV_VALUE_BOOL:
        return a->b == b->b;
    case DRV_VALUE_STRING:
        return a->s.n == b->s.n && (a->s.n == 0 || memcmp(a->s.p, b->s.p, a->s.n) == 0);
    }
    return false;
}

static bool span_eq(drv_span a, drv_span b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

/* Records laid out with a kind string and a detail: device events, and
 * shadow and command events (TWIN), whose detail may be longer. */
static bool is_detail_kind(drv_event_kind k)
{
    return k == DRV_EVENT_DEVICE || k == DRV_EVENT_TWIN;
}

static size_t detail_max(drv_event_kind k)
{
    return k == DRV_EVENT_TWIN ? DRV_EVENT_MAX_TWIN_DETAIL : DRV_EVENT_MAX_DETAIL;
}

/* The invariants of one accepted view of p[0..n). */
static void check_view(const drv_event_view *v, const uint8_t *p, size_t n)
{
    FUZZ_ASSERT(v->tenant.n > 0 && v->tenant.n <= 255 && inside(v->tenant, p, n));
    FUZZ_ASSERT(v->device.n > 0 && v->device.n <= 255 && inside(v->device, p, n));
    if (v->kind == DRV_EVENT_TELEMETRY) {
        FUZZ_ASSERT(inside(v->samples, p, n));
        FUZZ_ASSERT(v->dev_kind.n == 0 && v->detail.n == 0);
        size_t off = 0;
        uint32_t k = 0;
        drv_sample s;
        while (drv_event_sample(v, &off, &s)) {
            FUZZ_ASSERT(s.key.n > 0 && s.key.n <= 255 && inside(s.key, p, n));
            FUZZ_ASSERT(s.ts_ms == v->ts_ms);
            FUZZ_ASSERT(s.v.type >= DRV_VALUE_DOUBLE && s.v.type <= DRV_VALUE_STRING);
            if (s.v.type == DRV_VALUE_STRING)
                FUZZ_ASSERT(s.v.s.n <= UINT16_MAX && inside(s.v.s, p, n));
            FUZZ_ASSERT(off <= v->samples.n);
            k++;
        }
        FUZZ_ASSERT(k == v->nsamples && off == v->samples.n);
        FUZZ_ASSERT(!drv_event_sample(v, &off, &s));
    } else if (v->kind == DRV_EVENT_GAP) {
        FUZZ_ASSERT(v->nsamples == 0 && v->samples.n == 0 && v->dev_kind.n == 0 &&
                    v->detail.n == 0);
    } else {
        FUZZ_ASSERT(is_detail_kind(v->kind));
        FUZZ_ASSERT(v->nsamples == 0 && v->samples.n == 0);
        FUZZ_ASSERT(v->dev_kind.n > 0 && inside(v->dev_kind, p, n));
        FUZZ_ASSERT(inside(v->detail, p, n));
    }
}

/* a and b describe the same event. */
static bool views_eq(const drv_event_view *a, const drv_event_view *b)
{
    if (a->kind != b->kind || a->ts_ms != b->ts_ms || !span_eq(a->tenant, b->tenant) ||
        !span_eq(a->device, b->device))
        return false;
    if (is_detail_kind(a->kind))
        return a->id == b->id && span_eq(a->dev_kind, b->dev_kind) && span_eq(a->detail, b->detail);
    if (a->nsamples != b->nsamples)
        return false;
    size_t oa = 0, ob = 0;
    drv_sample sa, sb;
    for (uint32_t i = 0; i < a->nsamples; i++) {
        if (!drv_event_sample(a, &oa, &sa) || !drv_event_sample(b, &ob, &sb))
            return false;
        if (!span_eq(sa.key, sb.key) || !value_eq(&sa.v, &sb.v))
            return false;
    }
    return true;
}

/* A NUL-terminated copy of s (NULL when s holds a NUL byte). */
static char *cstr(drv_span s)
{
    if (s.n && memchr(s.p, 0, s.n))
        return NULL;
    char *c = malloc(s.n + 1);
    FUZZ_ASSERT(c != NULL);
    if (s.n)
        memcpy(c, s.p, s.n);
    c[s.n] = '\0';
    return c;
}

/* Write an accepted view again with drv_event_batch_add; if the writer
 * takes it, it reads back equal. */
static void reencode(const drv_event_view *v)
{
    char *tenant = cstr(v->tenant), *device = cstr(v->device);
    char *kind = is_detail_kind(v->kind) ? cstr(v->dev_kind) : NULL;
    char *detail = is_detail_kind(v->kind) && v->detail.n ? cstr(v->detail) : NULL;
    drv_sample *s = NULL;
    bool ok = tenant && device;
    if (is_detail_kind(v->kind))
        ok = ok && kind && (v->detail.n == 0 || detail);
    drv_event ev = {.kind = v->kind, .tenant = tenant, .device = device, .ts_ms = v->ts_ms};
    if (ok && v->kind == DRV_EVENT_TELEMETRY) {
        s = malloc(sizeof(*s) * (v->nsamples ? v->nsamples : 1));
        FUZZ_ASSERT(s != NULL);
        size_t off = 0;
        for (uint32_t i = 0; i < v->nsamples; i++)
            FUZZ_ASSERT(drv_event_sample(v, &off, &s[i]));
        ev.samples = s;
        ev.nsamples = v->nsamples;
    } else if (ok) {
        ev.dev_kind = kind;
        ev.id = v->id;
        ev.detail = detail;
    }
    if (ok) {
        drv_buf b;
        drv_buf_init(&b, 1u << 24);
        drv_err e = drv_event_batch_add(&b, &ev);
        bool over = is_detail_kind(v->kind) &&
                    (v->dev_kind.n > DRV_EVENT_MAX_KIND || v->detail.n > detail_max(v->kind));
        FUZZ_ASSERT(over ? e == DRV_INVAL : e == DRV_OK);
        if (e == DRV_OK) {
            size_t off = 0;
            drv_event_view w;
            FUZZ_ASSERT(drv_event_next(b.data, b.len, &off, &w) && off == b.len);
            FUZZ_ASSERT(views_eq(v, &w));
        }
        drv_buf_free(&b);
    }
    free(s);
    free(tenant);
    free(device);
    free(kind);
    free(detail);
}

/* Walk p[0..n): the records accepted and where the walk stopped. */
static size_t walk(const uint8_t *p, size_t n, size_t *end, bool deep)
{
    size_t off = 0, k = 0;
    drv_event_view v;
    while (drv_event_next(p, n, &off, &v)) {
        FUZZ_ASSERT(off <= n);
        if (deep) {
            check_view(&v, p, n);
            reencode(&v);
        }
        k++;
    }
    *end = off;
    return k;
}

static void untrusted(const uint8_t *data, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    FUZZ_ASSERT(p != NULL);
    if (n)
        memcpy(p, data, n);
    size_t end = 0, end2 = 0, end3 = 0;
    size_t k = walk(p, n, &end, true);
    FUZZ_ASSERT(end <= n);
    FUZZ_ASSERT(walk(p, n, &end2, false) == k && end2 == end);
    /* The accepted part alone: the same records. */
    uint8_t *q = malloc(end ? end : 1);
    FUZZ_ASSERT(q != NULL);
    if (end)
        memcpy(q, p, end);
    FUZZ_ASSERT(walk(q, end, &end3, false) == k && end3 == end);
    free(q);
    free(p);
}

/* ------------------------------------------------------------------------ */
/* Building events from the input                                            */

typedef struct reader {
    const uint8_t *p;
    size_t n, off;
} reader;

static uint8_t rd_u8(reader *r)
{
    return r->off < r->n ? r->p[r->off++] : 0;
}

static uint64_t rd_u64(reader *r)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | rd_u8(r);
    return v;
}

/* n bytes from the input into dst, NUL bytes made 'a' (ids are C strings). */
static void rd_text(reader *r, char *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = rd_u8(r);
        dst[i] = c ? (char)c : 'a';
    }
    dst[n] = '\0';
}

#define MAX_EVENTS 64
#define MAX_SAMPLES 24

typedef struct built {
    drv_event ev;
    drv_err want; /* what the writer must answer */
    char tenant[300], device[300], kind[80], detail[300];
    char keys[MAX_SAMPLES][300];
    char strs[MAX_SAMPLES][64];
    drv_sample s[MAX_SAMPLES];
} built;

/*
 * The program: per event, a header byte h (bit 0: device event; bits 1-2:
 * the id lengths' scale: 0 short (0..7 bytes), 1 at the 255-byte limit,
 * 2 past it, 3 random up to 299), then the tenant and device lengths and
 * bytes, the time (8 bytes); for telemetry a sample count (0..23) and per
 * sample a key length, key bytes, a type byte (low 3 bits: 1..4 known,
 * others unknown) and the value (8 bytes, 1 byte, or a string length 0..63
 * and its bytes); for a device event a kind length (0..79), its bytes, the
 * id (8 bytes), a detail length (0..299, 255: none) and its bytes.
 */
static size_t id_len(reader *r, uint8_t scale)
{
    uint8_t b = rd_u8(r);
    switch (scale) {
    case 0:
        return b % 8;
    case 1:
        return 250 + b % 6; /* 250..255 */
    case 2:
        return 256 + b % 4;
    default:
        return b % 300;
    }
}

static void build(reader *r, built *e)
{
    memset(&e->ev, 0, sizeof(e->ev));
    uint8_t h = rd_u8(r);
    uint8_t scale = (h >> 1) & 3;
    size_t tl = id_len(r, scale), dl = id_len(r, scale & 1);
    rd_text(r, e->tenant, tl);
    rd_text(r, e->device, dl);
    e->ev.tenant = e->tenant;
    e->ev.device = e->device;
    e->ev.ts_ms = (int64_t)rd_u64(r);
    e->want = DRV_OK;
    if (tl > 255 || dl > 255 || tl == 0 || dl == 0)
        e->want = DRV_INVAL; /* an empty id is a record the reader refuses */
    if (h & 1) {
        /* bit 3 of the head picks a shadow/command event, else a device event */
        e->ev.kind = (h & 8) ? DRV_EVENT_TWIN : DRV_EVENT_DEVICE;
        size_t kl = rd_u8(r) % 80;
        rd_text(r, e->kind, kl);
        e->ev.dev_kind = e->kind;
        e->ev.id = (int64_t)rd_u64(r);
        uint8_t x = rd_u8(r);
        if (x != 255) {
            size_t xl = (size_t)x + (size_t)(rd_u8(r) & 1) * 44; /* 0..299 */
            rd_text(r, e->detail, xl);
            e->ev.detail = e->detail;
        }
        if (kl == 0 || kl > DRV_EVENT_MAX_KIND)
            e->want = DRV_INVAL;
        return;
    }
    e->ev.kind = DRV_EVENT_TELEMETRY;
    uint32_t ns = rd_u8(r) % MAX_SAMPLES;
    for (uint32_t i = 0; i < ns; i++) {
        drv_sample *s = &e->s[i];
        memset(s, 0, sizeof(*s));
        /* keys follow the ids' scale, but only every other key goes past the limit */
        size_t kl = id_len(r, scale == 2 ? ((i & 1) ? 2 : 0) : scale);
        rd_text(r, e->keys[i], kl);
        s->key = (drv_span){e->keys[i], kl};
        uint8_t t = rd_u8(r) & 7;
        s->v.type = (drv_value_type)t;
        uint64_t raw;
        switch (t) {
        case DRV_VALUE_DOUBLE:
            raw = rd_u64(r);
            memcpy(&s->v.d, &raw, 8);
            break;
        case DRV_VALUE_INT:
            s->v.i = (int64_t)rd_u64(r);
            break;
        case DRV_VALUE_BOOL:
            s->v.b = rd_u8(r) & 1;
            break;
        case DRV_VALUE_STRING: {
            size_t sl = rd_u8(r) % 64;
            for (size_t k = 0; k < sl; k++)
                e->strs[i][k] = (char)rd_u8(r); /* any bytes, NUL included */
            s->v.s = (drv_span){e->strs[i], sl};
            break;
        }
        default:
            e->want = DRV_INVAL; /* a type the reader does not know */
            break;
        }
        if (kl == 0 || kl > 255)
            e->want = DRV_INVAL;
    }
    e->ev.samples = e->s;
    e->ev.nsamples = ns;
}

/* The event e describes equals view v. */
static bool built_eq(const built *e, const drv_event_view *v)
{
    const drv_event *ev = &e->ev;
    if (v->kind != ev->kind || v->ts_ms != ev->ts_ms ||
        !span_eq(v->tenant, (drv_span){ev->tenant, strlen(ev->tenant)}) ||
        !span_eq(v->device, (drv_span){ev->device, strlen(ev->device)}))
        return false;
    if (is_detail_kind(ev->kind)) {
        drv_span detail = {ev->detail ? ev->detail : "", ev->detail ? strlen(ev->detail) : 0};
        return v->id == ev->id &&
               span_eq(v->dev_kind, (drv_span){ev->dev_kind, strlen(ev->dev_kind)}) &&
               span_eq(v->detail, detail);
    }
    if (v->nsamples != ev->nsamples)
        return false;
    size_t off = 0;
    drv_sample s;
    for (uint32_t i = 0; i < ev->nsamples; i++) {
        if (!drv_event_sample(v, &off, &s) || !span_eq(s.key, ev->samples[i].key) ||
            !value_eq(&s.v, &ev->samples[i].v))
            return false;
    }
    return true;
}

static void roundtrip(const uint8_t *data, size_t n)
{
    static built ev[MAX_EVENTS];
    reader r = {.p = data, .n = n};
    drv_buf b;
    drv_buf_init(&b, 1u << 20);
    size_t kept[MAX_EVENTS], nk = 0;
    for (size_t i = 0; i < MAX_EVENTS && r.off < r.n; i++) {
        build(&r, &ev[i]);
        uint32_t before = b.len;
        drv_err e = drv_event_batch_add(&b, &ev[i].ev);
        FUZZ_ASSERT(e == ev[i].want);
        if (e == DRV_OK)
            kept[nk++] = i;
        else
            FUZZ_ASSERT(b.len == before);
    }
    uint8_t *p = malloc(b.len ? b.len : 1);
    FUZZ_ASSERT(p != NULL);
    if (b.len)
        memcpy(p, b.data, b.len);
    size_t off = 0;
    drv_event_view v;
    for (size_t i = 0; i < nk; i++) {
        FUZZ_ASSERT(drv_event_next(p, b.len, &off, &v));
        check_view(&v, p, b.len);
        FUZZ_ASSERT(built_eq(&ev[kept[i]], &v));
    }
    FUZZ_ASSERT(off == b.len && !drv_event_next(p, b.len, &off, &v));
    free(p);
    drv_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    if (data[0] & 1)
        roundtrip(data + 1, size - 1);
    else
        untrusted(data + 1, size - 1);
    return 0;
}
