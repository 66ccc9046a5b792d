/*
 * jwt_test.c — unit tests for jwt.c and the helpers it shares with the
 * device JWTs: base64url and base64 of core/b64.c (RFC 4648 vectors,
 * strictness), ECDSA signatures between DER and R||S (registry/device_jwt.c),
 * P-256 keys through PEM and JWK with their RFC 7638 thumbprint, the RFC 7515
 * A.3 ES256 example, sign/verify round trips and what breaks them, the parser
 * on malformed tokens, and the claims check at the edges of its leeway.
 */
#include <string.h>

#include "api/jwt.h"
#include "core/b64.h"
#include "core/alloc.h"

#include "core/test.h"

/* RFC 7515 Appendix A.3: an ES256 JWS and its public key. */
static const char rfc_x[] = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
static const char rfc_y[] = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
static const char rfc_token[] =
    "eyJhbGciOiJFUzI1NiJ9."
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0"
    "cnVlfQ."
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
/* Its thumbprint, computed independently (SHA-256 of the RFC 7638 JSON). */
static const char rfc_thumbprint[] = "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U";

static void test_b64url(void)
{
    static const struct {
        const char *raw, *enc;
    } vectors[] = {
        {"", ""},
        {"f", "Zg"},
        {"fo", "Zm8"},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg"},
        {"fooba", "Zm9vYmE"},
        {"foobar", "Zm9vYmFy"},
        {"\xfb\xff", "-_8"}, /* the two url-safe characters */
    };
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        char enc[32];
        uint8_t dec[32];
        size_t n = strlen(vectors[i].raw), got = 99;
        CHECK_CASE(drv_b64url_encode(vectors[i].raw, n, enc, sizeof(enc)) == strlen(vectors[i].enc),
                   vectors[i].enc);
        CHECK_CASE(strcmp(enc, vectors[i].enc) == 0, vectors[i].enc);
        CHECK_CASE(
            drv_b64url_decode(vectors[i].enc, strlen(vectors[i].enc), dec, sizeof(dec), &got),
            vectors[i].enc);
        CHECK_CASE(got == n && memcmp(dec, vectors[i].raw, n) == 0, vectors[i].enc);
    }
    /* Every length round-trips, and the output buffer is never overrun. */
    uint8_t in[70], out[70];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)(i * 37 + 11);
    for (size_t n = 0; n <= sizeof(in); n++) {
        char enc[100];
        size_t len = drv_b64url_encode(in, n, enc, sizeof(enc)), got = 0;
        CHECK(len == (4 * n + 2) / 3);
        CHECK(drv_b64url_decode(enc, len, out, n, &got) && got == n && memcmp(in, out, n) == 0);
        if (n > 0)
            CHECK(!drv_b64url_decode(enc, len, out, n - 1, &got)); /* does not fit */
        CHECK(drv_b64url_encode(in, n, enc, len) == 0);            /* no room for the NUL */
    }
    static const char *const bad[] = {
        "Zg=",   /* padding */
        "Zm9v=", /* padding */
        "Z",     /* a length of 1 mod 4 */
        "Zh",    /* non-zero unused bits: "f" has one encoding */
        "Zm9",   /* likewise */
        "Zm9v+", /* standard alphabet */
        "Zm/v",  /* standard alphabet */
        "Zm 9v", /* space */
        "Zm\n9v",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t dec[16];
        size_t got;
        CHECK_CASE(!drv_b64url_decode(bad[i], strlen(bad[i]), dec, sizeof(dec), &got), bad[i]);
    }
    uint8_t nul_in[3];
    size_t got;
    CHECK(!drv_b64url_decode("Zm\0v", 4, nul_in, sizeof(nul_in), &got));
}

static void test_b64_standard(void)
{
    uint8_t dec[32];
    size_t got = 0;
    CHECK(drv_b64_decode("Zm9vYg==", 8, dec, sizeof(dec), &got) && got == 4 &&
          memcmp(dec, "foob", 4) == 0);
    CHECK(drv_b64_decode("Zm9vYmE=", 8, dec, sizeof(dec), &got) && got == 5);
    CHECK(drv_b64_decode("Zm9vYmFy", 8, dec, sizeof(dec), &got) && got == 6);
    CHECK(drv_b64_decode("+/8=", 4, dec, sizeof(dec), &got) && got == 2 && dec[0] == 0xfb &&
          dec[1] == 0xff);
    CHECK(drv_b64_decode("", 0, dec, sizeof(dec), &got) && got == 0);
    static const char *const bad[] = {
        "Zm9vYg", "Zm9vYg=", "Zm9vY===", "Zm=vYg==", "Zh==", "-_8=", "Zm9v\n", "====", "Zg=a"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_CASE(!drv_b64_decode(bad[i], strlen(bad[i]), dec, sizeof(dec), &got), bad[i]);
}

static void test_der_raw(void)
{
    /* r with its top bit set needs a 0x00 in DER; s = 1 is one byte. */
    uint8_t raw[64] = {0}, back[64], der[80];
    raw[0] = 0x80;
    raw[63] = 0x01;
    size_t n = drv_jwt_ecdsa_raw_to_der(raw, der, sizeof(der));
    static const uint8_t head[] = {0x30, 0x26, 0x02, 0x21, 0x00, 0x80};
    CHECK(n == 40 && memcmp(der, head, sizeof(head)) == 0);
    CHECK(n == 40 && der[37] == 0x02 && der[38] == 0x01 && der[39] == 0x01);
    CHECK(drv_jwt_ecdsa_der_to_raw(der, n, back) && memcmp(raw, back, 64) == 0);
    /* Leading zero bytes of r disappear in DER and come back in R||S. */
    memset(raw, 0, sizeof(raw));
    raw[5] = 0x17;
    raw[40] = 0x7f;
    n = drv_jwt_ecdsa_raw_to_der(raw, der, sizeof(der));
    CHECK(n > 0 && n < 70);
    CHECK(drv_jwt_ecdsa_der_to_raw(der, n, back) && memcmp(raw, back, 64) == 0);
    /* Every 0x00..0xff top byte of both halves round-trips. */
    for (int b = 1; b < 256; b++) {
        memset(raw, 0x5a, sizeof(raw));
        raw[0] = (uint8_t)b;
        raw[32] = (uint8_t)(255 - b);
        n = drv_jwt_ecdsa_raw_to_der(raw, der, sizeof(der));
        CHECK(n > 0 && drv_jwt_ecdsa_der_to_raw(der, n, back) && memcmp(raw, back, 64) == 0);
    }
    memset(raw, 0x5a, sizeof(raw));
    n = drv_jwt_ecdsa_raw_to_der(raw, der, sizeof(der));
    CHECK(drv_jwt_ecdsa_raw_to_der(raw, der, n - 1) == 0); /* does not fit */
    CHECK(!drv_jwt_ecdsa_der_to_raw(der, n - 1, back));    /* truncated */
    der[n] = 0x00;
    CHECK(!drv_jwt_ecdsa_der_to_raw(der, n + 1, back)); /* trailing byte */
    CHECK(!drv_jwt_ecdsa_der_to_raw(der, 0, back));
    memset(raw, 0, 32); /* r = 0 is no signature */
    CHECK(drv_jwt_ecdsa_raw_to_der(raw, der, sizeof(der)) == 0);
    /* An r of 33 significant bytes does not fit R||S. */
    uint8_t big[] = {0x30, 0x26, 0x02, 0x21, 0x01, 1,  2,  3,  4,  5,    6,    7,   8,  9,
                     10,   11,   12,   13,   14,   15, 16, 17, 18, 19,   20,   21,  22, 23,
                     24,   25,   26,   27,   28,   29, 30, 31, 32, 0x02, 0x01, 0x01};
    CHECK(sizeof(big) == 40 && !drv_jwt_ecdsa_der_to_raw(big, sizeof(big), back));
}

static void test_rfc7515_example(void)
{
    json_t *jwk =
        json_pack("{s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x", rfc_x, "y", rfc_y);
    EVP_PKEY *pub = NULL;
    CHECK(jwt_public_from_jwk(jwk, &pub) == DRV_OK);
    char tp[JWT_THUMBPRINT_LEN + 1];
    CHECK(jwt_jwk_thumbprint(jwk, tp) == DRV_OK && strcmp(tp, rfc_thumbprint) == 0);
    /* The JWK of the imported key is the one it came from. */
    json_t *again = jwt_public_jwk(pub, NULL);
    CHECK(again && json_equal(again, jwk));
    json_decref(again);

    jwt_token t;
    CHECK(jwt_parse(rfc_token, strlen(rfc_token), &t) == DRV_OK);
    CHECK(t.alg && strcmp(t.alg, "ES256") == 0 && !t.kid && !t.typ && t.sig_len == 64);
    CHECK(json_integer_value(json_object_get(t.claims, "exp")) == 1300819380);
    CHECK(jwt_verify_es256(pub, rfc_token, &t));
    jwt_token_clear(&t);

    /* One flipped character anywhere breaks it. */
    size_t len = strlen(rfc_token);
    for (size_t i = 0; i < len; i += 7) {
        char tampered[sizeof(rfc_token)];
        memcpy(tampered, rfc_token, sizeof(rfc_token));
        if (tampered[i] == '.')
            continue;
        tampered[i] = tampered[i] == 'A' ? 'B' : 'A';
        bool ok = jwt_parse(tampered, len, &t) == DRV_OK && jwt_verify_es256(pub, tampered, &t);
        CHECK_CASE(!ok, tampered);
        jwt_token_clear(&t);
    }
    /* A point off the curve is not a key. */
    json_object_set_new(jwk, "y", json_string(rfc_x));
    EVP_PKEY *bad = NULL;
    CHECK(jwt_public_from_jwk(jwk, &bad) == DRV_INVAL && !bad);
    json_object_set_new(jwk, "y", json_string("AAAA"));
    CHECK(jwt_public_from_jwk(jwk, &bad) == DRV_INVAL);
    json_object_set_new(jwk, "y", json_string(rfc_y));
    json_object_set_new(jwk, "crv", json_string("P-384"));
    CHECK(jwt_public_from_jwk(jwk, &bad) == DRV_INVAL);
    CHECK(jwt_jwk_thumbprint(jwk, tp) == DRV_INVAL);
    EVP_PKEY_free(pub);
    json_decref(jwk);
}

static void test_sign_verify(void)
{
    EVP_PKEY *key = NULL, *other = NULL, *from_pem = NULL, *pub = NULL;
    CHECK(jwt_es256_generate(&key) == DRV_OK && jwt_es256_generate(&other) == DRV_OK);
    char *pem = NULL;
    CHECK(jwt_private_pem(key, &pem) == DRV_OK && pem &&
          strncmp(pem, "-----BEGIN PRIVATE KEY-----", 27) == 0);
    CHECK(jwt_private_from_pem(pem, &from_pem) == DRV_OK);
    CHECK(jwt_private_from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                               &pub) == DRV_INVAL);
    json_t *jwk = jwt_public_jwk(key, "k1");
    CHECK(jwk && strcmp(json_string_value(json_object_get(jwk, "kid")), "k1") == 0 &&
          strcmp(json_string_value(json_object_get(jwk, "alg")), "ES256") == 0 &&
          strcmp(json_string_value(json_object_get(jwk, "use")), "sig") == 0 &&
          !json_object_get(jwk, "d"));
    CHECK(jwt_public_from_jwk(jwk, &pub) == DRV_OK);

    json_t *claims = json_pack("{s:s, s:s, s:i, s:s}", "iss", "drover", "sub", "oc_x", "exp",
                               2000000000, "scope", "a b");
    char *tok = NULL;
    CHECK(jwt_sign_es256(from_pem, "k1", "at+jwt", claims, &tok) == DRV_OK && tok);
    jwt_token t;
    CHECK(tok && jwt_parse(tok, strlen(tok), &t) == DRV_OK);
    if (tok && t.header) {
        CHECK(strcmp(t.alg, "ES256") == 0 && strcmp(t.kid, "k1") == 0 &&
              strcmp(t.typ, "at+jwt") == 0);
        CHECK(json_equal(t.claims, claims));
        CHECK(jwt_verify_es256(pub, tok, &t));
        CHECK(jwt_verify_es256(key, tok, &t));
        CHECK(!jwt_verify_es256(other, tok, &t));
        CHECK(!jwt_verify_es256(NULL, tok, &t));
        t.sig_len = 63;
        CHECK(!jwt_verify_es256(pub, tok, &t));
        jwt_token_clear(&t);
    }
    /* A payload edited after signing (a role raised) no longer verifies. */
    if (tok) {
        char *p1 = strchr(tok, '.') + 1, *p2 = strchr(p1, '.');
        json_object_set_new(claims, "scope", json_string("a b c"));
        char forged_payload[512], forged[2048];
        size_t pn = json_dumpb(claims, NULL, 0, JSON_COMPACT);
        char *ptext = drv_malloc(pn);
        json_dumpb(claims, ptext, pn, JSON_COMPACT);
        drv_b64url_encode(ptext, pn, forged_payload, sizeof(forged_payload));
        drv_free(ptext);
        snprintf(forged, sizeof(forged), "%.*s%s%s", (int)(p1 - tok), tok, forged_payload, p2);
        CHECK(jwt_parse(forged, strlen(forged), &t) == DRV_OK);
        CHECK(!jwt_verify_es256(pub, forged, &t));
        jwt_token_clear(&t);
    }
    drv_free(tok);
    json_t *not_object = json_array();
    CHECK(jwt_sign_es256(key, "k1", "at+jwt", not_object, &tok) == DRV_INVAL && !tok);
    json_decref(not_object);
    json_decref(claims);
    json_decref(jwk);
    if (pem)
        memset(pem, 0, strlen(pem));
    drv_free(pem);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
    EVP_PKEY_free(from_pem);
    EVP_PKEY_free(pub);
}

static void test_parse_malformed(void)
{
    static const struct {
        const char *tok;
        drv_err want;
    } cases[] = {
        {"", DRV_MALFORMED},
        {"abc", DRV_MALFORMED},
        {"e30.e30", DRV_MALFORMED}, /* two parts */
        {"e30.e30.e30.e30", DRV_MALFORMED},
        {"..", DRV_MALFORMED},
        {"e30..", DRV_MALFORMED},        /* empty payload */
        {".e30.", DRV_MALFORMED},        /* empty header */
        {"e30.e30.", DRV_OK},            /* {} and {}, unsigned: parses, verifies nothing */
        {"W10.e30.", DRV_MALFORMED},     /* header [] */
        {"e30.IiI.", DRV_MALFORMED},     /* payload "" */
        {"e30.bnVsbA.", DRV_MALFORMED},  /* payload null */
        {"e30.e30.e30=", DRV_MALFORMED}, /* padding */
        {"e30=.e30.", DRV_MALFORMED},
        {"e3.e30.", DRV_MALFORMED},   /* non-canonical */
        {"e30.e30.A", DRV_MALFORMED}, /* 1 mod 4 */
        {"eyJ9.e30.", DRV_MALFORMED}, /* not JSON */
        /* {"alg":"ES256","alg":"none"}: a duplicate name */
        {"eyJhbGciOiJFUzI1NiIsImFsZyI6Im5vbmUifQ.e30.", DRV_MALFORMED},
        /* {"alg":"none"}: parses; the caller refuses the algorithm */
        {"eyJhbGciOiJub25lIn0.e30.", DRV_OK},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        jwt_token t;
        drv_err e = jwt_parse(cases[i].tok, strlen(cases[i].tok), &t);
        CHECK_CASE(e == cases[i].want, cases[i].tok);
        if (e != DRV_OK)
            CHECK_CASE(!t.header && !t.claims, cases[i].tok);
        jwt_token_clear(&t);
    }
    jwt_token t;
    /* A 65-byte signature is not ES256's. */
    char tok[200] = "e30.e30.";
    uint8_t sig[65] = {1};
    drv_b64url_encode(sig, sizeof(sig), tok + 8, sizeof(tok) - 8);
    CHECK(jwt_parse(tok, strlen(tok), &t) == DRV_MALFORMED);
    drv_b64url_encode(sig, 64, tok + 8, sizeof(tok) - 8);
    CHECK(jwt_parse(tok, strlen(tok), &t) == DRV_OK && t.sig_len == 64);
    jwt_token_clear(&t);
    /* NUL inside the text, and a token over the limit. */
    CHECK(jwt_parse("e30.e3\0w.", 9, &t) == DRV_MALFORMED);
    char *huge = drv_malloc(JWT_MAX_LEN + 2);
    memset(huge, 'e', JWT_MAX_LEN + 1);
    huge[JWT_MAX_LEN + 1] = '\0';
    CHECK(jwt_parse(huge, JWT_MAX_LEN + 1, &t) == DRV_TOOBIG);
    drv_free(huge);
    CHECK(jwt_parse(NULL, 0, &t) == DRV_MALFORMED);
}

static void test_claims(void)
{
    const jwt_expect want = {.iss = "drover", .aud = "drover-api", .now_s = 1000, .leeway_s = 60};
    static const struct {
        const char *json;
        drv_err e;
    } cases[] = {
        {"{\"iss\":\"drover\",\"aud\":\"drover-api\",\"exp\":1001}", DRV_OK},
        {"{\"iss\":\"drover\",\"aud\":\"drover-api\",\"exp\":941}", DRV_OK},     /* in the leeway */
        {"{\"iss\":\"drover\",\"aud\":\"drover-api\",\"exp\":940}", DRV_DENIED}, /* past it */
        {"{\"iss\":\"drover\",\"aud\":\"drover-api\",\"exp\":940.5}", DRV_OK},
        {"{\"iss\":\"drover\",\"aud\":\"drover-api\",\"exp\":2000,\"nbf\":1060}", DRV_OK},
        {"{\"iss\":\"drover\",\"aud\":\"drover-api\",\"exp\":2000,\"nbf\":1061}", DRV_DENIED},
        {"{\"iss\":\"drover\",\"aud\":\"drover-api\",\"exp\":2000,\"iat\":1061}", DRV_DENIED},
        {"{\"iss\":\"drover\",\"aud\":\"drover-api\",\"exp\":2000,\"iat\":999}", DRV_OK},
        {"{\"iss\":\"drover\",\"aud\":\"drover-api\"}", DRV_MALFORMED}, /* no exp */
        {"{\"iss\":\"drover\",\"aud\":\"drover-api\",\"exp\":\"2000\"}", DRV_MALFORMED},
        {"{\"iss\":\"drover\",\"aud\":\"drover-api\",\"exp\":2000,\"nbf\":null}", DRV_MALFORMED},
        {"{\"iss\":\"other\",\"aud\":\"drover-api\",\"exp\":2000}", DRV_DENIED},
        {"{\"aud\":\"drover-api\",\"exp\":2000}", DRV_DENIED},
        {"{\"iss\":\"drover\",\"aud\":\"other\",\"exp\":2000}", DRV_DENIED},
        {"{\"iss\":\"drover\",\"exp\":2000}", DRV_DENIED},
        {"{\"iss\":\"drover\",\"aud\":[\"x\",\"drover-api\"],\"exp\":2000}", DRV_OK},
        {"{\"iss\":\"drover\",\"aud\":[\"x\",1],\"exp\":2000}", DRV_DENIED},
        {"{\"iss\":\"drover\",\"aud\":{\"drover-api\":1},\"exp\":2000}", DRV_DENIED},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_error_t err;
        json_t *c = json_loads(cases[i].json, 0, &err);
        CHECK_CASE(c && jwt_check_claims(c, &want) == cases[i].e, cases[i].json);
        json_decref(c);
    }
    CHECK(jwt_check_claims(NULL, &want) == DRV_MALFORMED);
}

int main(void)
{
    test_b64url();
    test_b64_standard();
    test_der_raw();
    test_rfc7515_example();
    test_sign_verify();
    test_parse_malformed();
    test_claims();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
