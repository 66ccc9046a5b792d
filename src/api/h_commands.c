/*
 * h_commands.c — commands over REST (docs/commands.md): send to a device or
 * a group, read, list, cancel, and a batch's progress.
 *
 * Waiting: POST with "wait_ms" and GET with ?wait_ms= park the request
 * (drv_http_defer) on the API's list of waiters instead of blocking the API
 * thread.  When a command reaches a final state the twin service calls
 * drv_api_command_settled (its own thread), which posts to the API thread;
 * there every waiter of that command is answered with the command as it is
 * now.  A waiter whose time runs out is answered with the command as it is
 * then (202 for a POST: accepted, still running; 200 for a GET).
 */
#include <stdio.h>
#include <string.h>

#include "api/api_int.h"
#include "core/alloc.h"
#include "core/log.h"
#include "http/http.h"
#include "twin/twin.h"

#define WAIT_MAX_MS 60000
#define BATCH_MAX_DEVICES 10000
#define FANOUT_CHUNK 200 /* commands of a group fan-out per transaction */

/* A request waiting for a command to finish. */
typedef struct api_waiter {
    struct api_waiter *next, *prev;
    drv_api *api;
    drv_http_deferred *d;
    char tenant[64];
    char id[40];
    bool is_post;  /* 202 with Location when the wait ends first */
    bool replayed; /* Idempotency-Replayed: true */
    int status;    /* what fill answers */
    json_t *doc;   /* ... with this body */
    char location[320];
} api_waiter;

static void unlink_waiter(api_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        w->api->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->next = w->prev = NULL;
}

static void fill(void *ud, drv_http_response *resp)
{
    api_waiter *w = ud;
    char *text = w->doc ? json_dumps(w->doc, JSON_COMPACT) : NULL;
    resp->status = text ? w->status : 500;
    resp->content_type = "application/json";
    if (text)
        drv_buf_append(&resp->body, text, strlen(text));
    free(text); /* jansson's allocation */
    if (w->location[0])
        drv_http_add_header(resp, "Location", "%s", w->location);
    if (w->replayed)
        drv_http_add_header(resp, "Idempotency-Replayed", "true");
}

/* The command document says it is finished (a final state). */
static bool finished(json_t *doc)
{
    const char *state = json_string_value(json_object_get(doc, "state"));
    int st = state ? drv_cmd_state_parse(state) : -1;
    return st >= 0 && drv_cmd_terminal((drv_cmd_state)st);
}

/* Answer w with the command as it is now and forget it. */
static void finish(api_waiter *w, bool settled)
{
    drv_twin_store *ts = w->api->twin_store;
    json_t *doc = NULL;
    if (ts->ops->command_json(ts, w->tenant, w->id, &doc) != DRV_OK)
        doc = NULL;
    bool done = settled || finished(doc);
    w->status = w->is_post && !done ? 202 : 200;
    w->doc = doc;
    unlink_waiter(w);
    drv_http_complete(w->d, fill, w);
    json_decref(w->doc);
    drv_free(w);
}

static void on_timeout(void *ud, drv_http_deferred *d)
{
    (void)d;
    finish(ud, false);
}

static void on_gone(void *ud)
{
    api_waiter *w = ud;
    unlink_waiter(w);
    drv_free(w);
}

/* Park the request until command `id` finishes or wait_ms pass; false
 * (nothing done) when it cannot be parked. */
static bool wait_for(api_ctx *x, const char *id, uint32_t wait_ms, bool is_post, bool replayed,
                     const char *location)
{
    api_waiter *w = drv_calloc(1, sizeof(*w));
    if (!w)
        return false;
    w->api = x->api;
    snprintf(w->tenant, sizeof(w->tenant), "%s", x->scope.tenant);
    snprintf(w->id, sizeof(w->id), "%s", id);
    snprintf(w->location, sizeof(w->location), "%s", location ? location : "");
    w->is_post = is_post;
    w->replayed = replayed;
    w->d = drv_http_defer(x->resp, wait_ms, on_timeout, on_gone, w);
    if (!w->d) {
        drv_free(w);
        return false;
    }
    w->next = x->api->waiters;
    if (w->next)
        w->next->prev = w;
    x->api->waiters = w;
    return true;
}

/* A settled command, posted from the twin service to the API thread. */
typedef struct settled_msg {
    drv_api *api;
    char tenant[64];
    char id[40];
} settled_msg;

static void on_settled(void *ud)
{
    settled_msg *m = ud;
    api_waiter *w = m->api->waiters;
    while (w) {
        api_waiter *next = w->next;
        if (strcmp(w->id, m->id) == 0 && strcmp(w->tenant, m->tenant) == 0)
            finish(w, true);
        w = next;
    }
    drv_free(m);
}

void drv_api_command_settled(void *ud, const char *tenant, const char *id)
{
    drv_api *a = ud;
    if (!a->http)
        return;
    settled_msg *m = drv_calloc(1, sizeof(*m));
    if (!m)
        return; /* its waiters are answered when their time runs out */
    m->api = a;
    snprintf(m->tenant, sizeof(m->tenant), "%s", tenant);
    snprintf(m->id, sizeof(m->id), "%s", id);
    if (drv_http_post(a->http, on_settled, m) != DRV_OK)
        drv_free(m);
}

void api_waiters_free(drv_api *a)
{
    /* drv_http_server_stop already called every on_gone: nothing should be left. */
    while (a->waiters) {
        api_waiter *w = a->waiters;
        a->waiters = w->next;
        drv_free(w);
    }
}

/* ------------------------------------------------------------------------ */
/* Handlers                                                                  */

/* wait_ms of the body (validated by the service's parser). */
static uint32_t body_wait(json_t *body)
{
    json_t *v = json_object_get(body, "wait_ms");
    json_int_t n = json_is_integer(v) ? json_integer_value(v) : 0;
    return n > 0 && n <= WAIT_MAX_MS ? (uint32_t)n : 0;
}

/* The Idempotency-Key header into buf; NULL when absent. */
static const char *idem_header(api_ctx *x, char *buf, size_t cap)
{
    drv_span v;
    if (!drv_http_header_get(x->req, "idempotency-key", &v))
        return NULL;
    size_t n = v.n < cap - 1 ? v.n : cap - 1;
    memcpy(buf, v.p, n);
    buf[n] = '\0';
    return v.n < cap - 1 ? buf : "";
}

void api_commands_create(api_ctx *x)
{
    const char *device = api_param(x, 1);
    json_t *body = NULL;
    if (!api_twin_device(x, device, true) || !api_body(x, &body))
        return;
    char key[160];
    const char *hdr = idem_header(x, key, sizeof(key));
    json_t *doc = NULL;
    bool replayed = false;
    drv_twin_answer ans;
    drv_twin_api_command_create(x->api->twin, x->api->twin_store, x->scope.tenant, device, body,
                                hdr, NULL, &doc, &replayed, &ans);
    uint32_t wait = body_wait(body);
    json_decref(body);
    if (ans.status >= 400) {
        api_twin_answer(x, &ans, doc);
        return;
    }
    const char *id = json_string_value(json_object_get(doc, "id"));
    char location[320];
    snprintf(location, sizeof(location), "/api/v1/tenants/%s/commands/%s", x->scope.tenant,
             id ? id : "");
    if (!replayed) {
        json_t *d = json_pack("{s:s,s:s?}", "device", device, "name",
                              json_string_value(json_object_get(doc, "name")));
        api_audit(x, "command.create", location + 8, d);
        json_decref(d);
    }
    bool done = finished(doc);
    if (wait && id && !done && wait_for(x, id, wait, true, replayed, location)) {
        json_decref(doc);
        return;
    }
    drv_http_add_header(x->resp, "Location", "%s", location);
    if (replayed)
        drv_http_add_header(x->resp, "Idempotency-Replayed", "true");
    api_json(x, wait && done ? 200 : 202, doc);
}

/* The members of a group fan-out. */
typedef struct fanout {
    const char *idem;
    char batch[40];
    char **devices;
    uint32_t n, cap;
    bool failed;
} fanout;

static bool add_member(void *ud, const char *id)
{
    fanout *f = ud;
    if (f->n == BATCH_MAX_DEVICES) {
        f->failed = true;
        return false;
    }
    if (f->n == f->cap) {
        uint32_t cap = f->cap ? f->cap * 2 : 64;
        char **v = drv_realloc(f->devices, cap * sizeof(*v));
        if (!v)
            return false;
        f->devices = v;
        f->cap = cap;
    }
    f->devices[f->n] = drv_strdup(id);
    return f->devices[f->n++] != NULL;
}

/* The device exists and is not decommissioned (no answer set). */
static bool device_active(api_ctx *x, const char *device)
{
    drv_store *st = x->api->store;
    json_t *dev = NULL;
    if (st->ops->doc_get(st, &x->scope, DRV_KIND_DEVICE, device, &dev) != DRV_OK)
        return false;
    const char *status = json_string_value(json_object_get(dev, "status"));
    bool active = !status || strcmp(status, "decommissioned") != 0;
    json_decref(dev);
    return active;
}

void api_commands_create_group(api_ctx *x)

{
    const char *group = api_param(x, 1);
    json_t *body = NULL;
    if (!api_twin_ready(x) || !api_body(x, &body))
        return;
    drv_twin *tw = x->api->twin;
    drv_twin_store *ts = x->api->twin_store;
    char key[160];
    fanout f = {.idem = idem_header(x, key, sizeof(key))};
    drv_twin_answer ans;
    if (json_object_get(body, "wait_ms")) {
        api_problem(x, 400, "invalid", "a group command does not wait: follow its batch");
        goto out;
    }
    if (!drv_twin_command_body_valid(body, f.idem, &ans)) {
        api_twin_answer(x, &ans, NULL);
        goto out;
    }
    drv_err e = api_group_members(x, group, add_member, &f);
    if (f.failed) {
        api_problem(x, 413, NULL, "a group command reaches at most %d devices", BATCH_MAX_DEVICES);
        goto out;
    }
    if (e != DRV_OK) {
        api_store_error(x, e, "group");
        goto out;
    }
    /* Decommissioned members are left out (a single command to one would be
     * refused), read before the twin store's write lock is taken. */
    uint32_t active = 0;
    for (uint32_t i = 0; i < f.n; i++) {
        if (device_active(x, f.devices[i]))
            f.devices[active++] = f.devices[i];
        else
            drv_free(f.devices[i]);
    }
    f.n = active;
    json_t *params = json_object_get(body, "params");
    json_t *bdoc = json_pack("{s:s,s:O,s:o}", "group", group, "name", json_object_get(body, "name"),
                             "params", params ? json_incref(params) : json_object());
    e = bdoc ? ts->ops->batch_add(ts, x->scope.tenant, bdoc, f.batch) : DRV_NOMEM;
    json_decref(bdoc);
    /* In chunks, one transaction (one fsync) each: the twin service's own
     * batches must not wait behind one long write of ten thousand commands. */
    for (uint32_t at = 0; e == DRV_OK && at < f.n; at += FANOUT_CHUNK) {
        uint32_t end = at + FANOUT_CHUNK < f.n ? at + FANOUT_CHUNK : f.n;
        e = ts->ops->begin(ts);
        for (uint32_t i = at; e == DRV_OK && i < end; i++) {
            json_t *doc = NULL;
            bool replayed;
            drv_twin_api_command_create(tw, ts, x->scope.tenant, f.devices[i], body, f.idem,
                                        f.batch, &doc, &replayed, &ans);
            json_decref(doc);
            if (ans.status >= 500)
                e = DRV_IO;
            /* A device with too many waiting commands is left out: its count
             * stays out of the batch's total, which says how many were sent. */
        }
        if (e == DRV_OK)
            e = ts->ops->commit(ts);
        if (e != DRV_OK) {
            ts->ops->rollback(ts);
            drv_twin_api_flush(tw, false);
            break;
        }
        drv_twin_api_flush(tw, true);
        for (uint32_t i = at; i < end; i++)
            drv_twin_kick(tw, x->scope.tenant, f.devices[i]);
    }
    if (e != DRV_OK) {
        /* The chunks before stay (the batch shows how far it got). */
        api_store_error(x, e, "command batch");
        goto out;
    }
    json_t *out = NULL;
    e = ts->ops->batch_get(ts, x->scope.tenant, f.batch, &out);
    if (e != DRV_OK) {
        api_store_error(x, e, "command batch");
        goto out;
    }
    char location[200];
    snprintf(location, sizeof(location), "/api/v1/tenants/%s/command-batches/%s", x->scope.tenant,
             f.batch);
    json_t *d = json_pack("{s:s,s:i}", "group", group, "devices", (json_int_t)f.n);
    api_audit(x, "command.create_group", location + 8, d);
    json_decref(d);
    drv_http_add_header(x->resp, "Location", "%s", location);
    api_json(x, 202, out);
out:
    for (uint32_t i = 0; i < f.n; i++)
        drv_free(f.devices[i]);
    drv_free(f.devices);
    json_decref(body);
}

void api_commands_list(api_ctx *x)
{
    char cursor[256], device[160], batch[64], state[32];
    drv_page pg;
    if (!api_twin_ready(x) || !api_page(x, &pg, cursor, sizeof(cursor)))
        return;
    drv_cmd_filter f = {.state = -1};
    if (api_query(x, "device", device, sizeof(device)) && device[0])
        f.device = device;
    if (api_query(x, "batch", batch, sizeof(batch)) && batch[0])
        f.batch = batch;
    if (api_query(x, "state", state, sizeof(state)) && state[0]) {
        f.state = drv_cmd_state_parse(state);
        if (f.state < 0) {
            api_problem(x, 400, "invalid",
                        "state is one of queued, sent, delivered, succeeded, failed, "
                        "timed_out, expired, cancelled");
            return;
        }
    }
    if (api_failed(x))
        return;
    drv_twin_store *ts = x->api->twin_store;
    json_t *l = NULL;
    drv_err e = ts->ops->command_list(ts, x->scope.tenant, &f, pg.cursor, pg.limit, &l);
    if (e != DRV_OK) {
        api_store_error(x, e, e == DRV_INVAL ? "cursor" : "command");
        return;
    }
    api_json(x, 200, l);
}

void api_commands_get(api_ctx *x)
{
    const char *id = api_param(x, 1);
    char wait[16];
    uint32_t wait_ms = 0;
    if (!api_twin_ready(x))
        return;
    if (api_query(x, "wait_ms", wait, sizeof(wait)) && wait[0]) {
        char *end;
        long v = strtol(wait, &end, 10);
        if (*end || v < 0 || v > WAIT_MAX_MS) {
            api_problem(x, 400, "invalid", "wait_ms is an integer 0..60000");
            return;
        }
        wait_ms = (uint32_t)v;
    }
    if (api_failed(x))
        return;
    drv_twin_store *ts = x->api->twin_store;
    json_t *doc = NULL;
    drv_err e = ts->ops->command_json(ts, x->scope.tenant, id, &doc);
    if (e != DRV_OK) {
        api_store_error(x, e, "command");
        return;
    }
    if (wait_ms && !finished(doc) && wait_for(x, id, wait_ms, false, false, NULL)) {
        json_decref(doc);
        return;
    }
    api_json(x, 200, doc);
}

void api_commands_cancel(api_ctx *x)
{
    const char *id = api_param(x, 1);
    if (!api_twin_ready(x))
        return;
    char actor[80];
    drv_twin_actor who;
    api_twin_actor(x, actor, sizeof(actor), &who);
    json_t *doc = NULL;
    drv_twin_answer ans;
    drv_twin_api_command_cancel(x->api->twin, x->api->twin_store, x->scope.tenant, id, &who, &doc,
                                &ans);
    if (ans.status < 300) {
        char target[200];
        snprintf(target, sizeof(target), "tenants/%s/commands/%s", x->scope.tenant, id);
        api_audit(x, "command.cancel", target, NULL);
    }
    api_twin_answer(x, &ans, doc);
}

void api_command_batches_get(api_ctx *x)
{
    const char *id = api_param(x, 1);
    if (!api_twin_ready(x))
        return;
    drv_twin_store *ts = x->api->twin_store;
    json_t *doc = NULL;
    drv_err e = ts->ops->batch_get(ts, x->scope.tenant, id, &doc);
    if (e != DRV_OK) {
        api_store_error(x, e, "command batch");
        return;
    }
    api_json(x, 200, doc);
}
