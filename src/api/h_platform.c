/*
 * h_platform.c — the platform admin's own tokens and audit log.
 *
 * Platform tokens (tenant NULL, role platform_admin) are made on first start
 * and by `drover token create --platform`; here a platform admin lists them
 * (metadata only), makes another (the secret shown once, as for tenant
 * tokens in h_tokens.c) and revokes one.  Revoking the very token making the
 * request is refused (409 self-revocation): an admin should not lock
 * themselves out by a slip; revoke it with another platform token.  Nothing
 * stops revoking every other one, and the CLI recovers access for whoever
 * holds the data directory.
 *
 * The platform audit log is what happens outside any tenant: tenants made
 * and deleted, platform tokens made and revoked, signing keys rotated.
 * Every action here is audited there (tenant NULL: x->scope.tenant is never
 * set on these routes, which have no {tenant}).
 */
#include <stdint.h>
#include <string.h>

#include "api/api_int.h"

#define TOKENS_PATH "/api/v1/tokens"

void api_platform_tokens_list(api_ctx *x)
{
    drv_page pg;
    char cursor[256];
    if (!api_page(x, &pg, cursor, sizeof(cursor)))
        return;
    json_t *out = NULL;
    drv_store *st = x->api->store;
    drv_err e = st->ops->platform_token_list(st, &pg, &out);
    if (e != DRV_OK)
        api_store_error(x, e, "token");
    else
        api_json(x, 200, out);
}

void api_platform_tokens_create(api_ctx *x)
{
    static const char *const fields[] = {"name", "scopes", "expires_at", NULL};
    json_t *doc;
    if (!api_body(x, &doc))
        return;
    if (!api_check_fields(x, doc, fields) || !api_check_string(x, doc, "name", 200, true) ||
        !api_check_scopes(x, doc, "token", false))
        goto out;
    json_t *exp = json_object_get(doc, "expires_at");
    int64_t exp_ms = 0;
    if (exp && (!json_is_string(exp) || !drv_store_parse_time(json_string_value(exp), &exp_ms) ||
                exp_ms <= drv_store_now_ms())) {
        api_problem(x, 400, "invalid", "\"expires_at\" must be an RFC 3339 time in the future");
        goto out;
    }
    /* Only a platform token's role is platform_admin, and it is the only one it
     * can have (the store checks both). */
    if (json_object_set_new(doc, "role", json_string("platform_admin")) != 0) {
        api_problem(x, 500, NULL, "out of memory");
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
    drv_err e = st->ops->token_create(st, NULL, doc, h, &meta);
    if (e != DRV_OK) {
        api_store_error(x, e, "token");
        goto out;
    }
    char target[256];
    snprintf(target, sizeof(target), TOKENS_PATH "/%s",
             json_string_value(json_object_get(meta, "id")));
    api_audit(x, "token.create", target, NULL);
    json_object_set_new(meta, "token", json_string(secret));
    memset(secret, 0, sizeof(secret));
    drv_http_add_header(x->resp, "Cache-Control", "no-store");
    drv_http_add_header(x->resp, "Location", "%s", target);
    api_json(x, 201, meta);
out:
    json_decref(doc);
}

void api_platform_tokens_revoke(api_ctx *x)
{
    const char *id = api_param(x, 0);
    if (strcmp(id, x->tok.id) == 0) {
        api_problem(x, 409, "self-revocation",
                    "this is the token making the request; revoke it with another platform token");
        return;
    }
    drv_store *st = x->api->store;
    drv_err e = st->ops->platform_token_revoke(st, id);
    if (e != DRV_OK) {
        api_store_error(x, e, "token");
        return;
    }
    char target[256];
    snprintf(target, sizeof(target), TOKENS_PATH "/%s", id);
    api_audit(x, "token.revoke", target, NULL);
    x->resp->status = 204;
}

void api_platform_audit_list(api_ctx *x)
{
    int64_t from, to;
    drv_page pg;
    char cursor[256];
    if (!api_time_param(x, "from", 0, &from) || !api_time_param(x, "to", INT64_MAX, &to) ||
        !api_page(x, &pg, cursor, sizeof(cursor)))
        return;
    drv_store *st = x->api->store;
    json_t *out = NULL;
    drv_err e = st->ops->platform_audit_list(st, from, to, &pg, &out);
    if (e != DRV_OK)
        api_store_error(x, e, "audit record");
    else
        api_json(x, 200, out);
}
