/*
 * cli_test.c — unit tests for the administrator subcommands' building
 * blocks: the table formatter (cli_table.c: alignment, cutting with an
 * ellipsis, UTF-8 widths, control characters, width floors), the bulk
 * import chunker (cli_import.c: CSV records with quoted line breaks, blank
 * lines, CRLF, a byte order mark, the header in every chunk, byte limits,
 * row-to-line numbers; JSON slices), and the HTTP client's pure parts
 * (cli_http.c: base URLs, answers framed by Content-Length, chunked coding
 * or the end of the connection, fed byte by byte; percent-encoding), and
 * the telemetry import's record boundaries (cli_telemetry.c).
 *
 * The sources of src/server are linked only into the drover binary, so the
 * files under test are compiled in here (as bench_hist_test.c does).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/cli.c"
#include "server/cli_http.c"
#include "server/cli_import.c"
#include "server/cli_table.c"
#include "server/cli_telemetry.c"

#include "core/test.h"

/* -- tables ----------------------------------------------------------------------------------- */

/* Render a table of up to 4 rows of 3 columns into buf (NUL-terminated). */
static void render3(const char *const rows[][3], size_t nrows, size_t width, const char *ell,
                    char *buf, size_t cap)
{
    static const char *const headers[] = {"ID", "NAME", "TAGS"};
    cli_table t;
    cli_table_init(&t, 3, headers);
    for (size_t i = 0; i < nrows; i++)
        CHECK(cli_table_add(&t, rows[i]) == DRV_OK);
    drv_buf out;
    drv_buf_init(&out, 1 << 20);
    CHECK(cli_table_render(&t, width, ell, &out) == DRV_OK);
    snprintf(buf, cap, "%.*s", (int)out.len, out.data ? (const char *)out.data : "");
    drv_buf_free(&out);
    cli_table_free(&t);
}

/* The widest line of text, in columns. */
static size_t widest_line(const char *text)
{
    size_t best = 0;
    while (*text) {
        size_t n = strcspn(text, "\n");
        char line[1024];
        snprintf(line, sizeof(line), "%.*s", (int)n, text);
        size_t w = cli_display_width(line);
        if (w > best)
            best = w;
        text += n + (text[n] == '\n');
    }
    return best;
}

static bool has_trailing_blank(const char *text)
{
    return strstr(text, " \n") != NULL;
}

static void test_table(void)
{
    static const struct {
        const char *name;
        size_t width;
        const char *ell;
        size_t nrows;
        const char *rows[3][3];
        const char *want;
    } cases[] = {
        {"aligned, natural widths",
         80,
         "...",
         2,
         {{"a", "Alpha", "x=1"}, {"bbb", "B", "y=2"}},
         "ID   NAME   TAGS\n"
         "a    Alpha  x=1\n"
         "bbb  B      y=2\n"},
        {"no rows: the header alone", 80, "...", 0, {{0}}, "ID  NAME  TAGS\n"},
        {"empty and NULL cells, no trailing blanks",
         80,
         "...",
         2,
         {{"a", "", NULL}, {"b", NULL, "t"}},
         "ID  NAME  TAGS\n"
         "a\n"
         "b         t\n"},
        {"the widest column gives way, cut with the ellipsis",
         30,
         "...",
         1,
         {{"pump-0001", "Pump", "site=berlin,floor=3,room=12,rack=7"}},
         "ID         NAME  TAGS\n"
         "pump-0001  Pump  site=berli...\n"},
        {"one-column ellipsis in UTF-8",
         30,
         "\xE2\x80\xA6",
         1,
         {{"pump-0001", "Pump", "site=berlin,floor=3,room=12,rack=7"}},
         "ID         NAME  TAGS\n"
         "pump-0001  Pump  site=berlin,\xE2\x80\xA6\n"},
        {"UTF-8 text counts one column per character",
         80,
         "...",
         2,
         {{"z", "Z\xC3\xBCrich", "-"}, {"bern", "Bern", "-"}},
         "ID    NAME    TAGS\n"
         "z     Z\xC3\xBCrich  -\n"
         "bern  Bern    -\n"},
        {"control characters never reach the terminal",
         80,
         "...",
         1,
         {{"a\x1b[2J", "line\nbreak", "t\tab"}},
         "ID     NAME        TAGS\n"
         "a?[2J  line?break  t?ab\n"},
        {"width 0: no limit",
         0,
         "...",
         1,
         {{"a", "b", "a-very-long-tag-value-that-would-not-fit-anywhere-near-twenty"}},
         "ID  NAME  TAGS\n"
         "a   b     a-very-long-tag-value-that-would-not-fit-anywhere-near-twenty\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char got[2048];
        render3(cases[i].rows, cases[i].nrows, cases[i].width, cases[i].ell, got, sizeof(got));
        CHECK_CASE(!strcmp(got, cases[i].want), cases[i].name);
        if (strcmp(got, cases[i].want))
            fprintf(stderr, "got:\n%swant:\n%s", got, cases[i].want);
    }

    /* Many long columns on 80: every line fits, ids keep at least 8 columns and nothing
     * ends in blanks. */
    const char *long_rows[][3] = {
        {"device-with-a-long-identifier-0001", "A rather long human readable name for it",
         "site=berlin,building=north,floor=3,room=12"},
        {"d2", "short", "k=v"},
    };
    char got[4096];
    render3(long_rows, 2, 80, "...", got, sizeof(got));
    CHECK(widest_line(got) <= 80);
    CHECK(strstr(got, "device-with-a-long-") != NULL); /* the id column kept its share */
    CHECK(strstr(got, "...") != NULL);
    CHECK(!has_trailing_blank(got));
    CHECK(strstr(got, "\nd2 ") != NULL);

    /* Too narrow for the floors: columns stop shrinking at max(header, 8). */
    render3(long_rows, 2, 10, "...", got, sizeof(got));
    CHECK(strncmp(got, "ID", 2) == 0);
    CHECK(strstr(got, "devic...  A rat...  site=...") != NULL);

    /* A kept column (the id) is cut only after every other one is at its floor. */
    static const char *const headers[] = {"ID", "NAME", "TAGS"};
    for (size_t width = 70; width >= 40; width -= 30) {
        cli_table t;
        cli_table_init(&t, 3, headers);
        t.keep = 1u;
        for (size_t i = 0; i < 2; i++)
            CHECK(cli_table_add(&t, long_rows[i]) == DRV_OK);
        drv_buf out;
        drv_buf_init(&out, 1 << 20);
        CHECK(cli_table_render(&t, width, "...", &out) == DRV_OK);
        snprintf(got, sizeof(got), "%.*s", (int)out.len, (const char *)out.data);
        drv_buf_free(&out);
        cli_table_free(&t);
        CHECK_CASE(widest_line(got) <= width, width == 70 ? "kept, 70" : "kept, 40");
        if (width == 70) /* the whole id (34), the other two share the rest: 16 each */
            CHECK(strstr(got, "device-with-a-long-identifier-0001  A rather long...  "
                              "site=berlin,b...\n") != NULL);
        else /* 40: the others at their floor (8 + 2 + 8 + 2), the id gets the rest, 20 */
            CHECK(strstr(got, "device-with-a-lon...  A rat...  site=...") != NULL);
    }

    CHECK(cli_display_width("") == 0);
    CHECK(cli_display_width("abc") == 3);
    CHECK(cli_display_width("\xE2\x80\xA6") == 1);
    CHECK(cli_display_width("Z\xC3\xBCrich") == 6);
}

/* -- the import chunker ----------------------------------------------------------------------- */

static char *chunk_text(const cli_source *s, size_t first, size_t max_rows, size_t max_bytes,
                        size_t *rows)
{
    drv_buf b;
    drv_buf_init(&b, 1 << 24);
    drv_err e = cli_source_chunk(s, first, max_rows, max_bytes, &b, rows);
    char *out = NULL;
    if (e == DRV_OK) {
        out = drv_strndup(b.data ? (const char *)b.data : "", b.len);
    }
    drv_buf_free(&b);
    return out;
}

static void test_csv_chunks(void)
{
    /* Line:       1        2          3                 4       5      6     7 */
    const char *f =
        "\xEF\xBB\xBFid,name\r\nd1,One\r\nd2,\"Two\r\nlines\"\r\n\r\nd3,\"a \"\"q\"\"\"\n"
        "d4,Four\nd5,Five";
    cli_source s;
    char why[256];
    CHECK(cli_source_parse(&s, f, strlen(f), false, why, sizeof(why)) == DRV_OK);
    CHECK(cli_source_rows(&s) == 5);
    /* Rows to lines: the quoted line break makes d3 start on line 5, past the blank line. */
    static const size_t lines[] = {0, 2, 3, 6, 7, 8};
    for (size_t r = 1; r <= 5; r++)
        CHECK_CASE(cli_source_line(&s, r) == lines[r], "row to line");
    CHECK(cli_source_line(&s, 0) == 0 && cli_source_line(&s, 6) == 0);

    size_t rows;
    char *c = chunk_text(&s, 0, 2, 1 << 20, &rows);
    CHECK(rows == 2);
    /* The header in every chunk (without the BOM); records exactly as in the file. */
    CHECK(c && !strcmp(c, "id,name\r\nd1,One\r\nd2,\"Two\r\nlines\"\r\n"));
    drv_free(c);
    c = chunk_text(&s, 2, 2, 1 << 20, &rows);
    CHECK(rows == 2);
    CHECK(c && !strcmp(c, "id,name\r\nd3,\"a \"\"q\"\"\"\nd4,Four\n"));
    drv_free(c);
    c = chunk_text(&s, 4, 2, 1 << 20, &rows);
    CHECK(rows == 1);
    CHECK(c && !strcmp(c, "id,name\r\nd5,Five\n")); /* the last line gets its line feed */
    drv_free(c);
    c = chunk_text(&s, 5, 2, 1 << 20, &rows);
    CHECK(c == NULL && rows == 0); /* past the end */

    /* A byte limit cuts a chunk short, but one row always goes. */
    c = chunk_text(&s, 0, 100, 20, &rows);
    CHECK(rows == 1 && c && !strcmp(c, "id,name\r\nd1,One\r\n"));
    drv_free(c);
    c = chunk_text(&s, 1, 100, 1, &rows);
    CHECK(rows == 1);
    drv_free(c);
    /* Covering the file in chunks of 2 visits every row once. */
    size_t first = 0, n_chunks = 0;
    while (first < cli_source_rows(&s)) {
        c = chunk_text(&s, first, 2, 1 << 20, &rows);
        CHECK(c != NULL && rows > 0);
        drv_free(c);
        first += rows ? rows : 1;
        n_chunks++;
    }
    CHECK(first == 5 && n_chunks == 3);
    cli_source_free(&s);

    static const struct {
        const char *text;
        const char *why; /* a part of the reason */
    } bad[] = {
        {"id,name\nd1,\"never closed\nd2,x\n", "line 2: a quoted field is never closed"},
        {"id,name\n", "no devices"},
        {"id,name\n\n\r\n", "no devices"},
        {"", "empty"},
        {"\n\n", "empty"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = '\0';
        CHECK_CASE(cli_source_parse(&s, bad[i].text, strlen(bad[i].text), false, why,
                                    sizeof(why)) == DRV_INVAL,
                   bad[i].why);
        CHECK_CASE(strstr(why, bad[i].why) != NULL, bad[i].why);
    }

    /* 500 rows in chunks of 100: 5 chunks, each header + 100 records. */
    drv_buf big;
    drv_buf_init(&big, 1 << 20);
    drv_buf_append(&big, "id,name\n", 8);
    for (int i = 1; i <= 500; i++) {
        char line[64];
        int n = snprintf(line, sizeof(line), "dev-%03d,Device %d\n", i, i);
        drv_buf_append(&big, line, (size_t)n);
    }
    CHECK(cli_source_parse(&s, (const char *)big.data, big.len, false, why, sizeof(why)) == DRV_OK);
    CHECK(cli_source_rows(&s) == 500);
    CHECK(cli_source_line(&s, 500) == 501);
    c = chunk_text(&s, 400, 100, 1 << 20, &rows);
    CHECK(rows == 100);
    CHECK(c && !strncmp(c, "id,name\ndev-401,", 16));
    size_t nl = 0;
    for (const char *p = c; p && *p; p++)
        nl += *p == '\n';
    CHECK(nl == 101);
    drv_free(c);
    cli_source_free(&s);
    drv_buf_free(&big);
}

static void test_json_chunks(void)
{
    const char *f = "{\"devices\": [{\"id\": \"a\"}, {\"id\": \"b\", \"tags\": {\"k\": \"v\"}}, "
                    "{\"id\": \"c\"}]}";
    cli_source s;
    char why[256];
    CHECK(cli_source_parse(&s, f, strlen(f), true, why, sizeof(why)) == DRV_OK);
    CHECK(cli_source_rows(&s) == 3);
    CHECK(cli_source_line(&s, 1) == 0); /* no line numbers for JSON */
    size_t rows;
    char *c = chunk_text(&s, 0, 2, 1 << 20, &rows);
    CHECK(rows == 2 && c &&
          !strcmp(c, "{\"devices\":[{\"id\":\"a\"},{\"id\":\"b\",\"tags\":{\"k\":\"v\"}}]}"));
    drv_free(c);
    c = chunk_text(&s, 2, 2, 1 << 20, &rows);
    CHECK(rows == 1 && c && !strcmp(c, "{\"devices\":[{\"id\":\"c\"}]}"));
    drv_free(c);
    /* Over the byte limit: halved until it fits, one device at least. */
    c = chunk_text(&s, 0, 3, 30, &rows);
    CHECK(rows == 1 && c && !strcmp(c, "{\"devices\":[{\"id\":\"a\"}]}"));
    drv_free(c);
    cli_source_free(&s);

    /* A bare list works too. */
    const char *list = "[{\"id\": \"x\"}, {\"id\": \"y\"}]";
    CHECK(cli_source_parse(&s, list, strlen(list), true, why, sizeof(why)) == DRV_OK);
    CHECK(cli_source_rows(&s) == 2);
    cli_source_free(&s);

    static const char *const bad[] = {"{\"devices\": 3}", "{\"things\": []}", "not json",
                                      "{\"devices\": []}", "\"text\""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_CASE(cli_source_parse(&s, bad[i], strlen(bad[i]), true, why, sizeof(why)) ==
                       DRV_INVAL,
                   bad[i]);
}

static void test_reason_renumbering(void)
{
    static const struct {
        const char *in, *want;
        size_t first;
    } cases[] = {
        {"the id \"a\" is also on row 5", "the id \"a\" is also on row 205", 200},
        {"the id \"a\" is also on row 5", "the id \"a\" is also on row 5", 0},
        {"the id \"a\" is also on row 5x", "the id \"a\" is also on row 5x", 200},
        {"the id \"a\" is also on row ", "the id \"a\" is also on row ", 200},
        {"\"id\" must be 1 to 128 characters", "\"id\" must be 1 to 128 characters", 200},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *j = renumber_reason(cases[i].in, cases[i].first);
        CHECK_CASE(j && !strcmp(json_string_value(j), cases[i].want), cases[i].in);
        json_decref(j);
    }
}

/* -- the HTTP client's parser and URLs -------------------------------------------------------- */

typedef struct answer_case {
    const char *name;
    const char *raw;
    bool head;
    drv_err want; /* at eof, with every byte */
    int status;
    const char *body; /* decoded */
    bool needs_eof;   /* complete only once the connection ends */
} answer_case;

static void test_answers(void)
{
    static const answer_case cases[] = {
        {"content-length",
         "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}",
         false, DRV_OK, 200, "{\"a\":1}", false},
        {"chunked with extensions and trailers",
         "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nWiki\r\n5\r\npedia\r\n"
         "0\r\nX-Trailer: 1\r\n\r\n",
         false, DRV_OK, 201, "Wikipedia", false},
        {"upper-case hex chunk sizes, bare LF lines",
         "HTTP/1.1 200 OK\nTransfer-Encoding: gzip, chunked\n\nA\n0123456789\n0\n\n", false, DRV_OK,
         200, "0123456789", false},
        {"to the end of the connection", "HTTP/1.0 200 OK\r\n\r\nall of it", false, DRV_OK, 200,
         "all of it", true},
        {"interim 100 Continue skipped",
         "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", false, DRV_OK, 204, "",
         false},
        {"HEAD: no body despite Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
         true, DRV_OK, 200, "", false},
        {"304 has no body", "HTTP/1.1 304 Not Modified\r\nETag: \"3\"\r\n\r\n", false, DRV_OK, 304,
         "", false},
        {"problem answer",
         "HTTP/1.1 404 Not Found\r\ncontent-type: application/problem+json\r\ncontent-length: "
         "2\r\n\r\n{}",
         false, DRV_OK, 404, "{}", false},
        {"truncated body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", false, DRV_CLOSED,
         0, NULL, false},
        {"truncated chunked body", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
         false, DRV_CLOSED, 0, NULL, false},
        {"truncated head", "HTTP/1.1 200 OK\r\nContent-Le", false, DRV_CLOSED, 0, NULL, false},
        {"nothing at all", "", false, DRV_CLOSED, 0, NULL, false},
        {"not HTTP", "SSH-2.0-OpenSSH_9.2\r\n", false, DRV_PROTOCOL, 0, NULL, false},
        {"bad status", "HTTP/1.1 2000 OK\r\n\r\n", false, DRV_PROTOCOL, 0, NULL, false},
        {"two different lengths",
         "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", false, DRV_PROTOCOL,
         0, NULL, false},
        {"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false,
         DRV_PROTOCOL, 0, NULL, false},
        {"chunk data without its CRLF",
         "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n0\r\n\r\n", false,
         DRV_PROTOCOL, 0, NULL, false},
        {"header line without a colon", "HTTP/1.1 200 OK\r\nbroken\r\n\r\n", false, DRV_PROTOCOL, 0,
         NULL, false},
        {"over the body cap", "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", false, DRV_TOOBIG,
         0, NULL, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const answer_case *k = &cases[i];
        size_t n = strlen(k->raw);
        cli_http_resp r;
        /* Every proper prefix is incomplete (or already an error the whole also gives). */
        bool prefixes_ok = true;
        for (size_t cut = 0; cut < n; cut++) {
            drv_err e = cli_http_parse_response(k->raw, cut, false, k->head, 4096, &r);
            if (e == DRV_OK) {
                prefixes_ok = false; /* a proper prefix is never a whole answer */
                cli_http_resp_free(&r);
            } else if (e != DRV_AGAIN && e != k->want) {
                prefixes_ok = false;
            }
        }
        CHECK_CASE(prefixes_ok, k->name);
        drv_err e = cli_http_parse_response(k->raw, n, false, k->head, 4096, &r);
        CHECK_CASE(e == (k->needs_eof            ? DRV_AGAIN
                         : k->want == DRV_CLOSED ? DRV_AGAIN
                                                 : k->want),
                   k->name);
        if (e == DRV_OK)
            cli_http_resp_free(&r);
        e = cli_http_parse_response(k->raw, n, true, k->head, 4096, &r);
        CHECK_CASE(e == k->want, k->name);
        if (e == DRV_OK) {
            CHECK_CASE(r.status == k->status, k->name);
            CHECK_CASE(r.body && r.body_len == strlen(k->body) && !strcmp(r.body, k->body),
                       k->name);
            cli_http_resp_free(&r);
        }
    }

    cli_http_resp r;
    const char *a = "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Type: "
                    "application/problem+json; charset=utf-8\r\nContent-Length: 0\r\n\r\n";
    CHECK(cli_http_parse_response(a, strlen(a), false, false, 100, &r) == DRV_OK);
    CHECK(r.status == 429 && r.retry_after == 7 && r.body && r.body_len == 0);
    CHECK(cli_http_is_json(&r));
    cli_http_resp_free(&r);
    a = "HTTP/1.1 503 x\r\nRetry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\nContent-Type: "
        "text/html\r\nContent-Length: 0\r\n\r\n";
    CHECK(cli_http_parse_response(a, strlen(a), false, false, 100, &r) == DRV_OK);
    CHECK(r.retry_after == -1 && !cli_http_is_json(&r));
    cli_http_resp_free(&r);
}

static void test_urls(void)
{
    static const struct {
        const char *url;
        bool ok, tls;
        const char *host, *port, *authority, *prefix;
    } cases[] = {
        {"http://127.0.0.1:8080", true, false, "127.0.0.1", "8080", "127.0.0.1:8080", ""},
        {"https://drover.example/", true, true, "drover.example", "443", "drover.example", ""},
        {"HTTP://h/base/path//", true, false, "h", "80", "h", "/base/path"},
        {"http://[::1]:9000/x", true, false, "::1", "9000", "[::1]:9000", "/x"},
        {"http://[::1]", true, false, "::1", "80", "[::1]", ""},
        {"ftp://h", false, false, "", "", "", ""},
        {"h:8080", false, false, "", "", "", ""},
        {"http://", false, false, "", "", "", ""},
        {"http://:80", false, false, "", "", "", ""},
        {"http://h:0", false, false, "", "", "", ""},
        {"http://h:65536", false, false, "", "", "", ""},
        {"http://h:8x", false, false, "", "", "", ""},
        {"http://user@h", false, false, "", "", "", ""},
        {"http://h/?q=1", false, false, "", "", "", ""},
        {"http://h#frag", false, false, "", "", "", ""},
        {"http://[::1", false, false, "", "", "", ""},
        {"http://[::1]x", false, false, "", "", "", ""},
        {"http://h/a b", false, false, "", "", "", ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cli_url u;
        drv_err e = cli_url_parse(cases[i].url, &u);
        CHECK_CASE((e == DRV_OK) == cases[i].ok, cases[i].url);
        if (e || !cases[i].ok)
            continue;
        CHECK_CASE(u.tls == cases[i].tls, cases[i].url);
        CHECK_CASE(!strcmp(u.host, cases[i].host), cases[i].url);
        CHECK_CASE(!strcmp(u.port, cases[i].port), cases[i].url);
        CHECK_CASE(!strcmp(u.authority, cases[i].authority), cases[i].url);
        CHECK_CASE(!strcmp(u.prefix, cases[i].prefix), cases[i].url);
    }

    drv_buf b;
    drv_buf_init(&b, 1024);
    CHECK(cli_urlencode(&b, "a b/c?d=e&f%~._-Z\xC3\xBC") == DRV_OK);
    CHECK(b.len == strlen("a%20b%2Fc%3Fd%3De%26f%25~._-Z%C3%BC") &&
          !memcmp(b.data, "a%20b%2Fc%3Fd%3De%26f%25~._-Z%C3%BC", b.len));
    drv_buf_free(&b);
}

/* -- telemetry import: record boundaries ------------------------------------------------------ */

static void test_telemetry_records(void)
{
    static const struct {
        const char *text;
        size_t end, lines; /* where the first record ends, line feeds in it */
        bool blank, ok;
    } cases[] = {
        {"a,b\nc", 4, 1, false, true},
        {"a,b", 3, 0, false, true},
        {"\n", 1, 1, true, true},
        {"\r\nx", 2, 1, true, true},
        {"a,\"x\ny\",b\nz", 10, 2, false, true}, /* a quoted line break */
        {"a,\"x\"\"\n\"\n", 9, 2, false, true},  /* "" inside quotes */
        {"a,\"open\n", 0, 0, false, false},
        {"", 0, 0, true, true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *t = cases[i].text;
        size_t end = 0, lines = 0;
        bool blank = false;
        bool ok = tel_record_end(t, strlen(t), 0, &end, &lines, &blank);
        CHECK_CASE(ok == cases[i].ok && (!ok || (end == cases[i].end && lines == cases[i].lines &&
                                                 blank == cases[i].blank)),
                   t);
    }
}

int main(void)
{
    test_table();
    test_csv_chunks();
    test_json_chunks();
    test_reason_renumbering();
    test_answers();
    test_urls();
    test_telemetry_records();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
