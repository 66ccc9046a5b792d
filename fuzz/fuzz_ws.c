/*
 * fuzz_ws.c — libFuzzer harness for the WebSocket transport (src/net/ws.c):
 * the HTTP upgrade and the frame decoder, driven as a connection would be.
 *
 * Input: three control bytes, then the client's byte stream.
 *   byte 0  flags: bits 0-1 caller read buffer size (1, 7, 64, 4096);
 *           bit 2 max_message 64 (else 4096); bit 3 the lower stream takes
 *           3 bytes per turn (else all); bit 4 fail the Nth allocation,
 *           N = byte 1; bit 5 max_handshake 128 (else 8192); bit 6 an
 *           on_http hook that answers "/api"
 *   byte 1  allocation to fail (with bit 4)
 *   byte 2  chunking: 0 = the whole stream in one turn, else turns of
 *           1 + (LCG seeded by this byte) % 64 bytes
 * Each turn makes one more chunk readable, reads until the stream says
 * anything but DRV_OK, writes a few bytes, and asks wants(); after the last
 * chunk the output is flushed and the stream freed.
 *
 * Checked (abort on violation), unless an allocation was made to fail:
 *   - read/write results follow transport.h (*n 0 unless DRV_OK, n <= len;
 *     a final result repeats);
 *   - the server's output is one HTTP response; after a 101, only whole,
 *     unmasked, unfragmented binary / pong / close frames, the binary
 *     payloads are exactly the bytes write() took, in order, and exactly
 *     one close frame ends the output;
 *   - a whole-buffer reference decoder written from RFC 6455 agrees on the
 *     payload bytes delivered, the pongs, and the close code;
 * and always: no crash, no sanitizer report, no memory left allocated.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "net/ws.h"

#include "fuzz.h"

#define MAX_BYTES 65536

/* A fake lower stream over the fuzz input. */
typedef struct fake {
    drv_stream base;        /* ops, lower (NULL), fd */
    const uint8_t *in;      /* the client's stream */
    size_t in_len;          /* bytes readable so far (the chunks released) */
    size_t in_off;          /* bytes read by the ws stream */
    uint8_t out[MAX_BYTES]; /* bytes the server wrote */
    size_t out_len;         /* bytes in out */
    size_t budget;          /* bytes writable this turn */
} fake;

static drv_err fake_read(drv_stream *st, uint8_t *buf, size_t len, size_t *n)
{
    fake *f = (fake *)st;
    size_t k = f->in_len - f->in_off;
    *n = 0;
    if (k == 0)
        return DRV_AGAIN;
    if (k > len)
        k = len;
    memcpy(buf, f->in + f->in_off, k);
    f->in_off += k;
    *n = k;
    return DRV_OK;
}

static drv_err fake_write(drv_stream *st, const uint8_t *buf, size_t len, size_t *n)
{
    fake *f = (fake *)st;
    size_t k = len < f->budget ? len : f->budget;
    if (k > sizeof(f->out) - f->out_len)
        k = sizeof(f->out) - f->out_len;
    *n = 0;
    if (k == 0)
        return DRV_AGAIN;
    memcpy(f->out + f->out_len, buf, k);
    f->out_len += k;
    f->budget -= k;
    *n = k;
    return DRV_OK;
}

static void fake_free(drv_stream *st)
{
    (void)st; /* the harness owns it */
}

static const drv_transport_ops fake_ops = {
    .name = "fake",
    .read = fake_read,
    .write = fake_write,
    .free = fake_free,
};

static drv_err api_hook(void *ud, const drv_ws_http_request *req, drv_buf *response)
{
    (void)ud;
    FUZZ_ASSERT(req->method_len > 0 && req->target_len > 0 && req->head_len >= 4);
    FUZZ_ASSERT(req->target >= req->head &&
                req->target + req->target_len <= req->head + req->head_len);
    if (req->target_len == 4 && memcmp(req->target, "/api", 4) == 0) {
        static const char r[] = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
        return drv_buf_append(response, r, sizeof(r) - 1);
    }
    return DRV_DECLINED;
}

/* What the reference decoder expects from the client's frames. */
typedef struct expect {
    uint8_t data[MAX_BYTES];  /* payload bytes delivered */
    size_t data_len;          /* bytes in data */
    uint8_t pongs[MAX_BYTES]; /* pong payloads, each prefixed by its length */
    size_t pongs_len;         /* bytes in pongs */
    uint16_t close;           /* close code the server sends (1000 at the end if none) */
} expect;

static bool close_code_ok(unsigned c)
{
    return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

/* RFC 6455 §5 for a server, on the whole stream s[0..n) after the head. */
static void reference(const uint8_t *s, size_t n, uint64_t max_message, expect *x)
{
    size_t pos = 0;
    bool in_msg = false;
    uint64_t msg_len = 0;
    x->data_len = x->pongs_len = 0;
    x->close = 1000;
    while (pos < n) {
        uint8_t b0 = s[pos], op = b0 & 0x0F;
        bool fin = b0 & 0x80, control = op & 0x8;
        if (b0 & 0x70)
            goto fail_1002;
        if (op == 0 && !in_msg)
            goto fail_1002;
        if ((op == 1 || op == 2) && in_msg)
            goto fail_1002;
        if (op == 1) {
            x->close = 1003;
            return;
        }
        if (op != 0 && op != 2 && op != 8 && op != 9 && op != 10)
            goto fail_1002;
        if (control && !fin)
            goto fail_1002;
        if (pos + 1 >= n)
            return;
        uint8_t b1 = s[pos + 1];
        if (!(b1 & 0x80))
            goto fail_1002;
        uint64_t len = b1 & 0x7F;
        if (control && len > 125)
            goto fail_1002;
        size_t ext = len == 126 ? 2 : len == 127 ? 8 : 0;
        size_t hl = 2 + ext + 4;
        if (n - pos < hl)
            return;
        if (ext) {
            len = 0;
            for (size_t i = 0; i < ext; i++)
                len = len << 8 | s[pos + 2 + i];
        }
        if (len >> 63)
            goto fail_1002;
        const uint8_t *mask = s + pos + 2 + ext;
        if (!control) {
            if (op == 2)
                msg_len = 0;
            if (msg_len + len > max_message) {
                x->close = 1009;
                return;
            }
            msg_len += len;
        }
        size_t avail = n - pos - hl;
        size_t take = len < avail ? (size_t)len : avail;
        const uint8_t *p = s + pos + hl;
        if (!control) {
            for (size_t i = 0; i < take; i++)
                x->data[x->data_len++] = p[i] ^ mask[i & 3];
            if (take < len)
                return;
            in_msg = !fin;
            if (fin)
                msg_len = 0;
        } else {
            if (take < len)
                return;
            uint8_t c[125];
            for (size_t i = 0; i < len; i++)
                c[i] = p[i] ^ mask[i & 3];
            if (op == 9) {
                x->pongs[x->pongs_len++] = (uint8_t)len;
                memcpy(x->pongs + x->pongs_len, c, len);
                x->pongs_len += len;
            } else if (op == 8) {
                if (len == 1)
                    goto fail_1002;
                if (len >= 2) {
                    unsigned code = (unsigned)c[0] << 8 | c[1];
                    if (!close_code_ok(code))
                        goto fail_1002;
                    x->close = (uint16_t)code;
                }
                return;
            }
        }
        pos += hl + (size_t)len;
    }
    return;
fail_1002:
    x->close = 1002;
}

/* Check the server's output against what was written and the reference. */
static void check_output(const fake *f, const uint8_t *stream, size_t stream_len,
                         const uint8_t *written, size_t written_len, uint64_t max_message)
{
    const uint8_t *o = f->out;
    size_t n = f->out_len;
    FUZZ_ASSERT(n >= 12 && memcmp(o, "HTTP/1.1 ", 9) == 0);
    const uint8_t *end = memmem(o, n, "\r\n\r\n", 4);
    FUZZ_ASSERT(end != NULL);
    size_t head = (size_t)(end + 4 - o);
    if (memcmp(o + 9, "101 ", 4) != 0) {
        FUZZ_ASSERT(written_len == 0);
        const uint8_t *cl = memmem(o, head, "Content-Length: ", 16);
        if (cl) {
            FUZZ_ASSERT(strtoul((const char *)cl + 16, NULL, 10) == n - head);
        } else {
            FUZZ_ASSERT(n == head);
        }
        return;
    }

    /* The client's frames start right after its request head. */
    const uint8_t *req_end = memmem(stream, stream_len, "\r\n\r\n", 4);
    FUZZ_ASSERT(req_end != NULL);
    size_t frames_at = (size_t)(req_end + 4 - stream);
    static expect x;
    reference(stream + frames_at, stream_len - frames_at, max_message, &x);

    size_t pos = head, data = 0, pongs = 0;
    int closes = 0;
    while (pos < n) {
        FUZZ_ASSERT(closes == 0); /* nothing after a close */
        FUZZ_ASSERT(n - pos >= 2);
        uint8_t b0 = o[pos], b1 = o[pos + 1];
        FUZZ_ASSERT(!(b1 & 0x80)); /* servers do not mask */
        uint64_t len = b1 & 0x7F;
        size_t hl = 2;
        if (len == 126) {
            FUZZ_ASSERT(n - pos >= 4);
            len = (uint64_t)o[pos + 2] << 8 | o[pos + 3];
            FUZZ_ASSERT(len >= 126);
            hl = 4;
        } else if (len == 127) {
            FUZZ_ASSERT(n - pos >= 10);
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | o[pos + 2 + i];
            FUZZ_ASSERT(len > 0xFFFF);
            hl = 10;
        }
        FUZZ_ASSERT(n - pos - hl >= len);
        const uint8_t *p = o + pos + hl;
        switch (b0) {
        case 0x82:
            FUZZ_ASSERT(len > 0 && data + len <= written_len);
            FUZZ_ASSERT(memcmp(p, written + data, len) == 0);
            data += len;
            break;
        case 0x8A:
            FUZZ_ASSERT(len <= 125 && pongs < x.pongs_len && x.pongs[pongs] == len);
            FUZZ_ASSERT(memcmp(p, x.pongs + pongs + 1, len) == 0);
            pongs += 1 + len;
            break;
        case 0x88:
            FUZZ_ASSERT(len == 2);
            FUZZ_ASSERT(((unsigned)p[0] << 8 | p[1]) == x.close);
            closes++;
            break;
        default:
            FUZZ_ASSERT(!"unexpected server frame");
        }
        pos += hl + (size_t)len;
    }
    FUZZ_ASSERT(closes == 1);
    FUZZ_ASSERT(data == written_len);
    FUZZ_ASSERT(pongs == x.pongs_len);
    return;
}

static bool final_result(drv_err e)
{
    return e != DRV_OK && e != DRV_AGAIN;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3 || size > 16384)
        return 0;
    static const size_t read_sizes[] = {1, 7, 64, 4096};
    const uint8_t flags = data[0];
    const size_t read_size = read_sizes[flags & 3];
    const bool fail_alloc = flags & 0x10;
    drv_ws_config cfg = {
        .path = "/mqtt",
        .max_message = (flags & 0x04) ? 64 : 4096,
        .max_handshake = (flags & 0x20) ? 128 : 8192,
        .on_http = (flags & 0x40) ? api_hook : NULL,
    };
    uint32_t lcg = data[2];
    const uint8_t *stream = data + 3;
    const size_t stream_len = size - 3;

    size_t base = drv_mem_used();
    static fake f;
    memset(&f, 0, offsetof(fake, out));
    f.out_len = 0;
    f.base.ops = &fake_ops;
    f.base.fd = -1;
    f.in = stream;

    drv_stream *st = NULL;
    if (fail_alloc)
        drv_mem_fail_at((uint64_t)data[1] + 1);
    if (drv_ws_stream_new(&cfg, &f.base, &st) != DRV_OK) {
        FUZZ_ASSERT(fail_alloc);
        drv_mem_fail_at(0);
        FUZZ_ASSERT(drv_mem_used() == base);
        return 0;
    }

    static uint8_t written[MAX_BYTES], got[16384], buf[4096];
    size_t written_len = 0, delivered = 0;
    drv_err final = DRV_OK;
    uint8_t turn = 0;
    for (;;) {
        bool last_turn = f.in_len == stream_len;
        /* Release the next chunk. */
        size_t chunk = stream_len - f.in_len;
        if (data[2] != 0) {
            lcg = lcg * 1103515245u + 12345u;
            size_t c = 1 + (lcg >> 16) % 64;
            if (c < chunk)
                chunk = c;
        }
        f.in_len += chunk;
        f.budget = (flags & 0x08) ? 3 : SIZE_MAX;

        drv_err e;
        do {
            size_t n = 77;
            e = drv_stream_read(st, buf, read_size, &n);
            if (e == DRV_OK) {
                FUZZ_ASSERT(n > 0 && n <= read_size && delivered + n <= stream_len);
                memcpy(got + delivered, buf, n);
                delivered += n;
            } else {
                FUZZ_ASSERT(n == 0);
            }
            if (final_result(final))
                FUZZ_ASSERT(e == final);
        } while (e == DRV_OK);
        if (final_result(e))
            final = e;

        /* The broker answers with a few bytes each turn. */
        uint8_t msg[3] = {0x30, turn, (uint8_t)(turn * 7)};
        size_t n = 99;
        e = drv_stream_write(st, msg, sizeof(msg), &n);
        if (e == DRV_OK) {
            FUZZ_ASSERT(n > 0 && n <= sizeof(msg) && written_len + n <= sizeof(written));
            memcpy(written + written_len, msg, n);
            written_len += n;
        } else {
            FUZZ_ASSERT(n == 0);
        }
        (void)drv_stream_wants(st);
        turn++;
        if (last_turn)
            break;
    }
    FUZZ_ASSERT(delivered <= stream_len);

    /* Let everything out, then close. */
    f.budget = SIZE_MAX;
    FUZZ_ASSERT(fail_alloc || drv_stream_wants(st) == 0);
    drv_mem_fail_at(0);
    drv_stream_free(st, 1000);
    FUZZ_ASSERT(drv_mem_used() == base);

    if (!fail_alloc && f.out_len > 0 && f.out_len < sizeof(f.out))
        check_output(&f, stream, stream_len, written, written_len, cfg.max_message);
    if (!fail_alloc && f.out_len > 0 && memcmp(f.out, "HTTP/1.1 101 ", 13) == 0) {
        /* The reference agrees on the payload delivered. */
        static expect x;
        const uint8_t *req_end = memmem(stream, stream_len, "\r\n\r\n", 4);
        size_t at = (size_t)(req_end + 4 - stream);
        reference(stream + at, stream_len - at, cfg.max_message, &x);
        FUZZ_ASSERT(delivered == x.data_len && memcmp(got, x.data, delivered) == 0);
    }
    return 0;
}
