/*
 * sys.c — $SYS/broker/... statistics, published as retained messages every
 * sys_interval_s seconds (the Mosquitto topic names, so existing dashboards
 * work).  They go through normal routing, so subscribers to $SYS/# receive
 * them and late subscribers get the latest values; they are never logged.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "broker/broker_int.h"
#include "core/alloc.h"

static void publish_value(drv_broker *b, const char *topic, unsigned long long v)
{
    char payload[32];
    int n = snprintf(payload, sizeof(payload), "%llu", v);
    msg *m = msg_new(NULL, 0, (const uint8_t *)topic, (uint16_t)strlen(topic), NULL, 0,
                     (const uint8_t *)payload, (uint32_t)n, 0, true, 0);
    if (!m)
        return;
    route_publish(b, m, NULL);
    msg_unref(m);
}

static void publish_all(drv_broker *b)
{
    const drv_broker_stats *st = &b->stats;
    publish_value(b, "$SYS/broker/clients/connected", st->clients_connected);
    publish_value(b, "$SYS/broker/clients/total", st->clients_total);
    publish_value(b, "$SYS/broker/messages/received", st->msgs_received);
    publish_value(b, "$SYS/broker/messages/sent", st->msgs_sent);
    publish_value(b, "$SYS/broker/messages/dropped", st->msgs_dropped);
    publish_value(b, "$SYS/broker/bytes/received", st->bytes_received);
    publish_value(b, "$SYS/broker/bytes/sent", atomic_load(&b->bytes_sent));
    publish_value(b, "$SYS/broker/subscriptions/count", st->subscriptions);
    publish_value(b, "$SYS/broker/retained messages/count", st->retained);
    publish_value(b, "$SYS/broker/heap/current", drv_mem_used());
    publish_value(b, "$SYS/broker/uptime", broker_now_s() - b->start_s);
}

static void on_sys_timer(void *ud)
{
    drv_broker *b = ud;
    publish_all(b);
    drv_wheel_start(&b->wheel, &b->sys_timer, (uint64_t)b->cfg.sys_interval_s * 1000, on_sys_timer,
                    b);
}

void sys_start(drv_broker *b)
{
    if (b->cfg.sys_interval_s == 0)
        return;
    static const char version[] = "drover " DROVER_VERSION;
    msg *m = msg_new(NULL, 0, (const uint8_t *)"$SYS/broker/version", 19, NULL, 0,
                     (const uint8_t *)version, (uint32_t)strlen(version), 0, true, 0);
    if (m) {
        retain_store(b, m);
        msg_unref(m);
    }
    on_sys_timer(b);
}

void sys_stop(drv_broker *b)
{
    drv_wheel_stop(&b->sys_timer);
}
