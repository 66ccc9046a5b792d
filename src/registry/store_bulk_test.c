/*
 * store_bulk_test.c — unit tests for what the SQLite store gained for device
 * profiles, groups and bulk provisioning: the array_contains filter (static
 * group membership), sorted lists with keyset pagination over (key, id)
 * (store_sqlite_sort.c), and doc_create_many (store_sqlite_bulk.c) with its
 * per-item results, events, credentials, dry runs and tenant scope.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "registry/store.h"
#include "registry/store_int.h"

#include "core/test.h"

static char tmpdir[] = "/tmp/drover-store-bulk-test-XXXXXX";
static char paths[8][128];
static int npaths;

static const char *db_path(const char *name)
{
    char *p = paths[npaths++];
    snprintf(p, sizeof(paths[0]), "%s/%s.db", tmpdir, name);
    return p;
}

static void cleanup(void)
{
    static const char *const suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < npaths; i++) {
        for (int k = 0; k < 3; k++) {
            char f[160];
            if (snprintf(f, sizeof(f), "%s%s", paths[i], suffix[k]) < (int)sizeof(f))
                unlink(f);
        }
    }
    rmdir(tmpdir);
}

static json_t *J(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    if (!j)
        fprintf(stderr, "bad test JSON: %s: %s\n", text, err.text);
    return j;
}

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static size_t nitems(json_t *list)
{
    return json_array_size(json_object_get(list, "items"));
}

static drv_store *open_with_tenants(const char *name)
{
    drv_store *st = NULL;
    CHECK(drv_store_open_sqlite(db_path(name), &st) == DRV_OK && st);
    static const char *const tenants[] = {"acme", "other"};
    for (size_t i = 0; st && i < 2; i++) {
        char text[96];
        snprintf(text, sizeof(text), "{\"id\":\"%s\",\"name\":\"%s\"}", tenants[i], tenants[i]);
        json_t *doc = J(text), *out = NULL;
        CHECK(st->ops->platform_tenant_create(st, doc, &out) == DRV_OK);
        json_decref(doc);
        json_decref(out);
    }
    return st;
}

static drv_err mk_doc(drv_store *st, const char *tenant, const char *kind, const char *text)
{
    drv_scope sc = {.tenant = tenant};
    json_t *doc = J(text), *out = NULL;
    drv_err e = st->ops->doc_create(st, &sc, kind, doc, &out);
    json_decref(doc);
    json_decref(out);
    return e;
}

/* Every id of a list, following cursors with pages of `limit`, joined by ','
 * ("error NAME" when a call fails); *pages gets the number of pages. */
static const char *all_ids(drv_store *st, const char *tenant, const drv_doc_filter *f,
                           uint32_t limit, char *buf, size_t cap, int *pages)
{
    drv_scope sc = {.tenant = tenant};
    char *cursor = NULL;
    size_t o = 0;
    buf[0] = '\0';
    *pages = 0;
    for (;;) {
        drv_page pg = {.cursor = cursor, .limit = limit};
        json_t *l = NULL;
        drv_err e = st->ops->doc_list(st, &sc, DRV_KIND_DEVICE, f, &pg, &l);
        if (e != DRV_OK) {
            snprintf(buf, cap, "error %s", drv_errname(e));
            break;
        }
        (*pages)++;
        for (size_t i = 0; i < nitems(l); i++)
            o += (size_t)snprintf(buf + o, cap - o, "%s%s", o ? "," : "",
                                  str(json_array_get(json_object_get(l, "items"), i), "id"));
        json_t *next = json_object_get(l, "next_cursor");
        drv_free(cursor);
        cursor = json_is_string(next) ? drv_strdup(json_string_value(next)) : NULL;
        json_decref(l);
        if (!cursor || *pages > 1000)
            break;
    }
    drv_free(cursor);
    return buf;
}

static void test_array_contains(void)
{
    drv_store *st = open_with_tenants("groups");
    static const char *const docs[] = {
        "{\"id\":\"a\",\"groups\":[\"g1\",\"g2\"]}",
        "{\"id\":\"b\",\"groups\":[\"g2\"]}",
        "{\"id\":\"c\",\"groups\":\"g1\",\"name\":\"g1\"}",  /* not an array: no member */
        "{\"id\":\"d\",\"groups\":[[\"g1\"],{\"g1\":1},1]}", /* not a string element */
        "{\"id\":\"e\",\"other\":[\"g1\"],\"groups\":[]}",
        "{\"id\":\"f\",\"groups\":[\"g1\"],\"tags\":{\"site\":\"x\"}}",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++)
        CHECK(mk_doc(st, "acme", DRV_KIND_DEVICE, docs[i]) == DRV_OK);
    CHECK(mk_doc(st, "other", DRV_KIND_DEVICE, "{\"id\":\"z\",\"groups\":[\"g1\"]}") == DRV_OK);
    struct {
        drv_doc_filter f;
        const char *want;
    } cases[] = {
        {{.array_contains = "groups=g1"}, "a,f"},
        {{.array_contains = "groups=g2"}, "a,b"},
        {{.array_contains = "groups=g3"}, ""},
        {{.array_contains = "other=g1"}, "e"},
        {{.array_contains = "groups=g1", .tag = "site"}, "f"},
        {{.array_contains = "groups=g1", .sort = "-id"}, "f,a"},
        {{.array_contains = "groups"}, "error INVAL"},
        {{.array_contains = "=g1"}, "error INVAL"},
    };
    char buf[256], name[64];
    int pages;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(name, sizeof(name), "array_contains case %zu", i);
        const char *got = all_ids(st, "acme", &cases[i].f, 1, buf, sizeof(buf), &pages);
        if (strcmp(got, cases[i].want) != 0)
            fprintf(stderr, "%s: got %s\n", name, got);
        CHECK_CASE(strcmp(got, cases[i].want) == 0, name);
    }
    drv_store_close(st);
}

/* The expected order of the test documents for a sort. */
typedef struct row {
    char id[16];
    char name[16];
    int64_t created;
    int64_t updated;
} row;

static const char *sort_key;
static int cmp_rows(const void *pa, const void *pb)
{
    const row *a = pa, *b = pb;
    bool desc = sort_key[0] == '-';
    const char *k = sort_key + desc;
    int c = 0;
    if (strcmp(k, "name") == 0)
        c = strcmp(a->name, b->name);
    else if (strcmp(k, "created_at") == 0)
        c = (a->created > b->created) - (a->created < b->created);
    else if (strcmp(k, "updated_at") == 0)
        c = (a->updated > b->updated) - (a->updated < b->updated);
    if (c == 0)
        c = strcmp(a->id, b->id);
    return desc ? -c : c;
}

static void test_sorted(void)
{
    drv_store *st = open_with_tenants("sorted");
    drv_scope sc = {.tenant = "acme"};
    enum {
        N = 250
    };
    static row rows[N];
    /* Names repeat (ties broken by id), ids are not in name order, some have no name. */
    for (int i = 0; i < N; i++) {
        row *r = &rows[i];
        snprintf(r->id, sizeof(r->id), "dev-%03d", (i * 37) % N);
        char text[128];
        if (i % 10 == 9) {
            r->name[0] = '\0';
            snprintf(text, sizeof(text), "{\"id\":\"%s\"}", r->id);
        } else {
            snprintf(r->name, sizeof(r->name), "n%02d", (i * 7) % 40);
            snprintf(text, sizeof(text), "{\"id\":\"%s\",\"name\":\"%s\"}", r->id, r->name);
        }
        json_t *doc = J(text), *out = NULL;
        CHECK(st->ops->doc_create(st, &sc, DRV_KIND_DEVICE, doc, &out) == DRV_OK);
        int64_t ms = 0;
        CHECK(drv_store_parse_time(str(out, "created_at"), &ms));
        r->created = r->updated = ms;
        json_decref(out);
        json_decref(doc);
        if (i % 50 == 0)
            usleep(2000); /* some distinct creation times, many equal ones */
    }
    /* A few updates move updated_at. */
    for (int i = 0; i < N; i += 31) {
        json_t *cur = NULL, *out = NULL;
        CHECK(st->ops->doc_get(st, &sc, DRV_KIND_DEVICE, rows[i].id, &cur) == DRV_OK);
        usleep(1500);
        CHECK(st->ops->doc_replace(st, &sc, DRV_KIND_DEVICE, rows[i].id, cur, 0, &out) == DRV_OK);
        CHECK(drv_store_parse_time(str(out, "updated_at"), &rows[i].updated));
        json_decref(cur);
        json_decref(out);
    }
    static const char *const sorts[] = {"id",         "-id",         "name",       "-name",
                                        "created_at", "-created_at", "updated_at", "-updated_at"};
    static char want[N * 9], got[N * 9];
    for (size_t s = 0; s < sizeof(sorts) / sizeof(sorts[0]); s++) {
        static row sorted[N];
        memcpy(sorted, rows, sizeof(rows));
        sort_key = sorts[s];
        qsort(sorted, N, sizeof(row), cmp_rows);
        size_t o = 0;
        for (int i = 0; i < N; i++)
            o += (size_t)snprintf(want + o, sizeof(want) - o, "%s%s", i ? "," : "", sorted[i].id);
        static const uint32_t limits[] = {1, 7, 100, 1000};
        for (size_t l = 0; l < sizeof(limits) / sizeof(limits[0]); l++) {
            drv_doc_filter f = {.sort = sorts[s]};
            int pages;
            all_ids(st, "acme", &f, limits[l], got, sizeof(got), &pages);
            bool ok = strcmp(got, want) == 0 && pages == (int)((N + limits[l] - 1) / limits[l]);
            char name[64];
            snprintf(name, sizeof(name), "sort %s limit %u", sorts[s], limits[l]);
            if (!ok)
                fprintf(stderr, "%s: %d pages\n got  %.200s\n want %.200s\n", name, pages, got,
                        want);
            CHECK_CASE(ok, name);
        }
    }
    /* A filter with a sort; another tenant sees nothing. */
    drv_doc_filter f = {.sort = "-name", .name_prefix = "n0"};
    int pages;
    all_ids(st, "acme", &f, 3, got, sizeof(got), &pages);
    CHECK(strlen(got) > 0 && pages > 1);
    all_ids(st, "other", &f, 3, got, sizeof(got), &pages);
    CHECK(strcmp(got, "") == 0);

    /* Unknown sorts, and cursors from elsewhere, are refused. */
    json_t *l = NULL;
    f = (drv_doc_filter){.sort = "colour"};
    CHECK(st->ops->doc_list(st, &sc, DRV_KIND_DEVICE, &f, NULL, &l) == DRV_INVAL && !l);
    f.sort = "";
    CHECK(st->ops->doc_list(st, &sc, DRV_KIND_DEVICE, &f, NULL, &l) == DRV_INVAL && !l);
    f.sort = "name";
    drv_page pg = {.limit = 2};
    CHECK(st->ops->doc_list(st, &sc, DRV_KIND_DEVICE, &f, &pg, &l) == DRV_OK);
    char *name_cursor = drv_strdup(str(l, "next_cursor"));
    json_decref(l);
    l = NULL;
    f.sort = "-name";
    pg.cursor = name_cursor;
    CHECK(st->ops->doc_list(st, &sc, DRV_KIND_DEVICE, &f, &pg, &l) == DRV_INVAL && !l);
    f.sort = NULL; /* an id cursor is an id, and a name cursor is not one */
    CHECK(st->ops->doc_list(st, &sc, DRV_KIND_DEVICE, &f, &pg, &l) == DRV_INVAL && !l);
    drv_free(name_cursor);
    static const char *const bad[] = {"created_at\x1e"
                                      "dev-001\x1e"
                                      "12x",
                                      "created_at\x1e"
                                      "dev-001",
                                      "created_at\x1e"
                                      "bad id\x1e"
                                      "1",
                                      "name"};
    f.sort = "created_at";
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *c = sq_cursor_encode(bad[i]);
        pg.cursor = c;
        CHECK_CASE(st->ops->doc_list(st, &sc, DRV_KIND_DEVICE, &f, &pg, &l) == DRV_INVAL && !l,
                   bad[i]);
        drv_free(c);
    }
    drv_store_close(st);
}

static int64_t count(drv_store *st, const char *tenant)
{
    drv_scope sc = {.tenant = tenant};
    int64_t n = -1;
    CHECK(st->ops->doc_count(st, &sc, DRV_KIND_DEVICE, &n) == DRV_OK);
    return n;
}

static void test_create_many(void)
{
    drv_store *st = open_with_tenants("bulk");
    const drv_store_ops *o = st->ops;
    drv_scope sc = {.tenant = "acme"}, other = {.tenant = "other"};
    CHECK(mk_doc(st, "acme", DRV_KIND_DEVICE, "{\"id\":\"old\"}") == DRV_OK);
    CHECK(mk_doc(st, "acme", DRV_KIND_DEVICE, "{\"id\":\"gone\"}") == DRV_OK);
    CHECK(o->doc_delete(st, &sc, DRV_KIND_DEVICE, "gone") == DRV_OK);

    static const char *const texts[] = {
        "{\"id\":\"n1\",\"name\":\"one\",\"version\":99,\"tags\":{\"k\":\"v\"}}",
        "{\"id\":\"old\"}",  /* live elsewhere: taken */
        "{\"id\":\"gone\"}", /* deleted: still reserved */
        "{\"id\":\"n2\"}",
        "{\"id\":\"n1\"}", /* repeats item 0 */
        "{\"id\":\"bad id\"}",
        "{\"name\":\"no id\"}",
    };
    enum {
        K = sizeof(texts) / sizeof(texts[0])
    };
    json_t *docs[K];
    drv_doc_batch_item items[K];
    for (size_t i = 0; i < K; i++) {
        docs[i] = J(texts[i]);
        items[i] = (drv_doc_batch_item){.doc = docs[i], .result = DRV_IO};
    }
    items[3].secret_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
    static const drv_err want[K] = {DRV_OK,     DRV_EXISTS, DRV_EXISTS, DRV_OK,
                                    DRV_EXISTS, DRV_INVAL,  DRV_INVAL};

    /* A dry run gives the same results and stores nothing. */
    CHECK(o->doc_create_many(st, &sc, DRV_KIND_DEVICE, items, K, true) == DRV_OK);
    for (size_t i = 0; i < K; i++)
        CHECK_CASE(items[i].result == want[i], texts[i]);
    CHECK(count(st, "acme") == 1);
    json_t *d = NULL;
    CHECK(o->doc_get(st, &sc, DRV_KIND_DEVICE, "n1", &d) == DRV_NOTFOUND && !d);

    CHECK(o->doc_create_many(st, &sc, DRV_KIND_DEVICE, items, K, false) == DRV_OK);
    for (size_t i = 0; i < K; i++)
        CHECK_CASE(items[i].result == want[i], texts[i]);
    CHECK(count(st, "acme") == 3);
    CHECK(o->doc_get(st, &sc, DRV_KIND_DEVICE, "n1", &d) == DRV_OK);
    CHECK(strcmp(str(d, "tenant"), "acme") == 0 && strcmp(str(d, "name"), "one") == 0);
    CHECK(json_integer_value(json_object_get(d, "version")) ==
          1); /* store-owned fields are its own */
    CHECK(strcmp(str(d, "created_at"), str(d, "updated_at")) == 0);
    json_decref(d);
    /* Each created device has its provisioning event; n2 its secret. */
    json_t *ev = NULL;
    CHECK(o->event_list(st, &sc, "n2", 0, 0, NULL, &ev) == DRV_OK && nitems(ev) == 1);
    CHECK(strcmp(str(json_array_get(json_object_get(ev, "items"), 0), "kind"), "provisioned") == 0);
    json_decref(ev);
    drv_credential creds[2];
    size_t nc = 0;
    CHECK(o->lookup_credentials(st, "acme", "n2", creds, 2, &nc) == DRV_OK && nc == 1);
    CHECK(nc == 1 && strcmp(creds[0].kind, "secret") == 0 && creds[0].secret_hash &&
          strcmp(creds[0].secret_hash, items[3].secret_hash) == 0 && creds[0].device_active);
    for (size_t i = 0; i < nc; i++)
        drv_credential_clear(&creds[i]);
    CHECK(o->lookup_credentials(st, "acme", "n1", creds, 2, &nc) == DRV_OK && nc == 0);

    /* Ids are per tenant: the same batch in another tenant creates its own. */
    CHECK(o->doc_create_many(st, &other, DRV_KIND_DEVICE, items, 4, false) == DRV_OK);
    CHECK(items[0].result == DRV_OK && items[1].result == DRV_OK && items[2].result == DRV_OK &&
          items[3].result == DRV_OK);
    CHECK(count(st, "other") == 4 && count(st, "acme") == 3);

    /* Bad calls store nothing. */
    CHECK(o->doc_create_many(st, NULL, DRV_KIND_DEVICE, items, 1, false) == DRV_INVAL);
    drv_scope upper = {.tenant = "ACME"};
    CHECK(o->doc_create_many(st, &upper, DRV_KIND_DEVICE, items, 1, false) == DRV_INVAL);
    CHECK(o->doc_create_many(st, &sc, "gadget", items, 1, false) == DRV_INVAL);
    CHECK(o->doc_create_many(st, &sc, DRV_KIND_DEVICE, items, DRV_STORE_BATCH_MAX + 1, false) ==
          DRV_INVAL);
    CHECK(o->doc_create_many(st, &sc, DRV_KIND_DEVICE, NULL, 0, false) == DRV_OK);
    drv_scope ghost = {.tenant = "ghost"}; /* no such tenant: the whole batch fails */
    json_t *g = J("{\"id\":\"g1\"}");
    drv_doc_batch_item gi = {.doc = g};
    drv_log_set_level((drv_log_level)(DRV_LOG_ERROR + 1));
    CHECK(o->doc_create_many(st, &ghost, DRV_KIND_DEVICE, &gi, 1, false) != DRV_OK);
    drv_log_set_level(DRV_LOG_WARN);
    json_decref(g);

    /* A full batch is one transaction. */
    enum {
        B = DRV_STORE_BATCH_MAX
    };
    static drv_doc_batch_item big[B];
    static json_t *bigdocs[B];
    for (int i = 0; i < B; i++) {
        char text[64];
        snprintf(text, sizeof(text), "{\"id\":\"bulk-%04d\",\"name\":\"b%d\"}", i, i);
        bigdocs[i] = J(text);
        big[i] = (drv_doc_batch_item){.doc = bigdocs[i]};
    }
    CHECK(o->doc_create_many(st, &sc, DRV_KIND_DEVICE, big, B, false) == DRV_OK);
    int ok = 0;
    for (int i = 0; i < B; i++) {
        ok += big[i].result == DRV_OK;
        json_decref(bigdocs[i]);
    }
    CHECK(ok == B && count(st, "acme") == 3 + B);

    for (size_t i = 0; i < K; i++)
        json_decref(docs[i]);
    drv_store_close(st);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    drv_log_set_level(DRV_LOG_WARN);
    test_array_contains();
    test_sorted();
    test_create_many();
    cleanup();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
