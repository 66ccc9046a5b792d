/*
 * fuzz_device_jwt.c — libFuzzer harness for the front end of device JWT
 * verification (src/registry/device_jwt.c): the MQTT password a device
 * sends, as the broker's registry auth would see it.
 *
 * Input: the password bytes, copied into a heap block of their exact size
 * (a read past them is an ASan report).  drv_jwt_parse runs on it; a token
 * it accepts goes through drv_jwt_check_claims (a fixed "now" and policy)
 * and drv_jwt_verify with an EC P-256 and an RSA 2048 public key, both
 * fixed here, so that seeds signed with their private keys (kept outside
 * the repository) reach a signature that verifies.
 *
 * Checked (abort on violation):
 *   - every answer is one the header documents, `why` is set exactly on
 *     failure, and parsing the same bytes twice gives the same answer;
 *   - an input longer than DRV_JWT_MAX is DRV_TOOBIG, and one without
 *     exactly two dots is DRV_DECLINED;
 *   - a parsed token: signing_input is the input, ends just before the
 *     second dot, the signature fits its buffer (64 bytes for ES256), exp
 *     and iat are NumericDates and the claims an object;
 *   - drv_jwt_verify leaves OpenSSL's error queue empty;
 * and always: no crash, no sanitizer report, no leak.
 */
#include <openssl/err.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "registry/device_jwt.h"

#include "fuzz.h"

static const char EC_PUB[] = "-----BEGIN PUBLIC KEY-----\n"
                             "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAESETrNw9qdnfWxFikXNypOqKXFUuS\n"
                             "lxYn/1oNCfMVCbe+/2zZ6C0tXH/tlbzmK2dA14NdSvlDPFfRR3HieC3VWA==\n"
                             "-----END PUBLIC KEY-----\n";

static const char RSA_PUB[] = "-----BEGIN PUBLIC KEY-----\n"
                              "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA8p3AzCuscayk+0+zBRI0\n"
                              "S8kOoFEegLZcgL52uoBVQy0Mu9CpIrRYQ1JJCRgI86hiIHe4nqT3NLO+VnonFrh3\n"
                              "0Kvi3riWGIlzLK6CSvo4UD0UK2ByA7ZZfvpkH2bGrG1H5HZ1CcEo0qvbmh/Ulnw3\n"
                              "gR6OzkEiKlqYdjllvgvUTcT3w0Hio3hFVuZnwxxqBJtEJLzNkMV3mU2SbwKoB8uP\n"
                              "uOCllcr7XqsC4SZxQ0mTjHDSolfaYns2UvCkr5VumpHiq/sUZtz17yUattmwME+r\n"
                              "MThI/yary+mgtwJ4fq0eY2yXb2xIlC3LvE1eanIIW3BStF16m9qX8lwvieJAB/jw\n"
                              "BwIDAQAB\n"
                              "-----END PUBLIC KEY-----\n";

#define NOW 1700000000LL

static size_t dots(const uint8_t *p, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += p[i] == '.';
    return k;
}

static bool parse_answer_ok(drv_err e)
{
    return e == DRV_OK || e == DRV_DECLINED || e == DRV_UNSUPPORTED || e == DRV_MALFORMED ||
           e == DRV_TOOBIG || e == DRV_NOMEM;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *tok = malloc(size ? size : 1);
    if (!tok)
        return 0;
    memcpy(tok, data, size);

    drv_jwt t, again;
    const char *why = "unset";
    drv_err e = drv_jwt_parse(tok, size, &t, &why);
    FUZZ_ASSERT(parse_answer_ok(e));
    FUZZ_ASSERT(e == DRV_OK ? why == NULL : why != NULL);
    drv_err e2 = drv_jwt_parse(tok, size, &again, NULL);
    FUZZ_ASSERT(e2 == e);
    drv_jwt_clear(&again);
    if (size > DRV_JWT_MAX)
        FUZZ_ASSERT(e == DRV_TOOBIG);
    else if (dots(tok, size) != 2)
        FUZZ_ASSERT(e == DRV_DECLINED);

    if (e == DRV_OK) {
        FUZZ_ASSERT(t.alg == DRV_JWT_ES256 || t.alg == DRV_JWT_RS256);
        FUZZ_ASSERT(t.signing_input == tok && t.signing_len < size);
        FUZZ_ASSERT(tok[t.signing_len] == '.' && dots(tok, t.signing_len) == 1);
        FUZZ_ASSERT(t.sig_len > 0 && t.sig_len <= DRV_JWT_SIG_MAX);
        FUZZ_ASSERT(t.alg != DRV_JWT_ES256 || t.sig_len == 64);
        FUZZ_ASSERT(t.exp >= 0 && t.iat >= 0 && (!t.has_nbf || t.nbf >= 0));
        FUZZ_ASSERT(json_is_object(t.claims));

        drv_jwt_policy p = {.audience = "drover", .subject = "d1", .now_s = NOW};
        drv_err c = drv_jwt_check_claims(&t, &p, &why);
        FUZZ_ASSERT(c == DRV_OK || c == DRV_AUTH);
        FUZZ_ASSERT(c == DRV_OK ? why == NULL : why != NULL);
        p.subject = NULL;
        drv_err c2 = drv_jwt_check_claims(&t, &p, NULL);
        FUZZ_ASSERT(c2 == DRV_OK || c2 == DRV_AUTH);
        FUZZ_ASSERT(c != DRV_OK || c2 == DRV_OK); /* a looser policy never refuses more */

        static const char *const pems[] = {EC_PUB, RSA_PUB};
        for (int k = 0; k < 2; k++) {
            drv_err v = drv_jwt_verify(&t, pems[k], &why);
            FUZZ_ASSERT(v == DRV_OK || v == DRV_AUTH || v == DRV_DECLINED || v == DRV_NOMEM);
            /* Each key fits exactly one alg. */
            FUZZ_ASSERT((v == DRV_DECLINED) == ((k == 0) != (t.alg == DRV_JWT_ES256)));
            FUZZ_ASSERT(ERR_peek_error() == 0);
        }
        drv_jwt_clear(&t);
    }
    free(tok);
    return 0;
}
