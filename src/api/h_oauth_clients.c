/*
 * h_oauth_clients.c — a tenant's OAuth 2.0 clients (ADR-0010): machine
 * identities that trade their client_id and secret for short-lived access
 * tokens at POST /oauth/token (the client credentials grant).
 *
 * Managed like API tokens (h_tokens.c): created by a tenant admin with a role
 * no higher than the creator's, the secret generated here (256 random bits)
 * and shown once, only its SHA-256 stored, revocable — which also ends the
 * access tokens already issued to the client, on their next request.
 * Scopes are the words a client may ask for; a token carries the ones it got.
 */
#include <string.h>

#include "api/api_int.h"

void api_oauth_clients_create(api_ctx *x)
{
    static const char *const fields[] = {"name", "role", "scopes", NULL};
    json_t *doc;
    if (!api_body(x, &doc))
        return;
    if (!api_check_fields(x, doc, fields) || !api_check_string(x, doc, "name", 200, true) ||
        !api_check_string(x, doc, "role", 32, true) || !api_check_grant(x, doc, "client", true))
        goto out;
    char secret[80];
    if (!api_random_secret("drvcs_", 32, secret, sizeof(secret))) {
        api_problem(x, 500, NULL, "no randomness available");
        goto out;
    }
    uint8_t h[32];
    api_sha256(secret, strlen(secret), h);
    drv_store *st = x->api->store;
    json_t *meta = NULL;
    drv_err e = st->ops->oauth_client_create(st, &x->scope, doc, h, &meta);
    if (e != DRV_OK) {
        api_store_error(x, e, "OAuth client");
        goto out;
    }
    char target[256];
    snprintf(target, sizeof(target), "/api/v1/tenants/%s/oauth-clients/%s", x->scope.tenant,
             json_string_value(json_object_get(meta, "client_id")));
    api_audit(x, "oauth_client.create", target, NULL);
    json_object_set_new(meta, "client_secret", json_string(secret));
    memset(secret, 0, sizeof(secret));
    drv_http_add_header(x->resp, "Cache-Control", "no-store");
    drv_http_add_header(x->resp, "Location", "%s", target);
    api_json(x, 201, meta);
out:
    json_decref(doc);
}

void api_oauth_clients_list(api_ctx *x)
{
    drv_page pg;
    char cursor[256];
    if (!api_page(x, &pg, cursor, sizeof(cursor)))
        return;
    json_t *out = NULL;
    drv_store *st = x->api->store;
    drv_err e = st->ops->oauth_client_list(st, &x->scope, &pg, &out);
    if (e != DRV_OK)
        api_store_error(x, e, "OAuth client");
    else
        api_json(x, 200, out);
}

void api_oauth_clients_revoke(api_ctx *x)
{
    drv_store *st = x->api->store;
    drv_err e = st->ops->oauth_client_revoke(st, &x->scope, api_param(x, 1));
    if (e != DRV_OK) {
        api_store_error(x, e, "OAuth client");
        return;
    }
    char target[256];
    snprintf(target, sizeof(target), "/api/v1/tenants/%s/oauth-clients/%s", x->scope.tenant,
             api_param(x, 1));
    api_audit(x, "oauth_client.revoke", target, NULL);
    x->resp->status = 204;
}
