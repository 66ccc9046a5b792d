/*
 * cli_telemetry.c — `drover telemetry import --tenant T FILE.csv
 * [--chunk-rows N] [--dry-run]`: send a CSV file of samples to POST
 * /api/v1/tenants/{tenant}/telemetry/import in chunks of rows, with a
 * progress bar, then a summary and the rejected rows with their reasons.
 *
 * A chunk is the header record followed by the next records exactly as
 * they are in the file (blank lines and quoted line breaks included), so
 * the line the server names in a chunk maps to a line of the file by an
 * offset: the command reports file lines.  The chunker only finds record
 * boundaries (quotes and line feeds) without indexing the file: a file of
 * millions of rows costs its own size in memory and nothing per row.
 * Chunks go one after the other; a failure stops the import at a known
 * row (everything before it was stored and acknowledged by the server).
 * A 429 or 503 is retried after its Retry-After; a 413 halves the chunk.
 *
 * Not here: reading the fields (the server judges every row), resuming.
 * File-local names carry a tel_ prefix: cli_test.c compiles this file
 * together with cli_import.c, which has functions of the same roles.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "platform/fs.h"
#include "server/cli_int.h"

#define TEL_MAX_FILE (2u << 30)
#define TEL_MAX_CHUNK_BYTES (48u << 20) /* under http.max_body's default of 64 MiB */
#define TEL_DEFAULT_CHUNK_ROWS 100000
#define TEL_MAX_KEPT 1000 /* rejected rows kept for the summary (all are counted) */

/* -- records ---------------------------------------------------------------------------------- */

/* The end of the record starting at t[i] (after its line feed, or len), the
 * line feeds in it added to *lines; *blank when it holds nothing; false when
 * a quoted field is never closed. */
static bool tel_record_end(const char *t, size_t len, size_t i, size_t *end, size_t *lines,
                           bool *blank)
{
    size_t start = i;
    const char *lf = memchr(t + i, '\n', len - i);
    size_t stop = lf ? (size_t)(lf - t) + 1 : len;
    if (!memchr(t + i, '"', stop - i)) { /* the common case: no quotes on the line */
        *end = stop;
        *lines += lf != NULL;
    } else {
        bool quoted = false;
        while (i < len) {
            char ch = t[i++];
            if (ch == '"') {
                quoted = !quoted; /* "" inside quotes toggles twice: still quoted */
            } else if (ch == '\n') {
                (*lines)++;
                if (!quoted)
                    break;
            }
        }
        if (quoted)
            return false;
        *end = i;
    }
    size_t n = *end - start;
    *blank = n == 0 || (n == 1 && t[start] == '\n') ||
             (n == 2 && t[start] == '\r' && t[start + 1] == '\n');
    return true;
}

/* -- progress and answers ---------------------------------------------------------------------- */

typedef struct tel_tally {
    const cli *c;
    size_t total;    /* data rows in the file */
    size_t done;     /* rows the server has answered for */
    size_t accepted; /* of them, stored (or, in a dry run, valid) */
    size_t rejected; /* of them, refused */
    json_t *kept;    /* [{"line", "reason"}] with file lines, up to TEL_MAX_KEPT */
    bool drawn;      /* a bar is on the terminal's last line */
} tel_tally;

static void tel_progress_show(tel_tally *p)
{
    cli_progress_show(p->c, p->done, p->total, p->accepted, "accepted", p->rejected, &p->drawn);
}

static void tel_progress_end(tel_tally *p)
{
    cli_progress_end(&p->drawn);
}

/* Add a chunk's answer: counts, and its listed rows renumbered to the file
 * (chunk line `first` is file line `file_line`).  false: not an import answer. */
static bool tel_add_answer(tel_tally *p, json_t *a, size_t first, size_t file_line)
{
    json_t *acc = json_object_get(a, "accepted"), *rej = json_object_get(a, "rejected_count");
    if (!json_is_integer(acc) || !json_is_integer(rej))
        return false;
    p->accepted += (size_t)(json_integer_value(acc) > 0 ? json_integer_value(acc) : 0);
    p->rejected += (size_t)(json_integer_value(rej) > 0 ? json_integer_value(rej) : 0);
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(a, "rejected"), i, r)
    {
        if (json_array_size(p->kept) >= TEL_MAX_KEPT)
            break;
        json_int_t line = json_integer_value(json_object_get(r, "line"));
        const char *reason = json_string_value(json_object_get(r, "reason"));
        json_t *out = json_pack("{s:o, s:s}", "line",
                                line >= (json_int_t)first
                                    ? json_integer((json_int_t)(file_line + (size_t)line - first))
                                    : json_null(),
                                "reason", reason ? reason : "?");
        if (out)
            json_array_append_new(p->kept, out);
    }
    return true;
}

static int tel_print_summary(cli *c, const tel_tally *p)
{
    if (c->o.json) {
        json_t *doc =
            json_pack("{s:I, s:I, s:I, s:O, s:b}", "total", (json_int_t)p->done, "accepted",
                      (json_int_t)p->accepted, "rejected_count", (json_int_t)p->rejected,
                      "rejected", p->kept, "dry_run", c->o.dry_run);
        char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        if (text)
            printf("%s\n", text);
        free(text); /* jansson's allocation */
        json_decref(doc);
        return text ? 0 : 1;
    }
    if (c->o.dry_run)
        printf("dry run: %zu rows checked, %zu valid, %zu rejected\n", p->done, p->accepted,
               p->rejected);
    else
        printf("%zu rows: %zu accepted, %zu rejected\n", p->done, p->accepted, p->rejected);
    if (json_array_size(p->kept) == 0)
        return 0;
    static const char *const headers[] = {"LINE", "REASON"};
    cli_table t;
    cli_table_init(&t, 2, headers);
    size_t i;
    json_t *r;
    drv_err e = DRV_OK;
    json_array_foreach(p->kept, i, r)
    {
        char line[24] = "?";
        json_t *v = json_object_get(r, "line");
        if (json_is_integer(v))
            snprintf(line, sizeof(line), "%lld", (long long)json_integer_value(v));
        const char *cells[] = {line, json_string_value(json_object_get(r, "reason"))};
        if (!e)
            e = cli_table_add(&t, cells);
    }
    drv_buf out;
    drv_buf_init(&out, SIZE_MAX);
    if (!e)
        e = cli_table_render(&t, c->width, c->ellipsis, &out);
    if (!e)
        fwrite(out.data, 1, out.len, stdout);
    drv_buf_free(&out);
    cli_table_free(&t);
    if (p->rejected > json_array_size(p->kept))
        printf("(%zu more rejected rows not listed: the server lists 100 per chunk, this "
               "command keeps %d)\n",
               p->rejected - json_array_size(p->kept), TEL_MAX_KEPT);
    return e ? 1 : 0;
}

/* -- sending ---------------------------------------------------------------------------------- */

int cli_telemetry_import(cli *c)
{
    const char *path = c->o.pos[0];
    drv_buf file, target;
    drv_buf_init(&file, TEL_MAX_FILE);
    drv_buf_init(&target, 4096);
    tel_tally p = {.c = c, .kept = json_array()};
    int rc = 1;
    drv_err e = drv_file_read_all(path, &file);
    if (e) {
        fprintf(stderr, "%s: cannot read %s: %s\n", c->prog, path,
                e == DRV_TOOBIG ? "larger than 2 GiB; split it" : drv_strerror(e));
        goto out;
    }
    const char *t = file.data ? (const char *)file.data : "";
    size_t len = file.len;
    /* The header (after a byte order mark, which the server skips too). */
    size_t pos = len >= 3 && !memcmp(t, "\xEF\xBB\xBF", 3) ? 3 : 0, line = 1, hstart = 0, hend = 0;
    bool blank = true;
    while (blank && pos < len) {
        hstart = pos;
        if (!tel_record_end(t, len, pos, &hend, &line, &blank))
            goto unclosed;
        pos = hend;
    }
    if (blank) {
        fprintf(stderr, "%s: %s: the file is empty: it needs a header row and samples\n", c->prog,
                path);
        goto out;
    }
    /* The lines the header takes in a chunk (its quoted line breaks, and its end). */
    size_t header_lines = 1;
    for (size_t i = hstart; i + 1 < hend; i++)
        header_lines += t[i] == '\n';
    size_t data_start = pos, data_line = line;
    /* Count the rows for the progress bar (and find an unclosed quote before sending). */
    for (size_t i = pos, l = line, end; i < len; i = end) {
        bool b;
        if (!tel_record_end(t, len, i, &end, &l, &b)) {
            line = l;
            goto unclosed;
        }
        p.total += !b;
    }

    e = drv_buf_append(&target, "/api/v1/tenants/", 16);
    if (!e)
        e = cli_urlencode(&target, c->o.tenant);
    if (!e)
        e = c->o.dry_run ? drv_buf_append(&target, "/telemetry/import?dry_run=true", 30)
                         : drv_buf_append(&target, "/telemetry/import", 17);
    if (!e)
        e = drv_buf_append(&target, "", 1);
    if (e || !p.kept) {
        fprintf(stderr, "%s: out of memory\n", c->prog);
        goto out;
    }

    size_t max_rows = c->o.chunk_rows > 0 ? (size_t)c->o.chunk_rows : TEL_DEFAULT_CHUNK_ROWS;
    if (c->stderr_tty)
        tel_progress_show(&p);
    pos = data_start;
    line = data_line;
    while (pos < len) {
        /* The next chunk: up to max_rows records and TEL_MAX_CHUNK_BYTES (one record at least). */
        size_t start = pos, start_line = line, rows = 0;
        while (pos < len && rows < max_rows && (rows == 0 || pos - start < TEL_MAX_CHUNK_BYTES)) {
            size_t end;
            bool b;
            tel_record_end(t, len, pos, &end, &line, &b); /* closed: checked above */
            rows += !b;
            pos = end;
        }
        drv_buf body;
        drv_buf_init(&body, SIZE_MAX);
        e = drv_buf_append(&body, t + hstart, hend - hstart);
        if (!e && t[hend - 1] != '\n')
            e = drv_buf_append(&body, "\n", 1);
        if (!e)
            e = drv_buf_append(&body, t + start, pos - start);
        cli_http_resp r = {0};
        char failure[512] = "";
        int st = e ? CLI_SENT_REFUSED
                   /* a chunk of 100,000 rows takes well under a second */
                   : cli_post_chunk(c, (const char *)target.data, "text/csv", &body, 120000, &r,
                                    failure, sizeof(failure));
        drv_buf_free(&body);
        if (!e && st == CLI_SENT_TOO_LARGE && rows > 1) {
            cli_http_resp_free(&r);
            max_rows = rows / 2; /* the same rows again, in smaller chunks */
            pos = start;
            line = start_line;
            continue;
        }
        json_t *answer = st == CLI_SENT_OK ? json_loadb(r.body, r.body_len, 0, NULL) : NULL;
        /* Chunk line header_lines + 1 is file line start_line. */
        if (e || st != CLI_SENT_OK || !tel_add_answer(&p, answer, header_lines + 1, start_line)) {
            tel_progress_end(&p);
            if (e)
                fprintf(stderr, "%s: out of memory\n", c->prog);
            else if (st == CLI_SENT_NO_ANSWER)
                fprintf(stderr, "%s: %s (the rows of line %zu on were sent; some may be stored)\n",
                        c->prog, failure, start_line);
            else if (st == CLI_SENT_TOO_LARGE)
                fprintf(stderr,
                        "%s: the record at line %zu alone is larger than the server "
                        "accepts\n",
                        c->prog, start_line);
            else if (st == CLI_SENT_REFUSED)
                cli_print_error(c, &r);
            else
                fprintf(stderr, "%s: the server's answer is not an import result\n", c->prog);
            fprintf(stderr,
                    "%s: stopped at line %zu: the %zu rows before it were processed, the "
                    "rest %s\n",
                    c->prog, start_line, p.done,
                    st == CLI_SENT_NO_ANSWER || st == CLI_SENT_OK ? "may or may not be stored"
                                                                  : "were not stored");
            json_decref(answer);
            cli_http_resp_free(&r);
            if (p.done > 0)
                tel_print_summary(c, &p);
            goto out;
        }
        json_decref(answer);
        cli_http_resp_free(&r);
        p.done += rows;
        tel_progress_show(&p); /* on stderr: --json output on stdout stays clean */
    }
    tel_progress_end(&p);
    rc = tel_print_summary(c, &p);
    if (rc == 0 && p.rejected > 0)
        rc = 1; /* rows were refused: let scripts notice */
    goto out;
unclosed:
    fprintf(stderr, "%s: %s: a quoted field is never closed (it opens at or before line %zu)\n",
            c->prog, path, line);
out:
    json_decref(p.kept);
    drv_buf_free(&target);
    drv_buf_free(&file);
    return rc;
}
