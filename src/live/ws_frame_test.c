/*
 * ws_frame_test.c — unit tests for the live hub's WebSocket message codec
 * (src/live/ws_frame.c) and drv_ws_accept_key (src/net/ws.c): the encoders,
 * UTF-8 edge cases, 7/16/64-bit lengths, every protocol error and its close
 * code (also when only the header has arrived), fragmentation with control
 * frames in between, a stream split at every byte, close frames, what the
 * reader allocates and frees, and allocation failure.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "live/ws_frame.h"
#include "net/ws.h"

#include "core/test.h"

enum {
    LEN_MIN = 0, /* the shortest length form */
    LEN_16 = 16, /* force the 16-bit form */
    LEN_64 = 64, /* force the 64-bit form */
};

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d}; /* RFC 6455 §5.7 */

/* A masked client frame into out: first byte b0 (FIN, RSV, opcode), the
 * payload in the length form asked for.  Returns its size. */
static size_t cframe(uint8_t *out, uint8_t b0, const void *payload, size_t len, int form)
{
    size_t i = 0;
    out[i++] = b0;
    if (form == LEN_64 || (form == LEN_MIN && len > 0xFFFF)) {
        out[i++] = 0x80 | 127;
        for (int k = 0; k < 8; k++)
            out[i++] = (uint8_t)((uint64_t)len >> (56 - 8 * k));
    } else if (form == LEN_16 || len >= 126) {
        out[i++] = 0x80 | 126;
        out[i++] = (uint8_t)(len >> 8);
        out[i++] = (uint8_t)len;
    } else {
        out[i++] = (uint8_t)(0x80 | len);
    }
    memcpy(out + i, MASK, 4);
    i += 4;
    for (size_t k = 0; k < len; k++)
        out[i + k] = ((const uint8_t *)payload)[k] ^ MASK[k & 3];
    return i + len;
}

static size_t cframe_str(uint8_t *out, uint8_t b0, const char *s)
{
    return cframe(out, b0, s, strlen(s), LEN_MIN);
}

/* Feed one buffer to a fresh reader: the first result, event and code. */
static drv_err next_once(uint32_t max, uint8_t *buf, size_t n, drv_wsf_event *ev, size_t *used,
                         uint16_t *code)
{
    drv_wsf_reader r = {.max_message = max};
    *code = 0;
    drv_err e = drv_wsf_next(&r, buf, n, ev, used, code);
    drv_wsf_reader_free(&r);
    return e;
}

/*
 * Play a caller: stream[0..n) arrives in chunks of `chunk` bytes (0: all at
 * once; a chunk of split: the first `split` bytes, then the rest), is read
 * to the end, and the events are written into log as text:
 *   T<len>:<payload>  B<len>:<payload>  P:<payload>  O:<payload> (pong)
 *   C<code>:<reason>  E<code> (error)  ~<n> (n bytes left, incomplete)
 * separated by '|'.
 */
static void play(uint32_t max, const uint8_t *stream, size_t n, size_t chunk, size_t split,
                 char *log, size_t cap)
{
    drv_wsf_reader r = {.max_message = max};
    uint8_t *in = malloc(n ? n : 1);
    size_t have = 0, fed = 0, at = 0;
    log[0] = '\0';
    bool done = false;
    while (!done) {
        /* The next chunk arrives. */
        size_t k = n - fed;
        if (split)
            k = fed == 0 ? (split < n ? split : n) : n - fed;
        else if (chunk && k > chunk)
            k = chunk;
        memcpy(in + have, stream + fed, k);
        have += k;
        fed += k;
        for (;;) {
            drv_wsf_event ev;
            size_t used = 99999;
            uint16_t code = 0;
            drv_err e = drv_wsf_next(&r, in, have, &ev, &used, &code);
            CHECK(used <= have);
            if (e == DRV_AGAIN) {
                memmove(in, in + used, have - used);
                have -= used;
                break;
            }
            int w;
            if (e == DRV_OK) {
                char tag = ev.opcode == DRV_WSF_TEXT     ? 'T'
                           : ev.opcode == DRV_WSF_BINARY ? 'B'
                           : ev.opcode == DRV_WSF_PING   ? 'P'
                           : ev.opcode == DRV_WSF_PONG   ? 'O'
                                                         : 'C';
                if (tag == 'C')
                    w = snprintf(log + at, cap - at, "%sC%u:%.*s", at ? "|" : "",
                                 (unsigned)ev.close_code, (int)ev.len, (const char *)ev.data);
                else if (tag == 'T' || tag == 'B')
                    w = snprintf(log + at, cap - at, "%s%c%zu:%.*s", at ? "|" : "", tag, ev.len,
                                 (int)(ev.len < 40 ? ev.len : 40), (const char *)ev.data);
                else
                    w = snprintf(log + at, cap - at, "%s%c:%.*s", at ? "|" : "", tag, (int)ev.len,
                                 (const char *)ev.data);
                at += (size_t)w;
                /* The event read, the caller drops its bytes. */
                memmove(in, in + used, have - used);
                have -= used;
                if (tag == 'C')
                    done = true; /* a caller stops reading after a close */
                else
                    continue;
            } else {
                w = snprintf(log + at, cap - at, "%sE%u", at ? "|" : "", (unsigned)code);
                at += (size_t)w;
                done = true;
            }
            break;
        }
        if (!done && fed == n) {
            if (have)
                snprintf(log + at, cap - at, "%s~%zu", at ? "|" : "", have);
            done = true;
        }
    }
    drv_wsf_reader_free(&r);
    free(in);
}

/* play() the whole stream at once and compare the log with want. */
static bool plays(uint32_t max, const uint8_t *stream, size_t n, const char *want)
{
    char log[1024];
    play(max, stream, n, 0, 0, log, sizeof(log));
    if (strcmp(log, want) != 0) {
        fprintf(stderr, "  got  %s\n  want %s\n", log, want);
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------------ */

static void test_header(void)
{
    static const struct {
        uint64_t len;
        size_t hl;
        uint8_t h[10];
    } rows[] = {
        {0, 2, {0x81, 0}},
        {125, 2, {0x81, 125}},
        {126, 4, {0x81, 126, 0, 126}},
        {65535, 4, {0x81, 126, 0xFF, 0xFF}},
        {65536, 10, {0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
        {0x0102030405060708u, 10, {0x81, 127, 1, 2, 3, 4, 5, 6, 7, 8}},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        uint8_t h[10];
        memset(h, 0xEE, sizeof(h));
        size_t hl = drv_ws_frame_header(h, DRV_WSF_TEXT, rows[i].len);
        CHECK(hl == rows[i].hl && memcmp(h, rows[i].h, hl) == 0);
    }
    uint8_t h[10];
    CHECK(drv_ws_frame_header(h, DRV_WSF_PING, 3) == 2 && h[0] == 0x89 && h[1] == 3);
    CHECK(drv_ws_frame_header(h, DRV_WSF_CLOSE, 2) == 2 && h[0] == 0x88);
    CHECK(drv_ws_frame_header(h, DRV_WSF_BINARY, 300) == 4 && h[0] == 0x82);
}

static void test_close_payload(void)
{
    uint8_t out[125];
    CHECK(drv_wsf_close_payload(out, 1000, NULL) == 2 && out[0] == 0x03 && out[1] == 0xE8);
    CHECK(drv_wsf_close_payload(out, 4008, "slow consumer") == 15);
    CHECK(out[0] == 0x0F && out[1] == 0xA8 && memcmp(out + 2, "slow consumer", 13) == 0);
    CHECK(drv_wsf_close_payload(out, 0, "ignored") == 0);
    CHECK(drv_wsf_close_payload(out, 1001, "") == 2);

    /* 123 bytes fit; more are cut, never inside a character. */
    char reason[300];
    memset(reason, 'a', sizeof(reason));
    reason[123] = '\0';
    CHECK(drv_wsf_close_payload(out, 1000, reason) == 125);
    reason[123] = 'a';
    reason[200] = '\0';
    CHECK(drv_wsf_close_payload(out, 1000, reason) == 125);
    /* "é" (C3 A9) at bytes 122-123: dropped whole. */
    memcpy(reason + 122, "\xC3\xA9", 2);
    CHECK(drv_wsf_close_payload(out, 1000, reason) == 124);
    CHECK(out[123] == 'a' && drv_wsf_utf8_valid(out + 2, 122));
    /* "€" (E2 82 AC) at 121-123: dropped; at 120-122: kept. */
    memset(reason, 'a', 200);
    memcpy(reason + 121, "\xE2\x82\xAC", 3);
    CHECK(drv_wsf_close_payload(out, 1000, reason) == 2 + 121);
    memset(reason, 'a', 200);
    memcpy(reason + 120, "\xE2\x82\xAC", 3);
    CHECK(drv_wsf_close_payload(out, 1000, reason) == 125);
    CHECK(memcmp(out + 122, "\xE2\x82\xAC", 3) == 0);
    /* A 4-byte character across the cut. */
    memset(reason, 'a', 200);
    memcpy(reason + 120, "\xF0\x9F\x98\x80", 4);
    CHECK(drv_wsf_close_payload(out, 1000, reason) == 2 + 120);
    CHECK(drv_wsf_utf8_valid(out + 2, 120));
}

static void test_utf8(void)
{
    static const struct {
        const char *s;
        bool ok;
        const char *name;
    } rows[] = {
        {"", true, "empty"},
        {"plain ascii", true, "ascii"},
        {"\x7F", true, "DEL"},
        {"\xC2\x80", true, "U+0080"},
        {"\xDF\xBF", true, "U+07FF"},
        {"\xE0\xA0\x80", true, "U+0800"},
        {"\xED\x9F\xBF", true, "U+D7FF"},
        {"\xEE\x80\x80", true, "U+E000"},
        {"\xEF\xBF\xBF", true, "U+FFFF"},
        {"\xF0\x90\x80\x80", true, "U+10000"},
        {"\xF4\x8F\xBF\xBF", true, "U+10FFFF (4-byte max)"},
        {"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5", true, "kosme"},
        {"\x80", false, "lone continuation"},
        {"\xBF", false, "lone continuation BF"},
        {"\xC0\x80", false, "overlong NUL (C0)"},
        {"\xC1\xBF", false, "overlong (C1)"},
        {"\xE0\x80\x80", false, "overlong 3-byte"},
        {"\xE0\x9F\xBF", false, "overlong U+07FF in 3 bytes"},
        {"\xF0\x80\x80\x80", false, "overlong 4-byte"},
        {"\xF0\x8F\xBF\xBF", false, "overlong U+FFFF in 4 bytes"},
        {"\xED\xA0\x80", false, "surrogate U+D800"},
        {"\xED\xBF\xBF", false, "surrogate U+DFFF"},
        {"\xED\xA0\x80\xED\xB0\x80", false, "surrogate pair"},
        {"\xF4\x90\x80\x80", false, "U+110000"},
        {"\xF5\x80\x80\x80", false, "F5"},
        {"\xF8\x88\x80\x80\x80", false, "5-byte form"},
        {"\xFE", false, "FE"},
        {"\xFF", false, "FF"},
        {"\xC2", false, "truncated 2-byte"},
        {"\xE2\x82", false, "truncated 3-byte"},
        {"\xF0\x9F\x98", false, "truncated 4-byte"},
        {"\xC2\x41", false, "continuation missing"},
        {"\xE2\x28\xA1", false, "bad second byte"},
        {"\xE2\x82\x28", false, "bad third byte"},
        {"\xF0\x9F\x98\x28", false, "bad fourth byte"},
        {"a\xC3\xA9z\xE2\x82\xAC\xF0\x9F\x98\x80", true, "mixed"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        CHECK_CASE(drv_wsf_utf8_valid((const uint8_t *)rows[i].s, strlen(rows[i].s)) == rows[i].ok,
                   rows[i].name);
    CHECK(drv_wsf_utf8_valid((const uint8_t *)"\0", 1)); /* NUL is a character */

    /* The eight-byte ASCII path: a bad byte at every position of a long run. */
    uint8_t s[64];
    for (size_t pos = 0; pos < sizeof(s); pos++) {
        memset(s, 'x', sizeof(s));
        CHECK(drv_wsf_utf8_valid(s, sizeof(s)));
        s[pos] = 0x80;
        CHECK_CASE(!drv_wsf_utf8_valid(s, sizeof(s)), "continuation in ASCII run");
        s[pos] = 0xC3;
        CHECK_CASE(drv_wsf_utf8_valid(s, sizeof(s)) == false, "C3 before 'x'");
        if (pos + 1 < sizeof(s)) {
            s[pos + 1] = 0xA9;
            CHECK_CASE(drv_wsf_utf8_valid(s, sizeof(s)), "é in ASCII run");
        }
    }
}

/* Text and binary frames in the three length forms, the payload unmasked in place. */
static void test_lengths(void)
{
    static uint8_t payload[70000], frame[70100];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)('a' + i % 26);
    static const struct {
        size_t len;
        int form;
        size_t hl;
    } rows[] = {
        {0, LEN_MIN, 6},    {1, LEN_MIN, 6},     {125, LEN_MIN, 6},    {126, LEN_MIN, 8},
        {1000, LEN_MIN, 8}, {65535, LEN_MIN, 8}, {65536, LEN_MIN, 14}, {69999, LEN_MIN, 14},
        {5, LEN_16, 8},     {5, LEN_64, 14},     {0, LEN_64, 14},      {300, LEN_64, 14},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        for (uint8_t op = DRV_WSF_TEXT; op <= DRV_WSF_BINARY; op++) {
            size_t n = cframe(frame, 0x80 | op, payload, rows[i].len, rows[i].form);
            CHECK(n == rows[i].hl + rows[i].len);
            drv_wsf_event ev;
            size_t used;
            uint16_t code;
            CHECK(next_once(70000, frame, n, &ev, &used, &code) == DRV_OK);
            CHECK(used == n && ev.opcode == op && ev.len == rows[i].len && ev.close_code == 0);
            CHECK(ev.data == frame + rows[i].hl); /* in place, no copy */
            CHECK(memcmp(ev.data, payload, rows[i].len) == 0);
            /* Every strict prefix is "not yet", nothing consumed. */
            cframe(frame, 0x80 | op, payload, rows[i].len, rows[i].form);
            size_t cuts[] = {0, 1, rows[i].hl - 1, rows[i].hl, n - 1};
            for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
                if (cuts[c] >= n)
                    continue;
                used = 7;
                CHECK(next_once(70000, frame, cuts[c], &ev, &used, &code) == DRV_AGAIN &&
                      used == 0);
            }
        }
    }

    /* max_message 0 means 64 KiB. */
    size_t n = cframe(frame, 0x82, payload, 65536, LEN_MIN);
    drv_wsf_event ev;
    size_t used;
    uint16_t code;
    CHECK(next_once(0, frame, n, &ev, &used, &code) == DRV_OK && ev.len == 65536);
    n = cframe(frame, 0x82, payload, 65537, LEN_MIN);
    CHECK(next_once(0, frame, n, &ev, &used, &code) == DRV_PROTOCOL && code == 1009);
    CHECK(DRV_WSF_FRAME_MAX(0) == 65550 && DRV_WSF_FRAME_MAX(100) == 114);
}

/* Every protocol error with its close code; as soon as the bytes that decide it are in. */
static void test_errors(void)
{
    static const struct {
        const char *name;
        uint8_t bytes[16];
        size_t n;      /* bytes given (the frame may be incomplete) */
        uint16_t code; /* 0: not an error, incomplete (DRV_AGAIN) */
    } rows[] = {
        {"unmasked text", {0x81, 0x02, 'h', 'i'}, 4, 1002},
        {"unmasked, header only", {0x81, 0x05}, 2, 1002},
        {"RSV1", {0xC1, 0x80, 0, 0, 0, 0}, 6, 1002},
        {"RSV2", {0xA1, 0x80, 0, 0, 0, 0}, 6, 1002},
        {"RSV3", {0x91, 0x80, 0, 0, 0, 0}, 6, 1002},
        {"RSV1, first byte only", {0xC1}, 1, 1002},
        {"opcode 3", {0x83, 0x80, 0, 0, 0, 0}, 6, 1002},
        {"opcode 7", {0x87}, 1, 1002},
        {"opcode B", {0x8B, 0x80, 0, 0, 0, 0}, 6, 1002},
        {"opcode F", {0x8F}, 1, 1002},
        {"fragmented ping", {0x09, 0x80, 0, 0, 0, 0}, 6, 1002},
        {"fragmented close", {0x08}, 1, 1002},
        {"fragmented pong", {0x0A, 0x80, 0, 0, 0, 0}, 6, 1002},
        {"ping of 126 (16-bit form)", {0x89, 0xFE, 0, 126}, 4, 1002},
        {"ping of 126, header start", {0x89, 0xFE}, 2, 1002},
        {"close of 127 form", {0x88, 0xFF}, 2, 1002},
        {"continuation first", {0x80, 0x80, 0, 0, 0, 0}, 6, 1002},
        {"continuation first, 1 byte", {0x00}, 1, 1002},
        {"64-bit length, top bit", {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0}, 10, 1002},
        {"64-bit length over max", {0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0}, 10, 1009},
        {"16-bit length over max", {0x81, 0xFE, 0x04, 0x01}, 4, 1009},
        {"7-bit length, incomplete", {0x81, 0x85, 1, 2, 3, 4, 5}, 7, 0},
        {"16-bit length, incomplete", {0x81, 0xFE, 0x04}, 3, 0},
        {"64-bit length, incomplete", {0x82, 0xFF, 0, 0, 0, 0, 0, 0, 4}, 9, 0},
        {"at max, payload awaited", {0x81, 0xFE, 0x04, 0x00, 1, 2, 3, 4}, 8, 0},
        {"close, 1 byte", {0x88, 0x81, 0, 0, 0, 0, 0x03}, 7, 1002},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        uint8_t b[16];
        memcpy(b, rows[i].bytes, sizeof(b));
        drv_wsf_reader r = {.max_message = 1024};
        drv_wsf_event ev;
        size_t used = 7;
        uint16_t code = 0;
        drv_err e = drv_wsf_next(&r, b, rows[i].n, &ev, &used, &code);
        if (rows[i].code) {
            CHECK_CASE(e == DRV_PROTOCOL && code == rows[i].code, rows[i].name);
            /* Sticky: the same answer again, whatever follows. */
            code = 0;
            CHECK_CASE(drv_wsf_next(&r, b, 0, &ev, &used, &code) == DRV_PROTOCOL &&
                           code == rows[i].code && used == 0,
                       rows[i].name);
        } else {
            CHECK_CASE(e == DRV_AGAIN && used == 0 && code == 0, rows[i].name);
            CHECK_CASE(memcmp(b, rows[i].bytes, rows[i].n) == 0, rows[i].name); /* untouched */
        }
        drv_wsf_reader_free(&r);
    }

    uint8_t s[2048];
    size_t n;
    /* A data frame inside a fragmented message. */
    n = cframe_str(s, 0x01, "a");
    n += cframe_str(s + n, 0x81, "b");
    CHECK(plays(1024, s, n, "E1002"));
    n = cframe_str(s, 0x02, "a");
    n += cframe_str(s + n, 0x02, "b");
    CHECK(plays(1024, s, n, "E1002"));
    /* A continuation after the message ended. */
    n = cframe_str(s, 0x01, "a");
    n += cframe_str(s + n, 0x80, "b");
    n += cframe_str(s + n, 0x80, "c");
    CHECK(plays(1024, s, n, "T2:ab|E1002"));
    /* Invalid UTF-8: whole frame, and ending inside a character. */
    n = cframe_str(s, 0x81, "ok\xC0\xAF");
    CHECK(plays(1024, s, n, "E1007"));
    n = cframe_str(s, 0x81, "ok\xE2\x82");
    CHECK(plays(1024, s, n, "E1007"));
    n = cframe_str(s, 0x81, "\xED\xA0\x80");
    CHECK(plays(1024, s, n, "E1007"));
    /* Binary is not checked. */
    n = cframe_str(s, 0x82, "\xC0\xAF");
    CHECK(plays(1024, s, n, "B2:\xC0\xAF"));
    /* Over max_message: one frame, and fragments that add up. */
    static uint8_t big[1100];
    memset(big, 'x', sizeof(big));
    n = cframe(s, 0x81, big, 1025, LEN_MIN);
    CHECK(plays(1024, s, n, "E1009"));
    n = cframe(s, 0x81, big, 1024, LEN_MIN);
    CHECK(plays(1024, s, n, "T1024:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"));
    n = cframe(s, 0x01, big, 1000, LEN_MIN);
    n += cframe(s + n, 0x00, big, 24, LEN_MIN);
    n += cframe(s + n, 0x80, big, 1, LEN_MIN);
    CHECK(plays(1024, s, n, "E1009"));
    /* ... refused from the header alone: the payload never arrives. */
    n = cframe(s, 0x01, big, 1000, LEN_MIN);
    n += cframe(s + n, 0x80, big, 25, LEN_MIN);
    CHECK(plays(1024, s, n - 25 - 4, "E1009"));
    /* Control frames do not count against max_message. */
    n = cframe(s, 0x01, big, 1024, LEN_MIN);
    n += cframe(s + n, 0x89, big, 125, LEN_MIN);
    n += cframe(s + n, 0x80, big, 0, LEN_MIN);
    char want[1200];
    snprintf(want, sizeof(want), "P:%.125s|T1024:%.40s", (const char *)big, (const char *)big);
    CHECK(plays(1024, s, n, want));
}

static void test_close(void)
{
    uint8_t s[256];
    size_t n;
    /* No payload: 1005. */
    n = cframe(s, 0x88, "", 0, LEN_MIN);
    drv_wsf_reader r = {.max_message = 100};
    drv_wsf_event ev;
    size_t used;
    uint16_t code = 0;
    CHECK(drv_wsf_next(&r, s, n, &ev, &used, &code) == DRV_OK);
    CHECK(ev.opcode == DRV_WSF_CLOSE && ev.close_code == 1005 && ev.len == 0 && used == n);
    /* Nothing after a close. */
    CHECK(drv_wsf_next(&r, s, n, &ev, &used, &code) == DRV_CLOSED && used == 0);
    drv_wsf_reader_free(&r);

    /* A code and a reason. */
    n = cframe(s, 0x88,
               "\x03\xE8"
               "bye \xC3\xA9",
               8, LEN_MIN);
    CHECK(plays(100, s, n, "C1000:bye \xC3\xA9"));
    n = cframe(s, 0x88, "\x03\xE9", 2, LEN_MIN);
    CHECK(plays(100, s, n, "C1001:"));
    /* An invalid reason: 1007. */
    n = cframe(s, 0x88, "\x03\xE8\xFF", 3, LEN_MIN);
    CHECK(plays(100, s, n, "E1007"));
    /* Codes a peer may send, and the ones it may not. */
    static const uint16_t ok_codes[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009,
                                        1010, 1011, 1012, 1013, 1014, 3000, 4999};
    static const uint16_t bad_codes[] = {0,    1,    999,  1004, 1005, 1006, 1015,
                                         1016, 1100, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof(ok_codes) / sizeof(ok_codes[0]); i++) {
        uint8_t p[2] = {(uint8_t)(ok_codes[i] >> 8), (uint8_t)ok_codes[i]};
        n = cframe(s, 0x88, p, 2, LEN_MIN);
        char w[32];
        snprintf(w, sizeof(w), "C%u:", (unsigned)ok_codes[i]);
        CHECK_CASE(plays(100, s, n, w), "valid close code");
    }
    for (size_t i = 0; i < sizeof(bad_codes) / sizeof(bad_codes[0]); i++) {
        uint8_t p[2] = {(uint8_t)(bad_codes[i] >> 8), (uint8_t)bad_codes[i]};
        n = cframe(s, 0x88, p, 2, LEN_MIN);
        CHECK_CASE(plays(100, s, n, "E1002"), "invalid close code");
    }
    /* A close in the middle of a fragmented message ends it. */
    n = cframe_str(s, 0x01, "part");
    n += cframe(s + n, 0x88, "\x03\xE8", 2, LEN_MIN);
    CHECK(plays(100, s, n, "C1000:"));
}

/* Fragmentation: control frames between fragments come out as they arrive. */
static void test_fragments(void)
{
    uint8_t s[512];
    size_t n = cframe_str(s, 0x01, "Hel");
    n += cframe_str(s + n, 0x89, "p1");
    n += cframe_str(s + n, 0x00, "lo ");
    n += cframe_str(s + n, 0x8A, "p2");
    n += cframe_str(s + n, 0x00, "");
    n += cframe_str(s + n, 0x80, "world");
    n += cframe_str(s + n, 0x82, "bin");
    n += cframe_str(s + n, 0x02, "B1");
    n += cframe_str(s + n, 0x80, "B2");
    CHECK(plays(100, s, n, "P:p1|O:p2|T11:Hello world|B3:bin|B4:B1B2"));

    /* *used: fragments taken on DRV_AGAIN; the event's frames with DRV_OK. */
    drv_wsf_reader r = {.max_message = 100};
    drv_wsf_event ev;
    size_t used;
    uint16_t code;
    uint8_t b[64];
    size_t f1 = cframe_str(b, 0x01, "ab");
    size_t f2 = cframe_str(b + f1, 0x00, "cd");
    size_t f3 = cframe_str(b + f1 + f2, 0x80, "ef");
    CHECK(drv_wsf_next(&r, b, f1 + f2 + 3, &ev, &used, &code) == DRV_AGAIN && used == f1 + f2);
    CHECK(r.msg != NULL && r.msg_len == 4);
    memmove(b, b + used, f3);
    CHECK(drv_wsf_next(&r, b, f3, &ev, &used, &code) == DRV_OK && used == f3);
    CHECK(ev.opcode == DRV_WSF_TEXT && ev.len == 6 && memcmp(ev.data, "abcdef", 6) == 0);
    CHECK(ev.data == r.msg);
    CHECK(drv_wsf_next(&r, b, 0, &ev, &used, &code) == DRV_AGAIN && used == 0 && r.msg == NULL);
    drv_wsf_reader_free(&r);

    /* Empty fragments and an empty message. */
    n = cframe_str(s, 0x01, "");
    n += cframe_str(s + n, 0x00, "");
    n += cframe_str(s + n, 0x80, "");
    n += cframe_str(s + n, 0x81, "");
    CHECK(plays(100, s, n, "T0:|T0:"));

    /* UTF-8 across fragment boundaries: valid when split anywhere. */
    const char *txt = "\xF0\x9F\x98\x80\xE2\x82\xAC\xC3\xA9";
    for (size_t a = 0; a <= 9; a++) {
        for (size_t c = a; c <= 9; c++) {
            n = cframe(s, 0x01, txt, a, LEN_MIN);
            n += cframe(s + n, 0x00, txt + a, c - a, LEN_MIN);
            n += cframe(s + n, 0x80, txt + c, 9 - c, LEN_MIN);
            CHECK_CASE(plays(100, s, n, "T9:\xF0\x9F\x98\x80\xE2\x82\xAC\xC3\xA9"), "split");
        }
    }
    /* Invalid text fails at the fragment that shows it, before the message ends. */
    n = cframe_str(s, 0x01, "ok");
    n += cframe_str(s + n, 0x00, "\xED\xA0"); /* a surrogate's first two bytes */
    CHECK(plays(100, s, n, "E1007"));
    n = cframe_str(s, 0x01, "\xF4\x90");
    CHECK(plays(100, s, n, "E1007"));
    n = cframe_str(s, 0x01, "\xE0");
    CHECK(plays(100, s, n, "")); /* a valid start, taken, awaiting the rest */
    n = cframe_str(s, 0x01, "\xE0");
    n += cframe_str(s + n, 0x80, "\xA0");
    CHECK(plays(100, s, n, "E1007")); /* ... which never comes */
    n = cframe_str(s, 0x01, "\xE0");
    n += cframe_str(s + n, 0x80, "\x9F\x80");
    CHECK(plays(100, s, n, "E1007")); /* overlong across the boundary */
    /* Binary fragments are not checked. */
    n = cframe_str(s, 0x02, "\xE0");
    n += cframe_str(s + n, 0x80, "\x9F\x80");
    CHECK(plays(100, s, n, "B3:\xE0\x9F\x80"));
}

/* A stream of every kind of frame, split at every byte and fed byte by byte. */
static void test_split_everywhere(void)
{
    static uint8_t payload[300];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)('A' + i % 26);
    uint8_t s[1200];
    size_t n = cframe_str(s, 0x81, "{\"op\":\"ping\",\"id\":\"p1\"}");
    n += cframe(s + n, 0x81, payload, 300, LEN_MIN);
    n += cframe(s + n, 0x82, payload, 10, LEN_64);
    n += cframe_str(s + n, 0x01, "fr\xC3");
    n += cframe_str(s + n, 0x89, "ping");
    n += cframe_str(s + n, 0x00, "\xA9g");
    n += cframe(s + n, 0x8A, "", 0, LEN_MIN);
    n += cframe(s + n, 0x80, "ment", 4, LEN_16);
    n += cframe(s + n, 0x88,
                "\x03\xE8"
                "done",
                6, LEN_MIN);
    n += cframe_str(s + n, 0x81, "after close: ignored");
    const char *want =
        "T23:{\"op\":\"ping\",\"id\":\"p1\"}|T300:ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJKLMN"
        "|B10:ABCDEFGHIJ|P:ping|O:|T9:fr\xC3\xA9gment|C1000:done";
    CHECK(plays(400, s, n, want));
    char log[1024];
    for (size_t k = 0; k <= n; k++) {
        play(400, s, n, 0, k, log, sizeof(log));
        CHECK_CASE(strcmp(log, want) == 0, "split in two");
    }
    for (size_t chunk = 1; chunk <= 7; chunk++) {
        play(400, s, n, chunk, 0, log, sizeof(log));
        CHECK_CASE(strcmp(log, want) == 0, "fed in small chunks");
    }

    /* The same for a stream that ends in an error: the same error wherever it is cut. */
    n = cframe_str(s, 0x01, "ab");
    n += cframe_str(s + n, 0x89, "x");
    n += cframe_str(s + n, 0x00, "c\xED\xBF");
    n += cframe_str(s + n, 0x80, "\xBF");
    for (size_t k = 0; k <= n; k++) {
        play(400, s, n, 0, k, log, sizeof(log));
        CHECK_CASE(strcmp(log, "P:x|E1007") == 0, "error split in two");
    }
}

/* The reader holds memory only while a fragmented message is open or just returned. */
static void test_memory(void)
{
    size_t base = drv_mem_used();
    uint8_t s[256];
    drv_wsf_reader r = {.max_message = 5000};
    drv_wsf_event ev;
    size_t used;
    uint16_t code;

    size_t n = cframe_str(s, 0x81, "whole");
    CHECK(drv_wsf_next(&r, s, n, &ev, &used, &code) == DRV_OK && drv_mem_used() == base);
    n = cframe_str(s, 0x01, "frag");
    CHECK(drv_wsf_next(&r, s, n, &ev, &used, &code) == DRV_AGAIN && used == n);
    CHECK(drv_mem_used() > base);
    n = cframe_str(s, 0x80, "ment");
    CHECK(drv_wsf_next(&r, s, n, &ev, &used, &code) == DRV_OK && ev.len == 8);
    CHECK(drv_mem_used() > base); /* the message is still the caller's to read */
    CHECK(drv_wsf_next(&r, s, 0, &ev, &used, &code) == DRV_AGAIN);
    CHECK(drv_mem_used() == base);
    /* An open message: drv_wsf_reader_free releases it, and the reader starts over. */
    n = cframe_str(s, 0x01, "frag");
    CHECK(drv_wsf_next(&r, s, n, &ev, &used, &code) == DRV_AGAIN && drv_mem_used() > base);
    drv_wsf_reader_free(&r);
    CHECK(drv_mem_used() == base);
    n = cframe_str(s, 0x81, "again");
    CHECK(drv_wsf_next(&r, s, n, &ev, &used, &code) == DRV_OK && ev.len == 5);
    /* An error frees too. */
    n = cframe_str(s, 0x01, "frag");
    n += cframe_str(s + n, 0x01, "bad");
    CHECK(drv_wsf_next(&r, s, n, &ev, &used, &code) == DRV_PROTOCOL && code == 1002);
    CHECK(drv_mem_used() == base);
    drv_wsf_reader_free(&r);

    /* Growth stays under the cap: 5000 bytes in 125-byte fragments. */
    static uint8_t big[5000];
    memset(big, 'z', sizeof(big));
    for (size_t i = 0; i < 40; i++) {
        n = cframe(s, i == 0 ? 0x01 : i == 39 ? 0x80 : 0x00, big, 125, LEN_MIN);
        drv_err e = drv_wsf_next(&r, s, n, &ev, &used, &code);
        CHECK(i == 39 ? e == DRV_OK : e == DRV_AGAIN);
        CHECK(r.msg_cap <= 5000);
    }
    CHECK(ev.len == 5000 && memcmp(ev.data, big, 5000) == 0);
    drv_wsf_reader_free(&r);
    CHECK(drv_mem_used() == base);

    /* Allocation failure: DRV_NOMEM with 1011, sticky. */
    n = cframe_str(s, 0x01, "frag");
    drv_mem_fail_at(1);
    code = 0;
    CHECK(drv_wsf_next(&r, s, n, &ev, &used, &code) == DRV_NOMEM && code == 1011);
    drv_mem_fail_at(0);
    CHECK(drv_wsf_next(&r, s, n, &ev, &used, &code) == DRV_NOMEM && code == 1011);
    CHECK(drv_mem_used() == base);
    drv_wsf_reader_free(&r);
    /* ... also when growing. */
    n = cframe(s, 0x01, big, 125, LEN_MIN);
    for (int i = 0; i < 8; i++) {
        s[0] = i == 0 ? 0x01 : 0x00;
        cframe(s, s[0], big, 125, LEN_MIN);
        CHECK(drv_wsf_next(&r, s, n, &ev, &used, &code) == DRV_AGAIN);
    }
    drv_mem_fail_at(1); /* 1000 bytes in, the next one grows the buffer */
    cframe(s, 0x00, big, 125, LEN_MIN);
    CHECK(drv_wsf_next(&r, s, n, &ev, &used, &code) == DRV_NOMEM && code == 1011);
    drv_mem_fail_at(0);
    CHECK(drv_mem_used() == base);
    drv_wsf_reader_free(&r);
}

static void test_accept_key(void)
{
    char out[29];
    /* RFC 6455 §1.3. */
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    CHECK(drv_ws_accept_key(key, strlen(key), out));
    CHECK(strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);
    /* Not NUL-terminated: only n bytes are read. */
    char padded[32];
    memcpy(padded, "x3JJHMbDL1EzLkh9GBhXDw==zzzz", 28);
    CHECK(drv_ws_accept_key(padded, 24, out));
    CHECK(strcmp(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=") == 0);
    static const char *const bad[] = {
        "",
        "dGhlIHNhbXBsZSBub25jZQ=",   /* 23 */
        "dGhlIHNhbXBsZSBub25jZQ===", /* 25 */
        "dGhlIHNhbXBsZSBub25jZQAA",  /* no padding */
        "dGhlIHNhbXBsZSBub25jZ*==",  /* outside the alphabet */
        "dGhlIHNhbXBsZSBub25j ZQ=",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_CASE(!drv_ws_accept_key(bad[i], strlen(bad[i]), out), bad[i]);
    CHECK(!drv_ws_accept_key(NULL, 0, out));
}

int main(void)
{
    test_header();
    test_close_payload();
    test_utf8();
    test_lengths();
    test_errors();
    test_close();
    test_fragments();
    test_split_everywhere();
    test_memory();
    test_accept_key();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
