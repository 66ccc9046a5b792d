/*
 * csv_test.c — unit tests for the RFC 4180 reader (csv.c): table-driven
 * inputs with the records they must give (or the error and line they must
 * fail with), limits, and allocation failure.
 *
 * Records are rendered as "<field><field>$" per record, so the expected
 * text shows empty fields, embedded commas and line breaks exactly.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/csv.h"
#include "core/alloc.h"

#include "core/test.h"

/* Every record of input rendered, or "!<line>:<error>" when reading fails. */
static void render(const char *input, size_t n, const api_csv_limits *lim, char *out, size_t cap)
{
    api_csv c;
    api_csv_init(&c, input, n, lim);
    size_t o = 0;
    drv_err e;
    out[0] = '\0';
    while ((e = api_csv_next(&c)) == DRV_OK) {
        for (size_t i = 0; i < api_csv_nfields(&c); i++) {
            size_t len;
            const char *f = api_csv_field(&c, i, &len);
            CHECK(strlen(f) == len);
            o += (size_t)snprintf(out + o, cap - o, "<%s>", f);
        }
        o += (size_t)snprintf(out + o, cap - o, "$");
    }
    if (e != DRV_NOTFOUND) {
        snprintf(out + o, cap - o, "!%zu:%s", c.error_line, c.error ? c.error : "?");
        /* The error sticks. */
        CHECK(api_csv_next(&c) == e);
    }
    api_csv_free(&c);
}

typedef struct csv_case {
    const char *name;
    const char *input;
    const char *want; /* rendered records; a "!" part is an error prefix to match */
} csv_case;

static const csv_case cases[] = {
    {"empty input", "", ""},
    {"only line breaks", "\n\r\n\n", ""},
    {"one field", "a", "<a>$"},
    {"one record LF", "a,b,c\n", "<a><b><c>$"},
    {"one record CRLF", "a,b,c\r\n", "<a><b><c>$"},
    {"no final line break", "a,b\nc,d", "<a><b>$<c><d>$"},
    {"mixed line breaks", "a\r\nb\nc\r\n", "<a>$<b>$<c>$"},
    {"empty fields", ",,\n", "<><><>$"},
    {"trailing comma at the end", "a,", "<a><>$"},
    {"trailing comma then LF", "a,\n", "<a><>$"},
    {"blank lines skipped", "a\n\n\nb\r\n\r\nc", "<a>$<b>$<c>$"},
    {"quoted", "\"a\",\"b c\"\n", "<a><b c>$"},
    {"quoted comma", "\"a,b\",c", "<a,b><c>$"},
    {"quoted line breaks", "\"a\nb\",\"c\r\nd\"\nx", "<a\nb><c\r\nd>$<x>$"},
    {"doubled quotes", "\"say \"\"hi\"\"\",\"\"\"\"", "<say \"hi\"><\">$"},
    {"empty quoted", "\"\",\"\"\r\n", "<><>$"},
    {"quoted then CRLF", "\"a\"\r\n\"b\"", "<a>$<b>$"},
    {"spaces kept", " a , b ", "< a >< b >$"},
    {"BOM skipped", "\xEF\xBB\xBFid,name\n1,x", "<id><name>$<1><x>$"},
    {"BOM only at the start", "a\n\xEF\xBB\xBF", "<a>$<\xEF\xBB\xBF>$"},
    {"UTF-8 kept", "Zürich,東京", "<Zürich><東京>$"},
    {"ragged records", "a,b\nc\nd,e,f", "<a><b>$<c>$<d><e><f>$"},
    {"unterminated quote", "a\n\"b,c\nd", "<a>$!2:a quoted field is not closed"},
    {"quote in unquoted field", "ab\"c\"", "!1:a quote inside an unquoted field (quote the field)"},
    {"text after closing quote", "\"a\"b,c", "!1:text after the closing quote of a field"},
    {"space after closing quote", "x\n\"a\" ,c", "<x>$!2:text after the closing quote of a field"},
    {"bare CR", "a\rb", "!1:a carriage return without a line feed"},
    {"bare CR after quote", "\"a\"\rb", "!1:text after the closing quote of a field"},
    {"line counted inside quotes", "\"a\n\nb\"\nc\"",
     "<a\n\nb>$!4:a quote inside an unquoted field (quote the field)"},
};

static void test_cases(void)
{
    char out[512];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const csv_case *t = &cases[i];
        render(t->input, strlen(t->input), NULL, out, sizeof(out));
        bool ok = strcmp(out, t->want) == 0;
        if (!ok)
            fprintf(stderr, "case %s: got %s want %s\n", t->name, out, t->want);
        CHECK_CASE(ok, t->name);
    }
}

static void test_nul(void)
{
    char out[128];
    static const char unq[] = "a,b\0c\n";
    render(unq, sizeof(unq) - 1, NULL, out, sizeof(out));
    CHECK(strcmp(out, "!1:a NUL byte in the input") == 0);
    static const char quo[] = "x\n\"b\0c\"";
    render(quo, sizeof(quo) - 1, NULL, out, sizeof(out));
    CHECK(strcmp(out, "<x>$!2:a NUL byte in the input") == 0);
}

static void test_limits(void)
{
    char out[256];
    api_csv_limits lim = {.max_field = 4, .max_fields = 3};
    render("abcd,\"ab\"\"c\",x\n", 15, &lim, out, sizeof(out));
    CHECK(strcmp(out, "<abcd><ab\"c><x>$") == 0);
    render("abcde", 5, &lim, out, sizeof(out));
    CHECK(strcmp(out, "!1:a field is longer than the limit") == 0);
    render("a\n\"ab\"\"cd\"", 10, &lim, out, sizeof(out));
    CHECK(strcmp(out, "<a>$!2:a field is longer than the limit") == 0);
    render("a,b,c\nd,e,f,g", 13, &lim, out, sizeof(out));
    CHECK(strcmp(out, "<a><b><c>$!2:a record has too many fields") == 0);
    render("a,b,", 4, &lim, out, sizeof(out));
    CHECK(strcmp(out, "<a><b><>$") == 0);
    render("a,b,c,", 6, &lim, out, sizeof(out));
    CHECK(strcmp(out, "!1:a record has too many fields") == 0);

    /* Many records reuse the buffers; the input is read exactly to its end. */
    size_t n = 20000;
    char *big = drv_malloc(n);
    CHECK(big != NULL);
    if (!big)
        return;
    for (size_t i = 0; i < n; i += 4)
        memcpy(big + i, "x,y\n", 4);
    api_csv c;
    api_csv_init(&c, big, n, NULL);
    size_t records = 0;
    drv_err e;
    while ((e = api_csv_next(&c)) == DRV_OK)
        records += api_csv_nfields(&c) == 2;
    CHECK(e == DRV_NOTFOUND && records == n / 4);
    CHECK(c.line == n / 4 + 1);
    api_csv_free(&c);
    drv_free(big);
}

static void test_alloc_failure(void)
{
    /* Every allocation the reader makes may fail; it answers DRV_NOMEM and stays safe. */
    static const char in[] = "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q,r\n1,2\n";
    for (uint64_t nth = 1; nth <= 4; nth++) {
        api_csv c;
        api_csv_init(&c, in, sizeof(in) - 1, NULL);
        drv_mem_fail_at(nth);
        drv_err e;
        while ((e = api_csv_next(&c)) == DRV_OK)
            ;
        drv_mem_fail_at(0);
        CHECK(e == DRV_NOTFOUND || e == DRV_NOMEM);
        api_csv_free(&c);
    }
}

int main(void)
{
    test_cases();
    test_nul();
    test_limits();
    test_alloc_failure();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
