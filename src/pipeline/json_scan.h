/*
 * json_scan.h — a bounded, zero-allocation JSON tokenizer for the payload
 * decoders (decode_json.c, decode_senml.c).
 *
 * A pull scanner over one document held in memory: each drv_json_next call
 * returns the next token (object/array begin and end, member name, string,
 * number, literal) and enforces RFC 8259 as it goes: one top-level value
 * with only whitespace around it, no trailing commas, strings of valid
 * UTF-8 (Unicode Table 3-7) with valid escapes (surrogates paired), numbers
 * in the JSON grammar, nesting at most DRV_JSON_MAX_DEPTH deep.  Tokens are
 * views into the input: strings are returned as written (the bytes between
 * the quotes) with a flag saying whether drv_json_unescape is needed.
 *
 * Not a DOM and not a validator of meaning: duplicate member names are the
 * caller's to detect (the decoders refuse them).  The scanner never reads
 * outside the input, never allocates and never asserts on input; after an
 * error it keeps returning DRV_JSON_ERROR.
 */
#ifndef DRV_PIPELINE_JSON_SCAN_H
#define DRV_PIPELINE_JSON_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/span.h"

/* Most containers open at once ({"a":[ is two). */
#define DRV_JSON_MAX_DEPTH 32u

typedef enum drv_json_type {
    DRV_JSON_ERROR = 0,  /* malformed: s->why says what (a static string) */
    DRV_JSON_END,        /* the top-level value is complete, only whitespace followed */
    DRV_JSON_OBJECT,     /* '{' */
    DRV_JSON_OBJECT_END, /* '}' */
    DRV_JSON_ARRAY,      /* '[' */
    DRV_JSON_ARRAY_END,  /* ']' */
    DRV_JSON_KEY,        /* a member name; the ':' is consumed, the value comes next */
    DRV_JSON_STRING,
    DRV_JSON_NUMBER,
    DRV_JSON_TRUE,
    DRV_JSON_FALSE,
    DRV_JSON_NULL,
} drv_json_type;

typedef struct drv_json_token {
    drv_json_type type;
    drv_span text; /* KEY, STRING: the bytes between the quotes as written; NUMBER: its text;
                      otherwise empty */
    bool escaped;  /* KEY, STRING: text holds backslash escapes (drv_json_unescape) */
    bool integer;  /* NUMBER: written without fraction or exponent */
} drv_json_token;

typedef struct drv_json_scan {
    const char *p;    /* next byte to read */
    const char *end;  /* one past the last byte */
    uint32_t objects; /* bit d-1 set: the container open at depth d is an object */
    uint8_t depth;    /* containers open */
    uint8_t state;    /* what the grammar allows next (json_scan.c) */
    const char *why;  /* after DRV_JSON_ERROR: what was wrong, else NULL */
} drv_json_scan;

/* Start scanning p[0..n) (p may be NULL when n is 0). */
void drv_json_init(drv_json_scan *s, const char *p, size_t n);

/* The next token into *t (and its type as the result); see drv_json_type. */
drv_json_type drv_json_next(drv_json_scan *s, drv_json_token *t);

/*
 * When t (the token just returned) opened an object or array, read up to and
 * including its matching end; for any other token do nothing.  False on a
 * scan error (s->why says what).
 */
bool drv_json_skip(drv_json_scan *s, const drv_json_token *t);

/*
 * The bytes text (a KEY or STRING token's text from this scanner) stands
 * for, once its escapes are decoded: their length, never more than text.n.
 */
size_t drv_json_unescaped_len(drv_span text);

/*
 * Decode the escapes of text (as drv_json_unescaped_len) into dst[0..cap)
 * and return the length, or SIZE_MAX (dst partly written) when it needs more
 * than cap bytes.  UTF-16 surrogate pairs become one 4-byte UTF-8 sequence.
 */
size_t drv_json_unescape(drv_span text, char *dst, size_t cap);

/* p[0..n) is well-formed UTF-8 (Unicode Table 3-7: no overlongs, no surrogates). */
bool drv_json_utf8_valid(const char *p, size_t n);

#endif
