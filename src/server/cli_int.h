/*
 * cli_int.h — what the administrator subcommands share inside src/server:
 * the table formatter (cli_table.c), the bulk-import reader and chunker
 * (cli_import.c) and the command context (cli.c).  Private to those files
 * and their unit test (cli_test.c).
 */
#ifndef DRV_SERVER_CLI_INT_H
#define DRV_SERVER_CLI_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/err.h"
#include "server/cli_http.h"

/* -- tables (cli_table.c) ------------------------------------------------------------------------
 *
 * Aligned columns under a header row, two spaces apart, no trailing blanks.
 * When the natural widths do not fit `width` columns, the widest columns
 * give way first (never below their header or 8 columns) and cut cells end
 * with the ellipsis; columns marked `keep` give way only after all the
 * others are at their floor.  Widths count code points, so UTF-8 text lines up
 * unless it holds wide (East Asian) or combining characters.  Control
 * characters in cells are shown as '?', so a device name cannot move the
 * terminal's cursor.
 */
typedef struct cli_table {
    size_t ncols;
    const char *const *headers; /* ncols names, not copied: must outlive the table */
    char **cells;               /* nrows * ncols cleaned copies, row-major (drv_malloc) */
    size_t nrows;               /* rows added */
    size_t cap;                 /* rows cells has room for */
    unsigned keep;              /* bit c: column c is cut last (an id); 0 after init */
} cli_table;

void cli_table_init(cli_table *t, size_t ncols, const char *const *headers);
/* Append a row of ncols cells (NULL: empty); they are copied. */
drv_err cli_table_add(cli_table *t, const char *const *cells);
/* Append the table's text to out; width 0: no limit. */
drv_err cli_table_render(const cli_table *t, size_t width, const char *ellipsis, drv_buf *out);
void cli_table_free(cli_table *t);
/* Terminal columns the UTF-8 text takes (one per code point). */
size_t cli_display_width(const char *s);

/* -- bulk import sources (cli_import.c) ----------------------------------------------------------
 *
 * A CSV or JSON file of devices, read whole, cut into chunks that the
 * import endpoint takes one per request.  Rows are numbered from 1 in the
 * file: CSV data records after the header (blank lines skipped), or the
 * elements of the JSON array.
 */
typedef struct cli_record {
    size_t off;  /* first byte in the text */
    size_t len;  /* bytes, line terminator included (none for a last unterminated line) */
    size_t line; /* 1-based line of the file where it starts */
} cli_record;

typedef struct cli_source {
    bool json;         /* JSON: {"devices": [...]} or [...]; else CSV */
    const char *text;  /* CSV: the file's bytes (not owned) */
    cli_record header; /* CSV: the header record */
    cli_record *recs;  /* CSV: the data records (drv_malloc) */
    size_t nrecs;      /* CSV: how many */
    json_t *devices;   /* JSON: the array of devices (a reference held) */
} cli_source;

/*
 * Read a source from text[0, len) (kept, not copied, for CSV).  DRV_INVAL
 * with a sentence in why for an unusable file: not JSON, no "devices"
 * array, a CSV quote never closed, no header, no rows.
 */
drv_err cli_source_parse(cli_source *s, const char *text, size_t len, bool json, char *why,
                         size_t why_cap);
size_t cli_source_rows(const cli_source *s);
/*
 * The request body for rows [first, first + n) (0-based first): n is as
 * many as fit both max_rows and max_bytes, and at least one.  CSV: the
 * header and the records as they are in the file; JSON: {"devices": [...]}.
 * *rows gets n.  The body is appended to out.
 */
drv_err cli_source_chunk(const cli_source *s, size_t first, size_t max_rows, size_t max_bytes,
                         drv_buf *out, size_t *rows);
/* The file line where 1-based row starts; 0 when unknown (JSON). */
size_t cli_source_line(const cli_source *s, size_t row);
void cli_source_free(cli_source *s);

/* -- the command context (cli.c) ---------------------------------------------------------------- */

#define CLI_MAX_TAGS 64

/* Every flag the subcommands take; each command accepts a subset. */
typedef struct cli_opts {
    const char *url;                /* --url, $DROVER_URL, http://127.0.0.1:8080 */
    const char *token;              /* --token, $DROVER_TOKEN; never printed */
    const char *cacert;             /* --cacert, $DROVER_CACERT */
    bool json;                      /* --json: the API's JSON on stdout */
    long limit;                     /* --limit: stop a list after this many items; 0: all */
    const char *tenant;             /* --tenant */
    const char *name;               /* --name */
    const char *role;               /* --role */
    const char *expires;            /* --expires (RFC 3339) */
    const char *secret;             /* --secret */
    const char *status;             /* --status */
    long quota_devices;             /* --quota-devices; -1 when not given */
    const char *tags[CLI_MAX_TAGS]; /* --tag k=v, in order */
    size_t ntags;
    bool purge;         /* --purge */
    bool dry_run;       /* --dry-run */
    long chunk;         /* --chunk: rows per import request */
    long chunk_rows;    /* --chunk-rows: rows per telemetry import request */
    long page_size;     /* --page-size: items per list request; 0: the API's most */
    const char *pos[2]; /* positional arguments (an id, a file) */
    size_t npos;
} cli_opts;

typedef struct cli {
    cli_opts o;
    cli_http http;
    const char *prog;     /* "drover device import", for messages */
    size_t width;         /* table width: the terminal's, $COLUMNS, or 80 */
    const char *ellipsis; /* "…" in a UTF-8 locale, "..." otherwise */
    bool stderr_tty;      /* progress bars only on a terminal */
} cli;

/*
 * One API call.  Returns 0 with *r filled (a 2xx answer; the caller frees
 * it), or 1 after printing why to stderr: the problem's title and detail,
 * or what went wrong on the way.
 */
int cli_call(cli *c, const char *method, const char *target, const char *ctype, const void *body,
             size_t len, cli_http_resp *r);
/* Print a non-2xx answer as an error ("drover device get: Not Found: no such device"). */
void cli_print_error(cli *c, const cli_http_resp *r);

/* -- progress of bulk commands (cli_table.c) ------------------------------------------------
 * On stderr (so --json output on stdout stays clean): a bar redrawn in place
 * on a terminal, else one line per update "PROG:  42% (n/total rows, g
 * GOOD_WORD, r rejected)".  *drawn tracks whether a bar is on the last line;
 * cli_progress_end ends that line. */
void cli_progress_show(const cli *c, size_t done, size_t total, size_t good, const char *good_word,
                       size_t rejected, bool *drawn);
void cli_progress_end(bool *drawn);

/* What became of one chunk of a bulk upload (cli_post_chunk). */
enum {
    CLI_SENT_OK,        /* 2xx: the answer is in *r */
    CLI_SENT_REFUSED,   /* another status: the answer (a problem) is in *r */
    CLI_SENT_TOO_LARGE, /* 413: send fewer rows */
    CLI_SENT_NO_ANSWER, /* the connection failed (why says how): the rows' fate is unknown */
};
#define CLI_POST_ATTEMPTS 5

/* POST one chunk of a bulk upload (body of type ctype), waiting up to
 * timeout_ms for the answer and retrying a 429 or 503 after its Retry-After
 * (at most 30 s, CLI_POST_ATTEMPTS tries).  Returns a CLI_SENT_* value. */
int cli_post_chunk(cli *c, const char *target, const char *ctype, const drv_buf *body,
                   int timeout_ms, cli_http_resp *r, char *why, size_t why_cap);
/* Append s to out percent-encoded for a path segment or a query value. */
drv_err cli_urlencode(drv_buf *out, const char *s);

/* `drover device import` (cli_import.c). */
int cli_device_import(cli *c);
/* `drover telemetry import` (cli_telemetry.c). */
int cli_telemetry_import(cli *c);

#endif
