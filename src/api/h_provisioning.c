/*
 * h_provisioning.c — provisioning templates (docs/provisioning.md): what a
 * claim session may register.
 *
 *   {"id", "name"?, "claim_ca": "<id of a claim CA of the tenant>",
 *    "profile"?, "device_id_prefix"?, "tags"?, "attributes"?, "enabled"?}
 *
 * The claim CA must be a live CA of the tenant registered with purpose
 * "claim", and the profile must exist, when the template is written; both
 * are checked again at each registration (src/registry/provision.c), since
 * either may go later.  "enabled" is stored (default true).
 */
#include <stdio.h>
#include <string.h>

#include "api/api_docs.h"
#include "registry/provision.h"

static const char *const template_fields[] = {
    "id", "name", "claim_ca", "profile", "device_id_prefix", "tags", "attributes", "enabled", NULL};

/* The claim CA: a live CA of this tenant with purpose "claim". */
static bool check_claim_ca(api_ctx *x, const char *id)
{
    drv_store *st = x->api->store;
    json_t *ca = NULL;
    drv_err e = st->ops->ca_get(st, &x->scope, id, &ca);
    const char *purpose = json_string_value(json_object_get(ca, "purpose"));
    bool ok = e == DRV_OK && json_is_null(json_object_get(ca, "revoked_at")) && purpose &&
              strcmp(purpose, "claim") == 0;
    json_decref(ca);
    if (!ok)
        api_problem(x, 400, "invalid",
                    "\"claim_ca\" must be a live CA of the tenant registered with "
                    "\"purpose\": \"claim\"");
    return ok;
}

static bool check_template(api_ctx *x, json_t *doc, bool creating)
{
    (void)creating;
    if (!api_check_string(x, doc, "name", 200, false) ||
        !api_check_string(x, doc, "claim_ca", 40, true) ||
        !api_check_string(x, doc, "profile", 128, false) ||
        !api_check_string(x, doc, "device_id_prefix", 64, false) ||
        !api_check_string_map(x, doc, "tags") || !api_check_string_map(x, doc, "attributes"))
        return false;
    json_t *en = json_object_get(doc, "enabled");
    if (en && !json_is_boolean(en)) {
        api_problem(x, 400, "invalid", "\"enabled\" must be true or false");
        return false;
    }
    if (!en)
        json_object_set_new(doc, "enabled", json_true());
    if (!check_claim_ca(x, json_string_value(json_object_get(doc, "claim_ca"))))
        return false;
    const char *profile = json_string_value(json_object_get(doc, "profile"));
    if (profile) {
        drv_store *st = x->api->store;
        json_t *p = NULL;
        drv_err e = st->ops->doc_get(st, &x->scope, DRV_KIND_PROFILE, profile, &p);
        json_decref(p);
        if (e != DRV_OK) {
            api_problem(x, 400, "invalid", "no such profile \"%s\"", profile);
            return false;
        }
    }
    return true;
}

static const doc_kind templates = {
    .kind = DRV_KIND_TEMPLATE,
    .what = "provisioning template",
    .collection = "provisioning-templates",
    .check = check_template,
    .writable = template_fields,
};

void api_provisioning_templates_create(api_ctx *x)
{
    doc_create(x, &templates);
}

void api_provisioning_templates_list(api_ctx *x)
{
    drv_doc_filter f = {0};
    doc_list(x, &templates, &f);
}

void api_provisioning_templates_get(api_ctx *x)
{
    doc_get(x, &templates, api_param(x, 1));
}

void api_provisioning_templates_patch(api_ctx *x)
{
    doc_patch(x, &templates, api_param(x, 1));
}

void api_provisioning_templates_delete(api_ctx *x)
{
    doc_delete(x, &templates, api_param(x, 1));
}
