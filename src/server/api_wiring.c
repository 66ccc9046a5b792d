/*
 * api_wiring.c — puts the REST API together for `drover serve`: the
 * registry store, the API, the HTTP server thread, and the hooks that tie
 * them to the broker (connections handed over from the HTTP listeners,
 * broker numbers for /metrics and /readyz).
 *
 * HTTP telemetry ingest authenticates devices with their MQTT credentials
 * through the same registry backend code as the broker, but on an instance
 * of its own (`http_auth`, opened at the first such request): the
 * backend's registry handle and caches belong to one thread at a time, and
 * the broker's instance is used by its authentication thread.
 *
 * On the very first start (no platform token in the registry) it creates a
 * platform admin token and prints it once to standard output — not to the
 * log, and never again: only its hash is kept.  `drover token create
 * --platform` makes another one for whoever holds the data directory.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "core/alloc.h"
#include "core/log.h"
#include "platform/fs.h"
#include "registry/auth_registry.h"
#include "registry/provision.h"
#include "server/api_wiring.h"
#include "server/live_wiring.h"
#include "server/telemetry_wiring.h"
#include "twin/twin.h"

struct api_wiring {
    drv_api *api;
    drv_http_server *http;
    drv_broker *broker;
    void *auth;                  /* registry auth state (drv_registry_auth_ops) */
    telemetry_wiring *telemetry; /* the time-series engine and the pipeline */
    live_wiring *live;           /* the event bus and the live hub (streams) */
    drv_twin *twin;              /* shadows and commands */
    /* The twin service tells the API of finished commands from its thread
     * through the HTTP server, which stops first: `settle_lock` makes the
     * stop wait for a notice under way, `http_up` turns them off. */
    pthread_mutex_t settle_lock;
    bool http_up;
    /* The registry for registrations by claim, used by the twin service's
     * thread only (docs/provisioning.md). */
    drv_store *claim_store;
    /* HTTP ingest's own registry auth state (API thread only); NULL until used. */
    void *http_auth;
    char registry[4096];    /* the registry file, for http_auth */
    char jwt_audience[256]; /* mqtt.jwt_audience, for http_auth */
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

/* http_auth judges only "<tenant>/<device>" users; nobody else gets in. */
static drv_err deny_authenticate(void *state, const drv_client_identity *who,
                                 const uint8_t *password, size_t password_len, bool has_password,
                                 drv_auth_result *result)
{
    (void)state, (void)who, (void)password, (void)password_len, (void)has_password, (void)result;
    return DRV_AUTH;
}

static drv_err deny_authorize(void *state, const drv_client_identity *who, drv_acl_access access,
                              const char *topic)
{
    (void)state, (void)who, (void)access, (void)topic;
    return DRV_DENIED;
}

static const drv_auth_ops deny_ops = {
    .name = "deny",
    .authenticate = deny_authenticate,
    .authorize = deny_authorize,
};

/* A device's MQTT credentials over HTTP (drv_api_probes.device_auth; API thread). */
static drv_err device_auth(void *ud, const char *username, const uint8_t *password, size_t len,
                           drv_telemetry_target *out)
{
    api_wiring *w = ud;
    const char *slash = strchr(username, '/');
    if (!slash || slash == username || !slash[1] || strchr(slash + 1, '/'))
        return DRV_AUTH;
    if (!w->http_auth) {
        drv_err e =
            drv_registry_auth_new(w->registry, w->jwt_audience, &deny_ops, NULL, &w->http_auth);
        if (e != DRV_OK) {
            drv_error("cannot open the registry for HTTP device authentication", "error",
                      drv_strerror(e));
            return e;
        }
    }
    /* The identity a device has on MQTT: its id as the client id. */
    drv_client_identity who = {.client_id = slash + 1, .username = username, .ns = ""};
    drv_auth_result res;
    memset(&res, 0, sizeof(res));
    drv_err e = drv_registry_auth_ops.authenticate(w->http_auth, &who, password, len, true, &res);
    if (res.ctx)
        drv_registry_auth_ops.ctx_release(w->http_auth, res.ctx);
    if (e != DRV_OK)
        return e == DRV_DENIED || e == DRV_AUTH ? e : DRV_AUTH;
    size_t tl = (size_t)(slash - username);
    if (tl >= sizeof(out->tenant) || strlen(slash + 1) >= sizeof(out->device))
        return DRV_AUTH;
    memcpy(out->tenant, username, tl);
    out->tenant[tl] = '\0';
    snprintf(out->device, sizeof(out->device), "%s", slash + 1);
    e = drv_registry_device_decoder(w->http_auth, out->tenant, out->device, out->decoder,
                                    sizeof(out->decoder));
    return e == DRV_NOTFOUND ? DRV_AUTH : e;
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

static void command_settled(void *ud, const char *tenant, const char *id)
{
    api_wiring *w = ud;
    pthread_mutex_lock(&w->settle_lock);
    if (w->http_up)
        drv_api_command_settled(w->api, tenant, id);
    pthread_mutex_unlock(&w->settle_lock);
}

static int provision_claim(void *ud, const char *tenant, const char *claim_ca, const char *claim_fp,
                           const uint8_t *payload, size_t len, json_t **answer)
{
    api_wiring *w = ud;
    return drv_provision_claim(w->claim_store, tenant, claim_ca, claim_fp, payload, len, answer);
}

/* The twin service: its own thread and twin.db, a handle for the API. */
static drv_err start_twin(api_wiring *w, const drv_settings *s)
{
    drv_twin_config tc = {
        .data_dir = s->data_dir,
        .shadow_max_bytes = (size_t)s->shadow_max_bytes,
        .shadow_history_days = (uint32_t)s->shadow_history_days,
        .max_pending =
            s->twin_max_pending > UINT32_MAX ? UINT32_MAX : (uint32_t)s->twin_max_pending,
        .retry_base_ms = (uint32_t)s->commands_retry_base_ms,
        .max_inflight = (uint32_t)s->commands_max_inflight,
        .cmd_max_pending = (uint32_t)s->commands_max_pending,
        .bus = live_wiring_bus(w->live),
        .on_settled = command_settled,
        .settled_ud = w,
        .provision = provision_claim,
        .provision_ud = w,
    };
    drv_err e = api_wiring_open_store(s, &w->claim_store);
    if (e != DRV_OK)
        return e;
    e = drv_twin_start(&tc, &w->twin);
    if (e != DRV_OK) {
        drv_error("cannot start the twin service", "dir", s->data_dir, "error", drv_strerror(e));
        return e;
    }
    drv_twin_store *st = NULL;
    e = drv_twin_open_store(w->twin, &st);
    if (e != DRV_OK) {
        drv_error("cannot open the twin store for the API", "error", drv_strerror(e));
        return e;
    }
    drv_api_set_twin(w->api, w->twin, st);
    return DRV_OK;
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
    pthread_mutex_init(&w->settle_lock, NULL);
    drv_store *store = NULL;
    registry_path(s, w->registry, sizeof(w->registry));
    snprintf(w->jwt_audience, sizeof(w->jwt_audience), "%s", s->mqtt_jwt_audience);
    /* The bus first: the pipeline and every registry handle feed it. */
    drv_err e = live_wiring_open(s, &w->live);
    if (e != DRV_OK)
        goto fail;
    e = telemetry_wiring_start(s, live_wiring_bus(w->live), &w->telemetry);
    if (e != DRV_OK)
        goto fail;
    e = api_wiring_open_store(s, &store);
    if (e != DRV_OK)
        goto fail;
    drv_api_config ac = {
        .store = store,
        .telemetry = telemetry_wiring_store(w->telemetry),
        .pipeline = telemetry_wiring_pipeline(w->telemetry),
        .probes = {.ud = w,
                   .broker_metrics = broker_metrics,
                   .broker_ready = broker_ready,
                   .disconnect_device = disconnect_device,
                   .device_auth = device_auth},
        .rate_limit_rps = (uint32_t)s->api_rate_limit_rps,
        .rate_limit_burst = (uint32_t)s->api_rate_limit_burst,
        .jwt_issuer = s->api_jwt_issuer,
        .jwt_ttl_s = s->api_jwt_ttl_s > UINT32_MAX ? UINT32_MAX : (uint32_t)s->api_jwt_ttl_s,
        .stream_resume_max_events = s->stream_resume_max_events > UINT32_MAX
                                        ? UINT32_MAX
                                        : (uint32_t)s->stream_resume_max_events,
    };
    e = drv_api_new(&ac, &w->api);
    if (e != DRV_OK) {
        drv_store_close(store);
        goto fail;
    }
    e = start_twin(w, s);
    if (e != DRV_OK)
        goto fail;
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
    e = live_wiring_start(w->live, w->api, s);
    if (e != DRV_OK)
        goto fail;
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
    pthread_mutex_lock(&w->settle_lock);
    w->http_up = true;
    pthread_mutex_unlock(&w->settle_lock);
    bc->http_adopt = adopt;
    bc->http_adopt_ud = w;
    /* Devices authenticate against the registry; everyone else as before. */
    char path[4096];
    registry_path(s, path, sizeof(path));
    e = drv_registry_auth_new(path, s->mqtt_jwt_audience, bc->auth_ops, bc->auth_state, &w->auth);
    if (e != DRV_OK) {
        drv_error("cannot open the registry for MQTT authentication", "error", drv_strerror(e));
        pthread_mutex_lock(&w->settle_lock);
        w->http_up = false;
        pthread_mutex_unlock(&w->settle_lock);
        drv_http_server_stop(w->http);
        goto fail;
    }
    bc->auth_ops = &drv_registry_auth_ops;
    bc->auth_state = w->auth;
    telemetry_wiring_attach(w->telemetry, w->auth, bc);
    telemetry_wiring_set_twin(w->telemetry, w->twin);
    *out = w;
    return DRV_OK;
fail:
    drv_twin_stop(w->twin);
    drv_store_close(w->claim_store);
    live_wiring_stop(w->live); /* before the API: the hub's filter checks use it */
    drv_api_free(w->api);
    telemetry_wiring_stop(w->telemetry);
    pthread_mutex_destroy(&w->settle_lock);
    drv_free(w);
    return e;
}

static uint32_t inject(void *ud, const drv_inject *m)
{
    return drv_broker_inject(ud, m);
}

void api_wiring_set_broker(api_wiring *w, drv_broker *b)
{
    if (!w)
        return;
    /* Set before the listeners start (no request has run yet); cleared
     * before the broker goes: the twin service publishes into it. */
    drv_twin_set_inject(w->twin, b ? inject : NULL, b);
    if (b)
        w->broker = b;
}

void api_wiring_stop(api_wiring *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->settle_lock);
    w->http_up = false;
    pthread_mutex_unlock(&w->settle_lock);
    drv_http_server_stop(w->http);
    if (w->http_auth) /* the API thread is gone: nobody uses it any more */
        drv_registry_auth_ops.free(w->http_auth);
    drv_registry_auth_ops.free(w->auth); /* joins the registry's event writer */
    drv_twin_stop(w->twin);              /* before the bus: it publishes events */
    drv_store_close(w->claim_store);     /* the twin service's */
    /* Every producer has stopped (broker, HTTP, event writer): the hub goes,
     * then the API its filter checks use. */
    live_wiring_stop(w->live);
    drv_api_free(w->api);
    telemetry_wiring_stop(w->telemetry); /* last: a final flush of the engine */
    pthread_mutex_destroy(&w->settle_lock);
    drv_free(w);
}
