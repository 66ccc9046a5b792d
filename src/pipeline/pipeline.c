/*
 * pipeline.c — envelope → decoder → samples → store (see pipeline.h).
 *
 * The decode scratch (the sample array and the arena for flattened keys and
 * unescaped strings) is per thread and reused, so a message costs no
 * allocation here.  Decode errors are logged at most DECODE_LOG_PER_S times
 * a second (the count in the stats is exact): a fleet sending garbage must
 * not turn the log into the bottleneck.
 */
#include "pipeline/pipeline.h"

#include <stdatomic.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/ratelimit.h"
#include "pipeline/decode.h"
#include "platform/clock.h"

#define DECODE_LOG_PER_S 10
#define ARENA_BYTES (64u << 10)

struct drv_pipeline {
    drv_pipeline_config cfg;
    atomic_uint_fast64_t messages, samples, refused, decode_errors;
    drv_per_second decode_logs; /* decode errors logged this second */
};

static _Thread_local drv_sample tl_samples[DRV_DECODE_MAX_SAMPLES];
static _Thread_local char tl_arena[ARENA_BYTES];

const char *drv_protocol_name(drv_protocol p)
{
    switch (p) {
    case DRV_PROTO_MQTT:
        return "mqtt";
    case DRV_PROTO_HTTP:
        return "http";
    case DRV_PROTO_COAP:
        return "coap";
    case DRV_PROTO_MODBUS:
        return "modbus";
    case DRV_PROTO_OPCUA:
        return "opcua";
    }
    return "unknown";
}

drv_err drv_pipeline_new(const drv_pipeline_config *cfg, drv_pipeline **out)
{
    if (!cfg->store.ops)
        return DRV_CONFIG;
    drv_pipeline *pl = drv_calloc(1, sizeof(*pl));
    if (!pl)
        return DRV_NOMEM;
    pl->cfg = *cfg;
    *out = pl;
    return DRV_OK;
}

void drv_pipeline_free(drv_pipeline *pl)
{
    drv_free(pl);
}

static void decode_failed(drv_pipeline *pl, const drv_envelope *env, const char *why)
{
    atomic_fetch_add_explicit(&pl->decode_errors, 1, memory_order_relaxed);
    if (drv_per_second_allow(&pl->decode_logs, drv_mono_ms() / 1000, DECODE_LOG_PER_S))
        drv_info("telemetry payload not decoded", "tenant", env->tenant, "device", env->device,
                 "protocol", drv_protocol_name(env->protocol), "decoder", env->decoder, "reason",
                 why);
    if (pl->cfg.on_decode_error)
        pl->cfg.on_decode_error(pl->cfg.ud, env, why);
}

drv_err drv_pipeline_ingest(drv_pipeline *pl, const drv_envelope *env, drv_ingest_result *res)
{
    memset(res, 0, sizeof(*res));
    atomic_fetch_add_explicit(&pl->messages, 1, memory_order_relaxed);
    const drv_decoder_ops *dec = drv_decoder_find(env->decoder ? env->decoder : "json");
    if (!dec) {
        res->why = "the device profile names an unknown decoder";
        decode_failed(pl, env, res->why);
        return DRV_NOTFOUND;
    }
    drv_decode_in in = {
        .payload = env->payload,
        .topic_key = env->key,
        .recv_ms = env->recv_ms,
        .max_future_ms = pl->cfg.max_future_ms,
    };
    drv_decode_out out = {
        .samples = tl_samples,
        .cap = DRV_DECODE_MAX_SAMPLES,
        .arena = tl_arena,
        .arena_cap = sizeof(tl_arena),
    };
    const char *why = NULL;
    drv_err e = dec->decode(&in, &out, &why);
    if (e != DRV_OK) {
        res->why = why ? why : "payload could not be decoded";
        decode_failed(pl, env, res->why);
        return DRV_MALFORMED; /* res->why says which (a syntax error, a decoder limit) */
    }
    if (out.n == 0)
        return DRV_OK;
    drv_ts_append_result ar;
    e = pl->cfg.store.ops->append(pl->cfg.store.st, env->tenant, env->device, out.samples, out.n,
                                  &ar);
    if (e != DRV_OK)
        return e;
    res->stored = ar.stored;
    res->refused = ar.refused;
    res->why = ar.why;
    if (pl->cfg.on_stored && ar.stored) {
        /* Only what was stored goes live: the store names its first refusal,
         * so one refusal can be cut out; with more, the message is not sent
         * live at all (rare: kind conflicts, keys over the limit). */
        if (ar.refused == 0) {
            pl->cfg.on_stored(pl->cfg.ud, env, out.samples, out.n);
        } else if (ar.refused == 1 && ar.why_index < out.n) {
            uint32_t k = ar.why_index;
            if (k > 0)
                pl->cfg.on_stored(pl->cfg.ud, env, out.samples, k);
            if (k + 1 < out.n)
                pl->cfg.on_stored(pl->cfg.ud, env, out.samples + k + 1, out.n - k - 1);
        }
    }
    atomic_fetch_add_explicit(&pl->samples, ar.stored, memory_order_relaxed);
    atomic_fetch_add_explicit(&pl->refused, ar.refused, memory_order_relaxed);
    return DRV_OK;
}

drv_err drv_pipeline_commit(drv_pipeline *pl)
{
    drv_err e = pl->cfg.store.ops->commit(pl->cfg.store.st);
    if (pl->cfg.on_commit)
        pl->cfg.on_commit(pl->cfg.ud, e == DRV_OK);
    return e;
}

void drv_pipeline_get_stats(const drv_pipeline *pl, drv_pipeline_stats *out)
{
    out->messages = atomic_load_explicit(&pl->messages, memory_order_relaxed);
    out->samples = atomic_load_explicit(&pl->samples, memory_order_relaxed);
    out->refused = atomic_load_explicit(&pl->refused, memory_order_relaxed);
    out->decode_errors = atomic_load_explicit(&pl->decode_errors, memory_order_relaxed);
}
