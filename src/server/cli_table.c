/*
 * cli_table.c — aligned text tables for the administrator subcommands;
 * see cli_int.h.
 *
 * Layout: each column starts at its natural width (the widest of its
 * header and cells).  While the row is wider than the terminal, the widest
 * column loses one column of width, down to its floor (its header, and at
 * least 8, unless its content is narrower still) — so a long tags column
 * gives way before a short status does.  Columns marked `keep` (ids) are
 * only cut once every other column is at its floor.  If every column is at its
 * floor the table is simply wider than the terminal.
 */
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "server/cli_int.h"

#define MIN_WIDTH 8
#define GAP 2

void cli_table_init(cli_table *t, size_t ncols, const char *const *headers)
{
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
    t->headers = headers;
}

size_t cli_display_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            w++;
    return w;
}

/* A copy with control characters shown as '?'. */
static char *clean_copy(const char *s)
{
    char *c = drv_strdup(s ? s : "");
    if (c)
        for (char *p = c; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = '?';
    return c;
}

drv_err cli_table_add(cli_table *t, const char *const *cells)
{
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **n = drv_realloc(t->cells, cap * t->ncols * sizeof(char *));
        if (!n)
            return DRV_NOMEM;
        t->cells = n;
        t->cap = cap;
    }
    char **row = t->cells + t->nrows * t->ncols;
    for (size_t i = 0; i < t->ncols; i++) {
        row[i] = clean_copy(cells[i]);
        if (!row[i]) {
            while (i > 0)
                drv_free(row[--i]);
            return DRV_NOMEM;
        }
    }
    t->nrows++;
    return DRV_OK;
}

void cli_table_free(cli_table *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        drv_free(t->cells[i]);
    drv_free(t->cells);
    memset(t, 0, sizeof(*t));
}

/* Bytes of s that take at most `cols` columns. */
static size_t prefix_bytes(const char *s, size_t cols)
{
    size_t i = 0, w = 0;
    while (s[i]) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (w == cols)
                break;
            w++;
        }
        i++;
    }
    return i;
}

/* Append one cell, cut to `width` columns and padded unless it is the last of its row. */
static drv_err put_cell(drv_buf *out, const char *s, size_t width, bool last, const char *ell)
{
    size_t w = cli_display_width(s), ew = cli_display_width(ell);
    drv_err e;
    if (w > width) {
        size_t keep = width > ew ? width - ew : width;
        e = drv_buf_append(out, s, prefix_bytes(s, keep));
        if (!e && width > ew)
            e = drv_buf_append(out, ell, strlen(ell));
        w = width;
    } else {
        e = drv_buf_append(out, s, strlen(s));
    }
    if (!last)
        for (size_t i = w; !e && i < width + GAP; i++)
            e = drv_buf_append(out, " ", 1);
    return e;
}

drv_err cli_table_render(const cli_table *t, size_t width, const char *ellipsis, drv_buf *out)
{
    size_t n = t->ncols;
    size_t *w = drv_calloc(n ? n : 1, 2 * sizeof(size_t));
    if (!w)
        return DRV_NOMEM;
    size_t *floor = w + n;
    for (size_t c = 0; c < n; c++) {
        w[c] = cli_display_width(t->headers[c]);
        for (size_t r = 0; r < t->nrows; r++) {
            size_t cw = cli_display_width(t->cells[r * n + c]);
            if (cw > w[c])
                w[c] = cw;
        }
        size_t f = cli_display_width(t->headers[c]);
        if (f < MIN_WIDTH)
            f = MIN_WIDTH;
        floor[c] = f < w[c] ? f : w[c];
    }
    size_t total = n ? (n - 1) * GAP : 0;
    for (size_t c = 0; c < n; c++)
        total += w[c];
    while (width && total > width) {
        size_t widest = n;
        for (int pass = 0; pass < 2 && widest == n; pass++)
            for (size_t c = 0; c < n; c++) {
                bool kept = c < 32 && (t->keep >> c) & 1u;
                if (kept == (pass == 1) && w[c] > floor[c] && (widest == n || w[c] > w[widest]))
                    widest = c;
            }
        if (widest == n)
            break;
        w[widest]--;
        total--;
    }
    drv_err e = DRV_OK;
    for (size_t r = 0; !e && r <= t->nrows; r++) {
        for (size_t c = 0; !e && c < n; c++) {
            const char *s = r == 0 ? t->headers[c] : t->cells[(r - 1) * n + c];
            e = put_cell(out, s, w[c], c == n - 1, ellipsis);
        }
        /* A short last cell of a row leaves padding before it; none after. */
        while (!e && out->len > 0 && out->data[out->len - 1] == ' ')
            out->len--;
        if (!e)
            e = drv_buf_append(out, "\n", 1);
    }
    drv_free(w);
    return e;
}

void cli_progress_show(const cli *c, size_t done, size_t total, size_t good, const char *good_word,
                       size_t rejected, bool *drawn)
{
    unsigned pct = total ? (unsigned)(done * 100 / total) : 100;
    if (!c->stderr_tty) {
        fprintf(stderr, "%s: %3u%% (%zu/%zu rows, %zu %s, %zu rejected)\n", c->prog, pct, done,
                total, good, good_word, rejected);
        return;
    }
    char counts[128];
    snprintf(counts, sizeof(counts), " %3u%%  %zu/%zu rows  %zu rejected", pct, done, total,
             rejected);
    size_t width = c->width > 100 ? 100 : c->width;
    size_t room = width > strlen(counts) + 12 ? width - strlen(counts) - 3 : 10;
    size_t fill = total ? room * done / total : room;
    char bar[128];
    size_t k = 0;
    bar[k++] = '[';
    for (size_t i = 0; i < room && k < sizeof(bar) - 2; i++)
        bar[k++] = i < fill ? '#' : '.';
    bar[k++] = ']';
    bar[k] = '\0';
    /* \r and a clear-to-end-of-line: the bar redraws itself in place. */
    fprintf(stderr, "\r%s%s\033[K", bar, counts);
    fflush(stderr);
    *drawn = true;
}

void cli_progress_end(bool *drawn)
{
    if (*drawn)
        fputc('\n', stderr);
    *drawn = false;
}

int cli_post_chunk(cli *c, const char *target, const char *ctype, const drv_buf *body,
                   int timeout_ms, cli_http_resp *r, char *why, size_t why_cap)
{
    int saved = c->http.timeout_ms;
    c->http.timeout_ms = timeout_ms;
    int st = CLI_SENT_NO_ANSWER;
    for (int attempt = 1;; attempt++) {
        if (cli_http_request(&c->http, "POST", target, ctype, body->data, body->len, r, why,
                             why_cap))
            break;
        if (r->status >= 200 && r->status < 300) {
            st = CLI_SENT_OK;
            break;
        }
        if ((r->status == 429 || r->status == 503) && attempt < CLI_POST_ATTEMPTS) {
            int wait = r->retry_after > 0 ? r->retry_after : 1;
            cli_http_resp_free(r);
            sleep((unsigned)(wait > 30 ? 30 : wait));
            continue;
        }
        st = r->status == 413 ? CLI_SENT_TOO_LARGE : CLI_SENT_REFUSED;
        break;
    }
    c->http.timeout_ms = saved;
    return st;
}
