/*
 * json_scan.c — the JSON tokenizer of json_scan.h.
 *
 * Why hand-written and not jansson (which the project already uses for the
 * REST API): the decoders run once per device message on the broker's
 * worker threads, and jansson allocates a tree per document (a node per
 * value, a copy per string and key, a hash table per object) only for the
 * decoder to walk it once and throw it away.  This scanner allocates
 * nothing, copies nothing and makes one pass; the decoders turn tokens
 * straight into samples, so keys and strings without escapes point into
 * the payload.
 *
 * State machine (state = what the grammar allows next):
 *
 *   VALUE ──'{'──▶ OBJECT_FIRST ──'"'key':'──▶ VALUE
 *     │              └──'}'──▶ AFTER
 *     ├──'['──▶ ARRAY_FIRST ──value──▶ AFTER, ']' ──▶ AFTER
 *     └──scalar──▶ AFTER
 *   AFTER ──','──▶ KEY (in an object) or VALUE (in an array); '}' / ']' close
 *   AFTER at depth 0 ──end of input──▶ DONE (DRV_JSON_END); anything else: error
 *   KEY ──'"'key':'──▶ VALUE
 *
 * A ',' directly followed by '}' or ']' is the "trailing comma" error.
 */
#include "pipeline/json_scan.h"

#include <string.h>

enum {
    ST_VALUE,        /* a value (the document, after ':' or after ',' in an array) */
    ST_ARRAY_FIRST,  /* a value or ']' */
    ST_OBJECT_FIRST, /* a key or '}' */
    ST_KEY,          /* a key (after ',' in an object) */
    ST_AFTER,        /* ',' or the container's end (or the end of input at depth 0) */
    ST_DONE,         /* DRV_JSON_END was returned */
    ST_ERROR,        /* DRV_JSON_ERROR was returned */
};

/* A byte that needs no attention inside a string: ASCII but controls, '"' and '\\'. */
static inline bool str_plain(uint8_t c)
{
    return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

void drv_json_init(drv_json_scan *s, const char *p, size_t n)
{
    memset(s, 0, sizeof(*s));
    if (!p)
        p = "", n = 0;
    s->p = p;
    s->end = p + n;
    s->state = ST_VALUE;
}

static drv_json_type fail(drv_json_scan *s, const char *why)
{
    s->state = ST_ERROR;
    s->why = why;
    return DRV_JSON_ERROR;
}

static void skip_ws(drv_json_scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The 4 hex digits at p (p + 4 ≤ end checked by the caller), or -1. */
static int32_t hex4(const char *p)
{
    int32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_value(p[i]);
        if (h < 0)
            return -1;
        v = v << 4 | h;
    }
    return v;
}

/*
 * Length of the well-formed UTF-8 sequence at p[0..avail) whose first byte
 * is ≥ 0x80, or 0 (Unicode Table 3-7).
 */
static size_t utf8_seq(const uint8_t *p, size_t avail)
{
    uint8_t b = p[0];
    size_t n;
    uint8_t lo = 0x80, hi = 0xBF; /* range of the second byte */
    if (b >= 0xC2 && b <= 0xDF) {
        n = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
        n = 3;
        if (b == 0xE0)
            lo = 0xA0;
        else if (b == 0xED)
            hi = 0x9F; /* no UTF-16 surrogates */
    } else if (b >= 0xF0 && b <= 0xF4) {
        n = 4;
        if (b == 0xF0)
            lo = 0x90;
        else if (b == 0xF4)
            hi = 0x8F; /* nothing above U+10FFFF */
    } else {
        return 0;
    }
    if (avail < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

bool drv_json_utf8_valid(const char *p, size_t n)
{
    const uint8_t *u = (const uint8_t *)p;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq(u + i, n - i);
        if (!k)
            return false;
        i += k;
    }
    return true;
}

/* s->p is just past the opening quote: scan to the closing one. */
static drv_json_type scan_string(drv_json_scan *s, drv_json_token *t, drv_json_type type)
{
    const char *start = s->p, *p = s->p, *end = s->end;
    bool escaped = false;
    for (;;) {
        while (p < end && str_plain((uint8_t)*p))
            p++;
        if (p == end)
            return fail(s, "unexpected end of JSON inside a string");
        uint8_t c = (uint8_t)*p;
        if (c == '"')
            break;
        if (c == '\\') {
            escaped = true;
            if (end - p < 2)
                return fail(s, "unexpected end of JSON inside a string");
            char e = p[1];
            if (e == 'u') {
                if (end - p < 6)
                    return fail(s, "unexpected end of JSON inside a string");
                int32_t u = hex4(p + 2);
                if (u < 0)
                    return fail(s, "invalid \\u escape in a string (4 hex digits needed)");
                p += 6;
                if (u >= 0xDC00 && u <= 0xDFFF)
                    return fail(s, "invalid \\u escape in a string (lone low surrogate)");
                if (u >= 0xD800 && u <= 0xDBFF) {
                    int32_t lo = (end - p >= 6 && p[0] == '\\' && p[1] == 'u') ? hex4(p + 2) : -1;
                    if (lo < 0xDC00 || lo > 0xDFFF)
                        return fail(s, "invalid \\u escape in a string (unpaired high surrogate)");
                    p += 6;
                }
                continue;
            }
            if (!strchr("\"\\/bfnrt", e) || e == '\0')
                return fail(s, "invalid escape in a string");
            p += 2;
            continue;
        }
        if (c < 0x20)
            return fail(s, "control character in a string (it must be escaped)");
        size_t k = utf8_seq((const uint8_t *)p, (size_t)(end - p));
        if (!k)
            return fail(s, "invalid UTF-8 in a string");
        p += k;
    }
    t->type = type;
    t->text = (drv_span){start, (size_t)(p - start)};
    t->escaped = escaped;
    s->p = p + 1; /* past the closing quote */
    return type;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* A byte that may not directly follow a number or a literal. */
static bool sticks(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' ||
           c == '+' || c == '-' || c == '_';
}

static drv_json_type scan_number(drv_json_scan *s, drv_json_token *t)
{
    const char *start = s->p, *p = s->p, *end = s->end;
    bool integer = true;
    if (*p == '-')
        p++;
    if (p == end || !is_digit(*p))
        return fail(s, "invalid number (a digit must follow '-')");
    if (*p == '0') {
        p++;
        if (p < end && is_digit(*p))
            return fail(s, "invalid number (leading zero)");
    } else {
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && *p == '.') {
        integer = false;
        p++;
        if (p == end || !is_digit(*p))
            return fail(s, "invalid number (a digit must follow '.')");
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        integer = false;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p == end || !is_digit(*p))
            return fail(s, "invalid number (a digit must follow the exponent)");
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && sticks(*p))
        return fail(s, "invalid number");
    t->type = DRV_JSON_NUMBER;
    t->text = (drv_span){start, (size_t)(p - start)};
    t->integer = integer;
    s->p = p;
    return DRV_JSON_NUMBER;
}

static drv_json_type scan_literal(drv_json_scan *s, drv_json_token *t)
{
    static const struct {
        const char *word;
        size_t n;
        drv_json_type type;
    } lits[] = {
        {"true", 4, DRV_JSON_TRUE}, {"false", 5, DRV_JSON_FALSE}, {"null", 4, DRV_JSON_NULL}};
    size_t avail = (size_t)(s->end - s->p);
    for (size_t i = 0; i < sizeof(lits) / sizeof(lits[0]); i++) {
        if (avail >= lits[i].n && memcmp(s->p, lits[i].word, lits[i].n) == 0 &&
            (avail == lits[i].n || !sticks(s->p[lits[i].n]))) {
            s->p += lits[i].n;
            t->type = lits[i].type;
            return lits[i].type;
        }
    }
    return fail(s, "invalid literal (true, false or null expected)");
}

/* Open a container at s->p. */
static drv_json_type open_container(drv_json_scan *s, drv_json_token *t, bool object)
{
    if (s->depth == DRV_JSON_MAX_DEPTH)
        return fail(s, "JSON nested deeper than 32 levels");
    if (object)
        s->objects |= UINT32_C(1) << s->depth;
    else
        s->objects &= ~(UINT32_C(1) << s->depth);
    s->depth++;
    s->p++;
    s->state = object ? ST_OBJECT_FIRST : ST_ARRAY_FIRST;
    t->type = object ? DRV_JSON_OBJECT : DRV_JSON_ARRAY;
    return t->type;
}

/* Close the innermost container (its byte is at s->p and matches). */
static drv_json_type close_container(drv_json_scan *s, drv_json_token *t, bool object)
{
    s->depth--;
    s->p++;
    s->state = ST_AFTER;
    t->type = object ? DRV_JSON_OBJECT_END : DRV_JSON_ARRAY_END;
    return t->type;
}

static bool in_object(const drv_json_scan *s)
{
    return s->depth > 0 && (s->objects >> (s->depth - 1) & 1);
}

drv_json_type drv_json_next(drv_json_scan *s, drv_json_token *t)
{
    t->type = DRV_JSON_ERROR;
    t->text = (drv_span){s->p, 0};
    t->escaped = t->integer = false;
    for (;;) {
        skip_ws(s);
        bool at_end = s->p == s->end;
        char c = at_end ? '\0' : *s->p;
        switch (s->state) {
        case ST_ERROR:
            return DRV_JSON_ERROR;
        case ST_DONE:
            t->type = DRV_JSON_END;
            return DRV_JSON_END;
        case ST_AFTER:
            if (s->depth == 0) {
                if (!at_end)
                    return fail(s, "unexpected data after the JSON value");
                s->state = ST_DONE;
                continue;
            }
            if (at_end)
                return fail(s, "unexpected end of JSON");
            if (c == ',') {
                s->p++;
                s->state = in_object(s) ? ST_KEY : ST_VALUE;
                skip_ws(s);
                if (s->p < s->end && (*s->p == '}' || *s->p == ']'))
                    return fail(s, "trailing comma in JSON");
                continue;
            }
            if (in_object(s)) {
                if (c == '}')
                    return close_container(s, t, true);
                return fail(s, "expected ',' or '}' after an object member");
            }
            if (c == ']')
                return close_container(s, t, false);
            return fail(s, "expected ',' or ']' after an array element");
        case ST_OBJECT_FIRST:
            if (c == '}')
                return close_container(s, t, true);
            /* fall through */
        case ST_KEY:
            if (at_end)
                return fail(s, "unexpected end of JSON");
            if (c != '"')
                return fail(s, "expected a string key in an object");
            s->p++;
            if (scan_string(s, t, DRV_JSON_KEY) == DRV_JSON_ERROR)
                return DRV_JSON_ERROR;
            skip_ws(s);
            if (s->p == s->end || *s->p != ':')
                return fail(s, "expected ':' after an object key");
            s->p++;
            s->state = ST_VALUE;
            return DRV_JSON_KEY;
        case ST_ARRAY_FIRST:
            if (c == ']')
                return close_container(s, t, false);
            /* fall through */
        case ST_VALUE:
            if (at_end)
                return fail(s, "unexpected end of JSON");
            switch (c) {
            case '{':
                return open_container(s, t, true);
            case '[':
                return open_container(s, t, false);
            case '"':
                s->p++;
                s->state = ST_AFTER;
                return scan_string(s, t, DRV_JSON_STRING);
            case 't':
            case 'f':
            case 'n':
                s->state = ST_AFTER;
                return scan_literal(s, t);
            default:
                if (c == '-' || is_digit(c)) {
                    s->state = ST_AFTER;
                    return scan_number(s, t);
                }
                return fail(s, "expected a JSON value");
            }
        }
        return fail(s, "bad scanner state"); /* not reached */
    }
}

bool drv_json_skip(drv_json_scan *s, const drv_json_token *t)
{
    if (t->type != DRV_JSON_OBJECT && t->type != DRV_JSON_ARRAY)
        return true;
    uint8_t target = (uint8_t)(s->depth - 1);
    drv_json_token tok;
    while (s->depth > target)
        if (drv_json_next(s, &tok) == DRV_JSON_ERROR)
            return false;
    return true;
}

/* Write code point u as UTF-8 at d (room for 4); return the length. */
static size_t put_utf8(char *d, uint32_t u)
{
    if (u < 0x80) {
        d[0] = (char)u;
        return 1;
    }
    if (u < 0x800) {
        d[0] = (char)(0xC0 | u >> 6);
        d[1] = (char)(0x80 | (u & 0x3F));
        return 2;
    }
    if (u < 0x10000) {
        d[0] = (char)(0xE0 | u >> 12);
        d[1] = (char)(0x80 | (u >> 6 & 0x3F));
        d[2] = (char)(0x80 | (u & 0x3F));
        return 3;
    }
    d[0] = (char)(0xF0 | u >> 18);
    d[1] = (char)(0x80 | (u >> 12 & 0x3F));
    d[2] = (char)(0x80 | (u >> 6 & 0x3F));
    d[3] = (char)(0x80 | (u & 0x3F));
    return 4;
}

/*
 * Decode the escape at p (p[0] == '\\') into out (room for 4): its length
 * there, and the number of input bytes it took in *used.  Text that did not
 * come from the scanner decodes to something, never past end.
 */
static size_t unescape_one(const char *p, const char *end, char *out, size_t *used)
{
    if (end - p < 2) {
        *used = (size_t)(end - p);
        return 0;
    }
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    const char *k = p[1] ? strchr(from, p[1]) : NULL;
    if (k) {
        *out = to[k - from];
        *used = 2;
        return 1;
    }
    int32_t u = end - p >= 6 ? hex4(p + 2) : -1;
    if (p[1] != 'u' || u < 0) {
        *used = 2;
        return 0;
    }
    *used = 6;
    if (u >= 0xD800 && u <= 0xDBFF && end - p >= 12 && p[6] == '\\' && p[7] == 'u') {
        int32_t lo = hex4(p + 8);
        if (lo >= 0xDC00 && lo <= 0xDFFF) {
            *used = 12;
            return put_utf8(out,
                            0x10000 + (((uint32_t)u - 0xD800) << 10) + ((uint32_t)lo - 0xDC00));
        }
    }
    if (u >= 0xD800 && u <= 0xDFFF)
        u = 0xFFFD; /* a lone surrogate (the scanner refuses those) */
    return put_utf8(out, (uint32_t)u);
}

size_t drv_json_unescaped_len(drv_span text)
{
    const char *p = text.p, *end = text.p + text.n;
    size_t n = 0;
    while (p < end) {
        const char *bs = memchr(p, '\\', (size_t)(end - p));
        if (!bs)
            return n + (size_t)(end - p);
        n += (size_t)(bs - p);
        char tmp[4];
        size_t used;
        n += unescape_one(bs, end, tmp, &used);
        p = bs + used;
    }
    return n;
}

size_t drv_json_unescape(drv_span text, char *dst, size_t cap)
{
    const char *p = text.p, *end = text.p + text.n;
    size_t n = 0;
    while (p < end) {
        const char *bs = memchr(p, '\\', (size_t)(end - p));
        size_t run = (size_t)((bs ? bs : end) - p);
        if (run > cap - n)
            return SIZE_MAX;
        memcpy(dst + n, p, run);
        n += run;
        if (!bs)
            break;
        char tmp[4];
        size_t used, k = unescape_one(bs, end, tmp, &used);
        if (k > cap - n)
            return SIZE_MAX;
        memcpy(dst + n, tmp, k);
        n += k;
        p = bs + used;
    }
    return n;
}
