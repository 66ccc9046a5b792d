/*
 * csv.h — an RFC 4180 CSV reader over a buffer in memory, for bulk device
 * imports (h_device_imports.c).
 *
 * What it reads: records separated by CRLF or LF; fields separated by
 * commas; a field may be quoted ("..."), and a quoted field may hold commas,
 * line breaks and doubled quotes ("" for one "); a UTF-8 byte order mark at
 * the very start is skipped; blank lines (nothing between two line breaks)
 * are skipped.  What it refuses, with a reason and the line: a quote inside
 * an unquoted field, text after a closing quote, an unterminated quoted
 * field, a carriage return without a line feed outside quotes, a NUL byte.
 * Every field is bounded (max_field bytes after unquoting) and so is the
 * number of fields in a record (max_fields): a hostile upload cannot make
 * it allocate more than their product.
 *
 * What it is not: a CSV dialect sniffer (the separator is always ',', the
 * quote always '"'), a UTF-8 validator (callers check text they keep), or
 * a streaming reader (the whole input is in memory, as the HTTP server
 * gives it).
 *
 * Use:
 *     api_csv c;
 *     api_csv_init(&c, data, n, NULL);
 *     while ((e = api_csv_next(&c)) == DRV_OK)
 *         for (size_t i = 0; i < api_csv_nfields(&c); i++)
 *             use(api_csv_field(&c, i, &len));
 *     // e == DRV_NOTFOUND at the end; otherwise c.error says why, at c.error_line
 *     api_csv_free(&c);
 */
#ifndef DRV_API_CSV_H
#define DRV_API_CSV_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"

#define API_CSV_MAX_FIELD 4096
#define API_CSV_MAX_FIELDS 1024

typedef struct api_csv_limits {
    size_t max_field;  /* bytes of one field after unquoting (0: API_CSV_MAX_FIELD) */
    size_t max_fields; /* fields in one record (0: API_CSV_MAX_FIELDS) */
} api_csv_limits;

typedef struct api_csv {
    const char *p;      /* next byte to read */
    const char *end;    /* end of the input */
    api_csv_limits lim; /* with the defaults filled in */
    size_t line;        /* physical line (1-based) of the next byte */
    size_t record_line; /* line on which the current record starts */
    drv_buf text;       /* the current record's fields, unquoted, each NUL-terminated */
    uint32_t *start;    /* offset of each field in text (drv_malloc'd, up to max_fields) */
    size_t nfields;     /* fields in the current record */
    size_t cap;         /* entries allocated in start */
    drv_err failed;     /* DRV_OK, or the error every later api_csv_next repeats */
    const char *error;  /* why the last api_csv_next failed (static text), else NULL */
    size_t error_line;  /* the line it failed on */
} api_csv;

/* Read n bytes at data (borrowed: they must outlive the reader); lim may be NULL. */
void api_csv_init(api_csv *c, const char *data, size_t n, const api_csv_limits *lim);
/* Release what the reader allocated; the fields it gave are invalid afterwards. */
void api_csv_free(api_csv *c);

/*
 * Read the next record.  DRV_OK: the record's fields are available until the
 * next call; DRV_NOTFOUND: the input is used up; DRV_MALFORMED: not CSV
 * (c->error, c->error_line); DRV_TOOBIG: a field or the record is over a
 * limit (c->error too); DRV_NOMEM.  After an error every further call
 * answers the same error.
 */
drv_err api_csv_next(api_csv *c);

/* Fields in the current record (at least 1 after DRV_OK). */
static inline size_t api_csv_nfields(const api_csv *c)
{
    return c->nfields;
}
/* Field i (< api_csv_nfields) as a NUL-terminated string; *len (may be NULL)
 * gets its length.  Fields never contain a NUL byte. */
const char *api_csv_field(const api_csv *c, size_t i, size_t *len);

#endif
