/*
 * cli.c — `drover tenant|device|token|telemetry ...`: flags, the command table, the
 * API calls and what they print; see cli.h and docs/cli.md.
 *
 * Every command is a row of one table (noun, verb, arguments, the flags it
 * takes and needs, its function), so the usage text and the flag checks
 * come from the same place.  Each command turns its flags into one or more
 * requests with cli_call and prints either the API's JSON (--json) or a
 * table: lists as rows with a header (every page, following next_cursor,
 * unless --limit stops earlier), single resources as FIELD / VALUE rows.
 *
 * Exit status: 0 done, 1 the server or the connection refused (the
 * problem's title and detail on stderr), 2 a usage error.  The token is
 * sent, never printed, and never read from a flag's echo in an error.
 *
 * The terminal checks (isatty, the window size ioctl) live here rather
 * than in src/platform: they are the only ones in the project and belong
 * to this one interactive tool.
 */
#include "server/cli.h"

#include <langinfo.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "platform/clock.h"
#include "server/cli_int.h"

#define DEFAULT_URL "http://127.0.0.1:8080"
#define PAGE_MAX 1000 /* the API's largest ?limit= */

/* -- flags ------------------------------------------------------------------------------------ */

enum {
    F_URL = 1u << 0,
    F_TOKEN = 1u << 1,
    F_JSON = 1u << 2,
    F_CACERT = 1u << 3,
    F_LIMIT = 1u << 4,
    F_TENANT = 1u << 5,
    F_NAME = 1u << 6,
    F_ROLE = 1u << 7,
    F_EXPIRES = 1u << 8,
    F_SECRET = 1u << 9,
    F_STATUS = 1u << 10,
    F_QUOTA_DEVICES = 1u << 11,
    F_TAG = 1u << 12,
    F_PURGE = 1u << 13,
    F_DRY_RUN = 1u << 14,
    F_CHUNK = 1u << 15,
    F_PAGE_SIZE = 1u << 16,
    F_CHUNK_ROWS = 1u << 17,
};
#define F_COMMON (F_URL | F_TOKEN | F_JSON | F_CACERT)

typedef struct flag_def {
    const char *name; /* "--tenant" */
    unsigned bit;
    bool value; /* takes a value */
} flag_def;

static const flag_def flags[] = {
    {"--url", F_URL, true},                     /* common */
    {"--token", F_TOKEN, true},                 /* common */
    {"--json", F_JSON, false},                  /* common */
    {"--cacert", F_CACERT, true},               /* common */
    {"--limit", F_LIMIT, true},                 /* lists */
    {"--page-size", F_PAGE_SIZE, true},         /* lists */
    {"--tenant", F_TENANT, true},               /* device, token */
    {"--name", F_NAME, true},                   /* tenant, device, token create */
    {"--role", F_ROLE, true},                   /* token create */
    {"--expires", F_EXPIRES, true},             /* token create */
    {"--secret", F_SECRET, true},               /* device create */
    {"--status", F_STATUS, true},               /* device list */
    {"--quota-devices", F_QUOTA_DEVICES, true}, /* tenant create */
    {"--tag", F_TAG, true},                     /* device list, create */
    {"--purge", F_PURGE, false},                /* device decommission */
    {"--dry-run", F_DRY_RUN, false},            /* device import */
    {"--chunk", F_CHUNK, true},                 /* device import */
    {"--chunk-rows", F_CHUNK_ROWS, true},       /* telemetry import */
};

/* -- the command table ------------------------------------------------------------------------ */

typedef struct command {
    const char *noun, *verb;
    const char *synopsis;    /* what follows "drover NOUN VERB" */
    size_t min_pos, max_pos; /* positional arguments */
    unsigned allowed;        /* flags beyond F_COMMON */
    unsigned required;
    int (*run)(cli *c);
} command;

static int tenant_list(cli *c);
static int tenant_get(cli *c);
static int tenant_create(cli *c);
static int tenant_delete(cli *c);
static int device_list(cli *c);
static int device_get(cli *c);
static int device_create(cli *c);
static int device_decommission(cli *c);
static int token_list(cli *c);
static int token_create(cli *c);
static int token_revoke(cli *c);

static const command commands[] = {
    {"tenant", "list", "[--limit N] [--page-size N]", 0, 0, F_LIMIT | F_PAGE_SIZE, 0, tenant_list},
    {"tenant", "get", "ID", 1, 1, 0, 0, tenant_get},
    {"tenant", "create", "ID --name NAME [--quota-devices N]", 1, 1, F_NAME | F_QUOTA_DEVICES,
     F_NAME, tenant_create},
    {"tenant", "delete", "ID", 1, 1, 0, 0, tenant_delete},
    {"device", "list",
     "--tenant T [--tag KEY[=VALUE]] [--status STATUS] [--limit N] [--page-size N]", 0, 0,
     F_TENANT | F_TAG | F_STATUS | F_LIMIT | F_PAGE_SIZE, F_TENANT, device_list},
    {"device", "get", "--tenant T ID", 1, 1, F_TENANT, F_TENANT, device_get},
    {"device", "create", "--tenant T [ID] [--name NAME] [--tag KEY=VALUE]... [--secret S]", 0, 1,
     F_TENANT | F_NAME | F_TAG | F_SECRET, F_TENANT, device_create},
    {"device", "decommission", "--tenant T ID [--purge]", 1, 1, F_TENANT | F_PURGE, F_TENANT,
     device_decommission},
    {"device", "import", "--tenant T FILE.csv|FILE.json [--chunk N] [--dry-run]", 1, 1,
     F_TENANT | F_CHUNK | F_DRY_RUN, F_TENANT, cli_device_import},
    {"token", "list", "--tenant T [--limit N] [--page-size N]", 0, 0,
     F_TENANT | F_LIMIT | F_PAGE_SIZE, F_TENANT, token_list},
    {"token", "create", "--tenant T --name NAME --role ROLE [--expires RFC3339]", 0, 0,
     F_TENANT | F_NAME | F_ROLE | F_EXPIRES, F_TENANT | F_NAME | F_ROLE, token_create},
    {"token", "revoke", "--tenant T ID", 1, 1, F_TENANT, F_TENANT, token_revoke},
    {"telemetry", "import", "--tenant T FILE.csv [--chunk-rows N] [--dry-run]", 1, 1,
     F_TENANT | F_CHUNK_ROWS | F_DRY_RUN, F_TENANT, cli_telemetry_import},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const char common_help[] =
    "common flags:\n"
    "  --url URL      the server (default $DROVER_URL, else " DEFAULT_URL ")\n"
    "  --token TOKEN  an API token (default $DROVER_TOKEN)\n"
    "  --cacert FILE  CA certificates for an https URL (default $DROVER_CACERT, else the\n"
    "                 system's)\n"
    "  --json         print the API's JSON instead of a table\n";

static void print_usage(FILE *f, const char *noun, const command *only)
{
    bool first = true;
    for (size_t i = 0; i < NCOMMANDS; i++) {
        const command *k = &commands[i];
        if ((only && k != only) || (noun && strcmp(k->noun, noun) != 0))
            continue;
        fprintf(f, "%s drover %s %s %s\n", first ? "usage:" : "      ", k->noun, k->verb,
                k->synopsis);
        first = false;
    }
    fputs(common_help, f);
}

/* -- small helpers ---------------------------------------------------------------------------- */

drv_err cli_urlencode(drv_buf *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    drv_err e = DRV_OK;
    for (; !e && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            e = drv_buf_append(out, s, 1);
        } else {
            char enc[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            e = drv_buf_append(out, enc, 3);
        }
    }
    return e;
}

/*
 * A request target built from pieces: literal text (`lit`), and values that
 * are percent-encoded (`enc`).  NUL-terminated; DRV_NOMEM / DRV_TOOBIG.
 */
typedef struct url_target {
    drv_buf b;
    drv_err e;
} url_target;

static void t_init(url_target *t)
{
    drv_buf_init(&t->b, 16 * 1024);
    t->e = DRV_OK;
}

static void t_lit(url_target *t, const char *s)
{
    if (!t->e)
        t->e = drv_buf_append(&t->b, s, strlen(s));
}

static void t_enc(url_target *t, const char *s)
{
    if (!t->e)
        t->e = cli_urlencode(&t->b, s);
}

/* The finished target, or NULL (out of memory). */
static const char *t_str(url_target *t)
{
    if (!t->e)
        t->e = drv_buf_append(&t->b, "", 1);
    if (t->e)
        return NULL;
    t->b.len--; /* more may be appended after the NUL's place */
    return (const char *)t->b.data;
}

static void t_free(url_target *t)
{
    drv_buf_free(&t->b);
}

/* "/api/v1/tenants/{tenant}" + rest. */
static void t_tenant(url_target *t, const char *tenant, const char *rest)
{
    t_init(t);
    t_lit(t, "/api/v1/tenants/");
    t_enc(t, tenant);
    t_lit(t, rest);
}

static char *dump(json_t *j)
{
    return json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
}

/* Print a JSON value on one line of stdout. */
static int print_json(json_t *j)
{
    char *text = dump(j);
    if (!text)
        return 1;
    printf("%s\n", text);
    free(text); /* jansson's allocation */
    return 0;
}

/* The body of an answer, as it came, ending with a line break. */
static void print_raw(const cli_http_resp *r)
{
    fwrite(r->body, 1, r->body_len, stdout);
    if (r->body_len == 0 || r->body[r->body_len - 1] != '\n')
        putchar('\n');
}

static json_t *parse_body(cli *c, const cli_http_resp *r)
{
    json_t *j = json_loadb(r->body, r->body_len, 0, NULL);
    if (!j)
        fprintf(stderr, "%s: the server's answer is not JSON\n", c->prog);
    return j;
}

/* "2026-11-28T21:15:17.123Z" -> "2026-11-28 21:15"; other text as it is. */
static const char *short_time(const char *s, char *buf, size_t cap)
{
    if (!s)
        return NULL;
    if (strlen(s) >= 16 && s[10] == 'T' && cap > 16) {
        memcpy(buf, s, 16);
        buf[10] = ' ';
        buf[16] = '\0';
        return buf;
    }
    return s;
}

/* "2026-11-28T21:15:17.123Z" -> "2026-11-28": when a thing was made, to the day. */
static const char *day(const char *s, char *buf, size_t cap)
{
    if (s && strlen(s) >= 10 && s[10] == 'T' && cap > 10) {
        memcpy(buf, s, 10);
        buf[10] = '\0';
        return buf;
    }
    return s;
}

static const char *str(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

/* The current UTC time as RFC 3339, comparable as text with the API's times. */
static void now_rfc3339(char *buf, size_t cap)
{
    time_t t = (time_t)drv_wall_s();
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
}

/* -- output ----------------------------------------------------------------------------------- */

static int render(cli *c, cli_table *t)
{
    drv_buf out;
    drv_buf_init(&out, SIZE_MAX);
    drv_err e = cli_table_render(t, c->width, c->ellipsis, &out);
    if (!e)
        fwrite(out.data, 1, out.len, stdout);
    drv_buf_free(&out);
    cli_table_free(t);
    if (e)
        fprintf(stderr, "%s: out of memory\n", c->prog);
    return e ? 1 : 0;
}

/* A value as one cell: strings as they are, null and [] as "-", lists joined with ", ". */
static drv_err cell_text(json_t *v, drv_buf *out)
{
    if (json_is_string(v))
        return drv_buf_append(out, json_string_value(v), json_string_length(v));
    if (json_is_null(v) || (json_is_array(v) && json_array_size(v) == 0))
        return drv_buf_append(out, "-", 1);
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        drv_err e = DRV_OK;
        json_array_foreach(v, i, x)
        {
            if (!e && i > 0)
                e = drv_buf_append(out, ", ", 2);
            if (!e)
                e = cell_text(x, out);
        }
        return e;
    }
    char *text = dump(v);
    drv_err e = text ? drv_buf_append(out, text, strlen(text)) : DRV_NOMEM;
    free(text); /* jansson's allocation */
    return e;
}

/* FIELD / VALUE rows for an object, nested objects flattened as "a.b". */
static drv_err add_fields(cli_table *t, const char *prefix, json_t *obj)
{
    const char *k;
    json_t *v;
    drv_err e = DRV_OK;
    json_object_foreach(obj, k, v)
    {
        char key[256];
        snprintf(key, sizeof(key), "%s%s%s", prefix, prefix[0] ? "." : "", k);
        if (json_is_object(v) && json_object_size(v) > 0) {
            e = add_fields(t, key, v);
        } else {
            drv_buf val;
            drv_buf_init(&val, 1u << 20);
            e = cell_text(v, &val);
            if (!e)
                e = drv_buf_append(&val, "", 1);
            const char *row[] = {key, e ? "" : (const char *)val.data};
            if (!e)
                e = cli_table_add(t, row);
            drv_buf_free(&val);
        }
        if (e)
            break;
    }
    return e;
}

static const char *const field_headers[] = {"FIELD", "VALUE"};

static int show_object(cli *c, json_t *obj)
{
    cli_table t;
    cli_table_init(&t, 2, field_headers);
    if (add_fields(&t, "", obj)) {
        cli_table_free(&t);
        fprintf(stderr, "%s: out of memory\n", c->prog);
        return 1;
    }
    return render(c, &t);
}

/* A single resource: --json prints the answer as it came, else FIELD / VALUE rows. */
static int show_answer(cli *c, const cli_http_resp *r)
{
    if (c->o.json) {
        print_raw(r);
        return 0;
    }
    json_t *j = parse_body(c, r);
    int rc = j ? show_object(c, j) : 1;
    json_decref(j);
    return rc;
}

/* -- requests --------------------------------------------------------------------------------- */

void cli_print_error(cli *c, const cli_http_resp *r)
{
    json_t *p = cli_http_is_json(r) ? json_loadb(r->body, r->body_len, 0, NULL) : NULL;
    const char *title = str(p, "title"), *detail = str(p, "detail");
    if (title || detail) {
        fprintf(stderr, "%s: %s%s%s\n", c->prog, title ? title : "", title && detail ? ": " : "",
                detail ? detail : "");
    } else {
        /* Not a problem document (a proxy's error page?): the status and the start of it. */
        char snippet[201];
        size_t n = r->body_len < 200 ? r->body_len : 200;
        memcpy(snippet, r->body ? r->body : "", n);
        snippet[n] = '\0';
        for (char *s = snippet; *s; s++)
            if ((unsigned char)*s < 0x20)
                *s = ' ';
        fprintf(stderr, "%s: the server answered %d%s%s\n", c->prog, r->status, n ? ": " : "",
                snippet);
    }
    if (r->status == 401)
        fprintf(stderr, "%s: check --token or $DROVER_TOKEN\n", c->prog);
    json_decref(p);
}

int cli_call(cli *c, const char *method, const char *target, const char *ctype, const void *body,
             size_t len, cli_http_resp *r)
{
    char why[512];
    if (!target) {
        fprintf(stderr, "%s: out of memory\n", c->prog);
        return 1;
    }
    if (cli_http_request(&c->http, method, target, ctype, body, len, r, why, sizeof(why))) {
        fprintf(stderr, "%s: %s\n", c->prog, why);
        return 1;
    }
    if (r->status >= 200 && r->status < 300)
        return 0;
    cli_print_error(c, r);
    cli_http_resp_free(r);
    return 1;
}

/* POST or PATCH a JSON document. */
static int call_json(cli *c, const char *method, const char *target, json_t *doc, cli_http_resp *r)
{
    char *text = doc ? dump(doc) : NULL;
    if (doc && !text) {
        fprintf(stderr, "%s: out of memory\n", c->prog);
        return 1;
    }
    int rc = cli_call(c, method, target, text ? "application/json" : NULL, text,
                      text ? strlen(text) : 0, r);
    free(text); /* jansson's allocation */
    return rc;
}

/*
 * Every item of a list, following next_cursor, as {"items": [...],
 * "next_cursor": ...}; --limit stops early (then next_cursor continues
 * where it stopped).  `base` is the list's target, with or without a query.
 */
static int fetch_list(cli *c, const char *base, json_t **out)
{
    json_t *items = json_array(), *next = json_null();
    int rc = items ? 0 : 1;
    char *cursor = NULL;
    size_t want = c->o.limit > 0 ? (size_t)c->o.limit : SIZE_MAX;
    while (rc == 0) {
        size_t page = want - json_array_size(items);
        size_t most = c->o.page_size > 0 ? (size_t)c->o.page_size : PAGE_MAX;
        if (page > most)
            page = most;
        char lim[32];
        snprintf(lim, sizeof(lim), "%slimit=%zu", strchr(base, '?') ? "&" : "?", page);
        url_target t;
        t_init(&t);
        t_lit(&t, base);
        t_lit(&t, lim);
        if (cursor) {
            t_lit(&t, "&cursor=");
            t_enc(&t, cursor);
        }
        cli_http_resp r;
        rc = cli_call(c, "GET", t_str(&t), NULL, NULL, 0, &r);
        t_free(&t);
        if (rc)
            break;
        json_t *j = parse_body(c, &r);
        cli_http_resp_free(&r);
        json_t *got = json_object_get(j, "items");
        if (!json_is_array(got)) {
            if (j)
                fprintf(stderr, "%s: the server's answer is not a list\n", c->prog);
            json_decref(j);
            rc = 1;
            break;
        }
        json_array_extend(items, got);
        size_t got_n = json_array_size(got);
        json_decref(next);
        next = json_incref(json_object_get(j, "next_cursor"));
        if (!next)
            next = json_null();
        drv_free(cursor);
        cursor = json_is_string(next) ? drv_strdup(json_string_value(next)) : NULL;
        json_decref(j);
        if (!cursor || json_array_size(items) >= want || got_n == 0)
            break;
    }
    drv_free(cursor);
    if (rc == 0) {
        *out = json_pack("{s:o, s:o}", "items", items, "next_cursor", next);
        if (!*out)
            rc = 1;
    } else {
        json_decref(items);
        json_decref(next);
    }
    return rc;
}

/* A list: --json prints {"items", "next_cursor"}; else one table row per item. */
typedef void (*row_fn)(json_t *item, const char **cells, char (*scratch)[64]);

static int show_list(cli *c, const char *base, size_t ncols, const char *const *headers, row_fn row)
{
    json_t *list;
    if (fetch_list(c, base, &list))
        return 1;
    if (c->o.json) {
        int rc = print_json(list);
        json_decref(list);
        return rc;
    }
    cli_table t;
    cli_table_init(&t, ncols, headers);
    t.keep = 1u; /* the id: what every other command needs, so cut it last */
    size_t i;
    json_t *item;
    drv_err e = DRV_OK;
    json_array_foreach(json_object_get(list, "items"), i, item)
    {
        const char *cells[8] = {0};
        char scratch[8][64];
        row(item, cells, scratch);
        if (!e)
            e = cli_table_add(&t, cells);
    }
    json_decref(list);
    if (e) {
        cli_table_free(&t);
        fprintf(stderr, "%s: out of memory\n", c->prog);
        return 1;
    }
    return render(c, &t);
}

/* -- tenants ---------------------------------------------------------------------------------- */

static const char *const tenant_headers[] = {"ID", "NAME", "STATUS", "DEVICE QUOTA", "CREATED"};

static void tenant_row(json_t *t, const char **cells, char (*scratch)[64])
{
    cells[0] = str(t, "id");
    cells[1] = str(t, "name");
    cells[2] = str(t, "status");
    json_t *q = json_object_get(json_object_get(t, "quotas"), "devices");
    if (json_integer_value(q) > 0)
        snprintf(scratch[0], 64, "%lld", (long long)json_integer_value(q));
    else
        snprintf(scratch[0], 64, "unlimited");
    cells[3] = scratch[0];
    cells[4] = day(str(t, "created_at"), scratch[1], 64);
}

static int tenant_list(cli *c)
{
    return show_list(c, "/api/v1/tenants", 5, tenant_headers, tenant_row);
}

static int tenant_get(cli *c)
{
    url_target t;
    t_tenant(&t, c->o.pos[0], "");
    cli_http_resp r;
    int rc = cli_call(c, "GET", t_str(&t), NULL, NULL, 0, &r);
    t_free(&t);
    if (rc == 0) {
        rc = show_answer(c, &r);
        cli_http_resp_free(&r);
    }
    return rc;
}

static int tenant_create(cli *c)
{
    json_t *doc = json_pack("{s:s, s:s}", "id", c->o.pos[0], "name", c->o.name);
    if (doc && c->o.quota_devices >= 0)
        json_object_set_new(doc, "quotas",
                            json_pack("{s:I}", "devices", (json_int_t)c->o.quota_devices));
    cli_http_resp r;
    int rc = call_json(c, "POST", "/api/v1/tenants", doc, &r);
    json_decref(doc);
    if (rc == 0) {
        rc = show_answer(c, &r);
        cli_http_resp_free(&r);
    }
    return rc;
}

static int tenant_delete(cli *c)
{
    url_target t;
    t_tenant(&t, c->o.pos[0], "");
    cli_http_resp r;
    int rc = cli_call(c, "DELETE", t_str(&t), NULL, NULL, 0, &r);
    t_free(&t);
    if (rc == 0) {
        if (!c->o.json)
            printf("tenant %s deleted\n", c->o.pos[0]);
        cli_http_resp_free(&r);
    }
    return rc;
}

/* -- devices ---------------------------------------------------------------------------------- */

static const char *const device_headers[] = {"ID", "NAME", "STATUS", "LAST SEEN", "TAGS"};

static void device_row(json_t *d, const char **cells, char (*scratch)[64])
{
    cells[0] = str(d, "id");
    cells[1] = str(d, "name");
    cells[2] = str(d, "status");
    json_t *conn = json_object_get(d, "connectivity");
    if (json_is_true(json_object_get(conn, "online")))
        cells[3] = "online now";
    else if (str(conn, "last_seen"))
        cells[3] = short_time(str(conn, "last_seen"), scratch[0], 64);
    else
        cells[3] = "never";
    /* k=v,k=v: as much as fits in the scratch cell; the table cuts it further. */
    size_t n = 0;
    const char *k;
    json_t *v;
    scratch[1][0] = '\0';
    json_object_foreach(json_object_get(d, "tags"), k, v)
    {
        int w = snprintf(scratch[1] + n, 64 - n, "%s%s=%s", n ? "," : "", k,
                         json_string_value(v) ? json_string_value(v) : "");
        if (w < 0 || (size_t)w >= 64 - n) {
            n = 63;
            break;
        }
        n += (size_t)w;
    }
    cells[4] = scratch[1];
}

static int device_list(cli *c)
{
    url_target t;
    t_tenant(&t, c->o.tenant, "/devices");
    const char *sep = "?";
    if (c->o.ntags > 0) {
        t_lit(&t, "?tag=");
        t_enc(&t, c->o.tags[0]);
        sep = "&";
    }
    if (c->o.status) {
        t_lit(&t, sep);
        t_lit(&t, "status=");
        t_enc(&t, c->o.status);
    }
    const char *base = t_str(&t);
    int rc = base ? show_list(c, base, 5, device_headers, device_row) : 1;
    t_free(&t);
    return rc;
}

static int device_get(cli *c)
{
    url_target t;
    t_tenant(&t, c->o.tenant, "/devices/");
    t_enc(&t, c->o.pos[0]);
    cli_http_resp r;
    int rc = cli_call(c, "GET", t_str(&t), NULL, NULL, 0, &r);
    t_free(&t);
    if (rc == 0) {
        rc = show_answer(c, &r);
        cli_http_resp_free(&r);
    }
    return rc;
}

/* --tag k=v flags as a JSON object; NULL after printing why. */
static json_t *tags_object(cli *c)
{
    json_t *tags = json_object();
    for (size_t i = 0; tags && i < c->o.ntags; i++) {
        const char *kv = c->o.tags[i], *eq = strchr(kv, '=');
        if (!eq || eq == kv) {
            fprintf(stderr, "%s: --tag takes KEY=VALUE, not \"%s\"\n", c->prog, kv);
            json_decref(tags);
            return NULL;
        }
        char key[256];
        snprintf(key, sizeof(key), "%.*s", (int)(eq - kv), kv);
        json_object_set_new(tags, key, json_string(eq + 1));
    }
    return tags;
}

static int device_create(cli *c)
{
    json_t *doc = json_object();
    if (doc && c->o.npos > 0)
        json_object_set_new(doc, "id", json_string(c->o.pos[0]));
    if (doc && c->o.name)
        json_object_set_new(doc, "name", json_string(c->o.name));
    if (doc && c->o.ntags > 0) {
        json_t *tags = tags_object(c);
        if (!tags) {
            json_decref(doc);
            return 2;
        }
        json_object_set_new(doc, "tags", tags);
    }
    url_target t;
    t_tenant(&t, c->o.tenant, "/devices");
    cli_http_resp r;
    int rc = call_json(c, "POST", t_str(&t), doc, &r);
    t_free(&t);
    json_decref(doc);
    if (rc)
        return rc;
    json_t *dev = parse_body(c, &r);
    const char *id = str(dev, "id");
    if (!id) {
        cli_http_resp_free(&r);
        json_decref(dev);
        return 1;
    }
    /* The secret is a credential of its own: a second request, once the device exists. */
    cli_http_resp cr = {0};
    if (c->o.secret) {
        json_t *cred = json_pack("{s:s, s:s}", "kind", "secret", "secret", c->o.secret);
        t_tenant(&t, c->o.tenant, "/devices/");
        t_enc(&t, id);
        t_lit(&t, "/credentials");
        rc = call_json(c, "POST", t_str(&t), cred, &cr);
        t_free(&t);
        json_decref(cred);
        if (rc)
            fprintf(stderr,
                    "%s: device %s was created without its secret; add one with POST "
                    "/api/v1/tenants/%s/devices/%s/credentials\n",
                    c->prog, id, c->o.tenant, id);
    }
    if (c->o.json) {
        print_raw(&r);
        if (cr.body)
            print_raw(&cr); /* a second JSON line: the credential */
    } else {
        json_t *credential = cr.body ? json_loadb(cr.body, cr.body_len, 0, NULL) : NULL;
        if (str(credential, "id"))
            json_object_set_new(dev, "credential", json_string(str(credential, "id")));
        json_decref(credential);
        if (show_object(c, dev))
            rc = 1;
    }
    cli_http_resp_free(&cr);
    cli_http_resp_free(&r);
    json_decref(dev);
    return rc;
}

static int device_decommission(cli *c)
{
    url_target t;
    t_tenant(&t, c->o.tenant, "/devices/");
    t_enc(&t, c->o.pos[0]);
    t_lit(&t, "/decommission");
    json_t *doc = json_pack("{s:b}", "purge", c->o.purge);
    cli_http_resp r;
    int rc = call_json(c, "POST", t_str(&t), doc, &r);
    t_free(&t);
    json_decref(doc);
    if (rc)
        return rc;
    if (c->o.json && r.body_len > 0)
        print_raw(&r);
    else if (!c->o.json)
        printf("device %s decommissioned: credentials revoked, %s\n", c->o.pos[0],
               c->o.purge ? "record purged" : "record kept");
    cli_http_resp_free(&r);
    return 0;
}

/* -- tokens ----------------------------------------------------------------------------------- */

static const char *const token_headers[] = {"ID", "NAME", "ROLE", "STATE", "CREATED", "EXPIRES"};

static void token_row(json_t *t, const char **cells, char (*scratch)[64])
{
    char now[32];
    now_rfc3339(now, sizeof(now));
    const char *exp = str(t, "expires_at");
    cells[0] = str(t, "id");
    cells[1] = str(t, "name");
    cells[2] = str(t, "role");
    cells[3] = str(t, "revoked_at")           ? "revoked"
               : exp && strcmp(exp, now) <= 0 ? "expired"
                                              : "active";
    cells[4] = day(str(t, "created_at"), scratch[0], 64);
    cells[5] = exp ? short_time(exp, scratch[1], 64) : "never";
}

static int token_list(cli *c)
{
    url_target t;
    t_tenant(&t, c->o.tenant, "/tokens");
    const char *base = t_str(&t);
    int rc = base ? show_list(c, base, 6, token_headers, token_row) : 1;
    t_free(&t);
    return rc;
}

static int token_create(cli *c)
{
    json_t *doc = json_pack("{s:s, s:s}", "name", c->o.name, "role", c->o.role);
    if (doc && c->o.expires)
        json_object_set_new(doc, "expires_at", json_string(c->o.expires));
    url_target t;
    t_tenant(&t, c->o.tenant, "/tokens");
    cli_http_resp r;
    int rc = call_json(c, "POST", t_str(&t), doc, &r);
    t_free(&t);
    json_decref(doc);
    if (rc)
        return rc;
    if (c->o.json) {
        print_raw(&r);
        cli_http_resp_free(&r);
        return 0;
    }
    json_t *tok = parse_body(c, &r);
    cli_http_resp_free(&r);
    json_t *secret = json_incref(json_object_get(tok, "token"));
    json_object_del(tok, "token");
    rc = tok ? show_object(c, tok) : 1;
    /* The secret on a line of its own, never cut by the table's width. */
    if (json_is_string(secret)) {
        printf("\ntoken: %s\n", json_string_value(secret));
        fprintf(stderr, "%s: the token is shown only this once; keep it now\n", c->prog);
    }
    json_decref(secret);
    json_decref(tok);
    return rc;
}

static int token_revoke(cli *c)
{
    url_target t;
    t_tenant(&t, c->o.tenant, "/tokens/");
    t_enc(&t, c->o.pos[0]);
    cli_http_resp r;
    int rc = cli_call(c, "DELETE", t_str(&t), NULL, NULL, 0, &r);
    t_free(&t);
    if (rc == 0) {
        if (!c->o.json)
            printf("token %s revoked\n", c->o.pos[0]);
        cli_http_resp_free(&r);
    }
    return rc;
}

/* -- parsing the command line ----------------------------------------------------------------- */

static bool parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* Store one flag's value; false (after saying why) when it is bad. */
static bool set_flag(cli_opts *o, const char *prog, unsigned bit, const char *name, const char *v)
{
    switch (bit) {
    case F_URL:
        o->url = v;
        break;
    case F_TOKEN:
        o->token = v;
        break;
    case F_JSON:
        o->json = true;
        break;
    case F_CACERT:
        o->cacert = v;
        break;
    case F_LIMIT:
        if (!parse_long(v, 1, 100000000, &o->limit))
            goto bad_number;
        break;
    case F_TENANT:
        o->tenant = v;
        break;
    case F_NAME:
        o->name = v;
        break;
    case F_ROLE:
        o->role = v;
        break;
    case F_EXPIRES:
        o->expires = v;
        break;
    case F_SECRET:
        o->secret = v;
        break;
    case F_STATUS:
        o->status = v;
        break;
    case F_QUOTA_DEVICES:
        if (!parse_long(v, 0, 2000000000, &o->quota_devices))
            goto bad_number;
        break;
    case F_TAG:
        if (o->ntags == CLI_MAX_TAGS) {
            fprintf(stderr, "%s: at most %d --tag flags\n", prog, CLI_MAX_TAGS);
            return false;
        }
        o->tags[o->ntags++] = v;
        break;
    case F_PURGE:
        o->purge = true;
        break;
    case F_DRY_RUN:
        o->dry_run = true;
        break;
    case F_CHUNK:
        if (!parse_long(v, 1, 10000, &o->chunk))
            goto bad_number;
        break;
    case F_PAGE_SIZE:
        if (!parse_long(v, 1, PAGE_MAX, &o->page_size))
            goto bad_number;
        break;
    case F_CHUNK_ROWS:
        if (!parse_long(v, 1, 10000000, &o->chunk_rows))
            goto bad_number;
        break;
    }
    return true;
bad_number:
    fprintf(stderr, "%s: %s takes a number in range, not \"%s\"\n", prog, name, v);
    return false;
}

/* Flags and positional arguments after NOUN VERB; false on a usage error (printed). */
static bool parse_args(cli *c, const command *k, int argc, char **argv, unsigned *seen)
{
    cli_opts *o = &c->o;
    *seen = 0;
    bool only_positional = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (only_positional || a[0] != '-' || !a[1]) {
            if (o->npos == k->max_pos) {
                fprintf(stderr, "%s: unexpected argument \"%s\"\n", c->prog, a);
                return false;
            }
            o->pos[o->npos++] = a;
            continue;
        }
        if (!strcmp(a, "--")) {
            only_positional = true;
            continue;
        }
        /* --flag value or --flag=value */
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        const flag_def *f = NULL;
        for (size_t j = 0; j < sizeof(flags) / sizeof(flags[0]); j++)
            if (strlen(flags[j].name) == nlen && !strncmp(flags[j].name, a, nlen))
                f = &flags[j];
        if (!f || !((F_COMMON | k->allowed) & f->bit)) {
            fprintf(stderr, "%s: unknown flag %.*s\n", c->prog, (int)nlen, a);
            return false;
        }
        const char *v = NULL;
        if (f->value) {
            if (eq)
                v = eq + 1;
            else if (i + 1 < argc)
                v = argv[++i];
            else {
                fprintf(stderr, "%s: %s needs a value\n", c->prog, f->name);
                return false;
            }
        } else if (eq) {
            fprintf(stderr, "%s: %s takes no value\n", c->prog, f->name);
            return false;
        }
        if (!set_flag(o, c->prog, f->bit, f->name, v))
            return false;
        *seen |= f->bit;
    }
    unsigned missing = k->required & ~*seen;
    for (size_t j = 0; missing && j < sizeof(flags) / sizeof(flags[0]); j++)
        if (missing & flags[j].bit) {
            fprintf(stderr, "%s: %s is required\n", c->prog, flags[j].name);
            return false;
        }
    if (o->npos < k->min_pos) {
        fprintf(stderr, "%s: missing argument\n", c->prog);
        return false;
    }
    if (!strcmp(k->noun, "device") && !strcmp(k->verb, "list") && o->ntags > 1) {
        fprintf(stderr, "%s: the API filters on one --tag at a time\n", c->prog);
        return false;
    }
    return true;
}

/* Table width: the terminal's, else $COLUMNS, else 80 (readable on any terminal). */
static size_t output_width(void)
{
    struct winsize ws;
    if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    long cols;
    const char *env = getenv("COLUMNS");
    if (env && parse_long(env, 20, 10000, &cols))
        return (size_t)cols;
    return 80;
}

static bool utf8_locale(void)
{
    setlocale(LC_CTYPE, "");
    const char *cs = nl_langinfo(CODESET);
    return cs && (!strcasecmp(cs, "UTF-8") || !strcasecmp(cs, "utf8"));
}

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && v[0] ? v : dflt;
}

int drv_cli_main(int argc, char **argv)
{
    const char *noun = argv[0];
    const char *verb = argc >= 2 ? argv[1] : NULL;
    if (!verb || !strcmp(verb, "--help") || !strcmp(verb, "-h") || !strcmp(verb, "help")) {
        print_usage(verb ? stdout : stderr, noun, NULL);
        return verb ? 0 : 2;
    }
    const command *k = NULL;
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (!strcmp(commands[i].noun, noun) && !strcmp(commands[i].verb, verb))
            k = &commands[i];
    if (!k) {
        fprintf(stderr, "drover %s: unknown command \"%s\"\n", noun, verb);
        print_usage(stderr, noun, NULL);
        return 2;
    }
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            print_usage(stdout, NULL, k);
            return 0;
        }

    char prog[64];
    snprintf(prog, sizeof(prog), "drover %s %s", noun, verb);
    cli c = {.prog = prog};
    c.o.quota_devices = -1;
    unsigned seen;
    if (!parse_args(&c, k, argc - 2, argv + 2, &seen)) {
        print_usage(stderr, NULL, k);
        return 2;
    }
    if (!c.o.url)
        c.o.url = env_or("DROVER_URL", DEFAULT_URL);
    if (!c.o.token)
        c.o.token = env_or("DROVER_TOKEN", NULL);
    if (!c.o.cacert)
        c.o.cacert = env_or("DROVER_CACERT", NULL);
    if (cli_url_parse(c.o.url, &c.http.url)) {
        fprintf(stderr, "%s: --url must be http://HOST[:PORT] or https://HOST[:PORT], not \"%s\"\n",
                prog, c.o.url);
        return 2;
    }
    c.http.token = c.o.token;
    c.http.cacert = c.o.cacert;
    c.width = output_width();
    c.ellipsis = utf8_locale() ? "\xE2\x80\xA6" : "...";
    c.stderr_tty = isatty(STDERR_FILENO);
    /* A server that closes early must not kill the tool mid-write (OpenSSL writes with
     * plain send()); the error comes back from the write instead. */
    signal(SIGPIPE, SIG_IGN);

    int rc = k->run(&c);
    fflush(stdout);
    cli_http_close(&c.http);
    return rc;
}
