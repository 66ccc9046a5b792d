/*
 * mqtt.h — the MQTT 3.1 / 3.1.1 / 5.0 codec: a library with no broker state.
 *
 * Decoding is zero-copy: strings, binary data and payloads in a decoded
 * packet point into the caller's packet buffer and are valid only while that
 * buffer is.  Decoding is strictly bounded by the packet length and validates
 * everything the specification says a receiver must check (reserved flags,
 * UTF-8 rules, property identifiers, duplicates and values, packet ids,
 * QoS), so a decoded packet is well-formed; semantic checks that depend on
 * session state (topic aliases, packet ids in use) are the broker's.
 *
 * A decode failure returns DRV_MALFORMED or DRV_PROTOCOL together with the
 * MQTT 5.0 reason code to send (0x81 Malformed Packet, 0x82 Protocol Error,
 * ...) in mqtt_decode_error.
 *
 * Encoders append a complete packet to a drv_buf (the connection's output
 * buffer) and fail only with DRV_TOOBIG / DRV_NOMEM from the buffer.
 *
 * Used by the broker, the bench tool, the tests and the fuzzers.
 */
#ifndef DRV_MQTT_H
#define DRV_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"

/* Protocol levels as sent in CONNECT. */
enum {
    MQTT_V31 = 3,
    MQTT_V311 = 4,
    MQTT_V5 = 5,
};

typedef enum {
    MQTT_CONNECT = 1,
    MQTT_CONNACK = 2,
    MQTT_PUBLISH = 3,
    MQTT_PUBACK = 4,
    MQTT_PUBREC = 5,
    MQTT_PUBREL = 6,
    MQTT_PUBCOMP = 7,
    MQTT_SUBSCRIBE = 8,
    MQTT_SUBACK = 9,
    MQTT_UNSUBSCRIBE = 10,
    MQTT_UNSUBACK = 11,
    MQTT_PINGREQ = 12,
    MQTT_PINGRESP = 13,
    MQTT_DISCONNECT = 14,
    MQTT_AUTH = 15,
} mqtt_type;

/* MQTT 5.0 reason codes (§2.4); v3.1.1 CONNACK return codes are mapped from these. */
#define MQTT_REASONS(X)                                                      \
    X(SUCCESS, 0x00, "success")                                              \
    X(GRANTED_QOS1, 0x01, "granted QoS 1")                                   \
    X(GRANTED_QOS2, 0x02, "granted QoS 2")                                   \
    X(DISCONNECT_WITH_WILL, 0x04, "disconnect with will message")            \
    X(NO_MATCHING_SUBSCRIBERS, 0x10, "no matching subscribers")              \
    X(NO_SUBSCRIPTION_EXISTED, 0x11, "no subscription existed")              \
    X(CONTINUE_AUTH, 0x18, "continue authentication")                        \
    X(REAUTHENTICATE, 0x19, "re-authenticate")                               \
    X(UNSPECIFIED, 0x80, "unspecified error")                                \
    X(MALFORMED_PACKET, 0x81, "malformed packet")                            \
    X(PROTOCOL_ERROR, 0x82, "protocol error")                                \
    X(IMPLEMENTATION_SPECIFIC, 0x83, "implementation specific error")        \
    X(UNSUPPORTED_PROTOCOL_VERSION, 0x84, "unsupported protocol version")    \
    X(CLIENT_ID_NOT_VALID, 0x85, "client identifier not valid")              \
    X(BAD_USERNAME_OR_PASSWORD, 0x86, "bad user name or password")           \
    X(NOT_AUTHORIZED, 0x87, "not authorized")                                \
    X(SERVER_UNAVAILABLE, 0x88, "server unavailable")                        \
    X(SERVER_BUSY, 0x89, "server busy")                                      \
    X(BANNED, 0x8A, "banned")                                                \
    X(SERVER_SHUTTING_DOWN, 0x8B, "server shutting down")                    \
    X(BAD_AUTH_METHOD, 0x8C, "bad authentication method")                    \
    X(KEEP_ALIVE_TIMEOUT, 0x8D, "keep alive timeout")                        \
    X(SESSION_TAKEN_OVER, 0x8E, "session taken over")                        \
    X(TOPIC_FILTER_INVALID, 0x8F, "topic filter invalid")                    \
    X(TOPIC_NAME_INVALID, 0x90, "topic name invalid")                        \
    X(PACKET_ID_IN_USE, 0x91, "packet identifier in use")                    \
    X(PACKET_ID_NOT_FOUND, 0x92, "packet identifier not found")              \
    X(RECEIVE_MAX_EXCEEDED, 0x93, "receive maximum exceeded")                \
    X(TOPIC_ALIAS_INVALID, 0x94, "topic alias invalid")                      \
    X(PACKET_TOO_LARGE, 0x95, "packet too large")                            \
    X(MESSAGE_RATE_TOO_HIGH, 0x96, "message rate too high")                  \
    X(QUOTA_EXCEEDED, 0x97, "quota exceeded")                                \
    X(ADMINISTRATIVE_ACTION, 0x98, "administrative action")                  \
    X(PAYLOAD_FORMAT_INVALID, 0x99, "payload format invalid")                \
    X(RETAIN_NOT_SUPPORTED, 0x9A, "retain not supported")                    \
    X(QOS_NOT_SUPPORTED, 0x9B, "QoS not supported")                          \
    X(USE_ANOTHER_SERVER, 0x9C, "use another server")                        \
    X(SERVER_MOVED, 0x9D, "server moved")                                    \
    X(SHARED_SUBS_NOT_SUPPORTED, 0x9E, "shared subscriptions not supported") \
    X(CONNECTION_RATE_EXCEEDED, 0x9F, "connection rate exceeded")            \
    X(MAXIMUM_CONNECT_TIME, 0xA0, "maximum connect time")                    \
    X(SUB_IDS_NOT_SUPPORTED, 0xA1, "subscription identifiers not supported") \
    X(WILDCARD_SUBS_NOT_SUPPORTED, 0xA2, "wildcard subscriptions not supported")

typedef enum {
#define MQTT_RC_ENUM(name, code, msg) MQTT_RC_##name = code,
    MQTT_REASONS(MQTT_RC_ENUM)
#undef MQTT_RC_ENUM
} mqtt_reason;

/* Text of a reason code, for logs and reason strings; never NULL. */
const char *mqtt_reason_str(uint8_t rc);

/* Property identifiers (§2.2.2.2). */
enum {
    MQTT_PROP_PAYLOAD_FORMAT = 0x01,
    MQTT_PROP_MESSAGE_EXPIRY = 0x02,
    MQTT_PROP_CONTENT_TYPE = 0x03,
    MQTT_PROP_RESPONSE_TOPIC = 0x08,
    MQTT_PROP_CORRELATION_DATA = 0x09,
    MQTT_PROP_SUBSCRIPTION_ID = 0x0B,
    MQTT_PROP_SESSION_EXPIRY = 0x11,
    MQTT_PROP_ASSIGNED_CLIENT_ID = 0x12,
    MQTT_PROP_SERVER_KEEP_ALIVE = 0x13,
    MQTT_PROP_AUTH_METHOD = 0x15,
    MQTT_PROP_AUTH_DATA = 0x16,
    MQTT_PROP_REQUEST_PROBLEM_INFO = 0x17,
    MQTT_PROP_WILL_DELAY = 0x18,
    MQTT_PROP_REQUEST_RESPONSE_INFO = 0x19,
    MQTT_PROP_RESPONSE_INFO = 0x1A,
    MQTT_PROP_SERVER_REFERENCE = 0x1C,
    MQTT_PROP_REASON_STRING = 0x1F,
    MQTT_PROP_RECEIVE_MAXIMUM = 0x21,
    MQTT_PROP_TOPIC_ALIAS_MAXIMUM = 0x22,
    MQTT_PROP_TOPIC_ALIAS = 0x23,
    MQTT_PROP_MAXIMUM_QOS = 0x24,
    MQTT_PROP_RETAIN_AVAILABLE = 0x25,
    MQTT_PROP_USER_PROPERTY = 0x26,
    MQTT_PROP_MAXIMUM_PACKET_SIZE = 0x27,
    MQTT_PROP_WILDCARD_SUB_AVAILABLE = 0x28,
    MQTT_PROP_SUB_ID_AVAILABLE = 0x29,
    MQTT_PROP_SHARED_SUB_AVAILABLE = 0x2A,
};

/* A length-delimited view into a packet buffer (not NUL-terminated). */
typedef struct mqtt_bytes {
    const uint8_t *p;
    uint32_t len;
} mqtt_bytes;

/*
 * Decoded MQTT 5.0 properties.  `present` has bit (1u << id) for every
 * property seen (ids are < 64).  User properties are not copied: iterate
 * them from `raw` with mqtt_props_next.  `raw` is the whole property block.
 */
typedef struct mqtt_props {
    uint64_t present;
    mqtt_bytes raw;
    uint8_t payload_format;
    uint8_t request_problem_info;
    uint8_t request_response_info;
    uint8_t maximum_qos;
    uint8_t retain_available;
    uint8_t wildcard_sub_available;
    uint8_t sub_id_available;
    uint8_t shared_sub_available;
    uint16_t server_keep_alive;
    uint16_t receive_maximum;
    uint16_t topic_alias_maximum;
    uint16_t topic_alias;
    uint32_t message_expiry;
    uint32_t session_expiry;
    uint32_t will_delay;
    uint32_t maximum_packet_size;
    uint32_t subscription_id;
    mqtt_bytes content_type;
    mqtt_bytes response_topic;
    mqtt_bytes correlation_data;
    mqtt_bytes assigned_client_id;
    mqtt_bytes auth_method;
    mqtt_bytes auth_data;
    mqtt_bytes response_info;
    mqtt_bytes server_reference;
    mqtt_bytes reason_string;
    uint32_t user_property_count;
} mqtt_props;

static inline bool mqtt_props_has(const mqtt_props *p, int id)
{
    return (p->present >> id) & 1u;
}

/* One property as walked by mqtt_props_next. */
typedef struct mqtt_prop {
    uint8_t id;
    mqtt_bytes raw;   /* the encoded property, identifier included */
    mqtt_bytes key;   /* user property name, or string/binary value */
    mqtt_bytes value; /* user property value */
    uint32_t num;     /* integer value */
} mqtt_prop;

/* Walk a validated property block: *pos starts at 0; false at the end. */
bool mqtt_props_next(const mqtt_bytes *raw, uint32_t *pos, mqtt_prop *out);

typedef struct mqtt_connect {
    mqtt_bytes protocol_name;
    uint8_t protocol_version;
    bool clean_start;
    bool will_flag;
    uint8_t will_qos;
    bool will_retain;
    bool has_username;
    bool has_password;
    uint16_t keep_alive;
    mqtt_props props;
    mqtt_bytes client_id;
    mqtt_props will_props;
    mqtt_bytes will_topic;
    mqtt_bytes will_payload;
    mqtt_bytes username;
    mqtt_bytes password;
} mqtt_connect;

typedef struct mqtt_publish {
    uint8_t qos;
    bool dup;
    bool retain;
    uint16_t packet_id;
    mqtt_bytes topic; /* may be empty in 5.0 when a topic alias is used */
    mqtt_props props;
    mqtt_bytes payload;
} mqtt_publish;

/* PUBACK, PUBREC, PUBREL, PUBCOMP. */
typedef struct mqtt_ack {
    uint16_t packet_id;
    uint8_t reason;
    mqtt_props props;
} mqtt_ack;

/* SUBSCRIBE and UNSUBSCRIBE: entries are walked with mqtt_sub_next. */
typedef struct mqtt_subscribe {
    uint16_t packet_id;
    mqtt_props props;
    mqtt_bytes entries; /* the validated payload */
    uint32_t count;     /* number of topic filters */
} mqtt_subscribe;

typedef struct mqtt_sub_entry {
    mqtt_bytes filter;
    uint8_t qos;              /* SUBSCRIBE only */
    bool no_local;            /* 5.0 */
    bool retain_as_published; /* 5.0 */
    uint8_t retain_handling;  /* 5.0: 0, 1 or 2 */
} mqtt_sub_entry;

/* Walk SUBSCRIBE (is_subscribe) or UNSUBSCRIBE entries; false at the end. */
bool mqtt_sub_next(const mqtt_subscribe *s, bool is_subscribe, uint32_t *pos, mqtt_sub_entry *out);

/* CONNACK, SUBACK, UNSUBACK as seen by a client (bench tool, tests). */
typedef struct mqtt_connack {
    bool session_present;
    uint8_t reason;
    mqtt_props props;
} mqtt_connack;

typedef struct mqtt_suback {
    uint16_t packet_id;
    mqtt_props props;
    mqtt_bytes reasons;
} mqtt_suback;

/* DISCONNECT and AUTH. */
typedef struct mqtt_disconnect {
    uint8_t reason;
    mqtt_props props;
} mqtt_disconnect;

typedef struct mqtt_packet {
    mqtt_type type;
    uint8_t flags; /* low nibble of the first byte */
    union {
        mqtt_connect connect;
        mqtt_connack connack;
        mqtt_publish publish;
        mqtt_ack ack;
        mqtt_subscribe subscribe;
        mqtt_suback suback;
        mqtt_disconnect disconnect; /* also AUTH */
    } u;
} mqtt_packet;

/* Why a decode failed, in wire terms. */
typedef struct mqtt_decode_error {
    uint8_t reason; /* MQTT 5.0 reason code to send */
    const char *what;
} mqtt_decode_error;

/*
 * Parse the fixed header at buf[0..len).  On DRV_OK sets *first (type and
 * flags byte), *remaining (remaining length) and *header_len (1 + varint
 * bytes).  DRV_AGAIN: more bytes needed.  DRV_MALFORMED: bad varint.
 */
drv_err mqtt_parse_fixed_header(const uint8_t *buf, size_t len, uint8_t *first, uint32_t *remaining,
                                size_t *header_len);

/*
 * Decode the packet whose variable header and payload are body[0..len),
 * first byte `first`, for a connection at protocol `version` (use 0 before
 * CONNECT is known: only CONNECT is accepted then).  `from_server`: decode as
 * a client (packets a server sends) instead of as a server.
 */
drv_err mqtt_decode(uint8_t first, const uint8_t *body, uint32_t len, uint8_t version,
                    bool from_server, mqtt_packet *out, mqtt_decode_error *err);

/* -- validation helpers (also used by the broker) ---------------------------- */

/* Well-formed UTF-8 per MQTT §1.5.4: no U+0000, no surrogates, no overlongs. */
bool mqtt_utf8_valid(const uint8_t *s, size_t len);
/* A topic name for PUBLISH: non-empty, no wildcards, valid UTF-8. */
bool mqtt_topic_name_valid(const uint8_t *s, size_t len);
/* A topic filter: non-empty, '#' last and alone in its level, '+' alone. */
bool mqtt_topic_filter_valid(const uint8_t *s, size_t len);
/* Does the topic name match the filter?  `$` topics do not match a leading wildcard. */
bool mqtt_topic_matches(const uint8_t *filter, size_t flen, const uint8_t *topic, size_t tlen);
/* Does `rule` (a filter) cover `req` (a name or filter): does it match every
 * topic req can match?  Level by level: '#' covers the rest, '+' a literal or
 * '+', a literal only itself; req '#' only by rule '#'.  For a topic name
 * this is mqtt_topic_matches.  Both must be valid filters. */
bool mqtt_filter_covers(const uint8_t *rule, size_t rlen, const uint8_t *req, size_t qlen);

/*
 * Split "$share/<group>/<filter>": true if it is a shared subscription; then
 * group and filter are set.  *valid is false for a malformed share name
 * (empty group, wildcard in group, missing filter).
 */
bool mqtt_shared_split(const uint8_t *s, size_t len, mqtt_bytes *group, mqtt_bytes *filter,
                       bool *valid);

/* -- encoding ----------------------------------------------------------------- */

/* Bytes needed for the variable byte integer v (1..4). */
unsigned mqtt_varint_size(uint32_t v);
/* Write v as a variable byte integer to p; returns bytes written. */
unsigned mqtt_varint_write(uint8_t *p, uint32_t v);

/*
 * A property list being built for an outgoing packet.  Fixed capacity; the
 * encoder copies the bytes, so builders live on the stack.
 */
typedef struct mqtt_prop_builder {
    uint8_t data[512];
    uint32_t len;
    const uint8_t *extra; /* a pre-encoded block appended verbatim (may be NULL) */
    uint32_t extra_len;
    bool overflow;
} mqtt_prop_builder;

void mqtt_pb_init(mqtt_prop_builder *pb);
void mqtt_pb_byte(mqtt_prop_builder *pb, uint8_t id, uint8_t v);
void mqtt_pb_u16(mqtt_prop_builder *pb, uint8_t id, uint16_t v);
void mqtt_pb_u32(mqtt_prop_builder *pb, uint8_t id, uint32_t v);
void mqtt_pb_varint(mqtt_prop_builder *pb, uint8_t id, uint32_t v);
void mqtt_pb_str(mqtt_prop_builder *pb, uint8_t id, const void *s, uint32_t len);
void mqtt_pb_pair(mqtt_prop_builder *pb, uint8_t id, const void *k, uint32_t klen, const void *v,
                  uint32_t vlen);
static inline uint32_t mqtt_pb_size(const mqtt_prop_builder *pb)
{
    return pb->len + pb->extra_len;
}

/* Outgoing PUBLISH. `props` may be NULL (no properties, or protocol < 5). */
typedef struct mqtt_publish_out {
    uint8_t qos;
    bool dup;
    bool retain;
    uint16_t packet_id;
    const uint8_t *topic;
    uint16_t topic_len;
    const uint8_t *payload;
    uint32_t payload_len;
    const mqtt_prop_builder *props;
} mqtt_publish_out;

/* Size on the wire of the PUBLISH (for Maximum Packet Size checks). */
size_t mqtt_publish_size(uint8_t version, const mqtt_publish_out *p);
drv_err mqtt_encode_publish(drv_buf *out, uint8_t version, const mqtt_publish_out *p);

/*
 * CONNACK.  For 3.1/3.1.1 the 5.0 reason is mapped to the v3 return code.
 * props may be NULL.
 */
drv_err mqtt_encode_connack(drv_buf *out, uint8_t version, bool session_present, uint8_t reason,
                            const mqtt_prop_builder *props);
/*
 * PUBACK/PUBREC/PUBREL/PUBCOMP: for 5.0 the reason and properties are
 * omitted when they are Success and empty, as §3.4.2.1 allows.
 */
drv_err mqtt_encode_ack(drv_buf *out, uint8_t version, mqtt_type type, uint16_t packet_id,
                        uint8_t reason, const mqtt_prop_builder *props);
/* SUBACK / UNSUBACK (reasons ignored for 3.x UNSUBACK). */
drv_err mqtt_encode_suback(drv_buf *out, uint8_t version, mqtt_type type, uint16_t packet_id,
                           const uint8_t *reasons, uint32_t count, const mqtt_prop_builder *props);
/* PINGREQ / PINGRESP (2 bytes). */
drv_err mqtt_encode_simple(drv_buf *out, mqtt_type type);
/* DISCONNECT or AUTH with a reason (5.0 only; 3.x DISCONNECT is 2 bytes). */
drv_err mqtt_encode_disconnect(drv_buf *out, uint8_t version, mqtt_type type, uint8_t reason,
                               const mqtt_prop_builder *props);

/* Client-side encoders used by the bench tool and tests. */
typedef struct mqtt_connect_out {
    uint8_t version;
    bool clean_start;
    uint16_t keep_alive;
    const char *client_id;
    const char *username; /* NULL: none */
    const char *password; /* NULL: none */
    const mqtt_prop_builder *props;
} mqtt_connect_out;
drv_err mqtt_encode_connect(drv_buf *out, const mqtt_connect_out *c);
drv_err mqtt_encode_subscribe(drv_buf *out, uint8_t version, uint16_t packet_id, const char *filter,
                              uint8_t options);

#endif
