/*
 * persist.c — the broker's write-ahead log (ADR-0005).
 *
 * State that outlives a connection (persistent sessions, their
 * subscriptions and queued QoS 1/2 messages, inbound QoS 2 ids, retained
 * messages) is appended as records to data_dir/broker.log:
 *
 *   u32 length | u32 crc32c | u8 type | payload        (little endian)
 *
 * Records produced during a loop turn are buffered and written with one
 * write() and one fdatasync() at the end of the turn, before any socket is
 * flushed: an acknowledgement never leaves before its state is on disk.
 * Replay stops at the first torn or corrupt record and cuts the file there.
 * When the file grows past a threshold (and at shutdown) it is replaced by a
 * snapshot of the live state, written to broker.log.new and renamed.
 *
 * A message is logged once (R_MSG, by 64-bit id) and referenced by id from
 * queue and retained records.  `snapshot_gen` on a message says whether the
 * current file holds its R_MSG record.
 *
 * Sessions are named by their key (`id` below): the client id, followed for a
 * namespaced session by a NUL and the namespace (ADR-0009).  Client ids never
 * hold a NUL, so a log written before namespaces existed replays unchanged,
 * every session global; a key whose namespace is not valid names no session
 * and its records are skipped.  Topics and filters are internal ones.
 */
#include <stdio.h>
#include <string.h>

#include "broker/broker_int.h"
#include "core/alloc.h"
#include "core/crc32c.h"
#include "core/log.h"
#include "platform/fs.h"

enum rtype {
    R_SESSION = 1, /* str id (session key), u32 expiry, u8 version, u8 has_user, str user */
    R_SESSION_DEL, /* str id */
    R_SUB,         /* str id, str filter, u8 qos, u8 flags, u8 rh, u32 sub_id */
    R_UNSUB,       /* str id, str filter */
    R_MSG,         /* u64 id, u8 qos, u8 retain, u64 expiry_at, str topic, bin props, bin payload */
    R_QUEUE,       /* str id, u64 msg, u8 qos, u8 retain, u8 n, u32 sub_ids[n] */
    R_ACK,         /* str id, u64 msg */
    R_SENT,        /* str id, u64 msg, u16 pid, u8 state */
    R_RETAIN,      /* str topic, u64 msg (0 = cleared) */
    R_QOS2_IN,     /* str id, u16 pid, u8 add */
};

struct persist {
    drv_broker *b;
    char *path;
    char *tmp_path;
    int fd;
    bool sync;
    bool replaying;
    uint32_t gen;     /* current file generation, see msg.snapshot_gen */
    uint64_t next_id; /* next message id */
    uint64_t file_bytes;
    uint64_t compact_at; /* file size that triggers the next compaction */
    drv_buf batch;       /* records of this turn */
};

/* -- record encoding -------------------------------------------------------------- */

typedef struct rec {
    drv_buf *out;
    size_t start;
    bool failed;
} rec;

static void put(rec *r, const void *p, size_t n)
{
    if (!r->failed && drv_buf_append(r->out, p, n) != DRV_OK)
        r->failed = true;
}
static void put_u8(rec *r, uint8_t v)
{
    put(r, &v, 1);
}
static void put_u16(rec *r, uint16_t v)
{
    put(r, &v, 2);
}
static void put_u32(rec *r, uint32_t v)
{
    put(r, &v, 4);
}
static void put_u64(rec *r, uint64_t v)
{
    put(r, &v, 8);
}
static void put_str(rec *r, const void *s, uint16_t n)
{
    put_u16(r, n);
    put(r, s, n);
}
static void put_bin(rec *r, const void *s, uint32_t n)
{
    put_u32(r, n);
    put(r, s, n);
}

static rec rec_begin(drv_buf *out, uint8_t type)
{
    rec r = {out, out->len, false};
    uint32_t zero[2] = {0, 0};
    put(&r, zero, 8);
    put_u8(&r, type);
    return r;
}

static void rec_end(rec *r)
{
    if (r->failed) {
        r->out->len = r->start;
        drv_error("persistence: record dropped (out of memory)");
        return;
    }
    uint8_t *base = r->out->data + r->start;
    uint32_t len = (uint32_t)(r->out->len - r->start - 8);
    uint32_t crc = drv_crc32c(base + 8, len);
    memcpy(base, &len, 4);
    memcpy(base + 4, &crc, 4);
}

static bool active(const persist *p)
{
    return p && !p->replaying;
}

static void write_msg(persist *p, drv_buf *out, msg *m)
{
    if (m->id && m->snapshot_gen == p->gen)
        return;
    if (!m->id)
        m->id = p->next_id++;
    m->snapshot_gen = p->gen;
    rec r = rec_begin(out, R_MSG);
    put_u64(&r, m->id);
    put_u8(&r, m->qos);
    put_u8(&r, m->retain);
    put_u64(&r, m->expiry_at);
    put_str(&r, m->topic, m->topic_len);
    put_bin(&r, m->props, m->props_len);
    put_bin(&r, m->payload, m->payload_len);
    rec_end(&r);
}

static void write_session(drv_buf *out, session *s)
{
    rec r = rec_begin(out, R_SESSION);
    put_str(&r, s->client_id, (uint16_t)s->h.klen);
    put_u32(&r, s->expiry_interval);
    put_u8(&r, s->version);
    /* The user name: ACL checks for an offline session need it after a restart. */
    put_u8(&r, s->username != NULL);
    put_str(&r, s->username ? s->username : "", s->username ? (uint16_t)strlen(s->username) : 0);
    rec_end(&r);
    s->logged = true;
}

static void write_sub(drv_buf *out, session *s, const char *filter, const sub *o)
{
    rec r = rec_begin(out, R_SUB);
    put_str(&r, s->client_id, (uint16_t)s->h.klen);
    put_str(&r, filter, (uint16_t)strlen(filter));
    put_u8(&r, o->qos);
    put_u8(&r, (uint8_t)((o->no_local ? 1 : 0) | (o->retain_as_published ? 2 : 0)));
    put_u8(&r, o->retain_handling);
    put_u32(&r, o->sub_id);
    rec_end(&r);
}

static void write_queue(persist *p, drv_buf *out, session *s, const qitem *qi)
{
    write_msg(p, out, qi->m);
    rec r = rec_begin(out, R_QUEUE);
    put_str(&r, s->client_id, (uint16_t)s->h.klen);
    put_u64(&r, qi->m->id);
    put_u8(&r, qi->qos);
    put_u8(&r, qi->retain);
    put_u8(&r, qi->nsub_ids);
    for (uint8_t i = 0; i < qi->nsub_ids; i++)
        put_u32(&r, qi->sub_ids[i]);
    rec_end(&r);
}

static void write_sent(drv_buf *out, session *s, const qitem *qi)
{
    rec r = rec_begin(out, R_SENT);
    put_str(&r, s->client_id, (uint16_t)s->h.klen);
    put_u64(&r, qi->m->id);
    put_u16(&r, qi->pid);
    put_u8(&r, qi->state);
    rec_end(&r);
}

static void write_qos2(drv_buf *out, session *s, uint16_t pid, bool add)
{
    rec r = rec_begin(out, R_QOS2_IN);
    put_str(&r, s->client_id, (uint16_t)s->h.klen);
    put_u16(&r, pid);
    put_u8(&r, add);
    rec_end(&r);
}

static void write_retain(persist *p, drv_buf *out, const uint8_t *topic, uint16_t len, msg *m)
{
    if (m)
        write_msg(p, out, m);
    rec r = rec_begin(out, R_RETAIN);
    put_str(&r, topic, len);
    put_u64(&r, m ? m->id : 0);
    rec_end(&r);
}

void persist_session(persist *p, session *s)
{
    if (active(p))
        write_session(&p->batch, s);
}

void persist_session_del(persist *p, session *s)
{
    if (!active(p) || !s->logged)
        return;
    rec r = rec_begin(&p->batch, R_SESSION_DEL);
    put_str(&r, s->client_id, (uint16_t)s->h.klen);
    rec_end(&r);
    s->logged = false;
}

void persist_sub(persist *p, session *s, const char *filter, const sub *opt)
{
    if (active(p))
        write_sub(&p->batch, s, filter, opt);
}

void persist_unsub(persist *p, session *s, const char *filter)
{
    if (!active(p))
        return;
    rec r = rec_begin(&p->batch, R_UNSUB);
    put_str(&r, s->client_id, (uint16_t)s->h.klen);
    put_str(&r, filter, (uint16_t)strlen(filter));
    rec_end(&r);
}

void persist_queue(persist *p, session *s, const qitem *qi)
{
    if (active(p))
        write_queue(p, &p->batch, s, qi);
}

void persist_ack(persist *p, session *s, const msg *m)
{
    if (!active(p) || !m->id)
        return;
    rec r = rec_begin(&p->batch, R_ACK);
    put_str(&r, s->client_id, (uint16_t)s->h.klen);
    put_u64(&r, m->id);
    rec_end(&r);
}

void persist_sent(persist *p, session *s, const qitem *qi)
{
    if (active(p) && qi->m->id)
        write_sent(&p->batch, s, qi);
}

void persist_retain(persist *p, const uint8_t *topic, uint16_t topic_len, msg *m)
{
    if (active(p))
        write_retain(p, &p->batch, topic, topic_len, m);
}

void persist_qos2_in(persist *p, session *s, uint16_t pid, bool add)
{
    if (active(p))
        write_qos2(&p->batch, s, pid, add);
}

void persist_take_batch(persist *p, drv_buf *out)
{
    drv_buf_init(out, SIZE_MAX);
    if (!p || drv_buf_avail(&p->batch) == 0)
        return;
    *out = p->batch;
    drv_buf_init(&p->batch, SIZE_MAX);
}

drv_err persist_write_batch(persist *p, drv_buf *batch)
{
    drv_err e = DRV_OK;
    if (p && drv_buf_avail(batch) > 0) {
        e = drv_file_write_all(p->fd, batch->data + batch->off, drv_buf_avail(batch));
        if (e == DRV_OK && p->sync)
            e = drv_file_sync(p->fd);
        if (e != DRV_OK)
            drv_error("persistence: cannot write the log", "path", p->path, "error",
                      drv_strerror(e));
        __atomic_add_fetch(&p->file_bytes, drv_buf_avail(batch), __ATOMIC_RELAXED);
    }
    drv_buf_free(batch);
    return e;
}

drv_err persist_commit(persist *p)
{
    drv_buf batch;
    persist_take_batch(p, &batch);
    return persist_write_batch(p, &batch);
}

bool persist_needs_compact(const persist *p)
{
    return p && __atomic_load_n(&p->file_bytes, __ATOMIC_RELAXED) >= p->compact_at;
}

/* -- snapshot --------------------------------------------------------------------- */

static void snapshot_retained(persist *p, drv_buf *out, tnode *n, char *path, size_t len)
{
    for (tnode *c = n->kids; c; c = c->sib_next) {
        size_t l = len;
        if (n->parent || n != &p->b->retained.root) {
            path[l++] = '/';
        }
        if (l + c->level_len > 65535)
            continue;
        memcpy(path + l, c->level, c->level_len);
        l += c->level_len;
        if (c->retained)
            write_retain(p, out, (const uint8_t *)path, (uint16_t)l, c->retained);
        snapshot_retained(p, out, c, path, l);
    }
}

static drv_err write_snapshot(persist *p)
{
    drv_broker *b = p->b;
    drv_buf out;
    drv_buf_init(&out, SIZE_MAX);
    p->gen++;
    /* Retained messages: topics rebuilt from the trie path. */
    char *path = drv_malloc(65536 + 256);
    if (!path)
        return DRV_NOMEM;
    snapshot_retained(p, &out, &b->retained.root, path, 0);
    drv_free(path);
    size_t bk;
    for (drv_hnode *h = drv_hmap_first(&b->sessions, &bk); h;
         h = drv_hmap_next(&b->sessions, h, &bk)) {
        session *s = (session *)h;
        if (!s->persistent)
            continue;
        write_session(&out, s);
        for (session_sub *ss = s->subs; ss; ss = ss->next)
            write_sub(&out, s, ss->filter, &ss->opt);
        for (qitem *qi = s->inflight.head; qi; qi = qi->next) {
            write_queue(p, &out, s, qi);
            if (qi->qos == 2)
                write_sent(&out, s, qi);
        }
        for (qitem *qi = s->queue.head; qi; qi = qi->next)
            write_queue(p, &out, s, qi);
        for (uint16_t i = 0; i < s->nqos2_in; i++)
            write_qos2(&out, s, s->qos2_in[i], true);
    }
    int fd;
    drv_err e = drv_file_create(p->tmp_path, &fd);
    if (e == DRV_OK) {
        e = drv_file_write_all(fd, out.data, out.len);
        if (e == DRV_OK)
            e = drv_file_sync(fd);
        drv_file_close(fd);
    }
    if (e == DRV_OK)
        e = drv_file_replace(p->tmp_path, p->path);
    if (e == DRV_OK) {
        drv_file_close(p->fd);
        e = drv_file_open_append(p->path, &p->fd);
        p->file_bytes = out.len;
    }
    drv_buf_free(&out);
    return e;
}

drv_err persist_maybe_compact(persist *p, bool force)
{
    if (!p)
        return DRV_OK;
    if (!force && p->file_bytes < p->compact_at)
        return DRV_OK;
    persist_commit(p);
    drv_err e = write_snapshot(p);
    /* Next time when the log has grown to twice the live state (at least the setting),
     * so a large live state does not make every turn compact. */
    p->compact_at = p->file_bytes * 2;
    if (p->compact_at < p->b->cfg.persist_compact_bytes)
        p->compact_at = p->b->cfg.persist_compact_bytes;
    if (e)
        drv_error("persistence: snapshot failed", "error", drv_strerror(e));
    else
        drv_debug("persistence: log compacted");
    return e;
}

/* -- replay ----------------------------------------------------------------------- */

typedef struct rd {
    const uint8_t *p;
    size_t len, pos;
    bool bad;
} rd;

static void get(rd *r, void *out, size_t n)
{
    if (r->bad || r->len - r->pos < n) {
        r->bad = true;
        memset(out, 0, n);
        return;
    }
    memcpy(out, r->p + r->pos, n);
    r->pos += n;
}
static uint8_t get_u8(rd *r)
{
    uint8_t v;
    get(r, &v, 1);
    return v;
}
static uint16_t get_u16(rd *r)
{
    uint16_t v;
    get(r, &v, 2);
    return v;
}
static uint32_t get_u32(rd *r)
{
    uint32_t v;
    get(r, &v, 4);
    return v;
}
static uint64_t get_u64(rd *r)
{
    uint64_t v;
    get(r, &v, 8);
    return v;
}
static mqtt_bytes get_bytes(rd *r, uint32_t n)
{
    mqtt_bytes b = {NULL, 0};
    if (r->bad || r->len - r->pos < n) {
        r->bad = true;
        return b;
    }
    b.p = r->p + r->pos;
    b.len = n;
    r->pos += n;
    return b;
}
static mqtt_bytes get_str(rd *r)
{
    return get_bytes(r, get_u16(r));
}
static mqtt_bytes get_bin(rd *r)
{
    return get_bytes(r, get_u32(r));
}

/* Messages by id while replaying: open addressing, the table holds a reference. */
typedef struct msg_table {
    msg **slots;
    size_t cap, count;
} msg_table;

static msg *table_get(msg_table *t, uint64_t id)
{
    if (!t->cap)
        return NULL;
    for (size_t i = (size_t)(id * 0x9E3779B97F4A7C15ull) & (t->cap - 1);;
         i = (i + 1) & (t->cap - 1)) {
        if (!t->slots[i])
            return NULL;
        if (t->slots[i]->id == id)
            return t->slots[i];
    }
}

static bool table_put(msg_table *t, msg *m)
{
    if ((t->count + 1) * 2 > t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 1024;
        msg **ns = drv_calloc(ncap, sizeof(msg *));
        if (!ns)
            return false;
        for (size_t i = 0; i < t->cap; i++) {
            msg *o = t->slots[i];
            if (!o)
                continue;
            size_t j = (size_t)(o->id * 0x9E3779B97F4A7C15ull) & (ncap - 1);
            while (ns[j])
                j = (j + 1) & (ncap - 1);
            ns[j] = o;
        }
        drv_free(t->slots);
        t->slots = ns;
        t->cap = ncap;
    }
    size_t j = (size_t)(m->id * 0x9E3779B97F4A7C15ull) & (t->cap - 1);
    while (t->slots[j]) {
        if (t->slots[j]->id == m->id) {
            msg_unref(t->slots[j]);
            t->slots[j] = m;
            return true;
        }
        j = (j + 1) & (t->cap - 1);
    }
    t->slots[j] = m;
    t->count++;
    return true;
}

static void table_free(msg_table *t)
{
    for (size_t i = 0; i < t->cap; i++)
        msg_unref(t->slots[i]);
    drv_free(t->slots);
}

static session *replay_session(persist *p, mqtt_bytes id)
{
    session *s = session_find(p->b, id.p, id.len);
    return s ? s : session_create(p->b, id.p, id.len);
}

static qitem *take_item(qlist *l, uint64_t msg_id)
{
    qitem *prev = NULL;
    for (qitem *qi = l->head; qi; prev = qi, qi = qi->next) {
        if (qi->m->id == msg_id) {
            if (prev)
                prev->next = qi->next;
            else
                l->head = qi->next;
            if (l->tail == qi)
                l->tail = prev;
            l->count--;
            qi->next = NULL;
            return qi;
        }
    }
    return NULL;
}

static void push_item(qlist *l, qitem *qi)
{
    qi->next = NULL;
    if (l->tail)
        l->tail->next = qi;
    else
        l->head = qi;
    l->tail = qi;
    l->count++;
}

static void apply(persist *p, uint8_t type, rd *r, msg_table *t)
{
    drv_broker *b = p->b;
    switch (type) {
    case R_SESSION: {
        mqtt_bytes id = get_str(r);
        uint32_t expiry = get_u32(r);
        uint8_t version = get_u8(r);
        uint8_t has_user = get_u8(r);
        mqtt_bytes user = get_str(r);
        if (r->bad)
            return;
        session *s = replay_session(p, id);
        if (!s)
            return;
        drv_free(s->username);
        s->username = has_user ? drv_strndup((const char *)user.p, user.len) : NULL;
        s->expiry_interval = expiry;
        s->version = version;
        s->persistent = true;
        s->logged = true;
        break;
    }
    case R_SESSION_DEL: {
        mqtt_bytes id = get_str(r);
        session *s = r->bad ? NULL : session_find(b, id.p, id.len);
        if (s)
            session_destroy(s);
        break;
    }
    case R_SUB: {
        mqtt_bytes id = get_str(r), filter = get_str(r);
        sub opt = {0};
        opt.qos = get_u8(r);
        uint8_t flags = get_u8(r);
        opt.retain_handling = get_u8(r);
        opt.sub_id = get_u32(r);
        opt.no_local = flags & 1;
        opt.retain_as_published = flags & 2;
        session *s = r->bad ? NULL : session_find(b, id.p, id.len);
        if (!s)
            return;
        opt.s = s;
        bool is_new;
        broker_subscribe(b, s, filter.p, filter.len, &opt, &is_new);
        break;
    }
    case R_UNSUB: {
        mqtt_bytes id = get_str(r), filter = get_str(r);
        session *s = r->bad ? NULL : session_find(b, id.p, id.len);
        if (s)
            broker_unsubscribe(b, s, filter.p, filter.len);
        break;
    }
    case R_MSG: {
        uint64_t id = get_u64(r);
        uint8_t qos = get_u8(r), retain = get_u8(r);
        uint64_t expiry = get_u64(r);
        mqtt_bytes topic = get_str(r), props = get_bin(r), payload = get_bin(r);
        if (r->bad)
            return;
        msg *m = msg_new(NULL, 0, topic.p, (uint16_t)topic.len, props.p, props.len, payload.p,
                         payload.len, qos, retain, expiry);
        if (!m)
            return;
        m->id = id;
        m->snapshot_gen = p->gen;
        if (id >= p->next_id)
            p->next_id = id + 1;
        if (!table_put(t, m))
            msg_unref(m);
        break;
    }
    case R_QUEUE: {
        mqtt_bytes id = get_str(r);
        uint64_t mid = get_u64(r);
        uint8_t qos = get_u8(r), retain = get_u8(r), n = get_u8(r);
        session *s = r->bad ? NULL : session_find(b, id.p, id.len);
        msg *m = table_get(t, mid);
        qitem *qi = s && m ? qitem_new(p->b, n) : NULL;
        if (!qi)
            return;
        for (uint8_t i = 0; i < n; i++)
            qi->sub_ids[i] = get_u32(r);
        if (r->bad) {
            drv_free(qi);
            return;
        }
        qi->nsub_ids = n;
        qi->qos = qos;
        qi->retain = retain;
        qi->m = msg_ref(m);
        qi->state = Q_QUEUED;
        push_item(&s->queue, qi);
        break;
    }
    case R_ACK: {
        mqtt_bytes id = get_str(r);
        uint64_t mid = get_u64(r);
        session *s = r->bad ? NULL : session_find(b, id.p, id.len);
        if (!s)
            return;
        qitem *qi = take_item(&s->inflight, mid);
        if (!qi)
            qi = take_item(&s->queue, mid);
        if (qi)
            qitem_free(p->b, qi);
        break;
    }
    case R_SENT: {
        mqtt_bytes id = get_str(r);
        uint64_t mid = get_u64(r);
        uint16_t pid = get_u16(r);
        uint8_t state = get_u8(r);
        session *s = r->bad ? NULL : session_find(b, id.p, id.len);
        if (!s)
            return;
        qitem *qi = take_item(&s->queue, mid);
        if (qi) {
            push_item(&s->inflight, qi);
        } else {
            for (qi = s->inflight.head; qi && qi->m->id != mid; qi = qi->next)
                ;
        }
        if (qi) {
            qi->pid = pid;
            qi->state = state;
        }
        break;
    }
    case R_RETAIN: {
        mqtt_bytes topic = get_str(r);
        uint64_t mid = get_u64(r);
        if (r->bad)
            return;
        tnode *n = trie_get(&b->retained, topic.p, topic.len, mid != 0);
        if (!n)
            return;
        if (n->retained) {
            msg_unref(n->retained);
            n->retained = NULL;
            b->stats.retained--;
        }
        msg *m = mid ? table_get(t, mid) : NULL;
        if (m) {
            n->retained = msg_ref(m);
            b->stats.retained++;
        } else {
            trie_prune(&b->retained, n);
        }
        break;
    }
    case R_QOS2_IN: {
        mqtt_bytes id = get_str(r);
        uint16_t pid = get_u16(r);
        uint8_t add = get_u8(r);
        session *s = r->bad ? NULL : session_find(b, id.p, id.len);
        if (!s)
            return;
        if (add && !session_qos2_in_has(s, pid))
            session_qos2_in_add(s, pid);
        else if (!add)
            session_qos2_in_del(s, pid);
        break;
    }
    default:
        r->bad = true;
    }
}

drv_err persist_replay(persist *p)
{
    drv_buf data;
    drv_buf_init(&data, SIZE_MAX);
    drv_err e = drv_file_read_all(p->path, &data);
    if (e == DRV_NOTFOUND) {
        drv_buf_free(&data);
        return DRV_OK;
    }
    if (e != DRV_OK) {
        drv_buf_free(&data);
        return e;
    }
    msg_table table = {0};
    p->replaying = true;
    size_t pos = 0, records = 0;
    while (data.len - pos >= 9) {
        uint32_t len, crc;
        memcpy(&len, data.data + pos, 4);
        memcpy(&crc, data.data + pos + 4, 4);
        if (len == 0 || len > data.len - pos - 8 || drv_crc32c(data.data + pos + 8, len) != crc)
            break;
        rd r = {data.data + pos + 9, len - 1, 0, false};
        apply(p, data.data[pos + 8], &r, &table);
        pos += 8 + (size_t)len;
        records++;
    }
    p->replaying = false;
    table_free(&table);
    if (pos < data.len) {
        char cut[64];
        snprintf(cut, sizeof(cut), "%zu", data.len - pos);
        drv_warn("persistence: torn or corrupt log tail cut", "path", p->path, "bytes", cut);
        int fd;
        if (drv_file_open_append(p->path, &fd) == DRV_OK) {
            drv_file_truncate(fd, pos);
            drv_file_sync(fd);
            drv_file_close(fd);
        }
    }
    p->file_bytes = pos;
    char nrec[32];
    snprintf(nrec, sizeof(nrec), "%zu", records);
    drv_info("persistence: log replayed", "path", p->path, "records", nrec);
    drv_buf_free(&data);
    /* Offline sessions restored from the log count down their expiry from now. */
    size_t bk;
    for (drv_hnode *h = drv_hmap_first(&p->b->sessions, &bk), *next; h; h = next) {
        next = drv_hmap_next(&p->b->sessions, h, &bk);
        session *s = (session *)h;
        s->c = NULL;
        session_start_expiry(s);
    }
    return DRV_OK;
}

drv_err persist_open(drv_broker *b, const char *dir, bool sync, persist **out)
{
    drv_err e = drv_mkdir_p(dir);
    if (e)
        return e;
    persist *p = drv_calloc(1, sizeof(*p));
    if (!p)
        return DRV_NOMEM;
    p->b = b;
    p->sync = sync;
    p->gen = 1;
    p->next_id = 1;
    p->fd = -1;
    drv_buf_init(&p->batch, SIZE_MAX);
    size_t n = strlen(dir) + 32;
    p->path = drv_malloc(n);
    p->tmp_path = drv_malloc(n);
    if (!p->path || !p->tmp_path) {
        persist_close(p);
        return DRV_NOMEM;
    }
    snprintf(p->path, n, "%s/broker.log", dir);
    snprintf(p->tmp_path, n, "%s/broker.log.new", dir);
    *out = p;
    return DRV_OK;
}

void persist_close(persist *p)
{
    if (!p)
        return;
    drv_file_close(p->fd);
    drv_buf_free(&p->batch);
    drv_free(p->path);
    drv_free(p->tmp_path);
    drv_free(p);
}
