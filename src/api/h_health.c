/*
 * h_health.c — liveness, readiness and Prometheus metrics, plus whoami.
 *
 * /healthz answers as long as the API thread runs; /readyz also asks the
 * registry and the broker, so a load balancer stops sending traffic to a
 * node whose storage is gone.  /metrics is the Prometheus text format
 * (version 0.0.4).
 */
#include <stdio.h>
#include <string.h>

#include "api/api_int.h"
#include "twin/twin.h"
#include "live/hub.h"
#include "core/alloc.h"
#include "pipeline/pipeline.h"

void api_health_live(api_ctx *x)
{
    api_json(x, 200, json_pack("{s:s}", "status", "ok"));
}

void api_health_ready(api_ctx *x)
{
    drv_store *st = x->api->store;
    const drv_api_probes *p = &x->api->cfg.probes;
    bool store_ok = st->ops->ping(st) == DRV_OK;
    bool broker_ok = !p->broker_ready || p->broker_ready(p->ud);
    int status = store_ok && broker_ok ? 200 : 503;
    api_json(x, status,
             json_pack("{s:s, s:{s:s, s:s}}", "status", status == 200 ? "ready" : "not ready",
                       "checks", "registry", store_ok ? "ok" : "failing", "broker",
                       broker_ok ? "ok" : "failing"));
}

static void line(drv_buf *b, const char *name, const char *type, const char *help, uint64_t v)
{
    char t[512];
    int n = snprintf(t, sizeof(t), "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type,
                     name, (unsigned long long)v);
    if (n > 0 && (size_t)n < sizeof(t))
        drv_buf_append(b, t, (size_t)n);
}

/* The twin service's counters (shadows and commands). */
static void twin_metrics(drv_api *a, drv_buf *b)
{
    if (!a->twin)
        return;
    drv_twin_stats ts;
    drv_twin_get_stats(a->twin, &ts);
    line(b, "drover_shadow_updates_total", "counter",
         "Shadow changes stored (devices and applications)", ts.shadow_updates);
    line(b, "drover_shadow_rejected_total", "counter", "Shadow requests rejected",
         ts.shadow_rejected);
    line(b, "drover_commands_created_total", "counter", "Commands accepted by the API",
         ts.commands_created);
    line(b, "drover_commands_sent_total", "counter",
         "Command requests published to devices, resends included", ts.commands_sent);
    line(b, "drover_commands_settled_total", "counter", "Commands that reached a final state",
         ts.commands_settled);
    line(b, "drover_twin_device_messages_total", "counter",
         "Device messages on shadow and command topics taken by the twin service",
         ts.device_messages);
    line(b, "drover_twin_refused_total", "counter",
         "Device messages refused because twin.max_pending were waiting", ts.refused_busy);
    line(b, "drover_twin_batches_total", "counter", "Transactions of the twin service", ts.batches);
}

/* The pipeline's and the time-series engine's counters. */
static void telemetry_metrics(drv_api *a, drv_buf *b)
{
    if (a->cfg.pipeline) {
        drv_pipeline_stats ps;
        drv_pipeline_get_stats(a->cfg.pipeline, &ps);
        line(b, "drover_telemetry_messages_total", "counter", "Telemetry messages ingested",
             ps.messages);
        line(b, "drover_telemetry_samples_total", "counter", "Telemetry samples stored",
             ps.samples);
        line(b, "drover_telemetry_samples_refused_total", "counter",
             "Telemetry samples the store refused (kind conflict, too old, too far ahead)",
             ps.refused);
        line(b, "drover_telemetry_decode_errors_total", "counter",
             "Telemetry messages whose payload could not be decoded", ps.decode_errors);
    }
    drv_tsdb_stats ts;
    if (a->cfg.telemetry && drv_tsdb_get_stats(a->cfg.telemetry, &ts)) {
        line(b, "drover_tsdb_series", "gauge", "Series in the time-series engine", ts.series);
        line(b, "drover_tsdb_head_samples", "gauge", "Samples in memory, not yet in blocks",
             ts.head_samples);
        line(b, "drover_tsdb_commits_total", "counter", "Group commits of the telemetry log",
             ts.commits);
        line(b, "drover_tsdb_syncs_total", "counter", "fdatasyncs of the telemetry log", ts.syncs);
        line(b, "drover_tsdb_wal_bytes_total", "counter", "Bytes written to the telemetry log",
             ts.wal_bytes);
        line(b, "drover_tsdb_flushes_total", "counter", "Heads written into block files",
             ts.flushes);
        line(b, "drover_tsdb_block_bytes_total", "counter", "Bytes of block files written",
             ts.block_bytes);
        line(b, "drover_tsdb_partitions_dropped_total", "counter",
             "Partitions removed by retention", ts.partitions_dropped);
        line(b, "drover_tsdb_corrupt_blocks_total", "counter",
             "Blocks refused at read for a bad checksum", ts.corrupt_blocks);
    }
}

void api_health_metrics(api_ctx *x)
{
    drv_api *a = x->api;
    drv_buf *b = &x->resp->body;
    const drv_api_probes *p = &a->cfg.probes;
    if (p->broker_metrics)
        p->broker_metrics(p->ud, b);
    if (a->hub)
        drv_hub_metrics(a->hub, b);
    if (a->http) {
        drv_http_stats hs;
        drv_http_server_stats(a->http, &hs);
        line(b, "drover_http_connections_open", "gauge", "HTTP connections open now",
             hs.connections_open);
        line(b, "drover_http_connections_total", "counter", "HTTP connections accepted",
             hs.connections_total);
        line(b, "drover_http_requests_total", "counter", "HTTP requests handled",
             hs.requests_total);
        line(b, "drover_http_bad_requests_total", "counter", "HTTP requests the parser refused",
             hs.bad_requests);
        static const char *const classes[] = {"", "1xx", "2xx", "3xx", "4xx", "5xx"};
        char t[160];
        int n = snprintf(t, sizeof(t),
                         "# HELP drover_http_responses_total HTTP responses by status class\n"
                         "# TYPE drover_http_responses_total counter\n");
        drv_buf_append(b, t, (size_t)n);
        for (int c = 1; c <= 5; c++) {
            n = snprintf(t, sizeof(t), "drover_http_responses_total{class=\"%s\"} %llu\n",
                         classes[c], (unsigned long long)hs.responses_by_class[c]);
            drv_buf_append(b, t, (size_t)n);
        }
    }
    telemetry_metrics(a, b);
    twin_metrics(a, b);
    line(b, "drover_api_requests_total", "counter", "REST API requests routed", a->requests);
    line(b, "drover_api_auth_failures_total", "counter", "REST API requests with a bad token",
         a->auth_failures);
    line(b, "drover_api_rate_limited_total", "counter", "REST API requests refused with 429",
         a->rate_limited);
    x->resp->status = 200;
    x->resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

void api_whoami(api_ctx *x)
{
    api_json(x, 200,
             json_pack("{s:s, s:s?, s:s}", "token", x->tok.id, "tenant",
                       x->tok.tenant[0] ? x->tok.tenant : NULL, "role", api_role_name(x->role)));
}
