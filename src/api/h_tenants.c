/*
 * h_tenants.c — tenants, the platform admin's resource.
 *
 * A tenant document: {"id", "name", "status": "active"|"suspended",
 * "quotas": {"devices", "connections", "messages_per_second",
 * "storage_bytes"}, "allow_zero_touch", "telemetry_retention_days"} plus the
 * store's bookkeeping fields.  The retention (days, 0 or absent: forever) is
 * handed to the telemetry store on every change and at start
 * (api_apply_retention), with quotas.storage_bytes (the telemetry's bytes on
 * disk).
 * A quota of 0 or absent means unlimited.  Deleting marks the tenant
 * deleted; its id is never given to another tenant.
 */
#include <string.h>

#include "api/api_int.h"

static const char *const quota_names[] = {"devices", "connections", "messages_per_second",
                                          "storage_bytes", NULL};

static bool check_tenant(api_ctx *x, json_t *doc, bool creating)
{
    static const char *const create_fields[] = {
        "id", "name", "quotas", "allow_zero_touch", "telemetry_retention_days", NULL};
    static const char *const update_fields[] = {
        "name", "quotas", "allow_zero_touch", "status", "telemetry_retention_days", NULL};
    if (!api_check_fields(x, doc, creating ? create_fields : update_fields) ||
        !api_check_string(x, doc, "name", 200, creating))
        return false;
    json_t *id = json_object_get(doc, "id");
    if (id) {
        const char *s = json_string_value(id);
        size_t n = s ? strlen(s) : 0;
        bool ok = n >= 3 && n <= 63;
        for (size_t i = 0; ok && i < n; i++)
            ok = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-';
        if (!ok) {
            api_problem(x, 400, "invalid", "\"id\" must be 3 to 63 characters of a-z, 0-9 and -");
            return false;
        }
    }
    json_t *q = json_object_get(doc, "quotas");
    if (q) {
        if (!json_is_object(q) || !api_check_fields(x, q, quota_names))
            goto bad_quota;
        const char *k;
        json_t *v;
        json_object_foreach(q, k, v)
        {
            if (!json_is_integer(v) || json_integer_value(v) < 0)
                goto bad_quota;
        }
    }
    json_t *z = json_object_get(doc, "allow_zero_touch");
    if (z && !json_is_boolean(z)) {
        api_problem(x, 400, "invalid", "\"allow_zero_touch\" must be true or false");
        return false;
    }
    json_t *r = json_object_get(doc, "telemetry_retention_days");
    if (r && (!json_is_integer(r) || json_integer_value(r) < 0 || json_integer_value(r) > 36500)) {
        api_problem(x, 400, "invalid",
                    "\"telemetry_retention_days\" must be an integer from 0 (forever) to 36500");
        return false;
    }
    json_t *st = json_object_get(doc, "status");
    if (st && (!json_is_string(st) || (strcmp(json_string_value(st), "active") != 0 &&
                                       strcmp(json_string_value(st), "suspended") != 0))) {
        api_problem(x, 400, "invalid", "\"status\" must be \"active\" or \"suspended\"");
        return false;
    }
    return true;
bad_quota:
    if (x->resp->status < 400)
        api_problem(x, 400, "invalid",
                    "\"quotas\" holds non-negative integers: devices, connections, "
                    "messages_per_second, storage_bytes (0: unlimited)");
    return false;
}

/* Tell the telemetry store how long this tenant's samples are kept and how
 * many bytes they may take (quotas.storage_bytes). */
static void apply_retention(drv_api *a, json_t *tenant)
{
    drv_ts_store *ts = a->cfg.telemetry;
    const char *id = json_string_value(json_object_get(tenant, "id"));
    json_t *quotas = json_object_get(tenant, "quotas");
    drv_ts_tenant_limits lim = {
        .retention_days =
            (uint32_t)json_integer_value(json_object_get(tenant, "telemetry_retention_days")),
        .max_bytes = (uint64_t)json_integer_value(json_object_get(quotas, "storage_bytes")),
    };
    if (ts && id)
        ts->ops->set_tenant_limits(ts->st, id, &lim);
}

drv_err api_apply_retention(drv_api *a)
{
    if (!a->cfg.telemetry)
        return DRV_OK;
    char cursor[256] = "";
    for (;;) {
        drv_page pg = {.cursor = cursor[0] ? cursor : NULL, .limit = 1000};
        json_t *page = NULL;
        drv_err e = a->store->ops->platform_tenant_list(a->store, &pg, &page);
        if (e != DRV_OK)
            return e;
        json_t *t;
        size_t i;
        json_array_foreach(json_object_get(page, "items"), i, t)
        {
            apply_retention(a, t);
        }
        const char *next = json_string_value(json_object_get(page, "next_cursor"));
        if (next)
            snprintf(cursor, sizeof(cursor), "%s", next);
        json_decref(page);
        if (!next)
            return DRV_OK;
    }
}

static void created(api_ctx *x, const char *location, json_t *doc)
{
    drv_http_add_header(x->resp, "Location", "%s", location);
    api_etag(x, doc);
    api_json(x, 201, doc);
}

void api_tenants_create(api_ctx *x)
{
    json_t *doc;
    if (!api_body(x, &doc))
        return;
    if (check_tenant(x, doc, true)) {
        json_t *out = NULL;
        drv_store *st = x->api->store;
        drv_err e = st->ops->platform_tenant_create(st, doc, &out);
        if (e != DRV_OK) {
            api_store_error(x, e, "tenant");
        } else {
            const char *id = json_string_value(json_object_get(out, "id"));
            char loc[256];
            snprintf(loc, sizeof(loc), "/api/v1/tenants/%s", id);
            api_audit(x, "tenant.create", loc, NULL);
            apply_retention(x->api, out);
            created(x, loc, out);
        }
    }
    json_decref(doc);
}

void api_tenants_list(api_ctx *x)
{
    drv_page pg;
    char cursor[256];
    if (!api_page(x, &pg, cursor, sizeof(cursor)))
        return;
    json_t *out = NULL;
    drv_store *st = x->api->store;
    drv_err e = st->ops->platform_tenant_list(st, &pg, &out);
    if (e != DRV_OK)
        api_store_error(x, e, "tenant");
    else
        api_json(x, 200, out);
}

void api_tenants_get(api_ctx *x)
{
    json_t *out = NULL;
    drv_store *st = x->api->store;
    drv_err e = st->ops->platform_tenant_get(st, x->tenant, &out);
    if (e != DRV_OK) {
        api_store_error(x, e, "tenant");
        return;
    }
    if (api_not_modified(x, out)) {
        json_decref(out);
        return;
    }
    api_etag(x, out);
    api_json(x, 200, out);
}

void api_tenants_patch(api_ctx *x)
{
    int64_t expected;
    json_t *patch;
    if (!api_if_match(x, &expected) || !api_body(x, &patch))
        return;
    drv_store *st = x->api->store;
    json_t *cur = NULL, *out = NULL;
    drv_err e = st->ops->platform_tenant_get(st, x->tenant, &cur);
    if (e != DRV_OK) {
        api_store_error(x, e, "tenant");
        goto out;
    }
    if (!check_tenant(x, patch, false))
        goto out;
    /* Patch only the mutable part, then validate the result as a whole. */
    json_t *doc = json_object();
    static const char *const mutable_fields[] = {"name", "quotas", "allow_zero_touch", "status",
                                                 "telemetry_retention_days"};
    for (size_t i = 0; i < 5; i++) {
        json_t *v = json_object_get(cur, mutable_fields[i]);
        if (v)
            json_object_set(doc, mutable_fields[i], v);
    }
    api_merge_patch(doc, patch);
    if (check_tenant(x, doc, false)) {
        e = st->ops->platform_tenant_update(st, x->tenant, doc, expected, &out);
        if (e != DRV_OK) {
            api_store_error(x, e, "tenant");
        } else {
            char target[256];
            snprintf(target, sizeof(target), "/api/v1/tenants/%s", x->tenant);
            api_audit(x, "tenant.update", target, patch);
            apply_retention(x->api, out);
            api_etag(x, out);
            api_json(x, 200, out);
        }
    }
    json_decref(doc);
out:
    json_decref(cur);
    json_decref(patch);
}

void api_tenants_delete(api_ctx *x)
{
    drv_store *st = x->api->store;
    drv_err e = st->ops->platform_tenant_delete(st, x->tenant);
    if (e != DRV_OK) {
        api_store_error(x, e, "tenant");
        return;
    }
    char target[256];
    snprintf(target, sizeof(target), "/api/v1/tenants/%s", x->tenant);
    /* A platform action, in the platform log (GET /api/v1/audit): the deleted
     * tenant's own log can no longer be read. */
    x->scope.tenant = NULL;
    api_audit(x, "tenant.delete", target, NULL);
    x->resp->status = 204;
}
