/*
 * h_profiles.c — device profiles: what a kind of device speaks and may do.
 *
 *   {"id", "name", "description"?,
 *    "decoder": "json" | "senml" | "numeric"                 (default "json"),
 *    "telemetry_topic": "devices/{device}/telemetry"         (the default),
 *    "telemetry_retention_days"?: days its devices' telemetry is kept (the
 *        shorter of this and the tenant's applies; 0 or absent: the tenant's),
 *    "transport"?: {"mqtt"?: {"max_qos"?: 0..2, "keepalive_max_s"?: 1..65535}},
 *    "acl": [{"access": "publish"|"subscribe"|"both", "topic": "..."}]}
 *
 * Topics are templates: "{device}" and "{tenant}" stand for the device's and
 * the tenant's ids, and nothing else may appear in braces.  A device sees
 * topics without the tenant (its namespace, ADR-0009), so "{tenant}" is
 * there only for payload routing conventions.  The ACL is the device's whole
 * allowance inside its namespace, default [{"access": "both", "topic":
 * "devices/{device}/#"}] (docs/topics.md).  Each rule must either stay
 * under the device's own subtree ("devices/{device}" or below) or be a
 * subscription under "broadcast/" (tenant-wide broadcasts that any of its
 * devices may receive); a rule naming another device's topics, a wildcard
 * over devices, or a publish to a broadcast topic is refused, so no profile
 * can let one device impersonate or eavesdrop on another.  The telemetry
 * topic must be one the ACL lets the device publish.
 *
 * The default fields are written into the stored document, so a reader sees
 * the effective profile.  A profile that devices name cannot be deleted
 * (409): devices must move first, so a device's "profile" always resolves.
 */
#include <stdio.h>
#include <string.h>

#include "api/api_docs.h"
#include "mqtt/mqtt.h"

#define TOPIC_MAX 256
#define ACL_MAX 32
#define DEFAULT_TELEMETRY "devices/{device}/telemetry"
#define OWN_ROOT "devices/{device}"
#define BROADCAST_ROOT "broadcast/"

/*
 * A template with {device} and {tenant} replaced by sample ids, so the MQTT
 * validators can judge it; false when it holds any other brace.  The samples
 * are plain one-level ids, as real ones are.
 */
static bool expand(const char *tmpl, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = tmpl; *p;) {
        const char *word = NULL;
        if (strncmp(p, "{device}", 8) == 0)
            word = "dev-1", p += 8;
        else if (strncmp(p, "{tenant}", 8) == 0)
            word = "tenant-1", p += 8;
        else if (*p == '{' || *p == '}')
            return false;
        size_t n = word ? strlen(word) : 1;
        if (o + n >= cap)
            return false;
        memcpy(out + o, word ? word : p, n);
        o += n;
        if (!word)
            p++;
    }
    out[o] = '\0';
    return true;
}

/* Under the device's own subtree: "devices/{device}" or "devices/{device}/...". */
static bool own_topic(const char *t)
{
    size_t n = strlen(OWN_ROOT);
    return strncmp(t, OWN_ROOT, n) == 0 && (t[n] == '\0' || (t[n] == '/' && t[n + 1]));
}

static bool check_transport(api_ctx *x, json_t *tr)
{
    static const char *const why =
        "\"transport\" must be {\"mqtt\": {\"max_qos\": 0 to 2, \"keepalive_max_s\": 1 to 65535}}, "
        "both fields optional";
    if (!json_is_object(tr))
        goto bad;
    const char *k;
    json_t *v;
    json_object_foreach(tr, k, v)
    {
        if (strcmp(k, "mqtt") != 0 || !json_is_object(v))
            goto bad;
        const char *mk;
        json_t *mv;
        json_object_foreach(v, mk, mv)
        {
            json_int_t n = json_integer_value(mv);
            bool ok = json_is_integer(mv) &&
                      ((strcmp(mk, "max_qos") == 0 && n >= 0 && n <= 2) ||
                       (strcmp(mk, "keepalive_max_s") == 0 && n >= 1 && n <= 65535));
            if (!ok)
                goto bad;
        }
    }
    return true;
bad:
    api_problem(x, 400, "invalid", "%s", why);
    return false;
}

/* One ACL rule; on success *publish tells whether it lets the device publish. */
static bool check_rule(api_ctx *x, size_t i, json_t *r, bool *publish)
{
    static const char *const fields[] = {"access", "topic", NULL};
    const char *access = json_string_value(json_object_get(r, "access"));
    const char *topic = json_string_value(json_object_get(r, "topic"));
    char exp[TOPIC_MAX * 2];
    if (!json_is_object(r)) {
        api_problem(x, 400, "invalid", "\"acl\"[%zu] must be an object", i);
        return false;
    }
    if (!api_check_fields(x, r, fields))
        return false;
    if (!access ||
        (strcmp(access, "publish") && strcmp(access, "subscribe") && strcmp(access, "both"))) {
        api_problem(x, 400, "invalid", "\"acl\"[%zu].access must be publish, subscribe or both", i);
        return false;
    }
    if (!topic || !*topic || strlen(topic) > TOPIC_MAX || !expand(topic, exp, sizeof(exp)) ||
        !mqtt_topic_filter_valid((const uint8_t *)exp, strlen(exp))) {
        api_problem(x, 400, "invalid",
                    "\"acl\"[%zu].topic must be an MQTT topic filter of up to %d characters; "
                    "{device} and {tenant} are the only placeholders",
                    i, TOPIC_MAX);
        return false;
    }
    bool broadcast = strncmp(topic, BROADCAST_ROOT, strlen(BROADCAST_ROOT)) == 0 &&
                     topic[strlen(BROADCAST_ROOT)] != '\0';
    if (!own_topic(topic) && !(broadcast && strcmp(access, "subscribe") == 0)) {
        api_problem(x, 400, "invalid",
                    "\"acl\"[%zu].topic \"%s\": a rule must stay under \"devices/{device}/\" (the "
                    "device's own topics) or subscribe under \"broadcast/\" (the tenant's "
                    "broadcasts)",
                    i, topic);
        return false;
    }
    *publish = strcmp(access, "subscribe") != 0;
    return true;
}

static bool check_profile(api_ctx *x, json_t *doc, bool creating)
{
    if (!api_check_string(x, doc, "name", 200, true) ||
        !api_check_string(x, doc, "description", 1000, false) ||
        !api_check_string(x, doc, "decoder", 16, false) ||
        !api_check_string(x, doc, "telemetry_topic", TOPIC_MAX, false))
        return false;

    json_t *days = json_object_get(doc, "telemetry_retention_days");
    if (days && (!json_is_integer(days) || json_integer_value(days) < 0 ||
                 json_integer_value(days) > 36500)) {
        api_problem(x, 400, "invalid",
                    "\"telemetry_retention_days\" must be an integer from 0 (the tenant's) to "
                    "36500");
        return false;
    }
    /* Defaults go into the document: readers see the effective profile. */
    if (!json_object_get(doc, "decoder"))
        json_object_set_new(doc, "decoder", json_string("json"));
    if (!json_object_get(doc, "telemetry_topic"))
        json_object_set_new(doc, "telemetry_topic", json_string(DEFAULT_TELEMETRY));
    if (!json_object_get(doc, "acl"))
        json_object_set_new(doc, "acl",
                            json_pack("[{s:s, s:s}]", "access", "both", "topic", OWN_ROOT "/#"));

    const char *decoder = json_string_value(json_object_get(doc, "decoder"));
    if (strcmp(decoder, "json") && strcmp(decoder, "senml") && strcmp(decoder, "numeric")) {
        api_problem(x, 400, "invalid", "\"decoder\" must be json, senml or numeric");
        return false;
    }
    json_t *tr = json_object_get(doc, "transport");
    if (tr && !check_transport(x, tr))
        return false;

    json_t *acl = json_object_get(doc, "acl");
    if (!json_is_array(acl) || json_array_size(acl) < 1 || json_array_size(acl) > ACL_MAX) {
        api_problem(x, 400, "invalid",
                    "\"acl\" must be a list of 1 to %d rules (an empty list would lock the "
                    "profile's devices out)",
                    ACL_MAX);
        return false;
    }
    size_t i;
    json_t *r;
    json_array_foreach(acl, i, r)
    {
        bool publish;
        if (!check_rule(x, i, r, &publish))
            return false;
    }

    /* The telemetry topic: a topic name in the device's subtree that the ACL
     * lets it publish (with the decoder's key level for numeric values). */
    const char *tt = json_string_value(json_object_get(doc, "telemetry_topic"));
    char exp[TOPIC_MAX * 2 + 8];
    if (!expand(tt, exp, sizeof(exp) - 8) ||
        !mqtt_topic_name_valid((const uint8_t *)exp, strlen(exp)) || !own_topic(tt)) {
        api_problem(x, 400, "invalid",
                    "\"telemetry_topic\" must be a topic name (no wildcards) under "
                    "\"devices/{device}/\"; {device} and {tenant} are the only placeholders");
        return false;
    }
    if (strcmp(decoder, "numeric") == 0)
        memcpy(exp + strlen(exp), "/k", 3); /* 8 bytes were kept free */
    bool allowed = false;
    json_array_foreach(acl, i, r)
    {
        char f[TOPIC_MAX * 2];
        const char *access = json_string_value(json_object_get(r, "access"));
        if (strcmp(access, "subscribe") != 0 &&
            expand(json_string_value(json_object_get(r, "topic")), f, sizeof(f)) &&
            mqtt_topic_matches((const uint8_t *)f, strlen(f), (const uint8_t *)exp, strlen(exp)))
            allowed = true;
    }
    if (!allowed) {
        api_problem(x, 400, "invalid",
                    "\"telemetry_topic\" \"%s\" is not one the \"acl\" lets the device publish%s",
                    tt, strcmp(decoder, "numeric") == 0 ? " (with a key level, for numeric)" : "");
        return false;
    }
    return true;
}

static const char *const profile_fields[] = {
    "id",        "name", "description", "decoder", "telemetry_topic", "telemetry_retention_days",
    "transport", "acl",  NULL};
static const doc_kind profiles = {
    .kind = DRV_KIND_PROFILE,
    .what = "profile",
    .collection = "profiles",
    .check = check_profile,
    .writable = profile_fields,
};

void api_profiles_create(api_ctx *x)
{
    doc_create(x, &profiles);
}

void api_profiles_list(api_ctx *x)
{
    drv_doc_filter f = {0};
    char name[200];
    if (api_query(x, "name_prefix", name, sizeof(name)) && name[0])
        f.name_prefix = name;
    if (api_failed(x))
        return;
    doc_list(x, &profiles, &f);
}

void api_profiles_get(api_ctx *x)
{
    doc_get(x, &profiles, api_param(x, 1));
}

void api_profiles_patch(api_ctx *x)
{
    doc_patch(x, &profiles, api_param(x, 1));
}

/* A profile that devices name stays: their "profile" must keep resolving. */
void api_profiles_delete(api_ctx *x)
{
    const char *id = api_param(x, 1);
    char eq[160];
    snprintf(eq, sizeof(eq), "profile=%s", id);
    drv_doc_filter f = {.field_eq = eq};
    drv_page pg = {.limit = 1};
    drv_store *st = x->api->store;
    json_t *l = NULL;
    drv_err e = st->ops->doc_list(st, &x->scope, DRV_KIND_DEVICE, &f, &pg, &l);
    if (e != DRV_OK) {
        api_store_error(x, e, "profile");
        return;
    }
    json_t *first = json_array_get(json_object_get(l, "items"), 0);
    if (first) {
        api_problem(x, 409, "in-use",
                    "devices use this profile (\"%s\" among them); give them another profile "
                    "or none first",
                    json_string_value(json_object_get(first, "id")));
        json_decref(l);
        return;
    }
    json_decref(l);
    doc_delete(x, &profiles, id);
}
