/*
 * codec_test.c — unit tests for the MQTT codec (src/mqtt): fixed header and
 * variable byte integers, round trips through every encoder and
 * mqtt_decode, property walking, and a table of malformed packets with the
 * reason code the receiver must send.
 *
 * The malformed table is taken from the byte-level conformance corpus
 * (../shared/conformance/mqtt-sequences/<FILE>.json, test named in each
 * row).  Where the corpus only expects the connection to be closed (3.x, or
 * a CONNECT refused without CONNACK) the reason is not visible on the wire
 * and the row only demands that decoding fails.
 *
 * No framework: CHECK counts, prints file:line on failure, and main ends
 * with "N passed, N failed" and a non-zero status if anything failed.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"
#include "mqtt/mqtt.h"

#include "core/test.h"

/* Parse hex ("30 0E 00 05 ..."; spaces ignored) into out; returns the byte count. */
static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;
    int hi = -1;
    for (; *hex; hex++) {
        int v;
        if (*hex >= '0' && *hex <= '9')
            v = *hex - '0';
        else if (*hex >= 'a' && *hex <= 'f')
            v = *hex - 'a' + 10;
        else if (*hex >= 'A' && *hex <= 'F')
            v = *hex - 'A' + 10;
        else
            continue;
        if (hi < 0) {
            hi = v;
        } else {
            if (n == cap)
                abort(); /* a test table row longer than its buffer */
            out[n++] = (uint8_t)(hi << 4 | v);
            hi = -1;
        }
    }
    return n;
}

static bool bytes_eq(mqtt_bytes b, const void *s, size_t n)
{
    return b.len == n && (n == 0 || memcmp(b.p, s, n) == 0);
}

static bool bytes_is(mqtt_bytes b, const char *s)
{
    return bytes_eq(b, s, strlen(s));
}

/*
 * Frame and decode the single packet in p[0..n): the fixed header must
 * describe exactly n bytes.  Returns mqtt_decode's result, or DRV_INVAL
 * (after a failed CHECK) when the framing is wrong.
 */
static drv_err decode_one(const uint8_t *p, size_t n, uint8_t version, bool from_server,
                          mqtt_packet *pkt, mqtt_decode_error *err)
{
    uint8_t first;
    uint32_t remaining;
    size_t header_len;
    drv_err e = mqtt_parse_fixed_header(p, n, &first, &remaining, &header_len);
    CHECK(e == DRV_OK);
    if (e != DRV_OK)
        return DRV_INVAL;
    CHECK(header_len + remaining == n);
    if (header_len + remaining != n)
        return DRV_INVAL;
    return mqtt_decode(first, p + header_len, remaining, version, from_server, pkt, err);
}

/* Decode the packet held in buffer b (everything unconsumed). */
static drv_err decode_buf(const drv_buf *b, uint8_t version, bool from_server, mqtt_packet *pkt,
                          mqtt_decode_error *err)
{
    return decode_one(b->data + b->off, drv_buf_avail(b), version, from_server, pkt, err);
}

/* Compare the buffer's contents with a hex string. */
static bool buf_is_hex(const drv_buf *b, const char *hex)
{
    uint8_t want[512];
    size_t n = unhex(hex, want, sizeof(want));
    return drv_buf_avail(b) == n && memcmp(b->data + b->off, want, n) == 0;
}

/* One property expected from mqtt_props_next, in order. */
typedef struct want_prop {
    uint8_t id;
    uint32_t num;      /* integer value (when key is NULL) */
    const char *key;   /* string/binary value, or user property name */
    const char *value; /* user property value */
} want_prop;

/* Walk raw with mqtt_props_next and compare with want[0..n). */
static void check_props_walk(const mqtt_bytes *raw, const want_prop *want, size_t n,
                             const char *name)
{
    uint32_t pos = 0;
    size_t i = 0;
    mqtt_prop pr;
    while (mqtt_props_next(raw, &pos, &pr)) {
        CHECK_CASE(i < n, name);
        if (i >= n)
            break;
        CHECK_CASE(pr.id == want[i].id, name);
        if (want[i].key)
            CHECK_CASE(bytes_is(pr.key, want[i].key), name);
        else
            CHECK_CASE(pr.num == want[i].num, name);
        if (want[i].value)
            CHECK_CASE(bytes_is(pr.value, want[i].value), name);
        CHECK_CASE(pr.raw.p >= raw->p && pr.raw.p + pr.raw.len <= raw->p + raw->len, name);
        CHECK_CASE(pr.raw.len > 0 && pr.raw.p[0] == want[i].id, name);
        i++;
    }
    CHECK_CASE(i == n, name);
    CHECK_CASE(pos == raw->len, name);
}

/* -- variable byte integers and the fixed header -------------------------------- */

static void test_varint(void)
{
    static const struct {
        uint32_t v;
        const char *hex;
    } cases[] = {
        {0, "00"},
        {1, "01"},
        {127, "7F"},
        {128, "80 01"},
        {16383, "FF 7F"},
        {16384, "80 80 01"},
        {2097151, "FF FF 7F"},
        {2097152, "80 80 80 01"},
        {268435455, "FF FF FF 7F"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char name[32];
        snprintf(name, sizeof(name), "varint %u", (unsigned)cases[i].v);
        uint8_t want[4], got[8] = {0};
        size_t n = unhex(cases[i].hex, want, sizeof(want));
        CHECK_CASE(mqtt_varint_size(cases[i].v) == n, name);
        CHECK_CASE(mqtt_varint_write(got, cases[i].v) == n, name);
        CHECK_CASE(memcmp(got, want, n) == 0, name);
        CHECK_CASE(got[n] == 0, name); /* wrote nothing past its size */

        /* The same bytes as a fixed header's remaining length. */
        uint8_t hdr[8] = {0x30};
        memcpy(hdr + 1, want, n);
        uint8_t first = 0;
        uint32_t remaining = 0;
        size_t header_len = 0;
        CHECK_CASE(mqtt_parse_fixed_header(hdr, 1 + n, &first, &remaining, &header_len) == DRV_OK,
                   name);
        CHECK_CASE(first == 0x30, name);
        CHECK_CASE(remaining == cases[i].v, name);
        CHECK_CASE(header_len == 1 + n, name);
        /* Bytes after the header belong to the body and do not matter. */
        hdr[1 + n] = 0xFF;
        CHECK_CASE(mqtt_parse_fixed_header(hdr, 2 + n, &first, &remaining, &header_len) == DRV_OK,
                   name);
        CHECK_CASE(remaining == cases[i].v && header_len == 1 + n, name);
        /* Every strict prefix is "not yet". */
        for (size_t len = 0; len <= n; len++)
            CHECK_CASE(mqtt_parse_fixed_header(hdr, len, &first, &remaining, &header_len) ==
                           DRV_AGAIN,
                       name);
    }
    CHECK(mqtt_varint_size(UINT32_MAX) == 4); /* callers bound values to 268435455 */
}

static void test_fixed_header(void)
{
    static const struct {
        const char *hex;
        drv_err want;
        uint32_t remaining;
        size_t header_len;
    } cases[] = {
        {"", DRV_AGAIN, 0, 0},
        {"30", DRV_AGAIN, 0, 0},
        {"30 80", DRV_AGAIN, 0, 0},
        {"30 FF FF", DRV_AGAIN, 0, 0},
        {"30 FF FF FF", DRV_AGAIN, 0, 0},
        {"30 00", DRV_OK, 0, 2},
        {"F0 00", DRV_OK, 0, 2},
        {"30 02 AA BB CC", DRV_OK, 2, 2},
        {"C0 00 C0 00", DRV_OK, 0, 2},
        {"30 FF FF FF 7F", DRV_OK, 268435455, 5},
        /* A fifth length byte is never valid. */
        {"30 FF FF FF FF", DRV_MALFORMED, 0, 0},
        {"30 80 80 80 80 01", DRV_MALFORMED, 0, 0},
        {"30 FF FF FF 80 00", DRV_MALFORMED, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t buf[16];
        size_t n = unhex(cases[i].hex, buf, sizeof(buf));
        uint8_t first = 0;
        uint32_t remaining = 0;
        size_t header_len = 0;
        drv_err e = mqtt_parse_fixed_header(buf, n, &first, &remaining, &header_len);
        CHECK_CASE(e == cases[i].want, cases[i].hex);
        if (e == DRV_OK) {
            CHECK_CASE(first == buf[0], cases[i].hex);
            CHECK_CASE(remaining == cases[i].remaining, cases[i].hex);
            CHECK_CASE(header_len == cases[i].header_len, cases[i].hex);
        }
    }
}

/* -- CONNECT -------------------------------------------------------------------- */

static void test_connect_v31_v311(void)
{
    drv_buf b;
    mqtt_packet pkt;
    mqtt_decode_error err;
    drv_buf_init(&b, 4096);

    /* 3.1: "MQIsdp", level 3, user name and password. */
    mqtt_connect_out c31 = {
        .version = MQTT_V31,
        .clean_start = true,
        .keep_alive = 30,
        .client_id = "c31",
        .username = "user",
        .password = "pass",
    };
    CHECK(mqtt_encode_connect(&b, &c31) == DRV_OK);
    CHECK(buf_is_hex(&b, "10 1D 00 06 4D 51 49 73 64 70 03 C2 00 1E 00 03 63 33 31"
                         " 00 04 75 73 65 72 00 04 70 61 73 73"));
    CHECK(decode_buf(&b, 0, false, &pkt, &err) == DRV_OK);
    CHECK(pkt.type == MQTT_CONNECT && pkt.flags == 0);
    const mqtt_connect *c = &pkt.u.connect;
    CHECK(bytes_is(c->protocol_name, "MQIsdp"));
    CHECK(c->protocol_version == MQTT_V31);
    CHECK(c->clean_start && !c->will_flag && c->will_qos == 0 && !c->will_retain);
    CHECK(c->keep_alive == 30);
    CHECK(bytes_is(c->client_id, "c31"));
    CHECK(c->has_username && bytes_is(c->username, "user"));
    CHECK(c->has_password && bytes_is(c->password, "pass"));
    CHECK(err.reason == MQTT_RC_SUCCESS && err.what == NULL);
    /* A server never sends CONNECT. */
    CHECK(decode_buf(&b, 0, true, &pkt, &err) == DRV_PROTOCOL);
    CHECK(err.reason == MQTT_RC_PROTOCOL_ERROR);
    drv_buf_free(&b);

    /* 3.1.1: empty client id, no credentials, persistent session. */
    mqtt_connect_out c311 = {.version = MQTT_V311, .keep_alive = 0, .client_id = ""};
    CHECK(mqtt_encode_connect(&b, &c311) == DRV_OK);
    CHECK(buf_is_hex(&b, "10 0C 00 04 4D 51 54 54 04 00 00 00 00 00"));
    CHECK(decode_buf(&b, 0, false, &pkt, &err) == DRV_OK);
    CHECK(bytes_is(pkt.u.connect.protocol_name, "MQTT"));
    CHECK(pkt.u.connect.protocol_version == MQTT_V311);
    CHECK(!pkt.u.connect.clean_start && pkt.u.connect.keep_alive == 0);
    CHECK(pkt.u.connect.client_id.len == 0);
    CHECK(!pkt.u.connect.has_username && !pkt.u.connect.has_password);
    CHECK(pkt.u.connect.props.present == 0);
    drv_buf_free(&b);

    /* 3.1.1 forbids a password without a user name [MQTT-3.1.2-22]; 5.0 allows it. */
    mqtt_connect_out pw_only = {.version = MQTT_V311, .client_id = "x", .password = "secret"};
    CHECK(mqtt_encode_connect(&b, &pw_only) == DRV_OK);
    CHECK(decode_buf(&b, 0, false, &pkt, &err) == DRV_MALFORMED);
    CHECK(err.reason == MQTT_RC_MALFORMED_PACKET && err.what != NULL);
    drv_buf_free(&b);
    pw_only.version = MQTT_V5;
    CHECK(mqtt_encode_connect(&b, &pw_only) == DRV_OK);
    CHECK(decode_buf(&b, 0, false, &pkt, &err) == DRV_OK);
    CHECK(!pkt.u.connect.has_username && pkt.u.connect.has_password);
    CHECK(bytes_is(pkt.u.connect.password, "secret"));
    drv_buf_free(&b);

    /* A hand-built 3.1.1 CONNECT with a will (the encoder has no will). */
    uint8_t will[64];
    size_t n = unhex("10 1B 00 04 4D 51 54 54 04 2E 00 3C 00 02 69 64 00 05 77 2F 6F 75 74"
                     " 00 04 67 6F 6E 65",
                     will, sizeof(will));
    CHECK(decode_one(will, n, 0, false, &pkt, &err) == DRV_OK);
    CHECK(pkt.u.connect.will_flag && pkt.u.connect.will_qos == 1 && pkt.u.connect.will_retain);
    CHECK(pkt.u.connect.clean_start && pkt.u.connect.keep_alive == 60);
    CHECK(bytes_is(pkt.u.connect.client_id, "id"));
    CHECK(bytes_is(pkt.u.connect.will_topic, "w/out"));
    CHECK(bytes_is(pkt.u.connect.will_payload, "gone"));
    /* The same will with a wildcard in its topic. */
    will[18] = '#';
    CHECK(decode_one(will, n, 0, false, &pkt, &err) == DRV_MALFORMED);
    CHECK(err.reason == MQTT_RC_MALFORMED_PACKET);
}

static void test_connect_v5(void)
{
    drv_buf b;
    mqtt_packet pkt;
    mqtt_decode_error err;
    mqtt_prop_builder pb;
    drv_buf_init(&b, 4096);

    mqtt_pb_init(&pb);
    mqtt_pb_u32(&pb, MQTT_PROP_SESSION_EXPIRY, 3600);
    mqtt_pb_u16(&pb, MQTT_PROP_RECEIVE_MAXIMUM, 20);
    mqtt_pb_u32(&pb, MQTT_PROP_MAXIMUM_PACKET_SIZE, 1u << 20);
    mqtt_pb_u16(&pb, MQTT_PROP_TOPIC_ALIAS_MAXIMUM, 10);
    mqtt_pb_byte(&pb, MQTT_PROP_REQUEST_PROBLEM_INFO, 1);
    mqtt_pb_byte(&pb, MQTT_PROP_REQUEST_RESPONSE_INFO, 0);
    mqtt_pb_str(&pb, MQTT_PROP_AUTH_METHOD, "SCRAM", 5);
    mqtt_pb_str(&pb, MQTT_PROP_AUTH_DATA, "\x00\xFF", 2);
    mqtt_pb_pair(&pb, MQTT_PROP_USER_PROPERTY, "k1", 2, "v1", 2);
    mqtt_pb_pair(&pb, MQTT_PROP_USER_PROPERTY, "k1", 2, "v2", 2); /* repeats are allowed */
    mqtt_pb_pair(&pb, MQTT_PROP_USER_PROPERTY, "", 0, "", 0);
    CHECK(!pb.overflow);

    mqtt_connect_out co = {
        .version = MQTT_V5,
        .clean_start = true,
        .keep_alive = 65535,
        .client_id = "dev-\xC3\xA9",
        .username = "alice",
        .password = "s3cret",
        .props = &pb,
    };
    CHECK(mqtt_encode_connect(&b, &co) == DRV_OK);
    CHECK(decode_buf(&b, 0, false, &pkt, &err) == DRV_OK);
    const mqtt_connect *c = &pkt.u.connect;
    CHECK(c->protocol_version == MQTT_V5 && bytes_is(c->protocol_name, "MQTT"));
    CHECK(c->clean_start && c->keep_alive == 65535);
    CHECK(bytes_is(c->client_id, "dev-\xC3\xA9"));
    CHECK(bytes_is(c->username, "alice") && bytes_is(c->password, "s3cret"));
    const mqtt_props *p = &c->props;
    CHECK(p->raw.len == pb.len && memcmp(p->raw.p, pb.data, pb.len) == 0);
    CHECK(mqtt_props_has(p, MQTT_PROP_SESSION_EXPIRY) && p->session_expiry == 3600);
    CHECK(mqtt_props_has(p, MQTT_PROP_RECEIVE_MAXIMUM) && p->receive_maximum == 20);
    CHECK(p->maximum_packet_size == 1u << 20 && p->topic_alias_maximum == 10);
    CHECK(mqtt_props_has(p, MQTT_PROP_REQUEST_PROBLEM_INFO) && p->request_problem_info == 1);
    CHECK(mqtt_props_has(p, MQTT_PROP_REQUEST_RESPONSE_INFO) && p->request_response_info == 0);
    CHECK(bytes_is(p->auth_method, "SCRAM") && bytes_eq(p->auth_data, "\x00\xFF", 2));
    CHECK(p->user_property_count == 3);
    CHECK(!mqtt_props_has(p, MQTT_PROP_USER_PROPERTY)); /* counted, not flagged */
    CHECK(!mqtt_props_has(p, MQTT_PROP_WILL_DELAY));
    static const want_prop walk[] = {
        {MQTT_PROP_SESSION_EXPIRY, 3600, NULL, NULL},
        {MQTT_PROP_RECEIVE_MAXIMUM, 20, NULL, NULL},
        {MQTT_PROP_MAXIMUM_PACKET_SIZE, 1u << 20, NULL, NULL},
        {MQTT_PROP_TOPIC_ALIAS_MAXIMUM, 10, NULL, NULL},
        {MQTT_PROP_REQUEST_PROBLEM_INFO, 1, NULL, NULL},
        {MQTT_PROP_REQUEST_RESPONSE_INFO, 0, NULL, NULL},
        {MQTT_PROP_AUTH_METHOD, 0, "SCRAM", NULL},
        {MQTT_PROP_AUTH_DATA, 0, NULL, NULL},
        {MQTT_PROP_USER_PROPERTY, 0, "k1", "v1"},
        {MQTT_PROP_USER_PROPERTY, 0, "k1", "v2"},
        {MQTT_PROP_USER_PROPERTY, 0, "", ""},
    };
    check_props_walk(&p->raw, walk, sizeof(walk) / sizeof(walk[0]), "CONNECT v5 props");
    drv_buf_free(&b);

    /* No properties at all: a property length of 0. */
    mqtt_connect_out bare = {.version = MQTT_V5, .client_id = "b"};
    CHECK(mqtt_encode_connect(&b, &bare) == DRV_OK);
    CHECK(buf_is_hex(&b, "10 0E 00 04 4D 51 54 54 05 00 00 00 00 00 01 62"));
    CHECK(decode_buf(&b, 0, false, &pkt, &err) == DRV_OK);
    CHECK(pkt.u.connect.props.present == 0 && pkt.u.connect.props.raw.len == 0);
    CHECK(pkt.u.connect.props.user_property_count == 0);
    drv_buf_free(&b);

    /* A property CONNECT may not carry is a protocol error (0x82). */
    mqtt_pb_init(&pb);
    mqtt_pb_u16(&pb, MQTT_PROP_TOPIC_ALIAS, 1);
    bare.props = &pb;
    CHECK(mqtt_encode_connect(&b, &bare) == DRV_OK);
    CHECK(decode_buf(&b, 0, false, &pkt, &err) == DRV_PROTOCOL);
    CHECK(err.reason == MQTT_RC_PROTOCOL_ERROR);
    drv_buf_free(&b);
}

/* -- PUBLISH -------------------------------------------------------------------- */

static void test_publish_flags(void)
{
    static const uint8_t versions[] = {MQTT_V31, MQTT_V311, MQTT_V5};
    for (size_t vi = 0; vi < sizeof(versions); vi++) {
        for (uint8_t qos = 0; qos <= 2; qos++) {
            for (int bits = 0; bits < 4; bits++) {
                bool retain = bits & 1, dup = bits & 2;
                if (qos == 0 && dup)
                    continue; /* malformed; see the table below */
                char name[48];
                snprintf(name, sizeof(name), "PUBLISH v%u qos%u retain%d dup%d", versions[vi], qos,
                         retain, dup);
                mqtt_publish_out po = {
                    .qos = qos,
                    .dup = dup,
                    .retain = retain,
                    .packet_id = qos ? (uint16_t)(0xFFF0 + qos) : 0,
                    .topic = (const uint8_t *)"a/b",
                    .topic_len = 3,
                    .payload = (const uint8_t *)"hello",
                    .payload_len = 5,
                };
                drv_buf b;
                drv_buf_init(&b, 1024);
                CHECK_CASE(mqtt_encode_publish(&b, versions[vi], &po) == DRV_OK, name);
                CHECK_CASE(drv_buf_avail(&b) == mqtt_publish_size(versions[vi], &po), name);
                CHECK_CASE(b.data[0] == (0x30 | dup << 3 | qos << 1 | retain), name);
                /* PUBLISH flows both ways. */
                for (int from_server = 0; from_server <= 1; from_server++) {
                    mqtt_packet pkt;
                    mqtt_decode_error err;
                    CHECK_CASE(decode_buf(&b, versions[vi], from_server, &pkt, &err) == DRV_OK,
                               name);
                    const mqtt_publish *p = &pkt.u.publish;
                    CHECK_CASE(pkt.type == MQTT_PUBLISH, name);
                    CHECK_CASE(p->qos == qos && p->retain == retain && p->dup == dup, name);
                    CHECK_CASE(p->packet_id == po.packet_id, name);
                    CHECK_CASE(bytes_is(p->topic, "a/b") && bytes_is(p->payload, "hello"), name);
                    CHECK_CASE(p->props.present == 0 && p->props.raw.len == 0, name);
                }
                drv_buf_free(&b);
            }
        }
    }

    /* Golden bytes. */
    drv_buf b;
    drv_buf_init(&b, 64);
    mqtt_publish_out po = {.qos = 1,
                           .packet_id = 1,
                           .topic = (const uint8_t *)"a/b",
                           .topic_len = 3,
                           .payload = (const uint8_t *)"hi",
                           .payload_len = 2};
    CHECK(mqtt_encode_publish(&b, MQTT_V311, &po) == DRV_OK);
    CHECK(buf_is_hex(&b, "32 09 00 03 61 2F 62 00 01 68 69"));
    drv_buf_free(&b);
    po.qos = 0;
    CHECK(mqtt_encode_publish(&b, MQTT_V5, &po) == DRV_OK);
    CHECK(buf_is_hex(&b, "30 08 00 03 61 2F 62 00 68 69"));
    drv_buf_free(&b);
}

static void test_publish_v5_props(void)
{
    drv_buf b, b2;
    mqtt_packet pkt;
    mqtt_decode_error err;
    mqtt_prop_builder pb;
    drv_buf_init(&b, 4096);
    drv_buf_init(&b2, 4096);

    mqtt_pb_init(&pb);
    mqtt_pb_byte(&pb, MQTT_PROP_PAYLOAD_FORMAT, 1);
    mqtt_pb_u32(&pb, MQTT_PROP_MESSAGE_EXPIRY, 60);
    mqtt_pb_str(&pb, MQTT_PROP_CONTENT_TYPE, "text/plain", 10);
    mqtt_pb_str(&pb, MQTT_PROP_RESPONSE_TOPIC, "resp/x", 6);
    mqtt_pb_str(&pb, MQTT_PROP_CORRELATION_DATA, "corr", 4);
    mqtt_pb_varint(&pb, MQTT_PROP_SUBSCRIPTION_ID, 268435455);
    mqtt_pb_u16(&pb, MQTT_PROP_TOPIC_ALIAS, 5);
    mqtt_pb_pair(&pb, MQTT_PROP_USER_PROPERTY, "a", 1, "1", 1);
    mqtt_pb_pair(&pb, MQTT_PROP_USER_PROPERTY, "b", 1, "2", 1);
    mqtt_pb_pair(&pb, MQTT_PROP_USER_PROPERTY, "a", 1, "3", 1);
    CHECK(!pb.overflow);

    mqtt_publish_out po = {
        .qos = 2,
        .packet_id = 77,
        .retain = true,
        .topic = (const uint8_t *)"sensors/t1",
        .topic_len = 10,
        .payload = (const uint8_t *)"21.5",
        .payload_len = 4,
        .props = &pb,
    };
    CHECK(mqtt_encode_publish(&b, MQTT_V5, &po) == DRV_OK);
    CHECK(drv_buf_avail(&b) == mqtt_publish_size(MQTT_V5, &po));
    CHECK(decode_buf(&b, MQTT_V5, true, &pkt, &err) == DRV_OK);
    const mqtt_publish *p = &pkt.u.publish;
    CHECK(p->qos == 2 && p->retain && !p->dup && p->packet_id == 77);
    CHECK(bytes_is(p->topic, "sensors/t1") && bytes_is(p->payload, "21.5"));
    const mqtt_props *pr = &p->props;
    CHECK(pr->payload_format == 1 && pr->message_expiry == 60);
    CHECK(bytes_is(pr->content_type, "text/plain") && bytes_is(pr->response_topic, "resp/x"));
    CHECK(bytes_is(pr->correlation_data, "corr"));
    CHECK(pr->subscription_id == 268435455 && pr->topic_alias == 5);
    CHECK(pr->user_property_count == 3);
    static const want_prop walk[] = {
        {MQTT_PROP_PAYLOAD_FORMAT, 1, NULL, NULL},
        {MQTT_PROP_MESSAGE_EXPIRY, 60, NULL, NULL},
        {MQTT_PROP_CONTENT_TYPE, 0, "text/plain", NULL},
        {MQTT_PROP_RESPONSE_TOPIC, 0, "resp/x", NULL},
        {MQTT_PROP_CORRELATION_DATA, 0, "corr", NULL},
        {MQTT_PROP_SUBSCRIPTION_ID, 268435455, NULL, NULL},
        {MQTT_PROP_TOPIC_ALIAS, 5, NULL, NULL},
        {MQTT_PROP_USER_PROPERTY, 0, "a", "1"},
        {MQTT_PROP_USER_PROPERTY, 0, "b", "2"},
        {MQTT_PROP_USER_PROPERTY, 0, "a", "3"},
    };
    check_props_walk(&pr->raw, walk, sizeof(walk) / sizeof(walk[0]), "PUBLISH v5 props");

    /* Forwarding: the decoded block appended verbatim gives the same packet. */
    mqtt_prop_builder fwd;
    mqtt_pb_init(&fwd);
    fwd.extra = pr->raw.p;
    fwd.extra_len = pr->raw.len;
    po.props = &fwd;
    CHECK(mqtt_encode_publish(&b2, MQTT_V5, &po) == DRV_OK);
    CHECK(drv_buf_avail(&b2) == drv_buf_avail(&b) &&
          memcmp(b2.data, b.data, drv_buf_avail(&b)) == 0);
    drv_buf_free(&b2);

    /* Builder bytes and a pre-encoded block together. */
    mqtt_pb_u16(&fwd, MQTT_PROP_TOPIC_ALIAS, 9); /* now twice: a duplicate */
    CHECK(mqtt_encode_publish(&b2, MQTT_V5, &po) == DRV_OK);
    CHECK(drv_buf_avail(&b2) == mqtt_publish_size(MQTT_V5, &po));
    CHECK(decode_buf(&b2, MQTT_V5, true, &pkt, &err) == DRV_PROTOCOL);
    CHECK(err.reason == MQTT_RC_PROTOCOL_ERROR);
    drv_buf_free(&b2);
    drv_buf_free(&b);

    /* An empty topic is allowed in 5.0 with a topic alias. */
    mqtt_pb_init(&pb);
    mqtt_pb_u16(&pb, MQTT_PROP_TOPIC_ALIAS, 7);
    mqtt_publish_out alias = {.topic = (const uint8_t *)"", .topic_len = 0, .props = &pb};
    CHECK(mqtt_encode_publish(&b, MQTT_V5, &alias) == DRV_OK);
    CHECK(buf_is_hex(&b, "30 06 00 00 03 23 00 07"));
    CHECK(decode_buf(&b, MQTT_V5, false, &pkt, &err) == DRV_OK);
    CHECK(pkt.u.publish.topic.len == 0 && pkt.u.publish.props.topic_alias == 7);
    CHECK(pkt.u.publish.payload.len == 0);
    drv_buf_free(&b);
    /* ... and not in 3.1.1, where the same layout is an empty topic. */
    alias.props = NULL;
    CHECK(mqtt_encode_publish(&b, MQTT_V311, &alias) == DRV_OK);
    CHECK(decode_buf(&b, MQTT_V311, false, &pkt, &err) == DRV_MALFORMED);
    drv_buf_free(&b);

    /* Payload format 1 only promises UTF-8; the codec does not check the payload. */
    mqtt_pb_init(&pb);
    mqtt_pb_byte(&pb, MQTT_PROP_PAYLOAD_FORMAT, 1);
    mqtt_publish_out bin = {.topic = (const uint8_t *)"t",
                            .topic_len = 1,
                            .payload = (const uint8_t *)"\xFF\x00",
                            .payload_len = 2,
                            .props = &pb};
    CHECK(mqtt_encode_publish(&b, MQTT_V5, &bin) == DRV_OK);
    CHECK(decode_buf(&b, MQTT_V5, false, &pkt, &err) == DRV_OK);
    CHECK(bytes_eq(pkt.u.publish.payload, "\xFF\x00", 2));
    drv_buf_free(&b);
}

static void test_publish_sizes(void)
{
    /* Payload sizes around the varint boundaries of the remaining length. */
    static const uint32_t sizes[] = {0, 1, 116, 117, 16372, 16373, 70000};
    static uint8_t payload[70000];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 7);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        for (uint8_t v = MQTT_V311; v <= MQTT_V5; v++) {
            char name[48];
            snprintf(name, sizeof(name), "PUBLISH v%u payload %u", v, (unsigned)sizes[i]);
            mqtt_publish_out po = {.qos = 1,
                                   .packet_id = 3,
                                   .topic = (const uint8_t *)"t/u/v/w",
                                   .topic_len = 7,
                                   .payload = payload,
                                   .payload_len = sizes[i]};
            drv_buf b;
            drv_buf_init(&b, 1 << 20);
            CHECK_CASE(mqtt_encode_publish(&b, v, &po) == DRV_OK, name);
            CHECK_CASE(drv_buf_avail(&b) == mqtt_publish_size(v, &po), name);
            mqtt_packet pkt;
            mqtt_decode_error err;
            CHECK_CASE(decode_buf(&b, v, false, &pkt, &err) == DRV_OK, name);
            CHECK_CASE(bytes_eq(pkt.u.publish.payload, payload, sizes[i]), name);
            drv_buf_free(&b);
        }
    }
    /* 116 + 11 bytes of topic and packet id is 127: one length byte; 117 needs two. */
    mqtt_publish_out po = {.qos = 1,
                           .packet_id = 3,
                           .topic = (const uint8_t *)"t/u/v/w",
                           .topic_len = 7,
                           .payload = payload,
                           .payload_len = 116};
    CHECK(mqtt_publish_size(MQTT_V311, &po) == 1 + 1 + 127);
    po.payload_len = 117;
    CHECK(mqtt_publish_size(MQTT_V311, &po) == 1 + 2 + 128);
    CHECK(mqtt_publish_size(MQTT_V5, &po) == 1 + 2 + 129); /* plus a property length */
}

/* -- SUBSCRIBE / UNSUBSCRIBE ------------------------------------------------------ */

/* Wrap body[0..n) in a fixed header with first byte `first`; returns the total size. */
static size_t frame(uint8_t first, const uint8_t *body, size_t n, uint8_t *out)
{
    out[0] = first;
    unsigned h = mqtt_varint_write(out + 1, (uint32_t)n);
    memcpy(out + 1 + h, body, n);
    return 1 + h + n;
}

static void test_subscribe(void)
{
    drv_buf b;
    mqtt_packet pkt;
    mqtt_decode_error err;
    mqtt_sub_entry e;
    uint32_t pos;
    drv_buf_init(&b, 1024);

    CHECK(mqtt_encode_subscribe(&b, MQTT_V311, 10, "a/+", 1) == DRV_OK);
    CHECK(buf_is_hex(&b, "82 08 00 0A 00 03 61 2F 2B 01"));
    CHECK(decode_buf(&b, MQTT_V311, false, &pkt, &err) == DRV_OK);
    CHECK(pkt.type == MQTT_SUBSCRIBE && pkt.flags == 2);
    CHECK(pkt.u.subscribe.packet_id == 10 && pkt.u.subscribe.count == 1);
    pos = 0;
    CHECK(mqtt_sub_next(&pkt.u.subscribe, true, &pos, &e));
    CHECK(bytes_is(e.filter, "a/+") && e.qos == 1 && !e.no_local && !e.retain_as_published &&
          e.retain_handling == 0);
    CHECK(!mqtt_sub_next(&pkt.u.subscribe, true, &pos, &e));
    /* Only a client sends SUBSCRIBE. */
    CHECK(decode_buf(&b, MQTT_V311, true, &pkt, &err) == DRV_PROTOCOL);
    CHECK(err.reason == MQTT_RC_PROTOCOL_ERROR);
    drv_buf_free(&b);

    /* 5.0 options: QoS 2, No Local, Retain As Published, Retain Handling 2. */
    CHECK(mqtt_encode_subscribe(&b, MQTT_V5, 11, "a/#", 0x2E) == DRV_OK);
    CHECK(buf_is_hex(&b, "82 09 00 0B 00 00 03 61 2F 23 2E"));
    CHECK(decode_buf(&b, MQTT_V5, false, &pkt, &err) == DRV_OK);
    pos = 0;
    CHECK(mqtt_sub_next(&pkt.u.subscribe, true, &pos, &e));
    CHECK(bytes_is(e.filter, "a/#") && e.qos == 2 && e.no_local && e.retain_as_published &&
          e.retain_handling == 2);
    drv_buf_free(&b);
    /* The same options byte is malformed in 3.1.1, whose upper six bits are reserved. */
    CHECK(mqtt_encode_subscribe(&b, MQTT_V311, 11, "a/#", 0x2E) == DRV_OK);
    CHECK(decode_buf(&b, MQTT_V311, false, &pkt, &err) == DRV_MALFORMED);
    drv_buf_free(&b);

    /* Several entries, a subscription identifier and a user property. */
    uint8_t body[64], pk[80];
    size_t n = unhex("00 07"                          /* packet id */
                     " 09 0B 05 26 00 01 6B 00 01 76" /* props: sub id 5, user k=v */
                     " 00 01 61 00"                   /* "a" QoS 0 */
                     " 00 03 62 2F 2B 01"             /* "b/+" QoS 1 */
                     " 00 01 23 16",                  /* "#" QoS 2, No Local, RH 1 */
                     body, sizeof(body));
    size_t pn = frame(0x82, body, n, pk);
    CHECK(decode_one(pk, pn, MQTT_V5, false, &pkt, &err) == DRV_OK);
    const mqtt_subscribe *s = &pkt.u.subscribe;
    CHECK(s->packet_id == 7 && s->count == 3);
    CHECK(s->props.subscription_id == 5 && s->props.user_property_count == 1);
    static const struct {
        const char *filter;
        uint8_t qos;
        bool no_local;
        uint8_t rh;
    } want[] = {{"a", 0, false, 0}, {"b/+", 1, false, 0}, {"#", 2, true, 1}};
    pos = 0;
    for (size_t i = 0; i < 3; i++) {
        CHECK(mqtt_sub_next(s, true, &pos, &e));
        CHECK_CASE(bytes_is(e.filter, want[i].filter), want[i].filter);
        CHECK_CASE(e.qos == want[i].qos && e.no_local == want[i].no_local &&
                       e.retain_handling == want[i].rh && !e.retain_as_published,
                   want[i].filter);
    }
    CHECK(!mqtt_sub_next(s, true, &pos, &e));
    CHECK(pos == s->entries.len);
    /* Two subscription identifiers: a duplicate is a protocol error even in SUBSCRIBE. */
    n = unhex("00 07 04 0B 05 0B 06 00 01 61 00", body, sizeof(body));
    pn = frame(0x82, body, n, pk);
    CHECK(decode_one(pk, pn, MQTT_V5, false, &pkt, &err) == DRV_PROTOCOL);
    CHECK(err.reason == MQTT_RC_PROTOCOL_ERROR);

    /* UNSUBSCRIBE: filters only. */
    static const struct {
        uint8_t version;
        const char *body;
    } unsubs[] = {
        {MQTT_V311, "00 09 00 01 61 00 03 62 2F 23"},
        {MQTT_V5, "00 09 00 00 01 61 00 03 62 2F 23"},
    };
    for (size_t i = 0; i < 2; i++) {
        n = unhex(unsubs[i].body, body, sizeof(body));
        pn = frame(0xA2, body, n, pk);
        CHECK(decode_one(pk, pn, unsubs[i].version, false, &pkt, &err) == DRV_OK);
        CHECK(pkt.type == MQTT_UNSUBSCRIBE && pkt.u.subscribe.packet_id == 9);
        CHECK(pkt.u.subscribe.count == 2);
        pos = 0;
        CHECK(mqtt_sub_next(&pkt.u.subscribe, false, &pos, &e) && bytes_is(e.filter, "a"));
        CHECK(mqtt_sub_next(&pkt.u.subscribe, false, &pos, &e) && bytes_is(e.filter, "b/#"));
        CHECK(!mqtt_sub_next(&pkt.u.subscribe, false, &pos, &e));
        /* Bad flags on UNSUBSCRIBE (A0 instead of A2). */
        pk[0] = 0xA0;
        CHECK(decode_one(pk, pn, unsubs[i].version, false, &pkt, &err) == DRV_MALFORMED);
    }
}

/* -- acknowledgements ------------------------------------------------------------- */

static void test_acks(void)
{
    static const struct {
        uint8_t version;
        mqtt_type type;
        uint8_t reason;     /* given to the encoder */
        bool props;         /* add a reason string and a user property */
        const char *golden; /* expected bytes, or NULL */
    } cases[] = {
        {MQTT_V31, MQTT_PUBACK, 0, false, "40 02 12 34"},
        {MQTT_V311, MQTT_PUBACK, 0, false, "40 02 12 34"},
        {MQTT_V311, MQTT_PUBREC, 0, false, "50 02 12 34"},
        {MQTT_V311, MQTT_PUBREL, 0, false, "62 02 12 34"},
        {MQTT_V311, MQTT_PUBCOMP, 0, false, "70 02 12 34"},
        /* 3.x has no reason: the encoder drops it. */
        {MQTT_V311, MQTT_PUBACK, 0x80, true, "40 02 12 34"},
        /* 5.0 success without properties: the short form (§3.4.2.1). */
        {MQTT_V5, MQTT_PUBACK, 0, false, "40 02 12 34"},
        {MQTT_V5, MQTT_PUBREL, 0, false, "62 02 12 34"},
        {MQTT_V5, MQTT_PUBACK, 0x10, false, "40 03 12 34 10"},
        {MQTT_V5, MQTT_PUBREC, 0x80, false, "50 03 12 34 80"},
        {MQTT_V5, MQTT_PUBREL, 0x92, false, "62 03 12 34 92"},
        {MQTT_V5, MQTT_PUBCOMP, 0x92, false, "70 03 12 34 92"},
        {MQTT_V5, MQTT_PUBACK, 0x97, true, NULL},
        {MQTT_V5, MQTT_PUBREC, 0x99, true, NULL},
        {MQTT_V5, MQTT_PUBREL, 0, true, NULL},
        {MQTT_V5, MQTT_PUBCOMP, 0, true, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char name[48];
        snprintf(name, sizeof(name), "ack #%zu type %d v%u", i, cases[i].type, cases[i].version);
        mqtt_prop_builder pb;
        mqtt_pb_init(&pb);
        if (cases[i].props) {
            mqtt_pb_str(&pb, MQTT_PROP_REASON_STRING, "quota", 5);
            mqtt_pb_pair(&pb, MQTT_PROP_USER_PROPERTY, "why", 3, "because", 7);
        }
        drv_buf b;
        drv_buf_init(&b, 256);
        CHECK_CASE(mqtt_encode_ack(&b, cases[i].version, cases[i].type, 0x1234, cases[i].reason,
                                   &pb) == DRV_OK,
                   name);
        if (cases[i].golden)
            CHECK_CASE(buf_is_hex(&b, cases[i].golden), name);
        bool v5 = cases[i].version == MQTT_V5;
        for (int from_server = 0; from_server <= 1; from_server++) {
            mqtt_packet pkt;
            mqtt_decode_error err;
            CHECK_CASE(decode_buf(&b, cases[i].version, from_server, &pkt, &err) == DRV_OK, name);
            CHECK_CASE(pkt.type == cases[i].type, name);
            CHECK_CASE(pkt.u.ack.packet_id == 0x1234, name);
            CHECK_CASE(pkt.u.ack.reason == (v5 ? cases[i].reason : 0), name);
            if (v5 && cases[i].props) {
                CHECK_CASE(bytes_is(pkt.u.ack.props.reason_string, "quota"), name);
                CHECK_CASE(pkt.u.ack.props.user_property_count == 1, name);
                static const want_prop walk[] = {{MQTT_PROP_REASON_STRING, 0, "quota", NULL},
                                                 {MQTT_PROP_USER_PROPERTY, 0, "why", "because"}};
                check_props_walk(&pkt.u.ack.props.raw, walk, 2, name);
            } else {
                CHECK_CASE(pkt.u.ack.props.present == 0 && pkt.u.ack.props.raw.len == 0, name);
            }
        }
        drv_buf_free(&b);
    }

    /* 5.0 long forms a peer may send: reason with an empty property block. */
    uint8_t pk[16];
    size_t n = unhex("40 04 12 34 00 00", pk, sizeof(pk));
    mqtt_packet pkt;
    mqtt_decode_error err;
    CHECK(decode_one(pk, n, MQTT_V5, false, &pkt, &err) == DRV_OK);
    CHECK(pkt.u.ack.reason == 0 && pkt.u.ack.props.raw.len == 0);
    /* The same 4-byte body is trailing garbage in 3.1.1. */
    CHECK(decode_one(pk, n, MQTT_V311, false, &pkt, &err) == DRV_MALFORMED);
    /* A reason PUBACK may not carry (0x92 belongs to PUBREL/PUBCOMP). */
    n = unhex("40 03 12 34 92", pk, sizeof(pk));
    CHECK(decode_one(pk, n, MQTT_V5, false, &pkt, &err) == DRV_PROTOCOL);
    CHECK(err.reason == MQTT_RC_PROTOCOL_ERROR);
    /* PUBREL with the flags of PUBACK (60 instead of 62). */
    n = unhex("60 02 12 34", pk, sizeof(pk));
    CHECK(decode_one(pk, n, MQTT_V5, false, &pkt, &err) == DRV_MALFORMED);
    CHECK(err.reason == MQTT_RC_MALFORMED_PACKET);
}

static void test_connack(void)
{
    drv_buf b;
    mqtt_packet pkt;
    mqtt_decode_error err;
    mqtt_prop_builder pb;
    drv_buf_init(&b, 1024);

    mqtt_pb_init(&pb);
    mqtt_pb_str(&pb, MQTT_PROP_ASSIGNED_CLIENT_ID, "auto-1", 6);
    mqtt_pb_u16(&pb, MQTT_PROP_TOPIC_ALIAS_MAXIMUM, 10);
    mqtt_pb_u16(&pb, MQTT_PROP_RECEIVE_MAXIMUM, 20);
    mqtt_pb_byte(&pb, MQTT_PROP_MAXIMUM_QOS, 1);
    mqtt_pb_byte(&pb, MQTT_PROP_RETAIN_AVAILABLE, 1);
    mqtt_pb_byte(&pb, MQTT_PROP_WILDCARD_SUB_AVAILABLE, 1);
    mqtt_pb_byte(&pb, MQTT_PROP_SUB_ID_AVAILABLE, 0);
    mqtt_pb_byte(&pb, MQTT_PROP_SHARED_SUB_AVAILABLE, 1);
    mqtt_pb_u16(&pb, MQTT_PROP_SERVER_KEEP_ALIVE, 60);
    mqtt_pb_u32(&pb, MQTT_PROP_MAXIMUM_PACKET_SIZE, 1u << 20);
    mqtt_pb_u32(&pb, MQTT_PROP_SESSION_EXPIRY, 0);
    mqtt_pb_str(&pb, MQTT_PROP_RESPONSE_INFO, "r/", 2);
    mqtt_pb_str(&pb, MQTT_PROP_REASON_STRING, "ok", 2);
    CHECK(mqtt_encode_connack(&b, MQTT_V5, true, MQTT_RC_SUCCESS, &pb) == DRV_OK);
    CHECK(decode_buf(&b, MQTT_V5, true, &pkt, &err) == DRV_OK);
    const mqtt_connack *c = &pkt.u.connack;
    CHECK(pkt.type == MQTT_CONNACK && c->session_present && c->reason == 0);
    const mqtt_props *p = &c->props;
    CHECK(bytes_is(p->assigned_client_id, "auto-1"));
    CHECK(p->topic_alias_maximum == 10 && p->receive_maximum == 20 && p->maximum_qos == 1);
    CHECK(p->retain_available == 1 && p->wildcard_sub_available == 1);
    CHECK(mqtt_props_has(p, MQTT_PROP_SUB_ID_AVAILABLE) && p->sub_id_available == 0);
    CHECK(p->shared_sub_available == 1 && p->server_keep_alive == 60);
    CHECK(p->maximum_packet_size == 1u << 20);
    CHECK(mqtt_props_has(p, MQTT_PROP_SESSION_EXPIRY) && p->session_expiry == 0);
    CHECK(bytes_is(p->response_info, "r/") && bytes_is(p->reason_string, "ok"));
    /* A client never sends CONNACK. */
    CHECK(decode_buf(&b, MQTT_V5, false, &pkt, &err) == DRV_PROTOCOL);
    CHECK(err.reason == MQTT_RC_PROTOCOL_ERROR);
    drv_buf_free(&b);

    CHECK(mqtt_encode_connack(&b, MQTT_V5, false, MQTT_RC_NOT_AUTHORIZED, NULL) == DRV_OK);
    CHECK(buf_is_hex(&b, "20 03 00 87 00"));
    drv_buf_free(&b);

    /* 3.1.1 return codes mapped from 5.0 reasons (§3.2.2.3). */
    static const struct {
        uint8_t version;
        bool session_present;
        uint8_t reason;
        const char *hex;
    } v3[] = {
        {MQTT_V311, true, MQTT_RC_SUCCESS, "20 02 01 00"},
        {MQTT_V311, false, MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION, "20 02 00 01"},
        {MQTT_V311, false, MQTT_RC_CLIENT_ID_NOT_VALID, "20 02 00 02"},
        {MQTT_V311, false, MQTT_RC_SERVER_UNAVAILABLE, "20 02 00 03"},
        {MQTT_V311, false, MQTT_RC_SERVER_BUSY, "20 02 00 03"},
        {MQTT_V311, false, MQTT_RC_BAD_USERNAME_OR_PASSWORD, "20 02 00 04"},
        {MQTT_V311, false, MQTT_RC_NOT_AUTHORIZED, "20 02 00 05"},
        {MQTT_V311, false, MQTT_RC_BANNED, "20 02 00 05"},
        {MQTT_V31, true, MQTT_RC_SUCCESS, "20 02 00 00"}, /* 3.1 has no session present */
    };
    for (size_t i = 0; i < sizeof(v3) / sizeof(v3[0]); i++) {
        CHECK_CASE(mqtt_encode_connack(&b, v3[i].version, v3[i].session_present, v3[i].reason,
                                       NULL) == DRV_OK,
                   v3[i].hex);
        CHECK_CASE(buf_is_hex(&b, v3[i].hex), v3[i].hex);
        CHECK_CASE(decode_buf(&b, v3[i].version, true, &pkt, &err) == DRV_OK, v3[i].hex);
        CHECK_CASE(pkt.u.connack.reason == b.data[3], v3[i].hex);
        CHECK_CASE(pkt.u.connack.session_present == (b.data[2] == 1), v3[i].hex);
        drv_buf_free(&b);
    }
}

static void test_suback_ping(void)
{
    drv_buf b;
    mqtt_packet pkt;
    mqtt_decode_error err;
    mqtt_prop_builder pb;
    static const uint8_t reasons[] = {0x00, 0x01, 0x80};
    drv_buf_init(&b, 256);

    CHECK(mqtt_encode_suback(&b, MQTT_V311, MQTT_SUBACK, 7, reasons, 3, NULL) == DRV_OK);
    CHECK(buf_is_hex(&b, "90 05 00 07 00 01 80"));
    CHECK(decode_buf(&b, MQTT_V311, true, &pkt, &err) == DRV_OK);
    CHECK(pkt.type == MQTT_SUBACK && pkt.u.suback.packet_id == 7);
    CHECK(bytes_eq(pkt.u.suback.reasons, reasons, 3));
    CHECK(decode_buf(&b, MQTT_V311, false, &pkt, &err) == DRV_PROTOCOL);
    drv_buf_free(&b);

    mqtt_pb_init(&pb);
    mqtt_pb_str(&pb, MQTT_PROP_REASON_STRING, "partly", 6);
    CHECK(mqtt_encode_suback(&b, MQTT_V5, MQTT_SUBACK, 8, reasons, 3, &pb) == DRV_OK);
    CHECK(decode_buf(&b, MQTT_V5, true, &pkt, &err) == DRV_OK);
    CHECK(pkt.u.suback.packet_id == 8 && bytes_eq(pkt.u.suback.reasons, reasons, 3));
    CHECK(bytes_is(pkt.u.suback.props.reason_string, "partly"));
    drv_buf_free(&b);

    /* 3.1.1 UNSUBACK has no payload: the reasons are ignored. */
    CHECK(mqtt_encode_suback(&b, MQTT_V311, MQTT_UNSUBACK, 9, reasons, 3, NULL) == DRV_OK);
    CHECK(buf_is_hex(&b, "B0 02 00 09"));
    CHECK(decode_buf(&b, MQTT_V311, true, &pkt, &err) == DRV_OK);
    CHECK(pkt.type == MQTT_UNSUBACK && pkt.u.suback.reasons.len == 0);
    drv_buf_free(&b);
    static const uint8_t unsub_reasons[] = {0x00, 0x11};
    CHECK(mqtt_encode_suback(&b, MQTT_V5, MQTT_UNSUBACK, 9, unsub_reasons, 2, NULL) == DRV_OK);
    CHECK(buf_is_hex(&b, "B0 05 00 09 00 00 11"));
    CHECK(decode_buf(&b, MQTT_V5, true, &pkt, &err) == DRV_OK);
    CHECK(bytes_eq(pkt.u.suback.reasons, unsub_reasons, 2));
    drv_buf_free(&b);

    CHECK(mqtt_encode_simple(&b, MQTT_PINGREQ) == DRV_OK);
    CHECK(buf_is_hex(&b, "C0 00"));
    CHECK(decode_buf(&b, MQTT_V311, false, &pkt, &err) == DRV_OK && pkt.type == MQTT_PINGREQ);
    CHECK(decode_buf(&b, MQTT_V311, true, &pkt, &err) == DRV_PROTOCOL);
    drv_buf_free(&b);
    CHECK(mqtt_encode_simple(&b, MQTT_PINGRESP) == DRV_OK);
    CHECK(buf_is_hex(&b, "D0 00"));
    CHECK(decode_buf(&b, MQTT_V5, true, &pkt, &err) == DRV_OK && pkt.type == MQTT_PINGRESP);
    CHECK(decode_buf(&b, MQTT_V5, false, &pkt, &err) == DRV_PROTOCOL);
    drv_buf_free(&b);
}

static void test_disconnect_auth(void)
{
    drv_buf b;
    mqtt_packet pkt;
    mqtt_decode_error err;
    mqtt_prop_builder pb;
    drv_buf_init(&b, 256);

    CHECK(mqtt_encode_disconnect(&b, MQTT_V311, MQTT_DISCONNECT, 0x81, NULL) == DRV_OK);
    CHECK(buf_is_hex(&b, "E0 00"));
    CHECK(decode_buf(&b, MQTT_V311, false, &pkt, &err) == DRV_OK);
    CHECK(pkt.type == MQTT_DISCONNECT && pkt.u.disconnect.reason == 0);
    drv_buf_free(&b);

    /* 5.0, reason only: the property length is omitted (§3.14.2.2). */
    CHECK(mqtt_encode_disconnect(&b, MQTT_V5, MQTT_DISCONNECT, 0x04, NULL) == DRV_OK);
    CHECK(buf_is_hex(&b, "E0 01 04"));
    for (int from_server = 0; from_server <= 1; from_server++) {
        CHECK(decode_buf(&b, MQTT_V5, from_server, &pkt, &err) == DRV_OK);
        CHECK(pkt.u.disconnect.reason == 0x04 && pkt.u.disconnect.props.raw.len == 0);
    }
    drv_buf_free(&b);

    /* 5.0 with no body at all means Normal disconnection. */
    uint8_t pk[8] = {0xE0, 0x00};
    CHECK(decode_one(pk, 2, MQTT_V5, false, &pkt, &err) == DRV_OK);
    CHECK(pkt.u.disconnect.reason == 0);

    mqtt_pb_init(&pb);
    mqtt_pb_u32(&pb, MQTT_PROP_SESSION_EXPIRY, 0);
    mqtt_pb_str(&pb, MQTT_PROP_REASON_STRING, "bye", 3);
    CHECK(mqtt_encode_disconnect(&b, MQTT_V5, MQTT_DISCONNECT, 0x00, &pb) == DRV_OK);
    CHECK(buf_is_hex(&b, "E0 0D 00 0B 11 00 00 00 00 1F 00 03 62 79 65"));
    CHECK(decode_buf(&b, MQTT_V5, false, &pkt, &err) == DRV_OK);
    CHECK(mqtt_props_has(&pkt.u.disconnect.props, MQTT_PROP_SESSION_EXPIRY));
    CHECK(bytes_is(pkt.u.disconnect.props.reason_string, "bye"));
    drv_buf_free(&b);

    mqtt_pb_init(&pb);
    mqtt_pb_str(&pb, MQTT_PROP_SERVER_REFERENCE, "other:1883", 10);
    CHECK(mqtt_encode_disconnect(&b, MQTT_V5, MQTT_DISCONNECT, MQTT_RC_SERVER_MOVED, &pb) ==
          DRV_OK);
    CHECK(decode_buf(&b, MQTT_V5, true, &pkt, &err) == DRV_OK);
    CHECK(pkt.u.disconnect.reason == 0x9D);
    CHECK(bytes_is(pkt.u.disconnect.props.server_reference, "other:1883"));
    drv_buf_free(&b);

    /* AUTH: 5.0 only, both directions. */
    mqtt_pb_init(&pb);
    mqtt_pb_str(&pb, MQTT_PROP_AUTH_METHOD, "SCRAM-SHA-1", 11);
    mqtt_pb_str(&pb, MQTT_PROP_AUTH_DATA, "\x01\x00\x02", 3);
    CHECK(mqtt_encode_disconnect(&b, MQTT_V5, MQTT_AUTH, MQTT_RC_CONTINUE_AUTH, &pb) == DRV_OK);
    CHECK(b.data[0] == 0xF0);
    for (int from_server = 0; from_server <= 1; from_server++) {
        CHECK(decode_buf(&b, MQTT_V5, from_server, &pkt, &err) == DRV_OK);
        CHECK(pkt.type == MQTT_AUTH && pkt.u.disconnect.reason == 0x18);
        CHECK(bytes_is(pkt.u.disconnect.props.auth_method, "SCRAM-SHA-1"));
        CHECK(bytes_eq(pkt.u.disconnect.props.auth_data, "\x01\x00\x02", 3));
    }
    CHECK(decode_buf(&b, MQTT_V311, false, &pkt, &err) == DRV_MALFORMED);
    drv_buf_free(&b);
    /* Authentication data without a method. */
    mqtt_pb_init(&pb);
    mqtt_pb_str(&pb, MQTT_PROP_AUTH_DATA, "x", 1);
    CHECK(mqtt_encode_disconnect(&b, MQTT_V5, MQTT_AUTH, MQTT_RC_CONTINUE_AUTH, &pb) == DRV_OK);
    CHECK(decode_buf(&b, MQTT_V5, false, &pkt, &err) == DRV_PROTOCOL);
    CHECK(err.reason == MQTT_RC_PROTOCOL_ERROR);
    drv_buf_free(&b);
}

/* -- malformed packets ------------------------------------------------------------ */

/*
 * version 0: the first packet of a connection (only CONNECT accepted).
 * reason 0: the corpus only expects a close, so any decode failure passes.
 */
static const struct {
    const char *name; /* <corpus file>: <test name>, or "extra: ..." */
    uint8_t version;
    bool from_server;
    const char *hex;
    uint8_t reason;
} malformed[] = {
    {"CONNECT: 10 proto ver 2", 0, false, "10 0F 00 06 4D 51 49 73 64 70 02 00 00 0A 00 01 70",
     0x84},
    {"FORBIDDEN: 00 first packet", 0, false, "00 00", 0},
    {"CONNECT: 10 Client ID with 0x0000", 0, false,
     "10 11 00 04 4D 51 54 54 04 02 00 0A 00 05 74 6F 70 00 00", 0},
    {"CONNECT: 10 Will topic with 0x0000", 0, false,
     "10 17 00 04 4D 51 54 54 04 06 00 0A 00 01 70 00 05 74 6F 70 00 00 00 01 70", 0},
    {"CONNECT: 10 [MQTT-3.1.2-22]", 0, false,
     "10 10 00 04 4D 51 54 54 04 42 00 0A 00 01 70 00 01 70", 0},
    {"CONNECT: 10 [MQTT-3.1.2-3]", 0, false, "10 0D 00 04 4D 51 54 54 04 01 00 0A 00 01 70", 0},
    {"CONNECT: 10 [MQTT-3.1.2-18]", 0, false,
     "10 10 00 04 4D 51 54 54 04 02 00 0A 00 01 70 00 01 70", 0},
    {"CONNECT: NanoMQ CWE-119", 0, false,
     "10 07 00 04 4D 51 54 54 04 C2 00 3C 00 0B 74 65 73 74 2D 70 79 74 68 6F 6E 00 05 61 64 6d 69 "
     "6E 00 08 70 61 73 73 77 6F 72 64",
     0},
    {"CONNECT: 10 missing client ID", 0, false, "10 0A 00 04 4D 51 54 54 04 02 00 0A", 0},
    {"CONNECT: 10 [MQTT-3.1.2-21]", 0, false,
     "10 10 00 04 4D 51 54 54 04 C2 00 0A 00 01 70 00 01 70", 0},
    {"CONNECT: 10 [MQTT-3.1.2-19]", 0, false, "10 0D 00 04 4D 51 54 54 04 82 00 0A 00 01 70", 0},
    {"CONNECT: 10 Will flag 1 no Will topic no Will message [MQTT-3.1.2-9]", 0, false,
     "10 0D 00 04 4D 51 54 54 04 06 00 0A 00 01 70", 0},
    {"CONNECT: 10 zero proto", 0, false, "10 09 00 00 04 02 00 0A 00 01 70", 0},
    {"CONNECT: 10 proto ver 2 [MQTT-3.1.2-2]", 0, false,
     "10 0D 00 04 4D 51 54 54 02 00 00 0A 00 01 70", 0x84},
    {"CONNECT: 10 Username with 0x0000", 0, false,
     "10 14 00 04 4D 51 54 54 04 82 00 0A 00 01 70 00 05 74 6F 70 00 00", 0},
    {"CONNECT: 10 Will flag 1 Will Qos 3 [MQTT-3.1.2-14]", 0, false,
     "10 13 00 04 4D 51 54 54 04 1E 00 0A 00 01 70 00 01 70 00 01 70", 0},
    {"CONNECT: 10 Will flag 0 Will QoS 1 [MQTT-3.1.2-11]", 0, false,
     "10 0D 00 04 4D 51 54 54 04 0A 00 0A 00 01 70", 0},
    {"CONNECT: 11", 0, false, "11 0D 00 04 4D 51 54 54 04 02 00 0A 00 01 70", 0},
    {"CONNACK: 20 [MQTT-3.1.0-1]", 0, false, "20 02 00 00", 0},
    {"AUTH: F0 [MQTT-3.1.0-1]", 0, false, "F0 00", 0},
    {"CONNECT: authentication-data (UTF-8 string) no authentication-method", 0, false,
     "10 12 00 04 4D 51 54 54 05 02 00 0A 04 16 00 01 70 00 01 70", 0x82},
    {"CONNECT: maximum-qos (byte) missing", 0, false,
     "10 0F 00 04 4D 51 54 54 05 02 00 0A 24 01 00 01 70", 0x81},
    {"CONNECT: request-problem-information (byte) 2 value", 0, false,
     "10 10 00 04 4D 51 54 54 05 02 00 0A 02 17 02 00 01 70", 0x82},
    {"CONNECT: request-response-information (byte) 2 value", 0, false,
     "10 10 00 04 4D 51 54 54 05 02 00 0A 02 19 02 00 01 70", 0x82},
    {"CONNECT: response-topic (UTF-8 string) empty", 0, false,
     "10 18 00 04 4D 51 54 54 05 06 00 0A 00 00 01 70 03 08 00 00 00 01 70 00 01 70", 0x82},
    {"CONNECT: 10 Client ID with 0x0000", 0, false,
     "10 12 00 04 4D 51 54 54 05 02 00 0A 00 00 05 74 6F 70 00 00", 0},
    {"CONNECT: 2*request-response-information (byte)", 0, false,
     "10 12 00 04 4D 51 54 54 05 02 00 0A 04 19 01 19 01 00 01 70", 0x82},
    {"CONNECT: maximum-packet-size (four byte integer) 0 value", 0, false,
     "10 13 00 04 4D 51 54 54 05 02 00 0A 05 27 00 00 00 00 00 01 70", 0x82},
    {"CONNECT: payload-format-indicator (byte)", 0, false,
     "10 10 00 04 4D 51 54 54 05 02 00 0A 02 01 01 00 01 70", 0x82},
    {"CONNECT: receive-maximum (two byte integer) 0 value", 0, false,
     "10 11 00 04 4D 51 54 54 05 02 00 0A 03 21 00 00 00 01 70", 0x82},
    {"CONNECT: 10 [MQTT-3.1.2-16]", 0, false,
     "10 11 00 04 4D 51 54 54 05 02 00 0A 00 00 01 71 00 01 71", 0x81},
    {"CONNECT: 10 [MQTT-3.1.2-19]", 0, false,
     "10 11 00 04 4D 51 54 54 05 C2 00 0A 00 00 01 70 00 01 70", 0},
    {"CONNECT: session-expiry-interval (four byte integer) missing", 0, false,
     "10 0F 00 04 4D 51 54 54 05 02 00 0A 01 11 00 01 70", 0x81},
    {"CONNECT: 10 [MQTT-3.1.2-17]", 0, false, "10 0E 00 04 4D 51 54 54 05 82 00 0A 00 00 01 70", 0},
    {"CONNECT: invalid-property 0x00 (byte)", 0, false,
     "10 10 00 04 4D 51 54 54 05 02 00 0A 02 00 01 00 01 70", 0x81},
    {"CONNECT: 10 Username with 0x0000", 0, false,
     "10 15 00 04 4D 51 54 54 05 82 00 0A 00 00 01 70 00 05 74 6F 70 00 00", 0},
    {"CONNACK: 20 [MQTT-3.1.0-1]", 0, false, "20 03 00 00 00", 0},
    {"CONNACK: issue 2163 v3", 3, false, "29 02 00 01", 0},
    {"FORBIDDEN: 00", 4, false, "00 00", 0},
    {"CONNACK: 20 short 0", 4, false, "20 00", 0},
    {"PUBLISH: 30 topic 0", 4, false, "30 09 00 00 70 61 79 6C 6F 61 64", 0},
    {"PUBLISH: 30 topic with 0x0000", 4, false, "30 0E 00 05 74 6F 70 00 00 70 61 79 6C 6F 61 64",
     0},
    {"PUBLISH: 30 topic with + [MQTT-3.3.2-2]", 4, false,
     "30 0E 00 05 2B 6F 70 69 63 70 61 79 6C 6F 61 64", 0},
    {"PUBLISH: 36 QoS 3 (no mid) [MQTT-3.3.1-4]", 4, false,
     "36 0E 00 05 74 6F 70 69 63 70 61 79 6C 6F 61 64", 0},
    {"PUBLISH: 38 QoS 0 Dup 1", 4, false, "38 0E 00 05 74 6F 70 69 63 70 61 79 6C 6F 61 64", 0},
    {"PUBACK: 40 unsolicited mid 0", 4, false, "40 02 00 00", 0},
    {"PUBACK: 40 unsolicited long", 4, false, "40 03 00 01 00", 0},
    {"PUBACK: 40 unsolicited short 0", 4, false, "40 00", 0},
    {"SUBSCRIBE: 82 QoS 3 [MQTT-3-8.3-4]", 4, false, "82 06 12 34 00 01 70 03", 0},
    {"SUBSCRIBE: 82 short 3", 4, false, "82 03 12 34 00", 0},
    {"SUBSCRIBE: 82 short 5 [MQTT-3.8.3-3]", 4, false, "82 05 12 34 00 01 70", 0},
    {"SUBSCRIBE: 82 short 2", 4, false, "82 02 12 34", 0},
    {"SUBSCRIBE: 82 short 0", 4, false, "82 00", 0},
    {"UNSUBSCRIBE: A2 topic with 0x0000", 4, false, "A2 09 12 34 00 05 74 6F 70 00 00", 0},
    {"PINGREQ: C0 long", 4, false, "C0 01 00", 0},
    {"PINGRESP: D0", 4, false, "D0 00", 0},
    {"DISCONNECT: E0 long", 4, false, "E0 01 00", 0},
    {"DISCONNECT: E1 [MQTT-3.14.1-1]", 4, false, "E1 00", 0},
    {"AUTH: F1", 4, false, "F1 00", 0},
    {"FORBIDDEN: 00", 5, false, "00 00", 0x82},
    {"CONNACK: 20 short 0", 5, false, "20 00", 0x82},
    {"PUBLISH: 30 topic 0", 5, false, "30 0A 00 00 00 70 61 79 6C 6F 61 64", 0x81},
    {"PUBLISH: 30 topic with 0x0000", 5, false,
     "30 0F 00 05 74 6F 70 00 00 00 70 61 79 6C 6F 61 64", 0x81},
    {"PUBLISH: 30 topic with + [MQTT-3.3.2-2]", 5, false,
     "30 0F 00 05 2B 6F 70 69 63 00 70 61 79 6C 6F 61 64", 0x81},
    {"PUBLISH: payload-format-indicator=2 (byte, invalid)", 5, false,
     "32 13 00 05 74 6F 70 69 63 12 34 02 01 02 70 61 79 6C 6F 61 64", 0x82},
    {"PUBLISH: response-topic (UTF-8 string) empty", 5, false,
     "32 14 00 05 74 6F 70 69 63 12 34 03 08 00 00 70 61 79 6C 6F 61 64", 0x82},
    {"PUBLISH: 36 QoS 3 (no mid) [MQTT-3.3.1-4]", 5, false,
     "36 0F 00 05 74 6F 70 69 63 00 70 61 79 6C 6F 61 64", 0x81},
    {"PUBLISH: 38 QoS 0 Dup 1", 5, false, "38 0F 00 05 74 6F 70 69 63 00 70 61 79 6C 6F 61 64",
     0x81},
    {"PUBACK: 40 unsolicited long", 5, false, "40 05 00 01 00 00 00", 0x81},
    {"PUBACK: 40 unsolicited short 0", 5, false, "40 00", 0x81},
    {"PUBCOMP: 70 unsolicited short 3", 5, false, "70 03 00 01 80", 0x82},
    {"PUBCOMP: 70 unsolicited mid 0", 5, false, "70 02 00 00", 0x82},
    {"SUBSCRIBE: 82 short 2", 5, false, "82 02 12 34", 0x81},
    {"SUBSCRIBE: 82 QoS 3 [MQTT-3-8.3-4]", 5, false, "82 07 12 34 00 00 01 70 03", 0x81},
    {"SUBSCRIBE: 82 short 4", 5, false, "82 04 12 34 00 00", 0x81},
    {"SUBSCRIBE: 82 QoS 3 [MQTT-3-8.3-2] (no qos)", 5, false, "82 06 12 34 00 00 01 70", 0x81},
    {"SUBSCRIBE: 82 QoS 3 [MQTT-3-8.3-2] (no topic or qos)", 5, false, "82 03 12 34 00", 0x81},
    {"SUBSCRIBE: 82 with subscription-identifier=0 (variable byte integer)", 5, false,
     "82 09 00 01 02 0B 00 00 01 70 00", 0x81},
    {"SUBSCRIBE: 82 short 0", 5, false, "82 00", 0x81},
    {"UNSUBSCRIBE: A2 topic with 0x0000", 5, false, "A2 0A 12 34 00 00 05 74 6F 70 00 00", 0x81},
    {"PINGREQ: C0 long", 5, false, "C0 01 00", 0},
    {"PINGRESP: D0", 5, false, "D0 00", 0x82},
    {"DISCONNECT: E0 with 2*reason-string property (invalid)", 5, false,
     "E0 0A 00 08 1F 00 01 70 1F 00 01 71", 0x82},
    {"DISCONNECT: E0 with payload-format-indicator (byte)", 5, false, "E0 04 00 02 01 00", 0x82},
    {"DISCONNECT: E0 RC=0x00 PL=1 P=0x11", 5, false, "E0 03 00 01 11", 0x81},
    {"DISCONNECT: E0 RC=0x00 PL=1 P=0", 5, false, "E0 03 00 01 00", 0x81},
    {"AUTH: F1", 5, false, "F1 00", 0x82},
    /* Not in the corpus. */
    {"extra: property length with a non-minimal varint", 5, false, "E0 03 00 80 00", 0x81},
    {"extra: property id as a non-minimal varint", 5, false, "E0 05 00 03 9F 00 00", 0x81},
    {"extra: subscription identifier 0 in PUBLISH", 5, false, "30 07 00 01 74 02 0B 00 78", 0x82},
    {"extra: topic alias in CONNACK", 5, true, "20 06 00 00 03 23 00 01", 0x82},
    {"extra: CONNACK with reserved flags", 5, true, "20 03 02 00 00", 0x81},
    {"extra: SUBSCRIBE from the server", 5, true, "82 06 00 01 00 00 01 61", 0x82},
    {"extra: SUBACK from a client", 5, false, "90 04 00 01 00 00", 0x82},
    {"extra: PUBACK reason 0x01", 5, false, "40 03 00 01 01", 0x82},
    {"extra: PUBLISH topic with U+D800", 4, false, "30 05 00 03 ED A0 80", 0x81},
    {"extra: PUBLISH topic overlong '/'", 4, false, "30 04 00 02 C0 AF", 0x81},
    {"extra: truncated user property value", 5, false, "E0 09 00 07 26 00 01 6B 00 05 76", 0x81},
    {"extra: user property value not UTF-8", 5, false, "E0 09 00 07 26 00 01 6B 00 01 FF", 0x81},
    {"extra: CONNECT level 5 under MQIsdp", 0, false,
     "10 0F 00 06 4D 51 49 73 64 70 05 02 00 0A 00 01 70", 0x84},
    {"extra: will payload not UTF-8 with payload format 1", 0, false,
     "10 17 00 04 4D 51 54 54 05 06 00 0A 00 00 01 70 02 01 01 00 01 74 00 01 FF", 0x99},
};

static void test_malformed(void)
{
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
        uint8_t buf[128];
        size_t n = unhex(malformed[i].hex, buf, sizeof(buf));
        uint8_t first;
        uint32_t remaining;
        size_t header_len;
        const char *name = malformed[i].name;
        drv_err e = mqtt_parse_fixed_header(buf, n, &first, &remaining, &header_len);
        CHECK_CASE(e == DRV_OK, name);
        if (e != DRV_OK)
            continue;
        /* Some corpus cases send more than the header frames: decode what it frames. */
        CHECK_CASE(remaining <= n - header_len, name);
        if (remaining > n - header_len)
            continue;
        mqtt_packet pkt;
        mqtt_decode_error err;
        e = mqtt_decode(first, buf + header_len, remaining, malformed[i].version,
                        malformed[i].from_server, &pkt, &err);
        CHECK_CASE(e != DRV_OK, name);
        CHECK_CASE(err.what != NULL, name);
        CHECK_CASE(err.reason >= 0x80, name);
        if (malformed[i].reason)
            CHECK_CASE(err.reason == malformed[i].reason, name);
        if (err.reason == MQTT_RC_MALFORMED_PACKET)
            CHECK_CASE(e == DRV_MALFORMED, name);
        else if (err.reason == MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION)
            CHECK_CASE(e == DRV_UNSUPPORTED, name);
        else
            CHECK_CASE(e == DRV_PROTOCOL, name);
    }
}

/* -- encoder limits, streams, reason strings -------------------------------------- */

static void test_encoder_limits(void)
{
    drv_buf b;
    static const uint8_t payload[64];
    mqtt_publish_out po = {.topic = (const uint8_t *)"t",
                           .topic_len = 1,
                           .payload = payload,
                           .payload_len = sizeof(payload)};
    /* The buffer's cap is the limit: nothing is written on failure. */
    drv_buf_init(&b, 32);
    CHECK(mqtt_encode_publish(&b, MQTT_V311, &po) == DRV_TOOBIG);
    CHECK(drv_buf_avail(&b) == 0);
    CHECK(mqtt_encode_simple(&b, MQTT_PINGREQ) == DRV_OK);
    CHECK(drv_buf_avail(&b) == 2);
    po.payload_len = 32 - 2 - 2 - 1 - 2; /* exactly fills the cap */
    CHECK(mqtt_encode_publish(&b, MQTT_V311, &po) == DRV_OK);
    CHECK(drv_buf_avail(&b) == 32);
    CHECK(mqtt_encode_simple(&b, MQTT_PINGREQ) == DRV_TOOBIG);
    CHECK(drv_buf_avail(&b) == 32);
    drv_buf_free(&b);

    /* The property builder refuses more than its fixed capacity. */
    mqtt_prop_builder pb;
    static const uint8_t big[600];
    mqtt_pb_init(&pb);
    mqtt_pb_str(&pb, MQTT_PROP_CONTENT_TYPE, "x", 1);
    CHECK(pb.len == 4 && !pb.overflow);
    mqtt_pb_str(&pb, MQTT_PROP_CORRELATION_DATA, big, sizeof(big));
    CHECK(pb.overflow && pb.len == 4);
    mqtt_pb_init(&pb);
    mqtt_pb_pair(&pb, MQTT_PROP_USER_PROPERTY, big, 70000, "v", 1);
    CHECK(pb.overflow && pb.len == 0);
    mqtt_pb_init(&pb);
    mqtt_pb_str(&pb, MQTT_PROP_CORRELATION_DATA, big, 512 - 3);
    CHECK(!pb.overflow && pb.len == 512);
    mqtt_pb_byte(&pb, MQTT_PROP_PAYLOAD_FORMAT, 0);
    CHECK(pb.overflow && pb.len == 512);
}

static void test_stream(void)
{
    /* Several packets back to back in one buffer, decoded in turn. */
    drv_buf b;
    drv_buf_init(&b, 4096);
    mqtt_connect_out co = {.version = MQTT_V5, .clean_start = true, .client_id = "s"};
    mqtt_publish_out po = {.qos = 1,
                           .packet_id = 5,
                           .topic = (const uint8_t *)"x/y",
                           .topic_len = 3,
                           .payload = (const uint8_t *)"z",
                           .payload_len = 1};
    CHECK(mqtt_encode_connect(&b, &co) == DRV_OK);
    CHECK(mqtt_encode_subscribe(&b, MQTT_V5, 4, "x/#", 1) == DRV_OK);
    CHECK(mqtt_encode_publish(&b, MQTT_V5, &po) == DRV_OK);
    CHECK(mqtt_encode_ack(&b, MQTT_V5, MQTT_PUBREC, 6, 0, NULL) == DRV_OK);
    CHECK(mqtt_encode_simple(&b, MQTT_PINGREQ) == DRV_OK);
    CHECK(mqtt_encode_disconnect(&b, MQTT_V5, MQTT_DISCONNECT, 0, NULL) == DRV_OK);
    static const mqtt_type want[] = {MQTT_CONNECT, MQTT_SUBSCRIBE, MQTT_PUBLISH,
                                     MQTT_PUBREC,  MQTT_PINGREQ,   MQTT_DISCONNECT};
    uint8_t version = 0;
    size_t i = 0;
    while (drv_buf_avail(&b) > 0 && i < sizeof(want) / sizeof(want[0])) {
        uint8_t first;
        uint32_t remaining;
        size_t header_len;
        const uint8_t *p = b.data + b.off;
        CHECK(mqtt_parse_fixed_header(p, drv_buf_avail(&b), &first, &remaining, &header_len) ==
              DRV_OK);
        mqtt_packet pkt;
        mqtt_decode_error err;
        CHECK(mqtt_decode(first, p + header_len, remaining, version, false, &pkt, &err) == DRV_OK);
        CHECK(pkt.type == want[i]);
        if (pkt.type == MQTT_CONNECT)
            version = pkt.u.connect.protocol_version;
        drv_buf_consume(&b, header_len + remaining);
        i++;
    }
    CHECK(i == sizeof(want) / sizeof(want[0]));
    CHECK(drv_buf_avail(&b) == 0);
    drv_buf_free(&b);
}

static void test_reason_str(void)
{
    CHECK(strcmp(mqtt_reason_str(MQTT_RC_MALFORMED_PACKET), "malformed packet") == 0);
    CHECK(strcmp(mqtt_reason_str(MQTT_RC_PROTOCOL_ERROR), "protocol error") == 0);
    CHECK(strcmp(mqtt_reason_str(0x03), "unknown reason") == 0);
    for (int rc = 0; rc < 256; rc++)
        CHECK(mqtt_reason_str((uint8_t)rc) != NULL);
}

int main(void)
{
    test_varint();
    test_fixed_header();
    test_connect_v31_v311();
    test_connect_v5();
    test_publish_flags();
    test_publish_v5_props();
    test_publish_sizes();
    test_subscribe();
    test_acks();
    test_connack();
    test_suback_ping();
    test_disconnect_auth();
    test_malformed();
    test_encoder_limits();
    test_stream();
    test_reason_str();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
