/*
 * handle_connect.c — CONNECT (§3.1): identify, authenticate, take over or
 * create the session, store the will and answer CONNACK.
 *
 * The auth backend may put the client in a namespace (ADR-0009).  The
 * session is then keyed by (namespace, client id), so a takeover only
 * happens within a tenant, and the will is stored under the namespace.
 */
#include <stdio.h>
#include <string.h>

#include "broker/broker_int.h"
#include "core/alloc.h"
#include "core/log.h"

/* v3: refuse with a return code and close; v5: the same with a reason code. */
static uint8_t refuse(conn *c, uint8_t reason)
{
    mqtt_encode_connack(&c->out, c->version, false, reason, NULL);
    return reason;
}

/* Refused after authenticating: the backend's context goes back to it. */
static uint8_t refuse_auth(conn *c, uint8_t reason, void *ctx)
{
    broker_auth_ctx_release(conn_broker(c), ctx);
    return refuse(c, reason);
}

/* A connection already holds this session: end it and keep the session. */
static void take_over(conn *old)
{
    session *s = old->s;
    drv_info("session taken over", "client", s->client_id, "ns", session_ns(s), "old_peer",
             conn_peer(old));
    broker_client_event(conn_broker(old), old, s, false, "session taken over");
    if (old->counted_connected)
        quota_conn_gone(conn_broker(old), s);
    old->s = NULL;
    session_detach(s, true); /* may end the session (expiry 0) and fire the will */
    conn_close(old, MQTT_RC_SESSION_TAKEN_OVER, false);
}

/* Copy what the backend needs into a job and queue it; the connection waits. */
static uint8_t submit_auth(conn *c, const drv_client_identity *who, const mqtt_connect *p)
{
    auth_job *j = drv_calloc(1, sizeof(*j));
    if (!j)
        return refuse(c, MQTT_RC_SERVER_UNAVAILABLE);
    j->c = c;
    j->client_id = drv_strdup(who->client_id);
    j->username = who->username ? drv_strdup(who->username) : NULL;
    j->has_password = p->has_password;
    if (p->has_password && p->password.len) {
        j->password = drv_malloc(p->password.len);
        if (j->password) {
            memcpy(j->password, p->password.p, p->password.len);
            j->password_len = p->password.len;
        }
    }
    j->peer = c->peer;
    if (who->cert) {
        j->cert = *who->cert;
        j->has_cert = true;
    }
    if (!j->client_id || (who->username && !j->username) ||
        (p->has_password && p->password.len && !j->password)) {
        auth_job_free(conn_broker(c), j);
        return refuse(c, MQTT_RC_SERVER_UNAVAILABLE);
    }
    c->auth_pending = true;
    auth_submit(conn_broker(c), j);
    return CONNECT_PENDING;
}

static void set_will(conn *c, session *s, const mqtt_connect *p)
{
    /* A will pending from an earlier connection is cancelled by this one (§3.1.3.2.2). */
    msg *m = p->will_flag ? msg_from_publish(session_ns(s), s->ns_len, &p->will_topic,
                                             &p->will_props, c->version, &p->will_payload,
                                             p->will_qos, p->will_retain, broker_now_s())
                          : NULL;
    session_set_will(s, m, m ? p->will_props.will_delay : 0);
}

uint8_t handle_connect(conn *c, const mqtt_connect *p)
{
    drv_broker *b = conn_broker(c);
    const drv_broker_config *cfg = &b->cfg;
    c->version = p->protocol_version;
    bool v5 = c->version == MQTT_V5;

    /* Client identifier: assign one when empty, where the version allows it. */
    char assigned[40] = "";
    const uint8_t *id = p->client_id.p;
    size_t id_len = p->client_id.len;
    /* A CONNECT parsed again after its authentication (auth.c) uses that outcome. */
    auth_job *done = auth_outcome;
    auth_outcome = NULL;
    if (id_len == 0 && done) {
        id = (const uint8_t *)done->client_id; /* the id it was authenticated with */
        id_len = strlen(done->client_id);
    } else if (id_len == 0) {
        if (c->version == MQTT_V31 || (c->version == MQTT_V311 && !p->clean_start))
            return refuse(c, MQTT_RC_CLIENT_ID_NOT_VALID);
        snprintf(assigned, sizeof(assigned), "drover-%016llx-%llu",
                 (unsigned long long)(b->start_s ^ (uint64_t)(uintptr_t)c),
                 (unsigned long long)++b->next_assigned_id);
        id = (const uint8_t *)assigned;
        id_len = strlen(assigned);
    }

    if (v5 && mqtt_props_has(&p->props, MQTT_PROP_AUTH_METHOD))
        return refuse(c, MQTT_RC_BAD_AUTH_METHOD); /* no enhanced auth method yet */
    if (p->will_flag) {
        if (p->will_retain && !cfg->retain_available)
            return refuse(c, MQTT_RC_RETAIN_NOT_SUPPORTED);
        if (p->will_qos > cfg->maximum_qos)
            return refuse(c, MQTT_RC_QOS_NOT_SUPPORTED);
    }

    char client_id[65536 + 1];
    memcpy(client_id, id, id_len);
    client_id[id_len] = '\0';
    drv_auth_result auth;
    memset(&auth, 0, sizeof(auth));
    char *username =
        p->has_username ? drv_strndup((const char *)p->username.p, p->username.len) : NULL;
    if (p->has_username && !username)
        return refuse(c, MQTT_RC_SERVER_UNAVAILABLE);
    drv_peer_cert cert;
    bool has_cert = c->st && drv_stream_peer_cert(c->st, &cert) && cert.present;
    drv_client_identity who = {
        .client_id = client_id,
        .username = username,
        .peer = &c->peer,
        .cert = has_cert ? &cert : NULL,
        .ns = "",
    };
    if (cfg->auth_ops && !done && b->auth_thread_running &&
        (!cfg->auth_ops->slow || cfg->auth_ops->slow(cfg->auth_state, &who, p->has_password))) {
        /* Real work (hashing, lookups): off the lock, on the authentication thread. */
        uint8_t rc = submit_auth(c, &who, p);
        drv_free(username);
        return rc;
    }
    if (cfg->auth_ops) {
        drv_err e;
        if (done) {
            e = done->err;
            auth = done->result;
            done->result.ctx = NULL; /* ours now (auth_job_free would release it) */
        } else {
            e = cfg->auth_ops->authenticate(cfg->auth_state, &who, p->password.p, p->password.len,
                                            p->has_password, &auth);
        }
        auth.ns[DRV_AUTH_NS_MAX] = '\0';
        if (e == DRV_OK && auth.ns[0] && !drv_auth_ns_valid(auth.ns, strlen(auth.ns))) {
            drv_error("auth backend gave an invalid namespace", "backend", cfg->auth_ops->name,
                      "client", client_id, "ns", auth.ns);
            e = DRV_DENIED;
        }
        if (e != DRV_OK) {
            drv_info("connection refused", "client", client_id, "peer", conn_peer(c), "reason",
                     e == DRV_AUTH ? "bad user name or password" : "not authorised");
            drv_free(username);
            return refuse_auth(
                c, e == DRV_AUTH ? MQTT_RC_BAD_USERNAME_OR_PASSWORD : MQTT_RC_NOT_AUTHORIZED,
                auth.ctx);
        }
    }
    size_t ns_len = strlen(auth.ns);
    who.ns = auth.ns;
    who.ctx = auth.ctx;
    /* The session key (id, NUL, namespace) and internal topics must fit the log's
     * 16-bit string lengths. */
    if (ns_len && id_len + 1 + ns_len > 65535) {
        drv_free(username);
        return refuse_auth(c, MQTT_RC_CLIENT_ID_NOT_VALID, auth.ctx);
    }
    if (p->will_flag) {
        const uint8_t *wt = p->will_topic.p;
        size_t wl = p->will_topic.len;
        /* The same rules as a PUBLISH to that topic (handle_publish.c). */
        bool ok = ns_len ? wl > 0 && wt[0] != '$' && wl + ns_len + 1 <= 65535
                         : ns_global_topic_ok(wt, wl);
        char topic[65536 + 1];
        memcpy(topic, wt, wl);
        topic[wl] = '\0';
        if (!ok || (cfg->auth_ops && cfg->auth_ops->authorize(cfg->auth_state, &who, DRV_ACL_WRITE,
                                                              topic) != DRV_OK)) {
            drv_free(username);
            return refuse_auth(c, MQTT_RC_NOT_AUTHORIZED, auth.ctx);
        }
    }

    /* Session expiry: v3 maps clean session to 0 / never (§3.1.2.4). */
    uint32_t expiry = v5 ? p->props.session_expiry : (p->clean_start ? 0 : UINT32_MAX);
    bool expiry_lowered = false;
    if (expiry > cfg->max_session_expiry && expiry != 0) {
        expiry = cfg->max_session_expiry;
        expiry_lowered = true;
    }

    /* The key goes where the C string was: the id, then NUL and the namespace. */
    size_t klen = session_key((uint8_t *)client_id, id, id_len, auth.ns, ns_len);
    const uint8_t *key = (const uint8_t *)client_id;
    session *s = session_find(b, key, klen);
    if (s && s->c)
        take_over(s->c);
    s = session_find(b, key, klen); /* the takeover may have ended it */
    if (ns_len) {
        /* The tenant's quotas as of this CONNECT (quota.c). */
        ns_quota *q = quota_get(b, auth.ns, ns_len, true);
        if (q) {
            q->max_connections = auth.max_connections;
            if (q->rate != auth.max_msgs_per_sec) {
                q->rate = auth.max_msgs_per_sec;
                q->tokens = q->rate;
                q->at_ms = drv_loop_now(c->w->loop);
            }
            if (q->max_connections && q->connections >= q->max_connections) {
                q->refused++;
                drv_info("connection refused", "client", client_id, "ns", auth.ns, "reason",
                         "the tenant's connection quota is reached");
                drv_free(username);
                return refuse_auth(c, MQTT_RC_QUOTA_EXCEEDED, auth.ctx);
            }
        }
    }
    if (s && p->clean_start) {
        session_destroy(s);
        s = NULL;
    }
    bool session_present = s != NULL;
    if (!s) {
        s = session_create(b, key, klen);
        if (!s) {
            drv_free(username);
            return refuse_auth(c, MQTT_RC_SERVER_UNAVAILABLE, auth.ctx);
        }
    }
    session_stop_expiry(s);
    s->c = c;
    c->s = s;
    s->version = c->version;
    drv_free(s->username);
    s->username = username; /* the session owns it from here */
    /* This connection's context replaces the last one's (a restored session has none). */
    broker_auth_ctx_release(b, s->auth_ctx);
    s->auth_ctx = auth.ctx;
    s->unrestricted = auth.unrestricted;
    s->max_qos =
        auth.limit_qos && auth.max_qos < cfg->maximum_qos ? auth.max_qos : cfg->maximum_qos;
    bool was_persistent = s->persistent;
    s->expiry_interval = expiry;
    s->persistent = expiry > 0;
    if (was_persistent && !s->persistent && s->logged)
        persist_session_del(b->persist, s);
    else if (s->persistent)
        persist_session(b->persist, s);
    set_will(c, s, p);

    /* Limits the client asked for (5.0). */
    c->keepalive = p->keep_alive;
    bool keepalive_lowered = false;
    uint16_t ka_max = cfg->max_keepalive;
    if (auth.keepalive_max && (!ka_max || auth.keepalive_max < ka_max))
        ka_max = auth.keepalive_max; /* the device profile's */
    if (ka_max && (c->keepalive == 0 || c->keepalive > ka_max) && v5) {
        c->keepalive = ka_max;
        keepalive_lowered = true;
    }
    if (v5) {
        c->client_max_packet = p->props.maximum_packet_size;
        c->client_receive_max =
            mqtt_props_has(&p->props, MQTT_PROP_RECEIVE_MAXIMUM) ? p->props.receive_maximum : 65535;
        c->client_alias_max = p->props.topic_alias_maximum;
        c->request_problem_info = !mqtt_props_has(&p->props, MQTT_PROP_REQUEST_PROBLEM_INFO) ||
                                  p->props.request_problem_info;
    }

    mqtt_prop_builder pb;
    mqtt_pb_init(&pb);
    if (v5) {
        if (expiry_lowered)
            mqtt_pb_u32(&pb, MQTT_PROP_SESSION_EXPIRY, expiry);
        mqtt_pb_u16(&pb, MQTT_PROP_TOPIC_ALIAS_MAXIMUM, cfg->topic_alias_maximum);
        mqtt_pb_u16(&pb, MQTT_PROP_RECEIVE_MAXIMUM, cfg->receive_maximum);
        if (s->max_qos < 2)
            mqtt_pb_byte(&pb, MQTT_PROP_MAXIMUM_QOS, s->max_qos);
        if (!cfg->retain_available)
            mqtt_pb_byte(&pb, MQTT_PROP_RETAIN_AVAILABLE, 0);
        if (cfg->max_packet_size < 268435460u)
            mqtt_pb_u32(&pb, MQTT_PROP_MAXIMUM_PACKET_SIZE, cfg->max_packet_size);
        if (assigned[0])
            mqtt_pb_str(&pb, MQTT_PROP_ASSIGNED_CLIENT_ID, assigned, (uint32_t)strlen(assigned));
        if (keepalive_lowered)
            mqtt_pb_u16(&pb, MQTT_PROP_SERVER_KEEP_ALIVE, c->keepalive);
    }
    size_t before = c->out.len;
    mqtt_encode_connack(&c->out, c->version, session_present, MQTT_RC_SUCCESS, &pb);
    if (c->client_max_packet && c->out.len - before > c->client_max_packet) {
        /* The client could not receive our CONNACK (§3.1.2.11.4): just close. */
        c->out.len = before;
        return MQTT_RC_PACKET_TOO_LARGE;
    }
    conn_mark_dirty(c);
    conn_connected(c);
    b->stats.clients_connected++;
    c->counted_connected = true;
    if (s->ns_len) {
        ns_quota *q = quota_get(b, session_ns(s), s->ns_len, false);
        if (q)
            q->connections++;
    }
    drv_debug("client connected", "client", s->client_id, "ns", session_ns(s), "peer",
              conn_peer(c));
    broker_client_event(b, c, s, true, NULL);
    session_resume(s);
    broker_tap_session(b, s, NULL, 0);
    return MQTT_RC_SUCCESS;
}
