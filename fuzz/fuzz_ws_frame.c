/*
 * fuzz_ws_frame.c — libFuzzer harness for the live hub's WebSocket message
 * codec (src/live/ws_frame.c): the client-frame reader and the two encoders.
 *
 * Input: three control bytes, then the client's byte stream (after the 101).
 *   byte 0  bits 0-1 max_message: 0 (the 64 KiB default), 1, 125, 1000;
 *           bit 2 make an allocation of the chunked run fail (byte 2)
 *   byte 1  chunking: 0 = the whole stream in one piece, else pieces of
 *           1 + (LCG seeded by this byte) % 64 bytes
 *   byte 2  with bit 2: the allocation to fail, 1 + byte % 8
 * Seeds use the masking key 00 00 00 00, so their payloads read as is.
 *
 * The stream is read three ways: by a whole-buffer reference decoder written
 * from RFC 6455 (UTF-8 checked by decoding code points, not by byte ranges),
 * by the reader given the whole stream, and by the reader given it in pieces
 * as a caller would (drops *used bytes after each call, appends the next
 * piece).  The reader's buffer is always an exact-size heap block, so a read
 * past it is an ASan report.
 *
 * Checked (abort on violation):
 *   - the three agree on every event (opcode, payload, close code), on how
 *     the stream ends (close, error and its code, or bytes left waiting),
 *     and so on *used; when an allocation was made to fail, the chunked run
 *     agrees up to a DRV_NOMEM with close code 1011;
 *   - results follow ws_frame.h: *used <= n, > 0 with DRV_OK; an event's data
 *     lies in the caller's buffer or the reader's message buffer; text and
 *     close reasons are UTF-8, data messages within max_message, control
 *     payloads within 125; errors repeat, a close is followed by DRV_CLOSED;
 *     a second call without new bytes takes nothing;
 *   - drv_ws_frame_header encodes each event's length in the shortest form and
 *     decodes back; drv_wsf_close_payload of each close reason is at most
 *     125 bytes, the code, then the longest prefix of the reason that fits
 *     and ends on a character boundary;
 *   - the message buffer never grows past max_message, and nothing stays
 *     allocated after drv_wsf_reader_free.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "live/ws_frame.h"
#include "net/ws.h"

#include "fuzz.h"

#define MAX_STREAM 32768
#define MAX_EVENTS (MAX_STREAM / 6 + 2) /* a frame is at least 6 bytes */

enum {
    END_AGAIN,
    END_CLOSE,
    END_ERROR
};

typedef struct ev_rec {
    uint8_t opcode;      /* the event's opcode */
    uint16_t close_code; /* its close code (0 unless a close) */
    size_t len;          /* payload bytes */
    uint64_t hash;       /* FNV-1a of the payload */
} ev_rec;

typedef struct run_log {
    ev_rec ev[MAX_EVENTS]; /* events in order */
    size_t nev;            /* events in ev */
    int end;               /* END_* */
    int err;               /* END_ERROR: the drv_err */
    uint16_t code;         /* END_ERROR: the close code */
    size_t left;           /* END_AGAIN: bytes left waiting for more */
} run_log;

static run_log ref_log, whole_log, chunk_log;
static uint8_t ref_msg[65536 + 8];

static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3u;
    return h;
}

static void log_event(run_log *l, uint8_t op, uint16_t code, const uint8_t *p, size_t n)
{
    FUZZ_ASSERT(l->nev < MAX_EVENTS);
    l->ev[l->nev++] = (ev_rec){op, code, n, fnv(p, n)};
}

/* ------------------------------------------------------------------------ */
/* Reference: UTF-8 by code points                                           */

/*
 * The character at p[0..n) (n >= 1): its length when whole and valid; -1
 * when p ends inside it and some completion would be valid; 0 when invalid.
 * The missing bytes span an interval of code points: it must meet the valid
 * ones ([min, U+10FFFF] without the surrogates).
 */
static int ref_char(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    if (c < 0x80)
        return 1;
    int len;
    uint32_t cp, min;
    if ((c & 0xE0) == 0xC0) {
        len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    int have = n < (size_t)len ? (int)n : len;
    for (int i = 1; i < have; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    int miss = len - have;
    uint32_t lo = cp << (6 * miss), hi = lo | ((1u << (6 * miss)) - 1);
    if (hi < min || lo > 0x10FFFF)
        return 0;
    if (lo < min)
        lo = min;
    if (hi > 0x10FFFF)
        hi = 0x10FFFF;
    if (lo >= 0xD800 && hi <= 0xDFFF)
        return 0;
    return miss ? -1 : len;
}

/* p[0..n) is valid UTF-8 (complete) or, with prefix, the start of some. */
static bool ref_utf8(const uint8_t *p, size_t n, bool prefix)
{
    for (size_t i = 0; i < n;) {
        int k = ref_char(p + i, n - i);
        if (k == 0)
            return false;
        if (k < 0)
            return prefix;
        i += (size_t)k;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Reference decoder over the whole stream                                   */

static void ref_fail(run_log *l, uint16_t code)
{
    l->end = END_ERROR;
    l->err = DRV_PROTOCOL;
    l->code = code;
}

static void ref_decode(const uint8_t *s, size_t n, uint32_t max, run_log *l)
{
    size_t pos = 0, msg_len = 0;
    int msg_op = 0; /* TEXT or BINARY while a fragmented message is open */
    l->nev = 0;
    for (;;) {
        const uint8_t *f = s + pos;
        size_t avail = n - pos;
        l->end = END_AGAIN;
        l->left = avail;
        if (avail < 1)
            return;
        bool fin = f[0] >> 7;
        int op = f[0] & 15;
        bool control = op >= 8;
        if (f[0] & 0x70)
            return ref_fail(l, 1002);
        if ((op >= 3 && op <= 7) || op >= 11)
            return ref_fail(l, 1002);
        if (op == 0 && !msg_op)
            return ref_fail(l, 1002);
        if ((op == 1 || op == 2) && msg_op)
            return ref_fail(l, 1002);
        if (control && !fin)
            return ref_fail(l, 1002);
        if (avail < 2)
            return;
        if (!(f[1] & 0x80))
            return ref_fail(l, 1002);
        uint64_t len = f[1] & 0x7F;
        if (control && len > 125)
            return ref_fail(l, 1002);
        size_t ext = len == 126 ? 2 : len == 127 ? 8 : 0;
        if (avail < 2 + ext)
            return;
        if (ext) {
            len = 0;
            for (size_t i = 0; i < ext; i++)
                len = len * 256 + f[2 + i];
            if (ext == 8 && len >= (uint64_t)1 << 63)
                return ref_fail(l, 1002);
        }
        if (!control && (msg_op ? msg_len : 0) + len > max)
            return ref_fail(l, 1009);
        if (avail < 2 + ext + 4 || avail - (2 + ext + 4) < len)
            return;
        const uint8_t *key = f + 2 + ext;
        uint8_t ctl[125];
        uint8_t *dst = control ? ctl : ref_msg + (msg_op ? msg_len : 0);
        for (size_t i = 0; i < len; i++)
            dst[i] = key[i % 4] ^ f[2 + ext + 4 + i];
        pos += 2 + ext + 4 + (size_t)len;

        if (op == 9 || op == 10) {
            log_event(l, (uint8_t)op, 0, ctl, (size_t)len);
            continue;
        }
        if (op == 8) {
            if (len == 1)
                return ref_fail(l, 1002);
            uint16_t code = 1005;
            size_t r = 0;
            if (len >= 2) {
                code = (uint16_t)(ctl[0] * 256 + ctl[1]);
                bool ok = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
                          (code >= 3000 && code <= 4999);
                if (!ok)
                    return ref_fail(l, 1002);
                if (!ref_utf8(ctl + 2, (size_t)len - 2, false))
                    return ref_fail(l, 1007);
                r = 2;
            }
            log_event(l, 8, code, ctl + r, (size_t)len - r);
            l->end = END_CLOSE;
            return;
        }
        if (op != 0)
            msg_op = op;
        msg_len += (size_t)len;
        if (msg_op == 1 && !ref_utf8(ref_msg, msg_len, !fin))
            return ref_fail(l, 1007);
        if (fin) {
            log_event(l, (uint8_t)msg_op, 0, ref_msg, msg_len);
            msg_op = 0;
            msg_len = 0;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* The reader, as a caller drives it                                         */

/* Check one event against the contract and the encoders. */
static void check_event(const drv_wsf_reader *r, const drv_wsf_event *ev, const uint8_t *buf,
                        size_t have, uint32_t max)
{
    bool in_buf = ev->data >= buf && ev->len <= have && (size_t)(ev->data - buf) <= have - ev->len;
    bool in_msg = r->msg && ev->data >= r->msg && ev->len <= r->msg_cap &&
                  (size_t)(ev->data - r->msg) <= r->msg_cap - ev->len;
    FUZZ_ASSERT(in_buf || in_msg);
    switch (ev->opcode) {
    case DRV_WSF_TEXT:
        FUZZ_ASSERT(ref_utf8(ev->data, ev->len, false));
        /* fall through */
    case DRV_WSF_BINARY:
        FUZZ_ASSERT(ev->len <= max && ev->close_code == 0);
        break;
    case DRV_WSF_PING:
    case DRV_WSF_PONG:
        FUZZ_ASSERT(ev->len <= 125 && ev->close_code == 0 && in_buf);
        break;
    case DRV_WSF_CLOSE:
        FUZZ_ASSERT(in_buf && ref_utf8(ev->data, ev->len, false));
        FUZZ_ASSERT(ev->close_code == 1005 ? ev->len == 0 : ev->len <= 123);
        break;
    default:
        FUZZ_ASSERT(!"unexpected opcode");
    }

    /* The header for this payload: shortest form, and it decodes back. */
    uint8_t h[10];
    size_t hl = drv_ws_frame_header(h, ev->opcode, ev->len);
    FUZZ_ASSERT(hl == (ev->len < 126 ? 2u : ev->len < 65536 ? 4u : 10u));
    FUZZ_ASSERT(h[0] == (0x80 | ev->opcode) && !(h[1] & 0x80));
    uint64_t len = h[1];
    if (hl > 2) {
        len = 0;
        for (size_t i = 2; i < hl; i++)
            len = len << 8 | h[i];
    }
    FUZZ_ASSERT(len == ev->len);

    if (ev->opcode == DRV_WSF_CLOSE) {
        /* Send the reason back: the code, then what fits, cut at a boundary. */
        char reason[126];
        memcpy(reason, ev->data, ev->len);
        reason[ev->len] = '\0';
        size_t rl = strlen(reason); /* a NUL inside ends it */
        uint8_t out[125];
        uint16_t code = ev->close_code == 1005 ? 1000 : ev->close_code;
        size_t k = drv_wsf_close_payload(out, code, reason);
        FUZZ_ASSERT(k >= 2 && k <= 125 && k - 2 <= rl);
        FUZZ_ASSERT(out[0] == code >> 8 && out[1] == (code & 0xFF));
        FUZZ_ASSERT(memcmp(out + 2, reason, k - 2) == 0);
        FUZZ_ASSERT(ref_utf8(out + 2, k - 2, false));
        /* The longest: the next character would not fit. */
        if (k - 2 < rl) {
            int c = ref_char((const uint8_t *)reason + (k - 2), rl - (k - 2));
            FUZZ_ASSERT(c > 0 && k + (size_t)c > 125);
        }
        FUZZ_ASSERT(drv_wsf_close_payload(out, 0, reason) == 0);
    }
}

/* A fresh exact-size heap copy of p[0..n) (never NULL). */
static uint8_t *exact(const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    FUZZ_ASSERT(c != NULL);
    if (n)
        memcpy(c, p, n);
    return c;
}

/*
 * Feed s[0..n) to a reader in pieces (seed 0: one piece) and log what comes
 * out.  fail_at > 0 makes that allocation fail (the run may then end in
 * DRV_NOMEM).
 */
static void run_reader(const uint8_t *s, size_t n, uint32_t max, uint8_t seed, uint64_t fail_at,
                       run_log *l)
{
    drv_wsf_reader r = {.max_message = max};
    uint32_t x = seed;
    size_t fed = 0, have = 0;
    uint8_t *buf = exact(NULL, 0);
    l->nev = 0;
    l->end = END_AGAIN;
    if (fail_at)
        drv_mem_fail_at(fail_at);
    for (;;) {
        /* The next piece arrives: the caller's buffer grows to hold it. */
        size_t k = n - fed;
        if (seed) {
            x = x * 1103515245u + 12345u;
            size_t want = 1 + (x >> 16) % 64;
            if (k > want)
                k = want;
        }
        uint8_t *nb = malloc(have + k ? have + k : 1);
        FUZZ_ASSERT(nb != NULL);
        if (have)
            memcpy(nb, buf, have);
        if (k)
            memcpy(nb + have, s + fed, k);
        free(buf);
        buf = nb;
        have += k;
        fed += k;

        drv_err e;
        for (;;) {
            drv_wsf_event ev;
            size_t used = (size_t)-1;
            uint16_t code = 0;
            e = drv_wsf_next(&r, buf, have, &ev, &used, &code);
            FUZZ_ASSERT(used <= have);
            FUZZ_ASSERT(r.msg_cap <= (max ? max : DRV_WSF_DEFAULT_MAX_MESSAGE));
            if (e == DRV_OK) {
                FUZZ_ASSERT(used > 0);
                check_event(&r, &ev, buf, have, max ? max : DRV_WSF_DEFAULT_MAX_MESSAGE);
                log_event(l, ev.opcode, ev.close_code, ev.data, ev.len);
            } else if (e == DRV_PROTOCOL) {
                FUZZ_ASSERT(code == 1002 || code == 1007 || code == 1009);
            } else if (e == DRV_NOMEM) {
                FUZZ_ASSERT(fail_at && code == 1011);
            } else {
                FUZZ_ASSERT(e == DRV_AGAIN && code == 0);
            }
            /* The caller drops what was taken. */
            uint8_t *rest = exact(buf + used, have - used);
            free(buf);
            buf = rest;
            have -= used;
            if (e != DRV_OK)
                break;
            if (ev.opcode == DRV_WSF_CLOSE) {
                e = DRV_CLOSED;
                break;
            }
        }
        drv_wsf_event ev;
        size_t used = (size_t)-1;
        uint16_t code = 0;
        if (e == DRV_AGAIN) {
            /* Again without new bytes: nothing more is taken. */
            FUZZ_ASSERT(drv_wsf_next(&r, buf, have, &ev, &used, &code) == DRV_AGAIN && used == 0);
            if (fed < n)
                continue;
            l->end = END_AGAIN;
            l->left = have;
            break;
        }
        if (e == DRV_CLOSED) {
            FUZZ_ASSERT(drv_wsf_next(&r, buf, have, &ev, &used, &code) == DRV_CLOSED && used == 0);
            l->end = END_CLOSE;
            break;
        }
        /* Errors repeat. */
        uint16_t again = 0;
        FUZZ_ASSERT(drv_wsf_next(&r, buf, have, &ev, &used, &again) == e && used == 0);
        l->end = END_ERROR;
        l->err = e;
        FUZZ_ASSERT(drv_wsf_next(&r, buf, 0, &ev, &used, &l->code) == e && l->code == again);
        break;
    }
    drv_mem_fail_at(0);
    drv_wsf_reader_free(&r);
    free(buf);
}

static bool same_event(const ev_rec *a, const ev_rec *b)
{
    return a->opcode == b->opcode && a->close_code == b->close_code && a->len == b->len &&
           a->hash == b->hash;
}

static void check_same(const run_log *a, const run_log *b)
{
    FUZZ_ASSERT(a->nev == b->nev);
    for (size_t i = 0; i < a->nev; i++)
        FUZZ_ASSERT(same_event(&a->ev[i], &b->ev[i]));
    FUZZ_ASSERT(a->end == b->end);
    if (a->end == END_ERROR)
        FUZZ_ASSERT(a->err == b->err && a->code == b->code);
    if (a->end == END_AGAIN)
        FUZZ_ASSERT(a->left == b->left);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3 || size - 3 > MAX_STREAM)
        return 0;
    static const uint32_t maxes[4] = {0, 1, 125, 1000};
    const uint32_t max = maxes[data[0] & 3];
    const uint8_t seed = data[1];
    const uint64_t fail_at = (data[0] & 4) ? 1 + data[2] % 8 : 0;
    const uint8_t *s = data + 3;
    const size_t n = size - 3;
    const size_t base = drv_mem_used();

    ref_decode(s, n, max ? max : DRV_WSF_DEFAULT_MAX_MESSAGE, &ref_log);
    run_reader(s, n, max, 0, 0, &whole_log);
    check_same(&ref_log, &whole_log);
    FUZZ_ASSERT(drv_mem_used() == base);

    run_reader(s, n, max, seed, fail_at, &chunk_log);
    FUZZ_ASSERT(drv_mem_used() == base);
    if (chunk_log.end == END_ERROR && chunk_log.err == DRV_NOMEM) {
        /* Up to the failed allocation, the same events. */
        FUZZ_ASSERT(chunk_log.nev <= ref_log.nev);
        for (size_t i = 0; i < chunk_log.nev; i++)
            FUZZ_ASSERT(same_event(&chunk_log.ev[i], &ref_log.ev[i]));
    } else {
        check_same(&ref_log, &chunk_log);
    }
    return 0;
}
