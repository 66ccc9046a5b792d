/*
 * h_devices.c — the device registry: devices as documents, their
 * provisioning and decommissioning, and their connection history.
 *
 * A device document: {"id", "name", "profile", "tags": {k: v},
 * "attributes": {k: v}, "groups": [ids]} written by clients, plus
 * "status" ("active" | "decommissioned") and "connectivity" ({"online",
 * "last_seen", ...}, kept by the store from connect/disconnect events),
 * which clients read only.  "profile", when present, names a profile of the
 * tenant (h_profiles.c) and "groups" static groups of it (h_groups.c); the
 * profile or group cannot be deleted while a device names it, so the
 * references stay good.  The same validator serves bulk imports
 * (h_device_imports.c, through h_devices.h).
 */
#include <string.h>

#include "api/api_docs.h"
#include "api/h_devices.h"
#include "twin/twin.h"
#include "core/log.h"

/*
 * A reference to another document of the tenant: true when it exists (*doc,
 * when doc is not NULL, gets it).  False when it does not, or its id is not
 * one (the caller answers 400), or when the registry failed (answered here:
 * the caller sees api_failed).
 */
static bool ref_exists(api_ctx *x, const char *kind, const char *id, json_t **doc)
{
    drv_store *st = x->api->store;
    json_t *d = NULL;
    drv_err e = st->ops->doc_get(st, &x->scope, kind, id, &d);
    if (e != DRV_OK && e != DRV_NOTFOUND && e != DRV_INVAL)
        api_store_error(x, e, kind);
    if (doc)
        *doc = d;
    else
        json_decref(d);
    return e == DRV_OK;
}

/* "groups": distinct ids of static groups that exist.  Dynamic groups
 * choose their members by query; listing one here would be a second,
 * contradicting answer to "who is in it". */
static bool check_groups(api_ctx *x, json_t *g)
{
    bool ok = json_is_array(g) && json_array_size(g) <= 64;
    size_t i;
    json_t *v;
    json_array_foreach(g, i, v) ok =
        ok && json_is_string(v) && json_string_length(v) >= 1 && json_string_length(v) <= 128;
    if (!ok) {
        api_problem(x, 400, "invalid", "\"groups\" must be a list of up to 64 group ids");
        return false;
    }
    json_array_foreach(g, i, v)
    {
        const char *id = json_string_value(v);
        for (size_t k = 0; k < i; k++) {
            if (strcmp(id, json_string_value(json_array_get(g, k))) == 0) {
                api_problem(x, 400, "invalid", "\"groups\" lists \"%s\" twice", id);
                return false;
            }
        }
        json_t *grp = NULL;
        if (!ref_exists(x, DRV_KIND_GROUP, id, &grp)) {
            if (!api_failed(x))
                api_problem(x, 400, "invalid",
                            "\"groups\": there is no group \"%s\" in this tenant", id);
            return false;
        }
        const char *kind = json_string_value(json_object_get(grp, "kind"));
        bool is_static = kind && strcmp(kind, "static") == 0;
        json_decref(grp);
        if (!is_static) {
            api_problem(x, 400, "invalid",
                        "\"groups\": \"%s\" is a dynamic group; its query chooses its members", id);
            return false;
        }
    }
    return true;
}

static bool check_device(api_ctx *x, json_t *doc, bool creating)
{
    if (!api_check_string(x, doc, "name", 200, false) ||
        !api_check_string(x, doc, "profile", 128, false) || !api_check_string_map(x, doc, "tags") ||
        !api_check_string_map(x, doc, "attributes"))
        return false;
    const char *profile = json_string_value(json_object_get(doc, "profile"));
    if (profile && !ref_exists(x, DRV_KIND_PROFILE, profile, NULL)) {
        if (!api_failed(x))
            api_problem(x, 400, "invalid", "\"profile\": there is no profile \"%s\" in this tenant",
                        profile);
        return false;
    }
    json_t *g = json_object_get(doc, "groups");
    return !g || check_groups(x, g);
}

bool api_device_quota(api_ctx *x, int64_t *quota, int64_t *used)
{
    drv_store *st = x->api->store;
    json_t *tenant = NULL;
    *quota = *used = 0;
    if (st->ops->platform_tenant_get(st, x->scope.tenant, &tenant) != DRV_OK) {
        api_problem(x, 404, NULL, "no such tenant");
        return false;
    }
    *quota = json_integer_value(json_object_get(json_object_get(tenant, "quotas"), "devices"));
    json_decref(tenant);
    drv_err e = *quota > 0 ? st->ops->doc_count(st, &x->scope, DRV_KIND_DEVICE, used) : DRV_OK;
    if (e != DRV_OK) {
        api_store_error(x, e, "device");
        return false;
    }
    return true;
}

/* The tenant's device quota, checked before a device is added. */
static bool before_create(api_ctx *x, json_t *doc)
{
    int64_t quota, n;
    if (!api_device_quota(x, &quota, &n))
        return false;
    if (quota > 0 && n >= quota) {
        api_problem(x, 403, "quota-exceeded",
                    "the tenant's device quota (%lld) is reached; decommission a device with "
                    "purge or raise the quota",
                    (long long)quota);
        return false;
    }
    json_object_set_new(doc, "status", json_string("active"));
    return true;
}

/* The device's history starts with its provisioning. */
static void after_create(api_ctx *x, json_t *stored)
{
    drv_store *st = x->api->store;
    const char *id = json_string_value(json_object_get(stored, "id"));
    drv_err e = st->ops->event_append(st, &x->scope, id, "provisioned", drv_store_now_ms(), NULL);
    if (e != DRV_OK)
        drv_warn("cannot record a device event", "device", id, "error", drv_strerror(e));
}

static const char *const device_fields[] = {"id",         "name",   "profile", "tags",
                                            "attributes", "groups", NULL};
static const doc_kind devices = {
    .kind = DRV_KIND_DEVICE,
    .what = "device",
    .collection = "devices",
    .check = check_device,
    .writable = device_fields,
    .before_create = before_create,
    .after_create = after_create,
};

bool api_device_check_new(api_ctx *x, json_t *doc)
{
    return api_check_fields(x, doc, device_fields) && check_device(x, doc, true);
}

bool api_sort_param(api_ctx *x, char *buf, size_t cap, const char **sort)
{
    static const char *const keys[] = {"id", "name", "created_at", "updated_at"};
    *sort = NULL;
    if (!api_query(x, "sort", buf, cap))
        return !api_failed(x);
    const char *k = buf + (buf[0] == '-');
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (strcmp(k, keys[i]) == 0) {
            *sort = buf;
            return true;
        }
    }
    api_problem(x, 400, "invalid",
                "sort must be id, name, created_at or updated_at, with a leading '-' for "
                "descending order");
    return false;
}

void api_devices_create(api_ctx *x)
{
    doc_create(x, &devices);
}

void api_devices_list(api_ctx *x)
{
    drv_doc_filter f = {0};
    char tag[300], attr[1200], name[200], status[64], eq[80];
    if (api_query(x, "tag", tag, sizeof(tag)) && tag[0])
        f.tag = tag;
    if (api_query(x, "attribute", attr, sizeof(attr)) && attr[0])
        f.attr = attr;
    if (api_query(x, "name_prefix", name, sizeof(name)) && name[0])
        f.name_prefix = name;
    if (api_query(x, "status", status, sizeof(status)) && status[0]) {
        snprintf(eq, sizeof(eq), "status=%s", status);
        f.field_eq = eq;
    }
    char sort[16];
    if (api_failed(x) || !api_sort_param(x, sort, sizeof(sort), &f.sort))
        return;
    doc_list(x, &devices, &f);
}

void api_devices_get(api_ctx *x)
{
    doc_get(x, &devices, api_param(x, 1));
}

void api_devices_patch(api_ctx *x)
{
    doc_patch(x, &devices, api_param(x, 1));
}

/*
 * Decommission: revoke every credential, close the live session, record the
 * event, then either keep the record (status "decommissioned") or purge it.
 * The id stays reserved either way.  Repeating it is harmless.
 */
void api_devices_decommission(api_ctx *x)
{
    const char *id = api_param(x, 1);
    bool purge = false;
    if (x->req->body.n > 0) {
        json_t *body;
        if (!api_body(x, &body))
            return;
        static const char *const fields[] = {"purge", NULL};
        json_t *p = json_object_get(body, "purge");
        bool ok = api_check_fields(x, body, fields);
        if (ok && p && !json_is_boolean(p)) {
            api_problem(x, 400, "invalid", "\"purge\" must be true or false");
            ok = false;
        }
        purge = json_is_true(p);
        json_decref(body);
        if (!ok)
            return;
    }
    drv_store *st = x->api->store;
    json_t *cur = NULL, *stored = NULL;
    drv_err e = st->ops->doc_get(st, &x->scope, DRV_KIND_DEVICE, id, &cur);
    if (e != DRV_OK) {
        api_store_error(x, e, "device");
        return;
    }
    e = st->ops->credential_revoke_all(st, &x->scope, id);
    if (e == DRV_OK) {
        const drv_api_probes *pr = &x->api->cfg.probes;
        if (pr->disconnect_device)
            pr->disconnect_device(pr->ud, x->scope.tenant, id);
        /* Its unfinished commands could never be delivered: cancelled now,
         * so waiters and batches see the end (docs/commands.md). */
        uint32_t cancelled = 0;
        if (!purge && x->api->twin) {
            char actor[80];
            drv_twin_actor who;
            api_twin_actor(x, actor, sizeof(actor), &who);
            drv_twin_api_cancel_device(x->api->twin, x->api->twin_store, x->scope.tenant, id, &who,
                                       &cancelled);
        }
        json_t *detail = json_pack("{s:b}", "purge", purge);
        if (cancelled)
            json_object_set_new(detail, "commands_cancelled", json_integer(cancelled));
        st->ops->event_append(st, &x->scope, id, "decommissioned", drv_store_now_ms(), detail);
        json_decref(detail);
        if (purge) {
            /* The device's telemetry goes with it (ADR-0013, purge). */
            drv_ts_store *ts = x->api->cfg.telemetry;
            e = ts ? ts->ops->drop_device(ts->st, x->scope.tenant, id) : DRV_OK;
            /* ... and so do its shadows and commands (ADR-0017). */
            if (e == DRV_OK && x->api->twin)
                e = drv_twin_api_purge_device(x->api->twin, x->api->twin_store, x->scope.tenant,
                                              id);
            if (e == DRV_OK)
                e = st->ops->doc_delete(st, &x->scope, DRV_KIND_DEVICE, id);
        } else {
            json_object_set_new(cur, "status", json_string("decommissioned"));
            e = st->ops->doc_replace(st, &x->scope, DRV_KIND_DEVICE, id, cur, 0, &stored);
        }
    }
    if (e != DRV_OK) {
        api_store_error(x, e, "device");
        goto out;
    }
    char path[400];
    json_t *d = json_pack("{s:b}", "purge", purge);
    api_audit(x, "device.decommission", doc_path(x, &devices, id, path, sizeof(path)), d);
    json_decref(d);
    if (purge) {
        x->resp->status = 204;
    } else {
        api_etag(x, stored);
        api_json(x, 200, stored);
        stored = NULL;
    }
out:
    json_decref(cur);
    json_decref(stored);
}

void api_devices_events(api_ctx *x)
{
    int64_t from, to;
    drv_page pg;
    char cursor[256];
    if (!api_time_param(x, "from", 0, &from) || !api_time_param(x, "to", INT64_MAX, &to) ||
        !api_page(x, &pg, cursor, sizeof(cursor)))
        return;
    drv_store *st = x->api->store;
    json_t *dev = NULL, *out = NULL;
    drv_err e = st->ops->doc_get(st, &x->scope, DRV_KIND_DEVICE, api_param(x, 1), &dev);
    json_decref(dev);
    if (e == DRV_OK)
        e = st->ops->event_list(st, &x->scope, api_param(x, 1), from, to, &pg, &out);
    if (e != DRV_OK)
        api_store_error(x, e, "device");
    else
        api_json(x, 200, out);
}

void api_audit_list(api_ctx *x)
{
    int64_t from, to;
    drv_page pg;
    char cursor[256];
    if (!api_time_param(x, "from", 0, &from) || !api_time_param(x, "to", INT64_MAX, &to) ||
        !api_page(x, &pg, cursor, sizeof(cursor)))
        return;
    drv_store *st = x->api->store;
    json_t *out = NULL;
    drv_err e = st->ops->audit_list(st, &x->scope, from, to, &pg, &out);
    if (e != DRV_OK)
        api_store_error(x, e, "audit record");
    else
        api_json(x, 200, out);
}
