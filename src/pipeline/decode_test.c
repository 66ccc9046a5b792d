/*
 * decode_test.c — unit tests for the payload decoders (src/pipeline/decode*.c)
 * and their JSON scanner (json_scan.c).
 *
 * Table-driven: each case is a decoder, a payload and either the samples it
 * must give (rendered as "key=type:value[@ts]|...", the time shown only
 * when it is not the receive time) or the error and the exact `why`.  Every
 * run also checks the output invariants (keys and strings inside the
 * payload or the arena, n = 0 and why set exactly on failure).  Then the
 * limits: 1024 samples and one more, long keys and strings, arena
 * exhaustion, nesting depth, member-table size; zero-copy keys and strings;
 * the RFC 8428 §5 examples.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/num.h"
#include "pipeline/decode.h"
#include "pipeline/json_scan.h"

#include "core/test.h"

/* 2026-01-01T00:00:00Z, the receive time of every case. */
#define RECV INT64_C(1767225600000)
#define SKEW INT64_C(60000)

#define CAP 1100u
#define ARENA (256u * 1024u)

static drv_sample samples[CAP];
static char arena[ARENA];
static char rendered[1 << 16];

/* A decode with the usual limits (cap 1024, a 256 KiB arena). */
typedef struct run {
    drv_decode_in in;
    drv_decode_out out;
    drv_err err;
    const char *why;
} run;

static bool inside(drv_span s, const char *base, size_t n)
{
    return base && s.p >= base && s.p + s.n <= base + n;
}

/* The output invariants every decode keeps. */
static bool invariants(const run *r)
{
    if ((r->err == DRV_OK) != (r->why == NULL))
        return false;
    if (r->err != DRV_OK && r->out.n != 0)
        return false;
    if (r->out.n > r->out.cap || r->out.n > DRV_DECODE_MAX_SAMPLES ||
        r->out.arena_used > r->out.arena_cap)
        return false;
    for (uint32_t i = 0; i < r->out.n; i++) {
        const drv_sample *s = &r->out.samples[i];
        if (s->key.n == 0 || s->key.n > DRV_SAMPLE_MAX_KEY)
            return false;
        if (!inside(s->key, r->in.payload.p, r->in.payload.n) &&
            !inside(s->key, r->out.arena, r->out.arena_used) &&
            !inside(s->key, r->in.topic_key.p, r->in.topic_key.n))
            return false;
        if (s->v.type == DRV_VALUE_STRING && s->v.s.n > 0 &&
            !inside(s->v.s, r->in.payload.p, r->in.payload.n) &&
            !inside(s->v.s, r->out.arena, r->out.arena_used))
            return false;
        if (s->v.type == DRV_VALUE_STRING && s->v.s.n > DRV_SAMPLE_MAX_STRING)
            return false;
        if (s->v.type < DRV_VALUE_DOUBLE || s->v.type > DRV_VALUE_STRING)
            return false;
    }
    return true;
}

static run decode_n(const drv_decoder_ops *d, const char *payload, size_t n, const char *topic_key,
                    uint32_t cap, size_t arena_cap)
{
    run r;
    memset(&r, 0, sizeof(r));
    r.in.payload = (drv_span){payload, n};
    r.in.topic_key = (drv_span){topic_key, topic_key ? strlen(topic_key) : 0};
    r.in.recv_ms = RECV;
    r.in.max_future_ms = SKEW;
    r.out.samples = samples;
    r.out.cap = cap;
    r.out.arena = arena_cap ? arena : NULL;
    r.out.arena_cap = arena_cap;
    r.why = "not set";
    r.err = d->decode(&r.in, &r.out, &r.why);
    CHECK_CASE(invariants(&r), payload);
    return r;
}

static run decode(const drv_decoder_ops *d, const char *payload, const char *topic_key)
{
    return decode_n(d, payload, strlen(payload), topic_key, DRV_DECODE_MAX_SAMPLES, ARENA);
}

/* The samples as "key=t:value[@ts]|..." into rendered. */
static const char *render(const drv_decode_out *out)
{
    size_t at = 0;
    rendered[0] = '\0';
    for (uint32_t i = 0; i < out->n && at < sizeof(rendered) - 256; i++) {
        const drv_sample *s = &out->samples[i];
        int k = snprintf(rendered + at, sizeof(rendered) - at, "%s%.*s=", i ? "|" : "",
                         (int)s->key.n, s->key.p);
        at += (size_t)k;
        char num[DRV_NUM_FORMAT_CAP];
        switch (s->v.type) {
        case DRV_VALUE_DOUBLE:
            drv_format_double(s->v.d, num);
            k = snprintf(rendered + at, sizeof(rendered) - at, "d:%s", num);
            break;
        case DRV_VALUE_INT:
            k = snprintf(rendered + at, sizeof(rendered) - at, "i:%lld", (long long)s->v.i);
            break;
        case DRV_VALUE_BOOL:
            k = snprintf(rendered + at, sizeof(rendered) - at, "b:%s", s->v.b ? "true" : "false");
            break;
        case DRV_VALUE_STRING:
            k = snprintf(rendered + at, sizeof(rendered) - at, "s:%.*s", (int)s->v.s.n, s->v.s.p);
            break;
        default:
            k = snprintf(rendered + at, sizeof(rendered) - at, "?");
        }
        at += (size_t)k;
        if (s->ts_ms != RECV)
            at += (size_t)snprintf(rendered + at, sizeof(rendered) - at, "@%lld",
                                   (long long)s->ts_ms);
    }
    return rendered;
}

/* One table row: payload → samples (err DRV_OK) or → err with why. */
typedef struct dcase {
    const char *payload;
    drv_err err;
    const char *want; /* rendered samples, or the exact why */
} dcase;

static void run_table(const drv_decoder_ops *d, const dcase *cases, size_t n, const char *topic)
{
    for (size_t i = 0; i < n; i++) {
        run r = decode(d, cases[i].payload, topic);
        CHECK_CASE(r.err == cases[i].err, cases[i].payload);
        const char *got = r.err == DRV_OK ? render(&r.out) : r.why;
        CHECK_CASE(got && strcmp(got, cases[i].want) == 0, cases[i].payload);
        if (r.err != cases[i].err || !got || strcmp(got, cases[i].want) != 0)
            fprintf(stderr, "  %s: got %s \"%s\"\n  want %s \"%s\"\n", cases[i].payload,
                    drv_errname(r.err), got ? got : "(null)", drv_errname(cases[i].err),
                    cases[i].want);
    }
}

#define TABLE(d, cases, topic) run_table((d), (cases), sizeof(cases) / sizeof((cases)[0]), (topic))

static const dcase json_ok[] = {
    {"{\"temp\": 21.5, \"on\": true, \"mode\": \"eco\", \"pos\": {\"lat\": 1.5}}", DRV_OK,
     "temp=d:21.5|on=b:true|mode=s:eco|pos.lat=d:1.5"},
    {"{}", DRV_OK, ""},
    {" \r\n\t{\"a\":1} \n", DRV_OK, "a=i:1"},
    {"{\"a\": null, \"b\": 1}", DRV_OK, "b=i:1"},
    {"{\"arr\": [1, 2.5, \"x\", true, null, false]}", DRV_OK,
     "arr.0=i:1|arr.1=d:2.5|arr.2=s:x|arr.3=b:true|arr.5=b:false"},
    {"{\"a\": {\"b\": {\"c\": {\"d\": 1}}}, \"e\": 2}", DRV_OK, "a.b.c.d=i:1|e=i:2"},
    {"{\"e\": {}, \"f\": [], \"g\": [null]}", DRV_OK, ""},
    {"{\"d\": {\"ts\": 5, \"values\": 1}}", DRV_OK, "d.ts=i:5|d.values=i:1"},
    {"{\"a.b\": 1, \"a\": {\"c\": 2}}", DRV_OK, "a.b=i:1|a.c=i:2"},
    /* Numbers. */
    {"{\"i\": 9223372036854775807, \"b\": 9223372036854775808, \"n\": -9223372036854775808}",
     DRV_OK, "i=i:9223372036854775807|b=d:9.223372036854776e18|n=i:-9223372036854775808"},
    {"{\"z\": -0, \"zd\": -0.0, \"e\": 1e3, \"f\": 1.5E-3, \"g\": 0.1, \"h\": 1E+2}", DRV_OK,
     "z=i:0|zd=d:-0|e=d:1000|f=d:0.0015|g=d:0.1|h=d:100"},
    {"{\"tiny\": 1e-400}", DRV_OK, "tiny=d:0"},
    /* Escapes and UTF-8. */
    {"{\"caf\\u00e9\": \"na\\u00efve\", \"q\\\"k\": \"a\\\\b\\/c\", \"emoji\": \"\\ud83d\\ude00\"}",
     DRV_OK, "café=s:naïve|q\"k=s:a\\b/c|emoji=s:\xF0\x9F\x98\x80"},
    {"{\"temp\\u00e9rature\": {\"\\u00e9t\\u00e9\": \"\\t\"}}", DRV_OK, "température.été=s:\t"},
    {"{\"température\": \"été\", \"\xE2\x82\xAC\": \"\xF0\x9F\x98\x80\"}", DRV_OK,
     "température=s:été|\xE2\x82\xAC=s:\xF0\x9F\x98\x80"},
    {"{\"s\": \"\\u0000\"}", DRV_OK, "s=s:"}, /* NUL in a string value: kept (1 byte) */
    /* The {ts, values} form and batches. */
    {"{\"ts\": 1767225500000, \"values\": {\"t\": 1}}", DRV_OK, "t=i:1@1767225500000"},
    {"{\"values\": {\"t\": 1, \"u\": {\"v\": \"x\"}}, \"ts\": 1767225500000}", DRV_OK,
     "t=i:1@1767225500000|u.v=s:x@1767225500000"},
    {"{\"ts\": 1767225500000, \"values\": {}}", DRV_OK, ""},
    {"{\"ts\": 1, \"values\": {\"t\": 1}}", DRV_OK, "t=i:1@1"},
    {"{\"ts\": 1767225660000, \"values\": {\"t\": 1}}", DRV_OK, "t=i:1@1767225660000"},
    {"[{\"ts\": 1767225500000, \"values\": {\"t\": 1}}, {\"values\": {\"t\": 2}, \"ts\": "
     "1767225501000}]",
     DRV_OK, "t=i:1@1767225500000|t=i:2@1767225501000"},
    {"[]", DRV_OK, ""},
    {"{\"ts\": \"2026-01-01T00:00:00.123Z\", \"values\": {\"t\": 1}}", DRV_OK,
     "t=i:1@1767225600123"},
    {"{\"ts\": \"2026-01-01T00:00:00Z\", \"values\": {\"t\": 1}}", DRV_OK, "t=i:1"},
    {"{\"ts\": \"2025-12-31T23:00:00+01:00\", \"values\": {\"t\": 1}}", DRV_OK,
     "t=i:1@1767218400000"},
    {"{\"ts\": \"2025-12-31t19:00:00.5-05:00\", \"values\": {\"t\": 1}}", DRV_OK,
     "t=i:1@1767225600500"},
    {"{\"ts\": \"2024-02-29T00:00:00.123456789z\", \"values\": {\"t\": 1}}", DRV_OK,
     "t=i:1@1709164800123"},
    {"{\"ts\": \"1970-01-01T00:00:00Z\", \"values\": {\"t\": 1}}", DRV_OK, "t=i:1@0"},
};

static const dcase json_err[] = {
    {"", DRV_MALFORMED, "unexpected end of JSON"},
    {"   ", DRV_MALFORMED, "unexpected end of JSON"},
    {"42", DRV_MALFORMED, "expected a JSON object"},
    {"\"str\"", DRV_MALFORMED, "expected a JSON object"},
    {"null", DRV_MALFORMED, "expected a JSON object"},
    {"\xEF\xBB\xBF{}", DRV_MALFORMED, "expected a JSON value"},
    {"{", DRV_MALFORMED, "unexpected end of JSON"},
    {"{\"a\":1", DRV_MALFORMED, "unexpected end of JSON"},
    {"{\"a\":1,}", DRV_MALFORMED, "trailing comma in JSON"},
    {"{\"a\":[1,]}", DRV_MALFORMED, "trailing comma in JSON"},
    {"{\"a\":1} x", DRV_MALFORMED, "unexpected data after the JSON value"},
    {"{\"a\":1}{\"b\":2}", DRV_MALFORMED, "unexpected data after the JSON value"},
    {"{\"a\":01}", DRV_MALFORMED, "invalid number (leading zero)"},
    {"{\"a\":1.}", DRV_MALFORMED, "invalid number (a digit must follow '.')"},
    {"{\"a\":.5}", DRV_MALFORMED, "expected a JSON value"},
    {"{\"a\":-}", DRV_MALFORMED, "invalid number (a digit must follow '-')"},
    {"{\"a\":+1}", DRV_MALFORMED, "expected a JSON value"},
    {"{\"a\":1e}", DRV_MALFORMED, "invalid number (a digit must follow the exponent)"},
    {"{\"a\":1x}", DRV_MALFORMED, "invalid number"},
    {"{\"a\":0x10}", DRV_MALFORMED, "invalid number"},
    {"{\"a\":tru}", DRV_MALFORMED, "invalid literal (true, false or null expected)"},
    {"{\"a\":truex}", DRV_MALFORMED, "invalid literal (true, false or null expected)"},
    {"{\"a\":NaN}", DRV_MALFORMED, "expected a JSON value"},
    {"{\"a\":Infinity}", DRV_MALFORMED, "expected a JSON value"},
    {"{\"a\":'x'}", DRV_MALFORMED, "expected a JSON value"},
    {"{a:1}", DRV_MALFORMED, "expected a string key in an object"},
    {"{\"a\" 1}", DRV_MALFORMED, "expected ':' after an object key"},
    {"{\"a\":1 \"b\":2}", DRV_MALFORMED, "expected ',' or '}' after an object member"},
    {"{\"a\":[1 2]}", DRV_MALFORMED, "expected ',' or ']' after an array element"},
    {"{\"a\":[1}", DRV_MALFORMED, "expected ',' or ']' after an array element"},
    {"{\"a\":\"x", DRV_MALFORMED, "unexpected end of JSON inside a string"},
    {"{\"a\":\"x\\", DRV_MALFORMED, "unexpected end of JSON inside a string"},
    {"{\"a\":\"\x01\"}", DRV_MALFORMED, "control character in a string (it must be escaped)"},
    {"{\"a\":\"\t\"}", DRV_MALFORMED, "control character in a string (it must be escaped)"},
    {"{\"a\":\"\\q\"}", DRV_MALFORMED, "invalid escape in a string"},
    {"{\"a\":\"\\u12G4\"}", DRV_MALFORMED, "invalid \\u escape in a string (4 hex digits needed)"},
    {"{\"a\":\"\\udc00\"}", DRV_MALFORMED, "invalid \\u escape in a string (lone low surrogate)"},
    {"{\"a\":\"\\ud800\"}", DRV_MALFORMED,
     "invalid \\u escape in a string (unpaired high surrogate)"},
    {"{\"a\":\"\\ud800\\u0041\"}", DRV_MALFORMED,
     "invalid \\u escape in a string (unpaired high surrogate)"},
    {"{\"a\":\"\xFF\"}", DRV_MALFORMED, "invalid UTF-8 in a string"},
    {"{\"a\":\"\xC0\xAF\"}", DRV_MALFORMED, "invalid UTF-8 in a string"},
    {"{\"a\":\"\xE0\x80\xAF\"}", DRV_MALFORMED, "invalid UTF-8 in a string"},
    {"{\"a\":\"\xED\xA0\x80\"}", DRV_MALFORMED, "invalid UTF-8 in a string"},
    {"{\"a\":\"\xF4\x90\x80\x80\"}", DRV_MALFORMED, "invalid UTF-8 in a string"},
    {"{\"a\":\"\xE2\x82\"}", DRV_MALFORMED, "invalid UTF-8 in a string"},
    {"{\"a\":\"\x80\"}", DRV_MALFORMED, "invalid UTF-8 in a string"},
    {"{\"\xFF\":1}", DRV_MALFORMED, "invalid UTF-8 in a string"},
    /* Duplicates. */
    {"{\"a\":1,\"a\":2}", DRV_MALFORMED, "duplicate key"},
    {"{\"a\":null,\"a\":1}", DRV_MALFORMED, "duplicate key"},
    {"{\"a\":{\"x\":1},\"a\":{\"y\":2}}", DRV_MALFORMED, "duplicate key"},
    {"{\"a\":{\"b\":1,\"b\":2}}", DRV_MALFORMED, "duplicate key"},
    {"{\"a\":1,\"\\u0061\":2}", DRV_MALFORMED, "duplicate key"},
    {"{\"a.b\":1,\"a\":{\"b\":2}}", DRV_MALFORMED, "duplicate key"},
    {"{\"a\":[1],\"a.0\":2}", DRV_MALFORMED, "duplicate key"},
    {"{\"ts\":1,\"ts\":2,\"values\":{}}", DRV_MALFORMED, "duplicate key"},
    {"{\"ts\":1,\"values\":{},\"values\":{}}", DRV_MALFORMED, "duplicate key"},
    {"{\"ts\":1,\"values\":{\"a\":1,\"a\":1}}", DRV_MALFORMED, "duplicate key"},
    /* Keys. */
    {"{\"\":1}", DRV_MALFORMED, "empty key"},
    {"{\"a\":{\"\":1}}", DRV_MALFORMED, "empty key"},
    {"{\"a\\u0000b\":1}", DRV_MALFORMED, "control character in a key"},
    {"{\"a\\nb\":1}", DRV_MALFORMED, "control character in a key"},
    {"{\"a\\u0085\":1}", DRV_MALFORMED, "control character in a key"},
    {"{\"a\\u007f\":1}", DRV_MALFORMED, "control character in a key"},
    {"{\"a\x7f\":1}", DRV_MALFORMED, "control character in a key"},
    /* Structure. */
    {"{\"a\":[{\"b\":1}]}", DRV_MALFORMED,
     "arrays of objects are only allowed as a {ts, values} batch"},
    {"{\"a\":[[1]]}", DRV_MALFORMED, "arrays inside arrays are not supported"},
    {"{\"a\":1e400}", DRV_MALFORMED, "number out of range"},
    {"{\"a\":-1e400}", DRV_MALFORMED, "number out of range"},
    {"{\"a\":[1e999]}", DRV_MALFORMED, "number out of range"},
    /* The {ts, values} form. */
    {"{\"ts\":1767225500000,\"temp\":1}", DRV_MALFORMED,
     "\"ts\" and \"values\" cannot be mixed with other keys: send {\"ts\": ..., \"values\": "
     "{...}}"},
    {"{\"temp\":1,\"ts\":1767225500000}", DRV_MALFORMED,
     "\"ts\" and \"values\" cannot be mixed with other keys: send {\"ts\": ..., \"values\": "
     "{...}}"},
    {"{\"temp\":1,\"values\":{}}", DRV_MALFORMED,
     "\"ts\" and \"values\" cannot be mixed with other keys: send {\"ts\": ..., \"values\": "
     "{...}}"},
    {"{\"ts\":1767225500000}", DRV_MALFORMED, "\"values\" missing next to \"ts\""},
    {"{\"values\":{\"a\":1}}", DRV_MALFORMED, "\"ts\" missing next to \"values\""},
    {"{\"ts\":1,\"values\":5}", DRV_MALFORMED, "\"values\" must be an object"},
    {"{\"ts\":1,\"values\":[1]}", DRV_MALFORMED, "\"values\" must be an object"},
    {"{\"ts\":1.5,\"values\":{}}", DRV_MALFORMED,
     "\"ts\" must be whole milliseconds since 1970 (or an ISO-8601 string)"},
    {"{\"ts\":1e12,\"values\":{}}", DRV_MALFORMED,
     "\"ts\" must be whole milliseconds since 1970 (or an ISO-8601 string)"},
    {"{\"ts\":true,\"values\":{}}", DRV_MALFORMED,
     "\"ts\" must be milliseconds since 1970 or an ISO-8601 string"},
    {"{\"ts\":null,\"values\":{}}", DRV_MALFORMED,
     "\"ts\" must be milliseconds since 1970 or an ISO-8601 string"},
    {"{\"ts\":-1,\"values\":{}}", DRV_MALFORMED, "timestamp before 1970"},
    {"{\"ts\":99999999999999999999,\"values\":{}}", DRV_MALFORMED, "timestamp out of range"},
    {"{\"ts\":1767225660001,\"values\":{}}", DRV_MALFORMED, "timestamp in the future"},
    {"{\"ts\":9223372036854775807,\"values\":{}}", DRV_MALFORMED, "timestamp in the future"},
    {"{\"ts\":\"1969-12-31T23:59:59Z\",\"values\":{}}", DRV_MALFORMED, "timestamp before 1970"},
    {"{\"ts\":\"2026-13-01T00:00:00Z\",\"values\":{}}", DRV_MALFORMED,
     "\"ts\" string is not an ISO-8601 time like 2026-01-01T00:00:00.123Z"},
    {"{\"ts\":\"2026-02-29T00:00:00Z\",\"values\":{}}", DRV_MALFORMED,
     "\"ts\" string is not an ISO-8601 time like 2026-01-01T00:00:00.123Z"},
    {"{\"ts\":\"2025-12-31 00:00:00Z\",\"values\":{}}", DRV_MALFORMED,
     "\"ts\" string is not an ISO-8601 time like 2026-01-01T00:00:00.123Z"},
    {"{\"ts\":\"2025-12-31T00:00:00\",\"values\":{}}", DRV_MALFORMED,
     "\"ts\" string is not an ISO-8601 time like 2026-01-01T00:00:00.123Z"},
    {"{\"ts\":\"2025-12-31T24:00:00Z\",\"values\":{}}", DRV_MALFORMED,
     "\"ts\" string is not an ISO-8601 time like 2026-01-01T00:00:00.123Z"},
    {"{\"ts\":\"2025-12-31T00:00:00.Z\",\"values\":{}}", DRV_MALFORMED,
     "\"ts\" string is not an ISO-8601 time like 2026-01-01T00:00:00.123Z"},
    {"{\"ts\":\"2025-12-31T00:00:00+0100\",\"values\":{}}", DRV_MALFORMED,
     "\"ts\" string is not an ISO-8601 time like 2026-01-01T00:00:00.123Z"},
    {"{\"ts\":\"2025-12-31T00:00:00Zjunk\",\"values\":{}}", DRV_MALFORMED,
     "\"ts\" string is not an ISO-8601 time like 2026-01-01T00:00:00.123Z"},
    {"{\"ts\":\"2026\",\"values\":{}}", DRV_MALFORMED,
     "\"ts\" string is not an ISO-8601 time like 2026-01-01T00:00:00.123Z"},
    /* Batches. */
    {"[{\"ts\":1,\"values\":{},\"x\":1}]", DRV_MALFORMED,
     "a batch element may only have the keys \"ts\" and \"values\""},
    {"[{}]", DRV_MALFORMED, "\"ts\" missing next to \"values\""},
    {"[{\"ts\":1}]", DRV_MALFORMED, "\"values\" missing next to \"ts\""},
    {"[1]", DRV_MALFORMED,
     "a JSON array must be a batch of {\"ts\": ..., \"values\": {...}} objects"},
    {"[{\"ts\":1,\"values\":{\"a\":1}},[]]", DRV_MALFORMED,
     "a JSON array must be a batch of {\"ts\": ..., \"values\": {...}} objects"},
    {"[{\"ts\":1,\"values\":{\"a\":1}}", DRV_MALFORMED, "unexpected end of JSON"},
};

static void test_json_tables(void)
{
    TABLE(&drv_decoder_json, json_ok, NULL);
    TABLE(&drv_decoder_json, json_err, NULL);
}

/* The RFC 8428 §5 examples (JSON as printed there) and what they decode to. */
static const dcase senml_rfc[] = {
    /* §5.1.1 */
    {"[\n  {\"n\":\"urn:dev:ow:10e2073a01080063\",\"u\":\"Cel\",\"v\":23.1}\n]", DRV_OK,
     "urn:dev:ow:10e2073a01080063=d:23.1"},
    /* §5.1.2 */
    {"[\n  {\"bn\":\"urn:dev:ow:10e2073a01080063:\",\"n\":\"voltage\",\"u\":\"V\",\"v\":120.1},\n"
     "  {\"n\":\"current\",\"u\":\"A\",\"v\":1.2}\n]",
     DRV_OK,
     "urn:dev:ow:10e2073a01080063:voltage=d:120.1|urn:dev:ow:10e2073a01080063:current=d:1.2"},
    /* §5.1.3 */
    {"[\n  {\"bn\":\"urn:dev:ow:10e2073a0108006:\",\"bt\":1.276020076001e+09,\n"
     "   \"bu\":\"A\",\"bver\":5,\n   \"n\":\"voltage\",\"u\":\"V\",\"v\":120.1},\n"
     "  {\"n\":\"current\",\"t\":-5,\"v\":1.2},\n  {\"n\":\"current\",\"t\":-4,\"v\":1.3},\n"
     "  {\"n\":\"current\",\"t\":-3,\"v\":1.4},\n  {\"n\":\"current\",\"t\":-2,\"v\":1.5},\n"
     "  {\"n\":\"current\",\"t\":-1,\"v\":1.6},\n  {\"n\":\"current\",\"v\":1.7}\n]",
     DRV_OK,
     "urn:dev:ow:10e2073a0108006:voltage=d:120.1@1276020076001|"
     "urn:dev:ow:10e2073a0108006:current=d:1.2@1276020071001|"
     "urn:dev:ow:10e2073a0108006:current=d:1.3@1276020072001|"
     "urn:dev:ow:10e2073a0108006:current=d:1.4@1276020073001|"
     "urn:dev:ow:10e2073a0108006:current=d:1.5@1276020074001|"
     "urn:dev:ow:10e2073a0108006:current=d:1.6@1276020075001|"
     "urn:dev:ow:10e2073a0108006:current=d:1.7@1276020076001"},
    /* §5.1.5 (multiple data types) */
    {"[\n  {\"bn\":\"urn:dev:ow:10e2073a01080063:\",\"n\":\"temp\",\"u\":\"Cel\",\"v\":23.1},\n"
     "  {\"n\":\"label\",\"vs\":\"Machine Room\"},\n  {\"n\":\"open\",\"vb\":false},\n"
     "  {\"n\":\"nfc-reader\",\"vd\":\"aGkgCg\"}\n]",
     DRV_OK,
     "urn:dev:ow:10e2073a01080063:temp=d:23.1|urn:dev:ow:10e2073a01080063:label=s:Machine "
     "Room|urn:dev:ow:10e2073a01080063:open=b:false|urn:dev:ow:10e2073a01080063:nfc-reader=s:"
     "aGkgCg"},
    /* §5.1.6 (collection of resources) */
    {"[\n  {\"bn\":\"2001:db8::2/\",\"bt\":1.320078429e+09,\n"
     "   \"n\":\"temperature\",\"u\":\"Cel\",\"v\":25.2},\n"
     "  {\"n\":\"humidity\",\"u\":\"%RH\",\"v\":30},\n"
     "  {\"bn\":\"2001:db8::1/\",\"n\":\"temperature\",\"u\":\"Cel\",\"v\":12.3},\n"
     "  {\"n\":\"humidity\",\"u\":\"%RH\",\"v\":67}\n]",
     DRV_OK,
     "2001:db8::2/temperature=d:25.2@1320078429000|2001:db8::2/humidity=i:30@1320078429000|"
     "2001:db8::1/temperature=d:12.3@1320078429000|2001:db8::1/humidity=i:67@1320078429000"},
    /* §5.1.7 (setting an actuator: the first record carries only bn) */
    {"[\n  {\"bn\":\"urn:dev:ow:10e2073a01080063:\"},\n  "
     "{\"n\":\"temp\",\"u\":\"Cel\",\"v\":23.1},\n"
     "  {\"n\":\"heat\",\"u\":\"/\",\"v\":1},\n  {\"n\":\"fan\",\"u\":\"/\",\"v\":0}\n]",
     DRV_OK,
     "urn:dev:ow:10e2073a01080063:temp=d:23.1|urn:dev:ow:10e2073a01080063:heat=i:1|"
     "urn:dev:ow:10e2073a01080063:fan=i:0"},
    /* §5.2 (lights on, then synchronized lights off) */
    {"[\n  {\"bt\":1.320078429e+09,\"bu\":\"/\",\"n\":\"2001:db8::3\",\"v\":1},\n"
     "  {\"n\":\"2001:db8::4\",\"v\":1}\n]",
     DRV_OK, "2001:db8::3=i:1@1320078429000|2001:db8::4=i:1@1320078429000"},
    {"[\n  {\"bt\":1.320078429e+09,\"bu\":\"/\",\"n\":\"2001:db8::3\",\"v\":0.5},\n"
     "  {\"n\":\"2001:db8::4\",\"v\":0.5},\n  {\"n\":\"2001:db8::3\",\"t\":0.1,\"v\":0},\n"
     "  {\"n\":\"2001:db8::4\",\"t\":0.1,\"v\":0}\n]",
     DRV_OK,
     "2001:db8::3=d:0.5@1320078429000|2001:db8::4=d:0.5@1320078429000|"
     "2001:db8::3=i:0@1320078429100|2001:db8::4=i:0@1320078429100"},
};

/* §5.1.4 (multiple measurements) and its resolved form must decode alike. */
static const char senml_multi[] =
    "[\n  {\"bn\":\"urn:dev:ow:10e2073a01080063\",\"bt\":1.320067464e+09,\n"
    "   \"bu\":\"%RH\",\"v\":20},\n  {\"u\":\"lon\",\"v\":24.30621},\n"
    "  {\"u\":\"lat\",\"v\":60.07965},\n  {\"t\":60,\"v\":20.3},\n"
    "  {\"u\":\"lon\",\"t\":60,\"v\":24.30622},\n  {\"u\":\"lat\",\"t\":60,\"v\":60.07965},\n"
    "  {\"t\":120,\"v\":20.7},\n  {\"u\":\"lon\",\"t\":120,\"v\":24.30623},\n"
    "  {\"u\":\"lat\",\"t\":120,\"v\":60.07966},\n  {\"u\":\"%EL\",\"t\":150,\"v\":98},\n"
    "  {\"t\":180,\"v\":21.2},\n  {\"u\":\"lon\",\"t\":180,\"v\":24.30628},\n"
    "  {\"u\":\"lat\",\"t\":180,\"v\":60.07967}\n]";
static const char senml_resolved[] =
    "[\n  {\"n\":\"urn:dev:ow:10e2073a01080063\",\"u\":\"%RH\",\"t\":1.320067464e+09,\n"
    "   \"v\":20},\n"
    "  {\"n\":\"urn:dev:ow:10e2073a01080063\",\"u\":\"lon\",\"t\":1.320067464e+09,\n"
    "   \"v\":24.30621},\n"
    "  {\"n\":\"urn:dev:ow:10e2073a01080063\",\"u\":\"lat\",\"t\":1.320067464e+09,\n"
    "   \"v\":60.07965},\n"
    "  {\"n\":\"urn:dev:ow:10e2073a01080063\",\"u\":\"%RH\",\"t\":1.320067524e+09,\n"
    "   \"v\":20.3},\n"
    "  {\"n\":\"urn:dev:ow:10e2073a01080063\",\"u\":\"lon\",\"t\":1.320067524e+09,\n"
    "   \"v\":24.30622},\n"
    "  {\"n\":\"urn:dev:ow:10e2073a01080063\",\"u\":\"lat\",\"t\":1.320067524e+09,\n"
    "   \"v\":60.07965},\n"
    "  {\"n\":\"urn:dev:ow:10e2073a01080063\",\"u\":\"%RH\",\"t\":1.320067584e+09,\n"
    "   \"v\":20.7},\n"
    "  {\"n\":\"urn:dev:ow:10e2073a01080063\",\"u\":\"lon\",\"t\":1.320067584e+09,\n"
    "   \"v\":24.30623},\n"
    "  {\"n\":\"urn:dev:ow:10e2073a01080063\",\"u\":\"lat\",\"t\":1.320067584e+09,\n"
    "   \"v\":60.07966},\n"
    "  {\"n\":\"urn:dev:ow:10e2073a01080063\",\"u\":\"%EL\",\"t\":1.320067614e+09,\n"
    "   \"v\":98},\n"
    "  {\"n\":\"urn:dev:ow:10e2073a01080063\",\"u\":\"%RH\",\"t\":1.320067644e+09,\n"
    "   \"v\":21.2},\n"
    "  {\"n\":\"urn:dev:ow:10e2073a01080063\",\"u\":\"lon\",\"t\":1.320067644e+09,\n"
    "   \"v\":24.30628},\n"
    "  {\"n\":\"urn:dev:ow:10e2073a01080063\",\"u\":\"lat\",\"t\":1.320067644e+09,\n"
    "   \"v\":60.07967}\n]";

static const dcase senml_more[] = {
    {"[]", DRV_OK, ""},
    {"[{\"n\":\"a\",\"v\":1}]", DRV_OK, "a=i:1"},
    {"[{\"n\":\"a\",\"v\":1,\"t\":-5}]", DRV_OK, "a=i:1@1767225595000"},
    {"[{\"n\":\"a\",\"v\":1,\"t\":0.0625}]", DRV_OK, "a=i:1@1767225600063"},
    {"[{\"bt\":-10,\"n\":\"a\",\"v\":1,\"t\":5}]", DRV_OK, "a=i:1@1767225595000"},
    {"[{\"n\":\"a\",\"v\":1,\"t\":268435456}]", DRV_OK, "a=i:1@268435456000"},
    {"[{\"n\":\"a\",\"v\":1,\"t\":-268435455}]", DRV_OK, "a=i:1@1498790145000"},
    {"[{\"bv\":10,\"n\":\"a\",\"v\":1},{\"n\":\"b\",\"v\":2}]", DRV_OK, "a=i:11|b=i:12"},
    {"[{\"bv\":0.5,\"n\":\"a\",\"v\":1}]", DRV_OK, "a=d:1.5"},
    {"[{\"bv\":1,\"n\":\"a\",\"v\":1.25}]", DRV_OK, "a=d:2.25"},
    {"[{\"bv\":9223372036854775807,\"n\":\"a\",\"v\":1}]", DRV_OK, "a=d:9.223372036854776e18"},
    {"[{\"n\":\"a\",\"v\":9223372036854775808}]", DRV_OK, "a=d:9.223372036854776e18"},
    {"[{\"n\":\"a\",\"v\":-0}]", DRV_OK, "a=i:0"},
    {"[{\"bv\":3,\"n\":\"a\",\"vs\":\"x\"}]", DRV_OK, "a=s:x"},
    {"[{\"bs\":1,\"n\":\"a\",\"v\":1,\"s\":5,\"ut\":10,\"bu\":\"V\",\"u\":\"V\"}]", DRV_OK,
     "a=i:1"},
    {"[{\"n\":\"a\",\"v\":1,\"x\":{\"y\":[1,2,{\"z_\":1}]},\"w\":null}]", DRV_OK, "a=i:1"},
    {"[{\"bver\":10,\"n\":\"a\",\"vb\":true}]", DRV_OK, "a=b:true"},
    {"[{\"bn\":\"d\\u00e9v:\",\"n\":\"t\",\"vs\":\"\\\"q\\\"\"}]", DRV_OK, "dév:t=s:\"q\""},
    {"[{\"bn\":\"dev:\"},{\"n\":\"\\u0074\",\"v\":1},{\"bn\":\"\",\"n\":\"solo\",\"v\":2}]", DRV_OK,
     "dev:t=i:1|solo=i:2"},
    {"[{\"bn\":\"only\",\"v\":1}]", DRV_OK, "only=i:1"},
    {"[{\"n\":\"a\",\"v\":1,\"bn\":\"pre/\"}]", DRV_OK, "pre/a=i:1"},
    {"[{\"n\":\"/3303/0/5700\",\"v\":21.5}]", DRV_OK, "/3303/0/5700=d:21.5"},
    {"[{\"n\":\"a\",\"v\":1,\"t\":60}]", DRV_OK, "a=i:1@1767225660000"},
};

static const dcase senml_err[] = {
    {"{}", DRV_MALFORMED, "expected a SenML array of records"},
    {"", DRV_MALFORMED, "unexpected end of JSON"},
    {"[1]", DRV_MALFORMED, "a SenML record must be a JSON object"},
    {"[{\"n\":\"a\"}]", DRV_MALFORMED, "SenML record has no value (v, vb, vs or vd)"},
    {"[{\"n\":\"a\",\"s\":1}]", DRV_MALFORMED, "SenML record has no value (v, vb, vs or vd)"},
    {"[{\"bn\":\"a\",\"t\":1}]", DRV_MALFORMED, "SenML record has no value (v, vb, vs or vd)"},
    {"[{\"n\":\"a\",\"v\":1,\"vs\":\"x\"}]", DRV_MALFORMED,
     "SenML record has more than one value (v, vb, vs, vd)"},
    {"[{\"v\":1}]", DRV_MALFORMED, "SenML record has an empty name (bn + n)"},
    {"[{\"n\":\"\",\"bn\":\"\",\"v\":1}]", DRV_MALFORMED,
     "SenML record has an empty name (bn + n)"},
    {"[{\"n\":\"a\",\"v\":\"1\"}]", DRV_MALFORMED, "SenML \"v\" must be a number"},
    {"[{\"n\":1,\"v\":1}]", DRV_MALFORMED, "SenML \"n\" must be a string"},
    {"[{\"n\":\"a\",\"vb\":1}]", DRV_MALFORMED, "SenML \"vb\" must be true or false"},
    {"[{\"n\":\"a\",\"v\":1,\"t\":\"x\"}]", DRV_MALFORMED, "SenML \"t\" must be a number"},
    {"[{\"bn\":null,\"n\":\"a\",\"v\":1}]", DRV_MALFORMED, "SenML \"bn\" must be a string"},
    {"[{\"n\":\"a\",\"v\":1,\"v\":2}]", DRV_MALFORMED, "duplicate key"},
    {"[{\"n\":\"a\",\"v\":1,\"foo_\":1}]", DRV_MALFORMED,
     "SenML record has a must-understand field (name ending in '_') this decoder does not know"},
    {"[{\"n\":\"a\",\"v\":1,\"foo\\u005f\":1}]", DRV_MALFORMED,
     "SenML record has a must-understand field (name ending in '_') this decoder does not know"},
    {"[{\"bver\":11,\"n\":\"a\",\"v\":1}]", DRV_MALFORMED, "SenML version (bver) newer than 10"},
    {"[{\"n\":\"a\",\"v\":1e400}]", DRV_MALFORMED, "number out of range"},
    {"[{\"bv\":1e308,\"n\":\"a\",\"v\":1e308}]", DRV_MALFORMED, "number out of range"},
    {"[{\"n\":\"a\",\"v\":1,\"t\":1e300}]", DRV_MALFORMED, "SenML time out of range"},
    {"[{\"n\":\"a\",\"v\":1,\"t\":-1e10}]", DRV_MALFORMED, "timestamp before 1970"},
    {"[{\"n\":\"a\",\"v\":1,\"t\":1e10}]", DRV_MALFORMED, "timestamp in the future"},
    {"[{\"n\":\"a\",\"v\":1,\"t\":60.001}]", DRV_MALFORMED, "timestamp in the future"},
    {"[{\"n\":\"a\\u0001\",\"v\":1}]", DRV_MALFORMED, "control character in a key"},
    {"[{\"n\":\"a\",\"v\":1},]", DRV_MALFORMED, "trailing comma in JSON"},
    {"[{\"n\":\"a\",\"v\":1}] 1", DRV_MALFORMED, "unexpected data after the JSON value"},
};

static void test_senml_tables(void)
{
    TABLE(&drv_decoder_senml, senml_rfc, NULL);
    TABLE(&drv_decoder_senml, senml_more, NULL);
    TABLE(&drv_decoder_senml, senml_err, NULL);

    run r = decode(&drv_decoder_senml, senml_multi, NULL);
    CHECK(r.err == DRV_OK && r.out.n == 13);
    static char first[8192];
    snprintf(first, sizeof(first), "%s", render(&r.out));
    CHECK(strstr(first, "urn:dev:ow:10e2073a01080063=i:20@1320067464000|") == first);
    CHECK(strstr(first, "|urn:dev:ow:10e2073a01080063=i:98@1320067614000|") != NULL);
    r = decode(&drv_decoder_senml, senml_resolved, NULL);
    CHECK(r.err == DRV_OK && r.out.n == 13);
    CHECK(strcmp(render(&r.out), first) == 0);
}

static const dcase numeric_cases[] = {
    {"21.5", DRV_OK, "temp=d:21.5"},
    {" 42\n", DRV_OK, "temp=i:42"},
    {"\t-7\r\n", DRV_OK, "temp=i:-7"},
    {"+7", DRV_OK, "temp=i:7"},
    {"007", DRV_OK, "temp=i:7"},
    {"-0", DRV_OK, "temp=i:0"},
    {"-0.0", DRV_OK, "temp=d:-0"},
    {"true", DRV_OK, "temp=b:true"},
    {" false ", DRV_OK, "temp=b:false"},
    {"9223372036854775807", DRV_OK, "temp=i:9223372036854775807"},
    {"9223372036854775808", DRV_OK, "temp=d:9.223372036854776e18"},
    {"1e3", DRV_OK, "temp=d:1000"},
    {"+1.5e-3", DRV_OK, "temp=d:0.0015"},
    {"", DRV_MALFORMED, "payload is not a number"},
    {"   ", DRV_MALFORMED, "payload is not a number"},
    {"abc", DRV_MALFORMED, "payload is not a number"},
    {"nan", DRV_MALFORMED, "payload is not a number"},
    {"inf", DRV_MALFORMED, "payload is not a number"},
    {"1,5", DRV_MALFORMED, "payload is not a number"},
    {"0x10", DRV_MALFORMED, "payload is not a number"},
    {"TRUE", DRV_MALFORMED, "payload is not a number"},
    {"1.", DRV_MALFORMED, "payload is not a number"},
    {".5", DRV_MALFORMED, "payload is not a number"},
    {"1 2", DRV_MALFORMED, "payload is not a number"},
    {"\"1\"", DRV_MALFORMED, "payload is not a number"},
    {"{\"a\":1}", DRV_MALFORMED, "payload is not a number"},
    {"1e400", DRV_MALFORMED, "number out of range"},
    {"-1e400", DRV_MALFORMED, "number out of range"},
};

static void test_numeric(void)
{
    TABLE(&drv_decoder_numeric, numeric_cases, "temp");
    run r = decode(&drv_decoder_numeric, "1", "");
    CHECK(r.err == DRV_MALFORMED &&
          strcmp(r.why, "empty key (the topic's last level names the value)") == 0);
    r = decode(&drv_decoder_numeric, "1", NULL);
    CHECK(r.err == DRV_MALFORMED);
    r = decode(&drv_decoder_numeric, "1", "a\x01");
    CHECK(r.err == DRV_MALFORMED && strcmp(r.why, "control character in a key") == 0);
    char key[DRV_SAMPLE_MAX_KEY + 2];
    memset(key, 'k', sizeof(key));
    key[DRV_SAMPLE_MAX_KEY] = '\0';
    r = decode(&drv_decoder_numeric, "1", key);
    CHECK(r.err == DRV_OK && r.out.n == 1 && r.out.samples[0].key.p == key &&
          r.out.arena_used == 0);
    key[DRV_SAMPLE_MAX_KEY] = 'k';
    key[DRV_SAMPLE_MAX_KEY + 1] = '\0';
    r = decode(&drv_decoder_numeric, "1", key);
    CHECK(r.err == DRV_LIMIT && strcmp(r.why, "key longer than 128 bytes") == 0);
    /* No payload at all. */
    r = decode_n(&drv_decoder_numeric, NULL, 0, "temp", 4, 0);
    CHECK(r.err == DRV_MALFORMED && strcmp(r.why, "payload is not a number") == 0);
    /* A cap of 0 samples. */
    r = decode_n(&drv_decoder_numeric, "1", 1, "temp", 0, 0);
    CHECK(r.err == DRV_LIMIT && strcmp(r.why, "too many samples in one message") == 0);
}

static void test_find(void)
{
    CHECK(drv_decoder_find("json") == &drv_decoder_json);
    CHECK(drv_decoder_find("senml") == &drv_decoder_senml);
    CHECK(drv_decoder_find("numeric") == &drv_decoder_numeric);
    CHECK(drv_decoder_find("JSON") == NULL);
    CHECK(drv_decoder_find("xml") == NULL);
    CHECK(drv_decoder_find("") == NULL);
    CHECK(drv_decoder_find(NULL) == NULL);
    CHECK(strcmp(drv_decoder_json.name, "json") == 0);
}

/* A heap buffer for generated payloads. */
typedef struct text {
    char *p;
    size_t n, cap;
} text;

static void put(text *t, const char *s)
{
    size_t k = strlen(s);
    if (t->n + k + 1 > t->cap) {
        t->cap = (t->n + k + 1) * 2;
        t->p = realloc(t->p, t->cap);
    }
    memcpy(t->p + t->n, s, k + 1);
    t->n += k;
}

static void test_limits(void)
{
    text t = {0};
    char item[64];
    /* 1024 samples fit, 1025 do not: members, array elements, SenML records. */
    for (int count = 1024; count <= 1025; count++) {
        drv_err want = count == 1024 ? DRV_OK : DRV_LIMIT;
        t.n = 0;
        put(&t, "{");
        for (int i = 0; i < count; i++) {
            snprintf(item, sizeof(item), "%s\"k%d\":%d", i ? "," : "", i, i);
            put(&t, item);
        }
        put(&t, "}");
        run r = decode(&drv_decoder_json, t.p, NULL);
        CHECK(r.err == want && (want != DRV_OK || r.out.n == 1024));
        if (want != DRV_OK)
            CHECK(strcmp(r.why, "too many samples in one message") == 0);
        CHECK(want != DRV_OK || r.out.arena_used == 0); /* all keys zero-copy */

        t.n = 0;
        put(&t, "{\"a\":[");
        for (int i = 0; i < count; i++)
            put(&t, i ? ",1" : "1");
        put(&t, "]}");
        r = decode(&drv_decoder_json, t.p, NULL);
        CHECK(r.err == want);
        if (want == DRV_OK)
            CHECK(r.out.samples[1023].key.n == 6 &&
                  memcmp(r.out.samples[1023].key.p, "a.1023", 6) == 0);

        t.n = 0;
        put(&t, "[");
        for (int i = 0; i < count; i++) {
            snprintf(item, sizeof(item), "%s{\"n\":\"k%d\",\"v\":%d}", i ? "," : "", i, i);
            put(&t, item);
        }
        put(&t, "]");
        r = decode(&drv_decoder_senml, t.p, NULL);
        CHECK(r.err == want);

        t.n = 0;
        put(&t, "[");
        for (int i = 0; i < count; i++) {
            snprintf(item, sizeof(item), "%s{\"ts\":%d,\"values\":{\"k\":1}}", i ? "," : "", i);
            put(&t, item);
        }
        put(&t, "]");
        r = decode(&drv_decoder_json, t.p, NULL);
        CHECK(r.err == want);
    }
    /* A caller's cap below 1024 is the limit. */
    run r = decode_n(&drv_decoder_json, "{\"a\":1,\"b\":2,\"c\":3}", 19, NULL, 2, ARENA);
    CHECK(r.err == DRV_LIMIT && r.out.n == 0);
    r = decode_n(&drv_decoder_json, "{\"a\":1,\"b\":2}", 13, NULL, 2, ARENA);
    CHECK(r.err == DRV_OK && r.out.n == 2);

    /* Keys: 128 bytes fit, 129 do not (top level, nested, escaped, array index, SenML). */
    char k128[DRV_SAMPLE_MAX_KEY + 2];
    memset(k128, 'k', sizeof(k128));
    k128[128] = '\0';
    t.n = 0;
    put(&t, "{\"");
    put(&t, k128);
    put(&t, "\":1}");
    r = decode(&drv_decoder_json, t.p, NULL);
    CHECK(r.err == DRV_OK && r.out.n == 1 && r.out.samples[0].key.n == 128);
    t.n = 0;
    put(&t, "{\"");
    put(&t, k128);
    put(&t, "k\":1}");
    r = decode(&drv_decoder_json, t.p, NULL);
    CHECK(r.err == DRV_LIMIT && strcmp(r.why, "key longer than 128 bytes") == 0);
    k128[126] = '\0'; /* "a." + 126 = 128 */
    t.n = 0;
    put(&t, "{\"a\":{\"");
    put(&t, k128);
    put(&t, "\":1}}");
    r = decode(&drv_decoder_json, t.p, NULL);
    CHECK(r.err == DRV_OK && r.out.samples[0].key.n == 128);
    t.n = 0;
    put(&t, "{\"a\":{\"");
    put(&t, k128);
    put(&t, "k\":1}}");
    r = decode(&drv_decoder_json, t.p, NULL);
    CHECK(r.err == DRV_LIMIT && strcmp(r.why, "key longer than 128 bytes") == 0);
    t.n = 0; /* an object member whose own key is too long for any child */
    put(&t, "{\"a\":{\"");
    put(&t, k128);
    put(&t, "kk\":{}}}");
    r = decode(&drv_decoder_json, t.p, NULL);
    CHECK(r.err == DRV_LIMIT && strcmp(r.why, "key longer than 128 bytes") == 0);
    t.n = 0; /* "<126 k>.0" is 128; "<126 k>.10" is 129 */
    put(&t, "{\"");
    put(&t, k128);
    put(&t, "\":[0,1,2,3,4,5,6,7,8,9,10]}");
    r = decode(&drv_decoder_json, t.p, NULL);
    CHECK(r.err == DRV_LIMIT && strcmp(r.why, "key longer than 128 bytes") == 0);
    t.n = 0; /* 64 × \u00e9 = 128 bytes unescaped (384 as written) */
    put(&t, "{\"");
    for (int i = 0; i < 64; i++)
        put(&t, "\\u00e9");
    put(&t, "\":1}");
    r = decode(&drv_decoder_json, t.p, NULL);
    CHECK(r.err == DRV_OK && r.out.samples[0].key.n == 128 && r.out.arena_used == 128);
    t.n = 0;
    put(&t, "{\"x");
    for (int i = 0; i < 64; i++)
        put(&t, "\\u00e9");
    put(&t, "\":1}");
    r = decode(&drv_decoder_json, t.p, NULL);
    CHECK(r.err == DRV_LIMIT && strcmp(r.why, "key longer than 128 bytes") == 0);
    k128[126] = 'k';
    k128[64] = '\0';
    t.n = 0;
    put(&t, "[{\"bn\":\"");
    put(&t, k128);
    put(&t, "\",\"n\":\"");
    put(&t, k128);
    put(&t, "\",\"v\":1}]");
    r = decode(&drv_decoder_senml, t.p, NULL);
    CHECK(r.err == DRV_OK && r.out.samples[0].key.n == 128);
    t.n = 0;
    put(&t, "[{\"bn\":\"");
    put(&t, k128);
    put(&t, "\",\"n\":\"k");
    put(&t, k128);
    put(&t, "\",\"v\":1}]");
    r = decode(&drv_decoder_senml, t.p, NULL);
    CHECK(r.err == DRV_LIMIT && strcmp(r.why, "key longer than 128 bytes") == 0);

    /* Strings: 4096 bytes fit, 4097 do not; escaped ones count unescaped. */
    static char s4096[DRV_SAMPLE_MAX_STRING + 2];
    memset(s4096, 's', sizeof(s4096));
    s4096[DRV_SAMPLE_MAX_STRING] = '\0';
    for (int extra = 0; extra <= 1; extra++) {
        t.n = 0;
        put(&t, "{\"s\":\"");
        put(&t, s4096);
        put(&t, extra ? "s\"}" : "\"}");
        r = decode(&drv_decoder_json, t.p, NULL);
        CHECK(extra
                  ? r.err == DRV_LIMIT && strcmp(r.why, "string value longer than 4096 bytes") == 0
                  : r.err == DRV_OK && r.out.samples[0].v.s.n == 4096);
        t.n = 0;
        put(&t, "{\"s\":\"");
        for (int i = 0; i < 2048; i++)
            put(&t, "\\u00e9");
        put(&t, extra ? "s\"}" : "\"}");
        r = decode(&drv_decoder_json, t.p, NULL);
        CHECK(extra
                  ? r.err == DRV_LIMIT && strcmp(r.why, "string value longer than 4096 bytes") == 0
                  : r.err == DRV_OK && r.out.samples[0].v.s.n == 4096);
        t.n = 0;
        put(&t, "[{\"n\":\"s\",\"vs\":\"");
        put(&t, s4096);
        put(&t, extra ? "s\"}]" : "\"}]");
        r = decode(&drv_decoder_senml, t.p, NULL);
        CHECK(extra ? r.err == DRV_LIMIT : r.err == DRV_OK);
    }

    /* The arena: nested keys and escaped strings need it; top-level plain ones do not. */
    r = decode_n(&drv_decoder_json, "{\"a\":1,\"b\":\"x\"}", 15, NULL, 16, 0);
    CHECK(r.err == DRV_OK && r.out.n == 2 && r.out.arena_used == 0);
    r = decode_n(&drv_decoder_json, "{\"a\":{\"b\":1}}", 13, NULL, 16, 0);
    CHECK(r.err == DRV_LIMIT &&
          strcmp(r.why, "decode buffer too small for this message's nested keys and escaped "
                        "strings") == 0);
    r = decode_n(&drv_decoder_json, "{\"a\":{\"b\":1}}", 13, NULL, 16, 3);
    CHECK(r.err == DRV_OK && r.out.arena_used == 3);
    r = decode_n(&drv_decoder_json, "{\"a\":{\"b\":1,\"c\":2}}", 19, NULL, 16, 5);
    CHECK(r.err == DRV_LIMIT && r.out.arena_used <= 5 && r.out.n == 0);
    r = decode_n(&drv_decoder_json, "{\"a\":\"\\u00e9\"}", 14, NULL, 16, 1);
    CHECK(r.err == DRV_LIMIT);
    r = decode_n(&drv_decoder_json, "{\"a\":\"\\u00e9\"}", 14, NULL, 16, 2);
    CHECK(r.err == DRV_OK && r.out.samples[0].v.s.n == 2);
    r = decode_n(&drv_decoder_senml, "[{\"bn\":\"a\",\"n\":\"b\",\"v\":1}]", 27, NULL, 16, 1);
    CHECK(r.err == DRV_LIMIT);
    r = decode_n(&drv_decoder_senml, "[{\"n\":\"b\",\"v\":1}]", 17, NULL, 16, 0);
    CHECK(r.err == DRV_OK && r.out.arena_used == 0);

    /* Nesting: 32 levels are fine, 33 are not (objects and arrays alike). */
    for (int depth = 32; depth <= 33; depth++) {
        t.n = 0;
        for (int i = 0; i < depth - 1; i++)
            put(&t, "{\"a\":");
        put(&t, "{\"a\":1}");
        for (int i = 0; i < depth - 1; i++)
            put(&t, "}");
        r = decode(&drv_decoder_json, t.p, NULL);
        if (depth == 32)
            CHECK(r.err == DRV_OK && r.out.n == 1 && r.out.samples[0].key.n == 63);
        else
            CHECK(r.err == DRV_MALFORMED &&
                  strcmp(r.why, "JSON nested deeper than 32 levels") == 0);
    }
    t.n = 0;
    for (int i = 0; i < 100000; i++)
        put(&t, "[");
    r = decode(&drv_decoder_senml, t.p, NULL);
    CHECK(r.err == DRV_MALFORMED && strcmp(r.why, "a SenML record must be a JSON object") == 0);
    t.n = 0;
    put(&t, "[{\"n\":\"a\",\"v\":1,\"x\":");
    for (int i = 0; i < 40; i++)
        put(&t, "[");
    r = decode(&drv_decoder_senml, t.p, NULL);
    CHECK(r.err == DRV_MALFORMED && strcmp(r.why, "JSON nested deeper than 32 levels") == 0);

    /* The member table: 2048 names (nulls included) fit, 2049 do not. */
    for (int count = 2048; count <= 2049; count++) {
        t.n = 0;
        put(&t, "{");
        for (int i = 0; i < count; i++) {
            snprintf(item, sizeof(item), "%s\"n%d\":null", i ? "," : "", i);
            put(&t, item);
        }
        put(&t, "}");
        r = decode(&drv_decoder_json, t.p, NULL);
        if (count == 2048)
            CHECK(r.err == DRV_OK && r.out.n == 0);
        else
            CHECK(r.err == DRV_LIMIT && strcmp(r.why, "too many keys in one message") == 0);
    }
    /* ... per unit: a batch may hold more in all. */
    t.n = 0;
    put(&t, "[");
    for (int u = 0; u < 3; u++) {
        put(&t, u ? ",{\"ts\":1,\"values\":{" : "{\"ts\":1,\"values\":{");
        for (int i = 0; i < 1500; i++) {
            snprintf(item, sizeof(item), "%s\"n%d\":null", i ? "," : "", i);
            put(&t, item);
        }
        put(&t, "}}");
    }
    put(&t, "]");
    r = decode(&drv_decoder_json, t.p, NULL);
    CHECK(r.err == DRV_OK && r.out.n == 0);
    /* Many colliding names in one object still finish (and find the duplicate). */
    t.n = 0;
    put(&t, "{");
    for (int i = 0; i < 1000; i++) {
        snprintf(item, sizeof(item), "\"x%d\":{\"a\":1},", i);
        put(&t, item);
    }
    put(&t, "\"x999\":2}");
    r = decode(&drv_decoder_json, t.p, NULL);
    CHECK(r.err == DRV_MALFORMED && strcmp(r.why, "duplicate key") == 0);
    free(t.p);
}

/* Keys and strings point into the payload where the format allows it. */
static void test_zero_copy(void)
{
    static const char p1[] =
        "{\"temp\":21.5,\"mode\":\"eco\",\"pos\":{\"lat\":1},\"e\\u00e9\":\"a\\nb\"}";
    run r = decode(&drv_decoder_json, p1, NULL);
    CHECK(r.err == DRV_OK && r.out.n == 4);
    CHECK(r.out.samples[0].key.p == p1 + 2);
    CHECK(r.out.samples[1].key.p == p1 + 14 && r.out.samples[1].v.s.p == p1 + 21);
    CHECK(inside(r.out.samples[2].key, arena, r.out.arena_used));
    CHECK(inside(r.out.samples[3].key, arena, r.out.arena_used) &&
          inside(r.out.samples[3].v.s, arena, r.out.arena_used));
    CHECK(r.out.arena_used == 7 + 3 + 3); /* "pos.lat", "eé", "a\nb" */

    static const char p2[] = "[{\"n\":\"temp\",\"vs\":\"x\"},{\"bn\":\"dev\",\"v\":1}]";
    r = decode(&drv_decoder_senml, p2, NULL);
    CHECK(r.err == DRV_OK && r.out.n == 2 && r.out.arena_used == 0);
    CHECK(r.out.samples[0].key.p == p2 + 7 && r.out.samples[0].v.s.p == p2 + 19);
    CHECK(r.out.samples[1].key.p == p2 + 30);
}

#define SPAN(lit) ((drv_span){(lit), sizeof(lit) - 1})

/* Decoding is deterministic and leaves why NULL on success even when it held garbage. */
static void test_contract(void)
{
    drv_decode_in in = {.payload = {"{\"a\":1}", 7}, .recv_ms = RECV};
    drv_sample s[2];
    drv_decode_out out = {.samples = s, .cap = 2, .n = 7, .arena_used = 3};
    const char *why = "garbage";
    CHECK(drv_decoder_json.decode(&in, &out, &why) == DRV_OK && why == NULL && out.n == 1 &&
          out.arena_used == 0);
    /* max_future_ms 0: exactly now is fine, 1 ms later is not. */
    in.payload = SPAN("{\"ts\":1767225600000,\"values\":{\"a\":1}}");
    CHECK(drv_decoder_json.decode(&in, &out, &why) == DRV_OK && out.n == 1);
    in.payload = SPAN("{\"ts\":1767225600001,\"values\":{\"a\":1}}");
    CHECK(drv_decoder_json.decode(&in, &out, &why) == DRV_MALFORMED && out.n == 0 &&
          strcmp(why, "timestamp in the future") == 0);
    /* A negative max_future_ms counts as 0. */
    in.max_future_ms = -5;
    in.payload = SPAN("{\"ts\":1767225600000,\"values\":{\"a\":1}}");
    CHECK(drv_decoder_json.decode(&in, &out, &why) == DRV_OK);
    /* A huge skew does not overflow. */
    in.max_future_ms = INT64_MAX;
    in.payload = SPAN("{\"ts\":9223372036854775807,\"values\":{\"a\":1}}");
    CHECK(drv_decoder_json.decode(&in, &out, &why) == DRV_OK);
    /* No payload buffer at all. */
    in.payload = (drv_span){NULL, 0};
    CHECK(drv_decoder_json.decode(&in, &out, &why) == DRV_MALFORMED);
    CHECK(drv_decoder_senml.decode(&in, &out, &why) == DRV_MALFORMED);
}

/* The scanner alone: tokens, skip, unescape. */
static void test_scanner(void)
{
    static const char doc[] =
        " {\"a\" : [1, -2.5e3, \"s\\u00e9\", true, false, null, {}], \"b\":{}} ";
    drv_json_scan s;
    drv_json_token t;
    drv_json_init(&s, doc, sizeof(doc) - 1);
    static const drv_json_type want[] = {
        DRV_JSON_OBJECT, DRV_JSON_KEY,    DRV_JSON_ARRAY,      DRV_JSON_NUMBER,
        DRV_JSON_NUMBER, DRV_JSON_STRING, DRV_JSON_TRUE,       DRV_JSON_FALSE,
        DRV_JSON_NULL,   DRV_JSON_OBJECT, DRV_JSON_OBJECT_END, DRV_JSON_ARRAY_END,
        DRV_JSON_KEY,    DRV_JSON_OBJECT, DRV_JSON_OBJECT_END, DRV_JSON_OBJECT_END,
        DRV_JSON_END,    DRV_JSON_END,
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        drv_json_type got = drv_json_next(&s, &t);
        CHECK_CASE(got == want[i] && t.type == got, doc);
        if (i == 3)
            CHECK(t.integer && drv_span_eq(t.text, "1"));
        if (i == 4)
            CHECK(!t.integer && drv_span_eq(t.text, "-2.5e3"));
        if (i == 5) {
            char buf[8];
            CHECK(t.escaped && drv_span_eq(t.text, "s\\u00e9"));
            CHECK(drv_json_unescaped_len(t.text) == 3);
            CHECK(drv_json_unescape(t.text, buf, sizeof(buf)) == 3 &&
                  memcmp(buf, "s\xC3\xA9", 3) == 0);
            CHECK(drv_json_unescape(t.text, buf, 2) == SIZE_MAX);
        }
    }
    /* skip: from a container's start to past its end. */
    drv_json_init(&s, doc, sizeof(doc) - 1);
    drv_json_next(&s, &t);
    drv_json_next(&s, &t);
    drv_json_next(&s, &t);
    CHECK(t.type == DRV_JSON_ARRAY && drv_json_skip(&s, &t));
    CHECK(drv_json_next(&s, &t) == DRV_JSON_KEY && drv_span_eq(t.text, "b"));
    /* Errors stick. */
    drv_json_init(&s, "[1,,2]", 6);
    drv_json_next(&s, &t);
    drv_json_next(&s, &t);
    CHECK(drv_json_next(&s, &t) == DRV_JSON_ERROR && s.why != NULL);
    CHECK(drv_json_next(&s, &t) == DRV_JSON_ERROR);
    /* Every escape. */
    drv_span esc = {"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041\\ud834\\udd1e", 34};
    char buf[32];
    size_t n = drv_json_unescape(esc, buf, sizeof(buf));
    CHECK(n == 13 && memcmp(buf, "\"\\/\b\f\n\r\tA\xF0\x9D\x84\x9E", 13) == 0);
    CHECK(drv_json_unescaped_len(esc) == 13);
    CHECK(drv_json_utf8_valid("a\xC3\xA9\xF0\x9F\x98\x80", 7));
    CHECK(!drv_json_utf8_valid("\xC3", 1));
    CHECK(!drv_json_utf8_valid("\xED\xBF\xBF", 3));
}

int main(void)
{
    test_find();
    test_json_tables();
    test_senml_tables();
    test_numeric();
    test_limits();
    test_zero_copy();
    test_contract();
    test_scanner();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
