/* b64.c — strict base64url and standard base64; contract in b64.h. */
#include "core/b64.h"

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t drv_b64url_encode(const void *in, size_t n, char *out, size_t cap)
{
    const uint8_t *p = in;
    if (n > (SIZE_MAX - 3) / 4)
        return 0;
    size_t need = (4 * n + 2) / 3;
    if (need + 1 > cap)
        return 0;
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[v >> 12 & 63];
        out[o++] = b64url_alphabet[v >> 6 & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[v >> 12 & 63];
        out[o++] = b64url_alphabet[v >> 6 & 63];
    }
    out[o] = '\0';
    return o;
}

/* The 6-bit value of c in the url-safe or the standard alphabet, or -1. */
static int b64_value(char c, bool url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

bool drv_b64url_decoded_len(size_t n, size_t *out)
{
    if (n % 4 == 1)
        return false;
    *out = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
    return true;
}

/* Decode n unpadded characters; the unused low bits of the last one must be 0. */
static bool b64_decode(const char *in, size_t n, bool url, uint8_t *out, size_t cap, size_t *outlen)
{
    size_t need;
    if (!drv_b64url_decoded_len(n, &need) || need > cap)
        return false;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value(in[i], url);
        if (v < 0)
            return false;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) /* leftover bits (fewer than 8) must be padding zeros */
        return false;
    *outlen = o;
    return true;
}

bool drv_b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *outlen)
{
    return b64_decode(in, n, true, out, cap, outlen);
}

bool drv_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *outlen)
{
    if (n % 4 != 0)
        return false;
    size_t pad = 0;
    while (pad < 2 && n > 0 && in[n - 1] == '=')
        n--, pad++;
    /* With the padding gone, what is left must need exactly that padding. */
    if (pad && n % 4 != 4 - pad)
        return false;
    return b64_decode(in, n, false, out, cap, outlen);
}
