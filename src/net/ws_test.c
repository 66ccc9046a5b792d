/*
 * ws_test.c — unit tests for the WebSocket transport (src/net/ws.c), driven
 * over a fake in-memory lower stream: the handshake (RFC 6455 example key,
 * subprotocol choice, every refusal and its status), frames split at every
 * byte boundary, fragmentation with interleaved control frames, the close
 * handshake, each protocol error and its close code, writes through a lower
 * stream that takes one byte at a time, shutdown, and allocation failure.
 * The fake lower stream allocates with plain malloc, so drv_mem_used()
 * counts the ws stream alone: idle connections must hold no buffers, and
 * every test ends where it started.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "net/ws.h"
#include "platform/loop.h"

#include "core/test.h"

/* ------------------------------------------------------------------------ */
/* A fake lower stream: a client's bytes in, the server's bytes out.         */

typedef struct fake {
    drv_stream base;     /* ops, lower (NULL), fd */
    uint8_t *in;         /* bytes the client sent (malloc) */
    size_t in_len;       /* bytes in `in` */
    size_t in_off;       /* bytes already read by the ws stream */
    size_t read_chunk;   /* most bytes one read returns (0 = no limit) */
    bool eof;            /* once `in` is drained, read says DRV_CLOSED, not DRV_AGAIN */
    uint8_t *out;        /* bytes the server wrote (malloc) */
    size_t out_len;      /* bytes in `out` */
    size_t out_size;     /* allocated bytes of `out` */
    size_t write_budget; /* bytes writable before DRV_AGAIN (SIZE_MAX = no limit) */
    size_t write_chunk;  /* most bytes one write takes (0 = no limit) */
    drv_err write_err;   /* if not DRV_OK, every write fails with it */
    bool freed;          /* its free op ran (the memory stays for inspection) */
} fake;

static drv_err fake_read(drv_stream *st, uint8_t *buf, size_t len, size_t *n)
{
    fake *f = (fake *)st;
    *n = 0;
    size_t k = f->in_len - f->in_off;
    if (k == 0)
        return f->eof ? DRV_CLOSED : DRV_AGAIN;
    if (k > len)
        k = len;
    if (f->read_chunk && k > f->read_chunk)
        k = f->read_chunk;
    memcpy(buf, f->in + f->in_off, k);
    f->in_off += k;
    *n = k;
    return DRV_OK;
}

static drv_err fake_write(drv_stream *st, const uint8_t *buf, size_t len, size_t *n)
{
    fake *f = (fake *)st;
    *n = 0;
    if (f->write_err != DRV_OK)
        return f->write_err;
    size_t k = len;
    if (k > f->write_budget)
        k = f->write_budget;
    if (f->write_chunk && k > f->write_chunk)
        k = f->write_chunk;
    if (k == 0)
        return DRV_AGAIN;
    if (f->out_len + k > f->out_size) {
        size_t size = f->out_size ? f->out_size : 4096;
        while (size < f->out_len + k)
            size *= 2;
        f->out = realloc(f->out, size);
        if (!f->out)
            abort();
        f->out_size = size;
    }
    memcpy(f->out + f->out_len, buf, k);
    f->out_len += k;
    if (f->write_budget != SIZE_MAX)
        f->write_budget -= k;
    *n = k;
    return DRV_OK;
}

static void fake_free(drv_stream *st)
{
    ((fake *)st)->freed = true;
}

static const drv_transport_ops fake_ops = {
    .name = "fake",
    .read = fake_read,
    .write = fake_write,
    .free = fake_free,
};

static fake *fake_new(void)
{
    fake *f = calloc(1, sizeof(*f));
    if (!f)
        abort();
    f->base.ops = &fake_ops;
    f->base.fd = -1;
    f->write_budget = SIZE_MAX;
    return f;
}

static void fake_destroy(fake *f)
{
    free(f->in);
    free(f->out);
    free(f);
}

static void feed(fake *f, const void *p, size_t n)
{
    f->in = realloc(f->in, f->in_len + n + 1);
    if (!f->in)
        abort();
    memcpy(f->in + f->in_len, p, n);
    f->in_len += n;
}

static void feed_str(fake *f, const char *s)
{
    feed(f, s, strlen(s));
}

/* The server's output so far as a C string (for HTTP responses); static. */
static const char *out_str(const fake *f)
{
    static char s[8192];
    size_t n = f->out_len < sizeof(s) - 1 ? f->out_len : sizeof(s) - 1;
    memcpy(s, f->out, n);
    s[n] = '\0';
    return s;
}

static void out_clear(fake *f)
{
    f->out_len = 0;
}

/* ------------------------------------------------------------------------ */
/* Client frames and server frames                                           */

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Length forms for cframe: the minimal one, or a forced 16- or 64-bit one. */
enum {
    LEN_AUTO,
    LEN_16,
    LEN_64
};

/* Append one client frame to dst (b0 = FIN|RSV|opcode); returns its size. */
static size_t cframe_ex(uint8_t *dst, uint8_t b0, const void *payload, size_t len, int form,
                        bool masked)
{
    size_t h = 0;
    dst[h++] = b0;
    uint8_t mbit = masked ? 0x80 : 0;
    if (form == LEN_AUTO && len < 126) {
        dst[h++] = (uint8_t)(mbit | len);
    } else if (form == LEN_16 || (form == LEN_AUTO && len <= 0xFFFF)) {
        dst[h++] = mbit | 126;
        dst[h++] = (uint8_t)(len >> 8);
        dst[h++] = (uint8_t)len;
    } else {
        dst[h++] = mbit | 127;
        for (int i = 0; i < 8; i++)
            dst[h++] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    }
    if (masked) {
        memcpy(dst + h, MASK, 4);
        h += 4;
    }
    const uint8_t *p = payload;
    for (size_t i = 0; i < len; i++)
        dst[h + i] = masked ? (uint8_t)(p[i] ^ MASK[i & 3]) : p[i];
    return h + len;
}

static size_t cframe(uint8_t *dst, uint8_t b0, const void *payload, size_t len)
{
    return cframe_ex(dst, b0, payload, len, LEN_AUTO, true);
}

/* A server frame parsed from the fake's output. */
typedef struct sframe {
    uint8_t b0;          /* FIN|RSV|opcode */
    const uint8_t *data; /* payload, inside fake.out */
    size_t len;          /* payload length */
    bool minimal;        /* the length used the shortest form */
} sframe;

/* Parse the server frame at out[*pos]; false if incomplete, masked or bad. */
static bool next_sframe(const fake *f, size_t *pos, sframe *fr)
{
    const uint8_t *p = f->out + *pos;
    size_t n = f->out_len - *pos;
    if (n < 2 || (p[1] & 0x80))
        return false;
    size_t h = 2;
    uint64_t len = p[1] & 0x7F;
    if (len == 126) {
        if (n < 4)
            return false;
        len = (uint64_t)p[2] << 8 | p[3];
        h = 4;
        fr->minimal = len >= 126;
    } else if (len == 127) {
        if (n < 10)
            return false;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p[2 + i];
        h = 10;
        fr->minimal = len > 0xFFFF;
    } else {
        fr->minimal = true;
    }
    if (n - h < len)
        return false;
    fr->b0 = p[0];
    fr->data = p + h;
    fr->len = (size_t)len;
    *pos += h + (size_t)len;
    return true;
}

/* The output is exactly one close frame with `code`. */
static bool out_is_close(const fake *f, size_t pos, uint16_t code)
{
    sframe fr;
    if (!next_sframe(f, &pos, &fr) || pos != f->out_len)
        return false;
    return fr.b0 == 0x88 && fr.len == 2 && (fr.data[0] << 8 | fr.data[1]) == code;
}

/* ------------------------------------------------------------------------ */
/* Driving a ws stream                                                       */

static const drv_ws_config CFG = {.path = "/mqtt", .max_message = 1 << 20, .max_handshake = 8192};

#define REQ_START                                     \
    "GET /mqtt HTTP/1.1\r\n"                          \
    "Host: localhost:8080\r\n"                        \
    "Upgrade: websocket\r\n"                          \
    "Connection: Upgrade\r\n"                         \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" \
    "Sec-WebSocket-Version: 13\r\n"

#define REQ REQ_START "Sec-WebSocket-Protocol: mqtt\r\n\r\n"

#define RESP_101                           \
    "HTTP/1.1 101 Switching Protocols\r\n" \
    "Upgrade: websocket\r\n"               \
    "Connection: Upgrade\r\n"              \
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"

static drv_stream *ws_new(const drv_ws_config *cfg, fake **fp)
{
    fake *f = fake_new();
    drv_stream *st = NULL;
    if (drv_ws_stream_new(cfg, &f->base, &st) != DRV_OK)
        abort();
    *fp = f;
    return st;
}

static void ws_destroy(drv_stream *st, fake *f)
{
    drv_stream_free(st, 1000);
    fake_destroy(f);
}

/* A stream past a successful handshake, output cleared. */
static drv_stream *ws_open(const drv_ws_config *cfg, fake **fp)
{
    drv_stream *st = ws_new(cfg, fp);
    feed_str(*fp, REQ);
    uint8_t buf[64];
    size_t n;
    drv_err e = drv_stream_read(st, buf, sizeof(buf), &n);
    if (e != DRV_AGAIN || strncmp(out_str(*fp), RESP_101, strlen(RESP_101)) != 0) {
        fprintf(stderr, "handshake failed: %s\n%s\n", drv_errname(e), out_str(*fp));
        abort();
    }
    out_clear(*fp);
    return st;
}

/* Read with a caller buffer of `chunk` bytes until not DRV_OK; appends to
 * got (capacity cap) and returns the final result. */
static drv_err read_all(drv_stream *st, size_t chunk, uint8_t *got, size_t cap, size_t *got_len)
{
    uint8_t buf[65536];
    if (chunk > sizeof(buf))
        chunk = sizeof(buf);
    for (;;) {
        size_t n = 12345;
        drv_err e = drv_stream_read(st, buf, chunk, &n);
        if (e != DRV_OK) {
            if (n != 0)
                return DRV_ERR_COUNT; /* contract: *n is 0 unless DRV_OK */
            return e;
        }
        if (n == 0 || n > chunk || *got_len + n > cap)
            return DRV_ERR_COUNT;
        memcpy(got + *got_len, buf, n);
        *got_len += n;
    }
}

/* ------------------------------------------------------------------------ */
/* Handshake                                                                 */

static void test_accept(void)
{
    size_t base = drv_mem_used();
    fake *f;
    drv_stream *st = ws_new(&CFG, &f);
    size_t after_new = drv_mem_used();
    CHECK(st->ops == &drv_ws_ops && st->lower == &f->base && strcmp(st->ops->name, "ws") == 0);

    /* Nothing before the request; writes wait for the handshake. */
    uint8_t buf[64];
    size_t n;
    CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_AGAIN && n == 0);
    CHECK(drv_stream_write(st, (const uint8_t *)"x", 1, &n) == DRV_AGAIN && n == 0);
    CHECK(f->out_len == 0);

    feed_str(f, REQ);
    CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_AGAIN && n == 0);
    CHECK(strcmp(out_str(f), RESP_101 "Sec-WebSocket-Protocol: mqtt\r\n\r\n") == 0);
    CHECK(drv_stream_wants(st) == 0);
    /* Idle after the handshake: no buffers. */
    CHECK(drv_mem_used() == after_new);

    /* Now frames flow. */
    out_clear(f);
    CHECK(drv_stream_write(st, (const uint8_t *)"\xc0\x00", 2, &n) == DRV_OK && n == 2);
    CHECK(f->out_len == 4 && memcmp(f->out, "\x82\x02\xc0\x00", 4) == 0);
    uint8_t fr[64];
    feed(f, fr, cframe(fr, 0x82, "\xd0\x00", 2));
    CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_OK && n == 2);
    CHECK(memcmp(buf, "\xd0\x00", 2) == 0);
    CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_AGAIN);
    CHECK(drv_mem_used() == after_new);
    ws_destroy(st, f);
    CHECK(drv_mem_used() == base);
}

static void test_subprotocols(void)
{
    static const struct {
        const char *headers; /* protocol header lines, or "" */
        const char *chosen;  /* expected Sec-WebSocket-Protocol, NULL = none; "400" = refused */
    } cases[] = {
        {"", NULL},
        {"Sec-WebSocket-Protocol: mqtt\r\n", "mqtt"},
        {"Sec-WebSocket-Protocol: mqttv3.1\r\n", "mqttv3.1"},
        {"Sec-WebSocket-Protocol: mqttv3.1, mqtt\r\n", "mqtt"},
        {"Sec-WebSocket-Protocol: foo,mqtt , bar\r\n", "mqtt"},
        {"Sec-WebSocket-Protocol: foo\r\nSec-WebSocket-Protocol: mqttv3.1\r\n", "mqttv3.1"},
        {"Sec-WebSocket-Protocol: MQTT\r\n", "MQTT"}, /* echoed as the client spelled it */
        {"Sec-WebSocket-Protocol: foo\r\n", "400"},
        {"Sec-WebSocket-Protocol: mqtt5, wamp\r\n", "400"},
        {"Sec-WebSocket-Protocol:\r\n", "400"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fake *f;
        drv_stream *st = ws_new(&CFG, &f);
        char req[1024];
        snprintf(req, sizeof(req), "%s%s\r\n", REQ_START, cases[i].headers);
        feed_str(f, req);
        uint8_t buf[16];
        size_t n;
        drv_err e = drv_stream_read(st, buf, sizeof(buf), &n);
        const char *resp = out_str(f);
        char want[512];
        if (cases[i].chosen && strcmp(cases[i].chosen, "400") == 0) {
            CHECK(e == DRV_CLOSED);
            CHECK(strncmp(resp, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
        } else if (cases[i].chosen) {
            snprintf(want, sizeof(want), RESP_101 "Sec-WebSocket-Protocol: %s\r\n\r\n",
                     cases[i].chosen);
            CHECK(e == DRV_AGAIN);
            CHECK(strcmp(resp, want) == 0);
        } else {
            CHECK(e == DRV_AGAIN);
            CHECK(strcmp(resp, RESP_101 "\r\n") == 0);
        }
        ws_destroy(st, f);
    }
}

/* Content-Length of an HTTP response matches its body. */
static bool body_length_ok(const char *resp)
{
    const char *cl = strstr(resp, "Content-Length: ");
    const char *body = strstr(resp, "\r\n\r\n");
    if (!cl || !body)
        return false;
    return strtoul(cl + 16, NULL, 10) == strlen(body + 4);
}

static void test_refusals(void)
{
    static const struct {
        const char *req;    /* the request head */
        const char *status; /* expected status line */
        const char *header; /* a header line the response must have, or NULL */
    } cases[] = {
        /* version */
        {"GET /mqtt HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
         "HTTP/1.1 426 Upgrade Required", "Sec-WebSocket-Version: 13\r\n"},
        {"GET /mqtt HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
         "HTTP/1.1 426 Upgrade Required", "Sec-WebSocket-Version: 13\r\n"},
        {"GET /mqtt HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
         "Sec-WebSocket-Version: 13\r\n\r\n",
         "HTTP/1.1 426 Upgrade Required", "Sec-WebSocket-Version: 13\r\n"},
        /* path */
        {"GET /other HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
         "HTTP/1.1 404 Not Found", NULL},
        {"GET / HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1 404 Not Found", NULL},
        {"GET /mqtt/ HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1 404 Not Found", NULL},
        {"GET /mqttx HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1 404 Not Found", NULL},
        /* key */
        {"GET /mqtt HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Version: 13\r\n\r\n",
         "HTTP/1.1 400 Bad Request", NULL},
        {"GET /mqtt HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=\r\nSec-WebSocket-Version: 13\r\n\r\n",
         "HTTP/1.1 400 Bad Request", NULL},
        {"GET /mqtt HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j*Q==\r\nSec-WebSocket-Version: 13\r\n\r\n",
         "HTTP/1.1 400 Bad Request", NULL},
        {"GET /mqtt HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
         "HTTP/1.1 400 Bad Request", NULL},
        /* not an upgrade */
        {"GET /mqtt HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1 426 Upgrade Required",
         "Upgrade: websocket\r\n"},
        {"GET /mqtt HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
         "HTTP/1.1 426 Upgrade Required", "Upgrade: websocket\r\n"},
        {"GET /mqtt HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
         "HTTP/1.1 400 Bad Request", NULL},
        {"POST /mqtt HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
         "HTTP/1.1 405 Method Not Allowed", "Allow: GET\r\n"},
        /* malformed HTTP */
        {"GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
         "HTTP/1.1 400 Bad Request", NULL}, /* no Host */
        {"GET /mqtt HTTP/1.0\r\nHost: h\r\n\r\n", "HTTP/1.1 400 Bad Request", NULL},
        {"GET /mqtt HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", "HTTP/1.1 400 Bad Request", NULL},
        {"GET /mqtt HTTP/1.1\r\nHost : h\r\n\r\n", "HTTP/1.1 400 Bad Request", NULL},
        {"GET /mqtt HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", "HTTP/1.1 400 Bad Request", NULL},
        {"GET  /mqtt HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1 400 Bad Request", NULL},
        {"GET * HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1 400 Bad Request", NULL},
        {"\r\n\r\n", "HTTP/1.1 400 Bad Request", NULL},
        {"hello\r\n\r\n", "HTTP/1.1 400 Bad Request", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t base = drv_mem_used();
        fake *f;
        drv_stream *st = ws_new(&CFG, &f);
        feed_str(f, cases[i].req);
        feed_str(f, "\x82\x80garbage after the head"); /* ignored */
        uint8_t buf[16];
        size_t n;
        drv_err e = drv_stream_read(st, buf, sizeof(buf), &n);
        const char *resp = out_str(f);
        bool ok = e == DRV_CLOSED && strncmp(resp, cases[i].status, strlen(cases[i].status)) == 0 &&
                  strstr(resp, "\r\nConnection: close\r\n") && body_length_ok(resp) &&
                  (!cases[i].header || strstr(resp, cases[i].header));
        if (!ok)
            fprintf(stderr, "case %zu: %s\n%s\n", i, drv_errname(e), resp);
        CHECK(ok);
        CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_CLOSED);
        CHECK(drv_stream_write(st, (const uint8_t *)"x", 1, &n) == DRV_CLOSED && n == 0);
        ws_destroy(st, f);
        CHECK(drv_mem_used() == base);
    }

    /* Accepted variants of the same headers. */
    static const char *const accepted[] = {
        "GET /mqtt?clientId=abc HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n",
        "GET http://example.com:8080/mqtt HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n",
        "GET /mqtt HTTP/1.1\r\nhost:h\r\nUPGRADE:  WebSocket \r\n"
        "connection: keep-alive, Upgrade\r\nsec-websocket-key:dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "sec-websocket-version: 13\r\nOrigin: http://x\r\n\r\n",
        "GET /mqtt HTTP/1.1\r\nHost: h\r\nUpgrade: foo, websocket\r\nConnection: x\r\n"
        "Connection: upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
        fake *f;
        drv_stream *st = ws_new(&CFG, &f);
        feed_str(f, accepted[i]);
        uint8_t buf[16];
        size_t n;
        CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_AGAIN);
        CHECK(strcmp(out_str(f), RESP_101 "\r\n") == 0);
        ws_destroy(st, f);
    }
}

static void test_head_too_large(void)
{
    drv_ws_config cfg = CFG;
    cfg.max_handshake = 256;
    size_t base = drv_mem_used();
    fake *f;
    drv_stream *st = ws_new(&cfg, &f);
    char req[600];
    snprintf(req, sizeof(req), "GET /mqtt HTTP/1.1\r\nX-Pad: %0400d\r\n\r\n", 0);
    feed_str(f, req);
    uint8_t buf[16];
    size_t n;
    CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_CLOSED);
    CHECK(strncmp(out_str(f), "HTTP/1.1 431 Request Header Fields Too Large\r\n", 46) == 0);
    ws_destroy(st, f);

    /* A head of exactly the limit is fine. */
    st = ws_new(&cfg, &f);
    char pad[256];
    size_t fixed = strlen(REQ) + strlen("X: \r\n");
    memset(pad, 'p', 256 - fixed);
    pad[256 - fixed] = '\0';
    snprintf(req, sizeof(req), "%sX: %s\r\n\r\n", REQ_START "Sec-WebSocket-Protocol: mqtt\r\n",
             pad);
    CHECK(strlen(req) == 256);
    feed_str(f, req);
    CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_AGAIN);
    CHECK(strncmp(out_str(f), RESP_101, strlen(RESP_101)) == 0);
    ws_destroy(st, f);
    CHECK(drv_mem_used() == base);
}

/* An error response the lower stream takes slowly: AGAIN until written. */
static void test_slow_refusal(void)
{
    fake *f;
    drv_stream *st = ws_new(&CFG, &f);
    f->write_budget = 10;
    feed_str(f, "GET /nope HTTP/1.1\r\nHost: h\r\n\r\n");
    uint8_t buf[16];
    size_t n;
    CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_AGAIN);
    CHECK(f->out_len == 10);
    CHECK(drv_stream_wants(st) == DRV_EV_WRITE);
    feed_str(f, "more bytes from the client"); /* drained, not a busy loop */
    CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_AGAIN);
    CHECK(f->in_off == f->in_len);
    f->write_budget = SIZE_MAX;
    CHECK(drv_stream_wants(st) == 0); /* flushes */
    CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_CLOSED);
    CHECK(strncmp(out_str(f), "HTTP/1.1 404 Not Found\r\n", 24) == 0 && body_length_ok(out_str(f)));
    ws_destroy(st, f);
}

/* The request arrives in two pieces split at every byte, with the client's
 * first frame right behind it; and one byte per read. */
static void test_handshake_split(void)
{
    uint8_t stream[1024];
    size_t len = strlen(REQ);
    memcpy(stream, REQ, len);
    len += cframe(stream + len, 0x82, "\x10\x0c\x00\x04MQTT", 8);
    bool all_ok = true;
    for (size_t cut = 0; cut <= len; cut++) {
        fake *f;
        drv_stream *st = ws_new(&CFG, &f);
        uint8_t got[64];
        size_t got_len = 0;
        feed(f, stream, cut);
        drv_err e1 = read_all(st, 4096, got, sizeof(got), &got_len);
        feed(f, stream + cut, len - cut);
        drv_err e2 = read_all(st, 4096, got, sizeof(got), &got_len);
        bool ok = e1 == DRV_AGAIN && e2 == DRV_AGAIN && got_len == 8 &&
                  memcmp(got, "\x10\x0c\x00\x04MQTT", 8) == 0 &&
                  strncmp(out_str(f), RESP_101, strlen(RESP_101)) == 0;
        if (!ok)
            fprintf(stderr, "handshake split at %zu failed\n", cut);
        all_ok = all_ok && ok;
        ws_destroy(st, f);
    }
    CHECK(all_ok);

    fake *f;
    drv_stream *st = ws_new(&CFG, &f);
    f->read_chunk = 1;
    feed(f, stream, len);
    uint8_t got[64];
    size_t got_len = 0;
    CHECK(read_all(st, 1, got, sizeof(got), &got_len) == DRV_AGAIN);
    CHECK(got_len == 8 && memcmp(got, "\x10\x0c\x00\x04MQTT", 8) == 0);
    ws_destroy(st, f);
}

static void test_on_http(void);

/* ------------------------------------------------------------------------ */
/* Frames                                                                    */

/* A stream of every frame shape, and what it should deliver. */
static size_t build_stream(uint8_t *s, uint8_t *expect, size_t *expect_len)
{
    static uint8_t big[300];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7 + 3);
    size_t n = 0, e = 0;
#define DATA(b0, p, len, form)                                 \
    do {                                                       \
        n += cframe_ex(s + n, (b0), (p), (len), (form), true); \
        memcpy(expect + e, (p), (len));                        \
        e += (len);                                            \
    } while (0)
    DATA(0x82, "hello", 5, LEN_AUTO);
    DATA(0x82, big, 300, LEN_AUTO);                   /* 16-bit length */
    DATA(0x82, "", 0, LEN_AUTO);                      /* empty message */
    DATA(0x82, "non-minimal", 11, LEN_64);            /* accepted */
    DATA(0x02, "frag1-", 6, LEN_AUTO);                /* fragmented ... */
    n += cframe(s + n, 0x89, "ping!", 5);             /* ... ping inside */
    DATA(0x00, "frag2-", 6, LEN_16);                  /* ... */
    n += cframe(s + n, 0x8A, "unsolicited pong", 16); /* ... pong inside */
    DATA(0x00, "", 0, LEN_AUTO);                      /* ... empty continuation */
    DATA(0x80, "frag3", 5, LEN_AUTO);                 /* ... end */
    n += cframe(s + n, 0x89, "", 0);                  /* empty ping */
    DATA(0x82, big, 125, LEN_AUTO);
#undef DATA
    *expect_len = e;
    return n;
}

/* The server's output is exactly pongs for "ping!" and "". */
static bool pongs_ok(const fake *f)
{
    size_t pos = 0;
    sframe a, b;
    return next_sframe(f, &pos, &a) && a.b0 == 0x8A && a.len == 5 &&
           memcmp(a.data, "ping!", 5) == 0 && next_sframe(f, &pos, &b) && b.b0 == 0x8A &&
           b.len == 0 && pos == f->out_len;
}

static void test_frames_split(void)
{
    static uint8_t stream[4096], expect[4096], got[4096];
    size_t expect_len;
    size_t len = build_stream(stream, expect, &expect_len);
    size_t base = drv_mem_used();

    /* Two pieces, split at every byte boundary. */
    bool all_ok = true;
    for (size_t cut = 0; cut <= len; cut++) {
        fake *f;
        drv_stream *st = ws_open(&CFG, &f);
        size_t idle = drv_mem_used();
        size_t got_len = 0;
        feed(f, stream, cut);
        drv_err e1 = read_all(st, 4096, got, sizeof(got), &got_len);
        feed(f, stream + cut, len - cut);
        drv_err e2 = read_all(st, 4096, got, sizeof(got), &got_len);
        bool ok = e1 == DRV_AGAIN && e2 == DRV_AGAIN && got_len == expect_len &&
                  memcmp(got, expect, expect_len) == 0 && pongs_ok(f) && drv_mem_used() == idle;
        if (!ok)
            fprintf(stderr, "frames split at %zu failed\n", cut);
        all_ok = all_ok && ok;
        ws_destroy(st, f);
    }
    CHECK(all_ok);

    /* One byte per lower read, and a one-byte caller buffer. */
    static const size_t reads[] = {1, 2, 3, 7, 64, 0};
    static const size_t bufs[] = {1, 1, 5, 3, 4096, 4096};
    for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
        fake *f;
        drv_stream *st = ws_open(&CFG, &f);
        f->read_chunk = reads[i];
        feed(f, stream, len);
        size_t got_len = 0;
        CHECK(read_all(st, bufs[i], got, sizeof(got), &got_len) == DRV_AGAIN);
        CHECK(got_len == expect_len && memcmp(got, expect, expect_len) == 0);
        CHECK(pongs_ok(f));
        ws_destroy(st, f);
    }

    /* A 64-bit length frame. */
    {
        size_t big = 70000;
        uint8_t *payload = malloc(big), *fr = malloc(big + 14), *out = malloc(big);
        for (size_t i = 0; i < big; i++)
            payload[i] = (uint8_t)(i ^ (i >> 8));
        fake *f;
        drv_stream *st = ws_open(&CFG, &f);
        f->read_chunk = 4093;
        feed(f, fr, cframe(fr, 0x82, payload, big));
        size_t got_len = 0;
        CHECK(read_all(st, 1000, out, big, &got_len) == DRV_AGAIN);
        CHECK(got_len == big && memcmp(out, payload, big) == 0);
        ws_destroy(st, f);
        free(payload);
        free(fr);
        free(out);
    }
    CHECK(drv_mem_used() == base);
}

static void test_ping_pong(void)
{
    fake *f;
    drv_stream *st = ws_open(&CFG, &f);
    uint8_t fr[256], p[125], got[64];
    for (size_t i = 0; i < sizeof(p); i++)
        p[i] = (uint8_t)(255 - i);
    feed(f, fr, cframe(fr, 0x89, p, 125)); /* largest ping */
    feed(f, fr, cframe(fr, 0x8A, p, 3));   /* pong: ignored */
    size_t got_len = 0;
    CHECK(read_all(st, 64, got, sizeof(got), &got_len) == DRV_AGAIN && got_len == 0);
    size_t pos = 0;
    sframe s;
    CHECK(next_sframe(f, &pos, &s) && s.b0 == 0x8A && s.len == 125 && memcmp(s.data, p, 125) == 0);
    CHECK(pos == f->out_len);
    ws_destroy(st, f);
}

static void test_close_handshake(void)
{
    static const struct {
        const uint8_t *payload; /* close frame payload */
        size_t len;             /* its length */
        uint16_t reply;         /* expected close code in the reply */
        drv_err result;         /* what read returns */
    } cases[] = {
        {(const uint8_t *)"", 0, 1000, DRV_CLOSED},
        {(const uint8_t *)"\x03\xe8", 2, 1000, DRV_CLOSED},
        {(const uint8_t *)"\x03\xe9going away", 12, 1001, DRV_CLOSED},
        {(const uint8_t *)"\x0f\xa0", 2, 4000, DRV_CLOSED},
        {(const uint8_t *)"\x03\xf3", 2, 1011, DRV_CLOSED},
        {(const uint8_t *)"\x03", 1, 1002, DRV_PROTOCOL},
        {(const uint8_t *)"\x03\xed", 2, 1002, DRV_PROTOCOL}, /* 1005 may not be sent */
        {(const uint8_t *)"\x03\xee", 2, 1002, DRV_PROTOCOL}, /* 1006 neither */
        {(const uint8_t *)"\x03\xe7", 2, 1002, DRV_PROTOCOL}, /* 999 */
        {(const uint8_t *)"\x13\x88", 2, 1002, DRV_PROTOCOL}, /* 5000 */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t base = drv_mem_used();
        fake *f;
        drv_stream *st = ws_open(&CFG, &f);
        uint8_t fr[256];
        /* Data before the close in the same read, and a frame after it (dropped). */
        size_t n = cframe(fr, 0x82, "hi", 2);
        n += cframe(fr + n, 0x88, cases[i].payload, cases[i].len);
        n += cframe(fr + n, 0x82, "late", 4);
        feed(f, fr, n);
        uint8_t buf[64];
        size_t got = 0;
        CHECK(drv_stream_read(st, buf, sizeof(buf), &got) == DRV_OK && got == 2);
        CHECK(memcmp(buf, "hi", 2) == 0);
        CHECK(drv_stream_read(st, buf, sizeof(buf), &got) == cases[i].result && got == 0);
        CHECK(drv_stream_read(st, buf, sizeof(buf), &got) == cases[i].result);
        CHECK(out_is_close(f, 0, cases[i].reply));
        CHECK(drv_stream_write(st, (const uint8_t *)"x", 1, &got) != DRV_OK && got == 0);
        /* shutdown after a close sends nothing more */
        size_t out_len = f->out_len;
        drv_stream_free(st, 1000);
        CHECK(f->out_len == out_len && f->freed);
        fake_destroy(f);
        CHECK(drv_mem_used() == base);
    }
}

static void test_protocol_errors(void)
{
    drv_ws_config small = CFG;
    small.max_message = 100;
    static uint8_t p[200];
    memset(p, 'm', sizeof(p));
    static const struct {
        const char *what;     /* name of the case */
        int nframes;          /* frames in the case */
        uint8_t frames[3][2]; /* b0 and payload length of each */
        bool unmasked;        /* the last frame is unmasked */
        int form;             /* length form of the last frame */
        uint16_t code;        /* expected close code, 0 = no error */
        size_t delivered;     /* payload bytes delivered before it */
    } cases[] = {
        {"unmasked binary", 1, {{0x82, 4}}, true, LEN_AUTO, 1002, 0},
        {"unmasked ping", 1, {{0x89, 4}}, true, LEN_AUTO, 1002, 0},
        {"text", 1, {{0x81, 4}}, false, LEN_AUTO, 1003, 0},
        {"text after data", 2, {{0x82, 3}, {0x81, 4}}, false, LEN_AUTO, 1003, 3},
        {"rsv1", 1, {{0xC2, 4}}, false, LEN_AUTO, 1002, 0},
        {"rsv2", 1, {{0xA2, 4}}, false, LEN_AUTO, 1002, 0},
        {"rsv3", 1, {{0x92, 4}}, false, LEN_AUTO, 1002, 0},
        {"rsv on ping", 1, {{0xC9, 0}}, false, LEN_AUTO, 1002, 0},
        {"opcode 3", 1, {{0x83, 1}}, false, LEN_AUTO, 1002, 0},
        {"opcode 7", 1, {{0x87, 1}}, false, LEN_AUTO, 1002, 0},
        {"opcode B", 1, {{0x8B, 1}}, false, LEN_AUTO, 1002, 0},
        {"opcode F", 1, {{0x8F, 1}}, false, LEN_AUTO, 1002, 0},
        {"continuation first", 1, {{0x80, 4}}, false, LEN_AUTO, 1002, 0},
        {"continuation after end", 2, {{0x82, 2}, {0x80, 4}}, false, LEN_AUTO, 1002, 2},
        {"binary inside fragments", 2, {{0x02, 2}, {0x82, 4}}, false, LEN_AUTO, 1002, 2},
        {"text inside fragments", 2, {{0x02, 2}, {0x81, 4}}, false, LEN_AUTO, 1002, 2},
        {"fragmented ping", 1, {{0x09, 2}}, false, LEN_AUTO, 1002, 0},
        {"fragmented close", 1, {{0x08, 0}}, false, LEN_AUTO, 1002, 0},
        {"ping 126 bytes", 1, {{0x89, 126}}, false, LEN_16, 1002, 0},
        {"close 126 bytes", 1, {{0x88, 126}}, false, LEN_16, 1002, 0},
        {"message 101", 1, {{0x82, 101}}, false, LEN_AUTO, 1009, 0},
        {"fragments over 100", 3, {{0x02, 50}, {0x00, 30}, {0x80, 21}}, false, LEN_AUTO, 1009, 80},
        {"message 100", 1, {{0x82, 100}}, false, LEN_AUTO, 0, 100},
        {"fragments 100", 3, {{0x02, 60}, {0x89, 2}, {0x80, 40}}, false, LEN_AUTO, 0, 100},
        {"two messages of 100", 2, {{0x82, 100}, {0x82, 100}}, false, LEN_AUTO, 0, 200},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t base = drv_mem_used();
        fake *f;
        drv_stream *st = ws_open(&small, &f);
        uint8_t fr[1024];
        size_t n = 0;
        int last = cases[i].nframes;
        for (int j = 0; j < last; j++) {
            bool final = j == last - 1;
            n += cframe_ex(fr + n, cases[i].frames[j][0], p, cases[i].frames[j][1],
                           final ? cases[i].form : LEN_AUTO, !(final && cases[i].unmasked));
        }
        uint8_t got[1024];
        size_t got_len = 0;
        feed(f, fr, n);
        drv_err e = read_all(st, 4096, got, sizeof(got), &got_len);
        bool ok = got_len == cases[i].delivered && (got_len == 0 || memcmp(got, p, got_len) == 0);
        size_t pos = 0;
        if (cases[i].code == 0) {
            ok = ok && e == DRV_AGAIN;
        } else {
            /* skip a pong if any */
            sframe s;
            size_t q = 0;
            if (next_sframe(f, &q, &s) && s.b0 == 0x8A)
                pos = q;
            ok = ok && e == DRV_PROTOCOL && out_is_close(f, pos, cases[i].code);
            size_t k;
            ok = ok && drv_stream_read(st, got, 1, &k) == DRV_PROTOCOL;
        }
        if (!ok)
            fprintf(stderr, "case %s: %s, %zu bytes\n", cases[i].what, drv_errname(e), got_len);
        CHECK(ok);
        ws_destroy(st, f);
        CHECK(drv_mem_used() == base);
    }

    /* A 64-bit length with the high bit set. */
    fake *f;
    drv_stream *st = ws_open(&CFG, &f);
    uint8_t fr[] = {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4};
    feed(f, fr, sizeof(fr));
    uint8_t buf[16];
    size_t n;
    CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_PROTOCOL);
    CHECK(out_is_close(f, 0, 1002));
    ws_destroy(st, f);

    /* The default max_message (0 in the config) is MQTT's largest packet. */
    drv_ws_config dflt = CFG;
    dflt.max_message = 0;
    st = ws_open(&dflt, &f);
    uint8_t hdr[] = {0x82, 0xFF, 0, 0, 0, 0, 0x10, 0, 0, 5, 1, 2, 3, 4};
    feed(f, hdr, sizeof(hdr)); /* 268435461 bytes */
    CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_PROTOCOL);
    CHECK(out_is_close(f, 0, 1009));
    ws_destroy(st, f);
    st = ws_open(&dflt, &f);
    hdr[9] = 4; /* 268435460 bytes: accepted, payload awaited */
    feed(f, hdr, sizeof(hdr));
    CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_AGAIN);
    CHECK(f->out_len == 0);
    ws_destroy(st, f);
}

static void test_eof(void)
{
    fake *f;
    drv_stream *st = ws_open(&CFG, &f);
    uint8_t fr[64], buf[64];
    size_t n;
    feed(f, fr, cframe(fr, 0x82, "abc", 3) - 1); /* EOF mid-frame */
    f->eof = true;
    CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_OK && n == 2);
    CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_CLOSED && n == 0);
    CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_CLOSED);
    ws_destroy(st, f);

    st = ws_new(&CFG, &f);
    feed_str(f, "GET /mqtt HTTP/1.1\r\n");
    f->eof = true;
    CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_CLOSED);
    CHECK(f->out_len == 0);
    ws_destroy(st, f);
}

/* ------------------------------------------------------------------------ */
/* Writes                                                                    */

static void test_write_sizes(void)
{
    static const size_t sizes[] = {1, 2, 125, 126, 127, 16000, 16374, 16375, 65535, 65536, 70000};
    uint8_t *p = malloc(70000);
    for (size_t i = 0; i < 70000; i++)
        p[i] = (uint8_t)(i * 31);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        fake *f;
        drv_stream *st = ws_open(&CFG, &f);
        size_t n = 0;
        CHECK(drv_stream_write(st, p, sizes[i], &n) == DRV_OK && n == sizes[i]);
        size_t pos = 0;
        sframe s;
        CHECK(next_sframe(f, &pos, &s) && pos == f->out_len);
        CHECK(s.b0 == 0x82 && s.minimal && s.len == sizes[i] && memcmp(s.data, p, s.len) == 0);
        ws_destroy(st, f);
    }
    free(p);

    /* len 0 writes nothing; a write over DRV_WS_MAX_WRITE is taken in part. */
    fake *f;
    drv_stream *st = ws_open(&CFG, &f);
    size_t n = 7;
    CHECK(drv_stream_write(st, (const uint8_t *)"", 0, &n) == DRV_OK && n == 0 && f->out_len == 0);
    size_t huge = (size_t)DRV_WS_MAX_WRITE + 100;
    uint8_t *h = calloc(1, huge);
    CHECK(drv_stream_write(st, h, huge, &n) == DRV_OK && n == DRV_WS_MAX_WRITE);
    size_t pos = 0;
    sframe s;
    CHECK(next_sframe(f, &pos, &s) && s.len == DRV_WS_MAX_WRITE && pos == f->out_len);
    free(h);
    ws_destroy(st, f);
}

/* Append the frames in f->out to a model: data payloads concatenated, pongs counted. */
static bool parse_all(const fake *f, uint8_t *data, size_t *data_len, int *pongs, int *closes)
{
    size_t pos = 0;
    *data_len = 0;
    *pongs = *closes = 0;
    while (pos < f->out_len) {
        sframe s;
        if (!next_sframe(f, &pos, &s))
            return false;
        if (s.b0 == 0x82) {
            memcpy(data + *data_len, s.data, s.len);
            *data_len += s.len;
        } else if (s.b0 == 0x8A) {
            ++*pongs;
        } else if (s.b0 == 0x88) {
            ++*closes;
        } else {
            return false;
        }
    }
    return true;
}

/* A lower stream that takes one byte per turn: frames stay whole and in order. */
static void test_write_trickle(void)
{
    static uint8_t a[300], b[20000], all[20300], model[20300];
    for (size_t i = 0; i < sizeof(a); i++)
        a[i] = (uint8_t)i;
    for (size_t i = 0; i < sizeof(b); i++)
        b[i] = (uint8_t)(i * 13);
    memcpy(all, a, sizeof(a));
    memcpy(all + sizeof(a), b, sizeof(b));

    size_t base = drv_mem_used();
    fake *f;
    drv_stream *st = ws_open(&CFG, &f);
    size_t idle = drv_mem_used();
    f->write_budget = 1;
    size_t n;
    CHECK(drv_stream_write(st, a, sizeof(a), &n) == DRV_OK && n == sizeof(a));
    CHECK(f->out_len == 1);
    CHECK(drv_stream_wants(st) == DRV_EV_WRITE);
    CHECK(drv_stream_write(st, b, sizeof(b), &n) == DRV_AGAIN && n == 0);

    /* A ping arrives meanwhile: its pong queues behind frame a. */
    uint8_t fr[64], buf[64];
    feed(f, fr, cframe(fr, 0x89, "hb", 2));
    CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_AGAIN);

    /* One byte per turn; the caller retries b whenever it may. */
    bool b_taken = false;
    int turns = 0;
    while (turns++ < 100000) {
        f->write_budget = 1;
        if (!b_taken) {
            drv_err e = drv_stream_write(st, b, sizeof(b), &n);
            CHECK(e == DRV_OK || e == DRV_AGAIN);
            b_taken = e == DRV_OK && n == sizeof(b);
        } else if (drv_stream_wants(st) == 0) {
            break;
        }
    }
    CHECK(b_taken);
    size_t model_len;
    int pongs, closes;
    CHECK(parse_all(f, model, &model_len, &pongs, &closes) && pongs == 1 && closes == 0);
    CHECK(model_len == sizeof(all) && memcmp(model, all, sizeof(all)) == 0);
    /* pong sits between the two data frames */
    size_t pos = 0;
    sframe s;
    CHECK(next_sframe(f, &pos, &s) && s.b0 == 0x82 && s.len == sizeof(a));
    CHECK(next_sframe(f, &pos, &s) && s.b0 == 0x8A && s.len == 2 && memcmp(s.data, "hb", 2) == 0);
    CHECK(drv_mem_used() == idle); /* output buffer freed once drained */
    ws_destroy(st, f);
    CHECK(drv_mem_used() == base);

    /* One byte per write call, no limit on calls: everything goes at once. */
    st = ws_open(&CFG, &f);
    f->write_chunk = 1;
    CHECK(drv_stream_write(st, b, sizeof(b), &n) == DRV_OK && n == sizeof(b));
    CHECK(drv_stream_wants(st) == 0);
    CHECK(parse_all(f, model, &model_len, &pongs, &closes) && model_len == sizeof(b));
    ws_destroy(st, f);

    /* The 101 itself trickles out: writes wait behind it. */
    st = ws_new(&CFG, &f);
    f->write_budget = 5;
    feed_str(f, REQ);
    CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_AGAIN);
    CHECK(drv_stream_write(st, a, 10, &n) == DRV_AGAIN && n == 0);
    CHECK(drv_stream_wants(st) == DRV_EV_WRITE);
    f->write_budget = SIZE_MAX;
    CHECK(drv_stream_write(st, a, 10, &n) == DRV_OK && n == 10);
    const char *resp = out_str(f);
    const char *end = strstr(resp, "\r\n\r\n");
    CHECK(end && (size_t)(end + 4 - resp) + 12 == f->out_len);
    ws_destroy(st, f);
}

static void test_write_errors(void)
{
    fake *f;
    drv_stream *st = ws_open(&CFG, &f);
    f->write_err = DRV_IO;
    size_t n;
    CHECK(drv_stream_write(st, (const uint8_t *)"abc", 3, &n) == DRV_IO && n == 0);
    uint8_t buf[8];
    CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_IO);
    ws_destroy(st, f);

    /* Lower fails while a pong goes out. */
    st = ws_open(&CFG, &f);
    f->write_err = DRV_CLOSED;
    uint8_t fr[16];
    feed(f, fr, cframe(fr, 0x89, "", 0));
    CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_CLOSED);
    ws_destroy(st, f);
}

static void test_shutdown(void)
{
    static const struct {
        uint16_t code; /* passed to drv_stream_free */
        uint16_t sent; /* close code on the wire */
    } cases[] = {{0, 1000},    {1000, 1000}, {1001, 1001}, {1002, 1002}, {1009, 1009},
                 {1011, 1011}, {1005, 1000}, {1006, 1000}, {4000, 4000}, {65535, 1000}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fake *f;
        drv_stream *st = ws_open(&CFG, &f);
        drv_stream_free(st, cases[i].code);
        CHECK(f->freed && out_is_close(f, 0, cases[i].sent));
        fake_destroy(f);
    }

    /* Before the handshake nothing is sent; behind a partly sent frame the
     * close goes after it. */
    fake *f;
    drv_stream *st = ws_new(&CFG, &f);
    drv_stream_free(st, 1000);
    CHECK(f->freed && f->out_len == 0);
    fake_destroy(f);

    st = ws_open(&CFG, &f);
    f->write_budget = 3;
    size_t n;
    CHECK(drv_stream_write(st, (const uint8_t *)"0123456789", 10, &n) == DRV_OK && n == 10);
    CHECK(drv_stream_wants(st) == DRV_EV_WRITE);
    f->write_budget = SIZE_MAX;
    drv_stream_free(st, 1001);
    size_t pos = 0;
    sframe s;
    CHECK(next_sframe(f, &pos, &s) && s.b0 == 0x82 && s.len == 10);
    CHECK(out_is_close(f, pos, 1001));
    fake_destroy(f);
}

/* ------------------------------------------------------------------------ */
/* The HTTP hook, bad configs, allocation failure                            */

static drv_err hook(void *ud, const drv_ws_http_request *req, drv_buf *response)
{
    int *calls = ud;
    ++*calls;
    if (req->target_len == 4 && memcmp(req->target, "/api", 4) == 0) {
        const char r[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
        return drv_buf_append(response, r, sizeof(r) - 1);
    }
    if (req->target_len == 5 && memcmp(req->target, "/fail", 5) == 0)
        return DRV_IO;
    return DRV_DECLINED;
}

static void test_on_http(void)
{
    int calls = 0;
    drv_ws_config cfg = CFG;
    cfg.on_http = hook;
    cfg.on_http_ud = &calls;
    static const struct {
        const char *req;    /* request head */
        const char *status; /* expected status line */
    } cases[] = {
        {"GET /api HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1 200 OK\r\n"},
        {"GET /fail HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1 500 Internal Server Error\r\n"},
        {"GET /else HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1 404 Not Found\r\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fake *f;
        drv_stream *st = ws_new(&cfg, &f);
        feed_str(f, cases[i].req);
        uint8_t buf[16];
        size_t n;
        CHECK(drv_stream_read(st, buf, sizeof(buf), &n) == DRV_CLOSED);
        CHECK(strncmp(out_str(f), cases[i].status, strlen(cases[i].status)) == 0);
        ws_destroy(st, f);
    }
    CHECK(calls == 3);
    /* The WebSocket path never reaches the hook. */
    fake *f;
    drv_stream *st = ws_open(&cfg, &f);
    ws_destroy(st, f);
    CHECK(calls == 3);
}

static void test_bad_config(void)
{
    fake *f = fake_new();
    drv_stream *st = NULL;
    drv_ws_config cfg = CFG;
    CHECK(drv_ws_stream_new(NULL, &f->base, &st) == DRV_INVAL && st == NULL);
    cfg.path = NULL;
    CHECK(drv_ws_stream_new(&cfg, &f->base, &st) == DRV_INVAL && st == NULL);
    cfg.path = "mqtt";
    CHECK(drv_ws_stream_new(&cfg, &f->base, &st) == DRV_INVAL && st == NULL);
    CHECK(drv_ws_stream_new(&CFG, NULL, &st) == DRV_INVAL && st == NULL);
    drv_mem_fail_at(1);
    CHECK(drv_ws_stream_new(&CFG, &f->base, &st) == DRV_NOMEM && st == NULL);
    drv_mem_fail_at(0);
    fake_destroy(f);
}

/* A session that allocates at every point: handshake, leftover bytes, a
 * ping payload, a partly written frame.  Fails the kth allocation. */
static bool alloc_session(uint64_t k, bool *hit)
{
    size_t base = drv_mem_used();
    fake *f = fake_new();
    drv_stream *st = NULL;
    drv_mem_fail_at(k);
    drv_err e = drv_ws_stream_new(&CFG, &f->base, &st);
    if (e != DRV_OK) {
        drv_mem_fail_at(0);
        fake_destroy(f);
        *hit = true;
        return e == DRV_NOMEM && drv_mem_used() == base;
    }
    uint8_t stream[512];
    size_t len = strlen(REQ);
    memcpy(stream, REQ, len);
    len += cframe(stream + len, 0x82, "abc", 3);
    len += cframe(stream + len, 0x89, "ping", 4);
    feed(f, stream, len);
    f->write_budget = 161; /* the 101 fits, the pong does not */
    uint8_t buf[64];
    size_t n, got = 0;
    bool ok = true;
    for (int i = 0; i < 10; i++) {
        e = drv_stream_read(st, buf, sizeof(buf), &n);
        if (e == DRV_OK)
            got += n;
        else if (e == DRV_NOMEM)
            *hit = true;
        else if (e != DRV_AGAIN)
            ok = ok && e != DRV_PROTOCOL;
    }
    (void)drv_stream_write(st, (const uint8_t *)"xyz", 3, &n);
    (void)drv_stream_wants(st);
    drv_mem_fail_at(0);
    drv_stream_free(st, 1000);
    fake_destroy(f);
    return ok && got <= 3 && drv_mem_used() == base;
}

static void test_alloc_failure(void)
{
    bool all_ok = true;
    for (uint64_t k = 1; k <= 12; k++) {
        bool hit = false;
        bool ok = alloc_session(k, &hit);
        if (!ok)
            fprintf(stderr, "allocation failure %llu mishandled\n", (unsigned long long)k);
        all_ok = all_ok && ok;
    }
    CHECK(all_ok);
}

int main(void)
{
    test_accept();
    test_subprotocols();
    test_refusals();
    test_head_too_large();
    test_slow_refusal();
    test_handshake_split();
    test_on_http();
    test_frames_split();
    test_ping_pong();
    test_close_handshake();
    test_protocol_errors();
    test_eof();
    test_write_sizes();
    test_write_trickle();
    test_write_errors();
    test_shutdown();
    test_bad_config();
    test_alloc_failure();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
