/*
 * ws_frame.c — RFC 6455 message codec for the live hub; see ws_frame.h for
 * the contract.
 *
 * Reader states (the data-message part lives in msg_opcode):
 *
 *            control frame (returned)        close frame (returned)
 *           ┌────────────┐                 ┌───────────────────────▶ CLOSED:
 *           ▼            │                 │                         DRV_CLOSED
 *   OPEN, no message ────┴─────────────────┤                         from now on
 *     │   ▲   ▲                            │
 *     │   │   └─ whole text/binary frame   │ any violation, allocation failure
 *     │   │      (returned in place)       └───────────────────────▶ FAILED:
 *     │   │                                                          the same
 *     │   └─ last continuation (message returned from msg)           error again
 *     ▼                                       ▲
 *   OPEN, message open (msg_opcode) ──────────┘
 *     ▲ │ non-final continuations, control frames
 *     └─┘
 *
 * Invariants:
 *   - A frame is parsed from the caller's bytes every call until it is whole,
 *     and only then taken (unmasked in place, consumed); so a frame that is
 *     not taken leaves buf untouched, and the reader keeps no frame state
 *     between calls, only message state.
 *   - msg_len <= max_message, checked from each data frame's header before
 *     its payload is waited for; msg_len + frame payload never overflows.
 *   - For a text message, msg[0..utf8_ok) is valid UTF-8 ending on a
 *     character boundary and msg[utf8_ok..msg_len) a valid start of a
 *     character (at most 3 bytes): invalid text fails at the fragment that
 *     shows it.
 */
#include "live/ws_frame.h"

#include <string.h>

#include "core/alloc.h"

enum {
    ST_OPEN = 0, /* reading frames */
    ST_CLOSED,   /* a close frame was returned */
    ST_FAILED,   /* a violation or allocation failure was reported */
};

/* First allocation of a message buffer; it doubles from there up to max_message. */
#define MSG_MIN 1024u

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                     */

/*
 * Check p[0..n) as the start of UTF-8 text: false at the first byte that
 * makes it invalid whatever follows; else true with *done the end of the
 * last whole character (n, or the start of a truncated but so far valid
 * sequence at the end).  Table 3-7 of the Unicode standard: the second byte
 * of E0, ED, F0 and F4 has a narrower range, which excludes overlong forms,
 * surrogates and code points over U+10FFFF.
 */
static bool utf8_scan(const uint8_t *p, size_t n, size_t *done)
{
    size_t i = 0;
    while (i < n) {
        /* ASCII runs, eight bytes at a time. */
        while (n - i >= 8) {
            uint64_t v;
            memcpy(&v, p + i, 8);
            if (v & 0x8080808080808080u)
                break;
            i += 8;
        }
        if (i == n)
            break;
        uint8_t c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0; /* overlong below U+0800 */
            else if (c == 0xED)
                hi = 0x9F; /* surrogates U+D800..DFFF */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90; /* overlong below U+10000 */
            else if (c == 0xF4)
                hi = 0x8F; /* over U+10FFFF */
        } else {
            return false; /* continuation byte, C0/C1 (overlong), F5..FF */
        }
        for (size_t k = 1; k <= need; k++) {
            if (i + k == n) {
                *done = i;
                return true;
            }
            uint8_t b = p[i + k];
            if (k == 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80)
                return false;
        }
        i += need + 1;
    }
    *done = n;
    return true;
}

bool drv_wsf_utf8_valid(const uint8_t *p, size_t n)
{
    size_t done;
    return utf8_scan(p, n, &done) && done == n;
}

/* ------------------------------------------------------------------------ */
/* The close payload                                                         */

size_t drv_wsf_close_payload(uint8_t out[125], uint16_t code, const char *reason)
{
    if (code == 0)
        return 0;
    out[0] = (uint8_t)(code >> 8);
    out[1] = (uint8_t)code;
    size_t n = reason ? strnlen(reason, DRV_WSF_CONTROL_MAX - 1) : 0;
    if (n > DRV_WSF_CONTROL_MAX - 2) {
        /* Cut before the character that byte 123 belongs to, unless it starts one. */
        n = DRV_WSF_CONTROL_MAX - 2;
        while (n > 0 && ((uint8_t)reason[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(out + 2, reason ? reason : "", n);
    return 2 + n;
}

/* ------------------------------------------------------------------------ */
/* Reader                                                                    */

/* A frame whose header is complete. */
typedef struct frame {
    uint8_t opcode; /* the frame's opcode */
    bool fin;       /* the frame ends its message */
    size_t hlen;    /* header bytes, masking key included */
    uint64_t len;   /* payload bytes */
} frame;

static bool close_code_valid(uint16_t code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

static uint32_t max_message(const drv_wsf_reader *r)
{
    return r->max_message ? r->max_message : DRV_WSF_DEFAULT_MAX_MESSAGE;
}

/*
 * The frame header at p[0..n): DRV_OK with *f when the whole frame (header
 * and payload) is in p; DRV_AGAIN when more bytes are needed; DRV_PROTOCOL
 * with *code as soon as the bytes present break a rule.
 */
static drv_err parse_header(const drv_wsf_reader *r, const uint8_t *p, size_t n, frame *f,
                            uint16_t *code)
{
    *code = DRV_WSF_CLOSE_PROTOCOL;
    if (n < 1)
        return DRV_AGAIN;
    f->fin = p[0] & 0x80;
    f->opcode = p[0] & 0x0F;
    if (p[0] & 0x70)
        return DRV_PROTOCOL; /* RSV1-3: no extension was negotiated */
    bool control = f->opcode & 0x8;
    switch (f->opcode) {
    case DRV_WSF_CONT:
        if (!r->msg_opcode)
            return DRV_PROTOCOL; /* continuation without a message */
        break;
    case DRV_WSF_TEXT:
    case DRV_WSF_BINARY:
        if (r->msg_opcode)
            return DRV_PROTOCOL; /* a new message inside a fragmented one */
        break;
    case DRV_WSF_CLOSE:
    case DRV_WSF_PING:
    case DRV_WSF_PONG:
        if (!f->fin)
            return DRV_PROTOCOL; /* control frames are never fragmented */
        break;
    default:
        return DRV_PROTOCOL; /* reserved opcode */
    }
    if (n < 2)
        return DRV_AGAIN;
    if (!(p[1] & 0x80))
        return DRV_PROTOCOL; /* a client masks every frame */
    uint8_t len7 = p[1] & 0x7F;
    if (control && len7 > DRV_WSF_CONTROL_MAX)
        return DRV_PROTOCOL;
    size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    if (n < 2 + ext)
        return DRV_AGAIN;
    uint64_t len = len7;
    if (ext) {
        len = 0;
        for (size_t i = 0; i < ext; i++)
            len = len << 8 | p[2 + i];
        if (len >> 63)
            return DRV_PROTOCOL;
    }
    if (!control && len > (uint64_t)max_message(r) - r->msg_len) {
        *code = DRV_WSF_CLOSE_TOO_BIG;
        return DRV_PROTOCOL;
    }
    f->hlen = 2 + ext + 4;
    f->len = len;
    /* len <= 2^32 here (control: <= 125; data: <= max_message), no overflow. */
    if (n < f->hlen || n - f->hlen < len)
        return DRV_AGAIN;
    return DRV_OK;
}

static void unmask(uint8_t *p, size_t n, const uint8_t key[4])
{
    size_t i = 0;
    if (n >= 16) {
        uint8_t k8[8] = {key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]};
        uint64_t m;
        memcpy(&m, k8, 8);
        for (; i + 8 <= n; i += 8) {
            uint64_t v;
            memcpy(&v, p + i, 8);
            v ^= m;
            memcpy(p + i, &v, 8);
        }
    }
    for (; i < n; i++)
        p[i] ^= key[i & 3];
}

/* Append p[0..n) to the open message (the caller checked max_message). */
static drv_err msg_append(drv_wsf_reader *r, const uint8_t *p, size_t n)
{
    if (n == 0)
        return DRV_OK;
    size_t need = (size_t)r->msg_len + n;
    if (need > r->msg_cap) {
        size_t cap = r->msg_cap ? (size_t)r->msg_cap * 2 : MSG_MIN;
        if (cap < need)
            cap = need;
        if (cap > max_message(r))
            cap = max_message(r);
        uint8_t *m = drv_realloc(r->msg, cap);
        if (!m)
            return DRV_NOMEM;
        r->msg = m;
        r->msg_cap = (uint32_t)cap;
    }
    memcpy(r->msg + r->msg_len, p, n);
    r->msg_len = (uint32_t)need;
    return DRV_OK;
}

static void msg_free(drv_wsf_reader *r)
{
    drv_free(r->msg);
    r->msg = NULL;
    r->msg_len = r->msg_cap = r->utf8_ok = 0;
    r->msg_opcode = 0;
    r->msg_returned = false;
}

/* Finish the reader with err / code (repeated by every later call). */
static drv_err fail(drv_wsf_reader *r, drv_err err, uint16_t code, uint16_t *close_code)
{
    msg_free(r);
    r->state = ST_FAILED;
    r->fail_err = (uint8_t)err;
    r->fail_code = code;
    *close_code = code;
    return err;
}

/* A whole control frame, payload unmasked at p: fill *ev; 0 or a close code. */
static uint16_t control_event(drv_wsf_reader *r, const frame *f, const uint8_t *p,
                              drv_wsf_event *ev)
{
    ev->opcode = f->opcode;
    ev->data = p;
    ev->len = (size_t)f->len;
    ev->close_code = 0;
    if (f->opcode != DRV_WSF_CLOSE)
        return 0;
    if (f->len == 1)
        return DRV_WSF_CLOSE_PROTOCOL;
    ev->close_code = DRV_WSF_CLOSE_NO_STATUS;
    if (f->len >= 2) {
        uint16_t code = (uint16_t)(p[0] << 8 | p[1]);
        if (!close_code_valid(code))
            return DRV_WSF_CLOSE_PROTOCOL;
        if (!drv_wsf_utf8_valid(p + 2, (size_t)f->len - 2))
            return DRV_WSF_CLOSE_BAD_DATA;
        ev->close_code = code;
        ev->data = p + 2;
        ev->len = (size_t)f->len - 2;
    }
    r->state = ST_CLOSED;
    return 0;
}

drv_err drv_wsf_next(drv_wsf_reader *r, uint8_t *buf, size_t n, drv_wsf_event *ev, size_t *used,
                     uint16_t *close_code)
{
    *used = 0;
    if (r->state == ST_FAILED) {
        *close_code = r->fail_code;
        return (drv_err)r->fail_err;
    }
    if (r->state == ST_CLOSED)
        return DRV_CLOSED;
    if (r->msg_returned)
        msg_free(r); /* the caller is done with the message we returned last */

    size_t off = 0;
    for (;;) {
        frame f;
        uint16_t code;
        drv_err e = parse_header(r, buf + off, n - off, &f, &code);
        if (e == DRV_AGAIN) {
            *used = off;
            return DRV_AGAIN;
        }
        if (e != DRV_OK) {
            *used = off;
            return fail(r, e, code, close_code);
        }
        uint8_t *p = buf + off + f.hlen;
        size_t len = (size_t)f.len;
        unmask(p, len, p - 4);
        off += f.hlen + len;

        if (f.opcode & 0x8) {
            code = control_event(r, &f, p, ev);
            *used = off;
            return code ? fail(r, DRV_PROTOCOL, code, close_code) : DRV_OK;
        }
        if (f.opcode != DRV_WSF_CONT && f.fin) {
            /* A whole message in one frame: returned in place. */
            *used = off;
            if (f.opcode == DRV_WSF_TEXT && !drv_wsf_utf8_valid(p, len))
                return fail(r, DRV_PROTOCOL, DRV_WSF_CLOSE_BAD_DATA, close_code);
            *ev = (drv_wsf_event){.opcode = f.opcode, .data = p, .len = len};
            return DRV_OK;
        }

        /* A fragment: first (TEXT/BINARY, FIN clear) or continuation. */
        if (f.opcode != DRV_WSF_CONT)
            r->msg_opcode = f.opcode;
        if (msg_append(r, p, len) != DRV_OK) {
            *used = off;
            return fail(r, DRV_NOMEM, DRV_WSF_CLOSE_INTERNAL, close_code);
        }
        if (r->msg_opcode == DRV_WSF_TEXT) {
            size_t done = 0;
            bool ok = r->msg_len == r->utf8_ok ||
                      utf8_scan(r->msg + r->utf8_ok, r->msg_len - r->utf8_ok, &done);
            r->utf8_ok += (uint32_t)done;
            if (!ok || (f.fin && r->utf8_ok != r->msg_len)) {
                *used = off;
                return fail(r, DRV_PROTOCOL, DRV_WSF_CLOSE_BAD_DATA, close_code);
            }
        }
        if (!f.fin)
            continue; /* taken; the next frame may already be here */
        *used = off;
        *ev = (drv_wsf_event){
            .opcode = r->msg_opcode,
            .data = r->msg ? r->msg : p, /* an empty message: no buffer */
            .len = r->msg_len,
        };
        r->msg_opcode = 0;
        r->msg_returned = true;
        return DRV_OK;
    }
}

void drv_wsf_reader_free(drv_wsf_reader *r)
{
    msg_free(r);
    r->state = ST_OPEN;
    r->fail_err = 0;
    r->fail_code = 0;
}
