/*
 * fuzz_csv.c — libFuzzer harness for the RFC 4180 reader (src/api/csv.c) that
 * bulk device imports parse uploads with.
 *
 * Input: one byte choosing the limits (small ones reach the limit paths),
 * then the CSV text, copied into a heap block of its exact size so a read
 * past it is an ASan report.  Checks: every record has 1..max_fields fields,
 * each at most max_field bytes and free of NUL; the reader stops (at most
 * one record per input byte, plus one); a failure names a line within the
 * input and repeats on the next call.  Then the records read are written
 * back out with every field quoted and read again: they must come back
 * identical (and, when the first read reached the end cleanly, the second
 * one must too).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/csv.h"
#include "core/buf.h"

#include "fuzz.h"

/* Append the current record, every field quoted, to out. */
static void write_record(const api_csv *c, drv_buf *out)
{
    for (size_t i = 0; i < api_csv_nfields(c); i++) {
        size_t len;
        const char *f = api_csv_field(c, i, &len);
        FUZZ_ASSERT(drv_buf_append(out, i ? ",\"" : "\"", i ? 2 : 1) == DRV_OK);
        for (size_t k = 0; k < len; k++)
            FUZZ_ASSERT(drv_buf_append(out, f + k, 1) == DRV_OK &&
                        (f[k] != '"' || drv_buf_append(out, "\"", 1) == DRV_OK));
        FUZZ_ASSERT(drv_buf_append(out, "\"", 1) == DRV_OK);
    }
    FUZZ_ASSERT(drv_buf_append(out, "\r\n", 2) == DRV_OK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    api_csv_limits lim = {0};
    if (data[0] & 1) {
        lim.max_field = 1 + (data[0] >> 1) % 16;
        lim.max_fields = 1 + (data[0] >> 5);
    }
    size_t n = size - 1;
    char *in = malloc(n ? n : 1);
    FUZZ_ASSERT(in != NULL);
    memcpy(in, data + 1, n);

    api_csv c;
    api_csv_init(&c, in, n, &lim);
    drv_buf out, fields;
    drv_buf_init(&out, 64u << 20);
    drv_buf_init(&fields, 64u << 20); /* every field, NUL-separated, for the comparison */
    size_t records = 0;
    drv_err e;
    while ((e = api_csv_next(&c)) == DRV_OK) {
        records++;
        FUZZ_ASSERT(records <= n + 1);
        size_t nf = api_csv_nfields(&c);
        FUZZ_ASSERT(nf >= 1 && nf <= c.lim.max_fields);
        for (size_t i = 0; i < nf; i++) {
            size_t len;
            const char *f = api_csv_field(&c, i, &len);
            FUZZ_ASSERT(len <= c.lim.max_field && strlen(f) == len);
            FUZZ_ASSERT(drv_buf_append(&fields, f, len + 1) == DRV_OK);
        }
        FUZZ_ASSERT(drv_buf_append(&fields, "\n", 1) == DRV_OK); /* ends a record */
        write_record(&c, &out);
    }
    bool clean = e == DRV_NOTFOUND;
    if (!clean) {
        FUZZ_ASSERT(e == DRV_MALFORMED || e == DRV_TOOBIG || e == DRV_NOMEM);
        FUZZ_ASSERT(c.error != NULL && c.error_line >= 1 && c.error_line <= n + 1);
        FUZZ_ASSERT(api_csv_next(&c) == e);
    }
    api_csv_free(&c);

    /* Read back what was written: the same records, in order. */
    api_csv r;
    api_csv_init(&r, (const char *)out.data, out.len, &lim);
    size_t at = 0, back = 0;
    while ((e = api_csv_next(&r)) == DRV_OK) {
        back++;
        for (size_t i = 0; i < api_csv_nfields(&r); i++) {
            size_t len;
            const char *f = api_csv_field(&r, i, &len);
            FUZZ_ASSERT(at + len + 1 <= fields.len && memcmp(fields.data + at, f, len + 1) == 0);
            at += len + 1;
        }
        FUZZ_ASSERT(at < fields.len && fields.data[at] == '\n');
        at++;
    }
    FUZZ_ASSERT(e == DRV_NOTFOUND && back == records && at == fields.len);
    api_csv_free(&r);
    drv_buf_free(&out);
    drv_buf_free(&fields);
    free(in);
    return 0;
}
