/*
 * sample.h — the platform's one telemetry data model (ADR-0012).
 *
 * Every protocol adapter produces envelopes (src/pipeline/pipeline.h); the
 * payload decoders turn an envelope into samples; the time-series engine
 * (src/tsdb) stores samples, the live streams and rules read them.  A sample
 * is one value of one key of one device at one time.  The tenant and the
 * device are not repeated in every sample: they travel beside a batch of
 * samples (the envelope, or an argument of the engine's append).
 *
 * Times are milliseconds since the Unix epoch (UTC), as int64.  Header-only.
 */
#ifndef DRV_CORE_SAMPLE_H
#define DRV_CORE_SAMPLE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/span.h"

/* A value's type.  The numbers are stored on disk: never renumber. */
typedef enum drv_value_type {
    DRV_VALUE_DOUBLE = 1, /* IEEE 754 binary64 (NaN and infinities allowed) */
    DRV_VALUE_INT = 2,    /* signed 64-bit */
    DRV_VALUE_BOOL = 3,
    DRV_VALUE_STRING = 4, /* UTF-8, at most DRV_SAMPLE_MAX_STRING bytes */
} drv_value_type;

/* Longest string value and longest key, in bytes. */
#define DRV_SAMPLE_MAX_STRING 4096u
#define DRV_SAMPLE_MAX_KEY 128u

typedef struct drv_value {
    drv_value_type type;
    union {
        double d;
        int64_t i;
        bool b;
        drv_span s; /* points into the caller's memory (payload or decode arena) */
    };
} drv_value;

/* One sample: key and value at a time.  key points into the caller's memory. */
typedef struct drv_sample {
    drv_span key;  /* 1..DRV_SAMPLE_MAX_KEY bytes of UTF-8, no control characters */
    int64_t ts_ms; /* milliseconds since the epoch */
    drv_value v;
} drv_sample;

#endif
