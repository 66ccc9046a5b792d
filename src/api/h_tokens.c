/*
 * h_tokens.c — tenant API tokens: created with a role no higher than the
 * creator's, shown once, stored as a SHA-256, revocable, optionally
 * expiring and narrowed by scopes.
 */
#include <string.h>

#include "api/api_int.h"

void api_tokens_create(api_ctx *x)
{
    static const char *const fields[] = {"name", "role", "scopes", "expires_at", NULL};
    json_t *doc;
    if (!api_body(x, &doc))
        return;
    if (!api_check_fields(x, doc, fields) || !api_check_string(x, doc, "name", 200, true) ||
        !api_check_string(x, doc, "role", 32, true) || !api_check_grant(x, doc, "token", false))
        goto out;
    json_t *exp = json_object_get(doc, "expires_at");
    int64_t exp_ms = 0;
    if (exp && (!json_is_string(exp) || !drv_store_parse_time(json_string_value(exp), &exp_ms) ||
                exp_ms <= drv_store_now_ms())) {
        api_problem(x, 400, "invalid", "\"expires_at\" must be an RFC 3339 time in the future");
        goto out;
    }
    char secret[64];
    if (!api_random_secret("drv_", 20, secret, sizeof(secret))) {
        api_problem(x, 500, NULL, "no randomness available");
        goto out;
    }
    uint8_t h[32];
    api_sha256(secret, strlen(secret), h);
    drv_store *st = x->api->store;
    json_t *meta = NULL;
    drv_err e = st->ops->token_create(st, x->scope.tenant, doc, h, &meta);
    if (e != DRV_OK) {
        api_store_error(x, e, "token");
        goto out;
    }
    char target[256];
    snprintf(target, sizeof(target), "/api/v1/tenants/%s/tokens/%s", x->scope.tenant,
             json_string_value(json_object_get(meta, "id")));
    api_audit(x, "token.create", target, NULL);
    json_object_set_new(meta, "token", json_string(secret));
    drv_http_add_header(x->resp, "Cache-Control", "no-store");
    drv_http_add_header(x->resp, "Location", "%s", target);
    api_json(x, 201, meta);
out:
    json_decref(doc);
}

void api_tokens_list(api_ctx *x)
{
    drv_page pg;
    char cursor[256];
    if (!api_page(x, &pg, cursor, sizeof(cursor)))
        return;
    json_t *out = NULL;
    drv_store *st = x->api->store;
    drv_err e = st->ops->token_list(st, &x->scope, &pg, &out);
    if (e != DRV_OK)
        api_store_error(x, e, "token");
    else
        api_json(x, 200, out);
}

void api_tokens_revoke(api_ctx *x)
{
    drv_store *st = x->api->store;
    drv_err e = st->ops->token_revoke(st, &x->scope, api_param(x, 1));
    if (e != DRV_OK) {
        api_store_error(x, e, "token");
        return;
    }
    char target[256];
    snprintf(target, sizeof(target), "/api/v1/tenants/%s/tokens/%s", x->scope.tenant,
             api_param(x, 1));
    api_audit(x, "token.revoke", target, NULL);
    x->resp->status = 204;
}
