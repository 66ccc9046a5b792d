/*
 * decode.h — payload decoders: the bytes of one envelope become samples
 * (ADR-0012).
 *
 * A device profile names its decoder ("json", "senml", "numeric"); the
 * pipeline looks it up with drv_decoder_find and calls it once per message.
 * Decoders are pure: no I/O, no locks, no allocation (the caller hands in
 * the sample array and a scratch arena), any thread.  A message decodes
 * whole or not at all: on error nothing of it is stored, and `why` says what
 * was wrong in words a device developer can act on ("expected a JSON
 * object", "value of \"temp\" is an array").
 *
 * Formats (docs/telemetry.md has the user-facing description):
 *   json     {"temp": 21.5, "on": true, "mode": "eco", "pos": {"lat": 1.5}}
 *            nested objects flatten to dotted keys ("pos.lat"); arrays of
 *            scalars flatten by index ("arr.0"); null members and elements
 *            are skipped; an object or array inside an array is an error.
 *            {"ts": <ms>, "values": {...}} gives the samples a device time
 *            (ts: integer ms, or an RFC 3339 string such as
 *            "2026-01-01T00:00:00.123Z"); [{"ts": ..., "values": {...}}, ...]
 *            is a batch.  At the top level "ts" and "values" are reserved:
 *            an object with either must be exactly that form.
 *            Numbers without fraction or exponent that fit int64 are INT,
 *            other numbers DOUBLE; one beyond a double's range is an error.
 *            Strict RFC 8259 (json_scan.h): UTF-8 checked, no trailing
 *            commas, at most 32 levels deep; a name repeated in one object,
 *            or two members flattening to one key, is "duplicate key"; at
 *            most 2048 members per message (per batch element).
 *   senml    RFC 8428 JSON: an array of records; base fields (bn, bt, bu,
 *            bv, bs, bver) carry over; key = bn + n; v (+ bv) → DOUBLE (INT
 *            when v and bv are written without fraction/exponent and the sum
 *            fits), vb → BOOL, vs → STRING, vd (data) → STRING as sent;
 *            time = bt + t in seconds, rounded to the ms; resolved times
 *            below 2^28 s count from the receive time.  Units (u, bu), sums
 *            (s, bs) and "ut" are checked and dropped; a record with only
 *            base fields gives no sample, any other record needs exactly one
 *            of v, vb, vs, vd; bver > 10 and unknown fields ending in '_' are
 *            errors, other unknown fields are skipped.
 *   numeric  the whole payload is one value, its key the last topic level
 *            (in->topic_key): an integer, a decimal number, "true"/"false",
 *            with optional surrounding ASCII whitespace.
 *
 * Keys are 1..DRV_SAMPLE_MAX_KEY bytes of UTF-8 without control characters
 * (C0, DEL, C1); string values at most DRV_SAMPLE_MAX_STRING bytes.  A key
 * or string written in the payload without escapes (and, for json, not
 * flattened) points into the payload; the rest is copied into the arena, so
 * arena_cap = payload.n + DRV_SAMPLE_MAX_KEY × cap always suffices.  The
 * json decoder keeps its duplicate-key table on the stack (about 40 KiB).
 *
 * Times: a sample without a device time gets in->recv_ms.  A device time
 * more than in->max_future_ms after recv_ms is an error ("timestamp in the
 * future"); times before 1970 too.  Old times are accepted (late data).
 */
#ifndef DRV_PIPELINE_DECODE_H
#define DRV_PIPELINE_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/sample.h"
#include "core/span.h"

/* Most samples one message may carry (more: an error, the message is refused). */
#define DRV_DECODE_MAX_SAMPLES 1024u

typedef struct drv_decode_in {
    drv_span payload;      /* the message body (not NUL-terminated) */
    drv_span topic_key;    /* "numeric": the key (last topic level); otherwise empty */
    int64_t recv_ms;       /* when the platform received it */
    int64_t max_future_ms; /* allowed clock skew for device times (0: none allowed) */
} drv_decode_in;

typedef struct drv_decode_out {
    drv_sample *samples; /* caller's array of `cap` entries */
    uint32_t cap;
    uint32_t n;  /* set by the decoder: samples produced */
    char *arena; /* caller's scratch for keys and strings that are not verbatim in the
                     payload (flattened "a.b" keys, unescaped strings); may be NULL */
    size_t arena_cap;
    size_t arena_used; /* set by the decoder */
} drv_decode_out;

typedef struct drv_decoder_ops {
    const char *name; /* "json", "senml", "numeric" */
    /*
     * Decode in->payload into out (the decoder sets out->n and
     * out->arena_used, starting from 0).  DRV_OK: out->samples[0..n) hold
     * the message's samples (n may be 0 for an empty object) and *why is
     * NULL.  DRV_MALFORMED: the payload is not what the decoder reads;
     * DRV_LIMIT: over min(cap, DRV_DECODE_MAX_SAMPLES) samples, over the
     * arena, a key or string too long, too many members; *why (a static
     * string) says which, in the device developer's terms, and out->n is 0.
     * No other result.  Keys and string values point into the payload, the
     * arena or (numeric) in->topic_key; they live as long as those do.
     */
    drv_err (*decode)(const drv_decode_in *in, drv_decode_out *out, const char **why);
} drv_decoder_ops;

extern const drv_decoder_ops drv_decoder_json;
extern const drv_decoder_ops drv_decoder_senml;
extern const drv_decoder_ops drv_decoder_numeric;

/* The decoder called `name`, or NULL. */
const drv_decoder_ops *drv_decoder_find(const char *name);

#endif
