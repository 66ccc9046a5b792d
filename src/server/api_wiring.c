/*
 * api_wiring.c — puts the REST API together for `drover serve`: the
 * registry store, the API, the HTTP server thread, and the hooks that tie
 * them to the broker (connections handed over from the HTTP listeners,
 * broker numbers for /metrics and /readyz).
 *
 * On the very first start (no platform token in the registry) it creates a
 * platform admin token and prints it once to standard output — not to the
 * log, and never again: only its hash is kept.  `drover token create
 * --platform` makes another one for whoever holds the data directory.
 */
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "core/alloc.h"
#include "core/log.h"
#include "platform/fs.h"
#include "registry/auth_registry.h"
#include "server/api_wiring.h"

struct api_wiring {
    drv_api *api;
    drv_http_server *http;
    drv_broker *broker;
    void *auth; /* registry auth state (drv_registry_auth_ops) */
};

static void adopt(void *ud, int fd, drv_stream *st, const drv_peer *peer, const uint8_t *pre,
                  size_t npre)
{
    api_wiring *w = ud;
    drv_http_adopt(w->http, fd, st, peer, pre, npre);
}

/* Per-tenant lines: the namespace "$T/<tenant>" becomes the label tenant="<tenant>". */
static void tenant_metrics(void *ud, const drv_broker_ns_stats *st)
{
    drv_buf *out = ud;
    const char *tenant = strncmp(st->ns, "$T/", 3) == 0 ? st->ns + 3 : st->ns;
    char t[1024];
    int n = snprintf(t, sizeof(t),
                     "drover_tenant_connections{tenant=\"%s\"} %u\n"
                     "drover_tenant_connections_refused_total{tenant=\"%s\"} %llu\n"
                     "drover_tenant_publish_throttled_total{tenant=\"%s\"} %llu\n",
                     tenant, st->connections, tenant, (unsigned long long)st->refused, tenant,
                     (unsigned long long)st->throttled);
    if (n > 0 && (size_t)n < sizeof(t))
        drv_buf_append(out, t, (size_t)n);
}

static void broker_metrics(void *ud, drv_buf *out)
{
    api_wiring *w = ud;
    if (!w->broker)
        return;
    drv_broker_stats st;
    drv_broker_get_stats(w->broker, &st);
    struct {
        const char *name, *type, *help;
        uint64_t v;
    } m[] = {
        {"drover_mqtt_clients_connected", "gauge", "MQTT clients connected now",
         st.clients_connected},
        {"drover_mqtt_sessions", "gauge", "MQTT sessions known, online or not", st.clients_total},
        {"drover_mqtt_messages_received_total", "counter", "PUBLISH packets received",
         st.msgs_received},
        {"drover_mqtt_messages_sent_total", "counter", "PUBLISH packets sent", st.msgs_sent},
        {"drover_mqtt_messages_dropped_total", "counter",
         "messages dropped (queue full, too large, expired)", st.msgs_dropped},
        {"drover_mqtt_bytes_received_total", "counter", "bytes received", st.bytes_received},
        {"drover_mqtt_bytes_sent_total", "counter", "bytes sent", st.bytes_sent},
        {"drover_mqtt_subscriptions", "gauge", "subscriptions", st.subscriptions},
        {"drover_mqtt_retained_messages", "gauge", "retained messages", st.retained},
        {"drover_mqtt_connections_refused_total", "counter", "connections refused at accept",
         st.connections_refused},
    };
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
        char t[400];
        int n = snprintf(t, sizeof(t), "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", m[i].name,
                         m[i].help, m[i].name, m[i].type, m[i].name, (unsigned long long)m[i].v);
        if (n > 0 && (size_t)n < sizeof(t))
            drv_buf_append(out, t, (size_t)n);
    }
    static const char head[] =
        "# HELP drover_tenant_connections MQTT clients of the tenant connected now\n"
        "# TYPE drover_tenant_connections gauge\n"
        "# HELP drover_tenant_connections_refused_total connections refused by the tenant's "
        "quota\n"
        "# TYPE drover_tenant_connections_refused_total counter\n"
        "# HELP drover_tenant_publish_throttled_total times a publisher was paused by the "
        "tenant's message rate quota\n"
        "# TYPE drover_tenant_publish_throttled_total counter\n";
    drv_buf_append(out, head, sizeof(head) - 1);
    drv_broker_ns_stats_each(w->broker, tenant_metrics, out);
}

/* Decommissioning: end the device's live MQTT connections (a secret's user name
 * or a certificate's client id), within the broker's next loop turn. */
static void disconnect_device(void *ud, const char *tenant, const char *device)
{
    api_wiring *w = ud;
    if (!w->broker)
        return;
    char ns[DRV_AUTH_NS_MAX + 1], user[256];
    snprintf(ns, sizeof(ns), "$T/%s", tenant);
    snprintf(user, sizeof(user), "%s/%s", tenant, device);
    drv_broker_disconnect(w->broker, ns, user, device);
}

static bool broker_ready(void *ud)
{
    api_wiring *w = ud;
    return w->broker != NULL;
}

/* The registry file: api.registry_file, or data_dir/registry.db. */
static void registry_path(const drv_settings *s, char *buf, size_t cap)
{
    if (s->registry_file && s->registry_file[0])
        snprintf(buf, cap, "%s", s->registry_file);
    else
        snprintf(buf, cap, "%s/registry.db", s->data_dir);
}

drv_err api_wiring_open_store(const drv_settings *s, drv_store **out)
{
    char path[4096];
    drv_err e = drv_mkdir_p(s->data_dir);
    if (e != DRV_OK) {
        drv_error("cannot create the data directory", "dir", s->data_dir, "error", drv_strerror(e));
        return e;
    }
    registry_path(s, path, sizeof(path));
    /* The registry holds the private key that signs access tokens: owner
     * only.  SQLite gives its -wal and -shm files the database's mode. */
    e = drv_file_make_private(path);
    if (e != DRV_OK) {
        drv_error("cannot create the registry", "file", path, "error", drv_strerror(e));
        return e;
    }
    e = drv_store_open_sqlite(path, out);
    if (e != DRV_OK)
        drv_error("cannot open the registry", "file", path, "error", drv_strerror(e));
    return e;
}

drv_err api_wiring_start(const drv_settings *s, drv_broker_config *bc, api_wiring **out)
{
    *out = NULL;
    if (!s->api_enabled)
        return DRV_OK;
    if (s->namespace_per_user) {
        /* Both would hand out "$T/<name>": a password-file user could land in a tenant. */
        drv_error("auth.namespace_per_user needs api.enabled=false: with the registry, "
                  "namespaces are tenants");
        return DRV_CONFIG;
    }
    api_wiring *w = drv_calloc(1, sizeof(*w));
    if (!w)
        return DRV_NOMEM;
    drv_store *store = NULL;
    drv_err e = api_wiring_open_store(s, &store);
    if (e != DRV_OK)
        goto fail;
    drv_api_config ac = {
        .store = store,
        .probes = {.ud = w,
                   .broker_metrics = broker_metrics,
                   .broker_ready = broker_ready,
                   .disconnect_device = disconnect_device},
        .rate_limit_rps = (uint32_t)s->api_rate_limit_rps,
        .rate_limit_burst = (uint32_t)s->api_rate_limit_burst,
        .jwt_issuer = s->api_jwt_issuer,
        .jwt_ttl_s = s->api_jwt_ttl_s > UINT32_MAX ? UINT32_MAX : (uint32_t)s->api_jwt_ttl_s,
    };
    e = drv_api_new(&ac, &w->api);
    if (e != DRV_OK) {
        drv_store_close(store);
        goto fail;
    }
    char token[64];
    e = drv_api_bootstrap(w->api, token, sizeof(token));
    if (e == DRV_OK) {
        printf("\n"
               "  Drover first start: a platform admin token was created.  It is shown\n"
               "  this once and never logged; keep it somewhere safe.\n"
               "\n"
               "    DROVER_TOKEN=%s\n"
               "\n"
               "  Try:  curl -H \"Authorization: Bearer $DROVER_TOKEN\" "
               "http://localhost:8080/api/v1/tenants\n"
               "  Lost it?  drover token create --platform --data-dir DIR\n\n",
               token);
        fflush(stdout);
        memset(token, 0, sizeof(token));
    } else if (e != DRV_EXISTS) {
        drv_error("cannot create the first platform token", "error", drv_strerror(e));
        goto fail;
    }
    drv_http_config hc = {
        .limits = {.max_body = s->http_max_body},
        .idle_timeout_ms = (uint32_t)s->http_idle_timeout_ms,
        .handler = drv_api_handle,
        .handler_ud = w->api,
    };
    e = drv_http_server_start(&hc, &w->http);
    if (e != DRV_OK) {
        drv_error("cannot start the HTTP server", "error", drv_strerror(e));
        goto fail;
    }
    drv_api_set_http(w->api, w->http);
    bc->http_adopt = adopt;
    bc->http_adopt_ud = w;
    /* Devices authenticate against the registry; everyone else as before. */
    char path[4096];
    registry_path(s, path, sizeof(path));
    e = drv_registry_auth_new(path, s->mqtt_jwt_audience, bc->auth_ops, bc->auth_state, &w->auth);
    if (e != DRV_OK) {
        drv_error("cannot open the registry for MQTT authentication", "error", drv_strerror(e));
        drv_http_server_stop(w->http);
        goto fail;
    }
    bc->auth_ops = &drv_registry_auth_ops;
    bc->auth_state = w->auth;
    *out = w;
    return DRV_OK;
fail:
    drv_api_free(w->api);
    drv_free(w);
    return e;
}

void api_wiring_set_broker(api_wiring *w, drv_broker *b)
{
    if (w)
        w->broker = b; /* before the listeners start: no request has run yet */
}

void api_wiring_stop(api_wiring *w)
{
    if (!w)
        return;
    drv_http_server_stop(w->http);
    drv_registry_auth_ops.free(w->auth);
    drv_api_free(w->api);
    drv_free(w);
}
