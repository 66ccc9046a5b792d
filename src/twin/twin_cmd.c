/*
 * twin_cmd.c — commands: the state machine of docs/commands.md (drawn in
 * twin_store.h), driven by the API (create, cancel), by devices (ack,
 * response) and by time (retries, timeouts, expiry).
 *
 * Every change is a compare-and-set on the stored state (command_update
 * with the state it was read in), because two threads change commands: the
 * API thread (create, cancel) and the service (everything else).  A lost
 * race is read again and decided again.
 *
 * Sending: the request is published first and its "sent" recorded in the
 * same transaction right after, only when a connected session took it — so
 * a device that is away costs no attempt.  A crash in the moment between
 * the two can make the device get that attempt twice (ADR-0018).
 */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/ident.h"
#include "core/log.h"
#include "core/timefmt.h"
#include "mqtt/mqtt.h"
#include "twin/twin_int.h"

#define PARAMS_MAX (16u * 1024)
#define ERROR_MAX 1024
#define TIMEOUT_DEFAULT_MS 30000
#define TIMEOUT_MAX_MS 3600000
#define EXPIRES_DEFAULT_MS (24LL * 3600 * 1000)
#define EXPIRES_MAX_MS (30LL * 24 * 3600 * 1000)
#define ATTEMPTS_DEFAULT 5
#define ATTEMPTS_MAX 20
#define WAIT_MAX_MS 60000
#define DUE_BATCH 256

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static int64_t backoff_ms(const drv_twin *tw, uint32_t attempt)
{
    int64_t d = tw->cfg.retry_base_ms ? tw->cfg.retry_base_ms : 2000;
    for (uint32_t i = 1; i < attempt && d < TWIN_BACKOFF_MAX_MS; i++)
        d *= 2;
    return d < TWIN_BACKOFF_MAX_MS ? d : TWIN_BACKOFF_MAX_MS;
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static json_t *json_text(const char *text)
{
    json_error_t err;
    return text ? json_loads(text, JSON_DECODE_ANY, &err) : NULL;
}

/* The live event of c's current state. */
static void cmd_event(drv_twin *tw, twin_batch *b, const drv_command *c)
{
    if (!drv_bus_wanted(tw->cfg.bus))
        return;
    json_t *d = json_object();
    json_object_set_new(d, "id", json_string(c->id));
    json_object_set_new(d, "name", json_string(c->name));
    json_object_set_new(d, "state", json_string(drv_cmd_state_name(c->state)));
    json_object_set_new(d, "attempts", json_integer(c->attempts));
    json_object_set_new(d, "batch", c->batch[0] ? json_string(c->batch) : json_null());
    if (c->result)
        json_object_set_new(d, "result", json_text(c->result));
    if (c->error)
        json_object_set_new(d, "error", json_string(c->error));
    char type[40];
    snprintf(type, sizeof(type), "command.%s", drv_cmd_state_name(c->state));
    twin_batch_event(tw, b, type, c->tenant, c->device, c->updated_ms, d);
    json_decref(d);
}

/* ------------------------------------------------------------------------ */
/* Sending                                                                   */

/* Publish c's request; true when a connected session took it. */
static bool publish_request(drv_twin *tw, const drv_command *c, int64_t now)
{
    char topic[256], response[256];
    snprintf(topic, sizeof(topic), "devices/%s/commands/%s/request", c->device, c->id);
    snprintf(response, sizeof(response), "devices/%s/commands/%s/response", c->device, c->id);
    json_t *m = json_object();
    json_object_set_new(m, "id", json_string(c->id));
    json_object_set_new(m, "name", json_string(c->name));
    json_t *params = json_text(c->params);
    json_object_set_new(m, "params", params ? params : json_object());
    json_object_set_new(m, "attempt", json_integer(c->attempts + 1));
    json_object_set_new(m, "expires_at", json_integer(c->expires_ms));
    json_object_set_new(m, "timeout_ms", json_integer(c->timeout_ms));
    char *text = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    if (!text)
        return false;
    int64_t left = c->expires_ms - now;
    uint32_t expiry_s = left <= 0 ? 1 : (uint32_t)min64((left + 999) / 1000, UINT32_MAX);
    uint32_t n = twin_publish(tw, c->tenant, topic, text, strlen(text), response, c->id, expiry_s);
    free(text); /* jansson's allocation */
    return n > 0;
}

/* Send c (queued, or sent and due again) now; false when the device did
 * not take it (not connected or not subscribed: nothing changes). */
static bool send_one(drv_twin *tw, twin_batch *b, drv_command *c, int64_t now)
{
    if (!publish_request(tw, c, now))
        return false;
    drv_cmd_state from = c->state;
    c->state = DRV_CMD_SENT;
    c->attempts++;
    c->sent_ms = now;
    c->updated_ms = now;
    c->next_ms = min64(c->expires_ms, now + backoff_ms(tw, c->attempts));
    json_t *detail = json_pack("{s:i}", "attempt", (json_int_t)c->attempts);
    drv_err e = tw->st->ops->command_update(tw->st, c, from, detail);
    json_decref(detail);
    if (e != DRV_OK) {
        drv_warn("twin: command send not recorded", "tenant", c->tenant, "command", c->id, "error",
                 drv_strerror(e));
        return true; /* it went out: the device has it */
    }
    atomic_fetch_add_explicit(&tw->stats.commands_sent, 1, memory_order_relaxed);
    cmd_event(tw, b, c);
    return true;
}

typedef struct pending_list {
    drv_command *v;
    uint32_t n, cap;
} pending_list;

static bool collect(void *ud, drv_command *c)
{
    pending_list *l = ud;
    if (l->n == l->cap)
        return false;
    l->v[l->n] = *c; /* take its heap strings */
    memset(c, 0, sizeof(*c));
    l->n++;
    return true;
}

static void pending_free(pending_list *l)
{
    for (uint32_t i = 0; i < l->n; i++)
        drv_command_clear(&l->v[i]);
    drv_free(l->v);
}

void twin_cmd_send_pending(drv_twin *tw, twin_batch *b, const char *tenant, const char *device,
                           const uint8_t *filter, size_t filter_len, bool reconnect)
{
    if (filter) {
        char topic[256];
        snprintf(topic, sizeof(topic), "devices/%s/commands/c/request", device);
        if (!mqtt_topic_matches(filter, filter_len, (const uint8_t *)topic, strlen(topic)))
            return;
    }
    uint32_t window = tw->cfg.max_inflight ? tw->cfg.max_inflight : 16;
    pending_list l = {.cap = 2 * window};
    l.v = drv_calloc(l.cap, sizeof(*l.v));
    if (!l.v)
        return;
    if (tw->st->ops->command_pending(tw->st, tenant, device, l.cap, collect, &l) != DRV_OK) {
        pending_free(&l);
        return;
    }
    int64_t now = twin_now_ms();
    uint32_t inflight = 0;
    for (uint32_t i = 0; i < l.n; i++) {
        drv_command *c = &l.v[i];
        if (c->expires_ms <= now)
            continue; /* expires at its deadline */
        if (c->state == DRV_CMD_SENT) {
            inflight++;
            if (reconnect && now - c->sent_ms >= TWIN_RESEND_GUARD_MS &&
                c->attempts < c->max_attempts && !send_one(tw, b, c, now))
                break; /* the device does not take requests now */
            continue;
        }
        if (inflight >= window)
            break;
        if (!send_one(tw, b, c, now))
            break;
        inflight++;
    }
    pending_free(&l);
}

/* ------------------------------------------------------------------------ */
/* Devices: ack and response                                                 */

/* "commands/<id>/ack" or "commands/<id>/response": the id into buf. */
static bool parse_topic(const uint8_t *rest, size_t len, char *id, size_t cap, bool *is_ack)
{
    const char *p = (const char *)rest;
    if (len < 9 || memcmp(p, "commands/", 9) != 0)
        return false;
    p += 9;
    len -= 9;
    const char *slash = memchr(p, '/', len);
    if (!slash || slash == p)
        return false;
    size_t n = (size_t)(slash - p), tail = len - n - 1;
    if (tail == 3 && memcmp(slash + 1, "ack", 3) == 0)
        *is_ack = true;
    else if (tail == 8 && memcmp(slash + 1, "response", 8) == 0)
        *is_ack = false;
    else
        return false;
    if (n >= cap)
        n = cap - 1; /* no id is this long: it is not found */
    memcpy(id, p, n);
    id[n] = '\0';
    return true;
}

bool twin_cmd_topic(const uint8_t *rest, size_t len)
{
    char id[64];
    bool ack;
    return parse_topic(rest, len, id, sizeof(id), &ack);
}

static void reject(twin_batch *b, const in_item *it, const char *id, int code, const char *why)
{
    char topic[256];
    snprintf(topic, sizeof(topic), "devices/%s/commands/%s/rejected", it->device, id);
    json_t *m = json_pack("{s:i,s:s}", "code", code, "message", why);
    if (m)
        twin_batch_publish(b, it->tenant, topic, m);
    json_decref(m);
}

/* A response payload: {"status": "succeeded"|"failed", "result"?, "error"?}. */
static bool parse_response(const in_item *it, drv_cmd_state *to, char **result, char **error)
{
    json_error_t jerr;
    json_t *r =
        json_loadb((const char *)it->payload, it->payload_len, JSON_REJECT_DUPLICATES, &jerr);
    const char *status = json_string_value(json_object_get(r, "status"));
    json_t *res = json_object_get(r, "result"), *err = json_object_get(r, "error");
    bool ok = json_is_object(r) && status &&
              (strcmp(status, "succeeded") == 0 || strcmp(status, "failed") == 0) &&
              (!err || (json_is_string(err) && json_string_length(err) <= ERROR_MAX));
    if (ok) {
        *to = strcmp(status, "succeeded") == 0 ? DRV_CMD_SUCCEEDED : DRV_CMD_FAILED;
        *result = res ? json_dumps(res, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        *error = err ? drv_strdup(json_string_value(err)) : NULL;
    }
    json_decref(r);
    return ok;
}

void twin_cmd_message(drv_twin *tw, twin_batch *b, const in_item *it)
{
    char id[64];
    bool is_ack;
    if (!parse_topic(it->rest, it->rest_len, id, sizeof(id), &is_ack))
        return;
    drv_command c = {0};
    drv_err e = tw->st->ops->command_get(tw->st, it->tenant, id, &c);
    if (e != DRV_OK || strcmp(c.device, it->device) != 0) {
        if (e != DRV_OK && e != DRV_NOTFOUND)
            reject(b, it, id, 500, "the command could not be read");
        else
            reject(b, it, id, 404, "no such command for this device");
        drv_command_clear(&c);
        return;
    }
    if (drv_cmd_terminal(c.state)) {
        char why[64];
        snprintf(why, sizeof(why), "the command is already %s", drv_cmd_state_name(c.state));
        reject(b, it, id, 409, why);
        drv_command_clear(&c);
        return;
    }
    if (it->oversize && !is_ack) {
        reject(b, it, id, 413, "the response is too large");

        drv_command_clear(&c);
        return;
    }
    int64_t now = twin_now_ms();
    drv_cmd_state from = c.state;
    if (is_ack) {
        if (c.state == DRV_CMD_DELIVERED) {
            drv_command_clear(&c);
            return; /* a repeated ack */
        }
        c.state = DRV_CMD_DELIVERED;
        c.delivered_ms = now;
        c.next_ms = now + c.timeout_ms;
    } else {
        drv_cmd_state to;
        char *result = NULL, *error = NULL;
        if (!parse_response(it, &to, &result, &error)) {
            reject(b, it, id, 400,
                   "a response is a JSON object with \"status\": \"succeeded\" or \"failed\"");
            drv_command_clear(&c);
            return;
        }
        drv_free(c.result);
        drv_free(c.error);
        c.result = result ? drv_strdup(result) : NULL;
        free(result); /* jansson's allocation */
        c.error = error;
        c.state = to;
        if (!c.delivered_ms)
            c.delivered_ms = now;
        c.next_ms = 0;
    }
    c.updated_ms = now;
    e = tw->st->ops->command_update(tw->st, &c, from, NULL);
    if (e == DRV_CONFLICT) {
        /* Cancelled or timed out by someone else just now. */
        reject(b, it, id, 409, "the command changed meanwhile");
    } else if (e != DRV_OK) {
        reject(b, it, id, 500, "the command could not be updated");
    } else {
        cmd_event(tw, b, &c);
        if (drv_cmd_terminal(c.state))
            twin_batch_settled(b, c.tenant, c.id);
        /* A slot of its window is free: the next may go. */
        twin_cmd_send_pending(tw, b, it->tenant, it->device, NULL, 0, false);
    }
    drv_command_clear(&c);
}

/* ------------------------------------------------------------------------ */
/* Time: retries, timeouts, expiry                                           */

typedef struct due_ref {
    char tenant[64];
    char id[40];
} due_ref;

typedef struct due_list {
    due_ref v[DUE_BATCH];
    uint32_t n;
} due_list;

static bool collect_due(void *ud, drv_command *c)
{
    due_list *l = ud;
    if (l->n == DUE_BATCH)
        return false;
    snprintf(l->v[l->n].tenant, sizeof(l->v[0].tenant), "%s", c->tenant);
    snprintf(l->v[l->n].id, sizeof(l->v[0].id), "%s", c->id);
    l->n++;
    return true;
}

/* One due command: decide and record. */
static void run_one_due(drv_twin *tw, twin_batch *b, drv_command *c, int64_t now)
{
    drv_cmd_state from = c->state;
    if (drv_cmd_terminal(c->state))
        return;
    if (c->state != DRV_CMD_DELIVERED && c->expires_ms <= now) {
        c->state = DRV_CMD_EXPIRED;
    } else if (c->state == DRV_CMD_DELIVERED) {
        if (now < c->delivered_ms + c->timeout_ms)
            c->next_ms = c->delivered_ms + c->timeout_ms;
        else
            c->state = DRV_CMD_TIMED_OUT;
    } else if (c->state == DRV_CMD_SENT && now < c->sent_ms + backoff_ms(tw, c->attempts)) {
        c->next_ms = min64(c->expires_ms, c->sent_ms + backoff_ms(tw, c->attempts));
    } else if (c->state == DRV_CMD_SENT && c->attempts >= c->max_attempts) {
        c->state = DRV_CMD_TIMED_OUT;
    } else if (c->state == DRV_CMD_SENT) {
        if (send_one(tw, b, c, now))
            return;
        /* Away (or not subscribed): try again on the same schedule; a
         * connect or subscribe sends it sooner. */
        c->next_ms = min64(c->expires_ms, now + backoff_ms(tw, c->attempts));

    } else {
        c->next_ms = c->expires_ms; /* queued: waits for the device */
    }
    if (drv_cmd_terminal(c->state))
        c->next_ms = 0;
    c->updated_ms = now;
    drv_err e = tw->st->ops->command_update(tw->st, c, from, NULL);
    if (e != DRV_OK) {
        if (e != DRV_CONFLICT)
            drv_warn("twin: command deadline not recorded", "command", c->id, "error",
                     drv_strerror(e));
        return;
    }
    if (c->state != from) {
        cmd_event(tw, b, c);
        twin_batch_settled(b, c->tenant, c->id);
    }
}

uint32_t twin_cmd_run_due(drv_twin *tw, twin_batch *b, int64_t now_ms)
{
    due_list *l = drv_calloc(1, sizeof(*l));
    uint32_t n = 0;
    if (!l)
        return 0;
    if (tw->st->ops->due_commands(tw->st, now_ms, DUE_BATCH, collect_due, l) == DRV_OK) {
        for (uint32_t i = 0; i < l->n; i++) {
            drv_command c = {0};
            if (tw->st->ops->command_get(tw->st, l->v[i].tenant, l->v[i].id, &c) == DRV_OK)
                run_one_due(tw, b, &c, now_ms);
            drv_command_clear(&c);
        }
        n = l->n;
    }
    drv_free(l);
    return n;
}

/* ------------------------------------------------------------------------ */
/* Applications                                                              */

static bool answer(drv_twin_answer *ans, int status, const char *why)
{
    ans->status = status;
    snprintf(ans->detail, sizeof(ans->detail), "%s", why ? why : "");
    return status < 300;
}

static bool key_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > DRV_ID_MAX)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e)
            return false;
    return true;
}

/* An integer member in [lo, hi], or the default when absent. */
static bool int_member(json_t *body, const char *key, int64_t lo, int64_t hi, int64_t def,
                       int64_t *out)
{
    json_t *v = json_object_get(body, key);
    if (!v) {
        *out = def;
        return true;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return false;
    *out = json_integer_value(v);
    return true;
}

/* The fields of a create request, checked. */
typedef struct cmd_request {
    const char *name;
    json_t *params;
    int64_t timeout_ms, expires_ms, max_attempts;
    const char *idem_key;
} cmd_request;

static bool parse_request(json_t *body, const char *idem_header, int64_t now, cmd_request *r,
                          drv_twin_answer *ans)
{
    static const char *const known[] = {"name",          "params",         "timeout_ms",
                                        "expires_in_ms", "expires_at",     "max_attempts",
                                        "wait_ms",       "idempotency_key"};
    if (!json_is_object(body))
        return answer(ans, 400, "the body is a JSON object");
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        bool ok = false;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            ok = ok || strcmp(key, known[i]) == 0;
        if (!ok)
            return answer(ans, 400, "unknown member in the command");
    }
    r->name = json_string_value(json_object_get(body, "name"));
    if (!r->name || !drv_id_valid(r->name))
        return answer(ans, 400, "name: 1..128 of A-Z a-z 0-9 _ - . :");
    r->params = json_object_get(body, "params");
    if (r->params) {
        char *text = json_dumps(r->params, JSON_COMPACT | JSON_ENCODE_ANY);
        size_t n = text ? strlen(text) : SIZE_MAX;
        free(text); /* jansson's allocation */
        if (n > PARAMS_MAX)
            return answer(ans, 400, "params: at most 16 KiB of JSON");
    }
    int64_t wait;
    if (!int_member(body, "timeout_ms", 1, TIMEOUT_MAX_MS, TIMEOUT_DEFAULT_MS, &r->timeout_ms))
        return answer(ans, 400, "timeout_ms: an integer 1..3600000");
    if (!int_member(body, "max_attempts", 1, ATTEMPTS_MAX, ATTEMPTS_DEFAULT, &r->max_attempts))
        return answer(ans, 400, "max_attempts: an integer 1..20");
    if (!int_member(body, "wait_ms", 0, WAIT_MAX_MS, 0, &wait))
        return answer(ans, 400, "wait_ms: an integer 0..60000");
    json_t *at = json_object_get(body, "expires_at");
    int64_t in;
    if (at && json_object_get(body, "expires_in_ms"))
        return answer(ans, 400, "give expires_in_ms or expires_at, not both");
    if (at) {
        const char *t = json_string_value(at);
        if (!t || !drv_parse_time_ms(t, strlen(t), &r->expires_ms) || r->expires_ms <= now ||
            r->expires_ms - now > EXPIRES_MAX_MS)
            return answer(ans, 400, "expires_at: an RFC 3339 time in the next 30 days");
    } else if (!int_member(body, "expires_in_ms", 1, EXPIRES_MAX_MS, EXPIRES_DEFAULT_MS, &in)) {
        return answer(ans, 400, "expires_in_ms: an integer 1..2592000000 (30 days)");
    } else {
        r->expires_ms = now + in;
    }
    json_t *k = json_object_get(body, "idempotency_key");
    if (k && !json_is_string(k))
        return answer(ans, 400, "idempotency_key: a string");
    const char *bk = json_string_value(k);
    if (bk && idem_header && strcmp(bk, idem_header) != 0)
        return answer(ans, 400, "the Idempotency-Key header and idempotency_key differ");
    r->idem_key = bk ? bk : idem_header;
    if (r->idem_key && !key_valid(r->idem_key))
        return answer(ans, 400, "idempotency_key: 1..128 printable ASCII characters");
    return answer(ans, 200, NULL);
}

bool drv_twin_command_body_valid(json_t *body, const char *idem_header, drv_twin_answer *ans)
{
    cmd_request r;
    return parse_request(body, idem_header, twin_now_ms(), &r, ans);
}

void drv_twin_api_command_create(drv_twin *tw, drv_twin_store *st, const char *tenant,
                                 const char *device, json_t *body, const char *idem_header,
                                 const char *batch, json_t **out, bool *replayed,
                                 drv_twin_answer *ans)
{
    *out = NULL;
    *replayed = false;
    int64_t now = twin_now_ms();
    cmd_request r;
    if (!parse_request(body, idem_header, now, &r, ans))
        return;
    int64_t waiting = 0, cap = tw->cfg.cmd_max_pending ? tw->cfg.cmd_max_pending : 1000;
    if (st->ops->command_waiting(st, tenant, device, &waiting) != DRV_OK) {
        answer(ans, 500, "the device's commands could not be read");
        return;
    }
    if (waiting >= cap) {
        answer(ans, 409, "the device has too many commands waiting (commands.max_pending)");
        return;
    }
    drv_command c = {0};
    snprintf(c.tenant, sizeof(c.tenant), "%s", tenant);
    snprintf(c.device, sizeof(c.device), "%s", device);
    snprintf(c.batch, sizeof(c.batch), "%s", batch ? batch : "");
    snprintf(c.name, sizeof(c.name), "%s", r.name);
    snprintf(c.idem_key, sizeof(c.idem_key), "%s", r.idem_key ? r.idem_key : "");
    char *params = r.params ? json_dumps(r.params, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    c.params = drv_strdup(params ? params : "{}");
    free(params); /* jansson's allocation */
    c.state = DRV_CMD_QUEUED;
    c.max_attempts = (uint32_t)r.max_attempts;
    c.timeout_ms = r.timeout_ms;
    c.created_ms = c.updated_ms = now;
    c.expires_ms = r.expires_ms;
    c.next_ms = r.expires_ms;
    drv_err e = c.params ? st->ops->command_add(st, &c) : DRV_NOMEM;
    if (e == DRV_EXISTS) {
        /* The key was used: the same request gets the same command back. */
        json_t *stored = json_text(c.params);
        json_t *asked = r.params ? json_incref(r.params) : json_object();
        bool same = strcmp(c.name, r.name) == 0 && json_equal(stored, asked);
        json_decref(stored);
        json_decref(asked);
        if (!same) {
            answer(ans, 409, "the idempotency key was used for another command");
            drv_command_clear(&c);
            return;
        }
        *replayed = true;
    } else if (e != DRV_OK) {
        answer(ans, 500, "the command could not be stored");
        drv_command_clear(&c);
        return;
    }
    e = st->ops->command_json(st, tenant, c.id, out);
    if (e != DRV_OK) {
        answer(ans, 500, "the command could not be read back");
    } else {
        answer(ans, 202, NULL);
        if (!*replayed) {
            atomic_fetch_add_explicit(&tw->stats.commands_created, 1, memory_order_relaxed);
            twin_batch b = {0};
            cmd_event(tw, &b, &c);
            if (!batch) { /* a batch's caller flushes and kicks after its commit */
                twin_batch_finish(tw, &b, true);
                twin_kick(tw, tenant, device);
            }
        }
    }
    drv_command_clear(&c);
}

void drv_twin_kick(drv_twin *tw, const char *tenant, const char *device)
{
    twin_kick(tw, tenant, device);
}

void drv_twin_api_flush(drv_twin *tw, bool committed)
{
    twin_batch b = {.staged = true};
    twin_batch_finish(tw, &b, committed);
}

void drv_twin_api_command_cancel(drv_twin *tw, drv_twin_store *st, const char *tenant,
                                 const char *id, const drv_twin_actor *who, json_t **out,
                                 drv_twin_answer *ans)
{
    *out = NULL;
    for (int attempt = 0; attempt < 5; attempt++) {
        drv_command c = {0};
        drv_err e = st->ops->command_get(st, tenant, id, &c);
        if (e != DRV_OK) {
            answer(ans, e == DRV_NOTFOUND ? 404 : 500,
                   e == DRV_NOTFOUND ? "no such command" : "the command could not be read");
            drv_command_clear(&c);
            return;
        }
        if (drv_cmd_terminal(c.state)) {
            char why[64];
            snprintf(why, sizeof(why), "the command is already %s", drv_cmd_state_name(c.state));
            answer(ans, 409, why);
            drv_command_clear(&c);
            return;
        }
        drv_cmd_state from = c.state;
        c.state = DRV_CMD_CANCELLED;
        c.updated_ms = twin_now_ms();
        c.next_ms = 0;
        json_t *detail = json_pack("{s:s}", "by", who->actor);
        e = st->ops->command_update(st, &c, from, detail);
        json_decref(detail);
        if (e == DRV_OK) {
            twin_batch b = {0};
            cmd_event(tw, &b, &c);
            twin_batch_settled(&b, c.tenant, c.id);
            twin_batch_finish(tw, &b, true);
            e = st->ops->command_json(st, tenant, id, out);
            answer(ans, e == DRV_OK ? 200 : 500, NULL);
            drv_command_clear(&c);
            return;
        }
        drv_command_clear(&c);
        if (e != DRV_CONFLICT) {
            answer(ans, 500, "the command could not be updated");
            return;
        }
    }
    answer(ans, 409, "the command kept changing: try again");
}

drv_err drv_twin_api_cancel_device(drv_twin *tw, drv_twin_store *st, const char *tenant,
                                   const char *device, const drv_twin_actor *who, uint32_t *n)
{
    static const drv_cmd_state open[] = {DRV_CMD_QUEUED, DRV_CMD_SENT, DRV_CMD_DELIVERED};
    *n = 0;
    for (size_t k = 0; k < sizeof(open) / sizeof(open[0]); k++) {
        /* Each page is cancelled before the next is read: a cancelled command
         * leaves the state's list, so the first page is read again. */
        for (;;) {
            drv_cmd_filter f = {.device = device, .state = (int)open[k]};
            json_t *l = NULL;
            drv_err e = st->ops->command_list(st, tenant, &f, NULL, 100, &l);
            if (e != DRV_OK)
                return e;
            json_t *items = json_object_get(l, "items");
            size_t i, before = *n;
            json_t *item;
            json_array_foreach(items, i, item)
            {
                json_t *doc = NULL;
                drv_twin_answer ans;
                drv_twin_api_command_cancel(tw, st, tenant,
                                            json_string_value(json_object_get(item, "id")), who,
                                            &doc, &ans);
                json_decref(doc);
                if (ans.status == 200)
                    (*n)++;
            }
            bool more = json_array_size(items) == 100 && *n > before;
            json_decref(l);
            if (!more)
                break;
        }
    }
    return DRV_OK;
}
