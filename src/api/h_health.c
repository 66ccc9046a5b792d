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
#include "core/alloc.h"

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

void api_health_metrics(api_ctx *x)
{
    drv_api *a = x->api;
    drv_buf *b = &x->resp->body;
    const drv_api_probes *p = &a->cfg.probes;
    if (p->broker_metrics)
        p->broker_metrics(p->ud, b);
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
