/*
 * h_shadows.c — device shadows over REST (docs/shadow.md): read, update
 * (merge patch, If-Match), delete, list and history.  The work is the twin
 * service's (src/twin), run here on the API thread with the API's own twin
 * store handle; this file checks the device, maps names and answers.
 *
 * The classic shadow is "classic" in paths ("" inside the service).
 */
#include <stdio.h>
#include <string.h>

#include "api/api_int.h"
#include "core/log.h"
#include "twin/shadow_doc.h"
#include "twin/twin.h"

bool api_twin_ready(api_ctx *x)
{
    if (x->api->twin && x->api->twin_store)
        return true;
    api_problem(x, 503, NULL, "shadows and commands are not available");
    return false;
}

bool api_twin_device(api_ctx *x, const char *device, bool for_write)
{
    if (!api_twin_ready(x))
        return false;
    drv_store *st = x->api->store;
    json_t *dev = NULL;
    drv_err e = st->ops->doc_get(st, &x->scope, DRV_KIND_DEVICE, device, &dev);
    if (e != DRV_OK) {
        api_store_error(x, e, "device");
        return false;
    }
    const char *status = json_string_value(json_object_get(dev, "status"));
    bool gone = status && strcmp(status, "decommissioned") == 0;
    json_decref(dev);
    if (gone && for_write) {
        api_problem(x, 409, "decommissioned", "the device is decommissioned");
        return false;
    }
    return true;
}

void api_twin_actor(api_ctx *x, char *buf, size_t cap, drv_twin_actor *who)
{
    bool oauth = strncmp(x->tok.id, "oc_", 3) == 0;
    snprintf(buf, cap, "%s:%s", oauth ? "oauth" : "token", x->tok.id);
    who->actor = buf;
    who->source = "rest";
}

void api_twin_answer(api_ctx *x, const drv_twin_answer *ans, json_t *doc)
{
    if (ans->status >= 400) {
        json_decref(doc);
        const char *type = ans->status == 400   ? "invalid"
                           : ans->status == 412 ? "version-mismatch"
                                                : NULL;
        api_problem(x, ans->status, type, "%s", ans->detail);

    } else if (ans->status == 204 || !doc) {
        json_decref(doc);
        x->resp->status = ans->status;
    } else {
        api_json(x, ans->status, doc);
    }
}

/* The shadow's name from the path: "classic" is the classic shadow. */
static bool shadow_name(api_ctx *x, int index, char *buf, size_t cap)
{
    const char *p = api_param(x, index);
    if (strcmp(p, "classic") == 0) {
        buf[0] = '\0';
        return true;
    }
    if (drv_shadow_name_valid(p)) {
        snprintf(buf, cap, "%s", p);
        return true;
    }
    api_problem(x, 400, "invalid",
                "a shadow name is \"classic\" or 1..64 of A-Z a-z 0-9 _ - : (not starting with $)");
    return false;
}

void api_shadows_list(api_ctx *x)
{
    const char *device = api_param(x, 1);
    if (!api_twin_device(x, device, false))
        return;
    drv_twin_store *ts = x->api->twin_store;
    json_t *l = NULL;
    drv_err e = ts->ops->shadow_list(ts, x->scope.tenant, device, &l);
    if (e != DRV_OK) {
        api_store_error(x, e, "shadow");
        return;
    }
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(l, "items"), i, item)
    {
        const char *n = json_string_value(json_object_get(item, "name"));
        if (n && !n[0])
            json_object_set_new(item, "name", json_string("classic"));
    }
    api_json(x, 200, l);
}

void api_shadows_get(api_ctx *x)
{
    const char *device = api_param(x, 1);
    char name[DRV_SHADOW_NAME_MAX + 1];
    if (!shadow_name(x, 2, name, sizeof(name)) || !api_twin_device(x, device, false))
        return;
    json_t *doc = NULL;
    drv_twin_answer ans;
    drv_twin_api_shadow_get(x->api->twin, x->api->twin_store, x->scope.tenant, device, name, &doc,
                            &ans);
    if (doc) {
        if (api_not_modified(x, doc)) {
            json_decref(doc);
            return;
        }
        api_etag(x, doc);
    }
    api_twin_answer(x, &ans, doc);
}

void api_shadows_patch(api_ctx *x)
{
    const char *device = api_param(x, 1);
    char name[DRV_SHADOW_NAME_MAX + 1], actor[80];
    int64_t if_match;
    json_t *body = NULL;
    if (!shadow_name(x, 2, name, sizeof(name)) || !api_if_match(x, &if_match) ||
        !api_twin_device(x, device, true) || !api_body(x, &body))
        return;
    drv_twin_actor who;
    api_twin_actor(x, actor, sizeof(actor), &who);
    json_t *doc = NULL;
    drv_twin_answer ans;
    drv_twin_api_shadow_update(x->api->twin, x->api->twin_store, x->scope.tenant, device, name,
                               body, if_match, &who, &doc, &ans);
    json_decref(body);
    if (doc)
        api_etag(x, doc);
    api_twin_answer(x, &ans, doc);
}

void api_shadows_delete(api_ctx *x)
{
    const char *device = api_param(x, 1);
    char name[DRV_SHADOW_NAME_MAX + 1], actor[80];
    int64_t if_match;
    if (!shadow_name(x, 2, name, sizeof(name)) || !api_if_match(x, &if_match) ||
        !api_twin_device(x, device, true))
        return;
    drv_twin_actor who;
    api_twin_actor(x, actor, sizeof(actor), &who);
    drv_twin_answer ans;
    drv_twin_api_shadow_delete(x->api->twin, x->api->twin_store, x->scope.tenant, device, name,
                               if_match, &who, &ans);
    api_twin_answer(x, &ans, NULL);
}

void api_shadows_history(api_ctx *x)
{
    const char *device = api_param(x, 1);
    char name[DRV_SHADOW_NAME_MAX + 1], cursor[256];
    drv_page pg;
    int64_t from = 0, to = 0;
    if (!shadow_name(x, 2, name, sizeof(name)) || !api_page(x, &pg, cursor, sizeof(cursor)) ||
        !api_time_param(x, "from", 0, &from) || !api_time_param(x, "to", 0, &to) ||
        !api_twin_device(x, device, false))
        return;
    drv_twin_store *ts = x->api->twin_store;
    json_t *l = NULL;
    drv_err e = ts->ops->shadow_history(ts, x->scope.tenant, device, name, from, to, pg.cursor,
                                        pg.limit, &l);
    if (e != DRV_OK) {
        api_store_error(x, e, e == DRV_INVAL ? "cursor" : "shadow");
        return;
    }
    api_json(x, 200, l);
}
