/*
 * csv.c — the RFC 4180 reader of csv.h.
 *
 * One pass over the input, one record at a time: each field is unquoted into
 * c->text (NUL-terminated) and its offset kept in c->start, so a record costs
 * no allocation once the buffers have grown to the largest record seen.  The
 * input is never written and never read past its end.  Line numbers count
 * LF bytes, including those inside quoted fields, so an error names the line
 * an editor shows.
 */
#include "api/csv.h"

#include <string.h>

#include "core/alloc.h"

void api_csv_init(api_csv *c, const char *data, size_t n, const api_csv_limits *lim)
{
    memset(c, 0, sizeof(*c));
    if (!data) /* an empty body may come without a buffer */
        data = "", n = 0;
    c->p = data;
    c->end = data + n;
    c->line = 1;
    if (lim)
        c->lim = *lim;
    if (!c->lim.max_field)
        c->lim.max_field = API_CSV_MAX_FIELD;
    if (!c->lim.max_fields)
        c->lim.max_fields = API_CSV_MAX_FIELDS;
    /* The record's text can never exceed every field at its longest. */
    drv_buf_init(&c->text, (c->lim.max_field + 1) * c->lim.max_fields);
    /* A UTF-8 byte order mark is not part of the first field. */
    if (n >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0)
        c->p += 3;
}

void api_csv_free(api_csv *c)
{
    drv_buf_free(&c->text);
    drv_free(c->start);
    c->start = NULL;
    c->cap = c->nfields = 0;
}

const char *api_csv_field(const api_csv *c, size_t i, size_t *len)
{
    const char *s = (const char *)c->text.data + c->start[i];
    if (len)
        *len = strlen(s);
    return s;
}

static drv_err fail(api_csv *c, drv_err e, const char *why, size_t line)
{
    c->failed = e;
    c->error = why;
    c->error_line = line;
    c->nfields = 0;
    return e;
}

/* Begin a new field at the current end of c->text. */
static drv_err field_begin(api_csv *c)
{
    if (c->nfields == c->lim.max_fields)
        return fail(c, DRV_TOOBIG, "a record has too many fields", c->record_line);
    if (c->nfields == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        if (cap > c->lim.max_fields)
            cap = c->lim.max_fields;
        uint32_t *s = drv_realloc(c->start, cap * sizeof(*s));
        if (!s)
            return fail(c, DRV_NOMEM, "out of memory", c->line);
        c->start = s;
        c->cap = cap;
    }
    c->start[c->nfields++] = c->text.len;
    return DRV_OK;
}

/* Append n bytes to the current field, keeping it within max_field. */
static drv_err field_add(api_csv *c, const char *p, size_t n)
{
    size_t have = c->text.len - c->start[c->nfields - 1];
    if (have + n > c->lim.max_field)
        return fail(c, DRV_TOOBIG, "a field is longer than the limit", c->line);
    drv_err e = drv_buf_append(&c->text, p, n);
    return e == DRV_OK ? DRV_OK : fail(c, e, "out of memory", c->line);
}

static drv_err field_end(api_csv *c)
{
    drv_err e = drv_buf_append(&c->text, "", 1);
    return e == DRV_OK ? DRV_OK : fail(c, e, "out of memory", c->line);
}

/* A quoted field: c->p is just past the opening quote. */
static drv_err quoted(api_csv *c)
{
    size_t opened = c->line;
    for (;;) {
        const char *p = c->p;
        /* The run of ordinary bytes up to the next quote. */
        const char *q = memchr(p, '"', (size_t)(c->end - p));
        const char *stop = q ? q : c->end;
        if (memchr(p, '\0', (size_t)(stop - p)))
            return fail(c, DRV_MALFORMED, "a NUL byte in the input", c->line);
        for (const char *lf = p; (lf = memchr(lf, '\n', (size_t)(stop - lf))) != NULL; lf++)
            c->line++;
        drv_err e = field_add(c, p, (size_t)(stop - p));
        if (e != DRV_OK)
            return e;
        if (!q)
            return fail(c, DRV_MALFORMED, "a quoted field is not closed", opened);
        if (q + 1 < c->end && q[1] == '"') { /* "" stands for one quote */
            e = field_add(c, "\"", 1);
            if (e != DRV_OK)
                return e;
            c->p = q + 2;
            continue;
        }
        c->p = q + 1;
        if (c->p < c->end && *c->p != ',' && *c->p != '\n' &&
            !(*c->p == '\r' && c->p + 1 < c->end && c->p[1] == '\n'))
            return fail(c, DRV_MALFORMED, "text after the closing quote of a field", c->line);
        return DRV_OK;
    }
}

/* An unquoted field: up to ',', a line break or the end. */
static drv_err unquoted(api_csv *c)
{
    const char *p = c->p;
    while (p < c->end && *p != ',' && *p != '\n' && *p != '\r') {
        if (*p == '"')
            return fail(c, DRV_MALFORMED, "a quote inside an unquoted field (quote the field)",
                        c->line);
        if (*p == '\0')
            return fail(c, DRV_MALFORMED, "a NUL byte in the input", c->line);
        p++;
    }
    if (p < c->end && *p == '\r' && !(p + 1 < c->end && p[1] == '\n'))
        return fail(c, DRV_MALFORMED, "a carriage return without a line feed", c->line);
    drv_err e = field_add(c, c->p, (size_t)(p - c->p));
    c->p = p;
    return e;
}

drv_err api_csv_next(api_csv *c)
{
    if (c->failed != DRV_OK)
        return c->failed;
    c->nfields = 0;
    c->text.off = c->text.len = 0;
    /* Blank lines separate nothing. */
    for (;;) {
        if (c->p < c->end && *c->p == '\n') {
            c->p++, c->line++;
        } else if (c->end - c->p >= 2 && c->p[0] == '\r' && c->p[1] == '\n') {
            c->p += 2, c->line++;
        } else {
            break;
        }
    }
    if (c->p == c->end)
        return DRV_NOTFOUND;
    c->record_line = c->line;
    for (;;) {
        drv_err e = field_begin(c);
        if (e == DRV_OK) {
            if (*c->p == '"') {
                c->p++;
                e = quoted(c);
            } else {
                e = unquoted(c);
            }
        }
        if (e == DRV_OK)
            e = field_end(c);
        if (e != DRV_OK)
            return e;
        /* After a field: a separator, a line break or the end (checked above). */
        if (c->p == c->end)
            return DRV_OK;
        if (*c->p == ',') {
            c->p++;
            if (c->p == c->end) { /* "a," ends with an empty field */
                e = field_begin(c);
                if (e == DRV_OK)
                    e = field_end(c);
                return e;
            }
            continue;
        }
        c->p += *c->p == '\r' ? 2 : 1;
        c->line++;
        return DRV_OK;
    }
}
