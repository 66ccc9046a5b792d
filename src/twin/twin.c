/*
 * twin.c — the twin service's thread, its inbox, and how what it decides
 * reaches devices and the live stream (see twin.h).
 *
 * A turn of the thread: take the whole inbox; run every device message in
 * one store transaction; commit; then publish the answers, flush the live
 * events, tell the API's waiters, and release the workers waiting for that
 * commit.  Connects, subscriptions and kicks come after the commit (they
 * only read, or send commands, in small transactions of their own).  Then
 * the command deadlines that are due.  The thread sleeps until new work or
 * the earliest deadline (the store's due_next).
 */
#include "twin/twin_int.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/log.h"
#include "mqtt/mqtt.h"
#include "platform/clock.h"

#define HOUR_MS 3600000LL
#define DAY_MS 86400000LL
#define IDLE_WAIT_MS 60000 /* with nothing due: wake up now and then (history pruning) */
#define COMMIT_WAIT_MS 10000
#define PRUNE_ROWS 5000

/* The worker's messages queued since its last commit wait: the first and
 * last numbers, and how many batches had failed when the first was queued. */
static _Thread_local uint64_t tl_first_seq, tl_last_seq, tl_fail_mark;

int64_t twin_now_ms(void)
{
    return (int64_t)drv_wall_ms();
}

static void bump(_Atomic uint64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* ------------------------------------------------------------------------ */
/* The inbox                                                                 */

static in_item *item_new(in_kind kind, const char *tenant, const char *device, const uint8_t *rest,
                         size_t rest_len, const uint8_t *payload, size_t payload_len)
{
    if (strlen(tenant) >= sizeof(((in_item *)0)->tenant) ||
        strlen(device) >= sizeof(((in_item *)0)->device))
        return NULL;
    in_item *it = drv_malloc(sizeof(*it) + rest_len + payload_len + 2);
    if (!it)
        return NULL;
    memset(it, 0, sizeof(*it));
    it->kind = kind;
    snprintf(it->tenant, sizeof(it->tenant), "%s", tenant);
    snprintf(it->device, sizeof(it->device), "%s", device);
    it->rest = it->data;
    it->rest_len = rest_len;
    if (rest_len)
        memcpy(it->rest, rest, rest_len);
    it->rest[rest_len] = '\0';
    it->payload = it->rest + rest_len + 1;
    it->payload_len = payload_len;
    if (payload_len)
        memcpy(it->payload, payload, payload_len);
    it->payload[payload_len] = '\0';
    return it;
}

/* Locked. */
static void push(drv_twin *tw, in_item *it)
{
    if (tw->tail)
        tw->tail->next = it;
    else
        tw->head = it;
    tw->tail = it;
    tw->pending++;
    tw->pending_bytes += it->payload_len;
    pthread_cond_signal(&tw->wake);
}

/* Queue a numbered device message (its PUBACK waits for its commit). */
static uint8_t enqueue(drv_twin *tw, in_kind kind, const char *tenant, const char *device,
                       const uint8_t *rest, size_t rest_len, const uint8_t *payload,
                       size_t payload_len, const char *claim_ca, const char *claim_fp)
{
    /* An oversized message is kept without its payload and answered 413. */
    size_t max = 2 * tw->cfg.shadow_max_bytes + 4096;
    if (max < TWIN_MESSAGE_MIN_MAX)
        max = TWIN_MESSAGE_MIN_MAX;
    bool oversize = payload_len > max;
    if (oversize)
        payload_len = 0;
    pthread_mutex_lock(&tw->lock);
    bool full = tw->pending >= tw->cfg.max_pending ||
                tw->pending_bytes + payload_len > TWIN_PENDING_BYTES || tw->stopping;
    in_item *it =
        full ? NULL : item_new(kind, tenant, device, rest, rest_len, payload, payload_len);
    if (it) {
        it->oversize = oversize;
        snprintf(it->claim_ca, sizeof(it->claim_ca), "%s", claim_ca ? claim_ca : "");
        snprintf(it->claim_fp, sizeof(it->claim_fp), "%s", claim_fp ? claim_fp : "");
        it->seq = ++tw->next_seq;
        if (!tl_last_seq) {
            tl_first_seq = it->seq;
            tl_fail_mark = tw->nfails;
        }
        tl_last_seq = it->seq;
        push(tw, it);
    }
    pthread_mutex_unlock(&tw->lock);
    if (!it) {
        bump(&tw->stats.refused_busy);
        return MQTT_RC_QUOTA_EXCEEDED;
    }
    bump(&tw->stats.device_messages);
    return MQTT_RC_SUCCESS;
}

uint8_t drv_twin_device_message(drv_twin *tw, const char *tenant, const char *device,
                                const uint8_t *rest, size_t rest_len, const uint8_t *payload,
                                size_t payload_len, bool *is_twin)
{
    *is_twin = twin_shadow_topic(rest, rest_len) || twin_cmd_topic(rest, rest_len);
    if (!*is_twin)
        return MQTT_RC_SUCCESS;
    return enqueue(tw, IN_MESSAGE, tenant, device, rest, rest_len, payload, payload_len, NULL,
                   NULL);
}

uint8_t drv_twin_claim_message(drv_twin *tw, const char *tenant, const char *cid,
                               const char *claim_ca, const char *claim_fp, const uint8_t *payload,
                               size_t payload_len)
{
    return enqueue(tw, IN_CLAIM, tenant, cid, NULL, 0, payload, payload_len, claim_ca, claim_fp);
}

static void push_unnumbered(drv_twin *tw, in_kind kind, const char *tenant, const char *device,
                            const uint8_t *filter, size_t filter_len)
{
    pthread_mutex_lock(&tw->lock);
    in_item *it = tw->pending >= tw->cfg.max_pending || tw->stopping
                      ? NULL
                      : item_new(kind, tenant, device, filter, filter_len, NULL, 0);
    if (it)
        push(tw, it);
    pthread_mutex_unlock(&tw->lock);
    if (!it)
        bump(&tw->stats.refused_busy); /* what waits goes out at the next connect or retry */
}

void drv_twin_session(drv_twin *tw, const char *tenant, const char *device, const uint8_t *filter,
                      size_t filter_len)
{
    push_unnumbered(tw, IN_SESSION, tenant, device, filter, filter ? filter_len : 0);
}

void twin_kick(drv_twin *tw, const char *tenant, const char *device)
{
    push_unnumbered(tw, IN_KICK, tenant, device, NULL, 0);
}

drv_err drv_twin_commit_wait(drv_twin *tw)
{
    uint64_t mine = tl_last_seq;
    if (mine == 0)
        return DRV_OK;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += COMMIT_WAIT_MS / 1000;
    drv_err e = DRV_OK;
    pthread_mutex_lock(&tw->lock);
    /* Also while stopping: the service finishes every message it took (and
     * takes no new ones) before it ends. */
    while (tw->committed_seq < mine) {
        if (pthread_cond_timedwait(&tw->done, &tw->lock, &until) == ETIMEDOUT) {
            e = DRV_AGAIN; /* kept: the next turn waits for them again */
            break;
        }
    }
    if (e == DRV_OK) {
        /* Did a batch holding any of this turn's messages fail? */
        if (tw->nfails - tl_fail_mark > TWIN_FAIL_RING)
            e = DRV_IO; /* too many failures since to tell: assume so */
        for (uint64_t k = tl_fail_mark; e == DRV_OK && k < tw->nfails; k++) {
            const twin_fail *f = &tw->fails[k % TWIN_FAIL_RING];
            if (f->lo <= mine && f->hi >= tl_first_seq)
                e = f->err;
        }
        tl_first_seq = tl_last_seq = 0; /* answered, either way */
    }
    pthread_mutex_unlock(&tw->lock);
    return e;
}

/* ------------------------------------------------------------------------ */
/* Publishing and events                                                     */

void drv_twin_set_inject(drv_twin *tw, uint32_t (*inject)(void *ud, const drv_inject *m), void *ud)
{
    pthread_mutex_lock(&tw->inject_lock);
    tw->inject = inject;
    tw->inject_ud = ud;
    pthread_mutex_unlock(&tw->inject_lock);
}

uint32_t twin_publish(drv_twin *tw, const char *tenant, const char *topic, const void *payload,
                      size_t len, const char *response_topic, const char *correlation,
                      uint32_t expiry_s)
{
    char ns[80];
    snprintf(ns, sizeof(ns), "$T/%s", tenant);
    drv_inject m = {
        .ns = ns,
        .topic = topic,
        .payload = payload,
        .payload_len = len,
        .qos = 1,
        .response_topic = response_topic,
        .correlation = (const uint8_t *)correlation,
        .correlation_len = correlation ? strlen(correlation) : 0,
        .content_type = "application/json",
        .expiry_s = expiry_s,
        .online_only = true,
    };
    pthread_mutex_lock(&tw->inject_lock);
    uint32_t n = tw->inject ? tw->inject(tw->inject_ud, &m) : 0;
    pthread_mutex_unlock(&tw->inject_lock);
    return n;
}

void twin_batch_publish(twin_batch *b, const char *tenant, const char *topic, json_t *payload)
{
    out_msg *o = drv_calloc(1, sizeof(*o));
    if (o) {
        o->topic = drv_strdup(topic);
        o->text = json_dumps(payload, JSON_COMPACT);
    }
    if (!o || !o->topic || !o->text) {
        drv_warn("twin: answer dropped", "tenant", tenant, "topic", topic, "error",
                 drv_strerror(DRV_NOMEM));
        if (o) {
            drv_free(o->topic);
            free(o->text); /* jansson's allocation */
            drv_free(o);
        }
        return;
    }
    snprintf(o->tenant, sizeof(o->tenant), "%s", tenant);
    if (b->out_tail)
        b->out_tail->next = o;
    else
        b->out = o;
    b->out_tail = o;
}

void twin_batch_event(drv_twin *tw, twin_batch *b, const char *type, const char *tenant,
                      const char *device, int64_t ts_ms, json_t *detail)
{
    if (!drv_bus_wanted(tw->cfg.bus))
        return;
    char *text = json_dumps(detail, JSON_COMPACT);
    if (text && strlen(text) > DRV_EVENT_MAX_TWIN_DETAIL) {
        /* Too large for one record: the event says so, without the state. */
        json_t *small = json_deep_copy(detail);
        json_object_del(small, "state");
        json_object_del(small, "delta");
        json_object_set_new(small, "truncated", json_true());
        free(text);
        text = json_dumps(small, JSON_COMPACT);
        json_decref(small);
    }
    if (!text)
        return;
    drv_event ev = {.kind = DRV_EVENT_TWIN,
                    .tenant = tenant,
                    .device = device,
                    .ts_ms = ts_ms,
                    .dev_kind = type,
                    .detail = text};
    drv_bus_stage(tw->cfg.bus, &ev);
    b->staged = true;
    free(text);
}

void twin_batch_settled(twin_batch *b, const char *tenant, const char *id)
{
    settled *s = drv_calloc(1, sizeof(*s));
    if (!s)
        return; /* a waiter then answers at its time-out, with the state as it is */
    snprintf(s->tenant, sizeof(s->tenant), "%s", tenant);
    snprintf(s->id, sizeof(s->id), "%s", id);
    s->next = b->done;
    b->done = s;
}

void twin_batch_finish(drv_twin *tw, twin_batch *b, bool committed)
{
    while (b->out) {
        out_msg *o = b->out;
        b->out = o->next;
        if (committed)
            twin_publish(tw, o->tenant, o->topic, o->text, strlen(o->text), NULL, NULL, 0);
        drv_free(o->topic);
        free(o->text); /* jansson's allocation */
        drv_free(o);
    }
    b->out_tail = NULL;
    if (b->staged) {
        if (committed)
            drv_bus_flush(tw->cfg.bus);
        else
            drv_bus_discard();
        b->staged = false;
    }
    while (b->done) {
        settled *s = b->done;
        b->done = s->next;
        if (committed) {
            bump(&tw->stats.commands_settled);
            if (tw->cfg.on_settled)
                tw->cfg.on_settled(tw->cfg.settled_ud, s->tenant, s->id);
        }
        drv_free(s);
    }
}

/* ------------------------------------------------------------------------ */
/* The service thread                                                        */

/* A registration by claim: the handler stores it (its own transaction in the
 * registry); the answer goes out with the batch. */
static void run_claim(drv_twin *tw, twin_batch *b, const in_item *it)
{
    json_t *answer = NULL;
    int code = 500;
    if (it->oversize)
        answer = json_pack("{s:i, s:s}", "code", code = 400, "message", "the request is too large");
    else if (tw->cfg.provision)
        code = tw->cfg.provision(tw->cfg.provision_ud, it->tenant, it->claim_ca, it->claim_fp,
                                 it->payload, it->payload_len, &answer);
    else
        answer = json_pack("{s:i, s:s}", "code", code, "message", "registration is not available");
    char topic[256];
    snprintf(topic, sizeof(topic), "provisioning/%s/register/%s", it->device,
             code == 200 ? "accepted" : "rejected");
    if (answer)
        twin_batch_publish(b, it->tenant, topic, answer);
    json_decref(answer);
}

/* Device messages of one turn, in one transaction. */

static void run_messages(drv_twin *tw, in_item *items)
{
    uint64_t lo = 0, hi = 0;
    twin_batch b = {0};
    drv_err e = tw->st->ops->begin(tw->st);
    for (in_item *it = items; it; it = it->next) {
        if (it->kind != IN_MESSAGE && it->kind != IN_CLAIM)
            continue;
        if (!lo)
            lo = it->seq;
        hi = it->seq;
        if (e != DRV_OK)
            continue;
        if (it->kind == IN_CLAIM)
            run_claim(tw, &b, it);
        else if (it->rest_len >= 7 && memcmp(it->rest, "shadow/", 7) == 0)
            twin_shadow_message(tw, &b, it);
        else
            twin_cmd_message(tw, &b, it);
    }
    if (!hi) {
        if (e == DRV_OK)
            tw->st->ops->rollback(tw->st); /* nothing written */
        return;
    }
    if (e == DRV_OK)
        e = tw->st->ops->commit(tw->st);
    if (e != DRV_OK) {
        tw->st->ops->rollback(tw->st);
        drv_error("twin: batch not stored; its devices send again", "error", drv_strerror(e));
    }
    twin_batch_finish(tw, &b, e == DRV_OK);
    bump(&tw->stats.batches);
    pthread_mutex_lock(&tw->lock);
    if (e != DRV_OK) {
        tw->fails[tw->nfails % TWIN_FAIL_RING].lo = lo;
        tw->fails[tw->nfails % TWIN_FAIL_RING].hi = hi;
        tw->fails[tw->nfails % TWIN_FAIL_RING].err = e;
        tw->nfails++;
    }
    tw->committed_seq = hi;
    pthread_cond_broadcast(&tw->done);
    pthread_mutex_unlock(&tw->lock);
}

/* Connects, subscriptions and kicks: what waited for those devices. */
static void run_sessions(drv_twin *tw, in_item *items)
{
    twin_batch b = {0};
    bool open = false;
    for (in_item *it = items; it; it = it->next) {
        if (it->kind == IN_MESSAGE || it->kind == IN_CLAIM)
            continue;
        const uint8_t *filter = it->kind == IN_SESSION && it->rest_len ? it->rest : NULL;
        if (it->kind == IN_SESSION)
            twin_shadow_session(tw, it->tenant, it->device, filter, it->rest_len);
        /* One transaction for every device of the turn (a thousand devices
         * connecting at once are one commit, not a thousand). */
        if (!open && tw->st->ops->begin(tw->st) != DRV_OK)
            continue;
        open = true;
        twin_cmd_send_pending(tw, &b, it->tenant, it->device, filter, it->rest_len,
                              it->kind == IN_SESSION);
    }
    if (!open)
        return;
    drv_err e = tw->st->ops->commit(tw->st);
    if (e != DRV_OK)
        tw->st->ops->rollback(tw->st);
    twin_batch_finish(tw, &b, e == DRV_OK);
}

/* The commands due by now; false when something due could not be moved on
 * (a store error): the caller waits a while before the next try. */
static bool run_due(drv_twin *tw, int64_t now)
{
    twin_batch b = {0};
    if (tw->st->ops->begin(tw->st) != DRV_OK)
        return false;
    uint32_t n = twin_cmd_run_due(tw, &b, now);
    drv_err e = tw->st->ops->commit(tw->st);
    if (e != DRV_OK)
        tw->st->ops->rollback(tw->st);
    twin_batch_finish(tw, &b, e == DRV_OK);
    return e == DRV_OK && n > 0;
}

static void prune_history(drv_twin *tw, int64_t now)
{
    if (tw->cfg.shadow_history_days == 0 || now - tw->last_prune_ms < HOUR_MS)
        return;
    tw->last_prune_ms = now;
    uint32_t n = PRUNE_ROWS;
    int64_t before = now - (int64_t)tw->cfg.shadow_history_days * DAY_MS;
    while (n == PRUNE_ROWS &&
           tw->st->ops->history_prune(tw->st, before, PRUNE_ROWS, &n) == DRV_OK) {
    }
}

static void free_items(in_item *it)
{
    while (it) {
        in_item *next = it->next;
        drv_free(it);
        it = next;
    }
}

static void *service_main(void *arg)
{
    drv_twin *tw = arg;
    int64_t next_due = 0;
    (void)tw->st->ops->due_next(tw->st, &next_due);
    for (;;) {
        pthread_mutex_lock(&tw->lock);
        while (!tw->head && !tw->stopping) {
            int64_t now = twin_now_ms();
            if (next_due && now >= next_due)
                break;
            /* The earliest deadline, but never longer than the idle wait:
             * history pruning needs the thread now and then. */
            int64_t until =
                next_due && next_due < now + IDLE_WAIT_MS ? next_due : now + IDLE_WAIT_MS;
            struct timespec ts = {.tv_sec = until / 1000, .tv_nsec = (until % 1000) * 1000000};
            if (pthread_cond_timedwait(&tw->wake, &tw->lock, &ts) == ETIMEDOUT)
                break; /* a deadline, or the idle wait: the turn below looks */
        }
        in_item *items = tw->head;
        bool stop = tw->stopping;
        tw->head = tw->tail = NULL;
        tw->pending = 0;
        tw->pending_bytes = 0;
        pthread_mutex_unlock(&tw->lock);
        if (items) {
            run_messages(tw, items);
            run_sessions(tw, items);
            free_items(items);
        }
        int64_t now = twin_now_ms();
        bool moved = next_due && now >= next_due && run_due(tw, now);
        prune_history(tw, now);
        if (tw->st->ops->due_next(tw->st, &next_due) != DRV_OK)
            next_due = now + 1000; /* look again soon */
        /* Still due and nothing moved: a store error; do not spin on it. */
        if (next_due && next_due <= now && !moved)
            next_due = now + 1000;
        if (stop && !items)
            break;
    }
    pthread_mutex_lock(&tw->lock);
    tw->committed_seq = tw->next_seq; /* nothing is left behind: release the waiters */
    pthread_cond_broadcast(&tw->done);
    pthread_mutex_unlock(&tw->lock);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                 */

drv_err drv_twin_open_store(drv_twin *tw, drv_twin_store **out)
{
    return drv_twin_store_open_sqlite(tw->cfg.data_dir, out);
}

drv_err drv_twin_start(const drv_twin_config *cfg, drv_twin **out)
{
    *out = NULL;
    drv_twin *tw = drv_calloc(1, sizeof(*tw));
    if (!tw)
        return DRV_NOMEM;
    tw->cfg = *cfg;
    tw->inject = cfg->inject;
    tw->inject_ud = cfg->inject_ud;

    drv_err e = drv_twin_store_open_sqlite(cfg->data_dir, &tw->st);
    if (e != DRV_OK) {
        drv_free(tw);
        return e;
    }
    pthread_mutex_init(&tw->lock, NULL);
    pthread_mutex_init(&tw->inject_lock, NULL);
    pthread_cond_init(&tw->wake, NULL);
    pthread_cond_init(&tw->done, NULL);
    /* The service takes no signals: they belong to the main loop. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&tw->thread, NULL, service_main, tw);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        drv_twin_stop(tw); /* no thread to join: releases the rest */
        return DRV_NOMEM;
    }
    tw->thread_started = true;
    *out = tw;
    return DRV_OK;
}

void drv_twin_stop(drv_twin *tw)
{
    if (!tw)
        return;
    pthread_mutex_lock(&tw->lock);
    tw->stopping = true;
    pthread_cond_broadcast(&tw->wake);
    pthread_mutex_unlock(&tw->lock);
    if (tw->thread_started)
        pthread_join(tw->thread, NULL);
    free_items(tw->head);
    drv_twin_store_close(tw->st);
    pthread_cond_destroy(&tw->done);
    pthread_cond_destroy(&tw->wake);
    pthread_mutex_destroy(&tw->inject_lock);
    pthread_mutex_destroy(&tw->lock);
    drv_free(tw);
}

void drv_twin_get_stats(drv_twin *tw, drv_twin_stats *out)
{
#define LOAD(f) out->f = atomic_load_explicit(&tw->stats.f, memory_order_relaxed)
    LOAD(shadow_updates);
    LOAD(shadow_rejected);
    LOAD(commands_created);
    LOAD(commands_sent);
    LOAD(commands_settled);
    LOAD(device_messages);
    LOAD(refused_busy);
    LOAD(batches);
#undef LOAD
}
