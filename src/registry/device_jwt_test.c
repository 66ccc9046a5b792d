/*
 * device_jwt_test.c — unit tests for device JWT verification (device_jwt.c).
 *
 * Keys are made here with OpenSSL (EC P-256, RSA 2048, and the ones that
 * must not fit: secp256k1, RSA 1024), tokens are signed here (ES256 turned
 * from DER into R || S as a JWS carries it), and a table of tokens runs
 * through the three steps — parse, claims against a fixed "now", signature
 * with each key — each row naming the answer every step must give.  Then
 * strings that are not JWTs, strict base64url, the size limit, and many
 * ES256 signatures (so that R and S with a high bit set or leading zero
 * bytes all pass through the DER conversion).
 */
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "registry/device_jwt.h"

#include "core/test.h"

#define NOW 1700000000LL

enum {
    K_EC,
    K_EC2,
    K_RSA,
    K_RSA2,
    K_K1,
    K_RSA1024,
    NKEYS
};
static EVP_PKEY *keys[NKEYS];
static char *pems[NKEYS];

static const char *const B64URL =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Unpadded base64url of in[0..n) appended to out (NUL-terminated). */
static void b64url_append(char *out, size_t cap, const uint8_t *in, size_t n)
{
    size_t o = strlen(out);
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            if (o + 1 < cap)
                out[o++] = B64URL[(acc >> bits) & 63];
        }
    }
    if (bits > 0 && o + 1 < cap)
        out[o++] = B64URL[(acc << (6 - bits)) & 63];
    out[o] = '\0';
}

static char *public_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL;
    PEM_write_bio_PUBKEY(b, k);
    long n = BIO_get_mem_data(b, &data);
    char *out = malloc((size_t)n + 1);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    BIO_free(b);
    return out;
}

/* Sign msg with k (SHA-256); EC signatures as R || S of 32 bytes each. */
static size_t sign(EVP_PKEY *k, const char *msg, uint8_t *sig, size_t cap)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t der[1100];
    size_t n = sizeof(der);
    bool ok = EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k) == 1 &&
              EVP_DigestSign(md, der, &n, (const uint8_t *)msg, strlen(msg)) == 1;
    EVP_MD_CTX_free(md);
    CHECK(ok);
    if (!ok)
        return 0;
    if (EVP_PKEY_get_base_id(k) != EVP_PKEY_EC) {
        CHECK(n <= cap);
        memcpy(sig, der, n);
        return n;
    }
    const uint8_t *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)n);
    CHECK(es != NULL && cap >= 64);
    BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32);
    ECDSA_SIG_free(es);
    return 64;
}

/* "<b64 header>.<b64 payload>.<b64 signature by key over header.signed_payload>". */
static void make_token(char *out, size_t cap, const char *header, const char *payload,
                       const char *signed_payload, int key)
{
    out[0] = '\0';
    b64url_append(out, cap, (const uint8_t *)header, strlen(header));
    strncat(out, ".", cap - strlen(out) - 1);
    size_t mark = strlen(out);
    b64url_append(out, cap, (const uint8_t *)signed_payload, strlen(signed_payload));
    uint8_t sig[1100];
    size_t n = key >= 0 ? sign(keys[key], out, sig, sizeof(sig)) : 0;
    out[mark] = '\0';
    b64url_append(out, cap, (const uint8_t *)payload, strlen(payload));
    strncat(out, ".", cap - strlen(out) - 1);
    b64url_append(out, cap, sig, n);
}

#define ES "{\"alg\":\"ES256\",\"typ\":\"JWT\"}"
#define RS "{\"alg\":\"RS256\",\"typ\":\"JWT\"}"
#define GOOD "{\"exp\":1700003600,\"iat\":1700000000,\"aud\":\"drover\",\"sub\":\"d1\"}"
#define NA -1 /* the step is not reached */

typedef struct jcase {
    const char *name;
    const char *header;
    const char *payload;
    const char *signed_payload; /* NULL: the payload itself */
    int sign_with;              /* index into keys, -1: no signature */
    drv_err parse;              /* drv_jwt_parse */
    int claims;                 /* drv_jwt_check_claims (NA: parse failed) */
    int verify[NKEYS];          /* drv_jwt_verify with each key (NA: parse failed) */
} jcase;

#define OK_EC                                                                    \
    {                                                                            \
        DRV_OK, DRV_AUTH, DRV_DECLINED, DRV_DECLINED, DRV_DECLINED, DRV_DECLINED \
    }
#define OK_RSA                                                                   \
    {                                                                            \
        DRV_DECLINED, DRV_DECLINED, DRV_OK, DRV_AUTH, DRV_DECLINED, DRV_DECLINED \
    }
#define BAD_EC                                                                     \
    {                                                                              \
        DRV_AUTH, DRV_AUTH, DRV_DECLINED, DRV_DECLINED, DRV_DECLINED, DRV_DECLINED \
    }
#define BAD_RSA                                                                    \
    {                                                                              \
        DRV_DECLINED, DRV_DECLINED, DRV_AUTH, DRV_AUTH, DRV_DECLINED, DRV_DECLINED \
    }
#define NONE                   \
    {                          \
        NA, NA, NA, NA, NA, NA \
    }

static const jcase cases[] = {
    {"ES256 valid", ES, GOOD, NULL, K_EC, DRV_OK, DRV_OK, OK_EC},
    {"RS256 valid", RS, GOOD, NULL, K_RSA, DRV_OK, DRV_OK, OK_RSA},
    {"header without typ", "{\"alg\":\"ES256\"}", GOOD, NULL, K_EC, DRV_OK, DRV_OK, OK_EC},
    {"no sub", ES, "{\"exp\":1700003600,\"iat\":1700000000,\"aud\":\"drover\"}", NULL, K_EC, DRV_OK,
     DRV_OK, OK_EC},
    {"aud array", ES, "{\"exp\":1700003600,\"iat\":1700000000,\"aud\":[\"x\",\"drover\"]}", NULL,
     K_EC, DRV_OK, DRV_OK, OK_EC},
    {"fractional dates", ES, "{\"exp\":1700003600.5,\"iat\":1700000000.25,\"aud\":\"drover\"}",
     NULL, K_EC, DRV_OK, DRV_OK, OK_EC},
    /* Time. */
    {"expired", ES, "{\"exp\":1699999940,\"iat\":1699996400,\"aud\":\"drover\"}", NULL, K_EC,
     DRV_OK, DRV_AUTH, OK_EC},
    {"expired within the leeway", ES, "{\"exp\":1699999941,\"iat\":1699996400,\"aud\":\"drover\"}",
     NULL, K_EC, DRV_OK, DRV_OK, OK_EC},
    {"issued in the future", ES, "{\"exp\":1700003600,\"iat\":1700000061,\"aud\":\"drover\"}", NULL,
     K_EC, DRV_OK, DRV_AUTH, OK_EC},
    {"issued within the leeway", ES, "{\"exp\":1700003600,\"iat\":1700000060,\"aud\":\"drover\"}",
     NULL, K_EC, DRV_OK, DRV_OK, OK_EC},
    {"lifetime over 24 h", ES, "{\"exp\":1700086401,\"iat\":1700000000,\"aud\":\"drover\"}", NULL,
     K_EC, DRV_OK, DRV_AUTH, OK_EC},
    {"lifetime of 24 h", ES, "{\"exp\":1700086400,\"iat\":1700000000,\"aud\":\"drover\"}", NULL,
     K_EC, DRV_OK, DRV_OK, OK_EC},
    {"exp before iat", ES, "{\"exp\":1700000000,\"iat\":1700000010,\"aud\":\"drover\"}", NULL, K_EC,
     DRV_OK, DRV_AUTH, OK_EC},
    {"nbf ahead", ES,
     "{\"exp\":1700003600,\"iat\":1700000000,\"nbf\":1700000061,\"aud\":\"drover\"}", NULL, K_EC,
     DRV_OK, DRV_AUTH, OK_EC},
    {"nbf within the leeway", ES,
     "{\"exp\":1700003600,\"iat\":1700000000,\"nbf\":1700000030,\"aud\":\"drover\"}", NULL, K_EC,
     DRV_OK, DRV_OK, OK_EC},
    {"no exp", ES, "{\"iat\":1700000000,\"aud\":\"drover\"}", NULL, K_EC, DRV_MALFORMED, NA, NONE},
    {"no iat", ES, "{\"exp\":1700003600,\"aud\":\"drover\"}", NULL, K_EC, DRV_MALFORMED, NA, NONE},
    {"exp a string", ES, "{\"exp\":\"1700003600\",\"iat\":1700000000,\"aud\":\"drover\"}", NULL,
     K_EC, DRV_MALFORMED, NA, NONE},
    {"exp negative", ES, "{\"exp\":-1,\"iat\":1700000000,\"aud\":\"drover\"}", NULL, K_EC,
     DRV_MALFORMED, NA, NONE},
    {"exp huge", ES, "{\"exp\":1e300,\"iat\":1700000000,\"aud\":\"drover\"}", NULL, K_EC,
     DRV_MALFORMED, NA, NONE},
    {"exp past year 9999", ES, "{\"exp\":253402300800,\"iat\":1700000000,\"aud\":\"drover\"}", NULL,
     K_EC, DRV_MALFORMED, NA, NONE},
    {"nbf a string", ES, "{\"exp\":1700003600,\"iat\":1700000000,\"nbf\":\"x\",\"aud\":\"drover\"}",
     NULL, K_EC, DRV_MALFORMED, NA, NONE},
    /* Audience and subject. */
    {"wrong aud", ES, "{\"exp\":1700003600,\"iat\":1700000000,\"aud\":\"other\"}", NULL, K_EC,
     DRV_OK, DRV_AUTH, OK_EC},
    {"aud a prefix", ES, "{\"exp\":1700003600,\"iat\":1700000000,\"aud\":\"drove\"}", NULL, K_EC,
     DRV_OK, DRV_AUTH, OK_EC},
    {"no aud", ES, "{\"exp\":1700003600,\"iat\":1700000000}", NULL, K_EC, DRV_OK, DRV_AUTH, OK_EC},
    {"aud array without it", ES, "{\"exp\":1700003600,\"iat\":1700000000,\"aud\":[\"x\",\"y\"]}",
     NULL, K_EC, DRV_OK, DRV_AUTH, OK_EC},
    {"aud array with a number", ES,
     "{\"exp\":1700003600,\"iat\":1700000000,\"aud\":[\"drover\",1]}", NULL, K_EC, DRV_MALFORMED,
     NA, NONE},
    {"aud empty array", ES, "{\"exp\":1700003600,\"iat\":1700000000,\"aud\":[]}", NULL, K_EC,
     DRV_MALFORMED, NA, NONE},
    {"aud a number", ES, "{\"exp\":1700003600,\"iat\":1700000000,\"aud\":7}", NULL, K_EC,
     DRV_MALFORMED, NA, NONE},
    {"sub another device", ES,
     "{\"exp\":1700003600,\"iat\":1700000000,\"aud\":\"drover\",\"sub\":\"d2\"}", NULL, K_EC,
     DRV_OK, DRV_AUTH, OK_EC},
    {"sub a number", ES, "{\"exp\":1700003600,\"iat\":1700000000,\"aud\":\"drover\",\"sub\":1}",
     NULL, K_EC, DRV_MALFORMED, NA, NONE},
    /* Algorithms and headers. */
    {"alg none", "{\"alg\":\"none\"}", GOOD, NULL, -1, DRV_UNSUPPORTED, NA, NONE},
    {"alg HS256", "{\"alg\":\"HS256\"}", GOOD, NULL, K_EC, DRV_UNSUPPORTED, NA, NONE},
    {"alg ES384", "{\"alg\":\"ES384\"}", GOOD, NULL, K_EC, DRV_UNSUPPORTED, NA, NONE},
    {"alg lower case", "{\"alg\":\"es256\"}", GOOD, NULL, K_EC, DRV_UNSUPPORTED, NA, NONE},
    {"crit", "{\"alg\":\"ES256\",\"crit\":[\"exp\"]}", GOOD, NULL, K_EC, DRV_UNSUPPORTED, NA, NONE},
    {"no alg", "{\"typ\":\"JWT\"}", GOOD, NULL, K_EC, DRV_DECLINED, NA, NONE},
    {"alg a number", "{\"alg\":256}", GOOD, NULL, K_EC, DRV_DECLINED, NA, NONE},
    {"header an array", "[\"ES256\"]", GOOD, NULL, K_EC, DRV_DECLINED, NA, NONE},
    {"header repeats alg", "{\"alg\":\"none\",\"alg\":\"ES256\"}", GOOD, NULL, K_EC, DRV_MALFORMED,
     NA, NONE},
    {"payload repeats exp", ES,
     "{\"exp\":1,\"exp\":1700003600,\"iat\":1700000000,\"aud\":\"drover\"}", NULL, K_EC,
     DRV_MALFORMED, NA, NONE},
    {"payload not JSON", ES, "exp=1700003600", NULL, K_EC, DRV_MALFORMED, NA, NONE},
    {"payload an array", ES, "[1700003600]", NULL, K_EC, DRV_MALFORMED, NA, NONE},
    {"payload empty", ES, "", NULL, K_EC, DRV_MALFORMED, NA, NONE},
    /* Signatures. */
    {"ES256 tampered payload", ES,
     "{\"exp\":1700003600,\"iat\":1700000000,\"aud\":\"drover\",\"sub\":\"d2\"}", GOOD, K_EC,
     DRV_OK, DRV_AUTH, BAD_EC},
    {"RS256 tampered payload", RS,
     "{\"exp\":1700086400,\"iat\":1700000000,\"aud\":\"drover\",\"sub\":\"d1\"}", GOOD, K_RSA,
     DRV_OK, DRV_OK, BAD_RSA},
    {"ES256 signed by another key",
     ES,
     GOOD,
     NULL,
     K_EC2,
     DRV_OK,
     DRV_OK,
     {DRV_AUTH, DRV_OK, DRV_DECLINED, DRV_DECLINED, DRV_DECLINED, DRV_DECLINED}},
    {"RS256 header, EC signature", RS, GOOD, NULL, K_EC, DRV_OK, DRV_OK, BAD_RSA},
    {"ES256 header, RSA signature", ES, GOOD, NULL, K_RSA, DRV_MALFORMED, NA, NONE},
    {"ES256 with secp256k1", ES, GOOD, NULL, K_K1, DRV_OK, DRV_OK, BAD_EC},
    {"RS256 with RSA 1024", RS, GOOD, NULL, K_RSA1024, DRV_OK, DRV_OK, BAD_RSA},
    {"ES256 without a signature", ES, GOOD, NULL, -1, DRV_MALFORMED, NA, NONE},
    {"RS256 without a signature", RS, GOOD, NULL, -1, DRV_MALFORMED, NA, NONE},
};

static const char *errname(int e)
{
    return e == NA ? "NA" : drv_errname((drv_err)e);
}

static void run_case(const jcase *c)
{
    static char tok[4096];
    char what[200];
    make_token(tok, sizeof(tok), c->header, c->payload,
               c->signed_payload ? c->signed_payload : c->payload, c->sign_with);
    drv_jwt t;
    const char *why = "unset";
    drv_err e = drv_jwt_parse((const uint8_t *)tok, strlen(tok), &t, &why);
    snprintf(what, sizeof(what), "%s: parse %s, want %s (%s)", c->name, errname((int)e),
             errname((int)c->parse), why ? why : "-");
    CHECK_CASE(e == c->parse, what);
    CHECK_CASE(e == DRV_OK ? why == NULL : why != NULL, c->name);
    if (e != DRV_OK)
        return;
    CHECK_CASE(t.signing_input == (const uint8_t *)tok && t.signing_len < strlen(tok) &&
                   tok[t.signing_len] == '.',
               c->name);
    drv_jwt_policy p = {.audience = "drover", .subject = "d1", .now_s = NOW};
    e = drv_jwt_check_claims(&t, &p, &why);
    snprintf(what, sizeof(what), "%s: claims %s, want %s (%s)", c->name, errname((int)e),
             errname(c->claims), why ? why : "-");
    CHECK_CASE((int)e == c->claims, what);
    CHECK_CASE(e == DRV_OK ? why == NULL : why != NULL, c->name);
    for (int k = 0; k < NKEYS; k++) {
        e = drv_jwt_verify(&t, pems[k], &why);
        snprintf(what, sizeof(what), "%s: verify with key %d %s, want %s (%s)", c->name, k,
                 errname((int)e), errname(c->verify[k]), why ? why : "-");
        CHECK_CASE((int)e == c->verify[k], what);
    }
    drv_jwt_clear(&t);
}

static drv_err parse_str(const char *s)
{
    drv_jwt t;
    drv_err e = drv_jwt_parse((const uint8_t *)s, strlen(s), &t, NULL);
    drv_jwt_clear(&t);
    return e;
}

/* Strings that are not JWTs go back to the caller (a secret is tried). */
static void test_not_jwts(void)
{
    static const char *const secrets[] = {
        "",
        "correct horse battery staple",
        "a.b",
        "a.b.c.d",
        "a.b.c.d.e",
        "..",
        "abc.def.ghi",
        "eyJhbGciOiJFUzI1NiJ9",           /* a header alone */
        "eyJhbGciOiJFUzI1NiJ9=.e30.AAAA", /* padding */
        "eyJhbGciOiJFUzI1NiJ9+.e30.AAAA", /* not URL-safe */
        "e30.e30.AAAA",                   /* {} : no alg */
        "bnVsbA.e30.AAAA",                /* null */
        ".e30.AAAA",
    };
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
        CHECK_CASE(parse_str(secrets[i]) == DRV_DECLINED, secrets[i]);
}

/* Base64url is canonical: unused low bits must be zero, no padding, no other alphabet. */
static void test_strict_base64(void)
{
    char tok[4096];
    make_token(tok, sizeof(tok), ES, GOOD, GOOD, K_EC);
    CHECK(parse_str(tok) == DRV_OK);
    size_t n = strlen(tok);
    /* 64 bytes are 86 characters; the last carries 4 unused bits. */
    char last = tok[n - 1];
    const char *pos = strchr(B64URL, last);
    CHECK(pos != NULL && ((pos - B64URL) & 3) == 0);
    tok[n - 1] = B64URL[(pos - B64URL) | 1];
    CHECK(parse_str(tok) == DRV_MALFORMED);
    tok[n - 1] = last;
    char padded[4200];
    snprintf(padded, sizeof(padded), "%s==", tok);
    CHECK(parse_str(padded) == DRV_MALFORMED);
    tok[n - 3] = '+';
    CHECK(parse_str(tok) == DRV_MALFORMED);
    /* A payload with a bad character is a broken JWT, not a secret. */
    make_token(tok, sizeof(tok), ES, GOOD, GOOD, K_EC);
    char *dot = strchr(tok, '.');
    dot[1] = '*';
    CHECK(parse_str(tok) == DRV_MALFORMED);
}

static void test_limits(void)
{
    size_t n = DRV_JWT_MAX + 1;
    char *big = malloc(n + 1);
    memset(big, 'A', n);
    big[n] = '\0';
    CHECK(parse_str(big) == DRV_TOOBIG);
    /* A token exactly at the limit is looked at (and refused for what it is). */
    char tok[4096];
    make_token(tok, sizeof(tok), ES, GOOD, GOOD, K_EC);
    size_t tl = strlen(tok);
    memcpy(big, tok, tl);
    memset(big + tl, 'A', DRV_JWT_MAX - tl);
    big[DRV_JWT_MAX] = '\0';
    CHECK(parse_str(big) == DRV_MALFORMED); /* the signature is too long */
    free(big);

    /* Policy edge: a missing audience in the policy refuses every token. */
    drv_jwt t;
    CHECK(drv_jwt_parse((const uint8_t *)tok, tl, &t, NULL) == DRV_OK);
    drv_jwt_policy p = {.audience = NULL, .subject = NULL, .now_s = NOW};
    CHECK(drv_jwt_check_claims(&t, &p, NULL) == DRV_AUTH);
    p.audience = "drover";
    CHECK(drv_jwt_check_claims(&t, &p, NULL) == DRV_OK); /* subject not checked */
    CHECK(drv_jwt_verify(&t, "not a key", NULL) == DRV_INVAL);
    CHECK(drv_jwt_verify(&t, "", NULL) == DRV_INVAL);
    drv_jwt_clear(&t);
    drv_jwt_clear(&t); /* twice is harmless */
}

/* Many signatures: R and S of every shape (high bit set, leading zero bytes) verify. */
static void test_many_es256(void)
{
    int good = 0;
    for (int i = 0; i < 200; i++) {
        char payload[160], tok[4096];
        snprintf(payload, sizeof(payload),
                 "{\"exp\":1700003600,\"iat\":1700000000,\"aud\":\"drover\",\"n\":%d}", i);
        make_token(tok, sizeof(tok), ES, payload, payload, K_EC);
        drv_jwt t;
        if (drv_jwt_parse((const uint8_t *)tok, strlen(tok), &t, NULL) == DRV_OK &&
            drv_jwt_verify(&t, pems[K_EC], NULL) == DRV_OK)
            good++;
        drv_jwt_clear(&t);
    }
    CHECK(good == 200);
}

int main(void)
{
    keys[K_EC] = EVP_EC_gen("P-256");
    keys[K_EC2] = EVP_EC_gen("P-256");
    keys[K_RSA] = EVP_RSA_gen(2048);
    keys[K_RSA2] = EVP_RSA_gen(2048);
    keys[K_K1] = EVP_EC_gen("secp256k1");
    keys[K_RSA1024] = EVP_RSA_gen(1024);
    for (int k = 0; k < NKEYS; k++) {
        CHECK(keys[k] != NULL);
        if (!keys[k])
            return 1;
        pems[k] = public_pem(keys[k]);
    }
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(&cases[i]);
    test_not_jwts();
    test_strict_base64();
    test_limits();
    test_many_es256();
    for (int k = 0; k < NKEYS; k++) {
        EVP_PKEY_free(keys[k]);
        free(pems[k]);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
