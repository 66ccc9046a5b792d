/* wheel.c — hashed timer wheel; see wheel.h. */
#include "platform/wheel.h"

#include <string.h>

void drv_wheel_init(drv_wheel *w, uint64_t now_ms)
{
    for (int i = 0; i < DRV_WHEEL_SLOTS; i++)
        w->slots[i].next = w->slots[i].prev = &w->slots[i];
    w->now_ms = w->pos_ms = now_ms;
}

static void unlink_timer(drv_timer *t)
{
    t->prev->next = t->next;
    t->next->prev = t->prev;
    t->next = t->prev = NULL;
}

void drv_wheel_stop(drv_timer *t)
{
    if (drv_timer_armed(t))
        unlink_timer(t);
}

void drv_wheel_start(drv_wheel *w, drv_timer *t, uint64_t ms, drv_timer_cb cb, void *ud)
{
    if (drv_timer_armed(t))
        unlink_timer(t);
    t->due_ms = w->now_ms + ms;
    t->cb = cb;
    t->ud = ud;
    /* A timer due before the processed position goes in the next slot processed. */
    uint64_t slot_time = t->due_ms > w->pos_ms ? t->due_ms : w->pos_ms + DRV_WHEEL_TICK_MS;
    drv_timer *head = &w->slots[(slot_time / DRV_WHEEL_TICK_MS) % DRV_WHEEL_SLOTS];
    t->next = head;
    t->prev = head->prev;
    head->prev->next = t;
    head->prev = t;
}

void drv_wheel_run(drv_wheel *w, uint64_t now_ms)
{
    if (now_ms > w->now_ms)
        w->now_ms = now_ms;
    now_ms = w->now_ms;
    while (w->pos_ms / DRV_WHEEL_TICK_MS <= now_ms / DRV_WHEEL_TICK_MS) {
        drv_timer *head = &w->slots[(w->pos_ms / DRV_WHEEL_TICK_MS) % DRV_WHEEL_SLOTS];
        /* Detach the due timers first so callbacks can re-arm freely. */
        drv_timer due;
        memset(&due, 0, sizeof(due));
        due.next = due.prev = &due;
        for (drv_timer *t = head->next, *n; t != head; t = n) {
            n = t->next;
            if (t->due_ms <= now_ms) {
                unlink_timer(t);
                t->next = &due;
                t->prev = due.prev;
                due.prev->next = t;
                due.prev = t;
            }
        }
        while (due.next != &due) {
            drv_timer *t = due.next;
            unlink_timer(t);
            t->cb(t->ud);
        }
        if (w->pos_ms / DRV_WHEEL_TICK_MS == now_ms / DRV_WHEEL_TICK_MS)
            break;
        w->pos_ms += DRV_WHEEL_TICK_MS;
    }
}
