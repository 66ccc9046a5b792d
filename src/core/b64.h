/*
 * b64.h — base64url without padding (RFC 4648 §5, as JWS uses it, RFC 7515
 * §2) and standard padded base64 (RFC 4648 §4, for HTTP Basic credentials).
 *
 * Decoding is strict so that every byte string has exactly one encoding:
 * only the alphabet's 64 characters, a length that is not 1 mod 4, zero bits
 * in the last character's unused part, and (standard base64 only) exactly the
 * '=' padding that length needs.  Pure functions over caller buffers: no
 * allocation, no state, any thread; input from the network never reaches an
 * assert.  Used by the API's JWTs (api/jwt.c) and device JWTs
 * (registry/device_jwt.c).
 */
#ifndef DRV_CORE_B64_H
#define DRV_CORE_B64_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Base64url of n bytes, no padding, NUL-terminated in out; the length written,
 * or 0 when out (cap bytes) is too small (it needs (4n + 2) / 3 + 1). */
size_t drv_b64url_encode(const void *in, size_t n, char *out, size_t cap);
/* The number of bytes n characters of unpadded base64url decode to in *out;
 * false when n is not a valid unpadded length (1 mod 4). */
bool drv_b64url_decoded_len(size_t n, size_t *out);
/* Decode n characters of base64url without padding into out (cap bytes),
 * strictly (see above).  False when malformed or too long for cap. */
bool drv_b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *outlen);
/* Decode standard base64 ('+', '/', '=' padding required to a multiple of 4)
 * with the same strictness.  False when malformed or too long for cap. */
bool drv_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *outlen);

#endif
