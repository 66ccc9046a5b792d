/*
 * event.c — the bus record of an event (see event.h).
 *
 * Record layout (little-endian, packed):
 *   u32 length of the whole record
 *   u8  kind, u8 tenant length, u8 device length
 *   i64 ts_ms
 *   tenant bytes, device bytes
 *   TELEMETRY: u16 sample count, then per sample:
 *              u8 key length, key, u8 value type, value
 *              (DOUBLE/INT 8 bytes, BOOL 1, STRING u16 length + bytes)
 *   DEVICE:    i64 id, u8 kind length, kind, u16 detail length, detail
 *   TWIN:      as DEVICE (kind is the whole type, "shadow.updated")
 */
#include "live/event.h"

#include <string.h>

#define HEAD_BYTES (4 + 3 + 8)

static void put_u16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, 2);
}

static uint16_t get_u16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static size_t sample_bytes(const drv_sample *s)
{
    size_t n = 1 + s->key.n + 1;
    switch (s->v.type) {
    case DRV_VALUE_DOUBLE:
    case DRV_VALUE_INT:
        return n + 8;
    case DRV_VALUE_BOOL:
        return n + 1;
    case DRV_VALUE_STRING:
        return n + 2 + s->v.s.n;
    }
    return n;
}

drv_err drv_event_batch_add(drv_buf *batch, const drv_event *ev)
{
    size_t tl = strlen(ev->tenant), dl = strlen(ev->device);
    /* Refuse what drv_event_next would: one bad record must not cost the
     * batch behind it. */
    if (tl == 0 || dl == 0 || tl > 255 || dl > 255)
        return DRV_INVAL;
    size_t len = HEAD_BYTES + tl + dl;
    size_t kl = 0, xl = 0;
    if (ev->kind == DRV_EVENT_TELEMETRY) {
        if (ev->nsamples > UINT16_MAX)
            return DRV_INVAL;
        len += 2;
        for (uint32_t i = 0; i < ev->nsamples; i++) {
            const drv_sample *s = &ev->samples[i];
            bool typed = s->v.type >= DRV_VALUE_DOUBLE && s->v.type <= DRV_VALUE_STRING;
            if (!typed || s->key.n == 0 || s->key.n > 255 ||
                (s->v.type == DRV_VALUE_STRING && s->v.s.n > UINT16_MAX))
                return DRV_INVAL;
            len += sample_bytes(s);
        }
    } else if (ev->kind == DRV_EVENT_GAP) {
        /* nothing but the head */
    } else if (ev->kind == DRV_EVENT_DEVICE || ev->kind == DRV_EVENT_TWIN) {
        kl = ev->dev_kind ? strlen(ev->dev_kind) : 0;
        xl = ev->detail ? strlen(ev->detail) : 0;
        size_t max = ev->kind == DRV_EVENT_TWIN ? DRV_EVENT_MAX_TWIN_DETAIL : DRV_EVENT_MAX_DETAIL;
        if (kl == 0 || kl > DRV_EVENT_MAX_KIND || xl > max)
            return DRV_INVAL;
        len += 8 + 1 + kl + 2 + xl;
    } else {
        return DRV_INVAL;
    }
    if (len > UINT32_MAX)
        return DRV_INVAL;
    drv_err e = DRV_OK;
    uint8_t *p = drv_buf_reserve(batch, len, &e);
    if (!p)
        return e;
    uint32_t l32 = (uint32_t)len;
    memcpy(p, &l32, 4);
    p[4] = (uint8_t)ev->kind;
    p[5] = (uint8_t)tl;
    p[6] = (uint8_t)dl;
    memcpy(p + 7, &ev->ts_ms, 8);
    p += HEAD_BYTES;
    memcpy(p, ev->tenant, tl);
    p += tl;
    memcpy(p, ev->device, dl);
    p += dl;
    if (ev->kind == DRV_EVENT_TELEMETRY) {
        put_u16(p, (uint16_t)ev->nsamples);
        p += 2;
        for (uint32_t i = 0; i < ev->nsamples; i++) {
            const drv_sample *s = &ev->samples[i];
            *p++ = (uint8_t)s->key.n;
            memcpy(p, s->key.p, s->key.n);
            p += s->key.n;
            *p++ = (uint8_t)s->v.type;
            switch (s->v.type) {
            case DRV_VALUE_DOUBLE:
                memcpy(p, &s->v.d, 8);
                p += 8;
                break;
            case DRV_VALUE_INT:
                memcpy(p, &s->v.i, 8);
                p += 8;
                break;
            case DRV_VALUE_BOOL:
                *p++ = s->v.b ? 1 : 0;
                break;
            case DRV_VALUE_STRING:
                put_u16(p, (uint16_t)s->v.s.n);
                memcpy(p + 2, s->v.s.p, s->v.s.n);
                p += 2 + s->v.s.n;
                break;
            }
        }
    } else if (ev->kind == DRV_EVENT_DEVICE || ev->kind == DRV_EVENT_TWIN) {
        memcpy(p, &ev->id, 8);
        p[8] = (uint8_t)kl;
        memcpy(p + 9, ev->dev_kind, kl);
        p += 9 + kl;
        put_u16(p, (uint16_t)xl);
        if (xl)
            memcpy(p + 2, ev->detail, xl);
    }
    batch->len += (uint32_t)len;
    return DRV_OK;
}

bool drv_event_next(const uint8_t *p, size_t n, size_t *off, drv_event_view *v)
{
    size_t o = *off;
    if (o > n || n - o < HEAD_BYTES)
        return false;
    uint32_t len;
    memcpy(&len, p + o, 4);
    if (len < HEAD_BYTES || len > n - o)
        return false;
    const uint8_t *r = p + o, *end = r + len;
    memset(v, 0, sizeof(*v));
    v->kind = (drv_event_kind)r[4];
    size_t tl = r[5], dl = r[6];
    memcpy(&v->ts_ms, r + 7, 8);
    const uint8_t *q = r + HEAD_BYTES;
    if ((size_t)(end - q) < tl + dl || tl == 0 || dl == 0)
        return false;
    v->tenant = (drv_span){(const char *)q, tl};
    v->device = (drv_span){(const char *)q + tl, dl};
    q += tl + dl;
    if (v->kind == DRV_EVENT_TELEMETRY) {
        if (end - q < 2)
            return false;
        v->nsamples = get_u16(q);
        v->samples = (drv_span){(const char *)q + 2, (size_t)(end - q - 2)};
        /* Check every sample now, so readers never meet a bad one. */
        size_t so = 0;
        drv_sample s;
        uint32_t k = 0;
        while (drv_event_sample(v, &so, &s))
            k++;
        if (k != v->nsamples || so != v->samples.n)
            return false;
    } else if (v->kind == DRV_EVENT_GAP) {
        if (q != end)
            return false;
    } else if (v->kind == DRV_EVENT_DEVICE || v->kind == DRV_EVENT_TWIN) {
        if (end - q < 9)
            return false;
        memcpy(&v->id, q, 8);
        size_t kl = q[8];
        q += 9;
        if (kl == 0 || (size_t)(end - q) < kl + 2)
            return false;
        v->dev_kind = (drv_span){(const char *)q, kl};
        q += kl;
        size_t xl = get_u16(q);
        q += 2;
        if ((size_t)(end - q) != xl)
            return false;
        v->detail = (drv_span){(const char *)q, xl};
    } else {
        return false;
    }
    *off = o + len;
    return true;
}

bool drv_event_sample(const drv_event_view *v, size_t *off, drv_sample *out)
{
    const uint8_t *p = (const uint8_t *)v->samples.p;
    size_t n = v->samples.n, o = *off;
    if (o >= n || n - o < 2)
        return false;
    size_t kl = p[o];
    if (kl == 0 || n - o < 2 + kl)
        return false;
    out->key = (drv_span){(const char *)p + o + 1, kl};
    out->ts_ms = v->ts_ms;
    o += 1 + kl;
    uint8_t type = p[o++];
    out->v.type = (drv_value_type)type;
    switch (type) {
    case DRV_VALUE_DOUBLE:
    case DRV_VALUE_INT:
        if (n - o < 8)
            return false;
        if (type == DRV_VALUE_DOUBLE)
            memcpy(&out->v.d, p + o, 8);
        else
            memcpy(&out->v.i, p + o, 8);
        o += 8;
        break;
    case DRV_VALUE_BOOL:
        if (n - o < 1)
            return false;
        out->v.b = p[o++] != 0;
        break;
    case DRV_VALUE_STRING: {
        if (n - o < 2)
            return false;
        size_t sl = get_u16(p + o);
        if (n - o - 2 < sl)
            return false;
        out->v.s = (drv_span){(const char *)p + o + 2, sl};
        o += 2 + sl;
        break;
    }
    default:
        return false;
    }
    *off = o;
    return true;
}
