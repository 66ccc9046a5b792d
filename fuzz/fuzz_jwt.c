/*
 * fuzz_jwt.c — libFuzzer harness for the front end of the API's JWT
 * verifier (src/api/jwt.c): what a bearer token or an HTTP Basic header
 * from the network reaches before any key decides anything.
 *
 * Input: one mode byte, then the bytes (in an exact-size heap copy, so a
 * read past the end is an ASan report).
 *   mode % 4 == 0  a compact JWS: jwt_parse, then jwt_check_claims and
 *                  jwt_verify_es256 with a key made once, as api_oauth.c
 *                  would call them
 *   mode % 4 == 1  base64url: drv_b64url_decode
 *   mode % 4 == 2  standard base64: drv_b64_decode
 *   mode % 4 == 3  a DER ECDSA signature: drv_jwt_ecdsa_der_to_raw
 *
 * Checked (abort on violation):
 *   - jwt_parse answers DRV_OK, DRV_MALFORMED or DRV_TOOBIG (only past
 *     JWT_MAX_LEN); on DRV_OK the header and claims are objects, the
 *     signing input ends at the second of exactly two dots, the signature
 *     is at most 64 bytes and alg/kid/typ are the header's strings; on
 *     failure nothing is left allocated in the result;
 *   - jwt_check_claims answers DRV_OK, DRV_DENIED or DRV_MALFORMED;
 *   - no input verifies under a key the fuzzer never saw;
 *   - base64url decoding is canonical: what decodes re-encodes to exactly
 *     the input, and the decoded length is the one the input length implies;
 *   - standard base64 decoding gives the length its padding implies;
 *   - a DER signature that converts to R||S converts back to DER that
 *     converts to the same R||S.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/jwt.h"
#include "core/b64.h"

#include "fuzz.h"

static EVP_PKEY *key;

static void fuzz_token(const char *p, size_t n)
{
    jwt_token t;
    drv_err e = jwt_parse(p, n, &t);
    FUZZ_ASSERT(e == DRV_OK || e == DRV_MALFORMED || e == DRV_TOOBIG);
    FUZZ_ASSERT(e != DRV_TOOBIG || n > JWT_MAX_LEN);
    if (e != DRV_OK) {
        FUZZ_ASSERT(!t.header && !t.claims);
        return;
    }
    FUZZ_ASSERT(json_is_object(t.header) && json_is_object(t.claims));
    FUZZ_ASSERT(t.signing_len < n && p[t.signing_len] == '.');
    FUZZ_ASSERT(memchr(p, '.', t.signing_len) != NULL);
    FUZZ_ASSERT(!memchr(p + t.signing_len + 1, '.', n - t.signing_len - 1));
    FUZZ_ASSERT(t.sig_len <= JWT_ES256_SIG_LEN);
    FUZZ_ASSERT(t.alg == json_string_value(json_object_get(t.header, "alg")));
    FUZZ_ASSERT(t.kid == json_string_value(json_object_get(t.header, "kid")));
    FUZZ_ASSERT(t.typ == json_string_value(json_object_get(t.header, "typ")));
    jwt_expect want = {.iss = "drover", .aud = "drover-api", .now_s = 1800000000, .leeway_s = 60};
    e = jwt_check_claims(t.claims, &want);
    FUZZ_ASSERT(e == DRV_OK || e == DRV_DENIED || e == DRV_MALFORMED);
    FUZZ_ASSERT(!jwt_verify_es256(key, p, &t));
    jwt_token_clear(&t);
}

static void fuzz_b64url(const char *p, size_t n)
{
    uint8_t out[512];
    char again[700];
    size_t len = 0;
    if (n > 600 || !drv_b64url_decode(p, n, out, sizeof(out), &len))
        return;
    FUZZ_ASSERT(len == n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0));
    FUZZ_ASSERT(drv_b64url_encode(out, len, again, sizeof(again)) == n);
    FUZZ_ASSERT(memcmp(again, p, n) == 0);
}

static void fuzz_b64(const char *p, size_t n)
{
    uint8_t out[512];
    size_t len = 0;
    if (n > 600 || !drv_b64_decode(p, n, out, sizeof(out), &len))
        return;
    size_t pad = n >= 1 && p[n - 1] == '=' ? (n >= 2 && p[n - 2] == '=' ? 2 : 1) : 0;
    FUZZ_ASSERT(n % 4 == 0 && len == n / 4 * 3 - pad);
}

static void fuzz_der(const uint8_t *p, size_t n)
{
    uint8_t raw[JWT_ES256_SIG_LEN], raw2[JWT_ES256_SIG_LEN], der[80];
    if (!drv_jwt_ecdsa_der_to_raw(p, n, raw))
        return;
    size_t dn = drv_jwt_ecdsa_raw_to_der(raw, der, sizeof(der));
    if (dn == 0)
        return; /* r or s is zero: no signature */
    FUZZ_ASSERT(drv_jwt_ecdsa_der_to_raw(der, dn, raw2) && memcmp(raw, raw2, sizeof(raw)) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!key && jwt_es256_generate(&key) != DRV_OK)
        abort();
    if (size < 1)
        return 0;
    size_t n = size - 1;
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy)
        return 0;
    memcpy(copy, data + 1, n);
    switch (data[0] % 4) {
    case 0:
        fuzz_token((const char *)copy, n);
        break;
    case 1:
        fuzz_b64url((const char *)copy, n);
        break;
    case 2:
        fuzz_b64((const char *)copy, n);
        break;
    default:
        fuzz_der(copy, n);
        break;
    }
    free(copy);
    return 0;
}
