/*
 * api.h — the REST API (`/api/v1`), health endpoints and Prometheus metrics,
 * served by the HTTP server (src/http) on its API thread.
 *
 * Every route is declared once in routes.def: method, path pattern, the
 * least role that may call it, and its handler.  `drover routes` prints the
 * table, and the test suite compares it with docs/openapi.yaml, the
 * contract.  Requests are authenticated with bearer API tokens or OAuth
 * access tokens (ES256 JWTs from POST /oauth/token, ADR-0010); a route
 * under /api/v1/tenants/{tenant} is only reachable with a token of that
 * tenant (or the platform admin's) — checked in one place, the router,
 * before any handler runs.  A token with scopes is further held to the
 * scope each route needs (scopes.def); one without scopes is held to its
 * role alone.  Errors are application/problem+json (RFC 9457).
 *
 * Threading: drv_api_handle runs on the HTTP server's thread only; the
 * store handle it owns is used from that thread alone.
 */
#ifndef DRV_API_API_H
#define DRV_API_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/err.h"
#include "http/http.h"
#include "registry/store.h"
#include "tsdb/tsdb.h"

typedef struct drv_api drv_api;

/* A device that authenticated with its own credentials (HTTP telemetry ingest). */
typedef struct drv_telemetry_target {
    char tenant[129]; /* its tenant */
    char device[129]; /* its id */
    char decoder[17]; /* its profile's payload decoder ("json" without a profile) */
} drv_telemetry_target;

/* Numbers the API reports that belong to other parts of the server
 * (/metrics, /readyz); each callback may be NULL. */
typedef struct drv_api_probes {
    void *ud;
    /* Append Prometheus text lines for the broker. */
    void (*broker_metrics)(void *ud, drv_buf *out);
    /* True when the broker accepts connections. */
    bool (*broker_ready)(void *ud);
    /* Close the live MQTT session of a device (decommissioning); any thread. */
    void (*disconnect_device)(void *ud, const char *tenant, const char *device);
    /*
     * Check a device's MQTT credentials, as the broker would at CONNECT:
     * username "<tenant>/<device>", password (len bytes) a secret or a JWT
     * the device signed.  DRV_OK: *out says who it is; DRV_AUTH: wrong
     * credentials; DRV_DENIED: right ones, but the device may not connect
     * (its tenant is suspended); other errors: the registry failed.  Called
     * on the API thread only; may take ~20 ms (Argon2) for a secret it has
     * not verified before.  NULL: HTTP ingest takes tenant tokens only.
     */
    drv_err (*device_auth)(void *ud, const char *username, const uint8_t *password, size_t len,
                           drv_telemetry_target *out);
} drv_api_probes;

typedef struct drv_api_config {
    drv_store *store; /* taken: freed by drv_api_free */
    /* Telemetry (borrowed; NULL: the telemetry routes answer 503): queries go
     * to the store, HTTP ingest and imports through the pipeline. */
    drv_ts_store *telemetry;
    struct drv_pipeline *pipeline;
    drv_api_probes probes;
    uint32_t rate_limit_rps;           /* per token; 0: no limit */
    uint32_t rate_limit_burst;         /* bucket size; 0: 2 x rps */
    const char *jwt_issuer;            /* "iss" of OAuth access tokens; NULL: "drover" (copied) */
    uint32_t jwt_ttl_s;                /* their lifetime in seconds; 0: 900 */
    uint32_t stream_resume_max_events; /* most events an SSE resume replays; 0: 100000 */
} drv_api_config;

drv_err drv_api_new(const drv_api_config *cfg, drv_api **out);
void drv_api_free(drv_api *a);
/* The HTTP server whose counters /metrics reports (set once, before serving). */
void drv_api_set_http(drv_api *a, drv_http_server *http);

/* The live hub the stream routes hand connections to, and a registry handle
 * (taken: freed by drv_api_free) for the hub thread's filter checks.  Set
 * once, before serving. */
struct drv_hub;
void drv_api_set_hub(drv_api *a, struct drv_hub *hub, drv_store *hub_reader);

/* The twin service (shadows, commands) and a twin store handle for the API
 * thread (taken: closed by drv_api_free).  Set once, before serving. */
struct drv_twin;
struct drv_twin_store;
void drv_api_set_twin(drv_api *a, struct drv_twin *twin, struct drv_twin_store *st);
/* The twin service's on_settled (pass the drv_api as ud): a command
 * finished; synchronous waits for it are answered.  Any thread. */
void drv_api_command_settled(void *ud, const char *tenant, const char *id);

/* The hub's drv_hub_filter_fn (pass the drv_api as ud): checks a WebSocket
 * subscribe message as the SSE route checks its query. */
struct drv_hub_who;
struct drv_hub_filter;
struct drv_hub_refusal;
drv_err drv_api_stream_filter(void *ud, const struct drv_hub_who *who, const char *json, size_t n,
                              struct drv_hub_filter *f, struct drv_hub_refusal *why);

/* The hub's drv_hub_resolve_fn (pass the drv_api as ud): a group's or a
 * tag's devices now, from the hub's registry handle. */
drv_err drv_api_stream_resolve(void *ud, struct drv_hub_filter *f);

/* The hub's drv_hub_revalidate_fn (pass the drv_api as ud). */
bool drv_api_stream_revalidate(void *ud, const struct drv_hub_who *who);

/* The drv_http_handler: pass the drv_api as ud. */
void drv_api_handle(void *ud, const drv_http_request *req, drv_http_response *resp);

/*
 * First start: when the store holds no platform token, create a platform
 * admin token and write it to token_out (cap >= 64).  DRV_EXISTS when one
 * exists already (nothing is printed again: the secret is never stored).
 */
drv_err drv_api_bootstrap(drv_api *a, char *token_out, size_t cap);

/* Create a platform admin token directly in the store (`drover token
 * create --platform`, for recovery by whoever holds the data directory). */
drv_err drv_api_create_platform_token(drv_store *st, const char *name, char *token_out, size_t cap);

/* Print "METHOD PATH ROLE SCOPE" for every route, one per line (SCOPE "none"
 * when the route needs none, "?" when scopes.def does not list it). */
void drv_api_print_routes(FILE *f);

#endif
