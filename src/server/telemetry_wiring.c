/*
 * telemetry_wiring.c — see telemetry_wiring.h.
 *
 * The publish tap runs on broker workers, under the broker lock, for every
 * device PUBLISH: it asks the registry backend whether the topic is the
 * device's telemetry topic (lock-free: the profile's settings ride in the
 * session's auth context) and, if so, hands an envelope to the pipeline.
 * The tap's commit (once per worker turn) is the engine's group commit.
 * Decode errors become "decode_error" device events, at most
 * DECODE_EVENTS_PER_S a second (the pipeline counts them all).
 *
 * The same tap hands a device's shadow and command topics to the twin
 * service, tells it of connects and subscriptions, and its commit also
 * waits for the service's commit (acknowledged means durable).
 */
#include "server/telemetry_wiring.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/ratelimit.h"
#include "mqtt/mqtt.h"
#include "platform/clock.h"
#include "registry/auth_registry.h"
#include "server/api_wiring.h"
#include "twin/twin.h"

#define DECODE_EVENTS_PER_S 50

/* This worker's turn took telemetry (its commit is the engine's group commit). */
static _Thread_local bool tl_ingested;

struct telemetry_wiring {
    const drv_bus *bus; /* live delivery (may be NULL) */
    drv_ts_store store;
    drv_store *reader; /* the registry, read by the engine's thread only */
    drv_pipeline *pl;
    void *auth;                   /* the registry auth backend's state */
    drv_twin *twin;               /* shadows and commands (NULL: none) */
    drv_per_second decode_events; /* decode_error events recorded this second */
};

static void on_decode_error(void *ud, const drv_envelope *env, const char *why)
{
    telemetry_wiring *t = ud;
    if (!t->auth)
        return;
    if (drv_per_second_allow(&t->decode_events, drv_mono_ms() / 1000, DECODE_EVENTS_PER_S))
        drv_registry_device_event(t->auth, env->tenant, env->device, "decode_error", why);
}

/* Stored samples go live (ADR-0016): staged on this thread, published
 * when the commit that makes them durable succeeds. */
static void on_stored(void *ud, const drv_envelope *env, const drv_sample *s, uint32_t n)
{
    telemetry_wiring *t = ud;
    if (drv_bus_wanted(t->bus))
        drv_bus_stage_telemetry(t->bus, env->tenant, env->device, s, n);
}

static void on_commit(void *ud, bool durable)
{
    telemetry_wiring *t = ud;
    if (durable)
        drv_bus_flush(t->bus);
    else
        drv_bus_discard();
}

/* A device's own retention: its profile's telemetry_retention_days (the
 * engine's thread, hourly). */
static uint32_t device_retention(void *ud, const char *tenant, const char *device)
{
    telemetry_wiring *t = ud;
    drv_scope sc = {.tenant = tenant};
    json_t *dev = NULL, *prof = NULL;
    uint32_t days = 0;
    if (t->reader->ops->doc_get(t->reader, &sc, DRV_KIND_DEVICE, device, &dev) == DRV_OK) {
        const char *profile = json_string_value(json_object_get(dev, "profile"));
        if (profile &&
            t->reader->ops->doc_get(t->reader, &sc, DRV_KIND_PROFILE, profile, &prof) == DRV_OK)
            days = (uint32_t)json_integer_value(json_object_get(prof, "telemetry_retention_days"));
    }
    json_decref(prof);
    json_decref(dev);
    return days;
}

drv_err telemetry_wiring_start(const drv_settings *s, const drv_bus *bus, telemetry_wiring **out)
{
    *out = NULL;
    drv_tsdb_durability dur;
    if (strcasecmp(s->tsdb_durability, "sync") == 0) {
        dur = DRV_TSDB_SYNC;
    } else if (strcasecmp(s->tsdb_durability, "batch") == 0) {
        dur = DRV_TSDB_BATCH;
    } else {
        drv_error("tsdb.durability must be sync or batch", "value", s->tsdb_durability);
        return DRV_CONFIG;
    }
    telemetry_wiring *t = drv_calloc(1, sizeof(*t));
    if (!t)
        return DRV_NOMEM;
    t->bus = bus;
    drv_err e = api_wiring_open_store(s, &t->reader);
    if (e != DRV_OK) {
        drv_free(t);
        return e;
    }
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/tsdb", s->data_dir);
    drv_tsdb_config tc = {
        .dir = dir,
        .durability = dur,
        .sync_interval_ms = (uint32_t)s->tsdb_sync_interval_ms,
        .partition_hours = (uint32_t)s->tsdb_partition_hours,
        .head_max_samples = s->tsdb_head_max_samples,
        .head_max_age_s = (uint32_t)s->tsdb_head_max_age_s,
        .max_series = s->tsdb_max_series > UINT32_MAX ? UINT32_MAX : (uint32_t)s->tsdb_max_series,
        .max_future_ms = (int64_t)s->telemetry_max_future_ms,
        .device_retention = device_retention,
        .device_retention_ud = t,
    };
    drv_tsdb_recovery rep;
    e = drv_tsdb_open(&tc, &t->store, &rep);
    if (e != DRV_OK) {
        drv_error("cannot open the telemetry store", "dir", dir, "error", drv_strerror(e));
        drv_store_close(t->reader);
        drv_free(t);
        return e;
    }
    char recs[24], samples[24], cut[24], files[24], bad[24], series[24];
    snprintf(recs, sizeof(recs), "%llu", (unsigned long long)rep.wal_records);
    snprintf(samples, sizeof(samples), "%llu", (unsigned long long)rep.wal_samples);
    snprintf(cut, sizeof(cut), "%llu", (unsigned long long)rep.wal_bytes_cut);
    snprintf(files, sizeof(files), "%u", rep.blocks_files);
    snprintf(bad, sizeof(bad), "%u", rep.blocks_files_bad);
    snprintf(series, sizeof(series), "%u", rep.series);
    if (rep.wal_bytes_cut || rep.blocks_files_bad)
        drv_warn("telemetry store repaired", "log_records", recs, "log_samples", samples,
                 "log_bytes_cut", cut, "block_files", files, "block_files_set_aside", bad);
    else
        drv_info("telemetry store open", "series", series, "block_files", files, "log_samples",
                 samples);
    drv_pipeline_config pc = {
        .store = t->store,
        .max_future_ms = (int64_t)s->telemetry_max_future_ms,
        .on_decode_error = on_decode_error,
        .on_stored = bus ? on_stored : NULL,
        .on_commit = bus ? on_commit : NULL,
        .ud = t,
    };
    e = drv_pipeline_new(&pc, &t->pl);
    if (e != DRV_OK) {
        t->store.ops->close(t->store.st);
        drv_store_close(t->reader);
        drv_free(t);
        return e;
    }
    *out = t;
    return DRV_OK;
}

/* "devices/<device>/" of the client's own device: the rest of the topic. */
static const uint8_t *own_rest(const drv_client_identity *who, const uint8_t *topic, size_t len,
                               char *device, size_t cap, size_t *rest_len)
{
    if (!drv_registry_device_of(who, device, cap))
        return NULL;
    size_t dl = strlen(device);
    if (len < 8 + dl + 1 || memcmp(topic, "devices/", 8) != 0 ||
        memcmp(topic + 8, device, dl) != 0 || topic[8 + dl] != '/')
        return NULL;
    *rest_len = len - (8 + dl + 1);
    return topic + 8 + dl + 1;
}

/* Shadow and command topics go to the twin service (docs/shadow.md,
 * docs/commands.md); anything else is routed as any message. */
static uint8_t tap_twin(telemetry_wiring *t, const drv_client_identity *who, const uint8_t *topic,
                        size_t topic_len, const uint8_t *payload, size_t payload_len, bool *taken)
{
    const char *claim_ca, *claim_fp;
    if (t->twin && drv_registry_claim_of(who, &claim_ca, &claim_fp)) {
        /* A claim session's registration (docs/provisioning.md); its ACL
         * lets it publish nothing else. */
        char want[256];
        int n = snprintf(want, sizeof(want), "provisioning/%s/register", who->client_id);
        if (n < 0 || (size_t)n != topic_len || memcmp(want, topic, topic_len) != 0)
            return MQTT_RC_SUCCESS;
        uint8_t rc = drv_twin_claim_message(t->twin, who->ns + 3, who->client_id, claim_ca,
                                            claim_fp, payload, payload_len);
        *taken = rc == MQTT_RC_SUCCESS;
        return rc;
    }
    char device[129];
    size_t rest_len = 0;
    const uint8_t *rest =

        t->twin ? own_rest(who, topic, topic_len, device, sizeof(device), &rest_len) : NULL;
    if (!rest)
        return MQTT_RC_SUCCESS;
    bool is_twin = false;
    uint8_t rc = drv_twin_device_message(t->twin, who->ns + 3, device, rest, rest_len, payload,
                                         payload_len, &is_twin);
    *taken = is_twin && rc == MQTT_RC_SUCCESS;
    return rc;
}

static void tap_session(void *ud, const drv_client_identity *who, const uint8_t *filter,
                        size_t filter_len)
{
    telemetry_wiring *t = ud;
    char device[129];
    if (t->twin && drv_registry_device_of(who, device, sizeof(device)))
        drv_twin_session(t->twin, who->ns + 3, device, filter, filter_len);
}

static uint8_t tap_publish(void *ud, const drv_client_identity *who, const uint8_t *topic,
                           size_t topic_len, const uint8_t *payload, size_t payload_len,
                           uint8_t qos, bool *taken)
{
    telemetry_wiring *t = ud;
    (void)qos;
    drv_telemetry_route r;
    if (!drv_registry_telemetry_of(t->auth, who, topic, topic_len, &r))
        return tap_twin(t, who, topic, topic_len, payload, payload_len, taken);
    drv_envelope env = {
        .tenant = r.tenant,
        .device = r.device,
        .protocol = DRV_PROTO_MQTT,
        .topic = {(const char *)topic, topic_len},
        .recv_ms = (int64_t)drv_wall_ms(),
        .payload = {(const char *)payload, payload_len},
        .decoder = r.decoder,
        .key = r.key,
    };
    drv_ingest_result res;
    drv_err e = drv_pipeline_ingest(t->pl, &env, &res);
    tl_ingested = true;
    switch (e) {
    case DRV_OK:
        *taken = true;
        return MQTT_RC_SUCCESS;
    case DRV_MALFORMED:
    case DRV_NOTFOUND:
        return MQTT_RC_PAYLOAD_FORMAT_INVALID;
    case DRV_LIMIT: /* the tenant's storage quota */
        return MQTT_RC_QUOTA_EXCEEDED;
    case DRV_NOMEM:
        return MQTT_RC_QUOTA_EXCEEDED;
    default:
        return MQTT_RC_UNSPECIFIED;
    }
}

static drv_err tap_commit(void *ud)
{
    telemetry_wiring *t = ud;
    drv_err e = DRV_OK;
    if (tl_ingested) {
        tl_ingested = false;
        e = drv_pipeline_commit(t->pl);
    }
    drv_err te = t->twin ? drv_twin_commit_wait(t->twin) : DRV_OK;
    return e != DRV_OK ? e : te;
}

void telemetry_wiring_attach(telemetry_wiring *t, void *registry_auth, drv_broker_config *bc)
{
    t->auth = registry_auth;
    bc->tap = (drv_publish_tap){
        .publish = tap_publish, .commit = tap_commit, .session = tap_session, .ud = t};
}

void telemetry_wiring_set_twin(telemetry_wiring *t, drv_twin *twin)
{
    t->twin = twin;
}

drv_ts_store *telemetry_wiring_store(telemetry_wiring *t)
{
    return &t->store;
}

drv_pipeline *telemetry_wiring_pipeline(telemetry_wiring *t)
{
    return t->pl;
}

void telemetry_wiring_stop(telemetry_wiring *t)
{
    if (!t)
        return;
    drv_pipeline_free(t->pl);
    t->store.ops->close(t->store.st); /* joins the engine's thread, the reader's user */
    drv_store_close(t->reader);
    drv_free(t);
}
