/*
 * cli_import.c — `drover device import --tenant T FILE.csv|FILE.json`: read
 * the file, cut it into chunks and POST each one to
 * /api/v1/tenants/{tenant}/device-imports, with a progress bar, then a
 * summary and every rejected row with its reason.
 *
 * Chunks keep requests small and the progress honest: a CSV chunk is the
 * header row plus the next records exactly as they are in the file
 * (quoted line breaks included), a JSON chunk is {"devices": [slice]}.  The
 * server numbers the rows it rejects from 1 within each chunk; they are
 * renumbered here to rows of the whole file (and, for CSV, to the line an
 * editor shows).  Chunks are sent one after the other, so a failure stops
 * the import at a known row: everything before it was processed, nothing
 * after it was sent.  A 429 or 503 is retried after its Retry-After; a 413
 * halves the chunk and tries again.
 *
 * The CSV reading here only finds record boundaries (quotes and line
 * breaks); the fields are the server's to read and judge.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/alloc.h"
#include "platform/fs.h"
#include "server/cli_int.h"

#define MAX_FILE (512u * 1024 * 1024)
#define MAX_CHUNK_BYTES (1024u * 1024) /* far below http.max_body's default of 64 MiB */

/* -- sources ---------------------------------------------------------------------------------- */

static bool blank(const char *p, size_t len)
{
    return len == 0 || (len == 1 && (p[0] == '\n' || p[0] == '\r')) ||
           (len == 2 && p[0] == '\r' && p[1] == '\n');
}

static drv_err parse_csv(cli_source *s, const char *text, size_t len, char *why, size_t cap)
{
    size_t i = 0, line = 1, have = 0, room = 0;
    bool got_header = false;
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3))
        i = 3; /* a byte order mark is not part of the first column's name */
    while (i < len) {
        size_t start = i, start_line = line;
        bool quoted = false;
        while (i < len) {
            char ch = text[i++];
            if (ch == '"') {
                quoted = !quoted; /* "" inside quotes toggles twice: still quoted */
            } else if (ch == '\n') {
                line++;
                if (!quoted)
                    break;
            }
        }
        if (quoted) {
            snprintf(why, cap, "line %zu: a quoted field is never closed", start_line);
            return DRV_INVAL;
        }
        if (blank(text + start, i - start))
            continue;
        cli_record r = {start, i - start, start_line};
        if (!got_header) {
            s->header = r;
            got_header = true;
            continue;
        }
        if (have == room) {
            room = room ? room * 2 : 1024;
            cli_record *n = drv_realloc(s->recs, room * sizeof(*n));
            if (!n)
                return DRV_NOMEM;
            s->recs = n;
        }
        s->recs[have++] = r;
        s->nrecs = have;
    }
    if (!got_header) {
        snprintf(why, cap, "the file is empty: a CSV import needs a header row and devices");
        return DRV_INVAL;
    }
    return DRV_OK;
}

static drv_err parse_json(cli_source *s, const char *text, size_t len, char *why, size_t cap)
{
    json_error_t err;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    if (!root) {
        snprintf(why, cap, "not JSON: line %d column %d: %s", err.line, err.column, err.text);
        return DRV_INVAL;
    }
    json_t *arr = json_is_array(root) ? root : json_object_get(root, "devices");
    if (!json_is_array(arr)) {
        json_decref(root);
        snprintf(why, cap, "a JSON import is {\"devices\": [...]} or a list of devices");
        return DRV_INVAL;
    }
    s->devices = json_incref(arr);
    json_decref(root);
    return DRV_OK;
}

drv_err cli_source_parse(cli_source *s, const char *text, size_t len, bool json, char *why,
                         size_t why_cap)
{
    memset(s, 0, sizeof(*s));
    s->json = json;
    s->text = text;
    drv_err e =
        json ? parse_json(s, text, len, why, why_cap) : parse_csv(s, text, len, why, why_cap);
    if (!e && cli_source_rows(s) == 0) {
        snprintf(why, why_cap, "the file holds no devices");
        e = DRV_INVAL;
    }
    if (e)
        cli_source_free(s);
    return e;
}

size_t cli_source_rows(const cli_source *s)
{
    return s->json ? json_array_size(s->devices) : s->nrecs;
}

size_t cli_source_line(const cli_source *s, size_t row)
{
    return !s->json && row >= 1 && row <= s->nrecs ? s->recs[row - 1].line : 0;
}

void cli_source_free(cli_source *s)
{
    drv_free(s->recs);
    json_decref(s->devices);
    memset(s, 0, sizeof(*s));
}

/* Append a CSV record, ending it with a line feed if the file did not. */
static drv_err put_record(drv_buf *out, const char *text, const cli_record *r)
{
    drv_err e = drv_buf_append(out, text + r->off, r->len);
    if (!e && (r->len == 0 || text[r->off + r->len - 1] != '\n'))
        e = drv_buf_append(out, "\n", 1);
    return e;
}

static drv_err json_chunk(const cli_source *s, size_t first, size_t n, drv_buf *out)
{
    json_t *slice = json_array();
    json_t *doc = slice ? json_pack("{s:o}", "devices", slice) : NULL;
    drv_err e = doc ? DRV_OK : DRV_NOMEM;
    for (size_t i = 0; !e && i < n; i++)
        if (json_array_append(slice, json_array_get(s->devices, first + i)))
            e = DRV_NOMEM;
    char *text = e ? NULL : json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!e && !text)
        e = DRV_NOMEM;
    if (!e)
        e = drv_buf_append(out, text, strlen(text));
    free(text); /* jansson's allocation */
    json_decref(doc);
    return e;
}

drv_err cli_source_chunk(const cli_source *s, size_t first, size_t max_rows, size_t max_bytes,
                         drv_buf *out, size_t *rows)
{
    size_t total = cli_source_rows(s);
    size_t n = first < total ? total - first : 0;
    if (max_rows && n > max_rows)
        n = max_rows;
    *rows = 0;
    if (n == 0)
        return DRV_INVAL;
    if (s->json) {
        /* Whole slices: halve until the text fits (one device always goes). */
        size_t mark = out->len;
        for (;;) {
            drv_err e = json_chunk(s, first, n, out);
            if (e || out->len - mark <= max_bytes || n == 1) {
                *rows = e ? 0 : n;
                return e;
            }
            out->len = mark;
            n /= 2;
        }
    }
    drv_err e = put_record(out, s->text, &s->header);
    size_t used = out->len, k = 0;
    for (; !e && k < n; k++) {
        const cli_record *r = &s->recs[first + k];
        if (k > 0 && out->len - used + r->len + 1 > max_bytes)
            break;
        e = put_record(out, s->text, r);
    }
    *rows = e ? 0 : k;
    return e;
}

/* -- progress --------------------------------------------------------------------------------- */

typedef struct progress {
    const cli *c;
    size_t total;    /* rows in the file */
    size_t done;     /* rows the server has answered for */
    size_t created;  /* of them, created (or would be, in a dry run) */
    size_t rejected; /* of them, rejected */
    bool drawn;      /* a bar is on the terminal's last line */
} progress;

static void progress_show(progress *p)
{
    cli_progress_show(p->c, p->done, p->total, p->created, "created", p->rejected, &p->drawn);
}

static void progress_end(progress *p)
{
    cli_progress_end(&p->drawn);
}

/* -- the command ------------------------------------------------------------------------------ */

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcasecmp(s + n - m, suffix);
}

/* JSON or CSV: by the file name's extension, else by the first non-blank byte. */
static bool looks_json(const char *path, const char *text, size_t len)
{
    if (ends_with(path, ".json"))
        return true;
    if (ends_with(path, ".csv"))
        return false;
    for (size_t i = 0; i < len; i++)
        if (text[i] != ' ' && text[i] != '\t' && text[i] != '\r' && text[i] != '\n')
            return text[i] == '{' || text[i] == '[';
    return false;
}

/*
 * A reason that names another row of the same request ("the id \"x\" is
 * also on row 5", h_device_imports.c) counts within the chunk too: renumber
 * that row to the file.  Any other text is kept as it is.
 */
static json_t *renumber_reason(const char *reason, size_t first)
{
    static const char tail[] = " is also on row ";
    const char *at = strstr(reason, tail);
    if (at) {
        const char *digits = at + sizeof(tail) - 1;
        size_t n = strspn(digits, "0123456789");
        if (n > 0 && n < 10 && digits[n] == '\0') {
            char out[1024];
            snprintf(out, sizeof(out), "%.*s%zu", (int)(digits - reason), reason,
                     first + (size_t)strtoul(digits, NULL, 10));
            return json_string(out);
        }
    }
    return json_string(reason);
}

/* Add the chunk's rejected rows, renumbered to the file, to `rejected`. */
static void collect_rejected(const cli_source *src, size_t first, size_t n, json_t *answer,
                             json_t *rejected)
{
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(answer, "rejected"), i, r)
    {
        json_t *row = json_object_get(r, "row");
        json_t *out = json_object();
        if (!out)
            continue;
        if (json_is_integer(row) && json_integer_value(row) >= 1 &&
            (size_t)json_integer_value(row) <= n) {
            size_t file_row = first + (size_t)json_integer_value(row);
            json_object_set_new(out, "row", json_integer((json_int_t)file_row));
            size_t line = cli_source_line(src, file_row);
            if (line)
                json_object_set_new(out, "line", json_integer((json_int_t)line));
        } else {
            json_object_set_new(out, "row", json_null()); /* the server named no row we sent */
        }
        json_t *id = json_object_get(r, "id");
        json_object_set(out, "id", json_is_string(id) ? id : json_null());
        const char *reason = json_string_value(json_object_get(r, "reason"));
        json_object_set_new(out, "reason", renumber_reason(reason ? reason : "?", first));
        json_array_append_new(rejected, out);
    }
}

static int print_summary(cli *c, const cli_source *src, const progress *p, json_t *rejected)
{
    if (c->o.json) {
        json_t *doc =
            json_pack("{s:I, s:I, s:O, s:b}", "total", (json_int_t)p->done, "created",
                      (json_int_t)p->created, "rejected", rejected, "dry_run", c->o.dry_run);
        char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        if (text)
            printf("%s\n", text);
        free(text); /* jansson's allocation */
        json_decref(doc);
        return text ? 0 : 1;
    }
    if (c->o.dry_run)
        printf("dry run: %zu rows checked, %zu would be created, %zu rejected\n", p->done,
               p->created, p->rejected);
    else
        printf("%zu rows: %zu created, %zu rejected\n", p->done, p->created, p->rejected);
    if (json_array_size(rejected) == 0)
        return 0;
    static const char *const csv_headers[] = {"ROW", "LINE", "ID", "REASON"};
    static const char *const json_headers[] = {"ROW", "ID", "REASON"};
    cli_table t;
    cli_table_init(&t, src->json ? 3 : 4, src->json ? json_headers : csv_headers);
    size_t i;
    json_t *r;
    drv_err e = DRV_OK;
    json_array_foreach(rejected, i, r)
    {
        char row[24] = "?", line[24] = "-";
        json_t *v = json_object_get(r, "row");
        if (json_is_integer(v))
            snprintf(row, sizeof(row), "%lld", (long long)json_integer_value(v));
        v = json_object_get(r, "line");
        if (json_is_integer(v))
            snprintf(line, sizeof(line), "%lld", (long long)json_integer_value(v));
        const char *id = json_string_value(json_object_get(r, "id"));
        const char *reason = json_string_value(json_object_get(r, "reason"));
        const char *csv_cells[] = {row, line, id ? id : "-", reason};
        const char *json_cells[] = {row, id ? id : "-", reason};
        if (!e)
            e = cli_table_add(&t, src->json ? json_cells : csv_cells);
    }
    drv_buf out;
    drv_buf_init(&out, SIZE_MAX);
    if (!e)
        e = cli_table_render(&t, c->width, c->ellipsis, &out);
    if (!e)
        fwrite(out.data, 1, out.len, stdout);
    drv_buf_free(&out);
    cli_table_free(&t);
    return e ? 1 : 0;
}

/* How sending one chunk ended. */
/*
 * POST one chunk of n rows.  The server answers only once every row is done
 * (secrets are hashed one by one), so the wait grows with the chunk.
 */
static int post_chunk(cli *c, const char *target, const char *ctype, const drv_buf *body, size_t n,
                      cli_http_resp *r, char *why, size_t why_cap)
{
    return cli_post_chunk(c, target, ctype, body, 30000 + (int)(n > 100000 ? 100000 : n) * 200, r,
                          why, why_cap);
}

/* Say where a failed import stopped and what became of the rows. */
static void say_stopped(const cli *c, size_t first, size_t n, size_t total, bool unknown)
{
    if (first == 0 && !unknown) {
        fprintf(stderr, "%s: nothing was imported\n", c->prog);
        return;
    }
    char done[64] = "no rows were processed";
    if (first > 0)
        snprintf(done, sizeof(done), "rows 1-%zu were processed", first);
    char sent[160] = "";
    if (unknown)
        snprintf(sent, sizeof(sent),
                 ", rows %zu-%zu were sent but no answer came (some may have been created)",
                 first + 1, first + n);
    fprintf(stderr, "%s: stopped at row %zu of %zu: %s%s; the rest were not sent\n", c->prog,
            first + 1, total, done, sent);
}

int cli_device_import(cli *c)
{
    const char *path = c->o.pos[0];
    drv_buf file;
    drv_buf_init(&file, MAX_FILE);
    drv_err e = drv_file_read_all(path, &file);
    if (e) {
        fprintf(stderr, "%s: cannot read %s: %s\n", c->prog, path,
                e == DRV_TOOBIG ? "larger than 512 MiB; split it" : drv_strerror(e));
        drv_buf_free(&file);
        return 1;
    }
    const char *text = file.data ? (const char *)file.data : "";
    bool json = looks_json(path, text, file.len);
    cli_source src;
    char why[512];
    if (cli_source_parse(&src, text, file.len, json, why, sizeof(why))) {
        fprintf(stderr, "%s: %s: %s\n", c->prog, path, why);
        drv_buf_free(&file);
        return 1;
    }

    drv_buf target;
    drv_buf_init(&target, 4096);
    e = drv_buf_append(&target, "/api/v1/tenants/", 16);
    if (!e)
        e = cli_urlencode(&target, c->o.tenant);
    if (!e)
        e = drv_buf_append(&target,
                           c->o.dry_run ? "/device-imports?dry_run=true" : "/device-imports",
                           c->o.dry_run ? 28 : 15);
    if (!e)
        e = drv_buf_append(&target, "", 1);
    json_t *rejected = json_array();
    int rc = 1;
    if (e || !rejected) {
        fprintf(stderr, "%s: out of memory\n", c->prog);
        goto out;
    }

    progress p = {.c = c, .total = cli_source_rows(&src)};
    size_t max_rows = c->o.chunk > 0 ? (size_t)c->o.chunk : 200;
    const char *ctype = json ? "application/json" : "text/csv";
    if (c->stderr_tty)
        progress_show(&p); /* the empty bar, before the first answer */
    while (p.done < p.total) {
        drv_buf body;
        drv_buf_init(&body, SIZE_MAX);
        size_t n = 0, first = p.done;
        e = cli_source_chunk(&src, first, max_rows, MAX_CHUNK_BYTES, &body, &n);
        cli_http_resp r = {0};
        char failure[512] = "";
        int st = e ? CLI_SENT_REFUSED
                   : post_chunk(c, (const char *)target.data, ctype, &body, n, &r, failure,
                                sizeof(failure));
        drv_buf_free(&body);
        if (st == CLI_SENT_TOO_LARGE && n > 1) {
            cli_http_resp_free(&r);
            max_rows = n / 2; /* the server's limit: the same rows in smaller chunks */
            continue;
        }
        json_t *answer = st == CLI_SENT_OK ? json_loadb(r.body, r.body_len, 0, NULL) : NULL;
        if (e || st != CLI_SENT_OK || !json_is_object(answer)) {
            progress_end(&p);
            bool unknown = false;
            if (e) {
                fprintf(stderr, "%s: cannot build a chunk: %s\n", c->prog, drv_strerror(e));
            } else if (st == CLI_SENT_NO_ANSWER) {
                fprintf(stderr, "%s: %s\n", c->prog, failure);
                unknown = true;
            } else if (st == CLI_SENT_TOO_LARGE) {
                fprintf(stderr, "%s: row %zu alone is larger than the server accepts\n", c->prog,
                        first + 1);
            } else if (st == CLI_SENT_REFUSED) {
                cli_print_error(c, &r);
                if (r.status == 404 && first == 0)
                    fprintf(stderr, "%s: (a server without bulk imports answers 404 as well)\n",
                            c->prog);
            } else {
                fprintf(stderr, "%s: the server's answer is not an import result\n", c->prog);
                unknown = true;
            }
            json_decref(answer);
            cli_http_resp_free(&r);
            say_stopped(c, first, n, p.total, unknown);
            if (p.done > 0)
                print_summary(c, &src, &p, rejected);
            goto out;
        }
        cli_http_resp_free(&r);
        collect_rejected(&src, first, n, answer, rejected);
        json_int_t created = json_integer_value(json_object_get(answer, "created"));
        json_decref(answer);
        p.done += n;
        p.created += created > 0 ? (size_t)created : 0;
        p.rejected = json_array_size(rejected);
        progress_show(&p); /* on stderr: --json output on stdout stays clean */
    }
    progress_end(&p);
    rc = print_summary(c, &src, &p, rejected);
    if (rc == 0 && p.rejected > 0)
        rc = 1; /* rows were refused: let scripts notice */
out:
    json_decref(rejected);
    drv_buf_free(&target);
    cli_source_free(&src);
    drv_buf_free(&file);
    return rc;
}
