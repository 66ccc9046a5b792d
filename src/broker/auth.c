/*
 * auth.c — the authentication thread: CONNECT checks that take real work
 * (Argon2id, registry lookups, signature verification) run here, without the
 * broker lock and off the workers, so one device's password hash never
 * stalls the traffic of every other device (ADR-0002's run-to-completion
 * rule has this one exception, and it is per connection, not per message).
 *
 *   worker (locked)                 auth thread                 owner worker (locked)
 *   handle_connect: slow? ──job──▶  authenticate(…)  ──done──▶  turn end: parse the
 *   c->auth_pending, input held                                 CONNECT again with the
 *                                                               outcome, CONNACK, go on
 *
 * One thread: backends keep caches that are then touched by one thread only,
 * and Argon2id's 19 MiB is allocated once at a time.  Jobs are served in
 * order; a flood of slow CONNECTs waits here (each still bound by the
 * CONNECT deadline) instead of in the workers.
 */
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "broker/broker_int.h"
#include "core/alloc.h"
#include "core/log.h"

_Thread_local auth_job *auth_outcome;

void auth_job_free(drv_broker *b, auth_job *j)
{
    if (!j)
        return;
    broker_auth_ctx_release(b, j->result.ctx); /* an outcome nobody used */
    drv_free(j->client_id);
    drv_free(j->username);
    if (j->password) {
        memset(j->password, 0, j->password_len); /* secrets do not linger in freed memory */
        drv_free(j->password);
    }
    drv_free(j);
}

/* Hand a finished job to its connection's owner and wake it (once per batch). */
static void deliver(drv_broker *b, auth_job *j)
{
    pthread_mutex_lock(&b->lock);
    worker *w = j->c->w;
    j->next = w->auth_done;
    w->auth_done = j;
    if (!w->wake_pending) {
        w->wake_pending = true;
        uint64_t one = 1;
        ssize_t r = write(w->wake_fd, &one, sizeof(one));
        (void)r;
    }
    pthread_mutex_unlock(&b->lock);
}

static void *auth_main(void *arg)
{
    drv_broker *b = arg;
    const drv_auth_ops *ops = b->cfg.auth_ops;
    pthread_mutex_lock(&b->auth_lock);
    for (;;) {
        while (!b->auth_head && !b->auth_stop)
            pthread_cond_wait(&b->auth_cond, &b->auth_lock);
        if (b->auth_stop)
            break;
        auth_job *j = b->auth_head;
        b->auth_head = j->next;
        if (!b->auth_head)
            b->auth_tail = NULL;
        pthread_mutex_unlock(&b->auth_lock);
        drv_client_identity who = {
            .client_id = j->client_id,
            .username = j->username,
            .peer = &j->peer,
            .cert = j->has_cert ? &j->cert : NULL,
            .ns = "",
        };
        j->err = ops->authenticate(b->cfg.auth_state, &who, j->password, j->password_len,
                                   j->has_password, &j->result);
        deliver(b, j);
        pthread_mutex_lock(&b->auth_lock);
    }
    pthread_mutex_unlock(&b->auth_lock);
    return NULL;
}

drv_err auth_thread_start(drv_broker *b)
{
    if (!b->cfg.auth_ops)
        return DRV_OK;
    /* Signals stay with worker 0. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&b->auth_thread, NULL, auth_main, b);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return DRV_NOMEM;
    b->auth_thread_running = true;
    return DRV_OK;
}

void auth_thread_stop(drv_broker *b)
{
    if (b->auth_thread_running) {
        pthread_mutex_lock(&b->auth_lock);
        b->auth_stop = true;
        pthread_cond_signal(&b->auth_cond);
        pthread_mutex_unlock(&b->auth_lock);
        pthread_join(b->auth_thread, NULL);
        b->auth_thread_running = false;
    }
    /* Jobs never run or never finished: their connections are closing anyway. */
    for (auth_job *j = b->auth_head, *n; j; j = n) {
        n = j->next;
        j->c->auth_pending = false;
        auth_job_free(b, j);
    }
    b->auth_head = b->auth_tail = NULL;
    for (int i = 0; i < b->nworkers && b->workers; i++) {
        worker *w = &b->workers[i];
        for (auth_job *j = w->auth_done, *n; j; j = n) {
            n = j->next;
            j->c->auth_pending = false;
            auth_job_free(b, j);
        }
        w->auth_done = NULL;
    }
    pthread_mutex_destroy(&b->auth_lock);
    pthread_cond_destroy(&b->auth_cond);
}

void auth_submit(drv_broker *b, auth_job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&b->auth_lock);
    if (b->auth_tail)
        b->auth_tail->next = j;
    else
        b->auth_head = j;
    b->auth_tail = j;
    pthread_cond_signal(&b->auth_cond);
    pthread_mutex_unlock(&b->auth_lock);
}

void auth_finish_done(worker *w)
{
    auth_job *list = w->auth_done;
    w->auth_done = NULL;
    /* The list is newest first: reverse it so CONNECTs finish in order. */
    auth_job *ordered = NULL;
    while (list) {
        auth_job *n = list->next;
        list->next = ordered;
        ordered = list;
        list = n;
    }
    while (ordered) {
        auth_job *j = ordered;
        ordered = j->next;
        conn *c = j->c;
        c->auth_pending = false;
        if (c->state == C_NEW)
            conn_auth_done(c, j);
        auth_job_free(w->b, j);
    }
}
