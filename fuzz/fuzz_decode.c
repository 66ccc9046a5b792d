/*
 * fuzz_decode.c — libFuzzer harness for the MQTT codec's decoder.
 *
 * Input: one mode byte, then a byte stream of packets as a connection would
 * carry them.  Mode byte:
 *   bits 0-3  protocol level: 3, 4 or 5 (other values map to 3 + v % 3)
 *   bit 4     from_server: decode as a client (packets a server sends)
 *   bit 5     start before CONNECT (level 0) and take the level from the
 *             first CONNECT that decodes, as the broker does
 * The stream is framed with mqtt_parse_fixed_header and every complete
 * packet goes through mqtt_decode (decoding goes on after a failure, to
 * reach more packets).  Each body is copied into its own heap block of
 * exactly its size, so any read past the packet is an ASan report.
 *
 * Invariants checked (abort on violation), all promised by mqtt.h:
 *   - the result is OK, MALFORMED (reason 0x81), PROTOCOL (another reason
 *     >= 0x80) or UNSUPPORTED (0x84, CONNECT only), with `what` set on failure
 *     and reason 0 / what NULL on success;
 *   - every view in a decoded packet lies inside the body;
 *   - mqtt_props_next walks a decoded property block to its exact end, and
 *     agrees with `present` and `user_property_count`;
 *   - mqtt_sub_next walks exactly `count` entries to the end of `entries`;
 *   - a decoded PUBLISH re-encodes to the same first byte and body, and
 *     its size is mqtt_publish_size; decoded acks, SUBACK/UNSUBACK,
 *     CONNACK (5.0), DISCONNECT/AUTH, PING and CONNECT (without will)
 *     re-encode to packets that decode to the same values.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "mqtt/mqtt.h"

#include "fuzz.h"

/* The body being decoded, for the "views stay inside" checks. */
static const uint8_t *body_lo, *body_hi;

static void check_view(mqtt_bytes b)
{
    if (b.len == 0)
        return;
    FUZZ_ASSERT(b.p != NULL);
    FUZZ_ASSERT(b.p >= body_lo && b.p + b.len <= body_hi);
}

static bool same_bytes(mqtt_bytes a, mqtt_bytes b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static int popcount64(uint64_t v)
{
    int n = 0;
    for (; v; v &= v - 1)
        n++;
    return n;
}

static void check_props(const mqtt_props *p)
{
    check_view(p->raw);
    check_view(p->content_type);
    check_view(p->response_topic);
    check_view(p->correlation_data);
    check_view(p->assigned_client_id);
    check_view(p->auth_method);
    check_view(p->auth_data);
    check_view(p->response_info);
    check_view(p->server_reference);
    check_view(p->reason_string);
    FUZZ_ASSERT(!mqtt_props_has(p, MQTT_PROP_USER_PROPERTY));
    if (mqtt_props_has(p, MQTT_PROP_RESPONSE_TOPIC))
        FUZZ_ASSERT(mqtt_topic_name_valid(p->response_topic.p, p->response_topic.len));
    if (mqtt_props_has(p, MQTT_PROP_AUTH_DATA))
        FUZZ_ASSERT(mqtt_props_has(p, MQTT_PROP_AUTH_METHOD));
    FUZZ_ASSERT(p->payload_format <= 1);

    uint32_t pos = 0, users = 0;
    int others = 0;
    uint64_t seen = 0;
    mqtt_prop pr;
    while (mqtt_props_next(&p->raw, &pos, &pr)) {
        FUZZ_ASSERT(pos <= p->raw.len);
        FUZZ_ASSERT(pr.raw.len > 0 && pr.raw.p >= p->raw.p &&
                    pr.raw.p + pr.raw.len <= p->raw.p + p->raw.len);
        check_view(pr.key);
        check_view(pr.value);
        FUZZ_ASSERT(pr.id < 64);
        if (pr.id == MQTT_PROP_USER_PROPERTY) {
            users++;
            FUZZ_ASSERT(mqtt_utf8_valid(pr.key.p, pr.key.len));
            FUZZ_ASSERT(mqtt_utf8_valid(pr.value.p, pr.value.len));
        } else {
            FUZZ_ASSERT(mqtt_props_has(p, pr.id));
            FUZZ_ASSERT(!((seen >> pr.id) & 1)); /* no duplicates got through */
            seen |= 1ull << pr.id;
            others++;
        }
    }
    FUZZ_ASSERT(pos == p->raw.len); /* a validated block walks to its end */
    FUZZ_ASSERT(users == p->user_property_count);
    FUZZ_ASSERT(others == popcount64(p->present));
}

/* A builder that re-emits a decoded property block verbatim. */
static void props_forward(mqtt_prop_builder *pb, const mqtt_props *p)
{
    mqtt_pb_init(pb);
    pb->extra = p->raw.p;
    pb->extra_len = p->raw.len;
}

static bool same_props(const mqtt_props *a, const mqtt_props *b)
{
    return a->present == b->present && a->user_property_count == b->user_property_count &&
           same_bytes(a->raw, b->raw);
}

/* Decode the single packet at the start of out (must be complete and exact). */
static drv_err redecode(const drv_buf *out, uint8_t version, bool from_server, mqtt_packet *pkt)
{
    uint8_t first;
    uint32_t remaining;
    size_t header_len;
    mqtt_decode_error err;
    const uint8_t *p = out->data + out->off;
    FUZZ_ASSERT(mqtt_parse_fixed_header(p, drv_buf_avail(out), &first, &remaining, &header_len) ==
                DRV_OK);
    FUZZ_ASSERT(header_len + remaining == drv_buf_avail(out));
    return mqtt_decode(first, p + header_len, remaining, version, from_server, pkt, &err);
}

static void roundtrip_publish(uint8_t first, const uint8_t *body, uint32_t len, uint8_t version,
                              bool from_server, const mqtt_publish *p)
{
    mqtt_prop_builder pb;
    props_forward(&pb, &p->props);
    mqtt_publish_out po = {
        .qos = p->qos,
        .dup = p->dup,
        .retain = p->retain,
        .packet_id = p->packet_id,
        .topic = p->topic.p,
        .topic_len = (uint16_t)p->topic.len,
        .payload = p->payload.p,
        .payload_len = p->payload.len,
        .props = version == MQTT_V5 ? &pb : NULL,
    };
    drv_buf out;
    drv_buf_init(&out, (size_t)len + 16);
    FUZZ_ASSERT(mqtt_encode_publish(&out, version, &po) == DRV_OK);
    FUZZ_ASSERT(drv_buf_avail(&out) == mqtt_publish_size(version, &po));
    /* Same first byte, same body: the fixed header's length may differ only in
     * its encoding (a non-minimal remaining length is accepted on input). */
    uint8_t f2;
    uint32_t rem2;
    size_t hl2;
    FUZZ_ASSERT(mqtt_parse_fixed_header(out.data, out.len, &f2, &rem2, &hl2) == DRV_OK);
    FUZZ_ASSERT(f2 == first);
    FUZZ_ASSERT(rem2 == len);
    FUZZ_ASSERT(memcmp(out.data + hl2, body, len) == 0);

    mqtt_packet q;
    FUZZ_ASSERT(redecode(&out, version, from_server, &q) == DRV_OK);
    FUZZ_ASSERT(q.type == MQTT_PUBLISH);
    FUZZ_ASSERT(q.u.publish.qos == p->qos && q.u.publish.dup == p->dup &&
                q.u.publish.retain == p->retain && q.u.publish.packet_id == p->packet_id);
    FUZZ_ASSERT(same_bytes(q.u.publish.topic, p->topic));
    FUZZ_ASSERT(same_bytes(q.u.publish.payload, p->payload));
    FUZZ_ASSERT(same_props(&q.u.publish.props, &p->props));
    drv_buf_free(&out);
}

static void roundtrip_ack(mqtt_type type, uint8_t version, bool from_server, const mqtt_ack *a)
{
    mqtt_prop_builder pb;
    props_forward(&pb, &a->props);
    drv_buf out;
    drv_buf_init(&out, (size_t)a->props.raw.len + 16);
    FUZZ_ASSERT(mqtt_encode_ack(&out, version, type, a->packet_id, a->reason, &pb) == DRV_OK);
    mqtt_packet q;
    FUZZ_ASSERT(redecode(&out, version, from_server, &q) == DRV_OK);
    FUZZ_ASSERT(q.type == type);
    FUZZ_ASSERT(q.u.ack.packet_id == a->packet_id && q.u.ack.reason == a->reason);
    FUZZ_ASSERT(same_props(&q.u.ack.props, &a->props));
    drv_buf_free(&out);
}

static void roundtrip_suback(mqtt_type type, uint8_t version, const mqtt_suback *s)
{
    mqtt_prop_builder pb;
    props_forward(&pb, &s->props);
    drv_buf out;
    drv_buf_init(&out, (size_t)s->props.raw.len + s->reasons.len + 16);
    FUZZ_ASSERT(mqtt_encode_suback(&out, version, type, s->packet_id, s->reasons.p, s->reasons.len,
                                   &pb) == DRV_OK);
    mqtt_packet q;
    FUZZ_ASSERT(redecode(&out, version, true, &q) == DRV_OK);
    FUZZ_ASSERT(q.type == type && q.u.suback.packet_id == s->packet_id);
    if (type == MQTT_UNSUBACK && version < MQTT_V5)
        FUZZ_ASSERT(q.u.suback.reasons.len == 0); /* 3.x UNSUBACK has no payload */
    else
        FUZZ_ASSERT(same_bytes(q.u.suback.reasons, s->reasons));
    FUZZ_ASSERT(same_props(&q.u.suback.props, &s->props));
    drv_buf_free(&out);
}

static void roundtrip_connack(uint8_t version, const mqtt_connack *c)
{
    if (version != MQTT_V5)
        return; /* 3.x: the encoder maps 5.0 reasons to return codes */
    mqtt_prop_builder pb;
    props_forward(&pb, &c->props);
    drv_buf out;
    drv_buf_init(&out, (size_t)c->props.raw.len + 16);
    FUZZ_ASSERT(mqtt_encode_connack(&out, version, c->session_present, c->reason, &pb) == DRV_OK);
    mqtt_packet q;
    FUZZ_ASSERT(redecode(&out, version, true, &q) == DRV_OK);
    FUZZ_ASSERT(q.type == MQTT_CONNACK);
    FUZZ_ASSERT(q.u.connack.session_present == c->session_present &&
                q.u.connack.reason == c->reason);
    FUZZ_ASSERT(same_props(&q.u.connack.props, &c->props));
    drv_buf_free(&out);
}

static void roundtrip_disconnect(mqtt_type type, uint8_t version, bool from_server,
                                 const mqtt_disconnect *d)
{
    mqtt_prop_builder pb;
    props_forward(&pb, &d->props);
    drv_buf out;
    drv_buf_init(&out, (size_t)d->props.raw.len + 16);
    FUZZ_ASSERT(mqtt_encode_disconnect(&out, version, type, d->reason, &pb) == DRV_OK);
    mqtt_packet q;
    FUZZ_ASSERT(redecode(&out, version, from_server, &q) == DRV_OK);
    FUZZ_ASSERT(q.type == type && q.u.disconnect.reason == d->reason);
    FUZZ_ASSERT(same_props(&q.u.disconnect.props, &d->props));
    drv_buf_free(&out);
}

/* NUL-terminated heap copy of a view (NULL if it holds a NUL byte). */
static char *cstr(mqtt_bytes b)
{
    if (b.len && memchr(b.p, 0, b.len))
        return NULL;
    char *s = malloc((size_t)b.len + 1);
    FUZZ_ASSERT(s != NULL);
    if (b.len)
        memcpy(s, b.p, b.len);
    s[b.len] = '\0';
    return s;
}

static void roundtrip_connect(const mqtt_connect *c)
{
    /* The client encoder has no will and no 3.1 reserved flag. */
    if (c->will_flag)
        return;
    char *id = cstr(c->client_id);
    char *user = c->has_username ? cstr(c->username) : NULL;
    char *pass = c->has_password ? cstr(c->password) : NULL;
    if (!id || (c->has_username && !user) || (c->has_password && !pass))
        goto out; /* a NUL in the password (the only field that may hold one) */
    mqtt_prop_builder pb;
    props_forward(&pb, &c->props);
    mqtt_connect_out co = {
        .version = c->protocol_version,
        .clean_start = c->clean_start,
        .keep_alive = c->keep_alive,
        .client_id = id,
        .username = user,
        .password = pass,
        .props = &pb,
    };
    drv_buf out;
    drv_buf_init(&out, (size_t)c->props.raw.len + c->client_id.len + c->username.len +
                           c->password.len + 64);
    FUZZ_ASSERT(mqtt_encode_connect(&out, &co) == DRV_OK);
    mqtt_packet q;
    FUZZ_ASSERT(redecode(&out, 0, false, &q) == DRV_OK);
    const mqtt_connect *d = &q.u.connect;
    FUZZ_ASSERT(q.type == MQTT_CONNECT);
    FUZZ_ASSERT(d->protocol_version == c->protocol_version &&
                same_bytes(d->protocol_name, c->protocol_name));
    FUZZ_ASSERT(d->clean_start == c->clean_start && d->keep_alive == c->keep_alive);
    FUZZ_ASSERT(same_bytes(d->client_id, c->client_id));
    FUZZ_ASSERT(d->has_username == c->has_username && same_bytes(d->username, c->username));
    FUZZ_ASSERT(d->has_password == c->has_password && same_bytes(d->password, c->password));
    FUZZ_ASSERT(same_props(&d->props, &c->props));
    drv_buf_free(&out);
out:
    free(id);
    free(user);
    free(pass);
}

static void check_result(drv_err e, const mqtt_packet *pkt, uint8_t first,
                         const mqtt_decode_error *err)
{
    FUZZ_ASSERT(pkt->type == (mqtt_type)(first >> 4) && pkt->flags == (first & 0x0F));
    FUZZ_ASSERT(mqtt_reason_str(err->reason) != NULL);
    switch (e) {
    case DRV_OK:
        FUZZ_ASSERT(err->reason == MQTT_RC_SUCCESS && err->what == NULL);
        break;
    case DRV_MALFORMED:
        FUZZ_ASSERT(err->reason == MQTT_RC_MALFORMED_PACKET && err->what != NULL);
        break;
    case DRV_PROTOCOL:
        FUZZ_ASSERT(err->reason >= 0x80 && err->reason != MQTT_RC_MALFORMED_PACKET);
        FUZZ_ASSERT(err->what != NULL);
        break;
    case DRV_UNSUPPORTED:
        FUZZ_ASSERT(pkt->type == MQTT_CONNECT);
        FUZZ_ASSERT(err->reason == MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION && err->what != NULL);
        break;
    default:
        FUZZ_ASSERT(!"unexpected drv_err from mqtt_decode");
    }
}

static void check_subscribe(const mqtt_subscribe *s, bool is_subscribe, uint8_t version)
{
    check_props(&s->props);
    check_view(s->entries);
    FUZZ_ASSERT(s->packet_id != 0 && s->count > 0);
    uint32_t pos = 0, n = 0;
    mqtt_sub_entry e;
    while (mqtt_sub_next(s, is_subscribe, &pos, &e)) {
        check_view(e.filter);
        FUZZ_ASSERT(e.filter.len > 0 && mqtt_utf8_valid(e.filter.p, e.filter.len));
        FUZZ_ASSERT(e.qos <= 2 && e.retain_handling <= 2);
        if (!is_subscribe || version < MQTT_V5)
            FUZZ_ASSERT(!e.no_local && !e.retain_as_published && e.retain_handling == 0);
        if (!is_subscribe)
            FUZZ_ASSERT(e.qos == 0);
        /* What the broker does next with each filter must be safe too. */
        mqtt_bytes group, filter;
        bool valid;
        if (mqtt_shared_split(e.filter.p, e.filter.len, &group, &filter, &valid) && valid)
            FUZZ_ASSERT(mqtt_topic_filter_valid(filter.p, filter.len));
        (void)mqtt_topic_filter_valid(e.filter.p, e.filter.len);
        n++;
    }
    FUZZ_ASSERT(n == s->count);
    FUZZ_ASSERT(pos == s->entries.len);
}

static void check_decoded(const mqtt_packet *pkt, uint8_t first, const uint8_t *body, uint32_t len,
                          uint8_t version, bool from_server)
{
    switch (pkt->type) {
    case MQTT_CONNECT: {
        const mqtt_connect *c = &pkt->u.connect;
        FUZZ_ASSERT(c->protocol_version == MQTT_V31 || c->protocol_version == MQTT_V311 ||
                    c->protocol_version == MQTT_V5);
        FUZZ_ASSERT(c->will_qos <= 2);
        check_view(c->protocol_name);
        check_view(c->client_id);
        check_view(c->will_topic);
        check_view(c->will_payload);
        check_view(c->username);
        check_view(c->password);
        check_props(&c->props);
        check_props(&c->will_props);
        FUZZ_ASSERT(mqtt_utf8_valid(c->client_id.p, c->client_id.len));
        if (c->will_flag)
            FUZZ_ASSERT(mqtt_topic_name_valid(c->will_topic.p, c->will_topic.len));
        roundtrip_connect(c);
        break;
    }
    case MQTT_CONNACK:
        check_props(&pkt->u.connack.props);
        roundtrip_connack(version, &pkt->u.connack);
        break;
    case MQTT_PUBLISH: {
        const mqtt_publish *p = &pkt->u.publish;
        check_view(p->topic);
        check_view(p->payload);
        check_props(&p->props);
        FUZZ_ASSERT(p->qos <= 2 && !(p->qos == 0 && p->dup));
        FUZZ_ASSERT((p->qos > 0) == (p->packet_id != 0));
        if (p->topic.len > 0)
            FUZZ_ASSERT(mqtt_topic_name_valid(p->topic.p, p->topic.len));
        else
            FUZZ_ASSERT(version == MQTT_V5 && mqtt_props_has(&p->props, MQTT_PROP_TOPIC_ALIAS));
        roundtrip_publish(first, body, len, version, from_server, p);
        break;
    }
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        FUZZ_ASSERT(pkt->u.ack.packet_id != 0);
        check_props(&pkt->u.ack.props);
        roundtrip_ack(pkt->type, version, from_server, &pkt->u.ack);
        break;
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE:
        check_subscribe(&pkt->u.subscribe, pkt->type == MQTT_SUBSCRIBE, version);
        break;
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        check_props(&pkt->u.suback.props);
        check_view(pkt->u.suback.reasons);
        roundtrip_suback(pkt->type, version, &pkt->u.suback);
        break;
    case MQTT_PINGREQ:
    case MQTT_PINGRESP:
        FUZZ_ASSERT(len == 0);
        break;
    case MQTT_DISCONNECT:
    case MQTT_AUTH:
        FUZZ_ASSERT(pkt->type != MQTT_AUTH || version == MQTT_V5);
        check_props(&pkt->u.disconnect.props);
        roundtrip_disconnect(pkt->type, version, from_server, &pkt->u.disconnect);
        break;
    default:
        FUZZ_ASSERT(!"decoded a reserved packet type");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t level = data[0] & 0x0F;
    if (level < MQTT_V31 || level > MQTT_V5)
        level = (uint8_t)(MQTT_V31 + level % 3);
    const bool from_server = data[0] & 0x10;
    uint8_t version = (data[0] & 0x20) ? 0 : level;
    const uint8_t *p = data + 1;
    size_t n = size - 1;

    while (n > 0) {
        uint8_t first;
        uint32_t remaining;
        size_t header_len;
        drv_err e = mqtt_parse_fixed_header(p, n, &first, &remaining, &header_len);
        if (e == DRV_AGAIN) {
            FUZZ_ASSERT(n < 5);
            break;
        }
        FUZZ_ASSERT(e == DRV_OK || e == DRV_MALFORMED);
        if (e != DRV_OK) {
            FUZZ_ASSERT(n >= 5 && (p[4] & 0x80));
            break;
        }
        FUZZ_ASSERT(header_len >= 2 && header_len <= 5 && header_len <= n);
        FUZZ_ASSERT(remaining <= 268435455u);
        if (remaining > n - header_len)
            break; /* incomplete: the broker would wait */

        uint8_t *body = malloc(remaining ? remaining : 1);
        FUZZ_ASSERT(body != NULL);
        if (remaining)
            memcpy(body, p + header_len, remaining);
        body_lo = body;
        body_hi = body + remaining;

        mqtt_packet pkt;
        mqtt_decode_error err;
        e = mqtt_decode(first, body, remaining, version, from_server, &pkt, &err);
        check_result(e, &pkt, first, &err);
        if (e == DRV_OK) {
            if (version == 0)
                FUZZ_ASSERT(pkt.type == MQTT_CONNECT);
            check_decoded(&pkt, first, body, remaining, version ? version : level, from_server);
            if (version == 0 && pkt.type == MQTT_CONNECT)
                version = pkt.u.connect.protocol_version;
        }
        free(body);
        p += header_len + remaining;
        n -= header_len + remaining;
    }
    return 0;
}
